//! The provider vocabulary: machine tokens and message families, per class.
//!
//! Tokens are compared whole, lowercased, after dropping an AWS `…#` namespace prefix and a
//! `:…` suffix (`x-amzn-ErrorType: ThrottlingException:http://…`). Message families are
//! substrings of the lowercased messages.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

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
            // Alibaba (Qwen / DashScope) input and output checks
            "data_inspection_failed",
            "datainspectionfailed",
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
    // DeepSeek's input and output check, Alibaba's (Qwen) data inspection.
    "content exists risk",
    "inappropriate content",
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
    // vLLM's check against `max_model_len`.
    "maximum model length",
    "max_model_len",
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

/// Which phrase families a lowercased message text contains.
///
/// Found in one pass by an Aho-Corasick automaton over every phrase of every family (overlapping
/// matches: every occurrence of every phrase is seen), instead of a substring search per phrase
/// and rule: those searches, a searcher built for each, were a quarter of classifying an error
/// answer. Where the automaton cannot be built, each family is searched for as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Phrases(u32);

/// A family of phrases: its bit in [`Phrases`] is `1 << family as u32`.
#[derive(Clone, Copy)]
enum Family {
    ModerationStrong,
    Violation,
    PolicyWords,
    ContextStrong,
    Token,
    ContextQuantifier,
    Rate,
    Downtime,
    LengthSubject,
    LengthQuantifier,
}

const FAMILIES: &[(Family, &[&str])] = &[
    (Family::ModerationStrong, MODERATION_STRONG),
    (Family::Violation, &["violat"]),
    (Family::PolicyWords, &["polic", "guideline", "terms"]),
    (Family::ContextStrong, CONTEXT_STRONG),
    (Family::Token, &["token"]),
    (Family::ContextQuantifier, CONTEXT_QUANTIFIERS),
    (Family::Rate, RATE),
    (Family::Downtime, DOWNTIME),
    (Family::LengthSubject, LENGTH_SUBJECTS),
    (Family::LengthQuantifier, LENGTH_QUANTIFIERS),
];

/// The automaton over every distinct phrase, and the families each phrase belongs to.
struct Matcher {
    automaton: AhoCorasick,
    families: Vec<u32>,
}

fn matcher() -> Option<&'static Matcher> {
    static MATCHER: OnceLock<Option<Matcher>> = OnceLock::new();
    MATCHER
        .get_or_init(|| {
            let mut phrases: Vec<&str> = Vec::new();
            let mut families: Vec<u32> = Vec::new();
            for (family, list) in FAMILIES {
                for phrase in *list {
                    match phrases.iter().position(|p| p == phrase) {
                        Some(i) => families[i] |= family.bit(),
                        None => {
                            phrases.push(phrase);
                            families.push(family.bit());
                        }
                    }
                }
            }
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&phrases)
                .ok()?;
            Some(Matcher {
                automaton,
                families,
            })
        })
        .as_ref()
}

impl Family {
    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl Phrases {
    /// The families `text` (lowercased) contains.
    pub(super) fn of(text: &str) -> Self {
        let found = matcher().and_then(|matcher| {
            let matches = matcher.automaton.try_find_overlapping_iter(text).ok()?;
            Some(matches.fold(0, |bits, found| {
                bits | matcher
                    .families
                    .get(found.pattern().as_usize())
                    .copied()
                    .unwrap_or(0)
            }))
        });
        Phrases(found.unwrap_or_else(|| Self::searched(text)))
    }

    /// The same, one substring search per phrase.
    fn searched(text: &str) -> u32 {
        FAMILIES
            .iter()
            .filter(|(_, phrases)| phrases.iter().any(|phrase| text.contains(phrase)))
            .fold(0, |bits, (family, _)| bits | family.bit())
    }

    fn has(self, family: Family) -> bool {
        self.0 & family.bit() != 0
    }
}

/// A moderation message. `strong_only` restricts to the unambiguous phrases (5xx bodies).
pub(super) fn is_moderation_message(phrases: Phrases, strong_only: bool) -> bool {
    phrases.has(Family::ModerationStrong)
        || (!strong_only && phrases.has(Family::Violation) && phrases.has(Family::PolicyWords))
}

/// A context-length message; never one that talks about a per-minute or quota limit.
pub(super) fn is_context_message(phrases: Phrases, strong_only: bool) -> bool {
    if is_rate_message(phrases) {
        return false;
    }
    phrases.has(Family::ContextStrong)
        || (!strong_only && phrases.has(Family::Token) && phrases.has(Family::ContextQuantifier))
        || (!strong_only
            && phrases.has(Family::LengthSubject)
            && phrases.has(Family::LengthQuantifier))
}

pub(super) fn is_rate_message(phrases: Phrases) -> bool {
    phrases.has(Family::Rate)
}

pub(super) fn is_downtime_message(phrases: Phrases) -> bool {
    phrases.has(Family::Downtime)
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
        assert!(!is_context_message(Phrases::of(tpm), false));
        assert!(is_rate_message(Phrases::of(tpm)));
        assert!(is_context_message(
            Phrases::of(
                "max_tokens is too large: 9000. this model supports at most 4096 completion tokens"
            ),
            false
        ));
        assert!(!is_context_message(
            Phrases::of("max_tokens is too large: 9000 tokens"),
            true
        ));
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// The automaton finds exactly the families a substring search per phrase finds.
        #[test]
        fn the_automaton_finds_what_substring_search_finds(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(
                    FAMILIES.iter().flat_map(|(_, phrases)| phrases.iter().copied()).collect::<Vec<_>>()
                ).prop_map(str::to_owned),
                "[a-z _()<=-]{0,6}",
            ],
            0..12,
        )) {
            let text = parts.concat();
            proptest::prop_assert_eq!(Phrases::of(&text).0, Phrases::searched(&text), "{}", text);
        }
    }

    #[test]
    fn the_automaton_is_built_here() {
        // Otherwise the proptest above would compare the fallback with itself.
        assert!(matcher().is_some());
    }
}
