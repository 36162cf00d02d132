//! The three seed flows and their failure branches (docs/protocol.md, "Seed flows"), played by
//! `tollgate im-sim` through the CH-2 client against a spawned `tollgate serve`: each test asserts
//! the exact CCR sequence as written on the wire (im-sim's --wire-log holds every frame the client
//! wrote) and the ledger afterwards (balance, entry kinds, no open reservation, `verify`).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

#[macro_use]
mod common;

use common::*;
use sqlx::{Connection, Row};
use std::process::Command;
use std::time::Duration;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode, CommandCode, Flags, Message, ResultCode};

/// One CCR as seen on the wire, reduced to what the flows are about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ccr {
    kind: i32,
    number: u32,
    requested: Option<u64>,
    used: Option<u64>,
    termination_cause: Option<i32>,
}

fn ccr(kind: i32, number: u32, requested: Option<u64>, used: Option<u64>) -> Ccr {
    Ccr {
        kind,
        number,
        requested,
        used,
        termination_cause: None,
    }
}

fn unit_amount(g: &Avp) -> u64 {
    let u = g.members().unwrap().into_iter().next().unwrap();
    if u.is(CC_TIME) {
        u64::from(u.u32().unwrap())
    } else {
        u.u64().unwrap()
    }
}

fn reduce(m: &Message) -> Ccr {
    let mscc = m
        .find(MULTIPLE_SERVICES_CREDIT_CONTROL)
        .map(|a| a.members().unwrap())
        .unwrap_or_default();
    let find = |code: AvpCode| mscc.iter().find(|a| a.is(code)).map(unit_amount);
    Ccr {
        kind: m.find(CC_REQUEST_TYPE).unwrap().enumerated().unwrap(),
        number: m.find(CC_REQUEST_NUMBER).unwrap().u32().unwrap(),
        requested: find(REQUESTED_SERVICE_UNIT),
        used: find(USED_SERVICE_UNIT),
        termination_cause: m.find(TERMINATION_CAUSE).map(|a| a.enumerated().unwrap()),
    }
}

/// A finished im-sim run: its output and the CCRs it wrote.
struct Run {
    stdout: String,
    ccrs: Vec<Message>,
}

impl Run {
    fn sequence(&self) -> Vec<Ccr> {
        self.ccrs.iter().map(reduce).collect()
    }

    /// Every CCR of the run belongs to one Diameter session.
    fn one_session(&self) -> String {
        let sid = self.ccrs[0].session_id().unwrap().to_string();
        assert!(self.ccrs.iter().all(|m| m.session_id() == Some(&sid)));
        sid
    }
}

fn im_sim(store: &Store, server: &str, scenario: &str, extra: &[&str]) -> Run {
    let log = store.dir.join(unique("wire"));
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["im-sim", scenario, "--server", server])
        .args(["--destination-realm", "test", "--account", "alice"])
        .arg("--database-url")
        .arg(&store.url)
        .arg("--wire-log")
        .arg(&log)
        .args(["--tx", "3s"])
        .args(extra)
        .env_remove("TOLLGATE_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "im-sim failed");
    let ccrs = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| Message::decode(&hex::decode(l).unwrap().into()).unwrap())
        .filter(|m| m.is_request() && m.header.command == CommandCode::CREDIT_CONTROL)
        .collect();
    Run { stdout, ccrs }
}

/// (kind, amount) of alice's ledger entries, in order.
async fn entries(store: &Store) -> Vec<(String, i64)> {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let rows = sqlx::query(
        "SELECT kind, amount FROM v_entries WHERE account_id = 'alice' ORDER BY entry_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let out = rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
    c.close().await.ok();
    out
}

async fn open_reservations(store: &Store) -> i64 {
    // Installed here too: a test run alone may reach this before anything else did.
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM v_open_reservations")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    c.close().await.ok();
    n
}

async fn charging_payloads(store: &Store) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let rows =
        sqlx::query("SELECT CAST(payload AS TEXT) FROM v_charging_records ORDER BY record_id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.ok();
    rows.iter()
        .map(|r| r.get::<Option<String>, _>(0).unwrap_or_default())
        .collect()
}

fn balance(store: &Store) -> (i64, i64) {
    let a = store.account("alice");
    (
        a["balance_minor"].as_i64().unwrap(),
        a["reserved_minor"].as_i64().unwrap(),
    )
}

fn kinds(e: &[(String, i64)]) -> Vec<&str> {
    e.iter().map(|(k, _)| k.as_str()).collect()
}

/// The ledger after a flow: this balance, nothing reserved, nothing open, verify passes.
async fn settled(store: &Store, posted_minor: i64) -> Vec<(String, i64)> {
    assert_eq!(balance(store), (posted_minor, 0));
    assert_eq!(open_reservations(store).await, 0);
    store.verify();
    entries(store).await
}

fn member(m: &Message, path: &[AvpCode]) -> Option<Avp> {
    let mut cur = m.find(path[0])?.clone();
    for code in &path[1..] {
        cur = cur.member(*code).unwrap()?;
    }
    Some(cur)
}

async fn setup(backend: Backend, balance: &str) -> Option<(Store, Server)> {
    let store = Store::new(backend).await?;
    provision(&store, balance);
    let server = Server::start(&store, &[]);
    Some((store, server))
}

// ---- Flow A: one-to-one ------------------------------------------------------------------

async fn one_to_one(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(&store, &server.diameter.to_string(), "one-to-one", &[]);
    // 90 s of talk on 60 s grants: CCR-I reserves 60, CCR-U reports 60 and reserves 60,
    // CCR-T reports the last 30.
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            ccr(2, 1, Some(60), Some(60)),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 2, None, Some(30))
            },
        ]
    );
    run.one_session();
    let i = &run.ccrs[0];
    assert_eq!(
        member(
            i,
            &[
                SERVICE_INFORMATION,
                SERVICE_GENERIC_INFORMATION,
                APPLICATION_SERVICE_TYPE
            ]
        )
        .unwrap()
        .enumerated()
        .unwrap(),
        103
    );
    assert_eq!(
        member(
            i,
            &[SERVICE_INFORMATION, IMS_INFORMATION, EVENT_TYPE, SIP_METHOD]
        )
        .unwrap()
        .utf8()
        .unwrap(),
        "INVITE"
    );
    assert!(i.find(DESTINATION_HOST).is_none());
    // Destination-Host is pinned to the first CCA's Origin-Host (RFC 4006 §5.1).
    for later in &run.ccrs[1..] {
        assert_eq!(
            later.find(DESTINATION_HOST).unwrap().utf8().unwrap(),
            "ocs.test"
        );
    }
    let e = settled(&store, 1000 - 90).await;
    assert_eq!(kinds(&e), ["topup", "pending", "post", "pending", "post"]);
    assert!(run.stdout.contains("Cost-Information 0.30 EUR"));
    // The OMA IM payload lands in the charging data record.
    let cdr = charging_payloads(&store).await.join("\n");
    assert!(cdr.contains("Service-Generic-Information"), "{cdr}");
    assert!(cdr.contains("INVITING"), "{cdr}");
    server.stop();
    store.drop_store().await;
}

/// --reauth-after: 20 s into the first grant the OCS sends a RAR; the IM server reports the
/// 20 s with FORCED_REAUTHORISATION and asks again, then talks on as usual.
async fn one_to_one_reauthorised(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let args = ["--reauth-after", "20s"];
    let run = im_sim(&store, &server.diameter.to_string(), "one-to-one", &args);
    // 90 s of talk: CCR-I reserves 60; the RAR at 20 s: CCR-U reports 20, reserves 60; the
    // next 60 used up: CCR-U reports 60, reserves 60; CCR-T reports the last 10.
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            ccr(2, 1, Some(60), Some(20)),
            ccr(2, 2, Some(60), Some(60)),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 3, None, Some(10))
            },
        ]
    );
    run.one_session();
    let reason = |m: &Message| {
        member(m, &[MULTIPLE_SERVICES_CREDIT_CONTROL, REPORTING_REASON])
            .and_then(|a| a.enumerated().ok())
    };
    assert_eq!(reason(&run.ccrs[1]), Some(7), "FORCED_REAUTHORISATION");
    assert_eq!(reason(&run.ccrs[2]), Some(3), "QUOTA_EXHAUSTED");
    assert!(
        run.stdout.contains("OCS → IM  Re-Auth-Request"),
        "{}",
        run.stdout
    );
    settled(&store, 1000 - 90).await;
    server.stop();
    store.drop_store().await;
}

/// --abort-after: 30 s into the session the OCS sends an ASR; the IM server ends the
/// session (BYE) and reports the 30 s in a CCR-T with DIAMETER_ADMINISTRATIVE.
async fn one_to_one_aborted(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let args = ["--abort-after", "30s"];
    let run = im_sim(&store, &server.diameter.to_string(), "one-to-one", &args);
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            Ccr {
                termination_cause: Some(4),
                ..ccr(3, 1, None, Some(30))
            },
        ]
    );
    assert!(
        run.stdout.contains("OCS → IM  Abort-Session-Request"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("BYE (the OCS aborted"),
        "{}",
        run.stdout
    );
    settled(&store, 1000 - 30).await;
    assert_eq!(open_reservations(&store).await, 0);
    server.stop();
    store.drop_store().await;
}

async fn one_to_one_insufficient_credit(backend: Backend) {
    let Some((store, server)) = setup(backend, "0.00").await else {
        return;
    };
    let run = im_sim(&store, &server.diameter.to_string(), "one-to-one", &[]);
    assert_eq!(run.sequence(), vec![ccr(1, 0, Some(60), None)]);
    assert!(run.stdout.contains("Result-Code 4012"), "{}", run.stdout);
    assert!(run.stdout.contains("402 Payment Required"));
    assert!(!run.stdout.contains("IM → sip:bob@example.com: INVITE"));
    let e = settled(&store, 0).await;
    assert!(e.is_empty(), "{e:?}");
    server.stop();
    store.drop_store().await;
}

async fn one_to_one_callee_rejects(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "one-to-one",
        &["--callee-rejects"],
    );
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            Ccr {
                termination_cause: Some(2),
                ..ccr(3, 1, None, Some(0))
            },
        ]
    );
    assert!(run.stdout.contains("486 Busy Here"));
    let e = settled(&store, 1000).await;
    assert_eq!(kinds(&e), ["topup", "pending", "post"]);
    assert_eq!(e[2].1, 0, "nothing charged for a rejected call");
    server.stop();
    store.drop_store().await;
}

async fn one_to_one_credit_exhausted(backend: Backend) {
    let Some((store, server)) = setup(backend, "0.70").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "one-to-one",
        &["--talk", "300s"],
    );
    // 60 s reserved of 70; the CCR-U's grant is the last 10 s with Final-Unit-Indication
    // TERMINATE; the IM server ends the call when they are used and reports them.
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            ccr(2, 1, Some(60), Some(60)),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 2, None, Some(10))
            },
        ]
    );
    assert!(
        run.stdout.contains("Final-Unit-Action Terminate"),
        "{}",
        run.stdout
    );
    settled(&store, 0).await;
    server.stop();
    store.drop_store().await;
}

async fn one_to_one_unknown_user(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "one-to-one",
        &["--user", "sip:nobody@example.com"],
    );
    assert_eq!(run.sequence(), vec![ccr(1, 0, Some(60), None)]);
    assert!(run.stdout.contains("Result-Code 5030"), "{}", run.stdout);
    assert!(run.stdout.contains("403 Forbidden"));
    settled(&store, 1000).await;
    server.stop();
    store.drop_store().await;
}

/// A server whose reservations expire 2 s after the last report (Validity-Time 1 s, Tcc =
/// 2 × Validity-Time) and whose sweeper looks every 100 ms.
fn short_tcc_server(store: &Store) -> Server {
    let cfg = store.dir.join("short-tcc.toml");
    std::fs::write(
        &cfg,
        "[credit_control]\nvalidity_time_s = 1\ntcc_factor = 2\n\n[ledger]\nsweep_interval_ms = 100\n",
    )
    .unwrap();
    Server::start(store, &["--config", cfg.to_str().unwrap()])
}

/// Waits (bounded) for the sweeper to release what a vanished IM server left reserved.
async fn wait_released(store: &Store) {
    for _ in 0..300 {
        if open_reservations(store).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the reservation was not released after Tcc");
}

/// The IM server vanishes after the reservation (docs/protocol.md, "Seed flows"): no stop or debit
/// ever comes, the OCS releases the reservation at Tcc without charging, and a late report is 5002
/// (RFC 4006 §7).
async fn vanishes(backend: Backend, scenario: &str, requested: u64) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let server = short_tcc_server(&store);
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        scenario,
        &["--vanish"],
    );
    assert_eq!(run.sequence(), vec![ccr(1, 0, Some(requested), None)]);
    wait_released(&store).await;
    let e = settled(&store, 1000).await;
    assert_eq!(kinds(&e), ["topup", "pending", "expire"]);
    let c = Client::connect(server.diameter, "im.localdomain").await;
    let sid = run.ccrs[0].session_id().unwrap().to_string();
    let late = c
        .ccr(&sid, 3, 1)
        .with(mscc(None, None, Some(Avp::from_u32(CC_TIME, 30)), Some(2)));
    assert_eq!(
        c.ask(late).await.result_code(),
        Some(ResultCode::UNKNOWN_SESSION_ID)
    );
    c.close().await;
    settled(&store, 1000).await;
    server.stop();
    store.drop_store().await;
}

async fn one_to_one_vanishes(backend: Backend) {
    vanishes(backend, "one-to-one", 60).await
}

async fn conference_vanishes(backend: Backend) {
    vanishes(backend, "conference", 60).await
}

async fn deferred_vanishes(backend: Backend) {
    vanishes(backend, "deferred", 5).await
}

async fn ocs_unreachable(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    // Nothing listens on the first address.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let run = im_sim(&store, &dead_addr, "one-to-one", &["--ccfh", "terminate"]);
    assert!(run.ccrs.is_empty());
    assert!(run.stdout.contains("no answer"), "{}", run.stdout);
    assert!(run.stdout.contains("500 Server Internal Error"));
    let run = im_sim(&store, &dead_addr, "one-to-one", &["--ccfh", "continue"]);
    assert!(
        run.stdout.contains("without credit control"),
        "{}",
        run.stdout
    );
    // With a second server, the session goes there (a new session may always move).
    let live = server.diameter.to_string();
    let run = im_sim(
        &store,
        &dead_addr,
        "one-to-one",
        &["--server", &live, "--talk", "30s"],
    );
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 1, None, Some(30))
            },
        ]
    );
    settled(&store, 1000 - 30).await;
    server.stop();
    store.drop_store().await;
}

// ---- Flow B: conference ------------------------------------------------------------------

async fn conference(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "conference",
        &["--invitees", "2", "--talk", "130s", "--callee-rejects"],
    );
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(60), None),
            ccr(2, 1, Some(60), Some(60)),
            ccr(2, 2, Some(60), Some(60)),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 3, None, Some(10))
            },
        ]
    );
    run.one_session();
    // The seed's order: 200 OK to the initiator before the charging request.
    let ok = run.stdout.find("IM → client: 200 OK").unwrap();
    let start = run.stdout.find("SessionRequest(start)").unwrap();
    assert!(ok < start);
    let asi = member(
        &run.ccrs[0],
        &[
            SERVICE_INFORMATION,
            IMS_INFORMATION,
            APPLICATION_SERVER_INFORMATION,
        ],
    )
    .unwrap();
    let invited: Vec<String> = asi
        .members()
        .unwrap()
        .iter()
        .filter(|a| a.is(APPLICATION_PROVIDED_CALLED_PARTY_ADDRESS))
        .map(|a| a.utf8().unwrap().to_string())
        .collect();
    assert_eq!(
        invited,
        ["sip:invitee1@example.com", "sip:invitee2@example.com"]
    );
    let e = settled(&store, 1000 - 130).await;
    assert_eq!(
        kinds(&e),
        ["topup", "pending", "post", "pending", "post", "pending", "post"]
    );
    server.stop();
    store.drop_store().await;
}

async fn conference_refused(backend: Backend) {
    let Some((store, server)) = setup(backend, "0.00").await else {
        return;
    };
    let run = im_sim(&store, &server.diameter.to_string(), "conference", &[]);
    assert_eq!(run.sequence(), vec![ccr(1, 0, Some(60), None)]);
    assert!(
        run.stdout.contains("BYE (Reason: insufficient credit)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("IM → invitees: INVITE"));
    settled(&store, 0).await;
    server.stop();
    store.drop_store().await;
}

// ---- Flow C: deferred message push -------------------------------------------------------

fn im_counter(m: &Message, code: AvpCode) -> Option<u32> {
    member(m, &[SERVICE_INFORMATION, IM_INFORMATION, code]).map(|a| a.u32().unwrap())
}

async fn deferred(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "deferred",
        &["--messages", "5", "--msrp-4xx", "1", "--msrp-timeouts", "1"],
    );
    // Reserve 5 at REGISTER; 3 of 5 SENDs get MSRP 200: one debit of 3.
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(5), None),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 1, None, Some(3))
            },
        ]
    );
    run.one_session();
    let (i, t) = (&run.ccrs[0], &run.ccrs[1]);
    assert_eq!(
        member(
            i,
            &[
                SERVICE_INFORMATION,
                SERVICE_GENERIC_INFORMATION,
                APPLICATION_SERVICE_TYPE
            ]
        )
        .unwrap()
        .enumerated()
        .unwrap(),
        102
    );
    assert_eq!(
        member(
            i,
            &[SERVICE_INFORMATION, IMS_INFORMATION, EVENT_TYPE, SIP_METHOD]
        )
        .unwrap()
        .utf8()
        .unwrap(),
        "REGISTER"
    );
    assert_eq!(im_counter(i, TOTAL_NUMBER_OF_MESSAGES_SENT), Some(5));
    assert_eq!(im_counter(t, TOTAL_NUMBER_OF_MESSAGES_SENT), Some(5));
    assert_eq!(im_counter(t, NUMBER_OF_MESSAGES_SUCCESSFULLY_SENT), Some(3));
    assert!(
        run.stdout.contains("Cost-Information 0.15 EUR"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Remaining-Balance 9.85 EUR"));
    let e = settled(&store, 1000 - 15).await;
    assert_eq!(kinds(&e), ["topup", "pending", "post"]);
    let cdr = charging_payloads(&store).await.join("\n");
    assert!(
        cdr.contains("Number-Of-Messages-Successfully-Sent"),
        "{cdr}"
    );
    server.stop();
    store.drop_store().await;
}

async fn deferred_insufficient_credit(backend: Backend) {
    let Some((store, server)) = setup(backend, "0.10").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "deferred",
        &["--messages", "5"],
    );
    // 0.10 EUR buys 2 messages at 0.05: the OCS grants 2 of 5, the IM server pushes 2.
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(5), None),
            Ccr {
                termination_cause: Some(1),
                ..ccr(3, 1, None, Some(2))
            },
        ]
    );
    assert!(run.stdout.contains("MSRP SEND × 2"), "{}", run.stdout);
    assert!(run.stdout.contains("3 stay stored"));
    settled(&store, 0).await;
    // With nothing left, the next push is refused outright: 4012, no debit.
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "deferred",
        &["--messages", "3"],
    );
    assert_eq!(run.sequence(), vec![ccr(1, 0, Some(3), None)]);
    assert!(run.stdout.contains("Result-Code 4012"), "{}", run.stdout);
    assert!(run.stdout.contains("no push"));
    settled(&store, 0).await;
    server.stop();
    store.drop_store().await;
}

async fn deferred_invite_fails(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(
        &store,
        &server.diameter.to_string(),
        "deferred",
        &["--callee-rejects"],
    );
    assert_eq!(
        run.sequence(),
        vec![
            ccr(1, 0, Some(5), None),
            Ccr {
                termination_cause: Some(2),
                ..ccr(3, 1, None, Some(0))
            },
        ]
    );
    assert_eq!(
        im_counter(&run.ccrs[1], NUMBER_OF_MESSAGES_SUCCESSFULLY_SENT),
        Some(0)
    );
    let e = settled(&store, 1000).await;
    assert_eq!(kinds(&e), ["topup", "pending", "post"]);
    server.stop();
    store.drop_store().await;
}

/// The debit retransmitted with the T flag (docs/protocol.md, "Deferred message push"): the stored
/// CCA comes back, nothing is debited twice.
async fn deferred_debit_retransmitted(backend: Backend) {
    let Some((store, server)) = setup(backend, "10.00").await else {
        return;
    };
    let run = im_sim(&store, &server.diameter.to_string(), "deferred", &[]);
    assert_eq!(run.sequence().len(), 2);
    let before = settled(&store, 1000 - 25).await;
    // Resend the very debit the client wrote, from a new connection of the same client host.
    let c = Client::connect(server.diameter, "im.localdomain").await;
    let mut again = run.ccrs[1].clone();
    again.header.flags = again.header.flags.with(Flags::RETRANSMITTED, true);
    let a = c.ask(again).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let cost = a.find(COST_INFORMATION).unwrap().clone();
    let digits = cost
        .member(UNIT_VALUE)
        .unwrap()
        .unwrap()
        .member(VALUE_DIGITS)
        .unwrap()
        .unwrap()
        .i64()
        .unwrap();
    assert_eq!(digits, 25);
    c.close().await;
    let after = settled(&store, 1000 - 25).await;
    assert_eq!(before, after, "a retransmitted debit wrote ledger entries");
    server.stop();
    store.drop_store().await;
}

tests_on_both_stores!(
    one_to_one,
    one_to_one_reauthorised,
    one_to_one_aborted,
    one_to_one_insufficient_credit,
    one_to_one_callee_rejects,
    one_to_one_credit_exhausted,
    one_to_one_unknown_user,
    one_to_one_vanishes,
    ocs_unreachable,
    conference,
    conference_refused,
    conference_vanishes,
    deferred,
    deferred_insufficient_credit,
    deferred_invite_fails,
    deferred_vanishes,
    deferred_debit_retransmitted,
);
