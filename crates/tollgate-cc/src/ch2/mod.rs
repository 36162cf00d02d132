//! CH-2, the OMA Charging Enabler's online interface, as an IM server (the Charging Enabler
//! User) sees it, and its binding onto Diameter Credit-Control.
//!
//! Layout: this module is the CH-2 model — [`SessionRequest`] (start, interim, stop),
//! [`EventRequest`] (reserve units, debit units, direct debit, refund, balance check, price
//! enquiry) and [`Response`]; [`mapping`] turns them into CCRs and CCAs back into Responses
//! (sans-io; docs/protocol.md, "CH-2 to credit-control mapping" and "Service context, units
//! and payload for OMA IM"); [`client`] is the Diameter client peer an IM server embeds
//! (CER, watchdog, failover, the Tx timer and the failure-handling rules of RFC 4006 §5.5/§5.7);
//! [`ocs_requests`] turns the OCS's RAR and ASR into requests for the IM server.
//!
//! The OMA CH-2 technical specification could not be consulted (docs/protocol.md, "What could
//! not be confirmed"): the parameter names here are ours, the mapping is our choice
//! (docs/protocol.md, "CH-2 to credit-control mapping"), aligned with 3GPP SCUR, ECUR and IEC.

pub mod client;
pub mod mapping;
pub mod ocs_requests;

use std::fmt;
use tollgate_ocs::SubscriptionId;

pub use client::{Ch2Client, Ch2ClientConfig, Ch2Error};
pub use mapping::Ch2Profile;
pub use ocs_requests::{OcsRequest, OcsRequestKind};

/// The quantity a CH-2 request asks for, reports or is granted, in one unit type
/// (docs/protocol.md, "Service context, units and payload for OMA IM": sessions by the
/// second, messages as service-specific units, large messages by octets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ch2Units {
    /// CC-Time, seconds.
    Seconds(u32),
    /// CC-Service-Specific-Units: one per message.
    Messages(u64),
    /// CC-Total-Octets.
    Octets(u64),
}

impl Ch2Units {
    pub fn amount(self) -> u64 {
        match self {
            Ch2Units::Seconds(s) => u64::from(s),
            Ch2Units::Messages(n) | Ch2Units::Octets(n) => n,
        }
    }

    /// The same unit type with another amount (saturating for seconds).
    pub fn with_amount(self, n: u64) -> Ch2Units {
        match self {
            Ch2Units::Seconds(_) => Ch2Units::Seconds(u32::try_from(n).unwrap_or(u32::MAX)),
            Ch2Units::Messages(_) => Ch2Units::Messages(n),
            Ch2Units::Octets(_) => Ch2Units::Octets(n),
        }
    }
}

impl fmt::Display for Ch2Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ch2Units::Seconds(s) => write!(f, "{s} s"),
            Ch2Units::Messages(n) => write!(f, "{n} msg"),
            Ch2Units::Octets(n) => write!(f, "{n} octets"),
        }
    }
}

/// SessionRequest's phase and the CCR type it maps to (docs/protocol.md, "CH-2 to
/// credit-control mapping").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPhase {
    /// CCR-INITIAL, CC-Request-Number 0.
    Start,
    /// CCR-UPDATE, CC-Request-Number n.
    Interim,
    /// CCR-TERMINATION, last + 1.
    Stop,
}

/// EventRequest's kind and the CCR it maps to (docs/protocol.md, "CH-2 to credit-control
/// mapping").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// ECUR first half: CCR-INITIAL reserving units.
    ReserveUnits,
    /// ECUR second half: CCR-TERMINATION debiting what was really used (may be 0).
    DebitUnits,
    /// IEC: CCR-EVENT, Requested-Action DIRECT_DEBITING (0).
    DirectDebit,
    /// CCR-EVENT, Requested-Action REFUND_ACCOUNT (1).
    Refund,
    /// CCR-EVENT, Requested-Action CHECK_BALANCE (2).
    BalanceCheck,
    /// CCR-EVENT, Requested-Action PRICE_ENQUIRY (3).
    PriceEnquiry,
}

impl EventAction {
    /// Requested-Action for the IEC kinds (RFC 4006 §8.41).
    pub fn requested_action(self) -> Option<i32> {
        match self {
            EventAction::DirectDebit => Some(0),
            EventAction::Refund => Some(1),
            EventAction::BalanceCheck => Some(2),
            EventAction::PriceEnquiry => Some(3),
            EventAction::ReserveUnits | EventAction::DebitUnits => None,
        }
    }
}

/// Why a report is sent (TS 32.299 Reporting-Reason, AVP 872).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportingReason {
    Threshold = 0,
    QuotaHoldingTime = 1,
    Final = 2,
    QuotaExhausted = 3,
    ValidityTime = 4,
    RatingConditionChange = 6,
    ForcedReauthorisation = 7,
}

/// Termination-Cause (RFC 6733 §8.15) values an IM server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationCause {
    /// The session ended normally (BYE, all messages settled).
    Logout = 1,
    /// The service was never delivered (callee rejected, CANCEL, INVITE to client failed).
    ServiceNotProvided = 2,
    /// The answer could not be used (unsupported grant, RFC 4006 §5.1.2).
    BadAnswer = 3,
    Administrative = 4,
    LinkBroken = 5,
}

impl TerminationCause {
    /// The RFC 6733 §8.15 name.
    pub fn name(self) -> &'static str {
        match self {
            TerminationCause::Logout => "DIAMETER_LOGOUT",
            TerminationCause::ServiceNotProvided => "DIAMETER_SERVICE_NOT_PROVIDED",
            TerminationCause::BadAnswer => "DIAMETER_BAD_ANSWER",
            TerminationCause::Administrative => "DIAMETER_ADMINISTRATIVE",
            TerminationCause::LinkBroken => "DIAMETER_LINK_BROKEN",
        }
    }
}

/// Role-Of-Node (TS 32.299 AVP 829).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleOfNode {
    Originating = 0,
    Terminating = 1,
}

/// OMA Application-Service-Type for SIMPLE IM (AVP 2102; docs/protocol.md, "The OMA charging
/// enabler").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplicationServiceType {
    Sending = 100,
    Receiving = 101,
    Retrieval = 102,
    Inviting = 103,
    Leaving = 104,
    Joining = 105,
}

/// OMA IM-Information counters (AVP 2110), sent on debit and stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImCounters {
    /// Sent by the user, delivered or not.
    pub total_sent: Option<u32>,
    pub total_exploded: Option<u32>,
    /// Delivered to at least one recipient.
    pub successfully_sent: Option<u32>,
    pub successfully_exploded: Option<u32>,
}

/// The service description a CH-2 request carries: what lands in Service-Information
/// (IMS-Information, Service-Generic-Information, IM-Information; docs/protocol.md, "Service
/// context, units and payload for OMA IM").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImPayload {
    /// Event-Type{SIP-Method}: "INVITE", "REGISTER", "MESSAGE".
    pub sip_method: Option<String>,
    pub role_of_node: Option<RoleOfNode>,
    /// SIP Call-ID → User-Session-Id.
    pub call_id: Option<String>,
    /// P-Charging-Vector icid → IMS-Charging-Identifier.
    pub icid: Option<String>,
    pub calling_party: Option<String>,
    /// The target URI (Called-Party-Address, at most one).
    pub called_party: Option<String>,
    /// Conference invitees the IM server (as focus) calls out to: they travel as
    /// Application-Server-Information{Application-Provided-Called-Party-Address*}.
    pub invitees: Vec<String>,
    pub service_type: Option<ApplicationServiceType>,
    pub application_session_id: Option<u32>,
    pub messages: Option<ImCounters>,
}

/// CH-2 SessionRequest (start / interim / stop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    pub phase: SessionPhase,
    /// The IM server's correlation id for this charging session (start…stop share it);
    /// the client keeps one Diameter Session-Id per correlation id.
    pub correlation_id: String,
    /// Whom to charge (sent on start; later requests name the Diameter session).
    pub subscribers: Vec<SubscriptionId>,
    pub rating_group: Option<u32>,
    /// Units to reserve (start; interim when more are wanted).
    pub requested: Option<Ch2Units>,
    /// Units used since the last report (interim, stop).
    pub used: Option<Ch2Units>,
    pub reporting_reason: Option<ReportingReason>,
    /// Stop only; Logout when absent.
    pub termination_cause: Option<TerminationCause>,
    pub payload: ImPayload,
}

impl SessionRequest {
    pub fn start(correlation_id: &str, subscriber: SubscriptionId, requested: Ch2Units) -> Self {
        SessionRequest {
            phase: SessionPhase::Start,
            correlation_id: correlation_id.to_string(),
            subscribers: vec![subscriber],
            rating_group: None,
            requested: Some(requested),
            used: None,
            reporting_reason: None,
            termination_cause: None,
            payload: ImPayload::default(),
        }
    }

    pub fn interim(correlation_id: &str, used: Ch2Units, requested: Option<Ch2Units>) -> Self {
        SessionRequest {
            phase: SessionPhase::Interim,
            correlation_id: correlation_id.to_string(),
            subscribers: Vec::new(),
            rating_group: None,
            requested,
            used: Some(used),
            reporting_reason: Some(ReportingReason::QuotaExhausted),
            termination_cause: None,
            payload: ImPayload::default(),
        }
    }

    pub fn stop(correlation_id: &str, used: Ch2Units, cause: TerminationCause) -> Self {
        SessionRequest {
            phase: SessionPhase::Stop,
            correlation_id: correlation_id.to_string(),
            subscribers: Vec::new(),
            rating_group: None,
            requested: None,
            used: Some(used),
            reporting_reason: Some(ReportingReason::Final),
            termination_cause: Some(cause),
            payload: ImPayload::default(),
        }
    }
}

/// CH-2 EventRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRequest {
    pub action: EventAction,
    /// Reserve…debit share it (one Diameter Session-Id); for IEC it names the event.
    pub correlation_id: String,
    pub subscribers: Vec<SubscriptionId>,
    pub rating_group: Option<u32>,
    /// Reserve: units wanted; debit: units really used (0 allowed); direct debit, refund,
    /// price enquiry: the units concerned. None for a balance check.
    pub units: Option<Ch2Units>,
    /// Debit only; Logout when absent.
    pub termination_cause: Option<TerminationCause>,
    pub payload: ImPayload,
}

impl EventRequest {
    pub fn new(
        action: EventAction,
        correlation_id: &str,
        subscriber: SubscriptionId,
        units: Option<Ch2Units>,
    ) -> Self {
        EventRequest {
            action,
            correlation_id: correlation_id.to_string(),
            subscribers: vec![subscriber],
            rating_group: None,
            units,
            termination_cause: None,
            payload: ImPayload::default(),
        }
    }
}

/// An amount of money as Diameter carries it: Value-Digits × 10^Exponent of the ISO 4217
/// currency (RFC 4006 §8.8, §8.43).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub value_digits: i64,
    pub exponent: i32,
    pub currency_code: u32,
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let currency = match self.currency_code {
            978 => "EUR".to_string(),
            840 => "USD".to_string(),
            826 => "GBP".to_string(),
            756 => "CHF".to_string(),
            n => format!("currency {n}"),
        };
        if self.exponent >= 0 {
            let scale = 10i128.pow(self.exponent.unsigned_abs());
            return write!(f, "{} {currency}", i128::from(self.value_digits) * scale);
        }
        let places = self.exponent.unsigned_abs() as usize;
        let digits = self.value_digits.unsigned_abs().to_string();
        let digits = format!("{digits:0>width$}", width = places + 1);
        let (int, frac) = digits.split_at(digits.len() - places);
        let sign = if self.value_digits < 0 { "-" } else { "" };
        write!(f, "{sign}{int}.{frac} {currency}")
    }
}

/// Final-Unit-Action (RFC 4006 §8.35).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalUnitAction {
    Terminate,
    Redirect,
    RestrictAccess,
}

/// What CH-2 tells the IM server, decided from the CCA (or its absence) with the failure
/// handling rules of RFC 4006 §5.5 and §5.7 already applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2001: go ahead within the grant.
    Granted,
    /// 4011 CREDIT_CONTROL_NOT_APPLICABLE: go ahead, free, no more CH-2 for this session.
    Free,
    /// 4012 CREDIT_LIMIT_REACHED.
    InsufficientCredit,
    /// 4010 END_USER_SERVICE_DENIED.
    Denied,
    /// 5030 USER_UNKNOWN.
    UnknownUser,
    /// 5031 RATING_FAILED (do not repeat a similar request).
    RatingFailed,
    /// 5002 UNKNOWN_SESSION_ID: the OCS no longer knows the session (Tcc expired).
    UnknownSession,
    /// Any other permanent or protocol error.
    Failed,
    /// No usable answer (Tx expired, 3002/3004/3005, peer down) and the failure handling
    /// says to keep serving without credit control (CCFH CONTINUE; DDFH or buffered IEC).
    ContinueUncharged,
    /// No usable answer and the failure handling says to end or refuse the service
    /// (CCFH TERMINATE / RETRY_AND_TERMINATE with no server left).
    Terminate,
}

impl Outcome {
    /// Whether the IM server may deliver the service.
    pub fn allows_service(self) -> bool {
        matches!(
            self,
            Outcome::Granted | Outcome::Free | Outcome::ContinueUncharged
        )
    }
}

/// CH-2 Response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub outcome: Outcome,
    /// The command-level Result-Code; None when no answer arrived.
    pub result_code: Option<u32>,
    /// Result-Code of the MSCC, when it differs from the command's.
    pub service_result_code: Option<u32>,
    pub granted: Option<Ch2Units>,
    pub validity_time_s: Option<u32>,
    pub final_unit_action: Option<FinalUnitAction>,
    /// Unit-Quota-Threshold / Time-Quota-Threshold: report again below this.
    pub quota_threshold: Option<u32>,
    pub cost: Option<Amount>,
    pub remaining_balance: Option<Amount>,
    /// Check-Balance-Result: true = ENOUGH_CREDIT.
    pub enough_credit: Option<bool>,
    /// Credit-Control-Failure-Handling from the answer (0 TERMINATE, 1 CONTINUE,
    /// 2 RETRY_AND_TERMINATE).
    pub credit_control_failure_handling: Option<i32>,
    pub cc_session_failover: Option<bool>,
    /// Origin-Host of the server that answered.
    pub answered_by: Option<String>,
    /// The Diameter Session-Id the request travelled in.
    pub session_id: String,
    pub cc_request_number: u32,
    /// Why no answer could be used, when outcome is ContinueUncharged or Terminate.
    pub failure: Option<String>,
}

impl Response {
    /// A Failed response with nothing in it, for `session_id` / `number`.
    pub fn empty(session_id: &str, cc_request_number: u32) -> Response {
        Response {
            outcome: Outcome::Failed,
            result_code: None,
            service_result_code: None,
            granted: None,
            validity_time_s: None,
            final_unit_action: None,
            quota_threshold: None,
            cost: None,
            remaining_balance: None,
            enough_credit: None,
            credit_control_failure_handling: None,
            cc_session_failover: None,
            answered_by: None,
            session_id: session_id.to_string(),
            cc_request_number,
            failure: None,
        }
    }

    pub fn allows_service(&self) -> bool {
        self.outcome.allows_service()
    }
}
