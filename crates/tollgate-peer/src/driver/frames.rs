//! Frames in: what event each frame is for the peer state machine, and reading a CEA.

use super::{open_conn, Context, PeerDriver};
use crate::capabilities::PeerCapabilities;
use crate::fsm::{Conn, PeerEvent, PeerState};
use crate::table::host_key;
use crate::watchdog::WatchdogEvent;
use bytes::Bytes;
use std::sync::Arc;
use tollgate_codec::{ApplicationId, CommandCode, Message, ResultCode};
use tracing::warn;

/// Our CER is out on the initiator connection and its CEA is awaited (Wait-I-CEA,
/// Wait-Returns): anything else arriving there is `I-Rcv-Non-CEA`.
fn waiting_for_cea(conn: Conn, state: PeerState) -> bool {
    conn == Conn::Initiator && matches!(state, PeerState::WaitICea | PeerState::WaitReturns)
}

/// The event of a frame the machine cannot take as a base message of its own (undecodable,
/// or a base request that breaks its grammar): a message on `conn`, or not the awaited CEA.
fn other_message(conn: Conn, state: PeerState) -> PeerEvent {
    match (waiting_for_cea(conn, state), conn) {
        (true, _) => PeerEvent::IRcvNonCea,
        (false, Conn::Initiator) => PeerEvent::IRcvMessage,
        (false, Conn::Responder) => PeerEvent::RRcvMessage,
    }
}

/// The §5.6 event a decoded message on `conn` is, in `state`. A CEA's event carries its
/// outcome, which only the driver can judge (see `read_cea`), so it is passed in.
pub(crate) fn classify(conn: Conn, state: PeerState, m: &Message, cea_success: bool) -> PeerEvent {
    use CommandCode as C;
    use PeerEvent as E;
    let i = conn == Conn::Initiator;
    let waiting_cea = waiting_for_cea(conn, state);
    let base = m.header.application == ApplicationId::COMMON;
    let (cmd, req) = (m.header.command, m.is_request());
    let is_cea = base && cmd == C::CAPABILITIES_EXCHANGE && !req;
    if waiting_cea && !is_cea {
        return E::IRcvNonCea;
    }
    match (base, cmd, req) {
        (true, C::CAPABILITIES_EXCHANGE, false) if i => E::IRcvCea {
            success: cea_success,
        },
        (true, C::CAPABILITIES_EXCHANGE, false) => E::RRcvCea {
            success: cea_success,
        },
        (true, C::CAPABILITIES_EXCHANGE, true) if i => E::IRcvCer,
        (true, C::CAPABILITIES_EXCHANGE, true) => E::RRcvCer,
        (true, C::DEVICE_WATCHDOG, true) if i => E::IRcvDwr,
        (true, C::DEVICE_WATCHDOG, true) => E::RRcvDwr,
        (true, C::DEVICE_WATCHDOG, false) if i => E::IRcvDwa,
        (true, C::DEVICE_WATCHDOG, false) => E::RRcvDwa,
        (true, C::DISCONNECT_PEER, true) if i => E::IRcvDpr,
        (true, C::DISCONNECT_PEER, true) => E::RRcvDpr,
        (true, C::DISCONNECT_PEER, false) if i => E::IRcvDpa,
        (true, C::DISCONNECT_PEER, false) => E::RRcvDpa,
        _ if i => E::IRcvMessage,
        _ => E::RRcvMessage,
    }
}

impl PeerDriver {
    pub(super) async fn handle_frame(&mut self, conn: Conn, bytes: Bytes) {
        let state = self.state();
        let decoded = Message::decode_with(&bytes, &self.node.limits.codec);
        if open_conn(state) == Some(conn) {
            let is_dwa = decoded.as_ref().is_ok_and(|m| {
                !m.is_request()
                    && m.header.application == ApplicationId::COMMON
                    && m.header.command == CommandCode::DEVICE_WATCHDOG
            });
            let event = match is_dwa {
                true => WatchdogEvent::DwaReceived,
                false => WatchdogEvent::MessageReceived,
            };
            self.watch(event).await;
        }
        let mut ctx = Context {
            conn: Some(conn),
            ..Context::default()
        };
        let event = match decoded {
            Ok(m) => {
                let base = m.header.application == ApplicationId::COMMON;
                let is_cea = base
                    && m.header.command == CommandCode::CAPABILITIES_EXCHANGE
                    && !m.is_request();
                let success = is_cea && self.read_cea(&m, &mut ctx);
                // A base request that breaks its grammar (a DWR without Origin-Host, a DPR
                // without Disconnect-Cause) is not that request: for the machine it is a
                // message, and Process answers it as RFC 6733 §7 says (5005, 5001 …).
                let broken = match base && m.is_request() {
                    true => self.node.dict.validate(&m, &self.node.limits.codec).err(),
                    false => None,
                };
                let event = match broken {
                    Some(e) => {
                        ctx.invalid = Some(e);
                        other_message(conn, state)
                    }
                    None => classify(conn, state, &m, success),
                };
                ctx.message = Some(m);
                event
            }
            Err(e) => {
                // Undecodable: for the machine, a message (or not the awaited CEA); the
                // answer, if it was a request, is Process's (§7).
                ctx.undecodable = Some((bytes, e));
                other_message(conn, state)
            }
        };
        self.step(event, ctx).await;
    }

    /// Reads a CEA: success when its Result-Code is 2xxx (§5.3), it names a peer, and that
    /// peer is the one we meant (or, for a target known by address only, not a peer that
    /// already has a machine of its own).
    fn read_cea(&mut self, cea: &Message, ctx: &mut Context) -> bool {
        let ok = cea.result_code().is_some_and(ResultCode::is_success);
        let caps = match PeerCapabilities::from_message(cea) {
            Ok(c) if ok && !c.origin_host.is_empty() => c,
            _ => {
                warn!(peer = %self.peer, result = ?cea.result_code(), "capabilities exchange refused");
                return false;
            }
        };
        let host = caps.origin_host.clone();
        let expected = self.target.as_ref().and_then(|t| t.host.clone());
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(&host) {
                warn!(%expected, %host, "the peer answered with another Origin-Host");
                return false;
            }
        } else if host_key(&host) != self.key {
            // Known by address until now: file the peer under its name.
            if !self.node.table.claim(&host_key(&host), &self.entry) {
                warn!(%host, "this peer is already connected; closing the extra connection");
                return false;
            }
            self.node.table.remove(&self.key, &self.entry);
            self.key = host_key(&host);
            self.peer = Arc::from(host.as_str());
            self.entry.shared().host = host;
        }
        ctx.cea = Some(caps);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_codec::{Avp, CommandCode};

    fn base(command: CommandCode, request: bool) -> Message {
        let m = Message::request(command, ApplicationId::COMMON, false);
        if request {
            m
        } else {
            Message::answer_to(&m).with(Avp::from_u32(tollgate_codec::codes::RESULT_CODE, 2001))
        }
    }

    #[test]
    fn every_base_message_is_its_event_on_its_connection() {
        use CommandCode as C;
        use PeerEvent as E;
        let (i, r, open_i, open_r) = (
            Conn::Initiator,
            Conn::Responder,
            PeerState::IOpen,
            PeerState::ROpen,
        );
        let cases = [
            (C::DEVICE_WATCHDOG, true, i, open_i, E::IRcvDwr),
            (C::DEVICE_WATCHDOG, true, r, open_r, E::RRcvDwr),
            (C::DEVICE_WATCHDOG, false, i, open_i, E::IRcvDwa),
            (C::DEVICE_WATCHDOG, false, r, open_r, E::RRcvDwa),
            (C::DISCONNECT_PEER, true, i, open_i, E::IRcvDpr),
            (C::DISCONNECT_PEER, true, r, open_r, E::RRcvDpr),
            (C::DISCONNECT_PEER, false, i, PeerState::Closing, E::IRcvDpa),
            (C::DISCONNECT_PEER, false, r, PeerState::Closing, E::RRcvDpa),
            (C::CAPABILITIES_EXCHANGE, true, r, open_r, E::RRcvCer),
            (C::CAPABILITIES_EXCHANGE, true, i, open_i, E::IRcvCer),
            (
                C::CAPABILITIES_EXCHANGE,
                false,
                i,
                PeerState::WaitICea,
                E::IRcvCea { success: true },
            ),
            (
                C::CAPABILITIES_EXCHANGE,
                false,
                r,
                open_r,
                E::RRcvCea { success: true },
            ),
        ];
        for (command, request, conn, state, want) in cases {
            let m = base(command, request);
            assert_eq!(
                classify(conn, state, &m, true),
                want,
                "{command} {request} {conn:?}"
            );
        }
    }

    #[test]
    fn waiting_for_the_cea_anything_else_is_a_non_cea() {
        let dwr = base(CommandCode::DEVICE_WATCHDOG, true);
        for state in [PeerState::WaitICea, PeerState::WaitReturns] {
            assert_eq!(
                classify(Conn::Initiator, state, &dwr, true),
                PeerEvent::IRcvNonCea
            );
        }
        // Only the initiator waits for a CEA: the responder's traffic is itself.
        assert_eq!(
            classify(Conn::Responder, PeerState::WaitReturns, &dwr, true),
            PeerEvent::RRcvDwr
        );
    }

    #[test]
    fn application_messages_are_messages_whatever_their_command() {
        let ccr = Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        );
        let open = PeerState::ROpen;
        assert_eq!(
            classify(Conn::Responder, open, &ccr, true),
            PeerEvent::RRcvMessage
        );
        assert_eq!(
            classify(Conn::Initiator, PeerState::IOpen, &ccr, true),
            PeerEvent::IRcvMessage
        );
        // A base command code under another application is not base protocol.
        let odd = Message::request(
            CommandCode::DEVICE_WATCHDOG,
            ApplicationId::CREDIT_CONTROL,
            false,
        );
        assert_eq!(
            classify(Conn::Responder, open, &odd, true),
            PeerEvent::RRcvMessage
        );
    }
}
