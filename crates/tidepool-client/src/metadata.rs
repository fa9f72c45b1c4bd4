//! Client side of the metadata service (contract §4.3, §7 W6/W7): which backend the
//! `metadata_server` string names, the key layout (`mooncake/[<cluster>/]ram|rpc_meta/<segment>`),
//! the JSON values published under those keys, a small blocking HTTP client, and
//! [`MetadataStore`], the one get/put/delete interface the publisher uses for every backend.
//!
//! # Layout
//! - [`MetadataBackend`]: `P2PHANDSHAKE` (no service), an `http://` URL, or etcd
//!   (`etcd://a:2379;b:2379` or bare `host:port`, as Mooncake reads it); redis and https are
//!   refused with a message (the caller maps it to -600).
//! - [`MetadataStore`]: the HTTP client or the etcd client ([`crate::etcd`]) behind one
//!   get/put/delete, with the §2 code its failures map to.
//! - [`key_prefix`], [`ram_key`], [`rpc_meta_key`]: Mooncake's key layout, honouring
//!   `MC_METADATA_CLUSTER_ID`.
//! - [`segment_descriptor_json`], [`rpc_meta_json`]: the values; readers (Mooncake's and ours)
//!   ignore unknown fields.
//! - [`MetadataClient`]: blocking (ureq) with 2 s timeouts, because metadata calls sit on the
//!   setup and re-publish paths, never on the data path; the async client runs it inside
//!   `spawn_blocking`. Its `put` recovers from strict Mooncake servers that refuse to
//!   overwrite an `rpc_meta` key left behind by a dead process (W7).

pub use crate::etcd::EtcdClient;
use std::fmt::Write as _;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidepool_common::ErrorCode;

/// Connect and whole-request timeout of every metadata call: a dead metadata server must not
/// stall setup or the W6 re-publish loop for long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest value read back; descriptors are a few KiB, so anything bigger is a broken server.
const MAX_VALUE_BYTES: u64 = 64 << 20;

/// How much of an error body is quoted in a message.
const ERROR_BODY_CHARS: usize = 200;

/// Where segment descriptors and data endpoints are published, parsed from the
/// `metadata_server` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataBackend {
    /// `P2PHANDSHAKE`: no metadata service; peers learn endpoints from the master.
    P2pHandshake,
    /// An HTTP metadata server such as `http://127.0.0.1:8080/metadata`.
    Http {
        /// The URL as given; `?key=<encoded key>` is appended to it per request.
        base_url: String,
    },
    /// An etcd cluster; the same keys and values are stored in it directly, as Mooncake's
    /// etcd plugin does.
    Etcd {
        /// `host:port` of each member, in the order given.
        endpoints: Vec<String>,
    },
}

impl MetadataBackend {
    /// Parses a `metadata_server` value: `P2PHANDSHAKE` (any case), an `http://` URL, or etcd
    /// as `etcd://h:2379[;h2:2379]` or bare `h:2379[;h2:2379]` (Mooncake reads a value without
    /// a scheme as etcd).
    ///
    /// `redis://…`, `https://…` and malformed values are `Err` with a message saying so; the
    /// caller maps it to -600 (`INVALID_PARAMS`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err(
                "metadata_server is empty: use P2PHANDSHAKE or http://host:port/metadata".into(),
            );
        }
        if t.eq_ignore_ascii_case("P2PHANDSHAKE") {
            return Ok(Self::P2pHandshake);
        }
        let scheme = t.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http") => {
                let rest = &t["http://".len()..];
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(format!("metadata_server URL has no host: value={t}"));
                }
                Ok(Self::Http {
                    base_url: t.to_string(),
                })
            }
            Some("etcd") => parse_etcd_endpoints(&t["etcd://".len()..], t),
            Some("https") => Err(format!(
                "https metadata servers are not supported yet (plain http only): value={t}"
            )),
            Some(other) => Err(format!(
                "metadata backend {other} is not supported yet; use etcd://, an http:// \
                 metadata server or P2PHANDSHAKE: value={t}"
            )),
            None => parse_etcd_endpoints(t, t),
        }
    }
}

/// `h:2379;h2:2379` (`,` also separates) into [`MetadataBackend::Etcd`]; every member must be
/// `host:port`. `whole` is the full setting, quoted in errors.
fn parse_etcd_endpoints(list: &str, whole: &str) -> Result<MetadataBackend, String> {
    let mut endpoints = Vec::new();
    for ep in list
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let ok = ep.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "etcd metadata_server member is not host:port: member={ep} value={whole}"
            ));
        }
        endpoints.push(ep.to_string());
    }
    if endpoints.is_empty() {
        return Err(format!(
            "etcd metadata_server names no member (etcd://host:2379[;host2:2379]): value={whole}"
        ));
    }
    Ok(MetadataBackend::Etcd { endpoints })
}

/// The store the entries live in: one get/put/delete over HTTP or etcd, so publishing,
/// re-publishing and withdrawing are written once.
#[derive(Debug, Clone)]
pub enum MetadataStore {
    /// An HTTP metadata server.
    Http(MetadataClient),
    /// An etcd cluster.
    Etcd(EtcdClient),
}

impl MetadataStore {
    /// The store `backend` names; `None` for `P2PHANDSHAKE`.
    pub fn for_backend(backend: &MetadataBackend) -> Option<Self> {
        match backend {
            MetadataBackend::P2pHandshake => None,
            MetadataBackend::Http { base_url } => Some(Self::Http(MetadataClient::new(base_url))),
            MetadataBackend::Etcd { endpoints } => Some(Self::Etcd(EtcdClient::new(endpoints))),
        }
    }

    /// Reads `key`: `Ok(None)` when absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::Http(c) => c.get(key),
            Self::Etcd(c) => c.get(key),
        }
    }

    /// Writes `key`, replacing a stale entry (W7).
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Self::Http(c) => c.put(key, value),
            Self::Etcd(c) => c.put(key, value),
        }
    }

    /// Deletes `key`: `Ok(false)` when it was already absent.
    pub fn delete(&self, key: &str) -> Result<bool, String> {
        match self {
            Self::Http(c) => c.delete(key),
            Self::Etcd(c) => c.delete(key),
        }
    }

    /// The §2 code a failed call of this store maps to: -1000 `ETCD_OPERATION_ERROR` for etcd,
    /// -900 `RPC_FAIL` for an HTTP server.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Http(_) => ErrorCode::RpcFail,
            Self::Etcd(_) => ErrorCode::EtcdOperationError,
        }
    }
}

/// The key prefix: `mooncake/`, or `mooncake/<MC_METADATA_CLUSTER_ID>/` when that variable is
/// set and non-empty.
pub fn key_prefix() -> String {
    key_prefix_for(std::env::var("MC_METADATA_CLUSTER_ID").ok().as_deref())
}

/// [`key_prefix`] for an explicit cluster id (tests avoid touching the process environment).
fn key_prefix_for(cluster: Option<&str>) -> String {
    match cluster.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => format!("mooncake/{c}/"),
        None => "mooncake/".to_string(),
    }
}

/// Key of a segment's descriptor: `<prefix>ram/<segment_name>`.
pub fn ram_key(segment_name: &str) -> String {
    format!("{}ram/{segment_name}", key_prefix())
}

/// Key of a segment owner's data endpoint: `<prefix>rpc_meta/<segment_name>`.
pub fn rpc_meta_key(segment_name: &str) -> String {
    format!("{}rpc_meta/{segment_name}", key_prefix())
}

/// Whether `key` is an `rpc_meta` key, the only kind a strict Mooncake server refuses to
/// overwrite.
fn is_rpc_meta_key(key: &str) -> bool {
    key.starts_with("rpc_meta/") || key.contains("/rpc_meta/")
}

/// The segment descriptor published under [`ram_key`]:
/// `{"name","protocol","buffers":[{"name","addr","length"}],"tcp_data_port","timestamp",
/// "implementation":"tidepool"}`. `buffers` holds `(name, addr, length)` triples.
pub fn segment_descriptor_json(
    name: &str,
    protocol: &str,
    buffers: &[(String, u64, u64)],
    tcp_data_port: u16,
) -> String {
    let buffers: Vec<serde_json::Value> = buffers
        .iter()
        .map(|(n, addr, len)| serde_json::json!({"name": n, "addr": addr, "length": len}))
        .collect();
    serde_json::json!({
        "name": name,
        "protocol": protocol,
        "buffers": buffers,
        "tcp_data_port": tcp_data_port,
        "timestamp": timestamp_now(),
        "implementation": "tidepool",
    })
    .to_string()
}

/// The data endpoint published under [`rpc_meta_key`]: `{"ip_or_host_name", "rpc_port"}`.
pub fn rpc_meta_json(ip: &str, rpc_port: u16) -> String {
    serde_json::json!({"ip_or_host_name": ip, "rpc_port": rpc_port}).to_string()
}

/// Wall-clock time as `YYYY-MM-DD HH:MM:SS.uuuuuu` (UTC), the shape Mooncake writes. Only
/// humans read it, so wall-clock time (not the injectable `Clock`) is right here.
fn timestamp_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(since.as_secs(), since.subsec_micros())
}

fn format_utc(secs: u64, micros: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Percent-encodes a key for the query string: everything but RFC 3986 unreserved characters,
/// as curl's `curl_easy_escape` (Mooncake's client) does, so `/` becomes `%2F`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Blocking client of an HTTP metadata server (§4.3). Only HTTP 200 counts as success.
#[derive(Debug, Clone)]
pub struct MetadataClient {
    base_url: String,
    /// ureq's agent pools connections, so the periodic W6 checks reuse one socket.
    agent: ureq::Agent,
}

impl MetadataClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080/metadata`), with 2 s timeouts.
    pub fn new(base_url: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(TIMEOUT)
            .timeout(TIMEOUT)
            .build();
        Self {
            base_url: base_url.trim().to_string(),
            agent,
        }
    }

    /// The URL requests are sent to (before `?key=`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Reads `key`: `Ok(None)` when the server answers 404.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.send("GET", key, None)? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => Err(failure("get", key, status, &body)),
        }
    }

    /// Writes `key`. When a strict (Mooncake) server answers 400 to the PUT of an `rpc_meta`
    /// key, the stale entry of a dead predecessor is in the way (W7): delete it and put once
    /// more.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self.send("PUT", key, Some(value))? {
            (200, _) => Ok(()),
            (400, body) if is_rpc_meta_key(key) => {
                tracing::info!(
                    key,
                    reason = %String::from_utf8_lossy(truncate(&body)),
                    "metadata server refused to overwrite rpc_meta; deleting and re-putting"
                );
                self.delete(key)?;
                match self.send("PUT", key, Some(value))? {
                    (200, _) => Ok(()),
                    (status, body) => Err(failure("put", key, status, &body)),
                }
            }
            (status, body) => Err(failure("put", key, status, &body)),
        }
    }

    /// Deletes `key`: `Ok(false)` when it was already absent (404).
    pub fn delete(&self, key: &str) -> Result<bool, String> {
        match self.send("DELETE", key, None)? {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(failure("delete", key, status, &body)),
        }
    }

    fn url(&self, key: &str) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}key={}", self.base_url, percent_encode(key))
    }

    /// One request; any HTTP status is an answer, only transport failures are `Err`.
    fn send(&self, method: &str, key: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>), String> {
        let url = self.url(key);
        let req = self.agent.request(method, &url);
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/octet-stream")
                .send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(format!(
                    "metadata server unreachable: method={method} url={url} error={t}"
                ));
            }
        };
        let status = resp.status();
        let mut buf = Vec::new();
        resp.into_reader()
            .take(MAX_VALUE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| {
                format!("metadata response unreadable: method={method} url={url} error={e}")
            })?;
        if buf.len() as u64 > MAX_VALUE_BYTES {
            return Err(format!(
                "metadata response too large: method={method} url={url} limit={MAX_VALUE_BYTES}"
            ));
        }
        Ok((status, buf))
    }
}

fn truncate(body: &[u8]) -> &[u8] {
    &body[..body.len().min(ERROR_BODY_CHARS)]
}

fn failure(op: &str, key: &str, status: u16, body: &[u8]) -> String {
    format!(
        "metadata {op} failed: key={key} status={status} body={:?}",
        String::from_utf8_lossy(truncate(body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// One request as the fake server saw it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        method: String,
        target: String,
        body: Vec<u8>,
    }

    /// A minimal HTTP/1.1 server on a thread: every request is recorded, answered by
    /// `respond`, and its connection closed. The thread lives until the test process ends.
    struct Fake {
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        fn start(respond: impl Fn(&Seen) -> (u16, Vec<u8>) + Send + 'static) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}/metadata", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    if let Some(req) = read_request(&stream) {
                        let (status, body) = respond(&req);
                        log.lock().unwrap().push(req);
                        let mut s = stream;
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(&body);
                    }
                }
            });
            Self { base, seen }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn read_request(stream: &TcpStream) -> Option<Seen> {
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        Some(Seen {
            method,
            target,
            body,
        })
    }

    /// Mooncake's strict server: a key-value map that refuses to overwrite `rpc_meta` keys.
    fn strict_server() -> Fake {
        let map: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::new());
        Fake::start(move |req| {
            let key = req.target.split_once("key=").map(|(_, k)| k.to_string());
            let Some(key) = key else {
                return (400, b"missing key".to_vec());
            };
            let mut map = map.lock().unwrap();
            match req.method.as_str() {
                "GET" => match map.get(&key) {
                    Some(v) => (200, v.clone()),
                    None => (404, b"metadata not found".to_vec()),
                },
                "PUT" if key.contains("rpc_meta") && map.contains_key(&key) => {
                    (400, b"Duplicate rpc_meta key not allowed".to_vec())
                }
                "PUT" => {
                    map.insert(key, req.body.clone());
                    (200, b"metadata updated".to_vec())
                }
                "DELETE" => match map.remove(&key) {
                    Some(_) => (200, b"metadata deleted".to_vec()),
                    None => (404, b"metadata not found".to_vec()),
                },
                _ => (405, Vec::new()),
            }
        })
    }

    #[test]
    fn backend_parsing() {
        assert_eq!(
            MetadataBackend::parse("P2PHANDSHAKE").unwrap(),
            MetadataBackend::P2pHandshake
        );
        assert_eq!(
            MetadataBackend::parse(" p2phandshake ").unwrap(),
            MetadataBackend::P2pHandshake
        );
        assert_eq!(
            MetadataBackend::parse("http://10.0.0.1:8080/metadata").unwrap(),
            MetadataBackend::Http {
                base_url: "http://10.0.0.1:8080/metadata".into()
            }
        );
        let etcd = |eps: &[&str]| MetadataBackend::Etcd {
            endpoints: eps.iter().map(|e| e.to_string()).collect(),
        };
        for (s, eps) in [
            ("etcd://10.0.0.1:2379", &["10.0.0.1:2379"][..]),
            ("ETCD://a:2379;b:2380", &["a:2379", "b:2380"]),
            ("etcd://a:2379; b:2380;", &["a:2379", "b:2380"]),
            ("etcd://a:2379,b:2380", &["a:2379", "b:2380"]),
            ("10.0.0.1:2379", &["10.0.0.1:2379"]),
            ("a:2379;b:2379", &["a:2379", "b:2379"]),
            ("[::1]:2379", &["[::1]:2379"]),
        ] {
            assert_eq!(MetadataBackend::parse(s).unwrap(), etcd(eps), "{s}");
        }
        for bad in [
            "redis://r:6379",
            "https://h/metadata",
            "http://",
            "",
            "etcd://",
            "etcd://;",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:port",
            "etcd://:2379",
            "etcd://a:2379;b",
            "localhost",
            "h:2379/x",
        ] {
            let e = MetadataBackend::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            MetadataBackend::parse("redis://x:6379")
                .unwrap_err()
                .contains("redis")
        );
        assert!(
            MetadataBackend::parse("etcd://a:2379;b")
                .unwrap_err()
                .contains("member=b")
        );
    }

    #[test]
    fn key_layout() {
        assert_eq!(key_prefix_for(None), "mooncake/");
        assert_eq!(key_prefix_for(Some("")), "mooncake/");
        assert_eq!(key_prefix_for(Some("c1")), "mooncake/c1/");
        // The environment is not set by the test runner, so the default layout applies.
        if std::env::var_os("MC_METADATA_CLUSTER_ID").is_none() {
            assert_eq!(ram_key("h:1"), "mooncake/ram/h:1");
            assert_eq!(rpc_meta_key("h:1"), "mooncake/rpc_meta/h:1");
        }
        assert!(is_rpc_meta_key("mooncake/rpc_meta/h:1"));
        assert!(is_rpc_meta_key("mooncake/c1/rpc_meta/h:1"));
        assert!(!is_rpc_meta_key("mooncake/ram/h:1"));
    }

    #[test]
    fn encoding_and_urls() {
        assert_eq!(
            percent_encode("mooncake/ram/user@host:1 x"),
            "mooncake%2Fram%2Fuser%40host%3A1%20x"
        );
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(percent_encode("é"), "%C3%A9");
        let c = MetadataClient::new("http://h:1/metadata");
        assert_eq!(c.url("a/b"), "http://h:1/metadata?key=a%2Fb");
        let c = MetadataClient::new("http://h:1/metadata?ns=x");
        assert_eq!(c.url("a"), "http://h:1/metadata?ns=x&key=a");
    }

    #[test]
    fn json_values() {
        let d: serde_json::Value = serde_json::from_str(&segment_descriptor_json(
            "10.0.0.1:17000",
            "tcp",
            &[("cpu:0".into(), 0x7f00_0000_0000, 4 << 30)],
            17001,
        ))
        .unwrap();
        assert_eq!(d["name"], "10.0.0.1:17000");
        assert_eq!(d["protocol"], "tcp");
        assert_eq!(d["buffers"][0]["name"], "cpu:0");
        assert_eq!(d["buffers"][0]["addr"], 0x7f00_0000_0000u64);
        assert_eq!(d["buffers"][0]["length"], 4u64 << 30);
        assert_eq!(d["tcp_data_port"], 17001);
        assert_eq!(d["implementation"], "tidepool");
        assert_eq!(d["timestamp"].as_str().unwrap().len(), 26);
        let r: serde_json::Value = serde_json::from_str(&rpc_meta_json("10.0.0.1", 17001)).unwrap();
        assert_eq!(
            r,
            serde_json::json!({"ip_or_host_name": "10.0.0.1", "rpc_port": 17001})
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0, 0), "1970-01-01 00:00:00.000000");
        assert_eq!(format_utc(951_782_400, 7), "2000-02-29 00:00:00.000007");
        assert_eq!(
            format_utc(1_735_689_599, 999_999),
            "2024-12-31 23:59:59.999999"
        );
    }

    #[test]
    fn round_trip_against_a_server() {
        let srv = strict_server();
        let c = MetadataClient::new(&srv.base);
        let key = "mooncake/ram/user@host:1";
        assert_eq!(c.get(key).unwrap(), None);
        c.put(key, b"{\"a\":1}").unwrap();
        assert_eq!(c.get(key).unwrap(), Some(b"{\"a\":1}".to_vec()));
        assert!(c.delete(key).unwrap());
        assert!(!c.delete(key).unwrap());
        let seen = srv.seen();
        assert_eq!(seen[1].method, "PUT");
        assert_eq!(
            seen[1].target,
            "/metadata?key=mooncake%2Fram%2Fuser%40host%3A1"
        );
        assert_eq!(seen[1].body, b"{\"a\":1}");
    }

    #[test]
    fn strict_server_rpc_meta_is_deleted_then_put() {
        let srv = strict_server();
        let c = MetadataClient::new(&srv.base);
        let key = "mooncake/rpc_meta/h:1";
        c.put(key, b"old").unwrap();
        // W7: the stale entry of a "dead predecessor" is replaced.
        c.put(key, b"new").unwrap();
        assert_eq!(c.get(key).unwrap(), Some(b"new".to_vec()));
        let methods: Vec<String> = srv.seen().into_iter().map(|s| s.method).collect();
        assert_eq!(methods, ["PUT", "PUT", "DELETE", "PUT", "GET"]);
    }

    #[test]
    fn retry_happens_once_and_only_for_rpc_meta() {
        let srv = Fake::start(|req| match req.method.as_str() {
            "PUT" => (400, b"no".to_vec()),
            _ => (200, Vec::new()),
        });
        let c = MetadataClient::new(&srv.base);
        let e = c.put("mooncake/rpc_meta/h:1", b"v").unwrap_err();
        assert!(e.contains("status=400") && e.contains("rpc_meta"), "{e}");
        let e = c.put("mooncake/ram/h:1", b"v").unwrap_err();
        assert!(e.contains("status=400"), "{e}");
        let methods: Vec<String> = srv.seen().into_iter().map(|s| s.method).collect();
        assert_eq!(methods, ["PUT", "DELETE", "PUT", "PUT"]);
    }

    #[test]
    fn server_errors_and_unreachable_servers_are_err() {
        let srv = Fake::start(|_| (500, b"boom".to_vec()));
        let c = MetadataClient::new(&srv.base);
        assert!(c.get("k").unwrap_err().contains("status=500"));
        assert!(c.delete("k").unwrap_err().contains("boom"));

        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = MetadataClient::new(&format!("http://127.0.0.1:{port}/metadata"));
        assert!(c.get("k").unwrap_err().contains("unreachable"));
    }

    #[test]
    fn a_silent_server_times_out() {
        // Accepts connections but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/metadata", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                held.push(s);
            }
        });
        let c = MetadataClient::new(&base);
        let start = std::time::Instant::now();
        assert!(c.get("k").is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
