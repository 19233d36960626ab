//! Integration tests of the stack layer through its public API: answers to
//! closed ports (RFC 9293 §3.10.7.1), ICMP echo (RFC 792), port rules
//! (ephemeral range, EADDRINUSE/SO_REUSEADDR), listener backlog and accept
//! order, readiness and state events, drop counters, listener teardown, and
//! admin aborts. Raw packets are built and checked with the crate's wire
//! module; two-stack scenarios use the simulation in `common`.

mod common;

use common::*;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::wire::checksum;
use tcpd_stack::wire::{Icmpv4Repr, IpProtocol, Ipv4Repr, TcpFlags, TcpOptions};
use tcpd_stack::{
    BindError, ConnError, ConnectError, DropReason, Duration, Instant, ListenError, OptionName,
    Readiness, RecvError, SockOption, SocketHandle, Stack, StackEvent, TcpState,
};

const T0: Instant = Instant::from_millis(1_000);

fn server_stack() -> Stack {
    Stack::new(test_config(ADDR_B, 11), T0)
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_A, port)
}

fn ours(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_B, port)
}

fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// A client SYN with typical options.
fn syn(from_port: u16, to_port: u16, isn: u32) -> Vec<u8> {
    let mut s = Segment::new(peer(from_port), ours(to_port), TcpFlags::SYN, isn, 0);
    s.options = TcpOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        ..TcpOptions::default()
    };
    s.to_packet()
}

/// Sends SYN from `from_port`, returns the SYN-ACK.
fn open_half(stack: &mut Stack, now: Instant, from_port: u16, to_port: u16) -> SentSegment {
    stack.handle_packet(now, &syn(from_port, to_port, 1000));
    let out = drain_transmit(stack, now);
    assert_eq!(out.len(), 1, "one SYN-ACK expected");
    let synack = parse_tcp(&out[0]);
    assert_eq!(synack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(synack.ack, 1001);
    synack
}

/// Completes a handshake opened by [`open_half`].
fn finish_handshake(
    stack: &mut Stack,
    now: Instant,
    from_port: u16,
    to_port: u16,
    synack: &SentSegment,
) {
    let ack = Segment::new(
        peer(from_port),
        ours(to_port),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    stack.handle_packet(now, &ack.to_packet());
}

fn listener(stack: &mut Stack, port: u16, backlog: u32) -> SocketHandle {
    let l = stack.socket();
    stack.bind(l, any(port)).expect("bind");
    stack.listen(l, backlog).expect("listen");
    l
}

fn readiness_events(events: &[(Instant, StackEvent)], socket: SocketHandle) -> Vec<Readiness> {
    events
        .iter()
        .filter_map(|(_, e)| match *e {
            StackEvent::Readiness { socket: s, ready } if s == socket => Some(ready),
            _ => None,
        })
        .collect()
}

fn state_events(
    events: &[(Instant, StackEvent)],
) -> Vec<(Option<SocketHandle>, TcpState, TcpState)> {
    events
        .iter()
        .filter_map(|(_, e)| match *e {
            StackEvent::StateChange {
                socket, old, new, ..
            } => Some((socket, old, new)),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ closed ports

#[test]
fn closed_port_answers_syn_with_rst_ack_and_ack_with_rst() {
    let mut s = server_stack();
    // No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; the SYN counts one.
    s.handle_packet(T0, &syn(40000, 80, 1000));
    let out = drain_transmit(&mut s, T0);
    assert_eq!(out.len(), 1);
    let rst = parse_tcp(&out[0]);
    assert_eq!(rst.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!((rst.seq, rst.ack), (0, 1001));
    assert_eq!((rst.src_port, rst.dst_port), (80, 40000));
    assert_eq!((rst.ip.src, rst.ip.dst), (ADDR_B, ADDR_A));
    assert_eq!(rst.ip.ttl, 64);
    assert!(rst.ip.dont_fragment);
    assert!(rst.payload.is_empty());
    assert_eq!(rst.window, 0);

    // No ACK, FIN plus 10 bytes: SEG.LEN = 11.
    let mut fin = Segment::new(peer(40001), ours(81), TcpFlags::FIN, 5000, 0);
    fin.payload = b"0123456789";
    s.handle_packet(T0, &fin.to_packet());
    let rst = parse_tcp(&drain_transmit(&mut s, T0)[0]);
    assert_eq!(rst.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!((rst.seq, rst.ack), (0, 5011));

    // ACK set: <SEQ=SEG.ACK><CTL=RST>.
    let ack = Segment::new(peer(40002), ours(82), TcpFlags::ACK, 7, 123_456);
    s.handle_packet(T0, &ack.to_packet());
    let rst = parse_tcp(&drain_transmit(&mut s, T0)[0]);
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!(rst.seq, 123_456);

    // A RST is never answered.
    let reset = Segment::new(peer(40003), ours(83), TcpFlags::RST, 9, 0);
    s.handle_packet(T0, &reset.to_packet());
    assert!(drain_transmit(&mut s, T0).is_empty());

    let stats = s.stats();
    assert_eq!(stats.rst_sent, 3);
    assert_eq!(stats.rst_received, 1);
    assert_eq!(stats.segments_in, 4);
    assert_eq!(stats.segments_out, 3);
    assert_eq!(stats.packets_out, 3);
}

#[test]
fn listener_resets_stray_ack_and_ignores_rst() {
    let mut s = server_stack();
    listener(&mut s, 80, 16);
    let ack = Segment::new(peer(40000), ours(80), TcpFlags::ACK, 1, 777);
    s.handle_packet(T0, &ack.to_packet());
    let rst = parse_tcp(&drain_transmit(&mut s, T0)[0]);
    assert_eq!((rst.flags, rst.seq), (TcpFlags::RST, 777));
    let reset = Segment::new(peer(40000), ours(80), TcpFlags::RST, 1, 0);
    s.handle_packet(T0, &reset.to_packet());
    assert!(drain_transmit(&mut s, T0).is_empty());
}

/// Segments a connection discards (out of window, ACK of unsent data, no
/// ACK bit) count as `drop_unacceptable`, like a listener's discards; a
/// segment it uses does not.
#[test]
fn connection_discards_count_as_unacceptable_drops() {
    let mut s = server_stack();
    listener(&mut s, 80, 16);
    let synack = open_half(&mut s, T0, 40000, 80);
    finish_handshake(&mut s, T0, 40000, 80, &synack);
    drain_transmit(&mut s, T0);
    let our_next = synack.seq.wrapping_add(1);
    let unacceptable = |s: &Stack| s.stats().drops(DropReason::Unacceptable);
    assert_eq!(unacceptable(&s), 0);

    let mut data = Segment::new(peer(40000), ours(80), TcpFlags::ACK, 1001, our_next);
    data.payload = b"in order";
    s.handle_packet(T0, &data.to_packet());
    assert_eq!(unacceptable(&s), 0, "in-order data is used");

    let mut far = Segment::new(peer(40000), ours(80), TcpFlags::ACK, 900_000, our_next);
    far.payload = b"out of window";
    s.handle_packet(T0, &far.to_packet());
    assert_eq!(unacceptable(&s), 1, "out of window");

    let unsent = Segment::new(
        peer(40000),
        ours(80),
        TcpFlags::ACK,
        1009,
        our_next.wrapping_add(5000),
    );
    s.handle_packet(T0, &unsent.to_packet());
    assert_eq!(unacceptable(&s), 2, "ACK of unsent data");

    let no_ack = Segment::new(peer(40000), ours(80), TcpFlags::PSH, 1009, 0);
    s.handle_packet(T0, &no_ack.to_packet());
    assert_eq!(unacceptable(&s), 3, "no ACK bit");
    assert!(
        s.stats()
            .named()
            .contains(&("drop_unacceptable".to_string(), 3))
    );
}

// ------------------------------------------------------------------ ICMP

fn internet_checksum(data: &[u8]) -> u16 {
    checksum::finish(checksum::sum(data))
}

#[test]
fn echo_request_gets_byte_exact_reply() {
    let mut s = server_stack();
    let data = b"tcpd ping payload";
    s.handle_packet(T0, &echo_request(ADDR_A, ADDR_B, 0x1234, 7, data));
    let out = drain_transmit(&mut s, T0);
    assert_eq!(out.len(), 1);
    let packet = &out[0];
    let (ip, icmp) = Ipv4Repr::parse(packet).expect("valid IPv4");
    assert_eq!(
        (ip.src, ip.dst, ip.protocol),
        (ADDR_B, ADDR_A, IpProtocol::Icmp)
    );
    assert_eq!(ip.ttl, 64);
    assert!(ip.dont_fragment);
    assert_eq!(packet.len(), 20 + 8 + data.len());
    assert_eq!(internet_checksum(&packet[..20]), 0, "IPv4 header checksum");
    // Type 0 code 0, checksum, identifier, sequence number, the same data.
    let mut expected = vec![0u8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07];
    expected.extend_from_slice(data);
    let sum = internet_checksum(&expected);
    expected[2..4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(icmp, &expected[..]);
    assert_eq!(
        Icmpv4Repr::parse(icmp),
        Ok(Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 7,
            data
        })
    );
    assert_eq!(s.stats().icmp_echo_replies, 1);
}

#[test]
fn icmp_unreachable_fails_a_connecting_socket() {
    let mut s = server_stack();
    let c = s.socket();
    s.connect(T0, c, peer(5000)).expect("connect");
    let out = drain_transmit(&mut s, T0);
    let syn = parse_tcp(&out[0]);
    assert_eq!(syn.flags, TcpFlags::SYN);
    // Host unreachable (code 1) quoting our SYN (RFC 792: IP header + 8 bytes).
    let mut message = vec![3u8, 1, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&out[0][..28]);
    let sum = internet_checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0; 20 + message.len()];
    packet[20..].copy_from_slice(&message);
    ip_header(ADDR_A, ADDR_B, IpProtocol::Icmp, message.len(), &mut packet);
    s.handle_packet(T0, &packet);
    assert_eq!(s.stats().icmp_unreachable_received, 1);
    assert!(s.readiness(c).expect("live").contains(Readiness::ERR));
    assert_eq!(
        s.get_option(c, OptionName::Error),
        Ok(SockOption::Error(Some(ConnError::HostUnreachable)))
    );
    assert_eq!(s.stats().failed_opens, 1);
}

// ------------------------------------------------------------------ drops

#[test]
fn malformed_packets_are_counted_not_answered() {
    let mut s = server_stack();
    let good = syn(40000, 80, 1);
    let refix_ip = |p: &mut Vec<u8>| {
        p[10] = 0;
        p[11] = 0;
        let sum = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    };
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::Malformed),
        (good[..19].to_vec(), DropReason::Malformed),
        (vec![0x60; 40], DropReason::Malformed),
    ];
    let mut bad_ip_sum = good.clone();
    bad_ip_sum[10] ^= 0xff;
    cases.push((bad_ip_sum, DropReason::Checksum));
    let mut fragment = good.clone();
    fragment[6] |= 0x20; // MF
    refix_ip(&mut fragment);
    cases.push((fragment, DropReason::Fragment));
    let mut not_ours = good.clone();
    not_ours[19] = 99;
    refix_ip(&mut not_ours);
    cases.push((not_ours, DropReason::NotForUs));
    let mut udp = good.clone();
    udp[9] = 17;
    refix_ip(&mut udp);
    cases.push((udp, DropReason::Unsupported));
    let mut bad_tcp_sum = good.clone();
    bad_tcp_sum[20 + 16] ^= 0x01;
    cases.push((bad_tcp_sum, DropReason::Checksum));
    let mut short_tcp = good[..30].to_vec();
    short_tcp[2..4].copy_from_slice(&30u16.to_be_bytes());
    refix_ip(&mut short_tcp);
    cases.push((short_tcp, DropReason::Malformed));
    let mut broadcast_source = good.clone();
    broadcast_source[12..16].copy_from_slice(&[255, 255, 255, 255]);
    refix_ip(&mut broadcast_source);
    cases.push((broadcast_source, DropReason::Malformed));
    // ICMP timestamp request (type 13): not handled.
    let mut timestamp = vec![13u8, 0, 0, 0, 0, 1, 0, 1];
    timestamp.extend_from_slice(&[0; 12]);
    let sum = internet_checksum(&timestamp);
    timestamp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut icmp = vec![0; 20 + timestamp.len()];
    icmp[20..].copy_from_slice(&timestamp);
    ip_header(ADDR_A, ADDR_B, IpProtocol::Icmp, timestamp.len(), &mut icmp);
    cases.push((icmp, DropReason::Unsupported));

    let total = cases.len() as u64;
    for (i, (packet, reason)) in cases.into_iter().enumerate() {
        let before = s.stats().drops(reason);
        s.handle_packet(T0, &packet);
        assert_eq!(s.stats().drops(reason), before + 1, "case {i}: {reason:?}");
    }
    assert!(drain_transmit(&mut s, T0).is_empty());
    assert_eq!(s.stats().packets_in, total);
    assert_eq!(s.stats().checksum_errors, 2);
    assert_eq!(s.stats().segments_in, 0);
}

// ------------------------------------------------------------------ ports

#[test]
fn ephemeral_ports_are_unique_and_in_linuxs_range() {
    let mut s = server_stack();
    let mut seen = HashSet::new();
    for i in 0..400u16 {
        let c = s.socket();
        // Two destinations: each connection's 4-tuple must be unique.
        let remote = peer(80 + (i % 2));
        s.connect(T0, c, remote).expect("connect");
        let local = s.local_addr(c).expect("bound");
        assert_eq!(local.ip(), ADDR_B);
        assert!((32768..=60999).contains(&local.port()), "{local}");
        assert!(
            seen.insert((local, remote)),
            "4-tuple reused: {local} -> {remote}"
        );
        assert_eq!(s.peer_addr(c), Err(tcpd_stack::SocketError::NotConnected));
    }
    assert_eq!(s.stats().active_opens, 400);
    // bind(port 0) picks a port nobody uses at all.
    let b = s.socket();
    s.bind(b, any(0)).expect("bind 0");
    let port = s.local_addr(b).expect("bound").port();
    assert!((32768..=60999).contains(&port));
    assert!(seen.iter().all(|(l, _)| l.port() != port));
    // connect starts on the even ports, bind(0) on the odd ones (Linux).
    assert!(seen.iter().all(|(l, _)| l.port() % 2 == 0));
    assert_eq!(port % 2, 1);
}

#[test]
fn connect_rejects_bad_destinations_and_states() {
    let mut s = server_stack();
    let c = s.socket();
    assert_eq!(s.connect(T0, c, peer(0)), Err(ConnectError::Invalid));
    for ip in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        ADDR_B,
        Ipv4Addr::new(10, 0, 0, 255), // the /24's broadcast
    ] {
        assert_eq!(
            s.connect(T0, c, SocketAddrV4::new(ip, 80)),
            Err(ConnectError::AddrNotAvailable),
            "{ip}"
        );
    }
    s.connect(T0, c, peer(80)).expect("connect");
    assert_eq!(s.connect(T0, c, peer(80)), Err(ConnectError::InProgress));
    let l = listener(&mut s, 8080, 4);
    assert_eq!(s.connect(T0, l, peer(80)), Err(ConnectError::Invalid));
    assert_eq!(
        s.connect(T0, SocketHandle(9999), peer(80)),
        Err(ConnectError::BadHandle)
    );
    assert_eq!(s.listen(c, 1), Err(ListenError::InvalidState));
}

#[test]
fn bind_follows_linux_reuseaddr_rules() {
    let mut s = server_stack();
    let a = s.socket();
    s.bind(a, any(8080)).expect("first bind");
    assert_eq!(s.bind(a, any(8081)), Err(BindError::AlreadyBound));
    let b = s.socket();
    assert_eq!(s.bind(b, ours(8080)), Err(BindError::AddrInUse));
    assert_eq!(
        s.bind(b, SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 1)),
        Err(BindError::AddrNotAvailable)
    );
    // Only one side with SO_REUSEADDR is not enough.
    s.set_option(T0, b, SockOption::ReuseAddr(true))
        .expect("set");
    assert_eq!(s.bind(b, ours(8080)), Err(BindError::AddrInUse));
    // Both: sharing is fine while neither listens.
    s.set_option(T0, a, SockOption::ReuseAddr(true))
        .expect("set");
    s.bind(b, ours(8080)).expect("shared bind");
    s.listen(a, 8).expect("first listener");
    assert_eq!(s.listen(b, 8), Err(ListenError::AddrInUse));
    // A listener blocks even a SO_REUSEADDR bind.
    let c = s.socket();
    s.set_option(T0, c, SockOption::ReuseAddr(true))
        .expect("set");
    assert_eq!(s.bind(c, any(8080)), Err(BindError::AddrInUse));
    s.close(T0, a).expect("close");
    s.listen(b, 8).expect("listener after the first is gone");
    assert_eq!(s.local_addr(b), Ok(ours(8080).into()));
    // Handles are never reused and closed ones are EBADF.
    assert_eq!(s.close(T0, a), Err(tcpd_stack::SocketError::BadHandle));
    let d = s.socket();
    assert!(d.0 > c.0);
    // listen() without bind picks an ephemeral port.
    s.listen(d, 8).expect("auto-bind");
    assert!((32768..=60999).contains(&s.local_addr(d).expect("bound").port()));
}

/// Server-side active close leaves a TIME-WAIT connection on the listening
/// port; rebinding it needs SO_REUSEADDR on both (the connection inherited
/// the listener's) until 2×MSL has passed.
#[test]
fn time_wait_blocks_rebind_without_reuseaddr() {
    let mut sim = Sim::new(3, LinkConfig::perfect());
    let l = sim.b.socket();
    sim.b
        .set_option(sim.now, l, SockOption::ReuseAddr(true))
        .expect("set");
    sim.b.bind(l, any(9000)).expect("bind");
    sim.b.listen(l, 4).expect("listen");
    let c = sim.a.socket();
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 9000))
        .expect("connect");
    let server = sim.accept_on_b(l);
    sim.b.close(sim.now, server).expect("server closes first");
    sim.run_until("client sees EOF", |sim| {
        let mut buf = [0u8; 16];
        matches!(sim.a.recv(sim.now, c, &mut buf, false), Ok(0))
    });
    sim.a.close(sim.now, c).expect("client closes");
    sim.b.close(sim.now, l).expect("listener closes");
    sim.run_until("server in TIME-WAIT", |sim| {
        sim.b
            .sockets()
            .iter()
            .any(|i| i.state == TcpState::TimeWait)
    });
    let info = sim.b.sockets();
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!((info[0].handle, info[0].local), (None, ours(9000).into()));

    let plain = sim.b.socket();
    assert_eq!(sim.b.bind(plain, any(9000)), Err(BindError::AddrInUse));
    let reusing = sim.b.socket();
    sim.b
        .set_option(sim.now, reusing, SockOption::ReuseAddr(true))
        .expect("set");
    sim.b
        .bind(reusing, any(9000))
        .expect("SO_REUSEADDR over TIME-WAIT");
    sim.b.listen(reusing, 4).expect("listen over TIME-WAIT");
    sim.b.close(sim.now, reusing).expect("close");

    let entered = sim.now;
    sim.run_until_idle();
    assert!(sim.now - entered >= Duration::from_secs(60) - Duration::from_millis(10));
    assert!(sim.b.sockets().iter().all(|i| i.handle.is_some()));
    sim.b.bind(plain, any(9000)).expect("free after 2MSL");
}

// ------------------------------------------------------------------ listeners

#[test]
fn backlog_overflow_drops_syns_and_counts_them() {
    // The backlog bounds the accept queue (the SYN queue has its own bound,
    // tests/syn_cookies.rs): with two completed and unaccepted children, a
    // third SYN is dropped unanswered, as Linux's tcp_conn_request does.
    let mut s = server_stack();
    let l = listener(&mut s, 80, 2);
    let first = open_half(&mut s, T0, 1001, 80);
    let second = open_half(&mut s, T0, 1002, 80);
    finish_handshake(&mut s, T0, 1001, 80, &first);
    finish_handshake(&mut s, T0, 1002, 80, &second);
    assert_eq!(s.socket_info(l).expect("listener").accept_queue, 2);
    s.handle_packet(T0, &syn(1003, 80, 1000));
    assert!(
        drain_transmit(&mut s, T0).is_empty(),
        "third SYN dropped silently"
    );
    assert_eq!(s.stats().drops(DropReason::ListenOverflow), 1);
    assert_eq!(s.stats().listen_overflows, 1);
    assert_eq!(s.stats().listen_drops, 1);
    assert_eq!(s.stats().passive_opens, 2);
    // One is accepted: room for the retried SYN.
    let (h, from) = s.accept(l).expect("accept");
    assert_eq!(from, peer(1001).into());
    assert_eq!(s.socket_info(h).expect("info").state, TcpState::Established);
    open_half(&mut s, T0, 1003, 80);
    assert_eq!(s.stats().drops(DropReason::ListenOverflow), 1);
}

#[test]
fn accept_returns_connections_in_completion_order() {
    let mut s = server_stack();
    let l = listener(&mut s, 80, 16);
    assert_eq!(s.accept(l), Err(tcpd_stack::AcceptError::WouldBlock));
    let synacks: Vec<_> = (1001..=1003)
        .map(|p| (p, open_half(&mut s, T0, p, 80)))
        .collect();
    for &i in &[2usize, 0, 1] {
        let (port, ref synack) = synacks[i];
        finish_handshake(&mut s, T0, port, 80, synack);
    }
    assert_eq!(s.socket_info(l).expect("info").accept_queue, 3);
    let order: Vec<u16> = (0..3)
        .map(|_| s.accept(l).expect("accept").1.port())
        .collect();
    assert_eq!(order, vec![1003, 1001, 1002]);
    assert_eq!(s.accept(l), Err(tcpd_stack::AcceptError::WouldBlock));
    let c = s.socket();
    assert_eq!(s.accept(c), Err(tcpd_stack::AcceptError::NotListening));
}

#[test]
fn child_reset_before_accept_leaves_the_queue() {
    let mut s = server_stack();
    let l = listener(&mut s, 80, 16);
    let synack = open_half(&mut s, T0, 1001, 80);
    finish_handshake(&mut s, T0, 1001, 80, &synack);
    assert_eq!(s.readiness(l), Ok(Readiness::IN));
    let rst = Segment::new(peer(1001), ours(80), TcpFlags::RST, 1001, 0);
    s.handle_packet(T0, &rst.to_packet());
    drain_transmit(&mut s, T0);
    assert_eq!(s.readiness(l), Ok(Readiness::empty()));
    assert_eq!(s.accept(l), Err(tcpd_stack::AcceptError::WouldBlock));
    assert_eq!(s.sockets().len(), 1, "only the listener is left");
}

#[test]
fn readiness_and_state_events_for_connect_and_accept() {
    let mut sim = Sim::new(5, LinkConfig::perfect());
    let l = sim.b.socket();
    sim.b.bind(l, any(80)).expect("bind");
    sim.b.listen(l, 8).expect("listen");
    let c = sim.a.socket();
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    sim.run_until("listener readable", |sim| {
        sim.b.readiness(l) == Ok(Readiness::IN)
    });
    sim.run_until_idle();
    assert_eq!(readiness_events(&sim.events_a, c), vec![Readiness::OUT]);
    assert_eq!(readiness_events(&sim.events_b, l), vec![Readiness::IN]);
    assert!(
        state_events(&sim.events_a).contains(&(Some(c), TcpState::SynSent, TcpState::Established)),
        "{:?}",
        sim.events_a
    );
    assert!(
        state_events(&sim.events_b).contains(&(None, TcpState::SynReceived, TcpState::Established)),
        "{:?}",
        sim.events_b
    );

    let (server, _) = sim.b.accept(l).expect("accept");
    sim.run_until_idle();
    assert_eq!(
        readiness_events(&sim.events_b, l),
        vec![Readiness::IN, Readiness::empty()]
    );
    assert_eq!(
        readiness_events(&sim.events_b, server),
        vec![Readiness::OUT]
    );

    sim.a.send(sim.now, c, b"hello").expect("send");
    sim.run_until_idle();
    assert_eq!(
        readiness_events(&sim.events_b, server),
        vec![Readiness::OUT, Readiness::IN | Readiness::OUT]
    );
    let mut buf = [0u8; 16];
    assert_eq!(sim.b.recv(sim.now, server, &mut buf, false), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    sim.run_until_idle();
    assert_eq!(
        readiness_events(&sim.events_b, server).last(),
        Some(&Readiness::OUT)
    );
    // FIN from the client: readable (EOF) and RDHUP.
    sim.a
        .shutdown(sim.now, c, tcpd_stack::Shutdown::Write)
        .expect("shutdown");
    sim.run_until_idle();
    let last = *readiness_events(&sim.events_b, server)
        .last()
        .expect("event");
    assert!(last.contains(Readiness::IN | Readiness::RDHUP), "{last:?}");
    assert_eq!(sim.b.recv(sim.now, server, &mut buf, false), Ok(0));
}

/// Sets up `n` client connections to B:80 that B has completed but not accepted.
fn unaccepted_pair(seed: u64, n: usize) -> (Sim, SocketHandle, Vec<SocketHandle>) {
    let mut sim = Sim::new(seed, LinkConfig::perfect());
    let l = sim.b.socket();
    sim.b.bind(l, any(80)).expect("bind");
    sim.b.listen(l, 16).expect("listen");
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let c = sim.a.socket();
            sim.a
                .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
                .expect("connect");
            c
        })
        .collect();
    sim.run_until("all established", |sim| {
        sim.b.socket_info(l).expect("listener").accept_queue as usize == n
    });
    sim.run_until_idle();
    (sim, l, clients)
}

#[test]
fn closing_a_listener_resets_its_unaccepted_children() {
    let (mut sim, l, clients) = unaccepted_pair(7, 2);
    for &c in &clients {
        assert_eq!(
            sim.a.socket_info(c).expect("info").state,
            TcpState::Established
        );
    }
    sim.b.close(sim.now, l).expect("close listener");
    sim.run_until_idle();
    assert!(sim.b.stats().rst_sent >= 2);
    assert!(sim.b.sockets().is_empty(), "{:?}", sim.b.sockets());
    for &c in &clients {
        let mut buf = [0u8; 4];
        assert_eq!(
            sim.a.recv(sim.now, c, &mut buf, false),
            Err(RecvError::Failed(ConnError::Reset))
        );
        assert_eq!(sim.a.socket_info(c).expect("info").state, TcpState::Closed);
    }
}

#[test]
fn abort_matching_resets_and_reports_aborted() {
    let (mut sim, l, clients) = unaccepted_pair(9, 3);
    let (server, from) = sim.b.accept(l).expect("accept");
    assert_eq!(from, sim.a.local_addr(clients[0]).expect("addr"));
    let local = sim.b.local_addr(server).expect("addr");
    assert_eq!(sim.b.abort_matching(sim.now, local, from), 1);
    let mut buf = [0u8; 4];
    assert_eq!(
        sim.b.recv(sim.now, server, &mut buf, false),
        Err(RecvError::Failed(ConnError::Aborted))
    );
    sim.run_until_idle();
    assert_eq!(
        sim.a.recv(sim.now, clients[0], &mut buf, false),
        Err(RecvError::Failed(ConnError::Reset))
    );
    // Wildcards: every connection from A's address.
    let n = sim
        .b
        .abort_matching(sim.now, any(0), SocketAddrV4::new(ADDR_A, 0));
    assert_eq!(n, 2);
    sim.run_until_idle();
    for &c in &clients[1..] {
        assert_eq!(
            sim.a.recv(sim.now, c, &mut buf, false),
            Err(RecvError::Failed(ConnError::Reset))
        );
    }
    assert_eq!(sim.b.abort_matching(sim.now, any(0), any(0)), 0);
}

#[test]
fn options_before_connect_reach_the_connection() {
    let mut sim = Sim::new(13, LinkConfig::perfect());
    let l = sim.b.socket();
    sim.b
        .set_option(sim.now, l, SockOption::NoDelay(true))
        .expect("set");
    sim.b.bind(l, any(80)).expect("bind");
    sim.b.listen(l, 8).expect("listen");
    let c = sim.a.socket();
    sim.a
        .set_option(sim.now, c, SockOption::KeepAlive(true))
        .expect("set");
    sim.a
        .set_option(sim.now, c, SockOption::RecvBuffer(65536))
        .expect("set");
    // TCP_MAXSEG (issue 10, bug 3): Linux's range is 88..=32767.
    assert_eq!(
        sim.a.set_option(sim.now, c, SockOption::MaxSegment(50)),
        Err(tcpd_stack::SocketError::InvalidValue)
    );
    sim.a
        .set_option(sim.now, c, SockOption::MaxSegment(1000))
        .expect("TCP_MAXSEG is settable before connect");
    assert_eq!(
        sim.a.get_option(c, OptionName::MaxSegment),
        Ok(SockOption::MaxSegment(1000))
    );
    assert_eq!(
        sim.a.set_option(sim.now, c, SockOption::KeepCount(0)),
        Err(tcpd_stack::SocketError::InvalidValue)
    );
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    // Keepalive timers never let the simulation go idle: run until accepted.
    sim.run_until("handshake done", |sim| {
        sim.b.readiness(l) == Ok(Readiness::IN)
    });
    assert_eq!(
        sim.a.get_option(c, OptionName::KeepAlive),
        Ok(SockOption::KeepAlive(true))
    );
    assert_eq!(
        sim.a.get_option(c, OptionName::RecvBuffer),
        Ok(SockOption::RecvBuffer(65536))
    );
    assert_eq!(
        sim.a.get_option(c, OptionName::MaxSegment),
        Ok(SockOption::MaxSegment(988))
    );
    // (The clamp of 1000 less the 12 bytes of the timestamp option, as
    // Linux reports it; the peer's MSS, 1460, is larger.)
    assert_eq!(
        sim.a.get_option(c, OptionName::Error),
        Ok(SockOption::Error(None))
    );
    let (server, _) = sim.b.accept(l).expect("accept");
    assert_eq!(
        sim.b.get_option(server, OptionName::NoDelay),
        Ok(SockOption::NoDelay(true))
    );
}

#[test]
fn connection_refused_is_reported_once() {
    let mut sim = Sim::new(17, LinkConfig::perfect());
    let c = sim.a.socket();
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 4444))
        .expect("connect");
    sim.run_until_idle();
    assert!(sim.a.readiness(c).expect("live").contains(Readiness::ERR));
    assert_eq!(
        sim.a.connect(sim.now, c, SocketAddrV4::new(ADDR_B, 4444)),
        Err(ConnectError::Failed(ConnError::Refused))
    );
    assert_eq!(
        sim.a.get_option(c, OptionName::Error),
        Ok(SockOption::Error(None))
    );
    assert_eq!(sim.a.stats().failed_opens, 1);
    assert_eq!(sim.b.stats().rst_sent, 1);
    // The failed connection released its 4-tuple; the handle stays until closed.
    assert_eq!(sim.a.sockets().len(), 1);
    sim.a.close(sim.now, c).expect("close");
    assert!(sim.a.sockets().is_empty());
}

/// A new SYN for a 4-tuple whose server side is in TIME-WAIT reopens it
/// (RFC 9293 §3.10.7.4, RFC 6191) when a listener is there.
#[test]
fn syn_reopens_a_time_wait_four_tuple() {
    let mut sim = Sim::new(21, LinkConfig::perfect());
    let l = listener(&mut sim.b, 80, 8);
    let open = |sim: &mut Sim| {
        let c = sim.a.socket();
        sim.a
            .set_option(sim.now, c, SockOption::ReuseAddr(true))
            .expect("set");
        sim.a
            .bind(c, SocketAddrV4::new(ADDR_A, 45000))
            .expect("bind");
        sim.a
            .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
            .expect("connect");
        (c, sim.accept_on_b(l))
    };
    let (c, server) = open(&mut sim);
    sim.b.close(sim.now, server).expect("server closes first");
    sim.run_until("client EOF", |sim| {
        let mut buf = [0u8; 4];
        matches!(sim.a.recv(sim.now, c, &mut buf, false), Ok(0))
    });
    sim.a.close(sim.now, c).expect("client closes");
    sim.run_until("server TIME-WAIT, client gone", |sim| {
        sim.a.sockets().is_empty()
            && sim
                .b
                .sockets()
                .iter()
                .any(|i| i.state == TcpState::TimeWait)
    });
    let (c2, server2) = open(&mut sim);
    let b_sockets = sim.b.sockets();
    assert!(
        b_sockets.iter().all(|i| i.state != TcpState::TimeWait),
        "{b_sockets:?}"
    );
    assert_eq!(
        sim.b.socket_info(server2).expect("info").state,
        TcpState::Established
    );
    assert_eq!(
        sim.a.socket_info(c2).expect("info").state,
        TcpState::Established
    );
    assert_eq!(sim.b.stats().passive_opens, 2);
}

/// Readiness events are coalesced per handle: many changes between two
/// drains yield one event carrying the readiness at drain time.
#[test]
fn readiness_events_are_coalesced_per_handle() {
    let mut s = server_stack();
    let l = listener(&mut s, 80, 8);
    let synack = open_half(&mut s, T0, 1001, 80);
    finish_handshake(&mut s, T0, 1001, 80, &synack);
    let (h, _) = s.accept(l).expect("accept");
    while s.poll_event().is_some() {}
    let mut buf = [0u8; 64];
    for i in 0..100u32 {
        let mut data = Segment::new(
            peer(1001),
            ours(80),
            TcpFlags::ACK | TcpFlags::PSH,
            1001 + 10 * i,
            synack.seq.wrapping_add(1),
        );
        data.payload = b"0123456789";
        s.handle_packet(T0, &data.to_packet());
        // Read every other time: readiness flips IN on and off.
        if i % 2 == 1 {
            assert_eq!(s.recv(T0, h, &mut buf, false), Ok(20));
        }
    }
    s.handle_packet(T0, &{
        let mut d = Segment::new(
            peer(1001),
            ours(80),
            TcpFlags::ACK,
            2001,
            synack.seq.wrapping_add(1),
        );
        d.payload = b"tail";
        d.to_packet()
    });
    let events: Vec<StackEvent> = std::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, StackEvent::Readiness { .. }))
        .collect();
    assert_eq!(
        events,
        vec![StackEvent::Readiness {
            socket: h,
            ready: Readiness::IN | Readiness::OUT
        }]
    );
}

/// A readiness change that is undone before the next drain still yields an
/// event. The daemon's reader drains the buffer, finds it empty (WouldBlock)
/// and waits for an event; data arriving in the same driver turn sets IN
/// again, back to the last reported value. Without the event the reader
/// would wait forever with data in the buffer (the lost wake-up seen as a
/// stalled transfer under impairment).
#[test]
fn readiness_change_undone_before_the_drain_still_yields_an_event() {
    let mut s = server_stack();
    let l = listener(&mut s, 80, 8);
    let synack = open_half(&mut s, T0, 1001, 80);
    finish_handshake(&mut s, T0, 1001, 80, &synack);
    let (h, _) = s.accept(l).expect("accept");
    let data_at = |seq: u32, payload: &'static [u8]| {
        let mut d = Segment::new(
            peer(1001),
            ours(80),
            TcpFlags::ACK | TcpFlags::PSH,
            seq,
            synack.seq.wrapping_add(1),
        );
        d.payload = payload;
        d.to_packet()
    };
    s.handle_packet(T0, &data_at(1001, b"first"));
    let events: Vec<StackEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&StackEvent::Readiness {
        socket: h,
        ready: Readiness::IN | Readiness::OUT
    }));
    // The reader drains the buffer and then finds it empty...
    let mut buf = [0u8; 64];
    assert_eq!(s.recv(T0, h, &mut buf, false), Ok(5));
    assert_eq!(s.recv(T0, h, &mut buf, false), Err(RecvError::WouldBlock));
    // ...and before anyone drains the events, more data arrives.
    s.handle_packet(T0, &data_at(1006, b"second"));
    let events: Vec<StackEvent> = std::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, StackEvent::Readiness { .. }))
        .collect();
    assert_eq!(
        events,
        vec![StackEvent::Readiness {
            socket: h,
            ready: Readiness::IN | Readiness::OUT
        }],
        "the waiting reader must be woken"
    );
}

/// RFC 6298 §5.5 backoff and TCP_SYNCNT: a SYN that is never answered
/// fails the connect with ETIMEDOUT after 1+2+4+8+16+32+64 s (6 retries).
#[test]
fn unanswered_connect_times_out() {
    let mut link = LinkConfig::perfect();
    link.loss = 1.0;
    let mut sim = Sim::new(23, link);
    let c = sim.a.socket();
    let start = sim.now;
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    sim.run_until_idle();
    let took = sim.now - start;
    assert!(
        took >= Duration::from_secs(127) && took <= Duration::from_secs(128),
        "{took:?}"
    );
    assert_eq!(sim.link.stats.sent, 7, "SYN plus 6 retransmissions");
    assert_eq!(
        sim.a.get_option(c, OptionName::Error),
        Ok(SockOption::Error(Some(ConnError::TimedOut)))
    );
    assert_eq!(sim.a.stats().failed_opens, 1);
    assert_eq!(sim.a.stats().retransmits, 6);
}

/// A connection whose user has closed it, with data the peer never
/// acknowledges, gives up after `max_retries` and is forgotten.
#[test]
fn orphaned_connection_is_reaped_after_retries_fail() {
    let mut a_config = test_config(ADDR_A, 1);
    a_config.max_retries = 3;
    let mut sim = Sim::with_configs(a_config, test_config(ADDR_B, 2), LinkConfig::perfect(), 29);
    let l = listener(&mut sim.b, 80, 4);
    let c = sim.a.socket();
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    sim.run_until("listener readable", |sim| {
        sim.b.readiness(l) == Ok(Readiness::IN)
    });
    sim.link.config.loss = 1.0;
    assert_eq!(sim.a.send(sim.now, c, &[1; 5000]), Ok(5000));
    sim.a
        .close(sim.now, c)
        .expect("close with unacknowledged data");
    sim.run_until("A forgets the connection", |sim| sim.a.sockets().is_empty());
    assert!(sim.a.stats().retransmits >= 3);
    let states = state_events(&sim.events_a);
    assert_eq!(
        states.last().map(|s| s.2),
        Some(TcpState::Closed),
        "{states:?}"
    );
}

/// ICMP "fragmentation needed" quoting one of our segments reaches its
/// connection, whose later segments fit the next-hop MTU (RFC 1191).
#[test]
fn fragmentation_needed_lowers_the_segment_size() {
    let mut s = server_stack();
    let l = listener(&mut s, 80, 8);
    let synack = open_half(&mut s, T0, 1001, 80);
    let mut ack = Segment::new(
        peer(1001),
        ours(80),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    ack.window = 65535;
    s.handle_packet(T0, &ack.to_packet());
    let (h, _) = s.accept(l).expect("accept");
    assert_eq!(s.send(T0, h, &[7; 2000]), Ok(2000));
    let out = drain_transmit(&mut s, T0);
    assert_eq!(out[0].len(), 1500, "a full-sized first segment");
    // Type 3 code 4, next-hop MTU 1000, quoting the IPv4 header and 8 bytes.
    let mut message = vec![3u8, 4, 0, 0, 0, 0];
    message.extend_from_slice(&1000u16.to_be_bytes());
    message.extend_from_slice(&out[0][..28]);
    let sum = internet_checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0; 20 + message.len()];
    packet[20..].copy_from_slice(&message);
    ip_header(
        Ipv4Addr::new(10, 0, 0, 254),
        ADDR_B,
        IpProtocol::Icmp,
        message.len(),
        &mut packet,
    );
    s.handle_packet(T0, &packet);
    assert_eq!(s.stats().icmp_unreachable_received, 1);
    assert_eq!(s.send(T0, h, &[8; 3000]), Ok(3000));
    let later = T0 + Duration::from_secs(2);
    s.handle_timeout(later);
    let out = drain_transmit(&mut s, later);
    assert!(!out.is_empty());
    for packet in &out {
        assert!(
            packet.len() <= 1000,
            "{} bytes after PMTU 1000",
            packet.len()
        );
    }
    assert!(
        matches!(s.get_option(h, OptionName::MaxSegment), Ok(SockOption::MaxSegment(m)) if m <= 960)
    );
}

/// Per-connection info (`ss -ti` style) after a small transfer: the
/// counters, the estimator, the negotiated MSS and the algorithm; the
/// listener reports its backlog and accept queue.
#[test]
fn socket_info_reports_connection_counters() {
    let mut sim = Sim::new(41, LinkConfig::perfect());
    let l = sim.b.socket();
    sim.b.bind(l, any(80)).expect("bind");
    sim.b.listen(l, 5).expect("listen");
    let c = sim.a.socket();
    sim.a
        .connect(sim.now, c, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    sim.run_until_idle();
    let listener_info = sim.b.sockets();
    let listener_info = listener_info
        .iter()
        .find(|i| i.handle == Some(l))
        .expect("listener listed");
    assert_eq!(listener_info.state, TcpState::Listen);
    assert_eq!(
        (listener_info.listen_backlog, listener_info.accept_queue),
        (5, 1)
    );
    let (server, _) = sim.b.accept(l).expect("accept");
    let data = vec![0x5a; 10_000];
    assert_eq!(sim.a.send(sim.now, c, &data), Ok(10_000));
    sim.run_until_idle();
    let mut buf = vec![0u8; 20_000];
    assert_eq!(sim.b.recv(sim.now, server, &mut buf, false), Ok(10_000));
    sim.run_until_idle();

    let client = sim
        .a
        .sockets()
        .into_iter()
        .find(|i| i.handle == Some(c))
        .expect("client listed");
    assert_eq!(client.state, TcpState::Established);
    assert_eq!(client.remote, SocketAddrV4::new(ADDR_B, 80).into());
    assert_eq!((client.bytes_sent, client.bytes_received), (10_000, 0));
    assert_eq!((client.send_queue, client.recv_queue), (0, 0));
    assert_eq!(client.retransmits, 0);
    // MSS = MTU - 40, less the 12-byte timestamps option (RFC 7323 §3.2).
    assert_eq!(usize::from(client.mss), usize::from(MTU) - 40 - 12);
    assert_eq!(client.congestion, tcpd_stack::CongestionAlgorithm::Cubic);
    assert!(client.srtt > Duration::ZERO && client.srtt < Duration::from_millis(50));
    assert!(
        client.rto >= Duration::from_millis(200),
        "RFC 6298 floor (200 ms here)"
    );
    assert!(client.cwnd >= 10 * usize::from(client.mss), "IW10 or more");
    let server_info = sim
        .b
        .sockets()
        .into_iter()
        .find(|i| i.handle == Some(server))
        .expect("server listed");
    assert_eq!(
        (server_info.bytes_sent, server_info.bytes_received),
        (0, 10_000)
    );
}

/// RFC 6056 §3.3.4 as Linux: towards one destination, successive
/// connections walk the range's even ports (2 to 16 ports a step), so a
/// port comes back only once the walk wraps — not within 14116 / 16 = 882
/// connects, even when the earlier connections are long gone from this
/// stack (the peer may still hold them in TIME-WAIT). Where the walk
/// starts depends on the destination and the secret.
#[test]
fn ephemeral_ports_towards_one_destination_do_not_repeat() {
    let mut s = server_stack();
    let remote = peer(80);
    let mut ports = HashSet::new();
    for _ in 0..880 {
        let c = s.socket();
        s.connect(T0, c, remote).expect("connect");
        ports.insert(s.local_addr(c).expect("bound").port());
        // Closing in SYN-SENT forgets the connection at once (RFC 9293 §3.10.4).
        s.close(T0, c).expect("close");
    }
    assert_eq!(ports.len(), 880, "a port repeated within 880 connects");
    // Other destinations start elsewhere in the range.
    let first_port = |s: &mut Stack, remote| {
        let c = s.socket();
        s.connect(T0, c, remote).expect("connect");
        let port = s.local_addr(c).expect("bound").port();
        s.close(T0, c).expect("close");
        port
    };
    let (a, b) = (first_port(&mut s, peer(81)), first_port(&mut s, peer(82)));
    assert!(a.abs_diff(b) > 1, "destinations share a walk: {a} then {b}");
}

/// One step of [`ephemeral_port_choice_follows_linux`].
#[derive(Clone, Copy, Debug)]
enum PortOp {
    /// connect() an unbound socket to the peer's port.
    Connect(u16),
    /// bind() to this port (0: an ephemeral one), SO_REUSEADDR or not.
    Bind(u16, bool),
    /// listen() on an unbound socket.
    Listen,
}

/// What a [`PortOp`] must give: a local port among these, or the error.
#[derive(Clone, Copy, Debug)]
enum PortWant {
    OneOf(&'static [u16]),
    Fails,
}

/// Port choice against Linux's (`__inet_hash_connect`,
/// `inet_csk_find_open_port`) over small configured ranges, one table row
/// per rule: the range bounds every pick; connect takes the ports at an
/// even distance from the range's start first, bind(0)/listen the odd
/// ones; a port picked by connect serves other destinations but never
/// bind(0); an explicitly bound port is never picked by connect; an
/// odd-sized range leaves its last port out; SO_REUSEADDR bind(0) tries the
/// lower half first; exhaustion is EADDRNOTAVAIL for connect and
/// EADDRINUSE for bind/listen.
#[test]
fn ephemeral_port_choice_follows_linux() {
    use PortOp::*;
    use PortWant::*;
    type Row = (&'static str, (u16, u16), &'static [(PortOp, PortWant)]);
    const EVEN: &[u16] = &[40000, 40002];
    const ODD: &[u16] = &[40001, 40003];
    let rows: &[Row] = &[
        (
            "connect: even ports, then odd, then EADDRNOTAVAIL",
            (40000, 40003),
            &[
                (Connect(80), OneOf(EVEN)),
                (Connect(80), OneOf(EVEN)),
                (Connect(80), OneOf(ODD)),
                (Connect(80), OneOf(ODD)),
                (Connect(80), Fails),
                // Another destination reuses the same ports.
                (Connect(81), OneOf(EVEN)),
                (Connect(81), OneOf(EVEN)),
                (Connect(81), OneOf(ODD)),
                (Connect(81), OneOf(ODD)),
                (Connect(81), Fails),
                // Ports held by connects are not free for bind(0) or listen.
                (Bind(0, false), Fails),
                (Listen, Fails),
            ],
        ),
        (
            "bind(0) and listen: odd ports first, then even",
            (40000, 40003),
            &[
                (Bind(0, false), OneOf(ODD)),
                (Listen, OneOf(ODD)),
                (Bind(0, false), OneOf(EVEN)),
                (Bind(0, false), OneOf(EVEN)),
                (Bind(0, false), Fails),
                // Every port has an explicit owner: connect finds none.
                (Connect(80), Fails),
            ],
        ),
        (
            "an explicitly bound port is not shared with connect",
            (40000, 40003),
            &[
                (Bind(40000, false), OneOf(&[40000])),
                (Connect(80), OneOf(&[40002])),
                (Connect(80), OneOf(ODD)),
                (Connect(80), OneOf(ODD)),
                (Connect(80), Fails),
            ],
        ),
        (
            "an odd-sized range never hands out its last port",
            (40000, 40002),
            &[
                (Connect(80), OneOf(&[40000])),
                (Connect(80), OneOf(&[40001])),
                (Connect(80), Fails),
                (Bind(0, false), Fails),
                (Bind(40002, false), OneOf(&[40002])),
            ],
        ),
        (
            "SO_REUSEADDR bind(0): the lower half first",
            (40000, 40007),
            &[
                (Bind(0, true), OneOf(ODD)),
                (Bind(0, true), OneOf(ODD)),
                (Bind(0, true), OneOf(EVEN)),
                (Bind(0, true), OneOf(EVEN)),
                (Bind(0, true), OneOf(&[40005, 40007])),
                (Bind(0, false), OneOf(&[40005, 40007])),
            ],
        ),
        (
            "a one-port range",
            (50000, 50000),
            &[
                (Connect(80), OneOf(&[50000])),
                (Connect(81), OneOf(&[50000])),
                (Connect(81), Fails),
                (Bind(0, false), Fails),
            ],
        ),
    ];
    for (seed, &(name, (first, last), steps)) in rows.iter().enumerate() {
        for seed in [seed as u64, 1000 + seed as u64] {
            let mut config = test_config(ADDR_B, seed);
            config.local_port_range =
                tcpd_stack::LocalPortRange::new(first, last).expect("valid range");
            let mut s = Stack::new(config, T0);
            let mut taken: Vec<(u16, u16)> = Vec::new();
            for (step, &(op, want)) in steps.iter().enumerate() {
                let h = s.socket();
                let (result, remote) = match op {
                    Connect(port) => (
                        s.connect(T0, h, peer(port)).map_err(|e| format!("{e:?}")),
                        port,
                    ),
                    Bind(port, reuse) => {
                        s.set_option(T0, h, SockOption::ReuseAddr(reuse))
                            .expect("set");
                        (s.bind(h, any(port)).map_err(|e| format!("{e:?}")), 0)
                    }
                    Listen => (s.listen(h, 4).map_err(|e| format!("{e:?}")), 0),
                };
                let context = format!("{name} (seed {seed}), step {step} {op:?}");
                match (want, result) {
                    (OneOf(ports), Ok(())) => {
                        let port = s.local_addr(h).expect("bound").port();
                        assert!(
                            ports.contains(&port),
                            "{context}: got {port}, want one of {ports:?}"
                        );
                        assert!(
                            !taken.contains(&(port, remote)),
                            "{context}: {port} given twice"
                        );
                        taken.push((port, remote));
                    }
                    (Fails, Err(e)) => {
                        let want = match op {
                            Connect(_) => "AddrNotAvailable",
                            _ => "AddrInUse",
                        };
                        assert_eq!(e, want, "{context}");
                    }
                    (want, got) => panic!("{context}: want {want:?}, got {got:?}"),
                }
            }
        }
    }
}

/// A connection of ours in TIME-WAIT keeps its 4-tuple from connect (Linux
/// with `tcp_tw_reuse` = 2, its default, reuses one only over loopback),
/// while the same port still serves other destinations; after 2×MSL the
/// 4-tuple is free again.
#[test]
fn connect_skips_a_four_tuple_in_time_wait() {
    let range = tcpd_stack::LocalPortRange::new(40000, 40001).expect("range");
    let mut a = test_config(ADDR_A, 21);
    a.local_port_range = range;
    let mut sim = Sim::with_configs(a, test_config(ADDR_B, 22), LinkConfig::perfect(), 23);
    let l = sim.b.socket();
    sim.b.bind(l, any(9000)).expect("bind");
    sim.b.listen(l, 4).expect("listen");
    let c = sim.a.socket();
    sim.a.connect(sim.now, c, ours(9000)).expect("connect");
    let server = sim.accept_on_b(l);
    let first = sim.a.local_addr(c).expect("bound").port();
    assert_eq!(first, 40000, "connect starts on the even port");
    // The client closes first: its side goes to TIME-WAIT.
    sim.a.close(sim.now, c).expect("client closes");
    sim.run_until("server sees EOF", |sim| {
        let mut buf = [0u8; 16];
        matches!(sim.b.recv(sim.now, server, &mut buf, false), Ok(0))
    });
    sim.b.close(sim.now, server).expect("server closes");
    sim.run_until("client in TIME-WAIT", |sim| {
        sim.a
            .sockets()
            .iter()
            .any(|i| i.state == TcpState::TimeWait)
    });
    let again = sim.a.socket();
    sim.a
        .connect(sim.now, again, ours(9000))
        .expect("connect again");
    assert_eq!(
        sim.a.local_addr(again).expect("bound").port(),
        40001,
        "the TIME-WAIT 4-tuple is skipped"
    );
    let third = sim.a.socket();
    assert_eq!(
        sim.a.connect(sim.now, third, ours(9000)),
        Err(ConnectError::AddrNotAvailable)
    );
    // Another destination may use the TIME-WAIT connection's port.
    let other = sim.a.socket();
    sim.a
        .connect(sim.now, other, ours(9001))
        .expect("other destination");
    assert_eq!(sim.a.local_addr(other).expect("bound").port(), 40000);
    sim.a.close(sim.now, other).expect("close");
    sim.a.close(sim.now, again).expect("close");
    sim.run_until_idle();
    let fourth = sim.a.socket();
    sim.a
        .connect(sim.now, fourth, ours(9000))
        .expect("free after 2MSL");
}
