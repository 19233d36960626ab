//! Input demultiplexing: where an arriving TCP segment or ICMP message goes.
//!
//! TCP (after [`Stack::handle_packet`] has validated the IPv4 header): the
//! 4-tuple map first, then the listener on the destination port, else the
//! CLOSED-state reply of RFC 9293 §3.10.7.1. Listeners follow RFC 9293
//! §3.10.7.2 and create children in SYN-RECEIVED within their backlog. ICMP:
//! echo requests are answered, destination-unreachable messages reach the
//! connection they quote (RFC 792, RFC 1122 §4.2.3.9, RFC 5927 §4.1).

use super::control::ControlPacket;
use super::{
    ConnId, DropReason, FourTuple, QueuedEvent, STATE_EVENT_LIMIT, SocketEntry, SocketKind, Stack,
    drop_reason,
};
use crate::seq::SeqNum;
use crate::socket::{SocketHandle, StackEvent};
use crate::tcp::TcpState;
use crate::tcp::connection::Connection;
use crate::time::Instant;
use crate::wire::{Icmpv4Repr, IpProtocol, TcpRepr};
use core::net::{Ipv4Addr, SocketAddrV4};

impl Stack {
    pub(super) fn handle_tcp(&mut self, now: Instant, src: Ipv4Addr, payload: &[u8]) {
        let segment = match TcpRepr::parse(payload, src, self.config.address) {
            Ok(segment) => segment,
            Err(e) => return self.stats.drop_packet(drop_reason(e)),
        };
        self.stats.segments_in += 1;
        if segment.flags.rst() {
            self.stats.rst_received += 1;
        }
        // Port 0 is reserved (RFC 6335 §6) and never names a connection.
        if segment.src_port == 0 || segment.dst_port == 0 {
            return self.stats.drop_packet(DropReason::Malformed);
        }
        let key = FourTuple {
            local: SocketAddrV4::new(self.config.address, segment.dst_port),
            remote: SocketAddrV4::new(src, segment.src_port),
        };
        if let Some(&id) = self.by_tuple.get(&key) {
            if !self.time_wait_yields_to(id, &segment) {
                if let Some(entry) = self.conns.get_mut(&id) {
                    let discarded_before = entry.conn.segments_discarded();
                    entry.conn.handle_segment(now, &segment);
                    if entry.conn.segments_discarded() != discarded_before {
                        self.stats.drop_packet(DropReason::Unacceptable);
                    }
                }
                self.after_conn_call(id, true);
                return;
            }
            self.retire_time_wait(id);
        }
        if let Some(&listener) = self.listeners.get(&segment.dst_port) {
            self.handle_listen_segment(now, listener, key, &segment);
        } else {
            self.reset_closed(key, &segment);
        }
    }

    /// True if connection `id` is a handle-less TIME-WAIT connection that
    /// may give way to a new incarnation opened by `syn`, and a listener
    /// wants it (RFC 9293 §3.10.7.4 TIME-WAIT, RFC 1122 §4.2.2.13, RFC 6191:
    /// the connection judges the SYN's sequence number or timestamp). A
    /// TIME-WAIT connection whose user still holds the handle is not retired.
    fn time_wait_yields_to(&self, id: ConnId, syn: &TcpRepr<'_>) -> bool {
        // Only if the listener will take the SYN: otherwise the TIME-WAIT
        // connection keeps protecting the 4-tuple and the peer retries.
        self.listeners
            .get(&syn.dst_port)
            .is_some_and(|&listener| self.listener_has_room(listener))
            && self.conns.get(&id).is_some_and(|entry| {
                entry.handle.is_none() && entry.conn.time_wait_accepts_syn(syn)
            })
    }

    /// True while the listener's SYN-RECEIVED plus unaccepted children are
    /// under its backlog.
    fn listener_has_room(&self, listener: SocketHandle) -> bool {
        match self.sockets.get(&listener).map(|entry| &entry.kind) {
            Some(SocketKind::Listening(listen)) => {
                listen.syn_queue.len() + listen.accept_queue.len() < listen.backlog as usize
            }
            _ => false,
        }
    }

    /// Forgets a TIME-WAIT connection at once (its 4-tuple is being reopened).
    fn retire_time_wait(&mut self, id: ConnId) {
        self.unlink(id);
        if let Some(entry) = self.conns.remove(&id)
            && self.state_events_queued < STATE_EVENT_LIMIT
        {
            self.state_events_queued += 1;
            self.events
                .push_back(QueuedEvent::State(StackEvent::StateChange {
                    socket: None,
                    local: entry.key.local,
                    remote: entry.key.remote,
                    old: TcpState::TimeWait,
                    new: TcpState::Closed,
                }));
        }
        self.prune_timers();
    }

    /// A segment for a listener, with no connection of its own (RFC 9293 §3.10.7.2).
    fn handle_listen_segment(
        &mut self,
        now: Instant,
        listener: SocketHandle,
        key: FourTuple,
        segment: &TcpRepr<'_>,
    ) {
        // First check: an incoming RST is ignored.
        if segment.flags.rst() {
            return;
        }
        // Second check: any acknowledgment is bad; <SEQ=SEG.ACK><CTL=RST>.
        if segment.flags.ack() {
            self.queue_reset(key, segment.ack, None);
            return;
        }
        // Fourth "check": anything without SYN is dropped. SYN+FIN is dropped
        // too, as Linux does (tcp_rcv_state_process); the RFC would let
        // SYN-RECEIVED process the FIN.
        if !segment.flags.syn() || segment.flags.fin() {
            return self.stats.drop_packet(DropReason::Unacceptable);
        }
        // Third check: SYN. Backlog: SYN-RECEIVED plus not-yet-accepted
        // children must stay under the backlog; an excess SYN is dropped
        // without an answer so the peer retries (Linux-like: it counts
        // ListenOverflows/ListenDrops; it has separate SYN and accept limits).
        if !self.listener_has_room(listener) {
            return self.stats.drop_packet(DropReason::ListenOverflow);
        }
        let Some(entry) = self.sockets.get(&listener) else {
            return;
        };
        let options = entry.options;
        let params = self.connection_params(key, options, now);
        let conn = Connection::accept_syn(params, segment, now);
        self.stats.passive_opens += 1;
        let id = self.insert_connection(conn, key, None, Some(listener), true);
        if let Some(SocketEntry {
            kind: SocketKind::Listening(listen),
            ..
        }) = self.sockets.get_mut(&listener)
        {
            listen.syn_queue.insert(id);
        }
        self.after_conn_call(id, true);
    }

    /// A segment for no connection and no listener: the CLOSED state of RFC
    /// 9293 §3.10.7.1. A RST is never answered; otherwise if ACK is set the
    /// reply is <SEQ=SEG.ACK><CTL=RST>, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    fn reset_closed(&mut self, key: FourTuple, segment: &TcpRepr<'_>) {
        if segment.flags.rst() {
            return;
        }
        if segment.flags.ack() {
            self.queue_reset(key, segment.ack, None);
        } else {
            let ack = segment.seq + segment.segment_len();
            self.queue_reset(key, SeqNum(0), Some(ack));
        }
    }

    fn queue_reset(&mut self, key: FourTuple, seq: SeqNum, ack: Option<SeqNum>) {
        self.control.push(ControlPacket::Reset {
            local: key.local,
            remote: key.remote,
            seq,
            ack,
        });
    }

    pub(super) fn handle_icmp(&mut self, now: Instant, src: Ipv4Addr, payload: &[u8]) {
        let message = match Icmpv4Repr::parse(payload) {
            Ok(message) => message,
            Err(e) => return self.stats.drop_packet(drop_reason(e)),
        };
        match message {
            // RFC 1122 §3.2.2.6: every host answers echo requests, with the
            // same identifier, sequence number and data (RFC 792).
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                let reply = ControlPacket::EchoReply {
                    local: self.config.address,
                    remote: src,
                    ident,
                    seq_no,
                    data: data.to_vec(),
                };
                // tcpd does not fragment: a reply that would exceed the MTU
                // (the request came in over-sized) is not sent.
                if reply.wire_len() > usize::from(self.config.mtu) {
                    return self.stats.drop_packet(DropReason::Unsupported);
                }
                self.control.push(reply);
            }
            Icmpv4Repr::DestinationUnreachable {
                code,
                next_hop_mtu,
                quoted,
            } => {
                self.stats.icmp_unreachable_received += 1;
                // The quoted packet is one we sent: its source is our side
                // (RFC 792; RFC 5927 §4.1 asks to check it matches a connection).
                if quoted.protocol != IpProtocol::Tcp || quoted.src != self.config.address {
                    return;
                }
                let key = FourTuple {
                    local: SocketAddrV4::new(quoted.src, quoted.src_port),
                    remote: SocketAddrV4::new(quoted.dst, quoted.dst_port),
                };
                if let Some(&id) = self.by_tuple.get(&key) {
                    if let Some(entry) = self.conns.get_mut(&id) {
                        entry.conn.handle_icmp_unreachable(
                            now,
                            code,
                            next_hop_mtu,
                            SeqNum(quoted.seq),
                        );
                    }
                    self.after_conn_call(id, true);
                }
            }
            Icmpv4Repr::EchoReply { .. } => self.stats.drop_packet(DropReason::Unsupported),
        }
    }
}
