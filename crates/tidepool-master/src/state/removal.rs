//! Removes acknowledged by the segment owners (contract §8).
//!
//! A removed object leaves the index at once, so nothing reads or re-finds it, but its ranges
//! stay reserved as tombstones until every owner dropped the object from its directory: were
//! they freed first, a new object could be sealed there while the owner's directory still named
//! the old one, and a master rebuilt from the directories after a failover would bring back
//! an object that `remove` had already answered 0 for. The RPC layer asks the owners
//! ([`MasterState::drop_orders`]), then returns the ranges ([`MasterState::release`]).

use super::MasterState;
use tidepool_common::{ObjectId, SegmentId};
use tidepool_proto::data::Dropped;

/// One replica of a removed object whose range is still reserved.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    seg: u32,
    off: u64,
    size: u64,
    object: ObjectId,
}

/// The replicas a remove took out of the index; their owners must drop them before
/// [`MasterState::release`] frees the ranges.
#[derive(Debug, Default)]
#[must_use = "a removal's ranges stay reserved until it is released"]
pub struct Removal {
    tombstones: Vec<Tombstone>,
}

impl Removal {
    /// True when no replica awaits its owner.
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
    }
}

/// What one owner must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropOrder {
    /// The segment whose directory holds the entries.
    pub segment: SegmentId,
    /// Its owner's data-plane endpoint.
    pub endpoint: String,
    /// The entries.
    pub drops: Vec<Dropped>,
}

impl MasterState {
    /// Takes object `idx` out of the index, its ranges kept reserved in `out`.
    pub(super) fn bury_object(&mut self, idx: u32, out: &mut Removal) {
        let o = self.unlink_object(idx);
        out.tombstones
            .extend(o.replicas.as_slice().iter().map(|r| Tombstone {
                seg: r.seg,
                off: r.off,
                size: o.size,
                object: o.id,
            }));
    }

    /// The drops `removal` needs, one order per segment still mounted (a segment gone since
    /// took its directory with it).
    pub fn drop_orders(&self, removal: &Removal) -> Vec<DropOrder> {
        let mut orders: Vec<(u32, DropOrder)> = Vec::new();
        for t in &removal.tombstones {
            let Some(s) = self.segments.get(t.seg) else {
                continue;
            };
            let d = Dropped {
                addr: s.spec.base_addr + t.off,
                object_id: t.object,
            };
            match orders.iter_mut().find(|(i, _)| *i == t.seg) {
                Some((_, o)) => o.drops.push(d),
                None => orders.push((
                    t.seg,
                    DropOrder {
                        segment: s.id,
                        endpoint: s.spec.endpoint.clone(),
                        drops: vec![d],
                    },
                )),
            }
        }
        orders.into_iter().map(|(_, o)| o).collect()
    }

    /// True while segment `id` is mounted: an owner declared dead (or unmounted) no longer
    /// needs to acknowledge drops.
    pub fn segment_mounted(&self, id: SegmentId) -> bool {
        self.segments.index_of(id).is_some()
    }

    /// Returns the ranges of `removal` to their segments (ranges of unmounted segments left
    /// with them).
    pub fn release(&mut self, removal: Removal) {
        for t in removal.tombstones {
            self.segments.free(t.seg, t.off, t.size);
        }
    }
}
