//! The embedded dictionaries held to the 3GPP AVP tables: `dictionaries/spec/3gpp-avps.tsv`
//! transcribes, one row per AVP, the code, vendor, data type and M/V flag rules of TS 32.299
//! table 7.2.0.1 and of the TS 29.xxx tables it reuses (TS 29.061 §16.4.7.2, TS 29.212 table
//! 5.3.1, TS 29.214 table 5.3.0.1, TS 29.229 table 6.3.1, TS 29.272 table 7.3.1, ...). Every row
//! must be defined exactly so, and every 3GPP (vendor 10415) AVP the dictionaries define must
//! have a row, so nothing unsourced slips in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is a failed test

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use tollgate_codec::codes::*;
use tollgate_codec::dictionary::{FlagRule, BUILTIN};
use tollgate_codec::{
    Address, ApplicationId, Avp, AvpCode, CommandCode, Dictionary, Limits, Message,
};

const TABLE: &str = include_str!("../../../dictionaries/spec/3gpp-avps.tsv");
const TGPP: u32 = 10415;

/// One row of the spec table.
struct Row {
    line: usize,
    name: String,
    code: u32,
    vendor: u32,
    avp_type: String,
    m_rule: FlagRule,
    v_rule: FlagRule,
    source: String,
}

fn rule(s: &str) -> Option<FlagRule> {
    match s {
        "must" => Some(FlagRule::Must),
        "may" => Some(FlagRule::May),
        "must-not" => Some(FlagRule::MustNot),
        _ => None,
    }
}

fn rows() -> Vec<Row> {
    let mut lines = TABLE
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let (_, header) = lines.next().expect("a header line");
    assert_eq!(
        header, "name\tcode\tvendor\ttype\tm_rule\tv_rule\tsource",
        "3gpp-avps.tsv header"
    );
    lines
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "3gpp-avps.tsv line {}: {l:?}", i + 1);
            Row {
                line: i + 1,
                name: f[0].to_string(),
                code: f[1].parse().expect("numeric code"),
                vendor: f[2].parse().expect("numeric vendor"),
                avp_type: f[3].to_string(),
                m_rule: rule(f[4]).unwrap_or_else(|| panic!("line {}: M rule {:?}", i + 1, f[4])),
                v_rule: rule(f[5]).unwrap_or_else(|| panic!("line {}: V rule {:?}", i + 1, f[5])),
                source: f[6].to_string(),
            }
        })
        .collect()
}

/// The V-bit rule of every embedded `<avp>`, read from the XML itself: `AvpDef` keeps only the
/// M rule, because only the M bit changes how a received AVP is judged (RFC 6733 §4.1).
fn v_rules() -> HashMap<(u32, u32), FlagRule> {
    let mut out = HashMap::new();
    for (file, text) in BUILTIN {
        let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for avp in doc.descendants().filter(|n| n.has_tag_name("avp")) {
            let code: u32 = avp.attribute("code").unwrap().parse().unwrap();
            let vendor: u32 = avp.attribute("vendor-id").unwrap_or("0").parse().unwrap();
            let has_v = |attr: &str| {
                avp.attribute(attr)
                    .is_some_and(|v| v.split(',').any(|f| f.trim() == "V"))
            };
            let v = if has_v("must") {
                FlagRule::Must
            } else if has_v("must-not") {
                FlagRule::MustNot
            } else {
                FlagRule::May
            };
            out.insert((code, vendor), v);
        }
    }
    out
}

#[test]
fn the_spec_table_is_well_formed() {
    let rows = rows();
    let mut keys = HashSet::new();
    let mut names = HashSet::new();
    for r in &rows {
        assert!(
            keys.insert((r.code, r.vendor)),
            "line {}: ({}, {}) twice",
            r.line,
            r.code,
            r.vendor
        );
        assert!(
            names.insert(r.name.clone()),
            "line {}: {} twice",
            r.line,
            r.name
        );
        assert!(!r.source.trim().is_empty(), "line {}: no source", r.line);
        // RFC 6733 §4.1: the V bit says whether the Vendor-ID field is present.
        let want_v = if r.vendor == 0 {
            FlagRule::MustNot
        } else {
            FlagRule::Must
        };
        assert_eq!(r.v_rule, want_v, "line {}: V rule of {}", r.line, r.name);
    }
    assert!(rows.len() > 400, "only {} rows", rows.len());
}

#[test]
fn every_row_of_the_spec_table_is_defined_as_the_spec_says() {
    let dict = Dictionary::builtin();
    let v_rules = v_rules();
    let mut wrong = Vec::new();
    for r in rows() {
        let at = format!(
            "3gpp-avps.tsv line {}: {} ({}/{}) [{}]",
            r.line, r.name, r.code, r.vendor, r.source
        );
        let Some(def) = dict.avp(r.code, r.vendor) else {
            wrong.push(format!("{at}: not defined"));
            continue;
        };
        if def.name != r.name {
            wrong.push(format!("{at}: defined as {}", def.name));
        }
        if def.avp_type.name() != r.avp_type {
            wrong.push(format!(
                "{at}: type {}, the spec says {}",
                def.avp_type.name(),
                r.avp_type
            ));
        }
        if def.m_rule != r.m_rule {
            wrong.push(format!(
                "{at}: M rule {:?}, the spec says {:?}",
                def.m_rule, r.m_rule
            ));
        }
        if v_rules.get(&(r.code, r.vendor)) != Some(&r.v_rule) {
            wrong.push(format!(
                "{at}: V rule {:?}, the spec says {:?}",
                v_rules.get(&(r.code, r.vendor)),
                r.v_rule
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreement(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_3gpp_avp_defined_is_in_the_spec_table() {
    let listed: HashSet<(u32, u32)> = rows().iter().map(|r| (r.code, r.vendor)).collect();
    let mut unsourced: Vec<String> = Dictionary::builtin()
        .avps()
        .filter(|d| d.vendor == TGPP && !listed.contains(&(d.code, d.vendor)))
        .map(|d| format!("{} ({})", d.name, d.code))
        .collect();
    unsourced.sort();
    assert!(
        unsourced.is_empty(),
        "3GPP AVPs without a row in dictionaries/spec/3gpp-avps.tsv: {}",
        unsourced.join(", ")
    );
}

#[test]
fn every_grouped_3gpp_avp_has_a_grammar() {
    for d in Dictionary::builtin().avps().filter(|d| d.vendor == TGPP) {
        if d.avp_type.name() == "Grouped" {
            let g = d.grammar.as_ref().expect("a grammar");
            assert!(
                !g.rules.is_empty() || g.any_other,
                "{} ({}) admits nothing",
                d.name,
                d.code
            );
        }
    }
}

// --- A Gy CCR with the AVPs Open5GS's SMF puts in (src/smf/gy-path.c: MSCC with
// QoS-Information and 3GPP-RAT-Type, PS-Information with the TS 29.061 3GPP-* AVPs), each with
// the M bit wherever its spec rule allows it: the dictionaries must know them all.

fn tgpp(code: u32) -> AvpCode {
    AvpCode::tgpp(code)
}

fn ip(a: [u8; 4]) -> Address {
    Address::from(IpAddr::V4(Ipv4Addr::from(a)))
}

fn gy_ccr_initial() -> Message {
    let mscc = Avp::grouped(
        MULTIPLE_SERVICES_CREDIT_CONTROL,
        &[
            Avp::grouped(REQUESTED_SERVICE_UNIT, &[]),
            Avp::grouped(
                USED_SERVICE_UNIT,
                &[
                    Avp::from_u32(CC_TIME, 0),
                    Avp::from_u64(CC_INPUT_OCTETS, 0),
                    Avp::from_u64(CC_OUTPUT_OCTETS, 0),
                ],
            ),
            // QoS-Information, TS 29.212 §5.3.16; Allocation-Retention-Priority, its members
            // and the APN-AMBR pair are "M must not" in TS 29.212 table 5.3.1.
            Avp::grouped(
                tgpp(1016),
                &[
                    Avp::from_enum(tgpp(1028), 9),
                    Avp::grouped(
                        tgpp(1034).optional(),
                        &[
                            Avp::from_u32(tgpp(1046).optional(), 8),
                            Avp::from_enum(tgpp(1047).optional(), 1),
                            Avp::from_enum(tgpp(1048).optional(), 1),
                        ],
                    ),
                    Avp::from_u32(tgpp(1041).optional(), 1_000_000),
                    Avp::from_u32(tgpp(1040).optional(), 2_000_000),
                ],
            ),
            // 3GPP-RAT-Type: one octet, EUTRAN (TS 29.061 §16.4.7.2)
            Avp::new(tgpp(21), vec![6u8]),
        ],
    );
    let ps_information = Avp::grouped(
        tgpp(874),
        &[
            Avp::new(tgpp(2), 0x0102_0304u32.to_be_bytes().to_vec()),
            Avp::from_enum(tgpp(3), 0),
            Avp::from_address(tgpp(1227), &ip([10, 45, 0, 2])),
            Avp::from_address(tgpp(1228), &ip([127, 0, 0, 3])),
            Avp::from_address(tgpp(847), &ip([127, 0, 0, 4])),
            Avp::from_str(AvpCode::base(30), "internet"),
            Avp::from_str(tgpp(12), "0"),
            Avp::from_str(tgpp(13), "0800"),
            Avp::from_str(tgpp(18), "99970"),
            Avp::new(tgpp(10), vec![5u8]),
            Avp::new(tgpp(23), vec![0x40u8, 0x00]),
            Avp::new(
                tgpp(22),
                vec![130u8, 0x99, 0xf9, 0x07, 0, 1, 0x99, 0xf9, 0x07, 0, 0, 1, 0],
            ),
            Avp::grouped(
                USER_EQUIPMENT_INFO.optional(),
                &[
                    Avp::from_enum(USER_EQUIPMENT_INFO_TYPE.optional(), 0),
                    Avp::new(
                        USER_EQUIPMENT_INFO_VALUE.optional(),
                        b"3584311111111111".to_vec(),
                    ),
                ],
            ),
        ],
    );
    Message::request(
        CommandCode::CREDIT_CONTROL,
        ApplicationId::CREDIT_CONTROL,
        true,
    )
    .with(Avp::from_str(SESSION_ID, "smf.localdomain;1;1;app_gy"))
    .with(Avp::from_str(ORIGIN_HOST, "smf.localdomain"))
    .with(Avp::from_str(ORIGIN_REALM, "localdomain"))
    .with(Avp::from_str(DESTINATION_REALM, "localdomain"))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, "32251@3gpp.org"))
    .with(Avp::from_enum(CC_REQUEST_TYPE, 1))
    .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
    .with(Avp::grouped(
        SUBSCRIPTION_ID,
        &[
            Avp::from_enum(SUBSCRIPTION_ID_TYPE, 1),
            Avp::from_str(SUBSCRIPTION_ID_DATA, "999700000000001"),
        ],
    ))
    .with(Avp::from_enum(REQUESTED_ACTION, 0))
    .with(Avp::from_enum(tgpp(2055), 2))
    .with(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 0))
    .with(mscc)
    .with(Avp::grouped(tgpp(873), &[ps_information]))
}

fn validate(m: &Message) -> Result<(), tollgate_codec::ProtocolError> {
    let decoded = Message::decode(&m.to_bytes()).map_err(|e| e.error)?;
    Dictionary::builtin().validate(&decoded, &Limits::default())
}

#[test]
fn a_gy_ccr_shaped_like_open5gs_smf_validates() {
    validate(&gy_ccr_initial()).unwrap();
}

#[test]
fn ps_information_follows_its_grammar() {
    // TS 32.299 §7.2.158 has no *[AVP]: an AVP it does not list is 5008 (RFC 6733 §7.1.5).
    let mut m = gy_ccr_initial();
    let last = m.avps.len() - 1;
    let mut ps = m.avps[last].members().unwrap().remove(0);
    let mut members = ps.members().unwrap();
    members.push(Avp::from_str(tgpp(841), "icid-in-the-wrong-place"));
    ps = Avp::grouped(tgpp(874), &members);
    m.avps[last] = Avp::grouped(tgpp(873), &[ps]);
    let e = validate(&m).unwrap_err();
    assert_eq!(e.result_code().0, 5008);
}
