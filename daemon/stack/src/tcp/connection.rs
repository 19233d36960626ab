//! One TCP connection: the transmission control block (RFC 9293 §3.3.1) and
//! the event processing of RFC 9293 §3.10, sans-IO.
//!
//! The stack owns every `Connection` and routes to it the segments of its
//! 4-tuple (checksum already verified), the user calls, and timeouts. A
//! connection never touches other connections or the IP layer: it emits whole
//! TCP segments (header, options, payload, checksum) through
//! [`Connection::poll_transmit`] and says when it next needs time through
//! [`Connection::poll_timeout`].

use crate::config::SocketOptions;
use crate::error::{ConnError, RecvError, SendError, SocketError};
use crate::seq::SeqNum;
use crate::socket::{Readiness, Shutdown, SockOption};
use crate::tcp::TcpState;
use crate::time::{Duration, Instant};
use crate::wire::TcpRepr;
use core::net::SocketAddrV4;

/// Stack-wide timing and limits a connection needs (copied from `StackConfig`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfig {
    /// Link MTU: the MSS we advertise is `mtu - 40` (RFC 9293 §3.7.1).
    pub mtu: u16,
    pub msl: Duration,
    pub max_retries: u32,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub initial_rto: Duration,
    pub delayed_ack: Duration,
}

/// What a new connection starts from.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionParams {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Our initial send sequence number (RFC 6528, from the stack).
    pub iss: SeqNum,
    /// Per-connection offset added to the timestamp clock (RFC 7323 §5.4).
    pub ts_offset: u32,
    pub options: SocketOptions,
    pub config: ConnectionConfig,
}

/// Per-connection counters and estimator values, for the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub recv_queue: usize,
    pub send_queue: usize,
    pub srtt: Duration,
    pub rttvar: Duration,
    pub rto: Duration,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub retransmits: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub mss: u16,
    pub segments_in: u64,
    pub segments_out: u64,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    _private: (),
}

impl Connection {
    /// Active open (RFC 9293 §3.10.1): SYN-SENT with a SYN ready to send.
    pub fn connect(params: ConnectionParams, now: Instant) -> Connection {
        let _ = (params, now);
        todo!("helper: connection")
    }

    /// Passive open: a listener received an acceptable SYN (RFC 9293
    /// §3.10.7.2, LISTEN, third check). SYN-RECEIVED with a SYN-ACK ready.
    pub fn accept_syn(params: ConnectionParams, syn: &TcpRepr<'_>, now: Instant) -> Connection {
        let _ = (params, syn, now);
        todo!()
    }

    /// A segment of this connection's 4-tuple arrived (RFC 9293 §3.10.7).
    pub fn handle_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let _ = (now, seg);
        todo!()
    }

    /// ICMP destination unreachable quoting one of our segments with `quoted_seq`.
    /// Code 4 (fragmentation needed) lowers the MSS to `next_hop_mtu - 40`
    /// (RFC 1191); others are soft errors (RFC 1122 §4.2.3.9) that only fail
    /// a connection still in SYN-SENT.
    pub fn handle_icmp_unreachable(
        &mut self,
        now: Instant,
        code: u8,
        next_hop_mtu: u16,
        quoted_seq: SeqNum,
    ) {
        let _ = (now, code, next_hop_mtu, quoted_seq);
        todo!()
    }

    /// Writes the next segment to send (TCP header + options + payload, with
    /// the checksum) into `buf` and returns its length; `None` when nothing is
    /// due. `buf` holds at least `mtu - 20` bytes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let _ = (now, buf);
        todo!()
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Runs whatever timers have expired at `now` (retransmission, delayed
    /// ACK, persist, keepalive, TIME-WAIT...).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Queues bytes for sending (RFC 9293 §3.10.2).
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<usize, SendError> {
        let _ = (now, data);
        todo!()
    }

    /// Reads in-order bytes (RFC 9293 §3.10.3); `Ok(0)` is end of stream.
    pub fn recv(&mut self, now: Instant, out: &mut [u8], peek: bool) -> Result<usize, RecvError> {
        let _ = (now, out, peek);
        todo!()
    }

    /// shutdown(2): `Write` sends FIN after queued data; `Read` discards
    /// further data.
    pub fn shutdown(&mut self, now: Instant, how: Shutdown) {
        let _ = (now, how);
        todo!()
    }

    /// close(2) by the user (RFC 9293 §3.10.4): FIN after queued data, or RST
    /// at once when unread data remains or linger is zero (as Linux).
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// ABORT (RFC 9293 §3.10.5): RST if synchronized, then CLOSED; `why` becomes the pending error.
    pub fn abort(&mut self, now: Instant, why: ConnError) {
        let _ = (now, why);
        todo!()
    }

    pub fn state(&self) -> TcpState {
        todo!()
    }

    /// True once CLOSED with nothing left to send: the stack may forget it.
    pub fn is_finished(&self) -> bool {
        todo!()
    }

    pub fn local(&self) -> SocketAddrV4 {
        todo!()
    }

    pub fn remote(&self) -> SocketAddrV4 {
        todo!()
    }

    /// Current readiness (poll bits).
    pub fn readiness(&self) -> Readiness {
        todo!()
    }

    /// Takes the pending error (SO_ERROR semantics).
    pub fn take_error(&mut self) -> Option<ConnError> {
        todo!()
    }

    /// Appends the state transitions since the last call, oldest first.
    pub fn drain_state_changes(&mut self, out: &mut Vec<(TcpState, TcpState)>) {
        let _ = out;
        todo!()
    }

    pub fn options(&self) -> &SocketOptions {
        todo!()
    }

    /// Applies an option; buffer sizes and timers take effect at once.
    pub fn set_option(&mut self, now: Instant, option: SockOption) -> Result<(), SocketError> {
        let _ = (now, option);
        todo!()
    }

    pub fn stats(&self) -> ConnectionStats {
        todo!()
    }
}
