//! Fuzz target `wire_parse`: arbitrary bytes through every wire parser of
//! tcpd-stack, as an IPv4 or IPv6 packet from the TUN device would go.
//!
//! The parsers face untrusted input and must never panic; the target also
//! checks that whatever parses re-emits to bytes that parse back to the same
//! representation.
//!
//! Run (needs a nightly toolchain and cargo-fuzz: `cargo install cargo-fuzz`):
//!
//! ```text
//! cd daemon/stack/fuzz
//! cargo +nightly fuzz run wire_parse                  # until stopped or a crash
//! cargo +nightly fuzz run wire_parse -- -max_total_time=60
//! ```
//!
//! Crashes land in `artifacts/wire_parse/` (git-ignored); replay one with
//! `cargo +nightly fuzz run wire_parse artifacts/wire_parse/<file>`. The
//! stable-toolchain counterparts that CI runs are the `arbitrary_bytes_never_panic`
//! proptests in `src/wire/`.

#![no_main]

use core::net::{Ipv4Addr, Ipv6Addr};
use libfuzzer_sys::fuzz_target;
use tcpd_stack::wire::checksum;
use tcpd_stack::wire::icmpv6::QuotedHeader as QuotedHeaderV6;
use tcpd_stack::wire::{Icmpv4Repr, Icmpv6Repr, IpProtocol, Ipv4Repr, Ipv6Repr, TcpRepr};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fuzz_target!(|data: &[u8]| {
    // The raw bytes as a TUN read with a virtio-net header...
    check_virtio(data);
    // ...as a whole packet...
    parse_packet(data);
    parse_packet_v6(data);
    // ...and as bare transport payloads.
    check_tcp(data, SRC, DST);
    check_icmp(data);
    // Random bytes almost never carry a valid checksum, which would keep the
    // fuzzer out of the option and quote parsers; so also try each parser
    // with the checksum made right.
    let mut fixed = data.to_vec();
    if fix_checksum(&mut fixed, 10, 20) {
        parse_packet(&fixed);
    }
    let mut fixed = data.to_vec();
    if fixed.len() >= 20 {
        fixed[16..18].fill(0);
        let length = u32::try_from(fixed.len()).unwrap_or(u32::MAX);
        let sum = checksum::pseudo_header(SRC, DST, 6, length) + checksum::sum(&fixed);
        fixed[16..18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        check_tcp(&fixed, SRC, DST);
    }
    let mut fixed = data.to_vec();
    let len = fixed.len();
    if fix_checksum(&mut fixed, 2, len) {
        check_icmp(&fixed);
    }
});

/// A virtio-net header and what follows it: a header that parses fits its
/// packet, so completing its checksum and segmenting never fail on bounds.
fn check_virtio(data: &[u8]) {
    use tcpd_stack::wire::virtio::{self, Checksum, VirtioNetRepr};
    let Ok((header, packet)) = VirtioNetRepr::parse(data) else {
        return;
    };
    let mut packet = packet.to_vec();
    if let Checksum::Partial { start, offset } = header.checksum {
        assert!(virtio::complete_checksum(&mut packet, start, offset).is_ok());
    }
    if let Some(gso) = header.gso {
        assert!(gso.size > 0);
        let mut scratch = Vec::new();
        let _ = virtio::segment_tcpv4(&packet, gso.size, &mut scratch, |piece| {
            parse_packet(piece);
        });
    }
}

/// Writes the Internet checksum of `bytes[..covered]` at `bytes[at..at + 2]`;
/// false if the buffer is too short.
fn fix_checksum(bytes: &mut [u8], at: usize, covered: usize) -> bool {
    if bytes.len() < covered.max(at + 2) {
        return false;
    }
    bytes[at..at + 2].fill(0);
    let sum = checksum::finish(checksum::sum(&bytes[..covered]));
    bytes[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

fn parse_packet(data: &[u8]) {
    let Ok((ip, payload)) = Ipv4Repr::parse(data) else {
        return;
    };
    assert_eq!(payload.len(), ip.payload_len);
    match ip.protocol {
        IpProtocol::Tcp => check_tcp(payload, ip.src, ip.dst),
        IpProtocol::Icmp => check_icmp(payload),
        IpProtocol::Icmpv6 | IpProtocol::Other(_) => {}
    }
}

fn parse_packet_v6(data: &[u8]) {
    let Ok(parsed) = Ipv6Repr::parse(data) else {
        return;
    };
    assert_eq!(parsed.payload.len(), parsed.repr.payload_len);
    if parsed.repr.next_header == IpProtocol::Icmpv6 {
        check_icmpv6(parsed.payload, parsed.repr.src, parsed.repr.dst);
    }
}

fn check_icmpv6(message: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let Ok(icmp) = Icmpv6Repr::parse(src, dst, message) else {
        return;
    };
    if let Some(invoking) = icmp.invoking() {
        let _ = QuotedHeaderV6::parse(invoking);
    }
    let mut buf = vec![0u8; icmp.buffer_len()];
    icmp.emit(src, dst, &mut buf);
    let again = Icmpv6Repr::parse(src, dst, &buf).expect("re-emitted ICMPv6 must parse");
    // An error quoting more than the minimum MTU allows is cut on emit.
    let quote_fits = icmp
        .invoking()
        .is_none_or(|invoking| invoking.len() <= tcpd_stack::wire::icmpv6::MAX_QUOTE_LEN);
    if quote_fits {
        assert_eq!(again, icmp);
    }
}

fn check_tcp(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(tcp) = TcpRepr::parse(segment, src, dst) else {
        return;
    };
    let mut buf = vec![0u8; tcp.buffer_len()];
    let written = tcp.emit(&mut buf, src, dst);
    assert_eq!(written, buf.len());
    let again = TcpRepr::parse(&buf, src, dst).expect("re-emitted segment must parse");
    // Options are re-emitted in tcpd's own layout, so only the parts that
    // survive that are compared: header fields, payload, and the options
    // that fit (SACK blocks beyond the room left are dropped on emit).
    assert_eq!(
        (again.src_port, again.dst_port, again.seq, again.ack),
        (tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack)
    );
    assert_eq!(
        (again.flags, again.window, again.urgent),
        (tcp.flags, tcp.window, tcp.urgent)
    );
    assert_eq!(again.payload, tcp.payload);
    assert_eq!(again.options.mss, tcp.options.mss);
    assert_eq!(again.options.timestamp, tcp.options.timestamp);
    assert_eq!(again.options.window_scale, tcp.options.window_scale);
    assert_eq!(again.options.sack_permitted, tcp.options.sack_permitted);
}

fn check_icmp(message: &[u8]) {
    let Ok(icmp) = Icmpv4Repr::parse(message) else {
        return;
    };
    let mut buf = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut buf);
    assert_eq!(Icmpv4Repr::parse(&buf), Ok(icmp));
}
