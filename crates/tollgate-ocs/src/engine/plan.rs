//! The money arithmetic of each decision, one definition for every path: how a post, a
//! direct debit and a refund are priced and bounded by the credit floor (docs/ledger.md,
//! "Policies"), and the checks a commit must pass before anything is looked up.

use crate::error::{LedgerError, Refusal};
use crate::ledger::{CommitRequest, RefundAmount};
use crate::money::Money;
use crate::tariff::Price;

/// A unit count as the ledger stores it (signed 64-bit), or a request error beyond that.
pub fn to_i64(v: u64) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::InvalidRequest {
        reason: "unit count beyond 2^63",
    })
}
/// A stored count as a unit count; negative values (never written) read as 0.
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// How posting `used` units resolves a reservation. Overdraft policy (docs/ledger.md): allowance
/// units first, the rest rated at the reservation's price and charged as far as the credit floor
/// (balance − reserved ≥ −credit_limit, with this reservation's pending amount released) allows;
/// what the floor refuses is `unbilled` on the post entry. One definition for every backend.
pub struct PostPlan {
    pub used: i64,
    pub from_allowance: i64,
    pub charged: i64,
    pub unbilled: i64,
}

pub fn plan_post(
    used: u64,
    allowance_units: i64,
    price: Price,
    pending_amount: i64,
    available: i64,
) -> Result<PostPlan, LedgerError> {
    let used = to_i64(used)?;
    let from_allowance = used.min(allowance_units);
    let Some(rated) = price.amount_for((used - from_allowance) as u64) else {
        return Err(LedgerError::InvalidRequest {
            reason: "charge overflows",
        });
    };
    let charged = rated.0.min((available + pending_amount).max(0));
    Ok(PostPlan {
        used,
        from_allowance,
        charged,
        unbilled: rated.0 - charged,
    })
}

/// How a direct debit is paid: allowance units first, the rest in money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectDebitPlan {
    pub from_allowance: i64,
    pub amount: Money,
}

/// IEC (direct debit): allowance units first, the rest at the tariff's price, all or nothing
/// (RFC 4006 §6.3: no partial debit).
pub fn plan_direct_debit(
    units: i64,
    allowance_free: Option<i64>,
    price: Price,
    available: i64,
) -> Result<DirectDebitPlan, Refusal> {
    let from_allowance = allowance_free.map(|f| f.min(units)).unwrap_or(0);
    let amount = price
        .amount_for((units - from_allowance) as u64)
        .ok_or(Refusal::CreditLimitReached)?;
    if amount.0 > available {
        return Err(Refusal::CreditLimitReached);
    }
    Ok(DirectDebitPlan {
        from_allowance,
        amount,
    })
}

/// REFUND_ACCOUNT: the money to give back, as given or as `units` at the tariff's price
/// (`tariff_price`: the caller looks the tariff up for a unit refund; None = there is none).
/// A refusal is an outcome (stored); a request error is not.
pub fn refund_amount(
    amount: &RefundAmount,
    tariff_price: Option<Price>,
) -> Result<Result<Money, Refusal>, LedgerError> {
    let amount = match amount {
        RefundAmount::Money(m) => *m,
        RefundAmount::Units { units, .. } => {
            let Some(price) = tariff_price else {
                return Ok(Err(Refusal::NoTariff));
            };
            price
                .amount_for(*units)
                .ok_or(LedgerError::InvalidRequest {
                    reason: "refund overflows",
                })?
        }
    };
    if amount.0 <= 0 {
        return Err(LedgerError::InvalidRequest {
            reason: "refund amount must be positive",
        });
    }
    Ok(Ok(amount))
}

/// The request errors a commit is refused with before anything is looked up.
pub fn check_commit(r: &CommitRequest) -> Result<(), LedgerError> {
    if r.final_commit && r.next.is_some() {
        return Err(LedgerError::InvalidRequest {
            reason: "a final commit cannot open a next reservation",
        });
    }
    if let Some(n) = r.next.as_ref().and_then(|n| n.requested_units) {
        to_i64(n)?;
    }
    Ok(())
}
