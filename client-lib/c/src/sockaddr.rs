//! `struct sockaddr_in` in and out of C, with the checks Linux applies.
//!
//! Input (bind, connect): the length must cover a whole `sockaddr_in`
//! (else `EINVAL`), the family must be `AF_INET` (else `EAFNOSUPPORT`).
//! Output (accept, getsockname, getpeername): at most `*addrlen` bytes are
//! written (a short buffer gets a truncated address, as POSIX specifies) and
//! `*addrlen` is always set to the full size, `sizeof(struct sockaddr_in)`.
//!
//! The wire form [`SockAddr`] (`tcpd.v2.SocketAddress`) keeps the address
//! as network-order octets (4 for IPv4) and the port as a number.

use std::mem::size_of;

use libc::{sockaddr, sockaddr_in, socklen_t};
use tcpd_proto::v2::SocketAddress as SockAddr;

use crate::ffi::{Errno, Result};

/// `sizeof(struct sockaddr_in)`: 16 on Linux.
pub const SOCKADDR_IN_LEN: usize = size_of::<sockaddr_in>();

/// Whether an `AF_UNSPEC` address meaning "any" is accepted, as Linux
/// `inet_bind` does for compatibility with old programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnspecAny {
    /// bind(2): `AF_UNSPEC` with `INADDR_ANY` is taken as `AF_INET`.
    Accept,
    /// connect(2): only `AF_INET` (tcpd does not implement the
    /// `AF_UNSPEC` "disconnect" of Linux, so it is `EAFNOSUPPORT`).
    Reject,
}

/// Reads a caller's `struct sockaddr_in`.
///
/// # Safety
/// A non-null `addr` must be readable for `len` bytes.
pub unsafe fn read_sockaddr_in(
    addr: *const sockaddr,
    len: socklen_t,
    unspec: UnspecAny,
) -> Result<SockAddr> {
    if addr.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // socklen_t is unsigned; Linux reads it as an int, so "negative" lengths
    // and anything shorter than a sockaddr_in are EINVAL.
    if (len as i32) < 0 || (len as usize) < SOCKADDR_IN_LEN {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: addr is non-null and readable for len >= 16 bytes;
    // read_unaligned copes with a byte buffer the caller cast.
    let raw: sockaddr_in = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
    let family = i32::from(raw.sin_family);
    let ip = u32::from_be(raw.sin_addr.s_addr);
    let accepted = family == libc::AF_INET
        || (unspec == UnspecAny::Accept && family == libc::AF_UNSPEC && ip == libc::INADDR_ANY);
    if !accepted {
        return Err(Errno(libc::EAFNOSUPPORT));
    }
    Ok(SockAddr {
        ip: ip.to_be_bytes().to_vec(),
        port: u32::from(u16::from_be(raw.sin_port)),
        ..SockAddr::default()
    })
}

/// Encodes a wire address as a C `sockaddr_in` (network byte order).
pub fn to_sockaddr_in(addr: &SockAddr) -> Result<sockaddr_in> {
    // A daemon never sends a port above 65535; treat one as a protocol error.
    let port = u16::try_from(addr.port).map_err(|_| Errno(libc::EIO))?;
    let ip = match addr.ip.as_slice() {
        [] => 0,
        &[a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => return Err(Errno(libc::EAFNOSUPPORT)),
    };
    Ok(sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: ip.to_be() },
        sin_zero: [0; 8],
    })
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

/// Writes `value` to the caller's buffer, truncated to `*len` bytes, and
/// sets `*len` to the full size.
///
/// # Safety
/// Non-null `addr` must be writable for `*len` bytes; non-null `len` must be
/// readable and writable.
pub unsafe fn write_sockaddr_in(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    value: &SockAddr,
) -> Result<()> {
    // SAFETY: forwarded caller guarantee.
    unsafe { check_out_args(addr, len)? };
    let encoded = to_sockaddr_in(value)?;
    // SAFETY: checked non-null above.
    let capacity = unsafe { len.read_unaligned() } as usize;
    let copy = capacity.min(SOCKADDR_IN_LEN);
    // SAFETY: the source is a local sockaddr_in of SOCKADDR_IN_LEN bytes; the
    // destination is writable for `capacity >= copy` bytes per the caller.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const encoded).cast::<u8>(), addr.cast::<u8>(), copy);
        len.write_unaligned(SOCKADDR_IN_LEN as socklen_t);
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

    fn read(a: &sockaddr_in, len: usize, unspec: UnspecAny) -> Result<SockAddr> {
        // SAFETY: `a` is a valid sockaddr_in of 16 bytes and len <= 16 in tests
        // that reach the read.
        unsafe { read_sockaddr_in((a as *const sockaddr_in).cast(), len as socklen_t, unspec) }
    }

    #[test]
    fn reads_network_order_into_host_order() {
        let a = c_addr(libc::AF_INET, [10, 0, 0, 2], 8080);
        let w = read(&a, 16, UnspecAny::Reject).unwrap();
        assert_eq!(w.ip, vec![10, 0, 0, 2]);
        assert_eq!(w.port, 8080);
    }

    #[test]
    fn short_length_is_einval_and_wrong_family_eafnosupport() {
        let a = c_addr(libc::AF_INET, [10, 0, 0, 2], 1);
        assert_eq!(read(&a, 15, UnspecAny::Reject), Err(Errno(libc::EINVAL)));
        let v6 = c_addr(libc::AF_INET6, [10, 0, 0, 2], 1);
        assert_eq!(
            read(&v6, 16, UnspecAny::Reject),
            Err(Errno(libc::EAFNOSUPPORT))
        );
        // SAFETY: null is checked first.
        let null = unsafe { read_sockaddr_in(std::ptr::null(), 16, UnspecAny::Reject) };
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
        unsafe { write_sockaddr_in(buf.as_mut_ptr().cast(), &mut len, &value).unwrap() };
        assert_eq!(len as usize, SOCKADDR_IN_LEN);
        // family (2 bytes, native order) then port in network order
        assert_eq!(&buf[..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        assert!(buf[4..].iter().all(|&b| b == 0xAA), "nothing past *addrlen");

        let mut full = [0u8; 16];
        let mut len: socklen_t = 16;
        // SAFETY: 16 writable bytes.
        unsafe { write_sockaddr_in(full.as_mut_ptr().cast(), &mut len, &value).unwrap() };
        assert_eq!(&full[4..8], &[127, 0, 0, 1]);
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
        let r = unsafe { write_sockaddr_in(std::ptr::null_mut(), &mut len, &value) };
        assert_eq!(r, Err(Errno(libc::EFAULT)));
        let mut buf = [0u8; 16];
        let mut negative: socklen_t = u32::MAX;
        // SAFETY: rejected before writing.
        let r = unsafe { write_sockaddr_in(buf.as_mut_ptr().cast(), &mut negative, &value) };
        assert_eq!(r, Err(Errno(libc::EINVAL)));
    }
}
