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

use super::ConnId;
use crate::socket::SocketHandle;
use std::collections::{BTreeSet, HashMap};

/// First port of the IANA dynamic/private range (RFC 6335 §6), used for ephemeral ports.
pub(crate) const EPHEMERAL_FIRST: u16 = 49152;
/// Last port of the IANA dynamic/private range (RFC 6335 §6).
pub(crate) const EPHEMERAL_LAST: u16 = 65535;
/// How many ephemeral ports exist.
pub(crate) const EPHEMERAL_COUNT: u32 = (EPHEMERAL_LAST - EPHEMERAL_FIRST) as u32 + 1;

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

/// The `index`-th ephemeral port counted from `start` (both taken modulo the range).
pub(crate) fn ephemeral_port(start: u32, index: u32) -> u16 {
    let offset = (start.wrapping_add(index)) % EPHEMERAL_COUNT;
    // offset < 16384, so the sum stays within u16.
    EPHEMERAL_FIRST + offset as u16
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

    #[test]
    fn ephemeral_ports_stay_in_the_iana_range() {
        assert_eq!(ephemeral_port(0, 0), EPHEMERAL_FIRST);
        assert_eq!(ephemeral_port(EPHEMERAL_COUNT - 1, 0), EPHEMERAL_LAST);
        assert_eq!(ephemeral_port(EPHEMERAL_COUNT - 1, 1), EPHEMERAL_FIRST);
        assert_eq!(ephemeral_port(u32::MAX, u32::MAX), {
            let o = (u32::MAX.wrapping_add(u32::MAX)) % EPHEMERAL_COUNT;
            EPHEMERAL_FIRST + o as u16
        });
    }
}
