//! Stack-wide counters (like the kernel's `nstat`), for the admin API.
//! Counters only ever increase.

/// Why an incoming packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Truncated or malformed IPv4/IPv6/TCP/ICMP header.
    Malformed,
    /// IPv4 header, TCP or ICMP checksum failed.
    Checksum,
    /// An IPv4 or IPv6 fragment (tcpd does not reassemble).
    Fragment,
    /// Not addressed to the stack's address.
    NotForUs,
    /// A protocol other than TCP and ICMP, or an unhandled ICMP type.
    Unsupported,
    /// A listener's SYN or accept queue was full.
    ListenOverflow,
    /// A segment the state machine discarded without using it: a listener's
    /// (no SYN, SYN+FIN) or a connection's (out of window, PAWS, bad ACK, RST
    /// or SYN answered by a challenge ACK..., see `ConnectionStats::segments_discarded`).
    Unacceptable,
    /// A virtio-net offload header the stack cannot honour (checksum offsets
    /// outside the TCP checksum field, a GSO type not matching the packet) or that
    /// does not fit its packet (counted by the link).
    Offload,
}

impl DropReason {
    /// Every reason, for listing.
    pub const ALL: [DropReason; 8] = [
        DropReason::Malformed,
        DropReason::Checksum,
        DropReason::Fragment,
        DropReason::NotForUs,
        DropReason::Unsupported,
        DropReason::ListenOverflow,
        DropReason::Unacceptable,
        DropReason::Offload,
    ];

    /// Stable snake_case name used in the admin API ("drop_" is prefixed there).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Checksum => "checksum",
            DropReason::Fragment => "fragment",
            DropReason::NotForUs => "not_for_us",
            DropReason::Unsupported => "unsupported",
            DropReason::ListenOverflow => "listen_overflow",
            DropReason::Unacceptable => "unacceptable",
            DropReason::Offload => "offload",
        }
    }
}

/// The counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub segments_in: u64,
    pub segments_out: u64,
    pub retransmits: u64,
    pub rst_sent: u64,
    pub rst_received: u64,
    pub checksum_errors: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    pub failed_opens: u64,
    pub icmp_echo_replies: u64,
    pub icmp_unreachable_received: u64,
    /// ICMPv6 Packet Too Big messages received (RFC 8201); IPv4's
    /// "fragmentation needed" counts as unreachable, as before.
    pub icmp_packet_too_big_received: u64,
    /// ICMPv6 errors sent (Parameter Problem, RFC 8200 §4 / RFC 4443 §3.4).
    pub icmp_errors_sent: u64,
    /// ICMPv6 errors not sent because of the rate limit (RFC 4443 §2.4(f)).
    pub icmp_errors_ratelimited: u64,
    /// SYN,ACKs carrying a SYN cookie (Linux SyncookiesSent).
    pub syncookies_sent: u64,
    /// ACKs that carried a valid cookie and opened a connection (SyncookiesRecv).
    pub syncookies_recv: u64,
    /// ACKs to a listener in cookie mode whose cookie did not check (SyncookiesFailed).
    pub syncookies_failed: u64,
    /// Connections refused because a listener's accept queue was full (ListenOverflows).
    pub listen_overflows: u64,
    /// SYNs and cookie ACKs a listener dropped for any reason (ListenDrops).
    pub listen_drops: u64,
    /// Orphans reset because there were too many, or they held too much
    /// memory (Linux TCPAbortOnMemory).
    pub orphan_resets: u64,
    /// Orphans dropped after `orphan_retries` or the FIN-WAIT-2 timeout
    /// (Linux TCPAbortOnTimeout, for orphans).
    pub orphan_timeouts: u64,
    /// Window reductions undone because the retransmissions behind them
    /// proved spurious (RFC 3522 Eifel detection, RFC 3708 D-SACKs; Linux's
    /// TCPFullUndo + TCPPartialUndo + TCPDSACKUndo + TCPLossUndo).
    pub cwnd_undos: u64,
    /// Of those, retransmission timeouts found spurious (TCPSpuriousRTOs).
    pub spurious_rtos: u64,
    /// Times the buffered bytes of all connections crossed `tcp_mem`'s
    /// pressure threshold (Linux's TCPMemoryPressures).
    pub tcp_mem_pressure: u64,
    /// Times they reached `tcp_mem`'s hard limit.
    pub tcp_mem_full: u64,
    /// Data segments dropped by connections at `MemoryLevel::Exhausted`:
    /// past `tcp_mem`'s hard limit, or set so by the stack's user (the
    /// daemon: a session at twice its quota). Linux's TCPRcvQDrop.
    pub rcvq_drops: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Counts a dropped packet.
    pub fn drop_packet(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        if reason == DropReason::Checksum {
            self.checksum_errors += 1;
        }
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every counter with its stable name, for the admin API.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = vec![
            ("packets_in".into(), self.packets_in),
            ("packets_out".into(), self.packets_out),
            ("segments_in".into(), self.segments_in),
            ("segments_out".into(), self.segments_out),
            ("retransmits".into(), self.retransmits),
            ("rst_sent".into(), self.rst_sent),
            ("rst_received".into(), self.rst_received),
            ("checksum_errors".into(), self.checksum_errors),
            ("active_opens".into(), self.active_opens),
            ("passive_opens".into(), self.passive_opens),
            ("failed_opens".into(), self.failed_opens),
            ("icmp_echo_replies".into(), self.icmp_echo_replies),
            (
                "icmp_unreachable_received".into(),
                self.icmp_unreachable_received,
            ),
            (
                "icmp_packet_too_big_received".into(),
                self.icmp_packet_too_big_received,
            ),
            ("icmp_errors_sent".into(), self.icmp_errors_sent),
            (
                "icmp_errors_ratelimited".into(),
                self.icmp_errors_ratelimited,
            ),
            ("syncookies_sent".into(), self.syncookies_sent),
            ("syncookies_recv".into(), self.syncookies_recv),
            ("syncookies_failed".into(), self.syncookies_failed),
            ("listen_overflows".into(), self.listen_overflows),
            ("listen_drops".into(), self.listen_drops),
            ("orphan_resets".into(), self.orphan_resets),
            ("orphan_timeouts".into(), self.orphan_timeouts),
            ("cwnd_undos".into(), self.cwnd_undos),
            ("spurious_rtos".into(), self.spurious_rtos),
            ("tcp_mem_pressure".into(), self.tcp_mem_pressure),
            ("tcp_mem_full".into(), self.tcp_mem_full),
            ("rcvq_drops".into(), self.rcvq_drops),
        ];
        for r in DropReason::ALL {
            v.push((format!("drop_{}", r.name()), self.drops(r)));
        }
        v
    }
}
