//! ICMPv6 (RFC 4443): echo request/reply, and the error messages that
//! matter to TCP — Destination Unreachable, Packet Too Big (the path MTU of
//! RFC 8201), Time Exceeded and Parameter Problem — each quoting the packet
//! that caused it. The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3)
//! and is always verified.
//!
//! Invariant: an [`Icmpv6Packet`] only exists over at least the 8-byte fixed
//! header, so its accessors index in bounds. The quoted packet is untrusted
//! twice over: it is walked with the same bounds checks as any packet, but
//! its own length field is not believed (quotes are cut short by design).

use crate::wire::WireError;
use crate::wire::checksum;
use crate::wire::ip::IpProtocol;
use crate::wire::ipv6::{self, MIN_MTU};
use core::net::Ipv6Addr;

/// The fixed header: type, code, checksum, four type-specific bytes (RFC 4443 §2.1).
pub const HEADER_LEN: usize = 8;
/// The most of the invoking packet an error may quote: "as much as possible
/// without the ICMPv6 packet exceeding the minimum IPv6 MTU" (RFC 4443 §2.4(c)).
pub const MAX_QUOTE_LEN: usize = MIN_MTU as usize - ipv6::HEADER_LEN - HEADER_LEN;

/// Message types (RFC 4443 §2.1: errors below 128, informational from 128).
mod msg_type {
    pub const DESTINATION_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Types below this are errors (RFC 4443 §2.1).
    pub const FIRST_INFORMATIONAL: u8 = 128;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// Destination Unreachable codes (RFC 4443 §3.1).
pub mod destination_unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMINISTRATIVELY_PROHIBITED: u8 = 1;
    pub const BEYOND_SCOPE: u8 = 2;
    pub const ADDRESS_UNREACHABLE: u8 = 3;
    pub const PORT_UNREACHABLE: u8 = 4;
    pub const SOURCE_POLICY_FAILED: u8 = 5;
    pub const REJECT_ROUTE: u8 = 6;
}

/// Parameter Problem codes (RFC 4443 §3.4).
pub mod parameter_problem {
    pub const ERRONEOUS_HEADER_FIELD: u8 = 0;
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    pub const UNRECOGNIZED_OPTION: u8 = 2;
}

/// The upper-layer protocol number of ICMPv6 in a pseudo-header (RFC 4443 §2.3).
const NEXT_HEADER: u8 = 58;

/// A checked view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Checks that the fixed 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv6Packet { buffer })
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

    /// The type-specific word (bytes 4-7): MTU, pointer, or unused.
    fn word(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    pub fn msg_type(&self) -> u8 {
        self.bytes()[0]
    }

    pub fn code(&self) -> u8 {
        self.bytes()[1]
    }

    /// Whether this is an error message (type below 128, RFC 4443 §2.1).
    pub fn is_error(&self) -> bool {
        self.msg_type() < msg_type::FIRST_INFORMATIONAL
    }

    /// The checksum field as on the wire.
    pub fn checksum(&self) -> u16 {
        self.read_u16(2)
    }

    pub fn echo_ident(&self) -> u16 {
        self.read_u16(4)
    }

    pub fn echo_seq_no(&self) -> u16 {
        self.read_u16(6)
    }

    /// The MTU of a Packet Too Big message (RFC 4443 §3.2).
    pub fn mtu(&self) -> u32 {
        self.word()
    }

    /// The pointer of a Parameter Problem message (RFC 4443 §3.4).
    pub fn pointer(&self) -> u32 {
        self.word()
    }

    /// Everything after the fixed header: echo data, or the invoking packet.
    pub fn data(&self) -> &[u8] {
        &self.bytes()[HEADER_LEN..]
    }

    /// Whether the checksum over the pseudo-header and message verifies (RFC 4443 §2.3).
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let bytes = self.bytes();
        let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        checksum::verifies(
            checksum::pseudo_header_v6(src, dst, NEXT_HEADER, length) + checksum::sum(bytes),
        )
    }
}

/// What a quoted TCP packet inside an ICMPv6 error said: enough to find the
/// connection (RFC 5927 §4.1 asks to check the quoted sequence number too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedHeader {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub protocol: IpProtocol,
    pub src_port: u16,
    pub dst_port: u16,
    /// The quoted TCP sequence number (raw).
    pub seq: u32,
}

impl QuotedHeader {
    /// Walks the invoking packet's extension headers to its upper layer and
    /// reads the first 8 bytes there (ports and sequence number for TCP).
    pub fn parse(invoking: &[u8]) -> Result<QuotedHeader, WireError> {
        let chain = ipv6::walk_quote(invoking)?;
        let transport = invoking
            .get(chain.offset..chain.offset + 8)
            .ok_or(WireError::Truncated)?;
        Ok(QuotedHeader {
            src: chain.src,
            dst: chain.dst,
            protocol: chain.protocol,
            src_port: u16::from_be_bytes([transport[0], transport[1]]),
            dst_port: u16::from_be_bytes([transport[2], transport[3]]),
            seq: u32::from_be_bytes([transport[4], transport[5], transport[6], transport[7]]),
        })
    }
}

/// The ICMPv6 messages the stack handles. Errors carry the invoking packet as
/// received (parse) or to be quoted (emit: cut to [`MAX_QUOTE_LEN`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Type 1; codes in [`destination_unreachable`].
    DestinationUnreachable { code: u8, invoking: &'a [u8] },
    /// Type 2: the next hop's MTU (RFC 4443 §3.2, RFC 8201).
    PacketTooBig { mtu: u32, invoking: &'a [u8] },
    /// Type 3: hop limit exceeded (code 0) or reassembly time exceeded (code 1).
    TimeExceeded { code: u8, invoking: &'a [u8] },
    /// Type 4; codes in [`parameter_problem`], `pointer` into the invoking packet.
    ParameterProblem {
        code: u8,
        pointer: u32,
        invoking: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a message that arrived from `src` to `dst`, checksum verified.
    /// Unknown types are `Unsupported` (RFC 4443 §2.4(a)/(b): unknown
    /// informational messages are discarded; unknown errors have no meaning
    /// for TCP).
    pub fn parse(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        message: &'a [u8],
    ) -> Result<Icmpv6Repr<'a>, WireError> {
        let view = Icmpv6Packet::new_checked(message)?;
        if !view.verify_checksum(src, dst) {
            return Err(WireError::Checksum);
        }
        let data = &message[HEADER_LEN..];
        let code = view.code();
        Ok(match view.msg_type() {
            msg_type::ECHO_REQUEST => Icmpv6Repr::EchoRequest {
                ident: view.echo_ident(),
                seq_no: view.echo_seq_no(),
                data,
            },
            msg_type::ECHO_REPLY => Icmpv6Repr::EchoReply {
                ident: view.echo_ident(),
                seq_no: view.echo_seq_no(),
                data,
            },
            msg_type::DESTINATION_UNREACHABLE => Icmpv6Repr::DestinationUnreachable {
                code,
                invoking: data,
            },
            msg_type::PACKET_TOO_BIG => Icmpv6Repr::PacketTooBig {
                mtu: view.mtu(),
                invoking: data,
            },
            msg_type::TIME_EXCEEDED => Icmpv6Repr::TimeExceeded {
                code,
                invoking: data,
            },
            msg_type::PARAMETER_PROBLEM => Icmpv6Repr::ParameterProblem {
                code,
                pointer: view.pointer(),
                invoking: data,
            },
            _ => return Err(WireError::Unsupported),
        })
    }

    /// The invoking packet of an error message; `None` for echo messages.
    pub fn invoking(&self) -> Option<&'a [u8]> {
        match *self {
            Icmpv6Repr::EchoRequest { .. } | Icmpv6Repr::EchoReply { .. } => None,
            Icmpv6Repr::DestinationUnreachable { invoking, .. }
            | Icmpv6Repr::PacketTooBig { invoking, .. }
            | Icmpv6Repr::TimeExceeded { invoking, .. }
            | Icmpv6Repr::ParameterProblem { invoking, .. } => Some(invoking),
        }
    }

    /// The message's body after the fixed header, quotes cut to [`MAX_QUOTE_LEN`].
    fn body(&self) -> &'a [u8] {
        match *self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => data,
            _ => {
                let invoking = self.invoking().unwrap_or_default();
                &invoking[..invoking.len().min(MAX_QUOTE_LEN)]
            }
        }
    }

    /// Bytes the message takes on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body().len()
    }

    /// Writes the message from `src` to `dst` with checksum into
    /// `buf[..buffer_len()]` and returns that length.
    /// Panics if `buf` is shorter (a caller bug).
    pub fn emit(&self, src: Ipv6Addr, dst: Ipv6Addr, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        assert!(
            buf.len() >= len,
            "ICMPv6 emit buffer shorter than the message"
        );
        let out = &mut buf[..len];
        let (kind, code, word) = match *self {
            Icmpv6Repr::EchoRequest { ident, seq_no, .. } => (
                msg_type::ECHO_REQUEST,
                0,
                u32::from(ident) << 16 | u32::from(seq_no),
            ),
            Icmpv6Repr::EchoReply { ident, seq_no, .. } => (
                msg_type::ECHO_REPLY,
                0,
                u32::from(ident) << 16 | u32::from(seq_no),
            ),
            Icmpv6Repr::DestinationUnreachable { code, .. } => {
                (msg_type::DESTINATION_UNREACHABLE, code, 0)
            }
            Icmpv6Repr::PacketTooBig { mtu, .. } => (msg_type::PACKET_TOO_BIG, 0, mtu),
            Icmpv6Repr::TimeExceeded { code, .. } => (msg_type::TIME_EXCEEDED, code, 0),
            Icmpv6Repr::ParameterProblem { code, pointer, .. } => {
                (msg_type::PARAMETER_PROBLEM, code, pointer)
            }
        };
        out[0] = kind;
        out[1] = code;
        out[2..4].fill(0);
        out[4..8].copy_from_slice(&word.to_be_bytes());
        out[HEADER_LEN..].copy_from_slice(self.body());
        let length = u32::try_from(len).unwrap_or(u32::MAX);
        let sum = checksum::finish(
            checksum::pseudo_header_v6(src, dst, NEXT_HEADER, length) + checksum::sum(out),
        );
        out[2..4].copy_from_slice(&sum.to_be_bytes());
        len
    }
}

/// Whether RFC 4443 §2.4(e) lets a node answer the packet from `src` to
/// `dst` with an ICMPv6 error. Not in response to: an ICMPv6 error message;
/// a packet to a multicast address (except Packet Too Big and Parameter
/// Problem code 2 for an option whose type's high bits are `10`, which the
/// caller signals with `multicast_exception`); a packet whose source does not
/// name a single node (unspecified or multicast). Rate limiting (§2.4(f)) is
/// the caller's.
pub fn error_permitted(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    invoking_is_icmp_error: bool,
    multicast_exception: bool,
) -> bool {
    !invoking_is_icmp_error
        && !src.is_unspecified()
        && !src.is_multicast()
        && (!dst.is_multicast() || multicast_exception)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::Ipv6Repr;
    use proptest::prelude::*;

    fn a() -> Ipv6Addr {
        "fd00:77::1".parse().unwrap()
    }

    fn b() -> Ipv6Addr {
        "fd00:77::2".parse().unwrap()
    }

    /// A hand-built echo request from fd00:77::1 to fd00:77::2 (ident
    /// 0x1c2b, seq 1, 11 bytes of data: odd length), checksum field zero; the
    /// tests fill it in with [`naive_checksum`], an independent RFC 1071 sum.
    fn echo_bytes() -> Vec<u8> {
        let mut m = vec![128, 0, 0, 0, 0x1c, 0x2b, 0x00, 0x01];
        m.extend_from_slice(b"hello, tcpd");
        m
    }

    /// The RFC 1071 sum of pseudo-header and message, 16 bits at a time.
    fn naive_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        bytes.extend_from_slice(message);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn echo_checksum_matches_an_independent_sum() {
        let mut m = echo_bytes();
        let expected = naive_checksum(a(), b(), &m);
        let repr = Icmpv6Repr::EchoRequest {
            ident: 0x1c2b,
            seq_no: 1,
            data: b"hello, tcpd",
        };
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(a(), b(), &mut out), m.len());
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), expected);
        m[2..4].copy_from_slice(&expected.to_be_bytes());
        assert_eq!(out, m);
        assert_eq!(Icmpv6Repr::parse(a(), b(), &m).unwrap(), repr);
        // The pseudo-header is covered: the same bytes to another host fail.
        let other: Ipv6Addr = "fd00:77::3".parse().unwrap();
        assert_eq!(
            Icmpv6Repr::parse(a(), other, &m[..]),
            Err(WireError::Checksum)
        );
    }

    /// An IPv6+TCP packet from b to a, port 443 → 40000, seq 0xdeadbeef,
    /// behind a destination options header.
    fn invoking_tcp() -> Vec<u8> {
        let mut chain = vec![6, 0, 1, 4, 0, 0, 0, 0];
        chain.extend_from_slice(&[0x01, 0xbb, 0x9c, 0x40, 0xde, 0xad, 0xbe, 0xef]);
        chain.extend_from_slice(&[0u8; 12]);
        let header = Ipv6Repr {
            src: b(),
            dst: a(),
            next_header: IpProtocol::Other(60),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 7,
            payload_len: chain.len(),
        };
        let mut packet = vec![0u8; header.buffer_len()];
        header.emit(&mut packet);
        packet[ipv6::HEADER_LEN..].copy_from_slice(&chain);
        packet
    }

    #[test]
    fn packet_too_big_round_trips_and_quotes_the_tcp_header() {
        let invoking = invoking_tcp();
        let repr = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            invoking: &invoking,
        };
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(b(), a(), &mut out);
        let parsed = Icmpv6Repr::parse(b(), a(), &out).unwrap();
        assert_eq!(parsed, repr);
        let quoted = QuotedHeader::parse(parsed.invoking().unwrap()).unwrap();
        assert_eq!(
            quoted,
            QuotedHeader {
                src: b(),
                dst: a(),
                protocol: IpProtocol::Tcp,
                src_port: 443,
                dst_port: 40000,
                seq: 0xdead_beef,
            }
        );
    }

    #[test]
    fn errors_quote_at_most_the_minimum_mtu() {
        let big = vec![0x60u8; 3000];
        let repr = Icmpv6Repr::ParameterProblem {
            code: parameter_problem::UNRECOGNIZED_NEXT_HEADER,
            pointer: 6,
            invoking: &big,
        };
        assert_eq!(
            ipv6::HEADER_LEN + repr.buffer_len(),
            usize::from(ipv6::MIN_MTU)
        );
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(a(), b(), &mut out);
        match Icmpv6Repr::parse(a(), b(), &out).unwrap() {
            Icmpv6Repr::ParameterProblem {
                code,
                pointer,
                invoking,
            } => {
                assert_eq!((code, pointer), (1, 6));
                assert_eq!(invoking, &big[..MAX_QUOTE_LEN]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_error_type_round_trips() {
        let invoking = invoking_tcp();
        let messages = [
            Icmpv6Repr::DestinationUnreachable {
                code: destination_unreachable::PORT_UNREACHABLE,
                invoking: &invoking,
            },
            Icmpv6Repr::TimeExceeded {
                code: 0,
                invoking: &invoking,
            },
            Icmpv6Repr::ParameterProblem {
                code: parameter_problem::ERRONEOUS_HEADER_FIELD,
                pointer: 42,
                invoking: &invoking,
            },
            Icmpv6Repr::EchoReply {
                ident: 1,
                seq_no: 2,
                data: &[],
            },
        ];
        for repr in messages {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(a(), b(), &mut out);
            assert_eq!(Icmpv6Repr::parse(a(), b(), &out).unwrap(), repr);
            let view = Icmpv6Packet::new_checked(&out[..]).unwrap();
            assert_eq!(view.is_error(), repr.invoking().is_some());
        }
    }

    #[test]
    fn unknown_types_and_bad_checksums_are_rejected() {
        let mut m = echo_bytes();
        let sum = naive_checksum(a(), b(), &m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut unknown = m.clone();
        unknown[0] = 200;
        let sum = naive_checksum(a(), b(), &{
            let mut z = unknown.clone();
            z[2..4].fill(0);
            z
        });
        unknown[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            Icmpv6Repr::parse(a(), b(), &unknown),
            Err(WireError::Unsupported)
        );
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                Icmpv6Repr::parse(a(), b(), &bad),
                Err(WireError::Checksum),
                "byte {i}"
            );
        }
        assert_eq!(
            Icmpv6Repr::parse(a(), b(), &m[..7]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn error_rules_of_rfc4443_2_4_e() {
        let multicast: Ipv6Addr = "ff02::1".parse().unwrap();
        assert!(error_permitted(a(), b(), false, false));
        assert!(!error_permitted(a(), b(), true, false));
        assert!(!error_permitted(Ipv6Addr::UNSPECIFIED, b(), false, false));
        assert!(!error_permitted(multicast, b(), false, false));
        assert!(!error_permitted(a(), multicast, false, false));
        assert!(error_permitted(a(), multicast, false, true));
    }

    proptest! {
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(repr) = Icmpv6Repr::parse(a(), b(), &bytes)
                && let Some(invoking) = repr.invoking()
            {
                let _ = QuotedHeader::parse(invoking);
            }
            let _ = QuotedHeader::parse(&bytes);
        }

        #[test]
        fn echo_round_trip(ident: u16, seq_no: u16, data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let repr = Icmpv6Repr::EchoRequest { ident, seq_no, data: &data };
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(a(), b(), &mut out);
            prop_assert_eq!(u16::from_be_bytes([out[2], out[3]]), {
                let mut z = out.clone();
                z[2..4].fill(0);
                naive_checksum(a(), b(), &z)
            });
            prop_assert_eq!(Icmpv6Repr::parse(a(), b(), &out).unwrap(), repr);
        }
    }
}
