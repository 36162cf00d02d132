//! Two ledger instances (two pools, two batchers) on one database, 32 tasks each, reserving
//! and committing against the same 10 accounts; on PostgreSQL and on SQLite.

mod common;

use common::TestDb;
use sqlx::Row;
use std::sync::Arc;
use tollgate_ledger::admin::{self, NewAccount, TariffSpec};
use tollgate_ledger::{LedgerConfig, SqlLedger};
use tollgate_ocs::*;

const CTX: &str = "32260@3gpp.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_keep_money_exact_postgres() {
    let Some(tdb) = TestDb::postgres("two_nodes_keep_money_exact").await else {
        return;
    };
    two_nodes_keep_money_exact(tdb).await;
}

/// Two processes' worth of pools on one SQLite file: `BEGIN IMMEDIATE` serializes their
/// batches, and each batch reads only after taking the write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_keep_money_exact_sqlite() {
    two_nodes_keep_money_exact(TestDb::sqlite()).await;
}

async fn two_nodes_keep_money_exact(tdb: TestDb) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let a = SqlLedger::connect(&tdb.url, LedgerConfig::default(), clock.clone())
        .await
        .expect("node a");
    let b = SqlLedger::connect(&tdb.url, LedgerConfig::default(), clock.clone())
        .await
        .expect("node b");
    let db = a.database().clone();
    let eur = Currency::parse("EUR").expect("eur");
    admin::set_tariff(
        &db,
        &TariffSpec {
            service: ServiceKey::context(CTX),
            unit: UnitType::Seconds,
            currency: eur.clone(),
            price: "0.01".into(),
            quantum: Some(60),
            min_grant: Some(1),
            quota: Default::default(),
            final_unit: Default::default(),
        },
        clock.now(),
    )
    .await
    .expect("tariff");
    for i in 0..10 {
        // Small balances so credit runs out and refusals and capped posts happen.
        let acc = NewAccount {
            id: format!("acc{i}"),
            currency: eur.clone(),
            balance: Money(2000 + 100 * i),
            credit_limit: Money(if i % 2 == 0 { 0 } else { 500 }),
            subscriptions: vec![SubscriptionId::e164(format!("1555000{i:04}"))],
            allowances: vec![],
        };
        admin::create_account(&db, &acc, clock.now())
            .await
            .expect("account");
    }
    let mut tasks = Vec::new();
    for (node, ledger) in [("a", a.clone()), ("b", b.clone())] {
        for t in 0..32u32 {
            let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..12u32 {
                    let session = format!("{node}-{t}-{n}");
                    let msisdn = format!("1555000{:04}", (t + n) % 10);
                    let exp = SystemClock.now().plus_seconds(600);
                    let r = l
                        .reserve(ReserveRequest {
                            key: RequestKey::new(node, &session, 0),
                            subscriber: SubscriptionId::e164(&msisdn),
                            service: ServiceKey::context(CTX),
                            unit: UnitType::Seconds,
                            requested_units: Some(60),
                            session_ref: session.clone(),
                            expires_at: exp,
                            tcc: None,
                        })
                        .await
                        .expect("reserve");
                    if let ReserveOutcome::Granted(_) = r {
                        let used = u64::from((t * 7 + n * 13) % 90);
                        let c = CommitRequest {
                            key: RequestKey::new(node, &session, 1),
                            session_ref: session.clone(),
                            service: ServiceKey::context(CTX),
                            used: UsedUnits::of(UnitType::Seconds, used),
                            next: Some(NextReservation {
                                requested_units: Some(30),
                                expires_at: exp,
                                tcc: None,
                            }),
                            final_commit: false,
                            cdr: None,
                        };
                        l.commit(c).await.expect("commit");
                        let c = CommitRequest {
                            key: RequestKey::new(node, &session, 2),
                            session_ref: session.clone(),
                            service: ServiceKey::context(CTX),
                            used: UsedUnits::of(UnitType::Seconds, used / 2),
                            next: None,
                            final_commit: true,
                            cdr: None,
                        };
                        l.commit(c).await.expect("final");
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Σ non-topup entries = balance change; nobody below the credit limit; verify passes.
    let rows = sqlx::query("SELECT a.id, a.balance, a.reserved, a.credit_limit, \
            (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM v_entries e WHERE e.account_id = a.id AND kind = 'topup') AS topups, \
            (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM v_entries e WHERE e.account_id = a.id AND kind <> 'topup') AS moved, \
            (SELECT COUNT(*) FROM v_entries e WHERE e.account_id = a.id AND kind = 'post') AS posts FROM accounts a ORDER BY a.id")
        .fetch_all(&db.pool)
        .await
        .expect("sums");
    let mut total_posts = 0;
    for r in rows {
        let (id, balance, reserved, limit): (String, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (topups, moved, posts): (i64, i64, i64) = (r.get(4), r.get(5), r.get(6));
        assert_eq!(
            balance,
            topups + moved,
            "{id}: entries sum to the balance change"
        );
        assert_eq!(reserved, 0, "{id}: every session finished");
        assert!(
            balance - reserved + limit >= 0,
            "{id}: below its credit limit"
        );
        total_posts += posts;
    }
    assert!(total_posts > 100, "the load did happen");
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    drop((a, b));
    db.pool.close().await;
    tdb.drop_db().await;
}
