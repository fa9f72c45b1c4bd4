//! Range allocator of one segment: hands out contiguous, aligned byte ranges and takes them back.
//!
//! Free space is kept twice: by offset (to coalesce a freed range with its neighbours) and by
//! `(len, offset)` (to find the best-fitting range). Both are B-trees, so every operation is
//! O(log free-ranges) and nothing is stored per allocated range: the object table remembers
//! each replica's offset and size, and the allocated length is recomputed from the size.
//!
//! Alignment (contract §8): a range of 64 KiB or more starts on a 4 KiB boundary of the owner's
//! address space (`base_addr + offset`), so a later SSD tier can write it with O_DIRECT; smaller
//! ranges start on 8 bytes. Lengths are rounded up to 8 bytes so neighbours stay 8-aligned.

use std::collections::{BTreeMap, BTreeSet};

/// Objects at least this large get [`LARGE_ALIGN`]-aligned ranges.
pub const LARGE_THRESHOLD: u64 = 64 * 1024;
/// Alignment of large ranges (a page, for O_DIRECT).
pub const LARGE_ALIGN: u64 = 4096;
/// Alignment of small ranges and granule of every length.
pub const SMALL_ALIGN: u64 = 8;

/// How many best-fit candidates are checked for alignment before falling back to a range that
/// is guaranteed to fit; bounds the work when many ranges are long enough but misaligned.
const BEST_FIT_PROBES: usize = 8;

/// Bytes actually reserved for an object of `size` bytes, or `None` if it overflows.
pub fn alloc_len(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(SMALL_ALIGN)
}

/// Start alignment required for an object of `size` bytes.
pub fn align_for(size: u64) -> u64 {
    if size >= LARGE_THRESHOLD {
        LARGE_ALIGN
    } else {
        SMALL_ALIGN
    }
}

/// The free-space map of one segment.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    /// Owner's address of offset 0; alignment is relative to it.
    base: u64,
    /// Usable bytes.
    capacity: u64,
    /// Bytes currently reserved.
    used: u64,
    /// Free ranges: offset -> length.
    by_off: BTreeMap<u64, u64>,
    /// Free ranges: (length, offset), for best fit.
    by_len: BTreeSet<(u64, u64)>,
}

impl RangeAllocator {
    /// An empty allocator over `[0, capacity)` whose offset 0 sits at address `base`.
    pub fn new(base: u64, capacity: u64) -> Self {
        // Keep the end 8-aligned so every free range has a whole number of granules.
        let capacity = capacity - capacity % SMALL_ALIGN;
        let mut a = Self {
            base,
            capacity,
            used: 0,
            by_off: BTreeMap::new(),
            by_len: BTreeSet::new(),
        };
        if capacity > 0 {
            a.insert_free(0, capacity);
        }
        a
    }

    /// Usable capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Reserved bytes.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Free bytes (possibly fragmented).
    pub fn free_bytes(&self) -> u64 {
        self.capacity - self.used
    }

    /// Number of free ranges (fragmentation indicator, for tests and diagnostics).
    pub fn free_ranges(&self) -> usize {
        self.by_off.len()
    }

    /// Length of the largest free range.
    pub fn largest_free(&self) -> u64 {
        self.by_len.last().map_or(0, |&(l, _)| l)
    }

    fn insert_free(&mut self, off: u64, len: u64) {
        self.by_off.insert(off, len);
        self.by_len.insert((len, off));
    }

    fn remove_free(&mut self, off: u64, len: u64) {
        self.by_off.remove(&off);
        self.by_len.remove(&(len, off));
    }

    /// Where an aligned range of `len` bytes would start inside free range `[foff, foff+flen)`,
    /// if it fits there.
    fn fit_in(&self, foff: u64, flen: u64, len: u64, align: u64) -> Option<u64> {
        let abs = self.base.checked_add(foff)?;
        let aligned = abs.checked_next_multiple_of(align)?;
        let start = foff + (aligned - abs);
        let end = start.checked_add(len)?;
        (end <= foff + flen).then_some(start)
    }

    /// Finds the best-fitting free range for `size` bytes: `(free_off, free_len, start)`.
    fn find(&self, size: u64) -> Option<(u64, u64, u64)> {
        let len = alloc_len(size)?;
        let align = align_for(size);
        for &(flen, foff) in self.by_len.range((len, 0)..).take(BEST_FIT_PROBES) {
            if let Some(start) = self.fit_in(foff, flen, len, align) {
                return Some((foff, flen, start));
            }
        }
        // A free range of at least len + align - 1 bytes always fits, since the padding needed
        // to align its start is below `align`; the smallest such range is the fallback.
        let bound = len.checked_add(align - 1)?;
        let &(flen, foff) = self.by_len.range((bound, 0)..).next()?;
        let start = self.fit_in(foff, flen, len, align)?;
        Some((foff, flen, start))
    }

    /// Whether `size` bytes would fit in this segment if it were empty.
    pub fn could_ever_fit(&self, size: u64) -> bool {
        alloc_len(size).is_some_and(|len| {
            self.fit_in(0, self.capacity, len, align_for(size))
                .is_some()
        })
    }

    /// Whether `size` bytes could be allocated now.
    pub fn can_fit(&self, size: u64) -> bool {
        self.find(size).is_some()
    }

    /// Reserves a range for an object of `size` bytes (size > 0); returns its offset.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        if size == 0 {
            return None;
        }
        let len = alloc_len(size)?;
        let (foff, flen, start) = self.find(size)?;
        self.remove_free(foff, flen);
        if start > foff {
            self.insert_free(foff, start - foff);
        }
        let end = start + len;
        let fend = foff + flen;
        if fend > end {
            self.insert_free(end, fend - end);
        }
        self.used += len;
        Some(start)
    }

    /// Reserves the range of an object of `size` bytes at exactly `off` (a restored replica,
    /// whose place was chosen by an earlier master); `false` when any of it is taken.
    pub fn reserve_at(&mut self, off: u64, size: u64) -> bool {
        let Some(len) = alloc_len(size) else {
            return false;
        };
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        if len == 0 || end > self.capacity {
            return false;
        }
        let Some((fo, fl)) = self.by_off.range(..=off).next_back().map(|(&o, &l)| (o, l)) else {
            return false;
        };
        if fo + fl < end {
            return false;
        }
        self.remove_free(fo, fl);
        if off > fo {
            self.insert_free(fo, off - fo);
        }
        if fo + fl > end {
            self.insert_free(end, fo + fl - end);
        }
        self.used += len;
        true
    }

    /// Returns the range of an object of `size` bytes at `off`. A range that overlaps free
    /// space (a double free, which would be a bug) is refused and `false` returned, so a bug
    /// cannot corrupt the map into handing one range out twice.
    pub fn free(&mut self, off: u64, size: u64) -> bool {
        let Some(len) = alloc_len(size) else {
            return false;
        };
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        if end > self.capacity || len == 0 {
            return false;
        }
        let prev = self.by_off.range(..=off).next_back().map(|(&o, &l)| (o, l));
        if let Some((po, pl)) = prev
            && po + pl > off
        {
            return false;
        }
        let next = self.by_off.range(off..).next().map(|(&o, &l)| (o, l));
        if let Some((no, _)) = next
            && no < end
        {
            return false;
        }
        let (mut start, mut stop) = (off, end);
        if let Some((po, pl)) = prev
            && po + pl == off
        {
            self.remove_free(po, pl);
            start = po;
        }
        if let Some((no, nl)) = next
            && no == end
        {
            self.remove_free(no, nl);
            stop = no + nl;
        }
        self.insert_free(start, stop - start);
        self.used -= len;
        true
    }

    /// Whether `req_size` bytes would fit in the free range that freeing the `size`-byte object
    /// at `off` would create (merged with its free neighbours). Used by reactive eviction to
    /// prefer victims whose removal makes room for the request.
    pub fn fits_after_free(&self, off: u64, size: u64, req_size: u64) -> bool {
        let (Some(len), Some(req_len)) = (alloc_len(size), alloc_len(req_size)) else {
            return false;
        };
        let mut start = off;
        let mut stop = off + len;
        if let Some((&po, &pl)) = self.by_off.range(..off).next_back()
            && po + pl == off
        {
            start = po;
        }
        if let Some(&nl) = self.by_off.get(&stop) {
            stop += nl;
        }
        self.fit_in(start, stop - start, req_len, align_for(req_size))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesce() {
        let mut a = RangeAllocator::new(0, 1024);
        let x = a.alloc(100).unwrap();
        let y = a.alloc(100).unwrap();
        let z = a.alloc(100).unwrap();
        assert_eq!((x, y, z), (0, 104, 208));
        assert_eq!(a.used(), 312);
        assert!(a.free(y, 100));
        assert_eq!(a.free_ranges(), 2);
        assert!(a.free(x, 100));
        assert_eq!(a.free_ranges(), 2, "x and y coalesced");
        assert!(a.free(z, 100));
        assert_eq!(a.free_ranges(), 1, "everything coalesced");
        assert_eq!(a.used(), 0);
        assert_eq!(a.largest_free(), 1024);
    }

    #[test]
    fn reserve_at_takes_exactly_that_range() {
        let mut a = RangeAllocator::new(0, 1 << 20);
        assert!(a.reserve_at(4096, 100));
        assert_eq!(a.used(), 104);
        assert!(!a.reserve_at(4096 + 96, 8), "overlaps the first");
        assert!(!a.reserve_at(1 << 20, 8), "past the end");
        assert!(a.reserve_at(0, 4096));
        assert_eq!(a.free_ranges(), 1);
        assert!(a.free(4096, 100));
        assert!(a.free(0, 4096));
        assert_eq!((a.used(), a.free_ranges()), (0, 1));
    }

    #[test]
    fn double_free_refused() {
        let mut a = RangeAllocator::new(0, 1024);
        let x = a.alloc(64).unwrap();
        assert!(a.free(x, 64));
        assert!(!a.free(x, 64));
        assert!(!a.free(2000, 8), "out of range");
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn best_fit_picks_smallest_hole() {
        let mut a = RangeAllocator::new(0, 4096);
        let offs: Vec<u64> = (0..8).map(|_| a.alloc(256).unwrap()).collect();
        // Holes: 256 at offs[1], 512 at offs[3..5].
        a.free(offs[1], 256);
        a.free(offs[3], 256);
        a.free(offs[4], 256);
        assert_eq!(a.alloc(200), Some(offs[1]), "the 256-byte hole fits best");
        assert_eq!(a.alloc(300), Some(offs[3]));
    }

    #[test]
    fn alignment_of_large_and_small() {
        // A base that is not page aligned: alignment is of base + offset.
        let base = 0x1000_0010;
        let mut a = RangeAllocator::new(base, 4 << 20);
        let s = a.alloc(13).unwrap();
        assert_eq!((base + s) % 8, 0);
        let l = a.alloc(LARGE_THRESHOLD).unwrap();
        assert_eq!((base + l) % LARGE_ALIGN, 0);
        let s2 = a.alloc(5).unwrap();
        assert_eq!(s2 % 8, 0);
        // The padding before the large range stays usable.
        assert!(
            s2 < l,
            "small object placed in the alignment gap, got {s2} vs {l}"
        );
        let l2 = a.alloc(100_000).unwrap();
        assert_eq!((base + l2) % LARGE_ALIGN, 0);
    }

    #[test]
    fn full_and_contiguity() {
        let mut a = RangeAllocator::new(0, 1000);
        assert_eq!(a.capacity(), 1000);
        let x = a.alloc(500).unwrap();
        let _y = a.alloc(496).unwrap();
        assert_eq!(a.alloc(8), None, "full");
        a.free(x, 500);
        assert_eq!(a.alloc(505), None, "no contiguous 512 bytes");
        assert!(a.can_fit(504));
        assert!(a.alloc(500).is_some());
        assert_eq!(a.alloc(0), None);
        assert_eq!(a.alloc(u64::MAX), None);
    }

    #[test]
    fn fits_after_free_merges_neighbours() {
        let mut a = RangeAllocator::new(0, 3 * 1024);
        let x = a.alloc(1024).unwrap();
        let y = a.alloc(1024).unwrap();
        let z = a.alloc(1024).unwrap();
        a.free(x, 1024);
        assert!(!a.can_fit(2048));
        assert!(a.fits_after_free(y, 1024, 2048));
        assert!(!a.fits_after_free(z, 1024, 2048));
    }
}
