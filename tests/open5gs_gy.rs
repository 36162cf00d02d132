//! Open5GS's SMF on Gy: `tests/python/gy_open5gs.py` sends the CCR-I, CCR-U and CCR-T of one
//! data session, built AVP for AVP and flag for flag as Open5GS's `src/smf/gy-path.c` builds
//! them (Service-Context-Id 32251@3gpp.org, an MSCC without Rating-Group that carries
//! QoS-Information, PS-Information full of TS 29.061 3GPP-* AVPs, IMSI before MSISDN), encoded
//! by python-diameter over TCP to the spawned `tollgate serve`. Each request must get 2001,
//! the CCR-I and CCR-U a grant of the octets asked for in the MSCC; afterwards the ledger must
//! hold exactly the octet tariff's charge for the input + output octets reported, nothing
//! reserved, `ledger verify` clean; and every CCA must dissect in tshark with no malformed
//! frame and no expert error or warning. SQLite always; PostgreSQL when
//! `TOLLGATE_TEST_PG_URL` is set.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::time::Duration;

const SCRIPT: &str = "tests/python/gy_open5gs.py";

/// The whole script, including its own 30 s per-answer timeouts, must finish within this.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// TS 32.299 §7.1.12: the Service-Context-Id of PS (TS 32.251) charging, sent by Open5GS.
const SERVICE_CONTEXT: &str = "32251@3gpp.org";
/// The subscriber of the script: Open5GS names it by IMSI first, then by MSISDN.
const IMSI: &str = "001011234567895";
const MSISDN: &str = "15550000042";

/// What Open5GS asks for in every Requested-Service-Unit (CC-Total-Octets).
const REQUESTED_OCTETS: u64 = 1_000_000;
/// Input + output octets the script reports: CCR-U 400 000 + 600 000, CCR-T 50 000 + 180 000.
const USED_OCTETS: i64 = 1_000_000 + 230_000;
/// 0.000001 EUR per octet: one cent per 10 000 octets; both reports are whole cents.
const PRICE_PER_OCTET: &str = "0.000001";
const OCTETS_PER_CENT: i64 = 10_000;
const OPENING_MINOR: i64 = 1000;
const CHARGE_MINOR: i64 = USED_OCTETS / OCTETS_PER_CENT;

/// CCAs the script receives: CCR-I, CCR-U, CCR-T.
const CCAS: usize = 3;

/// The SMF's subscriber (EUR 10.00) and an octet tariff on the PS context with no
/// Rating-Group, since Open5GS sends none. The quantum equals Open5GS's fixed request, so the
/// grant is the same for SMFs that still send an empty Requested-Service-Unit.
fn provision_smf_subscriber(store: &Store) {
    let imsi = format!("imsi:{IMSI}");
    let e164 = format!("e164:{MSISDN}");
    store.create_account("smf-ue", "10.00", &[&imsi, &e164]);
    store.set_tariff(
        &Tariff::new(SERVICE_CONTEXT, "octets", PRICE_PER_OCTET)
            .quantum(REQUESTED_OCTETS)
            .min_grant(1),
    );
}

async fn run(backend: Backend) {
    if !python_diameter_present() {
        return;
    }
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision_smf_subscriber(&store);
    let server = Server::start(&store, &[]);
    let cca_file = store.dir.join("open5gs-ccas.hex");

    let run = run_python(
        SCRIPT,
        &[server.diameter.to_string().as_ref(), cca_file.as_os_str()],
        SCRIPT_LIMIT,
    );
    println!("[{backend:?}] gy_open5gs.py stdout:\n{}", run.stdout);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let step = |name: &str| {
        lines.iter().find(|l| l["step"] == name).unwrap_or_else(|| {
            panic!(
                "no {name} answer (script exit {:?}):\nstdout:\n{}\nstderr:\n{}",
                run.code, run.stdout, run.stderr
            )
        })
    };
    // The answers first, so a refusal shows its Result-Code, Failed-AVP and Error-Message.
    for name in ["cer", "ccr-i", "ccr-u", "ccr-t", "dpr"] {
        assert_eq!(
            step(name)["result_code"],
            2001,
            "{name}: {}\nstderr:\n{}",
            step(name),
            run.stderr
        );
    }
    for name in ["ccr-i", "ccr-u"] {
        let mscc = &step(name)["mscc"];
        assert_eq!(mscc.as_array().map(Vec::len), Some(1), "{name}: {mscc}");
        assert_eq!(mscc[0]["result_code"], 2001, "{name}: {mscc}");
        assert_eq!(
            mscc[0]["granted"]["cc_total_octets"], REQUESTED_OCTETS,
            "{name}: the grant of the octets Open5GS asked for: {mscc}"
        );
    }
    assert_eq!(
        run.code,
        Some(0),
        "gy_open5gs.py failed (None = killed after {SCRIPT_LIMIT:?}):\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let summary = step("summary");
    assert_eq!(summary["ccas"], CCAS);
    assert_eq!(
        summary["used_octets"], USED_OCTETS,
        "the script and this test disagree on the usage"
    );
    let session = sql_quoted(summary["session_id"].as_str().unwrap());

    // The ledger: the octets used, at the tariff's price, nothing more and nothing reserved.
    let expected = OPENING_MINOR - CHARGE_MINOR;
    let a = store.account("smf-ue");
    assert_eq!(
        a["balance_minor"], expected,
        "balance after the session: {a}"
    );
    assert_eq!(a["balance"], "8.77", "{a}");
    assert_eq!(a["reserved_minor"], 0, "an open reservation is left: {a}");
    assert_eq!(a["available_minor"], expected, "{a}");
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM v_open_reservations")
            .await,
        0
    );
    let net = format!(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM v_entries WHERE session_ref = {session}"
    );
    let posts =
        format!("SELECT COUNT(*) FROM v_entries WHERE session_ref = {session} AND kind = 'post'");
    let records = format!("SELECT COUNT(*) FROM v_charging_records WHERE session_ref = {session}");
    assert_eq!(
        store.scalar(&net).await,
        -CHARGE_MINOR,
        "the session's net charge"
    );
    assert_eq!(store.scalar(&posts).await, 2, "one post per usage report");
    assert_eq!(store.scalar(&records).await, 1, "one charging data record");
    store.verify();
    server.stop();

    // Every CCA dissects cleanly in Wireshark.
    let ccas = hex_lines(&cca_file);
    assert_eq!(ccas.len(), CCAS, "CCAs written to {}", cca_file.display());
    if let Some(text) = tshark_server_messages(&ccas, &cca_file.with_extension("pcap")) {
        assert_eq!(text.matches("Credit-Control (272)").count(), CCAS, "{text}");
        println!("[{backend:?}] tshark: {CCAS} CCAs dissected cleanly");
    }
    store.drop_store().await;
}

#[tokio::test]
async fn sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres() {
    run(Backend::Postgres).await;
}
