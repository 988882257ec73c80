//! A scanner for the first data event of a server-sent events stream, and the preamble events
//! the fallback layer looks past.

use std::borrow::Cow;
use std::sync::OnceLock;

use aho_corasick::packed::{Config, MatchKind, Searcher};
use aho_corasick::Span;

use super::json::{Json, Object};
use super::quick;

/// What [`first_sse_event`] found at the start of a buffer.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseEvent<'a> {
    /// The buffer does not hold a complete data event yet: read more bytes and scan again.
    NeedMore,
    /// The first event that carries data.
    Event {
        /// The event's data: its `data:` lines joined with `\n` (borrowed when there is one).
        data: Cow<'a, [u8]>,
        /// The byte offset just after the blank line that ends the event.
        end: usize,
    },
    /// The first data event is the `[DONE]` sentinel: the stream ended without any data.
    End,
}

/// Finds the first event that has data at the start of an SSE byte stream.
///
/// The scan follows the WHATWG event-stream rules: lines end in `\n`, `\r\n` or `\r`; a
/// leading byte order mark is skipped; comment lines (starting with `:`, such as OpenRouter's
/// `: OPENROUTER PROCESSING` keep-alives) and events without any `data:` field (blank keep-alive
/// events, `event: ping` alone) are skipped; several `data:` lines join with `\n`; one space
/// after the colon is dropped; a line without a colon is a field with an empty value. An event
/// counts only once the blank line that ends it has been seen, so a buffer cut in the middle of
/// the first data event gives [`SseEvent::NeedMore`]. A first data event of `[DONE]` gives
/// [`SseEvent::End`].
///
/// This is the first data event whatever it holds. The fallback layer and
/// [`classify_response`](crate::classify::classify_response) decide on the first one that is
/// not a content-less preamble (Anthropic's `message_start`, `ping`, empty
/// `content_block_start` and empty text delta, the Responses API's `response.created` and
/// empty text delta, OpenAI's first chunk that holds only the role): see the
/// [`classify`](crate::classify) module docs.
///
/// A `\r` at the very end of `buf` is taken as a line end; if the next read starts with the
/// `\n` of that `\r\n`, rescanning from `end` sees one extra blank line, which is harmless.
///
/// The scan is one pass over `buf` (O(n)) and never panics, whatever the bytes.
///
/// # Example
///
/// ```
/// use tower_llm_router::classify::{first_sse_event, SseEvent};
///
/// let stream = b": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\r\ndata: {\"b\":2}\r\n\r\ndata: next";
/// match first_sse_event(stream) {
///     SseEvent::Event { data, end } => {
///         assert_eq!(&data[..], b"{\"a\":1}\n{\"b\":2}");
///         assert_eq!(&stream[end..], b"data: next");
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// assert_eq!(first_sse_event(b"data: {\"a\":"), SseEvent::NeedMore);
/// assert_eq!(first_sse_event(b"data: [DONE]\n\n"), SseEvent::End);
/// ```
pub fn first_sse_event(buf: &[u8]) -> SseEvent<'_> {
    scan_from(buf, 0, false).0.event
}

/// The first data event (past the preambles, for [`scan`]) and whether its `event:` field was
/// `error`.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    pub(crate) event: SseEvent<'a>,
    pub(crate) is_error_event: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the layer decides on: [`first_sse_event`], past the data events that are preambles
/// ([`is_preamble`]) and not `event: error`. A stream of preambles alone reads as one without
/// data events: [`SseEvent::NeedMore`], or [`SseEvent::End`] at `[DONE]` or Anthropic's
/// `message_stop` ([`is_message_stop`]).
pub(crate) fn scan(buf: &[u8]) -> Scan<'_> {
    scan_from(buf, 0, true).0
}

/// [`scan`] from `start` (`0`, or a position [`FirstEvent::event_start`] gave for a prefix of
/// `buf`), and with [`SseEvent::NeedMore`] the position to scan again from ([`scan_at`]) once
/// more bytes follow: past the blank lines and preambles already decided.
pub(crate) fn scan_resumable(buf: &[u8], start: usize) -> (Scan<'_>, usize) {
    scan_from(buf, start, true)
}

/// [`scan`] from `start`, a position [`scan_resumable`] gave for a prefix of `buf`.
pub(crate) fn scan_at(buf: &[u8], start: usize) -> Scan<'_> {
    scan_from(buf, start, true).0
}

/// [`first_sse_event`] (or [`scan`] with `skip_preambles`) from `start`, a position where the
/// scanner's state is its initial one (the start, or just after a blank line that ended no data
/// event or a skipped preamble). With [`SseEvent::NeedMore`], also the last such position seen:
/// where to start again once more bytes have arrived.
fn scan_from(buf: &[u8], start: usize, skip_preambles: bool) -> (Scan<'_>, usize) {
    let mut pos = if start == 0 && buf.starts_with(BOM) {
        BOM.len()
    } else {
        start
    };
    let mut resume = start;
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut is_error_event = false;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        // A data line is most of an event (a whole JSON chunk): find its end with memchr.
        let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
            let scan = Scan {
                event: SseEvent::NeedMore,
                is_error_event,
            };
            return (scan, resume);
        };
        let line = &rest[..i];
        let mut next = pos + i + 1;
        if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            next += 1;
        }
        pos = next;
        if line.is_empty() {
            match data.take() {
                Some(data) if !(skip_preambles && !is_error_event && is_preamble(&data)) => {
                    let event = if data.trim_ascii() == b"[DONE]"
                        || skip_preambles && !is_error_event && is_message_stop(&data)
                    {
                        SseEvent::End
                    } else {
                        SseEvent::Event { data, end: next }
                    };
                    let scan = Scan {
                        event,
                        is_error_event,
                    };
                    return (scan, resume);
                }
                _ => {}
            }
            is_error_event = false;
            resume = next;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match name {
            b"data" => {
                data = Some(match data {
                    None => Cow::Borrowed(value),
                    Some(previous) => {
                        let mut joined = previous.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                });
            }
            b"event" => is_error_event = value == b"error",
            _ => {}
        }
    }
}

/// Whether an event's data is Anthropic's `message_stop` (`{"type":"message_stop"}`): the
/// end of its stream. First past the preamble, it ends a stream with no content and no
/// `message_delta` (no `stop_reason`): as empty as one that ends at `[DONE]`. Read from the
/// `type` the data opens with, as Anthropic writes it: nothing parsed.
fn is_message_stop(data: &[u8]) -> bool {
    leading_type(data) == Some(b"message_stop")
}

/// The value of the `type` member a JSON object opens with (`{"type":"message_start",...`),
/// without escapes; `None` when it opens with another member.
pub(crate) fn leading_type(json: &[u8]) -> Option<&[u8]> {
    fn after<'a>(bytes: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
        bytes.trim_ascii_start().strip_prefix(token)
    }
    let value = after(json, b"{")
        .and_then(|rest| after(rest, b"\"type\""))
        .and_then(|rest| after(rest, b":"))
        .and_then(|rest| after(rest, b"\""))?;
    let end = memchr::memchr2(b'"', b'\\', value)?;
    (value[end] == b'"').then(|| &value[..end])
}

/// Bytes one of which a preamble holds as upstreams write it (data without any is content): a
/// look before any JSON parsing, so that a usual first content event
/// (`{"choices":[{"delta":{"content":"Hi"},...}]}`) is not parsed.
const PREAMBLE_HINTS: &[&[u8]] = &[
    b"\"role\"",
    b"\"\"",
    // A first delta of `null`s without a role (`"delta":{"content":null}`), and one whose last
    // member is `null` (`"delta":{"tool_calls":null}`): the delta closes right after it, and
    // the choice goes on (`,`) or closes (`}`). A content chunk ends in `"finish_reason":null}]`.
    b"\"content\":null",
    b"\"content\": null",
    b"null},",
    b"null}}",
    b"null }",
    b"[]",
    b"{}",
    b"\"message_start\"",
    b"\"ping\"",
    b"\"response.",
];

/// Whether an event's data is a preamble: sent before any content, carrying none, and no error
/// (the rule is in the [`classify`](super) module docs). In doubt, content: a preamble taken for
/// content only passes the stream on early, as before; content taken for a preamble would be
/// held, and an error taken for one passed on.
///
/// OpenAI-style chunks are read from the bytes ([`quick::chunk_preamble`]); the rest, and what
/// that reader gives up on, through a JSON tree.
pub(crate) fn is_preamble(data: &[u8]) -> bool {
    let start = data.trim_ascii_start();
    // `data:` alone (or blank data) carries nothing of an answer, nor an error: a client
    // parses nothing from it.
    start.is_empty()
        || start.starts_with(b"{")
            && has_preamble_hint(data)
            && quick::chunk_preamble(data)
                .unwrap_or_else(|| Json::parse(data).is_some_and(|json| is_preamble_json(&json)))
}

/// The [`PREAMBLE_HINTS`] in one packed SIMD searcher (Teddy), built once; `None` without SIMD
/// it can use.
static PREAMBLE_SEARCHER: OnceLock<Option<Searcher>> = OnceLock::new();

/// Whether `data` holds one of the [`PREAMBLE_HINTS`]: in one pass of a packed SIMD searcher
/// (Teddy), built once. A `memmem` search per hint built a searcher for each: about 1,000
/// instructions for a first content chunk, most of the cost of classifying it.
fn has_preamble_hint(data: &[u8]) -> bool {
    match PREAMBLE_SEARCHER.get_or_init(|| packed_searcher(PREAMBLE_HINTS)) {
        Some(searcher) => searcher.find(data).is_some(),
        // No SIMD the searcher can use.
        None => has_preamble_hint_by_memmem(data),
    }
}

/// [`has_preamble_hint`] a hint at a time.
fn has_preamble_hint_by_memmem(data: &[u8]) -> bool {
    PREAMBLE_HINTS
        .iter()
        .any(|hint| memchr::memmem::find(data, hint).is_some())
}

pub(super) fn is_preamble_json(json: &Json<'_>) -> bool {
    let Some(chunk) = json.as_object() else {
        return false;
    };
    if present(chunk.get("error")).is_some() {
        return false;
    }
    match present(chunk.get("type")) {
        Some(kind) => match kind.as_str() {
            Some("message_start" | "ping") => true,
            Some("content_block_start") => present(chunk.get("content_block"))
                .and_then(Json::as_object)
                .is_some_and(is_empty_block),
            Some("response.created" | "response.in_progress" | "response.queued") => {
                present(chunk.get("response"))
                    .and_then(Json::as_object)
                    .is_some_and(has_no_output)
            }
            Some("response.output_item.added") => present(chunk.get("item"))
                .and_then(Json::as_object)
                .is_some_and(is_empty_item),
            Some("response.content_part.added" | "response.reasoning_summary_part.added") => {
                present(chunk.get("part"))
                    .and_then(Json::as_object)
                    .is_some_and(is_empty_part)
            }
            Some("content_block_delta") => present(chunk.get("delta"))
                .and_then(Json::as_object)
                .is_some_and(is_empty_block_delta),
            Some(
                "response.output_text.delta"
                | "response.refusal.delta"
                | "response.reasoning_text.delta"
                | "response.reasoning_summary_text.delta",
            ) => is_empty_text_delta_event(chunk),
            _ => false,
        },
        None => present(chunk.get("choices"))
            .and_then(Json::as_array)
            .is_some_and(|choices| choices.iter().all(is_contentless_choice)),
    }
}

/// Anthropic's opening of a text or thinking block that holds nothing yet:
/// `{"type":"text","text":""}`, `{"type":"thinking","thinking":"","signature":""}`. A tool call
/// names its tool (content); other members make it content too.
fn is_empty_block(block: &Object<'_>) -> bool {
    present(block.get("type"))
        .is_some_and(|kind| matches!(kind.as_str(), Some("text" | "thinking")))
        && block.members().all(|member| match member {
            (_, Json::Null) | ("type", Json::String(_)) => true,
            ("text" | "thinking" | "signature", Json::String(text)) => text.is_empty(),
            ("citations", Json::Array(items)) => items.is_empty(),
            _ => false,
        })
}

/// Anthropic's delta of a text or thinking block that adds nothing:
/// `{"type":"text_delta","text":""}`, `{"type":"thinking_delta","thinking":""}`. Any other
/// delta (a tool call's `input_json_delta`, a `signature_delta`, a citation) is content.
fn is_empty_block_delta(delta: &Object<'_>) -> bool {
    present(delta.get("type"))
        .is_some_and(|kind| matches!(kind.as_str(), Some("text_delta" | "thinking_delta")))
        && delta.members().all(|member| match member {
            (_, Json::Null) | ("type", Json::String(_)) => true,
            ("text" | "thinking", Json::String(text)) => text.is_empty(),
            _ => false,
        })
}

/// A Responses API text delta event (`response.output_text.delta` and its refusal and
/// reasoning kin) whose `delta` is empty, beside its ids, indices, an empty `logprobs` list
/// and OpenAI's `obfuscation` padding. Any other member is content.
fn is_empty_text_delta_event(event: &Object<'_>) -> bool {
    present(event.get("delta")).is_some_and(|delta| delta.as_str() == Some(""))
        && event.members().all(|member| match member {
            (_, Json::Null)
            | ("type" | "item_id" | "obfuscation", Json::String(_))
            | (
                "sequence_number" | "output_index" | "content_index" | "summary_index",
                Json::Number(_),
            ) => true,
            ("delta", Json::String(text)) => text.is_empty(),
            ("logprobs", Json::Array(items)) => items.is_empty(),
            _ => false,
        })
}

/// A Responses API `response` of `response.created` / `response.in_progress` /
/// `response.queued`: no output yet (`output` empty or absent) and no error.
fn has_no_output(response: &Object<'_>) -> bool {
    present(response.get("error")).is_none()
        && present(response.get("output"))
            .is_none_or(|output| output.as_array().is_some_and(<[Json<'_>]>::is_empty))
}

/// A Responses API output item opened before any of its output: a `message` whose `content`
/// is empty, a `reasoning` item whose `summary` (and `content`, `encrypted_content`) is empty.
/// A call names its function (content), as any other item or member does.
fn is_empty_item(item: &Object<'_>) -> bool {
    present(item.get("type"))
        .is_some_and(|kind| matches!(kind.as_str(), Some("message" | "reasoning")))
        && item.members().all(|member| match member {
            (_, Json::Null) | ("type" | "id" | "status" | "role", Json::String(_)) => true,
            ("content" | "summary", Json::Array(items)) => items.is_empty(),
            ("encrypted_content", Json::String(text)) => text.is_empty(),
            _ => false,
        })
}

/// A Responses API content part (or reasoning summary part) opened before any of its text:
/// `{"type":"output_text","text":"","annotations":[]}`, `{"type":"summary_text","text":""}`.
fn is_empty_part(part: &Object<'_>) -> bool {
    present(part.get("type")).is_some_and(|kind| {
        matches!(
            kind.as_str(),
            Some("output_text" | "summary_text" | "reasoning_text" | "refusal")
        )
    }) && part.members().all(|member| match member {
        (_, Json::Null) | ("type", Json::String(_)) => true,
        ("text" | "refusal", Json::String(text)) => text.is_empty(),
        ("annotations" | "logprobs", Json::Array(items)) => items.is_empty(),
        _ => false,
    })
}

/// A choice with no finish reason whose delta holds at most the role, `null`s (`"tool_calls":null`,
/// `"function_call":null`...), empty strings (`content`, `refusal`, `reasoning`,
/// `reasoning_content`...) and empty lists (`tool_calls`, OpenRouter's `reasoning_details`),
/// whatever their names. Text a client shows, a refusal's or a reasoning's too, and a tool
/// call are content.
fn is_contentless_choice(choice: &Json<'_>) -> bool {
    let Some(choice) = choice.as_object() else {
        return false;
    };
    if present(choice.get("finish_reason")).is_some() {
        return false;
    }
    present(choice.get("delta"))
        .and_then(Json::as_object)
        .is_some_and(|delta| {
            delta.members().all(|member| match member {
                (_, Json::Null) | ("role", Json::String(_)) => true,
                (_, Json::String(text)) => text.is_empty(),
                (_, Json::Array(items)) => items.is_empty(),
                _ => false,
            })
        })
}

/// Strings one of which the last data line of a stream that ended as its API ends it holds
/// (when it is not the chat sentinel `[DONE]`): a finish (`finish_reason`, Gemini's `finishReason`, Anthropic's
/// `stop_reason`, a `usage` sent with or after it), an error, Anthropic's `message_stop`, the
/// Responses API's last events. The keys count only with a value other than `null` (OpenAI
/// sends `"finish_reason":null` in every chunk but the last), and a `usage` only in a chunk
/// that delivers no content ([`last_event_end`]).
const END_HINTS: &[&[u8]] = &[
    b"\"finish_reason\"",
    b"\"finishReason\"",
    b"\"stop_reason\"",
    b"\"usage\"",
    b"\"error\"",
    b"\"message_stop\"",
    b"\"response.completed\"",
    b"\"response.incomplete\"",
    b"\"response.failed\"",
];

/// Which of the [`END_HINTS`] are keys whose `null` does not count.
const END_KEYS: std::ops::Range<usize> = 0..5;

/// The [`END_HINTS`] entry of `usage`.
const USAGE: usize = 3;

/// What the [`END_HINTS`] in a data line say of the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndHint {
    /// None that counts.
    None,
    /// A `usage` that is not `null`, and nothing else that counts.
    Usage,
    /// One that counts other than `usage`: a finish, an error, a last event.
    End,
}

/// Whether the last `data:` line among `bytes` (the last whole events of a stream) ends the
/// stream as its API ends it: `[DONE]`, or data that holds one of the [`END_HINTS`] (a finish
/// reason in the last chunk is an end: some servers send no `[DONE]`). `None` without a data
/// line. In doubt, an end: a stream taken for a cut one gets an error event it should not
/// have, and its model is charged with downtime.
///
/// A `usage` alone ends the stream as [`last_event_end`] says: a usage chunk with no choices
/// ends it, one beside a delta with content does not, and one beside deltas that deliver
/// nothing ends it only right after a data event that ended it ([`LastEvent::EndsAfterAnEnd`]),
/// looked for among `bytes` (none there: in doubt, an end).
///
/// Read once, at the stream's clean end: two searches, from the end back to the start of that
/// line, then over it; the line is parsed only when a `usage` is all it holds.
pub(crate) fn ends_the_stream(bytes: &[u8]) -> Option<bool> {
    last_event_end(bytes).map(|(end, start)| match end {
        LastEvent::Ends => true,
        LastEvent::Cut => false,
        LastEvent::EndsAfterAnEnd => ends_the_stream_alone(&bytes[..start]).unwrap_or(true),
    })
}

/// Whether the last data event among `bytes` ends the stream by itself
/// ([`LastEvent::Ends`]): what the event before a [`LastEvent::EndsAfterAnEnd`] must do.
/// `None` without a data line.
pub(crate) fn ends_the_stream_alone(bytes: &[u8]) -> Option<bool> {
    last_event_end(bytes).map(|(end, _)| end == LastEvent::Ends)
}

/// What the last data event of a stream says of its end ([`last_event_end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LastEvent {
    /// It ends the stream as its API ends it (or may: in doubt, an end).
    Ends,
    /// It does not: the stream was cut after it.
    Cut,
    /// A `usage` beside choices that deliver nothing and do not finish: the end right after a
    /// data event that [`Ends`](Self::Ends) the stream (OpenRouter's usage chunk, an empty
    /// delta after the finish chunk), else a cut (vLLM's `continuous_usage_stats` puts a usage
    /// in every chunk, and a chunk that delivers no text yet has an empty delta).
    EndsAfterAnEnd,
}

/// What the last `data:` line among `bytes` says of the stream's end, and where its event's
/// first `data:` line starts in `bytes` (what comes before is the stream's earlier events).
/// `None` without a data line.
///
/// A `usage` ends the stream unless its chunk delivers content without a finish reason
/// ([`usage_end`]): servers that send a usage in every chunk (vLLM's
/// `continuous_usage_stats`, some OpenAI-compatible hosts) send it with each delta, and their
/// last chunk has a finish reason; the usage chunks that end streams come after it, with
/// `"choices":[]` (OpenAI's, vLLM's `include_usage`) or an empty delta and a `null` finish
/// reason (OpenRouter's, before its `[DONE]`).
pub(crate) fn last_event_end(bytes: &[u8]) -> Option<(LastEvent, usize)> {
    let (start, data) = last_data_line(bytes)?;
    if data.trim_ascii() == b"[DONE]" {
        return Some((LastEvent::Ends, start));
    }
    let end = match end_searcher().map_or_else(
        || end_hint_by_memmem(data),
        |searcher| end_hint(searcher, data),
    ) {
        EndHint::End => LastEvent::Ends,
        EndHint::Usage => usage_end(data),
        EndHint::None => LastEvent::Cut,
    };
    Some((end, start))
}

/// What a chunk whose only end hint is a `usage` says of the end: a cut when a choice delivers
/// content (text, a tool call: anything but what a [preamble](is_contentless_choice) chunk
/// holds) without a finish reason, [`LastEvent::EndsAfterAnEnd`] when every choice is a delta
/// that delivers nothing, else (no choices, `"choices":[]`, data that does not parse: JSON
/// over several `data:` lines, as [`last_data_line`] keeps it) the end.
fn usage_end(data: &[u8]) -> LastEvent {
    let Some(json) = Json::parse(data) else {
        return LastEvent::Ends;
    };
    let Some(choices) = present(json.get("choices")).and_then(Json::as_array) else {
        return LastEvent::Ends;
    };
    let has_delta =
        |choice: &Json<'_>| present(choice.get("delta")).is_some_and(|d| d.as_object().is_some());
    if choices
        .iter()
        .any(|choice| has_delta(choice) && !is_contentless_choice(choice))
    {
        LastEvent::Cut
    } else if !choices.is_empty() && choices.iter().all(has_delta) {
        LastEvent::EndsAfterAnEnd
    } else {
        LastEvent::Ends
    }
}

/// The data of the last event of `bytes` that has data: its last line that starts with
/// `data:`, from the first of the `data:` lines right before it (JSON split over several lines
/// is read whole; the later lines' `data:` are left in, which no end hint holds), and where
/// that first `data:` line starts. Found a line at a time from the end, with `memrchr`.
fn last_data_line(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let line_before = |end: usize| {
        let end = end
            - bytes[..end]
                .iter()
                .rev()
                .take_while(|b| matches!(b, b'\n' | b'\r'))
                .count();
        let start = memchr::memrchr2(b'\n', b'\r', &bytes[..end]).map_or(0, |i| i + 1);
        (start, end)
    };
    let (mut start, end) = {
        let mut end = bytes.len();
        loop {
            let (start, line_end) = line_before(end);
            if start == line_end {
                return None;
            }
            if bytes[start..line_end].starts_with(b"data:") {
                break (start, line_end);
            }
            end = start;
        }
    };
    // Earlier `data:` lines of the same event: no blank line between them.
    while start > 0 {
        let gap = &bytes[..start];
        let line_ends = gap
            .iter()
            .rev()
            .take_while(|b| matches!(b, b'\n' | b'\r'))
            .count();
        // One line end (`\n`, `\r` or `\r\n`) is within the event; more is a blank line.
        if line_ends > 2 || line_ends == 2 && &gap[gap.len() - 2..] != b"\r\n" {
            break;
        }
        let (previous, previous_end) = line_before(start);
        if previous == previous_end || !bytes[previous..previous_end].starts_with(b"data:") {
            break;
        }
        start = previous;
    }
    bytes[start..end]
        .strip_prefix(b"data:")
        .map(|data| (start, data))
}

/// The [`END_HINTS`] in one packed SIMD searcher (Teddy), built once; `None` without SIMD it
/// can use.
fn end_searcher() -> Option<&'static Searcher> {
    static SEARCHER: OnceLock<Option<Searcher>> = OnceLock::new();
    SEARCHER.get_or_init(|| packed_searcher(END_HINTS)).as_ref()
}

/// A packed SIMD searcher (Teddy) for `hints`, leftmost first; `None` without SIMD it can use.
fn packed_searcher(hints: &[&[u8]]) -> Option<Searcher> {
    let mut builder = Config::new().match_kind(MatchKind::LeftmostFirst).builder();
    builder.extend(hints);
    builder.build()
}

/// What the [`END_HINTS`] in `data` say of the end.
fn end_hint(searcher: &Searcher, data: &[u8]) -> EndHint {
    let mut usage = false;
    let mut from = 0;
    while let Some(found) = searcher.find_in(data, Span::from(from..data.len())) {
        let hint = found.pattern().as_usize();
        if !is_null_key(hint, &data[found.end()..]) {
            if hint != USAGE {
                return EndHint::End;
            }
            usage = true;
        }
        // Past the opening quote only: a hint may start at the closing quote of this one.
        from = found.start() + 1;
    }
    if usage {
        EndHint::Usage
    } else {
        EndHint::None
    }
}

/// [`end_hint`] a hint at a time: the path without SIMD.
fn end_hint_by_memmem(data: &[u8]) -> EndHint {
    let counts = |hint: usize| {
        let needle = END_HINTS[hint];
        memchr::memmem::find_iter(data, needle)
            .any(|at| !is_null_key(hint, &data[at + needle.len()..]))
    };
    if (0..END_HINTS.len()).any(|hint| hint != USAGE && counts(hint)) {
        EndHint::End
    } else if counts(USAGE) {
        EndHint::Usage
    } else {
        EndHint::None
    }
}

/// Whether hint number `hint`, followed by `after`, is one of the keys whose value is `null`.
fn is_null_key(hint: usize, after: &[u8]) -> bool {
    END_KEYS.contains(&hint)
        && after
            .trim_ascii_start()
            .strip_prefix(b":")
            .is_some_and(|value| value.trim_ascii_start().starts_with(b"null"))
}

/// The private searches and rules of this module, for the fuzz targets (`fuzz/`): built only
/// with `--cfg fuzzing`, as the targets build the crate.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::{end_hint, end_hint_by_memmem, end_searcher, EndHint, Json};

    /// [`ends_the_stream`](super::ends_the_stream).
    pub fn ends_the_stream(bytes: &[u8]) -> Option<bool> {
        super::ends_the_stream(bytes)
    }

    /// [`is_preamble`](super::is_preamble).
    pub fn is_preamble(data: &[u8]) -> bool {
        super::is_preamble(data)
    }

    /// The preamble rule read from the bytes ([`quick::chunk_preamble`](super::quick::chunk_preamble)),
    /// and through the JSON tree (`None` when the data does not parse).
    pub fn preamble_quick_and_tree(data: &[u8]) -> (Option<bool>, Option<bool>) {
        (
            super::quick::chunk_preamble(data),
            Json::parse(data).map(|json| super::is_preamble_json(&json)),
        )
    }

    /// Whether `data` holds a preamble hint: by the packed searcher (`None` without SIMD it can
    /// use), and a hint at a time.
    pub fn preamble_hint_searches(data: &[u8]) -> (Option<bool>, bool) {
        let packed = super::PREAMBLE_SEARCHER
            .get_or_init(|| super::packed_searcher(super::PREAMBLE_HINTS))
            .as_ref()
            .map(|searcher| searcher.find(data).is_some());
        (packed, super::has_preamble_hint_by_memmem(data))
    }

    /// What the end hints in `data` say (`"none"`, `"usage"`, `"end"`): by the packed searcher
    /// (`None` without SIMD it can use), and a hint at a time.
    pub fn end_hint_searches(data: &[u8]) -> (Option<&'static str>, &'static str) {
        let name = |hint| match hint {
            EndHint::None => "none",
            EndHint::Usage => "usage",
            EndHint::End => "end",
        };
        (
            end_searcher().map(|searcher| name(end_hint(searcher, data))),
            name(end_hint_by_memmem(data)),
        )
    }
}

/// A member's value, `None` when it is absent or `null`.
fn present<'j, 'a>(value: Option<&'j Json<'a>>) -> Option<&'j Json<'a>> {
    value.filter(|value| **value != Json::Null)
}

/// Whether a stream's start, read a frame at a time, holds its first data event yet, without
/// scanning it from the start for every frame: a frame that ends no line after a line end (no
/// blank line) cannot complete an event, and what came before the last blank line that ended
/// no data event (or ended a preamble) is not scanned again. Linear in the bytes read, however the upstream cuts
/// them; rescanning the whole start for every frame was quadratic (64 KiB of blank lines one
/// byte per frame: about 13 s of CPU).
#[derive(Debug, Default)]
pub(crate) struct FirstEvent {
    /// Where the next scan starts (see [`scan_from`]).
    resume: usize,
    /// How much of the stream has been looked at.
    seen: usize,
    /// Found already.
    found: bool,
    /// What was found is the stream's end (`[DONE]`, `message_stop`): no content before it.
    ended: bool,
}

impl FirstEvent {
    /// Whether `buf` (the stream so far, grown since the last call) holds a complete first
    /// data event that is not a preamble (what [`scan`] finds), or `[DONE]`.
    pub(crate) fn complete(&mut self, buf: &[u8]) -> bool {
        let new = buf.get(self.seen.saturating_sub(1)..).unwrap_or_default();
        self.seen = buf.len();
        if self.found || !ends_a_blank_line(new) {
            return self.found;
        }
        let (scan, resume) = scan_from(buf, self.resume, true);
        self.resume = resume;
        self.found = !matches!(scan.event, SseEvent::NeedMore);
        self.ended = scan.event == SseEvent::End;
        self.found
    }

    /// Whether the stream, read by [`complete`](Self::complete), ended (`[DONE]`, Anthropic's
    /// `message_stop`) before any content: an empty answer.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Where [`scan_resumable`] can start to find the first data event past the preamble in
    /// the stream read so far: past the preambles and blank lines already decided, so that
    /// reading that event again does not read the stream's start again.
    pub(crate) fn event_start(&self) -> usize {
        self.resume
    }
}

/// Whether `bytes` hold a line end right after another (`\r\n` is one line end, not two):
/// where an event can end.
fn ends_a_blank_line(bytes: &[u8]) -> bool {
    let line_end = |b: &u8| matches!(b, b'\n' | b'\r');
    bytes
        .windows(2)
        .any(|w| line_end(&w[0]) && line_end(&w[1]) && w != b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(buf: &[u8]) -> (Vec<u8>, usize) {
        match first_sse_event(buf) {
            SseEvent::Event { data, end } => (data.into_owned(), end),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn lf_crlf_and_cr_line_ends() {
        assert_eq!(event(b"data: x\n\n"), (b"x".to_vec(), 9));
        assert_eq!(event(b"data: x\r\n\r\n"), (b"x".to_vec(), 11));
        assert_eq!(event(b"data: x\r\r"), (b"x".to_vec(), 9));
        assert_eq!(event(b"data: x\r\n\nrest"), (b"x".to_vec(), 10));
    }

    #[test]
    fn skips_comments_keepalives_and_dataless_events() {
        let buf = b":ok\n\n: OPENROUTER PROCESSING\r\n\r\nevent: ping\n\nid: 7\nretry: 10\n\nevent: message\ndata: hi\n\n";
        let (data, end) = event(buf);
        assert_eq!(data, b"hi");
        assert_eq!(end, buf.len());
    }

    #[test]
    fn multiline_data_joins_with_lf_and_keeps_extra_spaces() {
        assert_eq!(event(b"data:a\ndata:  b\ndata\n\n").0, b"a\n b\n");
    }

    #[test]
    fn empty_data_field_still_dispatches() {
        assert_eq!(event(b"data:\n\n").0, b"");
        assert_eq!(event(b"data\n\n").0, b"");
    }

    #[test]
    fn borrowed_when_single_line() {
        match first_sse_event(b"data: {}\n\n") {
            SseEvent::Event { data, .. } => assert!(matches!(data, Cow::Borrowed(b"{}"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_across_reads_needs_more_until_blank_line() {
        let full = b": keepalive\n\nevent: error\ndata: {\"type\":\"error\"}\n\n";
        for cut in 0..full.len() {
            assert_eq!(
                first_sse_event(&full[..cut]),
                SseEvent::NeedMore,
                "cut at {cut}"
            );
        }
        let scan = scan(full);
        assert!(scan.is_error_event);
        assert_eq!(
            scan.event,
            SseEvent::Event {
                data: Cow::Borrowed(&b"{\"type\":\"error\"}"[..]),
                end: full.len()
            }
        );
    }

    #[test]
    fn event_type_resets_after_dataless_event() {
        assert!(!scan(b"event: error\n\ndata: x\n\n").is_error_event);
    }

    #[test]
    fn bom_and_done() {
        assert_eq!(event(b"\xEF\xBB\xBFdata: x\n\n").0, b"x");
        assert_eq!(
            first_sse_event(b": c\n\ndata: [DONE]\r\n\r\n"),
            SseEvent::End
        );
        assert_eq!(first_sse_event(b""), SseEvent::NeedMore);
        assert_eq!(first_sse_event(b"\n\n\n"), SseEvent::NeedMore);
    }

    const ROLE_CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;

    #[test]
    fn content_less_starts_are_preambles() {
        for data in [
            ROLE_CHUNK,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":""}},{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":"","tool_calls":[],"refusal":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":null,"reasoning_details":[]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":"","refusal":""}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning":""}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":null,"reasoning_content":""}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":null,"reasoning":null,"refusal":null}}]}"#,
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
            r#"{"choices": [], "error": null}"#,
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"stop_reason":null}}"#,
            r#"{"type": "ping"}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","error":null,"output":[],"tools":[],"metadata":{}}}"#,
            r#"{"type":"response.in_progress","response":{"id":"resp_1","status":"in_progress"}}"#,
            r#"{"type":"response.queued","response":{"status":"queued","output":[]}}"#,
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[],"content":null,"encrypted_content":""}}"#,
            r#"{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
            r#"{"type":"response.content_part.added","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
            r#"{"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"reasoning_text","text":""}}"#,
            r#"{"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"refusal","refusal":""}}"#,
            r#"{"type":"response.reasoning_summary_part.added","sequence_number":2,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}"#,
            // Empty text deltas: nothing to show.
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":""}}"#,
            r#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"","logprobs":[],"obfuscation":"Zk3x"}"#,
            r#"{"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":0,"delta":""}"#,
            r#"{"type":"response.reasoning_text.delta","item_id":"rs_1","output_index":0,"content_index":0,"delta":""}"#,
            r#"{"type":"response.refusal.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":""}"#,
            // A first delta of `null`s alone, without a role.
            r#"{"choices":[{"index":0,"delta":{"content":null},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":null,"tool_calls":null},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices": [{"index": 0, "delta": {"content": null}, "finish_reason": null}]}"#,
            r#"{"choices":[{"delta":{"refusal":null,"content":null}}]}"#,
            // ... whatever the members (`tool_calls`, `function_call`...), and empty strings
            // and lists whatever their names.
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":null},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"finish_reason":null,"delta":{"function_call":null}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":null }}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning":[],"refusal":[],"audio":""}}]}"#,
            // `data:` alone, or blank: nothing a client could parse, no answer and no error.
            "",
            " ",
            "\n",
        ] {
            assert!(is_preamble(data.as_bytes()), "{data}");
        }
    }

    #[test]
    fn content_errors_and_anything_else_are_not_preambles() {
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{}]}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":{}}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","refusal":"I can't"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning":"Let me think."}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":"Hmm"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning_details":[{"type":"reasoning.text","text":"Hmm"}]}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":"content_filter"}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant"}},{"delta":{"content":"Hi"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":"","content":"x"}}]}"#,
            r#"{"choices":[{"index":0,"text":""}]}"#,
            r#"{"choices":[{"delta":"role"}]}"#,
            r#"{"choices":[],"error":{"message":"Provider returned error","code":502}}"#,
            r#"{"choices":{}}"#,
            r#"{"role":"assistant"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":""}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"text":""}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"","text":"x"}}"#,
            r#"{"type":"content_block_start","index":0}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"","citation":{}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""},"error":{"type":"overloaded_error"}}"#,
            r#"{"type":"content_block_delta","index":0}"#,
            r#"{"type":"response.created","response":{"status":"in_progress","output":[{"type":"message"}]}}"#,
            r#"{"type":"response.in_progress","response":{"error":{"code":"server_error"},"output":[]}}"#,
            r#"{"type":"response.created","response":{"output":{}}}"#,
            r#"{"type":"response.created"}"#,
            r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"},"output":[]}}"#,
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            r#"{"type":"response.output_text.delta","item_id":"msg_1"}"#,
            r#"{"type":"response.output_text.delta","delta":"","annotation":{"type":"url_citation"}}"#,
            r#"{"type":"response.output_text.delta","delta":"","logprobs":[{"token":"Hi"}]}"#,
            r#"{"type":"response.output_text.delta","delta":[]}"#,
            r#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","delta":""}"#,
            r#"{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0}]}}]}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_1","name":"f"}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"Hmm"}]}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[],"encrypted_content":"gAAA"}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"message","content":[{"type":"output_text","text":"Hi"}]}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"ws_1","type":"web_search_call","status":"in_progress"}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","content":[]}}"#,
            r#"{"type":"response.output_item.added","item":{"type":"message","content":[]},"error":{"code":"server_error"}}"#,
            r#"{"type":"response.output_item.added","item":[]}"#,
            r#"{"type":"response.content_part.added","part":{"type":"output_text","annotations":[],"text":"Hi"}}"#,
            r#"{"type":"response.content_part.added","part":{"type":"output_text","annotations":[{"type":"url_citation"}],"text":""}}"#,
            r#"{"type":"response.content_part.added","part":{"type":"refusal","refusal":"No."}}"#,
            r#"{"type":"response.reasoning_summary_part.added","part":{"type":"summary_text","text":"Hmm"}}"#,
            r#"{"type":"response.content_part.added","part":{"type":"input_image","image_url":""}}"#,
            r#"{"type":"message_start","error":{"type":"overloaded_error"}}"#,
            r#"{"type":"ping""#,
            r#"["ping"]"#,
            "[DONE]",
        ] {
            assert!(!is_preamble(data.as_bytes()), "{data}");
        }
    }

    #[test]
    fn the_layer_decides_past_preambles_but_never_past_an_error_event() {
        let stream = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\"}}\n\nevent: ping\ndata: {{\"type\": \"ping\"}}\n\ndata: {ROLE_CHUNK}\n\nevent: error\ndata: {{\"type\":\"ping\"}}\n\nrest"
        );
        let stream = stream.as_bytes();
        let found = scan(stream);
        assert!(found.is_error_event);
        let SseEvent::Event { data, end } = found.event else {
            panic!("{found:?}")
        };
        assert_eq!(&data[..], br#"{"type":"ping"}"#);
        assert_eq!(&stream[end..], b"rest");
        // The public scanner still gives the first data event, preamble or not.
        assert_eq!(event(stream).0, br#"{"type":"message_start"}"#);
        // Preambles alone read as a stream without data events.
        let preambles = format!("data: {ROLE_CHUNK}\n\ndata: {{\"choices\":[]}}\n\n");
        assert_eq!(scan(preambles.as_bytes()).event, SseEvent::NeedMore);
        let done = format!("{preambles}data: [DONE]\n\n");
        assert_eq!(scan(done.as_bytes()).event, SseEvent::End);
    }

    #[test]
    fn empty_data_events_are_read_past_and_message_stop_ends_like_done() {
        let stream = b"data:\n\ndata: \r\n\r\ndata\n\ndata: {\"error\":{\"code\":429}}\n\n";
        let Scan { event, .. } = scan(stream);
        assert!(
            matches!(&event, SseEvent::Event { data, .. } if data.starts_with(b"{\"error\"")),
            "{event:?}"
        );
        // What a client dispatches, read by the public scan: the first event, empty.
        assert_eq!(event_data(stream), b"");
        let stop = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(scan(stop).event, SseEvent::End);
        // An `event: error` is never an end of this kind, nor is a stop after content.
        let error = b"event: error\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(matches!(scan(error).event, SseEvent::Event { .. }));
        let delta =
            b"data: {\"type\":\"content_block_delta\"}\n\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(matches!(scan(delta).event, SseEvent::Event { .. }));
    }

    fn event_data(buf: &[u8]) -> Vec<u8> {
        event(buf).0
    }

    #[test]
    fn a_stream_ends_with_done_a_finish_an_error_or_its_api_s_last_event() {
        for events in [
            "data: [DONE]\n\n",
            "data:[DONE]\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n: bye\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\" : \"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"usage\":{\"total_tokens\":6}}\n\n",
            // A finish with its usage, in every chunk or not.
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":6}}\n\n",
            // OpenRouter's usage chunk (its `[DONE]` follows): an empty delta, no finish.
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":2,\"total_tokens\":44,\"cost_details\":{\"upstream_inference_cost\":null}}}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":null}],\"usage\":{\"total_tokens\":8}}\n\n",
            // The same right after the finish chunk, or a usage chunk without choices: the end.
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":{\"total_tokens\":8}}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":8}}\n\ndata: {\"choices\":[{\"delta\":{}}],\"usage\":{}}\n\n",
            // In doubt (not a chunk read whole, a choice that is not one), an end.
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\ndata: \"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"choices\":[{\"index\":0}],\"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"choices\":[\"hi\"],\"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"candidates\": [{\"finishReason\": \"STOP\"}]}\r\n\r\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"error\":null}}\n\n",
            "event: response.incomplete\ndata: {\"type\":\"response.incomplete\"}\n\n",
            "event: response.failed\ndata: {\"type\":\"response.failed\"}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
            "data: {\"error\":{\"code\":502}}\n\n",
            // JSON over several data lines: read whole.
            "data: {\"choices\":[{\"finish_reason\":\"stop\",\ndata: \"index\":0}]}\n\n",
            "data: {\"a\":1}\n\ndata: {\"choices\":[{\"finish_reason\":\"stop\",\r\ndata: \"index\":0}]}\r\n\r\n",
        ] {
            assert_eq!(ends_the_stream(events.as_bytes()), Some(true), "{events:?}");
        }
        for events in ["", ": keep-alive\n\n", "event: x\nid: 1\n\n"] {
            assert_eq!(ends_the_stream(events.as_bytes()), None, "{events:?}");
        }
        for events in [
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"},\"finish_reason\": null,\"usage\":null}]}\n\n",
            // Only the last data line counts.
            "data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\ndata: [DONE]\"}}]}\n\n",
            // Only the last event's data lines.
            "data: {\"choices\":[{\"finish_reason\":\"stop\"}]}\n\ndata: {\"a\":\ndata: 1}\n\n",
            "data: {\"choices\":[{\"finish_reason\":\"stop\"}]}\r\rdata: {\"a\":1}\r\r",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"error\":null,\"usage\":null}}\n\n",
            // A usage in every chunk (vLLM's `continuous_usage_stats`): a delta with content
            // and no finish is the middle of the stream.
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":6,\"completion_tokens\":1}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":{\"total_tokens\":6}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}},{\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"total_tokens\":6}}\n\n",
            // ... and a usage beside an empty delta right after such a chunk: a cut after a
            // chunk that delivered no text yet, not the end (which has its finish first).
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"total_tokens\":6}}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":null}],\"usage\":{\"total_tokens\":7}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\r\n\r\n: ka\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":null}],\"usage\":{\"total_tokens\":7}}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{}}],\"usage\":{}}\n\ndata: {\"choices\":[{\"delta\":{}}],\"usage\":{}}\n\n",
        ] {
            assert_eq!(ends_the_stream(events.as_bytes()), Some(false), "{events:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_end_searcher_finds_what_memmem_finds(
            data in "[a-z_\"{}:., ]{0,24}(\"finish_reason\"|\"usage\"|\"error\"|\"message_stop\"|\"response.failed\"|x)[ :]{0,3}(null|\"stop\"|\\{\\}|n)[a-z\"{}:, ]{0,12}(\"finish_reason\"|\"usage\"|\"stop_reason\"|x)[ :]{0,3}(null|\"stop\"|\\{\\}|n)[a-z\"{}:, ]{0,12}"
        ) {
            if let Some(searcher) = end_searcher() {
                proptest::prop_assert_eq!(
                    end_hint(searcher, data.as_bytes()),
                    end_hint_by_memmem(data.as_bytes()),
                    "{}", data
                );
            }
        }

        #[test]
        fn the_hint_searcher_finds_what_memmem_finds(data in "[a-z\"{}\\[\\]:. _]{0,40}") {
            proptest::prop_assert_eq!(
                has_preamble_hint(data.as_bytes()),
                has_preamble_hint_by_memmem(data.as_bytes()),
                "{}", data
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(
            proptest::sample::select(b"data:\r\n :x\xff[DONE]".to_vec()), 0..200)
        ) {
            if let SseEvent::Event { end, .. } = first_sse_event(&buf) {
                proptest::prop_assert!(end <= buf.len());
            }
        }

        /// Read a frame at a time, whatever the cuts, `FirstEvent` says "complete" exactly
        /// when a scan of the whole stream so far finds the first event past the preambles (or
        /// `[DONE]`).
        #[test]
        fn the_incremental_scan_agrees_with_a_whole_scan_at_every_frame(
            bom: bool,
            lines in proptest::collection::vec((
                proptest::sample::select(vec![
                    "", "", "", "data: x", "data:{\"a\":1}", "data: [DONE]", ": keep-alive",
                    "event: error", "event: ping", "id: 7", "data", "retry: 10",
                    "data: {\"type\":\"ping\"}", "data: {\"choices\":[]}", "data: {\"type\":",
                    "data: \"ping\"}", "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}",
                ]),
                proptest::sample::select(vec!["\n", "\r\n", "\r"]),
            ), 0..30),
            cuts in proptest::collection::vec(0usize..400, 0..40),
        ) {
            let mut buf = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            for (line, end) in lines {
                buf.extend_from_slice(line.as_bytes());
                buf.extend_from_slice(end.as_bytes());
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(buf.len())).collect();
            cuts.push(buf.len());
            cuts.sort_unstable();
            let mut first = FirstEvent::default();
            for cut in cuts {
                let prefix = &buf[..cut];
                let whole = !matches!(scan(prefix).event, SseEvent::NeedMore);
                proptest::prop_assert_eq!(first.complete(prefix), whole, "at {}", cut);
            }
        }

        #[test]
        fn prefixes_need_more_or_agree(data in "[a-z{}\" :]{0,20}", cut in 0usize..64, crlf: bool) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let full = format!(": c{nl}{nl}event: x{nl}data: {data}{nl}data: 2{nl}{nl}tail");
            let whole = first_sse_event(full.as_bytes());
            let SseEvent::Event { end, .. } = &whole else { panic!("{whole:?}") };
            let cut = cut.min(full.len());
            match first_sse_event(&full.as_bytes()[..cut]) {
                SseEvent::NeedMore => proptest::prop_assert!(cut < *end),
                SseEvent::Event { data: got, end: got_end } => {
                    let SseEvent::Event { data, .. } = &whole else { unreachable!() };
                    proptest::prop_assert_eq!(&got, data);
                    // A cut between the `\r` and `\n` of the final CRLF ends one byte early.
                    proptest::prop_assert!(got_end == *end || (got_end + 1 == *end && full.as_bytes()[got_end] == b'\n'));
                }
                SseEvent::End => proptest::prop_assert!(false, "unexpected End"),
            }
        }
    }
}
