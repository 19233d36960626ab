//! Packets the stack itself originates, outside any connection: RSTs for
//! segments that reach no connection or listener (RFC 9293 §3.10.7.1,
//! §3.10.7.2), SYN-cookie SYN,ACKs (RFC 4987 §3.6; no connection exists for
//! them) and ICMP echo replies (RFC 792, RFC 1122 §3.2.2.6).
//!
//! They wait in a bounded FIFO until `poll_transmit`; when it is full new ones
//! are dropped, which bounds the memory an attacker can make the stack spend
//! on answers (Linux rate-limits both kinds too).

use crate::seq::SeqNum;
use crate::wire::ipv4::{DEFAULT_TTL, HEADER_LEN as IPV4_HEADER_LEN};
use crate::wire::{Icmpv4Repr, IpProtocol, Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::VecDeque;

/// Most stack-originated packets waiting to be sent.
pub(crate) const CONTROL_QUEUE_LIMIT: usize = 1024;

/// A packet the stack sends on its own behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ControlPacket {
    /// A bare RST (or RST+ACK), no options, no payload.
    Reset {
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seq: SeqNum,
        /// `Some` makes it RST+ACK with this acknowledgement number.
        ack: Option<SeqNum>,
    },
    /// A whole TCP segment already emitted (checksum included): a SYN
    /// cookie's SYN,ACK.
    SynAck {
        local: Ipv4Addr,
        remote: Ipv4Addr,
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
}

/// What kind of packet [`ControlPacket::emit`] wrote, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlKind {
    Reset,
    SynAck,
    EchoReply,
}

impl ControlPacket {
    /// Bytes the packet takes, IPv4 header included.
    pub(crate) fn wire_len(&self) -> usize {
        IPV4_HEADER_LEN
            + match self {
                ControlPacket::Reset { .. } => crate::wire::tcp::HEADER_LEN,
                ControlPacket::SynAck { segment, .. } => segment.len(),
                ControlPacket::EchoReply { data, .. } => echo_reply(0, 0, data).buffer_len(),
            }
    }

    /// Writes the whole IPv4 packet into `buf` (at least [`Self::wire_len`]
    /// bytes, which the stack checks against the MTU when queueing).
    pub(crate) fn emit(&self, buf: &mut [u8], ip_ident: u16) -> (usize, ControlKind) {
        let (src, dst, protocol, payload_len, kind) = match self {
            ControlPacket::Reset {
                local,
                remote,
                seq,
                ack,
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
                let len = segment.emit(&mut buf[IPV4_HEADER_LEN..], *local.ip(), *remote.ip());
                (
                    *local.ip(),
                    *remote.ip(),
                    IpProtocol::Tcp,
                    len,
                    ControlKind::Reset,
                )
            }
            ControlPacket::SynAck {
                local,
                remote,
                segment,
            } => {
                let body = &mut buf[IPV4_HEADER_LEN..IPV4_HEADER_LEN + segment.len()];
                body.copy_from_slice(segment);
                (
                    *local,
                    *remote,
                    IpProtocol::Tcp,
                    segment.len(),
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
                let len = echo_reply(*ident, *seq_no, data).emit(&mut buf[IPV4_HEADER_LEN..]);
                (
                    *local,
                    *remote,
                    IpProtocol::Icmp,
                    len,
                    ControlKind::EchoReply,
                )
            }
        };
        let header = Ipv4Repr {
            src,
            dst,
            protocol,
            ttl: DEFAULT_TTL,
            dont_fragment: true,
            payload_len,
        };
        header.emit(&mut buf[..IPV4_HEADER_LEN], ip_ident);
        (IPV4_HEADER_LEN + payload_len, kind)
    }
}

fn echo_reply(ident: u16, seq_no: u16, data: &[u8]) -> Icmpv4Repr<'_> {
    Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
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
