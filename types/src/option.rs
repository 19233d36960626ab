//! [`OptionName`]: the socket options tcpd supports, and what Linux accepts
//! for each ([`ValueKind`]).
//!
//! The table here is the one place an option is declared: the stack's
//! `get_option`/`set_option`, the proto enum `tcpd.v2.SocketOption` (mapped
//! in `tcpd-proto`), the daemon's validation of wire values, the Rust
//! client's typed `SockOption` and the C shim's `(level, optname)` lookup all
//! derive from it. Adding an option: a variant here, its row in each `match`
//! below, then the compiler lists every place that must handle it.

use libc::{IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, SOL_SOCKET, c_int};

/// A socket option tcpd supports, named after what it does; [`Self::c_name`]
/// gives the Linux constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OptionName {
    /// `SO_REUSEADDR`: bind may reuse a local address still in TIME-WAIT.
    ReuseAddr,
    /// `TCP_NODELAY`: disable Nagle's algorithm (RFC 9293 §3.7.4).
    NoDelay,
    /// `SO_KEEPALIVE`: keep-alive probes on an idle connection (RFC 9293 §3.8.4).
    KeepAlive,
    /// `TCP_KEEPIDLE`: idle seconds before the first keep-alive probe.
    KeepIdle,
    /// `TCP_KEEPINTVL`: seconds between keep-alive probes.
    KeepInterval,
    /// `TCP_KEEPCNT`: unanswered probes before the connection is dropped.
    KeepCount,
    /// `SO_RCVBUF`: receive buffer size in bytes (setting it stops autotuning).
    RecvBuffer,
    /// `SO_SNDBUF`: send buffer size in bytes (setting it stops autotuning).
    SendBuffer,
    /// `SO_LINGER`: how close(2) treats unsent data.
    Linger,
    /// `SO_ERROR` (read only): the pending error; reading clears it.
    Error,
    /// `TCP_CONGESTION`: the congestion control algorithm's name.
    Congestion,
    /// `TCP_MAXSEG`: the effective send MSS; set, a clamp on it (0 clears).
    MaxSegment,
    /// `TCP_SYNCNT`: SYN retransmissions before connect fails with ETIMEDOUT.
    SynCount,
    /// `TCP_USER_TIMEOUT`: milliseconds unacknowledged data may wait before
    /// the connection is dropped (RFC 9293 §3.8.3); 0 is the default.
    UserTimeout,
    /// `TCP_CORK`: hold partial segments until uncorked (200 ms at most).
    Cork,
    /// `TCP_NOTSENT_LOWAT`: writable only while fewer unsent bytes are queued.
    NotSentLowat,
    /// `TCP_QUICKACK`: acknowledge at once for a while (not sticky).
    QuickAck,
    /// `SO_RCVLOWAT`: bytes needed before a read is worthwhile.
    RecvLowat,
    /// `IPV6_V6ONLY`: an IPv6 socket bound to `::` takes IPv6 only, not
    /// IPv4 as IPv4-mapped addresses (RFC 3493 §5.3; off by default, as
    /// Linux's `bindv6only = 0`). Set before bind; IPv6 sockets only.
    V6Only,
    /// `TCP_DEFER_ACCEPT` (listener): seconds a connection whose peer sent
    /// no data stays off the accept queue; read back rounded up to whole
    /// SYN,ACK retransmission periods, as Linux does.
    DeferAccept,
    /// `SO_OOBINLINE`: the urgent byte stays in the data stream.
    OobInline,
    /// `IP_TOS`: the IPv4 TOS byte (the ECN bits are the stack's).
    IpTos,
    /// `IP_TTL`: 1..=255, -1 for the default (64).
    IpTtl,
    /// `IP_MTU_DISCOVER`: `IP_PMTUDISC_DONT` (0) .. `IP_PMTUDISC_OMIT` (5).
    MtuDiscover,
    /// `TCP_INFO` (read only): Linux's `struct tcp_info`.
    TcpInfo,
    /// `SIOCATMARK` (read only; an ioctl on Linux, `sockatmark(3)`): the
    /// next read starts at the urgent mark.
    AtMark,
    // The IPv6 counterparts (IPV6_TCLASS, IPV6_UNICAST_HOPS,
    // IPV6_MTU_DISCOVER) go here, with `IPPROTO_IPV6` rows below.
}

/// The C type of an option's value and the values Linux's setsockopt(2)
/// accepts for it (others are `EINVAL` before the socket is touched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// An `int` read as a boolean (non-zero = on); read back as 0 or 1.
    Flag,
    /// An `int` within `min..=max`.
    Int { min: i64, max: i64 },
    /// An unsigned 32-bit quantity passed as an `int`: every value is
    /// accepted, a negative one standing for its two's-complement unsigned
    /// value (`-1` is `u32::MAX`), as Linux reads `SO_RCVBUF`, `SO_SNDBUF`
    /// and `TCP_NOTSENT_LOWAT`.
    Unsigned,
    /// A `struct linger`.
    Linger,
    /// A NUL-terminated name (`TCP_CA_NAME_MAX` = 16 bytes with the NUL).
    Text,
    /// Linux's `struct tcp_info` (read only).
    TcpInfo,
}

impl ValueKind {
    /// Any `int`.
    pub const ANY_INT: ValueKind = ValueKind::Int {
        min: i32::MIN as i64,
        max: i32::MAX as i64,
    };

    /// Reads an integer value as Linux would: `None` when it is out of the
    /// accepted range; an [`ValueKind::Unsigned`] value is returned as its
    /// unsigned reading. Flags read as 0 or 1.
    pub fn accept_int(self, value: i64) -> Option<i64> {
        match self {
            ValueKind::Flag => Some(i64::from(value != 0)),
            ValueKind::Int { min, max } => (min..=max).contains(&value).then_some(value),
            ValueKind::Unsigned => {
                if let Ok(v) = i32::try_from(value) {
                    Some(i64::from(v.cast_unsigned()))
                } else {
                    u32::try_from(value).ok().map(i64::from)
                }
            }
            ValueKind::Linger | ValueKind::Text | ValueKind::TcpInfo => None,
        }
    }
}

impl OptionName {
    /// Every option, in the order of `tcpd.v2.SocketOption`.
    pub const ALL: [OptionName; 26] = [
        OptionName::ReuseAddr,
        OptionName::NoDelay,
        OptionName::KeepAlive,
        OptionName::KeepIdle,
        OptionName::KeepInterval,
        OptionName::KeepCount,
        OptionName::RecvBuffer,
        OptionName::SendBuffer,
        OptionName::Linger,
        OptionName::Error,
        OptionName::Congestion,
        OptionName::MaxSegment,
        OptionName::SynCount,
        OptionName::UserTimeout,
        OptionName::Cork,
        OptionName::NotSentLowat,
        OptionName::QuickAck,
        OptionName::RecvLowat,
        OptionName::V6Only,
        OptionName::DeferAccept,
        OptionName::OobInline,
        OptionName::IpTos,
        OptionName::IpTtl,
        OptionName::MtuDiscover,
        OptionName::TcpInfo,
        OptionName::AtMark,
    ];

    /// The Linux `(level, optname)` of the option; `None` for SIOCATMARK,
    /// which Linux answers through ioctl(2), not getsockopt(2).
    pub const fn linux(self) -> Option<(c_int, c_int)> {
        Some(match self {
            OptionName::ReuseAddr => (SOL_SOCKET, libc::SO_REUSEADDR),
            OptionName::NoDelay => (IPPROTO_TCP, libc::TCP_NODELAY),
            OptionName::KeepAlive => (SOL_SOCKET, libc::SO_KEEPALIVE),
            OptionName::KeepIdle => (IPPROTO_TCP, libc::TCP_KEEPIDLE),
            OptionName::KeepInterval => (IPPROTO_TCP, libc::TCP_KEEPINTVL),
            OptionName::KeepCount => (IPPROTO_TCP, libc::TCP_KEEPCNT),
            OptionName::RecvBuffer => (SOL_SOCKET, libc::SO_RCVBUF),
            OptionName::SendBuffer => (SOL_SOCKET, libc::SO_SNDBUF),
            OptionName::Linger => (SOL_SOCKET, libc::SO_LINGER),
            OptionName::Error => (SOL_SOCKET, libc::SO_ERROR),
            OptionName::Congestion => (IPPROTO_TCP, libc::TCP_CONGESTION),
            OptionName::MaxSegment => (IPPROTO_TCP, libc::TCP_MAXSEG),
            OptionName::SynCount => (IPPROTO_TCP, libc::TCP_SYNCNT),
            OptionName::UserTimeout => (IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            OptionName::Cork => (IPPROTO_TCP, libc::TCP_CORK),
            OptionName::NotSentLowat => (IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
            OptionName::QuickAck => (IPPROTO_TCP, libc::TCP_QUICKACK),
            OptionName::RecvLowat => (SOL_SOCKET, libc::SO_RCVLOWAT),
            OptionName::V6Only => (IPPROTO_IPV6, libc::IPV6_V6ONLY),
            OptionName::DeferAccept => (IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
            OptionName::OobInline => (SOL_SOCKET, libc::SO_OOBINLINE),
            OptionName::IpTos => (IPPROTO_IP, libc::IP_TOS),
            OptionName::IpTtl => (IPPROTO_IP, libc::IP_TTL),
            OptionName::MtuDiscover => (IPPROTO_IP, libc::IP_MTU_DISCOVER),
            OptionName::TcpInfo => (IPPROTO_TCP, libc::TCP_INFO),
            OptionName::AtMark => return None,
        })
    }

    /// The option for a Linux `(level, optname)`, if tcpd supports it.
    pub fn from_linux(level: c_int, optname: c_int) -> Option<OptionName> {
        OptionName::ALL
            .into_iter()
            .find(|o| o.linux() == Some((level, optname)))
    }

    /// The Linux constant's name: `"TCP_NODELAY"`.
    pub const fn c_name(self) -> &'static str {
        match self {
            OptionName::ReuseAddr => "SO_REUSEADDR",
            OptionName::NoDelay => "TCP_NODELAY",
            OptionName::KeepAlive => "SO_KEEPALIVE",
            OptionName::KeepIdle => "TCP_KEEPIDLE",
            OptionName::KeepInterval => "TCP_KEEPINTVL",
            OptionName::KeepCount => "TCP_KEEPCNT",
            OptionName::RecvBuffer => "SO_RCVBUF",
            OptionName::SendBuffer => "SO_SNDBUF",
            OptionName::Linger => "SO_LINGER",
            OptionName::Error => "SO_ERROR",
            OptionName::Congestion => "TCP_CONGESTION",
            OptionName::MaxSegment => "TCP_MAXSEG",
            OptionName::SynCount => "TCP_SYNCNT",
            OptionName::UserTimeout => "TCP_USER_TIMEOUT",
            OptionName::Cork => "TCP_CORK",
            OptionName::NotSentLowat => "TCP_NOTSENT_LOWAT",
            OptionName::QuickAck => "TCP_QUICKACK",
            OptionName::RecvLowat => "SO_RCVLOWAT",
            OptionName::V6Only => "IPV6_V6ONLY",
            OptionName::DeferAccept => "TCP_DEFER_ACCEPT",
            OptionName::OobInline => "SO_OOBINLINE",
            OptionName::IpTos => "IP_TOS",
            OptionName::IpTtl => "IP_TTL",
            OptionName::MtuDiscover => "IP_MTU_DISCOVER",
            OptionName::TcpInfo => "TCP_INFO",
            OptionName::AtMark => "SIOCATMARK",
        }
    }

    /// The value's C type and the range setsockopt(2) accepts.
    pub const fn kind(self) -> ValueKind {
        match self {
            OptionName::ReuseAddr
            | OptionName::NoDelay
            | OptionName::KeepAlive
            | OptionName::Cork
            | OptionName::QuickAck
            | OptionName::V6Only
            | OptionName::OobInline
            | OptionName::AtMark => ValueKind::Flag,
            // MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL = 32767 s, MAX_TCP_KEEPCNT
            // and MAX_TCP_SYNCNT = 127 (Linux include/net/tcp.h).
            OptionName::KeepIdle | OptionName::KeepInterval => {
                ValueKind::Int { min: 1, max: 32767 }
            }
            OptionName::KeepCount | OptionName::SynCount => ValueKind::Int { min: 1, max: 127 },
            // Linux clamps these to the sysctl maximum as unsigned values;
            // TCP_NOTSENT_LOWAT's default UINT_MAX means "no limit".
            OptionName::RecvBuffer | OptionName::SendBuffer | OptionName::NotSentLowat => {
                ValueKind::Unsigned
            }
            OptionName::Linger => ValueKind::Linger,
            OptionName::Error => ValueKind::ANY_INT,
            OptionName::Congestion => ValueKind::Text,
            // 0 clears the clamp; the stack checks Linux's TCP_MIN_MSS (88)
            // ..= MAX_TCP_WINDOW (32767) for other values.
            OptionName::MaxSegment => ValueKind::Int { min: 0, max: 65535 },
            // Milliseconds / bytes; Linux rejects negative values.
            OptionName::UserTimeout | OptionName::RecvLowat => ValueKind::Int {
                min: 0,
                max: i32::MAX as i64,
            },
            // Seconds, any int (<= 0 is off); Linux keeps IP_TOS's low byte.
            OptionName::DeferAccept | OptionName::IpTos => ValueKind::ANY_INT,
            // -1 is the default; 0 is refused too (the daemon checks it).
            OptionName::IpTtl => ValueKind::Int { min: -1, max: 255 },
            // IP_PMTUDISC_DONT ..= IP_PMTUDISC_OMIT.
            OptionName::MtuDiscover => ValueKind::Int { min: 0, max: 5 },
            OptionName::TcpInfo => ValueKind::TcpInfo,
        }
    }

    /// False for read-only options (`SO_ERROR`): setting them is
    /// `ENOPROTOOPT`, as on Linux.
    pub const fn settable(self) -> bool {
        !matches!(
            self,
            OptionName::Error | OptionName::TcpInfo | OptionName::AtMark
        )
    }
}

impl core::fmt::Display for OptionName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.c_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_pairs_are_unique_and_round_trip() {
        for o in OptionName::ALL {
            let Some((level, name)) = o.linux() else {
                assert_eq!(o, OptionName::AtMark, "only SIOCATMARK is no sockopt");
                continue;
            };
            assert_eq!(OptionName::from_linux(level, name), Some(o), "{o}");
        }
        assert_eq!(OptionName::from_linux(SOL_SOCKET, libc::SO_BROADCAST), None);
        assert_eq!(
            OptionName::from_linux(libc::IPPROTO_IP, libc::IP_MULTICAST_TTL),
            None
        );
        assert!(!OptionName::TcpInfo.settable() && !OptionName::AtMark.settable());
        assert_eq!(OptionName::MtuDiscover.kind().accept_int(6), None);
        assert_eq!(OptionName::IpTtl.kind().accept_int(-1), Some(-1));
    }

    #[test]
    fn values_are_accepted_as_linux_does() {
        assert_eq!(OptionName::KeepCount.kind().accept_int(0), None);
        assert_eq!(OptionName::KeepCount.kind().accept_int(127), Some(127));
        assert_eq!(OptionName::NoDelay.kind().accept_int(5), Some(1));
        assert_eq!(
            OptionName::NotSentLowat.kind().accept_int(-1),
            Some(i64::from(u32::MAX))
        );
        assert_eq!(
            OptionName::RecvBuffer
                .kind()
                .accept_int(i64::from(u32::MAX)),
            Some(i64::from(u32::MAX))
        );
        assert_eq!(OptionName::RecvBuffer.kind().accept_int(1 << 40), None);
        assert_eq!(OptionName::UserTimeout.kind().accept_int(-1), None);
        assert!(!OptionName::Error.settable());
        assert_eq!(OptionName::QuickAck.to_string(), "TCP_QUICKACK");
    }
}
