//! The public [`TransferEngine`]: owns the data server, the registry of exposed memory and the
//! transports, and picks a transport per call:
//!
//! 1. in-process, when the target's endpoint is this engine's own;
//! 2. shared memory, when enabled, the target is on this host and offers an shm socket
//!    (falling back to TCP if attaching fails);
//! 3. TCP otherwise.

use crate::config::EngineConfig;
use crate::memory::{LocalSegment, MemoryKind, Owner, Region, Registry};
use crate::server;
use crate::stats::{Counters, TransferStats};
use crate::transport::Transport;
use crate::transport::local::LocalTransport;
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::TcpTransport;
use parking_lot::Mutex;
use std::sync::Arc;
use tidepool_common::{Error, ObjectId, Result};
use tidepool_proto::SegmentSpec;
use tidepool_proto::data::Seal;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a transfer goes: a peer's (or our own) registered memory, as a segment spec names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TCP data endpoint `ip:port` of the owner.
    pub endpoint: String,
    /// The owner's host identity (boot id), for the same-host shared-memory path.
    pub host_id: String,
    /// The owner's shm socket, if it offers one.
    pub shm_socket: Option<String>,
    /// Base address of the owner's segment.
    pub base_addr: u64,
    /// Size of the owner's segment.
    pub size: u64,
}

impl From<&SegmentSpec> for Target {
    fn from(s: &SegmentSpec) -> Self {
        Self {
            endpoint: s.endpoint.clone(),
            host_id: s.host_id.clone(),
            shm_socket: s.shm_socket.clone(),
            base_addr: s.base_addr,
            size: s.size,
        }
    }
}

/// One range to write: the bytes and where they go in the owner's address space.
#[derive(Debug, Clone, Copy)]
pub struct WriteOp<'a> {
    /// Bytes to write.
    pub src: &'a [u8],
    /// Absolute destination address in the owner.
    pub remote_addr: u64,
}

/// One range to read into a local buffer.
#[derive(Debug)]
pub struct ReadOp<'a> {
    /// Destination; its length is the number of bytes read.
    pub dst: &'a mut [u8],
    /// Absolute source address in the owner.
    pub remote_addr: u64,
    /// When set, the owner refuses (-712) unless its directory holds this object over the range.
    pub expect: Option<ObjectId>,
}

/// State shared by the engine handle, the server tasks and the transports.
pub(crate) struct Shared {
    pub cfg: EngineConfig,
    pub registry: Registry,
    pub stats: Counters,
}

struct Inner {
    shared: Arc<Shared>,
    endpoint: String,
    shm_socket: Option<String>,
    host_id: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local: LocalTransport,
    tcp: Arc<TcpTransport>,
    shm: ShmTransport,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop serving even without an explicit shutdown.
        self.stop.send_replace(true);
        if let Some(path) = &self.shm_socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A transfer engine: serves this process's registered memory to peers and moves bytes to and
/// from theirs. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct TransferEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TransferEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferEngine")
            .field("endpoint", &self.inner.endpoint)
            .field("shm_socket", &self.inner.shm_socket)
            .finish()
    }
}

/// Socket buffer size of data connections, from `TIDEPOOL_SOCKET_BUFFER` (bytes); `None` (the
/// default) leaves the kernel's autotuning on, which an explicit size would switch off.
pub(crate) fn data_socket_buffer() -> Option<u32> {
    static V: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("TIDEPOOL_SOCKET_BUFFER")
            .ok()
            .and_then(|v| tidepool_common::parse_size(&v).ok())
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 0)
    })
}

/// Binds the data listener; accepted connections inherit its socket buffer sizes.
async fn bind_data_listener(host: &str, port: u16) -> Result<TcpListener> {
    let fail = |e: std::io::Error| {
        Error::internal(format!(
            "cannot bind data server: {e} host={host} port={port}"
        ))
    };
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(fail)?
        .collect();
    let mut last = None;
    for addr in addrs {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(fail)?;
        if let Some(size) = data_socket_buffer() {
            // Best effort: a kernel limit below the request is not an error.
            let _ = sock.set_recv_buffer_size(size);
            let _ = sock.set_send_buffer_size(size);
        }
        let _ = sock.set_reuseaddr(true);
        match sock.bind(addr).and_then(|()| sock.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to bind")
    })))
}

/// This host's identity: the kernel boot id, else the host name.
fn read_host_id() -> String {
    for path in [
        "/proc/sys/kernel/random/boot_id",
        "/proc/sys/kernel/hostname",
        "/etc/hostname",
    ] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "unknown-host".to_string()
}

/// A fresh Unix socket path; the random part makes it unique per engine start.
fn shm_socket_path() -> String {
    let nonce: u64 = rand::random();
    let name = format!("tidepool-{}-{nonce:016x}.sock", std::process::id());
    let dir = std::env::temp_dir();
    let p = dir.join(&name);
    // sun_path holds 108 bytes; fall back to /tmp for long TMPDIRs.
    if p.as_os_str().len() < 100 {
        p.to_string_lossy().into_owned()
    } else {
        format!("/tmp/{name}")
    }
}

impl TransferEngine {
    /// Binds the TCP data server (and the shm socket when enabled) and starts serving on the
    /// current tokio runtime.
    pub async fn start(cfg: EngineConfig) -> Result<TransferEngine> {
        let listener = bind_data_listener(&cfg.bind_host, cfg.port).await?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("data server address unknown: {e}")))?;
        let endpoint = local.to_string();
        let (unix, shm_socket) = if cfg.enable_shm {
            let path = shm_socket_path();
            match UnixListener::bind(&path) {
                Ok(l) => (Some(l), Some(path)),
                Err(e) => {
                    tracing::warn!(error = %e, %path, "cannot bind shm socket, serving tcp only");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            cfg,
            registry: Registry::default(),
            stats: Counters::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::run_tcp(
            shared.clone(),
            listener,
            stop_rx.clone(),
        ))];
        if let Some(u) = unix {
            tasks.push(tokio::spawn(server::run_unix(shared.clone(), u, stop_rx)));
        }
        let tcp = Arc::new(TcpTransport::new(shared.clone()));
        let inner = Inner {
            local: LocalTransport::new(shared.clone()),
            shm: ShmTransport::new(shared.clone(), tcp.clone()),
            tcp,
            shared,
            endpoint,
            shm_socket,
            host_id: read_host_id(),
            stop,
            tasks: Mutex::new(tasks),
        };
        tracing::info!(endpoint = %inner.endpoint, shm = ?inner.shm_socket, "transfer engine started");
        Ok(TransferEngine {
            inner: Arc::new(inner),
        })
    }

    /// `ip:port` of the TCP data server.
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    /// The Unix socket a same-host peer connects to for mapping segments, if offered.
    pub fn shm_socket(&self) -> Option<String> {
        self.inner.shm_socket.clone()
    }

    /// This host's identity (kernel boot id, else host name).
    pub fn host_id(&self) -> String {
        self.inner.host_id.clone()
    }

    /// Creates a memfd-backed segment of `size` bytes (rounded up to a page) and registers it
    /// for remote access.
    pub fn create_segment(&self, size: u64) -> Result<Arc<LocalSegment>> {
        let seg = Arc::new(LocalSegment::create(size, self.inner.shared.cfg.prefault)?);
        self.inner.shared.registry.insert(Region {
            base: seg.base_addr(),
            len: seg.size(),
            kind: MemoryKind::Host,
            owner: Owner::Segment(seg.clone()),
        })?;
        Ok(seg)
    }

    /// Unregisters the segment at `base_addr`; later requests into it are refused. Its memory
    /// stays mapped until the last `Arc` (including in-flight requests) is dropped.
    pub fn remove_segment(&self, base_addr: u64) {
        let removed = self
            .inner
            .shared
            .registry
            .remove_if(base_addr, |r| r.segment().is_some());
        if let Some(seg) = removed.as_ref().and_then(|r| r.segment()) {
            seg.retire();
        }
    }

    /// Registers a caller buffer for remote access. The caller keeps it alive and unmoved until
    /// [`unregister_memory`](Self::unregister_memory). Overlap with a registered region is -600.
    pub fn register_memory(&self, addr: u64, len: u64) -> Result<()> {
        if addr == 0 {
            return Err(Error::invalid("cannot register a null address"));
        }
        self.inner.shared.registry.insert(Region {
            base: addr,
            len,
            kind: MemoryKind::Host,
            owner: Owner::External,
        })
    }

    /// Unregisters a buffer registered with [`register_memory`](Self::register_memory) at
    /// exactly `addr`; anything else is -600.
    pub fn unregister_memory(&self, addr: u64) -> Result<()> {
        match self
            .inner
            .shared
            .registry
            .remove_if(addr, |r| r.segment().is_none())
        {
            Some(_) => Ok(()),
            None => Err(Error::invalid(format!(
                "no registered buffer at address: addr={addr:#x}"
            ))),
        }
    }

    fn is_local(&self, target: &Target) -> bool {
        target.endpoint == self.inner.endpoint
    }

    fn use_shm(&self, target: &Target) -> bool {
        self.inner.shared.cfg.enable_shm
            && target.shm_socket.is_some()
            && target.host_id == self.inner.host_id
    }

    /// Maps `target`'s segment now if it is reachable over shared memory (no-op otherwise), so
    /// the first transfer does not pay for mapping and populating it.
    pub async fn prepare(&self, target: &Target) {
        if !self.is_local(target) && self.use_shm(target) {
            self.inner.shm.prepare(target).await;
        }
    }

    /// Writes every op's bytes into the target and records `seals` in its directory. Returns
    /// only once the owner has every byte in place (W12). `epoch` is the master epoch of the
    /// allocation; owners refuse epochs older than their segment's (-700).
    pub async fn write(
        &self,
        target: &Target,
        epoch: u64,
        ops: &[WriteOp<'_>],
        seals: &[Seal],
    ) -> Result<()> {
        if self.is_local(target) {
            self.inner.local.write(target, epoch, ops, seals).await
        } else if self.use_shm(target) {
            self.inner.shm.write(target, epoch, ops, seals).await
        } else {
            self.inner.tcp.write(target, epoch, ops, seals).await
        }
    }

    /// Fills every op's `dst` from the target. An op with `expect` fails the call with -712
    /// when the owner no longer holds that object there (not checked on the shm path, where the
    /// reader's lease protects the bytes).
    pub async fn read(&self, target: &Target, ops: &mut [ReadOp<'_>]) -> Result<()> {
        if self.is_local(target) {
            self.inner.local.read(target, ops).await
        } else if self.use_shm(target) {
            self.inner.shm.read(target, ops).await
        } else {
            self.inner.tcp.read(target, ops).await
        }
    }

    /// Checks that the target's data server answers.
    pub async fn ping(&self, target: &Target) -> Result<()> {
        if self.is_local(target) {
            return Ok(());
        }
        self.inner.tcp.ping(target).await
    }

    /// Drops pooled connections and shm mappings of `endpoint` (W8: after a failure, or when
    /// the peer re-mounted elsewhere).
    pub fn forget_peer(&self, endpoint: &str) {
        self.inner.tcp.forget(endpoint);
        self.inner.shm.forget(endpoint);
    }

    /// Stops serving, closes every connection and drops peer mappings. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        self.inner.tcp.clear();
        self.inner.shm.clear();
        if let Some(path) = &self.inner.shm_socket {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransferStats {
        self.inner.shared.stats.snapshot()
    }
}
