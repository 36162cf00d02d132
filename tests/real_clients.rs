//! What deployed Ro/Gy clients send, accepted end to end by the spawned `tollgate serve` over
//! TCP, on both stores (docs/real-clients.md): the application id only inside
//! Vendor-Specific-Application-Id, E.164 numbers with `+` and separators, TS 32.299 §7.1.12
//! Service-Context-Ids priced by their standard suffix, and the policy for unknown vendor
//! AVPs with Failed-AVP and Error-Message naming the innermost offender.
//!
//! Kamailio and Open5GS themselves run in `tests/kamailio.rs` and `tests/open5gs_gy.rs`; these
//! tests pin each rule on its own, with Tollgate's own client.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode, Message, ResultCode};

/// The context Kamailio's ims_charging builds (extension, MNC, MCC, release, then the service).
const KAMAILIO_CONTEXT: &str = "ext.01.001.8.32260@3gpp.org";

/// A CCR as Kamailio 5.6 shapes the parts that matter here: no top-level
/// Auth-Application-Id, Vendor-Specific-Application-Id { Vendor-Id 10415, Auth-Application-Id
/// 4 }, the extended Service-Context-Id and the caller's E.164 number with its `+`.
fn kamailio_ccr(c: &Client, session: &str, kind: i32, number: u32, mscc: Avp) -> Message {
    let mut m = c.ccr(session, kind, number);
    m.avps
        .retain(|a| !a.is(AUTH_APPLICATION_ID) && !a.is(SERVICE_CONTEXT_ID));
    m.with(Avp::grouped(
        VENDOR_SPECIFIC_APPLICATION_ID,
        &[
            Avp::from_u32(VENDOR_ID, 10415),
            Avp::from_u32(AUTH_APPLICATION_ID, 4),
        ],
    ))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, KAMAILIO_CONTEXT))
    .with(subscription(0, "+15550000001"))
    .with(mscc)
}

fn balance(store: &Store, id: &str) -> (i64, i64) {
    let a = store.account(id);
    (
        a["balance_minor"].as_i64().unwrap(),
        a["reserved_minor"].as_i64().unwrap(),
    )
}

/// The value of a counter line on /metrics (0 when absent).
fn counter(server: &Server, line_prefix: &str) -> u64 {
    let (status, body) = server.http_get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

async fn kamailio_shaped_session(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let c = Client::connect(server.diameter, "scscf.ims.test").await;
    let sid = "scscf.ims.test;1;kamailio";

    let i = kamailio_ccr(
        &c,
        sid,
        1,
        0,
        mscc(None, Some(Avp::from_u32(CC_TIME, 30)), None, None),
    );
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS), "{a:?}");
    let m = a
        .find(MULTIPLE_SERVICES_CREDIT_CONTROL)
        .unwrap()
        .members()
        .unwrap();
    assert_eq!(result_in(&m), Some(2001));
    // 30 s asked at 0.01/s (common::provision): 0.30 held.
    assert_eq!(granted(&m), Some(30));
    assert_eq!(balance(&store, "alice"), (1000, 30));

    let t = kamailio_ccr(
        &c,
        sid,
        3,
        1,
        mscc(None, None, Some(Avp::from_u32(CC_TIME, 42)), Some(2)),
    )
    .with(Avp::from_enum(TERMINATION_CAUSE, 1));
    let a = c.ask(t).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS), "{a:?}");
    assert_eq!(balance(&store, "alice"), (958, 0), "42 s at 0.01");

    // Each CCR said so on /metrics (the log line is at info level, once).
    assert_eq!(
        counter(
            &server,
            "tollgate_client_deviations_total{deviation=\"auth_application_id_in_vsai\"}"
        ),
        2
    );
    finish(c, server, store).await;
}

#[tokio::test]
async fn kamailio_shaped_session_is_charged_sqlite() {
    kamailio_shaped_session(Backend::Sqlite).await
}

#[tokio::test]
async fn kamailio_shaped_session_is_charged_postgres() {
    kamailio_shaped_session(Backend::Postgres).await
}

/// The money of one finished 10 s session on `context`: what it cost, in minor units.
async fn cost_of_ten_seconds(c: &Client, store: &Store, context: &str, session: &str) -> i64 {
    let before = balance(store, "alice").0;
    let with_context = |m: Message| {
        let mut m = m;
        m.avps.retain(|a| !a.is(SERVICE_CONTEXT_ID));
        m.with(Avp::from_str(SERVICE_CONTEXT_ID, context))
            .with(subscription(0, "15550000001"))
    };
    let i = with_context(c.ccr(session, 1, 0)).with(mscc(
        None,
        Some(Avp::from_u32(CC_TIME, 10)),
        None,
        None,
    ));
    let a = c.ask(i).await;
    assert_eq!(
        a.result_code(),
        Some(ResultCode::SUCCESS),
        "{context}: {a:?}"
    );
    let t = with_context(c.ccr(session, 3, 1)).with(mscc(
        None,
        None,
        Some(Avp::from_u32(CC_TIME, 10)),
        Some(2),
    ));
    let a = c.ask(t).await;
    assert_eq!(
        a.result_code(),
        Some(ResultCode::SUCCESS),
        "{context}: {a:?}"
    );
    before - balance(store, "alice").0
}

/// PRICE_ENQUIRY (CCR-E, Requested-Action 3) for 10 s on `context`: the Cost-Information
/// Value-Digits at Exponent -2, or the Result-Code when refused.
async fn price_of_ten_seconds(c: &Client, context: &str, session: &str) -> Result<i64, u32> {
    let mut m = c.ccr(session, 4, 0);
    m.avps.retain(|a| !a.is(SERVICE_CONTEXT_ID));
    let m = m
        .with(Avp::from_str(SERVICE_CONTEXT_ID, context))
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(REQUESTED_ACTION, 3))
        .with(mscc(None, Some(Avp::from_u32(CC_TIME, 10)), None, None));
    let a = c.ask(m).await;
    let code = a.result_code().unwrap().0;
    if code != 2001 {
        return Err(code);
    }
    let cost = a.find(COST_INFORMATION).unwrap().members().unwrap();
    let uv = cost.iter().find(|x| x.is(UNIT_VALUE)).unwrap();
    assert_eq!(uv.member(EXPONENT).unwrap().unwrap().i32().unwrap(), -2);
    Ok(uv.member(VALUE_DIGITS).unwrap().unwrap().i64().unwrap())
}

async fn most_specific_context_wins(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    // common::provision: 32260@3gpp.org at 0.01/s. Release 8 of it at 0.03/s, and one
    // network's whole id at 0.05/s.
    provision(&store, "10.00");
    for (context, price) in [
        ("8.32260@3gpp.org", "0.03"),
        ("ext.02.002.8.32260@3gpp.org", "0.05"),
    ] {
        store.set_tariff(&Tariff::new(context, "seconds", price).min_grant(1));
    }
    let server = Server::start(&store, &[]);
    let c = Client::connect(server.diameter, "as.ims.test").await;
    // Release 8 from any network: the release's tariff; another release: the service's; the
    // network with its own tariff: that one; another service: no tariff at all (5031).
    let cases = [
        ("ext.01.001.8.32260@3gpp.org", Ok(30)),
        ("ext.01.001.9.32260@3gpp.org", Ok(10)),
        ("32260@3gpp.org", Ok(10)),
        ("ext.02.002.8.32260@3gpp.org", Ok(50)),
        ("ext.01.001.8.32270@3gpp.org", Err(5031)),
    ];
    for (n, (context, want)) in cases.into_iter().enumerate() {
        let price = price_of_ten_seconds(&c, context, &format!("as.ims.test;p;{n}")).await;
        assert_eq!(price, want, "price enquiry on {context}");
        if let Ok(cost) = want {
            let charged =
                cost_of_ten_seconds(&c, &store, context, &format!("as.ims.test;s;{n}")).await;
            assert_eq!(charged, cost, "session on {context}");
        }
    }
    finish(c, server, store).await;
}

#[tokio::test]
async fn the_most_specific_service_context_tariff_wins_sqlite() {
    most_specific_context_wins(Backend::Sqlite).await
}

#[tokio::test]
async fn the_most_specific_service_context_tariff_wins_postgres() {
    most_specific_context_wins(Backend::Postgres).await
}

#[tokio::test]
async fn the_cli_takes_e164_numbers_with_plus_and_separators_and_stores_digits() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    store.create_account("bob", "1.00", &["e164:+1 (555) 000-0002"]);
    let out = store.cli(&["account", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    let bob = listed
        .lines()
        .find(|l| l.contains("bob"))
        .unwrap_or_default();
    assert!(bob.contains("e164:15550000002"), "{listed}");
    // The same number written another way is the same subscriber: refused as taken.
    let out = store.try_create_account("carol", "1.00", &["e164:+15550000002"]);
    assert!(!out.status.success(), "a second account took the number");
    // Not a number: one line that says how to write one.
    let out = store.try_create_account("dave", "1.00", &["e164:+1555x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("e164:DIGITS") && err.contains("leading +"),
        "{err}"
    );
    store.drop_store().await;
}

/// An MSCC with an AVP nobody defines: vendor 10415, code 64999, M bit.
fn mscc_with_unknown_vendor_avp() -> Avp {
    Avp::grouped(
        MULTIPLE_SERVICES_CREDIT_CONTROL,
        &[
            Avp::grouped(REQUESTED_SERVICE_UNIT, &[Avp::from_u32(CC_TIME, 10)]),
            Avp::from_u32(AvpCode::tgpp(64999), 1),
        ],
    )
}

#[tokio::test]
async fn unknown_vendor_avps_are_refused_by_default_and_accepted_for_named_peers() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let config = store.dir.join("tolerant.toml");
    std::fs::write(
        &config,
        "[diameter]\nunknown_vendor_avps_accept_from = [\"smf.tolerated.test\"]\n",
    )
    .unwrap();
    let server = Server::start(&store, &["--config", config.to_str().unwrap()]);

    // Everyone else: RFC 6733 §4.1, 5001 naming the member inside its MSCC.
    let strict = Client::connect(server.diameter, "smf.strict.test").await;
    let i = strict
        .ccr("smf.strict.test;1;1", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc_with_unknown_vendor_avp());
    let a = strict.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::AVP_UNSUPPORTED));
    let text = a.find(ERROR_MESSAGE).unwrap().utf8().unwrap().to_string();
    assert!(
        text.starts_with("AVP 64999 (vendor 10415) is not supported, inside AVP 456"),
        "{text}"
    );
    let failed = a.find(FAILED_AVP).unwrap().members().unwrap();
    assert!(failed[0].is(MULTIPLE_SERVICES_CREDIT_CONTROL));
    let inner = failed[0].members().unwrap();
    assert_eq!((inner[0].code, inner[0].vendor_id), (64999, 10415));
    strict.close().await;

    // The named peer: accepted, charged, logged and counted.
    let tolerated = Client::connect(server.diameter, "smf.tolerated.test").await;
    let i = tolerated
        .ccr("smf.tolerated.test;1;1", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc_with_unknown_vendor_avp());
    let a = tolerated.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS), "{a:?}");
    assert_eq!(
        counter(
            &server,
            "tollgate_client_deviations_total{deviation=\"unknown_vendor_avp_accepted\"}"
        ),
        1
    );
    tolerated.close().await;
    store.verify();
    server.stop();

    // A value that is neither refuse nor accept: one line naming the key.
    std::fs::write(&config, "[diameter]\nunknown_vendor_avps = \"ignore\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown_vendor_avps") && err.contains("refuse") && err.contains("accept"),
        "{err}"
    );
    store.drop_store().await;
}
