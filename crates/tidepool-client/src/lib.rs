//! Tidepool client: contributes a memory segment to the pool (embedded mode, as inference
//! workers do, or as a standalone `tidepool node`) and puts and gets objects through the
//! master and the transfer engine.
//!
//! # Layout
//! - [`rpc`]: the pooled master connections.
//! - [`metadata`]: the metadata service: backends, key layout, values, the HTTP client (W7
//!   recovery) and [`metadata::MetadataStore`]; [`etcd`]: the etcd backend's client.
//! - [`metrics`]: client-side counters and histograms; [`http`]: the optional client HTTP
//!   endpoint (§4.5) that serves them.
//! - `publish`: publishing this client's `ram/` and `rpc_meta/` entries and re-publishing them
//!   when they vanish (W6).
//! - `put`: the put path (reserve, write, seal, commit or revoke).
//! - `get`: the read path (lookup with lease, scatter read, lease deadline check).
//! - [`thin`]: standalone mode: the thin client that forwards calls to a `tidepool node` on
//!   the same host, and the node's side of that protocol.
//! - this file: [`ClientConfig`], [`Client`] (connect, heartbeat, close) and [`BlockingClient`].
//!
//! A put is: `PutStart` at the master (allocates ranges on distinct segments), one batched
//! write per owning segment through the transfer engine (acknowledged only when the bytes are
//! in place and sealed in the owner's directory), then `PutEnd`, after which the key is
//! readable. A get is `GetReplicas` (grants a lease) and one batched read per owner, checked
//! against the lease deadline (-707 if it finished too late).

pub mod etcd;
mod get;
pub mod http;
pub mod metadata;
pub mod metrics;
mod publish;
mod put;
pub mod rpc;
pub mod thin;

use metadata::MetadataBackend;
use rpc::{HelloInfo, RpcPool, check};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tidepool_common::{Error, ErrorCode, Incarnation, Result, SegmentId};
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_proto::{ObjectView, SegmentSpec};
use tidepool_transfer::{EngineConfig, LocalSegment, Target, TransferEngine};
use tokio::sync::watch;

/// How a client joins the pool.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master RPC address `host:port`.
    pub master_addr: String,
    /// Address the data server binds (e.g. "127.0.0.1").
    pub bind_host: String,
    /// The segment name as the caller gave it (Mooncake's `local_hostname`): `host`,
    /// `host:port` or `[v6]:port`. With a port, the data server binds that port and the name is
    /// used verbatim; without one, a port is picked in `port_range`. Empty: `bind_host` plus
    /// the picked port.
    pub local_hostname: String,
    /// Ports tried when `local_hostname` has none; `(0, 0)` lets the OS pick.
    pub port_range: (u16, u16),
    /// Bind attempts within `port_range` before giving up (`MC_STORE_CLIENT_SETUP_RETRIES`).
    pub bind_retries: usize,
    /// Metadata service: `P2PHANDSHAKE` (none), `http://host:port/metadata`, or etcd as
    /// `etcd://h:2379[;h2:2379]` or bare `h:2379`.
    pub metadata_server: String,
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
            local_hostname: String::new(),
            port_range: (0, 0),
            bind_retries: 20,
            metadata_server: "P2PHANDSHAKE".into(),
            segment_size: 0,
            lanes: 8,
            enable_shm: true,
            rpc_connections: 4,
        }
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port` into the host and the optional port.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>)> {
    let bad = || Error::invalid(format!("bad local_hostname: value={s:?}"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        return match tail {
            "" => Ok((format!("[{host}]"), None)),
            t => {
                let p = t.strip_prefix(':').ok_or_else(bad)?;
                Ok((format!("[{host}]"), Some(p.parse().map_err(|_| bad())?)))
            }
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, p)) if !h.contains(':') => {
            Ok((h.to_string(), Some(p.parse().map_err(|_| bad())?)))
        }
        _ if s.is_empty() => Err(bad()),
        _ => Ok((s.to_string(), None)),
    }
}

/// This client's own segment, once mounted.
#[derive(Clone)]
struct Mounted {
    seg: Arc<LocalSegment>,
    spec: SegmentSpec,
    id: SegmentId,
    /// Epoch of the master it was mounted with: another epoch means that master restarted
    /// (or another took over) and the segment must be mounted again, with its directory.
    epoch: u64,
}

struct Inner {
    rpc: RpcPool,
    engine: TransferEngine,
    /// The segment name (`get_hostname()`).
    name: String,
    segment: parking_lot::Mutex<Option<Mounted>>,
    /// Resolved targets of segments by id; an id is never reused, so entries never go stale
    /// silently, and they are dropped on transfer failure (W8).
    segments: parking_lot::Mutex<HashMap<SegmentId, Target>>,
    stop: watch::Sender<bool>,
    last_heartbeat_ok: AtomicBool,
    publisher: Option<publish::Publisher>,
    metrics: Arc<metrics::ClientMetrics>,
}

/// The async client. Cheap to clone; every method is safe to call from many tasks at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Starts the engine on `host` with a port from the config's rules; returns it and the name.
async fn start_engine(cfg: &ClientConfig) -> Result<(TransferEngine, String)> {
    let (name_host, fixed_port) = if cfg.local_hostname.is_empty() {
        (cfg.bind_host.clone(), None)
    } else {
        split_host_port(&cfg.local_hostname)?
    };
    let engine_cfg = |port| EngineConfig {
        bind_host: cfg.bind_host.clone(),
        port,
        lanes: cfg.lanes,
        enable_shm: cfg.enable_shm,
        ..EngineConfig::default()
    };
    if let Some(port) = fixed_port {
        let engine = TransferEngine::start(engine_cfg(port)).await?;
        return Ok((engine, cfg.local_hostname.clone()));
    }
    let (lo, hi) = cfg.port_range;
    if lo == 0 || hi < lo {
        let engine = TransferEngine::start(engine_cfg(0)).await?;
        let port = engine
            .endpoint()
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        return Ok((engine, format!("{name_host}:{port}")));
    }
    let mut last = None;
    for _ in 0..cfg.bind_retries.max(1) {
        let port = lo + (rand::random::<u16>() % (hi - lo + 1));
        match TransferEngine::start(engine_cfg(port)).await {
            Ok(engine) => return Ok((engine, format!("{name_host}:{port}"))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("no port in range")))
}

impl Client {
    /// Starts the transfer engine, registers with the master, mounts the segment (if any) and
    /// publishes the metadata entries (if a metadata server is configured).
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let backend = MetadataBackend::parse(&cfg.metadata_server).map_err(Error::invalid)?;
        let (engine, name) = start_engine(&cfg).await?;
        let host = split_host_port(&name).map(|(h, _)| h).unwrap_or_default();
        let metrics = Arc::new(metrics::ClientMetrics::default());
        let rpc = RpcPool::new(
            &cfg.master_addr,
            cfg.rpc_connections,
            HelloInfo {
                name: name.clone(),
                host,
                host_id: engine.host_id(),
            },
            metrics.clone(),
        );
        if let Err(e) = rpc.establish().await {
            engine.shutdown().await;
            return Err(e);
        }
        let publisher = metadata::MetadataStore::for_backend(&backend)
            .map(|store| publish::Publisher::new(store, &name));
        let (stop, _) = watch::channel(false);
        let client = Client {
            inner: Arc::new(Inner {
                rpc,
                engine,
                name,
                segment: parking_lot::Mutex::new(None),
                segments: parking_lot::Mutex::new(HashMap::new()),
                stop,
                last_heartbeat_ok: AtomicBool::new(true),
                publisher,
                metrics,
            }),
        };
        if let Err(e) = client.setup_rest(cfg.segment_size).await {
            let _ = client.close().await;
            return Err(e);
        }
        tokio::spawn(heartbeat_loop(
            Arc::downgrade(&client.inner),
            client.inner.stop.subscribe(),
        ));
        tokio::spawn(premap_same_host(Arc::downgrade(&client.inner)));
        Ok(client)
    }

    async fn setup_rest(&self, segment_size: u64) -> Result<()> {
        if segment_size > 0 {
            let seg = self.inner.engine.create_segment(segment_size)?;
            let spec = SegmentSpec {
                name: self.inner.name.clone(),
                incarnation: Incarnation(rand::random()),
                base_addr: seg.base_addr(),
                size: seg.size(),
                endpoint: self.inner.engine.endpoint(),
                host_id: self.inner.engine.host_id(),
                shm_socket: self.inner.engine.shm_socket(),
                protocol: "tcp".into(),
            };
            let (id, epoch) = self.mount(&seg, &spec).await?;
            *self.inner.segment.lock() = Some(Mounted {
                seg,
                spec,
                id,
                epoch,
            });
        }
        if let Some(p) = &self.inner.publisher {
            p.publish(self.publish_info()).await?;
        }
        Ok(())
    }

    /// What the metadata entries say about this client now.
    fn publish_info(&self) -> publish::Info {
        let seg = self.inner.segment.lock().clone();
        let endpoint = self.inner.engine.endpoint();
        let (ip, port) = split_host_port(&endpoint).unwrap_or_default();
        publish::Info {
            ip,
            port: port.unwrap_or(0),
            buffers: seg
                .map(|m| vec![(m.spec.name.clone(), m.spec.base_addr, m.spec.size)])
                .unwrap_or_default(),
        }
    }

    /// Mounts `seg`; a segment that still holds sealed replicas (a re-mount after the master
    /// restarted) sends its directory along, so the master serves those objects again (W5).
    /// Returns the id and the master epoch it was mounted with.
    async fn mount(&self, seg: &Arc<LocalSegment>, spec: &SegmentSpec) -> Result<(SegmentId, u64)> {
        let session = self
            .inner
            .rpc
            .session()
            .ok_or_else(|| Error::new(ErrorCode::RpcFail, "no master session"))?;
        // Fences the old master first: nothing it allocated is written from now on.
        seg.set_epoch(session.epoch);
        let seals = seg.directory();
        let req = if seals.is_empty() {
            MasterRequest::MountSegment(spec.clone())
        } else {
            tracing::info!(
                entries = seals.len(),
                "mounting the segment with its directory"
            );
            MasterRequest::MountRestore {
                spec: spec.clone(),
                seals,
            }
        };
        match check(self.inner.rpc.call(req).await?)? {
            MasterResponse::Mounted(id) => Ok((id, session.epoch)),
            other => Err(unexpected(other)),
        }
    }

    /// The segment name (`host:port`) of this client (Mooncake's `get_hostname()`).
    pub fn hostname(&self) -> &str {
        &self.inner.name
    }

    /// What this client's own segment records of the replicas it holds (contract §8), by
    /// address; empty without a segment.
    pub fn segment_directory(&self) -> Vec<tidepool_proto::data::Seal> {
        let seg = self.inner.segment.lock().as_ref().map(|m| m.seg.clone());
        seg.map(|s| s.directory()).unwrap_or_default()
    }

    /// The transfer engine (for buffer registration and statistics).
    pub fn engine(&self) -> &TransferEngine {
        &self.inner.engine
    }

    /// This client's metrics.
    pub fn metrics(&self) -> &metrics::ClientMetrics {
        &self.inner.metrics
    }

    /// True while the last heartbeat reached the master.
    pub fn healthy(&self) -> bool {
        self.inner.last_heartbeat_ok.load(Ordering::Relaxed)
    }

    /// The read-lease TTL the master announced, in ms.
    pub fn lease_ttl_ms(&self) -> u64 {
        self.inner.rpc.session().map_or(0, |s| s.lease_ttl_ms)
    }

    /// Resolves a segment id to its transfer target (cached).
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

    /// Forgets a target after a transfer failure, so the next attempt re-resolves it (W8).
    fn forget_target(&self, id: SegmentId, target: &Target) {
        self.inner.engine.forget_peer(&target.endpoint);
        self.inner.segments.lock().remove(&id);
    }

    /// Existence per key: 1, 0, or a negative code. A 1 grants a lease.
    pub async fn batch_exist(&self, keys: &[&str]) -> Vec<i32> {
        let req = MasterRequest::Exist(keys.iter().map(|k| k.to_string()).collect());
        codes_of(self.inner.rpc.call(req).await, keys.len())
    }

    /// Removes keys; one status per key.
    pub async fn batch_remove(&self, keys: &[&str], force: bool) -> Vec<i32> {
        let req = MasterRequest::Remove {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            force,
        };
        codes_of(self.inner.rpc.call(req).await, keys.len())
    }

    /// Removes every object in the cluster (skipping leased ones unless `force`).
    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        count_of(
            self.inner
                .rpc
                .call(MasterRequest::RemoveAll { force })
                .await,
        )
    }

    /// Removes every object whose key contains a match of `pattern` (skip rules as
    /// [`Client::remove_all`]); returns the count. A bad pattern is -600.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64> {
        let req = MasterRequest::RemoveByRegex {
            pattern: pattern.to_string(),
            force,
        };
        count_of(self.inner.rpc.call(req).await)
    }

    /// Looks objects up for reading (grants leases): size, replicas and object id per key.
    pub async fn lookup(&self, keys: &[&str]) -> Vec<Result<ObjectView>> {
        let req = MasterRequest::GetReplicas(keys.iter().map(|k| k.to_string()).collect());
        lookup_of(self.inner.rpc.call(req).await, keys)
    }

    /// Sends any request to the master (admin tools).
    pub async fn raw(&self, req: MasterRequest) -> Result<MasterResponse> {
        check(self.inner.rpc.call(req).await?)
    }

    /// Leaves the pool: the master unmounts our segment (its objects go at once) and revokes
    /// our in-flight puts; our metadata entries are deleted; then the engine stops.
    pub async fn close(&self) -> Result<()> {
        let _ = self.inner.stop.send(true);
        let r = self.inner.rpc.call(MasterRequest::Goodbye).await;
        if let Some(m) = self.inner.segment.lock().take() {
            self.inner.engine.remove_segment(m.seg.base_addr());
        }
        if let Some(p) = &self.inner.publisher {
            p.withdraw().await;
        }
        self.inner.rpc.disconnect_all().await;
        self.inner.engine.shutdown().await;
        r.map(|_| ())
    }
}

/// Heartbeats until stopped; re-registers and re-mounts when the master forgot us, and keeps
/// the metadata entries published (W6).
/// Maps the segments already mounted on this host in the background, right after setup:
/// mapping and populating a peer segment costs about 0.12 s per GiB here, which the first put
/// to it would otherwise pay. Best effort, and bounded: page tables of mapped peers cost
/// memory (2 MiB per GiB), so beyond `PREMAP_MAX_BYTES` (and for segments mounted later)
/// mapping waits for the first transfer that needs it.
async fn premap_same_host(inner: std::sync::Weak<Inner>) {
    let Some(client) = inner.upgrade().map(|inner| Client { inner }) else {
        return;
    };
    let Ok(MasterResponse::Segments(views)) = client
        .inner
        .rpc
        .call(MasterRequest::ListSegments)
        .await
        .and_then(check)
    else {
        return;
    };
    const PREMAP_MAX_BYTES: u64 = 16 << 30;
    let host_id = client.inner.engine.host_id();
    let mut mapped = 0u64;
    for v in views.iter().filter(|v| v.spec.host_id == host_id) {
        mapped = mapped.saturating_add(v.spec.size);
        if mapped > PREMAP_MAX_BYTES {
            break;
        }
        let target = Target::from(&v.spec);
        client.inner.segments.lock().insert(v.id, target.clone());
        client.inner.engine.prepare(&target).await;
    }
}

async fn heartbeat_loop(inner: std::sync::Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let mut next_publish_check = tokio::time::Instant::now() + publish::CHECK_INTERVAL;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong
            .rpc
            .session()
            .map_or(1000, |s| s.heartbeat_interval_ms)
            .max(10);
        let r = strong.rpc.call(MasterRequest::Heartbeat).await;
        strong.last_heartbeat_ok.store(r.is_ok(), Ordering::Relaxed);
        let client = Client {
            inner: strong.clone(),
        };
        if matches!(r, Ok(MasterResponse::Heartbeat { known: false })) {
            tracing::warn!("master lost this client; registering and mounting again");
            // Declared dead: the master dropped this segment's objects (and excused it from
            // acknowledging removes), so none of them may come back.
            if let Some(m) = strong.segment.lock().as_ref() {
                m.seg.clear_directory();
            }
            client.rejoin(true).await;
        } else if r.is_ok() && client.master_changed() {
            tracing::warn!("the master restarted; mounting again with the segment's directory");
            client.rejoin(false).await;
        }
        if let Some(p) = &strong.publisher
            && tokio::time::Instant::now() >= next_publish_check
        {
            next_publish_check = tokio::time::Instant::now() + publish::CHECK_INTERVAL;
            p.ensure(client.publish_info()).await;
        }
        drop(client);
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Client {
    /// Registers again under a new id and re-mounts the segment with a fresh incarnation (the
    /// master forgot us: restart, or we were declared dead while partitioned).
    /// True when the session's master is not the one the segment was mounted with.
    fn master_changed(&self) -> bool {
        let mounted = self.inner.segment.lock().as_ref().map(|m| m.epoch);
        let now = self.inner.rpc.session().map(|s| s.epoch);
        matches!((mounted, now), (Some(a), Some(b)) if a != b)
    }

    ///
    /// With `register` false the session is already with the new master (a reconnect said
    /// `Hello` to it): only the segment is mounted again.
    async fn rejoin(&self, register: bool) {
        if register {
            self.inner.rpc.reset_session();
            self.inner.rpc.disconnect_all().await;
            if let Err(e) = self.inner.rpc.establish().await {
                tracing::warn!(error = %e, "re-register failed");
                return;
            }
        }
        let mounted = self.inner.segment.lock().clone();
        if let Some(mut m) = mounted {
            m.spec.incarnation = Incarnation(rand::random());
            match self.mount(&m.seg, &m.spec).await {
                Ok((id, epoch)) => {
                    m.id = id;
                    m.epoch = epoch;
                    *self.inner.segment.lock() = Some(m);
                }
                Err(e) => tracing::warn!(error = %e, "re-mount failed"),
            }
        }
    }
}

/// Turns a per-key code answer into one value per key (the whole-call error repeated).
fn codes_of(r: Result<MasterResponse>, n: usize) -> Vec<i32> {
    match r.and_then(check) {
        Ok(MasterResponse::Codes(c)) if c.len() == n => c,
        Ok(_) => vec![ErrorCode::RpcFail.as_i32(); n],
        Err(e) => vec![e.code().as_i32(); n],
    }
}

/// Turns a `GetReplicas` answer into one view per key (the whole-call error repeated).
fn lookup_of(r: Result<MasterResponse>, keys: &[&str]) -> Vec<Result<ObjectView>> {
    match r.and_then(check) {
        Ok(MasterResponse::Replicas(v)) if v.len() == keys.len() => v
            .into_iter()
            .zip(keys)
            .map(|(r, k)| r.map_err(|code| Error::new(code, format!("lookup failed: key={k}"))))
            .collect(),
        Ok(other) => {
            let e = unexpected(other);
            keys.iter().map(|_| Err(e.clone())).collect()
        }
        Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
    }
}

/// Turns a `Count` answer into the count.
fn count_of(r: Result<MasterResponse>) -> Result<u64> {
    match check(r?)? {
        MasterResponse::Count(n) => Ok(n),
        other => Err(unexpected(other)),
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

/// Runs futures concurrently on this task (they borrow the caller's buffers, so they cannot
/// be spawned) and collects their outputs in order. With more than one, their requests stay
/// asynchronous even on a caller's thread, so they overlap instead of blocking in turn
/// (`tidepool_proto::blocking`).
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> =
        futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let fan_out = futs.len() > 1;
    let all = std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
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
    });
    if fan_out {
        tidepool_proto::blocking::off_caller_thread(all).await;
    } else {
        all.await;
    }
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
    pub fn put(
        &self,
        key: &str,
        value: &[u8],
        cfg: &tidepool_proto::ReplicateConfig,
    ) -> Result<()> {
        self.rt.block_on(self.client.put(key, value, cfg))
    }

    /// See [`Client::get`].
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.client.get(key))
    }

    /// See [`Client::get_into`].
    pub fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        self.rt.block_on(self.client.get_into(key, buf))
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

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), None)
        );
        assert_eq!(
            split_host_port("node-a:12345").unwrap(),
            ("node-a".into(), Some(12345))
        );
        assert_eq!(
            split_host_port("[::1]:99").unwrap(),
            ("[::1]".into(), Some(99))
        );
        assert_eq!(
            split_host_port("[fe80::1]").unwrap(),
            ("[fe80::1]".into(), None)
        );
        assert_eq!(
            split_host_port("fe80::1").unwrap(),
            ("fe80::1".into(), None)
        );
        assert!(split_host_port("h:notaport").is_err());
        assert!(split_host_port("").is_err());
        assert!(split_host_port("[::1").is_err());
    }
}
