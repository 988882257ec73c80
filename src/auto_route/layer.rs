use std::sync::Arc;

use tower::Layer;

use super::policy::{Config, Policy};
use super::shared_catalog::CatalogSource;
use super::{AsyncRoutePolicy, AutoRoute, Catalog, DefaultRouter, RoutePolicy, SharedCatalog};
use crate::buffer::BodyRules;

/// Applies [`AutoRoute`]: `"model": "auto"` becomes a concrete model chosen from the prompt.
///
/// See the [module docs](super) for the semantics and an example.
///
/// # Without `FallbackLayer`
///
/// The inner service must answer a body that can be built from `Bytes` (the layer answers its
/// own rejections in the same type). `FallbackLayer`'s
/// [`ResponseBody`](crate::body::ResponseBody) is one; hyper's `Incoming` is not, and
/// `AutoRouteLayer` straight over a hyper-util client is then not a `Service` at all (the
/// compiler says only that "trait bounds were not satisfied"). Wrap the body in a
/// `ResponseBody` below the layer:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Empty};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
/// use tower_llm_router::body::ResponseBody;
/// use tower_llm_router::{AutoRouteLayer, BoxError, RouterBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Like hyper's `Incoming`, `Empty` cannot be built from `Bytes`.
/// let upstream = service_fn(|req: Request<RouterBody>| async move {
///     let body = req.into_body().collect_bytes().await?;
///     assert!(body.starts_with(br#"{"model":"small""#));
///     Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
/// });
/// let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
/// let client = ServiceBuilder::new()
///     .layer(AutoRouteLayer::new(catalog))
///     .map_response(|res: Response<Empty<Bytes>>| res.map(ResponseBody::inner))
///     .service(upstream);
/// let request = Request::post("/v1/chat/completions")
///     .body(RouterBody::from(Bytes::from_static(
///         br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
///     )))
///     .unwrap();
/// let response = client.oneshot(request).await.unwrap();
/// assert_eq!(&*response.extensions().get::<RouteDecision>().unwrap().chosen, "small");
/// # }
/// ```
///
/// # Options
///
/// The layer chooses a model and hands the chain over; the [`FallbackLayer`](crate::FallbackLayer)
/// below sends the attempts. Its own setters: what it may choose ([`candidates`](Self::candidates),
/// [`allow_models`](Self::allow_models), [`sentinel`](Self::sentinel)), how it ranks
/// ([`policy`](Self::policy), [`async_policy`](Self::async_policy), [`health`](Self::health)),
/// how many models it hands over ([`max_fallbacks`](Self::max_fallbacks)), whether a
/// conversation stays on its model ([`session_affinity`](Self::session_affinity)), and the body it reads
/// ([`max_body_bytes`](Self::max_body_bytes), [`max_buffered_bytes`](Self::max_buffered_bytes),
/// [`require_json_body`](Self::require_json_body)). The options of the attempts have no
/// counterpart here and are set on the `FallbackLayer`: `fallback_on`, `default_fallbacks`,
/// `keep_models`, `identity_encoding`, `answer_transport_errors`, `headers`, the timeouts and
/// `budget`. Two concepts are set on both sides, with the same value: the allow-list
/// (`allow_models` here and there) and the chain's length (`max_fallbacks` here counts the
/// models after the first, `max_models` there counts them all). Run inside
/// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route), the router takes that
/// layer's health store, allow-list and chain length (`max_models - 1` fallbacks) unless
/// given its own, and the body is that layer's to read: this layer's body options do not
/// apply.
///
/// # Clone
///
/// Clones share the catalog (and its replacements, with
/// [`with_shared_catalog`](Self::with_shared_catalog)), the policy, the health store and the
/// conversations remembered ([`session_affinity`](Self::session_affinity)) through `Arc`s.
#[derive(Clone, Debug)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct AutoRouteLayer {
    pub(crate) config: Arc<Config>,
}

impl AutoRouteLayer {
    /// A layer choosing among every model of `catalog` with the [`DefaultRouter`]. The catalog
    /// is fixed for the life of the layer; for one that can be replaced while the service
    /// runs, see [`with_shared_catalog`](Self::with_shared_catalog).
    pub fn new(catalog: Catalog) -> Self {
        Self::with_source(CatalogSource::Fixed(Arc::new(catalog)))
    }

    /// A layer choosing among every model of the catalog `catalog` holds at each request, with
    /// the [`DefaultRouter`]: [`SharedCatalog::replace`] applies to every clone of this layer
    /// and every service built with it from their next request on, on every thread. Reading
    /// it costs one atomic load per auto request, no lock.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision, SharedCatalog};
    /// use tower_llm_router::{AutoRouteLayer, BoxError, RouterBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let catalog = SharedCatalog::new(Catalog::from_profiles([
    ///     ModelProfile::new("cheap", 16_000, 0.1, 0.4),
    ///     ModelProfile::new("dear", 16_000, 3.0, 15.0),
    /// ]));
    /// let upstream = service_fn(|_: Request<RouterBody>| async {
    ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    /// });
    /// let client = AutoRouteLayer::with_shared_catalog(catalog.clone()).layer(upstream);
    /// let ask = || {
    ///     Request::post("/v1/chat/completions").body(Full::new(Bytes::from_static(
    ///         br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
    ///     )))
    /// };
    /// let chosen = |response: &Response<_>| {
    ///     response.extensions().get::<RouteDecision>().map(|d| d.chosen.clone())
    /// };
    /// let before = client.clone().oneshot(ask()?).await?;
    /// assert_eq!(chosen(&before).as_deref(), Some("cheap"));
    ///
    /// // "cheap" is withdrawn: the running service routes without it.
    /// catalog.replace(Catalog::from_profiles([ModelProfile::new("dear", 16_000, 3.0, 15.0)]));
    /// let after = client.oneshot(ask()?).await?;
    /// assert_eq!(chosen(&after).as_deref(), Some("dear"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_shared_catalog(catalog: SharedCatalog) -> Self {
        Self::with_source(CatalogSource::Shared(catalog, None))
    }

    fn with_source(catalog: CatalogSource) -> Self {
        Self {
            config: Arc::new(Config {
                catalog,
                sentinels: vec!["auto".into(), "openrouter/auto".into()],
                policy: Policy::Default(DefaultRouter::new()),
                health: None,
                allow: None,
                body: BodyRules::default(),
                max_fallbacks: 3,
                max_fallbacks_set: false,
                sessions: None,
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
