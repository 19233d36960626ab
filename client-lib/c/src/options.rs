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
            lookup(libc::IPPROTO_IP, libc::IP_TTL),
            Err(Errno(libc::ENOPROTOOPT))
        );
        assert_eq!(
            lookup(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
            Err(Errno(libc::ENOPROTOOPT))
        );
        // Issue 10's options are known now.
        for (level, name) in [
            (libc::IPPROTO_TCP, libc::TCP_CORK),
            (libc::IPPROTO_TCP, libc::TCP_QUICKACK),
            (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
            (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
        ] {
            assert!(lookup(level, name).is_ok(), "{level} {name}");
        }
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
