//! Socket options through the stack's public API, as tables: each option's
//! default, what a set reads back (Linux's rounding and clamping), the
//! values Linux refuses (EINVAL = `InvalidValue`, ENOPROTOOPT =
//! `UnsupportedOption`); and the options whose effect shows on the wire
//! (IP_TOS, IP_TTL, IP_MTU_DISCOVER in the IPv4 header) or at accept
//! (TCP_DEFER_ACCEPT).

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::wire::ipv4::Ipv4Packet;
use tcpd_stack::wire::{TcpFlags, TcpOptions};
use tcpd_stack::{
    AcceptError, Duration, Instant, OptionName, PmtuDiscovery, SockOption, SocketError,
    SocketHandle, Stack,
};

const T0: Instant = Instant::from_millis(1_000);

fn stack() -> Stack {
    Stack::new(test_config(ADDR_B, 21), T0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// (option, its value on a new socket) — Linux's defaults.
fn defaults() -> Vec<(OptionName, SockOption)> {
    vec![
        (OptionName::DeferAccept, SockOption::DeferAccept(None)),
        (OptionName::OobInline, SockOption::OobInline(false)),
        (OptionName::IpTos, SockOption::IpTos(0)),
        // Linux reports ip_default_ttl, not "unset".
        (OptionName::IpTtl, SockOption::IpTtl(Some(64))),
        (
            OptionName::MtuDiscover,
            SockOption::MtuDiscover(PmtuDiscovery::Want),
        ),
        (OptionName::AtMark, SockOption::AtMark(false)),
        (OptionName::UserTimeout, SockOption::UserTimeout(None)),
        (OptionName::KeepAlive, SockOption::KeepAlive(false)),
        (OptionName::KeepIdle, SockOption::KeepIdle(secs(7200))),
        (OptionName::KeepInterval, SockOption::KeepInterval(secs(75))),
        (OptionName::KeepCount, SockOption::KeepCount(9)),
    ]
}

#[test]
fn defaults_follow_linux() {
    let mut s = stack();
    let sock = s.socket();
    for (name, want) in defaults() {
        assert_eq!(s.get_option(sock, name), Ok(want), "{name:?}");
    }
}

/// (set, what reads back): Linux's normalisation.
#[test]
fn set_values_read_back_as_linux_stores_them() {
    let table = [
        // TCP_DEFER_ACCEPT counts SYN,ACK periods of 1, 2, 4... s: 5 s -> 7 s.
        (
            SockOption::DeferAccept(Some(secs(1))),
            SockOption::DeferAccept(Some(secs(1))),
        ),
        (
            SockOption::DeferAccept(Some(secs(5))),
            SockOption::DeferAccept(Some(secs(7))),
        ),
        (
            SockOption::DeferAccept(Some(secs(8))),
            SockOption::DeferAccept(Some(secs(15))),
        ),
        (
            SockOption::DeferAccept(Some(Duration::ZERO)),
            SockOption::DeferAccept(None),
        ),
        (SockOption::DeferAccept(None), SockOption::DeferAccept(None)),
        // IP_TOS: the ECN bits stay the stack's.
        (SockOption::IpTos(0x10), SockOption::IpTos(0x10)),
        (SockOption::IpTos(0xbb), SockOption::IpTos(0xb8)),
        (SockOption::IpTtl(Some(1)), SockOption::IpTtl(Some(1))),
        (SockOption::IpTtl(Some(255)), SockOption::IpTtl(Some(255))),
        // -1 (None) goes back to the default.
        (SockOption::IpTtl(None), SockOption::IpTtl(Some(64))),
        (
            SockOption::MtuDiscover(PmtuDiscovery::Dont),
            SockOption::MtuDiscover(PmtuDiscovery::Dont),
        ),
        (
            SockOption::MtuDiscover(PmtuDiscovery::Probe),
            SockOption::MtuDiscover(PmtuDiscovery::Probe),
        ),
        (SockOption::OobInline(true), SockOption::OobInline(true)),
        (
            SockOption::UserTimeout(Some(Duration::from_millis(1500))),
            SockOption::UserTimeout(Some(Duration::from_millis(1500))),
        ),
    ];
    let mut s = stack();
    for (set, want) in table {
        let sock = s.socket();
        s.set_option(T0, sock, set).expect("set");
        let name = name_of(want);
        assert_eq!(s.get_option(sock, name), Ok(want), "{set:?}");
    }
}

#[test]
fn refused_values_fail_like_linux() {
    let table = [
        (SockOption::IpTtl(Some(0)), SocketError::InvalidValue),
        (SockOption::AtMark(true), SocketError::UnsupportedOption),
        (SockOption::Error(None), SocketError::UnsupportedOption),
        (SockOption::KeepCount(0), SocketError::InvalidValue),
        (
            SockOption::KeepIdle(Duration::ZERO),
            SocketError::InvalidValue,
        ),
    ];
    let mut s = stack();
    let sock = s.socket();
    for (set, err) in table {
        assert_eq!(s.set_option(T0, sock, set), Err(err), "{set:?}");
    }
    // IP_MTU_DISCOVER above IP_PMTUDISC_OMIT names no mode (EINVAL).
    assert_eq!(PmtuDiscovery::from_raw(6), None);
    assert_eq!(PmtuDiscovery::from_raw(-1), None);
    assert_eq!(PmtuDiscovery::from_raw(5), Some(PmtuDiscovery::Omit));
}

fn name_of(option: SockOption) -> OptionName {
    match option {
        SockOption::DeferAccept(_) => OptionName::DeferAccept,
        SockOption::IpTos(_) => OptionName::IpTos,
        SockOption::IpTtl(_) => OptionName::IpTtl,
        SockOption::MtuDiscover(_) => OptionName::MtuDiscover,
        SockOption::OobInline(_) => OptionName::OobInline,
        SockOption::UserTimeout(_) => OptionName::UserTimeout,
        other => panic!("no name in this table for {other:?}"),
    }
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_A, port)
}

fn ours(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ADDR_B, port)
}

fn listener(s: &mut Stack, port: u16, options: &[SockOption]) -> SocketHandle {
    let l = s.socket();
    for &o in options {
        s.set_option(T0, l, o).expect("option");
    }
    s.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .expect("bind");
    s.listen(l, 16).expect("listen");
    l
}

/// Sends a SYN from the peer's `port` and completes the handshake;
/// returns the SYN,ACK packet and the ISN the stack chose.
fn handshake(s: &mut Stack, now: Instant, port: u16, to: u16) -> (Vec<u8>, u32) {
    let mut syn = Segment::new(peer(port), ours(to), TcpFlags::SYN, 1000, 0);
    syn.options = TcpOptions {
        mss: Some(1460),
        ..TcpOptions::default()
    };
    s.handle_packet(now, &syn.to_packet());
    let out: Vec<Vec<u8>> = drain_transmit(s, now)
        .into_iter()
        .filter(|p| parse_tcp(p).flags.syn())
        .collect();
    assert_eq!(out.len(), 1, "one SYN,ACK");
    let synack = parse_tcp(&out[0]);
    let ack = Segment::new(
        peer(port),
        ours(to),
        TcpFlags::ACK,
        1001,
        synack.seq.wrapping_add(1),
    );
    s.handle_packet(now, &ack.to_packet());
    (out[0].clone(), synack.seq)
}

/// IP_TOS, IP_TTL and IP_MTU_DISCOVER set on a listener shape the IPv4
/// header of everything its connections send, as on Linux.
#[test]
fn tos_ttl_and_df_show_in_the_ip_header() {
    let mut s = stack();
    let _l = listener(
        &mut s,
        80,
        &[
            SockOption::IpTos(0x28 | 0b11),
            SockOption::IpTtl(Some(7)),
            SockOption::MtuDiscover(PmtuDiscovery::Dont),
        ],
    );
    let (synack, _) = handshake(&mut s, T0, 40001, 80);
    let ip = Ipv4Packet::new_checked(&synack[..]).expect("IPv4");
    assert_eq!(ip.tos(), 0x28, "IP_TOS without the ECN bits");
    assert_eq!(ip.ttl(), 7);
    assert!(!ip.dont_fragment(), "IP_PMTUDISC_DONT clears DF");
    assert!(ip.verify_checksum());

    // Defaults: TOS 0, TTL 64, DF.
    let _l2 = listener(&mut s, 81, &[]);
    let (synack, _) = handshake(&mut s, T0, 40002, 81);
    let ip = Ipv4Packet::new_checked(&synack[..]).expect("IPv4");
    assert_eq!((ip.tos(), ip.ttl(), ip.dont_fragment()), (0, 64, true));
}

/// TCP_DEFER_ACCEPT: a handshake without data stays off the accept queue
/// until data arrives, or until the (rounded) period ends.
#[test]
fn defer_accept_waits_for_data_or_the_period() {
    let mut s = stack();
    let l = listener(&mut s, 80, &[SockOption::DeferAccept(Some(secs(2)))]);
    // 2 s rounds up to 3 s (1 + 2).
    assert_eq!(
        s.get_option(l, OptionName::DeferAccept),
        Ok(SockOption::DeferAccept(Some(secs(3))))
    );
    let (_, isn) = handshake(&mut s, T0, 40001, 80);
    assert_eq!(s.accept(l), Err(AcceptError::WouldBlock));
    let mut data = Segment::new(
        peer(40001),
        ours(80),
        TcpFlags::ACK | TcpFlags::PSH,
        1001,
        isn.wrapping_add(1),
    );
    data.payload = b"GET /";
    let later = T0 + Duration::from_millis(500);
    s.handle_packet(later, &data.to_packet());
    let (conn, from) = s.accept(l).expect("data makes it acceptable");
    assert_eq!(from, std::net::SocketAddr::V4(peer(40001)));
    let mut buf = [0u8; 16];
    assert_eq!(s.recv(later, conn, &mut buf, false), Ok(5));

    // No data: accepted once the period is over.
    handshake(&mut s, T0, 40002, 80);
    let mut now = T0;
    while now < T0 + secs(3) {
        assert_eq!(s.accept(l), Err(AcceptError::WouldBlock), "at {now:?}");
        let next = s.poll_timeout().expect("a timer runs");
        now = next.max(now + Duration::from_millis(1));
        s.handle_timeout(now);
        drain_transmit(&mut s, now);
    }
    assert!(s.accept(l).is_ok(), "accepted after the period");
}
