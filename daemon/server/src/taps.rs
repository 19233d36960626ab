//! What the link tells the rest of the daemon about each packet: the
//! impairer's verdicts (counted, and reported to traces of the packet's
//! connection) and the four capture points (stack in/out, link in/out).
//! The driver's `Core` owns the [`Taps`]; the link borrows them per call.

use crate::capture_hub::CaptureHub;
use crate::impair::{Direction, Impairment};
use crate::trace_hub::TraceHub;
use tcpd_stack::{Instant, Stack};
use tcpd_trace::capture::CapturePoint;

/// Counters of the impairer's work, per direction (index: `Direction as usize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairCounters {
    pub dropped: [u64; 2],
    pub duplicated: [u64; 2],
    pub corrupted: [u64; 2],
    pub reordered: [u64; 2],
    pub delayed: [u64; 2],
}

impl ImpairCounters {
    fn record(&mut self, direction: Direction, done: Impairment) {
        let i = direction as usize;
        self.dropped[i] += u64::from(done.dropped);
        self.duplicated[i] += u64::from(done.duplicated);
        self.corrupted[i] += u64::from(done.corrupted);
        self.reordered[i] += u64::from(done.reordered);
        self.delayed[i] += u64::from(!done.delay.is_zero());
    }

    /// Named counters for the Admin Stats reply (`impair_dropped_in`...).
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        for (name, values) in [
            ("dropped", self.dropped),
            ("duplicated", self.duplicated),
            ("corrupted", self.corrupted),
            ("reordered", self.reordered),
            ("delayed", self.delayed),
        ] {
            v.push((
                format!("impair_{name}_in"),
                values[Direction::Inbound as usize],
            ));
            v.push((
                format!("impair_{name}_out"),
                values[Direction::Outbound as usize],
            ));
        }
        v
    }
}

/// The link's observers.
#[derive(Debug)]
pub struct Taps {
    pub traces: TraceHub,
    pub captures: CaptureHub,
    pub impaired: ImpairCounters,
}

impl Taps {
    pub fn new(now: Instant) -> Taps {
        Taps {
            traces: TraceHub::default(),
            captures: CaptureHub::new(now),
            impaired: ImpairCounters::default(),
        }
    }

    /// What the impairer did to `packet` (before any copy was delivered).
    pub fn impaired(
        &mut self,
        stack: &Stack,
        now: Instant,
        direction: Direction,
        packet: &[u8],
        done: Impairment,
    ) {
        self.impaired.record(direction, done);
        self.traces.link_event(stack, now, direction, packet, done);
    }

    /// A packet read from the TUN (before the impairer).
    pub fn link_in(&mut self, now: Instant, packet: &[u8]) {
        self.captures.packet(CapturePoint::Link, true, now, packet);
    }

    /// A packet written to the TUN (after the impairer).
    pub fn link_out(&mut self, now: Instant, packet: &[u8]) {
        self.captures.packet(CapturePoint::Link, false, now, packet);
    }

    /// A packet handed to the stack (after the impairer).
    pub fn stack_in(&mut self, now: Instant, packet: &[u8]) {
        self.captures.packet(CapturePoint::Stack, true, now, packet);
    }

    /// A packet the stack emitted (before the impairer).
    pub fn stack_out(&mut self, now: Instant, packet: &[u8]) {
        self.captures
            .packet(CapturePoint::Stack, false, now, packet);
    }
}
