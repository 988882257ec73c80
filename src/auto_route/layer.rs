use std::sync::Arc;

use tower::Layer;

use super::policy::{Config, Policy};
use super::{AsyncRoutePolicy, AutoRoute, Catalog, DefaultRouter, RoutePolicy};
use crate::buffer::DEFAULT_MAX_BODY_BYTES;

/// Applies [`AutoRoute`]: `"model": "auto"` becomes a concrete model chosen from the prompt.
///
/// See the [module docs](super) for the semantics and an example.
///
/// # Clone
///
/// Clones share the catalog, the policy and the health store through `Arc`s.
#[derive(Clone, Debug)]
pub struct AutoRouteLayer {
    pub(crate) config: Arc<Config>,
}

impl AutoRouteLayer {
    /// A layer choosing among every model of `catalog` with the [`DefaultRouter`].
    pub fn new(catalog: Catalog) -> Self {
        Self {
            config: Arc::new(Config {
                catalog: Arc::new(catalog),
                sentinels: vec!["auto".into(), "openrouter/auto".into()],
                policy: Policy::Sync(Arc::new(DefaultRouter::new())),
                health: None,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_fallbacks: 3,
            }),
        }
    }

    auto_route_setters!();
}

impl<S> Layer<S> for AutoRouteLayer {
    type Service = AutoRoute<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AutoRoute {
            inner,
            config: self.config.clone(),
        }
    }
}
