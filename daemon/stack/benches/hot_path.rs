//! Hot-path benchmarks of the stack (criterion; `harness = false`).
//!
//! - `segment_in/established_data_segment`: one MSS-sized in-order data
//!   segment for an ESTABLISHED connection: IPv4 + TCP parse with checksum,
//!   demux, receive processing, the application's recv, and the ACK the
//!   stack emits (one per two segments, RFC 5681 §4.2 / RFC 9293 §3.8.6.3).
//!   Packets are built outside the measurement. Read ns per segment.
//! - `bulk/two_stacks_no_loss`: an 8 MiB transfer between two stacks over
//!   the in-memory simulated link of `tests/common` (no loss, 10 µs one
//!   way, virtual clock), reported as bytes/s so Gbit/s can be read off.
//! - `bulk/two_stacks_super_segments`: the same transfer with TUN offload on
//!   the sender (`LinkOffload`): A emits 64 KiB super-segments with partial
//!   checksums (`poll_transmit_offload`) that B takes whole, as the kernel
//!   hands coalesced segments to tcpd (`handle_packet_offload`); no link
//!   delay, the virtual clock advances 10 µs per round trip.
//!
//! Quick run: `cargo bench -p tcpd-stack --bench hot_path -- --quick`.
//!
//! Cost of tracing compiled in but disabled (issue 15: within 2 %): build
//! the baseline with the `tracing` macros compiled out, then compare,
//! on a quiet machine:
//! `cargo bench -p tcpd-stack --bench hot_path --features tracing/max_level_off -- --save-baseline off segment_in`,
//! then `cargo bench -p tcpd-stack --bench hot_path -- --baseline off segment_in`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ADDR_A, ADDR_B, LinkConfig, Segment, Sim, drain_transmit, parse_tcp, test_config};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration as WallDuration;
use tcpd_stack::wire::{TcpFlags, TcpOptions};
use tcpd_stack::{Duration, Instant, SocketHandle, Stack};

const MSS: usize = 1448; // 1500 - 40 - 12 bytes of timestamp option

struct Receiver {
    stack: Stack,
    socket: SocketHandle,
    now: Instant,
    next_seq: u32,
    ack: u32,
    ts_echo: u32,
    ts_val: u32,
}

impl Receiver {
    /// A stack with one accepted ESTABLISHED connection from 10.0.0.1:40000
    /// that negotiated window scaling, SACK and timestamps.
    fn new() -> Self {
        let mut now = Instant::from_millis(1_000);
        let mut stack = Stack::new(test_config(ADDR_B, 1), now);
        let listener = stack.socket();
        stack
            .bind(listener, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
            .expect("bind");
        stack.listen(listener, 8).expect("listen");
        let peer = SocketAddrV4::new(ADDR_A, 40000);
        let ours = SocketAddrV4::new(ADDR_B, 80);
        let mut syn = Segment::new(peer, ours, TcpFlags::SYN, 1000, 0);
        syn.options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((1, 0)),
            ..TcpOptions::default()
        };
        stack.handle_packet(now, &syn.to_packet());
        let synack = parse_tcp(&drain_transmit(&mut stack, now)[0]);
        let ts_echo = synack.options.timestamp.map_or(0, |(val, _)| val);
        let mut ack = Segment::new(peer, ours, TcpFlags::ACK, 1001, synack.seq.wrapping_add(1));
        ack.options.timestamp = Some((2, ts_echo));
        now += Duration::from_millis(1);
        stack.handle_packet(now, &ack.to_packet());
        let (socket, _) = stack.accept(listener).expect("accept");
        Receiver {
            stack,
            socket,
            now,
            next_seq: 1001,
            ack: synack.seq.wrapping_add(1),
            ts_echo,
            ts_val: 2,
        }
    }

    fn next_packet(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut seg = Segment::new(
            SocketAddrV4::new(ADDR_A, 40000),
            SocketAddrV4::new(ADDR_B, 80),
            TcpFlags::ACK | TcpFlags::PSH,
            self.next_seq,
            self.ack,
        );
        seg.window = 1024;
        seg.options.timestamp = Some((self.ts_val, self.ts_echo));
        seg.payload = payload;
        self.next_seq = self.next_seq.wrapping_add(payload.len() as u32);
        seg.to_packet()
    }

    /// The measured work for one segment.
    fn process(&mut self, packet: &[u8], scratch: &mut [u8], out: &mut [u8]) -> usize {
        self.now += Duration::from_micros(10);
        self.stack.handle_packet(self.now, packet);
        let mut bytes = 0;
        while let Ok(n) = self.stack.recv(self.now, self.socket, scratch, false) {
            if n == 0 {
                break;
            }
            bytes += n;
        }
        while let Some(len) = self.stack.poll_transmit(self.now, out) {
            bytes += len;
        }
        while self.stack.poll_event().is_some() {}
        bytes
    }
}

fn segment_in(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_in");
    group.throughput(Throughput::Elements(1));
    let payload = vec![0x42u8; MSS];
    group.bench_function("established_data_segment", |b| {
        let mut receiver = Receiver::new();
        let mut scratch = vec![0u8; 64 * 1024];
        let mut out = vec![0u8; 1500];
        b.iter_custom(|iters| {
            let mut total = WallDuration::ZERO;
            let mut remaining = iters;
            while remaining > 0 {
                let chunk = remaining.min(1024);
                remaining -= chunk;
                let packets: Vec<Vec<u8>> =
                    (0..chunk).map(|_| receiver.next_packet(&payload)).collect();
                let start = std::time::Instant::now();
                for packet in &packets {
                    black_box(receiver.process(packet, &mut scratch, &mut out));
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

const BULK_BYTES: usize = 8 * 1024 * 1024;

/// One bulk transfer of `BULK_BYTES` from A to B; returns bytes received.
fn bulk_transfer(data: &[u8]) -> usize {
    let mut link = LinkConfig::perfect();
    link.delay = Duration::from_micros(10);
    let mut sim = Sim::new(1, link);
    let listener = sim.b.socket();
    sim.b
        .bind(listener, SocketAddrV4::new(ADDR_B, 80))
        .expect("bind");
    sim.b.listen(listener, 8).expect("listen");
    let client = sim.a.socket();
    for (side, handle) in [(common::Side::A, client), (common::Side::B, listener)] {
        let now = sim.now;
        let stack = sim.stack(side);
        stack
            .set_option(now, handle, tcpd_stack::SockOption::SendBuffer(4 << 20))
            .expect("sndbuf");
        stack
            .set_option(now, handle, tcpd_stack::SockOption::RecvBuffer(4 << 20))
            .expect("rcvbuf");
    }
    sim.a
        .connect(sim.now, client, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    let mut server = None;
    let mut sent = 0;
    let mut received = 0;
    let mut buf = vec![0u8; 256 * 1024];
    sim.run_until("bulk transfer complete", |sim| {
        if server.is_none() {
            server = sim.b.accept(listener).ok().map(|(h, _)| h);
        }
        while sent < data.len() {
            match sim.a.send(sim.now, client, &data[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        if let Some(server) = server {
            while let Ok(n) = sim.b.recv(sim.now, server, &mut buf, false) {
                if n == 0 {
                    break;
                }
                received += n;
            }
        }
        received == data.len()
    });
    received
}

/// `bulk_transfer` with 64 KiB super-segments from A to B, handed over whole.
fn bulk_super_segments(data: &[u8]) -> usize {
    use tcpd_stack::LinkOffload;
    use tcpd_stack::SockOption::{RecvBuffer, SendBuffer};
    let mut now = Instant::from_millis(1_000);
    let mut a_config = test_config(ADDR_A, 1);
    a_config.offload = LinkOffload {
        segmentation: true,
        checksum: true,
    };
    let mut a = Stack::new(a_config, now);
    let mut b = Stack::new(test_config(ADDR_B, 2), now);
    let listener = b.socket();
    b.bind(listener, SocketAddrV4::new(ADDR_B, 80))
        .expect("bind");
    b.set_option(now, listener, RecvBuffer(4 << 20))
        .expect("rcvbuf");
    b.listen(listener, 8).expect("listen");
    let client = a.socket();
    a.set_option(now, client, SendBuffer(4 << 20))
        .expect("sndbuf");
    a.connect(now, client, SocketAddrV4::new(ADDR_B, 80))
        .expect("connect");
    let mut wire = vec![0u8; 65536];
    let mut buf = vec![0u8; 256 * 1024];
    let (mut server, mut sent, mut received) = (None, 0, 0);
    for _ in 0..1_000_000 {
        while let Some((n, header)) = a.poll_transmit_offload(now, &mut wire) {
            b.handle_packet_offload(now, &wire[..n], &header);
        }
        while let Some(n) = b.poll_transmit(now, &mut wire) {
            a.handle_packet(now, &wire[..n]);
        }
        if server.is_none() {
            server = b.accept(listener).ok().map(|(h, _)| h);
        }
        while sent < data.len() {
            match a.send(now, client, &data[sent..]) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        if let Some(server) = server {
            while let Ok(n) = b.recv(now, server, &mut buf, false) {
                if n == 0 {
                    break;
                }
                received += n;
            }
        }
        if received == data.len() {
            break;
        }
        now += Duration::from_micros(10);
        for stack in [&mut a, &mut b] {
            if stack.poll_timeout().is_some_and(|t| t <= now) {
                stack.handle_timeout(now);
            }
        }
    }
    assert_eq!(received, data.len(), "the transfer completed");
    received
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulk");
    group.throughput(Throughput::Bytes(BULK_BYTES as u64));
    group.sample_size(10);
    let data = vec![0x17u8; BULK_BYTES];
    group.bench_function("two_stacks_no_loss", |b| {
        b.iter_batched(
            || (),
            |()| black_box(bulk_transfer(&data)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("two_stacks_super_segments", |b| {
        b.iter_batched(
            || (),
            |()| black_box(bulk_super_segments(&data)),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, segment_in, bulk);
criterion_main!(benches);
