//! Tidepool master: the metadata and allocation service.
//!
//! # Layout
//! - [`settings`]: every knob, with Mooncake's defaults.
//! - [`state`]: the synchronous heart: clients, segments, objects, allocation, leases, eviction.
//!   No I/O; time comes from a [`tidepool_common::Clock`], so it is tested without sleeping.
//! - [`rpc`]: the TCP RPC server that feeds requests into the state.
//! - [`http_meta`]: the HTTP metadata service (contract §4.3), embeddable in the master.

pub mod http_meta;
pub mod rpc;
pub mod settings;
pub mod state;
