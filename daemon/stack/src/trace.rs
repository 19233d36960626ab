//! Trace events: a sans-IO record of what happens to selected connections,
//! for `tcpctl trace` (the seed's ladder diagram, live) and for logs.
//!
//! The owner of the stack registers [`TraceFilter`]s with
//! [`crate::Stack::trace_add`]; each filter has a bit in a 64-bit mask. A
//! connection carries the mask of the filters that follow it (set when it
//! is created, or when a filter naming it is added), and only connections
//! with a non-zero mask produce [`TraceRecord`]s: with no filter the cost is
//! one integer test per segment. Records wait in a bounded queue drained
//! with [`crate::Stack::poll_trace`]; when the owner does not drain it, the
//! oldest records are dropped and counted ([`crate::Stack::trace_dropped`]).
//!
//! What is recorded, per traced connection: every segment in and out (the
//! parsed header: SEQ, ACK, CTL, window, payload length, options; outgoing
//! retransmissions marked), every state transition, and the connection's
//! [`Note`]s: timer fires (RTO, TLP, persist, keepalive), loss recovery entry
//! and exit, and why an arriving segment was dropped (out of window, PAWS,
//! bad checksum, unacceptable ACK...) or answered with a challenge ACK.
//!
//! The same notes are `tracing` events at debug level inside the
//! connection's span (see [`emit_log`]), so the daemon's log can tell the
//! story without a trace subscriber; disabled, they cost a relaxed load.

use crate::seq::SeqNum;
use crate::tcp::TcpState;
use crate::time::Instant;
use crate::wire::{TcpFlags, TcpOptions, TcpRepr};
use core::net::SocketAddr;

/// Most records kept undrained; older ones are dropped first.
pub const TRACE_QUEUE_LIMIT: usize = 65536;
/// Filters that can be active at once (one bit each in a connection's mask).
pub const MAX_TRACE_FILTERS: usize = 64;

/// Which way a segment crossed the stack's boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the link (the peer) to the stack.
    In,
    /// From the stack to the link.
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A TCP header as the trace shows it (no payload bytes, only its length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    pub seq: SeqNum,
    /// Meaningful only when `flags` has ACK.
    pub ack: SeqNum,
    pub flags: TcpFlags,
    /// The window field as on the wire (unscaled).
    pub window: u16,
    /// Payload bytes.
    pub len: u32,
    pub options: TcpOptions,
}

impl SegmentHeader {
    pub fn of(segment: &TcpRepr<'_>) -> SegmentHeader {
        SegmentHeader {
            seq: segment.seq,
            ack: segment.ack,
            flags: segment.flags,
            window: segment.window,
            len: u32::try_from(segment.payload.len()).unwrap_or(u32::MAX),
            options: segment.options,
        }
    }
}

/// Why an arriving segment was dropped or answered without being used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Sequence number outside the receive window (RFC 9293 §3.10.7.4, first check).
    OutOfWindow,
    /// TSval older than TS.Recent (RFC 7323 §5.3 R1).
    Paws,
    /// The TCP checksum did not verify (RFC 9293 §3.1).
    BadChecksum,
    /// An ACK of something not yet sent, or too old (RFC 9293 §3.10.7.4
    /// fifth check, RFC 5961 §5.2), or a bad ACK in SYN-SENT/SYN-RECEIVED.
    BadAck,
    /// No ACK bit on a segment of a synchronized connection.
    NoAck,
    /// A RST that did not match exactly (RFC 5961 §3.2); answered by a challenge ACK when in window.
    BadRst,
    /// A SYN on a synchronized connection (RFC 5961 §4.2), answered by a challenge ACK.
    SynInWindow,
    /// Anything reaching a CLOSED connection (RFC 9293 §3.10.7.1).
    Closed,
    /// Anything else the state machine discards (e.g. no SYN in SYN-SENT).
    Unacceptable,
}

impl DropCause {
    pub fn name(self) -> &'static str {
        match self {
            DropCause::OutOfWindow => "out_of_window",
            DropCause::Paws => "paws",
            DropCause::BadChecksum => "bad_checksum",
            DropCause::BadAck => "bad_ack",
            DropCause::NoAck => "no_ack",
            DropCause::BadRst => "bad_rst",
            DropCause::SynInWindow => "syn_in_window",
            DropCause::Closed => "closed",
            DropCause::Unacceptable => "unacceptable",
        }
    }
}

/// Something a connection decided that its segments alone do not show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// The retransmission timer fired (RFC 6298 §5.4); `backoff` counts the
    /// timeouts of this series so far.
    RtoFired { backoff: u32 },
    /// A tail loss probe fired (RFC 8985 §7.3).
    TlpFired,
    /// The persist timer fired (RFC 9293 §3.8.6.1).
    PersistFired,
    /// A keepalive probe is due (RFC 1122 §4.2.3.6).
    KeepaliveFired,
    /// Fast retransmit and fast recovery started (RFC 5681 §3.2, RFC 6675 §5).
    RecoveryEnter,
    /// Fast recovery ended with a full ACK (RFC 6582 §3.2 step 3).
    RecoveryExit,
    /// A window reduction proved spurious and was undone (RFC 3522, RFC 3708).
    Undo,
    /// The segment just received was not used.
    Dropped(DropCause),
    /// A challenge ACK is sent (RFC 5961 §3.2, §4.2).
    ChallengeAck,
}

impl Note {
    pub fn name(self) -> &'static str {
        match self {
            Note::RtoFired { .. } => "rto",
            Note::TlpFired => "tlp",
            Note::PersistFired => "persist",
            Note::KeepaliveFired => "keepalive",
            Note::RecoveryEnter => "recovery_enter",
            Note::RecoveryExit => "recovery_exit",
            Note::Undo => "undo",
            Note::Dropped(_) => "drop",
            Note::ChallengeAck => "challenge_ack",
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// Tracing of this connection begins (first record per filter and
    /// connection when the connection already existed): its state and
    /// initial sequence numbers, so SEQ/ACK can be shown relative to them.
    Start {
        state: TcpState,
        iss: SeqNum,
        /// `None` before the peer's SYN was seen.
        irs: Option<SeqNum>,
    },
    Segment {
        direction: Direction,
        header: SegmentHeader,
        /// An outgoing segment that resends sequence space already sent.
        retransmission: bool,
    },
    State {
        old: TcpState,
        new: TcpState,
    },
    Note(Note),
}

/// One trace record: when, which connection, what, and for which filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    pub time: Instant,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Bit `i` set: filter `i` follows this connection.
    pub mask: u64,
    pub event: TraceEvent,
}

/// Which connections a trace follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceFilter {
    /// Local endpoint; an unspecified address (0.0.0.0 or `::`) and port 0
    /// are wildcards. IPv4-mapped addresses match IPv4 connections.
    pub local: SocketAddr,
    /// Remote endpoint; wildcards as for `local`.
    pub remote: SocketAddr,
    /// If set, the local or the remote port must be this.
    pub port: Option<u16>,
    /// Skip existing connections: follow the next one created that matches.
    /// Otherwise the oldest existing match is followed, or, if there is
    /// none, the next one created. A filter follows one connection.
    pub next_only: bool,
}

impl TraceFilter {
    /// Every connection.
    pub const ANY: TraceFilter = TraceFilter {
        local: SocketAddr::V4(core::net::SocketAddrV4::new(
            core::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        remote: SocketAddr::V4(core::net::SocketAddrV4::new(
            core::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        port: None,
        next_only: false,
    };

    pub fn matches(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        endpoint_matches(self.local, local)
            && endpoint_matches(self.remote, remote)
            && self
                .port
                .is_none_or(|p| p == local.port() || p == remote.port())
    }
}

/// Whether `actual` matches `pattern`, where an unspecified address of
/// either family and port 0 are wildcards; addresses compare in canonical
/// form (an IPv4-mapped IPv6 address is its IPv4 address, RFC 4291 §2.5.5.2).
pub(crate) fn endpoint_matches(pattern: SocketAddr, actual: SocketAddr) -> bool {
    let ip = pattern.ip().to_canonical();
    (ip.is_unspecified() || ip == actual.ip().to_canonical())
        && (pattern.port() == 0 || pattern.port() == actual.port())
}

/// A registered filter and its state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FilterSlot {
    pub filter: TraceFilter,
    /// The filter found its connection and takes no other.
    pub latched: bool,
}

/// The stack's trace state: filters and the record queue.
#[derive(Debug)]
pub(crate) struct Tracer {
    pub slots: [Option<FilterSlot>; MAX_TRACE_FILTERS],
    /// Bits of the slots in use (0: tracing is off).
    pub active: u64,
    pub queue: std::collections::VecDeque<TraceRecord>,
    pub dropped: u64,
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer {
            slots: [None; MAX_TRACE_FILTERS],
            active: 0,
            queue: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }
}

impl Tracer {
    /// The mask of filters that take a new connection, latching `next_only` ones.
    pub fn mask_for_new(&mut self, local: SocketAddr, remote: SocketAddr) -> u64 {
        let mut mask = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot
                && !slot.latched
                && slot.filter.matches(local, remote)
            {
                slot.latched = true;
                mask |= 1 << i;
            }
        }
        mask
    }

    pub fn push(&mut self, record: TraceRecord) {
        if self.queue.len() >= TRACE_QUEUE_LIMIT {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(record);
    }
}

/// Logs a connection's note as a `tracing` event (the caller is inside
/// the connection's span, which carries the 4-tuple).
pub(crate) fn emit_log(note: Note) {
    match note {
        Note::RtoFired { backoff } => {
            tracing::debug!(backoff, "retransmission timeout: go back to SND.UNA")
        }
        Note::TlpFired => tracing::debug!("tail loss probe"),
        Note::PersistFired => tracing::trace!("persist timer fired"),
        Note::KeepaliveFired => tracing::trace!("keepalive probe due"),
        Note::RecoveryEnter => tracing::debug!("fast retransmit: entering loss recovery"),
        Note::RecoveryExit => tracing::debug!("full ACK: leaving loss recovery"),
        Note::Undo => tracing::debug!("spurious retransmission: window reduction undone"),
        Note::Dropped(cause) => tracing::debug!(reason = cause.name(), "segment dropped"),
        Note::ChallengeAck => tracing::debug!("challenge ACK (RFC 5961)"),
    }
}
