//! Tests of the connection state machine, segment by segment.
//!
//! The harness builds connections with exact ISNs, feeds them `TcpRepr`
//! segments, and parses what `poll_transmit` emits with `TcpRepr::parse`
//! (so checksums are verified too). `Net` wires two connections together
//! with a virtual clock and an optional filter that drops segments.
//!
//! Families: the endpoints `A` and `B` are written as IPv4; `params_with`
//! moves them to the family the current test runs in (`fd00::1`/`fd00::2`
//! over IPv6). The per-state tables and the seed's diagrams run once per
//! family through [`for_each_family`]; tests about MSS figures run over
//! IPv4, with IPv6's own figures tested separately.

use super::*;
use crate::socket::IpFamily;
use crate::wire::{SackBlock, TcpFlags, TcpOptions};
use core::cell::Cell;
use core::net::{Ipv4Addr, Ipv6Addr};

const A: SocketAddr = SocketAddr::V4(core::net::SocketAddrV4::new(
    Ipv4Addr::new(10, 0, 0, 1),
    40000,
));
const B: SocketAddr = SocketAddr::V4(core::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80));

std::thread_local! {
    /// The family connections of the running test use.
    static FAMILY: Cell<IpFamily> = const { Cell::new(IpFamily::V4) };
}

/// Runs `test` over IPv4, then over IPv6.
fn for_each_family(test: fn()) {
    for family in [IpFamily::V4, IpFamily::V6] {
        FAMILY.with(|f| f.set(family));
        test();
    }
    FAMILY.with(|f| f.set(IpFamily::V4));
}

/// `addr` (written as IPv4 10.0.0.n) in the current family.
fn in_family(addr: SocketAddr) -> SocketAddr {
    match (FAMILY.with(Cell::get), addr) {
        (IpFamily::V6, SocketAddr::V4(v4)) => {
            let host = u16::from(v4.ip().octets()[3]);
            SocketAddr::from((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host), v4.port()))
        }
        _ => addr,
    }
}
const MSL: Duration = Duration::from_secs(30);

fn config() -> ConnectionConfig {
    ConnectionConfig {
        mtu: 1500,
        msl: MSL,
        max_retries: 15,
        min_rto: Duration::from_millis(200),
        max_rto: Duration::from_secs(120),
        initial_rto: Duration::from_secs(1),
        delayed_ack: Duration::from_millis(40),
        synack_retries: 5,
        orphan_retries: 8,
        fin_timeout: MSL * 2,
        rmem_max: crate::config::TCP_RMEM[2],
        wmem_max: crate::config::TCP_WMEM[2],
    }
}

fn params_with(
    local: SocketAddr,
    remote: SocketAddr,
    iss: u32,
    options: SocketOptions,
) -> ConnectionParams {
    ConnectionParams {
        local: in_family(local),
        remote: in_family(remote),
        iss: SeqNum(iss),
        ts_offset: 0,
        options,
        config: std::sync::Arc::new(config()),
    }
}

fn params(local: SocketAddr, remote: SocketAddr, iss: u32) -> ConnectionParams {
    params_with(local, remote, iss, SocketOptions::default())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An owned copy of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seg {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    options: TcpOptions,
    payload: Vec<u8>,
}

impl Seg {
    fn repr(&self) -> TcpRepr<'_> {
        TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: SeqNum(self.seq),
            ack: SeqNum(self.ack),
            flags: self.flags,
            window: self.window,
            urgent: 0,
            options: self.options,
            payload: &self.payload,
        }
    }

    /// Flags without PSH (which only says "queue emptied").
    fn ctl(&self) -> TcpFlags {
        self.flags.difference(TcpFlags::PSH)
    }
}

/// A segment from `conn`'s peer to `conn`.
fn to(conn: &Connection, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Seg {
    Seg {
        src_port: conn.remote().port(),
        dst_port: conn.local().port(),
        seq,
        ack,
        flags,
        window: 65535,
        options: TcpOptions::default(),
        payload: payload.to_vec(),
    }
}

/// The next segment `conn` emits, parsed back (checksum verified).
fn out(conn: &mut Connection, now: Instant) -> Option<Seg> {
    out_urgent(conn, now).map(|(seg, _)| seg)
}

/// Everything `conn` emits now, with the urgent pointer of URG segments.
fn drain_urgent(conn: &mut Connection, now: Instant) -> Vec<(Seg, Option<u16>)> {
    std::iter::from_fn(|| out_urgent(conn, now))
        .take(10_000)
        .collect()
}

/// [`out`] with the urgent pointer when URG is set.
fn out_urgent(conn: &mut Connection, now: Instant) -> Option<(Seg, Option<u16>)> {
    let mut buf = [0u8; 1500];
    let n = conn.poll_transmit(now, &mut buf)?;
    assert!(n <= 1480, "segment exceeds the MTU less the IP header: {n}");
    let repr = TcpRepr::parse(&buf[..n], conn.local().ip(), conn.remote().ip())
        .expect("emitted segments parse");
    let urgent = repr.flags.urg().then_some(repr.urgent);
    let seg = Seg {
        src_port: repr.src_port,
        dst_port: repr.dst_port,
        seq: repr.seq.raw(),
        ack: repr.ack.raw(),
        flags: repr.flags,
        window: repr.window,
        options: repr.options,
        payload: repr.payload.to_vec(),
    };
    Some((seg, urgent))
}

/// Everything `conn` emits now.
fn drain(conn: &mut Connection, now: Instant) -> Vec<Seg> {
    let mut segs = Vec::new();
    while let Some(s) = out(conn, now) {
        segs.push(s);
        assert!(segs.len() < 10_000, "poll_transmit never returns None");
    }
    segs
}

fn feed(conn: &mut Connection, now: Instant, seg: &Seg) {
    conn.handle_segment(now, &seg.repr());
}

/// Asserts `<SEQ=seq><ACK=ack><CTL=flags>` (PSH ignored).
#[track_caller]
fn assert_seg(seg: &Seg, seq: u32, ack: u32, flags: TcpFlags) {
    assert_eq!(
        (seg.seq, seg.ack, seg.ctl()),
        (seq, ack, flags),
        "segment {seg:?}"
    );
}

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;

fn syn_ack() -> TcpFlags {
    SYN | ACK
}
fn fin_ack() -> TcpFlags {
    FIN | ACK
}

/// Decides whether a segment is delivered: (from A?, segment, index among
/// that side's segments) -> keep?
type DropFilter = Box<dyn FnMut(bool, &Seg, usize) -> bool>;

/// Two connections wired back to back with a virtual clock.
struct Net {
    a: Connection,
    b: Connection,
    now: Instant,
    /// Segments seen, in order: (from A?, segment).
    log: Vec<(bool, Seg)>,
    /// Returns false to drop a segment.
    drop_filter: Option<DropFilter>,
    sent_a: usize,
    sent_b: usize,
}

impl Net {
    /// A connects to B with the given ISNs; returns after the handshake.
    fn establish(iss_a: u32, iss_b: u32, opts_a: SocketOptions, opts_b: SocketOptions) -> Net {
        let now = Instant::from_millis(1000);
        let mut a = Connection::connect(params_with(A, B, iss_a, opts_a), now);
        let syn = out(&mut a, now).expect("SYN");
        let b = Connection::accept_syn(params_with(B, A, iss_b, opts_b), &syn.repr(), now);
        let mut net = Net {
            a,
            b,
            now,
            log: vec![(true, syn)],
            drop_filter: None,
            sent_a: 1,
            sent_b: 0,
        };
        net.exchange();
        assert_eq!(net.a.state(), TcpState::Established);
        assert_eq!(net.b.state(), TcpState::Established);
        net
    }

    fn default_pair() -> Net {
        Net::establish(
            1000,
            5000,
            SocketOptions::default(),
            SocketOptions::default(),
        )
    }

    /// Delivers segments both ways until neither side has anything to send.
    fn exchange(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            if let Some(s) = out(&mut self.a, self.now) {
                moved = true;
                let idx = self.sent_a;
                self.sent_a += 1;
                let keep = self.drop_filter.as_mut().is_none_or(|f| f(true, &s, idx));
                if keep {
                    feed(&mut self.b, self.now, &s);
                }
                self.log.push((true, s));
            }
            if let Some(s) = out(&mut self.b, self.now) {
                moved = true;
                let idx = self.sent_b;
                self.sent_b += 1;
                let keep = self.drop_filter.as_mut().is_none_or(|f| f(false, &s, idx));
                if keep {
                    feed(&mut self.a, self.now, &s);
                }
                self.log.push((false, s));
            }
            if !moved {
                return;
            }
        }
        panic!("the connections never went quiet");
    }

    /// Moves the clock to the earliest timer (at most `limit` ahead), runs it, exchanges.
    fn step_timers(&mut self, limit: Instant) -> bool {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= limit => {
                self.now = self.now.max(t);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                self.exchange();
                true
            }
            _ => false,
        }
    }

    fn advance(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step_timers(limit) {}
        self.now = limit;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.exchange();
    }
}

// ---------------------------------------------------------------------------
// Seed diagrams (/work/shared/seed/tcpip-state.txt), exact numbers.
// ---------------------------------------------------------------------------

#[test]
fn seed_basic_three_way_handshake() {
    for_each_family(seed_basic_three_way_handshake_in_family);
}

fn seed_basic_three_way_handshake_in_family() {
    let now = Instant::ZERO;
    // 1. A CLOSED, B LISTEN. 2. A: SYN-SENT --> <SEQ=100><CTL=SYN>
    let mut a = Connection::connect(params(A, B, 100), now);
    assert_eq!(a.state(), TcpState::SynSent);
    let syn = out(&mut a, now).expect("SYN");
    assert_seg(&syn, 100, 0, SYN);
    assert!(out(&mut a, now).is_none());
    // B: SYN-RECEIVED; 3. <SEQ=300><ACK=101><CTL=SYN,ACK>
    let mut b = Connection::accept_syn(params(B, A, 300), &syn.repr(), now);
    assert_eq!(b.state(), TcpState::SynReceived);
    let synack = out(&mut b, now).expect("SYN,ACK");
    assert_seg(&synack, 300, 101, syn_ack());
    assert!(out(&mut b, now).is_none());
    // A: ESTABLISHED; 4. --> <SEQ=101><ACK=301><CTL=ACK>
    feed(&mut a, now, &synack);
    assert_eq!(a.state(), TcpState::Established);
    let ack = out(&mut a, now).expect("ACK");
    assert_seg(&ack, 101, 301, ACK);
    assert!(ack.payload.is_empty());
    feed(&mut b, now, &ack);
    assert_eq!(b.state(), TcpState::Established);
    // 5. --> <SEQ=101><ACK=301><CTL=ACK><DATA>
    assert_eq!(a.send(now, b"request"), Ok(7));
    let data = out(&mut a, now).expect("data");
    assert_seg(&data, 101, 301, ACK);
    assert_eq!(data.payload, b"request");
    feed(&mut b, now, &data);
    assert_eq!(b.state(), TcpState::Established);
    let mut got = [0u8; 16];
    assert_eq!(b.recv(now, &mut got, false), Ok(7));
    assert_eq!(&got[..7], b"request");

    let mut changes = Vec::new();
    a.drain_state_changes(&mut changes);
    assert_eq!(
        changes,
        vec![
            (TcpState::Closed, TcpState::SynSent),
            (TcpState::SynSent, TcpState::Established)
        ]
    );
    changes.clear();
    b.drain_state_changes(&mut changes);
    assert_eq!(
        changes,
        vec![
            (TcpState::Listen, TcpState::SynReceived),
            (TcpState::SynReceived, TcpState::Established)
        ]
    );
}

#[test]
fn seed_normal_close_sequence() {
    for_each_family(seed_normal_close_sequence_in_family);
}

fn seed_normal_close_sequence_in_family() {
    // ISNs 99 and 299 put A at SEQ 100 / ACK 300 after the handshake.
    let mut net = Net::establish(99, 299, SocketOptions::default(), SocketOptions::default());
    let now = net.now;
    let (a, b) = (&mut net.a, &mut net.b);
    // 2. A (Close) FIN-WAIT-1 --> <SEQ=100><ACK=300><CTL=FIN,ACK> --> CLOSE-WAIT
    a.close(now);
    assert_eq!(a.state(), TcpState::FinWait1);
    let fin = out(a, now).expect("FIN");
    assert_seg(&fin, 100, 300, fin_ack());
    assert!(out(a, now).is_none());
    feed(b, now, &fin);
    assert_eq!(b.state(), TcpState::CloseWait);
    // 3. FIN-WAIT-2 <-- <SEQ=300><ACK=101><CTL=ACK> <-- CLOSE-WAIT
    let ack = out(b, now).expect("ACK of FIN");
    assert_seg(&ack, 300, 101, ACK);
    assert!(out(b, now).is_none());
    feed(a, now, &ack);
    assert_eq!(a.state(), TcpState::FinWait2);
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(now, &mut buf, false), Ok(0), "EOF for B");
    // 4. B (Close) LAST-ACK: TIME-WAIT <-- <SEQ=300><ACK=101><CTL=FIN,ACK>
    b.close(now);
    assert_eq!(b.state(), TcpState::LastAck);
    let fin_b = out(b, now).expect("FIN of B");
    assert_seg(&fin_b, 300, 101, fin_ack());
    feed(a, now, &fin_b);
    assert_eq!(a.state(), TcpState::TimeWait);
    // 5. TIME-WAIT --> <SEQ=101><ACK=301><CTL=ACK> --> CLOSED
    let last = out(a, now).expect("last ACK");
    assert_seg(&last, 101, 301, ACK);
    assert!(out(a, now).is_none());
    feed(b, now, &last);
    assert_eq!(b.state(), TcpState::Closed);
    assert!(b.is_finished());
    // 6. (2 MSL) CLOSED
    assert_eq!(a.poll_timeout(), Some(now + MSL * 2));
    a.handle_timeout(now + MSL * 2 - Duration::from_micros(1));
    assert_eq!(a.state(), TcpState::TimeWait);
    a.handle_timeout(now + MSL * 2);
    assert_eq!(a.state(), TcpState::Closed);
    assert!(a.is_finished());
    assert!(out(a, now + MSL * 2).is_none());
}

// ---------------------------------------------------------------------------
// Data transfer.
// ---------------------------------------------------------------------------

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `data` from A to B through `net`, reading on B, until all arrived.
fn transfer(net: &mut Net, data: &[u8], deadline: Duration) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    let end = net.now + deadline;
    while received.len() < data.len() {
        assert!(
            net.now < end,
            "transfer stalled at {} of {} bytes",
            received.len(),
            data.len()
        );
        if sent < data.len() {
            match net.a.send(net.now, &data[sent..]) {
                Ok(n) => sent += n,
                Err(SendError::WouldBlock) => {}
                Err(e) => panic!("send failed: {e:?}"),
            }
        }
        net.exchange();
        loop {
            match net.b.recv(net.now, &mut buf, false) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(RecvError::WouldBlock) => break,
                Err(e) => panic!("recv failed: {e:?}"),
            }
        }
        net.exchange();
        if received.len() < data.len() {
            // Let time pass: delayed ACKs, retransmissions.
            let next = [net.a.poll_timeout(), net.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            if let Some(t) = next {
                net.now = net.now.max(t);
            } else {
                net.now += ms(1);
            }
            net.a.handle_timeout(net.now);
            net.b.handle_timeout(net.now);
        }
    }
    received
}

#[test]
fn bulk_transfer_is_delivered_intact() {
    for_each_family(bulk_transfer_is_delivered_intact_in_family);
}

fn bulk_transfer_is_delivered_intact_in_family() {
    let mut net = Net::default_pair();
    let data = pattern(2 * 1024 * 1024);
    let got = transfer(&mut net, &data, Duration::from_secs(60));
    assert!(got == data, "data corrupted");
    let stats = net.a.stats();
    assert_eq!(stats.retransmits, 0);
    assert_eq!(stats.bytes_sent, data.len() as u64);
    assert_eq!(net.b.stats().bytes_received, data.len() as u64);
    // Every data segment is a full MSS except perhaps the tail.
    let mss = usize::from(stats.mss);
    // MTU 1500 less IP (20 or 40) and TCP headers, less the timestamps option.
    let full = match FAMILY.with(Cell::get) {
        IpFamily::V4 => 1460,
        IpFamily::V6 => 1440,
    };
    assert_eq!(mss, full - 12, "MSS less the timestamps option");
    let data_segs: Vec<usize> = net
        .log
        .iter()
        .filter(|(from_a, s)| *from_a && !s.payload.is_empty())
        .map(|(_, s)| s.payload.len())
        .collect();
    assert!(data_segs.iter().all(|&len| len <= mss));
    // Small segments only when the queue ran dry with nothing in flight (Nagle).
    let small = data_segs.iter().filter(|&&len| len < mss).count();
    assert!(
        small * 100 <= data_segs.len(),
        "{small} small of {} segments",
        data_segs.len()
    );
    // Delayed ACKs: far fewer ACKs than data segments.
    let acks = net.log.iter().filter(|(from_a, _)| !*from_a).count();
    assert!(
        acks * 10 < data_segs.len() * 7,
        "{acks} ACKs for {} segments",
        data_segs.len()
    );
}

#[test]
fn lossy_transfer_recovers_with_fast_retransmit() {
    for_each_family(lossy_transfer_recovers_with_fast_retransmit_in_family);
}

fn lossy_transfer_recovers_with_fast_retransmit_in_family() {
    let mut net = Net::default_pair();
    // Drop every 50th data segment from A (the first transmission only).
    let dropped = std::rc::Rc::new(core::cell::Cell::new(0u64));
    let counter = dropped.clone();
    let mut seen = std::collections::HashSet::new();
    net.drop_filter = Some(Box::new(move |from_a, s: &Seg, idx| {
        let first_time = seen.insert(s.seq);
        let drop = from_a && !s.payload.is_empty() && idx % 50 == 7 && first_time;
        if drop {
            counter.set(counter.get() + 1);
        }
        !drop
    }));
    let data = pattern(1024 * 1024);
    let got = transfer(&mut net, &data, Duration::from_secs(300));
    assert!(got == data, "data corrupted");
    // SACK recovery resends exactly what was lost: no timeout, nothing spurious.
    assert!(dropped.get() > 10);
    assert_eq!(net.a.stats().retransmits, dropped.get());
}

#[test]
fn lossy_transfer_without_sack_uses_newreno() {
    let mut net = Net::default_pair();
    // Turn SACK off on both sides after the handshake to exercise NewReno.
    net.a.sack_enabled = false;
    net.b.sack_enabled = false;
    net.drop_filter = Some(Box::new(|from_a, s: &Seg, idx| {
        !(from_a && !s.payload.is_empty() && idx % 40 == 3)
    }));
    let data = pattern(512 * 1024);
    let got = transfer(&mut net, &data, Duration::from_secs(300));
    assert!(got == data, "data corrupted");
    assert!(net.a.stats().retransmits > 0);
}

// ---------------------------------------------------------------------------
// Per-state behaviour against a scripted peer (no options: plain numbers).
// Our side has ISS 1000; the peer's ISS is 5000.
// ---------------------------------------------------------------------------

/// A connection in a given state plus what the scripted peer knows.
struct Scripted {
    conn: Connection,
    now: Instant,
    /// The peer's next sequence number (= our RCV.NXT).
    peer_nxt: u32,
    /// Our SND.NXT.
    our_nxt: u32,
}

impl Scripted {
    fn peer(&self, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Seg {
        to(&self.conn, seq, ack, flags, payload)
    }
    /// An ACK number that leaves our FIN (if in flight) unacknowledged.
    fn una(&self) -> u32 {
        match self.conn.state() {
            TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck => self.our_nxt - 1,
            _ => self.our_nxt,
        }
    }
    fn feed(&mut self, seg: &Seg) -> Vec<Seg> {
        feed(&mut self.conn, self.now, seg);
        drain(&mut self.conn, self.now)
    }
}

fn scripted_established(options: SocketOptions) -> Scripted {
    let now = Instant::from_millis(1000);
    let mut conn = Connection::connect(params_with(A, B, 1000, options), now);
    let syn = out(&mut conn, now).expect("SYN");
    assert_seg(&syn, 1000, 0, SYN);
    let synack = to(&conn, 5000, 1001, syn_ack(), b"");
    feed(&mut conn, now, &synack);
    let ack = drain(&mut conn, now);
    assert_eq!(ack.len(), 1);
    assert_seg(&ack[0], 1001, 5001, ACK);
    Scripted {
        conn,
        now,
        peer_nxt: 5001,
        our_nxt: 1001,
    }
}

/// Builds a connection in `state` (not LISTEN/CLOSED/SYN-SENT).
fn scripted(state: TcpState) -> Scripted {
    if state == TcpState::SynReceived {
        let now = Instant::from_millis(1000);
        let syn = Seg {
            src_port: A.port(),
            dst_port: B.port(),
            seq: 4999,
            ack: 0,
            flags: SYN,
            window: 65535,
            options: TcpOptions::default(),
            payload: Vec::new(),
        };
        let mut conn = Connection::accept_syn(params(B, A, 1000), &syn.repr(), now);
        let synack = drain(&mut conn, now);
        assert_eq!(synack.len(), 1);
        assert_seg(&synack[0], 1000, 5000, syn_ack());
        return Scripted {
            conn,
            now,
            peer_nxt: 5000,
            our_nxt: 1001,
        };
    }
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    match state {
        TcpState::Established => {}
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::TimeWait => {
            s.conn.shutdown(s.now, Shutdown::Write);
            let fin = drain(&mut s.conn, s.now);
            assert_seg(&fin[0], o, p, fin_ack());
            s.our_nxt = o + 1;
            match state {
                TcpState::FinWait2 | TcpState::TimeWait => {
                    let ack = s.peer(p, o + 1, ACK, b"");
                    s.feed(&ack);
                    if state == TcpState::TimeWait {
                        let fin = s.peer(p, o + 1, fin_ack(), b"");
                        s.feed(&fin);
                        s.peer_nxt = p + 1;
                    }
                }
                TcpState::Closing => {
                    let fin = s.peer(p, o, fin_ack(), b"");
                    s.feed(&fin);
                    s.peer_nxt = p + 1;
                }
                _ => {}
            }
        }
        TcpState::CloseWait | TcpState::LastAck => {
            let fin = s.peer(p, o, fin_ack(), b"");
            s.feed(&fin);
            s.peer_nxt = p + 1;
            if state == TcpState::LastAck {
                s.conn.shutdown(s.now, Shutdown::Write);
                let fin = drain(&mut s.conn, s.now);
                assert_seg(&fin[0], o, p + 1, fin_ack());
                s.our_nxt = o + 1;
            }
        }
        other => panic!("no script for {other}"),
    }
    assert_eq!(s.conn.state(), state);
    s
}

const SYNC_STATES: [TcpState; 8] = [
    TcpState::SynReceived,
    TcpState::Established,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::Closing,
    TcpState::LastAck,
    TcpState::TimeWait,
];

#[test]
fn out_of_window_segment_is_acked_and_dropped_in_every_state() {
    for_each_family(out_of_window_segment_is_acked_and_dropped_in_every_state_in_family);
}

fn out_of_window_segment_is_acked_and_dropped_in_every_state_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let seg = s.peer(p.wrapping_add(200_000), o, ACK, b"far away");
        let discarded = s.conn.segments_discarded();
        let replies = s.feed(&seg);
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        assert_seg(&replies[0], o, p, ACK);
        assert_eq!(s.conn.state(), state);
        assert_eq!(s.conn.stats().recv_queue, 0);
        assert_eq!(s.conn.segments_discarded(), discarded + 1, "{state}");
        assert_eq!(s.conn.stats().segments_discarded, discarded + 1, "{state}");
    }
}

#[test]
fn duplicate_segment_is_acked_and_dropped_in_every_state() {
    for_each_family(duplicate_segment_is_acked_and_dropped_in_every_state_in_family);
}

fn duplicate_segment_is_acked_and_dropped_in_every_state_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        // Entirely before RCV.NXT: an old duplicate.
        let seg = s.peer(p.wrapping_sub(10), o, ACK, b"old");
        let discarded = s.conn.segments_discarded();
        let replies = s.feed(&seg);
        assert_eq!(s.conn.segments_discarded(), discarded + 1, "{state}");
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        assert_seg(&replies[0], o, p, ACK);
        assert_eq!(s.conn.state(), state);
    }
}

#[test]
fn rst_exactly_at_rcv_nxt_resets_except_in_time_wait() {
    for_each_family(rst_exactly_at_rcv_nxt_resets_except_in_time_wait_in_family);
}

fn rst_exactly_at_rcv_nxt_resets_except_in_time_wait_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p, o, RST, b""));
        assert!(replies.is_empty(), "{state}: {replies:?}");
        let expected_error = match state {
            TcpState::Established
            | TcpState::FinWait1
            | TcpState::FinWait2
            | TcpState::CloseWait => Some(ConnError::Reset),
            _ => None,
        };
        if state == TcpState::TimeWait {
            // RFC 1337: TIME-WAIT ignores RST.
            assert_eq!(s.conn.state(), TcpState::TimeWait);
        } else {
            assert_eq!(s.conn.state(), TcpState::Closed, "{state}");
            assert!(s.conn.is_finished());
        }
        assert_eq!(s.conn.take_error(), expected_error, "{state}");
    }
}

/// What arrived before an RST is read first, then ECONNRESET once, then
/// end of stream (Linux's tcp_recvmsg order; RFC 9293 §3.10.7.4's flush
/// is a "should"); in CLOSE-WAIT the FIN is in, so reads see end of stream
/// and the error waits for a send or SO_ERROR, as on Linux.
#[test]
fn data_before_an_rst_stays_readable_ahead_of_the_error() {
    for_each_family(data_before_an_rst_stays_readable_ahead_of_the_error_in_family);
}

fn data_before_an_rst_stays_readable_ahead_of_the_error_in_family() {
    for state in [
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
    ] {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let mut buf = [0u8; 16];
        let rst_seq = if state == TcpState::CloseWait {
            p
        } else {
            let _ = s.feed(&s.peer(p, o, ACK, b"abc"));
            p + 3
        };
        let _ = s.feed(&s.peer(rst_seq, o, RST, b""));
        assert_eq!(s.conn.state(), TcpState::Closed, "{state}");
        if state == TcpState::CloseWait {
            assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(0), "{state}");
            assert_eq!(s.conn.take_error(), Some(ConnError::Reset), "{state}");
            continue;
        }
        assert_eq!(s.conn.recv(s.now, &mut buf, true), Ok(3), "{state}: peek");
        assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(3), "{state}");
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(
            s.conn.recv(s.now, &mut buf, false),
            Err(RecvError::Failed(ConnError::Reset)),
            "{state}"
        );
        assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(0), "{state}");
        assert_eq!(s.conn.take_error(), None, "{state}: reported once");
    }
}

#[test]
fn rst_in_window_not_exact_gets_a_challenge_ack() {
    for_each_family(rst_in_window_not_exact_gets_a_challenge_ack_in_family);
}

fn rst_in_window_not_exact_gets_a_challenge_ack_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p + 100, o, RST, b""));
        assert_eq!(s.conn.state(), state, "{state}");
        if state == TcpState::TimeWait {
            assert!(replies.is_empty());
        } else {
            assert_eq!(replies.len(), 1, "{state}: {replies:?}");
            assert_seg(&replies[0], o, p, ACK);
        }
        // Out of window: dropped silently.
        let replies = s.feed(&s.peer(p.wrapping_add(300_000), o, RST, b""));
        assert!(replies.is_empty(), "{state}: {replies:?}");
        assert_eq!(s.conn.state(), state);
        assert_eq!(s.conn.take_error(), None);
    }
}

#[test]
fn syn_in_a_synchronized_state_gets_a_challenge_ack() {
    for_each_family(syn_in_a_synchronized_state_gets_a_challenge_ack_in_family);
}

fn syn_in_a_synchronized_state_gets_a_challenge_ack_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p + 10, 0, SYN, b""));
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        assert_seg(&replies[0], o, p, ACK);
        assert_eq!(s.conn.state(), state);
    }
}

#[test]
fn ack_of_unsent_data_is_answered_with_an_ack() {
    for_each_family(ack_of_unsent_data_is_answered_with_an_ack_in_family);
}

fn ack_of_unsent_data_is_answered_with_an_ack_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p, o + 1000, ACK, b""));
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        if state == TcpState::SynReceived {
            // RFC 9293 §3.10.7.4: unacceptable ACK in SYN-RECEIVED: <SEQ=SEG.ACK><CTL=RST>.
            assert_seg(&replies[0], o + 1000, 0, RST);
        } else {
            assert_seg(&replies[0], o, p, ACK);
        }
        assert_eq!(s.conn.state(), state);
    }
}

#[test]
fn in_window_data_is_delivered_only_before_the_peer_fin() {
    for_each_family(in_window_data_is_delivered_only_before_the_peer_fin_in_family);
}

fn in_window_data_is_delivered_only_before_the_peer_fin_in_family() {
    for state in SYNC_STATES {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p, s.una(), ACK, b"hello"));
        let deliverable = matches!(
            state,
            TcpState::SynReceived | TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        );
        if deliverable {
            // Quick-ACK mode at the start of a connection: ACKed at once.
            assert_eq!(replies.len(), 1, "{state}: {replies:?}");
            assert_seg(&replies[0], o, p + 5, ACK);
            assert_eq!(s.conn.stats().recv_queue, 5, "{state}");
            let expected = if state == TcpState::SynReceived {
                TcpState::Established
            } else {
                state
            };
            assert_eq!(s.conn.state(), expected);
        } else {
            // After a FIN, text is ignored (RFC 9293 §3.10.7.4 seventh check).
            assert_eq!(s.conn.stats().recv_queue, 0, "{state}");
            assert_eq!(s.conn.state(), state);
        }
    }
}

#[test]
fn fin_moves_each_state_as_rfc_9293_says() {
    for_each_family(fin_moves_each_state_as_rfc_9293_says_in_family);
}

fn fin_moves_each_state_as_rfc_9293_says_in_family() {
    let table = [
        (TcpState::SynReceived, TcpState::CloseWait),
        (TcpState::Established, TcpState::CloseWait),
        // Our FIN not yet acknowledged: simultaneous close.
        (TcpState::FinWait1, TcpState::Closing),
        (TcpState::FinWait2, TcpState::TimeWait),
        (TcpState::CloseWait, TcpState::CloseWait),
        (TcpState::Closing, TcpState::Closing),
        (TcpState::LastAck, TcpState::LastAck),
        (TcpState::TimeWait, TcpState::TimeWait),
    ];
    for (state, after) in table {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let fresh = !matches!(
            state,
            TcpState::CloseWait | TcpState::Closing | TcpState::LastAck | TcpState::TimeWait
        );
        // A FIN at RCV.NXT (for states past the peer's FIN: its retransmission).
        let fin_seq = if fresh { p } else { p - 1 };
        let replies = s.feed(&s.peer(fin_seq, s.una(), fin_ack(), b""));
        assert_eq!(s.conn.state(), after, "{state}");
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        let acked = if fresh { p + 1 } else { p };
        assert_seg(&replies[0], o, acked, ACK);
        if fresh {
            let mut buf = [0u8; 4];
            assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(0), "EOF in {after}");
            assert!(s.conn.readiness().contains(Readiness::RDHUP));
        }
    }
}

#[test]
fn fin_wait_1_fin_with_ack_of_our_fin_goes_to_time_wait() {
    for_each_family(fin_wait_1_fin_with_ack_of_our_fin_goes_to_time_wait_in_family);
}

fn fin_wait_1_fin_with_ack_of_our_fin_goes_to_time_wait_in_family() {
    let mut s = scripted(TcpState::FinWait1);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let replies = s.feed(&s.peer(p, o, fin_ack(), b""));
    assert_eq!(s.conn.state(), TcpState::TimeWait);
    assert_seg(&replies[0], o, p + 1, ACK);
}

#[test]
fn time_wait_retransmitted_fin_is_reacked_and_restarts_2msl() {
    for_each_family(time_wait_retransmitted_fin_is_reacked_and_restarts_2msl_in_family);
}

fn time_wait_retransmitted_fin_is_reacked_and_restarts_2msl_in_family() {
    let mut s = scripted(TcpState::TimeWait);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let entered = s.now;
    assert_eq!(s.conn.poll_timeout(), Some(entered + MSL * 2));
    s.now = entered + Duration::from_secs(50);
    s.conn.handle_timeout(s.now);
    let replies = s.feed(&s.peer(p - 1, o, fin_ack(), b""));
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], o, p, ACK);
    assert_eq!(s.conn.poll_timeout(), Some(s.now + MSL * 2));
    s.conn.handle_timeout(entered + MSL * 2);
    assert_eq!(s.conn.state(), TcpState::TimeWait, "restarted");
    s.conn.handle_timeout(s.now + MSL * 2);
    assert_eq!(s.conn.state(), TcpState::Closed);
}

#[test]
fn syn_received_retransmitted_syn_resends_syn_ack() {
    for_each_family(syn_received_retransmitted_syn_resends_syn_ack_in_family);
}

fn syn_received_retransmitted_syn_resends_syn_ack_in_family() {
    let mut s = scripted(TcpState::SynReceived);
    let syn = Seg {
        src_port: A.port(),
        dst_port: B.port(),
        seq: 4999,
        ack: 0,
        flags: SYN,
        window: 65535,
        options: TcpOptions::default(),
        payload: Vec::new(),
    };
    let replies = s.feed(&syn);
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], 1000, 5000, syn_ack());
}

#[test]
fn passive_syn_received_ack_completes_with_data() {
    for_each_family(passive_syn_received_ack_completes_with_data_in_family);
}

fn passive_syn_received_ack_completes_with_data_in_family() {
    let mut s = scripted(TcpState::SynReceived);
    let replies = s.feed(&s.peer(5000, 1001, ACK, b"GET /"));
    assert_eq!(s.conn.state(), TcpState::Established);
    assert_eq!(s.conn.stats().recv_queue, 5);
    assert_seg(&replies[0], 1001, 5005, ACK);
}

// ---------------------------------------------------------------------------
// Opening and closing variants.
// ---------------------------------------------------------------------------

#[test]
fn simultaneous_open_reaches_established_on_both_sides() {
    for_each_family(simultaneous_open_reaches_established_on_both_sides_in_family);
}

fn simultaneous_open_reaches_established_on_both_sides_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let mut b = Connection::connect(params(B, A, 300), now);
    let syn_a = out(&mut a, now).expect("SYN a");
    let syn_b = out(&mut b, now).expect("SYN b");
    assert_seg(&syn_a, 100, 0, SYN);
    assert_seg(&syn_b, 300, 0, SYN);
    // The SYNs cross: each side goes to SYN-RECEIVED and sends SYN,ACK.
    feed(&mut a, now, &syn_b);
    feed(&mut b, now, &syn_a);
    assert_eq!(a.state(), TcpState::SynReceived);
    assert_eq!(b.state(), TcpState::SynReceived);
    let sa_a = out(&mut a, now).expect("SYN,ACK a");
    let sa_b = out(&mut b, now).expect("SYN,ACK b");
    assert_seg(&sa_a, 100, 301, syn_ack());
    assert_seg(&sa_b, 300, 101, syn_ack());
    feed(&mut a, now, &sa_b);
    feed(&mut b, now, &sa_a);
    assert_eq!(a.state(), TcpState::Established);
    assert_eq!(b.state(), TcpState::Established);
    let ack_a = out(&mut a, now).expect("ACK a");
    assert_seg(&ack_a, 101, 301, ACK);
    feed(&mut b, now, &ack_a);
    assert_eq!(b.state(), TcpState::Established);
    let mut changes = Vec::new();
    a.drain_state_changes(&mut changes);
    assert_eq!(
        changes,
        vec![
            (TcpState::Closed, TcpState::SynSent),
            (TcpState::SynSent, TcpState::SynReceived),
            (TcpState::SynReceived, TcpState::Established)
        ]
    );
}

#[test]
fn simultaneous_close_goes_through_closing() {
    for_each_family(simultaneous_close_goes_through_closing_in_family);
}

fn simultaneous_close_goes_through_closing_in_family() {
    let mut net = Net::establish(99, 299, SocketOptions::default(), SocketOptions::default());
    let now = net.now;
    net.a.close(now);
    net.b.close(now);
    let fin_a = out(&mut net.a, now).expect("FIN a");
    let fin_b = out(&mut net.b, now).expect("FIN b");
    assert_seg(&fin_a, 100, 300, fin_ack());
    assert_seg(&fin_b, 300, 100, fin_ack());
    feed(&mut net.a, now, &fin_b);
    feed(&mut net.b, now, &fin_a);
    assert_eq!(net.a.state(), TcpState::Closing);
    assert_eq!(net.b.state(), TcpState::Closing);
    let ack_a = out(&mut net.a, now).expect("ACK a");
    let ack_b = out(&mut net.b, now).expect("ACK b");
    assert_seg(&ack_a, 101, 301, ACK);
    assert_seg(&ack_b, 301, 101, ACK);
    feed(&mut net.a, now, &ack_b);
    feed(&mut net.b, now, &ack_a);
    assert_eq!(net.a.state(), TcpState::TimeWait);
    assert_eq!(net.b.state(), TcpState::TimeWait);
    net.advance(MSL * 2);
    assert_eq!(net.a.state(), TcpState::Closed);
    assert_eq!(net.b.state(), TcpState::Closed);
}

#[test]
fn half_close_keeps_reading() {
    for_each_family(half_close_keeps_reading_in_family);
}

fn half_close_keeps_reading_in_family() {
    let mut net = Net::default_pair();
    net.a.shutdown(net.now, Shutdown::Write);
    net.exchange();
    assert_eq!(net.a.state(), TcpState::FinWait2);
    assert_eq!(net.b.state(), TcpState::CloseWait);
    assert_eq!(net.a.send(net.now, b"x"), Err(SendError::BrokenPipe));
    // B still sends; A still reads.
    assert_eq!(net.b.send(net.now, b"reply after FIN"), Ok(15));
    net.exchange();
    let mut buf = [0u8; 64];
    assert_eq!(net.a.recv(net.now, &mut buf, false), Ok(15));
    assert_eq!(&buf[..15], b"reply after FIN");
    assert_eq!(net.b.recv(net.now, &mut buf, false), Ok(0), "B sees EOF");
    assert!(net.b.readiness().contains(Readiness::RDHUP));
    net.b.close(net.now);
    net.exchange();
    assert_eq!(net.a.state(), TcpState::TimeWait);
    assert_eq!(net.b.state(), TcpState::Closed);
}

#[test]
fn close_with_unread_data_sends_rst() {
    for_each_family(close_with_unread_data_sends_rst_in_family);
}

fn close_with_unread_data_sends_rst_in_family() {
    let mut net = Net::default_pair();
    net.b.send(net.now, b"unread").expect("send");
    net.exchange();
    assert_eq!(net.a.stats().recv_queue, 6);
    net.a.close(net.now);
    assert_eq!(net.a.state(), TcpState::Closed);
    let rst = out(&mut net.a, net.now).expect("RST");
    assert_eq!(rst.ctl(), RST);
    assert!(out(&mut net.a, net.now).is_none());
    assert!(net.a.is_finished());
    feed(&mut net.b, net.now, &rst);
    assert_eq!(net.b.state(), TcpState::Closed);
    let mut buf = [0u8; 4];
    assert_eq!(
        net.b.recv(net.now, &mut buf, false),
        Err(RecvError::Failed(ConnError::Reset))
    );
    assert_eq!(net.b.recv(net.now, &mut buf, false), Ok(0));
    assert_eq!(net.b.send(net.now, b"x"), Err(SendError::BrokenPipe));
}

#[test]
fn linger_zero_close_sends_rst() {
    let mut net = Net::default_pair();
    net.a
        .set_option(net.now, SockOption::Linger(Some(Duration::ZERO)))
        .expect("linger");
    net.a.close(net.now);
    let rst = out(&mut net.a, net.now).expect("RST");
    assert_eq!(rst.ctl(), RST);
    assert_eq!(net.a.state(), TcpState::Closed);
}

#[test]
fn abort_sends_rst_and_reports_the_reason() {
    let mut net = Net::default_pair();
    net.a.abort(net.now, ConnError::Aborted);
    assert_eq!(net.a.take_error(), Some(ConnError::Aborted));
    let rst = out(&mut net.a, net.now).expect("RST");
    assert_eq!(rst.ctl(), RST);
    feed(&mut net.b, net.now, &rst);
    assert_eq!(net.b.take_error(), Some(ConnError::Reset));
    let ready = net.b.readiness();
    assert!(ready.contains(Readiness::HUP | Readiness::IN));
}

#[test]
fn rst_answering_our_syn_is_connection_refused() {
    for_each_family(rst_answering_our_syn_is_connection_refused_in_family);
}

fn rst_answering_our_syn_is_connection_refused_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now).expect("SYN");
    // An RST whose ACK is not acceptable is ignored.
    let seg = to(&a, 0, 100, RST | ACK, b"");
    feed(&mut a, now, &seg);
    assert_eq!(a.state(), TcpState::SynSent);
    let seg = to(&a, 0, 101, RST | ACK, b"");
    feed(&mut a, now, &seg);
    assert_eq!(a.state(), TcpState::Closed);
    assert_eq!(a.take_error(), Some(ConnError::Refused));
}

#[test]
fn syn_sent_resets_an_unacceptable_ack() {
    for_each_family(syn_sent_resets_an_unacceptable_ack_in_family);
}

fn syn_sent_resets_an_unacceptable_ack_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now).expect("SYN");
    let seg = to(&a, 7000, 5555, ACK, b"");
    feed(&mut a, now, &seg);
    let rst = out(&mut a, now).expect("RST");
    assert_seg(&rst, 5555, 0, RST);
    assert_eq!(a.state(), TcpState::SynSent);
}

// ---------------------------------------------------------------------------
// Retransmission and timeouts.
// ---------------------------------------------------------------------------

#[test]
fn syn_is_retried_with_backoff_then_times_out() {
    let start = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), start);
    let mut sent_at = Vec::new();
    let mut now = start;
    while a.state() == TcpState::SynSent {
        while let Some(s) = out(&mut a, now) {
            assert_seg(&s, 100, 0, SYN);
            sent_at.push((now - start).as_secs());
        }
        now = a.poll_timeout().expect("SYN timer");
        a.handle_timeout(now);
    }
    // syn_retries = 6: 1 s initial RTO doubling (RFC 6298 §2.1, §5.5).
    assert_eq!(sent_at, vec![0, 1, 3, 7, 15, 31, 63]);
    assert_eq!((now - start).as_secs(), 127);
    assert_eq!(a.take_error(), Some(ConnError::TimedOut));
    assert_eq!(a.stats().retransmits, 6);
}

#[test]
fn data_retransmission_backs_off_then_times_out() {
    let mut s = scripted_established(SocketOptions::default());
    let start = s.now;
    s.conn.send(start, b"lost forever").expect("send");
    let mut times = Vec::new();
    let mut now = start;
    while s.conn.state() == TcpState::Established {
        while let Some(seg) = out(&mut s.conn, now) {
            assert_eq!(seg.seq, 1001);
            assert_eq!(seg.payload, b"lost forever");
            times.push(now - start);
        }
        now = s.conn.poll_timeout().expect("retransmission timer");
        s.conn.handle_timeout(now);
    }
    assert_eq!(times.len(), 16, "first transmission + max_retries (15)");
    // The handshake's RTT sample was ~0, so the RTO starts at min_rto and doubles.
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[0], ms(200));
    assert_eq!(gaps[1], ms(400));
    assert_eq!(gaps[2], ms(800));
    assert!(gaps.iter().all(|&g| g <= Duration::from_secs(120)));
    assert_eq!(s.conn.state(), TcpState::Closed);
    let mut buf = [0u8; 4];
    assert_eq!(
        s.conn.recv(now, &mut buf, false),
        Err(RecvError::Failed(ConnError::TimedOut))
    );
    assert_eq!(s.conn.stats().retransmits, 15);
}

#[test]
fn user_timeout_bounds_retransmission() {
    let options = SocketOptions {
        user_timeout: Some(OptionTime::from_secs(2)),
        ..SocketOptions::default()
    };
    let mut s = scripted_established(options);
    let start = s.now;
    s.conn.send(start, b"data").expect("send");
    let mut now = start;
    while s.conn.state() == TcpState::Established {
        drain(&mut s.conn, now);
        now = s.conn.poll_timeout().expect("timer");
        s.conn.handle_timeout(now);
    }
    assert_eq!(now - start, Duration::from_secs(2));
    assert_eq!(s.conn.take_error(), Some(ConnError::TimedOut));
}

#[test]
fn three_duplicate_acks_trigger_fast_retransmit() {
    let mut s = scripted_established(SocketOptions {
        nodelay: true,
        ..SocketOptions::default()
    });
    let now = s.now;
    let mss = 536; // No MSS option from the peer (RFC 9293 §3.7.1).
    assert_eq!(s.conn.stats().mss, mss as u16);
    let data = pattern(mss * 6);
    s.conn.send(now, &data).expect("send");
    let segs = drain(&mut s.conn, now);
    assert_eq!(segs.len(), 6, "initial window allows 6 segments of 536");
    let p = s.peer_nxt;
    // Segment 1 arrives, 2 is lost, 3..5 produce duplicate ACKs.
    assert!(s.feed(&s.peer(p, 1001 + mss as u32, ACK, b"")).is_empty());
    for _ in 0..2 {
        assert!(s.feed(&s.peer(p, 1001 + mss as u32, ACK, b"")).is_empty());
    }
    let replies = s.feed(&s.peer(p, 1001 + mss as u32, ACK, b""));
    assert_eq!(replies.len(), 1, "fast retransmit: {replies:?}");
    assert_eq!(replies[0].seq, 1001 + mss as u32);
    assert_eq!(replies[0].payload.len(), mss);
    assert_eq!(s.conn.stats().retransmits, 1);
    // The retransmission timer did not fire: it is still the first RTO.
    assert!(s.conn.poll_timeout().expect("rtx") > now);
}

#[test]
fn zero_window_is_probed_with_backoff() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let mut closed = s.peer(p, o, ACK, b"");
    closed.window = 0;
    s.feed(&closed);
    let start = s.now;
    s.conn.send(start, b"waiting").expect("send");
    assert!(drain(&mut s.conn, start).is_empty(), "window is zero");
    let mut probes = Vec::new();
    for _ in 0..4 {
        let now = s.conn.poll_timeout().expect("persist timer");
        s.conn.handle_timeout(now);
        let segs = drain(&mut s.conn, now);
        assert_eq!(segs.len(), 1, "{segs:?}");
        // <SEQ=SND.UNA-1><ACK=RCV.NXT>, no data.
        assert_seg(&segs[0], o - 1, p, ACK);
        assert!(segs[0].payload.is_empty());
        probes.push(now - start);
        // The peer answers with a zero window again.
        s.now = now;
        s.feed(&closed);
    }
    let gaps: Vec<Duration> = core::iter::once(probes[0])
        .chain(probes.windows(2).map(|w| w[1] - w[0]))
        .collect();
    assert!(
        gaps.windows(2).all(|w| w[1] == w[0] * 2),
        "backoff {gaps:?}"
    );
    // The window opens: the data goes out.
    let open = s.peer(p, o, ACK, b"");
    let segs = s.feed(&open);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].payload, b"waiting");
}

// ---------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------

#[test]
fn syn_offers_mss_window_scale_sack_and_timestamps() {
    // SO_RCVBUF fixes the buffer, and the scale then fits it instead.
    let now = Instant::from_millis(1000);
    // (Linux: shift until the space fits 16 bits: 64 KiB needs 1, 32 MiB 10.)
    for (buffer, scale) in [
        (256 * 1024, 3),
        (64 * 1024, 1),
        (65535, 0),
        (6 << 20, 7),
        (32 << 20, 10),
    ] {
        let options = SocketOptions {
            recv_buffer: buffer,
            recv_buffer_locked: true,
            ..SocketOptions::default()
        };
        let mut a = Connection::connect(params_with(A, B, 100, options), now);
        let syn = out(&mut a, now).expect("SYN");
        assert_eq!(syn.options.window_scale, Some(scale), "SO_RCVBUF {buffer}");
    }

    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let syn = out(&mut a, now).expect("SYN");
    assert_eq!(syn.options.mss, Some(1460));
    // The scale fits the 6 MiB autotuning maximum, as Linux chooses it
    // (tcp_select_initial_window: 6 MiB >> 7 < 65536): 7.
    assert_eq!(syn.options.window_scale, Some(7));
    assert!(syn.options.sack_permitted);
    assert_eq!(syn.options.timestamp, Some((1000, 0)));
    assert_eq!(syn.window, 65535, "SYN window is never scaled");

    // A peer that offers nothing gets nothing back, and a 536-byte MSS is used.
    let bare = Seg {
        src_port: A.port(),
        dst_port: B.port(),
        seq: 7,
        ack: 0,
        flags: SYN,
        window: 1000,
        options: TcpOptions::default(),
        payload: Vec::new(),
    };
    let mut b = Connection::accept_syn(params(B, A, 300), &bare.repr(), now);
    let synack = out(&mut b, now).expect("SYN,ACK");
    assert_eq!(synack.options.window_scale, None);
    assert_eq!(synack.options.timestamp, None);
    assert!(!synack.options.sack_permitted);
    assert_eq!(synack.options.mss, Some(1460));
    assert_eq!(b.stats().mss, 536);
}

#[test]
fn window_scaling_and_mss_are_negotiated() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now).expect("SYN");
    let mut synack = to(&a, 300, 101, syn_ack(), b"");
    synack.options.mss = Some(1000);
    synack.options.window_scale = Some(5);
    synack.options.timestamp = Some((777, 1000));
    synack.window = 1000; // unscaled in a SYN
    feed(&mut a, now, &synack);
    assert_eq!(a.state(), TcpState::Established);
    // min(peer MSS, mtu-40) less the 12-byte timestamps option.
    assert_eq!(a.stats().mss, 1000 - 12);
    let ack = out(&mut a, now).expect("ACK");
    assert_eq!(ack.options.timestamp, Some((1000, 777)));
    // Our window field is now scaled by 7: the 128 KiB initial buffer >> 7.
    assert_eq!(ack.window, ((128 * 1024) >> 7) as u16);
    // The peer's windows are scaled by 5 from now on.
    let mut upd = to(&a, 301, 101, ACK, b"");
    upd.window = 100;
    upd.options.timestamp = Some((778, 1000));
    feed(&mut a, now, &upd);
    assert_eq!(a.snd_wnd, 100 << 5);
    // A shift above 14 is taken as 14 (RFC 7323 §2.3).
    let mut b = Connection::connect(params(A, B, 100), now);
    let _ = out(&mut b, now);
    let mut synack = to(&b, 300, 101, syn_ack(), b"");
    synack.options.window_scale = Some(20);
    feed(&mut b, now, &synack);
    assert_eq!(b.snd_wscale, 14);
}

#[test]
fn paws_drops_old_timestamps_but_not_rst() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now).expect("SYN");
    let mut synack = to(&a, 300, 101, syn_ack(), b"");
    synack.options.timestamp = Some((5000, 1000));
    feed(&mut a, now, &synack);
    drain(&mut a, now);
    // An old TSval: ACK and drop.
    let mut old = to(&a, 301, 101, ACK, b"stale");
    old.options.timestamp = Some((4000, 1000));
    feed(&mut a, now, &old);
    let replies = drain(&mut a, now);
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], 101, 301, ACK);
    assert_eq!(a.stats().recv_queue, 0);
    // A fresh one is accepted.
    let mut fresh = to(&a, 301, 101, ACK, b"fresh");
    fresh.options.timestamp = Some((5001, 1000));
    feed(&mut a, now, &fresh);
    assert_eq!(a.stats().recv_queue, 5);
    // RST is exempt from PAWS (RFC 7323 §5.3 R1).
    let mut rst = to(&a, 306, 0, RST, b"");
    rst.options.timestamp = Some((1, 0));
    feed(&mut a, now, &rst);
    assert_eq!(a.state(), TcpState::Closed);
}

#[test]
fn sack_blocks_report_out_of_order_data_most_recent_first() {
    let mut net = Net::default_pair();
    let now = net.now;
    let (b_una, a_ack) = (net.b.snd_nxt.raw(), net.b.rcv_nxt.raw());
    let base = a_ack;
    let mut seg1 = to(&net.b, base + 100, b_una, ACK, &[1; 50]);
    seg1.options.timestamp = Some((net.a.ts_recent, 0));
    feed(&mut net.b, now, &seg1);
    let r1 = drain(&mut net.b, now);
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].ack, base);
    assert_eq!(
        r1[0].options.sacks().collect::<Vec<_>>(),
        vec![SackBlock {
            left: SeqNum(base + 100),
            right: SeqNum(base + 150)
        }]
    );
    let mut seg2 = to(&net.b, base + 300, b_una, ACK, &[2; 20]);
    seg2.options.timestamp = Some((net.a.ts_recent, 0));
    feed(&mut net.b, now, &seg2);
    let r2 = drain(&mut net.b, now);
    let blocks: Vec<_> = r2[0].options.sacks().collect();
    assert_eq!(blocks[0].left, SeqNum(base + 300), "most recent first");
    assert_eq!(blocks[1].left, SeqNum(base + 100));
}

// ---------------------------------------------------------------------------
// Keepalive, Nagle, delayed ACK.
// ---------------------------------------------------------------------------

#[test]
fn keepalive_probes_then_times_out() {
    let options = SocketOptions {
        keepalive: true,
        keep_idle: OptionTime::from_secs(10),
        keep_interval: OptionTime::from_secs(2),
        keep_count: 3,
        ..SocketOptions::default()
    };
    let mut s = scripted_established(options);
    let start = s.now;
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let mut probe_times = Vec::new();
    let mut now = start;
    while s.conn.state() == TcpState::Established {
        now = s.conn.poll_timeout().expect("keepalive timer");
        s.conn.handle_timeout(now);
        for seg in drain(&mut s.conn, now) {
            if seg.ctl() == RST {
                continue;
            }
            // <SEQ=SND.NXT-1><ACK=RCV.NXT>, no data (RFC 1122 §4.2.3.6).
            assert_seg(&seg, o - 1, p, ACK);
            probe_times.push((now - start).as_secs());
        }
    }
    assert_eq!(probe_times, vec![10, 12, 14]);
    assert_eq!((now - start).as_secs(), 16);
    assert_eq!(s.conn.take_error(), Some(ConnError::TimedOut));
}

#[test]
fn keepalive_answer_resets_the_probe_count() {
    let options = SocketOptions {
        keepalive: true,
        keep_idle: OptionTime::from_secs(10),
        keep_interval: OptionTime::from_secs(2),
        keep_count: 2,
        ..SocketOptions::default()
    };
    let mut s = scripted_established(options);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    for _ in 0..5 {
        let t = s.conn.poll_timeout().expect("timer");
        s.now = t;
        s.conn.handle_timeout(t);
        let probes = drain(&mut s.conn, t);
        assert_eq!(probes.len(), 1);
        // The peer answers the probe.
        s.feed(&s.peer(p, o, ACK, b""));
    }
    assert_eq!(s.conn.state(), TcpState::Established);
}

#[test]
fn nagle_coalesces_small_writes_and_nodelay_does_not() {
    for nodelay in [false, true] {
        let mut s = scripted_established(SocketOptions {
            nodelay,
            ..SocketOptions::default()
        });
        let now = s.now;
        s.conn.send(now, b"a").expect("send");
        let first = drain(&mut s.conn, now);
        assert_eq!(first.len(), 1, "nothing in flight: sent at once");
        s.conn.send(now, b"b").expect("send");
        s.conn.send(now, b"c").expect("send");
        let second = drain(&mut s.conn, now);
        if nodelay {
            assert_eq!(second.len(), 1);
            assert_eq!(second[0].payload, b"bc");
        } else {
            assert!(
                second.is_empty(),
                "Nagle holds small data while 'a' is unacked"
            );
            let (p, o) = (s.peer_nxt, s.our_nxt);
            let replies = s.feed(&s.peer(p, o + 1, ACK, b""));
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0].payload, b"bc", "coalesced after the ACK");
        }
    }
}

#[test]
fn delayed_ack_after_quick_acks_fires_after_40ms() {
    let mut s = scripted_established(SocketOptions::default());
    let (mut p, o) = (s.peer_nxt, s.our_nxt);
    // The first segments are ACKed at once (quick-ACK mode).
    for _ in 0..QUICK_ACK_SEGMENTS {
        let replies = s.feed(&s.peer(p, o, ACK, b"x"));
        p += 1;
        assert_eq!(replies.len(), 1);
    }
    // Now a single small segment waits for the delayed-ACK timer.
    let replies = s.feed(&s.peer(p, o, ACK, b"y"));
    p += 1;
    assert!(replies.is_empty());
    assert_eq!(s.conn.poll_timeout(), Some(s.now + ms(40)));
    s.conn.handle_timeout(s.now + ms(39));
    assert!(drain(&mut s.conn, s.now + ms(39)).is_empty());
    s.conn.handle_timeout(s.now + ms(40));
    let ack = drain(&mut s.conn, s.now + ms(40));
    assert_eq!(ack.len(), 1);
    assert_seg(&ack[0], o, p, ACK);
    // Two full-sized segments are ACKed at once.
    let full = vec![0u8; 536];
    assert!(s.feed(&s.peer(p, o, ACK, &full)).is_empty());
    let replies = s.feed(&s.peer(p + 536, o, ACK, &full));
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], o, p + 1072, ACK);
    // Out-of-order data is ACKed at once.
    let replies = s.feed(&s.peer(p + 5000, o, ACK, b"z"));
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], o, p + 1072, ACK);
}

#[test]
fn receiver_window_update_after_reading_a_full_buffer() {
    let options = SocketOptions {
        recv_buffer: 4096,
        ..SocketOptions::default()
    };
    let mut s = scripted_established(options);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let replies = s.feed(&s.peer(p, o, ACK, &[7u8; 4096]));
    assert_eq!(replies.last().expect("ACK").window, 0, "buffer full");
    // Beyond the window: dropped and ACKed.
    let replies = s.feed(&s.peer(p + 4096, o, ACK, b"more"));
    assert_seg(&replies[0], o, p + 4096, ACK);
    assert_eq!(replies[0].window, 0);
    // Reading 100 bytes does not reopen the window (SWS avoidance)...
    let mut buf = [0u8; 4096];
    assert_eq!(s.conn.recv(s.now, &mut buf[..100], false), Ok(100));
    assert!(drain(&mut s.conn, s.now).is_empty());
    // ...reading enough does, with an immediate window update.
    assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(3996));
    let upd = drain(&mut s.conn, s.now);
    assert_eq!(upd.len(), 1);
    assert_eq!(upd[0].window, 4096);
}

/// A peer that filled our window but whose last bytes we never got (lost,
/// or cut because the window was rounded up to the scale unit) sends its
/// next segments at our right edge, RCV.NXT+RCV.WND: Linux puts pure ACKs
/// there (`tcp_acceptable_seq`). Their acknowledgments must count, as Linux
/// counts them (`tcp_sequence`); dropping them stalled a bidirectional
/// transfer until the application read.
#[test]
fn acks_at_the_right_edge_of_our_window_are_processed() {
    for with_data in [false, true] {
        let options = SocketOptions {
            recv_buffer: 4096,
            ..SocketOptions::default()
        };
        let mut s = scripted_established(options);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        let replies = s.feed(&s.peer(p, o, ACK, &[7u8; 3996]));
        assert_eq!(replies.last().expect("ACK").window, 100);
        // Our data goes out; the peer's last 100 bytes never arrive.
        assert_eq!(s.conn.send(s.now, b"hello"), Ok(5));
        let sent = drain(&mut s.conn, s.now);
        assert_eq!(sent.len(), 1);
        assert_eq!(s.conn.stats().send_queue, 5);
        // The peer's next segment starts at our right edge, p + 4096.
        let payload: &[u8] = if with_data { b"beyond" } else { b"" };
        s.feed(&s.peer(p + 4096, o + 5, ACK, payload));
        assert_eq!(
            s.conn.stats().send_queue,
            0,
            "ACK at the right edge (with data: {with_data}) must acknowledge our data"
        );
        // Its text (beyond the window) is not taken.
        assert_eq!(s.conn.stats().recv_queue, 3996);
    }
}

/// Window scaling rounds the window we advertise up to the scale unit
/// (RFC 7323 §2.4: it never shrinks), so it can exceed the free buffer by a
/// few bytes. The peer may send them, and they are kept, not dropped.
#[test]
fn data_in_a_window_rounded_up_by_scaling_is_kept() {
    let now = Instant::from_millis(1000);
    // SO_RCVBUF 256 KiB: a fixed buffer, scale 3.
    let options = SocketOptions {
        recv_buffer: 256 * 1024,
        recv_buffer_locked: true,
        ..SocketOptions::default()
    };
    let mut a = Connection::connect(params_with(A, B, 100, options), now);
    let _syn = out(&mut a, now).expect("SYN");
    let mut synack = to(&a, 300, 101, syn_ack(), b"");
    synack.options.window_scale = Some(0);
    feed(&mut a, now, &synack);
    let ack = out(&mut a, now).expect("ACK");
    // 256 KiB, scaled by 3.
    assert_eq!(ack.window, ((256 * 1024) >> 3) as u16);
    // The peer fills all but 3 bytes; our next window field is 1 (8 bytes).
    let mut seq = 301u32;
    let mut left = 256 * 1024 - 3;
    while left > 0 {
        let n = left.min(60_000);
        let data = to(&a, seq, 101, ACK, &vec![1u8; n]);
        feed(&mut a, now, &data);
        seq += n as u32;
        left -= n;
    }
    let replies = drain(&mut a, now + ms(200));
    let last = replies.last().expect("ACK");
    assert_eq!((last.ack, last.window), (seq, 1), "3 bytes rounded up to 8");
    // The peer sends the 8 bytes it was offered: all of them are kept.
    let offered = to(&a, seq, 101, ACK, b"12345678");
    feed(&mut a, now + ms(200), &offered);
    assert_eq!(a.stats().recv_queue, 256 * 1024 + 5);
    let replies = drain(&mut a, now + ms(400));
    assert_eq!(replies.last().expect("ACK").ack, seq + 8);
}

/// SACK blocks lengthen a segment's options beyond what the MSS allowed
/// for, so the payload of our last segment is cut short: the FIN must then
/// wait for the segment that carries the last byte (RFC 9293 §3.6). Set on
/// the short one, it claimed the sequence number of uncarried bytes and the
/// receiver ended the stream without them.
#[test]
fn fin_waits_when_sack_options_cut_the_last_segment_short() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now).expect("SYN");
    let mut synack = to(&a, 300, 101, syn_ack(), b"");
    synack.options.mss = Some(1460);
    synack.options.sack_permitted = true;
    feed(&mut a, now, &synack);
    let _ack = drain(&mut a, now);
    assert_eq!(a.stats().mss, 1460);
    // Out-of-order data from the peer: our segments now carry a SACK block.
    let _dup_ack = {
        let hole = to(&a, 401, 101, ACK, &[9u8; 50]);
        feed(&mut a, now, &hole);
        drain(&mut a, now)
    };
    // One MSS of data, then FIN.
    let data = pattern(1460);
    assert_eq!(a.send(now, &data), Ok(1460));
    a.shutdown(now, Shutdown::Write);
    let sent = drain(&mut a, now);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].options.sacks().next().is_some(),
        "SACK block carried"
    );
    assert!(sent[0].payload.len() < 1460, "options cut the payload");
    assert!(!sent[0].flags.fin(), "no FIN before the last byte");
    assert_eq!(sent[1].seq, 101 + sent[0].payload.len() as u32);
    assert!(sent[1].flags.fin());
    let carried: Vec<u8> = sent.iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(carried, data);
}

#[test]
fn readiness_follows_the_connection() {
    for_each_family(readiness_follows_the_connection_in_family);
}

fn readiness_follows_the_connection_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    assert!(!a.readiness().contains(Readiness::OUT), "connecting");
    let _ = out(&mut a, now);
    let seg = to(&a, 300, 101, syn_ack(), b"");
    feed(&mut a, now, &seg);
    assert!(a.readiness().contains(Readiness::OUT));
    assert!(!a.readiness().contains(Readiness::IN));
    let seg = to(&a, 301, 101, ACK, b"hi");
    feed(&mut a, now, &seg);
    assert!(a.readiness().contains(Readiness::IN));
    let seg = to(&a, 303, 101, fin_ack(), b"");
    feed(&mut a, now, &seg);
    let r = a.readiness();
    assert!(r.contains(Readiness::IN | Readiness::RDHUP));
    assert!(!r.contains(Readiness::HUP));
    a.shutdown(now, Shutdown::Write);
    assert!(a.readiness().contains(Readiness::HUP));
}

#[test]
fn send_and_recv_errors_by_state() {
    for_each_family(send_and_recv_errors_by_state_in_family);
}

fn send_and_recv_errors_by_state_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    assert_eq!(a.send(now, b"x"), Err(SendError::WouldBlock));
    let mut buf = [0u8; 4];
    assert_eq!(a.recv(now, &mut buf, false), Err(RecvError::WouldBlock));
    let _ = out(&mut a, now);
    let seg = to(&a, 300, 101, syn_ack(), b"");
    feed(&mut a, now, &seg);
    assert_eq!(a.recv(now, &mut buf, false), Err(RecvError::WouldBlock));
    let cap = a.options().send_buffer;
    assert_eq!(a.send(now, &vec![0u8; cap + 10]), Ok(cap));
    assert_eq!(a.send(now, b"x"), Err(SendError::WouldBlock));
    assert!(!a.readiness().contains(Readiness::OUT));
}

#[test]
fn icmp_fragmentation_needed_lowers_the_mss() {
    let mut s = scripted_established(SocketOptions::default());
    let now = s.now;
    s.conn.send(now, &[1u8; 500]).expect("send");
    let first = drain(&mut s.conn, now);
    assert_eq!(first[0].payload.len(), 500);
    s.conn.handle_icmp_unreachable(now, 4, 400, SeqNum(1001));
    assert_eq!(s.conn.stats().mss, 360);
    let again = drain(&mut s.conn, now);
    assert_eq!(again[0].seq, 1001);
    assert_eq!(again[0].payload.len(), 360);
    // Soft errors do not fail an established connection.
    s.conn.handle_icmp_unreachable(now, 1, 0, SeqNum(1001));
    assert_eq!(s.conn.state(), TcpState::Established);
}

#[test]
fn ipv6_mss_follows_the_ipv6_headers_and_packet_too_big() {
    FAMILY.with(|f| f.set(IpFamily::V6));
    let now = Instant::from_millis(1000);
    let mut conn = Connection::connect(params(A, B, 1000), now);
    let syn = out(&mut conn, now).expect("SYN");
    // RFC 8200 §8.3: MTU 1500 - 40 (IPv6) - 20 (TCP).
    assert_eq!(syn.options.mss, Some(1440));
    // A SYN,ACK without MSS: IPv6's default 1220 (RFC 9293 §3.7.1).
    let synack = to(&conn, 5000, 1001, syn_ack(), b"");
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert_eq!(conn.stats().mss, 1220);
    conn.send(now, &[7u8; 3000]).expect("send");
    let sent = drain(&mut conn, now);
    assert_eq!(sent[0].payload.len(), 1220);
    // RFC 8201 §4: a Packet Too Big below 1280 is ignored...
    conn.handle_packet_too_big(now, 1000, SeqNum(1001));
    assert_eq!(conn.stats().mss, 1220);
    // ...and one quoting no data in flight too (RFC 5927 §4.1).
    conn.handle_packet_too_big(now, 1280, SeqNum(900));
    assert_eq!(conn.stats().mss, 1220);
    FAMILY.with(|f| f.set(IpFamily::V4));
    // Over IPv4 a peer without MSS gets 536.
    let mut conn = Connection::connect(params(A, B, 1000), now);
    drain(&mut conn, now);
    let synack = to(&conn, 5000, 1001, syn_ack(), b"");
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert_eq!(conn.stats().mss, 536);
}

#[test]
fn ipv6_packet_too_big_lowers_the_mss_and_resends() {
    FAMILY.with(|f| f.set(IpFamily::V6));
    let now = Instant::from_millis(1000);
    let mut conn = Connection::connect(params(A, B, 1000), now);
    drain(&mut conn, now);
    let mut synack = to(&conn, 5000, 1001, syn_ack(), b"");
    synack.options.mss = Some(1440);
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert_eq!(conn.stats().mss, 1440);
    conn.send(now, &[7u8; 3000]).expect("send");
    let sent = drain(&mut conn, now);
    assert_eq!(sent[0].payload.len(), 1440);
    // A link with MTU 1400 on the path: MSS 1400 - 60.
    conn.handle_packet_too_big(now, 1400, SeqNum(1001));
    assert_eq!(conn.stats().mss, 1340);
    assert_eq!(conn.tcp_info(now).pmtu, 1400);
    let again = drain(&mut conn, now);
    assert_eq!(again[0].seq, 1001);
    assert_eq!(again[0].payload.len(), 1340);
    FAMILY.with(|f| f.set(IpFamily::V4));
}

#[test]
fn fin_beyond_a_hole_waits_for_the_data_before_it() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    // "world" + FIN arrives before "hello ".
    let replies = s.feed(&s.peer(p + 6, o, fin_ack(), b"world"));
    assert_eq!(
        s.conn.state(),
        TcpState::Established,
        "FIN not yet in order"
    );
    assert_seg(&replies[0], o, p, ACK);
    let replies = s.feed(&s.peer(p, o, ACK, b"hello "));
    assert_eq!(s.conn.state(), TcpState::CloseWait);
    assert_seg(&replies[0], o, p + 12, ACK);
    let mut buf = [0u8; 32];
    assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(11));
    assert_eq!(&buf[..11], b"hello world");
    assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(0));
}

#[test]
fn too_old_ack_gets_a_challenge_ack() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    // RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND.
    let replies = s.feed(&s.peer(p, o.wrapping_sub(200_000), ACK, b"data"));
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], o, p, ACK);
    assert_eq!(s.conn.stats().recv_queue, 0, "segment dropped");
}

/// An established connection with SACK on (no timestamps), Nagle off, and
/// a 10 ms handshake RTT sample: SRTT 10 ms, RTO 200 ms, MSS 536.
fn scripted_sack(options: SocketOptions) -> Scripted {
    let start = Instant::from_millis(1000);
    let mut conn = Connection::connect(
        params_with(
            A,
            B,
            1000,
            SocketOptions {
                nodelay: true,
                ..options
            },
        ),
        start,
    );
    let syn = out(&mut conn, start).expect("SYN");
    assert!(syn.options.sack_permitted);
    let now = start + ms(10);
    let mut synack = to(&conn, 5000, 1001, syn_ack(), b"");
    synack.options.sack_permitted = true;
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert!(conn.sack_enabled);
    assert_eq!(conn.stats().srtt, ms(10));
    Scripted {
        conn,
        now,
        peer_nxt: 5001,
        our_nxt: 1001,
    }
}

const MSS: u32 = 536;
const BASE: u32 = 1001;

impl Scripted {
    /// `<ACK=ack>` with SACK blocks `[l, r)` (segment indices from BASE).
    fn sack(&self, ack_segs: u32, blocks: &[(u32, u32)]) -> Seg {
        let mut seg = self.peer(self.peer_nxt, BASE + ack_segs * MSS, ACK, b"");
        seg.options
            .set_sacks(blocks.iter().map(|&(l, r)| SackBlock {
                left: SeqNum(BASE + l * MSS),
                right: SeqNum(BASE + r * MSS),
            }));
        seg
    }
    /// Sends `n` full segments now and checks they all went out.
    fn send_segments(&mut self, n: u32) {
        let data = pattern((n * MSS) as usize);
        self.conn.send(self.now, &data).expect("send");
        let sent = drain(&mut self.conn, self.now);
        assert_eq!(sent.len(), n as usize, "{sent:?}");
    }
    fn advance_to(&mut self, at: Instant) -> Vec<Seg> {
        self.now = at;
        self.conn.handle_timeout(at);
        drain(&mut self.conn, at)
    }
}

/// RFC 8985 §6.2: one SACK above a hole does not make it lost at once
/// (no reordering seen, fewer than DupThresh segments SACKed: the
/// reordering window is min_RTT/4 = 2.5 ms); the reordering timer marks it
/// lost when RTT + window have passed since it was sent, and it alone is
/// retransmitted. A full ACK ends recovery; nothing else is resent.
#[test]
fn rack_marks_a_hole_lost_after_the_reordering_window() {
    let mut s = scripted_sack(SocketOptions::default());
    let sent_at = s.now;
    s.send_segments(6);
    s.now = sent_at + ms(10);
    // Segment 1 (the second) is missing; segment 2 is SACKed.
    let replies = s.feed(&s.sack(1, &[(2, 3)]));
    assert!(replies.is_empty(), "{replies:?}");
    assert_eq!(
        s.conn.stats().recovery.reorder_window,
        Duration::from_micros(2500)
    );
    assert_eq!(
        s.conn.poll_timeout(),
        Some(sent_at + Duration::from_micros(12_500))
    );
    let rtx = s.advance_to(sent_at + Duration::from_micros(12_500));
    assert_eq!(rtx.len(), 1, "{rtx:?}");
    assert_eq!(
        (rtx[0].seq, rtx[0].payload.len()),
        (BASE + MSS, MSS as usize)
    );
    assert!(s.conn.in_recovery);
    assert_eq!(s.conn.stats().recovery.fast_recoveries, 1);
    // More SACKs: no more retransmissions, PRR lets new data out if any.
    assert!(
        s.feed(&s.sack(1, &[(2, 6)]))
            .iter()
            .all(|r| r.seq != BASE + MSS)
    );
    let replies = s.feed(&s.sack(6, &[]));
    assert!(replies.iter().all(|r| r.payload.is_empty()));
    assert_eq!(s.conn.stats().retransmits, 1);
    assert!(!s.conn.in_recovery);
}

/// With DupThresh (3) segments SACKed above it, the hole is lost at once
/// (RACK's reordering window is zero until reordering has been seen).
#[test]
fn rack_with_dupthresh_sacked_retransmits_at_once() {
    let mut s = scripted_sack(SocketOptions::default());
    let sent_at = s.now;
    s.send_segments(6);
    s.now = sent_at + ms(10);
    assert!(s.feed(&s.sack(1, &[(2, 4)])).is_empty());
    let rtx = s.feed(&s.sack(1, &[(2, 5)]));
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE + MSS), "{rtx:?}");
}

/// RACK detects a lost retransmission (RFC 8985 §2.2): once a segment
/// sent after the retransmission is SACKed and RTT + window have passed,
/// the retransmission is retransmitted again, without waiting for an RTO.
#[test]
fn rack_detects_a_lost_retransmission() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(8);
    s.now = t0 + ms(10);
    let rtx = s.feed(&s.sack(0, &[(1, 4)]));
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE));
    // The retransmission (sent at t0+10) is lost too; segment 4..8 SACKs
    // arrive later: the originals were sent at t0, so the RACK segment is
    // still older than the retransmission...
    s.now = t0 + ms(12);
    assert!(s.feed(&s.sack(0, &[(1, 8)])).iter().all(|r| r.seq != BASE));
    // ...until something sent after it is delivered: new data.
    s.send_segments(1);
    s.now = t0 + ms(25);
    let rtx = s.feed(&s.sack(0, &[(1, 9)]));
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE), "{rtx:?}");
    assert_eq!(s.conn.stats().recovery.rto_timeouts, 0);
    assert_eq!(s.conn.stats().retransmits, 2);
}

/// TLP (RFC 8985 §7): the last two segments of a flight are lost. The
/// probe timeout (2·SRTT = 20 ms after the ACK, well before the RTO)
/// retransmits the last segment; its SACK lets RACK repair the other one.
/// No retransmission timeout.
#[test]
fn tail_loss_probe_repairs_a_tail_without_timeout() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(10);
    // Segments 8 and 9 are lost; the ACK for the rest comes one RTT later.
    s.now = t0 + ms(10);
    assert!(s.feed(&s.sack(8, &[])).is_empty());
    let pto = s.now + ms(20);
    assert_eq!(s.conn.poll_timeout(), Some(pto));
    let probe = s.advance_to(pto);
    assert_eq!(probe.len(), 1, "{probe:?}");
    assert_eq!(probe[0].seq, BASE + 9 * MSS, "the last segment");
    assert_eq!(s.conn.stats().recovery.tlp_probes, 1);
    // Its SACK arrives: segment 8 was sent long before the probe, more
    // than RTT + reordering window ago: RACK marks it lost at once.
    s.now = pto + ms(10);
    let rtx = s.feed(&s.sack(8, &[(9, 10)]));
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE + 8 * MSS), "{rtx:?}");
    s.feed(&s.sack(10, &[]));
    assert_eq!(s.conn.stats().send_queue, 0);
    assert_eq!(s.conn.stats().recovery.rto_timeouts, 0);
}

/// A probe that was not needed (the ACK of the last segment was only
/// delayed) is reported by a D-SACK (RFC 2883): no window reduction; and
/// D-SACKs widen RACK's reordering window (RFC 8985 §6.2 step 4).
#[test]
fn dsack_of_a_probe_keeps_the_window_and_widens_the_reordering_window() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(4);
    s.now = t0 + ms(10);
    s.feed(&s.sack(2, &[]));
    let pto = s.now + ms(20);
    let probe = s.advance_to(pto);
    assert_eq!(probe[0].seq, BASE + 3 * MSS);
    let cwnd = s.conn.stats().cwnd;
    s.now = pto + ms(1);
    s.feed(&s.sack(4, &[]));
    // The D-SACK for the probe: a block below the cumulative ACK.
    s.now = pto + ms(10);
    s.feed(&s.sack(4, &[(3, 4)]));
    assert_eq!(s.conn.stats().recovery.dsacks_received, 1);
    assert_eq!(s.conn.stats().recovery.tlp_recoveries, 0);
    assert_eq!(
        s.conn.stats().cwnd,
        cwnd,
        "no reduction for a spurious probe"
    );
    assert_eq!(s.conn.flight().rack.reo_wnd_mult, 2);
}

/// PRR (RFC 6937): 10 segments in flight, the first lost, CUBIC's
/// ssthresh 0.7 × 10. RACK declares the loss after the reordering window,
/// with one segment SACKed (pipe 8 > ssthresh): PRR then sends about
/// ssthresh/RecoverFS of what each ACK delivers instead of a burst, and
/// recovery ends with cwnd = ssthresh.
#[test]
fn prr_paces_sending_during_recovery() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    let data = pattern(60 * MSS as usize);
    s.conn.send(s.now, &data).expect("send");
    assert_eq!(drain(&mut s.conn, s.now).len(), 10);
    s.now = t0 + ms(10);
    // The SACK lets one new segment out (it left the network: pipe 9 < cwnd 10).
    let early = s.feed(&s.sack(0, &[(1, 2)]));
    assert_eq!(
        early.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![BASE + 10 * MSS]
    );
    let rtx = s.advance_to(t0 + Duration::from_micros(12_500));
    assert_eq!(rtx.len(), 1, "only the fast retransmit: {rtx:?}");
    assert_eq!(rtx[0].seq, BASE);
    let ssthresh = s.conn.stats().ssthresh;
    assert_eq!(ssthresh, 7 * MSS as usize, "0.7 × 10 segments");
    let mut per_ack = Vec::new();
    for k in 2..10 {
        let replies = s.feed(&s.sack(0, &[(1, 1 + k)]));
        per_ack.push(replies.iter().filter(|r| !r.payload.is_empty()).count());
    }
    // RecoverFS is 11 segments (the SACK let one more out). prr_out
    // follows CEIL(prr_delivered × 7/11), the retransmission included:
    // 8 segments delivered, 6 sent, never more than one per ACK; once pipe
    // is down to ssthresh the slow-start bound holds it there.
    assert_eq!(
        per_ack,
        vec![0, 1, 0, 0, 1, 1, 1, 1],
        "segments sent per ACK"
    );
    assert_eq!(1 + per_ack.iter().sum::<usize>(), 6);
    assert!(s.conn.in_recovery);
    s.now = t0 + ms(20);
    let all = s.peer(s.peer_nxt, s.conn.snd_nxt.raw(), ACK, b"");
    s.feed(&all);
    assert!(!s.conn.in_recovery);
    assert_eq!(s.conn.stats().cwnd, ssthresh);
}

/// After a timeout the SACKed segments are not resent (RFC 6675 §5.1 and
/// Linux keep the scoreboard unless the peer reneged), and ssthresh is cut
/// once per window: a second timeout of the same data leaves it alone
/// (RFC 5681 §3.1).
#[test]
fn timeout_keeps_sack_information_and_cuts_ssthresh_once() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(6);
    s.now = t0 + ms(10);
    // Segments 0 and 1 lost, 2..6 SACKed (DupThresh: lost at once); the
    // retransmissions are lost too.
    let rtx = s.feed(&s.sack(0, &[(2, 6)]));
    let first_ssthresh = s.conn.stats().ssthresh;
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE), "{rtx:?}");
    let rto_at = s.conn.rtx_deadline.expect("RTO armed");
    let rtx = s.advance_to(rto_at);
    assert_eq!(s.conn.stats().recovery.rto_timeouts, 1);
    assert_eq!(
        s.conn.stats().ssthresh,
        first_ssthresh,
        "cut once for this window"
    );
    assert_eq!(rtx.len(), 1, "cwnd 1 segment: {rtx:?}");
    assert_eq!(rtx[0].seq, BASE);
    s.now = rto_at + ms(10);
    let rtx = s.feed(&s.sack(1, &[(2, 6)]));
    assert_eq!(
        rtx.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![BASE + MSS],
        "SACKed data is not resent"
    );
    let rto_again = s.conn.rtx_deadline.expect("RTO armed");
    s.advance_to(rto_again);
    assert_eq!(s.conn.stats().recovery.rto_timeouts, 2);
    assert_eq!(
        s.conn.stats().ssthresh,
        first_ssthresh,
        "a repeated timeout does not cut again"
    );
}

#[test]
fn advertised_window_never_shrinks() {
    let options = SocketOptions {
        recv_buffer: 8192,
        ..SocketOptions::default()
    };
    let mut s = scripted_established(options);
    let (mut p, o) = (s.peer_nxt, s.our_nxt);
    let mut right_edge = p + 8192;
    for _ in 0..20 {
        let replies = s.feed(&s.peer(p, o, ACK, &[0u8; 300]));
        p += 300;
        for r in replies {
            let edge = r.ack + u32::from(r.window);
            assert!(SeqNum(edge).ge(SeqNum(right_edge)), "window shrank");
            right_edge = edge;
        }
        // Read a little now and then.
        let mut buf = [0u8; 100];
        let _ = s.conn.recv(s.now, &mut buf, false);
    }
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let syn = s.peer(p + 10, 0, SYN, b"");
    assert_eq!(s.feed(&syn).len(), 1);
    assert!(s.feed(&syn).is_empty(), "second challenge within 500 ms");
    let rst = s.peer(p + 10, 0, RST, b"");
    assert!(s.feed(&rst).is_empty());
    s.now += ms(500);
    let replies = s.feed(&rst);
    assert_eq!(replies.len(), 1);
    assert_seg(&replies[0], o, p, ACK);
    // Data segments out of the window are always answered.
    let far = s.peer(p.wrapping_add(500_000), o, ACK, b"data");
    assert_eq!(s.feed(&far).len(), 1);
    assert_eq!(s.feed(&far).len(), 1);
}

#[test]
fn limited_transmit_sends_new_data_on_the_first_duplicate_acks() {
    let mut s = scripted_established(SocketOptions {
        nodelay: true,
        ..SocketOptions::default()
    });
    let now = s.now;
    let mss = 536usize;
    // More than the initial window (10 segments of 536) is queued.
    s.conn.send(now, &pattern(mss * 14)).expect("send");
    assert_eq!(drain(&mut s.conn, now).len(), 10, "cwnd-limited");
    let p = s.peer_nxt;
    let una = 1001 + mss as u32;
    assert!(
        !s.feed(&s.peer(p, una, ACK, b"")).is_empty(),
        "new ACK opens cwnd"
    );
    let before = s.conn.snd_nxt;
    // First and second duplicate ACKs: one new segment each (RFC 3042).
    let r1 = s.feed(&s.peer(p, una, ACK, b""));
    assert_eq!(r1.len(), 1);
    assert!(
        SeqNum(r1[0].seq).ge(before),
        "new data, not a retransmission"
    );
    let r2 = s.feed(&s.peer(p, una, ACK, b""));
    assert_eq!(r2.len(), 1);
    assert_eq!(s.conn.stats().retransmits, 0);
    // Third: fast retransmit of the first unacknowledged segment.
    let r3 = s.feed(&s.peer(p, una, ACK, b""));
    assert_eq!(r3[0].seq, una);
    assert_eq!(s.conn.stats().retransmits, 1);
}

/// Throughput check of the state machine alone (run with --ignored).
#[test]
#[ignore]
fn bulk_transfer_throughput() {
    let mut net = Net::default_pair();
    let data = pattern(64 * 1024 * 1024);
    let start = std::time::Instant::now();
    let got = transfer(&mut net, &data, Duration::from_secs(3600));
    let elapsed = start.elapsed();
    assert_eq!(got.len(), data.len());
    eprintln!(
        "64 MiB in {elapsed:?}: {:.1} MiB/s, {} segments logged",
        64.0 / elapsed.as_secs_f64(),
        net.log.len()
    );
}

#[test]
fn sack_recovery_repairs_several_holes_per_window_without_timeout() {
    let mut net = Net::default_pair();
    let dropped = std::rc::Rc::new(core::cell::Cell::new(0u64));
    let counter = dropped.clone();
    let mut seen = std::collections::HashSet::new();
    net.drop_filter = Some(Box::new(move |from_a, s: &Seg, idx| {
        let first_time = seen.insert(s.seq);
        let drop =
            from_a && !s.payload.is_empty() && matches!(idx % 97, 10 | 12 | 13 | 30) && first_time;
        if drop {
            counter.set(counter.get() + 1);
        }
        !drop
    }));
    let start = net.now;
    let data = pattern(1024 * 1024);
    let got = transfer(&mut net, &data, Duration::from_secs(300));
    assert!(got == data, "data corrupted");
    assert!(dropped.get() > 20);
    assert_eq!(
        net.a.stats().retransmits,
        dropped.get(),
        "no spurious or timeout retransmissions"
    );
    // With zero link delay nothing should wait for a retransmission timeout.
    assert!(
        net.now - start < Duration::from_secs(1),
        "took {:?}",
        net.now - start
    );
}

#[test]
fn closed_connection_answers_segments_with_rst() {
    for_each_family(closed_connection_answers_segments_with_rst_in_family);
}

fn closed_connection_answers_segments_with_rst_in_family() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    s.conn.abort(s.now, ConnError::Aborted);
    let rst = drain(&mut s.conn, s.now);
    assert_seg(&rst[0], o, 0, RST);
    // RFC 9293 §3.10.7.1: with ACK: <SEQ=SEG.ACK><CTL=RST>.
    let replies = s.feed(&s.peer(p, o, ACK, b"late"));
    assert_seg(&replies[0], o, 0, RST);
    // Without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    let replies = s.feed(&s.peer(p, 0, FIN, b"abc"));
    assert_seg(&replies[0], 0, p + 4, RST | ACK);
    // A RST is never answered.
    assert!(s.feed(&s.peer(p, 0, RST, b"")).is_empty());
    assert!(s.conn.is_finished());
}

#[test]
fn syn_sent_ignores_segments_without_syn_or_rst() {
    for_each_family(syn_sent_ignores_segments_without_syn_or_rst_in_family);
}

fn syn_sent_ignores_segments_without_syn_or_rst_in_family() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let _syn = out(&mut a, now);
    let seg = to(&a, 300, 0, FIN, b"data");
    feed(&mut a, now, &seg);
    assert_eq!(a.state(), TcpState::SynSent);
    assert!(out(&mut a, now).is_none());
    // A RST without ACK is ignored in SYN-SENT.
    let seg = to(&a, 300, 0, RST, b"");
    feed(&mut a, now, &seg);
    assert_eq!(a.state(), TcpState::SynSent);
}

/// An established connection with timestamps on, whose handshake RTT sample
/// was 0 (so the RTO sits at min_rto), at t = 1 s. TSval = milliseconds
/// (ts_offset 0).
fn scripted_with_timestamps() -> Scripted {
    let now = Instant::from_millis(1000);
    let mut conn = Connection::connect(params(A, B, 1000), now);
    let syn = out(&mut conn, now).expect("SYN");
    assert_eq!(syn.options.timestamp, Some((1000, 0)));
    let mut synack = to(&conn, 5000, 1001, syn_ack(), b"");
    synack.options.timestamp = Some((7000, 1000));
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert_eq!(conn.stats().rto, ms(200));
    Scripted {
        conn,
        now,
        peer_nxt: 5001,
        our_nxt: 1001,
    }
}

/// The `rto_inflation_seed` bug, segment by segment: data goes out at
/// t = 1.0 s, the RTO retransmits it at 1.2 s and 1.6 s, and then an ACK
/// covering everything arrives echoing the TSval of the original
/// transmission (the peer had the data; its ACKs were lost, and the
/// duplicate did not update its TS.Recent). `now - TSecr` = 610 ms would
/// include the backoff: no sample (RFC 6298 §3, RFC 7323 §4.1, RFC 3522),
/// and the backed-off RTO stays (RFC 6298 §5.7). An ACK echoing a TSval
/// from after the retransmission is a valid sample and clears the backoff.
#[test]
fn ack_echoing_a_timestamp_older_than_the_retransmission_gives_no_rtt_sample() {
    let mut s = scripted_with_timestamps();
    let start = s.now;
    s.conn.send(start, &[7u8; 100]).expect("send");
    let first = drain(&mut s.conn, start);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].options.timestamp.map(|t| t.0), Some(1000));
    let mut now: Instant;
    for (expected_at, expected_rto_after) in [(1200, ms(400)), (1600, ms(800))] {
        now = s.conn.poll_timeout().expect("RTO");
        assert_eq!(now, Instant::from_millis(expected_at));
        s.conn.handle_timeout(now);
        let rtx = drain(&mut s.conn, now);
        assert_eq!(rtx.len(), 1);
        assert_eq!(rtx[0].seq, 1001);
        assert_eq!(
            rtx[0].options.timestamp.map(|t| t.0),
            Some(expected_at as u32)
        );
        assert_eq!(s.conn.stats().rto, expected_rto_after);
    }
    let srtt_before = s.conn.stats().srtt;

    now = Instant::from_millis(1610);
    let mut stale = s.peer(5001, 1101, ACK, b"");
    stale.options.timestamp = Some((7100, 1000));
    feed(&mut s.conn, now, &stale);
    assert_eq!(
        s.conn.stats().send_queue,
        0,
        "the ACK still acknowledges the data"
    );
    assert_eq!(
        s.conn.stats().srtt,
        srtt_before,
        "no sample from TSecr 1000"
    );
    assert_eq!(s.conn.stats().rto, ms(800), "the backed-off RTO stays");

    // New data at 1.7 s, acknowledged 20 ms later echoing its own TSval.
    now = Instant::from_millis(1700);
    s.conn.send(now, &[8u8; 100]).expect("send");
    assert_eq!(drain(&mut s.conn, now).len(), 1);
    now = Instant::from_millis(1720);
    let mut fresh = s.peer(5001, 1201, ACK, b"");
    fresh.options.timestamp = Some((7200, 1700));
    feed(&mut s.conn, now, &fresh);
    // SRTT was 0 (the handshake sample): 7/8 * 0 + 1/8 * 20 ms.
    assert_eq!(s.conn.stats().srtt, Duration::from_micros(2500));
    assert_eq!(
        s.conn.stats().rto,
        ms(200),
        "a valid sample clears the backoff"
    );
}

/// Karn for the handshake: a SYN,ACK echoing the first SYN's TSval after
/// the SYN was retransmitted gives no sample (the estimator keeps no
/// sample), while one echoing the retransmitted SYN's TSval does. Without a
/// sample the RTO restarts at 3 s when data transmission begins (RFC 6298
/// §5.7); either way the lost SYN leaves an initial window of one segment
/// (RFC 5681 §3.1, RFC 6928 §2).
#[test]
fn syn_ack_echoing_the_first_syn_after_a_retransmission_gives_no_sample() {
    for (echo, expected_srtt, expected_rto) in [
        (1000u32, Duration::ZERO, Duration::from_secs(3)),
        // A 10 ms sample: 10 + 4 * 5 ms = 30 ms, raised to min_rto.
        (2000, ms(10), ms(200)),
    ] {
        let start = Instant::from_millis(1000);
        let mut a = Connection::connect(params(A, B, 100), start);
        assert_eq!(
            out(&mut a, start).expect("SYN").options.timestamp,
            Some((1000, 0))
        );
        let now = a.poll_timeout().expect("SYN timer");
        a.handle_timeout(now);
        let rtx = out(&mut a, now).expect("SYN again");
        assert_eq!(rtx.options.timestamp, Some((2000, 0)));
        let now = Instant::from_millis(2010);
        let mut synack = to(&a, 300, 101, syn_ack(), b"");
        synack.options.timestamp = Some((9000, echo));
        feed(&mut a, now, &synack);
        assert_eq!(a.state(), TcpState::Established);
        assert_eq!(a.stats().srtt, expected_srtt, "TSecr {echo}");
        assert_eq!(a.stats().rto, expected_rto, "TSecr {echo}");
        let mss = usize::from(a.stats().mss);
        assert_eq!(a.stats().cwnd, mss, "TSecr {echo}");
        // Only one segment of a larger write goes out before an ACK.
        drain(&mut a, now);
        a.send(now, &[1u8; 10_000]).expect("send");
        let data = drain(&mut a, now);
        assert_eq!(data.len(), 1, "TSecr {echo}");
        assert_eq!(data[0].payload.len(), mss);
    }
}

/// RFC 6298 §5.7 without timestamps: the timed SYN was retransmitted, so
/// Karn leaves no sample; the RTO is 3 s once established, not the 2 s the
/// SYN backoff reached, and the window is one segment. A handshake without
/// loss keeps the RFC 6928 initial window.
#[test]
fn lost_syn_means_three_second_rto_and_one_segment_window() {
    let start = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), start);
    out(&mut a, start).expect("SYN");
    let now = a.poll_timeout().expect("SYN timer");
    a.handle_timeout(now);
    out(&mut a, now).expect("SYN again");
    assert_eq!(a.stats().rto, ms(2000));
    let now = now + ms(10);
    let synack = to(&a, 300, 101, syn_ack(), b"");
    feed(&mut a, now, &synack);
    assert_eq!(a.state(), TcpState::Established);
    assert_eq!(a.stats().srtt, Duration::ZERO);
    assert_eq!(a.stats().rto, Duration::from_secs(3));
    assert_eq!(a.stats().cwnd, usize::from(a.stats().mss));

    let mut b = Connection::connect(params(A, B, 100), start);
    out(&mut b, start).expect("SYN");
    let synack = to(&b, 300, 101, syn_ack(), b"");
    feed(&mut b, start + ms(10), &synack);
    assert_eq!(b.stats().srtt, ms(10));
    assert_eq!(b.stats().cwnd, crate::tcp::congestion::initial_window(536));
}

/// The passive side: our SYN,ACK timed out once before the handshake's ACK.
#[test]
fn lost_syn_ack_means_three_second_rto_and_one_segment_window() {
    let mut s = scripted(TcpState::SynReceived);
    let now = s.conn.poll_timeout().expect("SYN,ACK timer");
    s.conn.handle_timeout(now);
    let rtx = drain(&mut s.conn, now);
    assert_eq!(rtx.len(), 1);
    assert_seg(&rtx[0], 1000, 5000, syn_ack());
    s.now = now + ms(5);
    s.feed(&s.peer(5000, 1001, ACK, b""));
    assert_eq!(s.conn.state(), TcpState::Established);
    assert_eq!(s.conn.stats().rto, Duration::from_secs(3));
    assert_eq!(s.conn.stats().cwnd, usize::from(s.conn.stats().mss));
}

/// What counts as discarded (RFC 9293 §3.10.7): every segment whose content
/// is not used. In-order data, a pure ACK and an exact RST are used.
#[test]
fn discarded_segments_are_counted_by_kind() {
    let mut s = scripted(TcpState::Established);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    s.feed(&s.peer(p, o, ACK, b"data"));
    s.feed(&s.peer(p + 4, o, ACK, b""));
    assert_eq!(s.conn.segments_discarded(), 0, "used segments");
    let p = p + 4;
    let cases: [(&str, Seg); 4] = [
        ("no ACK bit", s.peer(p, 0, TcpFlags::PSH, b"x")),
        ("SYN: challenge ACK", s.peer(p, o, SYN, b"")),
        ("RST in window, not exact", s.peer(p + 10, 0, RST, b"")),
        (
            "RST outside the window",
            s.peer(p.wrapping_add(1 << 30), 0, RST, b""),
        ),
    ];
    for (n, (what, seg)) in cases.iter().enumerate() {
        s.feed(seg);
        assert_eq!(s.conn.segments_discarded(), n as u64 + 1, "{what}");
        assert_eq!(s.conn.state(), TcpState::Established, "{what}");
    }
    s.feed(&s.peer(p, o, RST, b""));
    assert_eq!(s.conn.state(), TcpState::Closed);
    assert_eq!(s.conn.segments_discarded(), 4, "the exact RST was used");
    s.feed(&s.peer(p, o, ACK, b"late"));
    assert_eq!(s.conn.segments_discarded(), 5, "anything reaching CLOSED");
}

/// Feeds `seg` with the urgent pointer field set to `urgent`.
fn feed_urgent(s: &mut Scripted, seg: &Seg, urgent: u16) {
    let mut repr = seg.repr();
    repr.urgent = urgent;
    s.conn.handle_segment(s.now, &repr);
    drain(&mut s.conn, s.now);
}

fn read_all(conn: &mut Connection, now: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    match conn.recv(now, &mut buf, false) {
        Ok(n) => buf[..n].to_vec(),
        Err(RecvError::WouldBlock) => Vec::new(),
        Err(e) => panic!("recv: {e}"),
    }
}

const URG_ACK: TcpFlags = ACK.union(TcpFlags::URG);

/// Linux's urgent data (RFC 6093 §3): the pointer is one past the urgent
/// byte; a read stops before the mark, the byte is read with MSG_OOB once,
/// and the next read continues after it. POLLPRI while it waits,
/// SIOCATMARK at the mark.
#[test]
fn urgent_byte_is_read_out_of_band_and_reads_stop_at_the_mark() {
    let mut s = scripted(TcpState::Established);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let seg = s.peer(p, o, URG_ACK, b"abc!def");
    feed_urgent(&mut s, &seg, 4);
    assert!(s.conn.readiness().contains(Readiness::PRI));
    assert!(!s.conn.at_mark());
    assert_eq!(
        read_all(&mut s.conn, s.now),
        b"abc",
        "stops before the mark"
    );
    assert!(s.conn.at_mark());
    assert_eq!(
        s.conn.recv_urgent(true),
        Ok(Some(b'!')),
        "MSG_PEEK leaves it"
    );
    assert_eq!(s.conn.recv_urgent(false), Ok(Some(b'!')));
    assert!(!s.conn.readiness().contains(Readiness::PRI));
    assert_eq!(s.conn.recv_urgent(false), Err(RecvError::NoUrgentData));
    assert!(s.conn.at_mark(), "the read position is still at the mark");
    assert_eq!(
        read_all(&mut s.conn, s.now),
        b"def",
        "the urgent byte is not inline"
    );
    assert!(!s.conn.at_mark());
    assert_eq!(s.conn.segments_discarded(), 0);
}

/// SO_OOBINLINE: the byte stays in the stream (reads still stop at the
/// mark) and MSG_OOB is EINVAL, as on Linux.
#[test]
fn oob_inline_keeps_the_urgent_byte_in_the_stream() {
    let mut s = scripted(TcpState::Established);
    s.conn
        .set_option(s.now, SockOption::OobInline(true))
        .expect("SO_OOBINLINE");
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let seg = s.peer(p, o, URG_ACK, b"abc!def");
    feed_urgent(&mut s, &seg, 4);
    assert_eq!(read_all(&mut s.conn, s.now), b"abc");
    assert!(s.conn.at_mark());
    assert_eq!(s.conn.recv_urgent(false), Err(RecvError::NoUrgentData));
    assert_eq!(read_all(&mut s.conn, s.now), b"!def");
}

/// A plain read at the mark steps over the unread urgent byte, which stays
/// readable with MSG_OOB (tcpd's deliberate difference: Linux forgets it,
/// but the daemon does the plain reads of streamed sockets, not the
/// application) until it is read or a new mark replaces it.
#[test]
fn a_plain_read_at_the_mark_skips_the_urgent_byte_which_stays_out_of_band() {
    let mut s = scripted(TcpState::Established);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let seg = s.peer(p, o, URG_ACK, b"ab!cd");
    feed_urgent(&mut s, &seg, 3);
    assert_eq!(read_all(&mut s.conn, s.now), b"ab");
    assert_eq!(read_all(&mut s.conn, s.now), b"cd");
    assert!(!s.conn.at_mark());
    assert_eq!(s.conn.recv_urgent(false), Ok(Some(b'!')));
    assert_eq!(s.conn.recv_urgent(false), Err(RecvError::NoUrgentData));
    // The urgent byte alone at the read position: a read skips it and
    // reports nothing to read yet; poll does not call that readable.
    let p = p + 5;
    let seg = s.peer(p, o, URG_ACK, b"!");
    feed_urgent(&mut s, &seg, 1);
    assert!(!s.conn.readiness().contains(Readiness::IN));
    assert!(s.conn.readiness().contains(Readiness::PRI));
    assert_eq!(read_all(&mut s.conn, s.now), b"");
    assert!(!s.conn.at_mark(), "the read stepped over it");
    assert_eq!(s.conn.recv_urgent(false), Ok(Some(b'!')));
    assert!(!s.conn.readiness().contains(Readiness::PRI));
}

/// The pointer may run ahead of the data (RFC 9293 §3.8.5: the urgent
/// notification can come before the byte): MSG_OOB is EAGAIN until the
/// segment holding it arrives. A pointer into data already received is
/// no new mark, nor is one without the URG flag; pointer 0 names SEG.SEQ.
#[test]
fn urgent_pointer_ahead_of_the_data_and_ignored_pointers() {
    let mut s = scripted(TcpState::Established);
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let seg = s.peer(p, o, URG_ACK, b"0123");
    feed_urgent(&mut s, &seg, 10);
    assert_eq!(s.conn.recv_urgent(false), Err(RecvError::WouldBlock));
    assert!(!s.conn.readiness().contains(Readiness::PRI));
    let seg = s.peer(p + 4, o, ACK, b"45678X-tail");
    feed_urgent(&mut s, &seg, 0);
    assert_eq!(read_all(&mut s.conn, s.now), b"012345678");
    assert_eq!(s.conn.recv_urgent(false), Ok(Some(b'X')));
    assert_eq!(read_all(&mut s.conn, s.now), b"-tail");

    // Pointer without URG, and a pointer into received data: ignored.
    let p = p + 15;
    let seg = s.peer(p, o, ACK, b"plain");
    feed_urgent(&mut s, &seg, 2);
    // A retransmission overlapping "in" whose pointer names 'i'.
    let seg = s.peer(p + 3, o, URG_ACK, b"inMORE");
    feed_urgent(&mut s, &seg, 1);
    assert_eq!(s.conn.recv_urgent(false), Err(RecvError::NoUrgentData));
    assert_eq!(read_all(&mut s.conn, s.now), b"plainMORE");
    // Pointer 0: the byte at SEG.SEQ (Linux).
    let p = p + 9;
    let seg = s.peer(p, o, URG_ACK, b"Zrest");
    feed_urgent(&mut s, &seg, 0);
    assert_eq!(s.conn.recv_urgent(false), Ok(Some(b'Z')));
    assert_eq!(read_all(&mut s.conn, s.now), b"rest");
}

/// send(MSG_OOB): URG with the pointer one past the last byte written, on
/// every segment below it until it is acknowledged; Nagle does not hold
/// urgent data.
#[test]
fn send_oob_sets_the_urgent_pointer_past_the_last_byte() {
    let mut s = scripted(TcpState::Established);
    let o = s.our_nxt;
    s.conn.send(s.now, b"small").expect("send");
    let first = out_urgent(&mut s.conn, s.now).expect("data");
    assert_eq!((first.0.payload.as_slice(), first.1), (&b"small"[..], None));
    // Nagle would hold this (a small segment is unacknowledged), but it is urgent.
    s.conn
        .send_with(s.now, b"hey!", SendFlags::OOB)
        .expect("send OOB");
    let (seg, urgent) = out_urgent(&mut s.conn, s.now).expect("urgent data goes at once");
    assert_eq!(seg.payload, b"hey!");
    assert!(seg.flags.urg());
    assert_eq!(urgent, Some(4), "one past the urgent byte, from SEG.SEQ");
    // A pure ACK sent before the urgent byte is acknowledged carries no URG:
    // its sequence number (SND.NXT) is not below the pointer.
    let (p, _) = (s.peer_nxt, s.our_nxt);
    let ack = s.peer(p, o + 5, ACK, b"x");
    feed(&mut s.conn, s.now, &ack);
    let segs = drain_urgent(&mut s.conn, s.now + ms(500));
    assert!(segs.iter().all(|(_, u)| u.is_none()), "{segs:?}");
    // The peer acknowledges everything: urgent mode ends.
    let ack = s.peer(p + 1, o + 9, ACK, b"");
    feed(&mut s.conn, s.now, &ack);
    s.conn.send(s.now, b"after").expect("send");
    let (seg, urgent) = out_urgent(&mut s.conn, s.now).expect("data");
    assert_eq!((seg.payload.as_slice(), urgent), (&b"after"[..], None));
}

/// The send MSS is the smaller of the peer's MSS option and our MTU less
/// 40 (RFC 9293 §3.7.1, RFC 6691), less the timestamps option when on.
#[test]
fn a_peer_mss_above_our_mtu_is_clamped() {
    let now = Instant::from_millis(1000);
    let mut a = Connection::connect(params(A, B, 100), now);
    let syn = out(&mut a, now).expect("SYN");
    assert_eq!(syn.options.mss, Some(1460), "MTU 1500 - 40");
    let mut synack = to(&a, 300, 101, syn_ack(), b"");
    synack.options.mss = Some(8960);
    feed(&mut a, now, &synack);
    assert_eq!(a.stats().mss, 1460);
    a.send(now, &[3u8; 20_000]).expect("send");
    let data = drain(&mut a, now);
    assert!(!data.is_empty());
    assert!(data.iter().all(|s| s.payload.len() <= 1460), "{data:?}");
}

/// Sender SWS avoidance as Linux does it (issue 10): with nothing in
/// flight, a usable window below one MSS is used at once (RFC 9293
/// §3.8.6.2.1 would wait for the override timeout); with data in flight a
/// small window still waits. Then Minshall's Nagle (Linux's
/// `tcp_nagle_check`): the tail of a write goes right after a full segment,
/// because no earlier small segment is unacknowledged; a second small
/// segment waits for the first one's ACK.
#[test]
fn sender_sends_a_small_window_at_once_and_nagle_is_minshall() {
    let mut s = scripted_established(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    // The peer shrinks its offer to 100 bytes (max window stays 65535).
    let mut small = s.peer(p, o, ACK, b"");
    small.window = 100;
    s.feed(&small);
    s.conn.send(s.now, &[5u8; 1000]).expect("send");
    let sent = drain(&mut s.conn, s.now);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].seq, sent[0].payload.len()), (o, 100));
    // In flight now: the rest waits (no silly 100-byte dribble).
    let mut same = s.peer(p, o, ACK, b"");
    same.window = 200;
    s.feed(&same);
    assert!(
        drain(&mut s.conn, s.now).is_empty(),
        "small window, data in flight"
    );
    // Acknowledged with a window of 40000: a full segment and the 364-byte
    // tail go together (the 100-byte segment is acknowledged).
    let mut open = s.peer(p, o + 100, ACK, b"");
    open.window = 40_000;
    let out = s.feed(&open);
    assert_eq!(
        out.iter()
            .map(|x| (x.seq, x.payload.len()))
            .collect::<Vec<_>>(),
        vec![(o + 100, 536), (o + 636, 364)]
    );
    // Another small write waits for the 364 bytes' ACK (classic Nagle
    // behaviour for a second small segment).
    s.conn.send(s.now, &[6u8; 10]).expect("send");
    assert!(drain(&mut s.conn, s.now).is_empty());
    let mut acked = s.peer(p, o + 1000, ACK, b"");
    acked.window = 40_000;
    let last = s.feed(&acked);
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!((last[0].seq, last[0].payload.len()), (o + 1000, 10));
}

/// Which TSecr our ACKs carry (RFC 7323 §4.2, §4.3): the TSval of the
/// in-order segment that last advanced the window; an out-of-order segment
/// does not change it (case B), the segment that fills the hole does (case
/// C), and a wholly duplicate segment does not (it lies outside the window,
/// RFC 7323 §5.3 R2 rejects it before R3 would record its TSval) — unless it
/// ends exactly at Last.ACK.sent (as Linux, see `on_segment_synchronized`).
#[test]
fn acks_echo_ts_recent_per_rfc_7323() {
    let mut s = scripted_with_timestamps();
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let echo = |replies: &[Seg]| {
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].options.timestamp.map(|(_, tsecr)| tsecr)
    };
    let with_ts = |s: &Scripted, seq: u32, data: &[u8], tsval: u32| {
        let mut seg = s.peer(seq, o, ACK, data);
        seg.options.timestamp = Some((tsval, 1000));
        seg
    };
    let in_order = with_ts(&s, p, &[1; 10], 7010);
    assert_eq!(echo(&s.feed(&in_order)), Some(7010));
    let above_hole = with_ts(&s, p + 100, &[3; 10], 7020);
    let replies = s.feed(&above_hole);
    assert_eq!(echo(&replies), Some(7010), "case B: out of order");
    assert_eq!(replies[0].ack, p + 10);
    let filler = with_ts(&s, p + 10, &[2; 90], 7030);
    let replies = s.feed(&filler);
    assert_eq!(echo(&replies), Some(7030), "case C: the hole's filler");
    assert_eq!(replies[0].ack, p + 110);
    let duplicate = with_ts(&s, p, &[1; 10], 7040);
    let replies = s.feed(&duplicate);
    assert_eq!(echo(&replies), Some(7030), "a duplicate leaves TS.Recent");
    assert_eq!(replies[0].ack, p + 110);
    // But a retransmission ending exactly at RCV.NXT = Last.ACK.sent (our
    // ACK of it was lost) meets RFC 7323 §4.3's rule: its ACK echoes it.
    let last_again = with_ts(&s, p + 100, &[3; 10], 7050);
    let replies = s.feed(&last_again);
    assert_eq!(
        echo(&replies),
        Some(7050),
        "retransmission of the last segment"
    );
    assert_eq!(replies[0].ack, p + 110);
    assert_eq!(s.conn.stats().recv_queue, 110, "nothing delivered twice");
}

/// In-order segments that arrive in one batch (before the next transmit
/// opportunity: one turn's TUN reads, one instant of the simulation) get
/// one ACK of the batch's last byte, sent at that opportunity with the
/// window as the application's reads left it: no ACK per two segments with
/// a window that did not move, and no separate window update after a read
/// (Linux's backlog coalescing; see `schedule_data_ack`).
#[test]
fn a_batch_of_in_order_segments_gets_one_ack_with_the_window_after_the_reads() {
    // A buffer whose window fits the unscaled field.
    let mut s = scripted_established(SocketOptions {
        recv_buffer: 16 * 1024,
        recv_buffer_locked: true,
        ..SocketOptions::default()
    });
    s.conn.quick_acks = 0;
    let p = s.peer_nxt;
    let seg = vec![1u8; 536];
    for k in 0..6u32 {
        let data = s.peer(p + k * 536, s.our_nxt, ACK, &seg);
        feed(&mut s.conn, s.now, &data);
    }
    let unread = drain(&mut s.conn, s.now);
    assert_eq!(
        unread.iter().map(|a| a.ack).collect::<Vec<_>>(),
        vec![p + 6 * 536],
        "one ACK for the batch"
    );
    for k in 6..12u32 {
        let data = s.peer(p + k * 536, s.our_nxt, ACK, &seg);
        feed(&mut s.conn, s.now, &data);
    }
    let mut buf = vec![0u8; 12 * 536];
    assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(12 * 536));
    let read = drain(&mut s.conn, s.now);
    assert_eq!(
        read.iter().map(|a| a.ack).collect::<Vec<_>>(),
        vec![p + 12 * 536],
        "one ACK for the batch and the read"
    );
    assert!(
        read[0].window > unread[0].window,
        "the ACK carries the window the read opened: {} vs {}",
        read[0].window,
        unread[0].window
    );
}

/// A reader that lags (less than half the buffer free, and the window
/// not moving right by what arrived): the ACK owed for every second
/// full-sized segment waits for the read, which sends it with the window it
/// opened, or for the delayed-ACK timer (Linux's `__tcp_ack_snd_check` and
/// `tcp_cleanup_rbuf`; see `owed_ack_is_due`).
#[test]
fn a_lagging_readers_acks_go_with_its_reads_or_the_delayed_ack_timer() {
    let mut s = scripted_established(SocketOptions {
        recv_buffer: 16 * 1024,
        recv_buffer_locked: true,
        ..SocketOptions::default()
    });
    s.conn.quick_acks = 0;
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let seg = vec![1u8; 536];
    let mut acks = Vec::new();
    for k in 0..24u32 {
        let data = s.peer(p + k * 536, o, ACK, &seg);
        acks.extend(s.feed(&data));
    }
    // Every second segment while at least half of the 16 KiB is free (up
    // to 15 segments unread), then nothing.
    assert_eq!(
        acks.iter().map(|a| a.ack).collect::<Vec<_>>(),
        (1..=7u32).map(|k| p + 2 * k * 536).collect::<Vec<_>>()
    );
    let mut buf = vec![0u8; 24 * 536];
    assert_eq!(s.conn.recv(s.now, &mut buf, false), Ok(24 * 536));
    let read = drain(&mut s.conn, s.now);
    assert_eq!(read.len(), 1, "one ACK with the read: {read:?}");
    assert_seg(&read[0], o, p + 24 * 536, ACK);
    assert!(read[0].window > acks[6].window);
    // Never read: the delayed-ACK timer sends the held ACK.
    let start = s.now;
    for k in 24..48u32 {
        let data = s.peer(p + k * 536, o, ACK, &seg);
        s.feed(&data);
    }
    assert_eq!(s.conn.poll_timeout(), Some(start + ms(40)));
    s.conn.handle_timeout(start + ms(40));
    let timed = drain(&mut s.conn, start + ms(40));
    assert_eq!(timed.len(), 1);
    assert_seg(&timed[0], o, p + 48 * 536, ACK);
}

/// RFC 5681 §4.2 in quick-ACK mode (the connection's first segments, and
/// after out-of-order data while the peer recovers): each segment of a
/// batch gets its own ACK, in order. One stretch ACK for the batch would
/// make a lost ACK cost a recovering sender its ACK clock (the collapse of
/// sim_goodput.rs's random-loss cases).
#[test]
fn a_batch_in_quick_ack_mode_gets_an_ack_per_segment() {
    let mut s = scripted_established(SocketOptions::default());
    assert!(s.conn.quick_ack());
    let p = s.peer_nxt;
    let seg = vec![1u8; 536];
    for k in 0..6u32 {
        let data = s.peer(p + k * 536, s.our_nxt, ACK, &seg);
        feed(&mut s.conn, s.now, &data);
    }
    let acks = drain(&mut s.conn, s.now);
    assert_eq!(
        acks.iter().map(|a| a.ack).collect::<Vec<_>>(),
        (1..=6u32).map(|k| p + k * 536).collect::<Vec<_>>()
    );
}

/// Issue 10, bug 1 (RFC 7323 §4.3 and Appendix D, RFC 5961 §5.2): a FIN
/// that acknowledges data never sent, with a far-future TSval, is answered
/// with an ACK and dropped — and must not move TS.Recent. Before, the ACK
/// echoed that TSval and PAWS then rejected every valid segment.
#[test]
fn unacceptable_ack_does_not_update_ts_recent() {
    let mut s = scripted_with_timestamps();
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let mut bogus = s.peer(p, o.wrapping_add(100_000), fin_ack(), b"");
    bogus.options.timestamp = Some((2_000_000_000, 1000));
    let replies = s.feed(&bogus);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_seg(&replies[0], o, p, ACK);
    assert_eq!(
        replies[0].options.timestamp.map(|t| t.1),
        Some(7000),
        "the ACK echoes the old TS.Recent"
    );
    assert_eq!(s.conn.state(), TcpState::Established, "the FIN was dropped");
    // The next in-order segment with a normal TSval is accepted.
    let mut data = s.peer(p, o, ACK, b"hello");
    data.options.timestamp = Some((7010, 1000));
    s.feed(&data);
    assert_eq!(
        s.conn.stats().recv_queue,
        5,
        "PAWS did not reject valid data"
    );
}

/// Issue 10, bug 2 (RFC 5681 §4.2): a FIN beyond a hole is out-of-order
/// data: it gets an immediate duplicate ACK (with the SACK block when SACK
/// is on), in every state that still receives.
#[test]
fn out_of_order_fin_gets_an_immediate_duplicate_ack() {
    for state in [
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
    ] {
        let mut s = scripted(state);
        let (p, o) = (s.peer_nxt, s.our_nxt);
        // A bare FIN: the data before it (10 bytes) is missing.
        let replies = s.feed(&s.peer(p + 10, s.una(), fin_ack(), b""));
        assert_eq!(replies.len(), 1, "{state}: {replies:?}");
        assert_seg(&replies[0], o, p, ACK);
        assert_eq!(s.conn.state(), state, "{state}: the FIN waits for the hole");
    }
}

/// Issue 10, bug 5 (RFC 7323 §3.2): a RST on a connection that negotiated
/// timestamps carries the option (TSval, TSecr = TS.Recent), as Linux's;
/// without timestamps it carries none.
#[test]
fn rst_carries_timestamps_when_negotiated() {
    let mut s = scripted_with_timestamps();
    s.conn.abort(s.now, ConnError::Reset);
    let rst = drain(&mut s.conn, s.now);
    assert_eq!(rst.len(), 1);
    assert!(rst[0].flags.rst());
    assert_eq!(rst[0].options.timestamp, Some((1000, 7000)));
    let mut plain = scripted(TcpState::Established);
    plain.conn.abort(plain.now, ConnError::Reset);
    let rst = drain(&mut plain.conn, plain.now);
    assert!(rst[0].flags.rst());
    assert_eq!(rst[0].options.timestamp, None);
}

/// Issue 10, bug 3: TCP_MAXSEG set before connect clamps the MSS the SYN
/// advertises and the segments sent (as Linux's user_mss).
#[test]
fn tcp_maxseg_clamps_advertised_and_sent_mss() {
    let now = Instant::from_millis(1000);
    let options = SocketOptions {
        max_segment: Some(700),
        nodelay: true,
        ..SocketOptions::default()
    };
    let mut conn = Connection::connect(params_with(A, B, 1000, options), now);
    let syn = out(&mut conn, now).expect("SYN");
    assert_eq!(syn.options.mss, Some(700));
    let mut synack = to(&conn, 5000, 1001, syn_ack(), b"");
    synack.options.mss = Some(1460);
    feed(&mut conn, now, &synack);
    drain(&mut conn, now);
    assert_eq!(conn.stats().mss, 700);
    conn.send(now, &[0u8; 2000]).expect("send");
    let sent = drain(&mut conn, now);
    assert!(sent.iter().all(|s| s.payload.len() <= 700), "{sent:?}");
    assert_eq!(sent[0].payload.len(), 700);
}

/// TCP_INFO (issue 10, Linux's `tcp_info`): the negotiated options, the
/// MSS, RTT and window in Linux's units, and the loss-recovery view
/// (ca_state, sacked, lost, retrans) as a recovery unfolds.
#[test]
fn tcp_info_follows_linux_fields_through_a_recovery() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    let info = s.conn.tcp_info(t0);
    assert_eq!(info.state, TcpState::Established);
    assert_eq!(info.ca_state, crate::socket::CaState::Open);
    assert_eq!(info.options, crate::socket::TcpInfoOptions::SACK);
    assert_eq!((info.snd_mss, info.advmss, info.pmtu), (536, 1460, 576));
    assert_eq!((info.rtt_us, info.rto_us), (10_000, 200_000));
    assert_eq!(info.snd_cwnd, 10, "initial window, segments");
    assert_eq!(info.snd_ssthresh, 0x7fff_ffff, "TCP_INFINITE_SSTHRESH");
    s.send_segments(6);
    s.now = t0 + ms(10);
    s.feed(&s.sack(1, &[(2, 3)]));
    let info = s.conn.tcp_info(s.now);
    assert_eq!(info.ca_state, crate::socket::CaState::Disorder);
    assert_eq!((info.unacked, info.sacked, info.lost), (5, 1, 0));
    s.advance_to(t0 + Duration::from_micros(12_500));
    let info = s.conn.tcp_info(s.now);
    assert_eq!(info.ca_state, crate::socket::CaState::Recovery);
    assert_eq!((info.sacked, info.lost, info.retrans), (1, 0, 1));
    assert_eq!(info.total_retrans, 1);
    assert_eq!(info.last_data_sent_ms, 0);
    assert_eq!(info.bytes_acked, 536);
}

/// TCP_CORK (Linux): full segments go, a partial one waits until the cork
/// is removed or 200 ms have passed; MSG_MORE holds the same way until a
/// send without it.
#[test]
fn cork_and_msg_more_hold_partial_segments() {
    use crate::socket::SendFlags;
    let mut s = scripted_established(SocketOptions {
        nodelay: true,
        ..SocketOptions::default()
    });
    let now = s.now;
    s.conn
        .set_option(now, SockOption::Cork(true))
        .expect("cork");
    s.conn.send(now, &[1u8; 700]).expect("send");
    let out1 = drain(&mut s.conn, now);
    assert_eq!(
        out1.iter().map(|x| x.payload.len()).collect::<Vec<_>>(),
        vec![536],
        "the full segment only"
    );
    s.conn
        .set_option(now, SockOption::Cork(false))
        .expect("uncork");
    let out2 = drain(&mut s.conn, now);
    assert_eq!(
        out2.iter().map(|x| x.payload.len()).collect::<Vec<_>>(),
        vec![164],
        "uncorking pushes"
    );
    let (p, o) = (s.peer_nxt, s.our_nxt);
    s.feed(&s.peer(p, o + 700, ACK, b""));
    // Corked again: the 200 ms ceiling.
    s.conn
        .set_option(now, SockOption::Cork(true))
        .expect("cork");
    s.conn.send(now, &[2u8; 10]).expect("send");
    assert!(drain(&mut s.conn, now).is_empty());
    assert_eq!(s.conn.poll_timeout(), Some(now + ms(200)));
    s.conn.handle_timeout(now + ms(200));
    let released = drain(&mut s.conn, now + ms(200));
    assert_eq!(released.len(), 1, "released after 200 ms");
    assert_eq!(released[0].payload.len(), 10);
    s.conn
        .set_option(now, SockOption::Cork(false))
        .expect("uncork");
    s.feed(&s.peer(p, o + 710, ACK, b""));
    // MSG_MORE: held until a send without it.
    let t = now + ms(300);
    s.conn
        .send_with(t, b"GET / HTTP/1.1\r\n", SendFlags::MORE)
        .expect("send");
    assert!(drain(&mut s.conn, t).is_empty(), "MSG_MORE holds");
    s.conn
        .send_with(t, b"\r\n", SendFlags::empty())
        .expect("send");
    let req = drain(&mut s.conn, t);
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].payload, b"GET / HTTP/1.1\r\n\r\n", "one segment");
}

/// MSG_EOR (Linux): data after the end of a record never joins the
/// record's last segment, even when both would fit in one.
#[test]
fn msg_eor_is_a_segment_boundary() {
    use crate::socket::SendFlags;
    let mut s = scripted_established(SocketOptions {
        nodelay: true,
        ..SocketOptions::default()
    });
    // Zero window first so that both writes are queued together.
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let mut shut = s.peer(p, o, ACK, b"");
    shut.window = 0;
    s.feed(&shut);
    let now = s.now;
    s.conn
        .send_with(now, b"record-one", SendFlags::EOR)
        .expect("send");
    s.conn
        .send_with(now, b"record-two", SendFlags::EOR)
        .expect("send");
    s.conn.send(now, b"tail").expect("send");
    let mut open = s.peer(p, o, ACK, b"");
    open.window = 65535;
    let out = s.feed(&open);
    assert_eq!(
        out.iter().map(|x| x.payload.clone()).collect::<Vec<_>>(),
        vec![
            b"record-one".to_vec(),
            b"record-two".to_vec(),
            b"tail".to_vec()
        ]
    );
}

/// TCP_NOTSENT_LOWAT and SO_RCVLOWAT (Linux's tcp_poll): writable only
/// while fewer unsent bytes than the mark are queued; readable only with
/// the low-water mark of bytes in (or at EOF).
#[test]
fn low_water_marks_gate_readiness() {
    let mut s = scripted_established(SocketOptions {
        nodelay: true,
        ..SocketOptions::default()
    });
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let now = s.now;
    let mut shut = s.peer(p, o, ACK, b"");
    shut.window = 0;
    s.feed(&shut);
    s.conn
        .set_option(now, SockOption::NotSentLowat(Some(100)))
        .expect("set");
    assert!(s.conn.readiness().contains(Readiness::OUT));
    s.conn.send(now, &[0u8; 150]).expect("send");
    assert!(
        !s.conn.readiness().contains(Readiness::OUT),
        "150 unsent >= 100"
    );
    assert_eq!(s.conn.send(now, b"x"), Err(SendError::WouldBlock));
    s.conn
        .set_option(now, SockOption::RecvLowat(10))
        .expect("set");
    s.feed(&s.peer(p, o, ACK, b"12345"));
    assert!(!s.conn.readiness().contains(Readiness::IN), "5 < 10");
    s.feed(&s.peer(p + 5, o, ACK, b"67890"));
    assert!(s.conn.readiness().contains(Readiness::IN));
}

/// TCP_QUICKACK (Linux): turning it on sends a delayed ACK at once and
/// ACKs the next segments immediately; off, delayed ACKs resume.
#[test]
fn quickack_sends_the_owed_ack_and_reads_back() {
    let mut s = scripted_established(SocketOptions::default());
    s.conn.quick_acks = 0;
    let (p, _) = (s.peer_nxt, s.our_nxt);
    let replies = s.feed(&s.peer(p, s.our_nxt, ACK, b"x"));
    assert!(replies.is_empty(), "delayed");
    assert!(!s.conn.quick_ack());
    s.conn
        .set_option(s.now, SockOption::QuickAck(true))
        .expect("set");
    assert_eq!(
        drain(&mut s.conn, s.now).len(),
        1,
        "the owed ACK goes at once"
    );
    assert!(s.conn.quick_ack());
    s.conn
        .set_option(s.now, SockOption::QuickAck(false))
        .expect("set");
    let replies = s.feed(&s.peer(p + 1, s.our_nxt, ACK, b"y"));
    assert!(replies.is_empty(), "delayed again");
}

/// RFC 2883 §4: duplicate data (wholly or partly below RCV.NXT) is
/// reported with a D-SACK block, first and once, as Linux's receiver does.
#[test]
fn duplicate_data_is_reported_with_a_dsack() {
    let mut s = scripted_sack(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    let data = s.peer(p, o, ACK, &[1u8; 100]);
    s.feed(&data);
    let replies = s.feed(&data);
    let ack = replies.last().expect("ACK");
    assert_eq!(ack.ack, p + 100);
    assert_eq!(
        ack.options
            .sacks()
            .next()
            .map(|b| (b.left.raw(), b.right.raw())),
        Some((p, p + 100)),
        "a D-SACK below the cumulative ACK"
    );
    // Partly duplicate: [p+50, p+150): the first 50 bytes are the D-SACK.
    let replies = s.feed(&s.peer(p + 50, o, ACK, &[2u8; 100]));
    let ack = replies.last().expect("ACK");
    assert_eq!(
        ack.options
            .sacks()
            .next()
            .map(|b| (b.left.raw(), b.right.raw())),
        Some((p + 50, p + 100))
    );
    // Reported once.
    s.conn
        .set_option(s.now, SockOption::QuickAck(true))
        .expect("set");
    let replies = s.feed(&s.peer(p + 150, o, ACK, b"x"));
    assert!(
        replies.iter().all(|r| r.options.sacks().next().is_none()),
        "{replies:?}"
    );
}

/// The reordering that fools RACK: 10 segments in flight, the first held
/// back in the network; three SACKed above it make it lost at once (no
/// reordering seen yet: RACK's window is zero), it is retransmitted and
/// the window reduced. The original arrives after all (a full ACK), then
/// the retransmission, which the peer reports as a duplicate (D-SACK,
/// RFC 2883). That report covers every retransmission of the episode
/// (RFC 3708 §3): the reduction is undone — cwnd and ssthresh as before.
/// No timestamps here, so Eifel cannot see it earlier.
#[test]
fn dsack_of_every_retransmission_undoes_the_reduction() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(10);
    let (cwnd, ssthresh) = (s.conn.stats().cwnd, s.conn.stats().ssthresh);
    assert_eq!((cwnd, ssthresh), (10 * MSS as usize, usize::MAX));
    s.now = t0 + ms(10);
    let rtx = s.feed(&s.sack(0, &[(1, 4)]));
    assert_eq!(rtx.first().map(|r| r.seq), Some(BASE), "{rtx:?}");
    assert!(s.conn.in_recovery);
    assert_eq!(s.conn.stats().ssthresh, 7 * MSS as usize);
    // The original arrives: everything is acknowledged.
    s.now = t0 + ms(12);
    s.feed(&s.sack(10, &[]));
    assert!(!s.conn.in_recovery);
    assert_eq!(
        s.conn.stats().cwnd,
        7 * MSS as usize,
        "reduced until proven"
    );
    assert_eq!(s.conn.stats().recovery.undos, 0);
    // The retransmission arrives as a duplicate: D-SACK below the ACK.
    s.now = t0 + ms(20);
    s.feed(&s.sack(10, &[(0, 1)]));
    let stats = s.conn.stats();
    assert_eq!((stats.cwnd, stats.ssthresh), (cwnd, ssthresh), "undone");
    assert_eq!(stats.recovery.undos, 1);
    assert_eq!(stats.recovery.spurious_rtos, 0);
    // RACK learnt the path reorders: its window is no longer zero.
    assert!(s.conn.flight().rack.reordering_seen);
    // A second D-SACK of the same data changes nothing.
    s.feed(&s.sack(10, &[(0, 1)]));
    assert_eq!(s.conn.stats().recovery.undos, 1);
}

/// The same episode with a real loss: the retransmission is what the
/// peer needed, and the only D-SACK reports data that was not
/// retransmitted (the network duplicated an original). Nothing is undone.
#[test]
fn a_real_loss_or_a_duplicated_original_is_not_undone() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(10);
    s.now = t0 + ms(10);
    s.feed(&s.sack(0, &[(1, 4)]));
    s.now = t0 + ms(21);
    s.feed(&s.sack(10, &[]));
    s.now = t0 + ms(22);
    s.feed(&s.sack(10, &[(5, 6)]));
    let stats = s.conn.stats();
    assert_eq!(stats.recovery.dsacks_received, 1);
    assert_eq!(stats.recovery.undos, 0);
    assert_eq!(stats.ssthresh, 7 * MSS as usize);
}

/// Two retransmissions in one episode: the reduction is undone only when
/// both are reported as duplicates (RFC 3708 §3: all of them spurious).
#[test]
fn undo_waits_for_every_retransmission_to_be_reported() {
    let mut s = scripted_sack(SocketOptions::default());
    let t0 = s.now;
    s.send_segments(10);
    s.now = t0 + ms(10);
    // Segments 0 and 2 missing, 1 and 3..6 SACKed: both lost at once.
    let rtx = s.feed(&s.sack(0, &[(3, 6), (1, 2)]));
    let seqs: Vec<u32> = rtx.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![BASE, BASE + 2 * MSS], "{rtx:?}");
    s.now = t0 + ms(12);
    s.feed(&s.sack(10, &[]));
    s.feed(&s.sack(10, &[(0, 1)]));
    assert_eq!(s.conn.stats().recovery.undos, 0, "one of two reported");
    s.feed(&s.sack(10, &[(2, 3)]));
    assert_eq!(s.conn.stats().recovery.undos, 1);
    assert_eq!(s.conn.stats().ssthresh, usize::MAX);
}

/// A D-SACK rides on an ACK whose number covers it (RFC 2883 §4: the
/// block lies below the cumulative ACK). When one batch of arrivals owes
/// ACKs for earlier points of it (every second segment) and also carried a
/// duplicate, the D-SACK must not go on an earlier point's ACK: below that
/// ACK's number it would read as an ordinary SACK of data above it.
#[test]
fn dsack_goes_on_an_ack_that_covers_it() {
    let mut s = scripted_sack(SocketOptions::default());
    let (p, o) = (s.peer_nxt, s.our_nxt);
    s.feed(&s.peer(p, o, ACK, &[1u8; 100]));
    // One batch: four new segments, then the last one again.
    let mut last = None;
    for k in 1..5u32 {
        let seg = s.peer(p + 100 * k, o, ACK, &[1u8; 100]);
        feed(&mut s.conn, s.now, &seg);
        last = Some(seg);
    }
    feed(&mut s.conn, s.now, &last.expect("sent"));
    let replies = drain(&mut s.conn, s.now);
    assert!(
        replies.len() >= 2,
        "ACK points and the final ACK: {replies:?}"
    );
    let mut reported = 0;
    for reply in &replies {
        if let Some(block) = reply.options.sacks().next() {
            assert!(block.right.raw() <= reply.ack, "{reply:?}");
            assert_eq!((block.left.raw(), block.right.raw()), (p + 400, p + 500));
            reported += 1;
        }
    }
    assert_eq!(reported, 1, "{replies:?}");
}

/// An idle connection carries no loss-recovery state and no buffers: its
/// [`Flight`] is allocated with its first data (and stays), its state
/// transitions leave no queue behind once drained, nothing is traced,
/// and no occasional feature's state ([`Occasional`]) is made.
#[test]
fn an_idle_connection_keeps_no_flight_and_no_buffers() {
    let mut net = Net::default_pair();
    let mut drained = Vec::new();
    for conn in [&mut net.a, &mut net.b] {
        conn.drain_state_changes(&mut drained);
        assert!(conn.flight.is_none(), "a flight after the handshake");
        assert_eq!(conn.state_changes.capacity(), 0);
        assert!(conn.notes.is_none());
        assert!(
            conn.occasional.is_none(),
            "occasional state after the handshake"
        );
    }
    // Keepalive probes and their answers (pure ACKs) allocate nothing either.
    net.a
        .set_option(net.now, SockOption::KeepIdle(Duration::from_secs(1)))
        .unwrap();
    net.a
        .set_option(net.now, SockOption::KeepAlive(true))
        .unwrap();
    net.advance(Duration::from_secs(5));
    assert!(net.a.flight.is_none() && net.b.flight.is_none());
    assert!(net.a.occasional.is_none() && net.b.occasional.is_none());
    // Data does, on the side that sent it.
    net.a.send(net.now, b"x").unwrap();
    net.exchange();
    assert!(net.a.flight.is_some());
    assert!(net.b.flight.is_none());
}
