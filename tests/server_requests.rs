//! The OCS speaks first: `tollgate session reauth` and `tollgate session abort` queue a
//! Re-Auth-Request or Abort-Session-Request in the ledger, and the running `tollgate serve`
//! sends it to the session's client, an independent stack (`tests/python/ro_reauth.py`,
//! python-diameter) over real TCP, which answers with its own handler:
//! - RAR → RAA 2001 → CCR-U (Reporting-Reason FORCED_REAUTHORISATION) → a new grant → CCR-T;
//! - ASR → ASA 2001 → CCR-T;
//! - RAR → RAA 5002 → the session's reservation is released at once, nothing charged.
//!
//! After each: the request's recorded state, the exact charges, nothing left reserved,
//! `ledger verify`, and the RAR/ASR bytes dissect cleanly in tshark. SQLite always;
//! PostgreSQL when `TOLLGATE_TEST_PG_URL` is set.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

const SCRIPT: &str = "tests/python/ro_reauth.py";
const OPENING: i64 = 1000;

struct Outcome {
    lines: Vec<serde_json::Value>,
    request_id: String,
}

/// Runs the script in `mode`; when it says "ready", runs the CLI `trigger` (with `{sid}`
/// replaced by the session's id), which must queue one request; returns the script's JSON
/// lines and that request's id.
fn run_client(
    store: &Store,
    server: &Server,
    mode: &str,
    trigger: &[&str],
    hex: &std::path::Path,
) -> Outcome {
    let host = format!("{mode}.client.test");
    let addr = server.diameter.to_string();
    let args = [addr.as_ref(), mode.as_ref(), host.as_ref(), hex.as_os_str()];
    let mut child = spawn_python(SCRIPT, &args);
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut lines = Vec::new();
    let mut request_id = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["step"] == "ready" {
            let sid = v["session_id"].as_str().unwrap().to_string();
            let args: Vec<String> = trigger.iter().map(|a| a.replace("{sid}", &sid)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = store.cli(&args);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "tollgate {args:?}: {err}");
            let queued: Vec<&str> = text.lines().filter(|l| l.starts_with("queued ")).collect();
            assert_eq!(queued.len(), 1, "tollgate {args:?} queued: {text}");
            request_id = queued[0].split_whitespace().last().unwrap().to_string();
        }
        lines.push(v);
    }
    let code = wait_timeout(&mut child, Duration::from_secs(60));
    let stderr = err.join().unwrap();
    assert_eq!(
        code,
        Some(0),
        "ro_reauth.py {mode} failed: {lines:?}\n{stderr}"
    );
    assert!(!request_id.is_empty(), "no ready line: {lines:?}");
    Outcome { lines, request_id }
}

fn step<'a>(o: &'a Outcome, name: &str) -> &'a serde_json::Value {
    o.lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {:?}", o.lines))
}

/// The request was answered 2001, and was queued for `reason`.
fn assert_answered(store: &Store, id: &str, reason: &str) {
    let r = request_state(store, id);
    assert_eq!(r["state"], "answered", "{r}");
    assert_eq!(r["result_code"], 2001, "{r}");
    assert_eq!(r["reason"], reason, "{r}");
}

fn request_state(store: &Store, id: &str) -> serde_json::Value {
    let out = store.cli(&["session", "requests", id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A provisioned store with `balance` for alice, and a server that polls the outbox often
/// (so the tests do not wait); None when python-diameter or the store is missing.
async fn start(backend: Backend, balance: &str) -> Option<(Store, Server)> {
    if !python_diameter_present() {
        return None;
    }
    start_server(backend, balance).await
}

async fn start_server(backend: Backend, balance: &str) -> Option<(Store, Server)> {
    let store = Store::new(backend).await?;
    provision(&store, balance);
    let config = store.dir.join("fast-requests.toml");
    std::fs::write(&config, "[credit_control]\nserver_request_poll_ms = 50\n").unwrap();
    let server = Server::start(&store, &["--config", config.to_str().unwrap()]);
    Some((store, server))
}

async fn run(backend: Backend) {
    let Some((store, server)) = start(backend, "10.00").await else {
        return;
    };
    let mut payloads = Vec::new();

    // RAR → RAA 2001 → CCR-U with FORCED_REAUTHORISATION (20 s) → new grant → CCR-T (10 s).
    let hex = store.dir.join("rar.hex");
    let reauth = ["session", "reauth", "--session-id", "{sid}"];
    let o = run_client(&store, &server, "reauth", &reauth, &hex);
    let rar = step(&o, "rar");
    assert_eq!(rar["command"], 258);
    assert_eq!(rar["re_auth_request_type"], 0);
    assert_eq!(rar["destination_host"], "reauth.client.test");
    assert_eq!(step(&o, "scur-u")["result_code"], 2001);
    assert_eq!(step(&o, "scur-t")["result_code"], 2001);
    assert_answered(&store, &o.request_id, "operator");
    let a = store.account("alice");
    assert_eq!(a["balance_minor"], OPENING - 30, "{a}");
    assert_eq!(a["reserved_minor"], 0, "{a}");
    payloads.extend(hex_lines(&hex));

    // ASR → ASA 2001 → CCR-T (20 s).
    let hex = store.dir.join("asr.hex");
    let abort = ["session", "abort", "--session-id", "{sid}"];
    let o = run_client(&store, &server, "abort", &abort, &hex);
    assert_eq!(step(&o, "asr")["command"], 274);
    assert_eq!(step(&o, "scur-t")["result_code"], 2001);
    assert_answered(&store, &o.request_id, "operator");
    let a = store.account("alice");
    assert_eq!(a["balance_minor"], OPENING - 30 - 20, "{a}");
    payloads.extend(hex_lines(&hex));

    // RAR → RAA 5002: the client has no such session; its 60 s reservation is released now,
    // not at Tcc, and nothing is charged.
    let hex = store.dir.join("rar-5002.hex");
    let o = run_client(&store, &server, "reauth-5002", &reauth, &hex);
    assert_eq!(step(&o, "raa")["result_code"], 5002);
    let mut released = serde_json::Value::Null;
    for _ in 0..100 {
        released = request_state(&store, &o.request_id);
        if released["state"] == "answered" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(released["result_code"], 5002, "{released}");
    assert_eq!(released["detail"], "released 1 reservations", "{released}");
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM v_open_reservations")
            .await,
        0
    );
    assert_eq!(
        store.scalar("SELECT COUNT(*) FROM v_open_sessions").await,
        0
    );
    let a = store.account("alice");
    assert_eq!(a["balance_minor"], OPENING - 50, "{a}");
    assert_eq!(a["reserved_minor"], 0, "{a}");
    payloads.extend(hex_lines(&hex));

    // Nothing open: the CLI says so, and queues nothing.
    let out = store.cli(&["session", "reauth", "--account", "alice"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("account alice has no open session"), "{err}");

    store.verify();
    server.stop();
    assert_eq!(payloads.len(), 3);
    if let Some(dissection) = tshark_server_messages(&payloads, &store.dir.join("requests.pcap")) {
        for name in ["Re-Auth", "Abort-Session"] {
            assert!(
                dissection.contains(name),
                "tshark did not see a {name} request:\n{dissection}"
            );
        }
    }
    store.drop_store().await;
}

/// The ledger's own reasons: a top-up after a final grant (RAR), blocking the account (ASR),
/// a new price for the session's service (RAR).
async fn run_triggers(backend: Backend) {
    // 0.30 EUR at 0.01 EUR/s: the CCR-I's 60 s request gets a final grant of 30 s.
    let Some((store, server)) = start(backend, "0.30").await else {
        return;
    };

    // Top-up after the final grant → RAR → CCR-U (20 s) gets a full new grant → CCR-T (10 s).
    let topup = ["account", "topup", "--id", "alice", "--amount", "10.00"];
    let o = run_client(&store, &server, "reauth", &topup, &store.dir.join("t1.hex"));
    assert_eq!(
        step(&o, "scur-i")["mscc"][0]["granted"]["cc_time"],
        30,
        "{:?}",
        o.lines
    );
    assert_eq!(
        step(&o, "scur-u")["mscc"][0]["granted"]["cc_time"],
        60,
        "{:?}",
        o.lines
    );
    assert_answered(&store, &o.request_id, "topup");
    assert_eq!(store.account("alice")["balance_minor"], 30 + 1000 - 30);

    // Block → ASR → CCR-T (20 s): the usage is still charged; then unblock, nothing open.
    let block = ["account", "block", "--id", "alice"];
    let o = run_client(&store, &server, "abort", &block, &store.dir.join("t2.hex"));
    assert_eq!(step(&o, "scur-t")["result_code"], 2001);
    assert_answered(&store, &o.request_id, "blocked");
    assert_eq!(store.account("alice")["balance_minor"], 1000 - 20);
    let out = store.cli(&["account", "unblock", "--id", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("queued"), "{text}");

    // A new price for the service → RAR; the 20 s used so far are charged at the price they
    // were granted at (0.01), the rest at the new one (0.02).
    let new_price = Tariff::new("32260@3gpp.org", "seconds", "0.02")
        .quantum(60)
        .min_grant(1)
        .args(&[]);
    let tariff: Vec<&str> = new_price.iter().map(String::as_str).collect();
    let o = run_client(
        &store,
        &server,
        "reauth",
        &tariff,
        &store.dir.join("t3.hex"),
    );
    assert_answered(&store, &o.request_id, "tariff");
    assert_eq!(store.account("alice")["balance_minor"], 980 - 20 - 20);
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM v_open_reservations")
            .await,
        0
    );
    store.verify();
    server.stop();
    store.drop_store().await;
}

/// The IM server's side: Tollgate's own CH-2 client receives the RAR and the ASR, answers
/// them, and hands them to the IM server, which reports usage and asks again (interim,
/// FORCED_REAUTHORISATION), then ends the session (stop).
async fn run_ch2(backend: Backend) {
    use tollgate_cc::ch2::{
        Ch2Client, Ch2ClientConfig, Ch2Profile, Ch2Units, OcsRequestKind, Outcome, ReportingReason,
        SessionRequest, TerminationCause,
    };
    let Some((store, server)) = start_server(backend, "10.00").await else {
        return;
    };
    let cfg = Ch2ClientConfig::new(
        Ch2Profile::new("im.test", "test", "test"),
        vec![server.diameter],
    );
    let client = Ch2Client::start(cfg).unwrap();
    assert!(client.wait_open(Duration::from_secs(10)).await);
    let mut from_ocs = client.ocs_requests().unwrap();
    let alice: tollgate_ocs::SubscriptionId = "sip:alice@example.com".parse().unwrap();
    let r = client
        .session(&SessionRequest::start(
            "call-1",
            alice,
            Ch2Units::Seconds(60),
        ))
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Granted, "{r:?}");
    let queued = |action: &str| {
        let out = store.cli(&["session", action, "--account", "alice"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().last().unwrap().to_string()
    };

    let id = queued("reauth");
    let req = next_request(&mut from_ocs).await;
    assert_eq!(
        (req.kind, req.correlation_id.as_str()),
        (OcsRequestKind::Reauthorise, "call-1")
    );
    let mut interim =
        SessionRequest::interim("call-1", Ch2Units::Seconds(20), Some(Ch2Units::Seconds(60)));
    interim.reporting_reason = Some(ReportingReason::ForcedReauthorisation);
    let r = client.session(&interim).await.unwrap();
    assert_eq!(
        (r.outcome, r.granted),
        (Outcome::Granted, Some(Ch2Units::Seconds(60))),
        "{r:?}"
    );
    assert_answered(&store, &id, "operator");

    let id = queued("abort");
    let req = next_request(&mut from_ocs).await;
    assert_eq!(
        (req.kind, req.correlation_id.as_str()),
        (OcsRequestKind::Abort, "call-1")
    );
    let stop = SessionRequest::stop("call-1", Ch2Units::Seconds(10), TerminationCause::Logout);
    let r = client.session(&stop).await.unwrap();
    assert_eq!(r.result_code, Some(2001), "{r:?}");
    assert_answered(&store, &id, "operator");

    assert_eq!(store.account("alice")["balance_minor"], OPENING - 30);
    assert_eq!(
        store.scalar("SELECT COUNT(*) FROM v_open_sessions").await,
        0
    );
    client.close().await;
    store.verify();
    server.stop();
    store.drop_store().await;
}

/// Two nodes on one PostgreSQL: the client is connected to node A only, and node B polls the
/// same outbox. The RAR queued for the client's session is sent by A (docs/several-nodes.md,
/// "Requests the OCS sends first"), whichever node the operator is near.
async fn run_two_nodes() {
    let Some((store, a)) = start(Backend::Postgres, "10.00").await else {
        return;
    };
    let config = store.dir.join("fast-requests.toml");
    let b = Server::start(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "--origin-host",
            "ocs-b.test",
        ],
    );
    let reauth = ["session", "reauth", "--session-id", "{sid}"];
    let o = run_client(&store, &a, "reauth", &reauth, &store.dir.join("two.hex"));
    assert_eq!(step(&o, "scur-u")["result_code"], 2001);
    assert_answered(&store, &o.request_id, "operator");
    let r = request_state(&store, &o.request_id);
    let by = r["claimed_by"].as_str().unwrap_or_default();
    assert!(
        by.starts_with("ocs.test#"),
        "sent by {by}, not by node A: {r}"
    );
    assert_eq!(r["attempts"], 1, "{r}");
    store.verify();
    a.stop();
    b.stop();
    store.drop_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_with_the_client_sends_the_rar_on_postgres() {
    run_two_nodes().await;
}

async fn next_request(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tollgate_cc::ch2::OcsRequest>,
) -> tollgate_cc::ch2::OcsRequest {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no request from the OCS within 10 s")
        .expect("the CH-2 client is gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ch2_client_hands_rar_and_asr_to_the_im_server_on_sqlite() {
    run_ch2(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ch2_client_hands_rar_and_asr_to_the_im_server_on_postgres() {
    run_ch2(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_asks_after_a_topup_a_block_and_a_new_price_on_sqlite() {
    run_triggers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_asks_after_a_topup_a_block_and_a_new_price_on_postgres() {
    run_triggers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rar_and_asr_reach_an_independent_client_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rar_and_asr_reach_an_independent_client_on_postgres() {
    run(Backend::Postgres).await;
}
