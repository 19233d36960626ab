//! Initial sequence numbers per RFC 6528 §3: ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey), with M a 4-microsecond timer and F a
//! keyed hash (SipHash-2-4 here). The key comes from the caller (the OS random
//! source in the daemon, a fixed value in tests).
//!
//! The same secret keys two more hashes, each with its own domain tag so the
//! three never coincide: the per-host-pair timestamp offset
//! ([`IsnGenerator::ts_offset`]) and the per-destination ephemeral port
//! hash ([`IsnGenerator::port_offset`], RFC 6056 §3.3.4).
//!
//! Properties: for one 4-tuple, successive ISNs follow the clock (so a new
//! incarnation's sequence numbers start above the old one's, RFC 9293
//! §3.4.1); across 4-tuples they are unpredictable without the key (RFC 6528 §3).

use crate::seq::SeqNum;
use crate::time::Instant;
use core::hash::Hasher;
use core::net::{IpAddr, SocketAddr};
use siphasher::sip::SipHasher24;

/// The ISN clock ticks every 4 µs (RFC 6528 §3, after RFC 793's ISN generator),
/// wrapping 2^32 ticks in about 4.77 hours.
const CLOCK_TICK_MICROS: u64 = 4;

/// Generates ISNs from a secret key.
#[derive(Clone, Debug)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    pub fn new(key: [u8; 16]) -> Self {
        IsnGenerator { key }
    }

    /// The ISN for a connection between `local` and `remote` at `now`.
    pub fn isn(&self, local: SocketAddr, remote: SocketAddr, now: Instant) -> SeqNum {
        // The timer M; truncating to 32 bits is the wrap of sequence space.
        let clock = (now.total_micros() / CLOCK_TICK_MICROS) as u32;
        SeqNum(clock.wrapping_add(self.offset(local, remote)))
    }

    /// The timestamp clock offset for connections between `local` and
    /// `remote` (RFC 7323 §5.4 allows any per-connection offset).
    ///
    /// It depends on the two addresses only, as Linux's does: a new
    /// connection that reuses a 4-tuple still in TIME-WAIT at the peer then
    /// carries timestamps above the old incarnation's, which RFC 6191 §2
    /// needs for the peer to accept the SYN. A random offset per connection
    /// made half of such SYNs look older (RFC 7323 §5.3), so the peer
    /// answered with the old connection's ACK and tcpd lost a second to RST
    /// and SYN retransmission.
    pub fn ts_offset(&self, local: IpAddr, remote: IpAddr) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-ts-offset");
        write_ip(&mut hasher, local);
        write_ip(&mut hasher, remote);
        hasher.finish() as u32
    }

    /// The IPv6 flow label of the connection between `local` and `remote`:
    /// a keyed hash of the 4-tuple, 20 bits, never zero (RFC 6437 §3: the
    /// same for every packet of a flow, uniformly distributed, not
    /// predictable from the outside; zero would mean "no label").
    pub fn flow_label(&self, local: SocketAddr, remote: SocketAddr) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-flow-label");
        write_endpoint(&mut hasher, local);
        write_endpoint(&mut hasher, remote);
        let label = hasher.finish() as u32 & crate::wire::ipv6::MAX_FLOW_LABEL;
        label.max(1)
    }

    /// F(local IP, remote IP, remote port, secret) of RFC 6056 §3.3.4
    /// (Algorithm 4, "double-hash"), 64 bits as Linux's
    /// `secure_ipv4_port_ephemeral`: the low bits pick the destination's
    /// counter in the perturbation table (G), the high 32 bits are where
    /// the search for an ephemeral port towards `remote` starts before
    /// that counter is added (F).
    pub fn port_offset(&self, local: IpAddr, remote: SocketAddr) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-port-offset");
        write_ip(&mut hasher, local);
        write_endpoint(&mut hasher, remote);
        hasher.finish()
    }

    /// F(localip, localport, remoteip, remoteport, secretkey) (RFC 6528 §3),
    /// the low 32 bits of SipHash-2-4 over the 4-tuple's bytes (12 for
    /// IPv4, 36 for IPv6).
    fn offset(&self, local: SocketAddr, remote: SocketAddr) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        write_endpoint(&mut hasher, local);
        write_endpoint(&mut hasher, remote);
        hasher.finish() as u32
    }
}

/// Feeds an address's octets (4 or 16) to a hash.
fn write_ip(hasher: &mut SipHasher24, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => hasher.write(&ip.octets()),
        IpAddr::V6(ip) => hasher.write(&ip.octets()),
    }
}

/// Feeds an endpoint's address then its port (big-endian) to a hash.
fn write_endpoint(hasher: &mut SipHasher24, endpoint: SocketAddr) {
    write_ip(hasher, endpoint.ip());
    hasher.write(&endpoint.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    const KEY: [u8; 16] = *b"tcpd isn test ky";

    fn addr(a: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, 0, 0, a), port))
    }

    fn addr6(a: u16, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, a), port))
    }

    #[test]
    fn ipv6_tuples_have_their_own_isns_and_flow_labels() {
        let generator = IsnGenerator::new(KEY);
        let now = Instant::from_millis(42);
        let v6 = generator.isn(addr6(1, 80), addr6(2, 40000), now);
        assert_ne!(v6, generator.isn(addr6(1, 80), addr6(2, 40001), now));
        assert_ne!(v6, generator.isn(addr(1, 80), addr(2, 40000), now));
        let label = generator.flow_label(addr6(1, 80), addr6(2, 40000));
        assert!((1..=crate::wire::ipv6::MAX_FLOW_LABEL).contains(&label));
        assert_eq!(label, generator.flow_label(addr6(1, 80), addr6(2, 40000)));
        assert_ne!(label, generator.flow_label(addr6(1, 80), addr6(2, 40001)));
    }

    #[test]
    fn same_tuple_advances_with_the_clock() {
        let generator = IsnGenerator::new(KEY);
        let (local, remote) = (addr(1, 80), addr(2, 40000));
        let t0 = Instant::from_micros(1_000_000);
        let first = generator.isn(local, remote, t0);
        let later = generator.isn(local, remote, t0 + core::time::Duration::from_millis(1));
        // 1 ms = 250 ticks of 4 µs.
        assert_eq!(later.diff(first), 250);
        assert!(later.gt(first));
        // Deterministic for the same inputs.
        assert_eq!(generator.isn(local, remote, t0), first);
        // Sub-tick times map to the same ISN.
        assert_eq!(
            generator.isn(local, remote, t0 + core::time::Duration::from_micros(3)),
            first
        );
    }

    #[test]
    fn tuple_and_key_change_the_isn() {
        let generator = IsnGenerator::new(KEY);
        let now = Instant::from_millis(42);
        let base = generator.isn(addr(1, 80), addr(2, 40000), now);
        let variants = [
            generator.isn(addr(1, 80), addr(2, 40001), now),
            generator.isn(addr(1, 81), addr(2, 40000), now),
            generator.isn(addr(3, 80), addr(2, 40000), now),
            generator.isn(addr(1, 80), addr(4, 40000), now),
            // Swapping the ends is a different tuple too.
            generator.isn(addr(2, 40000), addr(1, 80), now),
            IsnGenerator::new([0; 16]).isn(addr(1, 80), addr(2, 40000), now),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i}");
        }
    }

    #[test]
    fn known_values() {
        // Worked out with an independent SipHash-2-4 (checked against the
        // SipHash paper's test vector) over 10.0.0.1:80 → 10.0.0.2:40000.
        let zero_key = IsnGenerator::new([0; 16]);
        let (local, remote) = (addr(1, 80), addr(2, 40000));
        assert_eq!(
            zero_key.isn(local, remote, Instant::ZERO),
            SeqNum(0x4d39_474a)
        );
        let test_key = IsnGenerator::new(KEY);
        assert_eq!(
            test_key.isn(local, remote, Instant::ZERO),
            SeqNum(0x9643_3a8d)
        );
        // Plus M: 4000 µs is 1000 ticks.
        assert_eq!(
            test_key.isn(local, remote, Instant::from_micros(4000)),
            SeqNum(0x9643_3a8d + 1000)
        );
    }

    #[test]
    fn timestamp_offset_depends_on_the_host_pair_only() {
        let generator = IsnGenerator::new(KEY);
        let (a, b, c) = (addr(1, 0), addr(2, 0), addr(3, 0));
        let ab = generator.ts_offset(a.ip(), b.ip());
        // The same pair gives the same offset whatever the ports or time.
        assert_eq!(generator.ts_offset(a.ip(), b.ip()), ab);
        assert_ne!(generator.ts_offset(a.ip(), c.ip()), ab);
        assert_ne!(
            IsnGenerator::new(*b"another test key").ts_offset(a.ip(), b.ip()),
            ab
        );
        // Domain separation: not the ISN hash of a zero-port tuple.
        assert_ne!(ab, generator.offset(a, b));
    }

    #[test]
    fn port_offset_depends_on_the_destination() {
        let generator = IsnGenerator::new(KEY);
        let local = addr(1, 0).ip();
        let to_80 = generator.port_offset(local, addr(2, 80));
        assert_eq!(generator.port_offset(local, addr(2, 80)), to_80);
        assert_ne!(generator.port_offset(local, addr(2, 81)), to_80);
        assert_ne!(generator.port_offset(local, addr(3, 80)), to_80);
    }
}
