//! `ReplicateConfig` and its enums (contract §1.6), and their translation to the wire form.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use tidepool_proto::SoftPin;

/// Soft-pin request of a put (§3.5).
#[pyclass(eq, eq_int, module = "tidepool._native")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SoftPinAction {
    /// Keep the current pin state.
    #[pyo3(name = "PRESERVE")]
    Preserve = 0,
    /// Pin (for `soft_pin_ttl_ms`, or the master's default).
    #[pyo3(name = "ENABLE")]
    Enable = 1,
    /// Clear the pin.
    #[pyo3(name = "DISABLE")]
    Disable = 2,
}

/// Tag carried by a put; stored nowhere yet, accepted for compatibility.
#[pyclass(eq, eq_int, module = "tidepool._native")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ObjectDataType {
    #[pyo3(name = "UNKNOWN")]
    Unknown = 0,
    #[pyo3(name = "KVCACHE")]
    KvCache = 1,
    #[pyo3(name = "TENSOR")]
    Tensor = 2,
    #[pyo3(name = "WEIGHT")]
    Weight = 3,
    #[pyo3(name = "SAMPLE")]
    Sample = 4,
    #[pyo3(name = "ACTIVATION")]
    Activation = 5,
    #[pyo3(name = "GRADIENT")]
    Gradient = 6,
    #[pyo3(name = "OPTIMIZER_STATE")]
    OptimizerState = 7,
    #[pyo3(name = "METADATA")]
    Metadata = 8,
    #[pyo3(name = "GENERAL")]
    General = 9,
}

/// Placement and pinning options of a put; every field readable and writable. List fields are
/// copied on read, so callers assign whole lists (as with Mooncake).
#[pyclass(module = "tidepool._native")]
#[derive(Clone, Debug)]
pub(crate) struct ReplicateConfig {
    #[pyo3(get, set)]
    replica_num: u64,
    #[pyo3(get, set)]
    nof_replica_num: u64,
    #[pyo3(get, set)]
    dfs_replica_num: u64,
    #[pyo3(get, set)]
    soft_pin_action: SoftPinAction,
    #[pyo3(get)]
    soft_pin_ttl_ms: Option<u64>,
    #[pyo3(get, set)]
    with_hard_pin: bool,
    #[pyo3(get, set)]
    preferred_segments: Vec<String>,
    #[pyo3(get, set)]
    preferred_segment: String,
    #[pyo3(get, set)]
    preferred_nof_segments: Vec<String>,
    #[pyo3(get, set)]
    prefer_alloc_in_same_node: bool,
    #[pyo3(get, set)]
    data_type: ObjectDataType,
    #[pyo3(get, set)]
    group_ids: Option<Vec<String>>,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        Self {
            replica_num: 1,
            nof_replica_num: 0,
            dfs_replica_num: 0,
            soft_pin_action: SoftPinAction::Preserve,
            soft_pin_ttl_ms: None,
            with_hard_pin: false,
            preferred_segments: Vec::new(),
            preferred_segment: String::new(),
            preferred_nof_segments: Vec::new(),
            prefer_alloc_in_same_node: false,
            data_type: ObjectDataType::Unknown,
            group_ids: None,
        }
    }
}

#[pymethods]
impl ReplicateConfig {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// `None` or an int in `[0, 2**64)`; anything else is a `TypeError` (§1.6).
    #[setter]
    fn set_soft_pin_ttl_ms(&mut self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.soft_pin_ttl_ms = match value {
            None => None,
            Some(v) if v.is_none() => None,
            Some(v) => Some(crate::args::u64_arg(v, "soft_pin_ttl_ms")?),
        };
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "ReplicateConfig(replica_num={}, nof_replica_num={}, dfs_replica_num={}, \
             soft_pin_action={:?}, soft_pin_ttl_ms={:?}, with_hard_pin={}, \
             preferred_segments={:?}, preferred_segment={:?}, preferred_nof_segments={:?}, \
             prefer_alloc_in_same_node={}, data_type={:?}, group_ids={:?})",
            self.replica_num,
            self.nof_replica_num,
            self.dfs_replica_num,
            self.soft_pin_action,
            self.soft_pin_ttl_ms,
            self.with_hard_pin,
            self.preferred_segments,
            self.preferred_segment,
            self.preferred_nof_segments,
            self.prefer_alloc_in_same_node,
            self.data_type,
            self.group_ids,
        )
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}

impl ReplicateConfig {
    /// The wire form for a batch of `keys` keys, or the §2 code that every key of the batch
    /// gets when the config is unusable.
    pub(crate) fn to_proto(&self, keys: usize) -> Result<tidepool_proto::ReplicateConfig, i32> {
        const INVALID: i32 = tidepool_common::ErrorCode::InvalidParams.as_i32();
        if self.nof_replica_num > 0 || self.dfs_replica_num > 0 {
            tracing::warn!("NVMe-oF and DFS replicas are not supported");
            return Err(INVALID);
        }
        if self.replica_num == 0 || self.replica_num > u64::from(u32::MAX) {
            return Err(INVALID);
        }
        if let Some(g) = &self.group_ids
            && g.len() != keys
        {
            return Err(INVALID);
        }
        let soft_pin = match (self.soft_pin_action, self.soft_pin_ttl_ms) {
            (SoftPinAction::Enable, ttl) => SoftPin::Enable { ttl_ms: ttl },
            (_, Some(_)) => return Err(INVALID),
            (SoftPinAction::Preserve, None) => SoftPin::Preserve,
            (SoftPinAction::Disable, None) => SoftPin::Disable,
        };
        let mut preferred = Vec::with_capacity(self.preferred_segments.len() + 1);
        if !self.preferred_segment.is_empty() {
            preferred.push(self.preferred_segment.clone());
        }
        preferred.extend(self.preferred_segments.iter().cloned());
        Ok(tidepool_proto::ReplicateConfig {
            replica_num: self.replica_num as u32,
            soft_pin,
            hard_pin: self.with_hard_pin,
            preferred_segments: preferred,
            prefer_same_node: self.prefer_alloc_in_same_node,
        })
    }
}

/// Converts an optional `config=` argument; a non-`ReplicateConfig` value is a `TypeError`.
pub(crate) fn config_arg(
    obj: Option<&Bound<'_, PyAny>>,
    keys: usize,
) -> PyResult<Result<tidepool_proto::ReplicateConfig, i32>> {
    match obj {
        None => Ok(ReplicateConfig::default().to_proto(keys)),
        Some(o) if o.is_none() => Ok(ReplicateConfig::default().to_proto(keys)),
        Some(o) => {
            let cfg = o
                .downcast::<ReplicateConfig>()
                .map_err(|_| PyTypeError::new_err("config must be a ReplicateConfig"))?;
            Ok(cfg.borrow().to_proto(keys))
        }
    }
}
