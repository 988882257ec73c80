//! The OpenAI-shaped JSON error every rejection is written as.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// An error answered to the caller as OpenAI's error object:
/// `{"error":{"message":"…","type":"…","param":…,"code":"…"}}`.
///
/// Every rejection the layers make themselves (bad JSON, a chain over the cap, a model outside
/// the allow-list, a body over the limit, no candidate fits) is an `ApiError`, answered with its
/// status and without calling the inner service. The answer carries the `ApiError` as a
/// response extension too, so a service in front (a log line, a metric) can tell the layers'
/// own answers from an upstream's, and read their code, without parsing the body.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use tower_llm_router::ApiError;
///
/// let err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "bad_models", "`models` must be an array of strings")
///     .with_param("models");
/// let res: http::Response<bytes::Bytes> = err.to_response();
/// assert_eq!(res.status(), 400);
/// let json: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
/// assert_eq!(json["error"]["code"], "bad_models");
/// assert_eq!(json["error"]["param"], "models");
/// assert_eq!(res.extensions().get::<ApiError>().map(ApiError::code), Some("bad_models"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: Cow<'static, str>,
    /// Answered with `Accept-Encoding: identity`: a refusal of a compressed request body
    /// names the coding the layer takes (RFC 7694, section 3).
    accepts_identity_only: bool,
    /// Answered with `Retry-After: n` (seconds): a refusal the client may retry shortly.
    retry_after_secs: Option<u32>,
}

impl ApiError {
    /// Creates an error with its HTTP status, OpenAI `type`, machine-readable `code` and message.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            accepts_identity_only: false,
            retry_after_secs: None,
        }
    }

    /// A `400 invalid_request_error` with the given code and message.
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// The 500 a response future answers if it is polled again after it completed (a
    /// contract breach by the caller; answered rather than panicking).
    pub(crate) fn polled_after_completion() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "polled_after_completion",
            "the response future was polled after it completed",
        )
    }

    /// Answers with `Accept-Encoding: identity`: for a refused `Content-Encoding`.
    pub(crate) fn accepting_identity_only(mut self) -> Self {
        self.accepts_identity_only = true;
        self
    }

    /// Answers with `Retry-After: secs`: for the layer's own overload, which ends shortly.
    pub(crate) fn retry_after_secs(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Names the request field the error is about (`param` in the JSON).
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable `code`, e.g. `"too_many_models"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The OpenAI error `type`, e.g. `"invalid_request_error"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The request field the error is about, if any.
    pub fn param(&self) -> Option<&'static str> {
        self.param
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        // Serialising a `Value` built from strings cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The full response: status, `content-type: application/json` and the JSON body (and,
    /// for a refused compressed request body, `accept-encoding: identity`; for the layer's own
    /// overload, `retry-after`), with a copy of the error as an extension.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = Response::new(B::from(self.to_json()));
        // An error answer's path, not the happy one: the copy (and the extension map) costs
        // nothing to a request that is answered by a model.
        res.extensions_mut().insert(self.clone());
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.accepts_identity_only {
            res.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
