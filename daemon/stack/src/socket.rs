//! The socket-level vocabulary the stack exposes to its owner (the daemon):
//! handles, readiness bits, events, options and per-connection info.

use crate::config::CongestionAlgorithm;
use crate::error::ConnError;
use crate::tcp::TcpState;
use crate::time::Duration;
use core::net::SocketAddr;

/// A user-visible socket. Handles are never reused within one stack, so a
/// stale handle can only fail (EBADF), never reach another socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketHandle(pub u64);

/// A socket's address family, socket(2)'s domain (AF_INET, AF_INET6).
///
/// Connections run over the family of their packets; an IPv6 socket
/// talking IPv4 (a `::` listener's IPv4 child, a connect to an
/// IPv4-mapped address, RFC 4291 §2.5.5.2) shows its addresses to its
/// user as IPv4-mapped, as Linux does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpFamily {
    #[default]
    V4,
    V6,
}

impl IpFamily {
    /// The family of `addr` as it appears (an IPv4-mapped address is V6).
    pub fn of(addr: &SocketAddr) -> IpFamily {
        match addr {
            SocketAddr::V4(_) => IpFamily::V4,
            SocketAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The unspecified endpoint of the family (0.0.0.0:0 or `[::]:0`).
    pub fn unspecified(self) -> SocketAddr {
        match self {
            IpFamily::V4 => SocketAddr::from(([0, 0, 0, 0], 0)),
            IpFamily::V6 => SocketAddr::from(([0u16; 8], 0)),
        }
    }
}

/// Readiness bits: poll(2)'s events with Linux's values (the shared
/// `tcpd_types::PollFlags`), so the daemon passes them through unchanged.
pub type Readiness = tcpd_types::PollFlags;

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
        local: SocketAddr,
        remote: SocketAddr,
        old: TcpState,
        new: TcpState,
    },
}

/// How much a connection may still grow its buffers: set per socket by the
/// stack's user from its own memory accounting (the daemon's per-session
/// quota), and stack-wide from [`crate::StackConfig::tcp_mem`]; a
/// connection obeys the stricter of the two. Levels are ordered.
///
/// Modelled on Linux under `tcp_mem` pressure (`tcp_under_memory_pressure`,
/// `sk_wmem_schedule`/`sk_rmem_schedule` failing past the hard limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryLevel {
    /// Buffers as SO_SNDBUF/SO_RCVBUF and autotuning allow.
    #[default]
    Normal,
    /// No buffer autotuning, and a receive window of at most four segments
    /// beyond what is already promised (Linux clamps `rcv_ssthresh` to
    /// 4 × advmss under pressure). Writes are still accepted.
    Pressure,
    /// Nothing more: the send queue accepts no byte (writes would block, the
    /// socket is not writable), and the receive window's right edge stays
    /// where it is — it never moves left either (RFC 9293 §3.8.6.2.1), so
    /// the peer may still fill what was advertised.
    Full,
    /// `Full`, and what was advertised need not be buffered either:
    /// arriving data is kept only while the receive queue is empty (so the
    /// connection still progresses) and dropped otherwise, for the peer to
    /// retransmit — as Linux does when a socket's memory charge fails
    /// (`tcp_mem`'s hard limit, a memory cgroup's limit; TCPRcvQDrop).
    Exhausted,
}

/// How to shut a connection down (shutdown(2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// An option name, for [`crate::Stack::get_option`] (the shared
/// `tcpd_types::OptionName`: the one list of options tcpd supports).
pub use tcpd_types::OptionName;

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
    SynCount(u32),
    UserTimeout(Option<Duration>),
    /// TCP_CORK: hold partial segments until uncorked or 200 ms passed.
    Cork(bool),
    /// TCP_NOTSENT_LOWAT: writable only while fewer unsent bytes than
    /// this are queued (`None`: Linux's default, unlimited).
    NotSentLowat(Option<u32>),
    /// TCP_QUICKACK: ACK at once for a while (true), or go back to
    /// delayed ACKs (false). Not sticky, as on Linux.
    QuickAck(bool),
    /// SO_RCVLOWAT: readable only with at least this many bytes (or EOF).
    RecvLowat(usize),
    /// IPV6_V6ONLY: an IPv6 socket bound to `::` takes no IPv4 (settable
    /// before bind only; ENOPROTOOPT on IPv4 sockets, as Linux).
    V6Only(bool),
    /// TCP_DEFER_ACCEPT: a listener keeps a connection whose peer sent no
    /// data off the accept queue for this long (`None`: off).
    DeferAccept(Option<Duration>),
    /// SO_OOBINLINE: the urgent byte stays in the data stream.
    OobInline(bool),
    /// IP_TOS: the TOS byte of every IPv4 packet (the ECN bits are the
    /// stack's, as on Linux for TCP).
    IpTos(u8),
    /// IP_TTL: the time to live of every IPv4 packet (`None`: the default, 64).
    IpTtl(Option<u8>),
    /// IP_MTU_DISCOVER.
    MtuDiscover(PmtuDiscovery),
    /// SIOCATMARK (read only).
    AtMark(bool),
}

/// IP_MTU_DISCOVER modes, with Linux's values (`IP_PMTUDISC_*`). For TCP
/// they only decide the DF bit: DONT clears it; the others set it (tcpd
/// always does RFC 1191 discovery from ICMP "fragmentation needed" and
/// never fragments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PmtuDiscovery {
    Dont = 0,
    /// Linux's default for TCP (ip_no_pmtu_disc = 0).
    #[default]
    Want = 1,
    Do = 2,
    Probe = 3,
    Interface = 4,
    Omit = 5,
}

impl PmtuDiscovery {
    /// The mode with Linux's number; `None` (EINVAL) above 5.
    pub fn from_raw(raw: i64) -> Option<PmtuDiscovery> {
        Some(match raw {
            0 => PmtuDiscovery::Dont,
            1 => PmtuDiscovery::Want,
            2 => PmtuDiscovery::Do,
            3 => PmtuDiscovery::Probe,
            4 => PmtuDiscovery::Interface,
            5 => PmtuDiscovery::Omit,
            _ => return None,
        })
    }

    /// Whether packets carry DF.
    pub fn dont_fragment(self) -> bool {
        self != PmtuDiscovery::Dont
    }
}

/// send(2) flags (the shared `tcpd_types::SendFlags`, Linux's `MSG_*` values).
pub use tcpd_types::SendFlags;

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
    /// Window reductions undone because they proved spurious (RFC 3522
    /// Eifel detection or RFC 3708 D-SACKs; Linux's TCPFullUndo,
    /// TCPPartialUndo, TCPDSACKUndo and TCPLossUndo together).
    pub undos: u64,
    /// Of those, reductions that included a retransmission timeout
    /// (Linux's TCPSpuriousRTOs).
    pub spurious_rtos: u64,
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

/// Linux's `tcpi_ca_state`: where the sender's loss recovery is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CaState {
    /// Nothing outstanding is in doubt (TCP_CA_Open).
    #[default]
    Open = 0,
    /// SACKs or duplicate ACKs seen, no loss declared (TCP_CA_Disorder).
    Disorder = 1,
    /// Fast recovery (TCP_CA_Recovery).
    Recovery = 3,
    /// After a retransmission timeout (TCP_CA_Loss).
    Loss = 4,
}

bitflags::bitflags! {
    /// Linux's `tcpi_options` bits: what the handshake negotiated.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcpInfoOptions: u8 {
        const TIMESTAMPS = 1;
        const SACK = 2;
        const WSCALE = 4;
    }
}

/// TCP_INFO: Linux's `struct tcp_info` fields, typed, in Linux's units
/// (microseconds for times measured in µs there, milliseconds for the
/// `last_*` ages, segments for window and queue counts). The C shim lays it
/// out as Linux's struct; fields tcpd has no notion of are zero there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: TcpState,
    pub ca_state: CaState,
    /// Consecutive retransmission timeouts of the current series.
    pub retransmits: u8,
    /// Unanswered zero-window or keepalive probes.
    pub probes: u8,
    /// RTO backoff exponent.
    pub backoff: u8,
    pub options: TcpInfoOptions,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub rto_us: u32,
    /// Delayed-ACK timeout.
    pub ato_us: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    /// Segments in flight, SACKed, deemed lost, retransmitted and in flight.
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    pub pmtu: u32,
    /// The window we may advertise at most now (bytes).
    pub rcv_ssthresh: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    /// Slow-start threshold and congestion window, segments.
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub advmss: u32,
    /// RACK's reordering degree, segments (Linux's default 3).
    pub reordering: u32,
    /// The receiver's RTT estimate and the autotuned receive space.
    pub rcv_rtt_us: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    /// Bytes written by the application and not yet sent.
    pub notsent_bytes: u32,
    pub min_rtt_us: u32,
    /// Delivery rate over the last RTT, bytes per second (cwnd / SRTT).
    pub delivery_rate: u64,
    pub dsack_dups: u32,
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
}

/// A snapshot of one socket or connection for the admin API (like `ss -ti`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    /// `None` for connections with no user handle (TIME-WAIT after close, unaccepted).
    pub handle: Option<SocketHandle>,
    pub state: TcpState,
    pub local: SocketAddr,
    /// 0.0.0.0:0 (`[::]:0` for IPv6 sockets) for listeners and unconnected sockets.
    pub remote: SocketAddr,
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
