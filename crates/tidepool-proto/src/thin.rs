//! Thin client <-> real client messages (standalone mode: `setup_dummy` against a
//! `tidepool node` / `mooncake_client` on the same host).
//!
//! Two channels, both framed with [`crate::frame`]:
//! - **TCP** (the node's `--port`, 50052 by default) carries calls: [`ThinRequest::Hello`]
//!   first on every connection, then data and metadata calls, one at a time per connection.
//!   The first `Hello` opens a *session*; further connections of the same thin client join it
//!   by naming its id.
//! - **Unix socket** (path told in [`ThinResponse::Hello`]) carries memory: [`ThinRequest::Bind`]
//!   ties the connection to a session, then each [`ThinRequest::Attach`] frame brings one
//!   sealed memfd as `SCM_RIGHTS`, which the node maps. A session lives while any of its
//!   connections is open; when the thin client closes or dies, its mappings go with it.
//!
//! Memory in a call is named by [`Span`]: bytes inside an attached region travel as
//! `(region, offset, len)` and the node reads or writes its own mapping of them (zero copy);
//! any other bytes ride inline in the frame payload, in the order the spans appear.

use crate::master::{MasterRequest, MasterResponse};
use crate::types::ReplicateConfig;
use serde::{Deserialize, Serialize};
use tidepool_common::ErrorCode;

/// Most bytes one call may carry in its payload (pieces outside shared memory). Larger calls
/// are refused before anything is sent or allocated.
pub const MAX_INLINE: u64 = 4 << 30;

/// Where one piece of a call's memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Span {
    /// `len` bytes at `offset` in region `region` attached on the session's Unix socket.
    Shared {
        /// Region id chosen by the thin client.
        region: u64,
        /// Byte offset inside the region.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes in the frame payload: sent by the thin client for puts; for reads, the
    /// node sends back the part of the piece the object filled.
    Inline {
        /// Length in bytes (the piece's capacity for reads).
        len: u64,
    },
}

impl Span {
    /// Length of the piece.
    pub fn len(&self) -> u64 {
        match *self {
            Span::Shared { len, .. } | Span::Inline { len } => len,
        }
    }

    /// True for an empty piece.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key of a call and its memory pieces, in object order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinItem {
    /// The key.
    pub key: String,
    /// Pieces: gathered for puts, scattered into for reads.
    pub spans: Vec<Span>,
}

/// A request from a thin client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThinRequest {
    /// First message on every TCP connection: version check; `session` joins an existing
    /// session, `None` opens a new one.
    Hello {
        /// Oldest protocol version the thin client speaks.
        version_min: u16,
        /// Newest protocol version the thin client speaks.
        version_max: u16,
        /// Session to join.
        session: Option<u64>,
    },
    /// First message on the Unix socket: this connection carries `session`'s memory.
    Bind {
        /// Session id from `Hello`.
        session: u64,
    },
    /// Unix socket only, with one memfd attached: map it as region `region`.
    Attach {
        /// Region id (unique within the session).
        region: u64,
        /// Size the thin client mapped; must equal the memfd's size.
        size: u64,
    },
    /// Unix socket only: forget region `region` (the thin client freed it).
    Detach {
        /// Region id.
        region: u64,
    },
    /// Store objects (put semantics of contract §3.2); inline spans' bytes follow as payload.
    Put {
        /// Objects, each gathered from its spans.
        items: Vec<ThinItem>,
        /// One config for the batch.
        config: ReplicateConfig,
        /// Upsert: replace readable versions (contract §1.5, W13).
        replace: bool,
    },
    /// Read objects into their spans (scatter). The answer's payload holds the inline spans'
    /// filled bytes.
    Get {
        /// Objects and the pieces to fill.
        items: Vec<ThinItem>,
    },
    /// Read whole objects of at most `limit` bytes each; they come back as payload.
    GetOwned {
        /// Keys.
        keys: Vec<String>,
        /// Largest object accepted (the thin client's local buffer).
        limit: u64,
    },
    /// A metadata call the node forwards to the master with its own session (lookups,
    /// existence, removal, segment descriptions); anything else is refused with -600.
    Master(MasterRequest),
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ThinResponse {
    /// Answer to `Hello`.
    Hello {
        /// Version the node will speak on this connection.
        version: u16,
        /// Node's supported range, for the log on mismatch.
        node_version_min: u16,
        /// Node's supported range, for the log on mismatch.
        node_version_max: u16,
        /// The session this connection belongs to.
        session: u64,
        /// Unix socket for `Bind` / `Attach`.
        ipc_socket: String,
        /// The node's segment name (`get_hostname` of its thin clients).
        hostname: String,
    },
    /// Generic success (`Bind`, `Attach`, `Detach`).
    Done,
    /// One status per item of a `Put`.
    Codes(Vec<i32>),
    /// Answer to `Get`: per item the object size or a code, and per inline span of the
    /// request (in order) how many payload bytes fill it.
    Read {
        /// Per item.
        results: Vec<Result<u64, ErrorCode>>,
        /// Per inline span.
        inline: Vec<u64>,
    },
    /// Answer to `GetOwned`: per key the object size (its bytes follow in the payload, in key
    /// order) or a code.
    Owned(Vec<Result<u64, ErrorCode>>),
    /// The master's answer to a forwarded call.
    Master(MasterResponse),
    /// The whole request failed.
    Error {
        /// The code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
}

impl ThinRequest {
    /// True for the metadata calls a node forwards for its thin clients: they read or remove
    /// objects but never act on the node's own registration, segments or in-flight puts.
    pub fn forwardable(req: &MasterRequest) -> bool {
        matches!(
            req,
            MasterRequest::GetReplicas(_)
                | MasterRequest::Exist(_)
                | MasterRequest::Remove { .. }
                | MasterRequest::RemoveAll { .. }
                | MasterRequest::RemoveByRegex { .. }
                | MasterRequest::DescribeSegments(_)
                | MasterRequest::ListSegments
                | MasterRequest::QueryKey(_)
                | MasterRequest::Stats
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_forwarding_is_limited() {
        let req = ThinRequest::Put {
            items: vec![ThinItem {
                key: "k@1:x y".into(),
                spans: vec![
                    Span::Shared {
                        region: 3,
                        offset: 4096,
                        len: 10,
                    },
                    Span::Inline { len: 5 },
                ],
            }],
            config: ReplicateConfig::default(),
            replace: true,
        };
        let bytes = postcard::to_stdvec(&req).unwrap();
        assert_eq!(postcard::from_bytes::<ThinRequest>(&bytes).unwrap(), req);
        let resp = ThinResponse::Read {
            results: vec![Ok(15), Err(ErrorCode::ObjectNotFound)],
            inline: vec![5, 0],
        };
        let bytes = postcard::to_stdvec(&resp).unwrap();
        assert_eq!(postcard::from_bytes::<ThinResponse>(&bytes).unwrap(), resp);

        assert!(ThinRequest::forwardable(&MasterRequest::Exist(vec![])));
        assert!(!ThinRequest::forwardable(&MasterRequest::Goodbye));
        assert!(!ThinRequest::forwardable(&MasterRequest::Heartbeat));
        assert!(!ThinRequest::forwardable(&MasterRequest::PutRevoke(vec![])));
    }
}
