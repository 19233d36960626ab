//! Socket semantics users observe, tcpd's client library against the Linux
//! kernel on the far side of the TUN (protocol v2): close with unread data
//! resets, write after the peer's reset fails ECONNRESET once then EPIPE,
//! `flush` means "in the daemon's send buffer", shutdown(Write) sends FIN
//! after the queued data, and a failed connect names its errno.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR, Netns, runtime};
use tcpd_proto::errno;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A kernel listener that runs `serve` on its first connection.
fn kernel_peer<T: Send + 'static>(
    ns: &Netns,
    port: u16,
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = ns.spawn(move || {
        let listener = TcpListener::bind(SocketAddrV4::new(HOST_ADDR, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        serve(stream)
    });
    ready_rx.recv().expect("kernel listener ready");
    handle
}

/// What the kernel sees after its peer closes: "FIN" or "RST".
fn end_seen(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return "FIN".into(),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return "RST".into(),
            Err(e) => return format!("unexpected {e}"),
        }
    }
}

#[test]
fn close_with_unread_data_resets_like_linux() {
    let Some(env) = Env::setup("sem-unread", &[]) else {
        return;
    };
    let rt = runtime();
    // Unread data: the kernel sends, tcpd's application never reads it.
    let (sent_tx, sent_rx) = mpsc::channel();
    let peer = kernel_peer(&env.ns, 7401, move |mut s| {
        s.write_all(&[7u8; 3000]).expect("kernel write");
        sent_tx.send(()).expect("sent");
        // Give tcpd time to receive it before the close.
        end_seen(&mut s)
    });
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7401))
            .await
            .expect("connect");
        sent_rx.recv().expect("kernel sent");
        // Wait until the data is readable (it may sit in the library), then close unread.
        stream.readable().await.expect("readable");
        drop(stream);
    });
    assert_eq!(peer.join().expect("peer"), "RST", "unread data → RST");

    // Everything read: a plain FIN.
    let peer = kernel_peer(&env.ns, 7402, |mut s| {
        s.write_all(b"hello").expect("kernel write");
        end_seen(&mut s)
    });
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7402))
            .await
            .expect("connect");
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.expect("read");
        stream.close().await.expect("close");
    });
    assert_eq!(peer.join().expect("peer"), "FIN", "all read → FIN");
}

#[test]
fn write_after_the_peers_reset_is_econnreset_then_epipe() {
    let Some(env) = Env::setup("sem-rst", &[]) else {
        return;
    };
    let rt = runtime();
    let peer = kernel_peer(&env.ns, 7403, |s| {
        // SO_LINGER 0: close sends RST.
        let sock = socket2_linger_zero(&s);
        drop(s);
        sock
    });
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7403))
            .await
            .expect("connect");
        peer.join().expect("peer").expect("linger 0");
        // Wait until the RST has reached the library: write readiness says
        // WRITE_CLOSED once the connection's error is in, without reporting
        // it (a fixed pause let a write on a loaded machine, whose daemon
        // read the RST late, succeed before the error arrived).
        tokio::time::timeout(Duration::from_secs(20), async {
            while !stream
                .ready(tokio::io::Interest::WRITABLE)
                .await
                .expect("ready")
                .is_write_closed()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the RST reached the library within 20 s");
        let first = stream.write_all(b"x").await.expect_err("write after RST");
        assert_eq!(first.raw_os_error(), Some(errno::ECONNRESET), "{first}");
        let second = stream.write_all(b"y").await.expect_err("second write");
        assert_eq!(second.raw_os_error(), Some(errno::EPIPE), "{second}");
        // The error was reported: reads now see EOF.
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.expect("read after"), 0);
    });
}

/// Sets SO_LINGER {on, 0} on a std socket through libc-free means: the
/// kernel resets on close. Returns the result of the setsockopt.
fn socket2_linger_zero(s: &TcpStream) -> io::Result<()> {
    let fd = std::os::fd::AsFd::as_fd(s);
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .map_err(io::Error::from)
}

#[test]
fn shutdown_write_sends_fin_after_the_queued_data_and_flush_means_queued() {
    let Some(env) = Env::setup("sem-fin", &[]) else {
        return;
    };
    let rt = runtime();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = data.len();
    let peer = kernel_peer(&env.ns, 7404, move |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to FIN");
        // Still able to answer after our FIN (half-close).
        s.write_all(b"done").expect("reply");
        got.len()
    });
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7404))
            .await
            .expect("connect");
        stream.write_all(&data).await.expect("write");
        stream.flush().await.expect("flush: all in the send buffer");
        stream.shutdown().await.expect("shutdown(Write)");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");
        assert_eq!(reply, b"done");
    });
    assert_eq!(peer.join().expect("peer"), expected, "all data before FIN");
}

#[test]
fn refused_connect_names_econnrefused_and_daemon_errors_name_the_daemon() {
    let Some(env) = Env::setup("sem-refused", &[]) else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let err = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 1))
            .await
            .expect_err("nobody listens on port 1");
        assert_eq!(err.raw_os_error(), Some(errno::ECONNREFUSED), "{err}");
        assert!(!tcpd_client::is_daemon_error(&err));
        let missing = env.daemon.socket().with_file_name("missing.sock");
        let err = tcpd_client::Client::connect(&missing)
            .await
            .expect_err("no daemon there");
        assert!(tcpd_client::is_daemon_error(&err), "{err}");
        assert!(err.to_string().contains("tcpd daemon at"), "{err}");
        assert_ne!(err.kind(), io::ErrorKind::ConnectionReset);
    });
}

/// `flush` completes when the written bytes are in the daemon's send
/// buffer — not before (a write too big for the send buffer and the peer's
/// window keeps flush waiting while the peer reads nothing) and not only
/// once the peer's application has read them (a small write to a peer that
/// never reads flushes at once), as a kernel socket's data is "sent" once
/// it is in the send buffer.
#[test]
fn flush_completes_when_the_data_is_in_the_daemons_send_buffer() {
    let Some(env) = Env::setup("sem-flush", &[]) else {
        return;
    };
    let rt = runtime();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (listening_tx, listening_rx) = mpsc::channel::<()>();
    const BIG: usize = 16 * 1024 * 1024;
    let peer = env.ns.spawn(move || {
        let listener = TcpListener::bind(SocketAddrV4::new(HOST_ADDR, 7405)).expect("listen");
        listening_tx.send(()).expect("listening");
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        // Read nothing until told to.
        go_rx.recv().expect("go");
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) => panic!("kernel read: {e}"),
            }
        }
    });
    // The kernel listens before tcpd connects (a fixed pause lost that
    // race on a loaded machine: connection refused).
    listening_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the kernel listener started");
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7405))
            .await
            .expect("connect");
        // Small: in the send buffer at once, though nobody reads it.
        stream.write_all(&[1u8; 1000]).await.expect("small write");
        tokio::time::timeout(Duration::from_secs(5), stream.flush())
            .await
            .expect("a small flush does not wait for the peer's reader")
            .expect("flush");

        // Big: more than the send buffer and the peer's window hold.
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            wr.write_all(&vec![2u8; BIG]).await?;
            wr.flush().await?;
            Ok::<_, io::Error>(wr)
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !writer.is_finished(),
            "flush of {BIG} bytes completed while the peer read nothing"
        );
        go_tx.send(()).expect("let the peer read");
        let wr = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("flush completes once the peer reads")
            .expect("task")
            .expect("write + flush");
        drop(wr); // FIN
        let mut rest = Vec::new();
        rd.read_to_end(&mut rest).await.expect("EOF");
    });
    assert_eq!(peer.join().expect("peer"), 1000 + BIG);
}

/// `--ip-local-port-range` bounds the ports connect picks, as Linux's
/// sysctl: with two ports, two connections to one kernel listener get
/// both (the even distance from the range's start first, as Linux), a
/// third fails EADDRNOTAVAIL, and a second destination reuses a port (a
/// port serves any number of 4-tuples). The kernel's accept sees the
/// ports tcpd chose, and the kernel itself, given the same range, does the
/// same.
#[test]
fn connect_picks_ports_from_ip_local_port_range_like_linux() {
    let Some(env) = Env::setup("sem-ports", &["--ip-local-port-range", "40000,40001"]) else {
        return;
    };
    let rt = runtime();
    let (first, first_addr) = tcpd_e2e::kernel_listener(&env.ns);
    let (second, second_addr) = tcpd_e2e::kernel_listener(&env.ns);
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let a = client.tcp_connect(first_addr).await.expect("connect 1");
        let b = client.tcp_connect(first_addr).await.expect("connect 2");
        let ports = [a.local_addr(), b.local_addr()].map(|addr| addr.expect("local").port());
        assert_eq!(ports, [40000, 40001], "even distance from LOW first");
        let err = client
            .tcp_connect(first_addr)
            .await
            .expect_err("no port left towards this destination");
        assert_eq!(err.raw_os_error(), Some(errno::EADDRNOTAVAIL), "{err}");
        let c = client
            .tcp_connect(second_addr)
            .await
            .expect("another destination");
        assert_eq!(c.local_addr().expect("local").port(), 40000);
        // The kernel saw the same ports.
        let mut seen: Vec<u16> = (0..2)
            .map(|_| first.accept().expect("accept").1.port())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [40000, 40001]);
        assert_eq!(second.accept().expect("accept").1.port(), 40000);
        drop((a, b, c));
    });
    // Linux, given the same range in the namespace, picks the same ports in
    // the same order and runs out the same way.
    let linux = env.ns.within(move || {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001")
            .expect("set the namespace's ip_local_port_range");
        let held: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(first_addr).expect("kernel connect"))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().expect("local").port())
            .collect();
        let third = TcpStream::connect(first_addr)
            .map(|_| ())
            .map_err(|e| e.kind());
        (ports, third)
    });
    assert_eq!(
        linux,
        (vec![40000, 40001], Err(io::ErrorKind::AddrNotAvailable)),
        "the kernel with the same ip_local_port_range"
    );
}

/// A flush (and shutdown) completes once the written data is in the
/// daemon's send buffer, even while data the application has not read
/// yet keeps arriving — as `flush`/`shutdown` on a kernel socket never wait
/// for the application to read. The daemon's `flushed` answer travels on
/// the socket's one Stream behind the received data: a client that let a
/// full read side stop its pump waited for ever (the rare tokio_api stall).
#[test]
fn flush_completes_while_received_data_waits_unread() {
    let Some(env) = Env::setup("sem-flush-unread", &[]) else {
        return;
    };
    const LEN: usize = 768 * 1024;
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => s.write_all(&buf[..n]).expect("kernel echo"),
                Err(e) => panic!("kernel read: {e}"),
            }
        }
    });
    let data = tcpd_e2e::payload(LEN, 21);
    let rt = runtime();
    let back = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client.tcp_connect(addr).await.expect("connect");
        stream.write_all(&data).await.expect("write, nothing read");
        // Let the echo come back and fill the read side.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::time::timeout(Duration::from_secs(10), stream.flush())
            .await
            .expect("flush waited for the application to read")
            .expect("flush");
        tokio::time::timeout(Duration::from_secs(10), stream.shutdown())
            .await
            .expect("shutdown waited for the application to read")
            .expect("shutdown");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        back
    });
    echo.join().expect("kernel echo");
    assert!(back == data, "echo differs ({} of {LEN} bytes)", back.len());
}

/// Bytes each side sends in the crossing-writes tests.
const CROSSING_LEN: usize = 16 << 20;

/// The program both ways: writes `len` bytes (seed 32), then (with
/// `flush`) flushes, then its FIN, while reading nothing — whatever the
/// peer sends meanwhile waits unread — then reads to EOF. Each step under
/// a time limit, named when it fails.
async fn write_everything_then_read<S>(mut s: S, len: usize, flush: bool) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let limit = Duration::from_secs(90);
    let out = tcpd_e2e::payload(len, 32);
    tokio::time::timeout(limit, s.write_all(&out))
        .await
        .expect("the write stalled while received data waited unread")
        .expect("write");
    if flush {
        tokio::time::timeout(limit, s.flush())
            .await
            .expect("the flush stalled while received data waited unread")
            .expect("flush");
    }
    tokio::time::timeout(limit, s.shutdown())
        .await
        .expect("shutdown stalled while received data waited unread")
        .expect("shutdown");
    let mut back = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut back))
        .await
        .expect("read to EOF in time")
        .expect("read");
    back
}

/// The program read the kernel's `CROSSING_LEN` bytes (seed 31) and the
/// kernel the program's `program_len` (seed 32), byte for byte.
fn assert_crossed(what: &str, program_len: usize, program_read: &[u8], kernel_read: &[u8]) {
    assert!(
        program_read == tcpd_e2e::payload(CROSSING_LEN, 31),
        "{what}: the program read {} bytes, not the kernel's {CROSSING_LEN}",
        program_read.len()
    );
    assert!(
        kernel_read == tcpd_e2e::payload(program_len, 32),
        "{what}: the kernel read {} bytes, not the program's {program_len}",
        kernel_read.len()
    );
}

/// A socket's writes never depend on its own unread received data: on
/// Linux the peer's sending stops when this side's receive window closes,
/// and this side's writes go on. A program that writes 16 MiB and reads
/// nothing until its write is done, while the peer streams 16 MiB at it,
/// completes on kernel sockets — and through tcpd (async and blocking
/// `tcpd-client`). Through the daemon this used to stall after ~1.4 MiB:
/// the Stream's up side only advanced while hyper polled the response,
/// which it stops doing while the client's HTTP/2 window is used up.
#[test]
fn writes_go_on_while_received_data_waits_unread() {
    let Some(env) = Env::setup("sem-crossing", &[]) else {
        return;
    };
    let rt = runtime();
    // Kernel sockets both ends (inside the namespace).
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel = tcpd_e2e::crossing_kernel_side(listener, CROSSING_LEN, 31);
    let client = env
        .ns
        .within(move || TcpStream::connect(addr).expect("kernel connect"));
    let read = rt.block_on(async {
        client.set_nonblocking(true).expect("nonblocking");
        let client = tokio::net::TcpStream::from_std(client).expect("tokio");
        write_everything_then_read(client, CROSSING_LEN, false).await
    });
    assert_crossed(
        "kernel sockets",
        CROSSING_LEN,
        &read,
        &kernel.join().expect("kernel"),
    );

    // tcpd-client, async.
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel = tcpd_e2e::crossing_kernel_side(listener, CROSSING_LEN, 31);
    let read = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let stream = client.tcp_connect(addr).await.expect("connect");
        write_everything_then_read(stream, CROSSING_LEN, false).await
    });
    assert_crossed(
        "tcpd-client",
        CROSSING_LEN,
        &read,
        &kernel.join().expect("kernel"),
    );

    // tcpd-client, blocking (std::net's API) on threads of its own.
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel = tcpd_e2e::crossing_kernel_side(listener, CROSSING_LEN, 31);
    let socket = env.daemon.socket().to_path_buf();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let client = tcpd_client::blocking::connect_client(&socket).expect("session");
        let mut s = tcpd_client::blocking::TcpStream::connect_with(&client, addr).expect("connect");
        s.write_all(&tcpd_e2e::payload(CROSSING_LEN, 32))
            .expect("blocking write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("blocking read");
        let _ = done_tx.send(back);
    });
    let read = done_rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the blocking program stalled while received data waited unread");
    assert_crossed(
        "blocking tcpd-client",
        CROSSING_LEN,
        &read,
        &kernel.join().expect("kernel"),
    );
}

/// How much the program writes to the slowly reading peer of
/// [`a_flush_completes_while_a_slow_reader_sends_more_than_is_read`],
/// which reads 16 KiB per [`SLOW_READER_PAUSE`] (~4 MB/s): the program's
/// last writes reach it long after the program's unread data has piled up.
const SLOW_READER_LEN: usize = 4 << 20;
const SLOW_READER_PAUSE: Duration = Duration::from_millis(4);

/// A program that writes, then flushes and shuts down before it reads,
/// to a peer that reads slowly and meanwhile sends much more than the
/// program has read: on Linux neither `flush` (a no-op) nor `shutdown`
/// waits for the program to read. Through tcpd the flush's answer comes
/// behind the received data on the socket's one Stream; once the client
/// had read ahead its limit while the answer was not yet due, the answer
/// stayed behind a full HTTP/2 window and flush waited for ever.
#[test]
fn a_flush_completes_while_a_slow_reader_sends_more_than_is_read() {
    let Some(env) = Env::setup("sem-slowread", &[]) else {
        return;
    };
    let rt = runtime();
    // Kernel sockets both ends (inside the namespace).
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel =
        tcpd_e2e::crossing_kernel_side_reading_every(listener, CROSSING_LEN, 31, SLOW_READER_PAUSE);
    let client = env
        .ns
        .within(move || TcpStream::connect(addr).expect("kernel connect"));
    let read = rt.block_on(async {
        client.set_nonblocking(true).expect("nonblocking");
        let client = tokio::net::TcpStream::from_std(client).expect("tokio");
        write_everything_then_read(client, SLOW_READER_LEN, true).await
    });
    let kernel = kernel.join().expect("kernel");
    assert_crossed("kernel sockets", SLOW_READER_LEN, &read, &kernel);
    // tcpd-client.
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel =
        tcpd_e2e::crossing_kernel_side_reading_every(listener, CROSSING_LEN, 31, SLOW_READER_PAUSE);
    let read = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let stream = client.tcp_connect(addr).await.expect("connect");
        write_everything_then_read(stream, SLOW_READER_LEN, true).await
    });
    let kernel = kernel.join().expect("kernel");
    assert_crossed("tcpd-client", SLOW_READER_LEN, &read, &kernel);
}

/// What a program sees, in order, on a connection whose peer resets it
/// (SO_LINGER 0 close) after sending `abc`: two reads, then a write and
/// another write, as `errno`s ("ok N" for a success).
fn after_the_peers_reset<S: Read + Write>(s: &mut S) -> Vec<String> {
    let mut buf = [0u8; 16];
    let mut seen = Vec::new();
    let mut note = |r: io::Result<usize>| {
        seen.push(match r {
            Ok(n) => format!("ok {n}"),
            Err(e) => e.raw_os_error().map_or(e.to_string(), |e| {
                nix::errno::Errno::from_raw(e)
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }),
        })
    };
    for _ in 0..3 {
        note(s.read(&mut buf));
    }
    note(s.write(b"x"));
    note(s.write(b"y"));
    seen
}

/// A kernel peer that sends `abc` then resets (SO_LINGER 0) once it has
/// read the client's one byte `go`.
fn resetting_peer(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(b"abc").expect("kernel write");
        let mut go = [0u8; 1];
        s.read_exact(&mut go).expect("go");
        socket2_linger_zero(&s).expect("linger 0");
        drop(s);
    })
}

/// After the peer's reset (SO_LINGER 0 close, with data of its own read
/// first): the data, then `ECONNRESET` once, then EOF, and writes fail
/// `EPIPE` — the same sequence on a kernel socket and through tcpd
/// (blocking `tcpd-client`).
#[test]
fn reads_and_writes_after_the_peers_reset_match_the_kernel() {
    let Some(env) = Env::setup("sem-after-rst", &[]) else {
        return;
    };
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let peer = resetting_peer(listener);
    let kernel = env.ns.within(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"g").expect("go");
        std::thread::sleep(Duration::from_millis(300));
        after_the_peers_reset(&mut s)
    });
    peer.join().expect("peer");
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let peer = resetting_peer(listener);
    let client = tcpd_client::blocking::connect_client(env.daemon.socket()).expect("session");
    let mut s = tcpd_client::blocking::TcpStream::connect_with(&client, addr).expect("connect");
    s.write_all(b"g").expect("go");
    std::thread::sleep(Duration::from_millis(300));
    let tcpd = after_the_peers_reset(&mut s);
    peer.join().expect("peer");
    let expected = ["ok 3", "ECONNRESET", "ok 0", "EPIPE", "EPIPE"];
    assert_eq!(kernel, expected, "the kernel");
    assert_eq!(tcpd, expected, "tcpd");
}

/// `IP_TTL` is per socket as on Linux: 1..=255 accepted (0 and 256 fail
/// `EINVAL`), read back by `ttl()`, and the daemon's socket has it once the
/// data written before the call is out (the option travels in order on the
/// Stream).
#[test]
fn ttl_is_a_socket_option_as_on_linux() {
    let Some(env) = Env::setup("sem-ttl", &[]) else {
        return;
    };
    let (listener, addr) = tcpd_e2e::kernel_listener(&env.ns);
    let kernel = env.ns.within(move || {
        let s = TcpStream::connect(addr).expect("connect");
        let refused = [0, 256].map(|t| s.set_ttl(t).map_err(|e| e.raw_os_error()));
        s.set_ttl(7).expect("set_ttl 7");
        (refused, s.ttl().expect("ttl"))
    });
    let (_accepted, _) = listener.accept().expect("accept");
    let rt = runtime();
    let tcpd = rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut s = client.tcp_connect(addr).await.expect("connect");
        assert_eq!(s.ttl().expect("ttl"), 64, "the default");
        let refused = [0, 256].map(|t| s.set_ttl(t).map_err(|e| e.raw_os_error()));
        s.set_ttl(7).expect("set_ttl 7");
        s.flush().await.expect("flush");
        let daemon = s
            .option(tcpd_client::OptionName::IpTtl)
            .await
            .expect("getsockopt");
        assert_eq!(
            daemon,
            tcpd_client::SockOption::IpTtl(7),
            "the daemon's socket"
        );
        (refused, s.ttl().expect("ttl"))
    });
    let einval = Err(Some(errno::EINVAL));
    assert_eq!(kernel, ([einval, einval], 7), "the kernel");
    assert_eq!(tcpd, kernel, "tcpd");
}

/// `set_linger(Some(0))` then close resets the connection (the kernel peer
/// reads `ECONNRESET`), as on Linux, though everything was read.
#[test]
fn linger_zero_close_resets() {
    let Some(env) = Env::setup("sem-linger0", &[]) else {
        return;
    };
    let peer = kernel_peer(&env.ns, 7406, |mut s| {
        s.write_all(b"hi").expect("kernel write");
        end_seen(&mut s)
    });
    runtime().block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        let mut stream = client
            .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7406))
            .await
            .expect("connect");
        let mut got = [0u8; 2];
        stream.read_exact(&mut got).await.expect("read");
        stream.set_linger(Some(Duration::ZERO)).expect("linger 0");
        stream.close().await.expect("close");
    });
    assert_eq!(peer.join().expect("peer"), "RST", "SO_LINGER 0 → RST");
}
