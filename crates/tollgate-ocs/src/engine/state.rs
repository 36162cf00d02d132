//! What the engine decides on (a snapshot of accounts, open reservations, tariffs, allowances
//! and stored outcomes, loaded by the store under its locks) and what it decides (the rows the
//! store writes, in the order it made them: the stores bind them in that order,
//! `crates/tollgate-ledger/src/batch`). Plain data: no SQL, no I/O.

use crate::clock::Timestamp;
use crate::subscription::SubscriptionId;
use crate::tariff::{Price, ServiceKey, Tariff};
use crate::units::UnitType;
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

/// An open reservation (a pending hold) of a session: the current grant of one session credit
/// (a session's reservation of one service, one `session_credits` row in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReservation {
    /// This grant's id; every grant of a session credit is a reservation of its own.
    pub id: String,
    /// The id of the credit's first reservation, the same for all its grants.
    pub credit_id: String,
    pub account_id: String,
    pub session_ref: String,
    pub service: ServiceKey,
    pub unit: UnitType,
    pub granted_units: i64,
    pub allowance_id: Option<i64>,
    /// Units held on that allowance.
    pub allowance_units: i64,
    /// Money held, minor units.
    pub pending_amount: i64,
    /// The price the grant was rated at; usage is posted at it.
    pub price: Price,
    pub expires_at: Timestamp,
    /// What the session used and was charged before this reservation.
    pub session_totals: SessionTotals,
    /// The request that made this grant.
    pub request_key: String,
    /// When the credit's first grant was made.
    pub opened_at: Timestamp,
    /// When this grant was made.
    pub granted_at: Timestamp,
}

impl OpenReservation {
    /// Whether it belongs to `session_ref` (and, when given, to that service: context,
    /// Rating-Group and Service-Identifier).
    pub fn is_for(&self, session_ref: &str, service: Option<&ServiceKey>) -> bool {
        self.session_ref == session_ref && service.is_none_or(|s| *s == self.service)
    }

    /// The key of its session credit: a session has one credit per service.
    pub fn credit_key(&self) -> CreditKey {
        CreditKey {
            session_ref: self.session_ref.clone(),
            service_context: self.service.service_context.clone(),
            rating_group: self.service.rating_group.map(i64::from),
            service_id: self.service.service_id.map(i64::from),
        }
    }

    /// The session credit row holding this grant.
    pub fn to_row(&self) -> CreditRow {
        let key = self.credit_key();
        CreditRow {
            credit_id: self.credit_id.clone(),
            reservation_id: self.id.clone(),
            account_id: self.account_id.clone(),
            session_ref: key.session_ref,
            service_context: key.service_context,
            rating_group: key.rating_group,
            service_id: key.service_id,
            unit: self.unit.as_str(),
            granted_units: self.granted_units,
            allowance_id: self.allowance_id,
            allowance_units: self.allowance_units,
            pending_amount: self.pending_amount,
            price_minor: self.price.minor,
            price_per_units: self.price.per_units,
            expires_at_ms: self.expires_at.0,
            session_used: self.session_totals.used,
            session_charged: self.session_totals.charged,
            request_key: self.request_key.clone(),
            opened_at_ms: self.opened_at.0,
            granted_at_ms: self.granted_at.0,
        }
    }
}

/// What identifies a session credit: its session and service (one open credit each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CreditKey {
    pub session_ref: String,
    pub service_context: String,
    pub rating_group: Option<i64>,
    pub service_id: Option<i64>,
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
    pub quota: crate::tariff::QuotaPolicy,
    pub final_unit: crate::tariff::FinalUnitPolicy,
}

impl TariffEntry {
    /// The service key the row is stored under.
    pub fn service(&self) -> ServiceKey {
        ServiceKey {
            service_context: self.service_context.clone(),
            rating_group: self.rating_group.and_then(|v| u32::try_from(v).ok()),
            service_id: self.service_id.and_then(|v| u32::try_from(v).ok()),
        }
    }

    /// This row as the tariff that prices `service` (a request's key, which the row may
    /// match less specifically; `choose_tariff`), or its own key for `tariff list`.
    pub fn priced_for(&self, service: ServiceKey) -> Tariff {
        Tariff {
            service,
            unit: self.unit,
            currency: self.currency.clone(),
            price: self.price,
            quantum: super::plan::to_u64(self.quantum),
            min_grant: super::plan::to_u64(self.min_grant),
            quota: self.quota,
            final_unit: self.final_unit.clone(),
        }
    }
}

/// A free allowance of units on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A session credit row as the store keeps it (`session_credits`): the current grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRow {
    pub credit_id: String,
    pub reservation_id: String,
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
    pub session_used: i64,
    pub session_charged: i64,
    pub request_key: String,
    pub opened_at_ms: i64,
    pub granted_at_ms: i64,
}

/// A loaded session credit that now holds another grant: updated in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRegrant {
    /// The grant the row must still hold (the one the batch loaded); anything else means the
    /// locks did not hold what the batch read.
    pub from_reservation_id: String,
    pub row: CreditRow,
}

/// A loaded session credit that ended (posted, voided or expired): its row is deleted; its
/// history is the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditClose {
    pub key: CreditKey,
    pub reservation_id: String,
}

/// One ledger entry, as the engine makes it; the store keeps it on a [`JournalRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub account_id: String,
    /// pending | post | void | expire | direct_debit | refund (docs/ledger.md, "journal — immutable").
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
    pub session_ref: Option<String>,
    pub used_units: Option<i64>,
    /// Rated but not charged: what the credit floor refused (docs/ledger.md).
    pub unbilled: i64,
}

/// One journal row: one operation's stored answer (part 0) and up to two of its ledger
/// entries: its own, and the pending entry of the grant a commit opens (`hold_*`). An
/// operation with more entries (a release of several credits) takes parts 1, 2, ...
/// (docs/ledger.md, "journal — immutable"). Entries are numbered in batch order (`entry_no`,
/// `hold_entry_no`); the store turns those into ledger-wide entry ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    pub request_key: String,
    pub part: i64,
    /// The operation that wrote the row: reserve, commit, release, direct_debit, refund, expire.
    pub op: &'static str,
    pub fingerprint: Option<String>,
    /// The outcome as JSON (`OpOutcome`), on part 0 of a request.
    pub outcome: Option<String>,
    pub account_id: Option<String>,
    pub session_ref: Option<String>,
    pub entry_no: Option<i64>,
    pub kind: Option<&'static str>,
    pub amount: i64,
    pub pending_delta: i64,
    pub allowance_id: Option<i64>,
    pub units: i64,
    pub pending_units: i64,
    pub reservation_id: Option<String>,
    pub used_units: Option<i64>,
    pub unbilled: i64,
    pub hold_entry_no: Option<i64>,
    pub hold_reservation_id: Option<String>,
    pub hold_amount: i64,
    pub hold_allowance_id: Option<i64>,
    pub hold_units: i64,
}

impl JournalRow {
    /// A row of `op` under `key` carrying nothing yet (its part is set when it is
    /// journaled).
    pub fn empty(key: &str, op: &'static str) -> Self {
        JournalRow {
            request_key: key.to_string(),
            part: 0,
            op,
            fingerprint: None,
            outcome: None,
            account_id: None,
            session_ref: None,
            entry_no: None,
            kind: None,
            amount: 0,
            pending_delta: 0,
            allowance_id: None,
            units: 0,
            pending_units: 0,
            reservation_id: None,
            used_units: None,
            unbilled: 0,
            hold_entry_no: None,
            hold_reservation_id: None,
            hold_amount: 0,
            hold_allowance_id: None,
            hold_units: 0,
        }
    }

    /// The ledger entries the row carries, in order (what `v_entries` lists for it).
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let mut out = Vec::new();
        if let (Some(kind), Some(account)) = (self.kind, &self.account_id) {
            out.push(LedgerEntry {
                account_id: account.clone(),
                kind,
                amount: self.amount,
                pending_delta: self.pending_delta,
                allowance_id: self.allowance_id,
                units: self.units,
                pending_units: self.pending_units,
                reservation_id: self.reservation_id.clone(),
                session_ref: self.session_ref.clone(),
                used_units: self.used_units,
                unbilled: self.unbilled,
            });
        }
        if let (Some(_), Some(account)) = (self.hold_entry_no, &self.account_id) {
            out.push(LedgerEntry {
                account_id: account.clone(),
                kind: "pending",
                amount: 0,
                pending_delta: self.hold_amount,
                allowance_id: self.hold_allowance_id,
                units: 0,
                pending_units: self.hold_units,
                reservation_id: self.hold_reservation_id.clone(),
                session_ref: self.session_ref.clone(),
                used_units: None,
                unbilled: 0,
            });
        }
        out
    }
}

/// A charging data record: a session's totals at its end, or one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargingRecord {
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

/// How a batch changes an account's cached sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSums {
    pub id: String,
    pub balance: i64,
    pub reserved: i64,
}

/// How a batch changes an allowance's cached sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceSums {
    pub id: i64,
    pub remaining: i64,
    pub reserved: i64,
}

/// Everything a batch writes, in the order its rows were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub now: Timestamp,
    /// One row per operation (more for a release of several credits), in batch order.
    pub journal: Vec<JournalRow>,
    /// How many ledger entries the journal rows carry (`entry_no` and `hold_entry_no` run
    /// from 0 to this).
    pub entry_count: i64,
    /// Session credits the batch opened and left open: inserted.
    pub credits_opened: Vec<CreditRow>,
    /// Loaded session credits now holding another grant: updated in place.
    pub credits_regranted: Vec<CreditRegrant>,
    /// Loaded session credits that ended: deleted.
    pub credits_closed: Vec<CreditClose>,
    pub account_sums: Vec<AccountSums>,
    pub allowance_sums: Vec<AllowanceSums>,
    pub records: Vec<ChargingRecord>,
}

impl Effects {
    /// Nothing to write (a batch of replays and refusals of requests that store nothing).
    pub fn is_empty(&self) -> bool {
        self.journal.is_empty()
            && self.records.is_empty()
            && self.credits_opened.is_empty()
            && self.credits_regranted.is_empty()
            && self.credits_closed.is_empty()
    }

    /// Every ledger entry of the batch, in order.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.journal.iter().flat_map(JournalRow::entries).collect()
    }
}
