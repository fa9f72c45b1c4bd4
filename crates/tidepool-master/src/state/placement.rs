//! Replica placement (contract §3.8): which segments receive the replicas of a new object.
//!
//! Order: preferred segments (each that has room takes one replica), then same-node segments
//! when asked (`prefer_same_node` or strategy `LocalFirst`), then the strategy (`Random`: walk
//! from a random start; `FreeRatioFirst`: sample ~6x the remaining count, most free first, then
//! the random walk). Replicas always land on distinct segments; fewer than asked is a success
//! (best effort) that the caller counts.

use super::objects::Rep;
use super::segments::SegmentTable;
use crate::settings::AllocationStrategy;
use tidepool_proto::types::ReplicateConfig;

/// Most segments one random walk tries (Mooncake's bound).
const MAX_WALK: usize = 100;
/// Segments sampled per wanted replica by `FreeRatioFirst`.
const SAMPLE_FACTOR: usize = 6;

/// A tiny xorshift generator: placement needs cheap, seedable randomness, not quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The writer, for same-node placement.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// Host part of the writer's name.
    pub host: &'a str,
    /// Writer's host id.
    pub host_id: &'a str,
}

/// Allocates up to `cfg.replica_num` ranges of `size` bytes on distinct segments.
pub fn place(
    segs: &mut SegmentTable,
    rng: &mut Rng,
    strategy: AllocationStrategy,
    cfg: &ReplicateConfig,
    size: u64,
    writer: Writer<'_>,
) -> Vec<Rep> {
    let want = cfg.replica_num as usize;
    let mut out: Vec<Rep> = Vec::with_capacity(want.min(8));
    let try_seg = |segs: &mut SegmentTable, out: &mut Vec<Rep>, idx: u32| {
        if out.len() < want
            && !out.iter().any(|r| r.seg == idx)
            && let Some(off) = segs.alloc(idx, size)
        {
            out.push(Rep { seg: idx, off });
        }
    };
    for name in &cfg.preferred_segments {
        if out.len() >= want {
            return out;
        }
        if let Some(idx) = segs.index_by_name(name) {
            try_seg(segs, &mut out, idx);
        }
    }
    if out.len() >= want {
        return out;
    }
    if cfg.prefer_same_node || strategy == AllocationStrategy::LocalFirst {
        let local: Vec<u32> = segs
            .live()
            .iter()
            .copied()
            .filter(|&i| {
                segs.get(i).is_some_and(|s| {
                    (!writer.host.is_empty() && &*s.host == writer.host)
                        || (!writer.host_id.is_empty() && s.spec.host_id == writer.host_id)
                })
            })
            .collect();
        for idx in local {
            try_seg(segs, &mut out, idx);
        }
    }
    let n = segs.live().len();
    if out.len() >= want || n == 0 {
        return out;
    }
    if strategy == AllocationStrategy::FreeRatioFirst {
        let sample = ((want - out.len()) * SAMPLE_FACTOR).min(n);
        let start = rng.below(n);
        let mut cand: Vec<(f64, u32)> = (0..sample)
            .filter_map(|k| {
                let idx = segs.live()[(start + k) % n];
                let s = segs.get(idx)?;
                let cap = s.alloc.capacity().max(1) as f64;
                Some((s.alloc.free_bytes() as f64 / cap, idx))
            })
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, idx) in cand {
            try_seg(segs, &mut out, idx);
        }
        if out.len() >= want {
            return out;
        }
    }
    let start = rng.below(n);
    for k in 0..n.min(MAX_WALK) {
        if out.len() >= want {
            break;
        }
        let idx = segs.live()[(start + k) % n];
        try_seg(segs, &mut out, idx);
    }
    out
}
