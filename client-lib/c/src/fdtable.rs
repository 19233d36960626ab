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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use libc::c_int;
use tcpd_proto::v2::{OptionSetting, SetOptionRequest};

use crate::ffi::{Errno, Result};
use crate::session::{current_session, lock, lock_current, rpc};

/// A socket `socket()` made here whose pair the daemon has not seen yet:
/// the end the daemon will keep, until the first control call sends it
/// (`Connect` or `Adopt` on the fd channel; see `DESIGN-fds.md`).
#[derive(Debug)]
pub struct Unborn {
    pub daemon_end: OwnedFd,
    /// `AF_INET` or `AF_INET6`.
    pub family: c_int,
    /// Filler bytes written from the program's end.
    pub filler: u32,
}

/// One tcpd socket as this library knows it.
#[derive(Debug)]
pub struct SocketEntry {
    /// The daemon's handle, valid in `session` of `owner_pid`; 0 while the
    /// socket is unborn.
    pub handle: u64,
    owner_pid: u32,
    session: u64,
    /// While the socket is fresh (made by `socket()` here, nothing but
    /// `setsockopt` done to it yet): the options set so far and not sent.
    /// `connect` carries them (one request instead of one per option); any
    /// other call sends them first ([`lookup`]). `None` once not fresh.
    deferred: Mutex<Option<Vec<OptionSetting>>>,
    /// The pair's daemon end while the daemon knows nothing of the socket
    /// (no session either: such an entry is current in any session of its
    /// process). Held across the request that hands it over, so a second
    /// thread waits and then finds the new entry.
    pub unborn: Mutex<Option<Unborn>>,
    /// libtcpd's data calls gave the pair its connected `SO_SNDBUF`
    /// (a new socket's is small, see `api::local_pair`).
    pub full_buffer: AtomicBool,
}

impl SocketEntry {
    fn is_current(&self) -> bool {
        self.owner_pid == std::process::id()
            && (self.session == current_session() || self.handle == 0)
    }

    /// Whether the daemon has not seen this socket yet.
    pub fn is_unborn(&self) -> bool {
        self.handle == 0
    }

    /// Keeps `setting` for the connect if the socket is still fresh;
    /// false (send it now) otherwise. An unborn socket stays unborn (no
    /// `Adopt`): its `Connect` carries the setting, unless another thread
    /// handed the pair over meanwhile (false: the caller finds the new
    /// entry). The `unborn` lock, held by a `Connect` while it reads the
    /// deferred options and sends them, orders the two.
    pub fn defer(&self, setting: OptionSetting) -> bool {
        let unborn = self.is_unborn().then(|| lock(&self.unborn));
        if unborn.as_ref().is_some_and(|pair| pair.is_none()) {
            return false;
        }
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

    /// The deferred options, in order, leaving them deferred.
    pub fn deferred(&self) -> Vec<OptionSetting> {
        lock(&self.deferred).clone().unwrap_or_default()
    }
}

/// Entries by inode, and when to prune next.
#[derive(Debug)]
struct Table {
    by_ino: HashMap<u64, Arc<SocketEntry>>,
    prune_at: usize,
    /// Unborn entries in `by_ino`: each holds a descriptor (the pair's
    /// daemon end) until it is handed over or its program end is closed.
    unborn: usize,
}

/// Unborn entries above which a new one first sweeps out those whose
/// program end is closed (the daemon end reports POLLHUP): bounds the
/// descriptors held for sockets closed with plain `close(2)` before any
/// control call.
const UNBORN_SWEEP: usize = 64;

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
        Lookup::Current(entry) if entry.is_unborn() => adopt_unborn(fd, &entry),
        Lookup::Current(entry) => Ok(entry),
        // Made by the parent before fork and not yet shown to the daemon:
        // the child holds the pair's daemon end too and hands it over
        // itself (or claims it, if the parent was first).
        Lookup::Foreign(parent) if parent.is_unborn() => adopt_unborn(fd, &parent),
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

/// As [`lookup_keeping_deferred`], but an unborn socket stays unborn (its
/// entry is returned, handle 0): for data calls, which need the handle
/// only to ask for a failed connection's error, and for connect, which
/// hands the pair over itself.
pub fn lookup_unborn_too(fd: RawFd) -> Result<Arc<SocketEntry>> {
    match classify(fd)? {
        Lookup::Current(entry) => Ok(entry),
        Lookup::Foreign(parent) if parent.is_unborn() => Ok(parent),
        _ => lookup_keeping_deferred(fd),
    }
}

/// Shows an unborn socket to the daemon (`Adopt`): the table's entry for
/// `fd` is replaced by one with the daemon's handle, options deferred so far
/// still deferred. `EEXIST` from the daemon (another process holding the
/// same pair — a fork — was first) turns into a claim.
fn adopt_unborn(fd: RawFd, entry: &SocketEntry) -> Result<Arc<SocketEntry>> {
    let mut unborn = lock(&entry.unborn);
    let Some(pair) = unborn.as_ref() else {
        // Another thread handed it over meanwhile: its entry is in the table.
        drop(unborn);
        return match classify(fd)? {
            Lookup::Current(e) if !e.is_unborn() => Ok(e),
            _ => Err(Errno(libc::EBADF)),
        };
    };
    let request = tcpd_proto::fd_channel::Request::Adopt {
        family: pair.family,
        filler: pair.filler,
    };
    let sent = crate::session::fd_request(request, &[], &[pair.daemon_end.as_raw_fd(), fd]);
    match sent {
        Ok(reply) => {
            unborn.take();
            born(fd, reply.handle, reply.session, Some(entry.deferred()))
        }
        Err(Errno(libc::EEXIST)) => {
            unborn.take();
            claim_into_table(fd)
        }
        Err(e) => Err(e),
    }
}

/// Records `fd` as the socket `handle` of `session`, the daemon having
/// just seen it (`Adopt`, `Connect`); `deferred`: options still to send
/// (`None`: the socket is no longer fresh).
pub fn born(
    fd: RawFd,
    handle: u64,
    session: u64,
    deferred: Option<Vec<OptionSetting>>,
) -> Result<Arc<SocketEntry>> {
    let entry = Arc::new(SocketEntry {
        handle,
        owner_pid: std::process::id(),
        session,
        deferred: Mutex::new(deferred),
        unborn: Mutex::new(None),
        full_buffer: AtomicBool::new(false),
    });
    put(fd, Arc::clone(&entry))?;
    Ok(entry)
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
pub fn claim_into_table(fd: RawFd) -> Result<Arc<SocketEntry>> {
    let reply = crate::session::claim(fd).map_err(|e| match e.0 {
        libc::ENOTSOCK => Errno(libc::EBADF),
        _ => e,
    })?;
    insert(fd, reply.handle, reply.session, false)?;
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
    born(fd, handle, session, fresh.then(Vec::new)).map(drop)
}

/// Records `fd` as a socket made here whose pair the daemon has not seen
/// (its options deferred until it does).
pub fn insert_unborn(fd: RawFd, unborn: Unborn) -> Result<()> {
    put(
        fd,
        Arc::new(SocketEntry {
            handle: 0,
            owner_pid: std::process::id(),
            session: 0,
            deferred: Mutex::new(Some(Vec::new())),
            unborn: Mutex::new(Some(unborn)),
            full_buffer: AtomicBool::new(false),
        }),
    )
}

/// Stores `entry` for `fd`'s inode.
fn put(fd: RawFd, entry: Arc<SocketEntry>) -> Result<()> {
    let ino = socket_ino(fd)?.ok_or(Errno(libc::ENOTSOCK))?;
    let mut guard = lock_table();
    let table = guard.get_or_insert_with(|| Table {
        by_ino: HashMap::new(),
        prune_at: PRUNE_MIN,
        unborn: 0,
    });
    if entry.is_unborn() {
        if table.unborn >= UNBORN_SWEEP {
            sweep_unborn(table);
        }
        table.unborn += 1;
    }
    if let Some(old) = table.by_ino.insert(ino, entry)
        && old.is_unborn()
    {
        table.unborn -= 1;
    }
    if table.by_ino.len() >= table.prune_at {
        prune(table);
    }
    Ok(())
}

/// Whether the unborn socket's program end is closed everywhere (its
/// daemon end reports POLLHUP); `false` while another thread holds it.
fn abandoned(entry: &SocketEntry) -> bool {
    let Ok(unborn) = entry.unborn.try_lock() else {
        return false;
    };
    unborn.as_ref().is_some_and(|u| {
        let mut p = libc::pollfd {
            fd: u.daemon_end.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLHUP != 0 }
    })
}

/// Drops the unborn entries whose program end is closed.
fn sweep_unborn(table: &mut Table) {
    table.by_ino.retain(|_, e| !(e.is_unborn() && abandoned(e)));
    table.unborn = table.by_ino.values().filter(|e| e.is_unborn()).count();
}

/// After `close(2)` of a descriptor of the unborn socket `entry` (inode
/// `ino`): forgets it, closing the pair's daemon end, if that was the last
/// copy of the program's end (the daemon end reports POLLHUP then).
pub fn closed(ino: u64, entry: &SocketEntry) {
    if abandoned(entry)
        && let Some(table) = lock_table().as_mut()
        && table
            .by_ino
            .get(&ino)
            .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), entry))
    {
        table.by_ino.remove(&ino);
        table.unborn -= 1;
    }
}

/// The inode of the socket `fd` (`EBADF` if not open, `ENOTSOCK`).
pub fn ino_of(fd: RawFd) -> Result<u64> {
    socket_ino(fd)?.ok_or(Errno(libc::ENOTSOCK))
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
    table.unborn = table.by_ino.values().filter(|e| e.is_unborn()).count();
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
