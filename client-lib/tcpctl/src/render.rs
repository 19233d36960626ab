//! Human-readable output: the `ls` table, `stats`, `status` and `watch` lines.
//!
//! Every function here is pure — data in, `String` out — so the golden tests
//! in `tests/golden/` pin the exact layout. Names come through
//! [`OwnerLookup`], colour only when [`Options::color`] is set.
//!
//! Layout invariants:
//! - column widths are computed from the data (and the header), so columns
//!   line up whatever the addresses; nothing is truncated;
//! - lines never end in spaces; colour codes wrap already padded text so they
//!   never disturb alignment;
//! - the `-i` detail line is word-wrapped to [`Options::width`] so rows stay
//!   readable on an 80-column terminal.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

use anstyle::{AnsiColor, Style};
use tcpd_proto::v2::{ConnectionInfo, SocketAddress, StateChange, StatsResponse, StatusResponse};

use crate::owner::{OwnerLookup, owner_label};
use crate::state::{connection_state_label, decode_state, state_label};
use tcpd_proto::types::{TcpState, TcpStates};

/// How to render connection tables.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Add the `-i` detail line under every socket.
    pub info: bool,
    /// Colour state names with ANSI escapes.
    pub color: bool,
    /// Terminal width the detail lines wrap to.
    pub width: usize,
    /// Resolves owner uids and pids to names.
    pub owners: &'a dyn OwnerLookup,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("info", &self.info)
            .field("color", &self.color)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

/// Width used when the terminal's is unknown.
pub const DEFAULT_WIDTH: usize = 80;

/// Indentation of the `-i` detail lines under their socket row.
const DETAIL_INDENT: &str = "    ";

/// The IP address of a wire address: 4 octets IPv4, 16 IPv6 (0.0.0.0
/// when absent or of another length).
pub fn ip_of(addr: &SocketAddress) -> IpAddr {
    if let Ok(octets) = <[u8; 16]>::try_from(addr.ip.as_slice()) {
        return IpAddr::V6(Ipv6Addr::from(octets));
    }
    match addr.ip.as_slice() {
        &[a, b, c, d] => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// A wire address from an IP address and a port.
pub fn wire_addr(ip: IpAddr, port: u32) -> SocketAddress {
    let ip = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    SocketAddress {
        ip,
        port,
        ..SocketAddress::default()
    }
}

/// `ip:port`, IPv6 as `[addr]:port` (with `%scope` for a scoped address),
/// as `ss` and Rust's `SocketAddr` write them.
fn endpoint(addr: &SocketAddress, port: &str) -> String {
    match ip_of(addr) {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) if addr.scope_id != 0 => format!("[{ip}%{}]:{port}", addr.scope_id),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// `ip:port` exactly as the JSON output spells addresses (`0.0.0.0:0` when
/// the daemon sent none; `[addr]:port` for IPv6).
pub fn addr_text(addr: Option<&SocketAddress>) -> String {
    let addr = addr.cloned().unwrap_or_default();
    endpoint(&addr, &addr.port.to_string())
}

/// `ip:port` for humans: a zero port (a listener's unset peer) prints as `*`,
/// as `ss` does.
pub fn addr_display(addr: Option<&SocketAddress>) -> String {
    let addr = addr.cloned().unwrap_or_default();
    if addr.port == 0 {
        endpoint(&addr, "*")
    } else {
        endpoint(&addr, &addr.port.to_string())
    }
}

/// The colour of a state name: open states green, handshakes yellow, closing
/// states magenta, listeners cyan, the dead states dim.
fn state_style(label: &str) -> Style {
    match label {
        "ESTABLISHED" => AnsiColor::Green.on_default(),
        "LISTEN" => AnsiColor::Cyan.on_default(),
        "SYN-SENT" | "SYN-RECEIVED" => AnsiColor::Yellow.on_default(),
        "FIN-WAIT-1" | "FIN-WAIT-2" | "CLOSE-WAIT" | "CLOSING" | "LAST-ACK" => {
            AnsiColor::Magenta.on_default()
        }
        "TIME-WAIT" | "CLOSED" => Style::new().dimmed(),
        _ => Style::new(),
    }
}

fn paint(text: &str, style: Style, color: bool) -> String {
    if color && style != Style::new() {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// One table cell: its plain text (which decides the width) and its style.
struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            style: Style::new(),
        }
    }
}

/// Lays out `rows` (the first is the header) in columns separated by one
/// space; the last column is never padded, so no line ends in spaces.
fn layout(rows: &[Vec<Cell>], aligns: &[Align], color: bool) -> Vec<String> {
    let columns = aligns.len();
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push(' ');
                }
                let is_last = i + 1 == row.len().min(columns);
                let pad = widths[i].saturating_sub(cell.text.chars().count());
                // Padding stays outside the colour codes.
                let styled = paint(&cell.text, cell.style, color);
                match (aligns[i], is_last) {
                    (Align::Left, true) => line.push_str(&styled),
                    (Align::Left, false) => {
                        line.push_str(&styled);
                        line.push_str(&" ".repeat(pad));
                    }
                    (Align::Right, _) => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(&styled);
                    }
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

fn is_listener(info: &ConnectionInfo) -> bool {
    decode_state(info.state) == Some(TcpState::Listen)
}

/// Recv-Q and Send-Q as `ss` shows them: for a listener, the accept queue and
/// the backlog; for a connection, unread and unacknowledged bytes.
fn queue_columns(info: &ConnectionInfo) -> (u64, u64) {
    if is_listener(info) {
        (u64::from(info.accept_queue), u64::from(info.listen_backlog))
    } else {
        (info.recv_queue, info.send_queue)
    }
}

/// The `ls` table: one row per socket, like `ss -tanp`, and with
/// [`Options::info`] a wrapped detail line under each (like `ss -i`).
pub fn render_table(conns: &[ConnectionInfo], opts: &Options<'_>) -> String {
    let header = [
        "State",
        "Recv-Q",
        "Send-Q",
        "Local Address",
        "Peer Address",
        "Owner",
    ];
    let aligns = [
        Align::Left,
        Align::Right,
        Align::Right,
        Align::Left,
        Align::Left,
        Align::Left,
    ];
    let mut rows: Vec<Vec<Cell>> = vec![header.iter().map(|h| Cell::plain(*h)).collect()];
    for info in conns {
        let label = connection_state_label(info);
        let (recv_q, send_q) = queue_columns(info);
        rows.push(vec![
            Cell {
                style: state_style(&label),
                text: label,
            },
            Cell::plain(recv_q.to_string()),
            Cell::plain(send_q.to_string()),
            Cell::plain(addr_display(info.local.as_ref())),
            Cell::plain(addr_display(info.remote.as_ref())),
            Cell::plain(owner_label(info, opts.owners)),
        ]);
    }
    let lines = layout(&rows, &aligns, opts.color);
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        // Row i (after the header) is connection i - 1.
        let detailed = if opts.info {
            i.checked_sub(1).and_then(|row| conns.get(row))
        } else {
            None
        };
        if let Some(info) = detailed {
            for detail in wrap_words(&detail_words(info), opts.width) {
                out.push_str(&detail);
                out.push('\n');
            }
        }
    }
    out
}

/// Microseconds as milliseconds, with three decimals unless whole.
fn millis_text(us: u64) -> String {
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{}.{:03}ms", us / 1000, us % 1000)
    }
}

/// A slow-start threshold at or above this is "not yet set" (RFC 5681 §3.1
/// lets the initial value be arbitrarily high); printed as `inf`.
const SSTHRESH_INFINITE: u64 = 0x7fff_ffff;

/// The `-i` fields of one socket, in `ss -i` order where both have them.
fn detail_words(info: &ConnectionInfo) -> Vec<String> {
    let mut words = Vec::new();
    let congestion: String = info
        .congestion
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .take(32)
        .collect();
    if !congestion.is_empty() {
        words.push(congestion);
    }
    if is_listener(info) {
        words.push(format!("backlog:{}", info.listen_backlog));
        words.push(format!("accept_queue:{}", info.accept_queue));
        return words;
    }
    let ssthresh = if info.ssthresh >= SSTHRESH_INFINITE {
        "inf".to_string()
    } else {
        info.ssthresh.to_string()
    };
    words.push(format!("mss:{}", info.mss));
    // No RTT sample yet (RFC 6298 §2.1): there is no srtt/rttvar to show.
    if info.srtt_us != 0 || info.rttvar_us != 0 {
        words.push(format!("srtt:{}", millis_text(info.srtt_us)));
        words.push(format!("rttvar:{}", millis_text(info.rttvar_us)));
    }
    words.extend([
        format!("rto:{}", millis_text(info.rto_us)),
        format!("cwnd:{}", info.cwnd),
        format!("ssthresh:{ssthresh}"),
        format!("snd_wnd:{}", info.snd_wnd),
        format!("rcv_wnd:{}", info.rcv_wnd),
        format!("retrans:{}", info.retransmits),
        format!("bytes_sent:{}", info.bytes_sent),
        format!("bytes_received:{}", info.bytes_received),
    ]);
    // Loss recovery and autotuned buffers (as `ss -ti` shows them).
    if info.recv_buffer != 0 || info.send_buffer != 0 {
        words.extend([
            format!("rto_timeouts:{}", info.rto_timeouts),
            format!("recoveries:{}", info.fast_recoveries),
            format!("tlp:{}", info.tlp_probes),
            format!("dsacks:{}", info.dsacks_received),
            format!("reord_wnd:{}", millis_text(info.reorder_window_us)),
            format!("rcvbuf:{}", info.recv_buffer),
            format!("sndbuf:{}", info.send_buffer),
        ]);
        if info.in_recovery {
            words.push("in_recovery".to_string());
        }
    }
    words
}

/// Joins `words` into indented lines no wider than `width` (a single word
/// longer than the line still gets a line of its own, unbroken).
fn wrap_words(words: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::from(DETAIL_INDENT);
    for word in words {
        let fresh = line.len() == DETAIL_INDENT.len();
        if !fresh && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut line, String::from(DETAIL_INDENT)));
        }
        if line.len() != DETAIL_INDENT.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.len() != DETAIL_INDENT.len() {
        lines.push(line);
    }
    lines
}

/// Where a daemon counter goes in the `stats` output: section and label.
fn counter_place(name: &str) -> (&'static str, String) {
    match name {
        "segments_in" => ("Segments", "received".into()),
        "segments_out" => ("Segments", "sent".into()),
        "retransmits" => ("Segments", "retransmitted".into()),
        "rst_sent" => ("Resets", "sent".into()),
        "rst_received" => ("Resets", "received".into()),
        "active_opens" => ("Opens", "active (connect)".into()),
        "passive_opens" => ("Opens", "passive (accept)".into()),
        "checksum_errors" => ("Errors", "bad checksum".into()),
        // Resource limits (tcpd(8) LIMITS): SYN queue and cookies, listen
        // backlog, orphans, API client connections.
        other if LIMIT_PREFIXES.iter().any(|p| other.starts_with(p)) => {
            ("Limits", printable_label(other))
        }
        other => match other.strip_prefix("drop_") {
            Some(reason) => ("Drops by reason", printable_label(reason)),
            None => ("Other", printable_label(other)),
        },
    }
}

fn printable_label(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .map(|c| if c == '_' { ' ' } else { c })
        .collect()
}

/// Counter name prefixes shown under "Limits".
const LIMIT_PREFIXES: [&str; 6] = [
    "syncookies_",
    "listen_",
    "orphan",
    "api_",
    "tcp_mem",
    "rcvq_drops",
];

/// Section order of `stats`.
const STATS_SECTIONS: [&str; 7] = [
    "Segments",
    "Resets",
    "Opens",
    "Errors",
    "Limits",
    "Drops by reason",
    "Other",
];

/// One line of the `stats` output; `value: None` prints the label alone.
struct StatLine {
    section: &'static str,
    label: String,
    value: Option<u64>,
    style: Style,
}

impl StatLine {
    fn counter(section: &'static str, label: String, value: u64) -> Self {
        StatLine {
            section,
            label,
            value: Some(value),
            style: Style::new(),
        }
    }
}

/// The `stats` output: counters grouped by kind, then the current number of
/// connections in each state (every state listed, zeros included), aligned.
pub fn render_stats(stats: &StatsResponse, color: bool) -> String {
    let mut lines: Vec<StatLine> = Vec::new();
    for section in STATS_SECTIONS {
        let before = lines.len();
        for counter in &stats.counters {
            let (place, label) = counter_place(&counter.name);
            if place == section {
                lines.push(StatLine::counter(section, label, counter.value));
            }
        }
        if section == "Drops by reason" && lines.len() == before {
            lines.push(StatLine {
                section,
                label: "none reported".into(),
                value: None,
                style: Style::new(),
            });
        }
    }
    let by_state = "Connections by state";
    let mut total = 0u64;
    for state in TcpStates::all().states() {
        let name = state.name();
        let count = stats
            .states
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.value)
            .sum::<u64>();
        total = total.saturating_add(count);
        lines.push(StatLine {
            style: state_style(name),
            ..StatLine::counter(by_state, name.to_string(), count)
        });
    }
    // States a newer daemon may report that this tcpctl does not know.
    for counter in &stats.states {
        if !TcpStates::all()
            .states()
            .any(|s| counter.name.eq_ignore_ascii_case(s.name()))
        {
            total = total.saturating_add(counter.value);
            let label = printable_label(&counter.name);
            lines.push(StatLine::counter(by_state, label, counter.value));
        }
    }
    lines.push(StatLine::counter(by_state, "total".into(), total));

    let label_width = lines
        .iter()
        .filter(|l| l.value.is_some())
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(0);
    let value_width = lines
        .iter()
        .filter_map(|l| l.value)
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let mut current = "";
    for line in &lines {
        if line.section != current {
            if !current.is_empty() {
                out.push('\n');
            }
            current = line.section;
            out.push_str(current);
            out.push('\n');
        }
        let label = paint(&line.label, line.style, color);
        match line.value {
            None => {
                let _ = writeln!(out, "  {label}");
            }
            Some(value) => {
                let pad = label_width.saturating_sub(line.label.chars().count());
                let _ = writeln!(out, "  {label}{} {value:>value_width$}", " ".repeat(pad));
            }
        }
    }
    out
}

/// The `status` output: one aligned `key  value` line per fact.
pub fn render_status(status: &StatusResponse) -> String {
    let address = status.address.clone().unwrap_or_default();
    let host = status.host_address.clone().unwrap_or_default();
    let uptime = Duration::from_secs(status.uptime_ms / 1000);
    let impairment = if status.impairment.is_empty() {
        "none".to_string()
    } else {
        printable_label_keep_underscores(&status.impairment)
    };
    let facts = [
        ("version", printable_label_keep_underscores(&status.version)),
        ("pid", status.pid.to_string()),
        ("uptime", humantime::format_duration(uptime).to_string()),
        (
            "socket",
            printable_label_keep_underscores(&status.socket_path),
        ),
        ("tun", printable_label_keep_underscores(&status.tun_name)),
        ("mtu", status.mtu.to_string()),
        (
            "address",
            format!("{}/{}", ip_of(&address), status.prefix_len),
        ),
        ("host address", ip_of(&host).to_string()),
        ("address6", address6(status)),
        (
            "host address6",
            status
                .host_address6
                .as_ref()
                .map_or("none".to_string(), |a| ip_of(a).to_string()),
        ),
        ("impairment", impairment),
    ];
    let width = facts.iter().map(|f| f.0.len()).max().unwrap_or(0);
    facts
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

/// tcpd's IPv6 address and prefix, or `none` (IPv4 only).
pub fn address6(status: &StatusResponse) -> String {
    status.address6.as_ref().map_or("none".to_string(), |a| {
        format!("{}/{}", ip_of(a), status.prefix_len6)
    })
}

fn printable_label_keep_underscores(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// The last instant humantime formats (end of year 9999, RFC 3339's range).
const RFC3339_MAX_SECONDS: u64 = 253_402_300_799;

/// Microseconds since the epoch as RFC 3339 UTC with millisecond precision,
/// e.g. `2026-01-02T03:04:05.678Z`. Out-of-range values (a confused daemon)
/// print as `@<micros>us` instead of failing.
pub fn format_timestamp_us(us: u64) -> String {
    let when = Duration::from_micros(us);
    if when.as_secs() > RFC3339_MAX_SECONDS {
        return format!("@{us}us");
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + when).to_string()
}

/// Renders `watch` events one line at a time. Address columns grow to the
/// widest address seen so far (a stream cannot know future widths), so lines
/// line up as soon as the widths settle.
#[derive(Debug, Default)]
pub struct WatchRenderer {
    local_width: usize,
    remote_width: usize,
}

impl WatchRenderer {
    /// A renderer that has seen no event yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One line (without newline): `TIME LOCAL REMOTE OLD -> NEW`.
    pub fn line(&mut self, change: &StateChange, color: bool) -> String {
        let local = addr_display(change.local.as_ref());
        let remote = addr_display(change.remote.as_ref());
        self.local_width = self.local_width.max(local.len());
        self.remote_width = self.remote_width.max(remote.len());
        let old = state_label(change.old_state, "");
        let new = state_label(change.new_state, "");
        format!(
            "{} {local:<lw$} {remote:<rw$} {} -> {}",
            format_timestamp_us(change.timestamp_us),
            paint(&old, state_style(&old), color),
            paint(&new, state_style(&new), color),
            lw = self.local_width,
            rw = self.remote_width,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        assert_eq!(format_timestamp_us(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp_us(1_767_323_045_678_901),
            "2026-01-02T03:04:05.678Z"
        );
        assert_eq!(format_timestamp_us(u64::MAX), format!("@{}us", u64::MAX));
        assert_eq!(
            format_timestamp_us(RFC3339_MAX_SECONDS * 1_000_000),
            "9999-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn addresses() {
        let a = wire_addr([10, 0, 0, 1].into(), 80);
        assert_eq!(addr_text(Some(&a)), "10.0.0.1:80");
        assert_eq!(addr_display(Some(&a)), "10.0.0.1:80");
        assert_eq!(addr_text(None), "0.0.0.0:0");
        assert_eq!(addr_display(None), "0.0.0.0:*");
        let odd = wire_addr([0, 0, 0, 1].into(), 70000);
        assert_eq!(addr_text(Some(&odd)), "0.0.0.1:70000");
        // IPv6 as ss writes it: brackets, scope, `*` for no port.
        let v6 = wire_addr("fd00:77::2".parse().expect("ip"), 8080);
        assert_eq!(addr_text(Some(&v6)), "[fd00:77::2]:8080");
        let any6 = wire_addr("::".parse().expect("ip"), 0);
        assert_eq!(addr_display(Some(&any6)), "[::]:*");
        let mapped = wire_addr("::ffff:10.0.0.1".parse().expect("ip"), 80);
        assert_eq!(addr_text(Some(&mapped)), "[::ffff:10.0.0.1]:80");
        let scoped = SocketAddress {
            scope_id: 3,
            ..wire_addr("fe80::1".parse().expect("ip"), 22)
        };
        assert_eq!(addr_text(Some(&scoped)), "[fe80::1%3]:22");
        // A malformed length reads as unspecified, never a panic.
        let bad = SocketAddress {
            ip: vec![1, 2, 3],
            port: 1,
            ..SocketAddress::default()
        };
        assert_eq!(addr_text(Some(&bad)), "0.0.0.0:1");
    }

    #[test]
    fn wrapping_keeps_lines_within_width() {
        let words: Vec<String> = (0..30).map(|i| format!("field{i}:{}", i * 1000)).collect();
        let lines = wrap_words(&words, 40);
        assert!(lines.len() > 1);
        for line in &lines {
            assert!(line.len() <= 40, "{line:?}");
            assert!(line.starts_with(DETAIL_INDENT));
        }
        let rejoined: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(rejoined.len(), 30);
        let long = vec!["x".repeat(100)];
        assert_eq!(
            wrap_words(&long, 40),
            vec![format!("{DETAIL_INDENT}{}", "x".repeat(100))]
        );
    }

    #[test]
    fn stats_without_drop_counters_say_so() {
        let text = render_stats(&StatsResponse::default(), false);
        assert!(
            text.starts_with("Drops by reason\n  none reported\n\n"),
            "{text}"
        );
        assert!(text.contains("  LISTEN       0\n"), "{text}");
        assert!(text.ends_with("  total        0\n"), "{text}");
    }

    #[test]
    fn colour_wraps_only_the_state_name() {
        let painted = paint("ESTABLISHED", state_style("ESTABLISHED"), true);
        assert_eq!(painted, "\u{1b}[32mESTABLISHED\u{1b}[0m");
        assert_eq!(
            paint("ESTABLISHED", state_style("ESTABLISHED"), false),
            "ESTABLISHED"
        );
        assert_eq!(paint("whatever", state_style("whatever"), true), "whatever");
    }
}
