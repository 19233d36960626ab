//! IPv6 beside IPv4 in one stack, through the public API: the bind rules
//! between the families (Linux with `net.ipv6.bindv6only = 0`: an IPv6
//! socket on `::` covers IPv4 too unless IPV6_V6ONLY is set; an IPv4-mapped
//! address names the IPv4 one), and ICMPv6 Parameter Problem (RFC 4443
//! §3.4) for packets the stack cannot process — its pointer, the quoted
//! packet, the cases that must stay silent, and the rate limit (§2.4(f));
//! and the closed-port answers (RFC 9293 §3.10.7.1), one table run over
//! both families.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tcpd_stack::SeqNum;
use tcpd_stack::wire::icmpv6::parameter_problem;
use tcpd_stack::wire::{
    Icmpv6Repr, IpPacketParts, IpProtocol, Ipv6Repr, TcpFlags, TcpOptions, TcpRepr,
};
use tcpd_stack::{BindError, Duration, Instant, IpFamily, SockOption, Stack};

const T0: Instant = Instant::from_millis(1_000);
const PORT: u16 = 8080;

fn stack() -> Stack {
    Stack::new(test_config(ADDR_B, 11), T0)
}

/// One socket of a bind scenario: its family, IPV6_V6ONLY, the address.
#[derive(Clone, Copy, Debug)]
struct Binder {
    family: IpFamily,
    v6only: bool,
    ip: IpAddr,
}

const ANY4: Binder = Binder {
    family: IpFamily::V4,
    v6only: false,
    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
};
const OURS4: Binder = Binder {
    family: IpFamily::V4,
    v6only: false,
    ip: IpAddr::V4(ADDR_B),
};
const ANY6: Binder = Binder {
    family: IpFamily::V6,
    v6only: false,
    ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
};
const ANY6_ONLY: Binder = Binder {
    family: IpFamily::V6,
    v6only: true,
    ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
};
const OURS6: Binder = Binder {
    family: IpFamily::V6,
    v6only: false,
    ip: IpAddr::V6(ADDR6_B),
};
/// `::ffff:10.0.0.2` on an IPv6 socket: the IPv4 address in disguise.
const MAPPED6: Binder = Binder {
    family: IpFamily::V6,
    v6only: false,
    ip: IpAddr::V6(ADDR_B.to_ipv6_mapped()),
};

fn bind(stack: &mut Stack, who: Binder) -> Result<(), BindError> {
    let socket = stack.socket_of(who.family);
    if who.v6only {
        stack
            .set_option(T0, socket, SockOption::V6Only(true))
            .expect("IPV6_V6ONLY before bind");
    }
    stack.bind(socket, SocketAddr::new(who.ip, PORT))
}

/// Whether two sockets, bound in this order to the same port without
/// SO_REUSEADDR, both get it — as Linux decides (inet_bind_conflict with
/// ipv6_rcv_saddr_equal / inet_rcv_saddr_equal).
#[test]
fn bind_conflicts_across_families_follow_linux_bindv6only_0() {
    let ok = Ok(());
    let in_use = Err(BindError::AddrInUse);
    #[rustfmt::skip]
    let table: [(Binder, Binder, Result<(), BindError>); 20] = [
        // A dual-stack `::` takes every IPv4 address too.
        (ANY6, ANY4, in_use),
        (ANY4, ANY6, in_use),
        (ANY6, OURS4, in_use),
        (OURS4, ANY6, in_use),
        // ... unless IPV6_V6ONLY (the way to run separate IPv4/IPv6 servers).
        (ANY6_ONLY, ANY4, ok),
        (ANY4, ANY6_ONLY, ok),
        (ANY6_ONLY, OURS4, ok),
        (ANY6_ONLY, MAPPED6, ok),
        // A specific IPv6 address is not covered by the IPv4 wildcard...
        (OURS6, ANY4, ok),
        (ANY4, OURS6, ok),
        // ... but is by the IPv6 one, either flavour.
        (OURS6, ANY6, in_use),
        (ANY6_ONLY, OURS6, in_use),
        // The same family twice.
        (ANY6, ANY6_ONLY, in_use),
        (OURS6, OURS6, in_use),
        // An IPv4-mapped address is the IPv4 address.
        (MAPPED6, OURS4, in_use),
        (OURS4, MAPPED6, in_use),
        (MAPPED6, ANY4, in_use),
        (ANY4, MAPPED6, in_use),
        (MAPPED6, ANY6, in_use),
        (MAPPED6, OURS6, ok),
    ];
    for (first, second, want) in table {
        let mut s = stack();
        bind(&mut s, first).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        assert_eq!(bind(&mut s, second), want, "{first:?} then {second:?}");
    }
}

#[test]
fn v6only_and_families_are_checked_at_bind() {
    let mut s = stack();
    // An IPv4-mapped address on a V6ONLY socket: EINVAL (Linux inet6_bind).
    let v6only = Binder {
        v6only: true,
        ..MAPPED6
    };
    assert_eq!(bind(&mut s, v6only), Err(BindError::Invalid));
    // The other family's address: EAFNOSUPPORT.
    let v4 = s.socket_of(IpFamily::V4);
    assert_eq!(
        s.bind(v4, SocketAddr::new(IpAddr::V6(ADDR6_B), PORT)),
        Err(BindError::AddrFamily)
    );
    let v6 = s.socket_of(IpFamily::V6);
    assert_eq!(
        s.bind(v6, SocketAddr::new(IpAddr::V4(ADDR_B), PORT)),
        Err(BindError::AddrFamily)
    );
    // Once bound, IPV6_V6ONLY cannot change (Linux: EINVAL).
    s.bind(v6, SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), PORT))
        .expect("bind ::");
    assert!(s.set_option(T0, v6, SockOption::V6Only(true)).is_err());
    // SO_REUSEADDR on both lets a dual-stack :: and 0.0.0.0 share a port
    // while neither listens, as within one family.
    let mut s = stack();
    let a = s.socket_of(IpFamily::V6);
    let b = s.socket_of(IpFamily::V4);
    for socket in [a, b] {
        s.set_option(T0, socket, SockOption::ReuseAddr(true))
            .expect("SO_REUSEADDR");
    }
    s.bind(a, SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), PORT))
        .expect("::");
    s.bind(b, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT))
        .expect("0.0.0.0 beside :: with SO_REUSEADDR on both");
    s.listen(a, 8).expect("the first listens");
    assert!(s.listen(b, 8).is_err(), "the second may not listen too");
}

/// An IPv6 packet from A to B: the fixed header, then `body` (extension
/// headers and upper layer) with `next_header` naming its first header.
fn ipv6_packet(dst: Ipv6Addr, next_header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
    packet[6] = next_header;
    packet[7] = 64;
    packet[8..24].copy_from_slice(&ADDR6_A.octets());
    packet[24..40].copy_from_slice(&dst.octets());
    packet.extend_from_slice(body);
    packet
}

/// The Parameter Problem (code, pointer, quoted packet) among `out`.
fn parameter_problems(out: &[Vec<u8>]) -> Vec<(u8, u32, Vec<u8>)> {
    out.iter()
        .filter_map(|packet| {
            let parsed = Ipv6Repr::parse(packet).ok()?;
            assert_eq!(parsed.repr.src, ADDR6_B, "from the address it was sent to");
            assert_eq!(parsed.repr.dst, ADDR6_A, "to the sender");
            if parsed.repr.next_header != IpProtocol::Icmpv6 {
                return None;
            }
            match Icmpv6Repr::parse(ADDR6_B, ADDR6_A, parsed.payload).expect("valid ICMPv6") {
                Icmpv6Repr::ParameterProblem {
                    code,
                    pointer,
                    invoking,
                } => Some((code, pointer, invoking.to_vec())),
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

/// Destination options header (8 bytes) holding one option `kind` with
/// two data bytes, padded with PadN; `next` names what follows.
fn destination_options(next: u8, kind: u8) -> Vec<u8> {
    vec![next, 0, kind, 2, 0, 0, 1, 0]
}

/// A case: what it shows, the packet, the (code, pointer) expected if any.
type ProblemCase = (&'static str, Vec<u8>, Option<(u8, u32)>);

#[test]
fn parameter_problem_points_at_what_the_stack_cannot_process() {
    // Protocol 253 (RFC 3692 experimentation): unknown to tcpd.
    const UNKNOWN: u8 = 253;
    let tcp = u8::from(IpProtocol::Tcp);
    #[rustfmt::skip]
    let cases: [ProblemCase; 7] = [
        // RFC 8200 §4: unknown upper layer -> code 1 at the Next Header field.
        ("unknown upper layer", ipv6_packet(ADDR6_B, UNKNOWN, &[0; 8]),
            Some((parameter_problem::UNRECOGNIZED_NEXT_HEADER, 6))),
        // ... named by an extension header: the pointer is in that header.
        ("unknown after destination options",
            ipv6_packet(ADDR6_B, 60, &[destination_options(UNKNOWN, 0x1e), vec![0; 8]].concat()),
            Some((parameter_problem::UNRECOGNIZED_NEXT_HEADER, 40))),
        // RFC 8200 §4.2: option type 10xxxxxx -> discard and code 2 at the option.
        ("option action 10", ipv6_packet(ADDR6_B, 60, &destination_options(tcp, 0x9e)),
            Some((parameter_problem::UNRECOGNIZED_OPTION, 42))),
        // 11xxxxxx -> the same for a unicast destination.
        ("option action 11", ipv6_packet(ADDR6_B, 60, &destination_options(tcp, 0xde)),
            Some((parameter_problem::UNRECOGNIZED_OPTION, 42))),
        // 01xxxxxx -> discard silently; 00xxxxxx -> skip it (the empty TCP
        // segment behind is then malformed: no answer either).
        ("option action 01", ipv6_packet(ADDR6_B, 60, &destination_options(tcp, 0x5e)), None),
        // RFC 8200 §4.1: hop-by-hop anywhere but first -> code 1.
        ("hop-by-hop not first",
            ipv6_packet(ADDR6_B, 60, &[destination_options(0, 0x1e), destination_options(tcp, 0x1e)].concat()),
            Some((parameter_problem::UNRECOGNIZED_NEXT_HEADER, 40))),
        // Not for us: no answer (RFC 4443 §2.4: errors only about our packets).
        ("someone else's packet",
            ipv6_packet(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 99), UNKNOWN, &[0; 8]), None),
    ];
    for (what, packet, want) in cases {
        let mut s = stack();
        s.handle_packet(T0, &packet);
        let problems = parameter_problems(&drain_transmit(&mut s, T0));
        match want {
            None => assert!(problems.is_empty(), "{what}: {problems:?}"),
            Some((code, pointer)) => {
                assert_eq!(problems.len(), 1, "{what}: {problems:?}");
                let (got_code, got_pointer, quoted) = &problems[0];
                assert_eq!((*got_code, *got_pointer), (code, pointer), "{what}");
                assert_eq!(quoted, &packet, "{what}: the whole offending packet quoted");
            }
        }
    }
}

/// RFC 4443 §2.4(f): a flood of bad packets gets a burst of errors, then
/// errors at the rate (Linux's 50 and 1000/s), the rest counted.
#[test]
fn parameter_problems_are_rate_limited() {
    let mut s = stack();
    let bad = ipv6_packet(ADDR6_B, 253, &[0; 8]);
    for _ in 0..200 {
        s.handle_packet(T0, &bad);
    }
    let burst = parameter_problems(&drain_transmit(&mut s, T0)).len();
    assert_eq!(burst, 50);
    assert_eq!(s.stats().icmp_errors_ratelimited, 150);
    // 10 ms later: 10 more tokens (one per millisecond).
    let later = T0 + Duration::from_millis(10);
    for _ in 0..200 {
        s.handle_packet(later, &bad);
    }
    assert_eq!(parameter_problems(&drain_transmit(&mut s, later)).len(), 10);
    assert_eq!(s.stats().icmp_errors_ratelimited, 150 + 190);
}

/// A TCP segment from the peer (A) to us (B) over `family`.
fn tcp_to_us(
    family: IpFamily,
    port: u16,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: 40000,
        dst_port: port,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        urgent: 0,
        options: TcpOptions::default(),
        payload,
    };
    let mut segment = vec![0; repr.buffer_len()];
    match family {
        IpFamily::V4 => {
            let len = repr.emit(&mut segment, ADDR_A, ADDR_B);
            let mut packet = vec![0; 20 + len];
            packet[20..].copy_from_slice(&segment[..len]);
            ip_header(ADDR_A, ADDR_B, IpProtocol::Tcp, len, &mut packet);
            packet
        }
        IpFamily::V6 => {
            let len = repr.emit(&mut segment, ADDR6_A, ADDR6_B);
            ipv6_packet(ADDR6_B, u8::from(IpProtocol::Tcp), &segment[..len])
        }
    }
}

/// RFC 9293 §3.10.7.1 for a closed port, the same over IPv4 and IPv6: no
/// ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; ACK -> <SEQ=SEG.ACK>
/// <CTL=RST>; a RST is never answered. Over IPv6 the answer comes from
/// the address the segment was sent to, with hop limit 64 and a flow label.
/// A row: the segment's flags, SEQ, ACK, payload; the answer's flags, SEQ,
/// ACK, if any.
type ClosedPortRow = (
    TcpFlags,
    u32,
    u32,
    &'static [u8],
    Option<(TcpFlags, u32, u32)>,
);

#[test]
fn closed_ports_answer_alike_over_both_families() {
    #[rustfmt::skip]
    let table: [ClosedPortRow; 4] = [
        (TcpFlags::SYN, 1000, 0, b"", Some((TcpFlags::RST | TcpFlags::ACK, 0, 1001))),
        (TcpFlags::FIN, 5000, 0, b"0123456789", Some((TcpFlags::RST | TcpFlags::ACK, 0, 5011))),
        (TcpFlags::ACK, 7, 123_456, b"", Some((TcpFlags::RST, 123_456, 0))),
        (TcpFlags::RST, 9, 0, b"", None),
    ];
    for family in [IpFamily::V4, IpFamily::V6] {
        let (ours, peer): (IpAddr, IpAddr) = match family {
            IpFamily::V4 => (ADDR_B.into(), ADDR_A.into()),
            IpFamily::V6 => (ADDR6_B.into(), ADDR6_A.into()),
        };
        for (i, (flags, seq, ack, payload, want)) in table.into_iter().enumerate() {
            let mut s = stack();
            let port = 80 + u16::try_from(i).expect("small");
            s.handle_packet(T0, &tcp_to_us(family, port, flags, seq, ack, payload));
            let out = drain_transmit(&mut s, T0);
            let Some((want_flags, want_seq, want_ack)) = want else {
                assert!(out.is_empty(), "{family:?} {flags:?}: {out:?}");
                continue;
            };
            assert_eq!(out.len(), 1, "{family:?} {flags:?}");
            let ip = IpPacketParts::parse(&out[0]).expect("valid IP");
            assert_eq!((ip.src, ip.dst), (ours, peer), "{family:?} {flags:?}");
            let rst = TcpRepr::parse(ip.payload, ip.src, ip.dst).expect("valid TCP");
            assert_eq!(rst.flags, want_flags, "{family:?} {flags:?}");
            assert_eq!((rst.src_port, rst.dst_port), (port, 40000));
            assert_eq!(rst.seq.0, want_seq, "{family:?} {flags:?}");
            if want_flags.ack() {
                assert_eq!(rst.ack.0, want_ack, "{family:?} {flags:?}");
            }
            assert!(rst.payload.is_empty() && rst.window == 0);
            if family == IpFamily::V6 {
                let parsed = Ipv6Repr::parse(&out[0]).expect("IPv6");
                assert_eq!(parsed.repr.hop_limit, 64);
                assert_ne!(parsed.repr.flow_label, 0, "RFC 6437 §3: a flow label");
            }
        }
    }
}
