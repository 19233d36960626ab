//! The C entry points with BSD-socket signatures (everything but poll, which
//! lives in `poll.rs`).
//!
//! Each `extern "C"` function is a one-line call of [`ffi_call`] around an
//! internal function returning `Result`, so errno handling and panic
//! containment live in one place. Argument checks follow Linux's order: the
//! fd first (`EBADF`), then pointers (`EFAULT`) and values (`EINVAL`...),
//! then the daemon.
//!
//! Every socket is a real descriptor (the client's end of a socketpair the
//! daemon pumps, see `fdtable` and `daemon/server/DESIGN-fds.md`): data
//! calls (`tcpd_read`, `tcpd_write`, `tcpd_recv`, `tcpd_send`) are the
//! kernel's, plus one check on EOF/EPIPE for the connection's error;
//! control calls (connect, bind, listen, accept, options, names, shutdown
//! of the read side) are unary RPCs. Blocking control calls wait in the
//! daemon and are not interrupted by signals (as if every handler had
//! `SA_RESTART`). tcpd never raises `SIGPIPE` through these calls: writing
//! to a closed connection fails with `EPIPE` as if `MSG_NOSIGNAL` were
//! always given (a plain `write(2)` on the descriptor behaves as the
//! kernel's socketpair does, `SIGPIPE` included).

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};
use prost::Message;
use tcpd_proto::fd_channel::Request as FdRequest;
use tcpd_proto::v2::{
    AcceptRequest, BindRequest, CloseRequest, ConnectRequest, GetOptionRequest, GetPeerNameRequest,
    GetSocketNameRequest, ListenRequest, OptionSetting, ReadRequest, SetOptionRequest, ShutdownHow,
    ShutdownRequest,
};

use crate::fdtable;
use crate::ffi::{Errno, Result, ffi_call};
use crate::options;
use crate::session::{FdReply, current_session, fd_request, fd_request_outcome, lock, rpc};
use crate::sockaddr::{UnspecAny, check_out_args, read_sockaddr, to_sockaddr, write_sockaddr};

/// The errno of calls on a socket whose daemon went away (its connection
/// died with it): `ECONNABORTED`, which is not the peer's reset
/// (`ECONNRESET`); `tcpd_strerror` says so.
pub const DAEMON_GONE: c_int = libc::ECONNABORTED;

/// A connected socket's pair gets its full buffer (a new one is handed out
/// small and full, see `daemon/server/DESIGN-fds.md`): called once the
/// connection is established (blocking connect, or `SO_ERROR` read 0 after
/// a non-blocking one). Best effort: a smaller buffer only costs speed.
fn connected_buffer(fd: RawFd) {
    set_sndbuf(fd, tcpd_proto::fd_channel::CONNECTED_SNDBUF);
}

/// Whether the descriptor is writable and not hung up.
fn writable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe {
        libc::poll(&mut p, 1, 0) == 1
            && p.revents & libc::POLLOUT != 0
            && p.revents & libc::POLLHUP == 0
    }
}

/// Whether the descriptor has `O_NONBLOCK`.
fn nonblocking(fd: RawFd) -> Result<bool> {
    // SAFETY: plain fcntl on a descriptor number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Errno::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Applies `SOCK_NONBLOCK`/`SOCK_CLOEXEC` of `flags` to a new descriptor
/// (which arrives blocking and close-on-exec).
fn apply_sock_flags(fd: RawFd, flags: c_int) -> Result<()> {
    // SAFETY: fcntl on a descriptor this library just received.
    unsafe {
        if flags & libc::SOCK_NONBLOCK != 0
            && libc::fcntl(fd, libc::F_SETFL, libc::O_RDWR | libc::O_NONBLOCK) < 0
        {
            return Err(Errno::last_os_error());
        }
        if flags & libc::SOCK_CLOEXEC == 0 && libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
            return Err(Errno::last_os_error());
        }
    }
    Ok(())
}

/// Publishes a descriptor the fd channel handed out as the socket `handle`.
fn adopt(
    fd: std::os::fd::OwnedFd,
    handle: u64,
    session: u64,
    flags: c_int,
    fresh: bool,
) -> Result<c_int> {
    apply_sock_flags(std::os::fd::AsRawFd::as_raw_fd(&fd), flags)?;
    fdtable::insert(std::os::fd::AsRawFd::as_raw_fd(&fd), handle, session, fresh)?;
    Ok(fd.into_raw_fd())
}

/// The connection's pending error (SO_ERROR, which this clears), if any:
/// asked when the descriptor reports EOF with POLLHUP or EPIPE, since the
/// socketpair cannot carry ECONNRESET or ETIMEDOUT itself. When the daemon
/// cannot be asked (it is gone, and with it the connection) the answer is
/// [`DAEMON_GONE`], never ECONNRESET.
fn pending_error(fd: RawFd, handle: u64) -> Option<Errno> {
    clear_pair_error(fd);
    let request = GetOptionRequest {
        handle,
        option: tcpd_proto::v2::SocketOption::SoError as i32,
    };
    let reply = match rpc(|mut c| async move { c.get_option(request).await }) {
        Ok(reply) => reply,
        // EBADF: the socket is closed in the daemon (both sides shut and
        // its end hung up): a plain EOF.
        Err(Errno(libc::EBADF)) => return None,
        Err(_) => {
            crate::ffi::note_daemon_failure(
                Errno(DAEMON_GONE),
                format!(
                    "the tcpd daemon at {} went away, and the connection with it",
                    tcpd_proto::socket_path_from_env()
                ),
            );
            return Some(Errno(DAEMON_GONE));
        }
    };
    match reply.value.and_then(|v| v.value) {
        Some(tcpd_proto::v2::option_value::Value::Int(e)) if e != 0 => {
            Some(Errno(c_int::try_from(e).unwrap_or(libc::EIO)))
        }
        _ => None,
    }
}

/// Clears the kernel's own error on the descriptor: `ECONNRESET`, set when
/// the daemon closed its end of a connection that failed before it was
/// established (see `daemon/server/src/fd_link.rs`). The connection's real
/// error is the daemon's `SO_ERROR`; once that is taken, the descriptor
/// must not report a second one (a plain `read(2)` then sees EOF, as on
/// Linux).
fn clear_pair_error(fd: RawFd) {
    let mut err: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local int.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        );
    }
}

/// Whether the descriptor reports POLLHUP (both directions shut: the
/// daemon's end after a failure, or the peer's FIN after our shutdown).
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLHUP != 0 }
}

/// `SOCK_TYPE_MASK` (include/linux/net.h): the type without flag bits.
const SOCK_TYPE_MASK: c_int = 0xf;

/// `SOCK_MAX` (include/linux/net.h, `SOCK_PACKET + 1`): types at or above
/// it are `EINVAL`.
const SOCK_MAX: c_int = 11;

fn socket_impl(domain: c_int, ty: c_int, protocol: c_int) -> Result<c_int> {
    let flags = ty & !SOCK_TYPE_MASK;
    let base = ty & SOCK_TYPE_MASK;
    // Linux __sys_socket: unknown flag bits, then out-of-range types, are
    // EINVAL before the family is looked at.
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 || base >= SOCK_MAX {
        return Err(Errno(libc::EINVAL));
    }
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(Errno(libc::EAFNOSUPPORT));
    }
    if base != libc::SOCK_STREAM || !(protocol == 0 || protocol == libc::IPPROTO_TCP) {
        return Err(Errno(libc::EPROTONOSUPPORT));
    }
    // The daemon sees the socket with its first control call; a daemon
    // that is not there fails socket() already, as it always did.
    crate::session::ensure_daemon()?;
    match local_pair(domain) {
        Ok((end, unborn)) => {
            apply_sock_flags(end.as_raw_fd(), flags)?;
            fdtable::insert_unborn(end.as_raw_fd(), unborn)?;
            Ok(end.into_raw_fd())
        }
        // Out of descriptors for two ends: let the daemon make the pair
        // (one descriptor here).
        Err(Errno(libc::EMFILE | libc::ENFILE)) => {
            let reply = fd_request(FdRequest::New { family: domain }, &[], &[])?;
            let fd = reply.fd.ok_or(Errno(libc::EIO))?;
            adopt(fd, reply.handle, reply.session, flags, true)
        }
        Err(e) => Err(e),
    }
}

/// A new socket's pair, made here without asking the daemon (it sees the
/// pair with the first control call, see `DESIGN-fds.md`): the program's
/// end — blocking, close-on-exec, handed out *full* of filler so that it
/// turns writable only once the connection is established, exactly as the
/// daemon makes one — and the daemon's end with the filler count.
fn local_pair(family: c_int) -> Result<(std::os::fd::OwnedFd, fdtable::Unborn)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two new descriptors into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(Errno::last_os_error());
    }
    // SAFETY: both were just created and belong to nobody else.
    let (end, daemon_end) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    set_sndbuf(end.as_raw_fd(), tcpd_proto::fd_channel::NEW_SNDBUF);
    set_sndbuf(
        daemon_end.as_raw_fd(),
        tcpd_proto::fd_channel::DAEMON_SNDBUF,
    );
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut filler: u32 = 0;
    loop {
        // SAFETY: send from a static buffer of the stated length.
        let n = unsafe {
            libc::send(
                end.as_raw_fd(),
                ZEROS.as_ptr().cast(),
                ZEROS.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match n {
            n if n > 0 => filler += u32::try_from(n).unwrap_or(0),
            _ if Errno::last_os_error().0 == libc::EINTR => {}
            _ if Errno::last_os_error().0 == libc::EAGAIN => break,
            _ => return Err(Errno::last_os_error()),
        }
    }
    Ok((
        end,
        fdtable::Unborn {
            daemon_end,
            family,
            filler,
        },
    ))
}

/// `SO_SNDBUF` of `fd` (best effort: a smaller buffer only costs speed).
fn set_sndbuf(fd: RawFd, size: usize) {
    let size = c_int::try_from(size).unwrap_or(c_int::MAX);
    // SAFETY: setsockopt with a local int of the stated size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            std::mem::size_of::<c_int>() as socklen_t,
        );
    }
}

/// Creates a TCP socket in the daemon, as `socket(2)`.
///
/// `AF_INET` or `AF_INET6` (else `EAFNOSUPPORT`; an `AF_INET6` socket
/// reaches IPv4 through IPv4-mapped addresses and, listening on `::`,
/// accepts IPv4 too unless `IPV6_V6ONLY` is set) with `SOCK_STREAM`, optionally or'ed
/// with `SOCK_NONBLOCK` and `SOCK_CLOEXEC` (other flags: `EINVAL`; other
/// types or a protocol other than 0/`IPPROTO_TCP`: `EPROTONOSUPPORT`).
/// Returns a new file descriptor number, or -1 with errno set.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_socket(domain: c_int, r#type: c_int, protocol: c_int) -> c_int {
    ffi_call(|| socket_impl(domain, r#type, protocol))
}

/// Binds a socket to a local `struct sockaddr_in` (or `sockaddr_in6`), as `bind(2)`.
///
/// # Safety
/// `addr` must be null or readable for `addrlen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_bind(fd: c_int, addr: *const sockaddr, addrlen: socklen_t) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        // SAFETY: forwarded caller guarantee.
        let addr = unsafe { read_sockaddr(addr, addrlen, UnspecAny::Accept)? };
        let request = BindRequest {
            handle: entry.handle,
            address: Some(addr),
        };
        rpc(|mut c| async move { c.bind(request).await })?;
        Ok(0)
    })
}

/// Marks a socket as listening, as `listen(2)`.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_listen(fd: c_int, backlog: c_int) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        let request = ListenRequest {
            handle: entry.handle,
            backlog,
            ..ListenRequest::default()
        };
        rpc(|mut c| async move { c.listen(request).await })?;
        Ok(0)
    })
}

/// # Safety
/// As [`tcpd_accept4`].
unsafe fn accept_impl(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    flags: c_int,
) -> Result<c_int> {
    let entry = fdtable::lookup(fd)?;
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    if !addr.is_null() {
        // SAFETY: forwarded caller guarantee. Checked before accepting so
        // a bad buffer cannot lose a connection.
        unsafe { check_out_args(addr, addrlen)? };
    }
    // The daemon signals a non-empty accept queue with a byte on the
    // listener's descriptor; drain it before asking (the daemon signals
    // again if more connections wait).
    let mut signal = [0u8; 64];
    // SAFETY: recv into a local buffer, never blocking.
    while unsafe {
        libc::recv(
            fd,
            signal.as_mut_ptr().cast(),
            signal.len(),
            libc::MSG_DONTWAIT,
        )
    } > 0
    {}
    let request = AcceptRequest {
        handle: entry.handle,
        nonblocking: nonblocking(fd)?,
    };
    let reply = rpc(|mut c| async move { c.accept(request).await })?;
    let session = current_session();
    let peer = reply.peer.unwrap_or_default();
    let close_it = |handle: u64| {
        let _ = rpc(|mut c| async move {
            c.close(CloseRequest {
                handle,
                abort: true,
            })
            .await
        });
    };
    if to_sockaddr(&peer).is_err() {
        // A malformed reply: do not leak the daemon's socket.
        close_it(reply.handle);
        return Err(Errno(libc::EIO));
    }
    let fd = match fd_request(
        FdRequest::Attach {
            handle: reply.handle,
        },
        &[],
        &[],
    ) {
        Ok(FdReply { fd: Some(fd), .. }) => fd,
        Ok(FdReply { fd: None, .. }) => {
            close_it(reply.handle);
            return Err(Errno(libc::EIO));
        }
        Err(e) => {
            // EMFILE here (no descriptor left) must not leak the connection.
            close_it(reply.handle);
            return Err(e);
        }
    };
    // The new socket does not inherit O_NONBLOCK (Linux accept(2)).
    let new_fd = adopt(fd, reply.handle, session, flags, false)?;
    if !addr.is_null() {
        // SAFETY: forwarded caller guarantee; cannot fail after the checks.
        unsafe { write_sockaddr(addr, addrlen, &peer)? };
    }
    Ok(new_fd)
}

/// Accepts a connection, as `accept(2)`. The peer address is written to
/// `addr` (if not null), truncated to `*addrlen`; `*addrlen` becomes 16
/// (`sockaddr_in`), or 28 (`sockaddr_in6`) for an `AF_INET6` listener.
/// Waits unless the listener is non-blocking (then `EAGAIN`).
///
/// # Safety
/// `addr` must be null or writable for `*addrlen` bytes; if `addr` is not
/// null, `addrlen` must be valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_accept(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { accept_impl(fd, addr, addrlen, 0) })
}

/// As [`tcpd_accept`], with `SOCK_NONBLOCK` / `SOCK_CLOEXEC` applied to the
/// new socket (other flags: `EINVAL`), as `accept4(2)`.
///
/// # Safety
/// As [`tcpd_accept`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_accept4(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { accept_impl(fd, addr, addrlen, flags) })
}

/// Connects to a `struct sockaddr_in` (or `sockaddr_in6`), as `connect(2)`. A non-blocking
/// socket fails with `EINPROGRESS` at once; completion shows as `POLLOUT`
/// (or `POLLERR`) in [`tcpd_poll`](crate::poll::tcpd_poll) and the outcome in
/// `SO_ERROR`. Connecting again while in progress is `EALREADY`, after
/// completion `EISCONN` (both as answered by the daemon).
///
/// # Safety
/// `addr` must be null or readable for `addrlen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_connect(
    fd: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { connect_impl(fd, addr, addrlen) })
}

/// # Safety
/// As [`tcpd_connect`].
unsafe fn connect_impl(fd: c_int, addr: *const sockaddr, addrlen: socklen_t) -> Result<c_int> {
    let entry = fdtable::lookup_unborn_too(fd)?;
    // SAFETY: forwarded caller guarantee.
    let address = unsafe { read_sockaddr(addr, addrlen, UnspecAny::Reject)? };
    let nonblocking = nonblocking(fd)?;
    let mut request = ConnectRequest {
        handle: entry.handle,
        address: Some(address),
        nonblocking: true,
        // Options set since socket(): applied before the SYN (read below,
        // under the unborn lock, for a socket the daemon has not seen).
        options: entry.deferred(),
    };
    // One fd-channel request that never waits for the handshake; a new
    // socket's pair rides along (the daemon makes the socket then).
    let (handle, errno) = {
        let mut unborn = lock(&entry.unborn);
        match unborn.as_ref() {
            Some(pair) => {
                // Under the lock: a setsockopt racing this connect either
                // deferred its option before (sent here) or finds the pair
                // handed over and sends it itself.
                request.options = entry.deferred();
                let payload = request.encode_to_vec();
                let header = FdRequest::Connect {
                    family: pair.family,
                    payload_len: u32::try_from(payload.len()).map_err(|_| Errno(libc::EINVAL))?,
                    filler: pair.filler,
                };
                let sent =
                    fd_request_outcome(header, &payload, &[pair.daemon_end.as_raw_fd(), fd])?;
                match sent {
                    (reply, errno) if reply.handle != 0 => {
                        // The table's entry changes before the pair leaves
                        // this one: a thread waiting on it finds the new.
                        fdtable::born(fd, reply.handle, reply.session, None)?;
                        unborn.take();
                        (reply.handle, errno)
                    }
                    // A forked copy showed the pair to the daemon first:
                    // claim it, then connect it as any known socket.
                    (_, libc::EEXIST) => {
                        let claimed = fdtable::claim_into_table(fd)?;
                        unborn.take();
                        drop(unborn);
                        request.handle = claimed.handle;
                        connect_known(&request)?
                    }
                    (_, errno) => return Err(Errno(errno)),
                }
            }
            None if entry.is_unborn() => {
                // Another thread made it known meanwhile.
                drop(unborn);
                let known = fdtable::lookup_keeping_deferred(fd)?;
                request.handle = known.handle;
                request.options = known.deferred();
                let outcome = connect_known(&request)?;
                known.take_deferred();
                outcome
            }
            None => {
                drop(unborn);
                let outcome = connect_known(&request)?;
                entry.take_deferred();
                outcome
            }
        }
    };
    match errno {
        0 => {}
        libc::EINPROGRESS if nonblocking => return Err(Errno(libc::EINPROGRESS)),
        libc::EINPROGRESS => await_connection(fd, handle)?,
        e => return Err(Errno(e)),
    }
    connected_buffer(fd);
    Ok(0)
}

/// `Connect` on the fd channel for a socket the daemon knows: the handle
/// and the connect's errno (`EINPROGRESS` while the handshake goes on).
fn connect_known(request: &ConnectRequest) -> Result<(u64, c_int)> {
    let payload = request.encode_to_vec();
    let header = FdRequest::Connect {
        family: 0,
        payload_len: u32::try_from(payload.len()).map_err(|_| Errno(libc::EINVAL))?,
        filler: 0,
    };
    let (reply, errno) = fd_request_outcome(header, &payload, &[])?;
    Ok((request.handle.max(reply.handle), errno))
}

/// A blocking connect(2): waits on the descriptor until the handshake is
/// over — writable (the daemon discarded the filler: established) or
/// POLLHUP (failed: the error is `SO_ERROR`'s, taken as connect(2) does).
/// Signals do not interrupt the wait (as with `SA_RESTART`, like the other
/// blocking control calls).
fn await_connection(fd: RawFd, handle: u64) -> Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n < 0 {
            match Errno::last_os_error() {
                Errno(libc::EINTR) => continue,
                e => return Err(e),
            }
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Err(pending_error(fd, handle).unwrap_or(Errno(libc::ECONNRESET)));
        }
        if p.revents & libc::POLLOUT != 0 {
            return Ok(());
        }
        if p.revents & libc::POLLNVAL != 0 {
            return Err(Errno(libc::EBADF));
        }
    }
}

/// `recv(MSG_OOB)`: the urgent byte (never waits: `EAGAIN` until it came,
/// `EINVAL` when there is none or `SO_OOBINLINE` is on), as Linux.
///
/// # Safety
/// `buf` must be null or writable for `len` bytes.
unsafe fn receive_urgent(
    handle: u64,
    buf: *mut c_void,
    len: size_t,
    peek: bool,
) -> Result<ssize_t> {
    if len == 0 {
        return Ok(0);
    }
    if buf.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let request = ReadRequest {
        handle,
        max_len: 1,
        nonblocking: true,
        peek,
        oob: true,
    };
    let reply = rpc(|mut c| async move { c.read(request).await })?;
    let Some(&byte) = reply.data.first() else {
        return Ok(0);
    };
    // SAFETY: non-null and writable for len >= 1 bytes per the caller.
    unsafe { buf.cast::<u8>().write(byte) };
    Ok(1)
}

/// # Safety
/// `buf` must be null or writable for `len` bytes.
unsafe fn receive(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> Result<ssize_t> {
    let mut entry = fdtable::lookup_unborn_too(fd)?;
    if flags & libc::MSG_OOB != 0 {
        if entry.is_unborn() {
            entry = fdtable::lookup(fd)?;
        }
        // SAFETY: forwarded caller guarantee.
        return unsafe { receive_urgent(entry.handle, buf, len, flags & libc::MSG_PEEK != 0) };
    }
    if len == 0 {
        return Ok(0);
    }
    if buf.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's buffer; the kernel checks it further.
    let n = unsafe { libc::recv(fd, buf, len, flags) };
    if n < 0 {
        let errno = Errno::last_os_error();
        // The daemon's end was closed with bytes of ours unread in it: the
        // socket was closed under us, or the daemon died.
        if errno.0 == libc::ECONNRESET
            && let Some(e) = pending_error(fd, entry.handle)
        {
            return Err(e);
        }
        return Err(errno);
    }
    // EOF with both directions shut may be a failed connection: report its
    // error once (Linux: ECONNRESET/ETIMEDOUT, then EOF).
    if n == 0
        && hung_up(fd)
        && let Some(e) = pending_error(fd, entry.handle)
    {
        return Err(e);
    }
    Ok(n)
}

/// # Safety
/// `buf` must be null or readable for `len` bytes.
unsafe fn transmit(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> Result<ssize_t> {
    let entry = fdtable::lookup_unborn_too(fd)?;
    // Sending urgent data through the descriptor is not done yet: the
    // urgent mark must follow every byte already in the socketpair, which
    // the pair cannot order with a call to the daemon (see the daemon's
    // Write RPC with MSG_OOB and tcpd_client's send_with_flags, which can).
    if flags & libc::MSG_OOB != 0 {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    if len == 0 {
        return Ok(0);
    }
    if buf.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's buffer; the kernel checks it further.
    let n = unsafe { libc::send(fd, buf, len, flags | libc::MSG_NOSIGNAL) };
    if n > 0
        && !entry
            .full_buffer
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        // Bytes went in: the filler is gone, the connection established
        // (a non-blocking connect whose SO_ERROR was never read).
        connected_buffer(fd);
    }
    if n < 0 {
        let errno = Errno::last_os_error();
        if errno.0 == libc::EPIPE
            && let Some(e) = pending_error(fd, entry.handle)
        {
            return Err(e);
        }
        return Err(errno);
    }
    Ok(n)
}

/// Reads up to `count` bytes, as `read(2)`: 0 at end of stream; waits for
/// data unless the socket is non-blocking (`EAGAIN`).
///
/// # Safety
/// `buf` must be null or writable for `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { receive(fd, buf, count, 0) })
}

/// Writes `count` bytes, as `write(2)`: a blocking socket returns when all
/// bytes are queued (or after a partial write followed by an error); a
/// non-blocking one writes what fits (`EAGAIN` if nothing does). Never
/// raises `SIGPIPE`: a closed connection is `EPIPE`.
///
/// # Safety
/// `buf` must be null or readable for `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { transmit(fd, buf, count, 0) })
}

/// As [`tcpd_read`] with flags, as `recv(2)`: `MSG_PEEK`, `MSG_DONTWAIT`,
/// `MSG_WAITALL` are honoured; `MSG_OOB` reads the urgent byte (Linux's
/// rules: `EINVAL` when there is none or `SO_OOBINLINE` is on, `EAGAIN`
/// until it arrived); other flags are ignored. A read stops before the
/// urgent mark, as on Linux.
///
/// # Safety
/// `buf` must be null or writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_recv(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { receive(fd, buf, len, flags) })
}

/// As [`tcpd_write`] with flags, as `send(2)`: `MSG_DONTWAIT` is honoured,
/// `MSG_NOSIGNAL` is implied (tcpd never raises `SIGPIPE`); `MSG_OOB` is
/// `EOPNOTSUPP` (sending urgent data through a descriptor is not done yet);
/// other flags go to the descriptor, where `MSG_MORE`/`MSG_EOR` do nothing
/// (use `TCP_CORK` to hold partial segments).
///
/// # Safety
/// `buf` must be null or readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_send(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { transmit(fd, buf, len, flags) })
}

/// Shuts down one or both directions, as `shutdown(2)`: `SHUT_RD`,
/// `SHUT_WR`, `SHUT_RDWR` (others: `EINVAL`).
///
/// The write side is shut on the descriptor itself: the daemon sends FIN
/// once it has passed on every byte written before. The read side is shut
/// in the daemon too.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_shutdown(fd: c_int, how: c_int) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        if !matches!(how, libc::SHUT_RD | libc::SHUT_WR | libc::SHUT_RDWR) {
            return Err(Errno(libc::EINVAL));
        }
        if how != libc::SHUT_WR {
            let request = ShutdownRequest {
                handle: entry.handle,
                how: ShutdownHow::Read as i32,
            };
            rpc(|mut c| async move { c.shutdown(request).await })?;
        }
        // SAFETY: shutdown(2) on the socketpair end.
        if unsafe { libc::shutdown(fd, how) } < 0 {
            return Err(Errno::last_os_error());
        }
        Ok(0)
    })
}

/// Closes a socket descriptor, as `close(2)` — which works as well: the
/// connection is closed (FIN, or RST when data was left unread, as Linux)
/// when the last copy of the descriptor is closed, in any process. A
/// socket whose connection failed is released in the daemon at once.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_close(fd: c_int) -> c_int {
    ffi_call(|| {
        let entry = match fdtable::classify(fd)? {
            fdtable::Lookup::Current(entry) => Some(entry),
            fdtable::Lookup::Foreign(_) => None,
            fdtable::Lookup::Unknown => return Err(Errno(libc::EBADF)),
        };
        // A failed connection's daemon end is shut both ways and no longer
        // watched: the daemon cannot see this close, so say it (a socket
        // shut both ways is finished anyway).
        let unborn = entry.as_ref().filter(|e| e.is_unborn()).cloned();
        let ino = fdtable::ino_of(fd)?;
        let failed = entry.filter(|e| !e.is_unborn() && hung_up(fd));
        // SAFETY: close(2) of the caller's descriptor.
        if unsafe { libc::close(fd) } < 0 {
            return Err(Errno::last_os_error());
        }
        if let Some(entry) = unborn {
            // Never shown to the daemon: nothing to tell it, but the pair's
            // other end goes when this was the last copy.
            fdtable::closed(ino, &entry);
        }
        if let Some(entry) = failed {
            let request = CloseRequest {
                handle: entry.handle,
                abort: false,
            };
            let _ = rpc(|mut c| async move { c.close(request).await });
        }
        Ok(0)
    })
}

/// Whether `fd` is a tcpd socket (1) or not (0): a descriptor this
/// library handed out, or a copy of one (`dup`, `fork`, `SCM_RIGHTS`).
/// Never fails; a closed or invalid `fd` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_is_socket(fd: c_int) -> c_int {
    ffi_call(|| Ok(c_int::from(fdtable::is_tcpd(fd))))
}

/// The pending error of the tcpd socket `fd` (`SO_ERROR`: `ECONNRESET`,
/// `ETIMEDOUT`, `ECONNREFUSED`...), taken as Linux takes it — the next call
/// returns 0 — or 0 when there is none; `ECONNABORTED` when the daemon is
/// gone; -1/`EBADF` when `fd` is not a tcpd socket. For a program's own
/// `read(2)` or `write(2)` on the descriptor that ended as a failed
/// connection's do (EOF with `POLLHUP`, or `EPIPE`), to report what Linux
/// would: libtcpd's own data calls and the preload library do this.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_pending_error(fd: c_int) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        Ok(pending_error(fd, entry.handle).map_or(0, |e| e.0))
    })
}

/// Makes `fd` usable by this process's library if it is a tcpd socket it
/// does not know yet — one inherited across `execve(2)` (its table starts
/// empty in the new image) or `fork(2)`: the descriptor is presented to the
/// daemon, which makes this process's session a co-owner. 1 if `fd` is a
/// tcpd socket (known already or claimed now), 0 if it is not (without
/// asking the daemon when it is not an `AF_UNIX` stream socket); -1 with
/// `errno` when `fd` is not open (`EBADF`) or the daemon cannot be asked.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_claim(fd: c_int) -> c_int {
    ffi_call(|| fdtable::claim(fd).map(c_int::from))
}

/// A description of `errnum` for a failed tcpd call, as `strerror(3)`, but
/// naming the daemon when the failure was reaching it: "cannot reach the
/// tcpd daemon at /run/tcpd/tcpd.sock: No such file or directory ..."
/// (`ENOENT`, `ECONNREFUSED`, `EACCES` from the first call), or "the tcpd
/// daemon at ... went away" (`ECONNABORTED`: the daemon died, not the
/// peer). The string belongs to the calling thread and stays valid until
/// its next `tcpd_strerror` call.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_strerror(errnum: c_int) -> *const libc::c_char {
    std::panic::catch_unwind(|| crate::ffi::describe_c(errnum))
        .unwrap_or(c"tcpd: internal error".as_ptr())
}

/// Which address `name_impl` asks for.
#[derive(Debug, Clone, Copy)]
enum Name {
    Local,
    Peer,
}

/// # Safety
/// As [`tcpd_getsockname`].
unsafe fn name_impl(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    which: Name,
) -> Result<c_int> {
    let entry = fdtable::lookup(fd)?;
    // SAFETY: forwarded caller guarantee.
    unsafe { check_out_args(addr, addrlen)? };
    let handle = entry.handle;
    let address = match which {
        Name::Local => {
            let request = GetSocketNameRequest { handle };
            rpc(|mut c| async move { c.get_socket_name(request).await })?.address
        }
        Name::Peer => {
            let request = GetPeerNameRequest { handle };
            rpc(|mut c| async move { c.get_peer_name(request).await })?.address
        }
    };
    // SAFETY: forwarded caller guarantee.
    unsafe { write_sockaddr(addr, addrlen, &address.unwrap_or_default())? };
    Ok(0)
}

/// The socket's local address, as `getsockname(2)` (truncated to
/// `*addrlen`; `*addrlen` becomes 16, or 28 for an `AF_INET6` socket).
///
/// # Safety
/// `addr` must be writable for `*addrlen` bytes; `addrlen` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_getsockname(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { name_impl(fd, addr, addrlen, Name::Local) })
}

/// The peer's address, as `getpeername(2)`; `ENOTCONN` if not connected.
///
/// # Safety
/// As [`tcpd_getsockname`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_getpeername(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { name_impl(fd, addr, addrlen, Name::Peer) })
}

/// Sets an option, as `setsockopt(2)`. Supported: `SOL_SOCKET`
/// `SO_REUSEADDR`, `SO_KEEPALIVE`, `SO_RCVBUF`, `SO_SNDBUF`, `SO_LINGER`;
/// `IPPROTO_TCP` `TCP_NODELAY`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`, `TCP_MAXSEG`, `TCP_CONGESTION`, `TCP_SYNCNT`,
/// `TCP_USER_TIMEOUT`, `TCP_CORK`, `TCP_QUICKACK`, `TCP_NOTSENT_LOWAT`,
/// `TCP_DEFER_ACCEPT`; `SOL_SOCKET` `SO_RCVLOWAT`, `SO_OOBINLINE`;
/// `IPPROTO_IP` `IP_TOS`, `IP_TTL`, `IP_MTU_DISCOVER`. Others:
/// `ENOPROTOOPT`; `optlen` too short: `EINVAL`.
///
/// # Safety
/// `optval` must be null or readable for `optlen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_setsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: socklen_t,
) -> c_int {
    ffi_call(|| {
        // A fresh socket's options ride on its connect: an unborn one is
        // not shown to the daemon for them (that would be a request and a
        // wake-up of this thread per connection; TCP_NODELAY before
        // connect is common).
        let entry = fdtable::lookup_unborn_too(fd)?;
        let spec = options::lookup(level, optname)?;
        // SAFETY: forwarded caller guarantee.
        let value = unsafe { options::decode_set(&spec, optval, optlen)? };
        let deferred = |entry: &fdtable::SocketEntry| {
            options::deferrable(spec.option)
                && entry.defer(OptionSetting {
                    option: spec.option as i32,
                    value: Some(value.clone()),
                })
        };
        if deferred(&entry) {
            // Checked here as the daemon checks it; sent with the connect.
            return Ok(0);
        }
        let entry = if entry.is_unborn() {
            let entry = fdtable::lookup_keeping_deferred(fd)?;
            if deferred(&entry) {
                return Ok(0);
            }
            entry
        } else {
            entry
        };
        let request = SetOptionRequest {
            handle: entry.handle,
            option: spec.option as i32,
            value: Some(value),
        };
        rpc(|mut c| async move { c.set_option(request).await })?;
        Ok(0)
    })
}

/// Reads an option, as `getsockopt(2)`: the options of
/// [`tcpd_setsockopt`] plus `SO_ERROR` (reading clears it) and `TCP_INFO`
/// (Linux's `struct tcp_info`). The value is
/// truncated to `*optlen` bytes and `*optlen` set to the bytes written.
///
/// # Safety
/// `optval` must be writable for `*optlen` bytes; `optlen` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_getsockopt(
    fd: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        let spec = options::lookup(level, optname)?;
        // SAFETY: forwarded caller guarantee.
        let capacity = unsafe { options::check_get_args(optval, optlen)? };
        let request = GetOptionRequest {
            handle: entry.handle,
            option: spec.option as i32,
        };
        let reply = rpc(|mut c| async move { c.get_option(request).await })?;
        let value = reply.value.unwrap_or_default();
        if level == libc::SOL_SOCKET && optname == libc::SO_ERROR {
            clear_pair_error(fd);
        }
        // SO_ERROR 0 on a writable descriptor: a non-blocking connect has
        // completed (the filler is gone): the pair gets its full buffer.
        if level == libc::SOL_SOCKET
            && optname == libc::SO_ERROR
            && matches!(
                value.value,
                Some(tcpd_proto::v2::option_value::Value::Int(0))
            )
            && writable(fd)
        {
            connected_buffer(fd);
        }
        let bytes = options::encode_get(&spec, &value)?;
        // SAFETY: forwarded caller guarantee, capacity read from *optlen.
        unsafe { options::write_get(&bytes, capacity, optval, optlen) };
        Ok(0)
    })
}

/// Whether the next read starts at the urgent mark, as `sockatmark(3)`
/// (`ioctl(SIOCATMARK)`): 1 or 0, or -1 with `errno`.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_sockatmark(fd: c_int) -> c_int {
    ffi_call(|| {
        let entry = fdtable::lookup(fd)?;
        let request = GetOptionRequest {
            handle: entry.handle,
            option: tcpd_proto::v2::SocketOption::Siocatmark as i32,
        };
        let reply = rpc(|mut c| async move { c.get_option(request).await })?;
        match reply.value.and_then(|v| v.value) {
            Some(tcpd_proto::v2::option_value::Value::Flag(at)) => Ok(c_int::from(at)),
            _ => Err(Errno(libc::EIO)),
        }
    })
}

fn fcntl_impl(fd: c_int, cmd: c_int, arg: c_int) -> Result<c_int> {
    if !fdtable::is_tcpd(fd) {
        return Err(Errno(libc::EBADF));
    }
    if !matches!(
        cmd,
        libc::F_GETFL | libc::F_SETFL | libc::F_GETFD | libc::F_SETFD
    ) {
        return Err(Errno(libc::EINVAL));
    }
    // The descriptor is real: its flags are the kernel's.
    // SAFETY: fcntl with an int argument for these four commands.
    let r = unsafe { libc::fcntl(fd, cmd, arg) };
    if r < 0 {
        return Err(Errno::last_os_error());
    }
    Ok(r)
}

/// File-descriptor control, as `fcntl(2)`, declared in C as
/// `int tcpd_fcntl(int fd, int cmd, ...)`: `F_GETFL`, `F_SETFL`
/// (`O_NONBLOCK`; other bits ignored), `F_GETFD`, `F_SETFD`
/// (`FD_CLOEXEC`). Other commands: `EINVAL`.
///
/// Defined here with a fixed third `int` argument: on the Linux ABIs tcpd
/// supports (x86-64 System V, AArch64 AAPCS64) a variadic integer argument
/// travels exactly like a named one, so C callers use the variadic
/// prototype. The argument is only read for `F_SETFL`/`F_SETFD`, where
/// callers always pass it.
#[unsafe(no_mangle)]
pub extern "C" fn tcpd_fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    ffi_call(|| fcntl_impl(fd, cmd, arg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::tests::fake_socket;

    fn errno() -> c_int {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn socket_argument_checks_need_no_daemon() {
        assert_eq!(tcpd_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), -1);
        assert_eq!(errno(), libc::EAFNOSUPPORT);
        assert_eq!(tcpd_socket(libc::AF_INET6, libc::SOCK_DGRAM, 0), -1);
        assert_eq!(errno(), libc::EPROTONOSUPPORT);
        assert_eq!(tcpd_socket(libc::AF_INET, libc::SOCK_DGRAM, 0), -1);
        assert_eq!(errno(), libc::EPROTONOSUPPORT);
        assert_eq!(
            tcpd_socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_UDP),
            -1
        );
        assert_eq!(errno(), libc::EPROTONOSUPPORT);
        assert_eq!(tcpd_socket(libc::AF_INET, libc::SOCK_STREAM | 0x100, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
    }

    #[test]
    fn unknown_fd_is_ebadf_everywhere() {
        let mut buf = [0u8; 4];
        // SAFETY: valid buffers; the fd is not ours so nothing is touched.
        unsafe {
            assert_eq!(tcpd_read(12345, buf.as_mut_ptr().cast(), 4), -1);
            assert_eq!(errno(), libc::EBADF);
            assert_eq!(tcpd_send(12345, buf.as_ptr().cast(), 4, 0), -1);
            assert_eq!(errno(), libc::EBADF);
        }
        assert_eq!(tcpd_close(12345), -1);
        assert_eq!(errno(), libc::EBADF);
        assert_eq!(tcpd_listen(-1, 5), -1);
        assert_eq!(errno(), libc::EBADF);
        assert_eq!(
            tcpd_fcntl(0, libc::F_GETFL, 0),
            -1,
            "stdin is not a tcpd socket"
        );
        assert_eq!(errno(), libc::EBADF);
    }

    #[test]
    fn null_pointers_are_efault_before_any_daemon_call() {
        let pair = fake_socket(7);
        let fd = pair.0;
        let mut len: socklen_t = 16;
        // SAFETY: every pointer is null or valid; nulls are rejected first.
        unsafe {
            assert_eq!(tcpd_bind(fd, std::ptr::null(), 16), -1);
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(tcpd_connect(fd, std::ptr::null(), 16), -1);
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(tcpd_getsockname(fd, std::ptr::null_mut(), &mut len), -1);
            assert_eq!(errno(), libc::EFAULT);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            assert_eq!(
                tcpd_getpeername(fd, (&raw mut sa).cast(), std::ptr::null_mut()),
                -1
            );
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(
                tcpd_accept(fd, (&raw mut sa).cast(), std::ptr::null_mut()),
                -1
            );
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(tcpd_read(fd, std::ptr::null_mut(), 10), -1);
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(tcpd_write(fd, std::ptr::null(), 10), -1);
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(
                tcpd_setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    std::ptr::null(),
                    4
                ),
                -1
            );
            assert_eq!(errno(), libc::EFAULT);
            assert_eq!(
                tcpd_getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    std::ptr::null_mut(),
                    &mut len
                ),
                -1
            );
            assert_eq!(errno(), libc::EFAULT);
            // zero-length transfers succeed without touching the buffer
            assert_eq!(tcpd_read(fd, std::ptr::null_mut(), 0), 0);
        }
        crate::fdtable::tests::close_pair(pair);
    }

    #[test]
    fn argument_errors_need_no_daemon() {
        let pair = fake_socket(8);
        let fd = pair.0;
        let v6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        };
        let one: c_int = 1;
        // SAFETY: valid pointers of the stated sizes.
        unsafe {
            // Shorter than RFC 2133's 24-byte sockaddr_in6: EINVAL before
            // the daemon is asked (whether the family suits the socket is
            // the daemon's answer, EAFNOSUPPORT, tested end to end).
            assert_eq!(tcpd_connect(fd, (&raw const v6).cast(), 20), -1);
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(tcpd_bind(fd, (&raw const v6).cast(), 8), -1);
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(
                tcpd_setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_BROADCAST,
                    (&raw const one).cast(),
                    4
                ),
                -1
            );
            assert_eq!(errno(), libc::ENOPROTOOPT);
            assert_eq!(
                tcpd_setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&raw const one).cast(),
                    2
                ),
                -1
            );
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(
                tcpd_accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0x4000_0000),
                -1
            );
            assert_eq!(errno(), libc::EINVAL);
            // recv(MSG_OOB) asks the daemon (urgent data, e2e/tests/options.rs).
        }
        assert_eq!(tcpd_shutdown(fd, 7), -1);
        assert_eq!(errno(), libc::EINVAL);
        crate::fdtable::tests::close_pair(pair);
    }

    #[test]
    fn fcntl_flags() {
        let pair = fake_socket(9);
        let fd = pair.0;
        assert_eq!(tcpd_fcntl(fd, libc::F_GETFL, 0), libc::O_RDWR);
        assert_eq!(tcpd_fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK), 0);
        assert_eq!(
            tcpd_fcntl(fd, libc::F_GETFL, 0),
            libc::O_RDWR | libc::O_NONBLOCK
        );
        assert_eq!(tcpd_fcntl(fd, libc::F_SETFL, 0), 0);
        assert_eq!(tcpd_fcntl(fd, libc::F_GETFL, 0) & libc::O_NONBLOCK, 0);
        assert_eq!(tcpd_fcntl(fd, libc::F_SETFD, 0), 0);
        assert_eq!(tcpd_fcntl(fd, libc::F_GETFD, 0), 0);
        assert_eq!(tcpd_fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        assert_eq!(tcpd_fcntl(fd, libc::F_GETFD, 0), libc::FD_CLOEXEC);
        assert_eq!(tcpd_fcntl(fd, libc::F_DUPFD, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        crate::fdtable::tests::close_pair(pair);
    }

    #[test]
    fn unreachable_daemon_reports_the_unix_connect_errno() {
        // The only test that reaches for a daemon: point it at nothing.
        // SAFETY: tests in this binary read TCPD_SOCKET only through this
        // path; set before the session's first use.
        unsafe { std::env::set_var(tcpd_proto::SOCKET_ENV, "/nonexistent/tcpd-cshim-test.sock") };
        assert_eq!(tcpd_socket(libc::AF_INET, libc::SOCK_STREAM, 0), -1);
        assert_eq!(errno(), libc::ENOENT);
    }
}
