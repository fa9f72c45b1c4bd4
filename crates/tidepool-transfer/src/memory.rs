//! Memory this engine exposes to peers: segments it owns, buffers the caller registered, and
//! the registry that every remote range is checked against before any byte is touched (W14).
//!
//! All raw-pointer-to-slice conversions of the crate live in the small helpers at the bottom
//! ([`slice_of`], [`slice_of_mut`]); callers reach them only with ranges that
//! [`Registry::resolve`] (or a peer mapping's bounds check) has validated.

use crate::sealring::{Corrupt, RingConsumer};
use crate::shmem::SharedMemory;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tidepool_common::{Error, ErrorCode, ObjectId, Result};
use tidepool_proto::data::{Dropped, Seal};

/// A memfd-backed, `MAP_SHARED` memory segment owned by this engine.
///
/// It is registered for remote access while mounted; the mapping stays alive as long as any
/// `Arc` to it does (including requests in flight), so unregistering never unmaps memory a
/// request is still copying into.
pub struct LocalSegment {
    /// The sealed memfd mapping; its fd is handed to same-host peers over the shm socket.
    mem: SharedMemory,
    /// Lowest master epoch whose writes are still accepted (contract §8).
    epoch: AtomicU64,
    /// Sealed replicas, and the seal rings of same-host writers not yet moved into them. A
    /// mutex is enough: seals are rare compared to bytes moved and never held across an await.
    dir: Mutex<Directory>,
}

/// What the owner knows of the replicas in one segment (contract §8).
#[derive(Debug, Default)]
struct Directory {
    /// Sealed replicas by address; entries never overlap.
    entries: BTreeMap<u64, Seal>,
    /// Rings of same-host writers (`sealring`); their records count as sealed, and every
    /// reader of `entries` drains them first.
    rings: Vec<Arc<RingConsumer>>,
}

impl Directory {
    /// Records `seal`, dropping every entry whose range overlaps it, unless one of those holds
    /// a newer object: the master reallocates a range only after the object in it was freed,
    /// so a seal older than what the directory holds there is a late one (a writer whose put
    /// was revoked, or a ring drained after another) and must not replace it. Returns whether
    /// `seal` was recorded.
    fn insert(&mut self, seal: Seal) -> bool {
        let start = seal.addr;
        // Zero-length replicas still occupy their address for overlap purposes.
        let end = seal.addr.saturating_add(seal.len.max(1));
        let mut doomed = Vec::new();
        // Entries never overlap each other, so walking down from `end` can stop at the first
        // entry that ends at or before `start`.
        for (&a, e) in self.entries.range(..end).rev() {
            if a.saturating_add(e.len.max(1)) > start {
                if e.object_id > seal.object_id {
                    return false;
                }
                doomed.push(a);
            } else {
                break;
            }
        }
        for a in doomed {
            self.entries.remove(&a);
        }
        self.entries.insert(seal.addr, seal);
        true
    }

    /// True when an entry overlapping `seal`'s range holds a newer object (`seal` is late).
    fn newer_over(&self, seal: &Seal) -> bool {
        let start = seal.addr;
        let end = seal.addr.saturating_add(seal.len.max(1));
        for (&a, e) in self.entries.range(..end).rev() {
            if a.saturating_add(e.len.max(1)) <= start {
                break;
            }
            if e.object_id > seal.object_id {
                return true;
            }
        }
        false
    }

    /// Moves every ring's records into `entries`, checking each as a `Seal` request would be
    /// (inside the segment `[base, base+size)`, epoch not fenced). A ring that breaks its
    /// framing is dropped: its writer sees it closed and seals by request from then on.
    fn drain(&mut self, base: u64, size: u64, fence: u64) {
        if self.rings.is_empty() {
            return;
        }
        let rings = std::mem::take(&mut self.rings);
        let mut kept = Vec::with_capacity(rings.len());
        let mut refused = 0u64;
        for ring in rings {
            let mut got = Vec::new();
            let r = ring.drain(|seal, epoch| got.push((seal, epoch)));
            for (seal, epoch) in got {
                let inside = seal.addr >= base
                    && seal
                        .addr
                        .checked_add(seal.len)
                        .is_some_and(|end| end <= base + size);
                if inside && epoch >= fence {
                    self.insert(seal);
                } else {
                    refused += 1;
                }
            }
            match r {
                Ok(skipped) => {
                    refused += skipped;
                    kept.push(ring);
                }
                Err(Corrupt(why)) => {
                    tracing::warn!(%why, "dropping a seal ring");
                    ring.close();
                }
            }
        }
        self.rings = kept;
        if refused > 0 {
            tracing::warn!(
                refused,
                "seal ring records refused (outside the segment, fenced epoch or bad key)"
            );
        }
    }

    /// Drops the entry at `addr` if it holds `object`; a newer object there (the drop is late)
    /// or no entry at all is left as it is.
    fn forget(&mut self, addr: u64, object: ObjectId) {
        if self
            .entries
            .get(&addr)
            .is_some_and(|e| e.object_id == object)
        {
            self.entries.remove(&addr);
        }
    }

    fn holds(&self, object: ObjectId, addr: u64, len: u64) -> bool {
        match self.entries.range(..=addr).next_back() {
            Some((&a, e)) => {
                e.object_id == object
                    && !e.is_pending()
                    && addr.saturating_add(len) <= a.saturating_add(e.len)
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for LocalSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSegment")
            .field("base", &format_args!("{:#x}", self.base_addr()))
            .field("size", &self.size())
            .finish()
    }
}

impl LocalSegment {
    /// Creates a segment of `size` bytes (rounded up to a page).
    pub(crate) fn create(size: u64, prefault: bool) -> Result<Self> {
        if size == 0 {
            return Err(Error::invalid("segment size must be positive: size=0"));
        }
        Ok(Self {
            mem: SharedMemory::create("tidepool-segment", size, prefault)?,
            epoch: AtomicU64::new(0),
            dir: Mutex::new(Directory::default()),
        })
    }

    /// Address of the first byte.
    pub fn base_addr(&self) -> u64 {
        self.mem.addr()
    }

    /// Size in bytes (a multiple of the page size).
    pub fn size(&self) -> u64 {
        self.mem.size()
    }

    /// Refuses, from now on, writes and seals that carry a master epoch older than `epoch`.
    pub fn set_epoch(&self, epoch: u64) {
        let dir = self.dir.lock();
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
        // Under the lock, so a ring attached concurrently starts from the new epoch.
        for ring in &dir.rings {
            ring.set_epoch(epoch);
        }
    }

    /// The current fencing epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn lock_drained(&self) -> parking_lot::MutexGuard<'_, Directory> {
        let mut dir = self.dir.lock();
        dir.drain(self.base_addr(), self.size(), self.epoch());
        dir
    }

    /// The sealed replicas, ordered by address (claims whose bytes have not all landed are
    /// not replicas yet, and are left out).
    pub fn directory(&self) -> Vec<Seal> {
        self.lock_drained()
            .entries
            .values()
            .filter(|s| !s.is_pending())
            .cloned()
            .collect()
    }

    /// Records `seal` (see [`Directory::insert`]), after every ring record written before it.
    #[cfg(test)]
    pub(crate) fn record(&self, seal: &Seal) {
        self.lock_drained().insert(seal.clone());
    }

    /// Records every seal, under one lock.
    pub(crate) fn record_all(&self, seals: impl Iterator<Item = Seal>) {
        let mut dir = self.lock_drained();
        for s in seals {
            dir.insert(s);
        }
    }

    /// The first of `seals` whose range a newer object's entry overlaps (a late write).
    pub(crate) fn first_late<'a>(&self, seals: impl Iterator<Item = &'a Seal>) -> Option<&'a Seal> {
        let dir = self.lock_drained();
        seals.into_iter().find(|s| dir.newer_over(s))
    }

    /// Forgets every entry (rings included): the master dropped this segment's objects (its
    /// owner was declared dead), so none may come back at the next mount.
    pub fn clear_directory(&self) {
        self.lock_drained().entries.clear();
    }

    /// Forgets the entries of removed objects (`DataRequest::Drop`), after every ring record
    /// written before: a seal still in a ring would otherwise land after its drop.
    pub(crate) fn forget(&self, drops: &[Dropped]) {
        let mut dir = self.lock_drained();
        for d in drops {
            dir.forget(d.addr, d.object_id);
        }
    }

    /// True when the directory holds `object` on a replica containing `[addr, addr+len)`.
    pub(crate) fn holds(&self, object: ObjectId, addr: u64, len: u64) -> bool {
        // Rings first, both ways: a writer may have committed a replica whose seal is still
        // there, or claimed the range for a newer object before copying into it.
        self.lock_drained().holds(object, addr, len)
    }

    /// A new seal ring for one same-host writer (its fd goes to the writer).
    pub(crate) fn attach_ring(&self) -> Result<Arc<RingConsumer>> {
        let mut dir = self.dir.lock();
        let ring = Arc::new(RingConsumer::create(self.epoch())?);
        dir.rings.push(ring.clone());
        Ok(ring)
    }

    /// Drains and forgets `ring` (its writer disconnected: nothing more will arrive in it).
    pub(crate) fn detach_ring(&self, ring: &Arc<RingConsumer>) {
        let mut dir = self.lock_drained();
        dir.rings.retain(|r| !Arc::ptr_eq(r, ring));
    }

    /// Moves pending ring records into the directory (the owner's timer), so rings never fill
    /// while their writers are busy and the directory lags them by little.
    pub(crate) fn drain_rings(&self) {
        let mut dir = self.dir.lock();
        if dir.rings.iter().any(|r| r.pending()) {
            dir.drain(self.base_addr(), self.size(), self.epoch());
        }
    }

    /// The segment is unmounted: its writers' rings are drained and closed (they seal by
    /// request from now on, and are refused).
    pub(crate) fn retire(&self) {
        let mut dir = self.lock_drained();
        for ring in dir.rings.drain(..) {
            ring.close();
        }
    }

    /// The memfd, for handing to a same-host peer.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.mem.fd()
    }
}

/// What kind of memory a region is. Only host memory today; device memory (contract §1.9)
/// adds a variant, and the transports refuse kinds they cannot move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryKind {
    /// Ordinary CPU-addressable memory.
    Host,
}

/// Who owns a region's memory.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// A segment of this engine; holding the `Arc` keeps it mapped.
    Segment(Arc<LocalSegment>),
    /// A caller buffer from `register_memory`; the caller keeps it alive until it unregisters.
    External,
}

/// One registered region. A future RDMA transport hangs its memory-region keys here.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub base: u64,
    pub len: u64,
    #[allow(dead_code)]
    pub kind: MemoryKind,
    pub owner: Owner,
}

impl Region {
    /// The segment behind this region, if it is one.
    pub(crate) fn segment(&self) -> Option<&Arc<LocalSegment>> {
        match &self.owner {
            Owner::Segment(s) => Some(s),
            Owner::External => None,
        }
    }
}

/// Every region peers may address, keyed by base address. Regions never overlap.
/// A read-mostly lock: lookups happen per request, registrations are rare.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: RwLock<BTreeMap<u64, Region>>,
}

impl Registry {
    /// Adds a region; overlap with an existing one is `InvalidParams`.
    pub(crate) fn insert(&self, region: Region) -> Result<()> {
        if region.len == 0 {
            return Err(Error::invalid("cannot register an empty region: len=0"));
        }
        let end = region.base.checked_add(region.len).ok_or_else(|| {
            Error::invalid(format!(
                "region wraps the address space: addr={:#x}",
                region.base
            ))
        })?;
        let mut map = self.map.write();
        if let Some((_, prev)) = map.range(..end).next_back()
            && prev.base + prev.len > region.base
        {
            return Err(Error::invalid(format!(
                "region overlaps a registered one: addr={:#x} len={} existing={:#x}+{}",
                region.base, region.len, prev.base, prev.len
            )));
        }
        map.insert(region.base, region);
        Ok(())
    }

    /// Removes the region starting exactly at `base` if `pred` accepts it.
    pub(crate) fn remove_if(
        &self,
        base: u64,
        pred: impl FnOnce(&Region) -> bool,
    ) -> Option<Region> {
        let mut map = self.map.write();
        if map.get(&base).is_some_and(pred) {
            map.remove(&base)
        } else {
            None
        }
    }

    /// The segment starting exactly at `base`, if this engine owns one there.
    pub(crate) fn segment_at(&self, base: u64) -> Option<Arc<LocalSegment>> {
        self.map
            .read()
            .get(&base)
            .and_then(|r| r.segment().cloned())
    }

    /// Every segment registered now.
    pub(crate) fn segments(&self) -> Vec<Arc<LocalSegment>> {
        self.map
            .read()
            .values()
            .filter_map(|r| r.segment().cloned())
            .collect()
    }

    /// The region wholly containing `[addr, addr+len)`, or `InvalidParams`.
    pub(crate) fn resolve(&self, addr: u64, len: u64) -> Result<Region> {
        let map = self.map.read();
        let end = addr.checked_add(len);
        if let (Some(end), Some((_, r))) = (end, map.range(..=addr).next_back())
            && end <= r.base + r.len
            && (addr < r.base + r.len || len == 0)
        {
            return Ok(r.clone());
        }
        Err(Error::new(
            ErrorCode::InvalidParams,
            format!("range outside registered memory: addr={addr:#x} len={len}"),
        ))
    }
}

/// Borrows `len` bytes at `addr` for reading.
///
/// # Safety
/// `[addr, addr+len)` must lie inside memory that stays mapped for `'a` (a region resolved by
/// [`Registry::resolve`] whose owner is held, a caller-registered buffer, or a live peer
/// mapping). Concurrent writers of the same bytes are excluded by the store's protocol
/// (allocation hands each range to one writer; leases keep readers off ranges being reused),
/// not by Rust; a racing peer can at worst produce torn bytes, never touch other memory.
pub(crate) unsafe fn slice_of<'a>(addr: u64, len: u64) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees the range is mapped and readable for 'a.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }
}

/// Borrows `len` bytes at `addr` for writing.
///
/// # Safety
/// As [`slice_of`], and the memory must be writable.
pub(crate) unsafe fn slice_of_mut<'a>(addr: u64, len: u64) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller guarantees the range is mapped and writable for 'a.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(seq: u64, addr: u64, len: u64) -> Seal {
        Seal {
            key: format!("k{seq}"),
            object_id: ObjectId { epoch: 1, seq },
            addr,
            len,
            flags: 0,
        }
    }

    #[test]
    fn directory_replaces_only_overlapping_entries() {
        let seg = LocalSegment::create(1 << 16, false).unwrap();
        let b = seg.base_addr();
        seg.record(&seal(1, b, 100));
        seg.record(&seal(2, b + 100, 100));
        seg.record(&seal(3, b + 200, 100));
        assert_eq!(seg.directory().len(), 3);
        // Overlaps the tail of 1 and all of 2; 3 (adjacent) stays.
        seg.record(&seal(4, b + 50, 150));
        let d: Vec<u64> = seg.directory().iter().map(|s| s.object_id.seq).collect();
        assert_eq!(d, vec![4, 3]);
        assert!(seg.holds(ObjectId { epoch: 1, seq: 4 }, b + 60, 10));
        assert!(!seg.holds(ObjectId { epoch: 1, seq: 4 }, b + 60, 200));
        assert!(!seg.holds(ObjectId { epoch: 1, seq: 1 }, b, 10));
        // Same address, new version.
        seg.record(&seal(5, b + 200, 10));
        let d: Vec<u64> = seg.directory().iter().map(|s| s.object_id.seq).collect();
        assert_eq!(d, vec![4, 5]);
        // A late seal of an older object (a revoked put, a ring drained after another) never
        // displaces a newer one; where nothing newer overlaps it is recorded.
        seg.record(&seal(2, b + 100, 200));
        seg.record(&seal(3, b + 1000, 10));
        let d: Vec<u64> = seg.directory().iter().map(|s| s.object_id.seq).collect();
        assert_eq!(d, vec![4, 5, 3]);
    }

    #[test]
    fn registry_bounds_and_overlaps() {
        let reg = Registry::default();
        let r = |base, len| Region {
            base,
            len,
            kind: MemoryKind::Host,
            owner: Owner::External,
        };
        reg.insert(r(1000, 100)).unwrap();
        reg.insert(r(1100, 100)).unwrap();
        assert!(reg.insert(r(950, 51)).is_err());
        assert!(reg.insert(r(1199, 5)).is_err());
        assert!(reg.insert(r(0, 0)).is_err());
        assert!(reg.insert(r(u64::MAX - 1, 5)).is_err());
        reg.insert(r(900, 100)).unwrap();
        assert!(reg.resolve(1000, 100).is_ok());
        assert!(reg.resolve(1050, 100).is_err(), "straddles two regions");
        assert!(reg.resolve(1199, 2).is_err());
        assert!(reg.resolve(u64::MAX, 2).is_err());
        assert!(reg.resolve(899, 1).is_err());
        assert!(reg.remove_if(1000, |_| true).is_some());
        assert!(reg.resolve(1000, 1).is_err());
    }
}
