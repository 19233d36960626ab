//! The daemon's shards: one driver each (a stack, a TUN queue, an op
//! channel), and the routing of API calls to them (daemon/DESIGN-multicore.md).
//!
//! Owns: the list of shards' [`DriverHandle`]s, the choice of a shard for a
//! new socket, and the listener groups (a listening socket replicated in
//! every shard). A socket handle names its shard in its high bits
//! ([`SHARD_SHIFT`]: each shard's stack tags the handles it makes,
//! `StackConfig::handle_tag`), so a call on an existing socket goes to
//! [`Shards::of`] its handle — an index, no lookup. With one shard (the
//! default) the tag is 0: handles, ops and replies are what they were
//! before shards existed, and nothing here takes a lock.
//!
//! Several shards (`--shards N`): the kernel picks the TUN queue, hence the
//! shard, of every packet it sends (see the design note); so
//! - a new socket goes to the next shard in turn ([`Shards::pick`]); a
//!   connect from it leaves on its shard's queue and the kernel answers on
//!   the same queue;
//! - a listener is replicated ([`Shards::listen`]): the home socket (the
//!   handle the client knows) plus a mirror bound to the same address in
//!   every other shard, owned by the same session; [`Shards::accept`]
//!   takes a connection from whichever member has one (and parks polls on
//!   all of them when none has); closing the home socket closes the
//!   mirrors; a session's end forgets its groups (each shard closes its
//!   own sockets);
//! - poll(2) over handles of several shards asks each shard for its own
//!   entries (a listener's entry stands for its whole group);
//! - the admin calls are merged: connections listed from every shard,
//!   counters summed, aborts summed, traces followed in every shard, the
//!   Watch feed is one broadcast all shards send into.
//!
//! Not spanned yet (refused with `EOPNOTSUPP` when there are several
//! shards): the fd channel (libtcpd, tcpd-run — its bound channel is served
//! inside one driver) and Capture (a pcapng stream per shard would need
//! merging). Quotas are per shard: a session may hold up to N times its
//! per-session limits across N shards.

use crate::busy_poll::{self, BusyPoll};
use crate::errno::Errno;
use crate::ops::{Connected, DriverHandle, Op, OpCall, Reply, SocketSetup, StatsSnapshot};
use crate::session::{SessionEvents, SessionId, SessionInfo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tcpd_proto::errno::{EAGAIN, EOPNOTSUPP};
use tcpd_stack::{OptionName, SocketInfo};

/// Bits of a handle below its shard number. Handles are a counter per
/// stack, far below 2^48; the shard number stays below bit 63, which the fd
/// links' epoll tokens use for fd channels.
pub const SHARD_SHIFT: u32 = 48;
/// Most shards a daemon may run (shard numbers fit below bit 63).
pub const MAX_SHARDS: usize = 64;

/// The handle tag of shard `index` (`StackConfig::handle_tag`).
pub fn handle_tag(index: usize) -> u64 {
    (index as u64) << SHARD_SHIFT
}

/// The shard a handle names.
pub fn shard_of(handle: u64) -> usize {
    (handle >> SHARD_SHIFT) as usize
}

/// Shard `index`'s slice of the ephemeral port range, of `count` shards:
/// disjoint slices, so two shards never choose the same 4-tuple for their
/// connects (each slice keeps an even number of ports where it can, as
/// Linux's scans want). The whole range with one shard, or when the range
/// is too small to split (every shard then scans all of it).
pub fn port_slice(
    range: tcpd_stack::LocalPortRange,
    index: usize,
    count: usize,
) -> tcpd_stack::LocalPortRange {
    let count = count.max(1) as u32;
    let each = (range.size() / count) & !1;
    if count == 1 || each < 2 {
        return range;
    }
    let index = (index as u32).min(count - 1);
    let first = u32::from(range.first()) + index * each;
    let last = if index == count - 1 {
        u32::from(range.last())
    } else {
        first + each - 1
    };
    // Both ends lie within `range`, so they fit in u16.
    tcpd_stack::LocalPortRange::new(first as u16, last as u16).unwrap_or(range)
}

/// `poll(2)`'s POLLIN: a listener with a connection to accept.
const POLLIN: u32 = tcpd_stack::Readiness::IN.bits();

/// Options a listener's mirrors copy from it: what its accepted
/// connections inherit or what decides which connections it takes, among
/// those whose value reads back as it was set. Buffer sizes are not copied
/// (Linux reports twice what was set); a mirror's children use the
/// defaults for them.
const MIRRORED_OPTIONS: [OptionName; 9] = [
    OptionName::ReuseAddr,
    OptionName::V6Only,
    OptionName::NoDelay,
    OptionName::KeepAlive,
    OptionName::KeepIdle,
    OptionName::KeepInterval,
    OptionName::KeepCount,
    OptionName::Congestion,
    OptionName::UserTimeout,
];

/// The listeners replicated across shards, by their home handle.
#[derive(Debug, Default)]
pub struct ListenerGroups {
    groups: Mutex<HashMap<u64, Group>>,
}

#[derive(Clone, Debug)]
struct Group {
    owner: SessionId,
    /// Every member's handle, the home first.
    members: Vec<u64>,
}

impl ListenerGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn members(&self, home: u64) -> Option<Vec<u64>> {
        self.lock().get(&home).map(|g| g.members.clone())
    }

    /// Forgets the groups of a session that ended (each shard closes the
    /// members it holds).
    pub fn session_ended(&self, id: SessionId) {
        self.lock().retain(|_, g| g.owner != id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The shards; see the module docs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shards {
    drivers: Arc<[Arc<DriverHandle>]>,
    next: Arc<AtomicUsize>,
    listeners: Arc<ListenerGroups>,
    /// The shards' busy-pollers, for their counters in Stats (none when
    /// `--busy-poll-us 0`).
    busy_polls: Arc<[Arc<BusyPoll>]>,
}

impl Shards {
    /// The shards whose drivers `drivers` command, shard `i` tagging its
    /// handles with [`handle_tag`]`(i)`.
    pub fn new(drivers: Vec<DriverHandle>) -> Shards {
        assert!(
            !drivers.is_empty() && drivers.len() <= MAX_SHARDS,
            "1 to {MAX_SHARDS} shards"
        );
        Shards {
            drivers: drivers.into_iter().map(Arc::new).collect(),
            next: Arc::default(),
            listeners: Arc::default(),
            busy_polls: Arc::new([]),
        }
    }

    /// These shards, whose drivers' turns `busy_polls` follow.
    pub fn with_busy_polls(self, busy_polls: Vec<Arc<BusyPoll>>) -> Shards {
        Shards {
            busy_polls: busy_polls.into(),
            ..self
        }
    }

    /// The first shard (the only one by default): the shard of what does
    /// not span shards.
    pub fn first(&self) -> &Arc<DriverHandle> {
        &self.drivers[0]
    }

    /// Every shard's driver, shard 0 first.
    pub fn drivers(&self) -> &[Arc<DriverHandle>] {
        &self.drivers
    }

    /// The shard of an existing socket. A handle naming no shard goes to the
    /// first, which answers EBADF as for any unknown handle.
    #[inline]
    pub fn of(&self, handle: u64) -> &Arc<DriverHandle> {
        self.drivers
            .get(shard_of(handle))
            .unwrap_or(&self.drivers[0])
    }

    /// The shard for a new socket: each in turn.
    pub fn pick(&self) -> &Arc<DriverHandle> {
        if self.drivers.len() == 1 {
            return &self.drivers[0];
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.drivers.len();
        &self.drivers[i]
    }

    /// The shard of `setup`'s socket, or a new socket's.
    pub fn for_setup(&self, setup: &SocketSetup) -> &Arc<DriverHandle> {
        match setup.handle {
            Some(handle) => self.of(handle),
            None => self.pick(),
        }
    }

    /// Sends the op built by `op` to the shard of `handle`.
    pub fn start<T>(
        &self,
        handle: u64,
        session: SessionInfo,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> OpCall<T> {
        self.of(handle).start(session, op)
    }

    /// Sends the op to the shard of `handle` and awaits its reply.
    pub async fn call<T>(
        &self,
        handle: u64,
        session: SessionInfo,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, Errno> {
        self.of(handle).start(session, op).await
    }

    /// Where sessions report their start and end: every shard.
    pub fn session_events(&self) -> SessionEvents {
        SessionEvents::new(
            self.drivers.iter().map(|d| d.sessions.clone()).collect(),
            (self.drivers.len() > 1).then(|| Arc::clone(&self.listeners)),
        )
    }

    /// Refuses what does not span shards yet (see the module docs).
    pub fn single(&self, what: &str) -> Result<&Arc<DriverHandle>, Errno> {
        if self.drivers.len() == 1 {
            Ok(&self.drivers[0])
        } else {
            Err(Errno::new(
                EOPNOTSUPP,
                format!("{what} is not available with several shards (--shards 1)"),
            ))
        }
    }

    // ------------------------------------------------------------ listeners

    /// [socket + options + bind +] listen, replicated in every shard.
    pub async fn listen(
        &self,
        session: SessionInfo,
        setup: SocketSetup,
        backlog: i32,
    ) -> Result<(u64, SocketAddr), Errno> {
        let home = self.for_setup(&setup);
        let again = match setup.handle {
            Some(h) if self.drivers.len() > 1 => self.listeners.members(h),
            _ => None,
        };
        let (handle, local) = home
            .call(session, |reply| Op::Listen {
                setup,
                backlog,
                reply,
            })
            .await?;
        if self.drivers.len() == 1 {
            return Ok((handle, local));
        }
        if let Some(members) = again {
            // listen(2) again (a new backlog): every member.
            for &mirror in &members[1..] {
                let setup = SocketSetup {
                    handle: Some(mirror),
                    ..SocketSetup::default()
                };
                self.call(mirror, session, |reply| Op::Listen {
                    setup,
                    backlog,
                    reply,
                })
                .await?;
            }
            return Ok((handle, local));
        }
        let mut options = Vec::new();
        for name in MIRRORED_OPTIONS {
            if let Ok(option) = self
                .call(handle, session, |reply| Op::GetOption {
                    handle,
                    name,
                    reply,
                })
                .await
            {
                options.push(option);
            }
        }
        let mut members = vec![handle];
        for (index, shard) in self.drivers.iter().enumerate() {
            if index == shard_of(handle) {
                continue;
            }
            let setup = SocketSetup {
                handle: None,
                options: options.clone(),
                bind: Some(local),
                family: None,
            };
            let mirrored = shard
                .call(session, |reply| Op::Listen {
                    setup,
                    backlog,
                    reply,
                })
                .await;
            match mirrored {
                Ok((mirror, _)) => members.push(mirror),
                Err(e) => {
                    // All or nothing: the home socket stays (listening in
                    // its shard only would refuse the others' SYNs).
                    for &h in &members {
                        let _ = self.close_one(session, h, true).await;
                    }
                    return Err(e);
                }
            }
        }
        self.listeners.lock().insert(
            handle,
            Group {
                owner: session.id,
                members,
            },
        );
        Ok((handle, local))
    }

    /// accept(2) on a listener: from whichever member of its group has a
    /// connection (the home first, then the others in turn); with `wait`,
    /// parks a poll on every member until one has.
    pub async fn accept(
        &self,
        session: SessionInfo,
        handle: u64,
        wait: bool,
    ) -> Result<Connected, Errno> {
        let group = if self.drivers.len() > 1 {
            self.listeners.members(handle)
        } else {
            None
        };
        let members = match group {
            Some(members) => members,
            None => {
                return self
                    .call(handle, session, |reply| Op::Accept {
                        handle,
                        wait,
                        reply,
                    })
                    .await;
            }
        };
        loop {
            for &member in &members {
                match self
                    .call(member, session, |reply| Op::Accept {
                        handle: member,
                        wait: false,
                        reply,
                    })
                    .await
                {
                    Err(e) if e.number == EAGAIN => {}
                    outcome => return outcome,
                }
            }
            if !wait {
                return Err(Errno::new(EAGAIN, "no connection to accept"));
            }
            // Polls have no side effect: dropping the ones that lost the
            // race cancels them without losing a connection.
            let polls = members.iter().map(|&member| {
                self.start(member, session, |reply| Op::Poll {
                    entries: vec![(member, POLLIN)],
                    park: true,
                    reply,
                })
            });
            let (ready, _, _) = futures::future::select_all(polls).await;
            let ready = ready?;
            if ready.first().is_some_and(|r| *r & POLLIN == 0) {
                // POLLNVAL, POLLERR...: the accept on it reports why.
                return self
                    .call(handle, session, |reply| Op::Accept {
                        handle,
                        wait: false,
                        reply,
                    })
                    .await;
            }
        }
    }

    /// close(2): of a listener, its whole group.
    pub async fn close(&self, session: SessionInfo, handle: u64, abort: bool) -> Result<(), Errno> {
        if self.drivers.len() > 1 {
            let owned = {
                let mut groups = self.listeners.lock();
                match groups.get(&handle) {
                    Some(g) if g.owner == session.id => groups.remove(&handle),
                    _ => None,
                }
            };
            if let Some(group) = owned {
                let closed = self.close_one(session, handle, abort).await;
                for &mirror in &group.members[1..] {
                    let _ = self.close_one(session, mirror, abort).await;
                }
                return closed;
            }
        }
        self.close_one(session, handle, abort).await
    }

    async fn close_one(&self, session: SessionInfo, handle: u64, abort: bool) -> Result<(), Errno> {
        self.call(handle, session, |reply| Op::Close {
            handle,
            abort,
            consumed: None,
            reply,
        })
        .await
    }

    // ------------------------------------------------------------ poll

    /// poll(2) over `entries`: each shard answers for its own; a listener's
    /// entry stands for its group. With `park`, waits until some entry has
    /// events (the first shard to report wins; the others' polls are
    /// dropped).
    pub async fn poll(
        &self,
        session: SessionInfo,
        entries: Vec<(u64, u32)>,
        park: bool,
    ) -> Result<Vec<u32>, Errno> {
        if self.drivers.len() == 1 {
            return self
                .first()
                .call(session, |reply| Op::Poll {
                    entries,
                    park,
                    reply,
                })
                .await;
        }
        // Per shard: its entries and, for each, the index it answers for.
        type ShardEntries = (Vec<(u64, u32)>, Vec<usize>);
        let mut per_shard: Vec<ShardEntries> = vec![(Vec::new(), Vec::new()); self.drivers.len()];
        for (index, &(handle, events)) in entries.iter().enumerate() {
            let members = self
                .listeners
                .members(handle)
                .unwrap_or_else(|| vec![handle]);
            for member in members {
                let slot = &mut per_shard[shard_of(member).min(self.drivers.len() - 1)];
                slot.0.push((member, events));
                slot.1.push(index);
            }
        }
        let asked: Vec<usize> = (0..per_shard.len())
            .filter(|&s| !per_shard[s].0.is_empty())
            .collect();
        let mut ready = vec![0u32; entries.len()];
        let merge = |ready: &mut Vec<u32>, shard: usize, answer: Vec<u32>| {
            for (&index, events) in per_shard[shard].1.iter().zip(answer) {
                ready[index] |= events;
            }
        };
        for &s in &asked {
            let mine = per_shard[s].0.clone();
            let answer = self.drivers[s]
                .call(session, |reply| Op::Poll {
                    entries: mine,
                    park: false,
                    reply,
                })
                .await?;
            merge(&mut ready, s, answer);
        }
        if !park || ready.iter().any(|r| *r != 0) {
            return Ok(ready);
        }
        let polls = asked.iter().map(|&s| {
            let mine = per_shard[s].0.clone();
            let call = self.drivers[s].start(session, |reply| Op::Poll {
                entries: mine,
                park: true,
                reply,
            });
            Box::pin(async move { (s, call.await) })
        });
        let ((s, answer), _, _) = futures::future::select_all(polls).await;
        merge(&mut ready, s, answer?);
        Ok(ready)
    }

    // ------------------------------------------------------------ admin

    /// Every socket of every shard, with its owner.
    pub async fn connections(
        &self,
        session: SessionInfo,
    ) -> Result<Vec<(SocketInfo, Option<crate::session::Credentials>)>, Errno> {
        let mut rows = Vec::new();
        for shard in self.drivers.iter() {
            rows.extend(
                shard
                    .call(session, |reply| Op::Connections { reply })
                    .await?,
            );
        }
        Ok(rows)
    }

    /// Every shard's counters and per-state counts, summed by name (the
    /// session count, which every shard keeps whole, is not summed), and
    /// the busy-pollers' counters, read outside the drivers' turns (so the
    /// spin this call's own turn starts is not in them).
    pub async fn stats(&self, session: SessionInfo) -> Result<StatsSnapshot, Errno> {
        let mut merged: Option<StatsSnapshot> = None;
        for shard in self.drivers.iter() {
            let one = shard.call(session, |reply| Op::Stats { reply }).await?;
            merged = Some(match merged {
                None => one,
                Some(mut sum) => {
                    merge_counters(&mut sum.counters, one.counters);
                    merge_counters(&mut sum.per_state, one.per_state);
                    sum
                }
            });
        }
        let mut merged = merged.expect("at least one shard");
        let mut busy_poll = [0; busy_poll::COUNTER_NAMES.len()];
        for one in self.busy_polls.iter() {
            for (sum, n) in busy_poll.iter_mut().zip(one.counters()) {
                *sum += n;
            }
        }
        let names = busy_poll::COUNTER_NAMES.iter().map(|name| name.to_string());
        merged.counters.extend(names.zip(busy_poll));
        Ok(merged)
    }

    /// Whether session `id` owns a socket in some shard (true if a shard
    /// cannot say, so a session is never dropped by mistake).
    pub async fn session_owns_sockets(&self, id: SessionId) -> bool {
        for shard in self.drivers.iter() {
            if shard.session_owns_sockets(id).await {
                return true;
            }
        }
        false
    }

    /// Admin Abort in every shard: how many connections were reset.
    pub async fn abort(
        &self,
        session: SessionInfo,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<usize, Errno> {
        let mut aborted = 0;
        for shard in self.drivers.iter() {
            aborted += shard
                .call(session, |reply| Op::Abort {
                    local,
                    remote,
                    reply,
                })
                .await?;
        }
        Ok(aborted)
    }

    /// Admin Trace in every shard, events to one channel. It succeeds if
    /// some shard took it (a user's trace of its own connection is refused
    /// by the shards that do not hold it); otherwise the first refusal.
    pub async fn trace(
        &self,
        session: SessionInfo,
        filter: tcpd_stack::TraceFilter,
        tx: tokio::sync::mpsc::Sender<tcpd_proto::v2::TraceEvent>,
    ) -> Result<(), Errno> {
        let mut refused = None;
        let mut taken = false;
        for shard in self.drivers.iter() {
            let tx = tx.clone();
            match shard
                .call(session, |reply| Op::Trace { filter, tx, reply })
                .await
            {
                Ok(()) => taken = true,
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) if !taken => Err(e),
            _ => Ok(()),
        }
    }

    /// Resets everything in every shard; returns when all have.
    pub async fn terminate(&self) {
        for shard in self.drivers.iter() {
            shard.terminate().await;
        }
    }
}

/// Adds `more`'s counters into `sum` by name; `api_sessions` (every shard
/// sees every session) takes the largest.
fn merge_counters(sum: &mut Vec<(String, u64)>, more: Vec<(String, u64)>) {
    for (name, value) in more {
        match sum.iter_mut().find(|(n, _)| *n == name) {
            Some((n, v)) if n == "api_sessions" => *v = (*v).max(value),
            Some((_, v)) => *v += value,
            None => sum.push((name, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two shards in one process: two facades at the daemon's address,
    //! tagged 0 and 1, and a peer stack. The loop that carries packets
    //! steers them as the kernel's multi-queue TUN does (tun.c automq): a
    //! flow's packets go to the shard that last sent one of its packets;
    //! a new flow's go to the shards in turn (the kernel hashes).
    use super::*;
    use crate::ops::{Control, Queued, SessionSlots};
    use crate::session::{Credentials, SessionEvent};
    use crate::sockets::{Clock, Quotas, Sockets};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use tcpd_stack::{Stack, StackConfig};
    use tokio::sync::{broadcast, mpsc};

    const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    struct Inbox {
        ops: mpsc::Receiver<Queued>,
        sessions: mpsc::UnboundedReceiver<SessionEvent>,
        control: mpsc::UnboundedReceiver<Control>,
    }

    fn driver(state_changes: &broadcast::Sender<crate::ops::StateChange>) -> (DriverHandle, Inbox) {
        let (ops_tx, ops) = mpsc::channel(crate::ops::OP_CHANNEL_CAPACITY);
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let handle = DriverHandle {
            ops: ops_tx,
            slots: Arc::new(SessionSlots::default()),
            limit_counters: Arc::default(),
            control: control_tx,
            sessions: sessions_tx,
            state_changes: state_changes.clone(),
        };
        (
            handle,
            Inbox {
                ops,
                sessions,
                control,
            },
        )
    }

    fn facade(address: Ipv4Addr, shard: usize, seed: u64) -> Sockets {
        let clock = Clock::start();
        let mut config = StackConfig::new(address, 24);
        config.rng_seed = seed;
        config.isn_secret = [7; 16];
        config.handle_tag = handle_tag(shard);
        Sockets::new(
            Stack::new(config, clock.now()),
            clock,
            Quotas::default(),
            broadcast::channel(64).0,
        )
    }

    /// The TCP ports of an IPv4 packet (source, destination).
    fn ports(packet: &[u8]) -> (u16, u16) {
        let at = usize::from(packet[0] & 0x0f) * 4;
        (
            u16::from_be_bytes([packet[at], packet[at + 1]]),
            u16::from_be_bytes([packet[at + 2], packet[at + 3]]),
        )
    }

    /// The kernel's queue choice: (daemon port, peer port) -> shard.
    #[derive(Default)]
    struct Steering {
        flows: HashMap<(u16, u16), usize>,
        next_new: usize,
    }

    /// Carries packets until every stack is quiet.
    fn shuttle(shards: &mut [Sockets], peer: &mut Sockets, steering: &mut Steering) {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut moved = false;
            for (index, shard) in shards.iter_mut().enumerate() {
                let now = shard.now();
                while let Some(n) = shard.stack_and_taps().0.poll_transmit(now, &mut buf) {
                    // Written on queue `index`: the kernel remembers it.
                    steering.flows.insert(ports(&buf[..n]), index);
                    let now = peer.now();
                    peer.stack_and_taps().0.handle_packet(now, &buf[..n]);
                    moved = true;
                }
            }
            let now = peer.now();
            while let Some(n) = peer.stack_and_taps().0.poll_transmit(now, &mut buf) {
                let (from, to) = ports(&buf[..n]);
                let count = shards.len();
                let index = *steering.flows.entry((to, from)).or_insert_with(|| {
                    steering.next_new += 1;
                    steering.next_new % count
                });
                let shard = &mut shards[index];
                let now = shard.now();
                shard.stack_and_taps().0.handle_packet(now, &buf[..n]);
                moved = true;
            }
            let mut events = peer.publish_events();
            for shard in shards.iter_mut() {
                events |= shard.publish_events();
            }
            if !moved && !events {
                return;
            }
        }
    }

    /// Runs the facades: ops and session events of every inbox (the last
    /// is the peer's), timers, packets.
    async fn drive(mut facades: Vec<Sockets>, mut inboxes: Vec<Inbox>) {
        let mut peer = facades.pop().expect("a peer");
        let mut steering = Steering::default();
        loop {
            for (index, inbox) in inboxes.iter_mut().enumerate() {
                let facade = facades.get_mut(index).unwrap_or(&mut peer);
                while let Ok(event) = inbox.sessions.try_recv() {
                    match event {
                        SessionEvent::Started(id) => facade.session_started(id),
                        SessionEvent::Ended(id) => facade.session_ended(id),
                    }
                }
                while let Ok(queued) = inbox.ops.try_recv() {
                    facade.execute(queued.request);
                }
                while let Ok(control) = inbox.control.try_recv() {
                    match control {
                        Control::ConnectAbandoned(id) => facade.connect_abandoned(id),
                        Control::Close(request) => facade.execute(request),
                        Control::Terminate(done) => {
                            facade.abort_everything();
                            let _ = done.send(());
                        }
                    }
                }
            }
            for s in facades.iter_mut().chain(std::iter::once(&mut peer)) {
                let now = s.now();
                let (stack, _) = s.stack_and_taps();
                if stack.poll_timeout().is_some_and(|at| at <= now) {
                    stack.handle_timeout(now);
                }
            }
            shuttle(&mut facades, &mut peer, &mut steering);
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    fn who(id: u64) -> SessionInfo {
        SessionInfo {
            id: SessionId(id),
            creds: Credentials {
                uid: 0,
                gid: 0,
                pid: 1,
                admin: false,
            },
        }
    }

    /// Two shards and a peer, running; the session `who(1)` started on all.
    fn two_shards() -> (
        Shards,
        Arc<DriverHandle>,
        impl std::future::Future<Output = ()>,
    ) {
        let (state_changes, _) = broadcast::channel(64);
        let mut handles = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..3 {
            let (handle, inbox) = driver(&state_changes);
            handles.push(handle);
            inboxes.push(inbox);
        }
        let facades = vec![facade(A, 0, 1), facade(A, 1, 2), facade(B, 0, 3)];
        let peer = Arc::new(handles.pop().expect("three"));
        let shards = Shards::new(handles);
        shards
            .session_events()
            .send(SessionEvent::Started(SessionId(1)))
            .expect("inboxes live");
        peer.sessions
            .send(SessionEvent::Started(SessionId(1)))
            .expect("inbox lives");
        (shards, peer, drive(facades, inboxes))
    }

    async fn peer_connect(peer: &DriverHandle, port: u16) -> Connected {
        peer.call(who(1), |reply| Op::Connect {
            setup: SocketSetup::default(),
            remote: SocketAddrV4::new(A, port).into(),
            wait: true,
            reply,
        })
        .await
        .expect("the peer connects")
    }

    async fn write(shards: &Shards, handle: u64, data: &'static [u8]) {
        let written = shards
            .call(handle, who(1), |reply| Op::Write {
                handle,
                data: bytes::Bytes::from_static(data).into(),
                flags: tcpd_stack::SendFlags::empty(),
                wait: true,
                reply,
            })
            .await
            .expect("written");
        assert_eq!(written, data.len());
    }

    async fn read(driver: &DriverHandle, handle: u64) -> Vec<u8> {
        driver
            .call(who(1), |reply| Op::Read {
                handle,
                max_len: 1024,
                peek: false,
                wait: true,
                reply,
            })
            .await
            .expect("read")
            .into_bytes()
            .to_vec()
    }

    #[test]
    fn shards_connect_from_disjoint_port_slices() {
        let range = tcpd_stack::LocalPortRange::LINUX_DEFAULT;
        assert_eq!(port_slice(range, 0, 1), range);
        let halves = [port_slice(range, 0, 2), port_slice(range, 1, 2)];
        assert_eq!((halves[0].first(), halves[0].last()), (32768, 46883));
        assert_eq!((halves[1].first(), halves[1].last()), (46884, 60999));
        let small = tcpd_stack::LocalPortRange::new(40000, 40002).expect("a range");
        assert_eq!(port_slice(small, 1, 4), small, "too small to split");
    }

    #[test]
    fn a_handle_names_its_shard_and_calls_go_there() {
        assert_eq!(shard_of(handle_tag(3) | 12), 3);
        assert_eq!(shard_of(12), 0);
        assert!(handle_tag(MAX_SHARDS - 1) < 1 << 63);
        crate::fuzzing::runtime().block_on(async {
            let (shards, _peer, run) = two_shards();
            let driving = tokio::spawn(run);
            let mut made = Vec::new();
            for _ in 0..4 {
                let (handle, _) = shards
                    .pick()
                    .call(who(1), |reply| Op::Socket {
                        setup: SocketSetup::default(),
                        reply,
                    })
                    .await
                    .expect("a socket");
                made.push(handle);
            }
            // New sockets go to the shards in turn, and each call finds its
            // socket in its shard.
            let in_shard: Vec<usize> = made.iter().map(|&h| shard_of(h)).collect();
            assert_eq!(in_shard, [0, 1, 0, 1]);
            for &handle in &made {
                let bound = shards
                    .call(handle, who(1), |reply| Op::Bind {
                        handle,
                        addr: SocketAddrV4::new(A, 0).into(),
                        reply,
                    })
                    .await;
                assert!(bound.is_ok(), "{bound:?}");
            }
            // A handle naming no shard is EBADF, as any unknown handle.
            let unknown = handle_tag(9) | 1;
            let e = shards
                .call(unknown, who(1), |reply| Op::Address {
                    handle: unknown,
                    peer: false,
                    reply,
                })
                .await
                .expect_err("no such shard");
            assert_eq!(e.number, tcpd_proto::errno::EBADF);
            // The admin view is every shard's.
            let rows = shards.connections(who(1)).await.expect("listed");
            assert_eq!(rows.len(), 4);
            let stats = shards.stats(who(1)).await.expect("stats");
            let count = |name: &str| stats.counters.iter().find(|(n, _)| n == name).map(|c| c.1);
            assert_eq!(count("api_sockets"), Some(4));
            assert_eq!(count("api_sessions"), Some(1));
            // Closing goes to the socket's shard.
            for &handle in &made {
                shards.close(who(1), handle, false).await.expect("closed");
            }
            assert!(shards.connections(who(1)).await.expect("listed").is_empty());
            assert_eq!(
                shards
                    .single("the fd channel")
                    .expect_err("two shards")
                    .number,
                EOPNOTSUPP
            );
            driving.abort();
        });
    }

    #[test]
    fn a_listener_spans_the_shards_and_accept_takes_from_each() {
        crate::fuzzing::runtime().block_on(async {
            let (shards, peer, run) = two_shards();
            let driving = tokio::spawn(run);
            let (listener, local) = shards
                .listen(
                    who(1),
                    SocketSetup {
                        bind: Some(SocketAddrV4::new(A, 7000).into()),
                        ..SocketSetup::default()
                    },
                    16,
                )
                .await
                .expect("listening");
            assert_eq!(local.port(), 7000);
            let listening = |rows: &[(SocketInfo, Option<crate::session::Credentials>)]| {
                rows.iter()
                    .filter(|(i, _)| i.state == tcpd_stack::TcpState::Listen)
                    .count()
            };
            let rows = shards.connections(who(1)).await.expect("listed");
            assert_eq!(listening(&rows), 2, "a listener in each shard");
            // The peer's connections arrive on both shards (new flows in
            // turn); a poll of the home handle sees either shard's.
            let mut peers = Vec::new();
            for _ in 0..4 {
                peers.push(peer_connect(&peer, 7000).await);
            }
            let ready = shards
                .poll(who(1), vec![(listener, POLLIN)], true)
                .await
                .expect("polled");
            assert_eq!(ready[0] & POLLIN, POLLIN);
            let mut accepted = Vec::new();
            for _ in 0..4 {
                accepted.push(
                    shards
                        .accept(who(1), listener, true)
                        .await
                        .expect("accepted"),
                );
            }
            let mut from: Vec<usize> = accepted.iter().map(|c| shard_of(c.handle)).collect();
            from.sort_unstable();
            assert_eq!(from, [0, 0, 1, 1], "accepted from both shards");
            let e = shards
                .accept(who(1), listener, false)
                .await
                .expect_err("nothing left");
            assert_eq!(e.number, EAGAIN);
            // Data flows on each accepted connection, in its shard.
            for c in &accepted {
                write(&shards, c.handle, b"hello").await;
                let p = peers
                    .iter()
                    .find(|p| p.local == c.peer)
                    .expect("the peer's side");
                assert_eq!(read(&peer, p.handle).await, b"hello");
            }
            // A parked accept is answered by whichever shard gets the next.
            let waiting = tokio::spawn({
                let shards = shards.clone();
                async move { shards.accept(who(1), listener, true).await }
            });
            tokio::task::yield_now().await;
            peer_connect(&peer, 7000).await;
            waiting.await.expect("joined").expect("accepted");
            // Closing the listener closes its mirror.
            shards.close(who(1), listener, false).await.expect("closed");
            let rows = shards.connections(who(1)).await.expect("listed");
            assert_eq!(listening(&rows), 0);
            assert_eq!(shards.listeners.len(), 0);
            driving.abort();
        });
    }

    #[test]
    fn connects_leave_from_their_shard_and_a_sessions_end_forgets_its_listeners() {
        crate::fuzzing::runtime().block_on(async {
            let (shards, peer, run) = two_shards();
            let driving = tokio::spawn(run);
            let (peer_listener, _) = peer
                .call(who(1), |reply| Op::Listen {
                    setup: SocketSetup {
                        bind: Some(SocketAddrV4::new(B, 80).into()),
                        ..SocketSetup::default()
                    },
                    backlog: 16,
                    reply,
                })
                .await
                .expect("the peer listens");
            for _ in 0..4 {
                let connected = shards
                    .pick()
                    .call(who(1), |reply| Op::Connect {
                        setup: SocketSetup::default(),
                        remote: SocketAddrV4::new(B, 80).into(),
                        wait: true,
                        reply,
                    })
                    .await
                    .expect("connected");
                write(&shards, connected.handle, b"ping").await;
                let theirs = peer
                    .call(who(1), |reply| Op::Accept {
                        handle: peer_listener,
                        wait: true,
                        reply,
                    })
                    .await
                    .expect("the peer accepts");
                assert_eq!(read(&peer, theirs.handle).await, b"ping");
            }
            let stats = shards.stats(who(1)).await.expect("stats");
            let established = stats
                .per_state
                .iter()
                .find(|(n, _)| n == "ESTABLISHED")
                .map(|c| c.1);
            assert_eq!(established, Some(4));
            shards
                .listen(who(1), SocketSetup::default(), 4)
                .await
                .expect("listening");
            assert_eq!(shards.listeners.len(), 1);
            shards
                .session_events()
                .send(SessionEvent::Ended(SessionId(1)))
                .expect("sent");
            assert_eq!(shards.listeners.len(), 0);
            // Each shard closed the session's sockets.
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let rows = shards.connections(who(1)).await.expect("listed");
            assert!(rows.iter().all(|(_, owner)| owner.is_none()), "{rows:?}");
            driving.abort();
        });
    }
}
