//! Read paths the Python binding needs beyond [`Client::batch_get_into`]: scatter reads into
//! several pieces per object (Mooncake's `batch_get_into_multi_buffers`) and reads into buffers
//! sized after the lookup (`get`, `get_batch`, `get_buffer`), each with one master round trip.
//!
//! Kept in a file of its own so the main client file can change independently; the lead may
//! fold these into `lib.rs` when the client grows its own scatter read.

use crate::{Client, futures_join_all, unexpected};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tidepool_common::{Error, ErrorCode, ObjectId, Result, SegmentId};
use tidepool_proto::ObjectView;
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_transfer::ReadOp;

impl Client {
    /// Looks keys up for reading (grants leases). Returns the views and the instant the request
    /// was sent, from which lease deadlines count.
    pub async fn lookup(&self, keys: &[&str]) -> (Vec<Result<ObjectView>>, Instant) {
        let sent = Instant::now();
        let req = MasterRequest::GetReplicas(keys.iter().map(|k| k.to_string()).collect());
        let out = match self.inner.rpc.call(req).await.and_then(crate::check) {
            Ok(MasterResponse::Replicas(v)) if v.len() == keys.len() => v
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    r.map_err(|code| Error::new(code, format!("lookup failed: key={}", keys[i])))
                })
                .collect(),
            Ok(other) => {
                let e = unexpected(other);
                keys.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
        };
        (out, sent)
    }

    /// Scatter read: object `i` fills `pieces[i]` in order. The pieces' total capacity must be
    /// at least the object size (else -600); pieces past the end are untouched. Returns each
    /// object's size.
    pub async fn batch_get_into_pieces(
        &self,
        keys: &[&str],
        pieces: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        if keys.len() != pieces.len() {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys and buffers differ in length")))
                .collect();
        }
        let (views, sent) = self.lookup(keys).await;
        self.read_views(keys, views, sent, pieces).await
    }

    /// Reads whole objects into fresh vectors; objects larger than `limit` fail with -600
    /// (the local-buffer rule of the copying APIs).
    pub async fn batch_get_owned(&self, keys: &[&str], limit: u64) -> Vec<Result<Vec<u8>>> {
        let (views, sent) = self.lookup(keys).await;
        let mut owned: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        let views: Vec<Result<ObjectView>> = views
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Ok(view) if view.size > limit => {
                    owned.push(Vec::new());
                    Err(Error::invalid(format!(
                        "object larger than the local buffer: key={} size={} limit={limit}",
                        keys[i], view.size
                    )))
                }
                Ok(view) => {
                    owned.push(vec![0u8; view.size as usize]);
                    Ok(view)
                }
                Err(e) => {
                    owned.push(Vec::new());
                    Err(e)
                }
            })
            .collect();
        let mut pieces: Vec<Vec<&mut [u8]>> =
            owned.iter_mut().map(|b| vec![b.as_mut_slice()]).collect();
        let sizes = self.read_views(keys, views, sent, &mut pieces).await;
        drop(pieces);
        sizes
            .into_iter()
            .zip(owned)
            .map(|(r, b)| r.map(|_| b))
            .collect()
    }

    /// Reads objects found by [`lookup`](Self::lookup) (`sent` is its send instant) into their
    /// pieces, one batched read per owning segment; results that finished after their lease are
    /// -707. Lets a caller size its buffers between the lookup and the read.
    pub async fn read_looked_up(
        &self,
        keys: &[&str],
        views: Vec<Result<ObjectView>>,
        sent: Instant,
        pieces: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        if keys.len() != pieces.len() || keys.len() != views.len() {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys, views and buffers differ in length")))
                .collect();
        }
        self.read_views(keys, views, sent, pieces).await
    }

    /// Reads looked-up objects into their pieces, one batched read per owning segment, and
    /// discards results that finished after their lease (-707).
    async fn read_views(
        &self,
        keys: &[&str],
        views: Vec<Result<ObjectView>>,
        sent: Instant,
        pieces: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        let mut results: Vec<Result<u64>> = Vec::with_capacity(keys.len());
        // Per segment: (key index, replica address, object id, object size).
        let mut by_seg: HashMap<SegmentId, Vec<(usize, u64, ObjectId, u64)>> = HashMap::new();
        let mut deadline = sent + Duration::from_secs(3600);
        for (i, v) in views.into_iter().enumerate() {
            let view = match v {
                Ok(view) => view,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let capacity: u64 = pieces[i].iter().map(|p| p.len() as u64).sum();
            if capacity < view.size {
                results.push(Err(Error::invalid(format!(
                    "buffer smaller than object: key={} size={} capacity={capacity}",
                    keys[i], view.size
                ))));
                continue;
            }
            let Some(m) = view.replicas.iter().find_map(|r| r.memory()) else {
                results.push(Err(Error::new(
                    ErrorCode::InvalidReplica,
                    "no memory replica",
                )));
                continue;
            };
            deadline = deadline.min(sent + Duration::from_millis(view.lease_ttl_ms));
            by_seg
                .entry(m.segment)
                .or_default()
                .push((i, m.addr, view.object_id, view.size));
            results.push(Ok(view.size));
        }
        // Hand each segment's read only its own pieces.
        let mut slots: Vec<Option<&mut Vec<&mut [u8]>>> = pieces.iter_mut().map(Some).collect();
        let mut jobs = Vec::new();
        for (seg, list) in by_seg {
            let mut ops = Vec::new();
            let mut idx = Vec::with_capacity(list.len());
            for (i, addr, oid, size) in list {
                let Some(parts) = slots[i].take() else {
                    continue;
                };
                let mut left = size;
                let mut offset = 0u64;
                for p in parts.iter_mut() {
                    if left == 0 {
                        break;
                    }
                    let n = left.min(p.len() as u64);
                    if n == 0 {
                        continue;
                    }
                    ops.push(ReadOp {
                        dst: &mut p[..n as usize],
                        remote_addr: addr + offset,
                        // The owner's directory knows the object by its start address.
                        expect: if offset == 0 { Some(oid) } else { None },
                    });
                    offset += n;
                    left -= n;
                }
                idx.push(i);
            }
            jobs.push((seg, ops, idx));
        }
        let futs = jobs.into_iter().map(|(seg, mut ops, idx)| async move {
            let r = match self.target(seg).await {
                Ok(t) => {
                    let r = self.inner.engine.read(&t, &mut ops).await;
                    if r.is_err() {
                        self.inner.engine.forget_peer(&t.endpoint);
                        self.inner.segments.lock().remove(&seg);
                    }
                    r
                }
                Err(e) => Err(e),
            };
            (r, idx)
        });
        for (r, idx) in futures_join_all(futs).await {
            if let Err(e) = r {
                for i in idx {
                    results[i] = Err(e.clone());
                }
            }
        }
        if Instant::now() > deadline {
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
