//! Building the CCA (RFC 4006 §3.2, TS 32.299 §6.4.3): command-level result, one MSCC per
//! service asked about (or top-level GSU for an RFC-style request), Validity-Time,
//! Final-Unit-Indication, Cost-Information, Remaining-Balance, Check-Balance-Result.

use crate::ccr::{Ccr, ServiceRequest, Units};
use crate::config::CcConfig;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, Message, ResultCode};
use tollgate_ocs::{Currency, FinalUnitPolicy, Money, QuotaPolicy, UnitType};

/// The answer for one service (one MSCC).
#[derive(Clone, Debug)]
pub struct ServiceAnswer {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub in_mscc: bool,
    pub result: ResultCode,
    pub granted: Option<Units>,
    pub validity_time: Option<u32>,
    /// A final grant: what the client does once it is used up (Final-Unit-Indication).
    pub final_unit: Option<FinalUnitPolicy>,
    pub failed_avp: Option<Avp>,
    /// Money posted for this service in this request (for Cost-Information).
    pub charged: Option<Money>,
    /// The tariff's quota thresholds and times, sent with a grant.
    pub quota: QuotaPolicy,
}

impl ServiceAnswer {
    pub fn for_request(s: &ServiceRequest) -> Self {
        ServiceAnswer {
            rating_group: s.rating_group,
            service_identifier: s.service_identifier,
            in_mscc: s.in_mscc,
            result: ResultCode::SUCCESS,
            granted: None,
            validity_time: None,
            final_unit: None,
            failed_avp: None,
            charged: None,
            quota: QuotaPolicy::default(),
        }
    }
}

/// A CCA being assembled.
pub struct Cca<'a> {
    cfg: &'a CcConfig,
    request: &'a Message,
    ccr: &'a Ccr,
    pub result: ResultCode,
    pub services: Vec<ServiceAnswer>,
    pub failed_avp: Option<Avp>,
    /// (amount in minor units, ISO 4217 code, scale)
    pub cost: Option<(i64, String, u8)>,
    pub remaining: Option<(i64, String, u8)>,
    pub check_balance: Option<i32>,
}

/// Final-Unit-Indication (RFC 4006 §8.34): the action, and for REDIRECT the Redirect-Server
/// (§8.37, its address type from the address), for RESTRICT_ACCESS the Filter-Id (RFC 7155
/// §4.4.2, the client's own filter).
fn final_unit_indication(f: &FinalUnitPolicy) -> Avp {
    let mut members = vec![Avp::from_enum(FINAL_UNIT_ACTION, f.action())];
    match f {
        FinalUnitPolicy::Terminate => {}
        FinalUnitPolicy::Redirect { address } => {
            let kind = FinalUnitPolicy::redirect_address_type(address).unwrap_or(2);
            members.push(Avp::grouped(
                REDIRECT_SERVER,
                &[
                    Avp::from_enum(REDIRECT_ADDRESS_TYPE, kind),
                    Avp::from_str(REDIRECT_SERVER_ADDRESS, address),
                ],
            ));
        }
        FinalUnitPolicy::RestrictAccess { filter_id } => {
            members.push(Avp::from_str(FILTER_ID, filter_id));
        }
    }
    Avp::grouped(FINAL_UNIT_INDICATION, &members)
}

/// The tariff's quota thresholds and times for a grant in `unit`, in the MSCC's order
/// (TS 32.299 §7.2.106): the threshold of the grant's unit (Time-, Volume- or
/// Unit-Quota-Threshold, Unsigned32, saturated), then Quota-Holding-Time and
/// Quota-Consumption-Time.
fn quota_avps(unit: UnitType, q: &QuotaPolicy) -> Vec<Avp> {
    let mut avps = Vec::new();
    let threshold = match unit {
        UnitType::Seconds => Some(TIME_QUOTA_THRESHOLD),
        UnitType::Octets => Some(VOLUME_QUOTA_THRESHOLD),
        UnitType::Units => Some(UNIT_QUOTA_THRESHOLD),
        UnitType::Money => None,
    };
    if let (Some(code), Some(t)) = (threshold, q.threshold) {
        avps.push(Avp::from_u32(code, u32::try_from(t).unwrap_or(u32::MAX)));
    }
    if let Some(t) = q.holding_time_s {
        avps.push(Avp::from_u32(QUOTA_HOLDING_TIME, t));
    }
    if let Some(t) = q.consumption_time_s {
        avps.push(Avp::from_u32(QUOTA_CONSUMPTION_TIME, t));
    }
    avps
}

/// Unit-Value (RFC 4006 §8.8): amount = Value-Digits × 10^Exponent; minor units with scale
/// s are Value-Digits = minor, Exponent = −s.
fn unit_value(minor: i64, scale: u8) -> Avp {
    Avp::grouped(
        UNIT_VALUE,
        &[
            Avp::from_i64(VALUE_DIGITS, minor),
            Avp::from_i32(EXPONENT, -i32::from(scale)),
        ],
    )
}

fn currency_code(code: &str) -> u32 {
    Currency::parse(code)
        .ok()
        .and_then(|c| c.numeric())
        .unwrap_or(0)
}

/// The unit AVP of a Granted-Service-Unit.
fn unit_avp(u: Units) -> Avp {
    match u.unit {
        UnitType::Seconds => Avp::from_u32(CC_TIME, u32::try_from(u.amount).unwrap_or(u32::MAX)),
        UnitType::Octets => Avp::from_u64(CC_TOTAL_OCTETS, u.amount),
        UnitType::Units => Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, u.amount),
        UnitType::Money => Avp::grouped(
            CC_MONEY,
            &[unit_value(i64::try_from(u.amount).unwrap_or(i64::MAX), 0)],
        ),
    }
}

impl<'a> Cca<'a> {
    pub fn new(cfg: &'a CcConfig, request: &'a Message, ccr: &'a Ccr) -> Self {
        Cca {
            cfg,
            request,
            ccr,
            result: ResultCode::SUCCESS,
            services: Vec::new(),
            failed_avp: None,
            cost: None,
            remaining: None,
            check_balance: None,
        }
    }

    /// Chooses the command-level Result-Code from the per-service ones (RFC 4006 §5.1.2,
    /// docs/protocol.md, "Multiple-Services-Credit-Control"): success if any service succeeded;
    /// otherwise the services' common failure (e.g. 4012 when the only rating group is out of
    /// credit). 5030 and 5031 concern the whole request and always go to command level;
    /// `single_failure_wins` puts a lone service's failure there too (CCR-I: no session is
    /// created).
    pub fn settle_command_result(&mut self, single_failure_wins: bool) {
        if let Some(s) = self.services.iter().find(|s| {
            matches!(
                s.result,
                ResultCode::USER_UNKNOWN | ResultCode::RATING_FAILED
            )
        }) {
            self.result = s.result;
            self.failed_avp = s.failed_avp.clone();
            self.services.clear();
            return;
        }
        if self.services.iter().any(|s| s.result.is_success()) || self.services.is_empty() {
            self.result = ResultCode::SUCCESS;
            return;
        }
        let first = self.services[0].result;
        if single_failure_wins || self.services.iter().all(|s| s.result == first) {
            self.result = first;
        }
    }

    pub fn build(self) -> Message {
        let mut a = Message::answer_to(self.request);
        a.push(Avp::from_u32(RESULT_CODE, self.result.0));
        a.push(Avp::from_str(ORIGIN_HOST, &self.cfg.origin_host));
        a.push(Avp::from_str(ORIGIN_REALM, &self.cfg.origin_realm));
        a.push(Avp::from_u32(
            AUTH_APPLICATION_ID,
            ApplicationId::CREDIT_CONTROL.0,
        ));
        a.push(Avp::from_enum(
            CC_REQUEST_TYPE,
            self.ccr.request_type as i32,
        ));
        a.push(Avp::from_u32(CC_REQUEST_NUMBER, self.ccr.request_number));
        if let Some(f) = self.cfg.cc_session_failover {
            a.push(Avp::from_enum(CC_SESSION_FAILOVER, f));
        }
        for s in &self.services {
            if s.in_mscc {
                let mut members = Vec::with_capacity(6);
                if let Some(g) = s.granted {
                    members.push(Avp::grouped(GRANTED_SERVICE_UNIT, &[unit_avp(g)]));
                }
                if let Some(sid) = s.service_identifier {
                    members.push(Avp::from_u32(SERVICE_IDENTIFIER, sid));
                }
                if let Some(rg) = s.rating_group {
                    members.push(Avp::from_u32(RATING_GROUP, rg));
                }
                if let Some(v) = s.validity_time {
                    members.push(Avp::from_u32(VALIDITY_TIME, v));
                }
                members.push(Avp::from_u32(RESULT_CODE, s.result.0));
                if let Some(f) = &s.final_unit {
                    members.push(final_unit_indication(f));
                }
                if let Some(g) = s.granted {
                    members.extend(quota_avps(g.unit, &s.quota));
                }
                a.push(Avp::grouped(MULTIPLE_SERVICES_CREDIT_CONTROL, &members));
            } else {
                // RFC 4006 style request: answer at the top level.
                if let Some(g) = s.granted {
                    a.push(Avp::grouped(GRANTED_SERVICE_UNIT, &[unit_avp(g)]));
                }
                if let Some(v) = s.validity_time {
                    a.push(Avp::from_u32(VALIDITY_TIME, v));
                }
                if let Some(f) = &s.final_unit {
                    a.push(final_unit_indication(f));
                }
            }
        }
        if let Some((minor, cur, scale)) = &self.cost {
            a.push(Avp::grouped(
                COST_INFORMATION,
                &[
                    unit_value(*minor, *scale),
                    Avp::from_u32(CURRENCY_CODE, currency_code(cur)),
                ],
            ));
        }
        if let Some(r) = self.check_balance {
            a.push(Avp::from_enum(CHECK_BALANCE_RESULT, r));
        }
        if let Some(f) = self.cfg.credit_control_failure_handling {
            a.push(Avp::from_enum(CREDIT_CONTROL_FAILURE_HANDLING, f));
        }
        if self.ccr.request_type == crate::ccr::RequestType::Event {
            if let Some(f) = self.cfg.direct_debiting_failure_handling {
                a.push(Avp::from_enum(DIRECT_DEBITING_FAILURE_HANDLING, f));
            }
        }
        if let Some((minor, cur, scale)) = &self.remaining {
            a.push(Avp::grouped(
                REMAINING_BALANCE,
                &[
                    unit_value(*minor, *scale),
                    Avp::from_u32(CURRENCY_CODE, currency_code(cur)),
                ],
            ));
        }
        if let Some(f) = self.failed_avp {
            a.push(Avp::grouped(FAILED_AVP, &[f]));
        }
        a
    }
}
