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
use sqlx::{Connection, Row};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
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

fn python_diameter_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import diameter"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct ScriptRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `python3 tests/python/ro_client.py ADDR CCA_FILE`, killed after `SCRIPT_LIMIT`.
fn run_script(addr: SocketAddr, cca_file: &Path) -> ScriptRun {
    let mut child = Command::new("python3")
        .arg(repo_root().join(SCRIPT))
        .arg(addr.to_string())
        .arg(cca_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let code = wait_timeout(&mut child, SCRIPT_LIMIT);
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    ScriptRun {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// One integer from the store with the auditors' SQL views (same SQL on both backends).
async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let v: i64 = sqlx::query(sql).fetch_one(&mut c).await.unwrap().get(0);
    c.close().await.ok();
    v
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn run(backend: Backend) {
    if !python_diameter_installed() {
        println!("skipped: python-diameter not installed (scripts/test installs it with pip)");
        return;
    }
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let cca_file = store.dir.join("ccas.hex");

    let run = run_script(server.diameter, &cca_file);
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
        scalar(&store, "SELECT COUNT(*) FROM v_open_reservations").await,
        0
    );
    // The ECUR CCR-T was sent three times and posted once.
    let ecur = quoted(&ecur);
    let posts =
        format!("SELECT COUNT(*) FROM v_entries WHERE session_ref = {ecur} AND kind = 'post'");
    let net = format!(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM v_entries WHERE session_ref = {ecur}"
    );
    let records = format!("SELECT COUNT(*) FROM v_charging_records WHERE session_ref = {ecur}");
    let debits = "SELECT COUNT(*) FROM v_entries WHERE kind = 'direct_debit'";
    assert_eq!(
        scalar(&store, &posts).await,
        1,
        "the repeated ECUR CCR-T posted again"
    );
    assert_eq!(scalar(&store, &net).await, -ECUR_CHARGE, "ECUR net charge");
    assert_eq!(
        scalar(&store, &records).await,
        1,
        "a second charging record for ECUR"
    );
    // One IEC debit; the unknown subscriber's event debits nothing.
    assert_eq!(scalar(&store, debits).await, 1, "direct debits");
    store.verify();
    server.stop();

    tshark_check(&cca_file, backend);
    store.drop_store().await;
}

/// Every CCA dissects in tshark: one "Diameter Protocol" per CCA, nothing malformed, no expert
/// error or warning.
fn tshark_check(cca_file: &Path, backend: Backend) {
    let payloads: Vec<Vec<u8>> = std::fs::read_to_string(cca_file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| hex::decode(l.trim()).unwrap())
        .collect();
    assert_eq!(
        payloads.len(),
        CCAS,
        "CCAs written to {}",
        cca_file.display()
    );
    if Command::new("tshark").arg("--version").output().is_err() {
        println!(
            "skipped tshark check: tshark is not installed (scripts/test installs it with apt-get)"
        );
        return;
    }
    let path = cca_file.with_extension("pcap");
    std::fs::write(&path, pcap(&payloads)).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args(["-V", "-d", "tcp.port==3868,diameter", "-Y", "diameter"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("Diameter Protocol").count(),
        payloads.len(),
        "every CCA is dissected as Diameter:\n{text}"
    );
    assert!(!text.contains("Malformed"), "malformed frame:\n{text}");
    for line in text.lines().filter(|l| l.contains("Expert Info")) {
        assert!(
            !line.contains("Error") && !line.contains("Warning"),
            "expert info: {line}\n{text}"
        );
    }
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

/// A pcap (libpcap, Ethernet) carrying `payloads` as consecutive segments of one TCP
/// connection from the server 127.0.0.1:3868 to the client 127.0.0.1:40000 (after
/// crates/tollgate-codec/tests/tshark.rs, which writes the other direction).
fn pcap(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    let mut seq: u32 = 1;
    for (i, p) in payloads.iter().enumerate() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = u16::try_from(20 + 20 + p.len()).unwrap();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&3868u16.to_be_bytes());
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // ACK|PSH, no checksum
        frame.extend_from_slice(p);
        seq = seq.wrapping_add(u32::try_from(p.len()).unwrap());
        let len = u32::try_from(frame.len()).unwrap();
        out.extend_from_slice(&(1_700_000_000u32 + u32::try_from(i).unwrap()).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !u16::try_from(s).unwrap()
}

#[tokio::test]
async fn sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres() {
    run(Backend::Postgres).await;
}
