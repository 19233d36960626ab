//! The C library's own definitions of the calls this library interposes,
//! found with `dlsym(RTLD_NEXT, name)` on first use and cached.
//!
//! Invariants:
//! - every function here is the next definition after this library in the
//!   lookup order (glibc's, or another preloaded library's listed before us),
//!   never our own: calling one never recurses into an interposer;
//! - resolution is lock-free (an atomic per symbol; two threads racing on
//!   the first call both store the same address), so these are callable
//!   from signal handlers once resolved, and `close`/`dup*` are resolved at
//!   load time (see `crate::init`) for that reason;
//! - a symbol that cannot be found (a C library without it) makes the call
//!   fail with `ENOSYS` rather than crash.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Looks `name` (NUL-terminated) up after this library; 0 when absent.
fn resolve(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    let cached = slot.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: name is a NUL-terminated byte string; RTLD_NEXT is valid from
    // a shared object.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    slot.store(found, Ordering::Release);
    found
}

/// Sets `errno` to `ENOSYS` and returns -1: a missing libc symbol.
fn missing() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// Declares `pub unsafe fn $name(args) -> ret` calling the next `$name`.
macro_rules! next {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        $(
            // The cached address, in a module named after the function
            // (modules and functions live in different namespaces).
            mod $name {
                pub(super) static SLOT: super::AtomicUsize = super::AtomicUsize::new(0);
            }

            /// The C library's function of the same name.
            ///
            /// # Safety
            /// As the C function.
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let address = resolve(&$name::SLOT, concat!(stringify!($name), "\0").as_bytes());
                if address == 0 {
                    return missing() as $ret;
                }
                // SAFETY: the symbol has this C signature in glibc (the C
                // library LD_PRELOAD targets here).
                let f: unsafe extern "C" fn($($ty),*) -> $ret =
                    unsafe { std::mem::transmute::<usize, _>(address) };
                // SAFETY: forwarded caller guarantee.
                unsafe { f($($arg),*) }
            }
        )*

        /// Resolves every symbol now (at load time), so later calls, from
        /// signal handlers too, never enter the dynamic linker.
        pub fn resolve_all() {
            $( resolve(&$name::SLOT, concat!(stringify!($name), "\0").as_bytes()); )*
        }
    };
}

next! {
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, addrlen: socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
}
