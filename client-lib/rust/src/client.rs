//! [`Client`]: one session with the daemon.
//!
//! A session is one HTTP/2 connection over the daemon's Unix socket (a tonic
//! [`Channel`]). Every socket belongs to the session that created or accepted
//! it; when the last clone of a `Client` — including the clones held inside
//! its sockets — is gone, the connection closes and the daemon closes that
//! session's remaining sockets (graceful FIN, or RST where unread data
//! remains), as the kernel does for a process that exits.
//!
//! The connection runs on the tokio runtime the session was opened in, or
//! on the library's own runtime when it was opened outside any (see
//! `runtime`). [`Client::shared`] is the default session the free
//! constructors (`TcpStream::connect`, `TcpListener::bind`...) use: one per
//! runtime that uses them, as `tokio::net` sockets belong to the runtime
//! they were made in, and one for code outside any runtime (the blocking
//! API).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tcpd_proto::v2;
use tcpd_proto::v2::socket_service_client::SocketServiceClient as SocketClient;
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use crate::addr::{self, ToSocketAddrs};
use crate::sockopt::PollFlags;
use crate::transport::connect_channel;
use crate::{Socket, TcpListener, TcpStream, busy_poll, runtime};

/// The default session outside any runtime (on the library's runtime), or
/// the one [`Client::set_shared`] installed.
static SHARED: OnceCell<Client> = OnceCell::const_new();

/// [`SHARED`] was installed by [`Client::set_shared`]: it is the default
/// everywhere.
static SHARED_SET: AtomicBool = AtomicBool::new(false);

/// The default session of each runtime that asked for one, by runtime id.
/// An entry leaves when its runtime shuts down ([`RuntimeDefaultGuard`]),
/// so a later runtime given the same id never finds a dead session.
type RuntimeDefaults = HashMap<tokio::runtime::Id, Arc<OnceCell<Client>>>;

static RUNTIME_DEFAULTS: LazyLock<Mutex<RuntimeDefaults>> = LazyLock::new(Default::default);

fn runtime_defaults() -> MutexGuard<'static, RuntimeDefaults> {
    RUNTIME_DEFAULTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Held by a task that never ends on a runtime with a default session:
/// tokio drops it when the runtime shuts down, and the entry goes with it.
struct RuntimeDefaultGuard(tokio::runtime::Id);

impl Drop for RuntimeDefaultGuard {
    fn drop(&mut self) {
        let gone = runtime_defaults().remove(&self.0);
        // The session is dropped after the lock is released.
        drop(gone);
    }
}

/// The default session of the runtime `handle` belongs to, opened there on
/// first use.
async fn runtime_default(handle: tokio::runtime::Handle) -> io::Result<Client> {
    let id = handle.id();
    let (cell, new) = {
        let mut defaults = runtime_defaults();
        match defaults.get(&id) {
            Some(cell) => (Arc::clone(cell), false),
            None => {
                let cell = Arc::new(OnceCell::new());
                defaults.insert(id, Arc::clone(&cell));
                (cell, true)
            }
        }
    };
    if new {
        // Outside the lock: a runtime already shutting down drops the task
        // (and the guard) at once.
        let guard = RuntimeDefaultGuard(id);
        drop(handle.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        }));
    }
    cell.get_or_try_init(|| async {
        let path = tcpd_proto::socket_path_from_env();
        Client::connect_at(Path::new(&path), runtime::Home::current()).await
    })
    .await
    .cloned()
}

/// A session with the tcpd daemon. Cheap to clone (clones share the session).
#[derive(Debug, Clone)]
pub struct Client {
    rpc: SocketClient<Channel>,
    /// The session's connection (the Stream RPC calls it directly: `down`).
    channel: Channel,
    /// The daemon's socket path, for errors reaching it ("" when unknown).
    daemon: Arc<str>,
    /// Where this session's tasks run (see `runtime`).
    home: runtime::Home,
    /// How a call busy-polls for the daemon's answer (see `busy_poll`).
    busy_poll: busy_poll::Policy,
}

impl Client {
    /// Opens a session with the daemon listening on the Unix socket `path`.
    ///
    /// Fails with the connect(2) error of that socket: `ENOENT` or
    /// `ECONNREFUSED` when no daemon is running, `EACCES` when this user may
    /// not use it.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let client = tcpd_client::Client::connect("/run/tcpd/tcpd.sock").await?;
    /// let stream = client.tcp_connect("10.0.0.1:80").await?;
    /// # drop(stream); Ok(()) }
    /// ```
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        Client::connect_at(path.as_ref(), runtime::Home::current()).await
    }

    /// Opens the session with its tasks at `home`.
    async fn connect_at(path: &Path, home: runtime::Home) -> io::Result<Client> {
        let path = path.to_path_buf();
        let shown = path.display().to_string();
        let channel = home
            .run(connect_channel(path))
            .await?
            .map_err(|e| crate::transport::unreachable(&shown, e))?;
        Ok(Client {
            rpc: SocketClient::new(channel.clone()),
            channel,
            daemon: shown.into(),
            busy_poll: busy_poll::policy_for(&home),
            home,
        })
    }

    /// Opens a session at `$TCPD_SOCKET`, or the default
    /// `/run/tcpd/tcpd.sock` when it is unset or empty.
    pub async fn from_env() -> io::Result<Client> {
        Client::connect(tcpd_proto::socket_path_from_env()).await
    }

    /// The default session, opened from the environment (as
    /// [`Client::from_env`]) on first use; what the free constructors
    /// (`TcpStream::connect`, `TcpListener::bind`, ...) use. A failed attempt
    /// is not cached: the next call tries again.
    ///
    /// Inside a tokio runtime — multi-thread or current-thread — it is that
    /// runtime's own default session, living on it (one per runtime,
    /// dropped when the runtime shuts down): as with `tokio::net`, a socket
    /// made there belongs to that runtime, and its I/O takes no hop to
    /// another thread. Outside any runtime (the [`blocking`](crate::blocking)
    /// API) it is one session on the library's runtime, which outlives every
    /// caller's runtime; so it is inside a current-thread runtime when
    /// `TCPD_CLIENT_RUNTIME=library` is set (the default before round 7:
    /// see the `runtime` module). A session opened explicitly with
    /// [`Client::connect`] always lives on the caller's runtime. After
    /// [`Client::set_shared`], it is the installed session everywhere.
    pub async fn shared() -> io::Result<Client> {
        if SHARED_SET.load(Ordering::Acquire)
            && let Some(client) = SHARED.get()
        {
            return Ok(client.clone());
        }
        if let runtime::Home::Caller { handle, .. } = runtime::Home::current()
            && (handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread
                || runtime::current_thread_default_at_home())
        {
            return runtime_default(handle).await;
        }
        SHARED
            .get_or_try_init(|| {
                let path = tcpd_proto::socket_path_from_env();
                async move { Client::connect_at(Path::new(&path), runtime::Home::Library).await }
            })
            .await
            .cloned()
    }

    /// Makes `client` the process-wide default session (what
    /// [`Client::shared`] and the free constructors use, in every runtime
    /// and outside them) instead of the ones opened from the environment;
    /// fails, giving it back, when one was installed already or the
    /// default session outside runtimes exists already.
    #[allow(clippy::result_large_err)] // the client comes back by value
    pub fn set_shared(client: Client) -> Result<(), Client> {
        SHARED
            .set(client)
            .map_err(|e| match e {
                tokio::sync::SetError::AlreadyInitializedError(c)
                | tokio::sync::SetError::InitializingError(c) => c,
            })
            .map(|()| SHARED_SET.store(true, Ordering::Release))
    }

    /// Wraps an already connected channel (for instance one made with
    /// [`connect_channel`] and custom settings). The channel's connection
    /// must have been created on a runtime that outlives the client.
    pub fn from_channel(channel: Channel) -> Client {
        let home = runtime::Home::current();
        Client {
            rpc: SocketClient::new(channel.clone()),
            channel,
            daemon: Arc::from(""),
            busy_poll: busy_poll::policy_for(&home),
            home,
        }
    }

    /// Where this session's background tasks run.
    pub(crate) fn home(&self) -> &runtime::Home {
        &self.home
    }

    /// This session with its calls busy-polling for the daemon's answer
    /// for at most `window` each (zero: never), instead of the window from
    /// `$TCPD_BUSY_POLL_US` (default:
    /// [`DEFAULT_CALLER_BUSY_POLL_US`](crate::DEFAULT_CALLER_BUSY_POLL_US)
    /// µs for a session living on a current-thread runtime,
    /// [`DEFAULT_BUSY_POLL_US`](crate::DEFAULT_BUSY_POLL_US) for the
    /// others). While a unary call, a connection's opening or a read after
    /// a write waits for the daemon, the waiting thread polls its runtime
    /// without sleeping for up to the window, as Linux's `SO_BUSY_POLL`
    /// does for a blocking read: a sleeping thread's wake-up costs more
    /// than the daemon's whole answer on some machines. An idle session
    /// never spins. Clones made afterwards (including those inside sockets
    /// opened afterwards) share the setting.
    pub fn with_busy_poll(mut self, window: Duration) -> Client {
        self.busy_poll.window = window;
        self
    }

    /// This session with its busy-polling waits ending (`true`, the
    /// default unless `TCPD_BUSY_POLL_STOP_CONTENDED=0`) or not (`false`)
    /// at the first `sched_yield` that ran another task — the sign that
    /// another program wants this CPU, after which spinning would only
    /// take turns with it. Clones made afterwards share the setting.
    pub fn with_busy_poll_stop_contended(mut self, stop: bool) -> Client {
        self.busy_poll.stop_contended = stop;
        self
    }

    /// The busy-poll window of this session's calls (see
    /// [`Client::with_busy_poll`]).
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll.window
    }

    /// How this session's calls busy-poll.
    pub(crate) fn busy_poll_policy(&self) -> busy_poll::Policy {
        self.busy_poll
    }

    /// Awaits `call`, an answer from the daemon, busy-polling for it for
    /// up to this session's window (see `busy_poll`).
    pub(crate) async fn answer<F: std::future::Future>(&self, call: F) -> F::Output {
        busy_poll::spin(self.busy_poll, call).await
    }

    /// The failed call's `io::Error`: the daemon's errno, or an error that
    /// names the daemon ("tcpd daemon at PATH: ...") when the call never
    /// got an answer from its socket layer (see [`crate::status_to_io`]).
    pub fn to_io(&self, status: tonic::Status) -> io::Error {
        crate::transport::status_to_io_at(&self.daemon, status)
    }

    /// The daemon's socket path this session was opened on ("" when the
    /// session was made with [`Client::from_channel`]).
    pub fn daemon_path(&self) -> &str {
        &self.daemon
    }

    /// The session's channel.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated gRPC client of this session, for calls this crate does
    /// not wrap.
    pub fn rpc(&self) -> SocketClient<Channel> {
        self.rpc.clone()
    }

    /// Connects a TCP stream through this session (see [`TcpStream::connect`]).
    pub async fn tcp_connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<TcpStream> {
        let targets = addr::resolve(&addr).await?;
        TcpStream::connect_any(self, &targets).await
    }

    /// Binds a listener through this session (see [`TcpListener::bind`]).
    pub async fn tcp_bind<A: ToSocketAddrs>(&self, addr: A) -> io::Result<TcpListener> {
        let targets = addr::resolve(&addr).await?;
        TcpListener::bind_any(self, &targets).await
    }

    /// Creates a new, unbound socket (socket(2)).
    pub async fn socket(&self) -> io::Result<Socket> {
        Socket::new(self).await
    }

    /// Waits until one of `entries` (handle, interesting events) is ready, or
    /// `timeout` passes (`None` waits forever, `Some(ZERO)` does not wait),
    /// like poll(2). Returns the ready bits of each entry, in order; `ERR`
    /// and `HUP` are always reported, `NVAL` marks a handle this session does
    /// not own. An empty result set (all `EMPTY`) means the timeout expired.
    pub async fn poll(
        &self,
        entries: &[(u64, PollFlags)],
        timeout: Option<Duration>,
    ) -> io::Result<Vec<PollFlags>> {
        let timeout_ms = match timeout {
            None => -1,
            // poll(2) takes an int; longer waits are clamped to ~24.8 days.
            Some(t) => i32::try_from(t.as_millis()).unwrap_or(i32::MAX),
        };
        let request = v2::PollRequest {
            entries: entries
                .iter()
                .map(|(handle, events)| v2::PollEntry {
                    handle: *handle,
                    events: events.bits(),
                })
                .collect(),
            timeout_ms,
        };
        let reply = self
            .answer(self.rpc().poll(request))
            .await
            .map_err(|s| self.to_io(s))?
            .into_inner();
        if reply.entries.len() != entries.len() {
            return Err(io::Error::from_raw_os_error(crate::sockopt::EPROTO));
        }
        Ok(reply
            .entries
            .iter()
            .map(|e| PollFlags::from_bits_retain(e.events))
            .collect())
    }
}
