//! Ledger v2's migration (migrations/postgres/0006_ledger_v2.sql,
//! migrations/sqlite/0003_ledger_v2.sql) on a ledger that v1 wrote
//! (tests/migration_v2/v1_ledger.sql, which says what it holds): the auditors' views
//! (docs/ledger.md, "Views") show the same rows after it as before, with v1's columns first
//! and unchanged (the tables change, the views only grow), `ledger verify` finds nothing, a
//! retransmission of a request v1 answered gets v1's stored answer (and a changed one is
//! refused), and the session left open across the migration ends normally. One test per
//! store: SQLite always, PostgreSQL when TOLLGATE_TEST_PG_URL is set.

mod common;

use common::TestDb;
use sqlx::migrate::Migrator;
use sqlx::{Executor, Row};
use std::borrow::Cow;
use std::sync::Arc;
use tollgate_ledger::store::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use tollgate_ledger::{Database, Dialect, LedgerConfig, PoolConfig, SqlLedger};
use tollgate_ocs::*;

/// The v1 ledger: the same statements for both stores.
const V1_LEDGER: &str = include_str!("migration_v2/v1_ledger.sql");

const T0: i64 = 1_800_000_000_000;
const VOICE: &str = "32260@3gpp.org";
const SCSCF: &str = "scscf.ims.example.net";
/// alice's posted session (CCR-I/U/U/T).
const S1: &str = "scscf.ims.example.net;1800000000;1";
/// bob's session, open across the migration.
const S4: &str = "scscf.ims.example.net;1800002000;4";
/// carol's abandoned session, expired by v1's sweeper.
const S6: &str = "scscf.ims.example.net;1800000400;6";
/// carol's voided data session.
const S5: &str = "pgw.epc.example.net;1800000300;5";
/// The grant bob's session holds: 300 s, 200 of them from allowance 2, 1.00 in money.
const OPEN_RESERVATION: &str = "r18fadf306a572d15-1092-0000000000000006";
const BOB_ALLOWANCE: i64 = 2;
/// The highest entry id v1 gave; v2 carries on after it.
const LAST_V1_ENTRY: i64 = 23;

// ---- the two schema versions ----

/// The last v1 migration of a store; v2 is the next.
fn last_v1_version(dialect: Dialect) -> i64 {
    match dialect {
        Dialect::Postgres => 5,
        Dialect::Sqlite => 2,
    }
}

/// A migrator holding only v1's migrations. sqlx cannot run "up to version N"; a
/// [`Migrator`] is its list of migrations, so the test builds one from the embedded ones
/// (its fields are public for `migrate!`, though sqlx exempts them from semver). The full
/// migrator later finds these applied, with the same checksums, and runs only v2.
fn v1_migrator(dialect: Dialect) -> Migrator {
    let all = match dialect {
        Dialect::Postgres => &POSTGRES_MIGRATIONS,
        Dialect::Sqlite => &SQLITE_MIGRATIONS,
    };
    let last = last_v1_version(dialect);
    assert!(
        all.iter()
            .any(|m| m.version == last + 1 && m.description == "ledger v2"),
        "migration {} is ledger v2",
        last + 1
    );
    let v1: Vec<_> = all.iter().filter(|m| m.version <= last).cloned().collect();
    assert_eq!(v1.len() as i64, last, "v1's migrations are 1..={last}");
    Migrator {
        migrations: Cow::Owned(v1),
        ..Migrator::DEFAULT
    }
}

/// Load the v1 ledger in one transaction.
async fn load_v1_ledger(db: &Database) {
    let mut conn = db.pool.acquire().await.expect("connection");
    conn.execute("BEGIN").await.expect("begin");
    conn.execute(V1_LEDGER).await.expect("load the v1 ledger");
    if db.dialect == Dialect::Postgres {
        // v1 took these ids from the tables' sequences; the fixture names them, so the
        // sequences are left where v1 would have left them (SQLite's AUTOINCREMENT follows
        // explicit ids by itself).
        for t in [
            "tariffs",
            "allowances",
            "ledger_entries",
            "charging_records",
        ] {
            conn.execute(
                format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"
                )
                .as_str(),
            )
            .await
            .expect("sequence");
        }
    }
    conn.execute("COMMIT").await.expect("commit");
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    let row = sqlx::query(sql).fetch_one(&db.pool).await.expect(sql);
    row.try_get::<i64, _>(0).expect(sql)
}

/// The fixture is a ledger v1 could have written: its cached sums are its entries' sums,
/// every keyed entry has its stored answer, every reservation one pending entry and, unless
/// open, one resolving entry (v1's `ledger verify`, in short). Checked on v1's tables, so a
/// broken fixture fails here and not as a migration problem.
async fn assert_consistent_v1(db: &Database) {
    for (what, sql) in [
        (
            "cached account sums differ from the entries",
            "SELECT COUNT(*) FROM v_balances WHERE balance <> entries_balance \
             OR reserved <> entries_reserved",
        ),
        (
            "cached allowance sums differ from the entries",
            "SELECT COUNT(*) FROM allowances al LEFT JOIN (SELECT allowance_id, SUM(units) AS u, \
             SUM(pending_units) AS p FROM ledger_entries GROUP BY allowance_id) e \
             ON e.allowance_id = al.id \
             WHERE al.remaining <> COALESCE(e.u, 0) OR al.reserved <> COALESCE(e.p, 0)",
        ),
        (
            "keyed entries without a stored answer",
            "SELECT COUNT(*) FROM ledger_entries e WHERE e.request_key IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM idempotency_keys i WHERE i.request_key = e.request_key)",
        ),
        (
            "reservations whose entries do not match their status",
            "SELECT COUNT(*) FROM reservations r WHERE \
             (SELECT COUNT(*) FROM ledger_entries e WHERE e.reservation_id = r.id \
                AND e.kind = 'pending' AND e.pending_delta = r.pending_amount \
                AND e.pending_units = r.allowance_units) <> 1 \
             OR (SELECT COUNT(*) FROM ledger_entries e WHERE e.reservation_id = r.id \
                AND e.kind IN ('post', 'void', 'expire') AND e.pending_delta = -r.pending_amount \
                AND e.pending_units = -r.allowance_units) <> CASE WHEN r.status = 'open' THEN 0 ELSE 1 END",
        ),
    ] {
        assert_eq!(scalar(db, sql).await, 0, "v1 fixture: {what}");
    }
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM ledger_entries").await,
        LAST_V1_ENTRY
    );
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) FROM reservations WHERE status = 'open'"
        )
        .await,
        1
    );
}

// ---- what auditors see ----

/// One value as a driver hands it to an auditor: a NULL stays a NULL, and an integer stays
/// an integer (SQLite types values, not columns: a view that turned one into text would
/// show here).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
}

type Rows = Vec<Vec<Cell>>;

async fn rows(db: &Database, sql: &str) -> Rows {
    let mut out = Vec::new();
    for row in sqlx::query(sql).fetch_all(&db.pool).await.expect(sql) {
        let cells = (0..row.len())
            .map(|i| match row.try_get::<Option<i64>, _>(i) {
                Ok(v) => v.map_or(Cell::Null, Cell::Int),
                Err(_) => row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.map_or(Cell::Null, Cell::Text))
                    .unwrap_or_else(|e| panic!("{sql}: column {i}: {e}")),
            })
            .collect();
        out.push(cells);
    }
    out
}

// v1's columns of each view, in v1's order. PostgreSQL's SUM of BIGINT is NUMERIC, which
// sqlx's Any driver does not read, and `payload` is JSONB: those are cast (the same way
// before and after, so nothing hides).
const V_BALANCES: &str = "SELECT account_id, currency, scale, status, credit_limit, balance, \
    reserved, available, CAST(entries_balance AS BIGINT), CAST(entries_reserved AS BIGINT) \
    FROM v_balances ORDER BY account_id";
const V_ENTRIES: &str = "SELECT entry_id, account_id, currency, scale, kind, amount, \
    pending_delta, allowance_id, units, pending_units, reservation_id, session_ref, used_units, \
    unbilled, request_key, created_at_ms FROM v_entries ORDER BY entry_id";
const V_OPEN_RESERVATIONS: &str = "SELECT reservation_id, account_id, session_ref, \
    service_context, rating_group, service_id, unit, granted_units, allowance_units, \
    pending_amount, expires_at_ms, created_at_ms FROM v_open_reservations ORDER BY reservation_id";
const V_CHARGING_RECORDS: &str = "SELECT record_id, account_id, currency, scale, kind, \
    session_ref, service_context, rating_group, service_id, unit, used_units, charged, \
    request_key, CAST(payload AS TEXT), created_at_ms FROM v_charging_records ORDER BY record_id";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Views {
    balances: Rows,
    entries: Rows,
    open_reservations: Rows,
    charging_records: Rows,
}

async fn views(db: &Database) -> Views {
    Views {
        balances: rows(db, V_BALANCES).await,
        entries: rows(db, V_ENTRIES).await,
        open_reservations: rows(db, V_OPEN_RESERVATIONS).await,
        charging_records: rows(db, V_CHARGING_RECORDS).await,
    }
}

/// Row-by-row equality, naming the first row that differs.
fn assert_same_rows(view: &str, before: &[Vec<Cell>], after: &[Vec<Cell>]) {
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        assert_eq!(
            b, a,
            "{view}: row {i} changed\n before: {b:?}\n after:  {a:?}"
        );
    }
    assert_eq!(
        before.len(),
        after.len(),
        "{view}: {} rows before, {} after\n before: {before:?}\n after:  {after:?}",
        before.len(),
        after.len()
    );
}

fn assert_same_views(before: &Views, after: &Views) {
    assert_same_rows("v_balances", &before.balances, &after.balances);
    assert_same_rows("v_entries", &before.entries, &after.entries);
    assert_same_rows(
        "v_open_reservations",
        &before.open_reservations,
        &after.open_reservations,
    );
    assert_same_rows(
        "v_charging_records",
        &before.charging_records,
        &after.charging_records,
    );
}

/// Each view's columns, in order: on PostgreSQL "name type", on SQLite (which types values,
/// not columns) the name.
async fn view_columns(db: &Database) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for view in [
        "v_balances",
        "v_entries",
        "v_open_reservations",
        "v_charging_records",
    ] {
        let sql = match db.dialect {
            Dialect::Postgres => format!(
                "SELECT CAST(column_name AS TEXT) || ' ' || CAST(data_type AS TEXT) \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 AND table_name = '{view}' ORDER BY ordinal_position"
            ),
            Dialect::Sqlite => format!("SELECT name FROM pragma_table_info('{view}') ORDER BY cid"),
        };
        let columns = sqlx::query(&sql)
            .fetch_all(&db.pool)
            .await
            .expect("view columns")
            .iter()
            .map(|r| r.try_get::<String, _>(0).expect("column"))
            .collect();
        out.push((view.to_string(), columns));
    }
    out
}

// ---- requests, as the credit-control application makes them ----

fn key(session: &str, n: u32) -> RequestKey {
    RequestKey::new(SCSCF, session, n)
}

fn voice() -> ServiceKey {
    ServiceKey::context(VOICE)
}

fn seconds(n: u64) -> UsedUnits {
    UsedUnits::of(UnitType::Seconds, n)
}

/// Retransmissions of requests v1 answered. Each names what running it again, instead of
/// replaying its answer, would have given, to show the answer is v1's.
async fn retransmissions_get_v1_answers(l: &dyn Ledger, now: Timestamp) {
    let later = now.plus_seconds(600);
    // alice's second CCR-U. Run again: NoReservation (her session ended).
    let ccr_u2 = CommitRequest {
        key: key(S1, 2),
        session_ref: S1.into(),
        service: voice(),
        used: seconds(60),
        next: Some(NextReservation {
            requested_units: None,
            expires_at: later,
            tcc: None,
        }),
        final_commit: false,
        cdr: None,
    };
    assert_eq!(
        l.commit(ccr_u2.clone()).await,
        Ok(CommitOutcome::Committed(Committed {
            charged: Money(60),
            from_allowance: 0,
            unbilled: Money(0),
            next: Some(ReserveOutcome::Granted(Grant {
                units: 60,
                from_allowance: 0,
                amount: Money(60),
                final_grant: false,
                expires_at: Timestamp(1_800_000_730_000),
                quota: Default::default(),
                final_unit: Default::default(),
            })),
            session_open: None,
        })),
        "alice's CCR-U retransmitted"
    );
    let changed = l
        .commit(CommitRequest {
            used: seconds(61),
            ..ccr_u2
        })
        .await;
    assert!(
        matches!(changed, Err(LedgerError::ChangedDuplicate { .. })),
        "{changed:?}"
    );
    // bob's CCR-I. Run again: ReservationOpen (his session holds a grant).
    let ccr_i = ReserveRequest {
        key: key(S4, 0),
        subscriber: SubscriptionId::e164("15550000002"),
        service: voice(),
        unit: UnitType::Seconds,
        requested_units: Some(120),
        session_ref: S4.into(),
        expires_at: later,
        tcc: None,
    };
    assert_eq!(
        l.reserve(ccr_i.clone()).await,
        Ok(ReserveOutcome::Granted(Grant {
            units: 120,
            from_allowance: 120,
            amount: Money(0),
            final_grant: false,
            expires_at: Timestamp(1_800_002_600_000),
            quota: Default::default(),
            final_unit: Default::default(),
        })),
        "bob's CCR-I retransmitted"
    );
    let changed = l
        .reserve(ReserveRequest {
            requested_units: Some(60),
            ..ccr_i
        })
        .await;
    assert!(
        matches!(changed, Err(LedgerError::ChangedDuplicate { .. })),
        "{changed:?}"
    );
    // carol's CCR-T without usage (the rest of the session). Run again: nothing to release.
    assert_eq!(
        l.release(ReleaseRequest {
            key: RequestKey::new("pgw.epc.example.net", S5, 1).with_rating_group(u32::MAX),
            session_ref: S5.into(),
            service: None,
            cdr: None,
        })
        .await,
        Ok(Released {
            reservations: 1,
            amount: Money(500),
            units: 0,
        }),
        "carol's release retransmitted"
    );
    // carol's refund. Run again: a second 2.50.
    let refund = RefundRequest {
        key: RequestKey::new("as.ims.example.net", "as.ims.example.net;1800001300;9", 0),
        subscriber: SubscriptionId::e164("15550000003"),
        amount: RefundAmount::Money(Money(250)),
    };
    assert_eq!(
        l.refund(refund.clone()).await,
        Ok(RefundOutcome::Refunded { amount: Money(250) }),
        "carol's refund retransmitted"
    );
    let changed = l
        .refund(RefundRequest {
            amount: RefundAmount::Money(Money(2500)),
            ..refund
        })
        .await;
    assert!(
        matches!(changed, Err(LedgerError::ChangedDuplicate { .. })),
        "{changed:?}"
    );
    // A refusal stays a refusal: carol's late CCR-U after the sweeper, stored without an
    // account, and dave's IEC.
    assert_eq!(
        l.commit(CommitRequest {
            key: key(S6, 1),
            session_ref: S6.into(),
            service: voice(),
            used: seconds(30),
            next: Some(NextReservation {
                requested_units: None,
                expires_at: later,
                tcc: None,
            }),
            final_commit: false,
            cdr: None,
        })
        .await,
        Ok(CommitOutcome::Refused(Refusal::NoReservation))
    );
    assert_eq!(
        l.direct_debit(DirectDebitRequest {
            key: RequestKey::new("mmsc.example.net", "mmsc.example.net;1800001500;9", 0),
            subscriber: SubscriptionId::e164("15550000004"),
            service: ServiceKey::context("32270@3gpp.org"),
            unit: UnitType::Units,
            units: 1,
            cdr: None,
        })
        .await,
        Ok(DirectDebitOutcome::Refused(Refusal::CreditLimitReached))
    );
}

// ---- the test ----

async fn migrates_a_v1_ledger(test_db: TestDb) {
    let db = Database::connect(&test_db.url, &PoolConfig::default())
        .await
        .expect("connect");
    // 1-2. A v1 ledger.
    v1_migrator(db.dialect)
        .run(&db.pool)
        .await
        .expect("v1 migrations");
    load_v1_ledger(&db).await;
    assert_consistent_v1(&db).await;
    // 3. What auditors see of it.
    let before = views(&db).await;
    let columns_before = view_columns(&db).await;
    assert_eq!(before.open_reservations.len(), 1, "bob's session is open");

    // 4. Migrate.
    db.migrate().await.expect("migrate to v2");
    let report = tollgate_ledger::admin::verify(&db).await.expect("verify");
    assert!(report.is_consistent(), "verify: {:?}", report.problems);
    assert_eq!(report.entries, LAST_V1_ENTRY);
    assert_same_views(&before, &views(&db).await);
    // The views keep v1's columns, in v1's order and (PostgreSQL) types; they may only grow.
    for ((view, v1), (_, v2)) in columns_before.iter().zip(&view_columns(&db).await) {
        assert!(
            v2.starts_with(v1),
            "{view}: v1's columns {v1:?} are no longer the first of {v2:?}"
        );
    }

    // Requests answered before the migration are answered the same after it, and write
    // nothing.
    let now = Timestamp(T0 + 2_150_000);
    let clock = Arc::new(ManualClock::new(now));
    let ledger = SqlLedger::new(db.clone(), LedgerConfig::default(), clock.clone());
    let l: &dyn Ledger = &ledger;
    retransmissions_get_v1_answers(l, now).await;
    assert_same_views(&before, &views(&db).await);
    // The sweeper leaves bob's session alone (it expires at T0 + 2690 s) and finds nothing
    // in what v1 resolved.
    assert_eq!(l.expire(now).await, Ok(ExpireReport::default()));

    // bob's session ends after the migration: 400 s used, 200 from the allowance held for
    // it, 200 charged from 1.00 of balance held, taking him 1.00 into his 5.00 credit limit.
    let end = Timestamp(T0 + 2_200_000);
    clock.set(end);
    let ccr_t = key(S4, 2);
    let cdr = serde_json::json!({
        "session_id": S4, "origin_host": SCSCF, "service_context_id": VOICE,
        "cc_request_number": 2, "subscription_ids": ["e164:15550000002"], "termination_cause": 1
    });
    assert_eq!(
        l.commit(CommitRequest {
            key: ccr_t.clone(),
            session_ref: S4.into(),
            service: voice(),
            used: seconds(400),
            next: None,
            final_commit: true,
            cdr: Some(cdr),
        })
        .await,
        Ok(CommitOutcome::Committed(Committed {
            charged: Money(200),
            from_allowance: 200,
            unbilled: Money(0),
            next: None,
            session_open: Some(0),
        }))
    );
    let report = tollgate_ledger::admin::verify(&db).await.expect("verify");
    assert!(
        report.is_consistent(),
        "verify after the commit: {:?}",
        report.problems
    );
    let after = views(&db).await;
    // Its hold is released: nothing open, bob's money and allowance free.
    assert_eq!(after.open_reservations, Rows::new(), "v_open_reservations");
    let int = Cell::Int;
    let text = |s: &str| Cell::Text(s.into());
    let bob = after
        .balances
        .iter()
        .find(|r| r[0] == text("bob"))
        .expect("bob in v_balances");
    assert_eq!(
        bob[5..],
        [int(-100), int(0), int(400), int(-100), int(0)],
        "bob's balance, reserved, available, entries_balance, entries_reserved"
    );
    let others = |v: &Views| -> Rows {
        v.balances
            .iter()
            .filter(|r| r[0] != text("bob"))
            .cloned()
            .collect()
    };
    assert_same_rows("v_balances (not bob)", &others(&before), &others(&after));
    assert_eq!(
        scalar(
            &db,
            &format!("SELECT remaining + reserved FROM allowances WHERE id = {BOB_ALLOWANCE}")
        )
        .await,
        0,
        "bob's allowance is used up and holds nothing"
    );
    // It is charged: one post entry, numbered after v1's entries, on the migrated grant.
    let (v1_entries, new_entries) = after
        .entries
        .split_at(before.entries.len().min(after.entries.len()));
    assert_same_rows("v_entries (v1's)", &before.entries, v1_entries);
    assert_eq!(
        new_entries,
        [vec![
            int(LAST_V1_ENTRY + 1),
            text("bob"),
            text("EUR"),
            int(2),
            text("post"),
            int(-200),
            int(-100),
            int(BOB_ALLOWANCE),
            int(-200),
            int(-200),
            text(OPEN_RESERVATION),
            text(S4),
            int(400),
            int(0),
            text(&ccr_t.to_key_string()),
            int(end.0),
        ]],
        "v_entries: bob's final post"
    );
    // And its charging record holds the whole session: 100 s before the migration, 400
    // after; 2.00 charged.
    let (v1_records, new_records) = after.charging_records.split_at(
        before
            .charging_records
            .len()
            .min(after.charging_records.len()),
    );
    assert_same_rows(
        "v_charging_records (v1's)",
        &before.charging_records,
        v1_records,
    );
    let new: Vec<&[Cell]> = new_records.iter().map(|r| &r[1..13]).collect();
    assert_eq!(
        new,
        [&[
            text("bob"),
            text("EUR"),
            int(2),
            text("session"),
            text(S4),
            text(VOICE),
            Cell::Null,
            Cell::Null,
            text("seconds"),
            int(500),
            int(200),
            text(&ccr_t.to_key_string()),
        ][..]],
        "v_charging_records: bob's session"
    );

    db.pool.close().await;
    test_db.drop_db().await;
}

#[tokio::test]
async fn a_v1_ledger_migrates_to_v2_with_the_same_views_and_answers_on_sqlite() {
    migrates_a_v1_ledger(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_v1_ledger_migrates_to_v2_with_the_same_views_and_answers_on_postgres() {
    let Some(test_db) = TestDb::postgres("the ledger v2 migration test").await else {
        return;
    };
    migrates_a_v1_ledger(test_db).await;
}
