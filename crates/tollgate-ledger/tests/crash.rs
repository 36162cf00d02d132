//! Crash safety, on both stores: a child process doing ledger ops is SIGKILLed at random points
//! 10 times; every key it reported committed is present exactly once and `verify` passes.

mod common;

use common::TestDb;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tollgate_ledger::admin::{self, NewAccount, TariffSpec};
use tollgate_ledger::{LedgerConfig, SqlLedger};
use tollgate_ocs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_postgres() {
    let Some(tdb) = TestDb::postgres("sigkill_loses_nothing").await else {
        return;
    };
    sigkill_loses_nothing(tdb).await;
}

/// The embedded default: SQLite in WAL mode with synchronous=FULL, killed mid-batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_sqlite() {
    sigkill_loses_nothing(TestDb::sqlite()).await;
}

async fn sigkill_loses_nothing(tdb: TestDb) {
    let ledger = SqlLedger::connect(&tdb.url, LedgerConfig::default(), Arc::new(SystemClock))
        .await
        .expect("connect");
    let db = ledger.database().clone();
    let eur = Currency::parse("EUR").expect("eur");
    admin::set_tariff(
        &db,
        &TariffSpec {
            service: ServiceKey::context("32260@3gpp.org"),
            unit: UnitType::Seconds,
            currency: eur.clone(),
            price: "0.01".into(),
            quantum: Some(10),
            min_grant: Some(1),
            quota: Default::default(),
            final_unit: Default::default(),
        },
        SystemClock.now(),
    )
    .await
    .expect("tariff");
    for i in 0..4 {
        let a = NewAccount {
            id: format!("c{i}"),
            currency: eur.clone(),
            balance: Money(100_000_000),
            credit_limit: Money(0),
            subscriptions: vec![SubscriptionId::e164(format!("1555000{i:04}"))],
            allowances: vec![],
        };
        admin::create_account(&db, &a, SystemClock.now())
            .await
            .expect("account");
    }
    // Cheap deterministic "random" kill points (no rand dependency).
    let mut seed: u64 = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut reported: Vec<String> = Vec::new();
    for run in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_ms = 300 + seed % 900;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-crash-child"))
            .arg(&tdb.url)
            .arg(format!("run{run}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.is_empty() {
                    let _ = first_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // The kill lands while batches are committing: the timer starts at the child's first
        // reported commit (on a busy machine connecting and migrating can take a while).
        let _ = tokio::task::spawn_blocking(move || first_rx.recv_timeout(Duration::from_secs(60)))
            .await;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        child.wait().expect("reap");
        let lines = reader.join().expect("reader");
        reported.extend(
            lines
                .into_iter()
                .filter_map(|l| l.strip_prefix("committed ").map(str::to_string)),
        );
    }
    assert!(
        !reported.is_empty(),
        "the child committed something before being killed"
    );
    for k in &reported {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM journal WHERE request_key = $1 AND part = 0 \
                 AND outcome IS NOT NULL",
        )
        .bind(k)
        .fetch_one(&db.pool)
        .await
        .expect("count");
        assert_eq!(n, 1, "key {k} stored exactly once");
        let e: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM v_entries WHERE request_key = $1")
            .bind(k)
            .fetch_one(&db.pool)
            .await
            .expect("count");
        assert_eq!(e, 1, "key {k} has exactly one entry");
    }
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    println!(
        "crash test: {} committed keys reported over 10 kills",
        reported.len()
    );
    drop(ledger);
    db.pool.close().await;
    tdb.drop_db().await;
}
