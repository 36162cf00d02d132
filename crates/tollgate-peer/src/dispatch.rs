//! What `Process` means (RFC 6733 §5.6.1) for a message that is not base protocol: a request
//! is checked (§6.1: application, dictionary, realm and host), de-duplicated (§6.1.4),
//! bounded, and handed to the [`Application`](crate::Application) in its own task; an answer
//! goes to whoever sent the request (§6.2.1).

use crate::app::Request;
use crate::base;
use crate::dedup::{readdress, Seen};
use crate::deviation::{self, Deviation};
use crate::link::Outlet;
use crate::node::Node;
use crate::table::lock;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, DecodeError, Flags, Message, ProtocolError, ResultCode};

/// Answers a frame that did not decode, when it was a request: the body is broken, but a
/// leading Session-Id can still be echoed (§7).
pub(crate) async fn answer_undecodable(node: &Node, link: &Outlet, bytes: &Bytes, e: DecodeError) {
    let Some(h) = e.header.filter(|h| h.flags.is_request()) else {
        return;
    };
    node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    let mut pos = tollgate_codec::header::HEADER_LEN;
    let sid = Avp::read(bytes, &mut pos).ok().filter(|a| a.is(SESSION_ID));
    let a = Message::error_answer(
        &h,
        sid.as_ref(),
        &e.error,
        &node.local.origin_host,
        &node.local.origin_realm,
    );
    link.send(&a).await;
}

/// Answers a request that breaks the rules (§7: the dictionary's grammar, an application not
/// negotiated) with its error, and counts it.
pub(crate) async fn answer_error(node: &Node, link: &Outlet, msg: &Message, e: &ProtocolError) {
    node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    link.send(&base::error_answer(&node.local, &msg.header, Some(msg), e))
        .await;
}

/// Delivers an answer to the request we sent; §6.2.1: one we did not ask for is dropped.
pub(crate) fn deliver_answer(link: &Outlet, msg: Message) {
    if let Some(waiter) = lock(&link.pending).remove(&msg.header.hop_by_hop) {
        let _ = waiter.send(msg);
    }
}

/// Checks a request from `peer` and starts its answer.
pub(crate) async fn dispatch_request(
    node: &Arc<Node>,
    peer: &Arc<str>,
    link: &Outlet,
    msg: Message,
) {
    node.stats.requests_received.fetch_add(1, Ordering::Relaxed);
    let h = msg.header;
    if let Err(e) = check_request(node, peer, link, &msg) {
        answer_error(node, link, &msg, &e).await;
        return;
    }
    if let Some(a) = route(node, &msg) {
        link.send(&a).await;
        return;
    }
    let origin = msg.origin_host().unwrap_or_default().to_string();
    let now = crate::node::now();
    match node
        .dedup
        .begin(&origin, h.end_to_end, h.hop_by_hop, &link.tx, now)
    {
        Seen::Replay(b) => {
            node.stats
                .duplicates_replayed
                .fetch_add(1, Ordering::Relaxed);
            let _ = link.tx.send(b).await;
            return;
        }
        Seen::Pending => {
            node.stats
                .duplicates_replayed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        Seen::New => {}
    }
    let Ok(permit) = Arc::clone(&link.in_flight).try_acquire_owned() else {
        node.stats.too_busy.fetch_add(1, Ordering::Relaxed);
        node.dedup.forget(&origin, h.end_to_end);
        let text = "too many requests in flight";
        link.send(&base::result_answer(
            &node.local,
            &msg,
            ResultCode::TOO_BUSY,
            text,
        ))
        .await;
        return;
    };
    let Some(app) = node.app.clone() else {
        node.dedup.forget(&origin, h.end_to_end);
        let e = ProtocolError::ApplicationUnsupported(h.application);
        link.send(&base::error_answer(&node.local, &h, Some(&msg), &e))
            .await;
        return;
    };
    let tx = link.tx.clone();
    let peer = Arc::clone(peer);
    let node = Arc::clone(node);
    tokio::spawn(async move {
        let _permit = permit;
        let proxy_info: Vec<Avp> = msg.find_all(PROXY_INFO).cloned().collect();
        let mut answer = app.handle(Request { message: msg, peer }).await;
        answer.header.hop_by_hop = h.hop_by_hop;
        answer.header.end_to_end = h.end_to_end;
        answer.header.command = h.command;
        answer.header.application = h.application;
        answer.header.flags = answer
            .header
            .flags
            .with(Flags::REQUEST, false)
            .with(Flags::PROXIABLE, h.flags.is_proxiable());
        // §6.2: Proxy-Info is echoed in the same order.
        if !proxy_info.is_empty() && answer.find(PROXY_INFO).is_none() {
            answer.avps.extend(proxy_info);
        }
        let bytes = answer.to_bytes();
        let waiters = node.dedup.complete(&origin, h.end_to_end, bytes.clone());
        node.stats.answers_sent.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(bytes.clone()).await;
        for w in waiters {
            let _ = w.tx.send(readdress(&bytes, w.hop_by_hop)).await;
        }
    });
}

/// Checks a request for an application against the dictionary and what we share with
/// this peer (§6.1: 3007 when the application was not negotiated).
fn check_request(
    node: &Node,
    peer: &str,
    link: &Outlet,
    msg: &Message,
) -> Result<(), ProtocolError> {
    let h = msg.header;
    if !link.common.contains(&h.application) {
        return Err(ProtocolError::ApplicationUnsupported(h.application));
    }
    let unknown = node.local.unknown_avps.for_peer(peer);
    let report = node.dict.validate_with(msg, &node.limits.codec, unknown)?;
    if let Some(first) = report.first_unknown {
        deviation::report(
            Deviation::UnknownVendorAvpAccepted,
            peer,
            &format!(
                "{} unknown AVP(s), the first code {} vendor {}",
                report.unknown_accepted, first.code, first.vendor_id
            ),
        );
    }
    Ok(())
}

/// §6.1: requests for another realm (3003) or host (3002). Relaying is not offered.
fn route(node: &Node, msg: &Message) -> Option<Message> {
    let local = &node.local;
    if let Some(realm) = msg.find(DESTINATION_REALM).and_then(|a| a.utf8().ok()) {
        if !realm.eq_ignore_ascii_case(&local.origin_realm) {
            let text = format!("realm {realm} is not served here");
            return Some(base::result_answer(
                local,
                msg,
                ResultCode::REALM_NOT_SERVED,
                &text,
            ));
        }
    }
    if let Some(host) = msg.find(DESTINATION_HOST).and_then(|a| a.utf8().ok()) {
        if !host.eq_ignore_ascii_case(&local.origin_host) {
            let text = format!("host {host} is not reachable from here");
            return Some(base::result_answer(
                local,
                msg,
                ResultCode::UNABLE_TO_DELIVER,
                &text,
            ));
        }
    }
    None
}
