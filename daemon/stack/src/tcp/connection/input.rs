//! SEGMENT ARRIVES (RFC 9293 §3.10.7): the checks in the RFC's order, with
//! the RFC 5961 hardening (RST, SYN and ACK checks), RFC 7323 PAWS and
//! TS.Recent, and loss detection on ACKs: with SACK, RACK (RFC 8985 §6)
//! with D-SACK (RFC 2883) adapting its reordering window; without, RFC 5681
//! §3.2 duplicate ACKs and RFC 6582 NewReno partial/full ACKs. PRR (RFC
//! 6937) paces fast recovery either way. A reduction that proves spurious
//! (Eifel, RFC 3522; D-SACK, RFC 3708) is undone (`undo_reduction`).
//!
//! Invariant: nothing a peer sends can make these functions panic; every
//! length is derived from the segment's own slice and clamped.

use super::recovery::{Prr, Undo, ts_before};
use super::sent::Delivered;
use super::{
    AckDue, Connection, DUP_ACK_THRESHOLD, INVALID_ACK_INTERVAL, MAX_ACK_POINTS, MAX_WINDOW_FIELD,
    PAWS_IDLE_LIMIT, ProbeDue, QUICK_ACK_SEGMENTS, narrow,
};
use crate::error::ConnError;
use crate::seq::SeqNum;
use crate::socket::MemoryLevel;
use crate::tcp::TcpState;
use crate::tcp::congestion::CongestionControl;
use crate::time::{Duration, Instant};
use crate::trace::{DropCause, Note};
use crate::wire::TcpRepr;
use bytes::Bytes;

/// RFC 9293 §3.10.7.4, first check: the four cases of segment acceptability,
/// widened as Linux widens them (`tcp_sequence`): a segment without text
/// may start exactly at the right edge, RCV.NXT+RCV.WND.
///
/// Linux sends its pure ACKs at SND.UNA+SND.WND, our right edge, once its
/// SND.NXT has reached it (`tcp_acceptable_seq`): after it filled our window
/// with data we could not all keep (the window may be rounded up to the
/// scale unit, RFC 7323 §2.4, beyond the free buffer). RFC 9293's strict
/// `SEG.SEQ < RCV.NXT+RCV.WND` would discard every such ACK until our window
/// opens, and with it every acknowledgment of the data we send: both sides
/// then wait on each other's timers.
pub(super) fn segment_acceptable(seq: SeqNum, len: usize, rcv_nxt: SeqNum, rcv_wnd: usize) -> bool {
    let wnd_end = rcv_nxt + rcv_wnd;
    match (len, rcv_wnd) {
        // With a zero window this is the RFC's SEG.SEQ = RCV.NXT.
        (0, _) => seq.in_range_inclusive(rcv_nxt, wnd_end),
        (_, 0) => false,
        (_, _) => seq.in_range(rcv_nxt, wnd_end) || (seq + (len - 1)).in_range(rcv_nxt, wnd_end),
    }
}

impl Connection {
    /// `frame`: the received frame `seg.payload` lies in, if the link
    /// handed one over (its payload may then be queued without a copy).
    pub(super) fn on_segment(&mut self, now: Instant, seg: &TcpRepr<'_>, frame: Option<&Bytes>) {
        self.counters.segments_in = self.counters.segments_in.wrapping_add(1);
        match self.state {
            TcpState::Closed | TcpState::Listen => self.on_segment_closed(seg),
            TcpState::SynSent => self.on_segment_syn_sent(now, seg, frame),
            _ => self.on_segment_synchronized(now, seg, frame),
        }
    }

    /// Counts an arriving segment discarded without its content being used.
    fn discard(&mut self, cause: DropCause) {
        self.counters.segments_discarded = self.counters.segments_discarded.wrapping_add(1);
        self.note(Note::Dropped(cause));
    }

    /// RFC 9293 §3.10.7.1, CLOSED: everything but a reset gets a reset.
    fn on_segment_closed(&mut self, seg: &TcpRepr<'_>) {
        self.discard(DropCause::Closed);
        if seg.flags.rst() {
            return;
        }
        if seg.flags.ack() {
            self.queue_rst(seg.ack, None);
        } else {
            self.queue_rst(SeqNum(0), Some(seg.seq + seg.segment_len()));
        }
    }

    /// The current timestamp clock: 1 ms ticks (RFC 7323 §5.4 allows 1 ms
    /// to 1 s) plus the per-connection offset.
    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        // The clock wraps modulo 2^32 by design (RFC 7323 §5.2).
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// An RTT sample from this ACK (called only for ACKs of new data, RFC
    /// 7323 §4.1 RTTM rule), if one may be taken: from the echoed timestamp,
    /// else from the timed segment (RFC 6298 §3; the timed segment is
    /// forgotten whenever anything is retransmitted: Karn).
    ///
    /// A TSecr older than our latest retransmission's TSval gives no sample.
    /// Such an echo comes from a segment sent before the retransmission:
    /// typically the peer already had the retransmitted data (our original
    /// ACKs were lost), and a wholly duplicate segment does not update its
    /// TS.Recent (RFC 7323 §4.3, §5.3 R2 before R3), so its ACK echoes the
    /// TSval of an older segment; `now - TSecr` would then include the whole
    /// backoff, and every inflated RTO would inflate the next sample. This is
    /// Karn's rule (RFC 6298 §3) applied to timestamp samples, with the test
    /// of the Eifel detection algorithm (RFC 3522 §3.2; Linux:
    /// tcp_packet_delayed). The backed-off RTO then stays until a valid
    /// sample (RFC 6298 §5.7).
    fn rtt_sample(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNum) -> Option<Duration> {
        if self.ts_enabled
            && let Some((_, tsecr)) = seg.options.timestamp
            && tsecr != 0
        {
            if let Some(rtx_tsval) = self.rtx_tsval {
                if ts_before(tsecr, rtx_tsval) {
                    return None;
                }
                self.rtx_tsval = None;
            }
            let elapsed = self.ts_now(now).wrapping_sub(tsecr);
            if (elapsed as i32) >= 0 {
                self.rtt_timed = None;
                return Some(Duration::from_millis(u64::from(elapsed)));
            }
        }
        match self.rtt_timed {
            Some((end, sent)) if ack.ge(end) => {
                self.rtt_timed = None;
                Some(now - sent)
            }
            _ => None,
        }
    }

    /// RFC 9293 §3.10.7.3: SYN-SENT.
    fn on_segment_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>, frame: Option<&Bytes>) {
        // First: the ACK bit. SEG.ACK =< ISS or SEG.ACK > SND.NXT is not
        // acceptable: reset it (unless it is a reset) and drop.
        if seg.flags.ack() && (seg.ack.le(self.iss) || seg.ack.gt(self.snd_nxt)) {
            self.discard(DropCause::BadAck);
            if !seg.flags.rst() {
                self.queue_rst(seg.ack, None);
            }
            return;
        }
        let ack_acceptable = seg.flags.ack();
        // Second: RST. Only with an acceptable ACK (RFC 5961 §3.2, RFC 9293):
        // connection refused.
        if seg.flags.rst() {
            if ack_acceptable {
                self.enter_closed(Some(ConnError::Refused));
            } else {
                self.discard(DropCause::BadRst);
            }
            return;
        }
        // Third (security/compartment) does not apply. Fourth: SYN.
        if !seg.flags.syn() {
            self.discard(DropCause::Unacceptable);
            return;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.last_ack_sent = self.rcv_nxt;
        self.negotiate_options(seg, now);
        // Our SYN advertised this much, unscaled (RFC 7323 §2.2).
        self.rcv_adv_right = self.rcv_nxt + self.recv_buf.window().min(MAX_WINDOW_FIELD);
        // The window of a SYN is never scaled (RFC 7323 §2.2).
        self.snd_wnd = narrow(usize::from(seg.window));
        self.max_snd_wnd = narrow(self.snd_wnd());
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        if ack_acceptable {
            // SYN,ACK: our SYN is acknowledged; ESTABLISHED, and
            // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>.
            let sample = self.rtt_sample(now, seg, seg.ack);
            if let Some(rtt) = sample {
                self.rtt.on_sample(rtt);
            }
            self.snd_una = seg.ack;
            self.tx_next = self.tx_next.max(seg.ack);
            self.rtx_deadline = None;
            self.establish(now);
            self.ack_now();
            // "If there are other controls or text in the segment, then
            // continue processing at the sixth step".
            if !seg.payload.is_empty() || seg.flags.fin() {
                self.process_text_and_fin(now, seg.seq + 1, seg.payload, seg.flags.fin(), frame);
            }
        } else {
            // Simultaneous open (RFC 9293 §3.5, Figure 8): SYN-RECEIVED and
            // <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>. Data on the SYN is not
            // queued; the peer will retransmit it.
            self.set_state(TcpState::SynReceived);
            self.tx_next = self.iss;
        }
    }

    /// The ACK of our SYN arrived in SYN-RECEIVED (RFC 9293 §3.10.7.4, fifth
    /// check): ESTABLISHED, with the send window from this segment.
    fn on_syn_acked(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let sample = self.rtt_sample(now, seg, seg.ack);
        if let Some(rtt) = sample {
            self.rtt.on_sample(rtt);
        }
        self.snd_una = seg.ack;
        self.tx_next = self.tx_next.max(seg.ack);
        self.rtx_deadline = None;
        // A SYN's window is unscaled (the crossing SYN,ACK of a
        // simultaneous open); any other segment's is scaled (RFC 7323 §2.2).
        let shift = if seg.flags.syn() { 0 } else { self.snd_wscale };
        self.snd_wnd = narrow(usize::from(seg.window) << shift);
        self.max_snd_wnd = narrow(self.max_snd_wnd().max(self.snd_wnd()));
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.establish(now);
    }

    /// RFC 9293 §3.10.7.4: SYN-RECEIVED and every synchronized state.
    fn on_segment_synchronized(&mut self, now: Instant, seg: &TcpRepr<'_>, frame: Option<&Bytes>) {
        let seg_len = seg.segment_len();
        if self.state == TcpState::SynReceived
            && seg.flags.syn()
            && !seg.flags.rst()
            && seg.seq == self.irs
            && self.snd_una == self.iss
        {
            if !seg.flags.ack() {
                // The peer retransmitted its SYN: our SYN,ACK was lost. Send
                // it again (a listener's answer to a duplicate SYN).
                self.tx_next = self.iss;
                return;
            }
            if seg.ack == self.snd_nxt {
                // Simultaneous open: the peer's SYN,ACK acknowledges our SYN
                // (RFC 9293 Figure 8 line 4; Linux accepts it the same way).
                self.on_syn_acked(now, seg);
                self.ack_now();
                return;
            }
        }

        // RFC 7323 §5.3 R1 (before the sequence check): PAWS. A segment
        // whose TSval is older than TS.Recent is a duplicate from an old
        // incarnation or wrap: ACK it and drop it (never for RST).
        if self.ts_enabled
            && !seg.flags.rst()
            && let Some((tsval, _)) = seg.options.timestamp
        {
            if now - self.ts_recent_at > PAWS_IDLE_LIMIT {
                // RFC 7323 §5.5: TS.Recent is stale after 24 days idle.
                self.ts_recent = tsval;
                self.ts_recent_at = now;
            } else if ts_before(tsval, self.ts_recent) {
                self.discard(DropCause::Paws);
                // A late original whose retransmission already arrived
                // fails PAWS too: report what we had (Linux's
                // `tcp_send_dupack` D-SACKs it), so its sender can tell the
                // retransmission was spurious (RFC 2883 §4, RFC 3708).
                if !seg.flags.syn() {
                    self.note_duplicate(seg.seq, seg.payload.len());
                }
                self.ack_invalid(now, seg);
                return;
            }
        }

        // First check: sequence number.
        let rcv_wnd = self.rcv_wnd();
        let acceptable = segment_acceptable(seg.seq, seg_len, self.rcv_nxt, rcv_wnd);

        // Second check: RST (RFC 5961 §3.2 replaces RFC 793's in-window rule).
        if seg.flags.rst() {
            self.on_rst(now, seg, rcv_wnd);
            return;
        }

        if !acceptable {
            // A retransmission of the last data we acknowledged (it ends
            // exactly at RCV.NXT = Last.ACK.sent: our ACK was lost). RFC 7323
            // §4.3's rule, SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent,
            // holds for it, so TS.Recent takes its TSval (Linux likewise
            // accepts a segment ending at rcv_wup): the duplicate ACK below
            // then echoes the retransmission, and the sender gets a valid RTT
            // sample instead of one it must refuse (see `rtt_sample`).
            if self.ts_enabled
                && seg_len > 0
                && !seg.flags.syn()
                && seg.seq + seg_len == self.rcv_nxt
                && self.rcv_nxt == self.last_ack_sent
                && let Some((tsval, _)) = seg.options.timestamp
                && !ts_before(tsval, self.ts_recent)
            {
                self.ts_recent = tsval;
                self.ts_recent_at = now;
            }
            if !seg.flags.syn() && (seg.seq + seg.payload.len()).le(self.rcv_nxt) {
                self.note_duplicate(seg.seq, seg.payload.len());
            }
            // TIME-WAIT: a retransmitted FIN (it ends at RCV.NXT): re-ACK it
            // and restart the 2 MSL timeout (RFC 9293 §3.10.7.4, eighth check).
            if self.state == TcpState::TimeWait
                && seg.flags.fin()
                && (seg.seq + seg_len) == self.rcv_nxt
            {
                self.close_deadline = Some(now + self.config.msl * 2);
            }
            // Probes (<SEQ=RCV.NXT-1>, no data) must always be answered.
            if seg.seq + 1 == self.rcv_nxt && seg_len == 0 {
                self.ack_now();
            } else {
                self.ack_invalid(now, seg);
            }
            // RFC 9293 §3.10.7.4: with a zero receive window, "special
            // allowance should be made to accept valid ACKs": a segment at
            // exactly RCV.NXT still has its ACK processed; its text is not.
            // As Linux (`tcp_sequence`), the allowance covers any segment
            // starting exactly at the right edge RCV.NXT+RCV.WND (with a zero
            // window, RCV.NXT itself): the data a peer sends after filling
            // our window carries the ACKs of what we send.
            let right_edge_ack =
                seg.seq == self.rcv_nxt + rcv_wnd && seg.flags.ack() && !seg.flags.syn();
            if !right_edge_ack {
                self.discard(DropCause::OutOfWindow);
                return;
            }
        }

        // The peer is alive: keepalive starts over (RFC 1122 §4.2.3.6).
        self.keepalive_probes = 0;
        if self.options.keepalive {
            self.arm_keepalive(now);
        }

        // Third check (security) does not apply. Fourth: SYN in a
        // synchronized state: challenge ACK, drop (RFC 5961 §4.2, RFC 9293).
        if seg.flags.syn() {
            self.discard(DropCause::SynInWindow);
            self.note(Note::ChallengeAck);
            self.ack_invalid(now, seg);
            return;
        }

        // Fifth check: ACK. Without it the segment is dropped.
        if !seg.flags.ack() {
            self.discard(DropCause::NoAck);
            return;
        }

        // RFC 7323 §4.3 (2): TS.Recent follows the segment that covers
        // Last.ACK.sent (PAWS has already rejected older TSvals) — but only
        // a segment whose ACK is acceptable (RFC 7323 Appendix D updates it
        // after the ACK check; RFC 5961 §5.2 discards the segment otherwise):
        // a forged or confused segment acknowledging unsent data must not
        // move TS.Recent, or PAWS would reject all the valid data after it.
        if self.ts_enabled
            && let Some((tsval, _)) = seg.options.timestamp
            && seg.seq.le(self.last_ack_sent)
            && !ts_before(tsval, self.ts_recent)
            && self.ack_is_acceptable(seg.ack)
        {
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        }

        if self.ts_enabled
            && !seg.payload.is_empty()
            && let Some((_, tsecr)) = seg.options.timestamp
        {
            self.rcv_rtt_sample(now, tsecr);
        }

        if self.state == TcpState::SynReceived {
            if seg.ack.gt(self.snd_una) && seg.ack.le(self.snd_nxt) {
                self.on_syn_acked(now, seg);
            } else {
                // Unacceptable ACK in SYN-RECEIVED: <SEQ=SEG.ACK><CTL=RST>.
                self.discard(DropCause::BadAck);
                self.queue_rst(seg.ack, None);
                return;
            }
        }

        if !self.process_ack(now, seg) {
            return;
        }
        if self.state == TcpState::TimeWait {
            // "The only thing that can arrive in this state is a
            // retransmission of the remote FIN", handled above.
            return;
        }

        // Sixth check: URG (RFC 9293 §3.10.7.4; Linux's reading of the
        // pointer, see `urgent`).
        if acceptable {
            self.on_urgent(seg);
        }

        // Seventh and eighth: text and FIN.
        if acceptable {
            self.process_text_and_fin(now, seg.seq, seg.payload, seg.flags.fin(), frame);
        }
    }

    /// A RST in SYN-RECEIVED or a synchronized state, per RFC 5961 §3.2:
    /// exactly at RCV.NXT resets; elsewhere in the window earns a challenge
    /// ACK; outside the window it is dropped silently.
    fn on_rst(&mut self, now: Instant, seg: &TcpRepr<'_>, rcv_wnd: usize) {
        if self.state == TcpState::TimeWait {
            // RFC 1337 §3 (TIME-WAIT assassination hazards, fix TW1): ignore
            // RST segments in TIME-WAIT.
            self.discard(DropCause::BadRst);
            return;
        }
        if seg.seq == self.rcv_nxt {
            match self.state {
                // RFC 9293 §3.10.7.4: a passive open returns to LISTEN (the
                // listener still exists; this embryo just goes, silently); an
                // active one (simultaneous open) was refused.
                TcpState::SynReceived => {
                    let error = self.active_open.then_some(ConnError::Refused);
                    self.enter_closed(error);
                }
                // "Any outstanding RECEIVEs and SEND should receive reset
                // responses. All segment queues should be flushed." The
                // receive queue is not: like Linux (tcp_reset purges only
                // the write queue), what arrived before the RST stays
                // readable ahead of ECONNRESET (see `read_with`).
                TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::CloseWait => {
                    self.enter_closed(Some(ConnError::Reset));
                }
                // CLOSING, LAST-ACK: the connection is gone anyway.
                _ => self.enter_closed(None),
            }
        } else if seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + rcv_wnd) {
            // RFC 5961 §3.2: in the window but not exact: challenge ACK.
            self.discard(DropCause::BadRst);
            self.note(Note::ChallengeAck);
            self.ack_invalid(now, seg);
        } else {
            // Outside the window: dropped silently (RFC 5961 §3.2).
            self.discard(DropCause::BadRst);
        }
    }

    /// The ACK owed to an invalid segment (unacceptable, PAWS-rejected, or a
    /// challenge ACK). Segments without data, and SYNs, get at most one such
    /// ACK per [`INVALID_ACK_INTERVAL`] (RFC 5961 §7 ACK throttling; Linux's
    /// tcp_invalid_ratelimit): two confused endpoints cannot ACK each other
    /// in a loop, and blind attackers get few answers. Data segments are
    /// always answered (they are not part of an ACK loop), and so are FINs
    /// (a retransmitted FIN in TIME-WAIT needs its ACK).
    fn ack_invalid(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        if (!seg.payload.is_empty() || seg.flags.fin()) && !seg.flags.syn() {
            self.ack_now();
            return;
        }
        if self
            .occasional()
            .last_invalid_ack
            .is_some_and(|last| now - last < INVALID_ACK_INTERVAL)
        {
            return;
        }
        self.occasional_mut().last_invalid_ack = Some(now);
        self.ack_now();
    }

    /// `len` bytes from `seq` arrived again: the part below RCV.NXT is
    /// reported with a D-SACK block on the next ACK (RFC 2883 §4, as
    /// Linux does), so the sender can tell a spurious retransmission.
    fn note_duplicate(&mut self, seq: SeqNum, len: usize) {
        if self.sack_enabled && len > 0 && seq.lt(self.rcv_nxt) {
            self.occasional_mut().pending_dsack = Some((seq, (seq + len).min(self.rcv_nxt)));
        }
    }

    /// The ACK field passes the fifth check: SYN-RECEIVED: SND.UNA <
    /// SEG.ACK =< SND.NXT (RFC 9293 §3.10.7.4); later states: not beyond
    /// SND.NXT and not older than SND.UNA - MAX.SND.WND (RFC 5961 §5.2).
    fn ack_is_acceptable(&self, ack: SeqNum) -> bool {
        if self.state == TcpState::SynReceived {
            return ack.gt(self.snd_una) && ack.le(self.snd_nxt);
        }
        ack.le(self.snd_nxt) && !ack.lt(self.snd_una - self.max_snd_wnd())
    }

    /// RFC 9293 §3.10.7.4, fifth check, for ESTABLISHED and later. Returns
    /// false when the segment must be dropped here.
    fn process_ack(&mut self, now: Instant, seg: &TcpRepr<'_>) -> bool {
        let ack = seg.ack;
        // "If the ACK acks something not yet sent (SEG.ACK > SND.NXT) then
        // send an ACK, drop the segment, and return."
        if ack.gt(self.snd_nxt) {
            self.discard(DropCause::BadAck);
            self.ack_invalid(now, seg);
            return false;
        }
        // RFC 5961 §5.2: an ACK older than SND.UNA - MAX.SND.WND is
        // unacceptable: ACK and drop.
        if ack.lt(self.snd_una - self.max_snd_wnd()) {
            self.discard(DropCause::BadAck);
            self.ack_invalid(now, seg);
            return false;
        }
        let window = usize::from(seg.window) << self.snd_wscale;
        let flight_before = self.snd_nxt.since(self.snd_una);
        let mut delivered = Delivered::default();
        // RACK.fack before this ACK: what it delivers below is reordered.
        let fack_before = self.rack_fack();
        let mut dsack_block = None;
        if self.sack_enabled {
            dsack_block = self.record_sack_blocks(seg, &mut delivered);
        }
        let dsack = dsack_block.is_some();
        // Whether the ACK may still show the current reduction spurious by
        // Eifel (RFC 3522 §3.2: while its retransmissions are outstanding).
        let episode_open = self.in_recovery || self.rto_recover.is_some();
        let mut newly_acked = 0;
        if ack.gt(self.snd_una) {
            newly_acked =
                self.on_new_ack(now, seg, ack, flight_before, fack_before, &mut delivered);
            if episode_open
                && self.ts_enabled
                && let Some((_, tsecr)) = seg.options.timestamp
                && self.undo.as_ref().is_some_and(|u| u.eifel(ack, tsecr))
            {
                // The original reached the peer: every lost mark of the
                // episode is in doubt (Linux: tcp_try_undo_loss /
                // tcp_try_undo_partial unmark them; RACK finds real losses
                // again).
                self.undo_reduction(now, true);
                // This ACK's delivery is the original's: it says nothing
                // about when the retransmission was sent (RFC 8985 §6.2
                // step 2).
                delivered.latest = delivered.latest.filter(|&(_, _, rtx)| !rtx);
            }
        } else if ack == self.snd_una
            && flight_before > 0
            && seg.payload.is_empty()
            && !seg.flags.syn()
            && !seg.flags.fin()
            && (window == self.snd_wnd() || seg.options.sacks().next().is_some())
        {
            // A duplicate ACK as RFC 5681 §2 defines it (RFC 6675 §2 also
            // counts ACKs carrying SACK information).
            self.on_duplicate_ack(now);
        }
        if episode_open
            && self.flight().sent.lost_bytes() == 0
            && self.undo.as_ref().is_some_and(|u| u.retransmissions == 0)
        {
            // Everything the episode deemed lost was delivered (ACKed or
            // SACKed) before any of it was retransmitted: nothing was lost
            // (Linux's `tcp_packet_delayed`, "nothing was retransmitted").
            self.undo_reduction(now, false);
        }
        if let Some((left, right)) = dsack_block {
            self.undo_on_dsack(now, left, right);
        }
        if self.sack_enabled {
            self.rack_on_ack(now, &delivered, dsack);
        }
        if self.in_recovery {
            // RFC 6937 §3, "on every ACK starting or during fast recovery":
            // DeliveredData = change in SND.UNA + change in SACKed bytes
            // (without SACK, a duplicate ACK stands for one SMSS).
            let delivered_data = if self.sack_enabled {
                newly_acked.saturating_sub(delivered.previously_sacked) + delivered.sacked_bytes
            } else if newly_acked == 0 {
                self.send_mss()
            } else {
                newly_acked
            };
            let pipe = self.pipe();
            let (ssthresh, mss) = (self.cc.ssthresh(), self.send_mss());
            self.flight_mut()
                .prr
                .on_ack(delivered_data, pipe, ssthresh, mss);
        }
        self.tlp_on_ack(now, ack, newly_acked, dsack);

        // SND.WND update (RFC 9293 §3.10.7.4): only from a segment not older
        // than the one that last set it (SND.WL1, SND.WL2).
        if self.snd_wl1.lt(seg.seq) || (self.snd_wl1 == seg.seq && self.snd_wl2.le(ack)) {
            self.snd_wnd = narrow(window);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            self.max_snd_wnd = narrow(self.max_snd_wnd().max(window));
            if window > 0 {
                // The window opened: stop probing (RFC 9293 §3.8.6.1).
                self.persist_deadline = None;
                self.persist_backoff = 0;
                if self.probe_due == ProbeDue::ZeroWindow {
                    self.probe_due = ProbeDue::No;
                }
            }
        }
        // Any ACK answers our probes.
        self.persist_probes = 0;

        match self.state {
            TcpState::FinWait1 if self.fin_acked() => {
                self.set_state(TcpState::FinWait2);
                if self.user_closed {
                    self.close_deadline = Some(now + self.fin_wait_2_timeout());
                }
            }
            TcpState::Closing if self.fin_acked() => {
                self.enter_time_wait(now);
                return false;
            }
            TcpState::LastAck if self.fin_acked() => {
                self.enter_closed(None);
                return false;
            }
            _ => {}
        }
        true
    }

    /// RFC 2018 §3: marks the SACKed ranges that lie within what we sent.
    /// Returns the first block if it is a D-SACK (RFC 2883 §4: it lies
    /// below the cumulative ACK, or inside the second block): a report of
    /// a duplicate, which says nothing about loss.
    fn record_sack_blocks(
        &mut self,
        seg: &TcpRepr<'_>,
        delivered: &mut Delivered,
    ) -> Option<(SeqNum, SeqNum)> {
        let mut blocks = seg.options.sacks();
        let first = blocks.next();
        let second = seg.options.sacks().nth(1);
        let dsack = first
            .filter(|b| {
                b.left.lt(b.right)
                    && (b.right.le(seg.ack)
                        || second.is_some_and(|s| s.left.le(b.left) && b.right.le(s.right)))
            })
            .map(|b| (b.left, b.right));
        let fack = self.rack_fack();
        for block in first.into_iter().chain(blocks) {
            if block.left.lt(block.right)
                && block.right.gt(self.snd_una)
                && block.right.le(self.snd_nxt)
            {
                let left = block.left.max(self.snd_una);
                let flight = self.flight_mut();
                flight.sent.on_sack(left, block.right, fack, delivered);
                flight.rack.advance_fack(block.right);
            }
        }
        dsack
    }

    /// RACK on every ACK with SACK in use (RFC 8985 §6.2): update the RACK
    /// segment and the reordering window, then mark lost what was sent
    /// before the most recently delivered segment and has waited longer than
    /// RTT + reordering window; arm the reordering timer for the rest. Lost
    /// segments outside recovery start it (RFC 8985 §6.2 step 5, RFC 6675 §5).
    fn rack_on_ack(&mut self, now: Instant, delivered: &Delivered, dsack: bool) {
        if self.flight.is_none()
            && !dsack
            && delivered.latest.is_none()
            && delivered.reordered_below.is_none()
        {
            // Nothing was ever sent, delivered or reported twice: RACK has
            // nothing to learn (and an idle connection stays without its
            // `Flight`).
            return;
        }
        let (snd_una, snd_nxt) = (self.snd_una, self.snd_nxt);
        let rack = &mut self.flight_mut().rack;
        rack.on_delivered(now, delivered);
        rack.on_ack_dsack(dsack, snd_una, snd_nxt);
        // Without SACKed, lost or retransmitted data in flight, every
        // record was sent after the one just delivered: nothing to detect
        // (and the scan, linear in the flight, is skipped on clean paths).
        if self.flight().sent.sacked_bytes() > 0
            || self.flight().sent.lost_bytes() > 0
            || self.in_recovery
            || self.rto_recover.is_some()
            || self.flight().tlp.end_seq.is_some()
        {
            self.rack_detect_loss(now);
        }
    }

    /// RFC 8985 §6.2 step 5 (and the reordering timer's expiry, §6.3):
    /// marks lost segments, arms the reordering timer, and enters recovery
    /// if something is newly lost outside it.
    pub(super) fn rack_detect_loss(&mut self, now: Instant) {
        let episode = self.in_recovery || self.rto_recover.is_some();
        let srtt = self.rtt.srtt();
        let Some(flight) = self.flight.as_deref_mut() else {
            // Nothing in flight, no RACK segment (`Flight` invariant).
            return;
        };
        flight.rack.reo_deadline = None;
        let Some(rack_sent_at) = flight.rack.xmit_ts else {
            return;
        };
        let reo_wnd = flight
            .rack
            .reo_wnd(episode, flight.sent.sacked_segments(), srtt);
        let wait = flight.rack.rtt + reo_wnd;
        let (newly_lost, timer) =
            flight
                .sent
                .rack_detect(now, rack_sent_at, flight.rack.end_seq, |sent_at| {
                    sent_at + wait
                });
        flight.rack.reo_deadline = timer;
        if newly_lost > 0 && !self.in_recovery && self.fast_retransmit_allowed() {
            self.enter_recovery(now);
        }
    }

    /// SND.UNA < SEG.ACK =< SND.NXT: new data acknowledged. Returns the
    /// bytes of sequence space newly acknowledged.
    fn on_new_ack(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        ack: SeqNum,
        flight_before: usize,
        fack_before: SeqNum,
        delivered: &mut Delivered,
    ) -> usize {
        let acked = ack.since(self.snd_una);
        self.bytes_acked += acked as u64;
        self.last_ack_recv = Some(now);
        let sample = self.rtt_sample(now, seg, ack);
        if let Some(rtt) = sample {
            // RFC 6298 §2.2/§2.3.
            self.rtt.on_sample(rtt);
            self.flight_mut().rack.on_rtt_sample(rtt);
        }
        // SYN and FIN occupy sequence space but no buffer bytes.
        let data_acked = ack.min(self.data_end()).since(self.send_buf_seq);
        self.send_buf.consume(data_acked);
        self.send_buf_seq += data_acked;
        self.snd_una = ack;
        if self.tx_next.lt(ack) {
            self.tx_next = ack;
        }
        self.retries = 0;
        self.last_progress = now;
        self.flight_mut()
            .sent
            .on_cumulative_ack(ack, fack_before, delivered);
        self.flight_mut().rack.advance_fack(ack);
        if let Some(guard) = self.rto_recover
            && ack.ge(guard)
        {
            // The data outstanding at the timeout is all acknowledged: the
            // timeout's recovery is over (RFC 6582 §4's "recover").
            self.rto_recover = None;
            self.flight_mut().rack.on_recovery_exit();
        }

        if self.in_recovery {
            if ack.ge(self.recover) {
                // RFC 6582 §3.2 step 3: a full ACK ends fast recovery.
                self.exit_recovery(now);
            } else if !self.sack_enabled {
                // RFC 6582 §3.2 step 5: a partial ACK. Retransmit the next
                // hole at once (with SACK, RACK finds the holes).
                self.reno_dup_bytes = narrow(self.reno_dup_bytes().saturating_sub(acked));
                self.flight_mut().sent.mark_head_lost();
            }
        } else {
            self.dup_acks = 0;
            // RFC 5681 §3.1: slow start / congestion avoidance. Whether the
            // window was in use is judged by the largest flight of the last
            // window of data, as Linux's `tcp_is_cwnd_limited` does: ACKs
            // that arrive together (as after any queue) each see a flight
            // the earlier ones already shrank.
            let used = flight_before.max(self.max_flight());
            self.cc.on_ack(now, acked, sample, used);
            self.expand_send_buffer();
        }

        // RFC 6298 §5.2: all data acknowledged: stop the timer; §5.3: new
        // data acknowledged: restart it.
        if self.snd_una == self.snd_nxt {
            self.rtx_deadline = None;
        } else {
            self.rtx_deadline = Some(self.rto_deadline(now));
        }
        acked
    }

    /// RFC 5681 §3.2 / RFC 6582 §3.2: a duplicate ACK. With SACK, RACK
    /// decides about loss instead (RFC 8985 §6.2, with DupThresh folded into
    /// its reordering window).
    fn on_duplicate_ack(&mut self, now: Instant) {
        self.dup_acks = self.dup_acks.saturating_add(1);
        if self.sack_enabled {
            return;
        }
        if self.in_recovery {
            // Each further duplicate ACK means a segment left the network.
            self.reno_dup_bytes = narrow(
                (self.reno_dup_bytes() + self.send_mss()).min(self.snd_nxt.since(self.snd_una)),
            );
            return;
        }
        if self.dup_acks >= DUP_ACK_THRESHOLD && self.fast_retransmit_allowed() {
            self.flight_mut().sent.mark_head_lost();
            self.enter_recovery(now);
            self.reno_dup_bytes = narrow(
                (DUP_ACK_THRESHOLD as usize * self.send_mss())
                    .min(self.snd_nxt.since(self.snd_una)),
            );
        }
    }

    /// TLP on an ACK (RFC 8985 §7.4, with Linux's `tcp_process_tlp_ack`
    /// reading of it): decide whether the outstanding probe repaired a loss
    /// (then the window is reduced as for fast recovery, once) or was not
    /// needed (a D-SACK reports it, or a pure duplicate ACK shows both copies
    /// arrived); then restart the probe timer if new data was acknowledged.
    fn tlp_on_ack(&mut self, now: Instant, ack: SeqNum, newly_acked: usize, dsack: bool) {
        if let Some(end) = self.flight().tlp.end_seq
            && ack.ge(end)
        {
            if !self.flight().tlp.is_retrans || dsack {
                self.flight_mut().tlp.end_seq = None;
            } else if ack.gt(end) {
                self.flight_mut().tlp.end_seq = None;
                self.flight_mut().tlp.recoveries += 1;
                self.cc.on_congestion_event(now);
                self.cc.on_recovery_exit(now);
            } else if newly_acked == 0 && self.flight().sent.sacked_bytes() == 0 {
                self.flight_mut().tlp.end_seq = None;
            }
        }
        if newly_acked > 0 {
            self.arm_tlp(now);
        }
    }

    /// RFC 6582 §4: after a retransmission timeout, duplicate ACKs for data
    /// sent before it do not start another fast retransmit.
    fn fast_retransmit_allowed(&self) -> bool {
        self.rto_recover.is_none_or(|guard| self.snd_una.gt(guard))
    }

    /// Fast retransmit and the start of fast recovery (RFC 5681 §3.2 steps
    /// 2–3, RFC 6582 §3.2 step 2, RFC 6675 §5 step 4): ssthresh once for
    /// this window, then PRR paces what is sent (RFC 6937 §3). The
    /// controller before the reduction is kept in case it proves spurious.
    fn enter_recovery(&mut self, now: Instant) {
        self.note(Note::RecoveryEnter);
        let flight = self.snd_nxt.since(self.snd_una);
        self.undo = Some(Box::new(Undo::begin(self.cc.clone(), self.snd_una, false)));
        self.cc.on_congestion_event(now);
        self.in_recovery = true;
        self.recover = self.snd_nxt;
        self.flight_mut().prr = Prr::start(flight);
        // The fast retransmit goes out at once (RFC 6937 §3, RFC 5681 §3.2 step 3).
        let pipe = self.pipe();
        let (ssthresh, mss) = (self.cc.ssthresh(), self.send_mss());
        self.flight_mut().prr.on_ack(0, pipe, ssthresh, mss);
        self.counters.fast_recoveries = self.counters.fast_recoveries.wrapping_add(1);
        // A TLP episode ends with recovery (RFC 8985 §7.4).
        self.flight_mut().tlp.end_seq = None;
        self.flight_mut().tlp.deadline = None;
        // Karn: a retransmission makes the timed segment ambiguous.
        self.rtt_timed = None;
    }

    /// Leaves fast recovery after a full ACK (RFC 6582 §3.2 step 3; RFC
    /// 6937 §3: cwnd = ssthresh).
    fn exit_recovery(&mut self, now: Instant) {
        self.note(Note::RecoveryExit);
        self.in_recovery = false;
        self.reno_dup_bytes = 0;
        self.dup_acks = 0;
        self.cc.on_recovery_exit(now);
        self.flight_mut().rack.on_recovery_exit();
    }

    /// A D-SACK for `[left, right)` (RFC 2883): counts the retransmissions
    /// it reports (RFC 3708 §3) and undoes the episode's reduction once all
    /// of them are (Linux's `tcp_try_undo_dsack`).
    fn undo_on_dsack(&mut self, now: Instant, left: SeqNum, right: SeqNum) {
        let mss = self.send_mss();
        if self
            .undo
            .as_mut()
            .is_some_and(|undo| undo.on_dsack(left, right, mss))
        {
            // After a timeout every segment was marked lost; none was.
            let unmark = self.rto_recover.is_some();
            self.undo_reduction(now, unmark);
        }
    }

    /// The current reduction proved spurious (RFC 3522 / RFC 3708): the
    /// controller from before it takes over (RFC 4015 §3 restores cwnd and
    /// ssthresh), recovery ends, and with `unmark_lost` the segments marked
    /// lost are not retransmitted (Linux's `tcp_undo_cwnd_reduction`).
    /// Reordering was seen (RFC 8985 §6.2 step 3), so RACK waits its
    /// reordering window from now on. The backed-off RTO, if any, stays
    /// until the next valid RTT sample (RFC 6298 §5.7).
    pub(super) fn undo_reduction(&mut self, _now: Instant, unmark_lost: bool) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        let undo = *undo;
        self.note(Note::Undo);
        let mut prior = undo.prior;
        prior.set_mss(self.send_mss());
        prior.resume_after_undo(self.cc.cwnd());
        self.cc = prior;
        if self.in_recovery {
            self.in_recovery = false;
            self.reno_dup_bytes = 0;
            self.dup_acks = 0;
            self.flight_mut().rack.on_recovery_exit();
        }
        if unmark_lost {
            self.flight_mut().sent.unmark_lost();
        }
        self.rto_recover = None;
        self.flight_mut().rack.reordering_seen = true;
        self.counters.undos = self.counters.undos.wrapping_add(1);
        if undo.after_timeout {
            self.counters.spurious_rtos = self.counters.spurious_rtos.wrapping_add(1);
        }
    }

    /// RFC 9293 §3.10.7.4, seventh (segment text) and eighth (FIN) checks,
    /// for a segment starting at `seq` that passed the acceptability test;
    /// `frame`: the received frame `payload` lies in, if any.
    pub(super) fn process_text_and_fin(
        &mut self,
        now: Instant,
        seq: SeqNum,
        payload: &[u8],
        fin: bool,
        frame: Option<&Bytes>,
    ) {
        // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: a FIN has already been
        // received, so text is ignored; so is a second FIN.
        if !matches!(
            self.state,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        ) {
            return;
        }
        let mut fin_in_window = fin;
        if !payload.is_empty() {
            // Trim what was already received (before RCV.NXT) and what lies
            // beyond the window we advertised (RFC 9293 §3.10.7.4).
            let already = self.rcv_nxt.since(seq).min(payload.len());
            self.note_duplicate(seq, already);
            let data = &payload[already..];
            let offset = seq.since(self.rcv_nxt);
            let mut room = self.rcv_wnd().saturating_sub(offset);
            // MemoryLevel::Exhausted (Linux's failed sk_rmem_schedule under
            // tcp_mem or a memory cgroup): tcp_data_queue keeps in-order
            // data only while the receive queue is empty (so the connection
            // still progresses) and drops the rest (TCPRcvQDrop); the peer
            // retransmits. The window is not shrunk for it (RFC 9293
            // §3.8.6.2.1). At Full the window only stops.
            if self.memory_level() == MemoryLevel::Exhausted
                && !data.is_empty()
                && (offset > 0 || self.recv_buf.held_len() > 0)
            {
                self.memory_drops = self.memory_drops.wrapping_add(1);
                room = 0;
            }
            let accepted = data.len().min(room);
            if accepted < data.len() {
                // The FIN lies beyond the window too; the peer resends it.
                fin_in_window = false;
            }
            if accepted > 0 {
                if self.user_closed {
                    // RFC 1122 §4.2.2.13 / Linux: data arriving after the
                    // user closed cannot be delivered: reset.
                    self.queue_rst(self.snd_nxt, None);
                    self.enter_closed(None);
                    return;
                }
                let had_holes = self.recv_buf.has_holes();
                let advertised = self.rcv_wnd();
                let stored = &data[..accepted];
                // Payload of a frame the link handed over is queued as a
                // slice of it (no copy) where the buffer can take it so.
                let advanced = match frame.and_then(|frame| shared_slice(frame, stored)) {
                    Some(shared) => self.recv_buf.write_shared(offset, shared, advertised),
                    None => self.recv_buf.write_within(offset, stored, advertised),
                };
                self.rcv_nxt += advanced;
                self.counters.bytes_received += advanced as u64;
                self.last_data_recv = Some(now);
                if self.read_shut {
                    self.discard_readable();
                }
                self.rcv_mss = narrow(self.rcv_mss().max(accepted.min(self.adv_mss())));
                if offset > 0 || had_holes {
                    // RFC 5681 §4.2 / RFC 9293 §3.8.6.3: ACK out-of-order
                    // segments and those that fill a gap at once; stay in
                    // quick-ACK mode while the peer recovers (Linux does too).
                    self.quick_acks = QUICK_ACK_SEGMENTS;
                    self.ack_now();
                } else {
                    self.schedule_data_ack(now, advanced);
                }
            } else {
                // Nothing fit (zero window), or all of it was a retransmission
                // of data we have: tell the peer where we are.
                self.ack_now();
            }
        }
        if fin && fin_in_window {
            let fin_seq = seq + payload.len();
            if fin_seq.ge(self.rcv_nxt) {
                self.peer_fin_at = Some(fin_seq);
            }
            if fin_seq.gt(self.rcv_nxt) {
                // A FIN beyond a hole is out-of-order data too: a duplicate
                // ACK at once (RFC 5681 §4.2), with the SACK block that
                // tells the peer what is missing.
                self.ack_now();
            }
        }
        // Eighth check: the FIN counts only once everything before it
        // arrived (a FIN beyond a hole waits in `peer_fin_at`).
        if self.peer_fin_at == Some(self.rcv_nxt) {
            self.process_fin(now);
        }
    }

    /// RFC 9293 §3.10.7.4, eighth check: the peer's FIN, in order.
    fn process_fin(&mut self, now: Instant) {
        self.peer_fin_at = None;
        self.rcv_nxt += 1;
        self.fin_received = true;
        // Acknowledge the FIN at once (as the seed diagram's CLOSE-WAIT line).
        self.ack_now();
        match self.state {
            TcpState::SynReceived | TcpState::Established => self.set_state(TcpState::CloseWait),
            // Simultaneous close (RFC 9293 Figure 13): CLOSING unless our FIN
            // is already acknowledged.
            TcpState::FinWait1 => {
                if self.fin_acked() {
                    self.enter_time_wait(now);
                } else {
                    self.set_state(TcpState::Closing);
                }
            }
            TcpState::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    /// Delayed ACK for in-order data (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2,
    /// RFC 5681 §4.2): at least every second full-sized segment, otherwise
    /// within the delayed-ACK timeout; at once in quick-ACK mode.
    ///
    /// The ACK itself goes out at the next transmit opportunity, after
    /// everything that arrived in the same batch (the segments the link
    /// handed over before polling for output, e.g. one turn's TUN reads):
    /// one ACK of the batch's last byte, with the window as it is then
    /// (after the application's reads in between), like Linux's, whose
    /// segments queued while the socket is owned by its reader are
    /// coalesced in the backlog and acknowledged once (`tcp_add_backlog`),
    /// and whose GRO super-segments get one ACK each. Every second
    /// full-sized segment of a batch would mostly acknowledge bytes with a
    /// window that did not move, each ACK a packet (and, for a peer on this
    /// host, a run of its transmit path) that lets the sender send nothing
    /// more.
    ///
    /// In quick-ACK mode (the connection's start, and after out-of-order
    /// data while the peer recovers) each ACK point of a batch still gets
    /// its own ACK, in order (`ack_points`): a sender in slow start grows
    /// its window per ACK, and one in recovery must not lose its whole ACK
    /// clock with one lost stretch ACK (that made the simulation's
    /// goodput collapse under random loss, sim_goodput.rs).
    fn schedule_data_ack(&mut self, now: Instant, len: usize) {
        self.bytes_since_ack = narrow(self.bytes_since_ack() + len);
        if self.quick_acks > 0 {
            self.quick_acks -= 1;
            if self.ack_due == AckDue::Now && self.ack_points.len() < MAX_ACK_POINTS {
                // An ACK is already owed for an earlier point of this batch.
                self.ack_points.push_back(self.last_ack_point);
            }
            self.last_ack_point = self.rcv_nxt;
            self.bytes_since_ack = 0;
            self.ack_now();
        } else if self.bytes_since_ack() >= 2 * self.rcv_mss() {
            self.last_ack_point = self.rcv_nxt;
            self.ack_due = match self.ack_due {
                AckDue::Now => AckDue::Now,
                AckDue::By(t) | AckDue::Owed(t) => AckDue::Owed(t),
                AckDue::No => AckDue::Owed(now + self.config.delayed_ack),
            };
        } else if self.ack_due == AckDue::No {
            self.ack_due = AckDue::By(now + self.config.delayed_ack);
        }
    }
}

/// `part` as a slice of `frame` (no copy), if it lies within it.
fn shared_slice(frame: &Bytes, part: &[u8]) -> Option<Bytes> {
    let base = frame.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    (start >= base && start + part.len() <= base + frame.len()).then(|| frame.slice_ref(part))
}
