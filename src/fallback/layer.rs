use std::sync::Arc;

use tower::Layer;

use super::policy::Config;
use super::Fallback;
use crate::classify::DefaultClassifier;

/// Applies [`Fallback`] to a service: OpenRouter's `models` fallback.
///
/// See the [module docs](super) for the semantics and an example.
///
/// # Clone
///
/// Clones share their configuration and their [`Health`](crate::health::Health) through `Arc`s.
#[derive(Clone, Debug)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct FallbackLayer<C = DefaultClassifier> {
    pub(super) config: Arc<Config>,
    pub(super) classifier: C,
}

impl FallbackLayer {
    /// A layer with the defaults: fall back on every failure, at most 4 models per chain, no
    /// allow-list and no default fallbacks, `models` removed upstream, `Accept-Encoding:
    /// identity` upstream, transport errors returned as `Err`, a 32 MiB body limit, no bound
    /// on the bytes buffered at once, bodies it cannot route passed on, the `x-llm-router-*`
    /// headers on, no timeouts, a fresh in-memory health store, no retry budget, no auto
    /// router. Each setter below says its default.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config::default()),
            classifier: DefaultClassifier::new(),
        }
    }
}

impl Default for FallbackLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> FallbackLayer<C> {
    /// Classifies failures with `classifier` instead of the current one.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_llm_router::classify::{classify_fn, classify_response};
    /// use tower_llm_router::fallback::RoutedModel;
    /// use tower_llm_router::{BoxError, ErrorClass, FallbackLayer, RouterBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Treat 404 (a model unknown to this provider) as downtime; the rest as usual.
    /// let layer = FallbackLayer::new().classify_with(classify_fn(|status, headers, body| {
    ///     if status == 404 {
    ///         Some(ErrorClass::Downtime)
    ///     } else {
    ///         classify_response(status, headers, body)
    ///     }
    /// }));
    /// // A provider that does not know `gpt-4o`.
    /// let upstream = service_fn(|req: Request<RouterBody>| async move {
    ///     let unknown = req.extensions().get::<RoutedModel>().is_some_and(|m| &*m.0 == "gpt-4o");
    ///     let status = if unknown { 404 } else { 200 };
    ///     Ok::<_, BoxError>(Response::builder().status(status).body(Full::new(Bytes::from("{}")))?)
    /// });
    /// let request = Request::post("/v1/chat/completions")
    ///     .body(Full::new(Bytes::from(r#"{"model":"gpt-4o","models":["claude-sonnet"]}"#)))?;
    /// let response = layer.layer(upstream).oneshot(request).await?;
    /// assert_eq!(response.headers()["x-llm-router-attempts"], "gpt-4o=downtime, claude-sonnet=ok");
    /// # Ok(())
    /// # }
    /// ```
    pub fn classify_with<C2>(self, classifier: C2) -> FallbackLayer<C2> {
        FallbackLayer {
            config: self.config,
            classifier,
        }
    }

    fallback_setters!();

    /// Whether [`require_json_body`](Self::require_json_body) is on.
    #[cfg(feature = "reqwest")]
    pub(crate) fn requires_json_body(&self) -> bool {
        self.config.body.require_json
    }
}

impl<S, C: Clone> Layer<S> for FallbackLayer<C> {
    type Service = Fallback<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            config: self.config.clone(),
            classifier: self.classifier.clone(),
        }
    }
}
