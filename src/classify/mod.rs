//! Error classes and the provider-aware classifier.
//!
//! [`FallbackLayer`](crate::fallback::FallbackLayer) asks a [`Classify`] about every attempt:
//! is this answer a success, or a failure of which [`ErrorClass`]? The [`DefaultClassifier`]
//! knows the error shapes of OpenAI, Azure OpenAI, Anthropic, Gemini / Vertex, Bedrock,
//! Mistral, Groq, DeepSeek, Cohere, OpenRouter, Together, Fireworks, xAI, Perplexity, vLLM,
//! Ollama and Hugging Face TGI.
//!
//! # What is a failure
//!
//! Every non-2xx status. A 2xx whose JSON carries an error object (OpenRouter reports
//! upstream failures as `200 {"error":{…}}`), whose SSE stream's *first* data event past the
//! preamble carries one (OpenRouter, Anthropic `event: error`, OpenAI, the Responses API's
//! `response.failed` with its `response.error`), or whose output was blocked for safety
//! (Gemini `finishReason: SAFETY` / `promptFeedback.blockReason`, OpenAI `content_filter` with
//! no content, Anthropic `stop_reason: refusal`, on a stream's `message_delta` too, Bedrock
//! `guardrail_intervened`, a Responses API answer or `response.incomplete` event with
//! `incomplete_details.reason: content_filter` and no output), or whose every choice finished with `error` (OpenRouter) or
//! `insufficient_system_resource` (DeepSeek). A 2xx body that is not valid JSON, or is cut
//! short, is a success: the classifier may see only a prefix of the body and never guesses
//! from half a document.
//!
//! The preamble is the content-less events upstreams send before the first content or error.
//! An event is one when it is not `event: error` and its data is a JSON object without an
//! `error` that is Anthropic's `{"type":"message_start",…}`, `{"type":"ping"}` or
//! `{"type":"content_block_start",…}` of a `text` or `thinking` block whose strings are all
//! empty, or `{"type":"content_block_delta",…}` of a `text_delta` or `thinking_delta` whose
//! text is empty; the Responses API's `response.created`, `response.in_progress` or `response.queued`
//! whose `response` has no `error` and an empty (or no) `output`, its
//! `response.output_item.added` of a `message` with an empty `content` or a `reasoning` item
//! with an empty `summary` (and no `encrypted_content`), and its `response.content_part.added`
//! / `response.reasoning_summary_part.added` of a part whose `text` (or `refusal`) is empty,
//! and its text deltas (`response.output_text.delta`, `response.refusal.delta`,
//! `response.reasoning_text.delta`, `response.reasoning_summary_text.delta`) whose `delta` is
//! empty, with nothing beside it but ids, indices, an empty `logprobs` and `obfuscation`;
//! or an OpenAI-style chunk whose `choices` is empty (Azure's first chunk, with
//! `prompt_filter_results`) or whose every choice has no `finish_reason` and a `delta` with
//! nothing but `role`, empty strings (`content`, `refusal`, `reasoning`, `reasoning_content`...)
//! and empty lists (`tool_calls`, `reasoning_details`...: `[]`, no call yet; OpenRouter opens
//! every stream with `"reasoning":null,"reasoning_details":[]`), whatever their names. A member
//! that is `null` counts as absent (OpenAI's `"refusal":null`, `"content":null`, a
//! `"tool_calls":null` alone). Anything else is content: a
//! `tool_calls` list with a call in it, refusal or reasoning text (the client shows it), a
//! tool-use block or a function call item, a finish reason, other `type`s, data that is not
//! JSON. Only data that holds `"role"`, `""`, `"content":null` (or `"content": null`), `[]`,
//! `{}`, `null},`, `null}}`, `null }`, `"message_start"`, `"ping"` or `"response.` is parsed for
//! this: a first delta of `null`s alone (`"delta":{"tool_calls":null}`, no role) closes right
//! after a `null`, where a usual content chunk holds none of them (it ends in
//! `"finish_reason":null}]`). An event whose data is empty or blank (`data:` alone) is a
//! preamble too: it carries nothing a client can parse, neither an answer nor an error. A
//! stream of preambles alone reads as one without data events, and one done after them
//! (`[DONE]`, or Anthropic's `{"type":"message_stop"}` first past them: no `message_delta` and
//! so no `stop_reason`) as an empty answer, a [`Downtime`](ErrorClass::Downtime) failure.
//! Comment lines (`: OPENROUTER PROCESSING`) are no event at all.
//!
//! # How a failure gets its class
//!
//! A redirect the client did not follow (301, 302, 303, 307, 308) is
//! [`Downtime`](ErrorClass::Downtime) whatever its body says: the model cannot be reached at its
//! upstream's URL, for every request until someone changes it, and like an upstream that is
//! down it should cool down after `downtime_threshold` such failures in a row rather than be
//! tried first, in vain, by every request (a 304 is no redirect: the answer to a conditional
//! request the client sent, `Other`). A client that follows redirects fails on those that
//! never end: reqwest's redirect error (a loop, too many) is `Downtime` too.
//!
//! For other failures, the body to read is the response body, or the data of the first SSE
//! event of a stream past its preamble. The rules run in this order and the first that
//! matches decides:
//!
//! 1. **Explicit markers.** OpenRouter's moderation metadata (`metadata.reasons`,
//!    `metadata.flagged_input`) or Azure's `innererror.content_filter_result`: `Moderation`.
//! 2. **Machine fields**, outermost first: the `x-amzn-ErrorType` header, then `type`, `code`,
//!    `status`, `error_type`, `__type`, `reason`, `innererror.code`, `details[].reason`,
//!    `availability.code`, `metadata.error_type`, and last the provider error OpenRouter
//!    embeds in `metadata.raw` (often as a JSON string). Examples: `content_policy_violation`
//!    → `Moderation`; `context_length_exceeded`, `request_too_large` → `ContextLength`;
//!    `rate_limit_exceeded`, `RESOURCE_EXHAUSTED`, `ThrottlingException` → `RateLimited`;
//!    `overloaded_error`, `UNAVAILABLE`, `server_error` → `Downtime`. Generic values
//!    (`invalid_request_error`, `INVALID_ARGUMENT`) name no class and let the next rules
//!    decide. When the body is not valid JSON, quoted tokens are looked for in its text.
//! 3. **Message families that name a cause**: moderation ("content management policy",
//!    "flagged", "safety system", "guardrail", DeepSeek's "Content Exists Risk", …) then
//!    context length ("maximum context length", vLLM's "maximum model length", "prompt is too
//!    long", "input is too long", "exceeds the maximum number of tokens", "token" with
//!    "exceed" / "too many" / "at most" / "must be <=" …, or a prompt / input / message /
//!    request that is "too long" / "exceeds max" …). A message
//!    about a per-minute or quota limit, or one in a 429, is never a context-length one
//!    (Bedrock throttles with "Too many tokens, please wait before trying again."). On 5xx
//!    only the unambiguous phrases count, and not when the message also says the upstream is
//!    down.
//! 4. **The status**: 429 → `RateLimited`; 413 → `ContextLength`; 408, 5xx (529 included) →
//!    `Downtime`. For an error inside a 2xx, the status is the body's own `code` when it is an
//!    HTTP status (OpenRouter's `{"error":{"code":502}}`).
//! 5. **Loose message families** (not for 401 to 405): "rate limit", "quota", "per minute",
//!    "throttl" → `RateLimited`; "overloaded", "unavailable", "timed out", "server error" →
//!    `Downtime`.
//! 6. Anything else is `Other`: auth, billing, unknown model, invalid parameters.
//!
//! Two choices worth knowing: OpenAI's `insufficient_quota` (a 429 about billing) is
//! `RateLimited`, as its status says; TGI's 429 `error_type: overloaded` is `Downtime`, as its
//! machine field says.
//!
//! Errors of the inner service (no response at all) go through [`classify_error`]: transport
//! failures are `Downtime`; a URI the client's connector refuses before connecting (an `https`
//! upstream for a plain-HTTP client) is `Other`, the configuration's fault and not the model's;
//! [`describe_error`] writes what such an error says, its sources included, without a URL's
//! secrets (the text of the layers' 502).
//! [`retry_after()`] reads how long the upstream asked to wait (`Retry-After` and its millisecond
//! variants), [`rate_limit_reset`] when the rate limit a 429 hit resets (OpenAI-style
//! `x-ratelimit-reset-*` durations, Anthropic's `anthropic-ratelimit-*-reset` timestamps),
//! [`retry_info_delay`] Gemini's `RetryInfo.retryDelay` in an error body, and [`wait_hint`]
//! combines the three in that order for the shared health, then, for a rate limit or a 503 /
//! 529 (or an error event in a 200 stream whose `code` is one of them, or Anthropic's
//! `overloaded_error`) without any of them, reads a delay its message states ("Please retry in 31.44s.",
//! "try again in 1m 30s") (`FallbackLayer` hands it a
//! stream's error event, the data the stream was classified by: of a 200 stream, or of an
//! error status whose body is an event stream). [`first_sse_event`] finds a
//! stream's first data event, preamble or not: the classifier scans the same way and then
//! skips the preamble.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_llm_router::classify::{classify_response, ErrorClass};
//!
//! let headers = HeaderMap::new();
//! let gemini = br#"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]"#;
//! assert_eq!(classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, gemini), Some(ErrorClass::RateLimited));
//!
//! let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
//! assert_eq!(classify_response(StatusCode::OK, &headers, blocked), Some(ErrorClass::Moderation));
//! ```

mod class;
mod classifier;
mod describe;
mod json;
mod quick;
mod response;
mod retry_after;
mod rules;
mod sse;
mod transport;

pub use class::{ErrorClass, ParseErrorClassError};
pub use classifier::{
    classify_fn, Classify, ClassifyExt, ClassifyFn, DefaultClassifier, MapClass, Or,
};
pub use describe::describe_error;
pub use response::classify_response;
pub(crate) use response::{is_event_stream_type, is_redirect, payload_from};
pub use retry_after::{
    rate_limit_reset, rate_limit_reset_at, retry_after, retry_after_at, retry_info_delay,
    wait_hint, wait_hint_at, MAX_RETRY_AFTER,
};
/// The stream rules' private searches, for the fuzz targets: only with `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub use sse::fuzzing as sse_fuzzing;
pub(crate) use sse::{
    ends_the_stream, ends_the_stream_alone, last_event_end, leading_type, scan as scan_sse,
    FirstEvent, LastEvent,
};
pub use sse::{first_sse_event, SseEvent};
pub use transport::{classify_error, RedirectNotFollowed};
pub(crate) use transport::{is_redirect_error, is_timeout, sources};

#[cfg(test)]
mod tests;
