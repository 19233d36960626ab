//! The virtio-net header (virtio 1.2 §5.1.6, `struct virtio_net_hdr`, the
//! 10-byte legacy layout) that a TUN opened with `IFF_VNET_HDR` puts before
//! every packet in both directions, and the software fallbacks of the
//! offloads it describes (checksum completion, TCP segmentation).
//!
//! What the header says:
//! - `NEEDS_CSUM`: the transport checksum is not computed. The checksum field
//!   at `csum_start + csum_offset` holds the pseudo-header sum (not
//!   complemented); the checksum is the complement of the one's-complement sum
//!   of everything from `csum_start` to the end (virtio 1.2 §5.1.6.2).
//! - `DATA_VALID` (receive only): the kernel verified the checksum.
//! - `gso_type` TCPV4/TCPV6 with `gso_size`: a TCP "super-segment" to be cut
//!   into `gso_size`-byte payloads (the kernel's tcp_gso_segment: same
//!   header, sequence numbers advanced, FIN/PSH only on the last piece, CWR
//!   only on the first, IPv4 ident incremented per piece).
//!
//! Invariants: [`VirtioNetRepr::parse`] only returns a header whose checksum
//! offsets and GSO size are usable on the packet that follows it; anything
//! else is a [`WireError`], never a panic. Fields are in native byte order:
//! the legacy header is host-endian (Linux's tun without `TUNSETVNETLE`).

use crate::wire::WireError;
use crate::wire::checksum;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6;
use crate::wire::tcp::{self, TcpSegment};

/// Bytes of the legacy `struct virtio_net_hdr` (TUNSETVNETHDRSZ's default).
pub const HEADER_LEN: usize = 10;
/// The largest packet a super-segment may be (the IPv4 total length field).
pub const MAX_GSO_PACKET: usize = 65535;

/// `flags` bits (virtio 1.2 §5.1.6).
mod flag {
    pub const NEEDS_CSUM: u8 = 1;
    pub const DATA_VALID: u8 = 2;
    pub const RSC_INFO: u8 = 4;
}

/// `gso_type` values (virtio 1.2 §5.1.6) and the ECN bit.
mod gso {
    pub const NONE: u8 = 0;
    pub const TCPV4: u8 = 1;
    pub const UDP: u8 = 3;
    pub const TCPV6: u8 = 4;
    pub const UDP_L4: u8 = 5;
    pub const ECN: u8 = 0x80;
}

/// Field offsets (virtio 1.2 §5.1.6, legacy layout without `num_buffers`).
mod field {
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: usize = 2;
    pub const GSO_SIZE: usize = 4;
    pub const CSUM_START: usize = 6;
    pub const CSUM_OFFSET: usize = 8;
}

/// Where the transport checksum stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// Complete in the packet: a receiver verifies it.
    #[default]
    Complete,
    /// Verified by the kernel already (`DATA_VALID`, receive only).
    Verified,
    /// Not computed (`NEEDS_CSUM`): the field at `start + offset` holds the
    /// pseudo-header sum; the bytes came from the local kernel, untouched.
    Partial { start: u16, offset: u16 },
}

/// Which segmentation a super-segment asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GsoKind {
    TcpV4,
    TcpV6,
}

/// A super-segment's segmentation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gso {
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS the sender used); never 0.
    pub size: u16,
    /// Bytes of IP + TCP header (a hint; the fallbacks read the headers).
    pub hdr_len: u16,
    /// The sender set CWR on the first segment (ECN).
    pub ecn: bool,
}

/// A parsed virtio-net header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VirtioNetRepr {
    pub checksum: Checksum,
    pub gso: Option<Gso>,
}

impl VirtioNetRepr {
    /// A plain packet with its checksum complete (no offload).
    pub const PLAIN: VirtioNetRepr = VirtioNetRepr {
        checksum: Checksum::Complete,
        gso: None,
    };

    /// Splits `bytes` into the header and the packet after it, checking the
    /// header against that packet: known flags and GSO types only, a GSO size
    /// above zero, checksum offsets inside the packet.
    pub fn parse(bytes: &[u8]) -> Result<(VirtioNetRepr, &[u8]), WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let (header, packet) = bytes.split_at(HEADER_LEN);
        let read_u16 = |at: usize| u16::from_ne_bytes([header[at], header[at + 1]]);
        let flags = header[field::FLAGS];
        if flags & !(flag::NEEDS_CSUM | flag::DATA_VALID | flag::RSC_INFO) != 0 {
            return Err(WireError::Malformed);
        }
        let checksum = if flags & flag::NEEDS_CSUM != 0 {
            let start = read_u16(field::CSUM_START);
            let offset = read_u16(field::CSUM_OFFSET);
            // The 2-byte field must lie inside the packet.
            if usize::from(start) + usize::from(offset) + 2 > packet.len() {
                return Err(WireError::Malformed);
            }
            Checksum::Partial { start, offset }
        } else if flags & flag::DATA_VALID != 0 {
            Checksum::Verified
        } else {
            Checksum::Complete
        };
        let gso_type = header[field::GSO_TYPE];
        let ecn = gso_type & gso::ECN != 0;
        let kind = match gso_type & !gso::ECN {
            gso::NONE if !ecn => None,
            gso::TCPV4 => Some(GsoKind::TcpV4),
            gso::TCPV6 => Some(GsoKind::TcpV6),
            gso::UDP | gso::UDP_L4 => return Err(WireError::Unsupported),
            _ => return Err(WireError::Malformed),
        };
        let gso = match kind {
            None => None,
            Some(kind) => {
                let size = read_u16(field::GSO_SIZE);
                if size == 0 {
                    return Err(WireError::Malformed);
                }
                Some(Gso {
                    kind,
                    size,
                    hdr_len: read_u16(field::HDR_LEN),
                    ecn,
                })
            }
        };
        Ok((VirtioNetRepr { checksum, gso }, packet))
    }

    /// Writes the header into `buf[..HEADER_LEN]`. `Verified` is a receive
    /// flag and is written as a complete checksum.
    /// Panics if `buf` is shorter than [`HEADER_LEN`] (a caller bug).
    pub fn emit(&self, buf: &mut [u8]) {
        let header = &mut buf[..HEADER_LEN];
        header.fill(0);
        if let Checksum::Partial { start, offset } = self.checksum {
            header[field::FLAGS] = flag::NEEDS_CSUM;
            header[field::CSUM_START..field::CSUM_START + 2].copy_from_slice(&start.to_ne_bytes());
            header[field::CSUM_OFFSET..field::CSUM_OFFSET + 2]
                .copy_from_slice(&offset.to_ne_bytes());
        }
        if let Some(g) = self.gso {
            let kind = match g.kind {
                GsoKind::TcpV4 => gso::TCPV4,
                GsoKind::TcpV6 => gso::TCPV6,
            };
            header[field::GSO_TYPE] = kind | if g.ecn { gso::ECN } else { 0 };
            header[field::HDR_LEN..field::HDR_LEN + 2].copy_from_slice(&g.hdr_len.to_ne_bytes());
            header[field::GSO_SIZE..field::GSO_SIZE + 2].copy_from_slice(&g.size.to_ne_bytes());
        }
    }
}

/// Completes a `NEEDS_CSUM` checksum in place (virtio 1.2 §5.1.6.2): the
/// complement of the sum from `start` to the end, the field included (it
/// holds the pseudo-header sum). Errors if the field lies outside `packet`.
pub fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> Result<(), WireError> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err(WireError::Malformed);
    }
    let sum = checksum::finish(checksum::sum(&packet[start..]));
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Cuts a TCP super-segment of either family (told apart by the version
/// field) into wire packets: [`segment_tcpv4`] or [`segment_tcpv6`].
pub fn segment_tcp(
    packet: &[u8],
    gso_size: u16,
    scratch: &mut Vec<u8>,
    emit: impl FnMut(&[u8]),
) -> Result<(), WireError> {
    if packet.first().is_some_and(|byte| byte >> 4 == 6) {
        segment_tcpv6(packet, gso_size, scratch, emit)
    } else {
        segment_tcpv4(packet, gso_size, scratch, emit)
    }
}

/// Cuts an IPv4 TCP super-segment into packets of at most `gso_size`
/// payload bytes each, with complete IPv4 and TCP checksums, as the kernel's
/// software GSO does: sequence numbers advance, FIN and PSH stay on the
/// last piece only, CWR on the first only, the IPv4 ident increments. Each
/// piece is built in `scratch` and passed to `emit`. A packet whose payload
/// fits one piece comes out as one packet (checksums completed). The IPv4
/// and TCP headers are read from the packet (the header's `hdr_len` is not
/// trusted).
pub fn segment_tcpv4(
    packet: &[u8],
    gso_size: u16,
    scratch: &mut Vec<u8>,
    emit: impl FnMut(&[u8]),
) -> Result<(), WireError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    if ip.protocol() != ipv4::IpProtocol::Tcp || ip.is_fragment() {
        return Err(WireError::Unsupported);
    }
    let ip_header_len = ip.header_len();
    let (ident, src, dst) = (ip.ident(), ip.src(), ip.dst());
    let pieces = Pieces {
        ip_header_len,
        end: ip.total_len(),
        gso_size,
    };
    pieces.cut(
        packet,
        scratch,
        |piece, i| {
            // IPv4: total length, ident (incremented per piece), checksum.
            let len = u16::try_from(piece.len()).map_err(|_| WireError::Malformed)?;
            piece[2..4].copy_from_slice(&len.to_be_bytes());
            let piece_ident = ident.wrapping_add(u16::try_from(i).unwrap_or(u16::MAX));
            piece[4..6].copy_from_slice(&piece_ident.to_be_bytes());
            piece[10..12].fill(0);
            let ip_sum = checksum::finish(checksum::sum(&piece[..ip_header_len]));
            piece[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            Ok(())
        },
        |tcp_len| checksum::pseudo_header(src, dst, tcp::PROTOCOL_TCP, tcp_len),
        emit,
    )
}

/// [`segment_tcpv4`] for IPv6 (what the kernel's GSO does for TCPV6): the
/// payload length is set per piece (IPv6 has no header checksum and no
/// ident); extension headers, if any, are copied into every piece (RFC 8200
/// §4: they belong to each packet).
pub fn segment_tcpv6(
    packet: &[u8],
    gso_size: u16,
    scratch: &mut Vec<u8>,
    emit: impl FnMut(&[u8]),
) -> Result<(), WireError> {
    let parsed = ipv6::Ipv6Repr::parse(packet).map_err(|drop| drop.reason)?;
    if parsed.repr.next_header != ipv4::IpProtocol::Tcp {
        return Err(WireError::Unsupported);
    }
    // The upper layer starts where the extension headers end.
    let ip_header_len = (parsed.payload.as_ptr() as usize).wrapping_sub(packet.as_ptr() as usize);
    let (src, dst) = (parsed.repr.src, parsed.repr.dst);
    let pieces = Pieces {
        ip_header_len,
        end: ip_header_len + parsed.payload.len(),
        gso_size,
    };
    pieces.cut(
        packet,
        scratch,
        |piece, _| {
            let payload_len = piece.len() - ipv6::HEADER_LEN;
            let len = u16::try_from(payload_len).map_err(|_| WireError::Malformed)?;
            piece[4..6].copy_from_slice(&len.to_be_bytes());
            Ok(())
        },
        |tcp_len| checksum::pseudo_header_v6(src, dst, tcp::PROTOCOL_TCP, tcp_len),
        emit,
    )
}

/// Where a super-segment's TCP header starts and its packet ends, and the
/// piece size: the family-independent half of GSO.
struct Pieces {
    ip_header_len: usize,
    end: usize,
    gso_size: u16,
}

impl Pieces {
    /// Builds each piece in `scratch` (IP headers, TCP header, its share of
    /// the payload), lets `fix_ip` set the IP header's per-piece fields,
    /// sets the TCP sequence number, flags and checksum (over `pseudo` of
    /// the TCP length), and passes the piece to `emit`.
    fn cut(
        &self,
        packet: &[u8],
        scratch: &mut Vec<u8>,
        fix_ip: impl Fn(&mut [u8], usize) -> Result<(), WireError>,
        pseudo: impl Fn(u32) -> u32,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), WireError> {
        let tcp_at = self.ip_header_len;
        let bytes = packet.get(tcp_at..self.end).ok_or(WireError::Truncated)?;
        let segment = TcpSegment::new_checked(bytes)?;
        let headers = tcp_at + segment.header_len();
        let payload = &packet[headers..self.end];
        let size = usize::from(self.gso_size.max(1));
        let flags = packet[tcp_at + tcp::FLAGS_OFFSET];
        let seq = segment.seq();
        let pieces = payload.len().div_ceil(size).max(1);
        for i in 0..pieces {
            let chunk = payload
                .get(i * size..((i + 1) * size).min(payload.len()))
                .unwrap_or(&[]);
            let last = i + 1 == pieces;
            scratch.clear();
            scratch.extend_from_slice(&packet[..headers]);
            scratch.extend_from_slice(chunk);
            fix_ip(scratch, i)?;
            // TCP: sequence number, flags, checksum.
            let piece_seq = seq + i * size;
            scratch[tcp_at + 4..tcp_at + 8].copy_from_slice(&piece_seq.raw().to_be_bytes());
            let mut piece_flags = flags;
            if !last {
                piece_flags &= !(tcp::TcpFlags::FIN | tcp::TcpFlags::PSH).bits();
            }
            if i > 0 {
                piece_flags &= !tcp::TcpFlags::CWR.bits();
            }
            scratch[tcp_at + tcp::FLAGS_OFFSET] = piece_flags;
            let tcp_len = u32::try_from(scratch.len() - tcp_at).unwrap_or(u32::MAX);
            scratch[tcp_at + tcp::CHECKSUM_OFFSET..tcp_at + tcp::CHECKSUM_OFFSET + 2].fill(0);
            let sum = checksum::finish(pseudo(tcp_len) + checksum::sum(&scratch[tcp_at..]));
            scratch[tcp_at + tcp::CHECKSUM_OFFSET..tcp_at + tcp::CHECKSUM_OFFSET + 2]
                .copy_from_slice(&sum.to_be_bytes());
            emit(scratch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::SeqNum;
    use crate::wire::{Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    fn header(
        flags: u8,
        gso_type: u8,
        hdr_len: u16,
        gso_size: u16,
        start: u16,
        off: u16,
    ) -> Vec<u8> {
        let mut h = vec![flags, gso_type];
        for v in [hdr_len, gso_size, start, off] {
            h.extend_from_slice(&v.to_ne_bytes());
        }
        h
    }

    /// An IPv4 TCP packet with `payload_len` bytes of counting payload.
    fn tcp_packet(payload_len: usize, flags: TcpFlags) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        let repr = TcpRepr {
            src_port: 5000,
            dst_port: 80,
            seq: SeqNum(1_000_000),
            ack: SeqNum(77),
            flags,
            window: 512,
            urgent: 0,
            options: TcpOptions {
                timestamp: Some((1, 2)),
                ..TcpOptions::default()
            },
            payload: &payload,
        };
        let ip = Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: crate::wire::IpProtocol::Tcp,
            ttl: 64,
            dont_fragment: true,
            payload_len: repr.buffer_len(),
        };
        let mut buf = vec![0u8; ip.buffer_len()];
        ip.emit(&mut buf, 7);
        repr.emit(&mut buf[20..], SRC, DST);
        buf
    }

    #[test]
    fn parses_what_the_kernel_sends() {
        // A 64 KiB TSO segment: NEEDS_CSUM, TCPV4, gso_size 1448.
        let mut bytes = header(1, 1, 52, 1448, 20, 16);
        bytes.extend(tcp_packet(2896, TcpFlags::ACK));
        let (repr, packet) = VirtioNetRepr::parse(&bytes).expect("valid");
        assert_eq!(packet.len(), bytes.len() - HEADER_LEN);
        assert_eq!(
            repr.checksum,
            Checksum::Partial {
                start: 20,
                offset: 16
            }
        );
        assert_eq!(
            repr.gso,
            Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1448,
                hdr_len: 52,
                ecn: false
            })
        );
        let mut out = [0u8; HEADER_LEN];
        repr.emit(&mut out);
        assert_eq!(&out[..], &bytes[..HEADER_LEN]);
    }

    #[test]
    fn rejects_bad_headers() {
        let packet = tcp_packet(100, TcpFlags::ACK);
        let with = |h: Vec<u8>| {
            let mut b = h;
            b.extend_from_slice(&packet);
            VirtioNetRepr::parse(&b).map(|(r, _)| r)
        };
        let n = u16::try_from(packet.len()).expect("small");
        assert_eq!(
            with(header(0, 1, 0, 0, 0, 0)),
            Err(WireError::Malformed),
            "gso_size 0"
        );
        assert_eq!(
            with(header(1, 0, 0, 0, n - 1, 0)),
            Err(WireError::Malformed),
            "csum_start"
        );
        assert_eq!(
            with(header(1, 0, 0, 0, 20, n)),
            Err(WireError::Malformed),
            "csum_offset"
        );
        assert_eq!(
            with(header(1, 0, 0, 0, u16::MAX, u16::MAX)),
            Err(WireError::Malformed)
        );
        assert_eq!(
            with(header(0x40, 0, 0, 0, 0, 0)),
            Err(WireError::Malformed),
            "flags"
        );
        assert_eq!(
            with(header(0, 3, 0, 1400, 0, 0)),
            Err(WireError::Unsupported),
            "UDP"
        );
        assert_eq!(
            with(header(0, 9, 0, 1400, 0, 0)),
            Err(WireError::Malformed),
            "type"
        );
        assert_eq!(
            with(header(0, 0x80, 0, 0, 0, 0)),
            Err(WireError::Malformed),
            "ECN alone"
        );
        assert_eq!(VirtioNetRepr::parse(&[0; 9]), Err(WireError::Truncated));
        assert_eq!(
            with(header(2, 0, 0, 0, 0, 0)).map(|r| r.checksum),
            Ok(Checksum::Verified)
        );
        assert!(
            with(header(1, 0, 0, 0, n - 2, 0)).is_ok(),
            "field at the very end"
        );
    }

    #[test]
    fn completes_a_partial_checksum() {
        let mut packet = tcp_packet(333, TcpFlags::ACK | TcpFlags::PSH);
        let good = packet.clone();
        let tcp_len = u32::try_from(packet.len() - 20).expect("small");
        // The field holds the folded pseudo-header sum, as Linux leaves it.
        let folded = u16::try_from(checksum::pseudo_header(SRC, DST, 6, tcp_len)).expect("folded");
        packet[36..38].copy_from_slice(&folded.to_be_bytes());
        complete_checksum(&mut packet, 20, 16).expect("in bounds");
        assert_eq!(packet, good);
        assert_eq!(
            complete_checksum(&mut packet, 20, 2000),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn segments_like_the_kernel() {
        let mss = 1000usize;
        let flags = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags::CWR;
        let packet = tcp_packet(2500, flags);
        let mut scratch = Vec::new();
        let mut pieces = Vec::new();
        segment_tcpv4(&packet, 1000, &mut scratch, |p| pieces.push(p.to_vec())).expect("ok");
        assert_eq!(pieces.len(), 3);
        let mut payload = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let (ip, seg) = Ipv4Repr::parse(piece).expect("IPv4 checksum verifies");
            let tcp = TcpRepr::parse(seg, ip.src, ip.dst).expect("TCP checksum verifies");
            assert_eq!(tcp.seq, SeqNum(1_000_000) + i * mss);
            assert_eq!(tcp.options.timestamp, Some((1, 2)), "options copied");
            assert_eq!(tcp.flags.fin(), i == 2);
            assert_eq!(tcp.flags.psh(), i == 2);
            assert_eq!(tcp.flags.contains(TcpFlags::CWR), i == 0);
            assert_eq!(u16::from_be_bytes([piece[4], piece[5]]), 7 + i as u16);
            payload.extend_from_slice(tcp.payload);
        }
        assert_eq!(payload, &packet[52..]);
        // A packet that fits one piece comes out whole.
        let small = tcp_packet(10, TcpFlags::ACK);
        let mut n = 0;
        segment_tcpv4(&small, 1000, &mut scratch, |p| {
            assert_eq!(p, &small[..]);
            n += 1;
        })
        .expect("ok");
        assert_eq!(n, 1);
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(
            header in proptest::collection::vec(any::<u8>(), HEADER_LEN),
            payload_len in 0usize..3000,
            gso_size in any::<u16>(),
        ) {
            let mut bytes = header;
            bytes.extend(tcp_packet(payload_len, TcpFlags::ACK));
            if let Ok((repr, packet)) = VirtioNetRepr::parse(&bytes) {
                let mut packet = packet.to_vec();
                if let Checksum::Partial { start, offset } = repr.checksum {
                    prop_assert!(complete_checksum(&mut packet, start, offset).is_ok());
                }
                if let Some(g) = repr.gso {
                    prop_assert!(g.size > 0);
                }
            }
            let mut scratch = Vec::new();
            let packet = tcp_packet(payload_len, TcpFlags::ACK);
            let mut total = 0;
            segment_tcpv4(&packet, gso_size, &mut scratch, |p| total += p.len() - 52)
                .expect("a valid packet segments");
            prop_assert_eq!(total, payload_len);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), gso in any::<u16>()) {
            let _ = VirtioNetRepr::parse(&bytes);
            let mut scratch = Vec::new();
            let _ = segment_tcpv4(&bytes, gso, &mut scratch, |_| {});
            let mut copy = bytes.clone();
            let _ = complete_checksum(&mut copy, gso, gso);
        }
    }
}
