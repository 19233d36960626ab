//! SYN floods at the segment level: the SYN queue and its bound
//! (`max_syn_backlog`), SYN cookies when it is full (RFC 4987 §3.6, Linux's
//! encoding), cookie validation (forged, expired, misdirected ACKs), the
//! accept queue bound on cookie connections, and the SYN,ACK retries that
//! drain the SYN queue (Linux tcp_synack_retries = 5: 63 s).

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::wire::{TcpFlags, TcpOptions};
use tcpd_stack::{Duration, Instant, SocketHandle, Stack, StackConfig, SynCookieMode, TcpState};

const T0: Instant = Instant::from_millis(1_000);

fn config(syn_backlog: u32, mode: SynCookieMode) -> StackConfig {
    let mut c = test_config(ADDR_B, 21);
    c.max_syn_backlog = syn_backlog;
    c.syncookies = mode;
    c
}

fn listener(stack: &mut Stack, port: u16, backlog: u32) -> SocketHandle {
    let l = stack.socket();
    stack
        .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .expect("bind");
    stack.listen(l, backlog).expect("listen");
    l
}

/// A SYN from a spoofed host `10.0.0.(100+n)`, as a flood sends.
fn spoofed_syn(n: u16, to_port: u16) -> Vec<u8> {
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100 + (n % 100) as u8), 20000 + n);
    let mut s = Segment::new(src, SocketAddrV4::new(ADDR_B, to_port), TcpFlags::SYN, 7, 0);
    s.options.mss = Some(1460);
    s.to_packet()
}

fn fill_syn_queue(stack: &mut Stack, n: u16, port: u16) {
    for i in 0..n {
        stack.handle_packet(T0, &spoofed_syn(i, port));
    }
    drain_transmit(stack, T0);
}

fn half_open(stack: &Stack) -> usize {
    stack
        .sockets()
        .iter()
        .filter(|i| i.state == TcpState::SynReceived)
        .count()
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_A, port)
}

fn ours(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_B, port)
}

/// The client's SYN with the given options; returns the one SYN,ACK.
fn syn_get_synack(stack: &mut Stack, now: Instant, options: TcpOptions) -> SentSegment {
    let mut syn = Segment::new(peer(5555), ours(80), TcpFlags::SYN, 1000, 0);
    syn.options = options;
    stack.handle_packet(now, &syn.to_packet());
    let out = drain_transmit(stack, now);
    assert_eq!(out.len(), 1, "one SYN,ACK");
    let synack = parse_tcp(&out[0]);
    assert_eq!(synack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(synack.ack, 1001);
    synack
}

fn ack_for(synack: &SentSegment, timestamp: Option<(u32, u32)>) -> Vec<u8> {
    let mut ack = Segment::new(
        peer(5555),
        ours(80),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    ack.options.timestamp = timestamp;
    ack.to_packet()
}

/// Through the simulation: with B's SYN queue full of spoofed embryos, A's
/// connect gets a cookie SYN,ACK, completes, and the connection carries data
/// both ways with the MSS and window scale A asked for.
#[test]
fn cookie_connection_carries_data_with_the_clients_mss_and_window_scale() {
    let a = test_config(ADDR_A, 31);
    let b = config(8, SynCookieMode::Auto);
    let mut sim = Sim::with_configs(a, b, LinkConfig::perfect(), 31);
    let l = listener(&mut sim.b, 80, 16);
    fill_syn_queue(&mut sim.b, 8, 80);
    assert_eq!(half_open(&sim.b), 8);
    assert_eq!(sim.b.stats().syncookies_sent, 0);

    let c = sim.a.socket();
    sim.a.connect(sim.now, c, ours(80)).expect("connect");
    sim.run_until("accept queue", |sim| {
        sim.b.socket_info(l).expect("listener").accept_queue == 1
    });
    assert_eq!(sim.b.stats().syncookies_sent, 1);
    assert_eq!(sim.b.stats().syncookies_recv, 1);
    assert_eq!(sim.b.stats().syncookies_failed, 0);
    assert_eq!(half_open(&sim.b), 8, "the cookie connection kept no embryo");
    let (h, from) = sim.b.accept(l).expect("accept");
    assert_eq!(from.ip(), ADDR_A);

    // Data both ways, more than one unscaled window (64 KiB) so scaling matters.
    let up = payload(300_000, 1);
    let down = payload(200_000, 2);
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let mut buf = vec![0; 65536];
    sim.run_until("transfer", |sim| {
        let now = sim.now;
        if sent_up < up.len()
            && let Ok(n) = sim.a.send(now, c, &up[sent_up..])
        {
            sent_up += n;
        }
        if sent_down < down.len()
            && let Ok(n) = sim.b.send(now, h, &down[sent_down..])
        {
            sent_down += n;
        }
        while let Ok(n) = sim.b.recv(now, h, &mut buf, false) {
            if n == 0 {
                break;
            }
            got_up.extend_from_slice(&buf[..n]);
        }
        while let Ok(n) = sim.a.recv(now, c, &mut buf, false) {
            if n == 0 {
                break;
            }
            got_down.extend_from_slice(&buf[..n]);
        }
        got_up.len() == up.len() && got_down.len() == down.len()
    });
    assert!(got_up == up && got_down == down, "data intact both ways");
    let info = sim.b.socket_info(h).expect("info");
    // A asked for MSS 1460 (MTU 1500); timestamps take 12 bytes of each segment.
    assert_eq!(info.mss, 1460 - 12, "the client's MSS, through the cookie");
    // A offers a window scale (7 with its default buffers): a window above
    // 65535 proves B applies it.
    assert!(
        info.snd_wnd > 65535,
        "B applies A's window scale: snd_wnd {}",
        info.snd_wnd
    );
    let client = sim.a.socket_info(c).expect("client info");
    assert!(
        client.snd_wnd > 65535,
        "A applies B's window scale: snd_wnd {}",
        client.snd_wnd
    );
}

/// Without timestamps the cookie cannot carry window scale or SACK: the
/// SYN,ACK offers MSS only (as Linux's), and the ACK still opens the connection.
#[test]
fn cookie_without_timestamps_offers_mss_only() {
    let mut s = Stack::new(config(2048, SynCookieMode::Always), T0);
    let l = listener(&mut s, 80, 16);
    let synack = syn_get_synack(
        &mut s,
        T0,
        TcpOptions {
            mss: Some(1400),
            window_scale: Some(7),
            sack_permitted: true,
            ..TcpOptions::default()
        },
    );
    assert_eq!(synack.options.mss, Some(1460), "our MSS");
    assert_eq!(synack.options.window_scale, None);
    assert!(!synack.options.sack_permitted);
    assert_eq!(synack.options.timestamp, None);
    assert_eq!(half_open(&s), 0, "no state kept");
    s.handle_packet(T0 + Duration::from_millis(5), &ack_for(&synack, None));
    let (h, _) = s.accept(l).expect("cookie connection accepted");
    let info = s.socket_info(h).expect("info");
    assert_eq!(info.state, TcpState::Established);
    assert_eq!(
        info.mss, 1300,
        "1400 rounds down to the cookie table's 1300"
    );
    assert_eq!(s.stats().syncookies_recv, 1);
}

/// With timestamps, the TSval's low bits carry the client's window scale
/// and SACK-permitted; the ACK's TSecr gives them back.
#[test]
fn cookie_with_timestamps_keeps_window_scale_and_sack() {
    let mut s = Stack::new(config(2048, SynCookieMode::Always), T0);
    let l = listener(&mut s, 80, 16);
    let synack = syn_get_synack(
        &mut s,
        T0,
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(9),
            sack_permitted: true,
            timestamp: Some((4242, 0)),
            ..TcpOptions::default()
        },
    );
    let (tsval, tsecr) = synack.options.timestamp.expect("timestamps");
    assert_eq!(tsecr, 4242);
    assert_eq!(tsval & 0xF, 9, "window scale in the TSval");
    assert_ne!(tsval & 0x10, 0, "SACK-permitted in the TSval");
    assert!(synack.options.window_scale.is_some() && synack.options.sack_permitted);
    let mut ack = Segment::new(
        peer(5555),
        ours(80),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    ack.options.timestamp = Some((4243, tsval));
    ack.window = 1000; // scaled by 2^9
    let data = b"hello through a cookie";
    ack.payload = data;
    ack.flags = TcpFlags::ACK | TcpFlags::PSH;
    s.handle_packet(T0 + Duration::from_millis(5), &ack.to_packet());
    let (h, _) = s.accept(l).expect("accepted");
    let info = s.socket_info(h).expect("info");
    assert_eq!(info.snd_wnd, 1000 << 9, "the client's shift applies");
    let mut buf = [0u8; 64];
    let n = s
        .recv(T0 + Duration::from_millis(6), h, &mut buf, false)
        .expect("data on the ACK");
    assert_eq!(&buf[..n], data);
}

#[test]
fn forged_and_expired_cookies_are_reset_and_counted() {
    let mut s = Stack::new(config(2048, SynCookieMode::Always), T0);
    let l = listener(&mut s, 80, 16);
    let synack = syn_get_synack(
        &mut s,
        T0,
        TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        },
    );

    // A forged cookie (wrong ISS echoed): RST <SEQ=SEG.ACK>, no connection.
    let mut forged = synack.clone();
    forged.seq = forged.seq.wrapping_add(12345);
    s.handle_packet(T0, &ack_for(&forged, None));
    let out = drain_transmit(&mut s, T0);
    assert_eq!(out.len(), 1);
    let rst = parse_tcp(&out[0]);
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!(rst.seq, forged.seq.wrapping_add(1));
    assert_eq!(s.stats().syncookies_failed, 1);

    // The right cookie for another client port fails too.
    let mut other = Segment::new(
        peer(5556),
        ours(80),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    other.window = 1000;
    s.handle_packet(T0, &other.to_packet());
    assert_eq!(s.stats().syncookies_failed, 2);

    // The genuine cookie, too late: cookies live at most two 60 s periods.
    let late = T0 + Duration::from_secs(121);
    s.handle_packet(late, &ack_for(&synack, None));
    assert_eq!(s.stats().syncookies_failed, 3);
    assert!(s.accept(l).is_err(), "no connection from a bad cookie");
    assert_eq!(s.stats().syncookies_recv, 0);

    // Within its life it works.
    s.handle_packet(T0 + Duration::from_secs(30), &ack_for(&synack, None));
    assert!(s.accept(l).is_ok());
}

/// In `Auto` mode, a listener that never sent a cookie treats an ACK as
/// stray (RST), without even checking it.
#[test]
fn auto_mode_checks_acks_only_after_an_overflow() {
    let mut s = Stack::new(config(2, SynCookieMode::Auto), T0);
    let _l = listener(&mut s, 80, 16);
    let stray = Segment::new(peer(5555), ours(80), TcpFlags::ACK, 1001, 77);
    s.handle_packet(T0, &stray.to_packet());
    assert_eq!(
        parse_tcp(&drain_transmit(&mut s, T0)[0]).flags,
        TcpFlags::RST
    );
    assert_eq!(s.stats().syncookies_failed, 0);
    // A full SYN queue: the third SYN gets a cookie, the listener now checks ACKs.
    fill_syn_queue(&mut s, 2, 80);
    let synack = syn_get_synack(&mut s, T0, TcpOptions::default());
    assert_eq!(s.stats().syncookies_sent, 1);
    assert_eq!(half_open(&s), 2);
    s.handle_packet(T0, &stray.to_packet());
    assert_eq!(s.stats().syncookies_failed, 1);
    s.handle_packet(T0, &ack_for(&synack, None));
    assert_eq!(s.stats().syncookies_recv, 1);
}

/// `Never`: a full SYN queue drops SYNs (counted), no cookies.
#[test]
fn never_mode_drops_when_the_syn_queue_is_full() {
    let mut s = Stack::new(config(4, SynCookieMode::Never), T0);
    let _l = listener(&mut s, 80, 16);
    fill_syn_queue(&mut s, 10, 80);
    assert_eq!(half_open(&s), 4);
    assert_eq!(s.stats().syncookies_sent, 0);
    assert_eq!(s.stats().listen_drops, 6);
    assert_eq!(
        s.stats().listen_overflows,
        0,
        "the accept queue never filled"
    );
}

/// A client on `from_port` with ISN `isn` does the whole handshake at once.
fn cookie_handshake(s: &mut Stack, from_port: u16, isn: u32) {
    let mut syn = Segment::new(peer(from_port), ours(80), TcpFlags::SYN, isn, 0);
    syn.options.mss = Some(1460);
    s.handle_packet(T0, &syn.to_packet());
    let synack = parse_tcp(&drain_transmit(s, T0)[0]);
    let ack = Segment::new(
        peer(from_port),
        ours(80),
        TcpFlags::ACK,
        isn.wrapping_add(1),
        synack.seq.wrapping_add(1),
    );
    s.handle_packet(T0, &ack.to_packet());
}

/// A valid cookie ACK that finds the accept queue full is dropped silently
/// and counted; the client's retransmission gets in once there is room.
#[test]
fn cookie_ack_respects_the_accept_queue() {
    let mut s = Stack::new(config(2048, SynCookieMode::Always), T0);
    let l = listener(&mut s, 80, 1);
    // Fill the accept queue with one cookie connection from another port.
    cookie_handshake(&mut s, 4444, 50);
    assert_eq!(s.socket_info(l).expect("l").accept_queue, 1);

    // A SYN now is refused outright (accept queue full)...
    let mut syn = Segment::new(peer(5555), ours(80), TcpFlags::SYN, 1000, 0);
    syn.options.mss = Some(1460);
    s.handle_packet(T0, &syn.to_packet());
    assert!(drain_transmit(&mut s, T0).is_empty());
    assert_eq!(s.stats().listen_overflows, 1);
    // ...then accepted: room again, a cookie SYN,ACK.
    s.accept(l).expect("accept the first");
    let synack = syn_get_synack(
        &mut s,
        T0,
        TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        },
    );
    // The queue fills again before the ACK comes back: the ACK is dropped unanswered.
    cookie_handshake(&mut s, 6666, 70);
    s.handle_packet(T0, &ack_for(&synack, None));
    assert!(
        drain_transmit(&mut s, T0).is_empty(),
        "no RST for an overflow"
    );
    assert_eq!(s.stats().listen_overflows, 2);
    assert_eq!(s.stats().syncookies_recv, 2);
    // Accepting makes room; the client's retransmitted ACK gets in.
    s.accept(l).expect("accept the third");
    s.handle_packet(T0 + Duration::from_millis(300), &ack_for(&synack, None));
    let (_, from) = s.accept(l).expect("the retried ACK opened it");
    assert_eq!(from, peer(5555).into());
}

/// The SYN queue's embryos retransmit their SYN,ACK 5 times (1, 2, 4, 8,
/// 16 s after the first) and are dropped 32 s after the last: the queue is
/// empty 63 s after a flood, and takes SYNs again.
#[test]
fn syn_queue_drains_after_five_synack_retries() {
    let mut s = Stack::new(config(16, SynCookieMode::Auto), T0);
    let _l = listener(&mut s, 80, 16);
    for i in 0..16 {
        s.handle_packet(T0, &spoofed_syn(i, 80));
    }
    assert_eq!(drain_transmit(&mut s, T0).len(), 16);
    let mut retransmissions = 0;
    let mut now = T0;
    while let Some(deadline) = s.poll_timeout() {
        assert!(deadline >= now);
        now = deadline;
        if now > T0 + Duration::from_secs(120) {
            break;
        }
        s.handle_timeout(now);
        retransmissions += drain_transmit(&mut s, now).len();
        if half_open(&s) == 0 {
            break;
        }
    }
    assert_eq!(retransmissions, 16 * 5, "5 SYN,ACK retries each");
    assert_eq!(half_open(&s), 0);
    let drained_after = now - T0;
    assert!(
        drained_after >= Duration::from_secs(62) && drained_after <= Duration::from_secs(64),
        "drained after {drained_after:?}, expected 63 s"
    );
    assert_eq!(s.stats().syncookies_sent, 0);
}

/// A flood of spoofed SYNs far beyond the SYN queue keeps memory bounded:
/// the SYN queue holds `max_syn_backlog` embryos, the rest are cookies.
#[test]
fn flood_beyond_the_syn_queue_keeps_no_state() {
    let mut s = Stack::new(config(64, SynCookieMode::Auto), T0);
    let _l = listener(&mut s, 80, 16);
    let mut sent = 0;
    for i in 0..5000u16 {
        s.handle_packet(T0, &spoofed_syn(i, 80));
        sent += drain_transmit(&mut s, T0).len();
    }
    assert_eq!(sent, 5000, "every SYN answered");
    assert_eq!(half_open(&s), 64);
    assert_eq!(s.stats().syncookies_sent, 5000 - 64);
    assert_eq!(s.sockets().len(), 65, "the listener and 64 embryos");
}

/// Deterministic test bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
