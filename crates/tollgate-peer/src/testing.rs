//! A hand-driven Diameter peer for conformance tests: it sends exactly the bytes it is told
//! to (also broken ones) and reads whole frames back, so tests can see what a server does
//! with hostile or unusual input. Enabled by the `testing` feature.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_codec::codes::*;
use tollgate_codec::{check_frame, ApplicationId, Avp, CommandCode, Message, ResultCode};

/// A hand-driven peer: sends what it is told, reads whole frames.
pub struct RawPeer {
    pub s: TcpStream,
    pub buf: BytesMut,
    pub host: String,
    pub next_id: u32,
}

impl RawPeer {
    pub async fn connect(addr: std::net::SocketAddr, host: &str) -> RawPeer {
        RawPeer {
            s: TcpStream::connect(addr)
                .await
                .expect("connect to the server"),
            buf: BytesMut::new(),
            host: host.to_string(),
            next_id: 100,
        }
    }

    pub async fn open(addr: std::net::SocketAddr, host: &str) -> RawPeer {
        let mut p = Self::connect(addr, host).await;
        let cea = p.ask(p.cer(&[4])).await;
        assert_eq!(cea.result_code(), Some(ResultCode::SUCCESS));
        p
    }

    pub fn cer(&self, apps: &[u32]) -> Message {
        let mut m = Message::request(
            CommandCode::CAPABILITIES_EXCHANGE,
            ApplicationId::COMMON,
            false,
        )
        .with(Avp::from_str(ORIGIN_HOST, &self.host))
        .with(Avp::from_str(ORIGIN_REALM, "test"))
        .with(Avp::from_address(
            HOST_IP_ADDRESS,
            &tollgate_codec::Address::V4([127, 0, 0, 1].into()),
        ))
        .with(Avp::from_u32(VENDOR_ID, 0))
        .with(Avp::from_str(PRODUCT_NAME, "raw"));
        for a in apps {
            m.push(Avp::from_u32(AUTH_APPLICATION_ID, *a));
        }
        m
    }

    pub fn ccr(&mut self, session: &str) -> Message {
        self.next_id += 1;
        let mut m = Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        )
        .with(Avp::from_str(SESSION_ID, session))
        .with(Avp::from_str(ORIGIN_HOST, &self.host))
        .with(Avp::from_str(ORIGIN_REALM, "test"))
        .with(Avp::from_str(DESTINATION_REALM, "test"))
        .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
        .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
        .with(Avp::from_enum(CC_REQUEST_TYPE, 4))
        .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
        .with(Avp::from_enum(REQUESTED_ACTION, 2));
        m.header.hop_by_hop = self.next_id;
        m.header.end_to_end = self.next_id;
        m
    }

    pub async fn send(&mut self, m: &Message) {
        self.s
            .write_all(&m.to_bytes())
            .await
            .expect("write to the server");
    }

    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Ok(Some(n)) = check_frame(&self.buf, 1 << 24) {
                let f = self.buf.split_to(n).freeze();
                return Some(Message::decode(&f).expect("the server sent an undecodable frame"));
            }
            let r = tokio::time::timeout(Duration::from_secs(10), self.s.read_buf(&mut self.buf))
                .await
                .expect("no answer within 10 s");
            if r.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    pub async fn ask(&mut self, m: Message) -> Message {
        self.send(&m).await;
        self.recv()
            .await
            .expect("connection closed instead of answering")
    }

    /// True when the server closed the connection (EOF or reset) within 10 s.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
