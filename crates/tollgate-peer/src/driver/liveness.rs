//! What a change of state means beyond the machine (peer events, reconnecting), and the
//! RFC 3539 watchdog and the timers.

use super::{open_conn, Context, PeerDriver};
use crate::base;
use crate::fsm::{Conn, PeerEvent, PeerState};
use crate::node::{now, PeerError};
use crate::table::{PeerChange, PeerChangeKind};
use crate::watchdog::{WatchdogAction, WatchdogEvent};
use std::time::Instant;
use tracing::{info, warn};

impl PeerDriver {
    /// What entering `after` from `before` means beyond the machine.
    pub(super) async fn entered(&mut self, before: PeerState, after: PeerState, now: Instant) {
        let (was_open, is_open) = (open_conn(before).is_some(), open_conn(after).is_some());
        if !was_open && is_open {
            info!(peer = %self.peer, state = ?after, "peer open");
            self.notify(PeerChangeKind::Up {
                realm: self.entry.shared().realm.clone().unwrap_or_default(),
            });
            if let Some(o) = self.target.as_mut().and_then(|t| t.opened.take()) {
                let _ = o.send(Ok(self.peer.to_string()));
            }
            self.watch(WatchdogEvent::ConnectionUp).await;
        }
        if was_open && !is_open {
            info!(peer = %self.peer, state = ?after, "peer no longer open");
            self.entry.shared().suspect = false;
            self.notify(PeerChangeKind::Down);
            self.watch(WatchdogEvent::ConnectionDown).await;
        }
        if after == PeerState::Closed && before != PeerState::Closed {
            if let Some(o) = self.target.as_mut().and_then(|t| t.opened.take()) {
                let _ = o.send(Err(PeerError::Closed));
            }
            if self.target.as_ref().is_some_and(|t| t.keep) && !self.stopping {
                self.reconnect_at = Some(now + self.node.limits.tc);
            }
        }
    }

    fn notify(&self, kind: PeerChangeKind) {
        self.node.table.notify(PeerChange {
            host: self.peer.to_string(),
            target: self.target.as_ref().map(|t| t.label.clone()),
            kind,
        });
    }

    /// Feeds the watchdog and carries out what it returns.
    pub(super) async fn watch(&mut self, event: WatchdogEvent) {
        let actions = self.watchdog.handle(event, now());
        for action in actions {
            let open = open_conn(self.state());
            match action {
                WatchdogAction::SendDwr => {
                    if let Some(conn) = open {
                        let mut dwr = base::dwr(&self.node.local);
                        self.node.ids.assign(&mut dwr);
                        self.send(conn, &dwr).await;
                    }
                }
                WatchdogAction::Failover if open.is_some() => {
                    warn!(peer = %self.peer, "watchdog: no DWA within Tw; peer suspect");
                    self.entry.shared().suspect = true;
                    self.notify(PeerChangeKind::Suspect);
                }
                // The connection is already gone: Down said it.
                WatchdogAction::Failover => {}
                WatchdogAction::Failback => {
                    info!(peer = %self.peer, "watchdog: peer answers again");
                    self.entry.shared().suspect = false;
                    self.notify(PeerChangeKind::Back);
                }
                WatchdogAction::CloseConnection => {
                    if let Some(conn) = open {
                        warn!(peer = %self.peer, "watchdog: peer down; closing");
                        Box::pin(self.transport_lost(conn)).await;
                    }
                }
                WatchdogAction::AttemptOpen => {
                    if self.target.as_ref().is_some_and(|t| t.keep) && !self.stopping {
                        Box::pin(self.step(PeerEvent::Start, Context::default())).await;
                    }
                }
            }
        }
    }

    pub(super) async fn timers(&mut self) {
        let now = now();
        if self.entry.shared().fsm.deadline().is_some_and(|d| d <= now) {
            self.step(PeerEvent::Timeout, Context::default()).await;
        }
        if self.watchdog.deadline().is_some_and(|d| d <= now) {
            self.watch(WatchdogEvent::TimerExpired).await;
        }
        if self.reconnect_at.is_some_and(|d| d <= now) {
            self.reconnect_at = None;
            self.step(PeerEvent::Start, Context::default()).await;
        }
    }

    /// The node is shutting down: `Stop` (DPR when open). Where the machine has no row for
    /// it, whatever is half-open is abandoned through the events that say so.
    pub(super) async fn stop(&mut self) {
        self.stopping = true;
        self.reconnect_at = None;
        let before = self.state();
        self.step(PeerEvent::Stop, Context::default()).await;
        if self.state() != before || before == PeerState::Closed && self.connecting.is_none() {
            return;
        }
        if self.connecting.take().is_some() {
            self.step(PeerEvent::IRcvConnNack, Context::default()).await;
        }
        for conn in [Conn::Initiator, Conn::Responder] {
            if self.link(conn).is_some() {
                self.transport_lost(conn).await;
            }
        }
    }
}
