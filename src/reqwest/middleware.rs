use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use http::{header, Extensions};
use reqwest_middleware::{Middleware, Next};
use tower::{Layer, Service, ServiceExt};

use super::convert::{request_body, to_http, to_reqwest_response, url_extension};
use crate::body::RouterBody;
use crate::buffer::is_routable;
use crate::classify::{Classify, DefaultClassifier};
use crate::fallback::{Attempts, FallbackModels, RoutedModel, ServedModel};
use crate::{BoxError, FallbackLayer};

/// [`FallbackLayer`] as a [`reqwest_middleware::Middleware`]: OpenRouter's `models` fallback
/// for reqwest client code.
///
/// It runs the layer's own [`Fallback`](crate::Fallback) over the rest of the middleware chain,
/// so the semantics are the layer's (see the [`fallback`](crate::fallback) module): the chain
/// is `model` then `models`, each attempt gets the next model spliced in and `models` removed,
/// the caller gets the first success or the last answer unchanged, and the response carries
/// the `x-llm-router-model` / `x-llm-router-attempts` headers and the
/// [`ServedModel`] / [`Attempts`] extensions. Both records are also put in the
/// [`http::Extensions`] the middleware chain passes along.
///
/// Every attempt runs the middleware attached after this one (each with a fresh copy of the
/// caller's extensions, plus a [`RoutedModel`] naming the attempt's model); the extensions of
/// the attempt that answered are handed back to the caller. A [`FallbackModels`] extension
/// supplies the chain of a request without `models`.
///
/// Requests that cannot carry a routing decision (not a JSON `POST`, or one with an empty or
/// compressed body) go straight to the next middleware, untouched; with
/// [`require_json_body`](FallbackLayer::require_json_body), such a `POST` is answered by the
/// layer instead, and not sent. A routed request's body is
/// buffered once (up to [`max_body_bytes`](FallbackLayer::max_body_bytes)), also when it was
/// given as a stream. A streamed body is read before the first attempt, where reqwest's timer
/// does not run yet: the request's own timeout
/// ([`RequestBuilder::timeout`](reqwest_middleware::RequestBuilder::timeout)) bounds that read,
/// and a body still unread when it runs out is answered 408 (`request_timeout`). A client-wide
/// timeout is not visible to a middleware: it only bounds the attempts.
///
/// The test is the layer's, by method and content type, not by path: a JSON `POST` to another
/// endpoint that names a `model` (`/v1/embeddings`, `/v1/moderations`, `/v1/fine_tuning/jobs`)
/// is routed too. Without `models` in its body that is one attempt, its body sent as it is
/// (with the `x-llm-router-*` headers on the answer):
/// [`default_fallbacks`](FallbackLayer::default_fallbacks) are chat models, and are not added
/// for those endpoints.
///
/// When the last model fails without any answer (a transport error), that error is returned
/// as it is, and the records are not available, unless
/// [`answer_transport_errors`](FallbackLayer::answer_transport_errors) has the layer answer a
/// 502 that carries them (a 504 `upstream_timeout` for a reqwest timeout).
///
/// # Configuration
///
/// The builder methods are the layer's; `FallbackMiddleware::new(layer)` (or `From`) wraps a
/// layer configured elsewhere, sharing its configuration and [`Health`](crate::health::Health).
///
/// # Example
///
/// ```
/// use reqwest_middleware::ClientBuilder;
/// use tower_llm_router::fallback::{Attempts, ServedModel};
/// use tower_llm_router::reqwest::FallbackMiddleware;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_llm_router::BoxError> {
/// # let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(
/// #     |body: String| async move {
/// #         let request: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
/// #         let model = request["model"].as_str().unwrap_or_default().to_owned();
/// #         match model.as_str() {
/// #             "gpt-4o" => (http::StatusCode::TOO_MANY_REQUESTS, r#"{"error":{"message":"rate limited","code":429}}"#.to_owned()),
/// #             _ => (http::StatusCode::OK, format!(r#"{{"model":"{model}","choices":[]}}"#)),
/// #         }
/// #     },
/// # ));
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let base = format!("http://{}", listener.local_addr()?);
/// # tokio::spawn(async move { axum::serve(listener, app).await });
/// // `base` answers 429 for `gpt-4o` and 200 for other models.
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(FallbackMiddleware::default().max_models(3))
///     .build();
/// let response = client
///     .post(format!("{base}/v1/chat/completions"))
///     .header("content-type", "application/json")
///     .body(r#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#)
///     .send()
///     .await?;
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["x-llm-router-model"], "claude-sonnet");
/// assert_eq!(
///     response.extensions().get::<Attempts>().map(Attempts::to_header_value).as_deref(),
///     Some("gpt-4o=rate_limited, claude-sonnet=ok")
/// );
/// assert_eq!(
///     response.extensions().get::<ServedModel>().map(|m| &*m.0),
///     Some("claude-sonnet")
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a middleware does nothing until a client is built with it"]
pub struct FallbackMiddleware<C = DefaultClassifier> {
    layer: FallbackLayer<C>,
}

/// Builder methods that configure the wrapped layer.
macro_rules! layer_setters {
    ($(fn $name:ident[$($generics:tt)*]($arg:ident: $ty:ty) $({ $($bounds:tt)* })?;)*) => {$(
        #[doc = concat!("See [`FallbackLayer::", stringify!($name), "`].")]
        pub fn $name<$($generics)*>(self, $arg: $ty) -> Self $(where $($bounds)*)? {
            Self { layer: self.layer.$name($arg) }
        }
    )*};
}

/// The layer's defaults (see [`FallbackLayer::new`]).
impl Default for FallbackMiddleware {
    fn default() -> Self {
        Self::new(FallbackLayer::new())
    }
}

impl<C> FallbackMiddleware<C> {
    /// Wraps `layer`: same configuration, same shared health.
    pub const fn new(layer: FallbackLayer<C>) -> Self {
        Self { layer }
    }

    /// The wrapped layer.
    pub fn layer(&self) -> &FallbackLayer<C> {
        &self.layer
    }

    /// Consumes `self`, returning the wrapped layer.
    pub fn into_layer(self) -> FallbackLayer<C> {
        self.layer
    }

    /// See [`FallbackLayer::classify_with`].
    pub fn classify_with<C2>(self, classifier: C2) -> FallbackMiddleware<C2> {
        FallbackMiddleware::new(self.layer.classify_with(classifier))
    }

    layer_setters! {
        fn default_fallbacks[I, M](models: I) { I: IntoIterator<Item = M>, M: AsRef<str> };
        fn max_models[](max: usize);
        fn allow_models[I, P](patterns: I) { I: IntoIterator<Item = P>, P: AsRef<str> };
        fn fallback_on[](classes: crate::fallback::ClassSet);
        fn retries[](retries: crate::fallback::Retries);
        fn keep_models[](keep: bool);
        fn identity_encoding[](enabled: bool);
        fn answer_transport_errors[](answer: bool);
        fn max_body_bytes[](limit: usize);
        fn max_buffered_bytes[](limit: usize);
        fn require_json_body[](require: bool);
        fn headers[](enabled: bool);
        fn headers_timeout[](timeout: std::time::Duration);
        fn first_byte_timeout[](timeout: std::time::Duration);
        fn stream_timeout[](timeout: std::time::Duration);
        fn health[](health: std::sync::Arc<dyn crate::health::Health>);
        fn budget[Bu](budget: std::sync::Arc<Bu>) {
            Bu: tower::retry::budget::Budget + Send + Sync + 'static
        };
        fn auto_route[](auto: crate::auto_route::AutoRouteLayer);
    }
}

impl<C> From<FallbackLayer<C>> for FallbackMiddleware<C> {
    fn from(layer: FallbackLayer<C>) -> Self {
        Self::new(layer)
    }
}

#[async_trait::async_trait]
impl<C: Classify> Middleware for FallbackMiddleware<C> {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // With `require_json_body`, a `POST` the layer would not route goes to the layer,
        // which answers it.
        let refusing = self.layer.requires_json_body() && req.method() == reqwest::Method::POST;
        if !refusing && !routable(&req) {
            return next.run(req, extensions).await;
        }
        let url = req.url().clone();
        // A streamed body is read before the first attempt, outside reqwest's own timeout.
        let streamed = req.body().is_some_and(|body| body.as_bytes().is_none());
        let read_within = req.timeout().copied().filter(|_| streamed);
        let mut request =
            http::Request::try_from(req)?.map(|body| DeadlineBody::new(body, read_within));
        if let Some(models) = extensions.get::<FallbackModels>() {
            request.extensions_mut().insert(models.clone());
        }
        request
            .extensions_mut()
            .insert(ChainExtensions(extensions.clone()));
        let service = self.layer.layer(NextService {
            next,
            url: url.clone(),
        });
        let response = service.oneshot(request).await?;
        let (mut parts, body) = response.into_parts();
        match parts.extensions.remove::<ChainExtensions>() {
            Some(ChainExtensions(answered)) => *extensions = answered,
            // An answer the router wrote itself (a refusal, a timeout): it has no URL yet.
            None => parts.extensions.extend(url_extension(url)),
        }
        if let Some(served) = parts.extensions.get::<ServedModel>() {
            extensions.insert(served.clone());
        }
        if let Some(attempts) = parts.extensions.get::<Attempts>() {
            extensions.insert(attempts.clone());
        }
        Ok(to_reqwest_response(http::Response::from_parts(parts, body)))
    }
}

/// Whether the fallback applies: the layer's own test, on the method and the headers it reads
/// (a `Content-Encoding` included: a compressed body is not routed), and a body that is not
/// known to be empty. A request that fails it goes on as the client built it, its body still
/// clonable.
fn routable(req: &reqwest::Request) -> bool {
    let empty = req
        .body()
        .is_none_or(|body| body.as_bytes().is_some_and(<[u8]>::is_empty));
    if empty {
        return false;
    }
    let mut probe = http::Request::new(());
    *probe.method_mut() = req.method().clone();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
    ] {
        for value in req.headers().get_all(&name) {
            probe.headers_mut().append(name.clone(), value.clone());
        }
    }
    is_routable(&probe)
}

/// The request's body, failing with a timeout once the request's own timeout (reqwest's
/// `RequestBuilder::timeout`) has elapsed before the body was read: the layer reads a streamed
/// body in full before any attempt, where reqwest's timer does not run yet, and answers such a
/// failure 408. Without a deadline, the body as it is.
struct DeadlineBody {
    body: reqwest::Body,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(body: reqwest::Body, within: Option<Duration>) -> Self {
        Self {
            body,
            deadline: within.map(|within| Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => {
                let elapsed = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if !elapsed {
                    return Poll::Pending;
                }
                let error = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request's timeout elapsed before its body was read",
                );
                Poll::Ready(Some(Err(error.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The middleware chain's extensions, carried on the `http` request to each attempt and back
/// on the response of the attempt that answered.
#[derive(Clone)]
struct ChainExtensions(Extensions);

/// The rest of the middleware chain as a tower service: what [`Fallback`](crate::Fallback)
/// sends each attempt to.
#[derive(Clone)]
struct NextService<'a> {
    next: Next<'a>,
    /// The caller's URL, exactly as given (the `http` round trip re-parses it).
    url: reqwest::Url,
}

impl<'a> Service<http::Request<RouterBody>> for NextService<'a> {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'a>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<RouterBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let mut extensions = parts
            .extensions
            .remove::<ChainExtensions>()
            .map(|carried| carried.0)
            .unwrap_or_default();
        if let Some(model) = parts.extensions.get::<RoutedModel>() {
            extensions.insert(model.clone());
        }
        // The chain is this fallback's: a middleware further on must not see it again.
        parts.extensions.remove::<FallbackModels>();
        let request =
            reqwest::Request::try_from(http::Request::from_parts(parts, request_body(body)));
        let next = self.next.clone();
        let url = self.url.clone();
        Box::pin(async move {
            let mut request = request?;
            *request.url_mut() = url;
            let response = next.run(request, &mut extensions).await?;
            let mut response = to_http(response);
            response
                .extensions_mut()
                .insert(ChainExtensions(extensions));
            Ok(response)
        })
    }
}
