//! Body stall timeouts that cost nothing when the body is already there: for the client's
//! request body ([`StallTimeoutLayer`], which also bounds the whole body) and for the
//! upstream's answer ([`AnswerStallTimeout`]); and the client's side of an answer, a connection
//! whose client stops reading ([`WriteStall`]).
//!
//! tower-http's `RequestBodyTimeoutLayer` starts a timer on every `poll_frame`, even when the
//! frame is ready: a timer-wheel registration and removal (each behind the wheel's lock) for
//! every frame of every request. Chat requests mostly arrive with their head, so here the timer
//! starts only when the body has nothing to give, and ends at the next frame. The error is an
//! `io::Error` of kind `TimedOut`: on a request body, the routing layers answer it with a 408;
//! on an answer, the client's stream ends with the layer's SSE error event, or a JSON answer's
//! connection is cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tower_llm_router::classify::describe_error;
use tower_llm_router::fallback::RoutedModel;
use tower_llm_router::BoxError;

/// The timeouts of one kind of body, made once and kept for the life of the process (see
/// [`StallTimeouts::leak`]): a body holds a reference to them, not the durations, because every
/// request's future and answer carry such a body and are moved several times.
#[derive(Debug)]
pub struct StallTimeouts {
    /// The wait for the first frame (`None`: not timed).
    first: Option<Duration>,
    /// Every wait after a frame.
    next: Duration,
    /// The whole body, from the first wait for it (`None`: not bounded).
    whole: Option<Duration>,
    /// The error's message.
    stalled: &'static str,
}

impl StallTimeouts {
    /// Timeouts for the life of the process: made at startup, a few per worker, never freed.
    pub fn leak(self) -> &'static Self {
        Box::leak(Box::new(self))
    }
}

/// Wraps each request body in a [`StallTimeoutBody`].
#[derive(Clone, Copy, Debug)]
pub struct StallTimeoutLayer {
    timeouts: &'static StallTimeouts,
}

impl StallTimeoutLayer {
    /// Fails a request body that gives no frame for `timeout`, or that is not whole `whole`
    /// after the first wait for it: a client that sends a byte just inside `timeout` each time
    /// (a slowloris on the body) would otherwise hold its connection, and the body's share of
    /// the buffered bytes, for good. The whole body is timed from its first wait rather than
    /// from the head, so that a body that came with its head costs no clock read. Its timeouts
    /// are kept for the life of the process: make the layer once, not per connection.
    pub fn new(timeout: Duration, whole: Duration) -> Self {
        let timeouts = StallTimeouts {
            first: Some(timeout),
            next: timeout,
            whole: Some(whole),
            stalled: REQUEST_STALLED,
        };
        Self {
            timeouts: timeouts.leak(),
        }
    }
}

/// The message of an answer's stall error (which a stream's final error event quotes).
pub const ANSWER_STALLED: &str = "the upstream's answer stalled";

/// The message of a request body's stall error: the cause, after the layers' "the request
/// body was not received in time: ".
const REQUEST_STALLED: &str = "the client stopped sending it";

/// The message of the error of a request body not whole in time (likewise).
const REQUEST_TOO_SLOW: &str = "it was not whole within [timeouts] request_body";

/// Whether `error` (or one of its sources) is a request body's stall error (or its whole-body
/// deadline's): the client's body stopped, or crawled, for the gateway to answer 408 rather
/// than blame an upstream. The routing layers do so for the bodies they buffer; one they pass
/// through fails in the upstream client instead.
pub fn is_request_stall(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|e| {
            e.kind() == io::ErrorKind::TimedOut
                && [REQUEST_STALLED, REQUEST_TOO_SLOW].contains(&e.to_string().as_str())
        })
    })
}

impl<S> Layer<S> for StallTimeoutLayer {
    type Service = StallTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StallTimeout {
            inner,
            timeouts: self.timeouts,
        }
    }
}

/// The service of [`StallTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct StallTimeout<S> {
    inner: S,
    timeouts: &'static StallTimeouts,
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
        let timeouts = self.timeouts;
        self.inner
            .call(req.map(|body| StallTimeoutBody::new(body, timeouts)))
    }
}

/// The upstream service of the gateway with a stall timeout on each answer's body: once its
/// headers have come, an answer that gives no frame for `idle` ends with an error instead of
/// holding the client's request (and graceful shutdown) for as long as the upstream keeps the
/// connection open.
///
/// The wait for the first frame is left to the routing layer's `first_byte_timeout` (or
/// `stream_timeout`) when it routed the attempt: a non-streamed answer may come whole minutes
/// after its headers. An attempt the layer passed through untouched (a request without a
/// model) has no such timeout, so here its first frame is waited for `first_byte` (`stream`
/// for an event stream) and no longer.
#[derive(Clone, Debug)]
pub struct AnswerStallTimeout<S> {
    inner: S,
    timeouts: &'static AnswerTimeouts,
}

/// The three ways an answer's body is timed (see [`AnswerStallTimeout`]).
#[derive(Debug)]
pub struct AnswerTimeouts {
    routed: StallTimeouts,
    passed_through: StallTimeouts,
    passed_through_stream: StallTimeouts,
}

impl<S> AnswerStallTimeout<S> {
    /// Answers from `inner` whose body stalls for `idle` after its first frame fail; so do
    /// those of passed-through requests whose first frame takes longer than `first_byte`
    /// (`stream` for an event stream). The timeouts are kept for the life of the process.
    pub fn new(inner: S, idle: Duration, first_byte: Duration, stream: Duration) -> Self {
        let timed = |first| StallTimeouts {
            first,
            next: idle,
            whole: None,
            stalled: ANSWER_STALLED,
        };
        Self {
            inner,
            timeouts: Box::leak(Box::new(AnswerTimeouts {
                routed: timed(None),
                passed_through: timed(Some(first_byte)),
                passed_through_stream: timed(Some(stream)),
            })),
        }
    }
}

/// The answer body of [`AnswerStallTimeout`]: the upstream's, timed (`Left`, the only one it
/// makes). `Right` is for the gateway's own answers to the requests its router serves, so that
/// every response of the gateway has this one body type (in a `ResponseBody`): the chat route's
/// answer, about 270 bytes, then goes to hyper as it comes from the routing stack, not moved
/// into an `Either` of the two routes' bodies.
pub type AnswerBody<B> = Either<StallTimeoutBody<B>, axum::body::Body>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AnswerStallTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = BoxError>,
{
    type Response = Response<AnswerBody<ResBody>>;
    type Error = S::Error;
    type Future = AnswerStallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The layer marks the attempts it routed, and times their first frame itself.
        let model = req.extensions().get::<RoutedModel>().map(|m| m.0.clone());
        AnswerStallFuture {
            inner: self.inner.call(req),
            timeouts: self.timeouts,
            model,
        }
    }
}

/// A response extension: the answer to a request the routing layers passed through untouched
/// (they carry no `Attempts` for it, as they carry none for their own refusals).
#[derive(Clone, Copy, Debug)]
pub struct PassedThrough;

pin_project! {
    /// The future of [`AnswerStallTimeout`].
    pub struct AnswerStallFuture<F> {
        #[pin]
        inner: F,
        timeouts: &'static AnswerTimeouts,
        // The model of an attempt the layer routed (and times the first frame of); `None` for
        // one it passed through.
        model: Option<Arc<str>>,
    }
}

impl<F, ResBody> Future for AnswerStallFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, BoxError>>,
{
    type Output = Result<Response<AnswerBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                // The request's line says which attempts failed; this one says why, with the
                // causes under the client's own words ("client error (Connect)": refused, a
                // name that does not resolve, a certificate refused...).
                tracing::warn!(
                    target: "gateway",
                    model = this.model.as_deref().unwrap_or("-"),
                    error = %describe_error(&*error),
                    "upstream call failed"
                );
                return Poll::Ready(Err(error));
            }
        };
        let timeouts: &'static AnswerTimeouts = this.timeouts;
        let routed = this.model.is_some();
        if !routed {
            response.extensions_mut().insert(PassedThrough);
        }
        let timeouts = if routed {
            &timeouts.routed
        } else if response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        {
            &timeouts.passed_through_stream
        } else {
            &timeouts.passed_through
        };
        Poll::Ready(Ok(
            response.map(|body| Either::Left(StallTimeoutBody::new(body, timeouts)))
        ))
    }
}

pin_project! {
    /// A body that fails with `io::ErrorKind::TimedOut` when its inner body stalls for longer
    /// than the timeout between two frames, or (with `timeouts.whole`) is not whole by its
    /// deadline. `Unpin` when its inner body is (the routing layers need an `Unpin` answer
    /// body).
    pub struct StallTimeoutBody<B> {
        #[pin]
        body: B,
        timer: StallTimer,
        timeouts: &'static StallTimeouts,
        // Whether a frame has come (the waits after it are timed by `timeouts.next`).
        framed: bool,
    }
}

impl<B> StallTimeoutBody<B> {
    /// `body`, failing when the wait for its first frame outlasts `timeouts.first`, or a later
    /// wait `timeouts.next`.
    pub fn new(body: B, timeouts: &'static StallTimeouts) -> Self {
        Self {
            body,
            timer: StallTimer::default(),
            timeouts,
            framed: false,
        }
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
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            // The next wait gets a full timeout of its own.
            this.timer.disarm();
            *this.framed = true;
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let timeouts: &'static StallTimeouts = this.timeouts;
        let timeout = if *this.framed {
            timeouts.next
        } else {
            let Some(first) = timeouts.first else {
                return Poll::Pending;
            };
            first
        };
        let late = ready!(this.timer.poll_expired(cx, timeout, timeouts.whole));
        let message = if late {
            REQUEST_TOO_SLOW
        } else {
            timeouts.stalled
        };
        Poll::Ready(Some(Err(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            message,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The timer of one wait after another (a body's frames, a connection's writes): armed when a
/// wait begins, disarmed when it ends. Its `Sleep` is boxed, so that what holds it stays
/// `Unpin`, allocated at the first wait and reused by the next ones, so that a stream that
/// waits before every token allocates once, and what never waits allocates nothing. The
/// deadline of a whole body lives in the same box: set at the first wait, it costs the bodies
/// that never wait (and every answer's body, moved several times) not a byte.
#[derive(Debug, Default)]
struct StallTimer {
    waits: Option<Pin<Box<Waits>>>,
    /// Whether `waits` times the current wait.
    armed: bool,
}

pin_project! {
    /// What a [`StallTimer`] allocates at its first wait.
    #[derive(Debug)]
    struct Waits {
        #[pin]
        sleep: Sleep,
        // When the whole body must have come, if it is bounded.
        deadline: Option<Instant>,
    }
}

impl StallTimer {
    /// The current wait has ended: the next one gets a full timeout of its own.
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Ready once the current wait (begun now if none is) has lasted `timeout`, or, with
    /// `whole`, once that long has passed since the first wait, if that comes first: `true`
    /// when it was `whole`.
    fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Duration,
        whole: Option<Duration>,
    ) -> Poll<bool> {
        let waits = match &mut self.waits {
            Some(waits) if self.armed => waits,
            Some(waits) => {
                let end = wait_end(timeout, waits.deadline);
                waits
                    .as_mut()
                    .project()
                    .sleep
                    .set(tokio::time::sleep_until(end));
                waits
            }
            None => {
                let deadline = whole.map(from_now);
                self.waits.insert(Box::pin(Waits {
                    sleep: tokio::time::sleep_until(wait_end(timeout, deadline)),
                    deadline,
                }))
            }
        };
        self.armed = true;
        ready!(waits.as_mut().project().sleep.poll(cx));
        let deadline = waits.deadline;
        Poll::Ready(deadline.is_some_and(|deadline| Instant::now() >= deadline))
    }
}

/// When a wait begun now ends: after `timeout`, or at `deadline` if that is sooner. (What
/// `tokio::time::sleep` computes too: no more clock reads than it.)
fn wait_end(timeout: Duration, deadline: Option<Instant>) -> Instant {
    let end = from_now(timeout);
    deadline.map_or(end, |deadline| end.min(deadline))
}

/// `duration` from now, or about 30 years for one too long for an `Instant` (a timeout of
/// `1e18` seconds in the configuration is a valid one), as `tokio::time::sleep` does.
fn from_now(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// The message of the error that ends a connection whose client accepted no byte of its answer
/// for the timeout.
const CLIENT_STALLED: &str = "the client accepted no byte of its answer";

pin_project! {
    /// A client connection whose writes fail with `io::ErrorKind::TimedOut` once one has been
    /// blocked for longer than the timeout: the client has stopped reading (a hung SDK, or a
    /// slowloris on the answer side, with its receive window shut). hyper then closes the
    /// connection and drops the answer, and with it the upstream's connection; without this,
    /// both stayed open as long as the client kept its socket, and so did shutdown's drain.
    ///
    /// The timer runs only while a write waits for the client: one that is never blocked costs
    /// a flag, and no allocation.
    pub struct WriteStall<T> {
        #[pin]
        io: T,
        timeout: Duration,
        timer: StallTimer,
    }
}

impl<T> WriteStall<T> {
    /// `io`, whose writes fail once one has waited `timeout` for the peer.
    pub fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            timer: StallTimer::default(),
        }
    }

    /// What a write (or flush) that `poll` tried becomes: its result when it was ready, else
    /// pending until the wait outlasts the timeout, then the stall error.
    fn timed<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        if let Poll::Ready(result) = poll(this.io, cx) {
            this.timer.disarm();
            return Poll::Ready(result);
        }
        ready!(this.timer.poll_expired(cx, *this.timeout, None));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, CLIENT_STALLED)))
    }
}

impl<T: AsyncRead> AsyncRead for WriteStall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WriteStall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, AsyncWrite::poll_shutdown)
    }
}
