use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::future::ResponseFuture;
use super::policy::Config;
use super::FallbackLayer;
use crate::body::{ResponseBody, RouterBody};
use crate::buffer::{admit, Admission};
use crate::classify::{Classify, DefaultClassifier};
use crate::BoxError;

/// Middleware that sends a failed request again with the next model of its chain.
///
/// See the [module docs](super) for the semantics and an example.
///
/// # Clone
///
/// Clones share their configuration and [`Health`](crate::health::Health).
#[derive(Clone, Debug)]
pub struct Fallback<S, C = DefaultClassifier> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
    pub(super) classifier: C,
}

impl<S> Fallback<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        FallbackLayer::new().layer_service(inner)
    }

    /// A [`FallbackLayer`] with the default configuration.
    pub fn layer() -> FallbackLayer {
        FallbackLayer::new()
    }
}

impl<S, C> Fallback<S, C> {
    define_inner_service_accessors!();

    /// Classifies failures with `classifier` instead of the current one, as
    /// [`FallbackLayer::classify_with`] does for the services it makes.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn classify_with<C2>(self, classifier: C2) -> Fallback<S, C2> {
        Fallback {
            inner: self.inner,
            config: self.config,
            classifier,
        }
    }

    fallback_setters!();
}

impl<C: Clone> FallbackLayer<C> {
    fn layer_service<S>(&self, inner: S) -> Fallback<S, C> {
        tower::Layer::layer(self, inner)
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for Fallback<S, C>
where
    S: Service<Request<RouterBody>, Response = Response<ResBody>> + Clone,
    S::Error: 'static,
    C: Classify,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, C, ResBody, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match admit(&mut self.inner, req, &self.config.body) {
            Admission::Passthrough(req) => ResponseFuture::passthrough(self.inner.call(req)),
            Admission::Rejected(rejection) => ResponseFuture::rejected(rejection),
            Admission::Routed { inner, head, body } => ResponseFuture::routed(
                inner,
                self.classifier.clone(),
                self.config.clone(),
                head,
                body,
            ),
        }
    }
}
