/// The builder setters shared by [`FallbackLayer`](super::FallbackLayer) and
/// [`Fallback`](super::Fallback): both hold an `Arc<Config>`.
macro_rules! fallback_setters {
    () => {
        /// Models tried after `model` when a request has no `models` (and no
        /// [`FallbackModels`](crate::fallback::FallbackModels) extension). Defaults to none.
        /// Not added to requests for endpoints that name a `model` but complete nothing
        /// (`.../embeddings`, `.../moderations`, `.../rerank`, `.../batches`, paths under
        /// `images`, `audio` or `fine_tuning`): those are chat models, and a failed embeddings
        /// request sent again with one would only trade its own error for a refusal.
        /// An empty id (`""`) names no model and is ignored.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn default_fallbacks<I, M>(mut self, models: I) -> Self
        where
            I: IntoIterator<Item = M>,
            M: AsRef<str>,
        {
            std::sync::Arc::make_mut(&mut self.config).default_fallbacks = models
                .into_iter()
                .filter(|m| !m.as_ref().is_empty())
                .map(|m| std::sync::Arc::from(m.as_ref()))
                .collect();
            self
        }

        /// The most models one request may try, the primary included. A request whose own
        /// `model` and `models` name more is refused with a 400 and the upstream is not called,
        /// also when its `models` holds an auto sentinel (which does not count); the fallbacks
        /// added on this side (an auto router's ranking, also the one in a sentinel's place, a
        /// [`FallbackModels`](crate::fallback::FallbackModels) extension, the
        /// [`default_fallbacks`](Self::default_fallbacks)) are cut to fit instead. Defaults
        /// to `4` (OpenRouter refuses more than 3 entries in `models`); `0` counts as `1` (the
        /// primary alone, no fallback).
        ///
        /// An [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) in front caps its ranking
        /// with its own [`max_fallbacks`](crate::auto_route::AutoRouteLayer::max_fallbacks)
        /// (the models after the first): a ranking longer than this cap allows is cut here,
        /// and a shorter one does not fill it. The router run inside this layer
        /// ([`auto_route`](Self::auto_route)) fills this cap, unless it was given
        /// `max_fallbacks`.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_models(mut self, max: usize) -> Self {
            let config = std::sync::Arc::make_mut(&mut self.config);
            config.max_models = max.max(1);
            config.share_with_auto();
            self
        }

        /// Refuses (400, upstream not called) any request whose `model` or `models` names a
        /// model outside these patterns (beside an auto sentinel in `models` too): exact ids,
        /// or `*` wildcards such as `"anthropic/*"`.
        /// The fallbacks added on this side (an auto router's ranking, also the one in a
        /// sentinel's place, a
        /// [`FallbackModels`](crate::fallback::FallbackModels) extension, the
        /// [`default_fallbacks`](Self::default_fallbacks)) that it does not allow are left out
        /// of the chain instead. Defaults to allowing every model. An empty list allows none:
        /// every request that names a model is refused.
        ///
        /// The auto router run inside this layer ([`auto_route`](Self::auto_route)) chooses
        /// only among the models the list allows (unless it was given a list of its own with
        /// [`AutoRouteLayer::allow_models`](crate::auto_route::AutoRouteLayer::allow_models)),
        /// so that a client asking for `auto` is never refused for a model it did not name.
        /// An [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) in front of this layer
        /// does not see this list: give it the same patterns.
        ///
        /// A body that names no model at all (no `model`, `null` or `""`, and no entry in
        /// `models`) has nothing to check: it passes through untouched, as without the list,
        /// and an upstream that picks a default model when none is named (OpenRouter does)
        /// still can. A stack that must not let that happen refuses it below the layer: such
        /// an attempt is the one without a [`RoutedModel`](crate::fallback::RoutedModel)
        /// extension (the example gateway does so when it has an allow-list).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn allow_models<I, P>(mut self, patterns: I) -> Self
        where
            I: IntoIterator<Item = P>,
            P: AsRef<str>,
        {
            let config = std::sync::Arc::make_mut(&mut self.config);
            config.allow = Some(crate::pattern::ModelPatterns::new(patterns));
            config.share_with_auto();
            self
        }

        /// The failure classes that move a request on to the next model; others are returned
        /// at once. Defaults to [`ClassSet::all`](crate::fallback::ClassSet::all), as
        /// OpenRouter does; [`ClassSet::none`](crate::fallback::ClassSet::none) never falls
        /// back (each request is one attempt, still recorded and classified).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn fallback_on(mut self, classes: crate::fallback::ClassSet) -> Self {
            std::sync::Arc::make_mut(&mut self.config).fallback_on = classes;
            self
        }

        /// Sends an attempt that failed with [`Downtime`](crate::ErrorClass::Downtime) again
        /// to the same model, up to [`Retries::max`](crate::fallback::Retries) times per model,
        /// after a backoff that grows ([`Retries`](crate::fallback::Retries) says how), before
        /// the request moves on to the next model. A reset connection or a 502 from a load
        /// balancer is often gone a moment later, and the client ranked this model first: the
        /// next one may be weaker, or dearer. Defaults to
        /// [`Retries::none`](crate::fallback::Retries::none): every failure moves on at once,
        /// and nothing is spent on retries per request.
        ///
        /// Retried: `Downtime` from a 5xx or 529, a transport error (connection refused or
        /// reset), an error in a stream's first event that classifies as downtime, a stream
        /// that ended before its first event. Not retried:
        ///
        /// * a timeout, the layer's own ([`headers_timeout`](Self::headers_timeout) and the
        ///   others) or one below it (a `tower::timeout`, a connect timeout): the attempt
        ///   already waited its whole allowance, and another as long is better spent on the
        ///   next model;
        /// * a redirect (a 301, 302, 303, 307 or 308 not followed, which is `Downtime` for
        ///   health, a client's redirect error, such as reqwest's for a loop, or a
        ///   [`RedirectNotFollowed`](crate::classify::RedirectNotFollowed) your inner service
        ///   returns for a 3xx it will not follow): the same URL redirects the same way a
        ///   moment later;
        /// * `RateLimited` (the model cools down; the next model is the answer),
        ///   `Moderation`, `ContextLength` and `Other` (the same request fails the same way);
        /// * a downtime whose upstream asks to wait longer than the retry's backoff ceiling
        ///   (`Retry-After`, a stated delay: see [`wait_hint`](crate::classify::wait_hint)); a
        ///   shorter stated wait is honoured (the retry waits at least that long);
        /// * a model the shared [`health`](Self::health) has begun to cool down (each failed
        ///   attempt is observed as usual, so with the default threshold of three downtime
        ///   failures in a row, a single request's retries may cool a model down: that is
        ///   what three failures in a row say, and no later request then waits on it);
        /// * once the [`budget`](Self::budget), if any, is empty: a retry withdraws from it as
        ///   a fallback attempt does;
        /// * a request the layer passes through (no model), which goes upstream once.
        ///
        /// Nothing is ever retried after the first byte of an answer reached the caller: an
        /// answer is classified before it is handed on. Retries do not depend on
        /// [`fallback_on`](Self::fallback_on): with `ClassSet::none()`, a request retries its
        /// one model and then answers. The last model retries by the same rules, and its last
        /// error comes back unchanged. Each retry is an attempt of its own: in
        /// [`Attempts`](crate::fallback::Attempts), the `x-llm-router-attempts` header
        /// (`gpt-4o=downtime, gpt-4o=ok`), the `llm_router.attempt` spans and health;
        /// [`max_models`](Self::max_models) counts models, not attempts. Each retry waits for
        /// the readiness of its own clone of the inner service, as a fallback attempt does.
        /// A backoff longer than zero needs a tokio runtime with time enabled, as the timeouts
        /// do. A client that leaves during a backoff leaves nothing behind: the wait ends with
        /// the request's future.
        ///
        /// ```
        /// use std::sync::atomic::{AtomicUsize, Ordering};
        /// use std::sync::Arc;
        /// use std::time::Duration;
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::fallback::Retries;
        /// use tower_llm_router::{BoxError, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// // An upstream whose first answer is a load balancer's 502.
        /// let calls = Arc::new(AtomicUsize::new(0));
        /// let upstream = service_fn(move |_: Request<RouterBody>| {
        ///     let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        ///     async move {
        ///         let status = if first { 502 } else { 200 };
        ///         Ok::<_, BoxError>(Response::builder().status(status).body(Full::new(Bytes::from("{}")))?)
        ///     }
        /// });
        /// let layer = FallbackLayer::new().retries(Retries::new(2).backoff(Duration::from_millis(10)));
        /// let request = Request::post("/v1/chat/completions")
        ///     .body(Full::new(Bytes::from(r#"{"model":"gpt-4o","models":["claude-sonnet"]}"#)))?;
        /// let response = layer.layer(upstream).oneshot(request).await?;
        /// assert_eq!(response.headers()["x-llm-router-attempts"], "gpt-4o=downtime, gpt-4o=ok");
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn retries(mut self, retries: crate::fallback::Retries) -> Self {
            std::sync::Arc::make_mut(&mut self.config).retries = retries;
            self
        }

        /// Keeps `models` in the body sent upstream, for upstreams that understand it.
        /// Defaults to `false` (removed). With an auto sentinel in `models`, what is kept is
        /// the client's own models without the sentinel: the ranking in its place is this
        /// side's, and never written into the body (see
        /// [the sentinel in `models`](crate::auto_route#the-sentinel-in-models)).
        /// An upstream that falls back itself (OpenRouter) may then answer with another model
        /// of `models` than the one the attempt asked for: `x-llm-router-model` and
        /// [`ServedModel`](crate::fallback::ServedModel) name the model the attempt sent, and
        /// the answer's own `model` field the one that served it.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn keep_models(mut self, keep: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.config).keep_models = keep;
            self
        }

        /// Whether attempts ask the upstream for uncompressed answers: a client's
        /// `Accept-Encoding` other than `identity` is replaced by `identity` on the way
        /// upstream, so that an error body (or a 200 that carries one) can be read and
        /// classified; the client then gets the answer uncompressed, which `identity` always
        /// allows. Defaults to `true`. With `false` the header goes upstream unchanged, and a
        /// compressed error is classified by its status and headers alone. A compressed 2xx
        /// event stream (with `false`, or from an upstream that ignores `identity`) is a
        /// success: its events cannot be read, so it is passed on as it comes, without a
        /// fallback on an error in its first event or an error event of the layer's own.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn identity_encoding(mut self, enabled: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.config).identity_encoding = enabled;
            self
        }

        /// Whether a transport failure of the last model (connection refused or reset, a
        /// `tower::timeout` below, anything the inner service returns as `Err`) is answered by
        /// the layer as a 502 JSON error (`server_error`, code `upstream_unreachable`, the
        /// error's text and its sources' in the message, as
        /// [`describe_error`](crate::classify::describe_error) writes them, for the error
        /// types the layer can look into: `BoxError` (what `Buffer` and `Timeout` return),
        /// hyper-util's client error, `hyper::Error`, `io::Error`, tower's `Elapsed` and, with
        /// the `reqwest` feature, reqwest's and reqwest-middleware's; the message of another
        /// type names the model alone, so map it below the layer with
        /// `tower::util::MapErrLayer::new(tower::BoxError::from)`); a timeout (a `tower::timeout` or tokio `Elapsed`, an
        /// `io::Error` of kind `TimedOut`, a hyper timeout, reqwest's `timeout` and
        /// `read_timeout`, anywhere in the error's sources) as the layer's own
        /// [`headers_timeout`](Self::headers_timeout) is, a 504 (`server_error`, code
        /// `upstream_timeout`). Either comes with the `x-llm-router-*` headers and the
        /// [`ServedModel`](crate::fallback::ServedModel) /
        /// [`Attempts`](crate::fallback::Attempts) records of every model tried. So is an
        /// attempt the inner service refuses before sending it (a readiness error on a later
        /// attempt, or on any attempt behind a `Buffer`, which tells it through the call; a
        /// `LoadShed`'s `Overloaded`: a 503 `overloaded` for that one, the stack's
        /// own overload; a readiness that timed out, such as a pool's wait: a 504
        /// `upstream_timeout`), which ends the request whatever its model; when that was the
        /// first attempt, no model was asked, and the answer names none (no
        /// `x-llm-router-*` headers, no `ServedModel`). An error of the layer's own
        /// `poll_ready` (the inner service's readiness for the first attempt, when the body
        /// was whole at once) is not an answer: tower's contract returns it to the caller as
        /// it is, whatever this setting.
        /// Defaults to `false`: the inner service's error comes back unchanged as `Err`, and
        /// only the tracing spans say which models were tried. A request the layer passes
        /// through (no model) gets its error unchanged either way.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn answer_transport_errors(mut self, answer: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.config).answer_transport_errors = answer;
            self
        }

        /// The largest request body buffered; a larger one is answered 413
        /// (`request_too_large`), before it is read when its `Content-Length` says so. Defaults
        /// to 32 MiB ([`DEFAULT_MAX_BODY_BYTES`](crate::payload::DEFAULT_MAX_BODY_BYTES)). `0`
        /// refuses every body the layer routes (an empty body is not routed: it passes
        /// through). A body the layer passes through unread (see
        /// [`require_json_body`](Self::require_json_body)) is not held to it.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_body_bytes(mut self, limit: usize) -> Self {
            std::sync::Arc::make_mut(&mut self.config).body.max_bytes = limit;
            self
        }

        /// The most bytes of request bodies that the services made from this layer (its
        /// clones, and every service it wraps) hold at once. A routed body is buffered whole
        /// and held until the last attempt is done with it; without a bound, clients that
        /// upload large bodies and then stall hold one body each for as long as they like.
        /// Defaults to none (no bound, and no cost).
        ///
        /// Bodies are counted as they arrive: each frame by what the buffer holds once it is
        /// in (the bytes sent; for a body with a `Content-Length`, the buffer the layer
        /// allocates for it, up to that length), so a chunked upload holds only what it has
        /// sent. A frame that does not fit, or a `Content-Length` that cannot fit in what is
        /// left when the request comes, is answered `503` (`server_error`, code
        /// `overloaded`, with `Retry-After: 1`) and the body is not sent on. The bytes are
        /// given back when the last reference to the buffered body is dropped: after the
        /// last attempt (also when the client leaves mid-upload or mid-answer, or the chain
        /// ends in an error), once the client below has let go of the attempt's body. The
        /// budget is one atomic counter shared by the layer's services; with it, a routed
        /// request costs one small allocation more (the buffer's owner, which gives the bytes
        /// back).
        ///
        /// Under an [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) that buffered the
        /// body (with its own budget), the body is counted once, in that layer's budget: this
        /// one does not count it again, and it is given back once. A body handed over
        /// buffered by a layer without a budget is counted here whole. Inside this layer
        /// ([`auto_route`](Self::auto_route)), this layer's budget applies. The auto router's
        /// rewrite of a body (`"model": "auto"`) is counted in the same budget as the body;
        /// the copy sent to an attempt when a body under 16 KiB is rewritten is not.
        ///
        /// A limit below [`max_body_bytes`](Self::max_body_bytes) refuses the larger bodies
        /// always (`0` refuses every body the layer routes); a server with several runtimes (one per core) may give each its own layer
        /// and a share of the memory.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::{BodyExt, Full};
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::{BoxError, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        /// });
        /// let layer = FallbackLayer::new().max_buffered_bytes(64);
        /// let client = layer.layer(upstream);
        /// let chat = |content: &str| {
        ///     let body = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{content}"}}]}}"#);
        ///     Request::post("/v1/chat/completions")
        ///         .header("content-type", "application/json")
        ///         .body(Full::new(Bytes::from(body)))
        /// };
        /// // 57 bytes fit in 64.
        /// assert_eq!(client.clone().oneshot(chat("hi")?).await?.status(), 200);
        /// // 96 bytes do not, while nothing else is held.
        /// let response = client.oneshot(chat(&"x".repeat(41))?).await?;
        /// assert_eq!(response.status(), 503);
        /// assert_eq!(response.headers()["retry-after"], "1");
        /// let body = response.into_body().collect().await?.to_bytes();
        /// let error: serde_json::Value = serde_json::from_slice(&body)?;
        /// assert_eq!(error["error"]["code"], "overloaded");
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_buffered_bytes(mut self, limit: usize) -> Self {
            std::sync::Arc::make_mut(&mut self.config).body.budget =
                Some(crate::buffer_budget::BufferBudget::new(limit));
            self
        }

        /// Whether a `POST` body the layer cannot route is refused instead of passed on.
        /// Defaults to `false`: the layer reads a JSON (or untyped), uncompressed, non-empty
        /// body, and any other goes to the inner service as it came, unread and not held to
        /// [`max_body_bytes`](Self::max_body_bytes), the right default for a layer in a
        /// general stack. With `true`, the layer answers such a body itself (an OpenAI-shaped
        /// JSON error; the inner service is not called), so that every body that reaches the
        /// inner service was read, held to the limit and routed, as a gateway that forwards to
        /// a paid upstream with its own key wants:
        ///
        /// * `413` `request_too_large`: a declared length over `max_body_bytes`, whatever the
        ///   body's type;
        /// * `400` `invalid_json`: a body declared empty (`Content-Length: 0`) or known to be
        ///   (no body at all);
        /// * `415` `unsupported_content_encoding`, with `Accept-Encoding: identity` (RFC 7694:
        ///   the codings the server takes): a `Content-Encoding` other than `identity`
        ///   (tower-http's `RequestDecompressionLayer` in front makes such a body routable);
        /// * `415` `unsupported_media_type`: a `Content-Type` other than `application/json`
        ///   or `application/*+json` ([`is_json_content_type`](crate::payload::is_json_content_type)).
        ///
        /// The decision is made from the headers the layer reads anyway, before the body.
        /// Only `POST`s are concerned: another method (`GET /v1/models`) goes on as before.
        /// Put a layer with this setting on the routes whose bodies are JSON (chat
        /// completions), not in front of endpoints such as OpenAI's `POST .../cancel`, which
        /// take an empty body.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::{BodyExt, Full};
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::{BoxError, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Err::<Response<Full<Bytes>>, BoxError>("not called: the layer answers".into())
        /// });
        /// let client = FallbackLayer::new().require_json_body(true).layer(upstream);
        /// // What `curl -d` sends without `-H 'Content-Type: application/json'`.
        /// let form = Request::post("/v1/chat/completions")
        ///     .header("content-type", "application/x-www-form-urlencoded")
        ///     .body(Full::new(Bytes::from_static(b"{\"model\":\"gpt-4o\"}")))?;
        /// let response = client.oneshot(form).await?;
        /// assert_eq!(response.status(), 415);
        /// let body = response.into_body().collect().await?.to_bytes();
        /// let error: serde_json::Value = serde_json::from_slice(&body)?;
        /// assert_eq!(error["error"]["code"], "unsupported_media_type");
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn require_json_body(mut self, require: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.config).body.require_json = require;
            self
        }

        /// Whether to add the `x-llm-router-model` and `x-llm-router-attempts` response
        /// headers. Defaults to `true`. The response extensions are always added. Model names
        /// are the client's and go into the headers as their UTF-8 bytes; a name no header value
        /// can carry (one with a control character such as `\n`) leaves the header that would
        /// hold it out (the attempts header when any attempt's model is such a name), and only
        /// the extensions name it.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn headers(mut self, enabled: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.config).headers = enabled;
            self
        }

        /// How long an attempt may wait for response headers before it is classed
        /// `Downtime`, from when it is sent: a wait for the inner service's readiness (a
        /// concurrency limit below this layer) is no fault of the model and does not count.
        /// A wait inside the inner service's call cannot be told from the upstream's, and
        /// counts: behind a `Buffer` (the way to put a `RateLimit` below the layer), an
        /// attempt is queued until the buffer's worker finds the service behind it ready, so
        /// keep that queue short against this timeout.
        /// On the last model the layer answers a 504 (`upstream_timeout`). Defaults to none.
        /// `Duration::ZERO` gives an attempt no time, and classes nearly every one `Downtime`.
        /// Needs a tokio runtime with time enabled.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn headers_timeout(mut self, timeout: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.config).headers_timeout = Some(timeout);
            self
        }

        /// How long an attempt may wait, once headers arrived, for the first event of a
        /// stream (or the body of a non-streamed answer, up to the first 256 KiB, which is
        /// what the layer reads to classify it) before it is classed `Downtime`. On the last
        /// model the layer answers a 504 (`upstream_timeout`). Defaults to none; as for
        /// [`headers_timeout`](Self::headers_timeout), `Duration::ZERO` leaves no time. Needs
        /// a tokio runtime with time enabled.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn first_byte_timeout(mut self, timeout: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.config).first_byte_timeout = Some(timeout);
            self
        }

        /// For requests with `"stream": true`: how long an attempt may wait for the headers,
        /// and then as long again for the first event, in place of
        /// [`headers_timeout`](Self::headers_timeout) and
        /// [`first_byte_timeout`](Self::first_byte_timeout). Those must allow for a whole
        /// non-streamed answer (many providers send nothing until it is complete, minutes
        /// for a long one), while a stream that has said nothing for tens of seconds is not
        /// going to. Defaults to none (the two timeouts apply to streams too). On the last model
        /// the layer answers a 504 (`upstream_timeout`), as for the two others.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn stream_timeout(mut self, timeout: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.config).stream_timeout = Some(timeout);
            self
        }

        /// Shares model health with other layers (an
        /// [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer), other gateways' layers).
        /// Defaults to a fresh [`InMemoryHealth`](crate::health::InMemoryHealth).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn health(mut self, health: std::sync::Arc<dyn crate::health::Health>) -> Self {
            let config = std::sync::Arc::make_mut(&mut self.config);
            config.health = health;
            config.share_with_auto();
            self
        }

        /// Caps fallback attempts with a retry budget (e.g. tower's
        /// [`TpsBudget`](tower::retry::budget::TpsBudget)): each routed request deposits, each
        /// fallback attempt withdraws, and when the budget is empty the failure is returned
        /// as it is. A burst of failures then cannot multiply upstream load. Defaults to none
        /// (the per-request chain cap still applies). Give clones of one layer the same
        /// budget by building them from one layer: `budget` replaces the one set before.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn budget<Bu>(mut self, budget: std::sync::Arc<Bu>) -> Self
        where
            Bu: tower::retry::budget::Budget + Send + Sync + 'static,
        {
            std::sync::Arc::make_mut(&mut self.config).budget = Some(budget);
            self
        }

        /// Routes `"model": "auto"` requests with `auto` inside this layer, instead of an
        /// [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) in front of it: the same
        /// decision, rewrite, [`RouteDecision`](crate::auto_route::RouteDecision) extensions,
        /// span and fallback chain, with one future, one pass over the body and no hand-over
        /// between two layers (in the gateway example, a tenth less CPU per request that does
        /// not ask for `auto` either). This layer's
        /// [`max_body_bytes`](Self::max_body_bytes) and
        /// [`require_json_body`](Self::require_json_body) apply; `auto`'s do not. `auto` ranks
        /// with this layer's [`health`](Self::health) (set before or after this call), unless
        /// it was given a store of its own with
        /// [`AutoRouteLayer::health`](crate::auto_route::AutoRouteLayer::health), and chooses
        /// only among the models this layer's [`allow_models`](Self::allow_models) allows
        /// (set before or after this call), unless it was given a list of its own with
        /// [`AutoRouteLayer::allow_models`](crate::auto_route::AutoRouteLayer::allow_models);
        /// its ranking fills [`max_models`](Self::max_models) (before or after too) unless it
        /// was given
        /// [`AutoRouteLayer::max_fallbacks`](crate::auto_route::AutoRouteLayer::max_fallbacks).
        /// With
        /// [`AutoRouteLayer::session_affinity`](crate::auto_route::AutoRouteLayer::session_affinity),
        /// conversations stay on the model that served them as they do with the router in
        /// front, this layer naming that model.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, ServiceExt};
        /// use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
        /// use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
        /// let upstream = service_fn(|req: Request<RouterBody>| async move {
        ///     let body = req.into_body().collect_bytes().await?;
        ///     let json: serde_json::Value = serde_json::from_slice(&body)?;
        ///     assert_eq!(json["model"], "small", "the choice is written into the body");
        ///     Ok::<_, tower_llm_router::BoxError>(Response::new(Full::new(Bytes::from_static(
        ///         br#"{"choices":[]}"#,
        ///     ))))
        /// });
        /// let layer = FallbackLayer::new().auto_route(AutoRouteLayer::new(catalog));
        /// let client = tower::Layer::layer(&layer, upstream);
        /// let request = Request::post("/v1/chat/completions")
        ///     .header("content-type", "application/json")
        ///     .body(Full::new(Bytes::from_static(
        ///         br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
        ///     )))
        ///     .unwrap();
        /// let response = client.oneshot(request).await.unwrap();
        /// assert_eq!(response.headers()["x-llm-router-model"], "small");
        /// let decision = response.extensions().get::<RouteDecision>().unwrap();
        /// assert_eq!(&*decision.chosen, "small");
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn auto_route(mut self, auto: crate::auto_route::AutoRouteLayer) -> Self {
            let config = std::sync::Arc::make_mut(&mut self.config);
            let auto = auto.config;
            // One layer, one store: a router given none ranks with the cooldowns this layer
            // keeps, else its choice would be one the layer then moves to the end.
            config.auto_shares_health = auto.health.is_none();
            // Nor may it choose a model this layer's allow-list then refuses with a 400.
            config.auto_shares_allow = auto.allow.is_none();
            // And its ranking fills this layer's chain, not the 4 models of the default cap.
            config.auto_fills_max_models = !auto.max_fallbacks_set;
            config.auto = Some(auto);
            config.share_with_auto();
            self
        }
    };
}
