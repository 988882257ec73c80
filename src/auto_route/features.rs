//! Cheap prompt features and the difficulty score.
//!
//! [`difficulty`] says how much a prompt needs a strong model, in `[0, 1]`. It is a logistic
//! function of a handful of hand-weighted features read in one pass over the prompt (no
//! allocation, no model file):
//!
//! | feature | weight (log-odds) | why |
//! |---|---|---|
//! | `ln(1 + chars)` of the last user turn | +0.55 | longer questions carry more to get right |
//! | code cues (fences, `{ } ;`, `def`, `fn`, `class`, `import`, language names, ...) | +0.70 · ln(1 + n) | code is where strong models gain most |
//! | math cues (operators between digits, LaTeX, `solve`, `integral`, `probability`, ...) | +0.60 · ln(1 + n) | same for math |
//! | numbers in the prompt | +0.35 · ln(1 + n) | each quantity is a step of a word problem |
//! | reasoning cues (`why`, `prove`, `explain`, `compare`, `step by step`, ...) | +0.50 · ln(1 + n) | multi-step reasoning |
//! | constraint cues (`must`, `exactly`, `without`, `at least`, ...) | +0.25 · ln(1 + n) | several constraints to satisfy at once |
//! | easy-task cues (greetings, `translate`, `summarize`, `rewrite`, `poem`, `story`, `email`, ...) | −0.70 · ln(1 + n) | tasks weak models do well |
//! | share of non-Latin letters | +0.6 | smaller models are weaker outside English |
//! | conversation turns | +0.25 · ln(turns) | long conversations are harder to follow |
//! | tools / JSON schema / images | +0.5 / +0.3 / +0.3 | agentic and multimodal requests |
//! | `max_tokens` over 4,000 | +0.3 | long answers |
//!
//! Counts go through `ln(1 + n)` so that no single cue saturates the score and length keeps
//! ordering prompts with the same cues. Only the first 16 KiB of the text are scanned for cues
//! (a 1 MiB prompt costs the same as a 16 KiB one); the length term uses the full length.
//!
//! The weights were written from the priors above, not fitted. They were checked against the
//! MMLU and GSM8K sets of RouteLLM's evaluation data while writing them; MT-Bench was never
//! used to set them. See [`router`](super::router) for the measured numbers.

use super::tokens::estimate_tokens;

/// What the router knows about a request.
///
/// Built by the layer from the request body; [`PromptInfo::from_text`] builds one from a
/// single user message.
///
/// ```
/// use tower_llm_router::auto_route::PromptInfo;
///
/// let p = PromptInfo::from_text("What is the capital of France?");
/// assert_eq!(p.turns, 1);
/// assert_eq!(p.all_text_chars, 30);
/// assert!(p.estimated_tokens >= 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptInfo<'a> {
    /// The user's prompt text (last user turn).
    pub text: &'a str,
    /// Characters of all messages together (system, earlier turns, this one).
    pub all_text_chars: usize,
    /// Number of messages.
    pub turns: usize,
    /// Number of image parts.
    pub images: usize,
    /// Whether the request declares tools.
    pub has_tools: bool,
    /// Whether the request asks for `response_format: json_schema`.
    pub wants_json_schema: bool,
    /// Estimated prompt tokens of the whole request (see [`estimate_tokens`]).
    pub estimated_tokens: u64,
    /// The request's `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<u64>,
}

impl<'a> PromptInfo<'a> {
    /// A single-turn, text-only prompt.
    pub fn from_text(text: &'a str) -> Self {
        PromptInfo {
            text,
            all_text_chars: text.chars().count(),
            turns: 1,
            images: 0,
            has_tools: false,
            wants_json_schema: false,
            estimated_tokens: estimate_tokens(text),
            max_tokens: None,
        }
    }
}

/// Cue counts read from a prompt text by [`Features::extract`].
///
/// ```
/// use tower_llm_router::auto_route::Features;
///
/// let f = Features::extract("Prove that sqrt(2) is irrational, step by step.");
/// assert!(f.math >= 1 && f.reasoning >= 2);
/// assert_eq!(f.code, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features {
    /// Characters in the text.
    pub chars: u32,
    /// Code cues.
    pub code: u32,
    /// Math cues.
    pub math: u32,
    /// Numbers (runs of digits).
    pub numbers: u32,
    /// Reasoning cues.
    pub reasoning: u32,
    /// Constraint cues.
    pub constraints: u32,
    /// Easy-task cues.
    pub easy: u32,
    /// Share of letters outside ASCII, in `[0, 1]`.
    pub non_latin: f32,
}

const SCAN_LIMIT: usize = 16 * 1024;

/// Lowercased ASCII word in a small stack buffer (longer words are not cues).
const WORD_MAX: usize = 14;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cue {
    None,
    Code,
    Math,
    Reasoning,
    Constraint,
    Easy,
    /// A word that forms a cue with the next one ("step by", "how many", "at least").
    Lead,
}

fn word_cue(w: &[u8]) -> Cue {
    match w {
        b"def" | b"fn" | b"func" | b"function" | b"class" | b"struct" | b"impl" | b"import"
        | b"return" | b"const" | b"var" | b"void" | b"printf" | b"println" | b"console"
        | b"async" | b"await" | b"lambda" | b"python" | b"javascript" | b"typescript" | b"rust"
        | b"java" | b"cpp" | b"golang" | b"sql" | b"regex" | b"compile" | b"compiler"
        | b"debug" | b"bug" | b"code" | b"algorithm" | b"implement" | b"api" | b"json"
        | b"html" | b"css" | b"array" | b"pointer" | b"recursion" | b"recursive" | b"runtime"
        | b"complexity" | b"dataframe" | b"numpy" | b"bash" | b"shell" | b"script" | b"program"
        | b"programming" | b"null" | b"boolean" | b"int" | b"elif" | b"endl" | b"std" => Cue::Code,
        b"solve" | b"calculate" | b"compute" | b"equation" | b"equations" | b"integral"
        | b"derivative" | b"probability" | b"theorem" | b"sum" | b"product" | b"percent"
        | b"percentage" | b"ratio" | b"matrix" | b"polynomial" | b"sqrt" | b"log" | b"mod"
        | b"prime" | b"factor" | b"triangle" | b"angle" | b"area" | b"volume" | b"geometry"
        | b"algebra" | b"variance" | b"formula" | b"integer" | b"integers" | b"fraction"
        | b"divisible" | b"remainder" | b"average" | b"mean" | b"median" | b"total" | b"times"
        | b"twice" | b"half" | b"cost" | b"costs" | b"profit" | b"rate" | b"speed"
        | b"distance" | b"velocity" | b"acceleration" | b"energy" | b"mass" | b"frac" | b"cdot"
        | b"vector" | b"eigenvalue" | b"group" | b"ring" | b"field" | b"subgroup"
        | b"homomorphism" | b"statistic" | b"statistics" | b"expected" | b"digits" | b"each"
        | b"per" => Cue::Math,
        b"why" | b"prove" | b"proof" | b"explain" | b"reason" | b"reasoning" | b"analyze"
        | b"analyse" | b"analysis" | b"compare" | b"evaluate" | b"justify" | b"derive"
        | b"logic" | b"logical" | b"puzzle" | b"riddle" | b"infer" | b"deduce" | b"hypothesis"
        | b"critique" | b"tradeoff" | b"tradeoffs" | b"design" | b"optimize" | b"optimise"
        | b"strategy" | b"implication" | b"implies" | b"therefore" | b"consequently"
        | b"assume" | b"suppose" | b"if" | b"unless" | b"not" | b"except" | b"true" | b"false"
        | b"statement" | b"argument" => Cue::Reasoning,
        b"must" | b"exactly" | b"only" | b"without" | b"ensure" | b"include" | b"format"
        | b"words" | b"sentences" | b"bullet" | b"table" | b"limit" | b"maximum" | b"minimum"
        | b"constraint" | b"constraints" | b"require" | b"requirements" => Cue::Constraint,
        b"hi" | b"hello" | b"hey" | b"thanks" | b"thank" | b"translate" | b"translation"
        | b"summarize" | b"summarise" | b"summary" | b"rewrite" | b"rephrase" | b"paraphrase"
        | b"poem" | b"story" | b"joke" | b"email" | b"letter" | b"slogan" | b"haiku" | b"tweet"
        | b"blog" | b"pretend" | b"imagine" | b"roleplay" | b"persuasive" | b"creative"
        | b"catchy" | b"lyrics" | b"song" | b"greeting" | b"proofread" | b"grammar"
        | b"synonym" | b"describe" => Cue::Easy,
        b"step" | b"how" | b"at" | b"no" | b"think" => Cue::Lead,
        _ => Cue::None,
    }
}

/// Second word of a two-word cue.
fn pair_cue(first: &[u8], second: &[u8]) -> Cue {
    match (first, second) {
        (b"step", b"by") | (b"think", b"carefully") | (b"think", b"through") => Cue::Reasoning,
        (b"how", b"many") | (b"how", b"much") | (b"how", b"long") => Cue::Math,
        (b"at", b"least") | (b"at", b"most") | (b"no", b"more") => Cue::Constraint,
        _ => Cue::None,
    }
}

impl Features {
    /// Reads the cues of `text` in one pass (first 16 KiB), without allocating.
    pub fn extract(text: &str) -> Features {
        let bytes = text.as_bytes();
        let scanned = &bytes[..bytes.len().min(SCAN_LIMIT)];
        let mut f = Features {
            chars: u32::try_from(text.len()).unwrap_or(u32::MAX),
            ..Features::default()
        };
        let mut word = [0u8; WORD_MAX];
        let mut wlen = 0usize;
        let mut long_word = false;
        let mut prev = [0u8; WORD_MAX];
        let mut plen = 0usize;
        let mut in_digits = false;
        let mut last_digit_end = usize::MAX;
        let mut ascii_letters = 0u32;
        let mut other_letters = 0u32;
        let mut fence_ticks = 0u8;
        let mut prev_byte = b' ';

        let flush = |word: &[u8; WORD_MAX],
                     wlen: usize,
                     long: bool,
                     prev: &mut [u8; WORD_MAX],
                     plen: &mut usize,
                     f: &mut Features| {
            if wlen == 0 {
                return;
            }
            if long {
                *plen = 0;
                return;
            }
            let w = &word[..wlen];
            let cue = match pair_cue(&prev[..*plen], w) {
                Cue::None => word_cue(w),
                c => c,
            };
            match cue {
                Cue::Code => f.code += 1,
                Cue::Math => f.math += 1,
                Cue::Reasoning => f.reasoning += 1,
                Cue::Constraint => f.constraints += 1,
                Cue::Easy => f.easy += 1,
                Cue::Lead | Cue::None => {}
            }
            // The whole array: a fixed-size move, where a slice copy was a `memcpy` call.
            *prev = *word;
            *plen = wlen;
        };

        let mut i = 0;
        while let Some(&b) = scanned.get(i) {
            if wlen == 0 && b.is_ascii_alphabetic() {
                // A word: its letters and apostrophes in one go. None of them is a digit, an
                // operator or a backtick, so only the word, the letter count and the state of
                // the previous byte change.
                let rest = &scanned[i + 1..];
                let len = 1 + rest
                    .iter()
                    .position(|&c| !(c.is_ascii_alphabetic() || c == b'\''))
                    .unwrap_or(rest.len());
                let run = &scanned[i..i + len];
                if in_digits {
                    last_digit_end = i;
                    in_digits = false;
                }
                for &c in run {
                    ascii_letters += u32::from(c != b'\'');
                    if wlen < WORD_MAX {
                        word[wlen] = c.to_ascii_lowercase();
                        wlen += 1;
                    } else {
                        long_word = true;
                    }
                }
                fence_ticks = 0;
                prev_byte = run[len - 1];
                i += len;
                continue;
            }
            if b.is_ascii_alphabetic() || (b == b'\'' && wlen > 0) {
                ascii_letters += u32::from(b != b'\'');
                if wlen < WORD_MAX {
                    word[wlen] = b.to_ascii_lowercase();
                    wlen += 1;
                } else {
                    long_word = true;
                }
            } else {
                flush(&word, wlen, long_word, &mut prev, &mut plen, &mut f);
                wlen = 0;
                long_word = false;
            }
            let is_digit = b.is_ascii_digit();
            if is_digit && !in_digits && !(prev_byte == b'.' || prev_byte == b',') {
                f.numbers += 1;
            }
            if !is_digit && in_digits {
                last_digit_end = i;
            }
            in_digits = is_digit;
            match b {
                // Operators between numbers ("3 + 4", "2x^2", "x = 5") are math.
                b'+' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%' => {
                    if last_digit_end != usize::MAX && i.saturating_sub(last_digit_end) <= 2 {
                        f.math += 1;
                    }
                    if b == b'=' && (prev_byte == b'=' || prev_byte == b'!') {
                        f.code += 1;
                    }
                    if b == b'>' && (prev_byte == b'-' || prev_byte == b'=') {
                        f.code += 1;
                    }
                }
                b'\\' | b'$' => f.math += 1,
                b'{' | b'}' | b';' => f.code += 1,
                b'`' => {
                    fence_ticks += 1;
                    if fence_ticks == 3 {
                        f.code += 3;
                    }
                }
                _ => {}
            }
            if b != b'`' {
                fence_ticks = 0;
            }
            if b >= 0xC0 {
                other_letters += 1;
            }
            prev_byte = b;
            i += 1;
        }
        flush(&word, wlen, long_word, &mut prev, &mut plen, &mut f);
        let letters = ascii_letters + other_letters;
        if letters > 0 {
            f.non_latin = other_letters as f32 / letters as f32;
        }
        f
    }

    /// The text part of the difficulty, in log-odds (before the request metadata).
    pub fn logit(&self) -> f32 {
        let l = |n: u32| (n as f32).ln_1p();
        -4.0 + 0.55 * l(self.chars)
            + 0.70 * l(self.code)
            + 0.60 * l(self.math)
            + 0.35 * l(self.numbers)
            + 0.50 * l(self.reasoning)
            + 0.25 * l(self.constraints)
            - 0.70 * l(self.easy)
            + 0.6 * self.non_latin
    }
}

/// How much this prompt needs a strong model, in `[0, 1]`.
///
/// See the [module docs](self) for the features and weights.
///
/// ```
/// use tower_llm_router::auto_route::{difficulty, PromptInfo};
///
/// let easy = difficulty(&PromptInfo::from_text("hi! translate 'thank you' to French"));
/// let hard = difficulty(&PromptInfo::from_text(
///     "Prove that for every integer n > 1 the sum 1/2 + 1/3 + ... + 1/n is never an integer. \
///      Explain each step and why the argument holds.",
/// ));
/// assert!((0.0..=1.0).contains(&easy) && (0.0..=1.0).contains(&hard));
/// assert!(hard > easy);
/// ```
pub fn difficulty(prompt: &PromptInfo<'_>) -> f32 {
    let f = Features::extract(prompt.text);
    let mut z = f.logit();
    if prompt.turns > 1 {
        z += 0.25 * (prompt.turns as f32).ln();
    }
    if prompt.has_tools {
        z += 0.5;
    }
    if prompt.wants_json_schema {
        z += 0.3;
    }
    if prompt.images > 0 {
        z += 0.3;
    }
    if prompt.max_tokens.is_some_and(|m| m > 4000) {
        z += 0.3;
    }
    let d = 1.0 / (1.0 + (-z).exp());
    if d.is_finite() {
        d.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time version the word-at-a-time loop replaced: the features must not
    /// change.
    fn reference(text: &str) -> Features {
        let bytes = text.as_bytes();
        let scanned = &bytes[..bytes.len().min(SCAN_LIMIT)];
        let mut f = Features {
            chars: u32::try_from(text.len()).unwrap_or(u32::MAX),
            ..Features::default()
        };
        let mut word = [0u8; WORD_MAX];
        let mut wlen = 0usize;
        let mut long_word = false;
        let mut prev = [0u8; WORD_MAX];
        let mut plen = 0usize;
        let mut in_digits = false;
        let mut last_digit_end = usize::MAX;
        let mut ascii_letters = 0u32;
        let mut other_letters = 0u32;
        let mut fence_ticks = 0u8;
        let mut prev_byte = b' ';

        let flush = |word: &[u8; WORD_MAX],
                     wlen: usize,
                     long: bool,
                     prev: &mut [u8; WORD_MAX],
                     plen: &mut usize,
                     f: &mut Features| {
            if wlen == 0 {
                return;
            }
            if long {
                *plen = 0;
                return;
            }
            let w = &word[..wlen];
            let cue = match pair_cue(&prev[..*plen], w) {
                Cue::None => word_cue(w),
                c => c,
            };
            match cue {
                Cue::Code => f.code += 1,
                Cue::Math => f.math += 1,
                Cue::Reasoning => f.reasoning += 1,
                Cue::Constraint => f.constraints += 1,
                Cue::Easy => f.easy += 1,
                Cue::Lead | Cue::None => {}
            }
            prev[..wlen].copy_from_slice(w);
            *plen = wlen;
        };

        for (i, &b) in scanned.iter().enumerate() {
            if b.is_ascii_alphabetic() || (b == b'\'' && wlen > 0) {
                ascii_letters += u32::from(b != b'\'');
                if wlen < WORD_MAX {
                    word[wlen] = b.to_ascii_lowercase();
                    wlen += 1;
                } else {
                    long_word = true;
                }
            } else {
                flush(&word, wlen, long_word, &mut prev, &mut plen, &mut f);
                wlen = 0;
                long_word = false;
            }
            let is_digit = b.is_ascii_digit();
            if is_digit && !in_digits && !(prev_byte == b'.' || prev_byte == b',') {
                f.numbers += 1;
            }
            if !is_digit && in_digits {
                last_digit_end = i;
            }
            in_digits = is_digit;
            match b {
                // Operators between numbers ("3 + 4", "2x^2", "x = 5") are math.
                b'+' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%' => {
                    if last_digit_end != usize::MAX && i.saturating_sub(last_digit_end) <= 2 {
                        f.math += 1;
                    }
                    if b == b'=' && (prev_byte == b'=' || prev_byte == b'!') {
                        f.code += 1;
                    }
                    if b == b'>' && (prev_byte == b'-' || prev_byte == b'=') {
                        f.code += 1;
                    }
                }
                b'\\' | b'$' => f.math += 1,
                b'{' | b'}' | b';' => f.code += 1,
                b'`' => {
                    fence_ticks += 1;
                    if fence_ticks == 3 {
                        f.code += 3;
                    }
                }
                _ => {}
            }
            if b != b'`' {
                fence_ticks = 0;
            }
            if b >= 0xC0 {
                other_letters += 1;
            }
            prev_byte = b;
        }
        flush(&word, wlen, long_word, &mut prev, &mut plen, &mut f);
        let letters = ascii_letters + other_letters;
        if letters > 0 {
            f.non_latin = other_letters as f32 / letters as f32;
        }
        f
    }

    proptest::proptest! {
        #[test]
        fn same_features_as_byte_at_a_time(text in "(?s).{0,300}") {
            proptest::prop_assert_eq!(Features::extract(&text), reference(&text));
        }

        #[test]
        fn same_features_on_prompt_like_text(
            text in "([a-zA-Z']{1,16}|[0-9]{1,4}|[ .,=+*/^<>%$`{};!\\-]|```|step by|how many|at least){0,60}"
        ) {
            proptest::prop_assert_eq!(Features::extract(&text), reference(&text));
        }
    }

    #[test]
    fn cues_are_counted() {
        let f = Features::extract("```rust\nfn main() { println!(\"x\"); }\n```");
        assert!(f.code >= 6, "{f:?}");
        let f = Features::extract("How many apples? 3 + 4 = 7, and 12/4 is 3.");
        assert!(f.math >= 4, "{f:?}");
        assert_eq!(f.numbers, 6);
        let f = Features::extract("Hello! Please translate and summarize this email.");
        assert_eq!(f.easy, 4);
        let f = Features::extract("You must answer in at least 50 words, exactly.");
        assert_eq!(f.constraints, 4);
        let f = Features::extract("Привет, как дела?");
        assert!(f.non_latin > 0.9);
    }

    #[test]
    fn metadata_raises_difficulty() {
        let text = "Book a table for two tonight.";
        let base = PromptInfo::from_text(text);
        let d0 = difficulty(&base);
        for p in [
            PromptInfo {
                has_tools: true,
                ..base
            },
            PromptInfo { turns: 8, ..base },
            PromptInfo { images: 1, ..base },
            PromptInfo {
                wants_json_schema: true,
                ..base
            },
            PromptInfo {
                max_tokens: Some(8000),
                ..base
            },
        ] {
            assert!(difficulty(&p) > d0, "{p:?}");
        }
    }

    #[test]
    fn longer_is_harder_for_same_cues() {
        let short = "What is the boiling point of water?";
        let long = "What is the boiling point of water at the summit of a mountain where the \
                    air pressure is lower than at sea level, for an ordinary open pot?";
        assert!(
            difficulty(&PromptInfo::from_text(long)) > difficulty(&PromptInfo::from_text(short))
        );
    }

    #[test]
    fn huge_and_odd_inputs_stay_in_range() {
        let big = "x".repeat(2_000_000);
        for t in ["", "\u{0}", "🙂🙂🙂", big.as_str(), "٣ + ٤ = ٧"] {
            let d = difficulty(&PromptInfo::from_text(t));
            assert!((0.0..=1.0).contains(&d), "{d}");
        }
    }
}
