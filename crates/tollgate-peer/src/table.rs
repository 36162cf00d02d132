//! The peer table: who we know, the state machine of each, the open connection requests to
//! a peer are written to, the answers we are waiting for, and where Hop-by-Hop and
//! End-to-End identifiers come from.
//!
//! Each peer's [`PeerFsm`] lives here, behind the peer's own lock, so that a task sending a
//! request can ask the machine where it goes (`Send-Message` → `Snd-Message(I|R)`, RFC 6733
//! §5.6.1) without a hop through the peer's driver. Every other event is delivered by the
//! driver ([`crate::driver`]), the only task that changes a machine's state.

use crate::fsm::{Conn, FsmTimers, PeerAction, PeerEvent, PeerFsm, PeerState};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot};
use tollgate_codec::Message;

/// Answers we wait for on one connection, by Hop-by-Hop Identifier (§6.2.1).
pub(crate) type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Message>>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where requests to one of the peer's connections are written.
#[derive(Clone)]
pub(crate) struct Route {
    pub tx: mpsc::Sender<Bytes>,
    pub pending: Pending,
}

/// A change of a peer's availability, for applications ([`crate::Node::subscribe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerChange {
    /// The peer's Origin-Host.
    pub host: String,
    /// The keep-connected target (its label, e.g. `10.0.0.1:3868`) this peer was reached
    /// through, when we opened the connection.
    pub target: Option<String>,
    pub kind: PeerChangeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChangeKind {
    /// The capabilities exchange completed: the peer is I-Open or R-Open.
    Up { realm: String },
    /// The watchdog's Failover() (RFC 3539): a DWR went unanswered for Tw.
    Suspect,
    /// The watchdog's Failback(): the peer answers again.
    Back,
    /// The connection closed: the peer is no longer open.
    Down,
}

/// A peer that is open now ([`crate::Node::open_peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPeer {
    pub host: String,
    /// As in [`PeerChange::target`].
    pub target: Option<String>,
    /// The watchdog suspects it (a DWR went unanswered for Tw).
    pub suspect: bool,
}

/// What the peer's state machine and its routes look like to everyone but the driver.
pub(crate) struct PeerShared {
    pub fsm: PeerFsm,
    /// Origin-Host as the peer spells it (or the target's label until a CEA names it).
    pub host: String,
    /// Origin-Realm from the peer's CER or CEA.
    pub realm: Option<String>,
    pub initiator: Option<Route>,
    pub responder: Option<Route>,
    /// The watchdog suspects the peer (between Failover and Failback).
    pub suspect: bool,
    /// The label of the keep-connected target that reaches the peer, if any.
    pub target: Option<String>,
}

impl PeerShared {
    /// `Send-Message`: the machine names the connection, if the peer is open.
    pub fn route_for_request(&mut self, now: Instant) -> Option<Route> {
        let actions = self.fsm.handle(PeerEvent::SendMessage, now);
        match actions.first() {
            Some(PeerAction::SndMessage(Conn::Initiator)) => self.initiator.clone(),
            Some(PeerAction::SndMessage(Conn::Responder)) => self.responder.clone(),
            _ => None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.fsm.state(), PeerState::IOpen | PeerState::ROpen)
    }
}

/// One peer: its shared state and the driver's mailbox.
pub(crate) struct PeerEntry {
    pub shared: Mutex<PeerShared>,
    pub control: mpsc::UnboundedSender<crate::driver::Control>,
}

impl PeerEntry {
    pub fn new(
        local_host: &str,
        timers: FsmTimers,
        host: &str,
    ) -> (
        Arc<PeerEntry>,
        mpsc::UnboundedReceiver<crate::driver::Control>,
    ) {
        let (control, rx) = mpsc::unbounded_channel();
        let entry = PeerEntry {
            shared: Mutex::new(PeerShared {
                fsm: PeerFsm::new(local_host, timers),
                host: host.to_string(),
                realm: None,
                initiator: None,
                responder: None,
                suspect: false,
                target: None,
            }),
            control,
        };
        (Arc::new(entry), rx)
    }

    pub fn shared(&self) -> MutexGuard<'_, PeerShared> {
        lock(&self.shared)
    }
}

/// The key a peer is filed under: its Origin-Host in lower case (DiameterIdentity compares
/// case-insensitively, RFC 6733 §4.3.1), or `@` and the target's label for an outbound peer
/// whose Origin-Host no CEA has told us yet (`@` cannot occur in a DiameterIdentity).
pub(crate) fn host_key(host: &str) -> String {
    host.to_ascii_lowercase()
}

pub(crate) fn target_key(label: &str) -> String {
    format!("@{label}")
}

/// Every peer we know, with the events applications subscribe to.
pub(crate) struct PeerTable {
    peers: Mutex<HashMap<String, Arc<PeerEntry>>>,
    pub changes: broadcast::Sender<PeerChange>,
}

impl PeerTable {
    pub fn new() -> Self {
        PeerTable {
            peers: Mutex::new(HashMap::new()),
            changes: broadcast::channel(1024).0,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<PeerEntry>> {
        lock(&self.peers).get(key).cloned()
    }

    /// The entry under `key`, or a new one made by `make` (whose driver the caller starts).
    pub fn get_or_insert_with(
        &self,
        key: &str,
        make: impl FnOnce() -> Arc<PeerEntry>,
    ) -> Arc<PeerEntry> {
        Arc::clone(
            lock(&self.peers)
                .entry(key.to_string())
                .or_insert_with(make),
        )
    }

    /// Files `entry` under `key` unless another peer holds it; true when it is filed there.
    pub fn claim(&self, key: &str, entry: &Arc<PeerEntry>) -> bool {
        let mut peers = lock(&self.peers);
        match peers.get(key) {
            Some(e) => Arc::ptr_eq(e, entry),
            None => {
                peers.insert(key.to_string(), Arc::clone(entry));
                true
            }
        }
    }

    /// Removes `key` if it still names `entry`.
    pub fn remove(&self, key: &str, entry: &Arc<PeerEntry>) {
        let mut peers = lock(&self.peers);
        if peers.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            peers.remove(key);
        }
    }

    pub fn entries(&self) -> Vec<Arc<PeerEntry>> {
        lock(&self.peers).values().cloned().collect()
    }

    pub fn notify(&self, change: PeerChange) {
        // No subscriber is fine: nobody is listening.
        let _ = self.changes.send(change);
    }
}

/// Where hop-by-hop and end-to-end identifiers come from (§3: end-to-end ids stay unique
/// across reboots for 4 minutes: high 12 bits from the boot time, low 20 from a counter).
pub(crate) struct Ids {
    hop_by_hop: AtomicU32,
    end_to_end: AtomicU32,
    connection: AtomicU64,
}

impl Ids {
    pub fn new() -> Self {
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

    pub fn hop_by_hop(&self) -> u32 {
        self.hop_by_hop.fetch_add(1, Ordering::Relaxed)
    }

    pub fn end_to_end(&self) -> u32 {
        self.end_to_end.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connection(&self) -> u64 {
        self.connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives a request we originate fresh identifiers.
    pub fn assign(&self, m: &mut Message) {
        m.header.hop_by_hop = self.hop_by_hop();
        m.header.end_to_end = self.end_to_end();
    }
}

/// A random number from the std hasher's per-process keys (no rand dependency needed for ids).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u32
}
