//! Mounted segments: their specs, owners, allocators, and the cluster-wide byte totals.
//!
//! Segments live in slots that are never reused, so a replica's `u32` slot index can never
//! point at a different segment than the one it was allocated in. A [`SegmentId`] is the slot
//! index plus a base derived from the master epoch, so ids handed out by a restarted master do
//! not collide with ids clients may still cache from its predecessor.

use super::allocator::RangeAllocator;
use hashbrown::HashMap;
use tidepool_common::{ClientId, SegmentId};
use tidepool_proto::types::{SegmentSpec, SegmentView};

/// One mounted segment.
#[derive(Debug)]
pub struct Segment {
    /// Its id.
    pub id: SegmentId,
    /// Its owner.
    pub client: ClientId,
    /// How to reach it.
    pub spec: SegmentSpec,
    /// Host part of the segment name (before the last ':'), for same-node placement.
    pub host: Box<str>,
    /// Free space.
    pub alloc: RangeAllocator,
}

impl Segment {
    /// What `describe_segments` reports.
    pub fn view(&self) -> SegmentView {
        SegmentView {
            id: self.id,
            client: self.client,
            spec: self.spec.clone(),
            used: self.alloc.used(),
        }
    }
}

/// Host part of a segment name: everything before the last ':' (`"[::1]:123"` -> `"[::1]"`).
pub fn host_of(name: &str) -> &str {
    name.rfind(':').map_or(name, |i| &name[..i])
}

/// All segments.
pub struct SegmentTable {
    id_base: u64,
    slots: Vec<Option<Segment>>,
    by_name: HashMap<String, u32>,
    /// Live slot indices, for placement walks.
    live: Vec<u32>,
    used: u64,
    capacity: u64,
}

impl SegmentTable {
    /// An empty table whose ids derive from `epoch`.
    pub fn new(epoch: u64) -> Self {
        SegmentTable {
            id_base: (epoch & 0xFFFF_FFFF) << 32,
            slots: Vec::new(),
            by_name: HashMap::new(),
            live: Vec::new(),
            used: 0,
            capacity: 0,
        }
    }

    /// Slot index of a live segment id.
    pub fn index_of(&self, id: SegmentId) -> Option<u32> {
        let i = id.0.checked_sub(self.id_base)?.checked_sub(1)?;
        let i = u32::try_from(i).ok()?;
        self.slots.get(i as usize)?.as_ref().map(|_| i)
    }

    /// Slot index of the live segment named `name`.
    pub fn index_by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The live segment in slot `idx`.
    pub fn get(&self, idx: u32) -> Option<&Segment> {
        self.slots.get(idx as usize)?.as_ref()
    }

    /// Live slot indices.
    pub fn live(&self) -> &[u32] {
        &self.live
    }

    /// Reserved bytes over all live segments.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Capacity over all live segments.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Adds a segment; the caller has resolved name conflicts.
    pub fn mount(&mut self, client: ClientId, spec: SegmentSpec) -> (SegmentId, u32) {
        let idx = self.slots.len() as u32;
        let id = SegmentId(self.id_base + idx as u64 + 1);
        let alloc = RangeAllocator::new(spec.base_addr, spec.size);
        self.capacity += alloc.capacity();
        self.by_name.insert(spec.name.clone(), idx);
        let host = host_of(&spec.name).into();
        self.slots.push(Some(Segment {
            id,
            client,
            spec,
            host,
            alloc,
        }));
        self.live.push(idx);
        (id, idx)
    }

    /// Removes a segment; its replicas must then be dropped by the caller (without freeing).
    pub fn unmount(&mut self, idx: u32) -> Option<Segment> {
        let seg = self.slots.get_mut(idx as usize)?.take()?;
        if self.by_name.get(&seg.spec.name) == Some(&idx) {
            self.by_name.remove(&seg.spec.name);
        }
        if let Some(p) = self.live.iter().position(|&i| i == idx) {
            self.live.swap_remove(p);
        }
        self.capacity -= seg.alloc.capacity();
        self.used -= seg.alloc.used();
        Some(seg)
    }

    /// Reserves `size` bytes in segment `idx`.
    pub fn alloc(&mut self, idx: u32, size: u64) -> Option<u64> {
        let seg = self.slots.get_mut(idx as usize)?.as_mut()?;
        let before = seg.alloc.used();
        let off = seg.alloc.alloc(size)?;
        self.used += seg.alloc.used() - before;
        Some(off)
    }

    /// Reserves exactly `[off, off + size)` in segment `idx` (a restored replica).
    pub fn reserve_at(&mut self, idx: u32, off: u64, size: u64) -> bool {
        let Some(Some(seg)) = self.slots.get_mut(idx as usize) else {
            return false;
        };
        let before = seg.alloc.used();
        if !seg.alloc.reserve_at(off, size) {
            return false;
        }
        self.used += seg.alloc.used() - before;
        true
    }

    /// Returns a range; ranges of unmounted segments are ignored (their memory left with them).
    pub fn free(&mut self, idx: u32, off: u64, size: u64) {
        if let Some(Some(seg)) = self.slots.get_mut(idx as usize) {
            let before = seg.alloc.used();
            seg.alloc.free(off, size);
            self.used -= before - seg.alloc.used();
        }
    }

    /// Views of every live segment.
    pub fn views(&self) -> Vec<SegmentView> {
        self.live
            .iter()
            .filter_map(|&i| self.get(i))
            .map(Segment::view)
            .collect()
    }
}
