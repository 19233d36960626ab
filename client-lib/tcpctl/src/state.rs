//! TCP state names and state filters.
//!
//! The states, their RFC 9293 §3.3.2 spellings (`SYN-RECEIVED`,
//! `FIN-WAIT-1`, ...) and state sets are the shared vocabulary's
//! (`tcpd_types::{TcpState, TcpStates}`); a raw protobuf value becomes one
//! only through `tcpd_proto::vocab`. This module owns the parser for
//! `--state` arguments, which accepts those names case-insensitively with
//! `-` or `_`, the `ss` spellings (`syn-recv`), and the `ss` state groups.
//!
//! Invariant: a state filter only ever holds known states;
//! `TCP_STATE_UNSPECIFIED` (or a value from a newer daemon) decodes to no
//! state, so a filter never matches a connection whose state the daemon did
//! not report.

use tcpd_proto::types::{TcpState, TcpStates};
use tcpd_proto::v2::ConnectionInfo;

/// The state carried in a raw protobuf enum value, if it is one we know.
pub fn decode_state(raw: i32) -> Option<TcpState> {
    tcpd_proto::vocab::tcp_state(raw).ok()
}

/// The name to print for a raw protobuf state value.
///
/// Known values get the RFC spelling; a value from a newer daemon falls back
/// to the daemon's own `state_name` (sanitised) so nothing is hidden.
pub fn state_label(raw: i32, daemon_name: &str) -> String {
    match decode_state(raw) {
        Some(state) => state.name().to_string(),
        None if !daemon_name.is_empty() => sanitize_name(daemon_name),
        None => format!("UNKNOWN({raw})"),
    }
}

/// The name to print for a connection's state.
pub fn connection_state_label(info: &ConnectionInfo) -> String {
    state_label(info.state, &info.state_name)
}

/// Keeps a daemon-supplied name printable: no control characters (they could
/// rewrite the terminal), bounded length.
fn sanitize_name(name: &str) -> String {
    const MAX_STATE_NAME: usize = 32;
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_STATE_NAME)
        .collect()
}

/// The names and groups `--state` accepts, for help and error texts.
pub const STATE_FILTER_HELP: &str = "listen, syn-sent, syn-received (syn-recv), established, \
fin-wait-1, fin-wait-2, close-wait, closing, last-ack, time-wait, closed; \
groups: all, connected, synchronized, bucket, big";

/// Why a `--state` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TCP state or group {0:?} (expected one of: {STATE_FILTER_HELP})")]
pub struct UnknownStateError(pub String);

/// Parses one `--state` value: a state name or a group name.
///
/// Case-insensitive; `_` and `-` are interchangeable (`TIME_WAIT`,
/// `time-wait`). Also takes the `ss` spellings `syn-recv` and
/// `fin-wait1`/`fin-wait2`.
pub fn parse_state_filter(text: &str) -> Result<TcpStates, UnknownStateError> {
    let normalized = text.trim().to_ascii_lowercase().replace('_', "-");
    let state = match normalized.as_str() {
        "listen" | "listening" => TcpState::Listen,
        "syn-sent" => TcpState::SynSent,
        "syn-received" | "syn-recv" | "syn-rcvd" => TcpState::SynReceived,
        "established" | "estab" => TcpState::Established,
        "fin-wait-1" | "fin-wait1" => TcpState::FinWait1,
        "fin-wait-2" | "fin-wait2" => TcpState::FinWait2,
        "close-wait" => TcpState::CloseWait,
        "closing" => TcpState::Closing,
        "last-ack" => TcpState::LastAck,
        "time-wait" => TcpState::TimeWait,
        "closed" | "close" => TcpState::Closed,
        "all" => return Ok(TcpStates::all()),
        "connected" => return Ok(TcpStates::CONNECTED),
        "synchronized" => return Ok(TcpStates::SYNCHRONIZED),
        "bucket" => return Ok(TcpStates::BUCKET),
        "big" => return Ok(TcpStates::BIG),
        _ => return Err(UnknownStateError(text.to_string())),
    };
    Ok(TcpStates::of(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: TcpStates) -> Vec<&'static str> {
        set.states().map(TcpState::name).collect()
    }

    #[test]
    fn every_rfc_name_parses_back_to_its_state() {
        for state in TcpState::ALL {
            let parsed = parse_state_filter(state.name()).expect("RFC name parses");
            assert_eq!(parsed, TcpStates::of(state), "{state}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_accept_underscores() {
        let time_wait = TcpStates::of(TcpState::TimeWait);
        for spelling in [
            "TIME-WAIT",
            "time-wait",
            "Time_Wait",
            "TIME_WAIT",
            " time-wait ",
        ] {
            assert_eq!(parse_state_filter(spelling), Ok(time_wait), "{spelling}");
        }
        let syn_received = TcpStates::of(TcpState::SynReceived);
        for spelling in ["SYN-RECEIVED", "syn_received", "syn-recv", "SYN_RECV"] {
            assert_eq!(parse_state_filter(spelling), Ok(syn_received), "{spelling}");
        }
        assert_eq!(
            parse_state_filter("fin_wait_1"),
            Ok(TcpStates::of(TcpState::FinWait1))
        );
    }

    #[test]
    fn connected_is_all_but_listen_and_closed() {
        assert_eq!(
            names(parse_state_filter("connected").expect("group")),
            [
                "SYN-SENT",
                "SYN-RECEIVED",
                "ESTABLISHED",
                "FIN-WAIT-1",
                "FIN-WAIT-2",
                "CLOSE-WAIT",
                "CLOSING",
                "LAST-ACK",
                "TIME-WAIT"
            ]
        );
    }

    #[test]
    fn synchronized_is_connected_minus_handshake_states() {
        assert_eq!(
            names(parse_state_filter("SYNCHRONIZED").expect("group")),
            [
                "ESTABLISHED",
                "FIN-WAIT-1",
                "FIN-WAIT-2",
                "CLOSE-WAIT",
                "CLOSING",
                "LAST-ACK",
                "TIME-WAIT"
            ]
        );
    }

    #[test]
    fn other_groups() {
        assert_eq!(names(parse_state_filter("all").expect("group")).len(), 11);
        assert_eq!(
            names(parse_state_filter("bucket").expect("group")),
            ["SYN-RECEIVED", "TIME-WAIT"]
        );
        let big = parse_state_filter("big").expect("group");
        assert!(!big.has(TcpState::TimeWait));
        assert!(big.has(TcpState::Listen));
    }

    #[test]
    fn unknown_names_are_rejected_with_the_valid_list() {
        let err = parse_state_filter("half-open").expect_err("not a state");
        assert_eq!(err, UnknownStateError("half-open".into()));
        assert!(err.to_string().contains("synchronized"));
        assert!(parse_state_filter("").is_err());
        assert!(parse_state_filter("fin-wait-3").is_err());
    }

    #[test]
    fn unspecified_and_unknown_values_are_no_state() {
        assert_eq!(
            decode_state(tcpd_proto::v2::TcpState::Unspecified as i32),
            None
        );
        assert_eq!(decode_state(99), None);
        assert_eq!(
            decode_state(tcpd_proto::v2::TcpState::TimeWait as i32),
            Some(TcpState::TimeWait)
        );
    }

    #[test]
    fn labels_fall_back_to_sanitised_daemon_names() {
        assert_eq!(
            state_label(tcpd_proto::v2::TcpState::FinWait2 as i32, ""),
            "FIN-WAIT-2"
        );
        assert_eq!(state_label(99, "NEW-STATE\x1b[31m"), "NEW-STATE[31m");
        assert_eq!(state_label(99, ""), "UNKNOWN(99)");
        assert_eq!(state_label(0, ""), "UNKNOWN(0)");
    }
}
