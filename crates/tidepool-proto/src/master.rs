//! Client <-> master RPC messages. One request frame, one response frame with the same id;
//! a connection carries many requests at once (responses may come back out of order).
//!
//! Batch forms are the only forms: a single-key call is a batch of one, so the master has one
//! code path per operation and every batch costs one round trip.

use crate::types::{ObjectView, ReplicateConfig, SegmentSpec, SegmentView};
use serde::{Deserialize, Serialize};
use tidepool_common::{ClientId, ErrorCode, ObjectId, SegmentId};

/// A request from a client to the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// First message on a connection: version check and registration. With `resume` the
    /// client asks to keep its previous id (a reconnect); the master answers with a new id if it
    /// does not know it.
    Hello {
        /// Oldest protocol version the client speaks.
        version_min: u16,
        /// Newest protocol version the client speaks.
        version_max: u16,
        /// Human name (the segment name, or a generated one for pure clients).
        name: String,
        /// Host id of the client (kernel boot id).
        host_id: String,
        /// Host name or address part of the client's segment name.
        host: String,
        /// Previous id when reconnecting.
        resume: Option<ClientId>,
    },
    /// Liveness; every client sends it at least every `client_ttl / 5`.
    Heartbeat,
    /// Contribute a segment.
    MountSegment(SegmentSpec),
    /// Withdraw a segment synchronously: its objects are gone when this returns (W18).
    UnmountSegment(SegmentId),
    /// Reserve space for new objects (contract §3.2 steps 2-3).
    PutStart {
        /// Keys and sizes.
        items: Vec<(String, u64)>,
        /// One config for the whole batch.
        config: ReplicateConfig,
    },
    /// Commit written objects (step 5). Replicas on `failed` segments are dropped first.
    PutEnd(Vec<PutEndItem>),
    /// Abandon objects this client started (step 6).
    PutRevoke(Vec<(String, ObjectId)>),
    /// Look objects up for reading; grants leases.
    GetReplicas(Vec<String>),
    /// Existence; a 1 grants a lease.
    Exist(Vec<String>),
    /// Remove objects.
    Remove {
        /// Keys.
        keys: Vec<String>,
        /// Ignore read leases.
        force: bool,
    },
    /// Remove every object of the cluster.
    RemoveAll {
        /// Ignore read leases.
        force: bool,
    },
    /// Remove objects whose key matches (search semantics, anywhere in the key).
    RemoveByRegex {
        /// The pattern.
        pattern: String,
        /// Ignore read leases.
        force: bool,
    },
    /// Look segments up by id (clients cache the answers).
    DescribeSegments(Vec<SegmentId>),
    /// Every mounted segment.
    ListSegments,
    /// Every replica of a key, with no lease side effect (admin).
    QueryKey(String),
    /// Counters and gauges (admin).
    Stats,
    /// Clean close: unmount this client's segments and revoke its in-flight puts.
    Goodbye,
    /// Insert-or-replace (`upsert*`): as `PutStart`, but a readable key's old version is
    /// dropped and new space allocated; a live read lease refuses it with -706 (W13).
    /// Appended last so that older peers keep their variant numbers.
    UpsertStart {
        /// Keys and sizes.
        items: Vec<(String, u64)>,
        /// One config for the whole batch.
        config: ReplicateConfig,
    },
    /// Asked right after `Hello` by a client whose caller threads wait on this connection
    /// synchronously: serve it from a thread of its own, blocked in `recv`, so a request wakes
    /// that thread directly instead of going through the async runtime's poller (answered
    /// `Done`; a master without it answers an error and the connection stays as it was).
    /// Appended last so that older peers keep their variant numbers.
    Dedicate,
    /// Asked on a dedicated connection over the master's Unix socket: "from now on, requests
    /// and answers go through a mailbox (`crate::mailbox`) whose memfd I pass next". Answered
    /// `Done` (then the client sends one byte carrying the fd, and the master answers `Done`
    /// once it has mapped it, or an error and the connection stays as it was); a master
    /// without mailboxes answers an error. Appended last so that older peers keep their
    /// variant numbers.
    Mailbox,
    /// `MountSegment` for a segment that already holds sealed replicas: its directory (contract
    /// §8) after the master that knew them went away (a restart, W5). The master mounts the
    /// segment and, under the same lock, makes each entry a readable object again at its
    /// recorded range (the newest object id of a key wins; an entry whose range or key is
    /// taken is skipped). Answered `Mounted`. Appended last.
    MountRestore {
        /// The segment.
        spec: SegmentSpec,
        /// Its directory's sealed entries.
        seals: Vec<crate::data::Seal>,
    },
}

/// Commit request for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutEndItem {
    /// Key.
    pub key: String,
    /// The version being committed (must be the one this client started).
    pub object_id: ObjectId,
    /// Segments whose replica write failed; they are dropped before commit.
    pub failed: Vec<SegmentId>,
}

/// The master's answer to one key of a `PutStart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutStartResult {
    /// The key is already readable: the put is done, nothing to write (write-once).
    Exists,
    /// Another writer's put of this key is in flight; ask again shortly (W11).
    InFlight,
    /// Space reserved: write the bytes to every replica, then `PutEnd`.
    Allocated {
        /// Identity of the new version.
        object_id: ObjectId,
        /// Master epoch to send with every write (owners fence older epochs).
        epoch: u64,
        /// Ranges to write, on distinct segments.
        replicas: Vec<crate::types::MemoryReplica>,
    },
    /// Refused with a code (-200 no space, -600 bad arguments, ...).
    Failed(ErrorCode),
}

/// A key-list lookup (`GetReplicas`, `Exist`: every get and existence check) decoded with its
/// keys borrowed from the received frame. Decoding `MasterRequest` allocates one `String` per
/// key and frees it right after; for a 64-key `batch_is_exist` that was a third of the
/// master's CPU (perf, `docs/benchmarks.md`).
#[derive(Debug, PartialEq, Eq)]
pub enum KeyLookup<'a> {
    /// `MasterRequest::GetReplicas`.
    GetReplicas(Vec<&'a str>),
    /// `MasterRequest::Exist`.
    Exist(Vec<&'a str>),
}

/// postcard's tag (varint variant index) of `MasterRequest::GetReplicas`.
const GET_REPLICAS_TAG: u8 = 7;
/// postcard's tag of `MasterRequest::Exist`.
const EXIST_TAG: u8 = 8;

impl<'a> KeyLookup<'a> {
    /// The lookup encoded in `meta` (a frame's message bytes), or `None` when `meta` holds
    /// another request or is malformed (decode it as a `MasterRequest` then, for the error).
    pub fn peek(meta: &'a [u8]) -> Option<Self> {
        let (&tag, rest) = meta.split_first()?;
        match tag {
            GET_REPLICAS_TAG => postcard::from_bytes(rest).ok().map(Self::GetReplicas),
            EXIST_TAG => postcard::from_bytes(rest).ok().map(Self::Exist),
            _ => None,
        }
    }
}

impl MasterRequest {
    /// Whether `meta` (a frame's message bytes) is a `Dedicate` request, without decoding it.
    pub fn is_dedicate(meta: &[u8]) -> bool {
        // A unit variant is its tag alone.
        postcard::to_stdvec(&MasterRequest::Dedicate).is_ok_and(|d| d == meta)
    }

    /// Whether `meta` is a `Mailbox` request, without decoding it.
    pub fn is_mailbox(meta: &[u8]) -> bool {
        postcard::to_stdvec(&MasterRequest::Mailbox).is_ok_and(|d| d == meta)
    }
}

/// A response from the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterResponse {
    /// Answer to `Hello`.
    Hello {
        /// Version the master will speak on this connection.
        version: u16,
        /// Master's supported range, for the log on mismatch.
        master_version_min: u16,
        /// Master's supported range, for the log on mismatch.
        master_version_max: u16,
        /// Id of this client.
        client_id: ClientId,
        /// Master epoch (changes on every master start).
        epoch: u64,
        /// Heartbeat period the client must keep.
        heartbeat_interval_ms: u64,
        /// Read lease TTL.
        lease_ttl_ms: u64,
    },
    /// Answer to `Heartbeat`: `known == false` means the master lost this client (restart or
    /// declared dead) and it must register and mount again.
    Heartbeat {
        /// Whether the master still knows the client.
        known: bool,
    },
    /// Segment mounted.
    Mounted(SegmentId),
    /// Generic success.
    Done,
    /// Answer to `PutStart`, one per item.
    PutStart(Vec<PutStartResult>),
    /// One status per key (`PutEnd`, `PutRevoke`, `Remove`) or exist value (`Exist`).
    Codes(Vec<i32>),
    /// Answer to `GetReplicas`, one per key.
    Replicas(Vec<Result<ObjectView, ErrorCode>>),
    /// A count (`RemoveAll`, `RemoveByRegex`).
    Count(u64),
    /// Segment descriptions.
    Segments(Vec<SegmentView>),
    /// Answer to `QueryKey`.
    Query(Result<ObjectView, ErrorCode>),
    /// Answer to `Stats`.
    Stats(MasterStats),
    /// The whole request failed.
    Error {
        /// The code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
}

/// Gauges and counters the master reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStats {
    /// Readable or in-flight objects.
    pub key_count: u64,
    /// Soft-pinned objects.
    pub soft_pin_key_count: u64,
    /// Bytes allocated over all segments.
    pub allocated_bytes: u64,
    /// Capacity over all segments.
    pub capacity_bytes: u64,
    /// Live clients.
    pub active_clients: u64,
    /// Mounted segments.
    pub segments: u64,
    /// Objects evicted since start.
    pub evicted_keys: u64,
    /// Bytes evicted since start.
    pub evicted_bytes: u64,
    /// Eviction passes attempted.
    pub eviction_attempts: u64,
    /// Eviction passes that freed something.
    pub eviction_successes: u64,
    /// Puts that got fewer replicas than asked.
    pub partial_allocations: u64,
    /// Puts refused for lack of space.
    pub alloc_failures: u64,
    /// In-flight puts revoked because their writer died or closed.
    pub revoked_by_liveness: u64,
    /// Clients declared dead.
    pub dead_clients: u64,
    /// Lookups that found a readable object.
    pub get_hits: u64,
    /// Lookups in total.
    pub get_total: u64,
    /// Stale in-flight puts taken over by a newer put of the same key (past
    /// `put_start_discard_timeout`; Mooncake's `master_put_start_discard_cnt`).
    pub put_discards: u64,
    /// In-flight puts whose space was reclaimed after `put_start_release_timeout`.
    pub put_releases: u64,
    /// Readable versions replaced by an upsert.
    pub upsert_replacements: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lookups_decode_borrowed_and_nothing_else_does() {
        let keys = vec!["a".to_string(), "bé".to_string(), String::new()];
        let enc = |r: &MasterRequest| postcard::to_stdvec(r).unwrap();
        let exist = enc(&MasterRequest::Exist(keys.clone()));
        assert_eq!(
            KeyLookup::peek(&exist),
            Some(KeyLookup::Exist(vec!["a", "bé", ""]))
        );
        let get = enc(&MasterRequest::GetReplicas(keys.clone()));
        assert_eq!(
            KeyLookup::peek(&get),
            Some(KeyLookup::GetReplicas(vec!["a", "bé", ""]))
        );
        // Every other request goes the owned way.
        for r in [
            MasterRequest::Heartbeat,
            MasterRequest::PutRevoke(vec![]),
            MasterRequest::Remove {
                keys: keys.clone(),
                force: false,
            },
            MasterRequest::Dedicate,
            MasterRequest::Mailbox,
        ] {
            assert_eq!(KeyLookup::peek(&enc(&r)), None, "{r:?}");
        }
        // Malformed (truncated, not UTF-8): `None`, and the owned decode reports the error.
        assert_eq!(KeyLookup::peek(&exist[..exist.len() - 2]), None);
        let mut bad = enc(&MasterRequest::Exist(vec!["ab".into()]));
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert_eq!(KeyLookup::peek(&bad), None);
        assert!(postcard::from_bytes::<MasterRequest>(&bad).is_err());
        assert_eq!(KeyLookup::peek(&[]), None);
        assert!(MasterRequest::is_dedicate(&enc(&MasterRequest::Dedicate)));
        assert!(!MasterRequest::is_dedicate(&enc(&MasterRequest::Heartbeat)));
        assert!(!MasterRequest::is_dedicate(&exist));
        assert!(MasterRequest::is_mailbox(&enc(&MasterRequest::Mailbox)));
        assert!(!MasterRequest::is_mailbox(&enc(&MasterRequest::Dedicate)));
    }
}
