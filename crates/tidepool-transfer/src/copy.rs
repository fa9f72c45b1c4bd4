//! The byte copy under every same-host and in-process transfer.
//!
//! `memmove` is the right copy almost always, with one measured exception on the x86-64 machines
//! Tidepool is benchmarked on (AMD EPYC, glibc 2.36): for copies of 1 KiB to 256 KiB glibc uses
//! `rep movsb`, which runs 4–6x slower when the destination sits 1–63 bytes *after* the source
//! modulo 4 KiB. Every load then aliases a store just issued (the CPU compares the low 12
//! address bits first) and waits for it. That is exactly the layout of a get into a user buffer
//! from `malloc` (16 bytes past a page start) out of a page-aligned segment: 2.1–2.6 GB/s
//! instead of 11–12. Copying such ranges backwards never reads an address just written. The
//! SSE2 loop below, measured with batches of 16 copies out of a 2 GiB shared mapping into a
//! destination 16 bytes past a page: 4 KiB 2.6 → 7.4 GB/s, 64 KiB 2.5 → 11.1 GB/s, 256 KiB
//! 2.1 → 9.1 GB/s, 1 MiB 6.3 → 7.7 GB/s. Every other layout keeps `memmove`.
//!
//! Copies into a segment (a put's bytes) of pieces of 64 KiB or more use non-temporal stores
//! instead ([`Sink::Segment`], on CPUs with AVX2): the destination is cold memory nobody reads
//! soon, and such stores write it without first reading each line into the cache. Measured on
//! the 2-vCPU VM, 16 MiB batches into random places of a 1 GiB shared mapping: 256 KiB pieces
//! from a cold source 22.9 → 26.5 GB/s, from a warm one 22.0 → 26.0; 1 MiB pieces 17.0 → 28.5;
//! 64 KiB 20.6 → 23.2. Gets keep `memmove`: their destination is the caller's buffer, which it
//! reads next.

/// Where a copy writes, which decides how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// A segment: cold memory read later by others (puts). Long pieces are streamed.
    Segment,
    /// The caller's buffer, read by the caller next (gets).
    Caller,
}

/// Pieces into a segment at least this long are written with non-temporal stores.
const STREAM_MIN_LEN: usize = 64 << 10;

/// A batch moves on several threads only when each gets at least this much.
const PARALLEL_MIN_PER_THREAD: usize = 1 << 20;

/// One copy of a batch: `len` bytes from `src` to `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    /// First source byte.
    pub src: *const u8,
    /// First destination byte.
    pub dst: *mut u8,
    /// Bytes to copy.
    pub len: usize,
}

/// A share of a batch handed to a helper thread.
struct Share(Vec<Piece>);

// SAFETY: a `Share` carries raw ranges that the caller of `copy_many` keeps valid until it
// returns (the scope joins every helper before), and no two shares overlap in destination.
unsafe impl Send for Share {}

/// Threads one large batch may use: `TIDEPOOL_COPY_THREADS`, else the cores (at most 4).
fn copy_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("TIDEPOOL_COPY_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .min(4)
            })
            .max(1)
    })
}

/// Copies every piece; a batch of several MiB is cut into equal shares copied on that many
/// threads at once (the caller's and scoped helpers). One core's copy bandwidth is bounded by
/// the cache misses it can keep in flight, well below the memory's: measured on the 2-vCPU
/// VM, 256 MiB in 8 MiB pieces moved at 4.4 GB/s on one thread and 5.0–7.3 GB/s on two.
/// Pieces whose source and destination overlap are copied one by one, in order.
///
/// # Safety
/// Every piece's source must be readable and destination writable for the whole call, and no
/// destination may overlap another piece's source or destination.
pub unsafe fn copy_many(pieces: &[Piece], sink: Sink) {
    let total: usize = pieces.iter().map(|p| p.len).sum();
    let threads = copy_threads().min(total / PARALLEL_MIN_PER_THREAD);
    let overlap = pieces.iter().any(|p| {
        let (s, d) = (p.src as usize, p.dst as usize);
        s < d + p.len && d < s + p.len
    });
    // A piece that overlaps itself needs memmove's semantics, which streaming does not keep.
    let sink = if overlap { Sink::Caller } else { sink };
    if threads <= 1 || overlap {
        for p in pieces {
            // SAFETY: forwarded from the caller.
            unsafe { copy_to(p, sink) };
        }
        return;
    }
    let mut shares: Vec<Vec<Piece>> = (0..threads).map(|_| Vec::new()).collect();
    let per = total.div_ceil(threads);
    let (mut k, mut room) = (0, per);
    for p in pieces {
        let mut p = *p;
        while p.len > 0 {
            let take = p.len.min(room);
            shares[k].push(Piece { len: take, ..p });
            // SAFETY: `take <= p.len`, so both advanced pointers stay within (or one past)
            // the caller's ranges.
            p = unsafe {
                Piece {
                    src: p.src.add(take),
                    dst: p.dst.add(take),
                    len: p.len - take,
                }
            };
            room -= take;
            if room == 0 && k + 1 < threads {
                k += 1;
                room = per;
            }
        }
    }
    let mut shares = shares.into_iter().map(Share);
    let mine = shares.next();
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || {
                let share = share;
                for p in &share.0 {
                    // SAFETY: forwarded from the caller; shares are disjoint.
                    unsafe { copy_to(p, sink) };
                }
            });
        }
        for p in mine.iter().flat_map(|s| &s.0) {
            // SAFETY: forwarded from the caller; shares are disjoint.
            unsafe { copy_to(p, sink) };
        }
    });
}

/// One piece of a batch whose pieces do not overlap, as `sink` wants it.
///
/// # Safety
/// As [`copy_many`].
unsafe fn copy_to(p: &Piece, sink: Sink) {
    // Older x86-64 CPUs (no AVX2) keep `memmove`: an SSE2 version gained 6 % over it here.
    #[cfg(target_arch = "x86_64")]
    if sink == Sink::Segment
        && p.len >= STREAM_MIN_LEN
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: forwarded from the caller; `copy_many` streams only non-overlapping pieces;
        // the CPU has AVX2 (checked just above).
        unsafe { copy_streaming_avx2(p.src, p.dst, p.len) };
        return;
    }
    let _ = sink;
    // SAFETY: forwarded from the caller.
    unsafe { copy_bytes(p.src, p.dst, p.len) }
}

/// Copies with non-temporal 32-byte stores, 128 bytes per step (the head up to the first
/// 32-byte aligned destination byte and the last bytes with [`copy_bytes`]), then fences:
/// whatever this thread stores next (a seal, an answer) becomes visible to other cores only
/// after these bytes.
///
/// # Safety
/// As [`copy_bytes`], the ranges must not overlap, and the CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_streaming_avx2(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm_sfence, _mm256_loadu_si256, _mm256_stream_si256};
    let head = dst.align_offset(32).min(len);
    // SAFETY: the first `head <= len` bytes of both ranges.
    unsafe { copy_bytes(src, dst, head) };
    // SAFETY: `head <= len`, so both stay inside (or one past) the caller's ranges.
    let (src, dst, len) = unsafe { (src.add(head), dst.add(head), len - head) };
    let body = len & !127;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 128 <= body <= len`, so every access lies inside the caller's ranges;
        // `dst + i` is 32-byte aligned (`dst` is, `i` is a multiple of 128) as the streaming
        // store requires; loads have no alignment requirement; AVX2 is enabled.
        unsafe {
            let s = src.add(i) as *const __m256i;
            let d = dst.add(i) as *mut __m256i;
            let a = _mm256_loadu_si256(s);
            let b = _mm256_loadu_si256(s.add(1));
            let c = _mm256_loadu_si256(s.add(2));
            let e = _mm256_loadu_si256(s.add(3));
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
            _mm256_stream_si256(d.add(2), c);
            _mm256_stream_si256(d.add(3), e);
        }
        i += 128;
    }
    // SAFETY: the last `len - body` bytes of both ranges.
    unsafe { copy_bytes(src.add(body), dst.add(body), len - body) };
    _mm_sfence();
}

/// Copies below this size are cheap whatever the layout.
const ALIAS_MIN_LEN: usize = 1024;
/// Destination-after-source distances (modulo 4 KiB) that stall `rep movsb`.
const ALIAS_MAX_DISTANCE: usize = 64;

/// Copies `len` bytes from `src` to `dst`; the ranges may overlap (memmove semantics).
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable for the duration of the call.
pub unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let (s, d) = (src as usize, dst as usize);
        let distance = d.wrapping_sub(s) % 4096;
        // A backward copy is also correct for any overlap with `dst` above `src`.
        let backward_ok = d >= s || d + len <= s;
        if len >= ALIAS_MIN_LEN && distance > 0 && distance < ALIAS_MAX_DISTANCE && backward_ok {
            // SAFETY: forwarded from the caller; the ranges permit a backward copy (above).
            unsafe { copy_backward_sse2(src, dst, len) };
            return;
        }
    }
    // SAFETY: guaranteed by the caller; `copy` (memmove) tolerates overlap.
    unsafe { std::ptr::copy(src, dst, len) }
}

/// Copies from the end to the start, 64 bytes per step (SSE2 is part of every x86-64 CPU).
///
/// # Safety
/// As [`copy_bytes`], and the ranges must not overlap with `dst` below `src`.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_backward_sse2(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
    let mut i = len;
    while i >= 64 {
        i -= 64;
        // SAFETY: `i + 64 <= len`, so every 16-byte access lies inside the caller's ranges;
        // unaligned loads and stores have no alignment requirement. All four loads happen
        // before the stores, so an overlap with `dst` above `src` reads the old bytes.
        unsafe {
            let s = src.add(i) as *const __m128i;
            let d = dst.add(i) as *mut __m128i;
            let a = _mm_loadu_si128(s);
            let b = _mm_loadu_si128(s.add(1));
            let c = _mm_loadu_si128(s.add(2));
            let e = _mm_loadu_si128(s.add(3));
            _mm_storeu_si128(d.add(3), e);
            _mm_storeu_si128(d.add(2), c);
            _mm_storeu_si128(d.add(1), b);
            _mm_storeu_si128(d, a);
        }
    }
    if i > 0 {
        // SAFETY: the first `i` bytes of both ranges; memmove handles any overlap.
        unsafe { std::ptr::copy(src, dst, i) };
    }
}

#[cfg(test)]
mod tests {
    use super::{Piece, STREAM_MIN_LEN, Sink, copy_bytes, copy_many};

    #[test]
    fn many_pieces_split_across_threads_land_in_place() {
        // 3 MiB + odd sizes, so shares cut pieces in the middle.
        let sizes = [1 << 20, 5, (1 << 20) + 333, 4096, 900_000, 17];
        let total: usize = sizes.iter().sum();
        let src = pattern(total);
        let mut dst = vec![0u8; total + 64];
        let mut pieces = Vec::new();
        let mut off = 0;
        for &n in &sizes {
            // SAFETY: offsets stay inside both vectors.
            unsafe {
                pieces.push(Piece {
                    src: src.as_ptr().add(off),
                    dst: dst.as_mut_ptr().add(off + 16),
                    len: n,
                });
            }
            off += n;
        }
        // SAFETY: every range lies inside its vector; destinations are disjoint.
        unsafe { copy_many(&pieces, Sink::Caller) };
        assert_eq!(&dst[16..16 + total], &src[..]);
        assert!(dst[..16].iter().all(|&b| b == 0));
    }

    #[test]
    fn streamed_pieces_land_in_place_at_any_alignment() {
        type Copy = unsafe fn(*const u8, *mut u8, usize);
        let mut ways: Vec<(&str, Copy)> = vec![("copy_many", |s, d, len| {
            // SAFETY: forwarded from the loop below.
            unsafe {
                copy_many(
                    &[Piece {
                        src: s,
                        dst: d,
                        len,
                    }],
                    Sink::Segment,
                )
            }
        })];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                ways.push(("avx2", |s, d, len| {
                    // SAFETY: the CPU has AVX2 (checked above); the ranges as in the loop.
                    unsafe { super::copy_streaming_avx2(s, d, len) }
                }));
            }
        }
        let src = pattern(3 * STREAM_MIN_LEN + 200);
        for (way, copy) in ways {
            for len in [
                0,
                100,
                STREAM_MIN_LEN,
                STREAM_MIN_LEN + 63,
                2 * STREAM_MIN_LEN + 77,
            ] {
                for (src_off, dst_off) in [(0, 0), (3, 0), (0, 5), (17, 33), (64, 1), (1, 63)] {
                    let mut dst = vec![0u8; len + 200];
                    // SAFETY: the offsets leave `len` bytes inside each vector; the two
                    // vectors do not overlap.
                    unsafe {
                        copy(
                            src.as_ptr().add(src_off),
                            dst.as_mut_ptr().add(dst_off),
                            len,
                        )
                    };
                    let what = format!("{way} len={len} src_off={src_off} dst_off={dst_off}");
                    assert_eq!(
                        &dst[dst_off..dst_off + len],
                        &src[src_off..src_off + len],
                        "{what}"
                    );
                    assert!(dst[..dst_off].iter().all(|&b| b == 0), "{what}");
                    assert!(dst[dst_off + len..].iter().all(|&b| b == 0), "{what}");
                }
            }
        }
    }

    #[test]
    fn a_self_overlapping_piece_into_a_segment_keeps_memmove_semantics() {
        let len = STREAM_MIN_LEN + 100;
        let orig = pattern(len + 16);
        let mut buf = orig.clone();
        let piece = Piece {
            src: buf.as_ptr(),
            // SAFETY: 16 + len bytes fit in `buf`.
            dst: unsafe { buf.as_mut_ptr().add(16) },
            len,
        };
        // SAFETY: both ranges lie inside `buf`; `copy_many` handles the overlap.
        unsafe { copy_many(&[piece], Sink::Segment) };
        assert_eq!(&buf[16..16 + len], &orig[..len]);
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn copies_every_layout_and_length() {
        let src = pattern(70_000);
        for len in [0, 1, 63, 64, 65, 1023, 1024, 1025, 4096, 4097, 65_536] {
            for dst_off in [0, 1, 15, 16, 17, 48, 63, 64, 100] {
                let mut dst = vec![0u8; len + 200];
                // SAFETY: both ranges lie inside their vectors.
                unsafe { copy_bytes(src.as_ptr().add(3), dst.as_mut_ptr().add(dst_off), len) };
                assert_eq!(
                    &dst[dst_off..dst_off + len],
                    &src[3..3 + len],
                    "len={len} off={dst_off}"
                );
                assert!(dst[..dst_off].iter().all(|&b| b == 0));
                assert!(dst[dst_off + len..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn overlapping_moves_keep_memmove_semantics() {
        for shift in [1usize, 16, 63, 64, 4096 + 16] {
            for len in [1024usize, 5000, 20_000] {
                let orig = pattern(len + shift);
                // Destination above the source (the backward path).
                let mut buf = orig.clone();
                // SAFETY: both ranges lie inside `buf`.
                unsafe { copy_bytes(buf.as_ptr(), buf.as_mut_ptr().add(shift), len) };
                assert_eq!(
                    &buf[shift..shift + len],
                    &orig[..len],
                    "up shift={shift} len={len}"
                );
                // Destination below the source (memmove).
                let mut buf = orig.clone();
                // SAFETY: both ranges lie inside `buf`.
                unsafe { copy_bytes(buf.as_ptr().add(shift), buf.as_mut_ptr(), len) };
                assert_eq!(
                    &buf[..len],
                    &orig[shift..shift + len],
                    "down shift={shift} len={len}"
                );
            }
        }
    }
}
