//! The Diameter peer state machine of RFC 6733 §5.6, sans-io.
//!
//! [`PeerFsm`] is data plus transitions over `(event, now)`: the driver task turns socket
//! and timer happenings into [`PeerEvent`]s, calls [`PeerFsm::handle`], performs the
//! returned [`PeerAction`]s in order, and delivers [`PeerEvent::Timeout`] once
//! [`PeerFsm::deadline`] has passed. Nothing here reads a clock or touches a socket.
//!
//! # The table (RFC 6733 §5.6.1), as implemented
//!
//! `I` is the connection we initiated, `R` the one we accepted.
//!
//! ```text
//! state            event              action               next state
//! -------------------------------------------------------------------------
//! Closed           Start              I-Snd-Conn-Req       Wait-Conn-Ack
//!                  R-Conn-CER         R-Accept,            R-Open
//!                                     Process-CER,
//!                                     R-Snd-CEA
//! Wait-Conn-Ack    I-Rcv-Conn-Ack     I-Snd-CER            Wait-I-CEA
//!                  I-Rcv-Conn-Nack    Cleanup              Closed
//!                  R-Conn-CER         R-Accept,            Wait-Conn-Ack/Elect
//!                                     Process-CER
//!                  Timeout            Error                Closed
//! Wait-I-CEA       I-Rcv-CEA          Process-CEA          I-Open
//!                  R-Conn-CER         R-Accept,            Wait-Returns
//!                                     Process-CER, Elect
//!                  I-Peer-Disc        I-Disc               Closed
//!                  I-Rcv-Non-CEA      Error                Closed
//!                  Timeout            Error                Closed
//! Wait-Conn-Ack/   I-Rcv-Conn-Ack     I-Snd-CER, Elect     Wait-Returns
//! Elect            I-Rcv-Conn-Nack    R-Snd-CEA            R-Open
//!                  R-Peer-Disc        R-Disc               Wait-Conn-Ack
//!                  R-Conn-CER         R-Reject             Wait-Conn-Ack/Elect
//!                  Timeout            Error                Closed
//! Wait-Returns     I-Peer-Disc        I-Disc, R-Snd-CEA    R-Open
//!                  (Win-Election has the same row; the election runs inside `handle`)
//!                  I-Rcv-CEA          R-Disc               I-Open
//!                  R-Peer-Disc        R-Disc               Wait-I-CEA
//!                  R-Conn-CER         R-Reject             Wait-Returns
//!                  Timeout            Error                Closed
//! R-Open           Send-Message       R-Snd-Message        R-Open
//!                  R-Rcv-Message      Process              R-Open
//!                  R-Rcv-DWR          Process-DWR,         R-Open
//!                                     R-Snd-DWA
//!                  R-Rcv-DWA          Process-DWA          R-Open
//!                  R-Conn-CER         R-Reject             R-Open
//!                  R-Rcv-CER          R-Snd-CEA            R-Open       (RFC 3588's row)
//!                  Stop               R-Snd-DPR            Closing
//!                  R-Rcv-DPR          R-Snd-DPA            Closing
//!                  R-Peer-Disc        R-Disc               Closed
//! I-Open           (the same rows with I in place of R; R-Conn-CER is still R-Reject)
//! any state        R-Conn-CER refused R-Reject             (unchanged)
//!                  by Process-CER
//! Closing          I-Rcv-Message      Process              Closing      (see below)
//!                  R-Rcv-Message      Process              Closing
//!                  R-Conn-CER         R-Reject             Closing      (see below)
//!                  I-Rcv-DPA          I-Disc               Closed
//!                  R-Rcv-DPA          R-Disc               Closed
//!                  Timeout            Error                Closed
//!                  I-Peer-Disc        I-Disc               Closed
//!                  R-Peer-Disc        R-Disc               Closed
//! ```
//!
//! # Choices where the RFC leaves room
//!
//! * **Events without a row do nothing.** An event the table does not list for the current
//!   state returns no actions and keeps the state. This covers traffic on the "wrong"
//!   connection (e.g. `IRcvMessage` in R-Open), a CEA outside the waiting states, and late
//!   events after the machine has moved on. The driver drops such a message (and logs it).
//! * **A second CER on an open connection is answered.** RFC 6733 dropped RFC 3588's
//!   `R-Open, R-Rcv-CER → R-Snd-CEA` row (and its I-Open twin) without saying what replaces
//!   it. A peer that sends one waits for a CEA, so a silent drop would hang it until its
//!   own timer; we keep RFC 3588's row and answer with what we share.
//! * **Closing still processes messages.** RFC 6733 gives Closing no message rows, but
//!   §5.4 has the DPR sender stop sending *new* requests, not drop what is under way: the
//!   answers to requests either side has in flight cross the DPR and DPA on the wire, and
//!   dropping them would turn a clean shutdown into Tx expiries and retransmissions
//!   elsewhere. So a message on either connection in Closing is processed; the timer and
//!   the disconnect still end the state. A new inbound CER meanwhile (a peer reconnecting
//!   before our side of the old connection has closed) is rejected like in every other
//!   state that holds a connection, so it gets a CEA and retries, instead of no answer.
//! * **Process-CER runs before the event.** The driver checks an inbound CER (allowed peer,
//!   an application in common) before it delivers `R-Conn-CER`, and says in `acceptable`
//!   whether it passed. A refused CER is `R-Reject` in every state (the CEA carries the
//!   reason) and changes nothing, so a stranger cannot move a peer's machine.
//! * **Elect is computed here.** Where the table says `Elect`, [`PeerFsm::handle`] emits
//!   [`PeerAction::Elect`] (informational: the driver has nothing to do for it) and runs the
//!   election of §5.6.4 with the Origin-Host of the CER that was accepted. If we win, it
//!   continues at once as if `Win-Election` had arrived in Wait-Returns (`I-Disc,
//!   R-Snd-CEA`, next R-Open). If we lose, the machine stays in Wait-Returns and waits for
//!   the winner to close our responder connection (`R-Peer-Disc`) or for our CEA
//!   (`I-Rcv-CEA`). There is no separate `Win-Election` event: nothing outside the machine
//!   can know the outcome sooner.
//! * **CEA outcome.** The table has one `I-Rcv-CEA` row; RFC 6733 §5.3 says a CEA whose
//!   Result-Code is not a success ends the connection. So in Wait-I-CEA an unsuccessful CEA
//!   gives `Process-CEA, Error` and Closed. In Wait-Returns a successful CEA gives
//!   `Process-CEA, R-Disc` and I-Open (Process-CEA is added so the driver learns the
//!   negotiated applications before the open state); an unsuccessful one means our
//!   initiator connection is useless, so it is handled like the `I-Peer-Disc` row:
//!   `Process-CEA, I-Disc, R-Snd-CEA`, next R-Open.
//! * **Timers.** Each waiting state has one timer: Wait-Conn-Ack and Wait-Conn-Ack/Elect
//!   the connect timeout, Wait-I-CEA and Wait-Returns the CEA timeout, Closing the DPA
//!   timeout. Entering a state whose timer differs from the previous state's arms it at
//!   `now + timeout`; moving between two states that share a timer (Wait-Conn-Ack ↔
//!   Wait-Conn-Ack/Elect, Wait-I-CEA ↔ Wait-Returns) keeps the running deadline, because it
//!   is still the same connection attempt or the same CER that is waited on. Stable states
//!   have no timer.
//! * **Stale timeouts.** `Timeout` is acted on only when a deadline is armed and `now` has
//!   reached it; otherwise it is ignored, so a timer the driver set for an earlier state
//!   cannot fire into a later one.
//! * **Length.** This file is over 600 lines because a unit test for every row of the table
//!   lives beside it; the machine itself is the first 450.
//! * **`Error`** means: disconnect every transport connection this machine holds (either
//!   politely or abortively) and free local resources (RFC 6733 §5.6 action list).

use std::cmp::Ordering;
use std::time::{Duration, Instant};

/// The states of RFC 6733 §5.6. Closed, I-Open and R-Open are the stable ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    Closed,
    WaitConnAck,
    WaitICea,
    /// "Wait-Conn-Ack/Elect": our connect is pending and an inbound CER was accepted.
    WaitConnAckElect,
    WaitReturns,
    /// Open on the connection we accepted.
    ROpen,
    /// Open on the connection we initiated.
    IOpen,
    Closing,
}

/// Which transport connection an event or action concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conn {
    /// The connection we initiated (`I-` in the RFC).
    Initiator,
    /// The connection we accepted (`R-` in the RFC).
    Responder,
}

/// Events of RFC 6733 §5.6, by their RFC names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerEvent {
    /// The local node wants to connect to the peer.
    Start,
    /// The local node wants to disconnect from the peer.
    Stop,
    /// The armed timer (see [`PeerFsm::deadline`]) expired.
    Timeout,
    /// An inbound connection delivered a CER from `peer_host`; `acceptable` is the outcome
    /// of Process-CER (an allowed peer with an application in common).
    RConnCer {
        peer_host: String,
        acceptable: bool,
    },
    /// Our outbound connect succeeded.
    IRcvConnAck,
    /// Our outbound connect failed.
    IRcvConnNack,
    /// A CER arrived on the open responder connection (RFC 3588's row: answered).
    RRcvCer,
    /// A CER arrived on the open initiator connection (RFC 3588's row: answered).
    IRcvCer,
    /// A CEA arrived on the initiator connection; `success` is a 2xxx Result-Code.
    IRcvCea {
        success: bool,
    },
    /// A CEA arrived on the responder connection (no row in RFC 6733; ignored).
    RRcvCea {
        success: bool,
    },
    /// Something other than a CEA arrived on the initiator connection while waiting for one.
    IRcvNonCea,
    IRcvDpr,
    RRcvDpr,
    IRcvDpa,
    RRcvDpa,
    /// The initiator connection was closed by the peer or the transport.
    IPeerDisc,
    /// The responder connection was closed by the peer or the transport.
    RPeerDisc,
    /// The local node wants to send a message to the peer.
    SendMessage,
    IRcvMessage,
    RRcvMessage,
    IRcvDwr,
    RRcvDwr,
    IRcvDwa,
    RRcvDwa,
}

/// What the driver must do, in the order returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerAction {
    /// I-Snd-Conn-Req: open a transport connection to the peer.
    SndConnReq,
    /// R-Accept: keep the inbound connection that delivered the CER.
    Accept,
    /// R-Reject: answer the extra inbound CER (or not) and close that connection.
    Reject,
    /// Process-CER: check the peer's capabilities from the accepted CER.
    ProcessCer,
    SndCer(Conn),
    SndCea(Conn),
    /// Cleanup: the connect failed; free its resources.
    Cleanup,
    /// Error: disconnect every connection held for this peer and free resources.
    Error,
    /// Process-CEA: read the peer's capabilities from the CEA.
    ProcessCea,
    SndDpr(Conn),
    SndDpa(Conn),
    /// I-Disc / R-Disc: close that transport connection.
    Disc(Conn),
    /// Informational: the election ran inside [`PeerFsm::handle`]; nothing to do.
    Elect,
    SndMessage(Conn),
    SndDwa(Conn),
    ProcessDwr,
    ProcessDwa,
    /// Process: hand the received message to the routing/application layer.
    Process,
}

/// How long each waiting state may last before `Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsmTimers {
    /// Wait-Conn-Ack and Wait-Conn-Ack/Elect.
    pub connect_timeout: Duration,
    /// Wait-I-CEA and Wait-Returns.
    pub cea_timeout: Duration,
    /// Closing.
    pub dpa_timeout: Duration,
}

impl Default for FsmTimers {
    /// 30 s to connect (the order of Tc, RFC 6733 §2.1), 30 s for the CEA, 10 s for the DPA
    /// (we are leaving anyway; a silent peer should not hold shutdown up for long).
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            cea_timeout: Duration::from_secs(30),
            dpa_timeout: Duration::from_secs(10),
        }
    }
}

/// Which timer a state runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Connect,
    Cea,
    Dpa,
}

impl PeerState {
    fn timer(self) -> Option<Timer> {
        match self {
            PeerState::WaitConnAck | PeerState::WaitConnAckElect => Some(Timer::Connect),
            PeerState::WaitICea | PeerState::WaitReturns => Some(Timer::Cea),
            PeerState::Closing => Some(Timer::Dpa),
            PeerState::Closed | PeerState::ROpen | PeerState::IOpen => None,
        }
    }
}

/// The peer state machine for one configured or inbound peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFsm {
    state: PeerState,
    local_host: String,
    /// Origin-Host of the last accepted CER, used by the election.
    peer_host: Option<String>,
    deadline: Option<Instant>,
    timers: FsmTimers,
}

impl PeerFsm {
    /// A machine in Closed with no timer armed.
    pub fn new(local_host: &str, timers: FsmTimers) -> Self {
        Self {
            state: PeerState::Closed,
            local_host: local_host.to_owned(),
            peer_host: None,
            deadline: None,
            timers,
        }
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Our Origin-Host.
    pub fn local_host(&self) -> &str {
        &self.local_host
    }

    /// The Origin-Host of the last CER this machine accepted (`R-Accept`), if any.
    pub fn peer_host(&self) -> Option<&str> {
        self.peer_host.as_deref()
    }

    /// When the driver must deliver `Timeout` (None when no timer is armed).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The election (§5.6.4): true when the local Origin-Host is higher than the peer's,
    /// compared octet-wise after ASCII lower-casing. Equal names win for neither side.
    pub fn wins_election(local: &str, peer: &str) -> bool {
        let lower = |s: &str| {
            s.bytes()
                .map(|b| b.to_ascii_lowercase())
                .collect::<Vec<u8>>()
        };
        lower(local).cmp(&lower(peer)) == Ordering::Greater
    }

    /// Applies one event at `now`; returns the actions in order and moves to the next state.
    pub fn handle(&mut self, event: PeerEvent, now: Instant) -> Vec<PeerAction> {
        use Conn::{Initiator as I, Responder as R};
        use PeerAction as A;
        use PeerEvent as E;
        use PeerState as S;

        if event == E::Timeout && !matches!(self.deadline, Some(d) if now >= d) {
            // Stale or early timer: nothing is due.
            return Vec::new();
        }

        let (actions, next) = match (self.state, event) {
            // Process-CER refused the inbound connection: it alone goes.
            (
                state,
                E::RConnCer {
                    acceptable: false, ..
                },
            ) => (vec![A::Reject], state),

            // Closed
            (S::Closed, E::Start) => (vec![A::SndConnReq], S::WaitConnAck),
            (S::Closed, E::RConnCer { peer_host, .. }) => {
                self.peer_host = Some(peer_host);
                (vec![A::Accept, A::ProcessCer, A::SndCea(R)], S::ROpen)
            }

            // Wait-Conn-Ack
            (S::WaitConnAck, E::IRcvConnAck) => (vec![A::SndCer(I)], S::WaitICea),
            (S::WaitConnAck, E::IRcvConnNack) => (vec![A::Cleanup], S::Closed),
            (S::WaitConnAck, E::RConnCer { peer_host, .. }) => {
                self.peer_host = Some(peer_host);
                (vec![A::Accept, A::ProcessCer], S::WaitConnAckElect)
            }
            (S::WaitConnAck, E::Timeout) => (vec![A::Error], S::Closed),

            // Wait-I-CEA
            (S::WaitICea, E::IRcvCea { success: true }) => (vec![A::ProcessCea], S::IOpen),
            (S::WaitICea, E::IRcvCea { success: false }) => {
                (vec![A::ProcessCea, A::Error], S::Closed)
            }
            (S::WaitICea, E::RConnCer { peer_host, .. }) => {
                self.peer_host = Some(peer_host);
                self.elect(vec![A::Accept, A::ProcessCer, A::Elect])
            }
            (S::WaitICea, E::IPeerDisc) => (vec![A::Disc(I)], S::Closed),
            (S::WaitICea, E::IRcvNonCea) => (vec![A::Error], S::Closed),
            (S::WaitICea, E::Timeout) => (vec![A::Error], S::Closed),

            // Wait-Conn-Ack/Elect
            (S::WaitConnAckElect, E::IRcvConnAck) => self.elect(vec![A::SndCer(I), A::Elect]),
            (S::WaitConnAckElect, E::IRcvConnNack) => (vec![A::SndCea(R)], S::ROpen),
            (S::WaitConnAckElect, E::RPeerDisc) => (vec![A::Disc(R)], S::WaitConnAck),
            (S::WaitConnAckElect, E::RConnCer { .. }) => (vec![A::Reject], S::WaitConnAckElect),
            (S::WaitConnAckElect, E::Timeout) => (vec![A::Error], S::Closed),

            // Wait-Returns
            (S::WaitReturns, E::IPeerDisc) => (vec![A::Disc(I), A::SndCea(R)], S::ROpen),
            (S::WaitReturns, E::IRcvCea { success: true }) => {
                (vec![A::ProcessCea, A::Disc(R)], S::IOpen)
            }
            (S::WaitReturns, E::IRcvCea { success: false }) => {
                (vec![A::ProcessCea, A::Disc(I), A::SndCea(R)], S::ROpen)
            }
            (S::WaitReturns, E::RPeerDisc) => (vec![A::Disc(R)], S::WaitICea),
            (S::WaitReturns, E::RConnCer { .. }) => (vec![A::Reject], S::WaitReturns),
            (S::WaitReturns, E::Timeout) => (vec![A::Error], S::Closed),

            // R-Open
            (S::ROpen, E::SendMessage) => (vec![A::SndMessage(R)], S::ROpen),
            (S::ROpen, E::RRcvMessage) => (vec![A::Process], S::ROpen),
            (S::ROpen, E::RRcvDwr) => (vec![A::ProcessDwr, A::SndDwa(R)], S::ROpen),
            (S::ROpen, E::RRcvDwa) => (vec![A::ProcessDwa], S::ROpen),
            (S::ROpen, E::RConnCer { .. }) => (vec![A::Reject], S::ROpen),
            (S::ROpen, E::RRcvCer) => (vec![A::SndCea(R)], S::ROpen),
            (S::ROpen, E::Stop) => (vec![A::SndDpr(R)], S::Closing),
            (S::ROpen, E::RRcvDpr) => (vec![A::SndDpa(R)], S::Closing),
            (S::ROpen, E::RPeerDisc) => (vec![A::Disc(R)], S::Closed),

            // I-Open
            (S::IOpen, E::SendMessage) => (vec![A::SndMessage(I)], S::IOpen),
            (S::IOpen, E::IRcvMessage) => (vec![A::Process], S::IOpen),
            (S::IOpen, E::IRcvDwr) => (vec![A::ProcessDwr, A::SndDwa(I)], S::IOpen),
            (S::IOpen, E::IRcvDwa) => (vec![A::ProcessDwa], S::IOpen),
            (S::IOpen, E::RConnCer { .. }) => (vec![A::Reject], S::IOpen),
            (S::IOpen, E::IRcvCer) => (vec![A::SndCea(I)], S::IOpen),
            (S::IOpen, E::Stop) => (vec![A::SndDpr(I)], S::Closing),
            (S::IOpen, E::IRcvDpr) => (vec![A::SndDpa(I)], S::Closing),
            (S::IOpen, E::IPeerDisc) => (vec![A::Disc(I)], S::Closed),

            // Closing
            (S::Closing, E::IRcvDpa) | (S::Closing, E::IPeerDisc) => (vec![A::Disc(I)], S::Closed),
            (S::Closing, E::RRcvDpa) | (S::Closing, E::RPeerDisc) => (vec![A::Disc(R)], S::Closed),
            (S::Closing, E::Timeout) => (vec![A::Error], S::Closed),
            (S::Closing, E::RConnCer { .. }) => (vec![A::Reject], S::Closing),
            (S::Closing, E::IRcvMessage) | (S::Closing, E::RRcvMessage) => {
                (vec![A::Process], S::Closing)
            }

            // No row: nothing happens.
            (state, _) => (Vec::new(), state),
        };

        self.enter(next, now);
        actions
    }

    /// Runs the election after `actions` (which end in `Elect`): on a win, continues with
    /// the Wait-Returns/Win-Election row; on a loss, waits in Wait-Returns.
    fn elect(&self, mut actions: Vec<PeerAction>) -> (Vec<PeerAction>, PeerState) {
        let won = self
            .peer_host
            .as_deref()
            .is_some_and(|peer| Self::wins_election(&self.local_host, peer));
        if won {
            actions.extend([
                PeerAction::Disc(Conn::Initiator),
                PeerAction::SndCea(Conn::Responder),
            ]);
            (actions, PeerState::ROpen)
        } else {
            (actions, PeerState::WaitReturns)
        }
    }

    /// Moves to `next`, arming, keeping or clearing the deadline (see the module docs).
    fn enter(&mut self, next: PeerState, now: Instant) {
        let (old, new) = (self.state.timer(), next.timer());
        if old != new {
            self.deadline = new.map(|timer| {
                now + match timer {
                    Timer::Connect => self.timers.connect_timeout,
                    Timer::Cea => self.timers.cea_timeout,
                    Timer::Dpa => self.timers.dpa_timeout,
                }
            });
        }
        self.state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::Conn::{Initiator as I, Responder as R};
    use super::PeerAction as A;
    use super::PeerEvent as E;
    use super::PeerState as S;
    use super::*;

    const LOCAL: &str = "m.tollgate.example";
    /// Sorts below LOCAL: we win against it.
    const LOWER: &str = "a.peer.example";
    /// Sorts above LOCAL: we lose against it.
    const HIGHER: &str = "z.peer.example";

    fn timers() -> FsmTimers {
        FsmTimers {
            connect_timeout: Duration::from_secs(5),
            cea_timeout: Duration::from_secs(7),
            dpa_timeout: Duration::from_secs(3),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn cer(host: &str) -> PeerEvent {
        E::RConnCer {
            peer_host: host.to_owned(),
            acceptable: true,
        }
    }

    fn refused_cer(host: &str) -> PeerEvent {
        E::RConnCer {
            peer_host: host.to_owned(),
            acceptable: false,
        }
    }

    fn fsm() -> PeerFsm {
        PeerFsm::new(LOCAL, timers())
    }

    /// A machine in R-Open (responder path) at t0.
    fn r_open(t0: Instant) -> PeerFsm {
        let mut f = fsm();
        f.handle(cer(LOWER), t0);
        assert_eq!(f.state(), S::ROpen);
        f
    }

    /// A machine in Wait-I-CEA (initiator path), CER sent at t0 + 1 s.
    fn wait_i_cea(t0: Instant) -> PeerFsm {
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(E::IRcvConnAck, t0 + secs(1));
        assert_eq!(f.state(), S::WaitICea);
        f
    }

    fn i_open(t0: Instant) -> PeerFsm {
        let mut f = wait_i_cea(t0);
        assert_eq!(
            f.handle(E::IRcvCea { success: true }, t0 + secs(2)),
            [A::ProcessCea]
        );
        assert_eq!(f.state(), S::IOpen);
        f
    }

    // ---- responder ----

    #[test]
    fn closed_to_r_open_on_inbound_cer() {
        let t0 = Instant::now();
        let mut f = fsm();
        assert_eq!(f.deadline(), None);
        let acts = f.handle(cer("Peer.Example"), t0);
        assert_eq!(acts, [A::Accept, A::ProcessCer, A::SndCea(R)]);
        assert_eq!(f.state(), S::ROpen);
        assert_eq!(f.peer_host(), Some("Peer.Example"));
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn r_open_traffic_stays_open() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        assert_eq!(f.handle(E::RRcvDwr, t0), [A::ProcessDwr, A::SndDwa(R)]);
        assert_eq!(f.handle(E::RRcvDwa, t0), [A::ProcessDwa]);
        assert_eq!(f.handle(E::RRcvMessage, t0), [A::Process]);
        assert_eq!(f.handle(E::SendMessage, t0), [A::SndMessage(R)]);
        assert_eq!(f.handle(cer("other.example"), t0), [A::Reject]);
        assert_eq!(f.peer_host(), Some(LOWER), "a rejected CER does not rebind");
        assert_eq!(f.state(), S::ROpen);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn r_open_ignores_events_without_a_row() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        for ev in [
            E::IRcvMessage,
            E::IRcvDwr,
            E::IRcvCer,
            E::RRcvCea { success: true },
            E::Start,
            E::Timeout,
            E::IPeerDisc,
        ] {
            assert_eq!(f.handle(ev, t0 + secs(100)), []);
            assert_eq!(f.state(), S::ROpen);
        }
    }

    #[test]
    fn r_open_peer_disconnect_closes() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        assert_eq!(f.handle(E::RPeerDisc, t0), [A::Disc(R)]);
        assert_eq!(f.state(), S::Closed);
    }

    #[test]
    fn r_open_dpr_received_then_peer_closes() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        assert_eq!(f.handle(E::RRcvDpr, t0 + secs(1)), [A::SndDpa(R)]);
        assert_eq!(f.state(), S::Closing);
        assert_eq!(f.deadline(), Some(t0 + secs(1) + secs(3)));
        assert_eq!(f.handle(E::RPeerDisc, t0 + secs(2)), [A::Disc(R)]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn r_open_stop_then_dpa() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        assert_eq!(f.handle(E::Stop, t0 + secs(10)), [A::SndDpr(R)]);
        assert_eq!(f.state(), S::Closing);
        assert_eq!(f.deadline(), Some(t0 + secs(13)));
        assert_eq!(f.handle(E::RRcvDpa, t0 + secs(11)), [A::Disc(R)]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn closing_timeout_is_an_error() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        f.handle(E::Stop, t0);
        // Early timeout is stale and ignored.
        assert_eq!(f.handle(E::Timeout, t0 + secs(2)), []);
        assert_eq!(f.state(), S::Closing);
        assert_eq!(f.handle(E::Timeout, t0 + secs(3)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn closing_processes_what_is_under_way_but_sends_nothing_new() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        f.handle(E::Stop, t0);
        assert_eq!(f.handle(E::RRcvMessage, t0), [A::Process]);
        assert_eq!(f.handle(E::SendMessage, t0), []);
        assert_eq!(f.handle(E::RRcvDwr, t0), []);
        assert_eq!(f.handle(cer(LOWER), t0), [A::Reject]);
        assert_eq!(f.state(), S::Closing);
    }

    // ---- initiator ----

    #[test]
    fn initiator_happy_path() {
        let t0 = Instant::now();
        let mut f = fsm();
        assert_eq!(f.handle(E::Start, t0), [A::SndConnReq]);
        assert_eq!(f.state(), S::WaitConnAck);
        assert_eq!(f.deadline(), Some(t0 + secs(5)));
        assert_eq!(f.handle(E::IRcvConnAck, t0 + secs(1)), [A::SndCer(I)]);
        assert_eq!(f.state(), S::WaitICea);
        assert_eq!(f.deadline(), Some(t0 + secs(8)));
        assert_eq!(
            f.handle(E::IRcvCea { success: true }, t0 + secs(2)),
            [A::ProcessCea]
        );
        assert_eq!(f.state(), S::IOpen);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn initiator_conn_nack() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        assert_eq!(f.handle(E::IRcvConnNack, t0), [A::Cleanup]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn wait_conn_ack_timeout() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        assert_eq!(f.handle(E::Timeout, t0 + secs(4)), []);
        assert_eq!(f.state(), S::WaitConnAck);
        assert_eq!(f.handle(E::Timeout, t0 + secs(5)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn cea_failure_closes() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        assert_eq!(
            f.handle(E::IRcvCea { success: false }, t0 + secs(2)),
            [A::ProcessCea, A::Error]
        );
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn non_cea_in_wait_i_cea_closes() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        assert_eq!(f.handle(E::IRcvNonCea, t0 + secs(2)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
    }

    #[test]
    fn wait_i_cea_peer_disc() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        assert_eq!(f.handle(E::IPeerDisc, t0 + secs(2)), [A::Disc(I)]);
        assert_eq!(f.state(), S::Closed);
    }

    #[test]
    fn wait_i_cea_timeout() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        assert_eq!(f.deadline(), Some(t0 + secs(8)));
        assert_eq!(f.handle(E::Timeout, t0 + secs(7)), []);
        assert_eq!(f.handle(E::Timeout, t0 + secs(9)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn i_open_traffic_and_peer_disc() {
        let t0 = Instant::now();
        let mut f = i_open(t0);
        assert_eq!(f.handle(E::IRcvDwr, t0), [A::ProcessDwr, A::SndDwa(I)]);
        assert_eq!(f.handle(E::IRcvDwa, t0), [A::ProcessDwa]);
        assert_eq!(f.handle(E::IRcvMessage, t0), [A::Process]);
        assert_eq!(f.handle(E::SendMessage, t0), [A::SndMessage(I)]);
        assert_eq!(f.handle(cer(LOWER), t0), [A::Reject]);
        assert_eq!(f.handle(E::RRcvMessage, t0), []);
        assert_eq!(f.handle(E::RRcvCer, t0), []);
        assert_eq!(f.handle(E::IRcvCer, t0), [A::SndCea(I)]);
        assert_eq!(f.state(), S::IOpen);
        assert_eq!(f.handle(E::IPeerDisc, t0), [A::Disc(I)]);
        assert_eq!(f.state(), S::Closed);
    }

    #[test]
    fn i_open_stop_then_dpa() {
        let t0 = Instant::now();
        let mut f = i_open(t0);
        assert_eq!(f.handle(E::Stop, t0 + secs(4)), [A::SndDpr(I)]);
        assert_eq!(f.state(), S::Closing);
        assert_eq!(f.deadline(), Some(t0 + secs(7)));
        assert_eq!(f.handle(E::IRcvDpa, t0 + secs(5)), [A::Disc(I)]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn i_open_dpr_received_then_peer_closes() {
        let t0 = Instant::now();
        let mut f = i_open(t0);
        assert_eq!(f.handle(E::IRcvDpr, t0 + secs(4)), [A::SndDpa(I)]);
        assert_eq!(f.state(), S::Closing);
        assert_eq!(f.handle(E::IPeerDisc, t0 + secs(5)), [A::Disc(I)]);
        assert_eq!(f.state(), S::Closed);
    }

    #[test]
    fn closed_ignores_everything_but_start_and_cer() {
        let t0 = Instant::now();
        let mut f = fsm();
        for ev in [
            E::Stop,
            E::Timeout,
            E::IRcvConnAck,
            E::IRcvCea { success: true },
            E::SendMessage,
            E::RPeerDisc,
        ] {
            assert_eq!(f.handle(ev, t0), []);
            assert_eq!(f.state(), S::Closed);
        }
    }

    // ---- election ----

    #[test]
    fn election_is_case_insensitive_octet_order() {
        assert!(PeerFsm::wins_election("b.example", "a.example"));
        assert!(!PeerFsm::wins_election("a.example", "b.example"));
        // 'Z' (0x5A) < 'a' (0x61) octet-wise, but lower-cased 'z' > 'a'.
        assert!(PeerFsm::wins_election("ZED.example", "alpha.example"));
        assert!(!PeerFsm::wins_election("alpha.example", "ZED.example"));
        // Equal after lower-casing: nobody wins.
        assert!(!PeerFsm::wins_election("Peer.Example", "peer.example"));
        assert!(!PeerFsm::wins_election("peer.example", "PEER.EXAMPLE"));
        // A prefix sorts lower.
        assert!(PeerFsm::wins_election("peer.example.net", "peer.example"));
    }

    #[test]
    fn cer_while_connecting_goes_to_elect_state_keeping_connect_timer() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        let acts = f.handle(cer(LOWER), t0 + secs(1));
        assert_eq!(acts, [A::Accept, A::ProcessCer]);
        assert_eq!(f.state(), S::WaitConnAckElect);
        assert_eq!(f.deadline(), Some(t0 + secs(5)));
        // A second inbound CER is rejected.
        assert_eq!(f.handle(cer("x.example"), t0 + secs(2)), [A::Reject]);
        assert_eq!(f.state(), S::WaitConnAckElect);
        assert_eq!(f.peer_host(), Some(LOWER));
    }

    #[test]
    fn elect_state_ack_and_win_goes_r_open() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(cer(LOWER), t0);
        let acts = f.handle(E::IRcvConnAck, t0 + secs(1));
        assert_eq!(acts, [A::SndCer(I), A::Elect, A::Disc(I), A::SndCea(R)]);
        assert_eq!(f.state(), S::ROpen);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn elect_state_ack_and_lose_waits_returns() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(cer(HIGHER), t0);
        let acts = f.handle(E::IRcvConnAck, t0 + secs(1));
        assert_eq!(acts, [A::SndCer(I), A::Elect]);
        assert_eq!(f.state(), S::WaitReturns);
        assert_eq!(f.deadline(), Some(t0 + secs(8)), "CEA timer armed");
    }

    #[test]
    fn elect_state_uses_case_insensitive_compare() {
        let t0 = Instant::now();
        let mut f = PeerFsm::new("ZED.example", timers());
        f.handle(E::Start, t0);
        f.handle(cer("alpha.example"), t0);
        f.handle(E::IRcvConnAck, t0);
        assert_eq!(f.state(), S::ROpen);
    }

    #[test]
    fn elect_state_nack_opens_responder() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(cer(HIGHER), t0);
        assert_eq!(f.handle(E::IRcvConnNack, t0), [A::SndCea(R)]);
        assert_eq!(f.state(), S::ROpen);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn elect_state_responder_disc_back_to_wait_conn_ack() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(cer(HIGHER), t0 + secs(2));
        assert_eq!(f.handle(E::RPeerDisc, t0 + secs(3)), [A::Disc(R)]);
        assert_eq!(f.state(), S::WaitConnAck);
        assert_eq!(f.deadline(), Some(t0 + secs(5)), "same connect attempt");
    }

    #[test]
    fn elect_state_timeout() {
        let t0 = Instant::now();
        let mut f = fsm();
        f.handle(E::Start, t0);
        f.handle(cer(HIGHER), t0);
        assert_eq!(f.handle(E::Timeout, t0 + secs(5)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn cer_while_waiting_cea_win_goes_r_open() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        let acts = f.handle(cer(LOWER), t0 + secs(2));
        assert_eq!(
            acts,
            [A::Accept, A::ProcessCer, A::Elect, A::Disc(I), A::SndCea(R)]
        );
        assert_eq!(f.state(), S::ROpen);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn cer_while_waiting_cea_lose_waits_returns_then_cea_opens_initiator() {
        let t0 = Instant::now();
        let mut f = wait_i_cea(t0);
        let acts = f.handle(cer(HIGHER), t0 + secs(2));
        assert_eq!(acts, [A::Accept, A::ProcessCer, A::Elect]);
        assert_eq!(f.state(), S::WaitReturns);
        assert_eq!(f.deadline(), Some(t0 + secs(8)), "still the same CEA wait");
        assert_eq!(
            f.handle(E::IRcvCea { success: true }, t0 + secs(3)),
            [A::ProcessCea, A::Disc(R)]
        );
        assert_eq!(f.state(), S::IOpen);
        assert_eq!(f.deadline(), None);
    }

    fn wait_returns(t0: Instant) -> PeerFsm {
        let mut f = wait_i_cea(t0);
        f.handle(cer(HIGHER), t0 + secs(2));
        assert_eq!(f.state(), S::WaitReturns);
        f
    }

    #[test]
    fn wait_returns_failed_cea_falls_back_to_responder() {
        let t0 = Instant::now();
        let mut f = wait_returns(t0);
        assert_eq!(
            f.handle(E::IRcvCea { success: false }, t0 + secs(3)),
            [A::ProcessCea, A::Disc(I), A::SndCea(R)]
        );
        assert_eq!(f.state(), S::ROpen);
    }

    #[test]
    fn wait_returns_responder_disc_back_to_wait_i_cea() {
        let t0 = Instant::now();
        let mut f = wait_returns(t0);
        assert_eq!(f.handle(E::RPeerDisc, t0 + secs(3)), [A::Disc(R)]);
        assert_eq!(f.state(), S::WaitICea);
        assert_eq!(f.deadline(), Some(t0 + secs(8)));
        assert_eq!(
            f.handle(E::IRcvCea { success: true }, t0 + secs(4)),
            [A::ProcessCea]
        );
        assert_eq!(f.state(), S::IOpen);
    }

    #[test]
    fn wait_returns_initiator_disc_opens_responder() {
        let t0 = Instant::now();
        let mut f = wait_returns(t0);
        assert_eq!(
            f.handle(E::IPeerDisc, t0 + secs(3)),
            [A::Disc(I), A::SndCea(R)]
        );
        assert_eq!(f.state(), S::ROpen);
    }

    #[test]
    fn wait_returns_rejects_extra_cer_and_times_out() {
        let t0 = Instant::now();
        let mut f = wait_returns(t0);
        assert_eq!(f.handle(cer(LOWER), t0 + secs(3)), [A::Reject]);
        assert_eq!(f.state(), S::WaitReturns);
        assert_eq!(f.peer_host(), Some(HIGHER));
        assert_eq!(f.handle(E::RRcvDpr, t0 + secs(3)), []);
        assert_eq!(f.handle(E::Timeout, t0 + secs(8)), [A::Error]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn a_refused_cer_is_rejected_and_moves_nothing() {
        let t0 = Instant::now();
        let mut f = fsm();
        assert_eq!(f.handle(refused_cer(LOWER), t0), [A::Reject]);
        assert_eq!(f.state(), S::Closed);
        assert_eq!(f.peer_host(), None);
        let mut f = wait_i_cea(t0);
        let deadline = f.deadline();
        assert_eq!(f.handle(refused_cer(HIGHER), t0 + secs(1)), [A::Reject]);
        assert_eq!(f.state(), S::WaitICea);
        assert_eq!(f.deadline(), deadline);
        let mut f = r_open(t0);
        assert_eq!(f.handle(refused_cer(LOWER), t0), [A::Reject]);
        assert_eq!(f.state(), S::ROpen);
    }

    #[test]
    fn a_second_cer_on_an_open_connection_is_answered() {
        let t0 = Instant::now();
        let mut f = r_open(t0);
        assert_eq!(f.handle(E::RRcvCer, t0), [A::SndCea(R)]);
        assert_eq!(f.state(), S::ROpen);
    }

    #[test]
    fn default_timers() {
        let t = FsmTimers::default();
        assert_eq!(t.connect_timeout, secs(30));
        assert_eq!(t.cea_timeout, secs(30));
        assert_eq!(t.dpa_timeout, secs(10));
    }
}
