//! The money engine: every decision of the ledger in one synchronous place, with no SQL and no
//! I/O. The store loads a [`Snapshot`] under its locks (the accounts a batch can touch, their
//! sessions' open reservations, tariffs, allowances and stored outcomes), the [`Engine`]
//! applies the batch's operations to it in arrival order, and the store writes the
//! [`Effects`] in the same transaction. A batch of one is the one-transaction-per-operation
//! path.
//!
//! Layout: [`op`] the operations and their outcomes, [`plan`] the arithmetic of each decision,
//! [`state`] the snapshot and effect rows, this module the decisions.
//!
//! Idempotency (docs/ledger.md, "Idempotency"): an operation whose request key has a stored
//! outcome replays it when the request is the same (fingerprint) and is a
//! [`LedgerError::ChangedDuplicate`] when it is not; a new outcome is stored with the money.

pub mod op;
pub mod plan;
pub mod state;

pub use op::{fingerprint_used, Op, OpOutcome, OpResult};
pub use plan::{
    check_commit, plan_direct_debit, plan_post, refund_amount, to_i64, to_u64, DirectDebitPlan,
    PostPlan,
};
pub use state::*;

use crate::clock::Timestamp;
use crate::error::{LedgerError, Refusal};
use crate::ledger::*;
use crate::money::Money;
use crate::subscription::SubscriptionId;
use crate::tariff::{GrantPlan, ServiceKey, Tariff};
use crate::units::UnitType;
use std::collections::{BTreeMap, HashMap};

/// A broken promise between the store and the engine (never a property of a request): the
/// store's transaction must fail rather than write anything decided on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// An operation reached an account the snapshot does not hold (the store locks and loads
    /// every account its operations can touch).
    #[error("ledger engine: account {0} was not loaded")]
    AccountNotLoaded(String),
    /// A cached sum would leave the 64-bit range.
    #[error("ledger engine: a cached sum overflows")]
    Overflow,
    /// A stored outcome that cannot be read back.
    #[error("ledger engine: stored outcome of {key} unreadable: {reason}")]
    StoredOutcome { key: String, reason: String },
    /// The next reservation of a commit failed after its post: never half-apply an operation.
    #[error("ledger engine: next reservation failed after post: {0}")]
    NextReservation(LedgerError),
}

/// Where reservation ids come from: the store names them before it inserts them.
pub trait ReservationIds: Send {
    fn next_id(&mut self) -> String;
}

/// A reservation id source for tests and models: `prefix-0`, `prefix-1`, …
#[derive(Debug, Clone)]
pub struct CountingIds {
    prefix: String,
    next: u64,
}

impl CountingIds {
    pub fn new(prefix: impl Into<String>) -> Self {
        CountingIds {
            prefix: prefix.into(),
            next: 0,
        }
    }
}

impl ReservationIds for CountingIds {
    fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

/// What an expiry gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredHold {
    pub amount: Money,
    pub allowance_units: u64,
}

/// The tariff that prices `service` in `unit`: the most specific context with an applicable
/// tariff (`ServiceKey::tariff_contexts`), then a Service-Identifier tariff before a
/// Rating-Group one before the context-wide one; ties go to the first in `tariffs` (id
/// order). `currency`: the account's (a tariff in another currency does not apply), or `None`
/// for a price enquiry without a subscriber.
pub fn choose_tariff(
    tariffs: &[TariffEntry],
    service: &ServiceKey,
    unit: UnitType,
    currency: Option<&str>,
) -> Option<Tariff> {
    let sid = service.service_id.map(i64::from);
    let rg = service.rating_group.map(i64::from);
    let contexts: Vec<&str> = service.tariff_contexts().collect();
    tariffs
        .iter()
        .filter_map(|t| {
            let rank = contexts.iter().position(|c| *c == t.service_context)?;
            (t.unit == unit && currency.is_none_or(|c| t.currency == c)).then_some((rank, t))
        })
        .filter(|(_, t)| {
            (t.service_id.is_some() && t.service_id == sid)
                || (t.service_id.is_none() && t.rating_group.is_some() && t.rating_group == rg)
                || (t.service_id.is_none() && t.rating_group.is_none())
        })
        .min_by_key(|(rank, t)| (*rank, t.service_id.is_none(), t.rating_group.is_none()))
        .map(|(_, t)| Tariff {
            service: service.clone(),
            unit,
            currency: t.currency.clone(),
            price: t.price,
            quantum: to_u64(t.quantum),
            min_grant: to_u64(t.min_grant),
        })
}

/// An allowance to draw on, with its units not yet held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AllowanceDraw {
    id: i64,
    free: i64,
}

/// What a post of a reservation decided, and the session's totals after it.
struct Posted {
    committed: Committed,
    session: SessionTotals,
}

/// The parts of one ledger entry before it gets its place in the batch.
struct EntrySpec<'a> {
    account: &'a str,
    kind: &'static str,
    amount: i64,
    pending_delta: i64,
    allowance_id: Option<i64>,
    units: i64,
    pending_units: i64,
    reservation_id: Option<&'a str>,
    used_units: Option<i64>,
    unbilled: i64,
    key: Option<&'a str>,
}

/// The parts of one charging record.
struct RecordSpec<'a> {
    account: &'a str,
    kind: &'static str,
    session_ref: &'a str,
    service: &'a ServiceKey,
    unit: UnitType,
    used: i64,
    charged: i64,
    key: &'a str,
    payload: Option<&'a serde_json::Value>,
}

/// An operation's result and the account it touched (stored with its outcome).
struct Applied {
    result: OpResult,
    account: Option<String>,
}

impl Applied {
    /// Decided without touching an account: a refusal before one is found, a request error.
    fn alone(result: OpResult) -> Self {
        Applied {
            result,
            account: None,
        }
    }

    fn on(account: String, result: OpResult) -> Self {
        Applied {
            result,
            account: Some(account),
        }
    }
}

fn add(a: i64, b: i64) -> Result<i64, EngineError> {
    a.checked_add(b).ok_or(EngineError::Overflow)
}

/// Applies operations to a snapshot and collects what to write.
pub struct Engine<'i> {
    now: Timestamp,
    state: Snapshot,
    /// The accounts as loaded, to write their sums as deltas.
    initial: HashMap<String, Account>,
    allowance_delta: BTreeMap<i64, AllowanceSums>,
    ids: &'i mut dyn ReservationIds,
    new_reservations: Vec<NewReservation>,
    resolutions: Vec<Resolution>,
    entries: Vec<LedgerEntry>,
    records: Vec<ChargingRecord>,
    stored_outcomes: Vec<StoredOutcomeRow>,
}

impl<'i> Engine<'i> {
    pub fn new(now: Timestamp, mut state: Snapshot, ids: &'i mut dyn ReservationIds) -> Self {
        state.open.sort_by(|a, b| a.id.cmp(&b.id));
        Engine {
            now,
            initial: state.accounts.clone(),
            state,
            allowance_delta: BTreeMap::new(),
            ids,
            new_reservations: Vec::new(),
            resolutions: Vec::new(),
            entries: Vec::new(),
            records: Vec::new(),
            stored_outcomes: Vec::new(),
        }
    }

    /// The accounts as they stand after the operations applied so far.
    pub fn accounts(&self) -> &HashMap<String, Account> {
        &self.state.accounts
    }

    /// Applies one operation with idempotency.
    pub fn apply(&mut self, op: &Op) -> Result<OpResult, EngineError> {
        let key = op.key().to_key_string();
        let fp = op.fingerprint();
        if let Some(s) = self.state.stored.get(&key) {
            if s.fingerprint != fp {
                return Ok(Err(LedgerError::ChangedDuplicate { key }));
            }
            let outcome: OpOutcome =
                serde_json::from_str(&s.outcome).map_err(|e| EngineError::StoredOutcome {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            return Ok(Ok(outcome));
        }
        let Applied { result, account } = match op {
            Op::Reserve(r) => self.reserve(r, &key)?,
            Op::Commit(r) => self.commit(r, &key)?,
            Op::Release(r) => self.release(r, &key)?,
            Op::DirectDebit(r) => self.direct_debit(r, &key)?,
            Op::Refund(r) => self.refund(r, &key)?,
        };
        if let Ok(outcome) = &result {
            // Every outcome type is plain data: serializing it cannot fail.
            let text = serde_json::to_string(outcome).map_err(|e| EngineError::StoredOutcome {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            self.stored_outcomes.push(StoredOutcomeRow {
                request_key: key.clone(),
                op: op.name(),
                fingerprint: fp.clone(),
                outcome: text.clone(),
                account_id: account,
            });
            self.state.stored.insert(
                key,
                StoredOutcome {
                    fingerprint: fp,
                    outcome: text,
                },
            );
        }
        Ok(result)
    }

    /// What to write: every row in the order it was made, and the cached sums as deltas.
    pub fn into_effects(self) -> Result<Effects, EngineError> {
        let mut account_sums = Vec::new();
        let mut ids: Vec<&String> = self.state.accounts.keys().collect();
        ids.sort();
        for id in ids {
            let a = &self.state.accounts[id];
            let (b0, r0) = self
                .initial
                .get(id)
                .map(|i| (i.balance, i.reserved))
                .unwrap_or((a.balance, a.reserved));
            let balance = a.balance.checked_sub(b0).ok_or(EngineError::Overflow)?;
            let reserved = a.reserved.checked_sub(r0).ok_or(EngineError::Overflow)?;
            if balance != 0 || reserved != 0 {
                account_sums.push(AccountSums {
                    id: id.clone(),
                    balance,
                    reserved,
                });
            }
        }
        let allowance_sums = self
            .allowance_delta
            .into_values()
            .filter(|d| d.remaining != 0 || d.reserved != 0)
            .collect();
        Ok(Effects {
            now: self.now,
            new_reservations: self.new_reservations,
            resolutions: self.resolutions,
            entries: self.entries,
            account_sums,
            allowance_sums,
            records: self.records,
            stored_outcomes: self.stored_outcomes,
        })
    }

    /// The loaded account of a Subscription-Id; None when no account holds it.
    fn account_by_subscriber(&self, sub: &SubscriptionId) -> Result<Option<Account>, EngineError> {
        match self.state.subscribers.get(sub) {
            None => Ok(None),
            Some(id) => self.account(id).map(Some),
        }
    }

    fn account(&self, id: &str) -> Result<Account, EngineError> {
        self.state
            .accounts
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::AccountNotLoaded(id.to_string()))
    }

    /// The tariff for `service` in the account's currency ([`choose_tariff`]).
    fn tariff(&self, service: &ServiceKey, unit: UnitType, currency: &str) -> Option<Tariff> {
        choose_tariff(&self.state.tariffs, service, unit, Some(currency))
    }

    /// Expires an open reservation the client abandoned (no CCR-U/T before Tcc, RFC 4006
    /// §5.6.2): the hold returns, nothing is charged, no charging record is written. `None`
    /// when the snapshot holds no such open reservation (a commit won the race).
    pub fn expire(&mut self, reservation_id: &str) -> Result<Option<ExpiredHold>, EngineError> {
        let Some(res) = self
            .state
            .open
            .iter()
            .find(|r| r.id == reservation_id)
            .cloned()
        else {
            return Ok(None);
        };
        self.return_hold(&res, "expire", "expired", None)?;
        Ok(Some(ExpiredHold {
            amount: Money(res.pending_amount),
            allowance_units: to_u64(res.allowance_units),
        }))
    }

    /// The allowance to draw on first: valid now, same unit, units left; soonest to lapse first.
    fn allowance(&self, account: &str, unit: UnitType) -> Option<AllowanceDraw> {
        self.state
            .allowances
            .iter()
            .filter(|w| {
                w.account_id == account
                    && w.unit == unit
                    && w.valid_until_ms > self.now.0
                    && w.remaining - w.reserved > 0
            })
            .min_by_key(|w| (w.valid_until_ms, w.id))
            .map(|w| AllowanceDraw {
                id: w.id,
                free: w.remaining - w.reserved,
            })
    }

    fn open_reservations(
        &self,
        session_ref: &str,
        service: Option<&ServiceKey>,
    ) -> Vec<OpenReservation> {
        let mut v: Vec<OpenReservation> = self
            .state
            .open
            .iter()
            .filter(|r| r.is_for(session_ref, service))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// A ledger entry and the cached sums it changes.
    fn entry(&mut self, e: EntrySpec<'_>) -> Result<(), EngineError> {
        let a = self
            .state
            .accounts
            .get_mut(e.account)
            .ok_or_else(|| EngineError::AccountNotLoaded(e.account.to_string()))?;
        a.balance = add(a.balance, e.amount)?;
        a.reserved = add(a.reserved, e.pending_delta)?;
        if let Some(aid) = e.allowance_id {
            let d = self.allowance_delta.entry(aid).or_insert(AllowanceSums {
                id: aid,
                remaining: 0,
                reserved: 0,
            });
            d.remaining = add(d.remaining, e.units)?;
            d.reserved = add(d.reserved, e.pending_units)?;
            if let Some(w) = self.state.allowances.iter_mut().find(|w| w.id == aid) {
                w.remaining = add(w.remaining, e.units)?;
                w.reserved = add(w.reserved, e.pending_units)?;
            }
        }
        self.entries.push(LedgerEntry {
            seq: self.entries.len(),
            account_id: e.account.to_string(),
            kind: e.kind,
            amount: e.amount,
            pending_delta: e.pending_delta,
            allowance_id: e.allowance_id,
            units: e.units,
            pending_units: e.pending_units,
            reservation_id: e.reservation_id.map(str::to_string),
            used_units: e.used_units,
            unbilled: e.unbilled,
            request_key: e.key.map(str::to_string),
        });
        Ok(())
    }

    /// A reservation ends unused (voided by its client, or expired): its held money and
    /// allowance units return, nothing is charged. `kind`: the entry's, `status`: the
    /// reservation's.
    fn return_hold(
        &mut self,
        res: &OpenReservation,
        kind: &'static str,
        status: &'static str,
        key: Option<&str>,
    ) -> Result<(), EngineError> {
        self.entry(EntrySpec {
            account: &res.account_id,
            kind,
            amount: 0,
            pending_delta: -res.pending_amount,
            allowance_id: res.allowance_id,
            units: 0,
            pending_units: -res.allowance_units,
            reservation_id: Some(&res.id),
            used_units: None,
            unbilled: 0,
            key,
        })?;
        self.resolve(&res.id, status, 0, 0);
        Ok(())
    }

    /// Resolve an open reservation: it leaves the open set and is written as `status`.
    fn resolve(&mut self, id: &str, status: &'static str, used: i64, charged: i64) {
        let now = self.now.0;
        if let Some(pos) = self.state.open.iter().position(|r| r.id == id) {
            let r = self.state.open.remove(pos);
            if r.new {
                if let Some(n) = self.new_reservations.iter_mut().find(|n| n.id == id) {
                    n.status = status;
                    n.used_units = Some(used);
                    n.charged = Some(charged);
                    n.resolved_at_ms = Some(now);
                }
                return;
            }
        }
        self.resolutions.push(Resolution {
            id: id.to_string(),
            from_status: "open",
            status,
            used_units: used,
            charged,
            resolved_at_ms: now,
        });
    }

    fn record(&mut self, r: RecordSpec<'_>) {
        self.records.push(ChargingRecord {
            seq: self.records.len(),
            account_id: r.account.to_string(),
            kind: r.kind,
            session_ref: r.session_ref.to_string(),
            service_context: r.service.service_context.clone(),
            rating_group: r.service.rating_group.map(i64::from),
            service_id: r.service.service_id.map(i64::from),
            unit: r.unit.as_str(),
            used_units: r.used,
            charged: r.charged,
            request_key: r.key.to_string(),
            payload: r.payload.map(|p| p.to_string()),
        });
    }

    /// Rate and open a reservation for a loaded account; writes only when granted.
    #[allow(clippy::too_many_arguments)]
    fn open_reservation(
        &mut self,
        account: &Account,
        service: &ServiceKey,
        unit: UnitType,
        requested: Option<u64>,
        session_ref: &str,
        expires_at: Timestamp,
        key: &str,
        session: SessionTotals,
    ) -> Result<Result<ReserveOutcome, LedgerError>, EngineError> {
        if let Some(r) = requested {
            if let Err(e) = to_i64(r) {
                return Ok(Err(e));
            }
        }
        if !account.is_active() {
            return Ok(Ok(ReserveOutcome::Refused(Refusal::AccountBlocked)));
        }
        let Some(tariff) = self.tariff(service, unit, &account.currency) else {
            return Ok(Ok(ReserveOutcome::Refused(Refusal::NoTariff)));
        };
        let allowance = self.allowance(&account.id, unit);
        let free = allowance.map(|a| to_u64(a.free)).unwrap_or(0);
        let plan: GrantPlan = match tariff.plan_grant(requested, free, Money(account.available())) {
            Ok(p) => p,
            Err(refusal) => return Ok(Ok(ReserveOutcome::Refused(refusal))),
        };
        let id = self.ids.next_id();
        let allowance_id = allowance.filter(|_| plan.allowance_units > 0).map(|a| a.id);
        let alw_units = plan.allowance_units as i64;
        let res = OpenReservation {
            id: id.clone(),
            account_id: account.id.clone(),
            session_ref: session_ref.to_string(),
            service: service.clone(),
            unit,
            allowance_id,
            allowance_units: alw_units,
            pending_amount: plan.amount.0,
            price: tariff.price,
            session_totals: session,
            new: true,
        };
        self.new_reservations.push(NewReservation {
            id: res.id.clone(),
            account_id: res.account_id.clone(),
            session_ref: res.session_ref.clone(),
            service_context: service.service_context.clone(),
            rating_group: service.rating_group.map(i64::from),
            service_id: service.service_id.map(i64::from),
            unit: unit.as_str(),
            granted_units: plan.units as i64,
            allowance_id,
            allowance_units: alw_units,
            pending_amount: res.pending_amount,
            price_minor: res.price.minor,
            price_per_units: res.price.per_units,
            expires_at_ms: expires_at.0,
            status: "open",
            used_units: None,
            charged: None,
            session_used: session.used,
            session_charged: session.charged,
            request_key: key.to_string(),
            created_at_ms: self.now.0,
            resolved_at_ms: None,
        });
        self.state.open.push(res);
        self.entry(EntrySpec {
            account: &account.id,
            kind: "pending",
            amount: 0,
            pending_delta: plan.amount.0,
            allowance_id,
            units: 0,
            pending_units: alw_units,
            reservation_id: Some(&id),
            used_units: None,
            unbilled: 0,
            key: Some(key),
        })?;
        Ok(Ok(ReserveOutcome::Granted(Grant {
            units: plan.units,
            from_allowance: plan.allowance_units,
            amount: plan.amount,
            final_grant: plan.final_grant,
            expires_at,
        })))
    }

    fn reserve(&mut self, r: &ReserveRequest, key: &str) -> Result<Applied, EngineError> {
        let Some(account) = self.account_by_subscriber(&r.subscriber)? else {
            return Ok(Applied::alone(Ok(OpOutcome::Reserve(
                ReserveOutcome::Refused(Refusal::UnknownSubscriber),
            ))));
        };
        if !self
            .open_reservations(&r.session_ref, Some(&r.service))
            .is_empty()
        {
            return Ok(Applied::alone(Err(LedgerError::ReservationOpen {
                session_ref: r.session_ref.clone(),
            })));
        }
        let out = self.open_reservation(
            &account,
            &r.service,
            r.unit,
            r.requested_units,
            &r.session_ref,
            r.expires_at,
            key,
            SessionTotals::default(),
        )?;
        Ok(Applied::on(account.id, out.map(OpOutcome::Reserve)))
    }

    /// Post a reservation: the overdraft policy of [`plan_post`].
    fn post(
        &mut self,
        res: &OpenReservation,
        account: &Account,
        used: u64,
        key: &str,
    ) -> Result<Result<Posted, LedgerError>, EngineError> {
        let PostPlan {
            used: used_i,
            from_allowance,
            charged,
            unbilled,
        } = match plan_post(
            used,
            res.allowance_units,
            res.price,
            res.pending_amount,
            account.available(),
        ) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        self.entry(EntrySpec {
            account: &account.id,
            kind: "post",
            amount: -charged,
            pending_delta: -res.pending_amount,
            allowance_id: res.allowance_id,
            units: -from_allowance,
            pending_units: -res.allowance_units,
            reservation_id: Some(&res.id),
            used_units: Some(used_i),
            unbilled,
            key: Some(key),
        })?;
        self.resolve(&res.id, "posted", used_i, charged);
        Ok(Ok(Posted {
            committed: Committed {
                charged: Money(charged),
                from_allowance: from_allowance as u64,
                unbilled: Money(unbilled),
                next: None,
                session_open: None,
            },
            session: SessionTotals {
                used: res.session_totals.used + used_i,
                charged: res.session_totals.charged + charged,
            },
        }))
    }

    fn commit(&mut self, r: &CommitRequest, key: &str) -> Result<Applied, EngineError> {
        if let Err(e) = check_commit(r) {
            return Ok(Applied::alone(Err(e)));
        }
        let Some(res) = self
            .open_reservations(&r.session_ref, Some(&r.service))
            .into_iter()
            .next()
        else {
            return Ok(Applied::alone(Ok(OpOutcome::Commit(
                CommitOutcome::Refused(Refusal::NoReservation),
            ))));
        };
        let account = self.account(&res.account_id)?;
        let Posted {
            mut committed,
            session,
        } = match self.post(&res, &account, r.used.charged_in(res.unit), key)? {
            Ok(v) => v,
            Err(e) => return Ok(Applied::alone(Err(e))),
        };
        if let Some(next) = &r.next {
            let fresh = self.account(&res.account_id)?;
            match self.open_reservation(
                &fresh,
                &res.service,
                res.unit,
                next.requested_units,
                &r.session_ref,
                next.expires_at,
                key,
                session,
            )? {
                Ok(o) => committed.next = Some(o),
                // Cannot happen after check_commit, but never leave a half-applied operation.
                Err(e) => return Err(EngineError::NextReservation(e)),
            }
        }
        if r.final_commit {
            let open = self
                .state
                .open
                .iter()
                .filter(|x| x.session_ref == r.session_ref)
                .count();
            committed.session_open = Some(u32::try_from(open).unwrap_or(u32::MAX));
            self.record(RecordSpec {
                account: &account.id,
                kind: "session",
                session_ref: &r.session_ref,
                service: &res.service,
                unit: res.unit,
                used: session.used,
                charged: session.charged,
                key,
                payload: r.cdr.as_ref(),
            });
        }
        Ok(Applied::on(
            account.id,
            Ok(OpOutcome::Commit(CommitOutcome::Committed(committed))),
        ))
    }

    fn release(&mut self, r: &ReleaseRequest, key: &str) -> Result<Applied, EngineError> {
        let found = self.open_reservations(&r.session_ref, r.service.as_ref());
        let mut out = Released {
            reservations: 0,
            amount: Money(0),
            units: 0,
        };
        let mut account_id = None;
        for res in found {
            self.return_hold(&res, "void", "voided", Some(key))?;
            out.reservations += 1;
            out.amount.0 += res.pending_amount;
            out.units += to_u64(res.allowance_units);
            self.record(RecordSpec {
                account: &res.account_id,
                kind: "session",
                session_ref: &r.session_ref,
                service: &res.service,
                unit: res.unit,
                used: res.session_totals.used,
                charged: res.session_totals.charged,
                key,
                payload: r.cdr.as_ref(),
            });
            account_id = Some(res.account_id);
        }
        Ok(Applied {
            result: Ok(OpOutcome::Release(out)),
            account: account_id,
        })
    }

    fn direct_debit(&mut self, r: &DirectDebitRequest, key: &str) -> Result<Applied, EngineError> {
        let refused = |x| {
            Ok(Applied::alone(Ok(OpOutcome::DirectDebit(
                DirectDebitOutcome::Refused(x),
            ))))
        };
        let units = match to_i64(r.units) {
            Ok(u) => u,
            Err(e) => return Ok(Applied::alone(Err(e))),
        };
        let Some(account) = self.account_by_subscriber(&r.subscriber)? else {
            return refused(Refusal::UnknownSubscriber);
        };
        if !account.is_active() {
            return refused(Refusal::AccountBlocked);
        }
        let Some(tariff) = self.tariff(&r.service, r.unit, &account.currency) else {
            return refused(Refusal::NoTariff);
        };
        let allowance = self.allowance(&account.id, r.unit);
        let DirectDebitPlan {
            from_allowance,
            amount,
        } = match plan_direct_debit(
            units,
            allowance.map(|a| a.free),
            tariff.price,
            account.available(),
        ) {
            Ok(p) => p,
            Err(refusal) => return refused(refusal),
        };
        let allowance_id = allowance.filter(|_| from_allowance > 0).map(|a| a.id);
        self.entry(EntrySpec {
            account: &account.id,
            kind: "direct_debit",
            amount: -amount.0,
            pending_delta: 0,
            allowance_id,
            units: -from_allowance,
            pending_units: 0,
            reservation_id: None,
            used_units: Some(units),
            unbilled: 0,
            key: Some(key),
        })?;
        self.record(RecordSpec {
            account: &account.id,
            kind: "event",
            session_ref: &r.key.session_id,
            service: &r.service,
            unit: r.unit,
            used: units,
            charged: amount.0,
            key,
            payload: r.cdr.as_ref(),
        });
        Ok(Applied::on(
            account.id,
            Ok(OpOutcome::DirectDebit(DirectDebitOutcome::Debited {
                units: r.units,
                from_allowance: from_allowance as u64,
                charged: amount,
            })),
        ))
    }

    fn refund(&mut self, r: &RefundRequest, key: &str) -> Result<Applied, EngineError> {
        let refused = |x| {
            Ok(Applied::alone(Ok(OpOutcome::Refund(
                RefundOutcome::Refused(x),
            ))))
        };
        let Some(account) = self.account_by_subscriber(&r.subscriber)? else {
            return refused(Refusal::UnknownSubscriber);
        };
        let price = match &r.amount {
            RefundAmount::Units { service, unit, .. } => self
                .tariff(service, *unit, &account.currency)
                .map(|t| t.price),
            RefundAmount::Money(_) => None,
        };
        let amount = match refund_amount(&r.amount, price) {
            Ok(Ok(m)) => m,
            Ok(Err(refusal)) => return refused(refusal),
            Err(e) => return Ok(Applied::alone(Err(e))),
        };
        self.entry(EntrySpec {
            account: &account.id,
            kind: "refund",
            amount: amount.0,
            pending_delta: 0,
            allowance_id: None,
            units: 0,
            pending_units: 0,
            reservation_id: None,
            used_units: None,
            unbilled: 0,
            key: Some(key),
        })?;
        Ok(Applied::on(
            account.id,
            Ok(OpOutcome::Refund(RefundOutcome::Refunded { amount })),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
    use super::*;
    use crate::tariff::Price;

    const CTX: &str = "32260@3gpp.org";

    /// One active EUR account with 1.00 and a 0.01/s tariff (quantum 60, minimum 1).
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.accounts.insert(
            "alice".into(),
            Account {
                id: "alice".into(),
                currency: "EUR".into(),
                scale: 2,
                credit_limit: 0,
                status: "active".into(),
                balance: 100,
                reserved: 0,
            },
        );
        s.subscribers
            .insert(SubscriptionId::e164("15550000001"), "alice".into());
        s.tariffs.push(TariffEntry {
            service_context: CTX.into(),
            rating_group: None,
            service_id: None,
            unit: UnitType::Seconds,
            currency: "EUR".into(),
            price: Price {
                minor: 1,
                per_units: 1,
            },
            quantum: 60,
            min_grant: 1,
        });
        s
    }

    fn reserve(n: u32, seconds: u64) -> Op {
        Op::Reserve(ReserveRequest {
            key: RequestKey::new("c", "s1", n),
            subscriber: SubscriptionId::e164("+15550000001"),
            service: ServiceKey::context(CTX),
            unit: UnitType::Seconds,
            requested_units: Some(seconds),
            session_ref: "s1".into(),
            expires_at: Timestamp(1_000),
        })
    }

    fn commit(n: u32, seconds: u64) -> Op {
        Op::Commit(CommitRequest {
            key: RequestKey::new("c", "s1", n),
            session_ref: "s1".into(),
            service: ServiceKey::context(CTX),
            used: crate::units::UsedUnits::of(UnitType::Seconds, seconds),
            next: None,
            final_commit: true,
            cdr: None,
        })
    }

    #[test]
    fn a_session_reserves_posts_and_writes_its_rows_with_no_store() {
        let mut ids = CountingIds::new("r");
        let mut e = Engine::new(Timestamp(10), snapshot(), &mut ids);
        let granted = e.apply(&reserve(0, 30)).unwrap().unwrap();
        assert!(matches!(
            granted,
            OpOutcome::Reserve(ReserveOutcome::Granted(Grant { units: 30, .. }))
        ));
        assert_eq!(e.accounts()["alice"].reserved, 30);
        // A retransmission replays; a changed duplicate is refused; neither writes.
        assert_eq!(e.apply(&reserve(0, 30)).unwrap().unwrap(), granted);
        assert!(matches!(
            e.apply(&reserve(0, 31)).unwrap(),
            Err(LedgerError::ChangedDuplicate { .. })
        ));
        let done = e.apply(&commit(1, 42)).unwrap().unwrap();
        let OpOutcome::Commit(CommitOutcome::Committed(c)) = done else {
            panic!("{done:?}")
        };
        assert_eq!(c.charged, Money(42));
        assert_eq!(c.session_open, Some(0));
        let fx = e.into_effects().unwrap();
        // Opened and posted in one batch: one reservation row, already posted.
        assert_eq!(fx.new_reservations.len(), 1);
        assert_eq!(fx.new_reservations[0].id, "r-0");
        assert_eq!(fx.new_reservations[0].status, "posted");
        assert!(fx.resolutions.is_empty());
        let kinds: Vec<&str> = fx.entries.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, ["pending", "post"]);
        assert_eq!(
            fx.account_sums,
            [AccountSums {
                id: "alice".into(),
                balance: -42,
                reserved: 0
            }]
        );
        assert_eq!(fx.records.len(), 1);
        assert_eq!(fx.records[0].used_units, 42);
        assert_eq!(fx.stored_outcomes.len(), 2, "the replays store nothing");
    }

    #[test]
    fn an_account_missing_from_the_snapshot_fails_the_batch_not_the_request() {
        let mut s = snapshot();
        s.accounts.clear();
        let mut ids = CountingIds::new("r");
        let mut e = Engine::new(Timestamp(10), s, &mut ids);
        assert_eq!(
            e.apply(&reserve(0, 30)),
            Err(EngineError::AccountNotLoaded("alice".into()))
        );
    }
}
