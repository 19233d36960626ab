//! TUN offload through the stack's public API: super-segment emission
//! (`poll_transmit_offload` with `LinkOffload`) and coalesced-segment receive
//! (`handle_packet_offload`), between two in-memory stacks. The "link" here
//! either hands a super-segment over whole (what the kernel does for its own
//! TCP) or cuts it with `wire::virtio::segment_tcpv4` (what it does before a
//! wire), so both receive paths and the segmentation rules are checked.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::wire::virtio::{self, segment_tcpv4};
use tcpd_stack::wire::{Checksum, GsoKind, Ipv4Repr, TcpRepr, VirtioNetRepr};
use tcpd_stack::{DropReason, Duration, Instant, LinkOffload, SockOption, SocketHandle, Stack};

const T0: Instant = Instant::from_millis(1_000);
const PORT: u16 = 8080;
/// Payload per segment with timestamps: 1500 - 20 - 20 - 12 (RFC 7323 §3.2).
const MSS: usize = 1448;

/// A packet one stack emitted, with what its virtio-net header says.
#[derive(Clone, Debug)]
struct Emitted {
    packet: Vec<u8>,
    header: VirtioNetRepr,
}

impl Emitted {
    fn tcp(&self) -> TcpRepr<'_> {
        let (ip, segment) = Ipv4Repr::parse(&self.packet).expect("valid IPv4");
        // The checksum may be partial: the header says so; parse unverified.
        TcpRepr::parse_with(segment, ip.src.into(), ip.dst.into(), false).expect("valid TCP")
    }

    /// The wire segments the link would make of it (complete checksums).
    fn pieces(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let size = self.header.gso.map_or(u16::MAX, |g| g.size);
        segment_tcpv4(&self.packet, size, &mut scratch, |p| out.push(p.to_vec()))
            .expect("segmentable");
        out
    }
}

fn offload_config(address: Ipv4Addr, seed: u64) -> tcpd_stack::StackConfig {
    let mut config = test_config(address, seed);
    config.offload = LinkOffload {
        segmentation: true,
        checksum: true,
    };
    config
}

fn emit(stack: &mut Stack, now: Instant) -> Vec<Emitted> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some((n, header)) = stack.poll_transmit_offload(now, &mut buf) {
        out.push(Emitted {
            packet: buf[..n].to_vec(),
            header,
        });
        assert!(
            out.len() < 10_000,
            "poll_transmit_offload never returns None"
        );
    }
    out
}

/// Hands every packet over whole, as the kernel does with its own TCP.
fn deliver(to: &mut Stack, now: Instant, packets: &[Emitted]) {
    for p in packets {
        to.handle_packet_offload(now, &p.packet, &p.header);
    }
}

/// Client A (offload on) connected to server B; returns (a, b, a's socket, b's socket).
struct Pair {
    a: Stack,
    b: Stack,
    client: SocketHandle,
    server: SocketHandle,
    now: Instant,
}

impl Pair {
    fn new(b_config: tcpd_stack::StackConfig) -> Pair {
        Pair::with(offload_config(ADDR_A, 1), b_config)
    }

    fn with(a_config: tcpd_stack::StackConfig, b_config: tcpd_stack::StackConfig) -> Pair {
        let mut a = Stack::new(a_config, T0);
        let mut b = Stack::new(b_config, T0);
        let l = b.socket();
        b.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .expect("bind");
        b.listen(l, 4).expect("listen");
        let client = a.socket();
        a.connect(T0, client, SocketAddrV4::new(ADDR_B, PORT))
            .expect("connect");
        let mut pair = Pair {
            a,
            b,
            client,
            server: l,
            now: T0,
        };
        pair.shuttle();
        let (server, _) = pair.b.accept(l).expect("accepted");
        pair.server = server;
        pair
    }

    /// Moves packets both ways (whole) until both are quiet.
    fn shuttle(&mut self) {
        loop {
            let from_a = emit(&mut self.a, self.now);
            deliver(&mut self.b, self.now, &from_a);
            let from_b = emit(&mut self.b, self.now);
            deliver(&mut self.a, self.now, &from_b);
            if from_a.is_empty() && from_b.is_empty() {
                break;
            }
        }
    }

    fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = self.b.recv(self.now, self.server, &mut buf, false) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

fn payload_len(e: &Emitted) -> usize {
    e.tcp().payload.len()
}

#[test]
fn a_burst_is_one_super_segment_cut_at_the_mss_within_cwnd() {
    let mut p = Pair::new(test_config(ADDR_B, 2));
    let sent = data(200_000);
    let queued = p.a.send(p.now, p.client, &sent).expect("send");
    assert!(queued > 10 * MSS, "room for more than the initial window");
    let out = emit(&mut p.a, p.now);
    assert_eq!(
        out.len(),
        1,
        "the initial window leaves as one super-segment"
    );
    let burst = &out[0];
    // RFC 6928: the initial window is 10 segments.
    assert_eq!(payload_len(burst), 10 * MSS);
    let gso = burst.header.gso.expect("a GSO header");
    assert_eq!((gso.kind, usize::from(gso.size)), (GsoKind::TcpV4, MSS));
    assert_eq!(
        usize::from(gso.hdr_len),
        20 + 32,
        "IPv4 + TCP with timestamps"
    );
    assert_eq!(
        burst.header.checksum,
        Checksum::Partial {
            start: 20,
            offset: 16
        }
    );
    // What the wire carries: ten MSS segments, same ACK, window and timestamps.
    let pieces = burst.pieces();
    assert_eq!(pieces.len(), 10);
    let first = parse_tcp(&pieces[0]);
    for (i, piece) in pieces.iter().enumerate() {
        let seg = parse_tcp(piece); // checksums verified
        assert_eq!(seg.payload.len(), MSS);
        assert_eq!(seg.seq, first.seq.wrapping_add((i * MSS) as u32));
        assert_eq!(seg.ack, first.ack);
        assert_eq!(seg.window, first.window);
        assert_eq!(seg.options.timestamp, first.options.timestamp);
        assert!(!seg.flags.fin());
    }
    // Nothing more until an ACK opens cwnd.
    assert!(emit(&mut p.a, p.now).is_empty());
    deliver(&mut p.b, p.now, &out);
    p.shuttle();
    p.now += Duration::from_millis(1);
    p.shuttle();
    let got = p.read_all();
    assert_eq!(got, &sent[..got.len()]);
    assert!(
        got.len() > 10 * MSS,
        "cwnd grew and more super-segments followed"
    );
}

#[test]
fn super_segments_respect_the_peer_window() {
    let mut config = test_config(ADDR_B, 3);
    config.socket_defaults.recv_buffer = 8 * 1024;
    let mut p = Pair::new(config);
    let sent = data(100_000);
    p.a.send(p.now, p.client, &sent).expect("send");
    let out = emit(&mut p.a, p.now);
    let total: usize = out.iter().map(payload_len).sum();
    assert!(
        total > 0 && total <= 8 * 1024,
        "sent {total} into an 8 KiB window"
    );
}

#[test]
fn nagle_holds_the_tail_and_nodelay_sends_it_along() {
    for nodelay in [false, true] {
        let mut p = Pair::new(test_config(ADDR_B, 4));
        p.a.set_option(p.now, p.client, SockOption::NoDelay(nodelay))
            .expect("nodelay");
        // A small write leaves at once (nothing in flight)...
        p.a.send(p.now, p.client, &data(100)).expect("send");
        let small = emit(&mut p.a, p.now);
        assert_eq!(small.iter().map(payload_len).collect::<Vec<_>>(), vec![100]);
        // ... and while it is unacknowledged, a write of 3 MSS + 100 bytes:
        let sent = data(3 * MSS + 100);
        p.a.send(p.now, p.client, &sent).expect("send");
        let out = emit(&mut p.a, p.now);
        let lens: Vec<usize> = out.iter().map(payload_len).collect();
        if nodelay {
            assert_eq!(lens, vec![3 * MSS + 100], "everything in one super-segment");
            let pieces = out[0].pieces();
            let last = parse_tcp(&pieces[3]);
            assert_eq!(last.payload.len(), 100);
            assert!(last.flags.psh(), "PSH on the last piece only");
            assert!(!parse_tcp(&pieces[0]).flags.psh());
        } else {
            // RFC 9293 §3.7.4 in Minshall's variant (as Linux): the full
            // segments go, the short tail waits for the small one's ACK.
            assert_eq!(lens, vec![3 * MSS]);
            deliver(&mut p.b, p.now, &small);
            deliver(&mut p.b, p.now, &out);
            let acks = emit(&mut p.b, p.now);
            assert!(!acks.is_empty(), "a 3-MSS super-segment is ACKed at once");
            deliver(&mut p.a, p.now, &acks);
            let tail = emit(&mut p.a, p.now);
            assert_eq!(tail.iter().map(payload_len).collect::<Vec<_>>(), vec![100]);
            assert_eq!(tail[0].header.gso, None, "a short segment needs no GSO");
        }
    }
}

#[test]
fn fin_rides_on_the_last_piece() {
    let mut p = Pair::new(test_config(ADDR_B, 5));
    let sent = data(2 * MSS + 10);
    p.a.send(p.now, p.client, &sent).expect("send");
    p.a.shutdown(p.now, p.client, tcpd_stack::Shutdown::Write)
        .expect("shutdown");
    let out = emit(&mut p.a, p.now);
    assert_eq!(out.len(), 1);
    assert!(out[0].tcp().flags.fin());
    let pieces = out[0].pieces();
    assert_eq!(pieces.len(), 3);
    assert!(!parse_tcp(&pieces[0]).flags.fin() && !parse_tcp(&pieces[1]).flags.fin());
    assert!(parse_tcp(&pieces[2]).flags.fin());
    deliver(&mut p.b, p.now, &out);
    assert_eq!(p.read_all(), sent);
}

#[test]
fn a_lost_super_segment_is_retransmitted_mss_sized_after_the_timeout() {
    let mut p = Pair::new(test_config(ADDR_B, 6));
    p.a.send(p.now, p.client, &data(50_000)).expect("send");
    let lost = emit(&mut p.a, p.now);
    assert_eq!(payload_len(&lost[0]), 10 * MSS);
    let first_seq = lost[0].tcp().seq;
    // Nothing arrives: the tail-loss probe (RFC 8985 §7) and then the RTO
    // fire (RFC 6298 §5.4-5.6: cwnd = 1 segment). Every retransmission or
    // probe is one MSS at most; the first lost segment is resent.
    let mut resent = false;
    for _ in 0..4 {
        let deadline = p.a.poll_timeout().expect("a timer is armed");
        p.now = deadline;
        p.a.handle_timeout(p.now);
        for e in emit(&mut p.a, p.now) {
            assert!(payload_len(&e) <= MSS, "{}", payload_len(&e));
            assert_eq!(e.header.gso, None);
            resent |= e.tcp().seq == first_seq;
        }
        if resent {
            break;
        }
    }
    assert!(resent, "the first lost segment was retransmitted");
}

#[test]
fn a_sack_hole_inside_a_super_segment_is_retransmitted_mss_sized() {
    let mut p = Pair::new(test_config(ADDR_B, 7));
    let sent = data(10 * MSS);
    p.a.send(p.now, p.client, &sent).expect("send");
    let out = emit(&mut p.a, p.now);
    let pieces = out[0].pieces();
    assert_eq!(pieces.len(), 10);
    // The wire loses the second piece; B SACKs the rest.
    let mut acks = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if i != 1 {
            p.b.handle_packet(p.now, piece);
            acks.extend(emit(&mut p.b, p.now));
        }
    }
    assert!(
        acks.len() >= 3,
        "out-of-order data is ACKed at once (RFC 5681 §4.2)"
    );
    deliver(&mut p.a, p.now, &acks);
    let retransmitted = emit(&mut p.a, p.now);
    let hole = parse_tcp(&pieces[1]);
    let first = retransmitted.first().expect("fast retransmit");
    assert_eq!(first.tcp().seq.0, hole.seq);
    assert_eq!(payload_len(first), MSS, "only the lost segment");
    assert_eq!(first.header.gso, None);
    deliver(&mut p.b, p.now, &retransmitted);
    assert_eq!(p.read_all(), sent);
}

/// Wire pieces `range` of a super-segment from A to B coalesced again into
/// one packet, as the kernel's GRO would, with its virtio-net header.
fn coalesced(pieces: &[Vec<u8>], range: std::ops::Range<usize>) -> (Vec<u8>, VirtioNetRepr) {
    let first = parse_tcp(&pieces[range.start]);
    let mut payload = Vec::new();
    for piece in &pieces[range.clone()] {
        payload.extend(parse_tcp(piece).payload);
    }
    let mut seg = Segment::new(
        SocketAddrV4::new(ADDR_A, first.src_port),
        SocketAddrV4::new(ADDR_B, first.dst_port),
        first.flags,
        first.seq,
        first.ack,
    );
    seg.options = first.options;
    seg.window = first.window;
    seg.payload = &payload;
    let packet = seg.to_packet();
    let header = VirtioNetRepr {
        checksum: Checksum::Complete,
        gso: Some(tcpd_stack::wire::Gso {
            kind: GsoKind::TcpV4,
            size: MSS as u16,
            hdr_len: 52,
            ecn: false,
        }),
    };
    (packet, header)
}

/// A pair (server config seeded `seed`) whose client, with TCP_NODELAY,
/// has queued `len` bytes; returns the pair and the bytes.
fn nodelay_send(seed: u64, len: usize) -> (Pair, Vec<u8>) {
    let mut p = Pair::new(test_config(ADDR_B, seed));
    let sent = data(len);
    p.a.set_option(p.now, p.client, SockOption::NoDelay(true))
        .expect("nodelay");
    p.a.send(p.now, p.client, &sent).expect("send");
    (p, sent)
}

#[test]
fn coalesced_segments_are_taken_in_order_with_gaps_and_overlaps() {
    let (mut p, sent) = nodelay_send(8, 10 * MSS);
    let out = emit(&mut p.a, p.now);
    let pieces = out[0].pieces();
    // Re-coalesce pieces 4..10 and 0..6 (overlapping 4..6) as the kernel's
    // GRO would, and deliver the later one first (a gap).
    let coalesce = |range| coalesced(&pieces, range);
    let (late, late_header) = coalesce(4..10);
    p.b.handle_packet_offload(p.now, &late, &late_header);
    let sack = emit(&mut p.b, p.now);
    assert_eq!(sack.len(), 1, "a gap is answered at once");
    assert_eq!(sack[0].tcp().options.sacks().count(), 1);
    let (early, early_header) = coalesce(0..6);
    p.b.handle_packet_offload(p.now, &early, &early_header);
    assert_eq!(p.read_all(), sent, "overlap trimmed, all in order");
    let ack = emit(&mut p.b, p.now);
    assert_eq!(ack.len(), 1, "ACKed at once: it counts as 6 segments");
}

#[test]
fn checksums_are_trusted_only_when_the_kernel_promised_them() {
    let mut p = Pair::new(test_config(ADDR_B, 9));
    p.a.set_option(p.now, p.client, SockOption::NoDelay(true))
        .expect("nodelay");
    let sent = data(3 * MSS);
    p.a.send(p.now, p.client, &sent).expect("send");
    let out = emit(&mut p.a, p.now);
    let partial = out[0].clone();
    // Claimed complete, but the field holds only the pseudo-header sum.
    let lying = VirtioNetRepr {
        checksum: Checksum::Complete,
        ..partial.header
    };
    let before = p.b.stats().drops(DropReason::Checksum);
    p.b.handle_packet_offload(p.now, &partial.packet, &lying);
    assert_eq!(p.b.stats().drops(DropReason::Checksum), before + 1);
    // NEEDS_CSUM anywhere but the TCP checksum field is refused.
    let odd = VirtioNetRepr {
        checksum: Checksum::Partial {
            start: 20,
            offset: 10,
        },
        ..partial.header
    };
    p.b.handle_packet_offload(p.now, &partial.packet, &odd);
    assert_eq!(p.b.stats().drops(DropReason::Offload), 1);
    // A completed checksum that verifies is accepted as a plain packet...
    let mut complete = partial.packet.clone();
    virtio::complete_checksum(&mut complete, 20, 16).expect("in bounds");
    let mut corrupted = complete.clone();
    p.b.handle_packet_offload(p.now, &complete, &VirtioNetRepr::PLAIN);
    assert_eq!(p.read_all(), sent);
    // ... a corrupted one is dropped unless the kernel says it verified it.
    let last = corrupted.len() - 1;
    corrupted[last] ^= 1;
    let before = p.b.stats().drops(DropReason::Checksum);
    p.b.handle_packet_offload(p.now, &corrupted, &VirtioNetRepr::PLAIN);
    assert_eq!(p.b.stats().drops(DropReason::Checksum), before + 1);
    // The same bytes under NEEDS_CSUM (the partial form) are accepted:
    // they never left the host. (A duplicate here: counted, not delivered.)
    p.b.handle_packet_offload(p.now, &partial.packet, &partial.header);
    assert_eq!(p.b.stats().drops(DropReason::Checksum), before + 1);
}

#[test]
fn offload_off_keeps_mss_segments() {
    let mut a = Stack::new(test_config(ADDR_A, 10), T0);
    let mut buf = vec![0u8; 65536];
    let l = a.socket();
    a.bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
        .expect("bind");
    assert!(a.poll_transmit_offload(T0, &mut buf).is_none());
    // The plain API never makes super-segments even with offload configured.
    let mut p = Pair::new(test_config(ADDR_B, 11));
    p.a.send(p.now, p.client, &data(20 * MSS)).expect("send");
    let plain = drain_transmit(&mut p.a, p.now);
    assert_eq!(plain.len(), 10);
    for packet in &plain {
        assert_eq!(parse_tcp(packet).payload.len(), MSS);
    }
}

proptest::proptest! {
    /// Arbitrary virtio-net headers in front of a live connection's data
    /// (bad gso_size, hdr_len, csum_start/csum_offset beyond the packet):
    /// the link's parse refuses what does not fit (counted), the stack
    /// refuses offsets it cannot honour (counted), nothing panics, and no
    /// refused packet reaches the connection.
    #[test]
    fn arbitrary_virtio_headers_are_dropped_and_counted(
        header in proptest::collection::vec(proptest::prelude::any::<u8>(), virtio::HEADER_LEN),
        payload in 0usize..3000,
    ) {
        let mut p = Pair::new(offload_config(ADDR_B, 12));
        p.a.set_option(p.now, p.client, SockOption::NoDelay(true)).expect("nodelay");
        p.a.send(p.now, p.client, &data(payload.max(1))).expect("send");
        let out = emit(&mut p.a, p.now);
        let mut bytes = header.clone();
        bytes.extend_from_slice(&out[0].packet);
        let drops = |s: &Stack| s.stats().drops(DropReason::Offload);
        let before = drops(&p.b);
        match VirtioNetRepr::parse(&bytes) {
            Err(_) => {
                p.b.count_link_drop(DropReason::Offload);
                proptest::prop_assert_eq!(drops(&p.b), before + 1);
            }
            Ok((repr, packet)) => {
                p.b.handle_packet_offload(p.now, packet, &repr);
                if let Checksum::Partial { start, offset } = repr.checksum
                    && (start, offset) != (20, 16)
                {
                    proptest::prop_assert_eq!(drops(&p.b), before + 1);
                }
            }
        }
    }
}

/// Where `chunk`'s bytes live, as an address range.
fn span(bytes: &[u8]) -> std::ops::Range<usize> {
    let start = bytes.as_ptr() as usize;
    start..start + bytes.len()
}

/// Moves A's data to B as the link's buffers (`Bytes`, what
/// `handle_packet_shared` takes), round after round until A is quiet;
/// returns the frames.
fn deliver_shared(p: &mut Pair) -> Vec<bytes::Bytes> {
    let mut frames = Vec::new();
    loop {
        let from_a = emit(&mut p.a, p.now);
        if from_a.is_empty() {
            return frames;
        }
        for e in from_a {
            let frame = bytes::Bytes::from(e.packet);
            p.b.handle_packet_shared(p.now, frame.clone(), &e.header);
            frames.push(frame);
        }
        let from_b = emit(&mut p.b, p.now);
        deliver(&mut p.a, p.now, &from_b);
    }
}

#[test]
fn frames_handed_over_as_bytes_are_read_without_a_copy() {
    let (mut p, sent) = nodelay_send(9, 50 * MSS);
    let frames = deliver_shared(&mut p);
    let mut chunks = Vec::new();
    let n =
        p.b.recv_bytes(p.now, p.server, usize::MAX, &mut chunks)
            .expect("readable");
    assert_eq!(n, sent.len());
    assert_eq!(chunks.concat(), sent, "every byte, in order");
    // Each data frame's payload is read as a slice of it, not a copy.
    let data_frames = frames.iter().filter(|f| f.len() > 100).count();
    assert_eq!(chunks.len(), data_frames, "one chunk per frame");
    for chunk in &chunks {
        let inside = frames.iter().any(|frame| {
            let (frame, chunk) = (span(frame), span(chunk));
            frame.start <= chunk.start && chunk.end <= frame.end
        });
        assert!(inside, "read in place, not copied");
    }
}

#[test]
fn shared_frames_with_a_gap_are_reassembled() {
    let (mut p, sent) = nodelay_send(10, 10 * MSS);
    let out = emit(&mut p.a, p.now);
    let pieces = out[0].pieces();
    // Pieces 4..10 first (held out of order: copied), then 0..6.
    let (late, late_header) = coalesced(&pieces, 4..10);
    p.b.handle_packet_shared(p.now, late.into(), &late_header);
    let mut chunks = Vec::new();
    assert!(
        p.b.recv_bytes(p.now, p.server, usize::MAX, &mut chunks)
            .is_err(),
        "nothing readable before the gap fills"
    );
    let (early, early_header) = coalesced(&pieces, 0..6);
    p.b.handle_packet_shared(p.now, early.into(), &early_header);
    // Read in two pieces, the first ending inside a chunk.
    let n =
        p.b.recv_bytes(p.now, p.server, MSS + 7, &mut chunks)
            .expect("readable");
    assert_eq!(n, MSS + 7);
    p.b.recv_bytes(p.now, p.server, usize::MAX, &mut chunks)
        .expect("readable");
    assert_eq!(chunks.concat(), sent);
}

#[test]
fn a_vectored_read_consumes_only_what_its_writer_took() {
    let (mut p, sent) = nodelay_send(11, 50 * MSS);
    let frames = deliver_shared(&mut p);
    // A writer that takes a little less each time than it is offered (a
    // partial writev), ending inside a slice, then nothing at all (a full
    // pair): only what it took is consumed, in order, and every slice it
    // is offered lies in one of the link's frames (no copy).
    let mut got = Vec::new();
    let mut calls = 0;
    loop {
        let mut took = 0;
        let r = p.b.recv_with(p.now, p.server, 3 * MSS, |slices| {
            calls += 1;
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            assert!(offered <= 3 * MSS);
            for slice in slices {
                let inside = frames.iter().any(|frame| {
                    let (frame, slice) = (span(frame), span(slice));
                    frame.start <= slice.start && slice.end <= frame.end
                });
                assert!(inside, "offered in place, not copied");
            }
            took = if calls % 4 == 0 {
                0
            } else {
                offered - offered / 3
            };
            let mut left = took;
            for slice in slices {
                let n = slice.len().min(left);
                got.extend_from_slice(&slice[..n]);
                left -= n;
            }
            took
        });
        match r {
            Ok(n) => assert_eq!(n, took),
            Err(tcpd_stack::RecvError::WouldBlock) => break,
            Err(e) => panic!("recv_with: {e:?}"),
        }
        assert!(calls < 10_000, "progress");
    }
    assert_eq!(got, sent, "every byte once, in order");
}

/// The packets `poll_transmit_vectored` emits, each flattened (headers then
/// the lent payload), with how many lent their payload and how many of
/// those crossed the send buffer's ring wrap.
fn emit_vectored(stack: &mut Stack, now: Instant) -> (Vec<Emitted>, usize, usize) {
    let mut buf = vec![0u8; 65536];
    let (mut out, mut lent, mut wrapped) = (Vec::new(), 0, 0);
    while let Some(tx) = stack.poll_transmit_vectored(now, &mut buf, false) {
        lent += usize::from(tx.is_vectored());
        wrapped += usize::from(!tx.payload[1].is_empty());
        let packet = [tx.head, tx.payload[0], tx.payload[1]].concat();
        assert_eq!(packet.len(), tx.len());
        out.push(Emitted {
            packet,
            header: tx.offload,
        });
        assert!(
            out.len() < 10_000,
            "poll_transmit_vectored never returns None"
        );
    }
    (out, lent, wrapped)
}

/// Two identical pairs driven in lockstep, A's packets taken with the
/// copying `poll_transmit_offload` in one and `poll_transmit_vectored`
/// in the other: every packet is the same, byte for byte (checksum
/// included: partial with checksum offload, computed over the send
/// buffer's slices without), through writes of odd sizes that make the
/// ring wrap at odd offsets.
fn vectored_matches_copied(offload: bool) {
    let config = |address, seed| {
        if offload {
            offload_config(address, seed)
        } else {
            test_config(address, seed)
        }
    };
    let mut copied = Pair::with(config(ADDR_A, 1), config(ADDR_B, 2));
    let mut vectored = Pair::with(config(ADDR_A, 1), config(ADDR_B, 2));
    let stream = data(3 << 20);
    let (mut sent, mut received) = (0, Vec::new());
    let (mut lent, mut wrapped) = (0, 0);
    for round in 0..10_000 {
        if sent < stream.len() {
            let chunk = &stream[sent..(sent + 1001 * (1 + round % 7)).min(stream.len())];
            let a = copied.a.send(copied.now, copied.client, chunk);
            let b = vectored.a.send(vectored.now, vectored.client, chunk);
            assert_eq!(a, b);
            sent += a.unwrap_or(0);
        }
        let from_copied = emit(&mut copied.a, copied.now);
        let (from_vectored, l, w) = emit_vectored(&mut vectored.a, vectored.now);
        (lent, wrapped) = (lent + l, wrapped + w);
        assert_eq!(from_copied.len(), from_vectored.len(), "round {round}");
        for (c, v) in from_copied.iter().zip(&from_vectored) {
            assert_eq!(c.packet, v.packet, "round {round}: same bytes");
            assert_eq!(c.header, v.header, "round {round}: same offload");
        }
        deliver(&mut copied.b, copied.now, &from_copied);
        deliver(&mut vectored.b, vectored.now, &from_vectored);
        for p in [&mut copied, &mut vectored] {
            let acks = emit(&mut p.b, p.now);
            deliver(&mut p.a, p.now, &acks);
            p.now += Duration::from_millis(1);
        }
        received.extend(vectored.read_all());
        copied.read_all();
        if received.len() == stream.len() {
            break;
        }
    }
    assert!(
        received == stream,
        "the stream arrived whole through the vectored path"
    );
    assert!(lent > 100, "payload was lent ({lent} packets)");
    assert!(wrapped > 0, "some payload crossed the ring's wrap");
}

#[test]
fn vectored_transmission_matches_the_copying_one_with_offload() {
    vectored_matches_copied(true);
}

#[test]
fn vectored_transmission_matches_the_copying_one_without_offload() {
    vectored_matches_copied(false);
}
