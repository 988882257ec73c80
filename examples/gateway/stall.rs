//! A request body timeout that costs nothing when the body is already there.
//!
//! tower-http's `RequestBodyTimeoutLayer` starts a timer on every `poll_frame`, even when the
//! frame is ready: a timer-wheel registration and removal (each behind the wheel's lock) for
//! every frame of every request. Chat requests mostly arrive with their head, so here the timer
//! starts only when the body has nothing to give, and ends at the next frame. The error is an
//! `io::Error` of kind `TimedOut`, which the routing layers answer with a 408.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};
use tower_llm_router::BoxError;

/// Wraps each request body in a [`StallTimeoutBody`].
#[derive(Clone, Copy, Debug)]
pub struct StallTimeoutLayer {
    timeout: Duration,
}

impl StallTimeoutLayer {
    /// Fails a request body that gives no frame for `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for StallTimeoutLayer {
    type Service = StallTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StallTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`StallTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct StallTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for StallTimeout<S>
where
    S: Service<Request<StallTimeoutBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = self.timeout;
        self.inner.call(req.map(|body| StallTimeoutBody {
            body,
            sleep: None,
            timeout,
        }))
    }
}

pin_project! {
    /// A body that fails with `io::ErrorKind::TimedOut` when its inner body stalls for longer
    /// than the timeout between two frames.
    pub struct StallTimeoutBody<B> {
        #[pin]
        body: B,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
    }
}

impl<B> Body for StallTimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            // The next wait gets a full timeout of its own.
            this.sleep.set(None);
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.timeout)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body stalled",
            ))))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
