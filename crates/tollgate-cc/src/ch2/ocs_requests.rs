//! What the OCS asks of the IM server. A Re-Auth-Request (RFC 4006 §5.5) or an
//! Abort-Session-Request (RFC 6733 §8.5) arriving on the CH-2 client's connections becomes an
//! [`OcsRequest`] for the IM server, named by the correlation id of the charging session it
//! concerns. The client answers at once: 2001 for a session it knows, 5002
//! DIAMETER_UNKNOWN_SESSION_ID otherwise (the OCS then releases what it holds).
//!
//! What the IM server does next is its business, as CH-2 has it: for a re-authorisation it
//! reports the usage so far and asks again (SessionRequest interim with Reporting-Reason
//! FORCED_REAUTHORISATION); for an abort it ends the IM session (BYE) and sends stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Flags, Message, ResultCode};
use tollgate_peer::{AnswerFuture, Application, Request};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcsRequestKind {
    /// RAR: report usage and ask again.
    Reauthorise,
    /// ASR: end the session.
    Abort,
}

/// A request of the OCS for one charging session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcsRequest {
    pub kind: OcsRequestKind,
    /// The IM server's correlation id of the session.
    pub correlation_id: String,
    /// Its Diameter Session-Id.
    pub session_id: String,
}

/// The CH-2 client's Diameter application: it serves RAR and ASR, and nothing else.
pub(crate) struct Inbox {
    origin_host: String,
    origin_realm: String,
    /// Session-Id → correlation id, for the sessions open now.
    sessions: Mutex<HashMap<String, String>>,
    requests: mpsc::UnboundedSender<OcsRequest>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    pub fn new(
        origin_host: &str,
        origin_realm: &str,
    ) -> (Arc<Inbox>, mpsc::UnboundedReceiver<OcsRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        let inbox = Inbox {
            origin_host: origin_host.to_string(),
            origin_realm: origin_realm.to_string(),
            sessions: Mutex::new(HashMap::new()),
            requests,
        };
        (Arc::new(inbox), rx)
    }

    pub fn opened(&self, session_id: &str, correlation_id: &str) {
        lock(&self.sessions).insert(session_id.to_string(), correlation_id.to_string());
    }

    pub fn closed(&self, session_id: &str) {
        lock(&self.sessions).remove(session_id);
    }

    /// The Result-Code for `request`, after handing it to the IM server when it is for a
    /// session open here.
    fn take(&self, request: &Message) -> ResultCode {
        let kind = match request.header.command {
            CommandCode::RE_AUTH => OcsRequestKind::Reauthorise,
            CommandCode::ABORT_SESSION => OcsRequestKind::Abort,
            _ => return ResultCode::COMMAND_UNSUPPORTED,
        };
        let session_id = request
            .find(SESSION_ID)
            .and_then(|a| a.utf8().ok())
            .unwrap_or_default()
            .to_string();
        let correlation_id = lock(&self.sessions).get(&session_id).cloned();
        match correlation_id {
            Some(correlation_id) => {
                let r = OcsRequest {
                    kind,
                    correlation_id,
                    session_id,
                };
                // Nobody listening is an IM server that does not act on OCS requests; the
                // answer still says the session exists.
                let _ = self.requests.send(r);
                ResultCode::SUCCESS
            }
            None => ResultCode::UNKNOWN_SESSION_ID,
        }
    }
}

impl Application for Inbox {
    fn application_ids(&self) -> Vec<ApplicationId> {
        vec![ApplicationId::CREDIT_CONTROL]
    }

    fn handle(&self, request: Request) -> AnswerFuture {
        let m = &request.message;
        let code = self.take(m);
        // RAA and ASA (RFC 6733 §8.3.2, §8.5.2): Session-Id first.
        let mut a = Message::answer_to(m);
        if let Some(sid) = m.find(SESSION_ID) {
            a.push(sid.clone());
        }
        a.push(Avp::from_u32(RESULT_CODE, code.0));
        a.push(Avp::from_str(ORIGIN_HOST, &self.origin_host));
        a.push(Avp::from_str(ORIGIN_REALM, &self.origin_realm));
        if code.is_protocol_error() {
            a.header.flags = a.header.flags.with(Flags::ERROR, true);
        }
        Box::pin(async move { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: CommandCode, session: &str) -> Message {
        Message::request(command, ApplicationId::CREDIT_CONTROL, true)
            .with(Avp::from_str(SESSION_ID, session))
    }

    #[test]
    fn a_known_session_is_handed_over_and_an_unknown_one_gets_5002() {
        let (inbox, mut rx) = Inbox::new("im.test", "test");
        inbox.opened("im.test;1;1", "call-1");
        assert_eq!(
            inbox.take(&request(CommandCode::RE_AUTH, "im.test;1;1")),
            ResultCode::SUCCESS
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            OcsRequest {
                kind: OcsRequestKind::Reauthorise,
                correlation_id: "call-1".into(),
                session_id: "im.test;1;1".into()
            }
        );
        assert_eq!(
            inbox.take(&request(CommandCode::ABORT_SESSION, "im.test;1;1")),
            ResultCode::SUCCESS
        );
        assert_eq!(rx.try_recv().unwrap().kind, OcsRequestKind::Abort);
        inbox.closed("im.test;1;1");
        assert_eq!(
            inbox.take(&request(CommandCode::RE_AUTH, "im.test;1;1")),
            ResultCode::UNKNOWN_SESSION_ID
        );
        assert_eq!(
            inbox.take(&request(CommandCode::CREDIT_CONTROL, "im.test;1;1")),
            ResultCode::COMMAND_UNSUPPORTED
        );
        assert!(rx.try_recv().is_err());
    }
}
