//! Dead peers detected as Linux detects them (issue 10): a connection to
//! the kernel whose packets stop (an nftables netdev rule in the namespace
//! drops everything on the TUN, both ways) fails with ETIMEDOUT
//! - after TCP_USER_TIMEOUT when data is outstanding (RFC 5482; Linux
//!   gives up at the first retransmission timeout past it, and tcpd clamps
//!   that timeout to it, as Linux does), and
//! - after TCP_KEEPIDLE + TCP_KEEPCNT × TCP_KEEPINTVL when the connection
//!   is idle with SO_KEEPALIVE on (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6,
//!   Linux's tcp_keepalive_timer), while probes the kernel answers keep
//!   it alive.
//!
//! Short values (1.5 s, 1 s) keep the tests quick; the bounds allow a
//! loaded machine a few seconds of slack on the late side only.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use tcpd_client::{Client, ReadFlags, SockOption, Socket};
use tcpd_e2e::{Env, in_ci, kernel_listener, runtime, which};
use tcpd_proto::errno;

/// Drops every packet on the TUN, both directions, from now on.
fn drop_everything_on_the_tun(env: &Env) {
    let rules = "table netdev tcpd_dead {
        chain e { type filter hook egress device \"tcpd0\" priority 0; drop; }
        chain i { type filter hook ingress device \"tcpd0\" priority 0; drop; }
    }";
    env.ns.nft(rules);
}

/// The environment, or None when the test must skip (no privileges, or no
/// nft outside CI).
fn setup(tag: &str) -> Option<Env> {
    if which("nft").is_none() {
        assert!(!in_ci(), "nft (nftables) is required under CI");
        eprintln!("SKIPPED {tag}: nft is not installed");
        return None;
    }
    Env::setup(tag, &[])
}

/// A kernel peer that answers each "ping" with "pong" and keeps the
/// connection open (it never closes it: the test cuts the path instead).
/// Its address.
fn pong_peer(env: &Env) -> SocketAddrV4 {
    let (listener, addr) = kernel_listener(&env.ns);
    serve_pong(listener);
    addr
}

fn serve_pong(listener: TcpListener) {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        // Until the peer's reset, its FIN or the read timeout.
        let mut ping = [0u8; 4];
        while s.read_exact(&mut ping).is_ok() {
            assert_eq!(&ping, b"ping");
            s.write_all(b"pong").expect("pong");
        }
    });
}

/// Sends "ping" and reads "pong": the path works.
async fn ping(socket: &Socket) {
    socket.write(b"ping", false).await.expect("ping");
    let mut got = Vec::new();
    while got.len() < 4 {
        let chunk = socket
            .read(4 - got.len(), ReadFlags::default())
            .await
            .expect("pong");
        assert!(!chunk.is_empty(), "EOF before pong");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"pong");
}

/// A socket on a new session with `before` set, connected to `addr` (the
/// [`pong_peer`]), then `after` set, and the path checked with a ping.
/// The session must live as long as the socket.
async fn connected_and_pinged(
    env: &Env,
    addr: SocketAddrV4,
    before: &[SockOption],
    after: &[SockOption],
) -> (Client, Socket) {
    let client = Client::connect(env.daemon.socket()).await.expect("client");
    let socket = Socket::new(&client).await.expect("socket");
    for option in before {
        socket
            .set_option(option.clone())
            .await
            .expect("option before connect");
    }
    socket.connect(addr, false).await.expect("connect");
    for option in after {
        socket
            .set_option(option.clone())
            .await
            .expect("option after connect");
    }
    ping(&socket).await;
    (client, socket)
}

/// A blocking read that must fail with ETIMEDOUT: how long after `since`
/// it did. `since` is a moment the test knows the timer had not started
/// yet, so the time is never short however late this thread runs (timed
/// from the read instead, a thread woken late after the write measured
/// less than the timeout).
async fn read_times_out(socket: &Socket, since: Instant) -> Duration {
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        socket.read(1, ReadFlags::default()),
    )
    .await
    .expect("the connection must fail within 30 s");
    let took = since.elapsed();
    eprintln!("ETIMEDOUT after {took:?}");
    let err = result.expect_err("the dead peer sent nothing");
    assert_eq!(err.raw_os_error(), Some(errno::ETIMEDOUT), "{err}");
    took
}

/// TCP_USER_TIMEOUT 1500 ms: data sent into a dead path is retransmitted
/// (RTO 200 ms, 400 ms, 800 ms...) until 1.5 s after it first went out,
/// then the connection fails with ETIMEDOUT — not after the ~15 minutes of
/// tcp_retries2.
#[test]
fn user_timeout_fails_a_connection_whose_data_goes_unacknowledged() {
    let Some(env) = setup("to-uto") else {
        return;
    };
    let addr = pong_peer(&env);
    runtime().block_on(async {
        let (_client, socket) =
            connected_and_pinged(&env, addr, &[SockOption::UserTimeout(1500)], &[]).await;
        drop_everything_on_the_tun(&env);
        // The user timeout counts from when the data first goes out, which
        // is after this write is asked for.
        let written = Instant::now();
        socket.write(b"lost", false).await.expect("queued");
        let took = read_times_out(&socket, written).await;
        assert!(
            took >= Duration::from_millis(1450) && took < Duration::from_secs(6),
            "ETIMEDOUT after {took:?}, expected about 1.5 s"
        );
    });
}

/// SO_KEEPALIVE with TCP_KEEPIDLE 1 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 2:
/// idle for 2.5 s (longer than idle + count × interval) while the kernel
/// answers the probes, the connection lives; once the path is cut, the
/// idle connection fails with ETIMEDOUT after about 1 + 2 × 1 = 3 s.
#[test]
fn keepalive_fails_an_idle_connection_to_a_dead_peer_and_spares_a_live_one() {
    let Some(env) = setup("to-ka") else {
        return;
    };
    let addr = pong_peer(&env);
    runtime().block_on(async {
        let keepalive = [
            SockOption::KeepIdle(1),
            SockOption::KeepInterval(1),
            SockOption::KeepCount(2),
            SockOption::KeepAlive(true),
        ];
        let (_client, socket) = connected_and_pinged(&env, addr, &[], &keepalive).await;
        // Probes are sent and answered: still alive after 2.5 s idle.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The idle clock restarts when the pong arrives, which is before
        // the ping returns (by the time the answer takes to reach this
        // thread: the lower bound leaves 500 ms for it); the path is cut
        // after that, however long `nft` takes on a loaded machine.
        ping(&socket).await;
        let last_pong = Instant::now();
        drop_everything_on_the_tun(&env);
        let took = read_times_out(&socket, last_pong).await;
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_secs(9),
            "ETIMEDOUT after {took:?}, expected about 3 s"
        );
    });
}
