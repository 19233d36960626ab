//! Resource limits: the flags and `[limits]` keys that bound what hostile
//! peers and local clients can make the daemon hold, their defaults, and the
//! once-per-limit log line when one first bites.
//!
//! Two groups:
//! - the stack's (SYN queue and cookies, SYN,ACK retries), handed to
//!   `tcpd_stack::StackConfig`;
//! - the API's (client connections in total and per uid, the HTTP/2
//!   handshake and idle timeouts), enforced by [`crate::session`], and the
//!   fd channel's (connections waiting for their hello, the hello
//!   timeout), enforced by [`crate::fd_service`];
//! - the stack-wide memory limit (`--tcp-mem`, Linux's `tcp_mem`).
//!
//! [`ApiLimitCounters`] counts the limits enforced outside the driver (op
//! slots, fd channel) for `tcpctl stats`, and logs their first bite.
//!
//! Every default is justified in tcpd(8). Each limit has a counter in
//! `tcpctl stats`.

use clap::Args;
use serde::Deserialize;
use tcpd_stack::{Duration, Instant, StackConfig, Stats, SynCookieMode};

/// Flags (and, with the same names, keys of the config file's `[limits]` table).
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitFlags {
    /// SYN cookies: never, auto (when a listener's SYN queue is full) or always [default: auto].
    #[arg(long, value_name = "MODE", value_parser = ["never", "auto", "always"])]
    pub syncookies: Option<String>,
    /// Half-open connections a listener keeps before it answers with SYN cookies [default: from RAM as Linux, 2048 with 24 GiB].
    #[arg(long, value_name = "N")]
    pub max_syn_backlog: Option<u32>,
    /// SYN,ACK retransmissions before a half-open connection is dropped [default: 5].
    #[arg(long, value_name = "N")]
    pub synack_retries: Option<u32>,
    /// Most orphaned connections (closed, still delivering data); the oldest is reset past it [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_orphans: Option<u32>,
    /// Most bytes all orphaned connections may hold; the oldest is reset past it [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_orphan_memory: Option<u64>,
    /// Retransmissions or zero-window probes before an orphan is dropped [default: 8].
    #[arg(long, value_name = "N")]
    pub orphan_retries: Option<u32>,
    /// FIN-WAIT-2 timeout of a closed socket, in ms [default: twice --msl-ms, 60000].
    #[arg(long, value_name = "MS")]
    pub fin_timeout_ms: Option<u64>,
    /// API client connections all unprivileged users together may hold [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u32>,
    /// API client connections one unprivileged uid may hold [default: 256].
    #[arg(long, value_name = "N")]
    pub max_clients_per_uid: Option<u32>,
    /// Time a new API connection has to send the HTTP/2 preface, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// HTTP/2 keepalive: ping an API connection silent for this long, in ms; 0 disables [default: 60000].
    #[arg(long, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
    /// HTTP/2 keepalive: drop an API connection whose PING goes unanswered this long, in ms [default: 20000].
    #[arg(long, value_name = "MS")]
    pub keepalive_timeout_ms: Option<u64>,
    /// Drop an API connection with no RPC in flight and no socket for this long, in ms; 0 disables [default: 300000].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Bytes all connections may buffer, LOW,PRESSURE,HIGH as Linux's tcp_mem (in bytes, not pages) [default: 3/64,1/16,3/32 of RAM].
    #[arg(long, value_name = "LOW,PRESSURE,HIGH")]
    pub tcp_mem: Option<String>,
    /// fd-channel connections that may wait for their hello at once; more are closed [default: 64].
    #[arg(long, value_name = "N")]
    pub fd_max_unauthenticated: Option<u32>,
    /// Time a new fd-channel connection has to present its token, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub fd_hello_timeout_ms: Option<u64>,
    /// Members of this group are operators like root: not limited per uid (API connections, sockets) [default: none].
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
}

/// A `[limits]` or flag value out of range.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("invalid --syncookies {0:?}: expected never, auto or always")]
    SynCookies(String),
    #[error(
        "invalid --tcp-mem {0:?}: expected LOW,PRESSURE,HIGH in bytes, LOW <= PRESSURE <= HIGH, HIGH > 0"
    )]
    TcpMem(String),
    #[error("unknown --admin-group {0:?}")]
    AdminGroup(String),
    #[error("invalid --{name} {value}: must be in {min}..={max}")]
    Range {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// The resolved limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub syncookies: SynCookieMode,
    pub max_syn_backlog: u32,
    pub synack_retries: u32,
    pub max_orphans: u32,
    pub max_orphan_memory: usize,
    pub orphan_retries: u32,
    /// `None`: twice the MSL.
    pub fin_timeout: Option<Duration>,
    pub max_clients: u32,
    pub max_clients_per_uid: u32,
    pub handshake_timeout: std::time::Duration,
    /// `None`: no keepalive pings.
    pub keepalive: Option<std::time::Duration>,
    /// How long a keepalive PING may go unanswered.
    pub keepalive_timeout: std::time::Duration,
    /// `None`: idle connections are kept.
    pub idle_timeout: Option<std::time::Duration>,
    /// Stack-wide buffered bytes: low, pressure, high.
    pub tcp_mem: [usize; 3],
    pub fd_max_unauthenticated: u32,
    pub fd_hello_timeout: std::time::Duration,
    /// `--admin-group`'s gid.
    pub admin_gid: Option<u32>,
}

/// Linux's default `tcp_mem` (`tcp_init_mem`): a sixteenth of the memory
/// as the pressure threshold, three quarters of that as low, twice low as
/// the hard limit — 3/64, 1/16 and 3/32 of RAM (24 GiB here: 1.1, 1.5 and
/// 2.2 GiB, what this kernel's sysctl shows). Linux counts pages and
/// per-segment overhead; tcpd counts payload bytes, which only makes it
/// the more generous in data terms. Without /proc/meminfo: 4 GiB of RAM.
pub fn default_tcp_mem() -> [usize; 3] {
    let ram = ram_bytes();
    let pressure = (ram / 16).max(1 << 20);
    let low = pressure / 4 * 3;
    [low, pressure, low * 2]
}

/// The machine's RAM (MemTotal), or 4 GiB when /proc/meminfo says nothing.
fn ram_bytes() -> usize {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib.saturating_mul(1024));
    usize::try_from(ram).unwrap_or(usize::MAX)
}

/// Linux's default `tcp_max_syn_backlog`: max(128, ehash entries / 128), the established hash having one slot per
/// 128 KiB of memory rounded up to a power of two, at most 512 Ki slots
/// (`tcp_init`, `tcp_sk_init`): 2048 with 24 GiB, 4096 at most.
pub fn default_max_syn_backlog() -> u32 {
    syn_backlog_for_ram(ram_bytes())
}

fn syn_backlog_for_ram(ram: usize) -> u32 {
    let slots = (ram >> 17).max(1).next_power_of_two().min(512 * 1024);
    u32::try_from((slots / 128).max(128)).unwrap_or(u32::MAX)
}

/// Parses `LOW,PRESSURE,HIGH` (bytes).
fn parse_tcp_mem(text: &str) -> Result<[usize; 3], LimitError> {
    let bad = || LimitError::TcpMem(text.to_string());
    let values: Vec<usize> = text
        .split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match values[..] {
        [low, pressure, high] if low <= pressure && pressure <= high && high > 0 => {
            Ok([low, pressure, high])
        }
        _ => Err(bad()),
    }
}

/// Linux's limits for the same knobs: tcp_max_syn_backlog is at least 128;
/// tcp_synack_retries at most 255 (it is a u8 there).
const MAX_SYNACK_RETRIES: u32 = 255;
const MAX_SYN_BACKLOG: u32 = 1 << 20;
/// Orphan limits: Linux's tcp_orphan_retries is a u8 too; a FIN-WAIT-2
/// timeout above Linux's cap (MAX_TCP_KEEPIDLE s) or an orphan memory above
/// 64 GiB makes no sense.
const MAX_ORPHAN_RETRIES: u32 = 255;
const MAX_ORPHANS: u32 = 1 << 24;
const MAX_ORPHAN_MEMORY: u64 = 64 << 30;
const MAX_FIN_TIMEOUT_MS: u64 = 32_767_000;
/// API limits: no more clients than file descriptors could ever allow;
/// timeouts up to a day.
const MAX_CLIENTS: u32 = 1 << 24;
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// A timeout in ms (`default` when unset), `None` for 0 ("off").
fn timeout_ms(
    name: &'static str,
    value: Option<u64>,
    default: u64,
) -> Result<Option<std::time::Duration>, LimitError> {
    let ms = in_range_u64(name, value.unwrap_or(default), 0, MAX_TIMEOUT_MS)?;
    Ok((ms > 0).then(|| std::time::Duration::from_millis(ms)))
}

fn in_range(name: &'static str, value: u32, min: u32, max: u32) -> Result<u32, LimitError> {
    in_range_u64(name, value.into(), min.into(), max.into()).map(|v| v as u32)
}

fn in_range_u64(name: &'static str, value: u64, min: u64, max: u64) -> Result<u64, LimitError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(LimitError::Range {
            name,
            value,
            min,
            max,
        })
    }
}

impl Limits {
    /// Flags win over the file's `[limits]`, which wins over the defaults.
    pub fn resolve(cli: &LimitFlags, file: Option<&LimitFlags>) -> Result<Limits, LimitError> {
        let empty = LimitFlags::default();
        let file = file.unwrap_or(&empty);
        let defaults = StackConfig::new(std::net::Ipv4Addr::UNSPECIFIED, 24);
        // A value from the flags, else from the file.
        macro_rules! pick {
            ($field:ident) => {
                cli.$field.or(file.$field)
            };
        }
        let syncookies = match cli.syncookies.as_ref().or(file.syncookies.as_ref()) {
            None => defaults.syncookies,
            Some(text) => SynCookieMode::from_name(text)
                .ok_or_else(|| LimitError::SynCookies(text.clone()))?,
        };
        let count = |name, value: Option<u32>, default, min, max| {
            in_range(name, value.unwrap_or(default), min, max)
        };
        let max_syn_backlog = count(
            "max-syn-backlog",
            pick!(max_syn_backlog),
            default_max_syn_backlog(),
            1,
            MAX_SYN_BACKLOG,
        )?;
        let synack_retries = count(
            "synack-retries",
            pick!(synack_retries),
            defaults.synack_retries,
            1,
            MAX_SYNACK_RETRIES,
        )?;
        let max_orphans = count(
            "max-orphans",
            pick!(max_orphans),
            defaults.max_orphans,
            0,
            MAX_ORPHANS,
        )?;
        let max_orphan_memory = in_range_u64(
            "max-orphan-memory",
            pick!(max_orphan_memory).unwrap_or(defaults.max_orphan_memory as u64),
            0,
            MAX_ORPHAN_MEMORY,
        )?;
        let orphan_retries = count(
            "orphan-retries",
            pick!(orphan_retries),
            defaults.orphan_retries,
            1,
            MAX_ORPHAN_RETRIES,
        )?;
        let fin_timeout = pick!(fin_timeout_ms)
            .map(|ms| in_range_u64("fin-timeout-ms", ms, 1, MAX_FIN_TIMEOUT_MS))
            .transpose()?
            .map(Duration::from_millis);
        let max_clients = count("max-clients", pick!(max_clients), 4096, 1, MAX_CLIENTS)?;
        let max_clients_per_uid = count(
            "max-clients-per-uid",
            pick!(max_clients_per_uid),
            256,
            1,
            MAX_CLIENTS,
        )?;
        let handshake_timeout = std::time::Duration::from_millis(in_range_u64(
            "handshake-timeout-ms",
            pick!(handshake_timeout_ms).unwrap_or(10_000),
            1,
            MAX_TIMEOUT_MS,
        )?);
        let keepalive = timeout_ms("keepalive-ms", pick!(keepalive_ms), 60_000)?;
        let keepalive_timeout = std::time::Duration::from_millis(in_range_u64(
            "keepalive-timeout-ms",
            pick!(keepalive_timeout_ms).unwrap_or(20_000),
            1,
            MAX_TIMEOUT_MS,
        )?);
        let idle_timeout = timeout_ms("idle-timeout-ms", pick!(idle_timeout_ms), 300_000)?;
        let tcp_mem = match cli.tcp_mem.as_ref().or(file.tcp_mem.as_ref()) {
            Some(text) => parse_tcp_mem(text)?,
            None => default_tcp_mem(),
        };
        let fd_max_unauthenticated = count(
            "fd-max-unauthenticated",
            pick!(fd_max_unauthenticated),
            64,
            1,
            MAX_CLIENTS,
        )?;
        let fd_hello_timeout = std::time::Duration::from_millis(in_range_u64(
            "fd-hello-timeout-ms",
            pick!(fd_hello_timeout_ms).unwrap_or(5_000),
            1,
            MAX_TIMEOUT_MS,
        )?);
        let admin_gid = match cli.admin_group.as_ref().or(file.admin_group.as_ref()) {
            None => None,
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
                    .or_else(|| name.parse().ok())
                    .ok_or_else(|| LimitError::AdminGroup(name.clone()))?,
            ),
        };
        Ok(Limits {
            admin_gid,
            tcp_mem,
            fd_max_unauthenticated,
            fd_hello_timeout,
            idle_timeout,
            max_clients,
            max_clients_per_uid,
            handshake_timeout,
            keepalive,
            keepalive_timeout,
            syncookies,
            max_syn_backlog,
            synack_retries,
            max_orphans,
            max_orphan_memory: usize::try_from(max_orphan_memory).unwrap_or(usize::MAX),
            orphan_retries,
            fin_timeout,
        })
    }

    /// Copies the stack's limits into its configuration.
    pub fn apply_to_stack(&self, config: &mut StackConfig) {
        config.syncookies = self.syncookies;
        config.max_syn_backlog = self.max_syn_backlog;
        config.synack_retries = self.synack_retries;
        config.max_orphans = self.max_orphans;
        config.max_orphan_memory = self.max_orphan_memory;
        config.orphan_retries = self.orphan_retries;
        config.fin_timeout = self.fin_timeout;
        config.tcp_mem = Some(self.tcp_mem);
    }
}

/// A limit's counter in `tcpd_stack::Stats` and what to say when it moves.
struct Watched {
    counter: fn(&Stats) -> u64,
    name: &'static str,
    message: &'static str,
}

/// Stack limits whose first bite (and later ones, at most once a minute) is logged.
const WATCHED: [Watched; 7] = [
    Watched {
        counter: |s| s.syncookies_sent,
        name: "max-syn-backlog",
        message: "possible SYN flood: a listener's SYN queue is full, answering with SYN cookies",
    },
    Watched {
        counter: |s| s.listen_overflows,
        name: "listen backlog",
        message: "a listener's accept queue is full: new connections are dropped until it accepts",
    },
    Watched {
        counter: |s| s.syncookies_failed,
        name: "syncookies",
        message: "ACKs with invalid SYN cookies (forged, or older than two minutes) were reset",
    },
    Watched {
        counter: |s| s.orphan_resets,
        name: "max-orphans / max-orphan-memory",
        message: "too many orphaned connections (closed, still holding data): the oldest were reset",
    },
    Watched {
        counter: |s| s.orphan_timeouts,
        name: "orphan-retries / fin-timeout",
        message: "orphaned connections whose peer stopped answering or reading were dropped",
    },
    Watched {
        counter: |s| s.tcp_mem_pressure,
        name: "tcp-mem (pressure)",
        message: "connections buffer more than --tcp-mem's pressure threshold: buffers stop \
                  growing and receive windows are clamped to four segments",
    },
    Watched {
        counter: |s| s.tcp_mem_full,
        name: "tcp-mem (high)",
        message: "connections buffer --tcp-mem's hard limit: writes block, windows stop \
                  and data that does not keep a connection going is dropped",
    },
];

/// Quiet time between two log lines about one limit.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Rate-limited log of the stack's limits biting: the driver calls
/// [`LimitLog::note`] after every batch; a counter that moved gets one
/// warning, then at most one a minute with the count since the last.
#[derive(Debug, Default)]
pub struct LimitLog {
    /// Per watched counter: the value last logged and when.
    seen: [(u64, Option<Instant>); WATCHED.len()],
}

impl LimitLog {
    pub fn note(&mut self, stats: &Stats, now: Instant) {
        for (watched, (logged, at)) in WATCHED.iter().zip(self.seen.iter_mut()) {
            let value = (watched.counter)(stats);
            if value == *logged || at.is_some_and(|at| now - at < LOG_INTERVAL) {
                continue;
            }
            tracing::warn!(
                limit = watched.name,
                count = value - *logged,
                total = value,
                "{} (logged at most once a minute; `tcpctl stats` counts every one)",
                watched.message
            );
            *logged = value;
            *at = Some(now);
        }
    }
}

/// A limit enforced outside the driver (see [`ApiLimitCounters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiLimit {
    /// A session's call waited for one of its op-channel slots (`--session-op-slots`).
    OpSlots,
    /// An fd-channel connection was closed: too many waiting for their hello.
    FdUnauthenticated,
    /// An fd-channel connection sent no valid hello in time.
    FdHelloTimeout,
}

impl ApiLimit {
    const ALL: [ApiLimit; 3] = [
        ApiLimit::OpSlots,
        ApiLimit::FdUnauthenticated,
        ApiLimit::FdHelloTimeout,
    ];

    /// The counter's name in `tcpctl stats`.
    fn counter(self) -> &'static str {
        match self {
            ApiLimit::OpSlots => "api_op_slot_waits",
            ApiLimit::FdUnauthenticated => "api_fd_refused_unauthenticated",
            ApiLimit::FdHelloTimeout => "api_fd_hello_timeouts",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ApiLimit::OpSlots => {
                "a session has --session-op-slots calls queued for the driver: its further \
                 calls wait for its own slots (other sessions are not delayed)"
            }
            ApiLimit::FdUnauthenticated => {
                "--fd-max-unauthenticated fd-channel connections are waiting for their \
                 hello: further ones are closed at once"
            }
            ApiLimit::FdHelloTimeout => {
                "an fd-channel connection sent no valid hello within --fd-hello-timeout-ms: closed"
            }
        }
    }
}

/// Counts the limits enforced outside the driver (shared by the API
/// handlers and the fd channel through the driver handle), and the fd
/// connections waiting for their hello (a gauge); logs each limit's first
/// bite, then at most once a minute with the count since.
#[derive(Debug, Default)]
pub struct ApiLimitCounters {
    counts: [std::sync::atomic::AtomicU64; 3],
    fd_unauthenticated: std::sync::atomic::AtomicU64,
    /// Per limit: when last logged, and the count then.
    logged: std::sync::Mutex<[(Option<std::time::Instant>, u64); 3]>,
}

impl ApiLimitCounters {
    /// One more bite of `limit`.
    pub fn count(&self, limit: ApiLimit) {
        use std::sync::atomic::Ordering;
        let i = limit as usize;
        let total = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let (at, seen) = &mut logged[i];
        let now = std::time::Instant::now();
        if at.is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(60)) {
            return;
        }
        tracing::warn!(
            limit = limit.counter(),
            count = total - *seen,
            total,
            "{} (logged at most once a minute; `tcpctl stats` counts every one)",
            limit.message()
        );
        *at = Some(now);
        *seen = total;
    }

    /// An fd-channel connection started (`true`) or stopped waiting for its hello.
    pub fn fd_waiting(&self, started: bool) {
        use std::sync::atomic::Ordering;
        if started {
            self.fd_unauthenticated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fd_unauthenticated.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every counter with its name, for `tcpctl stats`.
    pub fn named(&self) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering;
        let mut v: Vec<(String, u64)> = ApiLimit::ALL
            .iter()
            .map(|l| {
                (
                    l.counter().to_string(),
                    self.counts[*l as usize].load(Ordering::Relaxed),
                )
            })
            .collect();
        v.push((
            "api_fd_unauthenticated".to_string(),
            self.fd_unauthenticated.load(Ordering::Relaxed),
        ));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_linux() {
        let l = Limits::resolve(&LimitFlags::default(), None).expect("defaults");
        assert_eq!(l.syncookies, SynCookieMode::Auto);
        assert_eq!(l.max_syn_backlog, default_max_syn_backlog());
        // Linux's numbers: 24 GiB -> 262144 hash slots -> 2048; small
        // machines 128; at most 4096.
        assert_eq!(syn_backlog_for_ram(24 << 30), 2048);
        assert_eq!(syn_backlog_for_ram(512 << 20), 128);
        assert_eq!(syn_backlog_for_ram(1 << 40), 4096);
        assert_eq!(l.synack_retries, 5);
        assert_eq!(l.max_orphans, 4096);
        assert_eq!(l.max_orphan_memory, 64 << 20);
        assert_eq!(l.orphan_retries, 8);
        assert_eq!(l.fin_timeout, None);
        assert_eq!((l.max_clients, l.max_clients_per_uid), (4096, 256));
        assert_eq!(l.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(l.keepalive, Some(std::time::Duration::from_secs(60)));
        assert_eq!(l.keepalive_timeout, std::time::Duration::from_secs(20));
        assert_eq!(l.idle_timeout, Some(std::time::Duration::from_secs(300)));
        assert_eq!(l.tcp_mem, default_tcp_mem());
        let [low, pressure, high] = l.tcp_mem;
        assert!(low < pressure && pressure < high && high >= 1 << 20);
        assert_eq!(l.fd_max_unauthenticated, 64);
        assert_eq!(l.fd_hello_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn admin_group_is_a_name_or_a_number() {
        let cli = |text: &str| LimitFlags {
            admin_group: Some(text.into()),
            ..LimitFlags::default()
        };
        assert_eq!(
            Limits::resolve(&cli("root"), None).expect("root").admin_gid,
            Some(0)
        );
        assert_eq!(
            Limits::resolve(&cli("4242"), None).expect("gid").admin_gid,
            Some(4242)
        );
        assert!(Limits::resolve(&cli("no-such-group-here"), None).is_err());
        assert_eq!(
            Limits::resolve(&LimitFlags::default(), None)
                .expect("none")
                .admin_gid,
            None
        );
    }

    #[test]
    fn tcp_mem_is_three_ordered_byte_counts() {
        let cli = |text: &str| LimitFlags {
            tcp_mem: Some(text.into()),
            ..LimitFlags::default()
        };
        let l = Limits::resolve(&cli("1000, 2000,4000"), None).expect("valid");
        assert_eq!(l.tcp_mem, [1000, 2000, 4000]);
        for bad in ["1,2", "3,2,1", "0,0,0", "a,b,c", "1,2,3,4"] {
            assert!(Limits::resolve(&cli(bad), None).is_err(), "{bad}");
        }
        let file: LimitFlags = toml::from_str("tcp-mem = \"10,20,30\"").expect("toml");
        assert_eq!(
            Limits::resolve(&LimitFlags::default(), Some(&file))
                .expect("file")
                .tcp_mem,
            [10, 20, 30]
        );
    }

    #[test]
    fn flags_win_over_file_and_ranges_are_checked() {
        let file: LimitFlags =
            toml::from_str("syncookies = \"never\"\nmax-syn-backlog = 64\n").expect("toml");
        let cli = LimitFlags {
            syncookies: Some("always".into()),
            ..LimitFlags::default()
        };
        let l = Limits::resolve(&cli, Some(&file)).expect("valid");
        assert_eq!(l.syncookies, SynCookieMode::Always);
        assert_eq!(l.max_syn_backlog, 64);
        let bad = LimitFlags {
            synack_retries: Some(0),
            ..LimitFlags::default()
        };
        assert!(Limits::resolve(&bad, None).is_err());
        assert!(toml::from_str::<LimitFlags>("nonsense = 1").is_err());
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn api_limit_counters_count_every_bite() {
        let c = ApiLimitCounters::default();
        c.count(ApiLimit::OpSlots);
        c.count(ApiLimit::OpSlots);
        c.count(ApiLimit::FdHelloTimeout);
        c.fd_waiting(true);
        c.fd_waiting(true);
        c.fd_waiting(false);
        let named = c.named();
        let get = |n: &str| named.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("api_op_slot_waits"), Some(2));
        assert_eq!(get("api_fd_refused_unauthenticated"), Some(0));
        assert_eq!(get("api_fd_hello_timeouts"), Some(1));
        assert_eq!(get("api_fd_unauthenticated"), Some(1));
        // Logged once: the second bite came within the minute.
        assert_eq!(c.logged.lock().expect("lock")[0].1, 1);
    }

    #[test]
    fn limit_log_is_rate_limited() {
        let mut log = LimitLog::default();
        let mut stats = Stats::default();
        let t0 = Instant::from_millis(1000);
        log.note(&stats, t0);
        assert_eq!(log.seen[0], (0, None), "nothing moved, nothing logged");
        stats.syncookies_sent = 5;
        log.note(&stats, t0);
        assert_eq!(log.seen[0], (5, Some(t0)));
        stats.syncookies_sent = 9;
        log.note(&stats, t0 + Duration::from_secs(10));
        assert_eq!(log.seen[0], (5, Some(t0)), "quiet for a minute");
        log.note(&stats, t0 + Duration::from_secs(61));
        assert_eq!(log.seen[0].0, 9);
    }
}
