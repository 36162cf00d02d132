//! Two (or more) peer-layer nodes on a virtual clock (`tokio::time::pause`): real `Node`s,
//! real drivers and state machines, over in-memory pipes instead of TCP, so every timer of
//! RFC 6733 §5.6 and RFC 3539 runs in virtual time and a minute of protocol takes
//! milliseconds. A [`Valve`] in a pipe turns a live peer silent and back.
//!
//! Covered: the election when both peers connect at once (§5.6.4), watchdog failover,
//! close, reopen and failback (RFC 3539), DPR while requests are in flight (§5.4), and
//! silent peers (no CER, no CEA, no DWA).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use futures_util::FutureExt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::broadcast;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Dictionary, Message, ResultCode};
use tollgate_peer::fsm::PeerState;
use tollgate_peer::{
    AnswerFuture, Application, BoxedTransport, Connector, LocalPeer, Node, PeerChange,
    PeerChangeKind, PeerLimits, Request,
};

const REALM: &str = "sim";

/// Answers every request 2001 after `delay`.
struct Echo {
    host: String,
    delay: Duration,
    calls: AtomicUsize,
}

impl Application for Echo {
    fn application_ids(&self) -> Vec<ApplicationId> {
        vec![ApplicationId::CREDIT_CONTROL]
    }
    fn handle(&self, req: Request) -> AnswerFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (delay, host) = (self.delay, self.host.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let m = &req.message;
            let mut a = Message::answer_to(m)
                .with(Avp::from_u32(RESULT_CODE, ResultCode::SUCCESS.0))
                .with(Avp::from_str(ORIGIN_HOST, &host))
                .with(Avp::from_str(ORIGIN_REALM, REALM));
            for k in [AUTH_APPLICATION_ID, CC_REQUEST_TYPE, CC_REQUEST_NUMBER] {
                if let Some(v) = m.find(k) {
                    a.push(v.clone());
                }
            }
            a
        })
    }
}

/// Logs to the test's output when RUST_LOG is set (e.g. `RUST_LOG=tollgate_peer=debug`).
fn trace() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn limits() -> PeerLimits {
    PeerLimits {
        cer_timeout: Duration::from_secs(5),
        cea_timeout: Duration::from_secs(5),
        dpa_timeout: Duration::from_secs(5),
        tw: Duration::from_secs(6),
        tc: Duration::from_secs(10),
        ..PeerLimits::default()
    }
}

fn node(host: &str, delay: Duration) -> (Arc<Node>, Arc<Echo>) {
    node_with(host, delay, limits())
}

fn node_with(host: &str, delay: Duration, limits: PeerLimits) -> (Arc<Node>, Arc<Echo>) {
    trace();
    let app = Arc::new(Echo {
        host: host.to_string(),
        delay,
        calls: AtomicUsize::new(0),
    });
    let node = Node::new(
        LocalPeer::new(host, REALM),
        limits,
        Arc::new(Dictionary::builtin().clone()),
        Some(Arc::clone(&app) as Arc<dyn Application>),
        &[],
    );
    (node, app)
}

/// A CCR (event, direct debit) from `from`, valid against the dictionary.
fn ccr(from: &str, session: &str) -> Message {
    Message::request(
        CommandCode::CREDIT_CONTROL,
        ApplicationId::CREDIT_CONTROL,
        true,
    )
    .with(Avp::from_str(SESSION_ID, session))
    .with(Avp::from_str(ORIGIN_HOST, from))
    .with(Avp::from_str(ORIGIN_REALM, REALM))
    .with(Avp::from_str(DESTINATION_REALM, REALM))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
    .with(Avp::from_enum(CC_REQUEST_TYPE, 4))
    .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
    .with(Avp::from_enum(REQUESTED_ACTION, 2))
}

/// A pipe end that can be made silent: while closed, what is written is lost and what
/// arrives is discarded, as on a path that black-holes packets (the connection stays up).
struct Valve {
    inner: DuplexStream,
    closed: Arc<AtomicBool>,
}

impl AsyncRead for Valve {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let before = buf.filled().len();
            let closed = self.closed.load(Ordering::SeqCst);
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if closed && buf.filled().len() > before => {
                    buf.set_filled(before);
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for Valve {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to `to` over a fresh in-memory pipe, the dialling end behind a [`Valve`]; every
/// valve made is kept in `valves`, and `attempts` counts the dials.
#[derive(Clone, Default)]
struct Dialer {
    valves: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    attempts: Arc<AtomicUsize>,
}

impl Dialer {
    fn to(&self, to: &Arc<Node>) -> Connector {
        let (to, me) = (Arc::clone(to), self.clone());
        Arc::new(move || {
            me.attempts.fetch_add(1, Ordering::SeqCst);
            let (near, far) = tokio::io::duplex(1 << 16);
            let closed = Arc::new(AtomicBool::new(false));
            me.valves.lock().unwrap().push(Arc::clone(&closed));
            to.accept(far, "pipe");
            async move {
                Ok(Box::new(Valve {
                    inner: near,
                    closed,
                }) as BoxedTransport)
            }
            .boxed()
        })
    }

    fn valve(&self, i: usize) -> Arc<AtomicBool> {
        Arc::clone(&self.valves.lock().unwrap()[i])
    }
}

/// The next change of `kind` for `host` (virtual time: a long wait costs nothing).
async fn next(
    rx: &mut broadcast::Receiver<PeerChange>,
    host: &str,
    kind: fn(&PeerChangeKind) -> bool,
) -> PeerChange {
    let wait = async {
        loop {
            let c = rx.recv().await.unwrap();
            if c.host == host && kind(&c.kind) {
                return c;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no such change for {host} within 600 virtual seconds (after {:?} of the test)",
                tokio::time::Instant::now()
            )
        })
}

fn up(k: &PeerChangeKind) -> bool {
    matches!(k, PeerChangeKind::Up { .. })
}

fn state_of(node: &Node, host: &str) -> Option<PeerState> {
    node.peer_states()
        .into_iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(host))
        .map(|(_, s)| s)
}

async fn ask(from: &Node, to: &str, session: &str) -> Result<Message, tollgate_peer::PeerError> {
    let m = ccr(&from.local.origin_host, session);
    from.request(Some(to), m, Duration::from_secs(30)).await
}

#[tokio::test(start_paused = true)]
async fn both_peers_connect_at_once_and_the_election_leaves_one_connection() {
    // "b.sim" sorts above "a.sim": b wins, keeps the connection a opened (its responder)
    // and closes its own; a ends I-Open, b R-Open.
    let (a, _) = node("a.sim", Duration::ZERO);
    let (b, _) = node("b.sim", Duration::ZERO);
    let (mut a_changes, mut b_changes) = (a.subscribe(), b.subscribe());
    let (a_dials, b_dials) = (Dialer::default(), Dialer::default());
    a.keep_connected("b", Some("b.sim"), a_dials.to(&b));
    b.keep_connected("a", Some("a.sim"), b_dials.to(&a));
    next(&mut a_changes, "b.sim", up).await;
    next(&mut b_changes, "a.sim", up).await;
    // Both dialled, so both accepted a connection: a race, settled by the election.
    assert_eq!(a_dials.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(b_dials.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats.connections_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats.connections_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&a, "b.sim"), Some(PeerState::IOpen));
    assert_eq!(state_of(&b, "a.sim"), Some(PeerState::ROpen));

    // A minute of watchdog traffic later, still one connection, and it carries requests
    // both ways: a client's CCR, and a server-initiated request from b.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(state_of(&a, "b.sim"), Some(PeerState::IOpen));
    assert_eq!(state_of(&b, "a.sim"), Some(PeerState::ROpen));
    let r = ask(&a, "b.sim", "a.sim;1;1").await.unwrap();
    assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));
    let r = ask(&b, "a.sim", "b.sim;1;1").await.unwrap();
    assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(a_dials.attempts.load(Ordering::SeqCst), 1, "a reconnected");
    a.shutdown(Duration::from_secs(30)).await;
    b.shutdown(Duration::from_secs(30)).await;
}

/// a keeps b connected and is open; b's Tw is 30 s, so a (Tw 6 s) is the one that notices
/// a silence first.
async fn a_watches_b() -> (
    Arc<Node>,
    Arc<Node>,
    broadcast::Receiver<PeerChange>,
    Dialer,
) {
    let (a, _) = node("a.sim", Duration::ZERO);
    let slow_watchdog = PeerLimits {
        tw: Duration::from_secs(30),
        ..limits()
    };
    let (b, _) = node_with("b.sim", Duration::ZERO, slow_watchdog);
    let mut changes = a.subscribe();
    let dials = Dialer::default();
    a.keep_connected("b", Some("b.sim"), dials.to(&b));
    next(&mut changes, "b.sim", up).await;
    (a, b, changes, dials)
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_suspected_closed_reopened_and_failed_back() {
    let (a, b, mut changes, dials) = a_watches_b().await;
    let r = ask(&a, "b.sim", "a.sim;2;1").await.unwrap();
    assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));

    // The path goes silent: no DWA for a's DWR → suspect (Failover), then the connection
    // is closed (CloseConnection) …
    dials.valve(0).store(true, Ordering::SeqCst);
    let t0 = tokio::time::Instant::now();
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Suspect).await;
    let suspect_after = t0.elapsed();
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Down).await;
    let down_after = t0.elapsed();
    // RFC 3539: DWR after Tw of silence, suspect Tw later, closed after a third Tw (each
    // Tw = 6 s ± 2 s of jitter).
    assert!(suspect_after >= Duration::from_secs(8), "{suspect_after:?}");
    assert!(
        suspect_after <= Duration::from_secs(16),
        "{suspect_after:?}"
    );
    assert!(down_after > suspect_after && down_after <= Duration::from_secs(24));
    let r = ask(&a, "b.sim", "a.sim;2;2").await;
    assert!(r.is_err(), "a request went to a closed peer: {r:?}");

    // … a new connection opens (REOPEN), and after three DWAs the peer is back.
    next(&mut changes, "b.sim", up).await;
    assert_eq!(dials.attempts.load(Ordering::SeqCst), 2);
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Back).await;
    let r = ask(&a, "b.sim", "a.sim;2;3").await.unwrap();
    assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));
    a.shutdown(Duration::from_secs(30)).await;
    b.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn a_suspect_peer_that_speaks_again_fails_back_without_a_new_connection() {
    let (a, b, mut changes, dials) = a_watches_b().await;
    dials.valve(0).store(true, Ordering::SeqCst);
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Suspect).await;
    // The path heals; b speaks first (a request of its own), which is proof of life.
    dials.valve(0).store(false, Ordering::SeqCst);
    let r = ask(&b, "a.sim", "b.sim;3;1").await.unwrap();
    assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Back).await;
    assert_eq!(dials.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&a, "b.sim"), Some(PeerState::IOpen));
    a.shutdown(Duration::from_secs(30)).await;
    b.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn dpr_while_requests_are_in_flight_loses_no_answer() {
    // b answers after 3 s; a sends 20 requests, then b shuts down (DPR) with all 20 in
    // its application. Every request is still answered, then the connection closes.
    let (a, _) = node("a.sim", Duration::ZERO);
    let (b, b_app) = node("b.sim", Duration::from_secs(3));
    let mut changes = a.subscribe();
    let dials = Dialer::default();
    a.keep_connected("b", Some("b.sim"), dials.to(&b));
    next(&mut changes, "b.sim", up).await;
    let a2 = Arc::clone(&a);
    let asks: Vec<_> = (0..20)
        .map(|i| {
            let a = Arc::clone(&a2);
            tokio::spawn(async move { ask(&a, "b.sim", &format!("a.sim;4;{i}")).await })
        })
        .collect();
    while b_app.calls.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = tokio::time::Instant::now();
    let b2 = Arc::clone(&b);
    let stopping = tokio::spawn(async move { b2.shutdown(Duration::from_secs(30)).await });
    next(&mut changes, "b.sim", |k| *k == PeerChangeKind::Down).await;
    for r in asks {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.result_code(), Some(ResultCode::SUCCESS));
    }
    stopping.await.unwrap();
    // b waited for its answers (3 s), not for its grace period.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The DPR came from b: a does not offer b for requests any more.
    let r = ask(&a, "b.sim", "a.sim;4;late").await;
    assert!(r.is_err(), "{r:?}");
    a.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn silent_peers_are_timed_out_at_every_stage() {
    let (a, _) = node("a.sim", Duration::ZERO);

    // An accepted connection that never sends a CER is closed after cer_timeout.
    let (mut near, far) = tokio::io::duplex(1 << 16);
    a.accept(far, "mute");
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(60), near.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the mute connection got bytes");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );

    // A peer that accepts but never answers our CER: Wait-I-CEA times out (Error), and
    // the node tries again every Tc, never reporting the peer open.
    let mut changes = a.subscribe();
    let attempts = Arc::new(AtomicUsize::new(0));
    let kept: Arc<Mutex<Vec<DuplexStream>>> = Arc::default();
    let (n2, k2) = (Arc::clone(&attempts), Arc::clone(&kept));
    let connector: Connector = Arc::new(move || {
        n2.fetch_add(1, Ordering::SeqCst);
        let (near, far) = tokio::io::duplex(1 << 16);
        k2.lock().unwrap().push(far);
        async move { Ok(Box::new(near) as BoxedTransport) }.boxed()
    });
    a.keep_connected("deaf", Some("deaf.sim"), connector);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state_of(&a, "deaf.sim"), Some(PeerState::WaitICea));
    // cea_timeout 5 s, then Tc 10 s between attempts: attempts at 0, 15, 30, 45 s.
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    assert!(
        changes.try_recv().is_err(),
        "a peer that never answered was reported"
    );
    a.shutdown(Duration::from_secs(30)).await;
    assert_eq!(a.peer_states(), vec![]);
}
