//! Where a session's I/O runs: the caller's runtime, or the library's own.
//!
//! A [`Client`](crate::Client) opened with `Client::connect` from inside a
//! tokio runtime lives on that runtime ([`Home::Caller`]): its HTTP/2
//! connection, the Stream RPCs behind its `TcpStream`s and their background
//! close run there, with no hop to another thread pool — like
//! `tokio::net`'s sockets, it stops working when that runtime shuts down.
//!
//! Everything else runs on one small multi-threaded runtime owned by this
//! module ([`Home::Library`], threads `tcpd-client-io`): sessions opened
//! outside any runtime (the [`blocking`](crate::blocking) API), and the
//! process-wide default session of the free constructors (`Client::shared`,
//! which must outlive any one runtime: every `#[tokio::test]` has its own).
//! No user code runs on it, so blocking a caller's thread in [`block_on`]
//! cannot starve the tasks it waits for.

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

std::thread_local! {
    /// Set while [`block_on`] polls a future on this thread: the runtime
    /// entered there is the library's, not the caller's.
    static IN_BLOCK_ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Where a session's tasks run.
#[derive(Debug, Clone)]
pub(crate) enum Home {
    /// The library's runtime.
    Library,
    /// The runtime the session was opened on.
    Caller(Handle),
}

impl Home {
    /// The caller's runtime when there is one (and it is not the library's,
    /// entered by [`block_on`]), else the library's.
    pub(crate) fn current() -> Home {
        if IN_BLOCK_ON.with(std::cell::Cell::get)
            || std::thread::current().name() == Some(THREAD_NAME)
        {
            return Home::Library;
        }
        match Handle::try_current() {
            Ok(handle) => Home::Caller(handle),
            Err(_) => Home::Library,
        }
    }

    /// Spawns `future` at home.
    pub(crate) fn spawn<F>(&self, future: F) -> io::Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Home::Library => spawn(future),
            Home::Caller(handle) => Ok(handle.spawn(future)),
        }
    }

    /// Runs `future` at home and waits for it from any executor.
    pub(crate) async fn run<F>(&self, future: F) -> io::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(future)?.await.map_err(join_error)
    }
}

fn join_error(join: tokio::task::JoinError) -> io::Error {
    if join.is_panic() {
        io::Error::other("tcpd-client: background task panicked")
    } else {
        io::Error::from_raw_os_error(tcpd_proto::errno::ECANCELED)
    }
}

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

/// Blocks the calling thread until `future` completes.
///
/// Works outside any runtime and inside one (it never calls tokio's
/// `block_on`, which panics there): the future is polled on this thread with
/// the I/O runtime entered, so timers and spawns inside it find a runtime,
/// while the actual I/O it waits for is driven by the I/O runtime's threads.
/// Called from async code it blocks that executor thread like any
/// `std::net` call would; on a multi-threaded runtime's worker it first
/// hands that worker's other tasks to another thread
/// (`tokio::task::block_in_place`), so a session living on that runtime
/// keeps running. (A session living on a *current-thread* runtime cannot
/// serve a blocking call made on that runtime's own thread: use the async
/// API there, or a session opened outside it.)
pub(crate) fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let poll_here = || {
        let _context = handle()?.enter();
        let was = IN_BLOCK_ON.with(|f| f.replace(true));
        let out = futures::executor::block_on(future);
        IN_BLOCK_ON.with(|f| f.set(was));
        Ok(out)
    };
    match Handle::try_current() {
        Ok(h)
            if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                && !IN_BLOCK_ON.with(std::cell::Cell::get)
                && std::thread::current().name() != Some(THREAD_NAME) =>
        {
            tokio::task::block_in_place(poll_here)
        }
        _ => poll_here(),
    }
}
