use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::future::ResponseFuture;
use super::policy::{Config, Policy};
use super::{AsyncRoutePolicy, AutoRouteLayer, Catalog, RoutePolicy};
use crate::body::RouterBody;
use crate::buffer::{check_content_length, is_routable};
use crate::BoxError;

/// Middleware that rewrites `"model": "auto"` into a model chosen from the prompt.
///
/// See the [module docs](super) for the semantics and an example.
#[derive(Clone, Debug)]
pub struct AutoRoute<S> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
}

impl<S> AutoRoute<S> {
    /// Wraps `inner`, choosing among every model of `catalog` with the default router.
    pub fn new(inner: S, catalog: Catalog) -> Self {
        tower::Layer::layer(&AutoRouteLayer::new(catalog), inner)
    }

    /// An [`AutoRouteLayer`] over `catalog`.
    pub fn layer(catalog: Catalog) -> AutoRouteLayer {
        AutoRouteLayer::new(catalog)
    }

    define_inner_service_accessors!();

    auto_route_setters!();
}

impl<S, B, ResBody> Service<Request<B>> for AutoRoute<S>
where
    S: Service<Request<RouterBody>, Response = Response<ResBody>> + Clone,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !is_routable(&req) {
            return ResponseFuture::passthrough(self.inner.call(req.map(RouterBody::new)));
        }
        if let Err(rejection) = check_content_length(&req, self.config.max_body_bytes) {
            return ResponseFuture::rejected(rejection);
        }
        // Hand the service `poll_ready` was called on to the future, leave its clone behind.
        // See: https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (head, body) = req.into_parts();
        ResponseFuture::routed(inner, self.config.clone(), head, RouterBody::new(body))
    }
}
