//! The peer layer of the spawned `tollgate serve` over real TCP: capabilities exchange,
//! watchdog, disconnect, every error answer, duplicate detection, split frames, an oversized
//! length, garbage and a silent peer — with a second peer served throughout.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use bytes::BytesMut;
use common::*;
use tokio::io::AsyncWriteExt;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, AvpCode, CommandCode, Flags, Message, ResultCode};
use tollgate_peer::testing::RawPeer;

async fn server() -> (Store, Server) {
    let store = Store::new(Backend::Sqlite).await.unwrap();
    provision(&store, "10.00");
    let cfg = store.dir.join("tollgate.toml");
    std::fs::write(&cfg, "[diameter]\ncer_timeout_ms = 500\n").unwrap();
    let server = Server::start(&store, &["--config", cfg.to_str().unwrap()]);
    (store, server)
}

/// A CHECK_BALANCE event for the test subscriber: answered without changing money.
fn check_balance(p: &mut RawPeer, session: &str) -> Message {
    let mut m = p.ccr(session);
    m.push(subscription(0, "15550000001"));
    m
}

#[tokio::test]
async fn capabilities_watchdog_disconnect_and_error_answers() {
    let (store, server) = server().await;
    let mut other = RawPeer::open(server.diameter, "other.test").await;

    let mut p = RawPeer::connect(server.diameter, "client.test").await;
    let cea = p.ask(p.cer(&[4])).await;
    assert_eq!(cea.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(cea.origin_host(), Some("ocs.test"));

    let mut dwr = Message::request(CommandCode::DEVICE_WATCHDOG, ApplicationId::COMMON, false)
        .with(Avp::from_str(ORIGIN_HOST, "client.test"))
        .with(Avp::from_str(ORIGIN_REALM, "test"));
    dwr.header.hop_by_hop = 77;
    let dwa = p.ask(dwr).await;
    assert_eq!(
        (dwa.header.hop_by_hop, dwa.result_code()),
        (77, Some(ResultCode::SUCCESS))
    );

    let ok = check_balance(&mut p, "client.test;e2e;ok");
    assert_eq!(p.ask(ok).await.result_code(), Some(ResultCode::SUCCESS));

    let mut m = check_balance(&mut p, "client.test;e2e;3007");
    m.header.application = ApplicationId(5);
    let a = p.ask(m.clone()).await;
    assert_eq!(a.result_code(), Some(ResultCode::APPLICATION_UNSUPPORTED));
    assert!(a.header.flags.is_error());
    assert_eq!(
        (a.header.hop_by_hop, a.header.end_to_end),
        (m.header.hop_by_hop, m.header.end_to_end)
    );

    let mut m = check_balance(&mut p, "client.test;e2e;3001");
    m.header.command = CommandCode(999);
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::COMMAND_UNSUPPORTED)
    );

    let mut m = check_balance(&mut p, "client.test;e2e;5005");
    m.avps.retain(|a| !a.is(SERVICE_CONTEXT_ID));
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::MISSING_AVP));
    assert!(a.find(FAILED_AVP).unwrap().members().unwrap()[0].is(SERVICE_CONTEXT_ID));

    let m =
        check_balance(&mut p, "client.test;e2e;5001").with(Avp::from_u32(AvpCode::base(99999), 1));
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::AVP_UNSUPPORTED));
    assert_eq!(
        a.find(FAILED_AVP).unwrap().members().unwrap()[0].code,
        99999
    );

    let m = check_balance(&mut p, "client.test;e2e;5014");
    let mut raw = BytesMut::from(m.to_bytes().as_ref());
    let n = raw.len();
    raw[n - 40 + 7] = 0xff; // inside the trailing Subscription-Id group: a length past the end
    p.s.write_all(&raw).await.unwrap();
    let a = p.recv().await.unwrap();
    assert!(
        matches!(a.result_code(), Some(ResultCode::INVALID_AVP_LENGTH)),
        "{a:?}"
    );
    assert_eq!(a.header.hop_by_hop, m.header.hop_by_hop);

    let mut m = check_balance(&mut p, "client.test;e2e;3008");
    m.header.flags = Flags(Flags::REQUEST | Flags::PROXIABLE | Flags::ERROR);
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::INVALID_HDR_BITS)
    );

    let mut m = check_balance(&mut p, "client.test;e2e;3003");
    m.avps.retain(|a| !a.is(DESTINATION_REALM));
    m.push(Avp::from_str(DESTINATION_REALM, "elsewhere"));
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::REALM_NOT_SERVED)
    );
    let m = check_balance(&mut p, "client.test;e2e;3002")
        .with(Avp::from_str(DESTINATION_HOST, "elsewhere.test"));
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::UNABLE_TO_DELIVER)
    );

    let dpr = Message::request(CommandCode::DISCONNECT_PEER, ApplicationId::COMMON, false)
        .with(Avp::from_str(ORIGIN_HOST, "client.test"))
        .with(Avp::from_str(ORIGIN_REALM, "test"))
        .with(Avp::from_enum(DISCONNECT_CAUSE, 0));
    let dpa = p.ask(dpr).await;
    assert_eq!(
        (dpa.header.command, dpa.result_code()),
        (CommandCode::DISCONNECT_PEER, Some(ResultCode::SUCCESS))
    );

    let m = check_balance(&mut other, "other.test;e2e;still");
    assert_eq!(other.ask(m).await.result_code(), Some(ResultCode::SUCCESS));
    server.stop();
    store.drop_store().await;
}

#[tokio::test]
async fn a_duplicate_is_answered_again_and_charged_once() {
    let (store, server) = server().await;
    let mut p = RawPeer::open(server.diameter, "client.test").await;
    let mut m = p.ccr("client.test;e2e;dup");
    m.avps.retain(|a| !a.is(REQUESTED_ACTION));
    m.push(Avp::from_enum(REQUESTED_ACTION, 0));
    m.push(subscription(0, "15550000001"));
    m.push(mscc(
        None,
        Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 2)),
        None,
        None,
    ));
    let first = p.ask(m.clone()).await;
    assert_eq!(first.result_code(), Some(ResultCode::SUCCESS));
    let mut again = m.clone();
    again.header.flags = again.header.flags.with(Flags::RETRANSMITTED, true);
    again.header.hop_by_hop = 9_999;
    let second = p.ask(again).await;
    assert_eq!(second.header.hop_by_hop, 9_999);
    assert_eq!(second.avps, first.avps);
    assert_eq!(store.account("alice")["balance_minor"].as_i64(), Some(990));
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("tollgate_duplicates_replayed_total 1"),
        "{metrics}"
    );
    server.stop();
    store.verify();
    store.drop_store().await;
}

#[tokio::test]
async fn split_frames_oversized_lengths_garbage_and_silence() {
    let (store, server) = server().await;
    let mut other = RawPeer::open(server.diameter, "other.test").await;

    // A request split at every byte boundary is still one request.
    let mut p = RawPeer::open(server.diameter, "client.test").await;
    let probe = check_balance(&mut p, "client.test;split;0").to_bytes();
    for cut in 1..probe.len() {
        let mut m = check_balance(&mut p, &format!("client.test;split;{cut}"));
        m.header.end_to_end = 50_000 + cut as u32;
        let b = m.to_bytes();
        p.s.write_all(&b[..cut]).await.unwrap();
        p.s.flush().await.unwrap();
        tokio::task::yield_now().await;
        p.s.write_all(&b[cut..]).await.unwrap();
        assert_eq!(
            p.recv().await.unwrap().result_code(),
            Some(ResultCode::SUCCESS),
            "cut at {cut}"
        );
    }

    // A 16 MiB length field: refused at once, that connection closes.
    let mut big = RawPeer::open(server.diameter, "big.test").await;
    big.s
        .write_all(&[
            1, 0xff, 0xff, 0xfc, 0x80, 0, 1, 16, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1,
        ])
        .await
        .unwrap();
    if let Some(a) = big.recv().await {
        assert_eq!(a.result_code(), Some(ResultCode::INVALID_MESSAGE_LENGTH));
    }
    assert!(big.closed().await);

    let mut junk = RawPeer::connect(server.diameter, "junk.test").await;
    junk.s
        .write_all(b"\x00\x01garbage garbage garbage garbage")
        .await
        .unwrap();
    assert!(junk.closed().await);

    let mut silent = RawPeer::connect(server.diameter, "silent.test").await;
    assert!(
        silent.closed().await,
        "a peer that says nothing is closed after cer_timeout_ms"
    );

    let m = check_balance(&mut other, "other.test;split;after");
    assert_eq!(other.ask(m).await.result_code(), Some(ResultCode::SUCCESS));
    server.stop();
    store.drop_store().await;
}
