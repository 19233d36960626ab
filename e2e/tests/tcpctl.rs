//! `tcpctl` against the real daemon: tcpd in a private network namespace,
//! the Linux kernel as the TCP peer, tcpd-side sockets through tcpd-client,
//! and the `tcpctl` binary run as a user would run it.
//!
//! Covers: `ls --json` during a transfer (ESTABLISHED, queues and byte
//! counters), TIME-WAIT after tcpd closes first and its expiry after 2×MSL
//! (RFC 9293 §3.6.1), LISTEN rows with their owner, `watch` transition
//! sequences for an active and a passive close (RFC 9293 §3.3.2 diagram),
//! `kill` resetting the kernel peer (ECONNRESET), `kill` refused for a
//! non-root caller (exit code 4), and `status`/`stats`.
//!
//! Needs root (namespaces, TUN): skips otherwise, fails under `CI=true`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpd_client::blocking;
use tcpd_e2e::{
    Daemon, HOST_ADDR, Netns, TCPD_ADDR, kernel_listener, require_privileges, wait_until,
};

/// MSL the daemon runs with here, so TIME-WAIT (2×MSL) lasts one second.
const MSL_MS: u64 = 500;

/// MSL of the test that must see TIME-WAIT in `tcpctl ls`: its 4 s span
/// several polls even where one `tcpctl ls` (a process start and a gRPC
/// call of a debug build) takes most of a second on a loaded machine; in 1 s
/// such a machine could miss it.
const LS_TIME_WAIT_MSL_MS: u64 = 2000;

/// Generous limit for anything that should happen "soon" on a loaded machine.
const SOON: Duration = Duration::from_secs(15);

/// A namespace with tcpd running in it, or `None` when the test must skip.
fn start(test: &str) -> Option<(Netns, Daemon)> {
    start_with_msl(test, MSL_MS)
}

/// [`start`] with tcpd's MSL `msl_ms`.
fn start_with_msl(test: &str, msl_ms: u64) -> Option<(Netns, Daemon)> {
    if !require_privileges(test) {
        return None;
    }
    let ns = Netns::new("tcpctl").expect("create namespace");
    let daemon =
        Daemon::start(&ns, &["--msl-ms", &msl_ms.to_string()]).expect("start tcpd in namespace");
    Some((ns, daemon))
}

fn tcpctl_command(daemon: &Daemon, args: &[&str]) -> Command {
    daemon.tcpctl(args)
}

fn tcpctl_command_from(binary: &std::path::Path, daemon: &Daemon, args: &[&str]) -> Command {
    daemon.tcpctl_binary(binary, args)
}

fn tcpctl(daemon: &Daemon, args: &[&str]) -> Output {
    tcpctl_command(daemon, args).output().expect("run tcpctl")
}

/// Runs `tcpctl ARGS --json`, expecting success, and parses its output.
fn tcpctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let output = tcpctl(daemon, &with_json);
    assert_eq!(
        output.status.code(),
        Some(0),
        "tcpctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("tcpctl printed JSON")
}

/// The `ls --json` row of the connection `local` ↔ `remote`, if listed.
fn find_row(daemon: &Daemon, local: SocketAddrV4, remote: SocketAddrV4) -> Option<Value> {
    let rows = tcpctl_json(daemon, &["ls"]);
    rows.as_array()
        .expect("ls --json is an array")
        .iter()
        .find(|r| r["local"] == local.to_string() && r["remote"] == remote.to_string())
        .cloned()
}

/// A kernel listener inside the namespace, on the TUN's host side.
/// Connects from tcpd to the kernel listener; returns both ends and the
/// tcpd side's local address.
fn tcpd_to_kernel(
    client: &tcpd_client::Client,
    listener: &TcpListener,
    target: SocketAddrV4,
) -> (blocking::TcpStream, TcpStream, SocketAddrV4) {
    let stream = blocking::TcpStream::connect_with(client, target).expect("tcpd connect");
    let (kernel, _) = listener.accept().expect("kernel accept");
    let local = match stream.local_addr().expect("tcpd local address") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected address {other}"),
    };
    (stream, kernel, local)
}

#[test]
fn ls_shows_transfer_time_wait_and_expiry() {
    let Some((ns, daemon)) = start_with_msl(
        "ls_shows_transfer_time_wait_and_expiry",
        LS_TIME_WAIT_MSL_MS,
    ) else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);
    let (mut stream, mut kernel, local) = tcpd_to_kernel(&client, &listener, target);

    // tcpd → kernel: 64 KiB, all read by the kernel, so all acknowledged.
    let sent = tcpd_e2e::payload(64 * 1024, 7);
    stream.write_all(&sent).expect("tcpd write");
    let mut received = vec![0u8; sent.len()];
    kernel.read_exact(&mut received).expect("kernel read");
    assert_eq!(received, sent);
    // kernel → tcpd: more than the client library and HTTP/2 buffer, which
    // the tcpd application does not read yet, so it queues in the daemon.
    const BACKLOG: usize = 4 * 1024 * 1024;
    let mut kernel_writer = kernel.try_clone().expect("clone kernel socket");
    let writer = std::thread::spawn(move || {
        kernel_writer
            .write_all(&tcpd_e2e::payload(BACKLOG, 9))
            .expect("kernel write")
    });

    // All 64 KiB sent and acknowledged. `bytes_sent` counts retransmitted
    // bytes too (tcpi_bytes_sent): exactly 64 KiB unless something was
    // retransmitted — on a loaded machine a daemon that reads the ACKs late
    // sends a tail-loss probe (the kernel reports it as a D-SACK), and each
    // retransmission adds at most one MSS.
    let all_sent = |row: &Value| {
        let (Some(sent), Some(retransmits), Some(mss)) = (
            row["bytes_sent"].as_u64(),
            row["retransmits"].as_u64(),
            row["mss"].as_u64(),
        ) else {
            return false;
        };
        row["send_queue"] == 0 && sent >= 64 * 1024 && sent - 64 * 1024 <= retransmits * mss
    };
    let mut last = Value::Null;
    let settled = wait_until(SOON, || {
        last = find_row(&daemon, local, target).unwrap_or(Value::Null);
        all_sent(&last)
            && last["recv_queue"].as_u64().is_some_and(|q| q > 0)
            && last["bytes_received"].as_u64().is_some_and(|b| b > 0)
    });
    assert!(settled, "counters never settled: {last:#}");
    assert_eq!(last["state"], "ESTABLISHED");
    assert_eq!(last["send_queue"], 0);
    assert_eq!(last["owner_pid"], std::process::id());
    assert!(last["mss"].as_u64().is_some_and(|m| m > 0), "{last:#}");
    assert!(
        last["srtt_us"].is_u64() && last["rto_us"].is_u64(),
        "{last:#}"
    );
    // The kernel reads everything: its window is open. tcpd's application
    // reads nothing yet: the window tcpd advertises has shrunk by what it
    // holds. Receive autotuning may have grown the buffer up to tcp_rmem[2]
    // (6 MiB; quickly with TUN offload, as the Stream RPC drains the
    // socket into HTTP/2's window), so window + held bytes stay within it,
    // give or take one MSS (the right edge is rounded up to the window-scale
    // unit and never moves left, RFC 7323 §2.4).
    assert!(last["snd_wnd"].as_u64().is_some_and(|w| w > 0), "{last:#}");
    let rcv_wnd = last["rcv_wnd"].as_u64().unwrap_or(u64::MAX);
    let held = last["recv_queue"].as_u64().unwrap_or(0);
    assert!(rcv_wnd + held <= 6 * 1024 * 1024 + 1448, "{last:#}");

    // The human table shows the same connection on one row.
    let table = String::from_utf8(tcpctl(&daemon, &["ls", "--state", "established"]).stdout)
        .expect("utf-8 table");
    let row = table
        .lines()
        .find(|l| l.contains(&local.to_string()))
        .unwrap_or_else(|| panic!("no row for {local} in\n{table}"));
    assert!(row.starts_with("ESTABLISHED"), "{row}");
    assert!(row.contains(&target.to_string()), "{row}");

    // tcpd reads what it got and closes first; the kernel then closes too.
    let mut unread = vec![0u8; BACKLOG];
    stream.read_exact(&mut unread).expect("tcpd read");
    assert_eq!(unread, tcpd_e2e::payload(BACKLOG, 9));
    writer.join().expect("kernel writer");
    let row = find_row(&daemon, local, target).expect("still listed");
    assert_eq!(row["recv_queue"], 0, "{row:#}");
    assert_eq!(row["bytes_received"], BACKLOG, "{row:#}");
    drop(stream);
    let mut rest = Vec::new();
    kernel
        .set_read_timeout(Some(SOON))
        .expect("kernel read timeout");
    kernel.read_to_end(&mut rest).expect("kernel sees EOF");
    assert!(rest.is_empty());
    drop(kernel);

    // RFC 9293 §3.6.1: the side that closed first waits in TIME-WAIT...
    let mut state = Value::Null;
    let in_time_wait = wait_until(SOON, || {
        state = find_row(&daemon, local, target).map_or(Value::Null, |r| r["state"].clone());
        state == "TIME-WAIT"
    });
    assert!(in_time_wait, "never saw TIME-WAIT, last state {state}");
    let seen_at = Instant::now();
    // ...for 2×MSL, after which the 4-tuple is gone.
    let gone = wait_until(SOON, || find_row(&daemon, local, target).is_none());
    assert!(gone, "TIME-WAIT never expired");
    assert!(
        seen_at.elapsed()
            <= Duration::from_millis(2 * LS_TIME_WAIT_MSL_MS) + Duration::from_secs(5),
        "TIME-WAIT lasted {:?}",
        seen_at.elapsed()
    );
}

#[test]
fn listener_shows_listen_with_owner() {
    let Some((_ns, daemon)) = start("listener_shows_listen_with_owner") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let listener =
        blocking::TcpListener::bind_with(&client, SocketAddrV4::new(TCPD_ADDR, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();

    let rows = tcpctl_json(&daemon, &["ls", "-l"]);
    let rows = rows.as_array().expect("array");
    let row = rows
        .iter()
        .find(|r| r["local"] == format!("{TCPD_ADDR}:{port}"))
        .unwrap_or_else(|| panic!("no listener on port {port}: {rows:?}"));
    assert_eq!(row["state"], "LISTEN");
    assert_eq!(row["remote"], "0.0.0.0:0");
    assert_eq!(row["handle"], listener.handle());
    assert_eq!(row["owner_uid"], 0);
    assert_eq!(row["owner_user"], "root");
    assert_eq!(row["owner_pid"], std::process::id());
    assert!(rows.iter().all(|r| r["state"] == "LISTEN"));

    let table = String::from_utf8(tcpctl(&daemon, &["ls", "--listening"]).stdout).expect("utf-8");
    let line = table
        .lines()
        .find(|l| l.contains(&format!("{TCPD_ADDR}:{port}")))
        .unwrap_or_else(|| panic!("listener missing from\n{table}"));
    assert!(line.starts_with("LISTEN"), "{line}");
    assert!(line.contains("0.0.0.0:*"), "{line}");
    assert!(line.contains("root "), "{line}");
    assert!(
        line.ends_with(&format!("[{}]", std::process::id())),
        "{line}"
    );
}

/// A running `tcpctl watch --json` and the transitions it printed.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    /// Starts `tcpctl watch --json --port PORT` and waits until it has
    /// subscribed (its "watching" line on stderr).
    fn start(daemon: &Daemon, port: u16) -> Watcher {
        let mut child = tcpctl_command(
            daemon,
            &[
                "watch",
                "--json",
                "--port",
                &port.to_string(),
                "--timeout",
                "60",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpctl watch");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut first = String::new();
        BufReader::new(stderr)
            .read_line(&mut first)
            .expect("read watch's stderr");
        assert!(first.contains("watching"), "tcpctl watch said: {first}");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    /// Collects the transitions of `local`↔`remote` until one enters
    /// `last_state`; returns the state path (first old state, then every new).
    fn path_until(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        last_state: &str,
    ) -> Vec<String> {
        let deadline = Instant::now() + SOON;
        let mut path: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no {last_state} for {local}<->{remote}; path so far {path:?}")
            });
            let event: Value = serde_json::from_str(&line).expect("one JSON object per line");
            if event["local"] != local.to_string() || event["remote"] != remote.to_string() {
                continue;
            }
            let old = event["old"].as_str().expect("old").to_string();
            let new = event["new"].as_str().expect("new").to_string();
            assert!(
                event["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{event}"
            );
            match path.last() {
                None => path.push(old),
                // Each transition starts where the previous one ended.
                Some(previous) => assert_eq!(previous, &old, "broken chain: {path:?} then {event}"),
            }
            path.push(new.clone());
            if new == last_state {
                eprintln!("{local} <-> {remote}: {}", path.join(" -> "));
                return path;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_shows_active_close_transitions() {
    let Some((ns, daemon)) = start("watch_shows_active_close_transitions") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);
    let watcher = Watcher::start(&daemon, target.port());

    let (stream, mut kernel, local) = tcpd_to_kernel(&client, &listener, target);
    stream.shutdown(Shutdown::Write).expect("tcpd sends FIN");
    let mut rest = Vec::new();
    kernel.set_read_timeout(Some(SOON)).expect("timeout");
    kernel.read_to_end(&mut rest).expect("kernel sees EOF");
    // Let the kernel's (possibly delayed) ACK of our FIN go out on its own,
    // so FIN-WAIT-2 is visited before the kernel's FIN arrives.
    std::thread::sleep(Duration::from_millis(300));
    drop(kernel);

    let path = watcher.path_until(local, target, "TIME-WAIT");
    let after_open: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s == "CLOSED")
        .collect();
    assert_eq!(
        after_open,
        [
            "SYN-SENT",
            "ESTABLISHED",
            "FIN-WAIT-1",
            "FIN-WAIT-2",
            "TIME-WAIT"
        ],
        "full path {path:?}"
    );
    drop(stream);
}

#[test]
fn watch_shows_passive_close_transitions() {
    let Some((ns, daemon)) = start("watch_shows_passive_close_transitions") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let listener =
        blocking::TcpListener::bind_with(&client, SocketAddrV4::new(TCPD_ADDR, 0)).expect("bind");
    let tcpd_addr = listener.local_addr().expect("address");
    let watcher = Watcher::start(&daemon, tcpd_addr.port());

    let kernel = ns
        .within(move || TcpStream::connect(tcpd_addr))
        .expect("kernel connects to tcpd");
    let kernel_addr = match kernel.local_addr().expect("kernel address") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected address {other}"),
    };
    let (mut stream, _) = listener.accept().expect("tcpd accept");
    // The kernel closes first: tcpd goes to CLOSE-WAIT, sees EOF, closes.
    drop(kernel);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("tcpd sees EOF");
    drop(stream);

    let tcpd_addr = match tcpd_addr {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected address {other}"),
    };
    let path = watcher.path_until(tcpd_addr, kernel_addr, "CLOSED");
    let from_established: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != "ESTABLISHED")
        .collect();
    assert_eq!(
        from_established,
        ["ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"],
        "full path {path:?}"
    );
    let handshake = &path[..path.len() - from_established.len()];
    assert!(
        handshake
            .iter()
            .all(|s| ["CLOSED", "LISTEN", "SYN-RECEIVED"].contains(&s.as_str())),
        "unexpected states before ESTABLISHED: {path:?}"
    );
}

/// The kernel peer's next read: the error it gets (or data/EOF as Ok).
fn kernel_read_result(kernel: &mut TcpStream) -> std::io::Result<usize> {
    kernel
        .set_read_timeout(Some(SOON))
        .expect("kernel read timeout");
    let mut buf = [0u8; 64];
    kernel.read(&mut buf)
}

#[test]
fn kill_resets_the_kernel_peer() {
    let Some((ns, daemon)) = start("kill_resets_the_kernel_peer") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);

    // By 4-tuple.
    let (_stream, mut kernel, local) = tcpd_to_kernel(&client, &listener, target);
    let output = tcpctl(&daemon, &["kill", &local.to_string(), &target.to_string()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("reset {local} {target}\n")
    );
    let err = kernel_read_result(&mut kernel).expect_err("the kernel peer must see a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    // The application still holds its handle: the socket stays listed, as
    // CLOSED, until it closes it (Linux's `ss -K` leaves the same).
    let aborted = wait_until(SOON, || {
        find_row(&daemon, local, target).is_none_or(|r| r["state"] == "CLOSED")
    });
    assert!(aborted, "{:?}", find_row(&daemon, local, target));

    // By filter: state and port.
    let (_stream2, mut kernel2, local2) = tcpd_to_kernel(&client, &listener, target);
    let report = tcpctl_json(
        &daemon,
        &[
            "kill",
            "--state",
            "established",
            "--port",
            &target.port().to_string(),
        ],
    );
    assert_eq!(report["aborted"], 1, "{report:#}");
    assert_eq!(report["targets"][0]["local"], local2.to_string());
    let err = kernel_read_result(&mut kernel2).expect_err("the kernel peer must see a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");

    // Nothing left to kill: exit code 1.
    let output = tcpctl(&daemon, &["kill", &local.to_string(), &target.to_string()]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn kill_as_non_root_is_refused() {
    let Some((ns, daemon)) = start("kill_as_non_root_is_refused") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);
    let (_stream, mut kernel, local) = tcpd_to_kernel(&client, &listener, target);

    // The socket is 0660: open it to `nobody` for this test only.
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod the daemon socket");
    // The build tree may sit where `nobody` cannot reach (a home directory):
    // run a copy from a world-readable scratch directory.
    let scratch = tcpd_e2e::TempDir::new("tcpctl-nobody").expect("scratch dir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod scratch dir");
    let binary = tcpd_e2e::copy_of_binary("tcpctl", scratch.path());
    const NOBODY: u32 = 65534;
    let output = tcpctl_command_from(
        &binary,
        &daemon,
        &["kill", &local.to_string(), &target.to_string()],
    )
    .uid(NOBODY)
    .gid(NOBODY)
    .output()
    .expect("run tcpctl as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("permission denied (EPERM)"), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");

    // Unprivileged listing still works, and the connection is untouched.
    let output = tcpctl_command_from(&binary, &daemon, &["ls", "--json"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run tcpctl as nobody");
    assert_eq!(output.status.code(), Some(0));
    let row = find_row(&daemon, local, target).expect("connection still listed");
    assert_eq!(row["state"], "ESTABLISHED");
    kernel
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    // A signal to the test process (another test's child exiting) may cut
    // the wait short: EINTR is not an answer from the peer.
    let err = loop {
        match kernel.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => break other.expect_err("no data, no reset"),
        }
    };
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "kernel peer saw {err}"
    );
}

#[test]
fn status_and_stats_describe_the_daemon() {
    let Some((ns, daemon)) = start("status_and_stats_describe_the_daemon") else {
        return;
    };
    let status = tcpctl_json(&daemon, &["status"]);
    assert_eq!(status["tun_name"], tcpd_e2e::TUN_NAME);
    assert_eq!(status["address"], TCPD_ADDR.to_string());
    assert_eq!(status["host_address"], HOST_ADDR.to_string());
    assert_eq!(status["prefix_len"], tcpd_e2e::PREFIX_LEN);
    assert_eq!(status["socket_path"], daemon.socket().display().to_string());
    assert_eq!(status["pid"], daemon.pid().expect("running"));
    assert!(status["mtu"].as_u64().is_some_and(|m| m >= 576));

    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);
    let (_stream, _kernel, _local) = tcpd_to_kernel(&client, &listener, target);
    let stats = tcpctl_json(&daemon, &["stats"]);
    assert!(
        stats["counters"]["active_opens"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats:#}"
    );
    assert!(
        stats["counters"]["segments_out"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{stats:#}"
    );
    assert!(
        stats["states"]["ESTABLISHED"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats:#}"
    );

    let text = String::from_utf8(tcpctl(&daemon, &["stats"]).stdout).expect("utf-8");
    assert!(text.contains("Connections by state"), "{text}");
    let text = String::from_utf8(tcpctl(&daemon, &["status"]).stdout).expect("utf-8");
    assert!(
        text.lines().any(|line| line.starts_with("address ")
            && line.trim_end().ends_with(&format!(" {TCPD_ADDR}/24"))),
        "{text}"
    );
}

#[test]
fn daemon_gone_is_exit_code_3() {
    let Some((_ns, mut daemon)) = start("daemon_gone_is_exit_code_3") else {
        return;
    };
    daemon.terminate().expect("stop tcpd");
    let output = tcpctl(&daemon, &["ls"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&daemon.socket().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("TCPD_SOCKET"), "{stderr}");
}

/// Prints real `tcpctl ls`, `ls -i`, `watch`, `stats` and `status` output
/// (run with --nocapture to see it) and checks each has what it should.
#[test]
fn sample_outputs() {
    let Some((ns, daemon)) = start("sample_outputs") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let _tcpd_listener =
        blocking::TcpListener::bind_with(&client, SocketAddrV4::new(TCPD_ADDR, 8080))
            .expect("bind");
    let (listener, target) = kernel_listener(&ns);
    let (watch, _) = tcpd_e2e::spawn_subscribed(
        tcpctl_command(
            &daemon,
            &[
                "watch",
                "--count",
                "5",
                "--port",
                &target.port().to_string(),
                "--timeout",
                "30",
            ],
        )
        .stdout(Stdio::piped()),
        "watching",
    );

    let (mut stream, mut kernel, _local) = tcpd_to_kernel(&client, &listener, target);
    let data = tcpd_e2e::payload(256 * 1024, 3);
    stream.write_all(&data).expect("write");
    let mut sink = vec![0u8; data.len()];
    kernel.read_exact(&mut sink).expect("read");
    kernel.write_all(b"unread by tcpd").expect("write back");
    let (closing, mut closing_kernel, closing_local) = tcpd_to_kernel(&client, &listener, target);
    closing.shutdown(Shutdown::Write).expect("FIN");
    let mut rest = Vec::new();
    closing_kernel.read_to_end(&mut rest).expect("EOF");
    // The kernel's ACK of tcpd's FIN moves it to FIN-WAIT-2 once the
    // daemon has read it (a fixed 200 ms pause saw FIN-WAIT-1 on a loaded
    // machine).
    let mut state = Value::Null;
    assert!(
        wait_until(SOON, || {
            state = find_row(&daemon, closing_local, target)
                .map_or(Value::Null, |r| r["state"].clone());
            state == "FIN-WAIT-2"
        }),
        "the closing connection never reached FIN-WAIT-2, last state {state}"
    );
    for args in [&["ls"][..], &["ls", "-i"]] {
        let output = tcpctl(&daemon, args);
        let text = String::from_utf8_lossy(&output.stdout);
        eprintln!("$ tcpctl {}\n{text}", args.join(" "));
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("ESTABLISHED"))
                .count(),
            1
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("FIN-WAIT-2")).count(),
            1
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("LISTEN")).count(), 1);
    }
    drop(closing_kernel);
    let watched = watch.wait_with_output().expect("watch ends after --count");
    let text = String::from_utf8_lossy(&watched.stdout);
    eprintln!("$ tcpctl watch --count 5 --port {}\n{text}", target.port());
    assert_eq!(watched.status.code(), Some(0));
    assert_eq!(text.lines().count(), 5);
    for args in [&["stats"][..], &["status"]] {
        let output = tcpctl(&daemon, args);
        eprintln!(
            "$ tcpctl {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(output.status.code(), Some(0));
    }
    drop(closing);
}

/// Least privilege (tcpctl(1) PRIVILEGES): a non-root caller sees every
/// connection's addresses and state, as `ss` does, but the handle and
/// owner pid (hence the command) only of its own sockets — in `ls` and in
/// `watch`. Root sees everything.
#[test]
fn non_root_sees_addresses_of_all_but_owners_of_its_own_only() {
    let Some((ns, daemon)) = start("non_root_views") else {
        return;
    };
    let client = blocking::connect_client(daemon.socket()).expect("tcpd session");
    let (listener, target) = kernel_listener(&ns);
    // The socket is 0660: open it to `nobody`; copies of the binaries in a
    // world-readable directory (the build tree may not be).
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod the daemon socket");
    let scratch = tcpd_e2e::TempDir::new("views-nobody").expect("scratch dir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod scratch dir");
    let copy = |name: &str| tcpd_e2e::copy_of_binary(name, scratch.path());
    let (tcpctl_copy, nc_copy) = (copy("tcpctl"), copy("tcpd-nc"));
    const NOBODY: u32 = 65534;

    // nobody watches everything.
    let (mut watch, _) = tcpd_e2e::spawn_subscribed(
        tcpctl_command_from(
            &tcpctl_copy,
            &daemon,
            &["watch", "--json", "--timeout", "60"],
        )
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped()),
        "watching",
    );
    let (tx, events) = mpsc::channel::<Value>();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str(&line) else {
                continue;
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    // Root's connection, then nobody's (tcpd-nc, held open by its stdin).
    let (root_stream, _root_kernel, root_local) = tcpd_to_kernel(&client, &listener, target);
    let mut nc = Command::new(&nc_copy)
        .arg(HOST_ADDR.to_string())
        .arg(target.port().to_string())
        .env("TCPD_SOCKET", daemon.socket())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpd-nc as nobody");
    let (nobody_kernel, nobody_local) = listener.accept().expect("kernel accepts nobody");
    let nobody_local = match nobody_local {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("unexpected peer {other}"),
    };

    let ls_as = |uid: u32| -> Vec<Value> {
        let output = tcpctl_command_from(&tcpctl_copy, &daemon, &["ls", "--json"])
            .uid(uid)
            .gid(NOBODY)
            .output()
            .expect("tcpctl ls");
        assert_eq!(output.status.code(), Some(0));
        serde_json::from_slice::<Value>(&output.stdout)
            .expect("JSON")
            .as_array()
            .expect("array")
            .clone()
    };
    let row = |rows: &[Value], local: SocketAddrV4| -> Value {
        rows.iter()
            .find(|r| r["local"] == local.to_string() && r["remote"] == target.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no row for {local}: {rows:?}"))
    };
    let as_nobody = ls_as(NOBODY);
    let theirs = row(&as_nobody, root_local);
    assert_eq!(theirs["state"], "ESTABLISHED", "{theirs}");
    assert_eq!(
        theirs["handle"], 0,
        "another user's handle is hidden: {theirs}"
    );
    assert_eq!(theirs["owner_pid"], 0, "{theirs}");
    assert!(theirs["owner_process"].is_null(), "{theirs}");
    let mine = row(&as_nobody, nobody_local);
    assert_eq!(mine["state"], "ESTABLISHED");
    assert_ne!(mine["handle"], 0, "own handle shown: {mine}");
    assert_eq!(mine["owner_uid"], NOBODY);
    assert_eq!(mine["owner_pid"], nc.id(), "own pid shown: {mine}");
    // Root sees both owners.
    let as_root = ls_as(0);
    assert_eq!(row(&as_root, root_local)["owner_pid"], std::process::id());
    assert_eq!(row(&as_root, nobody_local)["owner_pid"], nc.id());

    // Watch: root's FIN-WAIT-1 shows without its handle, nobody's
    // ESTABLISHED with it.
    root_stream.shutdown(Shutdown::Write).expect("root's FIN");
    let (mut saw_root, mut saw_own) = (false, false);
    let deadline = Instant::now() + SOON;
    while !(saw_root && saw_own) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("watch events missing: root {saw_root}, own {saw_own}"));
        if event["local"] == root_local.to_string() && event["new"] == "FIN-WAIT-1" {
            assert_eq!(event["handle"], 0, "another user's handle hidden: {event}");
            saw_root = true;
        }
        if event["local"] == nobody_local.to_string() && event["new"] == "ESTABLISHED" {
            assert_ne!(event["handle"], 0, "own handle shown: {event}");
            saw_own = true;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = nc.kill();
    let _ = nc.wait();
    drop(nobody_kernel);
}
