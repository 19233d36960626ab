//! IPv6 end to end against the kernel: `ping -6` to tcpd, a dual-stack
//! listener on `[::]` (tcpd-client) accepting an IPv4 and an IPv6 kernel
//! client (the IPv4 one seen as IPv4-mapped, Linux's `bindv6only = 0`),
//! ECONNREFUSED, IPV6_V6ONLY, 64 MiB each way, Packet Too Big, capture /
//! trace / impairer and the flow label on the wire, `tcpctl ls -6`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream as KernelStream};
use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR6, TCPD_ADDR, TCPD_ADDR6, runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn ping6_gets_replies() {
    let Some(env) = Env::setup("ping6", &[]) else {
        return;
    };
    let out = env
        .ns
        .command("ping")
        .args(["-6", "-c", "3", "-i", "0.2", "-W", "2"])
        .arg(TCPD_ADDR6.to_string())
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping -6 failed: {text}");
    assert!(text.contains("3 received"), "{text}");
}

#[test]
fn dual_stack_listener_accepts_ipv4_and_ipv6_kernel_clients() {
    let Some(env) = Env::setup("dualstack", &[]) else {
        return;
    };
    let rt = runtime();
    let client = rt
        .block_on(tcpd_client::Client::connect(env.daemon.socket()))
        .expect("session");
    let listener = rt
        .block_on(client.tcp_bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))))
        .expect("bind [::]");
    let port = listener.local_addr().expect("local").port();
    for target in [
        SocketAddr::from((TCPD_ADDR, port)),
        SocketAddr::from((TCPD_ADDR6, port)),
    ] {
        let kernel = env.ns.spawn(move || {
            let mut s = KernelStream::connect_timeout(&target, Duration::from_secs(10))
                .expect("kernel connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(b"hello over ").expect("write");
            let mut reply = [0u8; 4];
            s.read_exact(&mut reply).expect("reply");
            (s.local_addr().expect("kernel local"), reply)
        });
        let (peer, got) = rt.block_on(async {
            let (mut stream, peer) =
                tokio::time::timeout(Duration::from_secs(10), listener.accept())
                    .await
                    .expect("accept in time")
                    .expect("accept");
            let mut buf = [0u8; 11];
            stream.read_exact(&mut buf).await.expect("read");
            stream.write_all(b"done").await.expect("write");
            stream.flush().await.expect("flush");
            (peer, buf)
        });
        let (kernel_local, reply) = kernel.join().expect("kernel thread");
        assert_eq!(&got, b"hello over ");
        assert_eq!(&reply, b"done");
        // The listener is IPv6: an IPv4 peer shows IPv4-mapped.
        assert!(peer.is_ipv6(), "{peer}");
        assert_eq!(peer.ip().to_canonical(), kernel_local.ip().to_canonical());
        assert_eq!(peer.port(), kernel_local.port());
        if target.is_ipv4() {
            assert_eq!(
                peer.ip(),
                IpAddr::V6(
                    kernel_local
                        .ip()
                        .to_canonical()
                        .to_string()
                        .parse::<std::net::Ipv4Addr>()
                        .expect("v4")
                        .to_ipv6_mapped()
                )
            );
        }
    }
}

#[test]
fn closed_ports_refuse_over_ipv6_both_ways() {
    let Some(env) = Env::setup("refused6", &[]) else {
        return;
    };
    let rt = runtime();
    let client = rt
        .block_on(tcpd_client::Client::connect(env.daemon.socket()))
        .expect("session");
    // tcpd to the kernel side's closed port: the kernel's RST.
    let host6 = SocketAddr::from((HOST_ADDR6, 9));
    let err = rt
        .block_on(client.tcp_connect(host6))
        .expect_err("nobody listens on port 9");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    // The kernel to tcpd's closed port: tcpd's RST (RFC 9293 §3.10.7.1).
    let target = SocketAddr::from((TCPD_ADDR6, 9));
    let kernel = env
        .ns
        .within(move || KernelStream::connect_timeout(&target, Duration::from_secs(10)));
    let err = kernel.expect_err("tcpd has no listener on 9");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn v6only_listener_refuses_ipv4_and_shares_the_port_with_an_ipv4_one() {
    use tcpd_proto::v2;
    let Some(env) = Env::setup("v6only", &[]) else {
        return;
    };
    let rt = runtime();
    let mut rpc = rt.block_on(async {
        v2::socket_service_client::SocketServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("session"),
        )
    });
    let v6only = v2::OptionSetting {
        option: v2::SocketOption::Ipv6V6only as i32,
        value: Some(v2::OptionValue {
            value: Some(v2::option_value::Value::Flag(true)),
        }),
    };
    let port = 7600;
    let listen = |options: Vec<v2::OptionSetting>, bind: SocketAddr, family: v2::AddressFamily| {
        v2::ListenRequest {
            options,
            bind: Some(bind.into()),
            backlog: 8,
            family: family as i32,
            ..Default::default()
        }
    };
    rt.block_on(rpc.listen(listen(
        vec![v6only],
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        v2::AddressFamily::Inet6,
    )))
    .expect("V6ONLY listener on [::]");
    // IPv4 on the same port: the V6ONLY socket does not cover it (Linux too).
    let refused4 = env.ns.within(move || {
        KernelStream::connect_timeout(
            &SocketAddr::from((TCPD_ADDR, port)),
            Duration::from_secs(10),
        )
    });
    assert_eq!(
        refused4.expect_err("IPv4 refused").kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    rt.block_on(rpc.listen(listen(
        Vec::new(),
        SocketAddr::from(([0, 0, 0, 0], port)),
        v2::AddressFamily::Inet,
    )))
    .expect("0.0.0.0 listener beside the V6ONLY one");
    for target in [
        SocketAddr::from((TCPD_ADDR6, port)),
        SocketAddr::from((TCPD_ADDR, port)),
    ] {
        env.ns
            .within(move || KernelStream::connect_timeout(&target, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
    }
}

#[test]
fn sixty_four_mib_each_way_over_ipv6() {
    const LEN: usize = 64 << 20;
    let Some(env) = Env::setup("bulk6", &[]) else {
        return;
    };
    let (listener, target) = tcpd_e2e::kernel_listener_at(&env.ns, HOST_ADDR6.into());
    let kernel = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("kernel accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let sender = std::thread::spawn(move || {
            writer
                .write_all(&tcpd_e2e::payload(LEN, 2))
                .expect("kernel write");
            writer
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        });
        let mut got = Vec::with_capacity(LEN);
        stream.read_to_end(&mut got).expect("kernel read");
        sender.join().expect("sender");
        tcpd_e2e::sha256_hex(&got)
    });
    let rt = runtime();
    let received = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let stream = client.tcp_connect(target).await.expect("connect over IPv6");
        let (mut reader, mut writer) = stream.into_split();
        let send = tokio::spawn(async move {
            writer
                .write_all(&tcpd_e2e::payload(LEN, 1))
                .await
                .expect("tcpd write");
            writer.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::with_capacity(LEN);
        tokio::time::timeout(Duration::from_secs(180), reader.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect("tcpd read");
        send.await.expect("sender");
        got
    });
    assert_eq!(
        tcpd_e2e::sha256_hex(&received),
        tcpd_e2e::sha256_hex(&tcpd_e2e::payload(LEN, 2)),
        "kernel to tcpd"
    );
    assert_eq!(
        kernel.join().expect("kernel"),
        tcpd_e2e::sha256_hex(&tcpd_e2e::payload(LEN, 1)),
        "tcpd to kernel"
    );
}

/// A route with MTU 1400 between tcpd and a kernel peer one hop away: the
/// kernel router answers tcpd's 1500-byte packets with ICMPv6 Packet Too
/// Big, tcpd lowers the connection's MSS (RFC 8201) and the transfer
/// completes (without it, every full-sized segment would be dropped).
#[test]
fn packet_too_big_from_the_path_shrinks_the_mss() {
    const LEN: usize = 4 << 20;
    let Some(env) = Env::setup("ptb", &[]) else {
        return;
    };
    let peer = tcpd_e2e::Netns::new("ptbpeer").expect("peer namespace");
    let (a, b) = (env.ns.name().to_string(), peer.name().to_string());
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip {args:?}");
    };
    ip(&[
        "-n", &a, "link", "add", "v6a", "type", "veth", "peer", "name", "v6b", "netns", &b,
    ]);
    ip(&[
        "-n",
        &a,
        "-6",
        "addr",
        "add",
        "fd00:78::1/64",
        "dev",
        "v6a",
        "nodad",
    ]);
    ip(&[
        "-n",
        &b,
        "-6",
        "addr",
        "add",
        "fd00:78::2/64",
        "dev",
        "v6b",
        "nodad",
    ]);
    ip(&["-n", &a, "link", "set", "v6a", "up"]);
    ip(&["-n", &b, "link", "set", "v6b", "up"]);
    // /proc/sys/net is the reading thread's namespace's (no procps needed).
    env.ns
        .within(|| std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", b"1"))
        .expect("forwarding on in tcpd's namespace");
    ip(&[
        "-n",
        &a,
        "-6",
        "route",
        "replace",
        "fd00:78::/64",
        "dev",
        "v6a",
        "mtu",
        "1400",
    ]);
    ip(&[
        "-n",
        &b,
        "-6",
        "route",
        "add",
        "fd00:77::/64",
        "via",
        "fd00:78::1",
    ]);
    let listener = peer
        .within(|| std::net::TcpListener::bind(("fd00:78::2", 0)))
        .expect("peer listener");
    let target = listener.local_addr().expect("addr");
    let kernel = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("read");
        tcpd_e2e::sha256_hex(&got)
    });
    let rt = runtime();
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        // The router's neighbour discovery on the veth it just brought up
        // can fail the first SYN (ICMPv6 address unreachable: EHOSTUNREACH,
        // seen once in CI); this test is about the path's MTU, so the
        // connect is retried until the path is there.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            match client.tcp_connect(target).await {
                Ok(stream) => break stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::HostUnreachable
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("connect: {e:?}"),
            }
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            stream
                .write_all(&tcpd_e2e::payload(LEN, 3))
                .await
                .expect("write");
            stream.shutdown().await.expect("shutdown");
        })
        .await
        .expect("the transfer completes: Packet Too Big lowered the MSS");
    });
    assert_eq!(
        kernel.join().expect("peer"),
        tcpd_e2e::sha256_hex(&tcpd_e2e::payload(LEN, 3))
    );
}

/// The impairer's drop counters (out, in) from `tcpctl stats --json`.
fn impair_drops(env: &Env) -> (u64, u64) {
    let output = env
        .daemon
        .tcpctl(&["stats", "--json"])
        .output()
        .expect("tcpctl stats");
    assert!(output.status.success(), "tcpctl stats failed");
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats JSON");
    let counter = |name: &str| {
        stats["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
    };
    (counter("impair_dropped_out"), counter("impair_dropped_in"))
}

/// What a `tcpctl capture` file holds, per pcapng interface (0 = the stack's
/// side of the impairer, 1 = the link's) and direction (0 out, 1 in).
#[derive(Debug, Default)]
struct Captured {
    ipv4: u64,
    ipv6: [[u64; 2]; 2],
    /// The flow labels of tcpd's outgoing TCP packets on the link, per
    /// local port (one per connection).
    labels: std::collections::BTreeMap<u16, std::collections::BTreeSet<u32>>,
}

fn read_capture(bytes: &[u8], peer_port: u16) -> Captured {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut captured = Captured::default();
    let mut reader = PcapNgReader::new(bytes).expect("pcapng section header");
    while let Some(block) = reader.next_block() {
        let Block::EnhancedPacket(epb) = block.expect("a valid pcapng block") else {
            continue;
        };
        // LINKTYPE_RAW: the packet starts with its IP header.
        let packet = &epb.data;
        match packet.first().map(|b| b >> 4) {
            Some(4) => captured.ipv4 += 1,
            Some(6) => {
                let inbound = epb
                    .options
                    .iter()
                    .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 3 == 1));
                let interface = epb.interface_id as usize;
                captured.ipv6[interface][usize::from(inbound)] += 1;
                // tcpd's own TCP packets carry no extension headers.
                let tcp = packet.len() >= 44 && packet[6] == 6;
                if interface == 1 && !inbound && tcp {
                    let label = u32::from_be_bytes([0, packet[1] & 0x0f, packet[2], packet[3]]);
                    let local = u16::from_be_bytes([packet[40], packet[41]]);
                    let remote = u16::from_be_bytes([packet[42], packet[43]]);
                    if remote == peer_port {
                        captured.labels.entry(local).or_default().insert(label);
                    }
                }
            }
            _ => panic!("neither IPv4 nor IPv6 in the capture: {packet:02x?}"),
        }
    }
    captured
}

/// Capture, trace and the impairer over IPv6: tcpd sends 1 MiB to the
/// kernel through `--impair loss=5%` while `tcpctl capture` and `tcpctl
/// trace` watch. The pcapng holds IPv6 packets only, the impairer's drops
/// (it works on IPv6 packets) are exactly the difference between the two
/// sides of the capture, the live ladder and the replayed one draw the
/// IPv6 connection, and on the wire every packet of a connection carries
/// one non-zero flow label, a different one per connection (RFC 6437 §3).
#[test]
fn capture_trace_and_impairer_over_ipv6_with_a_flow_label_per_connection() {
    use std::process::Stdio;
    use std::time::Instant;
    let Some(env) = Env::setup("cap6", &["--msl-ms", "250", "--impair", "loss=5%,seed=7"]) else {
        return;
    };
    let scratch = tcpd_e2e::TempDir::new("cap6").expect("scratch dir");
    let file = scratch.path().join("ipv6.pcapng");
    let (listener, target) = tcpd_e2e::kernel_listener_at(&env.ns, HOST_ADDR6.into());

    let (mut capture, _capture_err) = tcpd_e2e::spawn_subscribed(
        env.daemon.tcpctl(&["capture", "-w"]).arg(&file),
        "capturing",
    );
    let port = target.port().to_string();
    let (mut trace, _) = tcpd_e2e::spawn_subscribed(
        env.daemon
            .tcpctl(&["trace", "--next", "--port", &port, "--timeout", "90"])
            .stdout(Stdio::piped()),
        "tracing",
    );
    let mut trace_out = trace.stdout.take().expect("stdout");
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        trace_out.read_to_string(&mut text).expect("trace output");
        text
    });
    let (out0, in0) = impair_drops(&env);

    // Two connections: 1 MiB, then 1 byte.
    let client = tcpd_client::blocking::connect_client(env.daemon.socket()).expect("session");
    for (len, seed) in [(1usize << 20, 21u64), (1, 22)] {
        let mut stream =
            tcpd_client::blocking::TcpStream::connect_with(&client, target).expect("connect");
        let (mut kernel, _) = listener.accept().expect("kernel accept");
        let reader = std::thread::spawn(move || {
            kernel
                .set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            let mut got = Vec::new();
            kernel.read_to_end(&mut got).expect("kernel reads to EOF");
            got
        });
        let sent = tcpd_e2e::payload(len, seed);
        stream.write_all(&sent).expect("tcpd write");
        stream.shutdown(std::net::Shutdown::Write).expect("FIN");
        let got = reader.join().expect("reader");
        assert_eq!(tcpd_e2e::sha256_hex(&got), tcpd_e2e::sha256_hex(&sent));
    }

    // The trace ends by itself once tcpd's side of the first is CLOSED.
    let deadline = Instant::now() + Duration::from_secs(60);
    while trace.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = trace.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ladder = collector.join().expect("collector");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let rows: Vec<String> = ladder.lines().map(squash).collect();
    assert!(
        rows.iter()
            .any(|r| r.contains(&format!("tcpd [{TCPD_ADDR6}]:"))
                && r.contains(&format!("peer {target}"))),
        "no IPv6 header in the ladder:\n{ladder}"
    );
    assert!(
        rows.iter().any(|r| r.contains("<SEQ=0><CTL=SYN>")),
        "no SYN row:\n{ladder}"
    );

    // Both connections finish closing (FINs and ACKs retransmitted
    // through the loss, TIME-WAIT 0.5 s) before the counters are read: no
    // packet after them. (A fixed 1.5 s was too short for a loaded machine.)
    assert!(
        tcpd_e2e::wait_connections_gone(
            &env.daemon,
            &env.ns,
            target.port(),
            Duration::from_secs(60)
        ),
        "the connections never finished closing"
    );
    let (out1, in1) = impair_drops(&env);
    // tcpctl may still be writing the last chunks: stop it once the file
    // holds what the counters account for (or after a minute, to fail
    // below with the counts).
    tcpd_e2e::wait_capture_written(&file, Duration::from_secs(60), |whole| {
        let [stack, link] = read_capture(whole, target.port()).ipv6;
        stack[0].saturating_sub(link[0]) == out1 - out0
            && link[1].saturating_sub(stack[1]) == in1 - in0
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(capture.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT to tcpctl capture");
    assert!(capture.wait().expect("tcpctl capture").success());

    let bytes = std::fs::read(&file).expect("capture file");
    let captured = read_capture(&bytes, target.port());
    let (dropped_out, dropped_in) = (out1 - out0, in1 - in0);
    eprintln!("{captured:?}; impairer dropped {dropped_out} out, {dropped_in} in");
    assert_eq!(captured.ipv4, 0, "an IPv6-only exchange");
    assert!(
        dropped_out > 0 && dropped_in > 0,
        "5 % loss dropped IPv6 packets"
    );
    let [stack, link] = captured.ipv6;
    assert_eq!(
        stack[0] - link[0],
        dropped_out,
        "outgoing: stack - drops = link"
    );
    assert_eq!(
        link[1] - stack[1],
        dropped_in,
        "incoming: link - drops = stack"
    );
    // RFC 6437 §3: one label per flow, non-zero, differing between flows.
    assert_eq!(captured.labels.len(), 2, "{:?}", captured.labels);
    let labels: Vec<u32> = captured
        .labels
        .values()
        .map(|set| {
            assert_eq!(set.len(), 1, "one flow label per connection: {set:x?}");
            set.first().copied().expect("a label")
        })
        .collect();
    assert!(labels.iter().all(|&l| l != 0), "{labels:x?}");
    assert_ne!(labels[0], labels[1], "each connection its own label");

    // The capture replays as a ladder of the IPv6 connections.
    let replayed = env.daemon.replay_capture(&file);
    assert!(
        replayed.contains(&format!("tcpd [{TCPD_ADDR6}]:")) && replayed.contains("SYN-SENT"),
        "{}",
        &replayed[..replayed.len().min(2000)]
    );
}

/// `tcpctl ls -6` lists the IPv6 connection as `[addr]:port` (as `ss`
/// does) and not the IPv4 one; `-4` the other way round; `--json` carries
/// the same bracketed text.
#[test]
fn tcpctl_ls_filters_by_family_and_brackets_ipv6() {
    let Some(env) = Env::setup("ls6", &[]) else {
        return;
    };
    let (listener6, target6) = tcpd_e2e::kernel_listener_at(&env.ns, HOST_ADDR6.into());
    let (listener4, target4) = tcpd_e2e::kernel_listener(&env.ns);
    let client = tcpd_client::blocking::connect_client(env.daemon.socket()).expect("session");
    let s6 = tcpd_client::blocking::TcpStream::connect_with(&client, target6).expect("connect6");
    let s4 = tcpd_client::blocking::TcpStream::connect_with(&client, target4).expect("connect4");
    let _k6 = listener6.accept().expect("accept6");
    let _k4 = listener4.accept().expect("accept4");
    let local6 = s6.local_addr().expect("local6");
    let local4 = s4.local_addr().expect("local4");
    assert!(local6.is_ipv6() && local4.is_ipv4());
    let ls = |args: &[&str]| {
        let out = env.daemon.tcpctl(args).output().expect("tcpctl ls");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v6 = ls(&["ls", "-6"]);
    let (l6, r6) = (
        format!("[{}]:{}", local6.ip(), local6.port()),
        target6.to_string(),
    );
    assert!(v6.contains(&l6) && v6.contains(&r6), "{v6}");
    assert!(!v6.contains(&local4.to_string()), "{v6}");
    let v4 = ls(&["ls", "-4"]);
    assert!(v4.contains(&local4.to_string()), "{v4}");
    assert!(!v4.contains(&l6), "{v4}");
    let all = ls(&["ls"]);
    assert!(
        all.contains(&l6) && all.contains(&local4.to_string()),
        "{all}"
    );
    let json: serde_json::Value = serde_json::from_str(&ls(&["ls", "-6", "--json"])).expect("JSON");
    let rows = json.as_array().expect("array");
    assert!(
        rows.iter()
            .any(|r| r["local"] == l6.as_str() && r["remote"] == r6.as_str()),
        "{json}"
    );
    assert!(
        rows.iter()
            .all(|r| r["local"].as_str().is_some_and(|l| l.starts_with('[')))
    );
}
