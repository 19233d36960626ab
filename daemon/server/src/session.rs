//! Sessions: one accepted connection on the daemon's Unix socket (one HTTP/2
//! connection) is one session.
//!
//! [`SessionStream`] wraps the accepted `UnixStream` and is what tonic/hyper
//! serve. It hands every request a [`SessionConnection`] (through
//! `tonic::transport::server::Connected`): the [`SessionInfo`] — session id
//! and the peer's credentials, taken once with SO_PEERCRED at accept time —
//! which the session layer ([`crate::idle::SessionLayer`]) puts where
//! handlers read it (`request.extensions()`), and the session's
//! [`Activity`] record. The acceptor announces each new
//! session to the driver before hyper reads a byte of it; the stream's `Drop`
//! (hyper drops the IO when the connection ends, for whatever reason) tells
//! the driver the session is over, and the driver closes the session's
//! sockets as the kernel does for a dead process. Invariants: session ids are
//! never reused; every session is announced once, before its first request,
//! and reports its end exactly once.
//!
//! Admission ([`crate::admission`]): the acceptor asks for a slot before a
//! connection becomes a session; a refused one is closed at once. The
//! session holds its slot (a `Permit`) until it ends, and must send the
//! HTTP/2 client preface within the handshake timeout or be dropped; once
//! it has neither an RPC in flight nor a socket for the idle timeout
//! ([`crate::idle`]), it is dropped too.

use crate::admission::{Admission, Permit};
use crate::authority::AuthorityFix;
use crate::idle::Activity;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedSender;

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;

/// A session's start or end, as the driver hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Started(SessionId),
    Ended(SessionId),
}

/// Where sessions report their start and end: every shard's driver
/// (unbounded: `Drop` cannot wait), and the daemon's listener groups
/// ([`crate::shards`]), which forget an ended session's listeners.
#[derive(Clone, Debug)]
pub struct SessionEvents {
    drivers: Arc<[UnboundedSender<SessionEvent>]>,
    listeners: Option<Arc<crate::shards::ListenerGroups>>,
}

impl SessionEvents {
    pub fn new(
        drivers: Vec<UnboundedSender<SessionEvent>>,
        listeners: Option<Arc<crate::shards::ListenerGroups>>,
    ) -> SessionEvents {
        SessionEvents {
            drivers: drivers.into(),
            listeners,
        }
    }

    /// Tells every shard; fails if some shard's driver is gone.
    pub fn send(
        &self,
        event: SessionEvent,
    ) -> Result<(), tokio::sync::mpsc::error::SendError<SessionEvent>> {
        if let (SessionEvent::Ended(id), Some(listeners)) = (event, &self.listeners) {
            listeners.session_ended(id);
        }
        let mut outcome = Ok(());
        for driver in self.drivers.iter() {
            if let Err(e) = driver.send(event) {
                outcome = Err(e);
            }
        }
        outcome
    }
}

/// Pause after a failed accept before the next attempt.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Identifies one client connection for the daemon's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// The peer's credentials (SO_PEERCRED), as of connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// 0 when the kernel did not report one.
    pub pid: i32,
    /// A member of `--admin-group` (by its primary group or the account
    /// database): like root, not limited per uid (see [`Credentials::exempt`]).
    pub admin: bool,
}

impl Credentials {
    /// Whether the peer is root (uid 0), which privileged calls require.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Root or a member of `--admin-group`: exempt from the per-uid limits
    /// (API connections, sockets). Privileged calls still need root.
    pub fn exempt(&self) -> bool {
        self.is_root() || self.admin
    }
}

/// What every request of a session carries in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub creds: Credentials,
}

/// What every request of a session carries from its connection (tonic's
/// connect info): who, and the session's activity record.
#[derive(Clone, Debug)]
pub struct SessionConnection {
    pub info: SessionInfo,
    pub activity: Arc<Activity>,
}

/// An accepted client connection; see the module docs.
#[derive(Debug)]
pub struct SessionStream {
    stream: UnixStream,
    info: SessionInfo,
    driver: SessionEvents,
    /// The session's admission slot, given back when it ends.
    _permit: Permit,
    admission: Arc<Admission>,
    /// Until the client preface has arrived: when the handshake times out.
    handshake_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    preface_bytes: usize,
    idle: IdleWatch,
    /// What the HTTP/2 server reads: the client's bytes with any unparsable
    /// `:authority` replaced ([`crate::authority`]).
    authority: AuthorityFix,
    /// Set when the daemon shuts down (see [`SessionAcceptor::closing`]).
    closing: Arc<AtomicBool>,
    /// When bytes last came from the client.
    last_read: std::time::Instant,
    /// The client closed, the socket failed, or the session dropped itself
    /// (handshake or idle timeout): not a keepalive drop.
    ended_otherwise: bool,
}

/// Asks the driver whether a session owns sockets (for the idle timeout);
/// a function so that sessions need not know the driver's protocol.
pub type SocketsQuery =
    Arc<dyn Fn(SessionId) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What the sessions need to enforce the idle timeout.
#[derive(Clone)]
pub struct IdlePolicy {
    /// `None`: never dropped for idleness.
    pub timeout: Option<std::time::Duration>,
    /// The HTTP/2 keepalive interval plus its PING timeout (`None`: no
    /// keepalive): a session that ends, not by the client, after reading
    /// nothing for this long was dropped by hyper's keepalive
    /// (`api_keepalive_drops`).
    pub keepalive_drop_after: Option<std::time::Duration>,
    /// Each session's intake budget, in bytes ([`crate::intake`]).
    pub intake_bytes: usize,
    pub owns_sockets: SocketsQuery,
}

impl std::fmt::Debug for IdlePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePolicy")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One session's idle timer (see [`crate::idle`]).
struct IdleWatch {
    policy: IdlePolicy,
    activity: Arc<Activity>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A pending question to the driver: does the session own sockets?
    socket_check: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl std::fmt::Debug for IdleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWatch")
            .field("timeout", &self.policy.timeout)
            .field("activity", &self.activity)
            .finish_non_exhaustive()
    }
}

impl IdleWatch {
    /// True once the session has been unused for the timeout; registers
    /// `cx` to be woken when that may next change.
    fn expired(&mut self, id: SessionId, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.policy.timeout else {
            return false;
        };
        loop {
            if let Some(check) = self.socket_check.as_mut() {
                let Poll::Ready(owns_sockets) = check.as_mut().poll(cx) else {
                    return false;
                };
                self.socket_check = None;
                if owns_sockets {
                    self.activity.touch();
                } else if self.activity.in_flight() == 0
                    && self.activity.last_active().elapsed() >= timeout
                {
                    return true;
                }
            }
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let since = self.activity.last_active().elapsed();
            if self.activity.in_flight() > 0 || since < timeout {
                let wait = if self.activity.in_flight() > 0 {
                    timeout
                } else {
                    timeout - since
                };
                deadline.as_mut().reset(tokio::time::Instant::now() + wait);
                continue;
            }
            // Unused for the timeout as far as RPCs go: ask about sockets.
            self.socket_check = Some((self.policy.owns_sockets)(id));
        }
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        // hyper ends a connection whose keepalive PING went unanswered
        // without saying so: it is the one reason left for a connection
        // that sent nothing for the interval plus the timeout to end.
        if !self.ended_otherwise
            && !self.is_closing()
            && self.handshake_deadline.is_none()
            && self
                .idle
                .policy
                .keepalive_drop_after
                .is_some_and(|after| self.last_read.elapsed() >= after)
        {
            self.admission.count_keepalive_drop(&self.info.creds);
        }
        // The flag (if the end of the socket did not set it), then the
        // event: a Stream's task that sees the flag skips its own close,
        // which the driver's sweep does once this event arrives.
        self.idle.activity.end();
        // The driver may already be gone during shutdown; nothing to close then.
        let _ = self.driver.send(SessionEvent::Ended(self.info.id));
    }
}

impl tonic::transport::server::Connected for SessionStream {
    type ConnectInfo = SessionConnection;

    fn connect_info(&self) -> SessionConnection {
        SessionConnection {
            info: self.info,
            activity: self.idle.activity.clone(),
        }
    }
}

/// The error every I/O of a session fails with once the daemon shuts down.
fn shutting_down() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "tcpd is shutting down")
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_closing() {
            return Poll::Ready(Err(shutting_down()));
        }
        loop {
            // Rewritten bytes first, in order.
            if this.authority.pending() > 0 {
                let n = this.authority.take(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let polled = this.poll_socket(cx, buf);
            if !matches!(polled, Poll::Ready(Ok(()))) {
                if matches!(polled, Poll::Ready(Err(_))) {
                    this.idle.activity.end();
                }
                return polled;
            }
            let fresh = &buf.filled()[before..];
            if fresh.is_empty() {
                // End of stream. Marked ended now, before HTTP/2 fails the
                // session's streams: their tasks run before the connection
                // (and this) is dropped, and must see it (`Activity::end`).
                this.idle.activity.end();
                return Poll::Ready(Ok(()));
            }
            let pass = this.authority.pass_len(fresh);
            if pass < fresh.len() {
                let held = fresh[pass..].to_vec();
                buf.set_filled(before + pass);
                this.authority.absorb(&held)?;
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // Everything read went into the fix: deliver what it produced,
            // or read again (never report 0 bytes, which means EOF).
        }
    }
}

impl SessionStream {
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Reads from the client's socket, enforcing the handshake and idle
    /// timeouts.
    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.last_read = std::time::Instant::now();
            }
            Poll::Ready(_) => self.ended_otherwise = true,
            Poll::Pending => {}
        }
        if polled.is_pending() && self.idle.expired(self.info.id, cx) {
            self.ended_otherwise = true;
            self.admission.count_idle_drop(&self.info.creds);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "session idle: no RPC and no socket for the idle timeout",
            )));
        }
        let Some(deadline) = self.handshake_deadline.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                self.preface_bytes += buf.filled().len() - before;
                if self.preface_bytes >= H2_PREFACE_LEN {
                    self.handshake_deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                self.handshake_deadline = None;
                self.ended_otherwise = true;
                self.admission.count_handshake_timeout(&self.info.creds);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_closing() {
            return Poll::Ready(Err(shutting_down()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_closing() {
            return Poll::Ready(Err(shutting_down()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts client connections and turns them into sessions.
#[derive(Debug)]
pub struct SessionAcceptor {
    listener: UnixListener,
    driver: SessionEvents,
    admission: Arc<Admission>,
    idle: IdlePolicy,
    next_id: AtomicU64,
    closing: Arc<AtomicBool>,
}

impl SessionAcceptor {
    pub fn new(
        listener: UnixListener,
        driver: SessionEvents,
        admission: Arc<Admission>,
        idle: IdlePolicy,
    ) -> Self {
        SessionAcceptor {
            listener,
            driver,
            admission,
            idle,
            next_id: AtomicU64::new(1),
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The shutdown switch of every session this acceptor makes: once set,
    /// each session's reads and writes fail, so no answer a call gets while
    /// the driver resets everything (EBADF for a parked read...) reaches its
    /// client — a client sees the daemon go away, not a socket error.
    pub fn closing(&self) -> Arc<AtomicBool> {
        self.closing.clone()
    }

    /// The next session. Connections whose credentials cannot be read are
    /// refused (closed) and the error returned; callers skip it. Connections
    /// over the admission limits are closed (and counted) here.
    pub async fn accept(&self) -> io::Result<SessionStream> {
        let (stream, creds, permit) = loop {
            let (stream, _) = self.listener.accept().await?;
            let cred = stream.peer_cred()?;
            let mut creds = Credentials {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid().unwrap_or(0),
                admin: false,
            };
            creds.admin = self.admission.is_admin(&creds);
            match self.admission.admit(&creds) {
                Ok(permit) => break (stream, creds, permit),
                // Dropping the stream closes it before any HTTP/2 byte.
                Err(_) => drop(stream),
            }
        };
        let info = SessionInfo {
            id: SessionId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            creds,
        };
        // Before hyper sees the connection, so it precedes all its requests.
        let _ = self.driver.send(SessionEvent::Started(info.id));
        tracing::debug!(
            session = info.id.0,
            uid = info.creds.uid,
            pid = info.creds.pid,
            "session opened"
        );
        let handshake = self.admission.limits().handshake_timeout;
        Ok(SessionStream {
            stream,
            info,
            driver: self.driver.clone(),
            _permit: permit,
            admission: self.admission.clone(),
            handshake_deadline: Some(Box::pin(tokio::time::sleep(handshake))),
            preface_bytes: 0,
            authority: AuthorityFix::new(),
            closing: self.closing.clone(),
            last_read: std::time::Instant::now(),
            ended_otherwise: false,
            idle: IdleWatch {
                activity: Arc::new(Activity::new(info, self.idle.intake_bytes)),
                policy: self.idle.clone(),
                deadline: None,
                socket_check: None,
            },
        })
    }

    /// An endless stream of sessions for [`crate::api_server::serve`].
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<SessionStream>> {
        futures::stream::unfold(self, |acceptor| async move {
            let next = acceptor.accept().await;
            if let Err(e) = &next {
                tracing::warn!(error = %e, "refusing a client connection");
                // Errors such as EMFILE persist for a while: do not spin on them.
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
            Some((next, acceptor))
        })
    }
}
