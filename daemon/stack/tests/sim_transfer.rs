//! End-to-end transfers between two stacks over the simulated link: every
//! byte must arrive exactly once and in order in both directions (SHA-256 of
//! what was sent equals SHA-256 of what was received), the active closer must
//! sit in TIME-WAIT for 2×MSL (RFC 9293 §3.3.2, §3.10.7.4) while the passive
//! closer ends CLOSED, and afterwards neither stack holds any socket.
//!
//! The proptest varies the seed, the loss rate (0–20 %) and the sizes; the
//! link also reorders, duplicates and corrupts (single-bit flips, which the
//! IPv4/TCP checksums must catch). A failing case prints its seed, and the
//! same seed replays the same run. The transfers run over IPv6 too
//! (`Tuning::family`), and many connections mix both families on one
//! dual-stack listener.

mod common;

use common::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::net::{SocketAddr, SocketAddrV4};
use tcpd_stack::{
    Duration, Instant, IpFamily, RecvError, SendError, Shutdown, SockOption, SocketHandle,
    StackEvent, TcpState,
};

const SERVER_PORT: u16 = 80;

/// One application endpoint: sends its data, then shuts down writing (after
/// seeing EOF if `passive`); reads until EOF; closes once both are done.
#[derive(Debug)]
struct App {
    side: Side,
    /// Shut down only after the peer's FIN: this side is the passive closer.
    passive: bool,
    socket: Option<SocketHandle>,
    to_send: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    write_shut: bool,
    eof: bool,
    closed: bool,
    /// Most bytes read per `drive` (a slow reader makes the window close).
    read_limit: usize,
}

impl App {
    fn new(side: Side, passive: bool, to_send: Vec<u8>) -> Self {
        App {
            side,
            passive,
            socket: None,
            to_send,
            sent: 0,
            received: Vec::new(),
            write_shut: false,
            eof: false,
            closed: false,
            read_limit: usize::MAX,
        }
    }

    /// Does whatever the socket allows now.
    fn drive(&mut self, sim: &mut Sim) {
        let Some(socket) = self.socket else { return };
        if self.closed {
            return;
        }
        let now = sim.now;
        let stack = sim.stack(self.side);
        while self.sent < self.to_send.len() {
            let chunk = &self.to_send[self.sent..(self.sent + 64 * 1024).min(self.to_send.len())];
            match stack.send(now, socket, chunk) {
                Ok(n) => self.sent += n,
                Err(SendError::WouldBlock) | Err(SendError::NotConnected) => break,
                Err(e) => panic!("{:?} send failed: {e}", self.side),
            }
        }
        if self.sent == self.to_send.len() && !self.write_shut && (self.eof || !self.passive) {
            stack
                .shutdown(now, socket, Shutdown::Write)
                .unwrap_or_else(|e| panic!("{:?} shutdown failed: {e}", self.side));
            self.write_shut = true;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut read = 0;
        while !self.eof && read < self.read_limit {
            let want = buf.len().min(self.read_limit - read);
            match stack.recv(now, socket, &mut buf[..want], false) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    read += n;
                    self.received.extend_from_slice(&buf[..n]);
                }
                Err(RecvError::WouldBlock) | Err(RecvError::NotConnected) => break,
                Err(e) => panic!("{:?} recv failed: {e}", self.side),
            }
        }
        if self.sent == self.to_send.len() && !self.write_shut && self.eof {
            stack
                .shutdown(now, socket, Shutdown::Write)
                .unwrap_or_else(|e| panic!("{:?} shutdown failed: {e}", self.side));
            self.write_shut = true;
        }
        if self.eof && self.write_shut {
            stack
                .close(now, socket)
                .unwrap_or_else(|e| panic!("{:?} close failed: {e}", self.side));
            self.closed = true;
        }
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// When `side` entered and left TIME-WAIT, from its state-change events.
fn time_wait_span(events: &[(Instant, StackEvent)]) -> (Option<Instant>, Option<Instant>) {
    let mut entered = None;
    let mut left = None;
    for (at, event) in events {
        if let StackEvent::StateChange { old, new, .. } = *event {
            if new == TcpState::TimeWait {
                entered = Some(*at);
            }
            if old == TcpState::TimeWait {
                left = Some(*at);
            }
        }
    }
    (entered, left)
}

struct Outcome {
    sim: Sim,
    /// Virtual time from connect until both applications had closed.
    data_done: Duration,
    /// The largest SRTT the client's connection reported while the
    /// applications ran (a sanity check on RTT sampling under loss).
    max_srtt_a: Duration,
    /// The client's SRTT when last seen before its application closed.
    final_srtt_a: Duration,
}

/// Runs a full connection: A (client) sends `a_len` bytes and B (server)
/// `b_len` bytes concurrently. A shuts down writing once its data is queued;
/// B only once it has also seen A's FIN, so A is the active closer.
fn run_transfer(seed: u64, link: LinkConfig, a_len: usize, b_len: usize) -> Outcome {
    run_transfer_tuned(seed, link, a_len, b_len, Tuning::default())
}

/// Server-side knobs that exercise flow control.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// SO_RCVBUF of the server's connection (inherited from the listener).
    server_recv_buffer: Option<usize>,
    /// Bytes the server reads per simulation step.
    server_read_limit: usize,
    /// Virtual time the whole run (transfer, close and TIME-WAIT) may take.
    max_time: Duration,
    /// The family of both sockets.
    family: IpFamily,
}

/// B's server endpoint in `family`.
fn server_addr(family: IpFamily) -> SocketAddr {
    match family {
        IpFamily::V4 => SocketAddr::from((ADDR_B, SERVER_PORT)),
        IpFamily::V6 => SocketAddr::from((ADDR6_B, SERVER_PORT)),
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            server_recv_buffer: None,
            server_read_limit: usize::MAX,
            max_time: DEFAULT_MAX_TIME,
            family: IpFamily::V4,
        }
    }
}

/// The virtual-time budget of a transfer (2×MSL of TIME-WAIT included).
/// Most runs need seconds; the tail is long because Karn's rule keeps a
/// backed-off RTO until a valid RTT sample (RFC 6298 §5.7): at 20 % loss in
/// both directions, a fresh segment or its ACK can be lost several rounds
/// in a row, each round costing up to the 120 s maximum RTO (seed
/// 3448645797703591252 at 20 % needs ~940 s). RTO inflation, the bug this
/// budget once hid, is checked by the SRTT assertions instead.
const DEFAULT_MAX_TIME: Duration = Duration::from_secs(3600);

fn run_transfer_tuned(
    seed: u64,
    link: LinkConfig,
    a_len: usize,
    b_len: usize,
    tuning: Tuning,
) -> Outcome {
    let mut sim = Sim::new(seed, link);
    sim.limits.max_time = tuning.max_time;
    let listener = sim.b.socket_of(tuning.family);
    sim.b
        .bind(listener, server_addr(tuning.family))
        .expect("bind");
    if let Some(size) = tuning.server_recv_buffer {
        sim.b
            .set_option(sim.now, listener, SockOption::RecvBuffer(size))
            .expect("SO_RCVBUF");
    }
    sim.b.listen(listener, 8).expect("listen");
    let mut a = App::new(Side::A, false, random_bytes(seed ^ 0xa, a_len));
    let mut b = App::new(Side::B, true, random_bytes(seed ^ 0xb, b_len));
    b.read_limit = tuning.server_read_limit;
    let client = sim.a.socket_of(tuning.family);
    sim.a
        .connect(sim.now, client, server_addr(tuning.family))
        .expect("connect");
    a.socket = Some(client);
    let started = sim.now;
    let mut max_srtt_a = Duration::ZERO;
    let mut final_srtt_a = Duration::ZERO;
    sim.run_until("both applications closed", |sim| {
        if b.socket.is_none()
            && let Ok((server, _)) = sim.b.accept(listener)
        {
            b.socket = Some(server);
            sim.b.close(sim.now, listener).expect("close listener");
        }
        a.drive(sim);
        b.drive(sim);
        if let Some(info) = sim.a.sockets().first() {
            max_srtt_a = max_srtt_a.max(info.srtt);
            final_srtt_a = info.srtt;
        }
        // SIM_TRACE=1 prints the client connection's estimator every 20 steps.
        if std::env::var_os("SIM_TRACE").is_some()
            && sim.steps % 20 == 0
            && let Some(i) = sim.a.sockets().first()
        {
            eprintln!(
                "{:?} step {} A {} srtt {:?} rttvar {:?} rto {:?} cwnd {} unacked {} rtx {}",
                sim.elapsed(),
                sim.steps,
                i.state,
                i.srtt,
                i.rttvar,
                i.rto,
                i.cwnd,
                i.send_queue,
                i.retransmits
            );
        }
        a.closed && b.closed
    });
    let data_done = sim.now - started;
    if std::env::var_os("SIM_SLOW").is_some() && data_done > Duration::from_secs(120) {
        eprintln!("SLOW seed {seed} took {data_done:?}");
    }
    // The link's RTT is tens of milliseconds. The first sample may be
    // seconds (a SYN,ACK retransmitted by the peer echoes our only SYN), but
    // by the end the estimate must have come back down; one that stays near
    // a second means samples were taken across retransmissions (RFC 6298 §3,
    // RFC 7323 §4.1).
    assert!(
        final_srtt_a < Duration::from_secs(1),
        "client SRTT ended at {final_srtt_a:?}, peaked at {max_srtt_a:?} (seed {seed})"
    );
    assert_eq!(
        a.received.len(),
        b.to_send.len(),
        "B→A length (seed {seed})"
    );
    assert_eq!(
        b.received.len(),
        a.to_send.len(),
        "A→B length (seed {seed})"
    );
    assert_eq!(
        sha256(&b.received),
        sha256(&a.to_send),
        "A→B bytes (seed {seed})"
    );
    assert_eq!(
        sha256(&a.received),
        sha256(&b.to_send),
        "B→A bytes (seed {seed})"
    );

    // B, the passive closer, ends CLOSED once its FIN is acknowledged; A
    // waits in TIME-WAIT, handle-less, for 2×MSL. Under heavy loss B's FIN
    // retransmissions back off (RFC 6298 §5.5) and one may arrive after A's
    // 2×MSL has run out: A, CLOSED by then, answers it with a RST (RFC 9293
    // §3.10.7.1) and that RST is what closes B. Either way A never leaves
    // TIME-WAIT before 2×MSL (checked below).
    sim.run_until("B forgets the connection", |sim| sim.b.sockets().is_empty());
    let a_left = sim.a.sockets();
    let a_in_time_wait =
        a_left.len() == 1 && a_left[0].state == TcpState::TimeWait && a_left[0].handle.is_none();
    let a_done_and_b_reset = a_left.is_empty() && sim.b.stats().rst_received >= 1;
    assert!(
        a_in_time_wait || a_done_and_b_reset,
        "A should hold one TIME-WAIT connection (or be done, B reset by its RST), has {a_left:?} (seed {seed})"
    );
    sim.run_until_idle();
    assert!(
        sim.a.sockets().is_empty(),
        "A after 2MSL: {:?}",
        sim.a.sockets()
    );
    assert!(
        sim.b.sockets().is_empty(),
        "B at the end: {:?}",
        sim.b.sockets()
    );
    let (entered, left) = time_wait_span(&sim.events_a);
    let (entered, left) = (
        entered.expect("A entered TIME-WAIT"),
        left.expect("A left TIME-WAIT"),
    );
    let two_msl = sim.a.config().msl * 2;
    assert!(
        left - entered >= two_msl,
        "TIME-WAIT lasted {:?}, less than 2MSL {two_msl:?} (seed {seed})",
        left - entered
    );
    assert_eq!(
        time_wait_span(&sim.events_b).0,
        None,
        "B never in TIME-WAIT"
    );
    assert_eq!(sim.a.stats().active_opens, 1);
    assert_eq!(sim.b.stats().passive_opens, 1);
    Outcome {
        sim,
        data_done,
        max_srtt_a,
        final_srtt_a,
    }
}

#[test]
fn clean_link_bidirectional_transfer() {
    let outcome = run_transfer(1, LinkConfig::perfect(), 256 * 1024, 100 * 1024);
    let sim = &outcome.sim;
    // 2 ms RTT, unlimited bandwidth: slow start from the RFC 6928 initial
    // window needs a handful of round trips (22 ms when written). A stall on
    // a timer (delayed ACK, Nagle, persist, RTO) would show up here.
    assert!(
        outcome.data_done < Duration::from_millis(100),
        "clean transfer took {:?}",
        outcome.data_done
    );
    assert_eq!(sim.a.stats().retransmits, 0);
    assert_eq!(sim.b.stats().retransmits, 0);
    assert_eq!(sim.a.stats().failed_opens, 0);
    assert_eq!(sim.link.stats.lost, 0);
}

#[test]
fn clean_link_ipv6_transfer() {
    let tuning = Tuning {
        family: IpFamily::V6,
        ..Tuning::default()
    };
    let outcome = run_transfer_tuned(3, LinkConfig::perfect(), 256 * 1024, 64 * 1024, tuning);
    let info = outcome.sim.a.stats();
    assert_eq!(info.active_opens, 1);
    assert_eq!(info.drops.iter().sum::<u64>(), 0, "{info:?}");
}

#[test]
fn corruption_is_caught_by_checksums() {
    let mut link = LinkConfig::lossy(0.0);
    link.corrupt = 0.1;
    let outcome = run_transfer(2, link, 128 * 1024, 16 * 1024);
    let sim = &outcome.sim;
    assert!(sim.link.stats.corrupted > 0);
    let caught = [&sim.a, &sim.b]
        .iter()
        .map(|s| {
            s.stats().checksum_errors
                + s.stats().drops(tcpd_stack::DropReason::Malformed)
                + s.stats().drops(tcpd_stack::DropReason::NotForUs)
                + s.stats().drops(tcpd_stack::DropReason::Fragment)
                + s.stats().drops(tcpd_stack::DropReason::Unsupported)
        })
        .sum::<u64>();
    // Every flipped packet that arrived was rejected somewhere before TCP.
    assert!(caught > 0 && caught <= sim.link.stats.corrupted);
}

#[test]
fn heavy_loss_still_delivers_everything() {
    let outcome = run_transfer(3, LinkConfig::lossy(0.2), 96 * 1024, 32 * 1024);
    assert!(outcome.sim.a.stats().retransmits + outcome.sim.b.stats().retransmits > 0);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 4,
        ..ProptestConfig::default()
    })]

    /// Loss rates up to 20 % in both directions; the heavy end is weighted
    /// so that every run of the proptest has cases at exactly 20 %.
    #[test]
    fn transfers_survive_impairments(
        seed in any::<u64>(),
        loss_percent in prop_oneof![1 => Just(20u32), 1 => 15u32..=20, 2 => 0u32..=20],
        a_kib in 64usize..=1024,
        b_kib in 0usize..=128,
    ) {
        let link = LinkConfig::lossy(f64::from(loss_percent) / 100.0);
        run_transfer(seed, link, a_kib * 1024, b_kib * 1024);
    }

    /// The same over IPv6 (fewer cases: the TCP machinery is shared; the
    /// IPv6 header, pseudo-header checksum, MSS and demux are what differ).
    #[test]
    fn ipv6_transfers_survive_impairments(
        seed in any::<u64>(),
        loss_percent in prop_oneof![1 => Just(20u32), 3 => 0u32..=20],
        a_kib in 64usize..=512,
        b_kib in 0usize..=128,
    ) {
        let mut link = LinkConfig::lossy(f64::from(loss_percent) / 100.0);
        link.reorder = 0.05;
        link.jitter = Duration::from_millis(2);
        let tuning = Tuning {
            family: IpFamily::V6,
            ..Tuning::default()
        };
        run_transfer_tuned(seed, link, a_kib * 1024, b_kib * 1024, tuning);
    }

    /// Heavy reordering and duplication (SACK, duplicate-ACK thresholds,
    /// D-SACK-worthy duplicates) with light loss.
    #[test]
    fn transfers_survive_reordering(
        seed in any::<u64>(),
        reorder_percent in 5u32..=40,
        duplicate_percent in 0u32..=20,
        loss_percent in 0u32..=5,
        a_kib in 64usize..=512,
    ) {
        let mut link = LinkConfig::lossy(f64::from(loss_percent) / 100.0);
        link.reorder = f64::from(reorder_percent) / 100.0;
        link.duplicate = f64::from(duplicate_percent) / 100.0;
        link.jitter = Duration::from_millis(6);
        run_transfer(seed, link, a_kib * 1024, 8 * 1024);
    }

    /// Small receive buffers and a slow reader: zero windows, persist
    /// probes and window updates, with loss.
    #[test]
    fn flow_control_survives_impairments(
        seed in any::<u64>(),
        loss_percent in 0u32..=10,
        a_kib in 16usize..=256,
        recv_buffer in prop_oneof![Just(4096usize), Just(8192), Just(65536)],
        read_limit in prop_oneof![Just(512usize), Just(1500), Just(16384)],
    ) {
        let link = LinkConfig::lossy(f64::from(loss_percent) / 100.0);
        let tuning = Tuning {
            server_recv_buffer: Some(recv_buffer),
            server_read_limit: read_limit,
            ..Tuning::default()
        };
        run_transfer_tuned(seed, link, a_kib * 1024, 4096, tuning);
    }
}

#[test]
fn time_wait_lasts_exactly_until_2msl_without_loss() {
    let outcome = run_transfer(4, LinkConfig::perfect(), 1000, 0);
    let (entered, left) = time_wait_span(&outcome.sim.events_a);
    let span = left.expect("left") - entered.expect("entered");
    let two_msl = outcome.sim.a.config().msl * 2;
    assert!(
        span >= two_msl && span < two_msl + Duration::from_secs(1),
        "{span:?}"
    );
}

/// Found by the proptest: at 16 % loss the client's RTT estimate climbed to
/// ~46 s and its RTO to the 120 s ceiling, so this transfer took ~4,450 s of
/// virtual time. Cause: after an RTO, an ACK that newly acknowledged data
/// (its earlier copies were lost) echoed the peer's TS.Recent from before the
/// retransmission (a wholly duplicate segment does not update TS.Recent,
/// RFC 7323 §4.3), and the sender took `now - TSecr` as an RTT sample that
/// included the whole backoff; each inflated RTO made the next sample larger.
/// Fixed by refusing samples whose TSecr predates the latest retransmission
/// (Karn / RFC 6298 §3 for timestamps, RFC 3522 §3.2). The link's RTT is a
/// few tens of milliseconds: the transfer now takes seconds.
#[test]
fn rto_inflation_seed() {
    let tuning = Tuning {
        // 2×MSL of TIME-WAIT (60 s) plus at most two minutes of transfer.
        max_time: Duration::from_secs(180),
        ..Tuning::default()
    };
    let outcome = run_transfer_tuned(
        3171582831508309681,
        LinkConfig::lossy(0.16),
        692 * 1024,
        112 * 1024,
        tuning,
    );
    assert!(
        outcome.data_done < Duration::from_secs(60),
        "transfer took {:?} of virtual time",
        outcome.data_done
    );
    assert!(
        outcome.max_srtt_a < Duration::from_millis(500),
        "client SRTT reached {:?}",
        outcome.max_srtt_a
    );
    assert!(
        outcome.final_srtt_a < Duration::from_millis(100),
        "client SRTT ended at {:?}",
        outcome.final_srtt_a
    );
}

/// The slowest case seen at 20 % loss after the fix: no inflated samples
/// (SRTT stays near the link's RTT), but several rounds in a row lose either
/// a fresh segment or its ACK while the RTO is backed off, and RFC 6298 §5.7
/// keeps the backoff until a valid sample: ~940 s of virtual time. Pins the
/// tail that `DEFAULT_MAX_TIME` allows for.
#[test]
fn karn_backoff_tail_seed() {
    let outcome = run_transfer(
        3448645797703591252,
        LinkConfig::lossy(0.2),
        624 * 1024,
        123 * 1024,
    );
    assert!(
        outcome.data_done < Duration::from_secs(20 * 60),
        "transfer took {:?}",
        outcome.data_done
    );
    assert!(
        outcome.max_srtt_a < Duration::from_millis(500),
        "client SRTT reached {:?}",
        outcome.max_srtt_a
    );
}

/// The same seed gives the same run, packet for packet.
#[test]
fn simulation_is_deterministic() {
    let trace = |seed: u64| {
        let mut sim = Sim::new(seed, LinkConfig::lossy(0.05));
        sim.capture = Some(Vec::new());
        let l = sim.b.socket();
        sim.b
            .bind(l, SocketAddrV4::new(ADDR_B, SERVER_PORT))
            .expect("bind");
        sim.b.listen(l, 4).expect("listen");
        let c = sim.a.socket();
        sim.a
            .connect(sim.now, c, SocketAddrV4::new(ADDR_B, SERVER_PORT))
            .expect("connect");
        let data = random_bytes(seed, 64 * 1024);
        let mut sent = 0;
        let mut server = None;
        let mut received = 0;
        sim.run_until("64 KiB delivered", |sim| {
            server = server.or_else(|| sim.b.accept(l).ok().map(|(h, _)| h));
            if let Ok(n) = sim.a.send(sim.now, c, &data[sent..]) {
                sent += n;
            }
            let mut buf = [0u8; 8192];
            if let Some(s) = server {
                while let Ok(n @ 1..) = sim.b.recv(sim.now, s, &mut buf, false) {
                    received += n;
                }
            }
            received == data.len()
        });
        (sim.now, sim.capture.take().expect("captured"))
    };
    let (end_1, packets_1) = trace(77);
    let (end_2, packets_2) = trace(77);
    assert_eq!(end_1, end_2);
    assert_eq!(packets_1.len(), packets_2.len());
    assert!(packets_1 == packets_2, "same seed, different packets");
    assert_ne!(trace(78).1, packets_1, "a different seed changes the run");
}

/// Many connections at once through one listener (backlog, accept order,
/// demultiplexing, round-robin transmission), with loss: every stream
/// arrives intact and both stacks end empty.
#[test]
fn many_concurrent_connections() {
    const CLIENTS: usize = 24;
    let mut sim = Sim::new(31, LinkConfig::lossy(0.03));
    sim.limits.max_time = DEFAULT_MAX_TIME;
    // One dual-stack listener on [::]: IPv4 clients arrive IPv4-mapped
    // (RFC 3493 §3.7), IPv6 clients as themselves.
    let listener = sim.b.socket_of(IpFamily::V6);
    sim.b
        .bind(listener, SocketAddr::from(([0u16; 8], SERVER_PORT)))
        .expect("bind");
    sim.b.listen(listener, 64).expect("listen");
    let mut clients: Vec<(SocketAddr, App)> = (0..CLIENTS)
        .map(|i| {
            let mut app = App::new(Side::A, false, random_bytes(i as u64, 8 * 1024 + 997 * i));
            let family = if i % 2 == 0 {
                IpFamily::V4
            } else {
                IpFamily::V6
            };
            let socket = sim.a.socket_of(family);
            sim.a
                .connect(sim.now, socket, server_addr(family))
                .expect("connect");
            app.socket = Some(socket);
            (sim.a.local_addr(socket).expect("bound by connect"), app)
        })
        .collect();
    // Server apps send nothing back; keyed by the client's address.
    let mut servers: Vec<(SocketAddr, App)> = Vec::new();
    sim.run_until("every connection closed on both sides", |sim| {
        while let Ok((socket, peer)) = sim.b.accept(listener) {
            let mut app = App::new(Side::B, true, Vec::new());
            app.socket = Some(socket);
            servers.push((peer, app));
        }
        for (_, app) in clients.iter_mut() {
            app.drive(sim);
        }
        for (_, app) in servers.iter_mut() {
            app.drive(sim);
        }
        servers.len() == CLIENTS
            && clients.iter().all(|(_, a)| a.closed)
            && servers.iter().all(|(_, b)| b.closed)
    });
    for (local, app) in &clients {
        let (_, server) = servers
            .iter()
            .find(|(peer, _)| peer.ip().to_canonical() == local.ip() && peer.port() == local.port())
            .expect("every client was accepted");
        assert_eq!(
            sha256(&server.received),
            sha256(&app.to_send),
            "stream from {local}"
        );
    }
    sim.b.close(sim.now, listener).expect("close listener");
    sim.run_until_idle();
    assert!(sim.a.sockets().is_empty(), "{:?}", sim.a.sockets());
    assert!(sim.b.sockets().is_empty(), "{:?}", sim.b.sockets());
    assert_eq!(sim.b.stats().passive_opens, CLIENTS as u64);
}

/// One-byte request/response ping-pong: each exchange takes one round trip
/// (2 ms here), not a delayed-ACK or Nagle timeout (RFC 9293 §3.7.4,
/// §3.8.6.3: the response carries the ACK; the next request has nothing
/// unacknowledged ahead of it).
#[test]
fn request_response_takes_one_round_trip() {
    const EXCHANGES: usize = 50;
    let mut sim = Sim::new(41, LinkConfig::perfect());
    let listener = sim.b.socket();
    sim.b
        .bind(listener, SocketAddrV4::new(ADDR_B, SERVER_PORT))
        .expect("bind");
    sim.b.listen(listener, 4).expect("listen");
    let client = sim.a.socket();
    sim.a
        .connect(sim.now, client, SocketAddrV4::new(ADDR_B, SERVER_PORT))
        .expect("connect");
    let mut server = None;
    sim.run_until("accepted", |sim| {
        server = server.or_else(|| sim.b.accept(listener).ok().map(|(h, _)| h));
        server.is_some()
            && sim
                .a
                .readiness(client)
                .is_ok_and(|r| r.contains(tcpd_stack::Readiness::OUT))
    });
    let server = server.expect("accepted");
    let started = sim.now;
    let mut buf = [0u8; 8];
    for i in 0..EXCHANGES {
        let byte = [i as u8];
        assert_eq!(sim.a.send(sim.now, client, &byte), Ok(1));
        sim.run_until("request arrives", |sim| {
            sim.b.recv(sim.now, server, &mut buf, false) == Ok(1)
        });
        assert_eq!(buf[0], i as u8);
        assert_eq!(sim.b.send(sim.now, server, &byte), Ok(1));
        sim.run_until("response arrives", |sim| {
            sim.a.recv(sim.now, client, &mut buf, false) == Ok(1)
        });
    }
    let per_exchange = (sim.now - started) / EXCHANGES as u32;
    assert!(
        per_exchange <= Duration::from_millis(3),
        "{per_exchange:?} per exchange"
    );
}

/// Regression (found by `flow_control_survives_impairments`): B→A loss
/// leaves A holding out-of-order data, so A's segments carry SACK blocks,
/// which cut the payload of A's last segment below the MSS it was sized
/// for. The FIN was still set on that segment, four bytes short of the end
/// of the data: B ended the stream without them.
#[test]
fn fin_waits_when_sack_options_cut_the_last_segment_short() {
    let link = LinkConfig::lossy(0.09);
    let tuning = Tuning {
        server_recv_buffer: Some(65536),
        server_read_limit: 512,
        ..Tuning::default()
    };
    run_transfer_tuned(9870154435506193443, link, 160 * 1024, 4096, tuning);
}
