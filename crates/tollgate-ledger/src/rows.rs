//! Rows the store reads in several places, decoded the same way from any sqlx driver: an
//! account as the engine decides on it, a session credit, a tariff, a Subscription-Id; and the
//! reservation ids the store names before it inserts them.

use sqlx::{ColumnIndex, Decode, Row, Type};
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_ocs::engine::{Account, Allowance, OpenReservation, SessionTotals, TariffEntry};
use tollgate_ocs::tariff::{FinalUnitPolicy, QuotaPolicy};
use tollgate_ocs::{Price, ServiceKey, SubscriptionId, SubscriptionType, Timestamp};

/// An account row as the engine decides on it.
pub(crate) type AccountRow = Account;

/// The columns of an `accounts` row (alias `a`) as [`account_from_row`] reads them.
macro_rules! account_cols {
    () => {
        "a.id, a.currency, CAST(a.scale AS BIGINT) AS scale, a.credit_limit, a.status, \
         a.balance, a.reserved"
    };
}
pub(crate) use account_cols;

pub(crate) const ACCOUNT_COLS: &str = account_cols!();

/// The columns of a `session_credits` row (alias `c`) as [`credit_from_row`] reads them.
macro_rules! credit_cols {
    () => {
        "c.reservation_id, c.credit_id, c.account_id, c.session_ref, c.service_context, \
         c.rating_group, c.service_id, c.unit, c.granted_units, c.allowance_id, \
         c.allowance_units, c.pending_amount, c.price_minor, c.price_per_units, \
         c.expires_at_ms, c.session_used, c.session_charged, c.request_key, c.opened_at_ms, \
         c.granted_at_ms"
    };
}
pub(crate) use credit_cols;

/// The columns of a `tariffs` row as [`tariff_from_row`] reads them.
macro_rules! tariff_cols {
    () => {
        "service_context, rating_group, service_id, unit, currency, price_minor, \
         price_per_units, quantum, min_grant, quota_threshold, quota_holding_time_s, \
         quota_consumption_time_s, validity_time_s, final_unit_action, redirect_address, \
         filter_id"
    };
}
pub(crate) use tariff_cols;

/// Every tariff in id order (ties between equally specific tariffs go to the first).
pub(crate) const TARIFFS: &str = concat!("SELECT ", tariff_cols!(), " FROM tariffs ORDER BY id");

fn text<'r, R>(r: &'r R, col: &str) -> Result<String, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    r.try_get(col)
}

/// An `accounts` row selected with [`ACCOUNT_COLS`].
pub(crate) fn account_from_row<'r, R>(r: &'r R) -> Result<Account, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Account {
        id: text(r, "id")?,
        currency: text(r, "currency")?,
        scale: r.try_get("scale")?,
        credit_limit: r.try_get("credit_limit")?,
        status: text(r, "status")?,
        balance: r.try_get("balance")?,
        reserved: r.try_get("reserved")?,
    })
}

/// A `session_credits` row selected with [`credit_cols!`]: its current grant.
pub(crate) fn credit_from_row<'r, R>(r: &'r R) -> Result<OpenReservation, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    // Rating-Group and Service-Identifier were written from u32 values.
    let id32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let unit = text(r, "unit")?;
    Ok(OpenReservation {
        id: text(r, "reservation_id")?,
        credit_id: text(r, "credit_id")?,
        account_id: text(r, "account_id")?,
        session_ref: text(r, "session_ref")?,
        service: ServiceKey {
            service_context: text(r, "service_context")?,
            rating_group: id32(r.try_get("rating_group")?),
            service_id: id32(r.try_get("service_id")?),
        },
        unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        granted_units: r.try_get("granted_units")?,
        allowance_id: r.try_get("allowance_id")?,
        allowance_units: r.try_get("allowance_units")?,
        pending_amount: r.try_get("pending_amount")?,
        price: Price {
            minor: r.try_get("price_minor")?,
            per_units: r.try_get("price_per_units")?,
        },
        expires_at: Timestamp(r.try_get("expires_at_ms")?),
        session_totals: SessionTotals {
            used: r.try_get("session_used")?,
            charged: r.try_get("session_charged")?,
        },
        request_key: text(r, "request_key")?,
        opened_at: Timestamp(r.try_get("opened_at_ms")?),
        granted_at: Timestamp(r.try_get("granted_at_ms")?),
    })
}

/// A `tariffs` row selected with [`TARIFFS`].
pub(crate) fn tariff_from_row<'r, R>(r: &'r R) -> Result<TariffEntry, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let unit = text(r, "unit")?;
    Ok(TariffEntry {
        service_context: text(r, "service_context")?,
        rating_group: r.try_get("rating_group")?,
        service_id: r.try_get("service_id")?,
        unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        currency: text(r, "currency")?,
        price: Price {
            minor: r.try_get("price_minor")?,
            per_units: r.try_get("price_per_units")?,
        },
        quantum: r.try_get("quantum")?,
        min_grant: r.try_get("min_grant")?,
        quota: quota_from_row(r)?,
        final_unit: final_unit_from_row(r)?,
    })
}

/// A tariff's Final-Unit-Action and its address or filter
/// (migrations/postgres/0008_tariff_quota.sql).
pub(crate) fn final_unit_from_row<'r, R>(r: &'r R) -> Result<FinalUnitPolicy, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let action = text(r, "final_unit_action")?;
    let missing =
        |what: &str| sqlx::Error::Decode(format!("{action} tariff without {what}").into());
    Ok(match action.as_str() {
        "redirect" => FinalUnitPolicy::Redirect {
            address: r
                .try_get::<Option<String>, _>("redirect_address")?
                .ok_or_else(|| missing("redirect_address"))?,
        },
        "restrict_access" => FinalUnitPolicy::RestrictAccess {
            filter_id: r
                .try_get::<Option<String>, _>("filter_id")?
                .ok_or_else(|| missing("filter_id"))?,
        },
        _ => FinalUnitPolicy::Terminate,
    })
}

/// A tariff's quota thresholds and times (migrations/postgres/0008_tariff_quota.sql).
pub(crate) fn quota_from_row<'r, R>(r: &'r R) -> Result<QuotaPolicy, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let secs = |v: Option<i64>| v.and_then(|s| u32::try_from(s).ok());
    Ok(QuotaPolicy {
        threshold: r
            .try_get::<Option<i64>, _>("quota_threshold")?
            .and_then(|t| u64::try_from(t).ok()),
        holding_time_s: secs(r.try_get("quota_holding_time_s")?),
        consumption_time_s: secs(r.try_get("quota_consumption_time_s")?),
        validity_time_s: secs(r.try_get("validity_time_s")?),
    })
}

/// An `allowances` row (id, account_id, unit, valid_until_ms, remaining, reserved).
pub(crate) fn allowance_from_row<'r, R>(r: &'r R) -> Result<Allowance, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let unit = text(r, "unit")?;
    Ok(Allowance {
        id: r.try_get("id")?,
        account_id: text(r, "account_id")?,
        unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        valid_until_ms: r.try_get("valid_until_ms")?,
        remaining: r.try_get("remaining")?,
        reserved: r.try_get("reserved")?,
    })
}

/// A Subscription-Id as stored (`subscriptions.sub_type`, `sub_data`).
pub(crate) fn subscription(kind: i64, data: String) -> Result<SubscriptionId, sqlx::Error> {
    let kind = SubscriptionType::from_code(kind)
        .ok_or_else(|| sqlx::Error::Protocol(format!("subscription type {kind} unknown")))?;
    Ok(SubscriptionId { kind, data })
}

/// Reservation ids are generated here, not by the database, so a batch can name them before
/// insert; unique per process start (time-based prefix) plus a counter, fixed-width so that
/// one process's ids sort in the order they were made (the sweeper expires in id order).
pub(crate) fn new_reservation_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("r{:x}-{:x}", t, std::process::id())
    });
    format!("{prefix}-{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
