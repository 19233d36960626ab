//! IPv6 header (RFC 8200 §3) and the walk over its extension-header chain
//! (RFC 8200 §4) to the upper-layer protocol.
//!
//! The walk processes what a host must: hop-by-hop and destination options
//! (unrecognised options handled by the two high-order bits of their type,
//! §4.2), routing headers (ignored when Segments Left is zero, §4.4),
//! fragment headers (atomic fragments processed in isolation, RFC 6946;
//! real fragments rejected — tcpd does not reassemble, as for IPv4). The first
//! Next Header value that is none of these is the upper layer; the caller
//! decides what to do with protocols it does not speak (RFC 8200 §4 asks for
//! an ICMPv6 Parameter Problem, code 1, pointing at that Next Header field —
//! [`Ipv6Parsed::unrecognized_next_header`] builds it).
//!
//! A rejected packet comes back as an [`Ipv6Drop`]: the drop reason the stack
//! counts plus, where RFC 8200 §4 requires one, the Parameter Problem to send.
//!
//! Invariant: an [`Ipv6Packet`] only exists over a buffer holding at least the
//! fixed header plus the payload length it claims, so every accessor indexes
//! in bounds; every step of the walk is bounds-checked against that length.

use crate::wire::WireError;
use crate::wire::icmpv6::parameter_problem;
use crate::wire::ip::IpProtocol;
use core::net::Ipv6Addr;

/// The fixed IPv6 header (RFC 8200 §3).
pub const HEADER_LEN: usize = 40;
/// The minimum link MTU every IPv6 link supports (RFC 8200 §5).
pub const MIN_MTU: u16 = 1280;
/// Hop limit for packets tcpd originates (Linux's net.ipv6.conf.*.hop_limit default).
pub const DEFAULT_HOP_LIMIT: u8 = 64;
/// The largest flow label (20 bits, RFC 8200 §3 and RFC 6437).
pub const MAX_FLOW_LABEL: u32 = 0x000f_ffff;

/// Field offsets in the fixed header (RFC 8200 §3).
mod field {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Next Header values of the extension headers the walk knows (IANA
/// "IPv6 Extension Header Types", RFC 8200 §4.1).
mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    /// "No Next Header" (RFC 8200 §4.7): nothing follows.
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// Option types every node recognises (RFC 8200 §4.2).
mod option {
    pub const PAD1: u8 = 0;
    pub const PADN: u8 = 1;
}

/// Size of the fragment header (RFC 8200 §4.5).
const FRAGMENT_HEADER_LEN: usize = 8;

/// A checked view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks version 6 and that the payload length fits in the buffer.
    /// Bytes past the payload length (link padding) are ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if bytes[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let payload_len = usize::from(u16::from_be_bytes([
            bytes[field::PAYLOAD_LEN],
            bytes[field::PAYLOAD_LEN + 1],
        ]));
        if HEADER_LEN + payload_len > bytes.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn first_word(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The traffic class (DSCP and ECN, RFC 8200 §7).
    pub fn traffic_class(&self) -> u8 {
        // Bits 4..12 of the first word; the shift leaves exactly 8 bits.
        ((self.first_word() >> 20) & 0xff) as u8
    }

    /// The 20-bit flow label (RFC 6437).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & MAX_FLOW_LABEL
    }

    /// The payload length: extension headers plus upper-layer data.
    pub fn payload_len(&self) -> usize {
        let b = self.bytes();
        usize::from(u16::from_be_bytes([
            b[field::PAYLOAD_LEN],
            b[field::PAYLOAD_LEN + 1],
        ]))
    }

    /// The Next Header field of the fixed header (raw).
    pub fn next_header(&self) -> u8 {
        self.bytes()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.bytes()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        address_at(self.bytes(), field::SRC)
    }

    pub fn dst(&self) -> Ipv6Addr {
        address_at(self.bytes(), field::DST)
    }

    /// Everything after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }
}

/// The 16-byte address starting at `at`; the caller has checked the bounds.
fn address_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// An ICMPv6 Parameter Problem to send back for a rejected packet (RFC 4443 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterProblem {
    /// One of [`parameter_problem`]'s codes.
    pub code: u8,
    /// Offset in the invoking packet of the byte that caused the problem.
    pub pointer: u32,
}

impl ParameterProblem {
    fn at(code: u8, offset: usize) -> ParameterProblem {
        ParameterProblem {
            code,
            // Offsets stay below HEADER_LEN + 65535, which fits in u32.
            pointer: u32::try_from(offset).unwrap_or(u32::MAX),
        }
    }
}

/// Why an IPv6 packet was rejected, and whether to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Drop {
    /// The drop reason the stack counts.
    pub reason: WireError,
    /// The Parameter Problem RFC 8200 §4 asks for, if any. The caller still
    /// applies RFC 4443 §2.4's rules (rate limit, no errors about errors).
    pub problem: Option<ParameterProblem>,
}

impl From<WireError> for Ipv6Drop {
    fn from(reason: WireError) -> Self {
        Ipv6Drop {
            reason,
            problem: None,
        }
    }
}

impl Ipv6Drop {
    fn answered(reason: WireError, problem: ParameterProblem) -> Ipv6Drop {
        Ipv6Drop {
            reason,
            problem: Some(problem),
        }
    }
}

/// A parsed IPv6 header: the fixed fields plus the upper layer the
/// extension-header chain led to. Emitted without extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The upper-layer protocol (after any extension headers).
    pub next_header: IpProtocol,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits; tcpd sets one per connection (RFC 6437 §3).
    pub flow_label: u32,
    /// Length of the upper-layer data (extension headers excluded).
    pub payload_len: usize,
}

/// The result of [`Ipv6Repr::parse`]: header, upper-layer bytes, and where
/// the Next Header value naming the upper layer sits in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Parsed<'a> {
    pub repr: Ipv6Repr,
    pub payload: &'a [u8],
    /// Offset of the Next Header field whose value is `repr.next_header`.
    pub next_header_offset: usize,
}

impl Ipv6Parsed<'_> {
    /// The Parameter Problem (code 1, pointing at the Next Header field) that
    /// RFC 8200 §4 asks for when the upper-layer protocol is not handled.
    pub fn unrecognized_next_header(&self) -> ParameterProblem {
        ParameterProblem::at(
            parameter_problem::UNRECOGNIZED_NEXT_HEADER,
            self.next_header_offset,
        )
    }
}

/// How strictly [`walk`] treats the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// A packet addressed to us: options are processed and problems reported.
    Deliver,
    /// A packet quoted in an ICMPv6 error, cut short by design: headers are
    /// skipped without judging them, to find the upper-layer header.
    Quote,
}

/// Where the walk over an extension-header chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChainEnd {
    /// The upper-layer protocol number.
    protocol: u8,
    /// Offset of the upper-layer header.
    offset: usize,
    /// Offset of the Next Header field that holds `protocol`.
    next_header_offset: usize,
}

/// Walks the extension headers of `bytes[..end]` (a packet starting with its
/// fixed header) to the upper layer, per RFC 8200 §4.
fn walk(bytes: &[u8], end: usize, dst: Ipv6Addr, mode: Walk) -> Result<ChainEnd, Ipv6Drop> {
    let mut protocol = bytes[field::NEXT_HEADER];
    let mut next_header_offset = field::NEXT_HEADER;
    let mut at = HEADER_LEN;
    loop {
        let header_len = match protocol {
            ext::HOP_BY_HOP | ext::DESTINATION_OPTIONS => {
                // RFC 8200 §4.1: hop-by-hop options may only follow the fixed
                // header; anywhere else the Next Header value is treated as
                // unrecognised (Linux does the same).
                if protocol == ext::HOP_BY_HOP && at != HEADER_LEN && mode == Walk::Deliver {
                    return Err(Ipv6Drop::answered(
                        WireError::Malformed,
                        ParameterProblem::at(
                            parameter_problem::UNRECOGNIZED_NEXT_HEADER,
                            next_header_offset,
                        ),
                    ));
                }
                let len = options_header_len(bytes, at, end)?;
                if mode == Walk::Deliver {
                    check_options(bytes, at + 2, at + len, dst)?;
                }
                len
            }
            ext::ROUTING => {
                let header = bytes.get(at..at + 4).filter(|_| at + 4 <= end);
                let header = header.ok_or(WireError::Truncated)?;
                let len = (usize::from(header[1]) + 1) * 8;
                if at + len > end {
                    return Err(WireError::Truncated.into());
                }
                let segments_left = header[3];
                // RFC 8200 §4.4: with Segments Left zero an unrecognised
                // routing type is ignored; otherwise the packet is discarded
                // with a Parameter Problem (code 0) pointing at the type. A
                // host recognises none (type 0 is deprecated, RFC 5095).
                if segments_left != 0 && mode == Walk::Deliver {
                    return Err(Ipv6Drop::answered(
                        WireError::Unsupported,
                        ParameterProblem::at(parameter_problem::ERRONEOUS_HEADER_FIELD, at + 2),
                    ));
                }
                len
            }
            ext::FRAGMENT => {
                if at + FRAGMENT_HEADER_LEN > end {
                    return Err(WireError::Truncated.into());
                }
                let word = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]);
                let (offset, more) = (word >> 3, word & 1 != 0);
                // RFC 6946 §4: an "atomic fragment" (offset 0, M clear) is a
                // whole packet and is processed in isolation. Anything else is
                // a piece of a larger packet: tcpd does not reassemble.
                if offset != 0 || more {
                    return Err(WireError::Fragment.into());
                }
                FRAGMENT_HEADER_LEN
            }
            // RFC 8200 §4.7: nothing follows; bytes after it are ignored.
            ext::NO_NEXT_HEADER => return Err(WireError::Unsupported.into()),
            _ => {
                return Ok(ChainEnd {
                    protocol,
                    offset: at,
                    next_header_offset,
                });
            }
        };
        next_header_offset = at;
        protocol = bytes[at];
        at += header_len;
    }
}

/// Length of the hop-by-hop or destination options header at `at`
/// (RFC 8200 §4.3/§4.6: 8-octet units, not counting the first 8).
fn options_header_len(bytes: &[u8], at: usize, end: usize) -> Result<usize, Ipv6Drop> {
    if at + 2 > end {
        return Err(WireError::Truncated.into());
    }
    let len = (usize::from(bytes[at + 1]) + 1) * 8;
    if at + len > end {
        return Err(WireError::Truncated.into());
    }
    Ok(len)
}

/// Processes the TLV-encoded options in `bytes[start..end]` (RFC 8200 §4.2).
fn check_options(bytes: &[u8], start: usize, end: usize, dst: Ipv6Addr) -> Result<(), Ipv6Drop> {
    let mut at = start;
    while at < end {
        let kind = bytes[at];
        if kind == option::PAD1 {
            at += 1;
            continue;
        }
        // Every other option has a length byte; the option must fit.
        if at + 2 > end || at + 2 + usize::from(bytes[at + 1]) > end {
            return Err(Ipv6Drop::answered(
                WireError::Malformed,
                ParameterProblem::at(parameter_problem::ERRONEOUS_HEADER_FIELD, at + 1),
            ));
        }
        let len = 2 + usize::from(bytes[at + 1]);
        if kind != option::PADN {
            // RFC 8200 §4.2: the two high-order bits of an unrecognised
            // option's type say what to do. tcpd recognises only padding (a
            // host has no use for router alert; the jumbo payload option is
            // not used on links with a 16-bit payload length).
            let problem = ParameterProblem::at(parameter_problem::UNRECOGNIZED_OPTION, at);
            match kind >> 6 {
                0b00 => {}
                0b01 => return Err(WireError::Unsupported.into()),
                0b10 => return Err(Ipv6Drop::answered(WireError::Unsupported, problem)),
                _ if dst.is_multicast() => return Err(WireError::Unsupported.into()),
                _ => return Err(Ipv6Drop::answered(WireError::Unsupported, problem)),
            }
        }
        at += len;
    }
    Ok(())
}

/// The upper-layer header found in a packet quoted by an ICMPv6 error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotedChain {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header in the quote.
    pub offset: usize,
}

/// Walks a quoted (possibly truncated) packet to its upper-layer header.
/// The quote's payload length is not trusted: the quote is cut short by design.
pub(crate) fn walk_quote(quote: &[u8]) -> Result<QuotedChain, WireError> {
    if quote.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    if quote[field::VER_TC_FLOW] >> 4 != 6 {
        return Err(WireError::Malformed);
    }
    let dst = address_at(quote, field::DST);
    let end = walk(quote, quote.len(), dst, Walk::Quote).map_err(|drop| drop.reason)?;
    Ok(QuotedChain {
        src: address_at(quote, field::SRC),
        dst,
        protocol: IpProtocol::from(end.protocol),
        offset: end.offset,
    })
}

impl Ipv6Repr {
    /// Parses the fixed header and walks the extension headers (RFC 8200 §4).
    /// Returns the header with the upper-layer protocol, the upper-layer bytes
    /// (link padding excluded) and where the naming Next Header field is.
    pub fn parse(packet: &[u8]) -> Result<Ipv6Parsed<'_>, Ipv6Drop> {
        let view = Ipv6Packet::new_checked(packet)?;
        let end = HEADER_LEN + view.payload_len();
        let dst = view.dst();
        let chain = walk(packet, end, dst, Walk::Deliver)?;
        let repr = Ipv6Repr {
            src: view.src(),
            dst,
            next_header: IpProtocol::from(chain.protocol),
            hop_limit: view.hop_limit(),
            traffic_class: view.traffic_class(),
            flow_label: view.flow_label(),
            payload_len: end - chain.offset,
        };
        Ok(Ipv6Parsed {
            repr,
            payload: &packet[chain.offset..end],
            next_header_offset: chain.next_header_offset,
        })
    }

    /// Bytes the header takes when emitted (no extension headers).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte fixed header into `buf[..40]`, with `next_header`
    /// as its Next Header (no extension headers).
    ///
    /// Panics if `buf` is shorter than 40 bytes (a caller bug). A
    /// `payload_len` beyond 65535 is a caller bug too (tcpd sends no
    /// jumbograms); the field is then clamped. Flow label bits above 20 are
    /// dropped.
    pub fn emit(&self, buf: &mut [u8]) {
        assert!(
            buf.len() >= HEADER_LEN,
            "IPv6 emit buffer shorter than the header"
        );
        debug_assert!(self.payload_len <= usize::from(u16::MAX));
        let header = &mut buf[..HEADER_LEN];
        let first_word = (6u32 << 28)
            | (u32::from(self.traffic_class) << 20)
            | (self.flow_label & MAX_FLOW_LABEL);
        header[field::VER_TC_FLOW..field::VER_TC_FLOW + 4]
            .copy_from_slice(&first_word.to_be_bytes());
        let payload_len = u16::try_from(self.payload_len).unwrap_or(u16::MAX);
        header[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2]
            .copy_from_slice(&payload_len.to_be_bytes());
        header[field::NEXT_HEADER] = u8::from(self.next_header);
        header[field::HOP_LIMIT] = self.hop_limit;
        header[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        header[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repr(next_header: IpProtocol, payload_len: usize) -> Ipv6Repr {
        Ipv6Repr {
            src: "fd00:77::1".parse().unwrap(),
            dst: "fd00:77::2".parse().unwrap(),
            next_header,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x12345,
            payload_len,
        }
    }

    /// A packet whose fixed header names `first` and whose payload is `chain`.
    fn packet(first: u8, chain: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_LEN + chain.len()];
        repr(IpProtocol::from(first), chain.len()).emit(&mut bytes);
        bytes[HEADER_LEN..].copy_from_slice(chain);
        bytes
    }

    /// An 8-byte options header naming `next` holding one option `kind`
    /// with `data_len` bytes of data, padded with PadN/Pad1.
    fn options_header(next: u8, kind: u8, data_len: u8) -> Vec<u8> {
        let mut h = vec![next, 0, kind, data_len];
        h.extend(std::iter::repeat_n(0, usize::from(data_len)));
        while h.len() % 8 != 0 {
            h.push(option::PAD1);
        }
        h[1] = u8::try_from(h.len() / 8 - 1).unwrap();
        h
    }

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    #[test]
    fn header_fields_round_trip() {
        let r = Ipv6Repr {
            traffic_class: 0xb8,
            ..repr(IpProtocol::Tcp, 3)
        };
        let mut bytes = vec![0u8; r.buffer_len()];
        r.emit(&mut bytes);
        bytes[HEADER_LEN..].copy_from_slice(b"abc");
        assert_eq!(&bytes[..4], &[0x6b, 0x81, 0x23, 0x45]);
        let parsed = Ipv6Repr::parse(&bytes).unwrap();
        assert_eq!(parsed.repr, r);
        assert_eq!(parsed.payload, b"abc");
        assert_eq!(parsed.next_header_offset, field::NEXT_HEADER);
        let view = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (view.traffic_class(), view.flow_label(), view.hop_limit()),
            (0xb8, 0x12345, 64)
        );
    }

    #[test]
    fn link_padding_is_ignored() {
        let mut bytes = packet(TCP, b"data");
        bytes.extend_from_slice(&[0xee; 9]);
        assert_eq!(Ipv6Repr::parse(&bytes).unwrap().payload, b"data");
    }

    #[test]
    fn rejects_bad_fixed_headers() {
        let good = packet(TCP, b"xy");
        let mut v4 = good.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Repr::parse(&v4).unwrap_err().reason,
            WireError::Malformed
        );
        let mut long = good.clone();
        long[5] = 3;
        assert_eq!(
            Ipv6Repr::parse(&long).unwrap_err().reason,
            WireError::Truncated
        );
        for len in 0..good.len() {
            assert!(Ipv6Repr::parse(&good[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn skips_padding_options_and_routing_with_no_segments_left() {
        let mut chain = options_header(ext::ROUTING, option::PADN, 2);
        // Routing header, type 0, segments left 0: ignored (RFC 8200 §4.4).
        chain.extend_from_slice(&[ext::DESTINATION_OPTIONS, 0, 0, 0, 0, 0, 0, 0]);
        chain.extend_from_slice(&options_header(TCP, option::PADN, 4));
        let first_at = HEADER_LEN;
        let dest_at = first_at + 16;
        chain.extend_from_slice(b"tcp header");
        let bytes = packet(ext::HOP_BY_HOP, &chain);
        let parsed = Ipv6Repr::parse(&bytes).unwrap();
        assert_eq!(parsed.repr.next_header, IpProtocol::Tcp);
        assert_eq!(parsed.payload, b"tcp header");
        assert_eq!(parsed.repr.payload_len, 10);
        assert_eq!(parsed.next_header_offset, dest_at);
    }

    #[test]
    fn unknown_options_follow_their_action_bits() {
        // (option type, expected reason, expected Parameter Problem).
        let cases = [
            (0x1e, None, None),
            (0x5e, Some(WireError::Unsupported), None),
            (0x9e, Some(WireError::Unsupported), Some(HEADER_LEN + 2)),
            (0xde, Some(WireError::Unsupported), Some(HEADER_LEN + 2)),
        ];
        for (kind, reason, pointer) in cases {
            let mut chain = options_header(TCP, kind, 3);
            chain.extend_from_slice(b"seg");
            let bytes = packet(ext::DESTINATION_OPTIONS, &chain);
            match (Ipv6Repr::parse(&bytes), reason) {
                (Ok(parsed), None) => assert_eq!(parsed.payload, b"seg"),
                (Err(drop), Some(reason)) => {
                    assert_eq!(drop.reason, reason, "option {kind:#x}");
                    assert_eq!(
                        drop.problem,
                        pointer.map(|p| ParameterProblem::at(
                            parameter_problem::UNRECOGNIZED_OPTION,
                            p
                        )),
                        "option {kind:#x}"
                    );
                }
                (other, _) => panic!("option {kind:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn action_11_is_silent_for_multicast_destinations() {
        let mut chain = options_header(TCP, 0xde, 3);
        chain.extend_from_slice(b"seg");
        let mut bytes = packet(ext::DESTINATION_OPTIONS, &chain);
        let multicast: Ipv6Addr = "ff02::1".parse().unwrap();
        bytes[field::DST..field::DST + 16].copy_from_slice(&multicast.octets());
        let drop = Ipv6Repr::parse(&bytes).unwrap_err();
        assert_eq!(drop, Ipv6Drop::from(WireError::Unsupported));
    }

    #[test]
    fn an_option_overrunning_its_header_is_an_erroneous_field() {
        let mut chain = options_header(TCP, option::PADN, 2);
        chain[3] = 9; // PadN claiming 9 bytes in a 6-byte space.
        let bytes = packet(ext::HOP_BY_HOP, &chain);
        let drop = Ipv6Repr::parse(&bytes).unwrap_err();
        assert_eq!(drop.reason, WireError::Malformed);
        assert_eq!(
            drop.problem,
            Some(ParameterProblem::at(
                parameter_problem::ERRONEOUS_HEADER_FIELD,
                HEADER_LEN + 3
            ))
        );
    }

    #[test]
    fn hop_by_hop_after_another_header_is_unrecognized() {
        let mut chain = options_header(ext::HOP_BY_HOP, option::PADN, 2);
        chain.extend_from_slice(&options_header(TCP, option::PADN, 2));
        let bytes = packet(ext::DESTINATION_OPTIONS, &chain);
        let drop = Ipv6Repr::parse(&bytes).unwrap_err();
        assert_eq!(
            drop.problem,
            Some(ParameterProblem::at(
                parameter_problem::UNRECOGNIZED_NEXT_HEADER,
                HEADER_LEN
            ))
        );
    }

    #[test]
    fn routing_with_segments_left_points_at_the_type() {
        let chain = [TCP, 0, 4, 1, 0, 0, 0, 0];
        let bytes = packet(ext::ROUTING, &chain);
        let drop = Ipv6Repr::parse(&bytes).unwrap_err();
        assert_eq!(
            drop.problem,
            Some(ParameterProblem::at(
                parameter_problem::ERRONEOUS_HEADER_FIELD,
                HEADER_LEN + 2
            ))
        );
    }

    #[test]
    fn fragments_are_rejected_but_atomic_fragments_pass() {
        let mut atomic = vec![TCP, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        atomic.extend_from_slice(b"whole");
        let parsed_bytes = packet(ext::FRAGMENT, &atomic);
        let parsed = Ipv6Repr::parse(&parsed_bytes).unwrap();
        assert_eq!(parsed.payload, b"whole");
        assert_eq!(parsed.next_header_offset, HEADER_LEN);
        for word in [0x0001u16, 0x0008, 0xfff9] {
            let mut frag = atomic.clone();
            frag[2..4].copy_from_slice(&word.to_be_bytes());
            let bytes = packet(ext::FRAGMENT, &frag);
            assert_eq!(
                Ipv6Repr::parse(&bytes).unwrap_err(),
                Ipv6Drop::from(WireError::Fragment),
                "word {word:#x}"
            );
        }
    }

    #[test]
    fn no_next_header_is_dropped_silently() {
        let bytes = packet(ext::NO_NEXT_HEADER, b"ignored");
        assert_eq!(
            Ipv6Repr::parse(&bytes).unwrap_err(),
            Ipv6Drop::from(WireError::Unsupported)
        );
    }

    #[test]
    fn unknown_upper_layer_is_reported_with_its_pointer() {
        let mut chain = options_header(UDP, option::PADN, 2);
        chain.extend_from_slice(b"udp");
        let bytes = packet(ext::DESTINATION_OPTIONS, &chain);
        let parsed = Ipv6Repr::parse(&bytes).unwrap();
        assert_eq!(parsed.repr.next_header, IpProtocol::Other(UDP));
        assert_eq!(
            parsed.unrecognized_next_header(),
            ParameterProblem::at(parameter_problem::UNRECOGNIZED_NEXT_HEADER, HEADER_LEN)
        );
    }

    #[test]
    fn truncated_extension_headers_fail() {
        let mut chain = options_header(TCP, option::PADN, 10);
        chain.extend_from_slice(b"seg");
        let whole = packet(ext::HOP_BY_HOP, &chain);
        for cut in HEADER_LEN..whole.len() - 3 {
            let mut bytes = whole[..cut].to_vec();
            let len = u16::try_from(cut - HEADER_LEN).unwrap();
            bytes[4..6].copy_from_slice(&len.to_be_bytes());
            assert!(Ipv6Repr::parse(&bytes).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn quotes_are_walked_without_trusting_their_length() {
        let mut chain = options_header(TCP, option::PADN, 2);
        chain.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 1, 2, 3, 4]);
        let mut quote = packet(ext::DESTINATION_OPTIONS, &chain);
        quote[4..6].copy_from_slice(&1400u16.to_be_bytes());
        let walked = walk_quote(&quote).unwrap();
        assert_eq!(walked.protocol, IpProtocol::Tcp);
        assert_eq!(walked.offset, HEADER_LEN + 8);
        assert_eq!(walked.src, repr(IpProtocol::Tcp, 0).src);
    }

    fn arb_repr() -> impl Strategy<Value = Ipv6Repr> {
        (
            any::<u128>(),
            any::<u128>(),
            prop_oneof![Just(6u8), Just(58u8), Just(17u8), 61u8..=255],
            any::<u8>(),
            any::<u8>(),
            0u32..=MAX_FLOW_LABEL,
            0usize..2000,
        )
            .prop_map(|(src, dst, nh, hop_limit, tc, flow_label, len)| Ipv6Repr {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                next_header: IpProtocol::from(nh),
                hop_limit,
                traffic_class: tc,
                flow_label,
                payload_len: len,
            })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(repr in arb_repr()) {
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut buf);
            let parsed = Ipv6Repr::parse(&buf).unwrap();
            prop_assert_eq!(parsed.repr, repr);
            prop_assert_eq!(parsed.payload.len(), repr.payload_len);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ipv6Repr::parse(&bytes);
            let _ = walk_quote(&bytes);
        }

        #[test]
        fn arbitrary_chains_never_panic(
            first in prop_oneof![Just(0u8), Just(43), Just(44), Just(59), Just(60), any::<u8>()],
            chain in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(6), Just(43), Just(44), Just(60), any::<u8>()],
                0..120,
            ),
            claimed in 0u16..200,
        ) {
            let mut bytes = packet(first, &chain);
            bytes[4..6].copy_from_slice(&claimed.to_be_bytes());
            if let Ok(parsed) = Ipv6Repr::parse(&bytes) {
                prop_assert!(parsed.payload.len() <= chain.len());
                prop_assert!(parsed.next_header_offset < HEADER_LEN + chain.len());
            }
            let _ = walk_quote(&bytes);
        }
    }
}
