//! Ledger v2's shape (migrations/postgres/0006_ledger_v2.sql): a session-flow CCR inserts one
//! row, its journal row, holding its stored answer and its entries under one key; a CCR-U
//! updates its session credit in place; the charging record is written once, at the end. On
//! both stores. A change that brings back a row per entry, per reservation or per answer
//! fails here, before any benchmark shows it.

mod common;

use common::{eur_account, used_in_every_unit, TestDb};
use std::sync::Arc;
use tollgate_ledger::admin::{self, TariffSpec};
use tollgate_ledger::{Database, LedgerConfig, SqlLedger};
use tollgate_ocs::*;

const T0: i64 = 1_800_000_000_000;
const CTX: &str = "32260@3gpp.org";

async fn count(db: &Database, sql: &str) -> i64 {
    let row = sqlx::query(sql).fetch_one(&db.pool).await.expect(sql);
    sqlx::Row::try_get::<i64, _>(&row, 0).expect("i64")
}

/// Rows of the tables a CCR writes, in order: journal, session credits, charging records.
async fn rows(db: &Database) -> [i64; 3] {
    [
        count(
            db,
            "SELECT COUNT(*) FROM journal WHERE request_key NOT LIKE '~%'",
        )
        .await,
        count(db, "SELECT COUNT(*) FROM session_credits").await,
        count(db, "SELECT COUNT(*) FROM charging_records").await,
    ]
}

fn commit(n: u32, used: u64, last: bool, now: Timestamp) -> CommitRequest {
    CommitRequest {
        key: RequestKey::new("as.example.net", "s1", n),
        session_ref: "s1".into(),
        service: ServiceKey::context(CTX),
        used: used_in_every_unit(used),
        next: (!last).then_some(NextReservation {
            requested_units: Some(60),
            expires_at: now.plus_seconds(600),
            tcc: None,
        }),
        final_commit: last,
        cdr: None,
    }
}

async fn one_row_per_ccr(test_db: TestDb) {
    let now = Timestamp(T0);
    let ledger = SqlLedger::connect(
        &test_db.url,
        LedgerConfig::default(),
        Arc::new(ManualClock::new(now)),
    )
    .await
    .expect("connect");
    let db = ledger.database().clone();
    admin::set_tariff(
        &db,
        &TariffSpec {
            service: ServiceKey::context(CTX),
            unit: UnitType::Seconds,
            currency: Currency::parse("EUR").expect("eur"),
            price: "0.01".into(),
            quantum: Some(60),
            min_grant: Some(1),
            quota: Default::default(),
            final_unit: Default::default(),
        },
        now,
    )
    .await
    .expect("tariff");
    eur_account(&db, "alice", "15550000001", 10_000, 0, vec![], now).await;
    let l: &dyn Ledger = &ledger;

    // CCR-I: one journal row (the pending entry and the answer), one new session credit.
    let granted = l
        .reserve(ReserveRequest {
            key: RequestKey::new("as.example.net", "s1", 0),
            subscriber: SubscriptionId::e164("15550000001"),
            service: ServiceKey::context(CTX),
            unit: UnitType::Seconds,
            requested_units: Some(60),
            session_ref: "s1".into(),
            expires_at: now.plus_seconds(600),
            tcc: None,
        })
        .await
        .expect("reserve");
    assert!(matches!(granted, ReserveOutcome::Granted(_)), "{granted:?}");
    assert_eq!(rows(&db).await, [1, 1, 0]);
    let credit = count(&db, "SELECT COUNT(DISTINCT credit_id) FROM session_credits").await;

    // Two CCR-Us: one journal row each (post + the next grant's hold + the answer); the
    // credit is the same row, holding the new grant.
    for n in 1..=2 {
        l.commit(commit(n, 30, false, now)).await.expect("update");
        assert_eq!(rows(&db).await, [1 + i64::from(n), 1, 0], "after CCR-U {n}");
    }
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT credit_id) FROM session_credits").await,
        credit
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM journal WHERE kind = 'post' AND hold_entry_id IS NOT NULL"
        )
        .await,
        2,
        "each CCR-U's post and next grant share its row"
    );

    // A retransmitted CCR-U writes nothing.
    l.commit(commit(2, 30, false, now)).await.expect("replay");
    assert_eq!(rows(&db).await, [3, 1, 0]);

    // CCR-T: one journal row, the credit gone, the charging record written once.
    l.commit(commit(3, 10, true, now)).await.expect("terminate");
    assert_eq!(rows(&db).await, [4, 0, 1]);
    // Six entries in all (pending, then post + pending twice, then post): what v1 wrote
    // as six rows of ledger_entries beside four idempotency rows and three reservations.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM v_entries WHERE request_key IS NOT NULL"
        )
        .await,
        6
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM journal WHERE request_key NOT LIKE '~%' AND part <> 0"
        )
        .await,
        0
    );
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    drop(ledger);
    db.pool.close().await;
    test_db.drop_db().await;
}

#[tokio::test]
async fn a_session_flow_writes_one_row_per_ccr_on_sqlite() {
    one_row_per_ccr(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_session_flow_writes_one_row_per_ccr_on_postgres() {
    let Some(db) = TestDb::postgres("the rows-per-CCR test").await else {
        return;
    };
    one_row_per_ccr(db).await;
}
