//! The read path (contract §3.3): `GetReplicas` grants a lease and names the replicas (own
//! segment first, then same host, then others); one batched read per owning segment fills the
//! caller's buffers (scatter: an object's bytes fill its pieces in order); a replica that fails
//! is retried on the object's next replica; a read that finishes after the lease deadline is
//! -707, because its range may already hold another object's bytes.

use crate::metrics::Op;
use crate::{Client, join_all};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tidepool_common::{Error, ErrorCode, ObjectId, Result, SegmentId};
use tidepool_proto::ObjectView;
use tidepool_transfer::ReadOp;

/// What one key needs read.
struct Wanted {
    size: u64,
    object_id: ObjectId,
    /// Memory replicas as `(segment, addr)`, in the master's preference order.
    replicas: Vec<(SegmentId, u64)>,
    /// Which replica the next attempt uses.
    next: usize,
}

impl Client {
    /// Reads objects into caller buffers; returns each object's size (buffers may be larger;
    /// smaller is -600).
    pub async fn batch_get_into(&self, keys: &[&str], bufs: &mut [&mut [u8]]) -> Vec<Result<u64>> {
        let mut parts: Vec<Vec<&mut [u8]>> = bufs.iter_mut().map(|b| vec![&mut **b]).collect();
        self.batch_get_into_parts(keys, &mut parts).await
    }

    /// Reads objects into scattered buffers: object `i` fills `bufs[i]`'s pieces in order
    /// (pieces past its end are untouched). Returns each object's size; if the pieces hold
    /// fewer bytes than the object, -600.
    pub async fn batch_get_into_parts(
        &self,
        keys: &[&str],
        bufs: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        if keys.len() != bufs.len() {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys and buffers differ in length")))
                .collect();
        }
        let sent = Instant::now();
        let views = self.lookup(keys).await;
        let results = self.read_views(keys, views, bufs, sent).await;
        let bytes = results.iter().filter_map(|r| r.as_ref().ok()).sum();
        let op = if keys.len() == 1 {
            Op::Get
        } else {
            Op::BatchGet
        };
        self.inner.metrics.op(op, sent.elapsed(), bytes);
        results
    }

    /// Reads one object into `buf`, returning its size.
    pub async fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        let mut bufs = [buf];
        self.batch_get_into(&[key], &mut bufs)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))
    }

    /// Reads one whole object (one lookup, then a read into an exactly sized buffer).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let sent = Instant::now();
        let mut views = self.lookup(&[key]).await;
        let view = views
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))?;
        let size = usize::try_from(view.size)
            .map_err(|_| Error::invalid(format!("object too large: size={}", view.size)))?;
        let mut buf = vec![0u8; size];
        let r = {
            let mut parts = [vec![&mut buf[..]]];
            self.read_views(&[key], vec![Ok(view)], &mut parts, sent)
                .await
                .pop()
                .unwrap_or_else(|| Err(Error::internal("no result")))
        };
        if r.is_ok() {
            self.inner
                .metrics
                .op(Op::Get, sent.elapsed(), buf.len() as u64);
        }
        r.map(|_| buf)
    }

    /// Size of an object (grants a lease, like every lookup).
    pub async fn get_size(&self, key: &str) -> Result<u64> {
        self.lookup(&[key])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))
            .map(|v| v.size)
    }

    /// Reads the objects `views` describe into `bufs`.
    async fn read_views(
        &self,
        keys: &[&str],
        views: Vec<Result<ObjectView>>,
        bufs: &mut [Vec<&mut [u8]>],
        sent: Instant,
    ) -> Vec<Result<u64>> {
        let mut results: Vec<Result<u64>> = Vec::with_capacity(keys.len());
        let mut wanted: Vec<Option<Wanted>> = Vec::with_capacity(keys.len());
        let mut deadline: Option<Instant> = None;
        for (i, v) in views.into_iter().enumerate() {
            let view = match v {
                Ok(view) => view,
                Err(e) => {
                    results.push(Err(e));
                    wanted.push(None);
                    continue;
                }
            };
            let capacity: u64 = bufs[i].iter().map(|p| p.len() as u64).sum();
            if capacity < view.size {
                results.push(Err(Error::invalid(format!(
                    "buffer smaller than object: key={} size={} capacity={capacity}",
                    keys[i], view.size
                ))));
                wanted.push(None);
                continue;
            }
            let replicas: Vec<(SegmentId, u64)> = view
                .replicas
                .iter()
                .filter_map(|r| r.memory())
                .map(|m| (m.segment, m.addr))
                .collect();
            if replicas.is_empty() {
                results.push(Err(Error::new(
                    ErrorCode::InvalidReplica,
                    format!("no memory replica: key={}", keys[i]),
                )));
                wanted.push(None);
                continue;
            }
            let d = sent + Duration::from_millis(view.lease_ttl_ms);
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
            results.push(Ok(view.size));
            wanted.push(Some(Wanted {
                size: view.size,
                object_id: view.object_id,
                replicas,
                next: 0,
            }));
        }
        // Attempt after attempt, each object on its next replica until one read succeeds.
        loop {
            let mut jobs: HashMap<SegmentId, (Vec<ReadOp<'_>>, Vec<usize>)> = HashMap::new();
            for (i, pieces) in bufs.iter_mut().enumerate() {
                let Some(w) = wanted[i].as_mut() else {
                    continue;
                };
                let Some(&(seg, addr)) = w.replicas.get(w.next) else {
                    continue;
                };
                w.next += 1;
                let job = jobs.entry(seg).or_default();
                let mut left = w.size;
                let mut remote = addr;
                for piece in pieces.iter_mut() {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(piece.len() as u64) as usize;
                    job.0.push(ReadOp {
                        dst: &mut piece[..take],
                        remote_addr: remote,
                        expect: Some(w.object_id),
                    });
                    remote += take as u64;
                    left -= take as u64;
                }
                job.1.push(i);
            }
            if jobs.is_empty() {
                break;
            }
            let reads = jobs.into_iter().map(|(seg, (mut ops, idx))| async move {
                let r = match self.target(seg).await {
                    Ok(t) => {
                        let r = self.inner.engine.read(&t, &mut ops).await;
                        if r.is_err() {
                            self.forget_target(seg, &t);
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                (r, idx)
            });
            for (r, idx) in join_all(reads).await {
                for i in idx {
                    match &r {
                        // Done with this key.
                        Ok(()) => wanted[i] = None,
                        Err(e) => {
                            let more = wanted[i]
                                .as_ref()
                                .is_some_and(|w| w.next < w.replicas.len());
                            if !more {
                                results[i] = Err(e.clone());
                                wanted[i] = None;
                            }
                        }
                    }
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            // The lease ran out while we read: the range may have been reused (contract §3.3).
            for r in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(Error::new(
                        ErrorCode::LeaseExpired,
                        "read finished after its lease",
                    ));
                }
            }
        }
        results
    }
}
