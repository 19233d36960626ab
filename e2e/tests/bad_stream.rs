//! Bad input on the v2 socket API, through a raw tonic client: frames out of
//! order, data after close, floods of pipelined socket creations and of
//! pipelined Stream opens past the session quota. Each gets a clear errno, the daemon never panics, and
//! nothing leaks: the daemon's `api_sockets`/`api_blocked_calls` counters
//! return to zero once the session ends.

use bytes::Bytes;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use tcpd_e2e::{Env, HOST_ADDR, runtime};
use tcpd_proto::errno;
use tcpd_proto::v2;
use tcpd_proto::v2::admin_service_client::AdminServiceClient;
use tcpd_proto::v2::socket_service_client::SocketServiceClient;
use tcpd_proto::v2::{stream_open, stream_request, stream_response};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn errno_of(status: &tonic::Status) -> i32 {
    tcpd_proto::status_errno(status).unwrap_or_else(|| panic!("no errno in {status:?}"))
}

fn frame(frame: stream_request::Frame) -> v2::StreamRequest {
    v2::StreamRequest { frame: Some(frame) }
}

/// The first frame of a Stream that connects to the kernel's `port`.
fn open_connect(port: u16) -> v2::StreamRequest {
    frame(stream_request::Frame::Open(v2::StreamOpen {
        how: Some(stream_open::How::Connect(v2::StreamConnect {
            remote: Some(SocketAddrV4::new(HOST_ADDR, port).into()),
            ..Default::default()
        })),
    }))
}

/// Runs a Stream RPC over `frames`; the daemon's frames and final status.
async fn run_stream(
    rpc: &mut SocketServiceClient<Channel>,
    frames: Vec<v2::StreamRequest>,
) -> (Vec<stream_response::Frame>, Result<(), tonic::Status>) {
    let response = match rpc.stream(tokio_stream::iter(frames)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut got = Vec::new();
    let mut frames = response;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), frames.next()).await {
            Ok(Some(Ok(v2::StreamResponse { frame: Some(f) }))) => got.push(f),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(status))) => return (got, Err(status)),
            Ok(None) => return (got, Ok(())),
            Err(_) => panic!("the stream did not end within 10 s: {got:?}"),
        }
    }
}

async fn counter(admin: &mut AdminServiceClient<Channel>, name: &str) -> u64 {
    tcpd_e2e::stats_counters(admin)
        .await
        .get(name)
        .copied()
        .unwrap_or(0)
}

/// Waits until the daemon holds no API socket and no blocked call.
async fn settles_to_zero(admin: &mut AdminServiceClient<Channel>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sockets = counter(admin, "api_sockets").await;
        let blocked = counter(admin, "api_blocked_calls").await;
        if sockets == 0 && blocked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {sockets} sockets, {blocked} blocked calls remain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session whose socket is kept (a copy) so the test can end it as the
/// kernel does when a process exits: no RST_STREAM per Stream, just the end
/// of the connection (`shutdown` of the copy).
async fn ending_session(path: &std::path::Path) -> (Channel, std::os::unix::net::UnixStream) {
    let path = path.to_path_buf();
    let (copy_tx, copy_rx) = std::sync::mpsc::channel();
    let channel = tonic::transport::Endpoint::try_from("http://tcpd.invalid")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            let copy_tx = copy_tx.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?.into_std()?;
                let _ = copy_tx.send(s.try_clone()?);
                let s = tokio::net::UnixStream::from_std(s)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("session");
    (channel, copy_rx.recv().expect("the socket"))
}

/// The down side's order at the peer's FIN: unasked, the count of bytes
/// queued (`flushed`) goes right before `eof`, so a client whose `flush`
/// is still on its way learns that its data was queued before the FIN (the
/// peer answered it). Without it hyper, which polls reads before flushes,
/// saw EOF while its response looked unflushed and reported "connection
/// closed before message completed".
#[test]
fn the_count_of_queued_bytes_goes_before_eof() {
    let Some(env) = Env::setup("stream-eof-count", &[]) else {
        return;
    };
    let listener = env
        .ns
        .within(|| std::net::TcpListener::bind((HOST_ADDR, 7505)).expect("kernel listen"));
    // The peer reads the request, then sends its FIN (as a client that got
    // its whole answer closes).
    let peer = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().expect("accept");
        let mut request = [0u8; 5];
        s.read_exact(&mut request).expect("request");
        s.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        request
    });
    runtime().block_on(async {
        let channel = tcpd_client::connect_channel(env.daemon.socket())
            .await
            .expect("session");
        let mut rpc = SocketServiceClient::new(channel);
        let (up, rx) = tokio::sync::mpsc::unbounded_channel();
        up.send(open_connect(7505)).expect("open");
        up.send(frame(stream_request::Frame::Data(Bytes::from_static(
            b"hello",
        ))))
        .expect("data");
        // No flush: the up side stays open until the test closes it.
        let mut down = rpc
            .stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        let mut got = Vec::new();
        while !matches!(got.last(), Some(stream_response::Frame::Eof(_))) {
            match tokio::time::timeout(Duration::from_secs(10), down.next())
                .await
                .unwrap_or_else(|_| panic!("no eof within 10 s: {got:?}"))
            {
                Some(Ok(v2::StreamResponse { frame: Some(f) })) => got.push(f),
                other => panic!("the stream ended before eof: {other:?} after {got:?}"),
            }
        }
        assert!(
            matches!(got.first(), Some(stream_response::Frame::Opened(_))),
            "{got:?}"
        );
        assert_eq!(
            got[1..],
            [
                stream_response::Frame::Flushed(5),
                stream_response::Frame::Eof(true)
            ],
            "{got:?}"
        );
        up.send(frame(stream_request::Frame::Close(v2::StreamClose {
            consumed: 0,
            abort: false,
        })))
        .expect("close");
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), down.next())
            .await
            .expect("the stream ends within 10 s")
        {
            frame.expect("the stream ends OK after close");
        }
    });
    assert_eq!(&peer.join().expect("peer"), b"hello");
}

#[test]
fn out_of_order_frames_and_data_after_close_are_clear_errors() {
    let Some(env) = Env::setup("bad-stream", &[]) else {
        return;
    };
    let listener = env
        .ns
        .within(|| std::net::TcpListener::bind((HOST_ADDR, 7501)).expect("kernel listen"));
    let accepter = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(false).expect("blocking");
        while held.len() < 2 {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => break,
            }
        }
        held
    });
    runtime().block_on(async {
        let channel = tcpd_client::connect_channel(env.daemon.socket())
            .await
            .expect("session");
        let mut rpc = SocketServiceClient::new(channel);
        let mut admin = AdminServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("admin session"),
        );
        // Data before open.
        let (_, end) = run_stream(
            &mut rpc,
            vec![frame(stream_request::Frame::Data(Bytes::from_static(
                b"early",
            )))],
        )
        .await;
        assert_eq!(errno_of(&end.expect_err("data first")), errno::EINVAL);
        // An empty stream (no open at all).
        let (_, end) = run_stream(&mut rpc, Vec::new()).await;
        assert_eq!(errno_of(&end.expect_err("no open")), errno::EINVAL);
        // An IPv6 remote for an IPv4 socket: EAFNOSUPPORT (as connect(2)).
        let v6: std::net::SocketAddr = "[fd00::1]:80".parse().expect("addr");
        let open_v6 = v2::StreamOpen {
            how: Some(stream_open::How::Connect(v2::StreamConnect {
                remote: Some(v6.into()),
                family: v2::AddressFamily::Inet as i32,
                ..Default::default()
            })),
        };
        let (_, end) =
            run_stream(&mut rpc, vec![frame(stream_request::Frame::Open(open_v6))]).await;
        assert_eq!(errno_of(&end.expect_err("IPv6")), errno::EAFNOSUPPORT);
        let open = || open_connect(7501);
        // A second open on an open stream: EINVAL, and the socket is closed.
        let (got, end) = run_stream(&mut rpc, vec![open(), open()]).await;
        assert!(
            matches!(got.first(), Some(stream_response::Frame::Opened(_))),
            "{got:?}"
        );
        assert_eq!(errno_of(&end.expect_err("second open")), errno::EINVAL);
        // Data after close is never read: the stream ends OK at the close.
        let close = frame(stream_request::Frame::Close(v2::StreamClose {
            consumed: 0,
            abort: false,
        }));
        let (got, end) = run_stream(
            &mut rpc,
            vec![
                open(),
                frame(stream_request::Frame::Data(Bytes::from_static(b"hi"))),
                frame(stream_request::Frame::Flush(true)),
                close,
                frame(stream_request::Frame::Data(Bytes::from_static(
                    b"after close",
                ))),
            ],
        )
        .await;
        end.expect("the stream ends OK after close");
        assert!(
            got.contains(&stream_response::Frame::Flushed(2)),
            "flushed counts the bytes before close: {got:?}"
        );
        settles_to_zero(&mut admin).await;
    });
    drop(accepter);
}

#[test]
fn pipelined_socket_flood_hits_the_quota_and_leaks_nothing() {
    let Some(env) = Env::setup("bad-flood", &["--session-max-sockets", "1000"]) else {
        return;
    };
    runtime().block_on(async {
        let channel = tcpd_client::connect_channel(env.daemon.socket())
            .await
            .expect("session");
        let rpc = SocketServiceClient::new(channel.clone());
        let mut admin = AdminServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("admin session"),
        );
        // 10 000 socket calls in flight at once on one session.
        let calls = (0..10_000).map(|_| {
            let mut rpc = rpc.clone();
            async move { rpc.socket(v2::SocketRequest::default()).await }
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let emfile = results
            .iter()
            .filter(|r| {
                r.as_ref()
                    .err()
                    .is_some_and(|s| errno_of(s) == errno::EMFILE)
            })
            .count();
        assert_eq!(ok, 1000, "exactly the quota succeeds");
        assert_eq!(emfile, 9000, "the rest fail with EMFILE");
        assert_eq!(counter(&mut admin, "api_sockets").await, 1000);
        // The session ends: every socket goes with it.
        drop(rpc);
        drop(channel);
        settles_to_zero(&mut admin).await;
    });
}

/// 10 000 Stream opens (connect) pipelined on one session at once, past its
/// socket quota: exactly the quota's worth open, every other Stream ends with
/// EMFILE, and ending the session frees every socket.
#[test]
fn pipelined_stream_opens_hit_the_quota_and_leak_nothing() {
    const OPENS: usize = 10_000;
    const QUOTA: usize = 1000;
    let Some(env) = Env::setup("bad-opens", &["--session-max-sockets", "1000"]) else {
        return;
    };
    let listener = env
        .ns
        .within(|| std::net::TcpListener::bind((HOST_ADDR, 7503)).expect("kernel listen"));
    // Holds what it accepts until the test ends (the thread is left blocked).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept() {
            held.push(s);
        }
    });
    runtime().block_on(async {
        let (channel, session_socket) = ending_session(env.daemon.socket()).await;
        let rpc = SocketServiceClient::new(channel);
        let mut admin = AdminServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("admin session"),
        );
        let opens = (0..OPENS).map(|_| {
            let mut rpc = rpc.clone();
            async move {
                let open = open_connect(7503);
                // The up half stays open: an opened socket lives on.
                let up = tokio_stream::iter([open]).chain(tokio_stream::pending());
                let mut down = match rpc.stream(up).await {
                    Ok(r) => r.into_inner(),
                    Err(status) => return Err(errno_of(&status)),
                };
                match down.next().await {
                    Some(Ok(v2::StreamResponse {
                        frame: Some(stream_response::Frame::Opened(_)),
                    })) => Ok(down),
                    Some(Err(status)) => Err(errno_of(&status)),
                    other => panic!("neither opened nor an error: {other:?}"),
                }
            }
        });
        let results =
            tokio::time::timeout(Duration::from_secs(180), futures::future::join_all(opens))
                .await
                .expect("10 000 opens answered within 180 s");
        let opened = results.iter().filter(|r| r.is_ok()).count();
        let emfile = results
            .iter()
            .filter(|r| matches!(r, Err(e) if *e == errno::EMFILE))
            .count();
        assert_eq!(opened, QUOTA, "exactly the quota opens");
        assert_eq!(emfile, OPENS - QUOTA, "the rest end with EMFILE");
        assert_eq!(counter(&mut admin, "api_sockets").await, QUOTA as u64);
        // The session ends with its Streams open: every socket goes with it.
        session_socket
            .shutdown(std::net::Shutdown::Both)
            .expect("shutdown");
        settles_to_zero(&mut admin).await;
        drop((results, rpc));
    });
}

/// A client whose whole session ends (a process that exits) with many
/// Streams open: every connection delivers what was flushed, then FIN, as
/// the kernel closes an exiting process's sockets. The daemon closes them
/// in one sweep: the Streams' tasks send no `close` op of their own, so
/// more Streams than the session's op slots (16) never wait for a slot.
#[test]
fn an_ended_sessions_streams_all_close_in_one_sweep() {
    const STREAMS: usize = 64;
    let Some(env) = Env::setup("bad-stream-end", &[]) else {
        return;
    };
    let listener = env
        .ns
        .within(|| std::net::TcpListener::bind((HOST_ADDR, 7502)).expect("kernel listen"));
    let accepter = std::thread::spawn(move || {
        let mut held = Vec::new();
        while held.len() < STREAMS {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => break,
            }
        }
        held
    });
    runtime().block_on(async {
        let mut admin = AdminServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("admin session"),
        );
        let (channel, session_socket) = ending_session(env.daemon.socket()).await;
        let mut rpc = SocketServiceClient::new(channel);
        let mut held = Vec::new();
        for i in 0..STREAMS {
            let (up, rx) = tokio::sync::mpsc::unbounded_channel();
            let open = open_connect(7502);
            up.send(open).expect("open");
            up.send(frame(stream_request::Frame::Data(Bytes::from(format!(
                "stream {i}"
            )))))
            .expect("data");
            up.send(frame(stream_request::Frame::Flush(true)))
                .expect("flush");
            let mut down = rpc
                .stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                .await
                .expect("stream")
                .into_inner();
            // Opened, then flushed: the data is in the daemon's socket.
            for _ in 0..2 {
                tokio::time::timeout(Duration::from_secs(10), down.next())
                    .await
                    .expect("a frame within 10 s")
                    .expect("a frame")
                    .expect("no error");
            }
            held.push((up, down));
        }
        let waits = counter(&mut admin, "api_op_slot_waits").await;
        // The session ends with every Stream open.
        session_socket
            .shutdown(std::net::Shutdown::Both)
            .expect("shutdown");
        let conns = tokio::task::spawn_blocking(move || accepter.join().expect("accepter"))
            .await
            .expect("join");
        assert_eq!(conns.len(), STREAMS);
        let mut texts = tokio::task::spawn_blocking(move || {
            conns
                .into_iter()
                .map(|mut c| {
                    use std::io::Read;
                    c.set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("timeout");
                    let mut got = String::new();
                    // EOF (the daemon's FIN) ends it; a timeout or a
                    // reset fails the test.
                    c.read_to_string(&mut got).expect("data, then FIN");
                    got
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("reads");
        texts.sort();
        let mut want: Vec<String> = (0..STREAMS).map(|i| format!("stream {i}")).collect();
        want.sort();
        assert_eq!(texts, want);
        settles_to_zero(&mut admin).await;
        drop(held);
        assert_eq!(
            counter(&mut admin, "api_op_slot_waits").await,
            waits,
            "closing an ended session's Streams waited for op slots"
        );
    });
}

/// The gRPC message `message` as a client sends it (prefix + prost).
fn grpc_message(message: &v2::StreamRequest) -> Vec<u8> {
    use prost::Message as _;
    let body = message.encode_to_vec();
    let mut wire = vec![0];
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(&body);
    wire
}

type RawFrames =
    tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, std::convert::Infallible>>;

/// Calls the Stream RPC with a request body of raw bytes: the returned
/// sender adds DATA frames (dropping it ends the body), the task the
/// Stream's final status (`Ok` for grpc-status 0).
fn raw_stream(
    channel: &Channel,
) -> (
    RawFrames,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = tcpd_proto::stream_data::stream_request(tonic::body::Body::new(body));
    let channel = channel.clone();
    let task = tokio::spawn(async move {
        let response = channel
            .oneshot(request)
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            // Trailers-only.
            return if status.code() == tonic::Code::Ok {
                Ok(())
            } else {
                Err(status)
            };
        }
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| tonic::Status::unknown(format!("body: {e}")))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        match tonic::Status::from_header_map(&trailers) {
            Some(status) if status.code() == tonic::Code::Ok => Ok(()),
            Some(status) => Err(status),
            None => Err(tonic::Status::unknown("no grpc-status")),
        }
    });
    (tx, task)
}

/// Bad bytes on the Stream's up side — a compressed message, a length past
/// the 4 MiB message limit, bytes that are not protobuf, a body that ends
/// inside a message, a bad first message — end the Stream with a clear
/// errno (after `opened`, its socket is closed), without a panic, without
/// waiting for bytes that will not come, and without a leak. A large
/// message gathered whole (a `write` with flags) past the session's intake
/// budget fails with ENOBUFS while another holds it.
#[test]
fn malformed_stream_requests_end_with_clear_errors() {
    // 1 MiB of intake: one 900 KB message fits, two do not.
    let Some(env) = Env::setup("bad-frames", &["--session-max-intake-bytes", "1048576"]) else {
        return;
    };
    let listener = env
        .ns
        .within(|| std::net::TcpListener::bind((HOST_ADDR, 7504)).expect("kernel listen"));
    // The kernel side reads (and drops) what each connection brings.
    let accepter = std::thread::spawn(move || {
        for _ in 0..6 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            std::thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
        }
    });
    runtime().block_on(async {
        let channel = tcpd_client::connect_channel(env.daemon.socket())
            .await
            .expect("session");
        let mut admin = AdminServiceClient::new(
            tcpd_client::connect_channel(env.daemon.socket())
                .await
                .expect("admin session"),
        );
        let open = grpc_message(&open_connect(7504));
        let over = (4u32 << 20) + 1;
        let cases: Vec<(&str, Vec<u8>, bool, i32)> = vec![
            (
                "compressed",
                vec![1, 0, 0, 0, 2, 0x18, 1],
                true,
                errno::EINVAL,
            ),
            // Nothing of it is ever sent: the prefix alone is refused.
            (
                "over 4 MiB",
                [&[0u8][..], &over.to_be_bytes()].concat(),
                true,
                errno::EMSGSIZE,
            ),
            (
                "not protobuf",
                vec![0, 0, 0, 0, 2, 0x18, 0xff],
                true,
                errno::EINVAL,
            ),
            (
                "truncated",
                vec![0, 0, 0, 0, 9, 0x12, 7, b'a'],
                true,
                errno::EINVAL,
            ),
            (
                "compressed first",
                vec![1, 0, 0, 0, 2, 0x18, 1],
                false,
                errno::EINVAL,
            ),
            ("truncated first", vec![0, 0, 0], false, errno::EINVAL),
        ];
        for (what, bytes, opened, want) in cases {
            let (tx, end) = raw_stream(&channel);
            let mut wire = if opened { open.clone() } else { Vec::new() };
            wire.extend_from_slice(&bytes);
            tx.send(Ok(http_body::Frame::data(Bytes::from(wire))))
                .await
                .expect("send");
            // The body stays open (no END_STREAM) except where the case
            // is a truncation, which needs the end.
            let keep = if what.starts_with("truncated") {
                drop(tx);
                None
            } else {
                Some(tx)
            };
            let status = tokio::time::timeout(Duration::from_secs(10), end)
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"))
                .expect("join")
                .expect_err(what);
            assert_eq!(errno_of(&status), want, "{what}: {status:?}");
            drop(keep);
        }
        // Intake: a `write` of 900 KB gathered whole holds 900 KB of the
        // 1 MiB budget from its prefix on; another Stream's fails at once.
        let big = grpc_message(&frame(stream_request::Frame::Write(v2::StreamWrite {
            data: Bytes::from(vec![7u8; 900_000]),
            flags: 0,
        })));
        let partial = Bytes::from([&open[..], &big[..1000]].concat());
        let (a, a_end) = raw_stream(&channel);
        let (b, b_end) = raw_stream(&channel);
        a.send(Ok(http_body::Frame::data(partial.clone())))
            .await
            .expect("send");
        b.send(Ok(http_body::Frame::data(partial)))
            .await
            .expect("send");
        // Whichever prefix came second is refused, at once.
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            futures::future::select(a_end, b_end),
        )
        .await
        .expect("one Stream refused within 10 s");
        let (status, (sender, end), other) = match first {
            futures::future::Either::Left((a_status, b_end)) => (a_status, (b, b_end), a),
            futures::future::Either::Right((b_status, a_end)) => (b_status, (a, a_end), b),
        };
        let status = status.expect("join").expect_err("over the intake budget");
        assert_eq!(errno_of(&status), errno::ENOBUFS, "{status:?}");
        drop(other);
        // The holder's message completes and is written; it then closes OK.
        sender
            .send(Ok(http_body::Frame::data(Bytes::from(
                big[1000..].to_vec(),
            ))))
            .await
            .expect("send");
        let close = grpc_message(&frame(stream_request::Frame::Close(v2::StreamClose {
            consumed: 0,
            abort: false,
        })));
        sender
            .send(Ok(http_body::Frame::data(Bytes::from(close))))
            .await
            .expect("send");
        drop(sender);
        tokio::time::timeout(Duration::from_secs(10), end)
            .await
            .expect("the holder answered within 10 s")
            .expect("join")
            .expect("its write went through and it closed OK");
        settles_to_zero(&mut admin).await;
    });
    drop(accepter);
}
