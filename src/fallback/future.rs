use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{header, request, response, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tracing::field::Empty;
use tracing::Span;

use super::policy::Config;
use super::{
    Attempt, Attempts, ExpandedModels, FallbackModels, Outcome, PassedOverByRouter, RoutedModel,
    ServedModel, ATTEMPTS_HEADER, MODEL_HEADER,
};
use crate::auto_route::{Deciding, Next as AutoNext, RouteDecision, Routed};
use crate::body::{Held, ResponseBody, RouterBody, Sse};
use crate::buffer::{rewrite_head, ChunkBuf, Collect, Collected};
use crate::buffer_budget::{charge_copy, BufferBudget};
use crate::classify::{self, Classify, ErrorClass, SseEvent};
use crate::health::{healthy_first, Observation};
use crate::payload::{ChatRequest, Parsed};
use crate::recent::{self, Recent, RECENT_MODEL_MAX};
use crate::{ApiError, BoxError};

pin_project! {
    /// Response future of [`Fallback`](super::Fallback).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, C, ResBody, B>
    where
        S: Service<Request<RouterBody>>,
    {
        #[pin]
        kind: Kind<S, C, ResBody, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, C, ResBody, B>
    where
        S: Service<Request<RouterBody>>,
    {
        Passthrough { #[pin] future: S::Future },
        Rejected { rejection: Option<ApiError> },
        Routed {
            #[pin] state: State<S::Future, S, ResBody, B>,
            #[pin] deadline: Deadline,
            ctx: Ctx<S, C>,
        },
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F, S, R, B> {
        Buffering { #[pin] collect: Collect<B> },
        // Only with `auto_route` and an async policy: the auto router's decision in flight.
        Deciding { deciding: Deciding },
        // NOTE: every later attempt drives readiness of its own clone first. So does the first
        // attempt when the service `poll_ready` was called on was let go while the body was
        // read (see `Ctx::let_go`); otherwise the first attempt goes to that service, at once.
        Readying { svc: S, request: Request<RouterBody> },
        // An attempt sent: its headers are awaited (and timed, from now on).
        Sent { #[pin] future: F },
        Reading { read: Reading<R> },
        // A failed attempt's model is asked again once the deadline (the request's one
        // timer, idle between attempts) passes.
        Backoff,
        Done,
    }
}

impl<S, C, ResBody, B> fmt::Debug for ResponseFuture<S, C, ResBody, B>
where
    S: Service<Request<RouterBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Rejected { .. } => "Rejected",
            Kind::Routed { .. } => "Routed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<S, C, ResBody, B> ResponseFuture<S, C, ResBody, B>
where
    S: Service<Request<RouterBody>>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    pub(super) fn passthrough(future: S::Future) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(super) fn rejected(rejection: ApiError) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
        }
    }

    pub(super) fn routed(
        svc: S,
        classifier: C,
        config: Arc<Config>,
        head: request::Parts,
        body: B,
    ) -> Self {
        let collect = Collect::new(body, &config.body);
        Self {
            kind: Kind::Routed {
                state: State::Buffering { collect },
                deadline: Deadline::default(),
                ctx: Ctx {
                    svc,
                    readied: true,
                    classifier,
                    config,
                    head: Some(head),
                    request: None,
                    chain: Chain::default(),
                    current: 0,
                    attempts: Vec::new(),
                    requested: None,
                    passed_over: Vec::new(),
                    attempt_started: None,
                    span: Span::none(),
                    attempt_span: Span::none(),
                    passthrough: false,
                    routed: None,
                    charged: None,
                },
            },
        }
    }
}

impl<S, C, ResBody, B> ResponseFuture<S, C, ResBody, B>
where
    S: Service<Request<RouterBody>>,
{
    /// The model the request asked first ([`Attempts::requested`]) while it is in flight:
    /// known once the layer has read the body and built the chain, until the answer (which
    /// carries it in [`Attempts`]) is ready. `None` before, for a request the layer passes
    /// through or refuses, and after.
    ///
    /// A service in front whose future is dropped before the answer (its client left) names
    /// the model asked with it.
    pub fn requested(&self) -> Option<&str> {
        match &self.kind {
            Kind::Routed { ctx, .. } => ctx.requested.as_deref(),
            Kind::Passthrough { .. } | Kind::Rejected { .. } => None,
        }
    }

    /// The auto router's [`RouteDecision`] while the request is in flight, when this layer
    /// routed it ([`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route)): known once
    /// the router has decided, until the answer (which carries it as an extension) is ready.
    /// `None` for a request that did not ask for the sentinel, and after.
    ///
    /// A service in front whose future is dropped before the answer names what the client
    /// asked with its [`requested`](RouteDecision::requested) (the sentinel), as the answer's
    /// extension would; [`requested`](Self::requested) names the model the router chose.
    pub fn route_decision(&self) -> Option<&RouteDecision> {
        match &self.kind {
            Kind::Routed { ctx, .. } => ctx.routed.as_deref().map(|routed| &routed.decision),
            Kind::Passthrough { .. } | Kind::Rejected { .. } => None,
        }
    }
}

impl<S, C, ResBody, B> Future for ResponseFuture<S, C, ResBody, B>
where
    S: Service<Request<RouterBody>, Response = Response<ResBody>> + Clone,
    S::Error: 'static,
    C: Classify,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            KindProj::Rejected { rejection } => {
                let rejection = rejection
                    .take()
                    .unwrap_or_else(ApiError::polled_after_completion);
                Poll::Ready(Ok(rejection.to_response()))
            }
            KindProj::Routed {
                state,
                deadline,
                ctx,
            } => {
                // `Span::none()` (the span's level filtered out under a subscriber) is neither
                // cloned nor entered: entering it does nothing, and this runs on every poll.
                if ctx.span.is_none() {
                    return poll_routed(state, deadline, ctx, cx);
                }
                let span = ctx.span.clone();
                let _entered = span.enter();
                poll_routed(state, deadline, ctx, cx)
            }
        }
    }
}

/// What the current attempt came to, before the decision to move on or answer. It lives on
/// the stack for one call, so the size difference of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Step<ResBody, E> {
    Answered(Reading<ResBody>),
    Failed(E),
    TimedOut,
}

fn poll_routed<S, C, ResBody, B>(
    mut state: Pin<&mut AttemptState<S, ResBody, B>>,
    mut deadline: Pin<&mut Deadline>,
    ctx: &mut Ctx<S, C>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResponseBody<ResBody>>, S::Error>>
where
    S: Service<Request<RouterBody>, Response = Response<ResBody>> + Clone,
    S::Error: 'static,
    C: Classify,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let polled = match state.as_mut().project() {
            StateProj::Buffering { collect } => {
                let prepared = match collect.poll_collect(cx) {
                    Poll::Ready(Ok(collected)) => ctx.prepare(collected),
                    Poll::Ready(Err(rejection)) => Err(rejection),
                    Poll::Pending => {
                        ctx.let_go();
                        return Poll::Pending;
                    }
                };
                match prepared {
                    Ok(Prepared::Ready) => start_first(&mut state, deadline.as_mut(), ctx),
                    Ok(Prepared::Deciding(deciding)) => state.set(State::Deciding { deciding }),
                    Err(rejection) => {
                        state.set(State::Done);
                        return Poll::Ready(Ok(ctx.reject(rejection)));
                    }
                }
                continue;
            }
            StateProj::Deciding { deciding } => {
                let Poll::Ready(decided) = deciding.as_mut().poll(cx) else {
                    ctx.let_go();
                    return Poll::Pending;
                };
                let adopted = decided.and_then(|r| ctx.adopt(r));
                if let Err(rejection) = adopted {
                    state.set(State::Done);
                    return Poll::Ready(Ok(ctx.reject(rejection)));
                }
                start_first(&mut state, deadline.as_mut(), ctx);
                continue;
            }
            StateProj::Sent { future } => future.poll(cx),
            StateProj::Backoff => {
                if !deadline.as_mut().passed(cx) {
                    return Poll::Pending;
                }
                start_next(&mut state, deadline.as_mut(), ctx);
                continue;
            }
            // Not sent yet: the headers timeout does not run while the inner service is busy.
            StateProj::Readying { svc, .. } => match svc.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                // Never sent: no model failed. The request ends, as when the layer's own
                // `poll_ready` fails.
                Poll::Ready(Err(error)) => {
                    state.set(State::Done);
                    let shed = is_shed(&error);
                    return Poll::Ready(ctx.unready(error, shed));
                }
                Poll::Ready(Ok(())) => {
                    let StateReplace::Readying { mut svc, request } =
                        state.as_mut().project_replace(State::Done)
                    else {
                        continue;
                    };
                    let future = svc.call(request);
                    sent(&mut state, deadline.as_mut(), ctx, future);
                    continue;
                }
            },
            StateProj::Reading { read } => match read.poll_read(cx, &ctx.config) {
                Poll::Ready(()) => {
                    let StateReplace::Reading { read } =
                        state.as_mut().project_replace(State::Done)
                    else {
                        continue;
                    };
                    let decision = ctx.decide(Step::Answered(read));
                    if let Some(answer) = follow(decision, &mut state, deadline.as_mut(), ctx) {
                        return Poll::Ready(answer);
                    }
                    continue;
                }
                Poll::Pending => {
                    if !deadline.as_mut().passed(cx) {
                        return Poll::Pending;
                    }
                    state.set(State::Done);
                    let decision = ctx.decide(Step::TimedOut);
                    if let Some(answer) = follow(decision, &mut state, deadline.as_mut(), ctx) {
                        return Poll::Ready(answer);
                    }
                    continue;
                }
            },
            StateProj::Done => {
                return Poll::Ready(Ok(ApiError::polled_after_completion().to_response()))
            }
        };
        // An attempt's call future: headers, a transport error, or still waiting.
        let step = match polled {
            Poll::Ready(Ok(response)) if ctx.passthrough => {
                state.set(State::Done);
                return Poll::Ready(Ok(response.map(ResponseBody::inner)));
            }
            Poll::Ready(Ok(response)) => {
                let read = Reading::new(response, ctx.streaming());
                state.set(State::Reading { read });
                deadline.as_mut().arm(ctx.first_byte_timeout());
                continue;
            }
            // A `LoadShed` below refused the attempt: never sent, so no model failed, and
            // the next model would meet the same limit. The request ends, as on a readiness
            // error.
            Poll::Ready(Err(error)) if is_shed(&error) => {
                state.set(State::Done);
                return Poll::Ready(ctx.unready(error, true));
            }
            // A `Buffer` below tells through the call what its worker met: the service behind
            // it failed to become ready (or the worker is gone). The attempt never reached that
            // service; the next one would meet the same (a failed buffer stays failed).
            Poll::Ready(Err(error)) if is_buffer_refusal(&error) => {
                state.set(State::Done);
                return Poll::Ready(ctx.unready(error, false));
            }
            Poll::Ready(Err(error)) => Step::Failed(error),
            Poll::Pending if deadline.as_mut().passed(cx) => Step::TimedOut,
            Poll::Pending => return Poll::Pending,
        };
        state.set(State::Done);
        let decision = ctx.decide(step);
        if let Some(answer) = follow(decision, &mut state, deadline.as_mut(), ctx) {
            return Poll::Ready(answer);
        }
    }
}

/// Acts on the decision after an attempt: the next model's attempt, a retry of this one's
/// after its backoff, or the answer (returned).
fn follow<S, C, ResBody, B, R, E>(
    decision: Decision<R, E>,
    state: &mut Pin<&mut AttemptState<S, ResBody, B>>,
    deadline: Pin<&mut Deadline>,
    ctx: &mut Ctx<S, C>,
) -> Option<Result<R, E>>
where
    S: Service<Request<RouterBody>> + Clone,
{
    match decision {
        Decision::Next => start_next(state, deadline, ctx),
        // No timer for no wait: a runtime without time still retries at once.
        Decision::Retry(wait) if wait.is_zero() => start_next(state, deadline, ctx),
        Decision::Retry(wait) => {
            state.set(State::Backoff);
            deadline.arm(Some(wait));
        }
        Decision::Answer(answer) => return Some(answer),
    }
    None
}

/// The state machine of a routed request over service `S`.
type AttemptState<S, ResBody, B> =
    State<<S as Service<Request<RouterBody>>>::Future, S, ResBody, B>;

pin_project! {
    /// The timeout of the current phase of an attempt (headers, then first byte), or the end
    /// of a retry's backoff: one timer per request, reset for every later phase and attempt.
    ///
    /// A new deadline reaches the timer only when it is next asked whether it passed, that is when
    /// the request is about to wait: a small answer's body comes with its headers, and its
    /// first-byte deadline, never waited on, then costs no reset of the timer (about 0.15k
    /// instructions per request). Until then the old timer may wake the task early, for nothing.
    ///
    /// The timer is held in place (the future is pinned) rather than boxed: an allocation and
    /// its free fewer for every request that waits on a deadline.
    #[derive(Default)]
    struct Deadline {
        #[pin]
        sleep: Option<Sleep>,
        // The deadline armed since the timer was last set, if any: `Some(None)` for none at
        // all.
        next: Option<Option<Instant>>,
    }
}

impl Deadline {
    /// Starts `timeout` from now; `None` turns the deadline off (and out of the timer).
    fn arm(self: Pin<&mut Self>, timeout: Option<std::time::Duration>) {
        self.arm_from(timeout.map(|timeout| (Instant::now(), timeout)));
    }

    /// Starts a timeout from a given instant; `None` turns the deadline off.
    fn arm_from(self: Pin<&mut Self>, timeout: Option<(Instant, std::time::Duration)>) {
        // A timeout too long to add to its start never passes.
        *self.project().next =
            Some(timeout.and_then(|(start, timeout)| start.checked_add(timeout)));
    }

    /// Whether the deadline has passed (registering the waker while it has not).
    fn passed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        match this.next.take() {
            None => {}
            Some(None) => this.sleep.set(None),
            Some(Some(at)) => match this.sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(at),
                None => this.sleep.set(Some(tokio::time::sleep_until(at))),
            },
        }
        this.sleep
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready())
    }
}

/// The first attempt goes to the service `poll_ready` was called on, if the request still holds
/// it; else it waits for a clone's readiness, as a later attempt does.
fn start_first<S, C, ResBody, B>(
    state: &mut Pin<&mut AttemptState<S, ResBody, B>>,
    deadline: Pin<&mut Deadline>,
    ctx: &mut Ctx<S, C>,
) where
    S: Service<Request<RouterBody>> + Clone,
{
    if !ctx.readied {
        return start_next(state, deadline, ctx);
    }
    let request = ctx.attempt_request();
    let future = ctx.svc.call(request);
    sent(state, deadline, ctx, future);
}

/// A later attempt waits for the readiness of a clone of the service, then is sent.
fn start_next<S, C, ResBody, B>(
    state: &mut Pin<&mut AttemptState<S, ResBody, B>>,
    deadline: Pin<&mut Deadline>,
    ctx: &mut Ctx<S, C>,
) where
    S: Service<Request<RouterBody>> + Clone,
{
    let request = ctx.attempt_request();
    let svc = ctx.svc.clone();
    state.set(State::Readying { svc, request });
    deadline.arm(None);
}

/// The attempt went out: its duration and its headers timeout start now.
fn sent<S, C, ResBody, B>(
    state: &mut Pin<&mut AttemptState<S, ResBody, B>>,
    deadline: Pin<&mut Deadline>,
    ctx: &mut Ctx<S, C>,
    future: S::Future,
) where
    S: Service<Request<RouterBody>>,
{
    state.set(State::Sent { future });
    // One reading of the clock for both.
    let now = Instant::now();
    deadline.arm_from(ctx.headers_timeout().map(|timeout| (now, timeout)));
    ctx.attempt_started = Some(now);
}

/// A request's models, in order. The usual request names one model and gets no fallbacks:
/// that one is held inline, without the allocation (and free) a `Vec` of one costs.
enum Chain {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Chain {
    /// `first` (if any), with room for `more` models after it.
    fn new(first: Option<Arc<str>>, more: usize) -> Self {
        match first {
            Some(first) if more == 0 => Chain::One(first),
            first => {
                let mut models = Vec::with_capacity(usize::from(first.is_some()) + more);
                models.extend(first);
                Chain::Many(models)
            }
        }
    }

    fn push(&mut self, model: Arc<str>) {
        match self {
            Chain::Many(models) => models.push(model),
            Chain::One(first) => *self = Chain::Many(vec![first.clone(), model]),
        }
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::Many(Vec::new())
    }
}

impl std::ops::Deref for Chain {
    type Target = [Arc<str>];

    fn deref(&self) -> &[Arc<str>] {
        match self {
            Chain::One(model) => std::slice::from_ref(model),
            Chain::Many(models) => models,
        }
    }
}

impl std::ops::DerefMut for Chain {
    fn deref_mut(&mut self) -> &mut [Arc<str>] {
        match self {
            Chain::One(model) => std::slice::from_mut(model),
            Chain::Many(models) => models,
        }
    }
}

fn contains(chain: &[Arc<str>], model: &str) -> bool {
    chain.iter().any(|m| &**m == model)
}

/// The models an auto router handed over with the request, if any.
#[derive(Clone, Copy)]
enum Handed<'a> {
    None,
    /// Its ranking after the model it chose (`"model": "auto"`): this side's fallbacks.
    Ranking(&'a [Arc<str>]),
    /// The chain after `model` with a sentinel in the body's `models` replaced by the ranking:
    /// the client's own models (those of the body) where they stand, the ranking's additions
    /// (this side's) between them.
    Expansion(&'a [Arc<str>]),
}

/// `own` (the primary, then the client's other models: at most `max` of them, checked) in the
/// order of `expansion`, the sentinel's expansion of the client's `models`, with the ranking's
/// additions it holds between them, as many as fit in `max` and are `allowed`. A model of
/// `own` the expansion does not name (none, unless a layer between changed one of them) goes
/// last. Only requests with a sentinel in `models` get here.
fn in_expansion_order(
    own: Chain,
    expansion: &[Arc<str>],
    max: usize,
    allowed: impl Fn(&str) -> bool,
) -> Chain {
    let Some(first) = own.first().cloned() else {
        return own;
    };
    let mut room = max.saturating_sub(own.len());
    let mut chain = Chain::new(Some(first), own.len() + room);
    for model in expansion {
        if contains(&chain, model) {
            continue;
        }
        if contains(&own, model) {
            chain.push(model.clone());
        } else if room > 0 && allowed(model) {
            chain.push(model.clone());
            room -= 1;
        }
    }
    for model in own.iter() {
        if !contains(&chain, model) {
            chain.push(model.clone());
        }
    }
    chain
}

/// Up to this size, a rewritten body is copied into one buffer; above it, it is sent as
/// slices of the client's body around the replacements (no copy). A few KiB copy in less time
/// than a boxed list of slices takes to build, and the client below writes one chunk instead of
/// several (callgrind, the gateway with its primary cooling down, a 170-byte body: every request
/// rewritten, 4.5k instructions more than one that is not; see BENCHMARKS.md).
const SPLICE_COPY_LIMIT: usize = 16 * 1024;

/// [`MODEL_HEADER`] and [`ATTEMPTS_HEADER`] as header names, checked once at compile time
/// instead of on every response.
const MODEL_HEADER_NAME: HeaderName = HeaderName::from_static(MODEL_HEADER);
const ATTEMPTS_HEADER_NAME: HeaderName = HeaderName::from_static(ATTEMPTS_HEADER);

/// What to do after an attempt.
enum Decision<R, E> {
    Next,
    /// The same model again, after this wait.
    Retry(std::time::Duration),
    Answer(Result<R, E>),
}

/// The per-request state that survives across attempts.
struct Ctx<S, C> {
    svc: S,
    /// `svc` is the service `poll_ready` was called on, its readiness (a `ConcurrencyLimit`
    /// permit, a `Buffer` slot) reserved for the first attempt.
    readied: bool,
    classifier: C,
    config: Arc<Config>,
    /// The request head every attempt is built from; the last attempt takes it.
    head: Option<request::Parts>,
    request: Option<ChatRequest>,
    chain: Chain,
    current: usize,
    attempts: Vec<Attempt>,
    /// The first model of the chain before health reordered it, until the answer takes it.
    requested: Option<Arc<str>>,
    /// The models health moved back, in chain order: empty (not allocated) when all were well.
    passed_over: Vec<Arc<str>>,
    attempt_started: Option<Instant>,
    span: Span,
    attempt_span: Span,
    /// No model anywhere: the body goes upstream once, untouched, and the answer comes back
    /// as it is.
    passthrough: bool,
    /// The auto router's decision, when this layer routed the request (`auto_route`). Boxed:
    /// only auto requests have one.
    routed: Option<Box<AutoRouted>>,
    /// The budget that counts the body (this layer's `max_buffered_bytes`, or that of a layer
    /// above that buffered it), if any: the auto router's rewrite of the body is counted in it
    /// too, and the attempts' bodies say so to a routing layer below.
    charged: Option<BufferBudget>,
}

/// What the auto router decided for this request, and the span that records it.
struct AutoRouted {
    decision: RouteDecision,
    span: Span,
    /// With session affinity: the conversation, to remember the model that serves it.
    session: Option<crate::auto_route::SessionKey>,
}

/// Where buffering led.
enum Prepared {
    /// The chain is built: the first attempt can go.
    Ready,
    /// An async auto-router policy is deciding.
    Deciding(Deciding),
}

impl<S: Clone, C> Ctx<S, C> {
    /// The request is about to wait for its body (or an async policy's decision): it lets go
    /// of the service `poll_ready` was called on, and with it the readiness reserved below
    /// (a `ConcurrencyLimit` permit, a `Buffer` slot), which a client stalling its upload
    /// would otherwise hold from every other request. Dropping a readied service is allowed
    /// by tower's contract; the first attempt then waits for a clone's readiness.
    // Out of line: the usual request, its body whole at once, never gets here.
    #[cold]
    #[inline(never)]
    fn let_go(&mut self) {
        if self.readied {
            self.svc = self.svc.clone();
            self.readied = false;
        }
    }
}

impl<S, C> Ctx<S, C> {
    fn streaming(&self) -> bool {
        self.request.as_ref().is_some_and(ChatRequest::stream)
    }

    /// How long the current attempt may wait for its headers.
    fn headers_timeout(&self) -> Option<std::time::Duration> {
        self.stream_timeout().or(self.config.headers_timeout)
    }

    /// How long the current attempt may wait, after its headers, for the first event or body.
    fn first_byte_timeout(&self) -> Option<std::time::Duration> {
        self.stream_timeout().or(self.config.first_byte_timeout)
    }

    fn stream_timeout(&self) -> Option<std::time::Duration> {
        self.config.stream_timeout.filter(|_| self.streaming())
    }

    fn model(&self) -> Arc<str> {
        self.chain
            .get(self.current)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    /// How many attempts the current model has had so far, this one included once it is
    /// recorded: those at the end of the records (a model's attempts follow each other).
    fn attempts_of_current(&self) -> u32 {
        let Some(model) = self.chain.get(self.current) else {
            return 0;
        };
        let attempts = self.attempts.iter().rev();
        // The records share the chain's `Arc`s: a pointer comparison.
        let count = attempts
            .take_while(|a| Arc::ptr_eq(&a.model, model))
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The request of the current attempt: the client's head, the body with `model` spliced.
    fn attempt_request(&mut self) -> Request<RouterBody> {
        // The head is cloned while another attempt may follow: another model, or a retry (never
        // for a request passed through, which goes upstream once).
        let last = self.passthrough
            || (self.current + 1 >= self.chain.len()
                && (self.config.retries.max() == 0
                    || self.attempts_of_current() >= self.config.retries.max()));
        let head = if last {
            self.head.take()
        } else {
            self.head.clone()
        };
        let mut head = head.unwrap_or_else(|| Request::new(()).into_parts().0);
        let body = match &self.request {
            // The usual first attempt: the client's own model, nothing to remove.
            Some(request)
                if !self.passthrough
                    && request.model() == Some(&*self.chain[self.current])
                    && (self.config.keep_models || !request.has_models()) =>
            {
                RouterBody::charged(request.bytes().clone(), self.charged.as_ref())
            }
            Some(request) if !self.passthrough => {
                let splice = request.splice().set_model(&self.chain[self.current]);
                let splice = if self.config.keep_models {
                    splice
                } else {
                    splice.remove_models()
                };
                if request.bytes().len() <= SPLICE_COPY_LIMIT {
                    RouterBody::from(splice.to_bytes())
                } else {
                    RouterBody::from(splice.to_segments())
                }
            }
            Some(request) => RouterBody::charged(request.bytes().clone(), self.charged.as_ref()),
            None => RouterBody::empty(),
        };
        // The framing of a buffered body, and no compressed answer to classify.
        let ask_identity = !self.passthrough && self.config.identity_encoding;
        rewrite_head(&mut head.headers, body.buffered_len(), ask_identity);
        let model = self.model();
        if !self.passthrough {
            head.extensions.insert(RoutedModel(model.clone()));
        }
        self.attempt_span = tracing::debug_span!(
            parent: &self.span,
            "llm_router.attempt",
            gen_ai.request.model = &*model,
            llm_router.attempt = self.attempts.len() + 1,
            http.response.status_code = Empty,
            error.type = Empty,
        );
        Request::from_parts(head, body)
    }
}

impl<S, C: Classify> Ctx<S, C> {
    /// Parses the buffered body, routes an auto request (with `auto_route`) and builds the
    /// chain; a rejection is answered at once.
    fn prepare(&mut self, collected: Collected) -> Result<Prepared, ApiError> {
        let Collected { bytes, charged } = collected;
        self.charged = charged;
        // An AutoRouteLayer in front may have parsed these very bytes already.
        let parsed = self
            .head
            .as_mut()
            .and_then(|head| head.extensions.remove::<Parsed>())
            .and_then(|parsed| parsed.of(&bytes));
        let request = match parsed {
            Some(request) => request,
            None => ChatRequest::parse(bytes)?,
        };
        let next = match &self.config.auto {
            Some(auto) => {
                let scope = self.head.as_ref().and_then(|head| {
                    head.extensions
                        .get::<crate::auto_route::SessionScope>()
                        .copied()
                });
                crate::auto_route::route(auto, request, scope)?
            }
            None => AutoNext::Forward(request),
        };
        match next {
            AutoNext::Forward(request) => self.build_chain(request, Handed::None)?,
            AutoNext::Routed(routed, sentinel) => self.adopt((routed, sentinel))?,
            AutoNext::Decide(deciding) => return Ok(Prepared::Deciding(deciding)),
        }
        Ok(Prepared::Ready)
    }

    /// Takes the auto router's decision: its rewritten body, the decision for the layers below
    /// (a request extension, as an `AutoRouteLayer` in front would leave it) and for the caller,
    /// the rest of its ranking as the chain. `sentinel` is the model the client sent.
    fn adopt(&mut self, (routed, sentinel): (Routed, Arc<str>)) -> Result<(), ApiError> {
        let Routed {
            body,
            decision,
            fallbacks,
            passed_over,
            expands_models,
            copied,
            session,
            from_session,
        } = routed;
        // The rewrite is a buffer of its own: counted where the client's body was, which is
        // given back once let go (here, at the latest when this future is).
        let body = match &self.charged {
            Some(budget) if copied => charge_copy(body, budget),
            _ => body,
        };
        let request = ChatRequest::parse(body)?;
        if let Some(head) = self.head.as_mut() {
            head.extensions.insert(decision.clone());
        }
        let span = crate::auto_route::decision_span(&decision, &sentinel, from_session);
        self.routed = Some(Box::new(AutoRouted {
            decision,
            span,
            session,
        }));
        let handed = match expands_models {
            true => Handed::Expansion(&fallbacks),
            false => Handed::Ranking(&fallbacks),
        };
        self.build_chain(request, handed)?;
        if !passed_over.is_empty() {
            self.passed_over_by_router(passed_over);
        }
        Ok(())
    }

    /// Lists the models the auto router's ranking passed over before those the chain's own
    /// reorder passed over: they are in the chain (if at all) after the models that were well,
    /// and the reorder passes over only those it moves.
    #[cold]
    fn passed_over_by_router(&mut self, passed_over: Vec<Arc<str>>) {
        let by_chain = std::mem::replace(&mut self.passed_over, passed_over);
        for model in by_chain {
            if !contains(&self.passed_over, &model) {
                self.passed_over.push(model);
            }
        }
    }

    /// The chain an auto router in front handed over, when it expands a sentinel that stood in
    /// the body's `models` ([`ExpandedModels`]). Looked up only for a body with `models`.
    #[cold]
    fn handed_expansion(&self) -> Option<&[Arc<str>]> {
        let extensions = &self.head.as_ref()?.extensions;
        extensions.get::<ExpandedModels>()?;
        extensions
            .get::<FallbackModels>()
            .map(|FallbackModels(models)| &models[..])
    }

    /// The rejection's answer, with the auto router's decision when there was one.
    fn reject<B>(&mut self, rejection: ApiError) -> Response<B>
    where
        B: From<Bytes>,
    {
        let mut response = rejection.to_response();
        if let Some(routed) = self.routed.take() {
            response.extensions_mut().insert(routed.decision);
        }
        response
    }

    /// Whether the request goes to an endpoint that names a `model` but generates no
    /// completion (embeddings, moderation, images, audio, fine-tuning, batches, rerank): the
    /// configured fallbacks are chat models, and a failed embeddings request sent again with
    /// one would only swap its own error for the chat model's refusal.
    fn is_other_endpoint(&self) -> bool {
        self.head
            .as_ref()
            .is_some_and(|head| is_other_endpoint(head.uri.path()))
    }

    /// Builds the chain: the request's `model`, then its `models` (in the order of a sentinel's
    /// expansion when one stood among them), else `handed` (the auto router's ranking), else a
    /// [`FallbackModels`] extension, else the configured defaults. The client's own models
    /// over the cap or outside the allow-list are refused; this side's are cut or left out.
    fn build_chain(&mut self, request: ChatRequest, handed: Handed<'_>) -> Result<(), ApiError> {
        // The models after the first: the body's own, else the auto router's ranking, else
        // those a layer in front handed over (looked up only then: a lookup hashes a TypeId),
        // else the configured defaults. A body's own are ordered by the expansion of a
        // sentinel that stood among them, when there was one.
        let expansion = match handed {
            Handed::Expansion(chain) => Some(chain),
            _ if request.has_models() => self.handed_expansion(),
            _ => None,
        };
        let shared: &[Arc<str>] = if let Some(expansion) = expansion {
            expansion
        } else if request.has_models() {
            &[]
        } else if let Handed::Ranking(handed) = handed {
            handed
        } else if let Some(FallbackModels(models)) = self
            .head
            .as_ref()
            .and_then(|head| head.extensions.get::<FallbackModels>())
        {
            models
        } else if request.model_shared().is_some()
            && !self.config.default_fallbacks.is_empty()
            && !self.is_other_endpoint()
        {
            &self.config.default_fallbacks
        } else {
            &[]
        };
        // The first model: nothing to be unique against, nothing to copy.
        let mut chain = Chain::new(
            request.model_shared().cloned(),
            request.models().len() + shared.len(),
        );
        for model in request.models() {
            if !contains(&chain, model) {
                chain.push(Arc::from(model));
            }
        }
        // The client's own chain over the cap is refused; the rest (the auto router's ranking,
        // a handed-over or configured chain) is this side's, and is cut at the cap instead.
        if chain.len() > self.config.max_models {
            return Err(ApiError::bad_request(
                "too_many_models",
                format!(
                    "the fallback chain names {} models; at most {} are allowed",
                    chain.len(),
                    self.config.max_models
                ),
            )
            .with_param("models"));
        }
        // Already shared: a reference count, not a copy. This side's models outside the
        // allow-list are left out: the list refuses what a client asks for, and a client is
        // not to blame for the configuration. So is an empty one (a layer in front may hand
        // over any `FallbackModels`): it would go upstream as `{"model":""}`.
        let allowed = |model: &str| {
            !model.is_empty() && self.config.allow.as_ref().is_none_or(|a| a.matches(model))
        };
        if expansion.is_some() {
            chain = in_expansion_order(chain, shared, self.config.max_models, allowed);
        } else {
            for model in shared {
                if chain.len() == self.config.max_models {
                    break;
                }
                if !contains(&chain, model) && allowed(model) {
                    chain.push(model.clone());
                }
            }
        }
        if let Some(allow) = &self.config.allow {
            if let Some(refused) = chain.iter().find(|m| !allow.matches(m)) {
                return Err(ApiError::bad_request(
                    "model_not_allowed",
                    format!("the model `{refused}` is not allowed by this router"),
                )
                .with_param("model"));
            }
        }
        // An `Arc` clone: the answer's `Attempts` names the model asked even when the first
        // attempt goes to another one.
        self.requested = chain.first().cloned();
        self.passed_over = healthy_first(&*self.config.health, &mut chain[..]);
        // An `AutoRouteLayer` in front says what its ranking passed over.
        let by_router = self.head.as_mut().and_then(|head| {
            let PassedOverByRouter(models) = head.extensions.remove::<PassedOverByRouter>()?;
            Some(models)
        });
        if let Some(by_router) = by_router {
            self.passed_over_by_router(by_router);
        }
        if let Some(budget) = &self.config.budget {
            budget.deposit();
        }
        self.passthrough = chain.is_empty();
        // The model asked, as OpenTelemetry means `gen_ai.request.model`; each attempt's span
        // names the model it sent.
        let first = self.requested.as_deref().unwrap_or("");
        // Under the auto router's span when this layer routed the request, as it would be
        // with an `AutoRouteLayer` in front.
        self.span = match &self.routed {
            Some(routed) => tracing::info_span!(
                parent: &routed.span,
                "llm_router.fallback",
                gen_ai.request.model = first,
                gen_ai.response.model = Empty,
                llm_router.attempts = Empty,
            ),
            None => tracing::info_span!(
                "llm_router.fallback",
                gen_ai.request.model = first,
                gen_ai.response.model = Empty,
                llm_router.attempts = Empty,
            ),
        };
        self.chain = chain;
        self.request = Some(request);
        Ok(())
    }

    /// Classifies the attempt, records it, and decides whether the chain moves on.
    fn decide<ResBody, E: 'static>(
        &mut self,
        step: Step<ResBody, E>,
    ) -> Decision<Response<ResponseBody<ResBody>>, E>
    where
        ResBody: Body<Data = Bytes> + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let (class, status, wait) = match &step {
            Step::Answered(read) => {
                let class = read.class(&self.classifier);
                // Only a failure's wait is read (`Retry-After`, a rate limit's reset, Gemini's
                // `RetryInfo` in the error body or first event already read to classify it, a
                // rate limit's or a 503's words).
                let wait = class.and_then(|class| {
                    let (status, headers) = (read.parts.status, &read.parts.headers);
                    classify::wait_hint(status, class, headers, &read.classified_body())
                });
                (class, Some(read.parts.status), wait)
            }
            Step::Failed(error) => {
                let class = match as_dyn_error(error) {
                    Some(error) => self.classifier.classify_error(error),
                    // An error type we cannot look into is a transport failure of some kind.
                    None => ErrorClass::Downtime,
                };
                (Some(class), None, None)
            }
            Step::TimedOut => (Some(ErrorClass::Downtime), None, None),
        };
        // A stream's success is told to health when the stream ends well (its body tells it):
        // told now, it would reset the count of streams that broke after their first byte, and a
        // model that always breaks them would never cool down.
        let streamed =
            class.is_none() && matches!(&step, Step::Answered(read) if read.mode == Mode::Stream);
        self.record(class, status, wait, !streamed);
        if let Some(class) = class {
            // Off (the default): one comparison, on a failure only.
            if self.config.retries.max() > 0 && may_pass(&step) {
                if let Some(backoff) = self.retry_backoff(class, wait) {
                    return Decision::Retry(backoff);
                }
            }
            if self.moves_on(class) {
                self.current += 1;
                return Decision::Next;
            }
        }
        Decision::Answer(match step {
            Step::Answered(read) => {
                let sse = (read.mode == Mode::Stream).then(|| {
                    let sse = Sse::new(self.model());
                    match streamed && !self.passthrough {
                        true => sse.observed(self.config.health.clone(), self.attempt_started),
                        false => sse,
                    }
                });
                let mut response = read.into_response(sse);
                self.finish(&mut response);
                Ok(response)
            }
            Step::Failed(error) if self.config.answer_transport_errors && !self.passthrough => {
                // A timeout below the layer (`tower::timeout`, the client's own) is answered as
                // the layer's own timeouts are (504), not as a model that could not be reached.
                let timed_out = as_dyn_error(&error).is_some_and(classify::is_timeout);
                let (status, code, failed) = if timed_out {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "did not answer in time",
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "could not be reached",
                    )
                };
                let message = with_error(format!("the model `{}` {failed}", self.model()), &error);
                Ok(self.answer_failure(status, code, message))
            }
            Step::Failed(error) => {
                self.finish_span();
                Err(error)
            }
            Step::TimedOut => {
                // A request without a model: no model to name.
                let message = if self.passthrough {
                    "the upstream did not answer in time".to_owned()
                } else {
                    format!("the model `{}` did not answer in time", self.model())
                };
                Ok(self.answer_failure(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message))
            }
        })
    }

    /// The inner service refused an attempt before sending it: it failed to become ready for
    /// a later attempt (or, behind a `Buffer`, for any attempt: the buffer's worker tells it
    /// through the call), or a `LoadShed` below shed it. Its model is neither recorded as tried
    /// nor charged in health (the refusal says nothing about a model), and the request ends
    /// with the error, as it does when the layer's own `poll_ready` fails (or, with
    /// `answer_transport_errors`, with a 502 whose records name the models asked; a 503
    /// `overloaded` for a shed, which `shed` says: the caller has looked already; a 504
    /// `upstream_timeout` for a readiness that timed out).
    fn unready<ResBody, E: 'static>(
        &mut self,
        error: E,
        shed: bool,
    ) -> Result<Response<ResponseBody<ResBody>>, E> {
        // Back to the last model asked, if any: the records and the answer name it. A retry
        // that was refused was for that model already.
        let next = self.model();
        if !self.attempts.is_empty() && self.attempts_of_current() == 0 {
            self.current = self.current.saturating_sub(1);
        }
        if !self.config.answer_transport_errors || self.passthrough {
            self.finish_span();
            return Err(error);
        }
        // A shed is the stack's own overload, which a client may retry later: a 503, not the
        // 502 that blames an upstream. A readiness that timed out (a pool's wait) is answered
        // as the other timeouts below the layer are.
        let (status, code, failed) = if shed {
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "failed")
        } else if as_dyn_error(&error).is_some_and(classify::is_timeout) {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "timed out")
        } else {
            (StatusCode::BAD_GATEWAY, "upstream_unreachable", "failed")
        };
        let message = with_error(
            format!("the inner service {failed} before the model `{next}` could be asked"),
            &error,
        );
        Ok(self.answer_failure(status, code, message))
    }

    /// The layer's own answer to a last attempt that got no answer, with the records of the
    /// models tried.
    fn answer_failure<ResBody>(
        &mut self,
        status: StatusCode,
        code: &'static str,
        message: String,
    ) -> Response<ResponseBody<ResBody>> {
        let error = ApiError::new(status, "server_error", code, message);
        let mut response = error.to_response();
        self.finish(&mut response);
        response
    }

    fn record(
        &mut self,
        class: Option<ErrorClass>,
        status: Option<StatusCode>,
        wait: Option<std::time::Duration>,
        observe: bool,
    ) {
        let model = self.model();
        let sent_ago = self.attempt_started.map(|t| t.elapsed());
        let duration = sent_ago.unwrap_or_default();
        // A disabled span still looks its field up by name on `record`: skip it.
        let span_enabled = !self.attempt_span.is_disabled();
        if let (true, Some(status)) = (span_enabled, status) {
            self.attempt_span
                .record("http.response.status_code", status.as_u16());
        }
        let observation = match class {
            // Sent before a cooldown began, a success does not end it.
            None => Observation {
                sent_ago,
                ..Observation::succeeded()
            },
            Some(class) => {
                if span_enabled {
                    self.attempt_span.record("error.type", class.as_str());
                }
                tracing::debug!(
                    parent: &self.attempt_span,
                    gen_ai.request.model = &*model,
                    error.type = class.as_str(),
                    status = status.map(|s| s.as_u16()),
                    "attempt failed"
                );
                Observation::failed(class, wait)
            }
        };
        // A request without any model has nothing to teach the health store.
        if observe && !self.passthrough {
            self.config.health.observe(&model, observation);
        }
        self.attempts.push(Attempt {
            model,
            outcome: class.map_or(Outcome::Ok, Outcome::Failed),
            status,
            duration,
        });
    }

    /// How long to wait before the current model is asked again, if it is: see
    /// [`FallbackLayer::retries`](super::FallbackLayer::retries) for the rules. Called once the
    /// failed attempt is recorded (and observed by health).
    #[cold]
    fn retry_backoff(
        &self,
        class: ErrorClass,
        wait: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        let retries = self.config.retries;
        if class != ErrorClass::Downtime || self.passthrough {
            return None;
        }
        let done = self.attempts_of_current().saturating_sub(1);
        if done >= retries.max() {
            return None;
        }
        let ceiling = retries.ceiling(done);
        // An upstream that says how long it is down for is believed: longer than this retry
        // would wait, and the next model answers sooner.
        if wait.is_some_and(|wait| wait > ceiling) {
            return None;
        }
        let model = self.chain.get(self.current)?;
        if self.config.health.is_cooling_down(model) {
            return None;
        }
        if !self.config.budget.as_ref().is_none_or(|b| b.withdraw()) {
            return None;
        }
        Some(equal_jitter(ceiling).max(wait.unwrap_or_default()))
    }

    fn moves_on(&self, class: ErrorClass) -> bool {
        self.config.fallback_on.contains(class)
            && self.current + 1 < self.chain.len()
            && self.config.budget.as_ref().is_none_or(|b| b.withdraw())
    }

    /// Records the outcome on the request span (when it is enabled); returns the attempts
    /// header value when the span or the headers need it.
    fn finish_span(&self) -> Option<String> {
        // A request without a model was not routed: nothing to say, as when it is answered.
        if self.passthrough {
            return None;
        }
        // A disabled span still looks its fields up by name on `record`.
        let span_enabled = !self.span.is_disabled();
        if !span_enabled && !self.config.headers {
            return None;
        }
        let attempts = super::header_value(&self.attempts);
        // No model was asked when the only attempt was refused below the layer before it was
        // sent: no model produced the answer.
        if span_enabled && !self.attempts.is_empty() {
            self.span.record("gen_ai.response.model", &*self.model());
            self.span.record("llm_router.attempts", attempts.as_str());
        }
        Some(attempts)
    }

    /// With session affinity, remembers the model that served a successful answer (after a
    /// fallback, not the router's pick) for the conversation the router keyed.
    fn remember_served(
        &self,
        routed: &AutoRouted,
        status: http::StatusCode,
        model: Option<&Arc<str>>,
    ) {
        if let (Some(key), Some(model), Some(auto)) = (routed.session, model, &self.config.auto) {
            crate::auto_route::remember_served(auto, key, status, model);
        }
    }

    /// Adds the extensions and headers that say what happened. A request without a model (the
    /// layer routed nothing) gets none, whether it was answered or timed out.
    /// The response is changed in place, not copied in and out.
    fn finish<B>(&mut self, response: &mut Response<B>) {
        if self.passthrough {
            return;
        }
        // None when the only attempt was refused below the layer before it was sent: then no
        // model produced the answer, and neither the header nor `ServedModel` names one.
        let model = Some(self.model()).filter(|_| !self.attempts.is_empty());
        // The usual answer: the first model's, with no span to record it on. Its two header
        // values are the ones this thread made for that model before, if any.
        let remembered = match (&model, &self.attempts[..]) {
            (Some(model), [only])
                if self.config.headers
                    && only.outcome == Outcome::Ok
                    && only.model == *model
                    && self.span.is_disabled() =>
            {
                first_answer_headers(only)
            }
            _ => None,
        };
        let attempts_value = match remembered {
            Some((model_value, attempts_value)) => {
                let headers = response.headers_mut();
                headers.insert(MODEL_HEADER_NAME, model_value);
                headers.insert(ATTEMPTS_HEADER_NAME, attempts_value);
                None
            }
            None => self.finish_span(),
        };
        let attempts = Attempts {
            tried: std::mem::take(&mut self.attempts),
            requested: self.requested.take().unwrap_or_else(|| self.model()),
            passed_over: std::mem::take(&mut self.passed_over),
        };
        if let (true, Some(attempts_value), Some(model)) =
            (self.config.headers, attempts_value, &model)
        {
            let headers = response.headers_mut();
            // Model names come from the client: one a header cannot carry is left out rather
            // than failing the response.
            if let Ok(value) = HeaderValue::from_bytes(model.as_bytes()) {
                headers.insert(MODEL_HEADER_NAME, value);
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(attempts_value)) {
                headers.insert(ATTEMPTS_HEADER_NAME, value);
            }
        }
        if let Some(routed) = self.routed.as_ref() {
            self.remember_served(routed, response.status(), model.as_ref());
        }
        if let Some(model) = model {
            response.extensions_mut().insert(ServedModel(model));
        }
        response.extensions_mut().insert(attempts);
        if let Some(routed) = self.routed.take() {
            response.extensions_mut().insert(routed.decision);
        }
    }
}

/// Whether a failed attempt's fault may be gone a moment later, so that a retry may answer: not
/// after a timeout (the attempt already waited its whole allowance, better spent on the next
/// model), nor after a redirect, not followed or followed in a loop (the same URL redirects
/// the same way again).
#[cold]
fn may_pass<ResBody, E: 'static>(step: &Step<ResBody, E>) -> bool {
    match step {
        Step::TimedOut => false,
        Step::Failed(error) => as_dyn_error(error).is_none_or(|error| {
            !classify::is_timeout(error) && !classify::is_redirect_error(error)
        }),
        Step::Answered(read) => !classify::is_redirect(read.parts.status),
    }
}

thread_local! {
    /// The state of this thread's xorshift generator for retry jitter; 0 until first used.
    static JITTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A wait between half of `ceiling` and `ceiling`, chosen at random ("equal jitter"): the
/// requests one outage failed together come back spread out, and each still waits long enough
/// for a short outage to pass. The randomness is a thread-local xorshift64* seeded from the
/// standard library's per-process random hash keys: no dependency, no lock, no allocation, and
/// no quality a backoff needs beyond spreading.
fn equal_jitter(ceiling: std::time::Duration) -> std::time::Duration {
    use std::hash::BuildHasher;
    let random = JITTER.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // Never 0, the one state xorshift cannot leave.
            x = std::collections::hash_map::RandomState::new().hash_one(ceiling) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    let half = ceiling / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    // `random / 2^64` of the half: a fraction in [0, 1), without floating point.
    let extra = (u128::from(random) * u128::from(span)) >> 64;
    half + std::time::Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
}

thread_local! {
    /// Header values made for answers of a model's only attempt.
    static FIRST_ANSWERS: RefCell<Recent<FirstAnswer>> = const { RefCell::new(Recent::new()) };
}

/// The header values of an answer given by the only attempt, to its model.
struct FirstAnswer {
    model: Arc<str>,
    model_value: HeaderValue,
    attempts_value: HeaderValue,
}

/// The model and attempts header values of an answer its only attempt (`attempt`, a success)
/// gave: those this thread made for the same model before when it did, shared (a reference
/// count each), else new ones, kept for the next answers when the name is short. Making them
/// (the attempts text, two copies, two checks) cost about 0.5k instructions per request; a
/// gateway's answers come from a few models. `None` when the model's name cannot be a header
/// value: the caller then takes the usual path, which leaves both headers out.
fn first_answer_headers(attempt: &Attempt) -> Option<(HeaderValue, HeaderValue)> {
    recent::with(&FIRST_ANSWERS, |made| {
        if let Some(known) = made.find(|known| known.model == attempt.model) {
            return Some((known.model_value.clone(), known.attempts_value.clone()));
        }
        if attempt.model.len() > RECENT_MODEL_MAX {
            return None;
        }
        // As the usual path makes them.
        let model_value = HeaderValue::from_bytes(attempt.model.as_bytes()).ok()?;
        let attempts_value = HeaderValue::from_maybe_shared(Bytes::from(super::header_value(
            std::slice::from_ref(attempt),
        )))
        .ok()?;
        made.keep(FirstAnswer {
            model: attempt.model.clone(),
            model_value: model_value.clone(),
            attempts_value: attempts_value.clone(),
        });
        Some((model_value, attempts_value))
    })
}

/// How much of an answer is read before it is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A non-2xx answer: the error body, up to a cap.
    Error,
    /// A streamed answer: up to the end of the first SSE `data:` event past the preamble.
    Stream,
    /// A non-streamed 2xx: the body up to a cap (a 200 can still carry an error).
    Inspect,
    /// A 2xx event stream with a `Content-Encoding`: nothing read, classified by its status
    /// and headers, passed on as it comes (no event of the layer's own added to it).
    Encoded,
}

/// Whether an answer's body is encoded (`Content-Encoding` other than `identity`).
fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(crate::buffer::is_a_coding)
}

/// An answer whose head has arrived and whose first bytes are being read.
struct Reading<B> {
    parts: response::Parts,
    body: Option<Held<B>>,
    prefix: ChunkBuf,
    /// For a stream: whether `prefix` holds the first event past the preamble yet, scanned as
    /// it grows.
    first_event: classify::FirstEvent,
    /// Boxed, as in the body it becomes: rare, and this state is part of every request's future.
    trailers: Option<Box<HeaderMap>>,
    error: Option<BoxError>,
    mode: Mode,
}

impl<B> Reading<B>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    fn new(response: Response<B>, streaming_request: bool) -> Self {
        let (parts, body) = response.into_parts();
        // One lookup of the type, for both questions.
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let mode = if !parts.status.is_success() {
            Mode::Error
        } else if content_type.map_or(streaming_request, classify::is_event_stream_type) {
            // A compressed stream's events cannot be read (an upstream that ignored the
            // `identity` asked for, or `identity_encoding(false)`): waiting for its first one
            // would take a good answer for a broken one.
            if is_encoded(&parts.headers) {
                Mode::Encoded
            } else {
                Mode::Stream
            }
        } else {
            Mode::Inspect
        };
        Self {
            parts,
            body: Some(Held::new(body)),
            prefix: ChunkBuf::default(),
            first_event: classify::FirstEvent::default(),
            trailers: None,
            error: None,
            mode,
        }
    }

    fn limit(&self, config: &Config) -> usize {
        match self.mode {
            Mode::Error => config.max_error_body,
            Mode::Stream => config.max_sse_prefix,
            Mode::Inspect => config.max_inspected_body,
            Mode::Encoded => 0,
        }
    }

    fn has_enough(&mut self, config: &Config) -> bool {
        // The first event is looked for before the limit: a stream done before any content
        // must be seen as such however long its preamble.
        self.mode == Mode::Stream && self.first_event.complete(self.prefix.as_slice())
            || self.prefix.len() >= self.limit(config)
    }

    /// Reads until the answer can be classified: the body ended, broke, or enough is read.
    fn poll_read(&mut self, cx: &mut Context<'_>, config: &Config) -> Poll<()> {
        loop {
            if self.has_enough(config) {
                return Poll::Ready(());
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(());
            };
            match ready!(body.poll_frame(cx)) {
                None => self.body = None,
                Some(Err(error)) => {
                    self.error = Some(error);
                    self.body = None;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.prefix.push(data),
                    Err(frame) => {
                        // Trailers are the last frame.
                        self.trailers = frame.into_trailers().ok().map(Box::new);
                        self.body = None;
                    }
                },
            }
        }
    }

    fn class<C: Classify>(&self, classifier: &C) -> Option<ErrorClass> {
        let prefix = self.prefix.as_slice();
        if let Some(class) =
            classifier.classify_response(self.parts.status, &self.parts.headers, prefix)
        {
            return Some(class);
        }
        let broke_early = self.error.is_some();
        (broke_early || self.ended_without_event()).then_some(ErrorClass::Downtime)
    }

    /// What a failure was classified from, for the wait it asks for (Gemini's `RetryInfo`):
    /// the body read, or the data of an event stream's first event past the preamble, where
    /// its error sits (a 200 stream's, or an error status's whose body is an event stream: its
    /// raw bytes are no JSON). A 200 stream's event is read from where the scan of its start
    /// found it, not from the start again; borrowed unless its data spans several `data:`
    /// lines.
    fn classified_body(&self) -> Cow<'_, [u8]> {
        let prefix = self.prefix.as_slice();
        let start = match self.mode {
            Mode::Stream => self.first_event.event_start(),
            _ => 0,
        };
        classify::payload_from(&self.parts.headers, prefix, start)
            .map_or(Cow::Borrowed(&[]), |(data, _)| data)
    }

    /// Whether this is a stream that ended, without an error, before its first event past the
    /// preamble was complete, or that was done (`[DONE]`, Anthropic's `message_stop`) before
    /// any content or finish: broken as surely as one whose connection was cut.
    fn ended_without_event(&self) -> bool {
        self.mode == Mode::Stream
            && self.error.is_none()
            && (self.first_event.ended()
                || self.body.is_none()
                    && matches!(
                        classify::scan_sse(self.prefix.as_slice()).event,
                        SseEvent::NeedMore
                    ))
    }

    fn into_response(mut self, sse: Option<Sse>) -> Response<ResponseBody<B>> {
        // A stream done before any content goes on up to its end (`[DONE]`), not beyond: a
        // client stops reading there, and would miss the error event.
        let mut replayed = self.prefix.len();
        if self.ended_without_event() {
            // Told like a cut: the stream ends with the error event, not silently.
            self.error = Some(if self.first_event.ended() {
                replayed = self.first_event.event_start();
                "the stream was done before any content".into()
            } else {
                "the stream ended before its first event".into()
            });
        }
        if sse.is_some()
            && (self.body.is_some()
                || self.error.is_some()
                || !crate::body::is_whole_stream(self.prefix.as_slice()))
        {
            // The body may end with an error event of the layer's own, which the upstream's
            // length does not count: a server in front would cut it off there.
            self.parts.headers.remove(header::CONTENT_LENGTH);
        }
        // Decided once, from the stream's first event, before its bytes move into the body.
        let sse = sse.map(|sse| sse.starting_with(self.prefix.as_slice()));
        let mut prefix = self.prefix.take();
        prefix.truncate(replayed);
        let body = ResponseBody::replay(prefix, self.body, self.trailers, self.error, sse);
        Response::from_parts(self.parts, body)
    }
}

/// Whether the inner service's error is a `LoadShed`'s refusal (`Overloaded` among its
/// sources): the attempt was never sent.
fn is_shed<E: 'static>(error: &E) -> bool {
    as_dyn_error(error).is_some_and(|error| {
        classify::sources(error).any(|e| e.is::<tower::load_shed::error::Overloaded>())
    })
}

/// Whether the inner service's error is a `Buffer`'s own (`ServiceError`, `Closed` among its
/// sources): its worker found the service behind it failed to become ready, or is gone, and
/// never called it with the attempt. An error of the call itself comes through a buffer as it
/// is, not as one of these.
fn is_buffer_refusal<E: 'static>(error: &E) -> bool {
    use tower::buffer::error::{Closed, ServiceError};
    as_dyn_error(error).is_some_and(|error| {
        classify::sources(error).any(|e| e.is::<ServiceError>() || e.is::<Closed>())
    })
}

#[cfg(test)]
#[test]
fn a_chain_of_one_grows_as_a_list_does() {
    let model = |name: &str| Arc::<str>::from(name);
    let names = |chain: &Chain| chain.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    assert!(Chain::default().is_empty());
    assert!(Chain::new(None, 2).is_empty());
    let mut one = Chain::new(Some(model("a")), 0);
    assert!(matches!(one, Chain::One(_)));
    assert_eq!(names(&one), ["a"]);
    one.push(model("b"));
    one.push(model("c"));
    assert_eq!(names(&one), ["a", "b", "c"]);
    let mut many = Chain::new(Some(model("a")), 2);
    many.push(model("b"));
    many[..].swap(0, 1);
    assert_eq!(names(&many), ["b", "a"]);
    let mut none = Chain::new(None, 0);
    none.push(model("x"));
    assert_eq!(names(&none), ["x"]);
}

#[cfg(test)]
#[test]
fn an_expansion_orders_the_clients_models_and_cuts_only_its_own() {
    let chain = |names: &[&str]| {
        let mut chain = Chain::new(None, names.len());
        names.iter().for_each(|name| chain.push(Arc::from(*name)));
        chain
    };
    let names = |chain: &Chain| chain.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    let own = || chain(&["gpt-4o", "claude", "gemini"]);
    let expansion = chain(&["r1", "claude", "r2", "r3", "gemini"]);
    let every = |_: &str| true;
    assert_eq!(
        names(&in_expansion_order(own(), &expansion, 9, every)),
        ["gpt-4o", "r1", "claude", "r2", "r3", "gemini"]
    );
    // Room for one addition: the first the allow-list takes.
    assert_eq!(
        names(&in_expansion_order(own(), &expansion, 4, every)),
        ["gpt-4o", "r1", "claude", "gemini"]
    );
    assert_eq!(
        names(&in_expansion_order(own(), &expansion, 4, |m: &str| m != "r1")),
        ["gpt-4o", "claude", "r2", "gemini"]
    );
    assert_eq!(
        names(&in_expansion_order(own(), &expansion, 3, every)),
        ["gpt-4o", "claude", "gemini"]
    );
    // A model of the client's the expansion does not name goes last.
    assert_eq!(
        names(&in_expansion_order(
            own(),
            &chain(&["r1", "gemini"]),
            4,
            every
        )),
        ["gpt-4o", "r1", "gemini", "claude"]
    );
}

#[cfg(test)]
#[test]
fn endpoints_that_complete_nothing() {
    for path in [
        "/v1/embeddings",
        "/v1/embeddings/",
        "/openai/deployments/ada/embeddings",
        "/v1/moderations",
        "/v1/rerank",
        "/v1/batches",
        "/v1/images/generations",
        "/v1/audio/speech",
        "/v1/fine_tuning/jobs",
    ] {
        assert!(is_other_endpoint(path), "{path}");
    }
    for path in [
        "/v1/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions",
        "/v1/completions",
        "/v1/messages",
        "/v1/responses",
        "/api/chat",
        "/",
        "",
    ] {
        assert!(!is_other_endpoint(path), "{path}");
    }
}

/// Whether `path` is an OpenAI-compatible endpoint that is not a completion: the last
/// segment `embeddings`, `moderations` or `rerank`, or a path under `images`, `audio`,
/// `fine_tuning` or `batches`.
fn is_other_endpoint(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or_default();
    matches!(last, "embeddings" | "moderations" | "rerank" | "batches")
        || path
            .split('/')
            .any(|segment| matches!(segment, "images" | "audio" | "fine_tuning"))
}

/// `message`, then `: ` and the error's text when the error can be looked into.
fn with_error<E: 'static>(message: String, error: &E) -> String {
    match as_dyn_error(error) {
        Some(error) => format!("{message}: {}", classify::describe_error(error)),
        None => message,
    }
}

/// A view of the inner service's error as `dyn Error`, for the error types a tower stack in
/// front of an HTTP client produces. Others cannot be looked into.
fn as_dyn_error<E: 'static>(error: &E) -> Option<&(dyn std::error::Error + 'static)> {
    let any = error as &dyn Any;
    if let Some(e) = any.downcast_ref::<BoxError>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn std::error::Error + Send>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn std::error::Error>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<hyper_util::client::legacy::Error>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<hyper::Error>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<std::io::Error>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<tower::timeout::error::Elapsed>() {
        return Some(e);
    }
    #[cfg(feature = "reqwest")]
    {
        if let Some(e) = any.downcast_ref::<reqwest::Error>() {
            return Some(e);
        }
        if let Some(e) = any.downcast_ref::<reqwest_middleware::Error>() {
            return Some(e);
        }
    }
    None
}

#[cfg(test)]
#[test]
fn a_jittered_wait_lies_between_half_its_ceiling_and_the_ceiling() {
    use std::time::Duration;
    for ceiling in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(200),
        Duration::from_secs(2),
        Duration::MAX,
    ] {
        let waits: Vec<Duration> = (0..64).map(|_| equal_jitter(ceiling)).collect();
        for wait in &waits {
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
        }
        if ceiling >= Duration::from_millis(200) {
            assert!(waits.iter().any(|w| *w != waits[0]), "spread: {waits:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Request, Response};
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use tower::ServiceExt;

    use crate::{Fallback, RouterBody};

    /// A 200 whose body ends in trailers: the layer reads the body to classify it (the
    /// trailers come with it) and the caller still gets every byte and the trailers.
    #[tokio::test]
    async fn trailers_read_while_classifying_are_replayed() {
        let upstream = tower::service_fn(|_req: Request<RouterBody>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-usage-tokens", HeaderValue::from_static("42"));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"{\"id\":\"c1\","))),
                Ok(Frame::data(Bytes::from_static(b"\"choices\":[]}"))),
                Ok(Frame::trailers(trailers)),
            ];
            Ok::<_, Infallible>(Response::new(StreamBody::new(futures::stream::iter(
                frames,
            ))))
        });
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(RouterBody::from(Bytes::from_static(
                br#"{"model":"a","models":["b"],"messages":[]}"#,
            )))
            .unwrap();
        let response = Fallback::new(upstream).oneshot(request).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("the trailers");
        assert_eq!(trailers["x-usage-tokens"], "42");
        assert_eq!(&collected.to_bytes()[..], br#"{"id":"c1","choices":[]}"#);
    }

    /// A stream whose `Content-Type` is spelled in capitals is a stream all the same (media
    /// types are case-insensitive): passed on event by event, and a break after the first
    /// event ends it with an SSE error event instead of failing the whole answer.
    #[tokio::test]
    async fn an_event_stream_in_any_case_is_streamed() {
        let upstream = tower::service_fn(|_req: Request<RouterBody>| async {
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                ))),
                Err(std::io::ErrorKind::ConnectionReset.into()),
            ];
            let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
            );
            Ok::<_, Infallible>(response)
        });
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(RouterBody::from(Bytes::from_static(
                br#"{"model":"a","models":["b"],"stream":true,"messages":[]}"#,
            )))
            .unwrap();
        let response = Fallback::new(upstream).oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-llm-router-attempts"], "a=ok");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("data: {\"choices\""), "{text}");
        assert!(text.contains(r#""finish_reason":"error""#), "{text}");
    }

    proptest::proptest! {
        /// The header values kept for a model's first answers are those the usual path makes:
        /// names repeat (kept ones are reused), some cannot be header values, some are too
        /// long to keep.
        #[test]
        fn first_answer_headers_are_the_usual_ones(
            names in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Strategy::prop_map(
                        proptest::sample::select(vec!["gpt-4o", "gpt-4o-mini", "a\nb", "é"]),
                        str::to_owned,
                    ),
                    "[a-z0-9\t\u{7f}\u{e9} .-]{0,80}",
                ],
                1..16,
            ),
        ) {
            for name in names.iter().chain(&names) {
                let attempt = super::Attempt {
                    model: std::sync::Arc::from(name.as_str()),
                    outcome: super::Outcome::Ok,
                    status: Some(http::StatusCode::OK),
                    duration: std::time::Duration::ZERO,
                };
                let usual = HeaderValue::from_bytes(attempt.model.as_bytes())
                    .ok()
                    .zip(HeaderValue::from_maybe_shared(Bytes::from(
                        crate::fallback::header_value(std::slice::from_ref(&attempt)),
                    )).ok());
                let fast = super::first_answer_headers(&attempt);
                match fast {
                    Some(fast) => proptest::prop_assert_eq!(Some(fast), usual),
                    // Only what the usual path cannot make, or a name too long to keep.
                    None => proptest::prop_assert!(
                        usual.is_none() || name.len() > crate::recent::RECENT_MODEL_MAX
                    ),
                }
            }
        }
    }
}
