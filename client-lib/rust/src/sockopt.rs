//! Typed socket options (the names and poll bits are the shared `tcpd-types` ones).
//!
//! [`SockOption`] is one option *with its value*, named after the Linux
//! constant it stands for; [`OptionName`] names one for `get_option`. Units
//! are the ones setsockopt(2) uses (seconds, milliseconds, bytes), so a C
//! shim maps 1:1. Conversions to and from the wire (`tcpd.v2.SetOption` /
//! `GetOption`) live here and nowhere else; a value of the wrong shape from
//! the daemon is a protocol error (`EPROTO`), never a panic.

use std::io;

use tcpd_proto::v2;
use tcpd_proto::v2::option_value::Value;

pub use tcpd_proto::types::{OptionName, PollFlags, SendFlags};

/// TCP_INFO: Linux's `struct tcp_info` fields with their names and units
/// (the protocol's message, which is already typed).
pub type TcpInfo = v2::TcpInfo;

/// Linux `EPROTO`: the daemon answered with something this client cannot read.
pub(crate) const EPROTO: i32 = tcpd_proto::errno::EPROTO;

/// The wire number of an option name.
pub(crate) fn wire_name(name: OptionName) -> i32 {
    tcpd_proto::vocab::option_wire(name)
}

/// One socket option with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockOption {
    /// `SO_REUSEADDR`: bind may reuse a local address still in TIME-WAIT.
    ReuseAddr(bool),
    /// `TCP_NODELAY`: disable Nagle's algorithm (RFC 9293 §3.7.4).
    NoDelay(bool),
    /// `SO_KEEPALIVE`: send keep-alive probes on an idle connection
    /// (RFC 9293 §3.8.4).
    KeepAlive(bool),
    /// `TCP_KEEPIDLE`: idle seconds before the first keep-alive probe.
    KeepIdle(u32),
    /// `TCP_KEEPINTVL`: seconds between keep-alive probes.
    KeepInterval(u32),
    /// `TCP_KEEPCNT`: unanswered probes before the connection is dropped.
    KeepCount(u32),
    /// `SO_RCVBUF`: receive buffer size in bytes.
    RecvBuffer(u32),
    /// `SO_SNDBUF`: send buffer size in bytes.
    SendBuffer(u32),
    /// `SO_LINGER`: `Some(seconds)` makes close wait for (or, with 0, reset)
    /// unsent data; `None` is the default graceful background close.
    Linger(Option<u32>),
    /// `SO_ERROR`: the pending error's errno, 0 if none (reading clears it).
    Error(i32),
    /// `TCP_CONGESTION`: `"cubic"` or `"newreno"`.
    Congestion(String),
    /// `TCP_MAXSEG`: the effective send MSS in bytes; set, a clamp on it.
    MaxSegment(u32),
    /// `TCP_SYNCNT`: SYN retransmissions before connect fails with ETIMEDOUT.
    SynCount(u32),
    /// `TCP_USER_TIMEOUT`: milliseconds unacknowledged data may wait before
    /// the connection is dropped (RFC 9293 §3.8.3); 0 is the default.
    UserTimeout(u32),
    /// `TCP_CORK`: hold partial segments until uncorked (200 ms at most).
    Cork(bool),
    /// `TCP_NOTSENT_LOWAT`: not writable while this many unsent bytes are
    /// queued (`u32::MAX`: no limit, the default).
    NotSentLowat(u32),
    /// `TCP_QUICKACK`: acknowledge at once for a while (not sticky).
    QuickAck(bool),
    /// `SO_RCVLOWAT`: bytes needed before a read is worthwhile.
    RecvLowat(u32),
    /// `IPV6_V6ONLY`: an IPv6 socket bound to `::` takes IPv6 only (set
    /// before bind).
    V6Only(bool),
    /// `TCP_DEFER_ACCEPT` (on a listener): seconds a connection whose peer
    /// sent no data waits before accept sees it; 0 is off. Reads back
    /// rounded up as Linux does (5 reads as 7).
    DeferAccept(u32),
    /// `SO_OOBINLINE`: the urgent byte stays in the data stream.
    OobInline(bool),
    /// `IP_TOS`: the IPv4 TOS byte (the ECN bits are the stack's).
    IpTos(u32),
    /// `IP_TTL`: 1..=255, or -1 for the default (64).
    IpTtl(i32),
    /// `IP_MTU_DISCOVER`: `IP_PMTUDISC_DONT` (0) clears DF; WANT (1, the
    /// default), DO (2), PROBE (3), INTERFACE (4), OMIT (5) set it.
    MtuDiscover(u32),
    /// `SIOCATMARK` (get only): the next read starts at the urgent mark.
    AtMark(bool),
    /// `TCP_INFO` (get only): Linux's `struct tcp_info` fields.
    TcpInfo(Box<TcpInfo>),
}

impl SockOption {
    /// The option's name.
    pub fn name(&self) -> OptionName {
        match self {
            SockOption::ReuseAddr(_) => OptionName::ReuseAddr,
            SockOption::NoDelay(_) => OptionName::NoDelay,
            SockOption::KeepAlive(_) => OptionName::KeepAlive,
            SockOption::KeepIdle(_) => OptionName::KeepIdle,
            SockOption::KeepInterval(_) => OptionName::KeepInterval,
            SockOption::KeepCount(_) => OptionName::KeepCount,
            SockOption::RecvBuffer(_) => OptionName::RecvBuffer,
            SockOption::SendBuffer(_) => OptionName::SendBuffer,
            SockOption::Linger(_) => OptionName::Linger,
            SockOption::Error(_) => OptionName::Error,
            SockOption::Congestion(_) => OptionName::Congestion,
            SockOption::MaxSegment(_) => OptionName::MaxSegment,
            SockOption::SynCount(_) => OptionName::SynCount,
            SockOption::UserTimeout(_) => OptionName::UserTimeout,
            SockOption::Cork(_) => OptionName::Cork,
            SockOption::NotSentLowat(_) => OptionName::NotSentLowat,
            SockOption::QuickAck(_) => OptionName::QuickAck,
            SockOption::RecvLowat(_) => OptionName::RecvLowat,
            SockOption::V6Only(_) => OptionName::V6Only,
            SockOption::DeferAccept(_) => OptionName::DeferAccept,
            SockOption::OobInline(_) => OptionName::OobInline,
            SockOption::IpTos(_) => OptionName::IpTos,
            SockOption::IpTtl(_) => OptionName::IpTtl,
            SockOption::MtuDiscover(_) => OptionName::MtuDiscover,
            SockOption::AtMark(_) => OptionName::AtMark,
            SockOption::TcpInfo(_) => OptionName::TcpInfo,
        }
    }

    /// The wire value.
    pub(crate) fn to_wire(&self) -> v2::OptionValue {
        let value = match self {
            SockOption::ReuseAddr(b)
            | SockOption::NoDelay(b)
            | SockOption::KeepAlive(b)
            | SockOption::Cork(b)
            | SockOption::QuickAck(b)
            | SockOption::V6Only(b)
            | SockOption::OobInline(b)
            | SockOption::AtMark(b) => Value::Flag(*b),
            SockOption::KeepIdle(n)
            | SockOption::KeepInterval(n)
            | SockOption::KeepCount(n)
            | SockOption::RecvBuffer(n)
            | SockOption::SendBuffer(n)
            | SockOption::MaxSegment(n)
            | SockOption::SynCount(n)
            | SockOption::UserTimeout(n)
            | SockOption::NotSentLowat(n)
            | SockOption::DeferAccept(n)
            | SockOption::IpTos(n)
            | SockOption::MtuDiscover(n)
            | SockOption::RecvLowat(n) => Value::Int(i64::from(*n)),
            SockOption::IpTtl(ttl) => Value::Int(i64::from(*ttl)),
            SockOption::Error(e) => Value::Int(i64::from(*e)),
            SockOption::Linger(l) => Value::Linger(v2::Linger {
                enabled: l.is_some(),
                seconds: l.unwrap_or(0),
            }),
            SockOption::Congestion(name) => Value::Text(name.clone()),
            // Read only: the daemon refuses it (ENOPROTOOPT), as Linux.
            SockOption::TcpInfo(info) => Value::TcpInfo(**info),
        };
        v2::OptionValue { value: Some(value) }
    }

    /// Reads the daemon's answer to `GetOption(name)`.
    pub(crate) fn from_wire(name: OptionName, value: Option<v2::OptionValue>) -> io::Result<Self> {
        let protocol_error = || io::Error::from_raw_os_error(EPROTO);
        let value = value.and_then(|v| v.value).ok_or_else(protocol_error)?;
        let flag = |v: &Value| match v {
            Value::Flag(b) => Ok(*b),
            // Some servers answer booleans as 0/1 integers, as getsockopt does.
            Value::Int(i) => Ok(*i != 0),
            _ => Err(protocol_error()),
        };
        let unsigned = |v: &Value| match v {
            Value::Int(i) => u32::try_from(*i).map_err(|_| protocol_error()),
            _ => Err(protocol_error()),
        };
        Ok(match name {
            OptionName::TcpInfo => match value {
                Value::TcpInfo(info) => SockOption::TcpInfo(Box::new(info)),
                _ => return Err(protocol_error()),
            },
            OptionName::ReuseAddr => SockOption::ReuseAddr(flag(&value)?),
            OptionName::NoDelay => SockOption::NoDelay(flag(&value)?),
            OptionName::KeepAlive => SockOption::KeepAlive(flag(&value)?),
            OptionName::KeepIdle => SockOption::KeepIdle(unsigned(&value)?),
            OptionName::KeepInterval => SockOption::KeepInterval(unsigned(&value)?),
            OptionName::KeepCount => SockOption::KeepCount(unsigned(&value)?),
            OptionName::RecvBuffer => SockOption::RecvBuffer(unsigned(&value)?),
            OptionName::SendBuffer => SockOption::SendBuffer(unsigned(&value)?),
            OptionName::MaxSegment => SockOption::MaxSegment(unsigned(&value)?),
            OptionName::SynCount => SockOption::SynCount(unsigned(&value)?),
            OptionName::UserTimeout => SockOption::UserTimeout(unsigned(&value)?),
            OptionName::Cork => SockOption::Cork(flag(&value)?),
            OptionName::QuickAck => SockOption::QuickAck(flag(&value)?),
            OptionName::V6Only => SockOption::V6Only(flag(&value)?),
            OptionName::NotSentLowat => SockOption::NotSentLowat(unsigned(&value)?),
            OptionName::RecvLowat => SockOption::RecvLowat(unsigned(&value)?),
            OptionName::DeferAccept => SockOption::DeferAccept(unsigned(&value)?),
            OptionName::OobInline => SockOption::OobInline(flag(&value)?),
            OptionName::AtMark => SockOption::AtMark(flag(&value)?),
            OptionName::IpTos => SockOption::IpTos(unsigned(&value)?),
            OptionName::MtuDiscover => SockOption::MtuDiscover(unsigned(&value)?),
            OptionName::IpTtl => match value {
                Value::Int(i) => SockOption::IpTtl(i32::try_from(i).map_err(|_| protocol_error())?),
                _ => return Err(protocol_error()),
            },
            OptionName::Error => match value {
                Value::Int(i) => SockOption::Error(i32::try_from(i).map_err(|_| protocol_error())?),
                _ => return Err(protocol_error()),
            },
            OptionName::Linger => match value {
                Value::Linger(l) => SockOption::Linger(l.enabled.then_some(l.seconds)),
                _ => return Err(protocol_error()),
            },
            OptionName::Congestion => match value {
                Value::Text(t) => SockOption::Congestion(t),
                _ => return Err(protocol_error()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_wire_form() {
        let all = [
            SockOption::ReuseAddr(true),
            SockOption::NoDelay(false),
            SockOption::KeepAlive(true),
            SockOption::KeepIdle(7200),
            SockOption::KeepInterval(75),
            SockOption::KeepCount(9),
            SockOption::RecvBuffer(131_072),
            SockOption::SendBuffer(16_384),
            SockOption::Linger(Some(0)),
            SockOption::Linger(None),
            SockOption::Error(111),
            SockOption::Congestion("cubic".into()),
            SockOption::MaxSegment(1460),
            SockOption::SynCount(6),
            SockOption::UserTimeout(30_000),
        ];
        for opt in all {
            let back = SockOption::from_wire(opt.name(), Some(opt.to_wire())).expect("decodes");
            assert_eq!(back, opt);
        }
    }

    #[test]
    fn wrong_shapes_are_protocol_errors_not_panics() {
        let text = Some(v2::OptionValue {
            value: Some(Value::Text("x".into())),
        });
        let err = SockOption::from_wire(OptionName::NoDelay, text).expect_err("text is no flag");
        assert_eq!(err.raw_os_error(), Some(EPROTO));
        let negative = Some(v2::OptionValue {
            value: Some(Value::Int(-1)),
        });
        let err =
            SockOption::from_wire(OptionName::RecvBuffer, negative).expect_err("negative size");
        assert_eq!(err.raw_os_error(), Some(EPROTO));
        let err = SockOption::from_wire(OptionName::Linger, None).expect_err("missing value");
        assert_eq!(err.raw_os_error(), Some(EPROTO));
    }
}
