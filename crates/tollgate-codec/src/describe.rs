//! A message rendered as a tree of named AVPs with values, as Wireshark shows it; used by
//! `tollgate decode` and by logs. Never fails: what cannot be read is shown as such.

use crate::avp::{Avp, AvpFlags};
use crate::dictionary::{AvpType, Dictionary};
use crate::header::{ApplicationId, Header};
use crate::message::{Limits, Message};
use std::fmt::Write;

/// One AVP as shown to a person.
#[derive(Clone, Debug, PartialEq)]
pub struct Described {
    /// Dictionary name, or `None` for an AVP the dictionary does not know.
    pub name: Option<String>,
    pub code: u32,
    pub vendor: u32,
    pub flags: AvpFlags,
    /// The AVP Length field (without padding).
    pub length: usize,
    /// The data type from the dictionary (`None` when unknown).
    pub avp_type: Option<AvpType>,
    /// The value as text (empty for a Grouped AVP): numbers in decimal, enumerations as
    /// `NAME (n)`, times as ISO 8601, addresses as text, octets in hex.
    pub value: String,
    /// Why the value could not be read, if it could not.
    pub error: Option<String>,
    pub members: Vec<Described>,
}

/// Describes every AVP of a message, descending into Grouped AVPs up to the depth limit.
pub fn describe(dict: &Dictionary, msg: &Message) -> Vec<Described> {
    let limits = Limits::default();
    msg.avps
        .iter()
        .map(|a| describe_avp(dict, a, 0, &limits))
        .collect()
}

/// Describes one AVP.
pub fn describe_avp(dict: &Dictionary, avp: &Avp, depth: usize, limits: &Limits) -> Described {
    let def = dict.avp_of(avp);
    let mut d = Described {
        name: def.map(|d| d.name.clone()),
        code: avp.code,
        vendor: avp.vendor(),
        flags: avp.flags,
        length: avp.len(),
        avp_type: def.map(|d| d.avp_type),
        value: String::new(),
        error: None,
        members: Vec::new(),
    };
    let Some(def) = def else {
        d.value = hex(&avp.data);
        return d;
    };
    let text = |r: Result<String, crate::ProtocolError>, d: &mut Described| match r {
        Ok(v) => d.value = v,
        Err(e) => {
            d.value = hex(&avp.data);
            d.error = Some(e.to_string());
        }
    };
    match def.avp_type {
        AvpType::Grouped => {
            if depth + 1 > limits.max_depth {
                d.error = Some(format!("nested deeper than {} levels", limits.max_depth));
            } else {
                match avp.members() {
                    Ok(ms) => {
                        d.members = ms
                            .iter()
                            .map(|m| describe_avp(dict, m, depth + 1, limits))
                            .collect()
                    }
                    Err(e) => d.error = Some(e.to_string()),
                }
            }
        }
        AvpType::OctetString => d.value = hex(&avp.data),
        AvpType::Integer32 => text(avp.i32().map(|v| v.to_string()), &mut d),
        AvpType::Integer64 => text(avp.i64().map(|v| v.to_string()), &mut d),
        AvpType::Unsigned32 => {
            // Application ids read better with their names, as Wireshark shows them.
            let is_app = matches!((avp.code, avp.vendor()), (258 | 259, 0));
            text(
                avp.u32().map(|v| match ApplicationId(v).name() {
                    Some(n) if is_app => format!("{n} ({v})"),
                    _ => v.to_string(),
                }),
                &mut d,
            )
        }
        AvpType::Unsigned64 => text(avp.u64().map(|v| v.to_string()), &mut d),
        AvpType::Float32 => text(avp.f32().map(|v| v.to_string()), &mut d),
        AvpType::Float64 => text(avp.f64().map(|v| v.to_string()), &mut d),
        AvpType::Enumerated => text(
            avp.enumerated()
                .map(|v| format!("{} ({v})", def.item_name(v).unwrap_or("Unknown"))),
            &mut d,
        ),
        AvpType::Time => text(avp.time().map(|t| t.to_string()), &mut d),
        AvpType::Address => text(avp.address().map(|a| a.to_string()), &mut d),
        _ => text(avp.utf8().map(str::to_string), &mut d),
    }
    d
}

/// Lower-case hex of a payload.
pub fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The header as Wireshark prints it.
pub fn header_lines(dict: &Dictionary, h: &Header) -> Vec<String> {
    let cmd = dict
        .command(h.application, h.command)
        .map(|c| c.name.clone())
        .or_else(|| h.command.name().map(str::to_string))
        .unwrap_or_else(|| "Unknown".into());
    let app = h
        .application
        .name()
        .or_else(|| dict.application_name(h.application))
        .unwrap_or("Unknown");
    vec![
        format!("Version: {}", h.version),
        format!("Length: {}", h.length),
        format!("Flags: {:#04x} {}", h.flags.0, h.flags),
        format!(
            "Command Code: {cmd}{} ({})",
            if h.flags.is_request() {
                " Request"
            } else {
                " Answer"
            },
            h.command.0
        ),
        format!("ApplicationId: {app} ({})", h.application.0),
        format!("Hop-by-Hop Identifier: {:#010x}", h.hop_by_hop),
        format!("End-to-End Identifier: {:#010x}", h.end_to_end),
    ]
}

/// The whole message as an indented text tree.
pub fn render(dict: &Dictionary, msg: &Message) -> String {
    let mut out = String::new();
    for l in header_lines(dict, &msg.header) {
        let _ = writeln!(out, "{l}");
    }
    fn walk(out: &mut String, d: &Described, depth: usize) {
        let indent = "    ".repeat(depth + 1);
        let name = d.name.as_deref().unwrap_or("Unknown");
        let vendor = if d.vendor != 0 {
            format!(" v={}", d.vendor)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "{indent}AVP: {name}({}){vendor} l={} f={}",
            d.code, d.length, d.flags
        );
        if d.avp_type != Some(AvpType::Grouped) {
            let _ = write!(out, " val={}", d.value);
        }
        if let Some(e) = &d.error {
            let _ = write!(out, " [error: {e}]");
        }
        out.push('\n');
        for m in &d.members {
            walk(out, m, depth + 1);
        }
    }
    for d in describe(dict, msg) {
        walk(&mut out, &d, 0);
    }
    out
}
