//! Step 4 of a batch: write the engine's [`Effects`] set-based, on PostgreSQL in one
//! statement of data-modifying CTEs, on SQLite (which has none) in one statement per kind of
//! row, in the order the unique index of `session_credits` needs.
//!
//! Per CCR of a session flow that is about one inserted row (its journal row), an in-place
//! update of its session credit and a share of its account's cached sums
//! (migrations/postgres/0006_ledger_v2.sql says why).

use super::{json_text, protocol};
use crate::store::Dialect;
use sqlx::{AnyConnection, Row};
use tollgate_ocs::engine::Effects;

/// Step 4: every row of the batch. Updates and deletes of rows read under the locks must
/// each hit exactly one row; anything else means the locks did not hold what the batch
/// read, and the transaction is rolled back.
pub(crate) async fn write(
    conn: &mut AnyConnection,
    dialect: Dialect,
    fx: &Effects,
) -> Result<(), sqlx::Error> {
    if fx.is_empty() {
        return Ok(());
    }
    if dialect == Dialect::Sqlite {
        return write_sqlite(conn, fx).await;
    }
    let row = sqlx::query(WRITE_BATCH)
        .bind(fx.now.0)
        .bind(json_text(&fx.credits_closed)?)
        .bind(json_text(&fx.credits_regranted)?)
        .bind(json_text(&fx.credits_opened)?)
        .bind(json_text(&fx.journal)?)
        .bind(json_text(&fx.account_sums)?)
        .bind(json_text(&fx.allowance_sums)?)
        .bind(json_text(&fx.records)?)
        .fetch_one(&mut *conn)
        .await?;
    let count = |c: &str| -> Result<u64, sqlx::Error> {
        let n: i64 = row.try_get(c)?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    };
    check_counts(
        fx,
        Written {
            closed: count("closed")?,
            regranted: count("regranted")?,
            accounts: count("accounts")?,
            allowances: count("allowances")?,
        },
    )
}

/// What the updates and deletes of a batch hit.
struct Written {
    closed: u64,
    regranted: u64,
    accounts: u64,
    allowances: u64,
}

/// Step 4 on SQLite, which has no data-modifying CTEs: one statement per kind of row, each
/// skipped when it has no rows. Still a handful of statements per batch instead of several
/// per operation, which matters because every statement is a round trip to sqlx's SQLite
/// worker thread.
async fn write_sqlite(conn: &mut AnyConnection, fx: &Effects) -> Result<(), sqlx::Error> {
    /// $1 the JSON row set, $2 (when given) the batch's time for `created_at_ms`.
    async fn run(
        conn: &mut AnyConnection,
        sql: &str,
        rows: String,
        now: Option<i64>,
    ) -> Result<u64, sqlx::Error> {
        let mut q = sqlx::query(sql).bind(rows);
        if let Some(now) = now {
            q = q.bind(now);
        }
        Ok(q.execute(&mut *conn).await?.rows_affected())
    }
    let now = Some(fx.now.0);
    // Closed credits first, then regrants, then new ones: a credit key the batch ended is
    // free for a new credit only after its row is gone.
    let closed = if fx.credits_closed.is_empty() {
        0
    } else {
        run(conn, SQLITE_CLOSE, json_text(&fx.credits_closed)?, None).await?
    };
    let regranted = if fx.credits_regranted.is_empty() {
        0
    } else {
        run(
            conn,
            SQLITE_REGRANT,
            json_text(&fx.credits_regranted)?,
            None,
        )
        .await?
    };
    if !fx.credits_opened.is_empty() {
        run(conn, SQLITE_OPEN, json_text(&fx.credits_opened)?, None).await?;
    }
    if !fx.journal.is_empty() {
        run(conn, SQLITE_JOURNAL, json_text(&fx.journal)?, now).await?;
    }
    if fx.entry_count > 0 {
        sqlx::query("UPDATE ledger_counters SET next_entry_id = next_entry_id + $1 WHERE id = 1")
            .bind(fx.entry_count)
            .execute(&mut *conn)
            .await?;
    }
    let accounts = if fx.account_sums.is_empty() {
        0
    } else {
        run(
            conn,
            SQLITE_ACCOUNT_SUMS,
            json_text(&fx.account_sums)?,
            None,
        )
        .await?
    };
    let allowances = if fx.allowance_sums.is_empty() {
        0
    } else {
        run(
            conn,
            SQLITE_ALLOWANCE_SUMS,
            json_text(&fx.allowance_sums)?,
            None,
        )
        .await?
    };
    if !fx.records.is_empty() {
        run(conn, SQLITE_RECORDS, json_text(&fx.records)?, now).await?;
    }
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

/// The columns of a session credit row, in `CreditRow`'s order.
macro_rules! credit_columns {
    () => {
        "credit_id, reservation_id, account_id, session_ref, service_context, rating_group, \
         service_id, unit, granted_units, allowance_id, allowance_units, pending_amount, \
         price_minor, price_per_units, expires_at_ms, session_used, session_charged, \
         request_key, opened_at_ms, granted_at_ms"
    };
}

/// `CreditRow` as a PostgreSQL record type for `jsonb_to_recordset`.
macro_rules! credit_record {
    () => {
        "credit_id text, reservation_id text, account_id text, session_ref text, \
         service_context text, rating_group bigint, service_id bigint, unit text, \
         granted_units bigint, allowance_id bigint, allowance_units bigint, \
         pending_amount bigint, price_minor bigint, price_per_units bigint, \
         expires_at_ms bigint, session_used bigint, session_charged bigint, request_key text, \
         opened_at_ms bigint, granted_at_ms bigint"
    };
}

/// What a regrant changes: everything but the credit's key, which its index holds, so the
/// update can be HOT. (A CCR-U keeps the credit, account and unit; a credit ended and opened
/// again for the same key within one batch is a regrant that changes them too.)
macro_rules! regrant_set {
    ($x:literal) => {
        concat!(
            "credit_id = ",
            $x,
            "credit_id, account_id = ",
            $x,
            "account_id, unit = ",
            $x,
            "unit, \
             opened_at_ms = ",
            $x,
            "opened_at_ms, \
             reservation_id = ",
            $x,
            "reservation_id, granted_units = ",
            $x,
            "granted_units, \
             allowance_id = ",
            $x,
            "allowance_id, allowance_units = ",
            $x,
            "allowance_units, \
             pending_amount = ",
            $x,
            "pending_amount, price_minor = ",
            $x,
            "price_minor, \
             price_per_units = ",
            $x,
            "price_per_units, expires_at_ms = ",
            $x,
            "expires_at_ms, \
             session_used = ",
            $x,
            "session_used, session_charged = ",
            $x,
            "session_charged, \
             request_key = ",
            $x,
            "request_key, granted_at_ms = ",
            $x,
            "granted_at_ms"
        )
    };
}

/// The journal's columns, but for the entry ids (which each dialect numbers its way).
macro_rules! journal_columns {
    () => {
        "request_key, part, op, fingerprint, outcome, account_id, session_ref, kind, amount, \
         pending_delta, allowance_id, units, pending_units, reservation_id, used_units, \
         unbilled, hold_reservation_id, hold_amount, hold_allowance_id, hold_units, \
         created_at_ms, entry_id, hold_entry_id"
    };
}

// Step 4 on SQLite: $1 the JSON row set (the same rows as `WRITE_BATCH`'s), $2 the batch's
// time. The row set is MATERIALIZED first: read straight from json_each, every `x.value`
// reference converts the element to text again; once per row instead made the embedded store
// ~16 % faster end to end. A credit is found by its key through the one index of
// `session_credits` (the COALESCE expressions are the index's).
const SQLITE_CLOSE: &str = "DELETE FROM session_credits WHERE rowid IN ( \
  SELECT c.rowid FROM json_each($1) x CROSS JOIN session_credits c \
  ON c.session_ref = x.value ->> 'session_ref' \
  AND c.service_context = x.value ->> 'service_context' \
  AND COALESCE(c.rating_group, -1) = COALESCE(x.value ->> 'rating_group', -1) \
  AND COALESCE(c.service_id, -1) = COALESCE(x.value ->> 'service_id', -1) \
  AND c.reservation_id = x.value ->> 'reservation_id')";
const SQLITE_REGRANT: &str = concat!(
    "WITH x AS MATERIALIZED (SELECT \
       value ->> 'from_reservation_id' AS from_reservation_id, \
       value ->> 'session_ref' AS session_ref, value ->> 'service_context' AS service_context, \
       COALESCE(value ->> 'rating_group', -1) AS rg, COALESCE(value ->> 'service_id', -1) AS sid, \
       value ->> 'credit_id' AS credit_id, value ->> 'account_id' AS account_id, \
       value ->> 'unit' AS unit, value ->> 'opened_at_ms' AS opened_at_ms, \
       value ->> 'reservation_id' AS reservation_id, value ->> 'granted_units' AS granted_units, \
       value ->> 'allowance_id' AS allowance_id, value ->> 'allowance_units' AS allowance_units, \
       value ->> 'pending_amount' AS pending_amount, value ->> 'price_minor' AS price_minor, \
       value ->> 'price_per_units' AS price_per_units, value ->> 'expires_at_ms' AS expires_at_ms, \
       value ->> 'session_used' AS session_used, value ->> 'session_charged' AS session_charged, \
       value ->> 'request_key' AS request_key, value ->> 'granted_at_ms' AS granted_at_ms \
     FROM json_each($1)) \
     UPDATE session_credits SET ",
    regrant_set!("x."),
    " FROM x WHERE session_credits.session_ref = x.session_ref \
     AND session_credits.service_context = x.service_context \
     AND COALESCE(session_credits.rating_group, -1) = x.rg \
     AND COALESCE(session_credits.service_id, -1) = x.sid \
     AND session_credits.reservation_id = x.from_reservation_id"
);
const SQLITE_OPEN: &str = concat!(
    "WITH x AS MATERIALIZED (SELECT key, value FROM json_each($1)) \
     INSERT INTO session_credits (",
    credit_columns!(),
    ") SELECT value ->> 'credit_id', value ->> 'reservation_id', value ->> 'account_id', \
       value ->> 'session_ref', value ->> 'service_context', value ->> 'rating_group', \
       value ->> 'service_id', value ->> 'unit', value ->> 'granted_units', \
       value ->> 'allowance_id', value ->> 'allowance_units', value ->> 'pending_amount', \
       value ->> 'price_minor', value ->> 'price_per_units', value ->> 'expires_at_ms', \
       value ->> 'session_used', value ->> 'session_charged', value ->> 'request_key', \
       value ->> 'opened_at_ms', value ->> 'granted_at_ms' \
     FROM x ORDER BY x.key"
);
/// Entry ids: the counter (`ledger_counters`, moved past this batch's entries right after)
/// plus the entry's number in the batch.
const SQLITE_JOURNAL: &str = concat!(
    "WITH x AS MATERIALIZED (SELECT key, value FROM json_each($1)), \
     base AS (SELECT next_entry_id AS b FROM ledger_counters WHERE id = 1) \
     INSERT INTO journal (",
    journal_columns!(),
    ") SELECT value ->> 'request_key', value ->> 'part', value ->> 'op', \
       value ->> 'fingerprint', value ->> 'outcome', value ->> 'account_id', \
       value ->> 'session_ref', value ->> 'kind', value ->> 'amount', \
       value ->> 'pending_delta', value ->> 'allowance_id', value ->> 'units', \
       value ->> 'pending_units', value ->> 'reservation_id', value ->> 'used_units', \
       value ->> 'unbilled', value ->> 'hold_reservation_id', value ->> 'hold_amount', \
       value ->> 'hold_allowance_id', value ->> 'hold_units', $2, \
       base.b + (value ->> 'entry_no'), base.b + (value ->> 'hold_entry_no') \
     FROM x CROSS JOIN base ORDER BY x.key"
);
const SQLITE_ACCOUNT_SUMS: &str = "WITH x AS MATERIALIZED (SELECT key, value FROM json_each($1)) \
  UPDATE accounts SET \
    balance = balance + (x.value ->> 'a'), reserved = reserved + (x.value ->> 'b') \
  FROM x WHERE accounts.id = x.value ->> 'id'";
const SQLITE_ALLOWANCE_SUMS: &str =
    "WITH x AS MATERIALIZED (SELECT key, value FROM json_each($1)) \
  UPDATE allowances SET \
    remaining = remaining + (x.value ->> 'a'), reserved = reserved + (x.value ->> 'b') \
  FROM x WHERE allowances.id = x.value ->> 'id'";
const SQLITE_RECORDS: &str = "WITH x AS MATERIALIZED (SELECT key, value FROM json_each($1)) \
  INSERT INTO charging_records (account_id, kind, session_ref, \
    service_context, rating_group, service_id, unit, used_units, charged, request_key, payload, \
    created_at_ms) \
  SELECT x.value ->> 'account_id', x.value ->> 'kind', x.value ->> 'session_ref', \
    x.value ->> 'service_context', x.value ->> 'rating_group', x.value ->> 'service_id', \
    x.value ->> 'unit', x.value ->> 'used_units', x.value ->> 'charged', \
    x.value ->> 'request_key', x.value ->> 'payload', $2 \
  FROM x ORDER BY x.value ->> 'seq'";

/// Step 4 as one statement. Data-modifying CTEs all run to completion on one snapshot, so
/// they must not touch the same row twice: the engine hands over each session credit once
/// (closed, regranted or opened). Entry ids come from `ledger_entry_ids` in journal order:
/// PostgreSQL evaluates the volatile `nextval` after the ORDER BY.
const WRITE_BATCH: &str = concat!(
    "WITH \
closed AS (DELETE FROM session_credits c \
  USING jsonb_to_recordset(CAST($2 AS JSONB)) AS x(session_ref text, service_context text, \
    rating_group bigint, service_id bigint, reservation_id text) \
  WHERE c.session_ref = x.session_ref AND c.service_context = x.service_context \
    AND COALESCE(c.rating_group, -1) = COALESCE(x.rating_group, -1) \
    AND COALESCE(c.service_id, -1) = COALESCE(x.service_id, -1) \
    AND c.reservation_id = x.reservation_id RETURNING 1), \
regranted AS (UPDATE session_credits c SET ",
    regrant_set!("x."),
    " FROM jsonb_to_recordset(CAST($3 AS JSONB)) AS x(from_reservation_id text, ",
    credit_record!(),
    ") WHERE c.session_ref = x.session_ref AND c.service_context = x.service_context \
    AND COALESCE(c.rating_group, -1) = COALESCE(x.rating_group, -1) \
    AND COALESCE(c.service_id, -1) = COALESCE(x.service_id, -1) \
    AND c.reservation_id = x.from_reservation_id RETURNING 1), \
opened AS (INSERT INTO session_credits (",
    credit_columns!(),
    ") SELECT ",
    credit_columns!(),
    " FROM jsonb_to_recordset(CAST($4 AS JSONB)) AS x(",
    credit_record!(),
    ")), \
journal_rows AS (INSERT INTO journal (",
    journal_columns!(),
    ") SELECT x.request_key, x.part, x.op, x.fingerprint, x.outcome, x.account_id, \
    x.session_ref, x.kind, x.amount, x.pending_delta, x.allowance_id, x.units, \
    x.pending_units, x.reservation_id, x.used_units, x.unbilled, x.hold_reservation_id, \
    x.hold_amount, x.hold_allowance_id, x.hold_units, $1, \
    CASE WHEN x.entry_no IS NOT NULL THEN nextval('ledger_entry_ids') END, \
    CASE WHEN x.hold_entry_no IS NOT NULL THEN nextval('ledger_entry_ids') END \
  FROM jsonb_to_recordset(CAST($5 AS JSONB)) AS x(seq int, request_key text, part smallint, \
    op text, fingerprint text, outcome text, account_id text, session_ref text, \
    entry_no bigint, kind text, amount bigint, pending_delta bigint, allowance_id bigint, \
    units bigint, pending_units bigint, reservation_id text, used_units bigint, \
    unbilled bigint, hold_entry_no bigint, hold_reservation_id text, hold_amount bigint, \
    hold_allowance_id bigint, hold_units bigint) ORDER BY x.seq), \
accounts_sums AS (UPDATE accounts a SET balance = a.balance + x.a, reserved = a.reserved + x.b \
  FROM jsonb_to_recordset(CAST($6 AS JSONB)) AS x(id text, a bigint, b bigint) \
  WHERE a.id = x.id RETURNING 1), \
allowance_sums AS (UPDATE allowances w SET remaining = w.remaining + x.a, reserved = w.reserved + x.b \
  FROM jsonb_to_recordset(CAST($7 AS JSONB)) AS x(id bigint, a bigint, b bigint) \
  WHERE w.id = x.id RETURNING 1), \
records AS (INSERT INTO charging_records (account_id, kind, session_ref, service_context, \
    rating_group, service_id, unit, used_units, charged, request_key, payload, created_at_ms) \
  SELECT x.account_id, x.kind, x.session_ref, x.service_context, x.rating_group, x.service_id, \
    x.unit, x.used_units, x.charged, x.request_key, CAST(x.payload AS JSONB), $1 \
  FROM jsonb_to_recordset(CAST($8 AS JSONB)) AS x(seq int, account_id text, kind text, \
    session_ref text, service_context text, rating_group bigint, service_id bigint, unit text, \
    used_units bigint, charged bigint, request_key text, payload text) ORDER BY x.seq) \
SELECT (SELECT count(*) FROM closed) AS closed, (SELECT count(*) FROM regranted) AS regranted, \
  (SELECT count(*) FROM accounts_sums) AS accounts, \
  (SELECT count(*) FROM allowance_sums) AS allowances"
);
