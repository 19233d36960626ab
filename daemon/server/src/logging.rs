//! The daemon's log output: tracing events as text or JSON lines on stderr.
//!
//! Under systemd (`StandardError=journal`) stderr is a stream into the
//! journal, which stamps each line with its own time and reads a syslog
//! priority from a leading `<N>` (sd-daemon(3), systemd.exec(5)
//! `SyslogLevelPrefix=`). When stderr is that stream — systemd says so in
//! `JOURNAL_STREAM` ("DEVICE:INODE" of the stream, checked against stderr
//! itself, since the variable is inherited by children whose stderr may go
//! elsewhere) — every line starts with its level's priority, so
//! `journalctl -p warning` and `systemctl status` pick out warnings and
//! errors, and text lines carry no second timestamp. Elsewhere (a terminal,
//! a file, the tests' pipes) the lines are unchanged.

use crate::config::{LogFormat, Settings};
use std::os::fd::AsRawFd;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber for `settings` (format, level filter;
/// `RUST_LOG` overrides the level).
pub fn init(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let journal = stderr_is_journal();
    match (settings.log_format, journal) {
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, false) => builder.init(),
        // JSON keeps its "timestamp" field: it is data for the reader.
        (LogFormat::Json, true) => {
            let format = tracing_subscriber::fmt::format().json();
            builder.json().event_format(SyslogPriority(format)).init()
        }
        (LogFormat::Text, true) => {
            let format = tracing_subscriber::fmt::format().without_time();
            builder.event_format(SyslogPriority(format)).init()
        }
    }
}

/// Whether stderr is the journal stream systemd connected (JOURNAL_STREAM).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    value.to_str().and_then(parse_journal_stream) == Some((stat.st_dev, stat.st_ino))
}

/// "DEVICE:INODE" (decimal) as systemd.exec(5) describes JOURNAL_STREAM.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority of a tracing level (syslog(3): LOG_ERR 3,
/// LOG_WARNING 4, LOG_INFO 6, LOG_DEBUG 7).
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that writes `<N>`, the event's syslog priority, before
/// the inner format's line.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream(""), None);
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
        assert_eq!(syslog_priority(Level::TRACE), 7);
    }
}
