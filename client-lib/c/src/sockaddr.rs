//! `struct sockaddr_in` and `struct sockaddr_in6` in and out of C, with the
//! checks Linux applies.
//!
//! Input (bind, connect): the address's own `sa_family` says which struct
//! it is. `AF_INET` needs a whole `sockaddr_in` (else `EINVAL`); `AF_INET6`
//! at least the 24 bytes of RFC 2133's `sockaddr_in6` (Linux's
//! `SIN6_LEN_RFC2133`: the scope id is read only when the 28-byte RFC 3493
//! struct is given); any other family is `EAFNOSUPPORT`, except `AF_UNSPEC`
//! with `INADDR_ANY` for bind (below). The IPv6 flow info and scope id ride
//! along to the daemon. Whether the family suits the socket (an IPv6
//! address for an `AF_INET` socket is `EAFNOSUPPORT`, an IPv4-mapped one on
//! an `IPV6_V6ONLY` socket `EINVAL`...) is the daemon's to say: the socket's
//! family lives there.
//!
//! Output (accept, getsockname, getpeername): a 4-octet address is written
//! as a `sockaddr_in`, a 16-octet one (an `AF_INET6` socket's, IPv4-mapped
//! included) as a `sockaddr_in6`; at most `*addrlen` bytes are written (a
//! short buffer gets a truncated address, as POSIX specifies) and
//! `*addrlen` is always set to the full size of that struct (16 or 28).
//!
//! The wire form [`SockAddr`] (`tcpd.v2.SocketAddress`) keeps the address
//! as network-order octets (4 or 16) and the port as a number.

use std::mem::size_of;

use libc::{sockaddr, sockaddr_in, sockaddr_in6, socklen_t};
use tcpd_proto::v2::SocketAddress as SockAddr;

use crate::ffi::{Errno, Result};

/// `sizeof(struct sockaddr_in)`: 16 on Linux.
pub const SOCKADDR_IN_LEN: usize = size_of::<sockaddr_in>();
/// `sizeof(struct sockaddr_in6)`: 28 on Linux (RFC 3493 §3.3).
pub const SOCKADDR_IN6_LEN: usize = size_of::<sockaddr_in6>();
/// The shortest `sockaddr_in6` Linux takes (`SIN6_LEN_RFC2133`: RFC 2133's
/// struct, without `sin6_scope_id`).
const SIN6_LEN_RFC2133: usize = 24;

/// Whether an `AF_UNSPEC` address meaning "any" is accepted, as Linux
/// `inet_bind` does for compatibility with old programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnspecAny {
    /// bind(2): `AF_UNSPEC` with `INADDR_ANY` is taken as `AF_INET`.
    Accept,
    /// connect(2): only `AF_INET`/`AF_INET6` (tcpd does not implement the
    /// `AF_UNSPEC` "disconnect" of Linux, so it is `EAFNOSUPPORT`).
    Reject,
}

/// Reads a caller's `struct sockaddr_in` or `struct sockaddr_in6`.
///
/// # Safety
/// A non-null `addr` must be readable for `len` bytes.
pub unsafe fn read_sockaddr(
    addr: *const sockaddr,
    len: socklen_t,
    unspec: UnspecAny,
) -> Result<SockAddr> {
    if addr.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // socklen_t is unsigned; Linux reads it as an int, so "negative" lengths
    // and anything shorter than the family's struct are EINVAL.
    let len = len as i32;
    if len < 0 || (len as usize) < size_of::<libc::sa_family_t>() {
        return Err(Errno(libc::EINVAL));
    }
    let len = len as usize;
    // SAFETY: addr is non-null and readable for len >= 2 bytes.
    let family = i32::from(unsafe { std::ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) });
    match family {
        libc::AF_INET6 => {
            if len < SIN6_LEN_RFC2133 {
                return Err(Errno(libc::EINVAL));
            }
            let mut raw = [0u8; SOCKADDR_IN6_LEN];
            let copy = len.min(SOCKADDR_IN6_LEN);
            // SAFETY: readable for len >= copy bytes; raw holds copy bytes.
            unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), raw.as_mut_ptr(), copy) };
            // SAFETY: raw is a fully initialised 28-byte buffer (an RFC 2133
            // address leaves the scope id zero); read_unaligned copes with
            // its byte alignment.
            let raw: sockaddr_in6 = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
            Ok(SockAddr {
                ip: raw.sin6_addr.s6_addr.to_vec(),
                port: u32::from(u16::from_be(raw.sin6_port)),
                flowinfo: u32::from_be(raw.sin6_flowinfo),
                scope_id: raw.sin6_scope_id,
            })
        }
        _ => {
            if len < SOCKADDR_IN_LEN {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: addr is non-null and readable for len >= 16 bytes;
            // read_unaligned copes with a byte buffer the caller cast.
            let raw: sockaddr_in = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            let ip = u32::from_be(raw.sin_addr.s_addr);
            let accepted = family == libc::AF_INET
                || (unspec == UnspecAny::Accept
                    && family == libc::AF_UNSPEC
                    && ip == libc::INADDR_ANY);
            if !accepted {
                return Err(Errno(libc::EAFNOSUPPORT));
            }
            Ok(SockAddr {
                ip: ip.to_be_bytes().to_vec(),
                port: u32::from(u16::from_be(raw.sin_port)),
                ..SockAddr::default()
            })
        }
    }
}

/// A wire address encoded as the C struct of its family.
#[derive(Clone, Copy)]
pub enum CSockAddr {
    V4(sockaddr_in),
    V6(sockaddr_in6),
}

impl CSockAddr {
    /// The struct's bytes (16 or 28).
    fn bytes(&self) -> &[u8] {
        let (ptr, len) = match self {
            CSockAddr::V4(a) => ((a as *const sockaddr_in).cast::<u8>(), SOCKADDR_IN_LEN),
            CSockAddr::V6(a) => ((a as *const sockaddr_in6).cast::<u8>(), SOCKADDR_IN6_LEN),
        };
        // SAFETY: both are plain C structs without padding bytes left
        // uninitialised (every field is set when built), borrowed for the
        // slice's life.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Encodes a wire address as a C `sockaddr_in` (4 octets, or none: the
/// unspecified IPv4 address) or `sockaddr_in6` (16 octets), network byte
/// order.
pub fn to_sockaddr(addr: &SockAddr) -> Result<CSockAddr> {
    // A daemon never sends a port above 65535; treat one as a protocol error.
    let port = u16::try_from(addr.port).map_err(|_| Errno(libc::EIO))?;
    if let Ok(octets) = <[u8; 16]>::try_from(addr.ip.as_slice()) {
        return Ok(CSockAddr::V6(sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: addr.flowinfo.to_be(),
            sin6_addr: libc::in6_addr { s6_addr: octets },
            sin6_scope_id: addr.scope_id,
        }));
    }
    let ip = match addr.ip.as_slice() {
        [] => 0,
        &[a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => return Err(Errno(libc::EAFNOSUPPORT)),
    };
    Ok(CSockAddr::V4(sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: ip.to_be() },
        sin_zero: [0; 8],
    }))
}

/// Validates an output address pair before a call that would fill it, so a
/// bad pointer fails *before* any state changes (e.g. before a connection
/// is accepted and then lost).
///
/// # Safety
/// A non-null `len` must be readable.
pub unsafe fn check_out_args(addr: *mut sockaddr, len: *mut socklen_t) -> Result<()> {
    if addr.is_null() || len.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: len is non-null and readable per the caller.
    let capacity = unsafe { len.read_unaligned() };
    if (capacity as i32) < 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

/// Writes `value` to the caller's buffer as the struct of its family,
/// truncated to `*len` bytes, and sets `*len` to the struct's full size.
///
/// # Safety
/// Non-null `addr` must be writable for `*len` bytes; non-null `len` must be
/// readable and writable.
pub unsafe fn write_sockaddr(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    value: &SockAddr,
) -> Result<()> {
    // SAFETY: forwarded caller guarantee.
    unsafe { check_out_args(addr, len)? };
    let encoded = to_sockaddr(value)?;
    let bytes = encoded.bytes();
    // SAFETY: checked non-null above.
    let capacity = unsafe { len.read_unaligned() } as usize;
    let copy = capacity.min(bytes.len());
    // SAFETY: the source holds bytes.len() >= copy bytes; the destination is
    // writable for `capacity >= copy` bytes per the caller.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr.cast::<u8>(), copy);
        len.write_unaligned(bytes.len() as socklen_t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c_addr(family: i32, ip: [u8; 4], port: u16) -> sockaddr_in {
        sockaddr_in {
            sin_family: family as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes(ip).to_be(),
            },
            sin_zero: [0; 8],
        }
    }

    fn c_addr6(ip: &str, port: u16, flowinfo: u32, scope_id: u32) -> sockaddr_in6 {
        sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: flowinfo.to_be(),
            sin6_addr: libc::in6_addr {
                s6_addr: ip.parse::<std::net::Ipv6Addr>().expect("ip").octets(),
            },
            sin6_scope_id: scope_id,
        }
    }

    fn read(a: &sockaddr_in, len: usize, unspec: UnspecAny) -> Result<SockAddr> {
        // SAFETY: `a` is a valid sockaddr_in of 16 bytes and len <= 16 in tests
        // that reach the read.
        unsafe { read_sockaddr((a as *const sockaddr_in).cast(), len as socklen_t, unspec) }
    }

    fn read6(a: &sockaddr_in6, len: usize) -> Result<SockAddr> {
        // SAFETY: `a` is a valid sockaddr_in6 of 28 bytes, len <= 28.
        unsafe {
            read_sockaddr(
                (a as *const sockaddr_in6).cast(),
                len as socklen_t,
                UnspecAny::Reject,
            )
        }
    }

    #[test]
    fn reads_network_order_into_host_order() {
        let a = c_addr(libc::AF_INET, [10, 0, 0, 2], 8080);
        let w = read(&a, 16, UnspecAny::Reject).unwrap();
        assert_eq!(w.ip, vec![10, 0, 0, 2]);
        assert_eq!(w.port, 8080);
    }

    #[test]
    fn reads_ipv6_with_flowinfo_scope_and_mapped_addresses() {
        let a = c_addr6("fe80::1", 22, 0x12345, 3);
        let w = read6(&a, SOCKADDR_IN6_LEN).unwrap();
        assert_eq!(w.ip.len(), 16);
        assert_eq!((w.port, w.flowinfo, w.scope_id), (22, 0x12345, 3));
        // RFC 2133's 24-byte struct: no scope id.
        let w = read6(&a, 24).unwrap();
        assert_eq!((w.port, w.scope_id), (22, 0));
        assert_eq!(read6(&a, 23), Err(Errno(libc::EINVAL)));
        // An IPv4-mapped address stays IPv6 on the wire (the daemon maps it).
        let mapped = c_addr6("::ffff:10.0.0.2", 80, 0, 0);
        let w = read6(&mapped, SOCKADDR_IN6_LEN).unwrap();
        assert_eq!(&w.ip[10..], &[0xff, 0xff, 10, 0, 0, 2]);
    }

    #[test]
    fn short_length_is_einval_and_unknown_family_eafnosupport() {
        let a = c_addr(libc::AF_INET, [10, 0, 0, 2], 1);
        assert_eq!(read(&a, 15, UnspecAny::Reject), Err(Errno(libc::EINVAL)));
        assert_eq!(read(&a, 1, UnspecAny::Reject), Err(Errno(libc::EINVAL)));
        let other = c_addr(libc::AF_APPLETALK, [10, 0, 0, 2], 1);
        assert_eq!(
            read(&other, 16, UnspecAny::Reject),
            Err(Errno(libc::EAFNOSUPPORT))
        );
        // SAFETY: null is checked first.
        let null = unsafe { read_sockaddr(std::ptr::null(), 16, UnspecAny::Reject) };
        assert_eq!(null, Err(Errno(libc::EFAULT)));
    }

    #[test]
    fn unspec_any_only_for_bind() {
        let any = c_addr(libc::AF_UNSPEC, [0, 0, 0, 0], 5000);
        assert_eq!(read(&any, 16, UnspecAny::Accept).unwrap().port, 5000);
        assert_eq!(
            read(&any, 16, UnspecAny::Reject),
            Err(Errno(libc::EAFNOSUPPORT))
        );
        let not_any = c_addr(libc::AF_UNSPEC, [1, 2, 3, 4], 5000);
        assert_eq!(
            read(&not_any, 16, UnspecAny::Accept),
            Err(Errno(libc::EAFNOSUPPORT))
        );
    }

    #[test]
    fn output_is_truncated_and_length_is_always_full() {
        let value = SockAddr {
            ip: vec![127, 0, 0, 1],
            port: 0x1234,
            ..SockAddr::default()
        };
        let mut buf = [0xAAu8; 32];
        let mut len: socklen_t = 4;
        // SAFETY: buf has 32 writable bytes >= len.
        unsafe { write_sockaddr(buf.as_mut_ptr().cast(), &mut len, &value).unwrap() };
        assert_eq!(len as usize, SOCKADDR_IN_LEN);
        // family (2 bytes, native order) then port in network order
        assert_eq!(&buf[..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        assert!(buf[4..].iter().all(|&b| b == 0xAA), "nothing past *addrlen");

        let mut full = [0u8; 16];
        let mut len: socklen_t = 16;
        // SAFETY: 16 writable bytes.
        unsafe { write_sockaddr(full.as_mut_ptr().cast(), &mut len, &value).unwrap() };
        assert_eq!(&full[4..8], &[127, 0, 0, 1]);
    }

    #[test]
    fn ipv6_output_is_a_sockaddr_in6() {
        let value = SockAddr {
            ip: "::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets()
                .to_vec(),
            port: 80,
            flowinfo: 7,
            scope_id: 2,
        };
        let mut out = c_addr6("::", 0, 0, 0);
        let mut len: socklen_t = 64;
        // SAFETY: out is a 28-byte sockaddr_in6 and len says 64: the write
        // stops at the struct's 28 bytes.
        unsafe { write_sockaddr((&raw mut out).cast(), &mut len, &value).unwrap() };
        assert_eq!(len as usize, SOCKADDR_IN6_LEN);
        assert_eq!(i32::from(out.sin6_family), libc::AF_INET6);
        assert_eq!(u16::from_be(out.sin6_port), 80);
        assert_eq!(u32::from_be(out.sin6_flowinfo), 7);
        assert_eq!(out.sin6_scope_id, 2);
        assert_eq!(&out.sin6_addr.s6_addr[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        // A 16-byte buffer gets the first 16 bytes; the length says 28.
        let mut short = [0xAAu8; 20];
        let mut len: socklen_t = 16;
        // SAFETY: 20 writable bytes >= len.
        unsafe { write_sockaddr(short.as_mut_ptr().cast(), &mut len, &value).unwrap() };
        assert_eq!(len as usize, SOCKADDR_IN6_LEN);
        assert_eq!(&short[16..], &[0xAA; 4]);
        // Neither 4 nor 16 octets: not an address tcpd sends.
        let bad = SockAddr {
            ip: vec![1; 5],
            ..SockAddr::default()
        };
        assert!(to_sockaddr(&bad).is_err());
    }

    #[test]
    fn output_checks_pointers_and_negative_length() {
        let value = SockAddr {
            ip: vec![0, 0, 0, 1],
            port: 2,
            ..SockAddr::default()
        };
        let mut len: socklen_t = 16;
        // SAFETY: null addr is rejected before any access.
        let r = unsafe { write_sockaddr(std::ptr::null_mut(), &mut len, &value) };
        assert_eq!(r, Err(Errno(libc::EFAULT)));
        let mut buf = [0u8; 16];
        let mut negative: socklen_t = u32::MAX;
        // SAFETY: rejected before writing.
        let r = unsafe { write_sockaddr(buf.as_mut_ptr().cast(), &mut negative, &value) };
        assert_eq!(r, Err(Errno(libc::EINVAL)));
    }
}
