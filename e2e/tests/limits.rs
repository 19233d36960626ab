//! End-to-end tests of tcpd's resource limits (issue 16), against the
//! Linux kernel in a test namespace:
//! - a SYN flood with spoofed sources (crafted on a raw socket inside the
//!   namespace, bounded in count and time) while the kernel connects for
//!   real: SYN cookies keep the listener open, and the SYN queue drains
//!   after the SYN,ACK retries.
//!
//! Without root these tests print why and pass as skipped (they fail under
//! `CI=true`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};
use tcpd_e2e::{Daemon, Netns, TCPD_ADDR, require_privileges};
use tcpd_proto::v1;
use tcpd_proto::v1::admin_client::AdminClient;
use tcpd_stack::SeqNum;
use tcpd_stack::wire::{IpProtocol, Ipv4Repr, TcpFlags, TcpOptions, TcpRepr};
use tonic::transport::Channel;

/// A namespace with a running daemon; the daemon stops before the namespace goes.
struct Env {
    daemon: Daemon,
    ns: Netns,
}

fn setup(tag: &str, extra: &[&str]) -> Option<Env> {
    if !require_privileges(tag) {
        return None;
    }
    let ns = Netns::new(tag).expect("create the test namespace");
    let daemon = Daemon::start(&ns, extra).expect("start tcpd");
    Some(Env { daemon, ns })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn admin(daemon: &Daemon) -> AdminClient<Channel> {
    AdminClient::new(
        tcpd_client::connect_channel(daemon.socket())
            .await
            .expect("admin session"),
    )
}

async fn stats(admin: &mut AdminClient<Channel>) -> v1::StatsReply {
    admin
        .stats(v1::StatsRequest {})
        .await
        .expect("Stats")
        .into_inner()
}

fn counter(list: &[v1::Counter], name: &str) -> u64 {
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

/// One legitimate kernel connection: connect, "hi", expect "ok". The
/// connect time, or `None` on failure (5 s limits on each step).
fn legit_connect(to: SocketAddrV4) -> Option<Duration> {
    let start = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(5)).ok()?;
    let connected = start.elapsed();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"hi").ok()?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).ok()?;
    (&reply == b"ok").then_some(connected)
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

/// Issue 16's flood: 100 000 spoofed SYNs at ≥ 20 000/s against a listener
/// (backlog 1024, the default SYN queue of 2048) while the kernel connects
/// for real. Before SYN cookies this gave 0/35 connects; now ≥ 99 % succeed
/// with a median connect time at most 10× the unflooded one, and the SYN
/// queue drains within the SYN,ACK retry time once the flood stops (2
/// retries here: 1 + 2 + 4 s; the stack's tests check Linux's 5 = 63 s).
#[test]
fn syn_flood_leaves_the_listener_open() {
    let Some(env) = setup("syn-flood", &["--synack-retries", "2"]) else {
        return;
    };
    let rt = runtime();
    let port = 8080;
    let target = SocketAddrV4::new(TCPD_ADDR, port);
    let _server = rt.block_on(echo_server(&env.daemon, port, 1024));
    let mut admin = rt.block_on(admin(&env.daemon));

    // Unflooded connect time.
    let baseline: Vec<Duration> = env.ns.within(move || {
        (0..40)
            .map(|_| legit_connect(target).expect("unflooded connect"))
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
    let legit = {
        let flooding = flooding.clone();
        env.ns.spawn(move || {
            let mut results = Vec::new();
            // Let the flood fill the SYN queue first.
            std::thread::sleep(Duration::from_millis(300));
            while flooding.load(Ordering::SeqCst) || results.len() < 35 {
                results.push(legit_connect(target));
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        })
    };
    let report = flood.join().expect("flood thread");
    let flood_ended = Instant::now();
    let results = legit.join().expect("legit thread");
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
    assert!(report.sent >= 99_000, "the flood was sent: {report:?}");
    assert!(rate >= 20_000.0, "flood rate {rate:.0}/s below 20 000/s");
    assert!(results.len() >= 35);
    assert!(
        ok.len() * 100 >= results.len() * 99,
        "{} of {} legitimate connects succeeded during the flood",
        ok.len(),
        results.len()
    );
    assert!(
        flooded <= unflooded * 10 + Duration::from_millis(1),
        "median connect {flooded:?} under flood vs {unflooded:?} unflooded"
    );
    assert!(counter(&during.counters, "syncookies_sent") > 50_000);
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
        .within(move || legit_connect(target))
        .expect("connect after the flood");
}
