//! Eviction (contract §3.6, W3, W4): byte-based, approximate-LRU, never touching what must stay.
//!
//! Order (Mooncake's, by lease deadline): an object ranks by its commit time until it is
//! read, then by its lease deadline (last grant + TTL), so a read counts as a use lasting until
//! its lease ends and read data outlives data only written at the same time. Two lists keep
//! that order in O(1) per operation: `Lru` (never read, by commit time) and `Read` (by lease
//! deadline); a walk merges them, coldest head first. Everything leased sits at the warm end
//! of `Read`, so a walk stops there instead of stepping over it. A walk that meets a live soft
//! pin parks the object on the `Soft` list, so later walks do not pay for it again; a read
//! moves it back. Phases: `Lru`, then parked
//! objects whose pin has expired, then (only if `allow_evict_soft_pinned_objects`) any parked
//! object: soft-pinned data goes only when nothing else is evictable. Hard-pinned and in-flight
//! objects are on neither list; leased objects are skipped (a bounded number per walk, since a
//! leased object near the cold end means everything behind it was used within the lease TTL).
//!
//! - Proactive (in `tick`): above `eviction_high_watermark_ratio` evict until used bytes are
//!   at most `(hwm - eviction_ratio) x capacity`, plus any bytes owed after an allocation
//!   failure. Cost is proportional to what is evicted (plus bounded skips).
//! - Reactive (in `put_start`): evict until some segment can hold the request contiguously,
//!   preferring, among the coldest few candidates, one whose removal makes such a hole.

use super::MasterState;
use super::objects::ListId;

/// Leased objects a proactive walk may step over before giving up until the next tick.
const MAX_SKIPS: usize = 65_536;
/// Leased objects the reactive window may step over (it is rebuilt per eviction).
const MAX_WINDOW_SKIPS: usize = 1024;
/// Coldest candidates examined per reactive eviction.
const REACTIVE_WINDOW: usize = 32;
/// Most objects one reactive eviction may remove (bounds the put's latency).
const REACTIVE_MAX_EVICTIONS: usize = 65_536;

/// Which objects a walk may evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Unpinned objects on the LRU list.
    Lru,
    /// Parked objects whose soft pin has expired.
    SoftExpired,
    /// Any parked object (last resort).
    SoftAny,
}

/// Walks the lists of a phase from the cold end: for `Lru` the merge of `Lru` (by commit
/// time) and `Read` (by lease deadline), else the `Soft` list. Each step reads the successor
/// before the caller acts on the object, so evicting or parking it is safe.
struct ColdWalk {
    /// Next object of `Lru` (or of `Soft`).
    a: Option<u32>,
    /// Next object of `Read`.
    b: Option<u32>,
}

impl ColdWalk {
    fn new(st: &MasterState, phase: Phase) -> Self {
        if phase == Phase::Lru {
            ColdWalk {
                a: st.objects.head(ListId::Lru),
                b: st.objects.head(ListId::Read),
            }
        } else {
            ColdWalk {
                a: st.objects.head(ListId::Soft),
                b: None,
            }
        }
    }

    fn next(&mut self, st: &MasterState, now: u64) -> Option<u32> {
        // `Read` is sorted by deadline: once its head is leased, so is the rest of it.
        if let Some(j) = self.b
            && st.objects.get(j).lease_deadline > now
        {
            self.b = None;
        }
        let take_b = match (self.a, self.b) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(i), Some(j)) => st.objects.get(j).lease_deadline < st.objects.get(i).stamp_ms,
        };
        let cur = if take_b { &mut self.b } else { &mut self.a };
        let i = (*cur)?;
        *cur = st.objects.next_of(i);
        Some(i)
    }
}

/// What a walk does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Evict,
    Skip,
    Parked,
}

impl MasterState {
    fn phases(&self) -> &'static [Phase] {
        if self.settings.allow_evict_soft_pinned_objects {
            &[Phase::Lru, Phase::SoftExpired, Phase::SoftAny]
        } else {
            &[Phase::Lru, Phase::SoftExpired]
        }
    }

    /// Decides about object `idx` in `phase`; parks live soft pins met in the `Lru` phase and
    /// clears pins found expired.
    fn classify(&mut self, idx: u32, now: u64, phase: Phase) -> Verdict {
        let o = self.objects.get_mut(idx);
        if o.in_flight || o.hard_pin || o.lease_deadline > now {
            return Verdict::Skip;
        }
        if o.soft_pin != 0 {
            if o.soft_pin <= now {
                o.soft_pin = 0;
                self.soft_pinned = self.soft_pinned.saturating_sub(1);
            } else {
                match phase {
                    Phase::Lru => {
                        self.objects.push_tail(ListId::Soft, idx);
                        return Verdict::Parked;
                    }
                    Phase::SoftExpired => return Verdict::Skip,
                    Phase::SoftAny => {}
                }
            }
        }
        Verdict::Evict
    }

    /// Evicts object `idx`, counting it.
    fn evict_one(&mut self, idx: u32) {
        let before = self.segments.used();
        self.drop_object(idx);
        self.counters.evicted_keys += 1;
        self.counters.evicted_bytes += before - self.segments.used();
    }

    /// Walks `phase`'s list from the cold end, evicting until used bytes are at most
    /// `target_used`; true if reached.
    fn evict_walk(&mut self, now: u64, phase: Phase, target_used: u64) -> bool {
        let mut walk = ColdWalk::new(self, phase);
        let mut skips = 0;
        while self.segments.used() > target_used {
            let Some(i) = walk.next(self, now) else {
                break;
            };
            match self.classify(i, now, phase) {
                Verdict::Evict => self.evict_one(i),
                Verdict::Parked => {}
                Verdict::Skip => {
                    skips += 1;
                    if skips > MAX_SKIPS {
                        break;
                    }
                }
            }
        }
        self.segments.used() <= target_used
    }

    /// Proactive eviction and the bytes owed after allocation failures; called by `tick`.
    pub(super) fn evict_in_tick(&mut self, now: u64) {
        let cap = self.segments.capacity();
        let used = self.segments.used();
        let owed = std::mem::take(&mut self.pending_evict_bytes);
        if cap == 0 {
            return;
        }
        let hwm = self.settings.eviction_high_watermark_ratio;
        let mut target = u64::MAX;
        if hwm < 1.0 && used as f64 > hwm * cap as f64 {
            let ratio = self.settings.eviction_ratio;
            target = ((hwm - ratio).max(0.0) * cap as f64) as u64;
        }
        if owed > 0 {
            target = target.min(used.saturating_sub(owed));
        }
        if used <= target {
            return;
        }
        self.counters.eviction_attempts += 1;
        for &phase in self.phases() {
            if self.evict_walk(now, phase, target) {
                break;
            }
        }
        if self.segments.used() < used {
            self.counters.eviction_successes += 1;
        }
    }

    /// Whether evicting object `idx` would open a hole that fits `size` bytes.
    fn frees_room(&self, idx: u32, size: u64) -> bool {
        let o = self.objects.get(idx);
        o.replicas.as_slice().iter().any(|r| {
            self.segments
                .get(r.seg)
                .is_some_and(|s| s.alloc.fits_after_free(r.off, o.size, size))
        })
    }

    /// Reactive eviction for a put of `size` bytes that found no room: evicts (bounded) until
    /// some segment can hold it contiguously; true if it can.
    pub(super) fn reactive_evict(&mut self, now: u64, size: u64) -> bool {
        // Pointless if no segment could hold the object even empty.
        if !self.segments.live().iter().any(|&i| {
            self.segments
                .get(i)
                .is_some_and(|s| s.alloc.could_ever_fit(size))
        }) {
            return false;
        }
        self.counters.eviction_attempts += 1;
        let before = self.segments.used();
        let mut evictions = 0;
        let mut ok = false;
        let mut window = Vec::with_capacity(REACTIVE_WINDOW);
        'phases: for &phase in self.phases() {
            while evictions < REACTIVE_MAX_EVICTIONS {
                window.clear();
                let mut walk = ColdWalk::new(self, phase);
                let mut skips = 0;
                while window.len() < REACTIVE_WINDOW && skips <= MAX_WINDOW_SKIPS {
                    let Some(i) = walk.next(self, now) else {
                        break;
                    };
                    match self.classify(i, now, phase) {
                        Verdict::Evict => window.push(i),
                        Verdict::Parked => {}
                        Verdict::Skip => skips += 1,
                    }
                }
                let Some(&coldest) = window.first() else {
                    continue 'phases;
                };
                let pick = window
                    .iter()
                    .copied()
                    .find(|&i| self.frees_room(i, size))
                    .unwrap_or(coldest);
                let segs: Vec<u32> = self
                    .objects
                    .get(pick)
                    .replicas
                    .as_slice()
                    .iter()
                    .map(|r| r.seg)
                    .collect();
                self.evict_one(pick);
                evictions += 1;
                if segs
                    .iter()
                    .any(|&s| self.segments.get(s).is_some_and(|s| s.alloc.can_fit(size)))
                {
                    ok = true;
                    break 'phases;
                }
            }
            break;
        }
        if self.segments.used() < before {
            self.counters.eviction_successes += 1;
        }
        ok
    }
}
