//! IPv4 header (RFC 791): version, IHL, total length, fragmentation, TTL,
//! protocol, header checksum (always verified). Options are skipped;
//! fragments are rejected (tcpd does not reassemble) so the stack can count them.

use crate::wire::WireError;
use core::net::Ipv4Addr;

/// The IPv4 header without options (RFC 791 §3.1).
pub const HEADER_LEN: usize = 20;
/// Default TTL for packets tcpd originates (RFC 1700 / Linux's 64).
pub const DEFAULT_TTL: u8 = 64;

/// The protocol numbers the stack cares about (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Other(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            o => IpProtocol::Other(o),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Other(o) => o,
        }
    }
}

/// A checked view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version 4, IHL >= 5, total length within the buffer and >= IHL.
    /// Bytes past the total length (link padding) are ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let _ = &buffer;
        todo!("wire helper")
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A parsed IPv4 header. The payload is returned beside it by [`Ipv4Repr::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub ttl: u8,
    /// Don't Fragment; tcpd sets it on everything it sends (RFC 1191 PMTUD).
    pub dont_fragment: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses and validates a packet (header checksum verified, fragments
    /// rejected with [`WireError::Fragment`]); returns the header and the
    /// payload (trimmed to the total length).
    pub fn parse(packet: &[u8]) -> Result<(Ipv4Repr, &[u8]), WireError> {
        let _ = packet;
        todo!("wire helper")
    }

    /// Writes a 20-byte header (no options) with checksum into `buf[..20]`;
    /// `ident` is the IP identification field.
    pub fn emit(&self, buf: &mut [u8], ident: u16) {
        let _ = (buf, ident);
        todo!("wire helper")
    }
}
