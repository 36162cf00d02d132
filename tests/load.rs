//! `tollgate load` for a few seconds against a spawned server: its summary agrees with the
//! server's /metrics and with the ledger, and `ledger verify` passes.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::process::Command;

fn requests_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Closed loop (16 flows at a time) or open loop (`--rate`, CCR/s offered).
async fn load_agrees_with_server(backend: Backend, rate: Option<u64>) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    let server = Server::start(&store, &[]);
    let summary = store.dir.join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "load",
            "--server",
            &server.diameter.to_string(),
            "--flow",
            "mix",
            "--duration",
            "2s",
        ])
        .args(match rate {
            None => vec!["--concurrency".to_string(), "16".to_string()],
            Some(r) => vec!["--rate".to_string(), r.to_string()],
        })
        .args(["--subscribers", "20", "--provision", "--quiet"])
        .arg("--database-url")
        .arg(&store.url)
        .arg("--json")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let answered = s["answered"].as_u64().unwrap();
    assert!(answered > 0);
    if let Some(r) = rate {
        // 2 s at r CCR/s offered: every flow started is counted, not only those still running
        // when the duration ends.
        assert!(
            answered >= r,
            "{answered} CCRs answered at {r} CCR/s for 2 s: {s}"
        );
    }
    assert_eq!(s["answers"]["2001"].as_u64(), Some(answered), "{s}");
    assert_eq!(s["errors"].as_u64(), Some(0));
    for k in ["ccr_per_s", "p50_ms", "p99_ms"] {
        assert!(s[k].as_f64().is_some(), "{k} in {s}");
    }
    let (_, metrics) = server.http_get("/metrics");
    assert_eq!(
        requests_total(&metrics) as u64,
        answered,
        "server and client count the same CCRs"
    );
    server.stop();
    // Every flow finished: nothing stays reserved, and the money adds up.
    let accounts = store.cli(&["account", "list"]);
    assert!(accounts.status.success());
    store.verify();
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let mut db = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    let (open,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM v_open_reservations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(open, 0);
    db.close().await.ok();
    store.drop_store().await;
}

#[tokio::test]
async fn load_agrees_with_server_sqlite() {
    load_agrees_with_server(Backend::Sqlite, None).await
}

#[tokio::test]
async fn load_agrees_with_server_postgres() {
    load_agrees_with_server(Backend::Postgres, None).await
}

#[tokio::test]
async fn open_loop_load_agrees_with_server_sqlite() {
    load_agrees_with_server(Backend::Sqlite, Some(200)).await
}

#[tokio::test]
async fn open_loop_load_agrees_with_server_postgres() {
    load_agrees_with_server(Backend::Postgres, Some(200)).await
}
