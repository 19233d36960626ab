//! [`SendFlags`]: the send(2) flags tcpd acts on.

bitflags::bitflags! {
    /// send(2) flags with Linux's `MSG_*` values, so a C caller's flags,
    /// the wire (`tcpd.v2.MessageFlag`, the same numbers) and the stack's
    /// send call agree. Other bits are not named: Linux TCP ignores them.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SendFlags: u32 {
        /// `MSG_OOB`: urgent data; the last byte written is the urgent byte
        /// (RFC 9293 §3.8.5 as Linux does it, RFC 6093 §3).
        const OOB = libc::MSG_OOB as u32;
        /// `MSG_EOR`: the end of a record; no later data joins its last segment.
        const EOR = libc::MSG_EOR as u32;
        /// `MSG_MORE`: more data follows; hold a partial segment as
        /// `TCP_CORK` does, until a send without it (or 200 ms).
        const MORE = libc::MSG_MORE as u32;
    }
}

impl SendFlags {
    /// The flags tcpd acts on among raw `MSG_*` bits (the others dropped).
    pub const fn from_msg_bits(bits: u32) -> SendFlags {
        SendFlags::from_bits_truncate(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_linux_msg_flags() {
        assert_eq!(SendFlags::OOB.bits(), 0x1);
        assert_eq!(SendFlags::EOR.bits(), 0x80);
        assert_eq!(SendFlags::MORE.bits(), 0x8000);
        // MSG_DONTWAIT (0x40) and MSG_NOSIGNAL (0x4000) are not send flags here.
        assert_eq!(
            SendFlags::from_msg_bits(0x40 | 0x4000 | 0x80),
            SendFlags::EOR
        );
    }
}
