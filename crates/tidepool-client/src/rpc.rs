//! Client side of the master RPC: a small pool of persistent connections, each carrying one
//! request at a time, with connect and call deadlines (`MC_RPC_CONNECT_TIMEOUT_MS`,
//! `MC_RPC_TIMEOUT_MS`) mapped to -900 / -901.
//!
//! Two kinds of connection share one pool and one session. Tasks of the runtime use tokio
//! sockets. A caller that drives a call from a thread of its own ([`on_caller_thread`], which
//! the Python binding uses for every call it makes with the GIL released) uses blocking
//! sockets instead: the kernel then wakes that very thread when the master answers, where a
//! tokio socket first wakes the runtime's I/O thread, which then wakes the caller. On the 2-vCPU
//! machine this project is measured on, that second wake-up is 12–17 µs of every round trip.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tidepool_common::{ClientId, Error, ErrorCode, Result};
use tidepool_proto::frame::{self, FrameKind};
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_proto::wait::{caller_spin_window, spin_ready, spin_window};
use tidepool_proto::{MIN_COMPATIBLE_VERSION, PROTOCOL_VERSION};

/// How long a call polls for the master's answer before parking (see `tidepool_proto::wait`).
const ANSWER_SPIN: Duration = Duration::from_micros(200);
/// The default of that window on a caller's thread.
const CALLER_SPIN: Duration = Duration::from_micros(100);
/// How long the master's Unix socket may take to answer `Hello` before TCP is used instead.
const LOCAL_HELLO_TIMEOUT: Duration = Duration::from_secs(1);
use std::io::{Read, Write};
pub use tidepool_proto::blocking::on_caller_thread;
use tidepool_proto::blocking::{SpinStream, is_caller_thread};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A blocking connection, used only from caller threads.
struct SyncConn {
    rd: std::io::BufReader<SyncSocket>,
    wr: SyncSocket,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Set once the master took a mailbox for this connection (Unix socket only).
    mailbox: Option<ConnMailbox>,
}

/// The client's end of a master mailbox (`tidepool_proto::mailbox`).
struct ConnMailbox {
    mb: tidepool_proto::mailbox::Mailbox,
    /// Sequence number of the last request.
    seq: u32,
    /// How long an answer may take (the pool's call deadline).
    timeout: Duration,
    /// How long to poll for an answer before sleeping.
    spin: Duration,
    /// Scratch for the answer's bytes.
    msg: Vec<u8>,
}

/// A blocking call's I/O failure: a timeout is -901, anything else -900.
fn sync_io_error(e: std::io::Error) -> Error {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        Error::new(ErrorCode::RpcTimeout, "master call timed out")
    } else {
        Error::new(ErrorCode::RpcFail, format!("master rpc failed: {e}"))
    }
}

/// A blocking call's framing failure: -900.
fn sync_frame_error(e: frame::FrameError) -> Error {
    Error::new(ErrorCode::RpcFail, format!("master rpc failed: {e}"))
}

thread_local! {
    /// The blocking connection this thread used last (an index into a pool's `sync_conns`;
    /// only a hint, shared by every pool of the process).
    static SYNC_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How long a caller waiting on a mailbox sleeps between looks at the socket for a dead master.
const MAILBOX_SLICE: Duration = Duration::from_millis(20);

/// The socket of a blocking connection: the master's abstract Unix socket when it runs on
/// this host (`tidepool_proto::blocking::connect_local`), else TCP.
enum SyncSocket {
    Tcp(SpinStream),
    Unix(SpinStream<std::os::unix::net::UnixStream>),
}

impl SyncSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Self::Tcp(s) => s.get_ref().as_fd(),
            Self::Unix(s) => s.get_ref().as_fd(),
        }
    }

    fn set_timeout(&mut self, t: Duration) {
        match self {
            Self::Tcp(s) => s.set_timeout(t),
            Self::Unix(s) => s.set_timeout(t),
        }
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Unix(s) => Self::Unix(s.try_clone()?),
        })
    }
}

impl Read for SyncSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for SyncSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    /// Blocking connections for caller threads, as many as `conns`.
    sync_conns: Vec<parking_lot::Mutex<Option<SyncConn>>>,
    next: AtomicUsize,
    req_id: AtomicU64,
    connect_timeout: Duration,
    call_timeout: Duration,
    hello: HelloInfo,
    session: parking_lot::Mutex<Option<Session>>,
    metrics: std::sync::Arc<crate::metrics::ClientMetrics>,
    /// The master's Unix socket failed once: blocking connections use TCP from then on.
    local_unusable: std::sync::atomic::AtomicBool,
    /// A mailbox hand-over failed once: Unix connections stay on the socket from then on.
    mailbox_unusable: std::sync::atomic::AtomicBool,
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
            sync_conns: (0..size.max(1))
                .map(|_| parking_lot::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            req_id: AtomicU64::new(1),
            connect_timeout: env_ms("MC_RPC_CONNECT_TIMEOUT_MS", 30_000).unwrap_or(day),
            call_timeout: env_ms("MC_RPC_TIMEOUT_MS", 30_000).unwrap_or(day),
            hello,
            session: parking_lot::Mutex::new(None),
            metrics,
            local_unusable: std::sync::atomic::AtomicBool::new(false),
            mailbox_unusable: std::sync::atomic::AtomicBool::new(
                !tidepool_proto::mailbox::enabled(),
            ),
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
        let hello = self.hello_request();
        let answer = Self::round_trip(&mut conn, 0, &hello).await?;
        self.accept_hello(answer)?;
        Ok(conn)
    }

    fn hello_request(&self) -> MasterRequest {
        MasterRequest::Hello {
            version_min: MIN_COMPATIBLE_VERSION,
            version_max: PROTOCOL_VERSION,
            name: self.hello.name.clone(),
            host_id: self.hello.host_id.clone(),
            host: self.hello.host.clone(),
            resume: self.session().map(|s| s.client_id),
        }
    }

    /// Records the session the master's `Hello` answer establishes.
    fn accept_hello(&self, answer: MasterResponse) -> Result<()> {
        match answer {
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
                Ok(())
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

    /// Opens a blocking connection and says `Hello` on it: over the master's Unix socket when
    /// it is on this host and, if this pool already has a session, it is the same master
    /// (same epoch); else over TCP.
    fn connect_sync(&self) -> Result<SyncConn> {
        let spin = caller_spin_window(CALLER_SPIN, ANSWER_SPIN);
        let try_local = !self.local_unusable.load(Ordering::Relaxed);
        if let Some(stream) = try_local
            .then(|| tidepool_proto::blocking::connect_local(&self.addr))
            .flatten()
        {
            let known = self.session().map(|s| s.epoch);
            // Whatever holds the name must answer `Hello` promptly, or TCP is used.
            let hello_timeout = self.call_timeout.min(LOCAL_HELLO_TIMEOUT);
            let local = SpinStream::new(stream, spin, hello_timeout)
                .map(SyncSocket::Unix)
                .map_err(|e| Error::new(ErrorCode::RpcFail, e.to_string()))
                .and_then(|s| self.greet_sync(s, known));
            match local {
                Ok(mut conn) => {
                    conn.rd.get_mut().set_timeout(self.call_timeout);
                    conn.wr.set_timeout(self.call_timeout);
                    if self.mailbox_unusable.load(Ordering::Relaxed) {
                        return Ok(conn);
                    }
                    match self.offer_mailbox(&mut conn, spin) {
                        Ok(()) => return Ok(conn),
                        Err(e) => {
                            // The connection's state is unknown: drop it, and do without
                            // mailboxes from now on.
                            self.mailbox_unusable.store(true, Ordering::Relaxed);
                            tracing::info!(error = %e, "master mailbox unusable, using the socket");
                            return self.connect_sync();
                        }
                    }
                }
                Err(e) => {
                    // Not again for this pool: whatever holds the name may cost a timeout.
                    self.local_unusable.store(true, Ordering::Relaxed);
                    tracing::info!(error = %e, "master unix socket unusable, using tcp");
                }
            }
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorCode::RpcFail,
                format!("master unreachable: addr={} error={e}", self.addr),
            )
        };
        let stream = match tidepool_proto::blocking::connect(&self.addr, self.connect_timeout) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Error::new(
                    ErrorCode::RpcFail,
                    format!("master connect timed out: addr={}", self.addr),
                ));
            }
            Err(e) => return Err(unreachable(&e)),
        };
        let rd = SpinStream::new(stream, spin, self.call_timeout).map_err(|e| unreachable(&e))?;
        self.greet_sync(SyncSocket::Tcp(rd), None)
    }

    /// Offers the master a mailbox for a new Unix connection: on `Done`, passes its memfd and
    /// waits for the second `Done`. A master that declines (either time) leaves the connection
    /// as it was (`Ok`); `Err` when the connection may be in an unknown state.
    fn offer_mailbox(&self, conn: &mut SyncConn, spin: Duration) -> Result<()> {
        use tidepool_proto::mailbox::{DEFAULT_AREA, Mailbox, send_fd};
        let fail = |e: std::io::Error| {
            Error::new(ErrorCode::RpcFail, format!("mailbox hand-over failed: {e}"))
        };
        let (mb, fd) = Mailbox::create(DEFAULT_AREA).map_err(fail)?;
        match Self::round_trip_sync(conn, 0, &MasterRequest::Mailbox)? {
            MasterResponse::Done => {}
            other => {
                tracing::debug!(answer = ?other, "master declined a mailbox");
                return Ok(());
            }
        }
        use std::os::fd::AsFd;
        send_fd(conn.wr.as_fd(), fd.as_fd()).map_err(fail)?;
        match Self::read_answer_sync(conn)? {
            MasterResponse::Done => {
                conn.mailbox = Some(ConnMailbox {
                    seq: mb.seq(tidepool_proto::mailbox::Dir::Answer),
                    mb,
                    timeout: self.call_timeout,
                    spin,
                    msg: Vec::new(),
                });
            }
            other => tracing::debug!(answer = ?other, "master refused the mailbox"),
        }
        Ok(())
    }

    /// Says `Hello` on a new blocking connection (refusing a master whose epoch is not
    /// `expect_epoch`, when given) and asks for a master thread of its own.
    fn greet_sync(&self, sock: SyncSocket, expect_epoch: Option<u64>) -> Result<SyncConn> {
        let wr = sock
            .try_clone()
            .map_err(|e| Error::new(ErrorCode::RpcFail, format!("master rpc failed: {e}")))?;
        let mut conn = SyncConn {
            rd: std::io::BufReader::with_capacity(64 << 10, sock),
            wr,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            mailbox: None,
        };
        let hello = self.hello_request();
        let answer = Self::round_trip_sync(&mut conn, 0, &hello)?;
        if let (Some(want), MasterResponse::Hello { epoch, .. }) = (expect_epoch, &answer)
            && *epoch != want
        {
            return Err(Error::new(
                ErrorCode::RpcFail,
                format!("another master on the unix socket: epoch={epoch} expected={want}"),
            ));
        }
        self.accept_hello(answer)?;
        // This connection's callers wait on it synchronously: ask the master to serve it from
        // a thread of its own. A master without that answers an error; the connection then
        // stays as it is.
        match Self::round_trip_sync(&mut conn, 0, &MasterRequest::Dedicate)? {
            MasterResponse::Done => {}
            other => tracing::debug!(answer = ?other, "master keeps the connection on its runtime"),
        }
        Ok(conn)
    }

    /// One request and its answer over a blocking connection. A timeout is -901; every other
    /// failure -900.
    fn round_trip_sync(
        conn: &mut SyncConn,
        id: u64,
        req: &MasterRequest,
    ) -> Result<MasterResponse> {
        let fail = sync_io_error;
        let bad = sync_frame_error;
        conn.wbuf.clear();
        frame::encode_frame(&mut conn.wbuf, FrameKind::Request, id, req, 0).map_err(bad)?;
        if conn.mailbox.is_some() {
            return Self::mailbox_round_trip(conn);
        }
        conn.wr.write_all(&conn.wbuf).map_err(fail)?;
        Self::read_answer_sync(conn)
    }

    /// The request in `conn.wbuf` and its answer, through the connection's mailbox.
    fn mailbox_round_trip(conn: &mut SyncConn) -> Result<MasterResponse> {
        use tidepool_proto::mailbox::{Dir, peer_alive};
        let fail = sync_io_error;
        let SyncConn {
            rd,
            wr,
            rbuf,
            wbuf,
            mailbox,
        } = conn;
        let m = mailbox
            .as_mut()
            .ok_or_else(|| Error::internal("no mailbox"))?;
        m.seq = m.seq.wrapping_add(1);
        if m.mb.fits(wbuf.len()) {
            m.mb.post(Dir::Request, m.seq, Some(wbuf));
        } else {
            // Say so first: the master reads the socket only once it knows to.
            m.mb.post(Dir::Request, m.seq, None);
            wr.write_all(wbuf).map_err(fail)?;
        }
        let deadline = std::time::Instant::now() + m.timeout;
        let last = m.seq.wrapping_sub(1);
        let got =
            m.mb.wait(
                Dir::Answer,
                last,
                m.spin,
                MAILBOX_SLICE,
                Some(deadline),
                || peer_alive(rd.get_ref().as_fd()),
            )
            .map_err(fail)?;
        if got != m.seq {
            return Err(Error::new(
                ErrorCode::RpcFail,
                format!("master answered request {got}, expected {}", m.seq),
            ));
        }
        if m.mb.take(Dir::Answer, &mut m.msg).map_err(fail)? {
            let bad = sync_frame_error;
            let hdr = frame::read_frame_raw_sync(&mut &m.msg[..], rbuf).map_err(bad)?;
            if hdr.payload_len > 0 {
                return Err(Error::new(
                    ErrorCode::RpcFail,
                    "master answer with a payload",
                ));
            }
            return frame::decode_message::<MasterResponse>(rbuf).map_err(bad);
        }
        Self::read_answer_sync(conn)
    }

    /// Reads one answer frame from the connection's socket.
    fn read_answer_sync(conn: &mut SyncConn) -> Result<MasterResponse> {
        let fail = sync_io_error;
        let bad = sync_frame_error;
        let mut hb = [0u8; frame::HEADER_LEN];
        conn.rd.read_exact(&mut hb).map_err(fail)?;
        let hdr = frame::FrameHeader::decode(&hb).map_err(bad)?;
        conn.rbuf.clear();
        conn.rbuf.resize(hdr.meta_len as usize, 0);
        conn.rd.read_exact(&mut conn.rbuf).map_err(fail)?;
        let msg = frame::decode_message::<MasterResponse>(&conn.rbuf).map_err(bad);
        if hdr.payload_len > 0 {
            std::io::copy(
                &mut (&mut conn.rd).take(hdr.payload_len),
                &mut std::io::sink(),
            )
            .map_err(fail)?;
        }
        msg
    }

    /// [`RpcPool::call`] for a caller thread: a free blocking connection (or the next one,
    /// waited for), connected on first use.
    fn call_sync(&self, req: &MasterRequest) -> Result<MasterResponse> {
        // A thread keeps to the connection it used last while that one is free: the master's
        // thread for that connection is then still polling for this thread's next request
        // (rotating over the pool made every request wake a sleeping master thread).
        let n = self.sync_conns.len();
        let start = SYNC_SLOT.with(|c| c.get()) % n;
        let (k, mut slot) = (0..n)
            .find_map(|k| {
                let i = (start + k) % n;
                self.sync_conns[i].try_lock().map(|g| (i, g))
            })
            .unwrap_or_else(|| (start, self.sync_conns[start].lock()));
        SYNC_SLOT.with(|c| c.set(k));
        let reused = slot.is_some();
        if slot.is_none() {
            *slot = Some(self.connect_sync()?);
        }
        let conn = slot
            .as_mut()
            .ok_or_else(|| Error::internal("connection slot empty"))?;
        let id = self.req_id.fetch_add(1, Ordering::Relaxed);
        let r = Self::round_trip_sync(conn, id, req);
        let Err(e) = r else {
            return r;
        };
        // A kept connection whose master hung up (it exited, or restarted: W5) is replaced and
        // the request sent once more. Safe: a master that is gone took whatever it did with the
        // request along with its state, and one that closes a connection is shutting down. A
        // master that is alive but slow (a timeout) is not asked twice.
        let hung_up = !tidepool_proto::mailbox::peer_alive(conn.wr.as_fd());
        // The stream position is unknown after a failure: reconnect next time.
        *slot = None;
        if !(reused && hung_up) {
            return Err(e);
        }
        tracing::debug!(error = %e, "master connection hung up; retrying on a new one");
        *slot = Some(self.connect_sync()?);
        let conn = slot
            .as_mut()
            .ok_or_else(|| Error::internal("connection slot empty"))?;
        let id = self.req_id.fetch_add(1, Ordering::Relaxed);
        let r = Self::round_trip_sync(conn, id, req);
        if r.is_err() {
            *slot = None;
        }
        r
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
    /// call fails with -900; the next call reconnects. A kept connection whose master hung up
    /// (it exited or restarted, W5) is replaced at once and the request sent again.
    pub async fn call(&self, req: MasterRequest) -> Result<MasterResponse> {
        let started = std::time::Instant::now();
        let which = crate::metrics::rpc_index(&req);
        let r = self.call_inner(req).await;
        self.metrics.rpc(which, started.elapsed());
        r
    }

    async fn call_inner(&self, req: MasterRequest) -> Result<MasterResponse> {
        if is_caller_thread() {
            return self.call_sync(&req);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        let reused = slot.is_some();
        match self.attempt(&mut slot, &req).await {
            Ok(resp) => Ok(resp),
            // As in `call_sync`: a kept connection whose master hung up is replaced and the
            // request sent once more; a timeout or any other failure is not retried.
            Err((e, hung_up)) if reused && hung_up => {
                tracing::debug!(error = %e, "master connection hung up; retrying on a new one");
                self.attempt(&mut slot, &req).await.map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }

    /// One round trip on `slot` (connected first if empty), bounded by the call timeout. On
    /// failure the connection is dropped (its stream position is unknown) and the error comes
    /// with whether the master had hung up on it.
    async fn attempt(
        &self,
        slot: &mut Option<Conn>,
        req: &MasterRequest,
    ) -> std::result::Result<MasterResponse, (Error, bool)> {
        let work = async {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            let conn = slot
                .as_mut()
                .ok_or_else(|| Error::internal("connection slot empty"))?;
            let id = self.req_id.fetch_add(1, Ordering::Relaxed);
            Self::round_trip(conn, id, req).await
        };
        let r = tokio::time::timeout(self.call_timeout, work).await;
        let hung_up = slot.as_ref().is_some_and(|c| {
            use std::os::fd::AsFd;
            let stream: &tokio::net::TcpStream = c.wr.as_ref();
            !tidepool_proto::mailbox::peer_alive(stream.as_fd())
        });
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                *slot = None;
                Err((e, hung_up))
            }
            Err(_) => {
                *slot = None;
                Err((
                    Error::new(
                        ErrorCode::RpcTimeout,
                        format!("master call timed out after {:?}", self.call_timeout),
                    ),
                    false,
                ))
            }
        }
    }

    /// Drops every connection (after the master forgot us, or at close).
    pub async fn disconnect_all(&self) {
        for c in &self.conns {
            *c.lock().await = None;
        }
        // A blocking connection in use belongs to a caller thread mid-call: it is not waited
        // for (this may run on a runtime worker); that call fails or succeeds on its own.
        for c in &self.sync_conns {
            if let Some(mut c) = c.try_lock() {
                *c = None;
            }
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
