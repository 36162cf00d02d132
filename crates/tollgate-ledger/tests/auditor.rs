//! The auditors' role is a public interface (README.md, "For auditors"; docs/ledger.md): on a migrated
//! PostgreSQL ledger, `tollgate_auditor` can read every table and view the migrations create
//! and write none of them. A migration that adds a table without its grant, or grants too
//! much, fails here.

mod common;

use common::TestDb;
use sqlx::Row;
use tollgate_ledger::{Database, PoolConfig};

/// Relations of the public schema (tables and views) for which `predicate` holds; sqlx's own
/// bookkeeping table is not the ledger's.
async fn relations(db: &Database, predicate: &str) -> Vec<String> {
    let sql = format!(
        "SELECT CAST(c.relname AS TEXT) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') \
         AND c.relname <> '_sqlx_migrations' AND ({predicate}) ORDER BY c.relname"
    );
    sqlx::query(&sql)
        .fetch_all(&db.pool)
        .await
        .expect("catalog query")
        .iter()
        .map(|r| r.try_get::<String, _>(0).expect("name"))
        .collect()
}

#[tokio::test]
async fn the_auditor_role_reads_every_table_and_view_and_writes_nothing() {
    let Some(test_db) = TestDb::postgres("the auditor role test").await else {
        return;
    };
    let db = Database::connect(&test_db.url, &PoolConfig::default())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    let all = relations(&db, "true").await;
    for expected in [
        "accounts",
        "catalog_version",
        "journal",
        "session_credits",
        "reservations_v1",
        "v_balances",
        "v_charging_records",
        "v_entries",
        "v_open_reservations",
    ] {
        assert!(all.iter().any(|r| r == expected), "{expected} in {all:?}");
    }
    let unreadable = relations(
        &db,
        "NOT has_table_privilege('tollgate_auditor', c.oid, 'SELECT')",
    )
    .await;
    assert!(
        unreadable.is_empty(),
        "the auditor cannot read {unreadable:?}"
    );
    let writable = relations(
        &db,
        "has_table_privilege('tollgate_auditor', c.oid, 'INSERT') \
         OR has_table_privilege('tollgate_auditor', c.oid, 'UPDATE') \
         OR has_table_privilege('tollgate_auditor', c.oid, 'DELETE') \
         OR has_table_privilege('tollgate_auditor', c.oid, 'TRUNCATE')",
    )
    .await;
    assert!(writable.is_empty(), "the auditor can write {writable:?}");
    db.pool.close().await;
    test_db.drop_db().await;
}
