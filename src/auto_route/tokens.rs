//! A fast, conservative token count estimate.
//!
//! [`estimate_tokens`] reads the text once, allocates nothing and errs on the high side of the
//! `cl100k_base` / `o200k_base` BPE counts, so that a context-window check based on it does not
//! send a prompt to a model that cannot hold it. It counts, in quarter tokens:
//!
//! | text | cost |
//! |---|---|
//! | run of ASCII letters of length `n` | 1 token, plus 1 per 4 letters after the first 3 |
//! | run of ASCII digits of length `n` | `ceil(n / 3)` tokens (BPE splits numbers in groups of 3) |
//! | ASCII punctuation | 1 token each (merged pairs such as `();` make this generous) |
//! | one space before a word | free (BPE glues it to the word); other whitespace runs: 1 token |
//! | Cyrillic letters | 3/4 token each |
//! | other 2-byte UTF-8 characters (accented Latin, Greek, Arabic, Hebrew, ...) | 1 token each |
//! | CJK ideographs, kana, other 3-byte UTF-8 characters | 5/4 token each |
//! | Hangul syllables, Indic scripts, Thai (U+0800..U+0FFF) | 3/2 token each |
//! | 4-byte UTF-8 characters (emoji, rare CJK) | 3 tokens each |
//!
//! `tests/auto_route_router.rs` prints the ratio of this estimate to real `cl100k_base` and
//! `o200k_base` counts on English prose, code, and Chinese, Japanese, Russian, Arabic, Korean,
//! Hindi and emoji text, and asserts that it is never below 0.95x and stays under 2.5x on
//! English (`cargo test --test auto_route_router tokens -- --nocapture`).

/// Estimates the number of BPE tokens of `text`, erring high.
///
/// One pass over the bytes, no allocation. See the [module docs](self) for the rules and
/// the measured ratios.
///
/// ```
/// use tower_llm_router::auto_route::estimate_tokens;
///
/// assert_eq!(estimate_tokens(""), 0);
/// // "Hello, world!" is 4 tokens in cl100k_base.
/// let n = estimate_tokens("Hello, world!");
/// assert!((4..=8).contains(&n));
/// // CJK text costs at least a token per character.
/// assert!(estimate_tokens("你好，世界") >= 5);
/// ```
pub fn estimate_tokens(text: &str) -> u64 {
    let bytes = text.as_bytes();
    // Quarter tokens.
    let mut q: u64 = 0;
    let mut at = 0;
    // A run of one class (letters, digits, whitespace) is skipped in a tight loop and paid
    // for at once; every other byte pays for itself.
    while let Some(&b) = bytes.get(at) {
        let start = at;
        at += 1;
        if b.is_ascii_alphabetic() {
            at += run(&bytes[at..], u8::is_ascii_alphabetic);
            q += alpha_cost((at - start) as u64);
        } else if b.is_ascii_digit() {
            at += run(&bytes[at..], u8::is_ascii_digit);
            q += 4 * ((at - start) as u64).div_ceil(3);
        } else if b.is_ascii_whitespace() {
            at += run(&bytes[at..], u8::is_ascii_whitespace);
            q += ws_cost((at - start) as u64);
        } else if b < 0x80 {
            // ASCII punctuation or control.
            q += 4;
        } else {
            // Continuation bytes (0x80..0xC0) cost nothing: the lead byte paid.
            q += lead_cost(b);
        }
    }
    q.div_ceil(4)
}

/// How many bytes at the start of `bytes` are of `class`.
#[inline]
fn run(bytes: &[u8], class: fn(&u8) -> bool) -> usize {
    bytes.iter().position(|b| !class(b)).unwrap_or(bytes.len())
}

/// Quarter tokens for a non-ASCII byte: lead bytes pay for their character, continuation
/// bytes (`0x80..0xC0`) cost nothing.
#[inline]
fn lead_cost(b: u8) -> u64 {
    match b {
        // 4-byte characters: emoji, rare CJK.
        0xF0.. => 12,
        // U+0800..U+0FFF (Indic scripts, Thai, Tibetan, ...) and Hangul syllables.
        0xE0 | 0xEA..=0xED => 6,
        // Other 3-byte characters: CJK, kana, punctuation.
        0xE1.. => 5,
        // Cyrillic.
        0xD0..=0xD4 => 3,
        // Other 2-byte characters: Latin accents, Greek, Arabic, Hebrew, Armenian, ...
        0xC0.. => 4,
        _ => 0,
    }
}

#[inline]
fn alpha_cost(n: u64) -> u64 {
    4 + n.saturating_sub(3)
}

#[inline]
fn ws_cost(n: u64) -> u64 {
    if n == 1 {
        0
    } else {
        4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time version this replaced: the estimate must not change.
    fn reference(text: &str) -> u64 {
        // Quarter tokens.
        let mut q: u64 = 0;
        let mut alpha_run: u64 = 0;
        let mut digit_run: u64 = 0;
        // Whitespace run: length, and whether it is a single plain space.
        let mut ws_run: u64 = 0;
        for &b in text.as_bytes() {
            let is_alpha = b.is_ascii_alphabetic();
            let is_digit = b.is_ascii_digit();
            let is_ws = b.is_ascii_whitespace();
            if !is_alpha && alpha_run > 0 {
                q += alpha_cost(alpha_run);
                alpha_run = 0;
            }
            if !is_digit && digit_run > 0 {
                q += 4 * digit_run.div_ceil(3);
                digit_run = 0;
            }
            if !is_ws && ws_run > 0 {
                q += ws_cost(ws_run);
                ws_run = 0;
            }
            if is_alpha {
                alpha_run += 1;
            } else if is_digit {
                digit_run += 1;
            } else if is_ws {
                ws_run += 1;
            } else if b < 0x80 {
                // ASCII punctuation or control.
                q += 4;
            } else {
                q += lead_cost(b);
            }
            // Continuation bytes (0x80..0xC0) cost nothing: the lead byte paid.
        }
        if alpha_run > 0 {
            q += alpha_cost(alpha_run);
        }
        if digit_run > 0 {
            q += 4 * digit_run.div_ceil(3);
        }
        if ws_run > 0 {
            q += ws_cost(ws_run);
        }
        q.div_ceil(4)
    }

    proptest::proptest! {
        #[test]
        fn same_estimate_as_byte_at_a_time(text in "(?s).{0,200}") {
            proptest::prop_assert_eq!(estimate_tokens(&text), reference(&text));
        }

        #[test]
        fn same_estimate_on_ascii_classes(text in "[a-z0-9 \\t\\n.,;()\\-]{0,200}") {
            proptest::prop_assert_eq!(estimate_tokens(&text), reference(&text));
        }
    }

    #[test]
    fn simple_counts() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("the"), 1);
        assert_eq!(estimate_tokens("the cat sat"), 3);
        assert_eq!(estimate_tokens("1234567"), 3);
        assert_eq!(estimate_tokens("()"), 2);
        assert_eq!(estimate_tokens("😀"), 3);
        assert_eq!(estimate_tokens("你好"), 3);
        assert_eq!(estimate_tokens("    "), 1);
    }

    #[test]
    fn grows_with_text() {
        let a = estimate_tokens("word ");
        let b = estimate_tokens(&"word ".repeat(100));
        assert!(b >= 100 && b <= 100 * a, "{a} {b}");
    }
}
