//! The owner side of the data plane: what a segment owner checks and records for a request,
//! independent of how the request arrived (TCP server or in-process call).
//!
//! Every range is resolved against the [`Registry`] before any memory is touched (W14); writes
//! and seals are fenced by the segment's epoch (contract §8); seals land in the segment's
//! directory only after all bytes are in place (W12).

use crate::memory::{LocalSegment, Region, Registry};
use std::sync::Arc;
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

/// Refuses a write that comes too late: one whose seal a newer object's entry overlaps (its
/// put was revoked and the range given to that newer object), before any byte lands over the
/// newer object's (`regions` as for [`apply_seals`]).
pub(crate) fn check_not_late(regions: &[Region], seals: &[Seal]) -> Result<()> {
    for_each_run(regions, seals, |seg, run| {
        match seg.first_late(run.iter()) {
            Some(late) => Err(Error::new(
                ErrorCode::InvalidWrite,
                format!(
                    "range holds a newer object: key={} object={} addr={:#x} len={}",
                    late.key, late.object_id, late.addr, late.len
                ),
            )),
            None => Ok(()),
        }
    })
}

/// Records `seals` as claims ([`Seal::PENDING`]): their bytes did not all land (a payload cut
/// short), or are about to.
pub(crate) fn apply_claims(regions: &[Region], seals: &[Seal]) {
    let _ = for_each_run(regions, seals, |seg, run| {
        seg.record_all(run.iter().map(Seal::claim));
        Ok(())
    });
}

/// Records `seals` whose regions `check_*` resolved (`regions` is aligned with `seals`). A
/// late seal is dropped silently: its bytes harm nothing, and its put was revoked, so its commit
/// fails at the master anyway.
pub(crate) fn apply_seals(regions: &[Region], seals: &[Seal]) {
    let _ = for_each_run(regions, seals, |seg, run| {
        seg.record_all(run.iter().cloned());
        Ok(())
    });
}

/// Calls `f` once per run of consecutive seals in one segment (a request's seals are nearly
/// always in one), so a batch takes the directory lock once, not once per seal.
fn for_each_run(
    regions: &[Region],
    seals: &[Seal],
    mut f: impl FnMut(&LocalSegment, &[Seal]) -> Result<()>,
) -> Result<()> {
    let mut i = 0;
    while i < seals.len().min(regions.len()) {
        let Some(seg) = regions[i].segment() else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < seals.len().min(regions.len())
            && regions[j].segment().is_some_and(|s| Arc::ptr_eq(s, seg))
        {
            j += 1;
        }
        f(seg, &seals[i..j])?;
        i = j;
    }
    Ok(())
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
