//! TCP header (RFC 9293 §3.1) and options: MSS (§3.2), window scale and
//! timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018).
//!
//! Invariant: `TcpSegment::new_checked` guarantees the data-offset field is
//! within the buffer, so every accessor is infallible afterwards. Option
//! parsing skips unknown kinds by their length and stops at EOL; a malformed
//! option list makes the segment malformed.

use crate::seq::SeqNum;
use crate::wire::WireError;
use core::net::Ipv4Addr;

/// The fixed TCP header length, without options (RFC 9293 §3.1).
pub const HEADER_LEN: usize = 20;
/// The largest TCP header: data offset is 4 bits of 32-bit words (RFC 9293 §3.1).
pub const MAX_HEADER_LEN: usize = 60;

/// TCP control bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flags.
    pub const fn empty() -> Self {
        TcpFlags(0)
    }
    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, o: TcpFlags) {
        self.0 |= o.0;
    }
}

/// One SACK block: the peer holds `[left, right)` (RFC 2018 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SackBlock {
    pub left: SeqNum,
    pub right: SeqNum,
}

/// The TCP options tcpd understands. Unknown options are skipped on parse and
/// never emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), only meaningful on SYN (RFC 9293 §3.7.1).
    pub mss: Option<u16>,
    /// Window scale shift (kind 3), SYN only (RFC 7323 §2.2). Values above 14
    /// are kept as received; the connection clamps them to 14 (RFC 7323 §2.3).
    pub window_scale: Option<u8>,
    /// SACK-permitted (kind 4), SYN only (RFC 2018 §2).
    pub sack_permitted: bool,
    /// SACK blocks (kind 5), at most 4 (3 when timestamps share the header).
    pub sack_blocks: [Option<SackBlock>; 4],
    /// Timestamps (kind 8): (TSval, TSecr) (RFC 7323 §3).
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOptions {
    /// The SACK blocks present, in order.
    pub fn sacks(&self) -> impl Iterator<Item = SackBlock> + '_ {
        self.sack_blocks.iter().flatten().copied()
    }

    /// Bytes these options take on the wire, padded to a multiple of 4.
    pub fn wire_len(&self) -> usize {
        todo!("wire helper: option length")
    }
}

/// A read-only or writable view of a TCP segment (header + payload).
#[derive(Debug, Clone)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps `buffer` after checking that it holds a whole header whose data
    /// offset is sane (>= 20 and within the buffer).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let _ = &buffer;
        todo!("wire helper")
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A parsed TCP segment. `payload` borrows from the packet it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    /// The acknowledgement number; meaningful only when `flags.ack()`.
    pub ack: SeqNum,
    pub flags: TcpFlags,
    /// The window field as on the wire (unscaled).
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses `segment` sent from `src` to `dst`, verifying the checksum over
    /// the IPv4 pseudo-header (RFC 9293 §3.1).
    pub fn parse(
        segment: &'a [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<TcpRepr<'a>, WireError> {
        let _ = (segment, src, dst);
        todo!("wire helper")
    }

    /// Header length including options (a multiple of 4, at most 60).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.wire_len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence space the segment occupies: payload plus one for SYN and FIN
    /// (RFC 9293 §3.4, SEG.LEN).
    pub fn segment_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags.syn()) + usize::from(self.flags.fin())
    }

    /// Writes header and payload into `buf[..self.buffer_len()]` with the
    /// checksum computed for `src` → `dst`. Returns the bytes written.
    /// Panics only if `buf` is shorter than `buffer_len()` (a caller bug).
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> usize {
        let _ = (buf, src, dst);
        todo!("wire helper")
    }
}
