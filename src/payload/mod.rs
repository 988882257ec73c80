//! The JSON body view: read the top-level fields routing needs, rewrite them by splicing.
//!
//! # A view, not a tree
//!
//! [`ChatRequest::parse`] walks the top-level object of a chat-completions body (or of a
//! Responses API or Anthropic Messages body) once with `serde_json`, taking every member value
//! as a borrowed [`RawValue`]: a value is scanned, not built, so a 1 MiB `messages` array costs
//! one pass over its bytes and no allocation. Only the few fields routing reads are decoded
//! (`model`, `models`, `stream`, `max_tokens`, `max_completion_tokens`, `max_output_tokens`,
//! `tools`, `functions`, `response_format`, `text`, `plugins`); for the rest the view keeps
//! nothing but byte offsets into the original [`Bytes`]. The prompt is decoded only when asked
//! for, borrowing its strings from the buffer wherever they hold no escape:
//! [`ChatRequest::messages`] decodes `messages`, [`ChatRequest::prompt`] whichever shape the
//! body has (`messages`, else the Responses API's `input`, after the system text of Anthropic's
//! `system` or the Responses API's `instructions`). A chat-completions body has none of those
//! three, and the view allocates nothing for them.
//!
//! Keys are compared decoded (`"mod\u0065l"` is the key `model`). serde_json skips a borrowed
//! `RawValue` iteratively, without its recursion limit, so the view applies the same limit
//! itself: a body nested deeper than 128 arrays or objects is refused as `invalid_json`, as
//! `serde_json::from_slice::<Value>` would refuse it.
//!
//! Offsets come from the values themselves: the `&str` behind a borrowed `RawValue` (or a
//! borrowed string) points into the body, so its offset is its address minus the body's.
//!
//! # Splice, don't re-serialise
//!
//! [`ChatRequest::splice`] rewrites `model`, drops `models`, `plugins` or entries of `plugins` by
//! cutting byte ranges out of the original buffer and putting the replacement between them
//! ([`Splice::to_segments`]: the untouched pieces are [`Bytes::slice`]s, reference-counted and
//! never copied). Every byte outside the edited ranges reaches the upstream exactly as the client
//! sent it: key order, whitespace, number spelling and string escapes included.
//!
//! # Duplicate keys
//!
//! JSON parsers disagree on which of two equal keys wins (serde_json's `Value` keeps the last,
//! others the first, some refuse). If routing read one `model` and the upstream another, the
//! router's allow-lists and budgets could be bypassed. So a body that repeats, at the top level,
//! any key the router reads (`model`, `models`, `stream`, `plugins`, `messages`, `max_tokens`,
//! `max_completion_tokens`, `tools`, `functions`, `response_format`, and of the other APIs
//! `input`, `instructions`, `system`, `max_output_tokens`, `text`, `output_config`,
//! `output_format`) is refused with
//! [`PayloadError::DuplicateKey`] (`duplicate_key`). Keys are compared after unescaping, so
//! `"model"` and `"mod\u0065l"` are the same key. The same goes for the nested keys the
//! router reads: `response_format`'s `type`, the Responses API's `text.format` and its
//! `type`, Anthropic's `output_config.format` and its `type`, `output_format`'s `type`, and a
//! plugin entry's `id` (a repeated `id` could hide an `auto-router` entry from
//! the router and not from the upstream). OpenRouter's `provider` is read by the auto router
//! only (its `max_price`): a repeated `provider` is refused there, and passes through
//! untouched with a request the router does not route. Duplicates of any other key are none
//! of the router's business: they pass through untouched. For the same reason a body with both
//! `messages` and `input` has no prompt the router can trust:
//! [`ChatRequest::prompt`] refuses it ([`PayloadError::AmbiguousPrompt`]).
//!
//! # Lenient where routing does not care
//!
//! `null` counts as absent for every field read here (`"stream": null` is not streaming).
//! Fields the router only peeks at (`max_tokens`, `max_output_tokens`, `tools`,
//! `response_format`, `text`, `system`, `instructions`) are never a reason to refuse a body: a
//! value of an unexpected type reads as absent, and the upstream judges it. Fields the router
//! acts on (`model`, `models`, `stream`, `plugins`) must have their documented type, and a
//! model id at most [`MAX_MODEL_ID_BYTES`]. An entry of `models` must not be empty
//! (`bad_models`), while `"model": ""` names no model, as `null` does.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::recent::{self, Recent, RECENT_MODEL_MAX};

mod error;
mod messages;
mod scan;
mod splice;
#[cfg(test)]
mod tests;

pub use crate::buffer::{is_json_content_type, DEFAULT_MAX_BODY_BYTES};
pub(crate) use error::without_position;
pub use error::{Limits, PayloadError};

/// The longest model id accepted in `model` or an entry of `models`, in bytes. No provider's
/// id comes near it (OpenRouter's are under 100 bytes, an AWS ARN at most a few hundred); a
/// longer one is refused (`bad_model` / `bad_models`), so that a client's made-up id cannot be
/// as long as its body where the layers repeat it: in the `x-llm-router-*` headers (a 1 MiB id
/// made an answer no HTTP client would read), the shared health store (an entry per model that
/// failed, up to 4096 of them) and every log line and span that names the model.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::{ChatRequest, MAX_MODEL_ID_BYTES};
///
/// let id = "m".repeat(MAX_MODEL_ID_BYTES + 1);
/// let body = format!(r#"{{"model":"{id}","messages":[]}}"#);
/// let err = ChatRequest::parse(Bytes::from(body)).unwrap_err();
/// assert_eq!(err.to_api_error().code(), "bad_model");
/// ```
pub const MAX_MODEL_ID_BYTES: usize = 1024;

/// What a model id over [`MAX_MODEL_ID_BYTES`] is refused for (its number written out: an
/// `InvalidField`'s `expected` is a `&'static str`; a test checks that the two agree).
const MODEL_ID_TOO_LONG: &str = "a model id of at most 1024 bytes";

/// What an empty entry of `models` is refused for.
const MODEL_ID_EMPTY: &str = "an array of model ids (a model id must not be empty)";
pub use messages::{Message, Messages, Part};
pub use splice::Splice;

/// A request extension one routing layer leaves for the next: the body it already parsed, so
/// that the next layer does not parse the same bytes again.
#[derive(Clone, Debug)]
pub(crate) struct Parsed(pub(crate) ChatRequest);

impl Parsed {
    /// The parsed view, if it is of exactly these bytes.
    pub(crate) fn of(self, bytes: &Bytes) -> Option<ChatRequest> {
        let same = self.0.bytes.as_ptr() == bytes.as_ptr() && self.0.bytes.len() == bytes.len();
        same.then_some(self.0)
    }
}

/// A view of a chat-completions request body: the [`Bytes`] as received, plus the offsets and
/// decoded values of the top-level fields routing reads.
///
/// Cloning is cheap (the buffer is reference-counted).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::ChatRequest;
///
/// let body = Bytes::from_static(br#"{ "model": "auto",
///     "models": ["gpt-4o", "claude-sonnet"],
///     "stream": true, "max_tokens": 512,
///     "messages": [{"role": "user", "content": "Write a haiku"}] }"#);
/// let req = ChatRequest::parse(body)?;
/// assert_eq!(req.model(), Some("auto"));
/// assert_eq!(req.models().collect::<Vec<_>>(), ["gpt-4o", "claude-sonnet"]);
/// assert!(req.stream());
/// assert_eq!(req.max_tokens(), Some(512));
/// assert_eq!(req.messages()?.last_user_text().as_deref(), Some("Write a haiku"));
///
/// // Rewrite `model` and drop `models`; every other byte is kept as sent.
/// let out = req.splice().set_model("gpt-4o").remove_models().to_bytes();
/// assert_eq!(&out[..], br#"{ "model": "gpt-4o",
///     "stream": true, "max_tokens": 512,
///     "messages": [{"role": "user", "content": "Write a haiku"}] }"#);
/// # Ok::<(), tower_llm_router::payload::PayloadError>(())
/// ```
#[derive(Clone)]
pub struct ChatRequest {
    bytes: Bytes,
    /// Offset just past the opening `{`.
    open: usize,
    /// Number of top-level members.
    members: usize,
    /// `model`, decoded once: it is read several times per request, and the chain of models
    /// shares it instead of copying it.
    model: Option<Field<Option<Arc<str>>>>,
    models: Option<Field<Vec<Text>>>,
    /// Boxed: rare (OpenRouter's plugin options), and the view is moved several times per
    /// request (72 bytes fewer to move for every request without it).
    plugins: Option<Box<Field<Vec<PluginEntry>>>>,
    messages: Option<Range<usize>>,
    /// The prompt fields of the Responses API and Anthropic's Messages API. Boxed: absent
    /// from a chat-completions body, which moves the view several times per request and
    /// allocates nothing for them.
    other_shapes: Option<Box<OtherShapes>>,
    /// The value of `tools` when it is a non-empty array, else of the legacy `functions`.
    tools: Option<Range<usize>>,
    stream: bool,
    max_tokens: Option<u64>,
    wants_json_schema: bool,
    /// OpenRouter's `provider` options: where the value sits, not read here (the auto router
    /// reads its `max_price`; any other request passes it on untouched).
    provider: Option<Range<usize>>,
    /// `provider` is given more than once (see [`provider`](Self::provider)).
    provider_twice: bool,
}

/// Where the prompt fields other than `messages` sit.
#[derive(Clone, Debug, Default)]
struct OtherShapes {
    /// The Responses API's `input`.
    input: Option<Range<usize>>,
    /// The Responses API's `instructions`.
    instructions: Option<Range<usize>>,
    /// Anthropic's top-level `system`.
    system: Option<Range<usize>>,
}

impl OtherShapes {
    fn any(&self) -> bool {
        self.input.is_some() || self.instructions.is_some() || self.system.is_some()
    }
}

/// Whether `format` (the value of `response_format`, of the Responses API's `text.format`, of
/// Anthropic's `output_config.format` or `output_format`) is an object with
/// `"type": "json_schema"`; `Err(key)`, naming the repeated key, when its `type` is given twice.
fn is_json_schema(format: &str, key: &'static str) -> Result<bool, &'static str> {
    match head_field::<Str<'_>>(format, "type") {
        Head::Value(Str(kind)) => Ok(kind == "json_schema"),
        Head::Twice => Err(key),
        Head::Absent => Ok(false),
    }
}

/// Whether `parent`, an object that holds a `format` (the Responses API's `text`, Anthropic's
/// `output_config`: `{"format": {"type": "json_schema", ...}}`), asks for a JSON schema.
/// `keys` name its `format` and that format's `type` (`text.format`, `text.format.type`), one
/// of which `Err` gives when it is repeated.
fn format_wants_json_schema(
    parent: &str,
    keys: (&'static str, &'static str),
) -> Result<bool, &'static str> {
    let (format_key, type_key) = keys;
    match head_field::<&RawValue>(parent, "format") {
        Head::Value(format) => is_json_schema(format.get(), type_key),
        Head::Twice => Err(format_key),
        Head::Absent => Ok(false),
    }
}

/// Where a top-level member sits, and its decoded value.
#[derive(Clone, Debug)]
struct Field<T> {
    span: MemberSpan,
    value: T,
}

/// The byte offsets of a top-level member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemberSpan {
    /// Offset of the key's opening quote.
    key_start: usize,
    /// The value, without surrounding whitespace.
    value: (usize, usize),
    /// End of the previous member's value, `None` for the first member.
    prev_end: Option<usize>,
    /// Start of the next member's key, `None` for the last member.
    next_start: Option<usize>,
}

/// The range to cut to remove items `start..end` of a comma-separated list: up to the next
/// item when there is one, else from the end of the previous one, else just the items.
fn cut(
    prev_end: Option<usize>,
    start: usize,
    end: usize,
    next_start: Option<usize>,
) -> Range<usize> {
    match (next_start, prev_end) {
        (Some(next), _) => start..next,
        (None, Some(prev)) => prev..end,
        (None, None) => start..end,
    }
}

/// An entry of `plugins`: its span and its `id`.
#[derive(Clone, Debug)]
struct PluginEntry {
    value: (usize, usize),
    id: Option<Text>,
}

/// A decoded string: a range of the body when it held no escape, else owned.
#[derive(Clone, Debug)]
enum Text {
    Span(usize, usize),
    Owned(Box<str>),
}

impl PluginEntry {
    fn new(raw: &RawValue, base: usize) -> Result<Self, PayloadError> {
        let start = offset(raw.get(), base);
        let id = match head_field::<Str<'_>>(raw.get(), "id") {
            Head::Absent => None,
            Head::Value(Str(id)) => Some(Text::new(id, base)),
            Head::Twice => {
                return Err(PayloadError::DuplicateKey {
                    key: "plugins[].id",
                })
            }
        };
        Ok(PluginEntry {
            value: (start, start + raw.get().len()),
            id,
        })
    }
}

impl Text {
    /// The length of the decoded string, in bytes.
    fn len(&self) -> usize {
        match self {
            Text::Span(start, end) => end - start,
            Text::Owned(s) => s.len(),
        }
    }

    fn new(s: Cow<'_, str>, base: usize) -> Self {
        match s {
            Cow::Borrowed(s) => {
                let start = offset(s, base);
                Text::Span(start, start + s.len())
            }
            Cow::Owned(s) => Text::Owned(s.into_boxed_str()),
        }
    }

    fn get<'a>(&'a self, body: &'a [u8]) -> &'a str {
        match self {
            // The range lies between two quotes of a body validated as UTF-8, so the fallback
            // to "" is never taken.
            Text::Span(start, end) => body
                .get(*start..*end)
                .and_then(|s| std::str::from_utf8(s).ok())
                .unwrap_or_default(),
            Text::Owned(s) => s,
        }
    }
}

/// A string, borrowed from the input when it holds no escape. (`Cow<str>`'s own
/// `Deserialize` always allocates: it reads a `String`.)
pub(crate) struct Str<'de>(pub(crate) Cow<'de, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The top-level keys the router reads; a duplicate of any of them is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Model,
    Models,
    Stream,
    Plugins,
    Messages,
    MaxTokens,
    MaxCompletionTokens,
    Tools,
    Functions,
    ResponseFormat,
    Input,
    Instructions,
    System,
    MaxOutputTokens,
    Text,
    OutputConfig,
    OutputFormat,
    /// OpenRouter's provider routing options: read for an auto request only (its
    /// `max_price`), so a repeat is recorded apart ([`TopLevel::provider_twice`]), not refused.
    Provider,
}

impl Key {
    const ALL: [Key; 18] = [
        Key::Model,
        Key::Models,
        Key::Stream,
        Key::Plugins,
        Key::Messages,
        Key::MaxTokens,
        Key::MaxCompletionTokens,
        Key::Tools,
        Key::Functions,
        Key::ResponseFormat,
        Key::Input,
        Key::Instructions,
        Key::System,
        Key::MaxOutputTokens,
        Key::Text,
        Key::OutputConfig,
        Key::OutputFormat,
        Key::Provider,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::Model => "model",
            Key::Models => "models",
            Key::Stream => "stream",
            Key::Plugins => "plugins",
            Key::Messages => "messages",
            Key::MaxTokens => "max_tokens",
            Key::MaxCompletionTokens => "max_completion_tokens",
            Key::Tools => "tools",
            Key::Functions => "functions",
            Key::ResponseFormat => "response_format",
            Key::Input => "input",
            Key::Instructions => "instructions",
            Key::System => "system",
            Key::MaxOutputTokens => "max_output_tokens",
            Key::Text => "text",
            Key::OutputConfig => "output_config",
            Key::OutputFormat => "output_format",
            Key::Provider => "provider",
        }
    }

    /// The key named `name`. Called for every member of every body: a `match` on the names
    /// compiles to inline comparisons. (A linear search over [`ALL`](Self::ALL), which the
    /// compiler made a jump on the length for ten keys, cost about 280 instructions more for
    /// the payload bench's 1 KiB body with fifteen; a dispatch on the length and first two
    /// bytes, about 20 more.)
    fn find(name: &[u8]) -> Option<Key> {
        Some(match name {
            b"model" => Key::Model,
            b"models" => Key::Models,
            b"stream" => Key::Stream,
            b"plugins" => Key::Plugins,
            b"messages" => Key::Messages,
            b"max_tokens" => Key::MaxTokens,
            b"max_completion_tokens" => Key::MaxCompletionTokens,
            b"tools" => Key::Tools,
            b"functions" => Key::Functions,
            b"response_format" => Key::ResponseFormat,
            b"input" => Key::Input,
            b"instructions" => Key::Instructions,
            b"system" => Key::System,
            b"max_output_tokens" => Key::MaxOutputTokens,
            b"text" => Key::Text,
            b"output_config" => Key::OutputConfig,
            b"output_format" => Key::OutputFormat,
            b"provider" => Key::Provider,
            _ => return None,
        })
    }
}

/// What one pass over the top-level object finds.
struct TopLevel {
    open: usize,
    members: usize,
    found: [Option<MemberSpan>; Key::ALL.len()],
    duplicate: Option<Key>,
    /// `provider` is repeated: refused by the auto router only, which reads it (a request it
    /// does not route passes as before).
    provider_twice: bool,
    /// End of the last member's value.
    prev_end: Option<usize>,
    /// The last member, when it is one the router reads (its `next_start` is still open).
    prev_key: Option<Key>,
}

impl TopLevel {
    /// An object whose `{` ends at `open`.
    fn new(open: usize) -> Self {
        Self {
            open,
            members: 0,
            found: [None; Key::ALL.len()],
            duplicate: None,
            provider_twice: false,
            prev_end: None,
            prev_key: None,
        }
    }

    /// Records the next member: its key and its value, `start..end`.
    fn push(&mut self, bytes: &[u8], name: &str, start: usize, end: usize) {
        // Between two members there is only whitespace and one comma.
        let key_start = match self.prev_end {
            None => skip_ws(bytes, self.open),
            Some(prev) => {
                let comma = skip_ws(bytes, prev);
                skip_ws(bytes, comma + 1)
            }
        };
        self.push_at(key_start, name.as_bytes(), start, end);
    }

    /// [`push`](Self::push) for a caller that knows where the key starts (its opening quote).
    fn push_at(&mut self, key_start: usize, name: &[u8], start: usize, end: usize) {
        if let Some(span) = self.prev_key.and_then(|k| self.found[k as usize].as_mut()) {
            span.next_start = Some(key_start);
        }
        self.prev_key = Key::find(name);
        if let Some(key) = self.prev_key {
            let slot = &mut self.found[key as usize];
            if slot.is_some() {
                if key == Key::Provider {
                    self.provider_twice = true;
                } else {
                    self.duplicate.get_or_insert(key);
                }
                self.prev_key = None;
            } else {
                let span = MemberSpan {
                    key_start,
                    value: (start, end),
                    prev_end: self.prev_end,
                    next_start: None,
                };
                *slot = Some(span);
            }
        }
        self.prev_end = Some(end);
        self.members += 1;
    }
}

/// Walks the top-level object with serde_json, recording the span of every member the router
/// reads: the path that reports what is wrong with a body [`scan`] does not vouch for.
struct TopVisitor<'de> {
    text: &'de str,
}

impl<'de> Visitor<'de> for TopVisitor<'de> {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let bytes = self.text.as_bytes();
        let base = self.text.as_ptr() as usize;
        // `visit_map` is called on a `{`, the first byte that is not whitespace.
        let mut top = TopLevel::new(skip_ws(bytes, 0) + 1);
        while let Some(Str(name)) = map.next_key::<Str<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            let start = offset(raw.get(), base);
            top.push(bytes, &name, start, start + raw.get().len());
        }
        Ok(top)
    }
}

/// The offset in the body of `s`, a string borrowed from the body starting at address `base`
/// (serde_json's `StrRead` only borrows from its input, so `s` lies inside it).
fn offset(s: &str, base: usize) -> usize {
    s.as_ptr() as usize - base
}

/// The offset of the first byte at or after `at` that is not JSON whitespace.
fn skip_ws(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// serde_json's nesting limit: arrays and objects deeper than this are refused.
const MAX_DEPTH: usize = 128;

/// The offset of the first bracket nested deeper than [`MAX_DEPTH`] in valid JSON, if any.
///
/// serde_json skips a borrowed [`RawValue`] without recursion, hence without its recursion
/// limit; this restores the limit. Strings, which hold most of a prompt's bytes, are skipped
/// with `memchr`.
fn too_deep(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = json.get(at) {
        match b {
            b'"' => {
                at += 1;
                loop {
                    let rest = json.get(at..)?;
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(i) if rest[i] == b'\\' => at += i + 2,
                        Some(i) => {
                            at += i + 1;
                            break;
                        }
                        None => return None,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    None
}

/// Reads `raw` as `T`, treating `null` as absent; a value of another type is `Err(())`.
fn decode<'de, T: Deserialize<'de>>(raw: &'de str) -> Result<Option<T>, ()> {
    serde_json::from_str::<Option<T>>(raw).map_err(|_| ())
}

/// The value of a JSON string without escapes, read off its raw text (already validated as
/// JSON): a model name usually is one, and a serde_json decoder per field cost about 300
/// instructions. `None` for anything else, which takes [`decode`].
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

thread_local! {
    /// The models of requests parsed lately on this thread.
    static MODELS: RefCell<Recent<Arc<str>>> = const { RefCell::new(Recent::new()) };
}

/// A model named as lately on this thread (the usual request of a gateway names one of a few
/// models), shared: its raw value (a JSON string without escapes, quotes included) equals a
/// remembered one. Saves the request the model's allocation, its `from_utf8` and its free
/// (about 0.4k instructions). `None` for any other value, which is decoded.
fn recent_model(raw: &[u8]) -> Option<Arc<str>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // Every remembered model is a plain string (no `\`): equal bytes are a plain string too.
    recent::with(&MODELS, |models| {
        models.find(|model| model.as_bytes() == inner).cloned()
    })
}

/// `model` (a plain string, no escapes) shared, and remembered for [`recent_model`] when it
/// is short.
fn remember_model(model: &str) -> Arc<str> {
    let shared = Arc::<str>::from(model);
    if model.len() <= RECENT_MODEL_MAX {
        recent::with(&MODELS, |models| {
            models.keep(Arc::clone(&shared));
            Some(())
        });
    }
    shared
}

/// A JSON number made of digits only (validated JSON: no leading zero), read without a
/// decoder, off the bytes (no `from_utf8` of them). `None` for anything else (a fraction, an
/// exponent, a sign, too many digits), which takes [`decode`].
pub(crate) fn plain_u64(raw: &(impl AsRef<[u8]> + ?Sized)) -> Option<u64> {
    let raw = raw.as_ref();
    if raw.is_empty() || raw.len() > 19 {
        return None;
    }
    // 19 digits stay below `u64::MAX`.
    raw.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// What an object says of one field the router reads.
enum Head<T> {
    /// The value is not an object, the field is absent, `null`, or not of the type read (the
    /// upstream judges it).
    Absent,
    Value(T),
    /// Given twice: parsers disagree on which wins (the last, for Python and JavaScript; the
    /// first, for some others), so it is refused like a repeated top-level key.
    Twice,
}

/// Whether `raw`, a JSON value, is an array with at least one element.
fn is_non_empty_array(raw: &[u8]) -> bool {
    raw.strip_prefix(b"[")
        .is_some_and(|rest| rest.trim_ascii_start() != b"]")
}

/// Reads the field `name` of `value`, a JSON value already validated, as a `T` (a [`Str`],
/// or a `&RawValue` to look into).
fn head_field<'de, T: Deserialize<'de>>(value: &'de str, name: &str) -> Head<T> {
    if !value.starts_with('{') {
        return Head::Absent;
    }
    serde_json::Deserializer::from_str(value)
        .deserialize_map(HeadVisitor {
            name,
            value: PhantomData,
        })
        .unwrap_or(Head::Absent)
}

struct HeadVisitor<'n, T> {
    name: &'n str,
    value: PhantomData<fn() -> T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for HeadVisitor<'_, T> {
    type Value = Head<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<T>, A::Error> {
        let mut found = None;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            if key != self.name {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw: &'de RawValue = map.next_value()?;
            if found.is_some() {
                // serde_json wants the whole object read.
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Head::Twice);
            }
            found = Some(decode::<T>(raw.get()).ok().flatten());
        }
        Ok(found.flatten().map_or(Head::Absent, Head::Value))
    }
}

/// Reads an array (or `null`, as no entry) element by element, mapping each with `each`, and
/// answers `too_many` at the first entry past `max`: a long array is refused before it is
/// stored (the rest is only skipped).
struct CappedSeq<T, F> {
    max: usize,
    too_many: PayloadError,
    each: F,
    entry: PhantomData<fn() -> T>,
}

impl<'de, T, U, F> Visitor<'de> for CappedSeq<T, F>
where
    T: Deserialize<'de>,
    F: FnMut(T) -> U,
{
    type Value = Result<Vec<U>, PayloadError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(self.max));
        while let Some(entry) = seq.next_element::<T>()? {
            if entries.len() == self.max {
                // serde_json refuses a sequence its visitor leaves unfinished, which would turn
                // "too many entries" into "not an array": skip the rest, decoding nothing.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Err(self.too_many));
            }
            entries.push((self.each)(entry));
        }
        Ok(Ok(entries))
    }
}

/// Decodes an array member with [`CappedSeq`]; a value that is not an array (or `null`) is
/// `invalid`.
fn capped_field<'de, T, U>(
    member: Option<(MemberSpan, &'de str)>,
    max: usize,
    too_many: PayloadError,
    invalid: PayloadError,
    each: impl FnMut(T) -> U,
) -> Result<Option<Field<Vec<U>>>, PayloadError>
where
    T: Deserialize<'de>,
{
    let Some((span, raw)) = member else {
        return Ok(None);
    };
    let visitor = CappedSeq {
        max,
        too_many,
        each,
        entry: PhantomData,
    };
    let value = serde_json::Deserializer::from_str(raw)
        .deserialize_any(visitor)
        .map_err(|_| invalid)??;
    Ok(Some(Field { span, value }))
}

impl ChatRequest {
    /// Parses a body with [`Limits::default`].
    ///
    /// Refuses (see [`PayloadError`]) a body that is not UTF-8, not exactly one JSON object,
    /// repeats a key the router reads, or gives `model`, `models`, `stream` or `plugins` the
    /// wrong type. `messages` is not looked into until [`messages`](Self::messages) is called.
    pub fn parse(body: Bytes) -> Result<Self, PayloadError> {
        Self::parse_with(body, &Limits::default())
    }

    /// Parses a body with the given limits.
    pub fn parse_with(body: Bytes, limits: &Limits) -> Result<Self, PayloadError> {
        // The scan checks UTF-8 as it goes: a body it vouches for is UTF-8, and only the few
        // members decoded below are made `&str` (`from_utf8` over the whole body was about 230
        // instructions of a small request's 3,900).
        let mut top = TopLevel::new(0);
        if scan::top_level(&body, &mut top).is_none() {
            let text = std::str::from_utf8(&body).map_err(|err| PayloadError::NotUtf8 {
                valid_up_to: err.valid_up_to(),
            })?;
            top = Self::top_level_checked(text)?;
        }
        if let Some(key) = top.duplicate {
            return Err(PayloadError::DuplicateKey { key: key.name() });
        }
        let base = body.as_ptr() as usize;
        let found = |key: Key| top.found[key as usize];
        let value = |span: MemberSpan| body.get(span.value.0..span.value.1).unwrap_or_default();
        // A member with its value as text. A value starts and ends on ASCII bytes of a body
        // known to be UTF-8, so the `from_utf8` of it never fails (if it did, "" would make
        // an invalid field, not a panic).
        let member = |key: Key| {
            found(key).map(|span| (span, std::str::from_utf8(value(span)).unwrap_or_default()))
        };
        let invalid = |field, expected| PayloadError::InvalidField { field, expected };

        let model = match found(Key::Model) {
            None => None,
            Some(span) => {
                let value = match recent_model(value(span)) {
                    Some(model) => Some(model),
                    None => {
                        let raw = std::str::from_utf8(value(span)).unwrap_or_default();
                        match plain_string(raw) {
                            Some(model) => Some(remember_model(model)),
                            None => decode::<Str<'_>>(raw)
                                .map_err(|()| invalid("model", "a string"))?
                                .map(|Str(s)| Arc::from(s)),
                        }
                    }
                };
                // `""` names no model, as `null` does: the request is not routed (an upstream
                // that picks a default model when none is named, as OpenRouter does, still can).
                let value = value.filter(|model| !model.is_empty());
                if value
                    .as_ref()
                    .is_some_and(|model| model.len() > MAX_MODEL_ID_BYTES)
                {
                    return Err(invalid("model", MODEL_ID_TOO_LONG));
                }
                Some(Field { span, value })
            }
        };
        let models = capped_field(
            member(Key::Models),
            limits.max_models,
            PayloadError::TooManyModels {
                max: limits.max_models,
            },
            invalid("models", "an array of strings"),
            |Str(model)| Text::new(model, base),
        )?;
        // Unlike `"model": ""`, an entry of `models` has no "no model" to mean: it would be
        // sent upstream as `{"model":""}` once the models before it failed.
        for id in models.iter().flat_map(|models| models.value.iter()) {
            match id.len() {
                0 => return Err(invalid("models", MODEL_ID_EMPTY)),
                len if len > MAX_MODEL_ID_BYTES => {
                    return Err(invalid("models", MODEL_ID_TOO_LONG))
                }
                _ => {}
            }
        }
        let plugins = capped_field(
            member(Key::Plugins),
            limits.max_plugins,
            PayloadError::TooManyPlugins {
                max: limits.max_plugins,
            },
            invalid("plugins", "an array"),
            |raw: &RawValue| PluginEntry::new(raw, base),
        )?
        .map(|Field { span, value }| {
            let value = value.into_iter().collect::<Result<_, _>>()?;
            Ok::<_, PayloadError>(Field { span, value })
        })
        .transpose()?;
        let stream = match member(Key::Stream) {
            None => false,
            Some((_, raw)) => decode::<bool>(raw)
                .map_err(|()| invalid("stream", "a boolean"))?
                .unwrap_or(false),
        };
        let number = |key| {
            let raw = value(found(key)?);
            plain_u64(raw).or_else(|| decode::<u64>(std::str::from_utf8(raw).ok()?).ok()?)
        };
        // The Responses API's `max_output_tokens` is the same reserve under another name.
        let max_tokens = number(Key::MaxCompletionTokens)
            .or_else(|| number(Key::MaxTokens))
            .or_else(|| number(Key::MaxOutputTokens));
        let non_empty_array = |key| {
            found(key)
                .filter(|&span| is_non_empty_array(value(span)))
                .map(|span| span.value.0..span.value.1)
        };
        let tools = non_empty_array(Key::Tools).or_else(|| non_empty_array(Key::Functions));
        // All read, so that a repeated `type` is refused whichever asks for a schema: chat
        // completions' `response_format`, the Responses API's `text.format`, Anthropic's
        // `output_config.format` and the structured-outputs beta's `output_format` it replaced.
        let schema_asks = [
            member(Key::ResponseFormat).map(|(_, raw)| is_json_schema(raw, "response_format.type")),
            member(Key::Text)
                .map(|(_, raw)| format_wants_json_schema(raw, ("text.format", "text.format.type"))),
            member(Key::OutputConfig).map(|(_, raw)| {
                let keys = ("output_config.format", "output_config.format.type");
                format_wants_json_schema(raw, keys)
            }),
            member(Key::OutputFormat).map(|(_, raw)| is_json_schema(raw, "output_format.type")),
        ];
        let mut wants_json_schema = false;
        for ask in schema_asks.into_iter().flatten() {
            wants_json_schema |= ask.map_err(|key| PayloadError::DuplicateKey { key })?;
        }
        let range = |key| found(key).map(|span: MemberSpan| span.value.0..span.value.1);
        let messages = range(Key::Messages);
        let other_shapes = OtherShapes {
            input: range(Key::Input),
            instructions: range(Key::Instructions),
            system: range(Key::System),
        };
        let other_shapes = other_shapes.any().then(|| Box::new(other_shapes));

        Ok(Self {
            open: top.open,
            members: top.members,
            model,
            models,
            plugins: plugins.map(Box::new),
            messages,
            other_shapes,
            stream,
            max_tokens,
            tools,
            wants_json_schema,
            provider: range(Key::Provider),
            provider_twice: top.provider_twice,
            bytes: body,
        })
    }

    /// The top-level members, with serde_json's verdict on a body the fast [`scan`] did not
    /// vouch for: its error when it is invalid or nested too deep.
    fn top_level_checked(text: &str) -> Result<TopLevel, PayloadError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let top = de
            .deserialize_map(TopVisitor { text })
            .and_then(|top| de.end().map(|()| top))
            .map_err(|err| match err.classify() {
                serde_json::error::Category::Data => PayloadError::NotAnObject,
                _ => PayloadError::json(&err),
            })?;
        if let Some(at) = too_deep(text.as_bytes()) {
            return Err(PayloadError::too_deep(text, at));
        }
        Ok(top)
    }

    /// The body, exactly as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The top-level `model`, decoded (`None` when absent, `null` or `""`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_ref()?.value.as_deref()
    }

    /// [`model`](Self::model), shared.
    pub(crate) fn model_shared(&self) -> Option<&Arc<str>> {
        self.model.as_ref()?.value.as_ref()
    }

    /// The entries of `models`, decoded, in order (none when absent or `null`).
    pub fn models(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let models = self.models.as_ref().map_or(&[][..], |f| &f.value[..]);
        models.iter().map(|model| model.get(&self.bytes))
    }

    /// Whether the body has a top-level `models` key (even `[]` or `null`): a body that does
    /// must have it removed before it reaches an upstream that does not know it.
    pub fn has_models(&self) -> bool {
        self.models.is_some()
    }

    /// Whether `stream` is `true`.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// `max_completion_tokens` if it is a non-negative integer, else `max_tokens` if it is one,
    /// else the Responses API's `max_output_tokens` if it is one.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// Whether `tools` (or the legacy `functions`) is a non-empty array.
    pub fn has_tools(&self) -> bool {
        self.tools.is_some()
    }

    /// The JSON of `tools` (or the legacy `functions`) as sent, when [`has_tools`]: the
    /// definitions the model is shown, which count against its context window.
    ///
    /// [`has_tools`]: Self::has_tools
    pub fn tool_definitions(&self) -> Option<&str> {
        let range = self.tools.clone()?;
        std::str::from_utf8(self.bytes.get(range)?).ok()
    }

    /// Whether `response_format` (chat completions), `text.format` (the Responses API) or
    /// `output_config.format` (Anthropic's Messages API; or its beta's `output_format`) is an
    /// object with `"type": "json_schema"`.
    pub fn wants_json_schema(&self) -> bool {
        self.wants_json_schema
    }

    /// The entries of `plugins`, in order (none when absent or `null`).
    pub fn plugins(&self) -> impl Iterator<Item = Plugin<'_>> {
        let entries = self.plugins.as_ref().map_or(&[][..], |f| &f.value[..]);
        entries.iter().enumerate().filter_map(|(index, entry)| {
            let value = self.bytes.get(entry.value.0..entry.value.1)?;
            let raw = serde_json::from_slice::<&RawValue>(value).ok()?;
            Some(Plugin {
                index,
                id: entry
                    .id
                    .as_ref()
                    .map(|id| Cow::Borrowed(id.get(&self.bytes))),
                raw,
            })
        })
    }

    /// The number of entries of `plugins` (0 when absent or `null`).
    pub(crate) fn plugin_count(&self) -> usize {
        self.plugins.as_ref().map_or(0, |f| f.value.len())
    }

    /// The first entry of `plugins` whose `id` is `id`.
    pub fn plugin(&self, id: &str) -> Option<Plugin<'_>> {
        self.plugins()
            .find(|plugin| plugin.id.as_deref() == Some(id))
    }

    /// The raw value of the top-level `provider` (OpenRouter's provider routing options), as
    /// sent: `None` when absent. Refused when the key is repeated: unlike the other keys the
    /// router reads, a repeated `provider` does not fail [`parse`](Self::parse), since only the
    /// auto router reads it.
    pub(crate) fn provider(&self) -> Result<Option<&str>, PayloadError> {
        if self.provider_twice {
            return Err(PayloadError::DuplicateKey { key: "provider" });
        }
        let raw = self.provider.clone().and_then(|r| self.bytes.get(r));
        // A value of a body the parse vouched for is UTF-8 (see `member` in `parse_with`).
        Ok(raw.map(|raw| std::str::from_utf8(raw).unwrap_or_default()))
    }

    /// Decodes `messages` (an empty list when absent or `null`).
    ///
    /// This is the only place the prompt is looked into, so a malformed `messages` is reported
    /// here ([`PayloadError::BadMessages`]) and not by [`parse`](Self::parse).
    pub fn messages(&self) -> Result<Messages<'_>, PayloadError> {
        match &self.messages {
            None => Ok(Messages::default()),
            Some(range) => Messages::parse(self.bytes.get(range.clone()).unwrap_or_default()),
        }
    }

    /// Decodes the prompt, whichever API's shape the body has: the conversation the model
    /// reads, as one list of [`Messages`].
    ///
    /// * `messages` (chat completions, Anthropic's Messages API), else the Responses API's
    ///   `input`: a string is one `user` message; of a list of items, messages are read as
    ///   messages, a `function_call` (or `custom_tool_call`) as an `assistant` message whose
    ///   [`tool_calls`](Message::tool_calls) are its arguments, a `function_call_output` (or
    ///   `custom_tool_call_output`) as a `tool` message, a `computer_call_output` as a `tool`
    ///   message whose screenshot is an [`Image`](Part::Image) part, an `image_generation_call`
    ///   (unless its `result` is `null`) as an `assistant` message with an `Image` part; other
    ///   items (`reasoning`, references, other built-in tools' calls, a `code_interpreter_call`
    ///   included) carry nothing the router reads and are skipped.
    /// * Anthropic's `system` and the Responses API's `instructions` (a string, or a list of
    ///   text blocks) come first, as a `system` message each: the model reads them (they count
    ///   toward the window), and they are not the user's words. A value of another type reads
    ///   as absent, as for every field the router only peeks at.
    ///
    /// A body with no prompt gives an empty list (system text alone is no prompt). A body with both `messages` and `input` is
    /// refused ([`PayloadError::AmbiguousPrompt`]): no API reads both, and the router must not
    /// read one while the upstream reads the other. A malformed `messages` or `input` is
    /// [`PayloadError::BadMessages`] or [`PayloadError::BadInput`].
    ///
    /// For a chat-completions body (no `input`, `system` or `instructions`) this is
    /// [`messages`](Self::messages), at the same cost.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_llm_router::payload::{ChatRequest, Part};
    ///
    /// // OpenAI's Responses API.
    /// let req = ChatRequest::parse(Bytes::from_static(br#"{"model":"auto",
    ///     "instructions":"Be brief.",
    ///     "input":[{"role":"user","content":[{"type":"input_text","text":"What is this?"},
    ///         {"type":"input_image","image_url":"https://example.com/cat.png"}]}],
    ///     "max_output_tokens":500}"#))?;
    /// let prompt = req.prompt()?;
    /// assert_eq!(prompt.len(), 2);
    /// assert_eq!(prompt.iter().next().unwrap().role, "system");
    /// assert_eq!(prompt.image_count(), 1);
    /// assert_eq!(prompt.last_user_text().as_deref(), Some("What is this?"));
    /// assert_eq!(req.max_tokens(), Some(500));
    ///
    /// // Anthropic's Messages API.
    /// let req = ChatRequest::parse(Bytes::from_static(br#"{"model":"auto","max_tokens":1024,
    ///     "system":[{"type":"text","text":"Be brief."}],
    ///     "messages":[{"role":"user","content":[
    ///         {"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
    ///         {"type":"text","text":"What is this?"}]}]}"#))?;
    /// let prompt = req.prompt()?;
    /// assert_eq!(prompt.len(), 2);
    /// assert_eq!(prompt.text_chars(), "Be brief.".len() + "What is this?".len());
    /// assert_eq!(prompt.image_count(), 1);
    /// # Ok::<(), tower_llm_router::payload::PayloadError>(())
    /// ```
    pub fn prompt(&self) -> Result<Messages<'_>, PayloadError> {
        let Some(other) = self.other_shapes.as_deref() else {
            return self.messages();
        };
        let value = |range: &Option<Range<usize>>| {
            let range = range.clone()?;
            let value = self.bytes.get(range)?;
            (value != b"null").then_some(value)
        };
        let conversation = match (value(&self.messages), value(&other.input)) {
            (Some(_), Some(_)) => return Err(PayloadError::AmbiguousPrompt),
            (Some(messages), None) => Messages::parse(messages)?,
            (None, Some(input)) => Messages::parse_input(input)?,
            (None, None) => Messages::default(),
        };
        if conversation.is_empty() {
            // System text alone is no prompt.
            return Ok(conversation);
        }
        let system = [&other.system, &other.instructions].map(value);
        Ok(conversation.after_system(system.into_iter().flatten()))
    }

    /// Starts a rewrite of the body. Nothing is copied until
    /// [`to_segments`](Splice::to_segments) or [`to_bytes`](Splice::to_bytes).
    pub fn splice(&self) -> Splice<'_> {
        Splice::new(self)
    }
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRequest")
            .field("len", &self.bytes.len())
            .field("model", &self.model())
            .field("models", &self.models().collect::<Vec<_>>())
            .field("stream", &self.stream)
            .field("max_tokens", &self.max_tokens)
            .field("has_tools", &self.has_tools())
            .field("wants_json_schema", &self.wants_json_schema)
            .field(
                "plugins",
                &self.plugins.as_ref().map_or(0, |p| p.value.len()),
            )
            .finish_non_exhaustive()
    }
}

/// An entry of the top-level `plugins` array (OpenRouter's per-request plugin options).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::ChatRequest;
///
/// let req = ChatRequest::parse(Bytes::from_static(
///     br#"{"plugins":[{"id":"web"},{"id":"auto-router","allowed_models":["openai/*"]}]}"#,
/// ))?;
/// let plugin = req.plugin("auto-router").unwrap();
/// assert_eq!(plugin.index, 1);
/// #[derive(serde::Deserialize)]
/// struct Options { allowed_models: Vec<String> }
/// let options: Options = plugin.parse()?;
/// assert_eq!(options.allowed_models, ["openai/*"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Plugin<'a> {
    /// Its position in `plugins` (what [`Splice::remove_plugin`] takes).
    pub index: usize,
    /// Its `id`, when it is an object with a string `id`.
    pub id: Option<Cow<'a, str>>,
    /// The entry as sent.
    pub raw: &'a RawValue,
}

impl<'a> Plugin<'a> {
    /// Deserialises the entry, e.g. into the options struct of the plugin it configures.
    pub fn parse<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.raw.get())
    }
}
