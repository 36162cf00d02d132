//! What the engine decides on (a snapshot of accounts, open reservations, tariffs, allowances
//! and stored outcomes, loaded by the store under its locks) and what it decides (the rows the
//! store writes). Plain data: no SQL, no I/O. The effect rows serialize with the field names
//! the stores' set-based writes read (`crates/tollgate-ledger/src/batch`).

use crate::clock::Timestamp;
use crate::subscription::SubscriptionId;
use crate::tariff::{Price, ServiceKey};
use crate::units::UnitType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// An account as locked for a batch: its cached sums as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub currency: String,
    /// Decimals of the currency's minor unit.
    pub scale: i64,
    /// How far below zero the available balance may go, in minor units.
    pub credit_limit: i64,
    /// "active", or any other status, which refuses new charges.
    pub status: String,
    /// Posted money, minor units.
    pub balance: i64,
    /// Money held by open reservations, minor units.
    pub reserved: i64,
}

impl Account {
    /// What a new charge may take: balance − reserved + credit limit.
    pub fn available(&self) -> i64 {
        self.balance - self.reserved + self.credit_limit
    }

    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// An open reservation (a pending hold) of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReservation {
    pub id: String,
    pub account_id: String,
    pub session_ref: String,
    pub service: ServiceKey,
    pub unit: UnitType,
    pub allowance_id: Option<i64>,
    /// Units held on that allowance.
    pub allowance_units: i64,
    /// Money held, minor units.
    pub pending_amount: i64,
    /// The price the grant was rated at; usage is posted at it.
    pub price: Price,
    /// What the session used and was charged before this reservation.
    pub session_totals: SessionTotals,
    /// Opened by this batch (to be inserted) rather than loaded (to be updated).
    pub new: bool,
}

impl OpenReservation {
    /// Whether it belongs to `session_ref` (and, when given, to that service: context,
    /// Rating-Group and Service-Identifier).
    pub fn is_for(&self, session_ref: &str, service: Option<&ServiceKey>) -> bool {
        self.session_ref == session_ref && service.is_none_or(|s| *s == self.service)
    }
}

/// What a session has used and been charged so far, carried from reservation to reservation
/// and written on its charging record at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTotals {
    pub used: i64,
    pub charged: i64,
}

/// A tariff row as stored: one unit type priced for one context (and Rating-Group or
/// Service-Identifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffEntry {
    pub service_context: String,
    pub rating_group: Option<i64>,
    pub service_id: Option<i64>,
    pub unit: UnitType,
    pub currency: String,
    pub price: Price,
    pub quantum: i64,
    pub min_grant: i64,
}

/// A free allowance of units on an account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Allowance {
    pub id: i64,
    pub account_id: String,
    pub unit: UnitType,
    pub valid_until_ms: i64,
    pub remaining: i64,
    pub reserved: i64,
}

/// The outcome stored under a request key, with the fingerprint of the request that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    pub fingerprint: String,
    /// The outcome as JSON (`OpOutcome`).
    pub outcome: String,
}

/// Everything a batch of operations may read, as the store loaded it under its locks.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every account the operations can touch, locked, by id.
    pub accounts: HashMap<String, Account>,
    /// Subscription-Id → account id.
    pub subscribers: HashMap<SubscriptionId, String>,
    /// The open reservations of the batch's sessions.
    pub open: Vec<OpenReservation>,
    /// The tariffs of the batch's service contexts (every candidate of
    /// `ServiceKey::tariff_contexts`), in id order: ties go to the first.
    pub tariffs: Vec<TariffEntry>,
    /// The allowances of the locked accounts still valid at the batch's time.
    pub allowances: Vec<Allowance>,
    /// The stored outcomes of the batch's request keys.
    pub stored: HashMap<String, StoredOutcome>,
}

/// A reservation the batch opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewReservation {
    pub id: String,
    pub account_id: String,
    pub session_ref: String,
    pub service_context: String,
    pub rating_group: Option<i64>,
    pub service_id: Option<i64>,
    pub unit: &'static str,
    pub granted_units: i64,
    pub allowance_id: Option<i64>,
    pub allowance_units: i64,
    pub pending_amount: i64,
    pub price_minor: i64,
    pub price_per_units: i64,
    pub expires_at_ms: i64,
    /// "open", or how it ended when the same batch resolved it.
    pub status: &'static str,
    pub used_units: Option<i64>,
    pub charged: Option<i64>,
    pub session_used: i64,
    pub session_charged: i64,
    pub request_key: String,
    pub created_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
}

/// How a loaded reservation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub id: String,
    /// Always "open": the status the row must still have. It travels with the row rather than
    /// as a constant in the SQL so the planner cannot answer `status = 'open'` from the partial
    /// index `reservations_expiry` and looks each row up by its primary key instead.
    pub from_status: &'static str,
    pub status: &'static str,
    pub used_units: i64,
    pub charged: i64,
    pub resolved_at_ms: i64,
}

/// One ledger entry, in the order the batch made it (`seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub seq: usize,
    pub account_id: String,
    /// pending | post | void | direct_debit | refund (docs/ledger.md, "Entry kinds").
    pub kind: &'static str,
    /// Change of the posted balance, minor units.
    pub amount: i64,
    /// Change of the money held.
    pub pending_delta: i64,
    pub allowance_id: Option<i64>,
    /// Change of the allowance's remaining units.
    pub units: i64,
    /// Change of the allowance's held units.
    pub pending_units: i64,
    pub reservation_id: Option<String>,
    pub used_units: Option<i64>,
    /// Rated but not charged: what the credit floor refused (docs/ledger.md).
    pub unbilled: i64,
    pub request_key: Option<String>,
}

/// A charging data record: a session's totals at its end, or one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargingRecord {
    pub seq: usize,
    pub account_id: String,
    /// "session" or "event".
    pub kind: &'static str,
    pub session_ref: String,
    pub service_context: String,
    pub rating_group: Option<i64>,
    pub service_id: Option<i64>,
    pub unit: &'static str,
    pub used_units: i64,
    pub charged: i64,
    pub request_key: String,
    /// The payload as JSON text (absent = SQL NULL, "null" = a JSON null).
    pub payload: Option<String>,
}

/// An outcome to store under its request key, in the operation's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredOutcomeRow {
    pub request_key: String,
    pub op: &'static str,
    pub fingerprint: String,
    pub outcome: String,
    pub account_id: Option<String>,
}

/// How a batch changes an account's cached sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountSums {
    pub id: String,
    #[serde(rename = "a")]
    pub balance: i64,
    #[serde(rename = "b")]
    pub reserved: i64,
}

/// How a batch changes an allowance's cached sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceSums {
    pub id: i64,
    #[serde(rename = "a")]
    pub remaining: i64,
    #[serde(rename = "b")]
    pub reserved: i64,
}

/// Everything a batch writes, in the order its rows were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub now: Timestamp,
    pub new_reservations: Vec<NewReservation>,
    pub resolutions: Vec<Resolution>,
    pub entries: Vec<LedgerEntry>,
    pub account_sums: Vec<AccountSums>,
    pub allowance_sums: Vec<AllowanceSums>,
    pub records: Vec<ChargingRecord>,
    pub stored_outcomes: Vec<StoredOutcomeRow>,
}

impl Effects {
    /// Nothing to write (a batch of replays and refusals of unknown subscribers).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.stored_outcomes.is_empty()
            && self.records.is_empty()
            && self.new_reservations.is_empty()
            && self.resolutions.is_empty()
    }
}
