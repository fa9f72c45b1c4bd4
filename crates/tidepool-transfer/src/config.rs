//! Configuration of one transfer engine.

use std::time::Duration;

/// Knobs of a [`crate::TransferEngine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// IP the TCP data server binds and advertises, e.g. `"127.0.0.1"`.
    /// Default: `"127.0.0.1"`.
    pub bind_host: String,
    /// TCP data port; 0 lets the OS pick. Default: 0.
    pub port: u16,
    /// Most pooled TCP connections per peer (W2). Default: 8.
    pub lanes: usize,
    /// Most lanes one large TCP transfer is split over (never more than `lanes`); 0 means
    /// half this host's cores, at least one. Default: 0.
    pub split_lanes: usize,
    /// Connect timeout, so a dead peer fails fast (W18). Default: 1 s.
    pub connect_timeout: Duration,
    /// Time limit of one request on one connection. Default: 30 s.
    pub io_timeout: Duration,
    /// Offer and use the same-host shared-memory path. Default: true.
    pub enable_shm: bool,
    /// Pre-fault segment memory at creation, so first writes do not pay page faults.
    /// Default: true.
    pub prefault: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            bind_host: "127.0.0.1".to_string(),
            port: 0,
            lanes: 8,
            split_lanes: 0,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(30),
            enable_shm: true,
            prefault: true,
        }
    }
}
