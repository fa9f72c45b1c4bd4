//! Python binding of the Tidepool client, loaded as `tidepool._native`.
//!
//! Thin on purpose: argument conversion ([`args`]), one tokio runtime for the process
//! ([`runtime`]), and errors turned into Mooncake's integer codes (contract §2). The store
//! class ([`store::Store`]) follows Mooncake's return conventions method by method, so the
//! `mooncake` compatibility package only adds `setup` argument parsing on top (in Python).
//! A store runs on its own client or, after `setup_dummy`, on a `tidepool node` of the same
//! host ([`backend`]).
//! Every blocking call releases the GIL.

mod args;
mod backend;
mod config;
mod device;
mod objects;
mod store;

use pyo3::prelude::*;
use std::sync::OnceLock;

/// The one runtime of the process; built on first use so importing the module starts nothing.
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tidepool-py")
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot start the tokio runtime"))
            .ok()
    })
    .as_ref()
}

/// Parses a size string of the contract's grammar (§5.2), e.g. `"1.5 GB"`; `ValueError` when
/// it does not parse.
#[pyfunction]
fn parse_size(text: &str) -> PyResult<u64> {
    tidepool_common::parse_size(text)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// Parses a boolean of the contract's grammar (§5.2); `ValueError` when it does not parse.
#[pyfunction]
fn parse_bool(text: &str) -> PyResult<bool> {
    tidepool_common::parse_bool(text)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// The name of a §2 error code (`-704` → `"OBJECT_NOT_FOUND"`), `None` for unknown values.
#[pyfunction]
fn error_name(code: i32) -> Option<&'static str> {
    tidepool_common::ErrorCode::from_i32(code).map(|c| c.name())
}

/// Sends the module's `tracing` events (the reasons behind error codes, such as why a `setup`
/// returned -900) to stderr when `TIDEPOOL_PY_LOG` holds a filter (`warn`, `tidepool=debug`,
/// ...). Off by default: a host application (vLLM, SGLang) owns its stderr and may install its
/// own subscriber, which `try_init` leaves in place. Not `TIDEPOOL_LOG`, which the `tidepool`
/// binaries started from Python (console scripts, test fixtures) read for themselves.
fn init_logging() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_PY_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_class::<store::Store>()?;
    m.add_class::<config::ReplicateConfig>()?;
    m.add_class::<config::SoftPinAction>()?;
    m.add_class::<config::ObjectDataType>()?;
    m.add_class::<objects::ReplicaStatus>()?;
    m.add_class::<objects::ReplicaDescriptor>()?;
    m.add_class::<objects::MemoryDescriptor>()?;
    m.add_class::<objects::DiskDescriptor>()?;
    m.add_class::<objects::Descriptor>()?;
    m.add_class::<objects::BufferHandle>()?;
    m.add_class::<objects::HostMemAllocator>()?;
    m.add_function(wrap_pyfunction!(parse_size, m)?)?;
    m.add_function(wrap_pyfunction!(parse_bool, m)?)?;
    m.add_function(wrap_pyfunction!(error_name, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
