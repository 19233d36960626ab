//! Where a session's I/O runs: the caller's runtime, or the library's own.
//!
//! A [`Client`](crate::Client) opened from inside a tokio runtime — with
//! `Client::connect`, or the default session the free constructors
//! (`TcpStream::connect`, `TcpListener::bind`) use there — lives on that
//! runtime ([`Home::Caller`]): its HTTP/2 connection, the Stream RPCs behind
//! its `TcpStream`s and their background close run there, with no hop to
//! another thread — like `tokio::net`'s sockets, it stops working when that
//! runtime shuts down.
//!
//! That holds for current-thread runtimes too (`#[tokio::main(flavor =
//! "current_thread")]`, `#[tokio::test]`): a call's request, the daemon's
//! answer and the task that waits for it are all on the one thread, so a
//! call costs no hand-over to another thread of this process and no
//! wake-up of one (two per unary call with the library's runtime on the
//! same CPU, e2e/BENCHMARKS.md "Round 7"). `TCPD_CLIENT_RUNTIME=library`
//! ([`CLIENT_RUNTIME_ENV`]) puts a current-thread runtime's default
//! session on the library's runtime instead, as before round 7 (an A/B
//! switch, and a way out for programs that stop driving their
//! current-thread runtime, while holding sockets, for longer than the
//! daemon's HTTP/2 keep-alive interval plus its timeout (`--keepalive-ms`
//! and `--keepalive-timeout-ms`, 80 s together by default), after which
//! the daemon drops the silent session: like
//! `tokio::net`'s, a session on such a runtime makes progress only while
//! the runtime runs).
//!
//! Everything else runs on one small multi-threaded runtime owned by this
//! module ([`Home::Library`], threads `tcpd-client-io`): sessions opened
//! outside any runtime, in particular by the [`blocking`](crate::blocking)
//! API, and sockets whose synchronous calls must wait for the daemon before
//! any runtime could run their I/O ([`TcpSocket`](crate::TcpSocket)'s
//! `bind`/`listen`/getters). No user code runs on it, so blocking a
//! caller's thread in [`block_on`] cannot starve the tasks it waits for;
//! the library's threads start only when such a session is first used.
//!
//! One case cannot work: a blocking call ([`block_on_at`]) on the thread of
//! a current-thread runtime, for a session living on that runtime — the
//! runtime cannot run the session's I/O while its only thread waits. It
//! fails at once with `ErrorKind::Deadlock` and a message saying so,
//! instead of hanging.

use std::future::Future;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

use crate::busy_poll;

/// Name of the runtime's worker threads (visible in `top -H`, debuggers).
const THREAD_NAME: &str = "tcpd-client-io";

/// Upper bound on worker threads: the work is moving bytes between channels
/// and one Unix socket per session, which two threads keep up with.
const MAX_WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The environment variable that chooses where a current-thread runtime's
/// default session lives: `library` = on the library's runtime (threads
/// `tcpd-client-io`, the behaviour before round 7); anything else or unset
/// = on the runtime itself. Read once.
pub const CLIENT_RUNTIME_ENV: &str = "TCPD_CLIENT_RUNTIME";

/// Whether a current-thread runtime's default session lives on that
/// runtime (see [`CLIENT_RUNTIME_ENV`]).
pub(crate) fn current_thread_default_at_home() -> bool {
    static AT_HOME: OnceLock<bool> = OnceLock::new();
    *AT_HOME
        .get_or_init(|| std::env::var(CLIENT_RUNTIME_ENV).map_or(true, |v| v.trim() != "library"))
}

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
    Caller {
        handle: Handle,
        /// For a current-thread runtime, the thread that was running it
        /// when the session was opened (the one that must not block on it).
        driver: Option<std::thread::ThreadId>,
    },
}

/// Why a blocking call on a current-thread runtime's own session fails.
const DEADLOCK: &str = "tcpd-client: this blocking call would wait forever: its session \
lives on the current-thread tokio runtime this thread runs, which cannot run the session's \
I/O while the thread waits. Use the async API on that runtime, a session opened outside it \
(tcpd_client::blocking::shared_client()), spawn_blocking, or a multi-threaded runtime";

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
            Ok(handle) => {
                let driver = (handle.runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::CurrentThread)
                    .then(|| std::thread::current().id());
                Home::Caller { handle, driver }
            }
            Err(_) => Home::Library,
        }
    }

    /// The runtime this session lives on is the one this code runs in.
    fn is_current(&self) -> bool {
        match self {
            Home::Library => false,
            Home::Caller { handle, .. } => {
                !IN_BLOCK_ON.with(std::cell::Cell::get)
                    && Handle::try_current().is_ok_and(|current| current.id() == handle.id())
            }
        }
    }

    /// The session's I/O runs on the thread that waits for its answers: a
    /// current-thread runtime's session, waited for on that runtime (its
    /// busy-poll starves no other thread of this process; see `busy_poll`).
    pub(crate) fn is_current_thread_caller(&self) -> bool {
        matches!(
            self,
            Home::Caller {
                driver: Some(_),
                ..
            }
        )
    }

    /// Blocking this thread until the session answers would stop the
    /// session's own runtime (see the module docs).
    fn blocking_here_deadlocks(&self) -> bool {
        matches!(self, Home::Caller { driver: Some(thread), .. } if *thread == std::thread::current().id())
    }

    /// Spawns `future` at home.
    pub(crate) fn spawn<F>(&self, future: F) -> io::Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Home::Library => spawn(future),
            Home::Caller { handle, .. } => Ok(handle.spawn(future)),
        }
    }

    /// Runs `future` at home and waits for it from any executor: in place
    /// when this code already runs there (no task hop), else as a task
    /// there.
    pub(crate) async fn run<F>(&self, future: F) -> io::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.is_current() {
            return Ok(future.await);
        }
        self.spawn(future)?.await.map_err(join_error)
    }

    /// As [`Home::run`] for a future that waits for the daemon's answer:
    /// busy-polls for it as `policy` says (see `busy_poll`) — at home,
    /// and, after a hop to another runtime, on the waiting side too (so
    /// neither thread sleeps through the answer).
    pub(crate) async fn run_answer<F>(
        &self,
        policy: busy_poll::Policy,
        future: F,
    ) -> io::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.is_current() {
            return Ok(busy_poll::spin(policy, future).await);
        }
        let task = self.spawn(busy_poll::spin(policy, future))?;
        busy_poll::spin(policy, task).await.map_err(join_error)
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

/// [`block_on`] for a call served by a session living at `home`: fails
/// with `ErrorKind::Deadlock` instead of hanging when this thread runs the
/// current-thread runtime the session lives on (see the module docs).
pub(crate) fn block_on_at<F: Future>(home: &Home, future: F) -> io::Result<F::Output> {
    if home.blocking_here_deadlocks() {
        return Err(io::Error::new(io::ErrorKind::Deadlock, DEADLOCK));
    }
    block_on(future)
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
/// serve a blocking call made on that runtime's own thread: callers that
/// know the session use [`block_on_at`], which says so.)
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
