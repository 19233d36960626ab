//! tcpd-bench: measures tcpd against the Linux kernel on this machine, in one
//! run, and prints each workload's figures side by side with their ratio.
//!
//!   tcpd-bench            full run (5 s per measurement, 5 repetitions)
//!   tcpd-bench --quick    about a minute
//!   tcpd-bench --smoke    seconds: proves the benchmark works (CI)
//!
//! Needs root (it creates network namespaces and starts tcpd in one). See the
//! module docs of `tcpd_e2e::bench` for the topologies and CPU pinning.
//!
//! Every client loop runs under a deadline (its planned duration plus a
//! margin): a hang becomes an error naming the workload, and the run ends
//! by itself, removing its namespaces and stopping its daemon.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use tcpd_e2e::bench::workloads::{
    self, HoldProcess, KernelDialer, Server, ServerKind, TcpdDialer, TcpdLibraryDialer,
};
use tcpd_e2e::bench::{self, Summary, TunCounters};
use tcpd_e2e::{Daemon, HOST_ADDR, Netns, TUN_NAME};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Measure tcpd against the Linux kernel, side by side, in one run"
)]
struct Args {
    /// About a minute: 1 s measurements, 3 repetitions, 10k idle connections.
    #[arg(long)]
    quick: bool,
    /// A few seconds: proves every workload still runs (used by CI).
    #[arg(long)]
    smoke: bool,
    /// Repetitions per figure (overrides the mode's default).
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds per measurement (overrides the mode's default).
    #[arg(long)]
    seconds: Option<f64>,
    /// Idle-connection counts to try (overrides the mode's default:
    /// 100 smoke, 10000 quick, 1000,10000,100000 full), e.g. `--idle 10000`.
    #[arg(long, value_delimiter = ',')]
    idle: Vec<usize>,
    /// Concurrent streams of the `streams` workload (overrides the mode's
    /// default: 4 smoke, 100 otherwise).
    #[arg(long)]
    streams: Option<usize>,
    /// Link MTU for tcpd's TUN (tcpd `--mtu`; default 1500 like the veth).
    #[arg(long)]
    tcpd_mtu: Option<u16>,
    /// tcpd's TUN offload (tcpd `--offload`; default on).
    #[arg(long, value_parser = ["on", "off"])]
    tcpd_offload: Option<String>,
    /// One more flag for the benchmark's tcpd, repeatable, e.g.
    /// `--tcpd-arg=--driver-thread=on` (not for the impaired group's own
    /// daemons).
    #[arg(long = "tcpd-arg", value_name = "ARG", allow_hyphen_values = true)]
    tcpd_args: Vec<String>,
    /// Leave tcpd's threads unpinned (by default they share CPU 1 with the
    /// kernel peer), so the daemon may use both CPUs.
    #[arg(long)]
    tcpd_unpinned: bool,
    /// Diagnostic: SO_SNDBUF of the kernel-side sources the "client
    /// receives" rows read from, in the kernel's and tcpd's runs alike (not
    /// the impaired rows' helper processes); default: the kernel autotunes
    /// it up to 4 MiB. See e2e/BENCHMARKS.md, round 4.
    #[arg(long)]
    source_sndbuf: Option<usize>,
    /// Measure only these workload groups (comma-separated), e.g.
    /// `--only streams` or `--only bulk,rr`; default all.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Group>,
    /// Same as `--only bulk,impaired`: bulk transfer both ways, its CPU
    /// cost, and bulk under impairment.
    #[arg(long, conflicts_with = "only")]
    bulk_only: bool,
    /// Same as `--only rpc,connections,hyper`: the control path (the unary
    /// RPC round trip, the connection rate and latency, the hyper workloads).
    #[arg(long, conflicts_with_all = ["only", "bulk_only"])]
    control_only: bool,
    /// Same as `--only programs`: the unmodified programs (iperf3,
    /// redis-benchmark under tcpd-run beside the same programs over the veth).
    #[arg(long, conflicts_with_all = ["only", "bulk_only", "control_only"])]
    programs_only: bool,
    /// Internal: run as the idle-connection holder inside this namespace
    /// (see `workloads::HoldProcess`).
    #[arg(long, hide = true, requires = "hold_addr")]
    hold_helper: Option<String>,
    #[arg(long, hide = true)]
    hold_addr: Option<SocketAddr>,
    #[arg(long, hide = true, default_value_t = PEER_CPU)]
    hold_cpu: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/tcpd-bench.json")]
    json: PathBuf,
    /// Internal: measure "bulk under impairment" with this `--impair` spec
    /// in a fresh namespace and daemon, print the result line, exit (see
    /// [`impaired_rows`]; a process of its own because `tcpd-client`'s
    /// session follows `$TCPD_SOCKET` for the whole process).
    #[arg(long, hide = true)]
    impaired_helper: Option<String>,
}

/// The links of the "bulk under impairment" workload (issue 10): tcpd's
/// `--impair` specs, each applied in both directions.
const IMPAIRMENTS: [&str; 3] = ["loss=2%,delay=5ms", "loss=1%,delay=5ms", "delay=20ms"];

/// The kernel's congestion control on the impaired link. Like for like
/// with tcpd's default: this machine's kernel defaults to bbr, which is not
/// loss-based and would measure a different algorithm, not a different stack.
const IMPAIRED_KERNEL_CC: &str = "cubic";

const KERNEL_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const KERNEL_SERVER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
/// The veth's IPv6 addresses (the `ipv6` group).
const KERNEL_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 1);
const KERNEL_SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, 2);
const CLIENT_CPU: usize = 0;
const PEER_CPU: usize = 1;

/// Idle connections per server port: below the 28,232 ephemeral ports of
/// Linux's default `ip_local_port_range` (32768–60999), which tcpd uses
/// too, since one client address reaches
/// one server port through at most that many local ports. Larger counts are
/// spread over several server ports.
const IDLE_PER_SERVER_PORT: usize = 8_000;

/// Memory the machine must have available per idle connection before the
/// benchmark tries a size (kernel client and server sockets, the peer's
/// sockets on the tcpd side, and tcpd's own state, with a wide margin).
const IDLE_MEMORY_PER_CONNECTION: u64 = 48 * 1024;

/// The workload groups, in the order they run (`--only` picks some).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Bulk transfer both directions (Rust and C shim) and its CPU cost.
    Bulk,
    /// Bulk under tcpd's `--impair` (loss, delay).
    Impaired,
    /// Bulk both directions and 1-byte request/response over IPv6 (tcpd's
    /// default fd00:77::/64 vs the kernel over IPv6 on the veth).
    Ipv6,
    /// 1-byte request/response (Rust and C shim).
    Rr,
    /// The unary RPC round trip (GetSockName).
    Rpc,
    /// Connect + 1-byte exchange + close (Rust and C shim).
    Connections,
    /// hyper HTTP/1.1, keep-alive and a new connection per GET.
    Hyper,
    /// iperf3 and redis-benchmark under tcpd-run.
    Programs,
    /// Many concurrent bulk streams on one client session.
    Streams,
    /// Opening idle connections and their memory.
    Idle,
}

impl Args {
    /// The groups this run measures.
    fn groups(&self) -> Vec<Group> {
        if self.bulk_only {
            vec![Group::Bulk, Group::Impaired]
        } else if self.control_only {
            vec![Group::Rpc, Group::Connections, Group::Hyper]
        } else if self.programs_only {
            vec![Group::Programs]
        } else if self.only.is_empty() {
            <Group as clap::ValueEnum>::value_variants().to_vec()
        } else {
            self.only.clone()
        }
    }
}

struct Plan {
    seconds: Duration,
    reps: usize,
    idle: Vec<usize>,
    streams: usize,
}

impl Plan {
    /// The deadline of a client loop planned to take `work`: generous, so
    /// only a real hang trips it on a loaded machine.
    fn limit(&self, work: Duration) -> Duration {
        work * 4 + Duration::from_secs(30)
    }

    /// The deadline for opening `n` idle connections (tcpd in a debug build
    /// opens about 1,500 a second).
    fn idle_limit(n: usize) -> Duration {
        Duration::from_secs(30) + Duration::from_millis(5 * n as u64)
    }
}

/// One row of the table: the kernel's and tcpd's figures for one workload.
struct Row {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
    kernel: Option<Summary>,
    tcpd: Option<Summary>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (k, t) = (self.kernel?, self.tcpd?);
        (k.median != 0.0).then(|| t.median / k.median)
    }
}

fn fmt_summary(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.median >= 100.0 => format!("{:.0} ±{:.0}%", s.median, s.spread_percent()),
        Some(s) => format!("{:.3} ±{:.0}%", s.median, s.spread_percent()),
        None => "n/a".into(),
    }
}

fn print_table(rows: &[Row], plan: &Plan, notes: &[String], args: &Args) {
    println!();
    let tcpd_cpu = if args.tcpd_unpinned {
        format!("peer on CPU {PEER_CPU}, tcpd unpinned")
    } else {
        format!("peer and tcpd on CPU {PEER_CPU}")
    };
    let tcpd_args = if args.tcpd_args.is_empty() {
        String::new()
    } else {
        format!("; tcpd {}", args.tcpd_args.join(" "))
    };
    println!(
        "tcpd-bench: median of {} runs of {:.1} s (± half the range); client on CPU {CLIENT_CPU}, {tcpd_cpu}{tcpd_args}",
        plan.reps,
        plan.seconds.as_secs_f64()
    );
    println!(
        "{:<52} {:>16} {:>16} {:>11}",
        "workload", "kernel", "tcpd", "tcpd/kernel"
    );
    for r in rows {
        let ratio = r.ratio().map_or("n/a".into(), |x| format!("{x:.3}"));
        println!(
            "{:<52} {:>16} {:>16} {:>11}",
            format!("{} ({})", r.name, r.unit),
            fmt_summary(r.kernel),
            fmt_summary(r.tcpd),
            ratio
        );
    }
    for note in notes {
        println!("note: {note}");
    }
}

/// A tcpd-only row for an average TUN syscall size.
fn tun_row(name: &str, bytes: f64) -> Row {
    Row {
        name: name.into(),
        unit: "bytes",
        higher_is_better: true,
        kernel: None,
        tcpd: Summary::of(&[bytes]),
    }
}

/// A repetition's own (kernel, tcpd) servers, if it needs them, and the
/// addresses its kernel and tcpd clients dial.
type RepServers = (Option<(Server, Server)>, SocketAddr, SocketAddr);

/// Whether the daemon serves the fd path (libtcpd): not with several
/// shards (`--shards N`, N > 1), where its C rows are skipped (n/a).
fn fd_path(tcpd_args: &[String]) -> bool {
    let mut args = tcpd_args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--shards") {
            Some("") => args.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => continue,
        };
        if value.and_then(|v| v.parse::<usize>().ok()).unwrap_or(1) > 1 {
            return false;
        }
    }
    true
}

fn repeat(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Option<Summary>> {
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        v.push(f()?);
    }
    Ok(Summary::of(&v))
}

/// `reps` runs of bulk send for `dur` to a sink on each side: the kernel's
/// and tcpd's Gbit/s.
fn bulk_send_runs(
    topo: &Topology,
    reps: usize,
    limit: Duration,
    dur: Duration,
    ksink: SocketAddr,
    tsink: SocketAddr,
) -> Result<(Option<Summary>, Option<Summary>)> {
    let kernel = repeat(reps, || {
        Ok(kernel_run(topo, limit, move |d| workloads::bulk_send(d, ksink, dur))?.gbit_per_s())
    })?;
    let tcpd = repeat(reps, || {
        Ok(tcpd_run(tsink, limit, move |d, addr| {
            workloads::bulk_send(d, addr, dur)
        })?
        .gbit_per_s())
    })?;
    Ok((kernel, tcpd))
}

/// `reps` runs of bulk receive from a source on each side: the kernel's
/// and tcpd's Gbit/s.
fn bulk_recv_runs(
    topo: &Topology,
    reps: usize,
    limit: Duration,
    ksrc: SocketAddr,
    tsrc: SocketAddr,
) -> Result<BulkRecv> {
    let daemon_pid = topo.daemon.pid().unwrap_or(0);
    let mut cpu_kernel = Vec::new();
    let kernel = repeat(reps, || {
        let busy0 = bench::system_busy_seconds()?;
        let tr = kernel_run(topo, limit, move |d| workloads::bulk_recv(d, ksrc))?;
        cpu_kernel.push((bench::system_busy_seconds()? - busy0) / (tr.bytes as f64 / 1e9));
        Ok(tr.gbit_per_s())
    })?;
    let (mut cpu_tcpd, mut cpu_daemon) = (Vec::new(), Vec::new());
    bench::mark("bulk, client receives (tcpd)", true);
    let tcpd = repeat(reps, || {
        let busy0 = bench::system_busy_seconds()?;
        let d0 = bench::process_cpu_seconds(daemon_pid)?;
        let tr = tcpd_run(tsrc, limit, workloads::bulk_recv)?;
        let gb = tr.bytes as f64 / 1e9;
        cpu_tcpd.push((bench::system_busy_seconds()? - busy0) / gb);
        cpu_daemon.push((bench::process_cpu_seconds(daemon_pid)? - d0) / gb);
        Ok(tr.gbit_per_s())
    })?;
    bench::mark("bulk, client receives (tcpd)", false);
    Ok(BulkRecv {
        kernel,
        tcpd,
        cpu: Row {
            name: "CPU per GB received, whole machine".into(),
            unit: "CPU-s/GB",
            higher_is_better: false,
            kernel: Summary::of(&cpu_kernel),
            tcpd: Summary::of(&cpu_tcpd),
        },
        cpu_daemon: Row {
            name: "CPU per GB received, tcpd daemon only".into(),
            unit: "CPU-s/GB",
            higher_is_better: false,
            kernel: None,
            tcpd: Summary::of(&cpu_daemon),
        },
    })
}

/// What [`bulk_recv_runs`] measured: throughput and CPU per GB received.
struct BulkRecv {
    kernel: Option<Summary>,
    tcpd: Option<Summary>,
    cpu: Row,
    cpu_daemon: Row,
}

/// `reps` rounds of 1-byte request/response for `dur` against the kernel's
/// and tcpd's echo servers (`echo`: kernel side, tcpd side), the kernel and
/// tcpd runs of a round back to back, then `also` (another client's run in
/// the same round).
fn request_response_runs(
    topo: &Topology,
    reps: usize,
    limit: Duration,
    dur: Duration,
    echo: (SocketAddr, SocketAddr),
    mut also: impl FnMut() -> Result<()>,
) -> Result<(Vec<workloads::PingPong>, Vec<workloads::PingPong>)> {
    let (kecho, techo) = echo;
    let (mut kr, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        kr.push(kernel_run(topo, limit, move |d| {
            workloads::request_response(d, kecho, dur)
        })?);
        tr.push(tcpd_run(techo, limit, move |d, addr| {
            workloads::request_response(d, addr, dur)
        })?);
        also()?;
    }
    Ok((kr, tr))
}

/// One figure of request/response runs, summarised.
fn ping_pong_summary(
    runs: &[workloads::PingPong],
    figure: fn(&workloads::PingPong) -> f64,
) -> Option<Summary> {
    Summary::of(&runs.iter().map(figure).collect::<Vec<_>>())
}

/// The transactions/s and p50 rows of request/response runs; `suffix`
/// names the variant (" over IPv6").
fn request_response_rows(
    suffix: &str,
    kr: &[workloads::PingPong],
    tr: &[workloads::PingPong],
) -> [Row; 2] {
    [
        Row {
            name: format!("1-byte request/response{suffix}"),
            unit: "trans/s",
            higher_is_better: true,
            kernel: ping_pong_summary(kr, |p| p.transactions_per_s),
            tcpd: ping_pong_summary(tr, |p| p.transactions_per_s),
        },
        Row {
            name: format!("1-byte request/response p50{suffix}"),
            unit: "µs",
            higher_is_better: false,
            kernel: ping_pong_summary(kr, |p| p.p50_us),
            tcpd: ping_pong_summary(tr, |p| p.p50_us),
        },
    ]
}

/// Both topologies: the kernel pair over veth and tcpd with its kernel peer.
struct Topology {
    kernel_client: Netns,
    kernel_server: Netns,
    tcpd_ns: Netns,
    daemon: Daemon,
}

impl Topology {
    /// Builds both topologies; `tcpd_mtu` is passed to tcpd (`--mtu`) when
    /// set; `idle` connections on one client session must fit tcpd's
    /// per-session quotas (see [`idle_quota_args`]); `tcpd_args` are
    /// passed as they are; `pin_tcpd`: tcpd's threads share the peer's CPU;
    /// the daemon serves on `socket` (see [`with_bench_socket`]).
    fn new(
        socket: &Path,
        tcpd_mtu: Option<u16>,
        tcpd_offload: Option<&str>,
        idle: usize,
        tcpd_args: &[String],
        pin_tcpd: bool,
    ) -> Result<Topology> {
        let kernel_client = Netns::new("bench-kc")?;
        let kernel_server = Netns::new("bench-ks")?;
        let pid = std::process::id();
        let (va, vb) = (format!("tbA{pid}"), format!("tbB{pid}"));
        // The veth pair is created inside the client namespace, so nothing
        // ever appears in the machine's own namespace.
        kernel_client.run(
            "ip",
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
        )?;
        kernel_client.run("ip", &["link", "set", &vb, "netns", kernel_server.name()])?;
        kernel_client.run(
            "ip",
            &["addr", "add", &format!("{KERNEL_CLIENT}/24"), "dev", &va],
        )?;
        // IPv6 too (no DAD: the addresses are usable at once).
        kernel_client.run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{KERNEL_CLIENT6}/64"),
                "dev",
                &va,
                "nodad",
            ],
        )?;
        kernel_client.run("ip", &["link", "set", &va, "up"])?;
        kernel_server.run(
            "ip",
            &["addr", "add", &format!("{KERNEL_SERVER}/24"), "dev", &vb],
        )?;
        kernel_server.run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{KERNEL_SERVER6}/64"),
                "dev",
                &vb,
                "nodad",
            ],
        )?;
        kernel_server.run("ip", &["link", "set", &vb, "up"])?;
        let tcpd_ns = Netns::new("bench-tcpd")?;
        let mtu_arg = tcpd_mtu.map(|m| m.to_string());
        let mut daemon_args: Vec<&str> = match &mtu_arg {
            Some(m) => vec!["--mtu", m],
            None => Vec::new(),
        };
        if let Some(offload) = tcpd_offload {
            daemon_args.extend(["--offload", offload]);
        }
        let quota_args = idle_quota_args(idle);
        daemon_args.extend(quota_args.iter().map(String::as_str));
        daemon_args.extend(tcpd_args.iter().map(String::as_str));
        let daemon = Daemon::start_at(&tcpd_ns, socket, &daemon_args).context("starting tcpd")?;
        if let Some(pid) = daemon.pid()
            && pin_tcpd
        {
            bench::pin_process(pid, PEER_CPU)?;
        }
        Ok(Topology {
            kernel_client,
            kernel_server,
            tcpd_ns,
            daemon,
        })
    }
}

/// tcpd flags that let one client session hold `idle` idle connections:
/// each is a socket (`--session-max-sockets`, default 4,096) with a parked
/// read (`--session-max-blocked-calls`, default 8,192), and each close
/// leaves an orphan until the peer's FIN (`--max-orphans`, default 4,096;
/// past it the oldest is reset, which would change what the close costs).
/// The benchmark runs as root, which the per-uid quota exempts.
fn idle_quota_args(idle: usize) -> Vec<String> {
    if idle <= 2048 {
        return Vec::new();
    }
    let n = (idle + 1024).to_string();
    let calls = (2 * idle + 1024).to_string();
    [
        "--session-max-sockets",
        &n,
        "--session-max-blocked-calls",
        &calls,
        "--max-orphans",
        &n,
    ]
    .map(String::from)
    .to_vec()
}

/// The kernel side: a client in the kernel client namespace, over the veth.
fn kernel_run<T: Send + 'static, F: std::future::Future<Output = std::io::Result<T>> + 'static>(
    topo: &Topology,
    limit: Duration,
    f: impl FnOnce(KernelDialer) -> F + Send + 'static,
) -> Result<T> {
    Ok(workloads::run_client(
        Some(&topo.kernel_client),
        CLIENT_CPU,
        limit,
        move || f(KernelDialer),
    )?)
}

/// Where this process's daemon serves, set by [`with_bench_socket`] (and
/// the same in `TCPD_SOCKET`).
const BENCH_SOCKET_ENV: &str = "TCPD_BENCH_SOCKET";

/// The socket this process's daemon must serve on: `$TCPD_BENCH_SOCKET`,
/// which [`with_bench_socket`] set with `TCPD_SOCKET` to the same path.
fn bench_socket() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(BENCH_SOCKET_ENV)?);
    (std::env::var_os("TCPD_SOCKET").as_deref() == Some(path.as_os_str())).then_some(path)
}

/// `command` (tcpd-bench itself) with `TCPD_SOCKET` and
/// `TCPD_BENCH_SOCKET` naming `socket`. The clients the bench measures
/// (tcpd-client's default session, libtcpd) find the daemon through
/// `$TCPD_SOCKET`, read when first used; the bench starts its daemon there
/// instead of changing its own environment (unsafe once threads run).
fn with_bench_socket(command: &mut std::process::Command, socket: &Path) {
    command
        .env("TCPD_SOCKET", socket)
        .env(BENCH_SOCKET_ENV, socket);
}

/// Runs this tcpd-bench again with the same arguments and the environment
/// of [`with_bench_socket`] (a socket in a directory of its own), and
/// exits as it does.
fn rerun_with_bench_socket() -> Result<()> {
    let dir = tcpd_e2e::TempDir::new("bench").context("socket directory")?;
    let program = std::env::current_exe().context("locating tcpd-bench")?;
    let mut command = std::process::Command::new(program);
    command.args(std::env::args_os().skip(1));
    with_bench_socket(&mut command, &dir.path().join("tcpd.sock"));
    let status = command.status().context("running tcpd-bench")?;
    drop(dir);
    std::process::exit(status.code().unwrap_or(1));
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(ns), Some(addr)) = (&args.hold_helper, args.hold_addr) {
        return Ok(workloads::hold_helper_main(ns, addr, args.hold_cpu)?);
    }
    let Some(socket) = bench_socket() else {
        return rerun_with_bench_socket();
    };
    if let Some(spec) = &args.impaired_helper {
        let seconds = Duration::from_secs_f64(args.seconds.unwrap_or(5.0).max(0.05));
        return impaired_helper_main(spec, seconds, &socket);
    }
    if let Some(size) = args.source_sndbuf {
        let _ = workloads::SOURCE_SNDBUF.set(size);
    }
    if !tcpd_e2e::require_privileges("tcpd-bench") {
        anyhow::bail!("tcpd-bench needs root: it creates network namespaces and a TUN device");
    }
    // The namespaces live for the whole run: bound it by what the plan needs,
    // so a stuck workload fails with a report instead of hanging. CI runs
    // --smoke (seconds) under a 10-minute `timeout` in scripts/test; the
    // watchdog must fire first, or its report is lost.
    tcpd_e2e::watchdog::set_limit(Some(Duration::from_secs(if args.smoke {
        300
    } else {
        3 * 3600
    })));
    let mut plan = if args.smoke {
        Plan {
            seconds: Duration::from_millis(300),
            reps: 1,
            idle: vec![100],
            streams: 4,
        }
    } else if args.quick {
        Plan {
            seconds: Duration::from_secs(1),
            reps: 3,
            idle: vec![10_000],
            streams: 100,
        }
    } else {
        Plan {
            seconds: Duration::from_secs(5),
            reps: 5,
            idle: vec![1000, 10_000, 100_000],
            streams: 100,
        }
    };
    if let Some(r) = args.reps {
        plan.reps = r.max(1);
    }
    if let Some(s) = args.seconds {
        plan.seconds = Duration::from_secs_f64(s.max(0.05));
    }
    if !args.idle.is_empty() {
        plan.idle = args.idle.clone();
    }
    if let Some(n) = args.streams {
        plan.streams = n.max(1);
    }
    let mut notes = Vec::new();
    let want_idle = args.groups().contains(&Group::Idle);
    // The kernel client of the idle workload holds one descriptor per connection.
    let max_idle = plan.idle.iter().copied().max().unwrap_or(0);
    let fd_limit =
        bench::raise_fd_limit(max_idle as u64 + 4096).context("raising RLIMIT_NOFILE")?;

    let topo = Topology::new(
        &socket,
        args.tcpd_mtu,
        args.tcpd_offload.as_deref(),
        if want_idle { max_idle } else { 0 },
        &args.tcpd_args,
        !args.tcpd_unpinned,
    )?;
    if let Some(offload) = &args.tcpd_offload {
        notes.push(format!("tcpd's TUN offload: {offload} (--tcpd-offload)"));
    }
    if let Some(mtu) = args.tcpd_mtu {
        notes.push(format!(
            "tcpd's TUN MTU set to {mtu} (--tcpd-mtu); the veth keeps 1500"
        ));
    }
    let groups = args.groups();
    let want = |g: Group| groups.contains(&g);
    let k = KERNEL_SERVER;
    let t = HOST_ADDR;
    let dur = plan.seconds;
    let limit = plan.limit(dur);
    let mut rows = Vec::new();

    let daemon_pid = topo.daemon.pid().unwrap_or(0);
    if want(Group::Bulk) {
        // 1. Bulk, both directions, with CPU cost.
        let ksink = Server::start(&topo.kernel_server, k, 5001, ServerKind::Sink, PEER_CPU)?;
        let tsink = Server::start(&topo.tcpd_ns, t, 5001, ServerKind::Sink, PEER_CPU)?;
        let mut cpu_kernel = Vec::new();
        let mut cpu_tcpd = Vec::new();
        let kernel = repeat(plan.reps, || {
            let busy0 = bench::system_busy_seconds()?;
            let addr = ksink.addr;
            let tr = kernel_run(&topo, limit, move |d| workloads::bulk_send(d, addr, dur))?;
            cpu_kernel.push((bench::system_busy_seconds()? - busy0) / (tr.bytes as f64 / 1e9));
            Ok(tr.gbit_per_s())
        })?;
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let tcpd = repeat(plan.reps, || {
            let busy0 = bench::system_busy_seconds()?;
            let d0 = bench::process_cpu_seconds(daemon_pid)?;
            let tr = tcpd_run(tsink.addr, limit, move |d, addr| {
                workloads::bulk_send(d, addr, dur)
            })?;
            let gb = tr.bytes as f64 / 1e9;
            cpu_tcpd.push((
                (bench::system_busy_seconds()? - busy0) / gb,
                (bench::process_cpu_seconds(daemon_pid)? - d0) / gb,
            ));
            Ok(tr.gbit_per_s())
        })?;
        let tun_send = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(Row {
            name: "bulk, client sends".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel,
            tcpd,
        });
        rows.push(Row {
            name: "CPU per GB sent, whole machine".into(),
            unit: "CPU-s/GB",
            higher_is_better: false,
            kernel: Summary::of(&cpu_kernel),
            tcpd: Summary::of(&cpu_tcpd.iter().map(|c| c.0).collect::<Vec<_>>()),
        });
        rows.push(Row {
            name: "CPU per GB sent, tcpd daemon only".into(),
            unit: "CPU-s/GB",
            higher_is_better: false,
            kernel: None,
            tcpd: Summary::of(&cpu_tcpd.iter().map(|c| c.1).collect::<Vec<_>>()),
        });
        rows.push(tun_row(
            "  bytes per TUN write (data out)",
            tun_send.bytes_per_write(),
        ));
        rows.push(tun_row(
            "  bytes per TUN read (ACKs in)",
            tun_send.bytes_per_read(),
        ));
        // The same through libtcpd (its socketpair pumped by the daemon).
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let c_shim = if fd_path(&args.tcpd_args) {
            repeat(plan.reps, || {
                let addr = tsink.addr;
                Ok(
                    workloads::run_blocking_client(None, CLIENT_CPU, limit, move || {
                        workloads::c_shim_bulk_send(addr, dur)
                    })?
                    .gbit_per_s(),
                )
            })?
        } else {
            None
        };
        rows.push(Row {
            name: "bulk, client sends (C shim)".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel: rows
                .iter()
                .find(|r| r.name == "bulk, client sends")
                .and_then(|r| r.kernel),
            tcpd: c_shim,
        });
        let tun_c = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(tun_row(
            "  bytes per TUN write (data out)",
            tun_c.bytes_per_write(),
        ));
        rows.push(tun_row(
            "  bytes per TUN read (ACKs in)",
            tun_c.bytes_per_read(),
        ));
        drop((ksink, tsink));

        let ksrc = Server::start(
            &topo.kernel_server,
            k,
            5002,
            ServerKind::Source(dur),
            PEER_CPU,
        )?;
        let tsrc = Server::start(&topo.tcpd_ns, t, 5002, ServerKind::Source(dur), PEER_CPU)?;
        // The kernel's runs go over the veth: tcpd's TUN counts only its own.
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let recv = bulk_recv_runs(&topo, plan.reps, limit, ksrc.addr, tsrc.addr)?;
        let tun_recv = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(Row {
            name: "bulk, client receives".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel: recv.kernel,
            tcpd: recv.tcpd,
        });
        rows.push(recv.cpu);
        rows.push(recv.cpu_daemon);
        rows.push(tun_row(
            "  bytes per TUN read (data in)",
            tun_recv.bytes_per_read(),
        ));
        rows.push(tun_row(
            "  bytes per TUN write (ACKs out)",
            tun_recv.bytes_per_write(),
        ));
        rows.push(Row {
            name: "  TUN writes (ACKs out) per MB received".into(),
            unit: "writes",
            higher_is_better: false,
            kernel: None,
            tcpd: Summary::of(&[tun_recv.writes as f64 * 1e6 / tun_recv.read_bytes.max(1) as f64]),
        });
        bench::mark("bulk, client receives (C shim)", true);
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let c_shim = if fd_path(&args.tcpd_args) {
            repeat(plan.reps, || {
                let addr = tsrc.addr;
                Ok(
                    workloads::run_blocking_client(None, CLIENT_CPU, limit, move || {
                        workloads::c_shim_bulk_recv(addr)
                    })?
                    .gbit_per_s(),
                )
            })?
        } else {
            None
        };
        bench::mark("bulk, client receives (C shim)", false);
        rows.push(Row {
            name: "bulk, client receives (C shim)".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel: rows
                .iter()
                .find(|r| r.name == "bulk, client receives")
                .and_then(|r| r.kernel),
            tcpd: c_shim,
        });
        let tun_c = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(tun_row(
            "  bytes per TUN read (data in)",
            tun_c.bytes_per_read(),
        ));
        rows.push(tun_row(
            "  bytes per TUN write (ACKs out)",
            tun_c.bytes_per_write(),
        ));
        drop((ksrc, tsrc));
    }

    if want(Group::Impaired) {
        // 1b. Bulk under impairment: tcpd sending vs the kernel sending, on
        // the same impaired TUN link.
        let impaired_seconds = if args.smoke {
            plan.seconds
        } else {
            plan.seconds.max(Duration::from_secs(5))
        };
        rows.extend(impaired_rows(plan.reps, impaired_seconds, limit)?);
        notes.push(format!(
            "bulk under impairment: tcpd's --impair on both directions of its TUN; \"tcpd\" is tcpd sending to the kernel, \"kernel\" the kernel ({IMPAIRED_KERNEL_CC}) sending to tcpd; each run {:.1} s",
            impaired_seconds.as_secs_f64()
        ));
    }

    if want(Group::Ipv6) {
        // 1c. The same bulk and request/response over IPv6: tcpd on its
        // default fd00:77::2 to the kernel side fd00:77::1, the kernel over
        // the veth's fd00:88::/64.
        let (k6, t6) = (KERNEL_SERVER6, tcpd_e2e::HOST_ADDR6);
        let ksink = Server::start(&topo.kernel_server, k6, 5011, ServerKind::Sink, PEER_CPU)?;
        let tsink = Server::start(&topo.tcpd_ns, t6, 5011, ServerKind::Sink, PEER_CPU)?;
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let (kernel, tcpd) = bulk_send_runs(&topo, plan.reps, limit, dur, ksink.addr, tsink.addr)?;
        let tun6 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(Row {
            name: "bulk over IPv6, client sends".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel,
            tcpd,
        });
        rows.push(tun_row(
            "  bytes per TUN write (data out)",
            tun6.bytes_per_write(),
        ));
        rows.push(tun_row(
            "  bytes per TUN read (ACKs in)",
            tun6.bytes_per_read(),
        ));
        drop((ksink, tsink));
        let ksrc = Server::start(
            &topo.kernel_server,
            k6,
            5012,
            ServerKind::Source(dur),
            PEER_CPU,
        )?;
        let tsrc = Server::start(&topo.tcpd_ns, t6, 5012, ServerKind::Source(dur), PEER_CPU)?;
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let BulkRecv { kernel, tcpd, .. } =
            bulk_recv_runs(&topo, plan.reps, limit, ksrc.addr, tsrc.addr)?;
        let tun6 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        rows.push(Row {
            name: "bulk over IPv6, client receives".into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel,
            tcpd,
        });
        rows.push(tun_row(
            "  bytes per TUN read (data in)",
            tun6.bytes_per_read(),
        ));
        rows.push(tun_row(
            "  bytes per TUN write (ACKs out)",
            tun6.bytes_per_write(),
        ));
        drop((ksrc, tsrc));
        let kecho = Server::start(&topo.kernel_server, k6, 5013, ServerKind::Echo, PEER_CPU)?;
        let techo = Server::start(&topo.tcpd_ns, t6, 5013, ServerKind::Echo, PEER_CPU)?;
        let (kr, tr) = request_response_runs(
            &topo,
            plan.reps,
            limit,
            dur,
            (kecho.addr, techo.addr),
            || Ok(()),
        )?;
        rows.extend(request_response_rows(" over IPv6", &kr, &tr));
        drop((kecho, techo));
    }

    if want(Group::Rr) {
        // 2. Request/response.
        let kecho = Server::start(&topo.kernel_server, k, 5003, ServerKind::Echo, PEER_CPU)?;
        let techo = Server::start(&topo.tcpd_ns, t, 5003, ServerKind::Echo, PEER_CPU)?;
        let mut cr = Vec::new();
        let (kr, tr) = request_response_runs(
            &topo,
            plan.reps,
            limit,
            dur,
            (kecho.addr, techo.addr),
            || {
                // The C shim's run in the same repetition.
                let addr = techo.addr;
                cr.push(workloads::run_blocking_client(
                    None,
                    CLIENT_CPU,
                    limit,
                    move || workloads::c_shim_request_response(addr, dur),
                )?);
                Ok(())
            },
        )?;
        let pick = ping_pong_summary;
        rows.extend(request_response_rows("", &kr, &tr));
        rows.push(Row {
            name: "1-byte request/response p99".into(),
            unit: "µs",
            higher_is_better: false,
            kernel: pick(&kr, |p| p.p99_us),
            tcpd: pick(&tr, |p| p.p99_us),
        });
        rows.push(Row {
            name: "1-byte request/response p50 (C shim)".into(),
            unit: "µs",
            higher_is_better: false,
            kernel: pick(&kr, |p| p.p50_us),
            tcpd: pick(&cr, |p| p.p50_us),
        });
        drop((kecho, techo));
    }

    if want(Group::Rpc) {
        // The unary RPC round trip without the network: GetSockName through
        // tcpd-client against getsockname(2) on a kernel socket.
        let kernel = repeat(plan.reps, || {
            Ok(workloads::run_blocking_client(
                Some(&topo.kernel_client),
                CLIENT_CPU,
                limit,
                move || workloads::kernel_getsockname_us(dur),
            )?)
        })?;
        let tcpd = repeat(plan.reps, || {
            let d0 = steps_daemon_cpu(daemon_pid);
            let us = workloads::run_client(None, CLIENT_CPU, limit, move || {
                workloads::tcpd_getsockname_us(dur)
            })?;
            if let Some(d0) = d0 {
                print_daemon_cpu_per("unary RPC", daemon_pid, d0, dur.as_secs_f64() * 1e6 / us);
            }
            Ok(us)
        })?;
        rows.push(Row {
            name: "RPC round trip (GetSockName)".into(),
            unit: "µs",
            higher_is_better: false,
            kernel,
            tcpd,
        });
    }

    if want(Group::Connections) {
        // 3. Connection rate, through the Rust library and through the C shim
        // (whose every call is one unary RPC); the kernel figure is the same.
        let kone = Server::start(&topo.kernel_server, k, 5004, ServerKind::OneShot, PEER_CPU)?;
        let tone = Server::start(&topo.tcpd_ns, t, 5004, ServerKind::OneShot, PEER_CPU)?;
        let mut kernel = Vec::new();
        let mut tcpd = Vec::new();
        let mut c_shim = Vec::new();
        for _ in 0..plan.reps {
            let addr = kone.addr;
            kernel.push(kernel_run(&topo, limit, move |d| {
                workloads::connection_rate(d, addr, dur)
            })?);
            let d0 = steps_daemon_cpu(daemon_pid);
            tcpd.push(tcpd_run(tone.addr, limit, move |d, addr| {
                workloads::connection_rate(d, addr, dur)
            })?);
            if let (Some(d0), Some(last)) = (d0, tcpd.last()) {
                print_daemon_cpu_per(
                    "Rust connection",
                    daemon_pid,
                    d0,
                    last.per_second * dur.as_secs_f64(),
                );
            }
            let addr = tone.addr;
            c_shim.push(workloads::run_blocking_client(
                None,
                CLIENT_CPU,
                limit,
                move || workloads::c_shim_connection_rate(addr, dur),
            )?);
        }
        let rate = |v: &[workloads::ConnectionRate]| {
            Summary::of(&v.iter().map(|r| r.per_second).collect::<Vec<_>>())
        };
        let p50 = |v: &[workloads::ConnectionRate]| {
            Summary::of(&v.iter().map(|r| r.p50_us).collect::<Vec<_>>())
        };
        rows.push(Row {
            name: "connect + 1-byte exchange + close".into(),
            unit: "conn/s",
            higher_is_better: true,
            kernel: rate(&kernel),
            tcpd: rate(&tcpd),
        });
        rows.push(Row {
            name: "connect + 1-byte exchange + close (C shim)".into(),
            unit: "conn/s",
            higher_is_better: true,
            kernel: rate(&kernel),
            tcpd: rate(&c_shim),
        });
        rows.push(Row {
            name: "one connection p50".into(),
            unit: "µs",
            higher_is_better: false,
            kernel: p50(&kernel),
            tcpd: p50(&tcpd),
        });
        rows.push(Row {
            name: "one connection p50 (C shim)".into(),
            unit: "µs",
            higher_is_better: false,
            kernel: p50(&kernel),
            tcpd: p50(&c_shim),
        });
        drop((kone, tone));
    }

    if want(Group::Hyper) {
        // 3b. A third-party client: hyper's HTTP/1.1 client against hyper's
        // server, over tcpd and over the kernel (issue 12's goals: >= 0.7x
        // keep-alive, >= 0.5x new connection per GET).
        let khttp = Server::start(&topo.kernel_server, k, 5005, ServerKind::Http, PEER_CPU)?;
        let thttp = Server::start(&topo.tcpd_ns, t, 5005, ServerKind::Http, PEER_CPU)?;
        // With a new connection per GET the client closes first, so each
        // connection leaves a TIME-WAIT (60 s) on the client's side: every
        // repetition of that row gets servers on a port of its own, so its
        // 4-tuples never meet the TIME-WAITs of the repetitions before
        // (28 232 ephemeral ports for one destination, Linux's default
        // ip_local_port_range in both, last only a few seconds at several
        // thousand connections per second: connect fails with EADDRNOTAVAIL).
        let mut fresh_port = 5005;
        for (name, unit, new_connection) in [
            ("hyper HTTP/1.1 keep-alive GETs", "req/s", false),
            ("hyper HTTP/1.1 new connection per GET", "conn/s", true),
        ] {
            let mut servers_for_rep = || -> Result<RepServers> {
                if !new_connection {
                    return Ok((None, khttp.addr, thttp.addr));
                }
                fresh_port += 1;
                let kernel = Server::start(
                    &topo.kernel_server,
                    k,
                    fresh_port,
                    ServerKind::Http,
                    PEER_CPU,
                )?;
                let tcpd = Server::start(&topo.tcpd_ns, t, fresh_port, ServerKind::Http, PEER_CPU)?;
                let (kaddr, taddr) = (kernel.addr, tcpd.addr);
                Ok((Some((kernel, tcpd)), kaddr, taddr))
            };
            let mut kernel = Vec::with_capacity(plan.reps);
            let mut tcpd = Vec::with_capacity(plan.reps);
            for _ in 0..plan.reps {
                let (servers, kaddr, taddr) = servers_for_rep()?;
                kernel.push(kernel_run(&topo, limit, move |d| {
                    workloads::http_gets(d, kaddr, dur, new_connection)
                })?);
                let d0 = steps_daemon_cpu(daemon_pid);
                tcpd.push(tcpd_run(taddr, limit, move |d, addr| {
                    workloads::http_gets(d, addr, dur, new_connection)
                })?);
                if let (Some(d0), Some(last)) = (d0, tcpd.last()) {
                    print_daemon_cpu_per(name, daemon_pid, d0, last * dur.as_secs_f64());
                }
                drop(servers);
            }
            let (kernel, tcpd) = (Summary::of(&kernel), Summary::of(&tcpd));
            rows.push(Row {
                name: name.into(),
                unit,
                higher_is_better: true,
                kernel,
                tcpd,
            });
        }
        drop((khttp, thttp));
    }

    if want(Group::Programs) {
        // 3c. Unmodified programs: iperf3 and redis-benchmark under tcpd-run.
        match program_rows(&topo, &plan, args.smoke) {
            Ok(more) => rows.extend(more),
            Err(e) => {
                let why = format!("{e:#}");
                eprintln!("tcpd-bench: iperf3/redis-benchmark rows skipped: {why}");
                notes.push(format!("iperf3/redis-benchmark rows not measured: {why}"));
            }
        }
        notes.push(
            "iperf3 and redis-benchmark: Debian's programs on both ends of the veth (kernel), and \
         under tcpd-run (tcpd) against the same program on the kernel side of the TUN"
                .to_string(),
        );
    }

    // 4. Concurrency: idle connections and their cost, then parallel
    // streams. The streams are measured first (reported after): tearing
    // down thousands of idle connections keeps tcpd busy for a while.
    let mut streams_rows = Vec::new();
    if want(Group::Streams) {
        let ksink = Server::start(&topo.kernel_server, k, 5006, ServerKind::Sink, PEER_CPU)?;
        let tsink = Server::start(&topo.tcpd_ns, t, 5006, ServerKind::Sink, PEER_CPU)?;
        let streams = plan.streams;
        let streams_kernel = repeat(plan.reps, || {
            let addr = ksink.addr;
            Ok(kernel_run(&topo, limit, move |d| {
                workloads::parallel_streams(d, addr, streams, dur)
            })?
            .gbit_per_s())
        })?;
        let tun0 = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?;
        let mut cpu_daemon = Vec::new();
        let streams_tcpd = repeat(plan.reps, || {
            let d0 = bench::process_cpu_seconds(daemon_pid)?;
            let tr = tcpd_run(tsink.addr, limit, move |d, addr| {
                workloads::parallel_streams(d, addr, streams, dur)
            })?;
            cpu_daemon
                .push((bench::process_cpu_seconds(daemon_pid)? - d0) / (tr.bytes as f64 / 1e9));
            Ok(tr.gbit_per_s())
        })?;
        let tun = TunCounters::read(&topo.tcpd_ns, TUN_NAME)?.since(tun0);
        drop((ksink, tsink));
        let name = format!("{streams} concurrent streams, client sends");
        streams_rows = vec![
            Row {
                name,
                unit: "Gbit/s",
                higher_is_better: true,
                kernel: streams_kernel,
                tcpd: streams_tcpd,
            },
            Row {
                name: "  CPU per GB sent, tcpd daemon only".into(),
                unit: "CPU-s/GB",
                higher_is_better: false,
                kernel: None,
                tcpd: Summary::of(&cpu_daemon),
            },
            tun_row("  bytes per TUN write (data out)", tun.bytes_per_write()),
            tun_row("  bytes per TUN read (ACKs in)", tun.bytes_per_read()),
        ];
    }

    let mut idle_json = Vec::new();
    let idle_sizes = if want(Group::Idle) {
        plan.idle.as_slice()
    } else {
        &[]
    };
    for (size_index, &n) in idle_sizes.iter().enumerate() {
        match idle_connections(&topo, size_index, n, fd_limit, &mut notes) {
            Ok(idle) => {
                let per_conn = idle.tcpd_rss_growth as f64 / n as f64;
                let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
                rows.push(Row {
                    name: format!("open {n} idle connections"),
                    unit: "s",
                    higher_is_better: false,
                    kernel: idle.kernel_seconds.and_then(|s| Summary::of(&[s])),
                    tcpd: Summary::of(&[idle.tcpd_seconds]),
                });
                rows.push(Row {
                    name: format!("daemon RSS with {n} idle connections"),
                    unit: "MiB",
                    higher_is_better: false,
                    kernel: None,
                    tcpd: Summary::of(&[mib(idle.tcpd_rss_open)]),
                });
                rows.push(Row {
                    name: format!("daemon RSS per idle connection ({n})"),
                    unit: "bytes",
                    higher_is_better: false,
                    kernel: None,
                    tcpd: Summary::of(&[per_conn]),
                });
                rows.push(Row {
                    name: format!("tcpd busy after closing {n} idle connections"),
                    unit: "s",
                    higher_is_better: false,
                    kernel: None,
                    tcpd: Summary::of(&[idle.close_busy_seconds]),
                });
                rows.push(Row {
                    name: format!("  daemon CPU to close {n} idle connections"),
                    unit: "CPU-s",
                    higher_is_better: false,
                    kernel: None,
                    tcpd: Summary::of(&[idle.close_cpu_seconds]),
                });
                if idle.server_ports > 1 {
                    notes.push(format!(
                        "{n} idle connections spread over {} server ports (helper processes \
                         of <= {IDLE_PER_SERVER_PORT} descriptors each): one client address \
                         reaches one server port through at most 28,232 ephemeral ports \
                         (32768-60999, in tcpd as in Linux)",
                        idle.server_ports
                    ));
                }
                idle_json.push(json!({
                    "connections": n,
                    "server_ports": idle.server_ports,
                    "kernel_open_s": idle.kernel_seconds,
                    "tcpd_open_s": idle.tcpd_seconds,
                    "tcpd_rss_before_bytes": idle.tcpd_rss_before,
                    "tcpd_rss_open_bytes": idle.tcpd_rss_open,
                    "tcpd_rss_per_connection": per_conn,
                    "tcpd_close_busy_s": idle.close_busy_seconds,
                    "tcpd_close_cpu_s": idle.close_cpu_seconds,
                }));
            }
            Err(e) => {
                let why = format!("{e:#}");
                eprintln!("tcpd-bench: {n} idle connections skipped: {why}");
                notes.push(format!("{n} idle connections not measured: {why}"));
                idle_json.push(json!({"connections": n, "skipped": why}));
                // Let whatever was opened drain before the next size.
                wait_until_quiet(daemon_pid, Plan::idle_limit(n))?;
            }
        }
    }

    rows.extend(streams_rows);

    finish(&args, &plan, &rows, &notes, idle_json)
}

/// iperf3 (both directions) and redis-benchmark (SET, GET) run unmodified:
/// on both ends of the veth for the kernel's figure, under `tcpd-run` in
/// tcpd's namespace against the program on the kernel side for tcpd's.
fn program_rows(topo: &Topology, plan: &Plan, smoke: bool) -> Result<Vec<Row>> {
    use tcpd_e2e::bench::programs::{self, Side};
    programs::available(&[
        "iperf3",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "taskset",
        "ss",
    ])
    .map_err(anyhow::Error::msg)?;
    let kernel_client = Side {
        ns: &topo.kernel_client,
        cpu: CLIENT_CPU,
        tcpd: None,
    };
    let kernel_server = Side {
        ns: &topo.kernel_server,
        cpu: PEER_CPU,
        tcpd: None,
    };
    let tcpd_client = Side {
        ns: &topo.tcpd_ns,
        cpu: CLIENT_CPU,
        tcpd: Some(topo.daemon.socket()),
    };
    let tcpd_peer = Side {
        ns: &topo.tcpd_ns,
        cpu: PEER_CPU,
        tcpd: None,
    };
    let mut rows = Vec::new();
    for (reverse, name) in [
        (false, "iperf3, client sends (tcpd-run)"),
        (true, "iperf3 -R, client receives (tcpd-run)"),
    ] {
        let kernel = repeat(plan.reps, || {
            Ok(programs::iperf3_gbit(
                kernel_client,
                kernel_server,
                KERNEL_SERVER,
                5201,
                plan.seconds,
                reverse,
            )?)
        })?;
        let tcpd = repeat(plan.reps, || {
            Ok(programs::iperf3_gbit(
                tcpd_client,
                tcpd_peer,
                HOST_ADDR,
                5201,
                plan.seconds,
                reverse,
            )?)
        })?;
        rows.push(Row {
            name: name.into(),
            unit: "Gbit/s",
            higher_is_better: true,
            kernel,
            tcpd,
        });
    }
    let requests = if smoke { 2_000 } else { 20_000 };
    let scratch = tcpd_e2e::TempDir::new("bench-redis")?;
    let mut kernel = Vec::new();
    let mut tcpd = Vec::new();
    for _ in 0..plan.reps {
        kernel.push(programs::redis_ops(
            kernel_client,
            kernel_server,
            KERNEL_SERVER,
            6379,
            requests,
            scratch.path(),
        )?);
        tcpd.push(programs::redis_ops(
            tcpd_client,
            tcpd_peer,
            HOST_ADDR,
            6379,
            requests,
            scratch.path(),
        )?);
    }
    for (i, test) in programs::REDIS_TESTS.iter().enumerate() {
        let column =
            |runs: &[Vec<f64>]| Summary::of(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
        rows.push(Row {
            name: format!("redis-benchmark {test}, 50 clients (tcpd-run)"),
            unit: "req/s",
            higher_is_better: true,
            kernel: column(&kernel),
            tcpd: column(&tcpd),
        });
    }
    Ok(rows)
}

/// Prints the table and writes the JSON file.
fn finish(
    args: &Args,
    plan: &Plan,
    rows: &[Row],
    notes: &[String],
    idle_json: Vec<serde_json::Value>,
) -> Result<()> {
    print_table(rows, plan, notes, args);
    let json_rows: Vec<_> = rows
        .iter()
        .map(|r| json!({"workload": r.name, "unit": r.unit, "higher_is_better": r.higher_is_better, "kernel": r.kernel, "tcpd": r.tcpd, "ratio": r.ratio()}))
        .collect();
    let doc = json!({
        "seconds_per_run": plan.seconds.as_secs_f64(),
        "repetitions": plan.reps,
        "cpus": bench::num_cpus(),
        "pinning": {"client_cpu": CLIENT_CPU, "peer_cpu": PEER_CPU, "tcpd_cpu": (!args.tcpd_unpinned).then_some(PEER_CPU)},
        "tcpd_mtu": args.tcpd_mtu.unwrap_or(1500),
        "tcpd_args": args.tcpd_args,
        "rows": json_rows,
        "idle": idle_json,
        "notes": notes,
    });
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    bench::write_json(&args.json, &doc)?;
    println!("\nJSON written to {}", args.json.display());
    Ok(())
}

/// Waits until process `pid` wants under 10% of a CPU over 500 ms (five
/// 100 ms windows in a row), or `limit` passes; returns the seconds from
/// the call to the start of that quiet stretch.
///
/// What it wants is the time its threads ran plus the time they waited,
/// runnable, for a CPU: on a loaded machine a daemon that still has work
/// may get under 10% of a CPU, and counting only the CPU it got would call
/// it quiet (and cut its "CPU to close" figure short).
fn wait_until_quiet(pid: u32, limit: Duration) -> Result<f64> {
    const WINDOW: Duration = Duration::from_millis(100);
    const QUIET_WINDOWS: u32 = 5;
    let start = std::time::Instant::now();
    let mut quiet = 0;
    loop {
        let before = bench::process_demand_seconds(pid)?;
        std::thread::sleep(WINDOW);
        let used = bench::process_demand_seconds(pid)? - before;
        quiet = if used < 0.1 * WINDOW.as_secs_f64() {
            quiet + 1
        } else {
            0
        };
        if quiet == QUIET_WINDOWS || start.elapsed() > limit {
            let quiet_for = WINDOW * quiet;
            return Ok(start.elapsed().saturating_sub(quiet_for).as_secs_f64());
        }
    }
}

/// What opening one size of idle connections cost.
struct IdleResult {
    server_ports: usize,
    /// `None` when this process may not hold that many kernel sockets.
    kernel_seconds: Option<f64>,
    tcpd_seconds: f64,
    /// The daemon's RSS before opening, and while all are open.
    tcpd_rss_before: u64,
    tcpd_rss_open: u64,
    tcpd_rss_growth: u64,
    /// From the client's close of all of them until the daemon is quiet
    /// (wanting under 10% of a CPU over 500 ms; see [`wait_until_quiet`]), and the
    /// daemon's CPU time over that span.
    close_busy_seconds: f64,
    close_cpu_seconds: f64,
}

/// Opens `n` idle connections on each side, spread over enough server ports
/// (a fresh range for every size, so TIME-WAIT left by a previous size never
/// collides), and measures the time and tcpd's RSS growth while they are
/// open, then how long closing them all keeps tcpd busy.
///
/// The servers run as child processes ([`HoldProcess`], at most
/// [`IDLE_PER_SERVER_PORT`] connections each), so this process holds only
/// the kernel client's `n` descriptors, and none for tcpd's connections
/// (tcpd itself needs no descriptor per connection, and the tcpd client's
/// connections are streams on one API connection).
fn idle_connections(
    topo: &Topology,
    size_index: usize,
    n: usize,
    fd_limit: u64,
    notes: &mut Vec<String>,
) -> Result<IdleResult> {
    let available = bench::mem_available_bytes()?;
    let needed = n as u64 * IDLE_MEMORY_PER_CONNECTION;
    anyhow::ensure!(
        available >= needed,
        "the machine has {} MiB available, {} MiB wanted",
        available >> 20,
        needed >> 20
    );
    let program = std::env::current_exe().context("finding this program for its helpers")?;
    let server_ports = n.div_ceil(IDLE_PER_SERVER_PORT).max(1);
    let base_port = 6000 + 100 * u16::try_from(size_index).context("too many idle sizes")?;
    let limit = Plan::idle_limit(n);

    let kernel_fits = fd_limit >= n as u64 + 1024;
    let kernel_seconds = if kernel_fits {
        let mut servers = Vec::with_capacity(server_ports);
        for i in 0..server_ports {
            let port = base_port + u16::try_from(i).context("too many server ports")?;
            let addr = SocketAddr::new(KERNEL_SERVER.into(), port);
            servers.push(HoldProcess::start(
                &program,
                &topo.kernel_server,
                addr,
                PEER_CPU,
            )?);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let secs = kernel_run(topo, limit, move |d| async move {
            Ok(workloads::open_idle(d, &addrs, n).await?.1)
        })?;
        drop(servers);
        Some(secs)
    } else {
        notes.push(format!(
            "kernel side of {n} idle connections not measured: its client holds one descriptor \
             per connection and RLIMIT_NOFILE is {fd_limit} (raising it needs CAP_SYS_RESOURCE)"
        ));
        None
    };

    let mut servers = Vec::with_capacity(server_ports);
    for i in 0..server_ports {
        let port = base_port + u16::try_from(i).context("too many server ports")?;
        let addr = SocketAddr::new(HOST_ADDR.into(), port);
        servers.push(HoldProcess::start(&program, &topo.tcpd_ns, addr, PEER_CPU)?);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let daemon_pid = topo.daemon.pid().unwrap_or(0);
    let rss_before = bench::rss_bytes(daemon_pid)?;
    let (tcpd_seconds, rss_open, cpu_at_close, close_start) =
        workloads::run_client(None, CLIENT_CPU, limit, move || async move {
            let (conns, secs) = workloads::open_idle(TcpdLibraryDialer, &addrs, n).await?;
            // Give the daemon a moment to settle, then read its RSS while they are open.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = bench::rss_bytes(daemon_pid)?;
            let cpu = bench::process_cpu_seconds(daemon_pid)?;
            let close_start = std::time::Instant::now();
            drop(conns);
            Ok((secs, rss, cpu, close_start))
        })?;
    // The kernel side stays until tcpd is done: its FINs and RSTs would be
    // more work for tcpd, and not the close's.
    let waited_from = std::time::Instant::now();
    let busy = wait_until_quiet(daemon_pid, limit)?;
    let close_busy_seconds = (waited_from - close_start).as_secs_f64() + busy;
    let close_cpu_seconds = bench::process_cpu_seconds(daemon_pid)? - cpu_at_close;
    drop(servers);
    // Then let the kernel side's close drain before the next size.
    wait_until_quiet(daemon_pid, limit)?;
    Ok(IdleResult {
        server_ports,
        kernel_seconds,
        tcpd_seconds,
        tcpd_rss_before: rss_before,
        tcpd_rss_open: rss_open,
        tcpd_rss_growth: rss_open.saturating_sub(rss_before),
        close_busy_seconds,
        close_cpu_seconds,
    })
}

/// The "bulk under impairment" rows: for each of [`IMPAIRMENTS`], `reps`
/// runs of a helper process (`--impaired-helper`) that measures both
/// directions on a fresh impaired daemon; MB/s.
fn impaired_rows(reps: usize, seconds: Duration, limit: Duration) -> Result<Vec<Row>> {
    let program = std::env::current_exe().context("locating tcpd-bench")?;
    let mut rows = Vec::new();
    for spec in IMPAIRMENTS {
        let (mut tcpd_sends, mut kernel_sends) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            // Its own daemon, on a socket of its own.
            let dir = tcpd_e2e::TempDir::new("bench-imp").context("socket directory")?;
            let mut command = std::process::Command::new(&program);
            with_bench_socket(&mut command, &dir.path().join("tcpd.sock"));
            let mut child = command
                .args(["--impaired-helper", spec, "--seconds"])
                .arg(seconds.as_secs_f64().to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("starting the impaired-link helper")?;
            let deadline = std::time::Instant::now() + limit * 2 + seconds * 2;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    anyhow::bail!("impaired-link helper ({spec}) timed out");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut out)?;
            }
            anyhow::ensure!(
                status.success(),
                "impaired-link helper ({spec}) failed: {out}"
            );
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix("IMPAIRED "))
                .context("impaired-link helper printed no result")?;
            let mut fields = line.split_whitespace().map(str::parse::<f64>);
            match (fields.next(), fields.next()) {
                (Some(Ok(t)), Some(Ok(k))) => {
                    tcpd_sends.push(t);
                    kernel_sends.push(k);
                }
                _ => anyhow::bail!("impaired-link helper printed {line:?}"),
            }
        }
        rows.push(Row {
            name: format!("bulk impaired {spec}"),
            unit: "MB/s",
            higher_is_better: true,
            kernel: Summary::of(&kernel_sends),
            tcpd: Summary::of(&tcpd_sends),
        });
    }
    Ok(rows)
}

/// The `--impaired-helper` side: a daemon with `--impair spec`, kernel
/// sink and source servers on the TUN's far side (the source sending with
/// [`IMPAIRED_KERNEL_CC`]); prints `IMPAIRED <tcpd sends MB/s> <kernel sends MB/s>`.
fn impaired_helper_main(spec: &str, seconds: Duration, socket: &Path) -> Result<()> {
    let ns = Netns::new("bench-imp")?;
    let daemon = Daemon::start_at(&ns, socket, &["--impair", spec]).context("starting tcpd")?;
    if let Some(pid) = daemon.pid() {
        bench::pin_process(pid, PEER_CPU)?;
    }
    let limit = seconds * 4 + Duration::from_secs(30);
    let sink = Server::start(&ns, HOST_ADDR, 5101, ServerKind::Sink, PEER_CPU)?;
    let tcpd_sends = tcpd_run(sink.addr, limit, move |d, addr| {
        workloads::bulk_send(d, addr, seconds)
    })?;
    drop(sink);
    let source = Server::start_with_congestion(
        &ns,
        HOST_ADDR,
        5102,
        ServerKind::Source(seconds),
        PEER_CPU,
        Some(IMPAIRED_KERNEL_CC),
    )?;
    let kernel_sends = tcpd_run(source.addr, limit, workloads::bulk_recv)?;
    drop(source);
    let mb = |t: &workloads::Transfer| t.bytes as f64 / t.seconds / 1e6;
    println!("IMPAIRED {:.3} {:.3}", mb(&tcpd_sends), mb(&kernel_sends));
    drop(daemon);
    Ok(())
}

/// The tcpd side: the client reaches TCP through tcpd-client.
/// With `TCPD_BENCH_STEPS` set: the daemon's CPU seconds so far (for
/// [`print_daemon_cpu_per`]).
fn steps_daemon_cpu(daemon_pid: u32) -> Option<f64> {
    std::env::var_os("TCPD_BENCH_STEPS")?;
    bench::process_cpu_seconds(daemon_pid).ok()
}

/// Prints (stderr) the daemon's CPU per operation since `d0` (busy-polling
/// included: run with `--tcpd-arg=--busy-poll-us=0` for its work alone).
fn print_daemon_cpu_per(what: &str, daemon_pid: u32, d0: f64, operations: f64) {
    if let Ok(d1) = bench::process_cpu_seconds(daemon_pid)
        && operations > 0.0
    {
        eprintln!(
            "{what}: daemon CPU {:.1} us per operation ({operations:.0} operations)",
            (d1 - d0) * 1e6 / operations
        );
    }
}

fn tcpd_run<T: Send + 'static, F: std::future::Future<Output = std::io::Result<T>> + 'static>(
    addr: SocketAddr,
    limit: Duration,
    f: impl FnOnce(TcpdDialer, SocketAddr) -> F + Send + 'static,
) -> Result<T> {
    Ok(workloads::run_client(None, CLIENT_CPU, limit, move || {
        f(TcpdDialer, addr)
    })?)
}
