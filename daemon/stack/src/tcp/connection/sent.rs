//! The retransmission queue's bookkeeping: one record per segment in flight,
//! with when it was (last) sent and what the peer said about it — SACKed
//! (RFC 2018 §3, the RFC 6675 §3 scoreboard), or deemed lost (by RACK,
//! RFC 8985 §6, by duplicate ACKs or a partial ACK, RFC 6582, or by a
//! retransmission timeout) and not retransmitted since. The bytes stay in
//! the send buffer; only sequence ranges live here (as Linux's
//! retransmission queue keeps per-skb `sacked` bits and a transmit time).
//!
//! Invariants: records are contiguous and ascending, covering exactly
//! `[SND.UNA, SND.NXT)` of what was sent (the SYN excluded; our FIN is the
//! last byte of the last record); each is non-empty; `sacked` and `lost`
//! never both hold; `sacked_bytes` and `lost_bytes` are the sums of the
//! lengths of the records so marked. A record is split when a SACK block
//! or a retransmission covers part of it, so the queue holds at most one
//! record per segment sent plus two per SACK block received: it is bounded
//! by the send buffer over the smallest MSS.

use crate::seq::SeqNum;
use crate::time::Instant;
use std::collections::VecDeque;

/// One transmitted segment (or the part of one that a split left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SentSegment {
    pub start: SeqNum,
    pub end: SeqNum,
    /// When it was last (re)transmitted: RACK's `xmit_ts` (RFC 8985 §5.2).
    pub sent_at: Instant,
    /// Retransmitted at least once (RFC 8985: RACK skips ambiguous ones).
    pub retransmitted: bool,
    /// The peer SACKed it.
    pub sacked: bool,
    /// Deemed lost and not retransmitted since.
    pub lost: bool,
}

impl SentSegment {
    fn len(&self) -> usize {
        self.end.since(self.start)
    }
}

/// What a cumulative ACK or SACK block newly delivered, for RACK (RFC 8985
/// §6.2 steps 2–3) and PRR's DeliveredData (RFC 6937 §3).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Delivered {
    /// Bytes newly SACKed (cumulatively acknowledged bytes are counted by the caller).
    pub sacked_bytes: usize,
    /// Bytes that had been SACKed and are now cumulatively acknowledged.
    pub previously_sacked: usize,
    /// The most recently sent delivered segment: (sent_at, end, retransmitted).
    pub latest: Option<(Instant, SeqNum, bool)>,
    /// A delivered segment sent for the first time lay below one delivered
    /// before it: the network reordered (RFC 8985 §6.2 step 3).
    pub reordered_below: Option<SeqNum>,
}

impl Delivered {
    fn note(&mut self, seg: &SentSegment) {
        let newer = match self.latest {
            None => true,
            Some((at, end, _)) => seg.sent_at > at || (seg.sent_at == at && seg.end.gt(end)),
        };
        if newer {
            self.latest = Some((seg.sent_at, seg.end, seg.retransmitted));
        }
    }
}

/// The records, oldest sequence first, with running totals.
#[derive(Debug, Default)]
pub(super) struct SentQueue {
    segs: VecDeque<SentSegment>,
    sacked_bytes: usize,
    lost_bytes: usize,
}

impl SentQueue {
    /// No records.
    pub(super) const fn new() -> SentQueue {
        SentQueue {
            segs: VecDeque::new(),
            sacked_bytes: 0,
            lost_bytes: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &SentSegment> {
        self.segs.iter()
    }

    /// Bytes SACKed above SND.UNA.
    pub(super) fn sacked_bytes(&self) -> usize {
        self.sacked_bytes
    }

    /// Bytes deemed lost and not yet retransmitted.
    pub(super) fn lost_bytes(&self) -> usize {
        self.lost_bytes
    }

    /// SACKed segments (records) above SND.UNA, for RACK's DupThresh test.
    pub(super) fn sacked_segments(&self) -> usize {
        self.segs.iter().filter(|s| s.sacked).count()
    }

    /// Bytes retransmitted and still in flight (not SACKed, not lost again).
    pub(super) fn retransmitted_in_flight(&self) -> usize {
        self.segs
            .iter()
            .filter(|s| s.retransmitted && !s.sacked && !s.lost)
            .map(SentSegment::len)
            .sum()
    }

    /// The first byte not yet sent (SND.NXT) as far as the records go.
    pub(super) fn end(&self) -> Option<SeqNum> {
        self.segs.back().map(|s| s.end)
    }

    /// The last record (TLP retransmits it, RFC 8985 §7.3).
    pub(super) fn last(&self) -> Option<SentSegment> {
        self.segs.back().copied()
    }

    /// The first lost record not retransmitted since (RFC 6675 NextSeg rule 1).
    pub(super) fn first_lost(&self) -> Option<SentSegment> {
        if self.lost_bytes == 0 {
            return None;
        }
        self.segs.iter().find(|s| s.lost).copied()
    }

    /// Index of the record containing `seq`, if any.
    fn index_of(&self, seq: SeqNum) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.end.le(seq));
        (i < self.segs.len() && self.segs[i].start.le(seq)).then_some(i)
    }

    /// Splits the record containing `at` so that a record starts at `at`.
    fn split_at(&mut self, at: SeqNum) {
        if let Some(i) = self.index_of(at)
            && self.segs[i].start != at
        {
            let mut tail = self.segs[i];
            tail.start = at;
            self.segs[i].end = at;
            self.segs.insert(i + 1, tail);
        }
    }

    /// `[start, end)` was just transmitted at `now`: new data is appended;
    /// a retransmission refreshes the records it covers.
    pub(super) fn on_transmit(&mut self, start: SeqNum, end: SeqNum, now: Instant) {
        if !start.lt(end) {
            return;
        }
        let appended_from = self.end().unwrap_or(start).max(start);
        if start.lt(appended_from) {
            let until = end.min(appended_from);
            self.split_at(start);
            self.split_at(until);
            let from = self.segs.partition_point(|s| s.end.le(start));
            for seg in self.segs.iter_mut().skip(from) {
                if !seg.start.lt(until) {
                    break;
                }
                if seg.lost {
                    seg.lost = false;
                    self.lost_bytes -= seg.len();
                }
                seg.sent_at = now;
                seg.retransmitted = true;
            }
        }
        if appended_from.lt(end) {
            self.segs.push_back(SentSegment {
                start: appended_from,
                end,
                sent_at: now,
                retransmitted: false,
                sacked: false,
                lost: false,
            });
        }
    }

    /// SND.UNA moved to `una`: drops what it covers (trimming a record it
    /// cuts) and reports what was delivered; `fack` as for [`SentQueue::on_sack`].
    pub(super) fn on_cumulative_ack(
        &mut self,
        una: SeqNum,
        fack: SeqNum,
        delivered: &mut Delivered,
    ) {
        while let Some(front) = self.segs.front_mut() {
            if front.end.le(una) {
                let seg = *front;
                self.segs.pop_front();
                self.forget(&seg);
                if seg.sacked {
                    delivered.previously_sacked += seg.len();
                } else {
                    if !seg.retransmitted && seg.end.lt(fack) {
                        delivered.reordered_below = Some(seg.end);
                    }
                    delivered.note(&seg);
                }
            } else {
                if front.start.lt(una) {
                    let cut = una.since(front.start);
                    if front.sacked {
                        self.sacked_bytes -= cut;
                        delivered.previously_sacked += cut;
                    } else if front.lost {
                        self.lost_bytes -= cut;
                    }
                    front.start = una;
                    let seg = *front;
                    if !seg.sacked {
                        delivered.note(&seg);
                    }
                }
                break;
            }
        }
    }

    fn forget(&mut self, seg: &SentSegment) {
        if seg.sacked {
            self.sacked_bytes -= seg.len();
        }
        if seg.lost {
            self.lost_bytes -= seg.len();
        }
    }

    /// The peer SACKed `[left, right)` (already clipped to the records).
    /// `fack` is the highest end SACKed before this ACK: a segment sent once
    /// and SACKed now below it was reordered.
    pub(super) fn on_sack(
        &mut self,
        left: SeqNum,
        right: SeqNum,
        fack: SeqNum,
        delivered: &mut Delivered,
    ) {
        let (Some(first), Some(last)) = (self.segs.front(), self.segs.back()) else {
            return;
        };
        let left = left.max(first.start);
        let right = right.min(last.end);
        if !left.lt(right) {
            return;
        }
        self.split_at(left);
        self.split_at(right);
        let from = self.segs.partition_point(|s| s.end.le(left));
        let mut newly = 0;
        let mut unlost = 0;
        for seg in self.segs.iter_mut().skip(from) {
            if !seg.start.lt(right) {
                break;
            }
            if seg.sacked {
                continue;
            }
            seg.sacked = true;
            newly += seg.len();
            if seg.lost {
                seg.lost = false;
                unlost += seg.len();
            }
            if !seg.retransmitted && seg.end.lt(fack) {
                delivered.reordered_below = Some(seg.end);
            }
            delivered.note(seg);
        }
        self.sacked_bytes += newly;
        self.lost_bytes -= unlost;
        delivered.sacked_bytes += newly;
    }

    /// Marks the record starting at SND.UNA lost (NewReno fast retransmit
    /// and partial ACKs, RFC 6582 §3.2) unless it is SACKed.
    pub(super) fn mark_head_lost(&mut self) {
        if let Some(head) = self.segs.front_mut()
            && !head.sacked
            && !head.lost
        {
            head.lost = true;
            self.lost_bytes += head.len();
        }
    }

    /// Marks every record not SACKed lost (a retransmission timeout, or a
    /// smaller path MTU). If the head itself is SACKed, the peer reneged on
    /// what it SACKed (RFC 2018 §8): the SACK marks are dropped first, as
    /// Linux's `tcp_timeout_mark_lost` does; otherwise they are kept.
    pub(super) fn mark_all_lost(&mut self) {
        let reneged = self.segs.front().is_some_and(|s| s.sacked);
        for seg in self.segs.iter_mut() {
            if seg.sacked && reneged {
                seg.sacked = false;
            }
            if !seg.sacked {
                seg.lost = true;
            }
        }
        self.recount();
    }

    /// RACK's loss detection (RFC 8985 §6.2 step 5) over the records sent
    /// before the RACK segment (`rack_sent_at`, `rack_end`; a record above
    /// it in sequence space qualifies too when the RACK segment is a
    /// retransmission): a record not
    /// SACKed is lost once `deadline(sent_at)` has passed, where the caller's
    /// deadline is sent_at + RACK.rtt + RACK.reo_wnd. Returns the bytes newly
    /// marked lost and the earliest deadline still pending (the reordering
    /// timer).
    pub(super) fn rack_detect(
        &mut self,
        now: Instant,
        rack_sent_at: Instant,
        rack_end: SeqNum,
        deadline: impl Fn(Instant) -> Instant,
    ) -> (usize, Option<Instant>) {
        let mut newly = 0;
        let mut timer: Option<Instant> = None;
        for seg in self.segs.iter_mut() {
            if seg.sacked || seg.lost {
                continue;
            }
            let sent_before =
                seg.sent_at < rack_sent_at || (seg.sent_at == rack_sent_at && seg.end.lt(rack_end));
            if !sent_before {
                continue;
            }
            let due = deadline(seg.sent_at);
            if due <= now {
                seg.lost = true;
                newly += seg.len();
            } else {
                timer = Some(timer.map_or(due, |t| t.min(due)));
            }
        }
        self.lost_bytes += newly;
        (newly, timer)
    }

    /// Forgets every lost mark: the reduction that made them proved
    /// spurious (Linux's `tcp_undo_cwnd_reduction` with `unmark_loss`).
    pub(super) fn unmark_lost(&mut self) {
        for seg in self.segs.iter_mut() {
            seg.lost = false;
        }
        self.lost_bytes = 0;
    }

    fn recount(&mut self) {
        self.sacked_bytes = 0;
        self.lost_bytes = 0;
        for seg in &self.segs {
            if seg.sacked {
                self.sacked_bytes += seg.len();
            }
            if seg.lost {
                self.lost_bytes += seg.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn queue() -> SentQueue {
        let mut q = SentQueue::default();
        for i in 0..5u32 {
            q.on_transmit(SeqNum(100 * i), SeqNum(100 * (i + 1)), t(u64::from(i)));
        }
        q
    }

    #[test]
    fn sack_splits_and_counts() {
        let mut q = queue();
        let mut d = Delivered::default();
        q.on_sack(SeqNum(150), SeqNum(300), SeqNum(0), &mut d);
        assert_eq!(d.sacked_bytes, 150);
        assert_eq!(q.sacked_bytes(), 150);
        assert_eq!(q.sacked_segments(), 2);
        assert_eq!(d.latest.map(|l| l.1), Some(SeqNum(300)));
        // The same block again delivers nothing new.
        let mut d = Delivered::default();
        q.on_sack(SeqNum(150), SeqNum(300), SeqNum(300), &mut d);
        assert_eq!(d.sacked_bytes, 0);
        let mut d = Delivered::default();
        q.on_cumulative_ack(SeqNum(200), SeqNum(300), &mut d);
        assert_eq!(d.previously_sacked, 50);
        assert_eq!(q.sacked_bytes(), 100);
        assert_eq!(q.iter().next().map(|s| s.start), Some(SeqNum(200)));
    }

    #[test]
    fn rack_marks_older_segments_after_the_window() {
        let mut q = queue();
        let mut d = Delivered::default();
        q.on_sack(SeqNum(300), SeqNum(400), SeqNum(0), &mut d);
        let (sent_at, end, _) = d.latest.expect("delivered");
        // Records 0..300 were sent at 0, 1, 2 ms; RTT 10 + window 1.
        let (lost, timer) = q.rack_detect(t(12), sent_at, end, |at| {
            at + crate::time::Duration::from_millis(11)
        });
        assert_eq!(lost, 200);
        assert_eq!(timer, Some(t(13)));
        assert_eq!(q.first_lost().map(|s| s.start), Some(SeqNum(0)));
        // Retransmitting part of a lost record splits it.
        q.on_transmit(SeqNum(0), SeqNum(50), t(20));
        assert_eq!(q.lost_bytes(), 150);
        assert_eq!(q.first_lost().map(|s| s.start), Some(SeqNum(50)));
    }

    #[test]
    fn timeout_keeps_sacks_unless_the_head_was_sacked() {
        let mut q = queue();
        let mut d = Delivered::default();
        q.on_sack(SeqNum(200), SeqNum(300), SeqNum(0), &mut d);
        q.mark_all_lost();
        assert_eq!(q.lost_bytes(), 400);
        assert_eq!(q.sacked_bytes(), 100);
        let mut q = queue();
        q.on_sack(SeqNum(0), SeqNum(100), SeqNum(0), &mut d);
        q.mark_all_lost();
        assert_eq!(q.lost_bytes(), 500);
        assert_eq!(q.sacked_bytes(), 0);
    }

    #[test]
    fn works_across_the_wrap() {
        let mut q = SentQueue::default();
        let base = SeqNum(u32::MAX - 50);
        q.on_transmit(base, base + 100, t(0));
        q.on_transmit(base + 100, base + 200, t(1));
        let mut d = Delivered::default();
        q.on_sack(base + 100, base + 200, base, &mut d);
        assert_eq!(q.sacked_bytes(), 100);
        q.on_cumulative_ack(base + 60, base + 200, &mut d);
        assert_eq!(q.iter().next().map(|s| s.start), Some(base + 60));
        assert_eq!(q.end(), Some(base + 200));
    }
}
