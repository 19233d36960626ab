//! The trace event model: one [`Event`] per thing that happened to a traced
//! connection, in the form `tcpctl trace --json` prints and `--replay`
//! reads (one JSON object per line), converted from the stack's
//! [`tcpd_stack::TraceRecord`] in the daemon and from/to the protobuf
//! `TraceEvent` at the API boundary ([`crate::proto`]).
//!
//! JSON schema (every event): `t_us` (µs on the daemon's monotonic clock),
//! `local` and `remote` ("ip:port", tcpd's side first), `type`, and per type:
//! - `start`: `state` (RFC 9293 name), `iss`, `irs` (null before the peer's SYN);
//! - `segment`: `dir` ("in": peer → tcpd, "out": tcpd → peer), `seq`, `ack`
//!   (null without ACK), `flags` ("SYN,ACK"), `win` (unscaled field), `len`
//!   (payload bytes), `mss`, `ws`, `sack_ok`, `sack` ([[left,right],...]),
//!   `ts` ([val,ecr] or null), `rtx` (a retransmission by tcpd);
//! - `state`: `old`, `new`;
//! - `note`: `note` ("rto", "tlp", "persist", "keepalive", "recovery_enter",
//!   "recovery_exit", "drop", "challenge_ack"), `reason` (for "drop"),
//!   `backoff` (for "rto");
//! - `link` (what `--impair` did): `segment` (as above, without `type`),
//!   `dropped`, `duplicated`, `corrupted`, `reordered`, `delay_us`;
//! - `lost`: `count` events dropped because the reader was slow.
//!
//! Sequence numbers are absolute here; the renderer makes them relative.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tcpd_stack::trace::{Direction, Note, SegmentHeader};
use tcpd_stack::wire::TcpFlags;
use tcpd_stack::{TcpState, TraceEvent, TraceRecord};

/// One trace event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds on the daemon's (or the simulation's) monotonic clock.
    pub t_us: u64,
    /// tcpd's end of the connection.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    #[serde(flatten)]
    pub kind: Kind,
}

/// Which way a segment went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// From the peer to tcpd.
    In,
    /// From tcpd to the peer.
    Out,
}

/// A segment's header as traced.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Segment {
    pub dir: Dir,
    pub seq: u32,
    /// `None` when the ACK bit is clear.
    pub ack: Option<u32>,
    /// Control bits, e.g. "SYN,ACK" (see [`flags_text`]).
    pub flags: String,
    /// The window field, unscaled.
    pub win: u16,
    /// Payload bytes.
    pub len: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<u8>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sack_ok: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sack: Vec<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<[u32; 2]>,
    /// tcpd resent sequence space it had sent before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rtx: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Start {
        state: String,
        iss: u32,
        irs: Option<u32>,
    },
    Segment(Segment),
    State {
        old: String,
        new: String,
    },
    Note {
        note: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backoff: Option<u32>,
    },
    Link {
        segment: Segment,
        #[serde(default)]
        dropped: bool,
        #[serde(default)]
        duplicated: bool,
        #[serde(default)]
        corrupted: bool,
        #[serde(default)]
        reordered: bool,
        #[serde(default)]
        delay_us: u64,
    },
    Lost {
        count: u64,
    },
}

/// "SYN,ACK" for the bits set in `flags` ("" for none): the flags' own
/// names, in the order `TcpFlags` declares them (the seed's order).
pub fn flags_text(flags: TcpFlags) -> String {
    flags
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The bits named in `text` (names as [`flags_text`] writes them, any case;
/// unknown names are ignored).
pub fn parse_flags(text: &str) -> TcpFlags {
    text.split(',')
        .filter_map(|name| TcpFlags::from_name(&name.trim().to_ascii_uppercase()))
        .fold(TcpFlags::empty(), |flags, bit| flags | bit)
}

impl Segment {
    /// The control bits.
    pub fn tcp_flags(&self) -> TcpFlags {
        parse_flags(&self.flags)
    }

    /// Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let flags = self.tcp_flags();
        self.len + u32::from(flags.syn()) + u32::from(flags.fin())
    }

    /// From a stack header.
    pub fn from_header(dir: Dir, header: &SegmentHeader, rtx: bool) -> Segment {
        let options = &header.options;
        Segment {
            dir,
            seq: header.seq.0,
            ack: header.flags.ack().then_some(header.ack.0),
            flags: flags_text(header.flags),
            win: header.window,
            len: header.len,
            mss: options.mss,
            ws: options.window_scale,
            sack_ok: options.sack_permitted,
            sack: options.sacks().map(|b| [b.left.0, b.right.0]).collect(),
            ts: options.timestamp.map(|(val, ecr)| [val, ecr]),
            rtx,
        }
    }
}

impl From<Direction> for Dir {
    fn from(direction: Direction) -> Dir {
        match direction {
            Direction::In => Dir::In,
            Direction::Out => Dir::Out,
        }
    }
}

impl Event {
    /// The event for one stack trace record.
    pub fn from_record(record: &TraceRecord) -> Event {
        let kind = match record.event {
            TraceEvent::Start { state, iss, irs } => Kind::Start {
                state: state.name().to_string(),
                iss: iss.0,
                irs: irs.map(|s| s.0),
            },
            TraceEvent::Segment {
                direction,
                header,
                retransmission,
            } => Kind::Segment(Segment::from_header(
                direction.into(),
                &header,
                retransmission,
            )),
            TraceEvent::State { old, new } => Kind::State {
                old: old.name().to_string(),
                new: new.name().to_string(),
            },
            TraceEvent::Note(note) => note_kind(note),
        };
        Event {
            t_us: record.time.total_micros(),
            local: record.local,
            remote: record.remote,
            kind,
        }
    }

    /// One JSON object (no newline).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn note_kind(note: Note) -> Kind {
    let (reason, backoff) = match note {
        Note::Dropped(cause) => (Some(cause.name().to_string()), None),
        Note::RtoFired { backoff } => (None, Some(backoff)),
        _ => (None, None),
    };
    Kind::Note {
        note: note.name().to_string(),
        reason,
        backoff,
    }
}

/// A state by its RFC 9293 name (any case, `_` for `-`).
pub fn state_from_name(name: &str) -> Option<TcpState> {
    TcpState::from_name(name)
}
