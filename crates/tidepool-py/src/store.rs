//! The store class behind `tidepool.Store` and `mooncake.store.MooncakeDistributedStore`.
//!
//! State is one `Option<Arc<Live>>` behind a lock: every call clones the `Arc` under a read
//! lock and works without it, so calls racing `close`/`setup` either finish on the old client
//! or see "not set up" (-600 / `b""` / `None`), never a dangling client (§1.2, W15).
//! Type and range checks of arguments run before anything else, so bad arguments raise
//! `TypeError` before any work.

use crate::args::{ByteView, key_list, raw_slice, raw_slice_mut, u64_arg, u64_list, u64_lists};
use crate::backend::Backend;
use crate::config::config_arg;
use crate::device::is_device;
use crate::objects::{BufferHandle, Descriptor, MemoryDescriptor, ReplicaDescriptor};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidepool_client::thin::{ThinClient, ThinConfig};
use tidepool_client::{Client, ClientConfig};
use tidepool_common::{ErrorCode, Result};
use tidepool_proto::master::{MasterRequest, MasterResponse};

const INVALID: i32 = ErrorCode::InvalidParams.as_i32();

/// Accounting of the local staging buffer of the copying APIs (§3.9): a copying call reserves
/// its object's size for its duration (a `get_buffer` handle for its lifetime) and fails with
/// -600 when the buffer has no room. The bytes themselves move straight between Python objects
/// and the network, so no staging memory is allocated.
struct LocalBuf {
    cap: u64,
    used: AtomicU64,
}

/// Space held in a [`LocalBuf`]; returned on drop.
pub(crate) struct Reservation {
    buf: Arc<LocalBuf>,
    n: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.buf.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

impl LocalBuf {
    fn reserve(self: &Arc<Self>, n: u64) -> Option<Reservation> {
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let next = cur.checked_add(n).filter(|&v| v <= self.cap)?;
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Reservation {
                        buf: self.clone(),
                        n,
                    });
                }
                Err(v) => cur = v,
            }
        }
    }
}

struct Live {
    client: Backend,
    local: Arc<LocalBuf>,
}

/// A connection to a Tidepool cluster with Mooncake's method set and return conventions.
#[pyclass(subclass, frozen, module = "tidepool._native")]
pub(crate) struct Store {
    live: parking_lot::RwLock<Option<Arc<Live>>>,
}

/// Runs `fut` on the process runtime with the GIL released; `None` if no runtime could start.
/// The caller's thread drives it and makes its master calls itself over blocking sockets
/// (`on_caller_thread`): one wake-up per round trip instead of two.
fn block<F>(py: Python<'_>, fut: F) -> Option<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = crate::runtime()?;
    Some(py.allow_threads(|| tidepool_client::rpc::on_caller_thread(|| rt.block_on(fut))))
}

fn status(r: &Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.code().as_i32(),
    }
}

fn bytes_read(r: &Result<u64>) -> i64 {
    match r {
        Ok(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        Err(e) => i64::from(e.code().as_i32()),
    }
}

/// Splits `host`, `host:port`, `[v6]:port` into a bind host and a data port (0 = any).
/// An integer from the environment, or `default`.
fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The client configuration for a `setup`: the segment is named after `local_hostname`
/// (verbatim with a port, else with a port picked in `[MC_STORE_CLIENT_MIN_PORT,
/// MC_STORE_CLIENT_MAX_PORT]`), and the data server binds `MC_TCP_BIND_ADDRESS` or that host.
/// Same-host peers are reached through shared memory unless `TIDEPOOL_SHM=0`.
fn client_config(
    master_addr: String,
    local_hostname: String,
    metadata_server: String,
    segment_size: u64,
) -> tidepool_common::Result<ClientConfig> {
    let (host, _) = tidepool_client::split_host_port(&local_hostname)?;
    let bind_host = match std::env::var("MC_TCP_BIND_ADDRESS") {
        Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    };
    Ok(ClientConfig {
        master_addr,
        bind_host,
        local_hostname,
        port_range: (
            env_num("MC_STORE_CLIENT_MIN_PORT", 12300),
            env_num("MC_STORE_CLIENT_MAX_PORT", 14300),
        ),
        bind_retries: env_num("MC_STORE_CLIENT_SETUP_RETRIES", 20),
        metadata_server,
        segment_size,
        // TIDEPOOL_SHM=0 keeps same-host peers on TCP (to measure or debug the TCP path).
        enable_shm: std::env::var("TIDEPOOL_SHM")
            .map(|v| tidepool_common::parse_bool(&v).unwrap_or(true))
            .unwrap_or(true),
        ..ClientConfig::default()
    })
}

impl Store {
    fn live(&self) -> Option<Arc<Live>> {
        self.live.read().clone()
    }

    /// Makes `client` the store's backend; 0.
    fn install(&self, py: Python<'_>, client: Backend, local_buffer_size: u64) -> i32 {
        let live = Arc::new(Live {
            client,
            local: Arc::new(LocalBuf {
                cap: local_buffer_size,
                used: AtomicU64::new(0),
            }),
        });
        // A concurrent setup may have won the race: the last one stays, the other leaves the
        // cluster cleanly instead of lingering until its heartbeats stop.
        let displaced = self.live.write().replace(live);
        if let Some(old) = displaced {
            let client = old.client.clone();
            drop(old);
            let _ = block(py, async move { client.close().await });
        }
        0
    }

    fn take(&self, py: Python<'_>) {
        let old = self.live.write().take();
        if let Some(old) = old {
            let client = old.client.clone();
            drop(old);
            let _ = block(py, async move { client.close().await });
        }
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Self {
            live: parking_lot::RwLock::new(None),
        }
    }

    /// Joins the cluster (closing any previous connection first). Arguments are already
    /// validated by the caller; returns 0 or a §2 code (-900 when the master is unreachable
    /// within `connect_timeout_ms`, negative = no limit).
    #[pyo3(signature = (master_addr, local_hostname, segment_size, local_buffer_size, connect_timeout_ms=30000, metadata_server="P2PHANDSHAKE".to_string()))]
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the Python-side keyword signature"
    )]
    fn _connect(
        &self,
        py: Python<'_>,
        master_addr: String,
        local_hostname: String,
        segment_size: u64,
        local_buffer_size: u64,
        connect_timeout_ms: i64,
        metadata_server: String,
    ) -> i32 {
        self.take(py);
        let cfg = match client_config(master_addr, local_hostname, metadata_server, segment_size) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "setup refused");
                return e.code().as_i32();
            }
        };
        let fut = async move {
            if connect_timeout_ms < 0 {
                Client::connect(cfg).await
            } else {
                match tokio::time::timeout(
                    Duration::from_millis(connect_timeout_ms as u64),
                    Client::connect(cfg),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(tidepool_common::Error::new(
                        ErrorCode::RpcFail,
                        "master not reachable within MC_RPC_CONNECT_TIMEOUT_MS",
                    )),
                }
            }
        };
        match block(py, fut) {
            None => ErrorCode::InternalError.as_i32(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "setup failed");
                e.code().as_i32()
            }
            Some(Ok(client)) => self.install(py, Backend::Embedded(client), local_buffer_size),
        }
    }

    /// Becomes a thin client of the `tidepool node` serving thin clients at `server_address`
    /// (closing any previous connection first): calls are forwarded, memory from
    /// `MooncakeHostMemAllocator` and the `local_buffer_size` staging buffer is shared with the
    /// node. Returns 0 or a §2 code (-900 when nothing answers within `connect_timeout_ms`).
    #[pyo3(signature = (server_address, local_buffer_size, connect_timeout_ms=30000, call_timeout_ms=30000))]
    fn _connect_dummy(
        &self,
        py: Python<'_>,
        server_address: String,
        local_buffer_size: u64,
        connect_timeout_ms: i64,
        call_timeout_ms: i64,
    ) -> i32 {
        self.take(py);
        // A negative value disables the deadline (contract §5.3); a day stands in for "none".
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(86_400_000));
        let cfg = ThinConfig {
            server_addr: server_address,
            local_buffer_size,
            connect_timeout: ms(connect_timeout_ms),
            call_timeout: ms(call_timeout_ms),
            ..ThinConfig::default()
        };
        match block(py, ThinClient::connect(cfg)) {
            None => ErrorCode::InternalError.as_i32(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "setup_dummy failed");
                e.code().as_i32()
            }
            Some(Ok(thin)) => self.install(py, Backend::Thin(thin), local_buffer_size),
        }
    }

    /// Leaves the cluster; always 0.
    fn close(&self, py: Python<'_>) -> i32 {
        self.take(py);
        0
    }

    /// The segment name `host:port`, `""` before setup.
    fn get_hostname(&self) -> String {
        self.live()
            .map(|l| l.client.hostname().to_string())
            .unwrap_or_default()
    }

    /// 0 healthy, 1 not set up, 2 the last heartbeat failed.
    fn health_check(&self) -> i32 {
        match self.live() {
            None => 1,
            Some(l) if l.client.healthy() => 0,
            Some(_) => 2,
        }
    }

    // ---- copying puts ----

    #[pyo3(signature = (key, value, config=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_impl(py, key, value, config, false)
    }

    /// Insert-or-replace twin of `put` (contract §1.5): a readable key's old version
    /// is replaced; a live read lease refuses it with -706 (W13).
    #[pyo3(signature = (key, value, config=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_impl(py, key, value, config, true)
    }

    #[pyo3(signature = (key, *parts, config=None))]
    fn put_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, PyTuple>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_parts_impl(py, key, parts, config, false)
    }

    /// Insert-or-replace twin of `put_parts` (contract §1.5): a readable key's old version
    /// is replaced; a live read lease refuses it with -706 (W13).
    #[pyo3(signature = (key, *parts, config=None))]
    fn upsert_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, PyTuple>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_parts_impl(py, key, parts, config, true)
    }

    /// Stores every key through the local buffer; 0 or the first failing key's code.
    #[pyo3(signature = (keys, values, config=None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_batch_impl(py, keys, values, config, false)
    }

    /// Insert-or-replace twin of `put_batch` (contract §1.5): a readable key's old version
    /// is replaced; a live read lease refuses it with -706 (W13).
    #[pyo3(signature = (keys, values, config=None))]
    fn upsert_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_batch_impl(py, keys, values, config, true)
    }

    // ---- zero-copy puts ----

    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_from_impl(py, key, buffer_ptr, size, config, false)
    }

    /// Insert-or-replace twin of `put_from` (contract §1.5): a readable key's old version
    /// is replaced; a live read lease refuses it with -706 (W13).
    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn upsert_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        self.put_from_impl(py, key, buffer_ptr, size, config, true)
    }

    #[pyo3(signature = (key, buffer_ptr, metadata_buffer_ptr, size, metadata_size, config=None))]
    #[expect(clippy::too_many_arguments, reason = "Mooncake's signature")]
    fn put_from_with_metadata(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: &Bound<'_, PyAny>,
        metadata_buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
        metadata_size: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        let ptr = u64_arg(buffer_ptr, "buffer_ptr")?;
        let mptr = u64_arg(metadata_buffer_ptr, "metadata_buffer_ptr")?;
        let size = u64_arg(size, "size")?;
        let msize = u64_arg(metadata_size, "metadata_size")?;
        let cfg = config_arg(config, 1)?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if (ptr == 0 && size > 0)
            || (mptr == 0 && msize > 0)
            || size.saturating_add(msize) == 0
            || is_device(ptr)
            || is_device(mptr)
        {
            return Ok(INVALID);
        }
        // SAFETY: the caller owns both ranges for the call (§1.5); null pointers with non-zero
        // sizes were refused above and empty ranges never dereference.
        let parts: [&[u8]; 2] = unsafe { [raw_slice(mptr, msize), raw_slice(ptr, size)] };
        let items = [(key, &parts[..])];
        let client = &live.client;
        Ok(block(py, async move {
            client
                .put_parts_batch(&items, &cfg)
                .await
                .pop()
                .map(|r| status(&r))
                .unwrap_or(INVALID)
        })
        .unwrap_or(INVALID))
    }

    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_put_from_impl(py, keys, buffer_ptrs, sizes, config, false)
    }

    /// Insert-or-replace twin of `batch_put_from` (contract §1.5): a readable key's old version
    /// is replaced; a live read lease refuses it with -706 (W13).
    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_upsert_from(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_put_from_impl(py, keys, buffer_ptrs, sizes, config, true)
    }

    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, config=None))]
    fn batch_put_from_multi_buffers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        all_buffer_ptrs: &Bound<'_, PyAny>,
        all_sizes: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<i32>> {
        let keys = key_list(keys)?;
        let ptrs = u64_lists(all_buffer_ptrs, "all_buffer_ptrs")?;
        let sizes = u64_lists(all_sizes, "all_sizes")?;
        let cfg = config_arg(config, keys.len())?;
        let n = keys.len();
        let Some(live) = self.live() else {
            return Ok(vec![INVALID; n]);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(vec![code; n]),
        };
        if ptrs.len() != n || sizes.len() != n {
            return Ok(vec![INVALID; n]);
        }
        let mut out = vec![INVALID; n];
        let mut idx = Vec::with_capacity(n);
        let mut parts: Vec<Vec<&[u8]>> = Vec::with_capacity(n);
        for i in 0..n {
            let (p, s) = (&ptrs[i], &sizes[i]);
            if p.len() != s.len()
                || p.iter()
                    .zip(s)
                    .any(|(&a, &l)| (a == 0 && l > 0) || is_device(a))
            {
                continue;
            }
            // SAFETY: the caller owns every `(ptr, size)` piece for the call (§1.4 gather);
            // null pointers with non-zero sizes were skipped above.
            let pieces = p
                .iter()
                .zip(s)
                .map(|(&a, &l)| unsafe { raw_slice(a, l) })
                .collect();
            parts.push(pieces);
            idx.push(i);
        }
        let items: Vec<(&str, &[&[u8]])> = idx
            .iter()
            .zip(&parts)
            .map(|(&i, p)| (&*keys[i], &p[..]))
            .collect();
        if items.is_empty() {
            return Ok(out);
        }
        let client = &live.client;
        let codes: Vec<i32> = block(py, async move {
            client
                .put_parts_batch(&items, &cfg)
                .await
                .iter()
                .map(status)
                .collect()
        })
        .unwrap_or_else(|| vec![INVALID; idx.len()]);
        for (i, c) in idx.into_iter().zip(codes) {
            out[i] = c;
        }
        Ok(out)
    }

    // ---- copying gets ----

    fn get<'py>(&self, py: Python<'py>, key: &str) -> Bound<'py, PyBytes> {
        let got = self.get_many(py, &[key]);
        got.into_iter()
            .next()
            .unwrap_or_else(|| PyBytes::new(py, b""))
    }

    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let keys = key_list(keys)?;
        let refs: Vec<&str> = keys.iter().map(|k| &**k).collect();
        Ok(self.get_many(py, &refs))
    }

    fn get_buffer(&self, py: Python<'_>, key: &str) -> Option<BufferHandle> {
        let live = self.live()?;
        let cap = live.local.cap;
        let client = &live.client;
        let v = block(py, async move {
            client.batch_get_owned(&[key], cap).await.pop()
        })??
        .ok()?;
        let held = live.local.reserve(v.len() as u64)?;
        Some(BufferHandle::new(v, held))
    }

    fn batch_get_buffer(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Option<BufferHandle>>> {
        let keys = key_list(keys)?;
        let Some(live) = self.live() else {
            return Ok(keys.iter().map(|_| None).collect());
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cap = live.local.cap;
        let client = &live.client;
        let refs: Vec<&str> = keys.iter().map(|k| &**k).collect();
        let got =
            block(py, async move { client.batch_get_owned(&refs, cap).await }).unwrap_or_default();
        let mut out: Vec<Option<BufferHandle>> = Vec::with_capacity(keys.len());
        let mut got = got.into_iter();
        for _ in 0..keys.len() {
            out.push(match got.next() {
                Some(Ok(v)) => live
                    .local
                    .reserve(v.len() as u64)
                    .map(|held| BufferHandle::new(v, held)),
                _ => None,
            });
        }
        Ok(out)
    }

    // ---- zero-copy gets ----

    fn get_into(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let ptr = u64_arg(buffer_ptr, "buffer_ptr")?;
        let size = u64_arg(size, "size")?;
        let Some(live) = self.live() else {
            return Ok(INVALID.into());
        };
        if ptr == 0 || is_device(ptr) {
            return Ok(INVALID.into());
        }
        // SAFETY: the caller owns `size` writable bytes at `ptr` for the call (§1.4
        // `get_into`); null was refused above.
        let buf = unsafe { raw_slice_mut(ptr, size) };
        let client = &live.client;
        Ok(block(
            py,
            async move { bytes_read(&client.get_into(key, buf).await) },
        )
        .unwrap_or(INVALID.into()))
    }

    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        let keys = key_list(keys)?;
        let ptrs = u64_list(buffer_ptrs, "buffer_ptrs")?;
        let sizes = u64_list(sizes, "sizes")?;
        let n = keys.len();
        let Some(live) = self.live() else {
            return Ok(vec![INVALID.into(); n]);
        };
        if ptrs.len() != n || sizes.len() != n {
            return Ok(vec![INVALID.into(); n]);
        }
        // Null buffers are answered here; the rest go to the client in one batch.
        let mut out = vec![i64::from(INVALID); n];
        let mut idx = Vec::with_capacity(n);
        let mut refs = Vec::with_capacity(n);
        let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(n);
        for i in 0..n {
            if ptrs[i] == 0 || is_device(ptrs[i]) {
                continue;
            }
            // SAFETY: the caller owns `sizes[i]` writable bytes at `ptrs[i]` for the call and
            // passes distinct buffers per key (§1.4); null was skipped.
            bufs.push(unsafe { raw_slice_mut(ptrs[i], sizes[i]) });
            refs.push(&*keys[i]);
            idx.push(i);
        }
        if refs.is_empty() {
            return Ok(out);
        }
        let client = &live.client;
        let got: Vec<i64> = block(py, async move {
            client
                .batch_get_into(&refs, &mut bufs)
                .await
                .iter()
                .map(bytes_read)
                .collect()
        })
        .unwrap_or_default();
        for (i, r) in idx.into_iter().zip(got) {
            out[i] = r;
        }
        Ok(out)
    }

    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, prefer_alloc_in_same_node=false))]
    fn batch_get_into_multi_buffers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        all_buffer_ptrs: &Bound<'_, PyAny>,
        all_sizes: &Bound<'_, PyAny>,
        prefer_alloc_in_same_node: bool,
    ) -> PyResult<Vec<i64>> {
        // Reads come from the first complete replica; same-node preference is a hint only.
        let _ = prefer_alloc_in_same_node;
        let keys = key_list(keys)?;
        let ptrs = u64_lists(all_buffer_ptrs, "all_buffer_ptrs")?;
        let sizes = u64_lists(all_sizes, "all_sizes")?;
        let n = keys.len();
        let Some(live) = self.live() else {
            return Ok(vec![INVALID.into(); n]);
        };
        if ptrs.len() != n || sizes.len() != n {
            return Ok(vec![INVALID.into(); n]);
        }
        let mut out = vec![i64::from(INVALID); n];
        let mut idx = Vec::with_capacity(n);
        let mut refs = Vec::with_capacity(n);
        let mut pieces: Vec<Vec<&mut [u8]>> = Vec::with_capacity(n);
        for i in 0..n {
            let (p, s) = (&ptrs[i], &sizes[i]);
            if p.len() != s.len()
                || p.iter()
                    .zip(s)
                    .any(|(&a, &l)| (a == 0 && l > 0) || is_device(a))
            {
                continue;
            }
            // SAFETY: the caller owns every `(ptr, size)` piece as writable memory for the
            // call, pieces not overlapping (§1.4 scatter); null non-empty pieces were skipped.
            let list = p
                .iter()
                .zip(s)
                .map(|(&a, &l)| unsafe { raw_slice_mut(a, l) })
                .collect();
            pieces.push(list);
            refs.push(&*keys[i]);
            idx.push(i);
        }
        if refs.is_empty() {
            return Ok(out);
        }
        let client = &live.client;
        let got: Vec<i64> = block(py, async move {
            client
                .batch_get_into_parts(&refs, &mut pieces)
                .await
                .iter()
                .map(bytes_read)
                .collect()
        })
        .unwrap_or_default();
        for (i, r) in idx.into_iter().zip(got) {
            out[i] = r;
        }
        Ok(out)
    }

    // ---- existence, size, replicas ----

    fn is_exist(&self, py: Python<'_>, key: &str) -> i32 {
        let Some(live) = self.live() else {
            return INVALID;
        };
        let client = &live.client;
        block(py, async move { client.batch_exist(&[key]).await.pop() })
            .flatten()
            .unwrap_or(INVALID)
    }

    fn batch_is_exist(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Vec<i32>> {
        let keys = key_list(keys)?;
        let Some(live) = self.live() else {
            return Ok(vec![INVALID; keys.len()]);
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let n = keys.len();
        let refs: Vec<&str> = keys.iter().map(|k| &**k).collect();
        let client = &live.client;
        Ok(block(py, async move { client.batch_exist(&refs).await })
            .unwrap_or_else(|| vec![INVALID; n]))
    }

    /// Object size (grants a lease), or a negative code.
    fn get_size(&self, py: Python<'_>, key: &str) -> i64 {
        let Some(live) = self.live() else {
            return INVALID.into();
        };
        let client = &live.client;
        let r = block(py, async move { client.lookup(&[key]).await.pop() });
        match r.flatten() {
            Some(Ok(v)) => i64::try_from(v.size).unwrap_or(i64::MAX),
            Some(Err(e)) => e.code().as_i32().into(),
            None => INVALID.into(),
        }
    }

    fn get_replica_desc(&self, py: Python<'_>, key: &str) -> Vec<ReplicaDescriptor> {
        self.replica_descs(py, &[key])
            .pop()
            .flatten()
            .unwrap_or_default()
    }

    fn batch_get_replica_desc<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let keys = key_list(keys)?;
        let out = PyDict::new(py);
        let refs: Vec<&str> = keys.iter().map(|k| &**k).collect();
        let descs = self.replica_descs(py, &refs);
        for (k, d) in refs.into_iter().zip(descs) {
            if let Some(list) = d {
                out.set_item(k, PyList::new(py, list)?)?;
            }
        }
        Ok(out)
    }

    // ---- buffers ----

    fn register_buffer(
        &self,
        py: Python<'_>,
        buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        let ptr = u64_arg(buffer_ptr, "buffer_ptr")?;
        let size = u64_arg(size, "size")?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        if ptr == 0 || size == 0 {
            return Ok(INVALID);
        }
        Ok(py.allow_threads(|| {
            if crate::device::region_is_device(ptr) {
                tracing::warn!(
                    ptr,
                    "register_buffer: GPU device memory is not supported yet"
                );
                return INVALID;
            }
            let rc = status(&live.client.register_memory(ptr, size));
            if rc == 0 {
                crate::device::note_host_region(ptr, size);
            }
            rc
        }))
    }

    fn unregister_buffer(&self, py: Python<'_>, buffer_ptr: &Bound<'_, PyAny>) -> PyResult<i32> {
        let ptr = u64_arg(buffer_ptr, "buffer_ptr")?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        Ok(py.allow_threads(|| {
            let rc = status(&live.client.unregister_memory(ptr));
            if rc == 0 {
                crate::device::forget_region(ptr);
            }
            rc
        }))
    }

    // ---- removal ----

    #[pyo3(signature = (key, force=false))]
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32 {
        let Some(live) = self.live() else {
            return INVALID;
        };
        let client = &live.client;
        block(
            py,
            async move { client.batch_remove(&[key], force).await.pop() },
        )
        .flatten()
        .unwrap_or(INVALID)
    }

    #[pyo3(signature = (keys, force=false))]
    fn batch_remove(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        force: bool,
    ) -> PyResult<Vec<i32>> {
        let keys = key_list(keys)?;
        let n = keys.len();
        let Some(live) = self.live() else {
            return Ok(vec![INVALID; n]);
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = keys.iter().map(|k| &**k).collect();
        let client = &live.client;
        Ok(
            block(py, async move { client.batch_remove(&refs, force).await })
                .unwrap_or_else(|| vec![INVALID; n]),
        )
    }

    #[pyo3(signature = (force=false))]
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        let Some(live) = self.live() else {
            return INVALID.into();
        };
        let client = &live.client;
        block(
            py,
            async move { bytes_read(&client.remove_all(force).await) },
        )
        .unwrap_or(INVALID.into())
    }

    #[pyo3(signature = (regex_pattern, force=false))]
    fn remove_by_regex(&self, py: Python<'_>, regex_pattern: &str, force: bool) -> i64 {
        let Some(live) = self.live() else {
            return INVALID.into();
        };
        let client = &live.client;
        let pattern = regex_pattern.to_string();
        block(py, async move {
            match client
                .raw(MasterRequest::RemoveByRegex { pattern, force })
                .await
            {
                Ok(MasterResponse::Count(n)) => i64::try_from(n).unwrap_or(i64::MAX),
                Ok(_) => ErrorCode::RpcFail.as_i32().into(),
                Err(e) => e.code().as_i32().into(),
            }
        })
        .unwrap_or(INVALID.into())
    }
}

/// Bodies shared by the put methods and their `upsert` twins.
impl Store {
    fn put_impl(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        replace: bool,
    ) -> PyResult<i32> {
        let view = ByteView::new(value, false)?;
        let cfg = config_arg(config, 1)?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let data = view.as_slice();
        if data.is_empty() {
            return Ok(INVALID);
        }
        let Some(_held) = live.local.reserve(data.len() as u64) else {
            return Ok(INVALID);
        };
        let client = &live.client;
        Ok(block(py, async move {
            status(&client.store(key, data, &cfg, replace).await)
        })
        .unwrap_or(INVALID))
    }

    fn put_parts_impl(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, PyTuple>,
        config: Option<&Bound<'_, PyAny>>,
        replace: bool,
    ) -> PyResult<i32> {
        let views: Vec<ByteView<'_>> = parts
            .iter()
            .map(|p| ByteView::new(&p, true))
            .collect::<PyResult<_>>()?;
        let cfg = config_arg(config, 1)?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let slices: Vec<&[u8]> = views.iter().map(|v| v.as_slice()).collect();
        let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
        if total == 0 {
            return Ok(INVALID);
        }
        let Some(_held) = live.local.reserve(total) else {
            return Ok(INVALID);
        };
        let client = &live.client;
        let items = [(key, &slices[..])];
        Ok(block(py, async move {
            client
                .store_parts_batch(&items, &cfg, replace)
                .await
                .pop()
                .map(|r| status(&r))
                .unwrap_or(INVALID)
        })
        .unwrap_or(INVALID))
    }

    fn put_batch_impl(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        replace: bool,
    ) -> PyResult<i32> {
        let keys = key_list(keys)?;
        let views: Vec<ByteView<'_>> = values
            .try_iter()?
            .map(|v| ByteView::new(&v?, false))
            .collect::<PyResult<_>>()?;
        let cfg = config_arg(config, keys.len())?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if keys.len() != views.len() {
            return Ok(INVALID);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let slices: Vec<[&[u8]; 1]> = views.iter().map(|v| [v.as_slice()]).collect();
        let total: u64 = slices.iter().map(|s| s[0].len() as u64).sum();
        if slices.iter().any(|s| s[0].is_empty()) {
            return Ok(INVALID);
        }
        let Some(_held) = live.local.reserve(total) else {
            return Ok(INVALID);
        };
        let items: Vec<(&str, &[&[u8]])> = keys
            .iter()
            .zip(&slices)
            .map(|(k, s)| (&**k, &s[..]))
            .collect();
        let client = &live.client;
        Ok(block(py, async move {
            client
                .store_parts_batch(&items, &cfg, replace)
                .await
                .iter()
                .map(status)
                .find(|&c| c != 0)
                .unwrap_or(0)
        })
        .unwrap_or(INVALID))
    }

    fn put_from_impl(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: &Bound<'_, PyAny>,
        size: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        replace: bool,
    ) -> PyResult<i32> {
        let ptr = u64_arg(buffer_ptr, "buffer_ptr")?;
        let size = u64_arg(size, "size")?;
        let cfg = config_arg(config, 1)?;
        let Some(live) = self.live() else {
            return Ok(INVALID);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if ptr == 0 || size == 0 || is_device(ptr) {
            return Ok(INVALID);
        }
        // SAFETY: the contract makes the caller own `size` readable bytes at `ptr` for the
        // duration of the call (§1.4 `put_from`); null and empty were refused above.
        let data = unsafe { raw_slice(ptr, size) };
        let client = &live.client;
        Ok(block(py, async move {
            status(&client.store(key, data, &cfg, replace).await)
        })
        .unwrap_or(INVALID))
    }

    fn batch_put_from_impl(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        config: Option<&Bound<'_, PyAny>>,
        replace: bool,
    ) -> PyResult<Vec<i32>> {
        let keys = key_list(keys)?;
        let ptrs = u64_list(buffer_ptrs, "buffer_ptrs")?;
        let sizes = u64_list(sizes, "sizes")?;
        let cfg = config_arg(config, keys.len())?;
        let n = keys.len();
        let Some(live) = self.live() else {
            return Ok(vec![INVALID; n]);
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(code) => return Ok(vec![code; n]),
        };
        if ptrs.len() != n || sizes.len() != n {
            return Ok(vec![INVALID; n]);
        }
        let parts: Vec<[&[u8]; 1]> = ptrs
            .iter()
            .zip(&sizes)
            .map(|(&p, &s)| {
                if p == 0 || is_device(p) {
                    [&[][..]]
                } else {
                    // SAFETY: the caller owns `s` readable bytes at `p` for the call (§1.4);
                    // null and device memory map to an empty slice, which the client refuses
                    // with -600.
                    [unsafe { raw_slice(p, s) }]
                }
            })
            .collect();
        let items: Vec<(&str, &[&[u8]])> = keys
            .iter()
            .zip(&parts)
            .map(|(k, p)| (&**k, &p[..]))
            .collect();
        let client = &live.client;
        Ok(block(py, async move {
            client
                .store_parts_batch(&items, &cfg, replace)
                .await
                .iter()
                .map(status)
                .collect()
        })
        .unwrap_or_else(|| vec![INVALID; n]))
    }
}

/// A new `bytes` object of `len` uninitialised bytes and the address of its storage; `None`
/// (with the Python error cleared) when it cannot be allocated.
fn uninit_bytes(py: Python<'_>, len: u64) -> Option<(Bound<'_, PyBytes>, u64)> {
    let n = pyo3::ffi::Py_ssize_t::try_from(len).ok()?;
    // SAFETY: with a null source, `PyBytes_FromStringAndSize` returns a new bytes object of `n`
    // uninitialised bytes, or null with an exception set.
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n) };
    if raw.is_null() {
        let _ = PyErr::take(py);
        return None;
    }
    // SAFETY: `raw` is a new, owned reference to a bytes object.
    let obj = unsafe { Bound::from_owned_ptr(py, raw).downcast_into_unchecked::<PyBytes>() };
    // SAFETY: `obj` is a live bytes object; its storage holds `n` bytes plus a NUL.
    let addr = unsafe { pyo3::ffi::PyBytes_AsString(obj.as_ptr()) } as u64;
    Some((obj, addr))
}

impl Store {
    /// Copying reads (`get`, `get_batch`): one lookup, then each object is read straight into
    /// a fresh `bytes` object of its size, with the GIL released. `b""` for every failure and
    /// for objects larger than the local buffer.
    fn get_many<'py>(&self, py: Python<'py>, keys: &[&str]) -> Vec<Bound<'py, PyBytes>> {
        let empty = || PyBytes::new(py, b"");
        let Some(live) = self.live() else {
            return keys.iter().map(|_| empty()).collect();
        };
        if keys.is_empty() {
            return Vec::new();
        }
        let client = &live.client;
        let cap = live.local.cap;
        let Some((views, sent)) = block(py, async move { client.lookup_timed(keys).await }) else {
            return keys.iter().map(|_| empty()).collect();
        };
        let mut objs: Vec<Option<Bound<'py, PyBytes>>> = Vec::with_capacity(keys.len());
        let mut spans: Vec<Option<(u64, u64)>> = Vec::with_capacity(keys.len());
        let mut wanted = Vec::with_capacity(keys.len());
        for v in views {
            let target = match &v {
                Ok(view) if view.size > 0 && view.size <= cap => {
                    uninit_bytes(py, view.size).map(|(o, a)| (o, a, view.size))
                }
                _ => None,
            };
            match target {
                Some((obj, addr, len)) => {
                    objs.push(Some(obj));
                    spans.push(Some((addr, len)));
                    wanted.push(v);
                }
                None => {
                    objs.push(None);
                    spans.push(None);
                    wanted.push(Err(tidepool_common::Error::invalid("not read")));
                }
            }
        }
        // Initialise the storage (cheaper than a copy, and without the GIL) so that it can be
        // handed to the reader as ordinary byte slices.
        py.allow_threads(|| {
            for &(addr, len) in spans.iter().flatten() {
                // SAFETY: `addr` points at `len` writable bytes of a bytes object created above
                // and referenced only by `objs`.
                unsafe { std::ptr::write_bytes(addr as usize as *mut u8, 0, len as usize) };
            }
        });
        let mut pieces: Vec<Vec<&mut [u8]>> = spans
            .iter()
            .map(|span| match *span {
                // SAFETY: as above; the storage is now initialised, and nothing else reads or
                // writes it until this function returns the objects.
                Some((addr, len)) => vec![unsafe { raw_slice_mut(addr, len) }],
                None => Vec::new(),
            })
            .collect();
        let got = block(py, async move {
            client.read_looked_up(keys, wanted, sent, &mut pieces).await
        })
        .unwrap_or_default();
        objs.into_iter()
            .enumerate()
            .map(|(i, o)| match (o, got.get(i)) {
                (Some(obj), Some(Ok(_))) => obj,
                _ => empty(),
            })
            .collect()
    }

    /// Replica descriptors per key (`None` for keys that failed); grants leases.
    fn replica_descs(&self, py: Python<'_>, keys: &[&str]) -> Vec<Option<Vec<ReplicaDescriptor>>> {
        let n = keys.len();
        let Some(live) = self.live() else {
            return vec![None; n];
        };
        if n == 0 {
            return Vec::new();
        }
        let client = &live.client;
        let r = block(py, async move {
            let views = client.lookup(keys).await;
            let mut ids: Vec<tidepool_common::SegmentId> = views
                .iter()
                .flatten()
                .flat_map(|v| {
                    v.replicas
                        .iter()
                        .filter_map(|r| r.memory().map(|m| m.segment))
                })
                .collect();
            ids.sort_unstable_by_key(|id| id.0);
            ids.dedup();
            let mut endpoints: HashMap<tidepool_common::SegmentId, String> = HashMap::new();
            if !ids.is_empty()
                && let Ok(MasterResponse::Segments(segs)) =
                    client.raw(MasterRequest::DescribeSegments(ids)).await
            {
                for s in segs {
                    endpoints.insert(s.id, s.spec.endpoint);
                }
            }
            views
                .into_iter()
                .map(|v| {
                    v.ok().map(|view| {
                        view.replicas
                            .iter()
                            .map(|r| ReplicaDescriptor {
                                status: r.status.into(),
                                memory: r.memory().map(|m| MemoryDescriptor {
                                    buffer_descriptor: Descriptor {
                                        size: m.len,
                                        buffer_address: m.addr,
                                        transport_endpoint: endpoints
                                            .get(&m.segment)
                                            .cloned()
                                            .unwrap_or_default(),
                                    },
                                }),
                            })
                            .collect()
                    })
                })
                .collect::<Vec<_>>()
        });
        r.unwrap_or_else(|| vec![None; n])
    }
}
