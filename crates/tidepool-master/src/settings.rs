//! Master settings: every knob of `tidepool master`, with Mooncake's flag defaults (contract §4.1).
//! The binary fills this from gflags-style flags and `--config_path`; tests build it directly.

use serde::{Deserialize, Serialize};

/// Placement strategy after preferred segments (contract §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AllocationStrategy {
    /// Random start, walk the segment list.
    #[default]
    Random,
    /// Sample segments, prefer the largest free ratio.
    FreeRatioFirst,
    /// Segments on the writer's host first.
    LocalFirst,
}

impl AllocationStrategy {
    /// Parses Mooncake's case-sensitive names; unsupported ones are an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Self::Random),
            "free_ratio_first" => Ok(Self::FreeRatioFirst),
            "local_first" => Ok(Self::LocalFirst),
            "cxl" | "ssd_free_ratio_first" => Err(format!(
                "allocation strategy not supported yet: strategy={s}"
            )),
            _ => Err(format!("unknown allocation strategy: strategy={s}")),
        }
    }
}

/// Settings of the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterSettings {
    /// Read-lease TTL in ms. Default: 10 000.
    pub default_kv_lease_ttl_ms: u64,
    /// Soft-pin TTL when a put asks for a pin without one, ms. Default: 1 800 000.
    pub default_kv_soft_pin_ttl_ms: u64,
    /// Largest soft-pin TTL a put may ask for, ms. Default: 86 400 000.
    pub max_kv_soft_pin_ttl_ms: u64,
    /// Soft-pinned objects may be evicted when nothing else is evictable. Default: true.
    pub allow_evict_soft_pinned_objects: bool,
    /// Proactive eviction starts above this used/capacity ratio; 1.0 disables it. Default: 0.90.
    pub eviction_high_watermark_ratio: f64,
    /// Fraction of capacity freed below the watermark per pass, and by reactive eviction;
    /// 0 disables reactive eviction. Default: 0.05.
    pub eviction_ratio: f64,
    /// A client silent this long is dead, ms. Default: 10 000.
    pub client_ttl_ms: u64,
    /// An in-flight put older than this may be taken over by a new writer, ms. Default: 30 000.
    pub put_start_discard_timeout_ms: u64,
    /// Space of an in-flight put older than this is reclaimed regardless, ms. Default: 600 000.
    pub put_start_release_timeout_ms: u64,
    /// Placement after preferred segments. Default: random.
    pub allocation_strategy: AllocationStrategy,
    /// Namespace for HA keys and metadata prefixes. Default: "mooncake_cluster".
    pub cluster_id: String,
}

impl Default for MasterSettings {
    fn default() -> Self {
        Self {
            default_kv_lease_ttl_ms: 10_000,
            default_kv_soft_pin_ttl_ms: 1_800_000,
            max_kv_soft_pin_ttl_ms: 86_400_000,
            allow_evict_soft_pinned_objects: true,
            eviction_high_watermark_ratio: 0.90,
            eviction_ratio: 0.05,
            client_ttl_ms: 10_000,
            put_start_discard_timeout_ms: 30_000,
            put_start_release_timeout_ms: 600_000,
            allocation_strategy: AllocationStrategy::Random,
            cluster_id: "mooncake_cluster".to_string(),
        }
    }
}

impl MasterSettings {
    /// Checks ranges; the binary exits 1 with this message on failure.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.eviction_ratio) {
            return Err(format!(
                "eviction_ratio must be in [0, 1]: value={}",
                self.eviction_ratio
            ));
        }
        if !(0.0..=1.0).contains(&self.eviction_high_watermark_ratio) {
            return Err(format!(
                "eviction_high_watermark_ratio must be in [0, 1]: value={}",
                self.eviction_high_watermark_ratio
            ));
        }
        if self.client_ttl_ms == 0 {
            return Err("client_ttl must be positive".into());
        }
        let ok = !self.cluster_id.is_empty()
            && self.cluster_id.len() <= 128
            && self
                .cluster_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(format!(
                "cluster_id must match [A-Za-z0-9_.-]{{1,128}}: value={}",
                self.cluster_id
            ));
        }
        Ok(())
    }

    /// Heartbeat period clients must keep: at most a fifth of the TTL, at most 1 s.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        (self.client_ttl_ms / 5).clamp(10, 1000)
    }
}
