//! pcapng from inside tcpd, written with the `pcap-file` crate: one section,
//! two interfaces, so Wireshark shows both points of view side by side:
//!
//! - interface 0, `tcpd-stack`: what the stack received (after the link
//!   impairer) and what it sent (before the impairer);
//! - interface 1, `tcpd-link`: what crossed the TUN device: read from it
//!   (before the impairer) and written to it (after the impairer).
//!
//! A packet the impairer dropped is on one interface only; a duplicated one
//! twice on the other; a delayed one later. Packets are raw IP, IPv4 or
//! IPv6 (link type 101, LINKTYPE_RAW), nanosecond timestamps (`if_tsresol` 9), the direction in each
//! packet's `epb_flags` (inbound = towards the stack). [`CaptureWriter`]
//! produces the bytes in chunks ([`CaptureWriter::take`]) so they can be
//! streamed; the first chunk carries the section and interface blocks.
//! Drops (packets the reader was too slow for) are reported in Interface
//! Statistics Blocks (`isb_ifdrop`). [`events_from_pcapng`] reads such a
//! file back as trace events (`tcpctl trace --replay FILE.pcapng`).

use crate::event::{Dir, Event, Kind, Segment};
use crate::peer::PeerModel;
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tcpd_stack::trace::SegmentHeader;
use tcpd_stack::wire::{IpProtocol, Ipv4Packet, Ipv6Repr, TcpOptions, TcpSegment};
use tcpd_stack::{SeqNum, TcpState};

/// Where a packet was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePoint {
    /// The stack's side of the impairer.
    Stack = 0,
    /// The TUN's side of the impairer.
    Link = 1,
}

/// Largest packet kept whole (the TUN MTU is at most 65535).
pub const SNAPLEN: u32 = 65535;
/// `epb_flags` direction bits (pcapng §4.3.1): 01 inbound, 10 outbound.
const FLAG_INBOUND: u32 = 0b01;
const FLAG_OUTBOUND: u32 = 0b10;
/// `if_tsresol` for nanoseconds (pcap-file writes EPB times in ns).
const NANOSECONDS: u8 = 9;

/// A pcapng stream being written into memory.
pub struct CaptureWriter {
    writer: PcapNgWriter<Vec<u8>>,
    /// Packets in the bytes not yet taken.
    pending_packets: u64,
}

fn interface(name: &str, description: &str) -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: SNAPLEN,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(description.to_string())),
            InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
        ],
    }
}

impl CaptureWriter {
    /// A new section with the two interfaces (the first chunk).
    pub fn new() -> CaptureWriter {
        // Writing the section header into a Vec cannot fail.
        #[allow(clippy::expect_used)]
        let mut writer = PcapNgWriter::new(Vec::new()).expect("writing to a Vec cannot fail");
        for block in [
            interface(
                "tcpd-stack",
                "tcpd's TCP/IP stack: received after, sent before the link impairer",
            ),
            interface(
                "tcpd-link",
                "tcpd's TUN device: read before, written after the link impairer",
            ),
        ] {
            let _ = writer.write_pcapng_block(block);
        }
        CaptureWriter {
            writer,
            pending_packets: 0,
        }
    }

    /// Adds one packet seen at `point` at `time` (since the Unix epoch);
    /// `inbound` is towards the stack.
    pub fn packet(&mut self, point: CapturePoint, inbound: bool, time: Duration, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let kept = &data[..data.len().min(SNAPLEN as usize)];
        let block = EnhancedPacketBlock {
            interface_id: point as u32,
            timestamp: time,
            original_len: len,
            data: Cow::Borrowed(kept),
            options: vec![EnhancedPacketOption::Flags(if inbound {
                FLAG_INBOUND
            } else {
                FLAG_OUTBOUND
            })],
        };
        if self.writer.write_pcapng_block(block).is_ok() {
            self.pending_packets += 1;
        }
    }

    /// Reports `dropped` packets (since the start) on both interfaces.
    pub fn statistics(&mut self, time: Duration, dropped: u64) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        for point in [CapturePoint::Stack, CapturePoint::Link] {
            let block = InterfaceStatisticsBlock {
                interface_id: point as u32,
                timestamp: nanos,
                options: vec![InterfaceStatisticsOption::IsbIfDrop(dropped)],
            };
            let _ = self.writer.write_pcapng_block(block);
        }
    }

    /// Bytes written since the last take.
    pub fn pending_bytes(&self) -> usize {
        self.writer.get_ref().len()
    }

    /// Packets written since the last take.
    pub fn pending_packets(&self) -> u64 {
        self.pending_packets
    }

    /// Takes the bytes written so far (a chunk of the stream).
    pub fn take(&mut self) -> Vec<u8> {
        self.pending_packets = 0;
        std::mem::take(self.writer.get_mut())
    }

    /// Forgets the bytes written since the last take (a dropped chunk);
    /// returns how many packets they held.
    pub fn discard(&mut self) -> u64 {
        self.writer.get_mut().clear();
        std::mem::take(&mut self.pending_packets)
    }
}

impl std::fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("pending_bytes", &self.pending_bytes())
            .field("pending_packets", &self.pending_packets)
            .finish()
    }
}

impl Default for CaptureWriter {
    fn default() -> Self {
        CaptureWriter::new()
    }
}

/// Which packets a capture keeps: all, or those to/from `host` and/or with
/// `port` on either side, and/or of one family. Text form: `host ADDRESS`
/// (IPv4 or IPv6), `port N`, `ip` or `ip6`, joined by `and`; empty keeps
/// everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    /// `Some(true)`: IPv6 only (`ip6`); `Some(false)`: IPv4 only (`ip`).
    pub ipv6: Option<bool>,
}

impl CaptureFilter {
    pub fn parse(text: &str) -> Result<CaptureFilter, String> {
        let mut filter = CaptureFilter::default();
        let words: Vec<&str> = text.split_whitespace().filter(|w| *w != "and").collect();
        let mut i = 0;
        while i < words.len() {
            match words[i] {
                "ip" | "ip4" => {
                    filter.ipv6 = Some(false);
                    i += 1;
                    continue;
                }
                "ip6" => {
                    filter.ipv6 = Some(true);
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let value = words
                .get(i + 1)
                .ok_or_else(|| format!("{:?} needs a value", words[i]))?;
            match words[i] {
                "host" => {
                    filter.host = Some(
                        value
                            .parse()
                            .map_err(|_| format!("{value:?} is not an IP address"))?,
                    )
                }
                "port" => {
                    filter.port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("{value:?} is not a port"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown filter word {other:?} (known: host ADDRESS, port N, ip, ip6, and)"
                    ));
                }
            }
            i += 2;
        }
        Ok(filter)
    }

    /// Whether `packet` (raw IPv4 or IPv6) passes. Malformed packets pass
    /// an empty filter only.
    pub fn matches(&self, packet: &[u8]) -> bool {
        if self.host.is_none() && self.port.is_none() && self.ipv6.is_none() {
            return true;
        }
        let Some((src, dst, tcp)) = ends_and_tcp(packet) else {
            return false;
        };
        if self.ipv6.is_some_and(|v6| v6 != src.is_ipv6()) {
            return false;
        }
        if let Some(host) = self.host {
            let host = host.to_canonical();
            if src != host && dst != host {
                return false;
            }
        }
        if let Some(port) = self.port {
            // TCP only: ports start the TCP header.
            let Some(ports) = tcp.and_then(|tcp| tcp.get(..4)) else {
                return false;
            };
            let src = u16::from_be_bytes([ports[0], ports[1]]);
            let dst = u16::from_be_bytes([ports[2], ports[3]]);
            if src != port && dst != port {
                return false;
            }
        }
        true
    }
}

/// The `pcapng` magic: a file starting with it is a capture, not JSON lines.
pub const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// A packet's source and destination and, for TCP, its TCP bytes: IPv4
/// through its checked view, IPv6 through its extension-header walk.
fn ends_and_tcp(packet: &[u8]) -> Option<(IpAddr, IpAddr, Option<&[u8]>)> {
    if packet.first()? >> 4 == 6 {
        let parsed = Ipv6Repr::parse(packet).ok()?;
        let ip = parsed.repr;
        let tcp = (ip.next_header == IpProtocol::Tcp).then_some(parsed.payload);
        return Some((IpAddr::V6(ip.src), IpAddr::V6(ip.dst), tcp));
    }
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (ip.src(), ip.dst());
    let tcp = if ip.protocol() == IpProtocol::Tcp {
        let header_len = usize::from(packet.first()? & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
        packet.get(header_len..total.min(packet.len()))
    } else {
        None
    };
    Some((IpAddr::V4(src), IpAddr::V4(dst), tcp))
}

/// A TCP segment of a captured IP packet, read through the checked views
/// without verifying checksums (offload leaves them partial in captures).
fn captured_segment(packet: &[u8], outbound: bool) -> Option<(SocketAddr, SocketAddr, Segment)> {
    let (src_ip, dst_ip, tcp) = ends_and_tcp(packet)?;
    let tcp = TcpSegment::new_checked(tcp?).ok()?;
    let options = TcpOptions::parse(tcp.options()).unwrap_or_default();
    let (src, dst) = (
        SocketAddr::new(src_ip, tcp.src_port()),
        SocketAddr::new(dst_ip, tcp.dst_port()),
    );
    let header = SegmentHeader {
        seq: tcp.seq(),
        ack: tcp.ack(),
        flags: tcp.flags(),
        window: tcp.window(),
        len: u32::try_from(tcp.payload().len()).unwrap_or(u32::MAX),
        options,
    };
    let dir = if outbound { Dir::Out } else { Dir::In };
    let segment = Segment::from_header(dir, &header, false);
    Some(if outbound {
        (src, dst, segment)
    } else {
        (dst, src, segment)
    })
}

/// Trace events for one connection of a `tcpctl capture` file: the
/// segments of interface 0 (the stack's view; the direction from each
/// packet's flags), the impairer's drops (packets on one interface only are
/// not reconstructed: the stack's view is the truth for tcpd), and tcpd's
/// states inferred from the segments by the same RFC 9293 rules as the
/// peer's (the capture has no state records), retransmissions recognized by
/// their sequence numbers (an outgoing segment starting below the highest
/// sequence number sent before). The connection is the first
/// whose tcpd-side and peer-side endpoints `select` accepts.
pub fn events_from_pcapng(
    bytes: &[u8],
    select: impl Fn(SocketAddr, SocketAddr) -> bool,
) -> Result<Vec<Event>, String> {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut reader = PcapNgReader::new(bytes).map_err(|e| format!("not pcapng: {e}"))?;
    let mut events = Vec::new();
    let mut conn: Option<(SocketAddr, SocketAddr)> = None;
    let mut ours: Option<PeerModel> = None;
    // One past the highest sequence number tcpd sent: an outgoing segment
    // starting below it resends sequence space, a retransmission.
    let mut sent_end: Option<u32> = None;
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| format!("bad pcapng block: {e}"))?;
        let Block::EnhancedPacket(epb) = block else {
            continue;
        };
        if epb.interface_id != CapturePoint::Stack as u32 {
            continue;
        }
        let outbound = epb
            .options
            .iter()
            .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 0b11 == FLAG_OUTBOUND));
        let Some((local, remote, mut segment)) = captured_segment(&epb.data, outbound) else {
            continue;
        };
        match conn {
            None if select(local, remote) => conn = Some((local, remote)),
            Some(c) if c == (local, remote) => {}
            _ => continue,
        }
        let t_us = u64::try_from(epb.timestamp.as_micros()).unwrap_or(u64::MAX);
        if segment.dir == Dir::Out && segment.seq_len() > 0 {
            let end = segment.seq.wrapping_add(segment.seq_len());
            segment.rtx = sent_end.is_some_and(|e| SeqNum(segment.seq).lt(SeqNum(e)));
            if sent_end.is_none_or(|e| SeqNum(end).gt(SeqNum(e))) {
                sent_end = Some(end);
            }
        }
        let model = ours.get_or_insert_with(|| {
            let flags = segment.tcp_flags();
            PeerModel::new(match (segment.dir, flags.syn(), flags.ack()) {
                (Dir::In, true, false) => TcpState::Listen,
                (Dir::Out, true, false) => TcpState::Closed,
                _ => TcpState::Established,
            })
        });
        let before = model.state;
        let state_event = |old: TcpState, new: TcpState| Event {
            t_us,
            local,
            remote,
            kind: Kind::State {
                old: old.name().to_string(),
                new: new.name().to_string(),
            },
        };
        let seg_event = Event {
            t_us,
            local,
            remote,
            kind: Kind::Segment(segment.clone()),
        };
        if segment.dir == Dir::Out {
            // tcpd's state changes as it sends (a FIN after close, a SYN).
            model.peer_sent(&segment);
            if model.state != before {
                events.push(state_event(before, model.state));
            }
            events.push(seg_event);
        } else {
            model.peer_received(&segment);
            events.push(seg_event);
            if model.state != before {
                events.push(state_event(before, model.state));
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn two_interfaces_packets_and_drop_statistics_read_back() {
        let mut w = CaptureWriter::new();
        let mut bytes = w.take();
        let packet = [
            0x45u8, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        w.packet(CapturePoint::Stack, false, Duration::from_secs(10), &packet);
        w.packet(
            CapturePoint::Link,
            true,
            Duration::from_millis(10_001),
            &packet,
        );
        assert_eq!(w.pending_packets(), 2);
        bytes.extend(w.take());
        w.packet(CapturePoint::Link, true, Duration::from_secs(11), &packet);
        assert_eq!(w.discard(), 1);
        w.statistics(Duration::from_secs(12), 1);
        bytes.extend(w.take());

        let mut reader = PcapNgReader::new(&bytes[..]).expect("section header");
        let mut interfaces = Vec::new();
        let mut packets = Vec::new();
        let mut drops = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.expect("valid block") {
                Block::InterfaceDescription(idb) => interfaces.push(idb.linktype),
                Block::EnhancedPacket(epb) => packets.push((
                    epb.interface_id,
                    epb.timestamp,
                    epb.options
                        .into_iter()
                        .map(|o| o.into_owned())
                        .collect::<Vec<_>>(),
                )),
                Block::InterfaceStatistics(isb) => drops.push(
                    isb.options
                        .into_iter()
                        .map(|o| o.into_owned())
                        .collect::<Vec<_>>(),
                ),
                _ => {}
            }
        }
        assert_eq!(interfaces, [DataLink::RAW, DataLink::RAW]);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].0, 0);
        assert_eq!(packets[1].1, Duration::from_millis(10_001));
        assert_eq!(
            packets[1].2,
            vec![EnhancedPacketOption::Flags(FLAG_INBOUND)]
        );
        assert_eq!(drops.len(), 2);
        assert_eq!(drops[0], vec![InterfaceStatisticsOption::IsbIfDrop(1)]);
    }

    #[test]
    fn filters() {
        let tcp = {
            let mut p = vec![
                0x45u8, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            p.extend([0x1f, 0x90, 0xc0, 0x00]);
            p.extend([0u8; 16]);
            p
        };
        assert!(CaptureFilter::parse("").expect("empty").matches(&tcp));
        let f = CaptureFilter::parse("host 10.0.0.2 and port 8080").expect("valid");
        assert!(f.matches(&tcp));
        assert!(
            !CaptureFilter::parse("port 80")
                .expect("valid")
                .matches(&tcp)
        );
        assert!(
            !CaptureFilter::parse("host 10.0.0.9")
                .expect("valid")
                .matches(&tcp)
        );
        assert!(CaptureFilter::parse("port").is_err());
        assert!(CaptureFilter::parse("net 10.0.0.0/8").is_err());
        assert!(
            !f.matches(&tcp[..10]),
            "truncated packets never match a filter"
        );
    }
}
