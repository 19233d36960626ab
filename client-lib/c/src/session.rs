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
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tcpd_client::transport::connect_channel_with;
use tcpd_proto::fd_channel::{REQUEST_LEN, RESPONSE_LEN, Request, Response};
use tcpd_proto::v2::OpenFdChannelRequest;
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
    /// The fd channel, once opened, with the session it is bound to.
    fd_channel: Mutex<Option<(u64, UnixStream)>>,
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
        fd_channel: Mutex::new(None),
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
            .block_on(connect_channel_with(&path, count_session))
            .map_err(|e| {
                let errno = Errno::from_io(&e, libc::ECONNREFUSED);
                crate::ffi::note_daemon_failure(
                    errno,
                    format!(
                        "cannot reach the tcpd daemon at {path}: {e} \
                         (is tcpd running? TCPD_SOCKET names its socket)"
                    ),
                );
                errno
            })?;
        let client = SocketClient::new(channel);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Waits for `future` on the calling thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
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

/// What one fd-channel request returned: the response's handle and the
/// descriptor it carried, and the session the channel acts for.
#[derive(Debug)]
pub struct FdReply {
    pub handle: u64,
    pub fd: Option<OwnedFd>,
    pub session: u64,
}

/// Runs one request on the process's fd channel (opening it, bound to the
/// current session, on first use or after the session changed). `payload`
/// follows the request (a `Connect`'s); `send` rides along with it
/// (`SCM_RIGHTS`: a claim's descriptor, a client-made pair). A failed
/// request is its errno; a response that carries both an errno and a
/// handle (a `Connect` that made its socket and then failed) is `Ok` here:
/// see [`fd_request_outcome`].
pub fn fd_request(request: Request, payload: &[u8], send: &[RawFd]) -> Result<FdReply> {
    let (reply, errno) = fd_request_outcome(request, payload, send)?;
    match errno {
        0 => Ok(reply),
        e => Err(Errno(e)),
    }
}

/// As [`fd_request`], with the response's errno beside its handle instead
/// of failing on it (`Err` only when the channel cannot be used).
pub fn fd_request_outcome(
    request: Request,
    payload: &[u8],
    send: &[RawFd],
) -> Result<(FdReply, i32)> {
    let state = process()?;
    // Make sure the gRPC session exists first (it issues the token).
    state.client()?;
    let mut slot = lock(&state.fd_channel);
    open_channel(&mut slot)?;
    let Some((session, stream)) = slot.as_ref() else {
        return Err(Errno(libc::EIO));
    };
    let session = *session;
    let result = exchange(stream, request, payload, send);
    if matches!(result, Err(Errno(libc::ECONNABORTED))) {
        // The channel broke (daemon gone): the next request opens a new one.
        *slot = None;
    }
    result.map(|((handle, fd), errno)| {
        (
            FdReply {
                handle,
                fd,
                session,
            },
            errno,
        )
    })
}

/// Opens the fd channel, bound to the current session, unless it is open
/// for it already.
fn open_channel(slot: &mut Option<(u64, UnixStream)>) -> Result<()> {
    let session = current_session();
    if slot.as_ref().is_some_and(|(s, _)| *s == session) {
        return Ok(());
    }
    *slot = None;
    let (reply, session) =
        rpc_in_session(|mut c| async move { c.open_fd_channel(OpenFdChannelRequest {}).await })?;
    let token: [u8; tcpd_proto::fd_channel::TOKEN_LEN] = reply
        .token
        .as_slice()
        .try_into()
        .map_err(|_| Errno(libc::EIO))?;
    let path = tcpd_proto::fd_socket_path(&tcpd_proto::socket_path_from_env());
    let stream = UnixStream::connect(&path).map_err(|e| {
        let errno = Errno::from_io(&e, libc::ECONNREFUSED);
        crate::ffi::note_daemon_failure(
            errno,
            format!("cannot reach the tcpd daemon's fd socket {path}: {e}"),
        );
        errno
    })?;
    let (_, errno) = exchange(&stream, Request::Hello { token }, &[], &[])?;
    if errno != 0 {
        return Err(Errno(errno));
    }
    *slot = Some((session, stream));
    Ok(())
}

/// Makes sure the daemon is there for a new socket (which `socket()` makes
/// without asking it, see `fdtable::Unborn`): the session and its fd
/// channel exist, and the channel has not hung up (the daemon went away:
/// then it is re-opened, or the call fails as the first one would —
/// `ENOENT`, `ECONNREFUSED`...). One `poll` once the channel is open.
pub fn ensure_daemon() -> Result<()> {
    let state = process()?;
    let mut slot = lock(&state.fd_channel);
    if let Some((_, stream)) = slot.as_ref() {
        let mut p = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let gone = unsafe { libc::poll(&mut p, 1, 0) } != 0;
        if !gone {
            return Ok(());
        }
        // The daemon closed it: make the next call reconnect.
        *slot = None;
        *lock(&state.client) = None;
    }
    drop(slot);
    state.client()?;
    open_channel(&mut lock(&state.fd_channel))
}

/// Makes this session a co-owner of the inherited tcpd socket `fd`.
pub fn claim(fd: RawFd) -> Result<FdReply> {
    fd_request(Request::Claim, &[], &[fd])
}

/// Sends one request (and its payload) and reads its response: the
/// handle, the descriptor it carried and the errno it gave. A broken
/// channel is `ECONNABORTED` (the daemon is gone).
fn exchange(
    stream: &UnixStream,
    request: Request,
    payload: &[u8],
    send: &[RawFd],
) -> Result<((u64, Option<OwnedFd>), i32)> {
    let broken = |_| Errno(libc::ECONNABORTED);
    let mut bytes = Vec::with_capacity(REQUEST_LEN + payload.len());
    bytes.extend_from_slice(&request.encode());
    bytes.extend_from_slice(payload);
    let mut sent = 0;
    while sent < bytes.len() {
        let n = send_part(
            stream.as_raw_fd(),
            &bytes[sent..],
            if sent == 0 { send } else { &[] },
        )
        .map_err(broken)?;
        sent += n;
    }
    let mut buf = [0u8; RESPONSE_LEN];
    let mut got = 0;
    let mut fd = None;
    while got < RESPONSE_LEN {
        match recv_part(stream.as_raw_fd(), &mut buf[got..], &mut fd).map_err(broken)? {
            0 => return Err(Errno(libc::ECONNABORTED)),
            n => got += n,
        }
    }
    let response = Response::decode(&buf);
    Ok(((response.handle, fd), response.errno))
}

/// One sendmsg(2), retried on EINTR, with `fds` attached.
fn send_part(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            sock,
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

/// One recvmsg(2), retried on EINTR; a received descriptor goes to `fd`
/// (close-on-exec, as every descriptor the library makes; the caller
/// clears it when the program did not ask for it).
fn recv_part(sock: RawFd, buf: &mut [u8], fd: &mut Option<OwnedFd>) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    loop {
        let msg = match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.map_err(std::io::Error::from)?,
        };
        for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: a descriptor recvmsg(2) just installed in this
                    // process; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        *fd = Some(owned);
                    }
                }
            }
        }
        return Ok(msg.bytes);
    }
}
