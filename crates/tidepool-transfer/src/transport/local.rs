//! In-process transport: the target segment belongs to this engine, so a transfer is a
//! validated memory copy plus a directory update, with the same checks a remote request gets.

use super::{Transport, copy_large_aware};
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
        let mut bytes = 0u64;
        for op in ops {
            // SAFETY: `check_write` validated the destination inside a registered region whose
            // owner `regions` keeps alive; the source is the caller's live slice.
            unsafe { copy_large_aware(op.src.as_ptr(), op.remote_addr, op.src.len()) };
            bytes += op.src.len() as u64;
        }
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
        let mut bytes = 0u64;
        for op in ops.iter_mut() {
            let len = op.dst.len();
            // SAFETY: `check_read` validated the source inside a registered region whose owner
            // `regions` keeps alive; the destination is the caller's exclusive slice.
            unsafe {
                copy_large_aware(op.remote_addr as *const u8, op.dst.as_mut_ptr() as u64, len)
            };
            bytes += len as u64;
        }
        add(&self.shared.stats.local_bytes_read, bytes);
        Ok(())
    }
}
