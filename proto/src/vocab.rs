//! The boundary between the shared vocabulary (`tcpd-types`) and the wire
//! enums: the only place a `TcpState`, `OptionName` or `PollFlags` value is
//! matched against its protobuf number.
//!
//! Unknown or unspecified wire values convert to `Err(raw)`: callers decide
//! (the daemon answers ENOPROTOOPT/EINVAL, tcpctl shows the daemon's text).

use tcpd_types::{OptionName, PollFlags, TcpState};

use crate::v2;

impl From<TcpState> for v2::TcpState {
    fn from(state: TcpState) -> Self {
        match state {
            TcpState::Closed => v2::TcpState::Closed,
            TcpState::Listen => v2::TcpState::Listen,
            TcpState::SynSent => v2::TcpState::SynSent,
            TcpState::SynReceived => v2::TcpState::SynReceived,
            TcpState::Established => v2::TcpState::Established,
            TcpState::FinWait1 => v2::TcpState::FinWait1,
            TcpState::FinWait2 => v2::TcpState::FinWait2,
            TcpState::CloseWait => v2::TcpState::CloseWait,
            TcpState::Closing => v2::TcpState::Closing,
            TcpState::LastAck => v2::TcpState::LastAck,
            TcpState::TimeWait => v2::TcpState::TimeWait,
        }
    }
}

/// The state of a raw wire value; `Err(raw)` for UNSPECIFIED or a value
/// newer than this build.
pub fn tcp_state(raw: i32) -> Result<TcpState, i32> {
    let state = match v2::TcpState::try_from(raw) {
        Ok(v2::TcpState::Closed) => TcpState::Closed,
        Ok(v2::TcpState::Listen) => TcpState::Listen,
        Ok(v2::TcpState::SynSent) => TcpState::SynSent,
        Ok(v2::TcpState::SynReceived) => TcpState::SynReceived,
        Ok(v2::TcpState::Established) => TcpState::Established,
        Ok(v2::TcpState::FinWait1) => TcpState::FinWait1,
        Ok(v2::TcpState::FinWait2) => TcpState::FinWait2,
        Ok(v2::TcpState::CloseWait) => TcpState::CloseWait,
        Ok(v2::TcpState::Closing) => TcpState::Closing,
        Ok(v2::TcpState::LastAck) => TcpState::LastAck,
        Ok(v2::TcpState::TimeWait) => TcpState::TimeWait,
        Ok(v2::TcpState::Unspecified) | Err(_) => return Err(raw),
    };
    Ok(state)
}

impl From<OptionName> for v2::SocketOption {
    fn from(name: OptionName) -> Self {
        use v2::SocketOption as O;
        match name {
            OptionName::ReuseAddr => O::SoReuseaddr,
            OptionName::NoDelay => O::TcpNodelay,
            OptionName::KeepAlive => O::SoKeepalive,
            OptionName::KeepIdle => O::TcpKeepidle,
            OptionName::KeepInterval => O::TcpKeepintvl,
            OptionName::KeepCount => O::TcpKeepcnt,
            OptionName::RecvBuffer => O::SoRcvbuf,
            OptionName::SendBuffer => O::SoSndbuf,
            OptionName::Linger => O::SoLinger,
            OptionName::Error => O::SoError,
            OptionName::Congestion => O::TcpCongestion,
            OptionName::MaxSegment => O::TcpMaxseg,
            OptionName::SynCount => O::TcpSyncnt,
            OptionName::UserTimeout => O::TcpUserTimeout,
            OptionName::Cork => O::TcpCork,
            OptionName::NotSentLowat => O::TcpNotsentLowat,
            OptionName::QuickAck => O::TcpQuickack,
            OptionName::RecvLowat => O::SoRcvlowat,
            OptionName::V6Only => O::Ipv6V6only,
            OptionName::DeferAccept => O::TcpDeferAccept,
            OptionName::OobInline => O::SoOobinline,
            OptionName::IpTos => O::IpTos,
            OptionName::IpTtl => O::IpTtl,
            OptionName::MtuDiscover => O::IpMtuDiscover,
            OptionName::TcpInfo => O::TcpInfo,
            OptionName::AtMark => O::Siocatmark,
        }
    }
}

/// The option of a raw wire value; `Err(raw)` for UNSPECIFIED or an
/// option newer than this build.
pub fn option_name(raw: i32) -> Result<OptionName, i32> {
    // The wire enum is numbered in `OptionName::ALL` order from 1 (checked
    // by the test below), so every known value maps through the table.
    usize::try_from(raw)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| OptionName::ALL.get(i).copied())
        .filter(|name| v2::SocketOption::from(*name) as i32 == raw)
        .ok_or(raw)
}

/// The wire number of an option (for request fields).
pub fn option_wire(name: OptionName) -> i32 {
    v2::SocketOption::from(name) as i32
}

/// Poll bits from the wire; the wire carries Linux's values (`PollEvent`),
/// so this keeps every bit, known or not.
pub fn poll_flags(raw: u32) -> PollFlags {
    PollFlags::from_bits_retain(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(tcp_state(v2::TcpState::from(s) as i32), Ok(s));
        }
        assert_eq!(tcp_state(0), Err(0));
        assert_eq!(tcp_state(99), Err(99));
        // The wire's own name is the RFC name spelt as a proto enum.
        assert_eq!(
            v2::TcpState::from(TcpState::FinWait1).as_str_name(),
            "TCP_STATE_FIN_WAIT_1"
        );
    }

    #[test]
    fn options_round_trip_and_follow_the_wire_numbering() {
        for o in OptionName::ALL {
            assert_eq!(option_name(option_wire(o)), Ok(o));
            let wire = v2::SocketOption::from(o).as_str_name();
            assert_eq!(wire, format!("SOCKET_OPTION_{}", o.c_name()), "{o}");
        }
        assert_eq!(option_name(0), Err(0));
        assert_eq!(option_name(1234), Err(1234));
        assert_eq!(option_name(-1), Err(-1));
    }

    #[test]
    fn poll_bits_are_the_wire_values() {
        use v2::PollEvent as P;
        for (flag, wire) in [
            (PollFlags::IN, P::In),
            (PollFlags::PRI, P::Pri),
            (PollFlags::OUT, P::Out),
            (PollFlags::ERR, P::Err),
            (PollFlags::HUP, P::Hup),
            (PollFlags::NVAL, P::Nval),
            (PollFlags::RDHUP, P::Rdhup),
        ] {
            assert_eq!(flag.bits(), wire as u32);
        }
        assert_eq!(poll_flags(0x41).bits(), 0x41);
    }
}
