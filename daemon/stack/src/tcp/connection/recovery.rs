//! Loss-recovery state that is not the segment records themselves:
//! RACK (RFC 8985 §6: the most recently delivered segment, its RTT, the
//! reordering window and its DSACK-driven adaptation), TLP (RFC 8985 §7:
//! the probe timeout and the outstanding probe), and PRR (RFC 6937: how
//! much may be sent per ACK during fast recovery, PRR-SSRB), and the undo
//! of a window reduction that proves spurious (`Undo`: RFC 3522 Eifel
//! detection, RFC 3708 §3 D-SACK-based detection, as Linux's
//! `tcp_try_undo_*`).
//!
//! These are plain state machines over numbers; the connection feeds them
//! what each ACK delivered (`sent::Delivered`) and asks them for windows and
//! deadlines. Invariants: `Rack::reo_wnd_mult >= 1`; a TLP probe is
//! outstanding (`Tlp::end_seq`) at most once per flight; PRR's counters are
//! only meaningful between `Prr::start` and the end of recovery.

use super::sent::Delivered;
use crate::seq::SeqNum;
use crate::tcp::congestion::Controller;
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
    pub(super) const fn new(iss: SeqNum) -> Rack {
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
#[derive(Clone, Debug)]
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

impl Tlp {
    /// No probe armed, due or outstanding; none sent yet.
    pub(super) const IDLE: Tlp = Tlp {
        deadline: None,
        due: false,
        end_seq: None,
        is_retrans: false,
        probes: 0,
        recoveries: 0,
    };
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
    /// Outside recovery (the counters mean nothing until [`Prr::start`]).
    pub(super) const IDLE: Prr = Prr {
        recover_fs: 0,
        delivered: 0,
        out: 0,
        cwnd: 0,
    };

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

/// One window reduction (a fast-recovery episode, or a retransmission
/// timeout and the go-back-N that follows) that may still prove spurious:
/// the network reordered or delayed, nothing was lost, and every
/// retransmission was a duplicate. Two tests decide (Linux's
/// `tcp_may_undo`):
/// - Eifel (RFC 3522 §3.2): an ACK of new data echoes a TSval older than
///   the episode's first retransmission (`RetransmitTS`), so the original
///   transmission reached the peer: [`Undo::eifel`];
/// - D-SACK (RFC 3708 §3, from RFC 2883's reports): every retransmission
///   of the episode came back reported as a duplicate: `unconfirmed`
///   reaches zero.
///
/// Then the controller as it was before the reduction takes over again
/// (RFC 4015 §3 restores cwnd and ssthresh; see
/// [`CongestionControl::resume_after_undo`](crate::tcp::congestion::CongestionControl::resume_after_undo)).
///
/// Invariants: `unconfirmed <= retransmissions`; an episode lives until
/// it is undone or the next one replaces it (Linux's `tcp_init_undo`), so a
/// D-SACK for an original reordered by several RTTs still counts; only
/// D-SACKs of the ranges the episode retransmitted do.
#[derive(Debug)]
pub(super) struct Undo {
    /// The controller just before the reduction.
    pub prior: Controller,
    /// SND.UNA when the episode began (Linux's `undo_marker`): D-SACKs
    /// below it concern older data.
    pub marker: SeqNum,
    /// Segments retransmitted in the episode, and those of them no D-SACK
    /// has reported yet (Linux's `undo_retrans`).
    pub retransmissions: u32,
    pub unconfirmed: u32,
    /// The ranges retransmitted in the episode, merged when contiguous (a
    /// go-back-N is one range), at most [`MAX_UNDO_RANGES`]; past that,
    /// `ranges_overflowed` and a D-SACK at or above `marker` counts as one
    /// retransmission if it lies below the last range's end (Linux counts
    /// every D-SACK at or above its marker, keeping no ranges).
    rtx_ranges: Vec<(SeqNum, SeqNum)>,
    ranges_overflowed: bool,
    /// The first retransmission of the episode: its start and TSval
    /// (RFC 3522 §3.2 step 1, `RetransmitTS`; Linux's `retrans_stamp`).
    pub first_rtx: Option<(SeqNum, Option<u32>)>,
    /// The episode includes a retransmission timeout.
    pub after_timeout: bool,
}

/// Retransmitted ranges one [`Undo`] remembers.
const MAX_UNDO_RANGES: usize = 32;

/// `a` is before `b` on the 32-bit timestamp clock (RFC 7323 §5.3).
pub(super) fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Undo {
    pub(super) fn begin(prior: Controller, snd_una: SeqNum, timeout: bool) -> Undo {
        Undo {
            prior,
            marker: snd_una,
            retransmissions: 0,
            unconfirmed: 0,
            rtx_ranges: Vec::new(),
            ranges_overflowed: false,
            first_rtx: None,
            after_timeout: timeout,
        }
    }

    /// `[seq, end)`, `segments` segments, was retransmitted, carrying
    /// `tsval` (timestamps on).
    pub(super) fn on_retransmit(
        &mut self,
        seq: SeqNum,
        end: SeqNum,
        segments: u32,
        tsval: Option<u32>,
    ) {
        if self.first_rtx.is_none() {
            self.first_rtx = Some((seq, tsval));
        }
        self.retransmissions = self.retransmissions.saturating_add(segments);
        self.unconfirmed = self.unconfirmed.saturating_add(segments);
        let room = self.rtx_ranges.len() < MAX_UNDO_RANGES;
        match self.rtx_ranges.last_mut() {
            Some((_, last_end)) if *last_end == seq => *last_end = end,
            _ if room => self.rtx_ranges.push((seq, end)),
            _ => self.ranges_overflowed = true,
        }
    }

    /// A D-SACK reported `[left, right)` as received twice (RFC 2883):
    /// the retransmitted segments it covers (`mss` bytes each, at least
    /// one) were spurious (RFC 3708 §3); a duplicate of data this episode
    /// did not retransmit (the network duplicated it) counts for nothing.
    /// Returns whether every retransmission of the episode has now been
    /// reported.
    pub(super) fn on_dsack(&mut self, left: SeqNum, right: SeqNum, mss: usize) -> bool {
        if left.lt(self.marker) || self.retransmissions == 0 {
            return false;
        }
        let overlap: usize = self
            .rtx_ranges
            .iter()
            .filter(|(start, end)| start.lt(right) && left.lt(*end))
            .map(|&(start, end)| end.min(right).since(start.max(left)))
            .sum();
        let segments = if overlap > 0 {
            overlap.div_ceil(mss.max(1))
        } else if self.ranges_overflowed
            && self.rtx_ranges.last().is_some_and(|&(_, end)| left.lt(end))
        {
            1
        } else {
            0
        };
        self.unconfirmed = self
            .unconfirmed
            .saturating_sub(u32::try_from(segments).unwrap_or(u32::MAX));
        self.unconfirmed == 0
    }

    /// RFC 3522 §3.2 steps 3–4: an ACK acknowledging new data up to `ack`
    /// and echoing `tsecr` shows the episode's first retransmission was
    /// spurious: the ACK covers it and echoes an older TSval (the
    /// original's). With 1 ms timestamp ticks an original sent in the same
    /// tick as its retransmission cannot be told apart (no undo: the
    /// conservative answer).
    pub(super) fn eifel(&self, ack: SeqNum, tsecr: u32) -> bool {
        match self.first_rtx {
            Some((seq, Some(rtx_tsval))) => {
                ack.gt(seq) && tsecr != 0 && ts_before(tsecr, rtx_tsval)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn undo_detection_rules() {
        let prior = Controller::new(crate::config::CongestionAlgorithm::Cubic, 1000);
        let mut undo = Undo::begin(prior, SeqNum(5000), false);
        // Nothing retransmitted: neither test can say anything.
        assert!(!undo.eifel(SeqNum(9000), 100));
        assert!(!undo.on_dsack(SeqNum(5000), SeqNum(6000), 1000));
        undo.on_retransmit(SeqNum(5000), SeqNum(6000), 1, Some(200));
        undo.on_retransmit(SeqNum(7000), SeqNum(8000), 1, Some(210));
        // Eifel: an ACK past the first retransmission echoing an older TSval.
        assert!(undo.eifel(SeqNum(6000), 199));
        assert!(
            !undo.eifel(SeqNum(6000), 200),
            "the retransmission's own echo"
        );
        assert!(!undo.eifel(SeqNum(5000), 150), "does not cover it");
        assert!(!undo.eifel(SeqNum(6000), 0), "no echo");
        // Across the timestamp wrap.
        let mut wrapped = Undo::begin(undo.prior.clone(), SeqNum(0), true);
        wrapped.on_retransmit(SeqNum(0), SeqNum(10), 1, Some(5));
        assert!(wrapped.eifel(SeqNum(10), u32::MAX - 3));
        // D-SACK: below the marker or of data not retransmitted does not
        // count; both retransmissions must be reported.
        assert!(!undo.on_dsack(SeqNum(4000), SeqNum(5000), 1000));
        assert!(!undo.on_dsack(SeqNum(6000), SeqNum(7000), 1000));
        assert_eq!(undo.unconfirmed, 2);
        assert!(!undo.on_dsack(SeqNum(5000), SeqNum(6000), 1000));
        assert!(undo.on_dsack(SeqNum(7000), SeqNum(8000), 1000));
        assert_eq!(undo.unconfirmed, 0);
        // A go-back-N is one range; one D-SACK may report several segments.
        let mut gbn = Undo::begin(undo.prior.clone(), SeqNum(0), true);
        for i in 0..40u32 {
            gbn.on_retransmit(SeqNum(i * 100), SeqNum((i + 1) * 100), 1, None);
        }
        assert_eq!(gbn.rtx_ranges, vec![(SeqNum(0), SeqNum(4000))]);
        assert!(!gbn.on_dsack(SeqNum(0), SeqNum(3900), 100));
        assert!(gbn.on_dsack(SeqNum(3900), SeqNum(4000), 100));
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
