//! The owner side of the data plane: what a segment owner checks and records for a request,
//! independent of how the request arrived (TCP server or in-process call).
//!
//! Every range is resolved against the [`Registry`] before any memory is touched (W14); writes
//! and seals are fenced by the segment's epoch (contract §8); seals land in the segment's
//! directory only after all bytes are in place (W12).

use crate::memory::{Region, Registry};
use tidepool_common::{Error, ErrorCode, ObjectId, Result};
use tidepool_proto::data::{Dropped, Range, Seal};

/// Total length of `ranges`, or `InvalidParams` on overflow.
pub(crate) fn total_len(ranges: &[Range]) -> Result<u64> {
    ranges.iter().try_fold(0u64, |acc, r| {
        acc.checked_add(r.len)
            .ok_or_else(|| Error::invalid("range lengths overflow"))
    })
}

fn check_epoch(region: &Region, epoch: u64) -> Result<()> {
    if let Some(seg) = region.segment() {
        let current = seg.epoch();
        if epoch < current {
            return Err(Error::new(
                ErrorCode::InvalidWrite,
                format!("stale master epoch: epoch={epoch} segment_epoch={current}"),
            ));
        }
    }
    Ok(())
}

/// Validates a write: every range and every seal inside registered memory, seals inside
/// segments, no stale epoch. On success `out` holds one region per range, then one per seal.
pub(crate) fn check_write(
    reg: &Registry,
    epoch: u64,
    ranges: &[Range],
    seals: &[Seal],
    out: &mut Vec<Region>,
) -> Result<()> {
    out.clear();
    for r in ranges {
        let region = reg.resolve(r.addr, r.len)?;
        check_epoch(&region, epoch)?;
        out.push(region);
    }
    check_seals_into(reg, epoch, seals, out)
}

/// Validates seals alone (appending their regions to `out`).
pub(crate) fn check_seals_into(
    reg: &Registry,
    epoch: u64,
    seals: &[Seal],
    out: &mut Vec<Region>,
) -> Result<()> {
    for s in seals {
        let region = reg.resolve(s.addr, s.len)?;
        if region.segment().is_none() {
            return Err(Error::invalid(format!(
                "seal outside any segment: addr={:#x} len={}",
                s.addr, s.len
            )));
        }
        check_epoch(&region, epoch)?;
        out.push(region);
    }
    Ok(())
}

/// Records `seals` as claims ([`Seal::PENDING`]) before their bytes land (`regions` as for
/// [`apply_seals`]). A claim that a newer object's entry blocks means the write is a late one
/// (its put was revoked and the range given to that newer object): refused, so its bytes never
/// land over the newer object's.
pub(crate) fn apply_claims(regions: &[Region], seals: &[Seal]) -> Result<()> {
    for (region, seal) in regions.iter().zip(seals) {
        if let Some(seg) = region.segment()
            && !seg.record(&seal.claim())
        {
            return Err(Error::new(
                ErrorCode::InvalidWrite,
                format!(
                    "range holds a newer object: key={} object={} addr={:#x} len={}",
                    seal.key, seal.object_id, seal.addr, seal.len
                ),
            ));
        }
    }
    Ok(())
}

/// Records `seals` whose regions `check_*` resolved (`regions` is aligned with `seals`).
pub(crate) fn apply_seals(regions: &[Region], seals: &[Seal]) {
    for (region, seal) in regions.iter().zip(seals) {
        if let Some(seg) = region.segment() {
            // A late seal is dropped silently: the bytes are in place and harm nothing, and the
            // writer's put was revoked, so its commit fails at the master anyway.
            seg.record(seal);
        }
    }
}

/// Forgets the directory entries of removed objects (`DataRequest::Drop`). A stale epoch is
/// refused before anything is dropped; an address in no segment of this engine (the segment
/// was unmounted, or never held the object) has nothing to drop, so it counts as done.
pub(crate) fn apply_drops(reg: &Registry, epoch: u64, drops: &[Dropped]) -> Result<()> {
    let mut by_segment: Vec<(Region, Vec<Dropped>)> = Vec::new();
    for d in drops {
        let Ok(region) = reg.resolve(d.addr, 0) else {
            continue;
        };
        let Some(seg) = region.segment() else {
            continue;
        };
        check_epoch(&region, epoch)?;
        let base = seg.base_addr();
        match by_segment
            .iter_mut()
            .find(|(r, _)| r.segment().is_some_and(|s| s.base_addr() == base))
        {
            Some((_, v)) => v.push(*d),
            None => by_segment.push((region, vec![*d])),
        }
    }
    for (region, v) in &by_segment {
        if let Some(seg) = region.segment() {
            seg.forget(v);
        }
    }
    Ok(())
}

/// Validates a read: every range inside registered memory, and when an object is expected
/// for a range, the owning segment's directory holds that object over the range.
pub(crate) fn check_read(
    reg: &Registry,
    ranges: &[Range],
    expect: &[Option<ObjectId>],
    out: &mut Vec<Region>,
) -> Result<()> {
    out.clear();
    if !expect.is_empty() && expect.len() != ranges.len() {
        return Err(Error::invalid(format!(
            "expect list does not match ranges: ranges={} expect={}",
            ranges.len(),
            expect.len()
        )));
    }
    for (i, r) in ranges.iter().enumerate() {
        let region = reg.resolve(r.addr, r.len)?;
        if let Some(Some(object)) = expect.get(i) {
            let held = region
                .segment()
                .is_some_and(|seg| seg.holds(*object, r.addr, r.len));
            if !held {
                return Err(Error::new(
                    ErrorCode::ReplicaIsGone,
                    format!(
                        "replica no longer held: object={object} addr={:#x} len={}",
                        r.addr, r.len
                    ),
                ));
            }
        }
        out.push(region);
    }
    Ok(())
}
