//! What to send next, one segment per call, in this order: a pending RST; the
//! SYN or SYN,ACK; a fast retransmission; a SACK-recovery retransmission
//! (RFC 6675 NextSeg); new data or a go-back-N retransmission after a timeout
//! (gated by the send window, cwnd, Nagle and sender SWS avoidance), with the
//! FIN after the last byte; a window or keepalive probe; a pure ACK.
//!
//! Invariants: every segment but a RST and the first SYN carries ACK =
//! RCV.NXT, and sending one clears the pending-ACK state; nothing is emitted
//! unless it is due, so a caller can loop until `None`. Payload never exceeds
//! the path MSS less the options actually carried, nor the caller's buffer.
//! The payload is staged in a scratch buffer allocated once per connection.

use super::{AckDue, Connection, DUP_ACK_THRESHOLD, MAX_WINDOW_FIELD, PendingRst, ProbeDue};
use crate::seq::SeqNum;
use crate::tcp::TcpState;
use crate::time::Instant;
use crate::wire::tcp::HEADER_LEN;
use crate::wire::{SackBlock, TcpFlags, TcpOptions, TcpRepr};

impl Connection {
    pub(super) fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(rst) = self.pending_rst.take() {
            return self.emit_rst(rst, buf);
        }
        match self.state {
            TcpState::Closed | TcpState::Listen => return None,
            TcpState::SynSent | TcpState::SynReceived
                if self.snd_una == self.iss && self.tx_next == self.iss =>
            {
                return self.emit_syn(now, buf);
            }
            _ => {}
        }
        if self.can_send_data()
            && let Some(n) = self.transmit_data(now, buf)
        {
            return Some(n);
        }
        if self.probe_due != ProbeDue::No {
            // <SEQ=SND.UNA-1><ACK=RCV.NXT>: out of the peer's window, so it
            // answers with an ACK and its window (RFC 1122 §4.2.3.6;
            // RFC 9293 §3.8.6.1 zero-window probing, as Linux does it).
            self.probe_due = ProbeDue::No;
            return self.emit_control(now, buf, self.snd_una - 1);
        }
        if self.ack_due == AckDue::Now {
            return self.emit_control(now, buf, self.snd_nxt);
        }
        None
    }

    /// States in which our data or FIN may still need (re)transmission.
    fn can_send_data(&self) -> bool {
        matches!(
            self.state,
            TcpState::Established
                | TcpState::FinWait1
                | TcpState::CloseWait
                | TcpState::Closing
                | TcpState::LastAck
        )
    }

    /// The congestion window to respect and the data counted against it.
    fn cwnd_and_flight(&self, from: SeqNum) -> (usize, usize) {
        if self.in_recovery {
            if self.sack_enabled {
                // RFC 6675 §5: pipe instead of FlightSize.
                (self.cc.cwnd(), self.pipe())
            } else {
                // RFC 5681 §3.2 steps 3–4: the inflated window.
                (
                    self.cc.cwnd() + self.cwnd_inflation,
                    self.snd_nxt.since(self.snd_una),
                )
            }
        } else {
            // Limited Transmit (RFC 3042 §2): each of the first two
            // duplicate ACKs lets one more new segment out, beyond cwnd.
            let limited_transmit = self.dup_acks.min(2) as usize * self.send_mss;
            // After a timeout, what was sent beyond `tx_next` is presumed lost.
            (self.cc.cwnd() + limited_transmit, from.since(self.snd_una))
        }
    }

    /// Where IsLost() ends (RFC 6675 §4): un-SACKed data below is lost.
    pub(super) fn lost_end(&self) -> SeqNum {
        let threshold = (DUP_ACK_THRESHOLD as usize - 1) * self.send_mss;
        self.scoreboard
            .lost_below(threshold)
            .unwrap_or(self.snd_una)
            .max(self.snd_una)
    }

    /// RFC 6675 §4 SetPipe(): every un-SACKed byte in flight counts once,
    /// except lost bytes not yet retransmitted in this recovery (at or above
    /// HighRxt). Retransmissions only cover lost data or the first segment,
    /// so a retransmitted byte is never counted twice.
    pub(super) fn pipe(&self) -> usize {
        let unsacked = self.scoreboard.holes_between(self.snd_una, self.snd_nxt);
        let lost_end = self.lost_end();
        let retransmitted_up_to = self.high_rxt.max(self.snd_una);
        let lost_pending = self.scoreboard.holes_between(retransmitted_up_to, lost_end);
        unsacked.saturating_sub(lost_pending)
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mss = self.send_mss;
        let data_end = self.data_end();

        // Fast retransmit (RFC 5681 §3.2 step 3) or a NewReno partial ACK
        // (RFC 6582 §3.2 step 5): the first unacknowledged segment, at once.
        if self.fast_retransmit_due {
            self.fast_retransmit_due = false;
            let seq = self.snd_una;
            let len = self.snd_nxt.min(data_end).since(seq).min(mss);
            let fin = self.fin_sent() && seq + len == data_end;
            if len > 0 || fin {
                let sent = self.send_from_queue(now, buf, seq, len, fin);
                if let Some((_, end)) = sent {
                    self.high_rxt = self.high_rxt.max(end);
                }
                return sent.map(|(n, _)| n);
            }
        }

        // SACK loss recovery (RFC 6675 §5 step (C)): while cwnd - pipe >=
        // 1 SMSS, retransmit the next lost hole, else send new data.
        if self.in_recovery && self.sack_enabled {
            if self.pipe() + mss > self.cc.cwnd() {
                return None;
            }
            // NextSeg() rule 1: the first lost byte not yet retransmitted.
            let lost_end = self.lost_end();
            let from = self.high_rxt.max(self.snd_una);
            if let Some((start, end)) = self.scoreboard.next_hole(from)
                && start.lt(lost_end)
            {
                let end = end.min(lost_end);
                let len = end.min(data_end).since(start).min(mss);
                let fin = self.fin_sent() && start + len == data_end && end.gt(data_end);
                if len > 0 || fin {
                    let sent = self.send_from_queue(now, buf, start, len, fin);
                    if let Some((_, seg_end)) = sent {
                        self.high_rxt = self.high_rxt.max(seg_end);
                    }
                    return sent.map(|(n, _)| n);
                }
            }
        }

        // New data, or the go-back-N retransmission after a timeout.
        let seq = self.tx_next;
        let avail = data_end.since(seq);
        let fin_due = self.fin_queued && seq.le(data_end);
        if avail == 0 && !fin_due {
            return None;
        }
        let retransmission = seq.lt(self.snd_nxt);
        if !retransmission
            && self.snd_nxt == self.snd_una
            && let Some(last) = self.last_data_sent
            && now - last > self.rtt.rto()
        {
            // RFC 5681 §4.1: restart window after an idle period.
            self.cc.on_idle_restart(now);
            self.last_data_sent = None;
        }
        // The send window (RFC 9293 §3.8.6.1): SND.UNA + SND.WND - seq. A
        // timeout retransmission of the first segment goes out whatever the
        // window, so a peer that shrank it still hears from us.
        let usable_wnd = if retransmission && seq == self.snd_una {
            mss
        } else {
            (self.snd_una + self.snd_wnd).since(seq)
        };
        let (cwnd, flight) = self.cwnd_and_flight(seq);
        let room = usable_wnd.min(cwnd.saturating_sub(flight));
        let can = avail.min(room).min(mss);

        let len = if retransmission {
            can
        } else if can >= mss {
            // Sender SWS avoidance (RFC 9293 §3.8.6.2.1) case 1: a full segment.
            mss
        } else if !(self.options.nodelay || self.snd_nxt == self.snd_una || self.fin_queued) {
            // Nagle (RFC 9293 §3.7.4): with data unacknowledged, hold a
            // small segment until the ACK comes or a full one fills up. A
            // queued FIN pushes everything out (no more data can follow).
            0
        } else if avail <= room {
            // Case 2: everything queued can go now (possibly 0 bytes + FIN).
            avail
        } else if can > 0 && can >= self.max_snd_wnd / 2 {
            // Case 3: at least half the largest window the peer offered
            // (RFC 1122 §4.2.3.4, Fs = 1/2).
            can
        } else if self.force_send {
            // Case 4: the persist timer's override timeout.
            can
        } else {
            0
        };
        let fin = fin_due && seq + len == data_end;
        if len == 0 && !fin {
            self.arm_persist_if_window_blocked(now, avail, usable_wnd);
            return None;
        }
        self.force_send = false;
        let sent = self.send_from_queue(now, buf, seq, len, fin);
        if let Some((_, end)) = sent
            && end.gt(self.tx_next)
        {
            self.tx_next = end;
        }
        sent.map(|(n, _)| n)
    }

    /// RFC 9293 §3.8.6.1: data is waiting, nothing is in flight (so no ACK
    /// will come to open the window) and the window is what stops us: start
    /// the persist timer.
    fn arm_persist_if_window_blocked(&mut self, now: Instant, avail: usize, usable_wnd: usize) {
        if avail > 0
            && self.snd_nxt == self.snd_una
            && self.rtx_deadline.is_none()
            && self.persist_deadline.is_none()
            && usable_wnd < avail.min(self.send_mss)
        {
            self.persist_deadline = Some(now + self.persist_interval());
        }
    }

    /// Sends `len` bytes of the queue starting at `seq` (plus FIN), updating
    /// SND.NXT, timers, RTT timing and counters. Returns the segment length
    /// and the sequence number just past what it carried.
    fn send_from_queue(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seq: SeqNum,
        len: usize,
        fin: bool,
    ) -> Option<(usize, SeqNum)> {
        let data_end = self.data_end();
        let window = self.advertise_window();
        let options = self.segment_options(now);
        // The payload fits the path MSS less the options this segment carries
        // (SACK blocks can make them longer than the MSS allowed for).
        let limit = self.path_mss.saturating_sub(options.wire_len()).max(1);
        let cut = len.min(limit);
        // The FIN follows the last byte of the queue (RFC 9293 §3.6): if the
        // options cut this segment short of it, the FIN waits for the next
        // segment; set here, it would claim the uncarried bytes' sequence
        // number and the receiver would end the stream before them.
        let fin = fin && cut == len;
        let len = cut;
        let mut flags = TcpFlags::ACK;
        if len > 0 && seq + len == data_end {
            // PSH on the segment that empties the queue, as Linux does.
            flags |= TcpFlags::PSH;
        }
        let (n, carried, fin_sent) = self.write(buf, seq, flags, window, options, len, fin)?;
        let end = seq + carried + usize::from(fin_sent);

        let retransmission = seq.lt(self.snd_nxt);
        if retransmission {
            self.counters.retransmits += 1;
            self.note_retransmission_tsval(now);
            // Karn (RFC 6298 §3): a retransmitted timed segment gives no sample.
            if let Some((timed_end, _)) = self.rtt_timed
                && seq.lt(timed_end)
            {
                self.rtt_timed = None;
            }
        } else if self.rtt_timed.is_none() && !self.ts_enabled {
            self.rtt_timed = Some((end, now));
        }
        if end.gt(self.snd_nxt) {
            if self.snd_nxt == self.snd_una {
                self.last_progress = now;
            }
            self.snd_nxt = end;
        }
        self.counters.bytes_sent += carried as u64;
        if carried > 0 {
            self.last_data_sent = Some(now);
            self.persist_deadline = None;
        }
        // RFC 6298 §5.1: start the timer if it is not running.
        if self.rtx_deadline.is_none() && end.gt(seq) {
            self.rtx_deadline = Some(self.rto_deadline(now));
        }
        Some((n, end))
    }

    /// Remembers the TSval a retransmission just carried (see `rtx_tsval`):
    /// `ts_now(now)` is what `segment_options` / `emit_syn` put in it.
    fn note_retransmission_tsval(&mut self, now: Instant) {
        if self.ts_enabled {
            self.rtx_tsval = Some(self.ts_now(now));
        }
    }

    /// Options for a non-SYN segment: timestamps when negotiated (RFC 7323
    /// §3.2: on every non-RST segment), SACK blocks for held out-of-order
    /// data, most recent first (RFC 2018 §4).
    fn segment_options(&self, now: Instant) -> TcpOptions {
        let mut options = TcpOptions::default();
        if self.ts_enabled {
            options.timestamp = Some((self.ts_now(now), self.ts_recent));
        }
        if self.sack_enabled && self.recv_buf.has_holes() {
            let rcv_nxt = self.rcv_nxt;
            options.set_sacks(self.recv_buf.held_ranges().into_iter().map(|(start, end)| {
                SackBlock {
                    left: rcv_nxt + start,
                    right: rcv_nxt + end,
                }
            }));
        }
        options
    }

    /// The window field for a non-SYN segment, and the new right edge.
    ///
    /// Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge moves
    /// only when it can move by min(RCV.BUFF/2, MSS); it never moves left
    /// (RFC 7323 §2.4), rounding up to the scale unit if need be.
    pub(super) fn advertise_window(&mut self) -> u16 {
        let shift = self.rcv_wscale;
        let promised = self.rcv_wnd();
        let free = self.recv_buf.window().min(MAX_WINDOW_FIELD << shift);
        let window = if free >= promised + self.sws_threshold() {
            free
        } else {
            promised
        };
        let mut field = window >> shift;
        if (field << shift) < promised {
            field += 1;
        }
        let field = field.min(MAX_WINDOW_FIELD);
        self.rcv_adv_right = self.rcv_nxt + (field << shift);
        // `field` is at most MAX_WINDOW_FIELD.
        u16::try_from(field).unwrap_or(u16::MAX)
    }

    /// Writes one segment. The payload (`len` bytes of the send queue at
    /// `seq`) is cut to what `buf` holds; FIN is set only if all of it fit.
    /// Returns (segment bytes, payload bytes, FIN sent).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        buf: &mut [u8],
        seq: SeqNum,
        mut flags: TcpFlags,
        window: u16,
        options: TcpOptions,
        len: usize,
        fin: bool,
    ) -> Option<(usize, usize, bool)> {
        let header_len = HEADER_LEN + options.wire_len();
        if buf.len() < header_len {
            return None;
        }
        let mut carried = len.min(buf.len() - header_len);
        if carried > 0 {
            if self.tx_scratch.len() < carried {
                self.tx_scratch.resize(carried, 0);
            }
            let offset = seq.since(self.send_buf_seq);
            carried = self
                .send_buf
                .read_at(offset, &mut self.tx_scratch[..carried]);
        }
        let fin_sent = fin && carried == len;
        if fin_sent {
            flags |= TcpFlags::FIN;
        }
        let repr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq,
            ack: if flags.ack() { self.rcv_nxt } else { SeqNum(0) },
            flags,
            window,
            urgent: 0,
            options,
            payload: &self.tx_scratch[..carried],
        };
        let n = repr.emit(buf, *self.local.ip(), *self.remote.ip());
        self.counters.segments_out += 1;
        if flags.ack() {
            self.ack_due = AckDue::No;
            self.bytes_since_ack = 0;
            self.last_ack_sent = self.rcv_nxt;
        }
        Some((n, carried, fin_sent))
    }

    /// SYN (active open) or SYN,ACK (passive or simultaneous open),
    /// <SEQ=ISS>, with our options (RFC 9293 §3.10.1, §3.10.7.2).
    fn emit_syn(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let syn_ack = self.state == TcpState::SynReceived;
        let mut options = TcpOptions {
            // RFC 9293 §3.7.1: MSS = MTU - 40.
            mss: Some(u16::try_from(self.adv_mss).unwrap_or(u16::MAX)),
            ..TcpOptions::default()
        };
        if syn_ack {
            // Only what the peer's SYN offered (RFC 7323 §2.2, §3.2; RFC 2018 §2).
            options.window_scale = self.ws_enabled.then_some(self.rcv_wscale);
            options.sack_permitted = self.sack_enabled;
            options.timestamp = self.ts_enabled.then(|| (self.ts_now(now), self.ts_recent));
        } else {
            options.window_scale = Some(self.rcv_wscale);
            options.sack_permitted = true;
            options.timestamp = Some((self.ts_now(now), 0));
        }
        let syn_tsval = options.timestamp.map(|(tsval, _)| tsval);
        let mut flags = TcpFlags::SYN;
        if syn_ack {
            flags |= TcpFlags::ACK;
        }
        // The window of a SYN is never scaled (RFC 7323 §2.2).
        let window = self.recv_buf.window().min(MAX_WINDOW_FIELD);
        let (n, _, _) = self.write(
            buf,
            self.iss,
            flags,
            u16::try_from(window).unwrap_or(u16::MAX),
            options,
            0,
            false,
        )?;
        if syn_ack {
            self.rcv_adv_right = self.rcv_nxt + window;
        }
        let end = self.iss + 1;
        if self.snd_nxt.gt(self.iss) {
            self.counters.retransmits += 1;
            // Recorded even before timestamps are agreed: the SYN,ACK may
            // echo the first SYN's TSval (see `rtx_tsval`).
            if syn_tsval.is_some() {
                self.rtx_tsval = syn_tsval;
            }
            self.syn_retransmitted = true;
        } else {
            // Time the first SYN only (RFC 6298 §3, Karn).
            self.rtt_timed = Some((end, now));
        }
        self.tx_next = end;
        if end.gt(self.snd_nxt) {
            self.snd_nxt = end;
        }
        if self.rtx_deadline.is_none() {
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
        Some(n)
    }

    /// A segment without data: ACK, window update, or probe at `seq`.
    fn emit_control(&mut self, now: Instant, buf: &mut [u8], seq: SeqNum) -> Option<usize> {
        let window = self.advertise_window();
        let options = self.segment_options(now);
        self.write(buf, seq, TcpFlags::ACK, window, options, 0, false)
            .map(|(n, _, _)| n)
    }

    /// <SEQ=seq><CTL=RST> or <SEQ=seq><ACK=ack><CTL=RST,ACK> (RFC 9293 §3.5.2).
    fn emit_rst(&mut self, rst: PendingRst, buf: &mut [u8]) -> Option<usize> {
        let repr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: rst.seq,
            ack: rst.ack.unwrap_or(SeqNum(0)),
            flags: if rst.ack.is_some() {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            },
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        };
        if buf.len() < repr.buffer_len() {
            return None;
        }
        let n = repr.emit(buf, *self.local.ip(), *self.remote.ip());
        self.counters.segments_out += 1;
        Some(n)
    }
}
