//! The CH-2 client's failure handling (RFC 4006 §5.5, §5.7; docs/protocol.md, "Client failure
//! handling") over real TCP against real OCS nodes (the credit-control application on a real
//! ledger) behind proxies that can lose answers: the request is executed and committed, but the CCA
//! never arrives. That is the case that loses or invents money when a client gets it wrong.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_cc::ch2::client::{CCFH_CONTINUE, CCFH_RETRY_AND_TERMINATE, CCFH_TERMINATE};
use tollgate_cc::ch2::*;
use tollgate_cc::{CcConfig, CreditControl};
use tollgate_codec::codes::*;
use tollgate_codec::{CommandCode, Dictionary, Message};
use tollgate_ledger::{LedgerConfig, SqlLedger};
use tollgate_ocs::{Ledger, SystemClock};
use tollgate_peer::{Application, LocalPeer, Node, PeerLimits};

/// A TCP proxy in front of an OCS node that, while `lose` is set, drops every CCA the OCS
/// sends back: the request was executed and committed, the answer is lost on the way.
async fn lossy_proxy(
    ocs: std::net::SocketAddr,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(ocs).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            let (lose, lost) = (lose.clone(), lost.clone());
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                loop {
                    while let Ok(Some(n)) = tollgate_codec::check_frame(&buf, 1 << 20) {
                        let frame = buf.split_to(n);
                        let h = tollgate_codec::Header::read(&frame).unwrap();
                        let is_cca =
                            !h.flags.is_request() && h.command == CommandCode::CREDIT_CONTROL;
                        if is_cca && lose.load(Ordering::SeqCst) {
                            lost.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        if cw.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                    match sr.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    addr
}

struct Ocs {
    node: Arc<Node>,
    addr: std::net::SocketAddr,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
}

impl Ocs {
    /// Waits (bounded) until `n` answers have been computed, committed and lost.
    async fn wait_lost(&self, n: usize) {
        for _ in 0..500 {
            if self.lost.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the OCS never computed the answer it was to lose");
    }
}

/// An OCS node named `host` on the shared ledger.
async fn ocs(store: &Store, host: &str, failover: bool) -> Ocs {
    let clock = Arc::new(SystemClock);
    let ledger = SqlLedger::connect(&store.url, LedgerConfig::default(), clock.clone())
        .await
        .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    let cfg = CcConfig {
        origin_host: host.into(),
        origin_realm: "test".into(),
        cc_session_failover: failover.then_some(1),
        credit_control_failure_handling: failover.then_some(CCFH_CONTINUE),
        ..CcConfig::default()
    };
    let lose = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicUsize::new(0));
    let app: Arc<dyn Application> = Arc::new(CreditControl::new(cfg, ledger, clock));
    let node = Node::new(
        LocalPeer::new(host, "test"),
        PeerLimits::default(),
        Arc::new(Dictionary::builtin().clone()),
        Some(app),
        &[],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct = listener.local_addr().unwrap();
    let n = node.clone();
    tokio::spawn(async move { n.serve_tcp(listener).await });
    let addr = lossy_proxy(direct, lose.clone(), lost.clone()).await;
    Ocs {
        node,
        addr,
        lose,
        lost,
    }
}

async fn client(servers: &[&Ocs], ccfh: i32) -> Arc<Ch2Client> {
    let mut cfg = Ch2ClientConfig::new(
        Ch2Profile::new("im.test", "test", "test"),
        servers.iter().map(|s| s.addr).collect(),
    );
    cfg.tx = Duration::from_millis(500);
    cfg.credit_control_failure_handling = ccfh;
    cfg.record_wire = true;
    let c = Ch2Client::start(cfg).unwrap();
    // Both connections open before the test starts.
    for _ in 0..200 {
        let open = servers
            .iter()
            .filter(|s| {
                s.node
                    .peer_states()
                    .iter()
                    .any(|(h, st)| h == "im.test" && format!("{st:?}") == "ROpen")
            })
            .count();
        if open == servers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.wait_open(Duration::from_secs(5)).await);
    c
}

fn alice() -> tollgate_ocs::SubscriptionId {
    "sip:alice@example.com".parse().unwrap()
}

fn ccrs(c: &Ch2Client) -> Vec<Message> {
    c.wire()
        .iter()
        .map(|f| Message::decode(f).unwrap())
        .filter(|m| m.is_request() && m.header.command == CommandCode::CREDIT_CONTROL)
        .collect()
}

async fn entries_of(store: &Store, kind: &str) -> usize {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM v_entries WHERE kind = $1")
        .bind(kind)
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    c.close().await.ok();
    n as usize
}

/// CCFH TERMINATE: Tx expires, the service ends, no failover (RFC 4006 §5.5).
#[tokio::test]
async fn tx_expiry_with_terminate_ends_the_service() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let a = ocs(&store, "ocs-a.test", false).await;
    let b = ocs(&store, "ocs-b.test", false).await;
    let c = client(&[&a, &b], CCFH_TERMINATE).await;
    a.lose.store(true, Ordering::SeqCst);
    let r = c
        .session(&SessionRequest::start("s1", alice(), Ch2Units::Seconds(60)))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Terminate);
    assert!(r.failure.as_deref().unwrap().contains("Tx"), "{r:?}");
    // Sent once, to the preferred server only.
    assert_eq!(ccrs(&c).len(), 1);
    c.close().await;
    store.drop_store().await;
}

/// CCFH CONTINUE on a first request: the CCR-I goes again, T-flagged with the same
/// End-to-End id, to the second server; the first server had already reserved, and that
/// reservation is the same one (idempotent on Session-Id + CC-Request-Number), so one
/// reservation exists, and the session then runs pinned to the server that answered.
#[tokio::test]
async fn tx_expiry_with_continue_fails_over_and_charges_once() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let a = ocs(&store, "ocs-a.test", false).await;
    let b = ocs(&store, "ocs-b.test", false).await;
    let c = client(&[&a, &b], CCFH_CONTINUE).await;
    a.lose.store(true, Ordering::SeqCst);
    let r = c
        .session(&SessionRequest::start("s1", alice(), Ch2Units::Seconds(60)))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Granted, "{r:?}");
    assert_eq!(r.answered_by.as_deref(), Some("ocs-b.test"));
    let sent = ccrs(&c);
    assert_eq!(sent.len(), 2);
    assert!(!sent[0].header.flags.is_retransmitted());
    assert!(sent[1].header.flags.is_retransmitted());
    assert_eq!(sent[0].header.end_to_end, sent[1].header.end_to_end);
    assert_eq!(sent[0].session_id(), sent[1].session_id());
    a.wait_lost(1).await;
    assert_eq!(store.account("alice")["reserved_minor"].as_i64(), Some(60));
    assert_eq!(entries_of(&store, "pending").await, 1);
    let r = c
        .session(&SessionRequest::stop(
            "s1",
            Ch2Units::Seconds(42),
            TerminationCause::Logout,
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Granted);
    let t = ccrs(&c).pop().unwrap();
    assert_eq!(
        t.find(DESTINATION_HOST).unwrap().utf8().unwrap(),
        "ocs-b.test"
    );
    let acct = store.account("alice");
    assert_eq!(acct["balance_minor"].as_i64(), Some(1000 - 42));
    assert_eq!(acct["reserved_minor"].as_i64(), Some(0));
    store.verify();
    c.close().await;
    store.drop_store().await;
}

/// Inside a session the request may move only with CC-Session-Failover SUPPORTED; without
/// it, RETRY_AND_TERMINATE ends the service, CONTINUE keeps it running uncharged.
#[tokio::test]
async fn a_pinned_session_moves_only_with_cc_session_failover() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let a = ocs(&store, "ocs-a.test", false).await;
    let b = ocs(&store, "ocs-b.test", false).await;
    let c = client(&[&a, &b], CCFH_RETRY_AND_TERMINATE).await;
    let r = c
        .session(&SessionRequest::start("s1", alice(), Ch2Units::Seconds(60)))
        .await
        .unwrap();
    assert_eq!(r.answered_by.as_deref(), Some("ocs-a.test"));
    a.lose.store(true, Ordering::SeqCst);
    let r = c
        .session(&SessionRequest::interim(
            "s1",
            Ch2Units::Seconds(60),
            Some(Ch2Units::Seconds(60)),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Terminate, "{r:?}");
    assert_eq!(ccrs(&c).len(), 2, "the CCR-U must not move to ocs-b");
    a.wait_lost(1).await;
    c.close().await;

    // Servers that announce CC-Session-Failover SUPPORTED (and CCFH CONTINUE).
    let a2 = ocs(&store, "ocs-c.test", true).await;
    let b2 = ocs(&store, "ocs-d.test", true).await;
    let c = client(&[&a2, &b2], CCFH_TERMINATE).await;
    let r = c
        .session(&SessionRequest::start("s2", alice(), Ch2Units::Seconds(60)))
        .await
        .unwrap();
    assert_eq!(r.cc_session_failover, Some(true));
    a2.lose.store(true, Ordering::SeqCst);
    let r = c
        .session(&SessionRequest::interim(
            "s2",
            Ch2Units::Seconds(60),
            Some(Ch2Units::Seconds(60)),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Granted, "{r:?}");
    assert_eq!(r.answered_by.as_deref(), Some("ocs-d.test"));
    a2.wait_lost(1).await;
    let r = c
        .session(&SessionRequest::stop(
            "s2",
            Ch2Units::Seconds(10),
            TerminationCause::Logout,
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Granted, "{r:?}");
    // s1: ocs-a committed the CCR-U whose answer it lost (60 s used, 60 s reserved again,
    // left for Tcc); s2: 60 + 10 s charged once, although its CCR-U went to two servers.
    let acct = store.account("alice");
    assert_eq!(acct["balance_minor"].as_i64(), Some(1000 - 60 - 70));
    assert_eq!(acct["reserved_minor"].as_i64(), Some(60));
    store.verify();
    c.close().await;
    store.drop_store().await;
}

/// DDFH TERMINATE_OR_BUFFER: an unanswered direct debit is granted and kept, T-flagged;
/// the replay gets the stored answer, and the account is debited exactly once.
#[tokio::test]
async fn unanswered_direct_debit_is_buffered_and_replayed_once() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let a = ocs(&store, "ocs-a.test", false).await;
    let c = client(&[&a], CCFH_TERMINATE).await;
    a.lose.store(true, Ordering::SeqCst);
    let r = c
        .event(&EventRequest::new(
            EventAction::DirectDebit,
            "m1",
            alice(),
            Some(Ch2Units::Messages(2)),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::ContinueUncharged);
    assert_eq!(c.buffered(), 1);
    // The OCS did debit; only the answer was lost.
    a.wait_lost(1).await;
    assert_eq!(entries_of(&store, "direct_debit").await, 1);
    a.lose.store(false, Ordering::SeqCst);
    assert_eq!(c.replay_buffered().await, 1);
    assert_eq!(c.buffered(), 0);
    let sent = ccrs(&c);
    assert_eq!(sent.len(), 2);
    assert!(sent[1].header.flags.is_retransmitted());
    assert_eq!(entries_of(&store, "direct_debit").await, 1);
    assert_eq!(
        store.account("alice")["balance_minor"].as_i64(),
        Some(1000 - 10)
    );
    store.verify();
    c.close().await;
    store.drop_store().await;
}
