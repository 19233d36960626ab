//! End-to-end tests of the TUN offload (virtio-net header, TSO, checksum
//! offload) against the Linux kernel: the device's offload state as
//! `ethtool -k` reports it, super-segments crossing the TUN (tcpdump on the
//! TUN, the TUN's packet counters) while the kernel's TCP sees a normal
//! 1448-byte MSS (`ss -ti`), and 256 MiB each way with the same bytes
//! arriving (SHA-256) with offload on and off — on a clean link, through
//! tcpd's `--impair` (the link cuts super-segments into wire-sized packets
//! before the impairer drops, delays, reorders or duplicates them, so loss
//! stays per wire packet) and through nftables loss on the TUN, with offload
//! on (the kernel side of the device, where a super-segment tcpd wrote is
//! dropped whole before the kernel segments it: a loss burst of up to 45
//! wire segments) and off (one wire packet per drop).

use std::io::Read;
use std::net::{SocketAddrV4, TcpListener};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tcpd_e2e::bench::TunCounters;
use tcpd_e2e::{Env, HOST_ADDR, Netns, TUN_NAME, in_ci, payload, sha256_hex, which};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const SIZE: usize = 256 * MIB;

fn setup(tag: &str, extra: &[&str]) -> Option<Env> {
    Env::setup(tag, extra)
}

/// `program` is installed, or (outside CI) the check is skipped with a note.
fn tool(program: &str, test: &str) -> bool {
    if which(program).is_some() {
        return true;
    }
    assert!(!in_ci(), "{program} is required under CI");
    eprintln!("{test}: {program} is not installed; that check is skipped");
    false
}

/// What `ethtool -k` says about TCP segmentation offload on the TUN.
fn tso_state(ns: &Netns) -> String {
    let out = ns
        .command("ethtool")
        .args(["-k", TUN_NAME])
        .output()
        .expect("run ethtool");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tcp-segmentation-offload:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no tcp-segmentation-offload line in: {text}"))
}

/// The longest a 256 MiB-each-way transfer may take (debug build, loaded
/// 2-core machine, 1 % loss): a hang fails the test instead of CI.
const TRANSFER_LIMIT: Duration = Duration::from_secs(240);

/// 256 MiB from a tcpd client to a kernel listener and 256 MiB back at the
/// same time; checks both hashes. `during` runs once the transfer is under way.
/// Returns what crossed the TUN meanwhile.
fn transfer_both_ways(env: &Env, port: u16, during: impl FnOnce() + Send + 'static) -> TunCounters {
    let before = TunCounters::read(&env.ns, TUN_NAME).expect("TUN counters");
    let to_tcpd = payload(SIZE, 21);
    let to_kernel = payload(SIZE, 22);
    let (to_tcpd_sha, to_kernel_sha) = (sha256_hex(&to_tcpd), sha256_hex(&to_kernel));
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = env.ns.spawn(move || {
        let listener = TcpListener::bind(SocketAddrV4::new(HOST_ADDR, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (stream, _) = listener.accept().expect("accept");
        let mut writer = stream.try_clone().expect("clone");
        let sender = std::thread::spawn(move || {
            std::io::Write::write_all(&mut writer, &to_tcpd).expect("kernel write");
            writer
                .shutdown(std::net::Shutdown::Write)
                .expect("kernel shutdown");
        });
        let mut received = Vec::with_capacity(SIZE);
        let mut reader = stream;
        reader.read_to_end(&mut received).expect("kernel read");
        sender.join().expect("kernel sender");
        sha256_hex(&received)
    });
    ready_rx.recv().expect("listener ready");
    let socket = env.daemon.socket().to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let transfer = async move {
        let client = tcpd_client::Client::connect(&socket)
            .await
            .expect("session");
        let stream = client
            .tcp_connect(&SocketAddrV4::new(HOST_ADDR, port))
            .await
            .expect("connect");
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = tokio::spawn(async move {
            wr.write_all(&to_kernel).await.expect("tcpd write");
            wr.shutdown().await.expect("tcpd shutdown");
            wr
        });
        let probe = tokio::task::spawn_blocking(during);
        let mut received = Vec::with_capacity(SIZE);
        rd.read_to_end(&mut received).await.expect("tcpd read");
        let wr = writer.await.expect("writer");
        probe.await.expect("probe");
        drop(rd.unsplit(wr));
        sha256_hex(&received)
    };
    let received = rt
        .block_on(async { tokio::time::timeout(TRANSFER_LIMIT, transfer).await })
        .unwrap_or_else(|_| panic!("256 MiB each way not done in {TRANSFER_LIMIT:?}"));
    eprintln!(
        "256 MiB each way in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(received, to_tcpd_sha, "bytes tcpd received");
    assert_eq!(
        server.join().expect("kernel side"),
        to_kernel_sha,
        "bytes the kernel received"
    );
    TunCounters::read(&env.ns, TUN_NAME)
        .expect("TUN counters")
        .since(before)
}

/// The kernel's `ss -tin` line for its connection with tcpd, once it has
/// received 1 MiB from tcpd (before tcpd's data arrives Linux's `rcvmss` is still
/// its initial guess, the 536-byte default MSS of RFC 9293 §3.7.1).
fn kernel_ss(ns_name: &str, port: u16) -> String {
    let start = Instant::now();
    loop {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns_name,
                "ss",
                "-tin",
                "state",
                "established",
            ])
            .arg(format!("( sport = :{port} )"))
            .output()
            .expect("run ss");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let received = text
            .split_whitespace()
            .find_map(|field| field.strip_prefix("bytes_received:"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if text.contains("mss:") && received >= 1 << 20 {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the kernel's connection never received 1 MiB from tcpd in ss: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tcpdump on the TUN until it has seen one TCP packet longer than 3000
/// bytes (two MSS): a super-segment in either direction.
fn capture_one_super_segment(ns: &Netns) -> Child {
    ns.command("tcpdump")
        .args(["-i", TUN_NAME, "-nn", "-c", "1", "-s", "128"])
        .args(["tcp", "and", "greater", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tcpdump")
}

/// Waits up to `limit` for `child`; kills it if it is still running.
fn wait_or_kill(mut child: Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            return (status.success(), out);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (false, String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn offload_on_moves_super_segments_while_the_kernel_sees_the_mss() {
    let test = "offload_on_moves_super_segments_while_the_kernel_sees_the_mss";
    let Some(env) = setup("o-on", &[]) else {
        return;
    };
    if tool("ethtool", test) {
        assert_eq!(tso_state(&env.ns), "on", "TSO on the TUN");
    }
    let dump = tool("tcpdump", test).then(|| capture_one_super_segment(&env.ns));
    if dump.is_some() {
        // tcpdump needs a moment to attach before the first packet.
        std::thread::sleep(Duration::from_millis(500));
    }
    let ns_name = env.ns.name().to_string();
    let (ss_tx, ss_rx) = mpsc::channel();
    let counters = transfer_both_ways(&env, 5301, move || {
        let _ = ss_tx.send(kernel_ss(&ns_name, 5301));
    });
    let ss = ss_rx.recv().expect("ss output");
    assert!(ss.contains(" mss:1448"), "the kernel's MSS: {ss}");
    assert!(ss.contains("rcvmss:1448"), "the kernel's receive MSS: {ss}");
    eprintln!(
        "offload on: {:.0} bytes per TUN write, {:.0} per read",
        counters.bytes_per_write(),
        counters.bytes_per_read()
    );
    // Data flows both ways at once, so ACKs dilute the averages; 256 MiB in
    // MTU-sized packets alone would average under 1500.
    assert!(counters.bytes_per_write() > 3000.0, "{counters:?}");
    assert!(counters.bytes_per_read() > 3000.0, "{counters:?}");
    if let Some(dump) = dump {
        let (seen, out) = wait_or_kill(dump, Duration::from_secs(10));
        assert!(seen, "tcpdump saw no packet over 3000 bytes on the TUN");
        eprintln!("tcpdump: {}", out.trim());
    }
}

#[test]
fn offload_off_moves_mtu_sized_packets() {
    let test = "offload_off_moves_mtu_sized_packets";
    let Some(env) = setup("o-off", &["--offload", "off"]) else {
        return;
    };
    if tool("ethtool", test) {
        assert_eq!(tso_state(&env.ns), "off", "no TSO on the TUN");
    }
    let counters = transfer_both_ways(&env, 5302, || {});
    assert!(counters.bytes_per_write() <= 1500.0, "{counters:?}");
    assert!(counters.bytes_per_read() <= 1500.0, "{counters:?}");
}

/// Runs `argv[2..]` (a program and its arguments) with `ioctl(fd, argv[1],
/// ...)` failing EINVAL — what a kernel (or a sandbox's seccomp policy)
/// that refuses that TUN request answers — by a seccomp filter installed
/// before exec'ing them. Needs python3-seccomp (Debian's /usr/bin/python3;
/// `.ci/run` installs it).
const REFUSE_IOCTL: &str = r#"
import errno, os, sys
import seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EINVAL), "ioctl", seccomp.Arg(1, seccomp.EQ, int(sys.argv[1], 0)))
f.load()
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// TUNSETOFFLOAD = _IOW('T', 208, unsigned int) (linux/if_tun.h).
const TUNSETOFFLOAD: &str = "0x400454d0";
/// TUNGETFEATURES = _IOR('T', 207, unsigned int) (linux/if_tun.h).
const TUNGETFEATURES: &str = "0x800454cf";

/// `--offload on` (the default) on a kernel that refuses the TUN request
/// `ioctl`: exactly one warning containing `warning`, then the link runs
/// without offload — no TSO on the TUN, MTU-sized packets both ways — and
/// 256 MiB each way arrive intact.
fn refused_offload_falls_back(test: &str, tag: &str, port: u16, ioctl: &str, warning: &str) {
    if !tcpd_e2e::require_privileges(test) {
        return;
    }
    let python = "/usr/bin/python3";
    let has_seccomp = std::process::Command::new(python)
        .args(["-c", "import seccomp"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_seccomp {
        assert!(!in_ci(), "{test}: python3-seccomp is required under CI");
        eprintln!("SKIPPED {test}: python3-seccomp is not installed");
        return;
    }
    let ns = Netns::new(tag).expect("namespace");
    let daemon = tcpd_e2e::Daemon::start_under(&ns, &[python, "-c", REFUSE_IOCTL, ioctl], &[])
        .expect("tcpd under the seccomp filter");
    let env = Env { daemon, ns };
    let log = env.daemon.log_text();
    let refusals = log
        .lines()
        .filter(|l| l.contains("TUN offload refused"))
        .count();
    assert_eq!(refusals, 1, "one warning for the refusal; log:\n{log}");
    assert!(
        log.contains(warning),
        "the warning names {warning:?}; log:\n{log}"
    );
    assert!(
        log.contains("TUN offload segmentation=false checksum=false"),
        "the link reports no offload; log:\n{log}"
    );
    if tool("ethtool", test) {
        assert_eq!(tso_state(&env.ns), "off", "no TSO on the TUN");
    }
    let counters = transfer_both_ways(&env, port, || {});
    assert!(counters.bytes_per_write() <= 1500.0, "{counters:?}");
    assert!(counters.bytes_per_read() <= 1500.0, "{counters:?}");
}

/// TUNSETOFFLOAD refused: the device keeps its (all-zero) virtio header.
#[test]
fn refused_offload_falls_back_to_plain_packets_with_one_log_line() {
    refused_offload_falls_back(
        "refused_offload_falls_back_to_plain_packets_with_one_log_line",
        "o-refused",
        5305,
        TUNSETOFFLOAD,
        "TUN offload refused (TUNSETOFFLOAD); running without",
    );
}

/// No IFF_VNET_HDR offered (TUNGETFEATURES fails, as on a TUN driver
/// without the query): the device is made without the virtio header.
#[test]
fn a_tun_without_the_virtio_header_falls_back_to_plain_packets() {
    refused_offload_falls_back(
        "a_tun_without_the_virtio_header_falls_back_to_plain_packets",
        "o-novnet",
        5306,
        TUNGETFEATURES,
        "TUN offload refused (no IFF_VNET_HDR in TUNGETFEATURES); running without",
    );
}

/// Loss, reordering and duplication in both directions, one wire packet at
/// a time (tcpd's impairer), with offload on; returns the daemon's
/// retransmission count, which the loss must have made non-zero.
fn impaired_transfer(tag: &str, port: u16, offload: &str) {
    let spec = "loss=1%,reorder=1%,duplicate=1%,seed=11";
    let Some(env) = setup(tag, &["--offload", offload, "--impair", spec]) else {
        return;
    };
    let counters = transfer_both_ways(&env, port, || {});
    // The impairer sees wire packets, so whatever the offload tcpd writes
    // MTU-sized packets to the TUN (reads mix the kernel's coalesced data
    // with one ACK per two of tcpd's segments: no bound to assert).
    eprintln!("{tag}: {counters:?}");
    assert!(counters.bytes_per_write() <= 1500.0, "{counters:?}");
    assert!(
        retransmits(&env) > 0,
        "1% loss each way must make tcpd retransmit"
    );
}

/// The daemon's `retransmits` counter (admin Stats).
fn retransmits(env: &Env) -> u64 {
    tcpd_e2e::runtime().block_on(async {
        let mut admin = tcpd_e2e::admin_client(&env.daemon).await;
        tcpd_e2e::stats_counters(&mut admin)
            .await
            .get("retransmits")
            .copied()
            .unwrap_or(0)
    })
}

#[test]
fn offload_on_256mib_each_way_through_the_impairer() {
    impaired_transfer("o-imp-on", 5303, "on");
}

#[test]
fn offload_off_256mib_each_way_through_the_impairer() {
    impaired_transfer("o-imp-off", 5304, "off");
}

/// nftables drops 1 % of what crosses the TUN each way. With offload on, a
/// dropped write of tcpd's is a whole super-segment (the kernel's side of
/// the device, before it segments) and a dropped read one coalesced run;
/// with offload off every drop is one wire packet.
fn nftables_loss_transfer(test: &str, tag: &str, port: u16, offload: &str) {
    if !tool("nft", test) {
        return;
    }
    let Some(env) = setup(tag, &["--offload", offload]) else {
        return;
    };
    let rules = format!(
        "table netdev t {{
            chain e {{ type filter hook egress device \"{TUN_NAME}\" priority 0; numgen random mod 100 < 1 drop; }}
            chain i {{ type filter hook ingress device \"{TUN_NAME}\" priority 0; numgen random mod 100 < 1 drop; }}
        }}"
    );
    env.ns.nft(&rules);
    let counters = transfer_both_ways(&env, port, || {});
    eprintln!("{tag}: {counters:?}");
    if offload == "off" {
        // No super-segments either way: the loss is per wire packet.
        assert!(counters.bytes_per_write() <= 1500.0, "{counters:?}");
        assert!(counters.bytes_per_read() <= 1500.0, "{counters:?}");
    }
    assert!(
        retransmits(&env) > 0,
        "1% loss each way must make tcpd retransmit"
    );
}

#[test]
fn offload_on_256mib_each_way_under_nftables_loss() {
    nftables_loss_transfer(
        "offload_on_256mib_each_way_under_nftables_loss",
        "o-nft",
        5305,
        "on",
    );
}

#[test]
fn offload_off_256mib_each_way_under_nftables_loss() {
    nftables_loss_transfer(
        "offload_off_256mib_each_way_under_nftables_loss",
        "o-nft-off",
        5306,
        "off",
    );
}
