//! Stack-wide configuration, fixed at [`crate::Stack::new`], and the per-socket
//! options a socket starts with.

use crate::time::Duration;
use core::net::Ipv4Addr;
use ipnet::Ipv6Net;

/// Maximum segment lifetime default: 30 s, so TIME-WAIT (2×MSL) lasts 60 s as
/// on Linux (RFC 9293 §3.4.2 suggests 2 minutes for MSL; Linux uses 60 s TIME-WAIT).
pub const DEFAULT_MSL: Duration = Duration::from_secs(30);

/// When a listener answers a SYN with a SYN cookie instead of keeping state
/// (RFC 4987 §3.6; Linux's `net.ipv4.tcp_syncookies` 0/1/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SynCookieMode {
    /// Never: a SYN that finds the SYN queue full is dropped (tcp_syncookies=0).
    Never,
    /// Only when the listener's SYN queue is full (tcp_syncookies=1, Linux's default).
    #[default]
    Auto,
    /// For every SYN, even with room in the SYN queue (tcp_syncookies=2, for tests).
    Always,
}

impl SynCookieMode {
    /// The name used by the daemon's flag and config key.
    pub fn name(self) -> &'static str {
        match self {
            SynCookieMode::Never => "never",
            SynCookieMode::Auto => "auto",
            SynCookieMode::Always => "always",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "never" => Some(SynCookieMode::Never),
            "auto" => Some(SynCookieMode::Auto),
            "always" => Some(SynCookieMode::Always),
            _ => None,
        }
    }
}

/// Linux's tcp_rmem defaults (min, initial, max): the receive buffer starts
/// at 128 KiB and autotuning may grow it to 6 MiB (issue 10 asks for
/// Linux's documented default maximum; this kernel's sysctl says 32 MiB).
pub const TCP_RMEM: [usize; 3] = [4096, 128 * 1024, 6 * 1024 * 1024];
/// Linux's tcp_wmem defaults (min, initial, max).
pub const TCP_WMEM: [usize; 3] = [4096, 16 * 1024, 4 * 1024 * 1024];

/// Congestion-control algorithms (RFC 5681/6582 NewReno, RFC 8312 CUBIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CongestionAlgorithm {
    NewReno,
    #[default]
    Cubic,
}

impl CongestionAlgorithm {
    /// The Linux-style name: "newreno" or "cubic".
    pub fn name(self) -> &'static str {
        match self {
            CongestionAlgorithm::NewReno => "newreno",
            CongestionAlgorithm::Cubic => "cubic",
        }
    }

    /// Parses a name as [`CongestionAlgorithm::name`] spells it ("reno" is accepted for NewReno).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "newreno" | "reno" => Some(CongestionAlgorithm::NewReno),
            "cubic" => Some(CongestionAlgorithm::Cubic),
            _ => None,
        }
    }
}

/// A time a socket option holds: whole milliseconds, in 32 bits with a
/// niche (milliseconds plus one in a `NonZeroU32`, as [`crate::Instant`]
/// does), so that an `Option<OptionTime>` is 4 bytes. Every connection
/// carries five of them (see [`SocketOptions`]). It holds up to about 49
/// days and saturates there; sub-millisecond parts are dropped. Linux's
/// option times fit: TCP_USER_TIMEOUT is a `u32` of milliseconds, and
/// TCP_KEEPIDLE/TCP_KEEPINTVL (at most 32 767 s), SO_LINGER and
/// TCP_DEFER_ACCEPT are seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptionTime {
    millis_plus_one: core::num::NonZeroU32,
}

impl OptionTime {
    /// Zero (e.g. SO_LINGER's abortive close).
    pub const ZERO: OptionTime = OptionTime::from_millis(0);

    /// `millis` milliseconds, saturating at `u32::MAX - 1`.
    pub const fn from_millis(millis: u32) -> OptionTime {
        let millis = if millis == u32::MAX {
            u32::MAX - 1
        } else {
            millis
        };
        OptionTime {
            millis_plus_one: core::num::NonZeroU32::MIN.saturating_add(millis),
        }
    }

    /// `secs` seconds (saturating, see the type's docs).
    pub const fn from_secs(secs: u32) -> OptionTime {
        OptionTime::from_millis(secs.saturating_mul(1000))
    }

    /// `d` in whole milliseconds (saturating).
    pub fn from_duration(d: Duration) -> OptionTime {
        OptionTime::from_millis(u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }

    /// As a [`Duration`].
    pub const fn get(self) -> Duration {
        Duration::from_millis((self.millis_plus_one.get() - 1) as u64)
    }
}

impl From<Duration> for OptionTime {
    fn from(d: Duration) -> OptionTime {
        OptionTime::from_duration(d)
    }
}

impl From<OptionTime> for Duration {
    fn from(t: OptionTime) -> Duration {
        t.get()
    }
}

/// Options a socket carries (setsockopt-able), with Linux-like defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_REUSEADDR: allow binding a local address whose only users are in TIME-WAIT.
    pub reuse_addr: bool,
    /// TCP_NODELAY: disable Nagle (RFC 9293 §3.7.4).
    pub nodelay: bool,
    /// SO_KEEPALIVE (RFC 1122 §4.2.3.6): off by default.
    pub keepalive: bool,
    /// TCP_KEEPIDLE: idle time before the first probe (Linux default 7200 s).
    pub keep_idle: OptionTime,
    /// TCP_KEEPINTVL: time between probes (Linux default 75 s).
    pub keep_interval: OptionTime,
    /// TCP_KEEPCNT: unanswered probes before the connection is dropped (Linux default 9).
    pub keep_count: u32,
    /// SO_RCVBUF: receive buffer bytes; bounds the advertised window. It
    /// starts at tcp_rmem[1] and grows with the delivery rate (receive
    /// autotuning) unless the user set it (`recv_buffer_locked`).
    pub recv_buffer: usize,
    /// SO_SNDBUF: send buffer bytes; starts at tcp_wmem[1] and grows with
    /// cwnd unless the user set it (`send_buffer_locked`).
    pub send_buffer: usize,
    /// SO_RCVBUF was set: no autotuning, and the window scale fits this
    /// size rather than the autotuning maximum (Linux's SOCK_RCVBUF_LOCK).
    pub recv_buffer_locked: bool,
    /// SO_SNDBUF was set: no send-buffer autotuning (SOCK_SNDBUF_LOCK).
    pub send_buffer_locked: bool,
    /// SO_LINGER: `Some(0)` makes close() abort with RST; `Some(t)` is accepted
    /// and close stays graceful (the daemon does not block close).
    pub linger: Option<OptionTime>,
    /// TCP_CONGESTION.
    pub congestion: CongestionAlgorithm,
    /// TCP_SYNCNT: SYN retransmissions before connect fails with ETIMEDOUT (Linux default 6).
    pub syn_retries: u32,
    /// TCP_USER_TIMEOUT: if set, unacknowledged data older than this aborts
    /// the connection with ETIMEDOUT (RFC 5482); else `max_retries` applies.
    pub user_timeout: Option<OptionTime>,
    /// TCP_MAXSEG set by the user (Linux's `user_mss`): clamps the MSS we
    /// advertise and the one we send with. `None`: MTU - 40.
    pub max_segment: Option<u16>,
    /// TCP_CORK.
    pub cork: bool,
    /// TCP_NOTSENT_LOWAT (`None`: unlimited, Linux's default).
    pub notsent_lowat: Option<u32>,
    /// SO_RCVLOWAT (Linux's default 1).
    pub recv_lowat: usize,
    /// IPV6_V6ONLY (RFC 3493 §5.3): an IPv6 socket bound to `::` takes
    /// IPv6 only. Off by default, as Linux's `bindv6only = 0`: such a
    /// socket accepts IPv4 too, seen as IPv4-mapped addresses. Meaningless
    /// on an IPv4 socket.
    pub v6only: bool,
    /// TCP_DEFER_ACCEPT on a listener: how long a handshake whose peer has
    /// sent no data stays off the accept queue (`None`: off, the default).
    pub defer_accept: Option<OptionTime>,
    /// SO_OOBINLINE: the urgent byte stays in the data stream (off by default).
    pub oob_inline: bool,
    /// IP_TOS (0 by default); the two ECN bits are never taken from it.
    pub ip_tos: u8,
    /// IP_TTL (`None`: the default, 64 as Linux's ip_default_ttl).
    /// The IPv6 counterparts (IPV6_TCLASS, IPV6_UNICAST_HOPS) belong next
    /// to these two, emitted by the IPv6 header path.
    pub ip_ttl: Option<u8>,
    /// IP_MTU_DISCOVER (Linux's default for TCP: WANT, DF set).
    pub pmtu_discovery: crate::socket::PmtuDiscovery,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            reuse_addr: false,
            nodelay: false,
            keepalive: false,
            keep_idle: OptionTime::from_secs(7200),
            keep_interval: OptionTime::from_secs(75),
            keep_count: 9,
            recv_buffer: TCP_RMEM[1],
            send_buffer: TCP_WMEM[1],
            recv_buffer_locked: false,
            send_buffer_locked: false,
            linger: None,
            congestion: CongestionAlgorithm::Cubic,
            syn_retries: 6,
            user_timeout: None,
            max_segment: None,
            cork: false,
            notsent_lowat: None,
            recv_lowat: 1,
            v6only: false,
            defer_accept: None,
            oob_inline: false,
            ip_tos: 0,
            ip_ttl: None,
            pmtu_discovery: crate::socket::PmtuDiscovery::Want,
        }
    }
}

/// The local ports `connect(2)`, `bind(2)` to port 0 and `listen(2)`
/// without a bind choose from: Linux's `net.ipv4.ip_local_port_range`,
/// 32768-60999 by default. (RFC 6056 §3.2 recommends the whole 1024-65535;
/// IANA's dynamic range, RFC 6335 §6, is 49152-65535; tcpd follows Linux,
/// whose users see and tune this range.)
///
/// As on Linux, the scans cover the range's size rounded down to an even
/// number of ports (so that connect's and bind's parity halves split it
/// evenly): a range whose two ends have the same parity never hands out
/// its last port; Linux warns about such a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalPortRange {
    first: u16,
    last: u16,
}

impl LocalPortRange {
    /// Linux's default, 32768-60999 (`inet_init_net`).
    pub const LINUX_DEFAULT: LocalPortRange = LocalPortRange {
        first: 32768,
        last: 60999,
    };

    /// `first..=last`; `None` unless `1 <= first <= last` (the daemon also
    /// refuses ports below 1024, as Linux's sysctl does with its default
    /// `ip_unprivileged_port_start`).
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first >= 1 && first <= last).then_some(LocalPortRange { first, last })
    }

    /// The range's first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The range's last port.
    pub fn last(self) -> u16 {
        self.last
    }

    /// True if `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports the range holds.
    pub fn size(self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// True when both ends have the same parity, so the range's last port
    /// is never picked (Linux: "prefer different parity for start/end values").
    pub fn same_parity_ends(self) -> bool {
        self.first % 2 == self.last % 2 && self.first != self.last
    }
}

impl Default for LocalPortRange {
    fn default() -> Self {
        LocalPortRange::LINUX_DEFAULT
    }
}

impl core::fmt::Display for LocalPortRange {
    /// As the sysctl prints it, comma-separated: `32768,60999`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{},{}", self.first, self.last)
    }
}

/// What the link does for the stack: the offloads of a TUN with a
/// virtio-net header (none in the simulation or with `--offload off`).
/// They only matter to [`crate::Stack::poll_transmit_offload`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkOffload {
    /// The link cuts TCP super-segments into MSS-sized segments (TSO).
    pub segmentation: bool,
    /// The link completes TCP checksums left partial (NEEDS_CSUM).
    pub checksum: bool,
}

/// Stack-wide settings.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// The stack's own IPv4 address.
    pub address: Ipv4Addr,
    /// Prefix length of the link (informational; everything non-local goes out the one link).
    pub prefix_len: u8,
    /// The stack's own IPv6 addresses with their prefixes; empty: IPv4
    /// only. The first is the source of connections whose destination is
    /// in no address's prefix (a small RFC 6724 §5: rule 8, longest
    /// matching prefix, then the order given). Ignored when `mtu` is below
    /// IPv6's minimum of 1280 (RFC 8200 §5), as Linux disables IPv6 on
    /// such a link.
    pub addresses6: Vec<Ipv6Net>,
    /// Link MTU; the advertised MSS is `mtu - 40` over IPv4, `mtu - 60`
    /// over IPv6 (RFC 9293 §3.7.1, RFC 8200 §8.3).
    pub mtu: u16,
    /// Maximum segment lifetime; TIME-WAIT lasts 2×MSL (RFC 9293 §3.3.2).
    pub msl: Duration,
    /// Secret key for initial sequence numbers (RFC 6528 §3); the caller
    /// fills it from the OS random source.
    pub isn_secret: [u8; 16],
    /// Seed for the stack's PRNG (ephemeral ports, timestamp offsets).
    pub rng_seed: u64,
    /// Where ephemeral ports come from (Linux's `ip_local_port_range`).
    pub local_port_range: LocalPortRange,
    /// Largest listen() backlog honoured (Linux's somaxconn default is 4096).
    /// The backlog bounds a listener's accept queue.
    pub max_backlog: u32,
    /// Most children a listener keeps in SYN-RECEIVED (its SYN queue), like
    /// Linux's `tcp_max_syn_backlog` (2048 on the reference kernel).
    pub max_syn_backlog: u32,
    /// SYN cookies when the SYN queue is full (Linux `tcp_syncookies`, default 1 = auto).
    pub syncookies: SynCookieMode,
    /// SYN,ACK retransmissions before an embryonic connection is dropped
    /// (Linux `tcp_synack_retries` = 5: 1+2+4+8+16+32 = 63 s with a 1 s initial RTO).
    pub synack_retries: u32,
    /// Most orphans (connections closed by their user, still delivering
    /// data or FIN); past it the oldest is reset (Linux `tcp_max_orphans`).
    pub max_orphans: u32,
    /// Most bytes all orphans together may hold in their buffers; past it
    /// the oldest is reset (Linux bounds them by `tcp_mem` pressure).
    pub max_orphan_memory: usize,
    /// Bytes all connections together may buffer (send and receive queues,
    /// out-of-order data, orphans included), as Linux's `tcp_mem`
    /// `[low, pressure, high]`: past `pressure` every connection is at
    /// [`crate::MemoryLevel::Pressure`] until the total falls below `low`;
    /// at `high` they are at [`crate::MemoryLevel::Exhausted`] (and data that
    /// does not keep a connection progressing is dropped) until it falls
    /// halfway back to `pressure`. `None`: no stack-wide limit.
    pub tcp_mem: Option<[usize; 3]>,
    /// Retransmissions or zero-window probes before an orphan is dropped
    /// (Linux `tcp_orphan_retries`, whose default 0 means 8).
    pub orphan_retries: u32,
    /// FIN-WAIT-2 timeout of a closed socket (Linux `tcp_fin_timeout`);
    /// `None` is 2×MSL, i.e. Linux's 60 s with the default MSL.
    pub fin_timeout: Option<Duration>,
    /// Data retransmissions before a connection fails with ETIMEDOUT
    /// (Linux tcp_retries2 = 15, RFC 1122 §4.2.3.5 R2).
    pub max_retries: u32,
    /// Lower bound on the RTO. RFC 6298 §2.4 says 1 s; 200 ms is Linux's and the project's choice.
    pub min_rto: Duration,
    /// Upper bound on the RTO (RFC 6298 §2.5 allows a maximum of at least 60 s; Linux uses 120 s).
    pub max_rto: Duration,
    /// Initial RTO before any RTT sample (RFC 6298 §2.1: 1 s).
    pub initial_rto: Duration,
    /// Delayed-ACK timeout (RFC 9293 §3.8.6.3 says < 0.5 s; Linux uses at most 40 ms quick/200 ms; tcpd uses 40 ms).
    pub delayed_ack: Duration,
    /// Options new sockets start with.
    pub socket_defaults: SocketOptions,
    /// Every connection's initial sequence number, instead of RFC 6528's
    /// keyed hash: only for deterministic runs (tests, the seed's diagrams
    /// through `tcpctl trace`). Predictable ISNs invite blind injection
    /// (RFC 6528 §1), so the daemon never sets it.
    pub fixed_iss: Option<u32>,
    /// Largest receive buffer autotuning may reach (tcp_rmem[2]); it also
    /// sets the window scale we offer (Linux's tcp_select_initial_window).
    pub rmem_max: usize,
    /// Largest send buffer autotuning may reach (tcp_wmem[2]).
    pub wmem_max: usize,
    /// What the link does for the stack (default: nothing).
    pub offload: LinkOffload,
    /// Bits set in every [`crate::SocketHandle`] this stack hands out (0 by
    /// default): the daemon runs one stack per shard and tags each one's
    /// handles with the shard's number, so a handle names its stack.
    pub handle_tag: u64,
}

impl StackConfig {
    /// A configuration with defaults for everything but the address.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Self {
        StackConfig {
            address,
            prefix_len,
            addresses6: Vec::new(),
            mtu: 1500,
            msl: DEFAULT_MSL,
            isn_secret: [0; 16],
            rng_seed: 0,
            local_port_range: LocalPortRange::LINUX_DEFAULT,
            max_backlog: 4096,
            max_syn_backlog: 2048,
            syncookies: SynCookieMode::Auto,
            synack_retries: 5,
            max_orphans: 4096,
            max_orphan_memory: 64 * 1024 * 1024,
            tcp_mem: None,
            orphan_retries: 8,
            fin_timeout: None,
            max_retries: 15,
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            initial_rto: Duration::from_secs(1),
            delayed_ack: Duration::from_millis(40),
            socket_defaults: SocketOptions::default(),
            fixed_iss: None,
            rmem_max: TCP_RMEM[2],
            wmem_max: TCP_WMEM[2],
            offload: LinkOffload::default(),
            handle_tag: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the project promises (issue 2 checklist): MSL 30 s
    /// (TIME-WAIT 60 s), RFC 6298 timing with Linux's 200 ms floor and
    /// 120 s ceiling, 40 ms delayed ACKs, CUBIC, Nagle on, keepalive off with
    /// Linux's idle/interval/count, Linux's retry counts.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = StackConfig::new(Ipv4Addr::new(10, 0, 0, 1), 24);
        assert_eq!(config.msl, Duration::from_secs(30));
        assert_eq!(config.min_rto, Duration::from_millis(200));
        assert_eq!(config.max_rto, Duration::from_secs(120));
        assert_eq!(config.initial_rto, Duration::from_secs(1));
        assert_eq!(config.delayed_ack, Duration::from_millis(40));
        assert_eq!(config.max_retries, 15);
        assert_eq!(config.synack_retries, 5);
        assert_eq!(config.max_syn_backlog, 2048);
        assert_eq!(config.syncookies, SynCookieMode::Auto);
        assert_eq!(config.orphan_retries, 8);
        assert_eq!(config.mtu, 1500);
        assert_eq!(
            (
                config.local_port_range.first(),
                config.local_port_range.last()
            ),
            (32768, 60999),
            "Linux's ip_local_port_range"
        );
        let options = config.socket_defaults;
        assert_eq!(options.congestion, CongestionAlgorithm::Cubic);
        assert_eq!(CongestionAlgorithm::default(), CongestionAlgorithm::Cubic);
        assert!(!options.nodelay, "Nagle is on by default");
        assert!(!options.keepalive);
        assert_eq!(options.keep_idle.get(), Duration::from_secs(7200));
        assert_eq!(options.keep_interval.get(), Duration::from_secs(75));
        assert_eq!(options.keep_count, 9);
        assert_eq!(options.syn_retries, 6);
        assert_eq!(options.linger, None);
    }

    #[test]
    fn congestion_names_round_trip() {
        for algorithm in [CongestionAlgorithm::NewReno, CongestionAlgorithm::Cubic] {
            assert_eq!(
                CongestionAlgorithm::from_name(algorithm.name()),
                Some(algorithm)
            );
        }
        assert_eq!(
            CongestionAlgorithm::from_name("Reno"),
            Some(CongestionAlgorithm::NewReno)
        );
        assert_eq!(CongestionAlgorithm::from_name("bbr"), None);
    }
}
