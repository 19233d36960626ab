//! Workloads run by programs nobody here wrote: iperf3 and redis-benchmark
//! from Debian, unmodified. The kernel's figure comes from the program on
//! both ends of the veth pair; tcpd's from the program under `tcpd-run`
//! (its sockets tcpd's), against the same program on the kernel's side of
//! tcpd's TUN. Pinned like the other workloads: client on CPU 0, server
//! (and tcpd) on CPU 1, with `taskset`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

/// Where and how to run one side of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub ns: &'a Netns,
    pub cpu: usize,
    /// `Some(socket)`: run the program under `tcpd-run --socket socket`.
    pub tcpd: Option<&'a Path>,
}

impl Side<'_> {
    fn command(&self, program: &str) -> Command {
        let mut cmd = self.ns.command("taskset");
        cmd.args(["-c", &self.cpu.to_string()]);
        if let Some(socket) = self.tcpd {
            cmd.arg(crate::bin_path("tcpd-run"))
                .arg("--socket")
                .arg(socket)
                .arg("--");
        }
        cmd.arg(program);
        cmd
    }
}

/// A server process, killed when dropped.
#[derive(Debug)]
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command) -> std::io::Result<Background> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Background)
}

/// Runs `cmd` to completion within `limit`; an error names `what`.
fn run(what: &str, mut cmd: Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "{what}: still running after {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

/// Waits until something listens on `port` in the server's namespace (for
/// a tcpd-side server nothing is tried: its listener is the kernel's here).
fn wait_listening(ns: &Netns, port: u16, limit: Duration) -> std::io::Result<()> {
    let filter = format!("sport = :{port}");
    let ok = crate::wait_until(limit, || {
        ns.command("ss")
            .args(["-Hltn", &filter])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "nothing listens on port {port}"
        )))
    }
}

/// Whether the programs of these workloads are installed.
pub fn available(programs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| crate::which(p).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not installed: {}", missing.join(", ")))
    }
}

/// One iperf3 run of `seconds` (whole seconds, at least 1) from `client` to
/// a one-off `iperf3 -s` at `server_addr:port` on `server`; `reverse`: the
/// server sends (`-R`). Returns the receiver's Gbit/s.
pub fn iperf3_gbit(
    client: Side<'_>,
    server: Side<'_>,
    server_addr: Ipv4Addr,
    port: u16,
    seconds: Duration,
    reverse: bool,
) -> std::io::Result<f64> {
    let mut cmd = server.command("iperf3");
    cmd.args(["-s", "-1", "-4", "-p", &port.to_string(), "-B"])
        .arg(server_addr.to_string());
    let _server = spawn(cmd)?;
    wait_listening(server.ns, port, Duration::from_secs(20))?;
    let secs = seconds.as_secs().max(1);
    let mut cmd = client.command("iperf3");
    cmd.args(["-c", &server_addr.to_string(), "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    let out = run("iperf3 -c", cmd, Duration::from_secs(secs * 4 + 30))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| std::io::Error::other(format!("iperf3 -J: {e}")))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| std::io::Error::other(format!("iperf3 -J: no end.sum_received: {report}")))
}

/// The tests `redis_ops` runs, as redis-benchmark names them.
pub const REDIS_TESTS: [&str; 2] = ["SET", "GET"];

/// A redis-server on `server` at `addr:port`, and redis-benchmark from
/// `client` (`-t set,get -n requests`, 50 clients): requests/s per test,
/// in [`REDIS_TESTS`] order.
pub fn redis_ops(
    client: Side<'_>,
    server: Side<'_>,
    addr: Ipv4Addr,
    port: u16,
    requests: usize,
    scratch: &Path,
) -> std::io::Result<Vec<f64>> {
    let mut cmd = server.command("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind"])
        .arg(addr.to_string())
        .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .current_dir(scratch);
    let _server = spawn(cmd)?;
    let ready = Instant::now();
    loop {
        // redis-cli PING from the client's side until the server answers.
        let mut ping = client.command("redis-cli");
        ping.args(["-h", &addr.to_string(), "-p", &port.to_string(), "ping"]);
        if run("redis-cli ping", ping, Duration::from_secs(10))
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        {
            break;
        }
        if ready.elapsed() > Duration::from_secs(20) {
            return Err(std::io::Error::other("redis-server did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = client.command("redis-benchmark");
    cmd.args(["-h", &addr.to_string(), "-p", &port.to_string()])
        .args(["-t", "set,get", "-n", &requests.to_string(), "--csv"]);
    let out = run("redis-benchmark", cmd, Duration::from_secs(300))?;
    let csv = String::from_utf8_lossy(&out.stdout);
    REDIS_TESTS
        .iter()
        .map(|test| {
            let prefix = format!("\"{test}\",");
            csv.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|rest| rest.split(',').next())
                .and_then(|rps| rps.trim_matches('"').parse::<f64>().ok())
                .ok_or_else(|| {
                    std::io::Error::other(format!("redis-benchmark: no {test} in:\n{csv}"))
                })
        })
        .collect()
}
