//! Golden messages from third-party stacks (`../shared/fixtures/`, see its README): each
//! decodes to exactly the AVPs, flags and values Wireshark shows, and re-encodes to the same
//! bytes. Also the cross-check of the spec's AVP table against our dictionaries.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use bytes::Bytes;
use common::{
    avps_read_as_tshark_reads_them, fixture_paths, load_fixture, shared, tshark_of, AvpComparison,
};
use tollgate_codec::{Dictionary, Limits, Message};

#[test]
fn fixtures_decode_like_wireshark_and_reencode_to_the_same_bytes() {
    let Some(shared) = shared() else {
        return;
    };
    let dict = Dictionary::builtin();
    let mut checked = 0;
    let entries = fixture_paths(&shared);
    assert!(entries.len() >= 20, "expected the fixture set");
    for hex_path in entries {
        let name = hex_path.file_stem().unwrap().to_string_lossy().to_string();
        let hex_text = std::fs::read_to_string(&hex_path).unwrap();
        let bytes = Bytes::from(hex::decode(hex_text.trim()).unwrap());
        let msg = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            msg.to_bytes(),
            bytes,
            "{name}: re-encoding changed the bytes"
        );

        let ts = tshark_of(&hex_path);
        let h = msg.header;
        assert_eq!(h.length, ts.length, "{name}: length");
        assert_eq!(h.flags.0, ts.flags, "{name}: flags");
        assert_eq!(h.command.0, ts.command, "{name}: command");
        assert_eq!(h.application.0, ts.application, "{name}: application");
        assert_eq!(h.hop_by_hop, ts.hop_by_hop, "{name}: hop-by-hop");
        assert_eq!(h.end_to_end, ts.end_to_end, "{name}: end-to-end");

        avps_read_as_tshark_reads_them(
            &name,
            dict,
            &msg,
            &ts,
            &AvpComparison {
                flags: true,
                enumerated_names: false,
                unknown_avp: "we do not know this AVP",
            },
        );
        checked += 1;
    }
    eprintln!("{checked} golden messages checked");
}

#[test]
fn fixture_requests_validate_or_fail_as_their_answers_say() {
    let Some(shared) = shared() else {
        return;
    };
    let dict = Dictionary::builtin();
    let load = |n: &str| load_fixture(&shared, n);
    let limits = Limits::default();
    for ok in common::VALID_FIXTURES {
        let m = load(ok);
        if let Err(e) = dict.validate(&m, &limits) {
            panic!("{ok} should validate: {e}");
        }
    }
    // Each erroneous request gets the Result-Code and Failed-AVP its recorded answer shows.
    for (req, ans) in [
        ("pyd-28-CCR-I", "pyd-29-CCA"),
        ("pyd-30-CCR", "pyd-31-CCA"),
        ("pyd-32-CCR-I", "pyd-33-CCA"),
        ("pyd-34-CCR-E", "pyd-35-CCA"),
    ] {
        let e = dict.validate(&load(req), &limits).unwrap_err();
        let answer = load(ans);
        assert_eq!(Some(e.result_code()), answer.result_code(), "{req}: {e}");
        let theirs = answer
            .find(tollgate_codec::codes::FAILED_AVP)
            .map(|f| f.members().unwrap());
        if let Some(theirs) = theirs {
            let ours = e.failed_avp().unwrap().members().unwrap();
            assert_eq!(ours.len(), theirs.len(), "{req}");
            assert_eq!(ours[0].code, theirs[0].code, "{req}: Failed-AVP code");
            assert_eq!(ours[0].flags, theirs[0].flags, "{req}: Failed-AVP flags");
            assert_eq!(
                ours[0].vendor(),
                theirs[0].vendor(),
                "{req}: Failed-AVP vendor"
            );
            match req {
                // freeDiameter puts one octet in a missing Session-Id; §7.5 asks for the
                // minimum value, which for a UTF8String is empty.
                "pyd-28-CCR-I" => assert!(ours[0].data.is_empty()),
                // For 5001 freeDiameter zeroes the value; §7.5 asks for the offending AVP
                // itself, so we return it as received.
                "pyd-32-CCR-I" => {
                    let sent = load(req)
                        .find(tollgate_codec::AvpCode::base(99999))
                        .cloned();
                    assert_eq!(Some(ours[0].clone()), sent, "{req}: Failed-AVP");
                }
                _ => assert_eq!(ours[0], theirs[0], "{req}: Failed-AVP"),
            }
        }
    }
}

#[test]
fn every_row_of_the_spec_avp_table_is_in_the_dictionaries() {
    let Some(shared) = shared() else {
        return;
    };
    let tsv = std::fs::read_to_string(shared.join("spec/avp-table.tsv")).unwrap();
    let dict = Dictionary::builtin();
    let mut rows = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, code, vendor, ty, m) = (f[0], f[1], f[2], f[3], f[4]);
        let code: u32 = code.parse().unwrap();
        let vendor: u32 = vendor.parse().unwrap();
        let def = dict.avp(code, vendor).unwrap_or_else(|| {
            panic!("{name} ({code}, vendor {vendor}) is not in the dictionaries")
        });
        assert_eq!(def.name, name, "name of {code}/{vendor}");
        assert_eq!(def.avp_type.name(), ty, "type of {name}");
        let rule = match def.m_rule {
            tollgate_codec::dictionary::FlagRule::Must => "must",
            tollgate_codec::dictionary::FlagRule::May => "may",
            tollgate_codec::dictionary::FlagRule::MustNot => "mustnot",
        };
        assert_eq!(rule, m, "M-bit rule of {name}");
        rows += 1;
    }
    assert!(rows >= 200, "only {rows} rows read");
}
