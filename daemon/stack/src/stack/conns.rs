//! The stack's connections: a slab of boxed entries, and the 4-tuple index
//! that demultiplexes arriving segments to them.
//!
//! A [`ConnId`] is a creation serial number (high 32 bits) and a slot of
//! the slab (low 32 bits): looking a connection up by id is an index and
//! a check of the serial kept in the entry, and ids order by creation as
//! before (timer ties, listener queues, "oldest first"). A slot is reused
//! after its connection is forgotten, under a new serial, so a stale id
//! (a superseded timer entry, say) never reaches the slot's new
//! connection; serials wrap after 2^32 connections, far longer than a
//! stale id lives (timer entries are shed in bulk when they pile up).
//!
//! The 4-tuple index holds only slot numbers (4 bytes each): its hash is
//! the 4-tuple's, computed from the entry when the table grows, and a
//! lookup compares the entry's own addresses. Before, a map slot held the
//! 64-byte 4-tuple and an 8-byte id, and a second map (id → entry) another
//! 16 bytes: ~125 bytes per connection at hashbrown's load, now ~20
//! (a slab slot and an index slot). The hash stays SipHash with a random
//! key: its input comes from the network (HashDoS).
//!
//! Invariants: a linked connection (see [`ConnEntry::linked`]) is in the
//! index exactly once, under its 4-tuple; an entry's `serial` is its id's.

use super::{ConnEntry, ConnId, FourTuple};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use std::hash::{BuildHasher, RandomState};

impl ConnId {
    /// The slot of the slab that holds the connection.
    fn slot(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }

    /// The creation serial's low 32 bits, as the entry keeps them.
    fn serial(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn new(serial: u32, slot: u32) -> ConnId {
        ConnId(u64::from(serial) << 32 | u64::from(slot))
    }
}

/// Every connection of the stack, by id and by 4-tuple.
#[derive(Debug, Default)]
pub(super) struct Conns {
    /// Entries by slot; `None` for a free slot.
    slots: Vec<Option<Box<ConnEntry>>>,
    /// Free slots, most recently freed last (reused first).
    free: Vec<u32>,
    /// Occupied slots.
    len: usize,
    /// The serial of the next connection.
    next_serial: u32,
    /// Slots of the linked connections, hashed by 4-tuple.
    by_tuple: HashTable<u32>,
    /// SipHash keyed at random (see the module docs).
    hasher: RandomState,
}

impl Conns {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, id: &ConnId) -> Option<&ConnEntry> {
        self.slots
            .get(id.slot())?
            .as_deref()
            .filter(|entry| entry.serial == id.serial())
    }

    pub(super) fn get_mut(&mut self, id: &ConnId) -> Option<&mut ConnEntry> {
        self.slots
            .get_mut(id.slot())?
            .as_deref_mut()
            .filter(|entry| entry.serial == id.serial())
    }

    /// Stores `entry` under a new id (its `serial` is set here).
    pub(super) fn insert(&mut self, mut entry: Box<ConnEntry>) -> ConnId {
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        entry.serial = serial;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                // Slots are u32: 2^32 connections at once would need
                // terabytes of TCBs first.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(entry));
                slot
            }
        };
        self.len += 1;
        ConnId::new(serial, slot)
    }

    /// Removes connection `id` (which must no longer be in the 4-tuple index).
    pub(super) fn remove(&mut self, id: &ConnId) -> Option<Box<ConnEntry>> {
        let slot = self.slots.get_mut(id.slot())?;
        if slot.as_ref()?.serial != id.serial() {
            return None;
        }
        let entry = slot.take()?;
        self.free.push(id.slot() as u32);
        self.len -= 1;
        Some(entry)
    }

    /// The connections in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (ConnId, &ConnEntry)> {
        self.slots.iter().enumerate().filter_map(|(slot, entry)| {
            let entry = entry.as_deref()?;
            Some((ConnId::new(entry.serial, slot as u32), entry))
        })
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut ConnEntry> {
        self.slots
            .iter_mut()
            .filter_map(|entry| entry.as_deref_mut())
    }

    /// Every id, oldest connection first.
    pub(super) fn ids_by_age(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    fn hash(hasher: &RandomState, key: &FourTuple) -> u64 {
        hasher.hash_one(key)
    }

    /// The linked connection with 4-tuple `key`.
    pub(super) fn find(&self, key: &FourTuple) -> Option<ConnId> {
        let slots = &self.slots;
        let slot = *self.by_tuple.find(Self::hash(&self.hasher, key), |&slot| {
            slots[slot as usize]
                .as_deref()
                .is_some_and(|entry| entry.key() == *key)
        })?;
        let entry = slots[slot as usize].as_deref()?;
        Some(ConnId::new(entry.serial, slot))
    }

    /// Whether a linked connection has 4-tuple `key`.
    pub(super) fn contains_tuple(&self, key: &FourTuple) -> bool {
        self.find(key).is_some()
    }

    /// Adds connection `id` to the 4-tuple index under its own addresses.
    /// A linked connection with the same 4-tuple (one in TIME-WAIT that a
    /// new SYN reopens) loses its place to it; its own unlink then leaves
    /// the index alone (see [`Conns::unlink`]).
    pub(super) fn link(&mut self, id: ConnId) {
        let Some(entry) = self.get(&id) else {
            return;
        };
        let key = entry.key();
        let (slots, hasher) = (&self.slots, &self.hasher);
        let found = self.by_tuple.entry(
            Self::hash(hasher, &key),
            |&slot| {
                slots[slot as usize]
                    .as_deref()
                    .is_some_and(|entry| entry.key() == key)
            },
            |&slot| {
                slots[slot as usize]
                    .as_deref()
                    .map_or(0, |entry| Self::hash(hasher, &entry.key()))
            },
        );
        match found {
            Entry::Occupied(mut taken) => *taken.get_mut() = id.slot() as u32,
            Entry::Vacant(room) => {
                room.insert(id.slot() as u32);
            }
        }
    }

    /// Removes connection `id` from the 4-tuple index, if it is there
    /// under `key`.
    pub(super) fn unlink(&mut self, key: &FourTuple, id: ConnId) {
        let wanted = id.slot() as u32;
        let hash = Self::hash(&self.hasher, key);
        if let Ok(found) = self.by_tuple.find_entry(hash, |&slot| slot == wanted) {
            found.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_slot_and_serial_and_order_by_creation() {
        let a = ConnId::new(1, 7);
        let b = ConnId::new(2, 3);
        assert_eq!((a.slot(), a.serial()), (7, 1));
        assert_eq!((b.slot(), b.serial()), (3, 2));
        assert!(a < b, "the older connection's id is smaller");
    }
}
