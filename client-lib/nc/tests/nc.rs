//! tcpd-nc against the real daemon in a namespace, the Linux kernel on the
//! far side of the TUN: connect mode and listen mode over
//! both families (`-4`/`-6`), and its error messages.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR, HOST_ADDR6, TCPD_ADDR, TCPD_ADDR6, wait_until};

const LIMIT: Duration = Duration::from_secs(20);

fn nc(env: &Env) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpd-nc"));
    cmd.arg("-s").arg(env.daemon.socket());
    cmd
}

/// Runs `cmd` with `input` on stdin, killing it after [`LIMIT`].
fn run(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpd-nc starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("feed stdin");
    drop(stdin);
    let id = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if done_rx.recv_timeout(LIMIT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
        }
    });
    let out = child.wait_with_output().expect("tcpd-nc output");
    let _ = done_tx.send(());
    let _ = guard.join();
    out
}

/// The addresses a test uses over one family: the kernel side's, tcpd's,
/// and tcpd-nc's family flag.
fn family(v6: bool) -> (IpAddr, IpAddr, &'static str) {
    if v6 {
        (HOST_ADDR6.into(), TCPD_ADDR6.into(), "-6")
    } else {
        (HOST_ADDR.into(), TCPD_ADDR.into(), "-4")
    }
}

#[test]
fn nc_connects_and_sends_stdin_then_prints_the_reply() {
    connects_and_sends_stdin(false, 7701);
}

#[test]
fn nc_6_connects_over_ipv6_and_sends_stdin_then_prints_the_reply() {
    connects_and_sends_stdin(true, 7703);
}

fn connects_and_sends_stdin(v6: bool, port: u16) {
    let Some(env) = Env::setup(if v6 { "nc-connect6" } else { "nc-connect" }, &[]) else {
        return;
    };
    let (host, _, flag) = family(v6);
    let (ready_tx, ready_rx) = mpsc::channel();
    let kernel = env.ns.spawn(move || {
        let listener = std::net::TcpListener::bind((host, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (mut s, peer) = listener.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to nc's FIN");
        s.write_all(b"reply from the kernel\n").expect("reply");
        (got, peer)
    });
    ready_rx.recv().expect("listener ready");
    let mut cmd = nc(&env);
    cmd.args([flag, &host.to_string(), &port.to_string()]);
    let out = run(cmd, b"hello from tcpd-nc\n");
    assert!(out.status.success(), "{out:?}");
    let (got, peer) = kernel.join().expect("kernel");
    assert_eq!(got, b"hello from tcpd-nc\n");
    assert_eq!(peer.is_ipv6(), v6, "{peer}");
    assert_eq!(out.stdout, b"reply from the kernel\n");
}

#[test]
fn nc_listens_and_prints_what_a_kernel_client_sends() {
    listens_and_prints(false, 7702);
}

/// `tcpd-nc -l -6 PORT` listens on `[::]`: an IPv6 kernel client gets in.
#[test]
fn nc_6_listens_on_any_ipv6_and_prints_what_a_kernel_client_sends() {
    listens_and_prints(true, 7704);
}

fn listens_and_prints(v6: bool, port: u16) {
    let Some(env) = Env::setup(if v6 { "nc-listen6" } else { "nc-listen" }, &[]) else {
        return;
    };
    let (_, tcpd, flag) = family(v6);
    let mut cmd = nc(&env);
    if v6 {
        // No ADDR: -6 listens on `::`.
        cmd.args(["-l", flag, &port.to_string()]);
    } else {
        cmd.args(["-l", &tcpd.to_string(), &port.to_string()]);
    }
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = out_tx.send(run(cmd, b"greetings\n"));
    });
    let target = SocketAddr::new(tcpd, port);
    let got = env.ns.within(move || {
        let mut stream = None;
        assert!(
            wait_until(LIMIT, || {
                stream = std::net::TcpStream::connect(target).ok();
                stream.is_some()
            }),
            "tcpd-nc listens"
        );
        let mut s = stream.expect("connected");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(b"data from the kernel\n").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read nc's stdin");
        got
    });
    let out = out_rx.recv_timeout(LIMIT * 2).expect("tcpd-nc ends");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"data from the kernel\n");
    assert_eq!(got, b"greetings\n");
}

#[test]
fn nc_errors_name_the_errno_or_the_daemon() {
    let Some(env) = Env::setup("nc-errors", &[]) else {
        return;
    };
    let mut cmd = nc(&env);
    cmd.args([HOST_ADDR.to_string(), "1".into()]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection refused (ECONNREFUSED)"), "{err}");

    let missing = env.daemon.socket().with_file_name("missing.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpd-nc"));
    cmd.arg("-s").arg(&missing).args(["10.77.0.1", "7"]);
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("tcpd daemon at {}", missing.display())),
        "{err}"
    );
}
