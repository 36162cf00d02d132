//! The requests a credit-control server sends first: Re-Auth-Request (RFC 4006 §3.4, §5.5;
//! RFC 6733 §8.3) and Abort-Session-Request (RFC 6733 §8.5), and what their answers mean.
//!
//! Both go to the client that sent the session's CCRs: Destination-Host is its Origin-Host
//! (RFC 4006 §5.5), Destination-Realm its realm. The caller sends them with
//! `tollgate_peer::Node::request` over that client's connection.

use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Message, ResultCode};

/// Re-Auth-Request-Type AUTHORIZE_ONLY (RFC 6733 §8.12): the client re-authorises by
/// sending a CCR-U (RFC 4006 §5.5); it is not asked to re-authenticate.
pub const AUTHORIZE_ONLY: i32 = 0;

/// Who sends, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRequestTarget<'a> {
    pub session_id: &'a str,
    pub origin_host: &'a str,
    pub origin_realm: &'a str,
    /// The client's Origin-Host.
    pub peer_host: &'a str,
    /// The client's realm (from its CER), or ours when unknown.
    pub peer_realm: &'a str,
}

fn skeleton(command: CommandCode, t: &ServerRequestTarget<'_>) -> Message {
    // Proxiable (RFC 6733 §8.3.1, §8.5.1: "REQ, PXY"); Session-Id first (§8.8).
    Message::request(command, ApplicationId::CREDIT_CONTROL, true)
        .with(Avp::from_str(SESSION_ID, t.session_id))
        .with(Avp::from_str(ORIGIN_HOST, t.origin_host))
        .with(Avp::from_str(ORIGIN_REALM, t.origin_realm))
        .with(Avp::from_str(DESTINATION_REALM, t.peer_realm))
        .with(Avp::from_str(DESTINATION_HOST, t.peer_host))
        .with(Avp::from_u32(
            AUTH_APPLICATION_ID,
            ApplicationId::CREDIT_CONTROL.0,
        ))
}

/// RAR for a credit-control session (RFC 4006 §3.4).
pub fn rar(t: &ServerRequestTarget<'_>) -> Message {
    skeleton(CommandCode::RE_AUTH, t).with(Avp::from_enum(RE_AUTH_REQUEST_TYPE, AUTHORIZE_ONLY))
}

/// ASR (RFC 6733 §8.5.1).
pub fn asr(t: &ServerRequestTarget<'_>) -> Message {
    skeleton(CommandCode::ABORT_SESSION, t)
}

/// What the client's RAA or ASA says the server should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    /// 2xxx: it will re-authorise (CCR-U) or end the session (CCR-T) itself.
    Accepted,
    /// 5002 DIAMETER_UNKNOWN_SESSION_ID: the client has no such session, so nobody will
    /// report its usage; the server releases its reservations now (RFC 4006 §5.5).
    UnknownSession,
    /// 3xxx (protocol errors, e.g. 3002 unable to deliver, 3004 too busy): worth another try.
    Transient,
    /// Anything else: the client refused; recorded, not retried.
    Refused,
}

pub fn verdict(answer: &Message) -> ClientVerdict {
    match answer.result_code() {
        Some(rc) if rc.is_success() => ClientVerdict::Accepted,
        Some(ResultCode::UNKNOWN_SESSION_ID) => ClientVerdict::UnknownSession,
        Some(rc) if rc.is_protocol_error() => ClientVerdict::Transient,
        _ => ClientVerdict::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_codec::Dictionary;

    fn target() -> ServerRequestTarget<'static> {
        ServerRequestTarget {
            session_id: "pcscf.test;1;2",
            origin_host: "ocs.test",
            origin_realm: "test",
            peer_host: "pcscf.test",
            peer_realm: "test",
        }
    }

    #[test]
    fn rar_and_asr_follow_their_grammars() {
        for m in [rar(&target()), asr(&target())] {
            let m = Message::decode(&m.to_bytes()).unwrap();
            Dictionary::builtin()
                .validate(&m, &Default::default())
                .unwrap();
            assert!(m.is_request() && m.header.flags.is_proxiable());
            assert_eq!(m.avps[0].utf8().unwrap(), "pcscf.test;1;2");
            assert_eq!(
                m.find(DESTINATION_HOST).unwrap().utf8().unwrap(),
                "pcscf.test"
            );
        }
        let r = rar(&target());
        assert_eq!(r.find(RE_AUTH_REQUEST_TYPE).unwrap().u32().unwrap(), 0);
    }

    #[test]
    fn answers_decide_what_follows() {
        let answer =
            |rc: u32| Message::answer_to(&rar(&target())).with(Avp::from_u32(RESULT_CODE, rc));
        assert_eq!(verdict(&answer(2001)), ClientVerdict::Accepted);
        assert_eq!(verdict(&answer(5002)), ClientVerdict::UnknownSession);
        assert_eq!(verdict(&answer(3002)), ClientVerdict::Transient);
        assert_eq!(verdict(&answer(5012)), ClientVerdict::Refused);
        let no_code = Message::answer_to(&rar(&target()));
        assert_eq!(verdict(&no_code), ClientVerdict::Refused);
    }
}
