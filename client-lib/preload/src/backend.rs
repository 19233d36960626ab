//! The calls into libtcpd: its public C ABI (`tcpd.h`), loaded with
//! `dlopen` on the first tcpd socket. The only place this library touches
//! tcpd's client code.
//!
//! Why `dlopen` and not the `tcpd-c` rlib: a program that itself links
//! `libtcpd.so.0` and runs under `tcpd-run` then has one libtcpd (one
//! daemon session, one fd table) instead of two; programs that never open a
//! TCP socket never load it; and the preload library stays small.
//!
//! Where libtcpd is found: `$TCPD_LIBTCPD` (set by `tcpd-run` when it finds
//! libtcpd next to the preload library, as in a build tree), else
//! `libtcpd.so.0` or `libtcpd.so` in this library's own directory, else
//! `libtcpd.so.0` through the loader's search path (the package).
//!
//! Each call runs with the thread marked [`Inside`] so that the C library
//! calls libtcpd makes (its Unix connection to the daemon, closing numbers
//! it owns) pass straight through the interposers. All return what the C
//! call would: a value, or -1 with `errno` set.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libc::{c_int, c_void, sockaddr, socklen_t};

use crate::marks::Inside;

/// Environment variable naming libtcpd's path (set by `tcpd-run`).
pub const LIBTCPD_ENV: &str = "TCPD_LIBTCPD";

type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type AddrInFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type AddrOutFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
type IntFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type FdFn = unsafe extern "C" fn(c_int) -> c_int;
type Accept4Fn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
type GetOptFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
type SetOptFn = unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;

/// libtcpd's entry points.
#[derive(Debug)]
struct Api {
    socket: SocketFn,
    connect: AddrInFn,
    bind: AddrInFn,
    listen: IntFn,
    accept4: Accept4Fn,
    getsockopt: GetOptFn,
    setsockopt: SetOptFn,
    getsockname: AddrOutFn,
    getpeername: AddrOutFn,
    shutdown: IntFn,
    close: FdFn,
    /// `tcpd_fcntl`, while libtcpd keeps its own fd flags.
    fcntl: Option<FcntlFn>,
    /// `tcpd_claim` (libtcpd from round 3 on): adopts a socket inherited
    /// across exec.
    claim: Option<FdFn>,
    /// `tcpd_pending_error` (likewise): a failed connection's errno.
    pending_error: Option<FdFn>,
}

/// Why libtcpd could not be loaded (said once on stderr).
static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api, c_int> {
    let loaded = API.get_or_init(|| {
        let _inside = Inside::enter();
        load()
    });
    match loaded {
        Ok(api) => Ok(api),
        Err(why) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("tcpd-preload: {why}"));
            Err(libc::ENOSYS)
        }
    }
}

/// Candidate paths of libtcpd, in order.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os(LIBTCPD_ENV).filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(path));
    }
    if let Some(dir) = own_dir() {
        out.push(dir.join("libtcpd.so.0"));
        out.push(dir.join("libtcpd.so"));
    }
    // A bare name: the loader's search path (ld.so.cache, LD_LIBRARY_PATH).
    out.push(PathBuf::from("libtcpd.so.0"));
    out
}

/// The directory this library was loaded from.
fn own_dir() -> Option<PathBuf> {
    // SAFETY: dladdr fills `info` for an address inside a loaded object;
    // `dli_fname` is then a NUL-terminated string owned by the loader.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = own_dir as *const () as *const c_void;
        if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let file = Path::new(OsStr::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes()));
        file.parent().map(Path::to_path_buf)
    }
}

fn load() -> Result<Api, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        let Ok(name) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        if path.components().count() > 1 && !path.exists() {
            tried.push(format!("{}: not found", path.display()));
            continue;
        }
        // SAFETY: a NUL-terminated path; libtcpd has no unsafe constructors.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a loader-owned string or null.
            let error = unsafe { libc::dlerror() };
            let error = if error.is_null() {
                "dlopen failed".to_string()
            } else {
                // SAFETY: non-null, NUL-terminated.
                unsafe { CStr::from_ptr(error) }
                    .to_string_lossy()
                    .into_owned()
            };
            tried.push(error);
            continue;
        }
        return resolve(handle).map_err(|symbol| {
            format!(
                "{}: no symbol {symbol}: not a libtcpd of this version",
                path.display()
            )
        });
    }
    Err(format!(
        "cannot load libtcpd ({}); TCP sockets fail with ENOSYS (set {LIBTCPD_ENV}=PATH)",
        tried.join("; ")
    ))
}

/// The address of `name` in `handle`, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the symbol's C function type.
unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &'static str) -> Result<F, &'static str> {
    let c_name = CString::new(name).map_err(|_| name)?;
    // SAFETY: a valid handle and a NUL-terminated name.
    let address = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
    if address.is_null() {
        return Err(name);
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: F is a function pointer type of the symbol's signature (the
    // caller's guarantee), the same size as a data pointer on Linux.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
}

fn resolve(handle: *mut c_void) -> Result<Api, &'static str> {
    // SAFETY: each type below is the prototype of the symbol in tcpd.h.
    unsafe {
        Ok(Api {
            socket: symbol(handle, "tcpd_socket")?,
            connect: symbol(handle, "tcpd_connect")?,
            bind: symbol(handle, "tcpd_bind")?,
            listen: symbol(handle, "tcpd_listen")?,
            accept4: symbol(handle, "tcpd_accept4")?,
            getsockopt: symbol(handle, "tcpd_getsockopt")?,
            setsockopt: symbol(handle, "tcpd_setsockopt")?,
            getsockname: symbol(handle, "tcpd_getsockname")?,
            getpeername: symbol(handle, "tcpd_getpeername")?,
            shutdown: symbol(handle, "tcpd_shutdown")?,
            close: symbol(handle, "tcpd_close")?,
            fcntl: symbol(handle, "tcpd_fcntl").ok(),
            claim: symbol(handle, "tcpd_claim").ok(),
            pending_error: symbol(handle, "tcpd_pending_error").ok(),
        })
    }
}

/// `$TCPD_SOCKET` as the program started with it.
static SOCKET_AT_LOAD: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();

/// Remembers `$TCPD_SOCKET` (called at load time, before `main`).
pub fn remember_socket_env() {
    SOCKET_AT_LOAD.get_or_init(|| std::env::var_os(tcpd_proto::SOCKET_ENV));
}

/// Puts `$TCPD_SOCKET` back when the program removed it from its
/// environment, as nginx does for its worker processes (it keeps only the
/// variables its `env` directive names): libtcpd would look for the daemon
/// at the default path instead.
fn restore_socket_env() {
    let Some(Some(saved)) = SOCKET_AT_LOAD.get() else {
        return;
    };
    if std::env::var_os(tcpd_proto::SOCKET_ENV).is_none() {
        // SAFETY: only when the variable vanished, which programs do at
        // start-up (nginx: in a new worker, before it serves anything); the
        // race setenv has with a concurrent getenv is accepted there.
        unsafe { std::env::set_var(tcpd_proto::SOCKET_ENV, saved) };
    }
}

/// Runs `call` with libtcpd loaded and the thread inside it; -1/`ENOSYS`
/// when libtcpd cannot be loaded.
fn with_api(call: impl FnOnce(&Api) -> c_int) -> c_int {
    restore_socket_env();
    match api() {
        Ok(api) => {
            let _inside = Inside::enter();
            call(api)
        }
        Err(errno) => {
            crate::set_errno(errno);
            -1
        }
    }
}

/// libtcpd's `socket(2)`: a new tcpd socket's fd, or -1.
pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: libtcpd's C function, plain integer arguments.
    with_api(|api| unsafe { (api.socket)(domain, ty, protocol) })
}

/// # Safety
/// As `connect(2)`.
pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.connect)(fd, addr, len) })
}

/// # Safety
/// As `bind(2)`.
pub unsafe fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.bind)(fd, addr, len) })
}

pub fn listen(fd: c_int, backlog: c_int) -> c_int {
    // SAFETY: plain integer arguments.
    with_api(|api| unsafe { (api.listen)(fd, backlog) })
}

/// # Safety
/// As `accept4(2)`.
pub unsafe fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.accept4)(fd, addr, len, flags) })
}

/// # Safety
/// As `getsockopt(2)`.
pub unsafe fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.getsockopt)(fd, level, name, value, len) })
}

/// # Safety
/// As `setsockopt(2)`.
pub unsafe fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.setsockopt)(fd, level, name, value, len) })
}

/// # Safety
/// As `getsockname(2)`.
pub unsafe fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.getsockname)(fd, addr, len) })
}

/// # Safety
/// As `getpeername(2)`.
pub unsafe fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    with_api(|api| unsafe { (api.getpeername)(fd, addr, len) })
}

pub fn shutdown(fd: c_int, how: c_int) -> c_int {
    // SAFETY: plain integer arguments.
    with_api(|api| unsafe { (api.shutdown)(fd, how) })
}

/// libtcpd's `close(2)`: closes the descriptor (-1/`EBADF`, the number left
/// open, when libtcpd does not know it).
pub fn close(fd: c_int) -> c_int {
    // SAFETY: plain integer argument.
    with_api(|api| unsafe { (api.close)(fd) })
}

/// Whether `fd`, a number inherited across exec, is a tcpd socket (1, now
/// claimed for this process's session) or not (0); -1 when the daemon
/// cannot be asked. A libtcpd without `tcpd_claim` says 0.
pub fn claim(fd: c_int) -> c_int {
    // SAFETY: plain integer argument.
    with_api(|api| api.claim.map_or(0, |claim| unsafe { claim(fd) }))
}

/// The pending error of tcpd socket `fd` (taken), 0 if none, -1 when
/// libtcpd cannot say (a libtcpd without `tcpd_pending_error`: 0).
pub fn pending_error(fd: c_int) -> c_int {
    // SAFETY: plain integer argument.
    with_api(|api| api.pending_error.map_or(0, |f| unsafe { f(fd) }))
}

/// The socket's `(F_GETFL, F_GETFD)` values, for re-creating it as a kernel
/// socket: libtcpd's while it keeps its own flags, else the fd's.
pub fn flags(fd: c_int) -> (c_int, c_int) {
    let query = |cmd| match api().ok().and_then(|api| api.fcntl) {
        Some(fcntl) => {
            let _inside = Inside::enter();
            // SAFETY: plain integer arguments.
            unsafe { fcntl(fd, cmd, 0) }
        }
        // SAFETY: plain pass-through.
        None => unsafe { crate::real::fcntl(fd, cmd, 0) },
    };
    (query(libc::F_GETFL).max(0), query(libc::F_GETFD).max(0))
}
