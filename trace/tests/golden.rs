//! Golden tests: the seed's two diagrams (`shared/seed/tcpip-state.txt`,
//! "Basic 3-Way Handshake" with ISNs 100/300 and "Normal Close Sequence")
//! drawn by the ladder renderer from deterministic runs of two real stacks
//! (fixed ISNs, virtual clock, packets carried by hand), tcpd being TCP A.
//! No timing appears in the golden text (row numbers, as in the seed).
//!
//! Regenerate after an intended change: `UPDATE_GOLDEN=1 cargo test -p tcpd-trace --test golden`.

use std::net::{Ipv4Addr, SocketAddrV4};
use tcpd_stack::{Duration, Instant, SocketHandle, Stack, StackConfig, TraceFilter};
use tcpd_trace::capture::{CapturePoint, CaptureWriter, events_from_pcapng};
use tcpd_trace::{Event, LadderOptions, render_all};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Run {
    a: Stack,
    b: Stack,
    now: Instant,
    events: Vec<Event>,
    /// A's packets as `tcpctl capture` would record them (the stack's view).
    pcap: CaptureWriter,
    pcap_bytes: Vec<u8>,
}

impl Run {
    fn new(iss_a: u32, iss_b: u32) -> Run {
        let now = Instant::from_millis(1_000);
        let config = |addr, iss: u32| {
            let mut c = StackConfig::new(addr, 24);
            c.rng_seed = u64::from(iss);
            c.isn_secret = [7; 16];
            c.fixed_iss = Some(iss);
            c
        };
        let mut a = Stack::new(config(A, iss_a), now);
        let b = Stack::new(config(B, iss_b), now);
        a.trace_add(TraceFilter::ANY).expect("a free trace slot");
        let mut pcap = CaptureWriter::new();
        let pcap_bytes = pcap.take();
        Run {
            a,
            b,
            now,
            events: Vec::new(),
            pcap,
            pcap_bytes,
        }
    }

    fn collect(&mut self) {
        while let Some(record) = self.a.poll_trace() {
            self.events.push(Event::from_record(&record));
        }
    }

    /// One step: A's packets to B, then B's to A (1 ms per hop); true if any moved.
    fn exchange(&mut self) -> bool {
        let mut buf = vec![0u8; 1500];
        let mut moved = false;
        self.now += Duration::from_millis(1);
        while let Some(n) = self.a.poll_transmit(self.now, &mut buf) {
            self.collect();
            self.record(false, &buf[..n]);
            self.b.handle_packet(self.now, &buf[..n]);
            moved = true;
        }
        self.now += Duration::from_millis(1);
        while let Some(n) = self.b.poll_transmit(self.now, &mut buf) {
            self.record(true, &buf[..n]);
            self.a.handle_packet(self.now, &buf[..n]);
            self.collect();
            moved = true;
        }
        moved
    }

    fn record(&mut self, inbound: bool, packet: &[u8]) {
        let time = std::time::Duration::from_micros(self.now.total_micros());
        self.pcap.packet(CapturePoint::Stack, inbound, time, packet);
        self.pcap_bytes.extend(self.pcap.take());
    }

    /// Exchanges one round trip at a time until both sides are quiet.
    fn settle(&mut self) {
        for _ in 0..100 {
            if !self.exchange() {
                return;
            }
        }
        panic!("the stacks never went quiet");
    }

    fn listen(&mut self) -> SocketHandle {
        let l = self.b.socket();
        self.b
            .bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
            .expect("bind");
        self.b.listen(l, 4).expect("listen");
        l
    }

    fn connect(&mut self) -> SocketHandle {
        let s = self.a.socket();
        self.a
            .connect(self.now, s, SocketAddrV4::new(B, 80))
            .expect("connect");
        self.collect();
        s
    }
}

fn seed_options() -> LadderOptions {
    LadderOptions {
        absolute: true,
        times: false,
        brief: true,
        ..LadderOptions::default()
    }
}

fn check_golden(name: &str, rows: &[String]) {
    let text = rows.join("\n") + "\n";
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
    }
    let golden = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(text, golden, "{name} differs; got:\n{text}");
}

/// Whitespace-insensitive: does `rows` contain the seed's `line`?
fn has_seed_line(rows: &[String], line: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = squash(line);
    rows.iter().any(|r| squash(r).contains(&want))
}

fn handshake_run() -> Vec<Event> {
    handshake_run_with_capture().0
}

/// The handshake run's trace events and A's packets as pcapng.
fn handshake_run_with_capture() -> (Vec<Event>, Vec<u8>) {
    let mut run = Run::new(100, 300);
    let listener = run.listen();
    let s = run.connect();
    // SYN, SYN-ACK, then A's ACK of the SYN-ACK alone (the seed's row 4).
    run.exchange();
    let mut buf = vec![0u8; 1500];
    run.now += Duration::from_millis(1);
    while let Some(n) = run.a.poll_transmit(run.now, &mut buf) {
        run.collect();
        run.record(false, &buf[..n]);
        run.b.handle_packet(run.now, &buf[..n]);
    }
    let (child, _) = run.b.accept(listener).expect("accept");
    // Row 5: data.
    run.a.send(run.now, s, b"hello").expect("send");
    run.settle();
    let mut got = [0u8; 16];
    assert_eq!(run.b.recv(run.now, child, &mut got, false), Ok(5));
    (run.events, run.pcap_bytes)
}

#[test]
fn a_capture_replays_as_the_same_ladder() {
    // `tcpctl trace --replay FILE.pcapng`: segments from the stack's view,
    // tcpd's states inferred; the seed's handshake comes out the same.
    let (_, pcap) = handshake_run_with_capture();
    let events = events_from_pcapng(&pcap, |_, _| true).expect("pcapng");
    let rows = render_all(&events, seed_options());
    check_golden("handshake.txt", &rows);
}

#[test]
fn the_seeds_handshake() {
    let events = handshake_run();
    let rows = render_all(&events, seed_options());
    for line in [
        "1. CLOSED LISTEN",
        "2. SYN-SENT --> <SEQ=100><CTL=SYN> --> SYN-RECEIVED",
        "3. ESTABLISHED <-- <SEQ=300><ACK=101><CTL=SYN,ACK> <-- SYN-RECEIVED",
        "4. ESTABLISHED --> <SEQ=101><ACK=301><CTL=ACK> --> ESTABLISHED",
        // The seed writes <CTL=ACK><DATA>; tcpd sets PSH on the segment that
        // empties its send queue (as Linux) and the ladder says how much data.
        "5. ESTABLISHED --> <SEQ=101><ACK=301><CTL=PSH,ACK><DATA=5> --> ESTABLISHED",
    ] {
        assert!(
            has_seed_line(&rows, line),
            "missing {line:?} in\n{}",
            rows.join("\n")
        );
    }
    check_golden("handshake.txt", &rows);
    // The full view: relative numbers, window and options.
    let full = render_all(
        &events,
        LadderOptions {
            times: false,
            ..LadderOptions::default()
        },
    );
    check_golden("handshake_full.txt", &full);
}

#[test]
fn the_seeds_close_sequence() {
    // ISNs 99 and 299: after the handshake SND.NXT is 100 and 300, the
    // numbers of the seed's close diagram.
    let mut run = Run::new(99, 299);
    let listener = run.listen();
    let s = run.connect();
    run.settle();
    let (child, _) = run.b.accept(listener).expect("accept");
    run.events.clear();
    // Trace from here, as `tcpctl trace` attaching to a running connection.
    run.a = {
        let mut a = run.a;
        while a.poll_trace().is_some() {}
        a.trace_remove(0);
        a.trace_add(TraceFilter::ANY).expect("slot");
        a
    };
    run.collect();
    // 2. A closes: FIN; B ACKs it (FIN-WAIT-2 / CLOSE-WAIT).
    run.a.close(run.now, s).expect("close");
    run.collect();
    run.settle();
    // B reads EOF and closes: its FIN, A's ACK, A in TIME-WAIT.
    let mut buf = [0u8; 8];
    assert_eq!(run.b.recv(run.now, child, &mut buf, false), Ok(0));
    run.b.close(run.now, child).expect("close");
    run.settle();
    // 2 MSL later A's TIME-WAIT ends.
    run.now += Duration::from_secs(61);
    run.a.handle_timeout(run.now);
    run.collect();
    let rows = render_all(&run.events, seed_options());
    for line in [
        "ESTABLISHED ESTABLISHED",
        "(Close)",
        "FIN-WAIT-1 --> <SEQ=100><ACK=300><CTL=FIN,ACK> --> CLOSE-WAIT",
        "FIN-WAIT-2 <-- <SEQ=300><ACK=101><CTL=ACK> <-- CLOSE-WAIT",
        "TIME-WAIT <-- <SEQ=300><ACK=101><CTL=FIN,ACK> <-- LAST-ACK",
        "TIME-WAIT --> <SEQ=101><ACK=301><CTL=ACK> --> CLOSED",
        "(2 MSL)",
        "CLOSED",
    ] {
        assert!(
            has_seed_line(&rows, line),
            "missing {line:?} in\n{}",
            rows.join("\n")
        );
    }
    check_golden("close.txt", &rows);
}

#[test]
fn json_lines_round_trip() {
    let events = handshake_run();
    for event in &events {
        let line = event.to_json();
        let back: Event = serde_json::from_str(&line).expect("parses");
        assert_eq!(&back, event, "{line}");
        let proto = tcpd_trace::proto::to_proto(event);
        assert_eq!(tcpd_trace::proto::from_proto(&proto).as_ref(), Some(event));
    }
}

/// An IPv4 packet from B to A carrying `seg`.
fn packet_to_a(seg: &tcpd_stack::wire::TcpRepr<'_>) -> Vec<u8> {
    use tcpd_stack::wire::{IpProtocol, Ipv4Repr};
    let mut buf = vec![0u8; 20 + seg.buffer_len()];
    let n = seg.emit(&mut buf[20..], B, A);
    Ipv4Repr {
        src: B,
        dst: A,
        protocol: IpProtocol::Tcp,
        ttl: 64,
        dont_fragment: true,
        payload_len: n,
    }
    .emit(&mut buf[..20], 1);
    buf.truncate(20 + n);
    buf
}

#[test]
fn drops_by_reason_and_challenge_acks_are_marked() {
    use tcpd_stack::SeqNum;
    use tcpd_stack::wire::{TcpFlags, TcpOptions, TcpRepr};
    let mut run = Run::new(100, 300);
    let listener = run.listen();
    let s = run.connect();
    run.settle();
    let _ = run.b.accept(listener).expect("accept");
    let local = run.a.local_addr(s).expect("local");
    let segment = |seq: u32, flags: TcpFlags, payload: &'static [u8]| TcpRepr {
        src_port: 80,
        dst_port: local.port(),
        seq: SeqNum(seq),
        ack: SeqNum(101),
        flags,
        window: 1000,
        urgent: 0,
        options: TcpOptions::default(),
        payload,
    };
    // Far outside A's receive window: dropped, answered by an ACK.
    let far = packet_to_a(&segment(301 + 10_000_000, TcpFlags::ACK, b"x"));
    run.a.handle_packet(run.now, &far);
    run.collect();
    run.settle();
    // A RST inside the window but not at RCV.NXT: challenge ACK (RFC 5961 §3.2).
    let rst = packet_to_a(&segment(305, TcpFlags::RST, b""));
    run.a.handle_packet(run.now, &rst);
    run.collect();
    run.settle();
    // A data segment whose checksum was damaged on the way.
    let mut bad = packet_to_a(&segment(301, TcpFlags::ACK | TcpFlags::PSH, b"hello"));
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    run.a.handle_packet(run.now, &bad);
    run.collect();

    let notes: Vec<(String, Option<String>)> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            tcpd_trace::Kind::Note { note, reason, .. } => Some((note.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    for want in [
        ("drop", Some("out_of_window")),
        ("drop", Some("bad_rst")),
        ("challenge_ack", None),
        ("drop", Some("bad_checksum")),
    ] {
        assert!(
            notes
                .iter()
                .any(|(n, r)| n == want.0 && r.as_deref() == want.1),
            "no {want:?} in {notes:?}"
        );
    }
    let rows = render_all(
        &run.events,
        LadderOptions {
            times: false,
            width: 120,
            ..LadderOptions::default()
        },
    );
    let text = rows.join("\n");
    assert!(text.contains("[dropped by tcpd: out-of-window]"), "{text}");
    assert!(
        text.contains("dropped by tcpd: bad-rst, challenge ACK follows"),
        "{text}"
    );
    assert!(
        text.contains("[challenge ACK]"),
        "the ACK that answers it:\n{text}"
    );
    assert!(text.contains("dropped by tcpd: bad-checksum"), "{text}");
    assert!(
        !text.contains("<-- CLOSED") && !text.contains("--> CLOSED"),
        "a forged RST does not close the peer in tcpd's model:\n{text}"
    );
}

#[test]
fn rto_fires_and_retransmissions_are_marked() {
    let mut run = Run::new(100, 300);
    let listener = run.listen();
    let s = run.connect();
    run.settle();
    let _ = run.b.accept(listener).expect("accept");
    // A sends; every packet is lost until the timers have fired.
    run.a.send(run.now, s, b"lost in transit").expect("send");
    let mut buf = vec![0u8; 1500];
    for _ in 0..4 {
        while run.a.poll_transmit(run.now, &mut buf).is_some() {
            run.collect();
        }
        let Some(at) = run.a.poll_timeout() else {
            break;
        };
        run.now = at;
        run.a.handle_timeout(run.now);
        run.collect();
    }
    while run.a.poll_transmit(run.now, &mut buf).is_some() {
        run.collect();
    }
    let rows = render_all(
        &run.events,
        LadderOptions {
            times: false,
            ..LadderOptions::default()
        },
    );
    let text = rows.join("\n");
    assert!(text.contains("** RTO fired (backoff 1)"), "{text}");
    assert!(
        text.contains("==> <SEQ=1><ACK=1><CTL=PSH,ACK><DATA=15>"),
        "{text}"
    );
    assert!(text.contains("rtx"), "{text}");
    let notes: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            tcpd_trace::Kind::Note { note, .. } => Some(note.as_str()),
            _ => None,
        })
        .collect();
    assert!(notes.contains(&"rto"), "{notes:?}");
}

#[test]
fn a_tail_loss_probe_is_marked() {
    let mut run = Run::new(100, 300);
    let listener = run.listen();
    let s = run.connect();
    run.settle();
    let _ = run.b.accept(listener).expect("accept");
    // A sends a burst of several segments and the whole tail is lost. With
    // more than one segment in flight the probe timeout is 2·SRTT (RFC 8985
    // §7.2), far below the RTO, so the first timer to fire is the TLP.
    run.a.send(run.now, s, &[0x5a; 5000]).expect("send");
    let mut buf = vec![0u8; 1500];
    while run.a.poll_transmit(run.now, &mut buf).is_some() {
        run.collect();
    }
    let at = run.a.poll_timeout().expect("a timer is armed");
    run.now = at;
    run.a.handle_timeout(run.now);
    run.collect();
    while run.a.poll_transmit(run.now, &mut buf).is_some() {
        run.collect();
    }
    let notes: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            tcpd_trace::Kind::Note { note, .. } => Some(note.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes.first(), Some(&"tlp"), "{notes:?}");
    assert!(!notes.contains(&"rto"), "{notes:?}");
    let rows = render_all(
        &run.events,
        LadderOptions {
            times: false,
            ..LadderOptions::default()
        },
    );
    let text = rows.join("\n");
    assert!(text.contains("TLP fired: tail loss probe"), "{text}");
    // The probe is a retransmission of the last segment, marked as such.
    assert!(text.contains("rtx"), "{text}");
}
