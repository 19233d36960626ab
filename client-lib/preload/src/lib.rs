//! `libtcpd-preload.so`: runs an unmodified, dynamically linked program's
//! TCP over tcpd. Loaded with `LD_PRELOAD` (by `tcpd-run`), it defines the
//! socket calls before the C library does; each one decides whether the fd
//! (or the new socket) is tcpd's and then calls libtcpd, or passes the call
//! to the C library's own definition untouched.
//!
//! What becomes a tcpd socket: `socket(AF_INET or AF_INET6,
//! SOCK_STREAM[|flags], 0 or IPPROTO_TCP)` (`AF_INET6` unless
//! `TCPD_PRELOAD_INET6=0`), and what `accept` returns for one. Everything
//! else — UDP, Unix sockets, files, DNS resolution — is the kernel's. A tcpd
//! socket that binds or connects to a loopback address (127.0.0.0/8, `::1`,
//! `::ffff:127.0.0.0/104`) is re-created as a kernel socket at the same fd
//! number first: tcpd's stack has no loopback interface, and programs
//! expect 127.0.0.1 and `::1` to reach local services. An `AF_INET6` socket
//! bound to `::` stays tcpd's and, as on Linux, takes IPv4 too (unless
//! `IPV6_V6ONLY`). A daemon without IPv6 (`--address6 none`, or a kernel
//! that refused it) still makes `AF_INET6` sockets, which then behave as on
//! a Linux host with IPv6 disabled by sysctl: `::` listeners and
//! IPv4-mapped peers work, an IPv6 peer is `ENETUNREACH`.
//!
//! A tcpd socket is a real file descriptor (libtcpd's), so data calls
//! move bytes natively and readiness (`poll`, `select`, `epoll`),
//! `sendfile`, `splice` and `ioctl(FIONREAD/FIONBIO)` are not interposed.
//! Interposed: the control calls libtcpd answers (`connect`, `bind`,
//! `listen`, `accept`, `accept4`, `getsockopt`, `setsockopt`,
//! `getsockname`, `getpeername`, `shutdown`), `close`, the `dup` family and
//! `fcntl(F_DUPFD*)` for bookkeeping, and the read/write family only to
//! report a failed connection as Linux does (`datapath`: ECONNRESET once
//! instead of the pair's EOF/EPIPE, no SIGPIPE with it).
//!
//! Sockets inherited across `exec`: the new image's library notes, at load
//! time, the numbers that may be tcpd sockets (`AF_UNIX` stream sockets
//! with an unnamed peer) and resolves each on its first control call
//! (libtcpd presents it to the daemon, which knows it by its inode).
//!
//! Invariants:
//! - a call on an fd that is not a tcpd socket costs one atomic load before
//!   the C library's function runs (see `marks`); `close`/`dup2` of such
//!   fds stay async-signal-safe;
//! - calls made by libtcpd itself pass through (`marks::Inside`);
//! - no panic unwinds into C: every entry point catches it and fails with
//!   `EIO`; every pointer is checked (null is `EFAULT`) before use.
//!
//! Modules: `real` (the C library's functions), `marks` (which fds are
//! tcpd's), `backend` (calls into libtcpd), `loopback` (moving a socket to
//! the kernel), `datapath` (errors of the data calls).

mod backend;
mod datapath;
mod loopback;
mod marks;
mod real;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use libc::{c_int, c_ulong, c_void, sockaddr, socklen_t};

/// `SOCK_TYPE_MASK` (include/linux/net.h): the socket type without flags.
const SOCK_TYPE_MASK: c_int = 0xf;

fn set_errno(errno: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Runs an interposer's tcpd path: a panic becomes -1/`EIO`, never an
/// unwind into C.
fn entry(body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        -1
    })
}

/// Restores the thread's `errno` when dropped.
struct KeepErrno(c_int);

impl KeepErrno {
    fn new() -> KeepErrno {
        KeepErrno(errno())
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

/// `TCPD_PRELOAD_DEBUG=1`: one line on stderr per decision.
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("TCPD_PRELOAD_DEBUG").is_some_and(|v| v == "1"))
}

/// Writes a `TCPD_PRELOAD_DEBUG` line; the caller's `errno` survives.
macro_rules! trace {
    ($($arg:tt)*) => {
        if debug() {
            let saved = errno();
            eprintln!("tcpd-preload[{}]: {}", std::process::id(), format_args!($($arg)*));
            set_errno(saved);
        }
    };
}

/// Whether `AF_INET6` stream sockets are offered to libtcpd: yes unless
/// `TCPD_PRELOAD_INET6=0` (the opt-out keeps a program's IPv6 on the
/// kernel). A daemon older than tcpd's IPv6 refuses them with
/// `EAFNOSUPPORT`, and they are then the kernel's (see [`socket`]).
fn inet6() -> bool {
    static INET6: OnceLock<bool> = OnceLock::new();
    *INET6.get_or_init(|| inet6_from(std::env::var_os("TCPD_PRELOAD_INET6").as_deref()))
}

/// [`inet6`]'s decision from the variable's value: only `0` opts out.
fn inet6_from(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_none_or(|v| v != "0")
}

/// Says once per process why tcpd sockets fail when the daemon cannot be
/// reached (the program itself would print only `socket: No such file or
/// directory`).
fn explain_socket_failure(errno: c_int) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if matches!(
        errno,
        libc::ENOENT | libc::ECONNREFUSED | libc::EACCES | libc::ECONNABORTED
    ) && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        // The program reads errno after the call: keep it.
        let _keep = KeepErrno::new();
        eprintln!(
            "tcpd-preload: cannot reach the tcpd daemon at {}: {} (TCP sockets fail until it answers)",
            tcpd_proto::socket_path_from_env(),
            std::io::Error::from_raw_os_error(errno)
        );
    }
}

/// Whether `socket(domain, ty, protocol)` is one tcpd serves.
fn is_tcp(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    (domain == libc::AF_INET || (domain == libc::AF_INET6 && inet6()))
        && ty & SOCK_TYPE_MASK == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
}

/// Passes the call to the C library unless `fd` is a tcpd socket and this
/// thread is not inside libtcpd. A number that may be a tcpd socket
/// inherited across exec is resolved here, on its first control call.
fn ours(fd: c_int) -> bool {
    if marks::inside() {
        return false;
    }
    marks::is_tcpd(fd) || (marks::is_inherited(fd) && resolve_inherited(fd))
}

/// Asks libtcpd (and through it the daemon) whether the inherited number
/// `fd` is a tcpd socket; marks it so if it is. Either way it is resolved
/// for good. The caller's `errno` survives.
fn resolve_inherited(fd: c_int) -> bool {
    if !marks::forget_inherited(fd) {
        // Another thread resolved it (or is resolving it) meanwhile.
        return marks::is_tcpd(fd);
    }
    let _keep = KeepErrno::new();
    let tcpd = entry(|| backend::claim(fd)) == 1 && marks::mark(fd);
    trace!(
        "inherited fd {fd}: {}",
        if tcpd { "tcpd socket" } else { "not tcpd's" }
    );
    tcpd
}

/// Load time: records the numbers open now that may be tcpd sockets this
/// image inherited across `exec` (`AF_UNIX` stream sockets whose peer has
/// no name, as a tcpd socket's daemon end). No daemon is asked here: a
/// program that never makes a control call on them pays nothing more.
fn note_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for name in dir.flatten() {
        if let Some(fd) = name
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<c_int>().ok())
            && maybe_tcpd(fd)
        {
            marks::mark_inherited(fd);
        }
    }
}

/// Whether `fd` looks like a tcpd socket's descriptor: an `AF_UNIX`
/// `SOCK_STREAM` socket connected to an unnamed peer.
fn maybe_tcpd(fd: c_int) -> bool {
    let int_option = |name| {
        let mut value: c_int = -1;
        let mut len = std::mem::size_of::<c_int>() as socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a local int.
        let r = unsafe {
            real::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(value)
    };
    if int_option(libc::SO_DOMAIN) != Some(libc::AF_UNIX)
        || int_option(libc::SO_TYPE) != Some(libc::SOCK_STREAM)
    {
        return false;
    }
    // SAFETY: sockaddr_un is plain data; getpeername writes at most `len`.
    let mut peer: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as socklen_t;
    // SAFETY: as above.
    let r = unsafe { real::getpeername(fd, (&raw mut peer).cast(), &mut len) };
    r == 0 && len as usize <= std::mem::size_of::<libc::sa_family_t>()
}

/// Records a new tcpd socket; a number the bitmap cannot hold is closed
/// again (`EMFILE`).
fn adopt(fd: c_int) -> c_int {
    if fd < 0 {
        return fd;
    }
    marks::forget_inherited(fd);
    if marks::mark(fd) {
        fd
    } else {
        backend::close(fd);
        set_errno(libc::EMFILE);
        -1
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if marks::inside() || !is_tcp(domain, ty, protocol) {
        // SAFETY: plain pass-through.
        return unsafe { real::socket(domain, ty, protocol) };
    }
    entry(|| {
        let fd = adopt(backend::socket(domain, ty, protocol));
        if fd < 0 && domain == libc::AF_INET6 && errno() == libc::EAFNOSUPPORT {
            // A daemon from before tcpd's IPv6 refuses the family: the
            // kernel's, as with TCPD_PRELOAD_INET6=0. (A current daemon
            // without an IPv6 address still makes the socket.)
            // SAFETY: plain pass-through.
            return unsafe { real::socket(domain, ty, protocol) };
        }
        if fd < 0 {
            explain_socket_failure(errno());
        }
        trace!("socket({domain}, SOCK_STREAM) = {fd} (tcpd)");
        fd
    })
}

/// `connect` and `bind` on a tcpd socket: a loopback address moves the
/// socket to the kernel first (see `loopback`), anything else is tcpd's.
///
/// # Safety
/// As `connect(2)`/`bind(2)`; `kernel` and `tcpd` are the two
/// implementations of the same call.
unsafe fn addressed(
    what: &str,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    kernel: unsafe fn(c_int, *const sockaddr, socklen_t) -> c_int,
    tcpd: unsafe fn(c_int, *const sockaddr, socklen_t) -> c_int,
) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { kernel(fd, addr, len) };
    }
    entry(|| {
        // SAFETY: forwarded caller guarantee.
        if unsafe { loopback::is_loopback(addr, len) } {
            trace!("{what}({fd}) to loopback: moving the socket to the kernel");
            // SAFETY: is_loopback read the address within len.
            if unsafe { loopback::to_kernel(fd, addr) }.is_err() {
                return -1;
            }
            // SAFETY: forwarded caller guarantee.
            return unsafe { kernel(fd, addr, len) };
        }
        loopback::settled(fd);
        // SAFETY: forwarded caller guarantee.
        let r = unsafe { tcpd(fd, addr, len) };
        trace!("{what}({fd}) = {r} (tcpd)");
        r
    })
}

/// # Safety
/// As `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    unsafe { addressed("connect", fd, addr, len, real::connect, backend::connect) }
}

/// # Safety
/// As `bind(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    unsafe { addressed("bind", fd, addr, len, real::bind, backend::bind) }
}

#[unsafe(no_mangle)]
pub extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::listen(fd, backlog) };
    }
    entry(|| {
        loopback::settled(fd);
        backend::listen(fd, backlog)
    })
}

/// # Safety
/// As `accept(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::accept(fd, addr, len) };
    }
    // SAFETY: forwarded caller guarantee.
    entry(|| adopt(unsafe { backend::accept4(fd, addr, len, 0) }))
}

/// # Safety
/// As `accept4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::accept4(fd, addr, len, flags) };
    }
    // SAFETY: forwarded caller guarantee.
    entry(|| adopt(unsafe { backend::accept4(fd, addr, len, flags) }))
}

/// Options whose answer is a fixed fact of every tcpd socket, answered
/// here when libtcpd has no entry for them.
fn fixed_option(level: c_int, name: c_int) -> Option<c_int> {
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_TYPE) => Some(libc::SOCK_STREAM),
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => Some(libc::AF_INET),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => Some(libc::IPPROTO_TCP),
        _ => None,
    }
}

/// # Safety
/// As `getsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::getsockopt(fd, level, name, value, len) };
    }
    entry(|| {
        // SAFETY: forwarded caller guarantee.
        let r = unsafe { backend::getsockopt(fd, level, name, value, len) };
        if r == 0 || errno() != libc::ENOPROTOOPT {
            return r;
        }
        let Some(fixed) = fixed_option(level, name) else {
            trace!("getsockopt({fd}, {level}, {name}): ENOPROTOOPT (tcpd)");
            return r;
        };
        if value.is_null() || len.is_null() {
            set_errno(libc::EFAULT);
            return -1;
        }
        // SAFETY: non-null; the caller guarantees *len bytes at value.
        unsafe {
            // Linux: a shorter buffer gets the value truncated; negative is EINVAL.
            let Ok(room) = usize::try_from(*len as i32) else {
                set_errno(libc::EINVAL);
                return -1;
            };
            let bytes = fixed.to_ne_bytes();
            let n = room.min(bytes.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.cast::<u8>(), n);
            *len = n as socklen_t;
        }
        0
    })
}

/// # Safety
/// As `setsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::setsockopt(fd, level, name, value, len) };
    }
    entry(|| {
        // SAFETY: forwarded caller guarantee.
        let r = unsafe { backend::setsockopt(fd, level, name, value, len) };
        if r < 0 {
            trace!(
                "setsockopt({fd}, {level}, {name}): errno {} (tcpd)",
                errno()
            );
        }
        // Kept for a move to the kernel (loopback), whatever tcpd answered:
        // the kernel socket may honour what tcpd does not.
        // SAFETY: forwarded caller guarantee.
        unsafe { loopback::remember_option(fd, level, name, value, len) };
        r
    })
}

/// # Safety
/// As `getsockname(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::getsockname(fd, addr, len) };
    }
    // SAFETY: forwarded caller guarantee.
    entry(|| unsafe { backend::getsockname(fd, addr, len) })
}

/// # Safety
/// As `getpeername(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    // SAFETY: forwarded caller guarantee.
    entry(|| unsafe { backend::getpeername(fd, addr, len) })
}

#[unsafe(no_mangle)]
pub extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::shutdown(fd, how) };
    }
    entry(|| backend::shutdown(fd, how))
}

/// `close(2)`: a tcpd socket is closed by libtcpd, which closes the
/// descriptor like the C library and tells the daemon what it cannot see
/// for itself (a socket whose connection failed). The TCP connection closes
/// when the last descriptor of the socket does — in this process, a forked
/// child or a `dup` — exactly as with a kernel socket.
#[unsafe(no_mangle)]
pub extern "C" fn close(fd: c_int) -> c_int {
    // Unmark first: exactly one of several threads closing the same number
    // goes to libtcpd; the others (and libtcpd's own close of the number)
    // reach the C library, as they would without tcpd.
    marks::forget_inherited(fd);
    if marks::inside() || !marks::unmark(fd) {
        // SAFETY: plain pass-through.
        return unsafe { real::close(fd) };
    }
    entry(|| {
        loopback::settled(fd);
        let r = backend::close(fd);
        if r < 0 && errno() == libc::EBADF {
            // libtcpd does not know the descriptor (an old libtcpd, or one
            // that lost track): close it as any other.
            // SAFETY: plain pass-through.
            return unsafe { real::close(fd) };
        }
        trace!("close({fd}) = {r} (tcpd)");
        r
    })
}

/// Bookkeeping after `new` became a copy of `old` (which may be a tcpd
/// socket) replacing whatever `new` was (which may have been one).
fn after_dup(old: c_int, new: c_int) {
    if new < 0 || old == new {
        return;
    }
    // A copy of an unresolved inherited number is one too.
    marks::forget_inherited(new);
    if marks::is_inherited(old) {
        marks::mark_inherited(new);
    }
    if marks::unmark(new) {
        // dup2/dup3 closed the tcpd socket that was at `new`.
        loopback::settled(new);
    }
    if marks::is_tcpd(old) && !marks::mark(new) {
        // SAFETY: plain close of the number the call just created.
        unsafe { real::close(new) };
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn dup(old: c_int) -> c_int {
    // SAFETY: plain pass-through.
    let new = unsafe { real::dup(old) };
    if new >= 0 && !marks::inside() && (marks::is_tcpd(old) || marks::is_inherited(old)) {
        entry(|| {
            after_dup(old, new);
            new
        })
    } else {
        new
    }
}

/// Whether `dup2(old, new)` changes what this library knows.
fn dup_concerns_us(old: c_int, new: c_int) -> bool {
    marks::is_tcpd(old)
        || marks::is_tcpd(new)
        || marks::is_inherited(old)
        || marks::is_inherited(new)
}

#[unsafe(no_mangle)]
pub extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: plain pass-through.
    let r = unsafe { real::dup2(old, new) };
    if r >= 0 && !marks::inside() && dup_concerns_us(old, new) {
        entry(|| {
            after_dup(old, r);
            r
        })
    } else {
        r
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: plain pass-through.
    let r = unsafe { real::dup3(old, new, flags) };
    if r >= 0 && !marks::inside() && dup_concerns_us(old, new) {
        entry(|| {
            after_dup(old, r);
            r
        })
    } else {
        r
    }
}

/// `fcntl` with the bookkeeping of `F_DUPFD`/`F_DUPFD_CLOEXEC`; every other
/// command is the C library's (a tcpd socket is a real fd: `O_NONBLOCK`
/// and `FD_CLOEXEC` live on it).
fn fcntl_common(
    fd: c_int,
    cmd: c_int,
    arg: c_ulong,
    next: unsafe fn(c_int, c_int, c_ulong) -> c_int,
) -> c_int {
    // SAFETY: plain pass-through of the caller's arguments.
    let r = unsafe { next(fd, cmd, arg) };
    if r >= 0
        && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC)
        && !marks::inside()
        && (marks::is_tcpd(fd) || marks::is_inherited(fd))
    {
        entry(|| {
            after_dup(fd, r);
            r
        })
    } else {
        r
    }
}

/// Declared in C as `int fcntl(int fd, int cmd, ...)`. Defined with one
/// fixed word-sized third argument: on the ABIs tcpd supports (x86-64
/// System V, AArch64) a variadic integer or pointer argument travels in the
/// same register as a named one, and commands without one ignore it.
#[unsafe(no_mangle)]
pub extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real::fcntl)
}

/// glibc's large-file name of `fcntl` (what programs built with
/// `_FILE_OFFSET_BITS=64` on glibc ≥ 2.28 call).
#[unsafe(no_mangle)]
pub extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real::fcntl64)
}

/// Load-time setup: resolve the C library's functions before any signal
/// handler could need them; remember where the daemon is.
extern "C" fn init() {
    real::resolve_all();
    backend::remember_socket_env();
    note_inherited();
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet6_is_on_unless_opted_out_with_zero() {
        assert!(inet6_from(None));
        assert!(inet6_from(Some("1".as_ref())));
        assert!(inet6_from(Some("".as_ref())));
        assert!(!inet6_from(Some("0".as_ref())));
    }

    #[test]
    fn tcp_of_both_families_only() {
        assert!(is_tcp(libc::AF_INET, libc::SOCK_STREAM, 0));
        // Unless the test runs with TCPD_PRELOAD_INET6=0.
        assert_eq!(
            is_tcp(
                libc::AF_INET6,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP
            ),
            inet6()
        );
        assert!(!is_tcp(libc::AF_INET6, libc::SOCK_DGRAM, 0));
        assert!(!is_tcp(
            libc::AF_INET6,
            libc::SOCK_STREAM,
            libc::IPPROTO_SCTP
        ));
        assert!(!is_tcp(libc::AF_UNIX, libc::SOCK_STREAM, 0));
    }
}
