//! In-process transport: the target segment belongs to this engine, so a transfer is a
//! validated memory copy plus a directory update, with the same checks a remote request gets.

use super::{Transport, copy_batch};
use crate::copy::{Piece, Sink};
use crate::engine::{ReadOp, Shared, Target, WriteOp};
use crate::owner;
use crate::stats::add;
use std::sync::Arc;
use tidepool_common::{ObjectId, Result};
use tidepool_proto::data::{Range, Seal};

/// Copies within this process.
pub(crate) struct LocalTransport {
    shared: Arc<Shared>,
}

impl LocalTransport {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Transport for LocalTransport {
    async fn write(
        &self,
        _target: &Target,
        epoch: u64,
        ops: &[WriteOp<'_>],
        seals: &[Seal],
    ) -> Result<()> {
        let ranges: Vec<Range> = ops
            .iter()
            .map(|o| Range {
                addr: o.remote_addr,
                len: o.src.len() as u64,
            })
            .collect();
        let mut regions = Vec::with_capacity(ranges.len() + seals.len());
        owner::check_write(&self.shared.registry, epoch, &ranges, seals, &mut regions)?;
        let pieces: Vec<Piece> = ops
            .iter()
            .map(|op| Piece {
                src: op.src.as_ptr(),
                dst: op.remote_addr as *mut u8,
                len: op.src.len(),
            })
            .collect();
        let bytes: u64 = ranges.iter().map(|r| r.len).sum();
        // No claim needed: this copy cannot stop half way without the owner (this process)
        // going with it.
        owner::check_not_late(&regions[ranges.len()..], seals)?;
        // SAFETY: `check_write` validated every destination inside a registered region whose
        // owner `regions` keeps alive; the sources are the caller's live slices; the master
        // never allocates two objects of one batch over the same bytes, so destinations are
        // disjoint.
        unsafe { copy_batch(&pieces, Sink::Segment) };
        owner::apply_seals(&regions[ranges.len()..], seals);
        add(&self.shared.stats.local_bytes_written, bytes);
        Ok(())
    }

    async fn read(&self, _target: &Target, ops: &mut [ReadOp<'_>]) -> Result<()> {
        let ranges: Vec<Range> = ops
            .iter()
            .map(|o| Range {
                addr: o.remote_addr,
                len: o.dst.len() as u64,
            })
            .collect();
        let expect: Vec<Option<ObjectId>> = ops.iter().map(|o| o.expect).collect();
        let mut regions = Vec::with_capacity(ranges.len());
        owner::check_read(&self.shared.registry, &ranges, &expect, &mut regions)?;
        let pieces: Vec<Piece> = ops
            .iter_mut()
            .map(|op| Piece {
                src: op.remote_addr as *const u8,
                dst: op.dst.as_mut_ptr(),
                len: op.dst.len(),
            })
            .collect();
        let bytes: u64 = ranges.iter().map(|r| r.len).sum();
        // SAFETY: `check_read` validated every source inside a registered region whose owner
        // `regions` keeps alive; the destinations are the caller's exclusive (hence disjoint)
        // slices.
        unsafe { copy_batch(&pieces, Sink::Caller) };
        add(&self.shared.stats.local_bytes_read, bytes);
        Ok(())
    }
}
