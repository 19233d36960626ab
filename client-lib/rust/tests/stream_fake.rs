//! The client against an in-process fake daemon (see `fake/mod.rs`): stream
//! framing, EOF, error frames, half-close, back-pressure, close on drop,
//! errno mapping, the low-level Socket calls and the blocking API.

mod fake;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::time::Duration;

use fake::{FAKE_IP, Fake, PIPE_CAPACITY};
use tcpd_client::{Client, OptionName, PollFlags, ReadFlags, SockOption, TcpStream, blocking};
use tcpd_proto::errno;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A deterministic, non-repeating-looking test payload.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// Waits up to 2 s for `cond`.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// A connected pair (client side, accepted side) through `client`.
async fn pair(client: &Client) -> (TcpStream, TcpStream) {
    let listener = client.tcp_bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (connected, accepted) =
        tokio::join!(client.tcp_connect((FAKE_IP, port)), listener.accept());
    let connected = connected.expect("connect");
    let (accepted, peer) = accepted.expect("accept");
    assert_eq!(peer, connected.local_addr().await.expect("local addr"));
    (connected, accepted)
}

#[tokio::test]
async fn bytes_round_trip_both_ways_through_the_stream_rpc() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    assert_eq!(a.peer_addr().expect("peer").ip(), &FAKE_IP);

    // 1 MiB + a ragged tail: several up frames and many 64 KiB pipe refills.
    let sent = pattern(1024 * 1024 + 4321);
    let to_send = sent.clone();
    let writer = async move {
        a.write_all(&to_send).await.expect("write");
        a.flush().await.expect("flush");
        a
    };
    let reader = async {
        let mut got = vec![0; sent.len()];
        b.read_exact(&mut got).await.expect("read");
        got
    };
    let (mut a, got) = tokio::join!(writer, reader);
    assert!(got == sent, "payload corrupted in transit");

    b.write_all(b"pong").await.expect("write back");
    let mut back = [0u8; 4];
    a.read_exact(&mut back).await.expect("read back");
    assert_eq!(&back, b"pong");

    // No unary Read/Write was used: every byte went as up data frames.
    let frames = fake.state.frames_of(a.handle());
    assert!(frames.iter().all(|f| f.starts_with("data:")), "{frames:?}");
    let total: usize = frames
        .iter()
        .filter_map(|f| f.strip_prefix("data:")?.parse::<usize>().ok())
        .sum();
    assert_eq!(total, sent.len());
    assert!(frames.iter().all(|f| f != "data:0"));
}

#[tokio::test]
async fn shutdown_queues_the_frame_after_the_data_and_the_peer_sees_eof() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    a.write_all(b"last words").await.expect("write");
    a.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.expect("read to EOF");
    assert_eq!(got, b"last words");
    // EOF is sticky, like read(2) returning 0 again.
    assert_eq!(b.read(&mut [0u8; 8]).await.expect("read after EOF"), 0);
    assert_eq!(
        fake.state.frames_of(a.handle()),
        vec!["data:10", "shutdown_write"]
    );
    // Writing after a half-close is EPIPE, as after shutdown(SHUT_WR).
    let err = a
        .write_all(b"more")
        .await
        .expect_err("write after shutdown");
    assert_eq!(err.raw_os_error(), Some(errno::EPIPE));
    // The other direction still works.
    b.write_all(b"reply").await.expect("half-open reply");
    let mut reply = [0u8; 5];
    a.read_exact(&mut reply).await.expect("read reply");
    assert_eq!(&reply, b"reply");
}

#[tokio::test]
async fn an_error_frame_becomes_its_errno_once_then_eof() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    a.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    b.read_exact(&mut one).await.expect("read");
    fake.state.inject_error(b.handle(), errno::ECONNRESET);
    let err = b.read(&mut one).await.expect_err("reset");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNRESET));
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(b.read(&mut one).await.expect("after the error"), 0);
}

#[tokio::test]
async fn a_reader_that_stops_stops_the_writer_then_lets_it_finish() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    let chunk = vec![7u8; 64 * 1024];
    let mut accepted = 0usize;
    // Write until a write has waited 300 ms: b never reads meanwhile.
    loop {
        match tokio::time::timeout(Duration::from_millis(300), a.write(&chunk)).await {
            Ok(Ok(n)) => accepted += n,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
        assert!(
            accepted < 64 * 1024 * 1024,
            "no back-pressure after {accepted} bytes"
        );
    }
    // What is in flight is bounded by the fake's pipe, the reader's HTTP/2
    // window (STREAM_WINDOW), the daemon's HTTP/2 receive window (hyper's
    // 1 MiB default), the client queue (16 frames of 64 KiB) and a frame in
    // each hand-off.
    let frame = 64 * 1024;
    let bound = PIPE_CAPACITY
        + tcpd_client::transport::STREAM_WINDOW as usize
        + 1024 * 1024
        + tcpd_client::UP_QUEUE_FRAMES * frame
        + 16 * frame;
    assert!(accepted >= PIPE_CAPACITY, "stalled too early: {accepted}");
    assert!(
        accepted <= bound,
        "{accepted} bytes buffered, more than {bound}"
    );
    // Draining the reader unblocks the writer and nothing is lost.
    let reader = async {
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = b.read(&mut buf).await.expect("read");
            if n == 0 {
                break total;
            }
            assert!(buf[..n].iter().all(|&x| x == 7));
            total += n;
        }
    };
    let writer = async {
        a.write_all(&chunk).await.expect("write after drain");
        a.shutdown().await.expect("shutdown");
    };
    let (total, ()) = tokio::join!(reader, writer);
    assert_eq!(total, accepted + chunk.len());
}

#[tokio::test]
async fn dropping_a_stream_delivers_queued_data_then_closes_the_handle() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    let handle = a.handle();
    a.write_all(&pattern(200_000)).await.expect("write");
    drop(a);
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.expect("read to EOF");
    assert!(got == pattern(200_000), "got {} bytes", got.len());
    assert!(
        eventually(|| !fake.state.is_open(handle)).await,
        "handle {handle} not closed"
    );
    assert!(fake.state.closed.lock().expect("lock").contains(&handle));
}

#[tokio::test]
async fn dropping_the_owned_write_half_half_closes() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (a, mut b) = pair(&client).await;
    let handle = a.handle();
    let (mut read_half, mut write_half) = a.into_split();
    write_half
        .write_all(b"from the write half")
        .await
        .expect("write");
    drop(write_half);
    let mut got = Vec::new();
    b.read_to_end(&mut got)
        .await
        .expect("EOF after the half's drop");
    assert_eq!(got, b"from the write half");
    // The read half keeps the socket open and still receives.
    assert!(fake.state.is_open(handle));
    b.write_all(b"still here").await.expect("write");
    let mut buf = [0u8; 10];
    read_half.read_exact(&mut buf).await.expect("read half");
    assert_eq!(&buf, b"still here");
    drop(read_half);
    assert!(eventually(|| !fake.state.is_open(handle)).await);
}

#[tokio::test]
async fn borrowed_halves_copy_concurrently() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (mut a, mut b) = pair(&client).await;
    // b echoes everything back.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = b.split();
        tokio::io::copy(&mut r, &mut w).await.expect("echo copy");
        w.shutdown().await.expect("echo shutdown");
    });
    let sent = pattern(300_000);
    let (mut r, mut w) = a.split();
    let write = async {
        w.write_all(&sent).await.expect("write");
        w.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(got == sent);
    echo.await.expect("echo task");
}

#[tokio::test]
async fn errnos_from_the_daemon_and_from_a_missing_daemon() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let err = client
        .tcp_connect("10.99.0.1:9")
        .await
        .expect_err("nobody listens on 9");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNREFUSED));
    assert_eq!(
        tcpd_client::describe_error(&err),
        "Connection refused (ECONNREFUSED)"
    );

    let listener = client.tcp_bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let err = client
        .tcp_bind((Ipv4Addr::UNSPECIFIED, port))
        .await
        .expect_err("same port");
    assert_eq!(err.raw_os_error(), Some(errno::EADDRINUSE));

    // No daemon at all: the Unix socket's own connect(2) error.
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("nope.sock");
    let err = Client::connect(&missing).await.expect_err("no socket file");
    assert_eq!(err.raw_os_error(), Some(2)); // ENOENT
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let err = Client::connect(&stale).await.expect_err("nobody accepts");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNREFUSED));

    // A handle from nowhere is EBADF.
    let ghost = tcpd_client::Socket::from_raw_handle(client.clone(), 999_999);
    let err = ghost.local_addr().await.expect_err("unknown handle");
    assert_eq!(err.raw_os_error(), Some(errno::EBADF));
    let _ = ghost.into_raw_handle();
}

#[tokio::test]
async fn the_low_level_socket_maps_each_call() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let listener = client.socket().await.expect("socket");
    listener
        .bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .expect("bind");
    listener.listen(16).await.expect("listen");
    let port = listener.local_addr().await.expect("getsockname").port();
    let err = listener.accept(true).await.expect_err("nothing to accept");
    assert_eq!(err.raw_os_error(), Some(errno::EAGAIN));

    let conn = client.socket().await.expect("socket");
    conn.connect(SocketAddrV4::new(FAKE_IP, port), false)
        .await
        .expect("connect");
    let (server, peer) = listener.accept(false).await.expect("accept");
    assert_eq!(conn.local_addr().await.expect("local"), peer);
    assert_eq!(conn.peer_addr().await.expect("peer").port(), port);

    assert_eq!(conn.write(b"hello", false).await.expect("write"), 5);
    let peeked = server
        .read(
            3,
            ReadFlags {
                peek: true,
                nonblocking: true,
            },
        )
        .await
        .expect("peek");
    assert_eq!(peeked, b"hel");
    let ready = client
        .poll(
            &[
                (server.handle(), PollFlags::IN | PollFlags::OUT),
                (424_242, PollFlags::IN),
            ],
            Some(Duration::ZERO),
        )
        .await
        .expect("poll");
    assert_eq!(ready, vec![PollFlags::IN | PollFlags::OUT, PollFlags::NVAL]);
    assert_eq!(
        server.read(100, ReadFlags::default()).await.expect("read"),
        b"hello"
    );
    let err = server
        .read(
            100,
            ReadFlags {
                nonblocking: true,
                peek: false,
            },
        )
        .await
        .expect_err("empty");
    assert_eq!(err.raw_os_error(), Some(errno::EAGAIN));
    conn.shutdown(Shutdown::Write).await.expect("shutdown");
    assert_eq!(
        server.read(100, ReadFlags::default()).await.expect("eof"),
        b""
    );

    conn.set_option(SockOption::NoDelay(true))
        .await
        .expect("set nodelay");
    assert_eq!(
        conn.get_option(OptionName::NoDelay).await.expect("get"),
        SockOption::NoDelay(true)
    );
    conn.set_option(SockOption::Linger(Some(0)))
        .await
        .expect("set linger");
    assert_eq!(
        conn.get_option(OptionName::Linger).await.expect("get"),
        SockOption::Linger(Some(0))
    );
    conn.set_option(SockOption::Congestion("newreno".into()))
        .await
        .expect("set cc");
    assert_eq!(
        conn.get_option(OptionName::Congestion).await.expect("get"),
        SockOption::Congestion("newreno".into())
    );
    assert_eq!(
        conn.get_option(OptionName::Error).await.expect("so_error"),
        SockOption::Error(0)
    );

    let handle = conn.handle();
    conn.close().await.expect("close");
    assert!(!fake.state.is_open(handle));
    // The other sockets close on drop, in the background.
    let (h1, h2) = (server.handle(), listener.handle());
    drop((server, listener));
    assert!(eventually(|| !fake.state.is_open(h1) && !fake.state.is_open(h2)).await);
}

#[tokio::test]
async fn stream_options_use_the_typed_calls() {
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let (a, _b) = pair(&client).await;
    a.set_nodelay(true).await.expect("nodelay");
    assert!(a.nodelay().await.expect("nodelay"));
    a.set_linger(Some(Duration::from_secs(3)))
        .await
        .expect("linger");
    assert_eq!(
        a.linger().await.expect("linger"),
        Some(Duration::from_secs(3))
    );
    a.set_keepalive(Some(Duration::from_secs(30)))
        .await
        .expect("keepalive");
    assert!(a.take_error().await.expect("so_error").is_none());
    // A get-only option refused by the daemon keeps its errno.
    let err = a
        .set_option(SockOption::Error(0))
        .await
        .expect_err("get only");
    assert_eq!(err.raw_os_error(), Some(errno::ENOPROTOOPT));
}

#[test]
fn the_blocking_api_works_without_a_runtime() {
    let fake = Fake::start();
    let client = blocking::connect_client(&fake.path).expect("session");
    let listener = blocking::TcpListener::bind_with(&client, "0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut stream, _peer) = listener.accept().expect("accept");
        let mut got = String::new();
        stream.read_to_string(&mut got).expect("read");
        stream
            .write_all(got.to_uppercase().as_bytes())
            .expect("write");
        stream.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut stream = blocking::TcpStream::connect_with(&client, (FAKE_IP, port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let err = stream.read(&mut [0u8; 4]).expect_err("nothing to read yet");
    assert_eq!(err.raw_os_error(), Some(errno::EAGAIN));
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    stream.set_read_timeout(None).expect("no timeout");
    stream.write_all(b"shout").expect("write");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert_eq!(reply, "SHOUT");
    server.join().expect("server thread");
}

#[tokio::test(flavor = "current_thread")]
async fn the_blocking_api_does_not_panic_inside_a_runtime() {
    let fake = Fake::start();
    // Called straight from async code: blocks this thread, must not panic.
    let client = blocking::connect_client(&fake.path).expect("session");
    let listener = blocking::TcpListener::bind_with(&client, "0.0.0.0:0").expect("bind");
    assert_eq!(listener.local_addr().expect("addr").ip(), &FAKE_IP);
    let err = blocking::TcpStream::connect_with(&client, "10.99.0.1:1").expect_err("refused");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNREFUSED));
}

#[test]
fn a_client_outlives_the_runtime_that_created_it() {
    let fake = Fake::start();
    let client = tokio::runtime::Runtime::new()
        .expect("rt")
        .block_on(Client::connect(&fake.path))
        .expect("session");
    // That runtime is gone; the session lives on the library's runtime.
    let listener = tokio::runtime::Runtime::new()
        .expect("rt")
        .block_on(client.tcp_bind("0.0.0.0:0"))
        .expect("bind on a second runtime");
    assert_ne!(listener.local_addr().expect("addr").port(), 0);
}

#[tokio::test]
async fn hundreds_of_open_streams_do_not_block_the_session() {
    // Each connected TcpStream keeps one Stream RPC open; HTTP/2's
    // concurrent-stream limit must not stall the session's other calls.
    let fake = Fake::start();
    let client = Client::connect(&fake.path).await.expect("session");
    let listener = client.tcp_bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut streams = Vec::new();
    for _ in 0..150 {
        let (a, b) = tokio::join!(client.tcp_connect((FAKE_IP, port)), listener.accept());
        let mut a = a.expect("connect");
        let (mut b, _) = b.expect("accept");
        // Touch both so their Stream RPCs are really open.
        a.write_all(b"!").await.expect("write");
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.expect("read");
        streams.push((a, b));
    }
    let check = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut a, mut b) = pair(&client).await;
        a.write_all(b"still moving").await.expect("write");
        let mut got = [0u8; 12];
        b.read_exact(&mut got).await.expect("read");
        got
    })
    .await
    .expect("session stalled with 300 open streams");
    assert_eq!(&check, b"still moving");
}
