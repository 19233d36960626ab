//! Memory levels ([`MemoryLevel`]): the buffered bytes a stack reports per
//! socket (what a daemon charges to its owner), a socket held at `Full`
//! (writes would block, the receive window stops growing but never
//! shrinks) and released, and the stack-wide `tcp_mem` limit with a peer
//! whose application does not read.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::{
    Duration, MemoryLevel, Readiness, RecvError, SendError, SockOption, SocketHandle, Stack,
    StackConfig,
};

/// A listens on port 80 (with `tweak` applied to its configuration), B
/// connects; returns (A's accepted socket, B's socket), established.
fn pair(seed: u64, tweak: impl FnOnce(&mut StackConfig)) -> (Sim, SocketHandle, SocketHandle) {
    let mut a = test_config(ADDR_A, seed * 2 + 1);
    tweak(&mut a);
    let b = test_config(ADDR_B, seed * 2 + 2);
    let mut sim = Sim::with_configs(a, b, LinkConfig::perfect(), seed);
    let l = sim.a.socket();
    sim.a
        .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .expect("bind");
    sim.a.listen(l, 16).expect("listen");
    let (accepted, c) = connect(&mut sim, l);
    (sim, accepted, c)
}

/// B connects to A's listener `l` once more: (A's accepted socket, B's).
fn connect(sim: &mut Sim, l: SocketHandle) -> (SocketHandle, SocketHandle) {
    let c = sim.b.socket();
    sim.b
        .connect(sim.now, c, SocketAddrV4::new(ADDR_A, 80))
        .expect("connect");
    sim.run_until("established", |sim| {
        sim.a.socket_info(l).is_ok_and(|i| i.accept_queue > 0)
    });
    let (accepted, _) = sim.a.accept(l).expect("accept");
    (accepted, c)
}

/// The latest report per socket from `poll_buffered`.
fn reports(stack: &mut Stack) -> Vec<(SocketHandle, usize)> {
    let mut latest: Vec<(SocketHandle, usize)> = Vec::new();
    while let Some((h, bytes)) = stack.poll_buffered() {
        latest.retain(|(seen, _)| *seen != h);
        latest.push((h, bytes));
    }
    latest
}

/// Sends from B as much of `total` bytes as its buffer takes, running the
/// simulation, until `total` went in or nothing moves any more.
fn push(sim: &mut Sim, c: SocketHandle, total: usize) -> usize {
    let data = vec![5u8; 64 * 1024];
    let mut sent = 0;
    loop {
        match sim
            .b
            .send(sim.now, c, &data[..data.len().min(total - sent)])
        {
            Ok(n) => sent += n,
            Err(SendError::WouldBlock) => {}
            Err(e) => panic!("send: {e:?}"),
        }
        if sent == total || !sim.step() {
            return sent;
        }
    }
}

/// Lets `d` of virtual time pass (or less, if everything goes idle).
fn run_for(sim: &mut Sim, d: Duration) {
    let end = sim.now + d;
    while sim.now < end && sim.step() {}
}

fn read_all(sim: &mut Sim, h: SocketHandle) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match sim.a.recv(sim.now, h, &mut buf, false) {
            Ok(0) | Err(RecvError::WouldBlock) => return n,
            Ok(k) => n += k,
            Err(e) => panic!("recv: {e:?}"),
        }
    }
}

#[test]
fn buffered_bytes_are_reported_as_they_change() {
    let (mut sim, a, b) = pair(1, |_| {});
    assert_eq!(reports(&mut sim.a), vec![], "nothing buffered yet");
    let sent = sim.b.send(sim.now, b, &[1u8; 10_000]).expect("send");
    assert_eq!(reports(&mut sim.b), vec![(b, sent)], "queued to send");
    sim.run_until_idle();
    assert_eq!(reports(&mut sim.b), vec![(b, 0)], "acknowledged");
    assert_eq!(reports(&mut sim.a), vec![(a, sent)], "received, unread");
    assert_eq!(sim.a.buffered_bytes(a), sent);
    assert_eq!(sim.a.buffered_total(), sent);
    assert_eq!(read_all(&mut sim, a), sent);
    assert_eq!(reports(&mut sim.a), vec![(a, 0)], "read");
    assert_eq!(sim.a.buffered_total(), 0);
}

#[test]
fn a_full_socket_blocks_writes_and_stops_its_window_without_shrinking_it() {
    let (mut sim, a, b) = pair(2, |_| {});
    sim.a
        .set_memory_level(sim.now, a, MemoryLevel::Full)
        .expect("level");
    // Its own writes would block, and poll says so.
    assert_eq!(sim.a.send(sim.now, a, b"x"), Err(SendError::WouldBlock));
    assert!(!sim.a.readiness(a).expect("ready").contains(Readiness::OUT));
    // The peer may fill what was promised before, and no more: A never
    // advertises a right edge beyond it, even as its application reads.
    let promised = sim.a.socket_info(a).expect("info").rcv_wnd;
    assert!(promised > 0);
    let sent = push(&mut sim, b, 4 * promised);
    assert_eq!(sent, 4 * promised, "B's buffer took it all");
    run_for(&mut sim, Duration::from_secs(2));
    // (Window scaling may round each ACK's window up by less than one
    // scale unit, RFC 7323 §2.4: a right edge may creep by that.)
    let got = read_all(&mut sim, a);
    let rounding = promised / 1448 * 128;
    assert!(
        (promised..=promised + rounding).contains(&got),
        "{got}: the window promised before Full ({promised}), no more"
    );
    run_for(&mut sim, Duration::from_secs(2));
    assert_eq!(read_all(&mut sim, a), 0, "reads open no window while Full");
    assert_eq!(sim.a.stats().rcvq_drops, 0, "Full drops nothing");
    // Released: a window update goes out at once, the rest flows, and A
    // may write again.
    sim.a
        .set_memory_level(sim.now, a, MemoryLevel::Normal)
        .expect("level");
    assert!(sim.a.readiness(a).expect("ready").contains(Readiness::OUT));
    let start = sim.now;
    let mut total = got;
    while total < sent {
        sim.step();
        total += read_all(&mut sim, a);
        assert!(
            sim.now - start < Duration::from_millis(500),
            "the window update did not go out at once: {total} of {sent}"
        );
    }
    assert_eq!(sim.a.send(sim.now, a, b"x"), Ok(1));
}

#[test]
fn an_exhausted_socket_keeps_only_what_lets_it_progress() {
    let (mut sim, a, b) = pair(4, |_| {});
    sim.a
        .set_memory_level(sim.now, a, MemoryLevel::Exhausted)
        .expect("level");
    assert_eq!(sim.a.send(sim.now, a, b"x"), Err(SendError::WouldBlock));
    let promised = sim.a.socket_info(a).expect("info").rcv_wnd;
    let total = 4 * promised;
    // All of it queued at once in B (which would otherwise wait for ACKs
    // that the drops hold back).
    sim.b
        .set_option(sim.now, b, SockOption::SendBuffer(1 << 20))
        .expect("SO_SNDBUF");
    assert_eq!(sim.b.send(sim.now, b, &vec![3u8; total]), Ok(total));
    // Unread, A holds one segment (taken while its queue was empty); the
    // rest of what it had advertised is dropped for B to retransmit.
    run_for(&mut sim, Duration::from_secs(2));
    assert!(
        sim.a.buffered_bytes(a) <= 1448,
        "{}",
        sim.a.buffered_bytes(a)
    );
    assert!(sim.a.stats().rcvq_drops > 0);
    // Reading keeps it going, a segment at a time; released, the rest flows.
    let mut got = read_all(&mut sim, a);
    run_for(&mut sim, Duration::from_secs(5));
    got += read_all(&mut sim, a);
    assert!(got > 1448, "no progress while reading: {got}");
    sim.a
        .set_memory_level(sim.now, a, MemoryLevel::Normal)
        .expect("level");
    let end = sim.now + Duration::from_secs(120);
    while got < total {
        assert!(sim.now < end, "stalled after release: {got} of {total}");
        sim.step();
        got += read_all(&mut sim, a);
    }
}

#[test]
fn tcp_mem_bounds_what_a_stack_buffers_for_readers_that_do_not_read() {
    // low 64 KiB, pressure 128 KiB, high 256 KiB; four connections whose
    // 128 KiB receive buffers could hold 512 KiB.
    let (low, pressure, high) = (64 << 10, 128 << 10, 256 << 10);
    let (mut sim, a0, b0) = pair(3, |c| c.tcp_mem = Some([low, pressure, high]));
    let mut pairs = vec![(a0, b0)];
    let l = sim
        .a
        .sockets()
        .iter()
        .find_map(|i| (i.state == tcpd_stack::TcpState::Listen).then_some(i.handle))
        .flatten()
        .expect("listener");
    for _ in 0..3 {
        pairs.push(connect(&mut sim, l));
    }
    let total = 512 << 10;
    let data = vec![9u8; 64 << 10];
    let mut queued = vec![0usize; pairs.len()];
    let mut peak = 0;
    let feed = |sim: &mut Sim, queued: &mut Vec<usize>| {
        for (i, (_, b)) in pairs.iter().enumerate() {
            let want = data.len().min(total - queued[i]);
            if want > 0
                && let Ok(n) = sim.b.send(sim.now, *b, &data[..want])
            {
                queued[i] += n;
            }
        }
    };
    let end = sim.now + Duration::from_secs(5);
    while sim.now < end {
        feed(&mut sim, &mut queued);
        peak = peak.max(sim.a.buffered_total());
        if !sim.step() {
            break;
        }
    }
    let stats = sim.a.stats();
    assert!(stats.tcp_mem_pressure >= 1, "pressure entered");
    assert!(stats.tcp_mem_full >= 1, "hard limit reached");
    assert!(stats.rcvq_drops >= 1, "data past the limit dropped");
    assert_eq!(sim.a.memory_level(), MemoryLevel::Exhausted);
    // Past the hard limit only a connection with an empty queue takes data
    // (Linux's progress guarantee): at most a segment beyond it.
    assert!(peak <= high + 1448, "peak {peak} beyond the limit {high}");
    // The reader reads: the level falls back and every transfer completes.
    let mut got = vec![0usize; pairs.len()];
    let end = sim.now + Duration::from_secs(120);
    while got.iter().sum::<usize>() < total * pairs.len() {
        assert!(sim.now < end, "stalled after reading: {got:?}");
        for (i, (a, _)) in pairs.iter().enumerate() {
            got[i] += read_all(&mut sim, *a);
        }
        feed(&mut sim, &mut queued);
        sim.step();
    }
    assert_eq!(sim.a.memory_level(), MemoryLevel::Normal);
    assert_eq!(sim.a.buffered_total(), 0);
}
