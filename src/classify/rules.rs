//! The provider vocabulary: machine tokens and message families, per class.
//!
//! Tokens are compared whole, lowercased, after dropping an AWS `…#` namespace prefix and a
//! `:…` suffix (`x-amzn-ErrorType: ThrottlingException:http://…`). Message families are
//! substrings of the lowercased messages.

use super::ErrorClass;

/// Machine-readable values of `type`, `code`, `status`, `error_type`, `__type`, `reason`,
/// `metadata.error_type`, `innererror.code` and `x-amzn-ErrorType`, per class.
const TOKENS: &[(ErrorClass, &[&str])] = &[
    (
        ErrorClass::Moderation,
        &[
            // OpenAI / Azure / OpenRouter
            "content_filter",
            "content_policy_violation",
            "content_policy",
            "responsibleaipolicyviolation",
            "moderation",
            "moderation_blocked",
            "flagged",
            "refusal",
            // Gemini block reasons, Bedrock stop reasons
            "safety",
            "prohibited_content",
            "blocklist",
            "spii",
            "image_safety",
            "guardrail_intervened",
            "content_filtered",
        ],
    ),
    (
        ErrorClass::ContextLength,
        &[
            "context_length_exceeded",
            "context_window_exceeded",
            "model_context_window_exceeded",
            "max_tokens_exceeded",
            "token_limit_exceeded",
            "tokens_limit_exceeded",
            "string_too_long",
            "string_above_max_length",
            "request_too_large",
            "payload_too_large",
            "prompt_too_long",
            "input_too_long",
        ],
    ),
    (
        ErrorClass::RateLimited,
        &[
            "rate_limit_exceeded",
            "rate_limit_error",
            "rate_limit",
            "rate_limited",
            "ratelimitexceeded",
            "too_many_requests",
            "toomanyrequests",
            "resource_exhausted",
            "throttlingexception",
            "throttling",
            "throttled",
            "servicequotaexceededexception",
            "quota_exceeded",
            "capacity_exhausted",
            // OpenAI's billing quota arrives as a 429: treated as a rate limit.
            "insufficient_quota",
        ],
    ),
    (
        ErrorClass::Downtime,
        &[
            "overloaded_error",
            "overloaded",
            "engine_overloaded",
            "provider_overloaded",
            "provider_unavailable",
            "model_unavailable_upstream",
            "temporarily_unavailable",
            "unavailable",
            "service_unavailable",
            "serviceunavailable",
            "serviceunavailableexception",
            "server_error",
            "internal_server_error",
            "internal_error",
            "internalserverexception",
            "internalfailure",
            "internal",
            "api_error",
            "server",
            "timeout",
            "timeout_error",
            "deadline_exceeded",
            "modeltimeoutexception",
            "modelnotreadyexception",
            "modelerrorexception",
            "modelstreamerrorexception",
            "bad_gateway",
            "gateway_timeout",
            "upstream_error",
        ],
    ),
];

/// The class a machine token names, if any.
pub(super) fn token_class(token: &str) -> Option<ErrorClass> {
    let token = normalize_token(token);
    if token.is_empty() {
        return None;
    }
    TOKENS
        .iter()
        .find(|(_, tokens)| tokens.iter().any(|t| t.eq_ignore_ascii_case(token)))
        .map(|(class, _)| *class)
}

/// The class of the first quoted token (`"rate_limit_exceeded"`) found in lowercased raw text:
/// used when a body is not valid JSON (a truncated prefix).
pub(super) fn quoted_token_class(text: &str) -> Option<ErrorClass> {
    TOKENS.iter().find_map(|(class, tokens)| {
        tokens
            .iter()
            .any(|t| {
                text.match_indices(t).any(|(at, _)| {
                    text[..at].ends_with('"') && text[at + t.len()..].starts_with('"')
                })
            })
            .then_some(*class)
    })
}

fn normalize_token(token: &str) -> &str {
    let token = token.trim();
    let token = token.rsplit_once('#').map_or(token, |(_, name)| name);
    token.split_once(':').map_or(token, |(name, _)| name).trim()
}

fn any(text: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|phrase| text.contains(phrase))
}

/// Moderation messages specific enough to trust at any status.
const MODERATION_STRONG: &[&str] = &[
    "content management policy",
    "content filter",
    "content_filter",
    "content policy",
    "content_policy",
    "usage polic",
    "usage guideline",
    "acceptable use",
    "flagged",
    "safety system",
    "safety filter",
    "safety reasons",
    "safety concerns",
    "blocked due to safety",
    "safety_check",
    "responsible ai",
    "responsibleai",
    "guardrail",
    "prohibited content",
    "moderation",
    "prompt injection",
];

/// Context-length messages specific enough to trust at any status.
const CONTEXT_STRONG: &[&str] = &[
    "context length",
    "context_length",
    "context window",
    "context_window",
    "context limit",
    "context size",
    "maximum context",
    "max context",
    "prompt is too long",
    "input is too long",
    "prompt too long",
    "input too long",
    "too many input tokens",
    "too many tokens",
    "maximum number of tokens",
    "maximum prompt length",
    "maximum input length",
    "token limit",
    "reduce the length of the messages",
    "string too long",
    "request too large",
    "request entity too large",
    "payload too large",
    "payload size exceeds",
];

/// With "token", these make a message a context-length one (4xx and 2xx bodies only).
const CONTEXT_QUANTIFIERS: &[&str] = &[
    "exceed",
    "too long",
    "too large",
    "too many",
    "at most",
    "must be <=",
    "less than",
    "fewer than",
    "greater than the maximum",
    "larger than the maximum",
    "more than the maximum",
    "maximum allowed",
    "over the limit",
];

const RATE: &[&str] = &[
    "rate limit",
    "rate-limit",
    "ratelimit",
    "rate_limit",
    "too many requests",
    "per minute",
    "per min",
    "per second",
    "per hour",
    "per day",
    "(tpm)",
    "(rpm)",
    "tokens per",
    "requests per",
    "quota",
    "throttl",
    "slow down",
    "resource exhausted",
    "resource has been exhausted",
];

const DOWNTIME: &[&str] = &[
    "overload",
    "unavailable",
    "timed out",
    "timeout",
    "time out",
    "internal server error",
    "internal error",
    "server error",
    "server had an error",
    "bad gateway",
    "gateway",
    "try again later",
    "high demand",
    "capacity",
    "temporarily",
    "not ready",
    "currently loading",
    "upstream",
];

/// What a too-long message talks about, and how (4xx and 2xx bodies only).
const LENGTH_SUBJECTS: &[&str] = &["prompt", "input", "message", "context", "request"];
const LENGTH_QUANTIFIERS: &[&str] = &[
    "too long",
    "too large",
    "exceeds max",
    "exceeds the max",
    "exceed the max",
    "exceeds the limit",
    "max length",
    "maximum length",
];

/// A moderation message. `strong_only` restricts to the unambiguous phrases (5xx bodies).
pub(super) fn is_moderation_message(text: &str, strong_only: bool) -> bool {
    any(text, MODERATION_STRONG)
        || (!strong_only && text.contains("violat") && any(text, &["polic", "guideline", "terms"]))
}

/// A context-length message; never one that talks about a per-minute or quota limit.
pub(super) fn is_context_message(text: &str, strong_only: bool) -> bool {
    if is_rate_message(text) {
        return false;
    }
    any(text, CONTEXT_STRONG)
        || (!strong_only && text.contains("token") && any(text, CONTEXT_QUANTIFIERS))
        || (!strong_only && any(text, LENGTH_SUBJECTS) && any(text, LENGTH_QUANTIFIERS))
}

pub(super) fn is_rate_message(text: &str) -> bool {
    any(text, RATE)
}

pub(super) fn is_downtime_message(text: &str) -> bool {
    any(text, DOWNTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_normalized() {
        assert_eq!(
            token_class("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            Some(ErrorClass::RateLimited)
        );
        assert_eq!(
            token_class("com.amazon.coral.service#ServiceUnavailableException"),
            Some(ErrorClass::Downtime)
        );
        assert_eq!(
            token_class(" RESOURCE_EXHAUSTED "),
            Some(ErrorClass::RateLimited)
        );
        assert_eq!(token_class("invalid_request_error"), None);
        assert_eq!(token_class(""), None);
        assert_eq!(token_class("#:"), None);
    }

    #[test]
    fn quoted_tokens_only_match_whole_values() {
        let text = r#"{"error":{"message":"x","code":"context_length_exceeded","par"#;
        assert_eq!(quoted_token_class(text), Some(ErrorClass::ContextLength));
        assert_eq!(quoted_token_class(r#"{"message":"internal docs"#), None);
    }

    #[test]
    fn rate_messages_are_not_context_messages() {
        let tpm =
            "request too large for gpt-4o on tokens per min (tpm): limit 30000, requested 45000";
        assert!(!is_context_message(tpm, false));
        assert!(is_rate_message(tpm));
        assert!(is_context_message(
            "max_tokens is too large: 9000. this model supports at most 4096 completion tokens",
            false
        ));
        assert!(!is_context_message(
            "max_tokens is too large: 9000 tokens",
            true
        ));
    }
}
