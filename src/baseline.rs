//! `serve --no-ledger`: a ledger that rates nothing and stores nothing, granting what is
//! asked. It exists only as the baseline of the end-to-end benchmark, to show what the real
//! ledger costs; `serve` says so loudly when it is used.

use async_trait::async_trait;
use tollgate_ocs::*;

pub struct NoLedger;

fn grant(units: Option<u64>, expires_at: Timestamp) -> ReserveOutcome {
    ReserveOutcome::Granted(Grant {
        units: units.unwrap_or(60),
        from_allowance: 0,
        amount: Money(1),
        final_grant: false,
        expires_at,
        quota: Default::default(),
        final_unit: Default::default(),
    })
}

#[async_trait]
impl Ledger for NoLedger {
    async fn reserve(&self, req: ReserveRequest) -> Result<ReserveOutcome, LedgerError> {
        Ok(grant(req.requested_units, req.expires_at))
    }
    async fn commit(&self, req: CommitRequest) -> Result<CommitOutcome, LedgerError> {
        Ok(CommitOutcome::Committed(Committed {
            charged: Money(0),
            from_allowance: 0,
            unbilled: Money(0),
            next: req.next.map(|n| grant(n.requested_units, n.expires_at)),
            session_open: None,
        }))
    }
    async fn release(&self, _req: ReleaseRequest) -> Result<Released, LedgerError> {
        Ok(Released {
            reservations: 1,
            amount: Money(0),
            units: 0,
        })
    }
    async fn expire(&self, _now: Timestamp) -> Result<ExpireReport, LedgerError> {
        Ok(ExpireReport::default())
    }
    async fn direct_debit(
        &self,
        req: DirectDebitRequest,
    ) -> Result<DirectDebitOutcome, LedgerError> {
        Ok(DirectDebitOutcome::Debited {
            units: req.units,
            from_allowance: 0,
            charged: Money(0),
        })
    }
    async fn refund(&self, _req: RefundRequest) -> Result<RefundOutcome, LedgerError> {
        Ok(RefundOutcome::Refunded { amount: Money(0) })
    }
    async fn balance(&self, _s: &SubscriptionId) -> Result<Balance, LedgerError> {
        Err(LedgerError::UnknownSubscriber)
    }
    async fn price(&self, _s: &ServiceKey, _u: UnitType, _n: u64) -> Result<Quote, LedgerError> {
        Err(LedgerError::NoTariff)
    }
}
