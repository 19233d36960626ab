//! Which file descriptors are tcpd sockets, and their daemon handles.
//!
//! Every tcpd socket is a real descriptor: the client's end of a socketpair
//! whose other end the daemon pumps (see `daemon/server/DESIGN-fds.md`).
//! The table is keyed by the end's inode (`fstat`'s `st_ino`), not by the
//! descriptor number, so `dup`, `dup2`, `fcntl(F_DUPFD)` and `fork` need no
//! bookkeeping: every copy of a descriptor names the same inode.
//!
//! Invariants:
//! - an entry is valid in the process and daemon session that made it
//!   (`owner_pid`, `session`). Elsewhere (a forked child, a new image after
//!   `exec` — whose table starts empty: any `AF_UNIX` stream socket the
//!   program names to the library may be one — or after the connection to
//!   the daemon was re-made) the socket is *claimed* on first
//!   use: the descriptor itself is sent to the daemon over the fd channel,
//!   which makes this session a co-owner (possession is the capability)
//!   and the entry is replaced;
//! - entries of descriptors the program closed with plain `close(2)` stay
//!   until the next prune (a scan of `/proc/self/fd`), which runs when the
//!   table has doubled since the last one; an inode is never reused while
//!   any copy of its descriptor is open, so a stale entry is never found
//!   through a live descriptor of another socket;
//! - the table lock is never held across a daemon call.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use tcpd_proto::v2::{OptionSetting, SetOptionRequest};

use crate::ffi::{Errno, Result};
use crate::session::{current_session, lock, lock_current, rpc};

/// One tcpd socket as this library knows it.
#[derive(Debug)]
pub struct SocketEntry {
    /// The daemon's handle, valid in `session` of `owner_pid`.
    pub handle: u64,
    owner_pid: u32,
    session: u64,
    /// While the socket is fresh (made by `socket()` here, nothing but
    /// `setsockopt` done to it yet): the options set so far and not sent.
    /// `connect` carries them (one request instead of one per option); any
    /// other call sends them first ([`lookup`]). `None` once not fresh.
    deferred: Mutex<Option<Vec<OptionSetting>>>,
}

impl SocketEntry {
    fn is_current(&self) -> bool {
        self.owner_pid == std::process::id() && self.session == current_session()
    }

    /// Keeps `setting` for the connect if the socket is still fresh;
    /// false (send it now) otherwise.
    pub fn defer(&self, setting: OptionSetting) -> bool {
        match lock(&self.deferred).as_mut() {
            Some(pending) => {
                pending.push(setting);
                true
            }
            None => false,
        }
    }

    /// The deferred options, in order; the socket is no longer fresh.
    pub fn take_deferred(&self) -> Vec<OptionSetting> {
        lock(&self.deferred).take().unwrap_or_default()
    }
}

/// Entries by inode, and when to prune next.
#[derive(Debug)]
struct Table {
    by_ino: HashMap<u64, Arc<SocketEntry>>,
    prune_at: usize,
}

/// Table size below which no prune runs.
const PRUNE_MIN: usize = 1024;

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn lock_table() -> MutexGuard<'static, Option<Table>> {
    lock(&TABLE)
}

/// The inode of `fd` if it is an open socket; `EBADF` if it is not open,
/// `None` if it is not a socket.
fn socket_ino(fd: RawFd) -> Result<Option<u64>> {
    if fd < 0 {
        return Err(Errno(libc::EBADF));
    }
    // SAFETY: fstat writes into a local stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on a caller-given number; fstat validates it.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Errno::last_os_error());
    }
    Ok((st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino))
}

/// How a descriptor relates to the library.
#[derive(Debug)]
pub enum Lookup {
    /// A tcpd socket usable in this process's current session.
    Current(Arc<SocketEntry>),
    /// A tcpd socket of another process or session (its entry there):
    /// claim it first.
    Foreign(Arc<SocketEntry>),
    /// Not a tcpd socket (or not open: then the lookup failed with EBADF).
    Unknown,
}

/// Classifies `fd`; `EBADF` if it is not an open descriptor.
pub fn classify(fd: RawFd) -> Result<Lookup> {
    let Some(ino) = socket_ino(fd)? else {
        return Ok(Lookup::Unknown);
    };
    Ok(
        match lock_table().as_ref().and_then(|t| t.by_ino.get(&ino)) {
            None => Lookup::Unknown,
            Some(e) if e.is_current() => Lookup::Current(Arc::clone(e)),
            Some(e) => Lookup::Foreign(Arc::clone(e)),
        },
    )
}

/// Whether `fd` is a tcpd socket (of this process or inherited).
pub fn is_tcpd(fd: RawFd) -> bool {
    matches!(classify(fd), Ok(Lookup::Current(_) | Lookup::Foreign(_)))
}

/// The socket behind `fd`, claimed for this session if it was inherited;
/// `EBADF` when `fd` is not a tcpd socket. Options deferred on a fresh
/// socket are sent first (see [`SocketEntry::defer`]).
pub fn lookup(fd: RawFd) -> Result<Arc<SocketEntry>> {
    let entry = lookup_keeping_deferred(fd)?;
    send_options(&entry, entry.take_deferred())?;
    Ok(entry)
}

/// Sets `settings` on `entry`'s socket, one request each.
fn send_options(entry: &SocketEntry, settings: Vec<OptionSetting>) -> Result<()> {
    for setting in settings {
        let request = SetOptionRequest {
            handle: entry.handle,
            option: setting.option,
            value: setting.value,
        };
        rpc(|mut c| async move { c.set_option(request).await })?;
    }
    Ok(())
}

/// As [`lookup`], leaving deferred options deferred (for `setsockopt` and
/// `connect`, which carry them).
pub fn lookup_keeping_deferred(fd: RawFd) -> Result<Arc<SocketEntry>> {
    match classify(fd)? {
        Lookup::Current(entry) => Ok(entry),
        Lookup::Foreign(parent) => {
            // Options the parent set on the fresh socket before fork and
            // had not sent yet are in force in the child too (as Linux).
            let entry = claim_into_table(fd)?;
            send_options(&entry, parent.take_deferred())?;
            Ok(entry)
        }
        // Possibly inherited across exec (the new image's table is empty);
        // if the daemon cannot say, it is no socket of ours to use.
        Lookup::Unknown if is_unix_stream(fd) => {
            claim_into_table(fd).map_err(|_| Errno(libc::EBADF))
        }
        Lookup::Unknown => Err(Errno(libc::EBADF)),
    }
}

/// Whether `fd` is a tcpd socket, claiming it for this session if it is one
/// this process did not know (inherited across exec or fork); `EBADF` if
/// `fd` is not open, the daemon's errno if it cannot be asked.
pub fn claim(fd: RawFd) -> Result<bool> {
    let found = match classify(fd)? {
        Lookup::Current(_) => return Ok(true),
        Lookup::Foreign(_) => lookup_keeping_deferred(fd),
        Lookup::Unknown if is_unix_stream(fd) => claim_into_table(fd),
        Lookup::Unknown => return Ok(false),
    };
    match found {
        Ok(_) => Ok(true),
        Err(Errno(libc::EBADF)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Claims `fd` for this session: the daemon makes it a co-owner of the
/// socket whose client end `fd` is (a socket of the parent after fork, of
/// the image before exec, or of a lost session); `EBADF` if the daemon
/// knows no such socket.
fn claim_into_table(fd: RawFd) -> Result<Arc<SocketEntry>> {
    let handle = crate::session::claim(fd).map_err(|e| match e.0 {
        libc::ENOTSOCK => Errno(libc::EBADF),
        _ => e,
    })?;
    insert(fd, handle, current_session(), false)?;
    match classify(fd)? {
        Lookup::Current(entry) => Ok(entry),
        _ => Err(Errno(libc::EBADF)),
    }
}

/// Whether `fd` is an `AF_UNIX` `SOCK_STREAM` socket, as a tcpd socket's
/// descriptor is (two getsockopt calls, no daemon).
pub fn is_unix_stream(fd: RawFd) -> bool {
    let int_option = |name| {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a local int.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(value)
    };
    int_option(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int_option(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

/// Records `fd` as the tcpd socket `handle` of `session`; `fresh`: just
/// made by `socket()` (its options may be deferred to its connect).
pub fn insert(fd: RawFd, handle: u64, session: u64, fresh: bool) -> Result<()> {
    let ino = socket_ino(fd)?.ok_or(Errno(libc::ENOTSOCK))?;
    let entry = Arc::new(SocketEntry {
        handle,
        owner_pid: std::process::id(),
        session,
        deferred: Mutex::new(fresh.then(Vec::new)),
    });
    let mut guard = lock_table();
    let table = guard.get_or_insert_with(|| Table {
        by_ino: HashMap::new(),
        prune_at: PRUNE_MIN,
    });
    table.by_ino.insert(ino, entry);
    if table.by_ino.len() >= table.prune_at {
        prune(table);
    }
    Ok(())
}

/// Drops entries whose inode no open descriptor of this process has.
fn prune(table: &mut Table) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        table.prune_at = table.by_ino.len() * 2;
        return;
    };
    let mut live = std::collections::HashSet::new();
    for name in dir.flatten() {
        if let Some(fd) = name
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
            && let Ok(Some(ino)) = socket_ino(fd)
        {
            live.insert(ino);
        }
    }
    table.by_ino.retain(|ino, _| live.contains(ino));
    table.prune_at = (table.by_ino.len() * 2).max(PRUNE_MIN);
}

thread_local! {
    /// Locks taken in the `fork()` prepare handler, released in the parent
    /// and child handlers (which run on the same thread).
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<ForkGuards>> =
        const { std::cell::RefCell::new(None) };
}

/// The library's global locks, held across `fork()`.
struct ForkGuards {
    _current: MutexGuard<'static, Option<&'static crate::session::Process>>,
    _table: MutexGuard<'static, Option<Table>>,
}

extern "C" fn before_fork() {
    // Lock order everywhere: CURRENT, then TABLE (never TABLE then CURRENT).
    let guards = ForkGuards {
        _current: lock_current(),
        _table: lock_table(),
    };
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(guards));
}

extern "C" fn after_fork() {
    HELD_ACROSS_FORK.with(|held| drop(held.borrow_mut().take()));
}

/// Registers `pthread_atfork` handlers so a `fork()` racing with another
/// thread inside the library never leaves the child with a lock held by a
/// thread that does not exist there.
pub fn install_fork_handlers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the handlers are plain functions that only take and release
        // this crate's locks. A failure (ENOMEM) only loses the protection.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A socketpair end registered with a made-up daemon handle, for tests
    /// that must not reach a daemon. Returns (registered end, other end).
    pub(crate) fn fake_socket(handle: u64) -> (RawFd, RawFd) {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair writes two descriptors into the array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        insert(fds[0], handle, current_session(), false).unwrap();
        (fds[0], fds[1])
    }

    pub(crate) fn close_pair((a, b): (RawFd, RawFd)) {
        // SAFETY: closing descriptors this test created.
        unsafe {
            libc::close(a);
            libc::close(b);
        }
    }

    #[test]
    fn lookup_by_inode_follows_dup() {
        let pair = fake_socket(42);
        assert_eq!(lookup(pair.0).unwrap().handle, 42);
        // SAFETY: dup of our own descriptor.
        let copy = unsafe { libc::dup(pair.0) };
        assert_eq!(lookup(copy).unwrap().handle, 42);
        assert!(is_tcpd(copy));
        assert!(!is_tcpd(pair.1), "the other end is not registered");
        // SAFETY: closing our own dup.
        unsafe { libc::close(copy) };
        close_pair(pair);
    }

    #[test]
    fn unknown_fds_are_ebadf() {
        assert_eq!(lookup(-1).err(), Some(Errno(libc::EBADF)));
        assert_eq!(lookup(54321).err(), Some(Errno(libc::EBADF)));
        // stdin is open but not a tcpd socket.
        assert!(!is_tcpd(0));
    }
}
