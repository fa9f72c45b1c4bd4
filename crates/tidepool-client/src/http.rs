//! The client HTTP endpoint (contract §4.5), served only where a client enables it
//! (`enable_client_http_server`, `tidepool node --enable_http_server`): `/health` with the
//! `health_check` code, `/metrics` (Prometheus text) and `/metrics/summary`; both metrics
//! routes answer 503 when client metrics are off (`MC_STORE_CLIENT_METRIC=0`).

use crate::Client;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

/// Whether client metrics are on (`MC_STORE_CLIENT_METRIC`, default 1).
fn metrics_enabled() -> bool {
    std::env::var("MC_STORE_CLIENT_METRIC")
        .map(|v| tidepool_common::parse_bool(&v).unwrap_or(true))
        .unwrap_or(true)
}

/// The routes over a client.
pub fn router(client: Client) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/metrics/summary", get(summary))
        .with_state(client)
}

/// Serves the routes on `listener` until the client closes.
pub async fn serve(listener: TcpListener, client: Client) {
    let mut stop = client.inner.stop.subscribe();
    let _ = axum::serve(listener, router(client))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

async fn health(State(c): State<Client>) -> Response {
    let (status, code, http) = if c.healthy() {
        ("healthy", 0, StatusCode::OK)
    } else {
        ("master_unreachable", 2, StatusCode::SERVICE_UNAVAILABLE)
    };
    (
        http,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"{status}","code":{code}}}"#),
    )
        .into_response()
}

async fn metrics(State(c): State<Client>) -> Response {
    if !metrics_enabled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "client metrics are disabled",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics().render(&c.engine().stats()),
    )
        .into_response()
}

async fn summary(State(c): State<Client>) -> Response {
    if !metrics_enabled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "client metrics are disabled",
        )
            .into_response();
    }
    format!("client={} {}\n", c.hostname(), c.metrics().summary()).into_response()
}
