//! Decode, validate and re-encode a typical Ro CCR-I (29 AVPs: MSCC, Subscription-Id,
//! Service-Information with IMS-Information and the OMA IM containers), and in the same run
//! do the same with the `diameter` crate (diameter-rs) on the same bytes, with our dictionary
//! files loaded into it so both decode every grouped AVP.
//!
//! Run: `cargo bench -p tollgate-codec --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::io::Cursor;
use std::sync::Arc;
use tollgate_codec::{Dictionary, Limits, Message};

const CCR_I_HEX: &str = include_str!("ro-ccr-i.hex");

fn frame() -> Bytes {
    Bytes::from(hex::decode(CCR_I_HEX.trim()).expect("benches/ro-ccr-i.hex is hex"))
}

fn tollgate(c: &mut Criterion) {
    let bytes = frame();
    let dict = Dictionary::builtin();
    let limits = Limits::default();
    let mut out = BytesMut::with_capacity(4096);
    let mut g = c.benchmark_group("ro-ccr-i");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tollgate decode+validate+encode", |b| {
        b.iter(|| {
            let m = Message::decode_with(black_box(&bytes), &limits).expect("decodes");
            dict.validate(&m, &limits).expect("valid");
            out.clear();
            m.encode(&mut out);
            black_box(out.len())
        })
    });
    // The same work diameter-rs does (decode and re-encode, no grammar validation).
    g.bench_function("tollgate decode+encode", |b| {
        b.iter(|| {
            let m = Message::decode_with(black_box(&bytes), &limits).expect("decodes");
            out.clear();
            m.encode(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("tollgate decode only", |b| {
        b.iter(|| black_box(Message::decode_with(black_box(&bytes), &limits).expect("decodes")))
    });

    let xml: Vec<&str> = tollgate_codec::dictionary::BUILTIN
        .iter()
        .map(|(_, t)| *t)
        .collect();
    let mut sources: Vec<&str> = vec![&diameter::dictionary::DEFAULT_DICT_XML];
    sources.extend(xml.iter().skip(1));
    let rs_dict = Arc::new(diameter::dictionary::Dictionary::new(&sources));
    let raw = bytes.to_vec();
    let mut rs_out = Vec::with_capacity(4096);
    g.bench_function("diameter-rs decode+encode", |b| {
        b.iter(|| {
            let mut cur = Cursor::new(black_box(&raw));
            let m = diameter::DiameterMessage::decode_from(&mut cur, Arc::clone(&rs_dict))
                .expect("diameter-rs decodes");
            rs_out.clear();
            m.encode_to(&mut rs_out).expect("diameter-rs encodes");
            black_box(rs_out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, tollgate);
criterion_main!(benches);
