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

/// Seal flag bits recorded in the owner's directory (contract §8).
const SEAL_SOFT_PIN: u8 = 1;
const SEAL_HARD_PIN: u8 = 2;

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
        let results = self.put_parts_batch_inner(items, cfg, replace).await;
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
                    .write_allocated(items, &allocated, seal_flags(cfg))
                    .await
                {
                    results[i] = Some(r);
                }
            }
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
        out
    }
}
