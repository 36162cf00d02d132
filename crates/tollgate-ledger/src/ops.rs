//! The ledger operations, applied one after another inside a batch transaction (DESIGN §3).
//!
//! Each operation first reads and checks, then writes: a refusal or a request error writes
//! nothing (except the stored refusal), so one bad request never spoils its batch. The account
//! row is locked (`FOR UPDATE` on PostgreSQL) before anything about its money is read, so two
//! nodes on one database serialise on the row, never on a cached balance (DESIGN §5).

use crate::store::Dialect;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_ocs::engine::*;
use tollgate_ocs::tariff::GrantPlan;
use tollgate_ocs::*;

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

#[derive(Debug, Clone)]
struct ReservationRow {
    id: String,
    account_id: String,
    service: ServiceKey,
    unit: UnitType,
    allowance_id: Option<i64>,
    allowance_units: i64,
    pending_amount: i64,
    price: Price,
    session_used: i64,
    session_charged: i64,
}

const RES_COLS: &str = "id, account_id, service_context, rating_group, service_id, unit, allowance_id, allowance_units, pending_amount, price_minor, price_per_units, session_used, session_charged";

fn reservation_from_row(r: &AnyRow) -> Result<ReservationRow, sqlx::Error> {
    let unit: String = r.try_get("unit")?;
    Ok(ReservationRow {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        service: ServiceKey {
            service_context: r.try_get("service_context")?,
            rating_group: r
                .try_get::<Option<i64>, _>("rating_group")?
                .map(|v| v as u32),
            service_id: r.try_get::<Option<i64>, _>("service_id")?.map(|v| v as u32),
        },
        unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        allowance_id: r.try_get("allowance_id")?,
        allowance_units: r.try_get("allowance_units")?,
        pending_amount: r.try_get("pending_amount")?,
        price: Price {
            minor: r.try_get("price_minor")?,
            per_units: r.try_get("price_per_units")?,
        },
        session_used: r.try_get("session_used")?,
        session_charged: r.try_get("session_charged")?,
    })
}

/// Reservation ids are generated here, not by the database, so a batch can name them before
/// insert; unique per process start (time-based prefix) plus a counter.
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
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Executes operations on one connection inside an open transaction.
pub(crate) struct Exec<'c> {
    pub conn: &'c mut AnyConnection,
    pub dialect: Dialect,
    pub now: Timestamp,
}

impl Exec<'_> {
    /// Apply one op with idempotency: replay a stored outcome, reject a changed duplicate,
    /// otherwise execute and store the outcome (same transaction as the money).
    pub async fn apply(&mut self, op: &Op) -> Result<OpResult, sqlx::Error> {
        let key = op.key().to_key_string();
        let fp = op.fingerprint();
        let stored = sqlx::query("SELECT fingerprint, CAST(outcome AS TEXT) AS outcome FROM idempotency_keys WHERE request_key = $1")
            .bind(&key)
            .fetch_optional(&mut *self.conn)
            .await?;
        if let Some(row) = stored {
            let stored_fp: String = row.try_get("fingerprint")?;
            if stored_fp != fp {
                return Ok(Err(LedgerError::ChangedDuplicate { key }));
            }
            let text: String = row.try_get("outcome")?;
            let outcome: OpOutcome =
                serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            return Ok(Ok(outcome));
        }
        let (result, account) = match op {
            Op::Reserve(r) => self.reserve(r, &key).await?,
            Op::Commit(r) => self.commit(r, &key).await?,
            Op::Release(r) => self.release(r, &key).await?,
            Op::DirectDebit(r) => self.direct_debit(r, &key).await?,
            Op::Refund(r) => self.refund(r, &key).await?,
        };
        if let Ok(outcome) = &result {
            let text =
                serde_json::to_string(outcome).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let sql = format!(
                "INSERT INTO idempotency_keys (request_key, op, fingerprint, outcome, account_id, created_at_ms) VALUES ($1, $2, $3, {}, $5, $6)",
                self.dialect.json_param(4)
            );
            sqlx::query(&sql)
                .bind(&key)
                .bind(op.name())
                .bind(&fp)
                .bind(text)
                .bind(account)
                .bind(self.now.0)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(result)
    }

    async fn account_by_subscriber(
        &mut self,
        sub: &SubscriptionId,
    ) -> Result<Option<AccountRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM subscriptions s JOIN accounts a ON a.id = s.account_id WHERE s.sub_type = $1 AND s.sub_data = $2{}",
            self.dialect.for_update().replace("FOR UPDATE", "FOR UPDATE OF a")
        );
        let row = sqlx::query(&sql)
            .bind(i64::from(sub.kind.code()))
            .bind(&sub.data)
            .fetch_optional(&mut *self.conn)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn account_by_id(&mut self, id: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts a WHERE a.id = $1{}",
            self.dialect.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *self.conn)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// Tariff lookup: the most specific context with an applicable tariff
    /// (ServiceKey::tariff_contexts), then Service-Identifier match first, then Rating-Group,
    /// then context-wide.
    async fn tariff(
        &mut self,
        service: &ServiceKey,
        unit: UnitType,
        currency: Option<&str>,
    ) -> Result<Option<Tariff>, sqlx::Error> {
        for context in service.tariff_contexts() {
            if let Some(t) = self.tariff_in(context, service, unit, currency).await? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// [`Self::tariff`] within one Service-Context-Id.
    async fn tariff_in(
        &mut self,
        context: &str,
        service: &ServiceKey,
        unit: UnitType,
        currency: Option<&str>,
    ) -> Result<Option<Tariff>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT currency, price_minor, price_per_units, quantum, min_grant FROM tariffs \
             WHERE service_context = $1 AND unit = $2 AND ($3 IS NULL OR currency = $3) \
             AND (service_id = $4 OR (service_id IS NULL AND rating_group = $5) OR (service_id IS NULL AND rating_group IS NULL)) \
             ORDER BY CASE WHEN service_id IS NULL THEN 1 ELSE 0 END, CASE WHEN rating_group IS NULL THEN 1 ELSE 0 END LIMIT 1",
        )
        .bind(context)
        .bind(unit.as_str())
        .bind(currency.map(str::to_string))
        .bind(service.service_id.map(i64::from))
        .bind(service.rating_group.map(i64::from))
        .fetch_optional(&mut *self.conn)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Tariff {
            service: service.clone(),
            unit,
            currency: r.try_get("currency")?,
            price: Price {
                minor: r.try_get("price_minor")?,
                per_units: r.try_get("price_per_units")?,
            },
            quantum: to_u64(r.try_get("quantum")?),
            min_grant: to_u64(r.try_get("min_grant")?),
        }))
    }

    /// Tariff in whatever currency it is set (PRICE_ENQUIRY without a subscriber).
    pub(crate) async fn tariff_any(
        &mut self,
        service: &ServiceKey,
        unit: UnitType,
    ) -> Result<Option<Tariff>, sqlx::Error> {
        self.tariff(service, unit, None).await
    }

    /// The allowance to draw on first: valid now, same unit, units left; soonest to lapse first.
    async fn allowance(
        &mut self,
        account: &str,
        unit: UnitType,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, remaining - reserved AS free FROM allowances WHERE account_id = $1 AND unit = $2 \
             AND valid_until_ms > $3 AND remaining - reserved > 0 ORDER BY valid_until_ms, id LIMIT 1",
        )
        .bind(account)
        .bind(unit.as_str())
        .bind(self.now.0)
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("free")?)))
            .transpose()
    }

    async fn open_reservations(
        &mut self,
        session_ref: &str,
        service: Option<&ServiceKey>,
    ) -> Result<Vec<ReservationRow>, sqlx::Error> {
        let rows = match service {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {RES_COLS} FROM reservations WHERE session_ref = $1 AND status = 'open' AND service_context = $2 \
                     AND COALESCE(rating_group, -1) = $3 AND COALESCE(service_id, -1) = $4 ORDER BY id"
                ))
                .bind(session_ref)
                .bind(&s.service_context)
                .bind(s.rating_group.map(i64::from).unwrap_or(-1))
                .bind(s.service_id.map(i64::from).unwrap_or(-1))
                .fetch_all(&mut *self.conn)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {RES_COLS} FROM reservations WHERE session_ref = $1 AND status = 'open' ORDER BY id"))
                    .bind(session_ref)
                    .fetch_all(&mut *self.conn)
                    .await?
            }
        };
        rows.iter().map(reservation_from_row).collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn entry(
        &mut self,
        account: &str,
        kind: &str,
        amount: i64,
        pending_delta: i64,
        allowance_id: Option<i64>,
        units: i64,
        pending_units: i64,
        reservation_id: Option<&str>,
        used_units: Option<i64>,
        unbilled: i64,
        key: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id, units, pending_units, \
             reservation_id, used_units, unbilled, request_key, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        )
        .bind(account)
        .bind(kind)
        .bind(amount)
        .bind(pending_delta)
        .bind(allowance_id)
        .bind(units)
        .bind(pending_units)
        .bind(reservation_id.map(str::to_string))
        .bind(used_units)
        .bind(unbilled)
        .bind(key.map(str::to_string))
        .bind(self.now.0)
        .execute(&mut *self.conn)
        .await?;
        // The cached balance changes in the same transaction as the entry (DESIGN §3).
        sqlx::query(
            "UPDATE accounts SET balance = balance + $1, reserved = reserved + $2 WHERE id = $3",
        )
        .bind(amount)
        .bind(pending_delta)
        .bind(account)
        .execute(&mut *self.conn)
        .await?;
        if let Some(aid) = allowance_id {
            sqlx::query("UPDATE allowances SET remaining = remaining + $1, reserved = reserved + $2 WHERE id = $3")
                .bind(units)
                .bind(pending_units)
                .bind(aid)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    /// Rate and open a reservation for a locked account. Writes only when granted.
    #[allow(clippy::too_many_arguments)]
    async fn open_reservation(
        &mut self,
        account: &AccountRow,
        service: &ServiceKey,
        unit: UnitType,
        requested: Option<u64>,
        session_ref: &str,
        expires_at: Timestamp,
        key: &str,
        session_totals: (i64, i64),
    ) -> Result<Result<ReserveOutcome, LedgerError>, sqlx::Error> {
        if let Some(r) = requested {
            if let Err(e) = to_i64(r) {
                return Ok(Err(e));
            }
        }
        if account.status != "active" {
            return Ok(Ok(ReserveOutcome::Refused(Refusal::AccountBlocked)));
        }
        let Some(tariff) = self.tariff(service, unit, Some(&account.currency)).await? else {
            return Ok(Ok(ReserveOutcome::Refused(Refusal::NoTariff)));
        };
        let allowance = self.allowance(&account.id, unit).await?;
        let free = allowance.map(|(_, f)| to_u64(f)).unwrap_or(0);
        let plan: GrantPlan = match tariff.plan_grant(requested, free, Money(account.available())) {
            Ok(p) => p,
            Err(refusal) => return Ok(Ok(ReserveOutcome::Refused(refusal))),
        };
        let id = new_reservation_id();
        let allowance_id = allowance
            .filter(|_| plan.allowance_units > 0)
            .map(|(id, _)| id);
        let alw_units = plan.allowance_units as i64;
        sqlx::query(
            "INSERT INTO reservations (id, account_id, session_ref, service_context, rating_group, service_id, unit, granted_units, \
             allowance_id, allowance_units, pending_amount, price_minor, price_per_units, expires_at_ms, status, session_used, \
             session_charged, request_key, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,'open',$15,$16,$17,$18)",
        )
        .bind(&id)
        .bind(&account.id)
        .bind(session_ref)
        .bind(&service.service_context)
        .bind(service.rating_group.map(i64::from))
        .bind(service.service_id.map(i64::from))
        .bind(unit.as_str())
        .bind(plan.units as i64)
        .bind(allowance_id)
        .bind(alw_units)
        .bind(plan.amount.0)
        .bind(tariff.price.minor)
        .bind(tariff.price.per_units)
        .bind(expires_at.0)
        .bind(session_totals.0)
        .bind(session_totals.1)
        .bind(key)
        .bind(self.now.0)
        .execute(&mut *self.conn)
        .await?;
        self.entry(
            &account.id,
            "pending",
            0,
            plan.amount.0,
            allowance_id,
            0,
            alw_units,
            Some(&id),
            None,
            0,
            Some(key),
        )
        .await?;
        Ok(Ok(ReserveOutcome::Granted(Grant {
            units: plan.units,
            from_allowance: plan.allowance_units,
            amount: plan.amount,
            final_grant: plan.final_grant,
            expires_at,
        })))
    }

    async fn reserve(
        &mut self,
        r: &ReserveRequest,
        key: &str,
    ) -> Result<(OpResult, Option<String>), sqlx::Error> {
        let Some(account) = self.account_by_subscriber(&r.subscriber).await? else {
            return Ok((
                Ok(OpOutcome::Reserve(ReserveOutcome::Refused(
                    Refusal::UnknownSubscriber,
                ))),
                None,
            ));
        };
        if !self
            .open_reservations(&r.session_ref, Some(&r.service))
            .await?
            .is_empty()
        {
            return Ok((
                Err(LedgerError::ReservationOpen {
                    session_ref: r.session_ref.clone(),
                }),
                None,
            ));
        }
        let out = self
            .open_reservation(
                &account,
                &r.service,
                r.unit,
                r.requested_units,
                &r.session_ref,
                r.expires_at,
                key,
                (0, 0),
            )
            .await?;
        Ok((out.map(OpOutcome::Reserve), Some(account.id)))
    }

    /// Resolve a reservation as posted. Overdraft policy (docs/ledger.md): usage above the grant
    /// is charged as far as the credit floor (balance − reserved ≥ −credit_limit) allows; the
    /// rest is recorded as `unbilled` on the post entry.
    async fn post(
        &mut self,
        res: &ReservationRow,
        account: &AccountRow,
        used: u64,
        key: &str,
    ) -> Result<Result<(Committed, i64, i64), LedgerError>, sqlx::Error> {
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
        self.entry(
            &account.id,
            "post",
            -charged,
            -res.pending_amount,
            res.allowance_id,
            -from_allowance,
            -res.allowance_units,
            Some(&res.id),
            Some(used_i),
            unbilled,
            Some(key),
        )
        .await?;
        let s_used = res.session_used + used_i;
        let s_charged = res.session_charged + charged;
        sqlx::query("UPDATE reservations SET status = 'posted', used_units = $1, charged = $2, resolved_at_ms = $3 WHERE id = $4 AND status = 'open'")
            .bind(used_i)
            .bind(charged)
            .bind(self.now.0)
            .bind(&res.id)
            .execute(&mut *self.conn)
            .await?;
        Ok(Ok((
            Committed {
                charged: Money(charged),
                from_allowance: from_allowance as u64,
                unbilled: Money(unbilled),
                next: None,
                session_open: None,
            },
            s_used,
            s_charged,
        )))
    }

    async fn commit(
        &mut self,
        r: &CommitRequest,
        key: &str,
    ) -> Result<(OpResult, Option<String>), sqlx::Error> {
        if let Err(e) = check_commit(r) {
            return Ok((Err(e), None));
        }
        let Some(res) = self
            .open_reservations(&r.session_ref, Some(&r.service))
            .await?
            .into_iter()
            .next()
        else {
            return Ok((
                Ok(OpOutcome::Commit(CommitOutcome::Refused(
                    Refusal::NoReservation,
                ))),
                None,
            ));
        };
        let Some(account) = self.account_by_id(&res.account_id).await? else {
            return Ok((
                Ok(OpOutcome::Commit(CommitOutcome::Refused(
                    Refusal::UnknownSubscriber,
                ))),
                None,
            ));
        };
        // Re-read under the account lock: another node may have resolved it meanwhile.
        let still_open = self
            .open_reservations(&r.session_ref, Some(&r.service))
            .await?;
        let Some(res) = still_open.into_iter().find(|x| x.id == res.id) else {
            return Ok((
                Ok(OpOutcome::Commit(CommitOutcome::Refused(
                    Refusal::NoReservation,
                ))),
                Some(account.id),
            ));
        };
        let (mut committed, s_used, s_charged) = match self
            .post(&res, &account, r.used.charged_in(res.unit), key)
            .await?
        {
            Ok(v) => v,
            Err(e) => return Ok((Err(e), None)),
        };
        if let Some(next) = &r.next {
            let fresh = self
                .account_by_id(&res.account_id)
                .await?
                .unwrap_or_else(|| account.clone());
            match self
                .open_reservation(
                    &fresh,
                    &res.service,
                    res.unit,
                    next.requested_units,
                    &r.session_ref,
                    next.expires_at,
                    key,
                    (s_used, s_charged),
                )
                .await?
            {
                Ok(o) => committed.next = Some(o),
                // Cannot happen after validation above, but never leave a half-applied op.
                Err(e) => {
                    return Err(sqlx::Error::Protocol(format!(
                        "next reservation failed after post: {e}"
                    )))
                }
            }
        }
        if r.final_commit {
            let open = self.open_reservations(&r.session_ref, None).await?.len();
            committed.session_open = Some(u32::try_from(open).unwrap_or(u32::MAX));
            self.cdr(
                &account.id,
                "session",
                &r.session_ref,
                &res.service,
                res.unit,
                s_used,
                s_charged,
                key,
                r.cdr.as_ref(),
            )
            .await?;
        }
        Ok((
            Ok(OpOutcome::Commit(CommitOutcome::Committed(committed))),
            Some(account.id),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn cdr(
        &mut self,
        account: &str,
        kind: &str,
        session_ref: &str,
        service: &ServiceKey,
        unit: UnitType,
        used: i64,
        charged: i64,
        key: &str,
        payload: Option<&serde_json::Value>,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO charging_records (account_id, kind, session_ref, service_context, rating_group, service_id, unit, used_units, \
             charged, request_key, payload, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,{},$12)",
            self.dialect.json_param(11)
        );
        sqlx::query(&sql)
            .bind(account)
            .bind(kind)
            .bind(session_ref)
            .bind(&service.service_context)
            .bind(service.rating_group.map(i64::from))
            .bind(service.service_id.map(i64::from))
            .bind(unit.as_str())
            .bind(used)
            .bind(charged)
            .bind(key)
            .bind(payload.map(|p| p.to_string()))
            .bind(self.now.0)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    /// Void (abort) or expire one reservation: the pending amount returns, nothing is charged.
    pub(crate) async fn unwind(
        &mut self,
        res_id: &str,
        kind: &str,
        key: Option<&str>,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {RES_COLS} FROM reservations WHERE id = $1 AND status = 'open'"
        ))
        .bind(res_id)
        .fetch_optional(&mut *self.conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let res = reservation_from_row(&row)?;
        let status = if kind == "expire" {
            "expired"
        } else {
            "voided"
        };
        self.entry(
            &res.account_id,
            kind,
            0,
            -res.pending_amount,
            res.allowance_id,
            0,
            -res.allowance_units,
            Some(&res.id),
            None,
            0,
            key,
        )
        .await?;
        sqlx::query("UPDATE reservations SET status = $1, used_units = 0, charged = 0, resolved_at_ms = $2 WHERE id = $3")
            .bind(status)
            .bind(self.now.0)
            .bind(&res.id)
            .execute(&mut *self.conn)
            .await?;
        Ok(Some((res.pending_amount, res.allowance_units)))
    }

    async fn release(
        &mut self,
        r: &ReleaseRequest,
        key: &str,
    ) -> Result<(OpResult, Option<String>), sqlx::Error> {
        let found = self
            .open_reservations(&r.session_ref, r.service.as_ref())
            .await?;
        let mut out = Released {
            reservations: 0,
            amount: Money(0),
            units: 0,
        };
        let mut account_id = None;
        for res in found {
            self.account_by_id(&res.account_id).await?;
            if let Some((amount, units)) = self.unwind(&res.id, "void", Some(key)).await? {
                out.reservations += 1;
                out.amount.0 += amount;
                out.units += to_u64(units);
                self.cdr(
                    &res.account_id,
                    "session",
                    &r.session_ref,
                    &res.service,
                    res.unit,
                    res.session_used,
                    res.session_charged,
                    key,
                    r.cdr.as_ref(),
                )
                .await?;
            }
            account_id = Some(res.account_id);
        }
        Ok((Ok(OpOutcome::Release(out)), account_id))
    }

    async fn direct_debit(
        &mut self,
        r: &DirectDebitRequest,
        key: &str,
    ) -> Result<(OpResult, Option<String>), sqlx::Error> {
        let refused = |x| {
            Ok((
                Ok(OpOutcome::DirectDebit(DirectDebitOutcome::Refused(x))),
                None,
            ))
        };
        let units = match to_i64(r.units) {
            Ok(u) => u,
            Err(e) => return Ok((Err(e), None)),
        };
        let Some(account) = self.account_by_subscriber(&r.subscriber).await? else {
            return refused(Refusal::UnknownSubscriber);
        };
        if account.status != "active" {
            return refused(Refusal::AccountBlocked);
        }
        let Some(tariff) = self
            .tariff(&r.service, r.unit, Some(&account.currency))
            .await?
        else {
            return refused(Refusal::NoTariff);
        };
        let allowance = self.allowance(&account.id, r.unit).await?;
        let DirectDebitPlan {
            from_allowance,
            amount,
        } = match plan_direct_debit(
            units,
            allowance.map(|(_, f)| f),
            tariff.price,
            account.available(),
        ) {
            Ok(p) => p,
            Err(refusal) => return refused(refusal),
        };
        let allowance_id = allowance.filter(|_| from_allowance > 0).map(|(id, _)| id);
        self.entry(
            &account.id,
            "direct_debit",
            -amount.0,
            0,
            allowance_id,
            -from_allowance,
            0,
            None,
            Some(units),
            0,
            Some(key),
        )
        .await?;
        self.cdr(
            &account.id,
            "event",
            &r.key.session_id,
            &r.service,
            r.unit,
            units,
            amount.0,
            key,
            r.cdr.as_ref(),
        )
        .await?;
        Ok((
            Ok(OpOutcome::DirectDebit(DirectDebitOutcome::Debited {
                units: r.units,
                from_allowance: from_allowance as u64,
                charged: amount,
            })),
            Some(account.id),
        ))
    }

    async fn refund(
        &mut self,
        r: &RefundRequest,
        key: &str,
    ) -> Result<(OpResult, Option<String>), sqlx::Error> {
        let refused = |x| Ok((Ok(OpOutcome::Refund(RefundOutcome::Refused(x))), None));
        let Some(account) = self.account_by_subscriber(&r.subscriber).await? else {
            return refused(Refusal::UnknownSubscriber);
        };
        let price = match &r.amount {
            RefundAmount::Units { service, unit, .. } => self
                .tariff(service, *unit, Some(&account.currency))
                .await?
                .map(|t| t.price),
            RefundAmount::Money(_) => None,
        };
        let amount = match refund_amount(&r.amount, price) {
            Ok(Ok(m)) => m,
            Ok(Err(refusal)) => return refused(refusal),
            Err(e) => return Ok((Err(e), None)),
        };
        self.entry(
            &account.id,
            "refund",
            amount.0,
            0,
            None,
            0,
            0,
            None,
            None,
            0,
            Some(key),
        )
        .await?;
        Ok((
            Ok(OpOutcome::Refund(RefundOutcome::Refunded { amount })),
            Some(account.id),
        ))
    }
}
