//! The file-descriptor table: which program-visible fd numbers are tcpd
//! sockets, and what each one stands for in the daemon.
//!
//! Every tcpd socket is identified by a real fd the library keeps open (an
//! `eventfd`, never readable), so its number can never collide with a file,
//! pipe or kernel socket the program opens. The table maps that number to
//! the daemon handle and the fd's flags.
//!
//! Invariants:
//! - an fd is in the table exactly while its placeholder is open: the
//!   placeholder is owned by the entry and closes when the last reference
//!   to a removed entry drops (so a number cannot be reused while another
//!   thread is still inside a call on it);
//! - an entry belongs to the process that created it (`owner_pid`) and to
//!   the daemon connection it was created on (`session`); in a forked child,
//!   or after the connection to the daemon was lost and re-made (a new
//!   session, where the old handle numbers may name other sockets), the
//!   entry is an orphan: not a socket (`EBADF`, poll reports `POLLNVAL`),
//!   except that closing one releases the fd;
//! - the table lock is never held across a daemon call.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use crate::ffi::{Errno, Result};
use crate::session::{current_session, lock, lock_current};

/// One tcpd socket as the program sees it.
#[derive(Debug)]
pub struct SocketEntry {
    /// The daemon's handle, valid in the session of `owner_pid`.
    pub handle: u64,
    owner_pid: u32,
    /// The daemon connection the handle belongs to (see
    /// `session::current_session`).
    session: u64,
    /// Keeps the fd number reserved; closed when the entry drops (held for
    /// its `Drop`, read only by tests).
    #[allow(dead_code)]
    placeholder: OwnedFd,
    /// `O_NONBLOCK`: calls fail with `EAGAIN`/`EINPROGRESS` instead of waiting.
    nonblocking: AtomicBool,
    /// `FD_CLOEXEC` as the program set it (reported by `F_GETFD`; the
    /// placeholder itself is always close-on-exec because a daemon session
    /// cannot survive `exec`).
    cloexec: AtomicBool,
}

impl SocketEntry {
    /// Whether calls on this socket must not wait.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Sets or clears `O_NONBLOCK`.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// Whether the program asked for `FD_CLOEXEC`.
    pub fn cloexec(&self) -> bool {
        self.cloexec.load(Ordering::Relaxed)
    }

    /// Sets or clears the `FD_CLOEXEC` the program sees.
    pub fn set_cloexec(&self, on: bool) {
        self.cloexec.store(on, Ordering::Relaxed);
    }
}

type Table = BTreeMap<RawFd, Arc<SocketEntry>>;

static TABLE: Mutex<Table> = Mutex::new(BTreeMap::new());

fn lock_table() -> MutexGuard<'static, Table> {
    lock(&TABLE)
}

/// How an fd number relates to the library.
#[derive(Debug)]
pub enum Lookup {
    /// A tcpd socket of this process.
    Owned(Arc<SocketEntry>),
    /// A tcpd socket inherited from the parent across `fork()`, or created
    /// on an earlier connection to the daemon: unusable here.
    Orphaned,
    /// Not a tcpd socket (maybe an ordinary fd, maybe nothing).
    Unknown,
}

impl SocketEntry {
    /// Whether the handle is valid in the current daemon session of this
    /// process.
    fn is_current(&self) -> bool {
        self.owner_pid == std::process::id() && self.session == current_session()
    }
}

/// Classifies `fd`.
pub fn classify(fd: RawFd) -> Lookup {
    match lock_table().get(&fd) {
        None => Lookup::Unknown,
        Some(entry) if entry.is_current() => Lookup::Owned(Arc::clone(entry)),
        Some(_) => Lookup::Orphaned,
    }
}

/// The socket behind `fd`, or `EBADF` when `fd` is not a tcpd socket of
/// this process.
pub fn lookup(fd: RawFd) -> Result<Arc<SocketEntry>> {
    match classify(fd) {
        Lookup::Owned(entry) => Ok(entry),
        Lookup::Orphaned | Lookup::Unknown => Err(Errno(libc::EBADF)),
    }
}

/// Reserves a fresh fd number for a socket about to be created.
pub fn reserve_fd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; on success we own the new fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Publishes a socket under its placeholder's number and returns the number.
/// `session` is the daemon session that issued `handle`.
pub fn insert(
    placeholder: OwnedFd,
    handle: u64,
    session: u64,
    nonblocking: bool,
    cloexec: bool,
) -> RawFd {
    let fd = placeholder.as_raw_fd();
    let entry = Arc::new(SocketEntry {
        handle,
        owner_pid: std::process::id(),
        session,
        placeholder,
        nonblocking: AtomicBool::new(nonblocking),
        cloexec: AtomicBool::new(cloexec),
    });
    lock_table().insert(fd, entry);
    fd
}

/// Takes `fd` out of the table. The placeholder closes when the returned
/// entry (and any other thread's reference) drops.
pub fn remove(fd: RawFd) -> Lookup {
    match lock_table().remove(&fd) {
        None => Lookup::Unknown,
        Some(entry) if entry.is_current() => Lookup::Owned(entry),
        // Dropping the entry here closes the fd (in a forked child: its copy).
        Some(_) => Lookup::Orphaned,
    }
}

#[cfg(test)]
impl SocketEntry {
    /// The reserved fd number.
    pub fn fd(&self) -> RawFd {
        self.placeholder.as_raw_fd()
    }
}

thread_local! {
    /// Locks taken in the `fork()` prepare handler, released in the parent
    /// and child handlers (which run on the same thread).
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<ForkGuards>> =
        const { std::cell::RefCell::new(None) };
}

/// The library's two global locks, held across `fork()`.
struct ForkGuards {
    _current: MutexGuard<'static, Option<&'static crate::session::Process>>,
    _table: MutexGuard<'static, Table>,
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

    /// Inserts a socket with a made-up daemon handle, for tests that must
    /// not reach a daemon.
    pub(crate) fn fake_socket(handle: u64) -> RawFd {
        let placeholder = reserve_fd().unwrap();
        insert(placeholder, handle, current_session(), false, false)
    }

    #[test]
    fn insert_lookup_remove() {
        let fd = fake_socket(42);
        assert!(fd > 2);
        let entry = lookup(fd).unwrap();
        assert_eq!(entry.handle, 42);
        assert_eq!(entry.fd(), fd);
        assert!(!entry.nonblocking());
        entry.set_nonblocking(true);
        assert!(lookup(fd).unwrap().nonblocking());
        drop(entry);
        assert!(matches!(remove(fd), Lookup::Owned(_)));
        assert_eq!(lookup(fd).err(), Some(Errno(libc::EBADF)));
        assert!(matches!(remove(fd), Lookup::Unknown));
    }

    #[test]
    fn unknown_fds_are_ebadf() {
        assert_eq!(lookup(0).err(), Some(Errno(libc::EBADF)));
        assert_eq!(lookup(-1).err(), Some(Errno(libc::EBADF)));
    }
}
