//! Builds the C test programs in `tests/c/` against libtcpd exactly as a C
//! user would (`pkg-config --cflags --libs tcpd` on the uninstalled build),
//! and runs them against a daemon with kernel peers.
//!
//! The daemon here is `support/kernel_daemon.rs`: it serves the real
//! tcpd.v1 Socket API over a Unix socket but backs sockets with kernel TCP
//! on 127.0.0.1, so these tests need neither root nor the TCP stack and
//! check the shim's side of the contract. `e2e/tests/c_shim.rs` runs the
//! same programs against the real daemon in a network namespace.
//! Needs `cc`, `pkg-config` and `python3`; valgrind for the valgrind test
//! (skipped with a message when missing, failed when CI=true).

#[path = "support/kernel_daemon.rs"]
mod kernel_daemon;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `target/<profile>`: where cargo put libtcpd.so (tests run from
/// `target/<profile>/deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Renders the pkg-config file once and returns PKG_CONFIG_PATH.
fn pkg_config_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(crate_dir().join("pkgconfig.sh"))
            .arg(profile_dir())
            .output()
            .expect("run pkgconfig.sh");
        assert!(
            out.status.success(),
            "pkgconfig.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir().join("pkgconfig")
    })
}

/// Compiles `tests/c/<name>.c` with `cc $(pkg-config --cflags --libs tcpd)`.
/// Compiles each program once per test binary (tests run in parallel and
/// must not rewrite an executable another test is running).
fn compile(name: &str, variant: &str, extra_flags: &str) -> PathBuf {
    static COMPILED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let key = format!("{name}{variant}");
    let mut compiled = COMPILED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = compiled.iter().find(|(k, _)| *k == key) {
        return path.clone();
    }
    let path = compile_uncached(name, variant, extra_flags);
    compiled.push((key, path.clone()));
    path
}

fn compile_uncached(name: &str, variant: &str, extra_flags: &str) -> PathBuf {
    let out_dir = profile_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create c-tests dir");
    let binary = out_dir.join(format!("{name}{variant}"));
    let source = crate_dir().join("tests/c").join(format!("{name}.c"));
    let script = format!(
        "cc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror {extra_flags} -o '{}' '{}' \
         $(pkg-config --cflags --libs tcpd) -Wl,-rpath,'{}' -lpthread",
        binary.display(),
        source.display(),
        profile_dir().display()
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

/// The kernel-socket peers of `tests/c/peer.py`; killed on drop.
struct Peers {
    child: Child,
    echo: u16,
    sha: u16,
    closer: u16,
    closed: u16,
}

impl Peers {
    fn start() -> Peers {
        let mut child = Command::new("python3")
            .arg(crate_dir().join("tests/c/peer.py"))
            .arg("127.0.0.1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 peer.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("peer.py prints its ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("port"))
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

/// A stand-in daemon on a fresh Unix socket.
struct TestDaemon {
    daemon: Option<kernel_daemon::RunningDaemon>,
    dir: PathBuf,
}

impl TestDaemon {
    fn start() -> TestDaemon {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tcpd-cshim-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let daemon = kernel_daemon::start(&dir.join("tcpd.sock"));
        TestDaemon {
            daemon: Some(daemon),
            dir,
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("tcpd.sock")
    }
    /// Stops the daemon: every session's connection closes.
    fn stop(&mut self) {
        self.daemon = None;
    }
    /// Starts a fresh daemon (handle numbers start over) on the same path.
    fn restart(&mut self) {
        self.stop();
        self.daemon = Some(kernel_daemon::start(&self.socket()));
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program args` with TCPD_SOCKET set, killing it after `limit`.
fn run(daemon: &TestDaemon, program: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .env("TCPD_SOCKET", daemon.socket())
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

const TEN_MIB: &str = "10485760";
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn sha_client_sends_10_mib_to_a_kernel_peer() {
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("sha_client", "", "");
    let out = run(
        &daemon,
        &[
            bin.to_str().unwrap(),
            "127.0.0.1",
            &peers.sha.to_string(),
            TEN_MIB,
            "sink",
        ],
        LIMIT,
    );
    assert_success(&out, "sha ok ");
}

#[test]
fn echo_server_serves_concurrent_poll_clients() {
    let daemon = TestDaemon::start();
    let server = compile("echo_server", "", "");
    let client = compile("sha_client", "", "");
    let mut srv = Command::new(&server)
        .args(["127.0.0.1", "0", "3"])
        .env("TCPD_SOCKET", daemon.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn echo_server");
    let mut reader = BufReader::new(srv.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("listening line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening PORT")
        .to_string();
    // Three clients at once, through tcpd as well: a non-blocking poll loop each.
    let clients: Vec<_> = [TEN_MIB, "1000000", "1"]
        .into_iter()
        .map(|bytes| {
            let client = client.clone();
            let port = port.clone();
            let socket = daemon.socket();
            std::thread::spawn(move || {
                Command::new(client)
                    .args(["127.0.0.1", &port, bytes, "echo"])
                    .env("TCPD_SOCKET", socket)
                    .output()
                    .expect("run sha_client")
            })
        })
        .collect();
    for c in clients {
        let out = c.join().expect("client thread");
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_success(&out, "sha ok ");
    }
    let status = srv.wait().expect("echo_server exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("server output");
    assert!(status.success(), "echo_server {status:?}");
    assert!(rest.contains("served 3"), "{rest}");
}

#[test]
fn non_blocking_connect_and_mixed_poll() {
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("nonblock_connect", "", "");
    let out = run(
        &daemon,
        &[
            bin.to_str().unwrap(),
            "127.0.0.1",
            &peers.echo.to_string(),
            &peers.closed.to_string(),
        ],
        LIMIT,
    );
    assert_success(&out, "nonblock_connect ok");
}

#[test]
fn errors_are_posix() {
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("errors", "", "");
    let out = run(
        &daemon,
        &[
            bin.to_str().unwrap(),
            "127.0.0.1",
            &peers.closed.to_string(),
            &peers.closer.to_string(),
        ],
        LIMIT,
    );
    assert_success(&out, "errors ok");
}

#[test]
fn threads_each_with_a_connection() {
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("threads", "", "");
    let out = run(
        &daemon,
        &[
            bin.to_str().unwrap(),
            "127.0.0.1",
            &peers.echo.to_string(),
            "8",
            "300000",
        ],
        LIMIT,
    );
    assert_success(&out, "threads ok 8");
}

#[test]
fn daemon_going_away_fails_calls_cleanly_and_a_new_session_works() {
    let mut daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("daemon_gone", "", "");
    let mut child = Command::new(&bin)
        .args(["127.0.0.1", &peers.echo.to_string(), "restart"])
        .env("TCPD_SOCKET", daemon.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn daemon_gone");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("connected line");
    assert_eq!(line.trim(), "connected");
    std::thread::sleep(Duration::from_millis(100)); // let it block in tcpd_read
    daemon.stop();
    let mut seen = String::new();
    while !seen.contains("daemon_gone ok") {
        line.clear();
        if reader.read_line(&mut line).expect("output") == 0 {
            break;
        }
        seen.push_str(&line);
    }
    assert!(seen.contains("daemon_gone ok"), "{seen}");
    // A new daemon numbers its handles from 1 again: the program's old
    // socket must not alias the new session's first socket.
    daemon.restart();
    std::io::Write::write_all(&mut stdin, b"restarted\n").expect("signal restart");
    let status = child.wait().expect("daemon_gone exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("output");
    eprintln!("{seen}{rest}");
    assert!(
        status.success(),
        "daemon_gone {status:?} (a signal here would be SIGPIPE)"
    );
    assert!(rest.contains("restart ok"), "{rest}");
}

#[test]
fn fork_child_gets_its_own_session() {
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("fork", "", "");
    let out = run(
        &daemon,
        &[bin.to_str().unwrap(), "127.0.0.1", &peers.echo.to_string()],
        LIMIT,
    );
    assert_success(&out, "fork ok");
    assert!(String::from_utf8_lossy(&out.stdout).contains("child ok"));
}

#[test]
fn daemon_not_listening_is_econnrefused() {
    // A socket file nobody listens on: the Unix connect says ECONNREFUSED.
    let bin = compile("errors", "", "");
    let dir = std::env::temp_dir().join(format!("tcpd-cshim-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("stale.sock");
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let out = Command::new(&bin)
        .args(["127.0.0.1", "1", "1"])
        .env("TCPD_SOCKET", &path)
        .output()
        .expect("run errors");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("errno 111:"),
        "want ECONNREFUSED, got: {stderr}"
    );
}

#[test]
fn daemon_unreachable_is_enoent() {
    // No daemon: the first call fails with the Unix connect errno.
    let bin = compile("errors", "", "");
    let dir = std::env::temp_dir().join(format!("tcpd-cshim-none-{}", std::process::id()));
    let out = Command::new(&bin)
        .args(["127.0.0.1", "1", "1"])
        .env("TCPD_SOCKET", dir.join("missing.sock"))
        .output()
        .expect("run errors");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // errors.c's first daemon call is tcpd_socket for the EBADF checks.
    assert!(!out.status.success());
    assert!(stderr.contains("errno 2:"), "want ENOENT, got: {stderr}");
}

#[test]
fn sha_client_is_clean_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "valgrind is required in CI"
        );
        eprintln!("SKIP: valgrind not installed");
        return;
    }
    let daemon = TestDaemon::start();
    let peers = Peers::start();
    let bin = compile("sha_client", "", "");
    let out = run(
        &daemon,
        &[
            "valgrind",
            "--error-exitcode=99",
            "--leak-check=no",
            "-q",
            bin.to_str().unwrap(),
            "127.0.0.1",
            &peers.sha.to_string(),
            "2000000",
            "sink",
        ],
        Duration::from_secs(300),
    );
    assert_success(&out, "sha ok ");
}
