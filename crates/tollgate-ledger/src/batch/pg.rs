//! A batch on PostgreSQL (`sqlx::Postgres`): steps 1, 2 and 4 of `batch` as prepared
//! statements (sqlx prepares each on first use per connection and keeps it), every row set
//! bound as typed arrays and expanded with `UNNEST`, so nothing is parsed as JSON.

use super::tariffs_in_transaction;
use super::{
    begin, decide, decide_expiry, end, lock_rounds_exhausted, BatchKeys, ExpireChunk, LOCK_ROUNDS,
};
use crate::catalog::{AccountLookup, Catalog};
use crate::rows::{
    account_cols, account_from_row, allowance_from_row, credit_cols, credit_from_row, subscription,
};
use crate::store::Dialect;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{PgConnection, Row};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use tollgate_ocs::engine::{
    Account, CreditRow, Effects, Op, OpResult, Snapshot, StoredOutcome, TariffEntry,
};
use tollgate_ocs::{SubscriptionId, Timestamp};

pub(super) async fn run_batch(
    pool: &PgPool,
    catalog: &Catalog,
    now: Timestamp,
    ops: &[Op],
) -> Result<Vec<OpResult>, sqlx::Error> {
    let mut conn = begin(pool, Dialect::Postgres.begin()).await?;
    let result = async {
        let snapshot = read_locked(&mut conn, catalog, now, ops).await?;
        let (out, effects) = decide(now, snapshot, ops)?;
        write(&mut conn, &effects).await?;
        Ok(out)
    }
    .await;
    end(conn, result).await
}

pub(super) async fn run_expire(
    pool: &PgPool,
    now: Timestamp,
    chunk: i64,
) -> Result<ExpireChunk, sqlx::Error> {
    // A plain BEGIN: the sweep's first read scans `session_credits`, which the batches'
    // planner settings ([`Dialect::begin`]) would turn into a walk of the whole index, dead
    // entries included (measured ~110 ms per sweep under load, against a few ms).
    let mut conn = begin(pool, "BEGIN").await?;
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
    pool: &PgPool,
    catalog: &Catalog,
) -> Result<Arc<Vec<TariffEntry>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    tariffs_in_transaction::<Postgres>(&mut *conn, catalog).await
}

/// The accounts of `subs`, from the catalog or, for those it does not hold, `subscriptions`.
async fn subscriber_accounts(
    conn: &mut PgConnection,
    catalog: &Catalog,
    subs: &[&SubscriptionId],
) -> Result<HashMap<SubscriptionId, String>, sqlx::Error> {
    let AccountLookup { mut found, missing } = catalog.accounts(subs);
    if missing.is_empty() {
        return Ok(found);
    }
    let kinds: Vec<i16> = missing.iter().map(|s| s.kind.code()).collect();
    let data: Vec<&str> = missing.iter().map(|s| s.data.as_str()).collect();
    let rows = sqlx::query(
        "SELECT s.sub_type, s.sub_data, s.account_id \
         FROM UNNEST($1::int2[], $2::text[]) AS x(t, d) \
         JOIN subscriptions s ON s.sub_type = x.t AND s.sub_data = x.d",
    )
    .bind(&kinds)
    .bind(&data)
    .fetch_all(&mut *conn)
    .await?;
    let mut looked_up: HashMap<SubscriptionId, Option<String>> =
        missing.iter().map(|s| ((*s).clone(), None)).collect();
    for row in rows {
        let kind: i16 = row.try_get("sub_type")?;
        let sub = subscription(i64::from(kind), row.try_get("sub_data")?)?;
        let account: String = row.try_get("account_id")?;
        found.insert(sub.clone(), account.clone());
        looked_up.insert(sub, Some(account));
    }
    catalog.remember(looked_up);
    Ok(found)
}

/// Lock `ids` and the accounts of the open credits of `sessions`, in id order.
const LOCK_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_cols!(),
    " FROM accounts a WHERE a.id IN (SELECT unnest($1::text[]) \
       UNION SELECT c.account_id FROM session_credits c WHERE c.session_ref = ANY($2::text[])) \
     ORDER BY a.id FOR UPDATE"
);

const READ_CREDITS: &str = concat!(
    "SELECT ",
    credit_cols!(),
    " FROM session_credits c WHERE c.session_ref = ANY($1::text[])"
);

/// Stored answers are part 0 of their request's journal rows.
const READ_ANSWERS: &str = "SELECT request_key, fingerprint, outcome FROM journal \
    WHERE request_key = ANY($1::text[]) AND part = 0";

/// Only valid allowances can be drawn on; expired ones are still posted to by id (deltas),
/// which needs no read.
const READ_ALLOWANCES: &str = "SELECT id, account_id, unit, valid_until_ms, remaining, reserved \
    FROM allowances WHERE account_id = ANY($1::text[]) AND valid_until_ms > $2";

async fn lock(
    conn: &mut PgConnection,
    ids: &[&str],
    sessions: &[&str],
    locked: &mut HashMap<String, Account>,
) -> Result<(), sqlx::Error> {
    for row in sqlx::query(LOCK_ACCOUNTS)
        .bind(ids)
        .bind(sessions)
        .fetch_all(&mut *conn)
        .await?
    {
        let a = account_from_row(&row)?;
        locked.insert(a.id.clone(), a);
    }
    Ok(())
}

/// Steps 1 and 2: the catalog, then lock, read, and lock again until every account the reads
/// name is locked.
async fn read_locked(
    conn: &mut PgConnection,
    catalog: &Catalog,
    now: Timestamp,
    ops: &[Op],
) -> Result<Snapshot, sqlx::Error> {
    let keys = BatchKeys::of(ops);
    let all_tariffs = tariffs_in_transaction::<Postgres>(&mut *conn, catalog).await?;
    let subscribers = subscriber_accounts(conn, catalog, &keys.subscribers).await?;
    let tariffs: Vec<TariffEntry> = all_tariffs
        .iter()
        .filter(|t| keys.contexts.contains(t.service_context.as_str()))
        .cloned()
        .collect();
    let mut locked = HashMap::new();
    let ids: BTreeSet<&str> = subscribers.values().map(String::as_str).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    lock(conn, &ids, &keys.sessions, &mut locked).await?;
    for _ in 0..LOCK_ROUNDS {
        let open = sqlx::query(READ_CREDITS)
            .bind(&keys.sessions)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(credit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let missing: BTreeSet<&str> = open
            .iter()
            .map(|r| r.account_id.as_str())
            .filter(|id| !locked.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.into_iter().collect();
            lock(conn, &missing, &[], &mut locked).await?;
            continue;
        }
        let mut stored = HashMap::new();
        for row in sqlx::query(READ_ANSWERS)
            .bind(&keys.request_keys)
            .fetch_all(&mut *conn)
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
        let account_ids: Vec<&str> = locked.keys().map(String::as_str).collect();
        let allowances = sqlx::query(READ_ALLOWANCES)
            .bind(&account_ids)
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(allowance_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Snapshot {
            accounts: locked,
            subscribers,
            open,
            tariffs,
            allowances,
            stored,
        });
    }
    Err(lock_rounds_exhausted())
}

/// Up to `chunk` session credits open past their expiry, with their accounts locked (in id
/// order, as every batch locks) and re-read under the locks by their sessions (the index), so
/// one a commit resolved or regranted meanwhile is not in the snapshot. The first read scans
/// `session_credits`, which holds only open credits (an index on the expiry would cost every
/// CCR-U its HOT update, migrations/postgres/0006_ledger_v2.sql).
async fn load_expired(
    conn: &mut PgConnection,
    now: Timestamp,
    chunk: i64,
) -> Result<Snapshot, sqlx::Error> {
    let due = sqlx::query(concat!(
        "SELECT ",
        credit_cols!(),
        " FROM session_credits c WHERE c.expires_at_ms <= $1 ORDER BY c.reservation_id LIMIT $2"
    ))
    .bind(now.0)
    .bind(chunk)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(credit_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let mut snapshot = Snapshot::default();
    if due.is_empty() {
        return Ok(snapshot);
    }
    let accounts: BTreeSet<&str> = due.iter().map(|r| r.account_id.as_str()).collect();
    let accounts: Vec<&str> = accounts.into_iter().collect();
    lock(conn, &accounts, &[], &mut snapshot.accounts).await?;
    let sessions: BTreeSet<&str> = due.iter().map(|r| r.session_ref.as_str()).collect();
    let sessions: Vec<&str> = sessions.into_iter().collect();
    let due: BTreeSet<&str> = due.iter().map(|r| r.id.as_str()).collect();
    snapshot.open = sqlx::query(READ_CREDITS)
        .bind(&sessions)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(credit_from_row)
        .filter(|r| match r {
            Ok(r) => due.contains(r.id.as_str()) && r.expires_at <= now,
            Err(_) => true,
        })
        .collect::<Result<Vec<_>, _>>()?;
    snapshot.open.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(snapshot)
}

/// A session credit's columns, one array each (`CreditRow`'s fields in order).
#[derive(Default)]
struct CreditColumns<'a> {
    credit_id: Vec<&'a str>,
    reservation_id: Vec<&'a str>,
    account_id: Vec<&'a str>,
    session_ref: Vec<&'a str>,
    service_context: Vec<&'a str>,
    rating_group: Vec<Option<i64>>,
    service_id: Vec<Option<i64>>,
    unit: Vec<&'a str>,
    granted_units: Vec<i64>,
    allowance_id: Vec<Option<i64>>,
    allowance_units: Vec<i64>,
    pending_amount: Vec<i64>,
    price_minor: Vec<i64>,
    price_per_units: Vec<i64>,
    expires_at_ms: Vec<i64>,
    session_used: Vec<i64>,
    session_charged: Vec<i64>,
    request_key: Vec<&'a str>,
    opened_at_ms: Vec<i64>,
    granted_at_ms: Vec<i64>,
}

impl<'a> CreditColumns<'a> {
    fn of(rows: impl Iterator<Item = &'a CreditRow>) -> Self {
        let mut c = CreditColumns::default();
        for r in rows {
            c.credit_id.push(&r.credit_id);
            c.reservation_id.push(&r.reservation_id);
            c.account_id.push(&r.account_id);
            c.session_ref.push(&r.session_ref);
            c.service_context.push(&r.service_context);
            c.rating_group.push(r.rating_group);
            c.service_id.push(r.service_id);
            c.unit.push(r.unit);
            c.granted_units.push(r.granted_units);
            c.allowance_id.push(r.allowance_id);
            c.allowance_units.push(r.allowance_units);
            c.pending_amount.push(r.pending_amount);
            c.price_minor.push(r.price_minor);
            c.price_per_units.push(r.price_per_units);
            c.expires_at_ms.push(r.expires_at_ms);
            c.session_used.push(r.session_used);
            c.session_charged.push(r.session_charged);
            c.request_key.push(&r.request_key);
            c.opened_at_ms.push(r.opened_at_ms);
            c.granted_at_ms.push(r.granted_at_ms);
        }
        c
    }

    fn bind<'q>(self, q: PgQuery<'q>) -> PgQuery<'q>
    where
        'a: 'q,
    {
        q.bind(self.credit_id)
            .bind(self.reservation_id)
            .bind(self.account_id)
            .bind(self.session_ref)
            .bind(self.service_context)
            .bind(self.rating_group)
            .bind(self.service_id)
            .bind(self.unit)
            .bind(self.granted_units)
            .bind(self.allowance_id)
            .bind(self.allowance_units)
            .bind(self.pending_amount)
            .bind(self.price_minor)
            .bind(self.price_per_units)
            .bind(self.expires_at_ms)
            .bind(self.session_used)
            .bind(self.session_charged)
            .bind(self.request_key)
            .bind(self.opened_at_ms)
            .bind(self.granted_at_ms)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// [`CreditColumns`] as (column, array type), in binding order.
const CREDIT_COLUMNS: [(&str, &str); 20] = [
    ("credit_id", "text"),
    ("reservation_id", "text"),
    ("account_id", "text"),
    ("session_ref", "text"),
    ("service_context", "text"),
    ("rating_group", "int8"),
    ("service_id", "int8"),
    ("unit", "text"),
    ("granted_units", "int8"),
    ("allowance_id", "int8"),
    ("allowance_units", "int8"),
    ("pending_amount", "int8"),
    ("price_minor", "int8"),
    ("price_per_units", "int8"),
    ("expires_at_ms", "int8"),
    ("session_used", "int8"),
    ("session_charged", "int8"),
    ("request_key", "text"),
    ("opened_at_ms", "int8"),
    ("granted_at_ms", "int8"),
];

/// The journal's columns bound as arrays, in binding order. `entry_no` and `hold_entry_no`
/// only say whether the row carries that entry; the ids come from `ledger_entry_ids`.
const JOURNAL_COLUMNS: [(&str, &str); 22] = [
    ("request_key", "text"),
    ("part", "int2"),
    ("op", "text"),
    ("fingerprint", "text"),
    ("outcome", "text"),
    ("account_id", "text"),
    ("session_ref", "text"),
    ("entry_no", "int8"),
    ("kind", "text"),
    ("amount", "int8"),
    ("pending_delta", "int8"),
    ("allowance_id", "int8"),
    ("units", "int8"),
    ("pending_units", "int8"),
    ("reservation_id", "text"),
    ("used_units", "int8"),
    ("unbilled", "int8"),
    ("hold_entry_no", "int8"),
    ("hold_reservation_id", "text"),
    ("hold_amount", "int8"),
    ("hold_allowance_id", "int8"),
    ("hold_units", "int8"),
];

const RECORD_COLUMNS: [(&str, &str); 11] = [
    ("account_id", "text"),
    ("kind", "text"),
    ("session_ref", "text"),
    ("service_context", "text"),
    ("rating_group", "int8"),
    ("service_id", "int8"),
    ("unit", "text"),
    ("used_units", "int8"),
    ("charged", "int8"),
    ("request_key", "text"),
    ("payload", "text"),
];

/// Numbers the statement's parameters as they are used.
struct Params(usize);

impl Params {
    /// `UNNEST($n::t[], …) WITH ORDINALITY AS x(c, …, ord)` over `cols`.
    fn unnest(&mut self, cols: &[(&str, &str)]) -> String {
        let arrays: Vec<String> = cols
            .iter()
            .map(|(_, t)| {
                self.0 += 1;
                format!("${}::{t}[]", self.0)
            })
            .collect();
        let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
        format!(
            "UNNEST({}) WITH ORDINALITY AS x({}, ord)",
            arrays.join(", "),
            names.join(", ")
        )
    }
}

/// The key of a session credit in `x`, matched the way its one index is built.
const CREDIT_KEY_MATCH: &str = "c.session_ref = x.session_ref \
    AND c.service_context = x.service_context \
    AND COALESCE(c.rating_group, -1) = COALESCE(x.rating_group, -1) \
    AND COALESCE(c.service_id, -1) = COALESCE(x.service_id, -1)";

/// What a regrant changes: everything but the credit's key, which its index holds, so the
/// update can be HOT. (A CCR-U keeps the credit, account and unit; a credit ended and opened
/// again for the same key within one batch is a regrant that changes them too.)
const REGRANT_SET: &str = "credit_id = x.credit_id, account_id = x.account_id, unit = x.unit, \
    opened_at_ms = x.opened_at_ms, reservation_id = x.reservation_id, \
    granted_units = x.granted_units, allowance_id = x.allowance_id, \
    allowance_units = x.allowance_units, pending_amount = x.pending_amount, \
    price_minor = x.price_minor, price_per_units = x.price_per_units, \
    expires_at_ms = x.expires_at_ms, session_used = x.session_used, \
    session_charged = x.session_charged, request_key = x.request_key, \
    granted_at_ms = x.granted_at_ms";

/// Step 4 as one statement of data-modifying CTEs. They all run on one snapshot, so they must
/// not touch the same row twice: the engine hands over each session credit once (closed,
/// regranted or opened). Entry ids come from `ledger_entry_ids` in journal order: PostgreSQL
/// evaluates the volatile `nextval` after the ORDER BY.
static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    // $1 is the batch's time.
    let mut p = Params(1);
    let closed = p.unnest(&[
        ("session_ref", "text"),
        ("service_context", "text"),
        ("rating_group", "int8"),
        ("service_id", "int8"),
        ("reservation_id", "text"),
    ]);
    let mut regrant_cols = vec![("from_reservation_id", "text")];
    regrant_cols.extend(CREDIT_COLUMNS);
    let regranted = p.unnest(&regrant_cols);
    let opened = p.unnest(&CREDIT_COLUMNS);
    let journal = p.unnest(&JOURNAL_COLUMNS);
    let account_sums = p.unnest(&[("id", "text"), ("balance", "int8"), ("reserved", "int8")]);
    let allowance_sums = p.unnest(&[("id", "int8"), ("remaining", "int8"), ("reserved", "int8")]);
    let records = p.unnest(&RECORD_COLUMNS);
    let credit_names: Vec<&str> = CREDIT_COLUMNS.iter().map(|(c, _)| *c).collect();
    let credit_names = credit_names.join(", ");
    format!(
        "WITH \
         closed AS (DELETE FROM session_credits c USING {closed} \
           WHERE {CREDIT_KEY_MATCH} AND c.reservation_id = x.reservation_id RETURNING 1), \
         regranted AS (UPDATE session_credits c SET {REGRANT_SET} FROM {regranted} \
           WHERE {CREDIT_KEY_MATCH} AND c.reservation_id = x.from_reservation_id RETURNING 1), \
         opened AS (INSERT INTO session_credits ({credit_names}) \
           SELECT {credit_names} FROM {opened}), \
         journal_rows AS (INSERT INTO journal (request_key, part, op, fingerprint, outcome, \
             account_id, session_ref, kind, amount, pending_delta, allowance_id, units, \
             pending_units, reservation_id, used_units, unbilled, hold_reservation_id, \
             hold_amount, hold_allowance_id, hold_units, created_at_ms, entry_id, hold_entry_id) \
           SELECT x.request_key, x.part, x.op, x.fingerprint, x.outcome, x.account_id, \
             x.session_ref, x.kind, x.amount, x.pending_delta, x.allowance_id, x.units, \
             x.pending_units, x.reservation_id, x.used_units, x.unbilled, \
             x.hold_reservation_id, x.hold_amount, x.hold_allowance_id, x.hold_units, $1, \
             CASE WHEN x.entry_no IS NOT NULL THEN nextval('ledger_entry_ids') END, \
             CASE WHEN x.hold_entry_no IS NOT NULL THEN nextval('ledger_entry_ids') END \
           FROM {journal} ORDER BY x.ord), \
         account_sums AS (UPDATE accounts a SET balance = a.balance + x.balance, \
             reserved = a.reserved + x.reserved FROM {account_sums} WHERE a.id = x.id RETURNING 1), \
         allowance_sums AS (UPDATE allowances w SET remaining = w.remaining + x.remaining, \
             reserved = w.reserved + x.reserved FROM {allowance_sums} WHERE w.id = x.id RETURNING 1), \
         records AS (INSERT INTO charging_records (account_id, kind, session_ref, \
             service_context, rating_group, service_id, unit, used_units, charged, request_key, \
             payload, created_at_ms) \
           SELECT x.account_id, x.kind, x.session_ref, x.service_context, x.rating_group, \
             x.service_id, x.unit, x.used_units, x.charged, x.request_key, \
             CAST(x.payload AS JSONB), $1 FROM {records} ORDER BY x.ord) \
         SELECT (SELECT count(*) FROM closed) AS closed, \
           (SELECT count(*) FROM regranted) AS regranted, \
           (SELECT count(*) FROM account_sums) AS accounts, \
           (SELECT count(*) FROM allowance_sums) AS allowances",
    )
});

/// Step 4: every row of the batch in one statement. Updates and deletes of rows read under
/// the locks must each hit exactly one row; anything else means the locks did not hold what
/// the batch read, and the transaction is rolled back.
async fn write(conn: &mut PgConnection, fx: &Effects) -> Result<(), sqlx::Error> {
    if fx.is_empty() {
        return Ok(());
    }
    // A release of more than 32,767 credits of one session cannot be journaled: refuse the
    // batch rather than write two rows under one key.
    let parts = fx
        .journal
        .iter()
        .map(|x| i16::try_from(x.part))
        .collect::<Result<Vec<i16>, _>>()
        .map_err(|_| {
            super::protocol("ledger batch: a request with more than 32,767 journal rows")
        })?;
    let c = &fx.credits_closed;
    let g = &fx.credits_regranted;
    let j = &fx.journal;
    let r = &fx.records;
    let mut q = sqlx::query(WRITE_BATCH.as_str())
        .bind(fx.now.0)
        .bind(
            c.iter()
                .map(|x| x.key.session_ref.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|x| x.key.service_context.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|x| x.key.rating_group).collect::<Vec<_>>())
        .bind(c.iter().map(|x| x.key.service_id).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|x| x.reservation_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            g.iter()
                .map(|x| x.from_reservation_id.as_str())
                .collect::<Vec<_>>(),
        );
    q = CreditColumns::of(g.iter().map(|x| &x.row)).bind(q);
    q = CreditColumns::of(fx.credits_opened.iter()).bind(q);
    let q = q
        .bind(j.iter().map(|x| x.request_key.as_str()).collect::<Vec<_>>())
        .bind(parts)
        .bind(j.iter().map(|x| x.op).collect::<Vec<_>>())
        .bind(
            j.iter()
                .map(|x| x.fingerprint.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(j.iter().map(|x| x.outcome.as_deref()).collect::<Vec<_>>())
        .bind(
            j.iter()
                .map(|x| x.account_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            j.iter()
                .map(|x| x.session_ref.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(j.iter().map(|x| x.entry_no).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.kind).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.amount).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.pending_delta).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.allowance_id).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.units).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.pending_units).collect::<Vec<_>>())
        .bind(
            j.iter()
                .map(|x| x.reservation_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(j.iter().map(|x| x.used_units).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.unbilled).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.hold_entry_no).collect::<Vec<_>>())
        .bind(
            j.iter()
                .map(|x| x.hold_reservation_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(j.iter().map(|x| x.hold_amount).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.hold_allowance_id).collect::<Vec<_>>())
        .bind(j.iter().map(|x| x.hold_units).collect::<Vec<_>>())
        .bind(
            fx.account_sums
                .iter()
                .map(|x| x.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            fx.account_sums
                .iter()
                .map(|x| x.balance)
                .collect::<Vec<_>>(),
        )
        .bind(
            fx.account_sums
                .iter()
                .map(|x| x.reserved)
                .collect::<Vec<_>>(),
        )
        .bind(fx.allowance_sums.iter().map(|x| x.id).collect::<Vec<_>>())
        .bind(
            fx.allowance_sums
                .iter()
                .map(|x| x.remaining)
                .collect::<Vec<_>>(),
        )
        .bind(
            fx.allowance_sums
                .iter()
                .map(|x| x.reserved)
                .collect::<Vec<_>>(),
        )
        .bind(r.iter().map(|x| x.account_id.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.kind).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.session_ref.as_str()).collect::<Vec<_>>())
        .bind(
            r.iter()
                .map(|x| x.service_context.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(r.iter().map(|x| x.rating_group).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.service_id).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.unit).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.used_units).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.charged).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.request_key.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.payload.as_deref()).collect::<Vec<_>>());
    let row = q.fetch_one(&mut *conn).await?;
    let count = |c: &str| -> Result<u64, sqlx::Error> {
        let n: i64 = row.try_get(c)?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    };
    super::check_counts(
        fx,
        super::Written {
            closed: count("closed")?,
            regranted: count("regranted")?,
            accounts: count("accounts")?,
            allowances: count("allowances")?,
        },
    )
}
