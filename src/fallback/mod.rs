//! OpenRouter's `models` fallback over any tower [`Service`](tower::Service).
//!
//! # Overview
//!
//! [`FallbackLayer`] wraps a service that sends OpenAI-compatible requests upstream (a
//! hyper-util client, an axum proxy route, the reqwest adapter, ...). A request names a `model`
//! and optionally a `models` list; when the upstream answers with an error, the same request is
//! sent again with the next model:
//!
//! * **The chain** is `model`, then each entry of `models` in order, duplicates dropped. Without
//!   `model`, the first entry of `models` is the primary. A request without `models` uses the
//!   chain an [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) handed over in a
//!   [`FallbackModels`] request extension (or the ranking of the auto router this layer runs
//!   itself, see [`auto_route`](FallbackLayer::auto_route)), else the layer's
//!   [`default_fallbacks`](FallbackLayer::default_fallbacks) (not for endpoints that complete
//!   nothing, such as `.../embeddings`: those are chat models). An explicit empty
//!   `"models": []` is the per-request opt-out of fallbacks: `model` alone is tried, without
//!   the defaults, and for `"model": "auto"` without the rest of the auto router's ranking.
//! * **Each attempt** sends the same method, URI, headers and body, with `model` spliced to that
//!   attempt's model and `models` removed ([`keep_models`](FallbackLayer::keep_models) keeps it).
//!   Every other byte of the body is the client's.
//! * **Retries** (off by default): with [`retries`](FallbackLayer::retries), an attempt that
//!   failed with `Downtime` (a 5xx, a reset connection, an overload in a stream's first event;
//!   not a timeout nor a redirect) is sent again to the same model, after a growing backoff
//!   with jitter, up to a number of times per model, before the chain moves on. Each retry is an attempt of its
//!   own in [`Attempts`], the headers, the spans and health; a `Retry-After` longer than the
//!   backoff moves on instead.
//! * **Which failures move on**: every failure by default, as OpenRouter does; see
//!   [`fallback_on`](FallbackLayer::fallback_on). Failures are classed by a
//!   [`Classify`](crate::classify::Classify) implementation, the provider-aware
//!   [`DefaultClassifier`](crate::classify::DefaultClassifier) unless
//!   [`classify_with`](FallbackLayer::classify_with) says otherwise. A failure that does not move
//!   on is returned at once.
//! * **When the chain is exhausted** the caller gets the last model's answer unchanged (status,
//!   headers such as `Retry-After`, body). A transport error on the last attempt is returned as
//!   the inner service's error, or with
//!   [`answer_transport_errors`](FallbackLayer::answer_transport_errors) answered as a 502 JSON
//!   error (`upstream_unreachable`; a 504 `upstream_timeout` for a timeout below the layer, such
//!   as a `tower::timeout` or the client's own) with the records of the models tried.
//! * **Compressed answers** cannot be classified, so an attempt replaces a client's
//!   `Accept-Encoding` that allows compression by `identity`
//!   ([`identity_encoding`](FallbackLayer::identity_encoding) turns this off).
//! * **Bad input** is answered with an OpenAI-shaped JSON error and the upstream is not called:
//!   400 for malformed JSON, a `models` that is not an array of strings, a `model` and
//!   `models` naming more than [`max_models`](FallbackLayer::max_models) (fallbacks added on
//!   this side are cut at that cap instead) or a model outside the
//!   [`allow_models`](FallbackLayer::allow_models) list (fallbacks added on this side that it
//!   does not allow are left out). The models a client names in `models` beside an auto
//!   sentinel count as the client's, the ranking put in the sentinel's place as this side's
//!   (see [the sentinel in `models`](crate::auto_route#the-sentinel-in-models)); 413 for a
//!   body over [`max_body_bytes`](FallbackLayer::max_body_bytes) (a `Content-Length` over it is refused
//!   before reading); 408 for a body whose reading timed out (a timeout among the body error's
//!   sources, e.g. from tower-http's `RequestBodyTimeoutLayer` or a body timeout that fails
//!   with `io::ErrorKind::TimedOut`), 413 for one a limit in front cut
//!   (`http_body_util::LengthLimitError` among its sources, as tower-http's
//!   `RequestBodyLimitLayer` fails), 400 for a body that failed otherwise; 503 (`overloaded`,
//!   `Retry-After: 1`) for a body that does not fit in what
//!   [`max_buffered_bytes`](FallbackLayer::max_buffered_bytes) leaves (a `Content-Length` that
//!   cannot fit is refused before reading).
//! * Only `POST` requests with a JSON (or absent) `Content-Type` are buffered and routed;
//!   anything else passes through untouched, in one attempt: so does a `POST` whose body is
//!   known to be empty (`Content-Length: 0`, or a body type that says so), such as OpenAI's
//!   `.../cancel` endpoints take, and one with a `Content-Encoding` (a compressed body is not
//!   JSON the layer can read: put tower-http's `RequestDecompressionLayer` in front to route it).
//!   Such a `POST` body is not held to `max_body_bytes`. With
//!   [`require_json_body`](FallbackLayer::require_json_body) it is refused instead, before it
//!   is read: 413 over the limit (by its declared length), 400 (`invalid_json`) empty, 415
//!   (`unsupported_content_encoding`, with `Accept-Encoding: identity`) compressed, 415
//!   (`unsupported_media_type`) of another type.
//!
//! # Streams
//!
//! With `"stream": true`, fallback stays possible until the first content byte reaches the
//! caller: on an error status, and on an error carried by the first SSE event of a `200`
//! answer. Content-less preamble events do not count as that first event: Anthropic's
//! `message_start`, `ping` and `content_block_start` of an empty block, an OpenAI-style first
//! chunk whose delta holds nothing but the role, `null`s, empty strings and empty lists (an
//! empty `content`, `refusal`, `reasoning`, an empty `tool_calls` list, a `"tool_calls":null`
//! alone), Azure's first chunk with no `choices`, the
//! Responses API's `response.created`, `response.in_progress` and `response.queued`, and its
//! output items and parts opened empty, an event whose data is empty (the [`classify`](crate::classify) module docs give the exact rule). The
//! layer reads a bounded prefix up to the end of the first `data:` event past them, classifies
//! it, then replays it, preamble first, byte for byte; the stream itself is never buffered. The
//! prefix limit and the first-byte or stream timeout bound the wait as before. After the first
//! byte, the stream is passed on whole events at a time (the bytes of an event not ended yet
//! wait for its blank line, up to 64 KiB: a client dispatches nothing before it; comment lines
//! between events, such as keep-alives, go on at once). If the upstream breaks mid-stream (a read
//! error, an end in the middle of an event, which SSE clients drop, or a clean end whose last
//! event does not end the stream as its API does: `[DONE]`, a chunk with a finish reason, a
//! `usage` without choices (or beside an empty delta right after the finish), an error, Anthropic's `message_stop`, the Responses API's `response.completed`,
//! `response.incomplete` or `response.failed`), the unfinished event
//! is not passed on and the caller's next event is a final SSE error event in the stream's own
//! API, told by its first event: OpenRouter's shape for chat completions (`error` plus a choice
//! with `finish_reason: "error"`), the Responses API's `event: error` (`{"type":"error",
//! "code":"server_error","message":...,"param":null,"sequence_number":N}`, numbered after the
//! last event passed on) for a stream of `response.*` events,
//! Anthropic's `event: error` (`{"type":"error","error":{"type":"api_error","message":...}}`)
//! for one that opens with `message_start` (see
//! [`is_stream_error_event`](crate::body::is_stream_error_event)): never a silent truncation, nor
//! a fragment that a client's JSON parser fails on before the error. No fallback is possible
//! after the first streamed byte. A stream that ends (or breaks) before its first event past
//! the preamble is complete is `Downtime`, and so is one done (`[DONE]`, Anthropic's
//! `message_stop`) with no content or finish before it: the next model is tried, and on the
//! last one the caller gets the preamble, then the same error event (not the `[DONE]` a client
//! stops reading at).
//!
//! Optional [`headers_timeout`](FallbackLayer::headers_timeout) and
//! [`first_byte_timeout`](FallbackLayer::first_byte_timeout) class a slow model as `Downtime`
//! and move on; [`stream_timeout`](FallbackLayer::stream_timeout) replaces both for streaming
//! requests, which should show a first event long before a whole answer is done. On the last
//! model a timeout is answered with a 504 JSON error.
//!
//! # Shared health
//!
//! Clones of a layer (and of its services) share a [`Health`](crate::health::Health): a model
//! that answered `RateLimited`, or failed with `Downtime` several times in a row, is tried last
//! until it cools down. A request is never refused on this state alone. The answer's
//! [`Attempts`] names the model the request asked and the models passed over.
//!
//! Each attempt is observed when it is classified, except a stream's success: a stream that
//! broke after its first byte (a read error, an end in the middle of an event, or a clean end
//! without its last event) is observed as
//! a `Downtime` failure of the model that served it when the break reaches the caller's body,
//! and one that ends well as a success when its last byte does. So a provider that always cuts
//! its streams midway cools down like one that fails before the first byte, and the next
//! requests try it later. A stream the caller leaves before its end tells health nothing.
//!
//! # What the caller sees
//!
//! * Response extensions: [`ServedModel`] and [`Attempts`] (every attempt, the model the
//!   request asked and the models passed over as cooling down).
//! * Headers (see [`headers`](FallbackLayer::headers)): `x-llm-router-model` (the model that
//!   answered) and `x-llm-router-attempts` (`model=outcome` pairs in order, e.g.
//!   `gpt-4o=rate_limited, claude-sonnet=ok`). On a final failure both still describe what
//!   happened.
//! * A `tracing` span per request (`llm_router.fallback`) and per attempt
//!   (`llm_router.attempt`, numbered from 1 over every attempt, retries included) with the
//!   OpenTelemetry GenAI attributes `gen_ai.request.model` (on the request's span the model
//!   asked, as in [`Attempts::requested`]; on an attempt's the model it sent) and
//!   `gen_ai.response.model`, and `error.type` set to the class of each failure.
//!
//! # Types
//!
//! The inner service takes `Request<`[`RouterBody`](crate::RouterBody)`>` and answers
//! `Response<ResBody>` for any `ResBody: Body<Data = Bytes> + 'static` (hyper's `Incoming`,
//! axum's `Body`, tower-http's `TimeoutBody` from a `ResponseBodyTimeoutLayer` below the
//! layer, ...). The layer reads the first bytes of an answer before it hands the body on, and
//! a body that has been read may move only if it is `Unpin`: so a body not of a type known to
//! be (hyper's `Incoming`, reqwest's `Body`, `http-body-util`'s `Full`, `Empty` and boxed
//! bodies of `Bytes` and [`BoxError`](crate::BoxError), [`RouterBody`](crate::RouterBody)) is
//! pinned in a box, one allocation per answer; no `Unpin` bound is asked of it. The layer's
//! service takes `Request<B>` for any body and answers
//! `Response<`[`ResponseBody<ResBody>`](crate::body::ResponseBody)`>`. Its error is the inner
//! service's error (`S::Error`): the layer adds no error of its own.
//!
//! The inner service must be `Clone`: a request takes the service `poll_ready` was called on
//! and leaves a clone in its place, and each later attempt waits for a clone's readiness
//! again, so a limit below the layer counts every attempt. A request whose body is not all
//! there at once (a slow upload) lets the readied service go while it waits, so that it holds
//! no `ConcurrencyLimit` permit or `Buffer` slot meanwhile, and its first attempt waits for a
//! clone's readiness too. A readiness error on a later
//! attempt ends the request with that error, as the layer's own `poll_ready` would: the model
//! it was for was never asked, and is neither recorded as tried nor charged in health. So does
//! an attempt that a `LoadShed` below the layer sheds (`Overloaded`): the next model would
//! meet the same limit. So does, for any attempt, a `Buffer` below whose worker found the
//! service behind it failed to become ready (tower's `ServiceError`, which the buffer returns
//! from the call rather than from `poll_ready`): a failed buffer stays failed. A service that
//! is not `Clone` (tower's `RateLimit`) goes below a `Buffer`:
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_router::{BoxError, FallbackLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream = service_fn(|_: Request<RouterBody>| async {
//!     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(FallbackLayer::new())
//!     .buffer(64) // `RateLimit` is not `Clone`; a `Buffer` handle is
//!     .rate_limit(100, Duration::from_secs(1)) // every attempt counts
//!     .service(upstream);
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#)))
//!     .unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-llm-router-model"], "gpt-4o");
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_router::{FallbackLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A stand-in upstream: `gpt-4o` is rate limited, every other model answers.
//! let upstream = service_fn(|req: Request<RouterBody>| async move {
//!     let body = req.into_body().collect_bytes().await?;
//!     let json: serde_json::Value = serde_json::from_slice(&body)?;
//!     let model = json["model"].as_str().unwrap_or_default().to_owned();
//!     assert!(json.get("models").is_none(), "`models` is removed upstream");
//!     let status = if model == "gpt-4o" { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
//!     let answer = format!(r#"{{"model":"{model}","choices":[]}}"#);
//!     Ok::<_, tower_llm_router::BoxError>(
//!         Response::builder().status(status).body(Full::new(Bytes::from(answer)))?,
//!     )
//! });
//!
//! let client = ServiceBuilder::new().layer(FallbackLayer::new()).service(upstream);
//! let request = Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#,
//!     )))
//!     .unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-llm-router-model"], "claude-sonnet");
//! assert_eq!(
//!     response.headers()["x-llm-router-attempts"],
//!     "gpt-4o=rate_limited, claude-sonnet=ok"
//! );
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::ErrorClass;

#[macro_use]
mod setters;
mod future;
mod layer;
mod policy;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::FallbackLayer;
pub use self::policy::{ClassSet, Retries};
pub use self::service::Fallback;
pub use crate::pattern::ModelPatterns;

/// Response header naming the model that produced the response.
pub const MODEL_HEADER: &str = "x-llm-router-model";
/// Response header listing every attempt as `model=outcome` pairs, in order.
pub const ATTEMPTS_HEADER: &str = "x-llm-router-attempts";

/// Response extension: the model that produced the response (on a final failure, the last
/// model tried). Absent when no model was asked: the only attempt was refused below the layer
/// before it was sent, and the layer answered (see
/// [`answer_transport_errors`](FallbackLayer::answer_transport_errors)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServedModel(pub Arc<str>);

/// Response extension: the model the request asked for, the models passed over as cooling
/// down, and every attempt sent, in order.
///
/// The layer tries the models cooling down in the shared [`Health`](crate::health::Health)
/// last: with its first model cooling down, a request's first attempt goes to another one.
/// `requested` still names the model asked, and `passed_over` the models moved back (tried
/// after the others, so only when they all failed, and then in `tried` too). The
/// `x-llm-router-attempts` header ([`to_header_value`](Self::to_header_value)) lists `tried`
/// alone. Every answer of a routed request carries it, the layer's own too (a 502
/// `upstream_unreachable`, a 504 `upstream_timeout`); a request the layer passed through, or
/// refused before any attempt (a 400, a 413), carries none.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use std::sync::Arc;
/// use tower::{service_fn, ServiceExt};
/// use tower_llm_router::fallback::{Attempts, Outcome, RoutedModel};
/// use tower_llm_router::health::{Health, InMemoryHealth, Observation};
/// use tower_llm_router::{BoxError, ErrorClass, FallbackLayer, RouterBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let upstream = service_fn(|req: Request<RouterBody>| async move {
///     let model = req.extensions().get::<RoutedModel>().map(|m| m.0.clone());
///     let answer = format!(r#"{{"model":"{}","choices":[]}}"#, model.unwrap_or_default());
///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(answer))))
/// });
/// // `gpt-4o` answered 429 a moment ago: it cools down for 30 s.
/// let health = Arc::new(InMemoryHealth::new());
/// let cooldown = std::time::Duration::from_secs(30);
/// health.observe("gpt-4o", Observation::failed(ErrorClass::RateLimited, Some(cooldown)));
/// let client = tower::Layer::layer(&FallbackLayer::new().health(health), upstream);
/// let request = Request::post("/v1/chat/completions")
///     .body(Full::new(Bytes::from_static(
///         br#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#,
///     )))
///     .unwrap();
/// let response = client.oneshot(request).await.unwrap();
/// let attempts = response.extensions().get::<Attempts>().unwrap();
/// assert_eq!(&*attempts.requested, "gpt-4o");
/// assert_eq!(attempts.passed_over, [Arc::<str>::from("gpt-4o")]);
/// assert_eq!(attempts.tried.len(), 1);
/// assert_eq!(&*attempts.tried[0].model, "claude-sonnet");
/// assert_eq!(attempts.tried[0].outcome, Outcome::Ok);
/// assert_eq!(attempts.to_header_value(), "claude-sonnet=ok");
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attempts {
    /// Every attempt sent, in order. Empty when the only attempt was refused below the layer
    /// before it was sent (see [`answer_transport_errors`](FallbackLayer::answer_transport_errors)).
    pub tried: Vec<Attempt>,
    /// The model the request asked first: the first of its chain (`model`, else the first
    /// entry of `models`; for a request the auto router routed, the model it chose, its
    /// [`RouteDecision`](crate::auto_route::RouteDecision) naming the sentinel the client sent)
    /// before the models cooling down were moved last. The first of `tried` unless it was
    /// passed over.
    pub requested: Arc<str>,
    /// The models of the chain passed over as cooling down, in chain order: each stood before
    /// a model that was well, and was moved after the well ones. One cooling down after every
    /// well model keeps its place and is not in it. For a request the auto router routed (this
    /// layer's own [`auto_route`](FallbackLayer::auto_route), or an
    /// [`AutoRouteLayer`](crate::AutoRouteLayer) in front), the models its ranking passed over
    /// come first. Empty (nothing allocated) when no model was passed over, the usual case.
    pub passed_over: Vec<Arc<str>>,
}

impl Attempts {
    /// The `x-llm-router-attempts` form of `tried`: `model=outcome` pairs joined by `, `.
    pub fn to_header_value(&self) -> String {
        header_value(&self.tried)
    }
}

/// `model=outcome` pairs joined by `, `, built at its exact length so that the string becomes
/// a header value's `Bytes` without a reallocation.
pub(crate) fn header_value(attempts: &[Attempt]) -> String {
    let len = attempts
        .iter()
        .map(|a| a.model.len() + 1 + a.outcome.as_str().len())
        .sum::<usize>()
        + 2 * attempts.len().saturating_sub(1);
    let mut out = String::with_capacity(len);
    for (i, attempt) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&attempt.model);
        out.push('=');
        out.push_str(attempt.outcome.as_str());
    }
    out
}

/// One attempt of a routed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The model this attempt asked for.
    pub model: Arc<str>,
    /// Success, or the class of the failure.
    pub outcome: Outcome,
    /// The upstream's status, `None` for a transport error or a timeout.
    pub status: Option<StatusCode>,
    /// From sending the request to classifying the answer.
    pub duration: Duration,
}

/// The outcome of one [`Attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The model answered.
    Ok,
    /// The attempt failed with this class.
    Failed(ErrorClass),
}

impl Outcome {
    /// `ok`, or the class name (`rate_limited`, `downtime`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(class) => class.as_str(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request extension on each attempt the inner service receives: the model this attempt asks
/// for (the value spliced into the body's `model`).
///
/// An inner service that sends different models to different upstreams reads it instead of
/// parsing the body again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutedModel(pub Arc<str>);

/// Request extension: the models to try after `model` when the body has no `models`.
///
/// [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) hands the rest of its ranking over
/// this way; any layer in front of [`Fallback`] may do the same. Models the allow-list does not
/// allow, and empty ids, are left out of the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackModels(pub Vec<Arc<str>>);

/// Request extension an [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) leaves beside
/// [`FallbackModels`] when they expand the sentinel in the body's `models`: the chain to try
/// after `model`, the client's own models (still in the body's `models`) in their places
/// among the ranking's additions. Without it, a body's `models` say alone what follows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExpandedModels;

/// Request extension an [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) leaves when its
/// ranking passed over models cooling down: the layer's [`Attempts::passed_over`] lists them
/// first, as when the router runs in the layer ([`FallbackLayer::auto_route`]). Left only when
/// there are some.
#[derive(Clone, Debug)]
pub(crate) struct PassedOverByRouter(pub(crate) Vec<Arc<str>>);
