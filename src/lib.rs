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
//! # Building blocks
//!
//! * [`payload`]: a view of the JSON request body that reads the routing fields without
//!   building a tree, and rewrites them by splicing byte ranges.
//! * [`classify`]: the provider-aware classifier that tells what kind of failure an upstream
//!   answer (or a transport error) is.
//! * [`health`]: what clones of a layer learn about models (cooldowns), shared through an `Arc`.
//! * [`body`]: the request body type the layers hand to the inner service.
//! * [`ApiError`]: the OpenAI-shaped JSON error every rejection is written as.
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
pub mod classify;
pub mod fallback;
pub mod health;
mod pattern;
pub mod payload;
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
