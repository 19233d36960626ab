//! Congestion control (RFC 5681): the [`CongestionControl`] trait the
//! connection drives, with NewReno (RFC 5681 + RFC 6582) and CUBIC (RFC 8312,
//! as revised by RFC 9438) implementations. CUBIC is the default, as on Linux.
//!
//! Division of labour: the connection detects loss (dup ACKs, SACK, RTO) and
//! runs the recovery state machine (RFC 6582 / RFC 6675), including any cwnd
//! inflation during fast recovery; the controller only decides cwnd and
//! ssthresh at these events.
//!
//! Shared rules (both controllers):
//! - Slow start grows cwnd by what each ACK newly acknowledges (RFC 5681
//!   §3.1, counted in bytes as RFC 3465 §2.2 but without its L = 2*SMSS
//!   limit, as Linux's `tcp_slow_start` grows by the packets acked): a
//!   stretch ACK for four segments grows the window by four.
//! - The window only grows while it is in use: the flight before the ACK must
//!   be at least half the window (RFC 7661 §4.3's "validated" test, with the
//!   flight standing in for pipeACK). An application-limited sender therefore
//!   does not accumulate a window it never tested.
//! - cwnd never falls below one SMSS; ssthresh after loss never below 2*SMSS
//!   (RFC 5681 §3.1, equation 4).

use crate::config::CongestionAlgorithm;
use crate::time::{Duration, Instant};

mod cubic;
mod newreno;

pub use cubic::Cubic;
pub use newreno::NewReno;

/// Initial window: min(10*MSS, max(2*MSS, 14600)) (RFC 6928 §2).
pub fn initial_window(mss: usize) -> usize {
    (10 * mss).min((2 * mss).max(14_600))
}

/// What every congestion controller provides.
pub trait CongestionControl: core::fmt::Debug + Send {
    /// Which algorithm this is.
    fn algorithm(&self) -> CongestionAlgorithm;
    /// Congestion window in bytes.
    fn cwnd(&self) -> usize;
    /// Slow-start threshold in bytes (`usize::MAX` until the first loss).
    fn ssthresh(&self) -> usize;
    /// The send MSS changed (after the handshake or PMTU discovery).
    fn set_mss(&mut self, mss: usize);
    /// New data was cumulatively acknowledged outside loss recovery:
    /// slow start or congestion avoidance (RFC 5681 §3.1). `rtt` is the
    /// sample this ACK produced, if any. `in_flight` is the flight when the
    /// ACK arrived, before it took `acked` bytes off (FlightSize as the
    /// sender last filled it).
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: Option<Duration>, in_flight: usize);
    /// Loss detected by duplicate ACKs, SACK or RACK: entering fast
    /// recovery. Sets ssthresh (and cwnd = ssthresh) per the algorithm from
    /// the congestion window, as Linux does (`tcp_reno_ssthresh`,
    /// `bictcp_recalc_ssthresh`), rather than from RFC 5681 §3.1's FlightSize:
    /// when a loss is detected the cumulative ACK has usually already taken
    /// the part of the window below the hole out of the flight, and the
    /// flight then understates the window that met the loss (RFC 9438 §4.6
    /// allows cwnd where, as here, the window only grows while it is used).
    fn on_congestion_event(&mut self, now: Instant);
    /// Fast recovery ended (full ACK, RFC 6582 §3.2 step 3): cwnd = ssthresh.
    fn on_recovery_exit(&mut self, now: Instant);
    /// The retransmission timer expired: cwnd = one MSS (RFC 5681 §3.1, the
    /// loss window) and, when `reduce` is set, ssthresh = max(cwnd/2, 2*MSS)
    /// (CUBIC: its own factor, RFC 9438 §4.8). The connection clears
    /// `reduce` when this window's loss was already answered (a timeout
    /// during fast recovery, or a backed-off timeout repeating), as Linux's
    /// `tcp_enter_loss` does: one reduction per window of data.
    fn on_retransmission_timeout(&mut self, now: Instant, reduce: bool);
    /// The connection was idle longer than an RTO: restart window (RFC 5681 §4.1).
    fn on_idle_restart(&mut self, now: Instant);
    /// The SYN or SYN,ACK was lost (retransmitted): the window after the
    /// handshake is one segment, not the initial window (RFC 5681 §3.1
    /// "if the SYN or SYN/ACK is lost, the initial window ... MUST be one
    /// segment", kept by RFC 6928 §2). Called before any data is sent.
    fn on_syn_loss(&mut self);
    /// A copy of this controller, taken just before a window reduction
    /// (fast recovery or a timeout) and kept while that reduction may still
    /// prove spurious: the state to go back to (RFC 4015 §3 saves cwnd and
    /// ssthresh; Linux's `prior_cwnd`/`prior_ssthresh`; here the whole
    /// controller, so CUBIC's W_max comes back too).
    fn boxed_clone(&self) -> Box<dyn CongestionControl>;
    /// This controller is such a copy, and the reduction proved spurious
    /// (RFC 3522 / RFC 3708 detection): it takes over again from a
    /// controller whose window is `cwnd_now` bytes. The window is the
    /// larger of the two (Linux's `tcp_undo_cwnd_reduction`), and growth
    /// starts a new epoch from it.
    fn resume_after_undo(&mut self, cwnd_now: usize);
}

/// Builds a controller of the given algorithm for a connection with send MSS `mss`.
pub fn new_controller(algorithm: CongestionAlgorithm, mss: usize) -> Box<dyn CongestionControl> {
    match algorithm {
        CongestionAlgorithm::NewReno => Box::new(NewReno::new(mss)),
        CongestionAlgorithm::Cubic => Box::new(Cubic::new(mss)),
    }
}

/// A connection's controller, inline in its TCB: the algorithms are a
/// closed set, so an enum spares every connection a heap allocation and
/// its pointer (the `Box<dyn>` of [`new_controller`] cost ~112 bytes per
/// connection; this is the size of the larger algorithm, ~88).
#[derive(Clone, Debug)]
pub enum Controller {
    NewReno(NewReno),
    Cubic(Cubic),
}

impl Controller {
    /// A controller of `algorithm` for send MSS `mss`.
    pub fn new(algorithm: CongestionAlgorithm, mss: usize) -> Controller {
        match algorithm {
            CongestionAlgorithm::NewReno => Controller::NewReno(NewReno::new(mss)),
            CongestionAlgorithm::Cubic => Controller::Cubic(Cubic::new(mss)),
        }
    }

    fn inner(&self) -> &dyn CongestionControl {
        match self {
            Controller::NewReno(c) => c,
            Controller::Cubic(c) => c,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn CongestionControl {
        match self {
            Controller::NewReno(c) => c,
            Controller::Cubic(c) => c,
        }
    }
}

impl CongestionControl for Controller {
    fn algorithm(&self) -> CongestionAlgorithm {
        self.inner().algorithm()
    }
    fn cwnd(&self) -> usize {
        self.inner().cwnd()
    }
    fn ssthresh(&self) -> usize {
        self.inner().ssthresh()
    }
    fn set_mss(&mut self, mss: usize) {
        self.inner_mut().set_mss(mss);
    }
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: Option<Duration>, in_flight: usize) {
        self.inner_mut().on_ack(now, acked, rtt, in_flight);
    }
    fn on_congestion_event(&mut self, now: Instant) {
        self.inner_mut().on_congestion_event(now);
    }
    fn on_recovery_exit(&mut self, now: Instant) {
        self.inner_mut().on_recovery_exit(now);
    }
    fn on_retransmission_timeout(&mut self, now: Instant, reduce: bool) {
        self.inner_mut().on_retransmission_timeout(now, reduce);
    }
    fn on_idle_restart(&mut self, now: Instant) {
        self.inner_mut().on_idle_restart(now);
    }
    fn on_syn_loss(&mut self) {
        self.inner_mut().on_syn_loss();
    }
    fn boxed_clone(&self) -> Box<dyn CongestionControl> {
        Box::new(self.clone())
    }
    fn resume_after_undo(&mut self, cwnd_now: usize) {
        self.inner_mut().resume_after_undo(cwnd_now);
    }
}

/// Slow-start growth for one ACK: the bytes it newly acknowledged (RFC
/// 5681 §3.1; Linux applies no RFC 3465 L limit).
fn slow_start_increase(acked: usize) -> usize {
    acked
}

/// Whether the window was in use when this ACK arrived, so that growing it
/// is justified: flight before the ACK ≥ cwnd/2 (RFC 7661 §4.3).
fn window_is_validated(cwnd: usize, flight_before_ack: usize) -> bool {
    flight_before_ack.saturating_mul(2) >= cwnd
}

/// An MSS of zero would make every per-segment computation meaningless; the
/// connection never sends one, but the controller must not divide by it.
fn sane_mss(mss: usize) -> usize {
    mss.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One thing that can happen to a controller.
    #[derive(Clone, Debug)]
    enum Event {
        Ack {
            acked: usize,
            rtt_ms: Option<u64>,
            in_flight: usize,
        },
        Loss,
        RecoveryExit,
        Timeout {
            reduce: bool,
        },
        Idle,
        Mss(usize),
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            6 => (0usize..200_000, proptest::option::of(0u64..2000), 0usize..2_000_000)
                .prop_map(|(acked, rtt_ms, in_flight)| Event::Ack { acked, rtt_ms, in_flight }),
            1 => Just(Event::Loss),
            1 => Just(Event::RecoveryExit),
            1 => any::<bool>().prop_map(|reduce| Event::Timeout { reduce }),
            1 => Just(Event::Idle),
            1 => (0usize..10_000).prop_map(Event::Mss),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_event_sequence(
            algorithm in prop_oneof![Just(CongestionAlgorithm::NewReno), Just(CongestionAlgorithm::Cubic)],
            mss in 1usize..9000,
            events in proptest::collection::vec((0u64..5000, arb_event()), 0..200),
        ) {
            let mut cc = new_controller(algorithm, mss);
            let mut mss = mss;
            let mut now = Instant::ZERO;
            let mut lost = false;
            for (advance_ms, event) in events {
                now += Duration::from_millis(advance_ms);
                match event {
                    Event::Ack { acked, rtt_ms, in_flight } => {
                        cc.on_ack(now, acked, rtt_ms.map(Duration::from_millis), in_flight)
                    }
                    Event::Loss => {
                        cc.on_congestion_event(now);
                        lost = true;
                    }
                    Event::RecoveryExit => cc.on_recovery_exit(now),
                    Event::Timeout { reduce } => {
                        cc.on_retransmission_timeout(now, reduce);
                        lost |= reduce;
                        prop_assert_eq!(cc.cwnd(), mss);
                    }
                    Event::Idle => cc.on_idle_restart(now),
                    Event::Mss(new) => {
                        cc.set_mss(new);
                        mss = new.max(1);
                    }
                }
                prop_assert!(cc.cwnd() >= mss, "cwnd {} below one MSS {}", cc.cwnd(), mss);
                if lost {
                    // 2 segments, allowing for rounding after an MSS change.
                    prop_assert!(cc.ssthresh() + 1 >= 2 * mss, "ssthresh {}", cc.ssthresh());
                } else {
                    prop_assert_eq!(cc.ssthresh(), usize::MAX);
                }
            }
        }
    }

    #[test]
    fn initial_window_rfc6928() {
        // 10 segments up to 1460 bytes...
        assert_eq!(initial_window(536), 5360);
        assert_eq!(initial_window(1460), 14_600);
        // ...then capped at 14600 bytes but at least 2 segments.
        assert_eq!(initial_window(4000), 14_600);
        assert_eq!(initial_window(8960), 17_920);
    }

    #[test]
    fn factory_builds_the_requested_algorithm() {
        for algorithm in [CongestionAlgorithm::NewReno, CongestionAlgorithm::Cubic] {
            let cc = new_controller(algorithm, 1460);
            assert_eq!(cc.algorithm(), algorithm);
            assert_eq!(cc.cwnd(), 14_600);
            assert_eq!(cc.ssthresh(), usize::MAX);
        }
    }

    #[test]
    fn syn_loss_leaves_one_segment_whatever_the_algorithm() {
        for algorithm in [CongestionAlgorithm::NewReno, CongestionAlgorithm::Cubic] {
            let mut cc = new_controller(algorithm, 1460);
            cc.on_syn_loss();
            assert_eq!(cc.cwnd(), 1460, "{algorithm:?}");
            assert_eq!(
                cc.ssthresh(),
                usize::MAX,
                "{algorithm:?}: no loss of data yet"
            );
            // An MSS change keeps it one segment (not a fresh initial window).
            cc.set_mss(1000);
            assert_eq!(cc.cwnd(), 1000, "{algorithm:?}");
        }
    }

    #[test]
    fn validation_rule() {
        assert!(window_is_validated(10_000, 5000));
        assert!(!window_is_validated(10_000, 4999));
    }
}
