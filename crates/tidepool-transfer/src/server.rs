//! The data server: a TCP listener serving `DataRequest`s against this engine's registered
//! memory, and (when shared memory is enabled) a Unix socket that hands segment memfds to
//! same-host peers with `SCM_RIGHTS` and records their seals.
//!
//! One task per connection, request/response in order. Each connection reuses its scratch
//! buffers, so a small request costs no allocation beyond decoding its message. A request with
//! bad ranges is answered with an error and its payload discarded, and the connection keeps
//! serving (W14); a malformed frame closes only that connection.

use crate::engine::Shared;
use crate::memory::{LocalSegment, Region, slice_of, slice_of_mut};
use crate::owner;
use crate::sealring::RingConsumer;
use crate::stats::{add, sub};
use std::sync::Arc;
use tidepool_common::{Error, ErrorCode, Result};
use tidepool_proto::data::{DataRequest, DataResponse, Seal};
use tidepool_proto::frame::{self, FrameError, FrameKind};
use tidepool_proto::wait::{spin_ready, spin_window};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Read-side buffer of a connection: small frames arrive in one syscall; large payloads mostly
/// bypass it (tokio's `BufReader` reads straight into the destination when it is empty).
pub(crate) const READ_BUF: usize = 64 << 10;
/// How long a connection polls for the peer's next request before parking.
const NEXT_REQUEST_SPIN: std::time::Duration = std::time::Duration::from_micros(50);
/// Responses up to this size are assembled in one buffer and sent with one write.
const INLINE_RESPONSE: u64 = 64 << 10;

/// Accepts TCP data connections until `stop` flips, then closes every connection.
pub(crate) async fn run_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        add(&shared.stats.server_connections, 1);
                        if let Err(e) = serve_tcp(&shared, stream).await {
                            tracing::warn!(%peer, error = %e, "closing data connection");
                        }
                        sub(&shared.stats.server_connections, 1);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "data server accept failed");
                    // Usually fd exhaustion: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it right here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Per-connection scratch, reused across requests.
struct ConnScratch {
    meta: Vec<u8>,
    out: Vec<u8>,
    regions: Vec<Region>,
}

/// Serves one connection until the peer closes it or sends something unparseable.
async fn serve_tcp(shared: &Shared, stream: TcpStream) -> Result<(), FrameError> {
    stream.set_nodelay(true)?;
    let mut conn = BufReader::with_capacity(READ_BUF, stream);
    let mut s = ConnScratch {
        meta: Vec::with_capacity(256),
        out: Vec::with_capacity(256),
        regions: Vec::new(),
    };
    loop {
        if conn.buffer().is_empty() {
            // The writer's next request tends to follow at once: poll before parking.
            let _ = spin_ready(conn.get_ref().readable(), spin_window(NEXT_REQUEST_SPIN)).await;
        }
        let (hdr, msg) = match frame::read_frame::<_, DataRequest>(&mut conn, &mut s.meta).await {
            Ok(x) => x,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if hdr.kind != FrameKind::Request {
            return Err(FrameError::BadKind(hdr.kind as u8));
        }
        let id = hdr.request_id;
        let outcome = match msg {
            Err(e) => {
                frame::discard(&mut conn, hdr.payload_len).await?;
                Err(Error::invalid(format!("malformed request: {e}")))
            }
            Ok(req) => handle(shared, &mut conn, &mut s, id, hdr.payload_len, req).await?,
        };
        match outcome {
            // Counted by the handler before its reply left, so a peer that saw the reply
            // also sees the count.
            Ok(Handled::Replied) => {}
            Ok(Handled::Ok) => {
                add(&shared.stats.requests_served, 1);
                respond(conn.get_mut(), &mut s.out, id, &DataResponse::Ok).await?;
            }
            Err(e) => {
                add(&shared.stats.requests_rejected, 1);
                tracing::debug!(error = %e, "data request refused");
                let resp = DataResponse::Error {
                    code: e.code(),
                    message: e.message().to_string(),
                };
                respond(conn.get_mut(), &mut s.out, id, &resp).await?;
            }
        }
    }
}

/// How a valid request was answered.
enum Handled {
    /// Send `DataResponse::Ok`.
    Ok,
    /// The handler already sent its response (reads).
    Replied,
}

/// Executes one decoded request. The outer error is fatal for the connection; the inner one
/// is answered to the peer. Invariant: on return, exactly `payload_len` bytes were consumed.
async fn handle(
    shared: &Shared,
    conn: &mut BufReader<TcpStream>,
    s: &mut ConnScratch,
    id: u64,
    payload_len: u64,
    req: DataRequest,
) -> Result<Result<Handled>, FrameError> {
    use tokio::io::AsyncReadExt;
    let reg = &shared.registry;
    match req {
        DataRequest::Write {
            epoch,
            ranges,
            seals,
        } => {
            let checked = owner::total_len(&ranges).and_then(|total| {
                if total != payload_len {
                    return Err(Error::invalid(format!(
                        "payload length does not match ranges: payload={payload_len} ranges={total}"
                    )));
                }
                owner::check_write(reg, epoch, &ranges, &seals, &mut s.regions)?;
                owner::check_not_late(&s.regions[ranges.len()..], &seals)
            });
            if let Err(e) = checked {
                frame::discard(conn, payload_len).await?;
                return Ok(Err(e));
            }
            for r in &ranges {
                // SAFETY: `check_write` resolved this range inside a registered region, and
                // `s.regions` holds that region's owner (keeping a segment mapped) until the
                // next request; caller-registered memory stays valid until unregistered.
                let dst = unsafe { slice_of_mut(r.addr, r.len) };
                if let Err(e) = conn.read_exact(dst).await {
                    // Cut short: the ranges now hold torn bytes, so the old objects' entries
                    // go, and the new ones are claims, not replicas (`Seal::PENDING`).
                    owner::apply_claims(&s.regions[ranges.len()..], &seals);
                    return Err(e.into());
                }
            }
            owner::apply_seals(&s.regions[ranges.len()..], &seals);
            Ok(Ok(Handled::Ok))
        }
        DataRequest::Read { ranges, expect } => {
            frame::discard(conn, payload_len).await?;
            let checked = owner::total_len(&ranges)
                .and_then(|t| owner::check_read(reg, &ranges, &expect, &mut s.regions).map(|_| t));
            let total = match checked {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            add(&shared.stats.requests_served, 1);
            let w = conn.get_mut();
            s.out.clear();
            frame::encode_frame(
                &mut s.out,
                FrameKind::Response,
                id,
                &DataResponse::Data,
                total,
            )?;
            if total <= INLINE_RESPONSE {
                for r in &ranges {
                    // SAFETY: validated by `check_read`; owners held in `s.regions`.
                    s.out.extend_from_slice(unsafe { slice_of(r.addr, r.len) });
                }
                w.write_all(&s.out).await?;
            } else {
                w.write_all(&s.out).await?;
                for r in &ranges {
                    // SAFETY: validated by `check_read`; owners held in `s.regions`.
                    w.write_all(unsafe { slice_of(r.addr, r.len) }).await?;
                }
            }
            Ok(Ok(Handled::Replied))
        }
        DataRequest::Seal { epoch, seals } => {
            frame::discard(conn, payload_len).await?;
            Ok(seal(shared, &mut s.regions, epoch, &seals).map(|()| Handled::Ok))
        }
        DataRequest::Ping => {
            frame::discard(conn, payload_len).await?;
            Ok(Ok(Handled::Ok))
        }
        DataRequest::Drop { epoch, drops } => {
            frame::discard(conn, payload_len).await?;
            Ok(owner::apply_drops(reg, epoch, &drops).map(|()| Handled::Ok))
        }
        DataRequest::ShmAttach { .. } | DataRequest::SealRing { .. } => {
            frame::discard(conn, payload_len).await?;
            Ok(Err(Error::invalid(
                "shm attach and seal rings are only served on the unix socket",
            )))
        }
    }
}

/// Serves a seal connection from a thread of its own, blocked in `recv` between requests (the
/// kernel wakes this thread itself: one thread wake-up and two system calls fewer per seal than
/// the runtime's poller). Looks at `stop` every `IDLE_CHECK`.
fn dedicate_unix(shared: Arc<Shared>, stream: UnixStream, stop: watch::Receiver<bool>) {
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand the seal connection to a thread");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("tidepool-seal".into())
        .spawn(move || {
            if let Err(e) = serve_unix_blocking(&shared, stream, &stop) {
                tracing::warn!(error = %e, "closing seal connection");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a seal connection thread");
    }
}

fn serve_unix_blocking(
    shared: &Shared,
    stream: std::os::unix::net::UnixStream,
    stop: &watch::Receiver<bool>,
) -> Result<(), FrameError> {
    use std::io::{BufRead, Read, Write};
    const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
    const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    stream.set_nonblocking(false)?;
    let mut wr = stream.try_clone()?;
    let mut rd = std::io::BufReader::with_capacity(4096, stream);
    let (mut meta, mut out, mut regions) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        rd.get_ref().set_read_timeout(Some(IDLE_CHECK))?;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            match rd.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rd.get_ref().set_read_timeout(Some(FRAME_TIMEOUT))?;
        let (hdr, msg) = match frame::read_frame_sync::<_, DataRequest>(&mut rd, &mut meta) {
            Ok(x) => x,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if hdr.kind != FrameKind::Request {
            return Err(FrameError::BadKind(hdr.kind as u8));
        }
        let n = std::io::copy(&mut (&mut rd).take(hdr.payload_len), &mut std::io::sink())?;
        if n < hdr.payload_len {
            return Err(FrameError::Closed);
        }
        let r = match msg {
            Ok(DataRequest::Seal { epoch, seals }) => seal(shared, &mut regions, epoch, &seals),
            Ok(DataRequest::Ping) => Ok(()),
            Ok(_) => Err(Error::invalid(
                "only seal and ping are served on a seal connection",
            )),
            Err(e) => Err(Error::invalid(format!("malformed request: {e}"))),
        };
        encode_reply(shared, &mut out, hdr.request_id, r)?;
        wr.write_all(&out)?;
    }
}

/// Encodes the answer `Ok` or the error into `out`, counting a refusal.
fn encode_reply(
    shared: &Shared,
    out: &mut Vec<u8>,
    id: u64,
    r: Result<()>,
) -> Result<(), FrameError> {
    let resp = match r {
        Ok(()) => DataResponse::Ok,
        Err(e) => {
            add(&shared.stats.requests_rejected, 1);
            tracing::debug!(error = %e, "data request refused");
            DataResponse::Error {
                code: e.code(),
                message: e.message().to_string(),
            }
        }
    };
    out.clear();
    frame::encode_frame(out, FrameKind::Response, id, &resp, 0)
}

/// Answers `Ok` or the error, counting it.
async fn reply(
    shared: &Shared,
    w: &mut UnixStream,
    out: &mut Vec<u8>,
    id: u64,
    r: Result<()>,
) -> Result<(), FrameError> {
    encode_reply(shared, out, id, r)?;
    w.write_all(out).await?;
    Ok(())
}

/// Records `seals` (bytes written by another path) once all of them pass the epoch fence.
fn seal(shared: &Shared, regions: &mut Vec<Region>, epoch: u64, seals: &[Seal]) -> Result<()> {
    regions.clear();
    owner::check_seals_into(&shared.registry, epoch, seals, regions)?;
    owner::apply_seals(regions, seals);
    add(&shared.stats.requests_served, 1);
    Ok(())
}

/// Sends a payload-less response.
async fn respond(
    w: &mut TcpStream,
    out: &mut Vec<u8>,
    id: u64,
    resp: &DataResponse,
) -> Result<(), FrameError> {
    out.clear();
    frame::encode_frame(out, FrameKind::Response, id, resp, 0)?;
    w.write_all(out).await?;
    Ok(())
}

/// Accepts shm-attach connections on the Unix socket until `stop` flips.
pub(crate) async fn run_unix(
    shared: Arc<Shared>,
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut drain = tokio::time::interval(RING_DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = drain.tick() => {
                for seg in shared.registry.segments() {
                    seg.drain_rings();
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let stop = stop.clone();
                    conns.spawn(async move {
                        match serve_unix(&shared, stream).await {
                            Ok(Some(stream)) => dedicate_unix(shared, stream, stop),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "closing shm attach connection"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shm socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// How often the owner moves seal-ring records into its directories (`sealring`): often
/// enough that a ring (about 12 000 seals) never fills between drains, and cheap when idle (a
/// lock and two loads per ring).
const RING_DRAIN: std::time::Duration = std::time::Duration::from_millis(5);

/// The seal rings a Unix-socket connection was given; dropping it (the writer disconnected,
/// or died) drains and forgets them, so no record written before the disconnect is lost.
#[derive(Default)]
struct HeldRings(Vec<(Arc<LocalSegment>, Arc<RingConsumer>)>);

impl Drop for HeldRings {
    fn drop(&mut self) {
        for (seg, ring) in self.0.drain(..) {
            seg.detach_ring(&ring);
        }
    }
}

/// Answers `ShmAttach` requests with the segment's memfd attached as `SCM_RIGHTS`, and the
/// seals (and pings) of same-host writers, which copy through the mapping and then seal here:
/// a Unix socket round trip is cheaper than a loopback TCP one. Only caller threads, which
/// wait synchronously, seal over this socket (`transport/shm.rs`), so after its first seal a
/// connection is handed back (`Some`) to be served from a thread of its own.
async fn serve_unix(shared: &Shared, stream: UnixStream) -> Result<Option<UnixStream>, FrameError> {
    let mut meta = Vec::new();
    let mut out = Vec::new();
    let mut regions = Vec::new();
    let mut rings = HeldRings::default();
    let mut stream = BufReader::with_capacity(4096, stream);
    loop {
        if stream.buffer().is_empty() {
            // A writer's next seal tends to follow at once: poll before parking.
            let _ = spin_ready(stream.get_ref().readable(), spin_window(NEXT_REQUEST_SPIN)).await;
        }
        let (hdr, msg) = match frame::read_frame::<_, DataRequest>(&mut stream, &mut meta).await {
            Ok(x) => x,
            Err(FrameError::Closed) => return Ok(None),
            Err(e) => return Err(e),
        };
        if hdr.kind != FrameKind::Request {
            return Err(FrameError::BadKind(hdr.kind as u8));
        }
        frame::discard(&mut stream, hdr.payload_len).await?;
        let answer = match msg {
            Ok(DataRequest::ShmAttach { base_addr }) => Some(base_addr),
            Ok(DataRequest::SealRing { base_addr }) => {
                let ring = shared
                    .registry
                    .segment_at(base_addr)
                    .ok_or_else(|| {
                        Error::new(ErrorCode::SegmentNotFound, "no segment at that address")
                    })
                    .and_then(|seg| Ok((seg.clone(), seg.attach_ring()?)));
                match ring {
                    Ok((seg, ring)) => {
                        out.clear();
                        let resp = DataResponse::Attached {
                            size: crate::sealring::RING_SIZE,
                        };
                        frame::encode_frame(
                            &mut out,
                            FrameKind::Response,
                            hdr.request_id,
                            &resp,
                            0,
                        )?;
                        let fd = ring.fd();
                        rings.0.push((seg, ring));
                        crate::shmem::send_with_fd(stream.get_ref(), &out, fd).await?;
                    }
                    Err(e) => {
                        reply(shared, stream.get_mut(), &mut out, hdr.request_id, Err(e)).await?
                    }
                }
                continue;
            }
            Ok(DataRequest::Seal { epoch, seals }) => {
                let r = seal(shared, &mut regions, epoch, &seals);
                reply(shared, stream.get_mut(), &mut out, hdr.request_id, r).await?;
                // A connection holding rings stays here: its end drains them.
                if stream.buffer().is_empty() && rings.0.is_empty() {
                    return Ok(Some(stream.into_inner()));
                }
                continue;
            }
            Ok(DataRequest::Ping) => {
                reply(shared, stream.get_mut(), &mut out, hdr.request_id, Ok(())).await?;
                continue;
            }
            Ok(_) => {
                let e = Error::invalid("only attach, seal and ping are served on the unix socket");
                reply(shared, stream.get_mut(), &mut out, hdr.request_id, Err(e)).await?;
                continue;
            }
            Err(e) => {
                let e = Error::invalid(format!("malformed request: {e}"));
                reply(shared, stream.get_mut(), &mut out, hdr.request_id, Err(e)).await?;
                continue;
            }
        };
        let seg = answer.and_then(|base| shared.registry.segment_at(base));
        let stream = stream.get_mut();
        out.clear();
        match seg {
            Some(seg) => {
                frame::encode_frame(
                    &mut out,
                    FrameKind::Response,
                    hdr.request_id,
                    &DataResponse::Attached { size: seg.size() },
                    0,
                )?;
                crate::shmem::send_with_fd(stream, &out, seg.fd()).await?;
            }
            None => {
                let resp = DataResponse::Error {
                    code: ErrorCode::SegmentNotFound,
                    message: "no segment at that address".into(),
                };
                frame::encode_frame(&mut out, FrameKind::Response, hdr.request_id, &resp, 0)?;
                stream.write_all(&out).await?;
            }
        }
    }
}
