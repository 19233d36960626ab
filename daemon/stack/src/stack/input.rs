//! Input demultiplexing: where an arriving TCP segment, ICMP or ICMPv6
//! message goes.
//!
//! TCP (after [`Stack::handle_packet`] has validated the IP header): the
//! 4-tuple map first, then the listener on the destination port, else the
//! CLOSED-state reply of RFC 9293 §3.10.7.1. Listeners follow RFC 9293
//! §3.10.7.2 and create children in SYN-RECEIVED within their backlog. ICMP
//! and ICMPv6: echo requests are answered, destination-unreachable and
//! Packet Too Big messages reach the connection they quote (RFC 792, RFC
//! 1122 §4.2.3.9, RFC 4443 §3.1/§3.2, RFC 8201, RFC 5927 §4.1). ICMPv6
//! errors the stack sends (Parameter Problem) obey RFC 4443 §2.4(e)/(f).

use super::control::{ControlPacket, Icmpv6Message};
use super::{
    ConnId, DropReason, EntryRare, FourTuple, Holder, Listener, QueuedEvent, STATE_EVENT_LIMIT,
    SocketEntry, SocketKind, Stack, drop_reason, syncookie,
};
use crate::config::SynCookieMode;
use crate::seq::SeqNum;
use crate::socket::IpFamily;
use crate::socket::{SocketHandle, StackEvent};
use crate::tcp::TcpState;
use crate::tcp::connection::Connection;
use crate::time::Instant;
use crate::trace::{Direction, DropCause, Note, SegmentHeader, TraceEvent};
use crate::wire::icmpv6::{self, Icmpv6Repr, QuotedHeader as QuotedHeaderV6};
use crate::wire::ipv6::{Ipv6Packet, ParameterProblem};
use crate::wire::{Icmpv4Repr, IpProtocol, TcpRepr, WireError};
use crate::wire::{TcpFlags, TcpOptions};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

impl Stack {
    /// A TCP segment from `src` to `dst` (one of our addresses, same
    /// family). `verify`: check the TCP checksum (false only where the link
    /// promised it).
    pub(super) fn handle_tcp(
        &mut self,
        now: Instant,
        src: IpAddr,
        dst: IpAddr,
        payload: &[u8],
        verify: bool,
    ) {
        let segment = match TcpRepr::parse_with(payload, src, dst, verify) {
            Ok(segment) => segment,
            Err(e) => {
                if e == WireError::Checksum && self.tracer.active != 0 {
                    self.trace_bad_checksum(src, dst, payload);
                }
                return self.stats.drop_packet(drop_reason(e));
            }
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
            local: SocketAddr::new(dst, segment.dst_port),
            remote: SocketAddr::new(src, segment.src_port),
        };
        if let Some(id) = self.conns.find(&key) {
            if !self.time_wait_yields_to(id, key, &segment) {
                if let Some(entry) = self.conns.get(&id)
                    && entry.trace_mask() != 0
                {
                    let (mask, key) = (entry.trace_mask(), entry.key());
                    self.trace_segment_in(mask, key, &segment);
                }
                if let Some(entry) = self.conns.get_mut(&id) {
                    let _entered = EntryRare::enter_span(&entry.rare);
                    let discarded_before = entry.conn.segments_discarded();
                    match &self.rx_frame {
                        Some(frame) => entry.conn.handle_segment_in(now, &segment, frame),
                        None => entry.conn.handle_segment(now, &segment),
                    }
                    if entry.conn.segments_discarded() != discarded_before {
                        self.stats.drop_packet(DropReason::Unacceptable);
                    }
                }
                self.after_conn_call(id, true);
                return;
            }
            self.retire_time_wait(id);
        }
        if let Some(listener) = self.listener_for(key.local) {
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
    fn time_wait_yields_to(&self, id: ConnId, key: FourTuple, syn: &TcpRepr<'_>) -> bool {
        // Only if the listener will take the SYN: otherwise the TIME-WAIT
        // connection keeps protecting the 4-tuple and the peer retries.
        self.listener_for(key.local)
            .is_some_and(|listener| self.listener_has_room(listener))
            && self.conns.get(&id).is_some_and(|entry| {
                entry.handle().is_none() && entry.conn.time_wait_accepts_syn(syn)
            })
    }

    /// True while the listener can take a new child into its SYN queue:
    /// both its accept queue and its SYN queue have room.
    fn listener_has_room(&self, listener: SocketHandle) -> bool {
        match self.sockets.get(&listener).map(|entry| &entry.kind) {
            Some(SocketKind::Listening(listen)) => {
                !accept_queue_full(listen) && !self.syn_queue_full(listen)
            }
            _ => false,
        }
    }

    fn syn_queue_full(&self, listen: &Listener) -> bool {
        listen.syn_queue.len() >= self.config.max_syn_backlog.max(1) as usize
    }

    /// Forgets a TIME-WAIT connection at once (its 4-tuple is being reopened).
    fn retire_time_wait(&mut self, id: ConnId) {
        self.unlink(id);
        if let Some(entry) = self.forget_conn(id)
            && self.state_events_queued < STATE_EVENT_LIMIT
        {
            self.state_events_queued += 1;
            self.events
                .push_back(QueuedEvent::State(StackEvent::StateChange {
                    socket: None,
                    local: entry.key().local,
                    remote: entry.key().remote,
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
        // Second check: any acknowledgment is bad; <SEQ=SEG.ACK><CTL=RST> —
        // unless it returns one of our SYN cookies (RFC 4987 §3.6).
        if segment.flags.ack() {
            if !segment.flags.syn() && self.cookie_ack(now, listener, key, segment) {
                return;
            }
            self.queue_reset(key, segment.ack, None);
            return;
        }
        // Fourth "check": anything without SYN is dropped. SYN+FIN is dropped
        // too, as Linux does (tcp_rcv_state_process); the RFC would let
        // SYN-RECEIVED process the FIN.
        if !segment.flags.syn() || segment.flags.fin() {
            return self.stats.drop_packet(DropReason::Unacceptable);
        }
        // Third check: SYN. A full accept queue drops it unanswered so the
        // peer retries (Linux tcp_conn_request: ListenOverflows and
        // ListenDrops); a full SYN queue calls for a cookie (or a drop).
        let Some(SocketEntry {
            options,
            kind: SocketKind::Listening(listen),
            ..
        }) = self.sockets.get(&listener)
        else {
            return;
        };
        let options = options.as_deref().copied().unwrap_or_default();
        if accept_queue_full(listen) {
            self.stats.listen_overflows += 1;
            self.stats.listen_drops += 1;
            return self.stats.drop_packet(DropReason::ListenOverflow);
        }
        let syn_queue_full = self.syn_queue_full(listen);
        match self.config.syncookies {
            SynCookieMode::Always => return self.send_cookie(now, listener, key, segment),
            SynCookieMode::Auto if syn_queue_full => {
                return self.send_cookie(now, listener, key, segment);
            }
            _ if syn_queue_full => {
                self.stats.listen_drops += 1;
                return self.stats.drop_packet(DropReason::ListenOverflow);
            }
            _ => {}
        }
        let params = self.connection_params(key, options, now);
        let conn = Connection::accept_syn(params, segment, now);
        self.stats.passive_opens += 1;
        self.adopt_child(listener, conn, key, segment);
    }

    /// Inserts a listener's new child (in its SYN queue until the stack
    /// sees it synchronized) and runs the bookkeeping. `first` is the
    /// segment that made it (the SYN, or a cookie's ACK), for traces.
    fn adopt_child(
        &mut self,
        listener: SocketHandle,
        conn: Connection,
        key: FourTuple,
        first: &TcpRepr<'_>,
    ) {
        // An IPv6 listener's IPv4 child is seen through IPv4-mapped addresses.
        let mapped = key.remote.is_ipv4()
            && self
                .sockets
                .get(&listener)
                .is_some_and(|entry| entry.family == IpFamily::V6);
        let id = self.insert_connection(conn, key, Holder::Listener(listener), true, mapped);
        if let Some(entry) = self.conns.get(&id)
            && entry.trace_mask() != 0
        {
            self.trace_segment_in(entry.trace_mask(), key, first);
        }
        if let Some(SocketEntry {
            kind: SocketKind::Listening(listen),
            ..
        }) = self.sockets.get_mut(&listener)
        {
            listen.syn_queue.insert(id);
        }
        self.after_conn_call(id, true);
    }

    /// Answers `syn` with a SYN,ACK whose ISS is a cookie, keeping no state
    /// (RFC 4987 §3.6). The SYN,ACK is the one a child built from the SYN
    /// would send, with the cookie as ISS and, when timestamps are on, the
    /// option bits in the TSval (see [`syncookie`]); without timestamps it
    /// offers MSS only, as Linux's.
    fn send_cookie(
        &mut self,
        now: Instant,
        listener: SocketHandle,
        key: FourTuple,
        syn: &TcpRepr<'_>,
    ) {
        let Some(entry) = self.sockets.get_mut(&listener) else {
            return;
        };
        let options = entry.unconnected_options();
        if let SocketKind::Listening(listen) = &mut entry.kind {
            listen.cookie_sent_at = Some(now);
        }
        let peer_mss = syn
            .options
            .mss
            .unwrap_or(syncookie::mss_table(&key.local)[0]);
        let (iss, mss) = self
            .syncookies
            .cookie(key.local, key.remote, syn.seq, peer_mss, now);
        let mut remembered = TcpRepr {
            payload: &[],
            ..*syn
        };
        remembered.options.mss = Some(mss);
        let mut params = self.connection_params(key, options, now);
        params.iss = iss;
        if syn.options.timestamp.is_some() {
            let bits =
                syncookie::ts_option_bits(syn.options.window_scale, syn.options.sack_permitted);
            let ts_now = (now.total_millis() as u32).wrapping_add(params.ts_offset);
            let tsval = syncookie::cookie_tsval(ts_now, bits);
            params.ts_offset = params.ts_offset.wrapping_add(tsval.wrapping_sub(ts_now));
        } else {
            remembered.options.window_scale = None;
            remembered.options.sack_permitted = false;
        }
        let mut probe = Connection::accept_syn(params, &remembered, now);
        let mut segment = vec![0; usize::from(self.config.mtu) - key.ip_header_len()];
        let Some(len) = probe.poll_transmit(now, &mut segment) else {
            return;
        };
        segment.truncate(len);
        let queued = self.control.push(ControlPacket::SynAck {
            local: key.local.ip(),
            remote: key.remote.ip(),
            flow_label: self.isn.flow_label(key.local, key.remote),
            segment,
        });
        if queued {
            self.stats.syncookies_sent += 1;
        } else {
            self.stats.listen_drops += 1;
        }
    }

    /// An ACK to a listener: if it returns a valid cookie, the connection is
    /// rebuilt from it and joins the accept queue (RFC 4987 §3.6). True if the
    /// ACK was consumed (a connection, or a drop because the accept queue is
    /// full); false if it must be answered with RST (not a cookie).
    fn cookie_ack(
        &mut self,
        now: Instant,
        listener: SocketHandle,
        key: FourTuple,
        ack: &TcpRepr<'_>,
    ) -> bool {
        let Some(SocketEntry {
            options,
            kind: SocketKind::Listening(listen),
            ..
        }) = self.sockets.get(&listener)
        else {
            return false;
        };
        let options = options.as_deref().copied().unwrap_or_default();
        let recent = listen
            .cookie_sent_at
            .is_some_and(|at| now.saturating_duration_since(at) < syncookie::VALIDITY);
        let checked = match self.config.syncookies {
            SynCookieMode::Always => true,
            SynCookieMode::Auto => recent,
            SynCookieMode::Never => false,
        };
        if !checked {
            return false;
        }
        let client_isn = ack.seq - 1;
        let cookie = ack.ack - 1;
        let decoded = self
            .syncookies
            .check(key.local, key.remote, client_isn, cookie, now)
            .map(|mss| match ack.options.timestamp {
                None => (mss, None, false, None),
                Some((tsval, tsecr)) => {
                    let (window_scale, sack) = syncookie::decode_ts_option_bits(tsecr);
                    (mss, window_scale, sack, Some((tsval, 0)))
                }
            });
        let Some((mss, window_scale, sack_permitted, timestamp)) = decoded else {
            self.stats.syncookies_failed += 1;
            return false;
        };
        if accept_queue_full(listen) {
            self.stats.listen_overflows += 1;
            self.stats.listen_drops += 1;
            self.stats.drop_packet(DropReason::ListenOverflow);
            return true;
        }
        // The SYN the cookie stands for, and the SYN,ACK we sent for it.
        let syn = TcpRepr {
            src_port: ack.src_port,
            dst_port: ack.dst_port,
            seq: client_isn,
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: ack.window,
            urgent: 0,
            options: TcpOptions {
                mss: Some(mss),
                window_scale,
                sack_permitted,
                timestamp,
                ..TcpOptions::default()
            },
            payload: &[],
        };
        let mut params = self.connection_params(key, options, now);
        params.iss = cookie;
        let mut conn = Connection::accept_syn(params, &syn, now);
        let mut sent = vec![0; usize::from(self.config.mtu) - key.ip_header_len()];
        let _ = conn.poll_transmit(now, &mut sent);
        conn.handle_segment(now, ack);
        if !conn.state().is_synchronized() {
            // The ACK was unacceptable after all (it cannot be, for a valid
            // cookie); forget it as a failed cookie.
            self.stats.syncookies_failed += 1;
            return true;
        }
        self.stats.syncookies_recv += 1;
        self.stats.passive_opens += 1;
        self.adopt_child(listener, conn, key, ack);
        true
    }

    fn trace_segment_in(&mut self, mask: u64, key: FourTuple, segment: &TcpRepr<'_>) {
        self.trace_push(
            mask,
            key,
            TraceEvent::Segment {
                direction: Direction::In,
                header: SegmentHeader::of(segment),
                retransmission: false,
            },
        );
    }

    /// A segment of a traced connection failed its checksum: the trace says
    /// so (the ports are read without trusting the rest of the header).
    fn trace_bad_checksum(&mut self, src: IpAddr, dst: IpAddr, payload: &[u8]) {
        let (Some(src_port), Some(dst_port)) = (payload.get(0..2), payload.get(2..4)) else {
            return;
        };
        let key = FourTuple {
            local: SocketAddr::new(dst, u16::from_be_bytes([dst_port[0], dst_port[1]])),
            remote: SocketAddr::new(src, u16::from_be_bytes([src_port[0], src_port[1]])),
        };
        let mask = self.trace_mask(key.local, key.remote);
        if mask != 0 {
            self.trace_push(
                mask,
                key,
                TraceEvent::Note(Note::Dropped(DropCause::BadChecksum)),
            );
        }
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
            flow_label: self.isn.flow_label(key.local, key.remote),
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
                    local: SocketAddr::from((quoted.src, quoted.src_port)),
                    remote: SocketAddr::from((quoted.dst, quoted.dst_port)),
                };
                if let Some(id) = self.conns.find(&key) {
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

    /// An ICMPv6 message from `src` to `dst` (one of our addresses).
    pub(super) fn handle_icmpv6(
        &mut self,
        now: Instant,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        payload: &[u8],
    ) {
        let message = match Icmpv6Repr::parse(src, dst, payload) {
            Ok(message) => message,
            Err(e) => return self.stats.drop_packet(drop_reason(e)),
        };
        match message {
            // RFC 4443 §4.2: every node answers echo requests, from the
            // address the request was sent to, with its identifier,
            // sequence number and data.
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                let reply = ControlPacket::Icmpv6 {
                    local: dst,
                    remote: src,
                    message: Icmpv6Message::EchoReply { ident, seq_no },
                    body: data.to_vec(),
                };
                // tcpd does not fragment: a reply that would exceed the MTU
                // (the request came in over-sized) is not sent.
                if reply.wire_len() > usize::from(self.config.mtu) {
                    return self.stats.drop_packet(DropReason::Unsupported);
                }
                self.control.push(reply);
            }
            Icmpv6Repr::PacketTooBig { mtu, invoking } => {
                self.stats.icmp_packet_too_big_received += 1;
                if let Some(id) = self.quoted_connection(invoking) {
                    let quoted = QuotedHeaderV6::parse(invoking).map(|q| SeqNum(q.seq));
                    if let (Some(entry), Ok(seq)) = (self.conns.get_mut(&id), quoted) {
                        entry.conn.handle_packet_too_big(now, mtu, seq);
                    }
                    self.after_conn_call(id, true);
                }
            }
            Icmpv6Repr::DestinationUnreachable { invoking, .. } => {
                self.stats.icmp_unreachable_received += 1;
                if let Some(id) = self.quoted_connection(invoking) {
                    let quoted = QuotedHeaderV6::parse(invoking).map(|q| SeqNum(q.seq));
                    if let (Some(entry), Ok(seq)) = (self.conns.get_mut(&id), quoted) {
                        entry.conn.handle_unreachable(now, seq);
                    }
                    self.after_conn_call(id, true);
                }
            }
            // Time Exceeded and Parameter Problem are soft errors TCP may
            // ignore (RFC 5461 §4, RFC 1122 §4.2.3.9); an echo reply answers
            // nothing we sent.
            Icmpv6Repr::TimeExceeded { .. } | Icmpv6Repr::ParameterProblem { .. } => {}
            Icmpv6Repr::EchoReply { .. } => self.stats.drop_packet(DropReason::Unsupported),
        }
    }

    /// The connection whose segment an ICMPv6 error quotes: the quoted
    /// packet is TCP sent from one of our addresses (RFC 5927 §4.1; the
    /// connection then checks the quoted sequence number).
    fn quoted_connection(&self, invoking: &[u8]) -> Option<ConnId> {
        let quoted = QuotedHeaderV6::parse(invoking).ok()?;
        if quoted.protocol != IpProtocol::Tcp || !self.is_local_v6(quoted.src) {
            return None;
        }
        let key = FourTuple {
            local: SocketAddr::from((quoted.src, quoted.src_port)),
            remote: SocketAddr::from((quoted.dst, quoted.dst_port)),
        };
        self.conns.find(&key)
    }

    /// Answers the IPv6 `packet` with a Parameter Problem (RFC 4443 §3.4),
    /// if it was addressed to us and RFC 4443 §2.4(e) and the rate limit
    /// (§2.4(f)) allow an error about it.
    pub(super) fn send_parameter_problem(
        &mut self,
        now: Instant,
        packet: &[u8],
        problem: ParameterProblem,
    ) {
        let Ok(view) = Ipv6Packet::new_checked(packet) else {
            return;
        };
        let (src, dst) = (view.src(), view.dst());
        // Only packets for us: a stray packet for someone else (dropped as
        // not ours) gets no answer either.
        if !self.is_local_v6(dst) || !self.is_remote_unicast(IpAddr::V6(src)) {
            return;
        }
        // RFC 4443 §2.4(e): never about an ICMPv6 error; the option
        // exception for multicast does not arise (we answer unicast only).
        let is_icmp_error = view.next_header() == u8::from(IpProtocol::Icmpv6)
            && view.payload().first().is_some_and(|kind| *kind < 128);
        if !icmpv6::error_permitted(src, dst, is_icmp_error, false) {
            return;
        }
        if !self.icmp_limit.allow(now) {
            self.stats.icmp_errors_ratelimited += 1;
            return;
        }
        self.control.push(ControlPacket::Icmpv6 {
            local: dst,
            remote: src,
            message: Icmpv6Message::ParameterProblem {
                code: problem.code,
                pointer: problem.pointer,
            },
            body: packet[..packet.len().min(icmpv6::MAX_QUOTE_LEN)].to_vec(),
        });
    }
}

/// The accept queue is at the backlog: no new child may join it.
fn accept_queue_full(listen: &Listener) -> bool {
    listen.accept_queue.len() >= listen.backlog as usize
}
