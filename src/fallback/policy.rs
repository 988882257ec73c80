//! Which failures move the chain on, and the layer's configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;

use crate::buffer::BodyRules;
use crate::health::{Health, InMemoryHealth};
use crate::pattern::ModelPatterns;
use crate::ErrorClass;

/// A set of [`ErrorClass`]es: the failures that move a request on to the next model.
///
/// # Example
///
/// ```
/// use tower_llm_router::fallback::ClassSet;
/// use tower_llm_router::ErrorClass;
///
/// let set = ClassSet::none().with(ErrorClass::RateLimited).with(ErrorClass::Downtime);
/// assert!(set.contains(ErrorClass::Downtime));
/// assert!(!set.contains(ErrorClass::Moderation));
/// assert!(ClassSet::all().contains(ErrorClass::Other));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassSet(u8);

impl ClassSet {
    /// Every class: OpenRouter's default ("any error can trigger the use of a fallback model").
    pub const fn all() -> Self {
        Self(u8::MAX)
    }

    /// No class.
    pub const fn none() -> Self {
        Self(0)
    }

    /// The four classes OpenRouter names: moderation, context length, rate limit, downtime.
    pub const fn named() -> Self {
        Self::none()
            .with(ErrorClass::Moderation)
            .with(ErrorClass::ContextLength)
            .with(ErrorClass::RateLimited)
            .with(ErrorClass::Downtime)
    }

    /// This set with `class` added.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub const fn with(self, class: ErrorClass) -> Self {
        Self(self.0 | Self::bit(class))
    }

    /// This set without `class`.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub const fn without(self, class: ErrorClass) -> Self {
        Self(self.0 & !Self::bit(class))
    }

    /// Whether `class` is in the set.
    pub const fn contains(self, class: ErrorClass) -> bool {
        self.0 & Self::bit(class) != 0
    }

    const fn bit(class: ErrorClass) -> u8 {
        match class {
            ErrorClass::Moderation => 1,
            ErrorClass::ContextLength => 2,
            ErrorClass::RateLimited => 4,
            ErrorClass::Downtime => 8,
            ErrorClass::Other => 16,
            // Classes added later fall into the "all" set only.
            #[allow(unreachable_patterns)]
            _ => 128,
        }
    }
}

impl Default for ClassSet {
    fn default() -> Self {
        Self::all()
    }
}

impl FromIterator<ErrorClass> for ClassSet {
    fn from_iter<I: IntoIterator<Item = ErrorClass>>(iter: I) -> Self {
        iter.into_iter().fold(Self::none(), Self::with)
    }
}

impl fmt::Debug for ClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(ErrorClass::ALL.iter().filter(|c| self.contains(**c)))
            .finish()
    }
}

/// How often a request sends a failed attempt again to the same model before it moves on to
/// the next one, and how long it waits before each: see
/// [`FallbackLayer::retries`](super::FallbackLayer::retries) for which failures are retried.
///
/// Retry `k` (from 0) waits between half of `backoff · 2^k`, capped at `max_backoff`, and that
/// whole ceiling ("equal jitter"): requests that failed together do not all come back at the
/// same instant, and each waits at least half its ceiling.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_router::fallback::Retries;
///
/// let retries = Retries::new(2).backoff(Duration::from_millis(100));
/// assert_eq!(retries.max(), 2);
/// // Waits of 50-100 ms, then 100-200 ms; never more than `max_backoff` (2 s by default).
/// assert_eq!(retries.ceiling(1), Duration::from_millis(200));
/// assert_eq!(retries.ceiling(9), Duration::from_secs(2));
/// assert_eq!(Retries::none().max(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Retries {
    max: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retries {
    /// At most `max` retries per model (so `max + 1` attempts of each), the first after a wait
    /// of 100 to 200 ms, the ceiling doubled before each next one, at most 2 s: a reset
    /// connection or a load balancer's 502 is often gone within a few hundred milliseconds.
    pub const fn new(max: u32) -> Self {
        Self {
            max,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// No retry: a failure moves on to the next model at once (the default).
    pub const fn none() -> Self {
        Self::new(0)
    }

    /// The ceiling of the first retry's wait, doubled for each next one. Defaults to 200 ms.
    /// `Duration::ZERO` retries at once, without a timer.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub const fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The most any retry's ceiling grows to. Defaults to 2 s.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub const fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The most retries per model.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// The ceiling of retry `retry`'s wait (from 0): `backoff · 2^retry`, at most `max_backoff`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for Retries {
    fn default() -> Self {
        Self::none()
    }
}

/// The shared configuration of a [`FallbackLayer`](super::FallbackLayer) and its services.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) default_fallbacks: Arc<[Arc<str>]>,
    pub(crate) max_models: usize,
    pub(crate) allow: Option<ModelPatterns>,
    pub(crate) fallback_on: ClassSet,
    /// Retries of a failed attempt on the same model; none by default.
    pub(crate) retries: Retries,
    pub(crate) keep_models: bool,
    pub(crate) identity_encoding: bool,
    /// The last model's transport failure answered as a 502 by the layer.
    pub(crate) answer_transport_errors: bool,
    pub(crate) body: BodyRules,
    pub(crate) headers: bool,
    pub(crate) headers_timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
    /// For `"stream": true` requests, in place of both timeouts above.
    pub(crate) stream_timeout: Option<Duration>,
    pub(crate) health: Arc<dyn Health>,
    pub(crate) budget: Option<Arc<dyn Budget + Send + Sync>>,
    pub(crate) max_error_body: usize,
    pub(crate) max_inspected_body: usize,
    pub(crate) max_sse_prefix: usize,
    /// An auto router run inside this layer's future ([`FallbackLayer::auto_route`]).
    ///
    /// [`FallbackLayer::auto_route`]: super::FallbackLayer::auto_route
    pub(crate) auto: Option<Arc<crate::auto_route::AutoConfig>>,
    /// Whether `auto` ranks with `health` (it was given no store of its own), so that a later
    /// [`health`](super::FallbackLayer::health) call reaches it too.
    pub(crate) auto_shares_health: bool,
    /// Whether `auto` chooses within `allow` (it was given no allow-list of its own), so that
    /// a later [`allow_models`](super::FallbackLayer::allow_models) call reaches it too.
    pub(crate) auto_shares_allow: bool,
    /// Whether `auto` hands over `max_models - 1` fallbacks (it was given no
    /// `max_fallbacks`), so that a later [`max_models`](super::FallbackLayer::max_models) call
    /// reaches it too.
    pub(crate) auto_fills_max_models: bool,
}

/// OpenRouter answers `'models' array must have 3 items or fewer.`: three fallbacks plus the
/// primary.
pub(crate) const DEFAULT_MAX_MODELS: usize = 4;

impl Default for Config {
    fn default() -> Self {
        Self {
            default_fallbacks: Arc::new([]),
            max_models: DEFAULT_MAX_MODELS,
            allow: None,
            fallback_on: ClassSet::all(),
            retries: Retries::none(),
            keep_models: false,
            identity_encoding: true,
            answer_transport_errors: false,
            body: BodyRules::default(),
            headers: true,
            headers_timeout: None,
            first_byte_timeout: None,
            stream_timeout: None,
            health: Arc::new(InMemoryHealth::new()),
            budget: None,
            max_error_body: 64 * 1024,
            max_inspected_body: 256 * 1024,
            max_sse_prefix: 64 * 1024,
            auto: None,
            auto_shares_health: false,
            auto_shares_allow: false,
            auto_fills_max_models: false,
        }
    }
}

impl Config {
    /// Gives the auto router inside this layer what it takes from the layer, each only where
    /// it was given none of its own: the health store, the allow-list, the chain length.
    /// Called by [`auto_route`](super::FallbackLayer::auto_route) and by the setters of those
    /// three, so the order they are called in does not matter.
    pub(crate) fn share_with_auto(&mut self) {
        let Some(auto) = self.auto.as_mut() else {
            return;
        };
        if !(self.auto_shares_health || self.auto_shares_allow || self.auto_fills_max_models) {
            return;
        }
        let auto = Arc::make_mut(auto);
        if self.auto_shares_health {
            auto.health = Some(self.health.clone());
        }
        if self.auto_shares_allow {
            auto.allow = self.allow.clone();
        }
        if self.auto_fills_max_models {
            auto.max_fallbacks = self.max_models - 1;
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("default_fallbacks", &self.default_fallbacks)
            .field("max_models", &self.max_models)
            .field("allow", &self.allow)
            .field("fallback_on", &self.fallback_on)
            .field("retries", &self.retries)
            .field("keep_models", &self.keep_models)
            .field("answer_transport_errors", &self.answer_transport_errors)
            .field("body", &self.body)
            .field("headers", &self.headers)
            .field("headers_timeout", &self.headers_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("stream_timeout", &self.stream_timeout)
            .field("health", &self.health)
            .field("budget", &self.budget.as_ref().map(|_| "Budget"))
            .field("auto_route", &self.auto.is_some())
            .finish()
    }
}
