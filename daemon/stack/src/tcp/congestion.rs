//! Congestion control (RFC 5681): the [`CongestionControl`] trait the
//! connection drives, with NewReno (RFC 5681 + RFC 6582) and CUBIC (RFC 8312)
//! implementations. CUBIC is the default, as on Linux.
//!
//! Division of labour: the connection detects loss (dup ACKs, SACK, RTO) and
//! runs the recovery state machine (RFC 6582 / RFC 6675), including any cwnd
//! inflation during fast recovery; the controller only decides cwnd and
//! ssthresh at these events.

use crate::config::CongestionAlgorithm;
use crate::time::{Duration, Instant};

/// Initial window: min(10*MSS, max(2*MSS, 14600)) (RFC 6928 §2).
pub fn initial_window(mss: usize) -> usize {
    let _ = mss;
    todo!("helper: RFC 6928")
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
    /// sample this ACK produced, if any.
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: Option<Duration>, in_flight: usize);
    /// Loss detected by duplicate ACKs or SACK: entering fast recovery.
    /// Sets ssthresh (and cwnd = ssthresh) per the algorithm (RFC 5681 §3.2 step 2 / RFC 8312 §4.5).
    fn on_congestion_event(&mut self, now: Instant, in_flight: usize);
    /// Fast recovery ended (full ACK, RFC 6582 §3.2 step 3): cwnd = ssthresh.
    fn on_recovery_exit(&mut self, now: Instant);
    /// The retransmission timer expired: ssthresh = max(in_flight/2, 2*MSS),
    /// cwnd = one MSS (RFC 5681 §3.1, equation 4 and the loss window).
    fn on_retransmission_timeout(&mut self, now: Instant, in_flight: usize);
    /// The connection was idle longer than an RTO: restart window (RFC 5681 §4.1).
    fn on_idle_restart(&mut self, now: Instant);
}

/// Builds a controller of the given algorithm for a connection with send MSS `mss`.
pub fn new_controller(algorithm: CongestionAlgorithm, mss: usize) -> Box<dyn CongestionControl> {
    let _ = (algorithm, mss);
    todo!("helper: NewReno and CUBIC")
}
