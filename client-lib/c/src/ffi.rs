//! The boundary between C callers and Rust: errno values and the wrapper
//! every `extern "C"` function runs its body in.
//!
//! Invariants owned here:
//! - a failing call returns the function's failure value (`-1`) and sets
//!   `errno` exactly once, here; a succeeding call leaves `errno` untouched
//!   (POSIX allows either; untouched is what glibc does for sockets);
//! - no panic ever unwinds into C: [`ffi_call`] catches it and reports `EIO`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use libc::{c_int, ssize_t};

/// A Linux errno number describing why a call failed.
///
/// Internal code returns `Result<_, Errno>`; the number reaches the C
/// caller's `errno` only in [`ffi_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub c_int);

impl Errno {
    /// The daemon's answer for a failed RPC: the errno carried in the
    /// status's `google.rpc.ErrorInfo` (see `tcpd_proto::errno_status`).
    /// A failure reaching the daemon (no errno) is ECONNABORTED: the
    /// session is gone, which is not the peer resetting (ECONNRESET).
    pub fn from_status(status: &tonic::Status) -> Errno {
        Errno(tcpd_proto::status_errno(status).unwrap_or(libc::ECONNABORTED))
    }

    /// The OS error inside an `io::Error`, `fallback` when there is none.
    pub fn from_io(error: &std::io::Error, fallback: c_int) -> Errno {
        Errno(error.raw_os_error().unwrap_or(fallback))
    }

    /// The calling thread's current `errno` (after a failed libc call).
    pub fn last_os_error() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

thread_local! {
    /// The last failure to reach the daemon on this thread: its errno and
    /// a sentence naming the daemon's socket, for `tcpd_strerror`.
    static DAEMON_FAILURE: std::cell::RefCell<Option<(c_int, String)>> =
        const { std::cell::RefCell::new(None) };
    /// The text `tcpd_strerror` returned last on this thread.
    static STRERROR: std::cell::RefCell<std::ffi::CString> =
        std::cell::RefCell::new(std::ffi::CString::default());
}

/// Records why the daemon could not be reached (or was lost), so that
/// `tcpd_strerror(errno)` can name its socket.
pub fn note_daemon_failure(errno: Errno, what: String) {
    DAEMON_FAILURE.with(|f| *f.borrow_mut() = Some((errno.0, what)));
}

/// The text for `errnum`: the daemon failure noted on this thread with
/// that errno, else the C library's `strerror`.
pub fn describe(errnum: c_int) -> String {
    let noted = DAEMON_FAILURE.with(|f| {
        f.borrow()
            .as_ref()
            .filter(|(e, _)| *e == errnum)
            .map(|(_, what)| what.clone())
    });
    noted.unwrap_or_else(|| std::io::Error::from_raw_os_error(errnum).to_string())
}

/// `describe` as a C string owned by the thread (valid until its next call).
pub fn describe_c(errnum: c_int) -> *const libc::c_char {
    let text = describe(errnum).replace('\0', " ");
    STRERROR.with(|s| {
        *s.borrow_mut() = std::ffi::CString::new(text).unwrap_or_default();
        s.borrow().as_ptr()
    })
}

/// Result of every internal operation behind a C entry point.
pub type Result<T> = std::result::Result<T, Errno>;

/// Return types of C entry points: each has the value meaning "failed, see
/// errno".
pub trait FailureValue {
    /// `-1` for every socket call.
    const FAILURE: Self;
}

impl FailureValue for c_int {
    const FAILURE: Self = -1;
}

impl FailureValue for ssize_t {
    const FAILURE: Self = -1;
}

/// Sets the calling thread's `errno`.
pub fn set_errno(errno: Errno) {
    // SAFETY: __errno_location always returns a valid pointer to the
    // calling thread's errno.
    unsafe { *libc::__errno_location() = errno.0 };
}

/// Runs the body of a C entry point: `Ok(v)` returns `v`; `Err(e)` sets
/// `errno = e` and returns `-1`; a panic is caught (it must never unwind into
/// C) and reported as `EIO`.
pub fn ffi_call<R: FailureValue>(body: impl FnOnce() -> Result<R>) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(errno)) => {
            set_errno(errno);
            R::FAILURE
        }
        Err(_panic) => {
            set_errno(Errno(libc::EIO));
            R::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> c_int {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn ok_passes_the_value_through() {
        set_errno(Errno(0));
        assert_eq!(ffi_call(|| Ok::<c_int, Errno>(7)), 7);
        assert_eq!(errno(), 0, "success leaves errno alone");
    }

    #[test]
    fn err_sets_errno_and_returns_minus_one() {
        let r: ssize_t = ffi_call(|| Err(Errno(libc::EAGAIN)));
        assert_eq!(r, -1);
        assert_eq!(errno(), libc::EAGAIN);
    }

    #[test]
    fn panic_becomes_eio() {
        let r: c_int = ffi_call(|| panic!("boom"));
        assert_eq!(r, -1);
        assert_eq!(errno(), libc::EIO);
    }
}
