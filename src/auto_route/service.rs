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
use crate::buffer::{admit, Admission};
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
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match admit(&mut self.inner, req, &self.config.body) {
            Admission::Passthrough(req) => ResponseFuture::passthrough(self.inner.call(req)),
            Admission::Rejected(rejection) => ResponseFuture::rejected(rejection),
            Admission::Routed { inner, head, body } => {
                ResponseFuture::routed(inner, self.config.clone(), head, body)
            }
        }
    }
}
