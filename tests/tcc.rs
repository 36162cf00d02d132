//! Tcc (RFC 4006 §7): a session that sends no CCR-U/T before its supervision timer expires has
//! its reservation released by the sweeper, and a late CCR-U is 5002. Driven over real TCP
//! against the credit-control application and a real ledger, with a manual clock.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::sync::Arc;
use tollgate_cc::{CcConfig, CreditControl};
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, Dictionary, ResultCode};
use tollgate_ledger::{LedgerConfig, SqlLedger};
use tollgate_ocs::{Clock, Ledger, ManualClock, Timestamp};
use tollgate_peer::{Application, LocalPeer, Node, PeerLimits};

async fn tcc_expiry(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
    let ledger = SqlLedger::connect(&store.url, LedgerConfig::default(), clock.clone())
        .await
        .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    let cfg = CcConfig {
        origin_host: "ocs.test".into(),
        origin_realm: "test".into(),
        validity_time_s: 60,
        tcc_factor: 2,
        ..CcConfig::default()
    };
    let app: Arc<dyn Application> =
        Arc::new(CreditControl::new(cfg, ledger.clone(), clock.clone()));
    let node = Node::new(
        LocalPeer::new("ocs.test", "test"),
        PeerLimits::default(),
        Arc::new(Dictionary::builtin().clone()),
        Some(app),
        &[],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = node.clone();
    tokio::spawn(async move { n.serve_tcp(listener).await });
    let c = Client::connect(addr, "im.test").await;

    let sid = "im.test;tcc;1";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let acct = store.account("alice");
    assert_eq!(acct["reserved_minor"].as_i64(), Some(60));

    // Before Tcc (2 × Validity-Time = 120 s) nothing expires.
    clock.advance_seconds(119);
    assert_eq!(ledger.expire(clock.now()).await.unwrap().expired, 0);
    // After it, the sweeper releases the reservation without charging.
    clock.advance_seconds(2);
    let report = ledger.expire(clock.now()).await.unwrap();
    assert_eq!(report.expired, 1);
    let acct = store.account("alice");
    assert_eq!(acct["reserved_minor"].as_i64(), Some(0));
    assert_eq!(acct["balance_minor"].as_i64(), Some(1000));

    // The client comes back too late: 5002, and still no charge.
    let u = c.ccr(sid, 2, 1).with(mscc(
        Some(10),
        Some(Avp::from_u32(CC_TIME, 60)),
        Some(Avp::from_u32(CC_TIME, 60)),
        Some(4),
    ));
    assert_eq!(
        c.ask(u).await.result_code(),
        Some(ResultCode::UNKNOWN_SESSION_ID)
    );
    let t = c.ccr(sid, 3, 2).with(mscc(
        Some(10),
        None,
        Some(Avp::from_u32(CC_TIME, 60)),
        Some(2),
    ));
    assert_eq!(
        c.ask(t).await.result_code(),
        Some(ResultCode::UNKNOWN_SESSION_ID)
    );
    assert_eq!(store.account("alice")["balance_minor"].as_i64(), Some(1000));

    c.close().await;
    node.shutdown(std::time::Duration::from_secs(5)).await;
    store.verify();
    store.drop_store().await;
}

#[tokio::test]
async fn tcc_expiry_releases_the_reservation_sqlite() {
    tcc_expiry(Backend::Sqlite).await
}

#[tokio::test]
async fn tcc_expiry_releases_the_reservation_postgres() {
    tcc_expiry(Backend::Postgres).await
}
