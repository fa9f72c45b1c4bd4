//! Seal rings: how a same-host writer records its seals in an owner's directory without a
//! round trip.
//!
//! A writer that copies through a mapping of the owner's segment (`transport/shm.rs`) used to
//! seal with one request to the owner per put: on the 2-vCPU VM that round trip (17–21 µs,
//! two thread wake-ups on a machine whose cores the master, the owner and the writer share)
//! was a third of a 4 KiB put. Contract §8 only asks that the seal be *in the owner's keeping*
//! before the master commits, so a restarted master can rebuild its index from the owners. A
//! seal ring is a small memfd the owner creates per attached writer and segment: the writer
//! appends seal records to it after its copy and before it commits, and the owner moves them
//! into the segment's directory whenever it needs the directory (a lookup that misses, a seal
//! that arrives by request, a directory listing), from a timer, and when the writer's
//! connection closes. A record written there lives in the owner's memory exactly as long as the
//! bytes it describes, so it is as safe as a request the owner had already answered.
//!
//! Single producer, single consumer: the writer's engine serializes its threads on a mutex;
//! the owner drains under the segment's directory lock. The writer is not trusted: the owner
//! keeps its own copy of the read position, copies each record out of the shared memory before
//! looking at it, and checks lengths, ranges, UTF-8 and epochs exactly as for a `Seal` request.
//! A ring whose positions make no sense is dropped (the writer then seals by request).
//!
//! Layout (all little-endian, offsets in bytes): a 4 KiB header page — magic at 0, the
//! producer's `tail` at 64, the consumer's `head` at 128, the owner's segment epoch at 192 (a
//! writer whose allocation is older seals by request and gets the refusal), a `closed` flag at
//! 256 (set when the segment is unmounted) — then `RING_DATA` bytes of records. A record is
//! 8-byte aligned: `u32 total_len, u32 key_len, u64 epoch, u64 object epoch, u64 object seq,
//! u64 addr, u64 len, u8 flags, 7 bytes pad, key`, padded to 8. A `total_len` of 0 means "the
//! rest of the area is unused, continue at its start". Positions grow without wrapping; the
//! offset in the area is the position modulo `RING_DATA`.

use crate::shmem::SharedMemory;
use std::sync::atomic::{AtomicU64, Ordering};
use tidepool_common::{Error, ObjectId, Result};
use tidepool_proto::data::Seal;

const MAGIC: u64 = u64::from_le_bytes(*b"TPSEALR1");
/// Bytes of the header page.
const HEADER: u64 = 4096;
const TAIL_OFF: u64 = 64;
const HEAD_OFF: u64 = 128;
const EPOCH_OFF: u64 = 192;
const CLOSED_OFF: u64 = 256;
/// Bytes of records before the area wraps: 1 MiB is about 12 000 seals of 4 KiB objects with
/// 20-byte keys, a quarter of a second of puts at the fastest rate seen here, while the owner
/// drains every few milliseconds.
pub(crate) const RING_DATA: u64 = 1 << 20;
/// Size of a record before its key.
const REC_HDR: usize = 56;
/// Largest record a writer puts in a ring; longer keys seal by request.
const MAX_RECORD: usize = 16 << 10;

/// Total size of the memfd backing a ring.
pub(crate) const RING_SIZE: u64 = HEADER + RING_DATA;

fn padded(n: usize) -> usize {
    (n + 7) & !7
}

/// The atomic at `off` in the header page of `mem`.
fn header_word(mem: &SharedMemory, off: u64) -> &AtomicU64 {
    debug_assert!(off + 8 <= HEADER && off.is_multiple_of(8));
    // SAFETY: `mem` is at least `HEADER` bytes (checked when the ring was created or mapped),
    // page aligned, so `off` (a multiple of 8 below `HEADER`) is an aligned `u64` inside it that
    // lives as long as `mem`. Other processes access it only through atomics as well.
    unsafe { &*((mem.addr() + off) as *const AtomicU64) }
}

fn check_size(mem: &SharedMemory) -> Result<()> {
    if mem.size() != RING_SIZE {
        return Err(Error::invalid(format!(
            "seal ring has the wrong size: size={} expected={RING_SIZE}",
            mem.size()
        )));
    }
    Ok(())
}

/// The owner's end of a ring.
pub(crate) struct RingConsumer {
    mem: SharedMemory,
    /// The read position as the owner knows it; the shared `head` is only a copy for the writer,
    /// who could overwrite it. Changed only under the owning segment's directory lock.
    head: AtomicU64,
}

impl std::fmt::Debug for RingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingConsumer")
            .field("head", &self.head.load(Ordering::Relaxed))
            .finish()
    }
}

/// A ring whose producer wrote positions or records that cannot be right.
#[derive(Debug)]
pub(crate) struct Corrupt(pub String);

impl RingConsumer {
    /// A fresh ring whose writers may seal allocations of `epoch` or newer.
    pub(crate) fn create(epoch: u64) -> Result<Self> {
        let mem = SharedMemory::create("tidepool-seal-ring", RING_SIZE, false)?;
        check_size(&mem)?;
        header_word(&mem, 0).store(MAGIC, Ordering::Relaxed);
        header_word(&mem, EPOCH_OFF).store(epoch, Ordering::Release);
        Ok(Self {
            mem,
            head: AtomicU64::new(0),
        })
    }

    /// The memfd, for handing to the writer.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.mem.fd()
    }

    /// Publishes the segment's fencing epoch to the writer.
    pub(crate) fn set_epoch(&self, epoch: u64) {
        header_word(&self.mem, EPOCH_OFF).fetch_max(epoch, Ordering::AcqRel);
    }

    /// Tells the writer to seal by request from now on (the segment is going away).
    pub(crate) fn close(&self) {
        header_word(&self.mem, CLOSED_OFF).store(1, Ordering::Release);
    }

    /// True when the writer has appended records not drained yet.
    pub(crate) fn pending(&self) -> bool {
        header_word(&self.mem, TAIL_OFF).load(Ordering::Acquire)
            != self.head.load(Ordering::Relaxed)
    }

    /// Hands every complete record to `each` as (seal, epoch), in the order written, and frees
    /// their space. A record that is well framed but unusable (key not UTF-8) is skipped and
    /// counted in the returned total of skipped records; badly framed positions are `Corrupt`.
    /// The caller serializes drains (the segment's directory lock).
    pub(crate) fn drain(&self, mut each: impl FnMut(Seal, u64)) -> Result<u64, Corrupt> {
        let tail = header_word(&self.mem, TAIL_OFF).load(Ordering::Acquire);
        let mut head = self.head.load(Ordering::Relaxed);
        if tail < head || tail - head > RING_DATA || !tail.is_multiple_of(8) {
            return Err(Corrupt(format!(
                "seal ring positions out of order: head={head} tail={tail}"
            )));
        }
        let data = self.mem.addr() + HEADER;
        let mut rec = Vec::new();
        let mut skipped = 0;
        while head < tail {
            let off = head % RING_DATA;
            let to_end = RING_DATA - off;
            let mut word = [0u8; 4];
            // SAFETY: `off + 4 <= RING_DATA` (`off` is a multiple of 8 below `RING_DATA`), so
            // the 4 bytes lie inside the mapping. The writer may be changing other bytes of the
            // ring concurrently; bytes before `tail` are complete (release/acquire on `tail`),
            // and we copy them out before interpreting them.
            unsafe {
                std::ptr::copy_nonoverlapping((data + off) as *const u8, word.as_mut_ptr(), 4)
            };
            let total = u32::from_le_bytes(word) as u64;
            if total == 0 {
                if head + to_end > tail {
                    return Err(Corrupt(format!(
                        "seal ring wrap past the tail: head={head} tail={tail}"
                    )));
                }
                head += to_end;
                continue;
            }
            if total < REC_HDR as u64
                || !total.is_multiple_of(8)
                || total > to_end
                || head + total > tail
            {
                return Err(Corrupt(format!(
                    "seal ring record of bad length: len={total} head={head} tail={tail}"
                )));
            }
            rec.resize(total as usize, 0);
            // SAFETY: `[off, off+total)` lies inside the data area (`total <= to_end`) and before
            // `tail`; copied out before use, as above.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (data + off) as *const u8,
                    rec.as_mut_ptr(),
                    rec.len(),
                )
            };
            head += total;
            match decode(&rec) {
                Some((seal, epoch)) => each(seal, epoch),
                None => skipped += 1,
            }
        }
        self.head.store(head, Ordering::Relaxed);
        header_word(&self.mem, HEAD_OFF).store(head, Ordering::Release);
        Ok(skipped)
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Parses one framed record (`rec.len() >= REC_HDR`, checked by the caller).
fn decode(rec: &[u8]) -> Option<(Seal, u64)> {
    let key_len = u32::from_le_bytes(rec[4..8].try_into().ok()?) as usize;
    if key_len > rec.len() - REC_HDR {
        return None;
    }
    let key = std::str::from_utf8(&rec[REC_HDR..REC_HDR + key_len]).ok()?;
    let seal = Seal {
        key: key.to_string(),
        object_id: ObjectId {
            epoch: u64_at(rec, 16),
            seq: u64_at(rec, 24),
        },
        addr: u64_at(rec, 32),
        len: u64_at(rec, 40),
        flags: rec[48],
    };
    Some((seal, u64_at(rec, 8)))
}

/// The writer's end of a ring.
pub(crate) struct RingProducer {
    mem: SharedMemory,
    /// Next write position; only this process writes the ring.
    tail: u64,
    /// Scratch for one record.
    rec: Vec<u8>,
}

impl RingProducer {
    /// Maps a ring received from the owner.
    pub(crate) fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let mem = SharedMemory::from_fd(fd, Some(RING_SIZE), false)?;
        check_size(&mem)?;
        if header_word(&mem, 0).load(Ordering::Acquire) != MAGIC {
            return Err(Error::invalid("not a seal ring: bad magic"));
        }
        let tail = header_word(&mem, TAIL_OFF).load(Ordering::Acquire);
        Ok(Self {
            mem,
            tail,
            rec: Vec::new(),
        })
    }

    /// Appends one record per seal, all or none; `false` when the ring cannot take them (closed,
    /// an epoch the owner already fences, not enough room, a key too long): the caller then
    /// seals by request, which also drains the ring first, so order is kept.
    pub(crate) fn push(&mut self, epoch: u64, seals: &[Seal]) -> bool {
        if header_word(&self.mem, CLOSED_OFF).load(Ordering::Acquire) != 0
            || epoch < header_word(&self.mem, EPOCH_OFF).load(Ordering::Acquire)
        {
            return false;
        }
        let head = header_word(&self.mem, HEAD_OFF).load(Ordering::Acquire);
        if head > self.tail || self.tail - head > RING_DATA {
            return false;
        }
        // Where every record would land, wraps included, before writing any.
        let mut pos = self.tail;
        for s in seals {
            let len = padded(REC_HDR + s.key.len());
            if len > MAX_RECORD || u32::try_from(s.key.len()).is_err() {
                return false;
            }
            let to_end = RING_DATA - pos % RING_DATA;
            if (len as u64) > to_end {
                pos += to_end;
            }
            pos += len as u64;
        }
        if pos - head > RING_DATA {
            return false;
        }
        let data = self.mem.addr() + HEADER;
        for s in seals {
            let len = padded(REC_HDR + s.key.len());
            let off = self.tail % RING_DATA;
            let to_end = RING_DATA - off;
            if (len as u64) > to_end {
                // SAFETY: `off + 4 <= RING_DATA`: inside the mapping, in the free part of the
                // ring (between `tail` and `head + RING_DATA`), which the owner does not read.
                unsafe { std::ptr::write_bytes((data + off) as *mut u8, 0, 4) };
                self.tail += to_end;
            }
            let rec = &mut self.rec;
            rec.clear();
            rec.extend_from_slice(&(len as u32).to_le_bytes());
            rec.extend_from_slice(&(s.key.len() as u32).to_le_bytes());
            for w in [epoch, s.object_id.epoch, s.object_id.seq, s.addr, s.len] {
                rec.extend_from_slice(&w.to_le_bytes());
            }
            rec.push(s.flags);
            rec.extend_from_slice(&[0; 7]);
            rec.extend_from_slice(s.key.as_bytes());
            rec.resize(len, 0);
            let off = self.tail % RING_DATA;
            // SAFETY: `[off, off+len)` is inside the data area (wrapped above when it would not
            // fit) and in the free part of the ring, checked against `head` before writing.
            unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), (data + off) as *mut u8, len) };
            self.tail += len as u64;
        }
        // Release: the owner that sees this tail sees the records, and the bytes the caller
        // copied into the segment before pushing.
        header_word(&self.mem, TAIL_OFF).store(self.tail, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(seq: u64, key: &str) -> Seal {
        Seal {
            key: key.to_string(),
            object_id: ObjectId { epoch: 3, seq },
            addr: 0x1000 * seq,
            len: 4096,
            flags: (seq % 4) as u8,
        }
    }

    fn pair(epoch: u64) -> (RingConsumer, RingProducer) {
        let c = RingConsumer::create(epoch).unwrap();
        let fd = nix::unistd::dup(c.fd()).unwrap();
        // SAFETY: `dup` returned a fresh descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        (c, RingProducer::from_fd(fd).unwrap())
    }

    fn drained(c: &RingConsumer) -> Vec<(Seal, u64)> {
        let mut v = Vec::new();
        assert_eq!(c.drain(|s, e| v.push((s, e))).unwrap(), 0);
        v
    }

    #[test]
    fn records_cross_in_order_and_wrap() {
        let (c, mut p) = pair(2);
        assert!(!c.pending());
        assert!(p.push(3, &[seal(1, "a"), seal(2, "bé")]));
        assert!(c.pending());
        assert_eq!(drained(&c), vec![(seal(1, "a"), 3), (seal(2, "bé"), 3)]);
        assert!(!c.pending());
        // Many rounds of the area: records that straddle its end wrap to its start.
        let key = "k".repeat(300);
        let mut seq = 10;
        for _ in 0..10_000 {
            let batch: Vec<Seal> = (0..5).map(|i| seal(seq + i, &key)).collect();
            assert!(p.push(4, &batch));
            let got = drained(&c);
            assert_eq!(got.len(), 5);
            assert_eq!(got[4].0, batch[4]);
            seq += 5;
        }
        assert!(p.tail > 3 * RING_DATA);
    }

    #[test]
    fn a_full_ring_refuses_whole_batches_and_a_drain_frees_it() {
        let (c, mut p) = pair(0);
        let key = "x".repeat(1000);
        let mut n = 0;
        while p.push(1, &[seal(n, &key)]) {
            n += 1;
        }
        assert!(n > 900 && n < 1100, "{n}");
        assert_eq!(drained(&c).len() as u64, n);
        let big: Vec<Seal> = (0..(n + 5)).map(|i| seal(i, &key)).collect();
        assert!(
            !p.push(1, &big),
            "more than the ring holds is refused whole"
        );
        assert!(drained(&c).is_empty());
        assert!(p.push(1, &big[..10]));
        assert_eq!(drained(&c).len(), 10);
        // Keys too long for a record are refused (sealed by request instead).
        assert!(!p.push(1, &[seal(1, &"y".repeat(MAX_RECORD))]));
    }

    #[test]
    fn fenced_epochs_and_closed_rings_are_refused() {
        let (c, mut p) = pair(5);
        assert!(!p.push(4, &[seal(1, "a")]));
        assert!(p.push(5, &[seal(1, "a")]));
        c.set_epoch(7);
        c.set_epoch(6);
        assert!(!p.push(6, &[seal(2, "b")]));
        assert!(p.push(7, &[seal(2, "b")]));
        c.close();
        assert!(!p.push(9, &[seal(3, "c")]));
        assert_eq!(drained(&c).len(), 2);
    }

    #[test]
    fn garbage_from_the_writer_is_refused() {
        let (c, mut p) = pair(0);
        assert!(p.push(1, &[seal(1, "ok")]));
        // A key that is not UTF-8 is skipped, the records around it kept.
        let data = p.mem.addr() + HEADER;
        assert!(p.push(1, &[seal(2, "zz"), seal(3, "ok")]));
        let second = padded(REC_HDR + 2);
        // SAFETY: inside the data area; the test owns both ends.
        unsafe { *((data + second as u64 + REC_HDR as u64) as *mut u8) = 0xff };
        let mut got = Vec::new();
        assert_eq!(c.drain(|s, _| got.push(s.object_id.seq)).unwrap(), 1);
        assert_eq!(got, vec![1, 3]);
        // A tail beyond the ring's size, or a record length that runs past the tail.
        header_word(&p.mem, TAIL_OFF).store(
            c.head.load(Ordering::Relaxed) + RING_DATA + 8,
            Ordering::Release,
        );
        assert!(c.drain(|_, _| {}).is_err());
        let head = c.head.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { *((data + head % RING_DATA) as *mut u32) = 4096 };
        header_word(&p.mem, TAIL_OFF).store(head + 64, Ordering::Release);
        assert!(c.drain(|_, _| {}).is_err());
        // SAFETY: as above.
        unsafe { *((data + head % RING_DATA) as *mut u32) = 12 };
        assert!(c.drain(|_, _| {}).is_err());
    }

    #[test]
    fn concurrent_producer_and_consumer() {
        let (c, mut p) = pair(0);
        let total = 200_000u64;
        let writer = std::thread::spawn(move || {
            let mut seq = 0;
            while seq < total {
                if p.push(1, &[seal(seq, "concurrent-key")]) {
                    seq += 1;
                }
            }
        });
        let mut next = 0;
        while next < total {
            c.drain(|s, _| {
                assert_eq!(s.object_id.seq, next);
                next += 1;
            })
            .unwrap();
        }
        writer.join().unwrap();
    }
}
