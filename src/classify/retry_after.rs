//! Reading how long an upstream asks to wait before the next request.
//!
//! Four kinds of sources, in this order of trust ([`wait_hint`] combines them):
//!
//! * an explicit request to wait: `retry-after-ms`, `x-ms-retry-after-ms` and `Retry-After`
//!   ([`retry_after`]);
//! * Google's `RetryInfo` detail in a JSON error body (Gemini, Vertex AI:
//!   `"retryDelay": "32s"`, [`retry_info_delay`]);
//! * for a rate limit only, when the exhausted limit resets: OpenAI-style
//!   `x-ratelimit-reset-{requests,tokens}` (Go durations such as `6m0s`, paired with
//!   `x-ratelimit-remaining-*`; OpenAI, Groq, Together, Fireworks...) and Anthropic's
//!   `anthropic-ratelimit-*-reset` (RFC 3339 timestamps, paired with `-remaining`)
//!   ([`rate_limit_reset`]);
//! * last, for a rate limit or a 503 / 529 only, a delay the error message states in words:
//!   Gemini's "Please retry in 31.44s.", Azure's "Please retry after 8 seconds.", OpenAI's and
//!   Groq's "Please try again in 1m26.4s.", "retry in 1m 30s" (what a 429 without any of the
//!   above may still say, and what an overloaded server may say of its outage).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aho_corasick::{AhoCorasick, MatchKind};
use http::{HeaderMap, StatusCode};

use super::json::Json;
use super::ErrorClass;

/// The longest wait [`retry_after`] returns: larger values are clamped to one day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the upstream asks to wait, from its response headers.
///
/// Same as [`retry_after_at`] with `now` = [`SystemTime::now`] for `Retry-After` dates.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_llm_router::classify::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "20".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
///
/// // Azure's millisecond header is more precise and wins.
/// headers.insert("x-ms-retry-after-ms", "1500.5".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::from_micros(1_500_500)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// How long the upstream asks to wait, reading `Retry-After` dates relative to `now`.
///
/// * `retry-after-ms` (OpenAI, Azure) and `x-ms-retry-after-ms` (Azure) hold milliseconds,
///   possibly fractional. When any of them holds a valid value, the smallest one is used.
/// * Otherwise `Retry-After` holds delta-seconds (a fraction is accepted) or an HTTP-date; a
///   date in the past means "now" (`Duration::ZERO`). With several values, the smallest wins.
/// * Garbage, negative, NaN or infinite values are ignored; values over [`MAX_RETRY_AFTER`]
///   are clamped to it.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderMap;
/// use tower_llm_router::classify::retry_after_at;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_717); // Sun, 06 Nov 1994 08:48:37 GMT
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
/// assert_eq!(retry_after_at(&headers, now), Some(Duration::from_secs(60)));
///
/// headers.insert("retry-after", "soon".parse().unwrap());
/// assert_eq!(retry_after_at(&headers, now), None);
/// ```
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let millis = ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .flat_map(|name| headers.get_all(name))
        .filter_map(|value| parse_number(value.to_str().ok()?))
        .map(|ms| ms / 1000.0)
        .reduce(f64::min);
    if let Some(secs) = millis {
        return Some(clamp_secs(secs));
    }
    headers
        .get_all(http::header::RETRY_AFTER)
        .iter()
        .filter_map(|value| {
            let value = value.to_str().ok()?.trim();
            match parse_number(value) {
                Some(secs) => Some(clamp_secs(secs)),
                None => {
                    let date = httpdate::parse_http_date(value).ok()?;
                    Some(
                        date.duration_since(now)
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_RETRY_AFTER),
                    )
                }
            }
        })
        .min()
}

/// How long a failed answer asks to wait before its model is asked again, from every source
/// upstreams use.
///
/// Same as [`wait_hint_at`] with `now` = [`SystemTime::now`] for dates.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::wait_hint;
/// use tower_llm_router::ErrorClass;
///
/// // A 429 that says only when its requests-per-minute limit resets.
/// let (limited, down) = (StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "20s".parse().unwrap());
/// assert_eq!(wait_hint(limited, ErrorClass::RateLimited, &headers, b""), Some(Duration::from_secs(20)));
/// // A reset says nothing about an outage.
/// assert_eq!(wait_hint(down, ErrorClass::Downtime, &headers, b""), None);
/// // A 503 may say in words how long it lasts.
/// let words = b"The model is overloaded. Please retry in 1m 30s.";
/// assert_eq!(wait_hint(down, ErrorClass::Downtime, &headers, words), Some(Duration::from_secs(90)));
///
/// // An explicit `Retry-After` wins.
/// headers.insert("retry-after", "3".parse().unwrap());
/// assert_eq!(wait_hint(limited, ErrorClass::RateLimited, &headers, b""), Some(Duration::from_secs(3)));
/// ```
pub fn wait_hint(
    status: StatusCode,
    class: ErrorClass,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Duration> {
    wait_hint_at(status, class, headers, body, SystemTime::now())
}

/// How long a failed answer of `status` and `class` asks to wait, reading dates relative to
/// `now`: what `FallbackLayer` tells the shared health about a failure
/// ([`Observation::retry_after`](crate::health::Observation::retry_after)).
///
/// The first of these that gives a value wins:
///
/// 1. [`retry_after_at`]: `retry-after-ms`, `x-ms-retry-after-ms`, then `Retry-After`.
/// 2. [`retry_info_delay`]: Google's `RetryInfo.retryDelay` in the JSON error `body` (which
///    may be a prefix of the body, as the classifier reads it). For an event stream, `body` is
///    the data of the event the failure was classified by, not the stream's bytes:
///    `FallbackLayer` passes the data of the first event past the preamble, of a 200 stream
///    or of an error status whose body is an event stream.
/// 3. For [`RateLimited`](ErrorClass::RateLimited) only, [`rate_limit_reset_at`]: when the
///    exhausted rate limit resets. OpenAI sends these headers with every answer, a 5xx
///    too: a reset says when a quota refills, not when an outage ends.
/// 4. For [`RateLimited`](ErrorClass::RateLimited), and for a `status` of 503 or 529 (an
///    upstream unavailable or overloaded, as vLLM, TGI, Azure and Anthropic answer), a delay
///    the error message in `body` states in words, right after "retry in", "retry after" or
///    "try again in" (ASCII case ignored, the phrase as a word): one or more terms, each a Go
///    duration (`31.44s`, `855.4ms`, `1m26.4s`; units `h`, `m`, `s`, `ms`) or a number and a
///    unit word of hours, minutes, seconds or milliseconds (`8 seconds`, `2 minutes`,
///    `500 ms`), ended by anything but a letter or a digit. Terms apart from each other by
///    spaces, a comma or `and` add up (`1m 30s`, `2 minutes and 5 seconds`: 90 s, 125 s); a
///    number after them that is no term (`retry in 1m 30`, `retry in 1 of 3`) leaves the text
///    unread. Other wordings ("retry in a few seconds") are not read. Not for other failures:
///    a 400, a 500 (an exception's text) or a 502 (a proxy's page) may echo what the client
///    sent, and a client must not set a model's cooldown. A 503 or 529 says the upstream
///    cannot take the request at all, before reading it. For an error inside a 2xx answer (a
///    stream's first event), the error's own `code` of 503 or 529 (OpenRouter's
///    `{"error":{"code":529,...}}`) or Anthropic's `overloaded_error` stands for the status.
///
/// Every value is at most [`MAX_RETRY_AFTER`]; dates in the past give `Duration::ZERO`.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::wait_hint_at;
/// use tower_llm_router::ErrorClass;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800); // 2024-05-01T12:00:00Z
/// let mut headers = HeaderMap::new();
/// headers.insert("anthropic-ratelimit-tokens-remaining", "0".parse().unwrap());
/// headers.insert("anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:30Z".parse().unwrap());
/// let (status, limited) = (StatusCode::TOO_MANY_REQUESTS, ErrorClass::RateLimited);
/// assert_eq!(wait_hint_at(status, limited, &headers, b"", now), Some(Duration::from_secs(30)));
///
/// // Gemini says it in the body.
/// let gemini = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
///     {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"32s"}]}}"#;
/// assert_eq!(wait_hint_at(status, limited, &HeaderMap::new(), gemini, now), Some(Duration::from_secs(32)));
///
/// // Or only in words.
/// let words = br#"{"error":{"code":429,"message":"Please retry in 2.5s.","status":"RESOURCE_EXHAUSTED"}}"#;
/// assert_eq!(wait_hint_at(status, limited, &HeaderMap::new(), words, now), Some(Duration::from_millis(2500)));
///
/// // A 500's words may be the client's: not read.
/// let echo = b"Internal error processing 'retry in 600s'";
/// let (failed, down) = (StatusCode::INTERNAL_SERVER_ERROR, ErrorClass::Downtime);
/// assert_eq!(wait_hint_at(failed, down, &HeaderMap::new(), echo, now), None);
/// ```
pub fn wait_hint_at(
    status: StatusCode,
    class: ErrorClass,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Duration> {
    let limited = class == ErrorClass::RateLimited;
    retry_after_at(headers, now)
        .or_else(|| retry_info_delay(body))
        .or_else(|| limited.then(|| rate_limit_reset_at(headers, now)).flatten())
        .or_else(|| {
            let unavailable = || match status.is_success() {
                true => error_says_it_is_unavailable(body),
                false => says_it_is_unavailable(status),
            };
            (limited || unavailable())
                .then(|| stated_retry_delay(body))
                .flatten()
        })
}

/// Whether `status` says the upstream cannot take any request now, before reading it: 503
/// (Service Unavailable) or Anthropic's 529 (overloaded). The words of such an answer are the
/// upstream's own, and may say how long it lasts.
fn says_it_is_unavailable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 503 | 529)
}

/// For an error inside a 2xx answer (a stream's first event), the status it stands for: whether
/// its `error.code` (or its own top-level `code`) is 503 or 529, as OpenRouter passes a
/// provider's status on, or its `error.type` is Anthropic's `overloaded_error` (its 529).
/// Parsed only here, for a failure whose delay no header or `RetryInfo` gave.
fn error_says_it_is_unavailable(body: &[u8]) -> bool {
    let Some(value) = Json::parse(body) else {
        return false;
    };
    let error = value.get("error");
    let code = error
        .and_then(|e| e.get("code"))
        .or_else(|| value.get("code"));
    let unavailable_code = matches!(code, Some(Json::Number(Some(503 | 529))));
    let overloaded = error
        .and_then(|e| e.get("type"))
        .and_then(Json::as_str)
        .is_some_and(|kind| kind == "overloaded_error");
    unavailable_code || overloaded
}

/// The phrases after which an error message states how long to wait (ASCII case ignored):
/// Gemini's "Please retry in 31.44s.", Azure's "Please retry after 8 seconds.", OpenAI's and
/// Groq's "Please try again in 1m26.4s.".
const RETRY_PHRASES: [&str; 3] = ["retry in", "retry after", "try again in"];

/// How long an error message says to wait, in words: one of the [`RETRY_PHRASES`] as a word,
/// a space, then a delay of one or more terms ([`stated_delay`]: `31.44s`, `1m26.4s`,
/// `12 seconds`, `1m 30s`, `2 minutes and 5 seconds`). The first phrase so followed wins; any
/// other wording ("retry in a few seconds") is not read. Clamped to [`MAX_RETRY_AFTER`].
///
/// Read from the whole `body` (a message may sit in a list, in OpenRouter's `metadata.raw`, or
/// in a body that is not JSON), in one linear pass of an Aho-Corasick automaton built once.
fn stated_retry_delay(body: &[u8]) -> Option<Duration> {
    static PHRASES: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    let phrases = PHRASES
        .get_or_init(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(RETRY_PHRASES)
                .ok()
        })
        .as_ref()?;
    phrases.find_iter(body).find_map(|phrase| {
        let starts_a_word = body[..phrase.start()]
            .last()
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        starts_a_word
            .then(|| stated_delay(&body[phrase.end()..]))
            .flatten()
    })
}

/// The delay stated right after a retry phrase: spaces, then one or more terms (` 31.44s`,
/// ` 1m26.4s`, ` 12 seconds`, ` 1m 30s`, ` 2 minutes and 5 seconds`), added up (see
/// [`stated_retry_delay`]).
///
/// The terms are separated by spaces, a comma, or `and` (`1h, 2m and 3s`): "1m 30s" is 90 s,
/// not the 60 s of its first term. The delay ends before the first separator not followed by
/// a term; when a number follows it there ("retry in 1m 30", "retry in 1 of 3"), the text is
/// not read at all, as the number may belong to the delay.
fn stated_delay(text: &[u8]) -> Option<Duration> {
    let text = after_a_space(text)?;
    let (mut secs, mut rest) = delay_term(text)?;
    loop {
        let next = after_separator(rest);
        match delay_term(next) {
            // Non-negative terms: the sum is never NaN, and an overflow gives +inf, which clamps.
            Some((term, after)) => (secs, rest) = (secs + term, after),
            None if next.first().is_some_and(u8::is_ascii_digit) => return None,
            None => return Some(clamp_secs(secs)),
        }
    }
}

/// One term of a stated delay, in seconds, and the text after it: a number, spaces and a unit
/// word (`12 seconds`, `2 minutes`, `1 h`), or a Go duration (`31.44s`, `1m26.4s`: numbers
/// each followed by its unit, `h`, `m`, `s` or `ms`). Either is ended by anything but a
/// letter or a digit.
fn delay_term(text: &[u8]) -> Option<(f64, &[u8])> {
    let (mut number, mut rest) = leading_number(text)?;
    if let Some(unit) = after_a_space(rest) {
        let (word, tail) = unit.split_at(letters(unit));
        let secs = number * unit_word_secs(word)?;
        return ends_a_word(tail).then_some((secs, tail));
    }
    let mut secs = 0.0;
    loop {
        let (unit, tail) = rest.split_at(letters(rest));
        let scale = match unit {
            b"h" => 3600.0,
            b"m" => 60.0,
            b"s" => 1.0,
            b"ms" => 1e-3,
            _ => return None,
        };
        secs += number * scale;
        match leading_number(tail) {
            Some((next, after)) => (number, rest) = (next, after),
            None => return ends_a_word(tail).then_some((secs, tail)),
        }
    }
}

/// The seconds in one of a unit word written apart from its number (`2 minutes`, `500 ms`).
fn unit_word_secs(word: &[u8]) -> Option<f64> {
    Some(match word {
        b"hours" | b"hour" | b"hrs" | b"hr" | b"h" => 3600.0,
        b"minutes" | b"minute" | b"mins" | b"min" | b"m" => 60.0,
        b"seconds" | b"second" | b"secs" | b"sec" | b"s" => 1.0,
        b"milliseconds" | b"millisecond" | b"ms" => 1e-3,
        _ => return None,
    })
}

/// `text` past what may separate two terms of a delay: spaces, perhaps a comma and spaces,
/// perhaps `and` and spaces (`1m 30s`, `1h, 2m`, `2 minutes and 5 seconds`).
fn after_separator(text: &[u8]) -> &[u8] {
    let text = after_spaces(text);
    let text = text.strip_prefix(b",").map_or(text, after_spaces);
    match text.strip_prefix(b"and") {
        Some(rest) if rest.first() == Some(&b' ') => after_spaces(rest),
        _ => text,
    }
}

/// `text` past its leading spaces.
fn after_spaces(text: &[u8]) -> &[u8] {
    &text[text.iter().take_while(|&&b| b == b' ').count()..]
}

/// `text` past its leading spaces, if it starts with one.
fn after_a_space(text: &[u8]) -> Option<&[u8]> {
    text.starts_with(b" ").then(|| after_spaces(text))
}

/// How many ASCII letters `text` starts with.
fn letters(text: &[u8]) -> usize {
    text.iter().take_while(|b| b.is_ascii_alphabetic()).count()
}

/// Whether a word ends where `text` starts: at its end, or at a byte that is neither a letter
/// nor a digit (`.`, `,`, a space, a quote).
fn ends_a_word(text: &[u8]) -> bool {
    text.first().is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// The decimal number `text` starts with (digits, then perhaps `.` and digits), and the rest:
/// the `.` that ends a sentence (`31.44s.`) is not part of it.
fn leading_number(text: &[u8]) -> Option<(f64, &[u8])> {
    let digits = |from: usize| {
        text.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let whole = digits(0);
    if whole == 0 {
        return None;
    }
    let fraction = match text.get(whole) {
        Some(b'.') => digits(whole + 1),
        _ => 0,
    };
    let len = if fraction > 0 {
        whole + 1 + fraction
    } else {
        whole
    };
    let number = parse_number(std::str::from_utf8(&text[..len]).ok()?)?;
    Some((number, &text[len..]))
}

/// When the rate limit a 429 hit resets, from the upstream's rate-limit headers.
///
/// Same as [`rate_limit_reset_at`] with `now` = [`SystemTime::now`] for timestamps.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_llm_router::classify::rate_limit_reset;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "2m59.56s".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "1500".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "120ms".parse().unwrap());
/// // The limit that ran out resets in three minutes.
/// assert_eq!(rate_limit_reset(&headers), Some(Duration::from_millis(179_560)));
/// ```
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    rate_limit_reset_at(headers, SystemTime::now())
}

/// When the rate limit a 429 hit resets, reading timestamps relative to `now`.
///
/// Upstreams report each of their limits (requests, tokens, input or output tokens per
/// minute...) as a pair of headers, how much is left and when the window resets:
///
/// * `x-ratelimit-remaining-<limit>` and `x-ratelimit-reset-<limit>` (OpenAI, Azure, Groq,
///   Together, Fireworks, DeepSeek-style), the reset as a Go duration: `1s`, `6m0s`, `20ms`,
///   `2m59.56s`, `1h2m3s` (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; fractions accepted).
///   A bare number other than `0` is not read: it could be seconds as well as a Unix time.
/// * `anthropic-ratelimit-<limit>-remaining` and `anthropic-ratelimit-<limit>-reset`
///   (Anthropic), the reset as an RFC 3339 timestamp: `2024-05-01T12:00:30Z`, with or without
///   fractional seconds, `Z` or a `+hh:mm` / `-hh:mm` offset. A time in the past means "now".
///
/// The limits whose remaining is `0` ran out: the answer is the longest of their resets (each
/// must refill before a request passes). When none says `0`, the headers do not tell which
/// limit refused the request, and the answer is `None` (the caller's default applies): in
/// OpenAI's usual token 429, a request larger than the tokens left, the requests limit that
/// resets in milliseconds is not the one that blocked it, and cooling the model for those
/// milliseconds would send the next request into the same 429.
///
/// Resets that are garbage or negative are ignored; values over [`MAX_RETRY_AFTER`] are
/// clamped to it. `None` when no exhausted limit's reset can be read.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderMap;
/// use tower_llm_router::classify::rate_limit_reset_at;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800); // 2024-05-01T12:00:00Z
/// let mut headers = HeaderMap::new();
/// headers.insert("anthropic-ratelimit-requests-remaining", "0".parse().unwrap());
/// headers.insert("anthropic-ratelimit-requests-reset", "2024-05-01T14:00:01.5+02:00".parse().unwrap());
/// assert_eq!(rate_limit_reset_at(&headers, now), Some(Duration::from_millis(1500)));
///
/// headers.insert("anthropic-ratelimit-requests-reset", "tomorrow".parse().unwrap());
/// assert_eq!(rate_limit_reset_at(&headers, now), None);
/// ```
pub fn rate_limit_reset_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    // Read only for error answers, which carry a few dozen headers: plain vectors.
    let mut resets: Vec<(Limit<'_>, Duration)> = Vec::new();
    let mut exhausted: Vec<Limit<'_>> = Vec::new();
    for (name, value) in headers {
        let Some((limit, field)) = Limit::of(name.as_str()) else {
            continue;
        };
        let Ok(value) = value.to_str() else {
            continue;
        };
        match field {
            Field::Reset => {
                let reset = match limit.family {
                    Family::OpenAi => parse_go_duration(value),
                    Family::Anthropic => parse_rfc3339(value).map(|at| until(at, now)),
                };
                if let Some(reset) = reset {
                    resets.push((limit, reset));
                }
            }
            Field::Remaining if parse_number(value) == Some(0.0) => exhausted.push(limit),
            Field::Remaining => {}
        }
    }
    resets
        .iter()
        .filter(|(limit, _)| exhausted.contains(limit))
        .map(|(_, reset)| *reset)
        .max()
}

/// One of an upstream's rate limits, named by its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limit<'a> {
    family: Family,
    /// `requests`, `tokens`, `input-tokens`...
    name: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// `x-ratelimit-{remaining,reset}-<limit>`, resets as Go durations.
    OpenAi,
    /// `anthropic-ratelimit-<limit>-{remaining,reset}`, resets as RFC 3339 timestamps.
    Anthropic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Remaining,
    Reset,
}

impl<'a> Limit<'a> {
    /// The limit and field a (lowercase) header name reports, if it is a rate-limit header.
    fn of(header: &'a str) -> Option<(Self, Field)> {
        let (family, name, field) = if let Some(rest) = header.strip_prefix("x-ratelimit-") {
            if let Some(name) = rest.strip_prefix("reset-") {
                (Family::OpenAi, name, Field::Reset)
            } else {
                (
                    Family::OpenAi,
                    rest.strip_prefix("remaining-")?,
                    Field::Remaining,
                )
            }
        } else {
            let rest = header.strip_prefix("anthropic-ratelimit-")?;
            if let Some(name) = rest.strip_suffix("-reset") {
                (Family::Anthropic, name, Field::Reset)
            } else {
                (
                    Family::Anthropic,
                    rest.strip_suffix("-remaining")?,
                    Field::Remaining,
                )
            }
        };
        (!name.is_empty()).then_some((Self { family, name }, field))
    }
}

/// Google's `RetryInfo.retryDelay` in a JSON error body (Gemini, Vertex AI), if any.
///
/// The delay sits in `error.details[]`, in the detail whose `@type` is
/// `type.googleapis.com/google.rpc.RetryInfo`, as a protobuf JSON duration: `"32s"`, `"0.5s"`,
/// `"1.234567s"`. The body may also be a list of such errors (Gemini's streaming endpoint) or
/// OpenRouter's wrapper, which carries the provider's error in `error.metadata.raw`. `body`
/// may be a prefix: a body cut short, or not JSON, gives `None`, as do garbage and negative
/// delays; larger delays than [`MAX_RETRY_AFTER`] are clamped to it. Only a body that holds
/// the text `retryDelay` is parsed.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_llm_router::classify::retry_info_delay;
///
/// let body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
///     {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
///     {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
/// assert_eq!(retry_info_delay(body), Some(Duration::from_millis(1500)));
/// assert_eq!(retry_info_delay(br#"{"error":{"code":429}}"#), None);
/// ```
pub fn retry_info_delay(body: &[u8]) -> Option<Duration> {
    // Most error bodies are not Google's: they are not parsed again.
    memchr::memmem::find(body, b"retryDelay")?;
    retry_info_in(&Json::parse(body)?, 0)
}

/// How deep nested errors (lists, `error`, `details`, `metadata.raw`) are followed.
const MAX_DEPTH: u8 = 6;

fn retry_info_in(value: &Json<'_>, depth: u8) -> Option<Duration> {
    if depth > MAX_DEPTH {
        return None;
    }
    match value {
        Json::Array(items) => items.iter().find_map(|item| retry_info_in(item, depth + 1)),
        Json::Object(object) => {
            let retry_info = object
                .get("@type")
                .and_then(Json::as_str)
                .is_some_and(|kind| kind.ends_with("google.rpc.RetryInfo"));
            let delay = object
                .get("retryDelay")
                .and_then(Json::as_str)
                .filter(|_| retry_info)
                .and_then(|delay| parse_number(delay.trim().strip_suffix('s')?))
                .map(clamp_secs);
            delay
                .or_else(|| {
                    ["error", "details"]
                        .into_iter()
                        .filter_map(|key| object.get(key))
                        .find_map(|inner| retry_info_in(inner, depth + 1))
                })
                .or_else(|| match object.get("metadata")?.get("raw")? {
                    Json::String(raw) => retry_info_in(&Json::parse(raw.as_bytes())?, depth + 1),
                    raw => retry_info_in(raw, depth + 1),
                })
        }
        _ => None,
    }
}

/// A Go duration (`time.ParseDuration`): a sequence of non-negative decimal numbers, each with
/// a unit (`2m59.56s`), or `0`. Clamped to [`MAX_RETRY_AFTER`].
fn parse_go_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut secs = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let number = parse_number(&rest[..number_len])?;
        rest = &rest[number_len..];
        // Up to the next number: an ASCII byte, so a char boundary (`µ` is not ASCII).
        let unit_len = rest
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        // Non-negative terms: the sum is never NaN, and an overflow gives +inf, which clamps.
        secs += number * scale;
        rest = &rest[unit_len..];
    }
    Some(clamp_secs(secs))
}

/// An RFC 3339 date-time (`2024-05-01T12:00:30.25+02:00`) as seconds since the Unix epoch
/// (negative before it) and nanoseconds.
fn parse_rfc3339(value: &str) -> Option<(i64, u32)> {
    let text = value.trim().as_bytes();
    let (head, rest) = text.split_at_checked(19)?;
    let field = |at: usize, len: usize| -> Option<i64> {
        let digits = head.get(at..at + len)?;
        digits.iter().try_fold(0, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, sep)| head[at] != sep)
        || !matches!(head[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (`:60`) reads as the next second's start.
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (nanos, zone) = match rest.strip_prefix(b".") {
        Some(fraction) => {
            let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return None;
            }
            // Nanoseconds: the first nine digits, padded.
            let nanos = fraction[..len]
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(9)
                .fold(0, |n, &b| n * 10 + u32::from(b - b'0'));
            (nanos, &fraction[len..])
        }
        None => (0, rest),
    };
    let offset = match zone {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|b| i64::from(b - b'0'));
            let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((secs, nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// How long from `now` until a time given as seconds and nanoseconds since the Unix epoch:
/// zero when it is past, at most [`MAX_RETRY_AFTER`].
fn until((secs, nanos): (i64, u32), now: SystemTime) -> Duration {
    let Ok(secs) = u64::try_from(secs) else {
        return Duration::ZERO;
    };
    match UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) {
        Some(at) => at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
        None => MAX_RETRY_AFTER,
    }
}

/// A non-negative decimal number (digits with an optional fraction), or `None`.
fn parse_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let plain = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().any(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    // Digits only, so the result is never NaN; an overflow gives +inf, which clamps.
    value.parse::<f64>().ok()
}

fn clamp_secs(secs: f64) -> Duration {
    if secs >= MAX_RETRY_AFTER.as_secs_f64() {
        MAX_RETRY_AFTER
    } else {
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn at(pairs: &[(&'static str, &str)]) -> Option<Duration> {
        retry_after_at(
            &headers(pairs),
            UNIX_EPOCH + Duration::from_secs(784_111_717),
        )
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(at(&[("retry-after", "0")]), Some(Duration::ZERO));
        assert_eq!(at(&[("retry-after", " 7 ")]), Some(Duration::from_secs(7)));
        assert_eq!(
            at(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            minute
        );
        assert_eq!(
            at(&[("retry-after", "Sunday, 06-Nov-94 08:49:37 GMT")]),
            minute
        );
        assert_eq!(at(&[("retry-after", "Sun Nov  6 08:49:37 1994")]), minute);
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn millisecond_headers_win_and_smallest_is_used() {
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            at(&[("x-ms-retry-after-ms", "900"), ("retry-after-ms", "1200.0")]),
            Some(Duration::from_millis(900))
        );
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after-ms", "oops")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after", "4")]),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn garbage_and_negative_are_ignored() {
        for bad in [
            "",
            "soon",
            "-5",
            "1e3",
            "NaN",
            "inf",
            ".",
            "5 seconds",
            "0x10",
        ] {
            assert_eq!(at(&[("retry-after", bad)]), None, "{bad:?}");
            assert_eq!(at(&[("retry-after-ms", bad)]), None, "{bad:?}");
        }
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn absurd_values_are_clamped() {
        assert_eq!(
            at(&[("retry-after", "99999999999999999999")]),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            at(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            Some(MAX_RETRY_AFTER)
        );
        let huge = "9".repeat(400);
        assert_eq!(at(&[("retry-after-ms", &huge)]), Some(MAX_RETRY_AFTER));
    }

    /// 2024-05-01T12:00:00Z.
    const MAY_DAY: u64 = 1_714_564_800;

    fn reset(pairs: &[(&'static str, &str)]) -> Option<Duration> {
        rate_limit_reset_at(&headers(pairs), UNIX_EPOCH + Duration::from_secs(MAY_DAY))
    }

    fn go(value: &str) -> Option<Duration> {
        parse_go_duration(value)
    }

    #[test]
    fn go_durations_in_the_forms_providers_send() {
        let ms = Duration::from_millis;
        assert_eq!(go("1s"), Some(ms(1000)));
        assert_eq!(go("6m0s"), Some(ms(360_000)));
        assert_eq!(go("20ms"), Some(ms(20)));
        assert_eq!(go("2m59.56s"), Some(ms(179_560)));
        assert_eq!(go("1h2m3s"), Some(ms(3_723_000)));
        assert_eq!(go(" 7.66s "), Some(ms(7660)));
        assert_eq!(go("1.5h"), Some(ms(5_400_000)));
        assert_eq!(go("+3s"), Some(ms(3000)));
        assert_eq!(go("0"), Some(Duration::ZERO));
        assert_eq!(go("0s"), Some(Duration::ZERO));
        assert_eq!(go("250us"), Some(Duration::from_micros(250)));
        assert_eq!(go("250\u{b5}s"), Some(Duration::from_micros(250)));
        assert_eq!(go("250\u{3bc}s"), Some(Duration::from_micros(250)));
        assert_eq!(go("1500ns"), Some(Duration::from_nanos(1500)));
    }

    #[test]
    fn go_duration_garbage_and_negatives_are_ignored() {
        for bad in [
            "", "s", "20", "1.5", "-1s", "-0s", "1e3s", "1 s", "1m 2s", "1d", "1.2.3s", "NaN",
            "inf", "1sec", "m5", "5m-1s", "\u{b5}s", "1S",
        ] {
            assert_eq!(go(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_go_durations_are_clamped() {
        assert_eq!(go("25h"), Some(MAX_RETRY_AFTER));
        assert_eq!(go(&format!("{}h", "9".repeat(400))), Some(MAX_RETRY_AFTER));
        assert_eq!(
            go("23h59m59s"),
            Some(MAX_RETRY_AFTER - Duration::from_secs(1))
        );
    }

    #[test]
    fn rfc3339_timestamps() {
        let at = |text: &str| parse_rfc3339(text);
        let may_day = i64::try_from(MAY_DAY).unwrap();
        assert_eq!(at("2024-05-01T12:00:00Z"), Some((may_day, 0)));
        assert_eq!(at("2024-05-01t12:00:30z"), Some((may_day + 30, 0)));
        assert_eq!(at("2024-05-01 12:00:30Z"), Some((may_day + 30, 0)));
        assert_eq!(
            at("2024-05-01T12:00:30.5Z"),
            Some((may_day + 30, 500_000_000))
        );
        assert_eq!(
            at("2024-05-01T12:00:30.1234567891Z"),
            Some((may_day + 30, 123_456_789))
        );
        assert_eq!(at("2024-05-01T14:00:30+02:00"), Some((may_day + 30, 0)));
        assert_eq!(at("2024-05-01T07:30:30-04:30"), Some((may_day + 30, 0)));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(at("1969-12-31T23:59:59Z"), Some((-1, 0)));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some((951_782_400, 0)));
        assert_eq!(at("2016-12-31T23:59:60Z"), Some((1_483_228_800, 0)));
    }

    #[test]
    fn rfc3339_garbage_is_refused() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:30",
            "2024-05-01T12:00:30+0200",
            "2024-05-01T12:00:30.Z",
            "2024-05-01T12:00:30ZZ",
            "2024-05-01X12:00:30Z",
            "2024/05/01T12:00:30Z",
            "2024-13-01T12:00:30Z",
            "2024-00-01T12:00:30Z",
            "2023-02-29T12:00:30Z",
            "1900-02-29T12:00:30Z",
            "2024-04-31T12:00:30Z",
            "2024-05-00T12:00:30Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01T12:00:30+24:00",
            "2024-05-01T12:00:30+02:60",
            "2024-05-01T12:00:30+0a:00",
            "+024-05-01T12:00:30Z",
            "2024-05-01T12:00:3\u{e9}Z",
            "Wed, 01 May 2024 12:00:30 GMT",
            "1714564830",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_style_reset_of_the_exhausted_limit() {
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "20s"),
                ("x-ratelimit-remaining-tokens", "9000"),
                ("x-ratelimit-reset-tokens", "6ms"),
            ]),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "12"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            Some(Duration::from_secs(360))
        );
    }

    #[test]
    fn of_two_exhausted_limits_the_longer_reset_wins() {
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "2s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "1m"),
            ]),
            Some(Duration::from_secs(60))
        );
    }

    /// Without an exhausted limit the headers do not say which limit refused the request:
    /// OpenAI's token 429 (a request larger than the tokens left) comes with a requests reset
    /// of a few milliseconds that would end the cooldown before the next request.
    #[test]
    fn without_an_exhausted_limit_no_reset_is_the_answer() {
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "499"),
                ("x-ratelimit-reset-requests", "6ms"),
                ("x-ratelimit-remaining-tokens", "1500"),
                ("x-ratelimit-reset-tokens", "1m"),
            ]),
            None
        );
        // No remaining headers at all.
        assert_eq!(
            reset(&[
                ("x-ratelimit-reset-tokens", "1m"),
                ("x-ratelimit-reset-requests", "45s")
            ]),
            None
        );
        // The exhausted limit's reset is garbage: the others did not refuse the request.
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "soon"),
                ("x-ratelimit-reset-tokens", "9s"),
            ]),
            None
        );
    }

    #[test]
    fn a_remaining_count_pairs_only_with_its_own_limit() {
        // `requests` ran out but sends no reset; `input-tokens` ran out and does.
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-tokens", "30s"),
                ("x-ratelimit-remaining-tokens", "5"),
                ("x-ratelimit-reset-input-tokens", "3s"),
                ("x-ratelimit-remaining-input-tokens", "0"),
            ]),
            Some(Duration::from_secs(3))
        );
        // A remaining count of the other family does not pair either.
        assert_eq!(
            reset(&[
                ("anthropic-ratelimit-tokens-remaining", "0"),
                ("x-ratelimit-reset-tokens", "30s"),
                ("x-ratelimit-reset-requests", "3s"),
            ]),
            None
        );
    }

    #[test]
    fn anthropic_reset_timestamps() {
        assert_eq!(
            reset(&[
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:02Z"),
                ("anthropic-ratelimit-input-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-input-tokens-reset",
                    "2024-05-01T12:00:30Z"
                ),
                ("anthropic-ratelimit-output-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-output-tokens-reset",
                    "2024-05-01T12:00:12.25Z"
                ),
                ("anthropic-ratelimit-tokens-remaining", "0"),
                ("anthropic-ratelimit-tokens-reset", "not a date"),
            ]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            reset(&[
                ("anthropic-ratelimit-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-tokens-reset",
                    "2024-05-01T12:00:00.75Z"
                ),
            ]),
            Some(Duration::from_millis(750))
        );
    }

    #[test]
    fn past_and_far_reset_timestamps() {
        for past in [
            "2024-05-01T11:59:59Z",
            "1969-07-20T20:17:40Z",
            "0000-01-01T00:00:00Z",
        ] {
            assert_eq!(
                reset(&[
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", past),
                ]),
                Some(Duration::ZERO),
                "{past}"
            );
        }
        assert_eq!(
            reset(&[
                ("anthropic-ratelimit-tokens-remaining", "0"),
                (
                    "anthropic-ratelimit-tokens-reset",
                    "9999-12-31T23:59:59.999999999Z"
                ),
            ]),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn reset_headers_in_the_wrong_format_are_ignored() {
        // Each beside its limit's remaining count at 0: the format alone makes it unread.
        for (remaining, name, value) in [
            // A bare number may be seconds or a Unix time: not read.
            (
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "20",
            ),
            (
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "2024-05-01T12:00:30Z",
            ),
            (
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "-5s",
            ),
            (
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
                "20s",
            ),
            (
                "anthropic-ratelimit-unified-remaining",
                "anthropic-ratelimit-unified-reset",
                "1714564830",
            ),
            // Neither a family's name nor a limit.
            ("x-ratelimit-remaining", "x-ratelimit-reset", "20s"),
            ("x-ratelimit-remaining-", "x-ratelimit-reset-", "20s"),
            (
                "anthropic-ratelimit--remaining",
                "anthropic-ratelimit--reset",
                "2024-05-01T12:00:30Z",
            ),
            ("ratelimit-remaining", "ratelimit-reset", "20"),
        ] {
            let pairs = [(remaining, "0"), (name, value)];
            assert_eq!(reset(&pairs), None, "{name}: {value}");
        }
        assert_eq!(reset(&[]), None);
        let mut opaque = HeaderMap::new();
        opaque.insert(
            "x-ratelimit-reset-requests",
            http::HeaderValue::from_bytes(b"2\xffs").unwrap(),
        );
        assert_eq!(rate_limit_reset_at(&opaque, UNIX_EPOCH), None);
    }

    fn gemini(delay: &str) -> String {
        format!(
            r#"{{"error":{{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]}},{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
        )
    }

    #[test]
    fn gemini_retry_info_delays() {
        let delay = |d: &str| retry_info_delay(gemini(d).as_bytes());
        assert_eq!(delay("32s"), Some(Duration::from_secs(32)));
        assert_eq!(delay("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(delay("1.234567s"), Some(Duration::from_micros(1_234_567)));
        assert_eq!(delay("0s"), Some(Duration::ZERO));
        assert_eq!(delay("86401s"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            delay(&format!("{}s", "9".repeat(400))),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["-1s", "32", "soon", "", "s", "1e3s", "32ms", "1m"] {
            assert_eq!(delay(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gemini_retry_info_in_its_other_shapes() {
        let one = Some(Duration::from_secs(7));
        // Gemini's streaming endpoint: a list of errors.
        let listed = format!("[{}]", gemini("7s"));
        assert_eq!(retry_info_delay(listed.as_bytes()), one);
        // OpenRouter's wrapper: the provider's error as a JSON string, or an object.
        let raw = serde_json::json!({"error": {"code": 429, "metadata": {"raw": gemini("7s")}}});
        assert_eq!(retry_info_delay(raw.to_string().as_bytes()), one);
        let nested: serde_json::Value = serde_json::from_str(&gemini("7s")).unwrap();
        let raw = serde_json::json!({"error": {"code": 429, "metadata": {"raw": nested}}});
        assert_eq!(retry_info_delay(raw.to_string().as_bytes()), one);
    }

    #[test]
    fn a_retry_delay_outside_retry_info_or_whole_json_is_not_read() {
        for body in [
            // Not a `RetryInfo` detail.
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.Help","retryDelay":"7s"}]}}"#,
            r#"{"error":{"details":[{"retryDelay":"7s"}]}}"#,
            // Only in a message.
            r#"{"error":{"message":"retryDelay: 7s"}}"#,
            // A prefix cut short, or not JSON.
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}"#,
            "retryDelay 7s",
            "",
        ] {
            assert_eq!(retry_info_delay(body.as_bytes()), None, "{body}");
        }
        let deep = format!("{}{}{}", "[".repeat(8), gemini("7s"), "]".repeat(8));
        assert_eq!(
            retry_info_delay(deep.as_bytes()),
            None,
            "past the depth limit"
        );
    }

    #[test]
    fn an_explicit_retry_after_wins_over_body_and_resets() {
        let now = UNIX_EPOCH + Duration::from_secs(MAY_DAY);
        let limited = ErrorClass::RateLimited;
        let resets = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2024-05-01T12:01:00Z"),
        ];
        let body = gemini("32s");
        let hint = |pairs: &[(&'static str, &str)], body: &str| {
            let status = StatusCode::TOO_MANY_REQUESTS;
            wait_hint_at(status, limited, &headers(pairs), body.as_bytes(), now)
        };
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = resets.to_vec();
            pairs.push(extra);
            pairs
        };
        assert_eq!(
            hint(&with(("retry-after", "3")), &body),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            hint(&with(("retry-after-ms", "1500")), &body),
            Some(Duration::from_millis(1500))
        );
        // Anthropic's `retry-after` of 0 is an answer too.
        assert_eq!(
            hint(&with(("retry-after", "0")), &body),
            Some(Duration::ZERO)
        );
        // Then the body's `RetryInfo`, then the resets (the longer exhausted one).
        assert_eq!(hint(&resets, &body), Some(Duration::from_secs(32)));
        assert_eq!(hint(&resets, "{}"), Some(Duration::from_secs(60)));
        // A garbage `Retry-After` does not hide the rest.
        assert_eq!(
            hint(&with(("retry-after", "soon")), "{}"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(hint(&[], "{}"), None);
    }

    #[test]
    fn resets_count_for_rate_limits_only() {
        let now = UNIX_EPOCH + Duration::from_secs(MAY_DAY);
        let pairs = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
        ]);
        let body = gemini("4s");
        // Not even for a 503, whose words are read.
        let status = StatusCode::SERVICE_UNAVAILABLE;
        for class in [
            ErrorClass::Downtime,
            ErrorClass::Other,
            ErrorClass::ContextLength,
            ErrorClass::Moderation,
        ] {
            assert_eq!(
                wait_hint_at(status, class, &pairs, b"", now),
                None,
                "{class:?}"
            );
            // An explicit delay counts for any failure, as `Retry-After` does.
            assert_eq!(
                wait_hint_at(status, class, &pairs, body.as_bytes(), now),
                Some(Duration::from_secs(4)),
                "{class:?}"
            );
        }
        assert_eq!(
            wait_hint_at(status, ErrorClass::RateLimited, &pairs, b"", now),
            Some(Duration::from_secs(20))
        );
    }

    /// What `read` gives for each body of the providers' error corpus, when it gives a value.
    fn corpus_delays(read: fn(&[u8]) -> Option<Duration>) -> Vec<Duration> {
        let corpus = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/provider-errors.jsonl"
        ))
        .unwrap();
        corpus
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|case| read(case["body"].as_str()?.as_bytes()))
            .collect()
    }

    #[test]
    fn the_gemini_corpus_answer_gives_its_delay() {
        let delays = corpus_delays(retry_info_delay);
        assert!(delays.contains(&Duration::from_secs(21)), "{delays:?}");
    }

    fn stated(message: &str) -> Option<Duration> {
        stated_retry_delay(message.as_bytes())
    }

    #[test]
    fn delays_stated_in_messages() {
        for (message, delay) in [
            // Gemini (and its OpenAI-compatible endpoint), in its JSON body.
            (
                r#"[{"error":{"code":429,"message":"Quota exceeded for metric: x, limit: 10\nPlease retry in 31.44s.","status":"RESOURCE_EXHAUSTED"}}]"#,
                Duration::from_millis(31_440),
            ),
            (
                "Please retry in 855.407178ms.",
                Duration::from_nanos(855_407_178),
            ),
            (
                "Please retry in 59.88589906s.",
                Duration::from_nanos(59_885_899_060),
            ),
            // Azure OpenAI.
            ("Please retry after 8 seconds.", Duration::from_secs(8)),
            (
                "Rate limit is exceeded. Try again in 60 seconds.",
                Duration::from_secs(60),
            ),
            ("RETRY AFTER 1 second", Duration::from_secs(1)),
            // OpenAI, Groq: Go durations.
            ("Please try again in 120ms.", Duration::from_millis(120)),
            (
                "Please try again in 1m26.4s.",
                Duration::from_millis(86_400),
            ),
            ("Please try again in 2h0m0s", Duration::from_secs(7200)),
            ("retry in  500 ms, or later", Duration::from_millis(500)),
            ("retry in 0s", Duration::ZERO),
            // The first that reads wins.
            (
                "retry in a moment; retry in 3s; retry in 9s",
                Duration::from_secs(3),
            ),
            // Clamped.
            ("retry in 100000000s", MAX_RETRY_AFTER),
        ] {
            assert_eq!(stated(message), Some(delay), "{message}");
        }
        assert_eq!(
            stated(&format!("retry in {}s", "9".repeat(400))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn only_a_clear_statement_of_a_delay_is_read() {
        for message in [
            "Please retry in a few seconds.",
            "Please try again later.",
            "retry in 5minutes",
            "retry in 5",
            "retry in 5.",
            "retry in 5.s",
            "retry in 5s3",
            "retry in 5sx",
            "retry in 1m5",
            "retry in -5s",
            "retry in +5s",
            "retry in 1e3s",
            "retry in\n5s",
            "retry in5s",
            "retry after Wed, 01 May 2024 12:00:30 GMT",
            "retryin 5s",
            "Retry-After: 5",
            // Not the phrase as a word.
            "autoretry in 5s",
            "",
        ] {
            assert_eq!(stated(message), None, "{message}");
        }
    }

    #[test]
    fn an_error_in_a_2xx_answer_is_read_as_the_status_it_names() {
        let (ok, down) = (StatusCode::OK, ErrorClass::Downtime);
        let hint =
            |body: &str| wait_hint_at(ok, down, &HeaderMap::new(), body.as_bytes(), UNIX_EPOCH);
        let in_90s = Some(Duration::from_secs(90));
        assert_eq!(
            hint(r#"{"error":{"code":529,"message":"retry in 1m 30s"}}"#),
            in_90s
        );
        assert_eq!(
            hint(r#"{"error":{"code":503,"message":"retry in 90s"}}"#),
            in_90s
        );
        assert_eq!(
            hint(r#"{"code":503,"message":"retry in 90 seconds"}"#),
            in_90s
        );
        let anthropic = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded, retry in 90s"}}"#;
        assert_eq!(hint(anthropic), in_90s);
        // A 500 or a 502 in an event may quote the client, as their statuses may.
        assert_eq!(
            hint(r#"{"error":{"code":500,"message":"retry in 90s"}}"#),
            None
        );
        assert_eq!(
            hint(r#"{"error":{"code":502,"message":"retry in 90s"}}"#),
            None
        );
        assert_eq!(hint(r#"{"error":{"message":"retry in 90s"}}"#), None);
        assert_eq!(hint("retry in 90s"), None);
    }

    #[test]
    fn a_compound_delay_reads_as_its_whole() {
        let secs = Duration::from_secs;
        for (message, delay) in [
            ("Please retry in 1m 30s.", secs(90)),
            ("retry in 1 minute 30 seconds", secs(90)),
            ("Please try again in 2 minutes and 5 seconds.", secs(125)),
            ("retry after 1h 2m", secs(3720)),
            ("retry after 1 hour, 2 minutes and 3 seconds", secs(3723)),
            ("retry in 5 minutes", secs(300)),
            ("retry in 2 hrs", secs(7200)),
            ("retry in 1.5 min", secs(90)),
            ("retry in 1m26s 500ms", Duration::from_millis(86_500)),
            ("retry in 1 m  30 s", secs(90)),
            // The delay ends where no further term follows.
            ("retry in 1m 30s. 3 requests left", secs(90)),
            ("retry in 2 minutes and try again", secs(120)),
            ("retry in 30 seconds, or contact support", secs(30)),
            ("retry in 1m (a minute)", secs(60)),
            ("retry in 1m and", secs(60)),
            // Every term counts toward the clamp.
            ("retry in 20 hours 20 hours", MAX_RETRY_AFTER),
        ] {
            assert_eq!(stated(message), Some(delay), "{message}");
        }
    }

    #[test]
    fn a_number_after_a_delay_that_is_no_term_makes_it_unread() {
        // "1m 30" may mean 90 s as well as 60: neither is read.
        for message in [
            "retry in 1 of 3",
            "retry in 1m 30",
            "retry in 1 minute 30",
            "retry in 2 minutes and 5",
            "retry in 1m, 30",
            "retry in 1m 30x",
            "retry in 1m 30sx",
            "retry in 1m 30 parsecs",
            "retry in 1 minute30 seconds",
            "retry in 1 minutes5s",
        ] {
            assert_eq!(stated(message), None, "{message}");
        }
    }

    #[test]
    fn a_stated_delay_counts_for_rate_limits_after_every_other_source() {
        let now = UNIX_EPOCH + Duration::from_secs(MAY_DAY);
        let limited = ErrorClass::RateLimited;
        let message = r#"{"error":{"code":429,"message":"Please retry in 7s."}}"#;
        let hint_of = |status: u16, class, pairs: &[(&'static str, &str)], body: &str| {
            let status = StatusCode::from_u16(status).unwrap();
            wait_hint_at(status, class, &headers(pairs), body.as_bytes(), now)
        };
        let hint =
            |class, pairs: &[(&'static str, &str)], body: &str| hint_of(429, class, pairs, body);
        assert_eq!(hint(limited, &[], message), Some(Duration::from_secs(7)));
        // A rate limit's words are read whatever its status (a 400 or a 200 stream's event).
        for status in [200, 400, 403, 503] {
            assert_eq!(
                hint_of(status, limited, &[], message),
                Some(Duration::from_secs(7))
            );
        }
        // Any header or structured hint wins over words.
        assert_eq!(
            hint(limited, &[("retry-after", "2")], message),
            Some(Duration::from_secs(2))
        );
        let resets = [
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20s"),
        ];
        assert_eq!(
            hint(limited, &resets, message),
            Some(Duration::from_secs(20))
        );
        let both = r#"{"error":{"code":429,"message":"Please retry in 7s.","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"6s"}]}}"#;
        assert_eq!(hint(limited, &[], both), Some(Duration::from_secs(6)));
        // Other failures may echo what the client sent: their words are not read, but for
        // a 503's or a 529's, which the upstream sends before reading the request.
        for class in [
            ErrorClass::Downtime,
            ErrorClass::Other,
            ErrorClass::ContextLength,
            ErrorClass::Moderation,
        ] {
            for status in [200, 400, 408, 429, 500, 502, 504, 520] {
                assert_eq!(
                    hint_of(status, class, &[], message),
                    None,
                    "{status} {class:?}"
                );
            }
            for status in [503, 529] {
                let seven = Some(Duration::from_secs(7));
                assert_eq!(
                    hint_of(status, class, &[], message),
                    seven,
                    "{status} {class:?}"
                );
                // After the structured hints, as for a rate limit.
                assert_eq!(
                    hint_of(status, class, &[("retry-after", "2")], message),
                    Some(Duration::from_secs(2))
                );
                assert_eq!(
                    hint_of(status, class, &[], both),
                    Some(Duration::from_secs(6))
                );
                // A reset is not one: a 5xx's says when a quota refills.
                assert_eq!(hint_of(status, class, &resets, message), seven);
            }
        }
    }

    #[test]
    fn the_corpus_rate_limits_state_their_delays() {
        let stated = corpus_delays(stated_retry_delay);
        // OpenAI's "try again in 120ms", Azure's "retry after 8 seconds", Groq's "10s".
        assert_eq!(
            stated,
            [
                Duration::from_millis(120),
                Duration::from_secs(8),
                Duration::from_secs(10)
            ]
        );
    }

    proptest::proptest! {
        /// Whatever follows a retry phrase: no panic, within the cap.
        #[test]
        fn any_stated_delay_reads_within_the_cap(text in "(retry in|Try again in|x) [0-9.hmsecond ]{0,24}[.,x]?") {
            if let Some(delay) = stated_retry_delay(text.as_bytes()) {
                proptest::prop_assert!(delay <= MAX_RETRY_AFTER);
            }
        }
    }

    proptest::proptest! {
        /// Whatever a reset holds, reading it never panics and stays within the cap.
        #[test]
        fn any_reset_text_reads_within_the_cap(
            go in "[0-9.hmsun\u{b5}+ -]{0,16}",
            date in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2}|.{0,3})",
            now in 0u64..=(400 * 366 * 86_400),
        ) {
            if let Some(reset) = parse_go_duration(&go) {
                proptest::prop_assert!(reset <= MAX_RETRY_AFTER);
            }
            if let Some(at) = parse_rfc3339(&date) {
                let reset = until(at, UNIX_EPOCH + Duration::from_secs(now));
                proptest::prop_assert!(reset <= MAX_RETRY_AFTER);
            }
        }

        /// Any body, Google's shape or not, whole or cut short: no panic, within the cap.
        #[test]
        fn any_retry_info_body_reads_within_the_cap(delay in "\\PC{0,12}", cut in 0usize..400) {
            let body = gemini(&delay.replace(['"', '\\'], ""));
            let body = &body.as_bytes()[..cut.min(body.len())];
            if let Some(delay) = retry_info_delay(body) {
                proptest::prop_assert!(delay <= MAX_RETRY_AFTER);
            }
        }
    }
}
