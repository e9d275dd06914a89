//! HTTP endpoints: /metrics, /healthz, /readyz, /api/v1/snapshot,
//! /api/v1/stream (server-sent events: the live feed `golens top` reads).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::snapshot::{Snapshot, SnapshotCell, SCHEMA_VERSION};
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Json, Router,
};
use futures_util::stream::Stream;

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
        .route("/api/v1/stream", get(stream_handler))
        .with_state(state)
}

async fn index() -> &'static str {
    "golens agent\n\n/metrics           Prometheus metrics\n/healthz           liveness\n\
     /readyz            ready once probes are attached\n/api/v1/snapshot   latest snapshot as JSON\n\
     /api/v1/stream     every new snapshot as a server-sent event (golens top --connect)\n"
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

/// How often a stream looks for a new collection: a read of the cell (an Arc
/// clone under a lock held for nanoseconds), so each client costs nothing
/// between collections and a snapshot reaches it within this delay.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A comment line sent when nothing else was, so proxies and clients can
/// tell a quiet agent (a long --interval) from a dead connection.
const STREAM_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// One event of /api/v1/stream: the Snapshot's fields plus `schema_version`
/// at the top level (a client reads that first, then the rest as a Snapshot).
#[derive(serde::Serialize)]
pub struct StreamFrame<'a> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub snapshot: &'a Snapshot,
}

/// The SSE event (`event: snapshot`, `id:` the collection number) of one snapshot.
pub fn snapshot_event(snapshot: &Snapshot) -> Event {
    let frame = StreamFrame { schema_version: SCHEMA_VERSION, snapshot };
    match Event::default().event("snapshot").json_data(frame) {
        Ok(event) => event.id(snapshot.agent.collections.to_string()),
        Err(error) => Event::default().comment(format!("snapshot not serialized: {error}")),
    }
}

/// Server-sent events: the latest snapshot at once (once there is one), then
/// each new collection exactly once, as it is published.
async fn stream_handler(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let mut poll = tokio::time::interval(STREAM_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = (state.snapshot, None::<Arc<Snapshot>>, poll);
    let events = futures_util::stream::unfold(start, |(cell, mut sent, mut poll)| async move {
        loop {
            let latest = cell.get();
            // Each collection publishes a new Arc: a pointer compare says "new".
            let is_new = !sent.as_ref().is_some_and(|sent| Arc::ptr_eq(sent, &latest));
            if is_new && latest.agent.collections > 0 {
                let event = snapshot_event(&latest);
                sent = Some(latest);
                return Some((Ok(event), (cell, sent, poll)));
            }
            poll.tick().await;
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE))
}
