//! `tcpd_poll`: `poll(2)` itself.
//!
//! Every tcpd socket is a real descriptor whose readiness the kernel
//! reports (readable: data, EOF, an error, or on a listener a connection
//! to accept; writable: room in the socketpair, which a connecting socket
//! gets only once the connection is established), so tcpd sockets and
//! ordinary descriptors mix freely in `tcpd_poll`, `poll`, `select` and
//! `epoll`. The function stays for programs written against earlier
//! versions of the library.

use libc::{c_int, nfds_t, pollfd};

use crate::ffi::{Errno, Result, ffi_call};

/// # Safety
/// As [`tcpd_poll`].
unsafe fn poll_impl(fds: *mut pollfd, nfds: nfds_t, timeout_ms: c_int) -> Result<c_int> {
    // SAFETY: forwarded caller guarantee; the kernel checks the array.
    let n = unsafe { libc::poll(fds, nfds, timeout_ms) };
    if n < 0 {
        return Err(Errno::last_os_error());
    }
    Ok(n)
}

/// Waits for events on tcpd sockets and ordinary file descriptors in one
/// call: this is `poll(2)` (tcpd sockets are real descriptors). Returns the
/// number of entries with non-zero `revents`, 0 on timeout, -1 with errno
/// (`EFAULT`, `EINVAL`, `EINTR`) on error.
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
    fn null_array_is_efault_and_plain_fds_are_plain_poll() {
        // SAFETY: null with nfds > 0 is rejected by the kernel.
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
        ];
        // SAFETY: valid array of 2.
        let n = unsafe { tcpd_poll(fds.as_mut_ptr(), 2, 0) };
        assert_eq!(n, 1);
        assert_eq!(fds[1].revents, libc::POLLOUT);
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }
}
