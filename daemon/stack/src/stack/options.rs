//! Socket-option validation and storage shared by unconnected sockets,
//! listeners and connections.
//!
//! Values are checked once here, with Linux's limits, before they reach a
//! socket's [`SocketOptions`] or a live connection, so every socket kind
//! accepts and rejects the same values. `SO_ERROR` is read only; reading
//! `TCP_MAXSEG` is answered by the stack (the MSS in use), setting it
//! stores the user's clamp (Linux's `user_mss`).

use crate::config::{OptionTime, SocketOptions};
use crate::error::SocketError;
use crate::socket::{OptionName, SockOption};
use crate::time::Duration;
use crate::wire::ipv4::DEFAULT_TTL;

/// Smallest socket buffer honoured (Linux clamps SO_RCVBUF/SO_SNDBUF up to
/// SOCK_MIN_RCVBUF/SOCK_MIN_SNDBUF, a few KiB).
pub(crate) const MIN_BUFFER: usize = 4096;
/// Largest socket buffer honoured (a fixed stand-in for Linux's rmem_max/wmem_max sysctls).
pub(crate) const MAX_BUFFER: usize = 64 * 1024 * 1024;
/// Linux MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL: 32767 s.
const MAX_KEEPALIVE_SECS: u64 = 32767;
/// The two ECN bits of the TOS byte (RFC 3168 §5).
const ECN_MASK: u8 = 0b11;
/// Linux MAX_TCP_KEEPCNT.
const MAX_KEEPCNT: u32 = 127;
/// Linux MAX_TCP_SYNCNT.
const MAX_SYNCNT: u32 = 127;
/// TCP_MAXSEG bounds: Linux's TCP_MIN_MSS (88) and MAX_TCP_WINDOW (32767);
/// 0 clears the setting.
const MAXSEG_RANGE: core::ops::RangeInclusive<u16> = 88..=32767;

/// Linux's TCP_TIMEOUT_INIT and TCP_RTO_MAX in seconds: TCP_DEFER_ACCEPT
/// counts SYN,ACK retransmission periods of these lengths.
const DEFER_ACCEPT_TIMEOUT_INIT: u64 = 1;
const DEFER_ACCEPT_RTO_MAX: u64 = 120;

/// TCP_DEFER_ACCEPT as Linux stores it (`secs_to_retrans`): the number of
/// SYN,ACK retransmission periods (1 s, doubling, at most 120 s each) that
/// cover `seconds`, at most 255.
fn defer_accept_periods(seconds: u64) -> u8 {
    if seconds == 0 {
        return 0;
    }
    let (mut timeout, mut period, mut periods) =
        (DEFER_ACCEPT_TIMEOUT_INIT, DEFER_ACCEPT_TIMEOUT_INIT, 1u8);
    while seconds > period && periods < u8::MAX {
        periods += 1;
        timeout = (timeout * 2).min(DEFER_ACCEPT_RTO_MAX);
        period += timeout;
    }
    periods
}

/// What getsockopt(TCP_DEFER_ACCEPT) reports for `periods` (Linux's
/// `retrans_to_secs`): the seconds they add up to.
fn defer_accept_seconds(periods: u8) -> u64 {
    let mut timeout = DEFER_ACCEPT_TIMEOUT_INIT;
    let mut total = 0;
    for i in 0..periods {
        if i > 0 {
            timeout = (timeout * 2).min(DEFER_ACCEPT_RTO_MAX);
        }
        total += timeout;
    }
    total
}

/// Checks `option` and returns the value to store (buffer sizes are clamped
/// like Linux does; out-of-range counts and intervals are EINVAL as on Linux).
pub(crate) fn normalize(option: SockOption) -> Result<SockOption, SocketError> {
    let keepalive_range = Duration::from_secs(1)..=Duration::from_secs(MAX_KEEPALIVE_SECS);
    match option {
        SockOption::Error(_) | SockOption::AtMark(_) => Err(SocketError::UnsupportedOption),
        // Linux rounds the seconds up to whole SYN,ACK retransmission
        // periods and reports the rounded value (5 s reads back as 7).
        SockOption::DeferAccept(d) => Ok(SockOption::DeferAccept(
            d.map(|d| defer_accept_seconds(defer_accept_periods(d.as_secs())))
                .filter(|&secs| secs > 0)
                .map(Duration::from_secs),
        )),
        // Linux (`__ip_sock_set_tos`): a stream socket keeps its own ECN bits.
        SockOption::IpTos(tos) => Ok(SockOption::IpTos(tos & !ECN_MASK)),
        SockOption::IpTtl(Some(0)) => Err(SocketError::InvalidValue),
        SockOption::MaxSegment(n) if n != 0 && !MAXSEG_RANGE.contains(&n) => {
            Err(SocketError::InvalidValue)
        }
        SockOption::KeepIdle(d) | SockOption::KeepInterval(d) if !keepalive_range.contains(&d) => {
            Err(SocketError::InvalidValue)
        }
        SockOption::KeepCount(n) if !(1..=MAX_KEEPCNT).contains(&n) => {
            Err(SocketError::InvalidValue)
        }
        SockOption::SynCount(n) if !(1..=MAX_SYNCNT).contains(&n) => Err(SocketError::InvalidValue),
        SockOption::RecvBuffer(n) => Ok(SockOption::RecvBuffer(n.clamp(MIN_BUFFER, MAX_BUFFER))),
        // Linux: SO_RCVLOWAT 0 means 1.
        SockOption::RecvLowat(n) => Ok(SockOption::RecvLowat(n.clamp(1, MAX_BUFFER))),
        SockOption::SendBuffer(n) => Ok(SockOption::SendBuffer(n.clamp(MIN_BUFFER, MAX_BUFFER))),
        valid => Ok(valid),
    }
}

/// Stores an already [`normalize`]d option.
pub(crate) fn store(options: &mut SocketOptions, option: SockOption) {
    match option {
        SockOption::ReuseAddr(v) => options.reuse_addr = v,
        SockOption::NoDelay(v) => options.nodelay = v,
        SockOption::KeepAlive(v) => options.keepalive = v,
        SockOption::KeepIdle(d) => options.keep_idle = d.into(),
        SockOption::KeepInterval(d) => options.keep_interval = d.into(),
        SockOption::KeepCount(n) => options.keep_count = n,
        SockOption::RecvBuffer(n) => {
            options.recv_buffer = n;
            options.recv_buffer_locked = true;
        }
        SockOption::SendBuffer(n) => {
            options.send_buffer = n;
            options.send_buffer_locked = true;
        }
        SockOption::Linger(l) => options.linger = l.map(OptionTime::from),
        SockOption::Congestion(c) => options.congestion = c,
        SockOption::SynCount(n) => options.syn_retries = n,
        SockOption::UserTimeout(t) => options.user_timeout = t.map(OptionTime::from),
        SockOption::MaxSegment(n) => options.max_segment = (n != 0).then_some(n),
        SockOption::Cork(v) => options.cork = v,
        SockOption::NotSentLowat(n) => options.notsent_lowat = n,
        SockOption::RecvLowat(n) => options.recv_lowat = n,
        SockOption::V6Only(v) => options.v6only = v,
        // Quick-ACK mode belongs to a connection; before one exists there
        // is nothing to do (Linux ignores it likewise).
        SockOption::QuickAck(_) => {}
        SockOption::DeferAccept(d) => options.defer_accept = d.map(OptionTime::from),
        SockOption::OobInline(v) => options.oob_inline = v,
        SockOption::IpTos(tos) => options.ip_tos = tos,
        SockOption::IpTtl(ttl) => options.ip_ttl = ttl,
        SockOption::MtuDiscover(mode) => options.pmtu_discovery = mode,
        // Read-only; normalize() rejects them before they get here.
        SockOption::Error(_) | SockOption::AtMark(_) => {}
    }
}

/// Reads a stored option; `None` for the ones the stack answers itself
/// (`Error`, `MaxSegment`).
pub(crate) fn read(options: &SocketOptions, name: OptionName) -> Option<SockOption> {
    Some(match name {
        OptionName::ReuseAddr => SockOption::ReuseAddr(options.reuse_addr),
        OptionName::NoDelay => SockOption::NoDelay(options.nodelay),
        OptionName::KeepAlive => SockOption::KeepAlive(options.keepalive),
        OptionName::KeepIdle => SockOption::KeepIdle(options.keep_idle.get()),
        OptionName::KeepInterval => SockOption::KeepInterval(options.keep_interval.get()),
        OptionName::KeepCount => SockOption::KeepCount(options.keep_count),
        OptionName::RecvBuffer => SockOption::RecvBuffer(options.recv_buffer),
        OptionName::SendBuffer => SockOption::SendBuffer(options.send_buffer),
        OptionName::Linger => SockOption::Linger(options.linger.map(OptionTime::get)),
        OptionName::Congestion => SockOption::Congestion(options.congestion),
        OptionName::SynCount => SockOption::SynCount(options.syn_retries),
        OptionName::UserTimeout => {
            SockOption::UserTimeout(options.user_timeout.map(OptionTime::get))
        }
        OptionName::Cork => SockOption::Cork(options.cork),
        OptionName::NotSentLowat => SockOption::NotSentLowat(options.notsent_lowat),
        OptionName::RecvLowat => SockOption::RecvLowat(options.recv_lowat),
        OptionName::V6Only => SockOption::V6Only(options.v6only),
        // Off until a connection is in quick-ACK mode.
        OptionName::QuickAck => SockOption::QuickAck(false),
        OptionName::DeferAccept => {
            SockOption::DeferAccept(options.defer_accept.map(OptionTime::get))
        }
        OptionName::OobInline => SockOption::OobInline(options.oob_inline),
        OptionName::IpTos => SockOption::IpTos(options.ip_tos),
        // Linux reports the default TTL rather than "unset".
        OptionName::IpTtl => SockOption::IpTtl(Some(options.ip_ttl.unwrap_or(DEFAULT_TTL))),
        OptionName::MtuDiscover => SockOption::MtuDiscover(options.pmtu_discovery),
        // No connection, no urgent data.
        OptionName::AtMark => SockOption::AtMark(false),
        // TCP_INFO has its own typed accessor (`Stack::tcp_info`).
        OptionName::Error | OptionName::MaxSegment | OptionName::TcpInfo => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_linux() {
        assert_eq!(
            normalize(SockOption::KeepCount(0)),
            Err(SocketError::InvalidValue)
        );
        assert_eq!(
            normalize(SockOption::KeepIdle(Duration::ZERO)),
            Err(SocketError::InvalidValue)
        );
        assert_eq!(
            normalize(SockOption::MaxSegment(1000)),
            Ok(SockOption::MaxSegment(1000))
        );
        assert_eq!(
            normalize(SockOption::MaxSegment(87)),
            Err(SocketError::InvalidValue)
        );
        assert_eq!(
            normalize(SockOption::MaxSegment(0)),
            Ok(SockOption::MaxSegment(0))
        );
        assert_eq!(
            normalize(SockOption::Error(None)),
            Err(SocketError::UnsupportedOption)
        );
        assert_eq!(
            normalize(SockOption::RecvBuffer(1)),
            Ok(SockOption::RecvBuffer(MIN_BUFFER))
        );
        assert_eq!(
            normalize(SockOption::SendBuffer(usize::MAX)),
            Ok(SockOption::SendBuffer(MAX_BUFFER))
        );
    }

    #[test]
    fn defer_accept_rounds_to_syn_ack_periods_as_linux() {
        // (seconds set, seconds read back): Linux's secs_to_retrans and
        // retrans_to_secs with TCP_TIMEOUT_INIT 1 s and TCP_RTO_MAX 120 s.
        for (set, read) in [
            (0, 0),
            (1, 1),
            (2, 3),
            (3, 3),
            (4, 7),
            (30, 31),
            (64, 127),
            (200, 247),
            (100_000, 29_887),
        ] {
            let periods = defer_accept_periods(set);
            assert_eq!(defer_accept_seconds(periods), read, "{set} s");
        }
        assert_eq!(defer_accept_periods(u64::MAX), u8::MAX);
    }

    #[test]
    fn store_then_read_round_trips() {
        let mut o = SocketOptions::default();
        store(&mut o, SockOption::NoDelay(true));
        store(&mut o, SockOption::KeepCount(3));
        assert_eq!(
            read(&o, OptionName::NoDelay),
            Some(SockOption::NoDelay(true))
        );
        assert_eq!(
            read(&o, OptionName::KeepCount),
            Some(SockOption::KeepCount(3))
        );
        assert_eq!(read(&o, OptionName::Error), None);
    }
}
