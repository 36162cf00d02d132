//! Tariffs and the Subscription-Id → account map are cached in every `tollgate serve`
//! (crates/tollgate-ledger/src/catalog.rs). A change made from the CLI, while two nodes run on
//! the same store and both have cached the old state (including "no such tariff" and "no such
//! subscriber"), is seen by each node at its very next CCR.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, ResultCode};

const CTX: &str = "32260@3gpp.org";

/// CCR-I for 10 s then CCR-T for 10 s used; the result of each and what the account lost.
async fn session(c: &Client, store: &Store, session: &str, msisdn: &str, account: &str) -> u32 {
    let i = c
        .ccr(session, 1, 0)
        .with(subscription(0, msisdn))
        .with(mscc(None, Some(Avp::from_u32(CC_TIME, 10)), None, None));
    let a = c.ask(i).await;
    let code = a.result_code().unwrap().0;
    if code != 2001 {
        return code;
    }
    let before = store.account(account)["balance_minor"].as_i64().unwrap();
    let t = c
        .ccr(session, 3, 1)
        .with(mscc(None, None, Some(Avp::from_u32(CC_TIME, 10)), Some(2)));
    assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));
    let after = store.account(account)["balance_minor"].as_i64().unwrap();
    u32::try_from(before - after).unwrap()
}

async fn changes_are_seen_by_every_node(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    store.create_account("alice", "10.00", &["e164:15550000001"]);
    let nodes = [Server::start(&store, &[]), Server::start(&store, &[])];
    let a = Client::connect(nodes[0].diameter, "as1.test").await;
    let b = Client::connect(nodes[1].diameter, "as2.test").await;

    // Both nodes cache: no tariff for the context, and no account for bob's number.
    assert_eq!(
        session(&a, &store, "as1.test;1", "15550000001", "alice").await,
        5031
    );
    assert_eq!(
        session(&b, &store, "as2.test;1", "15550000009", "-").await,
        5030
    );

    // Changed from the CLI (another process), while both nodes run.
    store.set_tariff(&Tariff::new(CTX, "seconds", "0.01").min_grant(1));
    store.create_account("bob", "10.00", &["e164:15550000009"]);
    // The next CCR on each node sees it: 10 s at 0.01 = 10 cents, charged.
    assert_eq!(
        session(&a, &store, "as1.test;2", "15550000001", "alice").await,
        10
    );
    assert_eq!(
        session(&b, &store, "as2.test;2", "15550000009", "bob").await,
        10
    );

    // A price change is seen as well, by the node that cached the old price.
    store.set_tariff(&Tariff::new(CTX, "seconds", "0.03").min_grant(1));
    assert_eq!(
        session(&a, &store, "as1.test;3", "15550000001", "alice").await,
        30
    );
    assert_eq!(
        session(&b, &store, "as2.test;3", "15550000009", "bob").await,
        30
    );

    // Every batch reloaded at most when the version moved: /metrics counts the reloads.
    for node in &nodes {
        let (_, metrics) = node.http_get("/metrics");
        let reloads: f64 = metrics
            .lines()
            .find(|l| l.starts_with("tollgate_ledger_catalog_reloads_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        assert!(
            (1.0..=4.0).contains(&reloads),
            "reloads {reloads}: the cache reloads when (and only when) the catalog changed"
        );
    }
    a.close().await;
    b.close().await;
    store.verify();
    for node in nodes {
        node.stop();
    }
    store.drop_store().await;
}

#[tokio::test]
async fn changes_are_seen_by_every_node_sqlite() {
    changes_are_seen_by_every_node(Backend::Sqlite).await
}

#[tokio::test]
async fn changes_are_seen_by_every_node_postgres() {
    changes_are_seen_by_every_node(Backend::Postgres).await
}
