//! The socket-level vocabulary the stack exposes to its owner (the daemon):
//! handles, readiness bits, events, options and per-connection info.

use crate::config::CongestionAlgorithm;
use crate::error::ConnError;
use crate::tcp::TcpState;
use crate::time::Duration;
use core::net::SocketAddrV4;

/// A user-visible socket. Handles are never reused within one stack, so a
/// stale handle can only fail (EBADF), never reach another socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketHandle(pub u64);

/// Readiness bits, with the values of poll(2)'s events so the daemon can pass them through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Readiness(pub u32);

impl Readiness {
    /// Readable: data, EOF, a pending error, or (listener) a connection to accept.
    pub const IN: Readiness = Readiness(0x001);
    /// Writable: send-buffer space; a connect has completed.
    pub const OUT: Readiness = Readiness(0x004);
    /// A pending error (SO_ERROR).
    pub const ERR: Readiness = Readiness(0x008);
    /// Both directions are closed.
    pub const HUP: Readiness = Readiness(0x010);
    /// The peer has closed its sending side (FIN received).
    pub const RDHUP: Readiness = Readiness(0x2000);

    pub const fn empty() -> Self {
        Readiness(0)
    }
    pub const fn contains(self, o: Readiness) -> bool {
        self.0 & o.0 == o.0
    }
    pub const fn intersects(self, o: Readiness) -> bool {
        self.0 & o.0 != 0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, o: Readiness) -> Readiness {
        Readiness(self.0 | o.0)
    }
}

impl core::ops::BitOrAssign for Readiness {
    fn bitor_assign(&mut self, o: Readiness) {
        self.0 |= o.0;
    }
}

impl core::ops::BitAnd for Readiness {
    type Output = Readiness;
    fn bitand(self, o: Readiness) -> Readiness {
        Readiness(self.0 & o.0)
    }
}

/// Something the owner of the stack may want to act on, drained with
/// [`crate::Stack::poll_event`]. The daemon never polls sockets: it waits for these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackEvent {
    /// A socket's readiness changed; `ready` is the new full set.
    Readiness {
        socket: SocketHandle,
        ready: Readiness,
    },
    /// A connection moved between RFC 9293 states (for the admin watch stream).
    /// `socket` is `None` for connections without a handle (not yet accepted, or closed by the user).
    StateChange {
        socket: Option<SocketHandle>,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        old: TcpState,
        new: TcpState,
    },
}

/// How to shut a connection down (shutdown(2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// An option name, for [`crate::Stack::get_option`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionName {
    ReuseAddr,
    NoDelay,
    KeepAlive,
    KeepIdle,
    KeepInterval,
    KeepCount,
    RecvBuffer,
    SendBuffer,
    Linger,
    /// SO_ERROR: reading it clears the pending error.
    Error,
    Congestion,
    /// TCP_MAXSEG: the effective send MSS (read only).
    MaxSegment,
    SynRetries,
    UserTimeout,
}

/// An option with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOption {
    ReuseAddr(bool),
    NoDelay(bool),
    KeepAlive(bool),
    KeepIdle(Duration),
    KeepInterval(Duration),
    KeepCount(u32),
    RecvBuffer(usize),
    SendBuffer(usize),
    Linger(Option<Duration>),
    Error(Option<ConnError>),
    Congestion(CongestionAlgorithm),
    MaxSegment(u16),
    SynRetries(u32),
    UserTimeout(Option<Duration>),
}

/// Loss recovery and buffer autotuning of one connection (like the extra
/// lines of `ss -ti`), for the admin API and TCP_INFO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Retransmission timeouts (RFC 6298).
    pub rto_timeouts: u64,
    /// Fast-recovery episodes (PRR, RFC 6937) entered.
    pub fast_recoveries: u64,
    /// Fast recovery is under way.
    pub in_recovery: bool,
    /// Tail-loss probes sent (RFC 8985 §7).
    pub tlp_probes: u64,
    /// Probes that repaired a tail loss.
    pub tlp_recoveries: u64,
    /// D-SACK blocks received (RFC 2883).
    pub dsacks_received: u64,
    /// RACK's reordering window (RFC 8985 §6.2).
    pub reorder_window: Duration,
    /// Bytes sent and not yet acknowledged (SND.NXT - SND.UNA).
    pub unacked: usize,
    /// Bytes of that SACKed, and deemed lost (not yet retransmitted).
    pub sacked: usize,
    pub lost: usize,
    /// The receive buffer's current size (autotuned unless SO_RCVBUF was set).
    pub recv_buffer: usize,
    /// The send buffer's current size (autotuned unless SO_SNDBUF was set).
    pub send_buffer: usize,
}

/// A snapshot of one socket or connection for the admin API (like `ss -ti`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    /// `None` for connections with no user handle (TIME-WAIT after close, unaccepted).
    pub handle: Option<SocketHandle>,
    pub state: TcpState,
    pub local: SocketAddrV4,
    /// 0.0.0.0:0 for listeners and unconnected sockets.
    pub remote: SocketAddrV4,
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
    pub congestion: CongestionAlgorithm,
    pub mss: u16,
    /// The peer's receive window, bytes (SND.WND).
    pub snd_wnd: usize,
    /// The window we last advertised, bytes (RCV.WND).
    pub rcv_wnd: usize,
    pub listen_backlog: u32,
    pub accept_queue: u32,
    /// Loss recovery and buffer sizes (all zero for listeners).
    pub recovery: RecoveryInfo,
}
