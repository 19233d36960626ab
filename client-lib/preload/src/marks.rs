//! Which fd numbers are tcpd sockets, as far as the interposers care, and
//! the per-thread guard that keeps libtcpd's own libc calls out of them.
//!
//! Invariants:
//! - a set bit means "this number was handed to the program by libtcpd (or
//!   duplicated from one) and not closed since"; every interposer asks only
//!   this bitmap before deciding, so calls on ordinary fds cost one atomic
//!   load and never take a lock (close(2) and dup2(2) stay async-signal-safe
//!   for them);
//! - numbers at or above [`MAX_FDS`] are never tcpd sockets: a tcpd socket
//!   that would get one is closed and the call fails with `EMFILE`;
//! - while a thread is inside libtcpd ([`Inside`] alive) every interposer
//!   on that thread passes straight to the C library: libtcpd's own sockets
//!   (the Unix connection to the daemon) and its `close` of numbers it owns
//!   must never come back here.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fd numbers tracked: 2^20, Linux's default `fs.nr_open` (128 KiB of bits).
pub const MAX_FDS: usize = 1 << 20;

static BITS: [AtomicU64; MAX_FDS / 64] = [const { AtomicU64::new(0) }; MAX_FDS / 64];

fn slot(fd: libc::c_int) -> Option<(&'static AtomicU64, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FDS)?;
    Some((&BITS[fd / 64], 1u64 << (fd % 64)))
}

/// Whether `fd` is a tcpd socket of this process.
pub fn is_tcpd(fd: libc::c_int) -> bool {
    slot(fd).is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
}

/// Records `fd` as a tcpd socket; false when the number is out of range.
pub fn mark(fd: libc::c_int) -> bool {
    match slot(fd) {
        Some((word, bit)) => {
            word.fetch_or(bit, Ordering::AcqRel);
            true
        }
        None => false,
    }
}

/// Forgets `fd`; returns whether it was a tcpd socket (exactly one caller
/// gets `true` when threads race to close the same number).
pub fn unmark(fd: libc::c_int) -> bool {
    slot(fd).is_some_and(|(word, bit)| word.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
}

/// Numbers that were open when the library loaded as `AF_UNIX` stream
/// sockets with an unnamed peer: possibly tcpd sockets inherited across
/// `exec` (a tcpd socket's descriptor is such a socket; the new image's
/// libtcpd does not know it yet). The first control call on one resolves
/// it: libtcpd asks the daemon, and the number becomes a tcpd socket or an
/// ordinary fd for good.
static INHERITED: [AtomicU64; MAX_FDS / 64] = [const { AtomicU64::new(0) }; MAX_FDS / 64];

fn inherited_slot(fd: libc::c_int) -> Option<(&'static AtomicU64, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FDS)?;
    Some((&INHERITED[fd / 64], 1u64 << (fd % 64)))
}

/// Whether `fd` may be a tcpd socket inherited across `exec`, unresolved.
pub fn is_inherited(fd: libc::c_int) -> bool {
    inherited_slot(fd).is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
}

/// Records `fd` as possibly an inherited tcpd socket.
pub fn mark_inherited(fd: libc::c_int) {
    if let Some((word, bit)) = inherited_slot(fd) {
        word.fetch_or(bit, Ordering::AcqRel);
    }
}

/// Drops `fd` from the unresolved inherited numbers; true for exactly one
/// caller when threads race.
pub fn forget_inherited(fd: libc::c_int) -> bool {
    inherited_slot(fd).is_some_and(|(word, bit)| word.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
}

thread_local! {
    /// Set while this thread runs inside libtcpd.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside libtcpd (interposers must pass through).
pub fn inside() -> bool {
    INSIDE.with(Cell::get)
}

/// Marks this thread as inside libtcpd until dropped (nests).
#[derive(Debug)]
pub struct Inside {
    was: bool,
}

impl Inside {
    pub fn enter() -> Inside {
        Inside {
            was: INSIDE.with(|c| c.replace(true)),
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let was = self.was;
        INSIDE.with(|c| c.set(was));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_unmark() {
        assert!(!is_tcpd(1000));
        assert!(mark(1000));
        assert!(is_tcpd(1000));
        assert!(!is_tcpd(1001));
        assert!(unmark(1000));
        assert!(!unmark(1000), "only one unmark wins");
        assert!(!is_tcpd(1000));
        assert!(!mark(-1));
        assert!(!mark(MAX_FDS as libc::c_int));
        assert!(!is_tcpd(-5));
    }

    #[test]
    fn inherited_numbers_resolve_once() {
        assert!(!is_inherited(2000));
        mark_inherited(2000);
        assert!(is_inherited(2000));
        assert!(!is_tcpd(2000), "a separate set");
        assert!(forget_inherited(2000));
        assert!(!forget_inherited(2000), "only one resolver wins");
        mark_inherited(-1);
        assert!(!is_inherited(-1));
    }

    #[test]
    fn inside_nests() {
        assert!(!inside());
        {
            let _a = Inside::enter();
            assert!(inside());
            {
                let _b = Inside::enter();
                assert!(inside());
            }
            assert!(inside());
        }
        assert!(!inside());
    }
}
