//! `AutoRouteLayer`. (being written)

pub mod catalog;
pub mod features;
pub mod router;
pub mod tokens;

pub use catalog::{Capabilities, Catalog, CatalogError, ModelProfile};
pub use features::{difficulty, Features, PromptInfo};
pub use router::{
    fits, AsyncRoutePolicy, DefaultRouter, Ranking, RemoteWithFallback, RoutePolicy, Unfit,
};
pub use tokens::estimate_tokens;

/// placeholder
#[allow(missing_debug_implementations)]
pub struct AutoRoute;
/// placeholder
#[allow(missing_debug_implementations)]
pub struct AutoRouteLayer;
