//! The Internet checksum (RFC 1071) and the upper-layer pseudo-header sums:
//! TCP over IPv4 (RFC 9293 §3.1) and any upper layer over IPv6 (RFC 8200 §8.1).
//!
//! Partial sums are plain `u32` values that callers add together before
//! calling [`finish`]; each function here returns a value already folded to
//! 16 bits, so adding a handful of them can never overflow. Summation works on
//! 32-bit big-endian words: the one's-complement sum does not depend on the
//! word size as long as carries are folded back in (RFC 1071 §2, "parallel
//! summation"), which halves the loop count of the hot path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Folds carries of a wide one's-complement accumulator into 16 bits.
fn fold(mut acc: u64) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 significant bits.
    acc as u32
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd byte padded), not complemented.
///
/// The result is folded to 16 bits so that partial sums can be added freely.
/// Only the last slice of a multi-part sum may have an odd length (an odd
/// byte is padded with a zero on its right, RFC 1071 §4.1).
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        acc += u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let tail = words.remainder();
    let mut padded = [0u8; 4];
    padded[..tail.len()].copy_from_slice(tail);
    acc += u64::from(u32::from_be_bytes(padded));
    fold(acc)
}

/// [`sum`] of the concatenation of `parts`, which may have any lengths
/// (a part that starts at an odd position of the whole has its sum
/// byte-swapped, RFC 1071 §2 (B) "byte order independence"), e.g. a
/// segment's payload as the two slices of a ring buffer.
pub fn sum_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut acc: u64 = 0;
    let mut odd = false;
    for part in parts {
        let s = sum(part);
        acc += u64::from(if odd { (s & 0xff) << 8 | s >> 8 } else { s });
        odd ^= part.len() % 2 == 1;
    }
    fold(acc)
}

/// Folds a 32-bit partial sum to 16 bits and complements it.
pub fn finish(sum: u32) -> u16 {
    // `fold` leaves 16 bits, so the truncation is exact.
    !(fold(u64::from(sum)) as u16)
}

/// Partial sum of the IPv4 pseudo-header: src, dst, zero, protocol, length (RFC 9293 §3.1).
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u32 {
    let acc = u64::from(u32::from(src))
        + u64::from(u32::from(dst))
        + u64::from(protocol)
        + u64::from(length);
    fold(acc)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination,
/// the 32-bit upper-layer packet length, three zero bytes and the next header
/// value of the upper-layer protocol (not of any extension header before it).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let mut acc = u64::from(sum(&src.octets())) + u64::from(sum(&dst.octets()));
    acc += u64::from(length >> 16) + u64::from(length & 0xffff);
    acc += u64::from(next_header);
    fold(acc)
}

/// The pseudo-header sum for `src` → `dst` of either family: IPv4's (RFC
/// 9293 §3.1) or IPv6's (RFC 8200 §8.1). A packet never mixes families; if a
/// caller passes mixed ones the IPv4 address is taken in its IPv4-mapped
/// form (RFC 4291 §2.5.5.2), so the sum is defined but matches no real packet.
pub fn pseudo_header_ip(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u32 {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => pseudo_header(src, dst, protocol, length),
        (src, dst) => pseudo_header_v6(v6(src), v6(dst), protocol, length),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

/// Whether a partial sum taken over data that includes its own checksum
/// field is all ones, i.e. the checksum verifies (RFC 1071 §1, step 3).
pub fn verifies(partial: u32) -> bool {
    finish(partial) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deliberately naive 16-bit-at-a-time reference implementation.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: the sum of these bytes is 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&bytes), 0xddf2);
        assert_eq!(finish(sum(&bytes)), 0x220d);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // A widely reproduced IPv4 header whose checksum field is 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&header)), 0xb861);
        header[10] = 0xb8;
        header[11] = 0x61;
        assert!(verifies(sum(&header)));
    }

    #[test]
    fn odd_length_pads_on_the_right() {
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn pseudo_header_sum() {
        // 10.0.0.1 + 10.0.0.2 + 6 + 20, as 16-bit words: 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20.
        let s = pseudo_header(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            20,
        );
        assert_eq!(s, 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20);
    }

    #[test]
    fn pseudo_header_v6_is_the_rfc8200_layout() {
        // RFC 8200 §8.1: the pseudo-header as bytes, summed the plain way.
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00:0:0:1::2:3".parse().unwrap();
        let length: u32 = 0x0001_0203;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(pseudo_header_v6(src, dst, 58, length), sum(&bytes));
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(u64::from(sum(&data))) as u16, reference_sum(&data));
        }

        #[test]
        fn parts_of_any_length_sum_as_their_concatenation(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                parts.push(&data[at..cut]);
                at = cut;
            }
            prop_assert_eq!(fold(u64::from(sum_parts(parts))) as u16, reference_sum(&data));
        }

        #[test]
        fn split_sums_add_up(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            // Any even split point gives the same total.
            let cut = (cut * 2).min(data.len() & !1);
            let whole = finish(sum(&data));
            let parts = finish(sum(&data[..cut]) + sum(&data[cut..]));
            prop_assert_eq!(whole, parts);
        }
    }
}
