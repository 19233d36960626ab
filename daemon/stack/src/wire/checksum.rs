//! The Internet checksum (RFC 1071) and the TCP/IPv4 pseudo-header sum (RFC 9293 §3.1).

use core::net::Ipv4Addr;

/// One's-complement sum of `data` as big-endian 16-bit words (odd byte padded), not folded.
pub fn sum(data: &[u8]) -> u32 {
    let _ = data;
    todo!("wire helper")
}

/// Folds a 32-bit partial sum to 16 bits and complements it.
pub fn finish(sum: u32) -> u16 {
    let _ = sum;
    todo!("wire helper")
}

/// Partial sum of the IPv4 pseudo-header: src, dst, zero, protocol, length.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u32 {
    let _ = (src, dst, protocol, length);
    todo!("wire helper")
}
