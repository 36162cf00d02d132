//! The Diameter watchdog of RFC 3539 Appendix A (mandatory per RFC 6733 §5.5), sans-io.
//!
//! [`Watchdog`] is data plus transitions over `(event, now)`. The driver reports the
//! transport (connection up/down), every received message, and the expiry of the
//! deadline in [`Watchdog::deadline`]; it performs the returned [`WatchdogAction`]s in
//! order. `SetWatchdog()` in the RFC is internal here: it re-arms the deadline.
//!
//! # The table (RFC 3539 Appendix A), as implemented
//!
//! ```text
//! STATE    EVENT                         ACTIONS                          NEW STATE
//! INITIAL  Connection up                 SetWatchdog()                    OKAY
//! OKAY     Receive DWA                   Pending = FALSE, SetWatchdog()   OKAY
//!          Receive non-DWA               SetWatchdog()                    OKAY
//!          Timer expires && !Pending     SendWatchdog(), SetWatchdog(),
//!                                        Pending = TRUE                   OKAY
//!          Timer expires && Pending      Failover(), SetWatchdog()        SUSPECT
//!          Connection down               Failover(), SetWatchdog()        DOWN
//! SUSPECT  Receive DWA                   Pending = FALSE, Failback(),
//!                                        SetWatchdog()                    OKAY
//!          Receive non-DWA               Failback(), SetWatchdog()        OKAY
//!          Timer expires                 CloseConnection(), SetWatchdog() DOWN
//!          Connection down               CloseConnection(), SetWatchdog() DOWN
//! DOWN     Timer expires                 AttemptOpen(), SetWatchdog()     DOWN
//!          Connection up                 NumDWA = 0, SendWatchdog(),
//!                                        SetWatchdog(), Pending = TRUE    REOPEN
//! REOPEN   Receive DWA && NumDWA < 2     Pending = FALSE, NumDWA++        REOPEN
//!          Receive DWA && NumDWA == 2    Pending = FALSE, NumDWA++,
//!                                        Failback()                       OKAY
//!          Receive non-DWA               Throwaway()                      REOPEN
//!          Timer expires && !Pending     SendWatchdog(), SetWatchdog(),
//!                                        Pending = TRUE                   REOPEN
//!          Timer expires && Pending
//!            && NumDWA >= 0              NumDWA = -1, SetWatchdog()       REOPEN
//!          Timer expires && Pending
//!            && NumDWA < 0               CloseConnection(), SetWatchdog() DOWN
//!          Connection down               CloseConnection(), SetWatchdog() DOWN
//! ```
//!
//! # Choices where the RFC leaves room
//!
//! * Events without a row (e.g. a message in INITIAL or DOWN, connection up while OKAY)
//!   return no actions and keep the state.
//! * `Throwaway()` (a non-DWA message in REOPEN) has no action variant: `handle` returns
//!   nothing. Tollgate's driver still processes the peer's requests in REOPEN, and says why
//!   in `crate::driver`'s module doc; a DWR received in REOPEN is answered either way (that
//!   is the peer state machine's business, not the watchdog's).
//! * `SendWatchdog()` is [`WatchdogAction::SendDwr`]; the RFC's other procedures map to
//!   the variants of the same name.
//! * `TimerExpired` is acted on only when a deadline is armed and `now` has reached it;
//!   otherwise it is stale and ignored.
//! * **SetWatchdog** arms `now + Tw + jitter`. `Tw` is clamped to at least 6 s
//!   (RFC 3539 §3.4.1) and the jitter, drawn per arming from the driver's source, is
//!   clamped to ±2 s, so an arming is never less than 4 s away and never more than
//!   `Tw + 2 s`. The REOPEN → OKAY row has no SetWatchdog, so the running deadline is kept.
//! * **Length.** This file is just over 600 lines because the tests of every row live beside
//!   the table; the machine itself is under 300.

use std::fmt;
use std::time::{Duration, Instant};

/// Smallest Tw allowed (RFC 3539 §3.4.1).
pub const MIN_TW: Duration = Duration::from_secs(6);
/// Largest jitter magnitude per arming, in milliseconds (RFC 3539 §3.4.1: ±2 s).
pub const MAX_JITTER_MS: i64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchdogState {
    /// No connection has come up yet.
    Initial,
    Okay,
    /// A DWR went unanswered for Tw; traffic has been failed over.
    Suspect,
    /// The connection is closed; periodic reopen attempts.
    Down,
    /// A new connection is on probation until three DWAs arrive.
    Reopen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchdogEvent {
    ConnectionUp,
    ConnectionDown,
    /// Any received message other than a DWA (liveness).
    MessageReceived,
    DwaReceived,
    /// The deadline in [`Watchdog::deadline`] passed.
    TimerExpired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchdogAction {
    /// SendWatchdog(): send a DWR on the connection.
    SendDwr,
    /// Failover(): move outstanding and new requests to an alternate peer.
    Failover,
    /// Failback(): the peer may carry traffic again.
    Failback,
    /// CloseConnection(): close the transport connection.
    CloseConnection,
    /// AttemptOpen(): try to open a new transport connection.
    AttemptOpen,
}

/// RFC 3539 watchdog for one connection to one peer.
pub struct Watchdog {
    state: WatchdogState,
    /// A DWR is outstanding.
    pending: bool,
    /// DWAs received in REOPEN (−1 after an unanswered DWR there).
    num_dwa: i32,
    tw: Duration,
    deadline: Option<Instant>,
    jitter: Box<dyn FnMut() -> i64 + Send + Sync>,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .field("num_dwa", &self.num_dwa)
            .field("tw", &self.tw)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// `tw` is clamped to at least 6 s (RFC 3539 §3.4.1); every arming adds a jitter in ±2 s
    /// drawn from `jitter`, a deterministic function the driver supplies (e.g. a xorshift
    /// seeded per connection) so tests are reproducible. `jitter` returns milliseconds in
    /// -2000..=2000; values outside are clamped.
    pub fn new(tw: Duration, jitter: Box<dyn FnMut() -> i64 + Send + Sync>) -> Self {
        Self {
            state: WatchdogState::Initial,
            pending: false,
            num_dwa: 0,
            tw: tw.max(MIN_TW),
            deadline: None,
            jitter,
        }
    }

    pub fn state(&self) -> WatchdogState {
        self.state
    }

    /// The effective Tw (after clamping).
    pub fn tw(&self) -> Duration {
        self.tw
    }

    /// When the driver must deliver `TimerExpired` (None before the first connection).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Applies one event at `now`; returns the actions in order and moves to the next state.
    pub fn handle(&mut self, event: WatchdogEvent, now: Instant) -> Vec<WatchdogAction> {
        use WatchdogAction as A;
        use WatchdogEvent as E;
        use WatchdogState as S;

        if event == E::TimerExpired && !matches!(self.deadline, Some(d) if now >= d) {
            return Vec::new();
        }

        match (self.state, event) {
            (S::Initial, E::ConnectionUp) => {
                self.set_watchdog(now);
                self.state = S::Okay;
                vec![]
            }

            (S::Okay, E::DwaReceived) => {
                self.pending = false;
                self.set_watchdog(now);
                vec![]
            }
            (S::Okay, E::MessageReceived) => {
                self.set_watchdog(now);
                vec![]
            }
            (S::Okay, E::TimerExpired) if !self.pending => {
                self.set_watchdog(now);
                self.pending = true;
                vec![A::SendDwr]
            }
            (S::Okay, E::TimerExpired) => {
                self.set_watchdog(now);
                self.state = S::Suspect;
                vec![A::Failover]
            }
            (S::Okay, E::ConnectionDown) => {
                self.set_watchdog(now);
                self.state = S::Down;
                vec![A::Failover]
            }

            (S::Suspect, E::DwaReceived) => {
                self.pending = false;
                self.set_watchdog(now);
                self.state = S::Okay;
                vec![A::Failback]
            }
            (S::Suspect, E::MessageReceived) => {
                self.set_watchdog(now);
                self.state = S::Okay;
                vec![A::Failback]
            }
            (S::Suspect, E::TimerExpired) | (S::Suspect, E::ConnectionDown) => {
                self.set_watchdog(now);
                self.state = S::Down;
                vec![A::CloseConnection]
            }

            (S::Down, E::TimerExpired) => {
                self.set_watchdog(now);
                vec![A::AttemptOpen]
            }
            (S::Down, E::ConnectionUp) => {
                self.num_dwa = 0;
                self.set_watchdog(now);
                self.pending = true;
                self.state = S::Reopen;
                vec![A::SendDwr]
            }

            (S::Reopen, E::DwaReceived) => {
                self.pending = false;
                self.num_dwa += 1;
                if self.num_dwa >= 3 {
                    // The row "NumDWA == 2" (before the increment); no SetWatchdog.
                    self.state = S::Okay;
                    vec![A::Failback]
                } else {
                    vec![]
                }
            }
            // Throwaway(): the driver discards the message.
            (S::Reopen, E::MessageReceived) => vec![],
            (S::Reopen, E::TimerExpired) if !self.pending => {
                self.set_watchdog(now);
                self.pending = true;
                vec![A::SendDwr]
            }
            (S::Reopen, E::TimerExpired) if self.num_dwa >= 0 => {
                self.num_dwa = -1;
                self.set_watchdog(now);
                vec![]
            }
            (S::Reopen, E::TimerExpired) | (S::Reopen, E::ConnectionDown) => {
                self.set_watchdog(now);
                self.state = S::Down;
                vec![A::CloseConnection]
            }

            // No row: nothing happens.
            _ => vec![],
        }
    }

    /// SetWatchdog(): deadline = now + Tw + jitter, jitter clamped to ±2 s (≥ 4 s overall).
    fn set_watchdog(&mut self, now: Instant) {
        let jitter_ms = (self.jitter)().clamp(-MAX_JITTER_MS, MAX_JITTER_MS);
        let offset = Duration::from_millis(jitter_ms.unsigned_abs());
        let delay = if jitter_ms >= 0 {
            self.tw + offset
        } else {
            self.tw.saturating_sub(offset)
        };
        self.deadline = Some(now + delay);
    }
}

/// A small xorshift jitter source (no rand dependency): returns ms in -2000..=2000.
/// Deterministic for a given seed; seed 0 is replaced by a fixed non-zero constant.
pub fn jitter_source(seed: u64) -> Box<dyn FnMut() -> i64 + Send + Sync> {
    let mut x = if seed == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        seed
    };
    let span = (2 * MAX_JITTER_MS + 1) as u64;
    Box::new(move || {
        // xorshift64 (Marsaglia 2003, triple 13/7/17).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % span) as i64 - MAX_JITTER_MS
    })
}

#[cfg(test)]
mod tests {
    use super::WatchdogAction as A;
    use super::WatchdogEvent as E;
    use super::WatchdogState as S;
    use super::*;

    const TW: Duration = Duration::from_secs(30);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn no_jitter() -> Box<dyn FnMut() -> i64 + Send + Sync> {
        Box::new(|| 0)
    }

    /// An OKAY watchdog whose first deadline is t0 + 30 s.
    fn okay(t0: Instant) -> Watchdog {
        let mut w = Watchdog::new(TW, no_jitter());
        assert_eq!(w.handle(E::ConnectionUp, t0), []);
        assert_eq!(w.state(), S::Okay);
        assert_eq!(w.deadline(), Some(t0 + TW));
        w
    }

    /// Drives an OKAY watchdog into SUSPECT; returns the time of the failover.
    fn suspect(t0: Instant) -> (Watchdog, Instant) {
        let mut w = okay(t0);
        let t1 = w.deadline().unwrap();
        assert_eq!(w.handle(E::TimerExpired, t1), [A::SendDwr]);
        let t2 = w.deadline().unwrap();
        assert_eq!(w.handle(E::TimerExpired, t2), [A::Failover]);
        assert_eq!(w.state(), S::Suspect);
        (w, t2)
    }

    fn down(t0: Instant) -> (Watchdog, Instant) {
        let (mut w, t) = suspect(t0);
        let t3 = w.deadline().unwrap();
        assert_eq!(w.handle(E::TimerExpired, t3), [A::CloseConnection]);
        assert_eq!(w.state(), S::Down);
        assert!(t3 > t);
        (w, t3)
    }

    fn reopen(t0: Instant) -> (Watchdog, Instant) {
        let (mut w, t) = down(t0);
        let t_up = t + secs(1);
        assert_eq!(w.handle(E::ConnectionUp, t_up), [A::SendDwr]);
        assert_eq!(w.state(), S::Reopen);
        assert_eq!(w.deadline(), Some(t_up + TW));
        (w, t_up)
    }

    #[test]
    fn initial_waits_for_connection() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TW, no_jitter());
        assert_eq!(w.state(), S::Initial);
        assert_eq!(w.deadline(), None);
        assert_eq!(w.handle(E::TimerExpired, t0 + secs(100)), []);
        assert_eq!(w.handle(E::MessageReceived, t0), []);
        assert_eq!(w.handle(E::ConnectionDown, t0), []);
        assert_eq!(w.state(), S::Initial);
        assert_eq!(w.handle(E::ConnectionUp, t0), []);
        assert_eq!(w.state(), S::Okay);
        assert_eq!(w.deadline(), Some(t0 + TW));
    }

    #[test]
    fn okay_expiry_with_nothing_pending_sends_dwr() {
        let t0 = Instant::now();
        let mut w = okay(t0);
        assert_eq!(w.handle(E::TimerExpired, t0 + TW), [A::SendDwr]);
        assert!(w.pending);
        assert_eq!(w.state(), S::Okay);
        assert_eq!(w.deadline(), Some(t0 + TW + TW));
    }

    #[test]
    fn okay_second_expiry_with_dwr_pending_fails_over() {
        let t0 = Instant::now();
        let (w, t2) = suspect(t0);
        assert_eq!(w.deadline(), Some(t2 + TW));
    }

    #[test]
    fn okay_dwa_clears_pending_and_rearms() {
        let t0 = Instant::now();
        let mut w = okay(t0);
        w.handle(E::TimerExpired, t0 + TW);
        assert_eq!(w.handle(E::DwaReceived, t0 + secs(31)), []);
        assert!(!w.pending);
        assert_eq!(w.deadline(), Some(t0 + secs(61)));
        // Next expiry sends a fresh DWR rather than failing over.
        assert_eq!(w.handle(E::TimerExpired, t0 + secs(61)), [A::SendDwr]);
        assert_eq!(w.state(), S::Okay);
    }

    #[test]
    fn okay_message_rearms_but_keeps_pending() {
        let t0 = Instant::now();
        let mut w = okay(t0);
        // Traffic before the first expiry pushes the deadline out.
        assert_eq!(w.handle(E::MessageReceived, t0 + secs(20)), []);
        assert_eq!(w.deadline(), Some(t0 + secs(50)));
        assert_eq!(w.handle(E::TimerExpired, t0 + secs(30)), [], "stale");
        assert_eq!(w.handle(E::TimerExpired, t0 + secs(50)), [A::SendDwr]);
        // A non-DWA message re-arms but does not answer the DWR (RFC: no Pending = FALSE).
        assert_eq!(w.handle(E::MessageReceived, t0 + secs(60)), []);
        assert!(w.pending);
        assert_eq!(w.deadline(), Some(t0 + secs(90)));
        assert_eq!(w.handle(E::TimerExpired, t0 + secs(90)), [A::Failover]);
        assert_eq!(w.state(), S::Suspect);
    }

    #[test]
    fn okay_connection_down_fails_over() {
        let t0 = Instant::now();
        let mut w = okay(t0);
        assert_eq!(w.handle(E::ConnectionDown, t0 + secs(5)), [A::Failover]);
        assert_eq!(w.state(), S::Down);
        assert_eq!(w.deadline(), Some(t0 + secs(35)));
    }

    #[test]
    fn suspect_message_fails_back() {
        let t0 = Instant::now();
        let (mut w, t) = suspect(t0);
        assert_eq!(w.handle(E::MessageReceived, t + secs(1)), [A::Failback]);
        assert_eq!(w.state(), S::Okay);
        assert_eq!(w.deadline(), Some(t + secs(1) + TW));
        assert!(w.pending, "a non-DWA message leaves the DWR outstanding");
    }

    #[test]
    fn suspect_dwa_fails_back_and_clears_pending() {
        let t0 = Instant::now();
        let (mut w, t) = suspect(t0);
        assert_eq!(w.handle(E::DwaReceived, t + secs(1)), [A::Failback]);
        assert_eq!(w.state(), S::Okay);
        assert!(!w.pending);
    }

    #[test]
    fn suspect_expiry_closes_and_goes_down() {
        let t0 = Instant::now();
        let (w, t3) = down(t0);
        assert_eq!(w.deadline(), Some(t3 + TW));
    }

    #[test]
    fn suspect_connection_down_closes() {
        let t0 = Instant::now();
        let (mut w, t) = suspect(t0);
        assert_eq!(w.handle(E::ConnectionDown, t), [A::CloseConnection]);
        assert_eq!(w.state(), S::Down);
    }

    #[test]
    fn down_expiry_attempts_open_and_rearms() {
        let t0 = Instant::now();
        let (mut w, t) = down(t0);
        assert_eq!(w.handle(E::MessageReceived, t), []);
        assert_eq!(w.handle(E::TimerExpired, t + TW), [A::AttemptOpen]);
        assert_eq!(w.state(), S::Down);
        assert_eq!(w.deadline(), Some(t + TW + TW));
        assert_eq!(w.handle(E::TimerExpired, t + TW + TW), [A::AttemptOpen]);
    }

    #[test]
    fn down_connection_up_sends_dwr_and_reopens() {
        let t0 = Instant::now();
        let (w, _) = reopen(t0);
        assert_eq!(w.num_dwa, 0);
        assert!(w.pending);
    }

    #[test]
    fn reopen_three_dwas_fail_back() {
        let t0 = Instant::now();
        let (mut w, t) = reopen(t0);
        // DWA 1 answers the DWR sent on connection up.
        assert_eq!(w.handle(E::DwaReceived, t + secs(1)), []);
        assert_eq!((w.state(), w.num_dwa, w.pending), (S::Reopen, 1, false));
        // Tw: nothing pending → next DWR.
        assert_eq!(w.handle(E::TimerExpired, t + TW), [A::SendDwr]);
        assert_eq!(w.handle(E::DwaReceived, t + TW + secs(1)), []);
        assert_eq!((w.state(), w.num_dwa), (S::Reopen, 2));
        let next = w.deadline().unwrap();
        assert_eq!(w.handle(E::TimerExpired, next), [A::SendDwr]);
        let armed = w.deadline();
        assert_eq!(w.handle(E::DwaReceived, next + secs(1)), [A::Failback]);
        assert_eq!(w.state(), S::Okay);
        assert_eq!(w.num_dwa, 3);
        assert!(!w.pending);
        assert_eq!(w.deadline(), armed, "no SetWatchdog on REOPEN → OKAY");
    }

    #[test]
    fn reopen_throws_away_other_messages() {
        let t0 = Instant::now();
        let (mut w, t) = reopen(t0);
        let before = w.deadline();
        assert_eq!(w.handle(E::MessageReceived, t + secs(1)), []);
        assert_eq!(w.state(), S::Reopen);
        assert_eq!(w.deadline(), before, "Throwaway() does not re-arm");
        assert_eq!(w.handle(E::ConnectionUp, t + secs(1)), []);
    }

    #[test]
    fn reopen_timeouts_per_table() {
        let t0 = Instant::now();
        let (mut w, t) = reopen(t0);
        // Pending && NumDWA >= 0 → NumDWA = -1, re-arm, stay.
        assert_eq!(w.handle(E::TimerExpired, t + TW), []);
        assert_eq!((w.state(), w.num_dwa, w.pending), (S::Reopen, -1, true));
        assert_eq!(w.deadline(), Some(t + TW + TW));
        // Pending && NumDWA < 0 → close, DOWN.
        assert_eq!(w.handle(E::TimerExpired, t + TW + TW), [A::CloseConnection]);
        assert_eq!(w.state(), S::Down);
        assert_eq!(w.deadline(), Some(t + TW + TW + TW));
    }

    #[test]
    fn reopen_late_dwa_after_minus_one_restarts_count() {
        let t0 = Instant::now();
        let (mut w, t) = reopen(t0);
        w.handle(E::TimerExpired, t + TW);
        assert_eq!(w.num_dwa, -1);
        assert_eq!(w.handle(E::DwaReceived, t + TW + secs(1)), []);
        assert_eq!((w.state(), w.num_dwa, w.pending), (S::Reopen, 0, false));
        // Not pending: the next expiry sends a DWR.
        let d = w.deadline().unwrap();
        assert_eq!(w.handle(E::TimerExpired, d), [A::SendDwr]);
    }

    #[test]
    fn reopen_connection_down_closes() {
        let t0 = Instant::now();
        let (mut w, t) = reopen(t0);
        assert_eq!(w.handle(E::ConnectionDown, t), [A::CloseConnection]);
        assert_eq!(w.state(), S::Down);
    }

    #[test]
    fn tw_below_six_seconds_is_clamped() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(secs(1), no_jitter());
        assert_eq!(w.tw(), secs(6));
        w.handle(E::ConnectionUp, t0);
        assert_eq!(w.deadline(), Some(t0 + secs(6)));
        assert_eq!(Watchdog::new(Duration::ZERO, no_jitter()).tw(), secs(6));
        assert_eq!(Watchdog::new(secs(7), no_jitter()).tw(), secs(7));
    }

    #[test]
    fn jitter_is_applied_and_clamped() {
        let t0 = Instant::now();
        let mut draws = vec![1500, -1500, 9000, -9000].into_iter();
        let mut w = Watchdog::new(secs(1), Box::new(move || draws.next().unwrap_or(0)));
        w.handle(E::ConnectionUp, t0);
        assert_eq!(w.deadline(), Some(t0 + Duration::from_millis(7500)));
        w.handle(E::MessageReceived, t0);
        assert_eq!(w.deadline(), Some(t0 + Duration::from_millis(4500)));
        w.handle(E::MessageReceived, t0);
        assert_eq!(w.deadline(), Some(t0 + secs(8)), "+9 s clamped to +2 s");
        w.handle(E::MessageReceived, t0);
        assert_eq!(w.deadline(), Some(t0 + secs(4)), "-9 s clamped to -2 s");
    }

    #[test]
    fn jitter_stays_within_two_seconds_over_many_armings() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(TW, jitter_source(42));
        w.handle(E::ConnectionUp, t0);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            w.handle(E::MessageReceived, now);
            let delay = w.deadline().unwrap() - now;
            assert!(delay >= TW - secs(2) && delay <= TW + secs(2), "{delay:?}");
            lo = lo.min(delay);
            hi = hi.max(delay);
        }
        // The source actually spreads: both sides of Tw are used.
        assert!(lo < TW - Duration::from_millis(1500), "{lo:?}");
        assert!(hi > TW + Duration::from_millis(1500), "{hi:?}");
    }

    #[test]
    fn jitter_source_is_deterministic_and_bounded() {
        let mut a = jitter_source(7);
        let mut b = jitter_source(7);
        let mut c = jitter_source(8);
        let xs: Vec<i64> = (0..1000).map(|_| a()).collect();
        let ys: Vec<i64> = (0..1000).map(|_| b()).collect();
        let zs: Vec<i64> = (0..1000).map(|_| c()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|j| (-2000..=2000).contains(j)));
        let mut zero = jitter_source(0);
        assert!((0..1000).map(|_| zero()).any(|j| j != 0));
    }

    #[test]
    fn debug_omits_the_jitter_closure() {
        let w = Watchdog::new(TW, no_jitter());
        let s = format!("{w:?}");
        assert!(s.contains("Initial") && s.contains("tw"));
    }
}
