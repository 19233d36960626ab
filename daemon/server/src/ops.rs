//! The typed protocol between gRPC handlers and the driver.
//!
//! A handler builds one [`Op`] with a oneshot [`Reply`], sends it on the
//! bounded op channel ([`DriverHandle::call`]) and awaits the reply. The
//! driver runs the op on [`crate::sockets::Sockets`]; an op that would block
//! is parked there, per socket, and completed when the stack's readiness
//! changes (no retries from the handler). A reply whose receiver is gone
//! means the caller went away: the driver drops the parked op (cancel).
//!
//! Fairness: the op channel is shared by every session, but a session may
//! have at most `--session-op-slots` ([`SESSION_QUEUE_SLOTS`] by default)
//! ops waiting in it (a call that has to wait is counted as
//! `api_op_slot_waits`); its further calls
//! wait for one of its own slots ([`SessionSlots`], FIFO), not in the shared
//! queue. So a session that floods calls delays another session's call by
//! at most a slot's worth of ops per active session, never by its whole
//! backlog. A slot is freed when the driver takes the op from the channel
//! (parked ops are bounded by the session's pending-ops quota instead).
//!
//! A Stream's down side reads with [`Op::StreamRead`], whose reply is not
//! a oneshot but the Stream itself ([`StreamReply`]): every idle connection
//! has such a read parked, and it costs no allocation.
//!
//! Invariants: every op is answered at most once; an op sent before its
//! session's end is answered (possibly with EBADF) or dropped with it.

use crate::errno::Errno;
use crate::session::{Credentials, SessionId, SessionInfo};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tcpd_proto::errno::EIO;
use tcpd_stack::{OptionName, SendFlags, Shutdown, SockOption, SocketInfo, TcpInfo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};

/// Where an op's outcome goes.
pub type Reply<T> = oneshot::Sender<Result<T, Errno>>;

/// A socket's addresses once it is connected or accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connected {
    pub handle: u64,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// What to create before connecting (the Stream's `StreamConnect`).
#[derive(Clone, Debug, Default)]
pub struct SocketSetup {
    /// An existing unconnected socket, or `None` for a new one.
    pub handle: Option<u64>,
    pub options: Vec<SockOption>,
    pub bind: Option<SocketAddr>,
    /// The family of a new socket (socket(2)'s domain); `None`: the
    /// family of `bind`, else of the address connected to, else IPv4.
    pub family: Option<tcpd_stack::IpFamily>,
}

/// Named counters and connections per state, for the admin Stats call.
#[derive(Debug)]
pub struct StatsSnapshot {
    pub counters: Vec<(String, u64)>,
    pub per_state: Vec<(String, u64)>,
}

/// A connection state change, for the admin Watch feed (converted to the
/// proto by the admin service, not here).
#[derive(Clone, Copy, Debug)]
pub struct StateChange {
    pub timestamp_us: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub old: tcpd_stack::TcpState,
    pub new: tcpd_stack::TcpState,
    pub handle: u64,
    /// The uid owning the socket (when a user handle refers to it), so the
    /// admin API can show each caller only its own sockets' handles.
    pub owner_uid: Option<u32>,
}

/// One operation on the stack.
#[derive(Debug)]
pub enum Op {
    /// socket(2) + setsockopt(2)s + optional bind(2).
    Socket {
        setup: SocketSetup,
        reply: Reply<(u64, SocketAddr)>,
    },
    Bind {
        handle: u64,
        addr: SocketAddr,
        reply: Reply<SocketAddr>,
    },
    /// [socket + options + bind +] listen.
    Listen {
        setup: SocketSetup,
        backlog: i32,
        reply: Reply<(u64, SocketAddr)>,
    },
    /// accept(2); parks while the queue is empty when `wait`.
    Accept {
        handle: u64,
        wait: bool,
        reply: Reply<Connected>,
    },
    /// [socket + options + bind +] connect(2). With `wait` it parks until
    /// connected or failed; without, it fails with EINPROGRESS once started.
    Connect {
        setup: SocketSetup,
        remote: SocketAddr,
        wait: bool,
        reply: Reply<Connected>,
    },
    /// read(2); an empty result is EOF.
    Read {
        handle: u64,
        max_len: usize,
        peek: bool,
        wait: bool,
        reply: Reply<ReadData>,
    },
    /// A Stream's down side reads (blocking, no peek; see [`StreamReply`]):
    /// answered into the Stream itself, so a read parked on an idle
    /// connection holds no channel and no list of its own in the driver.
    StreamRead {
        handle: u64,
        reply: StreamReply,
    },
    /// write(2). With `wait` all of `data` is queued (parking as needed);
    /// without, as much as fits (EAGAIN when nothing does).
    Write {
        handle: u64,
        data: WriteData,
        /// send(2) flags: MSG_MORE, MSG_EOR, MSG_OOB.
        flags: SendFlags,
        wait: bool,
        reply: Reply<usize>,
    },
    /// recv(2) with MSG_OOB: the urgent byte (empty at end of stream).
    /// Never waits (EAGAIN), as on Linux.
    ReadUrgent {
        handle: u64,
        peek: bool,
        reply: Reply<Vec<u8>>,
    },
    /// getsockopt(TCP_INFO).
    TcpInfo {
        handle: u64,
        reply: Reply<TcpInfo>,
    },
    Shutdown {
        handle: u64,
        how: Shutdown,
        reply: Reply<()>,
    },
    /// close(2). `abort` resets (SO_LINGER 0). `consumed`: for a streamed
    /// socket, the bytes its client has read; fewer than the daemon handed
    /// out means unread data, so the connection is reset as Linux does.
    Close {
        handle: u64,
        abort: bool,
        consumed: Option<u64>,
        reply: Reply<()>,
    },
    Address {
        handle: u64,
        peer: bool,
        reply: Reply<SocketAddr>,
    },
    SetOption {
        handle: u64,
        option: SockOption,
        reply: Reply<()>,
    },
    GetOption {
        handle: u64,
        name: OptionName,
        reply: Reply<SockOption>,
    },
    /// poll(2): the entries' current events; with `park`, waits until one
    /// entry has events (the caller's timeout drops it).
    Poll {
        entries: Vec<(u64, u32)>,
        park: bool,
        reply: Reply<Vec<u32>>,
    },
    /// Admin: every socket with its owner.
    Connections {
        reply: Reply<Vec<(SocketInfo, Option<Credentials>)>>,
    },
    Stats {
        reply: Reply<StatsSnapshot>,
    },
    /// Admin Trace: follow the connection `filter` selects, events to `tx`
    /// (root, or the owner of an exact 4-tuple; EPERM otherwise).
    Trace {
        filter: tcpd_stack::TraceFilter,
        tx: mpsc::Sender<tcpd_proto::v2::TraceEvent>,
        reply: Reply<()>,
    },
    /// Admin Capture (root only): pcapng chunks to `tx`.
    Capture {
        filter: tcpd_trace::capture::CaptureFilter,
        tx: mpsc::Sender<tcpd_proto::v2::CaptureResponse>,
        reply: Reply<()>,
    },
    /// Whether the request's session owns any socket (idle timeout).
    OwnsSockets {
        reply: Reply<bool>,
    },
    /// Admin: RST matching connections.
    Abort {
        local: SocketAddr,
        remote: SocketAddr,
        reply: Reply<usize>,
    },
    /// OpenFdChannel: a one-time token binding an fd channel to the session.
    FdToken {
        reply: Reply<[u8; tcpd_proto::fd_channel::TOKEN_LEN]>,
    },
    /// The fd channel's hello (sent with a placeholder session): the
    /// session `token` was issued to, if `creds` (the channel's peer) may
    /// act for it.
    FdHello {
        token: [u8; tcpd_proto::fd_channel::TOKEN_LEN],
        creds: Credentials,
        reply: Reply<SessionInfo>,
    },
    /// socket(2) as a file descriptor: the handle and the client's end.
    FdNew {
        family: tcpd_stack::IpFamily,
        reply: Reply<(u64, OwnedFd)>,
    },
    /// A file descriptor for an owned socket that has none (accepted).
    FdAttach {
        handle: u64,
        reply: Reply<OwnedFd>,
    },
    /// The session presents a socket's client end (inherited across fork):
    /// it becomes a co-owner; the reply is the handle.
    FdClaim {
        fd: OwnedFd,
        reply: Reply<u64>,
    },
    /// An fd-channel connection whose hello bound it to the session: the
    /// driver serves its requests from now on (see `fd_service`).
    FdBind {
        stream: OwnedFd,
        reply: Reply<()>,
    },
    /// socket(2) with a socketpair the client made; the reply is the handle.
    FdAdopt {
        family: tcpd_stack::IpFamily,
        pair: crate::fd_link::ClientPair,
        reply: Reply<u64>,
    },
    /// connect(2) of an fd socket, never waiting for the handshake: of
    /// `handle`, or of a new socket made with `pair` (handle 0). The reply
    /// is the handle and the connect's outcome (`EINPROGRESS` while the
    /// handshake goes on); `Err` when no socket was made.
    FdConnect {
        handle: u64,
        pair: Option<(tcpd_stack::IpFamily, crate::fd_link::ClientPair)>,
        remote: SocketAddr,
        options: Vec<SockOption>,
        reply: Reply<(u64, Result<(), Errno>)>,
    },
}

/// The reader a Stream's down side is to the driver: the Stream's own shared
/// state, into which the driver answers its read (see [`StreamReply`]).
pub trait StreamReader: Send + Sync {
    /// Most bytes one read takes.
    fn max_len(&self) -> usize;
    /// Whether the read is still wanted; `false` once the Stream ended or
    /// is closing: the caller went away (the driver drops the read).
    fn wants(&self) -> bool;
    /// The read's outcome: the Stream takes it and wakes its task. Called
    /// by the driver, never while the Stream's own state is locked.
    fn deliver(&self, result: Result<ReadData, Errno>);
    /// The read was dropped unanswered (its socket closed under it, or the
    /// driver stopped): the Stream learns it without the driver waiting
    /// for its state (the drop may happen while the Stream holds it).
    fn dropped(self: Arc<Self>);
}

/// The reply of an [`Op::StreamRead`]: as a oneshot [`Reply`] — answered at
/// most once, and a reply dropped unanswered tells the caller (EBADF) —
/// but without an allocation per read: the answer goes straight into the
/// Stream's state, which exists anyway. A socket keeps its Stream's parked
/// read in 16 bytes of its entry: the [`Default`] reply is empty (answers
/// nobody), so no `Option` around it is needed.
#[derive(Default)]
pub struct StreamReply(Option<Arc<dyn StreamReader>>);

impl StreamReply {
    pub fn new(reader: Arc<dyn StreamReader>) -> StreamReply {
        StreamReply(Some(reader))
    }

    /// Whether it has a reader to answer (not the empty reply).
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Most bytes the read takes.
    pub fn max_len(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.max_len())
    }

    /// Whether the caller went away (as [`oneshot::Sender::is_closed`]).
    pub fn is_closed(&self) -> bool {
        !self.0.as_ref().is_some_and(|r| r.wants())
    }

    /// Answers the read.
    pub fn send(mut self, result: Result<ReadData, Errno>) {
        if let Some(reader) = self.0.take() {
            reader.deliver(result);
        }
    }
}

impl Drop for StreamReply {
    fn drop(&mut self) {
        if let Some(reader) = self.0.take() {
            reader.dropped();
        }
    }
}

impl std::fmt::Debug for StreamReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReply")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The bytes of one read: slices of the socket's receive queue in order
/// (see `Stack::recv_bytes`), so a reader that sends them on (a Stream's
/// down half) copies nothing; empty at end of stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadData {
    chunks: Vec<Bytes>,
}

impl ReadData {
    /// The chunks, in order.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// All bytes as one `Bytes` (a copy only when there are several chunks).
    pub fn into_bytes(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.swap_remove(0),
            _ => self.chunks.concat().into(),
        }
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }
}

impl From<Vec<Bytes>> for ReadData {
    fn from(chunks: Vec<Bytes>) -> Self {
        ReadData { chunks }
    }
}

impl From<Bytes> for ReadData {
    fn from(chunk: Bytes) -> Self {
        ReadData {
            chunks: vec![chunk],
        }
    }
}

/// The bytes of one write: `Bytes` chunks queued in order, as one write.
///
/// A Stream hands the driver every data frame it has already received in
/// one op (see `socket_service::stream_up`), so one driver round trip and
/// one transmission round move several frames, and no chunk is copied to
/// join them.
#[derive(Debug, Default)]
pub struct WriteData {
    chunks: VecDeque<Bytes>,
    /// Bytes of the first chunk already taken (see [`WriteData::advance`]).
    offset: usize,
    /// Bytes not yet taken.
    len: usize,
}

impl WriteData {
    /// Appends `chunk` after the bytes already held.
    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Bytes not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the chunks still referenced (taken ones of the first
    /// included): what this keeps alive.
    pub fn held(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The rest of the chunk holding byte `offset` (counted from the first
    /// byte not yet taken): the longest contiguous run starting there
    /// (empty at or past the end).
    pub fn contiguous_at(&self, offset: usize) -> &[u8] {
        let mut offset = offset + self.offset;
        for chunk in &self.chunks {
            if offset < chunk.len() {
                return &chunk[offset..];
            }
            offset -= chunk.len();
        }
        &[]
    }

    /// Takes `n` bytes from the front; chunks wholly taken are dropped.
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.offset += n;
        while let Some(first) = self.chunks.front()
            && self.offset >= first.len()
        {
            self.offset -= first.len();
            self.chunks.pop_front();
        }
    }

    /// The bytes not yet taken, copied into one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        let mut at = 0;
        while at < self.len {
            let run = self.contiguous_at(at);
            out.extend_from_slice(run);
            at += run.len();
        }
        out
    }
}

impl From<Bytes> for WriteData {
    fn from(chunk: Bytes) -> Self {
        let mut data = WriteData::default();
        data.push(chunk);
        data
    }
}

/// An op and the session it runs for.
#[derive(Debug)]
pub struct Request {
    pub session: SessionInfo,
    pub op: Op,
}

/// Capacity of the op channel: handlers wait (back-pressure) beyond it.
pub const OP_CHANNEL_CAPACITY: usize = 1024;

/// Ops one session may have waiting in the op channel by default (see the
/// module docs). Small next to the channel, so many sessions fit in it at
/// once; large enough that a session's pipelined calls still reach the
/// driver in batches.
pub const SESSION_QUEUE_SLOTS: usize = 16;

/// A request in the op channel, holding one of its session's slots until
/// the driver takes it.
#[derive(Debug)]
pub struct Queued {
    pub request: Request,
    _slot: OwnedSemaphorePermit,
}

/// Every session's op-channel slots (see the module docs).
#[derive(Debug)]
pub struct SessionSlots {
    sessions: Mutex<HashMap<SessionId, Arc<Semaphore>>>,
    /// Slots per session.
    per_session: usize,
}

impl Default for SessionSlots {
    fn default() -> Self {
        SessionSlots::new(SESSION_QUEUE_SLOTS)
    }
}

impl SessionSlots {
    /// `per_session` slots for each session (at least one).
    pub fn new(per_session: usize) -> SessionSlots {
        SessionSlots {
            sessions: Mutex::default(),
            per_session: per_session.max(1),
        }
    }

    pub(crate) fn of(&self, id: SessionId) -> Arc<Semaphore> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_session)))
            .clone()
    }

    /// Drops a session's slots once it has ended (the driver calls this;
    /// a late call of the session creates them again, and the driver drops
    /// them again when it runs that call).
    pub fn forget(&self, id: SessionId) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&id);
    }

    /// Sessions with slots (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }
}

/// Lifecycle messages that must never be lost or wait (sent from `Drop`).
#[derive(Debug)]
pub enum Control {
    /// Reset every connection, flush the RSTs, then stop the driver.
    Terminate(oneshot::Sender<()>),
    /// A caller of this session dropped a connect that creates its socket
    /// (a Stream opened by connect) before it completed: abort it now
    /// ([`crate::sockets::Sockets::connect_abandoned`]).
    ConnectAbandoned(SessionId),
    /// A Stream dropped before its close reached the driver (its client
    /// reset it, or the API connection went): close its socket as the
    /// `Close` op would (`socket_service::StreamBody`'s `Drop`). The op's
    /// reply has no receiver.
    Close(Request),
}

/// Sends [`Control::ConnectAbandoned`] when dropped armed: held across a
/// connect whose caller may be cancelled.
#[derive(Debug)]
pub struct AbandonGuard {
    control: Option<(mpsc::UnboundedSender<Control>, SessionId)>,
}

impl AbandonGuard {
    /// The connect completed (or failed): nothing to abort.
    pub fn disarm(mut self) {
        self.control = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some((control, session)) = self.control.take() {
            let _ = control.send(Control::ConnectAbandoned(session));
        }
    }
}

/// The handlers' side of the driver.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    pub(crate) ops: mpsc::Sender<Queued>,
    pub(crate) slots: Arc<SessionSlots>,
    /// Counters of the limits enforced outside the driver.
    pub(crate) limit_counters: Arc<crate::limits::ApiLimitCounters>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) sessions: mpsc::UnboundedSender<crate::session::SessionEvent>,
    pub(crate) state_changes: broadcast::Sender<StateChange>,
}

fn gone() -> Errno {
    Errno::new(EIO, "tcpd is shutting down")
}

/// The sending of an op that had to wait (for a session slot or room in
/// the op channel).
pub type Submit = Pin<Box<dyn Future<Output = Result<(), Errno>> + Send>>;

/// One op sent to the driver ([`DriverHandle::start`]): a future of its
/// reply. Dropping it cancels the op: one still waiting to be sent is never
/// sent, a parked one is dropped by the driver when it finds the reply's
/// receiver gone.
pub struct OpCall<T> {
    /// `Some` while the op waits to be sent (boxed twice: a thin pointer
    /// keeps every `OpCall` — a Stream holds two — at 16 bytes; the wait is
    /// the rare path).
    submit: Option<Box<Submit>>,
    reply: oneshot::Receiver<Result<T, Errno>>,
}

impl<T> std::fmt::Debug for OpCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpCall")
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

impl<T> OpCall<T> {
    /// Whether the op is in the driver's channel (or already run): it
    /// reaches the driver even if this is dropped.
    pub fn sent(&self) -> bool {
        self.submit.is_none()
    }
}

impl<T> Future for OpCall<T> {
    type Output = Result<T, Errno>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(submit) = &mut self.submit {
            if let Err(e) = ready!(submit.as_mut().as_mut().poll(cx)) {
                return Poll::Ready(Err(e));
            }
            self.submit = None;
        }
        // A dropped reply: the socket was closed under a parked op, or the
        // driver stopped.
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Errno::bad_handle())))
    }
}

impl DriverHandle {
    /// Sends the op built by `op` for `session` and awaits its reply.
    pub async fn call<T>(
        &self,
        session: SessionInfo,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, Errno> {
        self.start(session, op).await
    }

    /// Sends the op built by `op` for `session`; the returned [`OpCall`]
    /// completes with its reply.
    ///
    /// The op goes into the channel at once when its session has a free
    /// slot and the channel room (no allocation); otherwise the sending
    /// (a session slot, then room in the op channel) runs as a boxed future
    /// of its own inside the `OpCall`, so an op that waits for its reply
    /// holds only the reply's receiver (16 bytes in all).
    pub fn start<T>(&self, session: SessionInfo, op: impl FnOnce(Reply<T>) -> Op) -> OpCall<T> {
        let (reply, result) = oneshot::channel();
        let submit = self.send(Request {
            session,
            op: op(reply),
        });
        OpCall {
            submit: submit.map(Box::new),
            reply: result,
        }
    }

    /// Sends `request` to the driver: `None` when it went into the channel
    /// at once (its session had a free slot and the channel room; no
    /// allocation), else the sending as a future of its own (see
    /// [`DriverHandle::start`]), which completes once the op is in the
    /// channel (or fails when the driver is gone).
    pub fn send(&self, request: Request) -> Option<Submit> {
        let slots = self.slots.of(request.session.id);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let queued = Queued {
                    request,
                    _slot: slot,
                };
                match self.ops.try_send(queued) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(queued)) => {
                        let ops = self.ops.clone();
                        Some(Box::pin(async move {
                            ops.send(queued).await.map_err(|_| gone())
                        }))
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        Some(Box::pin(std::future::ready(Err(gone()))))
                    }
                }
            }
            Err(tokio::sync::TryAcquireError::Closed) => {
                Some(Box::pin(std::future::ready(Err(gone()))))
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.limit_counters.count(crate::limits::ApiLimit::OpSlots);
                let ops = self.ops.clone();
                Some(Box::pin(async move {
                    let slot = slots.acquire_owned().await.map_err(|_| gone())?;
                    ops.send(Queued {
                        request,
                        _slot: slot,
                    })
                    .await
                    .map_err(|_| gone())
                }))
            }
        }
    }

    /// A placeholder session for ops that name their session otherwise.
    pub fn no_session() -> SessionInfo {
        SessionInfo {
            id: crate::session::SessionId(0),
            creds: Credentials {
                uid: 0,
                gid: 0,
                pid: 0,
                admin: false,
            },
        }
    }

    /// Whether session `id` owns any socket (true if the driver cannot say,
    /// so a session is never dropped by mistake).
    pub async fn session_owns_sockets(&self, id: crate::session::SessionId) -> bool {
        let session = SessionInfo {
            id,
            creds: Credentials {
                uid: 0,
                gid: 0,
                pid: 0,
                admin: false,
            },
        };
        self.call(session, |reply| Op::OwnsSockets { reply })
            .await
            .unwrap_or(true)
    }

    /// Counters of the limits enforced outside the driver (op slots, fd channel).
    pub fn limit_counters(&self) -> &crate::limits::ApiLimitCounters {
        &self.limit_counters
    }

    /// Subscribes to connection state changes (admin Watch).
    pub fn watch_state_changes(&self) -> broadcast::Receiver<StateChange> {
        self.state_changes.subscribe()
    }

    /// A guard to hold across a connect that creates its socket: dropped
    /// before [`AbandonGuard::disarm`], it tells the driver to abort it.
    pub fn abandon_guard(&self, session: SessionId) -> AbandonGuard {
        AbandonGuard {
            control: Some((self.control.clone(), session)),
        }
    }

    /// Asks the driver to reset everything and stop; returns when it has.
    pub async fn terminate(&self) {
        let (reply, done) = oneshot::channel();
        if self.control.send(Control::Terminate(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WriteData;
    use bytes::Bytes;

    #[test]
    fn write_data_walks_its_chunks_as_one_run_of_bytes() {
        let mut data = WriteData::from(Bytes::from_static(b"abc"));
        data.push(Bytes::new());
        data.push(Bytes::from_static(b"defg"));
        assert_eq!((data.len(), data.held()), (7, 7));
        assert_eq!(data.contiguous_at(1), b"bc");
        assert_eq!(data.contiguous_at(3), b"defg");
        assert_eq!(data.contiguous_at(7), b"");
        data.advance(2);
        assert_eq!(data.contiguous_at(0), b"c");
        assert_eq!((data.len(), data.held()), (5, 7));
        data.advance(2);
        // The first chunk and the empty one are gone.
        assert_eq!((data.len(), data.held()), (3, 4));
        assert_eq!(data.to_vec(), b"efg");
        data.advance(10);
        assert_eq!((data.len(), data.held(), data.to_vec()), (0, 0, Vec::new()));
    }
}
