//! ICMPv4 (RFC 792): echo request/reply, and destination unreachable (with
//! fragmentation-needed's next-hop MTU, RFC 1191 §4) quoting the IPv4 header
//! and first 8 bytes of the TCP header of the packet that caused it.
//! Checksum always verified.
//!
//! Invariant: an [`Icmpv4Packet`] only exists over at least the 8-byte
//! fixed header, so its accessors index in bounds. The quoted packet of an
//! error is untrusted twice over (it may have been rewritten on the way): it is
//! bounds-checked like any other header, but its own checksum is not
//! verified since only the ICMP checksum protects it here.

use crate::wire::WireError;
use crate::wire::checksum;
use crate::wire::ipv4::{self, IpProtocol};
use core::net::Ipv4Addr;

/// The fixed ICMP header: type, code, checksum, four type-specific bytes (RFC 792).
pub const HEADER_LEN: usize = 8;
/// Bytes of the offending datagram's payload quoted after its IP header (RFC 792, "64 bits").
pub const QUOTED_PAYLOAD_LEN: usize = 8;

/// Message types (RFC 792).
mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DESTINATION_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
}

/// Destination-unreachable code 4: fragmentation needed and DF set (RFC 792; MTU per RFC 1191 §4).
pub const CODE_FRAGMENTATION_NEEDED: u8 = 4;

/// A checked view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Checks that the fixed 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
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

    pub fn msg_type(&self) -> u8 {
        self.bytes()[0]
    }

    pub fn code(&self) -> u8 {
        self.bytes()[1]
    }

    /// The checksum field as on the wire.
    pub fn checksum(&self) -> u16 {
        self.read_u16(2)
    }

    /// Echo identifier (bytes 4-5 of an echo message).
    pub fn echo_ident(&self) -> u16 {
        self.read_u16(4)
    }

    /// Echo sequence number (bytes 6-7 of an echo message).
    pub fn echo_seq_no(&self) -> u16 {
        self.read_u16(6)
    }

    /// Next-hop MTU of a fragmentation-needed message (RFC 1191 §4: the low
    /// 16 bits of the formerly unused word; zero from pre-RFC 1191 routers).
    pub fn next_hop_mtu(&self) -> u16 {
        self.read_u16(6)
    }

    /// Everything after the fixed header: echo data, or the quoted datagram.
    pub fn data(&self) -> &[u8] {
        &self.bytes()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole message verifies (RFC 792).
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::sum(self.bytes()))
    }
}

/// What the quoted (offending) packet inside a destination-unreachable said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedHeader {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub src_port: u16,
    pub dst_port: u16,
    /// The quoted TCP sequence number (raw), to check it is in flight.
    pub seq: u32,
}

impl QuotedHeader {
    /// Parses the quoted IPv4 header (options skipped) and the first 8 bytes
    /// of its payload, which for TCP hold the ports and sequence number.
    ///
    /// The quoted datagram is cut short by design, so its total length and
    /// checksum are not checked; a quote shorter than its header plus 8 bytes
    /// is [`WireError::Truncated`].
    fn parse(quote: &[u8]) -> Result<QuotedHeader, WireError> {
        if quote.len() < ipv4::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if quote[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = usize::from(quote[0] & 0x0f) * 4;
        if header_len < ipv4::HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let transport = quote
            .get(header_len..header_len + QUOTED_PAYLOAD_LEN)
            .ok_or(WireError::Truncated)?;
        // A non-first fragment quotes the middle of a datagram, not its
        // transport header (RFC 792: the "first 64 bits" are of the datagram's data).
        let frag_offset = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff;
        if frag_offset != 0 {
            return Err(WireError::Unsupported);
        }
        Ok(QuotedHeader {
            src: Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]),
            dst: Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]),
            protocol: IpProtocol::from(quote[9]),
            src_port: u16::from_be_bytes([transport[0], transport[1]]),
            dst_port: u16::from_be_bytes([transport[2], transport[3]]),
            seq: u32::from_be_bytes([transport[4], transport[5], transport[6], transport[7]]),
        })
    }

    /// Writes a 20-byte IPv4 header and the 8 transport bytes into `buf[..28]`.
    /// The quoted header claims a 28-byte datagram with DF set and TTL 64.
    fn emit(&self, buf: &mut [u8]) {
        let header = ipv4::Ipv4Repr {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
            ttl: ipv4::DEFAULT_TTL,
            dont_fragment: true,
            payload_len: QUOTED_PAYLOAD_LEN,
        };
        header.emit(&mut buf[..ipv4::HEADER_LEN], 0);
        let transport = &mut buf[ipv4::HEADER_LEN..ipv4::HEADER_LEN + QUOTED_PAYLOAD_LEN];
        transport[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        transport[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        transport[4..8].copy_from_slice(&self.seq.to_be_bytes());
    }
}

/// The ICMPv4 messages the stack handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
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
    /// Type 3. `code` 4 is fragmentation needed, with `next_hop_mtu` (RFC 1191).
    DestinationUnreachable {
        code: u8,
        next_hop_mtu: u16,
        quoted: QuotedHeader,
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses and verifies the checksum; other types are `Unsupported`.
    ///
    /// `next_hop_mtu` is read only for code 4 and is zero otherwise (the
    /// field is unused by the other codes, RFC 792).
    pub fn parse(message: &'a [u8]) -> Result<Icmpv4Repr<'a>, WireError> {
        let view = Icmpv4Packet::new_checked(message)?;
        if !view.verify_checksum() {
            return Err(WireError::Checksum);
        }
        let data = &message[HEADER_LEN..];
        match view.msg_type() {
            msg_type::ECHO_REQUEST => Ok(Icmpv4Repr::EchoRequest {
                ident: view.echo_ident(),
                seq_no: view.echo_seq_no(),
                data,
            }),
            msg_type::ECHO_REPLY => Ok(Icmpv4Repr::EchoReply {
                ident: view.echo_ident(),
                seq_no: view.echo_seq_no(),
                data,
            }),
            msg_type::DESTINATION_UNREACHABLE => {
                let code = view.code();
                let next_hop_mtu = if code == CODE_FRAGMENTATION_NEEDED {
                    view.next_hop_mtu()
                } else {
                    0
                };
                Ok(Icmpv4Repr::DestinationUnreachable {
                    code,
                    next_hop_mtu,
                    quoted: QuotedHeader::parse(data)?,
                })
            }
            _ => Err(WireError::Unsupported),
        }
    }

    /// Bytes the message takes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv4Repr::DestinationUnreachable { .. } => {
                HEADER_LEN + ipv4::HEADER_LEN + QUOTED_PAYLOAD_LEN
            }
        }
    }

    /// Writes the message with checksum into `buf[..buffer_len()]`.
    /// Panics if `buf` is shorter (a caller bug).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        assert!(
            buf.len() >= len,
            "ICMPv4 emit buffer shorter than the message"
        );
        let out = &mut buf[..len];
        match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                out[0] = if matches!(self, Icmpv4Repr::EchoRequest { .. }) {
                    msg_type::ECHO_REQUEST
                } else {
                    msg_type::ECHO_REPLY
                };
                out[1] = 0;
                out[4..6].copy_from_slice(&ident.to_be_bytes());
                out[6..8].copy_from_slice(&seq_no.to_be_bytes());
                out[HEADER_LEN..].copy_from_slice(data);
            }
            Icmpv4Repr::DestinationUnreachable {
                code,
                next_hop_mtu,
                quoted,
            } => {
                out[0] = msg_type::DESTINATION_UNREACHABLE;
                out[1] = code;
                out[4..6].fill(0);
                let mtu = if code == CODE_FRAGMENTATION_NEEDED {
                    next_hop_mtu
                } else {
                    0
                };
                out[6..8].copy_from_slice(&mtu.to_be_bytes());
                quoted.emit(&mut out[HEADER_LEN..]);
            }
        }
        out[2..4].fill(0);
        let sum = checksum::finish(checksum::sum(out));
        out[2..4].copy_from_slice(&sum.to_be_bytes());
        len
    }
}

/// Whether `bytes` start with an IPv4 header that [`Ipv4Packet`] would accept;
/// used by tests to check quoted headers we emit are themselves well formed.
#[cfg(test)]
fn quoted_header_is_valid(bytes: &[u8]) -> bool {
    ipv4::Ipv4Packet::new_checked(bytes).is_ok_and(|p| p.verify_checksum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An echo request Linux 6.18 sent through a ping socket (ident chosen by
    /// the kernel, seq 7, 13 bytes of data: odd length).
    const LINUX_ECHO: [u8; 21] = [
        0x08, 0x00, 0x66, 0xf1, 0x44, 0x03, 0x00, 0x07, b'h', b'e', b'l', b'l', b'o', b',', b' ',
        b't', b'c', b'p', b'd', b'!', b'!',
    ];

    fn quoted() -> QuotedHeader {
        QuotedHeader {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(192, 0, 2, 9),
            protocol: IpProtocol::Tcp,
            src_port: 40000,
            dst_port: 443,
            seq: 0xdead_beef,
        }
    }

    /// A hand-assembled fragmentation-needed message (router 198.51.100.1
    /// reporting MTU 1400 for our 1500-byte TCP segment), checksum worked out
    /// by hand below.
    fn frag_needed_bytes() -> Vec<u8> {
        let mut m = vec![
            3, 4, 0, 0, 0, 0, 0x05, 0x78, // type 3 code 4, checksum, unused, MTU 1400
            0x45, 0x00, 0x05, 0xdc, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00,
            0x00, // quoted IPv4
            10, 0, 0, 1, 192, 0, 2, 9, // quoted src, dst
            0x9c, 0x40, 0x01, 0xbb, 0xde, 0xad, 0xbe, 0xef, // ports 40000 → 443, seq
        ];
        // Sum of the 16-bit words, quoted IP checksum left zero (not verified):
        // 0x0304 + 0x0578 + 0x4500 + 0x05dc + 0x1234 + 0x4000 + 0x4006
        // + 0x0a00 + 0x0001 + 0xc000 + 0x0209 + 0x9c40 + 0x01bb + 0xdead + 0xbeef
        // = 0x3_ed33 → folded 0xed36 → checksum 0x12c9.
        m[2] = 0x12;
        m[3] = 0xc9;
        m
    }

    #[test]
    fn parses_linux_echo_request() {
        let repr = Icmpv4Repr::parse(&LINUX_ECHO).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoRequest {
                ident: 0x4403,
                seq_no: 7,
                data: b"hello, tcpd!!",
            }
        );
        let mut out = [0u8; 21];
        assert_eq!(repr.emit(&mut out), 21);
        assert_eq!(out, LINUX_ECHO);
    }

    #[test]
    fn echo_reply_to_linux_request() {
        let Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } = Icmpv4Repr::parse(&LINUX_ECHO).unwrap()
        else {
            panic!("not an echo request");
        };
        let reply = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let mut out = [0u8; 21];
        reply.emit(&mut out);
        // Type 8 → 0 raises the checksum by exactly 0x0800 (RFC 1624 incremental update).
        assert_eq!(&out[..2], &[0, 0]);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 0x66f1 + 0x0800);
        assert_eq!(&out[4..], &LINUX_ECHO[4..]);
        assert_eq!(Icmpv4Repr::parse(&out).unwrap(), reply);
    }

    #[test]
    fn parses_fragmentation_needed() {
        let bytes = frag_needed_bytes();
        assert_eq!(
            Icmpv4Repr::parse(&bytes).unwrap(),
            Icmpv4Repr::DestinationUnreachable {
                code: CODE_FRAGMENTATION_NEEDED,
                next_hop_mtu: 1400,
                quoted: quoted(),
            }
        );
    }

    #[test]
    fn other_codes_carry_no_mtu() {
        let mut bytes = frag_needed_bytes();
        // Code 1 (host unreachable) with a stray value in the unused word.
        bytes[1] = 1;
        bytes[2..4].fill(0);
        let sum = checksum::finish(checksum::sum(&bytes));
        bytes[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            Icmpv4Repr::parse(&bytes).unwrap(),
            Icmpv4Repr::DestinationUnreachable {
                code: 1,
                next_hop_mtu: 0,
                quoted: quoted(),
            }
        );
    }

    #[test]
    fn quoted_ip_options_are_skipped() {
        let repr = Icmpv4Repr::DestinationUnreachable {
            code: 3,
            next_hop_mtu: 0,
            quoted: quoted(),
        };
        let mut plain = [0u8; 36];
        repr.emit(&mut plain);
        // Insert one word of IP options (4 NOPs) into the quote, IHL 6.
        let mut bytes = plain[..28].to_vec();
        bytes.extend_from_slice(&[1, 1, 1, 1]);
        bytes.extend_from_slice(&plain[28..]);
        bytes[8] = 0x46;
        bytes[2..4].fill(0);
        let sum = checksum::finish(checksum::sum(&bytes));
        bytes[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Icmpv4Repr::parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn emitted_quote_is_a_valid_header() {
        let repr = Icmpv4Repr::DestinationUnreachable {
            code: CODE_FRAGMENTATION_NEEDED,
            next_hop_mtu: 1280,
            quoted: quoted(),
        };
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out), 36);
        assert!(quoted_header_is_valid(&out[8..]));
        assert_eq!(Icmpv4Repr::parse(&out).unwrap(), repr);
    }

    #[test]
    fn truncated_quote() {
        let bytes = frag_needed_bytes();
        for len in HEADER_LEN..bytes.len() {
            let mut cut = bytes[..len].to_vec();
            cut[2..4].fill(0);
            let sum = checksum::finish(checksum::sum(&cut));
            cut[2..4].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(
                Icmpv4Repr::parse(&cut),
                Err(WireError::Truncated),
                "length {len}"
            );
        }
    }

    #[test]
    fn every_truncation_fails() {
        for bytes in [LINUX_ECHO.to_vec(), frag_needed_bytes()] {
            for len in 0..bytes.len() {
                assert!(Icmpv4Repr::parse(&bytes[..len]).is_err(), "length {len}");
            }
        }
    }

    #[test]
    fn every_single_bit_flip_fails() {
        for bytes in [LINUX_ECHO.to_vec(), frag_needed_bytes()] {
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut bad = bytes.clone();
                    bad[i] ^= 1 << bit;
                    assert!(Icmpv4Repr::parse(&bad).is_err(), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn unsupported_types() {
        // Time exceeded (11), with a valid checksum.
        let mut bytes = frag_needed_bytes();
        bytes[0] = 11;
        bytes[1] = 0;
        bytes[2..4].fill(0);
        let sum = checksum::finish(checksum::sum(&bytes));
        bytes[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Icmpv4Repr::parse(&bytes), Err(WireError::Unsupported));
    }

    fn arb_repr(data: &[u8]) -> impl Strategy<Value = Icmpv4Repr<'_>> {
        let quoted = (
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
        )
            .prop_map(|(src, dst, proto, src_port, dst_port, seq)| QuotedHeader {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto),
                src_port,
                dst_port,
                seq,
            });
        prop_oneof![
            (any::<u16>(), any::<u16>()).prop_map(move |(ident, seq_no)| Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data
            }),
            (any::<u16>(), any::<u16>()).prop_map(move |(ident, seq_no)| Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data
            }),
            (any::<u8>(), any::<u16>(), quoted).prop_map(|(code, mtu, quoted)| {
                Icmpv4Repr::DestinationUnreachable {
                    code,
                    next_hop_mtu: if code == CODE_FRAGMENTATION_NEEDED {
                        mtu
                    } else {
                        0
                    },
                    quoted,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            (data, repr) in proptest::collection::vec(any::<u8>(), 0..600)
                .prop_flat_map(|data| {
                    let leaked: &'static [u8] = Vec::leak(data);
                    (Just(leaked), arb_repr(leaked))
                })
        ) {
            let _ = data;
            let mut buf = vec![0u8; repr.buffer_len()];
            prop_assert_eq!(repr.emit(&mut buf), repr.buffer_len());
            prop_assert_eq!(Icmpv4Repr::parse(&buf).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Icmpv4Repr::parse(&bytes);
        }

        #[test]
        fn arbitrary_quotes_never_panic(
            code: u8, quote in proptest::collection::vec(any::<u8>(), 0..80)
        ) {
            // Fix the checksum so the quoted-header parser is reached.
            let mut bytes = vec![3, code, 0, 0, 0, 0, 0, 0];
            bytes.extend_from_slice(&quote);
            let sum = checksum::finish(checksum::sum(&bytes));
            bytes[2..4].copy_from_slice(&sum.to_be_bytes());
            match Icmpv4Repr::parse(&bytes) {
                Ok(Icmpv4Repr::DestinationUnreachable { .. })
                | Err(WireError::Truncated | WireError::Malformed | WireError::Unsupported) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
