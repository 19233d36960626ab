//! [`Event`] to and from the protobuf `tcpd.v2.TraceEvent` (the Admin API's
//! Trace stream). The two carry the same fields; states travel as the
//! protobuf enum and come back as RFC 9293 names.

use crate::event::{Dir, Event, Kind, Segment, flags_text};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tcpd_proto::v2 as v1;
use tcpd_proto::v2::trace_event::Event as ProtoKind;
use tcpd_stack::TcpState;
use tcpd_stack::wire::TcpFlags;

fn addr(a: SocketAddr) -> v1::SocketAddress {
    a.into()
}

fn from_addr(a: Option<&v1::SocketAddress>) -> SocketAddr {
    match a.map(v1::SocketAddress::to_std) {
        Some(Ok(a)) => a,
        _ => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    }
}

/// The protobuf enum value of a state given by its RFC name.
pub fn state_to_proto(name: &str) -> v1::TcpState {
    TcpState::from_name(name).map_or(v1::TcpState::Unspecified, v1::TcpState::from)
}

/// The RFC name of a protobuf state value ("UNKNOWN" for values we do not know).
pub fn state_from_proto(raw: i32) -> String {
    tcpd_proto::vocab::tcp_state(raw)
        .map_or_else(|_| "UNKNOWN".to_string(), |s| s.name().to_string())
}

/// A segment in its protobuf form.
pub fn segment_to_proto(seg: &Segment) -> v1::TraceSegment {
    v1::TraceSegment {
        direction: match seg.dir {
            Dir::In => v1::TraceDirection::In,
            Dir::Out => v1::TraceDirection::Out,
        } as i32,
        seq: seg.seq,
        ack: seg.ack.unwrap_or(0),
        flags: u32::from(seg.tcp_flags().bits()),
        window: u32::from(seg.win),
        len: seg.len,
        mss: seg.mss.map_or(0, u32::from),
        window_scale: seg.ws.map_or(-1, i32::from),
        sack_permitted: seg.sack_ok,
        sack: seg
            .sack
            .iter()
            .map(|[left, right]| v1::SackBlock {
                left: *left,
                right: *right,
            })
            .collect(),
        has_timestamp: seg.ts.is_some(),
        ts_val: seg.ts.map_or(0, |t| t[0]),
        ts_ecr: seg.ts.map_or(0, |t| t[1]),
        retransmission: seg.rtx,
    }
}

/// A segment from its protobuf form.
pub fn segment_from_proto(seg: &v1::TraceSegment) -> Segment {
    let flags = TcpFlags::from_bits_retain(u8::try_from(seg.flags & 0xff).unwrap_or(0));
    Segment {
        dir: if seg.direction == v1::TraceDirection::In as i32 {
            Dir::In
        } else {
            Dir::Out
        },
        seq: seg.seq,
        ack: flags.ack().then_some(seg.ack),
        flags: flags_text(flags),
        win: u16::try_from(seg.window).unwrap_or(u16::MAX),
        len: seg.len,
        mss: u16::try_from(seg.mss).ok().filter(|m| *m != 0),
        ws: u8::try_from(seg.window_scale).ok(),
        sack_ok: seg.sack_permitted,
        sack: seg.sack.iter().map(|b| [b.left, b.right]).collect(),
        ts: seg.has_timestamp.then_some([seg.ts_val, seg.ts_ecr]),
        rtx: seg.retransmission,
    }
}

/// An event in its protobuf form.
pub fn to_proto(event: &Event) -> v1::TraceEvent {
    let kind = match &event.kind {
        Kind::Start { state, iss, irs } => ProtoKind::Start(v1::TraceStart {
            state: state_to_proto(state) as i32,
            iss: *iss,
            has_irs: irs.is_some(),
            irs: irs.unwrap_or(0),
        }),
        Kind::Segment(seg) => ProtoKind::Segment(segment_to_proto(seg)),
        Kind::State { old, new } => ProtoKind::State(v1::TraceStateChange {
            old_state: state_to_proto(old) as i32,
            new_state: state_to_proto(new) as i32,
        }),
        Kind::Note {
            note,
            reason,
            backoff,
        } => ProtoKind::Note(v1::TraceNote {
            kind: note.clone(),
            reason: reason.clone().unwrap_or_default(),
            backoff: backoff.unwrap_or(0),
        }),
        Kind::Link {
            segment,
            dropped,
            duplicated,
            corrupted,
            reordered,
            delay_us,
        } => ProtoKind::Link(v1::TraceLink {
            segment: Some(segment_to_proto(segment)),
            dropped: *dropped,
            duplicated: *duplicated,
            corrupted: *corrupted,
            reordered: *reordered,
            delay_us: *delay_us,
        }),
        Kind::Lost { count } => ProtoKind::Lost(v1::TraceLost { count: *count }),
    };
    v1::TraceEvent {
        time_us: event.t_us,
        local: Some(addr(event.local)),
        remote: Some(addr(event.remote)),
        event: Some(kind),
    }
}

/// An event from its protobuf form; `None` for an event kind this version does not know.
pub fn from_proto(event: &v1::TraceEvent) -> Option<Event> {
    let kind = match event.event.as_ref()? {
        ProtoKind::Start(s) => Kind::Start {
            state: state_from_proto(s.state),
            iss: s.iss,
            irs: s.has_irs.then_some(s.irs),
        },
        ProtoKind::Segment(seg) => Kind::Segment(segment_from_proto(seg)),
        ProtoKind::State(s) => Kind::State {
            old: state_from_proto(s.old_state),
            new: state_from_proto(s.new_state),
        },
        ProtoKind::Note(n) => Kind::Note {
            note: n.kind.clone(),
            reason: (!n.reason.is_empty()).then(|| n.reason.clone()),
            backoff: (n.kind == "rto").then_some(n.backoff),
        },
        ProtoKind::Link(l) => Kind::Link {
            segment: segment_from_proto(l.segment.as_ref()?),
            dropped: l.dropped,
            duplicated: l.duplicated,
            corrupted: l.corrupted,
            reordered: l.reordered,
            delay_us: l.delay_us,
        },
        ProtoKind::Lost(l) => Kind::Lost { count: l.count },
    };
    Some(Event {
        t_us: event.time_us,
        local: from_addr(event.local.as_ref()),
        remote: from_addr(event.remote.as_ref()),
        kind,
    })
}
