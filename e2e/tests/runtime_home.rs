//! A session opened inside a tokio runtime runs on that runtime: on a
//! current-thread runtime, a whole connection (open, data both ways, close)
//! runs with no thread of the library's own (`tcpd-client-io`), and so does
//! the default session of the free constructors (`TcpStream::connect`,
//! `TcpListener::bind`, `TcpSocket::connect`) on multi-thread and
//! current-thread runtimes, where the synchronous `TcpSocket::bind` /
//! `listen` neither deadlock nor fail. This test is its own binary, so no
//! other test starts that runtime.

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::sync::mpsc;
use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Set for the processes that run the default-session parts
/// ([`default_session_on_a_multi_thread_runtime_is_its_own`],
/// [`default_session_on_a_current_thread_runtime_is_its_own`]).
const CHILD: &str = "TCPD_E2E_RUNTIME_HOME_CHILD";

/// The address of a kernel peer that echoes one byte per connection, for
/// the default-session parts.
const ECHO_ENV: &str = "TCPD_E2E_RUNTIME_HOME_ECHO";

/// Whether a thread of the library's own runtime exists in this process.
fn library_threads_started() -> bool {
    thread_names()
        .iter()
        .any(|n| n.starts_with("tcpd-client-io"))
}

/// Takes the connected `stream` (the result of a connect), sends `payload`
/// through it, reads it back from the echoing peer and closes.
async fn echo_once(stream: std::io::Result<tcpd_client::TcpStream>, payload: &[u8]) {
    let mut stream = stream.expect("connect to the echo");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(payload).await.expect("write");
    let mut got = vec![0u8; payload.len()];
    stream.read_exact(&mut got).await.expect("echoed bytes");
    assert_eq!(got, payload);
    stream.close().await.expect("close");
}

/// Ends this process with a failure if it is still running after `limit`
/// (a deadlocked part must fail, not hang its parent test).
fn fail_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("still running after {limit:?}: deadlocked?");
        std::process::exit(3);
    });
}

#[test]
fn a_session_opened_in_a_runtime_runs_on_it() {
    let Some(env) = Env::setup("rt-home", &[]) else {
        return;
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let peer = env.ns.spawn(move || {
        let listener =
            std::net::TcpListener::bind(SocketAddrV4::new(HOST_ADDR, 7901)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("echo");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF");
    });
    ready_rx.recv().expect("listener ready");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = tcpd_client::Client::connect(env.daemon.socket())
            .await
            .expect("session");
        echo_once(client.tcp_connect((HOST_ADDR, 7901)).await, b"hello").await;
    });
    // The free constructors' default session (`Client::shared`) is the
    // runtime's own on multi-thread and current-thread runtimes alike. It
    // is opened from `$TCPD_SOCKET`: those parts run as processes of their
    // own with the variable set (changing this process's environment would
    // be unsafe once threads run).
    let (echo, echo_addr) = tcpd_e2e::kernel_listener(&env.ns);
    let echoes = std::thread::spawn(move || {
        // One byte echoed per connection, for every part's connections.
        for conn in echo.incoming() {
            let Ok(mut s) = conn else { break };
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let mut byte = [0u8; 1];
            if s.read_exact(&mut byte).is_ok() && byte[0] == b'q' {
                break;
            }
            let _ = s.write_all(&byte);
        }
    });
    for (part, library) in [
        (
            "default_session_on_a_multi_thread_runtime_is_its_own",
            false,
        ),
        (
            "default_session_on_a_current_thread_runtime_is_its_own",
            false,
        ),
        (
            "default_session_on_a_current_thread_runtime_is_its_own",
            true,
        ),
    ] {
        let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["--exact", part, "--ignored", "--nocapture"])
            .env("TCPD_SOCKET", env.daemon.socket())
            .env(CHILD, "1")
            .env(ECHO_ENV, echo_addr.to_string())
            .env_remove(tcpd_client::BUSY_POLL_ENV);
        if library {
            command.env(tcpd_client::CLIENT_RUNTIME_ENV, "library");
        } else {
            command.env_remove(tcpd_client::CLIENT_RUNTIME_ENV);
        }
        let child = command.output().expect("run the default-session part");
        let said = String::from_utf8_lossy(&child.stdout).into_owned()
            + &String::from_utf8_lossy(&child.stderr);
        assert!(
            child.status.success() && said.contains("1 passed"),
            "the default-session part {part} (library runtime: {library}) failed:\n{said}"
        );
    }
    env.ns.within(move || {
        let mut quit = std::net::TcpStream::connect(echo_addr).expect("connect to stop the echo");
        quit.write_all(b"q").expect("stop the echo");
    });
    echoes.join().expect("echo thread");
    peer.join().expect("peer");
    let names = thread_names();
    assert!(
        !names.iter().any(|n| n.starts_with("tcpd-client-io")),
        "the library started its own runtime: {names:?}"
    );
}

/// The free constructors' default session on a multi-thread runtime, opened
/// from `$TCPD_SOCKET`, lives on that runtime: no library thread. Run by
/// [`a_session_opened_in_a_runtime_runs_on_it`] in a process of its own
/// with the variable set.
#[test]
#[ignore = "run by a_session_opened_in_a_runtime_runs_on_it, with TCPD_SOCKET set"]
fn default_session_on_a_multi_thread_runtime_is_its_own() {
    if std::env::var_os(CHILD).is_none() {
        eprintln!("SKIPPED: run by a_session_opened_in_a_runtime_runs_on_it");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    rt.block_on(async {
        let listener = tcpd_client::TcpListener::bind((tcpd_e2e::TCPD_ADDR, 0))
            .await
            .expect("bind through the default session");
        assert_ne!(listener.local_addr().expect("local").port(), 0);
        let a = tcpd_client::Client::shared().await.expect("default");
        let b = tcpd_client::Client::shared().await.expect("default");
        assert_eq!(a.daemon_path(), b.daemon_path());
    });
    let names = thread_names();
    assert!(
        !names.iter().any(|n| n.starts_with("tcpd-client-io")),
        "the library started its own runtime: {names:?}"
    );
}

/// The free constructors' default session on a current-thread runtime
/// lives on that runtime too: connections through it (`TcpStream::connect`,
/// `TcpSocket::connect`) start no library thread, and its calls busy-poll
/// for the daemon's answers by default (the waiting thread is the one that
/// reads them). `TcpSocket::bind` + `listen`, synchronous as tokio's, wait
/// for the daemon on the runtime's own thread: they use the library's
/// session and neither deadlock nor fail. With `TCPD_CLIENT_RUNTIME=library`
/// the default session is the library's, which does not spin. Run by
/// [`a_session_opened_in_a_runtime_runs_on_it`] in a process of its own
/// with `$TCPD_SOCKET` set.
#[test]
#[ignore = "run by a_session_opened_in_a_runtime_runs_on_it, with TCPD_SOCKET set"]
fn default_session_on_a_current_thread_runtime_is_its_own() {
    if std::env::var_os(CHILD).is_none() {
        eprintln!("SKIPPED: run by a_session_opened_in_a_runtime_runs_on_it");
        return;
    }
    fail_after(Duration::from_secs(60));
    let library = std::env::var(tcpd_client::CLIENT_RUNTIME_ENV).is_ok_and(|v| v == "library");
    let echo: std::net::SocketAddr = std::env::var(ECHO_ENV)
        .expect("echo address")
        .parse()
        .expect("echo address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    rt.block_on(async {
        let client = tcpd_client::Client::shared().await.expect("default");
        let expected = if library {
            tcpd_client::DEFAULT_BUSY_POLL_US
        } else {
            tcpd_client::DEFAULT_CALLER_BUSY_POLL_US
        };
        assert_eq!(client.busy_poll(), Duration::from_micros(expected));
        echo_once(tcpd_client::TcpStream::connect(echo).await, b"x").await;
        let socket = tcpd_client::TcpSocket::new_v4().expect("socket");
        socket.set_nodelay(true).expect("nodelay before connect");
        echo_once(socket.connect(echo).await, b"x").await;
        assert_eq!(
            library_threads_started(),
            library,
            "library threads: {:?}",
            thread_names()
        );
        // Synchronous calls that wait for the daemon on this runtime's only
        // thread.
        let socket = tcpd_client::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket
            .bind((tcpd_e2e::TCPD_ADDR, 0).into())
            .expect("bind waits for the daemon");
        let listener = socket.listen(16).expect("listen");
        assert_ne!(listener.local_addr().expect("local").port(), 0);
    });
}
