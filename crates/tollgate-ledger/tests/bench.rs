//! Benchmark (ignored by default; prints numbers, asserts nothing about time):
//! reserve+commit pairs per second on PostgreSQL through the group-commit path and through the
//! naive one-transaction-per-operation path, median of 3 runs each. Each pair is two ledger
//! operations (reserve, final commit), so operations per second are printed as 2 × pairs/s.
//!
//! `TOLLGATE_TEST_PG_URL=$(scripts/start-postgres) cargo test -p tollgate-ledger --test bench -- --ignored --nocapture`

mod common;

use common::TestDb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_ledger::admin::{self, NewAccount, TariffSpec};
use tollgate_ledger::{BatchConfig, Database, LedgerConfig, PoolConfig, SqlLedger};
use tollgate_ocs::*;

const CALLERS: u32 = 128;
const SECONDS: u64 = 4;

async fn run(db: &Database, naive: bool, run: u32) -> f64 {
    let cfg = LedgerConfig {
        pool: PoolConfig {
            max_connections: 16,
            ..PoolConfig::default()
        },
        batch: BatchConfig {
            // TOLLGATE_BENCH_WORKERS tries other shardings (batch size ≈ callers / workers).
            workers: workers(),
            ..BatchConfig::default()
        },
        naive_one_tx_per_op: naive,
        expire_chunk: 0,
    };
    let ledger = SqlLedger::new(db.clone(), cfg, Arc::new(SystemClock));
    let pairs = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
        let pairs = pairs.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                let session = format!("{}-{run}-{c}-{n}", if naive { "naive" } else { "group" });
                n += 1;
                let svc = ServiceKey::context("32260@3gpp.org");
                let exp = SystemClock.now().plus_seconds(600);
                let r = ReserveRequest {
                    key: RequestKey::new("bench", &session, 0),
                    subscriber: SubscriptionId::e164(format!("1555{:07}", (c * 31 + n) % 100)),
                    service: svc.clone(),
                    unit: UnitType::Seconds,
                    requested_units: Some(60),
                    session_ref: session.clone(),
                    expires_at: exp,
                    tcc: None,
                };
                l.reserve(r).await.expect("reserve");
                let cm = CommitRequest {
                    key: RequestKey::new("bench", &session, 1),
                    session_ref: session,
                    service: svc,
                    used: UsedUnits::of(UnitType::Seconds, 42),
                    next: None,
                    final_commit: true,
                    cdr: None,
                };
                l.commit(cm).await.expect("commit");
                pairs.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.expect("task");
    }
    pairs.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Batch workers: the default, or TOLLGATE_BENCH_WORKERS to try other shardings (a batch
/// holds about callers / workers ops).
fn workers() -> usize {
    std::env::var("TOLLGATE_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(BatchConfig::default().workers)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn bench_group_commit_vs_naive() {
    let Some(tdb) = TestDb::postgres("bench_group_commit_vs_naive").await else {
        return;
    };
    let db = Database::connect(
        &tdb.url,
        &PoolConfig {
            max_connections: 16,
            ..PoolConfig::default()
        },
    )
    .await
    .expect("connect");
    db.migrate().await.expect("migrate");
    let eur = Currency::parse("EUR").expect("eur");
    admin::set_tariff(
        &db,
        &TariffSpec {
            service: ServiceKey::context("32260@3gpp.org"),
            unit: UnitType::Seconds,
            currency: eur.clone(),
            price: "0.01".into(),
            quantum: Some(60),
            min_grant: Some(1),
            quota: Default::default(),
            final_unit: Default::default(),
        },
        SystemClock.now(),
    )
    .await
    .expect("tariff");
    for i in 0..100 {
        let a = NewAccount {
            id: format!("b{i:03}"),
            currency: eur.clone(),
            balance: Money(1_000_000_000),
            credit_limit: Money(0),
            subscriptions: vec![SubscriptionId::e164(format!("1555{i:07}"))],
            allowances: vec![],
        };
        admin::create_account(&db, &a, SystemClock.now())
            .await
            .expect("account");
    }
    let mut group = Vec::new();
    let mut naive = Vec::new();
    for r in 0..3 {
        group.push(run(&db, false, r).await);
        naive.push(run(&db, true, r).await);
        let (g, n) = (group[r as usize], naive[r as usize]);
        println!(
            "run {r}: group commit {g:.0} pairs/s ({:.0} ops/s), naive {n:.0} pairs/s ({:.0} ops/s)",
            2.0 * g,
            2.0 * n
        );
    }
    let (g, n) = (median(group), median(naive));
    println!(
        "BENCH callers={CALLERS} seconds={SECONDS} workers={}: group commit median {g:.0} pairs/s = {:.0} ops/s; naive one-tx-per-op median {n:.0} pairs/s = {:.0} ops/s; ratio {:.1}x",
        workers(),
        2.0 * g,
        2.0 * n,
        g / n
    );
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    db.pool.close().await;
    tdb.drop_db().await;
}
