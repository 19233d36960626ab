//! [`TcpState`]: the connection states of RFC 9293 §3.3.2, and
//! [`TcpStates`], a set of them (state filters such as `tcpctl ls --state`).

/// The connection states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    #[default]
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl TcpState {
    /// Every state, in RFC order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Closed,
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
    ];

    /// The RFC 9293 spelling: "SYN-RECEIVED", "TIME-WAIT"...
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }

    /// Parses the RFC spelling, case-insensitively; `_` may stand for `-`.
    pub fn from_name(name: &str) -> Option<TcpState> {
        let n = name.to_ascii_uppercase().replace('_', "-");
        TcpState::ALL.into_iter().find(|s| s.name() == n)
    }

    /// A synchronized state (RFC 9293 §3.5.2: ESTABLISHED and later).
    pub const fn is_synchronized(self) -> bool {
        !matches!(
            self,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

bitflags::bitflags! {
    /// A set of [`TcpState`]s: bit `1 << state as u16` per state.
    ///
    /// The flags are declared in the order of the RFC 9293 §3.3.2 diagram
    /// with CLOSED last (its fictional end state): [`TcpStates::states`]
    /// and `iter` list members in that order, which is the order tables
    /// show them in.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcpStates: u16 {
        const LISTEN = TcpStates::bit(TcpState::Listen);
        const SYN_SENT = TcpStates::bit(TcpState::SynSent);
        const SYN_RECEIVED = TcpStates::bit(TcpState::SynReceived);
        const ESTABLISHED = TcpStates::bit(TcpState::Established);
        const FIN_WAIT_1 = TcpStates::bit(TcpState::FinWait1);
        const FIN_WAIT_2 = TcpStates::bit(TcpState::FinWait2);
        const CLOSE_WAIT = TcpStates::bit(TcpState::CloseWait);
        const CLOSING = TcpStates::bit(TcpState::Closing);
        const LAST_ACK = TcpStates::bit(TcpState::LastAck);
        const TIME_WAIT = TcpStates::bit(TcpState::TimeWait);
        const CLOSED = TcpStates::bit(TcpState::Closed);
    }
}

impl TcpStates {
    const fn bit(state: TcpState) -> u16 {
        1 << state as u16
    }

    /// The set holding only `state`.
    pub const fn of(state: TcpState) -> TcpStates {
        TcpStates::from_bits_retain(TcpStates::bit(state))
    }

    /// Whether `state` is a member.
    pub const fn has(self, state: TcpState) -> bool {
        self.contains(TcpStates::of(state))
    }

    /// The members, in the declaration order (see the type's docs).
    pub fn states(self) -> impl Iterator<Item = TcpState> {
        TcpStates::all()
            .iter()
            .flat_map(|one| TcpState::ALL.into_iter().find(|s| TcpStates::of(*s) == one))
            .filter(move |s| self.has(*s))
    }

    /// `connected` as `ss` names it: every state but LISTEN and CLOSED.
    pub const CONNECTED: TcpStates = TcpStates::all()
        .difference(TcpStates::LISTEN)
        .difference(TcpStates::CLOSED);

    /// `synchronized` as `ss` names it: connected states past the
    /// handshake, the states RFC 9293 §3.5 calls synchronized
    /// ([`TcpState::is_synchronized`]).
    pub const SYNCHRONIZED: TcpStates = TcpStates::CONNECTED
        .difference(TcpStates::SYN_SENT)
        .difference(TcpStates::SYN_RECEIVED);

    /// `bucket` as `ss` names it: the states Linux keeps in minisockets
    /// rather than full sockets.
    pub const BUCKET: TcpStates = TcpStates::SYN_RECEIVED.union(TcpStates::TIME_WAIT);

    /// `big` as `ss` names it: every state not in [`TcpStates::BUCKET`].
    pub const BIG: TcpStates = TcpStates::all().difference(TcpStates::BUCKET);
}

impl From<TcpState> for TcpStates {
    fn from(state: TcpState) -> TcpStates {
        TcpStates::of(state)
    }
}

impl FromIterator<TcpState> for TcpStates {
    fn from_iter<I: IntoIterator<Item = TcpState>>(states: I) -> TcpStates {
        states
            .into_iter()
            .fold(TcpStates::empty(), |set, s| set | s.into())
    }
}

impl core::fmt::Display for TcpState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_name(s.name()), Some(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(TcpState::from_name("time_wait"), Some(TcpState::TimeWait));
        assert_eq!(TcpState::from_name("bogus"), None);
    }

    #[test]
    fn every_state_has_its_own_bit_and_sets_list_them_closed_last() {
        assert_eq!(TcpStates::all().iter().count(), TcpState::ALL.len());
        let all: Vec<_> = TcpStates::all().states().collect();
        assert_eq!(all.len(), TcpState::ALL.len());
        assert_eq!(all.first(), Some(&TcpState::Listen));
        assert_eq!(all.last(), Some(&TcpState::Closed));
        for s in TcpState::ALL {
            let one = TcpStates::of(s);
            assert_eq!(one.bits().count_ones(), 1);
            assert!(one.has(s));
            assert_eq!(one.states().collect::<Vec<_>>(), [s]);
            // The flag's name is the RFC name with `_` for `-`.
            let (name, _) = one.iter_names().next().expect("named");
            assert_eq!(name.replace('_', "-"), s.name());
        }
    }

    #[test]
    fn ss_groups() {
        let names = |set: TcpStates| set.states().map(TcpState::name).collect::<Vec<_>>();
        assert_eq!(
            names(TcpStates::SYNCHRONIZED),
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
        assert_eq!(names(TcpStates::BUCKET), ["SYN-RECEIVED", "TIME-WAIT"]);
        assert!(!TcpStates::CONNECTED.has(TcpState::Listen));
        assert!(TcpStates::BIG.has(TcpState::Listen) && !TcpStates::BIG.has(TcpState::TimeWait));
        let set: TcpStates = [TcpState::Listen, TcpState::Closed].into_iter().collect();
        assert_eq!(set, TcpStates::LISTEN | TcpStates::CLOSED);
    }
}
