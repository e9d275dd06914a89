//! HTTP endpoints: /metrics, /healthz, /readyz, /api/v1/snapshot,
//! /api/v1/stream (server-sent events: the live feed `golens top` reads).
//!
//! Every endpoint sits behind the same guards, outermost first: the
//! response headers of --web.config.file, its basic auth, then the caps on
//! requests in flight (`limits`); `serve` owns the listener (TLS, timeouts).

pub mod auth;
pub mod limits;
pub mod serve;
pub mod tls;
pub mod web_config;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use crate::snapshot::{Snapshot, SnapshotCell, SCHEMA_VERSION};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    middleware::{from_fn_with_state, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Extension, Json, Router,
};
use tracing::{info, warn};

use self::{
    auth::BasicAuth,
    limits::Slots,
    web_config::{WebConfig, WebConfigError},
};
use crate::cli::WebArgs;

#[derive(Clone)]
pub struct AppState {
    pub snapshot: SnapshotCell,
    /// Set once every program is attached and the first /proc scan is done.
    pub ready: Arc<AtomicBool>,
}

/// The HTTP side as `golens run`'s --web.* flags configure it.
pub struct Server {
    tls: Option<Arc<rustls::ServerConfig>>,
    guards: Guards,
    timeouts: serve::Timeouts,
}

/// What every request passes before a handler (see the module comment).
#[derive(Clone)]
pub struct Guards {
    pub headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    pub auth: Option<Arc<BasicAuth>>,
    pub requests: Slots,
    pub streams: Slots,
}

impl Server {
    /// Reads and checks --web.config.file (certificates included), so a
    /// mistake stops golens at startup, before it listens.
    pub fn new(args: &WebArgs, listen: SocketAddr) -> Result<Server, WebConfigError> {
        let config = match &args.config_file {
            Some(path) => Some(WebConfig::load(path)?),
            None => None,
        };
        let tls = match config.as_ref().and_then(|config| Some((config, config.tls.as_ref()?))) {
            Some((config, settings)) => Some(tls::server_config(config, settings)?),
            None => None,
        };
        let (headers, users) = match config {
            Some(config) => (config.headers, config.users),
            None => Default::default(),
        };
        if let Some(path) = &args.config_file {
            let what = match (tls.is_some(), users.is_empty()) {
                (true, false) => "TLS and basic auth",
                (true, true) => "TLS, no authentication",
                (false, false) => "basic auth, no TLS",
                (false, true) => "neither TLS nor authentication",
            };
            info!("{}: {what}", path.display());
        }
        if tls.is_none() && !users.is_empty() && !listen.ip().is_loopback() {
            warn!(
                "basic auth without TLS on {listen}: passwords cross the network in clear; add \
                 tls_server_config to --web.config.file"
            );
        }
        if args.max_requests > 0 && (args.max_streams == 0 || args.max_streams >= args.max_requests)
        {
            warn!(
                "--web.max-streams {} is not below --web.max-requests {}: open streams can take \
                 every request slot, and scrapes then get 503",
                args.max_streams, args.max_requests
            );
        }
        Ok(Server {
            tls,
            guards: Guards {
                headers: Arc::new(headers),
                auth: BasicAuth::new(users),
                requests: Slots::new(args.max_requests, "--web.max-requests"),
                streams: Slots::new(args.max_streams, "--web.max-streams"),
            },
            timeouts: serve::Timeouts {
                read_header: args.read_header_timeout,
                request: args.request_timeout,
            },
        })
    }

    /// "https" with TLS, else "http".
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves `state` on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener, state: AppState) {
        let app = router(state, &self.guards);
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let never = serve::serve(listener, app, tls, self.timeouts).await;
        match never {}
    }
}

pub fn router(state: AppState, guards: &Guards) -> Router {
    let stream_slot = from_fn_with_state(guards.streams.clone(), limits::hold_slot);
    let mut router = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/snapshot", get(snapshot_handler))
        .route("/api/v1/stream", get(stream_handler).route_layer(stream_slot))
        .with_state(state)
        .layer(from_fn_with_state(guards.requests.clone(), limits::hold_slot));
    if let Some(auth) = &guards.auth {
        router = router.layer(from_fn_with_state(auth.clone(), auth::require));
    }
    if !guards.headers.is_empty() {
        router = router.layer(from_fn_with_state(guards.headers.clone(), add_headers));
    }
    router
}

/// http_server_config.headers, on every response (401 and 503 included).
async fn add_headers(
    State(headers): State<Arc<Vec<(HeaderName, HeaderValue)>>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    for (name, value) in headers.iter() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
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
async fn stream_handler(State(state): State<AppState>) -> impl IntoResponse {
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
                return Some((Ok::<_, std::convert::Infallible>(event), (cell, sent, poll)));
            }
            poll.tick().await;
        }
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE));
    // Not ended by --web.request-timeout, only by a client that stops reading.
    (Extension(serve::LongLived), sse)
}
