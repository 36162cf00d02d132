//! Group commit on both stores: lock, read, decide in memory, write set-based.
//!
//! One batch is one transaction in four steps, the SQL of each store in its own module
//! (`pg.rs` on `sqlx::Postgres`, `sqlite.rs` on `sqlx::Sqlite`), everything else here
//! (BEGIN and COMMIT use each store's [`crate::store::Dialect::begin`]):
//! 1. **Lock** every account the batch touches, in id order, in one statement (every batch of
//!    every worker and node locks in that order, so batches wait for each other, never
//!    deadlock on these locks). The locked rows come back with their current balances. On
//!    SQLite `BEGIN IMMEDIATE` has already taken the database's single write lock.
//! 2. **Read** what the operations need: the session credits of the batch's sessions, the
//!    stored answers of its request keys and the valid allowances of its accounts; the
//!    tariffs and the Subscription-Id → account map come from the process's [`Catalog`],
//!    checked against `catalog_version` first. If the reads reveal an account not yet locked
//!    (another node opened a credit meanwhile), it is locked too and the reads repeat.
//! 3. **Decide** ([`decide`]): the operations are applied in arrival order to that snapshot
//!    by the money engine (`tollgate_ocs::engine`, no SQL), which returns every row to write.
//!    The naive one-transaction-per-operation baseline is the same path with a batch of one;
//!    the batch and model tests hold the two to the same answers and rows.
//! 4. **Write** the engine's [`Effects`] set-based: journal rows, session credits opened,
//!    regranted in place or closed, cached account and allowance sums, charging records.
//!    Then COMMIT: durable before any caller is answered.
//!
//! Why: the cost of an operation in a database is mostly per statement (executor start-up,
//! constraint checks, a round trip), not per row, so a batch runs a fixed handful of
//! prepared statements whatever its size, with its row sets bound as typed arrays (PostgreSQL)
//! or multi-row VALUES (SQLite). No row set travels as JSON: the only JSON on this path is
//! what is stored as JSON (the answers, written as text and parsed only to replay a
//! retransmission, and a session's CDR payload). Under the row locks of step 1 nothing the batch read can change before it
//! commits, so deciding in memory is as safe as deciding row by row.

mod pg;
mod sqlite;

use crate::catalog::Catalog;
use crate::rows::new_reservation_id;
use crate::store::{Database, TypedPool};
use sqlx::pool::PoolConnection;
use sqlx::Executor;
use std::collections::BTreeSet;
use tollgate_ocs::engine::{Effects, Engine, EngineError, Op, OpResult, ReservationIds, Snapshot};
use tollgate_ocs::{
    ExpireReport, RefundAmount, RefundRequest, ServiceKey, SubscriptionId, Timestamp,
};

/// Apply a batch in one transaction; results in op order.
pub(crate) async fn run_batch(
    db: &Database,
    catalog: &Catalog,
    now: Timestamp,
    ops: &[Op],
) -> Result<Vec<OpResult>, sqlx::Error> {
    match &db.typed {
        TypedPool::Postgres(pool) => pg::run_batch(pool, catalog, now, ops).await,
        TypedPool::Sqlite(pool) => sqlite::run_batch(pool, catalog, now, ops).await,
    }
}

/// Expire up to `chunk` session credits past their expiry in one transaction; `found` says
/// how many there were (fewer than `chunk`: none are left).
pub(crate) async fn run_expire(
    db: &Database,
    now: Timestamp,
    chunk: i64,
) -> Result<ExpireChunk, sqlx::Error> {
    match &db.typed {
        TypedPool::Postgres(pool) => pg::run_expire(pool, now, chunk).await,
        TypedPool::Sqlite(pool) => sqlite::run_expire(pool, now, chunk).await,
    }
}

/// What one expiry transaction did.
pub(crate) struct ExpireChunk {
    /// Credits found past their expiry (resolved meanwhile by a commit or not).
    pub found: usize,
    pub report: ExpireReport,
}

/// Open a batch's transaction with `begin` (each store's BEGIN, [`Dialect::begin`]).
async fn begin<DB>(pool: &sqlx::Pool<DB>, begin: &str) -> Result<PoolConnection<DB>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut conn = pool.acquire().await?;
    (&mut *conn).execute(begin).await?;
    Ok(conn)
}

/// COMMIT after success, ROLLBACK after an error; a connection whose ROLLBACK fails is in an
/// unknown state and is detached rather than returned to the pool.
async fn end<DB, T>(
    mut conn: PoolConnection<DB>,
    result: Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    match result {
        Ok(out) => {
            (&mut *conn).execute("COMMIT").await?;
            Ok(out)
        }
        Err(e) => {
            if (&mut *conn).execute("ROLLBACK").await.is_err() {
                let _ = conn.detach();
            }
            Err(e)
        }
    }
}

/// The catalog version, in the caller's transaction, and the tariffs cached at it (reloaded
/// when it moved); the same statements on both stores.
async fn tariffs_in_transaction<DB>(
    conn: &mut DB::Connection,
    catalog: &Catalog,
) -> Result<std::sync::Arc<Vec<tollgate_ocs::engine::TariffEntry>>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB>,
    String: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let version: i64 = sqlx::query_scalar("SELECT version FROM catalog_version WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    if let Some(t) = catalog.tariffs_at(version) {
        return Ok(t);
    }
    let rows = sqlx::query(crate::rows::TARIFFS)
        .fetch_all(&mut *conn)
        .await?;
    let tariffs = rows
        .iter()
        .map(crate::rows::tariff_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(catalog.store_tariffs(version, tariffs))
}

/// Reservation ids of this process (`rows::new_reservation_id`): unique across processes and
/// restarts, named before the rows are inserted.
pub(crate) struct ProcessReservationIds;

impl ReservationIds for ProcessReservationIds {
    fn next_id(&mut self) -> String {
        new_reservation_id()
    }
}

/// Step 3: apply `ops` to the snapshot; their results and what to write.
fn decide(
    now: Timestamp,
    snapshot: Snapshot,
    ops: &[Op],
) -> Result<(Vec<OpResult>, Effects), sqlx::Error> {
    let mut ids = ProcessReservationIds;
    let mut engine = Engine::new(now, snapshot, &mut ids);
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(engine.apply(op).map_err(engine_error)?);
    }
    let effects = engine.into_effects().map_err(engine_error)?;
    Ok((out, effects))
}

/// The sweeper's step 3: expire every reservation of the snapshot.
fn decide_expiry(
    now: Timestamp,
    snapshot: Snapshot,
) -> Result<(ExpireChunk, Effects), sqlx::Error> {
    let found = snapshot.open.len();
    let ids: Vec<String> = snapshot.open.iter().map(|r| r.id.clone()).collect();
    let mut reservation_ids = ProcessReservationIds;
    let mut engine = Engine::new(now, snapshot, &mut reservation_ids);
    let mut report = ExpireReport::default();
    for id in &ids {
        if let Some(hold) = engine.expire(id).map_err(engine_error)? {
            report.expired += 1;
            report.amount.0 += hold.amount.0;
            report.units += hold.allowance_units;
        }
    }
    let effects = engine.into_effects().map_err(engine_error)?;
    Ok((ExpireChunk { found, report }, effects))
}

/// The keys a batch reads by, the same for both stores.
struct BatchKeys<'o> {
    /// Sessions whose credits the operations may touch.
    sessions: Vec<&'o str>,
    /// The operations' request keys, for their stored answers.
    request_keys: Vec<String>,
    /// Subscription-Ids the operations name.
    subscribers: Vec<&'o SubscriptionId>,
    /// Every context a tariff may name for the operations' services
    /// (`ServiceKey::tariff_contexts`).
    contexts: BTreeSet<&'o str>,
}

impl<'o> BatchKeys<'o> {
    fn of(ops: &'o [Op]) -> Self {
        let mut sessions: BTreeSet<&str> = ops.iter().filter_map(Op::session_ref).collect();
        sessions.extend(ops.iter().filter_map(|o| match o {
            Op::Reserve(r) => Some(r.session_ref.as_str()),
            _ => None,
        }));
        let subscribers: BTreeSet<&SubscriptionId> =
            ops.iter().filter_map(Op::subscriber).collect();
        let contexts = ops
            .iter()
            .filter_map(|o| match o {
                Op::Reserve(r) => Some(&r.service),
                Op::Commit(r) => Some(&r.service),
                Op::DirectDebit(r) => Some(&r.service),
                Op::Refund(RefundRequest {
                    amount: RefundAmount::Units { service, .. },
                    ..
                }) => Some(service),
                _ => None,
            })
            .flat_map(ServiceKey::tariff_contexts)
            .collect();
        BatchKeys {
            sessions: sessions.into_iter().collect(),
            request_keys: ops.iter().map(|o| o.key().to_key_string()).collect(),
            subscribers: subscribers.into_iter().collect(),
            contexts,
        }
    }
}

/// What the updates and deletes of a batch's step 4 hit.
struct Written {
    closed: u64,
    regranted: u64,
    accounts: u64,
    allowances: u64,
}

/// A close, regrant or sum that hit no row means the state the batch decided on is not the
/// database's: the batch rolls back rather than write half of it.
fn check_counts(fx: &Effects, w: Written) -> Result<(), sqlx::Error> {
    if w.closed != fx.credits_closed.len() as u64
        || w.regranted != fx.credits_regranted.len() as u64
        || w.accounts != fx.account_sums.len() as u64
        || w.allowances != fx.allowance_sums.len() as u64
    {
        return Err(protocol(format!(
            "ledger batch: closed {}/{} and regranted {}/{} session credits, updated {}/{} \
             accounts, {}/{} allowances",
            w.closed,
            fx.credits_closed.len(),
            w.regranted,
            fx.credits_regranted.len(),
            w.accounts,
            fx.account_sums.len(),
            w.allowances,
            fx.allowance_sums.len()
        )));
    }
    Ok(())
}

/// The tariffs as of this moment, for a price enquiry outside any batch.
pub(crate) async fn current_tariffs(
    db: &Database,
    catalog: &Catalog,
) -> Result<std::sync::Arc<Vec<tollgate_ocs::engine::TariffEntry>>, sqlx::Error> {
    match &db.typed {
        TypedPool::Postgres(pool) => pg::tariffs(pool, catalog).await,
        TypedPool::Sqlite(pool) => sqlite::tariffs(pool, catalog).await,
    }
}

/// The engine found the snapshot inconsistent: the transaction must roll back.
pub(crate) fn engine_error(e: EngineError) -> sqlx::Error {
    protocol(e.to_string())
}

fn protocol(msg: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Protocol(msg.into())
}

/// How many times step 2 may find an account that step 1 did not lock before the batch gives
/// up (normally one round: only a credit opened by another node between the two statements
/// adds one).
const LOCK_ROUNDS: usize = 4;

/// The error when the accounts of a batch's sessions kept moving between nodes.
fn lock_rounds_exhausted() -> sqlx::Error {
    protocol("ledger batch: the accounts of its sessions kept changing while being locked")
}
