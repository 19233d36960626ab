//! `tcpd-bench`: each workload measured against the Linux kernel and against
//! tcpd on the same machine, in the same run, reported as a ratio.
//!
//! Topologies (all inside namespaces the benchmark creates and removes):
//! - **kernel**: two namespaces joined by a veth pair; the client in one, the
//!   server in the other — the physical reference.
//! - **tcpd**: one namespace holding tcpd and its TUN; the client uses tcpd
//!   through `tcpd-client`; the server is the kernel's TCP on the TUN's far side.
//!
//! - **C shim**: the connection-rate workload is also run through `libtcpd`'s
//!   C ABI (linked as the `tcpd` rlib), reaching the same daemon through
//!   `$TCPD_SOCKET`.
//!
//! - **programs**: iperf3 and redis-benchmark (Debian's, unmodified) on
//!   both ends of the veth, and under `tcpd-run` against the same program
//!   on the kernel side of tcpd's TUN ([`programs`]).
//!
//! Idle-connection servers run as helper processes (the benchmark binary
//! re-run with `--hold-helper`, see [`workloads::HoldProcess`]) so that no one
//! process needs more descriptors than `RLIMIT_NOFILE` allows. Every client
//! loop runs under a deadline ([`workloads::run_blocking_client`]).
//!
//! Pinning (2-core machines make this matter several-fold): the client runs
//! on CPU 0; the server (kernel peer) on CPU 1; the tcpd daemon, when present,
//! also on CPU 1, beside the peer it talks to through the TUN. With fewer than
//! two CPUs nothing is pinned. CPU n is the n-th CPU the process may use
//! (a container's cpuset may start elsewhere than CPU 0).

pub mod programs;
pub mod stats;
pub mod workloads;

pub use stats::{Summary, percentile};

use std::io;
use std::path::Path;

/// The CPU set holding only the `index`-th CPU (0 = the first) this
/// process may run on: "CPU 1" of a container limited to CPUs 2 and 3 is
/// CPU 3 (pinning to CPU 1 itself fails there with EINVAL). The CPUs are
/// those of the main thread when first asked (it is never pinned before:
/// only workers and helper processes pin themselves). `None` when there
/// is no such CPU.
fn allowed_cpu(index: usize) -> Option<nix::sched::CpuSet> {
    static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    let allowed = ALLOWED.get_or_init(|| {
        let main = nix::unistd::Pid::from_raw(std::process::id() as i32);
        nix::sched::sched_getaffinity(main).map_or_else(
            |_| Vec::new(),
            |set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .collect()
            },
        )
    });
    let mut set = nix::sched::CpuSet::new();
    set.set(*allowed.get(index)?).ok()?;
    Some(set)
}

/// Pins the calling thread to the `cpu`-th CPU it may use (see
/// [`allowed_cpu`]) when the machine has more than one CPU.
pub fn pin_current_thread(cpu: usize) {
    if num_cpus() < 2 {
        return;
    }
    if let Some(set) = allowed_cpu(cpu) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Pins every thread of process `pid` to the `cpu`-th CPU this process
/// may use (threads it starts later inherit the mask from whichever thread
/// creates them).
pub fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    if num_cpus() < 2 {
        return Ok(());
    }
    let Some(set) = allowed_cpu(cpu) else {
        return Ok(());
    };
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = entry?
            .file_name()
            .to_string_lossy()
            .parse()
            .map_err(|_| io::Error::other("bad tid"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
            .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Raises this process's open-file limit (soft and hard) to `wanted`, or
/// as far as the kernel allows (`/proc/sys/fs/nr_open`): tens of thousands
/// of idle kernel connections need two descriptors each (client and server
/// live in this process). Returns the soft limit in force afterwards.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(wanted);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = wanted.min(ceiling).max(soft);
    if target == soft {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, target, target.max(hard)).is_err() {
        // Without CAP_SYS_RESOURCE only the soft limit can move, up to the hard one.
        let soft = target.min(hard);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
        return Ok(soft);
    }
    Ok(target)
}

/// Memory the kernel says is available for new work (`MemAvailable`), in bytes.
pub fn mem_available_bytes() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no MemAvailable in /proc/meminfo"))
}

/// Online CPUs.
pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Seconds the threads of a process have run plus waited, runnable, for
/// a CPU (the first two fields of each thread's `schedstat`, proc(5)):
/// its demand for CPU, whether or not a loaded machine met it.
pub fn process_demand_seconds(pid: u32) -> io::Result<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing has nothing more to add.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(run)), Some(Ok(wait))) => nanos += run + wait,
            _ => return Err(io::Error::other("bad /proc schedstat")),
        }
    }
    Ok(nanos as f64 / 1e9)
}

/// CPU time (user + system) a process has used, in seconds.
pub fn process_cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line (proc(5)).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| io::Error::other("bad /proc stat field"))
    };
    // rest starts at field 3 (state), so utime (14) is index 11, stime (15) index 12.
    let hz = clock_ticks_per_second();
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// With `TCPD_BENCH_MARKS` set in the environment, prints `mark <start|end>
/// <CLOCK_MONOTONIC seconds> <what>` to stderr, so a profile taken with
/// `perf record -k CLOCK_MONOTONIC` can be cut to one workload's rows
/// (`perf report --time START,END`).
pub fn mark(what: &str, start: bool) {
    if std::env::var_os("TCPD_BENCH_MARKS").is_none() {
        return;
    }
    if let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        let edge = if start { "start" } else { "end" };
        eprintln!("mark {edge} {}.{:09} {what}", t.tv_sec(), t.tv_nsec());
    }
}

/// Busy CPU seconds of the whole machine so far (all CPUs, /proc/stat).
pub fn system_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| io::Error::other("empty /proc/stat"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Ok(busy / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => 100.0,
    }
}

/// Resident set size of a process in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &serde_json::Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// The TUN device's packet counters, as the kernel keeps them: one packet
/// per `write(2)` tcpd makes (`rx_*`: the kernel receives) and per `read(2)`
/// (`tx_*`: the kernel transmits to tcpd), whatever their size, so bytes per
/// packet is the average bytes per TUN syscall (virtio-net header excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunCounters {
    pub writes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub read_bytes: u64,
}

impl TunCounters {
    /// Reads `/sys/class/net/<tun>/statistics` inside `ns`.
    pub fn read(ns: &crate::Netns, tun: &str) -> io::Result<TunCounters> {
        let mut values = [0u64; 4];
        let names = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"];
        for (value, name) in values.iter_mut().zip(names) {
            let out = ns
                .command("cat")
                .arg(format!("/sys/class/net/{tun}/statistics/{name}"))
                .output()?;
            *value = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| io::Error::other(format!("{name}: {e}")))?;
        }
        Ok(TunCounters {
            writes: values[0],
            write_bytes: values[1],
            reads: values[2],
            read_bytes: values[3],
        })
    }

    /// Counts since `earlier`.
    pub fn since(self, earlier: TunCounters) -> TunCounters {
        TunCounters {
            writes: self.writes.saturating_sub(earlier.writes),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            reads: self.reads.saturating_sub(earlier.reads),
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
        }
    }

    /// Average bytes per write (0 without writes).
    pub fn bytes_per_write(self) -> f64 {
        self.write_bytes as f64 / self.writes.max(1) as f64
    }

    /// Average bytes per read (0 without reads).
    pub fn bytes_per_read(self) -> f64 {
        self.read_bytes as f64 / self.reads.max(1) as f64
    }
}
