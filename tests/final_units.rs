//! Final-Unit-Indication beyond TERMINATE (RFC 4006 §5.6): a tariff set with
//! `--final-unit-action redirect --redirect-address URL` sends, with a final grant,
//! Final-Unit-Action REDIRECT and a Redirect-Server naming the address (its type from the
//! address); `restrict-access --filter-id F` sends RESTRICT_ACCESS and Filter-Id. A grant that
//! is not final carries no Final-Unit-Indication, and one is never sent with 4012. The CCAs
//! dissect cleanly in tshark. Over TCP against the spawned server, on both stores.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode, Message};

const HOST: &str = "pgw.test";

fn member(avps: &[Avp], code: AvpCode) -> Option<Avp> {
    avps.iter().find(|a| a.is(code)).cloned()
}

fn fui(mscc: &[Avp]) -> Option<Vec<Avp>> {
    member(mscc, FINAL_UNIT_INDICATION).map(|f| f.members().unwrap())
}

fn opening(session: &str, rg: u32) -> Message {
    ccr(HOST, session, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(rg), Some(Avp::from_u32(CC_TIME, 60)), None, None))
}

async fn final_units(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    // 0.30 EUR: at 0.02 EUR/s (RG 20) a 60 s request gets a final grant of 15 s.
    provision(&store, "0.30");
    let rg20 = Tariff::new("32260@3gpp.org", "seconds", "0.02")
        .rating_group(20)
        .quantum(60)
        .min_grant(1);
    let tariff = |extra: &[&str]| store.set_tariff_with(&rg20, extra);
    tariff(&[
        "--final-unit-action",
        "redirect",
        "--redirect-address",
        "http://topup.example.net/",
    ]);
    let out = store.cli(&[
        "tariff",
        "set",
        "--service-context",
        "x",
        "--unit",
        "seconds",
        "--price",
        "0.01",
        "--final-unit-action",
        "redirect",
        "--redirect-address",
        "topup page",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--redirect-address"),
        "{err}"
    );
    let server = Server::start(&store, &[]);
    let client = Client::connect(server.diameter, HOST).await;

    // Not final: 5 s, which the balance covers with money to spare.
    let small = ccr(HOST, "fui;0", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(20), Some(Avp::from_u32(CC_TIME, 5)), None, None));
    let a = client.ask(small).await;
    let m = answer_mscc(&a, 20);
    assert_eq!(
        (granted(&m), fui(&m)),
        (Some(5), None),
        "a grant that is not final: {a:?}"
    );
    let t =
        ccr(HOST, "fui;0", 3, 1).with(mscc(Some(20), None, Some(Avp::from_u32(CC_TIME, 0)), None));
    client.ask(t).await;

    // Final: REDIRECT to the top-up page.
    let a = client.ask(opening("fui;1", 20)).await;
    let m = answer_mscc(&a, 20);
    assert_eq!(granted(&m), Some(15));
    let f = fui(&m).expect("a Final-Unit-Indication with the final grant");
    assert_eq!(
        member(&f, FINAL_UNIT_ACTION).unwrap().enumerated().unwrap(),
        1
    );
    let server_avp = member(&f, REDIRECT_SERVER).unwrap().members().unwrap();
    assert_eq!(
        member(&server_avp, REDIRECT_ADDRESS_TYPE)
            .unwrap()
            .enumerated()
            .unwrap(),
        2
    );
    assert_eq!(
        member(&server_avp, REDIRECT_SERVER_ADDRESS)
            .unwrap()
            .utf8()
            .unwrap(),
        "http://topup.example.net/"
    );
    // The final units used up, asked again with nothing left: 4012, never with an FUI.
    let u = ccr(HOST, "fui;1", 2, 1).with(mscc(
        Some(20),
        Some(Avp::from_u32(CC_TIME, 60)),
        Some(Avp::from_u32(CC_TIME, 15)),
        Some(2),
    ));
    let b = client.ask(u).await;
    let m = answer_mscc(&b, 20);
    assert_eq!((result_in(&m), fui(&m)), (Some(4012), None), "{b:?}");
    assert_eq!(store.account("alice")["balance_minor"], 0);

    // RESTRICT_ACCESS to the client's filter.
    store.run_ok(&["account", "topup", "--id", "alice", "--amount", "0.30"]);
    tariff(&[
        "--final-unit-action",
        "restrict-access",
        "--filter-id",
        "walled-garden",
    ]);
    let c = client.ask(opening("fui;2", 20)).await;
    let f = fui(&answer_mscc(&c, 20)).expect("a Final-Unit-Indication");
    assert_eq!(
        member(&f, FINAL_UNIT_ACTION).unwrap().enumerated().unwrap(),
        2
    );
    assert_eq!(
        member(&f, FILTER_ID).unwrap().utf8().unwrap(),
        "walled-garden"
    );

    let payloads: Vec<Vec<u8>> = [&a, &b, &c].iter().map(|m| m.to_bytes().to_vec()).collect();
    if let Some(text) = tshark_server_messages(&payloads, &store.dir.join("fui.pcap")) {
        for name in ["Redirect-Server-Address", "Filter-Id", "Final-Unit-Action"] {
            assert!(text.contains(name), "tshark did not show {name}:\n{text}");
        }
    }
    let t =
        ccr(HOST, "fui;2", 3, 1).with(mscc(Some(20), None, Some(Avp::from_u32(CC_TIME, 15)), None));
    client.ask(t).await;
    finish(client, server, store).await;
}

#[tokio::test]
async fn final_units_on_sqlite() {
    final_units(Backend::Sqlite).await;
}

#[tokio::test]
async fn final_units_on_postgres() {
    final_units(Backend::Postgres).await;
}
