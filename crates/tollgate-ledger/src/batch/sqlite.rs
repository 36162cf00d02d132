//! A batch on the embedded store (`sqlx::Sqlite`): steps 1, 2 and 4 of `batch` as prepared
//! statements. SQLite has no arrays, so a row set is bound as multi-row `VALUES` (a CTE
//! `x(...)` when a statement joins it): chunks of a power-of-two size up to [`MAX_CHUNK`] rows,
//! so each statement has a handful of shapes, each prepared once per connection. Every
//! statement is a round trip to sqlx's SQLite worker thread, which is why a batch binds its
//! rows per kind, not per row.
//!
//! `BEGIN IMMEDIATE` takes the database's single write lock before anything is read, so what
//! a batch reads cannot change before it commits: step 1 only reads the accounts.

use super::tariffs_in_transaction;
use super::{begin, check_counts, decide, decide_expiry, end, BatchKeys, ExpireChunk, Written};
use crate::catalog::{AccountLookup, Catalog};
use crate::rows::{
    account_cols, account_from_row, allowance_from_row, credit_cols, credit_from_row, subscription,
};
use crate::store::Dialect;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tollgate_ocs::engine::{
    Account, CreditRow, Effects, JournalRow, Op, OpResult, Snapshot, StoredOutcome, TariffEntry,
};
use tollgate_ocs::{SubscriptionId, Timestamp};

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Most rows one statement binds (a journal chunk: 25 × 64 = 1,600 parameters, far below
/// SQLite's limit of 32,766).
const MAX_CHUNK: usize = 64;

pub(super) async fn run_batch(
    pool: &SqlitePool,
    catalog: &Catalog,
    now: Timestamp,
    ops: &[Op],
) -> Result<Vec<OpResult>, sqlx::Error> {
    let mut conn = begin(pool, Dialect::Sqlite.begin()).await?;
    let result = async {
        let snapshot = read(&mut conn, catalog, now, ops).await?;
        let (out, effects) = decide(now, snapshot, ops)?;
        write(&mut conn, &effects).await?;
        Ok(out)
    }
    .await;
    end(conn, result).await
}

pub(super) async fn run_expire(
    pool: &SqlitePool,
    now: Timestamp,
    chunk: i64,
) -> Result<ExpireChunk, sqlx::Error> {
    let mut conn = begin(pool, Dialect::Sqlite.begin()).await?;
    let result = async {
        let snapshot = load_expired(&mut conn, now, chunk).await?;
        let (report, effects) = decide_expiry(now, snapshot)?;
        write(&mut conn, &effects).await?;
        Ok(report)
    }
    .await;
    end(conn, result).await
}

/// The tariffs as of this moment (a price enquiry, outside any batch).
pub(super) async fn tariffs(
    pool: &SqlitePool,
    catalog: &Catalog,
) -> Result<Arc<Vec<TariffEntry>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    tariffs_in_transaction::<Sqlite>(&mut *conn, catalog).await
}

/// `(start, len)` of each chunk of `n` rows: powers of two, largest first, at most
/// [`MAX_CHUNK`].
fn chunks(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let left = n - start;
        let len = if left >= MAX_CHUNK {
            MAX_CHUNK
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        out.push((start, len));
        start += len;
    }
    out
}

/// `(?, ?), (?, ?)`: `rows` rows of `cols` parameters.
fn values(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

/// Runs `sql(values)` once per chunk of `rows`, binding each row with `bind`; the rows the
/// statements changed.
async fn execute_chunks<'a, T>(
    conn: &mut SqliteConnection,
    rows: &'a [T],
    cols: usize,
    sql: impl Fn(&str) -> String,
    bind: impl for<'q> Fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
) -> Result<u64, sqlx::Error> {
    let mut changed = 0;
    for (start, len) in chunks(rows.len()) {
        let text = sql(&values(len, cols));
        let mut q = sqlx::query(&text);
        for r in &rows[start..start + len] {
            q = bind(q, r);
        }
        changed += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(changed)
}

/// Reads `sql(values)` once per chunk of `keys` (one parameter each), then binds `extra`.
async fn fetch_by_keys(
    conn: &mut SqliteConnection,
    keys: &[&str],
    sql: impl Fn(&str) -> String,
    extra: Option<i64>,
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let mut out = Vec::new();
    for (start, len) in chunks(keys.len()) {
        let text = sql(&values(len, 1));
        let mut q = sqlx::query(&text);
        for k in &keys[start..start + len] {
            q = q.bind(*k);
        }
        if let Some(v) = extra {
            q = q.bind(v);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The accounts of `subs`, from the catalog or, for those it does not hold, `subscriptions`.
async fn subscriber_accounts(
    conn: &mut SqliteConnection,
    catalog: &Catalog,
    subs: &[&SubscriptionId],
) -> Result<HashMap<SubscriptionId, String>, sqlx::Error> {
    let AccountLookup { mut found, missing } = catalog.accounts(subs);
    if missing.is_empty() {
        return Ok(found);
    }
    let mut looked_up: HashMap<SubscriptionId, Option<String>> =
        missing.iter().map(|s| ((*s).clone(), None)).collect();
    for (start, len) in chunks(missing.len()) {
        let text = format!(
            "WITH x(t, d) AS (VALUES {}) SELECT s.sub_type, s.sub_data, s.account_id \
             FROM x CROSS JOIN subscriptions s ON s.sub_type = x.t AND s.sub_data = x.d",
            values(len, 2)
        );
        let mut q = sqlx::query(&text);
        for s in &missing[start..start + len] {
            q = q.bind(i64::from(s.kind.code())).bind(s.data.as_str());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let sub = subscription(row.try_get("sub_type")?, row.try_get("sub_data")?)?;
            let account: String = row.try_get("account_id")?;
            found.insert(sub.clone(), account.clone());
            looked_up.insert(sub, Some(account));
        }
    }
    catalog.remember(looked_up);
    Ok(found)
}

/// Steps 1 and 2 under the write lock: the catalog, the batch's session credits, the
/// accounts of its subscribers and credits, their stored answers and valid allowances.
async fn read(
    conn: &mut SqliteConnection,
    catalog: &Catalog,
    now: Timestamp,
    ops: &[Op],
) -> Result<Snapshot, sqlx::Error> {
    let keys = BatchKeys::of(ops);
    let all_tariffs = tariffs_in_transaction::<Sqlite>(&mut *conn, catalog).await?;
    let subscribers = subscriber_accounts(conn, catalog, &keys.subscribers).await?;
    let tariffs: Vec<TariffEntry> = all_tariffs
        .iter()
        .filter(|t| keys.contexts.contains(t.service_context.as_str()))
        .cloned()
        .collect();
    let open = fetch_by_keys(
        conn,
        &keys.sessions,
        |v| {
            format!(
                "WITH x(k) AS (VALUES {v}) SELECT {} FROM x CROSS JOIN session_credits c \
                 ON c.session_ref = x.k",
                credit_cols!()
            )
        },
        None,
    )
    .await?
    .iter()
    .map(credit_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let ids: BTreeSet<&str> = subscribers
        .values()
        .map(String::as_str)
        .chain(open.iter().map(|r| r.account_id.as_str()))
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let accounts = fetch_accounts(conn, &ids).await?;
    let request_keys: Vec<&str> = keys.request_keys.iter().map(String::as_str).collect();
    let mut stored = HashMap::new();
    for row in fetch_by_keys(
        conn,
        &request_keys,
        |v| {
            format!(
                "WITH x(k) AS (VALUES {v}) SELECT j.request_key, j.fingerprint, j.outcome \
                 FROM x CROSS JOIN journal j ON j.request_key = x.k AND j.part = 0"
            )
        },
        None,
    )
    .await?
    {
        stored.insert(
            row.try_get("request_key")?,
            StoredOutcome {
                fingerprint: row.try_get("fingerprint")?,
                outcome: row.try_get("outcome")?,
            },
        );
    }
    let allowances = fetch_by_keys(
        conn,
        &ids,
        |v| {
            format!(
                "WITH x(k) AS (VALUES {v}) SELECT w.id, w.account_id, w.unit, \
                 w.valid_until_ms, w.remaining, w.reserved FROM x CROSS JOIN allowances w \
                 ON w.account_id = x.k AND w.valid_until_ms > ?"
            )
        },
        Some(now.0),
    )
    .await?
    .iter()
    .map(allowance_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        accounts,
        subscribers,
        open,
        tariffs,
        allowances,
        stored,
    })
}

/// The accounts of `ids`, by id (the write lock is held: reading is locking).
async fn fetch_accounts(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<HashMap<String, Account>, sqlx::Error> {
    let mut accounts = HashMap::new();
    for row in fetch_by_keys(
        conn,
        ids,
        |v| {
            format!(
                "WITH x(k) AS (VALUES {v}) SELECT {} FROM x CROSS JOIN accounts a ON a.id = x.k",
                account_cols!()
            )
        },
        None,
    )
    .await?
    {
        let a = account_from_row(&row)?;
        accounts.insert(a.id.clone(), a);
    }
    Ok(accounts)
}

/// Up to `chunk` session credits open past their expiry and their accounts (the write lock
/// is held: nothing can resolve them meanwhile). The read scans `session_credits`, which
/// holds only open credits.
async fn load_expired(
    conn: &mut SqliteConnection,
    now: Timestamp,
    chunk: i64,
) -> Result<Snapshot, sqlx::Error> {
    let open = sqlx::query(concat!(
        "SELECT ",
        credit_cols!(),
        " FROM session_credits c WHERE c.expires_at_ms <= ? ORDER BY c.reservation_id LIMIT ?"
    ))
    .bind(now.0)
    .bind(chunk)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(credit_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let mut snapshot = Snapshot {
        open,
        ..Snapshot::default()
    };
    let ids: BTreeSet<&str> = snapshot
        .open
        .iter()
        .map(|r| r.account_id.as_str())
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    snapshot.accounts = fetch_accounts(conn, &ids).await?;
    Ok(snapshot)
}

/// [`CreditRow`]'s columns, in binding order.
const CREDIT_COLUMNS: &str = "credit_id, reservation_id, account_id, session_ref, \
    service_context, rating_group, service_id, unit, granted_units, allowance_id, \
    allowance_units, pending_amount, price_minor, price_per_units, expires_at_ms, session_used, \
    session_charged, request_key, opened_at_ms, granted_at_ms";

fn bind_credit<'q>(q: SqliteQuery<'q>, r: &'q CreditRow) -> SqliteQuery<'q> {
    q.bind(r.credit_id.as_str())
        .bind(r.reservation_id.as_str())
        .bind(r.account_id.as_str())
        .bind(r.session_ref.as_str())
        .bind(r.service_context.as_str())
        .bind(r.rating_group)
        .bind(r.service_id)
        .bind(r.unit)
        .bind(r.granted_units)
        .bind(r.allowance_id)
        .bind(r.allowance_units)
        .bind(r.pending_amount)
        .bind(r.price_minor)
        .bind(r.price_per_units)
        .bind(r.expires_at_ms)
        .bind(r.session_used)
        .bind(r.session_charged)
        .bind(r.request_key.as_str())
        .bind(r.opened_at_ms)
        .bind(r.granted_at_ms)
}

/// The key of a session credit in `x`, matched the way its one index is built.
const CREDIT_KEY_MATCH: &str = "c.session_ref = x.session_ref \
    AND c.service_context = x.service_context \
    AND COALESCE(c.rating_group, -1) = COALESCE(x.rating_group, -1) \
    AND COALESCE(c.service_id, -1) = COALESCE(x.service_id, -1)";

/// What a regrant changes: everything but the credit's key (see `pg.rs`).
const REGRANT_SET: &str = "credit_id = x.credit_id, account_id = x.account_id, unit = x.unit, \
    opened_at_ms = x.opened_at_ms, reservation_id = x.reservation_id, \
    granted_units = x.granted_units, allowance_id = x.allowance_id, \
    allowance_units = x.allowance_units, pending_amount = x.pending_amount, \
    price_minor = x.price_minor, price_per_units = x.price_per_units, \
    expires_at_ms = x.expires_at_ms, session_used = x.session_used, \
    session_charged = x.session_charged, request_key = x.request_key, \
    granted_at_ms = x.granted_at_ms";

/// The journal's columns, in binding order.
const JOURNAL_COLUMNS: &str = "request_key, part, op, fingerprint, outcome, account_id, \
    session_ref, entry_id, kind, amount, pending_delta, allowance_id, units, pending_units, \
    reservation_id, used_units, unbilled, hold_entry_id, hold_reservation_id, hold_amount, \
    hold_allowance_id, hold_units, created_at_ms";

/// A journal row's parameters. Entry ids: `base` (the counter as read at the start of the
/// write) plus the entry's number in the batch.
fn bind_journal<'q>(q: SqliteQuery<'q>, r: &'q JournalRow, base: i64, now: i64) -> SqliteQuery<'q> {
    q.bind(r.request_key.as_str())
        .bind(r.part)
        .bind(r.op)
        .bind(r.fingerprint.as_deref())
        .bind(r.outcome.as_deref())
        .bind(r.account_id.as_deref())
        .bind(r.session_ref.as_deref())
        .bind(r.entry_no.map(|n| base + n))
        .bind(r.kind)
        .bind(r.amount)
        .bind(r.pending_delta)
        .bind(r.allowance_id)
        .bind(r.units)
        .bind(r.pending_units)
        .bind(r.reservation_id.as_deref())
        .bind(r.used_units)
        .bind(r.unbilled)
        .bind(r.hold_entry_no.map(|n| base + n))
        .bind(r.hold_reservation_id.as_deref())
        .bind(r.hold_amount)
        .bind(r.hold_allowance_id)
        .bind(r.hold_units)
        .bind(now)
}

/// Step 4: one statement per kind of row (and chunk), each skipped when it has no rows, in the
/// order the unique index of `session_credits` needs: closed credits first, then regrants,
/// then new ones. Updates and deletes must each hit exactly one row.
async fn write(conn: &mut SqliteConnection, fx: &Effects) -> Result<(), sqlx::Error> {
    if fx.is_empty() {
        return Ok(());
    }
    let now = fx.now.0;
    let closed = execute_chunks(
        conn,
        &fx.credits_closed,
        5,
        |v| {
            format!(
                "WITH x(session_ref, service_context, rating_group, service_id, reservation_id) \
                 AS (VALUES {v}) DELETE FROM session_credits WHERE rowid IN (SELECT c.rowid \
                 FROM x CROSS JOIN session_credits c ON {CREDIT_KEY_MATCH} \
                 AND c.reservation_id = x.reservation_id)"
            )
        },
        |q, c| {
            q.bind(c.key.session_ref.as_str())
                .bind(c.key.service_context.as_str())
                .bind(c.key.rating_group)
                .bind(c.key.service_id)
                .bind(c.reservation_id.as_str())
        },
    )
    .await?;
    let regranted = execute_chunks(
        conn,
        &fx.credits_regranted,
        21,
        |v| {
            format!(
                "WITH x(from_reservation_id, {CREDIT_COLUMNS}) AS (VALUES {v}) \
                 UPDATE session_credits AS c SET {REGRANT_SET} FROM x \
                 WHERE {CREDIT_KEY_MATCH} AND c.reservation_id = x.from_reservation_id"
            )
        },
        |q, g| bind_credit(q.bind(g.from_reservation_id.as_str()), &g.row),
    )
    .await?;
    execute_chunks(
        conn,
        &fx.credits_opened,
        20,
        |v| format!("INSERT INTO session_credits ({CREDIT_COLUMNS}) VALUES {v}"),
        bind_credit,
    )
    .await?;
    if !fx.journal.is_empty() {
        let base: i64 =
            sqlx::query_scalar("SELECT next_entry_id FROM ledger_counters WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
        execute_chunks(
            conn,
            &fx.journal,
            23,
            |v| format!("INSERT INTO journal ({JOURNAL_COLUMNS}) VALUES {v}"),
            |q, r| bind_journal(q, r, base, now),
        )
        .await?;
        if fx.entry_count > 0 {
            sqlx::query(
                "UPDATE ledger_counters SET next_entry_id = next_entry_id + ? WHERE id = 1",
            )
            .bind(fx.entry_count)
            .execute(&mut *conn)
            .await?;
        }
    }
    let accounts = execute_chunks(
        conn,
        &fx.account_sums,
        3,
        |v| {
            format!(
                "WITH x(id, balance, reserved) AS (VALUES {v}) UPDATE accounts AS a \
                 SET balance = a.balance + x.balance, reserved = a.reserved + x.reserved \
                 FROM x WHERE a.id = x.id"
            )
        },
        |q, s| q.bind(s.id.as_str()).bind(s.balance).bind(s.reserved),
    )
    .await?;
    let allowances = execute_chunks(
        conn,
        &fx.allowance_sums,
        3,
        |v| {
            format!(
                "WITH x(id, remaining, reserved) AS (VALUES {v}) UPDATE allowances AS w \
                 SET remaining = w.remaining + x.remaining, reserved = w.reserved + x.reserved \
                 FROM x WHERE w.id = x.id"
            )
        },
        |q, s| q.bind(s.id).bind(s.remaining).bind(s.reserved),
    )
    .await?;
    execute_chunks(
        conn,
        &fx.records,
        12,
        |v| {
            format!(
                "INSERT INTO charging_records (account_id, kind, session_ref, service_context, \
                 rating_group, service_id, unit, used_units, charged, request_key, payload, \
                 created_at_ms) VALUES {v}"
            )
        },
        |q, r| {
            q.bind(r.account_id.as_str())
                .bind(r.kind)
                .bind(r.session_ref.as_str())
                .bind(r.service_context.as_str())
                .bind(r.rating_group)
                .bind(r.service_id)
                .bind(r.unit)
                .bind(r.used_units)
                .bind(r.charged)
                .bind(r.request_key.as_str())
                .bind(r.payload.as_deref())
                .bind(now)
        },
    )
    .await?;
    check_counts(
        fx,
        Written {
            closed,
            regranted,
            accounts,
            allowances,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_in_power_of_two_sizes() {
        for n in 0..300 {
            let c = chunks(n);
            assert_eq!(c.iter().map(|(_, l)| l).sum::<usize>(), n);
            let mut next = 0;
            for (start, len) in c {
                assert_eq!(start, next);
                assert!(len.is_power_of_two() && len <= MAX_CHUNK);
                next += len;
            }
        }
    }
}
