//! The peer layer over real TCP: capabilities exchange, watchdog, disconnect, every error
//! answer, duplicates, limits and hostile input, with a second peer served throughout.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Dictionary, Flags, Message, ResultCode};
use tollgate_peer::testing::RawPeer;
use tollgate_peer::{AnswerFuture, Application, LocalPeer, Node, PeerLimits, Request};

/// Answers every request 2001 after `delay`, counting how often it was asked.
struct CountingApp {
    calls: AtomicUsize,
    delay: Duration,
}

impl Application for CountingApp {
    fn application_ids(&self) -> Vec<ApplicationId> {
        vec![ApplicationId::CREDIT_CONTROL]
    }
    fn handle(&self, req: Request) -> AnswerFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let m = &req.message;
            let mut a = Message::answer_to(m)
                .with(Avp::from_u32(RESULT_CODE, 2001))
                .with(Avp::from_str(ORIGIN_HOST, "ocs.test"))
                .with(Avp::from_str(ORIGIN_REALM, "test"));
            for k in [AUTH_APPLICATION_ID, CC_REQUEST_TYPE, CC_REQUEST_NUMBER] {
                if let Some(v) = m.find(k) {
                    a.push(v.clone());
                }
            }
            a
        })
    }
}

struct Server {
    node: Arc<Node>,
    app: Arc<CountingApp>,
    addr: std::net::SocketAddr,
}

async fn server(limits: PeerLimits, allowed: Option<Vec<String>>, delay: Duration) -> Server {
    let mut local = LocalPeer::new("ocs.test", "test");
    local.allowed_peers = allowed;
    let app = Arc::new(CountingApp {
        calls: AtomicUsize::new(0),
        delay,
    });
    let node = Node::new(
        local,
        limits,
        Arc::new(Dictionary::builtin().clone()),
        Some(app.clone() as Arc<dyn Application>),
        &[],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::clone(&node);
    tokio::spawn(async move { n.serve_tcp(listener).await });
    Server { node, app, addr }
}

async fn default_server() -> Server {
    server(PeerLimits::default(), None, Duration::ZERO).await
}

#[tokio::test]
async fn capabilities_watchdog_and_disconnect() {
    let srv = default_server().await;
    let mut p = RawPeer::connect(srv.addr, "client.test").await;
    let cea = p.ask(p.cer(&[4])).await;
    assert_eq!(cea.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(cea.origin_host(), Some("ocs.test"));
    let apps: Vec<u32> = cea
        .find_all(AUTH_APPLICATION_ID)
        .map(|a| a.u32().unwrap())
        .collect();
    assert_eq!(apps, vec![4]);
    assert!(cea.find(VENDOR_SPECIFIC_APPLICATION_ID).is_some());
    assert_eq!(cea.find(SUPPORTED_VENDOR_ID).unwrap().u32().unwrap(), 10415);
    assert!(cea.find(HOST_IP_ADDRESS).is_some() && cea.find(ORIGIN_STATE_ID).is_some());
    assert!(cea.find(FIRMWARE_REVISION).is_some() && cea.find(PRODUCT_NAME).is_some());
    Dictionary::builtin()
        .validate(&cea, &Default::default())
        .unwrap();

    let mut dwr = Message::request(CommandCode::DEVICE_WATCHDOG, ApplicationId::COMMON, false)
        .with(Avp::from_str(ORIGIN_HOST, "client.test"))
        .with(Avp::from_str(ORIGIN_REALM, "test"));
    dwr.header.hop_by_hop = 7;
    let dwa = p.ask(dwr).await;
    assert_eq!(dwa.header.command, CommandCode::DEVICE_WATCHDOG);
    assert_eq!(dwa.header.hop_by_hop, 7);
    assert_eq!(dwa.result_code(), Some(ResultCode::SUCCESS));

    let dpr = Message::request(CommandCode::DISCONNECT_PEER, ApplicationId::COMMON, false)
        .with(Avp::from_str(ORIGIN_HOST, "client.test"))
        .with(Avp::from_str(ORIGIN_REALM, "test"))
        .with(Avp::from_enum(DISCONNECT_CAUSE, 0));
    let dpa = p.ask(dpr).await;
    assert_eq!(dpa.header.command, CommandCode::DISCONNECT_PEER);
    assert_eq!(dpa.result_code(), Some(ResultCode::SUCCESS));
    drop(p);
    // The peer can come back after a clean disconnect.
    let _again = RawPeer::open(srv.addr, "client.test").await;
}

#[tokio::test]
async fn a_relay_cer_from_freediameter_is_accepted() {
    let hex = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/fdl-00-CER.hex"),
    );
    let Some(hex) = tollgate_testkit::component(
        hex.ok(),
        "../shared/fixtures/fdl-00-CER.hex",
        "the shared/ folder beside the checkout (CI lays it there)",
    ) else {
        return;
    };
    let srv = default_server().await;
    let mut p = RawPeer::connect(srv.addr, "client.test.realm").await;
    p.s.write_all(&hex::decode(hex.trim()).unwrap())
        .await
        .unwrap();
    let cea = p.recv().await.unwrap();
    assert_eq!(cea.result_code(), Some(ResultCode::SUCCESS));
}

#[tokio::test]
async fn capabilities_refusals() {
    let srv = server(
        PeerLimits::default(),
        Some(vec!["friend.test".into()]),
        Duration::ZERO,
    )
    .await;
    let mut stranger = RawPeer::connect(srv.addr, "stranger.test").await;
    let cea = stranger.ask(stranger.cer(&[4])).await;
    assert_eq!(cea.result_code(), Some(ResultCode::UNKNOWN_PEER));
    assert!(stranger.closed().await);
    let mut friend = RawPeer::connect(srv.addr, "FRIEND.test").await;
    let cea = friend.ask(friend.cer(&[16777238])).await;
    assert_eq!(cea.result_code(), Some(ResultCode::NO_COMMON_APPLICATION));
    assert!(friend.closed().await);
}

#[tokio::test]
async fn a_second_cer_is_answered_and_a_second_connection_refused() {
    let srv = default_server().await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;
    // RFC 3588's R-Open row: a CER again on the open connection gets a CEA again.
    let cea = p.ask(p.cer(&[4])).await;
    assert_eq!(cea.header.command, CommandCode::CAPABILITIES_EXCHANGE);
    assert_eq!(cea.result_code(), Some(ResultCode::SUCCESS));
    // R-Conn-CER in R-Open is R-Reject: the same peer on a second connection is refused
    // with a CEA that says why, and that connection closes; the first keeps working.
    let mut second = RawPeer::connect(srv.addr, "CLIENT.test").await;
    let cea = second.ask(second.cer(&[4])).await;
    assert_eq!(cea.result_code(), Some(ResultCode::UNABLE_TO_COMPLY));
    assert!(second.closed().await);
    let ccr = p.ccr("client.test;2;1");
    let a = p.ask(ccr).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
}

#[tokio::test]
async fn anything_but_cer_first_closes_the_connection() {
    let srv = default_server().await;
    let mut p = RawPeer::connect(srv.addr, "client.test").await;
    let ccr = p.ccr("client.test;1;1");
    p.send(&ccr).await;
    assert!(p.closed().await);
}

#[tokio::test]
async fn error_answers_carry_ids_result_code_and_failed_avp() {
    let srv = default_server().await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;

    // 3007: an application we do not serve, with the E bit.
    let mut m = p.ccr("client.test;1;1");
    m.header.application = ApplicationId(5);
    let a = p.ask(m.clone()).await;
    assert_eq!(a.result_code(), Some(ResultCode::APPLICATION_UNSUPPORTED));
    assert!(a.header.flags.is_error());
    assert_eq!(
        (a.header.hop_by_hop, a.header.end_to_end),
        (m.header.hop_by_hop, m.header.end_to_end)
    );
    assert_eq!(a.session_id(), Some("client.test;1;1"));

    // 3001: an unknown command in application 4.
    let mut m = p.ccr("client.test;1;2");
    m.header.command = CommandCode(999);
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::COMMAND_UNSUPPORTED));
    assert!(a.header.flags.is_error());

    // 5005: a missing required AVP, Failed-AVP naming it; no E bit.
    let mut m = p.ccr("client.test;1;3");
    m.avps.retain(|a| !a.is(SERVICE_CONTEXT_ID));
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::MISSING_AVP));
    assert!(!a.header.flags.is_error());
    let failed = a.find(FAILED_AVP).unwrap().members().unwrap();
    assert!(failed[0].is(SERVICE_CONTEXT_ID));
    assert!(a.find(ERROR_MESSAGE).is_some());

    // 5001: an unknown M-bit AVP.
    let m = p
        .ccr("client.test;1;4")
        .with(Avp::from_u32(tollgate_codec::AvpCode::base(99999), 1));
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::AVP_UNSUPPORTED));

    // 5014: a broken AVP length is answered with the request's ids and Session-Id.
    let m = p.ccr("client.test;1;5");
    let mut raw = BytesMut::from(m.to_bytes().as_ref());
    let last = raw.len() - 12; // Requested-Action: 12 octets at the end
    raw[last + 7] = 0xff;
    p.s.write_all(&raw).await.unwrap();
    let a = p.recv().await.unwrap();
    assert_eq!(a.result_code(), Some(ResultCode::INVALID_AVP_LENGTH));
    assert_eq!(a.header.hop_by_hop, m.header.hop_by_hop);
    assert_eq!(a.session_id(), Some("client.test;1;5"));

    // 3008: E bit in a request.
    let mut m = p.ccr("client.test;1;6");
    m.header.flags = Flags(Flags::REQUEST | Flags::PROXIABLE | Flags::ERROR);
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::INVALID_HDR_BITS));

    // 3003 and 3002: another realm, another host.
    let mut m = p.ccr("client.test;1;7");
    m.avps.retain(|a| !a.is(DESTINATION_REALM));
    m.push(Avp::from_str(DESTINATION_REALM, "elsewhere"));
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::REALM_NOT_SERVED)
    );
    let m = p
        .ccr("client.test;1;8")
        .with(Avp::from_str(DESTINATION_HOST, "other.test"));
    assert_eq!(
        p.ask(m).await.result_code(),
        Some(ResultCode::UNABLE_TO_DELIVER)
    );

    // Proxy-Info is echoed.
    let pi = Avp::grouped(
        PROXY_INFO,
        &[
            Avp::from_str(PROXY_HOST, "agent.test"),
            Avp::new(PROXY_STATE, Bytes::from_static(b"state")),
        ],
    );
    let m = p.ccr("client.test;1;9").with(pi.clone());
    let a = p.ask(m).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(a.find(PROXY_INFO), Some(&pi));
    assert_eq!(
        srv.app.calls.load(Ordering::SeqCst),
        1,
        "only the good request reached the app"
    );
}

#[tokio::test]
async fn a_retransmission_is_answered_again_without_reaching_the_application() {
    let srv = default_server().await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;
    let m = p.ccr("client.test;2;1");
    let first = p.ask(m.clone()).await;
    let mut again = m.clone();
    again.header.flags = again.header.flags.with(Flags::RETRANSMITTED, true);
    again.header.hop_by_hop = 4242;
    let second = p.ask(again).await;
    assert_eq!(second.header.hop_by_hop, 4242);
    assert_eq!(second.avps, first.avps);
    assert_eq!(srv.app.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn frames_split_at_every_byte_boundary() {
    let srv = default_server().await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;
    let m = p.ccr("client.test;3;0");
    let bytes = m.to_bytes();
    for cut in 1..bytes.len() {
        let mut m = p.ccr(&format!("client.test;3;{cut}"));
        m.header.end_to_end = 10_000 + cut as u32;
        let b = m.to_bytes();
        p.s.write_all(&b[..cut]).await.unwrap();
        p.s.flush().await.unwrap();
        tokio::task::yield_now().await;
        p.s.write_all(&b[cut..]).await.unwrap();
        let a = p.recv().await.unwrap();
        assert_eq!(a.result_code(), Some(ResultCode::SUCCESS), "cut at {cut}");
    }
}

#[tokio::test]
async fn hostile_input_closes_only_that_connection() {
    let limits = PeerLimits {
        cer_timeout: Duration::from_millis(300),
        ..PeerLimits::default()
    };
    let srv = server(limits, None, Duration::ZERO).await;
    let mut good = RawPeer::open(srv.addr, "good.test").await;

    // A 16 MiB length: refused at once, connection closed.
    let mut big = RawPeer::open(srv.addr, "big.test").await;
    big.s
        .write_all(&[
            1, 0xff, 0xff, 0xfc, 0x80, 0, 1, 16, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1,
        ])
        .await
        .unwrap();
    let a = big.recv().await;
    if let Some(a) = a {
        assert_eq!(a.result_code(), Some(ResultCode::INVALID_MESSAGE_LENGTH));
    }
    assert!(big.closed().await);

    // Garbage before CER.
    let mut junk = RawPeer::connect(srv.addr, "junk.test").await;
    junk.s
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(junk.closed().await);

    // Silence after connecting: closed after the CER timeout.
    let mut silent = RawPeer::connect(srv.addr, "silent.test").await;
    assert!(silent.closed().await);

    let m = good.ccr("good.test;1;1");
    assert_eq!(good.ask(m).await.result_code(), Some(ResultCode::SUCCESS));
}

#[tokio::test]
async fn too_many_requests_in_flight_get_3004() {
    let limits = PeerLimits {
        max_in_flight_per_peer: 1,
        ..PeerLimits::default()
    };
    let srv = server(limits, None, Duration::from_millis(500)).await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;
    let a = p.ccr("client.test;4;1");
    let b = p.ccr("client.test;4;2");
    p.send(&a).await;
    p.send(&b).await;
    let first = p.recv().await.unwrap();
    assert_eq!(first.result_code(), Some(ResultCode::TOO_BUSY));
    assert_eq!(first.header.hop_by_hop, b.header.hop_by_hop);
    assert!(first.header.flags.is_error());
    let second = p.recv().await.unwrap();
    assert_eq!(second.result_code(), Some(ResultCode::SUCCESS));
}

#[tokio::test]
async fn shutdown_sends_dpr_and_waits_for_requests_in_flight() {
    let srv = server(PeerLimits::default(), None, Duration::from_millis(300)).await;
    let mut p = RawPeer::open(srv.addr, "client.test").await;
    let m = p.ccr("client.test;5;1");
    p.send(&m).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let node = Arc::clone(&srv.node);
    let stopping = tokio::spawn(async move { node.shutdown(Duration::from_secs(10)).await });
    let mut seen_dpr = None;
    let mut seen_answer = false;
    while let Some(msg) = p.recv().await {
        if msg.header.command == CommandCode::DISCONNECT_PEER && msg.is_request() {
            seen_dpr = Some(msg);
            if seen_answer {
                break;
            }
        } else if msg.header.command == CommandCode::CREDIT_CONTROL {
            seen_answer = true;
            if seen_dpr.is_some() {
                break;
            }
        }
    }
    let dpr = seen_dpr.expect("DPR on shutdown");
    assert!(seen_answer, "the request in flight was answered");
    let dpa = Message::answer_to(&dpr)
        .with(Avp::from_u32(RESULT_CODE, 2001))
        .with(Avp::from_str(ORIGIN_HOST, "client.test"))
        .with(Avp::from_str(ORIGIN_REALM, "test"));
    p.send(&dpa).await;
    assert!(p.closed().await);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_node_as_client_opens_a_peer_and_gets_answers() {
    let srv = default_server().await;
    let client = Node::new(
        LocalPeer::new("client.test", "test"),
        PeerLimits::default(),
        Arc::new(Dictionary::builtin().clone()),
        None,
        &[ApplicationId::CREDIT_CONTROL],
    );
    let stream = TcpStream::connect(srv.addr).await.unwrap();
    let host = client.connect_once(stream).await.unwrap();
    assert_eq!(host, "ocs.test");
    let mut raw = RawPeer::connect(srv.addr, "unused").await;
    raw.host = "client.test".into();
    let m = raw.ccr("client.test;6;1");
    let a = client
        .request(Some("ocs.test"), m, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    client.shutdown(Duration::from_secs(5)).await;
}
