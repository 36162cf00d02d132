//! Duplicate detection (RFC 6733 §6.1.4): a bounded cache keyed by the request's Origin-Host
//! and End-to-End Identifier. A retransmission of an answered request gets the same answer
//! again (with its own Hop-by-Hop id) without reaching the application twice; one that
//! arrives while the original is still being answered waits for that answer.

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Key = (String, u32);

/// Someone waiting for the answer of a request already in progress.
#[derive(Debug)]
pub struct Waiter {
    pub hop_by_hop: u32,
    pub tx: mpsc::Sender<Bytes>,
}

enum Entry {
    InFlight(Vec<Waiter>),
    Answered(Bytes),
}

/// What to do with an incoming request.
#[derive(Debug)]
pub enum Seen {
    /// First time: hand it to the application, then call [`DuplicateCache::complete`].
    New,
    /// Answered before: send this (already re-addressed) answer.
    Replay(Bytes),
    /// Being answered now: the answer will be sent to this connection too.
    Pending,
}

pub struct DuplicateCache {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

struct Inner {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Key, Instant)>,
}

/// The same answer bytes with another Hop-by-Hop Identifier (header octets 12–15).
pub fn readdress(answer: &Bytes, hop_by_hop: u32) -> Bytes {
    if answer.len() < 20 {
        return answer.clone();
    }
    let mut b = BytesMut::from(answer.as_ref());
    b[12..16].copy_from_slice(&hop_by_hop.to_be_bytes());
    b.freeze()
}

impl DuplicateCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        DuplicateCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another task panicked mid-update of a cache; the map
        // itself is still consistent enough to serve (worst case: a missed duplicate).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request. `tx` and `hop_by_hop` say where a pending duplicate's answer goes.
    pub fn begin(
        &self,
        origin_host: &str,
        end_to_end: u32,
        hop_by_hop: u32,
        tx: &mpsc::Sender<Bytes>,
        now: Instant,
    ) -> Seen {
        let key = (origin_host.to_ascii_lowercase(), end_to_end);
        let mut inner = self.lock();
        inner.evict(now, self.ttl, self.capacity);
        match inner.map.get_mut(&key) {
            Some(Entry::Answered(a)) => Seen::Replay(readdress(a, hop_by_hop)),
            Some(Entry::InFlight(waiters)) => {
                waiters.push(Waiter {
                    hop_by_hop,
                    tx: tx.clone(),
                });
                Seen::Pending
            }
            None => {
                inner.map.insert(key.clone(), Entry::InFlight(Vec::new()));
                inner.order.push_back((key, now));
                Seen::New
            }
        }
    }

    /// Stores the answer and returns those who waited for it.
    pub fn complete(&self, origin_host: &str, end_to_end: u32, answer: Bytes) -> Vec<Waiter> {
        let key = (origin_host.to_ascii_lowercase(), end_to_end);
        let mut inner = self.lock();
        match inner.map.get_mut(&key) {
            Some(e) => match std::mem::replace(e, Entry::Answered(answer)) {
                Entry::InFlight(w) => w,
                Entry::Answered(_) => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// Forgets a request that was refused before reaching the application (e.g. 3004), so a
    /// retransmission gets another chance.
    pub fn forget(&self, origin_host: &str, end_to_end: u32) {
        let key = (origin_host.to_ascii_lowercase(), end_to_end);
        self.lock().map.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn evict(&mut self, now: Instant, ttl: Duration, capacity: usize) {
        while let Some((key, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > ttl;
            if !expired && self.map.len() < capacity {
                break;
            }
            // Entries still in flight are kept: their waiters need the answer.
            if matches!(self.map.get(key), Some(Entry::InFlight(_))) && !expired {
                break;
            }
            if let Some((key, _)) = self.order.pop_front() {
                if matches!(self.map.get(&key), Some(Entry::Answered(_))) {
                    self.map.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(hbh: u32) -> Bytes {
        let mut v = vec![1, 0, 0, 20, 0, 0, 1, 16, 0, 0, 0, 4];
        v.extend_from_slice(&hbh.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 9]);
        Bytes::from(v)
    }

    #[test]
    fn replays_with_the_new_hop_by_hop() {
        let c = DuplicateCache::new(10, Duration::from_secs(60));
        let (tx, _rx) = mpsc::channel(1);
        let t = Instant::now();
        assert!(matches!(c.begin("Client", 9, 1, &tx, t), Seen::New));
        assert!(matches!(c.begin("client", 9, 2, &tx, t), Seen::Pending));
        let waiters = c.complete("client", 9, answer(1));
        assert_eq!(waiters.len(), 1);
        assert_eq!(waiters[0].hop_by_hop, 2);
        match c.begin("CLIENT", 9, 3, &tx, t) {
            Seen::Replay(b) => assert_eq!(&b[12..16], &3u32.to_be_bytes()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.begin("other", 9, 4, &tx, t), Seen::New));
    }

    #[test]
    fn bounded_by_capacity_and_age() {
        let c = DuplicateCache::new(3, Duration::from_secs(60));
        let (tx, _rx) = mpsc::channel(1);
        let t = Instant::now();
        for e2e in 0..10 {
            assert!(matches!(c.begin("h", e2e, 0, &tx, t), Seen::New));
            c.complete("h", e2e, answer(0));
        }
        assert!(c.len() <= 3);
        let later = t + Duration::from_secs(61);
        assert!(matches!(c.begin("h", 100, 0, &tx, later), Seen::New));
        assert_eq!(c.len(), 1);
    }
}
