//! The request-head timeout, checked on a tick rather than with a timer per request.
//!
//! hyper's `header_read_timeout` boxes a `Sleep` each time a connection starts waiting for a
//! request head, registers it in tokio's timer wheel while the connection waits and removes it
//! when the head has arrived: 1.4–1.6k of the gateway's ~58k instructions per request in
//! callgrind (BENCHMARKS.md, section 5). Here each connection counts its requests ([`Counted`]:
//! one atomic add when a request starts, one subtract when its response body is dropped), and
//! the worker's accept loop looks at every connection's counts every half timeout
//! ([`Activity::look`]). A connection that has started no request and had none in flight for
//! three looks in a row has waited for a head for longer than the timeout (at most one and a
//! half timeouts) and is closed: a client that never finishes its head, or an
//! idle keep-alive connection, as with hyper's timeout. A request that takes long to answer,
//! or a long stream, is in flight and never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;

/// Looks in a row that must find a connection quiet before it is closed. The first can come
/// right after the connection started waiting, so the looks come every timeout / (`QUIET_LOOKS`
/// − 1) ([`look_period`]): the connection is closed after waiting between one timeout and
/// `QUIET_LOOKS` / (`QUIET_LOOKS` − 1) of one.
pub const QUIET_LOOKS: u32 = 3;

/// How often the accept loop looks at its connections for a head timeout of `timeout`.
pub fn look_period(timeout: Duration) -> Duration {
    (timeout / (QUIET_LOOKS - 1)).max(Duration::from_millis(1))
}

/// Requests started, in the high 32 bits of [`Activity::requests`].
const STARTED: u64 = 1 << 32;
/// Requests still answering, in the low 32 bits.
const OPEN: u64 = 1;

/// What one connection has done, as its accept loop's looks see it.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests started (high half, wrapping) and still answering (low half): one word, so
    /// that a request's start is one atomic add.
    requests: AtomicU64,
    /// Requests started at the previous look (written by the looks only).
    seen: AtomicU64,
    /// Looks in a row that found nothing started and nothing in flight (written by the looks
    /// only).
    quiet: AtomicU32,
}

impl Activity {
    /// A request's head has arrived ([`Counted`] calls this).
    pub fn start(&self) {
        self.requests.fetch_add(STARTED + OPEN, Ordering::Relaxed);
    }

    /// A request's response is done with (after a [`start`](Self::start)).
    pub fn end(&self) {
        self.requests.fetch_sub(OPEN, Ordering::Relaxed);
    }

    /// One look, every half timeout: whether the connection has now been waiting for a head
    /// through [`QUIET_LOOKS`] looks in a row.
    pub fn look(&self) -> bool {
        let now = self.requests.load(Ordering::Relaxed);
        let in_flight = now % STARTED != 0;
        let started = now / STARTED;
        let moved = self.seen.swap(started, Ordering::Relaxed) != started;
        // Waiting for a head began when the last request ended: since the last look if one
        // started since then.
        let quiet = if in_flight {
            0
        } else if moved {
            1
        } else {
            self.quiet.load(Ordering::Relaxed) + 1
        };
        self.quiet.store(quiet, Ordering::Relaxed);
        quiet >= QUIET_LOOKS
    }
}

/// A connection's service, counting its requests into an [`Activity`].
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    /// Counts the requests `inner` answers into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.activity.start();
        CountedFuture {
            inner: self.inner.call(req),
            open: Some(Open(self.activity.clone())),
        }
    }
}

/// A request in flight: counted as answering until dropped.
#[derive(Debug)]
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project! {
    /// The future of [`Counted`]: hands the request's [`Open`] mark on to the response body.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F, ResBody, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let open = this.open.take();
        Poll::Ready(result.map(|res| res.map(|body| CountedBody { body, _open: open })))
    }
}

pin_project! {
    /// A response body whose request counts as in flight until the body is dropped (hyper drops
    /// it once written, or when the connection ends).
    pub struct CountedBody<B> {
        #[pin]
        body: B,
        _open: Option<Open>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
