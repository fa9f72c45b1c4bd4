//! Tidepool master: the metadata and allocation service.
//!
//! # Layout
//! - [`settings`]: every knob, with Mooncake's defaults.
//! - [`state`]: the synchronous heart: clients, segments, objects, allocation, leases, eviction.
//!   No I/O; time comes from a [`tidepool_common::Clock`], so it is tested without sleeping.
//! - [`rpc`]: the TCP RPC server that feeds requests into the state.
//! - [`http_meta`]: the HTTP metadata service (contract §4.3), embeddable in the master.
//! - [`metrics`]: request counters and histograms, Prometheus text, the dashboard history.
//! - [`admin`]: the admin HTTP service (contract §4.4) and the dashboard page.
//! - [`drops`]: removes acknowledged by the segment owners (contract §8).
//!
//! The RPC and admin services share one [`Master`]: the state under its mutex, and the
//! metrics beside it (atomics, so counting never takes the state lock).

pub mod admin;
pub mod drops;
pub mod http_meta;
pub mod metrics;
pub mod rpc;
pub mod settings;
pub mod state;

use parking_lot::Mutex;
use std::sync::Arc;
use tidepool_common::SystemClock;

/// What the RPC server and the admin service share.
///
/// It dereferences to the state mutex, so `shared.lock()` reads as before metrics existed.
pub struct Master {
    state: Mutex<state::MasterState>,
    /// Request metrics; updated without the state lock.
    pub metrics: metrics::Metrics,
    /// Connections to segment owners, for the drops of removes (`drops`).
    owners: drops::OwnerConnections,
}

impl Master {
    /// Wraps a state with fresh metrics.
    pub fn new(state: state::MasterState) -> Self {
        Master {
            state: Mutex::new(state),
            metrics: metrics::Metrics::new(),
            owners: drops::OwnerConnections::default(),
        }
    }
}

impl std::ops::Deref for Master {
    type Target = Mutex<state::MasterState>;
    fn deref(&self) -> &Self::Target {
        &self.state
    }
}

/// Builds the shared state for a master with these settings; the epoch is the start time in
/// ms, so a restarted master always has a newer epoch than its predecessor.
pub fn new_state(settings: settings::MasterSettings) -> rpc::SharedState {
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    Arc::new(Master::new(state::MasterState::new(
        settings,
        SystemClock::shared(),
        epoch,
    )))
}
