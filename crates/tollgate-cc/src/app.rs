//! The credit-control server (RFC 4006 §7 server side, TS 32.299 Ro): every CCR answered
//! from the ledger.
//!
//! Session state lives in the ledger, not in this process: a CCR-I opens reservations keyed
//! by Session-Id (and Rating-Group); CCR-U/T commit against them; the sweeper expires what a
//! client abandoned (Tcc); a CCR-U/T that finds nothing open is 5002 UNKNOWN_SESSION_ID. So a
//! restarted or another node can finish a session (CC-Session-Failover), and the ledger's
//! idempotency keys (Origin-Host, Session-Id, CC-Request-Number, Rating-Group) make a
//! retransmission replay the stored outcome, which this module turns into the same CCA.

use crate::cca::{Cca, ServiceAnswer};
use crate::ccr::{ApplicationIdSource, Ccr, RequestType, RequestedAction, ServiceRequest, Units};
use crate::charging_data::charging_data;
use crate::config::CcConfig;
use std::sync::Arc;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, Message, ProtocolError, ResultCode};
use tollgate_ocs::{
    Clock, CommitOutcome, CommitRequest, DirectDebitOutcome, DirectDebitRequest, Ledger,
    LedgerError, NextReservation, RefundAmount, RefundOutcome, RefundRequest, Refusal,
    ReleaseRequest, RequestKey, ReserveOutcome, ReserveRequest, ServiceKey, SubscriptionId,
    UnitType,
};
use tollgate_peer::deviation::{self, Deviation};
use tollgate_peer::{AnswerFuture, Application, Request};
use tracing::{debug, warn};

/// Rating-Group used in the idempotency key of the "release what is left" step of a
/// CCR-T, so it never collides with the key of a commit in the same request.
const REST_OF_SESSION: u32 = u32::MAX;

#[derive(Clone)]
pub struct CreditControl {
    cfg: Arc<CcConfig>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
}

/// An answer decided before reaching the ledger, or a ledger failure.
enum Stop {
    Result(ResultCode, Option<Avp>),
    Protocol(ProtocolError),
    Store(LedgerError),
}

impl From<LedgerError> for Stop {
    fn from(e: LedgerError) -> Self {
        Stop::Store(e)
    }
}

impl CreditControl {
    pub fn new(cfg: CcConfig, ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>) -> Self {
        CreditControl {
            cfg: Arc::new(cfg),
            ledger,
            clock,
        }
    }

    /// Answers one CCR.
    pub async fn answer(&self, m: &Message) -> Message {
        let ccr = match Ccr::try_from(m) {
            Ok(c) => c,
            Err(e) => return self.protocol_error(m, &e),
        };
        if ccr.application_id_source == ApplicationIdSource::VendorSpecificApplicationId {
            deviation::report(
                Deviation::AuthApplicationIdInVendorSpecific,
                &ccr.origin_host,
                &ccr.session_id,
            );
        }
        let mut cca = Cca::new(&self.cfg, m, &ccr);
        let outcome = match ccr.request_type {
            RequestType::Initial => self.initial(&ccr, &mut cca).await,
            RequestType::Update => self.update(&ccr, &mut cca).await,
            RequestType::Termination => self.termination(m, &ccr, &mut cca).await,
            RequestType::Event => self.event(m, &ccr, &mut cca).await,
        };
        match outcome {
            Ok(()) => cca.build(),
            Err(Stop::Result(code, failed)) => {
                cca.result = code;
                cca.failed_avp = failed;
                cca.services.clear();
                cca.build()
            }
            Err(Stop::Protocol(e)) => self.protocol_error(m, &e),
            Err(Stop::Store(e)) => self.store_error(m, &ccr, &e),
        }
    }

    fn key(&self, ccr: &Ccr, rating_group: Option<u32>) -> RequestKey {
        let k = RequestKey::new(&ccr.origin_host, &ccr.session_id, ccr.request_number);
        match rating_group {
            Some(rg) => k.with_rating_group(rg),
            None => k,
        }
    }

    fn service_key(&self, ccr: &Ccr, s: &ServiceRequest) -> ServiceKey {
        let mut k = ServiceKey::context(&ccr.service_context_id);
        if let Some(rg) = s.rating_group {
            k = k.with_rating_group(rg);
        }
        if let Some(sid) = s.service_identifier {
            k = k.with_service_id(sid);
        }
        k
    }

    /// Tcc for a tariff with a Validity-Time of its own: that × `tcc_factor` from now.
    fn tcc(&self) -> tollgate_ocs::Tcc {
        tollgate_ocs::Tcc {
            from: self.clock.now(),
            factor: self.cfg.tcc_factor,
        }
    }

    /// Tcc under the server's own Validity-Time.
    fn expiry(&self) -> tollgate_ocs::Timestamp {
        self.tcc().expiry(self.cfg.validity_time_s)
    }

    fn subscriber(&self, ccr: &Ccr) -> Result<SubscriptionId, Stop> {
        ccr.subscription_ids.first().cloned().ok_or_else(|| {
            // The OCS cannot rate without knowing whom to charge (RFC 4006 §8.46).
            Stop::Protocol(ProtocolError::MissingAvp {
                avp: Avp::grouped(
                    SUBSCRIPTION_ID,
                    &[
                        Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
                        Avp::from_str(SUBSCRIPTION_ID_DATA, ""),
                    ],
                ),
                name: "Subscription-Id".into(),
            })
        })
    }

    /// The Failed-AVP 5031 RATING_FAILED must carry (RFC 4006 §9.1).
    fn rating_failed_avp(&self, ccr: &Ccr, s: Option<&ServiceRequest>) -> Avp {
        match s.and_then(|s| s.rating_group) {
            Some(rg) => Avp::from_u32(RATING_GROUP, rg),
            None => Avp::from_str(SERVICE_CONTEXT_ID, &ccr.service_context_id),
        }
    }

    /// CCR-I (SCUR start, ECUR reserve): rate and reserve per service.
    async fn initial(&self, ccr: &Ccr, cca: &mut Cca<'_>) -> Result<(), Stop> {
        let subscriber = self.subscriber(ccr)?;
        let mut services = ccr.services.clone();
        if services.is_empty() {
            // No RSU at all: the OCS chooses (RFC 4006 §5.1.1); a session is rated in time.
            services.push(ServiceRequest {
                requested: Some(None),
                ..ServiceRequest::default()
            });
        }
        let mut free = 0usize;
        for s in &services {
            let Some(requested) = s.requested else {
                continue;
            };
            let unit = requested.map(|u| u.unit).unwrap_or(UnitType::Seconds);
            let outcome = self
                .ledger
                .reserve(ReserveRequest {
                    key: self.key(ccr, s.rating_group),
                    subscriber: subscriber.clone(),
                    service: self.service_key(ccr, s),
                    unit,
                    requested_units: requested.map(|u| u.amount),
                    session_ref: ccr.session_id.clone(),
                    expires_at: self.expiry(),
                    tcc: Some(self.tcc()),
                })
                .await?;
            if let ReserveOutcome::Granted(g) = &outcome {
                if g.units > 0 && g.amount.0 == 0 && g.from_allowance == 0 {
                    free += 1;
                }
            }
            cca.services
                .push(self.reserve_answer(ccr, s, unit, outcome));
        }
        if free > 0 && free == cca.services.len() {
            // RFC 4006 §9.1 4011 CREDIT_CONTROL_NOT_APPLICABLE: everything asked for is free
            // (a zero price), so the session needs no credit control. Its zero-value
            // reservations are voided at once, and later CCR-U/T for it are 5002.
            self.ledger
                .release(ReleaseRequest {
                    key: self.key(ccr, Some(REST_OF_SESSION)),
                    session_ref: ccr.session_id.clone(),
                    service: None,
                    cdr: None,
                })
                .await?;
            return Err(Stop::Result(
                ResultCode::CREDIT_CONTROL_NOT_APPLICABLE,
                None,
            ));
        }
        cca.settle_command_result(true);
        Ok(())
    }

    fn reserve_answer(
        &self,
        ccr: &Ccr,
        s: &ServiceRequest,
        unit: UnitType,
        outcome: ReserveOutcome,
    ) -> ServiceAnswer {
        let mut a = ServiceAnswer::for_request(s);
        match outcome {
            ReserveOutcome::Granted(g) => {
                a.result = ResultCode::SUCCESS;
                a.granted = Some(Units {
                    unit,
                    amount: g.units,
                });
                // The tariff's own Validity-Time, when it has one (its Tcc followed it).
                let validity = g.quota.validity_time_s.unwrap_or(self.cfg.validity_time_s);
                a.validity_time = Some(validity);
                a.final_unit = g.final_grant.then(|| g.final_unit.clone());
                a.quota = g.quota;
            }
            ReserveOutcome::Refused(r) => {
                a.result = ResultCode(r.result_code());
                if r == Refusal::NoTariff {
                    a.failed_avp = Some(self.rating_failed_avp(ccr, Some(s)));
                }
            }
        }
        a
    }

    /// The usage a report is charged for: at most `max_reported_usage` per unit type. More is
    /// a client's mistake (or worse), not a call; it is charged up to the cap, logged and
    /// counted, and the CCR is answered as usual.
    fn capped(&self, ccr: &Ccr, mut used: tollgate_ocs::UsedUnits) -> tollgate_ocs::UsedUnits {
        for unit in UnitType::ALL {
            let cap = self.cfg.max_reported_usage.cap(unit);
            if let Some(n) = used.amount(unit).filter(|n| *n > cap) {
                tracing::warn!(
                    origin_host = %ccr.origin_host,
                    session = %ccr.session_id,
                    ?unit,
                    reported = n,
                    charged = cap,
                    "usage far above what one report can carry; charged up to the cap"
                );
                metrics::counter!("tollgate_usage_capped_total", "unit" => unit.as_str())
                    .increment(1);
                used = used.with(unit, cap);
            }
        }
        used
    }

    /// CCR-U: commit what was used, reserve again.
    async fn update(&self, ccr: &Ccr, cca: &mut Cca<'_>) -> Result<(), Stop> {
        for s in &ccr.services {
            let next = s.requested.map(|r| NextReservation {
                requested_units: r.map(|u| u.amount),
                expires_at: self.expiry(),
                tcc: Some(self.tcc()),
            });
            let outcome = self
                .ledger
                .commit(CommitRequest {
                    key: self.key(ccr, s.rating_group),
                    session_ref: ccr.session_id.clone(),
                    service: self.service_key(ccr, s),
                    used: self.capped(ccr, s.used.unwrap_or_default()),
                    next,
                    final_commit: false,
                    cdr: None,
                })
                .await?;
            let mut a = ServiceAnswer::for_request(s);
            match outcome {
                CommitOutcome::Committed(c) => {
                    a.charged = Some(c.charged);
                    match c.next {
                        Some(next) => {
                            let unit = s
                                .requested
                                .flatten()
                                .map(|u| u.unit)
                                .or_else(|| s.used.and_then(|u| u.reported().next()))
                                .unwrap_or(UnitType::Seconds);
                            a = ServiceAnswer {
                                charged: a.charged,
                                ..self.reserve_answer(ccr, s, unit, next)
                            };
                        }
                        None => a.result = ResultCode::SUCCESS,
                    }
                }
                // Nothing open for this session: unknown, finished, or expired at Tcc.
                CommitOutcome::Refused(Refusal::NoReservation) => {
                    return Err(Stop::Result(ResultCode::UNKNOWN_SESSION_ID, None));
                }
                CommitOutcome::Refused(r) => a.result = ResultCode(r.result_code()),
            }
            cca.services.push(a);
        }
        if ccr.services.is_empty() {
            cca.result = ResultCode::SUCCESS;
        } else {
            cca.settle_command_result(false);
        }
        Ok(())
    }

    /// CCR-T: commit what was used, release the rest, write the charging data record.
    async fn termination(&self, m: &Message, ccr: &Ccr, cca: &mut Cca<'_>) -> Result<(), Stop> {
        let cdr = charging_data(m, ccr);
        let mut touched = 0u32;
        // Reservations the session still holds after the last commit (None: not known).
        let mut still_open: Option<u32> = None;
        for s in ccr.services.iter().filter(|s| s.used.is_some()) {
            let outcome = self
                .ledger
                .commit(CommitRequest {
                    key: self.key(ccr, s.rating_group),
                    session_ref: ccr.session_id.clone(),
                    service: self.service_key(ccr, s),
                    used: self.capped(ccr, s.used.unwrap_or_default()),
                    next: None,
                    final_commit: true,
                    cdr: Some(cdr.clone()),
                })
                .await?;
            let mut a = ServiceAnswer::for_request(s);
            match outcome {
                CommitOutcome::Committed(c) => {
                    touched += 1;
                    still_open = c.session_open;
                    a.result = ResultCode::SUCCESS;
                    a.charged = Some(c.charged);
                }
                CommitOutcome::Refused(Refusal::NoReservation) => continue,
                CommitOutcome::Refused(r) => {
                    touched += 1;
                    still_open = None;
                    a.result = ResultCode(r.result_code());
                }
            }
            cca.services.push(a);
        }
        // Whatever is still reserved for this session (services not reported) returns; when
        // the last final commit saw nothing left open, there is nothing to release and the
        // ledger operation is saved.
        if !(touched > 0 && still_open == Some(0)) {
            let released = self
                .ledger
                .release(ReleaseRequest {
                    key: self.key(ccr, Some(REST_OF_SESSION)),
                    session_ref: ccr.session_id.clone(),
                    service: None,
                    cdr: (touched == 0).then(|| cdr.clone()),
                })
                .await?;
            if touched == 0 && released.reservations == 0 {
                return Err(Stop::Result(ResultCode::UNKNOWN_SESSION_ID, None));
            }
        }
        cca.result = ResultCode::SUCCESS;
        if self.cfg.cost_information {
            let charged = cca
                .services
                .iter()
                .filter_map(|s| s.charged)
                .map(|c| c.0)
                .sum();
            self.attach_cost(ccr, cca, charged).await;
        }
        Ok(())
    }

    async fn attach_cost(&self, ccr: &Ccr, cca: &mut Cca<'_>, charged_minor: i64) {
        let Some(sub) = ccr.subscription_ids.first() else {
            return;
        };
        // Cost-Information needs the account's currency; a failed read only drops it.
        match self.ledger.balance(sub).await {
            Ok(b) => {
                cca.cost = Some((charged_minor, b.currency.clone(), b.scale));
                cca.remaining = Some((b.available.0 - b.credit_limit.0, b.currency, b.scale));
            }
            Err(e) => debug!("no Cost-Information: {e}"),
        }
    }

    /// CCR-E (IEC and the enquiries).
    async fn event(&self, m: &Message, ccr: &Ccr, cca: &mut Cca<'_>) -> Result<(), Stop> {
        let subscriber = self.subscriber(ccr)?;
        let action = ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        let first = ccr.services.first().cloned().unwrap_or_default();
        let requested = first.requested.flatten();
        let need_units = || {
            requested.ok_or_else(|| {
                Stop::Protocol(ProtocolError::MissingAvp {
                    avp: Avp::grouped(REQUESTED_SERVICE_UNIT, &[]),
                    name: "Requested-Service-Unit".into(),
                })
            })
        };
        match action {
            RequestedAction::DirectDebiting => {
                let units = need_units()?;
                let outcome = self
                    .ledger
                    .direct_debit(DirectDebitRequest {
                        key: self.key(ccr, first.rating_group),
                        subscriber,
                        service: self.service_key(ccr, &first),
                        unit: units.unit,
                        units: units.amount,
                        cdr: Some(charging_data(m, ccr)),
                    })
                    .await?;
                let mut a = ServiceAnswer::for_request(&first);
                match outcome {
                    DirectDebitOutcome::Debited {
                        units: n, charged, ..
                    } => {
                        a.result = ResultCode::SUCCESS;
                        a.granted = Some(Units {
                            unit: units.unit,
                            amount: n,
                        });
                        a.charged = Some(charged);
                    }
                    DirectDebitOutcome::Refused(r) => {
                        a.result = ResultCode(r.result_code());
                        if r == Refusal::NoTariff {
                            a.failed_avp = Some(self.rating_failed_avp(ccr, Some(&first)));
                        }
                    }
                }
                cca.services.push(a);
                cca.settle_command_result(true);
                if cca.result.is_success() && self.cfg.cost_information {
                    let charged = cca
                        .services
                        .iter()
                        .filter_map(|s| s.charged)
                        .map(|c| c.0)
                        .sum();
                    self.attach_cost(ccr, cca, charged).await;
                }
            }
            RequestedAction::RefundAccount => {
                let units = need_units()?;
                let amount = if units.unit == UnitType::Money {
                    RefundAmount::Money(tollgate_ocs::Money(
                        i64::try_from(units.amount)
                            .map_err(|_| Stop::Result(ResultCode::INVALID_AVP_VALUE, None))?,
                    ))
                } else {
                    RefundAmount::Units {
                        service: self.service_key(ccr, &first),
                        unit: units.unit,
                        units: units.amount,
                    }
                };
                let outcome = self
                    .ledger
                    .refund(RefundRequest {
                        key: self.key(ccr, first.rating_group),
                        subscriber,
                        amount,
                    })
                    .await?;
                let mut a = ServiceAnswer::for_request(&first);
                match outcome {
                    RefundOutcome::Refunded { .. } => {
                        a.result = ResultCode::SUCCESS;
                        a.granted = Some(units);
                    }
                    RefundOutcome::Refused(r) => a.result = ResultCode(r.result_code()),
                }
                cca.services.push(a);
                cca.settle_command_result(true);
            }
            RequestedAction::CheckBalance => {
                let b = match self.ledger.balance(&subscriber).await {
                    Ok(b) => b,
                    Err(LedgerError::UnknownSubscriber) => {
                        return Err(Stop::Result(ResultCode::USER_UNKNOWN, None))
                    }
                    Err(e) => return Err(Stop::Store(e)),
                };
                // ENOUGH_CREDIT when something can still be granted (RFC 4006 §8.6).
                let enough =
                    b.available.0 > 0 || b.allowances.iter().any(|a| a.remaining > a.reserved);
                cca.check_balance = Some(if enough { 0 } else { 1 });
                cca.result = ResultCode::SUCCESS;
            }
            RequestedAction::PriceEnquiry => {
                let units = need_units()?;
                match self
                    .ledger
                    .price(&self.service_key(ccr, &first), units.unit, units.amount)
                    .await
                {
                    Ok(q) => {
                        cca.cost = Some((q.amount.0, q.currency, q.scale));
                        cca.result = ResultCode::SUCCESS;
                    }
                    Err(LedgerError::NoTariff) => {
                        return Err(Stop::Result(
                            ResultCode::RATING_FAILED,
                            Some(self.rating_failed_avp(ccr, Some(&first))),
                        ))
                    }
                    Err(e) => return Err(Stop::Store(e)),
                }
            }
        }
        Ok(())
    }

    /// A CCR we refuse before charging: a normal CCA for 5xxx (E bit only for 3xxx).
    fn protocol_error(&self, m: &Message, e: &ProtocolError) -> Message {
        let mut a = Message::error_answer(
            &m.header,
            m.find(SESSION_ID),
            e,
            &self.cfg.origin_host,
            &self.cfg.origin_realm,
        );
        if !e.result_code().is_protocol_error() {
            // The CCA grammar wants these back (RFC 4006 §3.2).
            a.push(Avp::from_u32(
                AUTH_APPLICATION_ID,
                ApplicationId::CREDIT_CONTROL.0,
            ));
            for k in [CC_REQUEST_TYPE, CC_REQUEST_NUMBER] {
                if let Some(v) = m.find(k).filter(|v| v.data.len() == 4) {
                    a.push(v.clone());
                }
            }
        }
        a
    }

    fn store_error(&self, m: &Message, ccr: &Ccr, e: &LedgerError) -> Message {
        let code = match e {
            LedgerError::Store { .. } | LedgerError::Unavailable => {
                warn!(session = %ccr.session_id, "ledger unavailable: {e}");
                self.cfg.store_failure_result
            }
            other => ResultCode(other.result_code()),
        };
        let mut cca = Cca::new(&self.cfg, m, ccr);
        cca.result = code;
        let mut a = cca.build();
        if code.is_protocol_error() {
            a.header.flags = a.header.flags.with(tollgate_codec::Flags::ERROR, true);
        }
        a
    }
}

impl Application for CreditControl {
    fn application_ids(&self) -> Vec<ApplicationId> {
        vec![ApplicationId::CREDIT_CONTROL]
    }

    fn handle(&self, request: Request) -> AnswerFuture {
        let this = self.clone();
        Box::pin(async move { this.answer(&request.message).await })
    }
}
