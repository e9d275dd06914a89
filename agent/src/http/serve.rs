//! The listener: TCP, TLS when configured, and hyper's HTTP/1.1 with the
//! timeouts that keep a slow or idle client from holding a connection.
//!
//! - `--web.read-header-timeout`: the TLS handshake, then each request's
//!   headers, must arrive within it (hyper's header-read timer runs from the
//!   end of the previous response too, so an idle kept-alive connection is
//!   closed after it).
//! - `--web.request-timeout`: from a request's headers to the last byte of
//!   its response. The handler gets that long (else 503), and the response's
//!   writes stop at the deadline (else the connection is closed: a client
//!   that does not read holds nothing). A long-lived response
//!   (/api/v1/stream, marked `LongLived`) is instead closed when a write
//!   makes no progress for that long.

use std::{
    convert::Infallible,
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read_header: Duration,
    pub request: Duration,
}

/// A response extension: this response streams for as long as its client
/// reads (see the module comment).
#[derive(Debug, Clone, Copy)]
pub struct LongLived;

/// Accepts connections on `listener` forever, each served on a task of its own.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
) -> Infallible {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(connection(tcp, peer, app.clone(), tls.clone(), timeouts));
            }
            Err(error) => {
                // Out of fds, mostly: wait rather than spin.
                warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A byte stream: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
) {
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(timeouts.read_header, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(error)) => {
                    debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "no TLS handshake within --web.read-header-timeout");
                    return;
                }
            }
        }
    };
    let clock = SharedClock::default();
    let io = TokioIo::new(Deadlined::new(stream, clock.clone()));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (mut app, clock) = (app.clone(), clock.clone());
        async move { Ok::<_, Infallible>(respond(&mut app, request, &clock, timeouts).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(timeouts.read_header);
    if let Err(error) = http.serve_connection(io, service).await {
        debug!(%peer, %error, "HTTP connection ended");
    }
}

async fn respond(
    app: &mut Router,
    request: Request<Incoming>,
    clock: &SharedClock,
    timeouts: Timeouts,
) -> Response {
    clock.set(WriteClock { deadline: Some(Instant::now() + timeouts.request), slide: None });
    let call = app.call(request.map(Body::new));
    let response = match tokio::time::timeout(timeouts.request, call).await {
        Ok(Ok(response)) => response,
        Ok(Err(infallible)) => match infallible {},
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no answer within --web.request-timeout\n",
        )
            .into_response(),
    };
    if response.extensions().get::<LongLived>().is_some() {
        let slide = timeouts.request;
        clock.set(WriteClock { deadline: Some(Instant::now() + slide), slide: Some(slide) });
    }
    response
}

/// When the response being written must be done by.
#[derive(Debug, Default, Clone, Copy)]
struct WriteClock {
    deadline: Option<Instant>,
    /// Long-lived: each write that makes progress moves the deadline this far.
    slide: Option<Duration>,
}

/// The clock of one connection, set per request, read by its writes.
#[derive(Debug, Default, Clone)]
struct SharedClock(Arc<Mutex<WriteClock>>);

impl SharedClock {
    fn set(&self, clock: WriteClock) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = clock;
    }

    fn get(&self) -> WriteClock {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn progressed(&self) {
        let mut clock = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slide) = clock.slide {
            clock.deadline = Some(Instant::now() + slide);
        }
    }
}

/// A stream whose writes fail with TimedOut past the connection's deadline.
struct Deadlined<S> {
    inner: S,
    clock: SharedClock,
    timer: Pin<Box<Sleep>>,
}

impl<S> Deadlined<S> {
    fn new(inner: S, clock: SharedClock) -> Deadlined<S> {
        // Armed for real when a write waits.
        let timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        Deadlined { inner, clock, timer }
    }

    /// The outcome of a write (or flush), with the deadline applied.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let clock = self.clock.get();
        let Some(deadline) = clock.deadline else { return result };
        match result {
            Poll::Ready(Ok(value)) => {
                if clock.slide.is_some() {
                    self.clock.progressed();
                } else if Instant::now() >= deadline {
                    return Poll::Ready(Err(timed_out()));
                }
                Poll::Ready(Ok(value))
            }
            Poll::Pending => {
                self.timer.as_mut().reset(deadline);
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
            failed => failed,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the response was not taken within --web.request-timeout",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.deadline(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.deadline(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.deadline(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_write_that_cannot_proceed_fails_at_the_deadline() {
        // A 64-byte pipe whose other end never reads.
        let (near, _far) = tokio::io::duplex(64);
        let clock = SharedClock::default();
        let mut stream = Deadlined::new(near, clock.clone());
        let start = Instant::now();
        clock.set(WriteClock { deadline: Some(start + TIMEOUT), slide: None });
        let error = stream.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = Instant::now() - start;
        assert!(waited >= TIMEOUT && waited < TIMEOUT + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_a_write_waits() {
        let (near, _far) = tokio::io::duplex(64);
        let mut stream = Deadlined::new(near, SharedClock::default());
        let write = stream.write_all(&[0u8; 4096]);
        assert!(tokio::time::timeout(TIMEOUT * 10, write).await.is_err(), "still waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_lived_response_lives_while_it_progresses() {
        let (near, mut far) = tokio::io::duplex(64);
        let clock = SharedClock::default();
        let mut stream = Deadlined::new(near, clock.clone());
        clock.set(WriteClock { deadline: Some(Instant::now() + TIMEOUT), slide: Some(TIMEOUT) });
        // A reader that takes 64 bytes every 20 s (less than the timeout):
        // 10 such writes span 200 s, far past one timeout.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                far.read_exact(&mut buf).await.unwrap();
            }
            far
        });
        let start = Instant::now();
        for _ in 0..10 {
            stream.write_all(&[1u8; 64]).await.unwrap();
        }
        let _far = reader.await.unwrap();
        assert!(Instant::now() - start > TIMEOUT * 5);
        // Then the reader stops: the next writes fail one timeout later.
        let stalled = Instant::now();
        let error = stream.write_all(&[1u8; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = Instant::now() - stalled;
        assert!(waited >= TIMEOUT && waited < TIMEOUT + Duration::from_secs(1), "{waited:?}");
    }
}
