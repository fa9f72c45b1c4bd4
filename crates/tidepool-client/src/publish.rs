//! Publishing this client's metadata entries (contract §4.3): `ram/<segment>` (the segment
//! descriptor) and `rpc_meta/<segment>` (the data endpoint), written at setup, checked every
//! [`CHECK_INTERVAL`] and re-written when missing (W6: a restarted metadata server comes back
//! without them), deleted at close. The same logic serves every [`MetadataStore`] (HTTP or
//! etcd); its calls are blocking, so they run on tokio's blocking pool and never on the data
//! path.

use crate::metadata::{self, MetadataStore};
use std::time::Duration;
use tidepool_common::{Error, Result};

/// How often the entries are checked (the contract asks for at most 10 s).
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What the entries describe.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    /// Data endpoint address.
    pub ip: String,
    /// Data endpoint port.
    pub port: u16,
    /// Registered segments as `(name, addr, length)`.
    pub buffers: Vec<(String, u64, u64)>,
}

/// Keeps one client's entries published.
pub(crate) struct Publisher {
    store: MetadataStore,
    ram_key: String,
    rpc_key: String,
    name: String,
}

impl Publisher {
    pub(crate) fn new(store: MetadataStore, segment_name: &str) -> Self {
        Self {
            store,
            ram_key: metadata::ram_key(segment_name),
            rpc_key: metadata::rpc_meta_key(segment_name),
            name: segment_name.to_string(),
        }
    }

    fn values(&self, info: &Info) -> (String, String) {
        (
            metadata::segment_descriptor_json(&self.name, "tcp", &info.buffers, info.port),
            metadata::rpc_meta_json(&info.ip, info.port),
        )
    }

    /// Writes both entries (overwriting stale ones of a dead predecessor, W7). Fails with the
    /// store's code (-900 for HTTP, -1000 for etcd).
    pub(crate) async fn publish(&self, info: Info) -> Result<()> {
        let (ram, rpc) = self.values(&info);
        let (store, ram_key, rpc_key) = (
            self.store.clone(),
            self.ram_key.clone(),
            self.rpc_key.clone(),
        );
        let code = self.store.error_code();
        blocking(move || {
            store.put(&ram_key, ram.as_bytes())?;
            store.put(&rpc_key, rpc.as_bytes())
        })
        .await
        .map_err(|e| Error::new(code, format!("metadata publish failed: {e}")))
    }

    /// Re-writes whichever entry the server lost (W6); failures are logged and retried later.
    pub(crate) async fn ensure(&self, info: Info) {
        let (ram, rpc) = self.values(&info);
        let (store, ram_key, rpc_key) = (
            self.store.clone(),
            self.ram_key.clone(),
            self.rpc_key.clone(),
        );
        let r = blocking(move || {
            for (key, value) in [(&ram_key, ram), (&rpc_key, rpc)] {
                if store.get(key)?.is_none() {
                    tracing::info!(key = %key, "metadata entry missing; publishing it again");
                    store.put(key, value.as_bytes())?;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "metadata check failed");
        }
    }

    /// Deletes both entries (close).
    pub(crate) async fn withdraw(&self) {
        let (store, ram_key, rpc_key) = (
            self.store.clone(),
            self.ram_key.clone(),
            self.rpc_key.clone(),
        );
        let r = blocking(move || {
            store.delete(&ram_key)?;
            store.delete(&rpc_key).map(|_| ())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "metadata withdraw failed");
        }
    }
}

async fn blocking(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("metadata task failed: {e}"))?
}
