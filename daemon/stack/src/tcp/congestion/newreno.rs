//! NewReno window arithmetic (RFC 5681 §3.1, RFC 6582 for the recovery exit),
//! with appropriate byte counting (RFC 3465) in both phases.
//!
//! Invariants: `cwnd >= mss`; `ssthresh` is `usize::MAX` until the first
//! loss and at least 2*MSS afterwards; `bytes_acked < cwnd` outside the
//! moment of an increase.

use super::{
    CongestionControl, initial_window, sane_mss, slow_start_increase, window_is_validated,
};
use crate::config::CongestionAlgorithm;
use crate::time::{Duration, Instant};

/// The NewReno controller.
#[derive(Clone, Debug)]
pub struct NewReno {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew (RFC 3465 §2.1).
    bytes_acked: usize,
    /// No ACK or loss seen yet: an MSS change re-derives the initial window.
    pristine: bool,
}

impl NewReno {
    pub fn new(mss: usize) -> Self {
        let mss = sane_mss(mss);
        NewReno {
            mss,
            cwnd: initial_window(mss),
            ssthresh: usize::MAX,
            bytes_acked: 0,
            pristine: true,
        }
    }

    /// ssthresh after a loss: max(cwnd / 2, 2*SMSS): RFC 5681 §3.1's
    /// equation 4 with cwnd for FlightSize, as Linux's `tcp_reno_ssthresh`
    /// (see [`CongestionControl::on_congestion_event`]).
    fn reduced_ssthresh(&self) -> usize {
        (self.cwnd / 2).max(2 * self.mss)
    }
}

/// Rescales a byte count measured in `old` segments to `new` ones.
pub(super) fn rescale(bytes: usize, old: usize, new: usize) -> usize {
    let scaled = (bytes as u128 * new as u128) / old as u128;
    usize::try_from(scaled).unwrap_or(usize::MAX)
}

impl CongestionControl for NewReno {
    fn algorithm(&self) -> CongestionAlgorithm {
        CongestionAlgorithm::NewReno
    }

    fn cwnd(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: usize) {
        let mss = sane_mss(mss);
        if mss == self.mss {
            return;
        }
        if self.pristine {
            self.cwnd = initial_window(mss);
        } else {
            // Keep the window's size in segments, as Linux's packet-counted cwnd does.
            self.cwnd = rescale(self.cwnd, self.mss, mss).max(mss);
            if self.ssthresh != usize::MAX {
                self.ssthresh = rescale(self.ssthresh, self.mss, mss).max(2 * mss);
            }
            self.bytes_acked = 0;
        }
        self.mss = mss;
    }

    fn on_ack(&mut self, _now: Instant, acked: usize, _rtt: Option<Duration>, in_flight: usize) {
        self.pristine = false;
        if acked == 0 || !window_is_validated(self.cwnd, in_flight) {
            return;
        }
        let mut acked = acked;
        if self.cwnd < self.ssthresh {
            // Slow start (RFC 5681 §3.1, RFC 3465 §2.2), up to ssthresh; bytes
            // beyond it count towards congestion avoidance.
            let room = self.ssthresh - self.cwnd;
            let increase = slow_start_increase(acked).min(room);
            self.cwnd += increase;
            if self.cwnd < self.ssthresh {
                return;
            }
            acked -= increase.min(acked);
        }
        // Congestion avoidance: one SMSS per cwnd of acknowledged bytes,
        // i.e. about one segment per RTT (RFC 5681 §3.1, RFC 3465 §2.1).
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.mss);
        }
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        self.pristine = false;
        // RFC 5681 §3.2 step 2; the 3*SMSS inflation of step 3 is the connection's.
        self.ssthresh = self.reduced_ssthresh();
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }

    fn on_recovery_exit(&mut self, _now: Instant) {
        // RFC 6582 §3.2 step 3, the "cwnd = ssthresh" option (deflating the window).
        if self.ssthresh != usize::MAX {
            self.cwnd = self.ssthresh;
        }
        self.bytes_acked = 0;
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, reduce: bool) {
        self.pristine = false;
        // RFC 5681 §3.1: equation 4 and the loss window LW = 1 SMSS.
        if reduce {
            self.ssthresh = self.reduced_ssthresh();
        }
        self.cwnd = self.mss;
        self.bytes_acked = 0;
    }

    fn on_idle_restart(&mut self, _now: Instant) {
        // RFC 5681 §4.1: RW = min(IW, cwnd).
        self.cwnd = self.cwnd.min(initial_window(self.mss));
        self.bytes_acked = 0;
    }

    fn on_syn_loss(&mut self) {
        self.cwnd = self.mss;
        self.bytes_acked = 0;
        self.pristine = false;
    }

    fn boxed_clone(&self) -> Box<dyn CongestionControl> {
        Box::new(self.clone())
    }

    fn resume_after_undo(&mut self, cwnd_now: usize) {
        self.pristine = false;
        self.cwnd = self.cwnd.max(cwnd_now);
        self.bytes_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;
    const NOW: Instant = Instant::ZERO;

    /// Acknowledges one window's worth of bytes in ACKs of `per_ack` bytes,
    /// the sender refilling the window after each ACK; returns cwnd afterwards.
    fn one_rtt(cc: &mut NewReno, per_ack: usize) -> usize {
        let mut unacked = cc.cwnd();
        while unacked > 0 {
            let acked = per_ack.min(unacked);
            unacked -= acked;
            let full_pipe = cc.cwnd();
            cc.on_ack(NOW, acked, None, full_pipe);
        }
        cc.cwnd()
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let mut cc = NewReno::new(MSS);
        assert_eq!(cc.cwnd(), 10 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 20 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 40 * MSS);
        // Delayed ACKs (2 segments each) still double.
        assert_eq!(one_rtt(&mut cc, 2 * MSS), 80 * MSS);
    }

    #[test]
    fn slow_start_grows_by_the_segments_acknowledged() {
        let mut cc = NewReno::new(MSS);
        // A stretch ACK for four segments grows the window by four (RFC
        // 5681 §3.1 as Linux; RFC 3465's L = 2 would give two).
        cc.on_ack(NOW, 4 * MSS, None, 10 * MSS);
        assert_eq!(cc.cwnd(), 14 * MSS);
    }

    #[test]
    fn congestion_avoidance_adds_one_segment_per_rtt() {
        let mut cc = NewReno::new(MSS);
        cc.cwnd = 40 * MSS;
        cc.on_congestion_event(NOW);
        assert_eq!(cc.ssthresh(), 20 * MSS);
        assert_eq!(cc.cwnd(), 20 * MSS);
        cc.on_recovery_exit(NOW);
        assert_eq!(one_rtt(&mut cc, MSS), 21 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 22 * MSS);
        assert_eq!(one_rtt(&mut cc, 2 * MSS), 23 * MSS);
        // Tiny ACKs add up the same way.
        assert_eq!(one_rtt(&mut cc, 100), 24 * MSS);
    }

    #[test]
    fn slow_start_stops_at_ssthresh() {
        let mut cc = NewReno::new(MSS);
        cc.cwnd = 30 * MSS;
        cc.on_retransmission_timeout(NOW, true);
        assert_eq!(cc.ssthresh(), 15 * MSS);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 2 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 4 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 8 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 15 * MSS);
        assert_eq!(one_rtt(&mut cc, MSS), 16 * MSS);
    }

    #[test]
    fn loss_halves_the_window_with_a_floor() {
        let mut cc = NewReno::new(MSS);
        cc.cwnd = 3 * MSS;
        cc.on_congestion_event(NOW);
        assert_eq!(cc.ssthresh(), 2 * MSS);
        assert_eq!(cc.cwnd(), 2 * MSS);
    }

    #[test]
    fn rto_collapses_to_one_segment() {
        let mut cc = NewReno::new(MSS);
        one_rtt(&mut cc, MSS);
        cc.on_retransmission_timeout(NOW, true);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 10 * MSS);
        // A repeated (backed-off) timeout of the same window: no second cut.
        cc.on_retransmission_timeout(NOW, false);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 10 * MSS);
    }

    #[test]
    fn application_limited_sender_does_not_grow() {
        let mut cc = NewReno::new(MSS);
        for _ in 0..100 {
            // One segment at a time in a ten-segment window.
            cc.on_ack(NOW, MSS, None, MSS);
        }
        assert_eq!(cc.cwnd(), 10 * MSS);
    }

    #[test]
    fn idle_restart_caps_at_initial_window() {
        let mut cc = NewReno::new(MSS);
        one_rtt(&mut cc, MSS);
        one_rtt(&mut cc, MSS);
        cc.on_idle_restart(NOW);
        assert_eq!(cc.cwnd(), 10 * MSS);
        cc.on_retransmission_timeout(NOW, true);
        cc.on_idle_restart(NOW);
        assert_eq!(cc.cwnd(), MSS);
    }

    #[test]
    fn mss_change() {
        let mut cc = NewReno::new(536);
        cc.set_mss(1460);
        assert_eq!(cc.cwnd(), 14_600);
        cc.cwnd = 40 * 1460;
        cc.on_congestion_event(NOW);
        cc.set_mss(1200);
        // Still 20 segments, now of 1200 bytes.
        assert_eq!(cc.cwnd(), 24_000);
        assert_eq!(cc.ssthresh(), 24_000);
        cc.set_mss(0);
        assert!(cc.cwnd() >= 1);
    }
}
