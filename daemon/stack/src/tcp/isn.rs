//! Initial sequence numbers per RFC 6528 §3: ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey), with M a 4-microsecond timer and F a
//! keyed hash (SipHash-2-4 here). The key comes from the caller (the OS random
//! source in the daemon, a fixed value in tests).
//!
//! The same secret keys two more hashes, each with its own domain tag so the
//! three never coincide: the per-host-pair timestamp offset
//! ([`IsnGenerator::ts_offset`]) and the per-destination ephemeral port
//! offset ([`IsnGenerator::port_offset`], RFC 6056 §3.3.3).
//!
//! Properties: for one 4-tuple, successive ISNs follow the clock (so a new
//! incarnation's sequence numbers start above the old one's, RFC 9293
//! §3.4.1); across 4-tuples they are unpredictable without the key (RFC 6528 §3).

use crate::seq::SeqNum;
use crate::time::Instant;
use core::hash::Hasher;
use core::net::{Ipv4Addr, SocketAddrV4};
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
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> SeqNum {
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
    pub fn ts_offset(&self, local: Ipv4Addr, remote: Ipv4Addr) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-ts-offset");
        hasher.write(&local.octets());
        hasher.write(&remote.octets());
        hasher.finish() as u32
    }

    /// F(local IP, remote IP, remote port, secret) of RFC 6056 §3.3.3
    /// (Algorithm 3): where the search for an ephemeral port towards
    /// `remote` starts, before the global counter is added.
    pub fn port_offset(&self, local: Ipv4Addr, remote: SocketAddrV4) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-port-offset");
        hasher.write(&local.octets());
        hasher.write(&remote.ip().octets());
        hasher.write(&remote.port().to_be_bytes());
        hasher.finish() as u32
    }

    /// F(localip, localport, remoteip, remoteport, secretkey) (RFC 6528 §3),
    /// the low 32 bits of SipHash-2-4 over the 12 bytes of the 4-tuple.
    fn offset(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let mut tuple = [0u8; 12];
        tuple[0..4].copy_from_slice(&local.ip().octets());
        tuple[4..6].copy_from_slice(&local.port().to_be_bytes());
        tuple[6..10].copy_from_slice(&remote.ip().octets());
        tuple[10..12].copy_from_slice(&remote.port().to_be_bytes());
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(&tuple);
        hasher.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    const KEY: [u8; 16] = *b"tcpd isn test ky";

    fn addr(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
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
        let ab = generator.ts_offset(*a.ip(), *b.ip());
        // The same pair gives the same offset whatever the ports or time.
        assert_eq!(generator.ts_offset(*a.ip(), *b.ip()), ab);
        assert_ne!(generator.ts_offset(*a.ip(), *c.ip()), ab);
        assert_ne!(
            IsnGenerator::new(*b"another test key").ts_offset(*a.ip(), *b.ip()),
            ab
        );
        // Domain separation: not the ISN hash of a zero-port tuple.
        assert_ne!(ab, generator.offset(a, b));
    }

    #[test]
    fn port_offset_depends_on_the_destination() {
        let generator = IsnGenerator::new(KEY);
        let local = *addr(1, 0).ip();
        let to_80 = generator.port_offset(local, addr(2, 80));
        assert_eq!(generator.port_offset(local, addr(2, 80)), to_80);
        assert_ne!(generator.port_offset(local, addr(2, 81)), to_80);
        assert_ne!(generator.port_offset(local, addr(3, 80)), to_80);
    }
}
