//! Transfer counters: relaxed atomics bumped on the data path, copied out by
//! [`crate::TransferEngine::stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of an engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Bytes this engine wrote to peers over TCP.
    pub tcp_bytes_written: u64,
    /// Bytes this engine read from peers over TCP.
    pub tcp_bytes_read: u64,
    /// Bytes written into same-host peers' segments through shared memory.
    pub shm_bytes_written: u64,
    /// Bytes read from same-host peers' segments through shared memory.
    pub shm_bytes_read: u64,
    /// Bytes copied into this engine's own segments in-process.
    pub local_bytes_written: u64,
    /// Bytes copied out of this engine's own segments in-process.
    pub local_bytes_read: u64,
    /// Outgoing pooled data connections open now (bounded by `lanes` per peer).
    pub open_connections: u64,
    /// Outgoing data connections opened since start (a steady value means reuse).
    pub connections_opened: u64,
    /// Incoming data connections the server holds now.
    pub server_connections: u64,
    /// Requests the data server answered successfully.
    pub requests_served: u64,
    /// Requests the data server refused (bad ranges, stale epochs, malformed messages).
    pub requests_rejected: u64,
    /// Shared-memory segment mappings of peers held now.
    pub shm_mappings: u64,
    /// Seals this engine appended to same-host owners' seal rings (no round trip each).
    pub ring_seals: u64,
}

/// The live counters behind [`TransferStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tcp_bytes_written: AtomicU64,
    pub tcp_bytes_read: AtomicU64,
    pub shm_bytes_written: AtomicU64,
    pub shm_bytes_read: AtomicU64,
    pub local_bytes_written: AtomicU64,
    pub local_bytes_read: AtomicU64,
    pub open_connections: AtomicU64,
    pub connections_opened: AtomicU64,
    pub server_connections: AtomicU64,
    pub requests_served: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub shm_mappings: AtomicU64,
    pub ring_seals: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Subtracts `n` from a gauge.
pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransferStats {
        TransferStats {
            tcp_bytes_written: self.tcp_bytes_written.load(Relaxed),
            tcp_bytes_read: self.tcp_bytes_read.load(Relaxed),
            shm_bytes_written: self.shm_bytes_written.load(Relaxed),
            shm_bytes_read: self.shm_bytes_read.load(Relaxed),
            local_bytes_written: self.local_bytes_written.load(Relaxed),
            local_bytes_read: self.local_bytes_read.load(Relaxed),
            open_connections: self.open_connections.load(Relaxed),
            connections_opened: self.connections_opened.load(Relaxed),
            server_connections: self.server_connections.load(Relaxed),
            requests_served: self.requests_served.load(Relaxed),
            requests_rejected: self.requests_rejected.load(Relaxed),
            shm_mappings: self.shm_mappings.load(Relaxed),
            ring_seals: self.ring_seals.load(Relaxed),
        }
    }
}
