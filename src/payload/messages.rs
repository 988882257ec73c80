//! The prompt: `messages`, decoded on demand.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::without_position;
use super::PayloadError;

/// The decoded `messages` of a request, from [`ChatRequest::messages`](super::ChatRequest::messages).
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

/// One entry of `messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its `role` (`system`, `developer`, `user`, `assistant`, `tool`, ...).
    pub role: Cow<'a, str>,
    /// Its `content`: one [`Part::Text`] for a string, one part per entry for an array, none
    /// for `null` or an absent content.
    pub parts: Vec<Part<'a>>,
    /// The JSON of its calls as sent: a non-empty `tool_calls` array, else a legacy
    /// `function_call`. Their arguments count against the context window like any text.
    pub tool_calls: Option<&'a str>,
}

impl Message<'_> {
    /// Whether it carries a non-empty `tool_calls` array or a legacy `function_call`.
    pub fn has_tool_calls(&self) -> bool {
        self.tool_calls.is_some()
    }
}

/// A part of a message's content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part<'a> {
    /// `{"type":"text","text":...}`, or the whole content when it is a string.
    Text(Cow<'a, str>),
    /// `{"type":"image_url",...}`.
    Image,
    /// `{"type":"input_audio",...}`.
    Audio,
    /// `{"type":"video_url",...}` (OpenRouter's video input), or `{"type":"input_video",...}`.
    Video,
    /// `{"type":"file",...}`.
    File,
    /// A part of any other type (`refusal`, provider extensions, ...).
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

    /// The number of characters (Unicode scalar values) of text, in all messages.
    pub fn text_chars(&self) -> usize {
        self.texts(|_| true).map(|text| text.chars().count()).sum()
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
            parts.push(part.into_part()?);
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

/// A content part as sent: only `type` and `text` are read.
#[derive(Deserialize)]
struct WirePart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Lossy<'a>>,
}

impl<'a> WirePart<'a> {
    fn into_part<E: de::Error>(self) -> Result<Part<'a>, E> {
        Ok(match &*self.kind {
            "text" => match self.text {
                Some(Lossy(text)) => Part::Text(text),
                None => return Err(E::missing_field("text")),
            },
            "image_url" => Part::Image,
            "input_audio" => Part::Audio,
            "video_url" | "input_video" => Part::Video,
            "file" => Part::File,
            _ => Part::Other,
        })
    }
}
