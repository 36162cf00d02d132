//! Quota management per tariff (TS 32.299 §7.2): a tariff set with `--quota-threshold`,
//! `--quota-holding-time`, `--quota-consumption-time` and `--validity-time` sends
//! Time-Quota-Threshold, Quota-Holding-Time, Quota-Consumption-Time and its own Validity-Time
//! in the MSCC of every grant under it (CCR-I and the CCR-U's new grant), and its reservations
//! expire at that Validity-Time × tcc_factor; a tariff without them sends none of it and keeps
//! the server's Validity-Time. The CCAs dissect cleanly in tshark. Over TCP against the
//! spawned server, on both stores.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode};

const HOST: &str = "pcscf.test";

fn value(members: &[Avp], code: AvpCode) -> Option<u32> {
    members
        .iter()
        .find(|a| a.is(code))
        .map(|a| a.u32().unwrap())
}

async fn quota_policy(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    // Rating group 20 gets the policy; the context-wide tariff (RG 10) has none.
    let rg20 = Tariff::new("32260@3gpp.org", "seconds", "0.02")
        .rating_group(20)
        .quantum(60)
        .min_grant(1);
    store.set_tariff_with(
        &rg20,
        &[
            "--quota-threshold",
            "10",
            "--quota-holding-time",
            "30",
            "--quota-consumption-time",
            "5",
            "--validity-time",
            "30",
        ],
    );
    let out = store.cli(&["tariff", "list", "--json"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(r#""threshold":10"#), "{list}");
    let server = Server::start(&store, &[]);
    let client = Client::connect(server.diameter, HOST).await;
    let rsu = |s| Some(Avp::from_u32(CC_TIME, s));
    let i = ccr(HOST, "quota;1", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(10), rsu(60), None, None))
        .with(mscc(Some(20), rsu(60), None, None));
    let a = client.ask(i).await;
    let (plain, policed) = (answer_mscc(&a, 10), answer_mscc(&a, 20));
    assert_eq!(granted(&policed), Some(60));
    assert_eq!(value(&policed, TIME_QUOTA_THRESHOLD), Some(10));
    assert_eq!(value(&policed, QUOTA_HOLDING_TIME), Some(30));
    assert_eq!(value(&policed, QUOTA_CONSUMPTION_TIME), Some(5));
    // Validity-Time: the tariff's 30 s, or the server's 300 s; Tcc = that × tcc_factor (2).
    assert_eq!(value(&policed, VALIDITY_TIME), Some(30));
    assert_eq!(value(&plain, VALIDITY_TIME), Some(300));
    let tcc = |rg: u32| {
        format!(
            "SELECT expires_at_ms - created_at_ms FROM v_open_reservations WHERE rating_group = {rg}"
        )
    };
    let (short, long) = (store.scalar(&tcc(20)).await, store.scalar(&tcc(10)).await);
    assert!(
        (59_000..=61_000).contains(&short),
        "Tcc of the RG 20 reservation: {short} ms"
    );
    assert!(
        (599_000..=601_000).contains(&long),
        "Tcc of the RG 10 reservation: {long} ms"
    );
    for code in [
        TIME_QUOTA_THRESHOLD,
        QUOTA_HOLDING_TIME,
        QUOTA_CONSUMPTION_TIME,
    ] {
        assert_eq!(
            value(&plain, code),
            None,
            "a tariff without a policy sent {code:?}"
        );
    }
    // The CCR-U's new grant carries it too.
    let u = ccr(HOST, "quota;1", 2, 1).with(mscc(
        Some(20),
        rsu(60),
        Some(Avp::from_u32(CC_TIME, 50)),
        Some(0),
    ));
    let b = client.ask(u).await;
    let again = answer_mscc(&b, 20);
    assert_eq!(
        (granted(&again), value(&again, TIME_QUOTA_THRESHOLD)),
        (Some(60), Some(10))
    );
    assert_eq!(value(&again, VALIDITY_TIME), Some(30));
    let renewed = store.scalar(&tcc(20)).await;
    assert!(
        (59_000..=61_000).contains(&renewed),
        "Tcc after the CCR-U: {renewed} ms"
    );
    let payloads = vec![a.to_bytes().to_vec(), b.to_bytes().to_vec()];
    if let Some(text) = tshark_server_messages(&payloads, &store.dir.join("quota.pcap")) {
        for name in [
            "Time-Quota-Threshold",
            "Quota-Holding-Time",
            "Quota-Consumption-Time",
        ] {
            assert!(text.contains(name), "tshark did not show {name}:\n{text}");
        }
    }
    finish(client, server, store).await;
}

#[tokio::test]
async fn quota_policy_on_sqlite() {
    quota_policy(Backend::Sqlite).await;
}

#[tokio::test]
async fn quota_policy_on_postgres() {
    quota_policy(Backend::Postgres).await;
}
