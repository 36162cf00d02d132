//! The `Ledger` trait: two-phase charging as async operations (docs/architecture.md, "The
//! two-phase money model"; docs/protocol.md, "Ledger operations").
//!
//! Every mutating operation carries a [`RequestKey`]; the ledger stores the outcome in the same
//! transaction as the money, so a retry returns the stored outcome and changes nothing, and the
//! same key with different content is [`LedgerError::ChangedDuplicate`] (docs/protocol.md,
//! "Duplicates and idempotency").

use crate::clock::Timestamp;
use crate::error::{LedgerError, Refusal};
use crate::money::Money;
use crate::subscription::SubscriptionId;
use crate::tariff::{FinalUnitPolicy, Price, QuotaPolicy, ServiceKey};
use crate::units::{UnitType, UsedUnits};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Idempotency key: Origin-Host + Session-Id + CC-Request-Number (+ Rating-Group for one MSCC),
/// docs/architecture.md, "Idempotency".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    pub origin_host: String,
    pub session_id: String,
    pub request_number: u32,
    pub rating_group: Option<u32>,
}

impl RequestKey {
    pub fn new(
        origin_host: impl Into<String>,
        session_id: impl Into<String>,
        request_number: u32,
    ) -> Self {
        RequestKey {
            origin_host: origin_host.into(),
            session_id: session_id.into(),
            request_number,
            rating_group: None,
        }
    }
    pub fn with_rating_group(mut self, rg: u32) -> Self {
        self.rating_group = Some(rg);
        self
    }
    /// The stored form (`idempotency_keys.request_key`): fields joined by `|`, with the
    /// variable-length fields length-prefixed so no two keys can collide.
    pub fn to_key_string(&self) -> String {
        let rg = self.rating_group.map(|r| r.to_string()).unwrap_or_default();
        format!(
            "{}:{}|{}:{}|{}|{}",
            self.origin_host.len(),
            self.origin_host,
            self.session_id.len(),
            self.session_id,
            self.request_number,
            rg
        )
    }
}

/// CCR-I (or a first MSCC request): rate and reserve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub key: RequestKey,
    pub subscriber: SubscriptionId,
    pub service: ServiceKey,
    pub unit: UnitType,
    /// Requested-Service-Unit; `None` = the tariff's quantum.
    pub requested_units: Option<u64>,
    /// Session reference (Session-Id, or Session-Id + MSCC): later commits and releases name it.
    pub session_ref: String,
    /// Absolute expiry (Validity-Time + grace, or Tcc); the sweeper expires it after this.
    /// Not part of the idempotency fingerprint: a retransmission computes a later one.
    pub expires_at: Timestamp,
    /// Tcc for a tariff with a Validity-Time of its own (`expires_at` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcc: Option<Tcc>,
}

/// A granted reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Granted-Service-Unit, in the requested unit type.
    pub units: u64,
    /// Of which taken from a free allowance.
    pub from_allowance: u64,
    /// Money held as pending for the paid part.
    pub amount: Money,
    /// This grant exhausts what the subscriber has (Final-Unit-Indication TERMINATE).
    pub final_grant: bool,
    pub expires_at: Timestamp,
    /// The tariff's thresholds and times for using it up (absent in answers stored before
    /// tariffs had them).
    #[serde(default, skip_serializing_if = "QuotaPolicy::is_empty")]
    pub quota: QuotaPolicy,
    /// With `final_grant`: what the client does once it is used up (TERMINATE in answers
    /// stored before tariffs chose).
    #[serde(default, skip_serializing_if = "FinalUnitPolicy::is_terminate")]
    pub final_unit: FinalUnitPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReserveOutcome {
    Granted(Grant),
    Refused(Refusal),
}

/// The new reservation requested together with a commit (CCR-U with USU + RSU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextReservation {
    pub requested_units: Option<u64>,
    pub expires_at: Timestamp,
    /// Tcc for a tariff with a Validity-Time of its own (`expires_at` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcc: Option<Tcc>,
}

/// Tcc (RFC 4006 §7) for a reservation whose tariff sets its own Validity-Time: that
/// Validity-Time × `factor`, counted from `from` (docs/protocol.md, "Server session and Tcc").
/// Not part of a request's fingerprint: a retransmission computes a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tcc {
    pub from: Timestamp,
    pub factor: u32,
}

impl Tcc {
    pub fn expiry(&self, validity_s: u32) -> Timestamp {
        self.from
            .plus_seconds(i64::from(validity_s) * i64::from(self.factor.max(1)))
    }
}

/// CCR-U / CCR-T: post the used units of the open reservation of `session_ref` + `service`,
/// release the rest, and optionally open the next reservation in the same transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub key: RequestKey,
    pub session_ref: String,
    pub service: ServiceKey,
    /// Used-Service-Unit as reported; the amount in the reservation's unit type is charged,
    /// and may exceed the grant (RFC 8506).
    pub used: UsedUnits,
    pub next: Option<NextReservation>,
    /// The session ends here (CCR-T): a charging data record is written.
    pub final_commit: bool,
    /// Service data for the charging data record (JSON, e.g. IMS-Information).
    pub cdr: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Money posted for the used units.
    pub charged: Money,
    /// Used units covered by a free allowance.
    pub from_allowance: u64,
    /// Usage above what the credit floor allows: rated but not charged (overdraft policy,
    /// docs/ledger.md); recorded on the post entry, never silently dropped.
    pub unbilled: Money,
    /// The next reservation, when one was requested.
    pub next: Option<ReserveOutcome>,
    /// After a final commit: reservations of the session still open (other services), so a
    /// CCR-T can skip a release that would find nothing. None when not counted (not final, or
    /// an outcome stored before this field existed: the caller then releases, as before).
    #[serde(default)]
    pub session_open: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitOutcome {
    Committed(Committed),
    Refused(Refusal),
}

/// CCR-T without usage, or an abort: void the open reservation(s) of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub key: RequestKey,
    pub session_ref: String,
    /// `None`: every open reservation of the session.
    pub service: Option<ServiceKey>,
    pub cdr: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub reservations: u32,
    pub amount: Money,
    pub units: u64,
}

/// CCR-E DIRECT_DEBITING (IEC): one posted entry, no pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectDebitRequest {
    pub key: RequestKey,
    pub subscriber: SubscriptionId,
    pub service: ServiceKey,
    pub unit: UnitType,
    pub units: u64,
    pub cdr: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectDebitOutcome {
    Debited {
        units: u64,
        from_allowance: u64,
        charged: Money,
    },
    Refused(Refusal),
}

/// What a refund gives back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RefundAmount {
    /// Money in minor units of the account's currency.
    Money(Money),
    /// Units of a service, credited at the current tariff's price.
    Units {
        service: ServiceKey,
        unit: UnitType,
        units: u64,
    },
}

/// CCR-E REFUND_ACCOUNT: a new correcting entry (nothing is edited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub key: RequestKey,
    pub subscriber: SubscriptionId,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundOutcome {
    Refunded { amount: Money },
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExpireReport {
    pub expired: u32,
    pub amount: Money,
    pub units: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowanceBalance {
    pub id: i64,
    pub unit: UnitType,
    pub remaining: u64,
    pub reserved: u64,
    pub valid_until: Timestamp,
}

/// CHECK_BALANCE answer; all money in minor units of `currency` (`scale` decimals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub account_id: String,
    pub currency: String,
    pub scale: u8,
    /// Σ posted entries.
    pub posted: Money,
    /// Σ open pending amounts.
    pub reserved: Money,
    /// posted − reserved + credit limit: what can still be granted.
    pub available: Money,
    pub credit_limit: Money,
    pub allowances: Vec<AllowanceBalance>,
}

/// PRICE_ENQUIRY answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub amount: Money,
    pub currency: String,
    pub scale: u8,
    pub price: Price,
}

/// The ledger, as the credit-control application sees it. Object safe: the server holds an
/// `Arc<dyn Ledger>` and picks PostgreSQL or SQLite at run time.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn reserve(&self, req: ReserveRequest) -> Result<ReserveOutcome, LedgerError>;
    async fn commit(&self, req: CommitRequest) -> Result<CommitOutcome, LedgerError>;
    async fn release(&self, req: ReleaseRequest) -> Result<Released, LedgerError>;
    /// Sweeper: expire open reservations with `expires_at <= now` (an `expire` entry each, no
    /// charge).
    async fn expire(&self, now: Timestamp) -> Result<ExpireReport, LedgerError>;
    async fn direct_debit(
        &self,
        req: DirectDebitRequest,
    ) -> Result<DirectDebitOutcome, LedgerError>;
    async fn refund(&self, req: RefundRequest) -> Result<RefundOutcome, LedgerError>;
    async fn balance(&self, subscriber: &SubscriptionId) -> Result<Balance, LedgerError>;
    async fn price(
        &self,
        service: &ServiceKey,
        unit: UnitType,
        units: u64,
    ) -> Result<Quote, LedgerError>;
}
