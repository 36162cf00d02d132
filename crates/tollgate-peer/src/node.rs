//! A Diameter node: what the rest of Tollgate sees of the peer layer.
//!
//! The work is split by job:
//! * `listener.rs` accepts connections (with the connection limit) and reads the CER
//!   that names the peer;
//! * `table.rs` is the peer table: each peer's state machine, its routes, the events
//!   applications subscribe to, and where identifiers come from;
//! * `driver/` is the task of one peer, which drives its state machine and the
//!   watchdog over its connections (`link.rs`);
//! * `dispatch.rs` is what `Process` means for requests and answers.
//!
//! This file holds the node itself and its public operations: serve, connect (once, or
//! keep connected), send a request to a peer and wait for its answer, peer events, shutdown.

use crate::app::Application;
use crate::config::{LocalPeer, PeerLimits};
use crate::dedup::DuplicateCache;
use crate::driver::{Connector, Control, Inbound, PeerDriver, Target};
use crate::fsm::{FsmTimers, PeerState};
use crate::link::{BoxedTransport, Link, LinkSetup, Transport};
use crate::table::{host_key, lock, target_key, Ids, OpenPeer, PeerChange, PeerEntry, PeerTable};
use crate::wire::WireLog;
use futures_util::FutureExt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_codec::{ApplicationId, Dictionary, Message};
use tracing::warn;

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

/// The time the state machines are given: tokio's clock, so a test that pauses it
/// (`tokio::time::pause`) runs every timer of the peer layer on virtual time.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

pub struct Node {
    pub local: LocalPeer,
    pub limits: PeerLimits,
    pub(crate) dict: Arc<Dictionary>,
    pub(crate) app: Option<Arc<dyn Application>>,
    pub(crate) app_ids: Vec<ApplicationId>,
    pub(crate) dedup: DuplicateCache,
    pub(crate) table: PeerTable,
    pub(crate) connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) ids: Ids,
    wire: OnceLock<Arc<WireLog>>,
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
            table: PeerTable::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ids: Ids::new(),
            wire: OnceLock::new(),
            stats: NodeStats::default(),
        })
    }

    /// Records every frame this node writes from now on into `log` (set once).
    pub fn record_wire(&self, log: Arc<WireLog>) {
        let _ = self.wire.set(log);
    }

    pub(crate) fn fsm_timers(&self) -> FsmTimers {
        FsmTimers {
            connect_timeout: self.limits.cea_timeout,
            cea_timeout: self.limits.cea_timeout,
            dpa_timeout: self.limits.dpa_timeout,
        }
    }

    pub(crate) fn new_link(
        &self,
        stream: BoxedTransport,
        label: String,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Link {
        Link::new(
            stream,
            LinkSetup {
                id: self.ids.connection(),
                label,
                max_message_len: self.limits.codec.max_message_len,
                send_queue: self.limits.send_queue,
                max_in_flight: self.limits.max_in_flight_per_peer,
                wire: self.wire.get(),
                permit,
            },
        )
    }

    /// Hands an accepted connection to its peer's driver, starting one if the peer has none.
    pub(crate) fn deliver_inbound(self: &Arc<Self>, mut inbound: Inbound) {
        let key = host_key(&inbound.caps.origin_host);
        loop {
            let mut started = None;
            let entry = self.table.get_or_insert_with(&key, || {
                let host = inbound.caps.origin_host.clone();
                let (entry, rx) = PeerEntry::new(&self.local.origin_host, self.fsm_timers(), &host);
                started = Some((rx, host));
                entry
            });
            if let Some((rx, host)) = started {
                let driver = PeerDriver::new(
                    Arc::clone(self),
                    Arc::clone(&entry),
                    rx,
                    key.clone(),
                    &host,
                    None,
                );
                self.tracker.spawn(driver.run());
            }
            match entry.control.send(Control::Inbound(Box::new(inbound))) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(c)) => {
                    // That driver has just left: file the peer anew.
                    self.table.remove(&key, &entry);
                    let Control::Inbound(back) = c else { return };
                    inbound = *back;
                }
            }
        }
    }

    /// The Origin-Realm a peer announced in its CER or CEA (the Destination-Realm to use
    /// for requests to it).
    pub fn peer_realm(&self, host: &str) -> Option<String> {
        self.table
            .get(&host_key(host))
            .and_then(|e| e.shared().realm.clone())
    }

    /// Peers and the state of their state machine.
    pub fn peer_states(&self) -> Vec<(String, PeerState)> {
        self.table
            .entries()
            .iter()
            .map(|e| {
                let s = e.shared();
                (s.host.clone(), s.fsm.state())
            })
            .collect()
    }

    /// Peers open now (I-Open or R-Open), by Origin-Host.
    pub fn open_peers(&self) -> Vec<OpenPeer> {
        let mut open: Vec<OpenPeer> = self
            .table
            .entries()
            .iter()
            .filter_map(|e| {
                let s = e.shared();
                s.is_open().then(|| OpenPeer {
                    host: s.host.clone(),
                    target: s.target.clone(),
                    suspect: s.suspect,
                })
            })
            .collect();
        open.sort_by(|a, b| a.host.cmp(&b.host));
        open
    }

    /// Peer-up, peer-down, suspect and back events from now on. A receiver that falls more
    /// than 1024 events behind is told it lagged; [`Node::open_peers`] then says where
    /// things stand.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerChange> {
        self.table.changes.subscribe()
    }

    /// The token cancelled by [`Node::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, sends DPR on every open connection, lets requests in flight finish,
    /// and returns when every connection has closed (or `grace` has passed).
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

    /// Keeps a TCP connection open to `addr`: connect, CER/CEA, and after a failure or a
    /// close, again every Tc (RFC 6733 §2.1) until shutdown. The peer is known by its
    /// address until its CEA names it.
    pub fn connect(self: &Arc<Self>, addr: SocketAddr) {
        self.connect_to(addr, None);
    }

    /// [`Node::connect`], with the Origin-Host the peer must answer with when it is known
    /// (see [`Node::keep_connected`]).
    pub fn connect_to(self: &Arc<Self>, addr: SocketAddr, host: Option<&str>) {
        let connector: Connector = Arc::new(move || {
            async move {
                let stream = TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream) as BoxedTransport)
            }
            .boxed()
        });
        self.keep_connected(&addr.to_string(), host, connector);
    }

    /// Keeps a connection open to the peer `connector` reaches, named `label` in logs and
    /// events. With `host`, the peer is filed under that Origin-Host from the start, so
    /// the election (§5.6.4) settles a race with the peer connecting to us, and a CEA from
    /// another host is refused.
    pub fn keep_connected(self: &Arc<Self>, label: &str, host: Option<&str>, connector: Connector) {
        let target = Target {
            label: label.to_string(),
            host: host.map(str::to_string),
            connector,
            keep: true,
            opened: None,
        };
        self.start_target(target);
    }

    fn start_target(self: &Arc<Self>, target: Target) {
        let key = match &target.host {
            Some(h) => host_key(h),
            None => target_key(&target.label),
        };
        let peer = target.host.clone().unwrap_or_else(|| target.label.clone());
        let (entry, rx) = PeerEntry::new(&self.local.origin_host, self.fsm_timers(), &peer);
        if !self.table.claim(&key, &entry) {
            warn!(%key, "this peer already has a connection or a target; not adding another");
            return;
        }
        let _ = entry.control.send(Control::Start);
        let driver = PeerDriver::new(Arc::clone(self), entry, rx, key, &peer, Some(target));
        self.tracker.spawn(driver.run());
    }

    /// Opens one outbound connection over `stream` now and returns the peer's Origin-Host
    /// once it is I-Open; the connection then runs in the background until shutdown or
    /// failure, and is not reopened.
    pub async fn connect_once<S: Transport>(
        self: &Arc<Self>,
        stream: S,
    ) -> Result<String, PeerError> {
        let stream: Mutex<Option<BoxedTransport>> = Mutex::new(Some(Box::new(stream)));
        let connector: Connector = Arc::new(move || {
            let s = lock(&stream).take();
            async move {
                s.ok_or_else(|| std::io::Error::other("a one-off connection cannot be reopened"))
            }
            .boxed()
        });
        let (tx, rx) = oneshot::channel();
        let label = format!("connection {}", self.ids.connection());
        self.start_target(Target {
            label,
            host: None,
            connector,
            keep: false,
            opened: Some(tx),
        });
        rx.await.map_err(|_| PeerError::Closed)?
    }

    /// A fresh End-to-End identifier for a request the application builds itself.
    pub fn next_end_to_end(&self) -> u32 {
        self.ids.end_to_end()
    }

    /// Sends a request to an open peer (any open, unsuspected one when `peer` is None) and
    /// waits for its answer. Hop-by-Hop is assigned here; an End-to-End id is assigned
    /// unless already set, so a retransmission (T flag) keeps the original's.
    pub async fn request(
        &self,
        peer: Option<&str>,
        mut msg: Message,
        timeout: Duration,
    ) -> Result<Message, PeerError> {
        msg.header.hop_by_hop = self.ids.hop_by_hop();
        if msg.header.end_to_end == 0 {
            msg.header.end_to_end = self.next_end_to_end();
        }
        let now = now();
        let route = match peer {
            Some(h) => self
                .table
                .get(&host_key(h))
                .and_then(|e| e.shared().route_for_request(now)),
            None => self.table.entries().iter().find_map(|e| {
                let mut s = e.shared();
                (!s.suspect).then(|| s.route_for_request(now)).flatten()
            }),
        };
        let Some(route) = route else {
            return Err(PeerError::NoPeer(peer.unwrap_or("any").to_string()));
        };
        let (atx, arx) = oneshot::channel();
        let hbh = msg.header.hop_by_hop;
        lock(&route.pending).insert(hbh, atx);
        if route.tx.send(msg.to_bytes()).await.is_err() {
            lock(&route.pending).remove(&hbh);
            return Err(PeerError::Closed);
        }
        match tokio::time::timeout(timeout, arx).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(PeerError::Closed),
            Err(_) => {
                lock(&route.pending).remove(&hbh);
                Err(PeerError::Timeout(timeout))
            }
        }
    }
}
