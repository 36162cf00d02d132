//! Rows the store reads in several places: an account as the engine decides on it, and the
//! reservation ids the store names before it inserts them.

use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_ocs::engine::Account;

/// An account row as the engine decides on it.
pub(crate) type AccountRow = Account;

/// An `accounts` row selected with [`ACCOUNT_COLS`].
pub(crate) fn account_from_row(r: &AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: r.try_get("id")?,
        currency: r.try_get("currency")?,
        scale: r.try_get("scale")?,
        credit_limit: r.try_get("credit_limit")?,
        status: r.try_get("status")?,
        balance: r.try_get("balance")?,
        reserved: r.try_get("reserved")?,
    })
}

pub(crate) const ACCOUNT_COLS: &str =
    "a.id, a.currency, CAST(a.scale AS BIGINT) AS scale, a.credit_limit, a.status, a.balance, a.reserved";

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
