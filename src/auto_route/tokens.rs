//! A fast, conservative token count estimate.
//!
//! [`estimate_tokens`] reads the text once, without branches on the text or allocation, and
//! errs on the high side of the `cl100k_base` / `o200k_base` BPE counts, so that a
//! context-window check based on it does not send a prompt to a model that cannot hold it.
//! Costs, in tokens:
//!
//! | text | cost |
//! |---|---|
//! | run of `n` ASCII letters | `(2 + n) / 4`: a 2-letter word 1, a 6-letter word 2 |
//! | run of `n` ASCII digits | `(2 + n) · 3 / 8` (BPE splits numbers in groups of 3) |
//! | ASCII punctuation | 1 each (merged pairs such as `();` make this generous) |
//! | whitespace | a single space free (BPE glues it to the next word); each further space 1/4, tab 1/2, line break 1 |
//! | Cyrillic letters | 3/4 each |
//! | other 2-byte UTF-8 characters (accented Latin, Greek, Arabic, ...) | 1 each |
//! | Hebrew letters | 5/4 each |
//! | Armenian letters | 9/4 each |
//! | combining marks (U+0300..U+036F, decomposed accents) | 2 each |
//! | CJK ideographs, kana, other 3-byte UTF-8 characters | 5/4 each |
//! | Hangul syllables, Indic scripts, Thai (U+0800..U+0FFF) | 3/2 each |
//! | punctuation, math and other symbols of U+2000..U+2FFF | 7/4 each |
//! | Georgian, Ethiopic, Myanmar, Khmer, Vietnamese letters (U+1000..U+1FFF) | 3 each |
//! | 4-byte UTF-8 characters (emoji, rare CJK) | 4 each |
//!
//! A script that BPE vocabularies hold few merges for costs as many tokens as bytes (the most a
//! byte-level BPE can take): Armenian, Georgian and Ethiopic text takes about that many in
//! `cl100k_base`, twice what a letter of a well-served script costs.
//!
//! `tests/auto_route_router.rs` prints the ratio of this estimate to real `cl100k_base` and
//! `o200k_base` counts on English prose, code, and Chinese, Japanese, Russian, Arabic, Korean,
//! Hindi, Armenian, Georgian, Amharic, Khmer, Myanmar, Hebrew, Greek, decomposed Vietnamese,
//! math and emoji text, and asserts that it is never below 0.95x and stays under 2.5x on
//! English (`cargo test --test auto_route_router tokens -- --nocapture`). Not covered: long
//! runs of random ASCII (base64, hashes), which BPE splits more finely than words and this
//! estimate counts as words (about 0.65x).

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
    // Eighths of a token. Branch-free: every byte adds its own cost, plus a start cost when
    // it opens a run of letters, digits or whitespace; [`COST`] holds both, by the class of
    // the byte before. The class is read from the byte itself, so no load waits on another.
    // Four bytes a loop turn.
    let mut q: i64 = 0;
    let mut prev = usize::from(OTHER) << 8;
    let mut add = |b: u8| {
        q += i64::from(COST[(prev | usize::from(b)) & 0x3FF]);
        prev = usize::from(CLASS_HIGH[usize::from(b)]);
    };
    let quads = text.as_bytes().chunks_exact(4);
    let rest = quads.remainder();
    for quad in quads {
        quad.iter().for_each(|&b| add(b));
    }
    rest.iter().for_each(|&b| add(b));
    // A run start never costs more than the bytes of its run, so `q` is never negative.
    (q.max(0) as u64).div_ceil(8)
}

const ALPHA: u8 = 0;
const DIGIT: u8 = 1;
const SPACE: u8 = 2;
const OTHER: u8 = 3;

/// Eighths of a token when a run of this class starts: letters 1/2 (with 1/4 per letter, a
/// word of `n` letters costs `(2 + n) / 4`); digits 3/4 (with 3/8 per digit); whitespace -1/4
/// (so that the single space before a word is free).
const RUN_START: [i8; 4] = [4, 6, -2, 0];

/// Byte classes: letters, digits and whitespace form runs; everything else stands alone.
#[cfg(test)]
static CLASS: [u8; 256] = CLASSES;

/// [`CLASSES`] shifted to the high byte of an index into [`COST`].
static CLASS_HIGH: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (CLASSES[b] as u16) << 8;
        b += 1;
    }
    t
};

const CLASSES: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            ALPHA
        } else if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_whitespace() {
            SPACE
        } else {
            OTHER
        };
        b += 1;
    }
    t
};

/// Eighths of a token per byte. Non-ASCII lead bytes pay for their whole character,
/// continuation bytes (`0x80..0xC0`) nothing.
const PER_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            2
        } else if c.is_ascii_digit() {
            3
        } else if c == b'\n' || c == b'\r' {
            8
        } else if c == b'\t' {
            4
        } else if c.is_ascii_whitespace() {
            2
        } else {
            match c {
                // ASCII punctuation and controls: a token each.
                0x00..=0x7F => 8,
                0x80..=0xBF => 0,
                // Combining marks (U+0300..U+036F), which BPE seldom merges: two tokens, as
                // many as bytes, the most a byte-level BPE can take.
                0xCC | 0xCD => 16,
                // Armenian (U+0530..U+058F, beside the rare Cyrillic Supplement and Hebrew
                // points): two tokens, and the space before a word, which BPE does not merge
                // with them (1/4).
                0xD4..=0xD6 => 18,
                // Cyrillic.
                0xD0..=0xD3 => 6,
                // Hebrew.
                0xD7 => 10,
                // Other 2-byte characters: Latin accents, Greek, Arabic, ...
                0xC0..=0xDF => 8,
                // U+0800..U+0FFF (Indic scripts, Thai, Tibetan, ...) and Hangul syllables.
                0xE0 | 0xEA..=0xED => 12,
                // U+1000..U+1FFF: Myanmar, Georgian, Ethiopic, Khmer, ..., Vietnamese letters.
                // Three tokens: as many as bytes.
                0xE1 => 24,
                // U+2000..U+2FFF: punctuation, math operators, arrows, symbols.
                0xE2 => 14,
                // Other 3-byte characters: CJK, kana, fullwidth forms.
                0xE3..=0xEF => 10,
                // 4-byte characters: emoji, rare CJK. Four tokens: as many as bytes.
                0xF0..=0xFF => 32,
            }
        };
        b += 1;
    }
    t
};

/// Eighths of a token for byte `b` after a byte of class `c`, at `c << 8 | b`: its
/// [`PER_BYTE`] cost, plus its class's [`RUN_START`] when the class changes.
static COST: [i8; 4 * 256] = {
    let mut t = [0i8; 4 * 256];
    let mut i = 0;
    while i < 4 * 256 {
        let (prev, b) = ((i >> 8) as u8, i & 0xFF);
        let class = CLASSES[b];
        let start = if class != prev {
            RUN_START[class as usize]
        } else {
            0
        };
        t[i] = PER_BYTE[b] as i8 + start;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_counts() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("the"), 2);
        assert_eq!(estimate_tokens("the cat sat"), 4);
        assert_eq!(estimate_tokens("1234567"), 4);
        assert_eq!(estimate_tokens("\n"), 1);
        assert_eq!(estimate_tokens("()"), 2);
        assert_eq!(estimate_tokens("😀"), 4);
        assert_eq!(estimate_tokens("你好"), 3);
        assert_eq!(estimate_tokens("    "), 1);
    }

    /// The estimate as first written: a byte's cost, then its run's start cost on a change of
    /// class (the rules of the module docs, one table at a time).
    fn reference(text: &str) -> u64 {
        let mut q: i64 = 0;
        let mut prev = OTHER;
        for &b in text.as_bytes() {
            let class = CLASS[usize::from(b)];
            q += i64::from(PER_BYTE[usize::from(b)]);
            if class != prev {
                q += i64::from(RUN_START[usize::from(class)]);
            }
            prev = class;
        }
        (q.max(0) as u64).div_ceil(8)
    }

    proptest::proptest! {
        #[test]
        fn equals_the_reference(text in "(\\PC|[ \t\r\n\x0b\x0c0-9a-zA-Z,.;'`]){0,64}") {
            proptest::prop_assert_eq!(estimate_tokens(&text), reference(&text));
        }

        #[test]
        fn equals_the_reference_on_any_utf8(text in proptest::arbitrary::any::<String>()) {
            proptest::prop_assert_eq!(estimate_tokens(&text), reference(&text));
        }
    }

    #[test]
    fn grows_with_text() {
        let a = estimate_tokens("word ");
        let b = estimate_tokens(&"word ".repeat(100));
        assert!(b >= 100 && b <= 100 * a, "{a} {b}");
    }
}
