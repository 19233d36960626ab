//! Bounded fuzzing in `cargo test`: random bytes and structured, mostly
//! checksum-valid inputs (see `fuzz_driver`) thrown at a stack with open
//! connections must never panic and must leave it consistent. The same
//! driver backs the cargo-fuzz target `stack_input` for longer runs.

mod fuzz_driver;

use fuzz_driver::Harness;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn structured_inputs_never_break_the_stack(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        Harness::new().run(&data);
    }

    #[test]
    fn raw_bytes_never_break_the_stack(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..128), 1..16)) {
        let mut harness = Harness::new();
        for packet in packets {
            // Op 0 followed by a length: the bytes go in as one packet.
            let mut op = vec![0u8];
            op.extend_from_slice(&u16::try_from(packet.len()).unwrap_or(0).to_be_bytes());
            op.extend_from_slice(&packet);
            harness.run(&op);
        }
    }
}

#[test]
fn harness_starts_with_live_connections() {
    let harness = Harness::new();
    let states: Vec<_> = harness.stack.sockets().iter().map(|i| i.state).collect();
    assert!(states.contains(&tcpd_stack::TcpState::Listen), "{states:?}");
    assert!(
        states.contains(&tcpd_stack::TcpState::Established),
        "{states:?}"
    );
    assert!(
        states.contains(&tcpd_stack::TcpState::SynSent),
        "{states:?}"
    );
}

/// The structured operations really reach the live connection: an in-order
/// data segment built by operation 1 with zero deltas is accepted as data.
#[test]
fn structured_segment_reaches_the_established_connection() {
    let mut harness = Harness::new();
    let server = harness.server();
    let before = harness.stack.socket_info(server).expect("live").recv_queue;
    // op 1, flags ACK|PSH, seq/ack deltas 0, window 0xffff, no options, 2×8 payload bytes.
    harness.run(&[1, 0x18, 0, 0, 0, 0, 0xff, 0xff, 0, 2]);
    let after = harness.stack.socket_info(server).expect("live").recv_queue;
    assert_eq!(after, before + 16);
}

/// The IPv6 operation reaches the stack: a SYN built by operation 9 (to
/// the `[::]:81` listener, no extension headers) opens a connection.
#[test]
fn structured_ipv6_syn_reaches_the_dual_stack_listener() {
    let mut harness = Harness::new();
    // op 9, mode 0 (PEER6 -> OURS6, no chain, true length), upper 0 (TCP),
    // port 81, SYN, no payload, source port 40000, seq 1, ack 0, MSS 1440,
    // traffic class 0, hop limit 64.
    harness.run(&[
        9, 0, 0, 0, 0, 0, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0x05, 0xa0, 0, 64,
    ]);
    let opened = harness.stack.sockets().iter().any(|info| {
        info.local.port() == 81 && info.remote.is_ipv6() && info.remote.port() == 40000
    });
    assert!(opened, "{:#?}", harness.stack.sockets());
}
