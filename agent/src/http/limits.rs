//! Caps on the work the HTTP side takes on at once: `--web.max-requests`
//! requests in flight (an open /api/v1/stream is one for as long as it
//! lasts) and `--web.max-streams` streams. Over a cap the answer is 503 at
//! once, never a queue: a scraper then sees a failed scrape instead of a
//! stall, and the agent's memory stays bounded.
//!
//! A slot is held by the response body, so it is given back when the body
//! is done or dropped (a stream's client went away), not when the handler
//! returns.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One cap: a number of slots, or none (0: no limit).
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Option<Arc<Semaphore>>,
    limit: u32,
    /// The flag that sets it, for the 503's text.
    flag: &'static str,
}

impl Slots {
    pub fn new(limit: u32, flag: &'static str) -> Slots {
        let semaphore = (limit > 0).then(|| Arc::new(Semaphore::new(limit as usize)));
        Slots { semaphore, limit, flag }
    }

    /// A slot, or the 503 that says the cap is reached. `Ok(None)`: no cap.
    #[allow(clippy::result_large_err)] // the Err is the response itself
    fn take(&self) -> Result<Option<OwnedSemaphorePermit>, Response> {
        let Some(semaphore) = &self.semaphore else { return Ok(None) };
        semaphore.clone().try_acquire_owned().map(Some).map_err(|_| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!(
                    "503 Service Unavailable: golens is already serving {} {} ({}); try again\n",
                    self.limit,
                    if self.flag == "--web.max-streams" { "streams" } else { "requests" },
                    self.flag
                ),
            )
                .into_response()
        })
    }
}

/// The middleware: a slot of `slots` for the request and its response body.
pub async fn hold_slot(State(slots): State<Slots>, request: Request, next: Next) -> Response {
    let permit = match slots.take() {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let response = next.run(request).await;
    match permit {
        Some(permit) => response.map(|body| Body::new(Holding { body, _permit: permit })),
        None => response,
    }
}

/// A response body that keeps a slot until it is finished or dropped.
struct Holding {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{routing::get, Router};
    use tower_service::Service;

    async fn status(router: &mut Router, path: &str) -> (StatusCode, Response) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router.call(request).await.unwrap();
        (response.status(), response)
    }

    #[tokio::test]
    async fn over_the_cap_is_503_until_a_body_is_dropped() {
        let slots = Slots::new(1, "--web.max-requests");
        let mut router = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(slots, hold_slot));
        let (code, held) = status(&mut router, "/").await;
        assert_eq!(code, StatusCode::OK);
        // Its body is not consumed yet: the slot is still taken.
        let (code, busy) = status(&mut router, "/").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let text = axum::body::to_bytes(busy.into_body(), 1024).await.unwrap();
        assert!(String::from_utf8_lossy(&text).contains("1 requests (--web.max-requests)"));
        let body = axum::body::to_bytes(held.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"ok", "the body passes through");
        assert_eq!(status(&mut router, "/").await.0, StatusCode::OK, "the slot came back");
    }

    #[tokio::test]
    async fn zero_is_no_limit() {
        let slots = Slots::new(0, "--web.max-requests");
        let mut router = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(slots, hold_slot));
        let mut held = Vec::new();
        for _ in 0..100 {
            let (code, response) = status(&mut router, "/").await;
            assert_eq!(code, StatusCode::OK);
            held.push(response);
        }
        assert_eq!(status(&mut router, "/").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_size_of_a_body_is_kept() {
        let slots = Slots::new(2, "--web.max-requests");
        let mut router = Router::new()
            .route("/", get(|| async { "twelve bytes" }))
            .layer(axum::middleware::from_fn_with_state(slots, hold_slot));
        let (_, response) = status(&mut router, "/").await;
        use hyper::body::Body as _;
        assert_eq!(response.body().size_hint().exact(), Some(12), "Content-Length survives");
    }
}
