//! The socket facade: the stack plus the daemon's per-socket and per-session
//! bookkeeping, driven by typed [`Op`]s. Only the driver task touches it.
//!
//! Owns: which session owns which handle (any other session gets EBADF),
//! per-session quotas, ops parked on a socket until its readiness changes,
//! parked polls, and the translation of stack errors to errno.
//!
//! Parking: an op that would block ([`Op::Accept`], [`Op::Connect`],
//! [`Op::Read`], [`Op::StreamRead`], [`Op::Write`] with `wait`, and [`Op::Poll`]) is kept on its
//! socket with its reply. [`Sockets::publish_events`] retries a socket's
//! parked ops when the stack reports a readiness change for it, in arrival
//! order; an op whose caller went away (reply closed) is dropped there.
//! Closing a socket drops its parked ops (their callers see EBADF).
//!
//! Quotas (per session, from the config): sockets (EMFILE), parked ops
//! (EAGAIN), bytes held by parked writes (ENOBUFS), and buffered bytes —
//! what the session's sockets hold in the stack's send and receive queues
//! (out-of-order data included, as `Stack::poll_buffered` reports them),
//! what their fd links hold (at most a chunk each way, as of their last
//! pump) and its parked writes' payloads. A session at its buffered-bytes quota
//! is *limited*: every socket it owns is at [`MemoryLevel::Full`] in the
//! stack, so its writes block (EAGAIN, or a parked write: back-pressure)
//! and its receive windows stop growing (never shrinking what was
//! advertised); once it falls to 7/8 of the quota its sockets are released.
//! A write that went in before the limit was noticed may overshoot by what
//! the stack accepted in that one call; receive by the windows already
//! advertised — so at twice the quota its sockets are
//! [`MemoryLevel::Exhausted`]: they keep arriving data only while their
//! receive queue is empty (each still progresses) and drop the rest for
//! the peer to retransmit, as Linux does for a memory cgroup over its
//! limit (back to `Full` under 7/8 of twice the quota). A closed socket's bytes leave the session: the stack counts
//! them as an orphan's (`--max-orphan-memory`) and in its `tcp_mem` total.
//!
//! Sockets as file descriptors ([`crate::fd_link`]): a socket created or
//! attached through the fd channel has a socketpair whose daemon end the
//! driver pumps on the stack's readiness events and the ends' own. Such a
//! socket lives as long as the client holds its end (a forked child may hold
//! it after its creator's session ended), not as long as its session; other
//! sessions that present the end (a claim) become co-owners.
//!
//! Invariants: a handle is in `sockets` exactly while the stack knows it as
//! a user socket; every parked op belongs to a socket in `sockets`; a
//! session's counters equal what its sockets and parked ops hold.

use crate::errno::Errno;
use crate::fd_link::{FdLinks, Pumped};
use crate::ops::{
    Connected, Op, ReadData, Reply, Request, SocketSetup, StateChange, StatsSnapshot, StreamReply,
    WriteData,
};
use crate::session::{Credentials, SessionId, SessionInfo};
use crate::taps::Taps;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tcpd_proto::errno::{EACCES, EAGAIN, EINPROGRESS, EINVAL, EMFILE, ENOBUFS};
use tcpd_stack::{
    Instant, IpFamily, MemoryLevel, OptionName, Readiness, SendFlags, SockOption, SocketHandle,
    SocketInfo, Stack, StackEvent, TcpState,
};
use tokio::sync::{broadcast, oneshot};

/// Largest read a single Read op may return (the proto caps max_len at 1 MiB).
pub const MAX_READ: usize = 1 << 20;
/// Ports below this need uid 0 to bind, as on Linux (CAP_NET_BIND_SERVICE).
const PRIVILEGED_PORT_LIMIT: u16 = 1024;
/// listen(2) backlog used when the caller passes <= 0.
const DEFAULT_BACKLOG: u32 = 16;
/// poll(2)'s POLLNVAL: the handle is not a socket of this session.
pub const POLLNVAL: u32 = Readiness::NVAL.bits();

/// Per-session limits; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Sockets a session may hold (EMFILE beyond).
    pub sockets: usize,
    /// Ops a session may have parked at once (EAGAIN beyond).
    pub pending_ops: usize,
    /// Bytes a session's parked writes may hold in the daemon (ENOBUFS
    /// beyond), and bytes its sockets' stack buffers and parked writes may
    /// hold together (its sockets are limited at it; see the module docs).
    pub buffered_bytes: usize,
    /// Sockets all sessions of one uid may hold together (EMFILE beyond);
    /// root is exempt. Without it a user could multiply the session quota
    /// by opening many API connections.
    pub sockets_per_uid: usize,
    /// Ops a session may have waiting in the driver's shared channel; its
    /// further calls wait for its own slots ([`crate::ops::SessionSlots`]).
    pub op_slots: usize,
}

impl Default for Quotas {
    /// Linux's default `RLIMIT_NOFILE` hard limit is 4096 per process and
    /// its per-socket `tcp_wmem` maximum 4 MiB; a session is a process here.
    /// Parked ops are bounded by what one process can have blocked: one per
    /// thread or per socket side, so twice the socket quota.
    fn default() -> Self {
        Quotas {
            sockets: 4096,
            pending_ops: 8192,
            buffered_bytes: 64 << 20,
            // Four sessions' worth: several programs of one user at their
            // per-process limit, a bounded share of the daemon's memory.
            sockets_per_uid: 4 * 4096,
            op_slots: crate::ops::SESSION_QUEUE_SLOTS,
        }
    }
}

/// Calls refused by each per-session quota, for `tcpctl stats`
/// (`api_refused_session_sockets`, `api_refused_blocked_calls`,
/// `api_refused_buffered_bytes`); each quota's first refusal is logged.
#[derive(Debug, Default)]
struct Refusals {
    session_sockets: u64,
    blocked_calls: u64,
    buffered_bytes: u64,
    /// Times a session reached its buffered-bytes quota and was limited
    /// (`api_limited_buffered_bytes`).
    limited: u64,
    /// Times a session reached twice its quota and its sockets started
    /// dropping data (`api_exhausted_buffered_bytes`).
    exhausted: u64,
    /// When a session's limiting was last logged.
    limited_logged: Option<std::time::Instant>,
    /// Limits since then, not logged yet.
    limited_unlogged: u64,
}

/// Which per-session quota refused a call.
#[derive(Clone, Copy, Debug)]
enum SessionQuota {
    Sockets,
    BlockedCalls,
    BufferedBytes,
}

impl Refusals {
    /// Counts a refusal by `quota`; logs the first one.
    fn count(&mut self, quota: SessionQuota, session: SessionId) {
        let (count, flag, errno) = match quota {
            SessionQuota::Sockets => (&mut self.session_sockets, "--session-max-sockets", "EMFILE"),
            SessionQuota::BlockedCalls => (
                &mut self.blocked_calls,
                "--session-max-blocked-calls",
                "EAGAIN",
            ),
            SessionQuota::BufferedBytes => (
                &mut self.buffered_bytes,
                "--session-max-buffered-bytes",
                "ENOBUFS",
            ),
        };
        *count += 1;
        if *count == 1 {
            tracing::warn!(
                session = session.0,
                "a session reached {flag}: calls past it fail with {errno} \
                 (logged once; `tcpctl stats` counts every refusal)"
            );
        }
    }

    /// Counts a session limited at its buffered-bytes quota (`level` Full)
    /// or at twice it (Exhausted); logs the first time, then at most once a
    /// minute with the count since.
    fn count_limited(&mut self, session: SessionId, used: usize, quota: usize, level: MemoryLevel) {
        if level == MemoryLevel::Exhausted {
            self.exhausted += 1;
        } else {
            self.limited += 1;
        }
        self.limited_unlogged += 1;
        let now = std::time::Instant::now();
        if self
            .limited_logged
            .is_some_and(|at| now.duration_since(at) < LIMIT_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            session = session.0,
            used,
            quota,
            ?level,
            count = self.limited_unlogged,
            "a session's sockets and blocked writes hold --session-max-buffered-bytes: \
             its writes block (EAGAIN) and its receive windows stop growing until it \
             falls below 7/8 of it; at twice it (Exhausted) they also drop data the peer \
             must resend (logged at most once a minute; `tcpctl stats` counts \
             api_limited_buffered_bytes and api_exhausted_buffered_bytes)"
        );
        self.limited_logged = Some(now);
        self.limited_unlogged = 0;
    }

    fn counters(&self) -> [(String, u64); 5] {
        [
            (
                "api_refused_session_sockets".to_string(),
                self.session_sockets,
            ),
            ("api_refused_blocked_calls".to_string(), self.blocked_calls),
            (
                "api_refused_buffered_bytes".to_string(),
                self.buffered_bytes,
            ),
            ("api_limited_buffered_bytes".to_string(), self.limited),
            ("api_exhausted_buffered_bytes".to_string(), self.exhausted),
        ]
    }
}

/// Trace slots (of the stack's 64) only root may take.
const TRACE_SLOTS_FOR_ROOT: usize = 16;

/// Quiet time between two log lines about sessions limited at their
/// buffered-bytes quota.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

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
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base) + Duration::from_micros(at.total_micros())
    }
}

/// An op waiting for its socket's readiness to change.
#[derive(Debug)]
enum Parked {
    Accept {
        /// The session that called accept: it owns the accepted socket
        /// (a listener may be shared, e.g. by a forked worker's claim).
        accepter: SessionInfo,
        reply: Reply<Connected>,
    },
    Connect {
        /// The facade created the socket for this op: close it on failure.
        created: bool,
        reply: Reply<Connected>,
    },
    Read {
        max_len: usize,
        peek: bool,
        reply: Reply<ReadData>,
    },
    /// A Stream's read (see [`SocketEntry::stream_read`]).
    StreamRead(StreamReply),
    Write {
        pending: PendingWrite,
        flags: SendFlags,
        reply: Reply<usize>,
    },
}

/// What a blocking write still has to queue, kept on its socket.
///
/// The request's message is the client's (up to the 4 MiB gRPC limit), and
/// the stack queues it piecemeal as the send buffer drains. Once more than
/// half of the buffer it keeps alive has been queued, the rest is copied
/// out, so the message is freed: a parked write keeps at most twice what it
/// still has to queue (a 4 MB write whose first 3 MB went out keeps 1 MB,
/// not 4), at the cost of copying each byte at most once more on average.
/// Its session is charged [`held`](Self::held), what it really keeps.
#[derive(Debug)]
struct PendingWrite {
    /// Bytes still to queue: views into buffers of `held` bytes.
    rest: WriteData,
    /// Bytes of the buffers `rest` keeps alive.
    held: usize,
    /// Bytes of the call already queued (the reply's count).
    queued: usize,
}

impl PendingWrite {
    /// A write of `data` of which `queued` bytes are in the send buffer.
    fn new(data: WriteData, queued: usize) -> PendingWrite {
        let held = data.held();
        PendingWrite {
            rest: data,
            held,
            queued: 0,
        }
        .advance(queued)
    }

    /// `n` more bytes went into the send buffer.
    fn advance(mut self, n: usize) -> PendingWrite {
        self.queued += n;
        self.rest.advance(n);
        self.held = self.held.min(self.rest.held());
        if n > 0 && self.rest.len() * 2 <= self.held {
            self.rest = WriteData::from(Bytes::from(self.rest.to_vec()));
            self.held = self.rest.len();
        }
        self
    }

    /// The call's answer once the rest went out with `outcome` (write(2):
    /// after a partial write the count, the error comes next time).
    fn answer(&self, outcome: Result<usize, Errno>) -> Result<usize, Errno> {
        match outcome {
            Ok(n) => Ok(self.queued + n),
            Err(_) if self.queued > 0 => Ok(self.queued),
            Err(e) => Err(e),
        }
    }
}

impl Parked {
    fn caller_gone(&self) -> bool {
        match self {
            Parked::Accept { reply, .. } | Parked::Connect { reply, .. } => reply.is_closed(),
            Parked::Read { reply, .. } => reply.is_closed(),
            Parked::StreamRead(reply) => reply.is_closed(),
            Parked::Write { reply, .. } => reply.is_closed(),
        }
    }

    /// Bytes this op holds in the daemon.
    fn bytes(&self) -> usize {
        match self {
            Parked::Write { pending, .. } => pending.held,
            _ => 0,
        }
    }
}

/// What the daemon knows about a user socket besides the stack's state.
///
/// Every connected socket has one, inline in the socket map (room for
/// ~100,000 idle ones), so what most sockets never hold is in one box
/// ([`EntryRare`]), the owner is an index into [`Owners`], and a Stream's
/// parked read — every idle Stream has one — is kept in 16 bytes of the
/// entry itself (`an_idle_sockets_entry_stays_small`).
#[derive(Debug)]
struct SocketEntry {
    /// The owning session, in [`Sockets::owners`].
    owner: OwnerRef,
    /// The stack's buffered bytes for it, as last reported (charged to
    /// the owner; an fd link holds none of its own). A socket's buffers
    /// are far below 4 GiB; a larger report would be charged as 4 GiB,
    /// the same on the way in and out.
    buffered: u32,
    /// Bytes handed out by non-peek reads (for close's unread check).
    read_total: u64,
    /// A Stream's parked read while it is the socket's oldest parked op:
    /// it is set only while `rare` holds no parked op, so the ops parked
    /// on a socket, in arrival order, are this one, then `rare`'s.
    /// (The empty reply when there is none.)
    stream_read: StreamReply,
    /// Other parked ops and co-owners; `None` while there are none.
    rare: Option<Box<EntryRare>>,
}

/// The parts of a [`SocketEntry`] few sockets hold.
#[derive(Debug, Default)]
struct EntryRare {
    /// Parked ops (after [`SocketEntry::stream_read`]), in arrival order.
    parked: Vec<Parked>,
    /// Other sessions that claimed the socket's fd (fork): co-owners. When
    /// the owner's session ends while the socket lives on, the first of
    /// them becomes the owner (see [`Sockets::transfer_owner`]).
    sharers: Vec<SessionInfo>,
}

/// A session that owns sockets, as its sockets' entries name it: an index
/// into [`Owners`] (4 bytes instead of the session's 24 in every entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnerRef(u32);

/// The sessions that own sockets, each held once, counted by the entries
/// naming it (a socket may outlive its owner's session: an fd another
/// process still holds).
#[derive(Debug, Default)]
struct Owners {
    /// Each owner and how many sockets name it; a slot named by none is
    /// free (in `free`).
    slots: Vec<(SessionInfo, u32)>,
    free: Vec<u32>,
    by_id: HashMap<SessionId, OwnerRef>,
}

impl Owners {
    /// `owner`'s reference, for one more socket.
    fn hold(&mut self, owner: SessionInfo) -> OwnerRef {
        if let Some(&r) = self.by_id.get(&owner.id) {
            self.slots[r.0 as usize].1 += 1;
            return r;
        }
        let r = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = (owner, 1);
                OwnerRef(i)
            }
            None => {
                // One slot per session owning sockets at once: far below
                // 2^32 (each session is a connection to the daemon).
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 owners");
                self.slots.push((owner, 1));
                OwnerRef(i)
            }
        };
        self.by_id.insert(owner.id, r);
        r
    }

    /// One socket naming `r` fewer.
    fn release(&mut self, r: OwnerRef) {
        let slot = &mut self.slots[r.0 as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            self.by_id.remove(&slot.0.id);
            self.free.push(r.0);
        }
    }

    /// The reference of session `id`, if it owns sockets.
    fn of(&self, id: SessionId) -> Option<OwnerRef> {
        self.by_id.get(&id).copied()
    }
}

impl std::ops::Index<OwnerRef> for Owners {
    type Output = SessionInfo;

    fn index(&self, r: OwnerRef) -> &SessionInfo {
        &self.slots[r.0 as usize].0
    }
}

/// What the session counts hold of a reported buffer size (see
/// [`SocketEntry::buffered`]).
fn buffered_u32(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl SocketEntry {
    fn new(owner: OwnerRef) -> SocketEntry {
        SocketEntry {
            owner,
            read_total: 0,
            buffered: 0,
            stream_read: StreamReply::default(),
            rare: None,
        }
    }

    fn rare(&mut self) -> &mut EntryRare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the rare box once it holds nothing.
    fn tidy(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.parked.is_empty() && r.sharers.is_empty())
        {
            self.rare = None;
        }
    }

    fn sharers(&self) -> &[SessionInfo] {
        self.rare.as_ref().map_or(&[], |r| &r.sharers)
    }

    /// Keeps the co-owners `keep` says to.
    fn retain_sharers(&mut self, keep: impl FnMut(&SessionInfo) -> bool) {
        if let Some(rare) = &mut self.rare {
            rare.sharers.retain(keep);
            self.tidy();
        }
    }

    /// The ops parked on the socket, in arrival order.
    fn parked(&self) -> impl Iterator<Item = ParkedRef<'_>> {
        let rest = self.rare.as_ref().map_or(&[][..], |r| &r.parked);
        let first = self.stream_read.is_set().then_some(&self.stream_read);
        first
            .into_iter()
            .map(ParkedRef::StreamRead)
            .chain(rest.iter().map(ParkedRef::Other))
    }

    /// The Stream's read kept in the entry, if any.
    fn take_stream_read(&mut self) -> Option<Parked> {
        let reply = std::mem::take(&mut self.stream_read);
        reply.is_set().then_some(Parked::StreamRead(reply))
    }

    /// Parks `op` after the others.
    fn push_parked(&mut self, op: Parked) {
        let rare_empty = self.rare.as_ref().is_none_or(|r| r.parked.is_empty());
        match op {
            Parked::StreamRead(reply) if !self.stream_read.is_set() && rare_empty => {
                self.stream_read = reply;
            }
            op => {
                let parked = &mut self.rare().parked;
                // Usually the only one: room for one, not the four a
                // first push reserves.
                parked.reserve_exact(1);
                parked.push(op);
            }
        }
    }
}

/// A parked op, seen in place (see [`SocketEntry::parked`]).
#[derive(Clone, Copy)]
enum ParkedRef<'a> {
    StreamRead(&'a StreamReply),
    Other(&'a Parked),
}

impl ParkedRef<'_> {
    fn caller_gone(self) -> bool {
        match self {
            ParkedRef::StreamRead(reply) => reply.is_closed(),
            ParkedRef::Other(op) => op.caller_gone(),
        }
    }

    fn bytes(self) -> usize {
        match self {
            ParkedRef::StreamRead(_) => 0,
            ParkedRef::Other(op) => op.bytes(),
        }
    }

    /// A connect that created its socket.
    fn creates(self) -> bool {
        matches!(
            self,
            ParkedRef::Other(Parked::Connect { created: true, .. })
        )
    }
}

/// What one session holds, against its [`Quotas`].
#[derive(Debug, Default)]
struct SessionUse {
    sockets: usize,
    parked: usize,
    parked_bytes: usize,
    /// What its sockets hold in the stack's buffers and their fd links.
    stack_bytes: usize,
    /// The level of its sockets: `Full` at its buffered-bytes quota,
    /// `Exhausted` at twice it (see the module docs).
    level: MemoryLevel,
    /// Its bytes changed since the quota was last checked (it is in
    /// `Sockets::dirty`).
    dirty: bool,
    /// Sockets it created with a connect that parked (a Stream opened by
    /// connect): [`Sockets::connect_abandoned`] looks at these when a
    /// caller gives up. May name sockets whose connect completed since;
    /// pruned as it grows.
    connecting: Vec<SocketHandle>,
    /// The length of `connecting` after its last pruning.
    connecting_kept: usize,
}

impl SessionUse {
    /// What counts against the buffered-bytes quota.
    fn buffered(&self) -> usize {
        self.stack_bytes + self.parked_bytes
    }
}

/// A poll(2) waiting for any of its entries to become ready.
#[derive(Debug)]
struct ParkedPoll {
    session: SessionInfo,
    entries: Vec<(u64, u32)>,
    reply: Reply<Vec<u32>>,
}

/// The stack plus the daemon's bookkeeping; see the module docs.
#[derive(Debug)]
pub struct Sockets {
    stack: Stack,
    clock: Clock,
    quotas: Quotas,
    sockets: HashMap<SocketHandle, SocketEntry>,
    /// The sessions named as owners by `sockets`' entries.
    owners: Owners,
    /// Sessions whose connection is still open. A request that was already
    /// in flight when its session ended must not create sockets nobody owns.
    sessions: HashMap<SessionId, SessionUse>,
    /// Sockets per non-root uid, against `Quotas::sockets_per_uid`.
    uid_sockets: HashMap<u32, usize>,
    /// Sockets refused by the per-uid quota (`api_refused_uid_sockets`).
    uid_refusals: u64,
    /// Traces refused to non-root callers (`api_refused_traces`).
    trace_refusals: u64,
    /// Calls refused by the per-session quotas.
    refusals: Refusals,
    /// Sessions whose buffered bytes changed since the quota was last checked.
    dirty: Vec<SessionId>,
    polls: Vec<ParkedPoll>,
    state_changes: broadcast::Sender<StateChange>,
    /// Admin Traces and Captures being followed, and the impairer's counts.
    taps: Taps,
    /// The socketpairs of sockets used as file descriptors.
    fds: FdLinks,
    /// fd channels bound to a session, served here; keyed by their epoll
    /// token ([`CHANNEL_TOKEN`] set).
    channels: HashMap<u64, crate::fd_service::BoundChannel>,
    next_channel: u64,
    /// Each session's unused fd-channel token (OpenFdChannel).
    fd_tokens: HashMap<SessionId, ([u8; tcpd_proto::fd_channel::TOKEN_LEN], SessionInfo)>,
}

/// Epoll tokens of fd channels have this bit (socket handles never do).
const CHANNEL_TOKEN: u64 = 1 << 63;

/// What retrying a parked op did.
enum Retried {
    /// Still blocked: parked again.
    Kept(Parked),
    /// Answered, or its caller went away.
    Done,
    /// The socket was closed by it (a connect failed or was abandoned).
    SocketGone,
}

/// The outcome of one attempt at a blocking op.
enum Attempt<T> {
    Done(Result<T, Errno>),
    Blocked,
}

impl Sockets {
    pub fn new(
        stack: Stack,
        clock: Clock,
        quotas: Quotas,
        state_changes: broadcast::Sender<StateChange>,
    ) -> Sockets {
        Sockets {
            stack,
            clock,
            quotas,
            sockets: HashMap::new(),
            owners: Owners::default(),
            sessions: HashMap::new(),
            uid_sockets: HashMap::new(),
            uid_refusals: 0,
            trace_refusals: 0,
            refusals: Refusals::default(),
            dirty: Vec::new(),
            polls: Vec::new(),
            state_changes,
            taps: Taps::new(clock.now()),
            // Only fails without memory or file descriptors at start-up.
            fds: FdLinks::new().expect("epoll_create1 for the fd links"),
            fd_tokens: HashMap::new(),
            channels: HashMap::new(),
            next_channel: 0,
        }
    }

    /// The epoll descriptor reporting the fd links' readiness (the driver
    /// waits on it and then calls [`Sockets::pump_fds`]).
    pub fn fd_readiness(&self) -> std::io::Result<OwnedFd> {
        self.fds.readiness_fd()
    }

    /// Pumps every fd link whose end reported readiness, and serves the fd
    /// channels that did.
    pub fn pump_fds(&mut self) {
        for (h, hup) in self.fds.ready() {
            if h.0 & CHANNEL_TOKEN != 0 {
                self.serve_channel(h.0);
            } else {
                self.pump(h, hup);
            }
        }
    }

    /// Takes over a bound fd channel (see `fd_service`).
    fn fd_bind(&mut self, session: SessionInfo, stream: OwnedFd) -> Result<(), Errno> {
        if !self.sessions.contains_key(&session.id) {
            return Err(Errno::bad_handle());
        }
        let channel = crate::fd_service::BoundChannel::new(stream, session)
            .map_err(|e| Errno::from_io(&e))?;
        self.next_channel += 1;
        let token = CHANNEL_TOKEN | self.next_channel;
        self.fds
            .watch(channel.socket(), token)
            .map_err(|e| Errno::from_io(&e))?;
        self.channels.insert(token, channel);
        // Requests sent before it was watched: the epoll reports data that
        // is already there, but serve now rather than on the next wake.
        self.serve_channel(token);
        Ok(())
    }

    /// Answers the requests a bound fd channel has sent, in order, until it
    /// has no more; ends the channel at EOF, on a malformed request, or when
    /// a response does not fit (a client that does not read them).
    fn serve_channel(&mut self, token: u64) {
        use crate::fd_service::Next;
        loop {
            let Some(channel) = self.channels.get_mut(&token) else {
                return;
            };
            let open = channel.fill();
            let session = channel.session;
            let mut answered = false;
            loop {
                let Some(channel) = self.channels.get_mut(&token) else {
                    return;
                };
                match channel.next() {
                    Next::Wait => break,
                    Next::Close => return self.end_channel(token),
                    Next::Call(call) => {
                        let (response, fd) = self.channel_call(session, call);
                        let sent = self
                            .channels
                            .get(&token)
                            .is_some_and(|c| c.respond(response, fd.as_ref()));
                        if !sent {
                            return self.end_channel(token);
                        }
                        answered = true;
                    }
                }
            }
            if !open {
                return self.end_channel(token);
            }
            if !answered {
                return;
            }
        }
    }

    fn end_channel(&mut self, token: u64) {
        if let Some(channel) = self.channels.remove(&token) {
            self.fds.unwatch(channel.socket());
        }
    }

    /// Runs one fd-channel request as the typed op it stands for.
    fn channel_call(
        &mut self,
        session: SessionInfo,
        call: crate::fd_service::ChannelCall,
    ) -> (tcpd_proto::fd_channel::Response, Option<OwnedFd>) {
        use crate::fd_service::{ChannelCall, failure};
        use tcpd_proto::fd_channel::Response;
        fn ask<T>(
            s: &mut Sockets,
            session: SessionInfo,
            op: impl FnOnce(Reply<T>) -> Op,
        ) -> Result<T, Errno> {
            let (tx, mut rx) = oneshot::channel();
            s.execute(Request {
                session,
                op: op(tx),
            });
            rx.try_recv()
                .unwrap_or_else(|_| Err(Errno::new(tcpd_proto::errno::EIO, "no answer")))
        }
        let ok = |handle| Response { errno: 0, handle };
        match call {
            ChannelCall::New { family } => {
                match ask(self, session, |reply| Op::FdNew { family, reply }) {
                    Ok((handle, fd)) => (ok(handle), Some(fd)),
                    Err(e) => (failure(&e), None),
                }
            }
            ChannelCall::Attach { handle } => {
                match ask(self, session, |reply| Op::FdAttach { handle, reply }) {
                    Ok(fd) => (ok(handle), Some(fd)),
                    Err(e) => (failure(&e), None),
                }
            }
            ChannelCall::Claim { fd } => {
                match ask(self, session, |reply| Op::FdClaim { fd, reply }) {
                    Ok(handle) => (ok(handle), None),
                    Err(e) => (failure(&e), None),
                }
            }
            ChannelCall::Adopt { family, pair } => {
                match ask(self, session, |reply| Op::FdAdopt {
                    family,
                    pair,
                    reply,
                }) {
                    Ok(handle) => (ok(handle), None),
                    Err(e) => (failure(&e), None),
                }
            }
            ChannelCall::Connect {
                handle,
                pair,
                remote,
                options,
            } => match ask(self, session, |reply| Op::FdConnect {
                handle,
                pair,
                remote,
                options,
                reply,
            }) {
                Ok((handle, outcome)) => (
                    Response {
                        errno: outcome.err().map_or(0, |e| e.number),
                        handle,
                    },
                    None,
                ),
                Err(e) => (failure(&e), None),
            },
            ChannelCall::Refused(e) => (failure(&e), None),
        }
    }

    /// Pumps one fd link; closes the socket when its client is gone.
    fn pump(&mut self, h: SocketHandle, hup: bool) {
        let now = self.now();
        if let Pumped::ClientClosed { unread } = self.fds.pump(&mut self.stack, now, h, hup)
            && let Err(e) = self.close_handle(h, unread)
        {
            tracing::debug!(handle = h.0, error = %e, "closing a socket whose fd was closed");
        }
        // The link holds nothing of its own: what the pair did not take
        // stays in the stack's buffers, charged through their reports.
        self.account_buffers();
    }

    // ------------------------------------------------------------ buffered bytes

    /// Marks session `id` for a buffered-bytes quota check.
    fn touch(&mut self, id: SessionId) {
        if let Some(usage) = self.sessions.get_mut(&id)
            && !usage.dirty
        {
            usage.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Takes the stack's buffer reports into the owners' counts, then
    /// limits or releases the sessions whose bytes changed (see the module
    /// docs). Returns whether some socket's level changed (the stack may
    /// have window updates to send and readiness to report).
    fn account_buffers(&mut self) -> bool {
        while let Some((h, bytes)) = self.stack.poll_buffered() {
            let Some(entry) = self.sockets.get_mut(&h) else {
                continue;
            };
            let bytes = buffered_u32(bytes);
            let before = std::mem::replace(&mut entry.buffered, bytes);
            let owner = self.owners[entry.owner].id;
            if let Some(usage) = self.sessions.get_mut(&owner) {
                usage.stack_bytes =
                    usage.stack_bytes.saturating_sub(before as usize) + bytes as usize;
            }
            self.touch(owner);
        }
        let mut changed = false;
        while let Some(id) = self.dirty.pop() {
            changed |= self.check_buffered_quota(id);
        }
        changed
    }

    /// Limits session `id` at its buffered-bytes quota, or releases it at
    /// 7/8 of it (the gap keeps a writer at the quota from flipping every
    /// socket on every segment). Returns whether its sockets changed level.
    fn check_buffered_quota(&mut self, id: SessionId) -> bool {
        let quota = self.quotas.buffered_bytes;
        let Some(usage) = self.sessions.get_mut(&id) else {
            return false;
        };
        usage.dirty = false;
        let used = usage.buffered();
        let twice = quota.saturating_mul(2);
        let level = match usage.level {
            _ if used >= twice => MemoryLevel::Exhausted,
            MemoryLevel::Exhausted if used >= twice - twice / 8 => MemoryLevel::Exhausted,
            _ if used >= quota => MemoryLevel::Full,
            MemoryLevel::Full | MemoryLevel::Exhausted if used >= quota - quota / 8 => {
                MemoryLevel::Full
            }
            _ => MemoryLevel::Normal,
        };
        let before = std::mem::replace(&mut usage.level, level);
        if level == before {
            return false;
        }
        if level > before && (before == MemoryLevel::Normal || level == MemoryLevel::Exhausted) {
            self.refusals.count_limited(id, used, quota, level);
        }
        let now = self.now();
        let owner = self.owners.of(id);
        let handles: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter(|(_, e)| Some(e.owner) == owner)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            let _ = self.stack.set_memory_level(now, h, level);
        }
        true
    }

    /// A new socket of `owner` starts at its session's level.
    fn apply_session_level(&mut self, h: SocketHandle, owner: SessionId) {
        let level = self
            .sessions
            .get(&owner)
            .map_or(MemoryLevel::Normal, |u| u.level);
        if level != MemoryLevel::Normal {
            let now = self.now();
            let _ = self.stack.set_memory_level(now, h, level);
        }
    }

    /// The stack and the taps together (the link feeds both).
    pub fn stack_and_taps(&mut self) -> (&mut Stack, &mut Taps) {
        (&mut self.stack, &mut self.taps)
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Whether session `id` has started and not ended.
    pub fn has_session(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    pub fn session_started(&mut self, id: SessionId) {
        self.sessions.entry(id).or_default();
    }

    /// Closes every socket of a session that ended, as the kernel does for
    /// a process that exits.
    pub fn session_ended(&mut self, id: SessionId) {
        self.sessions.remove(&id);
        self.fd_tokens.remove(&id);
        let channels: Vec<u64> = self
            .channels
            .iter()
            .filter(|(_, c)| c.session.id == id)
            .map(|(t, _)| *t)
            .collect();
        for token in channels {
            self.end_channel(token);
        }
        self.polls.retain(|p| p.session.id != id);
        for entry in self.sockets.values_mut() {
            entry.retain_sharers(|s| s.id != id);
        }
        // A shared socket of this session goes on with a co-owner: its
        // parked ops and quotas need a live session.
        let owner = self.owners.of(id);
        let inherited: Vec<(SocketHandle, SessionInfo)> = self
            .sockets
            .iter()
            .filter(|(_, e)| Some(e.owner) == owner)
            .filter_map(|(h, e)| e.sharers().first().map(|s| (*h, *s)))
            .collect();
        for (h, heir) in inherited {
            self.transfer_owner(h, heir);
        }
        // A socket with a live fd lives as long as some process holds its
        // end (the kernel closed this process's copies if it died).
        let fds = &self.fds;
        // (Inheriting sockets may have freed the session's reference.)
        let owner = self.owners.of(id);
        let handles: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter(|(h, e)| Some(e.owner) == owner && e.sharers().is_empty() && !fds.is_live(**h))
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
            if let Err(e) = self.close_handle(h, false) {
                tracing::debug!(handle = h.0, error = %e, "closing a dead session's socket");
            }
        }
    }

    /// Runs one op: answers it, or parks it; then charges what it made the
    /// stack buffer.
    pub fn execute(&mut self, request: Request) {
        self.run_op(request);
        self.account_buffers();
    }

    fn run_op(&mut self, request: Request) {
        let Request { session, op } = request;
        match op {
            Op::Socket { setup, reply } => {
                let _ = reply.send(self.socket(session, &setup));
            }
            Op::Bind {
                handle,
                addr,
                reply,
            } => {
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| self.bind(&session, h, addr));
                let _ = reply.send(result);
            }
            Op::Listen {
                setup,
                backlog,
                reply,
            } => {
                let _ = reply.send(self.listen(session, &setup, backlog));
            }
            Op::Accept {
                handle,
                wait,
                reply,
            } => match self.owned(&session, handle) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(h) => match self.try_accept(h, session) {
                    Attempt::Blocked if wait => self.park(
                        h,
                        Parked::Accept {
                            accepter: session,
                            reply,
                        },
                    ),
                    Attempt::Blocked => {
                        let _ = reply.send(Err(Errno::new(EAGAIN, "no connection to accept")));
                    }
                    Attempt::Done(r) => self.deliver(r, reply),
                },
            },
            Op::Connect {
                setup,
                remote,
                wait,
                reply,
            } => self.connect(session, setup, remote, wait, reply),
            Op::Read {
                handle,
                max_len,
                peek,
                wait,
                reply,
            } => match self.owned(&session, handle) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(h) => match self.try_read(h, max_len, peek) {
                    Attempt::Blocked if wait => self.park(
                        h,
                        Parked::Read {
                            max_len,
                            peek,
                            reply,
                        },
                    ),
                    Attempt::Blocked => {
                        let _ = reply.send(Err(Errno::from(tcpd_stack::RecvError::WouldBlock)));
                    }
                    Attempt::Done(r) => {
                        let _ = reply.send(r);
                    }
                },
            },
            Op::StreamRead { handle, reply } => match self.owned(&session, handle) {
                Err(e) => reply.send(Err(e)),
                Ok(h) => match self.try_read(h, reply.max_len(), false) {
                    Attempt::Blocked => self.park(h, Parked::StreamRead(reply)),
                    Attempt::Done(r) => reply.send(r),
                },
            },
            Op::Write {
                handle,
                data,
                flags,
                wait,
                reply,
            } => match self.owned(&session, handle) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(h) => match self.try_write(h, &data, flags, 0, wait) {
                    Ok(Attempt::Done(r)) => {
                        let _ = reply.send(r);
                    }
                    Ok(Attempt::Blocked) => {
                        let _ = reply.send(Err(Errno::from(tcpd_stack::SendError::WouldBlock)));
                    }
                    Err(written) => self.park(
                        h,
                        Parked::Write {
                            pending: PendingWrite::new(data, written),
                            flags,
                            reply,
                        },
                    ),
                },
            },
            Op::ReadUrgent {
                handle,
                peek,
                reply,
            } => {
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| Ok(self.stack.recv_urgent(h, peek)?.into_iter().collect()));
                let _ = reply.send(result);
            }
            Op::TcpInfo { handle, reply } => {
                let now = self.now();
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| Ok(self.stack.tcp_info(now, h)?));
                let _ = reply.send(result);
            }
            Op::Shutdown { handle, how, reply } => {
                let now = self.now();
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| Ok(self.stack.shutdown(now, h, how)?));
                let _ = reply.send(result);
            }
            Op::Close {
                handle,
                abort,
                consumed,
                reply,
            } => {
                let result = self.owned(&session, handle).and_then(|h| {
                    let unread = consumed
                        .is_some_and(|c| self.sockets.get(&h).is_some_and(|e| c < e.read_total));
                    self.close_handle(h, abort || unread)
                });
                let _ = reply.send(result);
            }
            Op::Address {
                handle,
                peer,
                reply,
            } => {
                let result = self.owned(&session, handle).and_then(|h| {
                    Ok(if peer {
                        self.stack.peer_addr(h)?
                    } else {
                        self.stack.local_addr(h)?
                    })
                });
                let _ = reply.send(result);
            }
            Op::SetOption {
                handle,
                option,
                reply,
            } => {
                let now = self.now();
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| Ok(self.stack.set_option(now, h, option)?));
                let _ = reply.send(result);
            }
            Op::GetOption {
                handle,
                name,
                reply,
            } => {
                let result = self
                    .owned(&session, handle)
                    .and_then(|h| Ok(self.stack.get_option(h, name)?));
                let _ = reply.send(result);
            }
            Op::Poll {
                entries,
                park,
                reply,
            } => {
                let ready = self.poll_ready(&session, &entries);
                if !park || ready.iter().any(|r| *r != 0) {
                    let _ = reply.send(Ok(ready));
                } else if self.charge_parked(session.id, 0).is_ok() {
                    self.polls.push(ParkedPoll {
                        session,
                        entries,
                        reply,
                    });
                } else {
                    let _ = reply.send(Err(Errno::new(EAGAIN, "too many blocked calls")));
                }
            }
            Op::Connections { reply } => {
                let _ = reply.send(Ok(self.connections()));
            }
            Op::Stats { reply } => {
                let _ = reply.send(Ok(self.stats()));
            }
            Op::Trace { filter, tx, reply } => {
                let _ = reply.send(self.trace_subscribe(session, filter, tx));
            }
            Op::Capture { filter, tx, reply } => {
                let _ = reply.send(self.capture_subscribe(session, filter, tx));
            }
            Op::OwnsSockets { reply } => {
                let owns = self
                    .sessions
                    .get(&session.id)
                    .is_some_and(|u| u.sockets > 0);
                let _ = reply.send(Ok(owns));
            }
            Op::Abort {
                local,
                remote,
                reply,
            } => {
                let now = self.now();
                let _ = reply.send(Ok(self.stack.abort_matching(now, local, remote)));
            }
            Op::FdToken { reply } => {
                let _ = reply.send(self.fd_token(session));
            }
            Op::FdHello {
                token,
                creds,
                reply,
            } => {
                let _ = reply.send(self.fd_hello(token, creds));
            }
            Op::FdNew { family, reply } => {
                let _ = reply.send(self.fd_new(session, family));
            }
            Op::FdAttach { handle, reply } => {
                let result = self.owned(&session, handle).and_then(|h| self.fd_attach(h));
                let _ = reply.send(result);
            }
            Op::FdClaim { fd, reply } => {
                let _ = reply.send(self.fd_claim(session, &fd));
            }
            Op::FdBind { stream, reply } => {
                let _ = reply.send(self.fd_bind(session, stream));
            }
            Op::FdAdopt {
                family,
                pair,
                reply,
            } => {
                let _ = reply.send(self.fd_adopt(session, family, pair).map(|h| h.0));
            }
            Op::FdConnect {
                handle,
                pair,
                remote,
                options,
                reply,
            } => {
                let _ = reply.send(self.fd_connect(session, handle, pair, remote, options));
            }
        }
    }

    // ------------------------------------------------------------ fd channel

    /// A one-time token binding an fd channel to `session` (replacing its
    /// previous unused one).
    fn fd_token(
        &mut self,
        session: SessionInfo,
    ) -> Result<[u8; tcpd_proto::fd_channel::TOKEN_LEN], Errno> {
        use rand::TryRngCore;
        if !self.sessions.contains_key(&session.id) {
            return Err(Errno::bad_handle());
        }
        let mut token = [0u8; tcpd_proto::fd_channel::TOKEN_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut token)
            .map_err(|e| Errno::new(tcpd_proto::errno::EIO, format!("random token: {e}")))?;
        self.fd_tokens.insert(session.id, (token, session));
        Ok(token)
    }

    /// The session a token was issued to, if the channel's peer is the same
    /// user (and process, when the kernel names both); the token is used up.
    fn fd_hello(
        &mut self,
        token: [u8; tcpd_proto::fd_channel::TOKEN_LEN],
        creds: Credentials,
    ) -> Result<SessionInfo, Errno> {
        let denied = || {
            Errno::new(
                tcpd_proto::errno::EACCES,
                "unknown or used fd-channel token",
            )
        };
        let id = self
            .fd_tokens
            .iter()
            .find(|(_, (t, _))| *t == token)
            .map(|(id, _)| *id)
            .ok_or_else(denied)?;
        let (_, owner) = self.fd_tokens.remove(&id).ok_or_else(denied)?;
        let same_process = owner.creds.pid == 0 || creds.pid == 0 || owner.creds.pid == creds.pid;
        if owner.creds.uid != creds.uid || !same_process {
            return Err(denied());
        }
        Ok(owner)
    }

    /// socket(2) with its fd: the handle and the client's end.
    fn fd_new(&mut self, session: SessionInfo, family: IpFamily) -> Result<(u64, OwnedFd), Errno> {
        let h = self.new_socket(session, family)?;
        match self.fds.create(h, true) {
            Ok(fd) => Ok((h.0, fd)),
            Err(e) => {
                let _ = self.close_handle(h, false);
                Err(Errno::from_io(&e))
            }
        }
    }

    /// socket(2) with a socketpair the client made (see
    /// [`FdLinks::adopt`] for what is checked).
    fn fd_adopt(
        &mut self,
        session: SessionInfo,
        family: IpFamily,
        pair: crate::fd_link::ClientPair,
    ) -> Result<SocketHandle, Errno> {
        if self.fds.by_client_cookie(pair.client_cookie).is_some() {
            return Err(Errno::new(
                tcpd_proto::errno::EEXIST,
                "this descriptor is a tcpd socket already (claim it)",
            ));
        }
        let h = self.new_socket(session, family)?;
        if let Err(e) = self.fds.adopt(h, pair) {
            let _ = self.close_handle(h, false);
            return Err(Errno::from_io(&e));
        }
        Ok(h)
    }

    /// connect(2) on the fd channel: never waits (the client waits on its
    /// descriptor, which turns writable when the handshake completes and
    /// reports POLLHUP when it fails, see `fd_link`). Options go on first.
    fn fd_connect(
        &mut self,
        session: SessionInfo,
        handle: u64,
        pair: Option<(IpFamily, crate::fd_link::ClientPair)>,
        remote: SocketAddr,
        options: Vec<SockOption>,
    ) -> Result<(u64, Result<(), Errno>), Errno> {
        let h = match pair {
            Some((family, pair)) => self.fd_adopt(session, family, pair)?,
            None => self.owned(&session, handle)?,
        };
        let (tx, mut rx) = oneshot::channel();
        let setup = SocketSetup {
            handle: Some(h.0),
            options,
            ..SocketSetup::default()
        };
        self.connect(session, setup, remote, false, tx);
        let outcome = match rx.try_recv() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Errno::new(tcpd_proto::errno::EIO, "connect gave no answer")),
        };
        Ok((h.0, outcome))
    }

    /// An fd for a socket of the session that has none (an accepted one).
    fn fd_attach(&mut self, h: SocketHandle) -> Result<OwnedFd, Errno> {
        if self.fds.contains(h) {
            return Err(Errno::new(
                tcpd_proto::errno::EEXIST,
                "the socket already has a file descriptor",
            ));
        }
        let fd = self.fds.create(h, false).map_err(|e| Errno::from_io(&e))?;
        // Data may be waiting already.
        self.pump(h, false);
        Ok(fd)
    }

    /// Adds `session` as a co-owner of the socket whose client end is `fd`
    /// (possession is the capability: the kernel passed the descriptor).
    /// The socket is found by the descriptor's socket cookie, which only
    /// that socket has (see [`crate::fd_link::socket_cookie`]): a session
    /// can claim only a socket its own process holds a descriptor of — one
    /// it inherited (fork, exec) or was sent (`SCM_RIGHTS`), as Linux lets
    /// such a process use it — never one it merely knows the handle,
    /// inode or address of. Anything but a socket is `ENOTSOCK`.
    fn fd_claim(&mut self, session: SessionInfo, fd: &OwnedFd) -> Result<u64, Errno> {
        if !self.sessions.contains_key(&session.id) {
            return Err(Errno::bad_handle());
        }
        let not_ours = || {
            Errno::new(
                tcpd_proto::errno::ENOTSOCK,
                "not a tcpd socket's descriptor",
            )
        };
        let cookie = crate::fd_link::socket_cookie(fd).map_err(|_| not_ours())?;
        let h = self.fds.by_client_cookie(cookie).ok_or_else(not_ours)?;
        let owner_alive = match self.sockets.get(&h) {
            Some(entry) => self.sessions.contains_key(&self.owners[entry.owner].id),
            None => return Err(Errno::bad_handle()),
        };
        if !owner_alive {
            // The creator's session ended and no co-owner was left (a
            // parent that exited after forking, an exec'd image): the
            // socket is the claimer's now.
            self.transfer_owner(h, session);
        } else if let Some(entry) = self.sockets.get_mut(&h)
            && self.owners[entry.owner].id != session.id
            && !entry.sharers().iter().any(|s| s.id == session.id)
        {
            entry.rare().sharers.push(session);
        }
        Ok(h.0)
    }

    /// Makes `heir` the owner of `h`: the socket and its parked ops count
    /// against `heir`'s session (and uid) from now on. Used when the
    /// owner's session ended while the socket lives on in a descriptor
    /// another session holds. The socket is counted even past `heir`'s
    /// quotas: it exists already, and close uncharges what it charged.
    fn transfer_owner(&mut self, h: SocketHandle, heir: SessionInfo) {
        let Some(entry) = self.sockets.get_mut(&h) else {
            return;
        };
        let heir_ref = self.owners.hold(heir);
        let old_ref = std::mem::replace(&mut entry.owner, heir_ref);
        let old = self.owners[old_ref];
        self.owners.release(old_ref);
        entry.retain_sharers(|s| s.id != heir.id);
        let parked = entry.parked().count();
        let parked_bytes: usize = entry.parked().map(ParkedRef::bytes).sum();
        let buffered = entry.buffered as usize;
        if old.id == heir.id {
            return;
        }
        if let Some(usage) = self.sessions.get_mut(&old.id) {
            usage.sockets = usage.sockets.saturating_sub(1);
            usage.parked = usage.parked.saturating_sub(parked);
            usage.parked_bytes = usage.parked_bytes.saturating_sub(parked_bytes);
            usage.stack_bytes = usage.stack_bytes.saturating_sub(buffered);
        }
        if let Some(usage) = self.sessions.get_mut(&heir.id) {
            usage.sockets += 1;
            usage.parked += parked;
            usage.parked_bytes += parked_bytes;
            usage.stack_bytes += buffered;
        }
        self.touch(old.id);
        self.touch(heir.id);
        let level = self
            .sessions
            .get(&heir.id)
            .map_or(MemoryLevel::Normal, |u| u.level);
        let now = self.now();
        let _ = self.stack.set_memory_level(now, h, level);
        if old.creds.uid != heir.creds.uid {
            self.uncharge_uid_socket(&old);
            if !heir.creds.exempt() {
                *self.uid_sockets.entry(heir.creds.uid).or_insert(0) += 1;
            }
        }
    }

    // ------------------------------------------------------------ ownership

    /// The handle if it exists and belongs to `session`; EBADF otherwise.
    fn owned(&self, session: &SessionInfo, handle: u64) -> Result<SocketHandle, Errno> {
        let h = SocketHandle(handle);
        match self.sockets.get(&h) {
            Some(entry)
                if self.owners[entry.owner].id == session.id
                    || entry.sharers().iter().any(|s| s.id == session.id) =>
            {
                Ok(h)
            }
            _ => Err(Errno::bad_handle()),
        }
    }

    /// A new socket for `owner`, within its quota; EBADF once its session
    /// has ended (the request was in flight).
    fn new_socket(&mut self, owner: SessionInfo, family: IpFamily) -> Result<SocketHandle, Errno> {
        let quota = self.quotas.sockets;
        let usage = self
            .sessions
            .get_mut(&owner.id)
            .ok_or_else(Errno::bad_handle)?;
        if usage.sockets >= quota {
            self.refusals.count(SessionQuota::Sockets, owner.id);
            return Err(Errno::new(
                EMFILE,
                format!("this session holds {quota} sockets (the daemon's per-session limit)"),
            ));
        }
        self.charge_uid_socket(&owner)?;
        if let Some(usage) = self.sessions.get_mut(&owner.id) {
            usage.sockets += 1;
        }
        let h = self.stack.socket_of(family);
        let owner_ref = self.owners.hold(owner);
        self.sockets.insert(h, SocketEntry::new(owner_ref));
        self.apply_session_level(h, owner.id);
        Ok(h)
    }

    /// Registers an accepted child for `owner` (the quota was checked by
    /// the accept attempt, or the child is closed at once).
    fn adopt(&mut self, h: SocketHandle, owner: SessionInfo) -> Result<(), Errno> {
        let quota = self.quotas.sockets;
        let admitted = match self.sessions.get(&owner.id) {
            Some(usage) if usage.sockets < quota => self.charge_uid_socket(&owner).map(|()| {
                if let Some(usage) = self.sessions.get_mut(&owner.id) {
                    usage.sockets += 1;
                }
            }),
            Some(_) => {
                self.refusals.count(SessionQuota::Sockets, owner.id);
                Err(Errno::new(EMFILE, "per-session socket limit reached"))
            }
            None => Err(Errno::bad_handle()),
        };
        if let Err(e) = admitted {
            let now = self.now();
            let _ = self.stack.close(now, h);
            return Err(e);
        }
        let owner_ref = self.owners.hold(owner);
        self.sockets.insert(h, SocketEntry::new(owner_ref));
        self.apply_session_level(h, owner.id);
        Ok(())
    }

    /// close(2) of a handle; `reset` sends RST (SO_LINGER 0).
    fn close_handle(&mut self, h: SocketHandle, reset: bool) -> Result<(), Errno> {
        self.fds.remove(h);
        if let Some(entry) = self.sockets.remove(&h) {
            // Dropping the parked replies tells their callers (EBADF).
            let owner = self.owners[entry.owner];
            self.owners.release(entry.owner);
            self.uncharge_uid_socket(&owner);
            if let Some(usage) = self.sessions.get_mut(&owner.id) {
                usage.sockets = usage.sockets.saturating_sub(1);
                usage.parked = usage.parked.saturating_sub(entry.parked().count());
                let bytes: usize = entry.parked().map(ParkedRef::bytes).sum();
                usage.parked_bytes = usage.parked_bytes.saturating_sub(bytes);
                // Its bytes become an orphan's (the stack's to bound).
                usage.stack_bytes = usage.stack_bytes.saturating_sub(entry.buffered as usize);
            }
            self.touch(owner.id);
        }
        let now = self.now();
        if reset {
            let _ = self
                .stack
                .set_option(now, h, SockOption::Linger(Some(Duration::ZERO)));
        }
        Ok(self.stack.close(now, h)?)
    }

    /// Counts one more socket against its owner's uid (root is exempt);
    /// EMFILE past `Quotas::sockets_per_uid`, logged the first time.
    fn charge_uid_socket(&mut self, owner: &SessionInfo) -> Result<(), Errno> {
        if owner.creds.exempt() {
            return Ok(());
        }
        let quota = self.quotas.sockets_per_uid;
        let held = self.uid_sockets.entry(owner.creds.uid).or_insert(0);
        if *held >= quota {
            self.uid_refusals += 1;
            if self.uid_refusals == 1 {
                tracing::warn!(
                    uid = owner.creds.uid,
                    quota,
                    "a uid reached --uid-max-sockets: its further sockets fail with EMFILE \
                     (logged once; `tcpctl stats` counts every refusal)"
                );
            }
            return Err(Errno::new(
                EMFILE,
                format!(
                    "uid {} holds {quota} sockets (the daemon's per-user limit)",
                    owner.creds.uid
                ),
            ));
        }
        *held += 1;
        Ok(())
    }

    fn uncharge_uid_socket(&mut self, owner: &SessionInfo) {
        if owner.creds.exempt() {
            return;
        }
        if let Some(held) = self.uid_sockets.get_mut(&owner.creds.uid) {
            *held -= 1;
            if *held == 0 {
                self.uid_sockets.remove(&owner.creds.uid);
            }
        }
    }

    /// Counts one more parked op (holding `bytes`) against the session's quotas.
    fn charge_parked(&mut self, id: SessionId, bytes: usize) -> Result<(), Errno> {
        let quotas = self.quotas;
        let usage = self.sessions.get_mut(&id).ok_or_else(Errno::bad_handle)?;
        if usage.parked >= quotas.pending_ops {
            self.refusals.count(SessionQuota::BlockedCalls, id);
            return Err(Errno::new(
                EAGAIN,
                format!(
                    "this session has {} blocked calls (limit)",
                    quotas.pending_ops
                ),
            ));
        }
        if usage.parked_bytes + bytes > quotas.buffered_bytes {
            self.refusals.count(SessionQuota::BufferedBytes, id);
            return Err(Errno::new(
                ENOBUFS,
                format!(
                    "this session's blocked writes hold {} bytes (limit {})",
                    usage.parked_bytes, quotas.buffered_bytes
                ),
            ));
        }
        usage.parked += 1;
        usage.parked_bytes += bytes;
        if bytes > 0 {
            self.touch(id);
        }
        Ok(())
    }

    fn uncharge_parked(&mut self, id: SessionId, bytes: usize) {
        if let Some(usage) = self.sessions.get_mut(&id) {
            usage.parked = usage.parked.saturating_sub(1);
            usage.parked_bytes = usage.parked_bytes.saturating_sub(bytes);
        }
        if bytes > 0 {
            self.touch(id);
        }
    }

    /// Parks `op` on `h`, or answers it with the quota's errno.
    fn park(&mut self, h: SocketHandle, op: Parked) {
        let Some(owner) = self.sockets.get(&h).map(|e| self.owners[e.owner].id) else {
            return; // Dropping the reply reports EBADF.
        };
        let creating = matches!(op, Parked::Connect { created: true, .. });
        if creating && op.caller_gone() {
            // The caller gave up while the op was queued (its notice may
            // have reached the driver first): nobody will learn the handle.
            let _ = self.close_handle(h, true);
            return;
        }
        if let Err(e) = self.charge_parked(owner, op.bytes()) {
            if matches!(op, Parked::Connect { created: true, .. }) {
                let _ = self.close_handle(h, false);
            }
            fail_parked(op, e);
            return;
        }
        if let Some(entry) = self.sockets.get_mut(&h) {
            entry.push_parked(op);
        }
        if creating {
            let sockets = &self.sockets;
            if let Some(usage) = self.sessions.get_mut(&owner) {
                // Pruned when it doubled since the last pruning: a list of
                // about the connects in progress, at O(1) per connect.
                if usage.connecting.len() >= 2 * usage.connecting_kept.max(8) {
                    usage.connecting.retain(|h| {
                        sockets
                            .get(h)
                            .is_some_and(|e| e.parked().any(ParkedRef::creates))
                    });
                    usage
                        .connecting
                        .shrink_to(2 * usage.connecting.len().max(8));
                    usage.connecting_kept = usage.connecting.len();
                }
                usage.connecting.push(h);
            }
        }
    }

    /// A caller of `session` gave up waiting for a connect (a Stream
    /// dropped before its SYN-ACK): as close(2) on a connecting socket,
    /// abort each such connect now, freeing its socket and quota charges,
    /// instead of when the handshake ends.
    pub fn connect_abandoned(&mut self, session: SessionId) {
        let Some(usage) = self.sessions.get_mut(&session) else {
            return;
        };
        let connecting = std::mem::take(&mut usage.connecting);
        let mut still = Vec::new();
        for h in connecting {
            let gone = self.sockets.get(&h).is_some_and(|e| {
                self.owners[e.owner].id == session && e.parked().any(ParkedRef::caller_gone)
            });
            if gone {
                self.retry_parked(h);
            }
            if self
                .sockets
                .get(&h)
                .is_some_and(|e| e.parked().any(ParkedRef::creates))
            {
                still.push(h);
            }
        }
        if let Some(usage) = self.sessions.get_mut(&session) {
            usage.connecting_kept = still.len();
            usage.connecting.extend(still);
        }
    }

    // ------------------------------------------------------------ attempts

    fn bind(
        &mut self,
        session: &SessionInfo,
        h: SocketHandle,
        addr: SocketAddr,
    ) -> Result<SocketAddr, Errno> {
        // Linux: binding a port below 1024 needs CAP_NET_BIND_SERVICE; tcpd asks for uid 0.
        if addr.port() != 0 && addr.port() < PRIVILEGED_PORT_LIMIT && !session.creds.is_root() {
            return Err(Errno::new(
                EACCES,
                format!("port {} is privileged (root only)", addr.port()),
            ));
        }
        self.stack.bind(h, addr)?;
        Ok(self.stack.local_addr(h)?)
    }

    /// The socket a setup names (or a new one), with its options and bind
    /// applied; the bool says whether it was created here. A new socket
    /// has the setup's family, else that of its bind address, else that of
    /// `remote` (the address it will connect to), else IPv4.
    fn prepare(
        &mut self,
        session: SessionInfo,
        setup: &SocketSetup,
        remote: Option<SocketAddr>,
    ) -> Result<(SocketHandle, bool), Errno> {
        let family = setup
            .family
            .or(setup.bind.as_ref().map(IpFamily::of))
            .or(remote.as_ref().map(IpFamily::of))
            .unwrap_or(IpFamily::V4);
        let (h, created) = match setup.handle {
            Some(handle) => (self.owned(&session, handle)?, false),
            None => (self.new_socket(session, family)?, true),
        };
        let now = self.now();
        let applied = setup
            .options
            .iter()
            .try_for_each(|o| Ok::<_, Errno>(self.stack.set_option(now, h, *o)?))
            .and_then(|()| match setup.bind {
                Some(addr) => self.bind(&session, h, addr).map(|_| ()),
                None => Ok(()),
            });
        self.undo_created(h, created, applied.map(|()| (h, created)))
    }

    /// A call that created its socket and then failed leaves no socket
    /// behind: closes `h` if `created` and `result` is an error.
    fn undo_created<T>(
        &mut self,
        h: SocketHandle,
        created: bool,
        result: Result<T, Errno>,
    ) -> Result<T, Errno> {
        if result.is_err() && created {
            let _ = self.close_handle(h, false);
        }
        result
    }

    fn socket(
        &mut self,
        session: SessionInfo,
        setup: &SocketSetup,
    ) -> Result<(u64, SocketAddr), Errno> {
        let (h, _) = self.prepare(session, setup, None)?;
        let local = self
            .stack
            .local_addr(h)
            .unwrap_or(IpFamily::V4.unspecified());
        Ok((h.0, local))
    }

    fn listen(
        &mut self,
        session: SessionInfo,
        setup: &SocketSetup,
        backlog: i32,
    ) -> Result<(u64, SocketAddr), Errno> {
        let (h, created) = self.prepare(session, setup, None)?;
        let backlog = u32::try_from(backlog)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(DEFAULT_BACKLOG);
        let listening = self
            .stack
            .listen(h, backlog)
            .map_err(Errno::from)
            .and_then(|()| Ok(self.stack.local_addr(h)?));
        self.undo_created(h, created, listening.map(|local| (h.0, local)))
    }

    fn connect(
        &mut self,
        session: SessionInfo,
        setup: SocketSetup,
        remote: SocketAddr,
        wait: bool,
        reply: Reply<Connected>,
    ) {
        if setup.handle.is_none() && !wait {
            let _ = reply.send(Err(Errno::new(
                EINVAL,
                "a non-blocking connect needs an existing socket",
            )));
            return;
        }
        let (h, created) = match self.prepare(session, &setup, Some(remote)) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let now = self.now();
        if let Err(e) = self.stack.connect(now, h, remote) {
            let _ = reply.send(self.undo_created(h, created, Err(e.into())));
            return;
        }
        if !wait {
            // POSIX: the handshake goes on; Poll reports OUT or ERR, SO_ERROR the outcome.
            let _ = reply.send(Err(Errno::new(EINPROGRESS, "connection in progress")));
            return;
        }
        match self.connect_outcome(h) {
            Attempt::Blocked => self.park(h, Parked::Connect { created, reply }),
            Attempt::Done(result) => self.finish_connect(h, created, result, reply),
        }
    }

    fn finish_connect(
        &mut self,
        h: SocketHandle,
        created: bool,
        result: Result<Connected, Errno>,
        reply: Reply<Connected>,
    ) {
        if result.is_err() {
            let _ = reply.send(self.undo_created(h, created, result));
        } else if created {
            self.deliver(result, reply);
        } else {
            let _ = reply.send(result);
        }
    }

    /// Hands a new connected socket to its caller; if the caller went away
    /// meanwhile, nobody will ever use the socket: reset and release it.
    fn deliver(&mut self, result: Result<Connected, Errno>, reply: Reply<Connected>) {
        if let Err(Ok(orphan)) = reply.send(result) {
            let _ = self.close_handle(SocketHandle(orphan.handle), true);
        }
    }

    /// The outcome of a connect in progress: done when the socket is
    /// writable (connected) or has a pending error (which this consumes, as
    /// a blocking connect(2) reports and clears it).
    fn connect_outcome(&mut self, h: SocketHandle) -> Attempt<Connected> {
        let ready = match self.stack.readiness(h) {
            Ok(r) => r,
            Err(e) => return Attempt::Done(Err(e.into())),
        };
        if ready.intersects(Readiness::ERR | Readiness::HUP) {
            return Attempt::Done(match self.stack.get_option(h, OptionName::Error) {
                Ok(SockOption::Error(Some(e))) => Err(e.into()),
                _ if ready.contains(Readiness::OUT) => self.connected(h),
                Ok(_) => Err(Errno::from(tcpd_stack::ConnError::Reset)),
                Err(e) => Err(e.into()),
            });
        }
        if ready.contains(Readiness::OUT) {
            return Attempt::Done(self.connected(h));
        }
        Attempt::Blocked
    }

    fn connected(&self, h: SocketHandle) -> Result<Connected, Errno> {
        Ok(Connected {
            handle: h.0,
            local: self.stack.local_addr(h)?,
            peer: self.stack.peer_addr(h)?,
        })
    }

    /// Accepts on listener `h` for `accepter`, which owns the new socket
    /// (as the process calling accept(2) owns the new descriptor: with a
    /// shared listener — a forked worker that claimed its parent's — that
    /// need not be the listener's owner).
    fn try_accept(&mut self, h: SocketHandle, accepter: SessionInfo) -> Attempt<Connected> {
        if !self.sockets.contains_key(&h) {
            return Attempt::Done(Err(Errno::bad_handle()));
        }
        let accepted = self.stack.accept(h);
        // The client drained the listener's signal byte before asking.
        self.fds.accepted(&self.stack, h);
        match accepted {
            Err(tcpd_stack::AcceptError::WouldBlock) => Attempt::Blocked,
            Err(e) => Attempt::Done(Err(e.into())),
            Ok((child, peer)) => Attempt::Done(self.adopt(child, accepter).and_then(|()| {
                Ok(Connected {
                    handle: child.0,
                    local: self.stack.local_addr(child)?,
                    peer,
                })
            })),
        }
    }

    /// Reads up to `max_len` bytes, copied once from the receive buffer into
    /// a vector sized by what is readable (a 1 MiB read of 100 bytes does
    /// not allocate 1 MiB).
    fn try_read(&mut self, h: SocketHandle, max_len: usize, peek: bool) -> Attempt<ReadData> {
        let readable = self.stack.socket_info(h).map_or(0, |info| info.recv_queue);
        // At least one byte, so that EOF and would-block are still told apart.
        let len = max_len.clamp(1, MAX_READ).min(readable.max(1));
        let now = self.now();
        let result = if peek {
            let mut data = vec![0u8; len];
            self.stack.recv(now, h, &mut data, true).map(|n| {
                data.truncate(n);
                ReadData::from(Bytes::from(data))
            })
        } else {
            // Slices of the receive queue, no copy (`Stack::recv_bytes`).
            let mut chunks = Vec::new();
            self.stack
                .recv_bytes(now, h, len, &mut chunks)
                .map(|_| ReadData::from(chunks))
        };
        match result {
            Err(tcpd_stack::RecvError::WouldBlock) => Attempt::Blocked,
            Err(e) => Attempt::Done(Err(e.into())),
            Ok(data) => {
                if !peek && let Some(entry) = self.sockets.get_mut(&h) {
                    entry.read_total += data.len() as u64;
                }
                Attempt::Done(Ok(data))
            }
        }
    }

    /// Queues `data[written..]`. `Err(written)`: blocked after `written`
    /// bytes with `wait` set (park it). Without `wait`, a full buffer is
    /// `Blocked` only when nothing was written.
    fn try_write(
        &mut self,
        h: SocketHandle,
        data: &WriteData,
        flags: SendFlags,
        mut written: usize,
        wait: bool,
    ) -> Result<Attempt<usize>, usize> {
        let now = self.now();
        while written < data.len() {
            match self
                .stack
                .send_with(now, h, data.contiguous_at(written), flags)
            {
                Ok(0) | Err(tcpd_stack::SendError::WouldBlock) => {
                    return if wait {
                        Err(written)
                    } else if written == 0 {
                        Ok(Attempt::Blocked)
                    } else {
                        Ok(Attempt::Done(Ok(written)))
                    };
                }
                Ok(n) => written += n,
                // write(2): a partial write reports the count, the error comes next time.
                Err(_) if written > 0 => return Ok(Attempt::Done(Ok(written))),
                Err(e) => return Ok(Attempt::Done(Err(e.into()))),
            }
        }
        Ok(Attempt::Done(Ok(written)))
    }

    /// Retries the ops parked on `h`, in order.
    fn retry_parked(&mut self, h: SocketHandle) {
        let Some(entry) = self.sockets.get_mut(&h) else {
            return;
        };
        let owner = self.owners[entry.owner].id;
        let first = entry.take_stream_read();
        let rest = match &mut entry.rare {
            Some(rare) => std::mem::take(&mut rare.parked),
            None => Vec::new(),
        };
        // The survivors, in order: a Stream's read that stays the oldest
        // goes back into the entry's slot, the others into its list.
        let mut still_first = None;
        let mut still = Vec::new();
        for op in first.into_iter().chain(rest) {
            match self.retry_one(h, owner, op) {
                Retried::Kept(op @ Parked::StreamRead(_))
                    if still_first.is_none() && still.is_empty() =>
                {
                    still_first = Some(op);
                }
                Retried::Kept(op) => still.push(op),
                Retried::Done => {}
                // A failed connect closed the socket; later ops see EBADF.
                Retried::SocketGone => return,
            }
        }
        if let Some(entry) = self.sockets.get_mut(&h) {
            // Ops parked during the retries (none today) go after the survivors.
            let newer_first = entry.take_stream_read();
            let newer = match &mut entry.rare {
                Some(rare) => std::mem::replace(&mut rare.parked, still),
                None if still.is_empty() => Vec::new(),
                None => {
                    entry.rare().parked = still;
                    Vec::new()
                }
            };
            if let Some(Parked::StreamRead(reply)) = still_first {
                entry.stream_read = reply;
            }
            for op in newer_first.into_iter().chain(newer) {
                entry.push_parked(op);
            }
            entry.tidy();
        }
    }

    /// Retries one parked op of `h` (owned by `owner`): answers it, or
    /// gives it back to stay parked.
    fn retry_one(&mut self, h: SocketHandle, owner: SessionId, op: Parked) -> Retried {
        let bytes = op.bytes();
        if op.caller_gone() {
            self.uncharge_parked(owner, bytes);
            if matches!(op, Parked::Connect { created: true, .. }) {
                // Nobody will learn this socket's handle.
                let _ = self.close_handle(h, true);
                return Retried::SocketGone;
            }
            return Retried::Done;
        }
        let kept = match op {
            Parked::Accept { accepter, reply } => match self.try_accept(h, accepter) {
                Attempt::Blocked => Some(Parked::Accept { accepter, reply }),
                Attempt::Done(r) => {
                    self.deliver(r, reply);
                    None
                }
            },
            Parked::Connect { created, reply } => match self.connect_outcome(h) {
                Attempt::Blocked => Some(Parked::Connect { created, reply }),
                Attempt::Done(r) => {
                    self.finish_connect(h, created, r, reply);
                    None
                }
            },
            Parked::Read {
                max_len,
                peek,
                reply,
            } => match self.try_read(h, max_len, peek) {
                Attempt::Blocked => Some(Parked::Read {
                    max_len,
                    peek,
                    reply,
                }),
                Attempt::Done(r) => {
                    let _ = reply.send(r);
                    None
                }
            },
            Parked::StreamRead(reply) => match self.try_read(h, reply.max_len(), false) {
                Attempt::Blocked => Some(Parked::StreamRead(reply)),
                Attempt::Done(r) => {
                    reply.send(r);
                    None
                }
            },
            Parked::Write {
                pending,
                flags,
                reply,
            } => match self.try_write(h, &pending.rest, flags, 0, true) {
                Err(now_written) => Some(Parked::Write {
                    pending: pending.advance(now_written),
                    flags,
                    reply,
                }),
                Ok(Attempt::Done(r)) => {
                    let _ = reply.send(pending.answer(r));
                    None
                }
                Ok(Attempt::Blocked) => None,
            },
        };
        let retried = match kept {
            Some(op) => {
                let now_bytes = op.bytes();
                if let Some(usage) = self.sessions.get_mut(&owner) {
                    usage.parked_bytes = usage.parked_bytes.saturating_sub(bytes - now_bytes);
                }
                if now_bytes != bytes {
                    self.touch(owner);
                }
                Retried::Kept(op)
            }
            None => {
                self.uncharge_parked(owner, bytes);
                Retried::Done
            }
        };
        if self.sockets.contains_key(&h) {
            retried
        } else {
            Retried::SocketGone
        }
    }

    /// Ready bits per poll entry (NVAL for handles not of this session).
    fn poll_ready(&self, session: &SessionInfo, entries: &[(u64, u32)]) -> Vec<u32> {
        // poll(2): ERR and HUP are reported whether asked for or not.
        let always = (Readiness::ERR | Readiness::HUP).bits();
        entries
            .iter()
            .map(|&(handle, events)| {
                match self
                    .owned(session, handle)
                    .ok()
                    .and_then(|h| self.stack.readiness(h).ok())
                {
                    Some(ready) => ready.bits() & (events | always),
                    None => POLLNVAL,
                }
            })
            .collect()
    }

    fn retry_polls(&mut self) {
        let polls = std::mem::take(&mut self.polls);
        for poll in polls {
            if poll.reply.is_closed() {
                self.uncharge_parked(poll.session.id, 0);
                continue;
            }
            let ready = self.poll_ready(&poll.session, &poll.entries);
            if ready.iter().any(|r| *r != 0) {
                self.uncharge_parked(poll.session.id, 0);
                let _ = poll.reply.send(Ok(ready));
            } else {
                self.polls.push(poll);
            }
        }
    }

    // ------------------------------------------------------------ admin

    /// Every socket and connection, with the owner's credentials for user sockets.
    fn connections(&self) -> Vec<(SocketInfo, Option<Credentials>)> {
        self.stack
            .sockets()
            .into_iter()
            .map(|info| {
                let owner = info
                    .handle
                    .and_then(|h| self.sockets.get(&h))
                    .map(|e| self.owners[e.owner].creds);
                (info, owner)
            })
            .collect()
    }

    /// The stack's counters and the number of connections per state.
    fn stats(&self) -> StatsSnapshot {
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
        counters.push(("api_sessions".to_string(), self.sessions.len() as u64));
        counters.push(("api_sockets".to_string(), self.sockets.len() as u64));
        counters.push(("api_refused_uid_sockets".to_string(), self.uid_refusals));
        counters.push(("api_refused_traces".to_string(), self.trace_refusals));
        counters.extend(self.refusals.counters());
        counters.push(("api_fd_sockets".to_string(), self.fds.len() as u64));
        let parked: usize = self.sessions.values().map(|u| u.parked).sum();
        counters.push(("api_blocked_calls".to_string(), parked as u64));
        let buffered: usize = self.sessions.values().map(SessionUse::buffered).sum();
        counters.push(("api_buffered_bytes".to_string(), buffered as u64));
        let limited = self
            .sessions
            .values()
            .filter(|u| u.level >= MemoryLevel::Full)
            .count();
        counters.push(("api_limited_sessions".to_string(), limited as u64));
        counters.push((
            "tcp_mem_bytes".to_string(),
            self.stack.buffered_total() as u64,
        ));
        counters.push(("orphan_bytes".to_string(), self.stack.orphan_bytes() as u64));
        StatsSnapshot {
            counters,
            per_state,
        }
    }

    /// Starts an Admin Trace of the connection `filter` selects; events go
    /// to `tx`. Root may trace anything; another caller only a connection
    /// given as an exact 4-tuple whose socket its uid owns (the trace shows
    /// sequence numbers, which would help to inject into others' streams).
    fn trace_subscribe(
        &mut self,
        session: SessionInfo,
        filter: tcpd_stack::TraceFilter,
        tx: tokio::sync::mpsc::Sender<tcpd_proto::v2::TraceEvent>,
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
        // The stack follows at most 64 traces (one bit each of a mask); the
        // last TRACE_SLOTS_FOR_ROOT are root's, so an operator can still
        // trace during an attack by users tracing their own connections.
        let root = session.creds.is_root();
        if !root
            && self.taps.traces.unprivileged()
                >= tcpd_stack::trace::MAX_TRACE_FILTERS - TRACE_SLOTS_FOR_ROOT
        {
            self.trace_refusals += 1;
            if self.trace_refusals == 1 {
                tracing::warn!(
                    uid = session.creds.uid,
                    "unprivileged callers hold every trace slot not kept for root: further \
                     traces fail with ENOBUFS (logged once; `tcpctl stats` counts \
                     api_refused_traces)"
                );
            }
            return Err(Errno::new(
                ENOBUFS,
                "too many traces at once (the last 16 of 64 are kept for root); try again later",
            ));
        }
        let slot = self
            .stack
            .trace_add(filter)
            .ok_or_else(|| Errno::new(ENOBUFS, "too many traces at once (64); try again later"))?;
        self.taps.traces.add(slot, tx, root);
        // An existing connection's `start` record is queued already.
        self.taps.traces.pump(&mut self.stack);
        Ok(())
    }

    /// Starts an Admin Capture (root only: packets carry every socket's
    /// payload); pcapng chunks go to `tx`.
    fn capture_subscribe(
        &mut self,
        session: SessionInfo,
        filter: tcpd_trace::capture::CaptureFilter,
        tx: tokio::sync::mpsc::Sender<tcpd_proto::v2::CaptureResponse>,
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

    /// Resets every synchronized connection and releases every socket (shutdown).
    pub fn abort_everything(&mut self) {
        let now = self.now();
        for info in self.stack.sockets() {
            let synchronized = !matches!(
                info.state,
                TcpState::Closed | TcpState::Listen | TcpState::TimeWait
            );
            if synchronized && !info.remote.ip().is_unspecified() {
                self.stack.abort_matching(now, info.local, info.remote);
            }
        }
        let handles: Vec<SocketHandle> = self.sockets.keys().copied().collect();
        for h in handles {
            let _ = self.close_handle(h, false);
        }
    }

    /// Publishes the stack's pending events: completes parked ops whose
    /// socket changed, then parked polls, then the admin feed. Returns
    /// whether a readiness change was handled (the stack may have more to
    /// send now).
    pub fn publish_events(&mut self) -> bool {
        // Levels changed by the accounting queue their readiness events
        // (and window updates) before the loop below.
        let mut any_readiness = self.account_buffers();
        while let Some(event) = self.stack.poll_event() {
            match event {
                StackEvent::Readiness { socket, .. } => {
                    any_readiness = true;
                    if self.fds.contains(socket) {
                        self.pump(socket, false);
                    }
                    self.retry_parked(socket);
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
                        .map(|e| self.owners[e.owner].creds.uid);
                    let _ = self.state_changes.send(StateChange {
                        timestamp_us,
                        local,
                        remote,
                        old,
                        new,
                        handle: socket.map_or(0, |h| h.0),
                        owner_uid,
                    });
                }
            }
        }
        if any_readiness && !self.polls.is_empty() {
            self.retry_polls();
        }
        any_readiness
    }
}

/// Answers a parked op that could not be parked.
fn fail_parked(op: Parked, e: Errno) {
    match op {
        Parked::Accept { reply, .. } | Parked::Connect { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Parked::Read { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Parked::StreamRead(reply) => reply.send(Err(e)),
        Parked::Write { reply, .. } => {
            let _ = reply.send(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The facade over real stacks, without a TUN: two facades whose packets
    //! are carried by hand; ops are answered at once or parked until the
    //! carried packets change the socket's readiness.
    use super::*;
    use crate::fuzzing::{A, B, facade, session, shuttle};
    use std::net::SocketAddrV4;
    use tcpd_proto::errno::{EBADF, ECONNREFUSED};
    use tokio::sync::oneshot;

    /// Runs `op` for `session`; its reply receiver (answered or parked).
    fn run<T>(
        s: &mut Sockets,
        session: SessionInfo,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> oneshot::Receiver<Result<T, Errno>> {
        let (reply, rx) = oneshot::channel();
        s.execute(Request {
            session,
            op: op(reply),
        });
        rx
    }

    /// The answer, which must be there.
    fn answer<T: std::fmt::Debug>(
        rx: &mut oneshot::Receiver<Result<T, Errno>>,
    ) -> Result<T, Errno> {
        rx.try_recv().expect("answered, not parked")
    }

    fn parked<T>(rx: &mut oneshot::Receiver<Result<T, Errno>>) -> bool {
        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    fn socket(s: &mut Sockets, who: SessionInfo) -> u64 {
        let mut rx = run(s, who, |reply| Op::Socket {
            setup: SocketSetup::default(),
            reply,
        });
        answer(&mut rx).expect("socket").0
    }

    #[test]
    fn a_poll_that_may_not_park_answers_with_the_current_events() {
        let mut s = facade(A, 1, Quotas::default());
        let alice = session(&mut s, 1, 1000);
        let h = socket(&mut s, alice);
        let mut rx = run(&mut s, alice, |reply| Op::Listen {
            setup: SocketSetup {
                handle: Some(h),
                options: vec![],
                bind: Some(SocketAddrV4::new(A, 7001).into()),
                family: None,
            },
            backlog: 0,
            reply,
        });
        answer(&mut rx).expect("listen");
        // A listener with nothing to accept: a parking poll waits...
        let mut waiting = run(&mut s, alice, |reply| Op::Poll {
            park: true,
            entries: vec![(h, 1)],
            reply,
        });
        assert!(parked(&mut waiting));
        // ...and poll(2) with a zero timeout answers at once, with no events.
        let mut rx = run(&mut s, alice, |reply| Op::Poll {
            park: false,
            entries: vec![(h, 1)],
            reply,
        });
        assert_eq!(answer(&mut rx), Ok(vec![0]));
    }

    #[test]
    fn handles_belong_to_their_session_and_die_with_it() {
        let mut s = facade(A, 1, Quotas::default());
        let alice = session(&mut s, 1, 1000);
        let bob = session(&mut s, 2, 1000);
        let h = socket(&mut s, alice);
        let mut rx = run(&mut s, bob, |reply| Op::Close {
            handle: h,
            abort: false,
            consumed: None,
            reply,
        });
        assert_eq!(answer(&mut rx).map_err(|e| e.number), Err(EBADF));
        let mut rx = run(&mut s, bob, |reply| Op::Poll {
            park: true,
            entries: vec![(h, 1)],
            reply,
        });
        assert_eq!(answer(&mut rx), Ok(vec![POLLNVAL]));
        let mut rx = run(&mut s, alice, |reply| Op::Listen {
            setup: SocketSetup {
                handle: Some(h),
                options: vec![SockOption::ReuseAddr(true)],
                bind: Some(SocketAddrV4::new(A, 7000).into()),
                family: None,
            },
            backlog: 0,
            reply,
        });
        assert_eq!(answer(&mut rx).map(|(_, l)| l.port()), Ok(7000));
        s.session_ended(alice.id);
        assert!(s.stack.sockets().is_empty(), "listener released");
        let mut rx = run(&mut s, alice, |reply| Op::Socket {
            setup: SocketSetup::default(),
            reply,
        });
        assert_eq!(answer(&mut rx).map_err(|e| e.number), Err(EBADF));
        assert!(s.stack.sockets().is_empty(), "no socket for a dead session");
    }

    #[test]
    fn privileged_ports_need_root() {
        let mut s = facade(A, 2, Quotas::default());
        let user = session(&mut s, 1, 1000);
        let mut rx = run(&mut s, user, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 80).into()),
                ..SocketSetup::default()
            },
            backlog: 1,
            reply,
        });
        assert_eq!(answer(&mut rx).map_err(|e| e.number), Err(EACCES));
        assert!(
            s.stack.sockets().is_empty(),
            "the failed batch leaves nothing"
        );
    }

    #[test]
    fn the_blocked_call_quota_is_eagain_and_counted() {
        let quotas = Quotas {
            pending_ops: 1,
            ..Quotas::default()
        };
        let mut s = facade(A, 3, quotas);
        let who = session(&mut s, 1, 1000);
        let mut rx = run(&mut s, who, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(A, 7004).into()),
                ..SocketSetup::default()
            },
            backlog: 4,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        let accept = |s: &mut Sockets| {
            run(s, who, |reply| Op::Accept {
                handle: l,
                wait: true,
                reply,
            })
        };
        let mut first = accept(&mut s);
        assert!(parked(&mut first));
        let mut second = accept(&mut s);
        assert_eq!(answer(&mut second).map_err(|e| e.number), Err(EAGAIN));
        assert!(
            s.stats()
                .counters
                .contains(&("api_refused_blocked_calls".to_string(), 1))
        );
    }

    #[test]
    fn the_socket_quota_is_emfile() {
        let quotas = Quotas {
            sockets: 2,
            ..Quotas::default()
        };
        let mut s = facade(A, 3, quotas);
        let who = session(&mut s, 1, 1000);
        let first = socket(&mut s, who);
        socket(&mut s, who);
        let mut rx = run(&mut s, who, |reply| Op::Socket {
            setup: SocketSetup::default(),
            reply,
        });
        assert_eq!(answer(&mut rx).map_err(|e| e.number), Err(EMFILE));
        assert!(
            s.stats()
                .counters
                .contains(&("api_refused_session_sockets".to_string(), 1))
        );
        let mut rx = run(&mut s, who, |reply| Op::Close {
            handle: first,
            abort: false,
            consumed: None,
            reply,
        });
        answer(&mut rx).expect("close");
        socket(&mut s, who);
    }

    /// A stats counter of `s`.
    fn stat(s: &Sockets, name: &str) -> u64 {
        s.stats()
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| panic!("no counter {name}"), |(_, v)| *v)
    }

    /// Issue 16: what a session's sockets hold in the stack counts against
    /// its buffered-bytes quota. A client writing toward a peer that never
    /// reads is limited at the quota: its writes get EAGAIN (non-blocking)
    /// or park (blocking), its sockets are not writable; another session
    /// writes on; once the peer reads and the session falls to 7/8 of the
    /// quota, its sockets are released and the parked write completes.
    #[test]
    fn a_session_at_its_buffered_bytes_quota_blocks_until_it_drains() {
        const QUOTA: usize = 256 << 10;
        const CHUNK: usize = 96 << 10;
        let quotas = Quotas {
            buffered_bytes: QUOTA,
            ..Quotas::default()
        };
        let mut a = facade(A, 21, quotas);
        let mut b = facade(B, 22, Quotas::default());
        let alice = session(&mut a, 1, 1000);
        let bob = session(&mut a, 2, 1001);
        let server = session(&mut b, 1, 1000);
        let mut rx = run(&mut b, server, |reply| Op::Listen {
            // The peer's 16 KiB window keeps nearly everything in A's send queues.
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7003).into()),
                options: vec![SockOption::RecvBuffer(16 << 10)],
                ..SocketSetup::default()
            },
            backlog: 16,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        let connect = |a: &mut Sockets, b: &mut Sockets, who: SessionInfo| {
            // A 1 MiB send buffer: the stack alone would take far more than the quota.
            let mut rx = run(a, who, |reply| Op::Connect {
                setup: SocketSetup {
                    options: vec![SockOption::SendBuffer(1 << 20)],
                    ..SocketSetup::default()
                },
                remote: SocketAddrV4::new(B, 7003).into(),
                wait: true,
                reply,
            });
            shuttle(a, b);
            let c = answer(&mut rx).expect("connected").handle;
            let mut rx = run(b, server, |reply| Op::Accept {
                handle: l,
                wait: false,
                reply,
            });
            (c, answer(&mut rx).expect("accepted").handle)
        };
        let conns: Vec<(u64, u64)> = (0..4).map(|_| connect(&mut a, &mut b, alice)).collect();
        let write = |a: &mut Sockets, who: SessionInfo, h: u64, wait: bool| {
            run(a, who, |reply| Op::Write {
                handle: h,
                data: Bytes::from(vec![7u8; CHUNK]).into(),
                flags: SendFlags::empty(),
                wait,
                reply,
            })
        };
        // Non-blocking writes round the sockets until EAGAIN.
        let mut accepted = 0;
        let mut refused = 0;
        for round in 0..4 {
            for (c, _) in &conns {
                match answer(&mut write(&mut a, alice, *c, false)) {
                    Ok(n) => accepted += n,
                    Err(e) => {
                        assert_eq!(e.number, EAGAIN, "round {round}");
                        refused += 1;
                    }
                }
                shuttle(&mut a, &mut b);
            }
        }
        let held = a.sessions[&alice.id].stack_bytes;
        assert_eq!(
            a.sessions[&alice.id].level,
            MemoryLevel::Full,
            "limited at {held}"
        );
        assert!(refused > 0);
        // One write may overshoot: it went in before the limit was noticed
        // (what the peer's window took since drained, but not to 7/8).
        assert!(
            (QUOTA - QUOTA / 8..=QUOTA + CHUNK).contains(&held),
            "holds {held}"
        );
        assert!(accepted <= QUOTA + CHUNK + 4 * (16 << 10));
        assert_eq!(stat(&a, "api_limited_buffered_bytes"), 1);
        assert_eq!(stat(&a, "api_limited_sessions"), 1);
        assert_eq!(stat(&a, "api_buffered_bytes"), held as u64);
        // Not writable; a blocking write parks (back-pressure, not ENOBUFS).
        let (c0, _) = conns[0];
        let mut rx = run(&mut a, alice, |reply| Op::Poll {
            entries: vec![(c0, Readiness::OUT.bits())],
            park: false,
            reply,
        });
        assert_eq!(answer(&mut rx), Ok(vec![0]));
        let mut blocked = write(&mut a, alice, c0, true);
        assert!(parked(&mut blocked));
        // Another session is not limited.
        let (bc, _) = connect(&mut a, &mut b, bob);
        assert_eq!(answer(&mut write(&mut a, bob, bc, false)), Ok(CHUNK));
        // The peer reads everything: alice drains, is released, and the
        // parked write goes through.
        let mut rounds = 0;
        let done = loop {
            if let Ok(result) = blocked.try_recv() {
                break result;
            }
            for (_, child) in &conns {
                let mut rx = run(&mut b, server, |reply| Op::Read {
                    handle: *child,
                    max_len: MAX_READ,
                    peek: false,
                    wait: false,
                    reply,
                });
                let _ = answer(&mut rx);
            }
            shuttle(&mut a, &mut b);
            rounds += 1;
            assert!(rounds < 10_000, "never released");
        };
        assert_eq!(done, Ok(CHUNK));
        assert!(
            a.sessions[&alice.id].level == MemoryLevel::Normal
                || a.sessions[&alice.id].buffered() >= QUOTA - QUOTA / 8
        );
        // Closing every socket leaves nothing charged.
        for (c, _) in conns.iter().chain([&(bc, 0)]) {
            let who = if *c == bc { bob } else { alice };
            let mut rx = run(&mut a, who, |reply| Op::Close {
                handle: *c,
                abort: true,
                consumed: None,
                reply,
            });
            answer(&mut rx).expect("close");
        }
        assert_eq!(a.sessions[&alice.id].stack_bytes, 0);
        assert_eq!(a.sessions[&bob.id].stack_bytes, 0);
        assert_eq!(stat(&a, "api_buffered_bytes"), 0);
    }

    /// Issue 16, receive side: a session that never reads, whose peers
    /// fill the windows its sockets advertised. At the quota its windows
    /// stop; at twice the quota its sockets drop what does not keep them
    /// progressing (counted as `rcvq_drops`), so what it holds stays near
    /// twice the quota however wide the windows were; once it reads, every
    /// byte arrives.
    #[test]
    fn a_session_at_twice_its_quota_drops_what_its_old_windows_let_in() {
        const QUOTA: usize = 64 << 10;
        const SENT: usize = 256 << 10;
        let quotas = Quotas {
            buffered_bytes: QUOTA,
            ..Quotas::default()
        };
        let mut a = facade(A, 31, quotas);
        let mut b = facade(B, 32, Quotas::default());
        let alice = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let mut rx = run(&mut b, server, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7004).into()),
                ..SocketSetup::default()
            },
            backlog: 16,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        let mut pairs = Vec::new();
        for _ in 0..4 {
            let mut rx = run(&mut a, alice, |reply| Op::Connect {
                setup: SocketSetup::default(),
                remote: SocketAddrV4::new(B, 7004).into(),
                wait: true,
                reply,
            });
            shuttle(&mut a, &mut b);
            let c = answer(&mut rx).expect("connected").handle;
            let mut rx = run(&mut b, server, |reply| Op::Accept {
                handle: l,
                wait: false,
                reply,
            });
            pairs.push((c, answer(&mut rx).expect("accepted").handle));
        }
        // The peer writes 256 KiB on each (blocking: parked in B).
        let data: Bytes = (0..SENT)
            .map(|i| (i % 239) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut writes: Vec<_> = pairs
            .iter()
            .map(|(_, child)| {
                run(&mut b, server, |reply| Op::Write {
                    handle: *child,
                    data: data.clone().into(),
                    flags: SendFlags::empty(),
                    wait: true,
                    reply,
                })
            })
            .collect();
        let mut peak = 0;
        for _ in 0..200 {
            shuttle(&mut a, &mut b);
            peak = peak.max(a.sessions[&alice.id].stack_bytes);
            // Let the peer's retransmission timers run.
            std::thread::sleep(Duration::from_millis(2));
            let now = b.now();
            b.stack_and_taps().0.handle_timeout(now);
        }
        assert!(stat(&a, "rcvq_drops") > 0, "nothing dropped");
        assert_eq!(stat(&a, "api_exhausted_buffered_bytes"), 1);
        // 4 × 128 KiB of windows were open; the session held about twice its
        // quota (plus what one batch of packets carried before it was seen).
        assert!(peak <= 2 * QUOTA + 64 * 1024, "peak {peak}");
        // Alice reads: everything arrives, in order.
        let mut got = vec![Vec::new(); pairs.len()];
        let mut rounds = 0;
        while got.iter().any(|g| g.len() < SENT) {
            for (i, (c, _)) in pairs.iter().enumerate() {
                let mut rx = run(&mut a, alice, |reply| Op::Read {
                    handle: *c,
                    max_len: MAX_READ,
                    peek: false,
                    wait: false,
                    reply,
                });
                if let Ok(data) = answer(&mut rx) {
                    got[i].extend_from_slice(&data.into_bytes());
                }
            }
            shuttle(&mut a, &mut b);
            std::thread::sleep(Duration::from_millis(2));
            let now = b.now();
            b.stack_and_taps().0.handle_timeout(now);
            rounds += 1;
            assert!(
                rounds < 5_000,
                "stalled: {:?}",
                got.iter().map(Vec::len).collect::<Vec<_>>()
            );
        }
        assert!(got.iter().all(|g| g[..] == data[..]), "data changed");
        for w in &mut writes {
            assert_eq!(
                w.try_recv().expect("the peer's write is answered"),
                Ok(SENT)
            );
        }
    }

    /// Item 3 of issue 16 for traces: a user tracing its own connection may
    /// take 48 of the stack's 64 trace slots; the last 16 stay root's
    /// (ENOBUFS for the user past that, counted as `api_refused_traces`).
    #[test]
    fn users_leave_trace_slots_to_root() {
        let mut a = facade(A, 41, Quotas::default());
        let mut b = facade(B, 42, Quotas::default());
        let alice = session(&mut a, 1, 1000);
        let admin = session(&mut a, 2, 0);
        let server = session(&mut b, 1, 1000);
        let mut rx = run(&mut b, server, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7005).into()),
                ..SocketSetup::default()
            },
            backlog: 4,
            reply,
        });
        answer(&mut rx).expect("listen");
        let mut rx = run(&mut a, alice, |reply| Op::Connect {
            setup: SocketSetup::default(),
            remote: SocketAddrV4::new(B, 7005).into(),
            wait: true,
            reply,
        });
        shuttle(&mut a, &mut b);
        let conn = answer(&mut rx).expect("connected");
        let filter = tcpd_stack::TraceFilter {
            local: conn.local,
            remote: conn.peer,
            port: None,
            next_only: false,
        };
        let mut keep = Vec::new();
        let mut trace = |a: &mut Sockets, who: SessionInfo| {
            let (tx, rx_events) = tokio::sync::mpsc::channel(16);
            keep.push(rx_events);
            let mut rx = run(a, who, |reply| Op::Trace { filter, tx, reply });
            answer(&mut rx)
        };
        for i in 0..48 {
            assert_eq!(trace(&mut a, alice), Ok(()), "trace {i}");
        }
        let refused = trace(&mut a, alice).expect_err("a 49th trace for a user");
        assert_eq!(refused.number, ENOBUFS);
        assert_eq!(stat(&a, "api_refused_traces"), 1);
        for i in 0..16 {
            assert_eq!(trace(&mut a, admin), Ok(()), "root's trace {i}");
        }
    }

    #[test]
    fn the_per_uid_socket_quota_spans_sessions_and_spares_root() {
        let quotas = Quotas {
            sockets_per_uid: 3,
            ..Quotas::default()
        };
        let mut s = facade(A, 3, quotas);
        let one = session(&mut s, 1, 1000);
        let two = session(&mut s, 2, 1000);
        let other = session(&mut s, 3, 1001);
        let root = session(&mut s, 4, 0);
        socket(&mut s, one);
        socket(&mut s, one);
        socket(&mut s, two);
        let mut rx = run(&mut s, two, |reply| Op::Socket {
            setup: SocketSetup::default(),
            reply,
        });
        assert_eq!(answer(&mut rx).map_err(|e| e.number), Err(EMFILE));
        // Another uid and root are not affected.
        socket(&mut s, other);
        for _ in 0..5 {
            socket(&mut s, root);
        }
        // So is a member of --admin-group.
        let mut admin = session(&mut s, 9, 1002);
        admin.creds.admin = true;
        for _ in 0..5 {
            socket(&mut s, admin);
        }
        // A session's end gives its sockets back to the uid.
        s.session_ended(one.id);
        socket(&mut s, two);
        socket(&mut s, two);
        assert!(
            s.stats()
                .counters
                .contains(&("api_refused_uid_sockets".to_string(), 1))
        );
    }

    /// The parked write of `s` (there is one): (bytes kept, still to queue).
    fn parked_write(s: &Sockets) -> Option<(usize, usize)> {
        s.sockets
            .values()
            .flat_map(SocketEntry::parked)
            .find_map(|op| match op {
                ParkedRef::Other(Parked::Write { pending, .. }) => {
                    Some((pending.held, pending.rest.len()))
                }
                _ => None,
            })
    }

    /// Issue 16: a blocking Write far bigger than the send buffer, to a peer
    /// that reads only now and then. The daemon keeps at most twice what
    /// the write still has to queue (the client's 4 MiB message is dropped
    /// once half of it went out), its session is charged exactly what is
    /// kept, and every byte arrives, in order.
    #[test]
    fn a_parked_write_keeps_at_most_twice_what_it_still_has_to_queue() {
        const LEN: usize = 4 << 20;
        let mut a = facade(A, 11, Quotas::default());
        let mut b = facade(B, 12, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let mut rx = run(&mut b, server, |reply| Op::Listen {
            // SO_RCVBUF 64 KiB (inherited by the accepted socket): the
            // peer's window holds back the rest until it reads.
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7002).into()),
                options: vec![SockOption::RecvBuffer(64 << 10)],
                ..SocketSetup::default()
            },
            backlog: 4,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        // SO_SNDBUF 64 KiB: the write goes out in many pieces.
        let mut connect = run(&mut a, client, |reply| Op::Connect {
            setup: SocketSetup {
                options: vec![SockOption::SendBuffer(64 << 10)],
                ..SocketSetup::default()
            },
            remote: SocketAddrV4::new(B, 7002).into(),
            wait: true,
            reply,
        });
        shuttle(&mut a, &mut b);
        let c = answer(&mut connect).expect("connected");
        let mut accept = run(&mut b, server, |reply| Op::Accept {
            handle: l,
            wait: false,
            reply,
        });
        let child = answer(&mut accept).expect("accepted");
        let data: Bytes = (0..LEN)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut write = run(&mut a, client, |reply| Op::Write {
            handle: c.handle,
            data: data.clone().into(),
            flags: SendFlags::empty(),
            wait: true,
            reply,
        });
        assert!(parked(&mut write), "4 MiB fit in the send buffer");
        let mut received = Vec::with_capacity(LEN);
        let mut least_held = LEN;
        let mut rounds = 0;
        let written = loop {
            if let Some((held, rest)) = parked_write(&a) {
                assert!(held <= 2 * rest, "keeps {held} bytes for {rest} to queue");
                assert_eq!(a.sessions[&client.id].parked_bytes, held);
                least_held = least_held.min(held);
            } else {
                assert_eq!(a.sessions[&client.id].parked_bytes, 0);
            }
            if let Ok(result) = write.try_recv() {
                break result.expect("the write completes");
            }
            // The peer reads what arrived, then the packets move.
            let mut read = run(&mut b, server, |reply| Op::Read {
                handle: child.handle,
                max_len: MAX_READ,
                peek: false,
                wait: false,
                reply,
            });
            if let Ok(data) = answer(&mut read) {
                received.extend_from_slice(&data.into_bytes());
            }
            shuttle(&mut a, &mut b);
            rounds += 1;
            assert!(rounds < 100_000, "the write never completed");
        };
        assert_eq!(written, LEN);
        assert!(least_held <= LEN / 2, "the message was never let go");
        while received.len() < LEN {
            shuttle(&mut a, &mut b);
            let mut read = run(&mut b, server, |reply| Op::Read {
                handle: child.handle,
                max_len: MAX_READ,
                peek: false,
                wait: false,
                reply,
            });
            received.extend_from_slice(&answer(&mut read).expect("the rest is there").into_bytes());
        }
        assert!(
            received == data,
            "the bytes arrived changed or out of order"
        );
    }

    #[test]
    fn parked_ops_complete_on_readiness_and_cancel_when_dropped() {
        let mut a = facade(A, 4, Quotas::default());
        let mut b = facade(B, 5, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let mut rx = run(&mut b, server, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7000).into()),
                ..SocketSetup::default()
            },
            backlog: 4,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        let mut nonblocking = run(&mut b, server, |reply| Op::Accept {
            handle: l,
            wait: false,
            reply,
        });
        assert_eq!(answer(&mut nonblocking).map_err(|e| e.number), Err(EAGAIN));
        let mut accept = run(&mut b, server, |reply| Op::Accept {
            handle: l,
            wait: true,
            reply,
        });
        assert!(parked(&mut accept));
        let mut connect = run(&mut a, client, |reply| Op::Connect {
            setup: SocketSetup::default(),
            remote: SocketAddrV4::new(B, 7000).into(),
            wait: true,
            reply,
        });
        assert!(parked(&mut connect));
        shuttle(&mut a, &mut b);
        let c = answer(&mut connect).expect("connected");
        let child = answer(&mut accept).expect("accepted");
        assert_eq!(child.peer.ip(), A);
        // A read waits; the peer's write completes it.
        let mut read = run(&mut b, server, |reply| Op::Read {
            handle: child.handle,
            max_len: 100,
            peek: false,
            wait: true,
            reply,
        });
        assert!(parked(&mut read));
        let mut write = run(&mut a, client, |reply| Op::Write {
            handle: c.handle,
            data: Bytes::from_static(b"ping").into(),
            flags: SendFlags::empty(),
            wait: true,
            reply,
        });
        assert_eq!(answer(&mut write), Ok(4));
        shuttle(&mut a, &mut b);
        assert_eq!(
            answer(&mut read).map(ReadData::into_bytes),
            Ok(Bytes::from_static(b"ping"))
        );
        // A cancelled read is dropped at the next readiness change.
        let read = run(&mut b, server, |reply| Op::Read {
            handle: child.handle,
            max_len: 100,
            peek: false,
            wait: true,
            reply,
        });
        assert_eq!(s_blocked(&b, server.id), 1);
        drop(read);
        let mut write = run(&mut a, client, |reply| Op::Write {
            handle: c.handle,
            data: Bytes::from_static(b"more").into(),
            flags: SendFlags::empty(),
            wait: true,
            reply,
        });
        answer(&mut write).expect("write");
        shuttle(&mut a, &mut b);
        assert_eq!(s_blocked(&b, server.id), 0, "the cancelled read is gone");
        // Closing with data the client never consumed resets (Linux).
        let mut close = run(&mut b, server, |reply| Op::Close {
            handle: child.handle,
            abort: false,
            consumed: Some(4),
            reply,
        });
        answer(&mut close).expect("close");
        shuttle(&mut a, &mut b);
        let mut read = run(&mut a, client, |reply| Op::Read {
            handle: c.handle,
            max_len: 100,
            peek: false,
            wait: false,
            reply,
        });
        assert_eq!(
            answer(&mut read).map_err(|e| e.number),
            Err(tcpd_proto::errno::ECONNRESET)
        );
    }

    /// A forked worker accepting on its parent's listener (nginx with a
    /// master process): the worker's session claims the listener by its
    /// descriptor, owns what it accepts (so it can attach a descriptor to
    /// it), and keeps the listener when the parent's session ends.
    #[test]
    fn a_claimed_listener_accepts_for_the_claimer_and_outlives_its_creator() {
        let mut a = facade(A, 8, Quotas::default());
        let mut b = facade(B, 9, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let parent = session(&mut b, 1, 1000);
        let worker = session(&mut b, 2, 1000);
        let mut new = run(&mut b, parent, |reply| Op::FdNew {
            family: IpFamily::V4,
            reply,
        });
        let (l, end) = answer(&mut new).expect("fd socket");
        let mut bind = run(&mut b, parent, |reply| Op::Bind {
            handle: l,
            addr: SocketAddrV4::new(B, 7002).into(),
            reply,
        });
        answer(&mut bind).expect("bind");
        let mut listen = run(&mut b, parent, |reply| Op::Listen {
            setup: SocketSetup {
                handle: Some(l),
                ..SocketSetup::default()
            },
            backlog: 4,
            reply,
        });
        answer(&mut listen).expect("listen");
        // The worker cannot use the handle before it claims the descriptor.
        let mut accept = run(&mut b, worker, |reply| Op::Accept {
            handle: l,
            wait: false,
            reply,
        });
        assert_eq!(answer(&mut accept).map_err(|e| e.number), Err(EBADF));
        let copy = end.try_clone().expect("dup of the client end");
        let mut claim = run(&mut b, worker, |reply| Op::FdClaim { fd: copy, reply });
        assert_eq!(answer(&mut claim), Ok(l));
        let mut accept = run(&mut b, worker, |reply| Op::Accept {
            handle: l,
            wait: true,
            reply,
        });
        assert!(parked(&mut accept));
        let mut connect = run(&mut a, client, |reply| Op::Connect {
            setup: SocketSetup::default(),
            remote: SocketAddrV4::new(B, 7002).into(),
            wait: true,
            reply,
        });
        shuttle(&mut a, &mut b);
        answer(&mut connect).expect("connected");
        let child = answer(&mut accept).expect("accepted by the worker");
        assert_eq!(
            b.owners[b.sockets[&SocketHandle(child.handle)].owner].id,
            worker.id
        );
        let mut attach = run(&mut b, worker, |reply| Op::FdAttach {
            handle: child.handle,
            reply,
        });
        answer(&mut attach).expect("the worker attaches a descriptor");
        // The parent's session ends (the master exits): the listener
        // lives on, owned by the worker, whose quota now counts it.
        b.session_ended(parent.id);
        assert_eq!(b.owners[b.sockets[&SocketHandle(l)].owner].id, worker.id);
        assert_eq!(b.sessions[&worker.id].sockets, 2);
        let mut accept = run(&mut b, worker, |reply| Op::Accept {
            handle: l,
            wait: true,
            reply,
        });
        assert!(parked(&mut accept), "parks, charged to the worker");
        assert_eq!(s_blocked(&b, worker.id), 1);
        drop(accept);
        // Its session ends too: a new one (an exec'd image) claims the
        // socket it still holds and becomes its owner.
        b.session_ended(worker.id);
        let heir = session(&mut b, 3, 1000);
        let mut claim = run(&mut b, heir, |reply| Op::FdClaim { fd: end, reply });
        assert_eq!(answer(&mut claim), Ok(l));
        assert_eq!(b.owners[b.sockets[&SocketHandle(l)].owner].id, heir.id);
    }

    /// The heir rule never hands a socket to a session whose process does
    /// not hold its descriptor: an orphaned socket (its owner's session
    /// ended, its descriptor lives on in a process that has not claimed
    /// it yet) cannot be attached, used or claimed by another user's
    /// session — not by handle, not with another socket, a file or a pipe
    /// — and its quota charge stays put. The descriptor itself, passed to
    /// a process (fork, exec, SCM_RIGHTS), is what claims it, as Linux
    /// lets whoever holds a descriptor use it.
    #[test]
    fn another_uid_cannot_claim_an_orphaned_socket() {
        let mut b = facade(B, 10, Quotas::default());
        let owner = session(&mut b, 1, 1000);
        let mut new = run(&mut b, owner, |reply| Op::FdNew {
            family: IpFamily::V4,
            reply,
        });
        let (h, end) = answer(&mut new).expect("fd socket");
        b.session_ended(owner.id);
        assert!(
            b.sockets.contains_key(&SocketHandle(h)),
            "orphaned: its descriptor is still open"
        );
        let thief = session(&mut b, 2, 2000);
        let mut attach = run(&mut b, thief, |reply| Op::FdAttach { handle: h, reply });
        assert_eq!(answer(&mut attach).err().map(|e| e.number), Some(EBADF));
        let mut close = run(&mut b, thief, |reply| Op::Close {
            handle: h,
            abort: true,
            consumed: None,
            reply,
        });
        assert_eq!(answer(&mut close).map_err(|e| e.number), Err(EBADF));
        // Descriptors the thief does hold: none of them names the socket.
        let (own_end, _other) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        let (pipe_r, _pipe_w) = nix::unistd::pipe().expect("pipe");
        for fd in [OwnedFd::from(own_end), OwnedFd::from(file), pipe_r] {
            let mut claim = run(&mut b, thief, |reply| Op::FdClaim { fd, reply });
            assert_eq!(
                answer(&mut claim).map_err(|e| e.number),
                Err(tcpd_proto::errno::ENOTSOCK)
            );
        }
        let entry = &b.sockets[&SocketHandle(h)];
        assert_eq!(b.owners[entry.owner].id, owner.id, "still the dead owner's");
        assert!(entry.sharers().is_empty());
        assert_eq!(b.sessions[&thief.id].sockets, 0);
        assert_eq!(
            b.uid_sockets.get(&2000),
            None,
            "nothing charged to the thief"
        );
        // The process that holds the descriptor (a forked child of the
        // same user) claims it: owner, and charged for it.
        let child = session(&mut b, 3, 1000);
        let copy = end.try_clone().expect("dup");
        let mut claim = run(&mut b, child, |reply| Op::FdClaim { fd: copy, reply });
        assert_eq!(answer(&mut claim), Ok(h));
        assert_eq!(b.owners[b.sockets[&SocketHandle(h)].owner].id, child.id);
        assert_eq!(b.sessions[&child.id].sockets, 1);
        // Still nothing for the thief by handle.
        let mut attach = run(&mut b, thief, |reply| Op::FdAttach { handle: h, reply });
        assert_eq!(answer(&mut attach).err().map(|e| e.number), Some(EBADF));
        // A descriptor *sent* to another user's process is that process's
        // to use, as on Linux: its claim makes it a co-owner.
        let mut claim = run(&mut b, thief, |reply| Op::FdClaim { fd: end, reply });
        assert_eq!(answer(&mut claim), Ok(h));
        assert_eq!(b.owners[b.sockets[&SocketHandle(h)].owner].id, child.id);
        assert!(
            b.sockets[&SocketHandle(h)]
                .sharers()
                .iter()
                .any(|s| s.id == thief.id)
        );
    }

    /// A socketpair the client made, handed over with its connect (one
    /// fd-channel request): the connect never waits; a refused one closes
    /// the daemon's end with the filler in it, so the client's end reports
    /// POLLERR|POLLHUP and its first plain read fails with ECONNRESET, as a
    /// failed connect does on Linux; SO_ERROR says ECONNREFUSED. The same
    /// client end cannot be registered twice, nor a pair whose daemon end
    /// is the client's end itself.
    #[test]
    fn a_client_made_pair_connects_in_one_request_and_a_refusal_shows_as_pollerr() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let mut a = facade(A, 11, Quotas::default());
        let mut b = facade(B, 12, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let (mut end, daemon_end) = std::os::unix::net::UnixStream::pair().expect("pair");
        end.set_nonblocking(true).expect("nonblocking");
        let mut filler = 0;
        while let Ok(n) = end.write(&[0u8; 4096]) {
            filler += n;
        }
        let pair = crate::fd_link::ClientPair {
            daemon_end: OwnedFd::from(daemon_end),
            client_cookie: crate::fd_link::socket_cookie(&end).expect("cookie"),
            filler,
        };
        let mut connect = run(&mut a, client, |reply| Op::FdConnect {
            handle: 0,
            pair: Some((IpFamily::V4, pair)),
            remote: SocketAddrV4::new(B, 7009).into(),
            options: Vec::new(),
            reply,
        });
        let (h, outcome) = answer(&mut connect).expect("a socket was made");
        assert_eq!(
            outcome.map_err(|e| e.number),
            Err(tcpd_proto::errno::EINPROGRESS)
        );
        // Registering the same client end again: EEXIST (claim it instead).
        let (_, other_daemon_end) = std::os::unix::net::UnixStream::pair().expect("pair");
        let again = crate::fd_link::ClientPair {
            daemon_end: OwnedFd::from(other_daemon_end),
            client_cookie: crate::fd_link::socket_cookie(&end).expect("cookie"),
            filler: 0,
        };
        let mut adopt = run(&mut a, client, |reply| Op::FdAdopt {
            family: IpFamily::V4,
            pair: again,
            reply,
        });
        assert_eq!(
            answer(&mut adopt).map_err(|e| e.number),
            Err(tcpd_proto::errno::EEXIST)
        );
        // A "pair" whose daemon end is the client's end: EINVAL.
        let (lone, _peer) = std::os::unix::net::UnixStream::pair().expect("pair");
        let cookie = crate::fd_link::socket_cookie(&lone).expect("cookie");
        let mut adopt = run(&mut a, client, |reply| Op::FdAdopt {
            family: IpFamily::V4,
            pair: crate::fd_link::ClientPair {
                daemon_end: OwnedFd::from(lone),
                client_cookie: cookie,
                filler: 0,
            },
            reply,
        });
        assert_eq!(answer(&mut adopt).map_err(|e| e.number), Err(libc::EINVAL));
        assert_eq!(a.sessions[&client.id].sockets, 1, "only the connected one");
        // Nobody listens on 7009: the RST fails the connect.
        shuttle(&mut a, &mut b);
        let mut fds = [nix::poll::PollFd::new(
            end.as_fd(),
            nix::poll::PollFlags::POLLOUT,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).expect("poll");
        let revents = fds[0].revents().expect("revents");
        assert!(
            revents.contains(nix::poll::PollFlags::POLLERR | nix::poll::PollFlags::POLLHUP),
            "{revents:?}"
        );
        let mut byte = [0u8; 1];
        assert_eq!(
            end.read(&mut byte).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ECONNRESET))
        );
        assert_eq!(end.read(&mut byte).ok(), Some(0), "then EOF");
        let mut error = run(&mut a, client, |reply| Op::GetOption {
            handle: h,
            name: OptionName::Error,
            reply,
        });
        assert_eq!(
            answer(&mut error).map(|o| matches!(o, SockOption::Error(Some(_)))),
            Ok(true),
            "SO_ERROR holds the refusal"
        );
    }

    /// Issue 16 and 11: received bytes a descriptor's full pair did not
    /// take stay in the stack's receive queue (the link's `writev` takes
    /// only what the pair accepts, partial writes included), count against
    /// the session's buffered bytes there, and reach the client whole and
    /// in order once it reads; closing gives the charge back.
    #[test]
    fn bytes_an_fd_pair_refused_stay_charged_in_the_stack_and_arrive_whole() {
        let mut a = facade(A, 13, Quotas::default());
        let mut b = facade(B, 14, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 0);
        let mut listen = run(&mut b, server, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, 7010).into()),
                ..SocketSetup::default()
            },
            backlog: 8,
            reply,
        });
        let (l, _) = answer(&mut listen).expect("listen");
        let (mut end, daemon_end) = std::os::unix::net::UnixStream::pair().expect("pair");
        end.set_nonblocking(true).expect("nonblocking");
        let pair = crate::fd_link::ClientPair {
            daemon_end: OwnedFd::from(daemon_end),
            client_cookie: crate::fd_link::socket_cookie(&end).expect("cookie"),
            filler: 0,
        };
        let mut connect = run(&mut a, client, |reply| Op::FdConnect {
            handle: 0,
            pair: Some((IpFamily::V4, pair)),
            remote: SocketAddrV4::new(B, 7010).into(),
            options: Vec::new(),
            reply,
        });
        let (h, _) = answer(&mut connect).expect("a socket was made");
        let h = SocketHandle(h);
        shuttle(&mut a, &mut b);
        let mut accept = run(&mut b, server, |reply| Op::Accept {
            handle: l,
            wait: false,
            reply,
        });
        let child = answer(&mut accept).expect("accepted").handle;
        // The client does not read yet: its pair fills, the rest waits in
        // the stack. Each write is a run of one byte value, so order and
        // completeness can be checked at the other end.
        let mut sent = Vec::new();
        for i in 0..200u8 {
            let chunk = Bytes::from(vec![i; 64 * 1024]);
            let mut write = run(&mut b, server, |reply| Op::Write {
                handle: child,
                data: chunk.clone().into(),
                flags: SendFlags::empty(),
                wait: false,
                reply,
            });
            if let Ok(n) = answer(&mut write) {
                sent.extend_from_slice(&chunk[..n]);
            }
            shuttle(&mut a, &mut b);
            if a.stack.socket_info(h).expect("info").recv_queue > 0 {
                break;
            }
        }
        let queued = a.stack.socket_info(h).expect("info").recv_queue;
        assert!(queued > 0, "the stack holds what the pair refused");
        let entry = &a.sockets[&h];
        assert!(
            entry.buffered as usize >= queued,
            "the stack's bytes are charged"
        );
        assert_eq!(a.sessions[&client.id].stack_bytes, entry.buffered as usize);
        // The client reads everything: nothing lost, nothing reordered.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        for _ in 0..10_000 {
            match std::io::Read::read(&mut end, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if got.len() == sent.len() {
                        break;
                    }
                    a.pump_fds();
                    shuttle(&mut a, &mut b);
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got.len(), sent.len(), "every byte arrived");
        assert!(got == sent, "in order");
        let mut close = run(&mut a, client, |reply| Op::Close {
            handle: h.0,
            abort: true,
            consumed: None,
            reply,
        });
        let _ = answer(&mut close);
        assert_eq!(a.sessions[&client.id].stack_bytes, 0);
    }

    /// A bound fd channel is served by the driver itself: requests written
    /// to it are answered when its readiness is pumped, descriptors ride
    /// along both ways, anything but a socket sent with a claim is
    /// ENOTSOCK, an unknown request ends the channel, and so does the end
    /// of its session.
    #[test]
    fn the_driver_serves_a_bound_fd_channel() {
        use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
        use std::io::{IoSlice, IoSliceMut, Read};
        use std::os::fd::AsRawFd;
        use tcpd_proto::fd_channel::{REQUEST_LEN, RESPONSE_LEN, Request, Response};
        let mut b = facade(B, 13, Quotas::default());
        let who = session(&mut b, 1, 1000);
        let (mut client, daemon_side) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut bind = run(&mut b, who, |reply| Op::FdBind {
            stream: OwnedFd::from(daemon_side),
            reply,
        });
        answer(&mut bind).expect("bound");
        let ask = |b: &mut Sockets,
                   client: &std::os::unix::net::UnixStream,
                   r: Request,
                   fd: Option<i32>| {
            let bytes = r.encode();
            let fds = fd.map(|f| [f]);
            let cmsgs: Vec<ControlMessage<'_>> = fds
                .as_ref()
                .map(|f| ControlMessage::ScmRights(f))
                .into_iter()
                .collect();
            let n = sendmsg::<()>(
                client.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &cmsgs,
                MsgFlags::empty(),
                None,
            )
            .expect("send");
            assert_eq!(n, REQUEST_LEN);
            b.pump_fds();
            let mut buf = [0u8; RESPONSE_LEN];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([i32; 1]);
            let msg = recvmsg::<()>(
                client.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT,
            )
            .expect("a response is there");
            let got = msg
                .cmsgs()
                .expect("cmsgs")
                .any(|c| matches!(c, ControlMessageOwned::ScmRights(_)));
            assert_eq!(msg.bytes, RESPONSE_LEN);
            (Response::decode(&buf), got)
        };
        let (r, with_fd) = ask(&mut b, &client, Request::New { family: 2 }, None);
        assert_eq!(r.errno, 0);
        assert!(r.handle != 0 && with_fd, "a handle and its descriptor");
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        let (r, _) = ask(&mut b, &client, Request::Claim, Some(file.as_raw_fd()));
        assert_eq!(r.errno, tcpd_proto::errno::ENOTSOCK);
        let (r, _) = ask(&mut b, &client, Request::Attach { handle: 999 }, None);
        assert_eq!(r.errno, EBADF);
        // The session ends: its channel is closed.
        b.session_ended(who.id);
        let mut rest = [0u8; 1];
        client.set_nonblocking(true).expect("nonblocking");
        assert_eq!(client.read(&mut rest).ok(), Some(0), "EOF");
        // An unknown request kind ends a channel at once.
        let who = session(&mut b, 2, 1000);
        let (mut client, daemon_side) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut bind = run(&mut b, who, |reply| Op::FdBind {
            stream: OwnedFd::from(daemon_side),
            reply,
        });
        answer(&mut bind).expect("bound");
        std::io::Write::write_all(&mut client, &[0xff; REQUEST_LEN]).expect("send");
        b.pump_fds();
        assert_eq!(client.read(&mut rest).ok(), Some(0), "EOF");
    }

    /// A Stream's down side as the driver sees it (see `socket_service`'s
    /// `StreamShared`): it wants its read until it is answered.
    struct TestReader {
        wants: std::sync::atomic::AtomicBool,
        answers: std::sync::Mutex<Vec<Result<ReadData, Errno>>>,
        dropped: std::sync::atomic::AtomicUsize,
    }

    impl TestReader {
        fn new() -> Arc<TestReader> {
            Arc::new(TestReader {
                wants: true.into(),
                answers: Default::default(),
                dropped: 0.into(),
            })
        }

        /// Reads again (the Stream sends its next read).
        fn read(self: &Arc<Self>) -> StreamReply {
            self.wants.store(true, Ordering::SeqCst);
            StreamReply::new(Arc::clone(self) as Arc<dyn crate::ops::StreamReader>)
        }

        fn answers(&self) -> Vec<Result<Bytes, i32>> {
            let answers = std::mem::take(&mut *self.answers.lock().unwrap());
            answers
                .into_iter()
                .map(|a| a.map(ReadData::into_bytes).map_err(|e| e.number))
                .collect()
        }

        fn dropped(&self) -> usize {
            self.dropped.load(Ordering::SeqCst)
        }
    }

    impl crate::ops::StreamReader for TestReader {
        fn max_len(&self) -> usize {
            100
        }

        fn wants(&self) -> bool {
            self.wants.load(Ordering::SeqCst)
        }

        fn deliver(&self, result: Result<ReadData, Errno>) {
            self.wants.store(false, Ordering::SeqCst);
            self.answers.lock().unwrap().push(result);
        }

        fn dropped(self: Arc<Self>) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// A listener on B's `port` (backlog 64) and `n` connections to it from
    /// A, each accepted: (client handle, server handle) pairs.
    fn connections(
        a: &mut Sockets,
        b: &mut Sockets,
        (client, server): (SessionInfo, SessionInfo),
        port: u16,
        n: usize,
    ) -> Vec<(u64, u64)> {
        let mut rx = run(b, server, |reply| Op::Listen {
            setup: SocketSetup {
                bind: Some(SocketAddrV4::new(B, port).into()),
                ..SocketSetup::default()
            },
            backlog: 64,
            reply,
        });
        let (l, _) = answer(&mut rx).expect("listen");
        (0..n)
            .map(|_| {
                let mut connect = run(a, client, |reply| Op::Connect {
                    setup: SocketSetup::default(),
                    remote: SocketAddrV4::new(B, port).into(),
                    wait: true,
                    reply,
                });
                shuttle(a, b);
                let mut accept = run(b, server, |reply| Op::Accept {
                    handle: l,
                    wait: false,
                    reply,
                });
                let c = answer(&mut connect).expect("connected").handle;
                (c, answer(&mut accept).expect("accepted").handle)
            })
            .collect()
    }

    fn write(s: &mut Sockets, who: SessionInfo, handle: u64, data: &'static [u8]) {
        let mut write = run(s, who, |reply| Op::Write {
            handle,
            data: Bytes::from_static(data).into(),
            flags: SendFlags::empty(),
            wait: true,
            reply,
        });
        assert_eq!(answer(&mut write), Ok(data.len()));
    }

    #[test]
    fn an_idle_sockets_entry_stays_small() {
        // The socket map's slot: 96 bytes before the Stream's read moved
        // into the entry, the rare parts into one box and the owner into
        // `Owners`.
        let slot = std::mem::size_of::<(SocketHandle, SocketEntry)>();
        assert!(slot <= 48, "a socket map slot takes {slot} bytes");
    }

    /// Owners are held once per session, counted, and their slots reused
    /// once no socket names them; sockets outliving their owner's session
    /// keep naming it until a claim transfers them.
    #[test]
    fn owners_are_counted_and_their_slots_reused() {
        let mut s = facade(A, 12, Quotas::default());
        let alice = session(&mut s, 1, 1000);
        let bob = session(&mut s, 2, 1001);
        let (a1, a2, b1) = (
            socket(&mut s, alice),
            socket(&mut s, alice),
            socket(&mut s, bob),
        );
        assert_eq!(s.owners.by_id.len(), 2);
        let alice_ref = s.owners.of(alice.id).expect("alice owns sockets");
        assert_eq!(s.owners[alice_ref], alice);
        let owner = |s: &Sockets, h: u64| s.owners[s.sockets[&SocketHandle(h)].owner].id;
        assert_eq!(
            (owner(&s, a1), owner(&s, a2), owner(&s, b1)),
            (alice.id, alice.id, bob.id)
        );
        for h in [a1, a2] {
            let mut close = run(&mut s, alice, |reply| Op::Close {
                handle: h,
                abort: false,
                consumed: None,
                reply,
            });
            answer(&mut close).expect("close");
        }
        assert_eq!(s.owners.of(alice.id), None, "released with its last socket");
        let carol = session(&mut s, 3, 1002);
        let c1 = socket(&mut s, carol);
        assert_eq!(s.owners.of(carol.id), Some(alice_ref), "the slot is reused");
        assert_eq!((owner(&s, b1), owner(&s, c1)), (bob.id, carol.id));
        s.session_ended(bob.id);
        s.session_ended(carol.id);
        assert!(s.owners.by_id.is_empty() && s.sockets.is_empty());
    }

    /// A Stream's read: parked in the socket's entry (no list, no box),
    /// answered into the Stream, in order with other reads, dropped when
    /// its Stream stops reading, and told (dropped unanswered) when its
    /// socket closes under it.
    #[test]
    fn a_streams_read_parks_in_its_entry_and_is_answered_into_the_stream() {
        let mut a = facade(A, 8, Quotas::default());
        let mut b = facade(B, 9, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let [(c, child)] = connections(&mut a, &mut b, (client, server), 7002, 1)[..] else {
            unreachable!("one")
        };
        fn entry(s: &Sockets, h: u64) -> &SocketEntry {
            &s.sockets[&SocketHandle(h)]
        }
        let stream = TestReader::new();
        b.execute(Request {
            session: server,
            op: Op::StreamRead {
                handle: child,
                reply: stream.read(),
            },
        });
        assert!(entry(&b, child).stream_read.is_set() && entry(&b, child).rare.is_none());
        assert_eq!(s_blocked(&b, server.id), 1);
        // A unary read parks behind it.
        let mut unary = run(&mut b, server, |reply| Op::Read {
            handle: child,
            max_len: 100,
            peek: false,
            wait: true,
            reply,
        });
        assert!(parked(&mut unary));
        write(&mut a, client, c, b"ping");
        shuttle(&mut a, &mut b);
        assert_eq!(stream.answers(), vec![Ok(Bytes::from_static(b"ping"))]);
        assert!(parked(&mut unary));
        // The Stream's next read is behind the older unary one...
        b.execute(Request {
            session: server,
            op: Op::StreamRead {
                handle: child,
                reply: stream.read(),
            },
        });
        assert!(!entry(&b, child).stream_read.is_set());
        write(&mut a, client, c, b"more");
        shuttle(&mut a, &mut b);
        assert_eq!(
            answer(&mut unary).map(ReadData::into_bytes),
            Ok(Bytes::from_static(b"more"))
        );
        // ...and, the oldest again, back in the entry.
        assert!(entry(&b, child).stream_read.is_set() && entry(&b, child).rare.is_none());
        assert_eq!(stream.dropped(), 0);
        // A Stream that stopped reading (closing) has its read dropped at
        // the next readiness change.
        stream.wants.store(false, Ordering::SeqCst);
        write(&mut a, client, c, b"late");
        shuttle(&mut a, &mut b);
        assert_eq!(s_blocked(&b, server.id), 0);
        assert!(!entry(&b, child).stream_read.is_set());
        assert!(stream.answers().is_empty());
        // A read parked when its socket closes is dropped unanswered: the
        // Stream learns it (EBADF on its side).
        let before = stream.dropped();
        b.execute(Request {
            session: server,
            op: Op::StreamRead {
                handle: child,
                reply: stream.read(),
            },
        });
        assert_eq!(stream.answers(), vec![Ok(Bytes::from_static(b"late"))]);
        b.execute(Request {
            session: server,
            op: Op::StreamRead {
                handle: child,
                reply: stream.read(),
            },
        });
        let mut close = run(&mut b, server, |reply| Op::Close {
            handle: child,
            abort: false,
            consumed: None,
            reply,
        });
        answer(&mut close).expect("close");
        assert_eq!(stream.dropped(), before + 1);
        assert_eq!(s_blocked(&b, server.id), 0);
        // A socket not the session's: EBADF, answered.
        b.execute(Request {
            session: server,
            op: Op::StreamRead {
                handle: child,
                reply: stream.read(),
            },
        });
        assert_eq!(stream.answers(), vec![Err(EBADF)]);
    }

    /// A session's list of sockets whose connect it created stays about as
    /// long as the connects in progress, however many sockets it holds.
    #[test]
    fn the_list_of_connects_in_progress_stays_short() {
        let mut a = facade(A, 10, Quotas::default());
        let mut b = facade(B, 11, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let server = session(&mut b, 1, 1000);
        let streams: Vec<_> = connections(&mut a, &mut b, (client, server), 7003, 40)
            .into_iter()
            .map(|(c, _)| {
                // Each with a Stream's read parked, as idle connections.
                let stream = TestReader::new();
                a.execute(Request {
                    session: client,
                    op: Op::StreamRead {
                        handle: c,
                        reply: stream.read(),
                    },
                });
                stream
            })
            .collect();
        assert_eq!(s_blocked(&a, client.id), 40);
        let listed = a.sessions[&client.id].connecting.len();
        assert!(listed <= 16, "{listed} sockets listed as connecting");
        drop(streams);
    }

    fn s_blocked(s: &Sockets, id: SessionId) -> usize {
        s.sessions.get(&id).map_or(0, |u| u.parked)
    }

    #[test]
    fn a_refused_connect_reports_econnrefused_and_frees_the_socket() {
        let mut a = facade(A, 6, Quotas::default());
        let mut b = facade(B, 7, Quotas::default());
        let client = session(&mut a, 1, 1000);
        let mut connect = run(&mut a, client, |reply| Op::Connect {
            setup: SocketSetup::default(),
            remote: SocketAddrV4::new(B, 7001).into(),
            wait: true,
            reply,
        });
        assert!(parked(&mut connect));
        shuttle(&mut a, &mut b);
        assert_eq!(
            answer(&mut connect).map_err(|e| e.number),
            Err(ECONNREFUSED)
        );
        assert!(
            a.sockets.is_empty(),
            "the socket made for the connect is gone"
        );
        assert_eq!(s_blocked(&a, client.id), 0);
    }
}
