//! A Diameter node: accepts and opens peer connections, runs the capabilities exchange, the
//! peer state machine (§5.6) and the watchdog (RFC 3539) per peer, and routes requests to the
//! application and answers back to whoever asked.
//!
//! One task per connection reads frames and drives the state machines; a second writes
//! frames, coalescing whatever is queued into one write. Requests run in their own tasks so a
//! slow answer never blocks the connection, bounded per peer by `max_in_flight_per_peer`.

use crate::app::{Application, Request};
use crate::capabilities::{self, PeerCapabilities};
use crate::config::{LocalPeer, PeerLimits};
use crate::dedup::{readdress, DuplicateCache, Seen};
use crate::deviation::{self, Deviation};
use crate::framing::{DiameterFramer, FrameError};
use crate::fsm::{Conn, FsmTimers, PeerAction, PeerEvent, PeerFsm, PeerState};
use crate::watchdog::{jitter_source, Watchdog, WatchdogAction, WatchdogEvent};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_codec::codes::*;
use tollgate_codec::{
    ApplicationId, Avp, CommandCode, Dictionary, Header, Message, ProtocolError, ResultCode,
};
use tracing::{debug, info, warn};

/// Why a request we sent got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no open connection to {0}")]
    NoPeer(String),
    #[error("the connection closed before the answer arrived")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Counters the admin endpoint exports.
#[derive(Default, Debug)]
pub struct NodeStats {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub requests_received: AtomicU64,
    pub answers_sent: AtomicU64,
    pub duplicates_replayed: AtomicU64,
    pub too_busy: AtomicU64,
    pub protocol_errors: AtomicU64,
}

struct ConnHandle {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Message>>>>,
}

/// What [`Node::register`] hands to the connection's driver.
struct Registered {
    conn_id: u64,
    close: CancellationToken,
    pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Message>>>>,
}

struct PeerSlot {
    fsm: PeerFsm,
    host: String,
    /// Origin-Realm from the peer's CER or CEA.
    realm: Option<String>,
    responder: Option<ConnHandle>,
    initiator: Option<ConnHandle>,
}

/// Where hop-by-hop and end-to-end identifiers come from (§3: end-to-end ids stay unique
/// across reboots for 4 minutes: high 12 bits from the boot time, low 20 from a counter).
struct Ids {
    hop_by_hop: AtomicU32,
    end_to_end: AtomicU32,
    connection: AtomicU64,
}

impl Ids {
    fn new() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0) as u32;
        Ids {
            hop_by_hop: AtomicU32::new(random_u32()),
            end_to_end: AtomicU32::new((boot & 0xfff) << 20 | (random_u32() & 0xfffff)),
            connection: AtomicU64::new(1),
        }
    }
}

/// A random number from the std hasher's per-process keys (no rand dependency needed for ids).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u32
}

pub struct Node {
    pub local: LocalPeer,
    pub limits: PeerLimits,
    dict: Arc<Dictionary>,
    app: Option<Arc<dyn Application>>,
    app_ids: Vec<ApplicationId>,
    dedup: DuplicateCache,
    peers: Mutex<HashMap<String, PeerSlot>>,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ids: Ids,
    pub stats: NodeStats,
}

impl Node {
    /// A node serving `app` (or none: a pure client).
    pub fn new(
        local: LocalPeer,
        limits: PeerLimits,
        dict: Arc<Dictionary>,
        app: Option<Arc<dyn Application>>,
        extra_app_ids: &[ApplicationId],
    ) -> Arc<Node> {
        let mut app_ids = app
            .as_ref()
            .map(|a| a.application_ids())
            .unwrap_or_default();
        for a in extra_app_ids {
            if !app_ids.contains(a) {
                app_ids.push(*a);
            }
        }
        Arc::new(Node {
            dedup: DuplicateCache::new(limits.dedup_capacity, limits.dedup_ttl),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            local,
            limits,
            dict,
            app,
            app_ids,
            peers: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ids: Ids::new(),
            stats: NodeStats::default(),
        })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerSlot>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fsm_timers(&self) -> FsmTimers {
        FsmTimers {
            connect_timeout: self.limits.cea_timeout,
            cea_timeout: self.limits.cea_timeout,
            dpa_timeout: self.limits.dpa_timeout,
        }
    }

    /// Applies a peer-FSM event for `host` and returns the actions.
    fn peer_event(&self, host: &str, event: PeerEvent) -> Vec<PeerAction> {
        let mut peers = self.peers();
        let timers = self.fsm_timers();
        let slot = peers
            .entry(host.to_ascii_lowercase())
            .or_insert_with(|| PeerSlot {
                fsm: PeerFsm::new(&self.local.origin_host, timers),
                host: host.to_string(),
                realm: None,
                responder: None,
                initiator: None,
            });
        slot.fsm.handle(event, Instant::now())
    }

    /// The Origin-Realm a peer announced in its CER or CEA (the Destination-Realm to use
    /// for requests to it).
    pub fn peer_realm(&self, host: &str) -> Option<String> {
        self.peers()
            .get(&host.to_ascii_lowercase())
            .and_then(|s| s.realm.clone())
    }

    /// Peers and the state of their state machine.
    pub fn peer_states(&self) -> Vec<(String, PeerState)> {
        self.peers()
            .values()
            .map(|s| (s.host.clone(), s.fsm.state()))
            .collect()
    }

    /// The token cancelled by [`Node::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, sends DPR on every connection, lets requests in flight finish, and
    /// returns when every connection has closed (or `grace` has passed).
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("connections still open after {grace:?}; closing");
        }
    }

    /// Accepts connections until shutdown.
    pub async fn serve_tcp(self: &Arc<Self>, listener: TcpListener) {
        self.serve(listener, |s| async move { Ok(s) }).await
    }

    /// Accepts connections, passing each through `wrap` (e.g. a TLS handshake) first.
    pub async fn serve<F, Fut, S>(self: &Arc<Self>, listener: TcpListener, wrap: F)
    where
        F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<S>> + Send,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                self.stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%addr, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            self.stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let node = Arc::clone(self);
            let wrap = wrap.clone();
            self.tracker.spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(node.limits.cer_timeout, wrap(stream)).await {
                    Ok(Ok(s)) => node.run_responder(s, addr).await,
                    Ok(Err(e)) => debug!(%addr, "handshake failed: {e}"),
                    Err(_) => debug!(%addr, "handshake timed out"),
                }
            });
        }
    }

    /// Keeps a connection open to `addr` (an outbound peer), reconnecting every Tc.
    pub fn connect(self: &Arc<Self>, addr: SocketAddr) {
        let node = Arc::clone(self);
        self.tracker.spawn(async move {
            loop {
                if node.shutdown.is_cancelled() {
                    break;
                }
                let attempt = tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    r = tokio::time::timeout(node.limits.cea_timeout, TcpStream::connect(addr)) => r,
                };
                match attempt {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        node.run_initiator(stream, addr).await;
                    }
                    Ok(Err(e)) => debug!(%addr, "connect failed: {e}"),
                    Err(_) => debug!(%addr, "connect timed out"),
                }
                tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(node.limits.tc) => {}
                }
            }
        });
    }

    /// Opens one outbound connection now and returns the peer's Origin-Host once it is
    /// I-Open; the connection then runs in the background until shutdown or failure.
    pub async fn connect_once<S>(self: &Arc<Self>, stream: S) -> Result<String, PeerError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let node = Arc::clone(self);
        self.tracker.spawn(async move {
            node.initiate(stream, None, Some(tx)).await;
        });
        rx.await.map_err(|_| PeerError::Closed)?
    }

    async fn run_initiator(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        self.initiate(stream, Some(addr), None).await
    }

    async fn initiate<S>(
        self: &Arc<Self>,
        stream: S,
        addr: Option<SocketAddr>,
        opened: Option<oneshot::Sender<Result<String, PeerError>>>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut frames = FramedRead::new(read, self.framer());
        let (tx, rx) = mpsc::channel(self.limits.send_queue);
        let writer = tokio::spawn(write_frames(write, rx));
        let mut cer = capabilities::cer(&self.local, &self.app_ids);
        self.assign_ids(&mut cer);
        if tx.send(cer.to_bytes()).await.is_err() {
            return;
        }
        let first = tokio::time::timeout(self.limits.cea_timeout, frames.next()).await;
        let cea = match first {
            Ok(Some(Ok(b))) => Message::decode_with(&b, &self.limits.codec).ok(),
            _ => None,
        };
        let Some(cea) = cea
            .filter(|m| !m.is_request() && m.header.command == CommandCode::CAPABILITIES_EXCHANGE)
        else {
            // §5.6 Wait-I-CEA: I-Rcv-Non-CEA or Timeout → Error, Closed.
            debug!(?addr, "no CEA; closing");
            if let Some(o) = opened {
                let _ = o.send(Err(PeerError::Closed));
            }
            drop(tx);
            let _ = writer.await;
            return;
        };
        let caps = PeerCapabilities::from_message(&cea);
        let ok = cea.result_code().is_some_and(ResultCode::is_success);
        let Some(caps) = caps.ok().filter(|_| ok) else {
            warn!(?addr, result = ?cea.result_code(), "capabilities exchange refused");
            if let Some(o) = opened {
                let _ = o.send(Err(PeerError::Closed));
            }
            drop(tx);
            let _ = writer.await;
            return;
        };
        let host = caps.origin_host.clone();
        self.peer_event(&host, PeerEvent::Start);
        self.peer_event(&host, PeerEvent::IRcvConnAck);
        let actions = self.peer_event(&host, PeerEvent::IRcvCea { success: true });
        if !actions.is_empty() && self.peer_state(&host) != Some(PeerState::IOpen) {
            debug!(%host, ?actions, "peer state machine refused the initiator connection");
        }
        info!(?addr, peer = %host, "peer open (initiator)");
        let common = caps.common_with(&self.app_ids);
        let reg = self.register(&caps, Conn::Initiator, &tx);
        if let Some(o) = opened {
            let _ = o.send(Ok(host.clone()));
        }
        self.run_open(frames, tx, writer, caps, common, Conn::Initiator, reg)
            .await;
    }

    fn peer_state(&self, host: &str) -> Option<PeerState> {
        self.peers()
            .get(&host.to_ascii_lowercase())
            .map(|s| s.fsm.state())
    }

    fn framer(&self) -> DiameterFramer {
        DiameterFramer {
            max_message_len: self.limits.codec.max_message_len,
        }
    }

    fn assign_ids(&self, m: &mut Message) {
        m.header.hop_by_hop = self.ids.hop_by_hop.fetch_add(1, Ordering::Relaxed);
        m.header.end_to_end = self.ids.end_to_end.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh End-to-End identifier for a request the application builds itself.
    pub fn next_end_to_end(&self) -> u32 {
        self.ids.end_to_end.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request to an open peer (any, when `peer` is None) and waits for its answer.
    /// Hop-by-hop is assigned here; an End-to-End id is assigned unless already set, so a
    /// retransmission (T flag) keeps the original's.
    pub async fn request(
        &self,
        peer: Option<&str>,
        mut msg: Message,
        timeout: Duration,
    ) -> Result<Message, PeerError> {
        msg.header.hop_by_hop = self.ids.hop_by_hop.fetch_add(1, Ordering::Relaxed);
        if msg.header.end_to_end == 0 {
            msg.header.end_to_end = self.next_end_to_end();
        }
        let (tx, pending) = {
            let peers = self.peers();
            let slot = match peer {
                Some(h) => peers.get(&h.to_ascii_lowercase()),
                None => peers
                    .values()
                    .find(|s| matches!(s.fsm.state(), PeerState::IOpen | PeerState::ROpen)),
            };
            let handle = slot.and_then(|s| s.initiator.as_ref().or(s.responder.as_ref()));
            match handle {
                Some(h) => (h.tx.clone(), Arc::clone(&h.pending)),
                None => return Err(PeerError::NoPeer(peer.unwrap_or("any").to_string())),
            }
        };
        let (atx, arx) = oneshot::channel();
        let hbh = msg.header.hop_by_hop;
        lock(&pending).insert(hbh, atx);
        if tx.send(msg.to_bytes()).await.is_err() {
            lock(&pending).remove(&hbh);
            return Err(PeerError::Closed);
        }
        match tokio::time::timeout(timeout, arx).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(PeerError::Closed),
            Err(_) => {
                lock(&pending).remove(&hbh);
                Err(PeerError::Timeout(timeout))
            }
        }
    }

    async fn run_responder<S>(self: Arc<Self>, stream: S, addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut frames = FramedRead::new(read, self.framer());
        let (tx, rx) = mpsc::channel(self.limits.send_queue);
        let writer = tokio::spawn(write_frames(write, rx));
        // §5.6: the first message on an accepted connection must be a CER; anything else,
        // silence past the limit, or an unframeable stream closes the connection.
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => None,
            f = tokio::time::timeout(self.limits.cer_timeout, frames.next()) => match f {
                Ok(Some(Ok(b))) => Some(b),
                Ok(Some(Err(e))) => { debug!(%addr, "before CER: {e}"); None }
                Ok(None) => None,
                Err(_) => { debug!(%addr, "no CER within {:?}", self.limits.cer_timeout); None }
            },
        };
        let cer = first.and_then(|b| match Message::decode_with(&b, &self.limits.codec) {
            Ok(m) if m.is_request() && m.header.command == CommandCode::CAPABILITIES_EXCHANGE => {
                Some(m)
            }
            Ok(m) => {
                debug!(%addr, command = %m.header.command, "first message is not a CER");
                None
            }
            Err(e) => {
                debug!(%addr, "undecodable first message: {e}");
                None
            }
        });
        let Some(cer) = cer else {
            drop(tx);
            let _ = writer.await;
            return;
        };
        let refuse = |result: ResultCode, text: String| {
            capabilities::cea(&self.local, &self.app_ids, &cer, result, Some(&text))
        };
        let verdict = match self.dict.validate(&cer, &self.limits.codec) {
            Err(e) => Err(self.error_answer(&cer.header, &cer, &e)),
            Ok(()) => match PeerCapabilities::from_message(&cer) {
                Err(e) => Err(self.error_answer(&cer.header, &cer, &e)),
                Ok(caps) => {
                    let allowed = self.local.allowed_peers.as_ref().is_none_or(|list| {
                        list.iter()
                            .any(|p| p.eq_ignore_ascii_case(&caps.origin_host))
                    });
                    let common = caps.common_with(&self.app_ids);
                    if !allowed {
                        Err(refuse(
                            ResultCode::UNKNOWN_PEER,
                            format!("{} is not a configured peer", caps.origin_host),
                        ))
                    } else if common.is_empty() {
                        Err(refuse(
                            ResultCode::NO_COMMON_APPLICATION,
                            "no application in common".into(),
                        ))
                    } else {
                        Ok((caps, common))
                    }
                }
            },
        };
        let (caps, common) = match verdict {
            Ok(v) => v,
            Err(answer) => {
                info!(%addr, result = ?answer.result_code(), "capabilities exchange refused");
                let _ = tx.send(answer.to_bytes()).await;
                drop(tx);
                let _ = writer.await;
                return;
            }
        };
        let actions = self.peer_event(
            &caps.origin_host,
            PeerEvent::RConnCer {
                peer_host: caps.origin_host.clone(),
            },
        );
        if !actions
            .iter()
            .any(|a| matches!(a, PeerAction::SndCea(Conn::Responder)))
        {
            // §5.6 R-Reject: the peer already has an open connection (or lost an election).
            info!(%addr, peer = %caps.origin_host, ?actions, "second connection refused");
            let answer = refuse(
                ResultCode::UNABLE_TO_COMPLY,
                "a connection with this peer is already open".into(),
            );
            let _ = tx.send(answer.to_bytes()).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
        self.execute_foreign(&caps.origin_host, &actions);
        let cea = capabilities::cea(&self.local, &self.app_ids, &cer, ResultCode::SUCCESS, None);
        if tx.send(cea.to_bytes()).await.is_err() {
            return;
        }
        info!(%addr, peer = %caps.origin_host, "peer open (responder)");
        let reg = self.register(&caps, Conn::Responder, &tx);
        self.run_open(frames, tx, writer, caps, common, Conn::Responder, reg)
            .await;
    }

    /// Actions the FSM asks for on the other connection of the same peer (election).
    fn execute_foreign(&self, host: &str, actions: &[PeerAction]) {
        let peers = self.peers();
        let Some(slot) = peers.get(&host.to_ascii_lowercase()) else {
            return;
        };
        for a in actions {
            if let PeerAction::Disc(Conn::Initiator) = a {
                if let Some(h) = &slot.initiator {
                    h.close.cancel();
                }
            }
        }
    }

    /// Makes an open connection reachable through the peer table (for [`Node::request`])
    /// before anyone is told it is open.
    fn register(
        &self,
        caps: &PeerCapabilities,
        role: Conn,
        tx: &mpsc::Sender<Bytes>,
    ) -> Registered {
        let reg = Registered {
            conn_id: self.ids.connection.fetch_add(1, Ordering::Relaxed),
            close: CancellationToken::new(),
            pending: Arc::default(),
        };
        let mut peers = self.peers();
        if let Some(slot) = peers.get_mut(&caps.origin_host.to_ascii_lowercase()) {
            slot.realm = Some(caps.origin_realm.clone());
            let h = ConnHandle {
                id: reg.conn_id,
                tx: tx.clone(),
                close: reg.close.clone(),
                pending: Arc::clone(&reg.pending),
            };
            match role {
                Conn::Responder => slot.responder = Some(h),
                Conn::Initiator => slot.initiator = Some(h),
            }
        }
        reg
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_open<R>(
        self: &Arc<Self>,
        mut frames: FramedRead<R, DiameterFramer>,
        tx: mpsc::Sender<Bytes>,
        writer: tokio::task::JoinHandle<()>,
        caps: PeerCapabilities,
        common: Vec<ApplicationId>,
        role: Conn,
        reg: Registered,
    ) where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let Registered {
            conn_id,
            close,
            pending,
        } = reg;
        let host_key = caps.origin_host.to_ascii_lowercase();
        let mut conn = OpenConn {
            node: Arc::clone(self),
            peer: Arc::from(caps.origin_host.as_str()),
            role,
            common,
            tx,
            pending,
            in_flight: Arc::new(Semaphore::new(self.limits.max_in_flight_per_peer)),
            closing_deadline: None,
        };
        let mut watchdog =
            Watchdog::new(self.limits.tw, jitter_source(conn_id ^ random_u32() as u64));
        watchdog.handle(WatchdogEvent::ConnectionUp, Instant::now());
        let mut shutdown_sent = false;
        loop {
            let wd_deadline = watchdog
                .deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let closing = conn
                .closing_deadline
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = self.shutdown.cancelled(), if !shutdown_sent => {
                    shutdown_sent = true;
                    // §5.4: say goodbye with DPR (REBOOTING: we may come back), then wait for
                    // DPA while requests in flight finish.
                    conn.send_dpr(0).await;
                }
                _ = close.cancelled() => break,
                _ = tokio::time::sleep_until(closing) => {
                    debug!(peer = %conn.peer, "closing timer expired");
                    break;
                }
                _ = tokio::time::sleep_until(wd_deadline) => {
                    let actions = watchdog.handle(WatchdogEvent::TimerExpired, Instant::now());
                    if conn.watchdog_actions(&actions).await {
                        break;
                    }
                }
                frame = frames.next() => match frame {
                    None => { debug!(peer = %conn.peer, "peer closed the connection"); break }
                    Some(Err(FrameError::Io(e))) => { debug!(peer = %conn.peer, "read failed: {e}"); break }
                    Some(Err(FrameError::Protocol(e, header))) => {
                        // The stream cannot be resynchronised: answer if it was a request, close.
                        if let Some(h) = header.filter(|h| h.flags.is_request()) {
                            self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                            let a = Message::error_answer(&h, None, &e, &self.local.origin_host, &self.local.origin_realm);
                            let _ = conn.tx.send(a.to_bytes()).await;
                        }
                        warn!(peer = %conn.peer, "{e}; closing");
                        break;
                    }
                    Some(Ok(bytes)) => {
                        let is_dwa = bytes.len() >= 8
                            && bytes[4] & 0x80 == 0
                            && u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) == CommandCode::DEVICE_WATCHDOG.0;
                        let ev = if is_dwa { WatchdogEvent::DwaReceived } else { WatchdogEvent::MessageReceived };
                        let actions = watchdog.handle(ev, Instant::now());
                        if conn.watchdog_actions(&actions).await {
                            break;
                        }
                        if conn.frame(bytes).await {
                            break;
                        }
                    }
                }
            }
        }
        // Requests in flight finish before the writer stops: their tasks hold sender clones.
        let _ = conn
            .in_flight
            .acquire_many(self.limits.max_in_flight_per_peer as u32)
            .await;
        let disc = match role {
            Conn::Responder => PeerEvent::RPeerDisc,
            Conn::Initiator => PeerEvent::IPeerDisc,
        };
        {
            let mut peers = self.peers();
            if let Some(slot) = peers.get_mut(&host_key) {
                let h = match role {
                    Conn::Responder => &mut slot.responder,
                    Conn::Initiator => &mut slot.initiator,
                };
                if h.as_ref().is_some_and(|h| h.id == conn_id) {
                    *h = None;
                }
                slot.fsm.handle(disc, Instant::now());
            }
        }
        // Unanswered requests we sent learn that the connection is gone.
        lock(&conn.pending).clear();
        let OpenConn { tx, .. } = conn;
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        info!(peer = %caps.origin_host, "peer connection closed");
    }

    fn error_answer(&self, h: &Header, request: &Message, e: &ProtocolError) -> Message {
        let mut a = Message::error_answer(
            h,
            request.find(SESSION_ID),
            e,
            &self.local.origin_host,
            &self.local.origin_realm,
        );
        for p in request.find_all(PROXY_INFO) {
            a.push(p.clone());
        }
        a
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct OpenConn {
    node: Arc<Node>,
    peer: Arc<str>,
    role: Conn,
    common: Vec<ApplicationId>,
    tx: mpsc::Sender<Bytes>,
    pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Message>>>>,
    in_flight: Arc<Semaphore>,
    closing_deadline: Option<Instant>,
}

impl OpenConn {
    fn local(&self) -> &LocalPeer {
        &self.node.local
    }

    async fn send(&self, m: &Message) {
        let _ = self.tx.send(m.to_bytes()).await;
    }

    async fn send_dpr(&mut self, cause: i32) {
        let mut dpr = Message::request(CommandCode::DISCONNECT_PEER, ApplicationId::COMMON, false)
            .with(Avp::from_str(ORIGIN_HOST, &self.local().origin_host))
            .with(Avp::from_str(ORIGIN_REALM, &self.local().origin_realm))
            .with(Avp::from_enum(DISCONNECT_CAUSE, cause));
        self.node.assign_ids(&mut dpr);
        self.node.peer_event(&self.peer, PeerEvent::Stop);
        self.send(&dpr).await;
        self.closing_deadline = Some(Instant::now() + self.node.limits.dpa_timeout);
    }

    /// Returns true when the connection must close.
    async fn watchdog_actions(&mut self, actions: &[WatchdogAction]) -> bool {
        for a in actions {
            match a {
                WatchdogAction::SendDwr => {
                    let mut dwr = Message::request(
                        CommandCode::DEVICE_WATCHDOG,
                        ApplicationId::COMMON,
                        false,
                    )
                    .with(Avp::from_str(ORIGIN_HOST, &self.local().origin_host))
                    .with(Avp::from_str(ORIGIN_REALM, &self.local().origin_realm))
                    .with(Avp::from_u32(ORIGIN_STATE_ID, self.local().origin_state_id));
                    self.node.assign_ids(&mut dwr);
                    self.send(&dwr).await;
                }
                WatchdogAction::Failover => warn!(peer = %self.peer, "watchdog: peer suspect"),
                WatchdogAction::Failback => info!(peer = %self.peer, "watchdog: peer back"),
                WatchdogAction::CloseConnection => {
                    warn!(peer = %self.peer, "watchdog: peer down; closing");
                    return true;
                }
                WatchdogAction::AttemptOpen => {}
            }
        }
        false
    }

    /// Handles one frame. Returns true when the connection must close.
    async fn frame(&mut self, bytes: Bytes) -> bool {
        let node = Arc::clone(&self.node);
        let msg = match Message::decode_with(&bytes, &node.limits.codec) {
            Ok(m) => m,
            Err(e) => {
                if let Some(h) = e.header.filter(|h| h.flags.is_request()) {
                    node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    // The body is broken, but a leading Session-Id can still be echoed.
                    let mut pos = tollgate_codec::header::HEADER_LEN;
                    let sid = Avp::read(&bytes, &mut pos)
                        .ok()
                        .filter(|a| a.is(SESSION_ID));
                    let a = Message::error_answer(
                        &h,
                        sid.as_ref(),
                        &e.error,
                        &node.local.origin_host,
                        &node.local.origin_realm,
                    );
                    self.send(&a).await;
                }
                return false;
            }
        };
        if !msg.is_request() {
            return self.answer(msg);
        }
        node.stats.requests_received.fetch_add(1, Ordering::Relaxed);
        let h = msg.header;
        if h.application == ApplicationId::COMMON {
            match h.command {
                CommandCode::DEVICE_WATCHDOG => {
                    let dwa = Message::answer_to(&msg)
                        .with(Avp::from_u32(RESULT_CODE, ResultCode::SUCCESS.0))
                        .with(Avp::from_str(ORIGIN_HOST, &node.local.origin_host))
                        .with(Avp::from_str(ORIGIN_REALM, &node.local.origin_realm))
                        .with(Avp::from_u32(ORIGIN_STATE_ID, node.local.origin_state_id));
                    self.send(&dwa).await;
                    return false;
                }
                CommandCode::DISCONNECT_PEER => {
                    let ev = match self.role {
                        Conn::Responder => PeerEvent::RRcvDpr,
                        Conn::Initiator => PeerEvent::IRcvDpr,
                    };
                    node.peer_event(&self.peer, ev);
                    let dpa = Message::answer_to(&msg)
                        .with(Avp::from_u32(RESULT_CODE, ResultCode::SUCCESS.0))
                        .with(Avp::from_str(ORIGIN_HOST, &node.local.origin_host))
                        .with(Avp::from_str(ORIGIN_REALM, &node.local.origin_realm));
                    self.send(&dpa).await;
                    info!(peer = %self.peer, "DPR received; answered");
                    // §5.4: the DPR sender closes; we give it a moment, then close ourselves.
                    self.closing_deadline = Some(Instant::now() + node.limits.dpa_timeout);
                    return false;
                }
                CommandCode::CAPABILITIES_EXCHANGE => {
                    // R-Open + R-Rcv-CER → R-Snd-CEA: answer again with what we share.
                    let cea = capabilities::cea(
                        &node.local,
                        &node.app_ids,
                        &msg,
                        ResultCode::SUCCESS,
                        None,
                    );
                    self.send(&cea).await;
                    return false;
                }
                _ => {}
            }
        }
        if let Err(e) = self.check_request(&msg) {
            node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            let a = node.error_answer(&h, &msg, &e);
            self.send(&a).await;
            return false;
        }
        if let Some(a) = self.route(&msg) {
            self.send(&a).await;
            return false;
        }
        let origin = msg.origin_host().unwrap_or_default().to_string();
        match node.dedup.begin(
            &origin,
            h.end_to_end,
            h.hop_by_hop,
            &self.tx,
            Instant::now(),
        ) {
            Seen::Replay(b) => {
                node.stats
                    .duplicates_replayed
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self.tx.send(b).await;
                return false;
            }
            Seen::Pending => {
                node.stats
                    .duplicates_replayed
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Seen::New => {}
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            node.stats.too_busy.fetch_add(1, Ordering::Relaxed);
            node.dedup.forget(&origin, h.end_to_end);
            let a = node.result_answer(&msg, ResultCode::TOO_BUSY, "too many requests in flight");
            self.send(&a).await;
            return false;
        };
        let Some(app) = node.app.clone() else {
            node.dedup.forget(&origin, h.end_to_end);
            let e = ProtocolError::ApplicationUnsupported(h.application);
            let a = node.error_answer(&h, &msg, &e);
            self.send(&a).await;
            return false;
        };
        let tx = self.tx.clone();
        let peer = Arc::clone(&self.peer);
        tokio::spawn(async move {
            let _permit = permit;
            let proxy_info: Vec<Avp> = msg.find_all(PROXY_INFO).cloned().collect();
            let mut answer = app.handle(Request { message: msg, peer }).await;
            answer.header.hop_by_hop = h.hop_by_hop;
            answer.header.end_to_end = h.end_to_end;
            answer.header.command = h.command;
            answer.header.application = h.application;
            answer.header.flags = answer
                .header
                .flags
                .with(tollgate_codec::Flags::REQUEST, false)
                .with(tollgate_codec::Flags::PROXIABLE, h.flags.is_proxiable());
            // §6.2: Proxy-Info is echoed in the same order.
            if !proxy_info.is_empty() && answer.find(PROXY_INFO).is_none() {
                answer.avps.extend(proxy_info);
            }
            let bytes = answer.to_bytes();
            let waiters = node.dedup.complete(&origin, h.end_to_end, bytes.clone());
            node.stats.answers_sent.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(bytes.clone()).await;
            for w in waiters {
                let _ = w.tx.send(readdress(&bytes, w.hop_by_hop)).await;
            }
        });
        false
    }

    /// Checks a request for an application against the dictionary and what we share with
    /// this peer (§6.1: 3007 when the application was not negotiated).
    fn check_request(&self, msg: &Message) -> Result<(), ProtocolError> {
        let h = msg.header;
        if !self.common.contains(&h.application) {
            return Err(ProtocolError::ApplicationUnsupported(h.application));
        }
        let unknown = self.node.local.unknown_avps.for_peer(&self.peer);
        let report = self
            .node
            .dict
            .validate_with(msg, &self.node.limits.codec, unknown)?;
        if let Some(first) = report.first_unknown {
            deviation::report(
                Deviation::UnknownVendorAvpAccepted,
                &self.peer,
                &format!(
                    "{} unknown AVP(s), the first code {} vendor {}",
                    report.unknown_accepted, first.code, first.vendor_id
                ),
            );
        }
        Ok(())
    }

    /// §6.1: requests for another realm (3003) or host (3002). Relaying is not offered.
    fn route(&self, msg: &Message) -> Option<Message> {
        let local = &self.node.local;
        if let Some(realm) = msg.find(DESTINATION_REALM).and_then(|a| a.utf8().ok()) {
            if !realm.eq_ignore_ascii_case(&local.origin_realm) {
                return Some(self.node.result_answer(
                    msg,
                    ResultCode::REALM_NOT_SERVED,
                    &format!("realm {realm} is not served here"),
                ));
            }
        }
        if let Some(host) = msg.find(DESTINATION_HOST).and_then(|a| a.utf8().ok()) {
            if !host.eq_ignore_ascii_case(&local.origin_host) {
                return Some(self.node.result_answer(
                    msg,
                    ResultCode::UNABLE_TO_DELIVER,
                    &format!("host {host} is not reachable from here"),
                ));
            }
        }
        None
    }

    /// Delivers an answer to whoever sent the request. Returns true when we should close.
    fn answer(&mut self, msg: Message) -> bool {
        let h = msg.header;
        if h.application == ApplicationId::COMMON && h.command == CommandCode::DISCONNECT_PEER {
            // §5.4: the DPR sender closes the transport on DPA.
            let ev = match self.role {
                Conn::Responder => PeerEvent::RRcvDpa,
                Conn::Initiator => PeerEvent::IRcvDpa,
            };
            self.node.peer_event(&self.peer, ev);
            return true;
        }
        // §6.2.1: an answer we did not ask for (or a DWA) is dropped.
        if let Some(w) = lock(&self.pending).remove(&h.hop_by_hop) {
            let _ = w.send(msg);
        }
        false
    }
}

impl Node {
    fn result_answer(&self, req: &Message, code: ResultCode, text: &str) -> Message {
        let mut a = Message::answer_to(req)
            .with(Avp::from_str(ORIGIN_HOST, &self.local.origin_host))
            .with(Avp::from_str(ORIGIN_REALM, &self.local.origin_realm))
            .with(Avp::from_u32(RESULT_CODE, code.0))
            .with(Avp::from_str(ERROR_MESSAGE, text));
        if code.is_protocol_error() {
            a.header.flags = a.header.flags.with(tollgate_codec::Flags::ERROR, true);
        }
        for p in req.find_all(PROXY_INFO) {
            a.push(p.clone());
        }
        a
    }
}

/// Writes queued frames, coalescing everything already queued into one write.
async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}
