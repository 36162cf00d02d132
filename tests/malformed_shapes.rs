//! Malformed Diameter over TCP against the spawned `tollgate serve`: more than fifty shapes
//! of broken or unusual frames (bad headers, lengths and flags; AVPs overrunning their message
//! or their group; wrong lengths for their type; missing, repeated and misplaced AVPs; bad
//! values; deep nesting; unknown commands and applications; floods of tiny frames; base
//! messages with missing parts). Each gets the answer RFC 6733 §7 gives it (Result-Code, and
//! the E bit for 3xxx), or a clean close when the stream cannot be read on; after each, a
//! fresh connection still completes CER/CEA, and at the end a valid CCR is still charged. Both
//! stores.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tollgate_codec::{Avp, CommandCode, Message, ResultCode};
use tollgate_peer::testing::RawPeer;

const HOST: &str = "shapes.test";

/// What a shape must get.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An answer with this Result-Code (and the E bit when it is 3xxx).
    Code(u32),
    /// The connection closes; an answer before the close, if any, carries this code.
    Close(Option<u32>),
    /// Nothing within a second, and the connection still answers a DWR.
    Silent,
}

// ---- raw building blocks ----------------------------------------------------------------

fn pad(n: usize) -> usize {
    (n + 3) & !3
}

/// An AVP's bytes: header (with the vendor id when `vendor` is set), data, zero padding.
fn raw_avp(code: u32, flags: u8, vendor: Option<u32>, data: &[u8]) -> Vec<u8> {
    let hdr = if vendor.is_some() { 12 } else { 8 };
    let len = hdr + data.len();
    let mut b = code.to_be_bytes().to_vec();
    let flags = if vendor.is_some() {
        flags | 0x80
    } else {
        flags
    };
    b.push(flags);
    b.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    if let Some(v) = vendor {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(data);
    b.resize(pad(b.len()), 0);
    b
}

fn utf8(code: u32, s: &str) -> Vec<u8> {
    raw_avp(code, 0x40, None, s.as_bytes())
}

fn u32avp(code: u32, v: u32) -> Vec<u8> {
    raw_avp(code, 0x40, None, &v.to_be_bytes())
}

/// A message: header (version 1 unless changed) and the AVP bytes; the length is the real one
/// unless `length` says otherwise.
struct Raw {
    version: u8,
    flags: u8,
    command: u32,
    application: u32,
    hop: u32,
    length: Option<u32>,
    avps: Vec<u8>,
}

impl Raw {
    fn ccr(session: &str, avps: Vec<Vec<u8>>) -> Raw {
        let mut body = utf8(263, session);
        for a in avps {
            body.extend(a);
        }
        Raw {
            version: 1,
            flags: 0xc0,
            command: 272,
            application: 4,
            hop: 0x5eed,
            length: None,
            avps: body,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let len = self.length.unwrap_or(20 + self.avps.len() as u32);
        let mut b = vec![self.version];
        b.extend_from_slice(&len.to_be_bytes()[1..]);
        b.push(self.flags);
        b.extend_from_slice(&self.command.to_be_bytes()[1..]);
        b.extend_from_slice(&self.application.to_be_bytes());
        b.extend_from_slice(&self.hop.to_be_bytes());
        b.extend_from_slice(&self.hop.to_be_bytes());
        b.extend_from_slice(&self.avps);
        b
    }
}

/// The AVPs of a valid CCR-E (CHECK_BALANCE) after its Session-Id.
fn event_avps() -> Vec<Vec<u8>> {
    vec![
        utf8(264, HOST),
        utf8(296, "test"),
        utf8(283, "test"),
        u32avp(258, 4),
        utf8(461, "32260@3gpp.org"),
        u32avp(416, 4),
        u32avp(415, 0),
        u32avp(436, 2),
        subscription(0, "15550000001").to_bytes_vec(),
    ]
}

trait AvpBytes {
    fn to_bytes_vec(&self) -> Vec<u8>;
}

impl AvpBytes for Avp {
    fn to_bytes_vec(&self) -> Vec<u8> {
        let m = Message::request(
            CommandCode::CREDIT_CONTROL,
            tollgate_codec::ApplicationId::COMMON,
            false,
        )
        .with(self.clone());
        m.to_bytes()[20..].to_vec()
    }
}

/// A CCR-E with `change` applied to its AVP list (after Session-Id).
fn event_with(session: &str, change: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let mut avps = event_avps();
    change(&mut avps);
    Raw::ccr(session, avps).bytes()
}

fn grouped(code: u32, members: &[Vec<u8>]) -> Vec<u8> {
    raw_avp(code, 0x40, None, &members.concat())
}

fn dwr(avps: &[Vec<u8>]) -> Vec<u8> {
    Raw {
        version: 1,
        flags: 0x80,
        command: 280,
        application: 0,
        hop: 0xd00d,
        length: None,
        avps: avps.concat(),
    }
    .bytes()
}

// ---- the shapes -------------------------------------------------------------------------

fn shapes() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let mut v: Vec<(&'static str, Vec<u8>, Expect)> = Vec::new();
    let valid = || event_with("shape;valid", |_| {});
    v.push(("a valid CHECK_BALANCE event (control)", valid(), Code(2001)));

    // Headers.
    let mut b = valid();
    b[0] = 0;
    v.push(("version 0", b, Code(5011)));
    let mut b = valid();
    b[0] = 2;
    v.push(("version 2", b, Code(5011)));
    let mut b = valid();
    b[1..4].copy_from_slice(&[0, 0, 12]);
    v.push(("length 12, under a header", b, Close(Some(5015))));
    let mut b = valid();
    let l = b.len() as u32 + 2;
    b[1..4].copy_from_slice(&l.to_be_bytes()[1..]);
    v.push(("length not a multiple of 4", b, Close(Some(5015))));
    let mut b = valid();
    b[1..4].copy_from_slice(&[0xff, 0xff, 0xfc]);
    v.push(("length of 16 MiB", b, Close(Some(5015))));
    let mut b = valid();
    b[4] |= 0x0f;
    // RFC 6733 §7.1.5: a reserved bit set is 5013 DIAMETER_INVALID_BIT_IN_HEADER.
    v.push(("reserved header flags set", b, Code(5013)));
    let mut b = valid();
    b[4] |= 0x20;
    v.push(("E bit on a request", b, Code(3008)));
    let mut b = valid();
    b[4] &= !0x80;
    v.push(("an answer nobody asked for", b, Silent));
    let mut r = Raw::ccr("shape;cmd", event_avps());
    r.command = 999;
    v.push(("unknown command code", r.bytes(), Code(3001)));
    let mut r = Raw::ccr("shape;app", event_avps());
    r.application = 16_777_999;
    v.push(("application not negotiated", r.bytes(), Code(3007)));
    let mut r = Raw::ccr("shape;app0", event_avps());
    r.application = 0;
    // The base application has no command 272 (RFC 6733 §7.1.3: 3001).
    v.push((
        "credit control under the base application",
        r.bytes(),
        Code(3001),
    ));
    let mut r = Raw::ccr("shape;hdr", vec![]);
    r.avps.clear();
    v.push(("a CCR with no AVP at all", r.bytes(), Code(5005)));

    // AVP lengths.
    v.push((
        "AVP length under its header",
        event_with("shape;l1", |a| a.push(vec![0, 0, 1, 0x2c, 0x40, 0, 0, 4])),
        Code(5014),
    ));
    v.push((
        "AVP overrunning the message",
        event_with("shape;l2", |a| {
            a.push(vec![0, 0, 1, 0x2c, 0x40, 0, 0x10, 0])
        }),
        Code(5014),
    ));
    v.push((
        "Unsigned32 of 3 octets",
        event_with("shape;l3", |a| a[5] = raw_avp(416, 0x40, None, &[0, 0, 4])),
        Code(5014),
    ));
    v.push((
        "Unsigned32 of 8 octets",
        event_with("shape;l4", |a| a[6] = raw_avp(415, 0x40, None, &[0; 8])),
        Code(5014),
    ));
    v.push((
        "V bit with no room for the vendor id",
        event_with("shape;l5", |a| a.push(vec![0, 0, 3, 0x6c, 0xc0, 0, 0, 8])),
        Code(5014),
    ));
    v.push((
        "Time of 2 octets",
        event_with("shape;l6", |a| a.push(raw_avp(55, 0x40, None, &[0, 1]))),
        Code(5014),
    ));
    v.push((
        "Grouped member overrunning its group",
        event_with("shape;g1", |a| {
            let mut g = grouped(443, &[u32avp(450, 0), utf8(444, "15550000001")]);
            g[7] = 12; // the group says 12 octets: its second member no longer fits
            a[8] = g;
        }),
        Code(5014),
    ));
    v.push((
        "Grouped AVP with a truncated member",
        event_with("shape;g2", |a| {
            a[8] = raw_avp(443, 0x40, None, &[0, 0, 1, 0xc2, 0x40, 0, 0, 12, 0, 0]);
        }),
        Code(5014),
    ));

    // Presence, repetition, position.
    for (name, idx) in [
        ("missing Origin-Host", 0usize),
        ("missing Origin-Realm", 1),
        ("missing Destination-Realm", 2),
        ("missing Auth-Application-Id", 3),
        ("missing Service-Context-Id", 4),
        ("missing CC-Request-Type", 5),
        ("missing CC-Request-Number", 6),
    ] {
        v.push((
            name,
            event_with("shape;m", |a| {
                a.remove(idx);
            }),
            Code(5005),
        ));
    }
    v.push((
        "no Session-Id",
        Raw {
            avps: event_avps().concat(),
            ..Raw::ccr("x", vec![])
        }
        .bytes(),
        Code(5005),
    ));
    v.push((
        "two Session-Ids",
        event_with("shape;d1", |a| a.push(utf8(263, "shape;d1b"))),
        Code(5009),
    ));
    v.push((
        "two CC-Request-Numbers",
        event_with("shape;d2", |a| a.push(u32avp(415, 1))),
        Code(5009),
    ));
    v.push((
        "two Origin-Hosts",
        event_with("shape;d3", |a| a.push(utf8(264, "other.test"))),
        Code(5009),
    ));
    v.push((
        "Session-Id not first",
        {
            let mut avps = event_avps();
            avps.insert(2, utf8(263, "shape;late"));
            Raw {
                avps: avps.concat(),
                ..Raw::ccr("x", vec![])
            }
            .bytes()
        },
        Code(5008),
    ));

    // Values.
    v.push((
        "CC-Request-Type 9",
        event_with("shape;v1", |a| a[5] = u32avp(416, 9)),
        Code(5004),
    ));
    v.push((
        "Requested-Action 7",
        event_with("shape;v2", |a| a[7] = u32avp(436, 7)),
        Code(5004),
    ));
    v.push((
        "Origin-Host that is not UTF-8",
        event_with("shape;v3", |a| {
            a[0] = raw_avp(264, 0x40, None, &[0xff, 0xfe, 0x41])
        }),
        Code(5004),
    ));
    v.push((
        "Subscription-Id-Type 99",
        event_with("shape;v4", |a| {
            a[8] = grouped(443, &[u32avp(450, 99), utf8(444, "15550000001")]);
        }),
        Code(5004),
    ));
    v.push((
        "an IPv4 Address of 2 octets",
        event_with("shape;v5", |a| {
            a.push(raw_avp(257, 0x40, None, &[0, 1, 10, 0]));
        }),
        Code(5014),
    ));
    v.push((
        "unknown M-bit AVP",
        event_with("shape;u1", |a| {
            a.push(raw_avp(999_999, 0x40, None, &[1, 2, 3, 4]))
        }),
        Code(5001),
    ));
    v.push((
        "unknown M-bit vendor AVP",
        event_with("shape;u2", |a| {
            a.push(raw_avp(4242, 0x40, Some(99_999), &[1]))
        }),
        Code(5001),
    ));
    v.push((
        "unknown AVP without the M bit",
        event_with("shape;u3", |a| {
            a.push(raw_avp(999_998, 0x00, None, &[1, 2, 3, 4]))
        }),
        Code(2001),
    ));
    v.push((
        "non-zero padding",
        event_with("shape;p1", |a| {
            let mut o = raw_avp(264, 0x40, None, b"shapes.test");
            let n = o.len();
            o[n - 1] = 0xaa;
            a[0] = o;
        }),
        Code(2001),
    ));
    v.push((
        "Grouped nested past the depth limit",
        event_with("shape;n1", |a| {
            let mut g = u32avp(432, 1);
            for _ in 0..40 {
                g = grouped(456, &[g]);
            }
            a.push(g);
        }),
        // Our limit, not a grammar: 5012 with an Error-Message that names it.
        Code(5012),
    ));
    v.push((
        "ten thousand AVPs",
        event_with("shape;f1", |a| {
            for _ in 0..10_000 {
                a.push(raw_avp(999_997, 0x00, None, &[0; 4]));
            }
        }),
        Code(5012),
    ));

    // Base protocol messages with parts missing or wrong.
    v.push((
        "DWR without Origin-Host",
        dwr(&[utf8(296, "test")]),
        Code(5005),
    ));
    v.push((
        "DWR without Origin-Realm",
        dwr(&[utf8(264, HOST)]),
        Code(5005),
    ));
    v.push((
        "DWR with an unknown M-bit AVP",
        dwr(&[
            utf8(264, HOST),
            utf8(296, "test"),
            raw_avp(999_999, 0x40, None, &[0; 4]),
        ]),
        Code(5001),
    ));
    v.push((
        "DPR without Disconnect-Cause",
        Raw {
            version: 1,
            flags: 0x80,
            command: 282,
            application: 0,
            hop: 7,
            length: None,
            avps: [utf8(264, HOST), utf8(296, "test")].concat(),
        }
        .bytes(),
        Code(5005),
    ));
    v.push((
        "a second CER without Origin-Host",
        Raw {
            version: 1,
            flags: 0x80,
            command: 257,
            application: 0,
            hop: 8,
            length: None,
            avps: [
                utf8(296, "test"),
                u32avp(266, 0),
                raw_avp(269, 0x00, None, b"x"),
            ]
            .concat(),
        }
        .bytes(),
        Code(5005),
    ));
    v.push((
        "bytes that are not Diameter",
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        Close(None),
    ));
    v.push((
        "a header and nothing after it",
        valid()[..20].to_vec(),
        Silent,
    ));
    v
}

async fn outcome(p: &mut RawPeer, expect: Expect) -> Result<(), String> {
    match expect {
        Expect::Code(code) => {
            let a = p.recv().await.ok_or("closed instead of answering")?;
            let got = a.result_code().map(|c| c.0);
            if got != Some(code) {
                return Err(format!("Result-Code {got:?}, expected {code}: {a:?}"));
            }
            let e_bit = a.header.flags.is_error();
            if ResultCode(code).is_protocol_error() != e_bit {
                return Err(format!("E bit {e_bit} with {code}"));
            }
            Ok(())
        }
        Expect::Close(code) => {
            let first = tokio::time::timeout(Duration::from_secs(5), p.recv()).await;
            match (first, code) {
                (Ok(None), _) => Ok(()),
                (Ok(Some(a)), Some(c)) if a.result_code() == Some(ResultCode(c)) => {
                    if p.closed().await {
                        Ok(())
                    } else {
                        Err("answered but did not close".into())
                    }
                }
                (Ok(Some(a)), _) => {
                    Err(format!("answered {:?} instead of closing", a.result_code()))
                }
                (Err(_), _) => Err("neither answered nor closed within 5 s".into()),
            }
        }
        Expect::Silent => {
            let first = tokio::time::timeout(Duration::from_secs(1), p.recv()).await;
            if let Ok(got) = first {
                return Err(format!("expected silence, got {got:?}"));
            }
            Ok(())
        }
    }
}

async fn run(backend: Backend) {
    let Some(store) = Store::new(backend).await else {
        return;
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let shapes = shapes();
    assert!(shapes.len() >= 50, "{} shapes", shapes.len());
    let mut failures = Vec::new();
    for (i, (name, bytes, expect)) in shapes.iter().enumerate() {
        // A fresh connection and CER/CEA each time, as a peer of its own: the last one's
        // close may still be on its way (one connection per peer, RFC 6733 §5.6.4).
        let mut p = RawPeer::open(server.diameter, &format!("shape{i}.test")).await;
        // Each shape its own End-to-End id, so none is a retransmission of another (§6.1.4).
        let mut bytes = bytes.clone();
        if bytes.len() >= 20 {
            bytes[16..20].copy_from_slice(&(0x1000 + i as u32).to_be_bytes());
        }
        p.s.write_all(&bytes).await.unwrap();
        if let Err(e) = outcome(&mut p, *expect).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    // A flood of tiny frames: 2000 DWRs in one write, 2000 DWAs back.
    let mut p = RawPeer::open(server.diameter, "flood.test").await;
    let one = dwr(&[utf8(264, HOST), utf8(296, "test")]);
    p.s.write_all(&one.repeat(2000)).await.unwrap();
    for i in 0..2000 {
        match p.recv().await {
            Some(a) if a.result_code() == Some(ResultCode::SUCCESS) => {}
            other => {
                failures.push(format!("DWR flood: answer {i} was {other:?}"));
                break;
            }
        }
    }
    // Still serving: a fresh connection charges a valid CCR.
    let mut p = RawPeer::open(server.diameter, "after.test").await;
    let m = p.ccr("shape;after").with(subscription(0, "15550000001"));
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert!(
        failures.is_empty(),
        "{} of {} shapes:\n{}",
        failures.len(),
        shapes.len(),
        failures.join("\n")
    );
    store.verify();
    server.stop();
    store.drop_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_shapes_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_shapes_on_postgres() {
    run(Backend::Postgres).await;
}
