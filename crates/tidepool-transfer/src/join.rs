//! A minimal "run these futures concurrently in this task" helper, so chunks of one transfer
//! can borrow the caller's buffers (spawned tasks would need `'static` data).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use tidepool_common::Result;

/// Polls every future until all finish; returns the first error (by position), if any.
pub(crate) async fn try_join_all<F>(futs: Vec<F>) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let mut futs: Vec<Option<Pin<Box<F>>>> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Result<()>> = Vec::with_capacity(futs.len());
    results.resize_with(futs.len(), || Ok(()));
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, res) in futs.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        *res = r;
                        // A finished future must never be polled again.
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().collect()
}
