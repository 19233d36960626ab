//! Orphans — connections closed by their user that still hold data or a FIN
//! for the peer — against a peer that never reads (its window stays shut):
//! the caps on their number and memory (the oldest is reset, counted), the
//! give-up after `orphan_retries` zero-window probes, and the FIN-WAIT-2
//! timeout (Linux tcp_max_orphans, tcp_orphan_retries, tcp_fin_timeout).

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::{
    ConnError, Duration, OptionName, SockOption, SocketHandle, StackConfig, TcpState,
};

/// A (never reads, 4 KiB receive buffer) listens on port 80; B is the
/// stack under test, with `tweak` applied to its configuration.
fn sim(seed: u64, tweak: impl FnOnce(&mut StackConfig)) -> (Sim, SocketHandle) {
    let a = test_config(ADDR_A, seed * 2 + 1);
    let mut b = test_config(ADDR_B, seed * 2 + 2);
    tweak(&mut b);
    let mut sim = Sim::with_configs(a, b, LinkConfig::perfect(), seed);
    let l = sim.a.socket();
    sim.a
        .set_option(sim.now, l, SockOption::RecvBuffer(4096))
        .expect("small receive buffer");
    sim.a
        .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .expect("bind");
    sim.a.listen(l, 128).expect("listen");
    (sim, l)
}

/// B connects to A, queues `bytes` that A never reads, and closes: an
/// orphan in FIN-WAIT-1 holding what A's shut window keeps out.
fn orphan(sim: &mut Sim, listener: SocketHandle, bytes: usize) -> SocketHandle {
    let c = sim.b.socket();
    sim.b
        .connect(sim.now, c, SocketAddrV4::new(ADDR_A, 80))
        .expect("connect");
    established(sim, listener);
    let (accepted, _) = sim.a.accept(listener).expect("accept");
    let data = vec![7u8; bytes];
    let mut sent = 0;
    while sent < bytes {
        sent += sim.b.send(sim.now, c, &data[sent..]).expect("send");
    }
    sim.run_until("window shut", |sim| {
        sim.b.socket_info(c).is_ok_and(|i| i.snd_wnd == 0)
    });
    sim.b.close(sim.now, c).expect("close");
    accepted
}

/// Runs until A's listener has a connection to accept.
fn established(sim: &mut Sim, listener: SocketHandle) {
    sim.run_until("established", |sim| {
        sim.a
            .socket_info(listener)
            .is_ok_and(|i| i.accept_queue > 0)
    });
}

/// Lets `d` of virtual time pass (or less, if everything goes idle).
fn run_for(sim: &mut Sim, d: Duration) {
    let end = sim.now + d;
    while sim.now < end && sim.step() {}
}

fn rows_in(sim: &Sim, state: TcpState) -> usize {
    sim.b.sockets().iter().filter(|i| i.state == state).count()
}

/// Whether the peer's socket got a reset: its pending error (SO_ERROR),
/// since its reads return the bytes that arrived before the RST first.
fn reset_seen(sim: &mut Sim, peer_handle: SocketHandle) -> bool {
    matches!(
        sim.a.get_option(peer_handle, OptionName::Error),
        Ok(SockOption::Error(Some(ConnError::Reset)))
    )
}

#[test]
fn the_oldest_orphan_is_reset_past_the_count_cap() {
    let (mut sim, l) = sim(1, |c| c.max_orphans = 3);
    let peers: Vec<_> = (0..5).map(|_| orphan(&mut sim, l, 50_000)).collect();
    run_for(&mut sim, Duration::from_millis(50));
    assert_eq!(sim.b.stats().orphan_resets, 2);
    assert_eq!(rows_in(&sim, TcpState::FinWait1), 3);
    // The two oldest were reset; the peer sees it.
    assert!(reset_seen(&mut sim, peers[0]));
    assert!(reset_seen(&mut sim, peers[1]));
    assert!(!reset_seen(&mut sim, peers[2]));
}

#[test]
fn the_oldest_orphan_is_reset_past_the_memory_cap() {
    // Each orphan holds ~46 KB (50 000 less A's 4 KiB window): two fit in 100 000.
    let (mut sim, l) = sim(2, |c| c.max_orphan_memory = 100_000);
    let peers: Vec<_> = (0..4).map(|_| orphan(&mut sim, l, 50_000)).collect();
    run_for(&mut sim, Duration::from_millis(50));
    assert_eq!(sim.b.stats().orphan_resets, 2);
    assert_eq!(rows_in(&sim, TcpState::FinWait1), 2);
    assert!(reset_seen(&mut sim, peers[0]) && reset_seen(&mut sim, peers[1]));
    let held: usize = sim.b.sockets().iter().map(|i| i.send_queue).sum();
    assert!(held <= 100_000, "orphans hold {held} bytes");
}

/// A peer that answers every zero-window probe but never reads keeps an
/// open socket forever (RFC 1122 §4.2.2.17), but not an orphan: it is
/// dropped after `orphan_retries` probes (backed off from the RTO).
#[test]
fn an_orphan_gives_up_probing_a_window_that_never_opens() {
    let (mut sim, l) = sim(3, |c| c.orphan_retries = 4);
    // A socket still open: it must survive the same treatment.
    let kept = sim.b.socket();
    sim.b
        .connect(sim.now, kept, SocketAddrV4::new(ADDR_A, 80))
        .expect("connect");
    established(&mut sim, l);
    let _kept_peer = sim.a.accept(l).expect("accept");
    let data = vec![1u8; 50_000];
    sim.b.send(sim.now, kept, &data).expect("send");

    orphan(&mut sim, l, 50_000);
    let start = sim.now;
    sim.run_until("the orphan is dropped", |sim| {
        rows_in(sim, TcpState::FinWait1) == 0
    });
    let took = sim.now - start;
    assert_eq!(sim.b.stats().orphan_timeouts, 1);
    // Four probes at RTO × 1, 2, 4, 8 (RTO ≥ 200 ms): seconds, not hours.
    assert!(took < Duration::from_secs(60), "dropped after {took:?}");
    // The open socket is still there, probing.
    run_for(&mut sim, Duration::from_secs(120));
    assert_eq!(
        sim.b.socket_info(kept).expect("kept").state,
        TcpState::Established
    );
}

#[test]
fn a_closed_socket_leaves_fin_wait_2_after_fin_timeout() {
    let (mut sim, l) = sim(4, |c| c.fin_timeout = Some(Duration::from_secs(5)));
    let c = sim.b.socket();
    sim.b
        .connect(sim.now, c, SocketAddrV4::new(ADDR_A, 80))
        .expect("connect");
    established(&mut sim, l);
    let _peer = sim.a.accept(l).expect("accept");
    sim.b.close(sim.now, c).expect("close");
    sim.run_until("FIN-WAIT-2", |sim| rows_in(sim, TcpState::FinWait2) == 1);
    let start = sim.now;
    sim.run_until("gone", |sim| rows_in(sim, TcpState::FinWait2) == 0);
    let took = sim.now - start;
    assert!(
        took >= Duration::from_millis(4900) && took <= Duration::from_millis(5100),
        "FIN-WAIT-2 lasted {took:?}"
    );
    assert_eq!(sim.b.stats().orphan_timeouts, 1);
    assert_eq!(sim.b.stats().orphan_resets, 0);
}
