//! Accepting connections: the accept loop with its connection limit, the transport handshake
//! (e.g. TLS), and the first frame, which must be a CER (RFC 6733 §5.6: `R-Conn-CER`).
//!
//! Until its CER names a peer, an accepted connection belongs to no peer and so to no state
//! machine: a frame that is not a decodable CER, or silence past `cer_timeout`, closes it
//! here. A CER that names a peer goes to that peer's driver with the outcome of Process-CER
//! (allowed peer, an application in common, §5.3), and the machine decides (R-Accept or
//! R-Reject). A CER that fails the dictionary is answered here per §7, because without a
//! readable Origin-Host there is no peer to ask.

use crate::capabilities::{self, PeerCapabilities};
use crate::driver::Inbound;
use crate::link::{BoxedTransport, Transport};
use crate::node::Node;
use crate::{base, framing::FrameError};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tollgate_codec::{ApplicationId, CommandCode, Message, ResultCode};
use tracing::{debug, info, warn};

impl Node {
    /// Accepts TCP connections until shutdown.
    pub async fn serve_tcp(self: &Arc<Self>, listener: TcpListener) {
        self.serve(listener, |s| async move { Ok(s) }).await
    }

    /// Accepts connections, passing each through `wrap` (e.g. a TLS handshake) first.
    pub async fn serve<F, Fut, S>(self: &Arc<Self>, listener: TcpListener, wrap: F)
    where
        F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send,
        S: Transport,
    {
        let shutdown = self.shutdown_token();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let wrap = wrap.clone();
            self.accept_with(addr.to_string(), async move { wrap(stream).await });
        }
    }

    /// Takes a connection accepted elsewhere (an in-memory pipe in tests, or a stream a
    /// caller accepted itself) as if the listener had accepted it.
    pub fn accept<S: Transport>(self: &Arc<Self>, stream: S, label: &str) {
        self.accept_with(label.to_string(), async move { Ok(stream) });
    }

    fn accept_with<Fut, S>(self: &Arc<Self>, label: String, handshake: Fut)
    where
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: Transport,
    {
        let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            self.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(from = %label, "connection limit reached; closing new connection");
            return;
        };
        self.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let node = Arc::clone(self);
        self.tracker.spawn(async move {
            match tokio::time::timeout(node.limits.cer_timeout, handshake).await {
                Ok(Ok(s)) => node.read_cer(Box::new(s), label, permit).await,
                Ok(Err(e)) => debug!(from = %label, "handshake failed: {e}"),
                Err(_) => debug!(from = %label, "handshake timed out"),
            }
        });
    }

    /// Waits for the CER, checks it, and hands the connection to the peer it names.
    async fn read_cer(
        self: Arc<Self>,
        stream: BoxedTransport,
        label: String,
        permit: OwnedSemaphorePermit,
    ) {
        let mut link = self.new_link(stream, label, Some(permit));
        let shutdown = self.shutdown_token();
        let first = tokio::select! {
            _ = shutdown.cancelled() => None,
            f = tokio::time::timeout(self.limits.cer_timeout, link.frames.next()) => match f {
                Ok(Some(Ok(b))) => Some(b),
                Ok(Some(Err(FrameError::Protocol(e, _)))) => { debug!(from = %link.out.label, "before CER: {e}"); None }
                Ok(Some(Err(FrameError::Io(e)))) => { debug!(from = %link.out.label, "before CER: {e}"); None }
                Ok(None) => None,
                Err(_) => { debug!(from = %link.out.label, "no CER within {:?}", self.limits.cer_timeout); None }
            },
        };
        let cer = first.and_then(|b| match Message::decode_with(&b, &self.limits.codec) {
            Ok(m) if m.is_request() && m.header.command == CommandCode::CAPABILITIES_EXCHANGE => {
                Some(m)
            }
            Ok(m) => {
                debug!(from = %link.out.label, command = %m.header.command, "first message is not a CER");
                None
            }
            Err(e) => {
                debug!(from = %link.out.label, "undecodable first message: {e}");
                None
            }
        });
        let Some(cer) = cer else {
            link.close(&self.tracker);
            return;
        };
        let caps = match self
            .dict
            .validate(&cer, &self.limits.codec)
            .and_then(|()| PeerCapabilities::from_message(&cer))
        {
            Ok(caps) if !caps.origin_host.is_empty() => caps,
            Ok(_) => {
                debug!(from = %link.out.label, "CER without an Origin-Host");
                link.close(&self.tracker);
                return;
            }
            Err(e) => {
                let answer = base::error_answer(&self.local, &cer.header, Some(&cer), &e);
                info!(from = %link.out.label, result = ?answer.result_code(), "malformed CER refused");
                link.out.send(&answer).await;
                link.close(&self.tracker);
                return;
            }
        };
        let verdict = self.process_cer(&cer, &caps);
        self.deliver_inbound(Inbound {
            link,
            cer,
            caps,
            verdict,
        });
    }

    /// Process-CER (§5.3): the applications in common, or the CEA that refuses the peer.
    fn process_cer(
        &self,
        cer: &Message,
        caps: &PeerCapabilities,
    ) -> Result<Vec<ApplicationId>, Message> {
        let refuse = |result: ResultCode, text: String| {
            capabilities::cea(&self.local, &self.app_ids, cer, result, Some(&text))
        };
        let allowed = self.local.allowed_peers.as_ref().is_none_or(|list| {
            list.iter()
                .any(|p| p.eq_ignore_ascii_case(&caps.origin_host))
        });
        if !allowed {
            let text = format!("{} is not a configured peer", caps.origin_host);
            return Err(refuse(ResultCode::UNKNOWN_PEER, text));
        }
        let common = caps.common_with(&self.app_ids);
        if common.is_empty() {
            let text = "no application in common".to_string();
            return Err(refuse(ResultCode::NO_COMMON_APPLICATION, text));
        }
        Ok(common)
    }
}
