//! Socket options: which `(level, optname)` pairs tcpd knows, and how their
//! C values (`int`, `struct linger`, a congestion-control name) map to the
//! daemon's `OptionValue`.
//!
//! Length rules follow Linux: `setsockopt` with an `optlen` shorter than the
//! option's C type is `EINVAL`; `getsockopt` writes at most `*optlen` bytes
//! (a short buffer gets the truncated value) and stores the number of bytes
//! written back in `*optlen`; a negative `*optlen` is `EINVAL`. Unknown
//! options are `ENOPROTOOPT`. Range checks that Linux performs before
//! touching the socket are done here too, so they cost no round trip.

use std::mem::size_of;

use libc::{c_int, c_void, linger, socklen_t};
use tcpd_proto::v2::{Linger, OptionValue, SocketOption as SockOpt, option_value::Value};

use crate::ffi::{Errno, Result};

/// `TCP_CA_NAME_MAX` (include/net/tcp.h): congestion names are at most 15
/// bytes plus the terminating NUL.
pub(crate) const TCP_CA_NAME_MAX: usize = 16;

/// The C type of an option's value and the range Linux accepts (the shared
/// `tcpd_types::ValueKind`).
pub use tcpd_proto::types::ValueKind as OptKind;

/// One option tcpd supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpec {
    /// The daemon's name for it.
    pub option: SockOpt,
    /// The C type of the value.
    pub kind: OptKind,
    /// False for read-only options (`SO_ERROR`); setting them is
    /// `ENOPROTOOPT` as on Linux.
    pub settable: bool,
}

/// Whether setting `option` on a fresh socket may wait for its connect
/// (libtcpd's one-request connect): options whose accepted values
/// `decode_set` checks exactly as the daemon does, whatever the socket's
/// family or state, so deferring cannot move an error to another call.
pub fn deferrable(option: SockOpt) -> bool {
    matches!(
        option,
        SockOpt::SoReuseaddr
            | SockOpt::TcpNodelay
            | SockOpt::SoKeepalive
            | SockOpt::TcpKeepidle
            | SockOpt::TcpKeepintvl
            | SockOpt::TcpKeepcnt
            | SockOpt::SoRcvbuf
            | SockOpt::SoSndbuf
            | SockOpt::TcpSyncnt
            | SockOpt::TcpUserTimeout
    )
}

/// Finds the option for `(level, optname)` in the shared option table
/// (`tcpd_types::OptionName`); `ENOPROTOOPT` when tcpd has none.
pub fn lookup(level: c_int, optname: c_int) -> Result<OptSpec> {
    let name = tcpd_proto::types::OptionName::from_linux(level, optname)
        .ok_or(Errno(libc::ENOPROTOOPT))?;
    Ok(OptSpec {
        option: SockOpt::from(name),
        kind: name.kind(),
        settable: name.settable(),
    })
}

/// Reads the caller's `setsockopt` value.
///
/// # Safety
/// A non-null `optval` must be readable for `optlen` bytes.
pub unsafe fn decode_set(
    spec: &OptSpec,
    optval: *const c_void,
    optlen: socklen_t,
) -> Result<OptionValue> {
    if !spec.settable {
        return Err(Errno(libc::ENOPROTOOPT));
    }
    if optval.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let len = optlen as usize;
    if (optlen as i32) < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let value = match spec.kind {
        OptKind::Flag | OptKind::Int { .. } | OptKind::Unsigned => {
            if len < size_of::<c_int>() {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: optval is readable for optlen >= sizeof(int) bytes.
            let v = i64::from(unsafe { optval.cast::<c_int>().read_unaligned() });
            match spec.kind {
                OptKind::Flag => Value::Flag(v != 0),
                kind => Value::Int(kind.accept_int(v).ok_or(Errno(libc::EINVAL))?),
            }
        }
        OptKind::Linger => {
            if len < size_of::<linger>() {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: readable for optlen >= sizeof(struct linger) bytes.
            let l = unsafe { optval.cast::<linger>().read_unaligned() };
            Value::Linger(Linger {
                enabled: l.l_onoff != 0,
                // Linux stores l_linger as an unsigned long: a negative
                // value means "as long as possible".
                seconds: u32::try_from(l.l_linger).unwrap_or(u32::MAX),
            })
        }
        OptKind::TcpInfo => return Err(Errno(libc::ENOPROTOOPT)),
        OptKind::Text => {
            if len < 1 {
                return Err(Errno(libc::EINVAL));
            }
            // Linux copies at most TCP_CA_NAME_MAX - 1 bytes, up to a NUL.
            let take = len.min(TCP_CA_NAME_MAX - 1);
            // SAFETY: readable for optlen >= take bytes.
            let bytes = unsafe { std::slice::from_raw_parts(optval.cast::<u8>(), take) };
            let name = bytes.split(|&b| b == 0).next().unwrap_or_default();
            // A name that is not UTF-8 names no algorithm: the daemon answers
            // ENOENT for it as Linux does for unknown names.
            Value::Text(String::from_utf8_lossy(name).into_owned())
        }
    };
    Ok(OptionValue { value: Some(value) })
}

/// Checks the caller's `getsockopt` buffer before asking the daemon.
///
/// # Safety
/// A non-null `optlen` must be readable.
pub unsafe fn check_get_args(optval: *mut c_void, optlen: *mut socklen_t) -> Result<usize> {
    if optval.is_null() || optlen.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: non-null, readable per the caller.
    let capacity = unsafe { optlen.read_unaligned() };
    if (capacity as i32) < 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(capacity as usize)
}

/// The C bytes of an option value the daemon returned, before truncation.
pub fn encode_get(spec: &OptSpec, value: &OptionValue) -> Result<Vec<u8>> {
    // A reply of the wrong shape is a daemon bug, reported as EIO.
    let bad_reply = Errno(libc::EIO);
    let bytes = match (spec.kind, value.value.as_ref()) {
        (OptKind::Flag | OptKind::Int { .. } | OptKind::Unsigned, Some(Value::Flag(on))) => {
            c_int::from(*on).to_ne_bytes().to_vec()
        }
        // An unsigned option reads back as C's int of the same bits
        // (TCP_NOTSENT_LOWAT's UINT_MAX is -1).
        (OptKind::Unsigned, Some(Value::Int(v))) => {
            let bits = u32::try_from(*v).unwrap_or(u32::MAX);
            bits.cast_signed().to_ne_bytes().to_vec()
        }
        (OptKind::Flag | OptKind::Int { .. }, Some(Value::Int(v))) => {
            let clamped = (*v).clamp(i64::from(c_int::MIN), i64::from(c_int::MAX)) as c_int;
            clamped.to_ne_bytes().to_vec()
        }
        (OptKind::Linger, Some(Value::Linger(l))) => {
            let c = linger {
                l_onoff: c_int::from(l.enabled),
                l_linger: c_int::try_from(l.seconds).unwrap_or(c_int::MAX),
            };
            let mut out = c.l_onoff.to_ne_bytes().to_vec();
            out.extend_from_slice(&c.l_linger.to_ne_bytes());
            out
        }
        (OptKind::TcpInfo, Some(Value::TcpInfo(info))) => tcp_info_bytes(info),
        (OptKind::Text, Some(Value::Text(name))) => {
            // Linux copies the NUL-padded TCP_CA_NAME_MAX-byte name buffer.
            let mut out = vec![0u8; TCP_CA_NAME_MAX];
            let take = name.len().min(TCP_CA_NAME_MAX - 1);
            out[..take].copy_from_slice(&name.as_bytes()[..take]);
            out
        }
        _ => return Err(bad_reply),
    };
    Ok(bytes)
}

/// Linux's `struct tcp_info` (<linux/tcp.h>, as `libc::tcp_info`) from the
/// daemon's fields; what tcpd does not track stays zero. getsockopt copies
/// as much of it as the caller's buffer holds, as Linux does, so programs
/// built against an older, shorter struct work.
fn tcp_info_bytes(info: &tcpd_proto::v2::TcpInfo) -> Vec<u8> {
    let small = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    let mut c: libc::tcp_info = unsafe { std::mem::zeroed() };
    // Linux's TCP_* state numbers (include/net/tcp_states.h).
    c.tcpi_state = linux_tcp_state(info.state());
    c.tcpi_ca_state = small(info.ca_state);
    c.tcpi_retransmits = small(info.retransmits);
    c.tcpi_probes = small(info.probes);
    c.tcpi_backoff = small(info.backoff);
    c.tcpi_options = small(info.options);
    // Bitfields tcpi_snd_wscale:4, tcpi_rcv_wscale:4 (low bits first).
    c.tcpi_snd_rcv_wscale = (small(info.snd_wscale) & 0xf) | (small(info.rcv_wscale) << 4);
    c.tcpi_rto = info.rto;
    c.tcpi_ato = info.ato;
    c.tcpi_snd_mss = info.snd_mss;
    c.tcpi_rcv_mss = info.rcv_mss;
    c.tcpi_unacked = info.unacked;
    c.tcpi_sacked = info.sacked;
    c.tcpi_lost = info.lost;
    c.tcpi_retrans = info.retrans;
    c.tcpi_last_data_sent = info.last_data_sent;
    c.tcpi_last_data_recv = info.last_data_recv;
    c.tcpi_last_ack_recv = info.last_ack_recv;
    c.tcpi_pmtu = info.pmtu;
    c.tcpi_rcv_ssthresh = info.rcv_ssthresh;
    c.tcpi_rtt = info.rtt;
    c.tcpi_rttvar = info.rttvar;
    c.tcpi_snd_ssthresh = info.snd_ssthresh;
    c.tcpi_snd_cwnd = info.snd_cwnd;
    c.tcpi_advmss = info.advmss;
    c.tcpi_reordering = info.reordering;
    c.tcpi_rcv_rtt = info.rcv_rtt;
    c.tcpi_rcv_space = info.rcv_space;
    c.tcpi_total_retrans = info.total_retrans;
    c.tcpi_bytes_acked = info.bytes_acked;
    c.tcpi_bytes_received = info.bytes_received;
    c.tcpi_segs_out = info.segs_out;
    c.tcpi_segs_in = info.segs_in;
    c.tcpi_notsent_bytes = info.notsent_bytes;
    c.tcpi_min_rtt = info.min_rtt;
    c.tcpi_delivery_rate = info.delivery_rate;
    c.tcpi_bytes_sent = info.bytes_sent;
    c.tcpi_dsack_dups = info.dsack_dups;
    c.tcpi_snd_wnd = info.snd_wnd;
    c.tcpi_rcv_wnd = info.rcv_wnd;
    // SAFETY: `c` is a live, initialised value of exactly this many bytes.
    unsafe { std::slice::from_raw_parts((&raw const c).cast::<u8>(), size_of::<libc::tcp_info>()) }
        .to_vec()
}

/// Linux's `TCP_ESTABLISHED` (1) ... `TCP_CLOSING` (11) numbering.
fn linux_tcp_state(state: tcpd_proto::v2::TcpState) -> u8 {
    use tcpd_proto::v2::TcpState as S;
    match state {
        S::Established => 1,
        S::SynSent => 2,
        S::SynReceived => 3,
        S::FinWait1 => 4,
        S::FinWait2 => 5,
        S::TimeWait => 6,
        S::Closed | S::Unspecified => 7,
        S::CloseWait => 8,
        S::LastAck => 9,
        S::Listen => 10,
        S::Closing => 11,
    }
}

/// Copies `bytes` to the caller, truncated to `capacity`, and stores the
/// number of bytes written in `*optlen` (Linux behaviour).
///
/// # Safety
/// `optval` must be writable for `capacity` bytes; `optlen` writable.
pub unsafe fn write_get(
    bytes: &[u8],
    capacity: usize,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) {
    let copy = bytes.len().min(capacity);
    // SAFETY: per the caller; copy <= capacity.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), optval.cast::<u8>(), copy);
        optlen.write_unaligned(copy as socklen_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(level: c_int, name: c_int, bytes: &[u8]) -> Result<OptionValue> {
        let spec = lookup(level, name)?;
        // SAFETY: bytes is readable for its length.
        unsafe { decode_set(&spec, bytes.as_ptr().cast(), bytes.len() as socklen_t) }
    }

    #[test]
    fn unknown_options_are_enoprotoopt() {
        assert_eq!(
            lookup(libc::SOL_SOCKET, libc::SO_BROADCAST),
            Err(Errno(libc::ENOPROTOOPT))
        );
        assert_eq!(
            lookup(libc::IPPROTO_IP, libc::IP_MULTICAST_TTL),
            Err(Errno(libc::ENOPROTOOPT))
        );
        assert_eq!(
            lookup(libc::IPPROTO_TCP, libc::TCP_FASTOPEN),
            Err(Errno(libc::ENOPROTOOPT))
        );
        // Issue 10's options are known now.
        for (level, name) in [
            (libc::IPPROTO_TCP, libc::TCP_CORK),
            (libc::IPPROTO_TCP, libc::TCP_QUICKACK),
            (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
            (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
            (libc::SOL_SOCKET, libc::SO_OOBINLINE),
            (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
            (libc::IPPROTO_TCP, libc::TCP_INFO),
            (libc::IPPROTO_IP, libc::IP_TOS),
            (libc::IPPROTO_IP, libc::IP_TTL),
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        ] {
            assert!(lookup(level, name).is_ok(), "{level} {name}");
        }
    }

    #[test]
    fn ip_urgent_and_tcp_info_options_follow_linux() {
        let int = |v: i32| v.to_ne_bytes();
        assert_eq!(
            set(libc::IPPROTO_IP, libc::IP_TTL, &int(-1)).unwrap().value,
            Some(Value::Int(-1))
        );
        for (level, name, bad) in [
            (libc::IPPROTO_IP, libc::IP_TTL, 256),
            (libc::IPPROTO_IP, libc::IP_TTL, -2),
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, 6),
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, -1),
        ] {
            assert_eq!(
                set(level, name, &int(bad)),
                Err(Errno(libc::EINVAL)),
                "{name} {bad}"
            );
        }
        // TCP_INFO can be read, never set (Linux: ENOPROTOOPT).
        assert_eq!(
            set(libc::IPPROTO_TCP, libc::TCP_INFO, &[0; 8]),
            Err(Errno(libc::ENOPROTOOPT))
        );
    }

    /// The bytes of TCP_INFO sit where <linux/tcp.h> puts them.
    #[test]
    fn tcp_info_has_linux_layout() {
        let info = tcpd_proto::v2::TcpInfo {
            state: tcpd_proto::v2::TcpState::Established as i32,
            ca_state: 4,
            snd_wscale: 7,
            rcv_wscale: 9,
            rto: 204_000,
            snd_cwnd: 10,
            bytes_acked: 0x0102_0304_0506_0708,
            rcv_wnd: 65_535,
            ..Default::default()
        };
        let spec = lookup(libc::IPPROTO_TCP, libc::TCP_INFO).unwrap();
        let value = OptionValue {
            value: Some(Value::TcpInfo(info)),
        };
        let bytes = encode_get(&spec, &value).unwrap();
        assert_eq!(bytes.len(), size_of::<libc::tcp_info>());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(bytes[0], 1, "TCP_ESTABLISHED");
        assert_eq!(bytes[1], 4, "TCP_CA_Loss");
        assert_eq!(bytes[6], 7 | (9 << 4), "snd_wscale:4, rcv_wscale:4");
        assert_eq!(u32_at(8), 204_000, "tcpi_rto");
        assert_eq!(u32_at(80), 10, "tcpi_snd_cwnd");
        assert_eq!(
            u64::from_ne_bytes(bytes[120..128].try_into().unwrap()),
            0x0102_0304_0506_0708,
            "tcpi_bytes_acked"
        );
        assert_eq!(
            u32_at(std::mem::offset_of!(libc::tcp_info, tcpi_rcv_wnd)),
            65_535
        );
    }

    #[test]
    fn int_and_flag_encoding() {
        let v = set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &5i32.to_ne_bytes()).unwrap();
        assert_eq!(v.value, Some(Value::Flag(true)));
        let v = set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, &60i32.to_ne_bytes()).unwrap();
        assert_eq!(v.value, Some(Value::Int(60)));
        // short optlen and out-of-range values are EINVAL, like Linux
        assert_eq!(
            set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &[1, 0]),
            Err(Errno(libc::EINVAL))
        );
        assert_eq!(
            set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, &0i32.to_ne_bytes()),
            Err(Errno(libc::EINVAL))
        );
        assert_eq!(
            set(
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                &(-1i32).to_ne_bytes()
            ),
            Err(Errno(libc::EINVAL))
        );
        // Unsigned options take any int, negative ones as Linux reads them
        // (TCP_NOTSENT_LOWAT -1 is UINT_MAX, "no limit"), and read back alike.
        let v = set(
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &(-1i32).to_ne_bytes(),
        )
        .unwrap();
        assert_eq!(v.value, Some(Value::Int(i64::from(u32::MAX))));
        let spec = lookup(libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT).unwrap();
        assert_eq!(encode_get(&spec, &v).unwrap(), (-1i32).to_ne_bytes());
        // SO_ERROR is read-only
        assert_eq!(
            set(libc::SOL_SOCKET, libc::SO_ERROR, &0i32.to_ne_bytes()),
            Err(Errno(libc::ENOPROTOOPT))
        );
    }

    #[test]
    fn linger_and_congestion_encoding() {
        let mut raw = 1i32.to_ne_bytes().to_vec();
        raw.extend_from_slice(&7i32.to_ne_bytes());
        let v = set(libc::SOL_SOCKET, libc::SO_LINGER, &raw).unwrap();
        assert_eq!(
            v.value,
            Some(Value::Linger(Linger {
                enabled: true,
                seconds: 7
            }))
        );
        assert_eq!(
            set(libc::SOL_SOCKET, libc::SO_LINGER, &raw[..4]),
            Err(Errno(libc::EINVAL))
        );

        let v = set(libc::IPPROTO_TCP, libc::TCP_CONGESTION, b"newreno\0garbage").unwrap();
        assert_eq!(v.value, Some(Value::Text("newreno".into())));
        let v = set(libc::IPPROTO_TCP, libc::TCP_CONGESTION, b"cubic").unwrap();
        assert_eq!(v.value, Some(Value::Text("cubic".into())));
    }

    #[test]
    fn get_encoding_and_truncation() {
        let spec = lookup(libc::IPPROTO_TCP, libc::TCP_MAXSEG).unwrap();
        let bytes = encode_get(
            &spec,
            &OptionValue {
                value: Some(Value::Int(1460)),
            },
        )
        .unwrap();
        assert_eq!(bytes, 1460i32.to_ne_bytes());

        let spec = lookup(libc::IPPROTO_TCP, libc::TCP_CONGESTION).unwrap();
        let bytes = encode_get(
            &spec,
            &OptionValue {
                value: Some(Value::Text("cubic".into())),
            },
        )
        .unwrap();
        assert_eq!(bytes.len(), TCP_CA_NAME_MAX);
        assert_eq!(&bytes[..6], b"cubic\0");

        let mut out = [0xFFu8; 8];
        let mut len: socklen_t = 2;
        // SAFETY: out has 8 writable bytes >= capacity 2.
        unsafe { write_get(&1460i32.to_ne_bytes(), 2, out.as_mut_ptr().cast(), &mut len) };
        assert_eq!(len, 2);
        assert_eq!(&out[..2], &1460i32.to_ne_bytes()[..2]);
        assert_eq!(out[2], 0xFF);

        // a reply of the wrong type is EIO, not a panic
        let spec = lookup(libc::SOL_SOCKET, libc::SO_LINGER).unwrap();
        assert_eq!(
            encode_get(
                &spec,
                &OptionValue {
                    value: Some(Value::Int(1))
                }
            ),
            Err(Errno(libc::EIO))
        );
    }
}
