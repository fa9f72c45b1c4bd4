//! Tidepool client: contributes a memory segment to the pool (embedded mode, as inference
//! workers do, or as a standalone `tidepool node`) and puts and gets objects through the
//! master and the transfer engine.
//!
//! # Layout
//! - [`rpc`]: the pooled master connections.
//! - [`metadata`]: the HTTP metadata service client (publishing `ram/` and `rpc_meta/`).
//! - this file: [`Client`], the async API; [`BlockingClient`] wraps it with its own runtime.
//!
//! A put is: `PutStart` at the master (allocates ranges on distinct segments), one batched
//! write per owning segment through the transfer engine (acknowledged only when the bytes are
//! in place and sealed in the owner's directory), then `PutEnd`, after which the key is
//! readable. A get is `GetReplicas` (grants a lease) and one batched read per owner, checked
//! against the lease deadline (-707 if it finished too late).

mod ext;
pub mod metadata;
pub mod rpc;

use rpc::{HelloInfo, RpcPool, check};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidepool_common::{Error, ErrorCode, Incarnation, Result, SegmentId};
use tidepool_proto::data::Seal;
use tidepool_proto::master::{MasterRequest, MasterResponse, PutEndItem, PutStartResult};
use tidepool_proto::{ReplicateConfig, SegmentSpec};
use tidepool_transfer::{EngineConfig, LocalSegment, ReadOp, Target, TransferEngine, WriteOp};
use tokio::sync::watch;

/// How a client joins the pool.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master RPC address `host:port`.
    pub master_addr: String,
    /// Address the data server binds and advertises (e.g. "127.0.0.1").
    pub bind_host: String,
    /// Data port (0 = any).
    pub data_port: u16,
    /// Bytes contributed to the pool; 0 = pure client.
    pub segment_size: u64,
    /// TCP lanes per peer.
    pub lanes: usize,
    /// Same-host shared-memory path.
    pub enable_shm: bool,
    /// Master RPC connections.
    pub rpc_connections: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            master_addr: "127.0.0.1:50051".into(),
            bind_host: "127.0.0.1".into(),
            data_port: 0,
            segment_size: 0,
            lanes: 8,
            enable_shm: true,
            rpc_connections: 4,
        }
    }
}

struct Inner {
    rpc: RpcPool,
    engine: TransferEngine,
    name: String,
    segment: parking_lot::Mutex<Option<(Arc<LocalSegment>, SegmentSpec, SegmentId)>>,
    segments: parking_lot::Mutex<HashMap<SegmentId, Target>>,
    stop: watch::Sender<bool>,
    last_heartbeat_ok: std::sync::atomic::AtomicBool,
}

/// The async client. Cheap to clone; every method is safe to call from many tasks at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Wait between polls while another writer's put of the same key is in flight (W11).
const IN_FLIGHT_POLL: Duration = Duration::from_micros(500);
/// Give up waiting for another writer after this long (the master's take-over age is 30 s).
const IN_FLIGHT_MAX_WAIT: Duration = Duration::from_secs(35);

impl Client {
    /// Starts the transfer engine, registers with the master and mounts the segment, if any.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let engine = TransferEngine::start(EngineConfig {
            bind_host: cfg.bind_host.clone(),
            port: cfg.data_port,
            lanes: cfg.lanes,
            enable_shm: cfg.enable_shm,
            ..EngineConfig::default()
        })
        .await?;
        let name = engine.endpoint();
        let host = name
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let rpc = RpcPool::new(
            &cfg.master_addr,
            cfg.rpc_connections,
            HelloInfo {
                name: name.clone(),
                host,
                host_id: engine.host_id(),
            },
        );
        rpc.establish().await?;
        let (stop, _) = watch::channel(false);
        let client = Client {
            inner: Arc::new(Inner {
                rpc,
                engine,
                name,
                segment: parking_lot::Mutex::new(None),
                segments: parking_lot::Mutex::new(HashMap::new()),
                stop,
                last_heartbeat_ok: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        if cfg.segment_size > 0 {
            let seg = client.inner.engine.create_segment(cfg.segment_size)?;
            let spec = SegmentSpec {
                name: client.inner.name.clone(),
                incarnation: Incarnation(rand::random()),
                base_addr: seg.base_addr(),
                size: seg.size(),
                endpoint: client.inner.engine.endpoint(),
                host_id: client.inner.engine.host_id(),
                shm_socket: client.inner.engine.shm_socket(),
                protocol: "tcp".into(),
            };
            let id = client.mount(&seg, &spec).await?;
            *client.inner.segment.lock() = Some((seg, spec, id));
        }
        tokio::spawn(heartbeat_loop(
            Arc::downgrade(&client.inner),
            client.inner.stop.subscribe(),
        ));
        Ok(client)
    }

    async fn mount(&self, seg: &Arc<LocalSegment>, spec: &SegmentSpec) -> Result<SegmentId> {
        let session = self
            .inner
            .rpc
            .session()
            .ok_or_else(|| Error::new(ErrorCode::RpcFail, "no session"))?;
        seg.set_epoch(session.epoch);
        match check(
            self.inner
                .rpc
                .call(MasterRequest::MountSegment(spec.clone()))
                .await?,
        )? {
            MasterResponse::Mounted(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// The segment name (`host:port`) of this client.
    pub fn hostname(&self) -> &str {
        &self.inner.name
    }

    /// The transfer engine (for buffer registration and statistics).
    pub fn engine(&self) -> &TransferEngine {
        &self.inner.engine
    }

    /// True while the last heartbeat reached the master.
    pub fn healthy(&self) -> bool {
        self.inner
            .last_heartbeat_ok
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn target(&self, id: SegmentId) -> Result<Target> {
        if let Some(t) = self.inner.segments.lock().get(&id) {
            return Ok(t.clone());
        }
        match check(
            self.inner
                .rpc
                .call(MasterRequest::DescribeSegments(vec![id]))
                .await?,
        )? {
            MasterResponse::Segments(views) => {
                let mut cache = self.inner.segments.lock();
                for v in views {
                    cache.insert(v.id, Target::from(&v.spec));
                }
                cache.get(&id).cloned().ok_or_else(|| {
                    Error::new(
                        ErrorCode::SegmentNotFound,
                        format!("segment gone: segment={id}"),
                    )
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Stores one object (write-once: an existing key returns Ok and writes nothing).
    pub async fn put(&self, key: &str, value: &[u8], cfg: &ReplicateConfig) -> Result<()> {
        let parts = [value];
        self.put_parts_batch(&[(key, &parts[..])], cfg)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("empty result")))
    }

    /// Stores many objects; each object is the concatenation of its parts. One result per key.
    pub async fn put_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
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
                    (
                        items[i].0.to_string(),
                        items[i].1.iter().map(|p| p.len() as u64).sum(),
                    )
                })
                .collect();
            let answers = match self
                .inner
                .rpc
                .call(MasterRequest::PutStart {
                    items: req,
                    config: cfg.clone(),
                })
                .await
                .and_then(check)
            {
                Ok(MasterResponse::PutStart(a)) if a.len() == pending.len() => a,
                Ok(other) => {
                    let e = unexpected(other);
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut retry = Vec::new();
            let mut to_write = Vec::new();
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
                    } => to_write.push((i, object_id, epoch, replicas)),
                }
            }
            if !to_write.is_empty() {
                let outcome = self.write_allocated(items, &to_write).await;
                for (i, r) in outcome {
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
            tokio::time::sleep(IN_FLIGHT_POLL).await;
            pending = retry;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("no result"))))
            .collect()
    }

    /// Writes allocated objects (grouped per target segment, one batched write each), then
    /// commits the written ones and revokes the failed ones.
    async fn write_allocated(
        &self,
        items: &[(&str, &[&[u8]])],
        allocs: &[(
            usize,
            tidepool_common::ObjectId,
            u64,
            Vec<tidepool_proto::MemoryReplica>,
        )],
    ) -> Vec<(usize, Result<()>)> {
        // Group writes by segment so each owner gets one request.
        #[expect(clippy::type_complexity, reason = "rewritten with the batch planner")]
        let mut by_seg: HashMap<SegmentId, (u64, Vec<WriteOp<'_>>, Vec<Seal>, Vec<usize>)> =
            HashMap::new();
        for (n, (i, object_id, epoch, replicas)) in allocs.iter().enumerate() {
            let (key, parts) = items[*i];
            for r in replicas {
                let e = by_seg
                    .entry(r.segment)
                    .or_insert_with(|| (*epoch, Vec::new(), Vec::new(), Vec::new()));
                let mut addr = r.addr;
                for p in parts.iter() {
                    e.1.push(WriteOp {
                        src: p,
                        remote_addr: addr,
                    });
                    addr += p.len() as u64;
                }
                e.2.push(Seal {
                    key: key.to_string(),
                    object_id: *object_id,
                    addr: r.addr,
                    len: r.len,
                    flags: 0,
                });
                e.3.push(n);
            }
        }
        let futs = by_seg
            .into_iter()
            .map(|(seg, (epoch, ops, seals, owners))| async move {
                let r = match self.target(seg).await {
                    Ok(t) => {
                        let r = self.inner.engine.write(&t, epoch, &ops, &seals).await;
                        if r.is_err() {
                            self.inner.engine.forget_peer(&t.endpoint);
                            self.inner.segments.lock().remove(&seg);
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                (seg, r, owners)
            });
        let outcomes = futures_join_all(futs).await;
        let mut failed: Vec<Vec<SegmentId>> = vec![Vec::new(); allocs.len()];
        let mut last_err: Vec<Option<Error>> = vec![None; allocs.len()];
        for (seg, r, owners) in outcomes {
            if let Err(e) = r {
                for n in owners {
                    failed[n].push(seg);
                    last_err[n] = Some(e.clone());
                }
            }
        }
        let mut ends = Vec::new();
        let mut revokes = Vec::new();
        let mut out = Vec::with_capacity(allocs.len());
        for (n, (i, object_id, _, replicas)) in allocs.iter().enumerate() {
            if failed[n].len() >= replicas.len() {
                revokes.push(((*items)[*i].0.to_string(), *object_id));
                out.push((
                    *i,
                    Err(last_err[n]
                        .take()
                        .unwrap_or_else(|| Error::new(ErrorCode::TransferFail, "write failed"))),
                ));
            } else {
                ends.push((
                    n,
                    PutEndItem {
                        key: items[*i].0.to_string(),
                        object_id: *object_id,
                        failed: std::mem::take(&mut failed[n]),
                    },
                ));
            }
        }
        if !revokes.is_empty() {
            let _ = self.inner.rpc.call(MasterRequest::PutRevoke(revokes)).await;
        }
        if !ends.is_empty() {
            let idx: Vec<usize> = ends.iter().map(|(n, _)| *n).collect();
            let req = MasterRequest::PutEnd(ends.into_iter().map(|(_, e)| e).collect());
            match self.inner.rpc.call(req).await.and_then(check) {
                Ok(MasterResponse::Codes(codes)) if codes.len() == idx.len() => {
                    for (n, c) in idx.into_iter().zip(codes) {
                        out.push((allocs[n].0, code_result(c)));
                    }
                }
                Ok(other) => {
                    let e = unexpected(other);
                    out.extend(idx.into_iter().map(|n| (allocs[n].0, Err(e.clone()))));
                }
                Err(e) => out.extend(idx.into_iter().map(|n| (allocs[n].0, Err(e.clone())))),
            }
        }
        out
    }

    /// Reads objects into caller buffers; returns each object's size (buffers may be larger).
    pub async fn batch_get_into(&self, keys: &[&str], bufs: &mut [&mut [u8]]) -> Vec<Result<u64>> {
        if keys.len() != bufs.len() {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys and buffers differ in length")))
                .collect();
        }
        let sent = Instant::now();
        let req = MasterRequest::GetReplicas(keys.iter().map(|k| k.to_string()).collect());
        let views = match self.inner.rpc.call(req).await.and_then(check) {
            Ok(MasterResponse::Replicas(v)) if v.len() == keys.len() => v,
            Ok(other) => {
                let e = unexpected(other);
                return keys.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => return keys.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut results: Vec<Result<u64>> = Vec::with_capacity(keys.len());
        let mut by_seg: HashMap<SegmentId, Vec<(usize, u64, tidepool_common::ObjectId)>> =
            HashMap::new();
        let mut deadline = sent + Duration::from_secs(3600);
        for (i, v) in views.into_iter().enumerate() {
            match v {
                Err(code) => results.push(Err(Error::new(
                    code,
                    format!("get failed: key={}", keys[i]),
                ))),
                Ok(view) => {
                    if (bufs[i].len() as u64) < view.size {
                        results.push(Err(Error::invalid(format!(
                            "buffer smaller than object: key={} size={} capacity={}",
                            keys[i],
                            view.size,
                            bufs[i].len()
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
                        .push((i, m.addr, view.object_id));
                    results.push(Ok(view.size));
                }
            }
        }
        // Split the caller's buffers so each segment's read borrows only its own.
        let mut slots: Vec<Option<&mut [u8]>> = bufs.iter_mut().map(|b| Some(&mut **b)).collect();
        let mut jobs = Vec::new();
        for (seg, list) in by_seg {
            let mut ops = Vec::with_capacity(list.len());
            let mut idx = Vec::with_capacity(list.len());
            for (i, addr, oid) in list {
                let size = match &results[i] {
                    Ok(s) => *s as usize,
                    Err(_) => continue,
                };
                if let Some(buf) = slots[i].take() {
                    ops.push(ReadOp {
                        dst: &mut buf[..size],
                        remote_addr: addr,
                        expect: Some(oid),
                    });
                    idx.push(i);
                }
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

    /// Reads one object into `buf`, returning its size.
    pub async fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        let mut bufs = [buf];
        self.batch_get_into(&[key], &mut bufs)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))
    }

    /// Reads one whole object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let req = MasterRequest::QueryKey(key.to_string());
        // Size first (no lease), then a leased read into an exact buffer.
        let size = match check(self.inner.rpc.call(req).await?)? {
            MasterResponse::Query(Ok(v)) => v.size,
            MasterResponse::Query(Err(code)) => {
                return Err(Error::new(code, format!("get failed: key={key}")));
            }
            other => return Err(unexpected(other)),
        };
        let mut buf = vec![0u8; size as usize];
        let n = self.get_into(key, &mut buf).await?;
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Existence per key: 1, 0, or a negative code. A 1 grants a lease.
    pub async fn batch_exist(&self, keys: &[&str]) -> Vec<i32> {
        let req = MasterRequest::Exist(keys.iter().map(|k| k.to_string()).collect());
        match self.inner.rpc.call(req).await.and_then(check) {
            Ok(MasterResponse::Codes(c)) if c.len() == keys.len() => c,
            Ok(_) => vec![ErrorCode::RpcFail.as_i32(); keys.len()],
            Err(e) => vec![e.code().as_i32(); keys.len()],
        }
    }

    /// Removes keys; one status per key.
    pub async fn batch_remove(&self, keys: &[&str], force: bool) -> Vec<i32> {
        let req = MasterRequest::Remove {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            force,
        };
        match self.inner.rpc.call(req).await.and_then(check) {
            Ok(MasterResponse::Codes(c)) if c.len() == keys.len() => c,
            Ok(_) => vec![ErrorCode::RpcFail.as_i32(); keys.len()],
            Err(e) => vec![e.code().as_i32(); keys.len()],
        }
    }

    /// Removes every object in the cluster (skipping leased ones unless `force`).
    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        match check(
            self.inner
                .rpc
                .call(MasterRequest::RemoveAll { force })
                .await?,
        )? {
            MasterResponse::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Sends any request to the master (admin tools).
    pub async fn raw(&self, req: MasterRequest) -> Result<MasterResponse> {
        check(self.inner.rpc.call(req).await?)
    }

    /// Leaves the pool: the master unmounts our segment (its objects go at once), revokes our
    /// in-flight puts; then the engine stops.
    pub async fn close(&self) -> Result<()> {
        let _ = self.inner.stop.send(true);
        let r = self.inner.rpc.call(MasterRequest::Goodbye).await;
        if let Some((seg, _, _)) = self.inner.segment.lock().take() {
            self.inner.engine.remove_segment(seg.base_addr());
        }
        self.inner.rpc.disconnect_all().await;
        self.inner.engine.shutdown().await;
        r.map(|_| ())
    }
}

/// Heartbeats until stopped; re-registers and re-mounts when the master forgot us.
async fn heartbeat_loop(inner: std::sync::Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong
            .rpc
            .session()
            .map(|s| s.heartbeat_interval_ms)
            .unwrap_or(1000)
            .max(10);
        let r = strong.rpc.call(MasterRequest::Heartbeat).await;
        let ok = matches!(r, Ok(MasterResponse::Heartbeat { known: true }));
        strong
            .last_heartbeat_ok
            .store(r.is_ok(), std::sync::atomic::Ordering::Relaxed);
        if matches!(r, Ok(MasterResponse::Heartbeat { known: false })) && !ok {
            tracing::warn!("master lost this client; registering and mounting again");
            strong.rpc.reset_session();
            strong.rpc.disconnect_all().await;
            let client = Client {
                inner: strong.clone(),
            };
            let seg = strong.segment.lock().clone();
            if let Some((seg, mut spec, _)) = seg {
                spec.incarnation = Incarnation(rand::random());
                match client.mount(&seg, &spec).await {
                    Ok(id) => *strong.segment.lock() = Some((seg, spec, id)),
                    Err(e) => tracing::warn!(error = %e, "re-mount failed"),
                }
            } else if let Err(e) = strong.rpc.establish().await {
                tracing::warn!(error = %e, "re-register failed");
            }
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn code_result(c: i32) -> Result<()> {
    if c == 0 {
        Ok(())
    } else {
        Err(ErrorCode::from_i32(c)
            .map(Error::from)
            .unwrap_or_else(|| Error::internal(format!("unknown code {c}"))))
    }
}

fn unexpected(resp: MasterResponse) -> Error {
    Error::new(
        ErrorCode::RpcFail,
        format!("unexpected master answer: {resp:?}"),
    )
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        outs[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// A blocking facade over [`Client`] with its own runtime, for callers without one.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    /// Connects with a private multi-threaded runtime.
    pub fn connect(cfg: ClientConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("runtime: {e}")))?;
        let client = rt.block_on(Client::connect(cfg))?;
        Ok(Self { rt, client })
    }

    /// The async client inside.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::put`].
    pub fn put(&self, key: &str, value: &[u8], cfg: &ReplicateConfig) -> Result<()> {
        self.rt.block_on(self.client.put(key, value, cfg))
    }

    /// See [`Client::get`].
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.client.get(key))
    }

    /// See [`Client::batch_exist`].
    pub fn exist(&self, key: &str) -> i32 {
        self.rt
            .block_on(self.client.batch_exist(&[key]))
            .pop()
            .unwrap_or(ErrorCode::InternalError.as_i32())
    }

    /// See [`Client::batch_remove`].
    pub fn remove(&self, key: &str, force: bool) -> i32 {
        self.rt
            .block_on(self.client.batch_remove(&[key], force))
            .pop()
            .unwrap_or(ErrorCode::InternalError.as_i32())
    }

    /// See [`Client::close`].
    pub fn close(&self) -> Result<()> {
        self.rt.block_on(self.client.close())
    }
}
