//! Blocking client of etcd's v3 API through its JSON gateway (`POST /v3/kv/range|put|
//! deleterange` on the client port, keys and values base64-encoded), which every etcd ≥ 3.4
//! serves by default.
//!
//! Why the gateway and not gRPC: the metadata calls are few (setup, a check every few seconds,
//! close) and already run blocking on tokio's blocking pool, and the gRPC client crates
//! compile etcd's `.proto` files at build time, which would make `protoc` a build dependency
//! of every build (the manylinux wheel included). Keys and values are stored byte for byte, so
//! Mooncake peers reading through gRPC see exactly what we wrote.
//!
//! Like Mooncake's etcd plugin, entries are plain puts (no lease): they are removed at close,
//! and by the master on client death when it is configured to clean up.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connect and whole-request timeout per endpoint: an unreachable etcd must fail setup fast.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest gateway answer read; entries are a few KiB and base64 grows them by a third.
const MAX_RESPONSE_BYTES: u64 = 96 << 20;

/// How much of an error answer is quoted in a message.
const ERROR_BODY_CHARS: usize = 200;

/// Blocking etcd v3 client over the JSON gateway; cheap to clone (clones share the endpoint
/// that answered last).
#[derive(Debug, Clone)]
pub struct EtcdClient {
    endpoints: Arc<Vec<String>>,
    /// Index of the endpoint tried first: the one that answered last, so a dead member costs
    /// one timeout, not one per call.
    preferred: Arc<AtomicUsize>,
    agent: ureq::Agent,
}

impl EtcdClient {
    /// A client for `host:port` endpoints (an `http://` prefix is accepted); calls go to the
    /// first endpoint that answers.
    pub fn new(endpoints: &[String]) -> Self {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let e = e.trim().trim_end_matches('/');
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(TIMEOUT)
            .timeout(TIMEOUT)
            .build();
        Self {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            agent,
        }
    }

    /// The endpoints as URLs (`http://host:port`).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads `key`: `Ok(None)` when etcd has no such key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let v = self.call("range", serde_json::json!({ "key": B64.encode(key) }))?;
        let Some(kv) = v
            .get("kvs")
            .and_then(|k| k.as_array())
            .and_then(|a| a.first())
        else {
            return Ok(None);
        };
        // The gateway omits empty fields, so a key holding "" has no `value`.
        let value = kv.get("value").and_then(|x| x.as_str()).unwrap_or("");
        B64.decode(value).map(Some).map_err(|e| {
            format!("etcd get returned a value that is not base64: key={key} error={e}")
        })
    }

    /// Writes `key` (overwriting whatever is there: a dead predecessor's entry never blocks
    /// setup, W7).
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.call(
            "put",
            serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )
        .map(|_| ())
    }

    /// Deletes `key`: `Ok(false)` when it was already absent.
    pub fn delete(&self, key: &str) -> Result<bool, String> {
        let v = self.call("deleterange", serde_json::json!({ "key": B64.encode(key) }))?;
        // int64 fields travel as JSON strings; zero is omitted.
        let deleted = match v.get("deleted") {
            Some(serde_json::Value::String(s)) => s.parse::<u64>().unwrap_or(0),
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        Ok(deleted > 0)
    }

    /// One KV call, tried on each endpoint in turn from the preferred one; an answer that is
    /// an etcd error is returned at once (another member would say the same).
    fn call(&self, op: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err("etcd has no endpoints".into());
        }
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let payload = body.to_string();
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let url = format!("{}/v3/kv/{op}", self.endpoints[idx]);
            let res = self
                .agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_string(&payload);
            let resp = match res {
                Ok(r) => r,
                Err(ureq::Error::Status(status, r)) => {
                    let body = read_body(r).unwrap_or_default();
                    return Err(format!(
                        "etcd {op} failed: url={url} status={status} body={:?}",
                        String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_CHARS)])
                    ));
                }
                Err(ureq::Error::Transport(t)) => {
                    failures.push(format!("{url}: {t}"));
                    continue;
                }
            };
            self.preferred.store(idx, Ordering::Relaxed);
            let body = read_body(resp)?;
            return serde_json::from_slice(&body)
                .map_err(|e| format!("etcd {op} answer is not JSON: url={url} error={e}"));
        }
        Err(format!(
            "etcd unreachable: op={op} tried={}",
            failures.join("; ")
        ))
    }
}

fn read_body(resp: ureq::Response) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    resp.into_reader()
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("etcd answer unreadable: {e}"))?;
    if buf.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(format!("etcd answer too large: limit={MAX_RESPONSE_BYTES}"));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn endpoints_become_urls() {
        let c = EtcdClient::new(&["a:2379".into(), " http://b:2379/ ".into()]);
        assert_eq!(c.endpoints(), ["http://a:2379", "http://b:2379"]);
    }

    #[test]
    fn unreachable_endpoints_fail_fast_and_name_every_endpoint() {
        let port = |_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let eps: Vec<String> = (0..2).map(port).map(|p| format!("127.0.0.1:{p}")).collect();
        let c = EtcdClient::new(&eps);
        let start = std::time::Instant::now();
        let e = c.get("k").unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(e.contains("unreachable"), "{e}");
        for ep in &eps {
            assert!(e.contains(ep.as_str()), "{e}");
        }
        assert!(EtcdClient::new(&[]).put("k", b"v").is_err());
    }
}
