//! Transports: how bytes reach a target's memory. The engine picks one per call
//! (in-process, same-host shared memory, or TCP); each implements [`Transport`].
//!
//! A transport's `write` completes only once the bytes are in the owner's memory and the
//! seals are recorded (W12). A later RDMA transport implements the same trait: it resolves a
//! registered region's keys from the registry, posts work requests and completes the future
//! when its completion queue reports every work request done.

use crate::engine::{ReadOp, Target, WriteOp};
use std::future::Future;
use tidepool_common::Result;
use tidepool_proto::data::Seal;

pub(crate) mod local;
pub(crate) mod shm;
pub(crate) mod tcp;

/// Moves a batch of ranges to or from one target.
pub(crate) trait Transport: Send + Sync {
    /// Writes every op's bytes into the target, then records `seals` in its directory.
    fn write(
        &self,
        target: &Target,
        epoch: u64,
        ops: &[WriteOp<'_>],
        seals: &[Seal],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fills every op's `dst` from the target.
    fn read(
        &self,
        target: &Target,
        ops: &mut [ReadOp<'_>],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Copies a batch ([`crate::copy::copy_many`]), stepping off the async worker when it is large
/// so other tasks on this runtime thread are not stalled for milliseconds.
///
/// # Safety
/// As [`crate::copy::copy_many`].
pub(crate) unsafe fn copy_batch(pieces: &[crate::copy::Piece], sink: crate::copy::Sink) {
    const BLOCKING_COPY: usize = 4 << 20;
    let total: usize = pieces.iter().map(|p| p.len).sum();
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if total >= BLOCKING_COPY && multi {
        // SAFETY: forwarded from the caller's guarantee; the copy finishes before return.
        tokio::task::block_in_place(|| unsafe { crate::copy::copy_many(pieces, sink) });
    } else {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { crate::copy::copy_many(pieces, sink) }
    }
}
