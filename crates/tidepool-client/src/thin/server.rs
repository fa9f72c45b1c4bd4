//! The node side of standalone mode: serves thin clients on the thin-client port and maps
//! the memory they share over the Unix socket.
//!
//! A *session* is one thin client: its TCP connections and its Unix connection each hold an
//! `Arc` to it, and the session table only a `Weak`, so when the thin client closes or is
//! killed (every socket closes) the session and its mappings are dropped as soon as the calls
//! still running on them finish. Those calls keep the `Arc` of every region they touch, so a
//! mapping is never unmapped under a copy. Calls run to completion even if their thin client
//! died meanwhile: a put is then committed or revoked by the node's own client, never left
//! in flight.
//!
//! Every region arrives as a size-sealed memfd (`SharedMemory::from_fd` refuses others), so a
//! thin client cannot shrink memory under the node's mapping; every span is bounds-checked
//! against its region before any byte is touched.

use crate::Client;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tidepool_common::{Error, ErrorCode, Result};
use tidepool_proto::frame::{self, FrameError, FrameKind};
use tidepool_proto::thin::{MAX_INLINE, Span, ThinItem, ThinRequest, ThinResponse};
use tidepool_proto::{MIN_COMPATIBLE_VERSION, PROTOCOL_VERSION};
use tidepool_transfer::SharedMemory;
use tidepool_transfer::shmem::recv_with_fd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Regions one session may have mapped at once (bounds what a misbehaving client can pin).
const MAX_REGIONS: usize = 65_536;

/// One thin client's state on the node.
struct Session {
    id: u64,
    /// Mapped regions by the thin client's id. A read-mostly lock: every call resolves its
    /// spans here, attaches are rare.
    regions: RwLock<HashMap<u64, Arc<SharedMemory>>>,
}

/// Serves thin clients on behalf of a node's [`Client`].
pub struct ThinServer {
    client: Client,
    ipc_path: String,
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ThinResponse {
    ThinResponse::Error {
        code,
        message: message.into(),
    }
}

fn from_error(e: &Error) -> ThinResponse {
    refuse(e.code(), e.to_string())
}

/// Writes a response frame whose payload is the concatenation of `parts`.
async fn respond<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    id: u64,
    resp: &ThinResponse,
    parts: &[&[u8]],
) -> std::result::Result<(), FrameError> {
    scratch.clear();
    let total = parts.iter().map(|p| p.len() as u64).sum();
    frame::encode_frame(scratch, FrameKind::Response, id, resp, total)?;
    w.write_all(scratch).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    w.flush().await?;
    Ok(())
}

impl ThinServer {
    /// A server for `client`; `ipc_path` is where [`ThinServer::run`]'s Unix listener is bound
    /// (thin clients learn it in `Hello`).
    pub fn new(client: Client, ipc_path: String) -> Arc<Self> {
        Arc::new(Self {
            client,
            ipc_path,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh Unix socket path for a node (unique per start, short enough for `sun_path`).
    pub fn default_ipc_path() -> String {
        let nonce: u64 = rand::random();
        let name = format!("tidepool-thin-{}-{nonce:016x}.sock", std::process::id());
        let p = std::env::temp_dir().join(&name);
        if p.as_os_str().len() < 100 {
            p.to_string_lossy().into_owned()
        } else {
            format!("/tmp/{name}")
        }
    }

    /// Live sessions (for logs and tests).
    pub fn sessions(&self) -> usize {
        let mut s = self.sessions.lock();
        s.retain(|_, w| w.strong_count() > 0);
        s.len()
    }

    /// Accepts thin-client connections on both listeners until the task is dropped.
    pub async fn run(self: Arc<Self>, tcp: TcpListener, ipc: UnixListener) {
        loop {
            tokio::select! {
                a = tcp.accept() => match a {
                    Ok((stream, peer)) => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.serve_tcp(stream).await {
                                tracing::debug!(%peer, error = %e, "thin-client connection closed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "thin-client accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                a = ipc.accept() => match a {
                    Ok((stream, _)) => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.serve_ipc(stream).await {
                                tracing::debug!(error = %e, "thin-client ipc connection closed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "thin-client ipc accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    fn open_session(&self) -> Arc<Session> {
        let mut s = self.sessions.lock();
        s.retain(|_, w| w.strong_count() > 0);
        loop {
            let id: u64 = rand::random();
            if id != 0 && !s.contains_key(&id) {
                let session = Arc::new(Session {
                    id,
                    regions: RwLock::new(HashMap::new()),
                });
                s.insert(id, Arc::downgrade(&session));
                return session;
            }
        }
    }

    fn find_session(&self, id: u64) -> Option<Arc<Session>> {
        self.sessions.lock().get(&id).and_then(Weak::upgrade)
    }

    /// One TCP connection: `Hello`, then calls until the peer goes away.
    async fn serve_tcp(&self, stream: TcpStream) -> std::result::Result<(), FrameError> {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut meta = Vec::new();
        let mut out = Vec::new();
        let (hdr, msg) = frame::read_frame::<_, ThinRequest>(&mut rd, &mut meta).await?;
        frame::discard(&mut rd, hdr.payload_len).await?;
        let session = match msg {
            Ok(ThinRequest::Hello {
                version_min,
                version_max,
                session,
            }) => {
                if version_max < MIN_COMPATIBLE_VERSION || version_min > PROTOCOL_VERSION {
                    let r = refuse(
                        ErrorCode::InvalidVersion,
                        format!(
                            "incompatible thin-client version: client={version_min}..={version_max} node={MIN_COMPATIBLE_VERSION}..={PROTOCOL_VERSION}"
                        ),
                    );
                    return respond(&mut wr, &mut out, hdr.request_id, &r, &[]).await;
                }
                match session {
                    None => self.open_session(),
                    Some(id) => match self.find_session(id) {
                        Some(s) => s,
                        None => {
                            let r = refuse(ErrorCode::InvalidParams, "unknown thin-client session");
                            return respond(&mut wr, &mut out, hdr.request_id, &r, &[]).await;
                        }
                    },
                }
            }
            _ => {
                let r = refuse(ErrorCode::InvalidParams, "expected Hello");
                return respond(&mut wr, &mut out, hdr.request_id, &r, &[]).await;
            }
        };
        let hello = ThinResponse::Hello {
            version: PROTOCOL_VERSION,
            node_version_min: MIN_COMPATIBLE_VERSION,
            node_version_max: PROTOCOL_VERSION,
            session: session.id,
            ipc_socket: self.ipc_path.clone(),
            hostname: self.client.hostname().to_string(),
        };
        respond(&mut wr, &mut out, hdr.request_id, &hello, &[]).await?;
        loop {
            let (hdr, msg) = match frame::read_frame::<_, ThinRequest>(&mut rd, &mut meta).await {
                Ok(x) => x,
                Err(FrameError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            let req = match msg {
                Ok(r) => r,
                Err(e) => {
                    frame::discard(&mut rd, hdr.payload_len).await?;
                    let r = refuse(ErrorCode::InvalidParams, format!("bad request: {e}"));
                    respond(&mut wr, &mut out, hdr.request_id, &r, &[]).await?;
                    continue;
                }
            };
            // Inline bytes are read whole before the call runs; the bound keeps a hostile
            // length from allocating without limit.
            if hdr.payload_len > MAX_INLINE {
                return Err(FrameError::TooLarge {
                    what: "thin payload",
                    len: hdr.payload_len,
                });
            }
            let mut payload = vec![0u8; hdr.payload_len as usize];
            read_payload(&mut rd, &mut payload).await?;
            match req {
                ThinRequest::Put {
                    items,
                    config,
                    replace,
                } => {
                    let resp = self.put(&session, &items, &config, replace, &payload).await;
                    respond(&mut wr, &mut out, hdr.request_id, &resp, &[]).await?;
                }
                ThinRequest::Get { items } => {
                    let (resp, bufs) = self.get(&session, &items).await;
                    let parts: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
                    respond(&mut wr, &mut out, hdr.request_id, &resp, &parts).await?;
                }
                ThinRequest::GetOwned { keys, limit } => {
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let got = self.client.batch_get_owned(&refs, limit).await;
                    let sizes = got
                        .iter()
                        .map(|r| match r {
                            Ok(v) => Ok(v.len() as u64),
                            Err(e) => Err(e.code()),
                        })
                        .collect();
                    let parts: Vec<&[u8]> = got
                        .iter()
                        .filter_map(|r| r.as_ref().ok().map(Vec::as_slice))
                        .collect();
                    let resp = ThinResponse::Owned(sizes);
                    respond(&mut wr, &mut out, hdr.request_id, &resp, &parts).await?;
                }
                ThinRequest::Master(m) => {
                    let resp = if ThinRequest::forwardable(&m) {
                        match self.client.raw(m).await {
                            Ok(r) => ThinResponse::Master(r),
                            Err(e) => from_error(&e),
                        }
                    } else {
                        refuse(
                            ErrorCode::InvalidParams,
                            "master call not available to thin clients",
                        )
                    };
                    respond(&mut wr, &mut out, hdr.request_id, &resp, &[]).await?;
                }
                ThinRequest::Hello { .. }
                | ThinRequest::Bind { .. }
                | ThinRequest::Attach { .. }
                | ThinRequest::Detach { .. } => {
                    let r = refuse(ErrorCode::InvalidParams, "not a call for this connection");
                    respond(&mut wr, &mut out, hdr.request_id, &r, &[]).await?;
                }
            }
        }
    }

    /// The mapping of `region` and the address of `[offset, offset+len)` in it.
    fn resolve(
        session: &Session,
        region: u64,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<SharedMemory>, u64)> {
        let mem = session
            .regions
            .read()
            .get(&region)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("region not attached: region={region}")))?;
        let addr = mem.range(offset, len)?;
        Ok((mem, addr))
    }

    async fn put(
        &self,
        session: &Session,
        items: &[ThinItem],
        config: &tidepool_proto::ReplicateConfig,
        replace: bool,
        payload: &[u8],
    ) -> ThinResponse {
        if inline_total(items) != Some(payload.len() as u64) {
            return refuse(
                ErrorCode::InvalidParams,
                "inline spans do not match the payload",
            );
        }
        // Holding the mappings for the duration of the put keeps every slice below valid.
        let mut held: Vec<Arc<SharedMemory>> = Vec::new();
        let mut parts: Vec<Vec<&[u8]>> = Vec::with_capacity(items.len());
        let mut pos = 0usize;
        for item in items {
            let mut list = Vec::with_capacity(item.spans.len());
            for span in &item.spans {
                match *span {
                    Span::Shared {
                        region,
                        offset,
                        len,
                    } => match Self::resolve(session, region, offset, len) {
                        Ok((mem, addr)) => {
                            held.push(mem);
                            // SAFETY: `[addr, addr+len)` lies inside a mapping held in `held`
                            // until the put returns (bounds checked by `range`). The thin
                            // client may write the bytes concurrently; that can only tear the
                            // object's content, which is its caller's duty (§1.4), never
                            // touch memory outside the mapping.
                            list.push(unsafe {
                                std::slice::from_raw_parts(addr as *const u8, len as usize)
                            });
                        }
                        Err(e) => return from_error(&e),
                    },
                    Span::Inline { len } => {
                        let len = len as usize;
                        list.push(&payload[pos..pos + len]);
                        pos += len;
                    }
                }
            }
            parts.push(list);
        }
        let refs: Vec<(&str, &[&[u8]])> = items
            .iter()
            .zip(&parts)
            .map(|(i, p)| (i.key.as_str(), &p[..]))
            .collect();
        let codes = self
            .client
            .store_parts_batch(&refs, config, replace)
            .await
            .iter()
            .map(|r| match r {
                Ok(()) => 0,
                Err(e) => e.code().as_i32(),
            })
            .collect();
        drop(held);
        ThinResponse::Codes(codes)
    }

    /// Runs a scatter read; returns the answer and the filled part of each inline piece.
    async fn get(&self, session: &Session, items: &[ThinItem]) -> (ThinResponse, Vec<Vec<u8>>) {
        if inline_total(items).is_none_or(|n| n > MAX_INLINE) {
            return (
                refuse(ErrorCode::InvalidParams, "inline read too large"),
                Vec::new(),
            );
        }
        // Shared pieces become `&mut` slices: refuse overlapping ones, which would alias.
        let mut ranges: Vec<(u64, u64, u64)> = items
            .iter()
            .flat_map(|i| &i.spans)
            .filter_map(|s| match *s {
                Span::Shared {
                    region,
                    offset,
                    len,
                } if len > 0 => Some((region, offset, len)),
                _ => None,
            })
            .collect();
        ranges.sort_unstable();
        if ranges
            .windows(2)
            .any(|w| w[0].0 == w[1].0 && w[0].1.saturating_add(w[0].2) > w[1].1)
        {
            return (
                refuse(ErrorCode::InvalidParams, "overlapping read buffers"),
                Vec::new(),
            );
        }
        let mut inline_bufs: Vec<Vec<u8>> = items
            .iter()
            .flat_map(|i| &i.spans)
            .filter_map(|s| match *s {
                Span::Inline { len } => Some(vec![0u8; len as usize]),
                Span::Shared { .. } => None,
            })
            .collect();
        let mut held: Vec<Arc<SharedMemory>> = Vec::new();
        let results = {
            let mut inl = inline_bufs.iter_mut();
            let mut pieces: Vec<Vec<&mut [u8]>> = Vec::with_capacity(items.len());
            for item in items {
                let mut list = Vec::with_capacity(item.spans.len());
                for span in &item.spans {
                    match *span {
                        Span::Shared {
                            region,
                            offset,
                            len,
                        } => match Self::resolve(session, region, offset, len) {
                            Ok((mem, addr)) => {
                                held.push(mem);
                                // SAFETY: inside a mapping held in `held` for the read
                                // (bounds checked by `range`); shared pieces do not overlap
                                // (checked above), so no two slices alias.
                                list.push(unsafe {
                                    std::slice::from_raw_parts_mut(addr as *mut u8, len as usize)
                                });
                            }
                            Err(e) => return (from_error(&e), Vec::new()),
                        },
                        Span::Inline { .. } => match inl.next() {
                            Some(b) => list.push(&mut b[..]),
                            None => {
                                return (
                                    refuse(ErrorCode::InternalError, "inline piece missing"),
                                    Vec::new(),
                                );
                            }
                        },
                    }
                }
                pieces.push(list);
            }
            let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
            self.client.batch_get_into_parts(&keys, &mut pieces).await
        };
        drop(held);
        // Each inline piece sends back the part of it the object filled.
        let mut fills = Vec::with_capacity(inline_bufs.len());
        let mut k = 0usize;
        for (item, r) in items.iter().zip(&results) {
            let mut at = 0u64;
            for span in &item.spans {
                let len = span.len();
                if let Span::Inline { .. } = span {
                    let filled = match r {
                        Ok(size) => len.min(size.saturating_sub(at)),
                        Err(_) => 0,
                    };
                    if let Some(b) = inline_bufs.get_mut(k) {
                        b.truncate(filled as usize);
                    }
                    fills.push(filled);
                    k += 1;
                }
                at = at.saturating_add(len);
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.map_err(|e| e.code()))
            .collect();
        (
            ThinResponse::Read {
                results,
                inline: fills,
            },
            inline_bufs,
        )
    }

    /// One Unix connection: `Bind`, then region attaches and detaches.
    async fn serve_ipc(&self, mut stream: UnixStream) -> std::result::Result<(), FrameError> {
        let mut meta = Vec::new();
        let mut out = Vec::new();
        let mut session: Option<Arc<Session>> = None;
        let mut buf = vec![0u8; 4096];
        loop {
            // The thin client sends one request at a time and waits for its answer, so a
            // receive never holds the start of a second request.
            let (n, fd) = match recv_with_fd(&stream, &mut buf).await {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(FrameError::Io(e)),
            };
            let mut rd = (&buf[..n]).chain(&mut stream);
            let (hdr, msg) = frame::read_frame::<_, ThinRequest>(&mut rd, &mut meta).await?;
            frame::discard(&mut rd, hdr.payload_len).await?;
            let resp = match (msg, &session) {
                (Ok(ThinRequest::Bind { session: id }), None) => match self.find_session(id) {
                    Some(s) => {
                        session = Some(s);
                        ThinResponse::Done
                    }
                    None => refuse(ErrorCode::InvalidParams, "unknown thin-client session"),
                },
                (Ok(ThinRequest::Attach { region, size }), Some(s)) => match fd {
                    None => refuse(ErrorCode::InvalidParams, "attach without a memfd"),
                    Some(fd) => match SharedMemory::from_fd(fd, Some(size), false) {
                        Ok(mem) => {
                            let mut regions = s.regions.write();
                            if regions.len() >= MAX_REGIONS && !regions.contains_key(&region) {
                                refuse(ErrorCode::InvalidParams, "too many shared regions")
                            } else {
                                regions.insert(region, Arc::new(mem));
                                ThinResponse::Done
                            }
                        }
                        Err(e) => from_error(&e),
                    },
                },
                (Ok(ThinRequest::Detach { region }), Some(s)) => {
                    s.regions.write().remove(&region);
                    ThinResponse::Done
                }
                (Ok(_), _) => refuse(ErrorCode::InvalidParams, "unexpected request on ipc socket"),
                (Err(e), _) => refuse(ErrorCode::InvalidParams, format!("bad request: {e}")),
            };
            respond(&mut stream, &mut out, hdr.request_id, &resp, &[]).await?;
        }
    }
}

/// Bytes of all inline spans; `None` when a hostile request's lengths overflow.
fn inline_total(items: &[ThinItem]) -> Option<u64> {
    items
        .iter()
        .flat_map(|i| &i.spans)
        .filter(|s| matches!(s, Span::Inline { .. }))
        .try_fold(0u64, |acc, s| acc.checked_add(s.len()))
}

async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> std::result::Result<(), FrameError> {
    r.read_exact(buf).await?;
    Ok(())
}
