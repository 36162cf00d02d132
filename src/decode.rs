//! `tollgate decode`: reads Diameter messages as hex or raw bytes from a file or stdin and
//! prints each like Wireshark's packet tree, or as JSON with `--json`.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate_codec::describe::{self, Described};
use tollgate_codec::{check_frame, Dictionary, Limits, Message};

#[derive(Args)]
pub struct DecodeArgs {
    /// File to read; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    /// The input is hex text (whitespace ignored). Detected automatically when every
    /// character is a hex digit or whitespace.
    #[arg(long)]
    hex: bool,
    /// Print JSON (one object per message, in an array) instead of a tree.
    #[arg(long)]
    json: bool,
    /// Extra dictionary XML files, loaded after the embedded ones.
    #[arg(long = "dictionary", value_name = "FILE")]
    dictionaries: Vec<PathBuf>,
    /// Wireshark's Diameter dictionary (e.g. /usr/share/wireshark/diameter/dictionary.xml):
    /// names the AVPs and commands ours do not define.
    #[arg(long, value_name = "FILE")]
    wireshark_dictionary: Option<PathBuf>,
}

pub fn run(args: &DecodeArgs) -> anyhow::Result<ExitCode> {
    let raw = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    let dict_owned;
    let dict = if args.dictionaries.is_empty() && args.wireshark_dictionary.is_none() {
        Dictionary::builtin()
    } else {
        dict_owned = crate::config::load_dictionary(
            &args.dictionaries,
            args.wireshark_dictionary.as_deref(),
            "--wireshark-dictionary",
        )?;
        &dict_owned
    };
    let bytes = if args.hex || looks_like_hex(&raw) {
        parse_hex(&raw)?
    } else {
        Bytes::from(raw)
    };
    let limits = Limits::default();
    let mut rest = bytes;
    let mut outputs = Vec::new();
    let mut failed = false;
    while !rest.is_empty() {
        let len = match check_frame(&rest, limits.max_message_len) {
            Ok(Some(n)) => n,
            Ok(None) => bail!(
                "input ends inside a message: {} octets left, the header announces more",
                rest.len()
            ),
            Err(e) => bail!("cannot frame the input: {e}"),
        };
        let frame = rest.split_to(len);
        match Message::decode_with(&frame, &limits) {
            Ok(msg) => {
                let check = dict.validate(&msg, &limits).err();
                if args.json {
                    outputs.push(to_json(dict, &msg, check.as_ref()));
                } else {
                    print!("{}", describe::render(dict, &msg));
                    if let Some(e) = &check {
                        println!("    [validation: {} ({})]", e, e.result_code());
                    }
                    println!();
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    outputs.push(json!({"error": e.to_string(), "result_code": e.result_code().0}));
                } else {
                    println!("undecodable message: {e} ({})\n", e.result_code());
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(outputs))?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::stdin()
        .read_to_end(&mut v)
        .context("cannot read standard input")?;
    Ok(v)
}

fn looks_like_hex(raw: &[u8]) -> bool {
    raw.iter().any(|b| !b.is_ascii_whitespace())
        && raw
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
}

fn parse_hex(raw: &[u8]) -> anyhow::Result<Bytes> {
    let digits: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let v = hex::decode(&digits)
        .context("input is not valid hex: use an even number of 0-9a-f digits, or raw bytes")?;
    Ok(Bytes::from(v))
}

fn to_json(
    dict: &Dictionary,
    msg: &Message,
    check: Option<&tollgate_codec::ProtocolError>,
) -> Value {
    let h = msg.header;
    json!({
        "header": {
            "version": h.version,
            "length": h.length,
            "flags": h.flags.0,
            "request": h.flags.is_request(),
            "proxiable": h.flags.is_proxiable(),
            "error": h.flags.is_error(),
            "retransmitted": h.flags.is_retransmitted(),
            "command_code": h.command.0,
            "command": dict.command(h.application, h.command).map(|c| c.name.clone()),
            "application_id": h.application.0,
            "hop_by_hop": h.hop_by_hop,
            "end_to_end": h.end_to_end,
        },
        "avps": describe::describe(dict, msg).iter().map(avp_json).collect::<Vec<_>>(),
        "validation": check.map(|e| json!({"result_code": e.result_code().0, "error": e.to_string()})),
    })
}

fn avp_json(d: &Described) -> Value {
    let mut v = json!({
        "name": d.name,
        "code": d.code,
        "vendor": d.vendor,
        "flags": d.flags.to_string(),
        "length": d.length,
        "type": d.avp_type.map(|t| t.name()),
    });
    if d.members.is_empty() {
        v["value"] = json!(d.value);
    } else {
        v["avps"] = Value::Array(d.members.iter().map(avp_json).collect());
    }
    if let Some(e) = &d.error {
        v["error"] = json!(e);
    }
    v
}
