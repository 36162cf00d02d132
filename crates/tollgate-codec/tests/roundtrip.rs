//! Property tests: every data type and random grouped trees survive encode → decode, and
//! decoding arbitrary bytes never panics.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use bytes::Bytes;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use tollgate_codec::{
    check_frame, Address, ApplicationId, Avp, AvpCode, CommandCode, Dictionary, Limits, Message,
    Time,
};

const CODE: AvpCode = AvpCode::new(7777, 0, false);

fn one(avp: Avp) -> Avp {
    let m = Message::request(CommandCode(1), ApplicationId(1), true).with(avp);
    let back = Message::decode(&m.to_bytes()).unwrap();
    assert_eq!(back.avps.len(), 1);
    back.avps[0].clone()
}

proptest! {
    #[test]
    fn integers_and_floats(a: i32, b: i64, c: u32, d: u64, e: f32, f: f64) {
        prop_assert_eq!(one(Avp::from_i32(CODE, a)).i32().unwrap(), a);
        prop_assert_eq!(one(Avp::from_i64(CODE, b)).i64().unwrap(), b);
        prop_assert_eq!(one(Avp::from_u32(CODE, c)).u32().unwrap(), c);
        prop_assert_eq!(one(Avp::from_u64(CODE, d)).u64().unwrap(), d);
        prop_assert_eq!(one(Avp::from_f32(CODE, e)).f32().unwrap().to_bits(), e.to_bits());
        prop_assert_eq!(one(Avp::from_f64(CODE, f)).f64().unwrap().to_bits(), f.to_bits());
        prop_assert_eq!(one(Avp::from_enum(CODE, a)).enumerated().unwrap(), a);
    }

    #[test]
    fn strings_octets_and_identities(s in "\\PC*", o in proptest::collection::vec(any::<u8>(), 0..300)) {
        let back = one(Avp::from_str(CODE, &s));
        prop_assert_eq!(back.utf8().unwrap(), s.as_str());
        let back = one(Avp::new(CODE, o.clone()));
        prop_assert_eq!(back.octets().as_ref(), o.as_slice());
        let ident = "peer.example.org";
        let back = one(Avp::from_str(CODE, ident));
        prop_assert_eq!(back.utf8().unwrap(), ident);
        let uri = "aaa://ocs.example.org:3868;transport=tcp;protocol=diameter";
        let back = one(Avp::from_str(CODE, uri));
        prop_assert_eq!(back.utf8().unwrap(), uri);
        let rule = "permit out ip from 10.0.0.1 to any";
        let back = one(Avp::from_str(CODE, rule));
        prop_assert_eq!(back.utf8().unwrap(), rule);
    }

    #[test]
    fn addresses(v4: [u8; 4], v6: [u8; 16], fam in 3u16.., other in proptest::collection::vec(any::<u8>(), 0..20)) {
        for a in [
            Address::V4(Ipv4Addr::from(v4)),
            Address::V6(Ipv6Addr::from(v6)),
            Address::Other { family: fam, address: Bytes::from(other.clone()) },
        ] {
            prop_assert_eq!(one(Avp::from_address(CODE, &a)).address().unwrap(), a);
        }
    }

    // RFC 2030 §3 (adopted by RFC 6733 §4.3.1): the two eras cover 1968-01-20T03:14:08Z
    // (Unix −61 505 152, NTP 0x80000000) to 2104.
    #[test]
    fn times_between_1968_and_2104(unix in -61_505_152i64..4_200_000_000i64) {
        let t = Time::from_unix(unix);
        prop_assert_eq!(one(Avp::from_time(CODE, t)).time().unwrap().unix(), unix);
    }

    #[test]
    fn vendor_and_flags_survive(code: u32, vendor in 1u32.., m: bool) {
        let k = AvpCode::new(code, vendor, m);
        let back = one(Avp::from_u32(k, 1));
        prop_assert!(back.is(k));
        prop_assert_eq!(back.flags.is_mandatory(), m);
    }

    #[test]
    fn random_grouped_trees(tree in arb_tree()) {
        let m = Message::request(CommandCode(1), ApplicationId(1), true).with(build(&tree));
        let bytes = m.to_bytes();
        let back = Message::decode(&bytes).unwrap();
        prop_assert!(same(&tree, &back.avps[0]));
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let b = Bytes::from(data);
        let _ = check_frame(&b, 1 << 20);
        if let Ok(m) = Message::decode(&b) {
            let _ = Dictionary::builtin().validate(&m, &Limits::default());
            let _ = tollgate_codec::describe::render(Dictionary::builtin(), &m);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(flip in proptest::collection::vec((0usize..200, any::<u8>()), 1..6)) {
        let m = Message::request(CommandCode::CREDIT_CONTROL, ApplicationId::CREDIT_CONTROL, true)
            .with(Avp::from_str(tollgate_codec::codes::SESSION_ID, "a;b;c"))
            .with(Avp::grouped(tollgate_codec::codes::SUBSCRIPTION_ID, &[
                Avp::from_enum(tollgate_codec::codes::SUBSCRIPTION_ID_TYPE, 0),
                Avp::from_str(tollgate_codec::codes::SUBSCRIPTION_ID_DATA, "1555"),
            ]));
        let mut v = m.to_bytes().to_vec();
        for (i, b) in flip {
            let n = v.len();
            v[i % n] = b;
        }
        let b = Bytes::from(v);
        if let Ok(m) = Message::decode(&b) {
            let _ = Dictionary::builtin().validate(&m, &Limits::default());
            let _ = tollgate_codec::describe::render(Dictionary::builtin(), &m);
        }
    }
}

#[derive(Debug, Clone)]
enum Tree {
    Leaf(u32, u32, Vec<u8>),
    Group(u32, u32, Vec<Tree>),
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    let leaf = (
        any::<u32>(),
        0u32..3,
        proptest::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(c, v, d)| Tree::Leaf(c, v * 10415, d));
    leaf.prop_recursive(5, 64, 6, |inner| {
        (
            any::<u32>(),
            0u32..3,
            proptest::collection::vec(inner, 0..6),
        )
            .prop_map(|(c, v, kids)| Tree::Group(c, v * 10415, kids))
    })
}

fn build(t: &Tree) -> Avp {
    match t {
        Tree::Leaf(c, v, d) => Avp::new(AvpCode::new(*c, *v, true), d.clone()),
        Tree::Group(c, v, kids) => {
            let members: Vec<Avp> = kids.iter().map(build).collect();
            Avp::grouped(AvpCode::new(*c, *v, true), &members)
        }
    }
}

fn same(t: &Tree, a: &Avp) -> bool {
    match t {
        Tree::Leaf(c, v, d) => a.code == *c && a.vendor() == *v && a.data.as_ref() == d.as_slice(),
        Tree::Group(c, v, kids) => {
            let Ok(ms) = a.members() else { return false };
            a.code == *c
                && a.vendor() == *v
                && ms.len() == kids.len()
                && kids.iter().zip(&ms).all(|(k, m)| same(k, m))
        }
    }
}
