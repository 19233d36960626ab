//! The watchdog that keeps a stuck end-to-end test from hanging the suite.
//!
//! A test that waits on the network — a kernel socket reading until EOF, a
//! tcpd stream awaiting data — would wait forever if a segment or a FIN went
//! missing for good. This module bounds that: every [`crate::Netns`] is
//! registered here while it lives, together with the daemons started in it,
//! and a background thread checks the registry once a second. When a
//! namespace outlives the time limit, the watchdog
//!
//! 1. writes a report to stderr (bypassing the test harness's output
//!    capture): the test (thread) that created the namespace, the kernel's
//!    view of its sockets (`ss -tanoi` inside the namespace), tcpd's view
//!    (`tcpctl ls --info`) and the tail of each daemon's log;
//! 2. kills every process in every registered namespace and deletes the
//!    namespaces (the guards of the stuck test will never run);
//! 3. exits the process with status 101, the code of a failed test binary.
//!
//! Invariants: a namespace is in the registry exactly while its `Netns`
//! value lives; the limit is per namespace, counted from its creation.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Default limit on a namespace's life, in seconds. The slowest test in the
/// suite takes about 40 s on an idle 2-core machine; five minutes leaves
/// room for a loaded CI machine without letting a hang eat the CI budget.
const DEFAULT_LIMIT_SECS: u64 = 300;

/// Environment variable overriding the limit (seconds; 0 disables the watchdog).
pub const LIMIT_ENV: &str = "TCPD_E2E_TIMEOUT_SECS";

/// The limit in seconds; `u64::MAX` until first read from the environment.
static LIMIT_SECS: AtomicU64 = AtomicU64::new(u64::MAX);

/// One registered namespace.
struct Entry {
    namespace: String,
    test: String,
    created: Instant,
    /// (API socket, log file) of each daemon started in the namespace.
    daemons: Vec<(PathBuf, PathBuf)>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static START: Once = Once::new();

/// Sets the limit on a namespace's life for this process (a benchmark run
/// needs longer than a test). `None` disables the watchdog. The
/// `TCPD_E2E_TIMEOUT_SECS` environment variable, when set, still wins.
pub fn set_limit(limit: Option<Duration>) {
    if std::env::var_os(LIMIT_ENV).is_none() {
        LIMIT_SECS.store(limit.map_or(0, |d| d.as_secs().max(1)), Ordering::Relaxed);
    }
}

fn limit() -> Option<Duration> {
    let mut secs = LIMIT_SECS.load(Ordering::Relaxed);
    if secs == u64::MAX {
        secs = std::env::var(LIMIT_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_LIMIT_SECS);
        LIMIT_SECS.store(secs, Ordering::Relaxed);
    }
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // A panic while holding the lock leaves the data intact; keep going.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a namespace just created by the current thread's test.
pub(crate) fn register_namespace(namespace: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_string();
    registry().push(Entry {
        namespace: namespace.to_string(),
        test,
        created: Instant::now(),
        daemons: Vec::new(),
    });
    START.call_once(|| {
        // Spawned threads inherit the test's output capture; the report is
        // written with `io::stderr()` directly, which capture does not touch.
        let _ = std::thread::Builder::new()
            .name("e2e-watchdog".into())
            .spawn(watch);
    });
}

/// Records a daemon started in `namespace`, for the report.
pub(crate) fn register_daemon(namespace: &str, socket: PathBuf, log: PathBuf) {
    if let Some(e) = registry().iter_mut().find(|e| e.namespace == namespace) {
        e.daemons.push((socket, log));
    }
}

/// Forgets a namespace (its `Netns` is being dropped).
pub(crate) fn unregister_namespace(namespace: &str) {
    registry().retain(|e| e.namespace != namespace);
}

fn watch() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(limit) = limit() else { continue };
        let expired = registry()
            .iter()
            .find(|e| e.created.elapsed() > limit)
            .map(|e| (e.test.clone(), e.namespace.clone()));
        if let Some((test, namespace)) = expired {
            fail(&test, &namespace, limit);
        }
    }
}

/// Reports, cleans up every registered namespace, and exits the process.
fn fail(test: &str, namespace: &str, limit: Duration) -> ! {
    let entries = std::mem::take(&mut *registry());
    let mut report = format!(
        "\n==== e2e watchdog: test `{test}` still running after {}s (namespace {namespace}); \
         set {LIMIT_ENV} to change the limit ====\n",
        limit.as_secs()
    );
    for e in &entries {
        report += &format!(
            "\n-- namespace {} (test `{}`, {}s old): kernel sockets (ss -tanoi)\n",
            e.namespace,
            e.test,
            e.created.elapsed().as_secs()
        );
        report += &output(Command::new("ip").args(["netns", "exec", &e.namespace, "ss", "-tanoi"]));
        for (socket, log) in &e.daemons {
            report += &format!("-- tcpd at {}: tcpctl ls\n", socket.display());
            report += &output(
                Command::new("timeout")
                    .args([
                        "5",
                        // Not `bin_path`: a panic here would end the watchdog
                        // thread and leave the stuck test hanging after all.
                        &crate::sibling_bin("tcpctl").to_string_lossy(),
                        "--socket",
                    ])
                    .arg(socket)
                    .args(["ls", "--info"]),
            );
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            report += &format!("-- last {} lines of {}\n", tail.len(), log.display());
            for line in tail {
                report += line;
                report.push('\n');
            }
        }
    }
    let _ = std::io::stderr().write_all(report.as_bytes());
    for e in &entries {
        crate::kill_and_delete_namespace(&e.namespace);
    }
    let _ =
        std::io::stderr().write_all(b"==== e2e watchdog: namespaces removed; exiting 101 ====\n");
    std::process::exit(101);
}

/// A command's stdout and stderr, or why it could not run.
fn output(cmd: &mut Command) -> String {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        }
        Err(e) => format!("({cmd:?} failed: {e})\n"),
    }
}
