//! An independent client: `tests/python/ro_client.py` drives the spawned `tollgate serve` over
//! TCP with messages encoded and decoded by python-diameter (PyPI), not by Tollgate's codec —
//! CER/CEA, SCUR (CCR-I/U/T), ECUR (CCR-I/T), IEC and CHECK_BALANCE events, an unknown
//! subscriber, the ECUR CCR-T sent again (retransmission and replay), DPR/DPA. Afterwards the
//! ledger must hold exactly the tariff's charges (no second charge for the repeated CCR-T, no
//! open reservation, `ledger verify` clean), and every CCA the script received must dissect in
//! tshark with no malformed frame and no expert error or warning. SQLite always; PostgreSQL
//! when `TOLLGATE_TEST_PG_URL` is set.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const SCRIPT: &str = "tests/python/ro_client.py";

/// CCAs the script receives: SCUR 3, ECUR 2, IEC 1, CHECK_BALANCE 1, unknown subscriber 1,
/// the repeated ECUR CCR-T 2.
const CCAS: usize = 10;

/// The whole script, including its own 30 s per-answer timeouts, must finish within this.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

/// Charges in euro cents under the tariffs of `provision` (0.01 EUR/s, 0.05 EUR/unit).
const SCUR_CHARGE: i64 = 42 + 30; // CCR-U 42 s + CCR-T 30 s
const ECUR_CHARGE: i64 = 3 * 5; // 3 units used of 5 reserved
const IEC_CHARGE: i64 = 2 * 5; // 2 units debited
const OPENING: i64 = 1000;

async fn run(backend: Backend) {
    if !python_diameter_present() {
        return;
    }
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let cca_file = store.dir.join("ccas.hex");

    let run = run_python(
        SCRIPT,
        &[server.diameter.to_string().as_ref(), cca_file.as_os_str()],
        SCRIPT_LIMIT,
    );
    println!("[{backend:?}] ro_client.py stdout:\n{}", run.stdout);
    assert_eq!(
        run.code,
        Some(0),
        "ro_client.py failed (None = killed after {SCRIPT_LIMIT:?}):\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let step = |name: &str| {
        lines
            .iter()
            .find(|l| l["step"] == name)
            .unwrap_or_else(|| panic!("no {name} line in\n{}", run.stdout))
    };
    // The script checks these itself; checking again here keeps the contract visible.
    for (name, code) in [
        ("cer", 2001),
        ("scur-i", 2001),
        ("scur-u", 2001),
        ("scur-t", 2001),
        ("ecur-i", 2001),
        ("ecur-t", 2001),
        ("iec", 2001),
        ("check-balance", 2001),
        ("unknown-user", 5030),
        ("ecur-t-retx", 2001),
        ("ecur-t-replay", 2001),
        ("dpr", 2001),
    ] {
        assert_eq!(step(name)["result_code"], code, "{name}");
    }
    assert_eq!(step("check-balance")["check_balance_result"], 0);
    let summary = step("summary");
    assert_eq!(summary["ccas"], CCAS);
    let ecur = summary["ecur_session_id"].as_str().unwrap().to_string();

    // The ledger: exactly the tariff's charges, nothing reserved.
    let expected = OPENING - SCUR_CHARGE - ECUR_CHARGE - IEC_CHARGE;
    let a = store.account("alice");
    assert_eq!(a["balance_minor"], expected, "balance after the flows: {a}");
    assert_eq!(a["balance"], "9.03", "{a}");
    assert_eq!(a["reserved_minor"], 0, "an open reservation is left: {a}");
    assert_eq!(a["available_minor"], expected, "{a}");
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM v_open_reservations")
            .await,
        0
    );
    // The ECUR CCR-T was sent three times and posted once.
    let ecur = sql_quoted(&ecur);
    let posts =
        format!("SELECT COUNT(*) FROM v_entries WHERE session_ref = {ecur} AND kind = 'post'");
    let net = format!(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM v_entries WHERE session_ref = {ecur}"
    );
    let records = format!("SELECT COUNT(*) FROM v_charging_records WHERE session_ref = {ecur}");
    let debits = "SELECT COUNT(*) FROM v_entries WHERE kind = 'direct_debit'";
    assert_eq!(
        store.scalar(&posts).await,
        1,
        "the repeated ECUR CCR-T posted again"
    );
    assert_eq!(store.scalar(&net).await, -ECUR_CHARGE, "ECUR net charge");
    assert_eq!(
        store.scalar(&records).await,
        1,
        "a second charging record for ECUR"
    );
    // One IEC debit; the unknown subscriber's event debits nothing.
    assert_eq!(store.scalar(debits).await, 1, "direct debits");
    store.verify();
    server.stop();

    tshark_check(&cca_file, backend);
    store.drop_store().await;
}

/// Every CCA dissects in tshark: one "Diameter Protocol" per CCA, nothing malformed, no expert
/// error or warning (common::tshark_server_messages), each a Credit-Control answer.
fn tshark_check(cca_file: &Path, backend: Backend) {
    let payloads = hex_lines(cca_file);
    assert_eq!(
        payloads.len(),
        CCAS,
        "CCAs written to {}",
        cca_file.display()
    );
    let Some(text) = tshark_server_messages(&payloads, &cca_file.with_extension("pcap")) else {
        return;
    };
    assert_eq!(
        text.matches("Credit-Control (272)").count(),
        payloads.len(),
        "{text}"
    );
    println!(
        "[{backend:?}] tshark: {} CCAs dissected cleanly",
        payloads.len()
    );
}

#[tokio::test]
async fn sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres() {
    run(Backend::Postgres).await;
}
