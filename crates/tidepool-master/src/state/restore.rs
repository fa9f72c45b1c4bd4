//! Rebuilding the index from a segment owner's directory (contract §8, W5).
//!
//! A master that restarted (or lost a client) knows nothing of the bytes still in live
//! segments. Each owner keeps a directory of the replicas it sealed; when it mounts again it
//! sends that directory along (`MountRestore`), and every entry becomes a readable object at
//! its recorded range, with its old object id, so readers and the owner's `expect` checks
//! agree. The mount and the restore happen under one lock, so no new put can be placed over a
//! range before its entry is back.

use super::MasterState;
use super::objects::{ListId, Object, Rep, Replicas};
use tidepool_common::ClientId;
use tidepool_proto::data::Seal;

const SOFT_PIN: u8 = 1;
const HARD_PIN: u8 = 2;

impl MasterState {
    /// Makes the sealed entries `seals` of segment slot `idx` readable objects again; returns
    /// how many replicas came back. An entry is skipped when its key is invalid, its range lies
    /// outside the segment or is taken, or the key already has a newer object; an older object
    /// of the key (from an earlier restore) is replaced.
    pub(super) fn restore_into(&mut self, idx: u32, seals: &[Seal]) -> u64 {
        let Some(s) = self.segments.get(idx) else {
            return 0;
        };
        let (base, size) = (s.spec.base_addr, s.spec.size);
        let now = self.now();
        let mut restored = 0;
        for seal in seals {
            if seal.is_pending() || seal.len == 0 || super::check_key(&seal.key).is_err() {
                continue;
            }
            let Some(off) = seal.addr.checked_sub(base) else {
                continue;
            };
            if off.checked_add(seal.len).is_none_or(|end| end > size) {
                continue;
            }
            if let Some(i) = self.objects.find(&seal.key) {
                let o = self.objects.get(i);
                if o.id > seal.object_id || o.in_flight {
                    continue;
                }
                if o.id == seal.object_id && o.size == seal.len {
                    // Another replica of an object already restored from another segment.
                    if o.replicas.as_slice().iter().any(|r| r.seg == idx)
                        || !self.segments.reserve_at(idx, off, seal.len)
                    {
                        continue;
                    }
                    let mut reps = o.replicas.as_slice().to_vec();
                    reps.push(Rep { seg: idx, off });
                    self.objects.get_mut(i).replicas = Replicas::from_vec(reps);
                    restored += 1;
                    continue;
                }
                if !self.segments.reserve_at(idx, off, seal.len) {
                    continue;
                }
                self.drop_object(i);
            } else if !self.segments.reserve_at(idx, off, seal.len) {
                continue;
            }
            let soft_pin = if seal.flags & SOFT_PIN != 0 {
                now.saturating_add(self.settings.default_kv_soft_pin_ttl_ms)
            } else {
                0
            };
            let hard = seal.flags & HARD_PIN != 0;
            let idx_obj = self.objects.insert(Object {
                key: seal.key.as_str().into(),
                id: seal.object_id,
                size: seal.len,
                replicas: Replicas::from_vec(vec![Rep { seg: idx, off }]),
                writer: ClientId(0),
                stamp_ms: now,
                lease_deadline: 0,
                soft_pin,
                prev: 0,
                next: 0,
                list: ListId::None,
                hard_pin: hard,
                in_flight: false,
            });
            if soft_pin != 0 {
                self.soft_pinned += 1;
            }
            if !hard {
                self.objects.push_tail(ListId::Lru, idx_obj);
            }
            restored += 1;
        }
        restored
    }
}
