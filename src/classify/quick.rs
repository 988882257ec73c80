//! The preamble rule for OpenAI-style chunks read straight from the bytes, without building a
//! JSON tree: OpenAI's first chunk (`{"choices":[{"index":0,"delta":{"role":"assistant",
//! "content":""},"finish_reason":null}],...}`) comes first in nearly every stream, and reading
//! it through serde_json into a tree (UTF-8 checks of every string, an allocation per object and
//! array) cost about 8,000 instructions; by the bytes, about 2,000 (callgrind,
//! `benches/classify.rs`).
//!
//! [`chunk_preamble`] reads a subset of JSON that serde_json reads the same way (printable
//! ASCII without escapes, numbers without exponents, at most 32 levels deep), and answers
//! only for chunks without a `type` member (those are Anthropic's and the Responses API's,
//! left to the tree). Anything outside it (an escape, a non-ASCII byte, an exponent, deep
//! nesting, text that is not JSON at all) gives `None`, and the caller decides with the tree:
//! so the answer is always the tree's.

/// Deeper than this, the reader gives up (serde_json's own limit is 128).
const MAX_DEPTH: u8 = 32;
/// More digits than this in a number's integer or fraction part, the reader gives up (serde_json
/// can refuse a long number as out of range).
const MAX_DIGITS: usize = 19;

/// What the preamble rule reads of a member's value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    /// A string, and whether it is empty.
    String {
        empty: bool,
    },
    /// An array, and whether it is empty.
    Array {
        empty: bool,
    },
    Other,
}

/// Whether `data` is a content-less OpenAI-style chunk (the preamble rule of the
/// [`classify`](super) module docs, for data without a `type`): `None` when the bytes are not
/// in the subset this reader knows, or the chunk has a `type`.
pub(super) fn chunk_preamble(data: &[u8]) -> Option<bool> {
    if !is_plain(data) {
        return None;
    }
    let mut reader = Reader { data, pos: 0 };
    // The last `error` and `choices` count, as in the tree.
    let mut error = false;
    let mut choices = false;
    reader.object(|reader, key| {
        match key {
            b"type" => return None,
            b"error" => error = reader.value(1)? != Kind::Null,
            b"choices" => {
                choices = match reader.peek()? {
                    b'[' => {
                        let mut all = true;
                        reader.array(|reader| {
                            all &= match reader.peek()? {
                                b'{' => reader.choice()?,
                                _ => reader.value(2).map(|_| false)?,
                            };
                            Some(())
                        })?;
                        all
                    }
                    _ => {
                        reader.value(1)?;
                        false
                    }
                }
            }
            _ => {
                reader.value(1)?;
            }
        }
        Some(())
    })?;
    reader.whitespace();
    (reader.pos == data.len()).then_some(!error && choices)
}

/// Printable ASCII without a backslash: a string is its bytes up to the next quote (no escape,
/// control or non-ASCII byte for serde_json to read otherwise or refuse), and the whitespace
/// between tokens is spaces. One pass the compiler vectorises (no early exit).
fn is_plain(data: &[u8]) -> bool {
    !data.iter().fold(false, |bad, &b| {
        bad | !matches!(b, b' '..=b'~') | (b == b'\\')
    })
}

/// Text that [`is_plain`].
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// JSON's whitespace in [plain](is_plain) text: spaces.
    fn whitespace(&mut self) {
        while let Some(b' ') = self.data.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte past whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.whitespace();
        self.data.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// A choice: no `finish_reason` (the last one `null`) and a `delta` (the last one) that is
    /// a content-less [`delta`](Self::delta).
    fn choice(&mut self) -> Option<bool> {
        let mut finished = false;
        let mut delta = false;
        self.object(|reader, key| {
            match key {
                b"finish_reason" => finished = reader.value(3)? != Kind::Null,
                b"delta" => {
                    delta = match reader.peek()? {
                        b'{' => reader.delta()?,
                        _ => reader.value(3).map(|_| false)?,
                    }
                }
                _ => {
                    reader.value(3)?;
                }
            }
            Some(())
        })?;
        Some(!finished && delta)
    }

    /// A delta whose members are all `null`, a `role` string, an empty string (`content`,
    /// `refusal`, `reasoning`, `reasoning_content`...) or an empty list (`tool_calls`,
    /// `reasoning_details`...), whatever their names: the tree's rule.
    fn delta(&mut self) -> Option<bool> {
        let mut all = true;
        self.object(|reader, key| {
            all &= match (key, reader.value(4)?) {
                (_, Kind::Null) | (b"role", Kind::String { .. }) => true,
                (_, Kind::String { empty } | Kind::Array { empty }) => empty,
                _ => false,
            };
            Some(())
        })?;
        Some(all)
    }

    /// An object, each member's key handed to `member` with the reader at its value, which
    /// `member` consumes.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array, `item` called with the reader at each item, which it consumes.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string: in [plain](is_plain) text, its bytes up to the next quote are its text.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.data.get(self.pos..)?;
        let len = memchr::memchr(b'"', rest)?;
        self.pos += len + 1;
        rest.get(..len)
    }

    /// Any value, nested at `depth`.
    fn value(&mut self, depth: u8) -> Option<Kind> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(|reader, _| reader.value(depth + 1).map(drop))?,
            b'[' => {
                let mut empty = true;
                self.array(|reader| {
                    empty = false;
                    reader.value(depth + 1).map(drop)
                })?;
                return Some(Kind::Array { empty });
            }
            b'"' => {
                let empty = self.string()?.is_empty();
                return Some(Kind::String { empty });
            }
            b'n' => {
                self.literal(b"null")?;
                return Some(Kind::Null);
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            _ => self.number()?,
        }
        Some(Kind::Other)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.data.get(self.pos..)?;
        rest.starts_with(word).then(|| self.pos += word.len())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, each part of at most [`MAX_DIGITS`] digits; an
    /// exponent is given up.
    fn number(&mut self) -> Option<()> {
        if self.data.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int = self.digits()?;
        if int.len() > 1 && int[0] == b'0' {
            return None;
        }
        if self.data.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits()?;
        }
        match self.data.get(self.pos) {
            Some(b'e' | b'E' | b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    /// One to [`MAX_DIGITS`] ASCII digits.
    fn digits(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let rest = self.data.get(start..)?;
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > MAX_DIGITS {
            return None;
        }
        self.pos += len;
        Some(&self.data[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::json::Json;
    use crate::classify::sse::is_preamble_json;
    use proptest::prelude::*;

    /// The rule read through the tree.
    fn by_tree(data: &str) -> bool {
        Json::parse(data.as_bytes()).is_some_and(|json| is_preamble_json(&json))
    }

    #[test]
    fn usual_chunks_are_read_without_the_tree() {
        for (data, preamble) in [
            (
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_0123","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"X9d"}"#,
                true,
            ),
            (
                r#"{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion.chunk","created":1700000000,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}"#,
                true,
            ),
            (
                r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
                true,
            ),
            (
                r#" { "choices" : [ { "delta" : { } } ] , "temperature" : -0.5 } "#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"content":"Hello"},"finish_reason":null}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","content":"","content":"x"}}]}"#,
                false,
            ),
            (r#"{"choices":[{"delta":{}}],"error":{"code":502}}"#, false),
            (
                r#"{"choices":[{"delta":{}}],"error":{"code":502},"error":null}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{},"finish_reason":"stop","finish_reason":null}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"content":"x"},"delta":{"role":"assistant"}}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[]}}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1"}]}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"tool_calls":[],"content":"Hi"}}]}"#,
                false,
            ),
            (r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#, false),
            // Empty whatever the member: a string or a list with nothing in it yet.
            (r#"{"choices":[{"delta":{"reasoning":[]}}]}"#, true),
            (r#"{"choices":[{"delta":{"reasoning_details":""}}]}"#, true),
            // `null`s alone, without `content` or `role`.
            (
                r#"{"choices":[{"index":0,"delta":{"tool_calls":null},"finish_reason":null}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"function_call":null,"refusal":null}}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"tool_calls":null,"n":0}}]}"#,
                false,
            ),
            (
                r#"{"id":"gen-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":null,"reasoning_details":[]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","refusal":"","reasoning":"","reasoning_content":""}}]}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","refusal":"I can't"}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"role":"assistant","reasoning":"Hmm"}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"reasoning_content":"Hmm"}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.text"}]}}]}"#,
                false,
            ),
            (r#"{"choices":[{"delta":"role"}]}"#, false),
            (r#"{"choices":[1]}"#, false),
            (r#"{"choices":null}"#, false),
        ] {
            assert_eq!(chunk_preamble(data.as_bytes()), Some(preamble), "{data}");
            assert_eq!(by_tree(data), preamble, "{data}");
        }
    }

    #[test]
    fn what_the_reader_does_not_know_goes_to_the_tree() {
        for data in [
            r#"{"type":"ping"}"#,
            r#"{"choices":[],"type":null}"#,
            r#"{"choices":[{"delta":{"content":"\u00e9"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"\u{e9}\"}}]}",
            r#"{"choices":[],"n":1e3}"#,
            r#"{"choices":[],"n":01}"#,
            r#"{"choices":[],"n":12345678901234567890}"#,
            r#"{"choices":[],}"#,
            r#"{"choices":[]"#,
            r#"{"choices":[]} x"#,
            "\u{feff}{\"choices\":[]}",
            "{\"choices\":[],\"a\":\"\t\"}",
            &format!(
                "{{\"choices\":[],\"a\":{}1{}}}",
                "[".repeat(40),
                "]".repeat(40)
            ),
        ] {
            assert_eq!(chunk_preamble(data.as_bytes()), None, "{data}");
        }
    }

    /// A member value, some outside the reader's subset (escapes, non-ASCII, exponents, bad
    /// numbers), some not JSON at all.
    fn value() -> impl Strategy<Value = String> + Clone {
        let json = prop::sample::select(vec![
            "null",
            "\"\"",
            "\"assistant\"",
            "\"Hi\"",
            "0",
            "-1.5",
            "17",
            "true",
            "false",
            "[]",
            "{}",
            "[1,{\"a\":null}]",
        ]);
        let other = prop::sample::select(vec![
            "\"a\\\"b\"",
            "\"\u{e9}\"",
            "1e3",
            "01",
            "-",
            "1.",
            "nul",
            "[1,]",
            "\"\\u0041\"",
        ]);
        prop_oneof![6 => Just("null"), 12 => json, 1 => other].prop_map(str::to_owned)
    }

    /// An object of members with these keys (duplicates too) whose values are [`value`]s or
    /// `inner`'s, with any separators JSON allows, or a stray comma.
    fn object(
        keys: &'static [&'static str],
        inner: impl Strategy<Value = String> + Clone,
    ) -> impl Strategy<Value = String> + Clone {
        let member = (
            prop::sample::select(keys),
            prop_oneof![1 => value(), 2 => inner],
            prop::sample::select(vec!["", "", " ", "  ", "\n", "\t"]),
        )
            .prop_map(move |(key, value, space)| format!("{space}\"{key}\"{space}:{space}{value}"));
        (
            prop::collection::vec(member, 0..5),
            prop::sample::select(vec![",", ",", ",", ", ", ",,"]),
        )
            .prop_map(|(members, comma)| format!("{{{}}}", members.join(comma)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whenever the reader answers, it answers as the tree does.
        #[test]
        fn the_reader_agrees_with_the_tree(
            chunk in object(
                &["id", "choices", "choices", "error", "type", "model", "usage"],
                prop::collection::vec(
                    prop_oneof![
                        value(),
                        object(
                            &["index", "delta", "delta", "finish_reason", "logprobs"],
                            object(
                                &[
                                    "role",
                                    "content",
                                    "content",
                                    "refusal",
                                    "tool_calls",
                                    "reasoning",
                                    "reasoning_content",
                                    "reasoning_details",
                                ],
                                prop::sample::select(vec!["null", "\"\"", "\"assistant\"", "[]", "[{}]"])
                                    .prop_map(str::to_owned),
                            ),
                        ),
                    ],
                    0..3,
                )
                .prop_map(|choices| format!("[{}]", choices.join(","))),
            ),
            cut in prop::option::weighted(0.1, 0usize..200),
        ) {
            let chunk = match cut {
                Some(cut) => chunk.get(..cut).unwrap_or(&chunk).to_owned(),
                None => chunk,
            };
            if let Some(answer) = chunk_preamble(chunk.as_bytes()) {
                prop_assert_eq!(answer, by_tree(&chunk), "{}", chunk);
            }
        }
    }
}
