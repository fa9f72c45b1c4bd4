//! The put path (contract §3.2): reserve at the master, write every replica (one batched write
//! per owning segment, acknowledged only once the bytes are in place and sealed in the owner's
//! directory, W12), then commit; replicas whose write failed are dropped at commit, and an
//! object with no replica written is revoked.

use crate::metrics::Op;
use crate::{Client, code_result, join_all, unexpected};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tidepool_common::{Error, ErrorCode, ObjectId, Result, SegmentId};
use tidepool_proto::data::Seal;
use tidepool_proto::master::{MasterRequest, MasterResponse, PutEndItem, PutStartResult};
use tidepool_proto::{MemoryReplica, ReplicateConfig, SoftPin};
use tidepool_transfer::WriteOp;

/// Wait between polls while another writer's put of the same key is in flight (W11).
const IN_FLIGHT_POLL: Duration = Duration::from_micros(500);
/// Give up waiting for another writer after this long (the master's take-over age is 30 s).
const IN_FLIGHT_MAX_WAIT: Duration = Duration::from_secs(35);
/// Batches of at least twice this many objects are cut into chunks of about this size that run
/// concurrently, so one chunk's reservation, copy, seal and commit overlap another's: a batch
/// is otherwise a strict sequence in which the master, the owners and this client take turns.
const PIPELINE_CHUNK: usize = 256;
/// At most this many chunks of one batch are in flight at once.
const PIPELINE_DEPTH: usize = 4;

/// Seal flag bits recorded in the owner's directory (contract §8).
const SEAL_SOFT_PIN: u8 = 1;
const SEAL_HARD_PIN: u8 = 2;

/// The order in which the chunks of one pipelined batch commit: last chunk first, so the
/// master ranks the batch's first keys warmest exactly as it does for an unsplit batch (it
/// commits a batch's items last to first; see `tidepool-master`'s `put_end`). A chunk whose
/// turn has not come waits before its commit only; reservations, copies and seals overlap.
struct CommitOrder {
    /// Finished chunks, and the highest chunk not finished yet (`None`: all done).
    state: parking_lot::Mutex<(Vec<bool>, Option<usize>)>,
    changed: tokio::sync::Notify,
}

impl CommitOrder {
    fn new(chunks: usize) -> Self {
        Self {
            state: parking_lot::Mutex::new((vec![false; chunks], chunks.checked_sub(1))),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Resolves once every chunk after `chunk` has committed or given up.
    async fn wait(&self, chunk: usize) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.state.lock().1.is_none_or(|next| next <= chunk) {
                return;
            }
            changed.await;
        }
    }

    /// Marks `chunk` finished (committed, or nothing left to commit).
    fn finish(&self, chunk: usize) {
        let mut st = self.state.lock();
        let (done, next) = &mut *st;
        done[chunk] = true;
        while let Some(n) = *next
            && done[n]
        {
            *next = n.checked_sub(1);
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// A chunk's place in its batch's [`CommitOrder`]; finishes the chunk when dropped, whichever
/// way its put ends (a chunk with nothing to commit must not hold the others up).
struct Turn<'a> {
    order: &'a CommitOrder,
    chunk: usize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.order.finish(self.chunk);
    }
}

/// One object the master allocated for this batch.
struct Allocated {
    /// Index into the caller's items.
    item: usize,
    object_id: ObjectId,
    epoch: u64,
    replicas: Vec<MemoryReplica>,
}

/// Everything one owning segment receives for this batch: one write request.
#[derive(Default)]
struct SegmentBatch<'a> {
    epoch: u64,
    ops: Vec<WriteOp<'a>>,
    seals: Vec<Seal>,
    /// Indices into the allocation list of the objects this batch carries a replica of.
    objects: Vec<usize>,
}

fn seal_flags(cfg: &ReplicateConfig) -> u8 {
    let soft = matches!(cfg.soft_pin, SoftPin::Enable { ttl_ms } if ttl_ms != Some(0));
    (if soft { SEAL_SOFT_PIN } else { 0 }) | (if cfg.hard_pin { SEAL_HARD_PIN } else { 0 })
}

impl Client {
    /// Stores one object (write-once: an existing key returns Ok and writes nothing).
    pub async fn put(&self, key: &str, value: &[u8], cfg: &ReplicateConfig) -> Result<()> {
        let parts = [value];
        self.put_parts_batch(&[(key, &parts[..])], cfg)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("empty result")))
    }

    /// Stores many objects; each object is the concatenation of its parts (gather). One
    /// result per item, in order. `Ok` means the key is readable now (W11): written by this
    /// call, or already readable before it.
    pub async fn put_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.store_parts_batch(items, cfg, false).await
    }

    /// Stores or replaces one object (`upsert`).
    pub async fn upsert(&self, key: &str, value: &[u8], cfg: &ReplicateConfig) -> Result<()> {
        self.store(key, value, cfg, true).await
    }

    /// [`Client::put`] (`replace == false`) or [`Client::upsert`].
    pub async fn store(
        &self,
        key: &str,
        value: &[u8],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Result<()> {
        let parts = [value];
        self.store_parts_batch(&[(key, &parts[..])], cfg, replace)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("empty result")))
    }

    /// Insert-or-replace many objects (`upsert*`): a readable key's old version is replaced
    /// (unreadable, -703, until the new one commits); a live read lease on it refuses the
    /// replacement with -706 (W13), so a reader never sees torn bytes. `Ok` means this call's
    /// bytes are readable now.
    pub async fn upsert_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.store_parts_batch(items, cfg, true).await
    }

    /// [`Client::put_parts_batch`] (`replace == false`) or [`Client::upsert_parts_batch`].
    pub async fn store_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Vec<Result<()>> {
        let t = Instant::now();
        let results = if items.len() >= 2 * PIPELINE_CHUNK {
            let per = items
                .len()
                .div_ceil(items.len().div_ceil(PIPELINE_CHUNK).min(PIPELINE_DEPTH));
            let order = CommitOrder::new(items.len().div_ceil(per));
            let chunks = items.chunks(per).enumerate().map(|(k, c)| {
                let turn = Some(Turn {
                    order: &order,
                    chunk: k,
                });
                self.put_parts_batch_inner(c, cfg, replace, turn)
            });
            join_all(chunks).await.into_iter().flatten().collect()
        } else {
            self.put_parts_batch_inner(items, cfg, replace, None).await
        };
        let bytes: u64 = items
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((_, parts), _)| parts.iter().map(|p| p.len() as u64).sum::<u64>())
            .sum();
        let op = if items.len() == 1 {
            Op::Put
        } else {
            Op::BatchPut
        };
        self.inner.metrics.op(op, t.elapsed(), bytes);
        results
    }

    async fn put_parts_batch_inner(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
        replace: bool,
        mut turn: Option<Turn<'_>>,
    ) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = vec![None; items.len()];
        let mut pending: Vec<usize> = Vec::with_capacity(items.len());
        for (i, (key, parts)) in items.iter().enumerate() {
            let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
            if key.is_empty() || size == 0 {
                results[i] = Some(Err(Error::invalid(format!(
                    "empty key or value: key={key:?}"
                ))));
            } else {
                pending.push(i);
            }
        }
        let started = Instant::now();
        while !pending.is_empty() {
            let req: Vec<(String, u64)> = pending
                .iter()
                .map(|&i| {
                    let (key, parts) = items[i];
                    (key.to_string(), parts.iter().map(|p| p.len() as u64).sum())
                })
                .collect();
            let config = cfg.clone();
            let call = self.inner.rpc.call(if replace {
                MasterRequest::UpsertStart { items: req, config }
            } else {
                MasterRequest::PutStart { items: req, config }
            });
            let answers = match call.await.and_then(crate::check) {
                Ok(MasterResponse::PutStart(a)) if a.len() == pending.len() => a,
                other => {
                    let e = match other {
                        Ok(resp) => unexpected(resp),
                        Err(e) => e,
                    };
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut retry = Vec::new();
            let mut allocated = Vec::new();
            for (&i, a) in pending.iter().zip(answers) {
                match a {
                    PutStartResult::Exists => results[i] = Some(Ok(())),
                    PutStartResult::InFlight => retry.push(i),
                    PutStartResult::Failed(code) => {
                        results[i] = Some(Err(Error::new(
                            code,
                            format!("put refused: key={}", items[i].0),
                        )))
                    }
                    PutStartResult::Allocated {
                        object_id,
                        epoch,
                        replicas,
                    } => allocated.push(Allocated {
                        item: i,
                        object_id,
                        epoch,
                        replicas,
                    }),
                }
            }
            if !allocated.is_empty() {
                for (i, r) in self
                    .write_allocated(items, &allocated, seal_flags(cfg), turn.take())
                    .await
                {
                    results[i] = Some(r);
                }
            }
            // Our turn ends with the first round: a key we retry may be another chunk's, which
            // commits only after this chunk finishes.
            drop(turn.take());
            if retry.is_empty() {
                break;
            }
            if started.elapsed() > IN_FLIGHT_MAX_WAIT {
                for &i in &retry {
                    results[i] = Some(Err(Error::new(
                        ErrorCode::ReplicaIsNotReady,
                        "another writer's put did not finish",
                    )));
                }
                break;
            }
            // Another writer holds the key: wait for its commit or revoke (W11), then ask again.
            tokio::time::sleep(IN_FLIGHT_POLL).await;
            pending = retry;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("no result"))))
            .collect()
    }

    /// Writes allocated objects (one batched write per target segment), then commits the
    /// written ones and revokes those with no replica written.
    async fn write_allocated(
        &self,
        items: &[(&str, &[&[u8]])],
        allocs: &[Allocated],
        flags: u8,
        turn: Option<Turn<'_>>,
    ) -> Vec<(usize, Result<()>)> {
        let mut by_seg: HashMap<SegmentId, SegmentBatch<'_>> = HashMap::new();
        for (n, a) in allocs.iter().enumerate() {
            let (key, parts) = items[a.item];
            for r in &a.replicas {
                let b = by_seg.entry(r.segment).or_default();
                b.epoch = a.epoch;
                let mut addr = r.addr;
                for p in parts.iter().filter(|p| !p.is_empty()) {
                    b.ops.push(WriteOp {
                        src: p,
                        remote_addr: addr,
                    });
                    addr += p.len() as u64;
                }
                b.seals.push(Seal {
                    key: key.to_string(),
                    object_id: a.object_id,
                    addr: r.addr,
                    len: r.len,
                    flags,
                });
                b.objects.push(n);
            }
        }
        let writes = by_seg.into_iter().map(|(seg, b)| async move {
            let r = match self.target(seg).await {
                Ok(t) => {
                    let r = self.inner.engine.write(&t, b.epoch, &b.ops, &b.seals).await;
                    if r.is_err() {
                        self.forget_target(seg, &t);
                    }
                    r
                }
                Err(e) => Err(e),
            };
            (seg, r, b.objects)
        });
        let mut failed: Vec<Vec<SegmentId>> = vec![Vec::new(); allocs.len()];
        let mut last_err: Vec<Option<Error>> = vec![None; allocs.len()];
        for (seg, r, objects) in join_all(writes).await {
            if let Err(e) = r {
                for n in objects {
                    failed[n].push(seg);
                    last_err[n] = Some(e.clone());
                }
            }
        }
        let mut ends = Vec::new();
        let mut end_idx = Vec::new();
        let mut revokes = Vec::new();
        let mut out = Vec::with_capacity(allocs.len());
        for (n, a) in allocs.iter().enumerate() {
            let key = items[a.item].0.to_string();
            if failed[n].len() >= a.replicas.len() {
                revokes.push((key, a.object_id));
                let e = last_err[n]
                    .take()
                    .unwrap_or_else(|| Error::new(ErrorCode::TransferFail, "write failed"));
                out.push((a.item, Err(e)));
            } else {
                end_idx.push(a.item);
                ends.push(PutEndItem {
                    key,
                    object_id: a.object_id,
                    failed: std::mem::take(&mut failed[n]),
                });
            }
        }
        if !revokes.is_empty() {
            // Best effort: if the master is unreachable, our liveness revokes them (W1).
            let _ = self.inner.rpc.call(MasterRequest::PutRevoke(revokes)).await;
        }
        if let Some(t) = &turn {
            t.order.wait(t.chunk).await;
        }
        if !ends.is_empty() {
            match self
                .inner
                .rpc
                .call(MasterRequest::PutEnd(ends))
                .await
                .and_then(crate::check)
            {
                Ok(MasterResponse::Codes(codes)) if codes.len() == end_idx.len() => {
                    out.extend(
                        end_idx
                            .into_iter()
                            .zip(codes)
                            .map(|(i, c)| (i, code_result(c))),
                    );
                }
                other => {
                    let e = match other {
                        Ok(resp) => unexpected(resp),
                        Err(e) => e,
                    };
                    out.extend(end_idx.into_iter().map(|i| (i, Err(e.clone()))));
                }
            }
        }
        drop(turn);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::CommitOrder;
    use std::sync::Arc;

    /// Chunks commit last to first whatever order they get ready in, and a chunk that gives up
    /// without committing holds nobody up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_commit_last_to_first() {
        let order = Arc::new(CommitOrder::new(4));
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Ready in the order 0, 2, 3; chunk 1 has nothing to commit.
        for (k, delay_ms) in [(0usize, 0u64), (2, 10), (3, 30)] {
            let (order, log) = (order.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                order.wait(k).await;
                log.lock().push(k);
                order.finish(k);
            }));
        }
        order.finish(1);
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(5), t)
                .await
                .expect("no chunk waits forever")
                .unwrap();
        }
        assert_eq!(*log.lock(), vec![3, 2, 0]);
    }
}
