//! Resource limits: the flags and `[limits]` keys that bound what hostile
//! peers and local clients can make the daemon hold, their defaults, and the
//! once-per-limit log line when one first bites.
//!
//! Two groups:
//! - the stack's (SYN queue and cookies, SYN,ACK retries), handed to
//!   `tcpd_stack::StackConfig`;
//! - the API's (client connections in total and per uid, the HTTP/2
//!   handshake and idle timeouts), enforced by [`crate::session`].
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
    /// Half-open connections a listener keeps before it answers with SYN cookies [default: 2048].
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
    /// Drop an API connection with no RPC in flight and no socket for this long, in ms; 0 disables [default: 300000].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
}

/// A `[limits]` or flag value out of range.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("invalid --syncookies {0:?}: expected never, auto or always")]
    SynCookies(String),
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
    /// `None`: idle connections are kept.
    pub idle_timeout: Option<std::time::Duration>,
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
            defaults.max_syn_backlog,
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
        let idle_timeout = timeout_ms("idle-timeout-ms", pick!(idle_timeout_ms), 300_000)?;
        Ok(Limits {
            idle_timeout,
            max_clients,
            max_clients_per_uid,
            handshake_timeout,
            keepalive,
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
    }
}

/// A limit's counter in `tcpd_stack::Stats` and what to say when it moves.
struct Watched {
    counter: fn(&Stats) -> u64,
    name: &'static str,
    message: &'static str,
}

/// Stack limits whose first bite (and later ones, at most once a minute) is logged.
const WATCHED: [Watched; 5] = [
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_linux() {
        let l = Limits::resolve(&LimitFlags::default(), None).expect("defaults");
        assert_eq!(l.syncookies, SynCookieMode::Auto);
        assert_eq!(l.max_syn_backlog, 2048);
        assert_eq!(l.synack_retries, 5);
        assert_eq!(l.max_orphans, 4096);
        assert_eq!(l.max_orphan_memory, 64 << 20);
        assert_eq!(l.orphan_retries, 8);
        assert_eq!(l.fin_timeout, None);
        assert_eq!((l.max_clients, l.max_clients_per_uid), (4096, 256));
        assert_eq!(l.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(l.keepalive, Some(std::time::Duration::from_secs(60)));
        assert_eq!(l.idle_timeout, Some(std::time::Duration::from_secs(300)));
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
