//! Standalone mode (contract §1.5 `setup_dummy`, §4.2 `mooncake_client`): a *thin client*
//! in an inference worker forwards every store call to a *real client* (`tidepool node`) on the
//! same host, which holds the master session, contributes the segment and moves the bytes.
//!
//! # Layout
//! - this file: the process-wide registry of shareable host memory ([`alloc_shared`],
//!   [`free_shared`]), which `MooncakeHostMemAllocator` hands out. Pointers inside it travel
//!   to the node as `(region, offset, len)` instead of bytes.
//! - [`client`]: [`ThinClient`], the worker side: a small pool of TCP connections for calls and
//!   one Unix socket that passes each region's memfd to the node once, on first use.
//! - [`server`]: [`ThinServer`], the node side: sessions, their mapped regions, and the calls
//!   run on the node's own [`crate::Client`].
//!
//! Wire messages are in `tidepool_proto::thin`.

pub mod client;
pub mod server;

pub use client::{ThinClient, ThinConfig};
pub use server::ThinServer;

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tidepool_common::Result;
use tidepool_transfer::SharedMemory;

/// Shareable memory of this process with the id thin clients name it by.
#[derive(Debug)]
pub(crate) struct SharedRegion {
    /// Unique in this process, so every session can use it as the region id.
    pub(crate) id: u64,
    pub(crate) mem: SharedMemory,
}

/// Every block [`alloc_shared`] handed out, by address. A read-mostly lock: each forwarded call
/// looks its pointers up, blocks come and go rarely.
static REGIONS: RwLock<BTreeMap<u64, Arc<SharedRegion>>> = RwLock::new(BTreeMap::new());

static NEXT_REGION: AtomicU64 = AtomicU64::new(1);

/// A fresh region id.
pub(crate) fn next_region_id() -> u64 {
    NEXT_REGION.fetch_add(1, Ordering::Relaxed)
}

/// Allocates `size` zeroed bytes of shareable memory (a sealed memfd, rounded up to a page) and
/// returns their address. Thin clients of this process pass the memory to their node on first
/// use, so calls on it are zero copy.
pub fn alloc_shared(size: u64) -> Result<u64> {
    let mem = SharedMemory::create("tidepool-host-pool", size, false)?;
    let addr = mem.addr();
    let region = Arc::new(SharedRegion {
        id: next_region_id(),
        mem,
    });
    REGIONS.write().insert(addr, region);
    Ok(addr)
}

/// Frees a block from [`alloc_shared`]; false for an address it did not return. Nodes that
/// mapped the block are told to drop their mapping.
pub fn free_shared(addr: u64) -> bool {
    let Some(region) = REGIONS.write().remove(&addr) else {
        return false;
    };
    client::region_freed(region.id);
    true
}

/// The block wholly containing `[addr, addr+len)` and the offset of `addr` in it.
pub(crate) fn find_shared(addr: u64, len: u64) -> Option<(Arc<SharedRegion>, u64)> {
    let map = REGIONS.read();
    let (_, r) = map.range(..=addr).next_back()?;
    let off = r.mem.offset_of(addr, len)?;
    Some((r.clone(), off))
}

/// Every live block (attached eagerly when a thin client starts).
pub(crate) fn all_shared() -> Vec<Arc<SharedRegion>> {
    REGIONS.read().values().cloned().collect()
}
