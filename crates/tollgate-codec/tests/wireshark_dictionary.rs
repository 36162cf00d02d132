//! Wireshark's own Diameter dictionary, as Debian's `wireshark-common` installs it (read where
//! it is installed; nothing of it is in this repository), loaded through
//! `tollgate_codec::wireshark`: every AVP of every third-party fixture then reads as tshark
//! read it (name, code, nesting, type as shown by the value), with Wireshark's files alone and
//! merged under ours; the valid fixtures validate; and merging keeps every definition of ours.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::{
    avps_read_as_tshark_reads_them, fixture_paths, load_fixture, shared, tshark_of, AvpComparison,
    VALID_FIXTURES,
};
use std::path::Path;
use tollgate_codec::dictionary::FlagRule;
use tollgate_codec::wireshark::RENAME_PREFIX;
use tollgate_codec::{Avp, AvpCode, AvpType, Dictionary, Limits, Message, WiresharkDictionary};

const INSTALLED: &str = "/usr/share/wireshark/diameter/dictionary.xml";

/// The installed Wireshark dictionary, read, or `None` (skipped) when it is not installed.
fn installed() -> Option<WiresharkDictionary> {
    let path = Path::new(INSTALLED);
    tollgate_testkit::component(
        path.is_file().then_some(()),
        "Wireshark's Diameter dictionary (/usr/share/wireshark/diameter)",
        "apt-get install wireshark-common",
    )?;
    Some(WiresharkDictionary::read(path).unwrap_or_else(|e| panic!("{e}")))
}

/// Checks every fixture AVP against tshark's line for it. With `wireshark_names`, the
/// dictionary is Wireshark's alone, so enumerated values, commands and applications must
/// carry Wireshark's names too; merged, ours may name them differently (the numbers agree).
fn reads_like_tshark(dict: &Dictionary, shared: &Path, wireshark_names: bool) -> usize {
    let mut avps = 0;
    for hex_path in fixture_paths(shared) {
        let name = hex_path.file_stem().unwrap().to_string_lossy().to_string();
        let msg = load_fixture(shared, &name);
        let ts = tshark_of(&hex_path);
        let h = msg.header;
        if wireshark_names {
            assert_eq!(
                dict.application_name(h.application),
                Some(ts.application_name.as_str()),
                "{name}: application {}",
                h.application.0
            );
            // Wireshark names commands by code alone, whatever the application.
            let command = dict
                .command(h.application, h.command)
                .or_else(|| dict.commands().find(|c| c.code == h.command.0))
                .map(|c| c.name.as_str());
            assert_eq!(
                command,
                Some(ts.command_name.as_str()),
                "{name}: command {}",
                h.command.0
            );
        }
        avps += avps_read_as_tshark_reads_them(
            &name,
            dict,
            &msg,
            &ts,
            &AvpComparison {
                flags: false,
                enumerated_names: wireshark_names,
                unknown_avp: "Wireshark knows this AVP",
            },
        );
    }
    avps
}

#[test]
fn fixture_avps_read_as_tshark_reads_them_with_wireshark_files_alone() {
    let (Some(ws), Some(shared)) = (installed(), shared()) else {
        return;
    };
    let dict = Dictionary::from_wireshark(&ws).unwrap();
    let checked = reads_like_tshark(&dict, &shared, true);
    assert!(checked >= 200, "only {checked} AVPs checked");
    eprintln!("{checked} fixture AVPs read as tshark reads them");
}

#[test]
fn fixture_avps_read_as_tshark_reads_them_merged_under_ours() {
    let (Some(ws), Some(shared)) = (installed(), shared()) else {
        return;
    };
    let files: [&Path; 0] = [];
    let dict = Dictionary::with_wireshark(&files, &ws).unwrap();
    reads_like_tshark(&dict, &shared, false);
}

#[test]
fn valid_fixtures_validate_with_wireshark_files_alone_and_merged() {
    let (Some(ws), Some(shared)) = (installed(), shared()) else {
        return;
    };
    let limits = Limits::default();
    let alone = Dictionary::from_wireshark(&ws).unwrap();
    let files: [&Path; 0] = [];
    let merged = Dictionary::with_wireshark(&files, &ws).unwrap();
    for name in VALID_FIXTURES {
        let m = load_fixture(&shared, name);
        if let Err(e) = alone.validate(&m, &limits) {
            panic!("{name} should validate with Wireshark's dictionary alone: {e}");
        }
        if let Err(e) = merged.validate(&m, &limits) {
            panic!("{name} should validate merged: {e}");
        }
    }
    // Wireshark's dictionary does not know AVP 99999 either: still 5001 with the M bit.
    let unknown = load_fixture(&shared, "pyd-32-CCR-I");
    let e = alone.validate(&unknown, &limits).unwrap_err();
    assert_eq!(e.result_code().0, 5001, "{e}");
    // Merged, the erroneous fixtures get the answers our grammars give.
    for req in ["pyd-28-CCR-I", "pyd-30-CCR", "pyd-32-CCR-I"] {
        let m: Message = load_fixture(&shared, req);
        let ours = Dictionary::builtin().validate(&m, &limits).unwrap_err();
        let e = merged.validate(&m, &limits).unwrap_err();
        assert_eq!(e.result_code(), ours.result_code(), "{req}: {e} / {ours}");
    }
    // A CCR sent with application 5 (EAP, RFC 4072): Wireshark describes EAP, but describing
    // an application is not serving it, so still 3007 (RFC 6733 §7.1.3).
    let eap = load_fixture(&shared, "pyd-34-CCR-E");
    let e = merged.validate(&eap, &limits).unwrap_err();
    assert_eq!(e.result_code().0, 3007, "{e}");

    // Wireshark's definitions describe; they never refuse what ours alone accept: an
    // enumerated value outside Wireshark's list, or the M bit on an AVP Wireshark marks
    // "mustnot", in an AVP only Wireshark defines.
    let ws_only: Vec<_> = merged
        .avps()
        .filter(|d| Dictionary::builtin().avp(d.code, d.vendor).is_none())
        .collect();
    let enumerated = ws_only
        .iter()
        .find(|d| d.avp_type == AvpType::Enumerated && !d.items.is_empty() && d.vendor == 0)
        .expect("an IETF enumerated AVP only Wireshark defines");
    let unlisted = (i32::MIN..)
        .find(|v| enumerated.item_name(*v).is_none())
        .unwrap();
    let mustnot = ws_only
        .iter()
        .find(|d| d.m_rule == FlagRule::MustNot && d.avp_type == AvpType::Unsigned32)
        .expect("an Unsigned32 AVP Wireshark marks M mustnot");
    for extra in [
        Avp::new(
            AvpCode::new(enumerated.code, enumerated.vendor, false),
            bytes::Bytes::copy_from_slice(&unlisted.to_be_bytes()),
        ),
        Avp::from_u32(AvpCode::new(mustnot.code, mustnot.vendor, true), 1),
    ] {
        let mut m = load_fixture(&shared, "pyd-04-CCR-I");
        m.avps.push(extra.clone());
        let m = Message::decode(&m.to_bytes()).unwrap();
        merged
            .validate(&m, &limits)
            .unwrap_or_else(|e| panic!("{extra:?} refused by the merged dictionary: {e}"));
    }
}

#[test]
fn merging_keeps_ours_and_adds_the_rest_of_wiresharks() {
    let Some(ws) = installed() else {
        return;
    };
    let alone = Dictionary::from_wireshark(&ws).unwrap();
    let files: [&Path; 0] = [];
    let merged = Dictionary::with_wireshark(&files, &ws).unwrap();
    let ours = Dictionary::builtin();
    assert!(ws.avp_count() > 2000, "{} AVPs read", ws.avp_count());
    assert_eq!(alone.avps().count(), ws.avp_count());
    for o in ours.avps() {
        let m = merged.avp(o.code, o.vendor).unwrap();
        assert_eq!(
            (&m.name, m.avp_type, m.m_rule, &m.items),
            (&o.name, o.avp_type, o.m_rule, &o.items),
            "{} is ours",
            o.name
        );
        assert_eq!(
            m.grammar.as_ref().map(|g| g.rules.len()),
            o.grammar.as_ref().map(|g| g.rules.len()),
            "{}: our grammar",
            o.name
        );
    }
    for c in ours.commands() {
        let m = merged
            .command(
                tollgate_codec::ApplicationId(c.application),
                tollgate_codec::CommandCode(c.code),
            )
            .unwrap();
        assert_eq!(m.request.rules.len(), c.request.rules.len(), "{}", c.name);
    }
    let mut added = 0;
    for w in alone.avps() {
        if ours.avp(w.code, w.vendor).is_some() {
            continue;
        }
        let m = merged.avp(w.code, w.vendor).unwrap();
        assert_eq!(m.avp_type, w.avp_type, "{}", w.name);
        assert!(
            m.name == w.name || m.name.starts_with(RENAME_PREFIX),
            "{} became {}",
            w.name,
            m.name
        );
        added += 1;
    }
    assert_eq!(merged.avps().count(), ours.avps().count() + added);
    eprintln!(
        "{} AVPs of ours, {added} added from {}",
        ours.avps().count(),
        ws.path().display()
    );
}
