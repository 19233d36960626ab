//! SYN cookies (RFC 4987 §3.6): a listener whose SYN queue is full answers a
//! SYN without keeping any state, encoding what it must remember in the
//! initial sequence number of its SYN,ACK; the peer's ACK gives it back
//! (`SEG.ACK - 1`) and the connection is rebuilt from it.
//!
//! The encoding follows Linux's (net/ipv4/syncookies.c), written from its
//! description:
//! - `cookie = H0(4-tuple) + client ISN + (count << 24)
//!            + ((H1(4-tuple, count) + mss_index) mod 2^24)`,
//!   where `count` is a 60-second counter, `H0`/`H1` are keyed SipHash-2-4
//!   values and `mss_index` picks one of four MSS values. A cookie is valid
//!   while `count` is at most one period old (Linux's MAX_SYNCOOKIE_AGE = 2
//!   periods, so 60–120 s), and only if the 24 hash bits match (a blind
//!   forgery succeeds with probability 4 / 2^24 per guess).
//! - The options a cookie cannot hold in the sequence number travel in the
//!   low 6 bits of our SYN,ACK's TSval, echoed in the ACK's TSecr: the peer's
//!   window-scale shift (4 bits, 0xF = none), SACK-permitted (bit 4) and ECN
//!   (bit 5, always 0: tcpd does not do ECN). Without timestamps there is no
//!   room for them: as Linux, the cookie SYN,ACK then offers MSS only, and
//!   the connection runs without window scaling and SACK.
//!
//! Invariants: nothing here keeps per-connection state; the key is the
//! stack's secret, so a cookie cannot be computed without it.

use crate::seq::SeqNum;
use crate::time::{Duration, Instant};
use core::hash::Hasher;
use core::net::{IpAddr, SocketAddr};
use siphasher::sip::SipHasher24;

/// The MSS values a cookie can carry (Linux's IPv4 `msstab`): the client's
/// MSS is rounded down to one of them; 536 is IPv4's default (RFC 9293 §3.7.1).
pub(crate) const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// The IPv6 table (Linux's `msstab` of syncookies for IPv6): MTUs 1280
/// (IPv6's minimum, RFC 8200 §5), 1480, 1500 and 9000, less 60 bytes of
/// headers; 1220 is IPv6's default MSS (RFC 9293 §3.7.1).
pub(crate) const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// The MSS table of the family of `local`.
pub(crate) fn mss_table(local: &SocketAddr) -> &'static [u16; 4] {
    match local {
        SocketAddr::V4(_) => &MSS_TABLE,
        SocketAddr::V6(_) => &MSS_TABLE_V6,
    }
}
/// Bits of the cookie holding the hash and MSS index; the counter takes the rest.
const HASH_BITS: u32 = 24;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
/// Counter periods a cookie stays valid (Linux MAX_SYNCOOKIE_AGE).
const MAX_AGE: u32 = 2;
/// Length of one counter period (Linux: one minute).
const PERIOD_MILLIS: u64 = 60_000;
/// How long after its last cookie a listener still checks ACKs as cookies
/// (Linux: two periods, tcp_synq_no_recent_overflow).
pub(crate) const VALIDITY: Duration = Duration::from_millis(PERIOD_MILLIS * MAX_AGE as u64);
/// Low TSval bits holding options (Linux TSBITS).
pub(crate) const TS_OPTION_BITS: u32 = 6;
const TS_OPTION_MASK: u32 = (1 << TS_OPTION_BITS) - 1;
/// Window-scale field in the TSval bits; this value means "no window scaling".
const TS_WSCALE_NONE: u32 = 0xF;
const TS_SACK: u32 = 1 << 4;
/// Largest window-scale shift (RFC 7323 §2.3).
const MAX_WINDOW_SHIFT: u8 = 14;

/// The keyed cookie function.
#[derive(Clone, Debug)]
pub(crate) struct SynCookies {
    key: [u8; 16],
}

impl SynCookies {
    pub(crate) fn new(key: [u8; 16]) -> Self {
        SynCookies { key }
    }

    /// The ISS for our SYN,ACK to a SYN with `client_isn` from `remote` to
    /// `local` advertising `mss`, and the MSS the cookie records.
    pub(crate) fn cookie(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        client_isn: SeqNum,
        mss: u16,
        now: Instant,
    ) -> (SeqNum, u16) {
        let table = mss_table(&local);
        let index = mss_index(table, mss);
        let count = period(now);
        let value = self
            .hash(0, local, remote, 0)
            .wrapping_add(client_isn.0)
            .wrapping_add(count << HASH_BITS)
            .wrapping_add(self.hash(1, local, remote, count).wrapping_add(index) & HASH_MASK);
        (SeqNum(value), table[index as usize])
    }

    /// The MSS recorded in `cookie` (our ISS, i.e. `SEG.ACK - 1`) for a
    /// connection whose client ISN was `client_isn` (`SEG.SEQ - 1`), or
    /// `None` if the cookie is forged, for another 4-tuple, or expired.
    pub(crate) fn check(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        client_isn: SeqNum,
        cookie: SeqNum,
        now: Instant,
    ) -> Option<u16> {
        let count = period(now);
        let rest = cookie
            .0
            .wrapping_sub(self.hash(0, local, remote, 0).wrapping_add(client_isn.0));
        // How many periods ago the cookie was made (mod 2^8).
        let age = count.wrapping_sub(rest >> HASH_BITS) & (u32::MAX >> HASH_BITS);
        if age >= MAX_AGE {
            return None;
        }
        let made = count.wrapping_sub(age);
        let index = rest.wrapping_sub(self.hash(1, local, remote, made)) & HASH_MASK;
        mss_table(&local).get(index as usize).copied()
    }

    /// Keyed hash `n` of the 4-tuple and `count` (SipHash-2-4 with a domain tag).
    fn hash(&self, n: u8, local: SocketAddr, remote: SocketAddr, count: u32) -> u32 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(b"tcpd-syncookie");
        hasher.write_u8(n);
        for endpoint in [local, remote] {
            match endpoint.ip() {
                IpAddr::V4(ip) => hasher.write(&ip.octets()),
                IpAddr::V6(ip) => hasher.write(&ip.octets()),
            }
            hasher.write(&endpoint.port().to_be_bytes());
        }
        hasher.write(&count.to_be_bytes());
        hasher.finish() as u32
    }
}

/// The 60-second counter (wraps; only differences matter).
fn period(now: Instant) -> u32 {
    (now.total_millis() / PERIOD_MILLIS) as u32
}

/// Index of the largest table MSS not above `mss` (index 0 if `mss` is
/// below every entry: as Linux, such a client is sent 536-byte segments,
/// 1220 over IPv6).
fn mss_index(table: &[u16; 4], mss: u16) -> u32 {
    table
        .iter()
        .rposition(|&m| m <= mss)
        .map_or(0, |i| i as u32)
}

/// The 6 option bits for the client's window scale and SACK-permitted.
pub(crate) fn ts_option_bits(window_scale: Option<u8>, sack_permitted: bool) -> u32 {
    let wscale = window_scale.map_or(TS_WSCALE_NONE, |s| u32::from(s.min(MAX_WINDOW_SHIFT)));
    wscale | if sack_permitted { TS_SACK } else { 0 }
}

/// Our TSval `ts_now` with its low bits replaced by `bits`, never later than
/// `ts_now` (Linux's cookie_init_timestamp): the TSval clock must not run
/// ahead, or the next segment's TSval would look older to the peer's PAWS.
pub(crate) fn cookie_tsval(ts_now: u32, bits: u32) -> u32 {
    let tsval = (ts_now & !TS_OPTION_MASK) | (bits & TS_OPTION_MASK);
    if tsval.wrapping_sub(ts_now) as i32 > 0 {
        tsval.wrapping_sub(1 << TS_OPTION_BITS)
    } else {
        tsval
    }
}

/// The window scale and SACK-permitted echoed in an ACK's TSecr (every
/// value of the 4 bits is meaningful: 0–14 a shift, 15 none).
pub(crate) fn decode_ts_option_bits(tsecr: u32) -> (Option<u8>, bool) {
    let window_scale = match tsecr & TS_WSCALE_NONE {
        TS_WSCALE_NONE => None,
        s => Some((s as u8).min(MAX_WINDOW_SHIFT)),
    };
    (window_scale, tsecr & TS_SACK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn ends() -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 80)),
            SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 40000)),
        )
    }

    #[test]
    fn cookie_round_trips_every_mss() {
        let cookies = SynCookies::new([7; 16]);
        let (local, remote) = ends();
        let now = Instant::from_millis(1_000_000);
        for (asked, expected) in [
            (1460, 1460),
            (9000, 1460),
            (1400, 1300),
            (1440, 1440),
            (100, 536),
        ] {
            let (iss, mss) = cookies.cookie(local, remote, SeqNum(12345), asked, now);
            assert_eq!(mss, expected);
            assert_eq!(
                cookies.check(local, remote, SeqNum(12345), iss, now),
                Some(expected)
            );
        }
    }

    #[test]
    fn ipv6_cookies_use_the_ipv6_mss_table() {
        let cookies = SynCookies::new([7; 16]);
        let local = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], 80));
        let remote = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 1], 40000));
        let now = Instant::from_millis(1_000_000);
        for (asked, expected) in [(1440, 1440), (1430, 1420), (9000, 8940), (100, 1220)] {
            let (iss, mss) = cookies.cookie(local, remote, SeqNum(7), asked, now);
            assert_eq!(mss, expected);
            assert_eq!(
                cookies.check(local, remote, SeqNum(7), iss, now),
                Some(expected)
            );
        }
    }

    #[test]
    fn cookie_expires_after_two_periods() {
        let cookies = SynCookies::new([7; 16]);
        let (local, remote) = ends();
        let made = Instant::from_millis(60_000 * 100 + 59_000);
        let (iss, _) = cookies.cookie(local, remote, SeqNum(1), 1460, made);
        // Valid in its own period and the next one...
        assert!(
            cookies
                .check(local, remote, SeqNum(1), iss, made + Duration::from_secs(1))
                .is_some()
        );
        assert!(
            cookies
                .check(
                    local,
                    remote,
                    SeqNum(1),
                    iss,
                    made + Duration::from_secs(60)
                )
                .is_some()
        );
        // ...not after (Linux MAX_SYNCOOKIE_AGE).
        assert_eq!(
            cookies.check(
                local,
                remote,
                SeqNum(1),
                iss,
                made + Duration::from_secs(62)
            ),
            None
        );
    }

    #[test]
    fn forged_or_misdirected_cookies_fail() {
        let cookies = SynCookies::new([7; 16]);
        let (local, remote) = ends();
        let now = Instant::from_millis(5_000_000);
        let (iss, _) = cookies.cookie(local, remote, SeqNum(99), 1460, now);
        let other = SocketAddr::new(remote.ip(), remote.port() + 1);
        assert_eq!(cookies.check(local, other, SeqNum(99), iss, now), None);
        assert_eq!(
            cookies.check(local, remote, SeqNum(99 + 100_000), iss, now),
            None
        );
        assert_eq!(
            SynCookies::new([8; 16]).check(local, remote, SeqNum(99), iss, now),
            None
        );
        // Blind guesses (not just flips of the two MSS-index bits, which a
        // peer that knows the cookie could choose anyway, as with Linux):
        // about 4 in 2^24 pass; 100 000 tries should all fail.
        let passed = (0..100_000u32)
            .filter(|i| {
                cookies
                    .check(
                        local,
                        remote,
                        SeqNum(99),
                        SeqNum(iss.0 ^ (i + 1).wrapping_mul(0x9E37_79B1)),
                        now,
                    )
                    .is_some()
            })
            .count();
        assert!(passed <= 1, "{passed} forged cookies accepted");
    }

    #[test]
    fn timestamp_bits_round_trip_and_never_run_ahead() {
        for (ws, sack) in [
            (None, false),
            (Some(0), true),
            (Some(7), false),
            (Some(14), true),
            (Some(20), true),
        ] {
            let bits = ts_option_bits(ws, sack);
            for ts_now in [0u32, 5, 63, 64, 1_000_000, u32::MAX] {
                let tsval = cookie_tsval(ts_now, bits);
                assert!(ts_now.wrapping_sub(tsval) < 64, "{ts_now} -> {tsval}");
                assert_eq!(decode_ts_option_bits(tsval), (ws.map(|s| s.min(14)), sack));
            }
        }
        assert_eq!(
            decode_ts_option_bits(0x2F),
            (None, false),
            "ECN bit ignored"
        );
    }
}
