//! The stack: one IPv4 interface and every socket on it.
//!
//! Owns the socket table (handles → unbound sockets, listeners, connections),
//! demultiplexing by 4-tuple through a hash map, listeners by local port with
//! their SYN and accept queues, ephemeral ports, ICMP (echo, unreachable), RST
//! for segments to closed ports, stack-wide counters and the event queue its
//! owner drains. Invariants: a handle maps to at most one socket and is never
//! reused; every live 4-tuple maps to exactly one connection; nothing here
//! reads a clock or does I/O.

use crate::config::StackConfig;
use crate::error::{
    AcceptError, BindError, ConnectError, ListenError, RecvError, SendError, ShutdownError,
    SocketError,
};
use crate::socket::{
    OptionName, Readiness, Shutdown, SockOption, SocketHandle, SocketInfo, StackEvent,
};
use crate::stats::Stats;
use crate::time::Instant;
use core::net::SocketAddrV4;

/// The sans-IO TCP/IPv4 stack.
///
/// Drive it with: [`Stack::handle_packet`] for every IPv4 packet from the
/// link, [`Stack::poll_transmit`] until `None` after anything changed,
/// [`Stack::handle_timeout`] at [`Stack::poll_timeout`], and
/// [`Stack::poll_event`] to learn which sockets became ready.
#[derive(Debug)]
pub struct Stack {
    _private: (),
}

impl Stack {
    pub fn new(config: StackConfig, now: Instant) -> Stack {
        let _ = (config, now);
        todo!("helper: stack")
    }

    pub fn config(&self) -> &StackConfig {
        todo!()
    }

    // ------------------------------------------------------------ link side

    /// One IPv4 packet from the link. Malformed packets are dropped and counted.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let _ = (now, packet);
        todo!()
    }

    /// Writes the next IPv4 packet to send into `buf` (at least MTU bytes)
    /// and returns its length; `None` when nothing is due.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let _ = (now, buf);
        todo!()
    }

    /// The earliest instant at which [`Stack::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Runs expired timers of every connection.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// The next event (readiness change or state change), oldest first.
    pub fn poll_event(&mut self) -> Option<StackEvent> {
        todo!()
    }

    // ------------------------------------------------------------ socket side

    /// A new, unbound socket (socket(2)).
    pub fn socket(&mut self) -> SocketHandle {
        todo!()
    }

    /// bind(2). Address 0.0.0.0 or the stack's own; port 0 picks an ephemeral port.
    pub fn bind(&mut self, socket: SocketHandle, addr: SocketAddrV4) -> Result<(), BindError> {
        let _ = (socket, addr);
        todo!()
    }

    /// listen(2); binds an ephemeral port first if unbound. `backlog` is
    /// clamped to [1, max_backlog].
    pub fn listen(&mut self, socket: SocketHandle, backlog: u32) -> Result<(), ListenError> {
        let _ = (socket, backlog);
        todo!()
    }

    /// accept(2): a completed connection and its peer address.
    pub fn accept(
        &mut self,
        socket: SocketHandle,
    ) -> Result<(SocketHandle, SocketAddrV4), AcceptError> {
        let _ = socket;
        todo!()
    }

    /// connect(2), always non-blocking: starts the handshake. Completion is a
    /// readiness event (OUT, or ERR with the error in SO_ERROR).
    pub fn connect(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        remote: SocketAddrV4,
    ) -> Result<(), ConnectError> {
        let _ = (now, socket, remote);
        todo!()
    }

    pub fn send(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        data: &[u8],
    ) -> Result<usize, SendError> {
        let _ = (now, socket, data);
        todo!()
    }

    /// `Ok(0)` is end of stream.
    pub fn recv(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        out: &mut [u8],
        peek: bool,
    ) -> Result<usize, RecvError> {
        let _ = (now, socket, out, peek);
        todo!()
    }

    pub fn shutdown(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        how: Shutdown,
    ) -> Result<(), ShutdownError> {
        let _ = (now, socket, how);
        todo!()
    }

    /// close(2): releases the handle at once; the connection finishes on its
    /// own (FIN, TIME-WAIT) or is reset if unread data remains. Closing a
    /// listener resets its unaccepted connections.
    pub fn close(&mut self, now: Instant, socket: SocketHandle) -> Result<(), SocketError> {
        let _ = (now, socket);
        todo!()
    }

    /// Aborts with RST every connection between `local` and `remote` (admin
    /// kill); returns how many. Their sockets report ECONNABORTED.
    pub fn abort_matching(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> usize {
        let _ = (now, local, remote);
        todo!()
    }

    pub fn local_addr(&self, socket: SocketHandle) -> Result<SocketAddrV4, SocketError> {
        let _ = socket;
        todo!()
    }

    pub fn peer_addr(&self, socket: SocketHandle) -> Result<SocketAddrV4, SocketError> {
        let _ = socket;
        todo!()
    }

    pub fn set_option(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        option: SockOption,
    ) -> Result<(), SocketError> {
        let _ = (now, socket, option);
        todo!()
    }

    /// Reading `OptionName::Error` clears the pending error.
    pub fn get_option(
        &mut self,
        socket: SocketHandle,
        name: OptionName,
    ) -> Result<SockOption, SocketError> {
        let _ = (socket, name);
        todo!()
    }

    /// Current readiness of a socket.
    pub fn readiness(&self, socket: SocketHandle) -> Result<Readiness, SocketError> {
        let _ = socket;
        todo!()
    }

    /// One socket's info.
    pub fn socket_info(&self, socket: SocketHandle) -> Result<SocketInfo, SocketError> {
        let _ = socket;
        todo!()
    }

    /// Every socket and connection (including unaccepted and TIME-WAIT ones).
    pub fn sockets(&self) -> Vec<SocketInfo> {
        todo!()
    }

    pub fn stats(&self) -> &Stats {
        todo!()
    }
}
