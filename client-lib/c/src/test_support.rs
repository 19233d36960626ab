//! A safe Rust face of the C entry points, for Rust programs that must go
//! through libtcpd exactly as a C program does (tcpd-bench's C shim rows):
//! every pointer the C ABI takes is made here from a Rust value of the
//! right length, so the caller's crate can forbid `unsafe`. Behind the
//! `test-support` feature; not part of the C library's interface (the
//! header has no trace of it).
//!
//! Each call is one `tcpd_*` entry point, with its errno as an
//! [`std::io::Error`].

use std::io;
use std::net::{Shutdown, SocketAddr};

use libc::{c_int, socklen_t};

use crate::api;
use crate::sockaddr::CSockAddr;

/// A libtcpd socket, closed (`tcpd_close`) when dropped.
#[derive(Debug)]
pub struct CSocket(c_int);

/// -1 (errno set) to an error, anything else to its value.
fn check(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

impl CSocket {
    /// `tcpd_socket(AF_INET or AF_INET6, SOCK_STREAM, 0)` for `addr`'s
    /// family, TCP_NODELAY when `nodelay`, then a blocking `tcpd_connect`.
    pub fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<CSocket> {
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = check(api::tcpd_socket(family, libc::SOCK_STREAM, 0) as isize)?;
        let socket = CSocket(fd as c_int);
        if nodelay {
            socket.set_int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        }
        let wire = tcpd_proto::v2::SocketAddress::from(addr);
        let c_addr =
            crate::sockaddr::to_sockaddr(&wire).map_err(|e| io::Error::from_raw_os_error(e.0))?;
        let (ptr, len) = c_addr.as_ptr_len();
        // SAFETY: `ptr` points into `c_addr`, alive for the call, `len` bytes.
        check(unsafe { api::tcpd_connect(socket.0, ptr, len) } as isize)?;
        Ok(socket)
    }

    /// `tcpd_setsockopt` of an `int` option.
    pub fn set_int_option(&self, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
        // SAFETY: a live c_int of the stated length.
        let ret = unsafe {
            api::tcpd_setsockopt(
                self.0,
                level,
                name,
                (&raw const value).cast(),
                size_of::<c_int>() as socklen_t,
            )
        };
        check(ret as isize).map(drop)
    }

    /// `tcpd_write`: how much was written.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: a live buffer of its length.
        check(unsafe { api::tcpd_write(self.0, buf.as_ptr().cast(), buf.len()) })
    }

    /// `tcpd_read`: how much was read, 0 at end of stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: a live buffer of its length.
        check(unsafe { api::tcpd_read(self.0, buf.as_mut_ptr().cast(), buf.len()) })
    }

    /// `tcpd_write` until all of `buf` is written.
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// `tcpd_read` until `buf` is full; end of stream first is an error.
    pub fn read_exact(&self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    /// `tcpd_shutdown`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        check(api::tcpd_shutdown(self.0, how) as isize).map(drop)
    }
}

impl Drop for CSocket {
    fn drop(&mut self) {
        api::tcpd_close(self.0);
    }
}

impl CSockAddr {
    /// The struct as the C calls take it.
    fn as_ptr_len(&self) -> (*const libc::sockaddr, socklen_t) {
        match self {
            CSockAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as socklen_t,
            ),
            CSockAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as socklen_t,
            ),
        }
    }
}
