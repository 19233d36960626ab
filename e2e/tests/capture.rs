//! `tcpctl capture` against the real daemon: a 10 MiB transfer from tcpd to
//! the Linux kernel through `--impair loss=5%` (both ways), captured as
//! pcapng from inside tcpd while it runs.
//!
//! Checks that `tshark -r` reads the file with zero malformed packets (its
//! expert info has no "Malformed" entry), that the file has the two
//! interfaces, and that the impairer's work is visible exactly: the link
//! interface has fewer outgoing packets (and fewer data packets) than the
//! stack interface, by the outbound drop count the daemon reports
//! (`impair_dropped_out` in `tcpctl stats --json`), and the stack
//! interface fewer incoming ones than the link, by `impair_dropped_in`;
//! the same count in `tcpctl stats --prometheus`; and that the file replays
//! as a ladder (`tcpctl trace --replay`) with the handshake and
//! retransmissions. A second test checks that a loss-free handshake shows
//! the window scale Linux chooses for the same receive-buffer maximum.
//!
//! Needs root (namespaces, TUN) and tshark (installed by .ci/run): skips
//! otherwise, fails under `CI=true`.

use std::io::{BufReader, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use tcpd_client::blocking;
use tcpd_e2e::{Daemon, Netns, in_ci, require_privileges, which};

/// `tcpctl capture -w file` running, once it says it captures; its stderr
/// for the rest of what it says.
fn start_capture(
    daemon: &Daemon,
    file: &std::path::Path,
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    tcpd_e2e::spawn_subscribed(daemon.tcpctl(&["capture", "-w"]).arg(file), "capturing")
}

/// Stops a capture as a user would (SIGINT); its exit status.
fn stop_capture(capture: &mut std::process::Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(capture.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT to tcpctl capture");
    capture.wait().expect("wait for tcpctl capture")
}

fn impair_counters(daemon: &Daemon) -> (u64, u64, u64) {
    let output = daemon
        .tcpctl(&[])
        .args(["stats", "--json"])
        .output()
        .expect("tcpctl stats");
    assert!(output.status.success(), "tcpctl stats failed");
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats JSON");
    let counter = |name: &str| {
        stats["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
    };
    (
        counter("impair_dropped_out"),
        counter("impair_dropped_in"),
        counter("capture_dropped"),
    )
}

/// Packets per (interface, inbound), and how many of them carry TCP data.
#[derive(Debug, Default)]
struct Counts {
    packets: [[u64; 2]; 2],
    data: [[u64; 2]; 2],
    interfaces: usize,
}

fn tcp_payload_len(packet: &[u8]) -> usize {
    if packet.len() < 20 || packet[9] != 6 {
        return 0;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let Some(tcp) = packet.get(ihl..) else {
        return 0;
    };
    let offset = tcp.get(12).map_or(20, |b| usize::from(b >> 4) * 4);
    total.saturating_sub(ihl + offset)
}

fn count(bytes: &[u8]) -> Counts {
    let mut counts = Counts::default();
    let mut reader = PcapNgReader::new(bytes).expect("pcapng section header");
    while let Some(block) = reader.next_block() {
        match block.expect("a valid pcapng block") {
            Block::InterfaceDescription(_) => counts.interfaces += 1,
            Block::EnhancedPacket(epb) => {
                let inbound = epb
                    .options
                    .iter()
                    .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 3 == 1));
                let (i, d) = (epb.interface_id as usize, usize::from(inbound));
                counts.packets[i][d] += 1;
                if tcp_payload_len(&epb.data) > 0 {
                    counts.data[i][d] += 1;
                }
            }
            _ => {}
        }
    }
    counts
}

#[test]
fn capture_shows_both_sides_of_the_impairer() {
    if !require_privileges("capture_shows_both_sides_of_the_impairer") {
        return;
    }
    let Some(tshark) = which("tshark") else {
        assert!(!in_ci(), "tshark is missing (.ci/run installs it)");
        eprintln!("capture_shows_both_sides_of_the_impairer: no tshark, skipped");
        return;
    };
    let ns = Netns::new("capture").expect("create namespace");
    let daemon =
        Daemon::start(&ns, &["--msl-ms", "200", "--impair", "loss=5%,seed=7"]).expect("start tcpd");
    let scratch = tcpd_e2e::TempDir::new("capture").expect("scratch dir");
    let file = scratch.path().join("transfer.pcapng");

    let (mut capture, mut stderr) = start_capture(&daemon, &file);
    let (out0, in0, _) = impair_counters(&daemon);

    let (listener, target) = tcpd_e2e::kernel_listener(&ns);
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let mut stream = blocking::TcpStream::connect_with(&client, target).expect("tcpd connect");
    let (mut kernel, _) = listener.accept().expect("kernel accept");
    let sent = tcpd_e2e::payload(10 << 20, 9);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        kernel
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        kernel.read_to_end(&mut got).expect("kernel reads to EOF");
        got.len()
    });
    let started = Instant::now();
    stream.write_all(&sent).expect("tcpd write");
    stream.shutdown(std::net::Shutdown::Write).expect("FIN");
    assert_eq!(reader.join().expect("reader"), sent.len());
    // Both ports are ephemeral: one may be a port Wireshark gives to some
    // protocol, whose dissector would reassemble the random payload and
    // report the retransmissions' overlaps as malformed. Decode as data.
    let decode_as_data: Vec<String> = [target.port(), stream.local_addr().expect("local").port()]
        .iter()
        .flat_map(|port| ["-d".to_string(), format!("tcp.port=={port},data")])
        .collect();
    drop(stream);
    eprintln!("10 MiB through 5 % loss in {:?}", started.elapsed());
    // The close finishes (FINs and ACKs retransmitted through the loss,
    // TIME-WAIT 0.4 s) before the counters are read: no packet after them.
    // (A fixed 1.5 s was too short for a loaded machine.)
    assert!(
        tcpd_e2e::wait_connections_gone(&daemon, &ns, target.port(), Duration::from_secs(60)),
        "the connection never finished closing"
    );
    let (out1, in1, capture_dropped) = impair_counters(&daemon);
    // The same counter in the Prometheus text (node_exporter's textfile collector).
    let metrics = daemon
        .tcpctl(&[])
        .args(["stats", "--prometheus"])
        .output()
        .expect("tcpctl stats --prometheus");
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains(&format!(
            "tcpd_impair_packets_total{{action=\"dropped\",direction=\"out\"}} {out1}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE tcpd_connections gauge"),
        "{metrics}"
    );
    // tcpctl may still be writing the last chunks: stop it once the file
    // holds what the counters account for (or after a minute, to fail
    // below with the counts).
    tcpd_e2e::wait_capture_written(&file, Duration::from_secs(60), |whole| {
        let counts = count(whole);
        counts.packets[STACK][OUT].saturating_sub(counts.packets[LINK][OUT]) == out1 - out0
            && counts.packets[LINK][IN].saturating_sub(counts.packets[STACK][IN]) == in1 - in0
    });
    let status = stop_capture(&mut capture);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(status.success(), "tcpctl capture: {status} {rest}");

    let bytes = std::fs::read(&file).expect("capture file");
    let counts = count(&bytes);
    let (dropped_out, dropped_in) = (out1 - out0, in1 - in0);
    eprintln!(
        "capture: {} bytes, {counts:?}; impairer dropped {dropped_out} out, {dropped_in} in",
        bytes.len()
    );
    assert_eq!(capture_dropped, 0, "the capture kept up (no chunk dropped)");
    assert_eq!(counts.interfaces, 2);
    const STACK: usize = 0;
    const LINK: usize = 1;
    const OUT: usize = 0;
    const IN: usize = 1;
    assert!(
        dropped_out > 0 && dropped_in > 0,
        "5 % loss dropped something"
    );
    assert_eq!(
        counts.packets[STACK][OUT] - counts.packets[LINK][OUT],
        dropped_out,
        "outgoing: the link has the stack's packets less the impairer's drops"
    );
    assert_eq!(
        counts.packets[LINK][IN] - counts.packets[STACK][IN],
        dropped_in,
        "incoming: the stack has the link's packets less the impairer's drops"
    );
    let data_gap = counts.data[STACK][OUT] - counts.data[LINK][OUT];
    assert!(
        data_gap > 0 && data_gap <= dropped_out,
        "fewer data packets after the impairer: {data_gap} of {dropped_out} drops"
    );
    assert!(
        counts.data[STACK][OUT] >= (10 << 20) / 1448,
        "all data captured"
    );

    // The capture replays as a ladder: handshake, retransmissions, TIME-WAIT.
    let ladder = daemon.replay_capture(&file);
    assert!(
        ladder.contains("SYN-SENT    --> <SEQ=0><CTL=SYN>"),
        "{}",
        &ladder[..ladder.len().min(2000)]
    );
    assert!(
        ladder.contains("==>"),
        "retransmissions recognized in the replay"
    );
    // Packets cannot show TIME-WAIT's end: tcpd's inferred state ends there.
    let tail: Vec<&str> = ladder.lines().rev().take(4).collect();
    assert!(
        tail.iter().any(|l| l.contains("TIME-WAIT")),
        "the replay ends in TIME-WAIT: {tail:#?}"
    );

    // tshark reads it all, with nothing malformed.
    let expert = Command::new(&tshark)
        .args(["-r"])
        .arg(&file)
        .args(&decode_as_data)
        .args(["-q", "-z", "expert"])
        .output()
        .expect("run tshark");
    let report = String::from_utf8_lossy(&expert.stdout);
    assert!(
        expert.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&expert.stderr)
    );
    assert!(
        !report.contains("Malformed"),
        "tshark found malformed packets:\n{report}"
    );
    let malformed = Command::new(&tshark)
        .args(["-r"])
        .arg(&file)
        .args(&decode_as_data)
        .args(["-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("run tshark");
    assert!(
        String::from_utf8_lossy(&malformed.stdout).trim().is_empty(),
        "malformed frames: {}",
        String::from_utf8_lossy(&malformed.stdout)
    );
    let frames = Command::new(&tshark)
        .args(["-r"])
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.interface_name"])
        .output()
        .expect("run tshark");
    let names = String::from_utf8_lossy(&frames.stdout);
    assert!(names.lines().any(|l| l == "tcpd-stack"), "interface names");
    assert!(names.lines().any(|l| l == "tcpd-link"), "interface names");
}

/// Issue 10's "done when": a capture of a loss-free handshake shows the
/// window scale Linux chooses for the same receive-buffer maximum. tcpd's
/// default maximum is Linux's `tcp_rmem[2]` (6 MiB), for which Linux
/// advertises shift 7; the kernel peer's SYN-ACK in the same capture, from
/// a namespace with that maximum, is the reference.
#[test]
fn handshake_capture_shows_linuxs_window_scale() {
    if !require_privileges("handshake_capture_shows_linuxs_window_scale") {
        return;
    }
    let Some(tshark) = which("tshark") else {
        assert!(!in_ci(), "tshark is missing (.ci/run installs it)");
        eprintln!("handshake_capture_shows_linuxs_window_scale: no tshark, skipped");
        return;
    };
    let ns = Netns::new("cap-ws").expect("create namespace");
    let daemon = Daemon::start(&ns, &["--msl-ms", "200"]).expect("start tcpd");
    // The kernel peer with Linux's default maximum (this namespace only;
    // a host may have raised it, e.g. to 32 MiB, which gives shift 10).
    ns.within(|| std::fs::write("/proc/sys/net/ipv4/tcp_rmem", "4096 131072 6291456"))
        .expect("set the namespace's tcp_rmem");
    let scratch = tcpd_e2e::TempDir::new("cap-ws").expect("scratch dir");
    let file = scratch.path().join("handshake.pcapng");
    let (mut capture, _stderr) = start_capture(&daemon, &file);

    let (listener, target) = tcpd_e2e::kernel_listener(&ns);
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let mut stream = blocking::TcpStream::connect_with(&client, target).expect("tcpd connect");
    let (mut kernel, _) = listener.accept().expect("kernel accept");
    stream.write_all(b"ping").expect("tcpd write");
    let mut got = [0u8; 4];
    kernel.read_exact(&mut got).expect("kernel read");
    drop(stream);
    std::thread::sleep(Duration::from_millis(500));
    let status = stop_capture(&mut capture);
    assert!(status.success(), "tcpctl capture: {status}");

    // SYN and SYN-ACK with their window-scale shift, as tshark decodes them.
    let output = Command::new(&tshark)
        .arg("-r")
        .arg(&file)
        .args([
            "-Y",
            "tcp.flags.syn == 1",
            "-T",
            "fields",
            "-e",
            "tcp.flags.ack",
            "-e",
            "tcp.options.wscale.shift",
        ])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "tshark: {text}");
    let shift = |ack: &str| -> Option<u32> {
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(a, _)| {
                *a == ack || (ack == "1" && *a == "True") || (ack == "0" && *a == "False")
            })
            .and_then(|(_, s)| s.trim().parse().ok())
    };
    let (syn, syn_ack) = (shift("0"), shift("1"));
    eprintln!("window scale: tcpd's SYN {syn:?}, the kernel's SYN-ACK {syn_ack:?}");
    // Linux (tcp_select_initial_window) for a 6 MiB maximum: shift 7.
    assert_eq!(syn, Some(7), "tcpd's SYN window scale\n{text}");
    assert_eq!(
        syn, syn_ack,
        "same maximum, same window scale as Linux\n{text}"
    );
}
