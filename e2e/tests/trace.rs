//! `tcpctl trace` against the real daemon: tcpd in a private namespace with
//! `--impair loss=…`, the Linux kernel as the peer, and the ladder drawn
//! live by the `tcpctl` binary.
//!
//! Checks that the handshake is drawn as the seed draws it (relative SEQ 0,
//! SYN-SENT / SYN-RECEIVED), that the impairer's drops and tcpd's
//! retransmissions are marked (`--X`, `==>`, `[rtx]`), that the close ends
//! in CLOSED and ends the trace, and that a non-root caller may not trace a
//! connection it does not own (exit code 4).
//!
//! Needs root (namespaces, TUN): skips otherwise, fails under `CI=true`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tcpd_client::blocking;
use tcpd_e2e::{Daemon, Netns, kernel_listener, require_privileges};

/// `tcpctl` against the daemon, drawing for an 80-column terminal.
fn tcpctl(daemon: &Daemon, args: &[&str]) -> Command {
    let mut command = daemon.tcpctl(args);
    command.env("COLUMNS", "80");
    command
}

#[test]
fn trace_draws_a_lossy_connection_with_retransmission_marks() {
    if !require_privileges("trace_draws_a_lossy_connection_with_retransmission_marks") {
        return;
    }
    let ns = Netns::new("trace").expect("create namespace");
    let daemon = Daemon::start(&ns, &["--msl-ms", "250", "--impair", "loss=5%,seed=11"])
        .expect("start tcpd");
    let (listener, target) = kernel_listener(&ns);

    let (mut trace, _) = tcpd_e2e::spawn_subscribed(
        tcpctl(
            &daemon,
            &[
                "trace",
                "--next",
                "--port",
                &target.port().to_string(),
                "--timeout",
                "90",
            ],
        )
        .stdout(Stdio::piped()),
        "tracing",
    );

    // Read the ladder as it comes (a full pipe would stall tcpctl).
    let mut out = trace.stdout.take().expect("stdout");
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).expect("trace output");
        text
    });

    // tcpd → kernel: 512 KiB through 5 % loss each way, then both close.
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let mut stream = blocking::TcpStream::connect_with(&client, target).expect("tcpd connect");
    let (mut kernel, _) = listener.accept().expect("kernel accept");
    let sent = tcpd_e2e::payload(512 * 1024, 3);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        kernel
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        kernel.read_to_end(&mut got).expect("kernel reads to EOF");
        got
    });
    stream.write_all(&sent).expect("tcpd write");
    stream.shutdown(std::net::Shutdown::Write).expect("FIN");
    let got = reader.join().expect("reader thread");
    assert_eq!(got.len(), sent.len(), "every byte arrived despite the loss");
    drop(stream);

    // The trace ends by itself once tcpd's side is CLOSED (TIME-WAIT is 0.5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = trace.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = trace.kill();
            let text = collector.join().unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!(
                "tcpctl trace did not end after CLOSED; last rows (newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = collector.join().expect("collector thread");
    assert!(status.success(), "tcpctl trace failed: {status}\n{text}");
    let rows: Vec<&str> = text.lines().collect();
    eprintln!(
        "{}",
        rows.iter().take(14).copied().collect::<Vec<_>>().join("\n")
    );
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        rows.iter()
            .any(|r| squash(r).contains("SYN-SENT --> <SEQ=0><CTL=SYN>")
                || squash(r).contains("SYN-SENT ==> <SEQ=0><CTL=SYN>")),
        "no SYN row:\n{text}"
    );
    assert!(
        rows.iter()
            .any(|r| squash(r).contains("<SEQ=0><ACK=1><CTL=SYN,ACK>")),
        "no SYN,ACK row:\n{text}"
    );
    let retransmissions = rows.iter().filter(|r| r.contains("==>")).count();
    let rtx_marks = rows.iter().filter(|r| r.contains("rtx")).count();
    let drops = rows
        .iter()
        .filter(|r| r.contains("--X") || r.contains("X--"))
        .count();
    eprintln!(
        "{} rows, {retransmissions} retransmissions, {drops} impairer drops",
        rows.len()
    );
    if let Some(first) = rows.iter().position(|r| r.contains("==>")) {
        let from = first.saturating_sub(12);
        let to = (first + 4).min(rows.len());
        eprintln!(
            "around the first retransmission:\n{}",
            rows[from..to].join("\n")
        );
    }
    let tail = rows.len().saturating_sub(12);
    eprintln!("the end:\n{}", rows[tail..].join("\n"));
    assert!(
        retransmissions > 0 && rtx_marks > 0,
        "no retransmission marked:\n{text}"
    );
    assert!(drops > 0, "no impairer drop marked:\n{text}");
    assert!(
        rows.iter().any(|r| r.contains("dropped by impairer")),
        "drops not named"
    );
    let width_ok = rows.iter().filter(|r| r.len() <= 80).count();
    assert!(width_ok * 10 >= rows.len() * 9, "most rows fit 80 columns");
    assert!(
        rows.iter().rev().take(3).any(|r| r.trim() == "CLOSED"),
        "the ladder ends in CLOSED:\n{}",
        rows[rows.len().saturating_sub(5)..].join("\n")
    );
    drop(ns);
}

#[test]
fn trace_of_a_foreign_connection_needs_root() {
    if !require_privileges("trace_of_a_foreign_connection_needs_root") {
        return;
    }
    let ns = Netns::new("tracep").expect("create namespace");
    let daemon = Daemon::start(&ns, &[]).expect("start tcpd");
    // The socket is 0660: open it to `nobody` for this test only, and run a
    // copy of tcpctl from a scratch directory `nobody` can reach.
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let scratch = tcpd_e2e::TempDir::new("trace-nobody").expect("scratch dir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod scratch dir");
    let binary = tcpd_e2e::copy_of_binary("tcpctl", scratch.path());
    let output = Command::new(&binary)
        .arg("--socket")
        .arg(daemon.socket())
        .args(["trace", "--port", "80", "--timeout", "2"])
        .env_remove("TCPD_SOCKET")
        .stdin(Stdio::null())
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run tcpctl as nobody");
    assert_eq!(
        output.status.code(),
        Some(4),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--log-level tcpd_stack=debug --log-format json`: the core's tracing
/// events (state changes, RTO, recovery, drops) come out as JSON lines that
/// carry the connection's span with its 4-tuple.
#[test]
fn debug_logs_carry_the_connection_span() {
    if !require_privileges("debug_logs_carry_the_connection_span") {
        return;
    }
    let ns = Netns::new("tracelog").expect("create namespace");
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--log-level",
            "info,tcpd_stack=debug",
            "--log-format",
            "json",
        ],
    )
    .expect("start tcpd");
    let (listener, target) = kernel_listener(&ns);
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let mut stream = blocking::TcpStream::connect_with(&client, target).expect("tcpd connect");
    let local = stream.local_addr().expect("local address");
    let (mut kernel, _) = listener.accept().expect("kernel accept");
    stream.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    kernel.read_exact(&mut buf).expect("read");
    drop(stream);
    drop(kernel);
    std::thread::sleep(Duration::from_millis(300));
    daemon.terminate().expect("stop tcpd");
    let log = daemon.log_text();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!events.is_empty(), "no JSON log lines:\n{log}");
    let change = events
        .iter()
        .find(|e| {
            e["fields"]["message"] == "state change"
                && e["fields"]["to"] == "ESTABLISHED"
                && e["span"]["local"] == local.to_string()
        })
        .unwrap_or_else(|| panic!("no state change with the span's 4-tuple in:\n{log}"));
    assert_eq!(change["span"]["remote"], target.to_string(), "{change}");
    assert_eq!(change["span"]["name"], "conn", "{change}");
    assert_eq!(change["level"], "DEBUG", "{change}");
}
