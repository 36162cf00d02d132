//! The operations the ledger applies, as data: what each asks, what it answered (the
//! outcome a retransmission replays), and the fingerprint a retry must repeat (docs/ledger.md,
//! "journal — immutable": the outcome is stored in the same transaction as the money).

use crate::error::LedgerError;
use crate::ledger::*;
use crate::subscription::SubscriptionId;
use crate::tariff::ServiceKey;
use crate::units::UsedUnits;
use serde::{Deserialize, Serialize};

/// One queued mutation.
#[derive(Debug, Clone)]
pub enum Op {
    Reserve(ReserveRequest),
    Commit(CommitRequest),
    Release(ReleaseRequest),
    DirectDebit(DirectDebitRequest),
    Refund(RefundRequest),
}

/// What a mutation answered; this is the JSON stored in `idempotency_keys.outcome`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum OpOutcome {
    Reserve(ReserveOutcome),
    Commit(CommitOutcome),
    Release(Released),
    DirectDebit(DirectDebitOutcome),
    Refund(RefundOutcome),
}

impl Op {
    /// Whether any text the stores key on holds U+0000: PostgreSQL's text type rejects it, and
    /// SQLite's JSON functions (the batch's row sets) end the string there, so two different
    /// sessions or subscribers could meet. Such an op is refused before it is queued.
    pub fn has_nul(&self) -> bool {
        fn service(s: &ServiceKey) -> &str {
            &s.service_context
        }
        let key = self.key();
        let mut texts = vec![key.origin_host.as_str(), key.session_id.as_str()];
        match self {
            Op::Reserve(r) => texts.extend([
                r.subscriber.data.as_str(),
                service(&r.service),
                &r.session_ref,
            ]),
            Op::Commit(r) => texts.extend([service(&r.service), r.session_ref.as_str()]),
            Op::Release(r) => {
                texts.push(&r.session_ref);
                texts.extend(r.service.as_ref().map(service));
            }
            Op::DirectDebit(r) => texts.extend([r.subscriber.data.as_str(), service(&r.service)]),
            Op::Refund(r) => {
                texts.push(&r.subscriber.data);
                if let RefundAmount::Units { service: s, .. } = &r.amount {
                    texts.push(service(s));
                }
            }
        }
        texts.iter().any(|t| t.contains('\0'))
    }

    pub fn key(&self) -> &RequestKey {
        match self {
            Op::Reserve(r) => &r.key,
            Op::Commit(r) => &r.key,
            Op::Release(r) => &r.key,
            Op::DirectDebit(r) => &r.key,
            Op::Refund(r) => &r.key,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Op::Reserve(_) => "reserve",
            Op::Commit(_) => "commit",
            Op::Release(_) => "release",
            Op::DirectDebit(_) => "direct_debit",
            Op::Refund(_) => "refund",
        }
    }
    /// What the ledger stores of the request a retry must repeat: the first 128 bits of the
    /// SHA-256 of [`Op::fingerprint_text`], in hex (32 characters instead of the ~150 of the
    /// text, on every journal row).
    pub fn fingerprint(&self) -> String {
        fingerprint_digest(&self.fingerprint_text())
    }

    /// The request content a retry must repeat. Expiry times and CDR payloads are left out: a
    /// retransmission computes a later expiry and may re-encode its service data. Ledgers
    /// before v2 stored this text itself as the fingerprint.
    pub fn fingerprint_text(&self) -> String {
        let v = match self {
            Op::Reserve(r) => serde_json::json!([
                "reserve",
                r.subscriber,
                r.service,
                r.unit,
                r.requested_units,
                r.session_ref
            ]),
            Op::Commit(r) => serde_json::json!([
                "commit",
                r.session_ref,
                r.service,
                fingerprint_used(&r.used),
                r.next.as_ref().map(|n| n.requested_units),
                r.next.is_some(),
                r.final_commit
            ]),
            Op::Release(r) => serde_json::json!(["release", r.session_ref, r.service]),
            Op::DirectDebit(r) => {
                serde_json::json!(["direct_debit", r.subscriber, r.service, r.unit, r.units])
            }
            Op::Refund(r) => serde_json::json!(["refund", r.subscriber, r.amount]),
        };
        v.to_string()
    }
    /// Subscriber whose account this op touches, if named directly.
    pub fn subscriber(&self) -> Option<&SubscriptionId> {
        match self {
            Op::Reserve(r) => Some(&r.subscriber),
            Op::DirectDebit(r) => Some(&r.subscriber),
            Op::Refund(r) => Some(&r.subscriber),
            _ => None,
        }
    }
    /// Session whose reservations this op touches, if any.
    pub fn session_ref(&self) -> Option<&str> {
        match self {
            Op::Commit(r) => Some(&r.session_ref),
            Op::Release(r) => Some(&r.session_ref),
            _ => None,
        }
    }
}

/// The stored form of a fingerprint text (see [`Op::fingerprint`]).
pub fn fingerprint_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(32);
    for b in &digest[..16] {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// What one operation answered, or why it could not be applied.
pub type OpResult = Result<OpOutcome, LedgerError>;

/// A commit's usage as its fingerprint holds it: a report in one unit type is the bare amount,
/// as fingerprints held it before reports could name several units, so a retransmission
/// across the upgrade still matches its stored request.
pub fn fingerprint_used(used: &UsedUnits) -> serde_json::Value {
    let mut reported = used.reported();
    match (reported.next(), reported.next()) {
        (None, _) => serde_json::json!(0),
        (Some(unit), None) => serde_json::json!(used.charged_in(unit)),
        _ => serde_json::json!(used),
    }
}
