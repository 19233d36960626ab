//! The driver: the one task that owns the stack.
//!
//! Everything that touches [`tcpd_stack::Stack`] runs here, on one task, so
//! no lock guards it. The driver `select!`s over three sources:
//! - the link ([`crate::link::Link`]: the TUN device and the impairer):
//!   packets are read in batches and fed to the stack;
//! - the command channel: gRPC handlers send closures over [`Core`] (the
//!   stack plus the daemon's per-socket bookkeeping) and await the reply on a
//!   oneshot; session ends and the final shutdown arrive here too;
//! - the timer: the earlier of the stack's [`Stack::poll_timeout`] and the
//!   impairer's next release.
//!
//! After each wake-up the driver has the link release held packets, runs due
//! timers, has the link drain [`Stack::poll_transmit`] into TUN writes, and
//! drains [`Stack::poll_event`]
//! into readiness watches (one `tokio::sync::watch` per socket somebody
//! waits on) and the admin state-change broadcast.
//!
//! Waiting: handlers never poll. A blocking call that would block gets, in the
//! same driver turn as its failed attempt, a `watch::Receiver` of the socket's
//! readiness ([`Attempt::Blocked`]); any readiness change after the attempt
//! wakes it and it retries. Closing a socket drops its watch, which wakes the
//! waiters too (they then get EBADF).
//!
//! Ownership: every handle belongs to the session that created or accepted
//! it; operations from any other session fail with EBADF. Invariant: a handle
//! is in `sockets` exactly while the stack knows it as a user socket.

use crate::errno::Errno;
use crate::impair::Impairer;
use crate::limits::LimitLog;
use crate::link::Link;
use crate::session::{Credentials, SessionId, SessionInfo};
use crate::taps::Taps;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tcpd_proto::errno::{EACCES, EIO};
use tcpd_proto::v1;
use tcpd_stack::{
    Instant, OptionName, Readiness, Shutdown, SockOption, SocketHandle, SocketInfo, Stack,
    StackEvent, TcpState,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Commands run per wake-up before the driver flushes.
const COMMAND_BATCH: usize = 64;
/// Largest read a single Read call may return (the proto caps max_len at 1 MiB).
pub const MAX_READ: usize = 1 << 20;
/// Ports below this need uid 0 to bind, as on Linux (CAP_NET_BIND_SERVICE).
const PRIVILEGED_PORT_LIMIT: u16 = 1024;
/// listen(2) backlog used when the caller passes <= 0.
const DEFAULT_BACKLOG: u32 = 16;
/// Capacity of the admin Watch broadcast; slower watchers lose the oldest events.
const STATE_CHANGE_CAPACITY: usize = 4096;

/// Work sent to the driver.
pub enum Command {
    /// Run a closure on the stack; it replies through its own oneshot.
    Exec(Box<dyn FnOnce(&mut Core) + Send>),
    /// A client connection was accepted (sent before any of its requests).
    SessionStarted(SessionId),
    /// A client connection ended: close its sockets like a dead process's.
    SessionEnded(SessionId),
    /// Reset every connection, flush the RSTs, then stop the driver.
    Terminate(oneshot::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Exec(_) => f.write_str("Exec"),
            Command::SessionStarted(id) => write!(f, "SessionStarted({})", id.0),
            Command::SessionEnded(id) => write!(f, "SessionEnded({})", id.0),
            Command::Terminate(_) => f.write_str("Terminate"),
        }
    }
}

/// The outcome of an operation that may block.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Done (successfully or not).
    Ready(Result<T, Errno>),
    /// Would block: wait for a change on this receiver, then retry.
    Blocked(watch::Receiver<Readiness>),
}

/// The handlers' side of the command channel.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    commands: mpsc::UnboundedSender<Command>,
    state_changes: broadcast::Sender<WatchedChange>,
}

impl DriverHandle {
    /// Runs `op` on the driver and returns its result.
    pub async fn call<T, F>(&self, op: F) -> Result<T, Errno>
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> T + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let command = Command::Exec(Box::new(move |core| {
            // The caller may have gone away (RPC cancelled); nothing to do then.
            let _ = reply.send(op(core));
        }));
        self.commands
            .send(command)
            .map_err(|_| Errno::new(EIO, "tcpd is shutting down"))?;
        result
            .await
            .map_err(|_| Errno::new(EIO, "tcpd is shutting down"))
    }

    /// Runs `op` until it does not block; `op` returns [`Attempt::Blocked`]
    /// only when the caller asked to wait.
    pub async fn call_blocking<T, F>(&self, op: F) -> Result<T, Errno>
    where
        T: Send + 'static,
        F: FnMut(&mut Core) -> Attempt<T> + Clone + Send + 'static,
    {
        loop {
            match self.call(op.clone()).await? {
                Attempt::Ready(result) => return result,
                Attempt::Blocked(mut readiness) => {
                    // An error means the socket was closed: the retry reports EBADF.
                    let _ = readiness.changed().await;
                }
            }
        }
    }

    /// The sender sessions report their end on (usable from `Drop`).
    pub fn session_end_sender(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
    }

    /// Subscribes to connection state changes (admin Watch).
    pub fn watch_state_changes(&self) -> broadcast::Receiver<WatchedChange> {
        self.state_changes.subscribe()
    }

    /// Asks the driver to reset everything and stop; returns when it has.
    pub async fn terminate(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Terminate(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

/// The daemon's monotonic clock, mapped onto the stack's [`Instant`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: std::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            base: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The tokio deadline for a stack instant.
    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base) + Duration::from_micros(at.total_micros())
    }
}

/// Named counters and connections per state, for the admin Stats call.
#[derive(Debug)]
pub struct StatsSnapshot {
    pub counters: Vec<(String, u64)>,
    pub per_state: Vec<(String, u64)>,
}

/// What the daemon knows about a user socket besides the stack's state.
#[derive(Debug)]
struct SocketEntry {
    owner: SessionInfo,
    /// Created when somebody first waits on the socket.
    readiness: Option<watch::Sender<Readiness>>,
}

/// The stack plus the daemon's bookkeeping; only the driver task touches it.
#[derive(Debug)]
pub struct Core {
    stack: Stack,
    clock: Clock,
    sockets: HashMap<SocketHandle, SocketEntry>,
    /// Sessions whose connection is still open. A request that was already
    /// in flight when its session ended must not create sockets nobody owns.
    live_sessions: HashSet<SessionId>,
    state_changes: broadcast::Sender<WatchedChange>,
    taps: Taps,
}

impl Core {
    fn new(stack: Stack, clock: Clock, state_changes: broadcast::Sender<WatchedChange>) -> Core {
        Core {
            stack,
            clock,
            sockets: HashMap::new(),
            live_sessions: HashSet::new(),
            state_changes,
            taps: Taps::new(clock.now()),
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The handle if it exists and belongs to `session`; EBADF otherwise.
    fn owned(&self, session: &SessionInfo, handle: u64) -> Result<SocketHandle, Errno> {
        let h = SocketHandle(handle);
        match self.sockets.get(&h) {
            Some(entry) if entry.owner.id == session.id => Ok(h),
            _ => Err(Errno::bad_handle()),
        }
    }

    /// A receiver that wakes on the socket's next readiness change.
    fn subscribe(&mut self, h: SocketHandle) -> Result<watch::Receiver<Readiness>, Errno> {
        let current = self.stack.readiness(h).unwrap_or_default();
        let entry = self.sockets.get_mut(&h).ok_or_else(Errno::bad_handle)?;
        let sender = entry
            .readiness
            .get_or_insert_with(|| watch::channel(current).0);
        Ok(sender.subscribe())
    }

    /// Waits for the socket's next readiness change.
    fn block_on<T>(&mut self, h: SocketHandle) -> Attempt<T> {
        match self.subscribe(h) {
            Ok(rx) => Attempt::Blocked(rx),
            Err(e) => Attempt::Ready(Err(e)),
        }
    }

    /// Turns a would-block failure into a wait (or EAGAIN when not waiting).
    fn attempt<T>(&mut self, h: SocketHandle, wait: bool, result: Result<T, Errno>) -> Attempt<T> {
        match result {
            Err(e) if e.would_block() && wait => self.block_on(h),
            other => Attempt::Ready(other),
        }
    }

    /// Records `owner` as the owner of a new handle; a session that has
    /// already ended gets its socket closed at once (EBADF to the caller).
    fn register(&mut self, h: SocketHandle, owner: SessionInfo) -> Result<(), Errno> {
        if !self.live_sessions.contains(&owner.id) {
            let now = self.now();
            let _ = self.stack.close(now, h);
            return Err(Errno::bad_handle());
        }
        self.sockets.insert(
            h,
            SocketEntry {
                owner,
                readiness: None,
            },
        );
        Ok(())
    }

    // ------------------------------------------------------------ socket API

    /// EBADF unless `handle` is a socket of `session`.
    pub fn check(&self, session: SessionInfo, handle: u64) -> Result<(), Errno> {
        self.owned(&session, handle).map(|_| ())
    }

    pub fn socket(&mut self, session: SessionInfo) -> Result<u64, Errno> {
        let h = self.stack.socket();
        self.register(h, session)?;
        Ok(h.0)
    }

    pub fn bind(
        &mut self,
        session: SessionInfo,
        handle: u64,
        addr: SocketAddrV4,
    ) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        // Linux: binding a port below 1024 needs CAP_NET_BIND_SERVICE; tcpd asks for uid 0.
        if addr.port() != 0 && addr.port() < PRIVILEGED_PORT_LIMIT && !session.creds.is_root() {
            return Err(Errno::new(
                EACCES,
                format!("port {} is privileged (root only)", addr.port()),
            ));
        }
        Ok(self.stack.bind(h, addr)?)
    }

    pub fn listen(&mut self, session: SessionInfo, handle: u64, backlog: i32) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        let backlog = u32::try_from(backlog)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(DEFAULT_BACKLOG);
        Ok(self.stack.listen(h, backlog)?)
    }

    pub fn accept(
        &mut self,
        session: SessionInfo,
        handle: u64,
        wait: bool,
    ) -> Attempt<(u64, SocketAddrV4)> {
        let h = match self.owned(&session, handle) {
            Ok(h) => h,
            Err(e) => return Attempt::Ready(Err(e)),
        };
        let result = self
            .stack
            .accept(h)
            .map_err(Errno::from)
            .and_then(|(child, peer)| {
                self.register(child, session)?;
                Ok((child.0, peer))
            });
        self.attempt(h, wait, result)
    }

    pub fn connect(
        &mut self,
        session: SessionInfo,
        handle: u64,
        remote: SocketAddrV4,
    ) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        let now = self.now();
        Ok(self.stack.connect(now, h, remote)?)
    }

    /// The outcome of a connect in progress: done when the socket is
    /// writable (connected) or has a pending error (which this consumes, as
    /// a blocking connect(2) reports and clears it).
    pub fn connect_outcome(&mut self, session: SessionInfo, handle: u64) -> Attempt<()> {
        let h = match self.owned(&session, handle) {
            Ok(h) => h,
            Err(e) => return Attempt::Ready(Err(e)),
        };
        let ready = match self.stack.readiness(h) {
            Ok(r) => r,
            Err(e) => return Attempt::Ready(Err(e.into())),
        };
        if ready.intersects(Readiness::ERR | Readiness::HUP) {
            return Attempt::Ready(match self.stack.get_option(h, OptionName::Error) {
                Ok(SockOption::Error(Some(e))) => Err(e.into()),
                _ if ready.contains(Readiness::OUT) => Ok(()),
                Ok(_) => Err(Errno::from(tcpd_stack::ConnError::Reset)),
                Err(e) => Err(e.into()),
            });
        }
        if ready.contains(Readiness::OUT) {
            return Attempt::Ready(Ok(()));
        }
        self.block_on(h)
    }

    /// Reads up to `max_len` bytes; an empty result is end of stream. The
    /// bytes are copied once, from the receive buffer into a vector of the
    /// size the reply carries (sized by what is readable, so a 1 MiB read of
    /// 100 bytes does not allocate 1 MiB).
    pub fn read(
        &mut self,
        session: SessionInfo,
        handle: u64,
        max_len: usize,
        peek: bool,
        wait: bool,
    ) -> Attempt<Vec<u8>> {
        let h = match self.owned(&session, handle) {
            Ok(h) => h,
            Err(e) => return Attempt::Ready(Err(e)),
        };
        let readable = self.stack.socket_info(h).map_or(0, |info| info.recv_queue);
        // At least one byte, so that EOF and would-block are still told apart.
        let len = max_len.min(MAX_READ).min(readable.max(1));
        let mut data = vec![0u8; len];
        let now = self.now();
        let result = self
            .stack
            .recv(now, h, &mut data, peek)
            .map(|n| {
                data.truncate(n);
                data
            })
            .map_err(Errno::from);
        self.attempt(h, wait, result)
    }

    /// Queues as much of `data` as fits; EAGAIN (or a wait) when nothing fits.
    pub fn write(
        &mut self,
        session: SessionInfo,
        handle: u64,
        data: &[u8],
        wait: bool,
    ) -> Attempt<usize> {
        let h = match self.owned(&session, handle) {
            Ok(h) => h,
            Err(e) => return Attempt::Ready(Err(e)),
        };
        let now = self.now();
        let result = match self.stack.send(now, h, data) {
            // A send buffer with no room reports WouldBlock; 0 for non-empty data means the same.
            Ok(0) if !data.is_empty() => Err(Errno::from(tcpd_stack::SendError::WouldBlock)),
            other => other.map_err(Errno::from),
        };
        self.attempt(h, wait, result)
    }

    pub fn shutdown(
        &mut self,
        session: SessionInfo,
        handle: u64,
        how: Shutdown,
    ) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        let now = self.now();
        Ok(self.stack.shutdown(now, h, how)?)
    }

    pub fn close(&mut self, session: SessionInfo, handle: u64) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        self.close_handle(h)
    }

    fn close_handle(&mut self, h: SocketHandle) -> Result<(), Errno> {
        // Dropping the entry drops its watch sender, which wakes any waiter.
        self.sockets.remove(&h);
        let now = self.now();
        Ok(self.stack.close(now, h)?)
    }

    pub fn address(
        &mut self,
        session: SessionInfo,
        handle: u64,
        peer: bool,
    ) -> Result<SocketAddrV4, Errno> {
        let h = self.owned(&session, handle)?;
        let addr = if peer {
            self.stack.peer_addr(h)
        } else {
            self.stack.local_addr(h)
        };
        Ok(addr?)
    }

    pub fn set_option(
        &mut self,
        session: SessionInfo,
        handle: u64,
        option: SockOption,
    ) -> Result<(), Errno> {
        let h = self.owned(&session, handle)?;
        let now = self.now();
        Ok(self.stack.set_option(now, h, option)?)
    }

    pub fn get_option(
        &mut self,
        session: SessionInfo,
        handle: u64,
        name: OptionName,
    ) -> Result<SockOption, Errno> {
        let h = self.owned(&session, handle)?;
        Ok(self.stack.get_option(h, name)?)
    }

    /// For Poll: per handle, a readiness receiver holding the current
    /// readiness, or `None` for handles that are unknown or foreign.
    pub fn poll_subscribe(
        &mut self,
        session: SessionInfo,
        handles: &[u64],
    ) -> Vec<Option<watch::Receiver<Readiness>>> {
        handles
            .iter()
            .map(|&handle| {
                let h = self.owned(&session, handle).ok()?;
                let current = self.stack.readiness(h).ok()?;
                let entry = self.sockets.get_mut(&h)?;
                let sender = entry
                    .readiness
                    .get_or_insert_with(|| watch::channel(current).0);
                // Events of this turn are not drained yet: start from the
                // stack's present state (waking others only if it differs).
                sender.send_if_modified(|value| {
                    let differs = *value != current;
                    *value = current;
                    differs
                });
                Some(sender.subscribe())
            })
            .collect()
    }

    // ------------------------------------------------------------ admin

    /// Whether session `id` owns any socket (for the idle timeout, [`crate::idle`]).
    pub fn session_owns_sockets(&self, id: SessionId) -> bool {
        self.sockets.values().any(|entry| entry.owner.id == id)
    }

    /// Every socket and connection, with the owner's credentials for user sockets.
    pub fn connections(&self) -> Vec<(SocketInfo, Option<Credentials>)> {
        self.stack
            .sockets()
            .into_iter()
            .map(|info| {
                let owner = info
                    .handle
                    .and_then(|h| self.sockets.get(&h))
                    .map(|e| e.owner.creds);
                (info, owner)
            })
            .collect()
    }

    /// The stack's counters and the number of connections per state.
    pub fn stats(&self) -> StatsSnapshot {
        let mut per_state: Vec<(String, u64)> = TcpState::ALL
            .iter()
            .map(|s| (s.name().to_string(), 0))
            .collect();
        for info in self.stack.sockets() {
            if let Some(slot) = per_state.iter_mut().find(|(n, _)| n == info.state.name()) {
                slot.1 += 1;
            }
        }
        let mut counters = self.stack.stats().named();
        // What `--impair` did, per direction, and captures' drops for slow readers.
        counters.extend(self.taps.impaired.named());
        counters.push(("capture_dropped".to_string(), self.taps.captures.dropped()));
        StatsSnapshot {
            counters,
            per_state,
        }
    }

    pub fn abort(&mut self, local: SocketAddrV4, remote: SocketAddrV4) -> usize {
        let now = self.now();
        self.stack.abort_matching(now, local, remote)
    }

    /// Starts an Admin Trace of the connection `filter` selects; events go
    /// to `tx`. Root may trace anything; another caller only a connection
    /// given as an exact 4-tuple whose socket its uid owns (the trace shows
    /// sequence numbers, which would help to inject into others' streams).
    pub fn trace_subscribe(
        &mut self,
        session: SessionInfo,
        filter: tcpd_stack::TraceFilter,
        tx: tokio::sync::mpsc::Sender<v1::TraceEvent>,
    ) -> Result<(), Errno> {
        if !session.creds.is_root() {
            let exact = !filter.local.ip().is_unspecified()
                && filter.local.port() != 0
                && !filter.remote.ip().is_unspecified()
                && filter.remote.port() != 0;
            let owned = exact
                && self.connections().iter().any(|(info, owner)| {
                    info.local == filter.local
                        && info.remote == filter.remote
                        && owner.is_some_and(|o| {
                            crate::admin_service::sees_owner(&session.creds, o.uid)
                        })
                });
            if !owned {
                return Err(Errno::new(
                    tcpd_proto::errno::EPERM,
                    "tracing needs root, or LOCAL REMOTE of a connection your uid owns",
                ));
            }
        }
        let slot = self.stack.trace_add(filter).ok_or_else(|| {
            Errno::new(
                tcpd_proto::errno::ENOBUFS,
                "too many traces at once (64); try again later",
            )
        })?;
        self.taps.traces.add(slot, tx);
        // An existing connection's `start` record is queued already.
        self.taps.traces.pump(&mut self.stack);
        Ok(())
    }

    /// Starts an Admin Capture (root only: packets carry every socket's
    /// payload); pcapng chunks go to `tx`.
    pub fn capture_subscribe(
        &mut self,
        session: SessionInfo,
        filter: tcpd_trace::capture::CaptureFilter,
        tx: tokio::sync::mpsc::Sender<v1::CaptureChunk>,
    ) -> Result<(), Errno> {
        if !session.creds.is_root() {
            return Err(Errno::new(
                tcpd_proto::errno::EPERM,
                "capturing needs root (packets carry every socket's payload)",
            ));
        }
        self.taps.captures.add(filter, tx);
        Ok(())
    }

    /// Closes every socket of a session that ended.
    fn end_session(&mut self, id: SessionId) {
        self.live_sessions.remove(&id);
        let handles: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter(|(_, e)| e.owner.id == id)
            .map(|(h, _)| *h)
            .collect();
        if !handles.is_empty() {
            tracing::debug!(
                session = id.0,
                sockets = handles.len(),
                "session ended, closing its sockets"
            );
        }
        for h in handles {
            if let Err(e) = self.close_handle(h) {
                tracing::debug!(handle = h.0, error = %e, "closing a dead session's socket");
            }
        }
    }

    /// Resets every synchronized connection and releases every socket (shutdown).
    fn abort_everything(&mut self) {
        let unspecified = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        let now = self.now();
        for info in self.stack.sockets() {
            let synchronized = !matches!(
                info.state,
                TcpState::Closed | TcpState::Listen | TcpState::TimeWait
            );
            if synchronized && info.remote != unspecified {
                self.stack.abort_matching(now, info.local, info.remote);
            }
        }
        let handles: Vec<SocketHandle> = self.sockets.keys().copied().collect();
        for h in handles {
            let _ = self.close_handle(h);
        }
    }

    /// Publishes the stack's pending events.
    fn publish_events(&mut self) {
        while let Some(event) = self.stack.poll_event() {
            match event {
                StackEvent::Readiness { socket, ready } => {
                    if let Some(sender) =
                        self.sockets.get(&socket).and_then(|e| e.readiness.as_ref())
                    {
                        sender.send_replace(ready);
                    }
                }
                StackEvent::StateChange {
                    socket,
                    local,
                    remote,
                    old,
                    new,
                } => {
                    if self.state_changes.receiver_count() == 0 {
                        continue;
                    }
                    let timestamp_us = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                        .unwrap_or(0);
                    let owner_uid = socket
                        .and_then(|h| self.sockets.get(&h))
                        .map(|e| e.owner.creds.uid);
                    let change = v1::StateChange {
                        timestamp_us,
                        local: Some(local.into()),
                        remote: Some(remote.into()),
                        old_state: crate::convert::tcp_state(old) as i32,
                        new_state: crate::convert::tcp_state(new) as i32,
                        handle: socket.map_or(0, |h| h.0),
                    };
                    let _ = self.state_changes.send(WatchedChange { change, owner_uid });
                }
            }
        }
    }
}

/// A state change for the Watch feed, with the uid owning its socket (when
/// a user handle refers to it), so the admin API can show each caller only
/// its own sockets' handles.
#[derive(Clone, Debug)]
pub struct WatchedChange {
    pub change: v1::StateChange,
    pub owner_uid: Option<u32>,
}

/// The driver task; see the module docs.
pub struct Driver {
    core: Core,
    device: tun::Device,
    vnet_hdr: bool,
    impairer: Option<Impairer>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("vnet_hdr", &self.vnet_hdr)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `stack` over the TUN `device` (`vnet_hdr`: opened with a
    /// virtio-net header), and the handle to command it.
    pub fn new(
        stack: Stack,
        clock: Clock,
        device: tun::Device,
        vnet_hdr: bool,
        impairer: Option<Impairer>,
    ) -> (Driver, DriverHandle) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (state_changes, _) = broadcast::channel(STATE_CHANGE_CAPACITY);
        let driver = Driver {
            core: Core::new(stack, clock, state_changes.clone()),
            device,
            vnet_hdr,
            impairer,
            commands,
        };
        let handle = DriverHandle {
            commands: commands_tx,
            state_changes,
        };
        (driver, handle)
    }

    /// Runs until [`Command::Terminate`] or until every [`DriverHandle`] is
    /// gone. Must run inside the tokio runtime that will drive the TUN.
    pub async fn run(self) -> std::io::Result<()> {
        let Driver {
            core,
            device,
            vnet_hdr,
            impairer,
            commands,
        } = self;
        let mut running = Running {
            core,
            link: Link::new(device, vnet_hdr, impairer)?,
            commands,
            limit_log: LimitLog::default(),
        };
        running.run().await;
        Ok(())
    }
}

/// The driver once its TUN is registered with the runtime.
struct Running {
    core: Core,
    link: Link,
    commands: mpsc::UnboundedReceiver<Command>,
    limit_log: LimitLog,
}

impl Running {
    async fn run(&mut self) {
        loop {
            let deadline = match (self.core.stack.poll_timeout(), self.link.next_release()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep_until = deadline.map(|d| self.core.clock.deadline(d));
            tokio::select! {
                received = self.link.recv() => match received {
                    Ok(n) => {
                        let now = self.core.now();
                        self.link.ingest_batch(n, now, &mut self.core.stack, &mut self.core.taps);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TUN read failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    if self.execute(command) {
                        return;
                    }
                    for _ in 1..COMMAND_BATCH {
                        let Ok(command) = self.commands.try_recv() else { break };
                        if self.execute(command) {
                            return;
                        }
                    }
                }
                () = async {
                    match sleep_until {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            self.flush();
        }
    }

    /// Runs one command; true when the driver must stop.
    fn execute(&mut self, command: Command) -> bool {
        match command {
            Command::Exec(op) => op(&mut self.core),
            Command::SessionStarted(id) => {
                self.core.live_sessions.insert(id);
            }
            Command::SessionEnded(id) => self.core.end_session(id),
            Command::Terminate(done) => {
                self.core.abort_everything();
                // Held packets would never leave: send the RSTs unimpaired.
                self.link.disable_impairer();
                self.flush();
                let _ = done.send(());
                return true;
            }
        }
        false
    }

    /// Held packets, timers, transmissions and events, in that order.
    fn flush(&mut self) {
        let now = self.core.now();
        let stack = &mut self.core.stack;
        let taps = &mut self.core.taps;
        self.link.release_due(now, stack, taps);
        if stack.poll_timeout().is_some_and(|at| at <= now) {
            stack.handle_timeout(now);
        }
        self.link.transmit(now, stack, taps);
        taps.traces.pump(stack);
        taps.traces.sweep(stack);
        taps.captures.flush(now);
        self.core.publish_events();
        self.limit_log.note(self.core.stack.stats(), now);
    }
}

#[cfg(test)]
mod tests {
    //! The driver's bookkeeping over real stacks, without a TUN: two cores
    //! whose packets are carried by hand.
    use super::*;
    use crate::session::Credentials;
    use tcpd_proto::errno::{EAGAIN, EBADF, ECONNREFUSED};
    use tcpd_stack::StackConfig;

    const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    fn core(address: Ipv4Addr, seed: u64) -> Core {
        let clock = Clock::start();
        let mut config = StackConfig::new(address, 24);
        config.rng_seed = seed;
        config.isn_secret = [seed as u8; 16];
        let (state_changes, _) = broadcast::channel(16);
        Core::new(Stack::new(config, clock.now()), clock, state_changes)
    }

    fn session(core: &mut Core, id: u64, uid: u32) -> SessionInfo {
        let info = SessionInfo {
            id: SessionId(id),
            creds: Credentials {
                uid,
                gid: uid,
                pid: 100 + i32::try_from(id).expect("small id"),
            },
        };
        core.live_sessions.insert(info.id);
        info
    }

    /// Moves every pending packet of `from` into `to`; true if any moved.
    fn carry(from: &mut Core, to: &mut Core) -> bool {
        let mut buf = vec![0u8; 2048];
        let mut moved = false;
        let now = from.now();
        while let Some(n) = from.stack.poll_transmit(now, &mut buf) {
            let now = to.now();
            to.stack.handle_packet(now, &buf[..n]);
            moved = true;
        }
        moved
    }

    /// Carries packets both ways until both stacks are quiet, then publishes events.
    fn shuttle(a: &mut Core, b: &mut Core) {
        while carry(a, b) | carry(b, a) {}
        a.publish_events();
        b.publish_events();
    }

    fn errno<T: std::fmt::Debug>(r: Result<T, Errno>) -> i32 {
        r.expect_err("expected an error").number
    }

    fn ready<T>(attempt: Attempt<T>) -> Result<T, Errno> {
        match attempt {
            Attempt::Ready(r) => r,
            Attempt::Blocked(_) => panic!("expected a ready outcome, got Blocked"),
        }
    }

    fn blocked<T: std::fmt::Debug>(attempt: Attempt<T>) -> watch::Receiver<Readiness> {
        match attempt {
            Attempt::Blocked(rx) => rx,
            Attempt::Ready(r) => panic!("expected Blocked, got {r:?}"),
        }
    }

    #[test]
    fn handles_belong_to_their_session() {
        let mut c = core(A, 1);
        let alice = session(&mut c, 1, 1000);
        let bob = session(&mut c, 2, 1000);
        let h = c.socket(alice).expect("socket");
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000);
        assert_eq!(errno(c.bind(bob, h, any)), EBADF);
        assert_eq!(errno(c.close(bob, h)), EBADF);
        assert_eq!(errno(c.address(bob, h, false)), EBADF);
        assert_eq!(errno(ready(c.read(bob, h, 10, false, true))), EBADF);
        assert!(c.poll_subscribe(bob, &[h])[0].is_none());
        assert!(c.poll_subscribe(alice, &[h])[0].is_some());
        c.bind(alice, h, any).expect("owner binds");
        c.close(alice, h).expect("owner closes");
        assert_eq!(errno(c.check(alice, h)), EBADF, "closed handles are gone");
    }

    #[test]
    fn privileged_ports_need_root() {
        let mut c = core(A, 2);
        let user = session(&mut c, 1, 1000);
        let root = session(&mut c, 2, 0);
        let h = c.socket(user).expect("socket");
        let port80 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80);
        assert_eq!(errno(c.bind(user, h, port80)), EACCES);
        c.bind(user, h, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
            .expect("unprivileged port");
        let r = c.socket(root).expect("socket");
        c.bind(root, r, port80).expect("root binds port 80");
    }

    #[test]
    fn an_ended_session_loses_its_sockets_and_cannot_make_more() {
        let mut c = core(A, 3);
        let alice = session(&mut c, 1, 1000);
        let h = c.socket(alice).expect("socket");
        c.listen(alice, h, 0).expect("listen");
        c.end_session(alice.id);
        assert_eq!(errno(c.check(alice, h)), EBADF);
        assert!(c.stack.sockets().is_empty(), "listener released");
        assert_eq!(errno(c.socket(alice)), EBADF);
        assert!(c.stack.sockets().is_empty(), "late socket closed at once");
    }

    #[test]
    fn blocked_calls_wake_on_readiness_changes() {
        let mut a = core(A, 4);
        let mut b = core(B, 5);
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let l = b.socket(server).expect("socket");
        b.bind(server, l, SocketAddrV4::new(B, 7000)).expect("bind");
        b.listen(server, l, 4).expect("listen");
        assert_eq!(errno(ready(b.accept(server, l, false))), EAGAIN);
        let accept_wait = blocked(b.accept(server, l, true));
        let s = a.socket(client).expect("socket");
        a.connect(client, s, SocketAddrV4::new(B, 7000))
            .expect("connect starts");
        let connect_wait = blocked(a.connect_outcome(client, s));
        shuttle(&mut a, &mut b);
        assert!(connect_wait.has_changed().expect("sender alive"));
        assert!(accept_wait.has_changed().expect("sender alive"));
        ready(a.connect_outcome(client, s)).expect("connected");
        let (child, peer) = ready(b.accept(server, l, true)).expect("accepted");
        assert_eq!(*peer.ip(), A);
        // Data: the reader waits, the write wakes it.
        let read_wait = blocked(b.read(server, child, 100, false, true));
        assert_eq!(ready(a.write(client, s, b"ping", true)), Ok(4));
        shuttle(&mut a, &mut b);
        assert!(read_wait.has_changed().expect("sender alive"));
        assert_eq!(
            ready(b.read(server, child, 100, true, true)),
            Ok(b"ping".to_vec()),
            "peek leaves the data"
        );
        assert_eq!(
            ready(b.read(server, child, 100, false, false)),
            Ok(b"ping".to_vec())
        );
        assert_eq!(
            errno(ready(b.read(server, child, 100, false, false))),
            EAGAIN
        );
        // Closing the socket wakes its waiters (they then get EBADF).
        let orphan_wait = blocked(b.read(server, child, 100, false, true));
        b.close(server, child).expect("close");
        assert!(orphan_wait.has_changed().is_err());
        assert_eq!(errno(ready(b.read(server, child, 100, false, true))), EBADF);
    }

    #[test]
    fn a_refused_connect_reports_econnrefused() {
        let mut a = core(A, 6);
        let mut b = core(B, 7);
        let client = session(&mut a, 1, 1000);
        let s = a.socket(client).expect("socket");
        a.connect(client, s, SocketAddrV4::new(B, 7001))
            .expect("connect starts");
        let wait = blocked(a.connect_outcome(client, s));
        shuttle(&mut a, &mut b);
        assert!(wait.has_changed().expect("sender alive"));
        assert_eq!(errno(ready(a.connect_outcome(client, s))), ECONNREFUSED);
    }
}
