//! The command line: every subcommand, option and help text of tcpctl.
//!
//! Parsing only; no I/O happens here. Values are validated by clap (bad input
//! exits with code 2), so the commands receive well-formed arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::state::parse_state_filter;
use tcpd_proto::types::TcpStates;

const EXAMPLES_AND_EXIT_CODES: &str = "\
Examples:
  tcpctl ls                          every socket, like `ss -tanp`
  tcpctl ls -l                       listeners only
  tcpctl ls --state established -i   open connections with RTT, cwnd, bytes
  tcpctl ls --state connected --port 8080 --json
  tcpctl watch --json --count 5      the next five state transitions
  tcpctl stats                       segment, reset, drop counters
  tcpctl kill 10.0.0.1:8080 10.0.0.2:40312
  tcpctl kill --state close-wait --port 8080
  tcpctl status
  tcpctl completions bash > /etc/bash_completion.d/tcpctl

State names (for --state): listen, syn-sent, syn-received, established,
fin-wait-1, fin-wait-2, close-wait, closing, last-ack, time-wait, closed
(RFC 9293; any case, `-` or `_`); groups: all, connected (all but LISTEN and
CLOSED), synchronized (connected minus SYN-SENT and SYN-RECEIVED), bucket
(SYN-RECEIVED, TIME-WAIT), big (all but bucket).

Exit codes:
  0  success
  1  other error (daemon error, nothing matched `kill`, `watch` timeout)
  2  usage error
  3  daemon not reachable (is tcpd running? set TCPD_SOCKET or pass --socket)
  4  permission denied (EPERM/EACCES: `kill` needs root; socket access)

The --json schemas are documented in tcpctl's README.md.";

const LS_HELP: &str = "\
State names (for --state): listen, syn-sent, syn-received, established,
fin-wait-1, fin-wait-2, close-wait, closing, last-ack, time-wait, closed
(RFC 9293; any case, `-` or `_`); groups: all, connected (all but LISTEN and
CLOSED), synchronized (connected minus SYN-SENT and SYN-RECEIVED), bucket
(SYN-RECEIVED, TIME-WAIT), big (all but bucket).";

const KILL_HELP: &str = "\
Either give one connection as LOCAL REMOTE (ip:port each), or select
connections with --state/--port/--uid (at least one); each distinct match is
aborted with its own request. Sockets without a peer (listeners) are skipped.
The daemon allows this for root only (exit code 4 otherwise).

State names (for --state): listen, syn-sent, syn-received, established,
fin-wait-1, fin-wait-2, close-wait, closing, last-ack, time-wait, closed
(RFC 9293; any case, `-` or `_`); groups: all, connected (all but LISTEN and
CLOSED), synchronized (connected minus SYN-SENT and SYN-RECEIVED), bucket
(SYN-RECEIVED, TIME-WAIT), big (all but bucket).";

/// tcpctl — inspect and control the tcpd user-space TCP stack.
#[derive(Debug, Parser)]
#[command(
    name = "tcpctl",
    version,
    about = "Inspect and control the tcpd user-space TCP stack",
    long_about = "Inspect and control the tcpd user-space TCP stack: list its sockets and \
                  their TCP states, stream state transitions, read its counters, reset \
                  connections, and show the daemon's status.",
    after_help = EXAMPLES_AND_EXIT_CODES
)]
pub struct Cli {
    /// Path of tcpd's Unix socket.
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        env = "TCPD_SOCKET",
        default_value = tcpd_proto::DEFAULT_SOCKET_PATH,
        global = true,
        help_heading = "Global options"
    )]
    pub socket: PathBuf,

    /// When to colour state names.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto, global = true, help_heading = "Global options")]
    pub color: ColorChoice,

    /// Print machine-readable JSON (schema in README.md).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sockets, one row each (like `ss -tanp`).
    #[command(visible_alias = "list", after_help = LS_HELP)]
    Ls(LsArgs),
    /// Stream TCP state transitions as they happen.
    Watch(WatchArgs),
    /// Draw one connection live as the seed's ladder diagram (or replay a trace).
    #[command(after_help = TRACE_HELP)]
    Trace(TraceArgs),
    /// Write a pcapng capture from inside tcpd (the stack's and the link's view).
    #[command(after_help = CAPTURE_HELP)]
    Capture(CaptureArgs),
    /// Show the stack's counters and connections per state.
    Stats(StatsArgs),
    /// Reset (RST) connections; needs root.
    #[command(
        after_help = KILL_HELP
    )]
    Kill(KillArgs),
    /// Show the daemon's version, uptime, TUN and addresses.
    Status,
    /// Print a shell completion script.
    Completions {
        /// Shell to generate the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Connection filters shared by `ls` and `kill`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only sockets in STATE (repeatable, or comma-separated; names and groups below).
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_state_filter)]
    pub state: Vec<TcpStates>,
    /// Only sockets whose local or remote port is N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Only sockets owned by uid N.
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,
    /// Only IPv4 sockets (as `ss -4`).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6 sockets, IPv4-mapped connections of IPv6 sockets included (as `ss -6`).
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
}

impl FilterArgs {
    /// The family the flags select: `Some(true)` IPv6, `Some(false)` IPv4.
    pub fn family(&self) -> Option<bool> {
        match (self.ipv4, self.ipv6) {
            (true, _) => Some(false),
            (_, true) => Some(true),
            _ => None,
        }
    }
}

/// `tcpctl ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only listening sockets (adds LISTEN to --state).
    #[arg(short = 'l', long)]
    pub listening: bool,
    /// Add a detail line per socket: congestion control, mss, srtt, rttvar,
    /// rto, cwnd, ssthresh, snd_wnd, rcv_wnd, retransmits, bytes sent/received.
    #[arg(short = 'i', long)]
    pub info: bool,
}

/// `tcpctl watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Exit after N transitions.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit after SECS seconds (exit code 1 if --count was not reached).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
    /// Only transitions of connections whose local or remote port is N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
}

const TRACE_HELP: &str = "\
Selection: LOCAL REMOTE (one connection), --port N (either side), or nothing
(any). An existing match is followed (the oldest), else the next connection
that starts; --next skips existing ones. One connection is drawn; the trace
ends when tcpd's side reaches CLOSED (or at --timeout / --count).

Rows: time (s since the first event; --no-time: the seed's row numbers),
tcpd's state, arrow (--> out, <-- in, ==> retransmission, --X / X-- dropped
by the link impairer), <SEQ=..><ACK=..><CTL=..><DATA=len> (relative to each
ISN; --absolute for raw), arrow, the peer's state (inferred from RFC 9293).
Window and options (<WIN>, <MSS>, <WS>, <SACK-OK>, <SACK=..>, <TS> on SYNs)
follow when they fit or on the next row; [marks] end a row; ** rows are
timer fires (RTO, TLP), loss recovery and state changes.

Tracing needs root, or LOCAL REMOTE of a connection your uid owns.
--json prints one event per line (schema in README.md); --replay FILE reads
such a file back, or a pcapng file from `tcpctl capture` (the stack's view;
tcpd's states are then inferred like the peer's).";

const CAPTURE_HELP: &str = "\
The file has two interfaces: 0 \"tcpd-stack\" (packets as the stack received
and sent them) and 1 \"tcpd-link\" (as they crossed the TUN), either side of
tcpd's --impair: a packet the impairer dropped is on one interface only.
Open it with Wireshark, tshark -r or tcpdump -r. Stops at ^C, --timeout, or
when tcpd stops. Packets the writer is too slow for are dropped by the daemon
and counted in the file (interface statistics). Needs root.

Examples:
  tcpctl capture -w /tmp/tcpd.pcapng
  tcpctl capture --filter 'port 8080' --timeout 10 | tshark -r -";

/// `tcpctl capture`.
#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Write to FILE (`-`: standard output, which must not be a terminal).
    #[arg(short = 'w', long = "write", value_name = "FILE", default_value = "-")]
    pub write: PathBuf,
    /// Keep only matching packets: `host A.B.C.D`, `port N`, joined by `and`.
    #[arg(long, value_name = "EXPR", default_value = "")]
    pub filter: String,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
}

/// `tcpctl stats`.
#[derive(Debug, Clone, Default, Args)]
pub struct StatsArgs {
    /// Print the Prometheus text exposition format (for node_exporter's
    /// textfile collector): counters `tcpd_*_total`, drops by reason,
    /// impairer actions, and the gauge `tcpd_connections{state=...}`.
    /// (Takes precedence over --json.)
    #[arg(long)]
    pub prometheus: bool,
}

/// `tcpctl trace`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// tcpd's end of the connection, ip:port or [ipv6]:port.
    #[arg(value_name = "LOCAL", requires = "remote")]
    pub local: Option<SocketAddr>,
    /// The peer's end, ip:port.
    #[arg(value_name = "REMOTE", requires = "local")]
    pub remote: Option<SocketAddr>,
    /// Only a connection whose local or remote port is N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Skip existing connections: wait for the next one that starts.
    #[arg(long)]
    pub next: bool,
    /// Raw sequence numbers instead of numbers relative to each ISN.
    #[arg(long)]
    pub absolute: bool,
    /// Only what the seed's diagrams show (no window, options, marks).
    #[arg(long)]
    pub brief: bool,
    /// Row numbers (as the seed) instead of times.
    #[arg(long = "no-time")]
    pub no_time: bool,
    /// The timestamps option on every segment.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Draw a trace saved with `--json`, or a `tcpctl capture` file
    /// (tcpd's states then inferred too), instead of asking the daemon.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Exit after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
    /// Columns to draw in (default: $COLUMNS, else 80).
    #[arg(long, value_name = "N")]
    pub width: Option<usize>,
}

/// `tcpctl kill`.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .multiple(true)
        .args(["local", "state", "port", "uid"])
))]
pub struct KillArgs {
    /// Local address of the connection, ip:port or [ipv6]:port.
    #[arg(value_name = "LOCAL", requires = "remote", conflicts_with_all = ["state", "port", "uid"])]
    pub local: Option<SocketAddr>,
    /// Remote address of the connection, ip:port.
    #[arg(value_name = "REMOTE", requires = "local")]
    pub remote: Option<SocketAddr>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Parses a positive number of seconds (fractions allowed).
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("the timeout must be positive".into());
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcpctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ls_filters_parse() {
        let cli = parse(&[
            "ls",
            "--state",
            "TIME_WAIT,established",
            "--state",
            "listen",
            "--port",
            "80",
        ])
        .expect("valid");
        let Command::Ls(ls) = cli.command else {
            panic!("not ls")
        };
        assert_eq!(ls.filter.state.len(), 3);
        assert!(ls.filter.state[0].has(tcpd_proto::types::TcpState::TimeWait));
        assert_eq!(ls.filter.port, Some(80));
        let cli = parse(&["list", "-l", "-i", "--json"]).expect("alias");
        assert!(cli.json);
        let Command::Ls(ls) = cli.command else {
            panic!("not ls")
        };
        assert!(ls.listening && ls.info);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["ls", "--state", "half-open"][..],
            &["ls", "--port", "70000"],
            &["watch", "--timeout", "-1"],
            &["frobnicate"],
            &["kill"],
            &["kill", "10.0.0.1:80"],
            &["kill", "10.0.0.1:80", "10.0.0.2:5000", "--port", "80"],
            &["kill", "10.0.0.1", "10.0.0.2:5000"],
        ] {
            let err = parse(args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn kill_forms() {
        let cli = parse(&["kill", "10.0.0.1:80", "10.0.0.2:5000"]).expect("tuple");
        let Command::Kill(kill) = cli.command else {
            panic!("not kill")
        };
        assert_eq!(kill.local, Some("10.0.0.1:80".parse().expect("addr")));
        let cli = parse(&["kill", "--state", "close-wait", "--port", "8080"]).expect("filter");
        let Command::Kill(kill) = cli.command else {
            panic!("not kill")
        };
        assert_eq!(kill.local, None);
        assert_eq!(kill.filter.port, Some(8080));
    }

    #[test]
    fn socket_defaults_and_global_flags() {
        let cli = parse(&["-s", "/tmp/x.sock", "stats", "--json", "--color", "never"]).expect("ok");
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert!(cli.json);
        assert_eq!(cli.color, ColorChoice::Never);
        let cli = parse(&["watch", "--count", "3", "--timeout", "1.5"]).expect("ok");
        let Command::Watch(watch) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(watch.count, Some(3));
        assert_eq!(watch.timeout, Some(std::time::Duration::from_millis(1500)));
    }
}
