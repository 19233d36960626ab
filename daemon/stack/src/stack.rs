//! The stack: one interface with an IPv4 address and any number of IPv6
//! addresses, and every socket on it.
//!
//! Owns the socket table (handles → unbound sockets, listeners, connections),
//! demultiplexing by 4-tuple through a hash map, listeners by local port with
//! their SYN and accept queues, ephemeral ports, ICMP and ICMPv6 (echo,
//! unreachable, Packet Too Big), RST for segments to closed ports,
//! stack-wide counters and the event queue its owner drains. Invariants: a
//! handle maps to at most one socket and is never reused; every live
//! 4-tuple maps to exactly one connection; nothing here reads a clock or
//! does I/O.
//!
//! Families: every connection runs over the family of its packets, and its
//! 4-tuple is kept in that form (an IPv4 connection has IPv4 addresses even
//! when an IPv6 socket owns it). A socket has the family it was created with
//! ([`IpFamily`]); an IPv6 socket may own IPv4 connections — a listener
//! bound to `::` without IPV6_V6ONLY takes IPv4 too (Linux's default
//! `bindv6only = 0`, RFC 3493 §3.7), and a connect to an IPv4-mapped address
//! (RFC 4291 §2.5.5.2) goes out over IPv4 — and its user then sees IPv4-mapped
//! addresses (`accept`, `local_addr`, `peer_addr`, [`SocketInfo`], state
//! events). Trace records and `abort_matching`/`trace_mask` speak the wire
//! form; mapped addresses given to them are read as IPv4.
//!
//! Internal structure:
//! - Connections live in `conns`, keyed by a `ConnId` that is never reused.
//!   A connection is *linked* (present in the 4-tuple map and the port table)
//!   until it is finished (CLOSED with nothing to send); then it is unlinked,
//!   and forgotten unless a user handle still refers to it (so that handle
//!   keeps reporting EOF or its error until closed).
//! - A connection that may have something to send sits in the `ready` FIFO
//!   (at most once); `poll_transmit` serves that FIFO round-robin, one segment
//!   per turn, after the stack's own RSTs and ICMP replies.
//! - Arriving segments and ICMP messages are routed in `input`.
//! - Deadlines are in a min-heap with lazy invalidation (`timers`).
//! - After every call into a connection, `Stack::after_conn_call` turns its
//!   state changes into events, re-arms its timer, queues it for transmission,
//!   moves a listener's child from the SYN queue to the accept queue, and reaps
//!   it when finished. Readiness events are coalesced: at most one is queued
//!   per handle, and it reports the readiness current when it is polled —
//!   even when that equals the last report, because a change undone before
//!   the poll may have been observed in between (a `recv` that found the
//!   buffer empty and now waits for this very event).
//!
//! Binding: a bound socket takes its port on the addresses its bound
//! address covers (see `Coverage`): one address, or every address of its
//! family, or (`::` without IPV6_V6ONLY) of both families. Two users of a
//! port conflict only where their coverages overlap, so `0.0.0.0:80` and a
//! V6ONLY `[::]:80` listen side by side, as on Linux.
//!
//! Listen backlog (`listen(2)`): a listener's *SYN queue* holds its children
//! in SYN-RECEIVED, its *accept queue* those that completed the handshake
//! and wait for `accept`. As on Linux they have separate bounds:
//! - the accept queue is bounded by the backlog (clamped to
//!   1..=`StackConfig::max_backlog`): a SYN or a SYN-cookie ACK arriving
//!   while it is full is dropped without any answer and counted
//!   (`listen_overflows`, `listen_drops`, `drop_listen_overflow`); the peer's
//!   retransmission (RFC 6298 §5, RFC 9293 §3.8.1) retries later, as with
//!   Linux's default `tcp_abort_on_overflow = 0`. A child already in the
//!   SYN queue moves to the accept queue in place when it completes, so the
//!   accept queue may exceed the backlog by the children admitted before it
//!   filled (as on Linux, which checks the backlog when the SYN arrives);
//! - the SYN queue is bounded by `StackConfig::max_syn_backlog` (Linux's
//!   `tcp_max_syn_backlog`). A SYN that finds it full gets a SYN cookie
//!   (RFC 4987 §3.6, [`syncookie`]) with `SynCookieMode::Auto`, or is dropped
//!   with `Never`; `Always` answers every SYN with a cookie. A cookie keeps
//!   no state, so a SYN flood from spoofed addresses fills at most the SYN
//!   queue, whose embryos end after `synack_retries` SYN,ACK retransmissions
//!   (63 s with Linux's 5), while real clients still connect;
//! - a SYN that would reopen a TIME-WAIT 4-tuple needs room in both queues;
//!   otherwise the TIME-WAIT connection stays and the SYN is handled as any
//!   other.
//!
//! Closing a listener resets its unaccepted children (as Linux does; RFC
//! 9293 §3.10.4 leaves them unspecified).
//!
//! Orphans: a connection whose user closed it while data or the FIN are
//! still on their way (FIN-WAIT-1/2, CLOSING, LAST-ACK) is an orphan. The
//! stack keeps them in the order they were orphaned (`orphans`) with the
//! bytes they hold (`orphan_bytes`); past `max_orphans` or
//! `max_orphan_memory` the oldest is reset (Linux tcp_out_of_resources).
//! The connection itself gives up after `orphan_retries` retransmissions or
//! zero-window probes, and after `fin_timeout` in FIN-WAIT-2.

mod conns;
mod control;
mod input;
mod options;
mod ports;
mod syncookie;
mod timers;

use crate::config::{SocketOptions, StackConfig};
use crate::error::{
    AcceptError, BindError, ConnError, ConnectError, ListenError, RecvError, SendError,
    ShutdownError, SocketError,
};
use crate::seq::SeqNum;
use crate::socket::{
    IpFamily, MemoryLevel, OptionName, Readiness, RecoveryInfo, SendFlags, Shutdown, SockOption,
    SocketHandle, SocketInfo, StackEvent, TcpInfo,
};
use crate::stats::{DropReason, Stats};
use crate::tcp::TcpState;
use crate::tcp::connection::{Connection, ConnectionConfig, ConnectionParams, TxOffload};
use crate::tcp::isn::IsnGenerator;
use crate::time::{Duration, Instant};
use crate::trace::{Direction, MAX_TRACE_FILTERS, Note, SegmentHeader, TraceEvent, TraceRecord};
use crate::trace::{FilterSlot, TraceFilter, Tracer, endpoint_matches};
use crate::wire::ipv4::HEADER_LEN as IPV4_HEADER_LEN;
use crate::wire::ipv6::HEADER_LEN as IPV6_HEADER_LEN;
use crate::wire::tcp::CHECKSUM_OFFSET as TCP_CHECKSUM_OFFSET;
use crate::wire::virtio::MAX_GSO_PACKET;
use crate::wire::{
    Checksum, Gso, GsoKind, IpProtocol, Ipv4Repr, Ipv6Repr, TcpFlags, VirtioNetRepr, WireError,
};
use bytes::Bytes;
use conns::Conns;
use control::{ControlKind, ControlQueue, IcmpRateLimit, IpHeaderOptions, emit_ip_header};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use ports::{PortOwner, PortTable, parity_scan};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::IoSlice;
use syncookie::SynCookies;
use timers::TimerQueue;

/// Smallest MTU every IPv4 link must carry (RFC 791 §3.2, "Total Length").
const MIN_MTU: u16 = 68;
/// TCP and IPv4 headers without options: the MSS is the MTU minus this (RFC 9293 §3.7.1).
const TCP_IP_HEADERS: u16 = 40;
/// TCP and IPv6 headers (no extension headers): the IPv6 MSS is the MTU
/// minus this (RFC 8200 §8.3).
const TCP_IPV6_HEADERS: u16 = 60;
/// Offset of the control-bits byte in the TCP header (RFC 9293 §3.1).
const TCP_FLAGS_OFFSET: usize = 13;
/// Most state-change events kept undrained; further ones are dropped (they
/// only feed the admin watch stream). Readiness events are never dropped:
/// they are coalesced per handle instead, so they are bounded by the handles.
const STATE_EVENT_LIMIT: usize = 65536;
/// Readiness of a socket that is neither listening nor connected: like Linux's
/// tcp_poll for TCP_CLOSE, writable (the send would fail at once) and hung up.
const UNCONNECTED_READINESS: Readiness = Readiness::OUT.union(Readiness::HUP);

/// Hasher for the stack's own sequential ids ([`ConnId`], [`SocketHandle`]).
/// Their values are not chosen by the network, so a multiplicative
/// (Fibonacci) hash is safe and much cheaper than SipHash on the per-segment
/// path. The 4-tuple map, whose keys come from packets, keeps SipHash with a
/// random key (HashDoS).
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // 2^64 / golden ratio (Knuth, TAOCP 6.4).
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by one of the stack's own ids.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Internal identity of a connection; never reused within one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

/// A connection's addresses as seen from this stack (local is always
/// ours), in the family of its packets: never IPv4-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FourTuple {
    local: SocketAddr,
    remote: SocketAddr,
}

impl FourTuple {
    /// The size of the IP header in front of this connection's segments.
    fn ip_header_len(&self) -> usize {
        if self.remote.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        }
    }
}

/// A connection and the stack's bookkeeping about it.
///
/// Every established connection carries one, so it keeps inline only what
/// every connection uses; what few do (an orphan's mark, trace filters, a
/// `tracing` span) is in [`EntryRare`], one pointer until first needed.
#[derive(Debug)]
struct ConnEntry {
    /// Its addresses are the entry's [`FourTuple`] (see [`ConnEntry::key`]).
    conn: Connection,
    /// Its user's handle, or before accept its listener (see [`Holder`]).
    holder: Holder,
    /// The deadline registered in the timer queue.
    timer: Option<Instant>,
    /// The bytes it was last counted for in `Stack::buffered_total`.
    buffered: usize,
    /// Retransmissions already added to the stack counter (synced after each
    /// segment it emits, the only time the count changes; wrapping, as the
    /// connection's count).
    retransmits_seen: u32,
    /// Undos (all, and of timeouts) already added to the stack counters
    /// (synced after each call into the connection; wrapping).
    undos_seen: (u32, u32),
    /// The IPv6 flow label of its packets (RFC 6437 §3; unused over IPv4).
    flow_label: u32,
    /// In the 4-tuple map and the port table (until finished).
    linked: bool,
    /// Holds its local port explicitly (see [`ports`]).
    explicit_port: bool,
    /// Queued in the transmit FIFO.
    in_ready: bool,
    /// An IPv4 connection owned by an IPv6 socket: its user sees
    /// IPv4-mapped addresses.
    mapped: bool,
    /// What few connections need (see [`EntryRare`]); `None` until then.
    rare: Option<Box<EntryRare>>,
    /// Its id's serial (see [`conns`]), to tell a stale id from the slot's
    /// current connection.
    serial: u32,
}

/// Who refers to a connection: its user after connect or accept; before
/// accept, the listener whose SYN or accept queue holds it; nobody after
/// close (an orphan, or one in TIME-WAIT). Never both at once (accept
/// takes the child off its listener's queues), so one field holds either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Nobody,
    User(SocketHandle),
    Listener(SocketHandle),
}

/// The entry fields few connections use, boxed together. Made on first
/// use and kept for the connection's life.
#[derive(Debug, Default)]
struct EntryRare {
    /// While an orphan: its place in the orphan order and the bytes it was
    /// last counted for in `Stack::orphan_bytes`.
    orphan: Option<OrphanMark>,
    /// Trace filters following this connection (see [`crate::trace`]); 0 when none.
    trace_mask: u64,
    /// The `tracing` span of this connection, only while debug logging is on.
    span: Option<tracing::Span>,
}

impl EntryRare {
    /// Enters the `tracing` span of the entry whose `rare` this is, if it
    /// has one (a function of the field alone, so the connection beside
    /// it stays free to borrow).
    fn enter_span(rare: &Option<Box<EntryRare>>) -> Option<tracing::span::Entered<'_>> {
        rare.as_ref()
            .and_then(|rare| rare.span.as_ref())
            .map(tracing::Span::enter)
    }
}

impl ConnEntry {
    /// The connection's 4-tuple, in the family of its packets.
    fn key(&self) -> FourTuple {
        FourTuple {
            local: self.conn.local(),
            remote: self.conn.remote(),
        }
    }

    /// The user's handle: `None` before accept and after close.
    fn handle(&self) -> Option<SocketHandle> {
        match self.holder {
            Holder::User(handle) => Some(handle),
            _ => None,
        }
    }

    /// The listener whose SYN or accept queue holds it (before accept).
    fn parent(&self) -> Option<SocketHandle> {
        match self.holder {
            Holder::Listener(listener) => Some(listener),
            _ => None,
        }
    }

    /// Forgets the listener (the connection left its queues).
    fn clear_parent(&mut self) {
        if let Holder::Listener(_) = self.holder {
            self.holder = Holder::Nobody;
        }
    }

    /// Trace filters following this connection; 0 when none.
    fn trace_mask(&self) -> u64 {
        self.rare.as_ref().map_or(0, |rare| rare.trace_mask)
    }

    /// The orphan mark, while an orphan.
    fn orphan(&self) -> Option<OrphanMark> {
        self.rare.as_ref().and_then(|rare| rare.orphan)
    }

    /// The rare fields, made on first use.
    fn rare_mut(&mut self) -> &mut EntryRare {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// An orphan's bookkeeping (see "Orphans" in the module docs).
#[derive(Clone, Copy, Debug)]
struct OrphanMark {
    order: u64,
    bytes: usize,
}

/// A listening socket's queues (RFC 9293 §3.10.7.2; queue sizing is Linux-like).
#[derive(Debug)]
struct Listener {
    /// As bound, in the socket's family: an unspecified address or one of
    /// the stack's (IPv4-mapped for an IPv6 socket bound to the IPv4 one).
    local: SocketAddr,
    backlog: u32,
    /// Children still in SYN-RECEIVED (ordered for deterministic teardown).
    syn_queue: BTreeSet<ConnId>,
    /// Synchronized children waiting for accept(), oldest first.
    accept_queue: VecDeque<ConnId>,
    /// When this listener last answered a SYN with a cookie: ACKs are
    /// checked as cookies only for two cookie periods after it (Linux's
    /// tcp_synq_no_recent_overflow), or always in `SynCookieMode::Always`.
    cookie_sent_at: Option<Instant>,
}

#[derive(Debug)]
enum SocketKind {
    /// socket(), possibly bind(); holds its port if bound.
    Unconnected {
        /// As bound, in the socket's family (see [`Listener::local`]).
        /// Boxed: 8 bytes instead of 32 in every socket's entry, most of
        /// which are connections.
        bound: Option<Box<SocketAddr>>,
    },
    /// Boxed: the handle map holds every socket's entry inline, and most
    /// are connections.
    Listening(Box<Listener>),
    /// connect() was called or the socket was accepted. The connection stays
    /// in `conns` as long as this handle exists.
    Connection(ConnId),
}

#[derive(Debug)]
struct SocketEntry {
    /// AF_INET or AF_INET6.
    family: IpFamily,
    /// Options of an unconnected or listening socket (children inherit a
    /// listener's); `None` once the socket is a connection, which keeps them
    /// in its [`Connection`]. Boxed: most sockets are connections, and the
    /// handle map holds this entry inline (room for ~100,000 of them).
    options: Option<Box<SocketOptions>>,
    kind: SocketKind,
    /// The readiness last reported by an event (or established by the call
    /// that created the socket's current kind).
    reported: Readiness,
    /// A readiness event for this handle is in the event queue.
    readiness_queued: bool,
    /// The memory level the user set (a connection made from this socket
    /// starts with it; see [`Stack::set_memory_level`]).
    memory: MemoryLevel,
    /// The buffered bytes last reported by [`Stack::poll_buffered`].
    buffered_reported: usize,
    /// The handle is in `Stack::buffer_changes`.
    buffered_queued: bool,
}

impl SocketEntry {
    /// The options of a socket that is not a connection (defaults for a
    /// connection, whose options are its [`Connection`]'s: never asked).
    fn unconnected_options(&self) -> SocketOptions {
        self.options.as_deref().copied().unwrap_or_default()
    }
}

#[derive(Debug)]
enum QueuedEvent {
    /// Resolved to the then-current readiness when polled.
    Readiness(SocketHandle),
    State(StackEvent),
}

/// The errors of the calls that need a connection ([`Stack::on_connection`]).
trait ConnectionCallError {
    const BAD_HANDLE: Self;
    const NOT_CONNECTED: Self;
}

macro_rules! connection_call_error {
    ($($error:ident),*) => {$(
        impl ConnectionCallError for $error {
            const BAD_HANDLE: Self = $error::BadHandle;
            const NOT_CONNECTED: Self = $error::NotConnected;
        }
    )*};
}
connection_call_error!(SendError, RecvError, ShutdownError);

/// What a handle refers to, for operations that only make sense on connections.
enum Target {
    Missing,
    NotConnection,
    Conn(ConnId),
}

/// The sans-IO TCP/IP stack.
///
/// Drive it with: [`Stack::handle_packet`] for every IPv4 packet from the
/// link, [`Stack::poll_transmit`] until `None` after anything changed,
/// [`Stack::handle_timeout`] at [`Stack::poll_timeout`], and
/// [`Stack::poll_event`] to learn which sockets became ready.
#[derive(Debug)]
pub struct Stack {
    config: StackConfig,
    conn_config: std::sync::Arc<ConnectionConfig>,
    isn: IsnGenerator,
    syncookies: SynCookies,
    rng: SmallRng,
    /// Next IPv4 identification field (RFC 791; incremented per packet).
    ip_ident: u16,
    /// RFC 6056 §3.3.4 `table[]` (Linux's `table_perturb`): per group of
    /// destinations, how far connects towards them have walked the port
    /// range. Allocated zeroed on the first connect (untouched entries cost
    /// no resident memory); the keyed hash added to it keeps the start
    /// unpredictable.
    port_perturb: Option<Box<[u32]>>,
    next_handle: u64,
    sockets: IdMap<SocketHandle, SocketEntry>,
    /// Every connection, by id and by 4-tuple (see [`conns`]).
    conns: Conns,
    /// Listeners by port. The bind rules make two listeners on a port
    /// conflict unless their addresses do not overlap (see `Coverage`), so
    /// a port has at most a few: usually one, or an IPv4 and a V6ONLY IPv6 one.
    listeners: HashMap<u16, Vec<SocketHandle>>,
    /// ICMPv6 errors we may still send (RFC 4443 §2.4(f)).
    icmp_limit: IcmpRateLimit,
    ports: PortTable,
    timers: TimerQueue,
    ready: VecDeque<ConnId>,
    control: ControlQueue,
    events: VecDeque<QueuedEvent>,
    state_events_queued: usize,
    state_scratch: Vec<(TcpState, TcpState)>,
    /// Orphans, oldest (first orphaned) first.
    orphans: BTreeMap<u64, ConnId>,
    next_orphan: u64,
    /// Bytes all orphans hold (sum of their `OrphanMark::bytes`).
    orphan_bytes: usize,
    /// Bytes all connections hold (sum of their `ConnEntry::buffered`).
    buffered_total: usize,
    /// Handles whose buffered bytes changed since they were last reported.
    buffer_changes: VecDeque<SocketHandle>,
    /// The stack-wide memory level (`StackConfig::tcp_mem`).
    memory_global: MemoryLevel,
    stats: Stats,
    tracer: Tracer,
    /// The time of the current entry point, for trace records made in bookkeeping.
    trace_now: Instant,
    /// The frame of the packet being handled, when the link handed it over
    /// as [`Bytes`] ([`Stack::handle_packet_shared`]); only during that call.
    rx_frame: Option<Bytes>,
    note_scratch: Vec<Note>,
}

/// A payload left in connection `ConnId`'s send buffer by a vectored
/// transmission: (offset from its front, length).
type LentPayload = (ConnId, (usize, usize));

/// One packet from [`Stack::poll_transmit_vectored`]: on the wire, `head`
/// followed by the `payload` slices.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// The IP and TCP headers of a data segment whose payload is lent
    /// below; the whole packet otherwise (no payload, or copied in).
    pub head: &'a [u8],
    /// The payload in place in the connection's send buffer, in order
    /// (the second slice is where the ring wraps; both empty when `head`
    /// is the whole packet).
    pub payload: [&'a [u8]; 2],
    /// What the link must do with the packet (a virtio-net header).
    pub offload: VirtioNetRepr,
}

impl Transmit<'_> {
    /// The packet's length on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload[0].len() + self.payload[1].len()
    }

    /// Never true (a packet has headers); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the payload is lent rather than in `head`.
    pub fn is_vectored(&self) -> bool {
        !self.payload[0].is_empty()
    }
}

impl Stack {
    /// A stack for `config`. An MTU below the IPv4 minimum of 68 (RFC 791)
    /// is raised to it; below IPv6's 1280 (RFC 8200 §5) the IPv6 addresses
    /// are dropped (Linux disables IPv6 on such a link).
    pub fn new(mut config: StackConfig, now: Instant) -> Stack {
        config.mtu = config.mtu.max(MIN_MTU);
        if config.mtu < crate::wire::ipv6::MIN_MTU {
            config.addresses6.clear();
        }
        let mut rng = SmallRng::seed_from_u64(config.rng_seed);
        let conn_config = ConnectionConfig {
            mtu: config.mtu,
            msl: config.msl,
            max_retries: config.max_retries,
            min_rto: config.min_rto,
            max_rto: config.max_rto,
            initial_rto: config.initial_rto,
            delayed_ack: config.delayed_ack,
            synack_retries: config.synack_retries,
            orphan_retries: config.orphan_retries,
            fin_timeout: config.fin_timeout.unwrap_or(config.msl * 2),
            rmem_max: config.rmem_max,
            wmem_max: config.wmem_max,
        };
        Stack {
            isn: IsnGenerator::new(config.isn_secret),
            syncookies: SynCookies::new(config.isn_secret),
            ip_ident: rng.random(),
            port_perturb: None,
            rng,
            conn_config: std::sync::Arc::new(conn_config),
            config,
            next_handle: 1,
            sockets: IdMap::default(),
            conns: Conns::default(),
            listeners: HashMap::new(),
            icmp_limit: IcmpRateLimit::new(now),
            ports: PortTable::default(),
            timers: TimerQueue::default(),
            ready: VecDeque::new(),
            control: ControlQueue::default(),
            events: VecDeque::new(),
            state_events_queued: 0,
            state_scratch: Vec::new(),
            orphans: BTreeMap::new(),
            next_orphan: 0,
            orphan_bytes: 0,
            buffered_total: 0,
            buffer_changes: VecDeque::new(),
            memory_global: MemoryLevel::Normal,
            stats: Stats::default(),
            tracer: Tracer::default(),
            trace_now: now,
            rx_frame: None,
            note_scratch: Vec::new(),
        }
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    // ------------------------------------------------------------ link side

    /// Counts a packet the link dropped before it reached the stack (e.g. a
    /// virtio-net header that does not fit its packet), so the drop shows in
    /// the stack's statistics beside the others.
    pub fn count_link_drop(&mut self, reason: DropReason) {
        self.stats.packets_in += 1;
        self.stats.drop_packet(reason);
    }

    /// One IPv4 or IPv6 packet from the link (told apart by the version
    /// field). Malformed packets are dropped and counted.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.handle_packet_offload(now, packet, &VirtioNetRepr::PLAIN);
    }

    /// [`Stack::handle_packet_offload`] for a packet the link owns as
    /// [`Bytes`]: in-order payload of at least
    /// [`SHARE_MIN`](crate::tcp::buffer::SHARE_MIN) bytes is queued
    /// for reading as a slice of `packet` instead of a copy, keeping the
    /// packet's allocation alive until it is read. Receive buffers count
    /// payload, so hand over only packets whose allocation is mostly
    /// payload (the daemon's link does so for reads of at least half its
    /// 64 KiB read buffer, and copies smaller packets).
    pub fn handle_packet_shared(&mut self, now: Instant, packet: Bytes, offload: &VirtioNetRepr) {
        let frame = packet.clone();
        self.rx_frame = Some(packet);
        self.handle_packet_offload(now, &frame, offload);
        self.rx_frame = None;
    }

    /// One IP packet from a link with receive offload, with what its
    /// virtio-net header says (already checked against the packet by
    /// [`VirtioNetRepr::parse`]):
    /// - a TCP checksum is verified unless the kernel promised it:
    ///   `DATA_VALID` (it verified it) or `NEEDS_CSUM` (the bytes were made
    ///   on this host and never crossed a wire; the field holds only the
    ///   pseudo-header sum). `NEEDS_CSUM` is accepted at the TCP checksum
    ///   field only; anywhere else (or on ICMP) the packet is dropped as
    ///   [`DropReason::Offload`]. The IPv4 header checksum is always verified.
    /// - a coalesced TCP segment (`gso_type` TCPV4 or TCPV6, of the packet's
    ///   family, up to 64 KiB) is taken as the in-order data it is; the
    ///   delayed-ACK rule (ACK every second full-sized segment) then counts
    ///   it as `len / gso_size` segments, so it is acknowledged at once. Any
    ///   other GSO type is dropped.
    pub fn handle_packet_offload(&mut self, now: Instant, packet: &[u8], offload: &VirtioNetRepr) {
        self.stats.packets_in += 1;
        self.trace_now = now;
        // RFC 8200 §3 / RFC 791 §3.1: the version is the first nibble.
        if packet.first().is_some_and(|byte| byte >> 4 == 6) {
            self.handle_ipv6(now, packet, offload);
        } else {
            self.handle_ipv4(now, packet, offload);
        }
    }

    fn handle_ipv4(&mut self, now: Instant, packet: &[u8], offload: &VirtioNetRepr) {
        let (ip, payload) = match Ipv4Repr::parse(packet) {
            Ok(parsed) => parsed,
            Err(e) => return self.stats.drop_packet(drop_reason(e)),
        };
        let ip_header_len = packet.len().saturating_sub(payload.len());
        let Some(verify) =
            self.offload_verdict(offload, ip.protocol, ip_header_len, GsoKind::TcpV4)
        else {
            return self.stats.drop_packet(DropReason::Offload);
        };
        if ip.dst != self.config.address {
            return self.stats.drop_packet(DropReason::NotForUs);
        }
        // RFC 1122 §3.2.1.3: a packet whose source is not a unicast address
        // (or claims to be us) is silently discarded.
        if !self.is_remote_unicast(IpAddr::V4(ip.src)) {
            return self.stats.drop_packet(DropReason::Malformed);
        }
        match ip.protocol {
            IpProtocol::Tcp => {
                self.handle_tcp(now, IpAddr::V4(ip.src), IpAddr::V4(ip.dst), payload, verify)
            }
            IpProtocol::Icmp => self.handle_icmp(now, ip.src, payload),
            // ICMPv6 inside IPv4 is as meaningless as any unknown protocol.
            IpProtocol::Icmpv6 | IpProtocol::Other(_) => {
                self.stats.drop_packet(DropReason::Unsupported)
            }
        }
    }

    fn handle_ipv6(&mut self, now: Instant, packet: &[u8], offload: &VirtioNetRepr) {
        let parsed = match Ipv6Repr::parse(packet) {
            Ok(parsed) => parsed,
            Err(drop) => {
                self.stats.drop_packet(drop_reason(drop.reason));
                if let Some(problem) = drop.problem {
                    self.send_parameter_problem(now, packet, problem);
                }
                return;
            }
        };
        let ip = parsed.repr;
        let payload = parsed.payload;
        // The upper layer starts where the extension headers end.
        let ip_header_len = (payload.as_ptr() as usize).wrapping_sub(packet.as_ptr() as usize);
        let Some(verify) =
            self.offload_verdict(offload, ip.next_header, ip_header_len, GsoKind::TcpV6)
        else {
            return self.stats.drop_packet(DropReason::Offload);
        };
        if !self.is_local_v6(ip.dst) {
            return self.stats.drop_packet(DropReason::NotForUs);
        }
        // RFC 4291 §2.5.2/§2.7: no packet comes from the unspecified or a
        // multicast address; loopback never crosses a link (§2.5.3); an
        // IPv4-mapped source is IPv4 in disguise (RFC 6052 §5.1 style
        // abuse; Linux's tcp_v6_rcv drops it too).
        if !self.is_remote_unicast(IpAddr::V6(ip.src)) {
            return self.stats.drop_packet(DropReason::Malformed);
        }
        match ip.next_header {
            IpProtocol::Tcp => {
                self.handle_tcp(now, IpAddr::V6(ip.src), IpAddr::V6(ip.dst), payload, verify)
            }
            IpProtocol::Icmpv6 => self.handle_icmpv6(now, ip.src, ip.dst, payload),
            // RFC 8200 §4: an upper layer the node does not handle is
            // discarded with a Parameter Problem, code 1, pointing at the
            // Next Header field that named it (Linux does so too).
            IpProtocol::Icmp | IpProtocol::Other(_) => {
                self.stats.drop_packet(DropReason::Unsupported);
                self.send_parameter_problem(now, packet, parsed.unrecognized_next_header());
            }
        }
    }

    /// What a virtio-net header means for a packet with `protocol` after
    /// `ip_header_len` bytes of IP headers: `Some(verify)` — whether the TCP
    /// checksum must still be verified — or `None` when the header asks for
    /// something the stack cannot honour (dropped as `Offload`). `gso` is
    /// the GSO type of the packet's family.
    fn offload_verdict(
        &self,
        offload: &VirtioNetRepr,
        protocol: IpProtocol,
        ip_header_len: usize,
        gso: GsoKind,
    ) -> Option<bool> {
        let verify = match offload.checksum {
            Checksum::Complete => true,
            Checksum::Verified => protocol != IpProtocol::Tcp,
            Checksum::Partial { start, offset } => {
                if protocol != IpProtocol::Tcp
                    || usize::from(start) != ip_header_len
                    || usize::from(offset) != TCP_CHECKSUM_OFFSET
                {
                    return None;
                }
                false
            }
        };
        if let Some(header) = offload.gso
            && (header.kind != gso || protocol != IpProtocol::Tcp)
        {
            return None;
        }
        Some(verify)
    }

    /// Writes the next IP packet to send into `buf` (at least MTU bytes)
    /// and returns its length; `None` when nothing is due.
    ///
    /// Panics if `buf` is shorter than the MTU (a bug in the caller).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.transmit(now, buf, TxOffload::default())
            .map(|(n, _, _)| n)
    }

    /// [`Stack::poll_transmit`] for a link with the offloads of
    /// [`StackConfig::offload`]: with segmentation, a TCP packet may be a
    /// super-segment of up to 64 KiB (as much as `buf` holds) for the link
    /// to cut into MSS-sized segments; with checksum offload, TCP checksums
    /// are left partial. The returned header says which (it is
    /// [`VirtioNetRepr::PLAIN`] for a complete, MTU-sized packet).
    pub fn poll_transmit_offload(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, VirtioNetRepr)> {
        let offload = TxOffload {
            segmentation: self.config.offload.segmentation,
            checksum: self.config.offload.checksum,
            vectored: false,
        };
        self.transmit(now, buf, offload)
            .map(|(n, header, _)| (n, header))
    }

    /// [`Stack::poll_transmit_offload`] without the payload copy: `buf`
    /// (at least the MTU, as there) receives only the IP and TCP headers
    /// of a data segment, and the returned [`Transmit`] lends its payload
    /// in place from the connection's send buffer, for the link to send
    /// behind the headers with one vectored write (`writev(2)`). With
    /// checksum offload off the checksum covers the payload where it is.
    /// `whole`: write the whole packet into `buf` anyway (the link wants to
    /// see it: a capture). Segments of a traced connection are always
    /// whole (the trace record is parsed from the packet). The payload
    /// slices are valid until the next call into the stack.
    pub fn poll_transmit_vectored<'a>(
        &'a mut self,
        now: Instant,
        buf: &'a mut [u8],
        whole: bool,
    ) -> Option<Transmit<'a>> {
        let offload = TxOffload {
            segmentation: self.config.offload.segmentation,
            checksum: self.config.offload.checksum,
            vectored: !whole,
        };
        let (n, header, apart) = self.transmit(now, buf, offload)?;
        let Some((id, payload)) = apart else {
            return Some(Transmit {
                head: &buf[..n],
                payload: [&[], &[]],
                offload: header,
            });
        };
        // The connection sent data just now, so it is still there (only a
        // closed connection is reaped).
        let conn = &self.conns.get(&id)?.conn;
        Some(Transmit {
            head: &buf[..n - payload.1],
            payload: conn.payload_slices(payload),
            offload: header,
        })
    }

    /// The next packet into `buf` (or its headers only, see
    /// [`TxOffload::vectored`]): its length on the wire, the link's
    /// header, and for a payload left in a send buffer, whose it is.
    fn transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        offload: TxOffload,
    ) -> Option<(usize, VirtioNetRepr, Option<LentPayload>)> {
        let mtu = usize::from(self.config.mtu);
        assert!(
            buf.len() >= mtu,
            "poll_transmit needs a buffer of at least the MTU ({mtu} bytes), got {}",
            buf.len()
        );
        let limit = if offload.segmentation {
            buf.len().min(MAX_GSO_PACKET)
        } else {
            mtu
        };
        let buf = &mut buf[..limit];
        self.trace_now = now;
        if let Some(packet) = self.control.pop() {
            let ident = self.next_ip_ident();
            let (len, kind) = packet.emit(buf, ident);
            self.stats.packets_out += 1;
            match kind {
                ControlKind::Reset => {
                    self.stats.segments_out += 1;
                    self.stats.rst_sent += 1;
                }
                ControlKind::SynAck => self.stats.segments_out += 1,
                ControlKind::EchoReply => self.stats.icmp_echo_replies += 1,
                ControlKind::Icmpv6Error => self.stats.icmp_errors_sent += 1,
            }
            return Some((len, VirtioNetRepr::PLAIN, None));
        }
        while let Some(id) = self.ready.pop_front() {
            let ident = self.ip_ident;
            let Some(entry) = self.conns.get_mut(&id) else {
                continue;
            };
            let ip_header_len = entry.key().ip_header_len();
            let segment_buf = &mut buf[ip_header_len..];
            let span = entry.rare.as_ref().and_then(|rare| rare.span.clone());
            let _entered = span.as_ref().map(tracing::Span::enter);
            // A traced connection's segments are parsed from the packet.
            let offload = TxOffload {
                vectored: offload.vectored && entry.trace_mask() == 0,
                ..offload
            };
            let Some((len, segment)) = entry.conn.poll_transmit_with(now, segment_buf, offload)
            else {
                entry.in_ready = false;
                self.after_conn_call(id, false);
                continue;
            };
            let len = len.min(segment_buf.len());
            let is_reset = segment_buf
                .get(TCP_FLAGS_OFFSET)
                .is_some_and(|&flags| TcpFlags::from_bits_retain(flags).rst());
            // The socket's IP_TTL, IP_TOS and IP_MTU_DISCOVER (IPv4 only
            // so far: the IPv6 counterparts are not options yet).
            let options = entry.conn.options();
            let ip = IpHeaderOptions {
                ttl: options.ip_ttl.unwrap_or(crate::wire::ipv4::DEFAULT_TTL),
                tos: options.ip_tos,
                dont_fragment: options.pmtu_discovery.dont_fragment(),
            };
            emit_ip_header(
                buf,
                entry.key().local.ip(),
                entry.key().remote.ip(),
                IpProtocol::Tcp,
                len,
                entry.flow_label,
                ident,
                ip,
            );
            self.ip_ident = ident.wrapping_add(1);
            let header = VirtioNetRepr {
                checksum: if segment.partial_checksum {
                    Checksum::Partial {
                        start: ip_header_len as u16,
                        offset: TCP_CHECKSUM_OFFSET as u16,
                    }
                } else {
                    Checksum::Complete
                },
                gso: segment.gso_size.map(|size| Gso {
                    kind: if entry.key().remote.is_ipv6() {
                        GsoKind::TcpV6
                    } else {
                        GsoKind::TcpV4
                    },
                    size,
                    hdr_len: u16::try_from(ip_header_len + segment.header_len).unwrap_or(u16::MAX),
                    ecn: false,
                }),
            };
            // Packets and segments as they appear on the wire.
            let pieces = segment.gso_size.map_or(1, |size| {
                (len - segment.header_len).div_ceil(usize::from(size))
            });
            self.stats.packets_out += pieces as u64;
            self.stats.segments_out += pieces as u64;
            if is_reset {
                self.stats.rst_sent += 1;
            }
            // Retransmissions are counted by the connection as it emits them.
            let retransmits = entry.conn.retransmit_count();
            let new_retransmits = retransmits.wrapping_sub(entry.retransmits_seen);
            let retransmission = new_retransmits != 0;
            self.stats.retransmits += u64::from(new_retransmits);
            entry.retransmits_seen = retransmits;
            if entry.trace_mask() != 0 {
                let (mask, key) = (entry.trace_mask(), entry.key());
                let segment = &buf[ip_header_len..ip_header_len + len];
                if let Ok(seg) =
                    crate::wire::TcpRepr::parse(segment, key.local.ip(), key.remote.ip())
                {
                    self.trace_push(
                        mask,
                        key,
                        TraceEvent::Segment {
                            direction: Direction::Out,
                            header: SegmentHeader::of(&seg),
                            retransmission,
                        },
                    );
                }
            }
            // Round-robin: back of the line, still marked ready; it leaves the
            // FIFO on the turn where it has nothing to send.
            self.ready.push_back(id);
            self.after_conn_call(id, false);
            let apart = segment.payload_apart.map(|payload| (id, payload));
            return Some((ip_header_len + len, header, apart));
        }
        None
    }

    /// The earliest instant at which [`Stack::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Every mutating entry point prunes stale heap tops, so the top is live.
        self.timers.peek().map(|(deadline, _)| deadline)
    }

    /// Runs expired timers of every connection.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.trace_now = now;
        // Collect first, then run: a connection that re-arms at or before
        // `now` is served on the next call, never in a loop here.
        let mut due = Vec::new();
        while let Some((deadline, id)) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            if let Some(entry) = self.conns.get_mut(&id)
                && entry.timer == Some(deadline)
            {
                // Cleared so that a duplicate heap entry is stale.
                entry.timer = None;
                due.push(id);
            }
        }
        for id in due {
            if let Some(entry) = self.conns.get_mut(&id) {
                let _entered = EntryRare::enter_span(&entry.rare);
                entry.conn.handle_timeout(now);
            }
            self.after_conn_call(id, true);
        }
        self.prune_timers();
    }

    /// The next event (readiness change or state change), oldest first.
    pub fn poll_event(&mut self) -> Option<StackEvent> {
        while let Some(event) = self.events.pop_front() {
            match event {
                QueuedEvent::State(event) => {
                    self.state_events_queued = self.state_events_queued.saturating_sub(1);
                    return Some(event);
                }
                QueuedEvent::Readiness(socket) => {
                    let Some(current) = self.readiness_of(socket) else {
                        continue;
                    };
                    let Some(entry) = self.sockets.get_mut(&socket) else {
                        continue;
                    };
                    entry.readiness_queued = false;
                    // Emitted even if `current == entry.reported`: readiness
                    // changed since the last report (that is why the event was
                    // queued) and may have changed back, e.g. IN cleared by a
                    // recv that drained the buffer and set again by new data.
                    // A caller that saw the cleared state (a recv returning
                    // WouldBlock) waits for an event; suppressing this one
                    // would leave it waiting with data in the buffer.
                    entry.reported = current;
                    return Some(StackEvent::Readiness {
                        socket,
                        ready: current,
                    });
                }
            }
        }
        None
    }

    // ------------------------------------------------------------ socket side

    /// A new, unbound IPv4 socket (socket(2) with AF_INET).
    pub fn socket(&mut self) -> SocketHandle {
        self.socket_of(IpFamily::V4)
    }

    /// A new, unbound socket of `family` (socket(2)'s domain).
    pub fn socket_of(&mut self, family: IpFamily) -> SocketHandle {
        let handle = self.new_handle();
        self.sockets.insert(
            handle,
            SocketEntry {
                family,
                options: Some(Box::new(self.config.socket_defaults)),
                kind: SocketKind::Unconnected { bound: None },
                reported: UNCONNECTED_READINESS,
                readiness_queued: false,
                memory: MemoryLevel::Normal,
                buffered_reported: 0,
                buffered_queued: false,
            },
        );
        handle
    }

    /// bind(2). An address of the socket's family: unspecified or one of
    /// the stack's own (for an IPv6 socket, the IPv4 one as IPv4-mapped
    /// unless IPV6_V6ONLY); port 0 picks an ephemeral port.
    ///
    /// Port sharing follows Linux (inet_csk_bind_conflict): a port already
    /// used by another socket or connection (TIME-WAIT included) on an
    /// overlapping address (see `Coverage`) is EADDRINUSE unless both this
    /// socket and that user have SO_REUSEADDR and that user is not listening.
    pub fn bind(
        &mut self,
        socket: SocketHandle,
        addr: impl Into<SocketAddr>,
    ) -> Result<(), BindError> {
        let addr = addr.into();
        let entry = self.sockets.get(&socket).ok_or(BindError::BadHandle)?;
        let SocketKind::Unconnected { bound: None } = entry.kind else {
            return Err(BindError::AlreadyBound);
        };
        if IpFamily::of(&addr) != entry.family {
            return Err(BindError::AddrFamily);
        }
        let wire_ip = addr.ip().to_canonical();
        let options = entry.unconnected_options();
        // Linux (inet6_bind): an IPv4-mapped address on a V6ONLY socket is EINVAL.
        if options.v6only && addr.is_ipv6() && wire_ip.is_ipv4() {
            return Err(BindError::Invalid);
        }
        if !wire_ip.is_unspecified() && !self.is_local(wire_ip) {
            return Err(BindError::AddrNotAvailable);
        }
        let reuse = options.reuse_addr;
        let coverage = Coverage::of(addr.ip(), options.v6only);
        let port = if addr.port() == 0 {
            self.pick_unused_port(reuse).ok_or(BindError::AddrInUse)?
        } else if self.port_conflict(addr.port(), socket, reuse, coverage) {
            return Err(BindError::AddrInUse);
        } else {
            addr.port()
        };
        self.ports.add(port, PortOwner::Socket(socket), true);
        if let Some(entry) = self.sockets.get_mut(&socket) {
            entry.kind = SocketKind::Unconnected {
                bound: Some(Box::new(SocketAddr::new(addr.ip(), port))),
            };
        }
        Ok(())
    }

    /// listen(2); binds an ephemeral port first if unbound. `backlog` is
    /// clamped to [1, max_backlog]. Calling it again on a listener changes
    /// the backlog (as on Linux).
    pub fn listen(&mut self, socket: SocketHandle, backlog: u32) -> Result<(), ListenError> {
        let backlog = backlog.clamp(1, self.config.max_backlog.max(1));
        let entry = self
            .sockets
            .get_mut(&socket)
            .ok_or(ListenError::BadHandle)?;
        let bound = match &mut entry.kind {
            SocketKind::Listening(listener) => {
                listener.backlog = backlog;
                return Ok(());
            }
            SocketKind::Connection(_) => return Err(ListenError::InvalidState),
            SocketKind::Unconnected { bound } => bound.as_deref().copied(),
        };
        let options = entry.unconnected_options();
        let reuse = options.reuse_addr;
        let (family, v6only) = (entry.family, options.v6only);
        let local = match bound {
            // Re-checked: another socket sharing the port through SO_REUSEADDR
            // may have started listening since our bind (Linux re-runs the
            // conflict check in inet_csk_listen_start).
            Some(bound)
                if self.port_conflict(
                    bound.port(),
                    socket,
                    reuse,
                    Coverage::of(bound.ip(), v6only),
                ) =>
            {
                return Err(ListenError::AddrInUse);
            }
            Some(bound) => bound,
            None => {
                let port = self.pick_unused_port(reuse).ok_or(ListenError::AddrInUse)?;
                self.ports.add(port, PortOwner::Socket(socket), true);
                SocketAddr::new(family.unspecified().ip(), port)
            }
        };
        self.listeners.entry(local.port()).or_default().push(socket);
        if let Some(entry) = self.sockets.get_mut(&socket) {
            entry.kind = SocketKind::Listening(Box::new(Listener {
                local,
                backlog,
                syn_queue: BTreeSet::new(),
                accept_queue: VecDeque::new(),
                cookie_sent_at: None,
            }));
            entry.reported = Readiness::empty();
        }
        Ok(())
    }

    /// accept(2): a completed connection and its peer address.
    ///
    /// The new socket's readiness is reported by an event right away when it
    /// is not empty (data or FIN may have arrived before accept).
    pub fn accept(
        &mut self,
        socket: SocketHandle,
    ) -> Result<(SocketHandle, SocketAddr), AcceptError> {
        let entry = self
            .sockets
            .get_mut(&socket)
            .ok_or(AcceptError::BadHandle)?;
        let SocketKind::Listening(listener) = &mut entry.kind else {
            return Err(AcceptError::NotListening);
        };
        // Children leave the queue when they die, so the front is live.
        let id = listener
            .accept_queue
            .pop_front()
            .ok_or(AcceptError::WouldBlock)?;
        let handle = self.new_handle();
        let Some(child) = self.conns.get_mut(&id) else {
            // Unreachable by the invariant above; fail softly rather than panic.
            return Err(AcceptError::WouldBlock);
        };
        child.holder = Holder::User(handle);
        let remote = user_view(child.key().remote, child.mapped);
        let family = entry_family(child);
        self.sockets.insert(
            handle,
            SocketEntry {
                family,
                options: None,
                kind: SocketKind::Connection(id),
                reported: Readiness::empty(),
                readiness_queued: false,
                memory: MemoryLevel::Normal,
                buffered_reported: 0,
                buffered_queued: false,
            },
        );
        self.note_readiness(socket);
        self.note_readiness(handle);
        // Data that arrived before accept is the new socket's now.
        self.note_buffered(handle, id);
        Ok((handle, remote))
    }

    /// connect(2), always non-blocking: starts the handshake. Completion is a
    /// readiness event (OUT, or ERR with the error in SO_ERROR).
    ///
    /// An unbound socket gets an ephemeral port from
    /// [`StackConfig::local_port_range`] (RFC 6056 §3.3.4 as Linux, see
    /// `pick_connect_port`) whose 4-tuple is unused; as on Linux an
    /// ephemeral port may serve several remote endpoints. None left:
    /// EADDRNOTAVAIL. Deviation from
    /// Linux: a socket whose connection failed cannot connect again (after
    /// the error is reported, connect says EISCONN).
    ///
    /// `remote` must be of the socket's family (else EAFNOSUPPORT); an IPv6
    /// socket reaches IPv4 through an IPv4-mapped address (not with
    /// IPV6_V6ONLY: ENETUNREACH, as Linux). The source address is the bound
    /// one, else the IPv4 address or the IPv6 address chosen for `remote`
    /// (ENETUNREACH when the stack has none).
    pub fn connect(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        remote: impl Into<SocketAddr>,
    ) -> Result<(), ConnectError> {
        let remote = remote.into();
        let entry = self.sockets.get(&socket).ok_or(ConnectError::BadHandle)?;
        let bound = match &entry.kind {
            SocketKind::Listening(_) => return Err(ConnectError::Invalid),
            SocketKind::Connection(id) => return Err(self.connect_again(socket, *id)),
            SocketKind::Unconnected { bound } => bound.as_deref().copied(),
        };
        if IpFamily::of(&remote) != entry.family {
            return Err(ConnectError::AddrFamily);
        }
        if remote.port() == 0 {
            return Err(ConnectError::Invalid);
        }
        let remote_ip = remote.ip().to_canonical();
        let mapped = entry.family == IpFamily::V6 && remote_ip.is_ipv4();
        let options = entry.unconnected_options();
        if mapped && options.v6only {
            return Err(ConnectError::NetUnreachable);
        }
        let remote = SocketAddr::new(remote_ip, remote.port());
        if !self.is_remote_unicast(remote_ip) {
            return Err(ConnectError::AddrNotAvailable);
        }
        // A socket bound to one address of the other family cannot reach
        // `remote` (Linux: EINVAL).
        let bound_ip = bound.map(|b| b.ip().to_canonical());
        if let Some(ip) = bound_ip
            && !ip.is_unspecified()
            && ip.is_ipv4() != remote_ip.is_ipv4()
        {
            return Err(ConnectError::Invalid);
        }
        let local_ip = match bound_ip.filter(|ip| !ip.is_unspecified()) {
            Some(ip) => ip,
            None => self
                .source_address(remote_ip)
                .ok_or(ConnectError::NetUnreachable)?,
        };
        let (local, explicit_port) = match bound {
            Some(bound) => {
                let local = SocketAddr::new(local_ip, bound.port());
                if self.conns.contains_tuple(&FourTuple { local, remote }) {
                    return Err(ConnectError::AddrNotAvailable);
                }
                (local, true)
            }
            None => {
                let port = self
                    .pick_connect_port(local_ip, remote)
                    .ok_or(ConnectError::AddrNotAvailable)?;
                (SocketAddr::new(local_ip, port), false)
            }
        };
        let key = FourTuple { local, remote };
        self.trace_now = now;
        let params = self.connection_params(key, options, now);
        let conn = Connection::connect(params, now);
        let initial_readiness = conn.readiness();
        if let Some(bound) = bound {
            // The connection takes over the socket's claim on the port.
            self.ports
                .remove(bound.port(), PortOwner::Socket(socket), true);
        }
        let id = self.insert_connection(conn, key, Holder::User(socket), explicit_port, mapped);
        if let Some(entry) = self.sockets.get_mut(&socket) {
            entry.kind = SocketKind::Connection(id);
            entry.options = None;
            entry.reported = initial_readiness;
        }
        self.stats.active_opens += 1;
        self.after_conn_call(id, true);
        Ok(())
    }

    pub fn send(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        data: &[u8],
    ) -> Result<usize, SendError> {
        self.send_with(now, socket, data, SendFlags::empty())
    }

    /// [`Stack::send`] with send(2) flags (MSG_MORE, MSG_EOR, MSG_OOB).
    pub fn send_with(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        data: &[u8],
        flags: SendFlags,
    ) -> Result<usize, SendError> {
        self.on_connection(socket, |conn| conn.send_with(now, data, flags))
    }

    /// [`Stack::send`] of up to `max` bytes written straight into the
    /// socket's send buffer by `write`, which gets the free space (at most
    /// `max`) as two slices, in order, and returns how many bytes it wrote
    /// at their front — e.g. a `readv(2)` from where the bytes are, saving
    /// the copy through a buffer of the caller's. `write` is called at most
    /// once, and not when the socket cannot take bytes (`WouldBlock`, or
    /// any error [`Stack::send`] gives); `WouldBlock` also when it wrote
    /// nothing.
    pub fn send_in_place(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        max: usize,
        write: impl FnOnce(&mut [u8], &mut [u8]) -> usize,
    ) -> Result<usize, SendError> {
        self.on_connection(socket, |conn| {
            conn.send_in_place(now, max, SendFlags::empty(), write)
        })
    }

    /// `Ok(0)` is end of stream.
    pub fn recv(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        out: &mut [u8],
        peek: bool,
    ) -> Result<usize, RecvError> {
        // Reading may open the receive window: the connection is queued for
        // transmission so it can send a window update (RFC 9293 §3.8.6.2.2).
        self.on_connection(socket, |conn| conn.recv(now, out, peek))
    }

    /// [`Stack::recv`] without a copy (not peeking): moves up to `max`
    /// readable bytes to `out` as slices of the receive queue; payload that
    /// came in with [`Stack::handle_packet_shared`] leaves as the slice of
    /// the link's frame it was queued as. `Ok(0)` is end of stream.
    pub fn recv_bytes(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        max: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<usize, RecvError> {
        self.on_connection(socket, |conn| conn.recv_bytes(now, max, out))
    }

    /// [`Stack::recv`] into a vectored write, without a copy of ours:
    /// `write` gets up to `max` readable bytes as slices of the receive
    /// queue (at most [`RECV_IO_SLICES`], 64) and returns how many it
    /// took — e.g. what a `writev(2)` to the reader accepted, a partial
    /// write included; the rest stays queued (and charged) in the stack.
    /// `write` is called at most once, and only when bytes are readable:
    /// `Ok(0)` without a call is end of stream, `Ok(0)` after one means it
    /// took nothing.
    ///
    /// [`RECV_IO_SLICES`]: crate::tcp::connection::RECV_IO_SLICES
    pub fn recv_with(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        max: usize,
        write: impl FnOnce(&[IoSlice<'_>]) -> usize,
    ) -> Result<usize, RecvError> {
        self.on_connection(socket, |conn| conn.recv_with(now, max, write))
    }

    /// recv(2) with MSG_OOB: the urgent byte, `Ok(None)` at end of stream
    /// (see the connection's `urgent` module for Linux's rules).
    pub fn recv_urgent(
        &mut self,
        socket: SocketHandle,
        peek: bool,
    ) -> Result<Option<u8>, RecvError> {
        let id = match self.target(socket) {
            Target::Missing => return Err(RecvError::BadHandle),
            // Linux: a listener is ENOTCONN; an unconnected socket has no
            // urgent data (EINVAL, tcp_recv_urg's first check).
            Target::NotConnection => {
                let listening = self
                    .sockets
                    .get(&socket)
                    .is_some_and(|e| matches!(e.kind, SocketKind::Listening(_)));
                return Err(if listening {
                    RecvError::NotConnected
                } else {
                    RecvError::NoUrgentData
                });
            }
            Target::Conn(id) => id,
        };
        let result = self.with_conn(id, |conn| conn.recv_urgent(peek));
        result.unwrap_or(Err(RecvError::BadHandle))
    }

    /// shutdown(2). ENOTCONN on sockets that are not connected, and (as
    /// Linux) on a connection that is already CLOSED.
    pub fn shutdown(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        how: Shutdown,
    ) -> Result<(), ShutdownError> {
        self.trace_now = now;
        self.on_connection(socket, |conn| {
            if conn.state() == TcpState::Closed {
                Err(ShutdownError::NotConnected)
            } else {
                conn.shutdown(now, how);
                Ok(())
            }
        })
    }

    /// close(2): releases the handle at once; the connection finishes on its
    /// own (FIN, TIME-WAIT) or is reset if unread data remains. Closing a
    /// listener resets its unaccepted connections.
    pub fn close(&mut self, now: Instant, socket: SocketHandle) -> Result<(), SocketError> {
        self.trace_now = now;
        let entry = self.sockets.remove(&socket).ok_or(SocketError::BadHandle)?;
        match entry.kind {
            SocketKind::Unconnected { bound } => {
                if let Some(bound) = bound {
                    self.ports
                        .remove(bound.port(), PortOwner::Socket(socket), true);
                }
            }
            SocketKind::Listening(listener) => {
                let port = listener.local.port();
                self.ports.remove(port, PortOwner::Socket(socket), true);
                if let Some(on_port) = self.listeners.get_mut(&port) {
                    on_port.retain(|&handle| handle != socket);
                    if on_port.is_empty() {
                        self.listeners.remove(&port);
                    }
                }
                // Like Linux's inet_csk_listen_stop: every child not yet
                // accepted is aborted (RFC 9293 §3.10.5 ABORT; RST where the
                // connection decides one is due).
                let children = listener
                    .syn_queue
                    .iter()
                    .chain(listener.accept_queue.iter())
                    .copied();
                for child in children {
                    if let Some(entry) = self.conns.get_mut(&child) {
                        entry.clear_parent();
                        entry.conn.abort(now, ConnError::Aborted);
                    }
                    self.after_conn_call(child, true);
                }
            }
            SocketKind::Connection(id) => {
                if let Some(entry) = self.conns.get_mut(&id) {
                    let _entered = EntryRare::enter_span(&entry.rare);
                    entry.holder = Holder::Nobody;
                    entry.conn.close(now);
                }
                self.after_conn_call(id, true);
                self.adopt_orphan(now, id);
            }
        }
        Ok(())
    }

    /// Aborts with RST every connection between `local` and `remote` (admin
    /// kill); returns how many. Their sockets report ECONNABORTED.
    ///
    /// An unspecified address (0.0.0.0 or `::`) or port 0 on either side is
    /// a wildcard; IPv4-mapped addresses name IPv4 connections.
    pub fn abort_matching(
        &mut self,
        now: Instant,
        local: impl Into<SocketAddr>,
        remote: impl Into<SocketAddr>,
    ) -> usize {
        self.trace_now = now;
        let (local, remote) = (canonical(local.into()), canonical(remote.into()));
        let exact = !local.ip().is_unspecified()
            && local.port() != 0
            && !remote.ip().is_unspecified()
            && remote.port() != 0;
        let mut victims: Vec<ConnId> = if exact {
            self.conns
                .find(&FourTuple { local, remote })
                .into_iter()
                .collect()
        } else {
            self.conns
                .iter()
                .filter(|(_, entry)| {
                    let key = entry.key();
                    entry.linked
                        && endpoint_matches(local, key.local)
                        && endpoint_matches(remote, key.remote)
                })
                .map(|(id, _)| id)
                .collect()
        };
        // Oldest first, reproducibly.
        victims.sort_unstable();
        for &id in &victims {
            if let Some(entry) = self.conns.get_mut(&id) {
                entry.conn.abort(now, ConnError::Aborted);
            }
            self.after_conn_call(id, true);
        }
        victims.len()
    }

    /// getsockname(2), in the socket's family.
    pub fn local_addr(&self, socket: SocketHandle) -> Result<SocketAddr, SocketError> {
        let entry = self.sockets.get(&socket).ok_or(SocketError::BadHandle)?;
        let unspecified = entry.family.unspecified();
        Ok(match &entry.kind {
            SocketKind::Unconnected { bound } => bound.as_deref().copied().unwrap_or(unspecified),
            SocketKind::Listening(listener) => listener.local,
            SocketKind::Connection(id) => self.conns.get(id).map_or(unspecified, |entry| {
                user_view(entry.key().local, entry.mapped)
            }),
        })
    }

    /// Whether `socket` has become a connection (connect or accept), in
    /// whatever state, as opposed to an unconnected socket or a listener.
    pub fn is_connection(&self, socket: SocketHandle) -> bool {
        self.sockets
            .get(&socket)
            .is_some_and(|e| matches!(e.kind, SocketKind::Connection(_)))
    }

    /// getpeername(2): ENOTCONN unless connected (as Linux, a socket still in
    /// SYN-SENT or already CLOSED has no peer).
    pub fn peer_addr(&self, socket: SocketHandle) -> Result<SocketAddr, SocketError> {
        let entry = self.sockets.get(&socket).ok_or(SocketError::BadHandle)?;
        let SocketKind::Connection(id) = entry.kind else {
            return Err(SocketError::NotConnected);
        };
        let conn = self.conns.get(&id).ok_or(SocketError::NotConnected)?;
        match conn.conn.state() {
            TcpState::SynSent | TcpState::Closed => Err(SocketError::NotConnected),
            _ => Ok(user_view(conn.key().remote, conn.mapped)),
        }
    }

    /// setsockopt(2). Options set before connect/listen are handed to the
    /// connection (children inherit their listener's). `Error` and
    /// is read-only (ENOPROTOOPT); `MaxSegment` sets the user's MSS clamp.
    pub fn set_option(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        option: SockOption,
    ) -> Result<(), SocketError> {
        let entry = self
            .sockets
            .get_mut(&socket)
            .ok_or(SocketError::BadHandle)?;
        let option = options::normalize(option)?;
        if let SockOption::V6Only(_) = option {
            // IPPROTO_IPV6 options do not exist on an IPv4 socket; Linux
            // refuses IPV6_V6ONLY once the socket is bound (EINVAL).
            if entry.family != IpFamily::V6 {
                return Err(SocketError::UnsupportedOption);
            }
            if !matches!(entry.kind, SocketKind::Unconnected { bound: None }) {
                return Err(SocketError::InvalidValue);
            }
        }
        let SocketKind::Connection(id) = entry.kind else {
            if let Some(options) = entry.options.as_deref_mut() {
                options::store(options, option);
            }
            return Ok(());
        };
        let result = self.with_conn(id, |conn| conn.set_option(now, option));
        result.unwrap_or(Err(SocketError::BadHandle))
    }

    /// Reading `OptionName::Error` clears the pending error.
    pub fn get_option(
        &mut self,
        socket: SocketHandle,
        name: OptionName,
    ) -> Result<SockOption, SocketError> {
        let entry = self.sockets.get(&socket).ok_or(SocketError::BadHandle)?;
        if name == OptionName::V6Only && entry.family != IpFamily::V6 {
            return Err(SocketError::UnsupportedOption);
        }
        let headers = match entry.family {
            IpFamily::V4 => TCP_IP_HEADERS,
            IpFamily::V6 => TCP_IPV6_HEADERS,
        };
        let SocketKind::Connection(id) = entry.kind else {
            return Ok(match name {
                OptionName::Error => SockOption::Error(None),
                // Not connected: the MSS we would advertise (RFC 9293
                // §3.7.1), or the user's TCP_MAXSEG (as Linux returns user_mss).
                OptionName::MaxSegment => SockOption::MaxSegment(
                    entry
                        .unconnected_options()
                        .max_segment
                        .unwrap_or(self.config.mtu.saturating_sub(headers)),
                ),
                _ => options::read(&entry.unconnected_options(), name)
                    .ok_or(SocketError::UnsupportedOption)?,
            });
        };
        let conn = &mut self.conns.get_mut(&id).ok_or(SocketError::BadHandle)?.conn;
        match name {
            OptionName::Error => {
                let error = conn.take_error();
                // The pending error is part of readiness (ERR).
                self.note_readiness(socket);
                Ok(SockOption::Error(error))
            }
            OptionName::MaxSegment => Ok(SockOption::MaxSegment(conn.stats().mss)),
            OptionName::QuickAck => Ok(SockOption::QuickAck(conn.quick_ack())),
            OptionName::AtMark => Ok(SockOption::AtMark(conn.at_mark())),
            _ => options::read(conn.options(), name).ok_or(SocketError::UnsupportedOption),
        }
    }

    /// TCP_INFO of a connected socket (Linux's `tcp_info`, typed); a
    /// socket without a connection reports its state only, as Linux does.
    pub fn tcp_info(&self, now: Instant, socket: SocketHandle) -> Result<TcpInfo, SocketError> {
        let entry = self.sockets.get(&socket).ok_or(SocketError::BadHandle)?;
        match &entry.kind {
            SocketKind::Connection(id) => self
                .conns
                .get(id)
                .map(|c| c.conn.tcp_info(now))
                .ok_or(SocketError::BadHandle),
            SocketKind::Listening(_) => Ok(TcpInfo {
                state: TcpState::Listen,
                ..TcpInfo::default()
            }),
            SocketKind::Unconnected { .. } => Ok(TcpInfo::default()),
        }
    }

    /// Current readiness of a socket.
    pub fn readiness(&self, socket: SocketHandle) -> Result<Readiness, SocketError> {
        self.readiness_of(socket).ok_or(SocketError::BadHandle)
    }

    /// One socket's info.
    pub fn socket_info(&self, socket: SocketHandle) -> Result<SocketInfo, SocketError> {
        let entry = self.sockets.get(&socket).ok_or(SocketError::BadHandle)?;
        Ok(self.socket_entry_info(socket, entry))
    }

    /// Every socket and connection (including unaccepted and TIME-WAIT ones):
    /// sockets with a handle by handle, then handle-less connections oldest first.
    pub fn sockets(&self) -> Vec<SocketInfo> {
        let mut handles: Vec<&SocketHandle> = self.sockets.keys().collect();
        handles.sort_unstable();
        let mut orphans: Vec<(ConnId, &ConnEntry)> = self
            .conns
            .iter()
            .filter(|(_, entry)| entry.handle().is_none())
            .collect();
        orphans.sort_unstable_by_key(|(id, _)| *id);
        handles
            .into_iter()
            .filter_map(|h| {
                self.sockets
                    .get(h)
                    .map(|entry| self.socket_entry_info(*h, entry))
            })
            .chain(orphans.into_iter().map(|(_, entry)| conn_info(entry)))
            .collect()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ------------------------------------------------------------ tracing

    /// Starts following the connection `filter` selects (see
    /// [`TraceFilter::next_only`]); returns the filter's slot, whose bit is
    /// set in the records' mask. An existing connection gets a
    /// [`TraceEvent::Start`] record first. `None` when
    /// [`MAX_TRACE_FILTERS`] filters are active already.
    pub fn trace_add(&mut self, filter: TraceFilter) -> Option<u32> {
        let slot = self.tracer.slots.iter().position(Option::is_none)?;
        self.tracer.slots[slot] = Some(FilterSlot {
            filter,
            latched: false,
        });
        let bit = 1u64 << slot;
        self.tracer.active |= bit;
        if !filter.next_only {
            let oldest = self
                .conns
                .iter()
                .filter(|(_, e)| e.linked && filter.matches(e.conn.local(), e.conn.remote()))
                .map(|(id, _)| id)
                .min();
            if let Some(entry) = oldest.and_then(|id| self.conns.get_mut(&id)) {
                entry.rare_mut().trace_mask |= bit;
                entry.conn.set_traced(true);
                let (iss, irs) = entry.conn.initial_sequence_numbers();
                let state = entry.conn.state();
                let key = entry.key();
                if let Some(slot) = &mut self.tracer.slots[slot] {
                    slot.latched = true;
                }
                self.trace_push(bit, key, TraceEvent::Start { state, iss, irs });
            }
        }
        u32::try_from(slot).ok()
    }

    /// Stops filter `slot`: its bit is cleared everywhere.
    pub fn trace_remove(&mut self, slot: u32) {
        let Some(slot) = usize::try_from(slot)
            .ok()
            .filter(|s| *s < MAX_TRACE_FILTERS)
        else {
            return;
        };
        self.tracer.slots[slot] = None;
        let bit = 1u64 << slot;
        self.tracer.active &= !bit;
        for entry in self.conns.values_mut() {
            if let Some(rare) = entry
                .rare
                .as_mut()
                .filter(|rare| rare.trace_mask & bit != 0)
            {
                rare.trace_mask &= !bit;
                if rare.trace_mask == 0 {
                    entry.conn.set_traced(false);
                }
            }
        }
        self.tracer.queue.retain_mut(|record| {
            record.mask &= !bit;
            record.mask != 0
        });
    }

    /// Whether any trace filter is active (cheap; for the owner's own trace points).
    pub fn tracing_active(&self) -> bool {
        self.tracer.active != 0
    }

    /// The next trace record, oldest first.
    pub fn poll_trace(&mut self) -> Option<TraceRecord> {
        self.tracer.queue.pop_front()
    }

    /// Trace records dropped because nobody drained them in time.
    pub fn trace_dropped(&self) -> u64 {
        self.tracer.dropped
    }

    /// The filters following the connection `local`–`remote` (0 if none or
    /// no such connection); for the owner's own records about the same
    /// connection (e.g. what the link did to its packets).
    pub fn trace_mask(&self, local: impl Into<SocketAddr>, remote: impl Into<SocketAddr>) -> u64 {
        if self.tracer.active == 0 {
            return 0;
        }
        let (local, remote) = (canonical(local.into()), canonical(remote.into()));
        self.conns
            .find(&FourTuple { local, remote })
            .and_then(|id| self.conns.get(&id))
            .map_or(0, |entry| entry.trace_mask())
    }

    fn trace_push(&mut self, mask: u64, key: FourTuple, event: TraceEvent) {
        self.tracer.push(TraceRecord {
            time: self.trace_now,
            local: key.local,
            remote: key.remote,
            mask,
            event,
        });
    }

    // ------------------------------------------------------------ internals: connections

    fn new_handle(&mut self) -> SocketHandle {
        let handle = SocketHandle(self.config.handle_tag | self.next_handle);
        self.next_handle += 1;
        handle
    }

    fn next_ip_ident(&mut self) -> u16 {
        let ident = self.ip_ident;
        self.ip_ident = ident.wrapping_add(1);
        ident
    }

    fn connection_params(
        &mut self,
        key: FourTuple,
        options: SocketOptions,
        now: Instant,
    ) -> ConnectionParams {
        ConnectionParams {
            local: key.local,
            remote: key.remote,
            // RFC 6528 §3: keyed hash of the 4-tuple plus a clock.
            iss: match self.config.fixed_iss {
                Some(iss) => SeqNum(iss),
                None => self.isn.isn(key.local, key.remote, now),
            },
            // RFC 7323 §5.4 offset, fixed per host pair (see IsnGenerator::ts_offset).
            ts_offset: self.isn.ts_offset(key.local.ip(), key.remote.ip()),
            options,
            config: std::sync::Arc::clone(&self.conn_config),
        }
    }

    fn insert_connection(
        &mut self,
        conn: Connection,
        key: FourTuple,
        holder: Holder,
        explicit_port: bool,
        mapped: bool,
    ) -> ConnId {
        let trace_mask = if self.tracer.active == 0 {
            0
        } else {
            self.tracer.mask_for_new(key.local, key.remote)
        };
        let mut conn = conn;
        conn.set_traced(trace_mask != 0);
        let user_memory = match holder {
            Holder::User(handle) => self.sockets.get(&handle),
            _ => None,
        }
        .map(|entry| entry.memory);
        conn.set_memory_level(user_memory, Some(self.memory_global));
        debug_assert!(conn.local() == key.local && conn.remote() == key.remote);
        let span = tracing::debug_span!("conn", local = %key.local, remote = %key.remote);
        let span = (!span.is_disabled()).then_some(span);
        let rare = (trace_mask != 0 || span.is_some()).then(|| {
            Box::new(EntryRare {
                orphan: None,
                trace_mask,
                span,
            })
        });
        let id = self.conns.insert(Box::new(ConnEntry {
            conn,
            holder,
            linked: true,
            explicit_port,
            timer: None,
            in_ready: false,
            retransmits_seen: 0,
            undos_seen: (0, 0),
            buffered: 0,
            rare,
            flow_label: self.isn.flow_label(key.local, key.remote),
            mapped,
            serial: 0,
        }));
        self.conns.link(id);
        self.ports
            .add(key.local.port(), PortOwner::Conn(id), explicit_port);
        id
    }

    /// Runs `op` on connection `id` (a user call), then the bookkeeping.
    /// `None` if the connection does not exist (never for a live handle).
    /// Runs `op` on the connection behind `socket` (see [`Stack::with_conn`]):
    /// the error's `BadHandle` when there is none, `NotConnected` when the
    /// socket is not a connection (unconnected or listening).
    fn on_connection<T, E: ConnectionCallError>(
        &mut self,
        socket: SocketHandle,
        op: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.target(socket) {
            Target::Missing => Err(E::BAD_HANDLE),
            Target::NotConnection => Err(E::NOT_CONNECTED),
            Target::Conn(id) => self.with_conn(id, op).unwrap_or(Err(E::BAD_HANDLE)),
        }
    }

    fn with_conn<R>(&mut self, id: ConnId, op: impl FnOnce(&mut Connection) -> R) -> Option<R> {
        let entry = self.conns.get_mut(&id)?;
        let entered = EntryRare::enter_span(&entry.rare);
        let result = op(&mut entry.conn);
        drop(entered);
        self.after_conn_call(id, true);
        Some(result)
    }

    /// Bookkeeping after any call into connection `id`: state-change events
    /// and counters, timer re-arming, the transmit FIFO, readiness events,
    /// listener queues, reaping.
    fn after_conn_call(&mut self, id: ConnId, wants_transmit: bool) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        self.state_scratch.clear();
        entry.conn.drain_state_changes(&mut self.state_scratch);
        if entry.trace_mask() != 0 {
            let (mask, key) = (entry.trace_mask(), entry.key());
            self.note_scratch.clear();
            entry.conn.drain_notes(&mut self.note_scratch);
            let notes = std::mem::take(&mut self.note_scratch);
            for &note in &notes {
                self.trace_push(mask, key, TraceEvent::Note(note));
            }
            self.note_scratch = notes;
            for i in 0..self.state_scratch.len() {
                let (old, new) = self.state_scratch[i];
                self.trace_push(mask, key, TraceEvent::State { old, new });
            }
        }
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        let undos = entry.conn.undo_counts();
        if undos != entry.undos_seen {
            self.stats.cwnd_undos += u64::from(undos.0.wrapping_sub(entry.undos_seen.0));
            self.stats.spurious_rtos += u64::from(undos.1.wrapping_sub(entry.undos_seen.1));
            entry.undos_seen = undos;
        }
        for &(old, new) in &self.state_scratch {
            // RFC 4022 tcpAttemptFails: SYN-SENT or SYN-RECEIVED straight to CLOSED.
            if new == TcpState::Closed && matches!(old, TcpState::SynSent | TcpState::SynReceived) {
                self.stats.failed_opens += 1;
            }
            if self.state_events_queued < STATE_EVENT_LIMIT {
                self.state_events_queued += 1;
                self.events
                    .push_back(QueuedEvent::State(StackEvent::StateChange {
                        socket: entry.handle(),
                        local: user_view(entry.key().local, entry.mapped),
                        remote: user_view(entry.key().remote, entry.mapped),
                        old,
                        new,
                    }));
            }
        }
        let finished = entry.conn.is_finished();
        let deadline = if finished {
            None
        } else {
            entry.conn.poll_timeout()
        };
        if deadline != entry.timer {
            entry.timer = deadline;
            if let Some(deadline) = deadline {
                self.timers.push(deadline, id);
            }
        }
        if wants_transmit && !entry.in_ready && !finished {
            entry.in_ready = true;
            self.ready.push_back(id);
        }
        let state = entry.conn.state();
        let (handle, parent) = (entry.handle(), entry.parent());

        if let Some(handle) = handle {
            self.note_readiness(handle);
        }
        if let Some(listener) = parent {
            self.update_child(listener, id, state, finished);
        }
        self.account_orphan(id);
        self.account_buffered(id);
        if let Some(handle) = handle {
            self.note_buffered(handle, id);
        }
        if finished {
            self.unlink(id);
            if handle.is_none() {
                self.forget_conn(id);
            }
        }
        self.prune_timers();
    }

    /// Removes a connection from `conns`, uncounting its bytes.
    fn forget_conn(&mut self, id: ConnId) -> Option<Box<ConnEntry>> {
        let entry = self.conns.remove(&id)?;
        self.buffered_total -= entry.buffered;
        Some(entry)
    }

    /// Keeps `buffered_total` current for connection `id`, syncs its
    /// memory-drop count, and moves the stack-wide memory level.
    fn account_buffered(&mut self, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.rcvq_drops += entry.conn.take_memory_drops();
        let bytes = entry.conn.buffered_bytes();
        if bytes == entry.buffered {
            return;
        }
        self.buffered_total = self.buffered_total - entry.buffered + bytes;
        entry.buffered = bytes;
        self.update_memory_level();
    }

    /// Queues a buffer-change report for `handle` (connection `id`) if its
    /// bytes differ from the last report.
    fn note_buffered(&mut self, handle: SocketHandle, id: ConnId) {
        let Some(bytes) = self.conns.get(&id).map(|e| e.buffered) else {
            return;
        };
        if let Some(entry) = self.sockets.get_mut(&handle)
            && entry.buffered_reported != bytes
            && !entry.buffered_queued
        {
            entry.buffered_queued = true;
            self.buffer_changes.push_back(handle);
        }
    }

    /// Moves the stack-wide level with `buffered_total` (Linux's tcp_mem:
    /// pressure from `pressure` until below `low`; the hard level from
    /// `high` until halfway back to `pressure`, so that a total hovering at
    /// the limit does not flip every connection on every segment), and
    /// hands a new level to every connection.
    fn update_memory_level(&mut self) {
        let Some([low, pressure, high]) = self.config.tcp_mem else {
            return;
        };
        let total = self.buffered_total;
        let level = match self.memory_global {
            _ if total >= high => MemoryLevel::Exhausted,
            MemoryLevel::Exhausted if total > pressure + (high - pressure.min(high)) / 2 => {
                MemoryLevel::Exhausted
            }
            _ if total > pressure => MemoryLevel::Pressure,
            MemoryLevel::Exhausted | MemoryLevel::Pressure if total >= low => MemoryLevel::Pressure,
            _ => MemoryLevel::Normal,
        };
        if level == self.memory_global {
            return;
        }
        let relaxed = level < self.memory_global;
        if level > self.memory_global {
            match level {
                MemoryLevel::Exhausted => self.stats.tcp_mem_full += 1,
                _ => self.stats.tcp_mem_pressure += 1,
            }
        }
        tracing::debug!(total, ?level, "stack-wide memory level");
        self.memory_global = level;
        let ids = self.conns.ids_by_age();
        for id in ids {
            let Some(entry) = self.conns.get_mut(&id) else {
                continue;
            };
            entry.conn.set_memory_level(None, Some(level));
            let handle = entry.handle();
            if relaxed {
                // A window update may be due; readiness may have come back.
                if !entry.in_ready {
                    entry.in_ready = true;
                    self.ready.push_back(id);
                }
            }
            if let Some(handle) = handle {
                self.note_readiness(handle);
            }
        }
    }

    /// The next socket whose buffered bytes changed since its last report,
    /// with its bytes now (send and receive queues, out-of-order data).
    /// The stack's user keeps its memory accounting with these.
    pub fn poll_buffered(&mut self) -> Option<(SocketHandle, usize)> {
        while let Some(handle) = self.buffer_changes.pop_front() {
            let bytes = self.buffered_bytes(handle);
            let Some(entry) = self.sockets.get_mut(&handle) else {
                continue;
            };
            entry.buffered_queued = false;
            if entry.buffered_reported == bytes {
                continue;
            }
            entry.buffered_reported = bytes;
            return Some((handle, bytes));
        }
        None
    }

    /// Bytes a socket's connection holds in its buffers (0 without one).
    pub fn buffered_bytes(&self, socket: SocketHandle) -> usize {
        match self.sockets.get(&socket).map(|e| &e.kind) {
            Some(SocketKind::Connection(id)) => self.conns.get(id).map_or(0, |e| e.buffered),
            _ => 0,
        }
    }

    /// Bytes all connections hold, orphans and those not yet accepted included.
    pub fn buffered_total(&self) -> usize {
        self.buffered_total
    }

    /// Bytes all orphans hold.
    pub fn orphan_bytes(&self) -> usize {
        self.orphan_bytes
    }

    /// The stack-wide memory level (`StackConfig::tcp_mem`).
    pub fn memory_level(&self) -> MemoryLevel {
        self.memory_global
    }

    /// Sets a socket's memory level ([`MemoryLevel`]; the stricter of it
    /// and the stack-wide level applies). The stack's user sets it from its
    /// own accounting, e.g. a quota on what one client's sockets may hold.
    /// Relaxing it may send a window update and report the socket writable.
    pub fn set_memory_level(
        &mut self,
        now: Instant,
        socket: SocketHandle,
        level: MemoryLevel,
    ) -> Result<(), SocketError> {
        let entry = self
            .sockets
            .get_mut(&socket)
            .ok_or(SocketError::BadHandle)?;
        if entry.memory == level {
            return Ok(());
        }
        let relaxed = level < entry.memory;
        entry.memory = level;
        if let SocketKind::Connection(id) = entry.kind {
            self.trace_now = now;
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.conn.set_memory_level(Some(level), None);
            }
            self.after_conn_call(id, relaxed);
        }
        Ok(())
    }

    /// Moves a listener's child between queues as its state changes: to the
    /// accept queue once synchronized (ESTABLISHED, or CLOSE-WAIT when data
    /// and FIN came fast), out of both queues once it dies before accept.
    fn update_child(
        &mut self,
        listener: SocketHandle,
        id: ConnId,
        state: TcpState,
        finished: bool,
    ) {
        // TCP_DEFER_ACCEPT: established without data yet, it waits.
        let deferred = self
            .conns
            .get(&id)
            .is_some_and(|entry| entry.conn.accept_deferred());
        let Some(SocketEntry {
            kind: SocketKind::Listening(listen),
            ..
        }) = self.sockets.get_mut(&listener)
        else {
            return;
        };
        let mut accept_queue_changed = false;
        if finished || state == TcpState::Closed {
            listen.syn_queue.remove(&id);
            if let Some(position) = listen.accept_queue.iter().position(|&c| c == id) {
                listen.accept_queue.remove(position);
                accept_queue_changed = true;
            }
            if let Some(entry) = self.conns.get_mut(&id) {
                entry.clear_parent();
            }
        } else if state.is_synchronized() && !deferred && listen.syn_queue.remove(&id) {
            listen.accept_queue.push_back(id);
            accept_queue_changed = true;
        }
        if accept_queue_changed {
            self.note_readiness(listener);
        }
    }

    /// Counts connection `id` as an orphan if closing it left one, then
    /// enforces the orphan limits: while there are more than `max_orphans`
    /// or they hold more than `max_orphan_memory` bytes, the oldest orphan is
    /// reset (RST, counted as `orphan_resets`), as Linux's
    /// tcp_out_of_resources resets orphans past `tcp_max_orphans`.
    fn adopt_orphan(&mut self, now: Instant, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        if entry.orphan().is_some() || !entry.conn.is_orphan() {
            return;
        }
        let order = self.next_orphan;
        self.next_orphan += 1;
        let bytes = entry.conn.buffered_bytes();
        entry.rare_mut().orphan = Some(OrphanMark { order, bytes });
        self.orphans.insert(order, id);
        self.orphan_bytes += bytes;
        while self.orphans.len() > self.config.max_orphans as usize
            || self.orphan_bytes > self.config.max_orphan_memory
        {
            let Some((_, oldest)) = self.orphans.pop_first() else {
                break;
            };
            if let Some(entry) = self.conns.get_mut(&oldest) {
                if let Some(mark) = entry.rare.as_mut().and_then(|rare| rare.orphan.take()) {
                    self.orphan_bytes -= mark.bytes;
                }
                entry.conn.abort(now, ConnError::Aborted);
            }
            self.stats.orphan_resets += 1;
            self.after_conn_call(oldest, true);
        }
    }

    /// Keeps an orphan's byte count current, and forgets it once it is no
    /// longer an orphan (TIME-WAIT or CLOSED); one that ended by a timeout
    /// (retries, probes, FIN-WAIT-2) is counted as `orphan_timeouts`.
    fn account_orphan(&mut self, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(rare) = entry.rare.as_mut() else {
            return;
        };
        let Some(mark) = rare.orphan.as_mut() else {
            return;
        };
        self.orphan_bytes -= mark.bytes;
        if entry.conn.is_orphan() {
            mark.bytes = entry.conn.buffered_bytes();
            self.orphan_bytes += mark.bytes;
            return;
        }
        let order = mark.order;
        rare.orphan = None;
        self.orphans.remove(&order);
        if entry.conn.peek_error() == Some(ConnError::TimedOut) {
            self.stats.orphan_timeouts += 1;
        }
    }

    /// Releases a finished connection's 4-tuple and port.
    fn unlink(&mut self, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        if !entry.linked {
            return;
        }
        entry.linked = false;
        entry.timer = None;
        let (key, explicit_port) = (entry.key(), entry.explicit_port);
        self.conns.unlink(&key, id);
        self.ports
            .remove(key.local.port(), PortOwner::Conn(id), explicit_port);
    }

    /// Queues a readiness event for `socket` if its readiness differs from
    /// what was last reported and none is queued yet.
    fn note_readiness(&mut self, socket: SocketHandle) {
        let Some(current) = self.readiness_of(socket) else {
            return;
        };
        let Some(entry) = self.sockets.get_mut(&socket) else {
            return;
        };
        if current != entry.reported && !entry.readiness_queued {
            entry.readiness_queued = true;
            self.events.push_back(QueuedEvent::Readiness(socket));
        }
    }

    fn readiness_of(&self, socket: SocketHandle) -> Option<Readiness> {
        let entry = self.sockets.get(&socket)?;
        Some(match &entry.kind {
            SocketKind::Unconnected { .. } => UNCONNECTED_READINESS,
            // poll(2) on a listener: readable when accept() would not block.
            SocketKind::Listening(listener) if listener.accept_queue.is_empty() => {
                Readiness::empty()
            }
            SocketKind::Listening(_) => Readiness::IN,
            SocketKind::Connection(id) => self
                .conns
                .get(id)
                .map_or(Readiness::HUP, |entry| entry.conn.readiness()),
        })
    }

    /// Drops stale entries from the top of the timer heap (so
    /// [`Stack::poll_timeout`] can peek), and rebuilds it when stale entries
    /// pile up.
    fn prune_timers(&mut self) {
        while let Some((deadline, id)) = self.timers.peek() {
            if self
                .conns
                .get(&id)
                .is_some_and(|entry| entry.timer == Some(deadline))
            {
                break;
            }
            self.timers.pop();
        }
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let live = self
                .conns
                .iter()
                .filter_map(|(id, entry)| entry.timer.map(|deadline| (deadline, id)));
            self.timers.rebuild(live);
        }
    }

    /// connect() on a socket that already has a connection.
    fn connect_again(&mut self, socket: SocketHandle, id: ConnId) -> ConnectError {
        let Some(entry) = self.conns.get_mut(&id) else {
            return ConnectError::AlreadyConnected;
        };
        let error = match entry.conn.state() {
            TcpState::SynSent | TcpState::SynReceived => ConnectError::InProgress,
            // A failed connect reports its error once (Linux: sock_error()).
            TcpState::Closed => entry
                .conn
                .take_error()
                .map_or(ConnectError::AlreadyConnected, ConnectError::Failed),
            _ => ConnectError::AlreadyConnected,
        };
        self.note_readiness(socket);
        error
    }

    fn target(&self, socket: SocketHandle) -> Target {
        match self.sockets.get(&socket).map(|entry| &entry.kind) {
            None => Target::Missing,
            Some(SocketKind::Connection(id)) => Target::Conn(*id),
            Some(_) => Target::NotConnection,
        }
    }

    // ------------------------------------------------------------ internals: ports and addresses

    /// True if binding (or listening on) `port` on the addresses of
    /// `coverage` for `socket` with the given SO_REUSEADDR setting conflicts
    /// with another user of the port on an overlapping address.
    fn port_conflict(
        &self,
        port: u16,
        socket: SocketHandle,
        reuse: bool,
        coverage: Coverage,
    ) -> bool {
        self.ports.owners(port).any(|owner| {
            let (other_reuse, other_listening, other) = match owner {
                PortOwner::Socket(handle) if handle == socket => return false,
                PortOwner::Socket(handle) => match self.sockets.get(&handle) {
                    Some(entry) => (
                        entry.unconnected_options().reuse_addr,
                        matches!(entry.kind, SocketKind::Listening(_)),
                        socket_coverage(entry),
                    ),
                    None => return false,
                },
                PortOwner::Conn(id) => match self.conns.get(&id) {
                    Some(entry) => (
                        entry.conn.options().reuse_addr,
                        false,
                        Coverage::of(entry.key().local.ip(), false),
                    ),
                    None => return false,
                },
            };
            coverage.overlaps(other) && !(reuse && other_reuse && !other_listening)
        })
    }

    /// The listener that takes a segment for `local` (our address, wire
    /// form): among those on its port whose address covers it, the most
    /// specific — an exact address, then a wildcard of the segment's own
    /// family, then a dual-stack `::` (Linux's compute_score order).
    fn listener_for(&self, local: SocketAddr) -> Option<SocketHandle> {
        let on_port = self.listeners.get(&local.port())?;
        on_port
            .iter()
            .filter_map(|&handle| {
                let entry = self.sockets.get(&handle)?;
                let SocketKind::Listening(listener) = &entry.kind else {
                    return None;
                };
                let bound = listener.local.ip();
                if !socket_coverage(entry).covers(local.ip()) {
                    return None;
                }
                let score = if bound.to_canonical() == local.ip() {
                    2
                } else if bound.is_ipv4() == local.is_ipv4() {
                    1
                } else {
                    0
                };
                Some((score, handle))
            })
            .max_by_key(|&(score, handle)| (score, core::cmp::Reverse(handle)))
            .map(|(_, handle)| handle)
    }

    /// An ephemeral port nobody uses (bind to port 0, listen without bind),
    /// as Linux's `inet_csk_find_open_port`: a random start, the ports at
    /// an odd distance from the range's first port before the even ones
    /// (connect prefers the even ones), and with SO_REUSEADDR the lower
    /// half of the range before the upper one. Deviation: Linux may also
    /// hand out a port whose users would not conflict (other addresses,
    /// SO_REUSEADDR on both); tcpd only a free one.
    fn pick_unused_port(&mut self, reuse: bool) -> Option<u16> {
        let range = self.config.local_port_range;
        let (first, size) = (range.first(), range.size());
        // Linux splits at an even count from the start, unless the range
        // holds fewer than 4 ports.
        let lower = if reuse && size >= 4 {
            (size >> 2) << 1
        } else {
            size
        };
        let halves = [(first, lower), (first + lower as u16, size - lower)];
        for (first, size) in halves.into_iter().filter(|&(_, size)| size > 0) {
            let offset = self.rng.random_range(0..size);
            if let Some((_, port)) =
                parity_scan(first, size, offset, 1).find(|&(_, port)| self.ports.is_free(port))
            {
                return Some(port);
            }
        }
        None
    }

    /// An ephemeral port for connecting to `remote`: not held explicitly by
    /// anyone (bind, listen, a listener's children), and not already in a
    /// 4-tuple with `remote` (so a port serves any number of destinations).
    ///
    /// RFC 6056 §3.3.4 (Algorithm 4, "double-hash"), as Linux's
    /// `__inet_hash_connect`: the search starts at a keyed hash of (local
    /// IP, remote IP, remote port) plus a counter chosen by another hash of
    /// them from a table, walks the ports at an even distance from the
    /// range's first port, then the odd ones (bind(0) prefers those), and
    /// the counter then moves past the port found plus a random 0-14 ports
    /// (Linux's "small random increments"). Successive connections to one
    /// destination thus walk the range instead of landing on a 4-tuple the
    /// peer may still hold in TIME-WAIT, and the walk reveals nothing about
    /// connections to other destinations.
    ///
    /// A 4-tuple of ours in TIME-WAIT is never reused: Linux reuses one
    /// only under `net.ipv4.tcp_tw_reuse`, whose default (2) allows it for
    /// loopback traffic alone, and tcpd has no loopback. Deviation: a
    /// socket explicitly bound to a port (SO_REUSEADDR) that connects to
    /// the 4-tuple of a TIME-WAIT connection gets EADDRNOTAVAIL; Linux
    /// takes the TIME-WAIT over when it had timestamps.
    fn pick_connect_port(&mut self, local_ip: IpAddr, remote: SocketAddr) -> Option<u16> {
        // Linux: INET_TABLE_PERTURB_SIZE, 2^16 (RFC 6056 §3.3.4 leaves the
        // size open; Linux grew it from 2^8 against device tracking).
        const PERTURB_ENTRIES: usize = 1 << 16;
        let hash = self.isn.port_offset(local_ip, remote);
        let table = self
            .port_perturb
            .get_or_insert_with(|| vec![0; PERTURB_ENTRIES].into_boxed_slice());
        let index = hash as usize & (PERTURB_ENTRIES - 1);
        let offset = table[index].wrapping_add((hash >> 32) as u32);
        let range = self.config.local_port_range;
        let (ports, conns) = (&self.ports, &self.conns);
        let (walked, port) =
            parity_scan(range.first(), range.size(), offset, 0).find(|&(_, port)| {
                ports.shareable_by_connect(port)
                    && !conns.contains_tuple(&FourTuple {
                        local: SocketAddr::new(local_ip, port),
                        remote,
                    })
            })?;
        let walked = walked.max(self.rng.random_range(0..8u32) * 2);
        table[index] = table[index].wrapping_add(walked + 2);
        Some(port)
    }

    /// True for an address a connection can have at its far end (wire
    /// form). IPv4: not unspecified, broadcast (limited or this subnet's),
    /// multicast, loopback, or the stack's own address (RFC 1122 §3.2.1.3,
    /// §4.2.3.10). IPv6: not unspecified, multicast, loopback (RFC 4291
    /// §2.5.2, §2.5.3, §2.7), IPv4-mapped (IPv4 travels as IPv4) or ours.
    fn is_remote_unicast(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => {
                !(ip.is_unspecified()
                    || ip.is_broadcast()
                    || ip.is_multicast()
                    || ip.is_loopback()
                    || ip == self.config.address
                    || Some(ip) == self.directed_broadcast())
            }
            IpAddr::V6(ip) => {
                !(ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_loopback()
                    || ip.to_ipv4_mapped().is_some()
                    || self.is_local_v6(ip))
            }
        }
    }

    /// One of the stack's own addresses (wire form).
    fn is_local(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => ip == self.config.address,
            IpAddr::V6(ip) => self.is_local_v6(ip),
        }
    }

    fn is_local_v6(&self, ip: Ipv6Addr) -> bool {
        self.config.addresses6.iter().any(|net| net.addr() == ip)
    }

    /// The source address for a connection to `remote` (wire form): the
    /// IPv4 address, or the IPv6 address whose prefix holds `remote`, else
    /// the first (RFC 6724 §5 reduced to rule 8, longest matching prefix,
    /// on a single link); `None` without IPv6 addresses.
    fn source_address(&self, remote: IpAddr) -> Option<IpAddr> {
        match remote {
            IpAddr::V4(_) => Some(IpAddr::V4(self.config.address)),
            IpAddr::V6(remote) => {
                let addresses = &self.config.addresses6;
                addresses
                    .iter()
                    .filter(|net| net.contains(&remote))
                    .max_by_key(|net| net.prefix_len())
                    .or_else(|| addresses.first())
                    .map(|net| IpAddr::V6(net.addr()))
            }
        }
    }

    /// The subnet's broadcast address, for prefixes that have one (RFC 3021: /31 and /32 do not).
    fn directed_broadcast(&self) -> Option<Ipv4Addr> {
        let prefix = u32::from(self.config.prefix_len);
        if !(1..=30).contains(&prefix) {
            return None;
        }
        let host_mask = u32::MAX >> prefix;
        Some(Ipv4Addr::from(u32::from(self.config.address) | host_mask))
    }

    // ------------------------------------------------------------ internals: info

    fn socket_entry_info(&self, handle: SocketHandle, entry: &SocketEntry) -> SocketInfo {
        let unspecified = entry.family.unspecified();
        let (state, local, backlog, accepted) = match &entry.kind {
            SocketKind::Connection(id) => {
                if let Some(conn) = self.conns.get(id) {
                    return conn_info(conn);
                }
                (TcpState::Closed, unspecified, 0, 0)
            }
            SocketKind::Unconnected { bound } => (
                TcpState::Closed,
                bound.as_deref().copied().unwrap_or(unspecified),
                0,
                0,
            ),
            SocketKind::Listening(listener) => (
                TcpState::Listen,
                listener.local,
                listener.backlog,
                u32::try_from(listener.accept_queue.len()).unwrap_or(u32::MAX),
            ),
        };
        SocketInfo {
            handle: Some(handle),
            state,
            local,
            remote: unspecified,
            // As `ss` shows listeners: Recv-Q is the accept queue, Send-Q the backlog.
            recv_queue: accepted as usize,
            send_queue: backlog as usize,
            srtt: Duration::ZERO,
            rttvar: Duration::ZERO,
            rto: Duration::ZERO,
            cwnd: 0,
            ssthresh: 0,
            retransmits: 0,
            bytes_sent: 0,
            bytes_received: 0,
            congestion: entry.unconnected_options().congestion,
            mss: 0,
            snd_wnd: 0,
            rcv_wnd: 0,
            listen_backlog: backlog,
            accept_queue: accepted,
            recovery: RecoveryInfo::default(),
        }
    }
}

/// The local addresses a bound socket or a connection holds its port on,
/// per family: `None` — none of the family; `Some(None)` — all of it;
/// `Some(Some(a))` — just `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Coverage {
    v4: Option<Option<Ipv4Addr>>,
    v6: Option<Option<Ipv6Addr>>,
}

impl Coverage {
    /// What binding `bound` (as given by the user) covers: an IPv4 address
    /// (or an IPv4-mapped one) its IPv4 address or all of IPv4; `::` all of
    /// IPv6 and, without IPV6_V6ONLY, all of IPv4 too (RFC 3493 §3.7).
    fn of(bound: IpAddr, v6only: bool) -> Coverage {
        let v4 = |ip: Ipv4Addr| Coverage {
            v4: Some((!ip.is_unspecified()).then_some(ip)),
            v6: None,
        };
        match bound {
            IpAddr::V4(ip) => v4(ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => v4(ip),
                None if ip.is_unspecified() => Coverage {
                    v4: (!v6only).then_some(None),
                    v6: Some(None),
                },
                None => Coverage {
                    v4: None,
                    v6: Some(Some(ip)),
                },
            },
        }
    }

    /// Some address is covered by both.
    fn overlaps(self, other: Coverage) -> bool {
        fn family<T: PartialEq>(a: Option<Option<T>>, b: Option<Option<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a.is_none() || b.is_none() || a == b,
                _ => false,
            }
        }
        family(self.v4, other.v4) || family(self.v6, other.v6)
    }

    /// `local` (wire form) is covered.
    fn covers(self, local: IpAddr) -> bool {
        match local {
            IpAddr::V4(ip) => self.v4.is_some_and(|a| a.is_none_or(|a| a == ip)),
            IpAddr::V6(ip) => self.v6.is_some_and(|a| a.is_none_or(|a| a == ip)),
        }
    }
}

/// The coverage of a bound or listening socket (nothing for others).
fn socket_coverage(entry: &SocketEntry) -> Coverage {
    let bound = match &entry.kind {
        SocketKind::Unconnected { bound: Some(bound) } => **bound,
        SocketKind::Listening(listener) => listener.local,
        _ => {
            return Coverage { v4: None, v6: None };
        }
    };
    Coverage::of(bound.ip(), entry.unconnected_options().v6only)
}

/// `addr` in wire form: an IPv4-mapped address becomes its IPv4 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `addr` as the user of a connection sees it: IPv4-mapped when an IPv6
/// socket owns an IPv4 connection (`mapped`).
fn user_view(addr: SocketAddr, mapped: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if mapped => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => addr,
    }
}

/// The family of the socket a connection's user holds.
fn entry_family(entry: &ConnEntry) -> IpFamily {
    if entry.mapped || entry.key().remote.is_ipv6() {
        IpFamily::V6
    } else {
        IpFamily::V4
    }
}

fn conn_info(entry: &ConnEntry) -> SocketInfo {
    let stats = entry.conn.stats();
    SocketInfo {
        handle: entry.handle(),
        state: entry.conn.state(),
        local: user_view(entry.key().local, entry.mapped),
        remote: user_view(entry.key().remote, entry.mapped),
        recv_queue: stats.recv_queue,
        send_queue: stats.send_queue,
        srtt: stats.srtt,
        rttvar: stats.rttvar,
        rto: stats.rto,
        cwnd: stats.cwnd,
        ssthresh: stats.ssthresh,
        retransmits: stats.retransmits,
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        congestion: entry.conn.options().congestion,
        mss: stats.mss,
        snd_wnd: stats.snd_wnd,
        rcv_wnd: stats.rcv_wnd,
        listen_backlog: 0,
        accept_queue: 0,
        recovery: stats.recovery,
    }
}

fn drop_reason(error: WireError) -> DropReason {
    match error {
        WireError::Truncated | WireError::Malformed => DropReason::Malformed,
        WireError::Checksum => DropReason::Checksum,
        WireError::Fragment => DropReason::Fragment,
        WireError::Unsupported => DropReason::Unsupported,
    }
}

#[cfg(test)]
mod size_probe {
    #[test]
    fn print_sizes() {
        use std::mem::size_of;
        eprintln!("ConnEntry {}", size_of::<super::ConnEntry>());
        eprintln!(
            "Connection {}",
            size_of::<crate::tcp::connection::Connection>()
        );
        eprintln!("SocketEntry {}", size_of::<super::SocketEntry>());
        eprintln!("FourTuple {}", size_of::<super::FourTuple>());
        eprintln!("SendBuffer {}", size_of::<crate::tcp::buffer::SendBuffer>());
        eprintln!("RecvBuffer {}", size_of::<crate::tcp::buffer::RecvBuffer>());
        eprintln!("SocketOptions {}", size_of::<crate::SocketOptions>());
        eprintln!("Span {}", size_of::<tracing::Span>());
    }
}

#[cfg(test)]
mod memory_tests {
    use super::{ConnEntry, SocketEntry};
    use std::mem::size_of;

    /// An idle connection's whole stack state is one boxed [`ConnEntry`]
    /// (its buffers grow on demand), a [`SocketEntry`] in the handle map
    /// and a few map slots: with 100,000 idle connections (issue 12: the
    /// daemon within 256 MiB), every 100 bytes here is 10 MB of RSS. The
    /// rare parts (undo state, a listener's queues, an unconnected
    /// socket's options, a debug span) are boxed, the rarely used queues
    /// (ACK points, MSG_EOR marks) are one pointer until used, the
    /// configuration is shared, and the counters are only those a
    /// connection must keep. 1 400 bytes at round 6 (the queues saved 48);
    /// 1 072 at round 7: the in-flight records, RACK, TLP and PRR are one
    /// pointer until the first data goes out (`Flight`, -200), the RTT
    /// estimator and the option times are 32-bit (-24, -64), the emitted
    /// segment's offload note is compact (-20), trace notes one pointer
    /// (-16); then 1 144 with the congestion controller inline (+72 here,
    /// but its own 96-byte heap chunk and a malloc per connection gone).
    /// The bound is exact, so growth is a decision.
    #[test]
    fn an_idle_connections_entries_stay_within_budget() {
        let conn = size_of::<ConnEntry>();
        let socket = size_of::<SocketEntry>();
        assert!(conn <= 896, "ConnEntry is {conn} bytes");
        assert!(socket <= 40, "SocketEntry is {socket} bytes");
    }
}
