//! TCP state names and state filters.
//!
//! Owns the one spelling tcpctl prints for every state — the RFC 9293 §3.3.2
//! names (`SYN-RECEIVED`, `FIN-WAIT-1`, ...) — and the parser for `--state`
//! arguments, which accepts those names case-insensitively with `-` or `_`,
//! the `ss` spellings (`syn-recv`), and the `ss` state groups.
//!
//! Invariant: a [`StateSet`] only ever holds the eleven states of
//! [`ALL_STATES`]; `TCP_STATE_UNSPECIFIED` is never a member, so a filter never
//! matches a connection whose state the daemon did not report.

use std::fmt;

use tcpd_proto::v2::{ConnectionInfo, TcpState};

/// Every state a connection can be in, in RFC 9293 §3.3.2 order (CLOSED last,
/// as the diagram's fictional end state).
pub const ALL_STATES: [TcpState; 11] = [
    TcpState::Listen,
    TcpState::SynSent,
    TcpState::SynReceived,
    TcpState::Established,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::Closing,
    TcpState::LastAck,
    TcpState::TimeWait,
    TcpState::Closed,
];

/// The RFC 9293 §3.3.2 name of `state` (`"UNKNOWN"` for the unspecified
/// value), from the shared vocabulary (`tcpd_types::TcpState::name`).
pub fn rfc_name(state: TcpState) -> &'static str {
    tcpd_proto::vocab::tcp_state(state as i32).map_or("UNKNOWN", |s| s.name())
}

/// The state carried in a raw protobuf enum value, if it is one we know.
pub fn decode_state(raw: i32) -> Option<TcpState> {
    TcpState::try_from(raw)
        .ok()
        .filter(|s| *s != TcpState::Unspecified)
}

/// The name to print for a raw protobuf state value.
///
/// Known values get the RFC spelling; a value from a newer daemon falls back
/// to the daemon's own `state_name` (sanitised) so nothing is hidden.
pub fn state_label(raw: i32, daemon_name: &str) -> String {
    match decode_state(raw) {
        Some(state) => rfc_name(state).to_string(),
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

/// A set of TCP states, as selected by one or more `--state` arguments.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSet(u16);

impl StateSet {
    /// The empty set.
    pub const EMPTY: StateSet = StateSet(0);

    /// Every state.
    pub fn all() -> Self {
        Self::of(&ALL_STATES)
    }

    /// The set holding exactly `states`.
    pub fn of(states: &[TcpState]) -> Self {
        states
            .iter()
            .fold(Self::EMPTY, |set, s| set.union(Self::single(*s)))
    }

    fn single(state: TcpState) -> Self {
        match state {
            TcpState::Unspecified => Self::EMPTY,
            // Enum values 1..=11 map to bits 1..=11.
            other => StateSet(1 << (other as i32)),
        }
    }

    /// States in either set.
    pub fn union(self, other: Self) -> Self {
        StateSet(self.0 | other.0)
    }

    /// States in `self` that are not in `other`.
    pub fn minus(self, other: Self) -> Self {
        StateSet(self.0 & !other.0)
    }

    /// Whether `state` is in the set.
    pub fn contains(self, state: TcpState) -> bool {
        let bit = Self::single(state).0;
        bit != 0 && self.0 & bit != 0
    }

    /// Whether the set holds no state.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members in RFC 9293 order.
    pub fn states(self) -> impl Iterator<Item = TcpState> {
        ALL_STATES.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Debug for StateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.states().map(rfc_name)).finish()
    }
}

/// `connected` (as in `ss`): every state but LISTEN and CLOSED.
pub fn connected() -> StateSet {
    StateSet::all().minus(StateSet::of(&[TcpState::Listen, TcpState::Closed]))
}

/// `synchronized` (as in `ss`): connected states past the handshake, i.e. the
/// states in which RFC 9293 §3.5 considers the connection synchronized.
pub fn synchronized() -> StateSet {
    connected().minus(StateSet::of(&[TcpState::SynSent, TcpState::SynReceived]))
}

/// `bucket` (as in `ss`): the states Linux keeps in minisockets rather than
/// full sockets.
pub fn bucket() -> StateSet {
    StateSet::of(&[TcpState::SynReceived, TcpState::TimeWait])
}

/// `big` (as in `ss`): everything that is not in `bucket`.
pub fn big() -> StateSet {
    StateSet::all().minus(bucket())
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
pub fn parse_state_filter(text: &str) -> Result<StateSet, UnknownStateError> {
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
        "all" => return Ok(StateSet::all()),
        "connected" => return Ok(connected()),
        "synchronized" => return Ok(synchronized()),
        "bucket" => return Ok(bucket()),
        "big" => return Ok(big()),
        _ => return Err(UnknownStateError(text.to_string())),
    };
    Ok(StateSet::of(&[state]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: StateSet) -> Vec<&'static str> {
        set.states().map(rfc_name).collect()
    }

    #[test]
    fn every_rfc_name_parses_back_to_its_state() {
        for state in ALL_STATES {
            let parsed = parse_state_filter(rfc_name(state)).expect("RFC name parses");
            assert_eq!(parsed, StateSet::of(&[state]), "{}", rfc_name(state));
        }
    }

    #[test]
    fn names_are_case_insensitive_and_accept_underscores() {
        let time_wait = StateSet::of(&[TcpState::TimeWait]);
        for spelling in [
            "TIME-WAIT",
            "time-wait",
            "Time_Wait",
            "TIME_WAIT",
            " time-wait ",
        ] {
            assert_eq!(parse_state_filter(spelling), Ok(time_wait), "{spelling}");
        }
        let syn_received = StateSet::of(&[TcpState::SynReceived]);
        for spelling in ["SYN-RECEIVED", "syn_received", "syn-recv", "SYN_RECV"] {
            assert_eq!(parse_state_filter(spelling), Ok(syn_received), "{spelling}");
        }
        assert_eq!(
            parse_state_filter("fin_wait_1"),
            Ok(StateSet::of(&[TcpState::FinWait1]))
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
        assert!(!big.contains(TcpState::TimeWait));
        assert!(big.contains(TcpState::Listen));
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
    fn unspecified_is_never_a_member() {
        assert!(!StateSet::all().contains(TcpState::Unspecified));
        assert!(StateSet::of(&[TcpState::Unspecified]).is_empty());
    }

    #[test]
    fn labels_fall_back_to_sanitised_daemon_names() {
        assert_eq!(state_label(TcpState::FinWait2 as i32, ""), "FIN-WAIT-2");
        assert_eq!(state_label(99, "NEW-STATE\x1b[31m"), "NEW-STATE[31m");
        assert_eq!(state_label(99, ""), "UNKNOWN(99)");
        assert_eq!(state_label(0, ""), "UNKNOWN(0)");
    }
}
