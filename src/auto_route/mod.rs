//! `AutoRouteLayer`. (being written)
//!
//! # The routing decision
//!
//! * [`catalog`]: the candidate models ([`ModelProfile`], [`Catalog`]), from configuration or
//!   from OpenRouter's model list.
//! * [`tokens`]: [`estimate_tokens`], a one-pass, conservative BPE token count.
//! * [`features`]: [`PromptInfo`] and [`difficulty`], how much a prompt needs a strong model.
//! * [`router`]: [`RoutePolicy`], [`AsyncRoutePolicy`], [`RemoteWithFallback`], the hard
//!   constraints ([`fits`]) and the [`DefaultRouter`], with its measured quality.

pub mod catalog;
pub mod features;
pub mod router;
pub mod tokens;

pub use catalog::{Capabilities, Catalog, CatalogError, ModelProfile};
pub use features::{difficulty, Features, PromptInfo};
pub use router::{
    fits, AsyncRoutePolicy, DefaultRouter, Ranking, RemoteWithFallback, RouteFuture, RoutePolicy,
    Unfit, DEFAULT_COMPLETION_RESERVE,
};
pub use tokens::estimate_tokens;

/// placeholder
#[allow(missing_debug_implementations)]
pub struct AutoRoute;
/// placeholder
#[allow(missing_debug_implementations)]
pub struct AutoRouteLayer;
