//! CUBIC (RFC 9438, which obsoletes RFC 8312): the window follows
//! W_cubic(t) = C*(t - K)^3 + W_max after a loss, concave up to the window
//! where the loss happened and convex beyond it, never slower than the
//! Reno-friendly estimate W_est.
//!
//! Internals are in segments as `f64` (the RFC's unit); [`Cubic::cwnd`]
//! converts to bytes. Invariants: `cwnd >= 1` segment; `ssthresh` is infinite
//! until the first loss and at least 2 segments afterwards; `epoch_start` is
//! `None` outside congestion avoidance or right after any window reduction.
//! Slow start is the shared byte-counted one (no HyStart++).

use super::{
    CongestionControl, initial_window, sane_mss, slow_start_increase, window_is_validated,
};
use crate::config::CongestionAlgorithm;
use crate::time::{Duration, Instant, OptionDuration};

/// C: the scaling constant of the cubic function, segments/s^3 (RFC 9438 §4.1).
const C: f64 = 0.4;
/// β_cubic: the multiplicative decrease factor (RFC 9438 §4.6).
const BETA: f64 = 0.7;
/// α_cubic: the Reno-friendly additive increase, 3(1-β)/(1+β) segments per
/// RTT, so that W_est matches Reno's average rate (RFC 9438 §4.3).
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);
/// The target may not exceed 1.5 × cwnd (RFC 9438 §4.2).
const MAX_TARGET_RATIO: f64 = 1.5;

/// The CUBIC controller.
#[derive(Clone, Debug)]
pub struct Cubic {
    /// The sender's MSS, bytes (an MSS is at most 65535: RFC 9293 §3.2;
    /// kept in 32 bits, as Linux's `mss_cache`).
    mss: u32,
    /// Congestion window, segments.
    cwnd: f64,
    /// Slow-start threshold, segments (infinite until the first loss).
    ssthresh: f64,
    /// Window just before the last reduction, after fast convergence (RFC 9438 §4.7).
    w_max: f64,
    /// cwnd just before the last reduction: where W_est switches α to 1 (RFC 9438 §4.3).
    cwnd_prior: f64,
    /// Start of the current congestion-avoidance epoch (RFC 9438 §4.2, t = now - epoch_start).
    epoch_start: Option<Instant>,
    /// Time for W_cubic to reach W_max, seconds (RFC 9438 §4.2, equation 2).
    k: f64,
    /// Reno-friendly estimate, segments (RFC 9438 §4.3).
    w_est: f64,
    /// Smallest RTT seen: the look-ahead in the target W_cubic(t + RTT).
    min_rtt: OptionDuration,
    /// The next epoch follows a timeout: K = 0 and W_max = cwnd (RFC 9438 §4.8).
    after_timeout: bool,
    /// No ACK or loss seen yet: an MSS change re-derives the initial window.
    pristine: bool,
}

/// An MSS in the controller's 32 bits (saturating; never reached: see `Cubic::mss`).
fn narrow_mss(mss: usize) -> u32 {
    u32::try_from(mss).unwrap_or(u32::MAX)
}

impl Cubic {
    fn mss(&self) -> usize {
        self.mss as usize
    }

    pub fn new(mss: usize) -> Self {
        let mss = sane_mss(mss);
        let cwnd = initial_window(mss) as f64 / mss as f64;
        Cubic {
            mss: narrow_mss(mss),
            cwnd,
            ssthresh: f64::INFINITY,
            w_max: 0.0,
            cwnd_prior: 0.0,
            epoch_start: None,
            k: 0.0,
            w_est: cwnd,
            min_rtt: OptionDuration::NONE,
            after_timeout: false,
            pristine: true,
        }
    }

    /// W_cubic(t) (RFC 9438 §4.2, equation 1), segments.
    fn w_cubic(&self, t: f64) -> f64 {
        C * (t - self.k).powi(3) + self.w_max
    }

    /// Starts a congestion-avoidance epoch at `now` (RFC 9438 §4.2).
    fn start_epoch(&mut self, now: Instant) {
        self.epoch_start = Some(now);
        if self.after_timeout {
            // RFC 9438 §4.8: the first epoch after a timeout starts on the curve's plateau.
            self.w_max = self.cwnd;
            self.after_timeout = false;
        }
        if self.cwnd < self.w_max {
            // RFC 9438 §4.2, equation 2: K = cbrt((W_max - cwnd_epoch) / C).
            self.k = ((self.w_max - self.cwnd) / C).cbrt();
        } else {
            // Already past the last maximum (or none yet): probe from here, convex at once.
            self.k = 0.0;
            self.w_max = self.cwnd;
        }
        self.w_est = self.cwnd;
    }

    /// Multiplicative decrease shared by loss and timeout (RFC 9438 §4.6 and
    /// §4.7), from cwnd as Linux's `bictcp_recalc_ssthresh` (see
    /// [`CongestionControl::on_congestion_event`]).
    fn reduce(&mut self) {
        self.pristine = false;
        self.epoch_start = None;
        // Fast convergence (RFC 9438 §4.7): a loss below the previous maximum
        // means a competing flow grew; give up more of the plateau.
        self.w_max = if self.cwnd < self.w_max {
            self.cwnd * (1.0 + BETA) / 2.0
        } else {
            self.cwnd
        };
        self.cwnd_prior = self.cwnd;
        // RFC 9438 §4.6: ssthresh = cwnd × β_cubic, at least 2 segments.
        self.ssthresh = (self.cwnd * BETA).max(2.0);
    }
}

impl CongestionControl for Cubic {
    fn algorithm(&self) -> CongestionAlgorithm {
        CongestionAlgorithm::Cubic
    }

    fn cwnd(&self) -> usize {
        // Rounded, saturating float-to-int conversion; never below one segment.
        ((self.cwnd * self.mss() as f64).round() as usize).max(self.mss())
    }

    fn ssthresh(&self) -> usize {
        if self.ssthresh.is_infinite() {
            usize::MAX
        } else {
            (self.ssthresh * self.mss() as f64).round() as usize
        }
    }

    fn set_mss(&mut self, mss: usize) {
        let mss = sane_mss(mss);
        if self.pristine {
            self.cwnd = initial_window(mss) as f64 / mss as f64;
            self.w_est = self.cwnd;
        }
        // Otherwise everything is counted in segments already and keeps its meaning.
        self.mss = narrow_mss(mss);
    }

    fn on_ack(&mut self, now: Instant, acked: usize, rtt: Option<Duration>, in_flight: usize) {
        self.pristine = false;
        if let Some(sample) = rtt {
            self.min_rtt =
                OptionDuration::new(Some(self.min_rtt.get().map_or(sample, |m| m.min(sample))));
        }
        let cwnd_bytes = self.cwnd();
        if acked == 0 || !window_is_validated(cwnd_bytes, in_flight) {
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start (RFC 9438 §4.10 defers to RFC 5681 / RFC 3465).
            let increase = slow_start_increase(acked) as f64 / self.mss() as f64;
            self.cwnd = (self.cwnd + increase).min(self.ssthresh.max(self.cwnd));
            return;
        }
        let epoch_start = match self.epoch_start {
            Some(start) => start,
            None => {
                self.start_epoch(now);
                now
            }
        };
        let segments_acked = acked as f64 / self.mss() as f64;
        let t = (now - epoch_start).as_secs_f64();
        let rtt = self.min_rtt.get().unwrap_or(Duration::ZERO).as_secs_f64();

        // RFC 9438 §4.3: the Reno-friendly estimate, α switching to 1 once
        // W_est has regained the window before the last reduction.
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA
        };
        self.w_est += alpha * segments_acked / self.cwnd;

        let w_cubic = self.w_cubic(t);
        if w_cubic < self.w_est {
            // Reno-friendly region (RFC 9438 §4.3): at least as fast as Reno.
            self.cwnd = self.w_est;
        } else {
            // Concave/convex regions (RFC 9438 §4.4/§4.5): aim at where the
            // curve will be one RTT from now, within [cwnd, 1.5 cwnd].
            let target = self
                .w_cubic(t + rtt)
                .clamp(self.cwnd, MAX_TARGET_RATIO * self.cwnd);
            self.cwnd += (target - self.cwnd) / self.cwnd * segments_acked;
        }
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        self.reduce();
        self.cwnd = self.ssthresh;
    }

    fn on_recovery_exit(&mut self, _now: Instant) {
        if self.ssthresh.is_finite() {
            self.cwnd = self.ssthresh;
        }
    }

    fn on_retransmission_timeout(&mut self, _now: Instant, reduce: bool) {
        // RFC 9438 §4.8: Reno's loss window, CUBIC's ssthresh.
        if reduce {
            self.reduce();
        }
        self.pristine = false;
        self.epoch_start = None;
        self.cwnd = 1.0;
        self.after_timeout = true;
    }

    fn on_idle_restart(&mut self, _now: Instant) {
        // RFC 5681 §4.1 restart window; the epoch restarts too, so the idle
        // time does not count as time spent probing towards W_max.
        let restart = initial_window(self.mss()) as f64 / self.mss() as f64;
        self.cwnd = self.cwnd.min(restart);
        self.epoch_start = None;
    }

    fn on_syn_loss(&mut self) {
        self.cwnd = 1.0;
        self.pristine = false;
    }

    fn boxed_clone(&self) -> Box<dyn CongestionControl> {
        Box::new(self.clone())
    }

    fn resume_after_undo(&mut self, cwnd_now: usize) {
        self.pristine = false;
        self.cwnd = self.cwnd.max(cwnd_now as f64 / self.mss() as f64);
        // A new epoch from the restored window towards the restored W_max
        // (RFC 9438 §4.2): the time spent in the spurious episode does not
        // count as time on the curve.
        self.epoch_start = None;
        self.after_timeout = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    /// Drives `cc` through `rtts` round trips of `rtt`, one ACK per segment
    /// spread evenly over each round trip, the sender keeping the window
    /// full; returns cwnd in segments at the end of each round trip.
    fn run(cc: &mut Cubic, start: Instant, rtt: Duration, rtts: usize) -> (Instant, Vec<f64>) {
        let mut now = start;
        let mut trace = Vec::new();
        for _ in 0..rtts {
            let segments = cc.cwnd() / MSS;
            let step = rtt / segments as u32;
            for _ in 0..segments {
                now += step;
                let full_pipe = cc.cwnd();
                cc.on_ack(now, MSS, Some(rtt), full_pipe);
            }
            trace.push(cc.cwnd);
        }
        (now, trace)
    }

    /// A controller in congestion avoidance right after a loss at 100 segments.
    fn after_loss_at_100() -> Cubic {
        let mut cc = Cubic::new(MSS);
        cc.cwnd = 100.0;
        cc.pristine = false;
        cc.on_congestion_event(Instant::ZERO);
        cc
    }

    #[test]
    fn loss_reduces_by_beta() {
        let cc = after_loss_at_100();
        assert_eq!(cc.cwnd(), 70 * MSS);
        assert_eq!(cc.ssthresh(), 70 * MSS);
        assert_eq!(cc.w_max, 100.0);
    }

    #[test]
    fn fast_convergence_lowers_w_max() {
        let mut cc = after_loss_at_100();
        cc.cwnd = 90.0;
        cc.on_congestion_event(Instant::ZERO);
        // 90 < W_max = 100: W_max = 90 × (1 + 0.7) / 2 = 76.5.
        assert!((cc.w_max - 76.5).abs() < 1e-9);
        assert_eq!(cc.cwnd(), 63 * MSS);
    }

    #[test]
    fn k_from_equation_2() {
        let mut cc = after_loss_at_100();
        cc.start_epoch(Instant::ZERO);
        // K = cbrt((100 - 70) / 0.4) = cbrt(75) ≈ 4.2172 s.
        assert!((cc.k - 4.2172).abs() < 1e-3, "K = {}", cc.k);
    }

    #[test]
    fn growth_is_concave_then_convex_around_w_max() {
        let mut cc = after_loss_at_100();
        let rtt = Duration::from_millis(100);
        let (_, trace) = run(&mut cc, Instant::ZERO, rtt, 90);
        let growth: Vec<f64> = trace.windows(2).map(|w| w[1] - w[0]).collect();
        // Concave: fast at first, slowing down as cwnd nears W_max = 100 (K ≈ 4.2 s ≈ 42 RTTs).
        assert!(growth[1] > 1.0, "early growth {}", growth[1]);
        assert!(growth[1] > growth[20] && growth[20] > growth[38]);
        let plateau = trace[40];
        assert!((98.0..=102.0).contains(&plateau), "cwnd near K: {plateau}");
        // Convex: accelerating beyond W_max.
        assert!(growth[60] > growth[45] && growth[80] > growth[60]);
        assert!(trace[88] > 110.0);
        // And it follows the curve: at t = 6 s, W_cubic(6 + RTT) ≈ 0.4 × 1.88³ + 100 ≈ 102.7.
        let at_6s = trace[59];
        assert!((101.0..104.5).contains(&at_6s), "cwnd at 6 s: {at_6s}");
    }

    #[test]
    fn reno_friendly_region_on_short_rtts() {
        let mut cc = after_loss_at_100();
        let rtt = Duration::from_millis(1);
        // 1000 RTTs = 1 s: the cubic curve is still well below W_max...
        let (_, trace) = run(&mut cc, Instant::ZERO, rtt, 1000);
        assert!(cc.w_cubic(1.0) < 90.0);
        // ...but W_est grew by α ≈ 0.53 per RTT to 100, then by 1 per RTT.
        let last = *trace.last().unwrap_or(&0.0);
        assert!(last > 900.0, "cwnd after 1000 short RTTs: {last}");
        assert!((cc.cwnd - cc.w_est).abs() < 1e-6);
    }

    #[test]
    fn slow_start_doubles_then_caps_at_ssthresh() {
        let mut cc = Cubic::new(MSS);
        let rtt = Duration::from_millis(10);
        let (now, trace) = run(&mut cc, Instant::ZERO, rtt, 3);
        assert_eq!(trace, vec![20.0, 40.0, 80.0]);
        cc.on_retransmission_timeout(now, true);
        assert_eq!(cc.cwnd(), MSS);
        // ssthresh = 0.7 × 80 segments.
        assert_eq!(cc.ssthresh(), 56 * MSS);
        let (_, trace) = run(&mut cc, now, rtt, 7);
        assert_eq!(&trace[..5], &[2.0, 4.0, 8.0, 16.0, 32.0]);
        // Capped at ssthresh; the rest of that round trip is congestion avoidance.
        assert!((56.0..56.5).contains(&trace[5]), "{}", trace[5]);
        // First epoch after the timeout: K = 0, W_max = 56, so growth resumes convex.
        assert_eq!(cc.w_max, 56.0);
        assert!(trace[6] > 56.0);
    }

    #[test]
    fn recovery_exit_and_idle_restart() {
        let mut cc = after_loss_at_100();
        cc.cwnd = 75.0; // inflated by the connection during recovery
        cc.on_recovery_exit(Instant::ZERO);
        assert_eq!(cc.cwnd(), 70 * MSS);
        cc.on_idle_restart(Instant::ZERO);
        assert_eq!(cc.cwnd(), 10 * MSS);
        assert!(cc.epoch_start.is_none());
    }

    #[test]
    fn mss_change_keeps_segments() {
        let mut cc = Cubic::new(536);
        cc.set_mss(1460);
        assert_eq!(cc.cwnd(), 14_600);
        let mut cc = after_loss_at_100();
        cc.set_mss(500);
        assert_eq!(cc.cwnd(), 70 * 500);
    }

    #[test]
    fn application_limited_sender_does_not_grow() {
        let mut cc = Cubic::new(MSS);
        for i in 0..100 {
            cc.on_ack(Instant::from_millis(i), MSS, None, MSS);
        }
        assert_eq!(cc.cwnd(), 10 * MSS);
    }
}
