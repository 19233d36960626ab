//! The daemon's side of `tcpctl trace`: the Admin Trace subscribers, fed
//! from the stack's trace records and from what the link impairer did.
//!
//! Each subscriber owns one stack trace filter (its slot) and a bounded
//! channel to its RPC stream. The driver pumps records after every packet
//! it sends (so the link's verdict on a packet follows the stack's record of
//! it) and at the end of each turn. Invariants: the driver never waits on a
//! subscriber — a full channel drops the event and counts it, and the count
//! reaches the client as a `lost` event once there is room; a subscriber
//! whose client went away, or whose connection ended, is removed and its
//! filter released at the end of the turn.

use crate::impair::{Direction, Impairment};
use std::collections::HashMap;
use std::net::SocketAddr;
use tcpd_proto::v2;
use tcpd_stack::wire::{IpPacketParts, IpProtocol, TcpRepr};
use tcpd_stack::{Instant, Stack, TcpState, TraceEvent};
use tcpd_trace::event::{Dir, Event, Kind, Segment};
use tcpd_trace::proto as trace_proto;
use tokio::sync::mpsc;

/// Events buffered per subscriber before new ones are dropped (and counted).
pub const TRACE_CHANNEL: usize = 4096;

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<v2::TraceEvent>,
    /// Started by root (see [`TraceHub::unprivileged`]).
    root: bool,
    lost: u64,
    /// The followed connection reached CLOSED: end the stream after this turn.
    done: bool,
}

/// Trace subscribers by stack filter slot.
#[derive(Debug, Default)]
pub struct TraceHub {
    subscribers: HashMap<u32, Subscriber>,
}

impl TraceHub {
    pub fn add(&mut self, slot: u32, tx: mpsc::Sender<v2::TraceEvent>, root: bool) {
        self.subscribers.insert(
            slot,
            Subscriber {
                tx,
                root,
                lost: 0,
                done: false,
            },
        );
    }

    /// Traces started by callers other than root.
    pub fn unprivileged(&self) -> usize {
        self.subscribers.values().filter(|s| !s.root).count()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    fn dispatch(&mut self, mask: u64, event: &Event) {
        let proto = trace_proto::to_proto(event);
        let ends = matches!(&event.kind, Kind::State { new, .. } if new == TcpState::Closed.name());
        for (slot, sub) in self.subscribers.iter_mut() {
            if mask & (1u64 << slot) == 0 {
                continue;
            }
            if ends {
                sub.done = true;
            }
            if sub.lost > 0 {
                let lost = trace_proto::to_proto(&Event {
                    kind: Kind::Lost { count: sub.lost },
                    ..event.clone()
                });
                if sub.tx.try_send(lost).is_err() {
                    sub.lost += 1;
                    continue;
                }
                sub.lost = 0;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(proto.clone()) {
                sub.lost += 1;
            }
        }
    }

    /// Moves the stack's pending trace records to the subscribers.
    pub fn pump(&mut self, stack: &mut Stack) {
        while let Some(record) = stack.poll_trace() {
            if self.subscribers.is_empty() {
                continue;
            }
            let event = Event::from_record(&record);
            self.dispatch(record.mask, &event);
            if matches!(
                record.event,
                TraceEvent::State {
                    new: TcpState::Closed,
                    ..
                }
            ) {
                tracing::debug!(local = %record.local, remote = %record.remote, "traced connection closed");
            }
        }
    }

    /// Reports what the impairer did to `packet` if its connection is traced.
    pub fn link_event(
        &mut self,
        stack: &Stack,
        now: Instant,
        direction: Direction,
        packet: &[u8],
        impairment: Impairment,
    ) {
        if self.subscribers.is_empty() || impairment.is_clean() || !stack.tracing_active() {
            return;
        }
        let Ok(ip) = IpPacketParts::parse(packet) else {
            return;
        };
        if ip.protocol != IpProtocol::Tcp {
            return;
        }
        let Ok(tcp) = TcpRepr::parse(ip.payload, ip.src, ip.dst) else {
            return;
        };
        let (dir, local, remote) = match direction {
            Direction::Inbound => (
                Dir::In,
                SocketAddr::new(ip.dst, tcp.dst_port),
                SocketAddr::new(ip.src, tcp.src_port),
            ),
            Direction::Outbound => (
                Dir::Out,
                SocketAddr::new(ip.src, tcp.src_port),
                SocketAddr::new(ip.dst, tcp.dst_port),
            ),
        };
        let mask = stack.trace_mask(local, remote);
        if mask == 0 {
            return;
        }
        let header = tcpd_stack::trace::SegmentHeader::of(&tcp);
        let event = Event {
            t_us: now.total_micros(),
            local,
            remote,
            kind: Kind::Link {
                segment: Segment::from_header(dir, &header, false),
                dropped: impairment.dropped,
                duplicated: impairment.duplicated,
                corrupted: impairment.corrupted,
                reordered: impairment.reordered,
                delay_us: u64::try_from(impairment.delay.as_micros()).unwrap_or(u64::MAX),
            },
        };
        self.dispatch(mask, &event);
    }

    /// Ends the streams whose connection closed or whose client left;
    /// releases their stack filters.
    pub fn sweep(&mut self, stack: &mut Stack) {
        if self.subscribers.is_empty() {
            return;
        }
        let gone: Vec<u32> = self
            .subscribers
            .iter()
            .filter(|(_, sub)| sub.done || sub.tx.is_closed())
            .map(|(slot, _)| *slot)
            .collect();
        for slot in gone {
            self.subscribers.remove(&slot);
            stack.trace_remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn note(t_us: u64) -> Event {
        Event {
            t_us,
            local: SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 1000)),
            remote: SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 80)),
            kind: Kind::Note {
                note: "rto".into(),
                reason: None,
                backoff: Some(1),
            },
        }
    }

    #[test]
    fn a_slow_reader_loses_events_counted_and_never_blocks() {
        let mut hub = TraceHub::default();
        let (tx, mut rx) = mpsc::channel(2);
        hub.add(3, tx, true);
        for t in 0..5 {
            hub.dispatch(1 << 3, &note(t));
        }
        // Events of other filters do not reach it.
        hub.dispatch(1 << 4, &note(99));
        let first = rx.try_recv().expect("first event");
        assert_eq!(first.time_us, 0);
        assert_eq!(rx.try_recv().expect("second event").time_us, 1);
        assert!(rx.try_recv().is_err(), "the other three were dropped");
        // Room again: the count comes first, then the event.
        hub.dispatch(1 << 3, &note(5));
        let lost = trace_proto::from_proto(&rx.try_recv().expect("lost")).expect("event");
        assert_eq!(lost.kind, Kind::Lost { count: 3 });
        assert_eq!(rx.try_recv().expect("event").time_us, 5);
    }

    #[test]
    fn closed_connections_and_departed_clients_are_swept() {
        let config = tcpd_stack::StackConfig::new(Ipv4Addr::new(10, 0, 0, 1), 24);
        let mut stack = Stack::new(config, Instant::ZERO);
        let slot = stack
            .trace_add(tcpd_stack::TraceFilter::ANY)
            .expect("a slot");
        let mut hub = TraceHub::default();
        let (tx, rx) = mpsc::channel(8);
        hub.add(slot, tx, true);
        drop(rx);
        hub.sweep(&mut stack);
        assert!(hub.is_empty());
        assert!(!stack.tracing_active(), "the filter is released");
    }
}
