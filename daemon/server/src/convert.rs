//! Conversions between the tcpd.v2 wire types and the stack's types.
//!
//! Untrusted request fields are validated here: a missing address, a port
//! above 65535, an unknown enum value or an option value of the wrong kind
//! becomes an [`Errno`] (EINVAL, ENOPROTOOPT), never a panic.

use crate::errno::Errno;
use std::net::SocketAddr;
use std::time::Duration;
use tcpd_proto::errno::{EAFNOSUPPORT, ENOPROTOOPT};
use tcpd_proto::v2;
use tcpd_proto::v2::option_value::Value;
use tcpd_stack::{
    CongestionAlgorithm, IpFamily, OptionName, PmtuDiscovery, SendFlags, Shutdown, SockOption,
    TcpInfo, TcpState,
};

/// A request address, IPv4 or IPv6 (4 or 16 octets); EINVAL when missing
/// or malformed. Whether it suits the socket (its family, IPV6_V6ONLY) is
/// the stack's to say.
pub fn socket_addr(addr: Option<&v2::SocketAddress>) -> Result<SocketAddr, Errno> {
    let addr = addr.ok_or_else(|| Errno::invalid("address missing"))?;
    addr.to_std().map_err(|e| Errno::invalid(e.to_string()))
}

/// A new socket's family; `None` for UNSPECIFIED (decided by the address
/// the request binds or connects to); EINVAL for unknown values.
pub fn family(family: i32) -> Result<Option<IpFamily>, Errno> {
    match v2::AddressFamily::try_from(family) {
        Ok(v2::AddressFamily::Unspecified) => Ok(None),
        Ok(v2::AddressFamily::Inet) => Ok(Some(IpFamily::V4)),
        Ok(v2::AddressFamily::Inet6) => Ok(Some(IpFamily::V6)),
        Err(_) => Err(Errno::new(
            EAFNOSUPPORT,
            format!("address family {family} is not supported"),
        )),
    }
}

/// An optional request address (absent means "not requested").
pub fn optional_addr(addr: Option<&v2::SocketAddress>) -> Result<Option<SocketAddr>, Errno> {
    addr.map(|a| socket_addr(Some(a))).transpose()
}

/// The options of a batched request, in order.
pub fn options(settings: &[v2::OptionSetting]) -> Result<Vec<SockOption>, Errno> {
    settings
        .iter()
        .map(|s| option_to_set(s.option, s.value.as_ref()))
        .collect()
}

/// The wire enum for a stack state (the stack's `TcpState` is the shared
/// `tcpd_types::TcpState`; the mapping lives in `tcpd_proto::vocab`).
pub fn tcp_state(state: TcpState) -> v2::TcpState {
    state.into()
}

/// shutdown(2)'s `how`; EINVAL for unspecified or unknown values.
pub fn shutdown_how(how: i32) -> Result<Shutdown, Errno> {
    match v2::ShutdownHow::try_from(how) {
        Ok(v2::ShutdownHow::Read) => Ok(Shutdown::Read),
        Ok(v2::ShutdownHow::Write) => Ok(Shutdown::Write),
        Ok(v2::ShutdownHow::Both) => Ok(Shutdown::Both),
        _ => Err(Errno::invalid(format!("invalid shutdown mode {how}"))),
    }
}

/// The option a request names; ENOPROTOOPT for unknown values.
pub fn option_name(option: i32) -> Result<OptionName, Errno> {
    tcpd_proto::vocab::option_name(option)
        .map_err(|raw| Errno::new(ENOPROTOOPT, format!("unknown option {raw}")))
}

/// A boolean option: `flag`, or an integer as setsockopt(2) takes it (non-zero = on).
fn flag(value: &Value) -> Result<bool, Errno> {
    match value {
        Value::Flag(b) => Ok(*b),
        Value::Int(i) => Ok(*i != 0),
        _ => Err(Errno::invalid("expected a boolean")),
    }
}

/// An integer option's value, checked against the range Linux accepts for
/// `name` (`tcpd_types::OptionName::kind`, shared with the C shim); an
/// unsigned option's negative value reads as its unsigned value, as Linux
/// reads it.
fn int(name: OptionName, value: &Value) -> Result<i64, Errno> {
    match value {
        Value::Int(i) => name
            .kind()
            .accept_int(*i)
            .ok_or_else(|| Errno::invalid(format!("{name}: value {i} out of range"))),
        _ => Err(Errno::invalid(format!("{name}: expected an integer"))),
    }
}

fn to_u32(i: i64) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn to_usize(i: i64) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// The option and value of a SetOption request.
pub fn option_to_set(option: i32, value: Option<&v2::OptionValue>) -> Result<SockOption, Errno> {
    let name = option_name(option)?;
    let value = value
        .and_then(|v| v.value.as_ref())
        .ok_or_else(|| Errno::invalid("option value missing"))?;
    // Linux bounds: TCP_KEEPIDLE/KEEPINTVL 1..=32767 s, TCP_KEEPCNT 1..=127, TCP_SYNCNT 1..=127.
    let option = match name {
        OptionName::ReuseAddr => SockOption::ReuseAddr(flag(value)?),
        OptionName::NoDelay => SockOption::NoDelay(flag(value)?),
        OptionName::KeepAlive => SockOption::KeepAlive(flag(value)?),
        OptionName::KeepIdle => {
            SockOption::KeepIdle(Duration::from_secs(int(name, value)?.unsigned_abs()))
        }
        OptionName::KeepInterval => {
            SockOption::KeepInterval(Duration::from_secs(int(name, value)?.unsigned_abs()))
        }
        OptionName::KeepCount => SockOption::KeepCount(to_u32(int(name, value)?)),
        OptionName::RecvBuffer => SockOption::RecvBuffer(to_usize(int(name, value)?)),
        OptionName::SendBuffer => SockOption::SendBuffer(to_usize(int(name, value)?)),
        OptionName::Linger => match value {
            Value::Linger(l) if l.enabled => {
                SockOption::Linger(Some(Duration::from_secs(u64::from(l.seconds))))
            }
            Value::Linger(_) => SockOption::Linger(None),
            _ => return Err(Errno::invalid("expected a linger value")),
        },
        OptionName::Congestion => match value {
            Value::Text(name) => SockOption::Congestion(
                // ENOENT for an unknown algorithm, as Linux's
                // tcp_set_congestion_control (tcp_ca_find fails).
                CongestionAlgorithm::from_name(name).ok_or_else(|| {
                    Errno::new(
                        tcpd_proto::errno::ENOENT,
                        format!("unknown congestion control {name:?} (known: cubic, newreno)"),
                    )
                })?,
            ),
            _ => return Err(Errno::invalid("expected a text value")),
        },
        OptionName::SynCount => SockOption::SynCount(to_u32(int(name, value)?)),
        OptionName::UserTimeout => {
            let ms = int(name, value)?;
            SockOption::UserTimeout((ms > 0).then(|| Duration::from_millis(ms.unsigned_abs())))
        }
        OptionName::MaxSegment => {
            // 0 clears the clamp; the stack checks Linux's 88..=32767.
            SockOption::MaxSegment(u16::try_from(int(name, value)?).unwrap_or(u16::MAX))
        }
        // SO_ERROR is read-only (setsockopt gives ENOPROTOOPT on Linux).
        OptionName::Error => return Err(Errno::new(ENOPROTOOPT, "SO_ERROR is read-only")),
        OptionName::Cork => SockOption::Cork(flag(value)?),
        OptionName::QuickAck => SockOption::QuickAck(flag(value)?),
        // Linux: an unsigned value; UINT_MAX (its default) means no limit.
        OptionName::NotSentLowat => {
            let n = int(name, value)?;
            SockOption::NotSentLowat(u32::try_from(n).ok().filter(|&n| n != u32::MAX))
        }
        // Linux: 0 means 1 (the stack applies it).
        OptionName::RecvLowat => {
            SockOption::RecvLowat(usize::try_from(int(name, value)?).unwrap_or(1))
        }
        OptionName::V6Only => SockOption::V6Only(flag(value)?),
        // Linux: seconds; 0 or negative turns it off.
        OptionName::DeferAccept => {
            let secs = int(name, value)?;
            SockOption::DeferAccept((secs > 0).then(|| Duration::from_secs(secs.unsigned_abs())))
        }
        OptionName::OobInline => SockOption::OobInline(flag(value)?),
        // Linux keeps the low byte of the int (`inet->tos` is a u8).
        OptionName::IpTos => SockOption::IpTos((int(name, value)? & 0xff) as u8),
        // Linux: 1..=255, or -1 for the default; 0 is EINVAL too.
        OptionName::IpTtl => match int(name, value)? {
            -1 => SockOption::IpTtl(None),
            0 => return Err(Errno::invalid("IP_TTL 0")),
            ttl => SockOption::IpTtl(u8::try_from(ttl).ok()),
        },
        OptionName::MtuDiscover => {
            let raw = int(name, value)?;
            SockOption::MtuDiscover(
                PmtuDiscovery::from_raw(raw)
                    .ok_or_else(|| Errno::invalid(format!("IP_MTU_DISCOVER mode {raw}")))?,
            )
        }
        // Read-only: a question (SIOCATMARK), or a struct with its own op
        // (TCP_INFO); setsockopt gives ENOPROTOOPT on Linux.
        OptionName::AtMark | OptionName::TcpInfo => {
            return Err(Errno::new(ENOPROTOOPT, format!("{name} is read-only")));
        }
    };
    Ok(option)
}

/// The wire value of an option read with GetOption.
pub fn option_value(option: SockOption) -> v2::OptionValue {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let value = match option {
        SockOption::ReuseAddr(b) | SockOption::NoDelay(b) | SockOption::KeepAlive(b) => {
            Value::Flag(b)
        }
        SockOption::KeepIdle(d) | SockOption::KeepInterval(d) => Value::Int(secs(d)),
        SockOption::KeepCount(n) | SockOption::SynCount(n) => Value::Int(i64::from(n)),
        SockOption::RecvBuffer(n) | SockOption::SendBuffer(n) => {
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        SockOption::Linger(l) => Value::Linger(v2::Linger {
            enabled: l.is_some(),
            seconds: l.map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
        }),
        SockOption::Error(e) => Value::Int(i64::from(e.map_or(0, crate::errno::conn_error_errno))),
        SockOption::Congestion(c) => Value::Text(c.name().to_string()),
        SockOption::MaxSegment(mss) => Value::Int(i64::from(mss)),
        SockOption::UserTimeout(t) => {
            Value::Int(t.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        }
        SockOption::Cork(b) | SockOption::QuickAck(b) => Value::Flag(b),
        SockOption::NotSentLowat(n) => Value::Int(n.map_or(i64::from(u32::MAX), i64::from)),
        SockOption::RecvLowat(n) => Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
        SockOption::V6Only(b) => Value::Flag(b),
        SockOption::DeferAccept(d) => Value::Int(d.map_or(0, secs)),
        SockOption::OobInline(b) | SockOption::AtMark(b) => Value::Flag(b),
        SockOption::IpTos(tos) => Value::Int(i64::from(tos)),
        SockOption::IpTtl(ttl) => Value::Int(ttl.map_or(-1, i64::from)),
        SockOption::MtuDiscover(mode) => Value::Int(mode as i64),
    };
    v2::OptionValue { value: Some(value) }
}

/// send(2) flags from `MessageFlag` bits (Linux's MSG_* values); other
/// bits are ignored, as Linux TCP ignores them.
pub fn send_flags(bits: u32) -> SendFlags {
    SendFlags::from_msg_bits(bits)
}

/// TCP_INFO on the wire (the same fields as Linux's `struct tcp_info`).
pub fn tcp_info(info: &TcpInfo) -> v2::TcpInfo {
    v2::TcpInfo {
        state: tcp_state(info.state) as i32,
        ca_state: info.ca_state as u32,
        retransmits: u32::from(info.retransmits),
        probes: u32::from(info.probes),
        backoff: u32::from(info.backoff),
        options: u32::from(info.options.bits()),
        snd_wscale: u32::from(info.snd_wscale),
        rcv_wscale: u32::from(info.rcv_wscale),
        rto: info.rto_us,
        ato: info.ato_us,
        snd_mss: info.snd_mss,
        rcv_mss: info.rcv_mss,
        unacked: info.unacked,
        sacked: info.sacked,
        lost: info.lost,
        retrans: info.retrans,
        last_data_sent: info.last_data_sent_ms,
        last_data_recv: info.last_data_recv_ms,
        last_ack_recv: info.last_ack_recv_ms,
        pmtu: info.pmtu,
        rcv_ssthresh: info.rcv_ssthresh,
        rtt: info.rtt_us,
        rttvar: info.rttvar_us,
        snd_ssthresh: info.snd_ssthresh,
        snd_cwnd: info.snd_cwnd,
        advmss: info.advmss,
        reordering: info.reordering,
        rcv_rtt: info.rcv_rtt_us,
        rcv_space: info.rcv_space,
        total_retrans: info.total_retrans,
        bytes_acked: info.bytes_acked,
        bytes_received: info.bytes_received,
        bytes_sent: info.bytes_sent,
        segs_out: info.segs_out,
        segs_in: info.segs_in,
        notsent_bytes: info.notsent_bytes,
        min_rtt: info.min_rtt_us,
        delivery_rate: info.delivery_rate,
        dsack_dups: info.dsack_dups,
        snd_wnd: info.snd_wnd,
        rcv_wnd: info.rcv_wnd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpd_proto::errno::EINVAL;

    fn set(option: v2::SocketOption, value: Value) -> Result<SockOption, Errno> {
        option_to_set(option as i32, Some(&v2::OptionValue { value: Some(value) }))
    }

    #[test]
    fn addresses_are_validated() {
        let ok = v2::SocketAddress {
            ip: vec![10, 77, 0, 2],
            port: 80,
            ..Default::default()
        };
        assert_eq!(
            socket_addr(Some(&ok)),
            Ok(SocketAddr::from(([10, 77, 0, 2], 80)))
        );
        let big = v2::SocketAddress {
            port: 65536,
            ..Default::default()
        };
        assert_eq!(socket_addr(Some(&big)).map_err(|e| e.number), Err(EINVAL));
        let v6: SocketAddr = "[fd00::1%3]:80".parse().expect("addr");
        assert_eq!(socket_addr(Some(&v2::SocketAddress::from(v6))), Ok(v6));
        assert_eq!(socket_addr(None).map_err(|e| e.number), Err(EINVAL));
    }

    #[test]
    fn enums_are_validated() {
        assert_eq!(shutdown_how(2), Ok(Shutdown::Write));
        assert_eq!(shutdown_how(0).map_err(|e| e.number), Err(EINVAL));
        assert_eq!(shutdown_how(99).map_err(|e| e.number), Err(EINVAL));
        assert_eq!(option_name(0).map_err(|e| e.number), Err(ENOPROTOOPT));
        assert_eq!(option_name(1234).map_err(|e| e.number), Err(ENOPROTOOPT));
        assert_eq!(option_name(10), Ok(OptionName::Error));
    }

    #[test]
    fn option_values_convert_both_ways() {
        use v2::SocketOption as O;
        assert_eq!(
            set(O::TcpNodelay, Value::Flag(true)),
            Ok(SockOption::NoDelay(true))
        );
        assert_eq!(
            set(O::SoReuseaddr, Value::Int(1)),
            Ok(SockOption::ReuseAddr(true))
        );
        assert_eq!(
            set(O::TcpKeepidle, Value::Int(60)),
            Ok(SockOption::KeepIdle(Duration::from_secs(60)))
        );
        assert_eq!(
            set(O::TcpKeepidle, Value::Int(0)).map_err(|e| e.number),
            Err(EINVAL)
        );
        assert_eq!(
            set(O::TcpNodelay, Value::Text("x".into())).map_err(|e| e.number),
            Err(EINVAL)
        );
        assert_eq!(
            set(O::TcpCongestion, Value::Text("newreno".into())),
            Ok(SockOption::Congestion(CongestionAlgorithm::NewReno))
        );
        // Linux: ENOENT for an algorithm it does not know.
        assert_eq!(
            set(O::TcpCongestion, Value::Text("bbr".into())).map_err(|e| e.number),
            Err(tcpd_proto::errno::ENOENT)
        );
        assert_eq!(
            set(O::SoError, Value::Int(0)).map_err(|e| e.number),
            Err(ENOPROTOOPT)
        );
        // Issue 10's options: TCP_MAXSEG is settable, and the new ones map.
        assert_eq!(
            set(O::TcpMaxseg, Value::Int(1000)),
            Ok(SockOption::MaxSegment(1000))
        );
        assert_eq!(set(O::TcpCork, Value::Int(1)), Ok(SockOption::Cork(true)));
        assert_eq!(
            set(O::TcpQuickack, Value::Flag(false)),
            Ok(SockOption::QuickAck(false))
        );
        assert_eq!(
            set(O::TcpNotsentLowat, Value::Int(16384)),
            Ok(SockOption::NotSentLowat(Some(16384)))
        );
        assert_eq!(
            set(O::TcpNotsentLowat, Value::Int(i64::from(u32::MAX))),
            Ok(SockOption::NotSentLowat(None))
        );
        // Linux reads SO_RCVBUF as unsigned: -1 asks for the maximum.
        assert_eq!(
            set(O::SoRcvbuf, Value::Int(-1)),
            Ok(SockOption::RecvBuffer(u32::MAX as usize))
        );
        assert_eq!(
            set(O::TcpNotsentLowat, Value::Int(-1)),
            Ok(SockOption::NotSentLowat(None))
        );
        assert_eq!(
            set(O::SoRcvlowat, Value::Int(10)),
            Ok(SockOption::RecvLowat(10))
        );
        assert_eq!(
            set(
                O::SoLinger,
                Value::Linger(v2::Linger {
                    enabled: true,
                    seconds: 0
                })
            ),
            Ok(SockOption::Linger(Some(Duration::ZERO)))
        );
        assert_eq!(
            set(O::TcpUserTimeout, Value::Int(0)),
            Ok(SockOption::UserTimeout(None))
        );
        assert_eq!(
            option_to_set(O::TcpNodelay as i32, None).map_err(|e| e.number),
            Err(EINVAL)
        );
        assert_eq!(
            option_value(SockOption::Error(Some(tcpd_stack::ConnError::Refused))).value,
            Some(Value::Int(111))
        );
        assert_eq!(
            option_value(SockOption::Error(None)).value,
            Some(Value::Int(0))
        );
        assert_eq!(
            option_value(SockOption::UserTimeout(Some(Duration::from_millis(1500)))).value,
            Some(Value::Int(1500))
        );
    }

    /// Round 2 of issue 10: each option's accepted values, what Linux
    /// refuses (errno), and what GetOption answers.
    #[test]
    fn ip_and_urgent_options_follow_linux() {
        use v2::SocketOption as O;
        let errno = |o, v| set(o, v).map_err(|e: Errno| e.number);
        let table: Vec<(O, i64, Result<SockOption, i32>)> = vec![
            (O::IpTtl, 1, Ok(SockOption::IpTtl(Some(1)))),
            (O::IpTtl, 255, Ok(SockOption::IpTtl(Some(255)))),
            (O::IpTtl, -1, Ok(SockOption::IpTtl(None))),
            (O::IpTtl, 0, Err(EINVAL)),
            (O::IpTtl, 256, Err(EINVAL)),
            (O::IpTtl, -2, Err(EINVAL)),
            (O::IpTos, 0x10, Ok(SockOption::IpTos(0x10))),
            (O::IpTos, 0x1b8, Ok(SockOption::IpTos(0xb8))),
            (
                O::IpMtuDiscover,
                0,
                Ok(SockOption::MtuDiscover(PmtuDiscovery::Dont)),
            ),
            (
                O::IpMtuDiscover,
                5,
                Ok(SockOption::MtuDiscover(PmtuDiscovery::Omit)),
            ),
            (O::IpMtuDiscover, 6, Err(EINVAL)),
            (O::IpMtuDiscover, -1, Err(EINVAL)),
            (
                O::TcpDeferAccept,
                5,
                Ok(SockOption::DeferAccept(Some(Duration::from_secs(5)))),
            ),
            (O::TcpDeferAccept, 0, Ok(SockOption::DeferAccept(None))),
            (O::TcpDeferAccept, -3, Ok(SockOption::DeferAccept(None))),
            (O::SoOobinline, 1, Ok(SockOption::OobInline(true))),
            (O::Siocatmark, 1, Err(ENOPROTOOPT)),
            (O::TcpInfo, 1, Err(ENOPROTOOPT)),
        ];
        for (option, value, want) in table {
            assert_eq!(
                errno(option, Value::Int(value)),
                want,
                "{option:?} = {value}"
            );
        }
        assert_eq!(option_name(O::Siocatmark as i32), Ok(OptionName::AtMark));
        assert_eq!(
            option_value(SockOption::IpTtl(Some(64))).value,
            Some(Value::Int(64))
        );
        assert_eq!(
            option_value(SockOption::MtuDiscover(PmtuDiscovery::Want)).value,
            Some(Value::Int(1))
        );
        assert_eq!(
            option_value(SockOption::DeferAccept(Some(Duration::from_secs(7)))).value,
            Some(Value::Int(7))
        );
    }

    #[test]
    fn message_flags_are_linux_msg_bits() {
        assert_eq!(send_flags(0), SendFlags::empty());
        assert_eq!(send_flags(libc_msg::OOB), SendFlags::OOB);
        assert_eq!(
            send_flags(libc_msg::EOR | libc_msg::MORE | 0x40),
            SendFlags::EOR | SendFlags::MORE
        );
    }

    /// Linux's MSG_* values (<sys/socket.h>), which MessageFlag mirrors.
    mod libc_msg {
        pub const OOB: u32 = 0x1;
        pub const EOR: u32 = 0x80;
        pub const MORE: u32 = 0x8000;
    }
}
