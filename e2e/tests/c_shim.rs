//! libtcpd (the C shim) against the real daemon: the C programs of
//! `client-lib/c/tests/c/` compiled exactly as a C user would
//! (`cc $(pkg-config --cflags --libs tcpd)` on the uninstalled build), run
//! against `tcpd` in a private network namespace, with the Linux kernel as
//! the TCP peer (`peer.py` inside the namespace, at the TUN's host address).
//!
//! Covers: an echo server in a poll loop and an edge-triggered epoll echo
//! server (plain read/write/close) serving kernel clients, a 10 MiB
//! transfer checked by SHA-256 on both ends, non-blocking connect and
//! `poll` mixing tcpd sockets with a pipe, POSIX errno reporting
//! (ECONNREFUSED, EBADF, EINVAL, EFAULT, EPIPE without SIGPIPE...), a
//! multi-threaded client, fork() with a socket shared by parent and child,
//! the 10 MiB client once more under valgrind, and the daemon going away:
//! calls fail cleanly with ECONNABORTED (no SIGPIPE), a restarted daemon
//! gives a new session whose handles never alias the old ones, and a
//! crashed (stale socket file) or stopped daemon fails the first call with
//! ECONNREFUSED or ENOENT (and tcpd_strerror names the socket); select,
//! readv/writev, sendmsg/recvmsg, FIONREAD, non-blocking connect through
//! epoll, close(2) without tcpd_close (released while the program lives),
//! and 1 000 sockets at once in one process; IPv6 (getaddrinfo, sockaddr_in6,
//! IPv4-mapped addresses, IPV6_V6ONLY, a `[::]` listener taking both families). Every socket is a real descriptor (a socketpair
//! the daemon pumps, daemon/server/DESIGN-fds.md).
//!
//! This file is the one place that builds and runs the C programs (the
//! compile, pkg-config and run helpers below); `client-lib/c/tests` keeps
//! only the daemon-free header checks.
//!
//! Needs root (namespaces, TUN), cc, pkg-config and python3: skips without
//! root, fails under `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tcpd_e2e::{
    Daemon, HOST_ADDR, HOST_ADDR6, Netns, TCPD_ADDR, TCPD_ADDR6, require_privileges, target_dir,
};

/// Generous limit for one C program on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(180);
const TEN_MIB: &str = "10485760";

fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-lib/c")
}

/// Renders tcpd.pc for target/<profile> once; returns PKG_CONFIG_PATH.
fn pkg_config_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let profile = target_dir();
        assert!(
            profile.join("libtcpd.so").exists(),
            "{}/libtcpd.so missing: build the workspace first (cargo build --workspace)",
            profile.display()
        );
        let out = Command::new(shim_dir().join("pkgconfig.sh"))
            .arg(&profile)
            .output()
            .expect("run pkgconfig.sh");
        assert!(
            out.status.success(),
            "pkgconfig.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile.join("pkgconfig")
    })
}

/// Compiles `client-lib/c/tests/c/<name>.c` against libtcpd.
/// Compiles each program once per test binary (tests run in parallel and
/// must not rewrite an executable another test is running).
fn compile(name: &str) -> PathBuf {
    static COMPILED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut compiled = COMPILED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = compiled.iter().find(|(k, _)| k == name) {
        return path.clone();
    }
    let path = compile_uncached(name);
    compiled.push((name.to_string(), path.clone()));
    path
}

fn compile_uncached(name: &str) -> PathBuf {
    let profile = target_dir();
    let out_dir = profile.join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create output dir");
    let binary = out_dir.join(name);
    let source = shim_dir().join("tests/c").join(format!("{name}.c"));
    let script = format!(
        "cc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -o '{}' '{}' \
         $(pkg-config --cflags --libs tcpd) -Wl,-rpath,'{}' -lpthread",
        binary.display(),
        source.display(),
        profile.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("PKG_CONFIG_PATH", pkg_config_path())
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// The kernel peers of `peer.py`, listening at HOST_ADDR inside the namespace.
struct Peers {
    child: Child,
    echo: u16,
    sha: u16,
    closer: u16,
    closed: u16,
}

impl Peers {
    fn start(ns: &Netns) -> Peers {
        Peers::start_on(ns, &HOST_ADDR.to_string())
    }

    /// The peers listening on `host` (`::`: both families).
    fn start_on(ns: &Netns, host: &str) -> Peers {
        let mut child = ns
            .command("python3")
            .arg(shim_dir().join("tests/c/peer.py"))
            .arg(host)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 peer.py in the namespace");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("peer.py prints its ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("port number"))
            .collect();
        assert_eq!(ports.len(), 4, "peer.py said {line:?}");
        Peers {
            child,
            echo: ports[0],
            sha: ports[1],
            closer: ports[2],
            closed: ports[3],
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tcpd in a fresh namespace, or `None` when the test must skip.
fn start(test: &str) -> Option<(Netns, Daemon)> {
    if !require_privileges(test) {
        return None;
    }
    let ns = Netns::new("cshim").expect("create namespace");
    let daemon = Daemon::start(&ns, &[]).expect("start tcpd in namespace");
    Some((ns, daemon))
}

/// Runs a tcpd-side C program (outside the namespace: it only talks to the
/// daemon's Unix socket), killing it after `limit`.
fn run(daemon: &Daemon, program: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .env("TCPD_SOCKET", daemon.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn C program");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    eprintln!(
        "$ {}\n--- stdout\n{}--- stderr\n{}",
        program.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn assert_success(out: &Output, expect_line: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit status {:?}", out.status);
    assert!(
        stdout.lines().any(|l| l.starts_with(expect_line)),
        "no line starting {expect_line:?}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs the C program `name` against tcpd with the kernel peers of
/// `peer.py` at HOST_ADDR: the command line is `wrapper...` (valgrind, or
/// nothing), the program, HOST_ADDR, then `args(&peers)`. Checks that it
/// exits 0 and prints a line starting `expect_line`; returns its stdout,
/// or `None` when the test must skip (no privileges).
fn run_against_kernel_peers(
    test: &str,
    wrapper: &[&str],
    name: &str,
    args: impl FnOnce(&Peers) -> Vec<String>,
    limit: Duration,
    expect_line: &str,
) -> Option<String> {
    let (ns, daemon) = start(test)?;
    let peers = Peers::start(&ns);
    let bin = compile(name);
    let host = HOST_ADDR.to_string();
    let args = args(&peers);
    let mut command: Vec<&str> = wrapper.to_vec();
    command.extend([path_str(&bin), &host]);
    command.extend(args.iter().map(String::as_str));
    let out = run(&daemon, &command, limit);
    assert_success(&out, expect_line);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn c_client_sends_10_mib_with_sha256_to_the_kernel() {
    run_against_kernel_peers(
        "c_client_sends_10_mib_with_sha256_to_the_kernel",
        &[],
        "sha_client",
        |peers| vec![peers.sha.to_string(), TEN_MIB.into(), "sink".into()],
        LIMIT,
        "sha ok ",
    );
}

#[test]
fn c_non_blocking_connect_and_mixed_poll() {
    run_against_kernel_peers(
        "c_non_blocking_connect_and_mixed_poll",
        &[],
        "nonblock_connect",
        |peers| vec![peers.echo.to_string(), peers.closed.to_string()],
        LIMIT,
        "nonblock_connect ok",
    );
}

#[test]
fn c_errors_are_posix() {
    run_against_kernel_peers(
        "c_errors_are_posix",
        &[],
        "errors",
        |peers| vec![peers.closed.to_string(), peers.closer.to_string()],
        LIMIT,
        "errors ok",
    );
}

#[test]
fn c_threads_each_with_a_connection() {
    run_against_kernel_peers(
        "c_threads_each_with_a_connection",
        &[],
        "threads",
        |peers| vec![peers.echo.to_string(), "6".into(), "200000".into()],
        LIMIT,
        "threads ok 6",
    );
}

#[test]
fn c_client_is_clean_under_valgrind() {
    if tcpd_e2e::which("valgrind").is_none() {
        assert!(!tcpd_e2e::in_ci(), "valgrind is required under CI=true");
        eprintln!("SKIPPED c_client_is_clean_under_valgrind: valgrind not installed");
        return;
    }
    run_against_kernel_peers(
        "c_client_is_clean_under_valgrind",
        &["valgrind", "--error-exitcode=99", "--leak-check=no", "-q"],
        "sha_client",
        |peers| vec![peers.sha.to_string(), TEN_MIB.into(), "sink".into()],
        Duration::from_secs(400),
        "sha ok ",
    );
}

#[test]
fn c_fork_shares_the_socket_with_the_child() {
    let stdout = run_against_kernel_peers(
        "c_fork_shares_the_socket_with_the_child",
        &[],
        "fork",
        |peers| vec![peers.echo.to_string()],
        LIMIT,
        "fork ok",
    );
    if let Some(stdout) = stdout {
        assert!(stdout.contains("child ok"), "{stdout}");
    }
}

#[test]
fn c_echo_server_serves_kernel_clients() {
    echo_server_serves_kernel_clients("c_echo_server_serves_kernel_clients", "echo_server");
}

/// The same three kernel clients against an edge-triggered epoll server
/// that uses plain read/write/close on its tcpd descriptors.
#[test]
fn c_epoll_edge_triggered_echo_server_serves_kernel_clients() {
    echo_server_serves_kernel_clients(
        "c_epoll_edge_triggered_echo_server_serves_kernel_clients",
        "epoll_server",
    );
}

/// Runs the echo server program `name` (args: IP PORT 3; prints
/// "listening PORT", then "served 3") against three kernel echo clients.
fn echo_server_serves_kernel_clients(test: &str, name: &str) {
    let Some((ns, daemon)) = start(test) else {
        return;
    };
    let server = compile(name);
    let mut srv = Command::new(&server)
        .args([&TCPD_ADDR.to_string(), "0", "3"])
        .env("TCPD_SOCKET", daemon.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the echo server");
    let mut reader = BufReader::new(srv.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("listening line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening PORT")
        .to_string();
    // Three kernel clients at once, each checking its echo by SHA-256.
    let clients: Vec<Child> = ["3000000", "1000000", "1"]
        .iter()
        .map(|bytes| {
            ns.command("python3")
                .arg(shim_dir().join("tests/c/peer.py"))
                .args(["echo-client", &TCPD_ADDR.to_string(), &port, bytes])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 echo-client")
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().expect("echo-client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}");
        assert!(
            out.status.success() && stdout.starts_with("echo-client ok"),
            "{stdout}"
        );
    }
    let status = srv.wait().expect("echo_server exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("server output");
    if !status.success() {
        eprintln!("---- tcpd log ----\n{}", daemon.log_text());
    }
    assert!(status.success(), "echo_server {status:?}");
    assert!(rest.contains("served 3"), "{rest}");
}

#[test]
fn c_program_survives_the_daemon_going_away_and_uses_a_restarted_one() {
    let test = "c_program_survives_the_daemon_going_away_and_uses_a_restarted_one";
    let Some((ns, mut daemon)) = start(test) else {
        return;
    };
    let peers = Peers::start(&ns);
    let bin = compile("daemon_gone");
    let mut child = Command::new(&bin)
        .args([&HOST_ADDR.to_string(), &peers.echo.to_string(), "restart"])
        .env("TCPD_SOCKET", daemon.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn daemon_gone");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("connected line");
    assert_eq!(line.trim(), "connected");
    std::thread::sleep(Duration::from_millis(100)); // let it block in tcpd_read
    daemon.terminate().expect("stop tcpd");
    let mut seen = String::new();
    while !seen.contains("daemon_gone ok") {
        line.clear();
        if reader.read_line(&mut line).expect("output") == 0 {
            break;
        }
        seen.push_str(&line);
    }
    assert!(seen.contains("daemon_gone ok"), "{seen}");
    // `daemon` (stopped) keeps the socket's directory until the test ends.
    let restarted = Daemon::start_at(&ns, daemon.socket(), &[]).expect("restart tcpd");
    std::io::Write::write_all(&mut stdin, b"restarted\n").expect("signal the restart");
    let status = child.wait().expect("daemon_gone exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("output");
    eprintln!("{seen}{rest}");
    if !status.success() {
        eprintln!("---- restarted tcpd log ----\n{}", restarted.log_text());
    }
    assert!(
        status.success(),
        "daemon_gone {status:?} (a signal here would be SIGPIPE)"
    );
    assert!(rest.contains("restart ok"), "{rest}");
}

/// Runs `errors` (whose first daemon call is a `tcpd_socket`) against a
/// daemon that is not there and returns its stderr.
fn errors_without_a_daemon(socket: &Path) -> String {
    let bin = compile("errors");
    let out = Command::new(&bin)
        .args([&HOST_ADDR.to_string(), "1", "1"])
        .env("TCPD_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("run errors");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    assert!(!out.status.success(), "errors succeeded without a daemon");
    stderr
}

/// A crashed tcpd leaves its socket file behind with nobody listening: the
/// first call fails with the Unix connect(2) errno, ECONNREFUSED.
#[test]
fn c_calls_after_a_daemon_crash_fail_with_econnrefused() {
    let Some((_ns, mut daemon)) = start("c_calls_after_a_daemon_crash_fail_with_econnrefused")
    else {
        return;
    };
    let pid = daemon.pid().expect("running daemon");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits pid_t"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL tcpd");
    daemon.terminate().expect("reap tcpd");
    assert!(
        daemon.socket().exists(),
        "a killed tcpd cannot remove its socket file"
    );
    let stderr = errors_without_a_daemon(daemon.socket());
    assert!(
        stderr.contains("errno 111:"),
        "want ECONNREFUSED, got: {stderr}"
    );
    // tcpd_strerror names the socket it tried.
    let path = daemon.socket().display().to_string();
    assert!(
        stderr.contains(&format!("cannot reach the tcpd daemon at {path}")),
        "{stderr}"
    );
}

/// A tcpd stopped cleanly removes its socket file: the first call fails
/// with the Unix connect(2) errno, ENOENT.
#[test]
fn c_calls_after_a_clean_daemon_stop_fail_with_enoent() {
    let Some((_ns, mut daemon)) = start("c_calls_after_a_clean_daemon_stop_fail_with_enoent")
    else {
        return;
    };
    daemon.terminate().expect("stop tcpd");
    assert!(
        !daemon.socket().exists(),
        "tcpd removes its socket file at shutdown"
    );
    let stderr = errors_without_a_daemon(daemon.socket());
    assert!(stderr.contains("errno 2:"), "want ENOENT, got: {stderr}");
    let path = daemon.socket().display().to_string();
    assert!(
        stderr.contains(&format!("cannot reach the tcpd daemon at {path}")),
        "{stderr}"
    );
}

/// The daemon's `api_sockets` counter reaches `want` within 10 s.
fn api_sockets_settle(daemon: &Daemon, want: u64) {
    let rt = tcpd_e2e::runtime();
    rt.block_on(async {
        let mut admin = tcpd_e2e::admin_client(daemon).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = admin
                .stats(tcpd_proto::v2::StatsRequest {})
                .await
                .expect("stats")
                .into_inner();
            let sockets = stats
                .counters
                .iter()
                .find(|c| c.name == "api_sockets")
                .map_or(0, |c| c.value);
            if sockets == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "api_sockets stays {sockets}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Runs `name` with the kernel peers; when it prints a line starting
/// `pause_line` (it has just closed sockets with close(2) and waits on
/// stdin), checks that the daemon released every socket while the program
/// and its session are still alive, then lets it finish and expects
/// `expect_line`.
fn run_with_close_check(
    test: &str,
    name: &str,
    args: impl FnOnce(&Peers) -> Vec<String>,
    pause_line: &str,
    expect_line: &str,
) {
    let Some((ns, daemon)) = start(test) else {
        return;
    };
    let peers = Peers::start(&ns);
    let bin = compile(name);
    let mut child = Command::new(&bin)
        .arg(HOST_ADDR.to_string())
        .args(args(&peers))
        .env("TCPD_SOCKET", daemon.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn C program");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("output") == 0 {
            let _ = child.kill();
            panic!(
                "{name} ended before {pause_line:?}:\n{seen}\n{}",
                daemon.log_text()
            );
        }
        seen.push_str(&line);
        if line.starts_with(pause_line) {
            break;
        }
    }
    api_sockets_settle(&daemon, 0);
    std::io::Write::write_all(&mut stdin, b"go\n").expect("go-ahead");
    let watchdog = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if watchdog.elapsed() > LIMIT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("exit status");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("output");
    eprintln!("{seen}{rest}");
    assert!(status.success(), "{name} {status:?}");
    assert!(
        rest.lines().any(|l| l.starts_with(expect_line)),
        "no line starting {expect_line:?}"
    );
}

/// select, readv/writev, sendmsg/recvmsg, FIONREAD, non-blocking connect
/// through epoll (completed and refused), and close(2) without tcpd_close
/// (the daemon releases the socket while the program still runs).
#[test]
fn c_kernel_calls_on_tcpd_descriptors() {
    run_with_close_check(
        "c_kernel_calls_on_tcpd_descriptors",
        "fdcalls",
        |peers| vec![peers.echo.to_string(), peers.closed.to_string()],
        "closed",
        "fdcalls ok",
    );
}

/// 1 000 tcpd sockets open at once in one process, one epoll set, one
/// round trip each, all closed with close(2) and released by the daemon.
#[test]
fn c_thousand_sockets_at_once() {
    run_with_close_check(
        "c_thousand_sockets_at_once",
        "many",
        |peers| vec![peers.echo.to_string(), "1000".into()],
        "closed 1000",
        "many ok 1000",
    );
}

/// IPv6 through libtcpd (`ipv6.c`): getaddrinfo to `AF_INET6` and connect
/// to a kernel echo server over IPv6, sockaddr_in6 from getpeername/
/// getsockname, IPV6_V6ONLY as Linux; an AF_INET6 socket to an IPv4-mapped
/// address; an `[::]` listener echoing an IPv6 and an IPv4 kernel client,
/// the IPv4 one seen as IPv4-mapped.
#[test]
fn c_ipv6_getaddrinfo_sockaddr_in6_mapped_and_dual_stack_listener() {
    let Some((ns, daemon)) =
        start("c_ipv6_getaddrinfo_sockaddr_in6_mapped_and_dual_stack_listener")
    else {
        return;
    };
    // "::" on the kernel side: its echo server takes IPv6 and IPv4.
    let peers = Peers::start_on(&ns, "::");
    let bin = compile("ipv6");
    let mut program = Command::new(&bin)
        .args([
            HOST_ADDR6.to_string(),
            HOST_ADDR.to_string(),
            peers.echo.to_string(),
        ])
        .env("TCPD_SOCKET", daemon.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ipv6");
    let mut reader = BufReader::new(program.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let port = loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("ipv6 output") == 0 {
            let _ = program.kill();
            panic!("ipv6 ended before listening:\n{seen}");
        }
        seen.push_str(&line);
        if let Some(port) = line.trim().strip_prefix("listening ") {
            break port.to_string();
        }
    };
    for target in [TCPD_ADDR6.to_string(), TCPD_ADDR.to_string()] {
        let out = ns
            .command("python3")
            .arg(shim_dir().join("tests/c/peer.py"))
            .args(["echo-client", &target, &port, "300000"])
            .output()
            .expect("python3 echo-client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("echo-client ok"),
            "{target}: {stdout}"
        );
    }
    let status = program.wait().expect("ipv6 exit");
    std::io::Read::read_to_string(&mut reader, &mut seen).expect("ipv6 output");
    eprintln!("{seen}");
    assert!(status.success(), "ipv6 {status:?}\n{}", daemon.log_text());
    assert!(
        seen.contains(&format!("connected [{TCPD_ADDR6}]:"))
            && seen.contains(&format!("-> [{HOST_ADDR6}]:{}", peers.echo)),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("mapped ok ::ffff:{HOST_ADDR}")),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("accepted {HOST_ADDR6} ")) && seen.contains(" native"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("accepted ::ffff:{HOST_ADDR} ")) && seen.contains(" mapped"),
        "{seen}"
    );
    assert!(seen.contains("ipv6 ok"), "{seen}");
}
