//! A CCR as the OCS needs it (RFC 4006 §3.1, TS 32.299 §6.4.2): parsed from a validated
//! message into plain values, or refused with the Result-Code and Failed-AVP a missing or bad
//! value deserves (docs/architecture.md, "Parse, don't validate").

use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode, Message, ProtocolError};
use tollgate_ocs::{SubscriptionId, SubscriptionType, UnitType, UsedUnits};

/// CC-Request-Type (416).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    Initial = 1,
    Update = 2,
    Termination = 3,
    Event = 4,
}

/// Requested-Action (436), for EVENT requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedAction {
    DirectDebiting = 0,
    RefundAccount = 1,
    CheckBalance = 2,
    PriceEnquiry = 3,
}

/// An amount of service units in one unit type (the first unit AVP present in a
/// Requested-, Used- or Granted-Service-Unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units {
    pub unit: UnitType,
    pub amount: u64,
}

/// One Multiple-Services-Credit-Control (RFC 4006 §8.16), or the top-level unit AVPs of an
/// RFC-style CCR folded into one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// `Some(None)`: an empty Requested-Service-Unit (the OCS chooses the amount).
    pub requested: Option<Option<Units>>,
    /// Used-Service-Unit: every unit type reported, each summed over the USUs of the request
    /// (the ledger charges the one its reservation is in).
    pub used: Option<UsedUnits>,
    pub reporting_reason: Option<i32>,
    /// It came in a Multiple-Services-Credit-Control (answer in MSCC), not at the top level.
    pub in_mscc: bool,
}

/// Where a CCR named its application (RFC 4006 §3.1 wants `{ Auth-Application-Id }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplicationIdSource {
    /// A top-level Auth-Application-Id, as RFC 4006 §3.1 asks.
    AuthApplicationId,
    /// Only inside Vendor-Specific-Application-Id (RFC 6733 §6.11), as Kamailio's
    /// ims_charging sends it: accepted, and reported as a client deviation.
    VendorSpecificApplicationId,
}

/// The CCR fields the OCS acts on.
#[derive(Clone, Debug)]
pub struct Ccr {
    pub application_id_source: ApplicationIdSource,
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub service_context_id: String,
    pub request_type: RequestType,
    pub request_number: u32,
    pub requested_action: Option<RequestedAction>,
    pub subscription_ids: Vec<SubscriptionId>,
    pub termination_cause: Option<i32>,
    pub services: Vec<ServiceRequest>,
    /// Whether the client sent Multiple-Services-Indicator = 1 (answers use MSCC then).
    pub multiple_services: bool,
}

fn missing(code: AvpCode, name: &str, zero: &'static [u8]) -> ProtocolError {
    ProtocolError::MissingAvp {
        avp: Avp::new(code, bytes::Bytes::from_static(zero)),
        name: name.to_string(),
    }
}

fn required<'a>(
    m: &'a Message,
    code: AvpCode,
    name: &str,
    zero: &'static [u8],
) -> Result<&'a Avp, ProtocolError> {
    m.find(code).ok_or_else(|| missing(code, name, zero))
}

/// Text the ledger keys on. U+0000 is valid UTF-8 but neither store can keep it (PostgreSQL
/// text rejects it, SQLite's JSON functions cut the string there, so two different keys could
/// meet), so it is refused as an invalid value (RFC 6733 §7.1.5, 5004 with Failed-AVP).
fn key_text(avp: &Avp) -> Result<String, ProtocolError> {
    let s = avp.utf8()?;
    if s.contains('\0') {
        return Err(invalid(avp, "contains U+0000"));
    }
    Ok(s.to_string())
}

/// The CCR's application: a top-level Auth-Application-Id, else the one inside a
/// Vendor-Specific-Application-Id; whichever is present must name the header's application
/// (RFC 6733 §3: the header's Application-ID and the AVP identify the same application).
/// Neither present: 5005 naming Auth-Application-Id, as RFC 4006 §3.1's grammar does.
fn application_id(m: &Message) -> Result<ApplicationIdSource, ProtocolError> {
    let header_app = m.header.application.0;
    let check = |avp: &Avp| -> Result<(), ProtocolError> {
        if avp.u32()? == header_app {
            Ok(())
        } else {
            Err(invalid(
                avp,
                "Auth-Application-Id differs from the header's Application-ID",
            ))
        }
    };
    if let Some(a) = m.find(AUTH_APPLICATION_ID) {
        check(a)?;
        return Ok(ApplicationIdSource::AuthApplicationId);
    }
    for vsai in m.find_all(VENDOR_SPECIFIC_APPLICATION_ID) {
        if let Some(a) = vsai.member(AUTH_APPLICATION_ID)? {
            check(&a).map_err(|e| e.within(&vsai.as_ref()))?;
            return Ok(ApplicationIdSource::VendorSpecificApplicationId);
        }
    }
    Err(missing(AUTH_APPLICATION_ID, "Auth-Application-Id", &[0; 4]))
}

fn invalid(avp: &Avp, reason: &'static str) -> ProtocolError {
    ProtocolError::InvalidAvpValue {
        avp: avp.clone(),
        reason,
    }
}

/// The unit AVPs of one Requested- or Used-Service-Unit (RFC 4006 §8.18, §8.19).
#[derive(Clone, Copy, Debug, Default)]
struct UnitReport {
    /// An amount per unit type. Octets: CC-Total-Octets when present, else CC-Input-Octets
    /// plus CC-Output-Octets (rated together as total octets).
    amounts: UsedUnits,
    /// The unit type that came first on the wire: the one a request asks for.
    first: Option<UnitType>,
}

impl UnitReport {
    /// The amount in the first unit type, as a Requested-Service-Unit asks for it.
    fn requested(&self) -> Option<Units> {
        let unit = self.first?;
        Some(Units {
            unit,
            amount: self.amounts.charged_in(unit),
        })
    }

    /// Every amount, when any unit AVP was there.
    fn used(&self) -> Option<UsedUnits> {
        self.first.map(|_| self.amounts)
    }
}

/// Reads the unit AVPs of a Requested-/Used-/Granted-Service-Unit (RFC 4006 §8.17–8.19).
/// CC-Money counts minor units of its Unit-Value at the given exponent.
fn units_of(group: &Avp) -> Result<UnitReport, ProtocolError> {
    let mut report = UnitReport::default();
    let mut total_octets = None;
    let mut in_out_octets: Option<u64> = None;
    for m in &group.members()? {
        let unit = if m.is(CC_TIME) {
            report.amounts.add(UnitType::Seconds, u64::from(m.u32()?));
            UnitType::Seconds
        } else if m.is(CC_TOTAL_OCTETS) {
            total_octets = Some(m.u64()?);
            UnitType::Octets
        } else if m.is(CC_INPUT_OCTETS) || m.is(CC_OUTPUT_OCTETS) {
            in_out_octets = Some(in_out_octets.unwrap_or(0).saturating_add(m.u64()?));
            UnitType::Octets
        } else if m.is(CC_SERVICE_SPECIFIC_UNITS) {
            report.amounts.add(UnitType::Units, m.u64()?);
            UnitType::Units
        } else if m.is(CC_MONEY) {
            report.amounts.add(UnitType::Money, money_units(m)?);
            UnitType::Money
        } else {
            continue;
        };
        report.first.get_or_insert(unit);
    }
    report.amounts.octets = total_octets.or(in_out_octets);
    Ok(report)
}

/// CC-Money (RFC 4006 §8.22) as minor units: Unit-Value with Exponent 0.
fn money_units(m: &Avp) -> Result<u64, ProtocolError> {
    let uv = m
        .member(UNIT_VALUE)?
        .ok_or_else(|| missing(UNIT_VALUE, "Unit-Value", b""))?;
    let digits = uv
        .member(VALUE_DIGITS)?
        .ok_or_else(|| missing(VALUE_DIGITS, "Value-Digits", &[0; 8]))?
        .i64()?;
    let exp = uv
        .member(EXPONENT)?
        .map(|e| e.i32())
        .transpose()?
        .unwrap_or(0);
    u64::try_from(digits)
        .ok()
        .filter(|_| exp == 0)
        .ok_or_else(|| {
            invalid(
                m,
                "CC-Money must be a non-negative whole number of minor units (Exponent 0)",
            )
        })
}

/// Several Used-Service-Unit AVPs of one request add up, unit by unit.
fn add_used(sum: &mut Option<UsedUnits>, report: UnitReport) {
    if let Some(used) = report.used() {
        sum.get_or_insert_with(UsedUnits::default).add_all(&used);
    }
}

fn service_request(mscc: &Avp) -> Result<ServiceRequest, ProtocolError> {
    let mut s = ServiceRequest {
        in_mscc: true,
        ..ServiceRequest::default()
    };
    for m in mscc.members()? {
        if m.is(RATING_GROUP) {
            s.rating_group = Some(m.u32()?);
        } else if m.is(SERVICE_IDENTIFIER) {
            s.service_identifier = Some(m.u32()?);
        } else if m.is(REQUESTED_SERVICE_UNIT) {
            s.requested = Some(units_of(&m)?.requested());
        } else if m.is(USED_SERVICE_UNIT) {
            add_used(&mut s.used, units_of(&m)?);
            if let Some(r) = m.member(REPORTING_REASON)? {
                s.reporting_reason = Some(r.enumerated()?);
            }
        } else if m.is(REPORTING_REASON) {
            s.reporting_reason = Some(m.enumerated()?);
        }
    }
    Ok(s)
}

impl TryFrom<&Message> for Ccr {
    type Error = ProtocolError;

    fn try_from(m: &Message) -> Result<Self, ProtocolError> {
        let text = |code, name, zero| -> Result<String, ProtocolError> {
            key_text(required(m, code, name, zero)?)
        };
        let application_id_source = application_id(m)?;
        let rt_avp = required(m, CC_REQUEST_TYPE, "CC-Request-Type", &[0; 4])?;
        let request_type = match rt_avp.enumerated()? {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            4 => RequestType::Event,
            _ => return Err(invalid(rt_avp, "unknown CC-Request-Type")),
        };
        let requested_action = match m.find(REQUESTED_ACTION) {
            None if request_type == RequestType::Event => {
                // RFC 4006 §3.1: Requested-Action is required in EVENT requests.
                return Err(missing(REQUESTED_ACTION, "Requested-Action", &[0; 4]));
            }
            None => None,
            Some(a) => Some(match a.enumerated()? {
                0 => RequestedAction::DirectDebiting,
                1 => RequestedAction::RefundAccount,
                2 => RequestedAction::CheckBalance,
                3 => RequestedAction::PriceEnquiry,
                _ => return Err(invalid(a, "unknown Requested-Action")),
            }),
        };
        let mut subscription_ids = Vec::new();
        for s in m.find_all(SUBSCRIPTION_ID) {
            let mut kind = None;
            let mut data = None;
            for mm in s.members()? {
                if mm.is(SUBSCRIPTION_ID_TYPE) {
                    kind = Some((mm.enumerated()?, mm));
                } else if mm.is(SUBSCRIPTION_ID_DATA) {
                    data = Some(key_text(&mm).map_err(|e| e.within(&s.as_ref()))?);
                }
            }
            let (code, kavp) = kind.ok_or_else(|| {
                missing(SUBSCRIPTION_ID_TYPE, "Subscription-Id-Type", &[0; 4]).within(&s.as_ref())
            })?;
            let kind = SubscriptionType::from_code(i64::from(code)).ok_or_else(|| {
                invalid(&kavp, "unknown Subscription-Id-Type").within(&s.as_ref())
            })?;
            let data = data.ok_or_else(|| {
                missing(SUBSCRIPTION_ID_DATA, "Subscription-Id-Data", b"").within(&s.as_ref())
            })?;
            subscription_ids.push(SubscriptionId::new(kind, data));
        }
        let mut services = Vec::new();
        for mscc in m.find_all(MULTIPLE_SERVICES_CREDIT_CONTROL) {
            services.push(service_request(mscc).map_err(|e| e.within(&mscc.as_ref()))?);
        }
        // RFC 4006 style: units at the top level (Ro puts them in MSCC; accept both).
        let top_rsu = m
            .find(REQUESTED_SERVICE_UNIT)
            .map(|r| units_of(r).map(|u| u.requested()))
            .transpose()?;
        let mut top_used: Option<UsedUnits> = None;
        for u in m.find_all(USED_SERVICE_UNIT) {
            add_used(&mut top_used, units_of(u)?);
        }
        if top_rsu.is_some() || top_used.is_some() {
            services.push(ServiceRequest {
                rating_group: None,
                service_identifier: m.find(SERVICE_IDENTIFIER).map(Avp::u32).transpose()?,
                requested: top_rsu,
                used: top_used,
                reporting_reason: None,
                in_mscc: false,
            });
        }
        Ok(Ccr {
            application_id_source,
            session_id: text(SESSION_ID, "Session-Id", b"")?,
            origin_host: text(ORIGIN_HOST, "Origin-Host", b"")?,
            origin_realm: text(ORIGIN_REALM, "Origin-Realm", b"")?,
            service_context_id: text(SERVICE_CONTEXT_ID, "Service-Context-Id", b"")?,
            request_type,
            request_number: required(m, CC_REQUEST_NUMBER, "CC-Request-Number", &[0; 4])?.u32()?,
            requested_action,
            subscription_ids,
            termination_cause: m.find(TERMINATION_CAUSE).map(Avp::enumerated).transpose()?,
            services,
            multiple_services: m
                .find(MULTIPLE_SERVICES_INDICATOR)
                .map(Avp::enumerated)
                .transpose()?
                == Some(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_codec::{ApplicationId, CommandCode};

    fn base(kind: i32) -> Message {
        Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        )
        .with(Avp::from_str(SESSION_ID, "c;1;1"))
        .with(Avp::from_str(ORIGIN_HOST, "c"))
        .with(Avp::from_str(ORIGIN_REALM, "r"))
        .with(Avp::from_str(DESTINATION_REALM, "r"))
        .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
        .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
        .with(Avp::from_enum(CC_REQUEST_TYPE, kind))
        .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
    }

    #[test]
    fn mscc_and_top_level_units() {
        let m = base(2)
            .with(Avp::grouped(
                SUBSCRIPTION_ID,
                &[
                    Avp::from_enum(SUBSCRIPTION_ID_TYPE, 2),
                    Avp::from_str(SUBSCRIPTION_ID_DATA, "sip:a@b"),
                ],
            ))
            .with(Avp::grouped(
                MULTIPLE_SERVICES_CREDIT_CONTROL,
                &[
                    Avp::from_u32(RATING_GROUP, 10),
                    Avp::grouped(REQUESTED_SERVICE_UNIT, &[]),
                    Avp::grouped(
                        USED_SERVICE_UNIT,
                        &[
                            Avp::from_u64(CC_INPUT_OCTETS, 5),
                            Avp::from_u64(CC_OUTPUT_OCTETS, 7),
                        ],
                    ),
                ],
            ))
            .with(Avp::grouped(
                USED_SERVICE_UNIT,
                &[Avp::from_u32(CC_TIME, 30)],
            ));
        let c = Ccr::try_from(&m).unwrap();
        assert_eq!(
            c.subscription_ids,
            vec![SubscriptionId::new(SubscriptionType::SipUri, "sip:a@b")]
        );
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].requested, Some(None));
        assert_eq!(
            c.services[0].used,
            Some(UsedUnits::of(UnitType::Octets, 12))
        );
        assert_eq!(
            c.services[1].used,
            Some(UsedUnits::of(UnitType::Seconds, 30))
        );
    }

    #[test]
    fn a_usage_report_keeps_every_unit_type() {
        // Open5GS's SMF: CC-Time before the octets, in one USU; a second USU adds up.
        let usu = |t: u32, i: u64, o: u64| {
            Avp::grouped(
                USED_SERVICE_UNIT,
                &[
                    Avp::from_u32(CC_TIME, t),
                    Avp::from_u64(CC_INPUT_OCTETS, i),
                    Avp::from_u64(CC_OUTPUT_OCTETS, o),
                ],
            )
        };
        let m = base(2).with(Avp::grouped(
            MULTIPLE_SERVICES_CREDIT_CONTROL,
            &[usu(34, 100_000, 23_000), usu(1, 1, 2)],
        ));
        let c = Ccr::try_from(&m).unwrap();
        let used = c.services[0].used.unwrap();
        assert_eq!(used.amount(UnitType::Seconds), Some(35));
        assert_eq!(used.amount(UnitType::Octets), Some(123_003));
        assert_eq!(used.amount(UnitType::Units), None);
        // CC-Total-Octets, when given, is the total: input and output are its parts.
        let m = base(2).with(Avp::grouped(
            USED_SERVICE_UNIT,
            &[
                Avp::from_u64(CC_INPUT_OCTETS, 10),
                Avp::from_u64(CC_TOTAL_OCTETS, 25),
                Avp::from_u64(CC_OUTPUT_OCTETS, 15),
            ],
        ));
        let c = Ccr::try_from(&m).unwrap();
        assert_eq!(
            c.services[0].used,
            Some(UsedUnits::of(UnitType::Octets, 25))
        );
        // A request asks in the unit it names first.
        let m = base(1).with(Avp::grouped(
            REQUESTED_SERVICE_UNIT,
            &[
                Avp::from_u64(CC_TOTAL_OCTETS, 1000),
                Avp::from_u32(CC_TIME, 60),
            ],
        ));
        let c = Ccr::try_from(&m).unwrap();
        assert_eq!(
            c.services[0].requested,
            Some(Some(Units {
                unit: UnitType::Octets,
                amount: 1000
            }))
        );
    }

    #[test]
    fn nul_in_a_key_text_is_5004_naming_the_avp() {
        let mut m = base(1);
        m.avps[0] = Avp::from_str(SESSION_ID, "c;1;\0x");
        let e = Ccr::try_from(&m).unwrap_err();
        assert_eq!(e.result_code().0, 5004);
        assert!(e.offending_avp().unwrap().is(SESSION_ID));

        let m = base(1).with(Avp::grouped(
            SUBSCRIPTION_ID,
            &[
                Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
                Avp::from_str(SUBSCRIPTION_ID_DATA, "15550000001\0"),
            ],
        ));
        let e = Ccr::try_from(&m).unwrap_err();
        assert_eq!(e.result_code().0, 5004);
    }

    /// `base` without its top-level Auth-Application-Id.
    fn without_auth_application_id(kind: i32) -> Message {
        let mut m = base(kind);
        m.avps.retain(|a| !a.is(AUTH_APPLICATION_ID));
        m
    }

    fn vsai(vendor: u32, app: u32) -> Avp {
        Avp::grouped(
            VENDOR_SPECIFIC_APPLICATION_ID,
            &[
                Avp::from_u32(VENDOR_ID, vendor),
                Avp::from_u32(AUTH_APPLICATION_ID, app),
            ],
        )
    }

    #[test]
    fn application_id_from_auth_application_id_or_inside_vsai() {
        let c = Ccr::try_from(&base(1)).unwrap();
        assert_eq!(
            c.application_id_source,
            ApplicationIdSource::AuthApplicationId
        );
        // Kamailio's ims_charging: only Vendor-Specific-Application-Id { Vendor-Id 10415, 4 }.
        let m = without_auth_application_id(1).with(vsai(10415, 4));
        let c = Ccr::try_from(&m).unwrap();
        assert_eq!(
            c.application_id_source,
            ApplicationIdSource::VendorSpecificApplicationId
        );
        // Neither: 5005 naming Auth-Application-Id (RFC 4006 §3.1).
        let e = Ccr::try_from(&without_auth_application_id(1)).unwrap_err();
        assert_eq!(e.result_code().0, 5005);
        assert!(e.offending_avp().unwrap().is(AUTH_APPLICATION_ID));
        // An application other than the header's: 5004, inside its VSAI.
        let m = without_auth_application_id(1).with(vsai(10415, 16777238));
        let e = Ccr::try_from(&m).unwrap_err();
        assert_eq!(e.result_code().0, 5004);
        assert!(e.offending_avp().unwrap().is(AUTH_APPLICATION_ID));
        assert!(e.to_string().contains("inside AVP 260"), "{e}");
        let failed = e.failed_avp().unwrap().members().unwrap();
        assert!(failed[0].is(VENDOR_SPECIFIC_APPLICATION_ID));
        assert_eq!(
            failed[0]
                .member(AUTH_APPLICATION_ID)
                .unwrap()
                .unwrap()
                .u32()
                .unwrap(),
            16777238
        );
        let mut m = base(1);
        m.avps[4] = Avp::from_u32(AUTH_APPLICATION_ID, 3);
        assert_eq!(Ccr::try_from(&m).unwrap_err().result_code().0, 5004);
    }

    #[test]
    fn e164_subscription_data_is_normalised() {
        let m = base(1).with(Avp::grouped(
            SUBSCRIPTION_ID,
            &[
                Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
                Avp::from_str(SUBSCRIPTION_ID_DATA, "+15550000001"),
            ],
        ));
        let c = Ccr::try_from(&m).unwrap();
        assert_eq!(
            c.subscription_ids,
            vec![SubscriptionId::e164("15550000001")]
        );
    }

    #[test]
    fn event_without_requested_action_is_5005() {
        let e = Ccr::try_from(&base(4)).unwrap_err();
        assert_eq!(e.result_code().0, 5005);
        assert!(e.offending_avp().unwrap().is(REQUESTED_ACTION));
    }
}
