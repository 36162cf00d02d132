//! Runs one codec path N times on the benchmark's Ro CCR-I, for instruction counting with
//! `valgrind --tool=callgrind` (repeatable under any machine load, unlike wall time):
//!
//! ```sh
//! cargo build --release -p tollgate-codec --example codec_work
//! valgrind --tool=callgrind target/release/examples/codec_work tollgate 10000
//! valgrind --tool=callgrind target/release/examples/codec_work diameter-rs 10000
//! ```
//! Paths: `tollgate` (decode + validate + encode), `decode-encode`, `decode` (decode only),
//! `diameter-rs`
//! (decode + encode with our dictionaries loaded into it).

use bytes::{Bytes, BytesMut};
use std::io::Cursor;
use std::sync::Arc;
use tollgate_codec::{Dictionary, Limits, Message};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("tollgate");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let hex_text = include_str!("../benches/ro-ccr-i.hex");
    let bytes = Bytes::from(hex::decode(hex_text.trim()).expect("hex"));
    let limits = Limits::default();
    let mut total = 0usize;
    match path {
        "tollgate" | "decode" | "decode-encode" => {
            let dict = Dictionary::builtin();
            let mut out = BytesMut::with_capacity(4096);
            for _ in 0..n {
                let m =
                    Message::decode_with(std::hint::black_box(&bytes), &limits).expect("decodes");
                if path == "tollgate" {
                    dict.validate(&m, &limits).expect("valid");
                }
                if path != "decode" {
                    out.clear();
                    m.encode(&mut out);
                    total += out.len();
                } else {
                    total += m.avps.len();
                }
            }
        }
        "diameter-rs" => {
            let mut sources: Vec<&str> = vec![&diameter::dictionary::DEFAULT_DICT_XML];
            sources.extend(
                tollgate_codec::dictionary::BUILTIN
                    .iter()
                    .skip(1)
                    .map(|(_, t)| *t),
            );
            let dict = Arc::new(diameter::dictionary::Dictionary::new(&sources));
            let raw = bytes.to_vec();
            let mut out = Vec::with_capacity(4096);
            for _ in 0..n {
                let mut cur = Cursor::new(std::hint::black_box(&raw));
                let m = diameter::DiameterMessage::decode_from(&mut cur, Arc::clone(&dict))
                    .expect("decodes");
                out.clear();
                m.encode_to(&mut out).expect("encodes");
                total += out.len();
            }
        }
        other => {
            eprintln!("unknown path {other}: use tollgate, decode-encode, decode or diameter-rs");
            std::process::exit(2);
        }
    }
    println!("{path}: {n} iterations, {total}");
}
