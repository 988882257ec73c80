//! Conversions between reqwest's request and response types and `http`'s.

use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use reqwest::ResponseBuilderExt;

use crate::body::RouterBody;
use crate::BoxError;

/// reqwest's body for any request body. A buffered [`RouterBody`] (what a routing layer sends)
/// or an empty one becomes a reusable body, so that the request stays clonable
/// (`reqwest-retry` needs that) and keeps its length; anything else streams, with its size
/// hint (a body of known length goes out with its `Content-Length`, not chunked).
pub(super) fn request_body<B>(body: B) -> reqwest::Body
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let body = RouterBody::new(body);
    match body.buffered_bytes() {
        Some(bytes) => reqwest::Body::from(bytes),
        // Reusable too: an empty body leaves the request clonable.
        None if body.size_hint().exact() == Some(0) => reqwest::Body::from(Bytes::new()),
        None => reqwest::Body::wrap(SyncBody::new(body)),
    }
}

/// A streaming body as `reqwest::Body::wrap` takes it (`Sync`): behind a `Mutex` that is never
/// locked (polling has `&mut self`), with the size hint it had when wrapped, which is what
/// hyper reads to frame the request (`reqwest::Body::wrap_stream` would drop it).
struct SyncBody {
    body: Mutex<RouterBody>,
    size_hint: SizeHint,
}

impl SyncBody {
    fn new(body: RouterBody) -> Self {
        Self {
            size_hint: body.size_hint(),
            body: Mutex::new(body),
        }
    }
}

impl Body for SyncBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = self
            .get_mut()
            .body
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

/// A reqwest request from an `http` one: method, URL, version, headers, extensions and body.
pub(super) fn to_reqwest<B>(request: http::Request<B>) -> Result<reqwest::Request, reqwest::Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    reqwest::Request::try_from(request.map(request_body))
}

/// An `http` response from a reqwest one. The body streams as it arrives, and the response's
/// URL goes along as the extension that `reqwest::Response::from` reads back.
pub(super) fn to_http(response: reqwest::Response) -> http::Response<reqwest::Body> {
    let url = response.url().clone();
    let mut response = http::Response::<reqwest::Body>::from(response);
    response.extensions_mut().extend(url_extension(url));
    response
}

/// A reqwest response from an `http` one whose body is one of the routing layers'.
pub(super) fn to_reqwest_response<B>(response: http::Response<B>) -> reqwest::Response
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    reqwest::Response::from(response.map(reqwest::Body::wrap))
}

/// The extensions holding reqwest's (private) response URL type.
pub(super) fn url_extension(url: reqwest::Url) -> http::Extensions {
    http::Response::builder()
        .url(url)
        .body(())
        .map(|response| response.into_parts().0.extensions)
        .unwrap_or_default()
}

/// `text` (what `error` and its sources say), with the URL of every reqwest error among
/// `error`'s sources written without its query, fragment and userinfo: reqwest puts the
/// request's URL (a `?key=` included) into its transport errors, and this text goes into an
/// answer. Exact, from the error's own URL: the text scan of
/// [`describe_error`](crate::classify::describe_error) may end such a URL early.
pub(crate) fn reqwest_urls_bare(
    error: &(dyn std::error::Error + 'static),
    mut text: String,
) -> String {
    for url in crate::classify::sources(error)
        .filter_map(|err| err.downcast_ref::<reqwest::Error>()?.url())
    {
        let mut bare = url.clone();
        bare.set_query(None);
        bare.set_fragment(None);
        // Only a URL that cannot be a base (`data:`, `mailto:`) refuses these; it has neither.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        if bare != *url {
            text = text.replace(url.as_str(), bare.as_str());
        }
    }
    text
}
