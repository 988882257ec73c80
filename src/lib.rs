//! OpenRouter-style model routing as [tower] middleware.
//!
//! `tower-llm-router` brings the two routing features of OpenRouter's chat-completions API to
//! any tower stack, in process:
//!
//! * [`FallbackLayer`]: a request names a `model` and optionally a
//!   `models` list. When the upstream answers with an error (moderation, context length, rate
//!   limit, downtime, ...), the same request is sent again with the next model. The caller gets
//!   the first success, or the last model's error unchanged.
//! * [`AutoRouteLayer`]: a request with `"model": "auto"` gets a
//!   concrete model chosen from its prompt among configured candidates, rewritten into the body
//!   before the request goes out, with the rest of the ranking as fallbacks.
//!
//! Both layers work on `http::Request<B>` for any [`http_body::Body`], so they stack with
//! [`tower::ServiceBuilder`], axum, hyper-util's client and tower-http layers.
//!
//! # With axum
//!
//! The layers' services answer errors of the service below them (a hyper-util client's
//! `Error` on a transport failure of the last model), while axum's `route_service` and
//! `Router::layer` take services that cannot fail (`Error = Infallible`): put axum's
//! `HandleErrorLayer` on top to answer that error yourself, e.g. with a 502. With
//! [`answer_transport_errors`](FallbackLayer::answer_transport_errors) the layer answers a last
//! model's transport failure itself, with the models tried, but its error type stays the inner
//! service's (the layer's own `poll_ready` can still fail), so axum still needs the handler.
//!
//! ```
//! use std::sync::Arc;
//! use axum::error_handling::HandleErrorLayer;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_router::auto_route::{Catalog, ModelProfile};
//! use tower_llm_router::health::InMemoryHealth;
//! use tower_llm_router::{ApiError, AutoRouteLayer, BoxError, FallbackLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A stand-in for the hyper-util client: `small` is down, other models answer.
//! let client = service_fn(|req: Request<RouterBody>| async move {
//!     let body = req.into_body().collect_bytes().await?;
//!     let json: serde_json::Value = serde_json::from_slice(&body)?;
//!     let status = if json["model"] == "small" { 503 } else { 200 };
//!     Ok::<_, BoxError>(Response::builder().status(status).body(Full::new(Bytes::from("{}")))?)
//! });
//! let catalog = Catalog::from_profiles([
//!     ModelProfile::new("small", 16_000, 0.15, 0.6),
//!     ModelProfile::new("large", 200_000, 3.0, 15.0),
//! ]);
//! let health = Arc::new(InMemoryHealth::new());
//! let chat = ServiceBuilder::new()
//!     // The error of the last model's transport failure, answered as a 502.
//!     .layer(HandleErrorLayer::new(|err: BoxError| async move {
//!         ApiError::new(StatusCode::BAD_GATEWAY, "server_error", "upstream_error", err.to_string())
//!             .to_response::<axum::body::Body>()
//!     }))
//!     .layer(FallbackLayer::new().health(health.clone())
//!         .auto_route(AutoRouteLayer::new(catalog).health(health)))
//!     .service(client);
//! let app = axum::Router::new().route_service("/v1/chat/completions", chat);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(axum::body::Body::from(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#))
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-llm-router-attempts"], "small=downtime, large=ok");
//! # }
//! ```
//!
//! With hyper-util's client (`Client<_, RouterBody>`) in place of the stand-in, the
//! handler's closure takes the client's error, `|err: hyper_util::client::legacy::Error|`
//! (a wrong type is reported at `route_service`, as a `Service` bound not met, not at the
//! closure), and the request needs the upstream's absolute URI and HTTP version below the
//! layers (axum hands on `/v1/chat/completions`, and an HTTP/2 client's request as HTTP/2,
//! which an HTTP/1 client refuses; the README shows a `map_request` that sets both).
//!
//! `AutoRouteLayer` goes outside `FallbackLayer` (it hands its ranking down in a request
//! extension, and answers its own 400s with a body built from `Bytes`); in the other order the
//! compiler only reports unmet bounds. [`FallbackLayer::auto_route`] runs both as one layer.
//!
//! `AutoRouteLayer` also works through `Router::layer` or `route_layer` (it rewrites the
//! body, not the URI, so running after routing is fine): a handler behind it finds the
//! [`RouteDecision`](auto_route::RouteDecision) and the
//! [`FallbackModels`](fallback::FallbackModels) in the request's extensions, and hands the
//! request on to a `FallbackLayer` stack with them.
//!
//! # Building blocks
//!
//! * [`payload`]: a view of the JSON request body that reads the routing fields without
//!   building a tree, and rewrites them by splicing byte ranges.
//! * [`classify`]: the provider-aware classifier that tells what kind of failure an upstream
//!   answer (or a transport error) is.
//! * [`health`]: what clones of a layer learn about models (cooldowns), shared through an `Arc`.
//! * [`body`]: the request body type the layers hand to the inner service, and the answer body
//!   they hand back (whole SSE events, a final error event on a broken stream).
//! * [`ApiError`]: the OpenAI-shaped JSON error every rejection is written as.
//! * `reqwest` (feature `reqwest`): `FallbackMiddleware` for reqwest-middleware clients, and a
//!   tower service over a `reqwest::Client` (built against reqwest 0.13 and
//!   reqwest-middleware 0.5).
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![warn(rust_2018_idioms, clippy::todo, clippy::dbg_macro, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

mod api_error;
pub mod auto_route;
pub mod body;
mod buffer;
mod buffer_budget;
pub mod classify;
pub mod fallback;
pub mod health;
mod pattern;
pub mod payload;
mod recent;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;

pub use api_error::ApiError;
pub use auto_route::{AutoRoute, AutoRouteLayer};
pub use body::RouterBody;
pub use classify::ErrorClass;
pub use fallback::{Fallback, FallbackLayer};

/// Alias for a type-erased error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
