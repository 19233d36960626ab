//! Packets the stack itself originates, outside any connection: RSTs for
//! segments that reach no connection or listener (RFC 9293 §3.10.7.1,
//! §3.10.7.2), SYN-cookie SYN,ACKs (RFC 4987 §3.6; no connection exists for
//! them), ICMP and ICMPv6 echo replies (RFC 792, RFC 1122 §3.2.2.6, RFC
//! 4443 §4.2) and ICMPv6 errors (Parameter Problem, RFC 8200 §4).
//!
//! They wait in a bounded FIFO until `poll_transmit`; when it is full new ones
//! are dropped, which bounds the memory an attacker can make the stack spend
//! on answers (Linux rate-limits both kinds too; ICMPv6 errors are also
//! rate-limited before they are queued, RFC 4443 §2.4(f)).

use crate::seq::SeqNum;
use crate::time::Instant;
use crate::wire::icmpv6::Icmpv6Repr;
use crate::wire::ipv4::{DEFAULT_TTL, HEADER_LEN as IPV4_HEADER_LEN};
use crate::wire::ipv6::{DEFAULT_HOP_LIMIT, HEADER_LEN as IPV6_HEADER_LEN, Ipv6Repr};
use crate::wire::{Icmpv4Repr, IpProtocol, Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::VecDeque;

/// Most stack-originated packets waiting to be sent.
pub(crate) const CONTROL_QUEUE_LIMIT: usize = 1024;

/// A packet the stack sends on its own behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ControlPacket {
    /// A bare RST (or RST+ACK), no options, no payload.
    Reset {
        local: SocketAddr,
        remote: SocketAddr,
        seq: SeqNum,
        /// `Some` makes it RST+ACK with this acknowledgement number.
        ack: Option<SeqNum>,
        /// IPv6 flow label (RFC 6437); unused over IPv4.
        flow_label: u32,
    },
    /// A whole TCP segment already emitted (checksum included): a SYN
    /// cookie's SYN,ACK.
    SynAck {
        local: IpAddr,
        remote: IpAddr,
        flow_label: u32,
        segment: Vec<u8>,
    },
    /// An echo reply carrying the request's identifier, sequence number and data.
    EchoReply {
        local: Ipv4Addr,
        remote: Ipv4Addr,
        ident: u16,
        seq_no: u16,
        data: Vec<u8>,
    },
    /// An ICMPv6 message: an echo reply, or an error quoting `body`.
    Icmpv6 {
        local: Ipv6Addr,
        remote: Ipv6Addr,
        message: Icmpv6Message,
        /// Echo data, or the invoking packet (cut to fit when emitted).
        body: Vec<u8>,
    },
}

/// The ICMPv6 messages the stack originates (see [`Icmpv6Repr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Icmpv6Message {
    EchoReply { ident: u16, seq_no: u16 },
    ParameterProblem { code: u8, pointer: u32 },
}

/// What kind of packet [`ControlPacket::emit`] wrote, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlKind {
    Reset,
    SynAck,
    EchoReply,
    Icmpv6Error,
}

impl ControlPacket {
    /// Bytes the packet takes, IP header included.
    pub(crate) fn wire_len(&self) -> usize {
        let ip_header = if self.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
        ip_header
            + match self {
                ControlPacket::Reset { .. } => crate::wire::tcp::HEADER_LEN,
                ControlPacket::SynAck { segment, .. } => segment.len(),
                ControlPacket::EchoReply { data, .. } => echo_reply(0, 0, data).buffer_len(),
                ControlPacket::Icmpv6 { message, body, .. } => icmpv6(*message, body).buffer_len(),
            }
    }

    fn is_ipv6(&self) -> bool {
        match self {
            ControlPacket::Reset { remote, .. } => remote.is_ipv6(),
            ControlPacket::SynAck { remote, .. } => remote.is_ipv6(),
            ControlPacket::EchoReply { .. } => false,
            ControlPacket::Icmpv6 { .. } => true,
        }
    }

    /// Writes the whole IP packet into `buf` (at least [`Self::wire_len`]
    /// bytes, which the stack checks against the MTU when queueing).
    pub(crate) fn emit(&self, buf: &mut [u8], ip_ident: u16) -> (usize, ControlKind) {
        let ip_header = if self.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
        let body = &mut buf[ip_header..];
        let (src, dst, protocol, payload_len, flow_label, kind) = match self {
            ControlPacket::Reset {
                local,
                remote,
                seq,
                ack,
                flow_label,
            } => {
                let flags = match ack {
                    Some(_) => TcpFlags::RST | TcpFlags::ACK,
                    None => TcpFlags::RST,
                };
                let segment = TcpRepr {
                    src_port: local.port(),
                    dst_port: remote.port(),
                    seq: *seq,
                    ack: ack.unwrap_or(SeqNum(0)),
                    flags,
                    window: 0,
                    urgent: 0,
                    options: TcpOptions::default(),
                    payload: &[],
                };
                let len = segment.emit(body, local.ip(), remote.ip());
                (
                    local.ip(),
                    remote.ip(),
                    IpProtocol::Tcp,
                    len,
                    *flow_label,
                    ControlKind::Reset,
                )
            }
            ControlPacket::SynAck {
                local,
                remote,
                flow_label,
                segment,
            } => {
                body[..segment.len()].copy_from_slice(segment);
                (
                    *local,
                    *remote,
                    IpProtocol::Tcp,
                    segment.len(),
                    *flow_label,
                    ControlKind::SynAck,
                )
            }
            ControlPacket::EchoReply {
                local,
                remote,
                ident,
                seq_no,
                data,
            } => {
                let len = echo_reply(*ident, *seq_no, data).emit(body);
                (
                    IpAddr::V4(*local),
                    IpAddr::V4(*remote),
                    IpProtocol::Icmp,
                    len,
                    0,
                    ControlKind::EchoReply,
                )
            }
            ControlPacket::Icmpv6 {
                local,
                remote,
                message,
                body: data,
            } => {
                let len = icmpv6(*message, data).emit(*local, *remote, body);
                let kind = match message {
                    Icmpv6Message::EchoReply { .. } => ControlKind::EchoReply,
                    Icmpv6Message::ParameterProblem { .. } => ControlKind::Icmpv6Error,
                };
                (
                    IpAddr::V6(*local),
                    IpAddr::V6(*remote),
                    IpProtocol::Icmpv6,
                    len,
                    0,
                    kind,
                )
            }
        };
        emit_ip_header(
            buf,
            src,
            dst,
            protocol,
            payload_len,
            flow_label,
            ip_ident,
            IpHeaderOptions::DEFAULT,
        );
        (ip_header + payload_len, kind)
    }
}

/// A socket's IPv4 header fields (IP_TTL, IP_TOS, IP_MTU_DISCOVER).
/// IPV6_UNICAST_HOPS and IPV6_TCLASS would be the IPv6 branch's
/// counterparts (hop limit, traffic class); they are not options yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpHeaderOptions {
    pub(crate) ttl: u8,
    pub(crate) tos: u8,
    pub(crate) dont_fragment: bool,
}

impl IpHeaderOptions {
    /// TTL 64, TOS 0, DF on everything: path MTU discovery (RFC 1191 §3).
    pub(crate) const DEFAULT: IpHeaderOptions = IpHeaderOptions {
        ttl: DEFAULT_TTL,
        tos: 0,
        dont_fragment: true,
    };
}

/// Writes the IP header of a packet from `src` to `dst` (IPv4 with `ip`'s
/// TTL, TOS and DF and `ip_ident`, or IPv6 with `flow_label`) in front of
/// its payload; returns the header's length. Mixed families (never produced
/// by the stack) write an IPv6 header with the IPv4 address mapped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_ip_header(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
    payload_len: usize,
    flow_label: u32,
    ip_ident: u16,
    ip: IpHeaderOptions,
) -> usize {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            Ipv4Repr {
                src,
                dst,
                protocol,
                ttl: ip.ttl,
                dont_fragment: ip.dont_fragment,
                payload_len,
            }
            .emit_with_tos(&mut buf[..IPV4_HEADER_LEN], ip_ident, ip.tos);
            IPV4_HEADER_LEN
        }
        (src, dst) => {
            Ipv6Repr {
                src: v6(src),
                dst: v6(dst),
                next_header: protocol,
                hop_limit: DEFAULT_HOP_LIMIT,
                traffic_class: 0,
                flow_label,
                payload_len,
            }
            .emit(&mut buf[..IPV6_HEADER_LEN]);
            IPV6_HEADER_LEN
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

fn echo_reply(ident: u16, seq_no: u16, data: &[u8]) -> Icmpv4Repr<'_> {
    Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
    }
}

fn icmpv6(message: Icmpv6Message, body: &[u8]) -> Icmpv6Repr<'_> {
    match message {
        Icmpv6Message::EchoReply { ident, seq_no } => Icmpv6Repr::EchoReply {
            ident,
            seq_no,
            data: body,
        },
        Icmpv6Message::ParameterProblem { code, pointer } => Icmpv6Repr::ParameterProblem {
            code,
            pointer,
            invoking: body,
        },
    }
}

/// The bounded FIFO of control packets.
#[derive(Debug, Default)]
pub(crate) struct ControlQueue {
    queue: VecDeque<ControlPacket>,
}

impl ControlQueue {
    /// Queues `packet`; returns false (and drops it) when the queue is full.
    pub(crate) fn push(&mut self, packet: ControlPacket) -> bool {
        if self.queue.len() >= CONTROL_QUEUE_LIMIT {
            return false;
        }
        self.queue.push_back(packet);
        true
    }

    pub(crate) fn pop(&mut self) -> Option<ControlPacket> {
        self.queue.pop_front()
    }
}

/// ICMPv6 errors per second the stack may send, and the burst it may send
/// at once (RFC 4443 §2.4(f) asks for a limit and suggests a token bucket;
/// the figures are Linux's `icmp_msgs_per_sec` = 1000 and
/// `icmp_msgs_burst` = 50, which ICMPv6 shares there).
const ICMP_ERRORS_PER_SEC: u64 = 1000;
const ICMP_ERROR_BURST: u64 = 50;

/// The token bucket of ICMPv6 errors.
#[derive(Debug)]
pub(crate) struct IcmpRateLimit {
    tokens: u64,
    /// When tokens were last added.
    refilled: Instant,
}

impl IcmpRateLimit {
    pub(crate) fn new(now: Instant) -> IcmpRateLimit {
        IcmpRateLimit {
            tokens: ICMP_ERROR_BURST,
            refilled: now,
        }
    }

    /// Takes a token if one is left (after adding those earned since the
    /// last refill); false means the error must not be sent.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = u64::try_from(now.saturating_duration_since(self.refilled).as_micros())
            .unwrap_or(u64::MAX);
        let earned = elapsed.saturating_mul(ICMP_ERRORS_PER_SEC) / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(ICMP_ERROR_BURST);
            self.refilled = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_errors_are_limited_to_a_burst_then_the_rate() {
        let start = Instant::from_millis(10_000);
        let mut limit = IcmpRateLimit::new(start);
        let sent = (0..200).filter(|_| limit.allow(start)).count();
        assert_eq!(sent as u64, ICMP_ERROR_BURST);
        // One more per millisecond afterwards.
        let later = start + crate::time::Duration::from_millis(10);
        let sent = (0..200).filter(|_| limit.allow(later)).count();
        assert_eq!(sent, 10);
    }
}
