//! Vocabulary shared by both IP versions: the protocol numbers carried in
//! IPv4's Protocol field and IPv6's Next Header field (one IANA registry,
//! "Assigned Internet Protocol Numbers", serves both).

/// The upper-layer protocol numbers the stack cares about (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// ICMP for IPv4 (RFC 792), protocol 1.
    Icmp,
    /// TCP (RFC 9293), protocol 6.
    Tcp,
    /// ICMP for IPv6 (RFC 4443), next header 58.
    Icmpv6,
    Other(u8),
}

/// IANA protocol numbers for the variants above.
mod number {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const ICMPV6: u8 = 58;
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            number::ICMP => IpProtocol::Icmp,
            number::TCP => IpProtocol::Tcp,
            number::ICMPV6 => IpProtocol::Icmpv6,
            o => IpProtocol::Other(o),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => number::ICMP,
            IpProtocol::Tcp => number::TCP,
            IpProtocol::Icmpv6 => number::ICMPV6,
            IpProtocol::Other(o) => o,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for n in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(n)), n);
        }
        assert_eq!(IpProtocol::from(58), IpProtocol::Icmpv6);
        assert_eq!(IpProtocol::from(17), IpProtocol::Other(17));
    }
}

/// The parts of an IPv4 or IPv6 packet an observer needs (told apart by the
/// version field): its ends, its upper-layer protocol and that protocol's
/// bytes (after any IPv6 extension headers, link padding excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacketParts<'a> {
    pub src: core::net::IpAddr,
    pub dst: core::net::IpAddr,
    pub protocol: IpProtocol,
    pub payload: &'a [u8],
}

impl<'a> IpPacketParts<'a> {
    /// Parses through [`crate::wire::Ipv4Repr::parse`] (header checksum
    /// verified) or [`crate::wire::Ipv6Repr::parse`] (extension headers
    /// walked); malformed packets are an error, never a panic.
    pub fn parse(packet: &'a [u8]) -> Result<IpPacketParts<'a>, crate::wire::WireError> {
        if packet.first().is_some_and(|byte| byte >> 4 == 6) {
            let parsed = crate::wire::Ipv6Repr::parse(packet).map_err(|drop| drop.reason)?;
            return Ok(IpPacketParts {
                src: parsed.repr.src.into(),
                dst: parsed.repr.dst.into(),
                protocol: parsed.repr.next_header,
                payload: parsed.payload,
            });
        }
        let (ip, payload) = crate::wire::Ipv4Repr::parse(packet)?;
        Ok(IpPacketParts {
            src: ip.src.into(),
            dst: ip.dst.into(),
            protocol: ip.protocol,
            payload,
        })
    }
}
