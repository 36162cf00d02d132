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
//! Idempotency (docs/ledger.md, "journal — immutable"): an operation whose request key has a stored
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
use crate::tariff::FinalUnitPolicy;
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
    /// An operation that failed left ledger entries behind: they would be written without an
    /// answer stored for them.
    #[error("ledger engine: {key} failed after making ledger entries")]
    HalfApplied { key: String },
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
        .map(|(_, t)| t.priced_for(service.clone()))
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
    session_ref: Option<&'a str>,
    kind: &'static str,
    amount: i64,
    pending_delta: i64,
    allowance_id: Option<i64>,
    units: i64,
    pending_units: i64,
    reservation_id: Option<&'a str>,
    used_units: Option<i64>,
    unbilled: i64,
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
    /// The session credits as loaded: the grant each held.
    loaded: BTreeMap<CreditKey, String>,
    ids: &'i mut dyn ReservationIds,
    /// The entries of the operation being applied, until it is journaled.
    op_entries: Vec<LedgerEntry>,
    journal: Vec<JournalRow>,
    entry_count: i64,
    records: Vec<ChargingRecord>,
}

impl<'i> Engine<'i> {
    pub fn new(now: Timestamp, mut state: Snapshot, ids: &'i mut dyn ReservationIds) -> Self {
        state.open.sort_by(|a, b| a.id.cmp(&b.id));
        let loaded = state
            .open
            .iter()
            .map(|r| (r.credit_key(), r.id.clone()))
            .collect();
        Engine {
            now,
            initial: state.accounts.clone(),
            state,
            allowance_delta: BTreeMap::new(),
            loaded,
            ids,
            op_entries: Vec::new(),
            journal: Vec::new(),
            entry_count: 0,
            records: Vec::new(),
        }
    }

    /// The accounts as they stand after the operations applied so far.
    pub fn accounts(&self) -> &HashMap<String, Account> {
        &self.state.accounts
    }

    /// Applies one operation with idempotency.
    pub fn apply(&mut self, op: &Op) -> Result<OpResult, EngineError> {
        let key = op.key().to_key_string();
        let text = op.fingerprint_text();
        let fp = op::fingerprint_digest(&text);
        if let Some(s) = self.state.stored.get(&key) {
            // Answers stored before ledger v2 hold the fingerprint's text itself.
            if s.fingerprint != fp && s.fingerprint != text {
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
            Op::Refund(r) => self.refund(r)?,
        };
        let Ok(outcome) = &result else {
            if !self.op_entries.is_empty() {
                return Err(EngineError::HalfApplied { key });
            }
            return Ok(result);
        };
        {
            // Every outcome type is plain data: serializing it cannot fail.
            let text = serde_json::to_string(outcome).map_err(|e| EngineError::StoredOutcome {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            self.journal_op(&key, op.name(), Some((fp.clone(), text.clone())), account);
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
        // Session credits: compare what is open now with what was loaded, per credit key, so
        // a credit ended and opened again in one batch is one update, never a delete and an
        // insert of the same key.
        let mut credits_opened = Vec::new();
        let mut credits_regranted = Vec::new();
        let mut still_open = std::collections::BTreeSet::new();
        for r in &self.state.open {
            let key = r.credit_key();
            match self.loaded.get(&key) {
                None => credits_opened.push(r.to_row()),
                Some(was) if *was != r.id => credits_regranted.push(CreditRegrant {
                    from_reservation_id: was.clone(),
                    row: r.to_row(),
                }),
                Some(_) => {}
            }
            still_open.insert(key);
        }
        let credits_closed = self
            .loaded
            .into_iter()
            .filter(|(key, _)| !still_open.contains(key))
            .map(|(key, reservation_id)| CreditClose {
                key,
                reservation_id,
            })
            .collect();
        Ok(Effects {
            now: self.now,
            journal: self.journal,
            entry_count: self.entry_count,
            credits_opened,
            credits_regranted,
            credits_closed,
            account_sums,
            allowance_sums,
            records: self.records,
        })
    }

    /// Journal the entries the operation made, under its key: part 0 carries the stored
    /// answer and the first entry; a pending entry right after a post of the same
    /// operation (a commit opening the next grant) rides on the post's row as its hold; any
    /// other entry takes the next part. An answer with no entry still takes part 0.
    fn journal_op(
        &mut self,
        key: &str,
        op: &'static str,
        answer: Option<(String, String)>,
        account: Option<String>,
    ) {
        let entries = std::mem::take(&mut self.op_entries);
        let (fingerprint, outcome) = answer.unzip();
        let mut rows: Vec<JournalRow> = Vec::new();
        for e in entries {
            if e.kind == "pending" {
                if let Some(last) = rows.last_mut() {
                    if last.kind == Some("post")
                        && last.hold_entry_no.is_none()
                        && last.account_id.as_deref() == Some(e.account_id.as_str())
                    {
                        last.hold_entry_no = Some(self.entry_count);
                        self.entry_count += 1;
                        last.hold_reservation_id = e.reservation_id;
                        last.hold_amount = e.pending_delta;
                        last.hold_allowance_id = e.allowance_id;
                        last.hold_units = e.pending_units;
                        continue;
                    }
                }
            }
            let entry_no = self.entry_count;
            self.entry_count += 1;
            rows.push(JournalRow {
                account_id: Some(e.account_id),
                session_ref: e.session_ref,
                entry_no: Some(entry_no),
                kind: Some(e.kind),
                amount: e.amount,
                pending_delta: e.pending_delta,
                allowance_id: e.allowance_id,
                units: e.units,
                pending_units: e.pending_units,
                reservation_id: e.reservation_id,
                used_units: e.used_units,
                unbilled: e.unbilled,
                ..JournalRow::empty(key, op)
            });
        }
        if rows.is_empty() {
            rows.push(JournalRow {
                account_id: account.clone(),
                ..JournalRow::empty(key, op)
            });
        }
        if let Some(first) = rows.first_mut() {
            first.fingerprint = fingerprint;
            first.outcome = outcome;
            if first.account_id.is_none() {
                first.account_id = account;
            }
        }
        for (part, mut row) in rows.into_iter().enumerate() {
            row.part = part as i64;
            self.journal.push(row);
        }
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
        self.return_hold(&res, "expire")?;
        // Not a request: the key is the reservation's own, which no request key can take
        // (request keys start with a digit, `RequestKey::to_key_string`).
        self.journal_op(
            &format!("~expire:{}", res.id),
            "expire",
            None,
            Some(res.account_id.clone()),
        );
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
        self.op_entries.push(LedgerEntry {
            account_id: e.account.to_string(),
            kind: e.kind,
            amount: e.amount,
            pending_delta: e.pending_delta,
            allowance_id: e.allowance_id,
            units: e.units,
            pending_units: e.pending_units,
            reservation_id: e.reservation_id.map(str::to_string),
            session_ref: e.session_ref.map(str::to_string),
            used_units: e.used_units,
            unbilled: e.unbilled,
        });
        Ok(())
    }

    /// A reservation ends unused (voided by its client, or expired): its held money and
    /// allowance units return, nothing is charged. `kind`: the entry's (void or expire).
    fn return_hold(
        &mut self,
        res: &OpenReservation,
        kind: &'static str,
    ) -> Result<(), EngineError> {
        self.entry(EntrySpec {
            account: &res.account_id,
            session_ref: Some(&res.session_ref),
            kind,
            amount: 0,
            pending_delta: -res.pending_amount,
            allowance_id: res.allowance_id,
            units: 0,
            pending_units: -res.allowance_units,
            reservation_id: Some(&res.id),
            used_units: None,
            unbilled: 0,
        })?;
        self.resolve(&res.id);
        Ok(())
    }

    /// An open reservation is resolved: it leaves the open set (its entry says how).
    fn resolve(&mut self, id: &str) {
        self.state.open.retain(|r| r.id != id);
    }

    fn record(&mut self, r: RecordSpec<'_>) {
        self.records.push(ChargingRecord {
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
    /// `continues`: the reservation a commit just posted, whose session credit the new one
    /// continues (a CCR-U's next grant); `None` opens a new credit (a CCR-I).
    #[allow(clippy::too_many_arguments)]
    fn open_reservation(
        &mut self,
        account: &Account,
        service: &ServiceKey,
        unit: UnitType,
        requested: Option<u64>,
        session_ref: &str,
        expires_at: Timestamp,
        tcc: Option<Tcc>,
        key: &str,
        session: SessionTotals,
        continues: Option<&OpenReservation>,
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
        // A tariff with its own Validity-Time sets the reservation's Tcc.
        let expires_at = match (tariff.quota.validity_time_s, tcc) {
            (Some(v), Some(tcc)) => tcc.expiry(v),
            _ => expires_at,
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
            credit_id: continues.map_or_else(|| id.clone(), |c| c.credit_id.clone()),
            account_id: account.id.clone(),
            session_ref: session_ref.to_string(),
            service: service.clone(),
            unit,
            granted_units: plan.units as i64,
            allowance_id,
            allowance_units: alw_units,
            pending_amount: plan.amount.0,
            price: tariff.price,
            expires_at,
            session_totals: session,
            request_key: key.to_string(),
            opened_at: continues.map_or(self.now, |c| c.opened_at),
            granted_at: self.now,
        };
        self.state.open.push(res);
        self.entry(EntrySpec {
            account: &account.id,
            session_ref: Some(session_ref),
            kind: "pending",
            amount: 0,
            pending_delta: plan.amount.0,
            allowance_id,
            units: 0,
            pending_units: alw_units,
            reservation_id: Some(&id),
            used_units: None,
            unbilled: 0,
        })?;
        Ok(Ok(ReserveOutcome::Granted(Grant {
            units: plan.units,
            from_allowance: plan.allowance_units,
            amount: plan.amount,
            final_grant: plan.final_grant,
            expires_at,
            quota: tariff.quota,
            final_unit: if plan.final_grant {
                tariff.final_unit.clone()
            } else {
                FinalUnitPolicy::Terminate
            },
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
            r.tcc,
            key,
            SessionTotals::default(),
            None,
        )?;
        Ok(Applied::on(account.id, out.map(OpOutcome::Reserve)))
    }

    /// Post a reservation: the overdraft policy of [`plan_post`].
    fn post(
        &mut self,
        res: &OpenReservation,
        account: &Account,
        used: u64,
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
            session_ref: Some(&res.session_ref),
            kind: "post",
            amount: -charged,
            pending_delta: -res.pending_amount,
            allowance_id: res.allowance_id,
            units: -from_allowance,
            pending_units: -res.allowance_units,
            reservation_id: Some(&res.id),
            used_units: Some(used_i),
            unbilled,
        })?;
        self.resolve(&res.id);
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
        } = match self.post(&res, &account, r.used.charged_in(res.unit))? {
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
                next.tcc,
                key,
                session,
                Some(&res),
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
            self.return_hold(&res, "void")?;
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
            session_ref: None,
            kind: "direct_debit",
            amount: -amount.0,
            pending_delta: 0,
            allowance_id,
            units: -from_allowance,
            pending_units: 0,
            reservation_id: None,
            used_units: Some(units),
            unbilled: 0,
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

    fn refund(&mut self, r: &RefundRequest) -> Result<Applied, EngineError> {
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
            session_ref: None,
            kind: "refund",
            amount: amount.0,
            pending_delta: 0,
            allowance_id: None,
            units: 0,
            pending_units: 0,
            reservation_id: None,
            used_units: None,
            unbilled: 0,
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
            quota: Default::default(),
            final_unit: Default::default(),
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
            tcc: None,
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
        // Opened and posted in one batch: no session credit row is left to write.
        assert!(fx.credits_opened.is_empty());
        assert!(fx.credits_regranted.is_empty());
        assert!(fx.credits_closed.is_empty());
        let kinds: Vec<&str> = fx.entries().iter().map(|x| x.kind).collect();
        assert_eq!(kinds, ["pending", "post"]);
        assert_eq!(fx.entry_count, 2);
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
        // One journal row per request, each with its stored answer; the replays store nothing.
        assert_eq!(fx.journal.len(), 2);
        assert!(fx
            .journal
            .iter()
            .all(|j| j.part == 0 && j.outcome.is_some()));
    }

    #[test]
    fn a_ccr_u_is_one_journal_row_and_an_in_place_regrant_of_its_credit() {
        let mut ids = CountingIds::new("r");
        let mut first = Engine::new(Timestamp(10), snapshot(), &mut ids);
        first.apply(&reserve(0, 30)).unwrap().unwrap();
        let opened = first.into_effects().unwrap();
        assert_eq!(opened.credits_opened.len(), 1);
        let row = &opened.credits_opened[0];
        // What the store loads back in the next batch.
        let mut s = snapshot();
        s.accounts.get_mut("alice").unwrap().reserved = 30;
        s.open.push(OpenReservation {
            id: row.reservation_id.clone(),
            credit_id: row.credit_id.clone(),
            account_id: row.account_id.clone(),
            session_ref: row.session_ref.clone(),
            service: ServiceKey::context(CTX),
            unit: UnitType::Seconds,
            granted_units: row.granted_units,
            allowance_id: None,
            allowance_units: 0,
            pending_amount: row.pending_amount,
            price: Price {
                minor: 1,
                per_units: 1,
            },
            expires_at: Timestamp(row.expires_at_ms),
            session_totals: SessionTotals::default(),
            request_key: row.request_key.clone(),
            opened_at: Timestamp(row.opened_at_ms),
            granted_at: Timestamp(row.granted_at_ms),
        });
        let mut e = Engine::new(Timestamp(20), s, &mut ids);
        let update = Op::Commit(CommitRequest {
            key: RequestKey::new("c", "s1", 1),
            session_ref: "s1".into(),
            service: ServiceKey::context(CTX),
            used: crate::units::UsedUnits::of(UnitType::Seconds, 12),
            next: Some(NextReservation {
                requested_units: Some(30),
                expires_at: Timestamp(2_000),
                tcc: None,
            }),
            final_commit: false,
            cdr: None,
        });
        e.apply(&update).unwrap().unwrap();
        let fx = e.into_effects().unwrap();
        // One row: the post, the next grant's hold and the stored answer under one key.
        assert_eq!(fx.journal.len(), 1);
        let j = &fx.journal[0];
        assert_eq!(
            (j.kind, j.amount, j.pending_delta),
            (Some("post"), -12, -30)
        );
        assert_eq!(
            (j.hold_amount, j.hold_reservation_id.as_deref()),
            (30, Some("r-1"))
        );
        assert!(j.outcome.is_some());
        // The credit is updated in place: same credit, new grant, session totals carried.
        assert!(fx.credits_opened.is_empty() && fx.credits_closed.is_empty());
        assert_eq!(fx.credits_regranted.len(), 1);
        let g = &fx.credits_regranted[0];
        assert_eq!(g.from_reservation_id, "r-0");
        assert_eq!(
            (g.row.credit_id.as_str(), g.row.reservation_id.as_str()),
            ("r-0", "r-1")
        );
        assert_eq!((g.row.session_used, g.row.session_charged), (12, 12));
        assert_eq!((g.row.opened_at_ms, g.row.granted_at_ms), (10, 20));
    }

    #[test]
    fn a_fingerprint_is_stored_as_the_first_128_bits_of_its_sha256() {
        // The stored form must never change between versions: a retransmission across an
        // upgrade is matched against it (FIPS 180-2's "abc" example).
        assert_eq!(
            op::fingerprint_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223"
        );
        let r = reserve(0, 30);
        assert_eq!(
            r.fingerprint(),
            op::fingerprint_digest(&r.fingerprint_text())
        );
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
