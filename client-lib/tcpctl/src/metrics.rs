//! `tcpctl stats --prometheus`: the daemon's Stats in the Prometheus text
//! exposition format (version 0.0.4, which OpenMetrics parsers accept too),
//! for node_exporter's textfile collector.
//!
//! Why a textfile and not a `--metrics` listener in the daemon: tcpd runs as
//! a hardened systemd service whose only sockets are its Unix API socket and
//! the TUN; an HTTP listener would need AF_INET and a port to guard, for
//! numbers `tcpctl` can already read over the API. Operators who run
//! node_exporter point its `--collector.textfile.directory` at a directory a
//! timer refreshes (`tcpctl stats --prometheus > tcpd.prom.tmp && mv ...`).
//!
//! Families (names are stable; every counter only grows):
//! - `tcpd_<counter>_total` (counter) for each stack counter, e.g.
//!   `tcpd_segments_in_total`, `tcpd_retransmits_total`;
//! - `tcpd_drops_total{reason="..."}` (counter) for the `drop_<reason>` counters;
//! - `tcpd_impair_packets_total{action="dropped|duplicated|corrupted|reordered|delayed",direction="in|out"}`
//!   (counter) for what `tcpd --impair` did;
//! - `tcpd_connections{state="ESTABLISHED"}` (gauge) per RFC 9293 state;
//! - `tcpd_<gauge>` (gauge) for the API's current levels ([`GAUGES`]:
//!   clients, sessions, sockets, fd sockets, blocked calls), which go down
//!   as well as up and so take no `_total` suffix.

use std::fmt::Write as _;

use tcpd_proto::v2::StatsResponse as StatsReply;

/// Help text of the counters tcpd documents; others get a generic line.
fn help(name: &str) -> String {
    let known = match name {
        "packets_in" => "IPv4 packets received from the link",
        "packets_out" => "IPv4 packets sent to the link",
        "segments_in" => "TCP segments received",
        "segments_out" => "TCP segments sent",
        "retransmits" => "TCP segments retransmitted",
        "rst_sent" => "TCP resets sent",
        "rst_received" => "TCP resets received",
        "checksum_errors" => "packets with a bad IPv4, TCP or ICMP checksum",
        "active_opens" => "connections opened by connect (SYN-SENT)",
        "passive_opens" => "connections opened by a listener (SYN-RECEIVED)",
        "failed_opens" => "opens that failed before ESTABLISHED",
        "capture_dropped" => "packets dropped from captures whose reader was too slow",
        "busy_poll_spins_useful" => "busy-poll spins (--busy-poll-us) that found work",
        "busy_poll_spins_useless" => "busy-poll spins that found no work",
        "busy_poll_spin_us" => "wall time of the ended busy-poll spins, in microseconds",
        _ => "",
    };
    if known.is_empty() {
        format!("tcpd counter {name} (see tcpctl stats)")
    } else {
        known.to_string()
    }
}

/// The daemon's Stats entries that are current levels, not counts of
/// events (see `Sockets::stats` and `Admission::named_counters` in the
/// daemon): Prometheus gauges.
pub const GAUGES: [&str; 10] = [
    "api_clients",
    "api_sessions",
    "api_sockets",
    "api_fd_sockets",
    "api_blocked_calls",
    "api_buffered_bytes",
    "api_limited_sessions",
    "api_fd_unauthenticated",
    "tcp_mem_bytes",
    "orphan_bytes",
];

/// Whether `name` is safe as part of a metric name ([a-z0-9_]).
fn metric_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for `stats`.
pub fn prometheus(stats: &StatsReply) -> String {
    let mut out = String::new();
    let mut drops = Vec::new();
    let mut impair = Vec::new();
    for counter in &stats.counters {
        let name = counter.name.as_str();
        if let Some(reason) = name.strip_prefix("drop_") {
            drops.push((reason, counter.value));
            continue;
        }
        if let Some(rest) = name.strip_prefix("impair_")
            && let Some((action, direction)) = rest.rsplit_once('_')
        {
            impair.push((action, direction, counter.value));
            continue;
        }
        if !metric_safe(name) {
            continue;
        }
        let (metric, kind) = if GAUGES.contains(&name) {
            (format!("tcpd_{name}"), "gauge")
        } else if name.ends_with("_total") {
            // Already named as a total (`api_refused_total`): one suffix.
            (format!("tcpd_{name}"), "counter")
        } else {
            (format!("tcpd_{name}_total"), "counter")
        };
        let _ = writeln!(out, "# HELP {metric} {}.", help(name));
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        let _ = writeln!(out, "{metric} {}", counter.value);
    }
    if !drops.is_empty() {
        out.push_str("# HELP tcpd_drops_total Packets dropped by the stack, by reason.\n");
        out.push_str("# TYPE tcpd_drops_total counter\n");
        for (reason, value) in drops {
            let _ = writeln!(
                out,
                "tcpd_drops_total{{reason=\"{}\"}} {value}",
                label(reason)
            );
        }
    }
    if !impair.is_empty() {
        out.push_str(
            "# HELP tcpd_impair_packets_total Packets the --impair link impairer acted on.\n",
        );
        out.push_str("# TYPE tcpd_impair_packets_total counter\n");
        for (action, direction, value) in impair {
            let _ = writeln!(
                out,
                "tcpd_impair_packets_total{{action=\"{}\",direction=\"{}\"}} {value}",
                label(action),
                label(direction)
            );
        }
    }
    out.push_str("# HELP tcpd_connections Sockets and connections per TCP state.\n");
    out.push_str("# TYPE tcpd_connections gauge\n");
    for state in &stats.states {
        let _ = writeln!(
            out,
            "tcpd_connections{{state=\"{}\"}} {}",
            label(&state.name),
            state.value
        );
    }
    out
}
