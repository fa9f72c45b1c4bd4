//! Descriptors shared by the master RPC and the data plane.

use serde::{Deserialize, Serialize};
use tidepool_common::{ClientId, Incarnation, ObjectId, SegmentId};

/// Soft-pin request of a put (contract §3.5), already validated against the master's bounds by
/// the master itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SoftPin {
    /// Keep the current state (new objects: not pinned).
    #[default]
    Preserve,
    /// Pin for `ttl_ms`, or the master's `--default_kv_soft_pin_ttl` when `None`.
    Enable {
        /// Pin period in ms; 0 means not pinned.
        ttl_ms: Option<u64>,
    },
    /// Clear a pin.
    Disable,
}

/// Per-put placement and pinning options (the wire form of Mooncake's `ReplicateConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateConfig {
    /// Memory replicas wanted, each on a distinct segment; best effort (contract §3.8).
    pub replica_num: u32,
    /// Soft pin request.
    pub soft_pin: SoftPin,
    /// Never evict.
    pub hard_pin: bool,
    /// Segment names to try first, in order (Mooncake's `preferred_segment` goes first).
    pub preferred_segments: Vec<String>,
    /// Prefer a segment on the writer's host.
    pub prefer_same_node: bool,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        Self {
            replica_num: 1,
            soft_pin: SoftPin::Preserve,
            hard_pin: false,
            preferred_segments: Vec::new(),
            prefer_same_node: false,
        }
    }
}

/// Replica state as Mooncake numbers it (`ReplicaStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum ReplicaStatus {
    /// Not yet set.
    Undefined = 0,
    /// Allocated, nothing written.
    Initialized = 1,
    /// Being written.
    Processing = 2,
    /// Readable.
    Complete = 3,
    /// Removed.
    Removed = 4,
    /// Write failed.
    Failed = 5,
}

/// A contiguous range holding one replica inside one memory segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReplica {
    /// The segment (look its endpoint up with `DescribeSegments`, and cache it: a segment id is
    /// never reused, a re-mount gets a new one).
    pub segment: SegmentId,
    /// Absolute address of the range in the owner's address space (`base_addr + offset`).
    pub addr: u64,
    /// Length in bytes (the object size).
    pub len: u64,
}

/// Where a replica lives. Disk and weight replicas come with the SSD tier and the P2P store;
/// code that walks replicas matches on the kind and never assumes memory (contract §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicaKind {
    /// A range in a DRAM segment.
    Memory(MemoryReplica),
}

/// One replica of an object as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDesc {
    /// Where it lives.
    pub kind: ReplicaKind,
    /// Its state.
    pub status: ReplicaStatus,
}

impl ReplicaDesc {
    /// The memory range, if this is a memory replica.
    pub fn memory(&self) -> Option<&MemoryReplica> {
        match &self.kind {
            ReplicaKind::Memory(m) => Some(m),
        }
    }
}

/// What a lookup returns for one readable object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectView {
    /// Identity of this version of the object.
    pub object_id: ObjectId,
    /// Size in bytes.
    pub size: u64,
    /// COMPLETE replicas on live segments (lookups) or every replica (admin queries).
    pub replicas: Vec<ReplicaDesc>,
    /// Lease granted by this lookup, in ms from the moment the request was sent; the reader
    /// must finish its transfer within it (contract §3.3), 0 when no lease was granted.
    pub lease_ttl_ms: u64,
}

/// How a segment can be reached: the facts a writer or reader needs to pick a transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSpec {
    /// Segment name (`host:port`, Mooncake's `get_hostname()`).
    pub name: String,
    /// Fresh per mount.
    pub incarnation: Incarnation,
    /// Address of the first byte in the owner's address space.
    pub base_addr: u64,
    /// Capacity in bytes.
    pub size: u64,
    /// Data-plane TCP endpoint `ip:port` of the owner.
    pub endpoint: String,
    /// Identity of the owner's host (kernel boot id), for the same-host shared-memory path.
    pub host_id: String,
    /// Unix socket over which a same-host peer may map the segment, if the owner offers it.
    pub shm_socket: Option<String>,
    /// Transport protocol name ("tcp").
    pub protocol: String,
}

/// A mounted segment as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentView {
    /// Master-assigned id.
    pub id: SegmentId,
    /// Owning client.
    pub client: ClientId,
    /// How to reach it.
    pub spec: SegmentSpec,
    /// Bytes allocated to objects (committed or in flight).
    pub used: u64,
}
