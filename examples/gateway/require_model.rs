//! With `allow_models`, a request that names no model is refused: the allow-list cannot check
//! it, and the upstream would serve it with a model of its own choosing.
//!
//! The routing layers pass a body without a model (no `model`, `null` or `""`, and no entry in
//! `models`) through untouched, in one attempt, as their contract says: in a general stack
//! such a body may be for an endpoint that needs none. The gateway serves only chat
//! completions and the Responses API, where an upstream that picks a default when none is named
//! (OpenRouter: the account's default model) would serve a model the list does not allow, on
//! the gateway's key. Below the layers, such a request is the one attempt without a
//! [`RoutedModel`]: telling it apart costs one extension lookup, and reads no body.

use std::future::Ready;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response};
use tower::Service;
use tower_llm_router::fallback::RoutedModel;
use tower_llm_router::{ApiError, BoxError};

use crate::stall::AnswerBody;

/// Refuses (400, param `model`) the requests the routing layers pass through without a model,
/// when `refuse` (the gateway has an allow-list); otherwise only forwards to `inner`.
#[derive(Clone, Debug)]
pub struct RequireModel<S> {
    inner: S,
    refuse: bool,
}

impl<S> RequireModel<S> {
    /// `inner`, with requests that name no model refused when `refuse`.
    pub fn new(inner: S, refuse: bool) -> Self {
        Self { inner, refuse }
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequireModel<S>
where
    S: Service<Request<B>, Response = Response<AnswerBody<ResBody>>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<S::Future, Ready<Result<S::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.refuse && req.extensions().get::<RoutedModel>().is_none() {
            return Either::Right(std::future::ready(Ok(model_required())));
        }
        Either::Left(self.inner.call(req))
    }
}

/// The 400 for a request that names no model, in OpenAI's shape (`param`: `model`).
#[cold]
fn model_required<B>() -> Response<AnswerBody<B>> {
    ApiError::bad_request(
        "model_required",
        "name a model in `model` (or `models`): this gateway serves only the models it allows, \
         and cannot check a request that names none",
    )
    .with_param("model")
    .to_response::<axum::body::Body>()
    .map(http_body_util::Either::Right)
}
