//! CH-2 ↔ Diameter Credit-Control, sans-io (docs/protocol.md, "CH-2 to credit-control
//! mapping" and "Service context, units and payload for OMA IM").
//!
//! | CH-2 | CCR |
//! |---|---|
//! | SessionRequest start / interim / stop | INITIAL 0 / UPDATE n / TERMINATION last+1 (SCUR) |
//! | EventRequest reserve units / debit units | INITIAL 0 / TERMINATION 1 (ECUR) |
//! | EventRequest direct debit / refund / balance / price | EVENT 0, Requested-Action 0 / 1 / 2 / 3 (IEC) |
//!
//! Quota always travels in Multiple-Services-Credit-Control (TS 32.299 §6.3: Ro has no
//! top-level units), with Multiple-Services-Indicator on the INITIAL request (RFC 4006 §8.40).
//! The OMA IM AVPs (Service-Generic-Information, IM-Information) are M-flagged 3GPP AVPs that
//! an OCS which does not know them answers with 5001 (docs/protocol.md, "Service context,
//! units and payload for OMA IM"), so they can be switched off, as can IMS-Information.

use super::*;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Message, ResultCode};

use crate::ccr::RequestType;

const INITIAL_REQUEST: i32 = RequestType::Initial as i32;
const UPDATE_REQUEST: i32 = RequestType::Update as i32;
const TERMINATION_REQUEST: i32 = RequestType::Termination as i32;
const EVENT_REQUEST: i32 = RequestType::Event as i32;

/// Node-Functionality AS (TS 32.299 §7.2.118): the IM server is an IMS application server.
const NODE_FUNCTIONALITY_AS: i32 = 6;

/// What the IM server says about itself in every CCR, and which payload it sends.
#[derive(Clone, Debug)]
pub struct Ch2Profile {
    pub origin_host: String,
    pub origin_realm: String,
    /// Realm of the OCS (Destination-Realm of every CCR).
    pub destination_realm: String,
    /// Service-Context-Id (docs/protocol.md, "Service context, units and payload for OMA
    /// IM": default 32260@3gpp.org, the IMS context; an operator value such as
    /// `simple-im@operator.example` works as well).
    pub service_context_id: String,
    /// Application-Server-Id inside Service-Generic-Information.
    pub application_server_id: Option<String>,
    /// Send the OMA IM AVPs (Service-Generic-Information 1256, IM-Information 2110).
    pub oma_payload: bool,
    /// Send IMS-Information (876).
    pub ims_payload: bool,
}

impl Ch2Profile {
    pub fn new(origin_host: &str, origin_realm: &str, destination_realm: &str) -> Self {
        Ch2Profile {
            origin_host: origin_host.to_string(),
            origin_realm: origin_realm.to_string(),
            destination_realm: destination_realm.to_string(),
            service_context_id: "32260@3gpp.org".to_string(),
            application_server_id: Some(format!("sip:{origin_host}")),
            oma_payload: true,
            ims_payload: true,
        }
    }

    /// The CCR for a SessionRequest; `number` is its CC-Request-Number.
    pub fn session_ccr(
        &self,
        req: &SessionRequest,
        session_id: &str,
        number: u32,
        destination_host: Option<&str>,
    ) -> Message {
        let kind = match req.phase {
            SessionPhase::Start => INITIAL_REQUEST,
            SessionPhase::Interim => UPDATE_REQUEST,
            SessionPhase::Stop => TERMINATION_REQUEST,
        };
        let mut m = self.skeleton(session_id, kind, number, destination_host);
        push_subscribers(&mut m, &req.subscribers);
        if req.phase == SessionPhase::Stop {
            let cause = req.termination_cause.unwrap_or(TerminationCause::Logout);
            m.push(Avp::from_enum(TERMINATION_CAUSE, cause as i32));
        }
        if kind == INITIAL_REQUEST {
            m.push(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1));
        }
        m.push(mscc(
            req.rating_group,
            req.requested,
            req.used,
            req.reporting_reason,
        ));
        if let Some(si) = self.service_information(&req.payload) {
            m.push(si);
        }
        m
    }

    /// The CCR for an EventRequest; `number` is its CC-Request-Number (0, or 1 for a debit).
    pub fn event_ccr(
        &self,
        req: &EventRequest,
        session_id: &str,
        number: u32,
        destination_host: Option<&str>,
    ) -> Message {
        let kind = match req.action {
            EventAction::ReserveUnits => INITIAL_REQUEST,
            EventAction::DebitUnits => TERMINATION_REQUEST,
            _ => EVENT_REQUEST,
        };
        let mut m = self.skeleton(session_id, kind, number, destination_host);
        if let Some(action) = req.action.requested_action() {
            m.push(Avp::from_enum(REQUESTED_ACTION, action));
        }
        push_subscribers(&mut m, &req.subscribers);
        if kind == TERMINATION_REQUEST {
            let cause = req.termination_cause.unwrap_or(TerminationCause::Logout);
            m.push(Avp::from_enum(TERMINATION_CAUSE, cause as i32));
        }
        if kind != TERMINATION_REQUEST {
            m.push(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1));
        }
        match req.action {
            EventAction::BalanceCheck => {}
            EventAction::DebitUnits => {
                m.push(mscc(
                    req.rating_group,
                    None,
                    Some(req.units.unwrap_or(Ch2Units::Messages(0))),
                    Some(ReportingReason::Final),
                ));
            }
            _ => {
                m.push(mscc(req.rating_group, req.units, None, None));
            }
        }
        if let Some(si) = self.service_information(&req.payload) {
            m.push(si);
        }
        m
    }

    fn skeleton(
        &self,
        session_id: &str,
        kind: i32,
        number: u32,
        destination_host: Option<&str>,
    ) -> Message {
        let mut m = Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        )
        .with(Avp::from_str(SESSION_ID, session_id))
        .with(Avp::from_str(ORIGIN_HOST, &self.origin_host))
        .with(Avp::from_str(ORIGIN_REALM, &self.origin_realm))
        .with(Avp::from_str(DESTINATION_REALM, &self.destination_realm));
        if let Some(h) = destination_host {
            m.push(Avp::from_str(DESTINATION_HOST, h));
        }
        m.with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
            .with(Avp::from_str(SERVICE_CONTEXT_ID, &self.service_context_id))
            .with(Avp::from_enum(CC_REQUEST_TYPE, kind))
            .with(Avp::from_u32(CC_REQUEST_NUMBER, number))
    }

    /// Service-Information{IMS-Information, Service-Generic-Information, IM-Information}:
    /// the OMA containers are siblings of IMS-Information (TS 32.299 §7.2.192;
    /// docs/protocol.md, "Service-Information and IMS-Information").
    fn service_information(&self, p: &ImPayload) -> Option<Avp> {
        let mut members = Vec::new();
        if self.ims_payload {
            let mut ims = Vec::new();
            if let Some(method) = &p.sip_method {
                ims.push(Avp::grouped(
                    EVENT_TYPE,
                    &[Avp::from_str(SIP_METHOD, method)],
                ));
            }
            if let Some(r) = p.role_of_node {
                ims.push(Avp::from_enum(ROLE_OF_NODE, r as i32));
            }
            ims.push(Avp::from_enum(NODE_FUNCTIONALITY, NODE_FUNCTIONALITY_AS));
            if let Some(c) = &p.call_id {
                ims.push(Avp::from_str(USER_SESSION_ID, c));
            }
            if let Some(c) = &p.calling_party {
                ims.push(Avp::from_str(CALLING_PARTY_ADDRESS, c));
            }
            if let Some(c) = &p.called_party {
                ims.push(Avp::from_str(CALLED_PARTY_ADDRESS, c));
            }
            if !p.invitees.is_empty() {
                let mut asi = Vec::with_capacity(p.invitees.len() + 1);
                if let Some(id) = &self.application_server_id {
                    asi.push(Avp::from_str(APPLICATION_SERVER, id));
                }
                for i in &p.invitees {
                    asi.push(Avp::from_str(APPLICATION_PROVIDED_CALLED_PARTY_ADDRESS, i));
                }
                ims.push(Avp::grouped(APPLICATION_SERVER_INFORMATION, &asi));
            }
            if let Some(i) = &p.icid {
                ims.push(Avp::from_str(IMS_CHARGING_IDENTIFIER, i));
            }
            members.push(Avp::grouped(IMS_INFORMATION, &ims));
        }
        if self.oma_payload {
            let mut sgi = Vec::new();
            if let Some(id) = &self.application_server_id {
                sgi.push(Avp::from_str(APPLICATION_SERVER_ID, id));
            }
            if let Some(t) = p.service_type {
                sgi.push(Avp::from_enum(APPLICATION_SERVICE_TYPE, t as i32));
            }
            if let Some(id) = p.application_session_id {
                sgi.push(Avp::from_u32(APPLICATION_SESSION_ID, id));
            }
            if !sgi.is_empty() {
                members.push(Avp::grouped(SERVICE_GENERIC_INFORMATION, &sgi));
            }
            if let Some(c) = p.messages {
                let mut im = Vec::new();
                for (code, v) in [
                    (TOTAL_NUMBER_OF_MESSAGES_SENT, c.total_sent),
                    (TOTAL_NUMBER_OF_MESSAGES_EXPLODED, c.total_exploded),
                    (NUMBER_OF_MESSAGES_SUCCESSFULLY_SENT, c.successfully_sent),
                    (
                        NUMBER_OF_MESSAGES_SUCCESSFULLY_EXPLODED,
                        c.successfully_exploded,
                    ),
                ] {
                    if let Some(v) = v {
                        im.push(Avp::from_u32(code, v));
                    }
                }
                members.push(Avp::grouped(IM_INFORMATION, &im));
            }
        }
        (!members.is_empty()).then(|| Avp::grouped(SERVICE_INFORMATION, &members))
    }
}

fn push_subscribers(m: &mut Message, subs: &[SubscriptionId]) {
    for s in subs {
        m.push(Avp::grouped(
            SUBSCRIPTION_ID,
            &[
                Avp::from_enum(SUBSCRIPTION_ID_TYPE, i32::from(s.kind.code())),
                Avp::from_str(SUBSCRIPTION_ID_DATA, &s.data),
            ],
        ));
    }
}

fn unit_avp(u: Ch2Units) -> Avp {
    match u {
        Ch2Units::Seconds(s) => Avp::from_u32(CC_TIME, s),
        Ch2Units::Messages(n) => Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, n),
        Ch2Units::Octets(n) => Avp::from_u64(CC_TOTAL_OCTETS, n),
    }
}

fn mscc(
    rating_group: Option<u32>,
    requested: Option<Ch2Units>,
    used: Option<Ch2Units>,
    reason: Option<ReportingReason>,
) -> Avp {
    let mut m = Vec::with_capacity(4);
    if let Some(r) = requested {
        m.push(Avp::grouped(REQUESTED_SERVICE_UNIT, &[unit_avp(r)]));
    }
    if let Some(u) = used {
        m.push(Avp::grouped(USED_SERVICE_UNIT, &[unit_avp(u)]));
    }
    if let Some(rg) = rating_group {
        m.push(Avp::from_u32(RATING_GROUP, rg));
    }
    if let Some(r) = reason {
        // Reporting-Reason at MSCC level applies to every unit type (TS 32.299 §7.2.178).
        m.push(Avp::from_enum(REPORTING_REASON, r as i32));
    }
    Avp::grouped(MULTIPLE_SERVICES_CREDIT_CONTROL, &m)
}

/// The Outcome a Result-Code stands for (RFC 4006 §9, TS 32.299 §6.3.9). Temporary failures
/// (3002, 3004, 3005) are the client's to handle before this is asked.
pub fn outcome_of(code: u32) -> Outcome {
    match code {
        4011 => Outcome::Free,
        c if (2000..3000).contains(&c) => Outcome::Granted,
        4010 => Outcome::Denied,
        4012 => Outcome::InsufficientCredit,
        5030 => Outcome::UnknownUser,
        5031 => Outcome::RatingFailed,
        5002 => Outcome::UnknownSession,
        _ => Outcome::Failed,
    }
}

/// Whether a Result-Code is a temporary failure after which a client may try another server
/// (RFC 4006 §5.5: 3002 UNABLE_TO_DELIVER, 3004 TOO_BUSY, 3005 LOOP_DETECTED).
pub fn is_temporary(code: ResultCode) -> bool {
    matches!(
        code,
        ResultCode::UNABLE_TO_DELIVER | ResultCode::TOO_BUSY | ResultCode::LOOP_DETECTED
    )
}

fn amount(g: &Avp) -> Option<Amount> {
    let members = g.members().ok()?;
    let uv = members.iter().find(|a| a.is(UNIT_VALUE))?.members().ok()?;
    let digits = uv.iter().find(|a| a.is(VALUE_DIGITS))?.i64().ok()?;
    let exponent = uv
        .iter()
        .find(|a| a.is(EXPONENT))
        .and_then(|a| a.i32().ok())
        .unwrap_or(0);
    let currency = members
        .iter()
        .find(|a| a.is(CURRENCY_CODE))
        .and_then(|a| a.u32().ok())
        .unwrap_or(0);
    Some(Amount {
        value_digits: digits,
        exponent,
        currency_code: currency,
    })
}

fn granted_units(gsu: &Avp) -> Option<Ch2Units> {
    for u in gsu.members().ok()? {
        if u.is(CC_TIME) {
            return u.u32().ok().map(Ch2Units::Seconds);
        }
        if u.is(CC_SERVICE_SPECIFIC_UNITS) {
            return u.u64().ok().map(Ch2Units::Messages);
        }
        if u.is(CC_TOTAL_OCTETS) {
            return u.u64().ok().map(Ch2Units::Octets);
        }
    }
    None
}

fn final_unit_action(fui: &Avp) -> Option<FinalUnitAction> {
    let a = fui.member(FINAL_UNIT_ACTION).ok()??.enumerated().ok()?;
    Some(match a {
        0 => FinalUnitAction::Terminate,
        1 => FinalUnitAction::Redirect,
        _ => FinalUnitAction::RestrictAccess,
    })
}

/// Reads a CCA into a CH-2 Response. MSCC values win over the RFC-style top-level ones;
/// a non-success command-level Result-Code wins over the MSCC's (docs/protocol.md,
/// "Multiple-Services-Credit-Control").
pub fn response_from_cca(cca: &Message, session_id: &str, number: u32) -> Response {
    let code = cca.result_code().map(|c| c.0);
    let mut r = Response {
        result_code: code,
        answered_by: cca.origin_host().map(str::to_string),
        ..Response::empty(session_id, number)
    };
    for a in &cca.avps {
        if a.is(GRANTED_SERVICE_UNIT) {
            r.granted = granted_units(a);
        } else if a.is(VALIDITY_TIME) {
            r.validity_time_s = a.u32().ok();
        } else if a.is(FINAL_UNIT_INDICATION) {
            r.final_unit_action = final_unit_action(a);
        } else if a.is(COST_INFORMATION) {
            r.cost = amount(a);
        } else if a.is(REMAINING_BALANCE) {
            r.remaining_balance = amount(a);
        } else if a.is(CHECK_BALANCE_RESULT) {
            r.enough_credit = a.enumerated().ok().map(|v| v == 0);
        } else if a.is(CREDIT_CONTROL_FAILURE_HANDLING) {
            r.credit_control_failure_handling = a.enumerated().ok();
        } else if a.is(CC_SESSION_FAILOVER) {
            r.cc_session_failover = a.enumerated().ok().map(|v| v == 1);
        }
    }
    if let Some(mscc) = cca.find(MULTIPLE_SERVICES_CREDIT_CONTROL) {
        for a in mscc.members().unwrap_or_default() {
            if a.is(GRANTED_SERVICE_UNIT) {
                r.granted = granted_units(&a);
            } else if a.is(VALIDITY_TIME) {
                r.validity_time_s = a.u32().ok();
            } else if a.is(FINAL_UNIT_INDICATION) {
                r.final_unit_action = final_unit_action(&a);
            } else if a.is(RESULT_CODE) {
                r.service_result_code = a.u32().ok();
            } else if a.is(UNIT_QUOTA_THRESHOLD) || a.is(TIME_QUOTA_THRESHOLD) {
                r.quota_threshold = a.u32().ok();
            }
        }
    }
    r.outcome = match (code, r.service_result_code) {
        (Some(c), Some(s)) if (2000..3000).contains(&c) => outcome_of(s),
        (Some(c), _) => outcome_of(c),
        (None, _) => Outcome::Failed,
    };
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_codec::Dictionary;

    fn profile() -> Ch2Profile {
        Ch2Profile::new("im.example", "example", "ocs.example")
    }

    fn alice() -> SubscriptionId {
        "sip:alice@example.com".parse().unwrap()
    }

    /// Every CCR the mapping builds is valid against the CCR grammar of the embedded
    /// dictionaries (RFC 4006 §3.1 + TS 32.299 + OMA IM).
    #[test]
    fn every_mapped_ccr_is_valid() {
        let p = profile();
        let mut start = SessionRequest::start("c1", alice(), Ch2Units::Seconds(60));
        start.payload = ImPayload {
            sip_method: Some("INVITE".into()),
            role_of_node: Some(RoleOfNode::Originating),
            call_id: Some("a84b4c76e66710@pc33".into()),
            icid: Some("icid-1".into()),
            calling_party: Some("sip:alice@example.com".into()),
            called_party: Some("sip:conf-42@im.example".into()),
            invitees: vec!["sip:bob@example.com".into(), "sip:carol@example.com".into()],
            service_type: Some(ApplicationServiceType::Inviting),
            application_session_id: Some(7),
            messages: Some(ImCounters {
                total_sent: Some(3),
                successfully_sent: Some(2),
                ..ImCounters::default()
            }),
        };
        let mut msgs = vec![
            p.session_ccr(&start, "s;1", 0, None),
            p.session_ccr(
                &SessionRequest::interim("c1", Ch2Units::Seconds(60), Some(Ch2Units::Seconds(60))),
                "s;1",
                1,
                Some("ocs.example"),
            ),
            p.session_ccr(
                &SessionRequest::stop("c1", Ch2Units::Seconds(12), TerminationCause::Logout),
                "s;1",
                2,
                Some("ocs.example"),
            ),
        ];
        for action in [
            EventAction::ReserveUnits,
            EventAction::DebitUnits,
            EventAction::DirectDebit,
            EventAction::Refund,
            EventAction::BalanceCheck,
            EventAction::PriceEnquiry,
        ] {
            let units = (action != EventAction::BalanceCheck).then_some(Ch2Units::Messages(3));
            msgs.push(p.event_ccr(
                &EventRequest::new(action, "e1", alice(), units),
                "s;2",
                0,
                None,
            ));
        }
        let dict = Dictionary::builtin();
        for m in msgs {
            let b = m.to_bytes();
            let d = Message::decode(&b).unwrap();
            dict.validate(&d, &tollgate_codec::Limits::default())
                .unwrap_or_else(|e| panic!("{e:?} in {d:?}"));
        }
    }

    #[test]
    fn request_types_and_actions_follow_the_mapping() {
        let p = profile();
        let kind = |m: &Message| m.find(CC_REQUEST_TYPE).unwrap().enumerated().unwrap();
        let action = |m: &Message| m.find(REQUESTED_ACTION).map(|a| a.enumerated().unwrap());
        let e = |a| p.event_ccr(&EventRequest::new(a, "e", alice(), None), "s", 0, None);
        assert_eq!(kind(&e(EventAction::ReserveUnits)), INITIAL_REQUEST);
        assert_eq!(kind(&e(EventAction::DebitUnits)), TERMINATION_REQUEST);
        assert_eq!(action(&e(EventAction::DebitUnits)), None);
        for (a, n) in [
            (EventAction::DirectDebit, 0),
            (EventAction::Refund, 1),
            (EventAction::BalanceCheck, 2),
            (EventAction::PriceEnquiry, 3),
        ] {
            let m = e(a);
            assert_eq!(kind(&m), EVENT_REQUEST);
            assert_eq!(action(&m), Some(n));
        }
    }

    #[test]
    fn oma_payload_can_be_switched_off() {
        let mut p = profile();
        p.oma_payload = false;
        let mut req = SessionRequest::start("c", alice(), Ch2Units::Seconds(1));
        req.payload.service_type = Some(ApplicationServiceType::Inviting);
        let m = p.session_ccr(&req, "s", 0, None);
        let si = m.find(SERVICE_INFORMATION).unwrap().members().unwrap();
        assert!(si.iter().all(|a| !a.is(SERVICE_GENERIC_INFORMATION)));
        p.ims_payload = false;
        assert!(p
            .session_ccr(&req, "s", 0, None)
            .find(SERVICE_INFORMATION)
            .is_none());
    }

    #[test]
    fn cca_reads_into_a_response() {
        let req = profile().session_ccr(
            &SessionRequest::start("c", alice(), Ch2Units::Seconds(60)),
            "s",
            0,
            None,
        );
        let mut cca = Message::answer_to(&req)
            .with(Avp::from_u32(RESULT_CODE, 2001))
            .with(Avp::from_str(ORIGIN_HOST, "ocs.example"))
            .with(Avp::grouped(
                MULTIPLE_SERVICES_CREDIT_CONTROL,
                &[
                    Avp::grouped(GRANTED_SERVICE_UNIT, &[Avp::from_u32(CC_TIME, 40)]),
                    Avp::from_u32(VALIDITY_TIME, 300),
                    Avp::from_u32(RESULT_CODE, 2001),
                    Avp::grouped(
                        FINAL_UNIT_INDICATION,
                        &[Avp::from_enum(FINAL_UNIT_ACTION, 0)],
                    ),
                ],
            ));
        cca.push(Avp::grouped(
            COST_INFORMATION,
            &[
                Avp::grouped(
                    UNIT_VALUE,
                    &[Avp::from_i64(VALUE_DIGITS, 60), Avp::from_i32(EXPONENT, -2)],
                ),
                Avp::from_u32(CURRENCY_CODE, 978),
            ],
        ));
        let r = response_from_cca(&cca, "s", 0);
        assert_eq!(r.outcome, Outcome::Granted);
        assert_eq!(r.granted, Some(Ch2Units::Seconds(40)));
        assert_eq!(r.validity_time_s, Some(300));
        assert_eq!(r.final_unit_action, Some(FinalUnitAction::Terminate));
        assert_eq!(r.cost.unwrap().to_string(), "0.60 EUR");
        assert_eq!(r.answered_by.as_deref(), Some("ocs.example"));
    }

    #[test]
    fn mscc_failure_under_command_success_decides() {
        let mut cca = Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        );
        cca.push(Avp::from_u32(RESULT_CODE, 2001));
        cca.push(Avp::grouped(
            MULTIPLE_SERVICES_CREDIT_CONTROL,
            &[Avp::from_u32(RESULT_CODE, 4012)],
        ));
        assert_eq!(
            response_from_cca(&cca, "s", 0).outcome,
            Outcome::InsufficientCredit
        );
    }

    #[test]
    fn amounts_print_in_major_units() {
        let a = |d, e| {
            Amount {
                value_digits: d,
                exponent: e,
                currency_code: 978,
            }
            .to_string()
        };
        assert_eq!(a(5, -2), "0.05 EUR");
        assert_eq!(a(-1234, -2), "-12.34 EUR");
        assert_eq!(a(3, 1), "30 EUR");
        assert_eq!(a(903, -2), "9.03 EUR");
    }
}
