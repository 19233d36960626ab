//! End-to-end tests of tcpd's resource limits (issue 16), against the
//! Linux kernel in a test namespace:
//! - a SYN flood with spoofed sources (crafted on a raw socket inside the
//!   namespace, bounded in count and time) while the kernel connects for
//!   real: SYN cookies keep the listener open, and the SYN queue drains
//!   after the SYN,ACK retries;
//! - orphans (sockets closed with data the kernel never reads): their cap,
//!   the reset of the oldest, the give-up after `--orphan-retries`, and the
//!   daemon's memory meanwhile;
//! - API connection limits: per uid, in total, the HTTP/2 handshake
//!   timeout, and root's reserved slots (non-root clients are child
//!   processes with another uid and the socket's group).
//!
//! Without root these tests print why and pass as skipped (they fail under
//! `CI=true`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};
use tcpd_e2e::{Daemon, Env, HOST_ADDR, TCPD_ADDR};
use tcpd_proto::v2;
use tcpd_proto::v2::admin_service_client::AdminServiceClient as AdminClient;
use tcpd_stack::SeqNum;
use tcpd_stack::wire::{IpProtocol, Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
use tonic::transport::Channel;

async fn stats(admin: &mut AdminClient<Channel>) -> v2::StatsResponse {
    admin
        .stats(v2::StatsRequest {})
        .await
        .expect("Stats")
        .into_inner()
}

fn counter(list: &[v2::Counter], name: &str) -> u64 {
    list.iter().find(|c| c.name == name).map_or(0, |c| c.value)
}

/// A tcpd listener on `port` whose connections answer "hi" with "ok" (and
/// keep answering until closed).
async fn echo_server(daemon: &Daemon, port: u16, backlog: i32) -> tokio::task::JoinHandle<()> {
    let client = tcpd_client::Client::connect(daemon.socket())
        .await
        .expect("server session");
    let socket = client.socket().await.expect("socket");
    socket
        .bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .await
        .expect("bind");
    socket.listen(backlog).await.expect("listen");
    let listener = tcpd_client::TcpListener::from_socket(socket)
        .await
        .expect("listener");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2];
                while stream.read_exact(&mut buf).await.is_ok() {
                    if stream.write_all(b"ok").await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// One legitimate kernel connection: connect (within `limit`), "hi",
/// expect "ok" (5 s). The connect time, or `None` on failure.
fn legit_connect(to: SocketAddrV4, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), limit).ok()?;
    let connected = start.elapsed();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"hi").ok()?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).ok()?;
    (&reply == b"ok").then_some(connected)
}

/// The kernel's initial SYN retransmission timeout (RFC 6298 §2.1, Linux's
/// TCP_TIMEOUT_INIT): a connect whose first SYN went unanswered takes at
/// least this long.
const INITIAL_SYN_RTO: Duration = Duration::from_secs(1);

/// How long a connect under the flood may take: its SYN is sent at 0, 1,
/// 3 and 7 s (the RTO doubling from 1 s), and the last of these goes after
/// the flood (4 s at its full rate), so a SYN the kernel dropped at the
/// TUN during the flood is not mistaken for a listener that refused.
const FLOODED_CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Packets the kernel dropped on their way into tcpd (the TUN's ring was
/// full): `ip -s -j link`'s tx dropped of the TUN in `ns`.
fn tun_tx_dropped(ns: &tcpd_e2e::Netns) -> Option<u64> {
    let out = ns
        .command("ip")
        .args(["-s", "-j", "link", "show", "dev", tcpd_e2e::TUN_NAME])
        .output()
        .ok()?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    links[0]["stats64"]["tx"]["dropped"].as_u64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// What the flood achieved.
#[derive(Debug)]
struct FloodReport {
    sent: u64,
    send_errors: u64,
    elapsed: Duration,
}

/// Sends `count` SYNs to `to` at `rate` per second from spoofed sources
/// 10.77.0.10–10.77.0.249 (inside the namespace's subnet; nobody owns
/// them, so the SYN,ACKs go unanswered), on a raw IP socket. Runs in the
/// namespace (call from a thread that entered it).
fn syn_flood(to: SocketAddrV4, count: u64, rate: u64) -> FloodReport {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Raw,
    )
    .expect("raw socket (IPPROTO_RAW)");
    let dest = SockaddrIn::from(to);
    let mut packet = [0u8; 64];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    let (mut sent, mut send_errors) = (0, 0);
    for i in 0..count {
        // Pace: packet i leaves no earlier than i / rate after the start.
        let due = Duration::from_micros(i * 1_000_000 / rate);
        let elapsed = start.elapsed();
        if due > elapsed + Duration::from_millis(1) {
            std::thread::sleep(due - elapsed);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = Ipv4Addr::new(10, 77, 0, 10 + (x % 240) as u8);
        let syn = TcpRepr {
            src_port: 1024 + ((x >> 8) % 60000) as u16,
            dst_port: to.port(),
            seq: SeqNum((x >> 16) as u32),
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamp: Some(((x >> 32) as u32, 0)),
                ..TcpOptions::default()
            },
            payload: &[],
        };
        let len = syn.emit(&mut packet[20..], src, *to.ip());
        Ipv4Repr {
            src,
            dst: *to.ip(),
            protocol: IpProtocol::Tcp,
            ttl: 64,
            dont_fragment: true,
            payload_len: len,
        }
        .emit(&mut packet[..20], i as u16);
        match sendto(
            fd.as_raw_fd(),
            &packet[..20 + len],
            &dest,
            MsgFlags::empty(),
        ) {
            Ok(_) => sent += 1,
            Err(_) => send_errors += 1,
        }
    }
    FloodReport {
        sent,
        send_errors,
        elapsed: start.elapsed(),
    }
}

/// Issue 16's flood: 100 000 spoofed SYNs at 25 000/s against a listener
/// (backlog 1024, the default SYN queue) while the kernel connects for
/// real. Before SYN cookies this gave 0/35 connects. Now:
/// - the listener answers every SYN that reaches it, from its SYN queue
///   or with a cookie once the queue is full (`listen_drops` 0, cookies
///   sent beyond the queue), and no cookie fails (`syncookies_failed` 0);
/// - ≥ 99 % of the legitimate connects succeed, most through cookies;
/// - the SYN queue drains within the SYN,ACK retry time once the flood
///   stops (2 retries here: 1 + 2 + 4 s; the stack's tests check Linux's
///   5 = 63 s), and the listener works as before.
///
/// What is printed, not asserted, because a loaded machine moves it
/// without the listener dropping anything: the flood's rate, how many
/// connects were answered on their first SYN (a connect whose SYN was
/// lost takes the kernel's 1 s initial RTO, RFC 6298 §2.1), the median
/// connect time against the unflooded one (issue 16's "≤ 10×"), and the
/// flood SYNs the kernel dropped before tcpd read them (its TUN ring of
/// txqueuelen packets fills while a debug daemon on a busy CPU falls
/// behind 25 000 SYNs/s; legitimate SYNs lost there are retransmitted,
/// which is why their connect limit spans the flood).
#[test]
fn syn_flood_leaves_the_listener_open() {
    let Some(env) = Env::setup("syn-flood", &["--synack-retries", "2"]) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    let port = 8080;
    let target = SocketAddrV4::new(TCPD_ADDR, port);
    let _server = rt.block_on(echo_server(&env.daemon, port, 1024));
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));

    // Unflooded connect time.
    let baseline: Vec<Duration> = env.ns.within(move || {
        (0..40)
            .map(|_| legit_connect(target, Duration::from_secs(5)).expect("unflooded connect"))
            .collect()
    });
    let unflooded = median(baseline);

    // The flood, and legitimate connects for as long as it lasts.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        env.ns.spawn(move || {
            let report = syn_flood(target, 100_000, 25_000);
            flooding.store(false, Ordering::SeqCst);
            report
        })
    };
    // 50 legitimate connects, each on its own thread, all started while the
    // flood runs (one every 70 ms from 300 ms in: the SYN queue is full by
    // then), so a slow or failed one cannot push the others past the flood.
    let legit: Vec<_> = (0..50u64)
        .map(|i| {
            let flooding = flooding.clone();
            let start = Instant::now() + Duration::from_millis(300 + 70 * i);
            env.ns.spawn(move || {
                std::thread::sleep(start.saturating_duration_since(Instant::now()));
                let during_flood = flooding.load(Ordering::SeqCst);
                (during_flood, legit_connect(target, FLOODED_CONNECT_LIMIT))
            })
        })
        .collect();
    let report = flood.join().expect("flood thread");
    let flood_ended = Instant::now();
    let outcomes: Vec<(bool, Option<Duration>)> = legit
        .into_iter()
        .map(|t| t.join().expect("legit connect thread"))
        .collect();
    let started_during = outcomes.iter().filter(|(during, _)| *during).count();
    let results: Vec<Option<Duration>> = outcomes.into_iter().map(|(_, r)| r).collect();
    let during = rt.block_on(stats(&mut admin));

    let ok: Vec<Duration> = results.iter().flatten().copied().collect();
    let rate = report.sent as f64 / report.elapsed.as_secs_f64();
    let flooded = median(ok.clone());
    eprintln!(
        "SYN flood: {} SYNs sent ({} send errors) in {:?} = {:.0}/s; legitimate connects \
         {}/{} ok; median connect {:?} flooded vs {:?} unflooded; syncookies sent {} recv {} \
         failed {}, listen overflows {}, drops {}",
        report.sent,
        report.send_errors,
        report.elapsed,
        rate,
        ok.len(),
        results.len(),
        flooded,
        unflooded,
        counter(&during.counters, "syncookies_sent"),
        counter(&during.counters, "syncookies_recv"),
        counter(&during.counters, "syncookies_failed"),
        counter(&during.counters, "listen_overflows"),
        counter(&during.counters, "listen_drops"),
    );
    let first_syn = ok.iter().filter(|t| **t < INITIAL_SYN_RTO).count();
    eprintln!(
        "{first_syn} of {} connects answered on their first SYN (< {INITIAL_SYN_RTO:?}); \
         flooded median {:.1}x the unflooded one; SYNs the kernel dropped at the TUN: {}",
        results.len(),
        flooded.as_secs_f64() / unflooded.as_secs_f64().max(1e-6),
        tun_tx_dropped(&env.ns).map_or("?".into(), |n| n.to_string()),
    );
    assert!(report.sent >= 99_000, "the flood was sent: {report:?}");
    assert!(
        started_during >= 45,
        "only {started_during} of 50 connects started during the flood"
    );
    // The flood filled the SYN queue: from then on cookies answered.
    assert!(
        counter(&during.counters, "syncookies_sent") > 1000,
        "the flood never filled the SYN queue"
    );
    // Every SYN that reached the listener was answered.
    assert_eq!(
        counter(&during.counters, "listen_drops"),
        0,
        "SYNs dropped by the listener"
    );
    assert_eq!(counter(&during.counters, "syncookies_failed"), 0);
    assert!(
        ok.len() * 100 >= results.len() * 99,
        "{} of {} legitimate connects succeeded during the flood",
        ok.len(),
        results.len()
    );
    assert!(counter(&during.counters, "syncookies_recv") >= ok.len() as u64 / 2);

    // After the flood the SYN queue drains: its embryos end after their
    // SYN,ACK retries (1 + 2 + 4 s with 2 retries), plus slack for a loaded machine.
    let drained = rt.block_on(async {
        let limit = Duration::from_secs(7 + 5);
        loop {
            let states = stats(&mut admin).await.states;
            let half_open = counter(&states, "SYN-RECEIVED");
            if half_open == 0 {
                return Some(flood_ended.elapsed());
            }
            if flood_ended.elapsed() > limit {
                eprintln!("still {half_open} SYN-RECEIVED after {limit:?}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eprintln!("SYN queue drained {drained:?} after the flood");
    assert!(drained.is_some(), "the SYN queue did not drain");
    // And the listener works as before.
    env.ns
        .within(move || legit_connect(target, Duration::from_secs(5)))
        .expect("connect after the flood");
}

/// Issue 16: 300 sockets closed with data their peer never reads sat in
/// FIN-WAIT-1 holding 87 MB for good. Now at most `--max-orphans` stay (the
/// oldest are reset, counted), and those left are dropped after
/// `--orphan-retries` zero-window probes; the daemon's memory stays bounded.
#[test]
fn orphans_of_a_peer_that_never_reads_are_capped_and_expire() {
    let Some(env) = Env::setup("orphans", &["--max-orphans", "8", "--orphan-retries", "5"]) else {
        return;
    };
    let port = 7070;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The kernel peer: accepts, never reads, keeps every connection open.
    let peer = {
        let stop = stop.clone();
        env.ns.spawn(move || {
            let listener = std::net::TcpListener::bind(SocketAddrV4::new(HOST_ADDR, port))
                .expect("kernel listen");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        })
    };
    ready_rx.recv().expect("kernel listener");
    let rt = tcpd_e2e::runtime();
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));
    let rss_before = env.daemon.rss_kib();
    let orphans = 40;
    let queued = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let chunk = vec![0x5a; 64 * 1024];
        let mut queued = 0;
        for _ in 0..orphans {
            let socket = client.socket().await.expect("socket");
            socket
                .connect(SocketAddrV4::new(HOST_ADDR, port), false)
                .await
                .expect("connect");
            // Fill what the peer's window and our send buffer take, then close.
            while let Ok(n) = socket.write(&chunk, true).await {
                queued += n;
            }
            socket.close().await.expect("close");
        }
        queued
    });
    let after_close = rt.block_on(stats(&mut admin));
    let fin_wait_1 = counter(&after_close.states, "FIN-WAIT-1");
    let resets = counter(&after_close.counters, "orphan_resets");
    let early_timeouts = counter(&after_close.counters, "orphan_timeouts");
    let rss_full = env.daemon.rss_kib();
    eprintln!(
        "orphans: {orphans} sockets closed holding {queued} bytes in all; {fin_wait_1} left in \
         FIN-WAIT-1, {resets} reset; daemon RSS {rss_before} KiB before, {rss_full} KiB after"
    );
    assert!(fin_wait_1 <= 8, "{fin_wait_1} orphans kept, cap 8");
    // Each orphan was reset by the cap, timed out (only if closing the 40
    // took longer than the 5 probes, ≥ 6.2 s), or still waits.
    assert_eq!(
        resets + early_timeouts + fin_wait_1,
        orphans,
        "every orphan is accounted for"
    );
    assert!(resets >= orphans - 8 - early_timeouts && resets > 0);
    // 8 orphans' send buffers plus the daemon's own: far below the
    // megabytes the 40 orphans queued.
    assert!(
        rss_full < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_full} KiB"
    );

    // The peer keeps answering zero-window probes; 5 probes (RTO × 1, 2,
    // 4, 8, 16: ≥ 6.2 s with the 200 ms minimum RTO) end the orphans.
    let gone = rt.block_on(async {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let reply = stats(&mut admin).await;
            if counter(&reply.states, "FIN-WAIT-1") == 0 {
                return Some((start.elapsed(), reply));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    });
    let (took, reply) = gone.expect("orphans dropped within 60 s");
    eprintln!(
        "orphans dropped {took:?} after the cap; orphan_timeouts {}",
        counter(&reply.counters, "orphan_timeouts")
    );
    assert_eq!(
        counter(&reply.counters, "orphan_timeouts"),
        early_timeouts + fin_wait_1
    );
    stop.store(true, Ordering::SeqCst);
    assert_eq!(peer.join().expect("peer"), orphans as usize);
}

/// A non-root client process (`uid`, group nogroup, the socket's group)
/// that opens `count` connections to the API socket, with the HTTP/2
/// client preface and an empty SETTINGS frame when `preface`, waits at
/// least `settle_ms` and until the daemon has dealt with them (`settled`,
/// the daemon's counters: after a fixed pause alone, connections a loaded
/// daemon had not yet accepted counted as open), and prints how many are
/// still open (`open=N tried=M`); then holds them until its stdin closes.
struct RawClients {
    child: std::process::Child,
    open: usize,
    tried: usize,
}

const RAW_CLIENTS: &str = r#"
import socket, sys, time
path, count, preface, settle = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        break
    held.append(s)
    if preface:
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        except OSError:
            pass  # refused: the daemon closed it already
print(f"connected {len(held)}", flush=True)
time.sleep(settle)
sys.stdin.readline()  # the test's go: the daemon has dealt with them
still = 0
for s in held:
    s.setblocking(False)
    try:
        while s.recv(65536) != b"":
            pass
    except BlockingIOError:
        still += 1
    except OSError:
        pass
print(f"open={still} tried={len(held)}", flush=True)
sys.stdin.read()
"#;

impl RawClients {
    fn open(
        daemon: &Daemon,
        uid: u32,
        count: usize,
        preface: bool,
        settle_ms: u64,
        mut settled: impl FnMut(usize) -> bool,
    ) -> RawClients {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", RAW_CLIENTS])
            .arg(daemon.socket())
            .arg(count.to_string())
            .arg(if preface { "1" } else { "0" })
            .arg(format!("{}", settle_ms as f64 / 1000.0))
            .uid(uid)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 client");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("client connected");
        let connected: usize = line
            .strip_prefix("connected ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("client said {line:?}"));
        let start = Instant::now();
        while !settled(connected) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon never dealt with the client's connections ({line:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"count\n")
            .expect("tell the client to count");
        line.clear();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("client report");
        let field = |name: &str| -> usize {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad client report {line:?}"))
        };
        RawClients {
            open: field("open="),
            tried: field("tried="),
            child,
        }
    }
}

impl Drop for RawClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's counter `name`, read on a session of its own (which
/// leaves the test's other sessions as idle as they were).
fn fresh_counter(rt: &tokio::runtime::Runtime, daemon: &Daemon, name: &str) -> u64 {
    rt.block_on(async {
        let mut admin = tcpd_e2e::admin_client(daemon).await;
        counter(&stats(&mut admin).await.counters, name)
    })
}

fn open_fds(daemon: &Daemon) -> usize {
    let pid = daemon.pid().expect("pid");
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `tcpctl status` as root: the reserved slot lets the operator in.
fn tcpctl_status_answers(daemon: &Daemon) -> bool {
    Command::new(tcpd_e2e::bin_path("tcpctl"))
        .arg("status")
        .env("TCPD_SOCKET", daemon.socket())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Issue 16: ~20 000 idle connections from one group member exhausted the
/// daemon's file descriptors and `tcpctl status` timed out. Now a uid holds
/// at most --max-clients-per-uid, everybody at most --max-clients, silent
/// connections go after the handshake timeout, and root still gets in.
#[test]
fn api_connection_limits_keep_a_slot_for_the_operator() {
    let Some(env) = Env::setup(
        "api-limits",
        &[
            "--socket-group",
            "nogroup",
            "--max-clients",
            "30",
            "--max-clients-per-uid",
            "20",
            "--handshake-timeout-ms",
            "1000",
        ],
    ) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    let api = |admin: &mut AdminClient<Channel>, name: &str| {
        let reply = rt.block_on(stats(admin));
        counter(&reply.counters, name)
    };
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));

    // Silent connections (no HTTP/2 preface) are dropped after 1 s.
    let silent = RawClients::open(&env.daemon, 34567, 5, false, 2500, |_| {
        api(&mut admin, "api_handshake_timeouts") == 5
    });
    assert_eq!(
        (silent.open, silent.tried),
        (0, 5),
        "silent connections dropped"
    );
    assert_eq!(api(&mut admin, "api_handshake_timeouts"), 5);
    drop(silent);

    // One uid gets 20 of 25; a second uid the 10 left of the 30.
    let first = RawClients::open(&env.daemon, 65534, 25, true, 500, |_| {
        api(&mut admin, "api_refused_per_uid") == 5
    });
    assert_eq!((first.open, first.tried), (20, 25), "per-uid limit");
    let second = RawClients::open(&env.daemon, 23456, 25, true, 500, |_| {
        api(&mut admin, "api_refused_total") == 15
    });
    assert_eq!((second.open, second.tried), (10, 25), "total limit");
    assert_eq!(api(&mut admin, "api_refused_per_uid"), 5);
    assert_eq!(api(&mut admin, "api_refused_total"), 15);
    // The limits are full, yet root's tcpctl still answers.
    assert!(tcpctl_status_answers(&env.daemon), "tcpctl status as root");

    // The issue's attack: ~20 000 connections from one more uid. All refused;
    // the daemon's descriptors stay bounded and tcpctl still answers.
    let refused = |admin: &mut AdminClient<Channel>| {
        api(admin, "api_refused_per_uid") + api(admin, "api_refused_total")
    };
    let refused_before = refused(&mut admin);
    let flood = RawClients::open(&env.daemon, 45678, 19_000, true, 1000, |tried| {
        refused(&mut admin) - refused_before >= tried as u64
    });
    let fds = open_fds(&env.daemon);
    let answers = tcpctl_status_answers(&env.daemon);
    eprintln!(
        "API connection flood: {} tried, {} open; daemon fds {fds}; tcpctl status {}; \
         refused per uid {} total {}",
        flood.tried,
        flood.open,
        if answers { "answers" } else { "FAILS" },
        api(&mut admin, "api_refused_per_uid"),
        api(&mut admin, "api_refused_total"),
    );
    assert_eq!(flood.open, 0);
    assert!(
        flood.tried >= 10_000,
        "the flood opened {} connections",
        flood.tried
    );
    assert!(fds < 30 + 16 + 64, "daemon holds {fds} descriptors");
    assert!(answers, "tcpctl status during the flood");
    assert_eq!(
        api(&mut admin, "api_clients"),
        31,
        "30 clients and this admin session"
    );
    drop((first, second, flood));
}

/// --idle-timeout-ms: a connection with no RPC in flight and no socket is
/// dropped after the timeout (its slot freed, `api_idle_drops`), while a
/// session that owns a socket, or waits in a streaming RPC (Watch), stays.
#[test]
fn idle_api_connections_are_dropped_but_sessions_in_use_stay() {
    let Some(env) = Env::setup(
        "api-idle",
        &["--socket-group", "nogroup", "--idle-timeout-ms", "1000"],
    ) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    // In use: a listener's session, and a Watch.
    let port = 6060;
    let _server = rt.block_on(echo_server(&env.daemon, port, 16));
    let mut watcher = rt.block_on(tcpd_e2e::admin_client(&env.daemon));
    let mut watch = rt
        .block_on(watcher.watch(v2::WatchRequest {}))
        .expect("Watch")
        .into_inner();

    // In use without any RPC in flight: a session that owns a socket.
    let (holder, held) = rt.block_on(async {
        let holder = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("holder session");
        let held = holder.socket().await.expect("socket");
        held.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port + 1))
            .await
            .expect("bind");
        (holder, held)
    });

    // Unused: a client that did its handshake and then nothing.
    let idle = RawClients::open(&env.daemon, 65534, 3, true, 2500, |_| {
        fresh_counter(&rt, &env.daemon, "api_idle_drops") == 3
    });
    assert_eq!((idle.open, idle.tried), (0, 3), "idle connections dropped");

    // The listener's session survived the timeout: the kernel still gets through.
    let target = SocketAddrV4::new(TCPD_ADDR, port);
    env.ns
        .within(move || legit_connect(target, Duration::from_secs(5)))
        .expect("the listener's session is still there");
    // So did the Watch: it reports that connection.
    let event = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a state change within 5 s")
            .expect("watch stream alive")
            .expect("an event")
    });
    assert_eq!(
        event.change.and_then(|c| c.local).map(|a| a.port),
        Some(u32::from(port))
    );
    // The socket holder's session was kept: its handle still works (a
    // dropped session's sockets are closed, EBADF on a new connection).
    let bound = rt
        .block_on(held.local_addr())
        .expect("the holder's socket survived the idle timeout");
    assert_eq!(bound.port(), port + 1);
    drop((held, holder));
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));
    let reply = rt.block_on(stats(&mut admin));
    assert_eq!(counter(&reply.counters, "api_idle_drops"), 3);
}

/// --keepalive-ms / --keepalive-timeout-ms: a client that did its HTTP/2
/// handshake and then answers nothing (no PING ack) is dropped after the
/// interval plus the timeout and counted (`api_keepalive_drops`); a client
/// that answers its PINGs (this admin session) stays and is not counted.
#[test]
fn api_connections_that_leave_keepalive_pings_unanswered_are_dropped_and_counted() {
    let Some(env) = Env::setup(
        "api-keepalive",
        &[
            "--socket-group",
            "nogroup",
            "--keepalive-ms",
            "400",
            "--keepalive-timeout-ms",
            "400",
            "--idle-timeout-ms",
            "0",
        ],
    ) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));
    // Preface + SETTINGS, then silence: gone within 0.8 s (+ scheduling).
    let mute = RawClients::open(&env.daemon, 65534, 3, true, 3000, |_| {
        fresh_counter(&rt, &env.daemon, "api_keepalive_drops") == 3
    });
    assert_eq!((mute.open, mute.tried), (0, 3), "mute connections dropped");
    drop(mute);
    // The admin client sat idle for those 3 s too: its PING acks kept it.
    let reply = rt.block_on(stats(&mut admin));
    assert_eq!(counter(&reply.counters, "api_keepalive_drops"), 3);
    assert_eq!(counter(&reply.counters, "api_idle_drops"), 0);
    assert_eq!(counter(&reply.counters, "api_handshake_timeouts"), 0);
}

/// Issue 16, SYN cookies against the kernel: with `--syncookies always`
/// every connection to a tcpd listener is opened by a cookie. A kernel
/// client asking for MSS 1300 (TCP_MAXSEG before connect; one of the
/// values Linux's cookie MSS table holds — others are rounded down to one)
/// exchanges 1 MiB each way; tcpd sends with the client's MSS (less the
/// timestamps option)
/// and the window scale the client announced (as `ss` shows it on the
/// kernel side), recovered from the cookie's timestamp as Linux does.
#[test]
fn a_syn_cookie_connection_keeps_the_clients_mss_and_window_scale() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LEN: usize = 1 << 20;
    let Some(env) = Env::setup("cookie", &["--syncookies", "always"]) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    let client = rt
        .block_on(tcpd_client::Client::connect(env.daemon.socket()))
        .expect("session");
    let listener = rt
        .block_on(client.tcp_bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7800))))
        .expect("listen");
    let served = rt.spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let info = stream.tcp_info().await.expect("TCP_INFO");
        let mut got = vec![0u8; LEN];
        stream.read_exact(&mut got).await.expect("read 1 MiB");
        stream.write_all(&got).await.expect("echo 1 MiB");
        stream.flush().await.expect("flush");
        info
    });
    let data = tcpd_e2e::payload(LEN, 5);
    let sent = data.clone();
    let (echoed, kernel_wscale) = env.ns.within(move || {
        use nix::sys::socket::{connect, setsockopt, sockopt};
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            SockProtocol::Tcp,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::TcpMaxSeg, &1300).expect("TCP_MAXSEG");
        connect(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(TCPD_ADDR, 7800)),
        )
        .expect("connect through a SYN cookie");
        let mut stream = TcpStream::from(fd);
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        // The kernel's view: "wscale:SND,RCV", RCV being the scale it announced.
        let ss = Command::new("ss")
            .args(["-tinH", "dst", &TCPD_ADDR.to_string()])
            .output()
            .expect("ss");
        let ss = String::from_utf8_lossy(&ss.stdout).to_string();
        let rcv_wscale: u32 = ss
            .split_whitespace()
            .find_map(|w| w.strip_prefix("wscale:"))
            .and_then(|w| w.split(',').nth(1))
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no wscale in ss output: {ss}"));
        let writer = {
            let mut w = stream.try_clone().expect("clone");
            std::thread::spawn(move || w.write_all(&sent).expect("write 1 MiB"))
        };
        let mut back = vec![0u8; LEN];
        stream.read_exact(&mut back).expect("read the echo");
        writer.join().expect("writer");
        (back, rcv_wscale)
    });
    assert!(echoed == data, "the echo differs from what was sent");
    let info = rt.block_on(served).expect("server");
    let counters = rt.block_on(async {
        let mut admin = tcpd_e2e::admin_client(&env.daemon).await;
        stats(&mut admin).await.counters
    });
    eprintln!(
        "cookie connection: tcpd snd_mss {} snd_wscale {} (kernel announced {kernel_wscale}), \
         options {:#x}; syncookies_sent {} recv {}",
        info.snd_mss,
        info.snd_wscale,
        info.options,
        counter(&counters, "syncookies_sent"),
        counter(&counters, "syncookies_recv")
    );
    assert!(counter(&counters, "syncookies_sent") >= 1);
    assert!(counter(&counters, "syncookies_recv") >= 1);
    // MSS 1300 from the client, less the 12-byte timestamps option.
    assert_eq!(
        info.snd_mss,
        1300 - 12,
        "the client's MSS, through the cookie"
    );
    assert_eq!(info.options & 4, 4, "window scaling on");
    assert_eq!(
        info.snd_wscale, kernel_wscale,
        "the client's window scale, through the cookie's timestamp"
    );
    drop(client);
}

/// The fd channel's bounds (issue 16 item 7): connections to the API
/// socket's `.fd` path that send no hello. Past `--fd-max-unauthenticated`
/// a connection is closed at once; the waiting ones are closed after
/// `--fd-hello-timeout-ms`; both are counted, and the gauge of waiting
/// connections returns to 0.
///
/// "At once" is judged by the daemon's counters, not by how soon this
/// test looks: the two are counted as refused while the four still wait
/// and no hello timeout has fired yet.
#[test]
fn fd_channel_connections_without_a_hello_are_bounded() {
    use std::os::unix::net::UnixStream;
    let Some(env) = Env::setup(
        "fd-hello",
        &[
            "--fd-max-unauthenticated",
            "4",
            "--fd-hello-timeout-ms",
            "5000",
        ],
    ) else {
        return;
    };
    let rt = tcpd_e2e::runtime();
    let mut admin = rt.block_on(tcpd_e2e::admin_client(&env.daemon));
    let mut path = env.daemon.socket().as_os_str().to_owned();
    path.push(".fd");
    let held: Vec<UnixStream> = (0..6)
        .map(|_| UnixStream::connect(&path).expect("connect to the fd channel"))
        .collect();
    // Closed: read gives EOF (or an error); waiting: read times out.
    let closed_within = |s: &UnixStream, wait: Duration| {
        s.set_read_timeout(Some(wait)).expect("timeout");
        let mut b = [0u8; 1];
        let mut reader = s;
        !matches!(reader.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    // The acceptor takes them in order: four wait for their hello, the two
    // past the bound are refused, all before the first hello timeout (5 s
    // after the first accept: room for a loaded machine).
    let start = Instant::now();
    loop {
        let counters = rt.block_on(stats(&mut admin)).counters;
        let (waiting, refused, timed_out) = (
            counter(&counters, "api_fd_unauthenticated"),
            counter(&counters, "api_fd_refused_unauthenticated"),
            counter(&counters, "api_fd_hello_timeouts"),
        );
        assert_eq!(
            timed_out, 0,
            "a hello timed out while {waiting} waited and {refused} were refused: \
             the bound did not refuse at once"
        );
        if (waiting, refused) == (4, 2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{waiting} wait for their hello (not 4), {refused} refused (not 2)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = held
        .iter()
        .skip(4)
        .filter(|s| closed_within(s, Duration::from_secs(10)))
        .count();
    assert_eq!(refused, 2, "the two past the bound are closed");
    let timed_out = held
        .iter()
        .take(4)
        .filter(|s| closed_within(s, Duration::from_secs(20)))
        .count();
    assert_eq!(
        timed_out, 4,
        "the waiting ones are closed after the hello timeout"
    );
    let counters = rt.block_on(stats(&mut admin)).counters;
    eprintln!(
        "fd channel: refused {} timed out {} waiting {}",
        counter(&counters, "api_fd_refused_unauthenticated"),
        counter(&counters, "api_fd_hello_timeouts"),
        counter(&counters, "api_fd_unauthenticated")
    );
    assert_eq!(counter(&counters, "api_fd_refused_unauthenticated"), 2);
    assert_eq!(counter(&counters, "api_fd_hello_timeouts"), 4);
    assert_eq!(counter(&counters, "api_fd_unauthenticated"), 0);
}
