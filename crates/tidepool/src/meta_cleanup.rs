//! `--enable_metadata_cleanup_on_timeout` against an external metadata service (contract §4.1):
//! when a segment goes away (its client died or left), the master deletes that segment's
//! `ram/` and `rpc_meta/` entries from the service named by `MOONCAKE_TE_META_DATA_SERVER`, or
//! else by the `metadata_server` of the `MOONCAKE_CONFIG_PATH` file (HTTP or etcd). The
//! master-embedded HTTP server cleans its own store and needs none of this.
//!
//! The segment-gone hook runs under the master's state lock, so it only queues the name; a
//! task deletes the entries on the blocking pool, skipping names that are mounted again by
//! then (a client restarted under the same name has already re-published them, W7).

use tidepool_client::metadata::{self, MetadataBackend, MetadataStore};
use tidepool_master::rpc::SharedState;
use tracing::{info, warn};

/// Where cleanup should go: the env variable, else the config file's `metadata_server`;
/// `None` when neither names one. `Err` for a config file that cannot be read.
fn target() -> Result<Option<String>, String> {
    if let Ok(v) = std::env::var("MOONCAKE_TE_META_DATA_SERVER")
        && !v.trim().is_empty()
    {
        return Ok(Some(v.trim().to_string()));
    }
    let Ok(path) = std::env::var("MOONCAKE_CONFIG_PATH") else {
        return Ok(None);
    };
    if path.trim().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read MOONCAKE_CONFIG_PATH: path={path} error={e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("MOONCAKE_CONFIG_PATH is not JSON: path={path} error={e}"))?;
    Ok(v.get("metadata_server")
        .and_then(|m| m.as_str())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty()))
}

/// Installs the cleaner on `state` when a metadata service is configured; logs why not
/// otherwise (a cleanup flag with nowhere to clean must not stop the master).
pub fn install(state: &SharedState) {
    let url = match target() {
        Ok(Some(u)) => u,
        Ok(None) => {
            warn!(
                "--enable_metadata_cleanup_on_timeout: no metadata server configured \
                 (MOONCAKE_TE_META_DATA_SERVER or MOONCAKE_CONFIG_PATH); nothing to clean"
            );
            return;
        }
        Err(e) => {
            warn!("--enable_metadata_cleanup_on_timeout disabled: {e}");
            return;
        }
    };
    let store = match MetadataBackend::parse(&url) {
        Ok(b) => match MetadataStore::for_backend(&b) {
            Some(s) => s,
            None => return, // P2PHANDSHAKE: no entries exist.
        },
        Err(e) => {
            warn!("--enable_metadata_cleanup_on_timeout disabled: {e}");
            return;
        }
    };
    info!(metadata_server = %url, "cleaning metadata entries of segments that go away");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    state.lock().set_segment_gone_hook(move |name| {
        let _ = tx.send(name.to_string());
    });
    let state = state.clone();
    tokio::spawn(async move {
        while let Some(name) = rx.recv().await {
            let back = state
                .lock()
                .list_segments()
                .iter()
                .any(|s| s.spec.name == name);
            if back {
                continue;
            }
            let store = store.clone();
            let r = tokio::task::spawn_blocking(move || {
                store.delete(&metadata::ram_key(&name))?;
                store.delete(&metadata::rpc_meta_key(&name))?;
                Ok::<_, String>(name)
            })
            .await;
            match r {
                Ok(Ok(name)) => {
                    info!(segment = %name, "metadata entries of a gone segment deleted")
                }
                Ok(Err(e)) => warn!(error = %e, "metadata cleanup failed"),
                Err(e) => warn!(error = %e, "metadata cleanup task failed"),
            }
        }
    });
}
