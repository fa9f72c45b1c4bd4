//! The master's admin HTTP service on `--metrics_port` (contract §4.4): health, segments, key
//! queries without lease side effects, and Prometheus text metrics with Mooncake's names.

use crate::rpc::SharedState;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The admin routes over the shared state.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/get_all_segments", get(all_segments))
        .route("/get_all_keys", get(all_keys))
        .route("/query_key", get(query_key))
        .route("/metrics", get(metrics))
        .route("/metrics/summary", get(summary))
        .with_state(state)
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

async fn all_keys(State(st): State<SharedState>) -> String {
    let mut out = String::new();
    for k in st.lock().all_keys() {
        out.push_str(&k);
        out.push('\n');
    }
    out
}

async fn query_key(
    State(st): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(key) = q.get("key").filter(|k| !k.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing key").into_response();
    };
    let view = st.lock().query_key(key);
    match view {
        Ok(v) => {
            let segs = st.lock().list_segments();
            let data: Vec<serde_json::Value> = v
                .replicas
                .iter()
                .filter_map(|r| r.memory())
                .map(|m| {
                    let ep = segs.iter().find(|s| s.id == m.segment).map(|s| s.spec.endpoint.clone()).unwrap_or_default();
                    serde_json::json!({"size_": m.len, "buffer_address_": m.addr, "protocol_": "tcp", "transport_endpoint_": ep})
                })
                .collect();
            ([(header::CONTENT_TYPE, "application/json")], serde_json::json!({"success": true, "data": data}).to_string())
                .into_response()
        }
        Err(code) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"success": false, "error_code": code.as_i32(), "error_message": code.name()}).to_string(),
        )
            .into_response(),
    }
}

async fn summary(State(st): State<SharedState>) -> String {
    let s = st.lock().stats();
    format!(
        "role=leader, state=serving, service_ready=true, master={{allocated_bytes={}, capacity_bytes={}, keys={}, clients={}, segments={}, evicted_keys={}, gets={}, hits={}}}\n",
        s.allocated_bytes,
        s.capacity_bytes,
        s.key_count,
        s.active_clients,
        s.segments,
        s.evicted_keys,
        s.get_total,
        s.get_hits
    )
}

async fn metrics(State(st): State<SharedState>) -> Response {
    let (s, usage) = {
        let g = st.lock();
        (g.stats(), g.segment_usage())
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "master_allocated_bytes",
        "Bytes allocated over all segments.",
        s.allocated_bytes,
    );
    gauge(
        "master_total_capacity_bytes",
        "Capacity over all segments.",
        s.capacity_bytes,
    );
    gauge(
        "master_key_count",
        "Objects known to the master.",
        s.key_count,
    );
    gauge(
        "master_soft_pin_key_count",
        "Soft-pinned objects.",
        s.soft_pin_key_count,
    );
    gauge("master_active_clients", "Live clients.", s.active_clients);
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "master_attempted_evictions_total",
        "Eviction passes attempted.",
        s.eviction_attempts,
    );
    counter(
        "master_successful_evictions_total",
        "Eviction passes that freed space.",
        s.eviction_successes,
    );
    counter(
        "master_evicted_key_count",
        "Objects evicted.",
        s.evicted_keys,
    );
    counter(
        "master_evicted_size_bytes",
        "Bytes evicted.",
        s.evicted_bytes,
    );
    counter(
        "master_put_start_partial_allocations_total",
        "Puts with fewer replicas than asked.",
        s.partial_allocations,
    );
    counter(
        "master_put_start_alloc_failures_total",
        "Puts refused for lack of space.",
        s.alloc_failures,
    );
    counter(
        "tidepool_revoked_puts_by_liveness_total",
        "In-flight puts revoked after writer death or close.",
        s.revoked_by_liveness,
    );
    counter(
        "tidepool_dead_clients_total",
        "Clients declared dead.",
        s.dead_clients,
    );
    counter(
        "valid_get_nums_",
        "Lookups that found the object.",
        s.get_hits,
    );
    counter("total_get_nums_", "Lookups in total.", s.get_total);
    let _ = writeln!(
        out,
        "# HELP segment_allocated_bytes Bytes allocated per segment.\n# TYPE segment_allocated_bytes gauge"
    );
    for (name, used, _) in &usage {
        let _ = writeln!(
            out,
            "segment_allocated_bytes{{segment=\"{}\"}} {used}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP segment_total_capacity_bytes Capacity per segment.\n# TYPE segment_total_capacity_bytes gauge"
    );
    for (name, _, cap) in &usage {
        let _ = writeln!(
            out,
            "segment_total_capacity_bytes{{segment=\"{}\"}} {cap}",
            escape(name)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
