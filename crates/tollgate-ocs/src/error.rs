//! Errors and refusals. A *refusal* is a business answer that is stored with the request key
//! and replayed on retry (docs/architecture.md, "Idempotency": a refusal stays a refusal); an
//! *error* is not an answer about money and stores nothing. Each knows its Result-Code
//! (docs/architecture.md, "Errors choose the answer").

use serde::{Deserialize, Serialize};

/// Why the ledger said no. Stored in the idempotency record; replayed verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The available balance (and allowance) cannot cover the minimum grant or the debit.
    #[error("credit limit reached")]
    CreditLimitReached,
    /// No account holds this Subscription-Id.
    #[error("unknown subscriber")]
    UnknownSubscriber,
    /// No tariff for this service key and unit type in the account's currency.
    #[error("no tariff")]
    NoTariff,
    /// The account is blocked or closed.
    #[error("account blocked")]
    AccountBlocked,
    /// Usage reported for a session with no open reservation (never opened, already
    /// finished, or expired by the sweeper: late usage after expiry is not charged;
    /// docs/protocol.md, "Late usage after Tcc").
    #[error("no open reservation")]
    NoReservation,
}

impl Refusal {
    /// RFC 4006 §9 / RFC 6733 §7.1 Result-Code for this refusal.
    pub fn result_code(self) -> u32 {
        match self {
            Refusal::CreditLimitReached => 4012,
            Refusal::UnknownSubscriber => 5030,
            Refusal::NoTariff => 5031,
            Refusal::AccountBlocked => 4010,
            Refusal::NoReservation => 5002,
        }
    }
}

/// Failures of a ledger call. Nothing was changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The request key was used before with different request content (our choice:
    /// 5004 INVALID_AVP_VALUE; docs/protocol.md, "Duplicates and idempotency").
    #[error("request key {key} was already used for a different request")]
    ChangedDuplicate { key: String },
    /// The request can never succeed as written (unit count beyond i64, bad service key).
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: &'static str },
    /// A reservation is already open for this session and service key; use commit.
    #[error("a reservation is already open for session {session_ref}")]
    ReservationOpen { session_ref: String },
    /// Read-side lookups (balance, price) that found nothing.
    #[error("unknown subscriber")]
    UnknownSubscriber,
    #[error("no tariff for this service and unit")]
    NoTariff,
    /// The database failed; the batch was rolled back. Safe to retry with the same key.
    #[error("ledger store error: {message}")]
    Store { message: String },
    /// The ledger is shut down or overloaded (the batcher's queue is closed or full).
    #[error("ledger unavailable")]
    Unavailable,
}

impl LedgerError {
    pub fn result_code(&self) -> u32 {
        match self {
            LedgerError::ChangedDuplicate { .. } => 5004,
            LedgerError::InvalidRequest { .. } => 5004,
            LedgerError::ReservationOpen { .. } => 5012,
            LedgerError::UnknownSubscriber => 5030,
            LedgerError::NoTariff => 5031,
            // Transient: the client may retry (with the T flag) or fail over (RFC 4006 §5.1).
            // The credit-control server answers these two with its configured
            // `store_failure_result` instead (5012 by default, `tollgate-cc/src/app.rs`).
            LedgerError::Store { .. } => 3004,
            LedgerError::Unavailable => 3004,
        }
    }
}
