//! Tests of the connection state machine, segment by segment.
//!
//! The harness builds connections with exact ISNs, feeds them `TcpRepr`
//! segments, and parses what `poll_transmit` emits with `TcpRepr::parse`
//! (so checksums are verified too). `Net` wires two connections together
//! with a virtual clock and an optional filter that drops segments.

use super::*;
use crate::wire::{SackBlock, TcpFlags, TcpOptions};
use core::net::Ipv4Addr;

const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
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
    }
}

fn params_with(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    iss: u32,
    options: SocketOptions,
) -> ConnectionParams {
    ConnectionParams {
        local,
        remote,
        iss: SeqNum(iss),
        ts_offset: 0,
        options,
        config: config(),
    }
}

fn params(local: SocketAddrV4, remote: SocketAddrV4, iss: u32) -> ConnectionParams {
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
        TcpFlags(self.flags.0 & !TcpFlags::PSH.0)
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
    let mut buf = [0u8; 1500];
    let n = conn.poll_transmit(now, &mut buf)?;
    assert!(n <= 1480, "segment exceeds the MTU less the IP header: {n}");
    let repr = TcpRepr::parse(&buf[..n], *conn.local().ip(), *conn.remote().ip())
        .expect("emitted segments parse");
    Some(Seg {
        src_port: repr.src_port,
        dst_port: repr.dst_port,
        seq: repr.seq.raw(),
        ack: repr.ack.raw(),
        flags: repr.flags,
        window: repr.window,
        options: repr.options,
        payload: repr.payload.to_vec(),
    })
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

/// Two connections wired back to back with a virtual clock.
struct Net {
    a: Connection,
    b: Connection,
    now: Instant,
    /// Segments seen, in order: (from A?, segment).
    log: Vec<(bool, Seg)>,
    /// Return false to drop a segment (arguments: from A?, segment, index among that side's segments).
    drop_filter: Option<Box<dyn FnMut(bool, &Seg, usize) -> bool>>,
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
    assert_eq!(mss, 1460 - 12, "MSS less the timestamps option");
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
    let mut net = Net::default_pair();
    // Drop every 50th data segment from A.
    net.drop_filter = Some(Box::new(|from_a, s: &Seg, idx| {
        !(from_a && !s.payload.is_empty() && idx % 50 == 7)
    }));
    let data = pattern(1024 * 1024);
    let got = transfer(&mut net, &data, Duration::from_secs(300));
    assert!(got == data, "data corrupted");
    assert!(net.a.stats().retransmits > 0);
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
