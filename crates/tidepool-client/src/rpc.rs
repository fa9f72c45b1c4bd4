//! Client side of the master RPC: a small pool of persistent connections, each carrying one
//! request at a time, with connect and call deadlines (`MC_RPC_CONNECT_TIMEOUT_MS`,
//! `MC_RPC_TIMEOUT_MS`) mapped to -900 / -901.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tidepool_common::{ClientId, Error, ErrorCode, Result};
use tidepool_proto::frame::{self, FrameKind};
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_proto::wait::{spin_ready, spin_window};
use tidepool_proto::{MIN_COMPATIBLE_VERSION, PROTOCOL_VERSION};

/// How long a call polls for the master's answer before parking (see `tidepool_proto::wait`).
const ANSWER_SPIN: Duration = Duration::from_micros(200);
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One connection: the async mutex is held across the request/response round trip, which is
/// the point of it (one request in flight per connection).
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

/// Identity sent in `Hello` on every connection of a pool.
#[derive(Debug, Clone)]
pub struct HelloInfo {
    /// Client name.
    pub name: String,
    /// Host part of the segment name.
    pub host: String,
    /// Kernel boot id.
    pub host_id: String,
}

/// What the master said in `Hello`.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Our id.
    pub client_id: ClientId,
    /// Master epoch.
    pub epoch: u64,
    /// Heartbeat period to keep.
    pub heartbeat_interval_ms: u64,
    /// Read lease TTL.
    pub lease_ttl_ms: u64,
}

/// A pool of master connections.
pub struct RpcPool {
    addr: String,
    conns: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    req_id: AtomicU64,
    connect_timeout: Duration,
    call_timeout: Duration,
    hello: HelloInfo,
    session: parking_lot::Mutex<Option<Session>>,
    metrics: std::sync::Arc<crate::metrics::ClientMetrics>,
}

fn env_ms(name: &str, default: u64) -> Option<Duration> {
    match std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        Some(v) if v < 0 => None,
        Some(v) => Some(Duration::from_millis(v as u64)),
        None => Some(Duration::from_millis(default)),
    }
}

impl RpcPool {
    /// A pool of `size` connections to `addr`; nothing is connected until first use.
    pub fn new(
        addr: &str,
        size: usize,
        hello: HelloInfo,
        metrics: std::sync::Arc<crate::metrics::ClientMetrics>,
    ) -> Self {
        // A negative value disables the deadline (contract §5.3); a day stands in for "none".
        let day = Duration::from_secs(86_400);
        Self {
            addr: addr.to_string(),
            conns: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            req_id: AtomicU64::new(1),
            connect_timeout: env_ms("MC_RPC_CONNECT_TIMEOUT_MS", 30_000).unwrap_or(day),
            call_timeout: env_ms("MC_RPC_TIMEOUT_MS", 30_000).unwrap_or(day),
            hello,
            session: parking_lot::Mutex::new(None),
            metrics,
        }
    }

    /// The session established by the first `Hello`.
    pub fn session(&self) -> Option<Session> {
        *self.session.lock()
    }

    /// Forgets the session so the next connection registers afresh (master lost us).
    pub fn reset_session(&self) {
        *self.session.lock() = None;
    }

    /// Connects (or reconnects) every connection now, registering with the master.
    pub async fn establish(&self) -> Result<Session> {
        let r = self.call(MasterRequest::Heartbeat).await?;
        let _ = r;
        self.session()
            .ok_or_else(|| Error::new(ErrorCode::RpcFail, "no session after hello"))
    }

    async fn connect(&self) -> Result<Conn> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorCode::RpcFail,
                    format!("master connect timed out: addr={}", self.addr),
                )
            })?
            .map_err(|e| {
                Error::new(
                    ErrorCode::RpcFail,
                    format!("master unreachable: addr={} error={e}", self.addr),
                )
            })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            rd: BufReader::with_capacity(64 << 10, rd),
            wr,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        };
        let resume = self.session().map(|s| s.client_id);
        let hello = MasterRequest::Hello {
            version_min: MIN_COMPATIBLE_VERSION,
            version_max: PROTOCOL_VERSION,
            name: self.hello.name.clone(),
            host_id: self.hello.host_id.clone(),
            host: self.hello.host.clone(),
            resume,
        };
        match Self::round_trip(&mut conn, 0, &hello).await? {
            MasterResponse::Hello {
                client_id,
                epoch,
                heartbeat_interval_ms,
                lease_ttl_ms,
                ..
            } => {
                let mut s = self.session.lock();
                if let Some(old) = *s
                    && old.client_id != client_id
                {
                    tracing::warn!(old = %old.client_id, new = %client_id, "master assigned a new client id");
                }
                *s = Some(Session {
                    client_id,
                    epoch,
                    heartbeat_interval_ms,
                    lease_ttl_ms,
                });
                Ok(conn)
            }
            MasterResponse::Error { code, message } => {
                if code == ErrorCode::InvalidVersion {
                    tracing::error!(client = %format!("{MIN_COMPATIBLE_VERSION}..={PROTOCOL_VERSION}"), %message, "master speaks an incompatible protocol");
                }
                Err(Error::new(code, message))
            }
            other => Err(Error::new(
                ErrorCode::RpcFail,
                format!("unexpected hello answer: {other:?}"),
            )),
        }
    }

    async fn round_trip(conn: &mut Conn, id: u64, req: &MasterRequest) -> Result<MasterResponse> {
        let fail = |e: frame::FrameError| {
            Error::new(ErrorCode::RpcFail, format!("master rpc failed: {e}"))
        };
        frame::write_frame(
            &mut conn.wr,
            &mut conn.wbuf,
            FrameKind::Request,
            id,
            req,
            &[],
        )
        .await
        .map_err(fail)?;
        if conn.rd.buffer().is_empty() {
            // The master answers within tens of microseconds: poll for it rather than park.
            spin_ready(conn.rd.get_ref().readable(), spin_window(ANSWER_SPIN))
                .await
                .map_err(|e| fail(e.into()))?;
        }
        let (hdr, msg) = frame::read_frame::<_, MasterResponse>(&mut conn.rd, &mut conn.rbuf)
            .await
            .map_err(fail)?;
        if hdr.payload_len > 0 {
            frame::discard(&mut conn.rd, hdr.payload_len)
                .await
                .map_err(fail)?;
        }
        msg.map_err(fail)
    }

    /// Sends one request and waits for its answer. A broken connection is dropped and the
    /// call fails with -900; the next call reconnects.
    pub async fn call(&self, req: MasterRequest) -> Result<MasterResponse> {
        let started = std::time::Instant::now();
        let which = crate::metrics::rpc_index(&req);
        let r = self.call_inner(req).await;
        self.metrics.rpc(which, started.elapsed());
        r
    }

    async fn call_inner(&self, req: MasterRequest) -> Result<MasterResponse> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        let work = async {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            let conn = slot
                .as_mut()
                .ok_or_else(|| Error::internal("connection slot empty"))?;
            let id = self.req_id.fetch_add(1, Ordering::Relaxed);
            Self::round_trip(conn, id, &req).await
        };
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                *slot = None;
                Err(e)
            }
            Err(_) => {
                *slot = None;
                Err(Error::new(
                    ErrorCode::RpcTimeout,
                    format!("master call timed out after {:?}", self.call_timeout),
                ))
            }
        }
    }

    /// Drops every connection (after the master forgot us, or at close).
    pub async fn disconnect_all(&self) {
        for c in &self.conns {
            *c.lock().await = None;
        }
    }
}

/// Turns a whole-request `Error` answer into an `Err`.
pub fn check(resp: MasterResponse) -> Result<MasterResponse> {
    match resp {
        MasterResponse::Error { code, message } => Err(Error::new(code, message)),
        other => Ok(other),
    }
}
