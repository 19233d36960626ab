//! Socket-option validation and storage shared by unconnected sockets,
//! listeners and connections.
//!
//! Values are checked once here, with Linux's limits, before they reach a
//! socket's [`SocketOptions`] or a live connection, so every socket kind
//! accepts and rejects the same values. `SO_ERROR` is read only; reading
//! `TCP_MAXSEG` is answered by the stack (the MSS in use), setting it
//! stores the user's clamp (Linux's `user_mss`).

use crate::config::SocketOptions;
use crate::error::SocketError;
use crate::socket::{OptionName, SockOption};
use crate::time::Duration;

/// Smallest socket buffer honoured (Linux clamps SO_RCVBUF/SO_SNDBUF up to
/// SOCK_MIN_RCVBUF/SOCK_MIN_SNDBUF, a few KiB).
pub(crate) const MIN_BUFFER: usize = 4096;
/// Largest socket buffer honoured (a fixed stand-in for Linux's rmem_max/wmem_max sysctls).
pub(crate) const MAX_BUFFER: usize = 64 * 1024 * 1024;
/// Linux MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL: 32767 s.
const MAX_KEEPALIVE_SECS: u64 = 32767;
/// Linux MAX_TCP_KEEPCNT.
const MAX_KEEPCNT: u32 = 127;
/// Linux MAX_TCP_SYNCNT.
const MAX_SYNCNT: u32 = 127;
/// TCP_MAXSEG bounds: Linux's TCP_MIN_MSS (88) and MAX_TCP_WINDOW (32767);
/// 0 clears the setting.
const MAXSEG_RANGE: core::ops::RangeInclusive<u16> = 88..=32767;

/// Checks `option` and returns the value to store (buffer sizes are clamped
/// like Linux does; out-of-range counts and intervals are EINVAL as on Linux).
pub(crate) fn normalize(option: SockOption) -> Result<SockOption, SocketError> {
    let keepalive_range = Duration::from_secs(1)..=Duration::from_secs(MAX_KEEPALIVE_SECS);
    match option {
        SockOption::Error(_) => Err(SocketError::UnsupportedOption),
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
        SockOption::KeepIdle(d) => options.keep_idle = d,
        SockOption::KeepInterval(d) => options.keep_interval = d,
        SockOption::KeepCount(n) => options.keep_count = n,
        SockOption::RecvBuffer(n) => {
            options.recv_buffer = n;
            options.recv_buffer_locked = true;
        }
        SockOption::SendBuffer(n) => {
            options.send_buffer = n;
            options.send_buffer_locked = true;
        }
        SockOption::Linger(l) => options.linger = l,
        SockOption::Congestion(c) => options.congestion = c,
        SockOption::SynCount(n) => options.syn_retries = n,
        SockOption::UserTimeout(t) => options.user_timeout = t,
        SockOption::MaxSegment(n) => options.max_segment = (n != 0).then_some(n),
        SockOption::Cork(v) => options.cork = v,
        SockOption::NotSentLowat(n) => options.notsent_lowat = n,
        SockOption::RecvLowat(n) => options.recv_lowat = n,
        SockOption::V6Only(v) => options.v6only = v,
        // Quick-ACK mode belongs to a connection; before one exists there
        // is nothing to do (Linux ignores it likewise).
        SockOption::QuickAck(_) => {}
        // Read-only; normalize() rejects it before it gets here.
        SockOption::Error(_) => {}
    }
}

/// Reads a stored option; `None` for the ones the stack answers itself
/// (`Error`, `MaxSegment`).
pub(crate) fn read(options: &SocketOptions, name: OptionName) -> Option<SockOption> {
    Some(match name {
        OptionName::ReuseAddr => SockOption::ReuseAddr(options.reuse_addr),
        OptionName::NoDelay => SockOption::NoDelay(options.nodelay),
        OptionName::KeepAlive => SockOption::KeepAlive(options.keepalive),
        OptionName::KeepIdle => SockOption::KeepIdle(options.keep_idle),
        OptionName::KeepInterval => SockOption::KeepInterval(options.keep_interval),
        OptionName::KeepCount => SockOption::KeepCount(options.keep_count),
        OptionName::RecvBuffer => SockOption::RecvBuffer(options.recv_buffer),
        OptionName::SendBuffer => SockOption::SendBuffer(options.send_buffer),
        OptionName::Linger => SockOption::Linger(options.linger),
        OptionName::Congestion => SockOption::Congestion(options.congestion),
        OptionName::SynCount => SockOption::SynCount(options.syn_retries),
        OptionName::UserTimeout => SockOption::UserTimeout(options.user_timeout),
        OptionName::Cork => SockOption::Cork(options.cork),
        OptionName::NotSentLowat => SockOption::NotSentLowat(options.notsent_lowat),
        OptionName::RecvLowat => SockOption::RecvLowat(options.recv_lowat),
        OptionName::V6Only => SockOption::V6Only(options.v6only),
        // Off until a connection is in quick-ACK mode.
        OptionName::QuickAck => SockOption::QuickAck(false),
        OptionName::Error | OptionName::MaxSegment => return None,
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
