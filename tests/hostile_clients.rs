//! Confused or hostile clients against the spawned `tollgate serve`, over real TCP, on both
//! stores: usage far above the grant is charged up to the configured cap (and counted),
//! parallel CCR-Us of one session on two rating groups are each answered and charged at their
//! own price, and a CCR-T for a session that never opened, or is already closed, gets 5002 and
//! charges nothing.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

#[macro_use]
mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, Message};

const HOST: &str = "pcscf.test";

async fn start(backend: Backend, config: &str) -> Option<(Store, Server, Client)> {
    let store = Store::new(backend).await?;
    provision(&store, "10.00");
    let file = store.dir.join("hostile.toml");
    std::fs::write(&file, config).unwrap();
    let server = Server::start(&store, &["--config", file.to_str().unwrap()]);
    let client = Client::connect(server.diameter, HOST).await;
    Some((store, server, client))
}

fn time(seconds: u32) -> Option<Avp> {
    Some(Avp::from_u32(CC_TIME, seconds))
}

fn opening(session: &str, rgs: &[u32]) -> Message {
    let mut m = ccr(HOST, session, 1, 0).with(subscription(0, "15550000001"));
    for rg in rgs {
        m.push(mscc(Some(*rg), time(60), None, None));
    }
    m
}

async fn usage_far_above_the_grant_is_charged_up_to_the_cap(backend: Backend) {
    let config = "[credit_control]\nmax_reported_seconds = 100\n";
    let Some((store, server, client)) = start(backend, config).await else {
        return;
    };
    let a = client.ask(opening("hostile;1", &[10])).await;
    assert_eq!(granted(&answer_mscc(&a, 10)), Some(60));
    // One call, 71 million seconds: charged as 100 s at 0.01 EUR/s.
    let t = ccr(HOST, "hostile;1", 3, 1).with(mscc(Some(10), None, time(71_000_000), None));
    let a = client.ask(t).await;
    assert_eq!(a.result_code(), Some(tollgate_codec::ResultCode::SUCCESS));
    assert_eq!(store.account("alice")["balance_minor"], 1000 - 100);
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("tollgate_usage_capped_total{unit=\"seconds\"} 1"),
        "{metrics}"
    );
    store.verify();
    finish(client, server, store).await;
}

async fn parallel_updates_on_two_rating_groups(backend: Backend) {
    let Some((store, server, client)) = start(backend, "").await else {
        return;
    };
    let a = client.ask(opening("hostile;2", &[10, 20])).await;
    assert_eq!(granted(&answer_mscc(&a, 10)), Some(60));
    assert_eq!(granted(&answer_mscc(&a, 20)), Some(60));
    // Two CCR-Us of one session at once, one per rating group (RFC 4006 §5.1.2 allows both
    // in flight): each is answered for its own service.
    let u1 = ccr(HOST, "hostile;2", 2, 1).with(mscc(Some(10), time(60), time(30), Some(3)));
    let u2 = ccr(HOST, "hostile;2", 2, 2).with(mscc(Some(20), time(60), time(40), Some(3)));
    let (a1, a2) = tokio::join!(client.ask(u1), client.ask(u2));
    for (a, rg) in [(&a1, 10), (&a2, 20)] {
        assert_eq!(
            a.result_code(),
            Some(tollgate_codec::ResultCode::SUCCESS),
            "{a:?}"
        );
        let m = answer_mscc(a, rg);
        assert_eq!(
            (result_in(&m), granted(&m)),
            (Some(2001), Some(60)),
            "{a:?}"
        );
    }
    let t = ccr(HOST, "hostile;2", 3, 3)
        .with(mscc(Some(10), None, time(10), None))
        .with(mscc(Some(20), None, time(10), None));
    let a = client.ask(t).await;
    assert_eq!(a.result_code(), Some(tollgate_codec::ResultCode::SUCCESS));
    // RG 10 at 0.01 EUR/s: 30 + 10 s; RG 20 at 0.02 EUR/s: 40 + 10 s.
    assert_eq!(store.account("alice")["balance_minor"], 1000 - 40 - 100);
    assert_eq!(store.account("alice")["reserved_minor"], 0);
    store.verify();
    finish(client, server, store).await;
}

async fn termination_of_an_unknown_or_closed_session_gets_5002(backend: Backend) {
    let Some((store, server, client)) = start(backend, "").await else {
        return;
    };
    let never = ccr(HOST, "hostile;never", 3, 1).with(mscc(Some(10), None, time(30), None));
    let a = client.ask(never).await;
    assert_eq!(
        a.result_code(),
        Some(tollgate_codec::ResultCode::UNKNOWN_SESSION_ID)
    );
    client.ask(opening("hostile;3", &[10])).await;
    let t = ccr(HOST, "hostile;3", 3, 1).with(mscc(Some(10), None, time(10), None));
    assert_eq!(
        client.ask(t).await.result_code(),
        Some(tollgate_codec::ResultCode::SUCCESS)
    );
    // Closed: a second, different CCR-T (a new request number) finds nothing.
    let again = ccr(HOST, "hostile;3", 3, 2).with(mscc(Some(10), None, time(50), None));
    let a = client.ask(again).await;
    assert_eq!(
        a.result_code(),
        Some(tollgate_codec::ResultCode::UNKNOWN_SESSION_ID)
    );
    assert_eq!(store.account("alice")["balance_minor"], 1000 - 10);
    assert_eq!(store.account("alice")["reserved_minor"], 0);
    store.verify();
    finish(client, server, store).await;
}

tests_on_both_stores!(
    usage_far_above_the_grant_is_charged_up_to_the_cap,
    parallel_updates_on_two_rating_groups,
    termination_of_an_unknown_or_closed_session_gets_5002,
);
