//! Classifying an upstream response from its status, headers and (a prefix of) its body.

use std::borrow::Cow;
use std::sync::OnceLock;

use aho_corasick::packed::{Config, MatchKind, Searcher};
use aho_corasick::Span;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::json::{Json, Object};
use super::rules;
use super::sse::{self, SseEvent};
use super::ErrorClass;

/// How much of each message (and of a non-JSON body) the message rules read, in chars.
const MESSAGE_CHARS: usize = 4096;
/// How deep nested error objects (`metadata.raw`, `error.error`, arrays) are followed.
const MAX_DEPTH: u8 = 6;

/// Classifies an upstream HTTP response: `None` for a success, `Some(class)` for a failure.
///
/// `body` may be a prefix of the real body: invalid or truncated JSON never makes this fail.
///
/// * A non-2xx status is always a failure (at least [`Other`](ErrorClass::Other)).
/// * A 2xx SSE stream done (`[DONE]`, Anthropic's `message_stop`) before any content or
///   finish past its preamble is [`Downtime`](ErrorClass::Downtime): no answer at all.
/// * A 2xx is a failure when its JSON carries an error (`{"error":{…}}`, `{"errors":[…]}`,
///   `{"type":"error"}`, `{"object":"error"}`, the Responses API's
///   `{"type":"response.failed"}`), when it is an SSE stream whose first data event
///   past the content-less preamble (see the [module docs](super)) does, or when its output
///   was blocked: Gemini candidates all finished with `SAFETY`, `PROHIBITED_CONTENT`,
///   `BLOCKLIST`, `SPII`, `RECITATION` or `IMAGE_SAFETY`, or no candidate and a
///   `promptFeedback.blockReason`; OpenAI choices all `content_filter` with no content;
///   Anthropic `stop_reason: "refusal"` (in a stream, on the `message_delta` event); Bedrock
///   `guardrail_intervened`; a Responses API answer (or a stream's `response.incomplete`)
///   with `incomplete_details.reason: "content_filter"` and no output. These are
///   [`Moderation`](ErrorClass::Moderation); every choice finishing with `"error"`
///   (OpenRouter) or `"insufficient_system_resource"` (DeepSeek) is
///   [`Downtime`](ErrorClass::Downtime). A 2xx body that is not valid JSON is a success.
///
/// See the [module docs](super) for the order of the rules.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_router::classify::{classify_response, ErrorClass};
///
/// let headers = HeaderMap::new();
/// let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
/// assert_eq!(classify_response(StatusCode::BAD_REQUEST, &headers, body), Some(ErrorClass::ContextLength));
///
/// // OpenRouter reports an upstream failure inside a 200.
/// let body = br#"{"error":{"code":502,"message":"Provider returned error"}}"#;
/// assert_eq!(classify_response(StatusCode::OK, &headers, body), Some(ErrorClass::Downtime));
///
/// // An SSE stream whose first event is Anthropic's overload error.
/// let body = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
/// assert_eq!(classify_response(StatusCode::OK, &headers, body), Some(ErrorClass::Downtime));
///
/// // The same error after Anthropic's content-less `message_start` and `ping`.
/// let preamble = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n";
/// let stream = [&preamble[..], body].concat();
/// assert_eq!(classify_response(StatusCode::OK, &headers, &stream), Some(ErrorClass::Downtime));
///
/// assert_eq!(classify_response(StatusCode::OK, &headers, br#"{"choices":[{"message":{"content":"hi"}"#), None);
/// assert_eq!(classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, b"slow down"), Some(ErrorClass::RateLimited));
/// ```
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<ErrorClass> {
    // Not followed, a redirect fails the attempt whatever its body says: the upstream is not
    // where the model's URL points, for every request until someone fixes it.
    if is_redirect(status) {
        return Some(ErrorClass::Downtime);
    }
    let success = status.is_success();
    let (payload, error_event) = match payload(headers, body) {
        Some(found) => found,
        // A stream done (`[DONE]`, `message_stop`) before any content or finish: an empty
        // answer, broken as one that ends after its preamble is.
        None if success && is_sse(headers, body) && sse::scan(body).event == SseEvent::End => {
            return Some(ErrorClass::Downtime)
        }
        // An SSE stream without a usable first event: the status decides.
        None => return class_for_status(status),
    };
    if success {
        if !error_event && !has_marker(&payload) {
            return None;
        }
        let value = Json::parse(&payload);
        if error_event {
            return Some(failure_class(None, headers, value.as_ref(), &payload));
        }
        return failure_in_success(&value?, headers);
    }
    let value = Json::parse(&payload);
    Some(failure_class(
        Some(status),
        headers,
        value.as_ref(),
        &payload,
    ))
}

/// The class a status alone gives: `None` for 2xx.
pub(crate) fn class_for_status(status: StatusCode) -> Option<ErrorClass> {
    if status.is_success() {
        None
    } else {
        Some(strong_status_class(status).unwrap_or(ErrorClass::Other))
    }
}

/// Statuses that name a class by themselves.
fn strong_status_class(status: StatusCode) -> Option<ErrorClass> {
    match status.as_u16() {
        429 => Some(ErrorClass::RateLimited),
        413 => Some(ErrorClass::ContextLength),
        408 | 500..=599 => Some(ErrorClass::Downtime),
        _ if is_redirect(status) => Some(ErrorClass::Downtime),
        _ => None,
    }
}

/// The redirects a client follows (301, 302, 303, 307, 308), here not followed. Not 304 (the
/// answer to a conditional request, which the client sent), nor 300, 305 or 306 (unused).
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Statuses whose messages must not be read as rate limits or downtime (auth, billing, not
/// found, method).
fn is_client_refusal(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401..=405)
}

/// Quoted JSON strings (keys or values) without which a 2xx body cannot be a failure: the
/// check skips parsing big successes. Each is looked for right after a `"`.
const MARKERS: &[&[u8]] = &[
    b"error\"",
    b"errors\"",
    b"content_filter",
    b"blockReason\"",
    b"finishReason\"",
    b"refusal\"",
    b"guardrail",
    b"INTERVENED\"",
    b"insufficient_system_resource\"",
];

/// Where in each of the [`MARKERS`] the four bytes the searcher looks for start: bytes rare in
/// a successful answer (`t_fi` of `content_filter`, not `cont`), so that its usual keys
/// (`"content"`, `"finish_reason"`, `"refusal":null`...) are not candidates to check one by one.
const GRAM_AT: [usize; 9] = [2, 2, 6, 4, 5, 3, 4, 4, 12];
/// The length of what the searcher looks for in each marker.
const GRAM_LEN: usize = 4;

/// Finds the [`MARKERS`] by four bytes of each ([`GRAM_AT`]), with a packed SIMD searcher
/// (Teddy): a typical answer's JSON has a quote every few bytes, and checking each quote cost
/// about eight instructions per byte of a 200 answer, most of the cost of classifying it.
/// Searched for with the quote before them, the markers' first bytes (`"con`, `"fin`) matched
/// common keys, each a candidate to verify: 0.7k instructions for a 300-byte answer, against
/// 0.45k now. `None` where the CPU has no SIMD the searcher can use. Each match comes with
/// where its marker would start.
fn marker_searcher() -> Option<&'static (Searcher, Vec<usize>)> {
    static SEARCHER: OnceLock<Option<(Searcher, Vec<usize>)>> = OnceLock::new();
    SEARCHER
        .get_or_init(|| {
            let mut builder = Config::new().match_kind(MatchKind::LeftmostFirst).builder();
            let mut offsets = Vec::with_capacity(MARKERS.len());
            for (marker, at) in MARKERS.iter().zip(GRAM_AT) {
                // The whole marker when the table is off (a unit test says it is not).
                let (gram, at) = match marker.get(at..at + GRAM_LEN) {
                    Some(gram) => (gram, at),
                    None => (*marker, 0),
                };
                builder.add(gram);
                offsets.push(at);
            }
            Some((builder.build()?, offsets))
        })
        .as_ref()
}

/// Whether a quote in `body` opens one of the [`MARKERS`] (a `refusal` key does not count).
fn has_marker(body: &[u8]) -> bool {
    let Some((searcher, offsets)) = marker_searcher() else {
        return has_marker_after_any_quote(body);
    };
    // Every position where some marker's four bytes start is visited, in order: the four
    // bytes differ between markers, so one position holds at most one marker's, and a marker
    // after a quote always has its four bytes where it says.
    let mut from = 0;
    while let Some(found) = searcher.find_in(body, Span::from(from..body.len())) {
        let at = offsets
            .get(found.pattern().as_usize())
            .copied()
            .unwrap_or(0);
        if let Some(start) = found.start().checked_sub(at).filter(|&start| start > 0) {
            if body[start - 1] == b'"' && marker_at(&body[start..]) {
                return true;
            }
        }
        from = found.start() + 1;
    }
    false
}

/// [`has_marker`] by its definition, quote by quote: the path without SIMD.
fn has_marker_after_any_quote(body: &[u8]) -> bool {
    memchr::memchr_iter(b'"', body).any(|quote| marker_at(&body[quote + 1..]))
}

#[inline(never)]
fn marker_at(rest: &[u8]) -> bool {
    MARKERS
        .iter()
        .find(|marker| rest.starts_with(marker))
        .is_some_and(|marker| {
            // OpenAI messages carry a `"refusal": null` key: only the value counts.
            let is_key = rest[marker.len()..].trim_ascii_start().starts_with(b":");
            !(*marker == b"refusal\"" && is_key)
        })
}

/// The bytes to classify: the body, or the first SSE data event of a stream past its
/// preamble (with whether its `event:` was `error`). `None` for a stream without a usable
/// first data event.
fn payload<'a>(headers: &HeaderMap, body: &'a [u8]) -> Option<(Cow<'a, [u8]>, bool)> {
    payload_from(headers, body, 0)
}

/// [`payload`], a stream scanned from `start`: `0`, or where the fallback layer's scan of the
/// stream's start left the preamble ([`FirstEvent::event_start`](sse::FirstEvent::event_start)),
/// which is not read again. Borrowed unless the first event has several `data:` lines or its
/// blank line is missing.
pub(crate) fn payload_from<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    start: usize,
) -> Option<(Cow<'a, [u8]>, bool)> {
    if !is_sse(headers, body) {
        return Some((Cow::Borrowed(body), false));
    }
    let (scan, resume) = sse::scan_resumable(body, start);
    match scan.event {
        SseEvent::Event { data, .. } => Some((data, scan.is_error_event)),
        // Nothing after the last preamble or blank line: nothing to close.
        SseEvent::NeedMore if resume == body.len() => None,
        SseEvent::NeedMore => {
            // The prefix may stop right before the blank line that ends the first event. What
            // comes before `resume` is decided: its preambles are not read again.
            let mut closed = Vec::with_capacity(body.len() + 2);
            closed.extend_from_slice(body);
            closed.extend_from_slice(b"\n\n");
            let scan = sse::scan_at(&closed, resume);
            match scan.event {
                SseEvent::Event { data, .. } => {
                    Some((Cow::Owned(data.into_owned()), scan.is_error_event))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `Content-Type` says `text/event-stream` (media types are case-insensitive:
/// `Text/Event-Stream` is one too).
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(is_event_stream_type)
}

/// Whether a `Content-Type` value says `text/event-stream`: its text, past leading whitespace,
/// starts with it in any case. The prefix is compared first and the whole value checked to be
/// text (visible ASCII or tabs, whose only whitespace is spaces and tabs) only when it
/// matches: a JSON answer's type is not read through to the end (about 200 instructions per
/// answer).
pub(crate) fn is_event_stream_type(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .trim_ascii_start()
        .get(..17)
        .is_some_and(|ct| ct.eq_ignore_ascii_case(b"text/event-stream"))
        && value.to_str().is_ok()
}

fn is_sse(headers: &HeaderMap, body: &[u8]) -> bool {
    let start = body.trim_ascii_start();
    let start = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
    if start.starts_with(b"{") || start.starts_with(b"[") {
        return false;
    }
    is_event_stream(headers)
        || [&b"data:"[..], b"event:", b":", b"id:", b"retry:"]
            .iter()
            .any(|prefix| start.starts_with(prefix))
}

/// A 2xx JSON body: an embedded error, or blocked output.
fn failure_in_success(value: &Json<'_>, headers: &HeaderMap) -> Option<ErrorClass> {
    if carries_error(value) {
        return Some(failure_class(None, headers, Some(value), b""));
    }
    // The Responses API's failed generation: its error sits in the response object.
    if value.get("type").and_then(Json::as_str) == Some("response.failed") {
        let response = value.get("response").unwrap_or(value);
        return Some(failure_class(None, headers, Some(response), b""));
    }
    let object = match value {
        Json::Array(items) => items.first()?.as_object()?,
        Json::Object(object) => object,
        _ => return None,
    };
    if filtered_response(object) {
        return Some(ErrorClass::Moderation);
    }
    blocked_output(object)
}

/// The Responses API's answer cut by its content filter before any output: a stream's
/// `response.incomplete` event, or the response object itself, whose `incomplete_details.reason`
/// is `content_filter` and whose `output` is empty (or absent). Another reason
/// (`max_output_tokens`) is an ordinary end.
fn filtered_response(object: &Object<'_>) -> bool {
    let response = match str_field(object, "type") {
        Some("response.incomplete") => object.get("response").and_then(Json::as_object),
        _ => Some(object),
    };
    response.is_some_and(|response| {
        response
            .get("incomplete_details")
            .and_then(|details| details.get("reason"))
            .and_then(Json::as_str)
            == Some("content_filter")
            && response
                .get("output")
                .filter(|output| **output != Json::Null)
                .is_none_or(|output| output.as_array().is_some_and(<[Json<'_>]>::is_empty))
    })
}

fn carries_error(value: &Json<'_>) -> bool {
    match value {
        Json::Array(items) => items.first().is_some_and(carries_error),
        Json::Object(object) => {
            let error = object.get("error").is_some_and(|error| match error {
                Json::Null | Json::Bool(false) => false,
                Json::String(s) => !s.trim().is_empty(),
                Json::Object(map) => !map.is_empty(),
                Json::Array(items) => !items.is_empty(),
                _ => true,
            });
            let errors = object
                .get("errors")
                .and_then(Json::as_array)
                .is_some_and(|errors| !errors.is_empty());
            error
                || errors
                || str_field(object, "type") == Some("error")
                || str_field(object, "object") == Some("error")
        }
        _ => false,
    }
}

fn str_field<'a>(object: &'a Object<'_>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Json::as_str)
}

const GEMINI_BLOCKED: &[&str] = &[
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_SAFETY",
];

/// Output withheld for safety in a 2xx body (Gemini, OpenAI/Azure, Anthropic, Bedrock).
fn blocked_output(object: &Object<'_>) -> Option<ErrorClass> {
    let moderation = Some(ErrorClass::Moderation);
    // Gemini / Vertex.
    let candidates = object.get("candidates").and_then(Json::as_array);
    match candidates {
        Some(candidates) if !candidates.is_empty() => {
            let all_blocked = candidates.iter().all(|candidate| {
                candidate
                    .get("finishReason")
                    .and_then(Json::as_str)
                    .is_some_and(|reason| GEMINI_BLOCKED.contains(&reason))
            });
            if all_blocked {
                return moderation;
            }
        }
        _ => {
            let blocked = object
                .get("promptFeedback")
                .and_then(|feedback| feedback.get("blockReason"))
                .and_then(Json::as_str)
                .is_some_and(|reason| !reason.is_empty());
            if blocked {
                return moderation;
            }
        }
    }
    // OpenAI / Azure OpenAI (completions and chunks).
    if let Some(choices) = object.get("choices").and_then(Json::as_array) {
        let finish = |reason: &str| {
            !choices.is_empty()
                && choices.iter().all(|choice| {
                    choice.get("finish_reason").and_then(Json::as_str) == Some(reason)
                })
        };
        if finish("content_filter") && choices.iter().all(choice_is_empty) {
            return moderation;
        }
        // OpenRouter's `error`; DeepSeek's inference system out of capacity.
        if finish("error") || finish("insufficient_system_resource") {
            return Some(ErrorClass::Downtime);
        }
    }
    // Anthropic refusals (a stream's on its `message_delta` event), Bedrock Converse and
    // InvokeModel guardrails.
    let delta = object
        .get("delta")
        .and_then(Json::as_object)
        .filter(|_| str_field(object, "type") == Some("message_delta"));
    let stop = str_field(object, "stop_reason")
        .or_else(|| str_field(object, "stopReason"))
        .or_else(|| delta.and_then(|delta| str_field(delta, "stop_reason")));
    if matches!(
        stop,
        Some("refusal" | "guardrail_intervened" | "content_filtered")
    ) || str_field(object, "amazon-bedrock-guardrailAction") == Some("INTERVENED")
    {
        return moderation;
    }
    None
}

fn choice_is_empty(choice: &Json<'_>) -> bool {
    let empty = |value: Option<&Json<'_>>| match value {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.is_empty(),
        Some(Json::Array(items)) => items.is_empty(),
        Some(_) => false,
    };
    let message = choice.get("message").or_else(|| choice.get("delta"));
    let message_empty = message.is_none_or(|m| {
        empty(m.get("content"))
            && empty(m.get("tool_calls"))
            && empty(m.get("function_call"))
            && empty(m.get("refusal"))
    });
    message_empty && empty(choice.get("text"))
}

/// What an error body says, gathered in priority order.
#[derive(Default)]
struct Signals {
    /// Machine tokens, outermost first; nested provider errors (`metadata.raw`) come after.
    tokens: Vec<String>,
    /// Lowercased messages, newline separated.
    text: String,
    /// An HTTP-like status carried in the body (`error.code: 429`, Azure `"code": "429"`).
    code: Option<StatusCode>,
    /// OpenRouter moderation metadata or Azure content filter results were present.
    moderation: bool,
}

impl Signals {
    fn message(&mut self, message: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        // At most MESSAGE_CHARS chars; a message that short in bytes is whole without counting.
        // Messages are ASCII nearly always: copied and lowercased in place, a byte at a time,
        // instead of char by char through Unicode's lowercase mapping (a third of classifying
        // an error answer). The same text either way.
        let end = if message.len() <= MESSAGE_CHARS {
            None
        } else {
            message
                .char_indices()
                .nth(MESSAGE_CHARS)
                .map(|(end, _)| end)
        };
        let head = end.map_or(message, |end| &message[..end]);
        if head.is_ascii() {
            let start = self.text.len();
            self.text.push_str(head);
            self.text[start..].make_ascii_lowercase();
        } else {
            self.text.extend(head.chars().flat_map(char::to_lowercase));
        }
    }

    fn status_code(&mut self, code: Option<u64>) {
        let code = code
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| (100..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code).ok());
        if self.code.is_none() {
            self.code = code;
        }
    }

    fn gather(&mut self, value: &Json<'_>, depth: u8) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Json::Array(items) => {
                if let Some(first) = items.first() {
                    self.gather(first, depth + 1);
                }
            }
            Json::Object(object) => {
                match object.get("error") {
                    Some(error @ (Json::Object(_) | Json::Array(_))) => {
                        self.gather(error, depth + 1)
                    }
                    Some(Json::String(message)) => self.message(message),
                    _ => {}
                }
                // Cloudflare Workers AI and others: `{"errors":[{"message","code"}]}`.
                if let Some(errors @ Json::Array(_)) = object.get("errors") {
                    self.gather(errors, depth + 1);
                }
                self.fields(object, depth);
            }
            Json::String(message) => self.message(message),
            _ => {}
        }
    }

    fn fields(&mut self, object: &Object<'_>, depth: u8) {
        for key in ["code", "status"] {
            match object.get(key) {
                Some(Json::Number(n)) => self.status_code(*n),
                Some(Json::String(s)) => match s.trim().parse::<u64>() {
                    Ok(n) => self.status_code(Some(n)),
                    Err(_) => self.tokens.push(s.to_string()),
                },
                _ => {}
            }
        }
        for key in [
            "type",
            "error_type",
            "errorType",
            "__type",
            "reason",
            "error_code",
        ] {
            if let Some(token) = str_field(object, key) {
                self.tokens.push(token.to_owned());
            }
        }
        for key in [
            "message",
            "Message",
            "msg",
            "detail",
            "title",
            "error_message",
            "errorMessage",
            "error_description",
        ] {
            if let Some(message) = str_field(object, key) {
                self.message(message);
            }
        }
        if let Some(inner) = object.get("innererror").and_then(Json::as_object) {
            if let Some(code) = str_field(inner, "code") {
                self.tokens.push(code.to_owned());
            }
            self.moderation |= inner.contains_key("content_filter_result")
                || inner.contains_key("content_filter_results");
        }
        if let Some(details) = object.get("details").and_then(Json::as_array) {
            for detail in details.iter().filter_map(Json::as_object) {
                if let Some(reason) = str_field(detail, "reason") {
                    self.tokens.push(reason.to_owned());
                }
            }
        }
        let metadata = object.get("metadata").and_then(Json::as_object);
        for holder in [Some(object), metadata].into_iter().flatten() {
            if let Some(code) = holder
                .get("availability")
                .and_then(|availability| availability.get("code"))
                .and_then(Json::as_str)
            {
                self.tokens.push(code.to_owned());
            }
        }
        let Some(metadata) = metadata else { return };
        self.moderation |=
            metadata.contains_key("reasons") || metadata.contains_key("flagged_input");
        if let Some(token) = str_field(metadata, "error_type") {
            self.tokens.push(token.to_owned());
        }
        // The provider's own error, often as a JSON string: read after OpenRouter's fields.
        match metadata.get("raw") {
            Some(Json::String(raw)) => match Json::parse(raw.as_bytes()) {
                Some(value) => self.gather(&value, depth + 1),
                None => self.message(raw),
            },
            Some(raw @ Json::Object(_)) => self.gather(raw, depth + 1),
            _ => {}
        }
    }
}

/// Classifies a failure. `status` is `None` for an error carried by a 2xx.
fn failure_class(
    status: Option<StatusCode>,
    headers: &HeaderMap,
    value: Option<&Json<'_>>,
    raw: &[u8],
) -> ErrorClass {
    let mut signals = Signals::default();
    if let Some(kind) = headers
        .get("x-amzn-errortype")
        .and_then(|value| value.to_str().ok())
    {
        signals.tokens.push(kind.to_owned());
    }
    match value {
        Some(value) => signals.gather(value, 0),
        None => signals.message(&String::from_utf8_lossy(
            &raw[..raw.len().min(4 * MESSAGE_CHARS)],
        )),
    }
    // 1. Explicit markers and machine fields.
    if signals.moderation {
        return ErrorClass::Moderation;
    }
    if let Some(class) = signals
        .tokens
        .iter()
        .find_map(|token| rules::token_class(token))
    {
        return class;
    }
    let text = signals.text.as_str();
    if value.is_none() {
        if let Some(class) = rules::quoted_token_class(text) {
            return class;
        }
    }
    let phrases = rules::Phrases::of(text);
    // 2. Message families that name a cause (on 5xx only the unambiguous ones, and only when
    //    the message does not also say the upstream is down).
    let status = status
        .or(signals.code)
        .filter(|status| !status.is_success());
    let server_error = status.is_some_and(|status| status.is_server_error());
    // A 429 is a limit on the account, whatever its message says of tokens (Bedrock's "Too
    // many tokens, please wait before trying again.").
    let too_many = status == Some(StatusCode::TOO_MANY_REQUESTS);
    // A 5xx that says it is down is down, whatever else its message mentions.
    if !(server_error && rules::is_downtime_message(phrases)) {
        if rules::is_moderation_message(phrases, server_error) {
            return ErrorClass::Moderation;
        }
        if !too_many && rules::is_context_message(phrases, server_error) {
            return ErrorClass::ContextLength;
        }
    }
    // 3. The status, then the looser message families, then `Other`.
    if let Some(class) = status.and_then(strong_status_class) {
        return class;
    }
    if !status.is_some_and(is_client_refusal) {
        if rules::is_rate_message(phrases) {
            return ErrorClass::RateLimited;
        }
        if rules::is_downtime_message(phrases) {
            return ErrorClass::Downtime;
        }
    }
    ErrorClass::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_searched_bytes_are_distinct_and_inside_their_markers() {
        let grams: Vec<&[u8]> = MARKERS
            .iter()
            .zip(GRAM_AT)
            .map(|(marker, at)| &marker[at..at + GRAM_LEN])
            .collect();
        assert_eq!(grams.len(), MARKERS.len());
        for (i, gram) in grams.iter().enumerate() {
            assert!(
                !grams[..i].contains(gram),
                "{}",
                String::from_utf8_lossy(gram)
            );
        }
    }

    #[test]
    fn a_marker_is_found_after_a_quote_only() {
        for marker in MARKERS {
            let marker = String::from_utf8_lossy(marker);
            for (body, found) in [
                (format!("\"{marker}"), true),
                (format!("{{\"a\":\"x\",\"{marker}:1}}"), true),
                (format!("\"\"{marker}\"x"), true),
                (format!("x{marker}"), false),
                (format!("\" {marker}"), false),
                (marker.to_string(), false),
            ] {
                let expected = found && !(marker == "refusal\"" && body.contains("refusal\":"));
                assert_eq!(has_marker(body.as_bytes()), expected, "{body}");
                assert_eq!(
                    has_marker_after_any_quote(body.as_bytes()),
                    expected,
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn the_simd_marker_search_is_available_here() {
        // Otherwise the proptest below would compare the fallback with itself.
        assert!(marker_searcher().is_some() || !cfg!(target_arch = "x86_64"));
    }

    /// [`payload`] of a stream as it was: a prefix cut within its first event is closed and
    /// scanned again from the start, preambles and all.
    fn payload_scanned_again(body: &[u8]) -> Option<(Vec<u8>, bool)> {
        let found = |scan: sse::Scan<'_>| match scan.event {
            SseEvent::Event { data, .. } => Some((data.into_owned(), scan.is_error_event)),
            _ => None,
        };
        match sse::scan(body).event {
            SseEvent::NeedMore => found(sse::scan(&[body, b"\n\n"].concat())),
            _ => found(sse::scan(body)),
        }
    }

    proptest! {
        /// Closing a cut stream and scanning it again from where the first scan could resume
        /// finds what a scan from the start finds, whatever the line ends and the cut.
        #[test]
        fn a_cut_stream_is_closed_without_reading_its_preambles_again(
            lines in prop::collection::vec((
                prop::sample::select(vec![
                    "", "", "data: x", "data: {\"a\":1}", "data: [DONE]", ": keep-alive",
                    "event: error", "data", "data: {\"type\":\"ping\"}", "data: {\"choices\":[]}",
                    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
                    "data: {\"type\":", "data: \"ping\"}", "\u{feff}data: y",
                ]),
                prop::sample::select(vec!["\n", "\r\n", "\r"]),
            ), 0..12),
            bom: bool,
            cut: prop::sample::Index,
        ) {
            let mut body = if bom { "\u{feff}".to_owned() } else { String::new() };
            for (line, end) in lines {
                body.push_str(line);
                body.push_str(end);
            }
            let body = &body.as_bytes()[..cut.index(body.len() + 1)];
            let headers = HeaderMap::from_iter([(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            )]);
            let found = payload(&headers, body).map(|(data, error)| (data.into_owned(), error));
            prop_assert_eq!(found, payload_scanned_again(body));
        }

        /// The type read by its bytes is read as its text was.
        #[test]
        fn an_event_stream_type_is_told_as_by_its_text(
            value in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..24),
                (
                    prop::sample::select(vec!["", " ", "\t", " \t ", "\x0b", "\u{a0}"]),
                    prop::sample::select(vec![
                        "text/event-stream", "Text/Event-Stream", "text/event-strea",
                        "application/json", "text/event-streams",
                    ]),
                    prop::collection::vec(any::<u8>(), 0..6),
                )
                    .prop_map(|(space, ct, tail)| [space.as_bytes(), ct.as_bytes(), &tail].concat()),
            ],
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let by_text = value.to_str().ok().is_some_and(|ct| {
                    ct.trim_start()
                        .get(..17)
                        .is_some_and(|ct| ct.eq_ignore_ascii_case("text/event-stream"))
                });
                prop_assert_eq!(is_event_stream_type(&value), by_text, "{:?}", value);
            }
        }

        #[test]
        fn has_marker_finds_exactly_the_markers_after_quotes(
            parts in prop::collection::vec(
                prop_oneof![
                    Just("\"".to_owned()),
                    Just(":".to_owned()),
                    Just(" ".to_owned()),
                    prop::sample::select(MARKERS).prop_map(|m| String::from_utf8_lossy(m).into_owned()),
                    // Cut markers: their searched bytes without the rest, or the rest alone.
                    (prop::sample::select(MARKERS), 1usize..16, any::<bool>()).prop_map(|(m, cut, head)| {
                        let cut = cut.min(m.len());
                        let part = if head { &m[..cut] } else { &m[cut..] };
                        String::from_utf8_lossy(part).into_owned()
                    }),
                    "[a-zA-Z_\"]{0,12}",
                ],
                0..150,
            ),
        ) {
            let body = parts.concat();
            prop_assert_eq!(has_marker(body.as_bytes()), has_marker_after_any_quote(body.as_bytes()), "{}", body);
        }
    }
}
