//! Deterministic two-endpoint simulation for `tcpd-stack` tests and benches.
//!
//! Two [`Stack`]s with different addresses exchange IPv4 packets over a
//! simulated [`Link`] whose impairments (loss, reordering, duplication,
//! single-bit corruption, delay with jitter) come from a seeded `SmallRng`,
//! so a failing seed replays exactly. Time is virtual: [`Sim::step`] does
//! everything due at `now`, and only when nothing is due advances the clock to
//! the next event (the earliest link delivery or either stack's
//! `poll_timeout`). Runs are bounded in steps and virtual time and panic with
//! the reason when the bound is hit, so a livelock fails instead of hanging.
//!
//! Also here: raw-packet helpers for tests that talk to one stack directly
//! (build a TCP segment or ICMP message, parse what the stack sent).

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use tcpd_stack::seq::SeqNum;
use tcpd_stack::wire::{Icmpv4Repr, IpProtocol, Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
use tcpd_stack::{Duration, Instant, Stack, StackConfig, StackEvent};

/// Address of side A in the simulation (the client, by convention).
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Address of side B in the simulation (the server, by convention).
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// IPv6 address of side A (each side also has one, `fd00::` plus the last
/// octet of its IPv4 address, prefix /64).
pub const ADDR6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// IPv6 address of side B.
pub const ADDR6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The link MTU used by the simulation.
pub const MTU: u16 = 1500;

/// A stack configuration for tests: deterministic secrets and seed.
pub fn test_config(address: Ipv4Addr, seed: u64) -> StackConfig {
    let mut config = StackConfig::new(address, 24);
    let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(address.octets()[3]));
    config.addresses6 = vec![tcpd_stack::Ipv6Net::new(v6, 64).expect("prefix length")];
    config.mtu = MTU;
    config.rng_seed = seed;
    config.isn_secret = seed.to_le_bytes().repeat(2).try_into().unwrap_or([7; 16]);
    config
}

/// Impairments of the simulated link (each direction independently).
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// One-way base delay.
    pub delay: Duration,
    /// Extra uniformly random delay in `[0, jitter]` (reorders packets closer than it).
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back by an extra `reorder_delay` (so later ones overtake it).
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Probability one random bit of the packet is flipped (checksums must catch it).
    pub corrupt: f64,
}

impl LinkConfig {
    /// A perfect link with a 1 ms one-way delay.
    pub fn perfect() -> Self {
        LinkConfig {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
        }
    }

    /// A 5 ms link with the given loss rate plus some reordering, duplication and corruption.
    pub fn lossy(loss: f64) -> Self {
        LinkConfig {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            loss,
            duplicate: 0.01,
            reorder: 0.02,
            reorder_delay: Duration::from_millis(8),
            corrupt: 0.01,
        }
    }
}

/// Which stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Counters of what the link did.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

/// A packet in flight: delivery time, send order, destination, bytes.
type InFlight = Reverse<(Instant, u64, Side, Vec<u8>)>;

/// Decides deterministic drops on top of the random ones: (sender, packet)
/// -> drop it?
pub type DropFilter = Box<dyn FnMut(Side, &[u8]) -> bool>;

/// Extra delay chosen by a test (a held segment, a delay spike) on top of
/// the configured one: (now, sender, packet) -> extra delay.
pub type DelayFilter = Box<dyn FnMut(Instant, Side, &[u8]) -> Duration>;

/// The simulated link: packets in flight ordered by delivery time, then by
/// the order they were sent (a total order, so runs are reproducible).
pub struct Link {
    pub config: LinkConfig,
    /// Drops chosen by a test (tail losses...), before the random impairments.
    pub drop_filter: Option<DropFilter>,
    /// Delays chosen by a test, added to every copy of a packet.
    pub delay_filter: Option<DelayFilter>,
    rng: SmallRng,
    in_flight: BinaryHeap<InFlight>,
    sequence: u64,
    pub stats: LinkStats,
}

impl core::fmt::Debug for Link {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("config", &self.config)
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Link {
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            drop_filter: None,
            delay_filter: None,
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_11c4),
            in_flight: BinaryHeap::new(),
            sequence: 0,
            stats: LinkStats::default(),
        }
    }

    /// A packet sent by `from` at `now`, subject to the impairments.
    pub fn send(&mut self, now: Instant, from: Side, packet: &[u8]) {
        self.stats.sent += 1;
        if let Some(filter) = &mut self.drop_filter
            && filter(from, packet)
        {
            self.stats.lost += 1;
            return;
        }
        if self.rng.random_bool(self.config.loss) {
            self.stats.lost += 1;
            return;
        }
        let held = match &mut self.delay_filter {
            Some(filter) => filter(now, from, packet),
            None => Duration::ZERO,
        };
        let copies = if self.rng.random_bool(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut bytes = packet.to_vec();
            if !bytes.is_empty() && self.rng.random_bool(self.config.corrupt) {
                let bit = self.rng.random_range(0..bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                self.stats.corrupted += 1;
            }
            let mut delay = self.config.delay + held;
            if !self.config.jitter.is_zero() {
                let jitter_us = self.config.jitter.as_micros() as u64;
                delay += Duration::from_micros(self.rng.random_range(0..=jitter_us));
            }
            if self.rng.random_bool(self.config.reorder) {
                self.stats.reordered += 1;
                delay += self.config.reorder_delay;
            }
            self.sequence += 1;
            self.in_flight
                .push(Reverse((now + delay, self.sequence, from.other(), bytes)));
        }
    }

    /// The next packet due at or before `now`, with the side it goes to.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Side, Vec<u8>)> {
        let Reverse((at, _, _, _)) = self.in_flight.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, to, bytes)) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        Some((to, bytes))
    }

    /// When the next packet arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((at, ..))| *at)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// Bounds on a run, so a bug shows as a panic with a reason, not a hang.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_steps: u64,
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 2_000_000,
            max_time: Duration::from_secs(3600),
        }
    }
}

/// Two stacks, a link, a virtual clock.
#[derive(Debug)]
pub struct Sim {
    pub a: Stack,
    pub b: Stack,
    pub link: Link,
    pub now: Instant,
    pub steps: u64,
    pub limits: Limits,
    /// Events drained from each stack, with the virtual time they were drained at.
    pub events_a: Vec<(Instant, StackEvent)>,
    pub events_b: Vec<(Instant, StackEvent)>,
    /// When set, every packet a stack sends is recorded here (before impairments).
    pub capture: Option<Vec<(Instant, Side, Vec<u8>)>>,
    start: Instant,
    buf: Vec<u8>,
}

impl Sim {
    /// Two stacks (A = 10.0.0.1, B = 10.0.0.2) with seeds derived from `seed`.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        Self::with_configs(
            test_config(ADDR_A, seed.wrapping_mul(2).wrapping_add(1)),
            test_config(ADDR_B, seed.wrapping_mul(2).wrapping_add(2)),
            link,
            seed,
        )
    }

    pub fn with_configs(a: StackConfig, b: StackConfig, link: LinkConfig, seed: u64) -> Self {
        let start = Instant::from_millis(1_000);
        let mtu = usize::from(a.mtu.max(b.mtu));
        Sim {
            a: Stack::new(a, start),
            b: Stack::new(b, start),
            link: Link::new(link, seed),
            now: start,
            steps: 0,
            limits: Limits::default(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            capture: None,
            start,
            buf: vec![0; mtu],
        }
    }

    pub fn stack(&mut self, side: Side) -> &mut Stack {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Does everything due at `now`: both stacks transmit, due packets are
    /// delivered, due timers run, events are drained. Only if none of that
    /// happened, advances the clock to the next event. Returns false when
    /// nothing is left to happen (idle).
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        assert!(
            self.steps <= self.limits.max_steps,
            "simulation exceeded {} steps at virtual time {:?} ({} packets in flight; \
             A timeout {:?}, B timeout {:?}): livelock?",
            self.limits.max_steps,
            self.elapsed(),
            self.link.in_flight(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        );
        assert!(
            self.elapsed() <= self.limits.max_time,
            "simulation exceeded {:?} of virtual time after {} steps\nA: {:#?}\nB: {:#?}",
            self.limits.max_time,
            self.steps,
            self.a.sockets(),
            self.b.sockets(),
        );
        let mut progressed = false;
        for side in [Side::A, Side::B] {
            while let Some(len) = {
                let now = self.now;
                let buf = &mut self.buf;
                match side {
                    Side::A => self.a.poll_transmit(now, buf),
                    Side::B => self.b.poll_transmit(now, buf),
                }
            } {
                progressed = true;
                let packet = &self.buf[..len];
                if let Some(capture) = &mut self.capture {
                    capture.push((self.now, side, packet.to_vec()));
                }
                self.link.send(self.now, side, packet);
            }
        }
        while let Some((to, packet)) = self.link.pop_due(self.now) {
            progressed = true;
            let now = self.now;
            self.stack(to).handle_packet(now, &packet);
        }
        for side in [Side::A, Side::B] {
            let now = self.now;
            let stack = self.stack(side);
            if stack.poll_timeout().is_some_and(|t| t <= now) {
                stack.handle_timeout(now);
                progressed = true;
            }
        }
        self.drain_events();
        if progressed {
            return true;
        }
        let next = [
            self.link.next_delivery(),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                self.now = self.now.max(at);
                true
            }
            None => false,
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.a.poll_event() {
            self.events_a.push((self.now, event));
        }
        while let Some(event) = self.b.poll_event() {
            self.events_b.push((self.now, event));
        }
    }

    /// Steps until `done` returns true (checked before every step); `done`
    /// may also act on the stacks (the applications). Panics with
    /// `what` if the simulation goes idle first or a limit is hit.
    pub fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Sim) -> bool) {
        /// Idle turns in a row the applications get to create work (a slow
        /// reader may need several to reopen a window) before it is a hang.
        const IDLE_TURNS: u32 = 10_000;
        let mut idle_turns = 0;
        loop {
            if done(self) {
                return;
            }
            if self.step() {
                idle_turns = 0;
            } else {
                idle_turns += 1;
                assert!(
                    idle_turns < IDLE_TURNS,
                    "simulation went idle at {:?} before: {what}\nA: {:#?}\nB: {:#?}",
                    self.elapsed(),
                    self.a.sockets(),
                    self.b.sockets(),
                );
            }
        }
    }

    /// Steps until nothing is left to do (no packets in flight, no timers).
    pub fn run_until_idle(&mut self) {
        while self.step() {}
    }

    /// Steps until B's `listener` has a connection, and accepts it.
    pub fn accept_on_b(&mut self, listener: tcpd_stack::SocketHandle) -> tcpd_stack::SocketHandle {
        let mut accepted = None;
        self.run_until("accept on B", |sim| {
            accepted = accepted.or_else(|| sim.b.accept(listener).ok().map(|(h, _)| h));
            accepted.is_some()
        });
        accepted.expect("accepted")
    }
}

// ---------------------------------------------------------------- raw packets

/// A TCP segment to build by hand.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub options: TcpOptions,
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    pub fn new(src: SocketAddrV4, dst: SocketAddrV4, flags: TcpFlags, seq: u32, ack: u32) -> Self {
        Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 65535,
            options: TcpOptions::default(),
            payload: &[],
        }
    }

    /// The whole IPv4 packet.
    pub fn to_packet(&self) -> Vec<u8> {
        let repr = TcpRepr {
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            seq: SeqNum(self.seq),
            ack: SeqNum(self.ack),
            flags: self.flags,
            window: self.window,
            urgent: 0,
            options: self.options,
            payload: self.payload,
        };
        let mut packet = vec![0; 20 + repr.buffer_len()];
        let len = repr.emit(&mut packet[20..], *self.src.ip(), *self.dst.ip());
        ip_header(
            *self.src.ip(),
            *self.dst.ip(),
            IpProtocol::Tcp,
            len,
            &mut packet,
        );
        packet
    }
}

/// Fills `packet[..20]` with an IPv4 header (DF, TTL 64, ident 1).
pub fn ip_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    packet: &mut [u8],
) {
    Ipv4Repr {
        src,
        dst,
        protocol,
        ttl: 64,
        dont_fragment: true,
        payload_len,
    }
    .emit(&mut packet[..20], 1);
}

/// An ICMP echo request as an IPv4 packet.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut packet = vec![0; 20 + repr.buffer_len()];
    let len = repr.emit(&mut packet[20..]);
    ip_header(src, dst, IpProtocol::Icmp, len, &mut packet);
    packet
}

/// A TCP segment the stack sent, decoded (owned payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentSegment {
    pub ip: Ipv4Repr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub options: TcpOptions,
    pub payload: Vec<u8>,
}

/// Parses a packet the stack sent as TCP, verifying both checksums.
pub fn parse_tcp(packet: &[u8]) -> SentSegment {
    let (ip, payload) = Ipv4Repr::parse(packet).expect("stack sent a valid IPv4 packet");
    assert_eq!(ip.protocol, IpProtocol::Tcp, "expected TCP");
    let seg = TcpRepr::parse(payload, ip.src, ip.dst).expect("stack sent a valid TCP segment");
    SentSegment {
        ip,
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        seq: seg.seq.0,
        ack: seg.ack.0,
        flags: seg.flags,
        window: seg.window,
        options: seg.options,
        payload: seg.payload.to_vec(),
    }
}

/// Every packet the stack has to send now.
pub fn drain_transmit(stack: &mut Stack, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0; usize::from(stack.config().mtu)];
    while let Some(len) = stack.poll_transmit(now, &mut buf) {
        out.push(buf[..len].to_vec());
        assert!(out.len() < 100_000, "poll_transmit never returns None");
    }
    out
}
