//! Integer error codes shared with Mooncake (contract §2) and the coarse kinds behind them.
//!
//! Python callers branch on the exact integers, so the values are pinned by a table test.

use serde::{Deserialize, Serialize};

/// Declares the code enum, its table of names and the conversion from raw integers in one place,
/// so a code can never be added to one and forgotten in another.
macro_rules! codes {
    ($( $name:ident = $val:expr, $kind:ident, $upper:literal; )*) => {
        /// A Mooncake-compatible status code. `Ok` is 0; every failure is negative.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(into = "i32", try_from = "i32")]
        #[repr(i32)]
        #[allow(missing_docs)]
        pub enum ErrorCode {
            $( $name = $val, )*
        }

        impl ErrorCode {
            /// Every code, in contract order.
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$name, )*];

            /// The integer value Python callers see.
            pub const fn as_i32(self) -> i32 {
                self as i32
            }

            /// Looks a raw integer up; unknown values are `None`.
            pub fn from_i32(v: i32) -> Option<Self> {
                match v {
                    $( $val => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// The coarse kind, which tells a caller what to do about the failure.
            pub const fn kind(self) -> ErrorKind {
                match self {
                    $( ErrorCode::$name => ErrorKind::$kind, )*
                }
            }

            /// Mooncake's upper-case name of the code (`OBJECT_NOT_FOUND`), used in HTTP bodies.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $upper, )*
                }
            }
        }
    };
}

codes! {
    Ok = 0, Ok, "OK";
    InternalError = -1, Internal, "INTERNAL_ERROR";
    BufferOverflow = -10, Invalid, "BUFFER_OVERFLOW";
    ShardIndexOutOfRange = -100, Internal, "SHARD_INDEX_OUT_OF_RANGE";
    SegmentNotFound = -101, NotFound, "SEGMENT_NOT_FOUND";
    SegmentAlreadyExists = -102, AlreadyExists, "SEGMENT_ALREADY_EXISTS";
    ClientNotFound = -103, Unavailable, "CLIENT_NOT_FOUND";
    NoAvailableHandle = -200, NoSpace, "NO_AVAILABLE_HANDLE";
    InvalidVersion = -300, Invalid, "INVALID_VERSION";
    InvalidKey = -400, Invalid, "INVALID_KEY";
    WriteFail = -500, Unavailable, "WRITE_FAIL";
    InvalidParams = -600, Invalid, "INVALID_PARAMS";
    IllegalClient = -601, Invalid, "ILLEGAL_CLIENT";
    InvalidWrite = -700, Invalid, "INVALID_WRITE";
    InvalidRead = -701, Invalid, "INVALID_READ";
    InvalidReplica = -702, Unavailable, "INVALID_REPLICA";
    ReplicaIsNotReady = -703, Busy, "REPLICA_IS_NOT_READY";
    ObjectNotFound = -704, NotFound, "OBJECT_NOT_FOUND";
    ObjectAlreadyExists = -705, AlreadyExists, "OBJECT_ALREADY_EXISTS";
    ObjectHasLease = -706, Busy, "OBJECT_HAS_LEASE";
    LeaseExpired = -707, LeaseExpired, "LEASE_EXPIRED";
    ObjectHasReplicationTask = -708, Busy, "OBJECT_HAS_REPLICATION_TASK";
    ObjectNoReplicationTask = -709, NotFound, "OBJECT_NO_REPLICATION_TASK";
    ReplicaNotFound = -710, NotFound, "REPLICA_NOT_FOUND";
    ReplicaAlreadyExists = -711, AlreadyExists, "REPLICA_ALREADY_EXISTS";
    ReplicaIsGone = -712, NotFound, "REPLICA_IS_GONE";
    ReplicaNotInLocalMemory = -713, NotFound, "REPLICA_NOT_IN_LOCAL_MEMORY";
    ObjectReplicaBusy = -714, Busy, "OBJECT_REPLICA_BUSY";
    TransferFail = -800, Unavailable, "TRANSFER_FAIL";
    ChecksumMismatch = -801, Data, "CHECKSUM_MISMATCH";
    RpcFail = -900, Unavailable, "RPC_FAIL";
    RpcTimeout = -901, Unavailable, "RPC_TIMEOUT";
    EtcdOperationError = -1000, Unavailable, "ETCD_OPERATION_ERROR";
    EtcdKeyNotExist = -1001, NotFound, "ETCD_KEY_NOT_EXIST";
    EtcdTransactionFail = -1002, Unavailable, "ETCD_TRANSACTION_FAIL";
    EtcdCtxCancelled = -1003, Unavailable, "ETCD_CTX_CANCELLED";
    OplogEntryNotFound = -1004, Internal, "OPLOG_ENTRY_NOT_FOUND";
    K8sLeaseOperationError = -1005, Unavailable, "K8S_LEASE_OPERATION_ERROR";
    K8sLeaseNotFound = -1006, NotFound, "K8S_LEASE_NOT_FOUND";
    IncompleteOplogCatchUp = -1007, Unavailable, "INCOMPLETE_OPLOG_CATCH_UP";
    UnavailableInCurrentStatus = -1010, Unavailable, "UNAVAILABLE_IN_CURRENT_STATUS";
    UnavailableInCurrentMode = -1011, Unavailable, "UNAVAILABLE_IN_CURRENT_MODE";
    NotSupported = -1012, Invalid, "NOT_SUPPORTED";
    FileNotFound = -1100, NotFound, "FILE_NOT_FOUND";
    FileOpenFail = -1101, Internal, "FILE_OPEN_FAIL";
    FileReadFail = -1102, Internal, "FILE_READ_FAIL";
    FileWriteFail = -1103, Internal, "FILE_WRITE_FAIL";
    FileInvalidBuffer = -1104, Invalid, "FILE_INVALID_BUFFER";
    FileLockFail = -1105, Internal, "FILE_LOCK_FAIL";
    FileInvalidHandle = -1106, Invalid, "FILE_INVALID_HANDLE";
    BucketNotFound = -1200, NotFound, "BUCKET_NOT_FOUND";
    BucketAlreadyExists = -1201, AlreadyExists, "BUCKET_ALREADY_EXISTS";
    KeysExceedBucketLimit = -1202, Invalid, "KEYS_EXCEED_BUCKET_LIMIT";
    KeysUltraLimit = -1203, Busy, "KEYS_ULTRA_LIMIT";
    UnableOffload = -1300, Invalid, "UNABLE_OFFLOAD";
    UnableOffloading = -1301, Busy, "UNABLE_OFFLOADING";
    TaskNotFound = -1400, NotFound, "TASK_NOT_FOUND";
    TaskPendingLimitExceeded = -1401, Busy, "TASK_PENDING_LIMIT_EXCEEDED";
    JobNotFound = -1402, NotFound, "JOB_NOT_FOUND";
    SerializeUnsupported = -1500, Invalid, "SERIALIZE_UNSUPPORTED";
    SerializeFail = -1501, Internal, "SERIALIZE_FAIL";
    DeserializeFail = -1502, Data, "DESERIALIZE_FAIL";
    PersistentFail = -1503, Internal, "PERSISTENT_FAIL";
    DfsNetworkTimeout = -1600, Unavailable, "DFS_NETWORK_TIMEOUT";
    DfsServiceUnavailable = -1601, Unavailable, "DFS_SERVICE_UNAVAILABLE";
    DfsQuotaExceeded = -1602, NoSpace, "DFS_QUOTA_EXCEEDED";
    DfsPermissionDenied = -1603, Invalid, "DFS_PERMISSION_DENIED";
    DfsStaleHandle = -1604, Unavailable, "DFS_STALE_HANDLE";
    DfsPartialWrite = -1605, Unavailable, "DFS_PARTIAL_WRITE";
    TenantQuotaExceeded = -1700, NoSpace, "TENANT_QUOTA_EXCEEDED";
    TenantNotRegistered = -1701, NotFound, "TENANT_NOT_REGISTERED";
    TenantNotEmpty = -1702, Busy, "TENANT_NOT_EMPTY";
}

impl From<ErrorCode> for i32 {
    fn from(c: ErrorCode) -> i32 {
        c.as_i32()
    }
}

impl TryFrom<i32> for ErrorCode {
    type Error = String;
    fn try_from(v: i32) -> Result<Self, String> {
        // Unknown codes from a newer peer degrade to INTERNAL_ERROR only at the caller's choice.
        ErrorCode::from_i32(v).ok_or_else(|| format!("unknown error code {v}"))
    }
}

/// What a caller should do about a failure; few on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not an error.
    Ok,
    /// The key, segment or client does not exist: do not retry.
    NotFound,
    /// The thing already exists.
    AlreadyExists,
    /// No space: back off, evict or put less.
    NoSpace,
    /// Transient: the peer or master could not be reached; retrying may help.
    Unavailable,
    /// The object is busy (in flight, leased): retry later.
    Busy,
    /// A read finished after its lease ran out; its bytes are invalid.
    LeaseExpired,
    /// The caller's arguments are wrong: fix them.
    Invalid,
    /// Stored bytes are corrupt.
    Data,
    /// A bug or resource failure inside Tidepool.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integers are a compatibility surface: pin the ones callers branch on.
    #[test]
    fn pinned_values() {
        let table = [
            (ErrorCode::Ok, 0, "OK"),
            (ErrorCode::InternalError, -1, "INTERNAL_ERROR"),
            (ErrorCode::NoAvailableHandle, -200, "NO_AVAILABLE_HANDLE"),
            (ErrorCode::InvalidVersion, -300, "INVALID_VERSION"),
            (ErrorCode::InvalidParams, -600, "INVALID_PARAMS"),
            (ErrorCode::ReplicaIsNotReady, -703, "REPLICA_IS_NOT_READY"),
            (ErrorCode::ObjectNotFound, -704, "OBJECT_NOT_FOUND"),
            (
                ErrorCode::ObjectAlreadyExists,
                -705,
                "OBJECT_ALREADY_EXISTS",
            ),
            (ErrorCode::ObjectHasLease, -706, "OBJECT_HAS_LEASE"),
            (ErrorCode::LeaseExpired, -707, "LEASE_EXPIRED"),
            (ErrorCode::TransferFail, -800, "TRANSFER_FAIL"),
            (ErrorCode::RpcFail, -900, "RPC_FAIL"),
            (ErrorCode::RpcTimeout, -901, "RPC_TIMEOUT"),
            (
                ErrorCode::UnavailableInCurrentMode,
                -1011,
                "UNAVAILABLE_IN_CURRENT_MODE",
            ),
            (ErrorCode::TenantNotEmpty, -1702, "TENANT_NOT_EMPTY"),
        ];
        for (code, val, name) in table {
            assert_eq!(code.as_i32(), val);
            assert_eq!(ErrorCode::from_i32(val), Some(code));
            assert_eq!(code.name(), name);
        }
        assert_eq!(ErrorCode::from_i32(-2), None);
        // No two codes share a value.
        let mut vals: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.as_i32()).collect();
        vals.sort_unstable();
        vals.dedup();
        assert_eq!(vals.len(), ErrorCode::ALL.len());
    }
}
