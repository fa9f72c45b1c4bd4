//! What a store object talks to: its own embedded [`Client`] (`setup`), or a `tidepool node` on
//! the same host through a [`ThinClient`] (`setup_dummy`, standalone mode).
//!
//! Both expose the same method names and signatures, so the store class calls one type and
//! stays unaware of the mode; each method here only dispatches.

use std::time::Instant;
use tidepool_client::Client;
use tidepool_client::thin::ThinClient;
use tidepool_common::Result;
use tidepool_proto::master::{MasterRequest, MasterResponse};
use tidepool_proto::{ObjectView, ReplicateConfig};

/// The client behind a set-up store. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Backend {
    /// This process holds the master session and the segment.
    Embedded(Client),
    /// Calls run in a `tidepool node`; this process shares memory with it.
    Thin(ThinClient),
}

/// Calls the same method on whichever client is inside.
macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Backend::Embedded($c) => $call,
            Backend::Thin($c) => $call,
        }
    };
}

impl Backend {
    pub(crate) fn hostname(&self) -> &str {
        dispatch!(self, c => c.hostname())
    }

    pub(crate) fn healthy(&self) -> bool {
        dispatch!(self, c => c.healthy())
    }

    pub(crate) async fn close(&self) -> Result<()> {
        dispatch!(self, c => c.close().await)
    }

    pub(crate) async fn put_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
    ) -> Vec<Result<()>> {
        dispatch!(self, c => c.put_parts_batch(items, cfg).await)
    }

    /// Put (`replace == false`) or upsert of one object.
    pub(crate) async fn store(
        &self,
        key: &str,
        value: &[u8],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Result<()> {
        dispatch!(self, c => c.store(key, value, cfg, replace).await)
    }

    /// Put or upsert of gathered objects.
    pub(crate) async fn store_parts_batch(
        &self,
        items: &[(&str, &[&[u8]])],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Vec<Result<()>> {
        dispatch!(self, c => c.store_parts_batch(items, cfg, replace).await)
    }

    pub(crate) async fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        dispatch!(self, c => c.get_into(key, buf).await)
    }

    pub(crate) async fn batch_get_into(
        &self,
        keys: &[&str],
        bufs: &mut [&mut [u8]],
    ) -> Vec<Result<u64>> {
        dispatch!(self, c => c.batch_get_into(keys, bufs).await)
    }

    pub(crate) async fn batch_get_into_parts(
        &self,
        keys: &[&str],
        bufs: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        dispatch!(self, c => c.batch_get_into_parts(keys, bufs).await)
    }

    pub(crate) async fn batch_get_owned(&self, keys: &[&str], limit: u64) -> Vec<Result<Vec<u8>>> {
        dispatch!(self, c => c.batch_get_owned(keys, limit).await)
    }

    pub(crate) async fn lookup(&self, keys: &[&str]) -> Vec<Result<ObjectView>> {
        dispatch!(self, c => c.lookup(keys).await)
    }

    pub(crate) async fn lookup_timed(&self, keys: &[&str]) -> (Vec<Result<ObjectView>>, Instant) {
        dispatch!(self, c => c.lookup_timed(keys).await)
    }

    pub(crate) async fn read_looked_up(
        &self,
        keys: &[&str],
        views: Vec<Result<ObjectView>>,
        sent: Instant,
        pieces: &mut [Vec<&mut [u8]>],
    ) -> Vec<Result<u64>> {
        dispatch!(self, c => c.read_looked_up(keys, views, sent, pieces).await)
    }

    pub(crate) async fn batch_exist(&self, keys: &[&str]) -> Vec<i32> {
        dispatch!(self, c => c.batch_exist(keys).await)
    }

    pub(crate) async fn batch_remove(&self, keys: &[&str], force: bool) -> Vec<i32> {
        dispatch!(self, c => c.batch_remove(keys, force).await)
    }

    pub(crate) async fn remove_all(&self, force: bool) -> Result<u64> {
        dispatch!(self, c => c.remove_all(force).await)
    }

    pub(crate) async fn raw(&self, req: MasterRequest) -> Result<MasterResponse> {
        dispatch!(self, c => c.raw(req).await)
    }

    /// `register_buffer`: the transfer engine's registry, or the thin client's bookkeeping.
    pub(crate) fn register_memory(&self, addr: u64, len: u64) -> Result<()> {
        match self {
            Backend::Embedded(c) => c.engine().register_memory(addr, len),
            Backend::Thin(t) => t.register_memory(addr, len),
        }
    }

    pub(crate) fn unregister_memory(&self, addr: u64) -> Result<()> {
        match self {
            Backend::Embedded(c) => c.engine().unregister_memory(addr),
            Backend::Thin(t) => t.unregister_memory(addr),
        }
    }
}
