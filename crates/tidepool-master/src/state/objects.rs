//! The object table: every key the master knows, in a slab with a hash index and intrusive lists.
//!
//! Memory is the constraint here (W17: tens of millions of small objects), so:
//! - objects live in one `Vec<Object>` slab addressed by `u32` index; freed slots are chained
//!   into a free list and reused;
//! - the key is stored once, as a `Box<str>` inside the slot; the hash index is a
//!   `hashbrown::HashTable<u32>` of slot indices that hashes the key found in the slot
//!   (4 bytes + 1 control byte per entry);
//! - the common one-replica case is stored inline ([`Replicas::One`]);
//! - recency is an intrusive doubly-linked list through `prev`/`next` slot indices, so moving an
//!   object to the most-recent end is O(1) and eviction walks from the least-recent end paying
//!   only for what it looks at.
//!
//! An object is on at most one list ([`ListId`]): `InFlight` (ordered by put start, for the
//! release-timeout backstop), `Lru` and `Read` (readable, evictable in principle: never read
//! since commit, and read, see the eviction module for their order), `Soft` (readable and
//! found soft-pinned by an eviction walk, parked so later walks do not skip it again), or
//! `None` (hard-pinned: never evicted, so never walked).

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use tidepool_common::{ClientId, ObjectId};

/// "No slot" in links.
pub const NIL: u32 = u32::MAX;

/// Most objects the table holds: slot indices are `u32` and [`NIL`] is reserved.
pub const MAX_OBJECTS: usize = (u32::MAX - 1) as usize;

/// One memory replica: a range in a segment, by the segment's slot index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rep {
    /// Segment slot index (see `segments.rs`).
    pub seg: u32,
    /// Offset inside the segment.
    pub off: u64,
}

/// An object's replicas; one inline, more boxed. All replicas of an object share its state
/// (in flight or complete), so no per-replica status is stored.
#[derive(Debug, Clone)]
pub enum Replicas {
    /// The common case.
    One(Rep),
    /// Zero (transiently, while dropping) or several.
    Many(Box<[Rep]>),
}

impl Replicas {
    /// Builds from a list.
    pub fn from_vec(v: Vec<Rep>) -> Self {
        if v.len() == 1 {
            Replicas::One(v[0])
        } else {
            Replicas::Many(v.into_boxed_slice())
        }
    }

    /// The replicas as a slice.
    pub fn as_slice(&self) -> &[Rep] {
        match self {
            Replicas::One(r) => std::slice::from_ref(r),
            Replicas::Many(b) => b,
        }
    }
}

/// Which intrusive list an object is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListId {
    /// On no list (free slot, or hard-pinned readable object).
    None = 0,
    /// In-flight puts, oldest start first.
    InFlight = 1,
    /// Readable objects never read since their commit, oldest commit first.
    Lru = 2,
    /// Readable soft-pinned objects parked by eviction walks, least recently parked first.
    Soft = 3,
    /// Readable objects that were read (granted a lease), earliest lease deadline first. The
    /// lease TTL is one constant, so pushing at the tail on every grant keeps it sorted.
    Read = 4,
}

/// One object (a slot of the slab). About 112 bytes; see the module docs.
#[derive(Debug, Clone)]
pub struct Object {
    /// The key; empty marks a free slot (real keys are never empty).
    pub key: Box<str>,
    /// Identity of this version.
    pub id: ObjectId,
    /// Size in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub replicas: Replicas,
    /// Writer of an in-flight put; meaningless once readable.
    pub writer: ClientId,
    /// In flight: when the put started. Readable: when it was committed.
    pub stamp_ms: u64,
    /// Read lease: no remove (without force) or eviction before this instant. 0 = none.
    pub lease_deadline: u64,
    /// In flight: requested soft-pin TTL (0 = none). Readable: pin deadline (0 = none).
    pub soft_pin: u64,
    /// Previous slot on the object's list, or the next free slot for free slots.
    pub prev: u32,
    /// Next slot on the object's list.
    pub next: u32,
    /// Which list the links belong to.
    pub list: ListId,
    /// Never evicted.
    pub hard_pin: bool,
    /// No replica is COMPLETE yet.
    pub in_flight: bool,
}

impl Object {
    /// A free slot.
    fn vacant(next_free: u32) -> Self {
        Object {
            key: Box::from(""),
            id: ObjectId { epoch: 0, seq: 0 },
            size: 0,
            replicas: Replicas::Many(Box::new([])),
            writer: ClientId(0),
            stamp_ms: 0,
            lease_deadline: 0,
            soft_pin: 0,
            prev: next_free,
            next: NIL,
            list: ListId::None,
            hard_pin: false,
            in_flight: false,
        }
    }

    /// Whether the slot holds an object.
    pub fn occupied(&self) -> bool {
        !self.key.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Key -> object, with the recency and in-flight lists.
pub struct ObjectTable {
    slots: Vec<Object>,
    free_head: u32,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    count: usize,
    lists: [List; 5],
}

impl ObjectTable {
    /// An empty table.
    pub fn new() -> Self {
        ObjectTable {
            slots: Vec::new(),
            free_head: NIL,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            count: 0,
            lists: [List::EMPTY; 5],
        }
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table holds no object.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of slots ever allocated (occupied or free); indices are below it.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Number of objects on `list`.
    pub fn list_len(&self, list: ListId) -> usize {
        self.lists[list as usize].len
    }

    /// The least recent (first) object of `list`.
    pub fn head(&self, list: ListId) -> Option<u32> {
        let h = self.lists[list as usize].head;
        (h != NIL).then_some(h)
    }

    /// The object after `idx` on its list.
    pub fn next_of(&self, idx: u32) -> Option<u32> {
        let n = self.slots[idx as usize].next;
        (n != NIL).then_some(n)
    }

    /// Looks a key up.
    pub fn find(&self, key: &str) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        self.index
            .find(h, |&i| &*self.slots[i as usize].key == key)
            .copied()
    }

    /// The object in slot `idx` (which must be occupied).
    pub fn get(&self, idx: u32) -> &Object {
        &self.slots[idx as usize]
    }

    /// The object in slot `idx`, mutably. Do not change `key`, `list`, `prev` or `next`.
    pub fn get_mut(&mut self, idx: u32) -> &mut Object {
        &mut self.slots[idx as usize]
    }

    /// Occupied slot indices, in slot order (a snapshot, so the caller may remove while using it).
    pub fn indices(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].occupied())
            .collect()
    }

    /// Iterates over the objects.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.slots.iter().filter(|o| o.occupied())
    }

    /// Inserts an object whose key is absent; returns its slot. The object is on no list.
    pub fn insert(&mut self, mut obj: Object) -> u32 {
        debug_assert!(obj.occupied() && self.find(&obj.key).is_none());
        obj.list = ListId::None;
        obj.prev = NIL;
        obj.next = NIL;
        let h = self.hasher.hash_one(&*obj.key);
        let idx = if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.slots[idx as usize].prev;
            self.slots[idx as usize] = obj;
            idx
        } else {
            self.slots.push(obj);
            (self.slots.len() - 1) as u32
        };
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index
            .insert_unique(h, idx, |&i| hasher.hash_one(&*slots[i as usize].key));
        self.count += 1;
        idx
    }

    /// Removes the object in slot `idx` (unlinking it first) and returns it.
    pub fn remove(&mut self, idx: u32) -> Object {
        self.unlink(idx);
        let h = self.hasher.hash_one(&*self.slots[idx as usize].key);
        if let Ok(e) = self.index.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        let obj = std::mem::replace(
            &mut self.slots[idx as usize],
            Object::vacant(self.free_head),
        );
        self.free_head = idx;
        self.count -= 1;
        obj
    }

    /// Takes `idx` off whatever list it is on.
    pub fn unlink(&mut self, idx: u32) {
        let (list, prev, next) = {
            let o = &self.slots[idx as usize];
            (o.list, o.prev, o.next)
        };
        if list == ListId::None {
            return;
        }
        let l = &mut self.lists[list as usize];
        if prev == NIL {
            l.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            l.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        l.len -= 1;
        let o = &mut self.slots[idx as usize];
        o.list = ListId::None;
        o.prev = NIL;
        o.next = NIL;
    }

    /// Moves `idx` to the most recent end of `list` (from whatever list it was on).
    pub fn push_tail(&mut self, list: ListId, idx: u32) {
        self.unlink(idx);
        if list == ListId::None {
            return;
        }
        let l = &mut self.lists[list as usize];
        let tail = l.tail;
        if tail == NIL {
            l.head = idx;
        } else {
            self.slots[tail as usize].next = idx;
        }
        l.tail = idx;
        l.len += 1;
        let o = &mut self.slots[idx as usize];
        o.list = list;
        o.prev = tail;
        o.next = NIL;
    }
}

impl Default for ObjectTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> Object {
        let mut o = Object::vacant(NIL);
        o.key = key.into();
        o.size = 1;
        o
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut t = ObjectTable::new();
        let a = t.insert(obj("a"));
        let b = t.insert(obj("b"));
        assert_eq!(t.find("a"), Some(a));
        assert_eq!(t.find("b"), Some(b));
        assert_eq!(t.find("c"), None);
        assert_eq!(&*t.remove(a).key, "a");
        assert_eq!(t.find("a"), None);
        assert_eq!(t.len(), 1);
        let c = t.insert(obj("c"));
        assert_eq!(c, a, "slot reused");
        assert_eq!(t.find("c"), Some(c));
        assert_eq!(t.indices(), vec![c, b]);
    }

    #[test]
    fn lists_keep_order() {
        let mut t = ObjectTable::new();
        let ids: Vec<u32> = (0..4).map(|i| t.insert(obj(&format!("k{i}")))).collect();
        for &i in &ids {
            t.push_tail(ListId::Lru, i);
        }
        t.push_tail(ListId::Lru, ids[0]); // touch
        t.push_tail(ListId::Soft, ids[2]);
        let mut order = Vec::new();
        let mut cur = t.head(ListId::Lru);
        while let Some(i) = cur {
            order.push(i);
            cur = t.next_of(i);
        }
        assert_eq!(order, vec![ids[1], ids[3], ids[0]]);
        assert_eq!(t.list_len(ListId::Lru), 3);
        assert_eq!(t.head(ListId::Soft), Some(ids[2]));
        t.remove(ids[3]);
        assert_eq!(t.next_of(ids[1]), Some(ids[0]));
        assert_eq!(t.list_len(ListId::Lru), 2);
    }
}
