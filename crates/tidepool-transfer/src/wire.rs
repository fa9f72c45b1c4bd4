//! Borrowing encoders for the data-plane requests, so the hot path serializes the caller's
//! ranges and seals without cloning them into an owned `DataRequest`.
//!
//! `WireRequest` must encode byte-for-byte like `tidepool_proto::data::DataRequest` (postcard
//! encodes an enum as its variant index followed by the fields, and a slice like a `Vec`); the
//! variants mirror the first three of `DataRequest` in the same order, pinned by a test.

use serde::Serialize;
use tidepool_common::ObjectId;
use tidepool_proto::data::{Range, Seal};

/// Borrowed twin of the leading variants of `DataRequest`.
#[derive(Serialize)]
pub(crate) enum WireRequest<'a> {
    /// `DataRequest::Write`.
    Write {
        epoch: u64,
        ranges: &'a [Range],
        seals: &'a [Seal],
    },
    /// `DataRequest::Read`.
    Read {
        ranges: &'a [Range],
        expect: &'a [Option<ObjectId>],
    },
    /// `DataRequest::Seal`.
    Seal { epoch: u64, seals: &'a [Seal] },
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_proto::data::DataRequest;

    #[test]
    fn wire_request_encodes_like_data_request() {
        let ranges = vec![
            Range {
                addr: 0x1000,
                len: 7,
            },
            Range {
                addr: u64::MAX,
                len: 1,
            },
        ];
        let seals = vec![Seal {
            key: "k".into(),
            object_id: ObjectId { epoch: 3, seq: 9 },
            addr: 0x1000,
            len: 7,
            flags: 2,
        }];
        let expect = vec![None, Some(ObjectId { epoch: 1, seq: 2 })];
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                postcard::to_stdvec(&WireRequest::Write {
                    epoch: 5,
                    ranges: &ranges,
                    seals: &seals,
                })
                .unwrap(),
                postcard::to_stdvec(&DataRequest::Write {
                    epoch: 5,
                    ranges: ranges.clone(),
                    seals: seals.clone(),
                })
                .unwrap(),
            ),
            (
                postcard::to_stdvec(&WireRequest::Read {
                    ranges: &ranges,
                    expect: &expect,
                })
                .unwrap(),
                postcard::to_stdvec(&DataRequest::Read {
                    ranges: ranges.clone(),
                    expect: expect.clone(),
                })
                .unwrap(),
            ),
            (
                postcard::to_stdvec(&WireRequest::Seal {
                    epoch: 8,
                    seals: &seals,
                })
                .unwrap(),
                postcard::to_stdvec(&DataRequest::Seal {
                    epoch: 8,
                    seals: seals.clone(),
                })
                .unwrap(),
            ),
        ];
        for (a, b) in pairs {
            assert_eq!(a, b);
        }
    }
}
