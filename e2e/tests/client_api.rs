//! The Rust client against the real daemon, beyond the tokio API test:
//! the blocking (`std::net`-shaped) flavour, and what a program sees when
//! the daemon restarts under it (errors that name the daemon, never a
//! network errno; the same session reconnects to the new daemon).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tcpd_client::blocking;
use tcpd_e2e::{Daemon, Env, HOST_ADDR, Netns, TCPD_ADDR, runtime, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

/// A kernel echo server on `port` in `ns`, for one connection.
fn kernel_echo(ns: &Netns, port: u16) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = ns.spawn(move || {
        let listener =
            std::net::TcpListener::bind(SocketAddrV4::new(HOST_ADDR, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().expect("kernel listener ready");
    handle
}

#[test]
fn blocking_api_has_std_net_behaviour() {
    let Some(env) = Env::setup("cli-blocking", &[]) else {
        return;
    };
    let client = blocking::connect_client(env.daemon.socket()).expect("session");
    let echo = kernel_echo(&env.ns, 7601);
    let target = SocketAddr::from((HOST_ADDR, 7601));
    let stream = blocking::TcpStream::connect_with(&client, target).expect("connect");
    assert_eq!(stream.peer_addr().expect("peer"), target);
    assert_eq!(
        stream.local_addr().expect("local").ip(),
        std::net::IpAddr::V4(TCPD_ADDR)
    );
    stream.set_nodelay(true).expect("nodelay");
    assert!(stream.nodelay().expect("nodelay"));
    assert_eq!(stream.ttl().expect("ttl"), 64);

    // Read and Write through &TcpStream, as std allows.
    (&stream).write_all(b"hello").expect("write");
    (&stream).flush().expect("flush");
    let mut got = [0u8; 5];
    stream.peek(&mut got[..1]).expect("peek");
    assert_eq!(got[0], b'h', "peek sees the first byte");
    (&stream).read_exact(&mut got).expect("read");
    assert_eq!(&got, b"hello", "peek consumed nothing");

    // A read timeout expires with WouldBlock (EAGAIN), as SO_RCVTIMEO.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let started = Instant::now();
    let err = (&stream).read(&mut got).expect_err("nothing to read");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(stream.set_read_timeout(Some(Duration::ZERO)).is_err());

    // Non-blocking mode: WouldBlock at once.
    stream.set_nonblocking(true).expect("nonblocking");
    let err = (&stream).read(&mut got).expect_err("nothing to read");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    stream.set_nonblocking(false).expect("blocking");

    // shutdown(Write): the echo server sees EOF and ends; we read EOF.
    stream.shutdown(Shutdown::Write).expect("shutdown");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut rest = Vec::new();
    (&stream).read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty());
    let err = (&stream).write(b"x").expect_err("write after shutdown");
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{err}");
    echo.join().expect("echo");

    // A listener: bind, accept a kernel client, exchange.
    let listener = blocking::TcpListener::bind_with(&client, (TCPD_ADDR, 0)).expect("bind");
    let local = listener.local_addr().expect("local");
    assert_ne!(local.port(), 0, "port 0 picks one");
    let kernel = env.ns.spawn(move || {
        let mut s = std::net::TcpStream::connect_timeout(&local, LIMIT).expect("kernel connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(b"ping").expect("write");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).expect("read");
        back
    });
    let (mut conn, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(HOST_ADDR));
    let mut ping = [0u8; 4];
    conn.read_exact(&mut ping).expect("read");
    conn.write_all(b"pong").expect("write");
    conn.flush().expect("flush");
    assert_eq!(&kernel.join().expect("kernel"), b"pong");
    assert_eq!(&ping, b"ping");
}

#[test]
fn a_daemon_restart_gives_errors_that_name_the_daemon() {
    if !tcpd_e2e::require_privileges("cli-restart") {
        return;
    }
    // The API socket lives in a directory of the test's, so a second
    // daemon can serve it where the client expects it.
    let dir = tcpd_e2e::TempDir::new("cli-restart").expect("temp dir");
    let socket = dir.path().join("tcpd.sock");
    let ns = Netns::new("cli-restart").expect("namespace");
    let mut env = Env {
        daemon: Daemon::start_at(&ns, &socket, &[]).expect("start tcpd"),
        ns,
    };
    let rt = runtime();
    let shown = socket.display().to_string();
    let echo = kernel_echo(&env.ns, 7602);
    let client = rt
        .block_on(tcpd_client::Client::connect(&socket))
        .expect("session");
    let mut stream = rt
        .block_on(client.tcp_connect((HOST_ADDR, 7602)))
        .expect("connect");
    rt.block_on(async {
        stream.write_all(b"before").await.expect("write");
        let mut got = [0u8; 6];
        stream.read_exact(&mut got).await.expect("echo");
    });

    // The daemon goes away (SIGTERM; its sockets die with it).
    env.daemon.terminate().expect("stop tcpd");
    let err = rt.block_on(async {
        let mut buf = [0u8; 16];
        tokio::time::timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("the read ends")
            .expect_err("no daemon: an error, not EOF")
    });
    assert!(tcpd_client::is_daemon_error(&err), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("tcpd daemon at {shown}")),
        "{err}"
    );
    assert!(
        !matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
        ),
        "{err:?}"
    );
    // Writes after it: EPIPE, as after any reported error.
    let again = rt
        .block_on(stream.write_all(b"after"))
        .expect_err("stream is gone");
    assert_eq!(again.raw_os_error(), Some(libc::EPIPE), "{again:?}");
    drop(stream);
    let _ = echo.join();

    // While no daemon runs, new calls fail naming it too.
    let err = rt
        .block_on(client.tcp_connect((HOST_ADDR, 7603)))
        .expect_err("no daemon");
    assert!(tcpd_client::is_daemon_error(&err), "{err:?}");
    assert!(err.to_string().contains("tcpd daemon at"), "{err}");

    // A new daemon on the same path: the same Client works again (a new
    // session: the old sockets are gone, as after a reboot).
    env.daemon = Daemon::start_at(&env.ns, &socket, &[]).expect("restart tcpd");
    let echo = kernel_echo(&env.ns, 7604);
    let mut reconnected = None;
    assert!(
        wait_until(LIMIT, || {
            match rt.block_on(client.tcp_connect((HOST_ADDR, 7604))) {
                Ok(s) => {
                    reconnected = Some(s);
                    true
                }
                Err(e) => {
                    assert!(tcpd_client::is_daemon_error(&e), "{e:?}");
                    false
                }
            }
        }),
        "the session reconnects to the restarted daemon"
    );
    let mut stream = reconnected.expect("connected");
    rt.block_on(async {
        stream.write_all(b"after restart").await.expect("write");
        let mut got = [0u8; 13];
        stream.read_exact(&mut got).await.expect("echo");
        assert_eq!(&got, b"after restart");
        stream.shutdown().await.expect("FIN");
    });
    drop(stream);
    echo.join().expect("echo");
}

/// A blocking call on the thread of the current-thread runtime its session
/// lives on cannot be served (the runtime cannot run the session's I/O
/// while its only thread waits): it fails at once with a `Deadlock` error
/// that says so, instead of hanging. The same call from a thread of the
/// runtime's blocking pool works.
#[test]
fn a_blocking_call_that_would_stop_its_own_runtime_fails_clearly() {
    let Some(env) = Env::setup("cli-deadlock", &[]) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let socket = env.daemon.socket().to_path_buf();
    rt.block_on(async move {
        let client = tcpd_client::Client::connect(&socket)
            .await
            .expect("session");
        let started = Instant::now();
        let err = blocking::TcpListener::bind_with(&client, (TCPD_ADDR, 0))
            .expect_err("a blocking call on its own runtime's thread");
        assert_eq!(err.kind(), io::ErrorKind::Deadlock, "{err}");
        assert!(
            err.to_string().contains("current-thread tokio runtime"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // From the blocking pool the runtime's thread stays free: it works.
        let from_pool = client.clone();
        let local = tokio::time::timeout(
            LIMIT,
            tokio::task::spawn_blocking(move || {
                let listener = blocking::TcpListener::bind_with(&from_pool, (TCPD_ADDR, 0))?;
                listener.local_addr()
            }),
        )
        .await
        .expect("in time")
        .expect("task")
        .expect("bind from the blocking pool");
        assert_ne!(local.port(), 0);
    });
}

/// (ns on a CPU, voluntary context switches) of thread `tid` of this process.
fn thread_sched(tid: &str) -> (u64, u64) {
    tcpd_e2e::thread_sched(&format!("/proc/self/task/{tid}"))
}

/// The client's busy-poll (`Client::with_busy_poll`): a read waiting for
/// the answer to what it wrote keeps its thread running (it never blocks,
/// and uses the CPU) for the window, then sleeps; a read with nothing
/// written before it (an idle connection) never spins.
///
/// This test's thread looks at the reader for 150 ms, and on a loaded
/// machine it may look late (the project's CI woke threads 100+ ms late).
/// The reader says when each read began, so a look that provably fell
/// outside the read it is about (past the 1 s window, or after the idle
/// read ended) is known to prove nothing: the reader reads again (a new
/// write, a new window), at most `LOOKS` times. The reader's thread lives
/// until the test is done, so a late look never finds it gone.
#[test]
fn a_read_busy_polls_for_the_answer_to_its_write_and_never_when_idle() {
    /// The client's busy-poll window.
    const WINDOW: Duration = Duration::from_millis(1000);
    /// How long a read whose answer never comes waits (a spin, then sleep).
    const ANSWER_WAIT: Duration = Duration::from_millis(2000);
    /// How long the idle read waits.
    const IDLE_WAIT: Duration = Duration::from_millis(1500);
    /// How long the test looks at the reader.
    const LOOK: Duration = Duration::from_millis(150);
    /// Reads tried before a test thread that never looked in time fails.
    const LOOKS: usize = 5;
    let Some(env) = Env::setup("cli-busy", &[]) else {
        return;
    };
    // A kernel peer that accepts and never answers.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let peer = env.ns.spawn(move || {
        let listener =
            std::net::TcpListener::bind(SocketAddrV4::new(HOST_ADDR, 7603)).expect("listen");
        ready_tx.send(()).expect("ready");
        let held = listener.accept().expect("accept");
        let _ = stop_rx.recv_timeout(4 * LIMIT);
        drop(held);
    });
    ready_rx.recv().expect("kernel listener ready");
    let socket = env.daemon.socket().to_path_buf();
    // Reader -> test: which read began when ("answer due" after a write,
    // or "idle"). Test -> reader: whether to read again (the look was
    // late), or go on.
    let (step_tx, step_rx) = mpsc::channel::<(&str, Instant)>();
    let (again_tx, mut again_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let (tid_tx, tid_rx) = mpsc::channel::<String>();
    let client_thread = std::thread::spawn(move || {
        let tid = std::fs::read_link("/proc/thread-self")
            .expect("/proc/thread-self")
            .file_name()
            .expect("tid")
            .to_string_lossy()
            .into_owned();
        tid_tx.send(tid).expect("tid");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            // Opened here: the session runs on this thread alone.
            // Other programs on a loaded machine would end the spin at a
            // contended yield (as they should): this test is about the
            // window.
            let client = tcpd_client::Client::connect(&socket)
                .await
                .expect("session")
                .with_busy_poll(WINDOW)
                .with_busy_poll_stop_contended(false);
            let mut stream = client
                .tcp_connect(SocketAddrV4::new(HOST_ADDR, 7603))
                .await
                .expect("connect");
            let mut buf = [0u8; 1];
            for step in ["answer due", "idle"] {
                loop {
                    if step == "answer due" {
                        stream.write_all(b"?").await.expect("write");
                    }
                    let began = Instant::now();
                    step_tx.send((step, began)).expect("step");
                    let wait = if step == "idle" {
                        IDLE_WAIT
                    } else {
                        ANSWER_WAIT
                    };
                    tokio::time::timeout(wait, stream.read(&mut buf))
                        .await
                        .expect_err("the peer never answers");
                    // Asleep (no CPU) until the test has looked.
                    if !again_rx.recv().await.expect("the test's verdict") {
                        break;
                    }
                }
            }
        });
    });
    let tid = tid_rx.recv_timeout(LIMIT).expect("the reader's thread id");
    // (CPU time, voluntary context switches) at the start and the end of a
    // look at the reader, and when the look ended.
    let look = |pause: Duration| {
        let before = thread_sched(&tid);
        std::thread::sleep(pause);
        let after = thread_sched(&tid);
        (before, after, Instant::now())
    };
    // The reader's CPU time during a look.
    let cpu_used = |((before, _), (after, _), _): ((u64, u64), (u64, u64), Instant)| after - before;
    // Whether a look that ended at `looked` came (partly) after the part of
    // the read that began at `began` it is about (`lasting` long): then it
    // proves nothing, and the reader reads again, at most LOOKS times.
    let too_late = |what: &str,
                    attempt: &mut usize,
                    began: Instant,
                    looked: Instant,
                    lasting: Duration| {
        if looked <= began + lasting {
            return false;
        }
        assert!(
            *attempt < LOOKS,
            "in {LOOKS} reads this test's thread never looked at one {what} in time \
             (the last look ended {:?} after its read began)",
            looked - began
        );
        eprintln!(
            "look {attempt} at a read {what} ended {:?} after it began, past {lasting:?}: again",
            looked - began
        );
        *attempt += 1;
        again_tx.send(true).expect("again");
        true
    };
    let mut attempt = 1;
    loop {
        let (step, began) = step_rx.recv_timeout(LIMIT).expect("answer due");
        assert_eq!(step, "answer due");
        let ((cpu0, blocked0), (cpu1, blocked1), looked) = look(LOOK);
        if too_late("spinning", &mut attempt, began, looked, WINDOW) {
            continue;
        }
        assert_eq!(
            blocked1,
            blocked0,
            "the reader slept while its answer was due (looked {:?} after the read began)",
            looked - LOOK - began
        );
        assert!(cpu1 > cpu0, "the reader did not run while spinning");
        // Past the window (1 s after the read began, with 100 ms for the
        // read to have started spinning): asleep, until the read times out
        // 2 s after it began, and after that too (it waits for the test).
        std::thread::sleep(
            (began + WINDOW + Duration::from_millis(100)).saturating_duration_since(Instant::now()),
        );
        let used = cpu_used(look(Duration::from_millis(300)));
        assert!(
            used < 30_000_000,
            "after the window the reader ran {used} ns in 300 ms"
        );
        again_tx.send(false).expect("go on");
        break;
    }
    attempt = 1;
    loop {
        let (step, began) = step_rx.recv_timeout(LIMIT).expect("idle");
        assert_eq!(step, "idle");
        std::thread::sleep(Duration::from_millis(100));
        let seen = look(Duration::from_millis(400));
        if too_late("idle", &mut attempt, began, seen.2, IDLE_WAIT) {
            continue;
        }
        let used = cpu_used(seen);
        assert!(used < 30_000_000, "an idle read ran {used} ns in 400 ms");
        again_tx.send(false).expect("done");
        break;
    }
    client_thread.join().expect("client thread");
    let _ = stop_tx.send(());
    peer.join().expect("peer");
}
