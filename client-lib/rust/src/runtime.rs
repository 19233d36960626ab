//! The library's own I/O runtime.
//!
//! Every session's HTTP/2 connection, the Stream RPCs behind `TcpStream`s and
//! the background `Close` calls of dropped sockets run on one small
//! multi-threaded tokio runtime owned by this module, never on the caller's
//! runtime. That is what lets
//! - a [`Client`](crate::Client) outlive the runtime it was created on (the
//!   process-wide default client is shared by every `#[tokio::test]`),
//! - `Drop` always have somewhere to send `Close`,
//! - the [`blocking`](crate::blocking) API work with no runtime at all, or from
//!   inside one, without tokio's "runtime within a runtime" panic.
//!
//! Invariant: no user code ever runs on this runtime, so blocking a caller's
//! thread in [`block_on`] can never starve the tasks it waits for.

use std::future::Future;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Name of the runtime's worker threads (visible in `top -H`, debuggers).
const THREAD_NAME: &str = "tcpd-client-io";

/// Upper bound on worker threads: the work is moving bytes between channels
/// and one Unix socket per session, which two threads keep up with.
const MAX_WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The I/O runtime's handle, created on first use.
///
/// Fails only if the OS refuses to create the worker threads.
pub(crate) fn handle() -> io::Result<&'static Handle> {
    let runtime = RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_WORKERS);
        Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match runtime {
        Ok(rt) => Ok(rt.handle()),
        Err(msg) => Err(io::Error::other(format!(
            "tcpd-client: cannot start its I/O runtime: {msg}"
        ))),
    }
}

/// Spawns `future` on the I/O runtime.
pub(crate) fn spawn<F>(future: F) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(handle()?.spawn(future))
}

/// Runs `future` on the I/O runtime and waits for its output from any
/// executor (or none).
pub(crate) async fn run<F>(future: F) -> io::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn(future)?.await.map_err(|join| {
        if join.is_panic() {
            io::Error::other("tcpd-client: background task panicked")
        } else {
            io::Error::from_raw_os_error(tcpd_proto::errno::ECANCELED)
        }
    })
}

/// Blocks the calling thread until `future` completes.
///
/// Works outside any runtime and inside one (it never calls tokio's
/// `block_on`, which panics there): the future is polled on this thread with
/// the I/O runtime entered, so timers and spawns inside it find a runtime,
/// while the actual I/O it waits for is driven by the I/O runtime's threads.
/// Called from async code it blocks that executor thread like any
/// `std::net` call would.
pub(crate) fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let _context = handle()?.enter();
    Ok(futures::executor::block_on(future))
}
