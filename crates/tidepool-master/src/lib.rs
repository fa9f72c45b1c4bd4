//! Tidepool master: the metadata and allocation service.
//!
//! # Layout
//! - [`settings`]: every knob, with Mooncake's defaults.
//! - [`state`]: the synchronous heart: clients, segments, objects, allocation, leases, eviction.
//!   No I/O; time comes from a [`tidepool_common::Clock`], so it is tested without sleeping.
//! - [`rpc`]: the TCP RPC server that feeds requests into the state.
//! - [`http_meta`]: the HTTP metadata service (contract §4.3), embeddable in the master.

pub mod admin;
pub mod http_meta;
pub mod rpc;
pub mod settings;
pub mod state;

use parking_lot::Mutex;
use std::sync::Arc;
use tidepool_common::SystemClock;

/// Builds the shared state for a master with these settings; the epoch is the start time in
/// ms, so a restarted master always has a newer epoch than its predecessor.
pub fn new_state(settings: settings::MasterSettings) -> rpc::SharedState {
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    Arc::new(Mutex::new(state::MasterState::new(
        settings,
        SystemClock::shared(),
        epoch,
    )))
}
