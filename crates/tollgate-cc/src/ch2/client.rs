//! The CH-2 client an IM server embeds: a Diameter client peer (Tollgate's own peer layer:
//! CER/CEA, RFC 3539 watchdog, DPR on close) towards one or more OCSs, which turns CH-2
//! calls into CCRs and CCAs into [`Response`]s.
//!
//! What it does for the IM server (RFC 4006 §5.5, §5.7, §7; docs/protocol.md, "Client failure
//! handling"):
//! - one Diameter Session-Id per SessionRequest start…stop and per reserve…debit pair, with
//!   CC-Request-Numbers 0, 1, 2 …; Destination-Host pinned to the Origin-Host of the first CCA;
//! - servers in order of preference: a new session goes to the first one that is open;
//! - the Tx timer: no answer within Tx, a closed connection or a temporary failure
//!   (3002/3004/3005) is handled by Credit-Control-Failure-Handling (sessions and ECUR: the
//!   CCA's value, else the configured one) or Direct-Debiting-Failure-Handling (IEC):
//!   TERMINATE ends the service; CONTINUE and RETRY_AND_TERMINATE retransmit (T flag, same
//!   End-to-End id) to another server when the session may move there — always for a first
//!   request, later only with CC-Session-Failover SUPPORTED — and then keep serving
//!   (CONTINUE) or end (RETRY_AND_TERMINATE);
//! - an unanswered direct debit under TERMINATE_OR_BUFFER, and every unanswered refund, is
//!   kept (T-flagged) and replayed by [`Ch2Client::replay_buffered`].

use super::mapping::{is_temporary, response_from_cca, Ch2Profile};
use super::ocs_requests::{Inbox, OcsRequest};
use super::*;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tollgate_codec::codes::DESTINATION_HOST;
use tollgate_codec::{ApplicationId, Avp, Dictionary, Flags, Message};
pub use tollgate_peer::WireLog;
use tollgate_peer::{LocalPeer, Node, PeerChange, PeerChangeKind, PeerError, PeerLimits};
use tracing::{debug, info, warn};

/// Credit-Control-Failure-Handling values (RFC 4006 §8.14).
pub const CCFH_TERMINATE: i32 = 0;
pub const CCFH_CONTINUE: i32 = 1;
pub const CCFH_RETRY_AND_TERMINATE: i32 = 2;
/// Direct-Debiting-Failure-Handling values (RFC 4006 §8.15).
pub const DDFH_TERMINATE_OR_BUFFER: i32 = 0;
pub const DDFH_CONTINUE: i32 = 1;

#[derive(Clone, Debug)]
pub struct Ch2ClientConfig {
    pub profile: Ch2Profile,
    /// OCS addresses, most preferred first.
    pub servers: Vec<SocketAddr>,
    /// Tx (RFC 4006 §13): how long to wait for a CCA.
    pub tx: Duration,
    /// Used until a CCA says otherwise (RFC 4006 §8.14 default TERMINATE).
    pub credit_control_failure_handling: i32,
    /// For IEC (RFC 4006 §8.15 default TERMINATE_OR_BUFFER).
    pub direct_debiting_failure_handling: i32,
    /// Peer-layer timers and bounds (Tw, Tc, CEA timeout …).
    pub limits: PeerLimits,
    /// Keep a copy of every frame written to an OCS (for tests and `im-sim --wire-log`).
    pub record_wire: bool,
}

impl Ch2ClientConfig {
    pub fn new(profile: Ch2Profile, servers: Vec<SocketAddr>) -> Self {
        Ch2ClientConfig {
            profile,
            servers,
            tx: Duration::from_secs(10),
            credit_control_failure_handling: CCFH_TERMINATE,
            direct_debiting_failure_handling: DDFH_TERMINATE_OR_BUFFER,
            limits: PeerLimits::default(),
            record_wire: false,
        }
    }
}

/// A CH-2 call the client cannot make (caller errors, not OCS failures: those are answered
/// with a [`Response`]).
#[derive(Debug, thiserror::Error)]
pub enum Ch2Error {
    #[error("no charging session with correlation id {0:?} (send start or reserve first)")]
    UnknownCorrelation(String),
    #[error("a charging session with correlation id {0:?} is already open")]
    AlreadyOpen(String),
    #[error("no OCS server configured")]
    NoServers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    Session,
    Ecur,
}

/// Where the next request of a client session goes.
struct Slot {
    session_id: String,
    number: u32,
    pinned: Option<String>,
    ccfh: Option<i32>,
    /// May the request move to another server (a first request, or CC-Session-Failover)?
    may_move: bool,
    /// The session's Subscription-Ids, when the request names none itself.
    subscribers: Vec<SubscriptionId>,
}

struct ClientSession {
    session_id: String,
    model: Model,
    next_number: u32,
    /// Origin-Host of the first CCA: Destination-Host of every later CCR.
    pinned: Option<String>,
    ccfh: Option<i32>,
    failover: bool,
    /// Subscription-Ids of the first request, repeated in later ones so the OCS can name
    /// the account in Cost-Information and Remaining-Balance (TS 32.299 allows them in every
    /// CCR).
    subscribers: Vec<SubscriptionId>,
}

pub struct Ch2Client {
    node: Arc<Node>,
    /// Serves the OCS's RAR and ASR (`ocs_requests.rs`).
    inbox: Arc<Inbox>,
    ocs_requests: Mutex<Option<mpsc::UnboundedReceiver<OcsRequest>>>,
    cfg: Ch2ClientConfig,
    /// Origin-Host of each configured server while its connection is open.
    open: Arc<Mutex<Vec<Option<String>>>>,
    sessions: Mutex<HashMap<String, ClientSession>>,
    buffered: Mutex<Vec<Message>>,
    counter: AtomicU64,
    epoch: u64,
    wire: Arc<WireLog>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ch2Client {
    /// Starts a client peer that keeps a connection to every configured server (reconnecting
    /// after Tc). Returns at once; see [`Ch2Client::wait_open`].
    pub fn start(cfg: Ch2ClientConfig) -> Result<Arc<Ch2Client>, Ch2Error> {
        if cfg.servers.is_empty() {
            return Err(Ch2Error::NoServers);
        }
        let mut local = LocalPeer::new(&cfg.profile.origin_host, &cfg.profile.origin_realm);
        local.product_name = "Tollgate CH-2 client".into();
        let (inbox, ocs_requests) = Inbox::new(&cfg.profile.origin_host, &cfg.profile.origin_realm);
        let node = Node::new(
            local,
            cfg.limits.clone(),
            Arc::new(Dictionary::builtin().clone()),
            Some(Arc::clone(&inbox) as Arc<dyn tollgate_peer::Application>),
            &[ApplicationId::CREDIT_CONTROL],
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let epoch = now.as_secs();
        // The low part starts somewhere this process alone is likely to start, so two runs
        // within one second never reuse a Session-Id (the OCS would take the second CCR-I for
        // a changed duplicate of the first and answer 5004).
        let start = now.subsec_nanos() ^ (std::process::id() << 12);
        let client = Arc::new(Ch2Client {
            node,
            inbox,
            ocs_requests: Mutex::new(Some(ocs_requests)),
            open: Arc::new(Mutex::new(vec![None; cfg.servers.len()])),
            sessions: Mutex::new(HashMap::new()),
            buffered: Mutex::new(Vec::new()),
            counter: AtomicU64::new(u64::from(start)),
            epoch,
            wire: Arc::new(WireLog::default()),
            cfg,
        });
        if client.cfg.record_wire {
            client.node.record_wire(Arc::clone(&client.wire));
        }
        // Subscribed before the first connect, so no peer-up goes unseen.
        let changes = client.node.subscribe();
        tokio::spawn(track_servers(
            Arc::clone(&client.node),
            changes,
            Arc::clone(&client.open),
            client.cfg.servers.clone(),
        ));
        for addr in &client.cfg.servers {
            client.node.connect(*addr);
        }
        Ok(client)
    }

    /// Waits until at least one server is open, or `limit` passes.
    pub async fn wait_open(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if lock(&self.open).iter().any(Option::is_some) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The Re-Auth and Abort-Session requests the OCS sends, for the IM server to act on
    /// (`ocs_requests.rs`). There is one receiver; the first call takes it.
    pub fn ocs_requests(&self) -> Option<mpsc::UnboundedReceiver<OcsRequest>> {
        lock(&self.ocs_requests).take()
    }

    /// The frames written so far (only with `record_wire`).
    pub fn wire(&self) -> Vec<Bytes> {
        self.wire.frames()
    }

    pub fn profile(&self) -> &Ch2Profile {
        &self.cfg.profile
    }

    /// Requests kept for replay (unanswered refunds and buffered direct debits).
    pub fn buffered(&self) -> usize {
        lock(&self.buffered).len()
    }

    /// DPR to every server, then close.
    pub async fn close(&self) {
        self.node.shutdown(Duration::from_secs(5)).await;
    }

    fn new_session_id(&self) -> String {
        // RFC 6733 §8.8: <DiameterIdentity>;<high 32 bits>;<low 32 bits>, unique over reboots.
        // The low part wraps at 2^32, as §8.8 allows.
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as u32;
        format!("{};{};{}", self.cfg.profile.origin_host, self.epoch, n)
    }

    /// Opens (`first`) or continues the client session of `correlation` and says where the
    /// next request of it goes.
    fn next_in_session(
        &self,
        correlation: &str,
        model: Model,
        first: bool,
        subscribers: &[SubscriptionId],
    ) -> Result<Slot, Ch2Error> {
        let mut sessions = lock(&self.sessions);
        if first {
            if sessions.contains_key(correlation) {
                return Err(Ch2Error::AlreadyOpen(correlation.to_string()));
            }
            let session_id = self.new_session_id();
            self.inbox.opened(&session_id, correlation);
            sessions.insert(
                correlation.to_string(),
                ClientSession {
                    session_id: session_id.clone(),
                    model,
                    next_number: 1,
                    pinned: None,
                    ccfh: None,
                    failover: false,
                    subscribers: subscribers.to_vec(),
                },
            );
            // A first request may go to any server: nothing is pinned yet, and a new session
            // may always start on a secondary (docs/protocol.md, "Client failure handling").
            return Ok(Slot {
                session_id,
                number: 0,
                pinned: None,
                ccfh: None,
                may_move: true,
                subscribers: Vec::new(),
            });
        }
        let s = sessions
            .get_mut(correlation)
            .filter(|s| s.model == model)
            .ok_or_else(|| Ch2Error::UnknownCorrelation(correlation.to_string()))?;
        let number = s.next_number;
        s.next_number += 1;
        Ok(Slot {
            session_id: s.session_id.clone(),
            number,
            pinned: s.pinned.clone(),
            ccfh: s.ccfh,
            may_move: s.failover,
            subscribers: if subscribers.is_empty() {
                s.subscribers.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// Sends one request of a session (SCUR or ECUR) under CCFH and updates the session.
    async fn in_session(
        &self,
        correlation: &str,
        slot: Slot,
        msg: Message,
        last: bool,
    ) -> Response {
        let ccfh = slot
            .ccfh
            .unwrap_or(self.cfg.credit_control_failure_handling);
        let r = self
            .exchange(
                msg,
                &slot.session_id,
                slot.number,
                slot.pinned,
                Policy::Ccfh(ccfh),
                slot.may_move,
            )
            .await;
        self.after(correlation, last, &r);
        r
    }

    /// A CH-2 SessionRequest.
    pub async fn session(&self, req: &SessionRequest) -> Result<Response, Ch2Error> {
        let first = req.phase == SessionPhase::Start;
        let slot =
            self.next_in_session(&req.correlation_id, Model::Session, first, &req.subscribers)?;
        let msg = if slot.subscribers.is_empty() {
            self.cfg
                .profile
                .session_ccr(req, &slot.session_id, slot.number, slot.pinned.as_deref())
        } else {
            let mut with = req.clone();
            with.subscribers = slot.subscribers.clone();
            self.cfg.profile.session_ccr(
                &with,
                &slot.session_id,
                slot.number,
                slot.pinned.as_deref(),
            )
        };
        let last = req.phase == SessionPhase::Stop;
        Ok(self.in_session(&req.correlation_id, slot, msg, last).await)
    }

    /// A CH-2 EventRequest.
    pub async fn event(&self, req: &EventRequest) -> Result<Response, Ch2Error> {
        match req.action {
            EventAction::ReserveUnits | EventAction::DebitUnits => {
                // ECUR allows one debit per reservation: CC-Request-Number 0 then 1.
                let first = req.action == EventAction::ReserveUnits;
                let slot = self.next_in_session(
                    &req.correlation_id,
                    Model::Ecur,
                    first,
                    &req.subscribers,
                )?;
                let msg = if slot.subscribers.is_empty() {
                    self.cfg.profile.event_ccr(
                        req,
                        &slot.session_id,
                        slot.number,
                        slot.pinned.as_deref(),
                    )
                } else {
                    let mut with = req.clone();
                    with.subscribers = slot.subscribers.clone();
                    self.cfg.profile.event_ccr(
                        &with,
                        &slot.session_id,
                        slot.number,
                        slot.pinned.as_deref(),
                    )
                };
                Ok(self
                    .in_session(&req.correlation_id, slot, msg, !first)
                    .await)
            }
            _ => {
                // IEC: a session of one request (RFC 4006 §6.3), number 0.
                let session_id = self.new_session_id();
                let msg = self.cfg.profile.event_ccr(req, &session_id, 0, None);
                let policy = match req.action {
                    EventAction::DirectDebit => {
                        Policy::Ddfh(self.cfg.direct_debiting_failure_handling)
                    }
                    EventAction::Refund => Policy::Refund,
                    _ => Policy::Enquiry,
                };
                Ok(self.exchange(msg, &session_id, 0, None, policy, true).await)
            }
        }
    }

    /// Updates the client session after an answer: pin the server, adopt CCFH and
    /// CC-Session-Failover from the CCA, and forget sessions the OCS has closed
    /// (RFC 4006 §7: a failed CCR-I or CCR-U, a CCR-T, a command-level 4011).
    fn after(&self, correlation: &str, last: bool, r: &Response) {
        let mut sessions = lock(&self.sessions);
        let answered = r.result_code.is_some();
        let closed = last
            || match r.result_code {
                // A command-level failure (and 4011) ends the credit-control session.
                Some(c) => !(2000..3000).contains(&c),
                None => r.outcome == Outcome::Terminate,
            };
        if closed {
            if let Some(s) = sessions.remove(correlation) {
                self.inbox.closed(&s.session_id);
            }
            return;
        }
        if let Some(s) = sessions.get_mut(correlation) {
            if answered {
                if s.pinned.is_none() || r.answered_by.is_some() {
                    s.pinned = r.answered_by.clone();
                }
                if r.credit_control_failure_handling.is_some() {
                    s.ccfh = r.credit_control_failure_handling;
                }
                if let Some(f) = r.cc_session_failover {
                    s.failover = f;
                }
            }
        }
    }

    /// The first open server, preferring `pinned`, skipping `avoid`.
    fn pick(&self, pinned: Option<&str>, avoid: &[String]) -> Option<String> {
        let open = lock(&self.open);
        if let Some(p) = pinned {
            if open.iter().flatten().any(|h| h.eq_ignore_ascii_case(p))
                && !avoid.iter().any(|a| a.eq_ignore_ascii_case(p))
            {
                return Some(p.to_string());
            }
            if avoid.is_empty() {
                // A pinned session has nowhere else to go until failover is allowed.
                return None;
            }
        }
        open.iter()
            .flatten()
            .find(|h| !avoid.iter().any(|a| a.eq_ignore_ascii_case(h)))
            .cloned()
    }

    /// Sends a CCR and applies the failure handling to what comes back (or doesn't).
    async fn exchange(
        &self,
        mut msg: Message,
        session_id: &str,
        number: u32,
        pinned: Option<String>,
        policy: Policy,
        may_move: bool,
    ) -> Response {
        // One End-to-End id for the request and all its retransmissions (RFC 6733 §6.1.4).
        msg.header.end_to_end = self.node.next_end_to_end();
        let mut tried: Vec<String> = Vec::new();
        let mut why: String;
        let first_target = self.pick(pinned.as_deref(), &[]);
        let mut target = first_target;
        loop {
            match target.take() {
                None => {
                    why = match &pinned {
                        Some(p) if tried.is_empty() => format!("server {p} is not connected"),
                        _ if tried.is_empty() => "no OCS server is connected".to_string(),
                        _ => why_last(&tried),
                    };
                }
                Some(host) => {
                    debug!(%host, session_id, number, "CCR");
                    let r = self
                        .node
                        .request(Some(&host), msg.clone(), self.cfg.tx)
                        .await;
                    match r {
                        Ok(cca) if !cca.result_code().is_some_and(is_temporary) => {
                            let mut resp = response_from_cca(&cca, session_id, number);
                            if resp.answered_by.is_none() {
                                resp.answered_by = Some(host);
                            }
                            return resp;
                        }
                        Ok(cca) => {
                            why = format!(
                                "{host} answered {} (temporary)",
                                cca.result_code().map(|c| c.0).unwrap_or(0)
                            );
                        }
                        Err(PeerError::Timeout(t)) => {
                            why = format!("no answer from {host} within Tx = {t:?}")
                        }
                        Err(e) => why = format!("{host}: {e}"),
                    }
                    tried.push(host);
                }
            }
            // RFC 4006 §5.5 / §5.7: may the request move to another server?
            let retry = match policy {
                Policy::Ccfh(CCFH_TERMINATE) => false,
                Policy::Ccfh(_) => may_move,
                Policy::Ddfh(_) | Policy::Refund | Policy::Enquiry => true,
            };
            if retry {
                if let Some(next) = self.pick(None, &tried) {
                    if !tried.is_empty() {
                        // A retransmission: T flag, same End-to-End id (RFC 6733 §3).
                        msg.header.flags = msg.header.flags.with(Flags::RETRANSMITTED, true);
                    }
                    // A pinned request now names the server it goes to, or that server
                    // would refuse it with 3002 (RFC 6733 §6.1.5).
                    for a in msg.avps.iter_mut().filter(|a| a.is(DESTINATION_HOST)) {
                        *a = Avp::from_str(DESTINATION_HOST, &next);
                    }
                    info!(from = ?tried.last(), to = %next, session_id, "failing over");
                    target = Some(next);
                    continue;
                }
            }
            return self.unanswered(msg, session_id, number, policy, why);
        }
    }

    fn unanswered(
        &self,
        mut msg: Message,
        session_id: &str,
        number: u32,
        policy: Policy,
        why: String,
    ) -> Response {
        let outcome = match policy {
            Policy::Ccfh(CCFH_CONTINUE) => Outcome::ContinueUncharged,
            Policy::Ccfh(_) => Outcome::Terminate,
            // §5.7: it cannot be known that nothing was debited, so grant and keep the
            // request for replay (TERMINATE_OR_BUFFER), or grant and drop it (CONTINUE).
            Policy::Ddfh(d) => {
                if d == DDFH_TERMINATE_OR_BUFFER {
                    msg.header.flags = msg.header.flags.with(Flags::RETRANSMITTED, true);
                    lock(&self.buffered).push(msg);
                }
                Outcome::ContinueUncharged
            }
            // Refunds are always kept until answered.
            Policy::Refund => {
                msg.header.flags = msg.header.flags.with(Flags::RETRANSMITTED, true);
                lock(&self.buffered).push(msg);
                Outcome::Failed
            }
            Policy::Enquiry => Outcome::Terminate,
        };
        Response {
            outcome,
            failure: Some(why),
            ..Response::empty(session_id, number)
        }
    }

    /// Sends every buffered request again (T flag) to an open server; returns how many were
    /// answered. Unanswered ones stay buffered.
    pub async fn replay_buffered(&self) -> usize {
        let pending: Vec<Message> = std::mem::take(&mut *lock(&self.buffered));
        let mut done = 0;
        let mut keep = Vec::new();
        for m in pending {
            let answered = match self.pick(None, &[]) {
                Some(h) => matches!(
                    self.node.request(Some(&h), m.clone(), self.cfg.tx).await,
                    Ok(a) if !a.result_code().is_some_and(is_temporary)
                ),
                None => false,
            };
            if answered {
                done += 1;
            } else {
                keep.push(m);
            }
        }
        lock(&self.buffered).extend(keep);
        done
    }
}

fn why_last(tried: &[String]) -> String {
    format!("no usable answer from {}", tried.join(", "))
}

#[derive(Clone, Copy, Debug)]
enum Policy {
    Ccfh(i32),
    Ddfh(i32),
    Refund,
    Enquiry,
}

/// Keeps `open` (one slot per configured server, most preferred first) in step with the
/// peer layer's events: a server is usable from its peer-up until its peer-down, and not
/// while its watchdog suspects it (RFC 3539 Failover … Failback).
async fn track_servers(
    node: Arc<Node>,
    mut changes: tokio::sync::broadcast::Receiver<PeerChange>,
    open: Arc<Mutex<Vec<Option<String>>>>,
    servers: Vec<SocketAddr>,
) {
    let labels: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    let slot_of = |target: &Option<String>| {
        target
            .as_ref()
            .and_then(|t| labels.iter().position(|l| l == t))
    };
    let shutdown = node.shutdown_token();
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.recv() => c,
        };
        match change {
            Ok(PeerChange { host, target, kind }) => {
                let Some(slot) = slot_of(&target) else {
                    continue;
                };
                let usable = match kind {
                    PeerChangeKind::Up { .. } | PeerChangeKind::Back => {
                        info!(server = %labels[slot], %host, "OCS connection open");
                        Some(host)
                    }
                    PeerChangeKind::Suspect | PeerChangeKind::Down => {
                        info!(server = %labels[slot], %host, ?kind, "OCS connection not usable");
                        None
                    }
                };
                if let Some(s) = lock(&open).get_mut(slot) {
                    *s = usable;
                }
            }
            Err(RecvError::Lagged(n)) => {
                warn!(missed = n, "peer events lagged; reading the peer table");
                let now_open = node.open_peers();
                let mut open = lock(&open);
                for (slot, s) in open.iter_mut().enumerate() {
                    *s = now_open
                        .iter()
                        .find(|p| !p.suspect && p.target.as_deref() == Some(labels[slot].as_str()))
                        .map(|p| p.host.clone());
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
