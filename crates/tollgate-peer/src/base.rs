//! The base-protocol messages the peer layer writes itself (RFC 6733 §5.4 DPR/DPA, §5.5
//! DWR/DWA) and the two answer shapes it gives on an application's behalf: a protocol or
//! permanent error found by the codec (§7), and a plain Result-Code answer (routing, 3004).
//! Builders only: which of them is sent, and when, is the peer state machine's decision
//! ([`crate::fsm`]), carried out by `driver`.

use crate::config::LocalPeer;
use tollgate_codec::codes::*;
use tollgate_codec::{
    ApplicationId, Avp, CommandCode, Flags, Header, Message, ProtocolError, ResultCode,
};

/// Disconnect-Cause REBOOTING (§5.4.3): we are going away and may come back.
pub const REBOOTING: i32 = 0;

fn identity(local: &LocalPeer, m: Message) -> Message {
    m.with(Avp::from_str(ORIGIN_HOST, &local.origin_host))
        .with(Avp::from_str(ORIGIN_REALM, &local.origin_realm))
}

/// DWR (§5.5.1). Ids are assigned by the sender.
pub fn dwr(local: &LocalPeer) -> Message {
    let m = Message::request(CommandCode::DEVICE_WATCHDOG, ApplicationId::COMMON, false);
    identity(local, m).with(Avp::from_u32(ORIGIN_STATE_ID, local.origin_state_id))
}

/// DWA answering `dwr` (§5.5.2).
pub fn dwa(local: &LocalPeer, dwr: &Message) -> Message {
    let m = Message::answer_to(dwr).with(Avp::from_u32(RESULT_CODE, ResultCode::SUCCESS.0));
    identity(local, m).with(Avp::from_u32(ORIGIN_STATE_ID, local.origin_state_id))
}

/// DPR with `cause` (§5.4.1). Ids are assigned by the sender.
pub fn dpr(local: &LocalPeer, cause: i32) -> Message {
    let m = Message::request(CommandCode::DISCONNECT_PEER, ApplicationId::COMMON, false);
    identity(local, m).with(Avp::from_enum(DISCONNECT_CAUSE, cause))
}

/// DPA answering `dpr` (§5.4.2).
pub fn dpa(local: &LocalPeer, dpr: &Message) -> Message {
    let m = Message::answer_to(dpr).with(Avp::from_u32(RESULT_CODE, ResultCode::SUCCESS.0));
    identity(local, m)
}

/// The answer to a request the codec refused (§7: Result-Code, Failed-AVP, E bit for 3xxx),
/// echoing Session-Id and Proxy-Info (§6.2).
pub fn error_answer(
    local: &LocalPeer,
    header: &Header,
    request: Option<&Message>,
    e: &ProtocolError,
) -> Message {
    let mut a = Message::error_answer(
        header,
        request.and_then(|r| r.find(SESSION_ID)),
        e,
        &local.origin_host,
        &local.origin_realm,
    );
    if let Some(r) = request {
        for p in r.find_all(PROXY_INFO) {
            a.push(p.clone());
        }
    }
    a
}

/// An answer with `code` and an Error-Message, echoing Proxy-Info (§6.2).
pub fn result_answer(local: &LocalPeer, req: &Message, code: ResultCode, text: &str) -> Message {
    let mut a = identity(local, Message::answer_to(req))
        .with(Avp::from_u32(RESULT_CODE, code.0))
        .with(Avp::from_str(ERROR_MESSAGE, text));
    if code.is_protocol_error() {
        a.header.flags = a.header.flags.with(Flags::ERROR, true);
    }
    for p in req.find_all(PROXY_INFO) {
        a.push(p.clone());
    }
    a
}
