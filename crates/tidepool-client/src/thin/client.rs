//! The thin client: forwards store calls to a `tidepool node` on the same host.
//!
//! Calls travel on a small pool of TCP connections to the node's thin-client port, one call in
//! flight per connection (the async mutex of a slot is held for the round trip, payload
//! included). Memory travels once: the first call that names a pointer inside a shareable
//! region (the staging buffer, or a block of [`super::alloc_shared`]) sends that region's memfd
//! over the session's Unix socket; from then on the node reads and writes the bytes in place.
//! Pointers outside every region are copied through the frame payload, so any host memory
//! works.
//!
//! The method names and signatures mirror [`crate::Client`]'s, so the Python binding can put
//! either behind one type.

use super::{SharedRegion, all_shared, find_shared, next_region_id};
use crate::rpc::check;
use crate::{code_result, codes_of, count_of, lookup_of};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tidepool_common::{Error, ErrorCode, Result};
use tidepool_proto::frame::{self, FrameError, FrameKind};
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_proto::thin::{MAX_INLINE, Span, ThinItem, ThinRequest, ThinResponse};
use tidepool_proto::{MIN_COMPATIBLE_VERSION, ObjectView, PROTOCOL_VERSION, ReplicateConfig};
use tidepool_transfer::SharedMemory;
use tidepool_transfer::shmem::send_with_fd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixStream};

/// How a thin client reaches its node.
#[derive(Debug, Clone)]
pub struct ThinConfig {
    /// The node's thin-client address `host:port` (`mooncake_client --port`).
    pub server_addr: String,
    /// Staging buffer shared with the node; 0 = none.
    pub local_buffer_size: u64,
    /// Deadline of a connect plus `Hello` (`MC_RPC_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Deadline of one call (`MC_RPC_TIMEOUT_MS`).
    pub call_timeout: Duration,
    /// TCP connections to keep (calls in flight at once).
    pub connections: usize,
}

impl Default for ThinConfig {
    fn default() -> Self {
        Self {
            server_addr: "127.0.0.1:50052".into(),
            local_buffer_size: 0,
            connect_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
            connections: 8,
        }
    }
}

/// One TCP connection of the pool.
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

/// What the node said in `Hello`.
struct Hello {
    session: u64,
    ipc_socket: String,
    hostname: String,
}

struct Inner {
    cfg: ThinConfig,
    session: u64,
    hostname: String,
    conns: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    req_id: AtomicU64,
    /// The Unix socket; an async mutex because an attach is a round trip on it. `None` once
    /// it failed or the client closed: later regions then travel inline.
    ipc: tokio::sync::Mutex<Option<UnixStream>>,
    /// Regions the node has mapped for this session.
    attached: Mutex<HashSet<u64>>,
    /// The staging buffer (private to this session).
    staging: Option<SharedRegion>,
    /// `register_memory` bookkeeping (base -> len), kept for its overlap and unknown-base
    /// answers; the memory itself needs no registration in thin mode.
    registered: Mutex<BTreeMap<u64, u64>>,
    /// Bytes named by `(region, offset, len)` so far (moved by the node in place).
    shared_bytes: AtomicU64,
    /// Bytes copied through frame payloads so far.
    inline_bytes: AtomicU64,
    /// False after a call could not reach the node.
    healthy: AtomicBool,
    closed: AtomicBool,
    /// Where region-freed notifications run (they come from synchronous callers).
    rt: tokio::runtime::Handle,
}

/// Live thin clients of this process, told when a shared region is freed.
static SESSIONS: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// Tells every thin client that attached region `id` to have its node drop the mapping.
pub(crate) fn region_freed(id: u64) {
    let live: Vec<Arc<Inner>> = {
        let mut s = SESSIONS.lock();
        s.retain(|w| w.strong_count() > 0);
        s.iter().filter_map(Weak::upgrade).collect()
    };
    for inner in live {
        if inner.attached.lock().remove(&id) {
            let rt = inner.rt.clone();
            rt.spawn(async move {
                if let Err(e) = inner
                    .ipc_call(&ThinRequest::Detach { region: id }, None)
                    .await
                {
                    tracing::debug!(error = %e, region = id, "detach failed");
                }
            });
        }
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::RpcFail,
        format!("thin client {what} failed: {e}"),
    )
}

fn frame_err(e: FrameError) -> Error {
    match e {
        FrameError::BadVersion(_) => Error::new(ErrorCode::InvalidVersion, e.to_string()),
        other => io_err("call", other),
    }
}

/// A call's answer with its connection still held, so the caller can read the payload
/// straight into place. Dropping it before the payload was consumed discards the connection
/// (its stream position is unknown).
struct Reply<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Conn>>,
    resp: ThinResponse,
    left: u64,
    deadline: Instant,
}

impl Reply<'_> {
    /// Reads the next `dst.len()` payload bytes into `dst`.
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<()> {
        let n = dst.len() as u64;
        if n > self.left {
            return Err(io_err("read", "answer shorter than announced"));
        }
        let conn = self
            .slot
            .as_mut()
            .ok_or_else(|| io_err("read", "connection gone"))?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, conn.rd.read_exact(dst))
            .await
            .map_err(|_| Error::new(ErrorCode::RpcTimeout, "thin call timed out"))?
            .map_err(|e| io_err("read", e))?;
        self.left -= n;
        Ok(())
    }

    /// Checks the whole payload was consumed, releasing the connection for the next call.
    fn finish(self) -> Result<()> {
        if self.left != 0 {
            return Err(io_err("read", "unexpected payload bytes"));
        }
        Ok(())
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if self.left != 0 {
            *self.slot = None;
        }
    }
}

/// A store client whose calls run in a `tidepool node` of the same host. Cheap to clone.
#[derive(Clone)]
pub struct ThinClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ThinClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinClient")
            .field("server", &self.inner.cfg.server_addr)
            .field("session", &self.inner.session)
            .finish()
    }
}

/// Opens one TCP connection and says `Hello` (joining `session` when given).
async fn open_conn(cfg: &ThinConfig, session: Option<u64>) -> Result<(Conn, Hello)> {
    let fut = async {
        let stream = TcpStream::connect(&cfg.server_addr)
            .await
            .map_err(|e| io_err(&format!("connect to {}", cfg.server_addr), e))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            rd: BufReader::new(rd),
            wr,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        };
        let hello = ThinRequest::Hello {
            version_min: MIN_COMPATIBLE_VERSION,
            version_max: PROTOCOL_VERSION,
            session,
        };
        frame::write_frame(
            &mut conn.wr,
            &mut conn.wbuf,
            FrameKind::Request,
            0,
            &hello,
            &[],
        )
        .await
        .map_err(frame_err)?;
        let (hdr, msg) = frame::read_frame::<_, ThinResponse>(&mut conn.rd, &mut conn.rbuf)
            .await
            .map_err(frame_err)?;
        if hdr.payload_len != 0 {
            return Err(io_err("hello", "unexpected payload"));
        }
        match msg.map_err(frame_err)? {
            ThinResponse::Hello {
                session,
                ipc_socket,
                hostname,
                ..
            } => Ok((
                conn,
                Hello {
                    session,
                    ipc_socket,
                    hostname,
                },
            )),
            ThinResponse::Error { code, message } => Err(Error::new(code, message)),
            other => Err(io_err("hello", format!("unexpected answer {other:?}"))),
        }
    };
    tokio::time::timeout(cfg.connect_timeout, fut)
        .await
        .map_err(|_| {
            Error::new(
                ErrorCode::RpcFail,
                format!(
                    "thin-client server not reachable within the connect timeout: addr={}",
                    cfg.server_addr
                ),
            )
        })?
}

impl Inner {
    /// One request/answer on the Unix socket, with `fd` attached when given.
    async fn ipc_call(&self, req: &ThinRequest, fd: Option<std::os::fd::RawFd>) -> Result<()> {
        let mut guard = self.ipc.lock().await;
        let Some(stream) = guard.as_mut() else {
            return Err(io_err("ipc", "socket closed"));
        };
        let fut = async {
            let mut out = Vec::new();
            frame::encode_frame(&mut out, FrameKind::Request, 0, req, 0).map_err(frame_err)?;
            match fd {
                Some(fd) => send_with_fd(stream, &out, fd).await,
                None => stream.write_all(&out).await,
            }
            .map_err(|e| io_err("ipc send", e))?;
            let mut scratch = Vec::new();
            let (hdr, msg) = frame::read_frame::<_, ThinResponse>(&mut *stream, &mut scratch)
                .await
                .map_err(frame_err)?;
            if hdr.payload_len != 0 {
                return Err(io_err("ipc", "unexpected payload"));
            }
            match msg.map_err(frame_err)? {
                ThinResponse::Done => Ok(()),
                ThinResponse::Error { code, message } => Err(Error::new(code, message)),
                other => Err(io_err("ipc", format!("unexpected answer {other:?}"))),
            }
        };
        let r = tokio::time::timeout(self.cfg.call_timeout, fut)
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorCode::RpcTimeout, "ipc call timed out")));
        // A refusal leaves the channel usable; a transport failure does not.
        if let Err(e) = &r
            && matches!(e.code(), ErrorCode::RpcFail | ErrorCode::RpcTimeout)
        {
            *guard = None;
        }
        r
    }

    /// Makes sure the node has mapped `region`.
    async fn ensure_attached(&self, region: &SharedRegion) -> Result<()> {
        if self.attached.lock().contains(&region.id) {
            return Ok(());
        }
        let req = ThinRequest::Attach {
            region: region.id,
            size: region.mem.size(),
        };
        self.ipc_call(&req, Some(region.mem.fd())).await?;
        self.attached.lock().insert(region.id);
        Ok(())
    }

    /// Where `[addr, addr+len)` is for the node: inside a shared region (attached now if
    /// needed), or `None` to send the bytes inline.
    async fn span_of(&self, addr: u64, len: u64) -> Option<Span> {
        let span = self.span_of_inner(addr, len).await;
        let counter = match span {
            Some(_) => &self.shared_bytes,
            None => &self.inline_bytes,
        };
        counter.fetch_add(len, Ordering::Relaxed);
        span
    }

    async fn span_of_inner(&self, addr: u64, len: u64) -> Option<Span> {
        if len == 0 {
            return None;
        }
        if let Some(st) = &self.staging
            && let Some(offset) = st.mem.offset_of(addr, len)
        {
            return Some(Span::Shared {
                region: st.id,
                offset,
                len,
            });
        }
        let (region, offset) = find_shared(addr, len)?;
        match self.ensure_attached(&region).await {
            Ok(()) => Some(Span::Shared {
                region: region.id,
                offset,
                len,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot share a region with the node, copying instead");
                None
            }
        }
    }

    /// Sends `req` with `payload` on a free connection and reads the answer's message.
    async fn call(&self, req: &ThinRequest, payload: &[&[u8]]) -> Result<Reply<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::InvalidParams, "thin client closed"));
        }
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Prefer an idle connection; otherwise queue on the round-robin one.
        let mut slot = None;
        for k in 0..n {
            if let Ok(g) = self.conns[(start + k) % n].try_lock() {
                slot = Some(g);
                break;
            }
        }
        let mut slot = match slot {
            Some(g) => g,
            None => self.conns[start % n].lock().await,
        };
        let deadline = Instant::now() + self.cfg.call_timeout;
        if slot.is_none() {
            match open_conn(&self.cfg, Some(self.session)).await {
                Ok((c, _)) => *slot = Some(c),
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        let id = self.req_id.fetch_add(1, Ordering::Relaxed);
        let total: u64 = payload.iter().map(|p| p.len() as u64).sum();
        let r = {
            let Some(conn) = slot.as_mut() else {
                return Err(io_err("call", "no connection"));
            };
            let fut = async {
                conn.wbuf.clear();
                frame::encode_frame(&mut conn.wbuf, FrameKind::Request, id, req, total)
                    .map_err(frame_err)?;
                conn.wr
                    .write_all(&conn.wbuf)
                    .await
                    .map_err(|e| io_err("send", e))?;
                for p in payload {
                    conn.wr.write_all(p).await.map_err(|e| io_err("send", e))?;
                }
                conn.wr.flush().await.map_err(|e| io_err("send", e))?;
                let (hdr, msg) = frame::read_frame::<_, ThinResponse>(&mut conn.rd, &mut conn.rbuf)
                    .await
                    .map_err(frame_err)?;
                if hdr.request_id != id {
                    return Err(io_err("call", "answer to another request"));
                }
                Ok((hdr.payload_len, msg))
            };
            tokio::time::timeout_at(deadline.into(), fut)
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorCode::RpcTimeout, "thin call timed out")))
        };
        match r {
            Ok((left, Ok(resp))) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(Reply {
                    slot,
                    resp,
                    left,
                    deadline,
                })
            }
            Ok((left, Err(e))) => {
                // The message was consumed; an undecodable one still ends the connection
                // unless it had no payload.
                if left != 0 {
                    *slot = None;
                }
                Err(frame_err(e))
            }
            Err(e) => {
                *slot = None;
                self.healthy.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// A call whose answer carries no payload.
    async fn simple(&self, req: &ThinRequest, payload: &[&[u8]]) -> Result<ThinResponse> {
        let mut reply = self.call(req, payload).await?;
        let resp = std::mem::replace(&mut reply.resp, ThinResponse::Done);
        reply.finish()?;
        match resp {
            ThinResponse::Error { code, message } => Err(Error::new(code, message)),
            other => Ok(other),
        }
    }

    /// A forwarded master call.
    async fn master(&self, req: MasterRequest) -> Result<MasterResponse> {
        match self.simple(&ThinRequest::Master(req), &[]).await? {
            ThinResponse::Master(m) => check(m),
            other => Err(io_err("call", format!("unexpected answer {other:?}"))),
        }
    }
}

impl ThinClient {
    /// Connects to the node, opens a session, shares the staging buffer (if any) and every
    /// block already allocated with [`super::alloc_shared`]. Must run inside a tokio runtime.
    /// Nothing listening is -900 at once; a node of an incompatible version is -300.
    pub async fn connect(cfg: ThinConfig) -> Result<ThinClient> {
        let (conn, hello) = open_conn(&cfg, None).await?;
        let ipc = tokio::time::timeout(cfg.connect_timeout, UnixStream::connect(&hello.ipc_socket))
            .await
            .map_err(|_| io_err("ipc connect", "timed out"))?
            .map_err(|e| io_err(&format!("ipc connect to {}", hello.ipc_socket), e))?;
        let staging = match cfg.local_buffer_size {
            0 => None,
            n => Some(SharedRegion {
                id: next_region_id(),
                mem: SharedMemory::create("tidepool-staging", n, false)?,
            }),
        };
        let conns = (0..cfg.connections.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect::<Vec<_>>();
        let inner = Arc::new(Inner {
            session: hello.session,
            hostname: hello.hostname,
            conns,
            next: AtomicUsize::new(0),
            req_id: AtomicU64::new(1),
            ipc: tokio::sync::Mutex::new(Some(ipc)),
            attached: Mutex::new(HashSet::new()),
            staging,
            registered: Mutex::new(BTreeMap::new()),
            shared_bytes: AtomicU64::new(0),
            inline_bytes: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            rt: tokio::runtime::Handle::current(),
            cfg,
        });
        *inner.conns[0].lock().await = Some(conn);
        inner
            .ipc_call(
                &ThinRequest::Bind {
                    session: inner.session,
                },
                None,
            )
            .await?;
        if let Some(st) = &inner.staging {
            let req = ThinRequest::Attach {
                region: st.id,
                size: st.mem.size(),
            };
            inner.ipc_call(&req, Some(st.mem.fd())).await?;
        }
        for region in all_shared() {
            inner.ensure_attached(&region).await?;
        }
        SESSIONS.lock().push(Arc::downgrade(&inner));
        tracing::info!(server = %inner.cfg.server_addr, session = inner.session, "thin client connected");
        Ok(ThinClient { inner })
    }

    /// The node's segment name (what `get_hostname` reports in thin mode).
    pub fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// False after the last call could not reach the node.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed) && !self.inner.closed.load(Ordering::Relaxed)
    }

    /// Bytes moved so far as `(shared in place, copied inline)`.
    pub fn bytes_moved(&self) -> (u64, u64) {
        (
            self.inner.shared_bytes.load(Ordering::Relaxed),
            self.inner.inline_bytes.load(Ordering::Relaxed),
        )
    }

    /// Address and size of the staging buffer shared with the node, if any.
    pub fn staging(&self) -> Option<(u64, u64)> {
        self.inner
            .staging
            .as_ref()
            .map(|s| (s.mem.addr(), s.mem.size()))
    }

    /// Stores one object (write-once, as [`crate::Client::put`]).
    pub async fn put(&self, key: &str, value: &[u8], cfg: &ReplicateConfig) -> Result<()> {
        let parts = [value];
        self.put_parts_batch(&[(key, &parts[..])], cfg)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("empty result")))
    }

    /// Stores objects gathered from their parts, as [`crate::Client::put_parts_batch`]. Parts
    /// inside shared regions are read by the node in place; others travel inline.
    pub async fn put_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        self.store_parts_batch(items, cfg, false).await
    }

    /// [`ThinClient::put`] (`replace == false`) or an upsert, as [`crate::Client::store`].
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

    /// [`ThinClient::put_parts_batch`] or its upsert twin, as
    /// [`crate::Client::store_parts_batch`].
    pub async fn store_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Vec<Result<()>> {
        let n = items.len();
        let mut wire = Vec::with_capacity(n);
        let mut payload: Vec<&[u8]> = Vec::new();
        let mut inline = 0u64;
        for (key, parts) in items {
            let mut spans = Vec::with_capacity(parts.len());
            for p in parts.iter() {
                match self.inner.span_of(p.as_ptr() as u64, p.len() as u64).await {
                    Some(s) => spans.push(s),
                    None => {
                        spans.push(Span::Inline {
                            len: p.len() as u64,
                        });
                        inline += p.len() as u64;
                        payload.push(p);
                    }
                }
            }
            wire.push(ThinItem {
                key: key.to_string(),
                spans,
            });
        }
        if inline > MAX_INLINE {
            let e = Error::invalid(format!(
                "too many bytes outside shared memory in one call: bytes={inline} max={MAX_INLINE}"
            ));
            return vec![Err(e); n];
        }
        let req = ThinRequest::Put {
            items: wire,
            config: cfg.clone(),
            replace,
        };
        match self.inner.simple(&req, &payload).await {
            Ok(ThinResponse::Codes(c)) if c.len() == n => c.into_iter().map(code_result).collect(),
            Ok(other) => {
                let e = io_err("put", format!("unexpected answer {other:?}"));
                vec![Err(e); n]
            }
            Err(e) => vec![Err(e); n],
        }
    }

    /// Reads objects into caller buffers, as [`crate::Client::batch_get_into`].
    pub async fn batch_get_into(&self, keys: &[&str], bufs: &mut [&mut [u8]]) -> Vec<Result<u64>> {
        let mut parts: Vec<Vec<&mut [u8]>> = bufs.iter_mut().map(|b| vec![&mut **b]).collect();
        self.batch_get_into_parts(keys, &mut parts).await
    }

    /// Reads one object into `buf`, returning its size.
    pub async fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        let mut bufs = [buf];
        self.batch_get_into(&[key], &mut bufs)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))
    }

    /// Reads objects into scattered pieces, as [`crate::Client::batch_get_into_parts`]. Pieces
    /// inside shared regions are written by the node in place; the others are filled from the
    /// answer's payload.
    pub async fn batch_get_into_parts(
        &self,
        keys: &[&str],
        bufs: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        let n = keys.len();
        if bufs.len() != n {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys and buffers differ in length")))
                .collect();
        }
        let mut wire = Vec::with_capacity(n);
        let mut inline = 0u64;
        for (key, pieces) in keys.iter().zip(bufs.iter()) {
            let mut spans = Vec::with_capacity(pieces.len());
            for p in pieces {
                let len = p.len() as u64;
                match self.inner.span_of(p.as_ptr() as u64, len).await {
                    Some(s) => spans.push(s),
                    None => {
                        spans.push(Span::Inline { len });
                        inline += len;
                    }
                }
            }
            wire.push(ThinItem {
                key: key.to_string(),
                spans,
            });
        }
        if inline > MAX_INLINE {
            let e = Error::invalid(format!(
                "too many bytes outside shared memory in one call: bytes={inline} max={MAX_INLINE}"
            ));
            return vec![Err(e); n];
        }
        let req = ThinRequest::Get { items: wire };
        match self.read_answer(&req, bufs).await {
            Ok(r) => r,
            Err(e) => vec![Err(e); n],
        }
    }

    /// Sends a `Get` and fills the inline pieces of `bufs` from the answer's payload.
    async fn read_answer(
        &self,
        req: &ThinRequest,
        bufs: &mut [Vec<&mut [u8]>],
    ) -> Result<Vec<Result<u64>>> {
        let ThinRequest::Get { items } = req else {
            return Err(Error::internal("not a get"));
        };
        let mut reply = self.inner.call(req, &[]).await?;
        let (results, fills) = match std::mem::replace(&mut reply.resp, ThinResponse::Done) {
            ThinResponse::Read { results, inline } if results.len() == items.len() => {
                (results, inline)
            }
            ThinResponse::Error { code, message } => return Err(Error::new(code, message)),
            other => return Err(io_err("get", format!("unexpected answer {other:?}"))),
        };
        let mut fills = fills.into_iter();
        for (item, pieces) in items.iter().zip(bufs.iter_mut()) {
            for (span, piece) in item.spans.iter().zip(pieces.iter_mut()) {
                if let Span::Inline { .. } = span {
                    let k = fills
                        .next()
                        .ok_or_else(|| io_err("get", "missing inline length"))?;
                    let k = usize::try_from(k)
                        .ok()
                        .filter(|&k| k <= piece.len())
                        .ok_or_else(|| io_err("get", "inline fill exceeds its piece"))?;
                    reply.read_into(&mut piece[..k]).await?;
                }
            }
        }
        reply.finish()?;
        Ok(results
            .into_iter()
            .zip(item_keys(items))
            .map(|(r, k)| r.map_err(|c| Error::new(c, format!("get failed: key={k}"))))
            .collect())
    }

    /// Reads whole objects of at most `limit` bytes, as [`crate::Client::batch_get_owned`].
    pub async fn batch_get_owned(&self, keys: &[&str], limit: u64) -> Vec<Result<Vec<u8>>> {
        let n = keys.len();
        let req = ThinRequest::GetOwned {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            limit,
        };
        let fut = async {
            let mut reply = self.inner.call(&req, &[]).await?;
            let sizes = match std::mem::replace(&mut reply.resp, ThinResponse::Done) {
                ThinResponse::Owned(s) if s.len() == n => s,
                ThinResponse::Error { code, message } => return Err(Error::new(code, message)),
                other => return Err(io_err("get", format!("unexpected answer {other:?}"))),
            };
            let mut out = Vec::with_capacity(n);
            for (r, key) in sizes.into_iter().zip(keys) {
                match r {
                    Ok(size) if size <= limit && size <= reply.left => {
                        let mut v = vec![0u8; size as usize];
                        reply.read_into(&mut v).await?;
                        out.push(Ok(v));
                    }
                    Ok(_) => return Err(io_err("get", "object larger than announced")),
                    Err(c) => out.push(Err(Error::new(c, format!("get failed: key={key}")))),
                }
            }
            reply.finish()?;
            Ok(out)
        };
        match fut.await {
            Ok(v) => v,
            Err(e) => vec![Err(e); n],
        }
    }

    /// Looks objects up for reading (the node's master grants leases).
    pub async fn lookup(&self, keys: &[&str]) -> Vec<Result<ObjectView>> {
        let req = MasterRequest::GetReplicas(keys.iter().map(|k| k.to_string()).collect());
        lookup_of(self.inner.master(req).await, keys)
    }

    /// [`ThinClient::lookup`] plus the instant the request left.
    pub async fn lookup_timed(&self, keys: &[&str]) -> (Vec<Result<ObjectView>>, Instant) {
        let sent = Instant::now();
        (self.lookup(keys).await, sent)
    }

    /// Reads objects found by [`ThinClient::lookup_timed`] into their pieces. The node looks
    /// them up again (its own lease deadline guards the read); keys whose lookup failed keep
    /// that error.
    pub async fn read_looked_up(
        &self,
        keys: &[&str],
        views: Vec<Result<ObjectView>>,
        _sent: Instant,
        pieces: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        if keys.len() != pieces.len() || keys.len() != views.len() {
            return keys
                .iter()
                .map(|_| Err(Error::invalid("keys, views and buffers differ in length")))
                .collect();
        }
        let mut out: Vec<Result<u64>> = Vec::with_capacity(keys.len());
        let mut idx = Vec::new();
        let mut sub_keys = Vec::new();
        let mut sub_pieces: Vec<Vec<&mut [u8]>> = Vec::new();
        for (i, (v, p)) in views.into_iter().zip(pieces.iter_mut()).enumerate() {
            match v {
                Ok(_) => {
                    out.push(Err(Error::internal("not read")));
                    idx.push(i);
                    sub_keys.push(keys[i]);
                    sub_pieces.push(p.iter_mut().map(|s| &mut **s).collect());
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if !sub_keys.is_empty() {
            let got = self.batch_get_into_parts(&sub_keys, &mut sub_pieces).await;
            for (i, r) in idx.into_iter().zip(got) {
                out[i] = r;
            }
        }
        out
    }

    /// Size of an object (grants a lease).
    pub async fn get_size(&self, key: &str) -> Result<u64> {
        self.lookup(&[key])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no result")))
            .map(|v| v.size)
    }

    /// Existence per key: 1, 0, or a negative code.
    pub async fn batch_exist(&self, keys: &[&str]) -> Vec<i32> {
        let req = MasterRequest::Exist(keys.iter().map(|k| k.to_string()).collect());
        codes_of(self.inner.master(req).await, keys.len())
    }

    /// Removes keys; one status per key.
    pub async fn batch_remove(&self, keys: &[&str], force: bool) -> Vec<i32> {
        let req = MasterRequest::Remove {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            force,
        };
        codes_of(self.inner.master(req).await, keys.len())
    }

    /// Removes every object in the cluster (skipping leased ones unless `force`).
    pub async fn remove_all(&self, force: bool) -> Result<u64> {
        count_of(self.inner.master(MasterRequest::RemoveAll { force }).await)
    }

    /// Removes every object whose key matches `pattern`.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64> {
        let req = MasterRequest::RemoveByRegex {
            pattern: pattern.to_string(),
            force,
        };
        count_of(self.inner.master(req).await)
    }

    /// Sends a metadata request through the node; calls that would act on the node's own
    /// registration are refused with -600.
    pub async fn raw(&self, req: MasterRequest) -> Result<MasterResponse> {
        self.inner.master(req).await
    }

    /// Notes a caller buffer. Nothing needs registering in thin mode (shared blocks are
    /// zero copy, other memory is copied), but the answers follow `register_buffer`'s rules:
    /// overlapping an existing registration is -600.
    pub fn register_memory(&self, addr: u64, len: u64) -> Result<()> {
        let end = addr
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| Error::invalid(format!("bad region: addr={addr:#x} len={len}")))?;
        let mut reg = self.inner.registered.lock();
        if let Some((&b, &l)) = reg.range(..end).next_back()
            && b + l > addr
        {
            return Err(Error::invalid(format!(
                "region overlaps a registered one: addr={addr:#x} len={len} existing={b:#x}+{l}"
            )));
        }
        reg.insert(addr, len);
        Ok(())
    }

    /// Forgets a buffer noted by [`ThinClient::register_memory`]; unknown bases are -600.
    pub fn unregister_memory(&self, addr: u64) -> Result<()> {
        match self.inner.registered.lock().remove(&addr) {
            Some(_) => Ok(()),
            None => Err(Error::invalid(format!(
                "no registered region at addr={addr:#x}"
            ))),
        }
    }

    /// Ends the session: connections close and the node drops this client's mappings. Objects
    /// stay in the node's segment.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        for c in &self.inner.conns {
            *c.lock().await = None;
        }
        *self.inner.ipc.lock().await = None;
        self.inner.attached.lock().clear();
        Ok(())
    }
}

fn item_keys(items: &[ThinItem]) -> impl Iterator<Item = &str> {
    items.iter().map(|i| i.key.as_str())
}
