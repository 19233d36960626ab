//! The SACK scoreboard of RFC 6675 §3: which ranges above SND.UNA the peer
//! reported holding (RFC 2018 §3).
//!
//! Invariants: blocks are sorted, disjoint, non-empty and non-adjacent
//! (touching blocks are merged); all lie within (SND.UNA, SND.NXT] as last
//! pruned; at most [`MAX_BLOCKS`] are kept (the lowest ones: those are what
//! loss recovery needs next), so a peer cannot make the scoreboard grow
//! without bound. The vector's capacity is reserved once: no allocation per ACK.

use crate::seq::SeqNum;

/// Ranges remembered at most.
const MAX_BLOCKS: usize = 64;

/// SACKed ranges `[left, right)`, ascending.
#[derive(Debug, Default)]
pub(super) struct Scoreboard {
    blocks: Vec<(SeqNum, SeqNum)>,
}

impl Scoreboard {
    pub(super) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.blocks.clear();
    }

    /// Records `[left, right)` (already checked to lie within the send window).
    pub(super) fn insert(&mut self, left: SeqNum, right: SeqNum) {
        if !left.lt(right) {
            return;
        }
        if self.blocks.capacity() == 0 {
            self.blocks.reserve_exact(MAX_BLOCKS + 1);
        }
        // First block whose right edge reaches `left` (may merge).
        let i = self.blocks.partition_point(|&(_, r)| r.lt(left));
        let mut new_left = left;
        let mut new_right = right;
        while i < self.blocks.len() && self.blocks[i].0.le(new_right) {
            new_left = new_left.min(self.blocks[i].0);
            new_right = new_right.max(self.blocks[i].1);
            self.blocks.remove(i);
        }
        self.blocks.insert(i, (new_left, new_right));
        if self.blocks.len() > MAX_BLOCKS {
            self.blocks.truncate(MAX_BLOCKS);
        }
    }

    /// Forgets everything below `snd_una` (cumulatively acknowledged).
    pub(super) fn prune(&mut self, snd_una: SeqNum) {
        let gone = self.blocks.partition_point(|&(_, r)| r.le(snd_una));
        self.blocks.drain(..gone);
        if let Some(first) = self.blocks.first_mut() {
            first.0 = first.0.max(snd_una);
        }
    }

    #[cfg(test)]
    /// The highest SACKed sequence number plus one (RFC 6675 "HighACK" side of
    /// the scoreboard), or `floor` if nothing is SACKed.
    pub(super) fn high_sacked(&self, floor: SeqNum) -> SeqNum {
        self.blocks.last().map_or(floor, |&(_, r)| r.max(floor))
    }

    /// Bytes SACKed in total.
    #[cfg(test)]
    pub(super) fn sacked_bytes(&self) -> usize {
        self.blocks.iter().map(|&(l, r)| r.since(l)).sum()
    }

    /// Bytes SACKed below `limit`.
    fn sacked_below(&self, limit: SeqNum) -> usize {
        self.blocks
            .iter()
            .take_while(|&&(l, _)| l.lt(limit))
            .map(|&(l, r)| r.min(limit).since(l))
            .sum()
    }

    /// Bytes not SACKed in `[from, to)`.
    pub(super) fn holes_between(&self, from: SeqNum, to: SeqNum) -> usize {
        if !from.lt(to) {
            return 0;
        }
        let total = to.since(from);
        let sacked = self
            .sacked_below(to)
            .saturating_sub(self.sacked_below(from));
        total.saturating_sub(sacked)
    }

    /// RFC 6675 §4 IsLost(): un-SACKed bytes below the returned sequence
    /// number are deemed lost, because more than `threshold` bytes above
    /// them are SACKed ((DupThresh - 1) * SMSS). `None`: nothing is lost.
    pub(super) fn lost_below(&self, threshold: usize) -> Option<SeqNum> {
        let mut sacked_above = 0;
        for &(l, r) in self.blocks.iter().rev() {
            sacked_above += r.since(l);
            if sacked_above > threshold {
                return Some(l);
            }
        }
        None
    }

    /// The first un-SACKed range at or after `from` that lies below the
    /// highest SACKed byte, as `[start, end)` (RFC 6675 NextSeg() rule 1
    /// takes it if IsLost says so).
    pub(super) fn next_hole(&self, from: SeqNum) -> Option<(SeqNum, SeqNum)> {
        let mut start = from;
        for &(l, r) in &self.blocks {
            if r.le(start) {
                continue;
            }
            if l.le(start) {
                // Inside a SACKed block: the hole starts after it.
                start = r;
                continue;
            }
            return Some((start, l));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_prunes() {
        let mut sb = Scoreboard::default();
        sb.insert(SeqNum(300), SeqNum(400));
        sb.insert(SeqNum(100), SeqNum(200));
        sb.insert(SeqNum(200), SeqNum(250));
        assert_eq!(
            sb.blocks,
            vec![(SeqNum(100), SeqNum(250)), (SeqNum(300), SeqNum(400))]
        );
        assert_eq!(sb.sacked_bytes(), 250);
        assert_eq!(sb.next_hole(SeqNum(50)), Some((SeqNum(50), SeqNum(100))));
        assert_eq!(sb.next_hole(SeqNum(120)), Some((SeqNum(250), SeqNum(300))));
        assert_eq!(sb.next_hole(SeqNum(300)), None);
        assert_eq!(sb.holes_between(SeqNum(50), SeqNum(400)), 50 + 50);
        // 100 bytes SACKed above 250, 250 above 50.
        assert_eq!(sb.lost_below(99), Some(SeqNum(300)));
        assert_eq!(sb.lost_below(100), Some(SeqNum(100)));
        assert_eq!(sb.lost_below(250), None);
        sb.insert(SeqNum(240), SeqNum(310));
        assert_eq!(sb.blocks, vec![(SeqNum(100), SeqNum(400))]);
        sb.prune(SeqNum(150));
        assert_eq!(sb.blocks, vec![(SeqNum(150), SeqNum(400))]);
        sb.prune(SeqNum(400));
        assert!(sb.is_empty());
        assert_eq!(sb.high_sacked(SeqNum(7)), SeqNum(7));
    }

    #[test]
    fn works_across_the_wrap() {
        let mut sb = Scoreboard::default();
        let base = SeqNum(u32::MAX - 10);
        sb.insert(base + 20, base + 30);
        sb.insert(base + 5, base + 12);
        assert_eq!(sb.next_hole(base), Some((base, base + 5)));
        assert_eq!(sb.next_hole(base + 6), Some((base + 12, base + 20)));
        assert_eq!(sb.high_sacked(base), base + 30);
    }
}
