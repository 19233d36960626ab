//! IPv4 header (RFC 791): version, IHL, total length, fragmentation, TTL,
//! protocol, header checksum (always verified). Options are skipped;
//! fragments are rejected (tcpd does not reassemble) so the stack can count them.
//!
//! Invariant: an [`Ipv4Packet`] only exists over a buffer holding at least its
//! total length, whose header length is at least 20 and at most the total
//! length, so every accessor indexes in bounds.

use crate::wire::WireError;
use crate::wire::checksum;
use core::net::Ipv4Addr;

/// The IPv4 header without options (RFC 791 §3.1).
pub const HEADER_LEN: usize = 20;
/// Default TTL for packets tcpd originates (RFC 1700 / Linux's 64).
pub const DEFAULT_TTL: u8 = 64;

pub use crate::wire::ip::IpProtocol;

/// Field offsets in the header (RFC 791 §3.1).
mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TOS: usize = 1;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// The "Don't Fragment" flag bit in the flags/fragment-offset word (RFC 791 §3.1).
const FLAG_DF: u16 = 0x4000;
/// The "More Fragments" flag bit (RFC 791 §3.1).
const FLAG_MF: u16 = 0x2000;
/// The 13-bit fragment offset, in units of 8 bytes (RFC 791 §3.1).
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A checked view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version 4, IHL >= 5, total length within the buffer and >= IHL.
    /// Bytes past the total length (link padding) are ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if bytes[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = usize::from(bytes[field::VER_IHL] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total_len = usize::from(u16::from_be_bytes([
            bytes[field::TOTAL_LEN],
            bytes[field::TOTAL_LEN + 1],
        ]));
        if total_len < header_len {
            return Err(WireError::Malformed);
        }
        if total_len > bytes.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

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

    /// Header length in bytes, options included (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[field::VER_IHL] & 0x0f) * 4
    }

    /// The total length field: header plus payload.
    pub fn total_len(&self) -> usize {
        usize::from(self.read_u16(field::TOTAL_LEN))
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_fragment(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    pub fn fragment_offset(&self) -> usize {
        usize::from(self.read_u16(field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this is a fragment of a larger datagram (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.bytes()[field::TTL]
    }

    /// The type-of-service byte: DSCP and ECN (RFC 2474, RFC 3168).
    pub fn tos(&self) -> u8 {
        self.bytes()[field::TOS]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.bytes()[field::PROTOCOL])
    }

    /// The header checksum field as on the wire.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.bytes();
        Ipv4Addr::new(
            b[field::SRC],
            b[field::SRC + 1],
            b[field::SRC + 2],
            b[field::SRC + 3],
        )
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.bytes();
        Ipv4Addr::new(
            b[field::DST],
            b[field::DST + 1],
            b[field::DST + 2],
            b[field::DST + 3],
        )
    }

    /// Whether the header checksum (over the header including options) verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::sum(&self.bytes()[..self.header_len()]))
    }

    /// The payload: from the end of the header to the total length (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[self.header_len()..self.total_len()]
    }
}

/// A parsed IPv4 header. The payload is returned beside it by [`Ipv4Repr::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub ttl: u8,
    /// Don't Fragment; tcpd sets it on everything it sends (RFC 1191 PMTUD).
    pub dont_fragment: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses and validates a packet (header checksum verified, fragments
    /// rejected with [`WireError::Fragment`]); returns the header and the
    /// payload (trimmed to the total length).
    pub fn parse(packet: &[u8]) -> Result<(Ipv4Repr, &[u8]), WireError> {
        let view = Ipv4Packet::new_checked(packet)?;
        // RFC 1122 §3.2.1.2: a datagram whose header checksum fails is discarded silently.
        if !view.verify_checksum() {
            return Err(WireError::Checksum);
        }
        // RFC 791 §3.2: MF set or a non-zero offset means a piece of a larger
        // datagram; tcpd sets DF and does not reassemble.
        if view.is_fragment() {
            return Err(WireError::Fragment);
        }
        let repr = Ipv4Repr {
            src: view.src(),
            dst: view.dst(),
            protocol: view.protocol(),
            ttl: view.ttl(),
            dont_fragment: view.dont_fragment(),
            payload_len: view.total_len() - view.header_len(),
        };
        let (start, end) = (view.header_len(), view.total_len());
        Ok((repr, &packet[start..end]))
    }

    /// Bytes the header takes when emitted (no options).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header (no options) with checksum into `buf[..20]`;
    /// `ident` is the IP identification field.
    ///
    /// Panics if `buf` is shorter than 20 bytes (a caller bug). A
    /// `payload_len` beyond what the 16-bit total length can express is a
    /// caller bug too; the field is then clamped to 65535.
    pub fn emit(&self, buf: &mut [u8], ident: u16) {
        self.emit_with_tos(buf, ident, 0);
    }

    /// [`Ipv4Repr::emit`] with a type-of-service byte (a socket's IP_TOS).
    pub fn emit_with_tos(&self, buf: &mut [u8], ident: u16, tos: u8) {
        assert!(
            buf.len() >= HEADER_LEN,
            "IPv4 emit buffer shorter than the header"
        );
        debug_assert!(self.payload_len <= usize::from(u16::MAX) - HEADER_LEN);
        let header = &mut buf[..HEADER_LEN];
        let total_len = u16::try_from(HEADER_LEN + self.payload_len).unwrap_or(u16::MAX);
        // Version 4, IHL 5 words (RFC 791 §3.1).
        header[field::VER_IHL] = 0x45;
        // Type of service / DSCP+ECN (0: best effort, not ECN-capable).
        header[field::TOS] = tos;
        header[field::TOTAL_LEN..field::TOTAL_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
        header[field::IDENT..field::IDENT + 2].copy_from_slice(&ident.to_be_bytes());
        let flags = if self.dont_fragment { FLAG_DF } else { 0 };
        header[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&flags.to_be_bytes());
        header[field::TTL] = self.ttl;
        header[field::PROTOCOL] = u8::from(self.protocol);
        header[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        header[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        header[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let sum = checksum::finish(checksum::sum(header));
        header[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A SYN captured from Linux 6.18 writing into a TUN device (10.77.0.1 → 10.77.0.2:8080).
    const LINUX_SYN: &str = "4500003cbb73400040066aac0a4d00010a4d0002e44c1f900dfbfd280000000\
                             0a002faf0aeaa0000020405b40402080a997ae149000000000103030a";

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_a_linux_packet() {
        let bytes = hex(LINUX_SYN);
        let (repr, payload) = Ipv4Repr::parse(&bytes).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src: Ipv4Addr::new(10, 77, 0, 1),
                dst: Ipv4Addr::new(10, 77, 0, 2),
                protocol: IpProtocol::Tcp,
                ttl: 64,
                dont_fragment: true,
                payload_len: 40,
            }
        );
        assert_eq!(payload, &bytes[20..]);
        let view = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.ident(), 0xbb73);
        assert_eq!(view.checksum(), 0x6aac);
    }

    #[test]
    fn emit_reproduces_linux_header() {
        let bytes = hex(LINUX_SYN);
        let (repr, _) = Ipv4Repr::parse(&bytes).unwrap();
        let mut out = [0u8; 20];
        repr.emit(&mut out, 0xbb73);
        assert_eq!(&out[..], &bytes[..20]);
    }

    #[test]
    fn link_padding_is_ignored() {
        let mut bytes = hex(LINUX_SYN);
        bytes.extend_from_slice(&[0xee; 6]);
        let (repr, payload) = Ipv4Repr::parse(&bytes).unwrap();
        assert_eq!(repr.payload_len, 40);
        assert_eq!(payload.len(), 40);
    }

    #[test]
    fn options_are_skipped() {
        // Header with IHL 6: one word of options (NOP NOP NOP EOL), payload "hi".
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            protocol: IpProtocol::Other(17),
            ttl: 3,
            dont_fragment: false,
            payload_len: 2,
        };
        let mut plain = [0u8; 20];
        repr.emit(&mut plain, 7);
        let mut with_opts = Vec::new();
        with_opts.extend_from_slice(&plain);
        with_opts.extend_from_slice(&[1, 1, 1, 0, b'h', b'i']);
        with_opts[0] = 0x46;
        with_opts[2..4].copy_from_slice(&26u16.to_be_bytes());
        with_opts[10..12].fill(0);
        let sum = checksum::finish(checksum::sum(&with_opts[..24]));
        with_opts[10..12].copy_from_slice(&sum.to_be_bytes());
        let (parsed, payload) = Ipv4Repr::parse(&with_opts).unwrap();
        assert_eq!(parsed, repr);
        assert_eq!(payload, b"hi");
    }

    #[test]
    fn rejects_bad_headers() {
        let good = hex(LINUX_SYN);
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Repr::parse(&v6), Err(WireError::Malformed));
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(Ipv4Repr::parse(&short_ihl), Err(WireError::Malformed));
        let mut long_total = good.clone();
        long_total[3] = 61;
        assert_eq!(Ipv4Repr::parse(&long_total), Err(WireError::Truncated));
        let mut total_below_ihl = good.clone();
        total_below_ihl[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Ipv4Repr::parse(&total_below_ihl), Err(WireError::Malformed));
        let mut ihl_past_total = good.clone();
        ihl_past_total[0] = 0x4f; // 60-byte header in a 60-byte packet is fine for the view...
        assert!(Ipv4Packet::new_checked(&ihl_past_total[..]).is_ok());
        ihl_past_total[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Ipv4Repr::parse(&ihl_past_total), Err(WireError::Malformed));
    }

    /// Rewrites the flags/offset word and fixes the checksum.
    fn with_frag_word(mut bytes: Vec<u8>, word: u16) -> Vec<u8> {
        bytes[6..8].copy_from_slice(&word.to_be_bytes());
        bytes[10..12].fill(0);
        let sum = checksum::finish(checksum::sum(&bytes[..20]));
        bytes[10..12].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    #[test]
    fn rejects_fragments() {
        let good = hex(LINUX_SYN);
        let mf = with_frag_word(good.clone(), FLAG_MF);
        assert_eq!(Ipv4Repr::parse(&mf), Err(WireError::Fragment));
        let offset = with_frag_word(good.clone(), 0x0001);
        assert_eq!(Ipv4Repr::parse(&offset), Err(WireError::Fragment));
        let no_df = with_frag_word(good, 0);
        assert!(!Ipv4Repr::parse(&no_df).unwrap().0.dont_fragment);
    }

    #[test]
    fn every_truncation_fails() {
        let good = hex(LINUX_SYN);
        for len in 0..good.len() {
            assert!(Ipv4Repr::parse(&good[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn any_header_corruption_fails() {
        let good = hex(LINUX_SYN);
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(Ipv4Repr::parse(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            0usize..2000,
        )
            .prop_map(|(src, dst, proto, ttl, df, len)| Ipv4Repr {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto),
                ttl,
                dont_fragment: df,
                payload_len: len,
            })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(repr in arb_repr(), ident: u16) {
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut buf, ident);
            let (parsed, payload) = Ipv4Repr::parse(&buf).unwrap();
            prop_assert_eq!(parsed, repr);
            prop_assert_eq!(payload.len(), repr.payload_len);
            prop_assert_eq!(Ipv4Packet::new_checked(&buf[..]).unwrap().ident(), ident);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Ipv4Repr::parse(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_version_never_panic(
            ihl in 0u8..16, total: u16, rest in proptest::collection::vec(any::<u8>(), 0..80)
        ) {
            let mut bytes = vec![0x40 | ihl, 0];
            bytes.extend_from_slice(&total.to_be_bytes());
            bytes.extend_from_slice(&rest);
            if let Ok(view) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (view.payload(), view.verify_checksum(), view.src(), view.dst());
            }
            let _ = Ipv4Repr::parse(&bytes);
        }
    }
}
