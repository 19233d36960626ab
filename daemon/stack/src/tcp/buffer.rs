//! Byte buffers of a connection.
//!
//! [`SendBuffer`]: bytes the application wrote, from the oldest unacknowledged
//! byte (SND.UNA) onwards; retransmission reads at any offset; ACKs consume
//! from the front. [`RecvBuffer`]: bytes received, in order up to RCV.NXT and
//! readable by the application, plus out-of-order segments held beyond RCV.NXT
//! until the gap fills (RFC 9293 §3.10.7.4 "should" keep them), with the held
//! ranges exposed for SACK blocks (RFC 2018 §4). Both have a fixed capacity;
//! nothing is ever stored beyond it.

/// Outgoing bytes, indexed by offset from SND.UNA.
#[derive(Debug)]
pub struct SendBuffer {
    _private: (),
}

impl SendBuffer {
    pub fn new(capacity: usize) -> Self {
        let _ = capacity;
        todo!("helper")
    }
    pub fn capacity(&self) -> usize {
        todo!()
    }
    /// Changes the capacity; never drops stored bytes (a smaller capacity
    /// takes effect as they are acknowledged).
    pub fn set_capacity(&mut self, capacity: usize) {
        let _ = capacity;
        todo!()
    }
    /// Bytes stored (unacknowledged plus unsent).
    pub fn len(&self) -> usize {
        todo!()
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
        let _ = data;
        todo!()
    }
    /// Copies up to `out.len()` bytes starting `offset` bytes after the
    /// front into `out`; returns the count (0 past the end).
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let _ = (offset, out);
        todo!()
    }
    /// Drops `n` bytes from the front (they were acknowledged).
    pub fn consume(&mut self, n: usize) {
        let _ = n;
        todo!()
    }
}

/// Incoming bytes: an in-order readable part and out-of-order ranges beyond it.
#[derive(Debug)]
pub struct RecvBuffer {
    _private: (),
}

impl RecvBuffer {
    pub fn new(capacity: usize) -> Self {
        let _ = capacity;
        todo!("helper")
    }
    pub fn capacity(&self) -> usize {
        todo!()
    }
    /// Changes the capacity; never drops stored bytes.
    pub fn set_capacity(&mut self, capacity: usize) {
        let _ = capacity;
        todo!()
    }
    /// Bytes readable in order.
    pub fn readable(&self) -> usize {
        todo!()
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
        let _ = (offset, data);
        todo!()
    }
    /// Moves up to `out.len()` readable bytes into `out`.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let _ = out;
        todo!()
    }
    /// Copies up to `out.len()` readable bytes without consuming them (MSG_PEEK).
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let _ = out;
        todo!()
    }
    /// Out-of-order ranges held, as (start, end) offsets from RCV.NXT, the
    /// most recently changed first (RFC 2018 §4 reports it first).
    pub fn held_ranges(&self) -> Vec<(usize, usize)> {
        todo!()
    }
    /// Whether any out-of-order data is held.
    pub fn has_holes(&self) -> bool {
        todo!()
    }
}
