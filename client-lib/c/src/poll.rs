//! `tcpd_poll`: one `poll(2)` over tcpd sockets and ordinary fds together.
//!
//! The entries are split: tcpd sockets go to the daemon's Poll RPC, ordinary
//! fds to the kernel's `poll(2)` together with an internal wake-up eventfd.
//! The RPC runs as a task on the library's runtime; when it answers it
//! writes the eventfd, which ends the kernel poll. If an ordinary fd is
//! ready first, the RPC task is aborted (dropping the call cancels it in the
//! daemon) and the tcpd sockets are sampled once with a zero timeout, so the
//! result reports everything ready at return, as `poll(2)` does.
//!
//! The proto's PollEvent bits are the Linux `POLL*` values, so translation
//! is a matter of masking: readiness is reported only for requested events,
//! `POLLERR`, `POLLHUP` and `POLLNVAL` always.
//!
//! Timeouts follow `poll(2)`: negative waits forever, 0 samples. `EINTR`
//! from the inner kernel poll is retried with the remaining time when tcpd
//! sockets are involved; a call with no tcpd socket *is* `poll(2)`, EINTR
//! included.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libc::{c_int, nfds_t, pollfd};
use tcpd_proto::types::PollFlags;
use tcpd_proto::v2::{PollEntry, PollRequest, PollResponse as PollReply};

use crate::fdtable::{self, Lookup};
use crate::ffi::{Errno, Result, ffi_call};
use crate::session::{Process, process};

/// Events a caller may ask of a tcpd socket, and what the daemon is asked.
const READ_EVENTS: i16 = libc::POLLIN | libc::POLLRDNORM;
const WRITE_EVENTS: i16 = libc::POLLOUT | libc::POLLWRNORM;

/// The daemon's event bits for a caller's `events`.
pub fn request_bits(events: i16) -> u32 {
    let mut bits = PollFlags::empty();
    bits.set(PollFlags::IN, events & READ_EVENTS != 0);
    bits.set(PollFlags::OUT, events & WRITE_EVENTS != 0);
    bits.set(PollFlags::RDHUP, events & libc::POLLRDHUP != 0);
    bits.bits()
}

/// The caller's `revents` for the daemon's ready bits and the requested
/// `events`: ERR, HUP and NVAL always (poll(2)), the rest as requested.
pub fn reply_revents(ready: u32, events: i16) -> i16 {
    let ready = PollFlags::from_bits_retain(ready);
    // The bits are Linux's poll values: the low 16 fit the C `short`.
    let mut revents = (ready & PollFlags::ALWAYS).bits() as i16;
    if ready.contains(PollFlags::IN) {
        revents |= events & READ_EVENTS;
    }
    if ready.contains(PollFlags::OUT) {
        revents |= events & WRITE_EVENTS;
    }
    if ready.contains(PollFlags::RDHUP) {
        revents |= events & libc::POLLRDHUP;
    }
    revents
}

/// Where one caller entry is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Negative fd: ignored, revents 0 (poll(2)).
    Ignored,
    /// A tcpd socket: index into the RPC's entries.
    Daemon(usize),
    /// An ordinary fd: index into the kernel pollfd array.
    Kernel(usize),
    /// A tcpd socket inherited across fork: POLLNVAL.
    Invalid,
}

/// A deadline for `timeout_ms` (negative: none).
fn deadline(timeout_ms: c_int) -> Option<Instant> {
    u64::try_from(timeout_ms)
        .ok()
        .map(|ms| Instant::now() + Duration::from_millis(ms))
}

/// Milliseconds left until `deadline`, rounded up, as a poll timeout.
fn remaining_ms(deadline: Option<Instant>) -> c_int {
    match deadline {
        None => -1,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000);
            c_int::try_from(ms).unwrap_or(c_int::MAX)
        }
    }
}

/// `poll(2)` on the kernel fds, retrying EINTR until `deadline`.
fn kernel_poll(fds: &mut [pollfd], deadline: Option<Instant>) -> Result<c_int> {
    loop {
        let timeout = remaining_ms(deadline);
        // SAFETY: fds is a valid, exclusively borrowed array of its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as nfds_t, timeout) };
        if n >= 0 {
            return Ok(n);
        }
        let errno = Errno::last_os_error();
        if errno.0 != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Runs the Poll RPC and waits for it on this thread.
fn daemon_poll_now(
    state: &Process,
    entries: Vec<PollEntry>,
    timeout_ms: c_int,
) -> Result<PollReply> {
    let mut client = state.client()?;
    let request = PollRequest {
        entries,
        timeout_ms: timeout_ms.max(-1),
    };
    state
        .block_on(async move { client.poll(request).await })
        .map(tonic::Response::into_inner)
        .map_err(|status| Errno::from_status(&status))
}

/// A fresh non-blocking eventfd the RPC task writes when it is done.
fn wake_fd() -> Result<Arc<OwnedFd>> {
    // SAFETY: plain syscall; on success we own the fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Waits for the daemon's sockets and the kernel's fds at once; returns the
/// daemon's reply (if it has one) and leaves kernel results in `kernel`.
fn poll_both(
    state: &Process,
    entries: Vec<PollEntry>,
    kernel: &mut Vec<pollfd>,
    timeout_ms: c_int,
) -> Result<PollReply> {
    let mut client = state.client()?;
    let wake = wake_fd()?;
    let (tx, rx) = mpsc::channel();
    let request = PollRequest {
        entries: entries.clone(),
        timeout_ms: timeout_ms.max(-1),
    };
    let task_wake = Arc::clone(&wake);
    let task = state.spawn(async move {
        let result = client.poll(request).await;
        // The receiver may be gone (the caller returned): nothing to do then.
        let _ = tx.send(result);
        let one: u64 = 1;
        // SAFETY: the task owns a reference to the eventfd, so the fd is
        // open; writing 8 bytes from a local u64 is what eventfd expects.
        unsafe { libc::write(task_wake.as_raw_fd(), (&raw const one).cast(), 8) };
    });
    kernel.push(pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let outcome = kernel_poll(kernel, deadline(timeout_ms));
    let woke = kernel.pop().is_some_and(|w| w.revents & libc::POLLIN != 0);
    let finished = if woke {
        rx.recv().ok()
    } else {
        rx.try_recv().ok()
    };
    if finished.is_none() {
        // Cancels the RPC: dropping the in-flight call resets its stream.
        task.abort();
    }
    outcome?;
    match finished {
        Some(result) => result
            .map(tonic::Response::into_inner)
            .map_err(|status| Errno::from_status(&status)),
        // A kernel fd won (or the time ran out first): sample the tcpd
        // sockets so the result is complete.
        None => daemon_poll_now(state, entries, 0),
    }
}

/// # Safety
/// As [`tcpd_poll`].
unsafe fn poll_impl(fds: *mut pollfd, nfds: nfds_t, timeout_ms: c_int) -> Result<c_int> {
    if nfds == 0 || fds.is_null() {
        if nfds != 0 {
            return Err(Errno(libc::EFAULT));
        }
        // No entries: a plain sleep, exactly poll(2).
        // SAFETY: poll accepts a null array with nfds == 0.
        let n = unsafe { libc::poll(fds, 0, timeout_ms) };
        return if n < 0 {
            Err(Errno::last_os_error())
        } else {
            Ok(n)
        };
    }
    // poll(2): more entries than RLIMIT_NOFILE is EINVAL.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local struct.
    let have_limit = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if have_limit && nfds > limit.rlim_cur {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: fds is non-null and, per the caller, valid for nfds entries.
    let user = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };

    let mut routes = Vec::with_capacity(user.len());
    let mut daemon_entries = Vec::new();
    let mut kernel = Vec::new();
    for pfd in user.iter() {
        let route = if pfd.fd < 0 {
            Route::Ignored
        } else {
            match fdtable::classify(pfd.fd) {
                Lookup::Owned(entry) => {
                    daemon_entries.push(PollEntry {
                        handle: entry.handle,
                        events: request_bits(pfd.events),
                    });
                    Route::Daemon(daemon_entries.len() - 1)
                }
                Lookup::Orphaned => Route::Invalid,
                Lookup::Unknown => {
                    kernel.push(pollfd {
                        fd: pfd.fd,
                        events: pfd.events,
                        revents: 0,
                    });
                    Route::Kernel(kernel.len() - 1)
                }
            }
        };
        routes.push(route);
    }

    let has_invalid = routes.contains(&Route::Invalid);
    if daemon_entries.is_empty() && !has_invalid {
        // Only ordinary fds: this is poll(2) itself.
        // SAFETY: the caller's array, valid for nfds entries.
        let n = unsafe { libc::poll(fds, nfds, timeout_ms) };
        return if n < 0 {
            Err(Errno::last_os_error())
        } else {
            Ok(n)
        };
    }
    // An invalid entry is an immediate result: poll returns at once.
    let timeout_ms = if has_invalid { 0 } else { timeout_ms };

    let reply = if daemon_entries.is_empty() {
        kernel_poll(&mut kernel, deadline(timeout_ms))?;
        PollReply::default()
    } else {
        let state = process()?;
        if kernel.is_empty() {
            daemon_poll_now(state, daemon_entries.clone(), timeout_ms)?
        } else {
            poll_both(state, daemon_entries.clone(), &mut kernel, timeout_ms)?
        }
    };
    if reply.entries.len() != daemon_entries.len() && !daemon_entries.is_empty() {
        // The proto promises one reply entry per request entry.
        return Err(Errno(libc::EIO));
    }

    let mut ready = 0;
    for (pfd, route) in user.iter_mut().zip(routes) {
        pfd.revents = match route {
            Route::Ignored => 0,
            Route::Invalid => libc::POLLNVAL,
            Route::Kernel(i) => kernel[i].revents,
            Route::Daemon(i) => reply_revents(reply.entries[i].events, pfd.events),
        };
        if pfd.revents != 0 {
            ready += 1;
        }
    }
    Ok(ready)
}

/// Waits for events on tcpd sockets and ordinary file descriptors in one
/// call, as `poll(2)`: returns the number of entries with non-zero
/// `revents`, 0 on timeout, -1 with errno on error (`EFAULT` for a null
/// array with `nfds > 0`, `EINVAL` for `nfds` above `RLIMIT_NOFILE`, or a
/// daemon errno). A negative `timeout` waits forever.
///
/// # Safety
/// `fds` must be null (with `nfds == 0`) or valid for `nfds` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpd_poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: forwarded caller guarantee.
    ffi_call(|| unsafe { poll_impl(fds, nfds, timeout) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bits_round_trip() {
        assert_eq!(request_bits(libc::POLLIN), 1);
        assert_eq!(request_bits(libc::POLLOUT | libc::POLLRDHUP), 4 | 0x2000);
        assert_eq!(request_bits(libc::POLLRDNORM), 1);
        // Only requested readiness is reported; ERR/HUP/NVAL always.
        assert_eq!(reply_revents(1 | 4, libc::POLLIN), libc::POLLIN);
        assert_eq!(reply_revents(8 | 16, 0), libc::POLLERR | libc::POLLHUP);
        assert_eq!(reply_revents(32, libc::POLLIN), libc::POLLNVAL);
        assert_eq!(
            reply_revents(0x2000 | 1, libc::POLLIN | libc::POLLRDHUP),
            libc::POLLIN | libc::POLLRDHUP
        );
    }

    #[test]
    fn null_array_is_efault_and_plain_fds_are_plain_poll() {
        // SAFETY: null with nfds > 0 is rejected before any access.
        assert_eq!(unsafe { tcpd_poll(std::ptr::null_mut(), 1, 0) }, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EFAULT)
        );

        let mut pipe = [0 as c_int; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let mut fds = [
            pollfd {
                fd: pipe[0],
                events: libc::POLLIN,
                revents: 0,
            },
            pollfd {
                fd: pipe[1],
                events: libc::POLLOUT,
                revents: 0,
            },
            pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0x7f,
            },
        ];
        // SAFETY: valid array of 3.
        let n = unsafe { tcpd_poll(fds.as_mut_ptr(), 3, 0) };
        assert_eq!(n, 1);
        assert_eq!(fds[0].revents, 0);
        assert_eq!(fds[1].revents, libc::POLLOUT);
        assert_eq!(fds[2].revents, 0);
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }

    #[test]
    fn more_entries_than_rlimit_nofile_is_einval() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the local struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let mut one = [pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }];
        // SAFETY: the count is rejected before the array is read.
        let n = unsafe { tcpd_poll(one.as_mut_ptr(), limit.rlim_cur + 1, 0) };
        assert_eq!(n, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn remaining_time_rounds_up() {
        assert_eq!(remaining_ms(None), -1);
        let soon = Instant::now() + Duration::from_micros(1500);
        assert!((1..=2).contains(&remaining_ms(Some(soon))));
        assert_eq!(remaining_ms(Some(Instant::now())), 0);
    }
}
