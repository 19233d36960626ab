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
}

/// Linux's limits for the same knobs: tcp_max_syn_backlog is at least 128;
/// tcp_synack_retries at most 255 (it is a u8 there).
const MAX_SYNACK_RETRIES: u32 = 255;
const MAX_SYN_BACKLOG: u32 = 1 << 20;

fn in_range(name: &'static str, value: u32, min: u32, max: u32) -> Result<u32, LimitError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(LimitError::Range {
            name,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        })
    }
}

impl Limits {
    /// Flags win over the file's `[limits]`, which wins over the defaults.
    pub fn resolve(cli: &LimitFlags, file: Option<&LimitFlags>) -> Result<Limits, LimitError> {
        let empty = LimitFlags::default();
        let file = file.unwrap_or(&empty);
        let defaults = StackConfig::new(std::net::Ipv4Addr::UNSPECIFIED, 24);
        let syncookies = match cli.syncookies.as_ref().or(file.syncookies.as_ref()) {
            None => defaults.syncookies,
            Some(text) => SynCookieMode::from_name(text)
                .ok_or_else(|| LimitError::SynCookies(text.clone()))?,
        };
        let max_syn_backlog = in_range(
            "max-syn-backlog",
            cli.max_syn_backlog
                .or(file.max_syn_backlog)
                .unwrap_or(defaults.max_syn_backlog),
            1,
            MAX_SYN_BACKLOG,
        )?;
        let synack_retries = in_range(
            "synack-retries",
            cli.synack_retries
                .or(file.synack_retries)
                .unwrap_or(defaults.synack_retries),
            1,
            MAX_SYNACK_RETRIES,
        )?;
        Ok(Limits {
            syncookies,
            max_syn_backlog,
            synack_retries,
        })
    }

    /// Copies the stack's limits into its configuration.
    pub fn apply_to_stack(&self, config: &mut StackConfig) {
        config.syncookies = self.syncookies;
        config.max_syn_backlog = self.max_syn_backlog;
        config.synack_retries = self.synack_retries;
    }
}

/// A limit's counter in `tcpd_stack::Stats` and what to say when it moves.
struct Watched {
    counter: fn(&Stats) -> u64,
    name: &'static str,
    message: &'static str,
}

/// Stack limits whose first bite (and later ones, at most once a minute) is logged.
const WATCHED: [Watched; 3] = [
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
