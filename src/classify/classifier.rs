//! The [`Classify`] trait, the default classifier and the combinators.

use std::error::Error as StdError;
use std::fmt;

use http::{HeaderMap, StatusCode};

use super::ErrorClass;

/// Tells whether an upstream answer is a failure, and of which [`ErrorClass`].
///
/// `FallbackLayer` asks its classifier about every attempt. Implement it for your own rules,
/// build one from a closure with [`classify_fn`], or put rules in front of the default with
/// [`DefaultClassifier::with_rule`] / [`ClassifyExt::or`].
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::{Classify, DefaultClassifier, ErrorClass};
///
/// /// Treats a 200 whose body says `"overloaded": true` as downtime, else the default rules.
/// #[derive(Clone)]
/// struct MyGateway;
///
/// impl Classify for MyGateway {
///     fn classify_response(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ErrorClass> {
///         if body.windows(16).any(|w| w == b"\"overloaded\":tru") {
///             return Some(ErrorClass::Downtime);
///         }
///         DefaultClassifier::new().classify_response(status, headers, body)
///     }
/// }
///
/// let headers = HeaderMap::new();
/// assert_eq!(MyGateway.classify_response(StatusCode::OK, &headers, br#"{"overloaded":true}"#), Some(ErrorClass::Downtime));
/// assert_eq!(MyGateway.classify_response(StatusCode::OK, &headers, b"{}"), None);
/// ```
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response: `None` for a success, `Some(class)` for a failure. `body` may be
    /// a prefix of the full body.
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass>;

    /// Classifies an error of the inner service (no response). Defaults to
    /// [`classify_error`](super::classify_error).
    fn classify_error(&self, error: &(dyn StdError + 'static)) -> ErrorClass {
        super::classify_error(error)
    }
}

/// The provider-aware classifier: [`classify_response`](super::classify_response) and
/// [`classify_error`](super::classify_error).
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::{Classify, DefaultClassifier, ErrorClass};
///
/// let classifier = DefaultClassifier::new();
/// let mut headers = HeaderMap::new();
/// headers.insert("x-amzn-errortype", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/".parse().unwrap());
/// let body = br#"{"message":"Too many requests, please wait before trying again."}"#;
/// assert_eq!(classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, body), Some(ErrorClass::RateLimited));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier {
    _priv: (),
}

impl DefaultClassifier {
    /// Creates the default classifier.
    pub const fn new() -> Self {
        Self { _priv: () }
    }

    /// Puts a rule in front of the default rules: when `rule` returns `Some(class)`, that is
    /// the answer; when it returns `None`, the default rules decide. A rule can add or change
    /// failures but not turn a failure into a success: use [`classify_fn`] for full control.
    ///
    /// # Example
    ///
    /// ```
    /// use http::{HeaderMap, StatusCode};
    /// use tower_llm_router::classify::{Classify, DefaultClassifier, ErrorClass};
    ///
    /// // Our gateway answers 402 when a model's budget is spent: move on as for a rate limit.
    /// let classifier = DefaultClassifier::new().with_rule(|status: StatusCode, _: &HeaderMap, _: &[u8]| {
    ///     (status == StatusCode::PAYMENT_REQUIRED).then_some(ErrorClass::RateLimited)
    /// });
    /// let headers = HeaderMap::new();
    /// assert_eq!(classifier.classify_response(StatusCode::PAYMENT_REQUIRED, &headers, b""), Some(ErrorClass::RateLimited));
    /// assert_eq!(classifier.classify_response(StatusCode::BAD_GATEWAY, &headers, b""), Some(ErrorClass::Downtime));
    /// assert_eq!(classifier.classify_response(StatusCode::OK, &headers, b"{}"), None);
    /// ```
    pub fn with_rule<F>(self, rule: F) -> Or<ClassifyFn<F>, Self>
    where
        F: Fn(StatusCode, &HeaderMap, &[u8]) -> Option<ErrorClass> + Clone + Send + Sync + 'static,
    {
        classify_fn(rule).or(self)
    }
}

impl Classify for DefaultClassifier {
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass> {
        super::classify_response(status, headers, body)
    }
}

/// Builds a [`Classify`] from a closure over the response; transport errors use
/// [`classify_error`](super::classify_error).
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::{classify_fn, Classify, ErrorClass};
///
/// // Only 5xx are failures, all of them downtime.
/// let classifier = classify_fn(|status: StatusCode, _: &HeaderMap, _: &[u8]| {
///     status.is_server_error().then_some(ErrorClass::Downtime)
/// });
/// let headers = HeaderMap::new();
/// assert_eq!(classifier.classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers, b""), Some(ErrorClass::Downtime));
/// assert_eq!(classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, b""), None);
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap, &[u8]) -> Option<ErrorClass> + Clone + Send + Sync + 'static,
{
    ClassifyFn { f }
}

/// A [`Classify`] made from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn")
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

impl<F> Classify for ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap, &[u8]) -> Option<ErrorClass> + Clone + Send + Sync + 'static,
{
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass> {
        (self.f)(status, headers, body)
    }
}

/// Two classifiers: the first one's failure wins, else the second decides; see
/// [`ClassifyExt::or`]. Transport errors go to the first.
#[derive(Clone, Copy, Debug)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: Classify, B: Classify> Classify for Or<A, B> {
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass> {
        self.first
            .classify_response(status, headers, body)
            .or_else(|| self.second.classify_response(status, headers, body))
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> ErrorClass {
        self.first.classify_error(error)
    }
}

/// A classifier whose failure classes go through a function; see [`ClassifyExt::map_class`].
#[derive(Clone, Copy)]
pub struct MapClass<C, F> {
    inner: C,
    f: F,
}

impl<C: fmt::Debug, F> fmt::Debug for MapClass<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapClass")
            .field("inner", &self.inner)
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

impl<C, F> Classify for MapClass<C, F>
where
    C: Classify,
    F: Fn(ErrorClass) -> ErrorClass + Clone + Send + Sync + 'static,
{
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass> {
        self.inner
            .classify_response(status, headers, body)
            .map(&self.f)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> ErrorClass {
        (self.f)(self.inner.classify_error(error))
    }
}

/// Combinators for every [`Classify`] (like tower-http's `map_failure_class`).
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::{classify_fn, Classify, ClassifyExt, DefaultClassifier, ErrorClass};
///
/// let classifier = classify_fn(|status: StatusCode, _: &HeaderMap, _: &[u8]| {
///     (status.as_u16() == 499).then_some(ErrorClass::Downtime)
/// })
/// .or(DefaultClassifier::new())
/// // Our health tracking treats a rate limit like downtime.
/// .map_class(|class| if class == ErrorClass::RateLimited { ErrorClass::Downtime } else { class });
///
/// let headers = HeaderMap::new();
/// let status = |code| StatusCode::from_u16(code).unwrap();
/// assert_eq!(classifier.classify_response(status(499), &headers, b""), Some(ErrorClass::Downtime));
/// assert_eq!(classifier.classify_response(status(429), &headers, b""), Some(ErrorClass::Downtime));
/// assert_eq!(classifier.classify_response(status(401), &headers, b""), Some(ErrorClass::Other));
/// ```
pub trait ClassifyExt: Classify + Sized {
    /// Asks `self` first; when it sees a success (`None`), asks `other`.
    fn or<B: Classify>(self, other: B) -> Or<Self, B> {
        Or {
            first: self,
            second: other,
        }
    }

    /// Maps every failure class (responses and transport errors) through `f`.
    fn map_class<F>(self, f: F) -> MapClass<Self, F>
    where
        F: Fn(ErrorClass) -> ErrorClass + Clone + Send + Sync + 'static,
    {
        MapClass { inner: self, f }
    }
}

impl<C: Classify> ClassifyExt for C {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn closure_falls_back_to_default_for_transport_errors() {
        let classifier = classify_fn(|_: StatusCode, _: &HeaderMap, _: &[u8]| None);
        let err = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classifier.classify_error(&err), ErrorClass::Downtime);
    }

    #[test]
    fn map_class_applies_to_errors_too() {
        let classifier = DefaultClassifier::new().map_class(|_| ErrorClass::Other);
        let err = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classifier.classify_error(&err), ErrorClass::Other);
        assert_eq!(
            classifier.classify_response(StatusCode::OK, &HeaderMap::new(), b"{}"),
            None
        );
    }

    #[test]
    fn rule_overrides_default_class() {
        let classifier =
            DefaultClassifier::new().with_rule(|status: StatusCode, _: &HeaderMap, _: &[u8]| {
                (status == StatusCode::TOO_MANY_REQUESTS).then_some(ErrorClass::Downtime)
            });
        let headers = HeaderMap::new();
        assert_eq!(
            classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, b""),
            Some(ErrorClass::Downtime)
        );
        assert_eq!(
            classifier.classify_response(StatusCode::NOT_FOUND, &headers, b""),
            Some(ErrorClass::Other)
        );
    }
}
