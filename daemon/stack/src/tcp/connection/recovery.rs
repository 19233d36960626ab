//! Loss-recovery state that is not the segment records themselves:
//! RACK (RFC 8985 §6: the most recently delivered segment, its RTT, the
//! reordering window and its DSACK-driven adaptation), TLP (RFC 8985 §7:
//! the probe timeout and the outstanding probe), and PRR (RFC 6937: how
//! much may be sent per ACK during fast recovery, PRR-SSRB).
//!
//! These are plain state machines over numbers; the connection feeds them
//! what each ACK delivered (`sent::Delivered`) and asks them for windows and
//! deadlines. Invariants: `Rack::reo_wnd_mult >= 1`; a TLP probe is
//! outstanding (`Tlp::end_seq`) at most once per flight; PRR's counters are
//! only meaningful between `Prr::start` and the end of recovery.

use super::sent::Delivered;
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};

/// DupThresh (RFC 5681 §3.2, RFC 6675 §2): segments SACKed above a hole
/// that make RACK use a zero reordering window until reordering is seen
/// (RFC 8985 §6.2 step 4).
pub(super) const DUP_THRESH: usize = 3;
/// How many recoveries an enlarged reordering window persists after the
/// last DSACK (RFC 8985 §6.2 step 4: reo_wnd_persist = 16).
const REO_WND_PERSIST: u32 = 16;
/// The worst-case delayed-ACK time added to the PTO when one segment is in
/// flight (RFC 8985 §7.2 WCDelAckT, RECOMMENDED 200 ms).
pub(super) const WC_DEL_ACK_T: Duration = Duration::from_millis(200);
/// The PTO without an RTT sample (RFC 8985 §7.2: 1 s).
const PTO_WITHOUT_SRTT: Duration = Duration::from_secs(1);
/// The smallest PTO: Linux's floor in `tcp_schedule_loss_probe` (10 ms),
/// so a sub-millisecond RTT does not make every flight end in a probe.
const MIN_PTO: Duration = Duration::from_millis(10);

/// RACK's state (RFC 8985 §5.2 "RACK.*").
#[derive(Clone, Debug)]
pub(super) struct Rack {
    /// RACK.xmit_ts / RACK.end_seq: the most recently sent segment that has
    /// been delivered.
    pub xmit_ts: Option<Instant>,
    pub end_seq: SeqNum,
    /// RACK.rtt: the RTT of that segment's delivery.
    pub rtt: Duration,
    /// RACK.min_RTT (all-time minimum; Linux keeps a windowed minimum).
    pub min_rtt: Option<Duration>,
    /// RACK.fack: the highest sequence number delivered (SACKed or ACKed).
    pub fack: SeqNum,
    /// RACK.reordering_seen.
    pub reordering_seen: bool,
    /// RACK.reo_wnd_mult and RACK.reo_wnd_persist.
    pub reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    /// RACK.dsack_round: SND.NXT when the last DSACK enlarged the window.
    dsack_round: Option<SeqNum>,
    /// The reordering timer (RFC 8985 §6.2 step 5).
    pub reo_deadline: Option<Instant>,
    /// DSACKs received (RFC 2883), for TCP_INFO / the admin API.
    pub dsacks: u64,
}

impl Rack {
    pub(super) fn new(iss: SeqNum) -> Rack {
        Rack {
            xmit_ts: None,
            end_seq: iss,
            rtt: Duration::ZERO,
            min_rtt: None,
            fack: iss,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
            reo_deadline: None,
            dsacks: 0,
        }
    }

    /// A valid RTT sample (from the estimator's rules) for RACK.min_RTT.
    pub(super) fn on_rtt_sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// RFC 8985 §6.2 steps 2–3 for what one ACK delivered.
    ///
    /// Step 2 skips a retransmitted segment whose delivery may be the
    /// original's. The RFC's tests are "TSecr older than the
    /// retransmission" or "RTT below min_RTT"; like Linux's
    /// `tcp_rack_advance` we use only the second: a receiver echoes
    /// TS.Recent, which an out-of-order segment does not update (RFC 7323
    /// §4.3), so the SACK of a retransmission that landed beyond a hole —
    /// a tail-loss probe, typically — always echoes an older TSval.
    pub(super) fn on_delivered(&mut self, now: Instant, delivered: &Delivered) {
        if delivered.reordered_below.is_some() {
            self.reordering_seen = true;
        }
        let Some((sent_at, end, retransmitted)) = delivered.latest else {
            return;
        };
        let rtt = now - sent_at;
        // Step 2: an ACK of a retransmitted segment may be for the
        // original: skip it if the echo or the RTT says so.
        if retransmitted && self.min_rtt.is_some_and(|min| rtt < min) {
            return;
        }
        self.rtt = rtt;
        let newer = match self.xmit_ts {
            None => true,
            Some(at) => sent_at > at || (sent_at == at && end.gt(self.end_seq)),
        };
        if newer {
            self.xmit_ts = Some(sent_at);
            self.end_seq = end;
        }
    }

    /// Raises RACK.fack to `end` if it is higher.
    pub(super) fn advance_fack(&mut self, end: SeqNum) {
        if end.gt(self.fack) {
            self.fack = end;
        }
    }

    /// RFC 8985 §6.2 step 4, the DSACK half: a DSACK in a new round
    /// enlarges the reordering window by one more min_RTT/4.
    pub(super) fn on_ack_dsack(&mut self, dsack: bool, snd_una: SeqNum, snd_nxt: SeqNum) {
        if self.dsack_round.is_some_and(|round| snd_una.ge(round)) {
            self.dsack_round = None;
        }
        if dsack {
            self.dsacks += 1;
            if self.dsack_round.is_none() {
                self.dsack_round = Some(snd_nxt);
                self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
                self.reo_wnd_persist = REO_WND_PERSIST;
            }
        }
    }

    /// RFC 8985 §6.2 step 4: a recovery ended; after 16 without DSACKs the
    /// window shrinks back.
    pub(super) fn on_recovery_exit(&mut self) {
        if self.reo_wnd_persist > 0 {
            self.reo_wnd_persist -= 1;
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// RACK.reo_wnd (RFC 8985 §6.2 step 4): zero while no reordering was
    /// seen and either recovery is under way or DupThresh segments are
    /// SACKed (this keeps the classic three-duplicate-ACK speed); otherwise
    /// min_RTT/4 per multiplier, at most SRTT.
    pub(super) fn reo_wnd(
        &self,
        in_recovery: bool,
        sacked_segments: usize,
        srtt: Duration,
    ) -> Duration {
        if !self.reordering_seen && (in_recovery || sacked_segments >= DUP_THRESH) {
            return Duration::ZERO;
        }
        let quarter = self.min_rtt.unwrap_or(srtt) / 4;
        (quarter * self.reo_wnd_mult).min(srtt)
    }
}

/// TLP's state (RFC 8985 §7).
#[derive(Clone, Debug, Default)]
pub(super) struct Tlp {
    /// The probe timer (PTO).
    pub deadline: Option<Instant>,
    /// The probe is due: the PTO fired.
    pub due: bool,
    /// TLP.end_seq: SND.NXT after the outstanding probe.
    pub end_seq: Option<SeqNum>,
    /// TLP.is_retrans: the outstanding probe was a retransmission.
    pub is_retrans: bool,
    /// Probes sent, for TCP_INFO / the admin API.
    pub probes: u64,
    /// Probes that repaired a loss (and so reduced the window).
    pub recoveries: u64,
}

/// The probe timeout (RFC 8985 §7.2): 2·SRTT, plus WCDelAckT when a
/// single segment is in flight (its ACK may be delayed), at least
/// [`MIN_PTO`], and never past the RTO deadline.
pub(super) fn probe_timeout(
    now: Instant,
    srtt: Option<Duration>,
    one_segment_in_flight: bool,
    rto_deadline: Option<Instant>,
) -> Instant {
    let pto = match srtt {
        Some(srtt) => {
            let mut pto = srtt * 2;
            if one_segment_in_flight {
                pto += WC_DEL_ACK_T;
            }
            pto.max(MIN_PTO)
        }
        None => PTO_WITHOUT_SRTT,
    };
    let at = now + pto;
    rto_deadline.map_or(at, |rto| at.min(rto))
}

/// PRR's state for one recovery episode (RFC 6937 §3).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Prr {
    /// RecoverFS: the flight when recovery began.
    recover_fs: usize,
    /// prr_delivered: bytes delivered to the receiver since then.
    delivered: usize,
    /// prr_out: bytes sent since then.
    pub out: usize,
    /// The window PRR allows now: pipe + sndcnt, as of the last ACK.
    pub cwnd: usize,
}

impl Prr {
    /// Recovery begins with `flight` bytes outstanding.
    pub(super) fn start(flight: usize) -> Prr {
        Prr {
            recover_fs: flight.max(1),
            delivered: 0,
            out: 0,
            cwnd: 0,
        }
    }

    /// One ACK during recovery (RFC 6937 §3, PRR-SSRB): `delivered_data`
    /// bytes reached the receiver, `pipe` is RFC 6675's estimate after it.
    /// Sets the window to pipe + sndcnt.
    pub(super) fn on_ack(
        &mut self,
        delivered_data: usize,
        pipe: usize,
        ssthresh: usize,
        mss: usize,
    ) {
        self.delivered += delivered_data;
        let sndcnt = if pipe > ssthresh {
            // Proportional rate reduction: CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out.
            let target =
                (self.delivered as u128 * ssthresh as u128).div_ceil(self.recover_fs as u128);
            usize::try_from(target)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.out)
        } else {
            // Slow-start reduction bound: grow back towards ssthresh by at
            // most what was delivered, plus one segment.
            let limit = self.delivered.saturating_sub(self.out).max(delivered_data) + mss;
            (ssthresh - pipe).min(limit)
        };
        // The fast retransmit itself always goes out (RFC 6937 §3 sends it
        // on entering recovery; Linux: sndcnt >= 1 while prr_out is 0).
        let sndcnt = if self.out == 0 {
            sndcnt.max(mss)
        } else {
            sndcnt
        };
        self.cwnd = pipe + sndcnt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reo_wnd_rules() {
        let mut rack = Rack::new(SeqNum(0));
        rack.on_rtt_sample(ms(40));
        // No reordering seen: zero in recovery or with DupThresh SACKed.
        assert_eq!(rack.reo_wnd(true, 0, ms(50)), Duration::ZERO);
        assert_eq!(rack.reo_wnd(false, 3, ms(50)), Duration::ZERO);
        assert_eq!(rack.reo_wnd(false, 2, ms(50)), ms(10));
        rack.reordering_seen = true;
        assert_eq!(rack.reo_wnd(true, 5, ms(50)), ms(10));
        // A DSACK adds a quarter of min_RTT, once per round, capped at SRTT.
        rack.on_ack_dsack(true, SeqNum(0), SeqNum(1000));
        rack.on_ack_dsack(true, SeqNum(500), SeqNum(2000));
        assert_eq!(rack.reo_wnd_mult, 2);
        assert_eq!(rack.reo_wnd(true, 5, ms(50)), ms(20));
        rack.on_ack_dsack(true, SeqNum(1000), SeqNum(3000));
        assert_eq!(rack.reo_wnd_mult, 3);
        assert_eq!(rack.reo_wnd(true, 5, ms(25)), ms(25));
        assert_eq!(rack.dsacks, 3);
        // Sixteen recoveries without DSACK: back to one quarter.
        for _ in 0..15 {
            rack.on_recovery_exit();
        }
        assert_eq!(rack.reo_wnd_mult, 3);
        rack.on_recovery_exit();
        assert_eq!(rack.reo_wnd_mult, 1);
    }

    #[test]
    fn pto_rules() {
        let now = Instant::from_millis(1000);
        assert_eq!(probe_timeout(now, Some(ms(10)), false, None), now + ms(20));
        assert_eq!(probe_timeout(now, Some(ms(10)), true, None), now + ms(220));
        assert_eq!(probe_timeout(now, Some(ms(1)), false, None), now + MIN_PTO);
        assert_eq!(probe_timeout(now, None, false, None), now + ms(1000));
        let rto = now + ms(15);
        assert_eq!(probe_timeout(now, Some(ms(10)), false, Some(rto)), rto);
    }

    /// RFC 6937 §4's example shape: 20 segments in flight, one lost,
    /// ssthresh 10: PRR sends one segment per two delivered.
    #[test]
    fn prr_spreads_the_reduction() {
        let mss = 100;
        let mut prr = Prr::start(20 * mss);
        let mut sent = 0;
        let mut pipe = 19 * mss;
        for _ in 0..19 {
            // Each ACK delivers one segment.
            pipe -= mss;
            prr.on_ack(mss, pipe, 10 * mss, mss);
            while pipe < prr.cwnd {
                pipe += mss;
                prr.out += mss;
                sent += 1;
            }
        }
        // About half of what was delivered was sent: ssthresh/RecoverFS.
        assert!((9..=11).contains(&sent), "{sent}");
        assert!(pipe <= 11 * mss, "pipe {pipe}");
    }

    #[test]
    fn prr_slow_start_bound_when_pipe_is_below_ssthresh() {
        let mss = 100;
        let mut prr = Prr::start(10 * mss);
        prr.out = mss;
        // Heavy loss: pipe 2 segments, ssthresh 7. One segment delivered:
        // send at most delivered + 1 segment.
        prr.on_ack(mss, 2 * mss, 7 * mss, mss);
        assert_eq!(prr.cwnd, 2 * mss + mss + mss);
    }
}
