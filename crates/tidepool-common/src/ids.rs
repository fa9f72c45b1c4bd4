//! Identifiers. All are plain integers so they are cheap to copy, hash and send.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A client registered with the master; assigned by the master at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// A mounted segment; assigned by the master at mount time, never reused within a master epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentId(pub u64);

/// A fresh random value chosen by a segment owner at every mount, so that a process restarted
/// under the same segment name is never confused with its dead predecessor (contract §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

/// Identity of one stored version of an object: the epoch of the master that allocated it and a
/// sequence number unique within that epoch. Owners record it next to each sealed replica, and a
/// read names it so an owner can refuse bytes that no longer belong to the object (contract §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId {
    /// Master epoch that allocated the object.
    pub epoch: u64,
    /// Sequence number within the epoch.
    pub seq: u64,
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{:x}", self.0)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seg-{}", self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{}", self.epoch, self.seq)
    }
}
