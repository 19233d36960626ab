//! IPv6 end to end against the kernel: `ping -6` to tcpd, and a dual-stack
//! listener on `[::]` (tcpd-client) accepting an IPv4 and an IPv6 kernel
//! client, the IPv4 one seen as IPv4-mapped (Linux's `bindv6only = 0`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream as KernelStream};
use std::time::Duration;

use tcpd_e2e::{Env, TCPD_ADDR, runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// tcpd's IPv6 address with the daemon's defaults.
const TCPD_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);

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
    let host6 = SocketAddr::from((Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1), 9));
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
    let host6 = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
    let listener = env
        .ns
        .within(move || std::net::TcpListener::bind((host6, 0)))
        .expect("kernel listener on the IPv6 host side");
    let target = listener.local_addr().expect("addr");
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
        let mut stream = client.tcp_connect(target).await.expect("connect");
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
