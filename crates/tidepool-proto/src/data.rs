//! Client <-> segment owner data-plane messages.
//!
//! Addresses are absolute addresses in the owner's address space; the owner checks every range
//! against its registered regions before touching memory (W14). A write is answered only after
//! its bytes are in place (W12). Payload bytes follow the frame's message raw, in item order.

use serde::{Deserialize, Serialize};
use tidepool_common::{ErrorCode, ObjectId};

/// Records that a replica is complete in the owner's directory (contract §8), so a restarted
/// master can rebuild its index from the owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Object key.
    pub key: String,
    /// Version written.
    pub object_id: ObjectId,
    /// First byte of the replica.
    pub addr: u64,
    /// Replica length.
    pub len: u64,
    /// Pin flags (bit 0 soft pin, bit 1 hard pin), and [`Seal::PENDING`].
    pub flags: u8,
}

impl Seal {
    /// Flag of a claim: the object's bytes are on their way into this range, or were cut short,
    /// and are not all in place. A claim replaces whatever older entry overlaps it (a range is
    /// reallocated only after its object was freed, and eviction tells no owner), so the owner
    /// then refuses reads of the old object there, and a master rebuilt from its directory
    /// finds neither the old object over torn bytes nor the new one unsealed. The seal that
    /// follows the bytes replaces the claim.
    pub const PENDING: u8 = 0x80;

    /// This seal as a claim.
    pub fn claim(&self) -> Seal {
        Seal {
            flags: self.flags | Self::PENDING,
            ..self.clone()
        }
    }

    /// True for a claim.
    pub fn is_pending(&self) -> bool {
        self.flags & Self::PENDING != 0
    }
}

/// One range of a batched transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Absolute address in the owner.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A request to a segment owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// Write the payload into `ranges` (payload length = sum of lengths), then record `seals`.
    Write {
        /// Master epoch of the allocation; owners refuse epochs older than they have seen.
        epoch: u64,
        /// Destination ranges, in payload order.
        ranges: Vec<Range>,
        /// Directory entries to record once all bytes are in place.
        seals: Vec<Seal>,
    },
    /// Read `ranges`; the response payload is their concatenation. When `expect` is set for a
    /// range, the owner refuses it unless its directory holds that object at that address.
    Read {
        /// Source ranges.
        ranges: Vec<Range>,
        /// Expected object per range (same length as `ranges`, or empty).
        expect: Vec<Option<ObjectId>>,
    },
    /// Record directory entries for bytes written through shared memory.
    Seal {
        /// Master epoch.
        epoch: u64,
        /// Entries.
        seals: Vec<Seal>,
    },
    /// Liveness probe.
    Ping,
    /// Ask for the segment's memory file descriptor (Unix socket only); the answer carries it
    /// as `SCM_RIGHTS` ancillary data.
    ShmAttach {
        /// Base address of the segment wanted.
        base_addr: u64,
    },
    /// Ask for a seal ring of the segment (Unix socket only; appended, so older owners answer
    /// an error and the writer seals by request): a shared-memory queue in which this writer
    /// leaves seal records for the owner's directory instead of sending `Seal` requests. The
    /// answer is `Attached` with the ring's memfd as `SCM_RIGHTS` ancillary data; the ring
    /// lives as long as this connection, and the owner drains it when the connection closes.
    SealRing {
        /// Base address of the segment.
        base_addr: u64,
    },
    /// Forget directory entries of removed objects (contract §8: a remove is acknowledged by
    /// the owners, so a master rebuilt from their directories cannot resurrect it). Sent by
    /// the master; an entry is dropped only if it still holds that object at that address, so
    /// a late or repeated drop never touches a newer object. Answered `Ok` once every entry is
    /// gone (entries of segments the owner no longer has count as gone). Appended, so older
    /// peers keep their variant numbers.
    Drop {
        /// Master epoch; owners refuse epochs older than they have seen.
        epoch: u64,
        /// The entries to forget.
        drops: Vec<Dropped>,
    },
}

/// One directory entry to forget (`DataRequest::Drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// First byte of the replica.
    pub addr: u64,
    /// The object it must still hold to be dropped.
    pub object_id: ObjectId,
}

/// A response from a segment owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataResponse {
    /// Done (writes: bytes in place and sealed).
    Ok,
    /// Read data follows as payload.
    Data,
    /// A memory fd is attached; map `size` bytes of it.
    Attached {
        /// Segment size.
        size: u64,
    },
    /// Refused.
    Error {
        /// Code (-600 out of range, -701 object mismatch, ...).
        code: ErrorCode,
        /// Why.
        message: String,
    },
}
