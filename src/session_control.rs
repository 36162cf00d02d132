//! Sends the Re-Auth-Requests and Abort-Session-Requests queued in the ledger
//! (`crates/tollgate-ledger/src/session_requests.rs`) to the clients this node has connected,
//! and acts on their answers (docs/several-nodes.md, "Requests the OCS sends first").
//!
//! Every `server_request_poll_ms` the task claims the due requests whose client is open here,
//! sends each with `Node::request` (Destination-Host: the client), and records the answer:
//! - 2xxx: answered; the client re-authorises with a CCR-U, or ends the session with a CCR-T;
//! - 5002 DIAMETER_UNKNOWN_SESSION_ID: the client has no such session, so its reservations
//!   are released now (a `release` in the ledger, idempotent under the request's own key);
//! - 3xxx, no answer within `server_request_timeout_ms`, or no connection: another attempt
//!   later (1 s, 2 s, 4 s …), at most `MAX_ATTEMPTS`, then `failed`;
//! - anything else: answered with that Result-Code, not retried.
//!
//! Each outcome is counted on /metrics as `tollgate_server_requests_total{kind, outcome}`.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollgate_cc::server_requests::{self, ClientVerdict, ServerRequestTarget};
use tollgate_ledger::session_requests::{
    self as outbox, RequestOutcome, SessionRequest, SessionRequestKind,
};
use tollgate_ledger::Database;
use tollgate_ocs::{Clock, Ledger, ReleaseRequest, RequestKey, Timestamp};
use tollgate_peer::Node;
use tracing::{info, warn};

pub struct SessionControl {
    pub node: Arc<Node>,
    pub db: Database,
    pub ledger: Arc<dyn Ledger>,
    pub clock: Arc<dyn Clock>,
    pub poll: Duration,
    pub timeout: Duration,
}

/// Claims at most this many requests per poll.
const CLAIM_LIMIT: i64 = 64;

impl SessionControl {
    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        // Which node holds a claim: this one, for the lease's length (the answer's wait plus
        // a margin); a node that dies lets it run out and another attempt is made.
        let me = format!(
            "{}#{}",
            self.node.local.origin_host, self.node.local.origin_state_id
        );
        let lease_ms = self.timeout.as_millis() as i64 + 5_000;
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let peers: Vec<String> = self.node.open_peers().into_iter().map(|p| p.host).collect();
            let now = self.clock.now();
            let claimed =
                match outbox::claim(&self.db, &me, &peers, now, lease_ms, CLAIM_LIMIT).await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("cannot read the queued RAR/ASR: {e}");
                        continue;
                    }
                };
            for request in claimed {
                let outcome = self.send(&request).await;
                if let Err(e) =
                    outbox::finish(&self.db, &request, &me, &outcome, self.clock.now()).await
                {
                    warn!(
                        id = request.id,
                        "cannot record the answer to a server request: {e}"
                    );
                }
            }
        }
    }

    async fn send(&self, r: &SessionRequest) -> RequestOutcome {
        let local = &self.node.local;
        let peer_realm = self
            .node
            .peer_realm(&r.peer_host)
            .unwrap_or_else(|| local.origin_realm.clone());
        let target = ServerRequestTarget {
            session_id: &r.session_id,
            origin_host: &local.origin_host,
            origin_realm: &local.origin_realm,
            peer_host: &r.peer_host,
            peer_realm: &peer_realm,
        };
        let message = match r.kind {
            SessionRequestKind::Reauth => server_requests::rar(&target),
            SessionRequestKind::Abort => server_requests::asr(&target),
        };
        let kind = r.kind.as_str();
        let answer = match self
            .node
            .request(Some(&r.peer_host), message, self.timeout)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                count(kind, "retry");
                warn!(id = r.id, kind, session = %r.session_id, peer = %r.peer_host,
                    attempt = r.attempts, "no answer: {e}");
                return self.retry(r, e.to_string());
            }
        };
        let result_code = answer.result_code().map(|c| c.0).unwrap_or(0);
        match server_requests::verdict(&answer) {
            ClientVerdict::Accepted => {
                count(kind, "accepted");
                info!(id = r.id, kind, session = %r.session_id, result_code, "answered");
                answered(result_code, "accepted")
            }
            ClientVerdict::UnknownSession => {
                let released = self.release(r).await;
                count(kind, "unknown_session");
                info!(id = r.id, kind, session = %r.session_id, %released, "client has no such session");
                answered(result_code, &released)
            }
            ClientVerdict::Transient => {
                count(kind, "retry");
                self.retry(r, format!("Result-Code {result_code}"))
            }
            ClientVerdict::Refused => {
                count(kind, "refused");
                warn!(id = r.id, kind, session = %r.session_id, result_code, "refused by the client");
                answered(result_code, "refused")
            }
        }
    }

    fn retry(&self, r: &SessionRequest, detail: String) -> RequestOutcome {
        let backoff = 1_000i64 << (r.attempts.clamp(1, 6) - 1);
        RequestOutcome::Retry {
            at: Timestamp(self.clock.now().0 + backoff),
            detail,
        }
    }

    /// RFC 4006 §5.5: a client without the session reports no usage, so what it holds is
    /// released now instead of at Tcc. The key is the request's own, so a retried finish
    /// never releases twice.
    async fn release(&self, r: &SessionRequest) -> String {
        let key = RequestKey::new(
            format!("{}#server-request-{}", self.node.local.origin_host, r.id),
            r.session_id.clone(),
            0,
        );
        let req = ReleaseRequest {
            key,
            session_ref: r.session_id.clone(),
            service: None,
            cdr: None,
        };
        match self.ledger.release(req).await {
            Ok(rel) => format!("released {} reservations", rel.reservations),
            Err(e) => format!("release failed: {e} (Tcc will release them)"),
        }
    }
}

fn answered(result_code: u32, detail: &str) -> RequestOutcome {
    RequestOutcome::Answered {
        result_code,
        detail: detail.to_string(),
    }
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!("tollgate_server_requests_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}
