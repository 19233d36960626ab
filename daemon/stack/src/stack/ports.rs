//! Local port accounting: which sockets and connections use each local port,
//! and ephemeral port selection.
//!
//! Every port user is registered here exactly once while it holds the port:
//! bound or listening sockets (by handle) and live connections (by internal
//! id). A user is *explicit* when the port was asked for (bind, listen, a
//! connection created from a bound socket, or the child of a listener) and
//! *ephemeral* when `connect` picked it. As on Linux, an ephemeral port may be
//! shared by several connections to different remote endpoints, but never
//! with an explicit user. The conflict rules for bind/listen (SO_REUSEADDR)
//! need socket state and live in [`crate::stack`].
//!
//! Port choice follows Linux over the configured
//! [`crate::config::LocalPortRange`] ([`parity_scan`]): connect starts on
//! the ports at an even distance from the range's first port, bind(0) and
//! listen on the odd ones, so that neither use exhausts the other's half
//! before its own is full.

use super::ConnId;
use crate::socket::SocketHandle;
use std::collections::{BTreeSet, HashMap};

/// Something that holds a local port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PortOwner {
    /// A bound (possibly listening) socket that has no connection yet.
    Socket(SocketHandle),
    /// A connection (with or without a user handle).
    Conn(ConnId),
}

#[derive(Debug, Default)]
struct PortUsage {
    /// Ordered so that conflict checks visit owners deterministically.
    owners: BTreeSet<PortOwner>,
    /// How many owners hold the port explicitly (not picked by connect).
    explicit: usize,
}

/// The table of used local ports.
#[derive(Debug, Default)]
pub(crate) struct PortTable {
    ports: HashMap<u16, PortUsage>,
}

impl PortTable {
    /// Registers `owner` on `port`.
    pub(crate) fn add(&mut self, port: u16, owner: PortOwner, explicit: bool) {
        let usage = self.ports.entry(port).or_default();
        if usage.owners.insert(owner) && explicit {
            usage.explicit += 1;
        }
    }

    /// Unregisters `owner` from `port` (no-op if it was not registered).
    pub(crate) fn remove(&mut self, port: u16, owner: PortOwner, explicit: bool) {
        if let Some(usage) = self.ports.get_mut(&port) {
            if usage.owners.remove(&owner) && explicit {
                usage.explicit = usage.explicit.saturating_sub(1);
            }
            if usage.owners.is_empty() {
                self.ports.remove(&port);
            }
        }
    }

    /// Every owner of `port`, in a deterministic order.
    pub(crate) fn owners(&self, port: u16) -> impl Iterator<Item = PortOwner> + '_ {
        self.ports
            .get(&port)
            .into_iter()
            .flat_map(|usage| usage.owners.iter().copied())
    }

    /// True if nobody uses `port`.
    pub(crate) fn is_free(&self, port: u16) -> bool {
        !self.ports.contains_key(&port)
    }

    /// True if `connect` may pick `port` as its ephemeral port (subject to the
    /// 4-tuple being unused): no explicit owner holds it.
    pub(crate) fn shareable_by_connect(&self, port: u16) -> bool {
        self.ports
            .get(&port)
            .is_none_or(|usage| usage.explicit == 0)
    }
}

/// Ports of the sub-range of `size` ports from `first`, in the order Linux
/// scans them (`__inet_hash_connect` for connect with `parity` 0,
/// `inet_csk_find_open_port` for bind(0) with `parity` 1): `size` is
/// rounded down to even, the scan starts at `offset` (modulo that) moved
/// to `parity`, visits every other port (step 2, wrapping), then does the
/// same on the other parity. Each item is the port's index within its pass
/// (0, 2, 4, ...: how far the scan went, which connect adds to its
/// per-destination counter) and the port.
pub(crate) fn parity_scan(
    first: u16,
    size: u32,
    offset: u32,
    parity: u32,
) -> impl Iterator<Item = (u32, u16)> {
    let len = if size > 1 { size & !1 } else { size };
    let passes: u32 = if len > 1 { 2 } else { u32::from(len == 1) };
    let start = if len > 1 {
        ((offset % len) & !1) | (parity & 1)
    } else {
        0
    };
    (0..passes).flat_map(move |pass| {
        let base = start ^ pass;
        (0..len).step_by(2).map(move |i| {
            // base + i < 2 * len, and first + len - 1 is at most the range's last port.
            let port = first + ((base + i) % len) as u16;
            (i, port)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_and_ephemeral_owners_are_tracked() {
        let mut table = PortTable::default();
        let a = PortOwner::Conn(ConnId(1));
        let b = PortOwner::Socket(SocketHandle(7));
        assert!(table.is_free(50000));
        table.add(50000, a, false);
        assert!(!table.is_free(50000));
        assert!(table.shareable_by_connect(50000));
        table.add(50000, b, true);
        assert!(!table.shareable_by_connect(50000));
        assert_eq!(table.owners(50000).collect::<Vec<_>>(), vec![b, a]);
        table.remove(50000, b, true);
        assert!(table.shareable_by_connect(50000));
        table.remove(50000, a, false);
        assert!(table.is_free(50000));
    }

    /// Table: (first, size, offset, parity) -> the ports in scan order.
    #[test]
    fn parity_scans_visit_each_port_once_in_linux_order() {
        let cases: &[(u16, u32, u32, u32, &[u16])] = &[
            // connect: even distance first, from the offset rounded down.
            (100, 6, 3, 0, &[102, 104, 100, 103, 105, 101]),
            // bind(0): odd distance first.
            (100, 6, 3, 1, &[103, 105, 101, 102, 104, 100]),
            // The offset wraps modulo the range.
            (100, 6, 6 + 4, 0, &[104, 100, 102, 105, 101, 103]),
            // An odd size leaves the last port out (Linux's `remaining &= ~1`).
            (100, 5, 0, 0, &[100, 102, 101, 103]),
            (100, 5, 0, 1, &[101, 103, 100, 102]),
            // One port: scanned once, whatever the parity.
            (7, 1, 9, 0, &[7]),
            (7, 1, 9, 1, &[7]),
            // Two ports: one per pass.
            (65534, 2, 1, 0, &[65534, 65535]),
            (65534, 2, 1, 1, &[65535, 65534]),
        ];
        for &(first, size, offset, parity, want) in cases {
            let got: Vec<u16> = parity_scan(first, size, offset, parity)
                .map(|(_, port)| port)
                .collect();
            assert_eq!(
                got, want,
                "first {first} size {size} offset {offset} parity {parity}"
            );
        }
        // The index restarts with each pass and counts in twos.
        let indexes: Vec<u32> = parity_scan(100, 6, 0, 0).map(|(i, _)| i).collect();
        assert_eq!(indexes, [0, 2, 4, 0, 2, 4]);
    }

    #[test]
    fn parity_scan_covers_linuxs_default_range() {
        let range = crate::config::LocalPortRange::LINUX_DEFAULT;
        for parity in [0, 1] {
            let ports: Vec<u16> = parity_scan(range.first(), range.size(), u32::MAX, parity)
                .map(|(_, p)| p)
                .collect();
            assert_eq!(ports.len(), 28232);
            let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
            assert_eq!(distinct.len(), 28232);
            assert!(ports.iter().all(|&p| range.contains(p)));
            // The first half of the scan has one parity only.
            let want = (u32::from(range.first()) + parity) % 2;
            assert!(ports[..14116].iter().all(|&p| u32::from(p) % 2 == want));
        }
    }
}
