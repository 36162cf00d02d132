//! One test per refusal: the exact Result-Code and Failed-AVP (RFC 6733 §7.1, §7.5) for
//! messages broken in each way the codec and dictionary detect.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use bytes::{Bytes, BytesMut};
use tollgate_codec::codes::*;
use tollgate_codec::{
    ApplicationId, Avp, AvpCode, AvpFlags, CommandCode, Dictionary, Flags, Limits, Message,
    ProtocolError,
};

fn ccr() -> Message {
    Message::request(
        CommandCode::CREDIT_CONTROL,
        ApplicationId::CREDIT_CONTROL,
        true,
    )
    .with(Avp::from_str(SESSION_ID, "client.example;1;1"))
    .with(Avp::from_str(ORIGIN_HOST, "client.example"))
    .with(Avp::from_str(ORIGIN_REALM, "example"))
    .with(Avp::from_str(DESTINATION_REALM, "ocs.example"))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
    .with(Avp::from_enum(CC_REQUEST_TYPE, 1))
    .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
}

fn validate(m: &Message) -> Result<(), ProtocolError> {
    // Go through the wire so the AVPs are what a peer would send.
    let decoded = Message::decode(&m.to_bytes()).map_err(|e| e.error)?;
    Dictionary::builtin().validate(&decoded, &Limits::default())
}

fn failed(e: &ProtocolError) -> Vec<Avp> {
    e.failed_avp().expect("a Failed-AVP").members().unwrap()
}

#[test]
fn a_good_ccr_validates() {
    validate(&ccr()).unwrap();
}

#[test]
fn unknown_mandatory_avp_is_5001_and_unknown_optional_is_ignored() {
    let odd = Avp::from_u32(AvpCode::base(99999), 7);
    let e = validate(&ccr().with(odd.clone())).unwrap_err();
    assert_eq!(e.result_code().0, 5001);
    assert_eq!(failed(&e), vec![odd]);
    validate(&ccr().with(Avp::from_u32(AvpCode::base(99999).optional(), 7))).unwrap();
}

#[test]
fn missing_required_avp_is_5005_with_a_zeroed_value() {
    let mut m = ccr();
    m.avps.retain(|a| !a.is(CC_REQUEST_NUMBER));
    let e = validate(&m).unwrap_err();
    assert_eq!(e.result_code().0, 5005);
    let f = failed(&e);
    assert!(f[0].is(CC_REQUEST_NUMBER));
    assert_eq!(f[0].data.as_ref(), &[0, 0, 0, 0]);
}

#[test]
fn unknown_enumerated_value_is_5004() {
    let mut m = ccr();
    m.avps.retain(|a| !a.is(CC_REQUEST_TYPE));
    let bad = Avp::from_enum(CC_REQUEST_TYPE, 0);
    let e = validate(&m.with(bad.clone())).unwrap_err();
    assert_eq!(e.result_code().0, 5004);
    assert_eq!(failed(&e), vec![bad]);
}

#[test]
fn invalid_utf8_is_5004() {
    let bad = Avp::new(USER_NAME, Bytes::from_static(&[0xc3, 0x28]));
    let e = validate(&ccr().with(bad.clone())).unwrap_err();
    assert_eq!(e.result_code().0, 5004);
    assert_eq!(failed(&e), vec![bad]);
}

#[test]
fn wrong_length_for_the_type_is_5014_with_a_zeroed_minimum_payload() {
    let mut m = ccr();
    m.avps.retain(|a| !a.is(CC_REQUEST_NUMBER));
    let bad = Avp::new(CC_REQUEST_NUMBER, Bytes::from_static(&[0, 1]));
    let e = validate(&m.with(bad)).unwrap_err();
    assert_eq!(e.result_code().0, 5014);
    let f = failed(&e);
    assert!(f[0].is(CC_REQUEST_NUMBER));
    assert_eq!(f[0].data.as_ref(), &[0, 0, 0, 0]);
}

#[test]
fn avp_length_past_the_end_of_a_group_is_5014_inside_the_group() {
    // A Subscription-Id whose member claims more octets than the group holds.
    let mut inner = BytesMut::new();
    Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0).encode(&mut inner);
    let mut raw = inner.to_vec();
    raw[7] = 0x40; // member length 64 > 12 available
    let group = Avp::new(SUBSCRIPTION_ID, Bytes::from(raw));
    let e = validate(&ccr().with(group)).unwrap_err();
    assert_eq!(e.result_code().0, 5014);
    let f = failed(&e);
    assert!(f[0].is(SUBSCRIPTION_ID), "Failed-AVP shows the path: {f:?}");
    assert!(f[0].members().unwrap()[0].is(SUBSCRIPTION_ID_TYPE));
}

#[test]
fn avp_not_allowed_in_a_closed_grammar_is_5008_with_its_path() {
    let intruder = Avp::from_u32(CC_TIME, 5);
    let sub = Avp::grouped(
        SUBSCRIPTION_ID,
        &[
            Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
            Avp::from_str(SUBSCRIPTION_ID_DATA, "15550000001"),
            intruder.clone(),
        ],
    );
    let e = validate(&ccr().with(sub)).unwrap_err();
    assert_eq!(e.result_code().0, 5008);
    let f = failed(&e);
    assert!(f[0].is(SUBSCRIPTION_ID));
    assert_eq!(f[0].members().unwrap(), vec![intruder]);
}

#[test]
fn second_instance_of_a_single_avp_is_5009_naming_the_excess_one() {
    let extra = Avp::from_u32(CC_REQUEST_NUMBER, 9);
    let e = validate(&ccr().with(extra.clone())).unwrap_err();
    assert_eq!(e.result_code().0, 5009);
    assert_eq!(failed(&e), vec![extra]);
}

#[test]
fn session_id_out_of_its_fixed_place_is_refused() {
    let mut m = ccr();
    let sid = m.avps.remove(0);
    m.avps.push(sid);
    assert_eq!(validate(&m).unwrap_err().result_code().0, 5008);
}

#[test]
fn m_bit_on_an_m_must_not_avp_is_5016() {
    let bad = Avp::from_str(ERROR_MESSAGE, "x");
    let mut bad_m = bad.clone();
    bad_m.flags = AvpFlags(AvpFlags::MANDATORY);
    // Error-Message is not in the CCR grammar but *[AVP] admits it; the flag is what's wrong.
    let e = validate(&ccr().with(bad_m)).unwrap_err();
    assert_eq!(e.result_code().0, 5016);
}

#[test]
fn reserved_avp_flag_bit_is_3009() {
    let mut a = Avp::from_str(USER_NAME, "alice");
    a.flags = AvpFlags(a.flags.0 | 0x01);
    let e = validate(&ccr().with(a.clone())).unwrap_err();
    assert_eq!(e.result_code().0, 3009);
    assert_eq!(failed(&e), vec![a]);
}

#[test]
fn ccr_without_the_p_bit_is_3008_and_cer_with_it_is_3008() {
    let mut m = ccr();
    m.header.flags = Flags(Flags::REQUEST);
    assert_eq!(validate(&m).unwrap_err().result_code().0, 3008);
    let cer = Message::request(
        CommandCode::CAPABILITIES_EXCHANGE,
        ApplicationId::COMMON,
        true,
    );
    assert_eq!(validate(&cer).unwrap_err().result_code().0, 3008);
}

#[test]
fn unknown_command_is_3001_and_unknown_application_is_3007() {
    let mut m = ccr();
    m.header.command = CommandCode(999);
    assert_eq!(
        validate(&m).unwrap_err(),
        ProtocolError::CommandUnsupported(CommandCode(999))
    );
    let mut m = ccr();
    m.header.application = ApplicationId(5);
    assert_eq!(validate(&m).unwrap_err().result_code().0, 3007);
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_without_recursion_trouble() {
    // Service-Information ends in *[AVP], so it may legally hold itself, again and again.
    let mut a = Avp::from_str(PROXY_HOST, "x");
    for _ in 0..40 {
        a = Avp::grouped(SERVICE_INFORMATION, &[a]);
    }
    let limits = Limits {
        max_depth: 8,
        ..Limits::default()
    };
    let m = Message::decode(&ccr().with(a).to_bytes()).unwrap();
    let e = Dictionary::builtin().validate(&m, &limits).unwrap_err();
    assert_eq!(e, ProtocolError::NestingTooDeep { limit: 8 });
    assert_eq!(e.result_code().0, 5012);
}

#[test]
fn too_many_avps_counting_group_members_is_refused() {
    let members: Vec<Avp> = (0..50).map(|_| Avp::from_str(PROXY_HOST, "p")).collect();
    let big = Avp::grouped(SERVICE_INFORMATION, &members);
    let limits = Limits {
        max_avps: 30,
        ..Limits::default()
    };
    let m = Message::decode(&ccr().with(big).to_bytes()).unwrap();
    let e = Dictionary::builtin().validate(&m, &limits).unwrap_err();
    assert_eq!(e, ProtocolError::TooManyAvps { limit: 30 });
}

#[test]
fn header_errors_keep_the_request_ids_for_the_answer() {
    let mut m = ccr();
    m.header.hop_by_hop = 0xdead_beef;
    m.header.end_to_end = 0x1234_5678;
    let mut b = BytesMut::from(m.to_bytes().as_ref());
    b[0] = 7;
    let e = Message::decode(&b.freeze()).unwrap_err();
    assert_eq!(e.result_code().0, 5011);
    let h = e.header.unwrap();
    let ans = Message::error_answer(&h, None, &e.error, "ocs", "realm");
    assert_eq!(ans.header.hop_by_hop, 0xdead_beef);
    assert_eq!(ans.header.end_to_end, 0x1234_5678);
    assert!(!ans.header.flags.is_request());
}

#[test]
fn runtime_dictionary_extends_the_builtin_one() {
    let dir = std::env::temp_dir().join(format!("tollgate-dict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vendor.xml");
    std::fs::write(
        &file,
        r#"<diameter><application id="4" name="x">
             <avp name="Acme-Points" code="1" vendor-id="99999" must="V,M" may="P" must-not="-">
               <data type="Unsigned32"/></avp></application></diameter>"#,
    )
    .unwrap();
    let d = Dictionary::with_files(&[&file]).unwrap();
    let acme = Avp::from_u32(AvpCode::new(1, 99999, true), 3);
    let m = Message::decode(&ccr().with(acme.clone()).to_bytes()).unwrap();
    d.validate(&m, &Limits::default()).unwrap();
    assert_eq!(
        Dictionary::builtin()
            .validate(&m, &Limits::default())
            .unwrap_err()
            .result_code()
            .0,
        5001
    );
    std::fs::write(&file, "<diameter><application id=\"x\"/></diameter>").unwrap();
    let err = Dictionary::with_files(&[&file]).unwrap_err().to_string();
    assert!(err.contains("vendor.xml:1:"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_avp_contents_are_not_judged() {
    // An answer reporting 5001 carries the unknown M-bit AVP inside Failed-AVP (§7.5).
    let req = ccr();
    let e = ProtocolError::AvpUnsupported {
        avp: Avp::from_u32(AvpCode::base(99999), 1),
    };
    let mut a = Message::error_answer(&req.header, req.find(SESSION_ID), &e, "ocs", "realm");
    a.header.flags = Flags(Flags::PROXIABLE | Flags::ERROR);
    validate(&a).unwrap();
}

/// An MSCC carrying one unknown 3GPP AVP with the M bit inside a Service-Information →
/// PS-Information path would be deep; the MSCC (RFC 4006 §8.16, `*[AVP]`) is enough.
fn ccr_with_unknown_vendor_avp_in_mscc() -> (Message, Avp) {
    let unknown = Avp::from_u32(AvpCode::tgpp(64999), 1);
    let m = ccr().with(Avp::grouped(
        MULTIPLE_SERVICES_CREDIT_CONTROL,
        &[Avp::grouped(REQUESTED_SERVICE_UNIT, &[]), unknown.clone()],
    ));
    (m, unknown)
}

fn decoded(m: &Message) -> Message {
    Message::decode(&m.to_bytes()).unwrap()
}

#[test]
fn unknown_vendor_avp_inside_a_group_is_5001_naming_the_member_within_its_parent() {
    let (m, unknown) = ccr_with_unknown_vendor_avp_in_mscc();
    let e = validate(&m).unwrap_err();
    assert_eq!(e.result_code().0, 5001);
    // Error-Message names the member first, then where it sits (not "AVP 456").
    let text = e.to_string();
    assert!(
        text.starts_with("AVP 64999 (vendor 10415) is not supported, inside AVP 456"),
        "{text}"
    );
    assert_eq!(e.offending_avp(), Some(&unknown));
    // Failed-AVP { MSCC { the member } } (RFC 6733 §7.5).
    let f = failed(&e);
    assert!(f[0].is(MULTIPLE_SERVICES_CREDIT_CONTROL));
    assert_eq!(f[0].members().unwrap(), vec![unknown]);
    // The answer carries both.
    let a = Message::error_answer(&m.header, m.find(SESSION_ID), &e, "ocs", "realm");
    assert_eq!(a.find(ERROR_MESSAGE).unwrap().utf8().unwrap(), text);
}

#[test]
fn two_levels_deep_the_failed_avp_keeps_both_parents_outermost_first() {
    // Service-Information { PS-Information { unknown 3GPP AVP, M bit } }.
    let unknown = Avp::from_u32(AvpCode::tgpp(64998), 1);
    let ps = Avp::grouped(AvpCode::tgpp(874), std::slice::from_ref(&unknown));
    let si = Avp::grouped(AvpCode::tgpp(873), &[ps]);
    let e = validate(&ccr().with(si)).unwrap_err();
    assert_eq!(e.result_code().0, 5001);
    assert!(
        e.to_string()
            .contains("inside AVP 874 (vendor 10415) in AVP 873 (vendor 10415)"),
        "{e}"
    );
    let f = failed(&e);
    assert_eq!((f[0].code, f[0].vendor_id), (873, 10415));
    let ps = f[0].members().unwrap();
    assert_eq!((ps[0].code, ps[0].vendor_id), (874, 10415));
    assert_eq!(ps[0].members().unwrap(), vec![unknown]);
}

#[test]
fn the_tolerant_policy_accepts_unknown_vendor_avps_only_inside_open_groups() {
    use tollgate_codec::{UnknownAvp, UnknownAvps};
    let dict = Dictionary::builtin();
    let limits = Limits::default();
    let tolerant = UnknownAvps::AcceptVendorInOpenGroups;
    let (m, _) = ccr_with_unknown_vendor_avp_in_mscc();
    let report = dict.validate_with(&decoded(&m), &limits, tolerant).unwrap();
    assert_eq!(report.unknown_accepted, 1);
    assert_eq!(
        report.first_unknown,
        Some(UnknownAvp {
            code: 64999,
            vendor_id: 10415
        })
    );
    // The default is RFC 6733 §4.1.
    assert_eq!(
        dict.validate_with(&decoded(&m), &limits, UnknownAvps::default())
            .unwrap_err()
            .result_code()
            .0,
        5001
    );
    // Still refused: at the top level, an IETF (vendor 0) AVP inside a group, and a vendor AVP
    // inside a group whose grammar is closed (Subscription-Id has no *[AVP]).
    let top = ccr().with(Avp::from_u32(AvpCode::tgpp(64999), 1));
    let ietf = ccr().with(Avp::grouped(
        MULTIPLE_SERVICES_CREDIT_CONTROL,
        &[Avp::from_u32(AvpCode::base(64999), 1)],
    ));
    let closed = ccr().with(Avp::grouped(
        SUBSCRIPTION_ID,
        &[
            Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
            Avp::from_str(SUBSCRIPTION_ID_DATA, "15550000001"),
            Avp::from_u32(AvpCode::tgpp(64999), 1),
        ],
    ));
    for m in [top, ietf, closed] {
        let e = dict
            .validate_with(&decoded(&m), &limits, tolerant)
            .unwrap_err();
        assert_eq!(e.result_code().0, 5001, "{e}");
    }
    // A message with nothing unknown reports nothing.
    let clean = dict
        .validate_with(&decoded(&ccr()), &limits, tolerant)
        .unwrap();
    assert_eq!(clean.unknown_accepted, 0);
    assert_eq!(clean.first_unknown, None);
}
