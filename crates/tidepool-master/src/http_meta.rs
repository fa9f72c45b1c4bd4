//! HTTP metadata service (contract §4.3): the key/value store that Mooncake's transfer engine
//! uses to publish segment descriptors (`mooncake/ram/<segment>`) and data endpoints
//! (`mooncake/rpc_meta/<segment>`).
//!
//! # Layout
//! - [`MetadataStore`]: the in-memory map, shared (cheap `Clone`) between the HTTP handlers and
//!   the master, which calls [`MetadataStore::remove_segment_entries`] when a client dies.
//! - [`router`]: the axum routes, `GET/PUT/DELETE /metadata?key=K` and `GET /health`.
//! - [`serve`]: runs the router on a bound listener until a shutdown future resolves, so the
//!   standalone `mooncake_http_metadata_server`, the master-embedded server and tests all share
//!   one entry point (tests bind `127.0.0.1:0`).
//!
//! Responses (status codes and bodies) follow Mooncake's server byte for byte, with one
//! deliberate difference (W7): a re-PUT of an existing `rpc_meta` key overwrites it and answers
//! 200, so a process restarted after `kill -9` under the same name is never locked out by the
//! stale entry of its dead predecessor.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::RwLock;

/// Largest value accepted by `PUT`. Segment descriptors are a few KiB even with thousands of
/// registered buffers; the bound only stops a misbehaving client from exhausting memory
/// (axum's default of 2 MiB is lifted because large RDMA registrations can approach it).
const MAX_VALUE_BYTES: usize = 64 << 20;

/// Every key the Mooncake layout defines starts with this (contract §4.3).
const ROOT_PREFIX: &str = "mooncake/";

/// The in-memory metadata map: key → value bytes, shared by every clone.
///
/// A `parking_lot::RwLock` (not a tokio lock) because no lock is held across an `.await`;
/// reads dominate (peers resolve descriptors), so readers do not serialize.
#[derive(Debug, Clone, Default)]
pub struct MetadataStore {
    inner: Arc<RwLock<HashMap<String, Vec<u8>>>>,
}

impl MetadataStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a copy of the value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.read().get(key).cloned()
    }

    /// Stores `value` under `key`, replacing any previous value (including `rpc_meta` keys: W7).
    pub fn put(&self, key: &str, value: Vec<u8>) {
        self.inner.write().insert(key.to_string(), value);
    }

    /// Removes `key`; returns whether it was present.
    pub fn delete(&self, key: &str) -> bool {
        self.inner.write().remove(key).is_some()
    }

    /// Every key currently stored, sorted so listings and tests are deterministic.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.inner.read().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.read().is_empty()
    }

    /// Deletes the `ram/<segment_name>` and `rpc_meta/<segment_name>` entries of a segment under
    /// every prefix a client may have used: `mooncake/` and `mooncake/<cluster>/` (the latter
    /// when the client ran with `MC_METADATA_CLUSTER_ID`). Called when the master declares the
    /// segment's owner dead, so peers stop resolving a vanished endpoint.
    pub fn remove_segment_entries(&self, segment_name: &str) {
        let ram = format!("ram/{segment_name}");
        let rpc = format!("rpc_meta/{segment_name}");
        // A scan rather than point deletes: the cluster ids clients used are not known here.
        // This runs only on client death, so O(entries) is fine.
        self.inner
            .write()
            .retain(|key, _| !(is_segment_key(key, &ram) || is_segment_key(key, &rpc)));
    }
}

/// Whether `key` is `mooncake/<tail>` or `mooncake/<cluster>/<tail>` with a one-component
/// cluster id (cluster ids never contain `/`).
fn is_segment_key(key: &str, tail: &str) -> bool {
    let Some(head) = key.strip_suffix(tail) else {
        return false;
    };
    let Some(rest) = head.strip_prefix(ROOT_PREFIX) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    match rest.strip_suffix('/') {
        Some(cluster) => !cluster.is_empty() && !cluster.contains('/'),
        None => false,
    }
}

/// The routes of the metadata service, ready to be served or merged into a larger router.
///
/// Methods other than GET/PUT/DELETE on `/metadata` get axum's 405 (with an `Allow` header).
pub fn router(store: MetadataStore) -> Router {
    Router::new()
        .route(
            "/metadata",
            get(get_metadata).put(put_metadata).delete(delete_metadata),
        )
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_VALUE_BYTES))
        .with_state(store)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: MetadataStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http metadata server listening");
    }
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A plain-text response, the shape of every non-GET answer of Mooncake's server.
fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The decoded `key` query parameter, if present and non-empty.
///
/// `Query` percent-decodes, so `mooncake%2Fram%2Fhost%3A1` arrives as `mooncake/ram/host:1`.
fn key_of(query: &HashMap<String, String>) -> Option<&str> {
    query
        .get("key")
        .map(String::as_str)
        .filter(|k| !k.is_empty())
}

async fn get_metadata(
    State(store): State<MetadataStore>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(key) = key_of(&query) else {
        return text(StatusCode::BAD_REQUEST, "missing key");
    };
    match store.get(key) {
        // Verbatim bytes; values are JSON in practice, but clients must not be second-guessed.
        Some(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            value,
        )
            .into_response(),
        None => text(StatusCode::NOT_FOUND, "metadata not found"),
    }
}

async fn put_metadata(
    State(store): State<MetadataStore>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(key) = key_of(&query) else {
        return text(StatusCode::BAD_REQUEST, "missing key");
    };
    // W7: overwrite unconditionally, including `rpc_meta` keys Mooncake would reject.
    store.put(key, body.to_vec());
    text(StatusCode::OK, "metadata updated")
}

async fn delete_metadata(
    State(store): State<MetadataStore>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(key) = key_of(&query) else {
        return text(StatusCode::BAD_REQUEST, "missing key");
    };
    if store.delete(key) {
        text(StatusCode::OK, "metadata deleted")
    } else {
        text(StatusCode::NOT_FOUND, "metadata not found")
    }
}

async fn health() -> Response {
    text(StatusCode::OK, "OK")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::SocketAddr;

    /// A running server on an ephemeral port; dropping `stop` shuts it down.
    struct TestServer {
        addr: SocketAddr,
        store: MetadataStore,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl TestServer {
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let store = MetadataStore::new();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, store.clone(), async move {
                let _ = rx.await;
            }));
            Self {
                addr,
                store,
                stop: Some(tx),
                task,
            }
        }

        fn url(&self, path_and_query: &str) -> String {
            format!("http://{}{}", self.addr, path_and_query)
        }

        async fn shutdown(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            self.task.await.unwrap().unwrap();
        }
    }

    /// Issues one request with a blocking client (off the runtime) and returns
    /// (status, body bytes); 4xx/5xx are answers here, not errors.
    async fn call(method: &str, url: String, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        let method = method.to_string();
        tokio::task::spawn_blocking(move || {
            let req = ureq::request(&method, &url);
            let res = match body {
                Some(b) => req.send_bytes(&b),
                None => req.call(),
            };
            let resp = match res {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("transport error: {e}"),
            };
            let status = resp.status();
            let mut out = Vec::new();
            resp.into_reader().read_to_end(&mut out).unwrap();
            (status, out)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_get_delete_round_trip_with_encoded_key() {
        let srv = TestServer::start().await;
        // `/`, `@` and `:` all percent-encoded, as Mooncake's curl client sends them.
        let enc = "mooncake%2Fram%2Fuser%40host%3A12345";
        let key = "mooncake/ram/user@host:12345";
        let body = br#"{"name":"user@host:12345","buffers":[]}"#.to_vec();

        let (s, b) = call("GET", srv.url(&format!("/metadata?key={enc}")), None).await;
        assert_eq!((s, b.as_slice()), (404, &b"metadata not found"[..]));

        let (s, b) = call(
            "PUT",
            srv.url(&format!("/metadata?key={enc}")),
            Some(body.clone()),
        )
        .await;
        assert_eq!((s, b.as_slice()), (200, &b"metadata updated"[..]));
        assert_eq!(srv.store.get(key), Some(body.clone()));

        let (s, b) = call("GET", srv.url(&format!("/metadata?key={enc}")), None).await;
        assert_eq!((s, b), (200, body));

        let (s, b) = call("DELETE", srv.url(&format!("/metadata?key={enc}")), None).await;
        assert_eq!((s, b.as_slice()), (200, &b"metadata deleted"[..]));
        let (s, _) = call("DELETE", srv.url(&format!("/metadata?key={enc}")), None).await;
        assert_eq!(s, 404);
        assert!(srv.store.is_empty());
        srv.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn binary_bodies_are_stored_verbatim() {
        let srv = TestServer::start().await;
        let body: Vec<u8> = (0..=255u8).chain([0, 0, 0xff]).collect();
        let (s, _) = call("PUT", srv.url("/metadata?key=bin"), Some(body.clone())).await;
        assert_eq!(s, 200);
        let (s, b) = call("GET", srv.url("/metadata?key=bin"), None).await;
        assert_eq!((s, b), (200, body));
        // An empty body is a legal value too.
        let (s, _) = call("PUT", srv.url("/metadata?key=empty"), Some(Vec::new())).await;
        assert_eq!(s, 200);
        let (s, b) = call("GET", srv.url("/metadata?key=empty"), None).await;
        assert_eq!((s, b.len()), (200, 0));
        srv.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rpc_meta_re_put_overwrites() {
        let srv = TestServer::start().await;
        let url = srv.url("/metadata?key=mooncake%2Frpc_meta%2Fhost%3A1");
        let old = br#"{"ip_or_host_name":"10.0.0.1","rpc_port":1}"#.to_vec();
        let new = br#"{"ip_or_host_name":"10.0.0.1","rpc_port":2}"#.to_vec();
        assert_eq!(call("PUT", url.clone(), Some(old)).await.0, 200);
        // W7: Mooncake answers 400 "Duplicate rpc_meta key not allowed"; tidepool overwrites.
        let (s, b) = call("PUT", url.clone(), Some(new.clone())).await;
        assert_eq!((s, b.as_slice()), (200, &b"metadata updated"[..]));
        assert_eq!(call("GET", url, None).await, (200, new));
        srv.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_or_empty_key_is_400() {
        let srv = TestServer::start().await;
        for q in ["/metadata", "/metadata?key=", "/metadata?other=x"] {
            assert_eq!(call("GET", srv.url(q), None).await.0, 400, "GET {q}");
            assert_eq!(
                call("PUT", srv.url(q), Some(b"v".to_vec())).await.0,
                400,
                "PUT {q}"
            );
            assert_eq!(call("DELETE", srv.url(q), None).await.0, 400, "DELETE {q}");
        }
        assert!(srv.store.is_empty());
        srv.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_methods_are_405_and_health_is_ok() {
        let srv = TestServer::start().await;
        for m in ["POST", "PATCH"] {
            let (s, _) = call(m, srv.url("/metadata?key=a"), Some(b"v".to_vec())).await;
            assert_eq!(s, 405, "{m}");
        }
        assert!(srv.store.is_empty());
        let (s, b) = call("GET", srv.url("/health"), None).await;
        assert_eq!((s, b.as_slice()), (200, &b"OK"[..]));
        srv.shutdown().await;
    }

    #[test]
    fn remove_segment_entries_covers_every_prefix() {
        let store = MetadataStore::new();
        let seg = "10.0.0.1:12345";
        for key in [
            format!("mooncake/ram/{seg}"),
            format!("mooncake/rpc_meta/{seg}"),
            format!("mooncake/cluster-a/ram/{seg}"),
            format!("mooncake/cluster-a/rpc_meta/{seg}"),
        ] {
            store.put(&key, b"x".to_vec());
        }
        let keep = [
            "mooncake/ram/10.0.0.1:1234".to_string(),
            "mooncake/ram/10.0.0.1:123456".to_string(),
            format!("mooncake/ram/other/{seg}"),
            format!("mooncake/a/b/ram/{seg}"),
            format!("other/ram/{seg}"),
            format!("ram/{seg}"),
            format!("mooncake/ram/{seg}/x"),
            "mooncake/ram/10.0.0.2:12345".to_string(),
        ];
        for key in &keep {
            store.put(key, b"y".to_vec());
        }
        store.remove_segment_entries(seg);
        let mut want: Vec<String> = keep.to_vec();
        want.sort();
        assert_eq!(store.keys(), want);
    }

    #[test]
    fn store_basics() {
        let store = MetadataStore::new();
        assert!(store.get("a").is_none());
        store.put("a", b"1".to_vec());
        store.clone().put("a", b"2".to_vec());
        assert_eq!(store.get("a"), Some(b"2".to_vec()));
        assert_eq!(store.len(), 1);
        assert!(store.delete("a"));
        assert!(!store.delete("a"));
    }
}
