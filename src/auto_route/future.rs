use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{request, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;
use tracing::Span;

use super::decide::{decide_async, decide_default, decide_sync, Ask, Routed};
use super::policy::{Config, Policy, RouteDecision};
use super::session::{SessionKey, SessionScope};
use crate::body::RouterBody;
use crate::buffer::{frame_buffered, Collect, Collected};
use crate::buffer_budget::{charge_copy, BufferBudget};
use crate::fallback::{ExpandedModels, FallbackModels, PassedOverByRouter, ServedModel};
use crate::payload::{ChatRequest, Parsed};
use crate::{ApiError, BoxError};

/// An async policy's decision in flight, with the sentinel the client sent.
pub(crate) type Deciding =
    Pin<Box<dyn Future<Output = Result<(Routed, Arc<str>), ApiError>> + Send>>;

pin_project! {
    /// Response future of [`AutoRoute`](super::AutoRoute).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RouterBody>>,
    {
        #[pin]
        state: State<S, S::Future, B>,
        decision: Option<RouteDecision>,
        span: Span,
        // With session affinity: where to remember the model that serves the request.
        session: Option<(Arc<Config>, SessionKey)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B> {
        Rejected { rejection: Option<ApiError> },
        Buffering { #[pin] collect: Collect<B>, pending: Option<Pending<S>> },
        // Only an async policy gets here; the default router decides while buffering ends.
        Deciding { deciding: Deciding, pending: Option<Pending<S>> },
        // Only when the request let go of the service `poll_ready` was called on while it
        // waited (see `Pending::let_go`): a clone's readiness, before the call.
        Readying { inner: S, request: Option<Request<RouterBody>> },
        Calling { #[pin] future: F },
    }
}

/// What the request needs until the inner service is called. Kept in the states before
/// `Calling` rather than beside the state, so that its space is shared with the inner future
/// (this future is moved several times on its way to the server).
struct Pending<S> {
    inner: S,
    /// `inner` is the service `poll_ready` was called on, its readiness reserved for the call.
    readied: bool,
    config: Arc<Config>,
    head: request::Parts,
    /// The budget that counts the body once it is collected (this layer's
    /// `max_buffered_bytes`, or that of a layer above that buffered it), if any.
    charged: Option<BufferBudget>,
}

impl<S: Clone> Pending<S> {
    /// The request is about to wait for its body (or an async policy's decision): it lets go
    /// of the service `poll_ready` was called on, and with it the readiness reserved below
    /// (a `ConcurrencyLimit` permit, a `Buffer` slot), which a client stalling its upload
    /// would otherwise hold from every other request. Dropping a readied service is allowed
    /// by tower's contract; the call then waits for a clone's readiness.
    // Out of line: the usual request, its body whole at once, never gets here.
    #[cold]
    #[inline(never)]
    fn let_go(pending: &mut Option<Self>) {
        if let Some(pending) = pending.as_mut().filter(|pending| pending.readied) {
            pending.inner = pending.inner.clone();
            pending.readied = false;
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RouterBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RouterBody>>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    pub(super) fn passthrough(future: S::Future) -> Self {
        Self::with_state(State::Calling { future })
    }

    pub(super) fn rejected(rejection: ApiError) -> Self {
        Self::with_state(State::Rejected {
            rejection: Some(rejection),
        })
    }

    pub(super) fn routed(inner: S, config: Arc<Config>, head: request::Parts, body: B) -> Self {
        let collect = Collect::new(body, &config.body);
        let pending = Pending {
            inner,
            readied: true,
            config,
            head,
            charged: None,
        };
        Self::with_state(State::Buffering {
            collect,
            pending: Some(pending),
        })
    }

    fn with_state(state: State<S, S::Future, B>) -> Self {
        Self {
            state,
            decision: None,
            span: Span::none(),
            session: None,
        }
    }
}

/// What buffering (and, for the default router, deciding) came to. Short-lived, on the stack.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// Not an auto request: the body goes on as it came (with its parsed view).
    Forward(ChatRequest),
    /// Decided, with the sentinel the client sent (`auto`, `openrouter/auto`, a custom one).
    Routed(Routed, Arc<str>),
    Decide(Deciding),
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<RouterBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (next, pending) = match this.state.as_mut().project() {
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .unwrap_or_else(ApiError::polled_after_completion);
                    return Poll::Ready(Ok(rejection.to_response()));
                }
                StateProj::Calling { future } => {
                    let _entered = this.span.enter();
                    let mut response = ready!(future.poll(cx))?;
                    if let Some((config, key)) = this.session.take() {
                        remember(&config, key, &response, this.decision.as_ref());
                    }
                    if let Some(decision) = this.decision.take() {
                        response.extensions_mut().insert(decision);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Readying { inner, request } => {
                    // A readiness error ends the request, as the layer's own `poll_ready` would.
                    ready!(inner.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        this.state.set(State::Rejected {
                            rejection: Some(ApiError::polled_after_completion()),
                        });
                        continue;
                    };
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                    continue;
                }
                StateProj::Buffering { collect, pending } => {
                    let Poll::Ready(collected) = collect.poll_collect(cx) else {
                        Pending::let_go(pending);
                        return Poll::Pending;
                    };
                    let mut pending = pending.take();
                    let collected = collected.map(|Collected { bytes, charged }| {
                        if let Some(pending) = pending.as_mut() {
                            pending.charged = charged;
                        }
                        bytes
                    });
                    let config = pending.as_ref().map(|p| &p.config);
                    let scope = pending
                        .as_ref()
                        .and_then(|p| p.head.extensions.get::<SessionScope>().copied());
                    match collected.and_then(|bytes| start(config, bytes, scope)) {
                        Ok(next) => (next, pending),
                        Err(rejection) => {
                            this.state.set(State::Rejected {
                                rejection: Some(rejection),
                            });
                            continue;
                        }
                    }
                }
                StateProj::Deciding { deciding, pending } => {
                    let Poll::Ready(decided) = deciding.as_mut().poll(cx) else {
                        Pending::let_go(pending);
                        return Poll::Pending;
                    };
                    match decided {
                        Ok((routed, sentinel)) => (Next::Routed(routed, sentinel), pending.take()),
                        Err(rejection) => {
                            this.state.set(State::Rejected {
                                rejection: Some(rejection),
                            });
                            continue;
                        }
                    }
                }
            };
            let (body, extensions, copied) = match next {
                Next::Decide(deciding) => {
                    this.state.set(State::Deciding { deciding, pending });
                    continue;
                }
                Next::Forward(request) => {
                    (request.bytes().clone(), Handoff::Parsed(request), false)
                }
                Next::Routed(routed, sentinel) => {
                    *this.span = decision_span(&routed.decision, &sentinel, routed.from_session);
                    if let (Some(key), Some(pending)) = (routed.session, &pending) {
                        *this.session = Some((pending.config.clone(), key));
                    }
                    *this.decision = Some(routed.decision.clone());
                    let handoff = Handoff::Routed(
                        routed.decision,
                        routed.fallbacks,
                        routed.expands_models,
                        routed.passed_over,
                    );
                    (routed.body, handoff, routed.copied)
                }
            };
            let Some(Pending {
                mut inner,
                readied,
                mut head,
                charged,
                ..
            }) = pending
            else {
                this.state.set(State::Rejected {
                    rejection: Some(ApiError::polled_after_completion()),
                });
                continue;
            };
            match extensions {
                Handoff::Routed(decision, fallbacks, expands_models, passed_over) => {
                    head.extensions.insert(FallbackModels(fallbacks));
                    if expands_models {
                        head.extensions.insert(ExpandedModels);
                    }
                    if !passed_over.is_empty() {
                        head.extensions.insert(PassedOverByRouter(passed_over));
                    }
                    head.extensions.insert(decision);
                    // A rewritten body: framed anew. One passed on as it came keeps the
                    // caller's framing, which describes it.
                    frame_buffered(&mut head.headers, body.len());
                }
                Handoff::Parsed(request) => {
                    head.extensions.insert(Parsed(request));
                }
            }
            // The rewrite is a buffer of its own: counted where the client's body was, which
            // is given back once let go (at the latest, as the request goes on).
            let body = match &charged {
                Some(budget) if copied => charge_copy(body, budget),
                _ => body,
            };
            let request = Request::from_parts(head, RouterBody::charged(body, charged.as_ref()));
            if !readied {
                this.state.set(State::Readying {
                    inner,
                    request: Some(request),
                });
                continue;
            }
            let future = inner.call(request);
            this.state.set(State::Calling { future });
        }
    }
}

/// What the layer leaves in the request extensions for the layers below. Short-lived.
#[allow(clippy::large_enum_variant)]
enum Handoff {
    /// The decision, the fallback chain, whether it expands a sentinel in `models`, and the
    /// models the ranking passed over as cooling down.
    Routed(RouteDecision, Vec<Arc<str>>, bool, Vec<Arc<str>>),
    Parsed(ChatRequest),
}

/// Parses the buffered body; decides at once with a sync policy.
fn start(
    config: Option<&Arc<Config>>,
    bytes: Bytes,
    scope: Option<SessionScope>,
) -> Result<Next, ApiError> {
    let Some(config) = config else {
        return Err(ApiError::polled_after_completion());
    };
    route(config, ChatRequest::parse(bytes)?, scope)
}

/// The span of a routed request, the parent of what the layers below record. Its requested
/// model is the one the client named first: the sentinel for `"model": "auto"`, its own model
/// when the sentinel is in `models`.
///
/// `llm_router.route.pinned` is `true` when the chosen model is the one that served the
/// conversation before (session affinity), absent otherwise.
pub(crate) fn decision_span(decision: &RouteDecision, sentinel: &str, pinned: bool) -> Span {
    let span = tracing::info_span!(
        "llm_router.auto_route",
        gen_ai.request.model = sentinel,
        llm_router.route.chosen = &*decision.chosen,
        llm_router.route.score = decision.score,
        llm_router.route.reason = &*decision.reason,
        llm_router.route.pinned = tracing::field::Empty,
    );
    if pinned {
        span.record("llm_router.route.pinned", true);
    }
    span
}

/// Remembers the model that served a successful answer for the conversation `key`: the
/// [`ServedModel`] a `FallbackLayer` below names (after a fallback, not the router's pick),
/// else, for `"model": "auto"`, the chosen model the body was sent with.
fn remember<B>(
    config: &Config,
    key: SessionKey,
    response: &Response<B>,
    decision: Option<&RouteDecision>,
) {
    let served = match response.extensions().get::<ServedModel>() {
        Some(ServedModel(model)) => Some(model),
        None => decision
            .filter(|d| config.is_sentinel(&d.requested))
            .map(|d| &d.chosen),
    };
    if let Some(served) = served {
        super::session::remember_served(config, key, response.status(), served);
    }
}

/// What the auto router makes of a parsed request: not one for it, decided (a sync policy), or
/// a decision to wait for (an async one). A request asks for routing with a sentinel as its
/// `model` or in its `models`; the model it names first goes with the decision (for the span).
pub(crate) fn route(
    config: &Arc<Config>,
    request: ChatRequest,
    scope: Option<SessionScope>,
) -> Result<Next, ApiError> {
    let Some(ask) = Ask::of(config, &request) else {
        // Not for us: the buffered bytes go on untouched (the layer below reuses them).
        return Ok(Next::Forward(request));
    };
    let ask = ask.within(scope);
    let with_requested = |routed: Routed| {
        let requested = routed.decision.requested.clone();
        (routed, requested)
    };
    match &config.policy {
        Policy::Default(router) => {
            let (routed, requested) =
                with_requested(decide_default(config, router, &request, ask)?);
            Ok(Next::Routed(routed, requested))
        }
        Policy::Sync(policy) => {
            let (routed, requested) =
                with_requested(decide_sync(config, &**policy, &request, ask)?);
            Ok(Next::Routed(routed, requested))
        }
        Policy::Async(policy) => {
            let deciding = decide_async(config.clone(), policy.clone(), request, ask);
            Ok(Next::Decide(Box::pin(async move {
                deciding.await.map(with_requested)
            })))
        }
    }
}
