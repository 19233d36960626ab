//! Loopback stays on the kernel: a tcpd socket that binds or connects to
//! 127.0.0.0/8 is re-created as a kernel socket at the same fd number, with
//! the options the program set on it so far, before the call goes to the C
//! library.
//!
//! Why: tcpd's stack owns one address on its TUN and has no loopback
//! interface; a segment it sent to 127.0.0.1 would go nowhere, while the
//! program means the local machine (a database on localhost, a test server
//! on 127.0.0.1). Binding to 0.0.0.0 stays with tcpd (the program then
//! listens on tcpd's address only, not on the kernel's 127.0.0.1).
//!
//! Invariants:
//! - options are remembered only while a socket is fresh (between `socket`
//!   and its first `connect`/`bind`/`listen`/`close`, see [`settled`]), at
//!   most [`MAX_REMEMBERED`] per socket and [`MAX_FRESH`] sockets: a
//!   program cannot grow this without bound;
//! - the swap is one `dup3`, which atomically replaces the tcpd socket at
//!   that number: no other thread can observe a closed number in between;
//! - the lock is never held across a call into libtcpd or a blocking call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use libc::{c_int, c_void, sockaddr, socklen_t};

use crate::{backend, marks, real};

/// Options remembered per fresh socket.
const MAX_REMEMBERED: usize = 16;
/// Fresh sockets with remembered options.
const MAX_FRESH: usize = 4096;
/// Largest option value remembered (`struct linger`, ints, a CC name).
const MAX_VALUE: usize = 64;

#[derive(Debug)]
struct Remembered {
    level: c_int,
    name: c_int,
    value: Vec<u8>,
}

static FRESH: Mutex<Option<HashMap<c_int, Vec<Remembered>>>> = Mutex::new(None);
/// Entries in `FRESH`: lets [`settled`] skip the lock in the common case.
static FRESH_COUNT: AtomicUsize = AtomicUsize::new(0);

fn fresh() -> MutexGuard<'static, Option<HashMap<c_int, Vec<Remembered>>>> {
    FRESH.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address family of `addr` (0 when it is too short to say).
///
/// # Safety
/// `addr` must be null or readable for `len` bytes.
unsafe fn family(addr: *const sockaddr, len: socklen_t) -> c_int {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return 0;
    }
    // SAFETY: at least the family's bytes are readable per the caller.
    c_int::from(unsafe { std::ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) })
}

/// Whether `addr` is a loopback address: 127.0.0.0/8, `::1`, or
/// `::ffff:127.0.0.0/104` (an IPv4 loopback address in IPv6 form).
///
/// # Safety
/// `addr` must be null or readable for `len` bytes.
pub unsafe fn is_loopback(addr: *const sockaddr, len: socklen_t) -> bool {
    let len = len as usize;
    // SAFETY: forwarded caller guarantee.
    match unsafe { family(addr, len as socklen_t) } {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: a whole sockaddr_in is readable; read_unaligned makes
            // no alignment assumption.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            u32::from_be(sin.sin_addr.s_addr) >> 24 == 127
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

/// Remembers an option set on a fresh tcpd socket.
///
/// # Safety
/// `value` must be null or readable for `len` bytes.
pub unsafe fn remember_option(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) {
    if value.is_null() || len as usize > MAX_VALUE {
        return;
    }
    // SAFETY: non-null, readable for len bytes per the caller.
    let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len as usize) }.to_vec();
    let mut guard = fresh();
    let map = guard.get_or_insert_with(HashMap::new);
    if !map.contains_key(&fd) && map.len() >= MAX_FRESH {
        return;
    }
    let options = map.entry(fd).or_insert_with(|| {
        FRESH_COUNT.fetch_add(1, Ordering::Relaxed);
        Vec::new()
    });
    options.retain(|o| (o.level, o.name) != (level, name));
    if options.len() < MAX_REMEMBERED {
        options.push(Remembered {
            level,
            name,
            value: bytes,
        });
    }
}

/// The socket is no longer fresh (connected, bound, listening or closed):
/// forget its options.
pub fn settled(fd: c_int) {
    if FRESH_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    take(fd);
}

fn take(fd: c_int) -> Vec<Remembered> {
    let mut guard = fresh();
    match guard.as_mut().and_then(|map| map.remove(&fd)) {
        Some(options) => {
            FRESH_COUNT.fetch_sub(1, Ordering::Relaxed);
            options
        }
        None => Vec::new(),
    }
}

/// Replaces the tcpd socket at `fd` with a new kernel TCP socket of
/// `addr`'s family with the same `O_NONBLOCK`, `FD_CLOEXEC` and remembered
/// options. On failure errno is set and the tcpd socket is left as it was.
///
/// # Safety
/// `addr` must be readable for `len` bytes (checked by [`is_loopback`]).
pub unsafe fn to_kernel(fd: c_int, addr: *const sockaddr) -> Result<(), ()> {
    // SAFETY: the caller checked the address with is_loopback.
    let domain = unsafe { family(addr, std::mem::size_of::<libc::sa_family_t>() as socklen_t) };
    let (status_flags, fd_flags) = backend::flags(fd);
    let nonblock = if status_flags & libc::O_NONBLOCK != 0 {
        libc::SOCK_NONBLOCK
    } else {
        0
    };
    // SAFETY: plain syscall.
    let kernel = unsafe { real::socket(domain, libc::SOCK_STREAM | nonblock, 0) };
    if kernel < 0 {
        return Err(());
    }
    for option in take(fd) {
        // Best effort, as tcpd's answer was: the program was told then.
        // SAFETY: the value is a live buffer of its length.
        unsafe {
            real::setsockopt(
                kernel,
                option.level,
                option.name,
                option.value.as_ptr().cast(),
                option.value.len() as socklen_t,
            )
        };
    }
    let cloexec = if fd_flags & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: both numbers are open; dup3 replaces fd atomically.
    let swapped = unsafe { real::dup3(kernel, fd, cloexec) };
    let saved = crate::errno();
    // SAFETY: our own temporary number.
    unsafe { real::close(kernel) };
    if swapped < 0 {
        crate::set_errno(saved);
        return Err(());
    }
    // libtcpd keys its sockets by the descriptor's inode: the number now
    // names a kernel socket it does not know, and the daemon closes the tcpd
    // socket when its pair's last descriptor (this one, unless duplicated)
    // is gone.
    marks::unmark(fd);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};

    fn loopback6(ip: Ipv6Addr) -> bool {
        let sa = SocketAddrV6::new(ip, 80, 0, 0);
        // SAFETY: sockaddr_in6 is plain data.
        let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = sa.port().to_be();
        sin6.sin6_addr.s6_addr = sa.ip().octets();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as socklen_t;
        // SAFETY: a whole local sockaddr_in6.
        unsafe { is_loopback((&raw const sin6).cast(), len) }
    }

    #[test]
    fn ipv6_loopback_and_mapped_ipv4_loopback_go_to_the_kernel() {
        assert!(loopback6(Ipv6Addr::LOCALHOST));
        assert!(loopback6("::ffff:127.0.0.1".parse().unwrap()));
        assert!(loopback6("::ffff:127.9.8.7".parse().unwrap()));
        assert!(!loopback6(Ipv6Addr::UNSPECIFIED));
        assert!(!loopback6("::ffff:10.77.0.1".parse().unwrap()));
        assert!(!loopback6("fd00:77::1".parse().unwrap()));
        // A truncated sockaddr_in6 is not read (the call then fails as usual).
        // SAFETY: zero bytes are read.
        assert!(!unsafe { is_loopback(std::ptr::null(), 0) });
    }

    #[test]
    fn ipv4_loopback_is_all_of_127_slash_8() {
        let check = |a: SocketAddrV4| {
            // SAFETY: sockaddr_in is plain data.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
            // SAFETY: a whole local sockaddr_in.
            unsafe { is_loopback((&raw const sin).cast(), len) }
        };
        assert!(check("127.0.0.1:80".parse().unwrap()));
        assert!(check("127.200.0.1:80".parse().unwrap()));
        assert!(!check("10.77.0.1:80".parse().unwrap()));
        assert!(!check("0.0.0.0:80".parse().unwrap()));
    }
}
