//! OpenRouter-style routing for [reqwest] and [reqwest-middleware] client code.
//!
//! Two ways in, both running the same [`Fallback`](crate::Fallback) machinery as
//! [`FallbackLayer`](crate::FallbackLayer), so the semantics, options, headers and records are
//! the layer's (see the [`fallback`](crate::fallback) module):
//!
//! * [`FallbackMiddleware`]: a [`reqwest_middleware::Middleware`] for code that already uses a
//!   `ClientWithMiddleware`. Each attempt runs the middleware attached after it.
//! * [`ReqwestService`] and [`ReqwestMiddlewareService`]: tower services over a
//!   `reqwest::Client` or a `ClientWithMiddleware`, so that a [`tower::ServiceBuilder`] stack of
//!   this crate's layers can send through reqwest:
//!   `ServiceBuilder::new().layer(FallbackLayer::new()).service(ReqwestService::new(client))`.
//!
//! Streams are not buffered: the response body is reqwest's own, read up to its first SSE event
//! past the preamble to classify it, then passed on whole events at a time (the bytes of an
//! event not ended yet wait for its blank line, up to 64 KiB; comment lines between events, such
//! as keep-alives, go on at once), as the [`fallback`](crate::fallback) module docs describe. A
//! stream that breaks after its first byte ends with an SSE error event in the stream's own API
//! (OpenRouter's shape for chat completions, the Responses API's and Anthropic's `event:
//! error`), in place of the unfinished event, and counts as a `Downtime` failure of its model
//! in the shared health.
//!
//! # Transport errors
//!
//! reqwest's errors (connect, timeout, a body that breaks before the first event) and
//! reqwest-middleware's errors wrapping them are classed
//! [`Downtime`](crate::ErrorClass::Downtime): the chain moves on to the next model. A URL
//! reqwest refuses before connecting (an `https` URL for a client built without a TLS
//! feature: "invalid URL, scheme is not http") is [`Other`](crate::ErrorClass::Other), the
//! client's configuration and not the model's. On the last model the error is returned as it
//! is (`reqwest::Error` from [`ReqwestService`], `reqwest_middleware::Error` otherwise), or,
//! with [`answer_transport_errors`](FallbackMiddleware::answer_transport_errors), answered as a
//! 502 JSON error naming the models tried (its message has the URL without its query); a
//! reqwest timeout there is a 504 `upstream_timeout`, as the layer's own timeouts are.
//!
//! A reqwest timeout ([`ClientBuilder::timeout`](reqwest::ClientBuilder::timeout) or
//! [`RequestBuilder::timeout`](reqwest_middleware::RequestBuilder::timeout)) applies to each
//! attempt, and, being reqwest's total timeout, also to the reading of the answer: a stream
//! still running when it fires ends with the SSE error event, and, a break like any other,
//! counts as a `Downtime` failure of a model that was streaming well. For streams, prefer
//! [`read_timeout`](reqwest::ClientBuilder::read_timeout) or the layer's
//! [`stream_timeout`](FallbackMiddleware::stream_timeout).
//!
//! # Redirects
//!
//! A `reqwest::Client` follows redirects by default (up to 10): a 307 or 308 resends the body,
//! and every header but `Authorization`, `Proxy-Authorization` and cookies (an `x-api-key` or
//! `api-key` too), to the `Location`, on another host as well. The layer then sees only where
//! the redirects ended (a redirect loop is reqwest's redirect error, `Downtime` and not
//! retried). To have an upstream's 3xx reach the layer instead (classed `Downtime`, not
//! retried, the next model tried), build the client with
//! [`redirect(Policy::none())`](reqwest::ClientBuilder::redirect):
//!
//! ```
//! let client = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()?;
//! # Ok::<(), reqwest::Error>(())
//! ```
//!
//! On the last model the 3xx then comes back to the caller as it came, `Location` included.
//!
//! # Compressed answers
//!
//! With reqwest's `gzip` (or `brotli`, `zstd`, `deflate`) feature, reqwest adds its
//! `Accept-Encoding` after the middleware has run and decompresses the answer before the
//! middleware sees it: classification works, and the answer reaches the caller decompressed.
//! [`identity_encoding`](FallbackMiddleware::identity_encoding) only replaces an
//! `Accept-Encoding` the caller set on the request itself.
//!
//! # With `reqwest-retry`
//!
//! [`RetryTransientMiddleware`] and the fallback answer different questions: retrying sends
//! the *same model* again after a pause, falling back sends the *next model* at once. The order
//! of the middleware decides which comes first (reqwest-middleware runs them in the order they
//! are attached, the first outermost).
//!
//! **Recommended: retry outside, fallback inside.**
//!
//! ```text
//! ClientBuilder::new(client)
//!     .with(RetryTransientMiddleware::new_with_policy(backoff))  // 1. retries the whole chain
//!     .with(FallbackMiddleware::default())                       // 2. model, then models…
//!     .build()
//! ```
//!
//! A failing model is replaced by the next one without delay, as OpenRouter does. The retry
//! sees only the chain's outcome, the answer of the last model tried: it runs the chain again
//! after its backoff when that answer is one reqwest-retry calls transient (such as a 5xx,
//! 408 or 429, a connect error or a timeout), with the shared health putting rate-limited
//! models last. By default that means every model failed and the last one transiently (a 503
//! after a 401 is retried, a 401 after a 503 is not); with
//! [`fallback_on`](FallbackMiddleware::fallback_on) narrowed, a failure that does not move on
//! is the outcome at once. Upstream load is bounded by `(retries + 1) × chain length`.
//!
//! **Retry inside, after the fallback**, retries each model before the chain moves on:
//!
//! ```text
//! ClientBuilder::new(client)
//!     .with(FallbackMiddleware::default())
//!     .with(RetryTransientMiddleware::new_with_policy(backoff))  // per model
//!     .build()
//! ```
//!
//! Use it for brief blips of a model you want to keep (a connection reset), with one retry
//! and a short backoff. Each failing model then costs `retries + 1` requests and the backoff
//! before the next model is tried, and a rate-limited model is asked again within its
//! `Retry-After`. The fallback sees the last retry's answer, so the attempt records show one
//! attempt per model.
//!
//! **Or no reqwest-retry: the layer's own [`retries`](FallbackMiddleware::retries).**
//! `FallbackMiddleware::default().retries(fallback::Retries::new(1))` retries each model
//! too, but only its `downtime` (a 5xx, a reset connection; not a 429, a timeout or a
//! redirect), never within a longer `Retry-After` or once the model cools down, and each
//! retry is an attempt of the records (`gpt-4o=downtime, gpt-4o=ok`): see
//! [`FallbackLayer::retries`](crate::FallbackLayer::retries). Combined with reqwest-retry
//! inside, a model would be retried by both.
//!
//! reqwest-retry needs a clonable request (a bytes body, not a stream). Inside the fallback
//! that always holds: each attempt gets the buffered body. Outside, it holds for the usual
//! `.body(String)` / `.body(Vec<u8>)` / `.json(..)` requests.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
//! use tower_llm_router::fallback::Attempts;
//! use tower_llm_router::reqwest::FallbackMiddleware;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_router::BoxError> {
//! # let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(
//! #     |body: String| async move {
//! #         let request: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
//! #         let model = request["model"].as_str().unwrap_or_default().to_owned();
//! #         match model.as_str() {
//! #             "gpt-4o" => (http::StatusCode::TOO_MANY_REQUESTS, r#"{"error":{"message":"rate limited","code":429}}"#.to_owned()),
//! #             _ => (http::StatusCode::OK, format!(r#"{{"model":"{model}","choices":[]}}"#)),
//! #         }
//! #     },
//! # ));
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let base = format!("http://{}", listener.local_addr()?);
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! // `base` answers 429 for `gpt-4o` and 200 for other models.
//! let backoff = ExponentialBackoff::builder()
//!     .retry_bounds(Duration::from_millis(100), Duration::from_secs(2))
//!     .build_with_max_retries(2);
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy(backoff))
//!     .with(FallbackMiddleware::default())
//!     .build();
//! let response = client
//!     .post(format!("{base}/v1/chat/completions"))
//!     .header("content-type", "application/json")
//!     .body(r#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#)
//!     .send()
//!     .await?;
//! // `gpt-4o` is rate limited: the next model answers at once, and the retry has nothing to do.
//! assert_eq!(response.status(), 200);
//! let attempts = response.extensions().get::<Attempts>().map(Attempts::to_header_value);
//! assert_eq!(attempts.as_deref(), Some("gpt-4o=rate_limited, claude-sonnet=ok"));
//! # Ok(())
//! # }
//! ```
//!
//! [reqwest-middleware]: reqwest_middleware
//! [`RetryTransientMiddleware`]: https://docs.rs/reqwest-retry/latest/reqwest_retry/struct.RetryTransientMiddleware.html

mod convert;
mod middleware;
mod service;

pub(crate) use self::convert::reqwest_urls_bare;
pub use self::middleware::FallbackMiddleware;
pub use self::service::{ReqwestMiddlewareService, ReqwestService, ResponseFuture};
