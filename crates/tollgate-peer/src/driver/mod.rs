//! The driver of one peer: the task that feeds the peer's state machine ([`PeerFsm`], RFC 6733
//! §5.6) every event, carries out the actions it returns, and sleeps until the next deadline.
//!
//! The machine is per peer, not per connection: during an election (§5.6.4) a peer has two
//! connections, the one we initiated (`I`) and the one we accepted (`R`), and one machine
//! decides which survives. So one task reads both, and in the steady state it is simply the
//! task of the peer's one connection. Requests from the peer are handed to the application
//! in their own tasks (see [`crate::dispatch`]); writes go through each [`Link`]'s writer.
//!
//! # Two machines, one driver
//!
//! [`PeerFsm`] owns the life of the connections: connect, CER/CEA, election, DWR→DWA,
//! DPR/DPA, which connection carries messages, and every timer of §5.6. The RFC 3539
//! [`Watchdog`] owns liveness: when to send a DWR, when the peer is suspect (Failover), back
//! (Failback) or down (CloseConnection), and when a lost peer should be tried again
//! (AttemptOpen). It lives as long as the driver, so after a failure it goes DOWN and then,
//! on the next open, REOPEN (RFC 3539 §3.4.1) as the RFC intends. The driver tells it when
//! the machine opens or leaves the open state, and shows it every frame on the open
//! connection. One choice: `Throwaway()` in REOPEN is not applied to the peer's requests.
//! An OCS that drops the CCRs of a client that just reconnected makes it fail over for
//! nothing; the probation still holds, because a REOPEN connection whose DWRs go
//! unanswered is closed.
//!
//! Nothing outside this module answers a base-protocol message. The only event delivered
//! elsewhere is `Send-Message`, which asks the machine which connection a request goes on
//! ([`crate::table::PeerShared::route_for_request`]) and never changes its state.

use crate::base;
use crate::capabilities::{self, PeerCapabilities};
use crate::dispatch;
use crate::fsm::{Conn, PeerAction, PeerEvent, PeerState};
use crate::link::{BoxedTransport, Link, Outlet};
use crate::node::{now, Node, PeerError};
use crate::table::PeerEntry;
use crate::watchdog::{jitter_source, Watchdog};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tollgate_codec::{ApplicationId, DecodeError, Message, ResultCode};
use tracing::{debug, info, warn};

mod frames;
mod liveness;

/// Opens a transport connection to a peer we connect to.
pub type Connector =
    Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<BoxedTransport>> + Send + Sync>;

/// What the rest of the node tells a peer's driver.
pub(crate) enum Control {
    /// An accepted connection whose first frame was a CER naming this peer.
    Inbound(Box<Inbound>),
    /// The local node wants a connection (`Start`).
    Start,
}

pub(crate) struct Inbound {
    pub link: Link,
    pub cer: Message,
    pub caps: PeerCapabilities,
    /// Process-CER's verdict: the applications in common, or the CEA that refuses.
    pub verdict: Result<Vec<ApplicationId>, Message>,
}

/// A peer we connect to.
pub(crate) struct Target {
    /// Where it is, for logs and [`crate::PeerChange::target`].
    pub label: String,
    /// The Origin-Host we expect, when configured; otherwise the CEA tells us.
    pub host: Option<String>,
    pub connector: Connector,
    /// Reconnect after Tc (RFC 6733 §2.1) and on the watchdog's AttemptOpen, until shutdown.
    pub keep: bool,
    /// Told once when the peer opens or the attempt fails ([`Node::connect_once`]).
    pub opened: Option<oneshot::Sender<Result<String, PeerError>>>,
}

/// What an event came with.
#[derive(Default)]
struct Context {
    /// The connection the event came from.
    conn: Option<Conn>,
    /// The message that caused the event.
    message: Option<Message>,
    /// A frame that did not decode, with why.
    undecodable: Option<(Bytes, DecodeError)>,
    /// A base request that decoded but breaks its grammar, with why.
    invalid: Option<tollgate_codec::ProtocolError>,
    /// An inbound connection waiting for R-Accept or R-Reject.
    inbound: Option<Inbound>,
    /// The accepted CER's capabilities and common applications, for Process-CER.
    accepted: Option<(PeerCapabilities, Vec<ApplicationId>)>,
    /// The CEA's capabilities, for Process-CEA.
    cea: Option<PeerCapabilities>,
}

enum Wake {
    Control(Option<Control>),
    Shutdown,
    Frame(Conn, Option<Result<Bytes, crate::framing::FrameError>>),
    Connected(std::io::Result<BoxedTransport>),
    Timer,
}

pub(crate) struct PeerDriver {
    node: Arc<Node>,
    entry: Arc<PeerEntry>,
    rx: mpsc::UnboundedReceiver<Control>,
    /// The key the peer is filed under in the table.
    key: String,
    /// The peer's Origin-Host (the target's label until a CEA names it).
    peer: Arc<str>,
    target: Option<Target>,
    initiator: Option<Link>,
    responder: Option<Link>,
    /// The CER we accepted, answered when the machine says R-Snd-CEA.
    accepted_cer: Option<Message>,
    connecting: Option<BoxFuture<'static, std::io::Result<BoxedTransport>>>,
    watchdog: Watchdog,
    reconnect_at: Option<Instant>,
    stopping: bool,
}

async fn read(link: &mut Option<Link>) -> Option<Result<Bytes, crate::framing::FrameError>> {
    match link {
        Some(l) => l.frames.next().await,
        None => std::future::pending().await,
    }
}

async fn connected(
    f: &mut Option<BoxFuture<'static, std::io::Result<BoxedTransport>>>,
) -> std::io::Result<BoxedTransport> {
    match f {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

fn open_conn(state: PeerState) -> Option<Conn> {
    match state {
        PeerState::IOpen => Some(Conn::Initiator),
        PeerState::ROpen => Some(Conn::Responder),
        _ => None,
    }
}

impl PeerDriver {
    pub fn new(
        node: Arc<Node>,
        entry: Arc<PeerEntry>,
        rx: mpsc::UnboundedReceiver<Control>,
        key: String,
        peer: &str,
        target: Option<Target>,
    ) -> Self {
        // The watchdog's jitter (RFC 3539 §3.4.1) keeps peers from firing in step; seeded
        // from both identities and the node's own counter, it differs between peers and
        // drivers, yet a test on a virtual clock replays the same run every time.
        let seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&node.local.origin_host, &key, node.ids.connection()).hash(&mut h);
            h.finish()
        };
        entry.shared().target = target.as_ref().map(|t| t.label.clone());
        PeerDriver {
            watchdog: Watchdog::new(node.limits.tw, jitter_source(seed)),
            node,
            entry,
            rx,
            key,
            peer: Arc::from(peer),
            target,
            initiator: None,
            responder: None,
            accepted_cer: None,
            connecting: None,
            reconnect_at: None,
            stopping: false,
        }
    }

    /// Runs until the machine is Closed with nothing left to do, then leaves the table.
    pub async fn run(mut self) {
        let shutdown = self.node.shutdown_token();
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        let sleep = tokio::time::sleep_until(far);
        tokio::pin!(sleep);
        loop {
            if self.finished() {
                break;
            }
            let deadline = self
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            let (rx, ini, resp, conn) = (
                &mut self.rx,
                &mut self.initiator,
                &mut self.responder,
                &mut self.connecting,
            );
            let wake = tokio::select! {
                c = rx.recv() => Wake::Control(c),
                _ = shutdown.cancelled(), if !self.stopping => Wake::Shutdown,
                f = read(ini) => Wake::Frame(Conn::Initiator, f),
                f = read(resp) => Wake::Frame(Conn::Responder, f),
                r = connected(conn) => Wake::Connected(r),
                _ = &mut sleep => Wake::Timer,
            };
            match wake {
                Wake::Control(Some(Control::Inbound(inbound))) => self.inbound(*inbound).await,
                Wake::Control(Some(Control::Start)) => {
                    self.step(PeerEvent::Start, Context::default()).await
                }
                // The table holds the sender as long as the entry lives: not reached.
                Wake::Control(None) => break,
                Wake::Shutdown => self.stop().await,
                Wake::Frame(conn, Some(Ok(bytes))) => self.handle_frame(conn, bytes).await,
                Wake::Frame(conn, Some(Err(crate::framing::FrameError::Protocol(e, h)))) => {
                    // The stream cannot be resynchronised (§3): answer if it was a request,
                    // then the connection goes.
                    if let (Some(h), Some(link)) = (h, self.link(conn)) {
                        if h.flags.is_request() {
                            let a = base::error_answer(&self.node.local, &h, None, &e);
                            link.send(&a).await;
                        }
                    }
                    warn!(peer = %self.peer, "{e}; closing");
                    self.transport_lost(conn).await;
                }
                Wake::Frame(conn, Some(Err(crate::framing::FrameError::Io(e)))) => {
                    debug!(peer = %self.peer, "read failed: {e}");
                    self.transport_lost(conn).await;
                }
                Wake::Frame(conn, None) => {
                    debug!(peer = %self.peer, ?conn, "the peer closed the connection");
                    self.transport_lost(conn).await;
                }
                Wake::Connected(r) => self.connected(r).await,
                Wake::Timer => self.timers().await,
            }
        }
        self.leave();
    }

    fn finished(&self) -> bool {
        let keep = self.target.as_ref().is_some_and(|t| t.keep) && !self.stopping;
        self.entry.shared().fsm.state() == PeerState::Closed
            && self.initiator.is_none()
            && self.responder.is_none()
            && self.connecting.is_none()
            && !keep
            && self.rx.is_empty()
    }

    /// Leaves the table; anything that arrived meanwhile goes to a new driver.
    fn leave(mut self) {
        self.node.table.remove(&self.key, &self.entry);
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Control::Inbound(inbound) = c {
                self.node.deliver_inbound(*inbound);
            }
        }
        if let Some(o) = self.target.as_mut().and_then(|t| t.opened.take()) {
            let _ = o.send(Err(PeerError::Closed));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.entry.shared().fsm.deadline(),
            self.watchdog.deadline(),
            self.reconnect_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn link(&self, conn: Conn) -> Option<&Outlet> {
        match conn {
            Conn::Initiator => self.initiator.as_ref().map(|l| &l.out),
            Conn::Responder => self.responder.as_ref().map(|l| &l.out),
        }
    }

    fn state(&self) -> PeerState {
        self.entry.shared().fsm.state()
    }

    /// Feeds one event to the machine, carries out its actions, then what the change of
    /// state means for the watchdog, the routes and the applications.
    async fn step(&mut self, event: PeerEvent, mut ctx: Context) {
        let now = now();
        let (before, actions, after) = {
            let mut shared = self.entry.shared();
            let before = shared.fsm.state();
            let actions = shared.fsm.handle(event.clone(), now);
            (before, actions, shared.fsm.state())
        };
        if actions.is_empty() {
            debug!(peer = %self.peer, state = ?before, ?event, "no row: nothing to do");
        }
        for action in actions {
            self.execute(action, &mut ctx).await;
        }
        if let Some(inbound) = ctx.inbound.take() {
            // Neither accepted nor rejected (no row): the connection goes.
            inbound.link.close(&self.node.tracker);
        }
        self.entered(before, after, now).await;
    }

    async fn execute(&mut self, action: PeerAction, ctx: &mut Context) {
        let node = Arc::clone(&self.node);
        match action {
            PeerAction::SndConnReq => {
                if let Some(t) = &self.target {
                    debug!(target = %t.label, "connecting");
                    self.connecting = Some((t.connector)());
                }
            }
            PeerAction::Accept => {
                if let Some(Inbound {
                    mut link,
                    cer,
                    caps,
                    verdict,
                }) = ctx.inbound.take()
                {
                    link.out.common = verdict.clone().unwrap_or_default();
                    ctx.accepted = Some((caps, link.out.common.clone()));
                    self.install(Conn::Responder, link);
                    self.accepted_cer = Some(cer);
                }
            }
            PeerAction::ProcessCer => {
                if let Some((caps, common)) = ctx.accepted.take() {
                    debug!(peer = %self.peer, ?common, "CER accepted");
                    self.entry.shared().realm = Some(caps.origin_realm);
                }
            }
            PeerAction::Reject => {
                if let Some(inbound) = ctx.inbound.take() {
                    let answer = inbound.verdict.err().unwrap_or_else(|| {
                        let text = "a connection with this peer is already open";
                        capabilities::cea(
                            &node.local,
                            &node.app_ids,
                            &inbound.cer,
                            ResultCode::UNABLE_TO_COMPLY,
                            Some(text),
                        )
                    });
                    info!(peer = %self.peer, from = %inbound.link.out.label,
                        result = ?answer.result_code(), "inbound connection refused");
                    inbound.link.out.send(&answer).await;
                    inbound.link.close(&node.tracker);
                }
            }
            PeerAction::SndCer(conn) => {
                let mut cer = capabilities::cer(&node.local, &node.app_ids);
                node.ids.assign(&mut cer);
                self.send(conn, &cer).await;
            }
            PeerAction::SndCea(conn) => {
                let repeated = ctx.message.as_ref().filter(|m| m.is_request());
                let Some(cer) = repeated.or(self.accepted_cer.as_ref()) else {
                    return;
                };
                let cea =
                    capabilities::cea(&node.local, &node.app_ids, cer, ResultCode::SUCCESS, None);
                self.send(conn, &cea).await;
            }
            PeerAction::Cleanup => self.connecting = None,
            PeerAction::Error => {
                self.connecting = None;
                self.disconnect(Conn::Initiator);
                self.disconnect(Conn::Responder);
            }
            PeerAction::ProcessCea => {
                if let (Some(caps), Some(link)) = (ctx.cea.take(), self.initiator.as_mut()) {
                    link.out.common = caps.common_with(&node.app_ids);
                    self.entry.shared().realm = Some(caps.origin_realm);
                }
            }
            PeerAction::SndDpr(conn) => {
                let mut dpr = base::dpr(&node.local, base::REBOOTING);
                node.ids.assign(&mut dpr);
                self.send(conn, &dpr).await;
            }
            PeerAction::SndDpa(conn) => {
                if let Some(dpr) = &ctx.message {
                    info!(peer = %self.peer, "DPR received; answered");
                    self.send(conn, &base::dpa(&node.local, dpr)).await;
                }
            }
            PeerAction::Disc(conn) => self.disconnect(conn),
            PeerAction::Elect => {
                let won = crate::fsm::PeerFsm::wins_election(&node.local.origin_host, &self.peer);
                info!(peer = %self.peer, won, "election (RFC 6733 §5.6.4)");
            }
            // Only `Send-Message` returns it, and that event is delivered by the sender.
            PeerAction::SndMessage(_) => {}
            PeerAction::SndDwa(conn) => {
                if let Some(dwr) = &ctx.message {
                    self.send(conn, &base::dwa(&node.local, dwr)).await;
                }
            }
            // The watchdog saw the DWR with the frame (handle_frame).
            PeerAction::ProcessDwr => {}
            // The watchdog saw the DWA too; it answers our DWR, or one an application sent
            // with `Node::request`, which waits for it.
            PeerAction::ProcessDwa => {
                let conn = open_conn(self.state());
                if let (Some(dwa), Some(link)) =
                    (ctx.message.take(), conn.and_then(|c| self.link(c)))
                {
                    dispatch::deliver_answer(link, dwa);
                }
            }
            PeerAction::Process => self.process(ctx).await,
        }
    }

    /// Process: a request goes to the application, an answer to whoever asked.
    async fn process(&mut self, ctx: &mut Context) {
        let Some(conn) = ctx.conn else { return };
        let (node, peer) = (Arc::clone(&self.node), Arc::clone(&self.peer));
        let Some(link) = self.link(conn) else { return };
        if let Some((bytes, e)) = ctx.undecodable.take() {
            dispatch::answer_undecodable(&node, link, &bytes, e).await;
        } else if let Some(e) = ctx.invalid.take() {
            if let Some(msg) = ctx.message.take() {
                dispatch::answer_error(&node, link, &msg, &e).await;
            }
        } else if let Some(msg) = ctx.message.take() {
            if msg.is_request() {
                dispatch::dispatch_request(&node, &peer, link, msg).await;
            } else {
                dispatch::deliver_answer(link, msg);
            }
        }
    }

    async fn send(&mut self, conn: Conn, m: &Message) {
        if let Some(link) = self.link(conn) {
            link.send(m).await;
        }
    }

    /// Makes a connection the peer's `conn` and reachable for requests.
    fn install(&mut self, conn: Conn, link: Link) {
        let route = Some(link.out.route());
        let old = match conn {
            Conn::Initiator => {
                self.entry.shared().initiator = route;
                self.initiator.replace(link)
            }
            Conn::Responder => {
                self.entry.shared().responder = route;
                self.responder.replace(link)
            }
        };
        if let Some(old) = old {
            old.close(&self.node.tracker);
        }
    }

    /// I-Disc / R-Disc: that connection goes.
    fn disconnect(&mut self, conn: Conn) {
        let link = match conn {
            Conn::Initiator => {
                self.entry.shared().initiator = None;
                self.initiator.take()
            }
            Conn::Responder => {
                self.accepted_cer = None;
                self.entry.shared().responder = None;
                self.responder.take()
            }
        };
        if let Some(link) = link {
            let (id, to) = (link.out.id, &link.out.label);
            debug!(peer = %self.peer, ?conn, id, %to, "disconnecting");
            link.close(&self.node.tracker);
        }
    }

    /// The transport of `conn` is gone: close our end, tell the machine (`*-Peer-Disc`).
    async fn transport_lost(&mut self, conn: Conn) {
        self.disconnect(conn);
        let event = match conn {
            Conn::Initiator => PeerEvent::IPeerDisc,
            Conn::Responder => PeerEvent::RPeerDisc,
        };
        self.step(event, Context::default()).await;
    }

    async fn inbound(&mut self, inbound: Inbound) {
        let event = PeerEvent::RConnCer {
            peer_host: inbound.caps.origin_host.clone(),
            acceptable: inbound.verdict.is_ok(),
        };
        let ctx = Context {
            inbound: Some(inbound),
            ..Context::default()
        };
        self.step(event, ctx).await;
    }

    async fn connected(&mut self, result: std::io::Result<BoxedTransport>) {
        self.connecting = None;
        let label = self.target.as_ref().map(|t| t.label.clone());
        match result {
            Ok(stream) => {
                let link = self.node.new_link(stream, label.unwrap_or_default(), None);
                self.install(Conn::Initiator, link);
                self.step(PeerEvent::IRcvConnAck, Context::default()).await;
            }
            Err(e) => {
                debug!(target = ?label, "connect failed: {e}");
                self.step(PeerEvent::IRcvConnNack, Context::default()).await;
            }
        }
    }
}
