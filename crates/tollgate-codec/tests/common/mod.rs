//! Shared by the test suites that read the third-party fixtures (`../shared/fixtures/`, see
//! its README): where they are, Wireshark's (tshark 4.0) decode of each as text, and how our
//! description of a fixture's AVPs compares with the AVPs and values Wireshark shows.

// Each test crate that includes this module uses part of it.
#![allow(dead_code, clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use bytes::Bytes;
use std::path::{Path, PathBuf};
use tollgate_codec::describe::{describe, Described};
use tollgate_codec::{AvpType, Dictionary, Message};

/// `shared/` sits beside the repository checkout (CI clones main with shared/ next to it).
pub fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    tollgate_testkit::component(
        p.join("fixtures").is_dir().then_some(p),
        "../shared (fixtures and spec) beside the checkout",
        "check shared/ out beside the repository, as CI lays it",
    )
}

/// The fixture requests and answers that are valid as they are (the others are the error
/// cases of the fixtures README).
pub const VALID_FIXTURES: [&str; 17] = [
    "pyd-00-CER",
    "pyd-01-CEA",
    "pyd-02-DWR",
    "pyd-03-DWA",
    "pyd-04-CCR-I",
    "pyd-05-CCA-I",
    "pyd-06-CCR-U",
    "pyd-08-CCR-T",
    "pyd-10-CCR-I",
    "pyd-12-CCR-T",
    "pyd-14-CCR-E",
    "pyd-16-CCR-E",
    "pyd-44-DPR",
    "pyd-45-DPA",
    "fdl-00-CER",
    "fdl-04-CCR-I",
    "fdl-28-CCA-I",
];

/// Every `NAME.hex` of the fixtures, sorted.
pub fn fixture_paths(shared: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(shared.join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    entries.sort();
    entries
}

/// The message of fixture `name`.
pub fn load_fixture(shared: &Path, name: &str) -> Message {
    let t = std::fs::read_to_string(shared.join("fixtures").join(format!("{name}.hex"))).unwrap();
    Message::decode(&Bytes::from(hex::decode(t.trim()).unwrap())).unwrap()
}

#[derive(Debug)]
pub struct TsharkAvp {
    pub depth: usize,
    pub name: String,
    pub code: u32,
    pub length: usize,
    pub flags: String,
    pub value: Option<String>,
}

pub struct TsharkMessage {
    pub length: u32,
    pub flags: u8,
    pub command: u32,
    /// Wireshark's name for the command, e.g. `Credit-Control`.
    pub command_name: String,
    pub application: u32,
    /// Wireshark's name for the application, e.g. `Diameter Credit Control Application`.
    pub application_name: String,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
    pub avps: Vec<TsharkAvp>,
}

/// The `n` of a trailing `(n)`.
pub fn trailing_number(s: &str) -> Option<u64> {
    let s = s.trim_end();
    let inner = s.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    inner[open + 1..].parse().ok()
}

/// The text before a trailing ` (n)`.
fn before_number(s: &str) -> String {
    s.rfind(" (").map_or(s, |i| &s[..i]).to_string()
}

/// Wireshark's decode of the fixture at `hex_path` (`NAME.hex`), from `NAME.tshark.txt`.
pub fn tshark_of(hex_path: &Path) -> TsharkMessage {
    parse_tshark(&std::fs::read_to_string(hex_path.with_extension("tshark.txt")).unwrap())
}

pub fn parse_tshark(text: &str) -> TsharkMessage {
    let mut m = TsharkMessage {
        length: 0,
        flags: 0,
        command: 0,
        command_name: String::new(),
        application: 0,
        application_name: String::new(),
        hop_by_hop: 0,
        end_to_end: 0,
        avps: Vec::new(),
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Length: ") {
            m.length = v.parse().unwrap();
        } else if let Some(v) = l.strip_prefix("Flags: 0x") {
            m.flags = u8::from_str_radix(&v[..2], 16).unwrap();
        } else if let Some(v) = l.strip_prefix("Command Code: ") {
            m.command = trailing_number(l).unwrap() as u32;
            m.command_name = before_number(v);
        } else if let Some(v) = l.strip_prefix("ApplicationId: ") {
            m.application = trailing_number(l).unwrap() as u32;
            m.application_name = before_number(v);
        } else if let Some(v) = l.strip_prefix("Hop-by-Hop Identifier: 0x") {
            m.hop_by_hop = u32::from_str_radix(v, 16).unwrap();
        } else if let Some(v) = l.strip_prefix("End-to-End Identifier: 0x") {
            m.end_to_end = u32::from_str_radix(v, 16).unwrap();
        } else if let Some(rest) = l.strip_prefix("AVP: ") {
            // Name(code) l=N f=FFF[ val=...]
            let lpos = rest.find(") l=").unwrap();
            let head = &rest[..lpos];
            let open = head.rfind('(').unwrap();
            let name = head[..open].to_string();
            let code: u32 = head[open + 1..].parse().unwrap();
            let tail = &rest[lpos + 4..];
            let (len_s, tail) = tail.split_once(" f=").unwrap();
            let (flags, value) = match tail.split_once(" val=") {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (tail.trim().to_string(), None),
            };
            m.avps.push(TsharkAvp {
                depth: (indent - 4) / 8,
                name,
                code,
                length: len_s.parse().unwrap(),
                flags,
                value,
            });
        }
    }
    m
}

/// The described AVPs in wire order, each with its nesting depth.
pub fn flatten(ds: &[Described], depth: usize, out: &mut Vec<(usize, Described)>) {
    for d in ds {
        out.push((depth, d.clone()));
        flatten(&d.members, depth + 1, out);
    }
}

/// Wireshark prints times as `Nov 23, 2026 00:17:11.000000000 UTC`; ours are ISO 8601.
pub fn tshark_time_to_iso(v: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = v.split_whitespace();
    let mon_name = parts.next()?;
    let mon = MONTHS.iter().position(|m| *m == mon_name)? + 1;
    let day: u32 = parts.next()?.trim_end_matches(',').parse().ok()?;
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?.split('.').next()?;
    Some(format!("{year:04}-{mon:02}-{day:02}T{time}Z"))
}

pub fn value_matches(ours: &Described, theirs: &str) -> bool {
    if let Some(n) = trailing_number(theirs) {
        // Enumerations and application ids: Wireshark's names differ in places; the number
        // is what is on the wire.
        return trailing_number(&ours.value) == Some(n) || ours.value == n.to_string();
    }
    if ours.avp_type == Some(AvpType::Time) {
        return tshark_time_to_iso(theirs).as_deref() == Some(ours.value.as_str());
    }
    if let Some(prefix) = theirs.strip_suffix('…') {
        return ours.value.starts_with(prefix);
    }
    // Wireshark shows a string of NULs as empty.
    ours.value.trim_end_matches('\0') == theirs
}

/// What differs between the suites that compare our reading of a fixture with tshark's.
pub struct AvpComparison {
    /// Our AVP flags must print as Wireshark prints them (`V--`, `-M-`, ...).
    pub flags: bool,
    /// Enumerated values must carry Wireshark's names, not only its numbers: the dictionary
    /// is Wireshark's own.
    pub enumerated_names: bool,
    /// Why an AVP the dictionary does not name must be one Wireshark shows as `Unknown`.
    pub unknown_avp: &'static str,
}

/// Asserts that `dict` describes every AVP of fixture `name` as tshark's decode `ts` shows
/// it: one for one in wire order, with the same depth, code, length and name, no value
/// for a grouped AVP and a matching one (`value_matches`) for the others, plus what `compare`
/// adds. Returns how many AVPs with a value were compared.
pub fn avps_read_as_tshark_reads_them(
    name: &str,
    dict: &Dictionary,
    msg: &Message,
    ts: &TsharkMessage,
    compare: &AvpComparison,
) -> usize {
    let mut ours = Vec::new();
    flatten(&describe(dict, msg), 0, &mut ours);
    assert_eq!(ours.len(), ts.avps.len(), "{name}: number of AVPs");
    let mut valued = 0;
    for ((depth, o), t) in ours.iter().zip(&ts.avps) {
        let at = format!("{name}: AVP {}({})", t.name, t.code);
        assert_eq!(*depth, t.depth, "{at}: depth");
        assert_eq!(o.code, t.code, "{at}: code");
        assert_eq!(o.length, t.length, "{at}: length");
        if compare.flags {
            assert_eq!(o.flags.to_string(), t.flags, "{at}: flags");
        }
        match &o.name {
            Some(n) => assert_eq!(n, &t.name, "{at}: name"),
            None => assert_eq!(t.name, "Unknown", "{at}: {}", compare.unknown_avp),
        }
        if o.avp_type == Some(AvpType::Grouped) {
            assert!(t.value.is_none(), "{at}: Wireshark shows a value");
            continue;
        }
        let tv = t.value.as_deref().unwrap_or("");
        assert!(
            value_matches(o, tv),
            "{at}: ours {:?} ({:?}), Wireshark {tv:?}",
            o.value,
            o.avp_type
        );
        if compare.enumerated_names && o.avp_type == Some(AvpType::Enumerated) {
            assert_eq!(o.value, tv, "{at}: enumerated value");
        }
        valued += 1;
    }
    valued
}
