//! Wire formats: checked views over untrusted bytes plus parse/emit pairs.
//!
//! Each protocol has a `*Packet<T: AsRef<[u8]>>` view whose `new_checked`
//! validates lengths before any field is read (so accessors never panic), and
//! a `*Repr` high-level representation with `parse` (view → repr, checksum
//! verified) and `emit` (repr → bytes, checksum filled in). Malformed input is
//! a [`WireError`], never a panic. [`virtio`] is the TUN's offload header.

pub mod checksum;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod virtio;

pub use icmpv4::{Icmpv4Packet, Icmpv4Repr, QuotedHeader};
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr};
pub use ip::{IpPacketParts, IpProtocol};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Drop, Ipv6Packet, Ipv6Parsed, Ipv6Repr};
pub use tcp::{SackBlock, TcpFlags, TcpOptions, TcpRepr, TcpSegment, TxChecksum};
pub use virtio::{Checksum, Gso, GsoKind, VirtioNetRepr};

/// Why a packet was rejected. Each variant is counted by the stack as a drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Shorter than its fixed header or than a length field claims.
    #[error("truncated packet")]
    Truncated,
    /// A header field holds an impossible value (version, header length...).
    #[error("malformed header")]
    Malformed,
    /// The checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// A fragment (IPv4: MF set or non-zero offset; IPv6: a fragment header
    /// that is not atomic): tcpd does not reassemble.
    #[error("IP fragment")]
    Fragment,
    /// A protocol or message type the stack does not handle.
    #[error("unsupported protocol or type")]
    Unsupported,
}
