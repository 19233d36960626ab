//! `tcpd-e2e`: the harness for end-to-end tests and benchmarks.
//!
//! Every test gets its own network namespace ([`Netns`], a unique name,
//! deleted by `Drop` even when the test panics), a real `tcpd` started inside
//! it ([`Daemon`], killed by `Drop`), and the Linux kernel as the TCP peer on
//! the other side of tcpd's TUN. Traffic never leaves namespaces the test
//! created. [`require_privileges`] decides whether a test can run: without
//! root it prints why and skips, except under `CI=true`, where it fails.
//! The [`watchdog`] bounds every namespace's life, so a test stuck waiting
//! on the network fails with a report instead of hanging the suite.

pub mod bench;
pub mod watchdog;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// tcpd's own address inside a test namespace.
pub const TCPD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The kernel side of the TUN inside a test namespace.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Prefix length of the TUN link.
pub const PREFIX_LEN: u8 = 24;
/// tcpd's IPv6 address inside a test namespace (the daemon's default
/// `--address6 fd00:77::2/64`).
pub const TCPD_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// The kernel side's IPv6 address (the daemon's default `--host-address6`).
pub const HOST_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// TUN device name inside a test namespace.
pub const TUN_NAME: &str = "tcpd0";

/// True when running under CI (`CI=true`): missing privileges fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether this process may create namespaces and TUN devices.
///
/// Returns `false` (after saying why on stderr) when the test should skip;
/// panics instead under `CI=true`, where a skipped test would hide a failure.
pub fn require_privileges(test: &str) -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_string())
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun is missing".to_string())
    } else if which("ip").is_none() {
        Some("the `ip` command (iproute2) is missing".to_string())
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) if in_ci() => panic!("{test}: cannot run under CI=true: {why}"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (needs root, /dev/net/tun and iproute2)");
            false
        }
    }
}

/// The path of a command on `$PATH`.
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// A workspace binary (`tcpd`, `tcpctl`, `tcpd-nc`, ...) from the target
/// directory this test binary was built into (target/<profile>/).
///
/// Panics with a hint when it is missing: the README's test command builds
/// the workspace before testing.
pub fn bin_path(name: &str) -> PathBuf {
    let p = sibling_bin(name);
    assert!(
        p.exists(),
        "{} not found: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// A copy of the workspace binary `name` in `dir`, mode 0755, for running
/// as another user (the build tree may sit where they cannot reach). `cp`
/// writes it, not this process: a file this process holds open for writing
/// is inherited, for an instant, by every child another test forks
/// meanwhile, and exec of the copy then fails with ETXTBSY (seen under
/// load).
pub fn copy_of_binary(name: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join(name);
    let status = Command::new("cp")
        .arg(bin_path(name))
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {name}: {status}");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the copy");
    copy
}

/// Where [`bin_path`] looks for `name`, whether or not it exists (for
/// callers that must not panic, such as the watchdog's report).
pub(crate) fn sibling_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-binary> or target/<profile>/<bin>
    let mut dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The target profile directory (target/<profile>) the tests were built into.
pub fn target_dir() -> PathBuf {
    let p = bin_path("tcpd");
    p.parent().expect("profile dir").to_path_buf()
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `tcpd-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("tcpd-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        watchdog::register_namespace(&ns.name);
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args...` inside the namespace and fails unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        run(self.command(program).args(args))
    }

    /// Loads the nftables `rules` (the text `nft -f -` reads) inside the
    /// namespace; panics if nft refuses them (a test helper).
    pub fn nft(&self, rules: &str) {
        let mut nft = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        std::io::Write::write_all(&mut nft.stdin.take().expect("nft stdin"), rules.as_bytes())
            .expect("write rules");
        assert!(nft.wait().expect("nft").success(), "nft rules rejected");
    }

    /// Runs `f` on a new thread that has entered the namespace (setns
    /// affects only the calling thread), so kernel sockets it opens live there.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            f()
        })
    }

    /// Runs `f` in the namespace on a helper thread and waits for it.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        watchdog::unregister_namespace(&self.name);
        kill_and_delete_namespace(&self.name);
    }
}

/// Kills anything still running inside namespace `name`, then removes it.
fn kill_and_delete_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> io::Result<TempDir> {
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tcpd-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `tcpd` process running inside a test namespace; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    netns: String,
    _dir: TempDir,
}

impl Daemon {
    /// Starts tcpd in `ns` with the test defaults (TUN tcpd0, 10.77.0.2/24,
    /// host side 10.77.0.1, socket in a temp dir) plus `extra` flags, and waits
    /// until its socket accepts connections.
    pub fn start(ns: &Netns, extra: &[&str]) -> io::Result<Daemon> {
        Daemon::start_under(ns, &[], extra)
    }

    /// As [`Daemon::start`], with tcpd run by `wrapper` (a program and its
    /// arguments that ends by exec'ing the command line it is given, e.g.
    /// one that installs a seccomp filter first): empty runs tcpd itself.
    pub fn start_under(ns: &Netns, wrapper: &[&str], extra: &[&str]) -> io::Result<Daemon> {
        let dir = TempDir::new("daemon")?;
        let socket = dir.path().join("tcpd.sock");
        Daemon::launch(ns, socket, dir, wrapper, extra)
    }

    /// As [`Daemon::start`], but serving the API on `socket` (which the
    /// caller's directory holds and outlives this daemon): how a test
    /// restarts tcpd where its clients expect it, after
    /// [`Daemon::terminate`] stopped the previous one in the same namespace.
    pub fn start_at(ns: &Netns, socket: &Path, extra: &[&str]) -> io::Result<Daemon> {
        let dir = TempDir::new("daemon")?;
        Daemon::launch(ns, socket.to_path_buf(), dir, &[], extra)
    }

    /// Spawns tcpd with its log in `dir` and waits until it is ready.
    fn launch(
        ns: &Netns,
        socket: PathBuf,
        dir: TempDir,
        wrapper: &[&str],
        extra: &[&str],
    ) -> io::Result<Daemon> {
        let log = dir.path().join("tcpd.log");
        let logfile = std::fs::File::create(&log)?;
        let address = format!("{TCPD_ADDR}/{PREFIX_LEN}");
        let host = HOST_ADDR.to_string();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = ns.command(program);
                cmd.args(args).arg(bin_path("tcpd"));
                cmd
            }
            None => ns.command(bin_path("tcpd")),
        };
        cmd.args([
            "--tun",
            TUN_NAME,
            "--address",
            &address,
            "--host-address",
            &host,
        ])
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone()?)
        .stderr(logfile);
        // RUST_LOG overrides --log-level in tcpd: leave it unset for a test
        // that chooses the level itself.
        if std::env::var_os("RUST_LOG").is_none() && !extra.contains(&"--log-level") {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn()?;
        watchdog::register_daemon(ns.name(), socket.clone(), log.clone());
        let mut d = Daemon {
            child: Some(child),
            socket,
            log,
            netns: ns.name().to_string(),
            _dir: dir,
        };
        d.wait_ready(Duration::from_secs(20))?;
        Ok(d)
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        loop {
            // The API socket is bound before the TUN is configured (so a second
            // daemon is refused early): ready means both the socket answers and
            // the kernel side of the TUN carries its address.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() && self.tun_ready() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "tcpd exited early ({status}); log:\n{}",
                    self.log_text()
                )));
            }
            if start.elapsed() > limit {
                return Err(io::Error::other(format!(
                    "tcpd not ready after {limit:?}; log:\n{}",
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the TUN in the daemon's namespace is up with the host address.
    fn tun_ready(&self) -> bool {
        Command::new("ip")
            .args([
                "-n",
                &self.netns,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                TUN_NAME,
                "up",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(&format!("inet {HOST_ADDR}/"))
            })
    }

    /// The daemon's Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (of `ip netns exec`, which execs tcpd: the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `tcpctl ARGS` against this daemon: its socket given explicitly (the
    /// environment's `TCPD_SOCKET` removed), stdin closed.
    pub fn tcpctl(&self, args: &[&str]) -> Command {
        self.tcpctl_binary(&bin_path("tcpctl"), args)
    }

    /// [`Daemon::tcpctl`] with another `tcpctl` binary (a packaged one).
    pub fn tcpctl_binary(&self, binary: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("TCPD_SOCKET")
            .stdin(Stdio::null());
        command
    }

    /// `tcpctl trace --no-time --replay FILE`, which must succeed: the
    /// ladder it draws of a capture.
    pub fn replay_capture(&self, file: &Path) -> String {
        let replay = self
            .tcpctl(&["trace", "--no-time", "--replay"])
            .arg(file)
            .output()
            .expect("tcpctl trace --replay");
        assert!(
            replay.status.success(),
            "tcpctl trace --replay failed: {}",
            String::from_utf8_lossy(&replay.stderr)
        );
        String::from_utf8_lossy(&replay.stdout).into_owned()
    }

    /// The daemon's resident memory in KiB (VmRSS; 0 once it is gone).
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, pid_rss_kib)
    }

    /// Sends SIGTERM and waits for the exit status (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self) -> io::Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("daemon already stopped"))?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return child.wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- tcpd log ----\n{}", self.log_text());
        }
    }
}

/// The resident memory of process `pid` in KiB (VmRSS; 0 if unknown).
pub fn pid_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// SHA-256 of `data`, hex encoded.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random test payload of `len` bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Waits up to `limit` until no connection with `port` at either end is
/// left in tcpd (`tcpctl ls`, TIME-WAIT included) nor in the kernel of `ns`
/// (`ss`: a kernel in LAST-ACK retransmits its FIN even after tcpd forgot
/// the connection): from then on none of its packets crosses the TUN.
/// Whether that happened.
pub fn wait_connections_gone(daemon: &Daemon, ns: &Netns, port: u16, limit: Duration) -> bool {
    let end = format!(":{port}");
    let filter = format!("( sport = {end} or dport = {end} )");
    wait_until(limit, || {
        let tcpd = daemon
            .tcpctl(&["ls", "--json"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        let tcpd_gone = tcpd
            .as_ref()
            .and_then(|rows| rows.as_array())
            .is_some_and(|rows| {
                !rows.iter().any(|r| {
                    [&r["local"], &r["remote"]]
                        .iter()
                        .any(|a| a.as_str().is_some_and(|a| a.ends_with(&end)))
                })
            });
        tcpd_gone
            && ns
                .command("ss")
                .args(["-Htn", "state", "connected", &filter])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
    })
}

/// The start of a pcapng file that holds whole blocks: a file that
/// `tcpctl capture` is still writing may end in part of one.
pub fn pcapng_whole_blocks(bytes: &[u8]) -> &[u8] {
    // Every block: type (4 bytes), total length (4), body, total length
    // again; the section header's byte-order magic (at 8) gives the
    // endianness of them all.
    let Some(magic) = bytes.get(8..12) else {
        return &[];
    };
    let little = magic == 0x1A2B_3C4Du32.to_le_bytes();
    let mut whole = 0;
    while let Some(field) = bytes.get(whole + 4..whole + 8) {
        let field: [u8; 4] = field.try_into().expect("four bytes");
        let len = if little {
            u32::from_le_bytes(field)
        } else {
            u32::from_be_bytes(field)
        } as usize;
        if len < 12 || whole + len > bytes.len() {
            break;
        }
        whole += len;
    }
    &bytes[..whole]
}

/// Waits up to `limit` until the whole blocks `tcpctl capture` has written
/// to `file` satisfy `accounted` (say, hold every packet the daemon's
/// counters say passed) and the file stopped growing (one more look 100 ms
/// later finds it the same): its last chunks may reach the file well after
/// the traffic ended on a loaded machine. Whether that happened.
pub fn wait_capture_written(
    file: &Path,
    limit: Duration,
    mut accounted: impl FnMut(&[u8]) -> bool,
) -> bool {
    let start = Instant::now();
    let mut accounted_at = None;
    loop {
        let bytes = std::fs::read(file).unwrap_or_default();
        let whole = pcapng_whole_blocks(&bytes);
        if accounted_at == Some(bytes.len()) {
            return true;
        }
        accounted_at = (!whole.is_empty() && accounted(whole)).then_some(bytes.len());
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `command`, a tcpctl that subscribes before it reports anything
/// (`watch`, `trace`, `capture`), with its stderr piped, and waits for its
/// first stderr line, which must contain `ready` ("watching", "tracing",
/// "capturing"): from then on it sees every event. The running child and
/// the rest of its stderr.
pub fn spawn_subscribed(
    command: &mut Command,
    ready: &str,
) -> (Child, io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let mut stderr = io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut first = String::new();
    stderr
        .read_line(&mut first)
        .expect("the subscriber's stderr");
    assert!(first.contains(ready), "{command:?} said: {first}");
    (child, stderr)
}

/// A kernel TCP listener on the host side of the TUN (an ephemeral port in
/// `ns`) and its address. The address may appear a moment after tcpd
/// reports ready (EADDRNOTAVAIL until then): binding is retried for 15 s.
pub fn kernel_listener(ns: &Netns) -> (std::net::TcpListener, std::net::SocketAddrV4) {
    let (listener, addr) = kernel_listener_at(ns, IpAddr::V4(HOST_ADDR));
    let std::net::SocketAddr::V4(addr) = addr else {
        unreachable!("bound to an IPv4 address")
    };
    (listener, addr)
}

/// [`kernel_listener`] on any of the host side's addresses (e.g.
/// [`HOST_ADDR6`]).
pub fn kernel_listener_at(ns: &Netns, ip: IpAddr) -> (std::net::TcpListener, std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let listener = loop {
        match ns.within(move || std::net::TcpListener::bind((ip, 0))) {
            Ok(listener) => break listener,
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("kernel listener on {ip}: {e}"),
        }
    };
    let addr = listener.local_addr().expect("listener address");
    (listener, addr)
}

/// The kernel's side of a crossing transfer: accepts one connection on
/// `listener`, sends [`payload`]`(len, seed)` and a FIN from one thread
/// while another reads to EOF; what it read.
pub fn crossing_kernel_side(
    listener: std::net::TcpListener,
    len: usize,
    seed: u64,
) -> std::thread::JoinHandle<Vec<u8>> {
    crossing_kernel_side_reading_every(listener, len, seed, Duration::ZERO)
}

/// [`crossing_kernel_side`] with a reader that pauses `pause` after each
/// read of at most 16 KiB (zero: reads at full speed): a slowly reading
/// peer.
pub fn crossing_kernel_side_reading_every(
    listener: std::net::TcpListener,
    len: usize,
    seed: u64,
    pause: Duration,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            w.write_all(&payload(len, seed)).expect("kernel write");
            w.shutdown(std::net::Shutdown::Write).expect("kernel FIN");
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("kernel read: {e}"),
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        writer.join().expect("kernel writer");
        got
    })
}

/// A two-worker tokio runtime for a test's client side.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An Admin API client on a new session with `daemon`.
pub async fn admin_client(
    daemon: &Daemon,
) -> tcpd_proto::v2::admin_service_client::AdminServiceClient<tonic::transport::Channel> {
    tcpd_proto::v2::admin_service_client::AdminServiceClient::new(
        tcpd_client::connect_channel(daemon.socket())
            .await
            .expect("admin session"),
    )
}

/// The daemon's admin Stats counters, by name.
pub async fn stats_counters(
    admin: &mut tcpd_proto::v2::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
) -> std::collections::BTreeMap<String, u64> {
    admin
        .stats(tcpd_proto::v2::StatsRequest {})
        .await
        .expect("Stats")
        .into_inner()
        .counters
        .into_iter()
        .map(|c| (c.name, c.value))
        .collect()
}

/// A namespace with a running daemon, for a test; the daemon is stopped
/// before the namespace goes (fields drop in declaration order).
#[derive(Debug)]
pub struct Env {
    pub daemon: Daemon,
    pub ns: Netns,
}

impl Env {
    /// Namespace `tag` + a daemon started with `extra` flags, or `None` when
    /// the test must skip (see [`require_privileges`]).
    pub fn setup(tag: &str, extra: &[&str]) -> Option<Env> {
        if !require_privileges(tag) {
            return None;
        }
        let ns = Netns::new(tag).expect("create the test namespace");
        let daemon = Daemon::start(&ns, extra).expect("start tcpd");
        Some(Env { daemon, ns })
    }
}

/// A thread's time on a CPU (ns, from `schedstat`) and its voluntary
/// context switches (each time it blocked); `task` is its `/proc` task
/// directory (`/proc/PID/task/TID`, or `/proc/self/task/TID`).
pub fn thread_sched(task: &str) -> (u64, u64) {
    let on_cpu = std::fs::read_to_string(format!("{task}/schedstat"))
        .expect("schedstat")
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat runtime");
    let voluntary = std::fs::read_to_string(format!("{task}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches");
    (on_cpu, voluntary)
}
