//! The master's RPC server: accepts client connections, checks the protocol version once per
//! connection, and feeds each request into the shared [`MasterState`](crate::state::MasterState).
//!
//! The state is synchronous and every operation is short (no I/O under the lock), so a plain
//! `parking_lot::Mutex` is used rather than an async lock: holding it never spans an `.await`.
//! Requests on one connection are answered in order; clients open several connections for
//! parallelism.
//!
//! Every request is counted here, in `handle`, rather than in the state: the state stays
//! free of metric code, and the latency measured includes waiting for the state lock, which is
//! what a client sees.

use crate::metrics::{RequestFacts, RpcOp};
use crate::state::removal::Removal;
use crate::{Master, drops};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tidepool_common::{ClientId, ErrorCode};
use tidepool_proto::blocking::{self, Socket};
use tidepool_proto::frame::{self, FrameError, FrameKind};
use tidepool_proto::master::{KeyLookup, MasterRequest, MasterResponse};
use tidepool_proto::wait::{caller_spin_window, spin_ready, spin_window};
use tidepool_proto::{MIN_COMPATIBLE_VERSION, PROTOCOL_VERSION};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the background worker runs leases, liveness and eviction.
pub const TICK_INTERVAL: Duration = Duration::from_millis(20);

/// How often the tick worker appends a sample to the dashboard history.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection polls for the client's next request before parking.
const NEXT_REQUEST_SPIN: Duration = Duration::from_micros(50);
/// The same for a dedicated connection's thread (`TIDEPOOL_SPIN_US` overrides; 0 turns it
/// off): its client waits for each answer synchronously, and polling for its next request
/// saves the thread's wake-up from `recv`; the thread yields the core between polls.
const NEXT_REQUEST_SPIN_DEDICATED: Duration = Duration::from_micros(50);

/// Shared handle to the master's state and metrics.
pub type SharedState = Arc<Master>;

/// At most this many connections are served from threads of their own (`Dedicate`); further
/// ones stay on the runtime, so a large cluster of synchronous clients cannot make the master
/// start thousands of threads. A client opens up to its RPC pool size of them.
const MAX_DEDICATED: usize = 256;
/// Connections served from their own threads now.
static DEDICATED: AtomicUsize = AtomicUsize::new(0);

/// Serves clients on `listener` until `shutdown` turns true. Also runs the tick worker.
pub async fn run(listener: TcpListener, state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let ticker = tokio::spawn(tick_worker(state.clone(), shutdown.clone()));
    let local = listener.local_addr().ok().and_then(bind_local);
    loop {
        tokio::select! {
            accepted = accept_local(local.as_ref()) => match accepted {
                Ok(stream) => dedicate_local(stream, &state, &shutdown),
                Err(e) => {
                    warn!(error = %e, "rpc unix accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "rpc connection");
                    let _ = stream.set_nodelay(true);
                    let (state, shutdown) = (state.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        state.metrics.connection_opened();
                        let handoff = serve_connection(stream, state.clone(), shutdown.clone()).await;
                        match handoff.map(|(s, c)| (s.into_std(), c)) {
                            Some((Ok(stream), client)) => {
                                let st = state.clone();
                                let peer = peer.to_string();
                                let rt = tokio::runtime::Handle::current();
                                let spawned = std::thread::Builder::new()
                                    .name("master-conn".into())
                                    .spawn(move || {
                                        serve_blocking(stream, &peer, &st, &rt, &shutdown, client);
                                        DEDICATED.fetch_sub(1, Ordering::Relaxed);
                                        st.metrics.connection_closed();
                                    });
                                if let Err(e) = spawned {
                                    warn!(error = %e, "cannot start a connection thread");
                                    DEDICATED.fetch_sub(1, Ordering::Relaxed);
                                    state.metrics.connection_closed();
                                }
                            }
                            Some((Err(e), _)) => {
                                warn!(error = %e, "cannot hand the connection to a thread");
                                DEDICATED.fetch_sub(1, Ordering::Relaxed);
                                state.metrics.connection_closed();
                            }
                            None => state.metrics.connection_closed(),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "rpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    ticker.abort();
    info!("rpc server stopped");
}

/// Also listens on the abstract Unix socket of `addr` (see
/// `tidepool_proto::blocking::local_socket_name`), for same-host clients' blocking
/// connections. `None` when that name is taken (another master on the same port bound to
/// another address of this host) or the feature is off: those clients use TCP.
fn bind_local(addr: std::net::SocketAddr) -> Option<tokio::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    if !tidepool_proto::blocking::local_socket_enabled() {
        return None;
    }
    let name = tidepool_proto::blocking::local_socket_name(addr);
    let bound = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|sa| std::os::unix::net::UnixListener::bind_addr(&sa))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::UnixListener::from_std);
    match bound {
        Ok(l) => {
            info!(%name, "rpc also on an abstract unix socket for same-host clients");
            Some(l)
        }
        Err(e) => {
            warn!(%name, error = %e, "no unix socket for same-host clients; they use tcp");
            None
        }
    }
}

async fn accept_local(
    l: Option<&tokio::net::UnixListener>,
) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Serves a same-host connection from a thread of its own, as a `Dedicate`d TCP one: only
/// clients' blocking connections come this way. Over the cap it is closed at once, and the
/// client falls back to TCP.
fn dedicate_local(
    stream: tokio::net::UnixStream,
    state: &SharedState,
    shutdown: &watch::Receiver<bool>,
) {
    if DEDICATED.fetch_add(1, Ordering::Relaxed) >= MAX_DEDICATED {
        DEDICATED.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot hand the unix connection to a thread");
            DEDICATED.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    state.metrics.connection_opened();
    let (st, shutdown) = (state.clone(), shutdown.clone());
    let rt = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("master-conn".into())
        .spawn(move || {
            serve_blocking(stream, "unix", &st, &rt, &shutdown, None);
            DEDICATED.fetch_sub(1, Ordering::Relaxed);
            st.metrics.connection_closed();
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a connection thread");
        DEDICATED.fetch_sub(1, Ordering::Relaxed);
        state.metrics.connection_closed();
    }
}

/// Runs `MasterState::tick` periodically: dead-client reaping, put release timeout, proactive
/// eviction. At 20 ms the "eviction within 100 ms of crossing the watermark" rule holds.
/// Once a second it also samples the counters into the dashboard history, so the charts have
/// the last minutes even when nobody had the page open.
async fn tick_worker(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => state.lock().tick(),
            _ = sample.tick() => {
                let stats = state.lock().stats();
                state.metrics.sample(&stats, unix_ms());
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Wall-clock time in ms since the Unix epoch (chart timestamps; not used for leases).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves one connection: a `Hello` first, then any requests.
/// Serves one connection until it closes; returns the stream (and its client) instead when
/// the client asked for a thread of its own (`Dedicate`).
async fn serve_connection(
    stream: TcpStream,
    state: SharedState,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(TcpStream, Option<ClientId>)> {
    let peer = stream.peer_addr().ok();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut rbuf = Vec::new();
    let mut wbuf = Vec::new();
    let mut client: Option<ClientId> = None;
    loop {
        if rd.buffer().is_empty() {
            // A client's next request (a put's commit, the next batch) usually follows within
            // tens of microseconds: poll briefly instead of parking (see tidepool_proto::wait).
            let _ = spin_ready(rd.get_ref().readable(), spin_window(NEXT_REQUEST_SPIN)).await;
        }
        let read = tokio::select! {
            r = frame::read_frame_raw(&mut rd, &mut rbuf) => r,
            _ = shutdown.changed() => return None,
        };
        let hdr = match read {
            Ok(x) => x,
            Err(FrameError::Closed) => return None,
            Err(FrameError::BadVersion(v)) => {
                state.metrics.version_rejected();
                // W19: tell the peer once, clearly, instead of failing every call.
                let resp = MasterResponse::Error {
                    code: ErrorCode::InvalidVersion,
                    message: format!(
                        "incompatible protocol version: client={v} master={MIN_COMPATIBLE_VERSION}..={PROTOCOL_VERSION}"
                    ),
                };
                warn!(
                    ?peer,
                    client_version = v,
                    "rejecting client with incompatible protocol"
                );
                let _ = frame::write_frame(&mut wr, &mut wbuf, FrameKind::Response, 0, &resp, &[])
                    .await;
                return None;
            }
            Err(e) => {
                state.metrics.malformed_frame();
                warn!(?peer, error = %e, "closing rpc connection after malformed frame");
                return None;
            }
        };
        if hdr.payload_len > 0 && frame::discard(&mut rd, hdr.payload_len).await.is_err() {
            return None;
        }
        let asks_dedicate = MasterRequest::is_dedicate(&rbuf);
        let mut dedicate = asks_dedicate;
        if dedicate && DEDICATED.fetch_add(1, Ordering::Relaxed) >= MAX_DEDICATED {
            DEDICATED.fetch_sub(1, Ordering::Relaxed);
            dedicate = false;
        }
        let resp = if asks_dedicate && !dedicate {
            MasterResponse::Error {
                code: ErrorCode::InvalidParams,
                message: format!("no dedicated connection left (at most {MAX_DEDICATED})"),
            }
        } else {
            dispatch(&state, &mut client, &rbuf).resolve(&state).await
        };
        if frame::write_frame(
            &mut wr,
            &mut wbuf,
            FrameKind::Response,
            hdr.request_id,
            &resp,
            &[],
        )
        .await
        .is_err()
        {
            if dedicate {
                DEDICATED.fetch_sub(1, Ordering::Relaxed);
            }
            return None;
        }
        if dedicate {
            // The client waits for this answer before its next request, so nothing is
            // buffered; if something is, the connection stays here.
            if rd.buffer().is_empty() {
                match rd.into_inner().reunite(wr) {
                    Ok(s) => return Some((s, client)),
                    Err(_) => {
                        DEDICATED.fetch_sub(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            DEDICATED.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves a dedicated connection on this thread: blocked in `recv` between requests, so the
/// kernel wakes this thread itself when a request arrives (one thread wake-up and two system
/// calls fewer per request than the runtime's poller; used only by clients whose callers wait
/// synchronously). Checks for shutdown every `IDLE_CHECK`; a frame must arrive whole within
/// `FRAME_TIMEOUT` of its first byte.
fn serve_blocking<S: Socket>(
    stream: S,
    peer: &str,
    state: &SharedState,
    rt: &tokio::runtime::Handle,
    shutdown: &watch::Receiver<bool>,
    mut client: Option<ClientId>,
) {
    use std::io::{BufRead, Read};
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.try_clone());
    let mut wr = match setup {
        Ok(w) => w,
        Err(e) => {
            warn!(%peer, error = %e, "cannot serve the connection from a thread");
            return;
        }
    };
    let mut rd = std::io::BufReader::with_capacity(64 << 10, stream);
    let (mut rbuf, mut wbuf) = (Vec::new(), Vec::new());
    let spin = caller_spin_window(NEXT_REQUEST_SPIN_DEDICATED, NEXT_REQUEST_SPIN_DEDICATED);
    let _ = rd.get_ref().set_read_timeout(Some(FRAME_TIMEOUT));
    loop {
        // A client's next request (a put's commit after its copy) tends to follow within
        // microseconds: poll for it briefly, yielding the core, before sleeping in `recv`.
        if rd.buffer().is_empty() && blocking::spin_until_readable(rd.get_ref().as_fd(), spin) {
            // Ready: read it under the frame timeout already set.
        } else if rd.buffer().is_empty() {
            // Wait for the next request's first byte, looking up now and then for shutdown.
            let _ = rd.get_ref().set_read_timeout(Some(IDLE_CHECK));
            loop {
                if *shutdown.borrow() {
                    return;
                }
                match rd.fill_buf() {
                    Ok([]) => return,
                    Ok(_) => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => return,
                }
            }
            let _ = rd.get_ref().set_read_timeout(Some(FRAME_TIMEOUT));
        }
        let hdr = match frame::read_frame_raw_sync(&mut rd, &mut rbuf) {
            Ok(x) => x,
            Err(FrameError::Closed) => return,
            Err(e) => {
                state.metrics.malformed_frame();
                warn!(%peer, error = %e, "closing rpc connection after malformed frame");
                return;
            }
        };
        if hdr.payload_len > 0 {
            let n = std::io::copy(&mut (&mut rd).take(hdr.payload_len), &mut std::io::sink());
            if n.ok() != Some(hdr.payload_len) {
                return;
            }
        }
        if MasterRequest::is_mailbox(&rbuf) {
            match take_mailbox(&mut rd, &mut wr, hdr.request_id, client.is_some()) {
                Ok(Some(mb)) => {
                    return serve_mailbox(mb, (rd, wr), peer, state, rt, shutdown, client);
                }
                Ok(None) => continue,
                Err(()) => return,
            }
        }
        let resp = dispatch(state, &mut client, &rbuf).resolve_blocking(state, rt);
        if answer(&mut wr, &mut wbuf, hdr.request_id, &resp).is_err() {
            return;
        }
    }
}

/// How often an idle dedicated connection's thread looks up for shutdown (and, with a
/// mailbox, for its client's hang-up).
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// A frame must arrive whole within this of its first byte.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes one answer frame.
fn answer<W: std::io::Write>(
    wr: &mut W,
    wbuf: &mut Vec<u8>,
    id: u64,
    resp: &MasterResponse,
) -> std::io::Result<()> {
    wbuf.clear();
    frame::encode_frame(wbuf, FrameKind::Response, id, resp, 0).map_err(std::io::Error::other)?;
    wr.write_all(wbuf)
}

/// Serves a `Mailbox` request: answers `Done`, receives the memfd the client then sends,
/// maps it and answers `Done` again (the mailbox), or answers an error and the connection goes
/// on as before (`None`). `Err` when the connection broke.
fn take_mailbox<S: Socket>(
    rd: &mut std::io::BufReader<S>,
    wr: &mut S,
    id: u64,
    greeted: bool,
) -> Result<Option<tidepool_proto::mailbox::Mailbox>, ()> {
    let mut wbuf = Vec::new();
    let refuse = |wr: &mut S, wbuf: &mut Vec<u8>, message: String| {
        let resp = MasterResponse::Error {
            code: ErrorCode::InvalidParams,
            message,
        };
        answer(wr, wbuf, id, &resp).map(|()| None).map_err(|_| ())
    };
    // The fd must be the next thing on the socket: nothing may sit in our read buffer.
    if !greeted || !S::passes_fds() || !rd.buffer().is_empty() {
        let why = "a mailbox needs a greeted, idle connection on the master's unix socket";
        return refuse(wr, &mut wbuf, why.into());
    }
    answer(wr, &mut wbuf, id, &MasterResponse::Done).map_err(|_| ())?;
    let fd = tidepool_proto::mailbox::recv_fd(rd.get_ref().as_fd()).map_err(|e| {
        warn!(error = %e, "mailbox hand-over failed; closing the connection");
    })?;
    match tidepool_proto::mailbox::Mailbox::from_fd(fd) {
        Ok(mb) => answer(wr, &mut wbuf, id, &MasterResponse::Done)
            .map(|()| Some(mb))
            .map_err(|_| ()),
        Err(e) => refuse(wr, &mut wbuf, format!("mailbox refused: {e}")),
    }
}

/// Serves a dedicated connection through its mailbox (`tidepool_proto::mailbox`): requests
/// and answers in shared memory, the socket only for messages too large for it and to notice
/// the client's hang-up.
fn serve_mailbox<S: Socket>(
    mb: tidepool_proto::mailbox::Mailbox,
    (mut rd, mut wr): (std::io::BufReader<S>, S),
    peer: &str,
    state: &SharedState,
    rt: &tokio::runtime::Handle,
    shutdown: &watch::Receiver<bool>,
    mut client: Option<ClientId>,
) {
    use tidepool_proto::mailbox::{Dir, peer_alive};
    let spin = caller_spin_window(NEXT_REQUEST_SPIN_DEDICATED, NEXT_REQUEST_SPIN_DEDICATED);
    let (mut msg, mut rbuf, mut wbuf) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = mb.seq(Dir::Request);
    loop {
        let waited = mb.wait(Dir::Request, last, spin, IDLE_CHECK, None, || {
            !*shutdown.borrow() && peer_alive(rd.get_ref().as_fd())
        });
        let Ok(seq) = waited else { return };
        last = seq;
        let hdr = match mb.take(Dir::Request, &mut msg) {
            Ok(true) => frame::read_frame_raw_sync(&mut &msg[..], &mut rbuf),
            Ok(false) => frame::read_frame_raw_sync(&mut rd, &mut rbuf),
            Err(e) => Err(FrameError::Io(e)),
        };
        let hdr = match hdr {
            Ok(h) if h.payload_len == 0 => h,
            other => {
                state.metrics.malformed_frame();
                warn!(%peer, result = ?other.map(|h| h.payload_len), "closing mailbox connection after a malformed request");
                return;
            }
        };
        let resp = dispatch(state, &mut client, &rbuf).resolve_blocking(state, rt);
        wbuf.clear();
        if frame::encode_frame(&mut wbuf, FrameKind::Response, hdr.request_id, &resp, 0).is_err() {
            return;
        }
        if mb.fits(wbuf.len()) {
            mb.post(Dir::Answer, seq, Some(&wbuf));
        } else {
            // Say so first: the client reads the socket only once it knows to, and a large
            // write would otherwise fill the socket and wait for it forever.
            mb.post(Dir::Answer, seq, None);
            if wr.write_all(&wbuf).is_err() {
                return;
            }
        }
    }
}

/// The metric kind of a request.
fn op_of(req: &MasterRequest) -> RpcOp {
    match req {
        MasterRequest::Hello { .. } => RpcOp::Hello,
        MasterRequest::Heartbeat => RpcOp::Heartbeat,
        MasterRequest::MountSegment(_) | MasterRequest::MountRestore { .. } => RpcOp::MountSegment,
        MasterRequest::UnmountSegment(_) => RpcOp::UnmountSegment,
        MasterRequest::PutStart { .. } | MasterRequest::UpsertStart { .. } => RpcOp::PutStart,
        MasterRequest::PutEnd(_) => RpcOp::PutEnd,
        MasterRequest::PutRevoke(_) => RpcOp::PutRevoke,
        MasterRequest::GetReplicas(_) => RpcOp::GetReplicas,
        MasterRequest::Exist(_) => RpcOp::Exist,
        MasterRequest::Remove { .. } => RpcOp::Remove,
        MasterRequest::RemoveAll { .. } => RpcOp::RemoveAll,
        MasterRequest::RemoveByRegex { .. } => RpcOp::RemoveByRegex,
        MasterRequest::DescribeSegments(_) => RpcOp::DescribeSegments,
        MasterRequest::ListSegments => RpcOp::ListSegments,
        MasterRequest::QueryKey(_) => RpcOp::QueryKey,
        MasterRequest::Stats => RpcOp::Stats,
        MasterRequest::Goodbye => RpcOp::Goodbye,
        MasterRequest::Dedicate | MasterRequest::Mailbox => RpcOp::Hello,
    }
}

/// What the metrics need to know about `req` before it is moved into the state.
fn facts_of(state: &SharedState, req: &MasterRequest) -> RequestFacts {
    let keys = match req {
        MasterRequest::PutStart { items, .. } | MasterRequest::UpsertStart { items, .. } => {
            items.len()
        }
        MasterRequest::PutEnd(items) => items.len(),
        MasterRequest::PutRevoke(items) => items.len(),
        MasterRequest::GetReplicas(keys) | MasterRequest::Exist(keys) => keys.len(),
        MasterRequest::Remove { keys, .. } => keys.len(),
        MasterRequest::QueryKey(_) => 1,
        _ => 0,
    };
    let put_sizes = match req {
        MasterRequest::PutStart { items, .. } | MasterRequest::UpsertStart { items, .. } => {
            items.iter().map(|(_, s)| *s).collect()
        }
        _ => Vec::new(),
    };
    // Mounts are rare (once per node start), so listing segments here costs nothing.
    let remount = match req {
        MasterRequest::MountSegment(spec) | MasterRequest::MountRestore { spec, .. } => state
            .lock()
            .list_segments()
            .iter()
            .any(|s| s.spec.name == spec.name),
        _ => false,
    };
    RequestFacts {
        keys,
        put_sizes,
        remount,
    }
}

/// Decodes the request in `meta` and answers it. Lookups (`GetReplicas`, `Exist`) borrow their
/// keys from `meta` (`KeyLookup`); every other request is decoded as a `MasterRequest`.
fn dispatch(state: &SharedState, client: &mut Option<ClientId>, meta: &[u8]) -> Reply {
    if let Some(lookup) = KeyLookup::peek(meta) {
        return Reply::Now(handle_lookup(state, client, lookup));
    }
    match frame::decode_message::<MasterRequest>(meta) {
        Ok(req) => handle(state, client, req),
        Err(e) => {
            state.metrics.malformed_frame();
            Reply::Now(MasterResponse::Error {
                code: ErrorCode::InvalidParams,
                message: format!("malformed request: {e}"),
            })
        }
    }
}

/// A request's answer: at once, or once a remove's owners dropped what it removed.
enum Reply {
    Now(MasterResponse),
    AfterDrops(Box<Pending>),
}

/// A remove's answer waiting for its owners (contract §8), with what its metrics need.
struct Pending {
    resp: MasterResponse,
    removal: Removal,
    op: RpcOp,
    facts: RequestFacts,
    started: Instant,
}

impl Reply {
    /// The answer, once due (on the runtime).
    async fn resolve(self, state: &SharedState) -> MasterResponse {
        match self {
            Reply::Now(resp) => resp,
            Reply::AfterDrops(p) => {
                let settled = drops::settle(state, p.removal).await;
                let resp = after_drops(p.resp, settled);
                state
                    .metrics
                    .record(p.op, &p.facts, &resp, p.started.elapsed());
                resp
            }
        }
    }

    /// [`Reply::resolve`] from a connection's own thread.
    fn resolve_blocking(self, state: &SharedState, rt: &tokio::runtime::Handle) -> MasterResponse {
        match self {
            Reply::Now(resp) => resp,
            pending => rt.block_on(pending.resolve(state)),
        }
    }
}

/// A remove's answer after its drops: unchanged when every owner acknowledged, else the
/// removed keys (and a count) report the failure, since the contract's 0 means acknowledged.
fn after_drops(resp: MasterResponse, settled: Result<(), ErrorCode>) -> MasterResponse {
    let Err(code) = settled else {
        return resp;
    };
    match resp {
        MasterResponse::Codes(codes) => MasterResponse::Codes(
            codes
                .into_iter()
                .map(|c| if c == 0 { code.as_i32() } else { c })
                .collect(),
        ),
        _ => MasterResponse::Error {
            code,
            message: "removed, but an owner did not acknowledge dropping its replicas".into(),
        },
    }
}

/// [`handle`] for a lookup whose keys are borrowed.
fn handle_lookup(
    state: &SharedState,
    client: &mut Option<ClientId>,
    lookup: KeyLookup<'_>,
) -> MasterResponse {
    let started = Instant::now();
    let (op, keys) = match &lookup {
        KeyLookup::GetReplicas(k) => (RpcOp::GetReplicas, k.len()),
        KeyLookup::Exist(k) => (RpcOp::Exist, k.len()),
    };
    let resp = match *client {
        None => MasterResponse::Error {
            code: ErrorCode::ClientNotFound,
            message: "send Hello before any other request".into(),
        },
        Some(id) => {
            let mut st = state.lock();
            match lookup {
                KeyLookup::GetReplicas(k) => MasterResponse::Replicas(st.get_replicas(id, &k)),
                KeyLookup::Exist(k) => MasterResponse::Codes(st.exist(&k)),
            }
        }
    };
    let facts = RequestFacts {
        keys,
        put_sizes: Vec::new(),
        remount: false,
    };
    state.metrics.record(op, &facts, &resp, started.elapsed());
    resp
}

/// Turns one request into one response, and counts it.
fn handle(state: &SharedState, client: &mut Option<ClientId>, req: MasterRequest) -> Reply {
    let started = Instant::now();
    let op = op_of(&req);
    let facts = facts_of(state, &req);
    let (resp, removal) = serve(state, client, req);
    match removal {
        Some(removal) if !removal.is_empty() => Reply::AfterDrops(Box::new(Pending {
            resp,
            removal,
            op,
            facts,
            started,
        })),
        _ => {
            state.metrics.record(op, &facts, &resp, started.elapsed());
            Reply::Now(resp)
        }
    }
}

/// Turns one request into one response, and for removes the replicas whose owners must drop
/// them before it is sent.
fn serve(
    state: &SharedState,
    client: &mut Option<ClientId>,
    req: MasterRequest,
) -> (MasterResponse, Option<Removal>) {
    match req {
        MasterRequest::Remove { .. }
        | MasterRequest::RemoveAll { .. }
        | MasterRequest::RemoveByRegex { .. }
            if client.is_some() =>
        {
            let (resp, removal) = serve_remove(state, req);
            (resp, Some(removal))
        }
        req => (serve_now(state, client, req), None),
    }
}

/// The remove requests (the caller checked registration).
fn serve_remove(state: &SharedState, req: MasterRequest) -> (MasterResponse, Removal) {
    match req {
        MasterRequest::Remove { keys, force } => {
            let (codes, removal) = state.lock().remove(&keys, force);
            (MasterResponse::Codes(codes), removal)
        }
        MasterRequest::RemoveAll { force } => {
            let (n, removal) = state.lock().remove_all(force);
            (MasterResponse::Count(n), removal)
        }
        MasterRequest::RemoveByRegex { pattern, force } => {
            // Compiled outside the lock: a pathological pattern must not stall every client.
            match regex::Regex::new(&pattern) {
                Ok(re) => {
                    let (n, removal) = state.lock().remove_by_regex(&re, force);
                    (MasterResponse::Count(n), removal)
                }
                Err(e) => (
                    MasterResponse::Error {
                        code: ErrorCode::InvalidParams,
                        message: format!("bad regex: {e}"),
                    },
                    Removal::default(),
                ),
            }
        }
        _ => (
            MasterResponse::Error {
                code: ErrorCode::InternalError,
                message: "not a remove request".into(),
            },
            Removal::default(),
        ),
    }
}

/// Turns one request (anything but a registered client's remove) into one response.
fn serve_now(
    state: &SharedState,
    client: &mut Option<ClientId>,
    req: MasterRequest,
) -> MasterResponse {
    if let MasterRequest::Hello {
        version_min,
        version_max,
        name,
        host_id,
        host,
        resume,
    } = req
    {
        if version_max < MIN_COMPATIBLE_VERSION || version_min > PROTOCOL_VERSION {
            return MasterResponse::Error {
                code: ErrorCode::InvalidVersion,
                message: format!(
                    "incompatible protocol version: client={version_min}..={version_max} master={MIN_COMPATIBLE_VERSION}..={PROTOCOL_VERSION}"
                ),
            };
        }
        let mut st = state.lock();
        let id = st.register_client(&name, &host, &host_id, resume);
        *client = Some(id);
        let s = st.settings();
        return MasterResponse::Hello {
            version: version_max.min(PROTOCOL_VERSION),
            master_version_min: MIN_COMPATIBLE_VERSION,
            master_version_max: PROTOCOL_VERSION,
            client_id: id,
            epoch: st.epoch(),
            heartbeat_interval_ms: s.heartbeat_interval_ms(),
            lease_ttl_ms: s.default_kv_lease_ttl_ms,
        };
    }
    // Admin requests need no registration.
    match &req {
        MasterRequest::ListSegments => {
            return MasterResponse::Segments(state.lock().list_segments());
        }
        MasterRequest::QueryKey(k) => return MasterResponse::Query(state.lock().query_key(k)),
        MasterRequest::Stats => return MasterResponse::Stats(state.lock().stats()),
        _ => {}
    }
    let Some(id) = *client else {
        return MasterResponse::Error {
            code: ErrorCode::ClientNotFound,
            message: "send Hello before any other request".into(),
        };
    };
    let mut st = state.lock();
    match req {
        MasterRequest::Hello { .. }
        | MasterRequest::ListSegments
        | MasterRequest::QueryKey(_)
        | MasterRequest::Stats => MasterResponse::Error {
            code: ErrorCode::InternalError,
            message: "unreachable request kind".into(),
        },
        MasterRequest::Heartbeat => MasterResponse::Heartbeat {
            known: st.heartbeat(id),
        },
        MasterRequest::MountSegment(spec) => match st.mount_segment(id, spec) {
            Ok(seg) => MasterResponse::Mounted(seg),
            Err(code) => MasterResponse::Error {
                code,
                message: "mount refused".into(),
            },
        },
        MasterRequest::MountRestore { spec, seals } => {
            let name = spec.name.clone();
            match st.mount_restoring(id, spec, &seals) {
                Ok((seg, restored)) => {
                    info!(segment = %name, entries = seals.len(), restored, "segment mounted with its directory");
                    MasterResponse::Mounted(seg)
                }
                Err(code) => MasterResponse::Error {
                    code,
                    message: "mount refused".into(),
                },
            }
        }
        MasterRequest::UnmountSegment(seg) => match st.unmount_segment(id, seg) {
            Ok(()) => MasterResponse::Done,
            Err(code) => MasterResponse::Error {
                code,
                message: format!("unmount refused: segment={seg}"),
            },
        },
        MasterRequest::PutStart { items, config } => {
            MasterResponse::PutStart(st.put_start(id, &items, &config))
        }
        MasterRequest::UpsertStart { items, config } => {
            MasterResponse::PutStart(st.upsert_start(id, &items, &config))
        }
        MasterRequest::PutEnd(items) => MasterResponse::Codes(st.put_end(id, &items)),
        MasterRequest::PutRevoke(items) => MasterResponse::Codes(st.put_revoke(id, &items)),
        MasterRequest::GetReplicas(keys) => MasterResponse::Replicas(st.get_replicas(id, &keys)),
        MasterRequest::Exist(keys) => MasterResponse::Codes(st.exist(&keys)),
        // Served by `serve_remove`.
        MasterRequest::Remove { .. }
        | MasterRequest::RemoveAll { .. }
        | MasterRequest::RemoveByRegex { .. } => MasterResponse::Error {
            code: ErrorCode::InternalError,
            message: "unreachable request kind".into(),
        },
        MasterRequest::DescribeSegments(ids) => {
            MasterResponse::Segments(st.describe_segments(&ids))
        }
        MasterRequest::Goodbye => {
            st.close_client(id);
            *client = None;
            MasterResponse::Done
        }
        // Already served from a thread of its own (see `serve_connection`).
        MasterRequest::Dedicate => MasterResponse::Done,
        // Taken by `serve_blocking` on a dedicated Unix connection; anywhere else there is
        // no fd to receive.
        MasterRequest::Mailbox => MasterResponse::Error {
            code: ErrorCode::InvalidParams,
            message: "a mailbox needs a dedicated connection on the master's unix socket".into(),
        },
    }
}
