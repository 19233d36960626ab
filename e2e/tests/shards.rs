//! tcpd with two shards (`--shards 2`): the TUN opened with two queues
//! (IFF_MULTI_QUEUE), a stack and a driver per queue, the kernel choosing
//! the queue of every packet it sends (daemon/DESIGN-multicore.md).
//!
//! Many connections both ways at once — tcpd-side connects to a kernel echo
//! server (each leaves from the shard its socket was made in, and the
//! kernel answers on that queue) and kernel connects to a tcpd listener
//! (SYNs arrive on whichever queue the kernel's hash picks; every shard has
//! the listener and accept takes from both) — with every byte checked,
//! both shards seen in the handles, and `tcpctl ls` listing every socket of
//! both shards while they are open.
//!
//! Needs root (namespaces, TUN): skips otherwise, fails under `CI=true`.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use serde_json::Value;
use tcpd_e2e::{Env, TCPD_ADDR, kernel_listener, payload, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections each way.
const CONNECTIONS: usize = 24;
/// Bytes each connection carries each way.
const BYTES: usize = 192 * 1024;
/// Bound on every wait (a loaded debug build still takes a few seconds).
const LIMIT: Duration = Duration::from_secs(60);

/// The shard a handle names (daemon/server/src/shards.rs: bits 48 and up).
fn shard(handle: u64) -> u64 {
    handle >> 48
}

fn tcpctl_rows(env: &Env) -> Vec<Value> {
    let output = env
        .daemon
        .tcpctl(&["ls", "--json"])
        .output()
        .expect("run tcpctl");
    assert!(
        output.status.success(),
        "tcpctl ls: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Value = serde_json::from_slice(&output.stdout).expect("tcpctl printed JSON");
    rows.as_array().expect("an array").clone()
}

#[test]
fn two_shards_carry_many_connections_both_ways_and_list_them_all() {
    let Some(env) = Env::setup("shards", &["--shards", "2"]) else {
        return;
    };
    // The TUN has two queues.
    let queues = env
        .ns
        .command("ls")
        .arg(format!("/sys/class/net/{}/queues", tcpd_e2e::TUN_NAME))
        .output()
        .expect("ls queues");
    let queues = String::from_utf8_lossy(&queues.stdout).to_string();
    assert!(
        queues.contains("rx-0") && queues.contains("rx-1") && !queues.contains("rx-2"),
        "queues: {queues}"
    );

    // The kernel's echo server: each connection's bytes come back.
    let (echo, echo_addr) = kernel_listener(&env.ns);
    let (release_echo, hold_echo) = std::sync::mpsc::channel::<()>();
    let echo_server = env.ns.spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..CONNECTIONS {
            let (mut s, _) = echo.accept().expect("echo accept");
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            workers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; BYTES];
                s.read_exact(&mut buf).expect("echo read");
                s.write_all(&buf).expect("echo write");
                s
            }));
        }
        let open: Vec<std::net::TcpStream> = workers
            .into_iter()
            .map(|w| w.join().expect("echo worker"))
            .collect();
        // Keep them open until the listing is done.
        let _ = hold_echo.recv_timeout(LIMIT);
        drop(open);
    });

    let rt = tcpd_e2e::runtime();
    let socket = env.daemon.socket().to_path_buf();
    let client = rt
        .block_on(tcpd_client::Client::connect(&socket))
        .expect("session");
    let listener = rt
        .block_on(client.tcp_bind(SocketAddrV4::new(TCPD_ADDR, 0)))
        .expect("tcpd listener");
    let port = listener.local_addr().expect("address").port();

    // tcpd-side connects: payload out, echo back, both checked.
    let outbound = rt.spawn({
        let client = client.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..CONNECTIONS {
                let client = client.clone();
                set.spawn(async move {
                    let mut s = client.tcp_connect(echo_addr).await.expect("connect");
                    let data = payload(BYTES, i as u64);
                    let (mut r, mut w) = s.split();
                    let mut back = vec![0u8; BYTES];
                    let (wrote, read) = tokio::join!(w.write_all(&data), r.read_exact(&mut back));
                    wrote.expect("write");
                    read.expect("read the echo");
                    assert_eq!(sha256_hex(&back), sha256_hex(&data), "echo {i}");
                    s
                });
            }
            let mut streams = Vec::new();
            while let Some(s) = set.join_next().await {
                streams.push(s.expect("outbound connection"));
            }
            streams
        }
    });

    // Kernel-side connects to the tcpd listener; tcpd echoes.
    let inbound_clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            env.ns.spawn(move || {
                let mut s =
                    TcpStream::connect(SocketAddrV4::new(TCPD_ADDR, port)).expect("connect");
                s.set_read_timeout(Some(LIMIT)).expect("timeout");
                let data = payload(BYTES, 1000 + i as u64);
                s.write_all(&data).expect("write");
                let mut back = vec![0u8; BYTES];
                s.read_exact(&mut back).expect("read the echo");
                assert_eq!(sha256_hex(&back), sha256_hex(&data), "inbound {i}");
                s
            })
        })
        .collect();
    let accepted = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let (mut s, _) = tokio::time::timeout(LIMIT, listener.accept())
                .await
                .expect("accepted in time")
                .expect("accept");
            set.spawn(async move {
                let mut buf = vec![0u8; BYTES];
                s.read_exact(&mut buf).await.expect("read");
                s.write_all(&buf).await.expect("echo");
                s
            });
        }
        let mut streams = Vec::new();
        while let Some(s) = set.join_next().await {
            streams.push(s.expect("inbound connection"));
        }
        streams
    });
    let outbound = match rt.block_on(async { tokio::time::timeout(LIMIT, outbound).await }) {
        Ok(done) => done.expect("outbound task"),
        Err(_) => panic!(
            "outbound connections stalled; tcpctl ls: {:#?}\nstats: {}\ndaemon log:\n{}",
            tcpctl_rows(&env),
            String::from_utf8_lossy(
                &env.daemon
                    .tcpctl(&["stats"])
                    .output()
                    .expect("tcpctl stats")
                    .stdout
            ),
            env.daemon.log_text()
        ),
    };
    let inbound: Vec<TcpStream> = inbound_clients
        .into_iter()
        .map(|c| c.join().expect("kernel client"))
        .collect();

    // Both shards carry connections of each kind.
    let shards_of = |streams: &[tcpd_client::TcpStream]| {
        let mut s: Vec<u64> = streams.iter().map(|s| shard(s.handle())).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    assert_eq!(shards_of(&outbound), [0, 1], "connects from both shards");
    assert_eq!(shards_of(&accepted), [0, 1], "accepts from both shards");

    // tcpctl lists every socket of both shards.
    let rows = tcpctl_rows(&env);
    let local = format!("{TCPD_ADDR}:{port}");
    let echo_at = echo_addr.to_string();
    let established = |r: &&Value| r["state"] == "ESTABLISHED";
    let to_echo = rows
        .iter()
        .filter(established)
        .filter(|r| r["remote"] == echo_at)
        .count();
    let to_listener = rows
        .iter()
        .filter(established)
        .filter(|r| r["local"] == local)
        .count();
    let listening = rows
        .iter()
        .filter(|r| r["state"] == "LISTEN" && r["local"] == local)
        .count();
    assert_eq!(to_echo, CONNECTIONS, "{rows:?}");
    assert_eq!(to_listener, CONNECTIONS, "{rows:?}");
    assert_eq!(listening, 2, "one listener per shard: {rows:?}");
    let listed_shards: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter_map(|r| r["handle"].as_u64())
        .map(shard)
        .collect();
    assert_eq!(listed_shards.into_iter().collect::<Vec<_>>(), [0, 1]);

    let _ = release_echo.send(());
    echo_server.join().expect("echo server");
    drop((inbound, outbound, accepted, listener));
    // Closing the listener closes it in both shards.
    assert!(
        tcpd_e2e::wait_until(Duration::from_secs(15), || {
            !tcpctl_rows(&env)
                .iter()
                .any(|r| r["state"] == "LISTEN" && r["local"] == local)
        }),
        "the listener is gone from both shards"
    );
}
