//! Same-host shared-memory transport: map the owner's segment memfd once, then copy directly.
//!
//! Attaching connects to the owner's Unix socket, sends `DataRequest::ShmAttach`, receives
//! the memfd as `SCM_RIGHTS` ancillary data and maps it `MAP_SHARED`. Mappings are cached per
//! (endpoint, shm socket, base address); the socket path carries a random per-start nonce, so
//! an owner restarted at the same endpoint is never confused with its predecessor.
//! If attaching fails, the target is remembered as TCP-only and the call goes over TCP.
//!
//! Seals go to the owner's directory before the commit (contract §8), fenced by epoch: appended
//! to a seal ring the owner handed out with the mapping (`sealring`: shared memory, no round
//! trip), or, when the ring cannot take them (full, closed, an older owner, a fenced epoch), as a
//! `Seal` request: over TCP from runtime tasks, over the owner's Unix socket from a caller's
//! thread (blocking, `tidepool_proto::blocking`). Reads skip the owner's `expect` check: a
//! reader holds a master lease on the object for the duration of its read, and the master
//! neither frees nor reallocates a leased replica, so the mapped bytes cannot change owner
//! mid-read.

use super::tcp::{Job, LaneError, SyncLane, TcpTransport};
use super::{Transport, copy_batch};
use crate::copy::{Piece, Sink};
use crate::engine::{ReadOp, Shared, Target, WriteOp};
use crate::sealring::RingProducer;
use crate::shmem::SharedMemory;
use crate::stats::{add, sub};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tidepool_common::{Error, ErrorCode, Result};
use tidepool_proto::blocking;
use tidepool_proto::data::{DataRequest, DataResponse, Seal};
use tidepool_proto::frame::{self, FrameKind};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

/// A peer segment mapped into this process.
struct PeerMapping {
    /// The owner's sealed memfd, mapped here.
    map: SharedMemory,
    /// The owner's address of the segment's first byte.
    base: u64,
    size: u64,
    /// Where seals go without a round trip; `None` when the owner offers no ring (older owner).
    ring: Option<Ring>,
    shared: Arc<Shared>,
}

/// This process's end of a seal ring on the owner (`sealring`).
struct Ring {
    producer: Mutex<RingProducer>,
    /// The connection the ring came on: the owner drains the ring when it closes, and its hang-up
    /// tells us the owner is gone (then seals go by request, and fail).
    conn: std::os::unix::net::UnixStream,
}

impl Ring {
    /// Appends claims; `false` when the caller must send them by request instead. Unlike
    /// seals, a claim acknowledges nothing, so a dead owner needs no check here: the seal that
    /// follows the copy finds it.
    fn push_claims(&self, epoch: u64, claims: &[Seal]) -> bool {
        self.producer.lock().push(epoch, claims)
    }

    /// Appends `seals`; `false` when the caller must seal by request instead.
    fn push(&self, epoch: u64, seals: &[Seal]) -> bool {
        // One poll(2) with no wait: a dead owner must fail the put as a request would, not let
        // the writer commit bytes nobody holds. About 1 µs, against a 17-21 µs round trip.
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        // A closed peer makes the socket readable (end of file) and reports POLLHUP.
        let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            // Nothing to read, no hang-up: the owner is alive (it never writes unasked).
            Ok(0) => self.producer.lock().push(epoch, seals),
            _ => false,
        }
    }
}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        sub(&self.shared.stats.shm_mappings, 1);
    }
}

impl PeerMapping {
    /// Local address of the owner's `[addr, addr+len)`, or `InvalidParams` when outside.
    fn local(&self, addr: u64, len: usize) -> Result<u64> {
        let end = addr.checked_add(len as u64);
        match end {
            Some(end) if addr >= self.base && end <= self.base + self.size => {
                Ok(self.map.addr() + (addr - self.base))
            }
            _ => Err(Error::invalid(format!(
                "range outside the peer segment: addr={addr:#x} len={len} segment={:#x}+{}",
                self.base, self.size
            ))),
        }
    }
}

/// One cached attach outcome; `map` is `None` when attaching failed (use TCP).
struct Entry {
    endpoint: String,
    socket: String,
    map: Option<Arc<PeerMapping>>,
}

/// Copies through mappings of same-host peers' segments.
pub(crate) struct ShmTransport {
    shared: Arc<Shared>,
    tcp: Arc<TcpTransport>,
    /// By owner base address; few entries per base, matched by endpoint and socket.
    maps: Mutex<HashMap<u64, Vec<Entry>>>,
    /// Idle blocking seal connections of caller threads, by owner socket path.
    seal_lanes: Mutex<HashMap<String, Vec<SyncLane<std::os::unix::net::UnixStream>>>>,
}

impl ShmTransport {
    pub(crate) fn new(shared: Arc<Shared>, tcp: Arc<TcpTransport>) -> Self {
        Self {
            shared,
            tcp,
            maps: Mutex::new(HashMap::new()),
            seal_lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Records `seals` (or claims) on the owner by request: over its Unix socket from a
    /// caller's thread, else over TCP.
    async fn seal_by_request(&self, target: &Target, epoch: u64, seals: &[Seal]) -> Result<()> {
        if blocking::is_caller_thread()
            && let Some(socket) = target.shm_socket.as_deref()
            && let Some(r) = self.seal_sync(target, socket, epoch, seals)
        {
            return r;
        }
        self.tcp.seal(target, epoch, seals).await
    }

    /// Seals on the owner over its Unix socket, blocking this caller thread; `None` when no
    /// connection could be opened (the caller seals over TCP instead).
    fn seal_sync(
        &self,
        target: &Target,
        socket: &str,
        epoch: u64,
        seals: &[Seal],
    ) -> Option<Result<()>> {
        let idle = self.seal_lanes.lock().get_mut(socket).and_then(Vec::pop);
        let mut lane = match idle {
            Some(l) => l,
            None => {
                let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
                SyncLane::new(stream, &self.shared).ok()?
            }
        };
        let (r, reusable) = match lane.exec(&target.endpoint, Job::Seal { epoch, seals }) {
            Ok(()) => (Ok(()), true),
            Err(LaneError::Refused(e)) => (Err(e), true),
            Err(LaneError::Broken(e)) => (Err(e), false),
        };
        let mut lanes = self.seal_lanes.lock();
        if reusable {
            let list = lanes.entry(socket.to_string()).or_default();
            if list.len() < self.shared.cfg.lanes.max(1) {
                list.push(lane);
            }
        } else {
            // Its peers are probably dead too.
            lanes.remove(socket);
        }
        Some(r)
    }

    fn cached(&self, target: &Target, socket: &str) -> Option<Option<Arc<PeerMapping>>> {
        let maps = self.maps.lock();
        maps.get(&target.base_addr)?
            .iter()
            .find(|e| e.endpoint == target.endpoint && e.socket == socket)
            .map(|e| e.map.clone())
    }

    /// The mapping of the target's segment, attaching on first use; `None` means use TCP.
    /// Attaches to `target` ahead of its first transfer (see `TransferEngine::prepare`).
    pub(crate) async fn prepare(&self, target: &Target) {
        let _ = self.mapping(target).await;
    }

    async fn mapping(&self, target: &Target) -> Option<Arc<PeerMapping>> {
        let socket = target.shm_socket.as_deref()?;
        if let Some(m) = self.cached(target, socket) {
            return m;
        }
        let map = match self.attach(socket, target.base_addr).await {
            Ok(m) => {
                add(&self.shared.stats.shm_mappings, 1);
                Some(Arc::new(m))
            }
            Err(e) => {
                tracing::info!(endpoint = %target.endpoint, error = %e, "shm attach failed, using tcp");
                None
            }
        };
        let mut maps = self.maps.lock();
        let list = maps.entry(target.base_addr).or_default();
        // A concurrent attach may have won; keep the first so every caller shares one mapping.
        if let Some(e) = list
            .iter()
            .find(|e| e.endpoint == target.endpoint && e.socket == socket)
        {
            return e.map.clone();
        }
        list.push(Entry {
            endpoint: target.endpoint.clone(),
            socket: socket.to_string(),
            map: map.clone(),
        });
        map
    }

    async fn attach(&self, socket: &str, base_addr: u64) -> Result<PeerMapping> {
        let cfg = &self.shared.cfg;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(
                ErrorCode::TransferFail,
                format!("shm attach {what} failed: {e} socket={socket}"),
            )
        };
        let mut stream = tokio::time::timeout(cfg.connect_timeout, UnixStream::connect(socket))
            .await
            .map_err(|e| fail("connect", &e))?
            .map_err(|e| fail("connect", &e))?;
        let mut scratch = Vec::new();
        frame::write_frame(
            &mut stream,
            &mut scratch,
            FrameKind::Request,
            1,
            &DataRequest::ShmAttach { base_addr },
            &[],
        )
        .await
        .map_err(|e| fail("send", &e))?;
        let mut buf = [0u8; 512];
        let (n, fd) = tokio::time::timeout(
            cfg.io_timeout,
            crate::shmem::recv_with_fd(&stream, &mut buf),
        )
        .await
        .map_err(|e| fail("receive", &e))?
        .map_err(|e| fail("receive", &e))?;
        let mut rd = (&buf[..n]).chain(&mut stream);
        let (hdr, msg) = frame::read_frame::<_, DataResponse>(&mut rd, &mut scratch)
            .await
            .map_err(|e| fail("receive", &e))?;
        let size = match msg {
            Ok(DataResponse::Attached { size }) if hdr.payload_len == 0 => size,
            Ok(DataResponse::Error { code, message }) => return Err(Error::new(code, message)),
            Ok(other) => return Err(fail("protocol", &format!("unexpected response {other:?}"))),
            Err(e) => return Err(fail("decode", &e)),
        };
        let fd = fd.ok_or_else(|| fail("receive", &"no fd attached"))?;
        let map =
            SharedMemory::from_fd(fd, Some(size), cfg.prefault).map_err(|e| fail("map", &e))?;
        let ring = match self.attach_ring(stream, base_addr).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(%socket, error = %e, "no seal ring, sealing by request");
                None
            }
        };
        Ok(PeerMapping {
            map,
            base: base_addr,
            size,
            ring,
            shared: self.shared.clone(),
        })
    }

    /// Asks the owner for a seal ring of the segment at `base_addr`, on the attach connection,
    /// which then stays open as long as the mapping.
    async fn attach_ring(&self, mut stream: UnixStream, base_addr: u64) -> Result<Ring> {
        let cfg = &self.shared.cfg;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(
                ErrorCode::TransferFail,
                format!("seal ring {what} failed: {e}"),
            )
        };
        let mut scratch = Vec::new();
        frame::write_frame(
            &mut stream,
            &mut scratch,
            FrameKind::Request,
            2,
            &DataRequest::SealRing { base_addr },
            &[],
        )
        .await
        .map_err(|e| fail("send", &e))?;
        let mut buf = [0u8; 512];
        let (n, fd) = tokio::time::timeout(
            cfg.io_timeout,
            crate::shmem::recv_with_fd(&stream, &mut buf),
        )
        .await
        .map_err(|e| fail("receive", &e))?
        .map_err(|e| fail("receive", &e))?;
        let mut rd = (&buf[..n]).chain(&mut stream);
        let (hdr, msg) = frame::read_frame::<_, DataResponse>(&mut rd, &mut scratch)
            .await
            .map_err(|e| fail("receive", &e))?;
        match msg {
            Ok(DataResponse::Attached { .. }) if hdr.payload_len == 0 => {}
            Ok(DataResponse::Error { code, message }) => return Err(Error::new(code, message)),
            Ok(other) => return Err(fail("protocol", &format!("unexpected response {other:?}"))),
            Err(e) => return Err(fail("decode", &e)),
        }
        let fd = fd.ok_or_else(|| fail("receive", &"no fd attached"))?;
        let producer = RingProducer::from_fd(fd)?;
        let conn = stream.into_std().map_err(|e| fail("keep", &e))?;
        Ok(Ring {
            producer: Mutex::new(producer),
            conn,
        })
    }

    /// Drops the mappings (and failed-attach memories) and seal connections of `endpoint`.
    pub(crate) fn forget(&self, endpoint: &str) {
        let mut maps = self.maps.lock();
        let mut sockets = Vec::new();
        for list in maps.values_mut() {
            list.retain(|e| {
                if e.endpoint == endpoint {
                    sockets.push(e.socket.clone());
                }
                e.endpoint != endpoint
            });
        }
        maps.retain(|_, l| !l.is_empty());
        drop(maps);
        let mut lanes = self.seal_lanes.lock();
        for s in sockets {
            lanes.remove(&s);
        }
    }

    /// Drops every mapping and seal connection.
    pub(crate) fn clear(&self) {
        self.maps.lock().clear();
        self.seal_lanes.lock().clear();
    }
}

impl ShmTransport {
    /// Copies `ops` through the mapping `m` (the whole batch validated first).
    fn copy_in(m: &PeerMapping, shared: &Shared, ops: &[WriteOp<'_>]) -> Result<()> {
        // Validate the whole batch before copying anything.
        for op in ops {
            m.local(op.remote_addr, op.src.len())?;
        }
        let mut bytes = 0u64;
        let mut pieces = Vec::with_capacity(ops.len());
        for op in ops {
            let dst = m.local(op.remote_addr, op.src.len())?;
            pieces.push(Piece {
                src: op.src.as_ptr(),
                dst: dst as *mut u8,
                len: op.src.len(),
            });
            bytes += op.src.len() as u64;
        }
        // SAFETY: every destination lies inside the live peer mapping `m` (checked by
        // `local`); the sources are the caller's slices; the master never allocates two
        // replicas of one batch over the same bytes, so destinations are disjoint.
        unsafe { copy_batch(&pieces, Sink::Segment) };
        add(&shared.stats.shm_bytes_written, bytes);
        Ok(())
    }
}

impl Transport for ShmTransport {
    async fn write(
        &self,
        target: &Target,
        epoch: u64,
        ops: &[WriteOp<'_>],
        seals: &[Seal],
    ) -> Result<()> {
        let Some(m) = self.mapping(target).await else {
            return self.tcp.write(target, epoch, ops, seals).await;
        };
        if seals.is_empty() {
            return Self::copy_in(&m, &self.shared, ops);
        }
        // Claims go first (see `Seal::PENDING`): the owner learns the ranges are being
        // overwritten before the first byte lands.
        let claims: Vec<Seal> = seals.iter().map(Seal::claim).collect();
        let claimed = m
            .ring
            .as_ref()
            .is_some_and(|r| r.push_claims(epoch, &claims));
        if !claimed {
            self.seal_by_request(target, epoch, &claims).await?;
        }
        Self::copy_in(&m, &self.shared, ops)?;
        if let Some(ring) = &m.ring
            && ring.push(epoch, seals)
        {
            add(&self.shared.stats.ring_seals, seals.len() as u64);
            return Ok(());
        }
        self.seal_by_request(target, epoch, seals).await
    }

    async fn read(&self, target: &Target, ops: &mut [ReadOp<'_>]) -> Result<()> {
        let Some(m) = self.mapping(target).await else {
            return self.tcp.read(target, ops).await;
        };
        for op in ops.iter() {
            m.local(op.remote_addr, op.dst.len())?;
        }
        let mut bytes = 0u64;
        let mut pieces = Vec::with_capacity(ops.len());
        for op in ops.iter_mut() {
            let len = op.dst.len();
            let src = m.local(op.remote_addr, len)?;
            pieces.push(Piece {
                src: src as *const u8,
                dst: op.dst.as_mut_ptr(),
                len,
            });
            bytes += len as u64;
        }
        // SAFETY: every source lies inside the live peer mapping `m`; the destinations are
        // the caller's exclusive (hence disjoint) slices.
        unsafe { copy_batch(&pieces, Sink::Caller) };
        add(&self.shared.stats.shm_bytes_read, bytes);
        Ok(())
    }
}
