//! The retransmission timeout (RFC 6298): SRTT/RTTVAR smoothing, the RTO with
//! its floor and ceiling, and exponential backoff. Karn's algorithm (no samples
//! from retransmitted segments, RFC 6298 §3) is the caller's duty: it only
//! feeds samples it may take. With timestamps, an ACK of new data is a sample
//! (RFC 7323 §4.1) unless it echoes a TSval older than the latest
//! retransmission (the connection's `rtt_sample` explains why).
//!
//! Arithmetic is in integer microseconds, kept in 32 bits (every connection
//! has an estimator): values saturate at about 71 minutes, beyond any RTT
//! or RTO a connection survives (RFC 6298 §2.5 allows an upper bound, and
//! Linux's TCP_RTO_MAX is 120 s). Invariants: `rto()` always lies in
//! `[min_rto, max_rto]`; the backoff count only grows through [`RttEstimator::backoff`]
//! and is cleared by a sample.

use crate::time::Duration;

/// Clock granularity G (RFC 6298 §2): the stack's timers resolve to 1 ms.
pub const CLOCK_GRANULARITY: Duration = Duration::from_millis(1);
/// The RTO once data transmission begins after the SYN or SYN,ACK had to be
/// retransmitted and no RTT sample was taken (RFC 6298 §5.7: "re-initialized
/// to 3 seconds"; Linux's TCP_TIMEOUT_FALLBACK).
pub const SYN_LOSS_RTO: Duration = Duration::from_secs(3);
/// RTTVAR multiplier K in RTO = SRTT + max(G, K*RTTVAR) (RFC 6298 §2).
const K: u32 = 4;

/// `d` in microseconds, saturating at `u32::MAX` (see the module docs).
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// RTO state for one connection.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    /// SRTT in µs; meaningful once `has_sample`.
    srtt_us: u32,
    /// RTTVAR in µs; meaningful once `has_sample`.
    rttvar_us: u32,
    has_sample: bool,
    /// The RTO before backoff, already clamped (RFC 6298 §2.1 initial value
    /// until the first sample).
    base_rto_us: u32,
    /// Timeouts since the last sample: the RTO is doubled this many times (RFC 6298 §5.5).
    backoffs: u8,
    min_rto_us: u32,
    max_rto_us: u32,
}

impl RttEstimator {
    /// Before any sample the RTO is `initial` (RFC 6298 §2.1: 1 s).
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        let min_rto_us = micros(min_rto);
        let max_rto_us = micros(max_rto).max(min_rto_us);
        RttEstimator {
            srtt_us: 0,
            rttvar_us: 0,
            has_sample: false,
            base_rto_us: micros(initial).clamp(min_rto_us, max_rto_us),
            backoffs: 0,
            min_rto_us,
            max_rto_us,
        }
    }
    /// Takes one RTT measurement (RFC 6298 §2.2/2.3) and clears the backoff.
    pub fn on_sample(&mut self, rtt: Duration) {
        let r = micros(rtt);
        if self.has_sample {
            // RFC 6298 §2.3, beta = 1/4 and alpha = 1/8; RTTVAR first, with the old SRTT.
            let deviation = self.srtt_us.abs_diff(r);
            // In 64 bits: no saturation before the division.
            let rttvar = (u64::from(self.rttvar_us) * 3 + u64::from(deviation)) / 4;
            let srtt = (u64::from(self.srtt_us) * 7 + u64::from(r)) / 8;
            self.rttvar_us = u32::try_from(rttvar).unwrap_or(u32::MAX);
            self.srtt_us = u32::try_from(srtt).unwrap_or(u32::MAX);
        } else {
            // RFC 6298 §2.2: SRTT = R, RTTVAR = R/2.
            self.srtt_us = r;
            self.rttvar_us = r / 2;
            self.has_sample = true;
        }
        // RFC 6298 §2.2/2.3: RTO = SRTT + max(G, K*RTTVAR), then §2.4/2.5 bounds.
        let variance_term = micros(CLOCK_GRANULARITY).max(self.rttvar_us.saturating_mul(K));
        self.base_rto_us = self
            .srtt_us
            .saturating_add(variance_term)
            .clamp(self.min_rto_us, self.max_rto_us);
        // RFC 6298 §5.7 lets the backed-off RTO stand until a new sample; this is it.
        self.backoffs = 0;
    }
    /// Starts over without a sample from an RTO of `rto` (clamped to
    /// [min, max]) and no backoff: RFC 6298 §5.7 after a lost SYN, with
    /// [`SYN_LOSS_RTO`]. Samples taken earlier, if any, are kept.
    pub fn reset_to(&mut self, rto: Duration) {
        self.base_rto_us = micros(rto).clamp(self.min_rto_us, self.max_rto_us);
        self.backoffs = 0;
    }
    /// The current RTO including backoff, within [min, max].
    pub fn rto(&self) -> Duration {
        let backed_off = self
            .base_rto_us
            .checked_shl(u32::from(self.backoffs))
            .filter(|v| v >> self.backoffs == self.base_rto_us)
            .unwrap_or(u32::MAX);
        Duration::from_micros(u64::from(backed_off.min(self.max_rto_us)))
    }
    /// Doubles the RTO after a timeout (RFC 6298 §5.5), up to the maximum.
    pub fn backoff(&mut self) {
        // Stop counting once the maximum is reached: further doublings change nothing.
        if micros(self.rto()) < self.max_rto_us {
            self.backoffs = self.backoffs.saturating_add(1);
        }
    }
    /// Timeouts since the last sample (how many times the RTO was doubled).
    pub fn backoffs(&self) -> u32 {
        u32::from(self.backoffs)
    }
    /// Smoothed RTT (zero before the first sample).
    pub fn srtt(&self) -> Duration {
        if self.has_sample {
            Duration::from_micros(u64::from(self.srtt_us))
        } else {
            Duration::ZERO
        }
    }
    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        if self.has_sample {
            Duration::from_micros(u64::from(self.rttvar_us))
        } else {
            Duration::ZERO
        }
    }
    /// Whether any sample has been taken.
    pub fn has_sample(&self) -> bool {
        self.has_sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn linux_like() -> RttEstimator {
        RttEstimator::new(ms(1000), ms(200), ms(120_000))
    }

    #[test]
    fn initial_rto_before_samples() {
        let est = linux_like();
        assert_eq!(est.rto(), ms(1000));
        assert_eq!(est.srtt(), Duration::ZERO);
        assert_eq!(est.rttvar(), Duration::ZERO);
        assert!(!est.has_sample());
    }

    #[test]
    fn first_sample() {
        let mut est = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        est.on_sample(ms(100));
        // SRTT = 100, RTTVAR = 50, RTO = 100 + 4*50 = 300 ms.
        assert_eq!(est.srtt(), ms(100));
        assert_eq!(est.rttvar(), ms(50));
        assert_eq!(est.rto(), ms(300));
    }

    #[test]
    fn subsequent_samples_smooth() {
        let mut est = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        est.on_sample(ms(100));
        est.on_sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5.
        assert_eq!(est.rttvar(), Duration::from_micros(62_500));
        assert_eq!(est.srtt(), Duration::from_micros(112_500));
        // RTO = 112.5 + 250 = 362.5 ms.
        assert_eq!(est.rto(), Duration::from_micros(362_500));
        est.on_sample(ms(112));
        // RTTVAR = 3/4*62.5 + 1/4*0.5 = 47; SRTT = 7/8*112.5 + 1/8*112 = 112.4375.
        assert_eq!(est.rttvar(), Duration::from_micros(47_000));
        assert_eq!(est.srtt(), Duration::from_micros(112_437));
    }

    #[test]
    fn granularity_floor_for_steady_rtt() {
        let mut est = RttEstimator::new(ms(1000), Duration::ZERO, ms(60_000));
        for _ in 0..100 {
            est.on_sample(Duration::from_micros(10));
        }
        // RTTVAR decays to 0, so the RTO is SRTT + G.
        assert_eq!(est.rttvar(), Duration::ZERO);
        assert_eq!(est.rto(), Duration::from_micros(1010));
    }

    #[test]
    fn clamped_to_min_and_max() {
        let mut est = linux_like();
        est.on_sample(ms(10));
        // 10 + 4*5 = 30 ms < 200 ms floor.
        assert_eq!(est.rto(), ms(200));
        est.on_sample(Duration::from_secs(1000));
        assert_eq!(est.rto(), ms(120_000));
        let est = RttEstimator::new(ms(1), ms(200), ms(400));
        assert_eq!(est.rto(), ms(200));
    }

    #[test]
    fn backoff_doubles_to_max_and_sample_clears_it() {
        let mut est = RttEstimator::new(ms(1000), ms(200), ms(10_000));
        est.backoff();
        assert_eq!(est.rto(), ms(2000));
        est.backoff();
        assert_eq!(est.rto(), ms(4000));
        est.backoff();
        assert_eq!(est.rto(), ms(8000));
        est.backoff();
        assert_eq!(est.rto(), ms(10_000));
        for _ in 0..100 {
            est.backoff();
        }
        assert_eq!(est.rto(), ms(10_000));
        assert_eq!(est.backoffs(), 4);
        est.on_sample(ms(100));
        assert_eq!(est.backoffs(), 0);
        assert_eq!(est.rto(), ms(300));
    }

    #[test]
    fn reset_to_replaces_a_backed_off_rto_and_clears_the_backoff() {
        let mut est = linux_like();
        est.backoff();
        est.backoff();
        assert_eq!(est.rto(), ms(4000));
        est.reset_to(SYN_LOSS_RTO);
        assert_eq!(est.rto(), ms(3000));
        assert_eq!(est.backoffs(), 0);
        assert!(!est.has_sample());
        // Clamped like every RTO (RFC 6298 §2.4, §2.5).
        est.reset_to(ms(1));
        assert_eq!(est.rto(), ms(200));
        // The next sample replaces it as usual (RFC 6298 §2.2).
        est.on_sample(ms(100));
        assert_eq!(est.rto(), ms(300));
    }

    #[test]
    fn huge_values_saturate() {
        let mut est = RttEstimator::new(Duration::MAX, Duration::ZERO, Duration::MAX);
        est.on_sample(Duration::MAX);
        est.on_sample(Duration::MAX);
        for _ in 0..70 {
            est.backoff();
        }
        assert!(est.rto() > Duration::from_secs(1));
    }
}
