//! HTTP endpoints: /metrics, /healthz, /readyz, /api/v1/snapshot.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::snapshot::SnapshotCell;
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

#[derive(Clone)]
pub struct AppState {
    pub snapshot: SnapshotCell,
    /// Set once every program is attached and the first /proc scan is done.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/snapshot", get(snapshot_handler))
        .with_state(state)
}

async fn index() -> &'static str {
    "golens agent\n\n/metrics           Prometheus metrics\n/healthz           liveness\n\
     /readyz            ready once probes are attached\n/api/v1/snapshot   latest snapshot as JSON\n"
}

async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Rendered once per collection: a scrape copies a string, whatever the
    // number of processes, and never waits on probe work.
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let published = state.snapshot.latest();
    let (content_type, body) = published.exposition.negotiate(accept);
    ([(header::CONTENT_TYPE, content_type)], body.to_string()).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: probes are being attached\n").into_response()
    }
}

async fn snapshot_handler(State(state): State<AppState>) -> Response {
    Json(state.snapshot.get().as_ref().clone()).into_response()
}
