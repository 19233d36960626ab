//! Connection selection for `ls` and `kill --state/--port/--uid`.
//!
//! A [`ConnFilter`] is the conjunction of its parts; an absent part matches
//! everything. Matching reads only the daemon's [`ConnectionInfo`], so the
//! same filter gives the same rows in `ls` and the same victims in `kill`.

use tcpd_proto::v2::{ConnectionInfo, SocketAddress};

use crate::state::decode_state;
use tcpd_proto::types::{TcpState, TcpStates};

/// Which connections to show or act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnFilter {
    /// Keep only connections in one of these states (`None`: any state).
    pub states: Option<TcpStates>,
    /// Keep only connections whose local or remote port is this.
    pub port: Option<u16>,
    /// Keep only connections owned by this uid.
    pub uid: Option<u32>,
    /// Keep only IPv4 (`Some(false)`) or IPv6 (`Some(true)`) sockets, as
    /// `ss -4`/`-6`; an IPv6 socket's IPv4-mapped connection is IPv6.
    pub ipv6: Option<bool>,
}

impl ConnFilter {
    /// Builds a filter from the command-line parts: the union of every
    /// `--state` set, plus LISTEN when `listening` is set (as `ss -l`).
    pub fn new(states: &[TcpStates], listening: bool, port: Option<u16>, uid: Option<u32>) -> Self {
        let mut selected = states.iter().fold(TcpStates::empty(), |acc, s| acc | *s);
        if listening {
            selected |= TcpStates::of(TcpState::Listen);
        }
        let narrowed_by_state = listening || !states.is_empty();
        ConnFilter {
            states: narrowed_by_state.then_some(selected),
            port,
            uid,
            ipv6: None,
        }
    }

    /// The filter narrowed to one family (`Some(true)`: IPv6).
    pub fn with_family(mut self, ipv6: Option<bool>) -> Self {
        self.ipv6 = ipv6;
        self
    }

    /// Whether any part of the filter narrows the selection.
    pub fn is_restrictive(&self) -> bool {
        self.states.is_some() || self.port.is_some() || self.uid.is_some() || self.ipv6.is_some()
    }

    /// Whether `info` passes every part of the filter.
    pub fn matches(&self, info: &ConnectionInfo) -> bool {
        if let Some(states) = self.states {
            match decode_state(info.state) {
                Some(state) if states.has(state) => {}
                _ => return false,
            }
        }
        if let Some(port) = self.port {
            let wanted = u32::from(port);
            if port_of(info.local.as_ref()) != wanted && port_of(info.remote.as_ref()) != wanted {
                return false;
            }
        }
        if let Some(ipv6) = self.ipv6 {
            let is_v6 = info.local.as_ref().is_some_and(|a| a.ip.len() == 16);
            if is_v6 != ipv6 {
                return false;
            }
        }
        self.uid.is_none_or(|uid| info.owner_uid == uid)
    }
}

/// The port of an optional address; 0 (never a real peer port) when absent.
fn port_of(addr: Option<&SocketAddress>) -> u32 {
    addr.map_or(0, |a| a.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse_state_filter;
    use tcpd_proto::v2::TcpState;

    fn conn(state: TcpState, local_port: u32, remote_port: u32, uid: u32) -> ConnectionInfo {
        ConnectionInfo {
            state: state as i32,
            local: Some(crate::render::wire_addr([10, 0, 0, 1].into(), local_port)),
            remote: Some(crate::render::wire_addr([10, 0, 0, 2].into(), remote_port)),
            owner_uid: uid,
            ..Default::default()
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        let filter = ConnFilter::new(&[], false, None, None);
        assert!(!filter.is_restrictive());
        assert!(filter.matches(&conn(TcpState::Listen, 80, 0, 0)));
        assert!(filter.matches(&ConnectionInfo::default()));
    }

    #[test]
    fn states_union_and_listening_adds_listen() {
        let sets = [
            parse_state_filter("time-wait").expect("state"),
            parse_state_filter("ESTABLISHED").expect("state"),
        ];
        let filter = ConnFilter::new(&sets, true, None, None);
        assert!(filter.matches(&conn(TcpState::TimeWait, 1, 2, 0)));
        assert!(filter.matches(&conn(TcpState::Established, 1, 2, 0)));
        assert!(filter.matches(&conn(TcpState::Listen, 1, 0, 0)));
        assert!(!filter.matches(&conn(TcpState::SynSent, 1, 2, 0)));
    }

    #[test]
    fn listening_alone_is_listen_only() {
        let filter = ConnFilter::new(&[], true, None, None);
        assert!(filter.matches(&conn(TcpState::Listen, 80, 0, 0)));
        assert!(!filter.matches(&conn(TcpState::Established, 80, 5000, 0)));
    }

    #[test]
    fn unknown_states_never_match_a_state_filter() {
        let filter = ConnFilter::new(&[TcpStates::all()], false, None, None);
        let mut odd = conn(TcpState::Established, 1, 2, 0);
        odd.state = 42;
        assert!(!filter.matches(&odd));
    }

    #[test]
    fn port_matches_local_or_remote() {
        let filter = ConnFilter::new(&[], false, Some(8080), None);
        assert!(filter.matches(&conn(TcpState::Established, 8080, 40000, 0)));
        assert!(filter.matches(&conn(TcpState::Established, 40000, 8080, 0)));
        assert!(!filter.matches(&conn(TcpState::Established, 40000, 80, 0)));
    }

    #[test]
    fn uid_and_state_combine_as_and() {
        let filter = ConnFilter::new(
            &[parse_state_filter("connected").expect("group")],
            false,
            None,
            Some(1000),
        );
        assert!(filter.matches(&conn(TcpState::CloseWait, 1, 2, 1000)));
        assert!(!filter.matches(&conn(TcpState::CloseWait, 1, 2, 0)));
        assert!(!filter.matches(&conn(TcpState::Listen, 1, 0, 1000)));
    }
}
