//! Structured fuzzing of a [`Stack`] that has open connections, shared by the
//! bounded proptest in `tests/stack_fuzz.rs` and the cargo-fuzz target
//! `stack_input` (which includes this file by path, so it depends on
//! nothing but `tcpd-stack`).
//!
//! [`Harness::new`] builds a stack (10.0.0.2) with a listener on port 80, one
//! accepted ESTABLISHED connection with data in flight both ways, and one
//! connection of its own in SYN-SENT. [`Harness::run`] reads the fuzz input
//! as a sequence of operations: raw bytes as a packet; TCP segments with
//! valid checksums whose flags, sequence and acknowledgement numbers (near
//! the live ones), window, options and payload come from the input, aimed at
//! either connection or the listener (SYNs that fill its one-entry SYN
//! queue and get SYN cookies, answers to its SYN,ACKs and cookies, exact or
//! off); ICMP echo and unreachable messages; IPv6 packets (to a
//! dual-stack listener on `[::]:81`) with extension-header chains
//! (hop-by-hop and destination options with arbitrary TLVs, routing,
//! fragment headers, lying payload lengths, odd sources and destinations)
//! carrying TCP, ICMPv6 echo and errors quoting live connections, or
//! unknown protocols (Parameter Problem paths);
//! valid packets with mutations (checksums fixed or not); clock advances;
//! user calls. After every operation it checks that the stack stays sane:
//! every packet it emits parses with valid checksums and fits the MTU,
//! `poll_transmit` runs dry, timers are in the future after
//! `handle_timeout`, and the socket table is consistent.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use tcpd_stack::seq::SeqNum;
use tcpd_stack::wire::checksum;
use tcpd_stack::wire::{
    Icmpv4Repr, Icmpv6Repr, IpProtocol, Ipv4Repr, Ipv6Repr, SackBlock, TcpFlags, TcpOptions,
    TcpRepr,
};
use tcpd_stack::{
    Duration, Instant, IpFamily, OptionName, Shutdown, SockOption, SocketHandle, Stack, StackConfig,
};

const OURS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OURS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const LISTEN_PORT: u16 = 80;
/// The dual-stack `[::]` listener's port.
const LISTEN_PORT6: u16 = 81;
const PEER_PORT: u16 = 40000;
const SERVER_PORT_FOR_CLIENT: u16 = 5000;
/// Upper bound on packets drained after one operation: more is a livelock.
const TRANSMIT_LIMIT: usize = 20_000;

/// Reads the fuzz input; yields zeros once exhausted.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }
}

/// A stack with live connections and what the harness knows about them.
#[derive(Debug)]
pub struct Harness {
    pub stack: Stack,
    pub now: Instant,
    listener: SocketHandle,
    server: SocketHandle,
    client: SocketHandle,
    client_local: SocketAddrV4,
    /// Next sequence number the server connection expects from the peer (its RCV.NXT as last ACKed).
    peer_next: u32,
    /// Highest sequence number the server connection has sent (SND.NXT).
    our_next: u32,
    /// The SYN-SENT connection's ISS.
    client_iss: u32,
    /// Valid packets seen on the way in, to mutate.
    corpus: Vec<Vec<u8>>,
    /// The last SYN,ACK a listener sent (a child's or a SYN cookie's):
    /// (peer port, its SEQ, its ACK), for the fuzzer to answer.
    last_synack: Option<(u16, u32, u32)>,
    packets_in: u64,
}

fn config() -> StackConfig {
    let mut config = StackConfig::new(OURS, 24);
    config.rng_seed = 42;
    config.isn_secret = [9; 16];
    // A one-entry SYN queue: SYNs the fuzzer sends to the listener beyond
    // one half-open child are answered with SYN cookies, and its ACKs to
    // the listener are checked as cookies (RFC 4987 §3.6 paths).
    config.max_syn_backlog = 1;
    config.addresses6 = vec![tcpd_stack::Ipv6Net::new(OURS6, 64).expect("prefix length")];
    config
}

fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0; 20 + payload.len()];
    packet[20..].copy_from_slice(payload);
    Ipv4Repr {
        src,
        dst,
        protocol,
        ttl: 64,
        dont_fragment: true,
        payload_len: payload.len(),
    }
    .emit(&mut packet[..20], 0x4242);
    packet
}

fn tcp_packet(src: SocketAddrV4, dst: SocketAddrV4, repr: &TcpRepr<'_>) -> Vec<u8> {
    let mut segment = vec![0; repr.buffer_len()];
    let len = repr.emit(&mut segment, *src.ip(), *dst.ip());
    segment.truncate(len);
    ip_packet(*src.ip(), *dst.ip(), IpProtocol::Tcp, &segment)
}

fn segment<'a>(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &'a [u8],
) -> TcpRepr<'a> {
    TcpRepr {
        src_port,
        dst_port,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        urgent: 0,
        options: TcpOptions::default(),
        payload,
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// The stack with its connections (see the module docs).
    pub fn new() -> Self {
        let mut now = Instant::from_millis(10_000);
        let mut stack = Stack::new(config(), now);
        let listener = stack.socket();
        stack
            .bind(
                listener,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LISTEN_PORT),
            )
            .expect("bind on a fresh stack");
        stack.listen(listener, 8).expect("listen on a bound socket");
        let listener6 = stack.socket_of(IpFamily::V6);
        stack
            .bind(
                listener6,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, LISTEN_PORT6)),
            )
            .expect("bind [::]");
        stack.listen(listener6, 8).expect("listen on [::]");
        let peer = SocketAddrV4::new(PEER, PEER_PORT);
        let ours = SocketAddrV4::new(OURS, LISTEN_PORT);
        let mut syn = segment(PEER_PORT, LISTEN_PORT, 1000, 0, TcpFlags::SYN, &[]);
        syn.options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((100, 0)),
            ..TcpOptions::default()
        };
        let syn_packet = tcp_packet(peer, ours, &syn);
        let mut harness = Harness {
            stack,
            now,
            listener,
            server: listener,
            client: listener,
            client_local: ours,
            peer_next: 1001,
            our_next: 0,
            client_iss: 0,
            corpus: Vec::new(),
            last_synack: None,
            packets_in: 0,
        };
        harness.feed(&syn_packet);
        let ack = segment(
            PEER_PORT,
            LISTEN_PORT,
            1001,
            harness.our_next,
            TcpFlags::ACK,
            &[],
        );
        let ack_packet = tcp_packet(peer, ours, &ack);
        harness.feed(&ack_packet);
        let (server, _) = harness.stack.accept(listener).expect("handshake completes");
        harness.server = server;
        // Data both ways: ours stays unacknowledged (in flight).
        let _ = harness.stack.send(now, server, &[0x5a; 3000]);
        let data = segment(
            PEER_PORT,
            LISTEN_PORT,
            1001,
            harness.our_next.wrapping_sub(3000),
            TcpFlags::ACK | TcpFlags::PSH,
            b"request from the peer",
        );
        let data_packet = tcp_packet(peer, ours, &data);
        harness.feed(&data_packet);
        harness.drain();
        // Our own connection, left in SYN-SENT.
        let client = harness.stack.socket();
        harness
            .stack
            .connect(now, client, SocketAddrV4::new(PEER, SERVER_PORT_FOR_CLIENT))
            .expect("connect");
        harness.client = client;
        harness.client_local = match harness.stack.local_addr(client).expect("bound by connect") {
            std::net::SocketAddr::V4(v4) => v4,
            other => panic!("an IPv4 socket bound to {other}"),
        };
        harness.drain();
        now += Duration::from_millis(1);
        harness.now = now;
        harness.corpus = vec![syn_packet, ack_packet, data_packet];
        harness
    }

    /// The accepted ESTABLISHED connection's handle.
    pub fn server(&self) -> SocketHandle {
        self.server
    }

    /// Runs the operations encoded in `data`.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Cursor { data };
        let mut ops = 0;
        while !input.is_empty() && ops < 256 {
            ops += 1;
            match input.u8() % 10 {
                0 => {
                    let len = usize::from(input.u16() % 1600);
                    let packet = input.bytes(len);
                    self.feed(&packet);
                }
                1 => self.fuzz_segment(&mut input, Target::Server),
                2 => self.fuzz_segment(&mut input, Target::Client),
                3 => self.fuzz_segment(&mut input, Target::Listener),
                4 => self.fuzz_icmp(&mut input),
                5 => self.mutate_corpus(&mut input),
                6 => {
                    let ms = u64::from(input.u16());
                    self.now += Duration::from_millis(ms);
                    self.stack.handle_timeout(self.now);
                    if let Some(next) = self.stack.poll_timeout() {
                        assert!(
                            next > self.now,
                            "timer at {next:?} still due after handle_timeout({:?})",
                            self.now
                        );
                    }
                }
                7 => self.user_call(&mut input),
                9 => self.fuzz_ipv6(&mut input),
                _ => {
                    // Jump to the next timer, as an event loop would.
                    if let Some(next) = self.stack.poll_timeout() {
                        self.now = self.now.max(next);
                        self.stack.handle_timeout(self.now);
                    }
                }
            }
            self.drain();
            self.check_sockets();
        }
    }

    fn feed(&mut self, packet: &[u8]) {
        self.stack.handle_packet(self.now, packet);
        self.packets_in += 1;
        assert_eq!(self.stack.stats().packets_in, self.packets_in);
        self.drain();
    }

    /// Sends everything due, checking each packet, and learns the server
    /// connection's sequence numbers from it.
    fn drain(&mut self) {
        let mtu = usize::from(self.stack.config().mtu);
        let mut buf = vec![0; mtu];
        let mut count = 0;
        while let Some(len) = self.stack.poll_transmit(self.now, &mut buf) {
            count += 1;
            assert!(count < TRANSMIT_LIMIT, "poll_transmit does not run dry");
            assert!(len <= mtu, "packet of {len} bytes exceeds the MTU");
            let packet = &buf[..len];
            let (src, dst, protocol, payload) = if packet[0] >> 4 == 6 {
                let parsed = Ipv6Repr::parse(packet).expect("emitted IPv6 is valid");
                assert_eq!(parsed.repr.src, OURS6);
                let ip = parsed.repr;
                (
                    IpAddr::V6(ip.src),
                    IpAddr::V6(ip.dst),
                    ip.next_header,
                    parsed.payload,
                )
            } else {
                let (ip, payload) = Ipv4Repr::parse(packet).expect("emitted IPv4 is valid");
                assert_eq!(ip.src, OURS);
                (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.protocol, payload)
            };
            match (protocol, src, dst) {
                (IpProtocol::Tcp, _, _) => {
                    let seg = TcpRepr::parse(payload, src, dst).expect("emitted TCP is valid");
                    if seg.src_port == LISTEN_PORT
                        && seg.dst_port == PEER_PORT
                        && dst == IpAddr::V4(PEER)
                    {
                        let end = seg.seq + seg.segment_len();
                        if self.our_next == 0 || end.gt(SeqNum(self.our_next)) {
                            self.our_next = end.0;
                        }
                        if seg.flags.ack() && !seg.flags.rst() {
                            self.peer_next = seg.ack.0;
                        }
                    }
                    if seg.flags == (TcpFlags::SYN | TcpFlags::ACK) && seg.src_port == LISTEN_PORT {
                        self.last_synack = Some((seg.dst_port, seg.seq.0, seg.ack.0));
                    }
                    if seg.flags.syn() && !seg.flags.ack() && seg.dst_port == SERVER_PORT_FOR_CLIENT
                    {
                        self.client_iss = seg.seq.0;
                    }
                }
                (IpProtocol::Icmp, IpAddr::V4(_), _) => {
                    Icmpv4Repr::parse(payload).expect("emitted ICMP is valid");
                }
                (IpProtocol::Icmpv6, IpAddr::V6(src), IpAddr::V6(dst)) => {
                    Icmpv6Repr::parse(src, dst, payload).expect("emitted ICMPv6 is valid");
                }
                (other, src, _) => panic!("emitted protocol {other:?} from {src}"),
            }
        }
        while self.stack.poll_event().is_some() {}
    }

    fn check_sockets(&mut self) {
        for info in self.stack.sockets() {
            if let Some(handle) = info.handle {
                assert_eq!(self.stack.socket_info(handle).as_ref(), Ok(&info));
                self.stack.readiness(handle).expect("listed handle is live");
            }
        }
    }

    fn fuzz_segment(&mut self, input: &mut Cursor<'_>, target: Target) {
        let mut flags = TcpFlags::from_bits_retain(input.u8());
        let mut seq_delta = i32::from(input.u16() as i16);
        let mut ack_delta = i32::from(input.u16() as i16);
        let window = input.u16();
        let option_bits = input.u8();
        let payload_len = usize::from(input.u8()) * 8;
        let payload = vec![0xa5; payload_len];
        let (src, dst, seq, ack) = match target {
            Target::Server => (
                SocketAddrV4::new(PEER, PEER_PORT),
                SocketAddrV4::new(OURS, LISTEN_PORT),
                self.peer_next,
                self.our_next,
            ),
            Target::Client => (
                SocketAddrV4::new(PEER, SERVER_PORT_FOR_CLIENT),
                self.client_local,
                7777,
                self.client_iss.wrapping_add(1),
            ),
            Target::Listener => {
                // Mode bits: answer the last SYN,ACK (a child's or a
                // cookie's), exactly unless bit 1; or send a plain SYN.
                let mode = input.u8();
                let (port, seq, ack) = (1024 + input.u16() % 2048, input.u32(), input.u32());
                match self.last_synack.filter(|_| mode & 1 != 0) {
                    Some((peer_port, synack_seq, synack_ack)) => {
                        if mode & 2 == 0 {
                            (seq_delta, ack_delta) = (0, 0);
                        }
                        if mode & 8 == 0 {
                            flags = TcpFlags::ACK | flags.intersection(TcpFlags::PSH);
                        }
                        (
                            SocketAddrV4::new(PEER, peer_port),
                            SocketAddrV4::new(OURS, LISTEN_PORT),
                            synack_ack,
                            synack_seq.wrapping_add(1),
                        )
                    }
                    None => {
                        if mode & 4 == 0 {
                            flags = TcpFlags::SYN;
                        }
                        (
                            SocketAddrV4::new(PEER, port),
                            SocketAddrV4::new(OURS, LISTEN_PORT),
                            seq,
                            ack,
                        )
                    }
                }
            }
        };
        let mut repr = segment(
            src.port(),
            dst.port(),
            seq.wrapping_add(seq_delta as u32),
            ack.wrapping_add(ack_delta as u32),
            flags,
            &payload,
        );
        repr.window = window;
        repr.urgent = if flags.urg() { input.u16() } else { 0 };
        if option_bits & 1 != 0 {
            repr.options.mss = Some(input.u16());
        }
        if option_bits & 2 != 0 {
            repr.options.window_scale = Some(input.u8());
        }
        if option_bits & 4 != 0 {
            repr.options.sack_permitted = true;
        }
        if option_bits & 8 != 0 {
            repr.options.timestamp = Some((input.u32(), input.u32()));
        }
        if option_bits & 16 != 0 {
            let left = self.our_next.wrapping_add(u32::from(input.u16()));
            let right = left.wrapping_add(u32::from(input.u16()));
            repr.options.sack_blocks[0] = Some(SackBlock {
                left: SeqNum(left),
                right: SeqNum(right),
            });
        }
        let packet = tcp_packet(src, dst, &repr);
        self.feed(&packet);
    }

    fn fuzz_icmp(&mut self, input: &mut Cursor<'_>) {
        let kind = input.u8();
        let message = if kind & 1 == 0 {
            let data_len = usize::from(input.u8());
            let data = input.bytes(data_len);
            let repr = Icmpv4Repr::EchoRequest {
                ident: input.u16(),
                seq_no: input.u16(),
                data: &data,
            };
            let mut buf = vec![0; repr.buffer_len()];
            repr.emit(&mut buf);
            buf
        } else {
            // Destination unreachable quoting one of our connections.
            let code = input.u8() % 16;
            let mtu = input.u16();
            let (local, remote) = if kind & 2 == 0 {
                (
                    SocketAddrV4::new(OURS, LISTEN_PORT),
                    SocketAddrV4::new(PEER, PEER_PORT),
                )
            } else {
                (
                    self.client_local,
                    SocketAddrV4::new(PEER, SERVER_PORT_FOR_CLIENT),
                )
            };
            let quoted_seq = self.our_next.wrapping_add(u32::from(input.u16()));
            let quoted = tcp_packet(
                local,
                remote,
                &segment(
                    local.port(),
                    remote.port(),
                    quoted_seq,
                    0,
                    TcpFlags::ACK,
                    &[],
                ),
            );
            let mut message = vec![3, code, 0, 0, 0, 0];
            message.extend_from_slice(&mtu.to_be_bytes());
            message.extend_from_slice(&quoted[..28]);
            let sum = checksum::finish(checksum::sum(&message));
            message[2..4].copy_from_slice(&sum.to_be_bytes());
            message
        };
        let packet = ip_packet(PEER, OURS, IpProtocol::Icmp, &message);
        self.feed(&packet);
    }

    fn mutate_corpus(&mut self, input: &mut Cursor<'_>) {
        if self.corpus.is_empty() {
            return;
        }
        let mut packet = self.corpus[usize::from(input.u8()) % self.corpus.len()].clone();
        let mutations = input.u8() % 8;
        for _ in 0..mutations {
            let at = usize::from(input.u16()) % packet.len().max(1);
            let value = input.u8();
            if let Some(byte) = packet.get_mut(at) {
                *byte ^= value;
            }
        }
        match input.u8() % 4 {
            0 => {
                let keep = usize::from(input.u16()) % (packet.len() + 1);
                packet.truncate(keep);
            }
            1 if packet.len() >= 40 => {
                // Fix both checksums so the mutation reaches TCP processing.
                packet[10..12].copy_from_slice(&[0, 0]);
                let ip_sum = checksum::finish(checksum::sum(&packet[..20]));
                packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
                let header_len = usize::from(packet[0] & 0x0f) * 4;
                if header_len >= 20 && packet.len() >= header_len + 20 {
                    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
                    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                    let tcp = &mut packet[header_len..];
                    tcp[16..18].copy_from_slice(&[0, 0]);
                    let len = u32::try_from(tcp.len()).unwrap_or(u32::MAX);
                    let sum = checksum::pseudo_header(src, dst, 6, len) + checksum::sum(tcp);
                    let tcp_sum = checksum::finish(sum);
                    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
                }
            }
            _ => {}
        }
        self.feed(&packet);
    }

    /// An IPv6 packet decoded from the input: addresses, an extension-header
    /// chain, an upper layer, and a payload length that may lie.
    fn fuzz_ipv6(&mut self, input: &mut Cursor<'_>) {
        let mode = input.u8();
        let dst = match mode & 3 {
            0 | 1 => OURS6,
            2 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            _ => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, input.u16()),
        };
        let src = if mode & 4 == 0 {
            PEER6
        } else {
            // Anything: unspecified, multicast, IPv4-mapped, loopback...
            let mut octets = [0u8; 16];
            let picked = input.bytes(16);
            octets[..picked.len()].copy_from_slice(&picked);
            Ipv6Addr::from(octets)
        };
        // The upper layer first: its checksum covers the addresses only.
        let (protocol, upper) = match input.u8() % 4 {
            0 => {
                let port = if input.u8() & 1 == 0 {
                    LISTEN_PORT6
                } else {
                    input.u16()
                };
                let flags = if input.u8() & 1 == 0 {
                    TcpFlags::SYN
                } else {
                    TcpFlags::from_bits_retain(input.u8())
                };
                let payload = vec![0x66; usize::from(input.u8())];
                let mut repr =
                    segment(input.u16(), port, input.u32(), input.u32(), flags, &payload);
                if flags.syn() {
                    repr.options.mss = Some(input.u16());
                    repr.options.sack_permitted = true;
                }
                let mut buf = vec![0; repr.buffer_len()];
                let len = repr.emit(&mut buf, src, dst);
                buf.truncate(len);
                (u8::from(IpProtocol::Tcp), buf)
            }
            1 => {
                let data_len = usize::from(input.u8());
                let data = input.bytes(data_len);
                let repr = Icmpv6Repr::EchoRequest {
                    ident: input.u16(),
                    seq_no: input.u16(),
                    data: &data,
                };
                let mut buf = vec![0; repr.buffer_len()];
                let len = repr.emit(src, dst, &mut buf);
                buf.truncate(len);
                (u8::from(IpProtocol::Icmpv6), buf)
            }
            2 => {
                // An error quoting a packet of ours to PEER6 (a connection of
                // the [::] listener, if the fuzzer opened one) or arbitrary.
                let quoted = segment(
                    LISTEN_PORT6,
                    input.u16(),
                    input.u32(),
                    0,
                    TcpFlags::ACK,
                    &[],
                );
                let mut tcp = vec![0; quoted.buffer_len()];
                let tcp_len = quoted.emit(&mut tcp, OURS6, PEER6);
                let mut invoking = vec![0u8; 40];
                invoking[0] = 0x60;
                invoking[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                invoking[6] = 6;
                invoking[7] = 64;
                invoking[8..24].copy_from_slice(&OURS6.octets());
                invoking[24..40].copy_from_slice(&PEER6.octets());
                invoking.extend_from_slice(&tcp[..tcp_len]);
                invoking.truncate(40 + usize::from(input.u8()) % (tcp_len + 1));
                let repr = match input.u8() % 4 {
                    0 => Icmpv6Repr::DestinationUnreachable {
                        code: input.u8() % 8,
                        invoking: &invoking,
                    },
                    1 => Icmpv6Repr::PacketTooBig {
                        mtu: input.u32() % 70_000,
                        invoking: &invoking,
                    },
                    2 => Icmpv6Repr::TimeExceeded {
                        code: input.u8() % 2,
                        invoking: &invoking,
                    },
                    _ => Icmpv6Repr::ParameterProblem {
                        code: input.u8() % 4,
                        pointer: input.u32(),
                        invoking: &invoking,
                    },
                };
                let mut buf = vec![0; repr.buffer_len()];
                let len = repr.emit(src, dst, &mut buf);
                buf.truncate(len);
                (u8::from(IpProtocol::Icmpv6), buf)
            }
            _ => {
                let protocol = input.u8();
                let len = usize::from(input.u8());
                (protocol, input.bytes(len))
            }
        };
        // Up to three extension headers in front of it.
        let mut chain: Vec<(u8, Vec<u8>)> = Vec::new();
        for _ in 0..(mode >> 3) % 4 {
            let kind = [0u8, 60, 43, 44][usize::from(input.u8() % 4)];
            let header = match kind {
                0 | 60 => {
                    let units = input.u8() % 3;
                    let mut header = vec![0; 8 * (usize::from(units) + 1)];
                    header[1] = units;
                    let tlvs = input.bytes(header.len() - 2);
                    header[2..2 + tlvs.len()].copy_from_slice(&tlvs);
                    header
                }
                43 => vec![0, 0, input.u8(), input.u8() % 3, 0, 0, 0, 0],
                _ => {
                    let mut header = vec![0; 8];
                    header[2..4].copy_from_slice(&input.u16().to_be_bytes());
                    header[4..8].copy_from_slice(&input.u32().to_be_bytes());
                    header
                }
            };
            chain.push((kind, header));
        }
        let mut body = Vec::new();
        for (i, (_, header)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(protocol, |(kind, _)| *kind);
            body.push(next);
            body.extend_from_slice(&header[1..]);
        }
        body.extend_from_slice(&upper);
        let mut packet = vec![0u8; 40];
        packet[0] = 0x60 | (input.u8() & 0x0f);
        let payload_len = if mode & 0x40 == 0 {
            u16::try_from(body.len()).unwrap_or(u16::MAX)
        } else {
            input.u16()
        };
        packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
        packet[6] = chain.first().map_or(protocol, |(kind, _)| *kind);
        packet[7] = input.u8();
        packet[8..24].copy_from_slice(&src.octets());
        packet[24..40].copy_from_slice(&dst.octets());
        packet.extend_from_slice(&body);
        if self.corpus.len() < 64 {
            self.corpus.push(packet.clone());
        }
        self.feed(&packet);
    }

    fn user_call(&mut self, input: &mut Cursor<'_>) {
        let op = input.u8();
        let socket = match op >> 5 {
            0 => self.listener,
            1..=3 => self.server,
            4 | 5 => self.client,
            _ => SocketHandle(u64::from(input.u8())),
        };
        let now = self.now;
        let stack = &mut self.stack;
        match op % 10 {
            0 => {
                let data = vec![0x3c; usize::from(input.u16()) % 9000];
                let _ = stack.send(now, socket, &data);
            }
            1 => {
                let mut buf = vec![0; usize::from(input.u16()) % 70000];
                let _ = stack.recv(now, socket, &mut buf, input.u8() & 1 == 1);
            }
            2 => {
                let how = match input.u8() % 3 {
                    0 => Shutdown::Read,
                    1 => Shutdown::Write,
                    _ => Shutdown::Both,
                };
                let _ = stack.shutdown(now, socket, how);
            }
            3 => {
                let _ = stack.close(now, socket);
            }
            4 => {
                let option = match input.u8() % 6 {
                    0 => SockOption::RecvBuffer(usize::from(input.u16()) * 16),
                    1 => SockOption::SendBuffer(usize::from(input.u16()) * 16),
                    2 => SockOption::NoDelay(input.u8() & 1 == 1),
                    3 => SockOption::KeepAlive(input.u8() & 1 == 1),
                    4 => SockOption::KeepIdle(Duration::from_secs(u64::from(input.u8()))),
                    _ => SockOption::Linger(Some(Duration::ZERO)),
                };
                let _ = stack.set_option(now, socket, option);
            }
            5 => {
                let _ = stack.get_option(socket, OptionName::Error);
                let _ = stack.get_option(socket, OptionName::MaxSegment);
            }
            6 => {
                let _ = stack.abort_matching(
                    now,
                    SocketAddrV4::new(OURS, LISTEN_PORT),
                    SocketAddrV4::new(PEER, PEER_PORT),
                );
            }
            7 => {
                let _ = stack.accept(self.listener);
            }
            8 => {
                let s = stack.socket();
                let _ = stack.connect(now, s, SocketAddrV4::new(PEER, input.u16()));
            }
            _ => {
                let _ = stack.listen(socket, u32::from(input.u8()));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Server,
    Client,
    Listener,
}
