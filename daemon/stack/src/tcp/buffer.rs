//! Byte buffers of a connection.
//!
//! [`SendBuffer`]: bytes the application wrote, from the oldest unacknowledged
//! byte (SND.UNA) onwards; retransmission reads at any offset; ACKs consume
//! from the front. [`RecvBuffer`]: bytes received, in order up to RCV.NXT and
//! readable by the application, plus out-of-order segments held beyond RCV.NXT
//! until the gap fills (RFC 9293 §3.10.7.4 "should" keep them), with the held
//! ranges exposed for SACK blocks (RFC 2018 §4). Both have a fixed capacity;
//! nothing is ever stored beyond it.
//!
//! Both grow on demand (an idle connection holds no buffer memory) and are
//! copied slice-wise, never byte by byte. [`SendBuffer`] is a ring whose
//! free space can be filled in place. [`RecvBuffer`]'s readable part is a
//! queue of [`Bytes`]: in-order payload of a frame the link handed over as
//! [`Bytes`] is queued as a slice of it (no copy: the TUN read's buffer goes
//! to the reader as it is), smaller or borrowed payload is copied into an
//! owned tail; its out-of-order area is a byte deque.
//!
//! [`RecvBuffer`] invariants:
//! - `chunks` then `tail` are the in-order data (`readable` bytes); `ooo`
//!   exists exactly while a range is held; its `bytes` are the out-of-order
//!   area, where index `k` holds stream offset `rcv_nxt + k`. Bytes of the
//!   area not covered by a held range are filler.
//! - `held` maps the absolute stream start of each held range to its end; the
//!   ranges are disjoint, never touch each other, and all start after
//!   `rcv_nxt` (a range reaching `rcv_nxt` is made readable at once); there
//!   are at most [`MAX_HELD_RANGES`] of them.
//! - `ooo.bytes.len() == end of the last held range - rcv_nxt`.
//! - `readable` plus the held extent never exceeds the capacity at the time
//!   the bytes were written, or the room the connection advertised if that
//!   was larger (window scaling rounds a window up by less than one scale
//!   unit, RFC 7323 §2.4; see [`RecvBuffer::write_within`]).

use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;

/// Copies `data` into `deque[at..at + data.len()]`, which must exist.
fn copy_into(deque: &mut VecDeque<u8>, at: usize, data: &[u8]) {
    let (front, back) = deque.as_mut_slices();
    if at < front.len() {
        let in_front = data.len().min(front.len() - at);
        front[at..at + in_front].copy_from_slice(&data[..in_front]);
        let rest = &data[in_front..];
        back[..rest.len()].copy_from_slice(rest);
    } else {
        let at = at - front.len();
        back[at..at + data.len()].copy_from_slice(data);
    }
}

/// Copies as much of `data` as fits into `a` then `b`; returns the count
/// (a [`SendBuffer::fill`] writer for bytes at hand).
pub fn copy_to_two(data: &[u8], a: &mut [u8], b: &mut [u8]) -> usize {
    let n = data.len().min(a.len() + b.len());
    let (x, y) = data[..n].split_at(a.len().min(n));
    a[..x.len()].copy_from_slice(x);
    b[..y.len()].copy_from_slice(y);
    n
}

/// Outgoing bytes, indexed by offset from SND.UNA.
///
/// A ring over `storage`, which grows on demand (doubling, as a
/// `VecDeque` would) up to what the capacity needs and is never read
/// uninitialized: its free part can be handed out as up to two slices and
/// filled in place ([`SendBuffer::fill`]), e.g. by a `readv(2)` straight
/// from where the application's bytes are, instead of through a copy.
#[derive(Debug)]
pub struct SendBuffer {
    storage: Box<[u8]>,
    /// Index in `storage` of the front byte (SND.UNA).
    head: usize,
    len: usize,
    capacity: usize,
}

impl SendBuffer {
    pub fn new(capacity: usize) -> Self {
        SendBuffer {
            storage: Box::default(),
            head: 0,
            len: 0,
            capacity,
        }
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Changes the capacity; never drops stored bytes (a smaller capacity
    /// takes effect as they are acknowledged).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }
    /// Bytes stored (unacknowledged plus unsent).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Free space.
    pub fn free(&self) -> usize {
        self.capacity().saturating_sub(self.len())
    }
    /// Appends as much of `data` as fits; returns the count.
    pub fn push(&mut self, data: &[u8]) -> usize {
        self.fill(data.len(), |a, b| copy_to_two(data, a, b))
    }
    /// Appends up to `max` bytes (as many as fit) written in place by
    /// `write`, which gets the free space as two slices (in order; the
    /// second may be empty) and returns how many bytes it wrote at their
    /// front; returns that count (0 without calling `write` when full).
    pub fn fill(&mut self, max: usize, write: impl FnOnce(&mut [u8], &mut [u8]) -> usize) -> usize {
        let want = max.min(self.free());
        if want == 0 {
            return 0;
        }
        self.reserve(want);
        let room = self.storage.len();
        let tail = (self.head + self.len) % room;
        let (wrapped, rest) = self.storage.split_at_mut(tail);
        let first = want.min(rest.len());
        let written = write(&mut rest[..first], &mut wrapped[..want - first]).min(want);
        self.len += written;
        written
    }
    /// Makes room in `storage` for `more` bytes after the stored ones.
    fn reserve(&mut self, more: usize) {
        let room = self.storage.len();
        if room - self.len >= more {
            return;
        }
        let mut grown = vec![0u8; (self.len + more).max(room * 2)].into_boxed_slice();
        let (a, b) = self.slices();
        grown[..a.len()].copy_from_slice(a);
        grown[a.len()..self.len].copy_from_slice(b);
        self.storage = grown;
        self.head = 0;
    }
    /// The stored bytes, in order, as two slices.
    fn slices(&self) -> (&[u8], &[u8]) {
        let room = self.storage.len();
        if self.head + self.len <= room {
            (&self.storage[self.head..self.head + self.len], &[])
        } else {
            (
                &self.storage[self.head..],
                &self.storage[..self.head + self.len - room],
            )
        }
    }
    /// Copies up to `out.len()` bytes starting `offset` bytes after the
    /// front into `out`; returns the count (0 past the end).
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len.saturating_sub(offset));
        if n == 0 {
            return 0;
        }
        let (a, b) = self.slices();
        if offset < a.len() {
            let in_a = n.min(a.len() - offset);
            out[..in_a].copy_from_slice(&a[offset..offset + in_a]);
            out[in_a..n].copy_from_slice(&b[..n - in_a]);
        } else {
            let at = offset - a.len();
            out[..n].copy_from_slice(&b[at..at + n]);
        }
        n
    }
    /// Up to `len` stored bytes starting `offset` bytes after the front,
    /// in place, as two slices in order (the second may be empty; both are
    /// empty past the end): what [`SendBuffer::read_at`] would copy.
    pub fn slices_at(&self, offset: usize, len: usize) -> [&[u8]; 2] {
        let n = len.min(self.len.saturating_sub(offset));
        let (a, b) = self.slices();
        if offset < a.len() {
            let in_a = n.min(a.len() - offset);
            [&a[offset..offset + in_a], &b[..n - in_a]]
        } else {
            let at = offset - a.len();
            [&b[at..at + n], &[]]
        }
    }
    /// Drops `n` bytes from the front (they were acknowledged); `n` beyond
    /// the stored length empties the buffer.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.storage.len()
        };
    }
}

/// Out-of-order ranges held at once, at most. A flood of tiny segments
/// scattered over the window could otherwise make the range map as large as
/// the window; Linux bounds the same thing through per-segment memory
/// accounting. Segments that would open a range beyond this are not stored
/// (they are retransmitted later, RFC 9293 §3.10.7.4 only says "should").
pub const MAX_HELD_RANGES: usize = 1024;

/// One out-of-order range: its end (absolute stream offset) and when it last changed.
#[derive(Clone, Copy, Debug)]
struct Held {
    end: u64,
    changed: u64,
}

/// In-order payload of at least this many bytes, handed over as a shared
/// [`Bytes`] slice ([`RecvBuffer::write_shared`]), is queued as that slice;
/// shorter payload is copied into the owned tail (a queue of tiny slices
/// would cost an entry per segment and keep their frames alive for little).
pub const SHARE_MIN: usize = 4096;

/// Incoming bytes: an in-order readable part and out-of-order ranges beyond it.
#[derive(Debug)]
pub struct RecvBuffer {
    /// The readable bytes, oldest first: shared slices of received frames
    /// and copied runs frozen out of `tail` (see the module invariants).
    chunks: VecDeque<Bytes>,
    /// Readable bytes after `chunks`, copied in.
    tail: BytesMut,
    /// How many bytes `chunks` and `tail` hold together.
    readable: usize,
    capacity: usize,
    /// Absolute stream offset of RCV.NXT (bytes ever made readable).
    rcv_nxt: u64,
    /// Out-of-order data, only while some is held (boxed: rare, and every
    /// connection would carry its room).
    ooo: Option<Box<OutOfOrder>>,
}

/// The out-of-order area of a [`RecvBuffer`] and its held ranges.
#[derive(Debug, Default)]
struct OutOfOrder {
    /// Index `k` holds stream offset `rcv_nxt + k`.
    bytes: VecDeque<u8>,
    /// Held ranges by absolute start (never empty while this exists).
    held: BTreeMap<u64, Held>,
    /// Bumped on every write that touches a held range, to order them by recency.
    clock: u64,
}

/// Payload to store: borrowed (copied in) or a shared slice of its frame.
enum Payload<'a> {
    Copied(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Copied(data) => data,
            Payload::Shared(data) => data,
        }
    }
}

impl RecvBuffer {
    pub fn new(capacity: usize) -> Self {
        RecvBuffer {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            readable: 0,
            capacity,
            rcv_nxt: 0,
            ooo: None,
        }
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Changes the capacity; never drops stored bytes.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }
    /// Bytes readable in order.
    pub fn readable(&self) -> usize {
        self.readable
    }
    /// Bytes stored: the readable ones and the out-of-order area up to the
    /// end of the last held range (holes included), for memory accounting.
    /// Shared slices count as their payload: the link hands over only
    /// frames that are mostly payload (see [`RecvBuffer::write_shared`]).
    pub fn held_len(&self) -> usize {
        self.readable + self.ooo.as_ref().map_or(0, |ooo| ooo.bytes.len())
    }
    /// Space beyond the readable bytes: the basis of the receive window.
    pub fn window(&self) -> usize {
        self.capacity().saturating_sub(self.readable())
    }
    /// Stores `data` that starts `offset` bytes past the end of the readable
    /// part (offset 0 = RCV.NXT). Bytes beyond the capacity are cut off;
    /// overlaps with held data are fine. Returns how many bytes became
    /// readable in order (how far RCV.NXT advances).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        self.write_within(offset, data, 0)
    }
    /// As [`RecvBuffer::write_at`], but storing up to `advertised` bytes past
    /// RCV.NXT even where that exceeds the free capacity: the window the
    /// connection advertised, which scaling may have rounded up beyond the
    /// free space (RFC 7323 §2.4). Data the peer was allowed to send is kept,
    /// as Linux keeps it, instead of being dropped in-window.
    pub fn write_within(&mut self, offset: usize, data: &[u8], advertised: usize) -> usize {
        self.store(offset, Payload::Copied(data), advertised)
    }
    /// As [`RecvBuffer::write_within`] for payload that is a slice of a
    /// received frame: in-order payload of at least [`SHARE_MIN`] bytes
    /// arriving with nothing held out of order is queued as the slice, not
    /// copied, and keeps the frame's allocation alive until it is read.
    /// The window counts payload bytes, so a caller hands over only frames
    /// that are mostly payload (Linux charges an skb's truesize; here the
    /// link makes frames whose allocation is at most twice their payload).
    pub fn write_shared(&mut self, offset: usize, data: Bytes, advertised: usize) -> usize {
        self.store(offset, Payload::Shared(data), advertised)
    }
    fn store(&mut self, offset: usize, data: Payload<'_>, advertised: usize) -> usize {
        let window = self.window().max(advertised);
        if offset >= window {
            return 0;
        }
        let len = data.as_slice().len().min(window - offset);
        if len == 0 {
            return 0;
        }
        let mut start = self.rcv_nxt + offset as u64;
        let mut end = start + len as u64;
        if offset == 0 && self.ooo.is_none() {
            // In order with nothing held (the out-of-order area is empty):
            // straight into the readable part.
            self.append_readable(data, len);
            self.readable += len;
            self.rcv_nxt = end;
            return len;
        }
        if offset > 0
            && let Some(ooo) = &self.ooo
            && ooo.held.len() >= MAX_HELD_RANGES
            && !ooo.joins_held(start, end)
        {
            return 0;
        }
        let data = &data.as_slice()[..len];
        let ooo = self.ooo.get_or_insert_with(Box::default);

        // Overwrite what already exists of the target area, append the rest
        // (after filler up to `offset` if the write lands past the current end).
        if ooo.bytes.len() < offset {
            ooo.bytes.resize(offset, 0);
        }
        let overlapping = (ooo.bytes.len() - offset).min(data.len());
        copy_into(&mut ooo.bytes, offset, &data[..overlapping]);
        ooo.bytes.extend(&data[overlapping..]);

        // Merge with every held range it overlaps or touches.
        if let Some((&prev_start, prev)) = ooo.held.range(..=start).next_back()
            && prev.end >= start
        {
            start = prev_start;
            end = end.max(prev.end);
            ooo.held.remove(&prev_start);
        }
        while let Some((&next_start, next)) = ooo.held.range(start..=end).next() {
            end = end.max(next.end);
            ooo.held.remove(&next_start);
        }

        if start == self.rcv_nxt {
            // The gap at RCV.NXT is filled: everything up to `end` is in
            // order and moves from the out-of-order area to the readable part.
            let advanced = usize::try_from(end - self.rcv_nxt)
                .expect("an advance is bounded by the capacity, a usize");
            let (front, back) = ooo.bytes.as_slices();
            let in_front = advanced.min(front.len());
            self.tail.extend_from_slice(&front[..in_front]);
            self.tail.extend_from_slice(&back[..advanced - in_front]);
            ooo.bytes.drain(..advanced);
            if ooo.held.is_empty() {
                // Nothing is held any more (so the area is empty too).
                self.ooo = None;
            }
            self.readable += advanced;
            self.rcv_nxt = end;
            advanced
        } else {
            ooo.clock += 1;
            let changed = ooo.clock;
            ooo.held.insert(start, Held { end, changed });
            0
        }
    }
    /// Appends the first `len` bytes of in-order `data` to the readable part.
    fn append_readable(&mut self, data: Payload<'_>, len: usize) {
        match data {
            Payload::Shared(mut data) if len >= SHARE_MIN => {
                data.truncate(len);
                if !self.tail.is_empty() {
                    self.chunks.push_back(self.tail.split().freeze());
                }
                self.chunks.push_back(data);
            }
            data => self.tail.extend_from_slice(&data.as_slice()[..len]),
        }
    }
    /// The readable bytes as slices, in order.
    fn readable_slices(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
    }
    /// Moves up to `out.len()` readable bytes into `out`.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = self.peek(out);
        self.skip(n)
    }
    /// Moves up to `max` readable bytes out as slices, without copying
    /// shared ones (copied runs are split off the tail, not copied again);
    /// returns how many bytes were appended to `out`.
    pub fn read_bytes(&mut self, max: usize, out: &mut Vec<Bytes>) -> usize {
        let mut n = 0;
        while n < max {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            if chunk.len() <= max - n {
                n += chunk.len();
                out.extend(self.chunks.pop_front());
            } else {
                out.push(chunk.split_to(max - n));
                n = max;
            }
        }
        if n < max && !self.tail.is_empty() {
            let take = self.tail.len().min(max - n);
            out.push(self.tail.split_to(take).freeze());
            n += take;
            if self.tail.is_empty() {
                self.tail = BytesMut::new();
            }
        }
        self.readable -= n;
        n
    }
    /// The first readable bytes, up to `max`, as slices in order: as many
    /// as `out` holds, written to its front. Returns (slices written,
    /// bytes they hold). Nothing is consumed ([`RecvBuffer::skip`] does
    /// that): a caller hands the slices to a vectored write (`writev(2)`)
    /// and skips what it took — the only copy of the bytes is the write's.
    pub fn readable_io_slices<'a>(&'a self, max: usize, out: &mut [IoSlice<'a>]) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        for slice in self.readable_slices() {
            if count == out.len() || bytes == max {
                break;
            }
            if slice.is_empty() {
                continue;
            }
            let take = slice.len().min(max - bytes);
            out[count] = IoSlice::new(&slice[..take]);
            count += 1;
            bytes += take;
        }
        (count, bytes)
    }
    /// Copies up to `out.len()` readable bytes without consuming them (MSG_PEEK).
    pub fn peek(&self, out: &mut [u8]) -> usize {
        self.peek_at(0, out)
    }
    /// As [`RecvBuffer::peek`], from `offset` bytes into the readable part.
    pub fn peek_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.readable.saturating_sub(offset));
        let (mut skip, mut copied) = (offset, 0);
        for slice in self.readable_slices() {
            if copied == n {
                break;
            }
            if skip >= slice.len() {
                skip -= slice.len();
                continue;
            }
            let take = (slice.len() - skip).min(n - copied);
            out[copied..copied + take].copy_from_slice(&slice[skip..skip + take]);
            copied += take;
            skip = 0;
        }
        copied
    }
    /// Drops up to `n` readable bytes unread; returns how many.
    pub fn skip(&mut self, n: usize) -> usize {
        let n = n.min(self.readable);
        let mut left = n;
        while left > 0 {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            if chunk.len() <= left {
                left -= chunk.len();
                self.chunks.pop_front();
            } else {
                chunk.advance(left);
                left = 0;
            }
        }
        if left > 0 {
            self.tail.advance(left);
        }
        if self.tail.is_empty() && self.chunks.is_empty() {
            // Nothing readable: the tail's allocation goes too (an idle
            // connection holds no buffer memory).
            self.tail = BytesMut::new();
        }
        self.readable -= n;
        n
    }
    /// Out-of-order ranges held, as (start, end) offsets from RCV.NXT, the
    /// most recently changed first (RFC 2018 §4 reports it first).
    pub fn held_ranges(&self) -> Vec<(usize, usize)> {
        let Some(ooo) = &self.ooo else {
            return Vec::new();
        };
        let mut ranges: Vec<(u64, u64, u64)> = ooo
            .held
            .iter()
            .map(|(&start, held)| (held.changed, start, held.end))
            .collect();
        ranges.sort_unstable_by_key(|&(changed, _, _)| core::cmp::Reverse(changed));
        ranges
            .into_iter()
            .map(|(_, start, end)| (self.relative(start), self.relative(end)))
            .collect()
    }
    /// Offset of an absolute stream position from RCV.NXT.
    fn relative(&self, absolute: u64) -> usize {
        usize::try_from(absolute - self.rcv_nxt)
            .expect("held ranges lie within the capacity, a usize")
    }
    /// Whether any out-of-order data is held.
    pub fn has_holes(&self) -> bool {
        self.ooo.is_some()
    }
}

impl OutOfOrder {
    /// Whether `[start, end)` overlaps or touches a held range (so storing it
    /// does not add a range).
    fn joins_held(&self, start: u64, end: u64) -> bool {
        let touches_prev = self
            .held
            .range(..=start)
            .next_back()
            .is_some_and(|(_, prev)| prev.end >= start);
        touches_prev || self.held.range(start..=end).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(buf: &mut RecvBuffer) -> Vec<u8> {
        let mut out = vec![0; buf.readable()];
        let n = buf.read(&mut out);
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn send_buffer_push_read_consume() {
        let mut buf = SendBuffer::new(10);
        assert!(buf.is_empty());
        assert_eq!(buf.push(b"hello"), 5);
        assert_eq!(buf.push(b"world!!"), 5);
        assert_eq!(buf.len(), 10);
        assert_eq!(buf.free(), 0);
        assert_eq!(buf.push(b"x"), 0);
        let mut out = [0u8; 4];
        assert_eq!(buf.read_at(3, &mut out), 4);
        assert_eq!(&out, b"lowo");
        assert_eq!(buf.read_at(8, &mut out), 2);
        assert_eq!(&out[..2], b"ld");
        assert_eq!(buf.read_at(10, &mut out), 0);
        assert_eq!(buf.read_at(1000, &mut out), 0);
        buf.consume(6);
        assert_eq!(buf.len(), 4);
        assert_eq!(buf.push(b"abcdefgh"), 6);
        let mut all = [0u8; 16];
        assert_eq!(buf.read_at(0, &mut all), 10);
        assert_eq!(&all[..10], b"orldabcdef");
        buf.consume(100);
        assert!(buf.is_empty());
    }

    #[test]
    fn send_buffer_shrinking_capacity_keeps_bytes() {
        let mut buf = SendBuffer::new(8);
        buf.push(b"12345678");
        buf.set_capacity(4);
        assert_eq!(buf.len(), 8);
        assert_eq!(buf.free(), 0);
        buf.consume(6);
        assert_eq!(buf.free(), 2);
    }

    #[test]
    fn send_buffer_reads_across_the_ring_wrap() {
        let mut buf = SendBuffer::new(16);
        // Fill, consume most and refill so the deque wraps around.
        for round in 0..20u8 {
            let chunk = [round; 7];
            assert_eq!(buf.push(&chunk), 7);
            let mut out = [0u8; 7];
            assert_eq!(buf.read_at(buf.len() - 7, &mut out), 7);
            assert_eq!(out, chunk);
            buf.consume(7);
        }
    }

    /// `fill` hands out the free space in order (two slices across the
    /// wrap), keeps only what the writer says it wrote, and never more
    /// than the capacity allows.
    #[test]
    fn send_buffer_fill_writes_in_place_across_the_wrap() {
        let mut buf = SendBuffer::new(10);
        assert_eq!(buf.push(b"0123456"), 7);
        buf.consume(5);
        // 2 stored; up to 8 free, crossing the end of the storage.
        let n = buf.fill(100, |a, b| {
            assert_eq!(a.len() + b.len(), 8);
            let src = b"abcdefgh";
            a.copy_from_slice(&src[..a.len()]);
            let k = 3.min(b.len());
            b[..k].copy_from_slice(&src[a.len()..a.len() + k]);
            a.len() + k
        });
        let mut out = [0u8; 10];
        let got = buf.read_at(0, &mut out);
        assert_eq!(got, 2 + n);
        assert_eq!(&out[..got], &b"56abcdefgh"[..got]);
        assert_eq!(buf.fill(0, |_, _| unreachable!()), 0);
        // A writer claiming more than it was given is held to the room.
        let free = buf.free();
        assert_eq!(buf.fill(100, |_, _| usize::MAX), free);
        assert_eq!(buf.len(), 10);
        assert_eq!(buf.fill(1, |_, _| unreachable!("full")), 0);
    }

    #[test]
    fn readable_io_slices_offer_the_queue_in_order_without_consuming() {
        let mut buf = RecvBuffer::new(1 << 20);
        let frames: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; SHARE_MIN])).collect();
        for frame in &frames {
            buf.write_shared(0, frame.clone(), 0);
        }
        buf.write_at(0, b"tail");
        let total = 5 * SHARE_MIN + 4;
        let mut out = [IoSlice::new(&[]); 8];
        assert_eq!(buf.readable_io_slices(usize::MAX, &mut out), (6, total));
        assert_eq!(&*out[5], b"tail");
        assert_eq!(out[2].as_ptr(), frames[2].as_ptr(), "the frame itself");
        // Cut by `max` inside a slice, and by the room in `out`.
        assert_eq!(
            buf.readable_io_slices(SHARE_MIN + 10, &mut out),
            (2, SHARE_MIN + 10)
        );
        assert_eq!(out[1].len(), 10);
        assert_eq!(
            buf.readable_io_slices(usize::MAX, &mut out[..3]),
            (3, 3 * SHARE_MIN)
        );
        assert_eq!(buf.readable(), total, "nothing consumed");
        buf.skip(SHARE_MIN + 10);
        let mut out = [IoSlice::new(&[]); 8];
        assert_eq!(
            buf.readable_io_slices(usize::MAX, &mut out),
            (5, total - SHARE_MIN - 10)
        );
        assert_eq!(out[0][0], 1);
        assert_eq!(out[0].len(), SHARE_MIN - 10);
    }

    proptest! {
        /// Pushes, partial fills, acknowledgements and capacity changes
        /// against a plain deque: same bytes at every offset.
        #[test]
        fn send_buffer_matches_a_deque(ops in proptest::collection::vec(
            (0u8..4, 0usize..700, any::<u8>()), 1..200)
        ) {
            let mut buf = SendBuffer::new(512);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut capacity: usize = 512;
            for (op, n, byte) in ops {
                match op {
                    0 => {
                        let data = vec![byte; n];
                        let took = buf.push(&data);
                        prop_assert_eq!(took, n.min(capacity.saturating_sub(model.len())));
                        model.extend(&data[..took]);
                    }
                    1 => {
                        // The writer fills only part of what it is offered.
                        let took = buf.fill(n, |a, b| {
                            let k = (a.len() + b.len()) / 2;
                            for (i, x) in a.iter_mut().chain(b.iter_mut()).take(k).enumerate() {
                                *x = byte.wrapping_add(i as u8);
                            }
                            k
                        });
                        model.extend((0..took).map(|i| byte.wrapping_add(i as u8)));
                    }
                    2 => {
                        buf.consume(n);
                        model.drain(..n.min(model.len()));
                    }
                    _ => {
                        capacity = 64 + n;
                        buf.set_capacity(capacity);
                    }
                }
                prop_assert_eq!(buf.len(), model.len());
                let mut out = vec![0u8; model.len() + 3];
                let at = n.min(model.len());
                let got = buf.read_at(at, &mut out);
                prop_assert_eq!(got, model.len() - at);
                prop_assert!(out[..got].iter().eq(model.range(at..)));
                // The same bytes in place, up to a length cut inside them.
                let len = byte as usize % (got + 2);
                let [a, b] = buf.slices_at(at, len);
                prop_assert_eq!(a.len() + b.len(), len.min(got));
                prop_assert!(a.iter().chain(b).eq(model.range(at..).take(len)));
            }
        }
    }

    #[test]
    fn in_order_writes_are_readable() {
        let mut buf = RecvBuffer::new(16);
        assert_eq!(buf.write_at(0, b"abc"), 3);
        assert_eq!(buf.write_at(0, b"def"), 3);
        assert_eq!(buf.readable(), 6);
        assert_eq!(buf.window(), 10);
        let mut peeked = [0u8; 4];
        assert_eq!(buf.peek(&mut peeked), 4);
        assert_eq!(&peeked, b"abcd");
        assert_eq!(read_all(&mut buf), b"abcdef");
        assert_eq!(buf.window(), 16);
    }

    #[test]
    fn out_of_order_fills_and_advances() {
        let mut buf = RecvBuffer::new(100);
        assert_eq!(buf.write_at(10, b"KLMNO"), 0);
        assert_eq!(buf.write_at(3, b"DEF"), 0);
        assert!(buf.has_holes());
        // Most recently changed first.
        assert_eq!(buf.held_ranges(), vec![(3, 6), (10, 15)]);
        assert_eq!(buf.write_at(12, b"MNOPQ"), 0);
        assert_eq!(buf.held_ranges(), vec![(10, 17), (3, 6)]);
        assert_eq!(buf.readable(), 0);
        // Filling [0, 3) releases [0, 6).
        assert_eq!(buf.write_at(0, b"ABC"), 6);
        assert_eq!(buf.held_ranges(), vec![(4, 11)]);
        // Filling [0, 4) of the new RCV.NXT bridges to the held range.
        assert_eq!(buf.write_at(0, b"GHIJ"), 11);
        assert!(!buf.has_holes());
        assert_eq!(read_all(&mut buf), b"ABCDEFGHIJKLMNOPQ");
    }

    #[test]
    fn duplicate_segment_becomes_first_sack_block() {
        let mut buf = RecvBuffer::new(100);
        buf.write_at(10, b"aa");
        buf.write_at(20, b"bb");
        assert_eq!(buf.held_ranges(), vec![(20, 22), (10, 12)]);
        // RFC 2018 §4: the block holding the segment that triggered the ACK comes first.
        buf.write_at(10, b"aa");
        assert_eq!(buf.held_ranges(), vec![(10, 12), (20, 22)]);
    }

    #[test]
    fn a_write_covering_several_ranges_merges_them() {
        let mut buf = RecvBuffer::new(100);
        buf.write_at(5, b"x");
        buf.write_at(8, b"y");
        buf.write_at(11, b"z");
        buf.write_at(4, b"1234567890");
        assert_eq!(buf.held_ranges(), vec![(4, 14)]);
        // Touching (not overlapping) ranges merge too.
        buf.write_at(14, b"ab");
        assert_eq!(buf.held_ranges(), vec![(4, 16)]);
        buf.write_at(1, b"abc");
        assert_eq!(buf.held_ranges(), vec![(1, 16)]);
    }

    #[test]
    fn nothing_is_stored_beyond_capacity() {
        let mut buf = RecvBuffer::new(8);
        assert_eq!(buf.write_at(6, b"ghij"), 0);
        assert_eq!(buf.held_ranges(), vec![(6, 8)]);
        assert_eq!(buf.write_at(8, b"!!"), 0);
        assert_eq!(buf.write_at(100, b"!!"), 0);
        assert_eq!(buf.held_ranges(), vec![(6, 8)]);
        assert_eq!(buf.write_at(0, b"abcdefghijkl"), 8);
        assert_eq!(read_all(&mut buf), b"abcdefgh");
        // With 5 unread bytes, only 3 more fit.
        assert_eq!(buf.write_at(0, b"12345"), 5);
        assert_eq!(buf.write_at(0, b"6789"), 3);
        assert_eq!(buf.window(), 0);
        assert_eq!(buf.write_at(0, b"x"), 0);
        assert_eq!(read_all(&mut buf), b"12345678");
    }

    #[test]
    fn shrinking_capacity_keeps_held_bytes() {
        let mut buf = RecvBuffer::new(20);
        buf.write_at(0, b"0123456789");
        buf.write_at(5, b"ab");
        buf.set_capacity(4);
        assert_eq!(buf.window(), 0);
        assert_eq!(buf.write_at(0, b"zz"), 0);
        assert_eq!(read_all(&mut buf), b"0123456789");
        assert_eq!(buf.held_ranges(), vec![(5, 7)]);
        assert_eq!(buf.write_at(0, b"ABCDE"), 4);
        // The gap [4, 5) stays: capacity 4 leaves no room for it.
        assert_eq!(buf.held_ranges(), vec![(1, 3)]);
    }

    #[test]
    fn range_count_is_bounded() {
        let mut buf = RecvBuffer::new(1 << 20);
        for i in 0..MAX_HELD_RANGES + 10 {
            buf.write_at(2 * i + 1, b"x");
        }
        assert_eq!(buf.held_ranges().len(), MAX_HELD_RANGES);
        // Growing an existing range is still accepted...
        buf.write_at(2, b"y");
        assert_eq!(buf.held_ranges().len(), MAX_HELD_RANGES - 1);
        // ...and so is in-order data.
        assert_eq!(buf.write_at(0, b"z"), 4);
    }

    #[test]
    fn shared_payload_is_queued_as_is_and_short_payload_copied() {
        let mut buf = RecvBuffer::new(1 << 20);
        let big = Bytes::from(vec![1u8; SHARE_MIN]);
        let small = Bytes::from(vec![2u8; SHARE_MIN - 1]);
        assert_eq!(buf.write_at(0, b"ab"), 2);
        assert_eq!(buf.write_shared(0, big.clone(), 0), SHARE_MIN);
        assert_eq!(buf.write_shared(0, small.clone(), 0), SHARE_MIN - 1);
        assert_eq!(buf.write_at(0, b"cd"), 2);
        assert_eq!(buf.held_len(), 2 * SHARE_MIN + 3);
        let mut peeked = vec![0; 4];
        assert_eq!(buf.peek_at(1, &mut peeked), 4);
        assert_eq!(peeked, [b'b', 1, 1, 1]);
        let mut out = Vec::new();
        assert_eq!(buf.read_bytes(1, &mut out), 1);
        assert_eq!(buf.read_bytes(usize::MAX, &mut out), 2 * SHARE_MIN + 2);
        assert_eq!(out.len(), 4, "a, b, the shared chunk, the tail");
        assert_eq!(out[2].as_ptr(), big.as_ptr(), "the shared bytes themselves");
        assert_ne!(out[3].as_ptr(), small.as_ptr(), "short payload was copied");
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&small);
        expected.extend_from_slice(b"cd");
        assert_eq!(out.concat(), expected);
        assert_eq!(buf.readable(), 0);
        assert_eq!(buf.held_len(), 0);
    }

    #[test]
    fn shared_payload_out_of_order_is_copied_into_place() {
        let mut buf = RecvBuffer::new(1 << 20);
        let later = Bytes::from(vec![3u8; 2 * SHARE_MIN]);
        assert_eq!(buf.write_shared(SHARE_MIN, later.clone(), 0), 0);
        assert_eq!(buf.held_ranges(), vec![(SHARE_MIN, 3 * SHARE_MIN)]);
        let first = Bytes::from(vec![4u8; SHARE_MIN]);
        assert_eq!(buf.write_shared(0, first, 0), 3 * SHARE_MIN);
        assert!(!buf.has_holes());
        let mut out = Vec::new();
        buf.read_bytes(usize::MAX, &mut out);
        let all = out.concat();
        assert_eq!(&all[..SHARE_MIN], &[4u8; SHARE_MIN][..]);
        assert_eq!(&all[SHARE_MIN..], &later[..]);
    }

    #[test]
    fn empty_writes_change_nothing() {
        let mut buf = RecvBuffer::new(8);
        assert_eq!(buf.write_at(0, b""), 0);
        assert_eq!(buf.write_at(3, b""), 0);
        assert!(!buf.has_holes());
        assert_eq!(buf.readable(), 0);
    }

    /// A segment of the test stream: where it starts and how long it is.
    fn arb_segments(len: usize) -> impl Strategy<Value = Vec<(usize, usize)>> {
        proptest::collection::vec((0..len, 1usize..300), 1..60)
    }

    proptest! {
        #[test]
        fn reassembles_any_delivery_order(
            stream in proptest::collection::vec(any::<u8>(), 1..3000),
            capacity in 1usize..4000,
            extra in arb_segments(3000),
            seed: u64,
        ) {
            // Cover the stream with consecutive segments, add random
            // overlapping ones, and deliver them round after round in a
            // shuffled order with reads in between, as a retransmitting
            // sender would, until the whole stream is through.
            let mut segments: Vec<(usize, usize)> = (0..stream.len())
                .step_by(97)
                .map(|s| (s, 97.min(stream.len() - s)))
                .collect();
            segments.extend(extra.into_iter().filter(|&(s, _)| s < stream.len())
                .map(|(s, l)| (s, l.min(stream.len() - s))));
            let mut rng = seed;
            let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (rng >> 33) as usize };
            let mut buf = RecvBuffer::new(capacity);
            let mut received = Vec::new();
            let mut rcv_nxt = 0usize;
            for _round in 0..(stream.len() / capacity.min(stream.len()) + 2) * 4 {
                for i in (1..segments.len()).rev() {
                    let j = next() % (i + 1);
                    segments.swap(i, j);
                }
                for &(start, len) in &segments {
                    let end = start + len;
                    if end <= rcv_nxt {
                        continue;
                    }
                    // The receiver trims what it already has (RFC 9293 §3.10.7.4).
                    let from = start.max(rcv_nxt);
                    rcv_nxt += buf.write_at(from - rcv_nxt, &stream[from..end]);
                    let held = buf.held_ranges();
                    for &(s, e) in &held {
                        prop_assert!(s > 0 && s < e);
                        prop_assert!(buf.readable() + e <= capacity);
                        prop_assert_eq!(&buf.ooo.as_ref().expect("held").bytes.range(s..e)
                            .copied().collect::<Vec<_>>()[..], &stream[rcv_nxt + s..rcv_nxt + e]);
                    }
                    let mut sorted = held.clone();
                    sorted.sort_unstable();
                    for w in sorted.windows(2) {
                        prop_assert!(w[0].1 < w[1].0, "ranges must be disjoint and not touch");
                    }
                    if next() % 3 == 0 {
                        let mut out = vec![0; next() % 500];
                        let n = buf.read(&mut out);
                        received.extend_from_slice(&out[..n]);
                    }
                }
                received.extend(read_all(&mut buf));
                if rcv_nxt == stream.len() {
                    break;
                }
            }
            prop_assert_eq!(rcv_nxt, stream.len());
            prop_assert!(!buf.has_holes());
            prop_assert_eq!(received, stream);
        }

        #[test]
        fn held_ranges_match_a_byte_model(
            writes in proptest::collection::vec((0usize..200, 0usize..40), 0..40),
            capacity in 1usize..250,
        ) {
            // Model: which offsets past the original RCV.NXT are present.
            let mut have = vec![false; 1000];
            let mut buf = RecvBuffer::new(capacity);
            let mut rcv_nxt = 0;
            for (offset, len) in writes {
                let data = vec![7u8; len];
                let start = rcv_nxt + offset;
                let stored = len.min(capacity.saturating_sub(buf.readable() + offset));
                for present in &mut have[start..start + stored] {
                    *present = true;
                }
                let advanced = buf.write_at(offset, &data);
                let mut expected_nxt = rcv_nxt;
                while have[expected_nxt] {
                    expected_nxt += 1;
                }
                prop_assert_eq!(advanced, expected_nxt - rcv_nxt);
                rcv_nxt = expected_nxt;
                let mut expected = Vec::new();
                let mut i = rcv_nxt;
                while i < have.len() {
                    if have[i] {
                        let s = i;
                        while have[i] { i += 1; }
                        expected.push((s - rcv_nxt, i - rcv_nxt));
                    } else {
                        i += 1;
                    }
                }
                let mut actual = buf.held_ranges();
                actual.sort_unstable();
                prop_assert_eq!(actual, expected);
            }
        }
    }
}
