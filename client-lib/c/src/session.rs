//! The library's connection to the daemon: one tokio runtime and one gRPC
//! session per process, started on first use.
//!
//! Invariants:
//! - [`process`] returns the state created by *this* process. After `fork()`
//!   the child sees a different pid, abandons (leaks, never drops) the
//!   parent's state — its runtime threads do not exist in the child, so
//!   dropping it could wait forever — and starts a fresh runtime and, on the
//!   next call that needs the daemon, a fresh session.
//! - Every blocking C call waits on its own thread (`Runtime::block_on` on a
//!   multi-thread runtime runs the future on the caller's thread while the
//!   worker drives I/O), so calls from several C threads wait independently.
//! - The runtime's threads block all asynchronous signals: a C program's
//!   signal handlers run on its own threads, and writing to the daemon's
//!   Unix socket after the daemon died raises no `SIGPIPE` in the program.
//! - A failed session start is not remembered: the next call tries again.
//! - Every connection made to the daemon is a new session (the daemon
//!   closed the old one's sockets). tonic re-connects lazily after a lost
//!   connection, so [`current_session`] counts connections: handles
//!   obtained on an earlier one must not be used on the new one, where the
//!   same numbers may name other sockets. The connection itself is
//!   tcpd-client's (`connect_channel_with`, same HTTP/2 settings as the
//!   Rust client); this module only counts it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tcpd_client::transport::connect_channel_with;
use tcpd_proto::v2::socket_service_client::SocketServiceClient as SocketClient;
use tonic::transport::Channel;

use crate::ffi::{Errno, Result};

/// Per-process library state.
#[derive(Debug)]
pub struct Process {
    /// The pid that created this state; a different `getpid()` means we are
    /// in a forked child.
    pid: u32,
    runtime: tokio::runtime::Runtime,
    /// The session, once connected.
    client: Mutex<Option<SocketClient<Channel>>>,
}

/// Number of connections made to the daemon so far (by this process or,
/// before a fork, its parent): identifies the current session.
static SESSION: AtomicU64 = AtomicU64::new(0);

/// The current daemon session; handles are valid only in the session that
/// issued them.
pub fn current_session() -> u64 {
    SESSION.load(Ordering::SeqCst)
}

/// The current process's state; replaced (the old one leaked) after fork.
static CURRENT: Mutex<Option<&'static Process>> = Mutex::new(None);

/// Locks a mutex, ignoring poisoning: every critical section in this crate
/// leaves the data consistent, and a panic is already reported as `EIO`.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks [`CURRENT`]; exposed for the fork handlers in `fdtable`.
pub(crate) fn lock_current() -> MutexGuard<'static, Option<&'static Process>> {
    lock(&CURRENT)
}

/// This process's state, creating it (runtime only; the session starts
/// lazily in [`Process::client`]) on first use or after a fork.
pub fn process() -> Result<&'static Process> {
    crate::fdtable::install_fork_handlers();
    let pid = std::process::id();
    let mut current = lock_current();
    if let Some(state) = *current
        && state.pid == pid
    {
        return Ok(state);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tcpd-runtime")
        .on_thread_start(block_async_signals)
        .enable_all()
        .build()
        .map_err(|e| Errno::from_io(&e, libc::ENOMEM))?;
    let state: &'static Process = Box::leak(Box::new(Process {
        pid,
        runtime,
        client: Mutex::new(None),
    }));
    *current = Some(state);
    Ok(state)
}

/// Blocks every signal except the synchronous fault signals on the calling
/// (runtime) thread.
fn block_async_signals() {
    // SAFETY: plain libc calls on a local, initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for fault in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut set, fault);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Process {
    /// The session's client, connecting to `$TCPD_SOCKET` (default
    /// `/run/tcpd/tcpd.sock`) on first use. A daemon that is not there fails
    /// with the Unix `connect(2)` errno: `ENOENT` (no socket file),
    /// `ECONNREFUSED` (nobody listening), `EACCES`.
    pub fn client(&self) -> Result<SocketClient<Channel>> {
        let mut slot = lock(&self.client);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let path = tcpd_proto::socket_path_from_env();
        // A new connection is a new session: sockets of the old one are
        // gone in the daemon.
        let count_session = || {
            SESSION.fetch_add(1, Ordering::SeqCst);
        };
        let channel = self
            .runtime
            .block_on(connect_channel_with(path, count_session))
            .map_err(|e| Errno::from_io(&e, libc::ECONNREFUSED))?;
        let client = SocketClient::new(channel);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Waits for `future` on the calling thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `future` on the runtime's worker, independent of the caller.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }
}

/// Runs one unary RPC for a C call and waits for it: `call` gets a clone of
/// the session's client; a failed status becomes the errno it carries.
pub fn rpc<T, F, Fut>(call: F) -> Result<T>
where
    F: FnOnce(SocketClient<Channel>) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    rpc_in_session(call).map(|(reply, _session)| reply)
}

/// As [`rpc`], also returning the session that answered, for replies that
/// carry a new handle. The session is read when the reply is in: a lost
/// connection is re-made by the next request, so a change during the call
/// means this call (or a concurrent one) opened the new session and the
/// reply came from it. (The one case this misjudges needs the connection
/// to die between this reply and another thread's request; the handle is
/// dead then anyway.)
pub fn rpc_in_session<T, F, Fut>(call: F) -> Result<(T, u64)>
where
    F: FnOnce(SocketClient<Channel>) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    let state = process()?;
    let client = state.client()?;
    let reply = state
        .block_on(call(client))
        .map(tonic::Response::into_inner)
        .map_err(|status| Errno::from_status(&status))?;
    Ok((reply, current_session()))
}
