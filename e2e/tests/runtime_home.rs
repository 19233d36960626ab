//! A session opened inside a tokio runtime runs on that runtime: on a
//! current-thread runtime, a whole connection (open, data both ways, close)
//! runs with no thread of the library's own (`tcpd-client-io`), and so does
//! the default session of the free constructors (`TcpListener::bind`) on a
//! multi-thread runtime. This test
//! is its own binary, so no other test starts that runtime.

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

/// Set for the process that runs
/// [`default_session_on_a_multi_thread_runtime_is_its_own`].
const CHILD: &str = "TCPD_E2E_RUNTIME_HOME_CHILD";

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
        let mut stream = client
            .tcp_connect((HOST_ADDR, 7901))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
        stream.close().await.expect("close");
    });
    // The free constructors' default session (`Client::shared`) is a
    // multi-thread runtime's own too (on a current-thread runtime it is the
    // library's, whose threads work in parallel with the application). It
    // is opened from `$TCPD_SOCKET`: that part runs as a process of its own
    // with the variable set (changing this process's environment would be
    // unsafe once threads run).
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "default_session_on_a_multi_thread_runtime_is_its_own",
            "--ignored",
            "--nocapture",
        ])
        .env("TCPD_SOCKET", env.daemon.socket())
        .env(CHILD, "1")
        .output()
        .expect("run the default-session part");
    let said = String::from_utf8_lossy(&child.stdout).into_owned()
        + &String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success() && said.contains("1 passed"),
        "the default-session part failed:\n{said}"
    );
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
