//! [`PollFlags`]: poll(2) readiness bits.

bitflags::bitflags! {
    /// Readiness of a socket, with the values of Linux's poll(2) events, so
    /// the stack's answer crosses the daemon and the wire (`tcpd.v2.PollEvent`
    /// has the same numbers) and reaches a C caller's `revents` unchanged.
    ///
    /// Bits this crate does not name are kept (`from_bits_retain`): a newer
    /// daemon's bit is shown, never dropped.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PollFlags: u32 {
        /// `POLLIN`: data, EOF or a pending error to read; a listener has a
        /// connection to accept.
        const IN = libc::POLLIN as u32;
        /// `POLLPRI`: urgent data waits to be read with `MSG_OOB`.
        const PRI = libc::POLLPRI as u32;
        /// `POLLOUT`: send-buffer space; a connect has completed.
        const OUT = libc::POLLOUT as u32;
        /// `POLLERR`: a pending error (`SO_ERROR`). Always reported.
        const ERR = libc::POLLERR as u32;
        /// `POLLHUP`: both directions are closed. Always reported.
        const HUP = libc::POLLHUP as u32;
        /// `POLLNVAL`: the handle is not a socket of this session.
        const NVAL = libc::POLLNVAL as u32;
        /// `POLLRDHUP`: the peer closed its sending side (FIN received).
        const RDHUP = libc::POLLRDHUP as u32;
    }
}

impl PollFlags {
    /// No bits.
    pub const EMPTY: PollFlags = PollFlags::empty();

    /// What poll(2) reports whether asked for or not.
    pub const ALWAYS: PollFlags = PollFlags::ERR.union(PollFlags::HUP).union(PollFlags::NVAL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_linux_poll_events() {
        assert_eq!(PollFlags::IN.bits(), 0x1);
        assert_eq!(PollFlags::OUT.bits(), 0x4);
        assert_eq!(PollFlags::ERR.bits(), 0x8);
        assert_eq!(PollFlags::HUP.bits(), 0x10);
        assert_eq!(PollFlags::NVAL.bits(), 0x20);
        assert_eq!(PollFlags::RDHUP.bits(), 0x2000);
        let unknown = PollFlags::from_bits_retain(0x41);
        assert!(unknown.contains(PollFlags::IN));
        assert_eq!(unknown.bits(), 0x41);
        assert_eq!(
            format!("{:?}", PollFlags::IN | PollFlags::RDHUP),
            "PollFlags(IN | RDHUP)"
        );
    }
}
