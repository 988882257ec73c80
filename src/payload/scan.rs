//! The fast path of [`ChatRequest::parse`](super::ChatRequest::parse): one pass that checks the
//! body is valid JSON and finds its top-level members.
//!
//! serde_json checks a string byte by byte (eight at a time), which made parsing a 1 MiB prompt
//! cost about 3 instructions per byte. Here a string is skipped with `memchr2` (the next `"` or
//! `\`, with SIMD) and the bytes it passed are checked for control characters by a reduction the
//! compiler vectorises. Everything between strings is checked by a small state machine with the
//! same grammar and the same nesting limit as serde_json.
//!
//! The scan only vouches for bodies: it answers `None` for anything it does not accept (invalid
//! JSON, too deep, a top-level key with an escape), and the caller then takes serde_json's path,
//! which accepts or refuses the body and says why. So the scan must never accept a body serde_json
//! refuses; refusing one serde_json accepts only costs time.

use super::{TopLevel, MAX_DEPTH};

/// Scans `text` as a single JSON object (whitespace around it allowed) and records its
/// members in `top` (a [`TopLevel::new`]). `None` when the body is not one the scan vouches
/// for; `top` then holds part of it.
///
/// `top` is filled in place: [`TopLevel`] is about 750 bytes, and returning it cost two
/// `memcpy` calls (about 200 instructions) per request.
pub(super) fn top_level<'a>(text: &'a str, top: &mut TopLevel<'a>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut cur = Cursor { bytes, at: 0 };
    cur.ws();
    cur.eat(b'{')?;
    top.open = cur.at;
    cur.ws();
    if cur.peek()? == b'}' {
        cur.at += 1;
    } else {
        loop {
            let key_start = cur.at;
            if cur.peek()? != b'"' || cur.string()? {
                // An escaped key is decoded by serde_json's path.
                return None;
            }
            let name = text.get(key_start + 1..cur.at - 1)?;
            cur.ws();
            cur.eat(b':')?;
            cur.ws();
            let start = cur.at;
            // The top-level object is the first level of nesting.
            cur.value(1)?;
            top.push_at(key_start, name, start, text.get(start..cur.at)?);
            cur.ws();
            match cur.peek()? {
                b',' => {
                    cur.at += 1;
                    cur.ws();
                }
                b'}' => {
                    cur.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    cur.ws();
    (cur.at == bytes.len()).then_some(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips the string whose opening quote is at the cursor; `Some(true)` when it holds an
    /// escape.
    ///
    /// Most strings of a chat request are a few bytes long (keys, roles, model names), so the
    /// common case is inlined: a string that ends, unescaped, within the 16 bytes after its
    /// quote costs one [`string_stops`] (a few SSE2 instructions). Anything else (a longer
    /// string, an escape, a control character, the end of the text near) goes on out of line
    /// in [`string_rest`], whose call, saving the registers the long path needs, cost about as
    /// much as the whole fast path. It takes the position by value so that the cursor can stay
    /// in registers.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        let start = self.at + 1;
        let mut from = start;
        if let Some(block) = self.bytes.get(start..).and_then(|rest| rest.first_chunk()) {
            let stops = string_stops(block);
            if stops == 0 {
                from += 16;
            } else {
                let end = start + (stops.trailing_zeros() / 8) as usize;
                if self.bytes.get(end) == Some(&b'"') {
                    self.at = end + 1;
                    return Some(false);
                }
            }
        }
        let (end, escaped) = string_rest(self.bytes, from)?;
        self.at = end;
        Some(escaped)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Skips a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits1()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits1()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// At least one digit.
    fn digits1(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// An object key and its colon.
    #[inline(always)]
    fn key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }

    /// Skips one value that starts at the cursor, inside `depth` levels of nesting. Iterative:
    /// the open arrays and objects are bits of `objects` (1 for an object), at most
    /// [`MAX_DEPTH`] of them in all.
    fn value(&mut self, depth: usize) -> Option<()> {
        let mut objects: u128 = 0;
        let mut open = 0usize;
        'value: loop {
            self.ws();
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                bracket @ (b'{' | b'[') => {
                    if depth + open + 1 > MAX_DEPTH {
                        return None;
                    }
                    let object = bracket == b'{';
                    self.at += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.at += 1;
                    } else {
                        open += 1;
                        objects = objects << 1 | u128::from(object);
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close what it ends, or go on to the next one.
            loop {
                if open == 0 {
                    return Some(());
                }
                self.ws();
                let object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.at += 1;
                open -= 1;
                objects >>= 1;
            }
        }
    }
}

/// Skips the rest of a string from `at` (inside the string, past its opening quote, or past a
/// part already checked): the offset past its closing quote, and whether the part from `at`
/// holds an escape.
#[inline(never)]
fn string_rest(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        at = next_quote_or_backslash(bytes, at)?;
        if bytes.get(at) == Some(&b'"') {
            return Some((at + 1, escaped));
        }
        escaped = true;
        at = escape(bytes, at)?;
    }
}

/// Where the next `"` or `\` is, from `at`; `None` when a control character comes first or the
/// text ends.
///
/// Short runs (a short prompt, the text between two escapes) are too short for `memchr2`'s
/// setup (about 90 instructions a call) to pay off: the first [`SHORT_STRING`] bytes are
/// checked 16 at a time ([`string_stops`]); fewer than 16 bytes before the end of the text, the
/// last 16 bytes of the text are (those before `at` masked off), as a member near the end of a
/// body, often a short key, would otherwise go to `memchr2`.
fn next_quote_or_backslash(bytes: &[u8], mut at: usize) -> Option<usize> {
    let blocks_end = at + SHORT_STRING;
    while at < blocks_end {
        let stops = match bytes.get(at..)?.first_chunk::<16>() {
            Some(block) => string_stops(block),
            None => match bytes.last_chunk::<16>() {
                Some(last) => {
                    // 1 to 16 bytes of `last` lie before `at` (16: the text ends at `at`).
                    let before = 16 - (bytes.len() - at);
                    string_stops(last).checked_shr(8 * before as u32)?
                }
                // A text shorter than 16 bytes.
                None => {
                    let rest = bytes.get(at..)?;
                    let first = rest.iter().position(|&b| is_string_stop(b))?;
                    return (rest[first] >= 0x20).then_some(at + first);
                }
            },
        };
        if stops != 0 {
            let first = at + (stops.trailing_zeros() / 8) as usize;
            return (*bytes.get(first)? >= 0x20).then_some(first);
        }
        at += 16;
    }
    long_run(bytes, at)
}

/// [`next_quote_or_backslash`] from `at`, for a run longer than [`SHORT_STRING`]: `memchr2`
/// (with SIMD) finds the stop and a vectorised reduction checks the bytes it passed for control
/// characters.
#[inline(never)]
fn long_run(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    let stop = memchr::memchr2(b'"', b'\\', rest)?;
    if has_control(rest.get(..stop)?) {
        return None;
    }
    Some(at + stop)
}

/// Skips the escape whose backslash is at `at`: serde_json's set, `\u` with four hex digits (a
/// lone surrogate is accepted, as serde_json accepts it in a value it skips). The offset past
/// it.
fn escape(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 2),
        b'u' => {
            let hex = bytes.get(at + 2..at + 6)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(at + 6)
        }
        _ => None,
    }
}

/// How many bytes of a string are checked a block at a time before `memchr2` takes over: keys,
/// roles, model names and short prompts fit. (With 64-bit words and 64 bytes, a 1 MiB prose
/// body, a run per paragraph, parsed 15% slower than with `memchr2` alone; two 16-byte blocks
/// cost fewer instructions than the two words that were checked before.)
const SHORT_STRING: usize = 32;

/// Whether `b` ends a string's plain run: `"`, `\` or a control character. (`|`, not `||`:
/// branches would keep [`string_stops`] from being vectorised.)
fn is_string_stop(b: u8) -> bool {
    (b == b'"') | (b == b'\\') | (b < 0x20)
}

/// The bytes of `block` that end a string's plain run ([`is_string_stop`]) as `0xff` bytes of
/// a little-endian `u128`, the others as `0x00`: the first stop is at `trailing_zeros() / 8`.
/// Written byte by byte so that the compiler vectorises it (`pcmpeqb`, `pminub`).
#[inline(always)]
fn string_stops(block: &[u8; 16]) -> u128 {
    let mut stops = [0u8; 16];
    for (stop, &b) in stops.iter_mut().zip(block) {
        *stop = u8::from(is_string_stop(b)).wrapping_neg();
    }
    u128::from_le_bytes(stops)
}

/// Whether `bytes` holds a control character (below 0x20), which a JSON string must escape.
///
/// A minimum without an early exit (the compiler turns it into `pminub` over 32 bytes per
/// step) over a whole number of 32-byte blocks, and the last 32 bytes again (overlapping), so
/// that a string of a few hundred bytes does not end in a byte-by-byte loop.
fn has_control(bytes: &[u8]) -> bool {
    fn min(bytes: &[u8]) -> u8 {
        bytes.iter().fold(u8::MAX, |min, &b| min.min(b))
    }
    let Some(last) = bytes.len().checked_sub(32) else {
        return bytes.iter().any(|&b| b < 0x20);
    };
    let blocks = bytes.get(..bytes.len() / 32 * 32).unwrap_or_default();
    let tail = bytes
        .get(last..)
        .and_then(|tail| <&[u8; 32]>::try_from(tail).ok())
        .map_or(u8::MAX, |tail| min(tail));
    min(blocks).min(tail) < 0x20
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan vouches only for what serde_json accepts (with its nesting limit), and when it
    /// vouches, it finds the same members as serde_json's path.
    /// [`top_level`] into a new [`TopLevel`].
    fn scan(text: &str) -> Option<TopLevel<'_>> {
        let mut top = TopLevel::new(0);
        top_level(text, &mut top).map(|()| top)
    }

    fn agrees(text: &str) {
        let fast = scan(text);
        let slow = crate::payload::ChatRequest::top_level_checked(text);
        match (&fast, &slow) {
            (Some(fast), Ok(slow)) => {
                assert_eq!(fast.open, slow.open, "{text}");
                assert_eq!(fast.members, slow.members, "{text}");
                assert_eq!(fast.duplicate, slow.duplicate, "{text}");
                let spans = |top: &TopLevel<'_>| {
                    top.found
                        .map(|f| f.map(|(span, raw)| (span, raw.to_owned())))
                };
                assert_eq!(spans(fast), spans(slow), "{text}");
            }
            (Some(_), Err(err)) => {
                panic!("the scan accepts what serde_json refuses ({err}): {text}")
            }
            (None, _) => {}
        }
    }

    #[test]
    fn agrees_with_serde_json_on_valid_bodies() {
        for text in [
            "{}",
            " { } ",
            r#"{"model":"a"}"#,
            "{\n\t\"model\" : \"a\" ,\r\n \"models\":[\"b\", \"c\"] , \"x\":{} }\n",
            r#"{"messages":[{"role":"user","content":"a \"quoted\" \\ word\n\u00e9\ud83d"}],"stream":true}"#,
            r#"{"n":-0.5e+10,"m":0,"o":[1,2.25,3E3,-7],"p":null,"q":false,"r":[[],{},[{}]]}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"a":1,"model":"x","b":2,"models":[],"c":3}"#,
            "{\"k\":\"caf\u{e9} \u{1F600}\"}",
        ] {
            assert!(scan(text).is_some(), "{text}");
            agrees(text);
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            "[]",
            "{",
            "{}x",
            "{} {}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"unterminated}"#,
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{1:2}}"#,
            r#"{a:1}"#,
            "\u{feff}{}",
        ] {
            assert!(scan(text).is_none(), "{text}");
            assert!(
                crate::payload::ChatRequest::top_level_checked(text).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [126, 127, 128, 129, 200] {
            let inner = "[".repeat(depth - 1) + &"]".repeat(depth - 1);
            let text = format!(r#"{{"a":{inner}}}"#);
            agrees(&text);
            let slow_ok = crate::payload::ChatRequest::top_level_checked(&text).is_ok();
            assert_eq!(scan(&text).is_some(), slow_ok, "depth {depth}");
        }
    }

    /// JSON's string grammar read byte by byte, for the string whose quote is at `at`: the
    /// offset past its closing quote and whether it holds an escape.
    fn string_by_bytes(bytes: &[u8], at: usize) -> Option<(usize, bool)> {
        let mut at = at + 1;
        let mut escaped = false;
        loop {
            match *bytes.get(at)? {
                b'"' => return Some((at + 1, escaped)),
                b'\\' => {
                    escaped = true;
                    at += match *bytes.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' if bytes.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                        _ => return None,
                    };
                }
                0..=0x1f => return None,
                _ => at += 1,
            }
        }
    }

    #[test]
    fn escaped_keys_take_the_serde_json_path() {
        let text = r#"{"mod\u0065l":"a"}"#;
        assert!(scan(text).is_none());
        assert!(crate::payload::ChatRequest::top_level_checked(text).is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// JSON-like noise: the scan never accepts what serde_json refuses, and agrees on
        /// what both accept.
        #[test]
        fn agrees_on_json_like_noise(tokens in proptest::collection::vec(proptest::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\n", "\"", "\"k\"", "\"model\"", "\"models\"",
            "\"a\\\"b\"", "\"\\u00e9\"", "\"\\x\"", "1", "-", "0", "01", ".5", "2.5", "e3",
            "E-2", "true", "tru", "null", "false", "\u{7}", "\u{e9}",
        ]), 0..24)) {
            let text = format!("{{\"a\":{}}}", tokens.concat());
            agrees(&text);
            agrees(&tokens.concat());
        }

        /// The block-at-a-time search finds what a byte-by-byte one finds, in strings of every
        /// length around the block and [`SHORT_STRING`] boundaries, and from every position
        /// near the end of the text (where the last block overlaps bytes before `at`).
        #[test]
        fn finds_the_first_stop_like_a_byte_loop(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                8 => b'a'..=b'z',
                1 => proptest::sample::select(vec![b'"', b'\\', 0x00u8, 0x1f, 0x20, 0x7f, 0x80, 0xff]),
            ], 0..160),
            start in 0usize..8,
            from_end in proptest::option::of(0usize..20),
        ) {
            let at = match from_end {
                Some(n) => bytes.len().saturating_sub(n),
                None => start.min(bytes.len()),
            };
            let expected = bytes
                .iter()
                .skip(at)
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map(|i| at + i)
                .filter(|&at| bytes[at] >= 0x20);
            proptest::prop_assert_eq!(next_quote_or_backslash(&bytes, at), expected);
        }

        /// [`Cursor::string`] (the inlined first block, then [`string_rest`]) ends a string
        /// where a byte-by-byte reading of JSON's string grammar does, and refuses what it
        /// refuses: strings of every length around the block boundaries, with escapes (valid
        /// or not), control characters and non-ASCII bytes, inside texts that end anywhere.
        #[test]
        fn skips_strings_like_a_byte_loop(
            before in 0usize..20,
            tokens in proptest::collection::vec(proptest::prop_oneof![
                12 => proptest::sample::select(vec!["a", "bc", "defgh", "0123456789abcdef", " "]),
                2 => proptest::sample::select(vec!["\\\"", "\\\\", "\\n", "\\/", "\\u00e9", "\\uD83D"]),
                1 => proptest::sample::select(vec!["\\x", "\\u12g4", "\\u12", "\\", "\u{1}", "\t", "\u{e9}", "\u{1F600}"]),
                3 => proptest::sample::select(vec!["\"", "\"}", "\",\"k\":1}"]),
            ], 0..40),
        ) {
            let text = format!("{}\"{}", " ".repeat(before), tokens.concat());
            let bytes = text.as_bytes();
            let mut cursor = Cursor { bytes, at: before };
            let fast = cursor.string().map(|escaped| (cursor.at, escaped));
            proptest::prop_assert_eq!(fast, string_by_bytes(bytes, before), "{:?}", text);
        }
    }
}
