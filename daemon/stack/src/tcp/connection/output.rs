//! What to send next, one segment per call, in this order: a pending RST; the
//! SYN or SYN,ACK; a retransmission of a segment deemed lost (fast
//! retransmit, RACK, NewReno partial ACK, or after a timeout), within cwnd or
//! PRR's window; a tail-loss probe (RFC 8985 §7); new data (gated by the
//! send window, cwnd, Nagle and sender SWS avoidance), with the FIN after
//! the last byte; a window or keepalive probe; a pure ACK.
//!
//! Invariants: every segment but a RST and the first SYN carries ACK =
//! RCV.NXT, and sending one clears the pending-ACK state; nothing is emitted
//! unless it is due, so a caller can loop until `None`. Payload never exceeds
//! the path MSS less the options actually carried, nor the caller's buffer,
//! except in a super-segment (when the link segments, see [`super::TxOffload`]):
//! new data (and go-back-N retransmissions) then go out as several full
//! MSS-sized segments in one, with one header whose sequence number, ACK,
//! window and options (the same timestamps) hold for every piece, PSH and
//! FIN on the last piece only (the link's segmentation keeps them there).
//! Fast and SACK retransmissions stay MSS-sized. The payload is copied once,
//! from the send buffer straight into `buf` — or not at all when the link
//! writes it from the send buffer behind the headers
//! ([`super::TxOffload::vectored`]).

use super::{
    AckDue, Connection, MAX_SUPER_SEGMENT, MAX_WINDOW_FIELD, PendingRst, ProbeDue, narrow, recovery,
};
use crate::seq::SeqNum;
use crate::socket::MemoryLevel;
use crate::tcp::TcpState;
use crate::tcp::congestion::CongestionControl;
use crate::time::Instant;
use crate::wire::tcp::HEADER_LEN;
use crate::wire::{SackBlock, TcpFlags, TcpOptions, TcpRepr, TxChecksum, checksum};

impl Connection {
    pub(super) fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(rst) = self.pending_rst.take() {
            return self.emit_rst(now, rst, buf);
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
        // ACKs owed for earlier points of a batch of in-order data (see
        // `ack_points`), oldest first, before anything carrying RCV.NXT.
        while let Some(point) = self.ack_points.pop_front() {
            if point.lt(self.rcv_nxt) {
                self.ack_point = Some(point);
                let sent = self.emit_control(now, buf, self.snd_nxt);
                self.ack_point = None;
                return sent;
            }
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
        if self.ack_due == AckDue::Now
            || (matches!(self.ack_due, AckDue::Owed(_)) && self.owed_ack_is_due())
        {
            return self.emit_control(now, buf, self.snd_nxt);
        }
        None
    }

    /// Whether an ACK owed for two full-sized segments ([`AckDue::Owed`])
    /// goes now. Linux (`__tcp_ack_snd_check`) sends it if "more than one
    /// full frame [was] received... and [the] right edge of window advances
    /// far enough (tcp_recvmsg() will send ACK otherwise)", or if the
    /// reader has caught up (fewer than SO_RCVLOWAT bytes wait). Its window
    /// is clamped below the free space (rcv_ssthresh) and does not shrink
    /// while the reader keeps up; ours offers all of the free space, so
    /// "keeps up" is: the window we would offer reaches as far past RCV.NXT
    /// as the last ACK's did past its acknowledgment number, or it is at
    /// least half the buffer (of what the window field can offer).
    /// Otherwise the reader lags and the window is the limit: an ACK now
    /// would let the sender send nothing more; the read that opens the
    /// window sends it (`window_update_after_read`), or the delayed-ACK
    /// timer does.
    fn owed_ack_is_due(&self) -> bool {
        let offered = self.offered_window();
        self.recv_buf.readable() < self.options.recv_lowat.max(1)
            || offered >= self.rcv_adv_right.since(self.last_ack_sent)
            || offered
                >= self
                    .recv_buf
                    .capacity()
                    .min(MAX_WINDOW_FIELD << self.rcv_wscale)
                    / 2
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

    /// The window that limits sending now: PRR's during fast recovery
    /// (RFC 6937 §3), the controller's cwnd otherwise.
    pub(super) fn effective_cwnd(&self) -> usize {
        if self.in_recovery {
            self.flight().prr.cwnd
        } else {
            self.cc.cwnd()
        }
    }

    /// RFC 6675 §4 pipe: the bytes in flight less those SACKed and those
    /// deemed lost and not yet retransmitted (Linux's
    /// `tcp_packets_in_flight`); without SACK, less what duplicate ACKs
    /// reported during recovery.
    pub(super) fn pipe(&self) -> usize {
        let flight = self.snd_nxt.since(self.snd_una);
        flight.saturating_sub(
            self.flight().sent.sacked_bytes()
                + self.flight().sent.lost_bytes()
                + self.reno_dup_bytes(),
        )
    }

    /// The congestion window to respect and the data counted against it.
    fn cwnd_and_pipe(&self) -> (usize, usize) {
        // Limited Transmit (RFC 3042 §2): each of the first two duplicate
        // ACKs lets one more new segment out, beyond cwnd. With SACK, pipe
        // already leaves out the SACKed segments those ACKs reported.
        let limited_transmit = if self.sack_enabled || self.in_recovery {
            0
        } else {
            self.dup_acks.min(2) as usize * self.send_mss()
        };
        (self.effective_cwnd() + limited_transmit, self.pipe())
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mss = self.send_mss();
        let data_end = self.data_end();

        // Segments deemed lost go first (RFC 6675 §5 NextSeg() rule 1; the
        // fast retransmit of RFC 5681 §3.2 and a NewReno partial ACK's,
        // RFC 6582 §3.2; the timeout's retransmissions, RFC 6298 §5.4),
        // within cwnd (PRR's during recovery).
        if let Some(lost) = self.flight().sent.first_lost() {
            let (cwnd, pipe) = self.cwnd_and_pipe();
            if pipe < cwnd {
                let len = lost.end.min(data_end).since(lost.start).min(mss);
                let fin = self.fin_sent() && lost.end.gt(data_end) && lost.start + len == data_end;
                if len > 0 || fin {
                    return self
                        .send_from_queue(now, buf, lost.start, len, fin)
                        .map(|(n, _)| n);
                }
            }
        }

        // A tail-loss probe (RFC 8985 §7.3): new data if the peer's window
        // allows, else the last segment again; cwnd is not consulted.
        if self.flight().tlp.due {
            self.flight_mut().tlp.due = false;
            if let Some(n) = self.send_probe(now, buf) {
                return Some(n);
            }
        }

        // New data.
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
        // The send window (RFC 9293 §3.8.6.1): SND.UNA + SND.WND - seq.
        let usable_wnd = (self.snd_una + self.snd_wnd()).since(seq);
        let (cwnd, pipe) = self.cwnd_and_pipe();
        let mut cwnd_room = cwnd.saturating_sub(pipe);
        if self.in_recovery && cwnd_room > 0 {
            // PRR's sndcnt counts whole segments (RFC 6937 §3 rounds up;
            // Linux counts packets): any allowance sends one full segment.
            cwnd_room = cwnd_room.max(mss);
        }
        let room = usable_wnd.min(cwnd_room);
        // MSG_EOR: a segment ends at the end of a record (no coalescing).
        while self.eor_marks.front().is_some_and(|mark| !mark.gt(seq)) {
            self.eor_marks.pop_front();
        }
        let record_end = self.eor_marks.front().map(|mark| mark.since(seq));
        let avail_in_record = record_end.map_or(avail, |r| r.min(avail));
        let can = avail_in_record.min(room).min(self.max_burst());
        // Urgent data is pushed: neither a cork nor Nagle holds it (Linux's
        // `tcp_nagle_test`).
        let urgent = self.urgent_mode();
        let corked = self.corked(now) && !self.fin_queued && !urgent;
        let push = self.options.nodelay || self.fin_queued || urgent;
        let len = if retransmission {
            can
        } else if can >= mss {
            // Sender SWS avoidance (RFC 9293 §3.8.6.2.1) case 1: full
            // segments (several in a super-segment). A shorter tail rides
            // along only where it would follow at once anyway: all the
            // queue (or record) fits, no cork holds it, and Nagle would
            // not hold it (below).
            let whole = can - can % mss;
            if can == avail_in_record && !corked && (push || !self.small_segment_unacked()) {
                can
            } else {
                whole
            }
        } else if corked {
            // TCP_CORK / MSG_MORE: a partial segment waits for more data,
            // the uncork, or the 200 ms ceiling.
            0
        } else if !push && self.small_segment_unacked() {
            // Nagle (RFC 9293 §3.7.4) in Minshall's variant, as Linux
            // (`tcp_nagle_check`): hold a small segment only while an
            // earlier small one is unacknowledged (full-sized segments in
            // flight do not hold the tail of a write). A queued FIN pushes
            // everything out (no more data can follow).
            0
        } else if avail_in_record <= room {
            // Case 2: everything queued (up to the end of a record) can go
            // now (possibly 0 bytes + FIN).
            avail_in_record
        } else if can > 0 && can >= self.max_snd_wnd() / 2 {
            // Case 3: at least half the largest window the peer offered
            // (RFC 1122 §4.2.3.4, Fs = 1/2).
            can
        } else if can > 0 && self.snd_nxt == self.snd_una {
            // Nothing in flight and a usable window smaller than the data:
            // send what fits now, as Linux does, rather than wait for the
            // override timeout (RFC 9293 §3.8.6.2.1 case 4); the
            // receiver's own SWS avoidance keeps such windows rare.
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
            // A super-segment's last piece is short when `len` is not whole MSS.
            if len < mss || len % mss != 0 {
                self.last_small_end = Some(end);
            }
        }
        sent.map(|(n, _)| n)
    }

    /// Minshall's test: a segment shorter than the MSS was sent and is not
    /// yet acknowledged (Linux's `tcp_minshall_check` on `snd_sml`).
    fn small_segment_unacked(&self) -> bool {
        self.last_small_end
            .is_some_and(|end| end.gt(self.snd_una) && end.le(self.snd_nxt))
    }

    /// Sends the tail-loss probe (RFC 8985 §7.3): one segment of new data
    /// if there is some and the peer's window takes it, else the last
    /// segment sent (at most one SMSS of its tail). Records the probe
    /// (TLP.end_seq) and re-arms the RTO timer.
    fn send_probe(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let mss = self.send_mss();
        let data_end = self.data_end();
        let seq = self.snd_nxt;
        let avail = data_end.since(seq);
        let usable_wnd = (self.snd_una + self.snd_wnd()).since(seq);
        let new_data = avail > 0 && usable_wnd > 0 && seq == self.tx_next;
        let sent = if new_data {
            let len = avail.min(usable_wnd).min(mss);
            let fin = self.fin_queued && seq + len == data_end;
            let sent = self.send_from_queue(now, buf, seq, len, fin);
            if let Some((_, end)) = sent
                && end.gt(self.tx_next)
            {
                self.tx_next = end;
            }
            sent
        } else {
            let last = self.flight().sent.last()?;
            let start = last.start.max(last.end.min(data_end) - mss);
            let len = last.end.min(data_end).since(start);
            let fin = self.fin_sent() && last.end.gt(data_end);
            self.send_from_queue(now, buf, start, len, fin)
        };
        let (n, _) = sent?;
        self.flight_mut().tlp.deadline = None;
        self.flight_mut().tlp.end_seq = Some(self.snd_nxt);
        self.flight_mut().tlp.is_retrans = !new_data;
        self.flight_mut().tlp.probes += 1;
        self.rtx_deadline = Some(self.rto_deadline(now));
        Some(n)
    }

    /// RFC 8985 §7.2: after new data goes out in the open state with SACK,
    /// and no probe outstanding, (re)arm the probe timer.
    pub(super) fn arm_tlp(&mut self, now: Instant) {
        if let Some(flight) = self.flight.as_deref_mut() {
            flight.tlp.deadline = None;
        }
        if !self.sack_enabled
            || self.in_recovery
            || self.rto_recover.is_some()
            || self.flight().tlp.end_seq.is_some()
            || self.snd_una == self.snd_nxt
        {
            return;
        }
        let srtt = self.rtt.has_sample().then(|| self.rtt.srtt());
        let one_segment = self.snd_nxt.since(self.snd_una) <= self.send_mss();
        self.flight_mut().tlp.deadline = Some(recovery::probe_timeout(
            now,
            srtt,
            one_segment,
            self.rtx_deadline,
        ));
    }

    /// RFC 9293 §3.8.6.1: data is waiting, nothing is in flight (so no ACK
    /// will come to open the window) and the window is what stops us: start
    /// the persist timer.
    fn arm_persist_if_window_blocked(&mut self, now: Instant, avail: usize, usable_wnd: usize) {
        if avail > 0
            && self.snd_nxt == self.snd_una
            && self.rtx_deadline.is_none()
            && self.persist_deadline.is_none()
            && usable_wnd < avail.min(self.send_mss())
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
        let limit = self.path_mss().saturating_sub(options.wire_len()).max(1);
        // A super-segment's pieces would all carry one urgent pointer.
        let cut = if self.tx_offload.segmentation && !self.urgent_mode() {
            // A super-segment: the link cuts it into `limit`-byte pieces.
            len.min(MAX_SUPER_SEGMENT)
        } else {
            len.min(limit)
        };
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
        if carried > limit {
            self.tx_emitted.gso_size = Some(u16::try_from(limit).unwrap_or(u16::MAX));
            // Count wire segments, as the peer will see them.
            self.counters.segments_out = self
                .counters
                .segments_out
                .wrapping_add((carried.div_ceil(limit) - 1) as u32);
        }

        let retransmission = seq.lt(self.snd_nxt);
        match self.tx_emitted.gso_size {
            // One record per wire segment, so that SACK and RACK judge each
            // piece of a super-segment as the peer sees it.
            Some(size) => {
                let mut at = seq;
                while at.lt(end) {
                    let next = (at + usize::from(size)).min(end);
                    self.flight_mut().sent.on_transmit(at, next, now);
                    at = next;
                }
            }
            None => self.flight_mut().sent.on_transmit(seq, end, now),
        }
        if self.in_recovery {
            // RFC 6937 §3: prr_out counts everything sent during recovery.
            self.flight_mut().prr.out += end.since(seq);
        }
        if retransmission {
            self.counters.retransmits = self.counters.retransmits.wrapping_add(1);
            self.note_retransmission_tsval(now);
            let tsval = self.ts_enabled.then(|| self.ts_now(now));
            if let Some(undo) = &mut self.undo {
                let segments = u32::try_from(carried.div_ceil(limit).max(1)).unwrap_or(u32::MAX);
                undo.on_retransmit(seq, end, segments, tsval);
            }
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
        // The largest flight of this window of data (see `max_flight`).
        let flight = self.snd_nxt.since(self.snd_una);
        if self.snd_una.ge(self.max_flight_seq) {
            self.max_flight = narrow(flight);
            self.max_flight_seq = self.snd_nxt;
        } else {
            self.max_flight = narrow(self.max_flight().max(flight));
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
        if !retransmission && end.gt(seq) && !self.flight().tlp.due {
            self.arm_tlp(now);
        }
        Some((n, end))
    }

    /// The most payload one call may emit: one MSS, or as many whole MSS as
    /// a super-segment holds when the link segments.
    fn max_burst(&self) -> usize {
        let mss = self.send_mss().max(1);
        if self.tx_offload.segmentation {
            (MAX_SUPER_SEGMENT / mss).max(1) * mss
        } else {
            mss
        }
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
    fn segment_options(&mut self, now: Instant) -> TcpOptions {
        let mut options = TcpOptions::default();
        if self.ts_enabled {
            options.timestamp = Some((self.ts_now(now), self.ts_recent));
        }
        // A D-SACK for duplicate data goes first, once (RFC 2883 §4).
        // It rides on an ACK whose number covers it: an ACK for an earlier
        // point of a batch (`ack_point`) would make it look like an
        // ordinary SACK of data above the ACK, not a duplicate report.
        let ack = self.ack_point.unwrap_or(self.rcv_nxt);
        let dsack = self
            .occasional()
            .pending_dsack
            .filter(|&(_, right)| self.sack_enabled && right.le(ack))
            .map(|(left, right)| SackBlock { left, right });
        if dsack.is_some() {
            self.set_occasional(None, |o| &mut o.pending_dsack);
        }
        if self.sack_enabled && (dsack.is_some() || self.recv_buf.has_holes()) {
            let rcv_nxt = self.rcv_nxt;
            let held = self
                .recv_buf
                .held_ranges()
                .into_iter()
                .map(|(start, end)| SackBlock {
                    left: rcv_nxt + start,
                    right: rcv_nxt + end,
                });
            options.set_sacks(dsack.into_iter().chain(held));
        }
        options
    }

    /// The window a segment sent now would offer past RCV.NXT, before the
    /// scaling: the free buffer if that moves the right edge far enough,
    /// else the window already promised (see [`Self::advertise_window`]).
    fn offered_window(&self) -> usize {
        let promised = self.rcv_wnd();
        let mut free = self
            .recv_buf
            .window()
            .min(MAX_WINDOW_FIELD << self.rcv_wscale);
        match self.memory_level() {
            MemoryLevel::Normal => {}
            // Linux under tcp_mem pressure: rcv_ssthresh <= 4 × advmss.
            MemoryLevel::Pressure => free = free.min(promised.max(4 * self.adv_mss())),
            // The right edge stays (it never moves left: RFC 9293 §3.8.6.2.1).
            MemoryLevel::Full | MemoryLevel::Exhausted => free = free.min(promised),
        }
        if free >= promised + self.sws_threshold() {
            free
        } else {
            promised
        }
    }

    /// The window field for a non-SYN segment, and the new right edge.
    ///
    /// Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge moves
    /// only when it can move by min(RCV.BUFF/2, MSS); it never moves left
    /// (RFC 7323 §2.4), rounding up to the scale unit if need be.
    pub(super) fn advertise_window(&mut self) -> u16 {
        let shift = self.rcv_wscale;
        let promised = self.rcv_wnd();
        let window = self.offered_window();
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
        let mut apart = None;
        if carried > 0 {
            let offset = seq.since(self.send_buf_seq);
            if self.tx_offload.vectored {
                // No copy: the link writes the payload from the send
                // buffer behind the headers; its sum is needed only when
                // the link does not complete the checksum.
                let [a, b] = self.send_buf.slices_at(offset, carried);
                carried = a.len() + b.len();
                let sum = (!self.tx_offload.checksum).then(|| checksum::sum_parts([a, b]));
                apart = Some(((offset, carried), sum));
            } else {
                // The one copy of the payload: send buffer → outgoing segment.
                carried = self
                    .send_buf
                    .read_at(offset, &mut buf[header_len..header_len + carried]);
            }
        }
        let fin_sent = fin && carried == len;
        if fin_sent {
            flags |= TcpFlags::FIN;
        }
        let urgent = self.urgent_pointer(seq);
        if urgent.is_some() {
            flags |= TcpFlags::URG;
        }
        let repr = TcpRepr {
            src_port: self.local_port,
            dst_port: self.remote_port,
            seq,
            ack: if flags.ack() {
                self.ack_point.unwrap_or(self.rcv_nxt)
            } else {
                SeqNum(0)
            },
            flags,
            window,
            urgent: urgent.unwrap_or(0),
            options,
            payload: &[],
        };
        let checksum = if self.tx_offload.checksum {
            TxChecksum::Partial
        } else {
            TxChecksum::Full
        };
        let (local, remote) = (self.local_ip, self.remote_ip);
        let n = match apart {
            Some((payload, sum)) => {
                let (at, len) = payload;
                // Within the send buffer (see `Emitted`).
                self.tx_emitted.payload_apart = Some((at as u32, len as u32));
                repr.emit_header_apart(buf, carried, sum, local, remote, checksum) + carried
            }
            None => repr.emit_header(buf, carried, local, remote, checksum),
        };
        self.tx_emitted.partial_checksum = self.tx_offload.checksum;
        // A TCP header is at most 60 bytes (RFC 9293 §3.1, data offset).
        self.tx_emitted.header_len = header_len as u8;
        self.counters.segments_out = self.counters.segments_out.wrapping_add(1);
        if flags.ack() && self.ack_point.is_none() {
            self.ack_due = AckDue::No;
            self.bytes_since_ack = 0;
            self.last_ack_sent = self.rcv_nxt;
            self.ack_points.clear();
        }
        Some((n, carried, fin_sent))
    }

    /// SYN (active open) or SYN,ACK (passive or simultaneous open),
    /// <SEQ=ISS>, with our options (RFC 9293 §3.10.1, §3.10.7.2).
    fn emit_syn(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let syn_ack = self.state == TcpState::SynReceived;
        let mut options = TcpOptions {
            // RFC 9293 §3.7.1: MSS = MTU - 40.
            mss: Some(u16::try_from(self.adv_mss()).unwrap_or(u16::MAX)),
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
            self.counters.retransmits = self.counters.retransmits.wrapping_add(1);
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
    /// Carries the timestamps option when the connection negotiated it
    /// (RFC 7323 §3.2: "SHOULD ... on RST"; Linux sends TSval and TS.Recent).
    fn emit_rst(&mut self, now: Instant, rst: PendingRst, buf: &mut [u8]) -> Option<usize> {
        let options = TcpOptions {
            timestamp: self.ts_enabled.then(|| (self.ts_now(now), self.ts_recent)),
            ..TcpOptions::default()
        };
        let repr = TcpRepr {
            src_port: self.local_port,
            dst_port: self.remote_port,
            seq: rst.seq,
            ack: rst.ack.unwrap_or(SeqNum(0)),
            flags: if rst.ack.is_some() {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            },
            window: 0,
            urgent: 0,
            options,
            payload: &[],
        };
        if buf.len() < repr.buffer_len() {
            return None;
        }
        let n = repr.emit(buf, self.local_ip, self.remote_ip);
        self.counters.segments_out = self.counters.segments_out.wrapping_add(1);
        Some(n)
    }
}
