//! Linux's error reporting on the data calls of a tcpd socket.
//!
//! A tcpd socket's bytes move through a Unix socket pair, so `read`/`write`
//! and friends need no help — except when the connection failed (RST,
//! timeout): the daemon then shuts its end both ways, and the pair can only
//! say EOF (reads) and `EPIPE` + `SIGPIPE` (writes). Linux says
//! `ECONNRESET` (or `ETIMEDOUT`...) once, without `SIGPIPE`, then EOF and
//! `EPIPE`. The wrappers here turn the first into the second:
//!
//! - a read that returns 0 for a non-empty buffer on a tcpd socket whose
//!   descriptor shows `POLLHUP` (both directions shut: a failure, or a
//!   normal EOF after our own `shutdown(SHUT_WR)`) asks libtcpd for the
//!   pending error (one request to the daemon) and returns it if there is
//!   one;
//! - a write on a tcpd socket is sent with `MSG_NOSIGNAL`; on `EPIPE` the
//!   pending error is returned if there is one, else `EPIPE` with the
//!   `SIGPIPE` Linux would raise (unless the caller passed `MSG_NOSIGNAL`).
//!
//! - `MSG_OOB` on a send fails with `EOPNOTSUPP`, as libtcpd's `tcpd_send`
//!   (tcpd(3), "Urgent data"): passed to the pair, it would become the
//!   `AF_UNIX` socket's own out-of-band byte, which the daemon never reads
//!   (the urgent byte would vanish without an error).
//!
//! Cost on every other call: one atomic load (`marks::is_tcpd`) beside the
//! C library's function. `sendfile`/`splice` into a failed tcpd socket keep
//! the pair's `EPIPE` and `SIGPIPE` (they take no `MSG_NOSIGNAL`).

use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::{backend, marks, real};

/// A tcpd socket's data call made by the program (not by libtcpd).
fn watched(fd: c_int) -> bool {
    marks::is_tcpd(fd) && !marks::inside()
}

fn hung_up(fd: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLHUP != 0 }
}

/// A send with `MSG_OOB` on a tcpd socket: refused (see the module doc).
fn refuse_urgent(flags: c_int) -> Option<ssize_t> {
    if flags & libc::MSG_OOB == 0 {
        return None;
    }
    crate::set_errno(libc::EOPNOTSUPP);
    Some(-1)
}

/// A read's result `r` of a tcpd socket: the pending error instead of an
/// EOF that a failure caused.
fn after_read(fd: c_int, r: ssize_t, wanted: usize) -> ssize_t {
    if r != 0 || wanted == 0 || !hung_up(fd) {
        return r;
    }
    match crate::entry(|| backend::pending_error(fd)) {
        e if e > 0 => {
            crate::set_errno(e);
            -1
        }
        _ => 0,
    }
}

/// A write's result `r` (sent with `MSG_NOSIGNAL`): the pending error
/// instead of `EPIPE`, else `EPIPE` with `SIGPIPE` unless `nosignal`.
fn after_write(fd: c_int, r: ssize_t, nosignal: bool) -> ssize_t {
    if r >= 0 || crate::errno() != libc::EPIPE {
        return r;
    }
    let pending = crate::entry(|| backend::pending_error(fd));
    if pending > 0 {
        crate::set_errno(pending);
        return -1;
    }
    if !nosignal {
        // SAFETY: raise(3) on the calling thread, as the kernel's SIGPIPE.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    crate::set_errno(libc::EPIPE);
    -1
}

fn iov_len(iov: *const iovec, count: c_int) -> usize {
    if iov.is_null() || count <= 0 {
        return 0;
    }
    // SAFETY: the caller passed `count` iovecs (the C library read them
    // already, successfully, before we look).
    let iov = unsafe { std::slice::from_raw_parts(iov, count as usize) };
    iov.iter().map(|v| v.iov_len).sum()
}

/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::read(fd, buf, count) };
    if r == 0 && watched(fd) {
        after_read(fd, r, count)
    } else {
        r
    }
}

/// glibc's fortified `read`.
///
/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: plain pass-through (the C library checks count <= buflen).
    let r = unsafe { real::__read_chk(fd, buf, count, buflen) };
    if r == 0 && watched(fd) {
        after_read(fd, r, count)
    } else {
        r
    }
}

/// # Safety
/// As `readv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::readv(fd, iov, count) };
    if r == 0 && watched(fd) {
        after_read(fd, r, iov_len(iov, count))
    } else {
        r
    }
}

/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::recv(fd, buf, len, flags) };
    if r == 0 && watched(fd) {
        after_read(fd, r, len)
    } else {
        r
    }
}

/// glibc's fortified `recv`.
///
/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::__recv_chk(fd, buf, len, buflen, flags) };
    if r == 0 && watched(fd) {
        after_read(fd, r, len)
    } else {
        r
    }
}

/// # Safety
/// As `recvfrom(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::recvfrom(fd, buf, len, flags, addr, addrlen) };
    if r == 0 && watched(fd) {
        after_read(fd, r, len)
    } else {
        r
    }
}

/// # Safety
/// As `recvmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: plain pass-through.
    let r = unsafe { real::recvmsg(fd, msg, flags) };
    if r == 0 && !msg.is_null() && watched(fd) {
        // SAFETY: non-null, and the C library just used it.
        let wanted = unsafe { iov_len((*msg).msg_iov, (*msg).msg_iovlen as c_int) };
        after_read(fd, r, wanted)
    } else {
        r
    }
}

/// # Safety
/// As `write(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    if !watched(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::write(fd, buf, count) };
    }
    // SAFETY: write(2) on a socket is send(2) without flags.
    let r = unsafe { real::send(fd, buf, count, libc::MSG_NOSIGNAL) };
    after_write(fd, r, false)
}

/// # Safety
/// As `writev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    if !watched(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::writev(fd, iov, count) };
    }
    // SAFETY: writev(2) on a socket is sendmsg(2) of the same vector.
    let r = unsafe {
        let mut msg: msghdr = std::mem::zeroed();
        msg.msg_iov = iov.cast_mut();
        msg.msg_iovlen = count.max(0) as _;
        real::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    };
    after_write(fd, r, false)
}

/// # Safety
/// As `send(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if !watched(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::send(fd, buf, len, flags) };
    }
    if let Some(r) = refuse_urgent(flags) {
        return r;
    }
    // SAFETY: forwarded caller guarantee.
    let r = unsafe { real::send(fd, buf, len, flags | libc::MSG_NOSIGNAL) };
    after_write(fd, r, flags & libc::MSG_NOSIGNAL != 0)
}

/// # Safety
/// As `sendto(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    if !watched(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::sendto(fd, buf, len, flags, addr, addrlen) };
    }
    if let Some(r) = refuse_urgent(flags) {
        return r;
    }
    // SAFETY: forwarded caller guarantee (a connected stream socket
    // ignores the address, as Linux's TCP does).
    let r = unsafe { real::sendto(fd, buf, len, flags | libc::MSG_NOSIGNAL, addr, addrlen) };
    after_write(fd, r, flags & libc::MSG_NOSIGNAL != 0)
}

/// # Safety
/// As `sendmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !watched(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    if let Some(r) = refuse_urgent(flags) {
        return r;
    }
    // SAFETY: forwarded caller guarantee.
    let r = unsafe { real::sendmsg(fd, msg, flags | libc::MSG_NOSIGNAL) };
    after_write(fd, r, flags & libc::MSG_NOSIGNAL != 0)
}
