//! The retransmission timeout (RFC 6298): SRTT/RTTVAR smoothing, the RTO with
//! its floor and ceiling, and exponential backoff. Karn's algorithm (no samples
//! from retransmitted segments, RFC 6298 §3) is the caller's duty: it only
//! feeds samples it may take (timestamps make every ACK a valid sample, RFC 7323 §4).

use crate::time::Duration;

/// RTO state for one connection.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    _private: (),
}

impl RttEstimator {
    /// Before any sample the RTO is `initial` (RFC 6298 §2.1: 1 s).
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        let _ = (initial, min_rto, max_rto);
        todo!("helper: RFC 6298")
    }
    /// Takes one RTT measurement (RFC 6298 §2.2/2.3) and clears the backoff.
    pub fn on_sample(&mut self, rtt: Duration) {
        let _ = rtt;
        todo!()
    }
    /// The current RTO including backoff, within [min, max].
    pub fn rto(&self) -> Duration {
        todo!()
    }
    /// Doubles the RTO after a timeout (RFC 6298 §5.5), up to the maximum.
    pub fn backoff(&mut self) {
        todo!()
    }
    /// Smoothed RTT (zero before the first sample).
    pub fn srtt(&self) -> Duration {
        todo!()
    }
    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        todo!()
    }
    /// Whether any sample has been taken.
    pub fn has_sample(&self) -> bool {
        todo!()
    }
}
