//! [`ErrorClass`]: the kind of failure an upstream answer or a transport error is.

use std::fmt;
use std::str::FromStr;

/// The kind of failure an upstream answer (or a transport error) is.
///
/// The five classes are the ones OpenRouter names for its `models` fallback, plus `Other` for
/// everything else (auth, billing, unknown model, invalid parameters).
///
/// # Example
///
/// ```
/// use tower_llm_router::classify::ErrorClass;
///
/// let class: ErrorClass = "rate_limited".parse().unwrap();
/// assert_eq!(class, ErrorClass::RateLimited);
/// assert_eq!(class.to_string(), "rate_limited");
/// assert_eq!(ErrorClass::ALL.len(), 5);
/// assert!("nope".parse::<ErrorClass>().is_err());
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The input (or the output) was flagged or blocked by a content filter, a safety system or
    /// a guardrail.
    Moderation,
    /// The prompt (plus `max_tokens`) does not fit the model's context window, or the request is
    /// too large.
    ContextLength,
    /// Too many requests or tokens for the account's limits (429, `RESOURCE_EXHAUSTED`,
    /// throttling, quota).
    RateLimited,
    /// The upstream is down, overloaded or unreachable: 5xx, 529, timeouts, refused or reset
    /// connections, broken streams, redirects not followed (the model is not at its URL).
    Downtime,
    /// Any other failure: auth, billing, unknown model, invalid parameters.
    Other,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Moderation,
        ErrorClass::ContextLength,
        ErrorClass::RateLimited,
        ErrorClass::Downtime,
        ErrorClass::Other,
    ];

    /// The class's snake_case name, as used in the `x-llm-router-attempts` header.
    ///
    /// ```
    /// use tower_llm_router::classify::ErrorClass;
    ///
    /// assert_eq!(ErrorClass::ContextLength.as_str(), "context_length");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Moderation => "moderation",
            ErrorClass::ContextLength => "context_length",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Downtime => "downtime",
            ErrorClass::Other => "other",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ErrorClass {
    type Err = ParseErrorClassError;

    /// Parses a class name as written by [`ErrorClass::as_str`], ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|class| class.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(ParseErrorClassError(()))
    }
}

/// The error returned when a string is not the name of an [`ErrorClass`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseErrorClassError(());

impl fmt::Display for ParseErrorClassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("unknown error class (expected moderation, context_length, rate_limited, downtime or other)")
    }
}

impl std::error::Error for ParseErrorClassError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for class in ErrorClass::ALL {
            assert_eq!(class.as_str().parse::<ErrorClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert_eq!(" Downtime ".parse::<ErrorClass>(), Ok(ErrorClass::Downtime));
        assert!("".parse::<ErrorClass>().is_err());
        assert!("rate-limited".parse::<ErrorClass>().is_err());
    }

    #[test]
    fn display_pads() {
        assert_eq!(format!("{:>7}", ErrorClass::Other), "  other");
    }
}
