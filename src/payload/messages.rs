//! The prompt: `messages`, or the Responses API's `input`, decoded on demand.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::without_position;
use super::PayloadError;

/// The decoded `messages` of a request, from [`ChatRequest::messages`](super::ChatRequest::messages),
/// or its whole prompt, whichever API's shape it has, from
/// [`ChatRequest::prompt`](super::ChatRequest::prompt).
///
/// Strings borrow from the request's buffer when they hold no escape.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::{ChatRequest, Part};
///
/// let req = ChatRequest::parse(Bytes::from_static(br#"{"messages":[
///     {"role":"system","content":"Be brief."},
///     {"role":"user","content":[
///         {"type":"text","text":"What is in"},
///         {"type":"image_url","image_url":{"url":"https://example.com/cat.png"}},
///         {"type":"text","text":"this picture?"}]}
/// ]}"#))?;
/// let messages = req.messages()?;
/// assert_eq!(messages.len(), 2);
/// assert_eq!(messages.image_count(), 1);
/// assert_eq!(messages.last_user_text().as_deref(), Some("What is in\nthis picture?"));
/// assert_eq!(messages.text_chars(), "Be brief.".len() + "What is in".len() + "this picture?".len());
/// let first = messages.iter().next().unwrap();
/// assert_eq!(first.role, "system");
/// assert!(matches!(&first.parts[..], [Part::Text(text)] if text == "Be brief."));
/// # Ok::<(), tower_llm_router::payload::PayloadError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Messages<'a> {
    list: Vec<Message<'a>>,
}

/// One entry of `messages` (or an item of the Responses API's `input`, or the system text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its `role` (`system`, `developer`, `user`, `assistant`, `tool`, ...). A Responses API
    /// `function_call` item reads as `assistant`, a `function_call_output` as `tool`.
    pub role: Cow<'a, str>,
    /// Its `content`: one [`Part::Text`] for a string, one part per entry for an array, none
    /// for `null` or an absent content.
    pub parts: Vec<Part<'a>>,
    /// The JSON of its calls as sent: a non-empty `tool_calls` array, else a legacy
    /// `function_call`, or a Responses API call item's `arguments` (`input` for a
    /// `custom_tool_call`). Their arguments count against the context window like any text.
    pub tool_calls: Option<&'a str>,
}

impl Message<'_> {
    /// Whether it carries a non-empty `tool_calls` array or a legacy `function_call`.
    pub fn has_tool_calls(&self) -> bool {
        self.tool_calls.is_some()
    }
}

/// A part of a message's content, in any of the APIs' shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part<'a> {
    /// `{"type":"text","text":...}` (chat completions, Anthropic), `input_text` or
    /// `output_text` (the Responses API), or the whole content when it is a string.
    Text(Cow<'a, str>),
    /// `{"type":"image_url",...}`, the Responses API's `input_image` (and the
    /// `computer_screenshot` of a `computer_call_output` item, the image of an
    /// `image_generation_call` item), Anthropic's `image`.
    Image,
    /// `{"type":"input_audio",...}`.
    Audio,
    /// `{"type":"video_url",...}` (OpenRouter's video input), or `{"type":"input_video",...}`.
    Video,
    /// `{"type":"file",...}`, the Responses API's `input_file`, Anthropic's `document`.
    File,
    /// The text of a tool's result inside a message (Anthropic's `tool_result` blocks, whose
    /// images are read as [`Image`](Part::Image) parts beside it): the model reads it, as
    /// it reads a `tool` message, but it is not the user's words.
    ToolResult(Cow<'a, str>),
    /// The JSON of a call inside a message (Anthropic's `tool_use` block: its `input`), as
    /// sent: it counts against the context window, as
    /// [`Message::tool_calls`] does.
    ToolCall(&'a str),
    /// A part of any other type (`refusal`, `thinking`, provider extensions, ...).
    Other,
}

impl<'a> Messages<'a> {
    /// Decodes a `messages` value (`null` is no message).
    pub(super) fn parse(value: &'a [u8]) -> Result<Self, PayloadError> {
        let mut de = serde_json::Deserializer::from_slice(value);
        let mut failed_at = None;
        let list = de
            .deserialize_option(ListVisitor {
                failed_at: &mut failed_at,
            })
            .map_err(|err| PayloadError::BadMessages {
                index: failed_at,
                reason: without_position(&err),
            })?;
        Ok(Self { list })
    }

    /// The messages, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Message<'a>> {
        self.list.iter()
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is no message.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The number of image parts, in all messages.
    pub fn image_count(&self) -> usize {
        self.parts()
            .filter(|part| matches!(part, Part::Image))
            .count()
    }

    /// The number of audio parts (`input_audio`), in all messages.
    pub fn audio_count(&self) -> usize {
        self.parts()
            .filter(|part| matches!(part, Part::Audio))
            .count()
    }

    /// The number of video parts (`video_url`, `input_video`), in all messages.
    pub fn video_count(&self) -> usize {
        self.parts()
            .filter(|part| matches!(part, Part::Video))
            .count()
    }

    /// The number of characters (Unicode scalar values) of text, in all messages: their
    /// [`Text`](Part::Text) and [`ToolResult`](Part::ToolResult) parts.
    pub fn text_chars(&self) -> usize {
        self.parts()
            .filter_map(|part| match part {
                Part::Text(text) | Part::ToolResult(text) => Some(text.chars().count()),
                _ => None,
            })
            .sum()
    }

    /// The text of the last `user` message, its text parts joined with `\n`; `None` when there
    /// is no user message or it holds no text.
    pub fn last_user_text(&self) -> Option<Cow<'a, str>> {
        let last = self.list.iter().rfind(|m| m.role == "user")?;
        join(last.parts.iter().filter_map(Part::text))
    }

    /// The text of every `user` message, joined with `\n` (empty when there is none).
    pub fn user_text(&self) -> Cow<'a, str> {
        join(self.texts(|m| m.role == "user")).unwrap_or_default()
    }

    /// Decodes the Responses API's `input`: a string (one `user` message), a list of items,
    /// or `null` (no message).
    pub(super) fn parse_input(value: &'a [u8]) -> Result<Self, PayloadError> {
        let mut de = serde_json::Deserializer::from_slice(value);
        let mut failed_at = None;
        let list = de
            .deserialize_option(InputVisitor {
                failed_at: &mut failed_at,
            })
            .map_err(|err| PayloadError::BadInput {
                index: failed_at,
                reason: without_position(&err),
            })?;
        Ok(Self { list })
    }

    /// These messages after one `system` message for each of `system` (JSON values: a string
    /// or a list of text blocks). A value of another type reads as absent: the router only
    /// peeks at it, and the upstream judges it.
    pub(super) fn after_system(mut self, system: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut leading: Vec<Message<'a>> = system
            .filter_map(|value| serde_json::from_slice::<Content<'a>>(value).ok())
            .map(|Content(parts)| Message {
                role: Cow::Borrowed("system"),
                parts,
                tool_calls: None,
            })
            .collect();
        if !leading.is_empty() {
            leading.append(&mut self.list);
            self.list = leading;
        }
        self
    }

    fn parts(&self) -> impl Iterator<Item = &Part<'a>> {
        self.list.iter().flat_map(|m| m.parts.iter())
    }

    fn texts(&self, keep: impl Fn(&Message<'a>) -> bool) -> impl Iterator<Item = &Cow<'a, str>> {
        self.list
            .iter()
            .filter(move |m| keep(m))
            .flat_map(|m| m.parts.iter().filter_map(Part::text))
    }
}

impl<'a, 'm> IntoIterator for &'m Messages<'a> {
    type Item = &'m Message<'a>;
    type IntoIter = std::slice::Iter<'m, Message<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> Part<'a> {
    /// The text of a [`Part::Text`].
    pub fn text(&self) -> Option<&Cow<'a, str>> {
        match self {
            Part::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Everything of the part the model reads as text: a [`Text`](Part::Text), a
    /// [`ToolResult`](Part::ToolResult), the JSON of a [`ToolCall`](Part::ToolCall).
    pub fn read_text(&self) -> Option<&str> {
        match self {
            Part::Text(text) | Part::ToolResult(text) => Some(text),
            Part::ToolCall(json) => Some(json),
            _ => None,
        }
    }
}

/// Joins texts with `\n`, borrowing when there is only one.
fn join<'a, 'b>(mut texts: impl Iterator<Item = &'b Cow<'a, str>>) -> Option<Cow<'a, str>>
where
    'a: 'b,
{
    let first = texts.next()?;
    let Some(second) = texts.next() else {
        return Some(first.clone());
    };
    let mut joined = String::with_capacity(first.len() + second.len() + 1);
    joined.push_str(first);
    for text in std::iter::once(second).chain(texts) {
        joined.push('\n');
        joined.push_str(text);
    }
    Some(Cow::Owned(joined))
}

/// Reads the array, remembering which entry failed.
struct ListVisitor<'f> {
    failed_at: &'f mut Option<usize>,
}

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = Vec<Message<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(1024));
        loop {
            *self.failed_at = Some(list.len());
            match seq.next_element::<WireMessage<'de>>()? {
                Some(message) => list.push(message.into()),
                None => break,
            }
        }
        *self.failed_at = None;
        Ok(list)
    }
}

/// A message as sent; unknown fields are skipped.
#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Content<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
}

impl<'a> From<WireMessage<'a>> for Message<'a> {
    fn from(wire: WireMessage<'a>) -> Self {
        let calls = wire
            .tool_calls
            .map(RawValue::get)
            .filter(|calls| super::is_non_empty_array(calls.as_bytes()));
        let function_call = wire
            .function_call
            .map(RawValue::get)
            .filter(|call| *call != "null");
        Message {
            role: wire.role,
            parts: wire.content.0,
            tool_calls: calls.or(function_call),
        }
    }
}

/// `content`: a string, an array of parts, or `null`.
#[derive(Default)]
struct Content<'a>(Vec<Part<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of content parts or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Content<'de>, E> {
        Ok(Content(Vec::new()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Content<'de>, E> {
        Ok(Content(Vec::new()))
    }

    /// A string (read as bytes, see [`Lossy`]) or an array of parts.
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Content<'de>, D::Error> {
        d.deserialize_bytes(self)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Content<'de>, E> {
        Ok(Content(vec![Part::Text(lossy_borrowed(v))]))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Content<'de>, E> {
        Ok(Content(vec![Part::Text(lossy_owned(v))]))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Content<'de>, E> {
        Ok(Content(vec![Part::Text(Cow::Borrowed(v))]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content<'de>, E> {
        Ok(Content(vec![Part::Text(Cow::Owned(v.to_owned()))]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'de>, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(2).min(64));
        while let Some(part) = seq.next_element::<WirePart<'de>>()? {
            part.push_into(&mut parts)?;
        }
        Ok(Content(parts))
    }
}

/// A string of the prompt, read for routing and not forwarded: a lone surrogate escape
/// (`"\ud83d"`, what JavaScript's `JSON.stringify` writes for half an emoji, and Python's and
/// JavaScript's parsers accept) reads as U+FFFD instead of failing the request. serde_json
/// decodes it only as bytes (WTF-8).
struct Lossy<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Lossy<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LossyVisitor;
        impl<'de> Visitor<'de> for LossyVisitor {
            type Value = Lossy<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Lossy<'de>, E> {
                Ok(Lossy(lossy_borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Lossy<'de>, E> {
                Ok(Lossy(lossy_owned(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Lossy<'de>, E> {
                Ok(Lossy(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lossy<'de>, E> {
                Ok(Lossy(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_bytes(LossyVisitor)
    }
}

/// The text of a string's bytes borrowed from the body (so UTF-8: the body was checked), or of
/// a decoded string's.
fn lossy_borrowed(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(String::from_utf8_lossy(v).into_owned()),
    }
}

/// The text of a decoded string's bytes: UTF-8, or WTF-8 when it held a lone surrogate (the
/// fast check first: `from_utf8_lossy` costs several times as much on valid text).
fn lossy_owned(v: &[u8]) -> Cow<'static, str> {
    Cow::Owned(lossy_borrowed(v).into_owned())
}

/// A content part (or content block) as sent: only `type` and `text` are read, and the
/// `input` of an Anthropic `tool_use`, the `content` of a `tool_result`. Those two are taken
/// whole (a `&RawValue` costs one pass over its bytes and accepts any JSON): a part of
/// another type that happens to carry such a field is not refused for its type.
#[derive(Deserialize)]
struct WirePart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Lossy<'a>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

impl<'a> WirePart<'a> {
    /// Adds the part to `parts`: one part, or for a `tool_result` the parts of its content.
    fn push_into<E: de::Error>(self, parts: &mut Vec<Part<'a>>) -> Result<(), E> {
        let part = match &*self.kind {
            "text" | "input_text" | "output_text" => match self.text {
                Some(Lossy(text)) => Part::Text(text),
                None => return Err(E::missing_field("text")),
            },
            "image_url" | "input_image" | "image" => Part::Image,
            "input_audio" => Part::Audio,
            "video_url" | "input_video" => Part::Video,
            "file" | "input_file" | "document" => Part::File,
            "tool_use" => Part::ToolCall(self.input.map_or("", RawValue::get)),
            "tool_result" => {
                if let Some(content) = self.content {
                    push_tool_result(content, parts);
                }
                return Ok(());
            }
            _ => Part::Other,
        };
        parts.push(part);
        Ok(())
    }
}

/// Adds the parts of a `tool_result`'s `content` (a string or a list of blocks): its text as
/// [`Part::ToolResult`], its images and documents as themselves. A content of another shape
/// counts as its JSON, for the window: the upstream judges it.
fn push_tool_result<'a>(content: &'a RawValue, parts: &mut Vec<Part<'a>>) {
    match serde_json::from_str::<Content<'a>>(content.get()) {
        Ok(Content(inner)) => parts.extend(inner.into_iter().map(|part| match part {
            Part::Text(text) => Part::ToolResult(text),
            other => other,
        })),
        Err(_) => parts.push(Part::ToolCall(content.get())),
    }
}

/// Reads the Responses API's `input`, remembering which item failed.
struct InputVisitor<'f> {
    failed_at: &'f mut Option<usize>,
}

impl<'de> Visitor<'de> for InputVisitor<'_> {
    type Value = Vec<Message<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of input items")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    /// A string (read as bytes, see [`Lossy`]) or an array of items.
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }

    // A string reads as a message's string content does.
    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        ContentVisitor.visit_borrowed_bytes(v).map(user_message)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        ContentVisitor.visit_bytes(v).map(user_message)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        ContentVisitor.visit_borrowed_str(v).map(user_message)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        ContentVisitor.visit_str(v).map(user_message)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(1024));
        let mut index = 0;
        loop {
            *self.failed_at = Some(index);
            match seq.next_element::<WireItem<'de>>()? {
                Some(item) => list.extend(item.into_message()?),
                None => break,
            }
            index += 1;
        }
        *self.failed_at = None;
        Ok(list)
    }
}

/// The parts of a `computer_call_output`'s `output`: a `computer_screenshot` (by `image_url`
/// or `file_id`) is an image. An output of another shape is the upstream's to judge: no part.
fn screenshot(output: Option<&RawValue>) -> Vec<Part<'static>> {
    let is_screenshot = output
        .and_then(|raw| serde_json::from_str::<WirePart<'_>>(raw.get()).ok())
        .is_some_and(|part| part.kind == "computer_screenshot");
    match is_screenshot {
        true => vec![Part::Image],
        false => Vec::new(),
    }
}

/// Whether an `image_generation_call` holds an image: not when its `result` is `null` (a
/// generation that failed, or had not finished).
fn holds_generated_image(result: Option<&RawValue>) -> bool {
    result.is_none_or(|raw| raw.get() != "null")
}

/// The only message of an `input` string.
fn user_message(Content(parts): Content<'_>) -> Vec<Message<'_>> {
    vec![Message {
        role: Cow::Borrowed("user"),
        parts,
        tool_calls: None,
    }]
}

/// An item of the Responses API's `input`, as sent. Its fields are taken whole and read once
/// its `type` is known: an item of a type the router does not read (`reasoning`, references,
/// built-in tools' calls, ...) is skipped whatever it holds.
#[derive(Deserialize)]
struct WireItem<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
    /// An `image_generation_call`'s image (base64), `null` when the generation failed: kept
    /// as it is, so that `null` is told from a missing `result` (an item given by `id`).
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    result: Option<&'a RawValue>,
}

/// A field's raw JSON, `null` included (an `Option` alone reads `null` as `None`).
fn raw_even_null<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl<'a> WireItem<'a> {
    /// The message the item is, `None` for an item that carries nothing the router reads.
    fn into_message<E: de::Error>(self) -> Result<Option<Message<'a>>, E> {
        let content = |raw: Option<&'a RawValue>| match raw {
            None => Ok(Vec::new()),
            Some(raw) => serde_json::from_str::<Content<'a>>(raw.get())
                .map(|Content(parts)| parts)
                .map_err(|err| E::custom(without_position(&err))),
        };
        let message = match self.kind.as_deref() {
            // An "easy" input message has no `type`.
            None | Some("message") => Message {
                role: self.role.ok_or_else(|| E::missing_field("role"))?,
                parts: content(self.content)?,
                tool_calls: None,
            },
            Some("function_call" | "custom_tool_call") => Message {
                role: Cow::Borrowed("assistant"),
                parts: Vec::new(),
                tool_calls: self.arguments.or(self.input).map(RawValue::get),
            },
            Some("function_call_output" | "custom_tool_call_output") => Message {
                role: Cow::Borrowed("tool"),
                parts: content(self.output)?,
                tool_calls: None,
            },
            // The screenshot a computer-use turn sends back: the model must see it.
            Some("computer_call_output") => Message {
                role: Cow::Borrowed("tool"),
                parts: screenshot(self.output),
                tool_calls: None,
            },
            // An image the image generation tool made, passed back (with its `result`, or by
            // `id` alone, which the upstream fills in): it is in the model's context. A failed
            // one holds nothing the router reads.
            Some("image_generation_call") if holds_generated_image(self.result) => Message {
                role: Cow::Borrowed("assistant"),
                parts: vec![Part::Image],
                tool_calls: None,
            },
            Some(_) => return Ok(None),
        };
        Ok(Some(message))
    }
}
