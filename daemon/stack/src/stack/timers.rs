//! The stack's timer queue: each connection's next deadline in a binary
//! min-heap with lazy invalidation.
//!
//! A connection's *registered* deadline is stored beside it (in the stack's
//! connection entry); the heap may also hold older, superseded entries for
//! it. An entry is live only while it equals the registered deadline of an
//! existing connection; stale entries are skipped when they reach the top.
//! `poll_timeout` is then a peek and re-arming is a push, both O(log n),
//! instead of a scan over every connection.

use super::ConnId;
use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Deadlines in a min-heap, ties broken by connection id (deterministic).
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl TimerQueue {
    /// Adds a deadline for `id`; the caller records it as the registered one.
    pub(crate) fn push(&mut self, deadline: Instant, id: ConnId) {
        self.heap.push(Reverse((deadline, id)));
    }

    /// The earliest entry, live or stale.
    pub(crate) fn peek(&self) -> Option<(Instant, ConnId)> {
        self.heap.peek().map(|Reverse(entry)| *entry)
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<(Instant, ConnId)> {
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Entries held, including stale ones.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces the contents with exactly `live` (to shed stale entries).
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (Instant, ConnId)>) {
        self.heap = live.map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_earliest_first_with_id_tiebreak() {
        let mut q = TimerQueue::default();
        q.push(Instant::from_millis(30), ConnId(1));
        q.push(Instant::from_millis(10), ConnId(9));
        q.push(Instant::from_millis(10), ConnId(2));
        assert_eq!(q.peek(), Some((Instant::from_millis(10), ConnId(2))));
        assert_eq!(q.pop(), Some((Instant::from_millis(10), ConnId(2))));
        assert_eq!(q.pop(), Some((Instant::from_millis(10), ConnId(9))));
        assert_eq!(q.len(), 1);
        q.rebuild([(Instant::from_millis(5), ConnId(3))].into_iter());
        assert_eq!(q.pop(), Some((Instant::from_millis(5), ConnId(3))));
        assert_eq!(q.pop(), None);
    }
}
