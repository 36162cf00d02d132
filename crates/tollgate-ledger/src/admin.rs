//! Operator operations behind the CLI (docs/architecture.md, "The operator's surface"):
//! provisioning accounts, subscriptions, allowances and tariffs, top-ups, and `verify`, which
//! recomputes everything from the ledger entries. Each mutation is one transaction; top-ups and
//! allowance grants are entries like any other money movement.

use crate::rows::{account_from_row, AccountRow, ACCOUNT_COLS};
use crate::store::{Database, Dialect};
use crate::AdminError;
use serde::Serialize;
use sqlx::{Executor, Row};
use tollgate_ocs::*;

pub(crate) fn currency_scale(code: &str) -> u8 {
    Currency::parse(code).map(|c| c.scale).unwrap_or(2)
}

/// A free allowance to grant at account creation: `units:100:2027-01-01`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceSpec {
    pub unit: UnitType,
    pub units: u64,
    pub valid_until: Timestamp,
}

impl std::str::FromStr for AllowanceSpec {
    type Err = AdminError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            AdminError::Input(format!(
                "bad allowance {s:?}: write UNIT:COUNT:YYYY-MM-DD, e.g. units:100:2027-01-01"
            ))
        };
        let mut it = s.splitn(3, ':');
        let (Some(u), Some(n), Some(d)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let unit: UnitType = u.parse().map_err(|_| bad())?;
        let units: u64 = n.parse().map_err(|_| bad())?;
        if units > i64::MAX as u64 {
            return Err(bad());
        }
        let valid_until = parse_date(d).ok_or_else(bad)?;
        Ok(AllowanceSpec {
            unit,
            units,
            valid_until,
        })
    }
}

/// `YYYY-MM-DD` → midnight UTC of that day (the allowance is valid *until* then).
pub fn parse_date(s: &str) -> Option<Timestamp> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp(days * 86_400_000))
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: String,
    pub currency: Currency,
    pub balance: Money,
    pub credit_limit: Money,
    pub subscriptions: Vec<SubscriptionId>,
    pub allowances: Vec<AllowanceSpec>,
}

async fn begin(db: &Database) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, AdminError> {
    Ok(crate::store::begin_transaction(db).await?)
}

/// Units credited to an allowance by a top-up entry.
struct AllowanceCredit {
    allowance_id: i64,
    units: i64,
}

/// The next ledger entry id (`v_entries.entry_id`): PostgreSQL's sequence, SQLite's counter
/// (migrations/sqlite/0003_ledger_v2.sql; the caller holds the write lock).
async fn next_entry_id(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<i64, sqlx::Error> {
    let sql = match dialect {
        Dialect::Postgres => "SELECT nextval('ledger_entry_ids') AS id",
        Dialect::Sqlite => {
            "UPDATE ledger_counters SET next_entry_id = next_entry_id + 1 WHERE id = 1 \
             RETURNING next_entry_id - 1 AS id"
        }
    };
    sqlx::query(sql).fetch_one(&mut *conn).await?.try_get("id")
}

/// Insert a money or allowance top-up entry (a journal row of its own, keyed by its entry
/// id: a top-up is not a Diameter request) and move the cached sums with it.
async fn topup_entry(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    account: &str,
    amount: i64,
    allowance: Option<AllowanceCredit>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let (aid, units) = match &allowance {
        Some(a) => (Some(a.allowance_id), a.units),
        None => (None, 0),
    };
    let entry_id = next_entry_id(conn, dialect).await?;
    sqlx::query(
        "INSERT INTO journal (request_key, part, op, account_id, entry_id, kind, amount, \
         allowance_id, units, created_at_ms) VALUES ($1, 0, 'topup', $2, $3, 'topup', $4, $5, $6, $7)",
    )
    .bind(format!("~topup:{entry_id}"))
    .bind(account)
    .bind(entry_id)
    .bind(amount)
    .bind(aid)
    .bind(units)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE id = $2")
        .bind(amount)
        .bind(account)
        .execute(&mut *conn)
        .await?;
    if let Some(a) = aid {
        sqlx::query("UPDATE allowances SET remaining = remaining + $1 WHERE id = $2")
            .bind(units)
            .bind(a)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn finish<T>(
    mut conn: sqlx::pool::PoolConnection<sqlx::Any>,
    r: Result<T, AdminError>,
) -> Result<T, AdminError> {
    match r {
        Ok(v) => {
            conn.execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e)
        }
    }
}

pub async fn create_account(
    db: &Database,
    a: &NewAccount,
    now: Timestamp,
) -> Result<(), AdminError> {
    if a.id.is_empty() || a.id.len() > 128 {
        return Err(AdminError::Input("bad --id: 1 to 128 characters".into()));
    }
    if a.credit_limit.0 < 0 {
        return Err(AdminError::Input(
            "bad --credit-limit: must not be negative".into(),
        ));
    }
    if a.balance.0 < -a.credit_limit.0 {
        return Err(AdminError::Input(
            "bad --balance: below the credit limit".into(),
        ));
    }
    let mut conn = begin(db).await?;
    let r = async {
        let exists = sqlx::query("SELECT id FROM accounts WHERE id = $1").bind(&a.id).fetch_optional(&mut *conn).await?;
        if exists.is_some() {
            return Err(AdminError::Exists(format!("account {} already exists", a.id)));
        }
        sqlx::query("INSERT INTO accounts (id, currency, scale, credit_limit, status, created_at_ms) VALUES ($1, $2, $3, $4, 'active', $5)")
            .bind(&a.id)
            .bind(&a.currency.code)
            .bind(i64::from(a.currency.scale) as i16 as i64)
            .bind(a.credit_limit.0)
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
        for s in &a.subscriptions {
            let taken = sqlx::query("SELECT account_id FROM subscriptions WHERE sub_type = $1 AND sub_data = $2")
                .bind(i64::from(s.kind.code()))
                .bind(&s.data)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = taken {
                let other: String = row.try_get("account_id")?;
                return Err(AdminError::Exists(format!("subscription {s} already belongs to account {other}")));
            }
            sqlx::query("INSERT INTO subscriptions (sub_type, sub_data, account_id) VALUES ($1, $2, $3)")
                .bind(i64::from(s.kind.code()))
                .bind(&s.data)
                .bind(&a.id)
                .execute(&mut *conn)
                .await?;
        }
        if a.balance.0 != 0 {
            topup_entry(&mut conn, db.dialect, &a.id, a.balance.0, None, now).await?;
        }
        for al in &a.allowances {
            let row = sqlx::query("INSERT INTO allowances (account_id, unit, valid_until_ms, created_at_ms) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(&a.id)
                .bind(al.unit.as_str())
                .bind(al.valid_until.0)
                .bind(now.0)
                .fetch_one(&mut *conn)
                .await?;
            let id: i64 = row.try_get("id")?;
            topup_entry(
                &mut conn,
                db.dialect,
                &a.id,
                0,
                Some(AllowanceCredit {
                    allowance_id: id,
                    units: al.units as i64,
                }),
                now,
            ).await?;
        }
        Ok(())
    }
    .await;
    finish(conn, r).await
}

/// Add money to an account (a `topup` entry). Negative amounts are corrections and may not take
/// the account below its credit floor.
pub async fn topup(
    db: &Database,
    id: &str,
    amount_text: &str,
    now: Timestamp,
) -> Result<Balance, AdminError> {
    let mut conn = begin(db).await?;
    let r = async {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id = $1{}",
            db.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no account {id}")))?;
        let a = account_from_row(&row)?;
        let amount = tollgate_ocs::money::parse_decimal(amount_text, a.scale as u8)?;
        if amount == 0 {
            return Err(AdminError::Input("bad --amount: must not be zero".into()));
        }
        if a.balance + amount - a.reserved + a.credit_limit < 0 {
            return Err(AdminError::Input(
                "bad --amount: would take the account below its credit limit".into(),
            ));
        }
        topup_entry(&mut conn, db.dialect, id, amount, None, now).await?;
        Ok(())
    }
    .await;
    finish(conn, r).await?;
    show(db, id, now).await
}

pub(crate) async fn balance_of(
    db: &Database,
    a: &AccountRow,
    now: Timestamp,
) -> Result<Balance, sqlx::Error> {
    let rows = sqlx::query("SELECT id, unit, remaining, reserved, valid_until_ms FROM allowances WHERE account_id = $1 AND valid_until_ms > $2 ORDER BY valid_until_ms, id")
        .bind(&a.id)
        .bind(now.0)
        .fetch_all(&db.pool)
        .await?;
    let mut allowances = Vec::new();
    for r in rows {
        let unit: String = r.try_get("unit")?;
        allowances.push(AllowanceBalance {
            id: r.try_get("id")?,
            unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            remaining: u64::try_from(r.try_get::<i64, _>("remaining")?).unwrap_or(0),
            reserved: u64::try_from(r.try_get::<i64, _>("reserved")?).unwrap_or(0),
            valid_until: Timestamp(r.try_get("valid_until_ms")?),
        });
    }
    Ok(Balance {
        account_id: a.id.clone(),
        currency: a.currency.clone(),
        scale: a.scale as u8,
        posted: Money(a.balance),
        reserved: Money(a.reserved),
        available: Money(a.balance - a.reserved + a.credit_limit),
        credit_limit: Money(a.credit_limit),
        allowances,
    })
}

pub async fn show(db: &Database, id: &str, now: Timestamp) -> Result<Balance, AdminError> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("no account {id}")))?;
    let a = account_from_row(&row)?;
    Ok(balance_of(db, &a, now).await?)
}

/// What an account may do (`accounts.status`): only an active one is granted anything
/// (the engine refuses the others with 4010, `crates/tollgate-ocs/src/engine/state.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Blocked,
    /// For good: a closed account cannot be made active again.
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Blocked => "blocked",
            AccountStatus::Closed => "closed",
        }
    }
}

/// Sets an account's status; returns the one it had. Closing is final.
pub async fn set_status(
    db: &Database,
    id: &str,
    status: AccountStatus,
) -> Result<String, AdminError> {
    let mut conn = begin(db).await?;
    let r = async {
        let row = sqlx::query(&format!(
            "SELECT status FROM accounts WHERE id = $1{}",
            db.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no account {id}")))?;
        let before: String = row.try_get("status")?;
        if before == "closed" && status != AccountStatus::Closed {
            return Err(AdminError::Input(format!(
                "account {id} is closed, and a closed account stays closed"
            )));
        }
        sqlx::query("UPDATE accounts SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(before)
    }
    .await;
    finish(conn, r).await
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub id: String,
    pub currency: String,
    pub status: String,
    pub balance: String,
    pub reserved: String,
    pub subscriptions: Vec<String>,
}

pub async fn list(db: &Database) -> Result<Vec<AccountSummary>, AdminError> {
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM accounts a ORDER BY a.id"
    ))
    .fetch_all(&db.pool)
    .await?;
    let subs = sqlx::query("SELECT CAST(sub_type AS BIGINT) AS t, sub_data, account_id FROM subscriptions ORDER BY account_id, sub_type, sub_data")
        .fetch_all(&db.pool)
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let a = account_from_row(r)?;
        let mut subscriptions = Vec::new();
        for s in &subs {
            let acc: String = s.try_get("account_id")?;
            if acc == a.id {
                if let Some(kind) = SubscriptionType::from_code(s.try_get("t")?) {
                    subscriptions.push(
                        SubscriptionId::new(kind, s.try_get::<String, _>("sub_data")?).to_string(),
                    );
                }
            }
        }
        out.push(AccountSummary {
            balance: Money(a.balance).to_decimal(a.scale as u8),
            reserved: Money(a.reserved).to_decimal(a.scale as u8),
            id: a.id,
            currency: a.currency,
            status: a.status,
            subscriptions,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct TariffSpec {
    pub service: ServiceKey,
    pub unit: UnitType,
    pub currency: Currency,
    pub price: String,
    pub quantum: Option<u64>,
    pub min_grant: Option<u64>,
    pub quota: QuotaPolicy,
    pub final_unit: FinalUnitPolicy,
}

/// Default grant quantum per unit type when `--quantum` is not given.
fn default_quantum(unit: UnitType) -> u64 {
    match unit {
        UnitType::Seconds => 60,
        UnitType::Octets => 1_000_000,
        UnitType::Units => 1,
        UnitType::Money => 100,
    }
}

/// Create or replace the tariff for (service key, unit).
pub async fn set_tariff(
    db: &Database,
    t: &TariffSpec,
    now: Timestamp,
) -> Result<Tariff, AdminError> {
    if t.service.rating_group.is_some() && t.service.service_id.is_some() {
        return Err(AdminError::Input(
            "give --rating-group or --service-id, not both".into(),
        ));
    }
    let price = Price::parse(&t.price, t.currency.scale)?;
    let quantum = t.quantum.unwrap_or(default_quantum(t.unit));
    if quantum == 0 || quantum > i64::MAX as u64 {
        return Err(AdminError::Input(
            "bad --quantum: must be at least 1".into(),
        ));
    }
    let min_grant = t.min_grant.unwrap_or(0).min(i64::MAX as u64);
    let threshold = match t.quota.threshold.map(i64::try_from) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(AdminError::Input("bad --quota-threshold: too large".into()));
        }
    };
    let (action, redirect, filter) = match &t.final_unit {
        FinalUnitPolicy::Terminate => ("terminate", None, None),
        FinalUnitPolicy::Redirect { address } => {
            if FinalUnitPolicy::redirect_address_type(address).is_none() {
                return Err(AdminError::Input(format!(
                    "bad --redirect-address {address:?}: give a URL (http://…), a SIP URI (sip:…) or an IP address"
                )));
            }
            ("redirect", Some(address.as_str()), None)
        }
        FinalUnitPolicy::RestrictAccess { filter_id } => {
            ("restrict_access", None, Some(filter_id.as_str()))
        }
    };
    let mut conn = begin(db).await?;
    let r = async {
        sqlx::query("DELETE FROM tariffs WHERE service_context = $1 AND COALESCE(rating_group, -1) = $2 AND COALESCE(service_id, -1) = $3 AND unit = $4")
            .bind(&t.service.service_context)
            .bind(t.service.rating_group.map(i64::from).unwrap_or(-1))
            .bind(t.service.service_id.map(i64::from).unwrap_or(-1))
            .bind(t.unit.as_str())
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO tariffs (service_context, rating_group, service_id, unit, currency, price_minor, price_per_units, quantum, min_grant, updated_at_ms, quota_threshold, quota_holding_time_s, quota_consumption_time_s, validity_time_s, final_unit_action, redirect_address, filter_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)")
            .bind(&t.service.service_context)
            .bind(t.service.rating_group.map(i64::from))
            .bind(t.service.service_id.map(i64::from))
            .bind(t.unit.as_str())
            .bind(&t.currency.code)
            .bind(price.minor)
            .bind(price.per_units)
            .bind(quantum as i64)
            .bind(min_grant as i64)
            .bind(now.0)
            .bind(threshold)
            .bind(t.quota.holding_time_s.map(i64::from))
            .bind(t.quota.consumption_time_s.map(i64::from))
            .bind(t.quota.validity_time_s.map(i64::from))
            .bind(action)
            .bind(redirect)
            .bind(filter)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
    .await;
    finish(conn, r).await?;
    Ok(Tariff {
        service: t.service.clone(),
        unit: t.unit,
        currency: t.currency.code.clone(),
        price,
        quantum,
        min_grant,
        quota: t.quota,
        final_unit: t.final_unit.clone(),
    })
}

pub async fn list_tariffs(db: &Database) -> Result<Vec<Tariff>, AdminError> {
    let sql = concat!(
        "SELECT ",
        crate::rows::tariff_cols!(),
        " FROM tariffs ORDER BY service_context, rating_group, service_id, unit"
    );
    let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let entry = crate::rows::tariff_from_row(&r)?;
        out.push(entry.priced_for(entry.service()));
    }
    Ok(out)
}

/// The result of `ledger verify`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub accounts: i64,
    pub entries: i64,
    pub reservations: i64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

async fn problems(
    db: &Database,
    sql: &str,
    report: &mut VerifyReport,
    what: &str,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
    for r in rows {
        let detail: String = r.try_get("detail")?;
        report.problems.push(format!("{what}: {detail}"));
    }
    Ok(())
}

/// Recompute every balance from the entries and check the reservation life cycle (docs/ledger.md,
/// "Invariants checked by `tollgate ledger verify`").
pub async fn verify(db: &Database) -> Result<VerifyReport, AdminError> {
    let mut rep = VerifyReport::default();
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(&db.pool)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"))
    };
    rep.accounts = count("SELECT COUNT(*) AS n FROM accounts").await?;
    rep.entries = count("SELECT COUNT(*) AS n FROM v_entries").await?;
    rep.reservations = count(
        "SELECT COUNT(DISTINCT reservation_id) AS n FROM v_entries WHERE reservation_id IS NOT NULL",
    )
    .await?;
    let txt = |e: &str| format!("CAST({e} AS TEXT)");
    problems(db, &format!(
        "SELECT 'account ' || account_id || ' cached balance ' || {} || ' reserved ' || {} || ' but entries sum to ' || {} || ' / ' || {} AS detail \
         FROM v_balances WHERE balance <> entries_balance OR reserved <> entries_reserved ORDER BY account_id",
        txt("balance"), txt("reserved"), txt("entries_balance"), txt("entries_reserved")), &mut rep, "balance mismatch").await?;
    problems(db, &format!(
        "SELECT 'allowance ' || {} || ' cached ' || {} || '/' || {} || ' but entries sum to ' || {} || '/' || {} AS detail FROM allowances al \
         LEFT JOIN (SELECT allowance_id, SUM(units) AS u, SUM(pending_units) AS p FROM v_entries WHERE allowance_id IS NOT NULL GROUP BY allowance_id) e ON e.allowance_id = al.id \
         WHERE al.remaining <> COALESCE(e.u, 0) OR al.reserved <> COALESCE(e.p, 0) ORDER BY al.id",
        txt("al.id"), txt("al.remaining"), txt("al.reserved"), txt("COALESCE(e.u, 0)"), txt("COALESCE(e.p, 0)")), &mut rep, "allowance mismatch").await?;
    // The views join accounts, so an entry naming a missing account is looked for in the
    // journal itself (it has no foreign keys, migrations/postgres/0006_ledger_v2.sql).
    problems(db, &format!(
        "SELECT 'entry ' || {} || ' names account ' || j.account_id || ' which does not exist' AS detail FROM journal j \
         LEFT JOIN accounts a ON a.id = j.account_id WHERE (j.kind IS NOT NULL OR j.hold_entry_id IS NOT NULL) AND a.id IS NULL",
        txt("COALESCE(j.entry_id, j.hold_entry_id)")), &mut rep, "orphan entry").await?;
    // Every request's rows are answered by its part 0: without it a retransmission would be
    // applied again.
    problems(db,
        "SELECT DISTINCT 'request ' || j.request_key || ' has journal rows but no stored answer' AS detail FROM journal j \
         WHERE j.request_key NOT LIKE '~%' AND NOT EXISTS (SELECT 1 FROM journal p \
           WHERE p.request_key = j.request_key AND p.part = 0 AND p.outcome IS NOT NULL) ORDER BY detail",
        &mut rep, "journal").await?;
    // Life cycle: every reservation has one pending entry and at most one resolving entry
    // (post, void, expire). Open (its session credit holds it) ⇔ none resolved it yet, and
    // its entries still hold exactly what the credit says; resolved ⇔ the resolving entry
    // returned exactly what the pending entry held.
    problems(db, &format!(
        "SELECT 'reservation ' || e.reservation_id || ' has ' || {} || ' pending and ' || {} || ' resolving entries, holds ' || {} || ' and ' || {} || ' units' \
           || CASE WHEN c.reservation_id IS NULL THEN ' (resolved)' ELSE ' (open, credit holds ' || {} || ' and ' || {} || ' units)' END AS detail \
         FROM (SELECT reservation_id, \
             SUM(CASE WHEN kind = 'pending' THEN 1 ELSE 0 END) AS np, \
             SUM(CASE WHEN kind IN ('post', 'void', 'expire') THEN 1 ELSE 0 END) AS nr, \
             SUM(pending_delta) AS held, SUM(pending_units) AS held_units \
           FROM v_entries WHERE reservation_id IS NOT NULL GROUP BY reservation_id) e \
         LEFT JOIN session_credits c ON c.reservation_id = e.reservation_id \
         WHERE e.np <> 1 OR e.nr > 1 \
            OR (c.reservation_id IS NULL AND (e.nr <> 1 OR e.held <> 0 OR e.held_units <> 0)) \
            OR (c.reservation_id IS NOT NULL AND (e.nr <> 0 OR e.held <> c.pending_amount OR e.held_units <> c.allowance_units)) \
         ORDER BY e.reservation_id",
        txt("e.np"), txt("e.nr"), txt("e.held"), txt("e.held_units"), txt("c.pending_amount"), txt("c.allowance_units")), &mut rep, "reservation life cycle").await?;
    problems(db,
        "SELECT 'session credit ' || c.credit_id || ' holds reservation ' || c.reservation_id || ' which has no pending entry' AS detail \
         FROM session_credits c WHERE NOT EXISTS \
           (SELECT 1 FROM v_entries e WHERE e.reservation_id = c.reservation_id AND e.kind = 'pending') ORDER BY c.credit_id",
        &mut rep, "reservation life cycle").await?;
    // Posts: a charge is never a credit, and what the floor refused is never negative.
    problems(db, &format!(
        "SELECT 'post entry ' || {} || ' charges ' || {} || ' with ' || {} || ' unbilled' AS detail \
         FROM v_entries e WHERE e.kind = 'post' AND (e.amount > 0 OR e.unbilled < 0) ORDER BY e.entry_id",
        txt("e.entry_id"), txt("-e.amount"), txt("e.unbilled")), &mut rep, "post").await?;
    // Overdraft policy: after every entry, balance − reserved ≥ −credit_limit (entries of one
    // account are written under its row lock, so id order is the order they happened in).
    problems(db, &format!(
        "SELECT 'account ' || x.account_id || ' below its credit limit after entry ' || {} AS detail FROM \
           (SELECT e.account_id, e.entry_id, SUM(e.amount - e.pending_delta) OVER (PARTITION BY e.account_id ORDER BY e.entry_id) AS avail FROM v_entries e) x \
         JOIN accounts a ON a.id = x.account_id WHERE x.avail + a.credit_limit < 0 ORDER BY x.entry_id", txt("x.entry_id")), &mut rep, "overdraft").await?;
    Ok(rep)
}
