//! The fast path of [`ChatRequest::parse`](super::ChatRequest::parse): one pass that checks the
//! body is valid JSON and finds its top-level members.
//!
//! serde_json checks a string byte by byte (eight at a time), which made parsing a 1 MiB prompt
//! cost about 3 instructions per byte. Here a string is skipped with `memchr2` (the next `"` or
//! `\`, with SIMD) and the bytes it passed are checked for control characters by a reduction the
//! compiler vectorises. Everything between strings is checked by a small state machine with the
//! same grammar and the same nesting limit as serde_json.
//!
//! The scan also checks that the body is UTF-8, so that the caller need not run `from_utf8` over
//! all of it: outside strings the grammar admits only ASCII bytes, and a string is either plain
//! ASCII (checked with its quote and escapes, at no extra cost) or checked with `from_utf8`
//! ([`string_rest`]); UTF-8 split at ASCII bytes stays UTF-8 piece by piece.
//!
//! The scan only vouches for bodies: it answers `None` for anything it does not accept (invalid
//! JSON, too deep, a top-level key with an escape), and the caller then takes serde_json's path,
//! which accepts or refuses the body and says why. So the scan must never accept a body serde_json
//! refuses; refusing one serde_json accepts only costs time.

use super::{TopLevel, MAX_DEPTH};

/// Scans `bytes` as a single JSON object in UTF-8 (whitespace around it allowed) and records
/// its members in `top` (a [`TopLevel::new`]). `None` when the body is not one the scan vouches
/// for; `top` then holds part of it.
///
/// `top` is filled in place: [`TopLevel`] is several hundred bytes, and returning it cost two
/// `memcpy` calls (about 200 instructions) per request.
pub(super) fn top_level(bytes: &[u8], top: &mut TopLevel) -> Option<()> {
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
            let name = bytes.get(key_start + 1..cur.at - 1)?;
            cur.ws();
            cur.eat(b':')?;
            cur.ws();
            let start = cur.at;
            // The top-level object is the first level of nesting.
            cur.value(1)?;
            top.push_at(key_start, name, start, cur.at);
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
    /// common case is inlined: a plain ASCII string that ends within [`INLINE_STRING`] bytes
    /// after its quote costs one or two [`ascii_stops`] (a few SSE2 instructions each).
    /// Anything else (a longer string, an escape, a control character, a non-ASCII byte, the
    /// end of the text near) goes on out of line in [`string_rest`], whose call, saving the
    /// registers the long path needs, cost about as much as the whole fast path. It takes the
    /// position by value so that the cursor can stay in registers.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        let start = self.at + 1;
        let mut from = start;
        while let Some(block) = self.bytes.get(from..).and_then(|rest| rest.first_chunk()) {
            let stops = ascii_stops(block);
            if stops != 0 {
                let end = from + (stops.trailing_zeros() / 8) as usize;
                if self.bytes.get(end) == Some(&b'"') {
                    self.at = end + 1;
                    return Some(false);
                }
                break;
            }
            from += 16;
            if from - start == INLINE_STRING {
                break;
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

/// Skips the rest of a string from `from` (inside the string, past its opening quote, or past
/// a plain ASCII part already checked): the offset past its closing quote, and whether the part
/// from `from` holds an escape. `None` as well when that part is not UTF-8.
#[inline(never)]
fn string_rest(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut at = from;
    let mut escaped = false;
    loop {
        at = next_quote_or_backslash(bytes, at)?;
        if bytes.get(at) == Some(&b'"') {
            let part = bytes.get(from..at)?;
            if !is_ascii(part) && std::str::from_utf8(part).is_err() {
                return None;
            }
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

/// How many bytes of a run (past what [`Cursor::string`] checked inline) are checked a block at
/// a time before `memchr2` takes over: the text between two escapes often fits. One block:
/// with two, the bench bodies of 1 MiB cost 1-5% more instructions and prose parsed 6% slower
/// (with 64-bit words and 64 bytes, prose parsed 15% slower than with `memchr2` alone).
const SHORT_STRING: usize = 16;

/// How many bytes of a string [`Cursor::string`] checks inline.
const INLINE_STRING: usize = 32;

/// The bytes of `block` that end a plain ASCII run: [`is_string_stop`]'s, and those of
/// multi-byte UTF-8 characters (0x80 and above), as [`string_stops`] gives them. (`b as i8`
/// below 0x20 is both a control character and a byte above 0x7f, in one comparison.)
#[inline(always)]
fn ascii_stops(block: &[u8; 16]) -> u128 {
    let mut stops = [0u8; 16];
    for (stop, &b) in stops.iter_mut().zip(block) {
        let ends = (b == b'"') | (b == b'\\') | ((b as i8) < 0x20);
        *stop = u8::from(ends).wrapping_neg();
    }
    u128::from_le_bytes(stops)
}

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
fn has_control(bytes: &[u8]) -> bool {
    reduce(bytes, u8::MAX, u8::min) < 0x20
}

/// Whether `bytes` is all ASCII: [`reduce`] is cheaper than a call of `<[u8]>::is_ascii` for
/// the few hundred bytes of a message (and than `from_utf8` over the whole body, which the
/// scan saves its caller).
fn is_ascii(bytes: &[u8]) -> bool {
    reduce(bytes, 0, |acc, b| acc | b) < 0x80
}

/// Folds `bytes` with `f` (associative, commutative and idempotent: min, or), starting from
/// `init`.
///
/// Without an early exit, so that the compiler vectorises it (32 bytes per step), over a whole
/// number of 32-byte blocks and the last 32 bytes again (overlapping), so that a string of a
/// few hundred bytes does not end in a byte-by-byte loop.
#[inline(always)]
fn reduce(bytes: &[u8], init: u8, f: impl Fn(u8, u8) -> u8 + Copy) -> u8 {
    let fold = |bytes: &[u8]| bytes.iter().fold(init, |acc, &b| f(acc, b));
    let Some(last) = bytes.len().checked_sub(32) else {
        return fold(bytes);
    };
    let blocks = bytes.get(..bytes.len() / 32 * 32).unwrap_or_default();
    let tail = bytes
        .get(last..)
        .and_then(|tail| <&[u8; 32]>::try_from(tail).ok())
        .map_or(init, |tail| fold(tail));
    f(fold(blocks), tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`top_level`] into a new [`TopLevel`].
    fn scan(text: &(impl AsRef<[u8]> + ?Sized)) -> Option<TopLevel> {
        let mut top = TopLevel::new(0);
        top_level(text.as_ref(), &mut top).map(|()| top)
    }

    /// The scan vouches only for what serde_json accepts (with its nesting limit), and when it
    /// vouches, it finds the same members as serde_json's path.
    fn agrees(text: &str) {
        agrees_on_bytes(text.as_bytes());
    }

    /// [`agrees`] for any bytes: what the scan vouches for is UTF-8 as well.
    fn agrees_on_bytes(bytes: &[u8]) {
        let fast = scan(bytes);
        let slow = std::str::from_utf8(bytes)
            .map_err(|err| err.to_string())
            .and_then(|text| {
                crate::payload::ChatRequest::top_level_checked(text).map_err(|err| err.to_string())
            });
        let text = String::from_utf8_lossy(bytes);
        match (&fast, &slow) {
            (Some(fast), Ok(slow)) => {
                assert_eq!(fast.open, slow.open, "{text}");
                assert_eq!(fast.members, slow.members, "{text}");
                assert_eq!(fast.duplicate, slow.duplicate, "{text}");
                assert_eq!(fast.found, slow.found, "{text}");
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

    /// JSON's string grammar read byte by byte, for the string whose quote is at `quote`: the
    /// offset past its closing quote and whether it holds an escape; `None` as well when it is
    /// not UTF-8.
    fn string_by_bytes(bytes: &[u8], quote: usize) -> Option<(usize, bool)> {
        let mut at = quote + 1;
        let mut escaped = false;
        loop {
            match *bytes.get(at)? {
                b'"' => {
                    std::str::from_utf8(&bytes[quote + 1..at]).ok()?;
                    return Some((at + 1, escaped));
                }
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

        /// [`Cursor::string`] (the inlined first blocks, then [`string_rest`]) ends a string
        /// where a byte-by-byte reading of JSON's string grammar does, and refuses what it
        /// refuses: strings of every length around the block boundaries, with escapes (valid
        /// or not), control characters, UTF-8 and bytes that are not UTF-8 (a lone
        /// continuation byte, a truncated or overlong sequence, a surrogate), inside texts that
        /// end anywhere.
        #[test]
        fn skips_strings_like_a_byte_loop(
            before in 0usize..20,
            tokens in proptest::collection::vec(proptest::prop_oneof![
                12 => proptest::sample::select(vec![&b"a"[..], b"bc", b"defgh", b"0123456789abcdef", b" "]),
                2 => proptest::sample::select(vec![&b"\\\""[..], b"\\\\", b"\\n", b"\\/", b"\\u00e9", b"\\uD83D"]),
                1 => proptest::sample::select(vec![&b"\\x"[..], b"\\u12g4", b"\\u12", b"\\", b"\x01", b"\t", b"\x7f"]),
                2 => proptest::sample::select(vec![
                    "\u{e9}".as_bytes(), "\u{20ac}".as_bytes(), "\u{1F600}".as_bytes(),
                    b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\x80", b"\xed\xa0\x80", b"\xff",
                ]),
                3 => proptest::sample::select(vec![&b"\""[..], b"\"}", b"\",\"k\":1}"]),
            ], 0..40),
        ) {
            let mut bytes = vec![b' '; before];
            bytes.push(b'"');
            bytes.extend(tokens.concat());
            let mut cursor = Cursor { bytes: &bytes, at: before };
            let fast = cursor.string().map(|escaped| (cursor.at, escaped));
            proptest::prop_assert_eq!(
                fast,
                string_by_bytes(&bytes, before),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }

        /// Bytes that are not UTF-8, anywhere in a body: the scan never vouches for what
        /// `from_utf8` or serde_json refuses, and agrees with them on what they accept.
        #[test]
        fn agrees_on_bytes_that_are_not_utf8(tokens in proptest::collection::vec(proptest::sample::select(vec![
            &b"{"[..], b"}", b"[", b"]", b",", b":", b" ", b"\"", b"\"k\"", b"\"model\"", b"1",
            b"null", b"\\n", b"\\u00e9", b"abcdefghijklmnopq", "\u{e9}".as_bytes(),
            "\u{1F600}".as_bytes(), b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\x80", b"\xed\xa0\x80",
            b"\xff", b"\xef\xbb\xbf",
        ]), 0..24)) {
            let noise = tokens.concat();
            for body in [
                [&b"{\"a\":\""[..], &noise, b"\"}"].concat(),
                [&b"{\"a\":"[..], &noise, b"}"].concat(),
                [&b"{\""[..], &noise, b"\":1}"].concat(),
                noise,
            ] {
                agrees_on_bytes(&body);
            }
        }
    }
}
