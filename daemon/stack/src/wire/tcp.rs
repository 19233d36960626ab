//! TCP header (RFC 9293 §3.1) and options: MSS (§3.2), window scale and
//! timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018).
//!
//! Invariant: `TcpSegment::new_checked` guarantees the data-offset field is
//! within the buffer, so every accessor is infallible afterwards. Option
//! parsing skips unknown kinds by their length and stops at EOL; a malformed
//! option list makes the segment malformed.
//!
//! Emission follows Linux's option order and padding so that captures look
//! familiar: MSS, SACK-permitted folded into the timestamp word (or NOP NOP
//! TS), NOP + window scale, then NOP NOP + SACK blocks. [`TcpOptions::wire_len`]
//! and [`TcpRepr::emit`] share one layout computation, so they always agree.

use crate::seq::SeqNum;
use crate::wire::WireError;
use crate::wire::checksum;
use core::net::IpAddr;

/// The fixed TCP header length, without options (RFC 9293 §3.1).
pub const HEADER_LEN: usize = 20;
/// The largest TCP header: data offset is 4 bits of 32-bit words (RFC 9293 §3.1).
pub const MAX_HEADER_LEN: usize = 60;

bitflags::bitflags! {
    /// TCP control bits (RFC 9293 §3.1, RFC 3168 for ECE/CWR).
    ///
    /// Declared in the order traces and captures print them (`SYN,ACK`,
    /// `FIN,ACK`): `iter_names` yields that order, and the names are the
    /// ones the trace renderer writes and parses.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcpFlags: u8 {
        const CWR = 0x80;
        const ECE = 0x40;
        const URG = 0x20;
        const SYN = 0x02;
        const FIN = 0x01;
        const RST = 0x04;
        const PSH = 0x08;
        const ACK = 0x10;
    }
}

impl TcpFlags {
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

/// Option kinds (IANA "TCP Option Kind Numbers"; RFC 9293 §3.2, RFC 7323, RFC 2018).
mod kind {
    pub const END_OF_LIST: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// Option lengths, kind and length bytes included.
mod optlen {
    /// RFC 9293 §3.2.
    pub const MSS: usize = 4;
    /// RFC 7323 §2.2.
    pub const WINDOW_SCALE: usize = 3;
    /// RFC 2018 §2.
    pub const SACK_PERMITTED: usize = 2;
    /// RFC 7323 §3.2.
    pub const TIMESTAMPS: usize = 10;
    /// RFC 2018 §3: kind, length, then 8 bytes per block.
    pub const SACK_BASE: usize = 2;
    pub const SACK_PER_BLOCK: usize = 8;
}

/// Room for options: data offset of 15 words minus the fixed header (RFC 9293 §3.1).
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;
/// At most 4 SACK blocks fit in 40 option bytes (RFC 2018 §3).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Where each option goes when emitted: computed once, used by both
/// [`TcpOptions::wire_len`] and [`TcpOptions::emit`].
#[derive(Clone, Copy, Debug)]
struct OptionLayout {
    /// Option bytes before the SACK blocks (always a multiple of 4).
    fixed_len: usize,
    /// SACK blocks that fit after them.
    sack_blocks: usize,
}

impl OptionLayout {
    fn total_len(&self) -> usize {
        if self.sack_blocks == 0 {
            self.fixed_len
        } else {
            // NOP NOP kind len, then the blocks: a multiple of 4.
            self.fixed_len + 2 + optlen::SACK_BASE + self.sack_blocks * optlen::SACK_PER_BLOCK
        }
    }
}

impl TcpOptions {
    /// The SACK blocks present, in order.
    pub fn sacks(&self) -> impl Iterator<Item = SackBlock> + '_ {
        self.sack_blocks.iter().flatten().copied()
    }

    /// Replaces the SACK blocks with the first four of `blocks` (RFC 2018 §4:
    /// the first block should report the most recently received data).
    pub fn set_sacks(&mut self, blocks: impl IntoIterator<Item = SackBlock>) {
        self.sack_blocks = [None; MAX_SACK_BLOCKS];
        for (slot, block) in self.sack_blocks.iter_mut().zip(blocks) {
            *slot = Some(block);
        }
    }

    fn layout(&self) -> OptionLayout {
        let mut fixed_len = 0;
        if self.mss.is_some() {
            fixed_len += optlen::MSS;
        }
        if self.timestamp.is_some() {
            // SACK-permitted + TS, or NOP NOP + TS: 12 bytes either way.
            fixed_len += 2 + optlen::TIMESTAMPS;
        } else if self.sack_permitted {
            // NOP NOP SACK-permitted.
            fixed_len += 2 + optlen::SACK_PERMITTED;
        }
        if self.window_scale.is_some() {
            // NOP + window scale.
            fixed_len += 1 + optlen::WINDOW_SCALE;
        }
        let room = MAX_OPTIONS_LEN - fixed_len;
        let fit = room.saturating_sub(2 + optlen::SACK_BASE) / optlen::SACK_PER_BLOCK;
        OptionLayout {
            fixed_len,
            sack_blocks: self.sacks().count().min(fit),
        }
    }

    /// Bytes these options take on the wire, padded to a multiple of 4.
    ///
    /// SACK blocks that do not fit in the 40 option bytes are left out
    /// (at most 3 fit beside timestamps, 4 otherwise; RFC 2018 §3).
    pub fn wire_len(&self) -> usize {
        self.layout().total_len()
    }

    /// How many SACK blocks [`TcpOptions::emit`] writes (the first ones).
    pub fn emitted_sack_blocks(&self) -> usize {
        self.layout().sack_blocks
    }

    /// Writes the options into `buf[..self.wire_len()]` in Linux's order and
    /// returns the length. Panics if `buf` is shorter (a caller bug).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let layout = self.layout();
        let out = &mut buf[..layout.total_len()];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let [hi, lo] = mss.to_be_bytes();
            put(&[kind::MSS, optlen::MSS as u8, hi, lo]);
        }
        if let Some((tsval, tsecr)) = self.timestamp {
            if self.sack_permitted {
                put(&[kind::SACK_PERMITTED, optlen::SACK_PERMITTED as u8]);
            } else {
                put(&[kind::NOP, kind::NOP]);
            }
            put(&[kind::TIMESTAMPS, optlen::TIMESTAMPS as u8]);
            put(&tsval.to_be_bytes());
            put(&tsecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[
                kind::NOP,
                kind::NOP,
                kind::SACK_PERMITTED,
                optlen::SACK_PERMITTED as u8,
            ]);
        }
        if let Some(shift) = self.window_scale {
            put(&[
                kind::NOP,
                kind::WINDOW_SCALE,
                optlen::WINDOW_SCALE as u8,
                shift,
            ]);
        }
        if layout.sack_blocks > 0 {
            let len = optlen::SACK_BASE + layout.sack_blocks * optlen::SACK_PER_BLOCK;
            // At most 2 + 4 * 8 = 34: fits a byte.
            put(&[kind::NOP, kind::NOP, kind::SACK, len as u8]);
            for block in self.sacks().take(layout.sack_blocks) {
                put(&block.left.raw().to_be_bytes());
                put(&block.right.raw().to_be_bytes());
            }
        }
        at
    }

    /// Parses an option list (the bytes between the fixed header and the data).
    ///
    /// RFC 9293 §3.2: options of unknown kind are skipped by their length; the
    /// list ends at EOL or at the end of the header. A length byte missing,
    /// below 2 or running past the header makes the segment malformed. A
    /// known option with the wrong length is ignored, as Linux does.
    pub fn parse(mut bytes: &[u8]) -> Result<TcpOptions, WireError> {
        let mut options = TcpOptions::default();
        while let Some((&kind, rest)) = bytes.split_first() {
            match kind {
                kind::END_OF_LIST => break,
                kind::NOP => {
                    bytes = rest;
                    continue;
                }
                _ => {}
            }
            let len = usize::from(*rest.first().ok_or(WireError::Malformed)?);
            if len < 2 || len > bytes.len() {
                return Err(WireError::Malformed);
            }
            let body = &bytes[2..len];
            match (kind, len) {
                (kind::MSS, optlen::MSS) => {
                    options.mss = Some(u16::from_be_bytes([body[0], body[1]]));
                }
                (kind::WINDOW_SCALE, optlen::WINDOW_SCALE) => {
                    options.window_scale = Some(body[0]);
                }
                (kind::SACK_PERMITTED, optlen::SACK_PERMITTED) => {
                    options.sack_permitted = true;
                }
                (kind::TIMESTAMPS, optlen::TIMESTAMPS) => {
                    let tsval = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let tsecr = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    options.timestamp = Some((tsval, tsecr));
                }
                (kind::SACK, _)
                    if body.len() >= optlen::SACK_PER_BLOCK
                        && body.len().is_multiple_of(optlen::SACK_PER_BLOCK) =>
                {
                    // A 40-byte option area holds at most 4 blocks, so the
                    // zip below never drops a block of a well-formed header.
                    let blocks = body
                        .chunks_exact(optlen::SACK_PER_BLOCK)
                        .map(|b| SackBlock {
                            left: SeqNum(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                            right: SeqNum(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
                        });
                    options.set_sacks(blocks);
                }
                _ => {}
            }
            bytes = &bytes[len..];
        }
        Ok(options)
    }
}

/// Field offsets in the fixed header (RFC 9293 §3.1).
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// The IP protocol number of TCP, for the pseudo-header.
pub const PROTOCOL_TCP: u8 = 6;
/// Offset of the flags byte in the header (RFC 9293 §3.1).
pub const FLAGS_OFFSET: usize = field::FLAGS;
/// Offset of the checksum field in the header (RFC 9293 §3.1); a
/// virtio-net `csum_offset`.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// What [`TcpRepr::emit_header`] writes into the checksum field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxChecksum {
    /// The full checksum (RFC 9293 §3.1).
    Full,
    /// Only the folded pseudo-header sum, not complemented: the link
    /// completes it (virtio-net `NEEDS_CSUM`, Linux's CHECKSUM_PARTIAL).
    Partial,
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
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(bytes[field::DATA_OFFSET] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if header_len > bytes.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpSegment { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = self.bytes();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn read_u32(&self, at: usize) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    pub fn seq(&self) -> SeqNum {
        SeqNum(self.read_u32(field::SEQ))
    }

    pub fn ack(&self) -> SeqNum {
        SeqNum(self.read_u32(field::ACK))
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[field::DATA_OFFSET] >> 4) * 4
    }

    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits_retain(self.bytes()[field::FLAGS])
    }

    pub fn window(&self) -> u16 {
        self.read_u16(field::WINDOW)
    }

    /// The checksum field as on the wire.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        self.read_u16(field::URGENT)
    }

    /// The raw option bytes.
    pub fn options(&self) -> &[u8] {
        &self.bytes()[HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes()[self.header_len()..]
    }

    /// Whether the checksum over the pseudo-header, header and payload
    /// verifies (RFC 9293 §3.1; over IPv6 the pseudo-header of RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let bytes = self.bytes();
        // An IP payload never exceeds 65535 bytes; a longer buffer cannot verify.
        let Ok(length) = u32::try_from(bytes.len()) else {
            return false;
        };
        checksum::verifies(
            checksum::pseudo_header_ip(src, dst, PROTOCOL_TCP, length) + checksum::sum(bytes),
        )
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
    /// the pseudo-header of their family (RFC 9293 §3.1, RFC 8200 §8.1).
    pub fn parse(
        segment: &'a [u8],
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
    ) -> Result<TcpRepr<'a>, WireError> {
        Self::parse_with(segment, src.into(), dst.into(), true)
    }

    /// [`TcpRepr::parse`], verifying the checksum only if `verify`: false
    /// only where the link promised it (a virtio-net header saying
    /// `DATA_VALID`, or `NEEDS_CSUM` on bytes that never left the host).
    pub fn parse_with(
        segment: &'a [u8],
        src: IpAddr,
        dst: IpAddr,
        verify: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        let view = TcpSegment::new_checked(segment)?;
        if verify && !view.verify_checksum(src, dst) {
            return Err(WireError::Checksum);
        }
        let options = TcpOptions::parse(view.options())?;
        Ok(TcpRepr {
            src_port: view.src_port(),
            dst_port: view.dst_port(),
            seq: view.seq(),
            ack: view.ack(),
            flags: view.flags(),
            window: view.window(),
            urgent: view.urgent(),
            options,
            payload: &segment[view.header_len()..],
        })
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
    pub fn emit(&self, buf: &mut [u8], src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> usize {
        let header_len = self.header_len();
        let total = header_len + self.payload.len();
        assert!(
            buf.len() >= total,
            "TCP emit buffer shorter than the segment"
        );
        buf[header_len..total].copy_from_slice(self.payload);
        self.emit_header(
            buf,
            self.payload.len(),
            src.into(),
            dst.into(),
            TxChecksum::Full,
        )
    }

    /// Writes the header in front of a payload already in place at
    /// `buf[self.header_len()..][..payload_len]` (so the payload is copied
    /// once, straight from the send buffer); `self.payload` is ignored.
    /// Returns the segment length. Panics only if `buf` is too short (a
    /// caller bug).
    pub fn emit_header(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: IpAddr,
        dst: IpAddr,
        checksum: TxChecksum,
    ) -> usize {
        let total = self.header_len() + payload_len;
        assert!(
            buf.len() >= total,
            "TCP emit buffer shorter than the segment"
        );
        self.emit_header_only(&mut buf[..total], payload_len, 0, src, dst, checksum)
    }

    /// Writes only the header into `buf[..self.header_len()]`, for a
    /// payload of `payload_len` bytes that is elsewhere (it leaves with a
    /// vectored write), whose sum ([`checksum::sum_parts`]) is
    /// `payload_sum` — needed for [`TxChecksum::Full`] only. Returns the
    /// header length. Panics only if `buf` is too short (a caller bug).
    pub fn emit_header_apart(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        payload_sum: Option<u32>,
        src: IpAddr,
        dst: IpAddr,
        checksum: TxChecksum,
    ) -> usize {
        let header_len = self.header_len();
        assert!(
            buf.len() >= header_len,
            "TCP emit buffer shorter than the header"
        );
        self.emit_header_only(
            &mut buf[..header_len],
            payload_len,
            payload_sum.unwrap_or(0),
            src,
            dst,
            checksum,
        );
        header_len
    }

    /// The header into `out`, which holds the header and the payload in
    /// place, or the header alone and `payload_sum` is the payload's sum
    /// (0 otherwise); returns the segment length.
    fn emit_header_only(
        &self,
        out: &mut [u8],
        payload_len: usize,
        payload_sum: u32,
        src: IpAddr,
        dst: IpAddr,
        checksum: TxChecksum,
    ) -> usize {
        let header_len = self.header_len();
        let total = header_len + payload_len;
        out[field::SRC_PORT..field::SRC_PORT + 2].copy_from_slice(&self.src_port.to_be_bytes());
        out[field::DST_PORT..field::DST_PORT + 2].copy_from_slice(&self.dst_port.to_be_bytes());
        out[field::SEQ..field::SEQ + 4].copy_from_slice(&self.seq.raw().to_be_bytes());
        out[field::ACK..field::ACK + 4].copy_from_slice(&self.ack.raw().to_be_bytes());
        // Data offset in 32-bit words (at most 15); the reserved bits stay zero.
        out[field::DATA_OFFSET] = ((header_len / 4) as u8) << 4;
        out[field::FLAGS] = self.flags.bits();
        out[field::WINDOW..field::WINDOW + 2].copy_from_slice(&self.window.to_be_bytes());
        out[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        out[field::URGENT..field::URGENT + 2].copy_from_slice(&self.urgent.to_be_bytes());
        let written = self.options.emit(&mut out[HEADER_LEN..header_len]);
        debug_assert_eq!(written, header_len - HEADER_LEN);
        // Segment lengths come from an IP packet, so they fit 32 bits.
        let length = u32::try_from(total).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header_ip(src, dst, PROTOCOL_TCP, length);
        let sum = match checksum {
            // The header is a whole number of 32-bit words, so a payload
            // sum taken apart adds on as it is.
            TxChecksum::Full => checksum::finish(pseudo + checksum::sum(out) + payload_sum),
            // `pseudo_header` is folded to 16 bits; the link adds the rest.
            TxChecksum::Partial => !checksum::finish(pseudo),
        };
        out[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    /// The TCP part of a SYN captured from Linux 6.18 writing into a TUN
    /// device (10.77.0.1:58444 → 10.77.0.2:8080), checksum 0xaeaa by the kernel.
    const LINUX_SYN: [u8; 40] = [
        0xe4, 0x4c, 0x1f, 0x90, 0x0d, 0xfb, 0xfd, 0x28, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0xae, 0xaa, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x99, 0x7a,
        0xe1, 0x49, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    fn linux_syn_repr() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 58444,
            dst_port: 8080,
            seq: SeqNum(0x0dfb_fd28),
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(10),
                sack_permitted: true,
                sack_blocks: [None; 4],
                timestamp: Some((0x997a_e149, 0)),
            },
            payload: &[],
        }
    }

    fn block(left: u32, right: u32) -> SackBlock {
        SackBlock {
            left: SeqNum(left),
            right: SeqNum(right),
        }
    }

    /// A data segment with timestamps and two SACK blocks, emitted by us.
    fn data_segment() -> Vec<u8> {
        let mut options = TcpOptions {
            timestamp: Some((1000, 2000)),
            ..TcpOptions::default()
        };
        options.set_sacks([block(5000, 6000), block(7000, 7500)]);
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: SeqNum(4_000_000_000),
            ack: SeqNum(4000),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 502,
            urgent: 0,
            options,
            payload: b"GET / HTTP/1.1\r\n\r\n\0",
        };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(&mut buf, SRC, DST);
        buf
    }

    #[test]
    fn parses_the_linux_syn() {
        let repr = TcpRepr::parse(&LINUX_SYN, SRC, DST).unwrap();
        assert_eq!(repr, linux_syn_repr());
        assert_eq!(repr.segment_len(), 1);
        assert_eq!(repr.header_len(), 40);
        let view = TcpSegment::new_checked(&LINUX_SYN[..]).unwrap();
        assert_eq!(view.checksum(), 0xaeaa);
        assert_eq!(view.options().len(), 20);
    }

    #[test]
    fn emits_the_linux_syn_byte_for_byte() {
        let repr = linux_syn_repr();
        let mut buf = [0u8; 60];
        let n = repr.emit(&mut buf, SRC, DST);
        assert_eq!(n, 40);
        assert_eq!(buf[..40], LINUX_SYN);
    }

    #[test]
    fn wrong_addresses_fail_the_checksum() {
        assert_eq!(
            TcpRepr::parse(&LINUX_SYN, SRC, Ipv4Addr::new(10, 77, 0, 3)),
            Err(WireError::Checksum)
        );
    }

    #[test]
    fn data_segment_layout() {
        let bytes = data_segment();
        // NOP NOP TS(10) + NOP NOP SACK(2 + 16) = 32 option bytes.
        assert_eq!(bytes[12] >> 4, 13);
        assert_eq!(&bytes[20..24], &[1, 1, 8, 10]);
        assert_eq!(&bytes[24..28], &1000u32.to_be_bytes());
        assert_eq!(&bytes[28..32], &2000u32.to_be_bytes());
        assert_eq!(&bytes[32..36], &[1, 1, 5, 18]);
        assert_eq!(&bytes[36..40], &5000u32.to_be_bytes());
        assert_eq!(&bytes[48..52], &7500u32.to_be_bytes());
        assert_eq!(&bytes[52..], b"GET / HTTP/1.1\r\n\r\n\0");
        let repr = TcpRepr::parse(&bytes, SRC, DST).unwrap();
        assert_eq!(
            repr.options.sacks().collect::<Vec<_>>(),
            vec![block(5000, 6000), block(7000, 7500)]
        );
        assert_eq!(repr.payload, b"GET / HTTP/1.1\r\n\r\n\0");
    }

    #[test]
    fn sack_blocks_are_limited_by_room() {
        let four = [block(1, 2), block(3, 4), block(5, 6), block(7, 8)];
        let mut options = TcpOptions::default();
        options.set_sacks(four);
        // NOP NOP SACK(2 + 32) = 36.
        assert_eq!(options.wire_len(), 36);
        assert_eq!(options.emitted_sack_blocks(), 4);
        options.timestamp = Some((1, 2));
        // 12 + NOP NOP SACK(2 + 24) = 40: only three blocks fit beside timestamps.
        assert_eq!(options.wire_len(), 40);
        assert_eq!(options.emitted_sack_blocks(), 3);
        let mut buf = [0u8; 40];
        assert_eq!(options.emit(&mut buf), 40);
        let parsed = TcpOptions::parse(&buf).unwrap();
        assert_eq!(parsed.sacks().collect::<Vec<_>>(), four[..3].to_vec());
        // SYN options plus SACK blocks: 20 fixed bytes leave room for two.
        options.mss = Some(1460);
        options.window_scale = Some(7);
        options.sack_permitted = true;
        assert_eq!(options.emitted_sack_blocks(), 2);
        assert_eq!(options.wire_len(), 40);
    }

    #[test]
    fn sack_permitted_without_timestamps() {
        let options = TcpOptions {
            mss: Some(536),
            sack_permitted: true,
            window_scale: Some(0),
            ..TcpOptions::default()
        };
        let mut buf = [0u8; 40];
        let n = options.emit(&mut buf);
        assert_eq!(n, options.wire_len());
        assert_eq!(&buf[..n], &[2, 4, 2, 24, 1, 1, 4, 2, 1, 3, 3, 0]);
        assert_eq!(TcpOptions::parse(&buf[..n]).unwrap(), options);
    }

    #[test]
    fn no_options_take_no_room() {
        assert_eq!(TcpOptions::default().wire_len(), 0);
        assert_eq!(TcpOptions::parse(&[]).unwrap(), TcpOptions::default());
    }

    #[test]
    fn option_parsing_edge_cases() {
        // Unknown kind 30 (MPTCP) with 4 bytes of body is skipped by length.
        let opts = [30, 6, 0xde, 0xad, 0xbe, 0xef, 2, 4, 0x05, 0xb4];
        assert_eq!(TcpOptions::parse(&opts).unwrap().mss, Some(1460));
        // EOL ends the list: what follows is padding, even if it looks wrong.
        let opts = [3, 3, 7, 0, 0xff, 0x00, 0x11, 0x22];
        assert_eq!(TcpOptions::parse(&opts).unwrap().window_scale, Some(7));
        // A length below 2 would loop forever or step backwards.
        assert_eq!(TcpOptions::parse(&[2, 1, 0, 0]), Err(WireError::Malformed));
        assert_eq!(TcpOptions::parse(&[30, 0]), Err(WireError::Malformed));
        // A length running past the header.
        assert_eq!(
            TcpOptions::parse(&[1, 8, 10, 0, 0]),
            Err(WireError::Malformed)
        );
        // A kind byte with no room for its length.
        assert_eq!(TcpOptions::parse(&[1, 1, 1, 2]), Err(WireError::Malformed));
        // Known kinds of the wrong length are ignored (as Linux does).
        let opts = [2, 3, 0x05, 3, 4, 1, 1, 1];
        assert_eq!(TcpOptions::parse(&opts).unwrap(), TcpOptions::default());
        let bad_sack = [5, 7, 0, 0, 0, 0, 0, 1, 1];
        assert_eq!(TcpOptions::parse(&bad_sack).unwrap().sacks().count(), 0);
    }

    /// Rewrites the option area of the Linux SYN and fixes its checksum.
    fn syn_with_options(options: &[u8; 20]) -> Vec<u8> {
        let mut bytes = LINUX_SYN.to_vec();
        bytes[20..].copy_from_slice(options);
        bytes[16..18].fill(0);
        let sum =
            checksum::finish(checksum::pseudo_header(SRC, DST, 6, 40) + checksum::sum(&bytes));
        bytes[16..18].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    #[test]
    fn malformed_options_make_the_segment_malformed() {
        let mut options = [1u8; 20];
        options[18] = 8;
        options[19] = 10;
        let bytes = syn_with_options(&options);
        assert_eq!(TcpRepr::parse(&bytes, SRC, DST), Err(WireError::Malformed));
        let bytes = syn_with_options(&[1; 20]);
        assert_eq!(
            TcpRepr::parse(&bytes, SRC, DST).unwrap().options,
            TcpOptions::default()
        );
    }

    #[test]
    fn bad_data_offset() {
        let mut bytes = LINUX_SYN;
        bytes[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]).unwrap_err(),
            WireError::Malformed
        );
        bytes[12] = 0xb0; // 44 bytes of header in a 40-byte segment
        assert_eq!(
            TcpSegment::new_checked(&bytes[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn every_truncation_fails() {
        for packet in [LINUX_SYN.to_vec(), data_segment()] {
            for len in 0..packet.len() {
                assert!(
                    TcpRepr::parse(&packet[..len], SRC, DST).is_err(),
                    "length {len}"
                );
            }
        }
    }

    #[test]
    fn every_single_bit_flip_fails() {
        for packet in [LINUX_SYN.to_vec(), data_segment()] {
            for i in 0..packet.len() {
                for bit in 0..8 {
                    let mut bad = packet.clone();
                    bad[i] ^= 1 << bit;
                    assert!(
                        TcpRepr::parse(&bad, SRC, DST).is_err(),
                        "byte {i} bit {bit}"
                    );
                }
            }
        }
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
            proptest::option::of((any::<u32>(), any::<u32>())),
        )
            .prop_map(|(mss, window_scale, sack_permitted, blocks, timestamp)| {
                let mut options = TcpOptions {
                    mss,
                    window_scale,
                    sack_permitted,
                    timestamp,
                    ..TcpOptions::default()
                };
                options.set_sacks(blocks.into_iter().map(|(l, r)| block(l, r)));
                options
            })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8, window: u16,
            urgent: u16, options in arb_options(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
            src: u32, dst: u32,
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = TcpRepr {
                src_port, dst_port, seq: SeqNum(seq), ack: SeqNum(ack), flags: TcpFlags::from_bits_retain(flags),
                window, urgent, options, payload: &payload,
            };
            let mut buf = vec![0x5a; repr.buffer_len() + 7];
            let written = repr.emit(&mut buf, src, dst);
            prop_assert_eq!(written, repr.buffer_len());
            prop_assert_eq!(repr.header_len() % 4, 0);
            prop_assert!(repr.header_len() <= MAX_HEADER_LEN);
            let parsed = TcpRepr::parse(&buf[..written], src, dst).unwrap();
            // Only the SACK blocks that fit are sent.
            let mut expected = repr;
            expected.options.set_sacks(options.sacks().take(options.emitted_sack_blocks()));
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..100), src: u32, dst: u32,
        ) {
            let _ = TcpRepr::parse(&bytes, Ipv4Addr::from(src), Ipv4Addr::from(dst));
            if let Ok(view) = TcpSegment::new_checked(&bytes[..]) {
                let _ = (view.options(), view.payload(), view.flags());
            }
        }

        #[test]
        fn arbitrary_options_never_panic(options in proptest::collection::vec(any::<u8>(), 0..=40)) {
            // Random bytes rarely pass the checksum, so drive the option parser directly.
            if let Ok(parsed) = TcpOptions::parse(&options) {
                prop_assert!(parsed.sacks().count() <= MAX_SACK_BLOCKS);
            }
        }
    }
}
