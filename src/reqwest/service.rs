use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Body;
use reqwest_middleware::ClientWithMiddleware;
use tower::Service;

use super::convert::{to_http, to_reqwest};
use crate::BoxError;

/// A tower [`Service`] that sends `http::Request<B>`s with a [`reqwest::Client`].
///
/// Put the crate's layers in front of it with [`tower::ServiceBuilder`]. The response body is
/// reqwest's [`Body`](reqwest::Body) (`Data = Bytes`, `Unpin`), streamed as it arrives: a
/// streamed answer is never buffered. The response carries its URL, so `reqwest::Response::from`
/// gives it back.
///
/// A buffered [`RouterBody`](crate::RouterBody) (what the routing layers send) goes out as a
/// reusable body; other bodies stream, with their `Content-Length` when their size is known. Errors are reqwest's; a URI that is not a valid URL is
/// a builder error. The request's extensions go along on the `reqwest::Request`.
///
/// # Example
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_llm_router::reqwest::ReqwestService;
/// use tower_llm_router::FallbackLayer;
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
/// let client = ServiceBuilder::new()
///     .layer(FallbackLayer::new())
///     .service(ReqwestService::new(reqwest::Client::new()));
/// let request = http::Request::post(format!("{base}/v1/chat/completions"))
///     .header("content-type", "application/json")
///     .body(r#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#.to_owned())?;
/// let response = client.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// assert_eq!(
///     response.headers()["x-llm-router-attempts"],
///     "gpt-4o=rate_limited, claude-sonnet=ok"
/// );
/// // Back to reqwest's type, URL included.
/// let response = reqwest::Response::from(response.map(reqwest::Body::wrap));
/// assert_eq!(response.url().path(), "/v1/chat/completions");
/// assert!(response.text().await?.contains("claude-sonnet"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReqwestService {
    inner: reqwest::Client,
}

impl ReqwestService {
    /// Sends requests with `client`.
    pub const fn new(client: reqwest::Client) -> Self {
        Self { inner: client }
    }

    /// Gets a reference to the client.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Gets a mutable reference to the client.
    pub fn get_mut(&mut self) -> &mut reqwest::Client {
        &mut self.inner
    }

    /// Consumes `self`, returning the client.
    pub fn into_inner(self) -> reqwest::Client {
        self.inner
    }
}

impl From<reqwest::Client> for ReqwestService {
    fn from(client: reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ResponseFuture<reqwest::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's client is always ready: its pool queues requests itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        respond(to_reqwest(request).map(|request| self.inner.execute(request)))
    }
}

/// A tower [`Service`] that sends `http::Request<B>`s through a
/// [`reqwest_middleware::ClientWithMiddleware`], its middleware included.
///
/// Like [`ReqwestService`], with reqwest-middleware's error type. The middleware chain gets a
/// copy of the request's extensions as its [`http::Extensions`], so a
/// [`RoutedModel`](crate::fallback::RoutedModel) set by a [`FallbackLayer`](crate::FallbackLayer)
/// in front is visible to every middleware.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_llm_router::reqwest::ReqwestMiddlewareService;
/// use tower_llm_router::FallbackLayer;
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
/// let retry = ExponentialBackoff::builder()
///     .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
///     .build_with_max_retries(1);
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(RetryTransientMiddleware::new_with_policy(retry))
///     .build();
/// let client = ServiceBuilder::new()
///     .layer(FallbackLayer::new())
///     .service(ReqwestMiddlewareService::new(client));
/// let request = http::Request::post(format!("{base}/v1/chat/completions"))
///     .header("content-type", "application/json")
///     .body(r#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#.to_owned())?;
/// let response = client.oneshot(request).await?;
/// // `gpt-4o` was retried once (still 429), then the chain moved on.
/// assert_eq!(
///     response.headers()["x-llm-router-attempts"],
///     "gpt-4o=rate_limited, claude-sonnet=ok"
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReqwestMiddlewareService {
    inner: ClientWithMiddleware,
}

impl ReqwestMiddlewareService {
    /// Sends requests through `client`.
    pub const fn new(client: ClientWithMiddleware) -> Self {
        Self { inner: client }
    }

    /// Gets a reference to the client.
    pub fn get_ref(&self) -> &ClientWithMiddleware {
        &self.inner
    }

    /// Gets a mutable reference to the client.
    pub fn get_mut(&mut self) -> &mut ClientWithMiddleware {
        &mut self.inner
    }

    /// Consumes `self`, returning the client.
    pub fn into_inner(self) -> ClientWithMiddleware {
        self.inner
    }
}

impl From<ClientWithMiddleware> for ReqwestMiddlewareService {
    fn from(client: ClientWithMiddleware) -> Self {
        Self::new(client)
    }
}

impl<B> Service<http::Request<B>> for ReqwestMiddlewareService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future = ResponseFuture<reqwest_middleware::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut extensions = request.extensions().clone();
        let client = self.inner.clone();
        respond(
            to_reqwest(request)
                .map_err(Into::into)
                .map(|request| async move {
                    client
                        .execute_with_extensions(request, &mut extensions)
                        .await
                }),
        )
    }
}

/// The response future of a request sent (or of the error that kept it from being sent).
fn respond<F, E>(sent: Result<F, E>) -> ResponseFuture<E>
where
    F: Future<Output = Result<reqwest::Response, E>> + Send + 'static,
    E: Send + 'static,
{
    ResponseFuture::new(async move { sent?.await.map(to_http) })
}

/// Response future of [`ReqwestService`] and [`ReqwestMiddlewareService`].
///
/// reqwest's own future cannot be named, so this one holds it boxed.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<http::Response<reqwest::Body>, E>> + Send>>,
}

impl<E> ResponseFuture<E> {
    fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<http::Response<reqwest::Body>, E>> + Send + 'static,
    {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<http::Response<reqwest::Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
