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
