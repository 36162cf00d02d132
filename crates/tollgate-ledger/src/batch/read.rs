//! Steps 1 and 2 of a batch: lock the accounts it can touch, in id order, and load the
//! engine's [`Snapshot`] in one statement per dialect (see the module doc of `batch`).

use super::protocol;
use crate::catalog::Catalog;
use crate::rows::{account_from_row, AccountRow, ACCOUNT_COLS};
use crate::store::Dialect;
use serde::Deserialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeSet, HashMap};
use tollgate_ocs::engine::*;
use tollgate_ocs::*;

/// The batch's sessions, as the JSON array the lock and read statements take.
struct BatchKeys {
    sessions: String,
}

impl BatchKeys {
    fn of(ops: &[Op]) -> BatchKeys {
        let mut sessions: BTreeSet<&str> = ops.iter().filter_map(Op::session_ref).collect();
        sessions.extend(ops.iter().filter_map(|o| match o {
            Op::Reserve(r) => Some(r.session_ref.as_str()),
            _ => None,
        }));
        BatchKeys {
            sessions: json!(sessions).to_string(),
        }
    }
}

/// Step 1: lock the accounts of the batch's Subscription-Ids (`account_ids`, from the
/// catalog) and of its sessions' open reservations, in id order (every batch of every worker
/// and node locks in that order), and return them as locked. On SQLite `BEGIN IMMEDIATE`
/// already holds the database's one write lock, so this only reads them.
async fn lock_accounts(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account_ids: &BTreeSet<&String>,
    keys: &BatchKeys,
) -> Result<HashMap<String, AccountRow>, sqlx::Error> {
    let sql = match dialect {
        Dialect::Postgres => format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN ( \
               SELECT jsonb_array_elements_text(CAST($1 AS JSONB)) \
               UNION SELECT c.account_id FROM session_credits c \
                 WHERE c.session_ref IN (SELECT jsonb_array_elements_text(CAST($2 AS JSONB)))) \
             ORDER BY a.id FOR UPDATE"
        ),
        // CROSS JOIN makes the JSON rows the outer loop: each key is one index lookup.
        Dialect::Sqlite => format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN ( \
               SELECT value FROM json_each($1) \
               UNION SELECT c.account_id FROM json_each($2) x CROSS JOIN session_credits c \
                 ON c.session_ref = x.value) \
             ORDER BY a.id"
        ),
    };
    let rows = sqlx::query(&sql)
        .bind(json!(account_ids).to_string())
        .bind(&keys.sessions)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| account_from_row(row).map(|a| (a.id.clone(), a)))
        .collect()
}

/// Step 1 and 2: the catalog (tariffs, the accounts of the batch's Subscription-Ids), then
/// lock, read, and lock again until every account the reads name is locked.
pub(super) async fn read_locked(
    conn: &mut AnyConnection,
    dialect: Dialect,
    now: Timestamp,
    ops: &[Op],
    catalog: &Catalog,
) -> Result<Snapshot, sqlx::Error> {
    let all_tariffs = catalog.tariffs(conn).await?;
    let subs: Vec<&SubscriptionId> = ops
        .iter()
        .filter_map(Op::subscriber)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let subscribers = catalog.accounts(conn, dialect, &subs).await?;
    let batch_keys = BatchKeys::of(ops);
    let mut locked =
        lock_accounts(conn, dialect, &subscribers.values().collect(), &batch_keys).await?;
    let keys = json!(ops
        .iter()
        .map(|o| o.key().to_key_string())
        .collect::<Vec<_>>())
    .to_string();
    // Every context a tariff may name for these services (ServiceKey::tariff_contexts).
    let contexts: BTreeSet<&str> = ops
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
    let tariffs: Vec<TariffEntry> = all_tariffs
        .iter()
        .filter(|t| contexts.contains(t.service_context.as_str()))
        .cloned()
        .collect();
    // Normally one round: the reads only name accounts the lock statement locked. A
    // reservation opened by another node between the two statements adds a second round.
    for _ in 0..4 {
        let ids = json!(locked.keys().collect::<Vec<_>>()).to_string();
        let read_sql = match dialect {
            Dialect::Postgres => READ_BATCH,
            Dialect::Sqlite => READ_BATCH_SQLITE,
        };
        let rows = sqlx::query(read_sql)
            .bind(&batch_keys.sessions)
            .bind(&keys)
            .bind(&ids)
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await?;
        let read = BatchRead::from_rows(&rows)?;
        let missing: BTreeSet<&String> = read
            .open
            .iter()
            .map(|r| &r.account_id)
            .filter(|id| !locked.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            let ids = json!(missing).to_string();
            let sql = match dialect {
                Dialect::Postgres => format!(
                    "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN \
                     (SELECT jsonb_array_elements_text(CAST($1 AS JSONB))) ORDER BY a.id FOR UPDATE"
                ),
                Dialect::Sqlite => format!(
                    "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN \
                     (SELECT value FROM json_each($1)) ORDER BY a.id"
                ),
            };
            let rows = sqlx::query(&sql).bind(ids).fetch_all(&mut *conn).await?;
            for row in &rows {
                let a = account_from_row(row)?;
                locked.insert(a.id.clone(), a);
            }
            continue;
        }
        return Ok(Snapshot {
            accounts: locked,
            subscribers,
            open: read.open,
            tariffs,
            allowances: read.allowances,
            stored: read.stored,
        });
    }
    Err(protocol(
        "ledger batch: the accounts of its sessions kept changing while being locked",
    ))
}

/// The columns of an open session credit, named as [`ReservationJson`] reads them.
macro_rules! credit_cols {
    () => {
        "c.reservation_id AS id, c.credit_id, c.account_id, c.session_ref, c.service_context, \
         c.rating_group, c.service_id, c.unit, c.granted_units, c.allowance_id, \
         c.allowance_units, c.pending_amount, c.price_minor, c.price_per_units, \
         c.expires_at_ms, c.session_used, c.session_charged, c.request_key, c.opened_at_ms, \
         c.granted_at_ms"
    };
}

/// Step 2 as one statement (one round trip): every kind of row the batch needs that the
/// catalog does not hold, each row as (kind, JSON text). $1 session refs, $2 request keys,
/// $3 locked account ids, $4 now. Stored answers are part 0 of their request's journal rows.
/// Only valid allowances can be drawn on; expired ones are still posted to by id (deltas),
/// which needs no read.
const READ_BATCH: &str = concat!(
    "SELECT 'r' AS k, CAST(row_to_json(c) AS TEXT) AS v FROM (SELECT ",
    credit_cols!(),
    " FROM session_credits c \
  WHERE c.session_ref IN (SELECT jsonb_array_elements_text(CAST($1 AS JSONB)))) c \
UNION ALL SELECT 'i', CAST(json_build_object('k', request_key, 'f', fingerprint, \
    'o', outcome) AS TEXT) \
  FROM journal WHERE request_key IN (SELECT jsonb_array_elements_text(CAST($2 AS JSONB))) \
    AND part = 0 \
UNION ALL SELECT 'a', CAST(row_to_json(w) AS TEXT) FROM (SELECT id, account_id, unit, \
    valid_until_ms, remaining, reserved FROM allowances \
  WHERE account_id IN (SELECT jsonb_array_elements_text(CAST($3 AS JSONB))) \
    AND valid_until_ms > $4) w"
);

/// [`READ_BATCH`] in SQLite's dialect: the same rows as the same JSON (`json_object` with
/// the column names `row_to_json` uses). The JSON rows drive each join (CROSS JOIN keeps them
/// the outer loop), so every key is one index lookup.
const READ_BATCH_SQLITE: &str = "\
SELECT 'r' AS k, json_object('id', c.reservation_id, 'credit_id', c.credit_id, \
    'account_id', c.account_id, \
    'session_ref', c.session_ref, 'service_context', c.service_context, \
    'rating_group', c.rating_group, 'service_id', c.service_id, 'unit', c.unit, \
    'granted_units', c.granted_units, \
    'allowance_id', c.allowance_id, 'allowance_units', c.allowance_units, \
    'pending_amount', c.pending_amount, 'price_minor', c.price_minor, \
    'price_per_units', c.price_per_units, 'expires_at_ms', c.expires_at_ms, \
    'session_used', c.session_used, 'session_charged', c.session_charged, \
    'request_key', c.request_key, 'opened_at_ms', c.opened_at_ms, \
    'granted_at_ms', c.granted_at_ms) AS v \
  FROM json_each($1) x CROSS JOIN session_credits c ON c.session_ref = x.value \
UNION ALL SELECT 'i', json_object('k', request_key, 'f', fingerprint, 'o', outcome) \
  FROM json_each($2) x CROSS JOIN journal ON request_key = x.value AND part = 0 \
UNION ALL SELECT 'a', json_object('id', id, 'account_id', account_id, 'unit', unit, \
    'valid_until_ms', valid_until_ms, 'remaining', remaining, 'reserved', reserved) \
  FROM allowances WHERE account_id IN (SELECT value FROM json_each($3)) AND valid_until_ms > $4";

/// A `session_credits` row as step 2 and the sweeper read it.
#[derive(Deserialize)]
struct ReservationJson {
    id: String,
    credit_id: String,
    account_id: String,
    session_ref: String,
    service_context: String,
    rating_group: Option<i64>,
    service_id: Option<i64>,
    unit: String,
    granted_units: i64,
    allowance_id: Option<i64>,
    allowance_units: i64,
    pending_amount: i64,
    price_minor: i64,
    price_per_units: i64,
    expires_at_ms: i64,
    session_used: i64,
    session_charged: i64,
    request_key: String,
    opened_at_ms: i64,
    granted_at_ms: i64,
}

impl ReservationJson {
    /// The open reservation the row describes, as the engine sees it.
    fn into_open(self) -> Result<OpenReservation, sqlx::Error> {
        // Rating-Group and Service-Identifier were written from u32 values.
        let id32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Ok(OpenReservation {
            id: self.id,
            credit_id: self.credit_id,
            account_id: self.account_id,
            session_ref: self.session_ref,
            service: ServiceKey {
                service_context: self.service_context,
                rating_group: id32(self.rating_group),
                service_id: id32(self.service_id),
            },
            unit: self
                .unit
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            granted_units: self.granted_units,
            allowance_id: self.allowance_id,
            allowance_units: self.allowance_units,
            pending_amount: self.pending_amount,
            price: Price {
                minor: self.price_minor,
                per_units: self.price_per_units,
            },
            expires_at: Timestamp(self.expires_at_ms),
            session_totals: SessionTotals {
                used: self.session_used,
                charged: self.session_charged,
            },
            request_key: self.request_key,
            opened_at: Timestamp(self.opened_at_ms),
            granted_at: Timestamp(self.granted_at_ms),
        })
    }
}

#[derive(Deserialize)]
struct StoredJson {
    k: String,
    f: String,
    o: String,
}

/// What step 2 read, decoded.
struct BatchRead {
    open: Vec<OpenReservation>,
    stored: HashMap<String, StoredOutcome>,
    allowances: Vec<Allowance>,
}

fn from_json<'a, T: Deserialize<'a>>(v: &'a str) -> Result<T, sqlx::Error> {
    serde_json::from_str(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl BatchRead {
    fn from_rows(rows: &[AnyRow]) -> Result<BatchRead, sqlx::Error> {
        let mut read = BatchRead {
            open: Vec::new(),
            stored: HashMap::new(),
            allowances: Vec::new(),
        };
        for row in rows {
            let kind: String = row.try_get("k")?;
            let v: String = row.try_get("v")?;
            match kind.as_str() {
                "r" => {
                    let r: ReservationJson = from_json(&v)?;
                    read.open.push(r.into_open()?);
                }
                "i" => {
                    let s: StoredJson = from_json(&v)?;
                    read.stored.insert(
                        s.k,
                        StoredOutcome {
                            fingerprint: s.f,
                            outcome: s.o,
                        },
                    );
                }
                "a" => read.allowances.push(from_json(&v)?),
                other => return Err(protocol(format!("ledger batch: unknown read row {other}"))),
            }
        }
        read.open.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(read)
    }
}

fn open_reservation_from_row(r: &AnyRow) -> Result<OpenReservation, sqlx::Error> {
    ReservationJson {
        id: r.try_get("id")?,
        credit_id: r.try_get("credit_id")?,
        account_id: r.try_get("account_id")?,
        session_ref: r.try_get("session_ref")?,
        service_context: r.try_get("service_context")?,
        rating_group: r.try_get("rating_group")?,
        service_id: r.try_get("service_id")?,
        unit: r.try_get("unit")?,
        granted_units: r.try_get("granted_units")?,
        allowance_id: r.try_get("allowance_id")?,
        allowance_units: r.try_get("allowance_units")?,
        pending_amount: r.try_get("pending_amount")?,
        price_minor: r.try_get("price_minor")?,
        price_per_units: r.try_get("price_per_units")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        session_used: r.try_get("session_used")?,
        session_charged: r.try_get("session_charged")?,
        request_key: r.try_get("request_key")?,
        opened_at_ms: r.try_get("opened_at_ms")?,
        granted_at_ms: r.try_get("granted_at_ms")?,
    }
    .into_open()
}

/// Up to `chunk` session credits open past their expiry, with their accounts locked (in id
/// order, as every batch locks) and re-read under the locks, so one a commit resolved or
/// regranted meanwhile is not in the snapshot: the sweeper's snapshot for [`Engine::expire`].
/// The first read scans `session_credits`, which holds only open credits (an index on the
/// expiry would cost every CCR-U its HOT update, migrations/postgres/0006_ledger_v2.sql).
pub(crate) async fn load_expired(
    conn: &mut AnyConnection,
    dialect: Dialect,
    now: Timestamp,
    chunk: i64,
) -> Result<Snapshot, sqlx::Error> {
    let ids: Vec<String> = sqlx::query(
        "SELECT reservation_id FROM session_credits WHERE expires_at_ms <= $1 \
         ORDER BY reservation_id LIMIT $2",
    )
    .bind(now.0)
    .bind(chunk)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>("reservation_id"))
    .collect::<Result<_, _>>()?;
    let mut snapshot = Snapshot::default();
    if ids.is_empty() {
        return Ok(snapshot);
    }
    let ids = json!(ids).to_string();
    let (lock_sql, res_sql) = match dialect {
        Dialect::Postgres => (
            format!(
                "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN (SELECT account_id FROM \
                 session_credits WHERE reservation_id IN \
                 (SELECT jsonb_array_elements_text(CAST($1 AS JSONB)))) ORDER BY a.id FOR UPDATE"
            ),
            format!(
                "SELECT {} FROM session_credits c WHERE c.reservation_id IN \
                 (SELECT jsonb_array_elements_text(CAST($1 AS JSONB))) ORDER BY c.reservation_id",
                credit_cols!()
            ),
        ),
        Dialect::Sqlite => (
            format!(
                "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id IN (SELECT account_id FROM \
                 session_credits WHERE reservation_id IN (SELECT value FROM json_each($1))) \
                 ORDER BY a.id"
            ),
            format!(
                "SELECT {} FROM session_credits c WHERE c.reservation_id IN \
                 (SELECT value FROM json_each($1)) ORDER BY c.reservation_id",
                credit_cols!()
            ),
        ),
    };
    for row in sqlx::query(&lock_sql)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let a = account_from_row(&row)?;
        snapshot.accounts.insert(a.id.clone(), a);
    }
    for row in sqlx::query(&res_sql)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    {
        snapshot.open.push(open_reservation_from_row(&row)?);
    }
    Ok(snapshot)
}
