//! The master's admin HTTP service on `--metrics_port` (contract §4.4): health, segments, key
//! queries without lease side effects, Prometheus text metrics with Mooncake's names, and the
//! live dashboard page with its JSON feed.
//!
//! Every handler takes the state lock for one short read (or one `remove_all`) and formats
//! outside it, so a scrape never stalls the RPC path for longer than a lookup. The dashboard's
//! assets are compiled into the binary (`include_str!`): the page must work on machines with
//! no internet, so there is no CDN and no build step.

use crate::metrics::{RequestFacts, RpcOp};
use crate::rpc::SharedState;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Instant;
use tidepool_common::ErrorCode;
use tidepool_proto::master::MasterResponse;
use tidepool_proto::types::{ObjectView, ReplicaStatus, SegmentView};

/// The dashboard page (`/`, `/dashboard`).
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// Its script: polls `/api/v1/dashboard` and draws the charts on canvases.
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
/// Its style sheet.
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

/// The admin routes over the shared state.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/assets/dashboard.js", get(dashboard_js))
        .route("/assets/dashboard.css", get(dashboard_css))
        .route("/api/v1/dashboard", get(dashboard_data))
        .route("/api/v1/remove_all", post(remove_all))
        .route("/health", get(health))
        .route("/get_all_segments", get(all_segments))
        .route("/get_segments_detail", get(segments_detail))
        .route("/query_segment", get(query_segment))
        .route("/get_all_keys", get(all_keys))
        .route("/query_key", get(query_key))
        .route("/batch_query_keys", get(batch_query_keys))
        .route("/metrics", get(metrics))
        .route("/metrics/summary", get(summary))
        .with_state(state)
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_json(status: StatusCode, code: ErrorCode) -> Response {
    json_response(
        status,
        &json!({"success": false, "error_code": code.as_i32(), "error_message": code.name()}),
    )
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD_HTML,
    )
}

async fn dashboard_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

async fn dashboard_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok","role":"leader","ha_state":"serving","service_ready":true}"#,
    )
}

async fn all_segments(State(st): State<SharedState>) -> String {
    let mut out = String::new();
    for s in st.lock().list_segments() {
        out.push_str(&s.spec.name);
        out.push('\n');
    }
    out
}

/// One segment as `/get_segments_detail` and the dashboard describe it.
fn segment_json(s: &SegmentView) -> Value {
    let pct = if s.spec.size == 0 {
        0.0
    } else {
        100.0 * s.used as f64 / s.spec.size as f64
    };
    json!({
        "segment_name": s.spec.name,
        "segment_id": s.id.0,
        // A string: ids are 64-bit and JavaScript numbers keep only 53 bits.
        "client_id": format!("{:016x}", s.client.0),
        "size_bytes": s.spec.size,
        "te_endpoint": s.spec.endpoint,
        "protocol": s.spec.protocol,
        "status": "OK",
        "base_address": s.spec.base_addr,
        "host_id": s.spec.host_id,
        "allocator_used_bytes": s.used,
        "allocator_capacity_bytes": s.spec.size,
        "allocator_usage_percent": pct,
    })
}

async fn segments_detail(State(st): State<SharedState>) -> Response {
    let segs = st.lock().list_segments();
    let list: Vec<Value> = segs.iter().map(segment_json).collect();
    json_response(
        StatusCode::OK,
        &json!({"success": true, "total_segments": list.len(), "segments": list}),
    )
}

async fn query_segment(
    State(st): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("segment").filter(|k| !k.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing segment\n").into_response();
    };
    let segs = st.lock().list_segments();
    match segs.iter().find(|s| &s.spec.name == name) {
        Some(s) => format!(
            "{}\nUsed(bytes): {}\nCapacity(bytes): {}\n",
            s.spec.name, s.used, s.spec.size
        )
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("segment not found: {name}\n"),
        )
            .into_response(),
    }
}

async fn all_keys(State(st): State<SharedState>) -> String {
    let mut out = String::new();
    for k in st.lock().all_keys() {
        out.push_str(&k);
        out.push('\n');
    }
    out
}

/// Looks `key` up without a lease: its memory replicas in Mooncake's `query_key` shape, or
/// -704 absent, -703 still being written.
fn lookup(st: &SharedState, key: &str) -> Result<Vec<Value>, ErrorCode> {
    let (view, segs): (ObjectView, Vec<SegmentView>) = {
        let g = st.lock();
        (g.query_key(key)?, g.list_segments())
    };
    if view
        .replicas
        .iter()
        .any(|r| r.status != ReplicaStatus::Complete)
    {
        return Err(ErrorCode::ReplicaIsNotReady);
    }
    Ok(view
        .replicas
        .iter()
        .filter_map(|r| r.memory())
        .map(|m| {
            let ep = segs
                .iter()
                .find(|s| s.id == m.segment)
                .map(|s| s.spec.endpoint.clone())
                .unwrap_or_default();
            json!({"size_": m.len, "buffer_address_": m.addr, "protocol_": "tcp", "transport_endpoint_": ep})
        })
        .collect())
}

async fn query_key(
    State(st): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(key) = q.get("key").filter(|k| !k.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing key").into_response();
    };
    match lookup(&st, key) {
        Ok(data) => json_response(StatusCode::OK, &json!({"success": true, "data": data})),
        Err(code) => error_json(StatusCode::NOT_FOUND, code),
    }
}

async fn batch_query_keys(
    State(st): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(keys) = q.get("keys").filter(|k| !k.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing keys").into_response();
    };
    let mut data = serde_json::Map::new();
    for key in keys.split(',').filter(|k| !k.is_empty()) {
        let entry = match lookup(&st, key) {
            Ok(values) => json!({"ok": true, "values": values}),
            Err(code) => json!({"ok": false, "error": code.name(), "error_code": code.as_i32()}),
        };
        data.insert(key.to_string(), entry);
    }
    json_response(StatusCode::OK, &json!({"success": true, "data": data}))
}

async fn remove_all(
    State(st): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let force = match q.get("force").map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"success": false, "error_code": ErrorCode::InvalidParams.as_i32(),
                        "error_message": format!("force must be true or false, got {other}")}),
            );
        }
    };
    // Tenants do not exist yet (contract §8): `tenant_id` is accepted and ignored.
    let started = Instant::now();
    let (removed, removal) = st.lock().remove_all(force);
    // Answered only once the owners dropped what was removed (contract §8).
    let settled = crate::drops::settle(&st, removal).await;
    let resp = match settled {
        Ok(()) => MasterResponse::Count(removed),
        Err(code) => MasterResponse::Error {
            code,
            message: "removed, but an owner did not acknowledge dropping its replicas".into(),
        },
    };
    // Counted like the RPC form, so `master_remove_all_requests_total` sees every caller.
    st.metrics.record(
        RpcOp::RemoveAll,
        &RequestFacts::default(),
        &resp,
        started.elapsed(),
    );
    match settled {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"success": true, "removed": removed}),
        ),
        Err(code) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"success": false, "removed": removed, "error_code": code.as_i32(),
                    "error_message": "removed, but an owner did not acknowledge dropping its replicas"}),
        ),
    }
}

async fn summary(State(st): State<SharedState>) -> String {
    let s = st.lock().stats();
    let (hits, gets) = st.metrics.lookups(&s);
    format!(
        "role=leader, state=serving, service_ready=true, master={{allocated_bytes={}, capacity_bytes={}, keys={}, soft_pinned_keys={}, clients={}, segments={}, evicted_keys={}, gets={}, hits={}, dead_clients={}}}\n",
        s.allocated_bytes,
        s.capacity_bytes,
        s.key_count,
        s.soft_pin_key_count,
        s.active_clients,
        s.segments,
        s.evicted_keys,
        gets,
        hits,
        s.dead_clients,
    )
}

async fn metrics(State(st): State<SharedState>) -> Response {
    let (s, usage) = {
        let g = st.lock();
        (g.stats(), g.segment_usage())
    };
    let out = st.metrics.render(&s, &usage);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Everything the dashboard shows, in one JSON document: current gauges and counters, the
/// segments, and the rate history of the last minutes.
async fn dashboard_data(State(st): State<SharedState>) -> Response {
    let (s, segs, epoch) = {
        let g = st.lock();
        (g.stats(), g.list_segments(), g.epoch())
    };
    let m = &st.metrics;
    let (hits, gets) = m.lookups(&s);
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            Value::Null
        } else {
            json!(a as f64 / b as f64)
        }
    };
    let (exist_hits, exist_keys) = m.exist_counts();
    let requests: serde_json::Map<String, Value> = RpcOp::ALL
        .iter()
        .map(|&op| (op.name().to_string(), json!(m.requests(op))))
        .collect();
    let latency: Vec<Value> = m
        .latency_summary()
        .into_iter()
        .map(
            |(op, n, p50, p99)| json!({"op": op.name(), "requests": n, "p50_s": p50, "p99_s": p99}),
        )
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": "leader",
        "ha_state": "serving",
        "service_ready": true,
        "epoch": epoch,
        "uptime_s": m.uptime().as_secs(),
        "now_ms": crate::rpc::unix_ms(),
        "key_count": s.key_count,
        "soft_pin_key_count": s.soft_pin_key_count,
        "allocated_bytes": s.allocated_bytes,
        "capacity_bytes": s.capacity_bytes,
        "active_clients": s.active_clients,
        "segment_count": s.segments,
        "evicted_keys": s.evicted_keys,
        "evicted_bytes": s.evicted_bytes,
        "eviction_attempts": s.eviction_attempts,
        "dead_clients": s.dead_clients,
        "revoked_puts": s.revoked_by_liveness,
        "alloc_failures": s.alloc_failures,
        "get_total": gets,
        "get_hits": hits,
        "hit_bytes": m.hit_bytes(),
        "hit_ratio": ratio(hits, gets),
        "exist_hits": exist_hits,
        "exist_keys": exist_keys,
        "exist_hit_ratio": ratio(exist_hits, exist_keys),
        "requests": requests,
        "latency": latency,
        "segments": segs.iter().map(segment_json).collect::<Vec<_>>(),
        "history": m.rates(),
    });
    json_response(StatusCode::OK, &body)
}
