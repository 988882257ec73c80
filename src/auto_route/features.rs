//! Cheap prompt features and the difficulty score.
//!
//! [`difficulty`] says how much a prompt needs a strong model, in `[0, 1]`. It is a logistic
//! function of two parts read in one pass over the prompt (no allocation, no model file):
//!
//! 1. A coarse **task-kind prior** ([`Features::task_prior`]), from unambiguous evidence only:
//!    `+1.5` (log-odds) when the prompt is clearly a code, math or logic task, `−1.5` when it is
//!    clearly a task weak models do well (writing, role play, rewriting, translation,
//!    summarising, extraction, greetings, tips and ideas). Learned routers mostly capture this
//!    coarse kind; within one kind it says little.
//! 2. A **within-kind difficulty** ([`Features::within_kind`]): length and cues of how much
//!    there is to get right.
//!
//! | part | feature | weight (log-odds) |
//! |---|---|---|
//! | kind | code: fences (3 each), programming words (`python`, `function`, `regex`, `debug`, `implement`, "unit test", ...), a request for a program ("write a script": 2) | +1.5 · min(1, n / 2) |
//! | kind | math: `solve`, `prove`, `derive`, `calculate`, `equation`, `integral`, `probability`, ... | +1.5 · min(1, n / 2) |
//! | kind | logic: `puzzle`, `riddle`, `logic`, `deduce`, `infer`, "step by step", ... | +1.5 · min(1, n) |
//! | | (the three above: the largest counts, not their sum) | |
//! | kind | light task: a request for a text ("write / draft / give ... a story, an email, a blog post"), `rewrite`, `paraphrase`, `proofread`, `translate`, `summarize`, `extract`, `classify`, `pretend`, "act as", "you are ..." opening a sentence, greetings, `tips`, `ideas`, `poem`, ... | −1.5 · min(1, n) |
//! | within | `ln(1 + len)` of the prompt text (UTF-8 bytes) | +0.55 |
//! | within | negations (`not`, `except`, `never`, `-n't`, ...) | +0.40 · ln(1 + n) |
//! | within | capitalised words (names, sentence starts) | +0.30 · ln(1 + n) |
//! | within | commas | +0.20 · ln(1 + n) |
//! | within | reasoning cues (`why`, `explain`, `compare`, `if`, `prove`, ...) | +0.20 · ln(1 + n) |
//! | within | constraint cues (`must`, `exactly`, `without`, `at least`, ...) | +0.15 · ln(1 + n) |
//! | within | share of non-ASCII letters | +0.6 |
//! | request | conversation turns | +0.25 · ln(turns) |
//! | request | characters of context beyond the prompt (system, history, documents) | +0.2 · ln(1 + n / 2000) |
//! | request | tools / JSON schema / images | +0.5 / +0.3 / +0.3 |
//! | request | `max_tokens` over 4,000 | +0.3 |
//!
//! plus an intercept of −4.3, so that a greeting scores about 0.01, an everyday question 0.1
//! to 0.25, a writing request about 0.05 and a code, math or logic task 0.5 or more.
//!
//! A generic request verb (`write`, `create`, `give`, `tell`, ...) counts only among the first
//! three words of a sentence ("Write", "Please write", "Can you write") and takes the kind of
//! its object within the next six words: "write a story" is a light task, "write a script" a
//! code task, "she wrote a letter" neither. Only the first 16 KiB of the text are scanned for
//! cues (a 1 MiB prompt costs the same as a 16 KiB one); the length term uses the full length.
//!
//! Math notation (operators next to digits, LaTeX) and code punctuation (`{ } ;`, `==`, `->`)
//! are counted ([`Features::math_symbols`], [`Features::code_symbols`]) but not scored: on
//! MMLU, prompts with short calculations were ones where the weak model kept up, and counting
//! them as math tasks cost 0.015 to 0.02 of APGR.
//!
//! The weights were written by hand, not fitted. The within-kind weights are those of the
//! previous version (checked against MMLU and GSM8K while writing them); the kind word lists
//! were written from general prompt types, and the prior's strength (±1.5) was checked on
//! MMLU and GSM8K only. MT-Bench was never used to set anything. See
//! [`router`](super::router) for the measured numbers and how to reproduce them.

use super::tokens::estimate_tokens;

/// What the router knows about a request.
///
/// Built by the layer from the request body, whichever API's shape it has (chat
/// completions, the Responses API, Anthropic's Messages API: see
/// [`ChatRequest::prompt`](crate::payload::ChatRequest::prompt)); [`PromptInfo::from_text`]
/// builds one from a single user message.
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
    /// The user's prompt text (last user turn; a Responses API `input` string is one). System
    /// text and tools' results are never part of it.
    pub text: &'a str,
    /// Characters of all messages together (system text, whether a `system` message,
    /// Anthropic's `system` or the Responses API's `instructions`; earlier turns; tools'
    /// results; this one).
    pub all_text_chars: usize,
    /// Number of messages (or `input` items), the system text counting as one.
    pub turns: usize,
    /// Number of image parts (`image_url`, `input_image`, Anthropic's `image`).
    pub images: usize,
    /// Number of audio parts (`input_audio`).
    pub audio: usize,
    /// Number of video parts (`video_url`, `input_video`).
    pub videos: usize,
    /// Number of file parts (`file`, `input_file`, Anthropic's `document`: PDFs).
    pub files: usize,
    /// Whether the request declares tools.
    pub has_tools: bool,
    /// Whether the request asks for a JSON schema (`response_format`, the Responses API's
    /// `text.format`, Anthropic's `output_config.format` or `output_format`).
    pub wants_json_schema: bool,
    /// Estimated prompt tokens of the whole request (see [`estimate_tokens`]).
    pub estimated_tokens: u64,
    /// The request's `max_tokens` (or `max_completion_tokens`, or the Responses API's
    /// `max_output_tokens`).
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
            audio: 0,
            videos: 0,
            files: 0,
            has_tools: false,
            wants_json_schema: false,
            estimated_tokens: estimate_tokens(text),
            max_tokens: None,
        }
    }
}

/// Cue counts read from a prompt text by [`Features::extract`].
///
/// Two groups: evidence of the *task kind* (`code`, `math`, `puzzle` for tasks that need a
/// strong model, `light` for tasks a weak one does well) and *within-kind* difficulty (length,
/// negations, commas, capitalised words, reasoning and constraint cues).
///
/// ```
/// use tower_llm_router::auto_route::Features;
///
/// let f = Features::extract("Prove that sqrt(2) is irrational, step by step.");
/// assert!(f.math >= 1 && f.puzzle >= 1 && f.reasoning >= 2);
/// assert_eq!((f.code, f.light), (0, 0));
/// let f = Features::extract("Please write a short poem about autumn.");
/// assert!(f.light >= 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features {
    /// Length of the text in UTF-8 bytes (so non-Latin scripts weigh more per character).
    pub chars: u32,
    /// Evidence of a programming task: code fences (3 each), programming words (`python`,
    /// `function`, `debug`, `regex`, ...) and requests such as "write a script" (2 each).
    pub code: u32,
    /// Code punctuation: `{`, `}`, `;`, `==`, `!=`, `->`, `=>` (recorded, not scored: it
    /// also occurs in prose lists and citations).
    pub code_symbols: u32,
    /// Evidence of a math task: `solve`, `prove`, `calculate`, `equation`, `integral`, ...
    pub math: u32,
    /// Math notation: operators next to digits (`3 + 4`, `x^2`, `= 5`) and LaTeX backslashes
    /// (recorded, not scored: short calculations are where weak models keep up).
    pub math_symbols: u32,
    /// Evidence of a logic task: `puzzle`, `riddle`, `logic`, `deduce`, `step by step`, ...
    pub puzzle: u32,
    /// Evidence of a task weak models do well: writing requests ("write a story / an email"),
    /// role play (`pretend`, "act as"), rewriting, translation, summaries, extraction,
    /// greetings, tips and ideas.
    pub light: u32,
    /// Numbers (runs of digits).
    pub numbers: u32,
    /// Reasoning cues (`why`, `explain`, `compare`, `if`, `prove`, ...).
    pub reasoning: u32,
    /// Constraint cues (`must`, `exactly`, `at least`, ...).
    pub constraints: u32,
    /// Negations (`not`, `no`, `never`, `except`, `none`, `neither`, `nor`, `cannot`, `-n't`).
    pub negations: u32,
    /// Commas.
    pub commas: u32,
    /// Capitalised words (`Paris`, `The`): names and sentence starts.
    pub capitalized: u32,
    /// Share of letters outside ASCII, in `[0, 1]`.
    pub non_latin: f32,
}

const SCAN_LIMIT: usize = 16 * 1024;

/// Longest word (bytes) looked up as a cue; longer words are not cues.
const WORD_MAX: usize = 14;

/// A request verb opens a request only within the first words of a sentence ("Write", "Please
/// write", "Can you write"), and the request looks this many words ahead for its object.
const REQUEST_START: u32 = 3;
const REQUEST_REACH: u8 = 6;

/// What a word says about within-kind difficulty.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cue {
    None,
    Reasoning,
    Constraint,
    Negation,
    /// A word that forms a cue with the next one ("step by", "act as", "at least").
    Lead,
}

/// What a word says about the task kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Code,
    Math,
    Puzzle,
    Light,
    /// A generic request verb (`write`, `create`, `give`, ...): the kind is its object's.
    Request,
    /// An object that makes a request a writing task (`story`, `email`, `essay`, ...).
    Text,
    /// An object that makes a request a programming task (`script`, `program`, `query`, ...).
    Program,
}

macro_rules! cue_words {
    ($($cue:ident $kind:ident: [$($w:literal)*];)*) => {
        &[$($(($w as &[u8], Cue::$cue, Kind::$kind),)*)*]
    };
}

/// Lowercase cue words: their within-kind cue and their task kind.
const CUE_WORDS: &[(&[u8], Cue, Kind)] = cue_words! {
    Reasoning None: [
        b"why" b"explain" b"reason" b"reasoning" b"analyze" b"analyse" b"analysis" b"compare"
        b"evaluate" b"justify" b"hypothesis" b"critique" b"tradeoff" b"tradeoffs" b"design"
        b"optimize" b"optimise" b"strategy" b"implication" b"implies" b"therefore"
        b"consequently" b"assume" b"suppose" b"if" b"unless" b"true" b"false" b"statement"
        b"argument"
    ];
    Reasoning Math: [b"prove" b"proof" b"derive"];
    Reasoning Puzzle: [b"logic" b"logical" b"puzzle" b"riddle" b"infer" b"deduce"];
    Constraint None: [
        b"must" b"exactly" b"only" b"without" b"ensure" b"include" b"format" b"words"
        b"sentences" b"bullet" b"table" b"limit" b"maximum" b"minimum" b"constraint"
        b"constraints" b"require" b"requirements"
    ];
    Negation None: [b"not" b"never" b"except" b"none" b"neither" b"nor" b"cannot"];
    Lead None: [
        b"step" b"at" b"no" b"think" b"act" b"imagine" b"you" b"role" b"unit" b"time"
        b"respond" b"answer" b"speak" b"in" b"brain"
    ];
    None Code: [
        b"python" b"javascript" b"typescript" b"java" b"rust" b"golang" b"cpp" b"sql" b"regex"
        b"html" b"css" b"bash" b"numpy" b"pandas" b"dataframe" b"api" b"json" b"function"
        b"recursion" b"recursive" b"algorithm" b"compiler" b"runtime" b"debug" b"refactor"
        b"implement" b"compile"
    ];
    None Math: [
        b"solve" b"calculate" b"compute" b"integrate" b"differentiate" b"equation"
        b"equations" b"integral" b"derivative" b"theorem" b"polynomial" b"matrix"
        b"eigenvalue" b"probability" b"lemma" b"logarithm" b"factorial" b"modulo"
        b"inequality"
    ];
    None Puzzle: [b"paradox"];
    None Light: [
        b"rewrite" b"rephrase" b"paraphrase" b"reword" b"proofread" b"revise" b"edit"
        b"shorten" b"condense" b"translate" b"summarize" b"summarise" b"extract" b"classify"
        b"categorize" b"categorise" b"pretend" b"roleplay" b"persona" b"hi" b"hello" b"hey"
        b"thanks" b"thank" b"greetings" b"poem" b"haiku" b"limerick" b"lyrics" b"persuasive"
        b"catchy" b"slogan" b"tweet" b"tips" b"brainstorm" b"recommend" b"suggestions"
        b"ideas" b"advice"
    ];
    None Request: [
        b"write" b"compose" b"draft" b"craft" b"create" b"generate" b"make" b"give"
        b"produce" b"develop" b"build" b"tell"
    ];
    None Text: [
        b"poems" b"story" b"stories" b"essay" b"essays" b"email" b"emails" b"letter"
        b"letters" b"blog" b"post" b"posts" b"speech" b"song" b"songs" b"tweets" b"slogans"
        b"ad" b"ads" b"advertisement" b"headline" b"headlines" b"description" b"review"
        b"article" b"articles" b"paragraph" b"paragraphs" b"dialogue" b"dialog" b"joke"
        b"jokes" b"toast" b"invitation" b"announcement" b"bio" b"biography" b"outline"
        b"proposal" b"newsletter" b"caption" b"captions" b"tagline" b"jingle" b"sonnet"
        b"verse" b"rap" b"anecdote" b"itinerary" b"recipe" b"message" b"note" b"card"
        b"pitch" b"plot" b"narrative" b"tale" b"fable"
    ];
    None Program: [
        b"functions" b"program" b"programs" b"script" b"code" b"class" b"method" b"methods"
        b"query" b"app" b"website" b"webpage" b"endpoint"
    ];
};

/// Two-word cues: (first, second, within-kind cue, task kind). Every first word is a
/// [`Cue::Lead`] word.
const CUE_PAIRS: [(u128, u128, Cue, Kind); 16] = [
    (pack(b"step"), pack(b"by"), Cue::Reasoning, Kind::Puzzle),
    (
        pack(b"think"),
        pack(b"carefully"),
        Cue::Reasoning,
        Kind::None,
    ),
    (pack(b"think"), pack(b"through"), Cue::Reasoning, Kind::None),
    (pack(b"think"), pack(b"step"), Cue::None, Kind::Puzzle),
    (pack(b"brain"), pack(b"teaser"), Cue::None, Kind::Puzzle),
    (pack(b"at"), pack(b"least"), Cue::Constraint, Kind::None),
    (pack(b"at"), pack(b"most"), Cue::Constraint, Kind::None),
    (pack(b"no"), pack(b"more"), Cue::Constraint, Kind::None),
    (pack(b"unit"), pack(b"test"), Cue::None, Kind::Code),
    (pack(b"time"), pack(b"complexity"), Cue::None, Kind::Code),
    (pack(b"act"), pack(b"as"), Cue::None, Kind::Light),
    (pack(b"imagine"), pack(b"you"), Cue::None, Kind::Light),
    (pack(b"role"), pack(b"of"), Cue::None, Kind::Light),
    (pack(b"respond"), pack(b"as"), Cue::None, Kind::Light),
    (pack(b"speak"), pack(b"as"), Cue::None, Kind::Light),
    (pack(b"in"), pack(b"character"), Cue::None, Kind::Light),
];

/// "You are ..." opening a sentence sets up a role play.
const YOU: u128 = pack(b"you");
const ARE: u128 = pack(b"are");
/// "Answer as ..." is a role; "answer" alone is not.
const ANSWER: u128 = pack(b"answer");
const AS: u128 = pack(b"as");

/// A word of at most 16 bytes as an integer key: its bytes in little-endian order, as
/// [`short_word`] loads them (never 0 for a non-empty ASCII word).
const fn pack(w: &[u8]) -> u128 {
    let mut k = 0u128;
    let mut i = 0;
    while i < w.len() {
        k |= (w[i] as u128) << (8 * i);
        i += 1;
    }
    k
}

const SLOT_BITS: u32 = 9;
const BUCKET_BITS: u32 = 7;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;

/// Hash bits of a key ([`pack`]): its bucket is the top [`BUCKET_BITS`].
const fn hash(key: u128) -> u64 {
    ((key as u64) ^ ((key >> 64) as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

const fn bucket(h: u64) -> usize {
    (h >> (64 - BUCKET_BITS)) as usize
}

/// The slot of a key of hash `h` in a bucket of displacement `d`: the displacement permutes
/// the slots of the bucket's keys (other bits of the hash than the bucket's).
const fn slot(h: u64, d: u16) -> usize {
    ((h >> 32) as usize ^ d as usize) & SLOT_MASK
}

/// The cue words in a perfect hash table ("hash and displace"), built at compile time: each
/// bucket of words has a displacement that puts its words in free slots, so a lookup reads
/// one displacement and one slot and compares one key, with no probing.
struct CueTable {
    displacement: [u16; 1 << BUCKET_BITS],
    /// Keys; 0 in a free slot.
    keys: [u128; 1 << SLOT_BITS],
    cues: [(Cue, Kind); 1 << SLOT_BITS],
}

static CUE_TABLE: CueTable = {
    const N: usize = CUE_WORDS.len();
    let mut hashes = [0u64; N];
    let mut size = [0usize; 1 << BUCKET_BITS];
    let mut largest = 0;
    let mut i = 0;
    while i < N {
        hashes[i] = hash(pack(CUE_WORDS[i].0));
        let b = bucket(hashes[i]);
        size[b] += 1;
        if size[b] > largest {
            largest = size[b];
        }
        i += 1;
    }
    let mut t = CueTable {
        displacement: [0; 1 << BUCKET_BITS],
        keys: [0; 1 << SLOT_BITS],
        cues: [(Cue::None, Kind::None); 1 << SLOT_BITS],
    };
    let mut taken = [false; 1 << SLOT_BITS];
    // The largest buckets first, while most slots are free.
    let mut want = largest;
    while want > 0 {
        let mut b = 0;
        while b < 1 << BUCKET_BITS {
            if size[b] == want {
                let mut d = 0u16;
                loop {
                    // Take the bucket's slots for displacement `d`; give them back on a clash.
                    let mut placed = 0;
                    let mut clash = false;
                    while placed < N && !clash {
                        if bucket(hashes[placed]) == b {
                            let s = slot(hashes[placed], d);
                            if taken[s] {
                                clash = true;
                            } else {
                                taken[s] = true;
                            }
                        }
                        placed += 1;
                    }
                    let mut j = 0;
                    while j < placed {
                        if bucket(hashes[j]) == b {
                            let s = slot(hashes[j], d);
                            if clash {
                                if j + 1 < placed {
                                    taken[s] = false;
                                }
                            } else {
                                t.keys[s] = pack(CUE_WORDS[j].0);
                                t.cues[s] = (CUE_WORDS[j].1, CUE_WORDS[j].2);
                            }
                        }
                        j += 1;
                    }
                    if !clash {
                        t.displacement[b] = d;
                        break;
                    }
                    assert!(
                        (d as usize) < SLOT_MASK,
                        "no displacement places a bucket: two of its words share their slot \
                         bits, or the table is too full"
                    );
                    d += 1;
                }
            }
            b += 1;
        }
        want -= 1;
    }
    t
};

/// The cues of a word without an apostrophe (its key, [`pack`]ed), from [`CUE_TABLE`].
#[inline(always)]
fn table_cue(key: u128) -> (Cue, Kind) {
    let h = hash(key);
    let s = slot(h, CUE_TABLE.displacement[bucket(h)]);
    if CUE_TABLE.keys[s] == key {
        CUE_TABLE.cues[s]
    } else {
        (Cue::None, Kind::None)
    }
}

/// The cues of a word: its key ([`pack`]), length and whether it has an apostrophe (cue
/// words have none; a word ending in "n't" is a negation).
fn word_cue(key: u128, len: usize, apostrophe: bool) -> (Cue, Kind) {
    if !apostrophe {
        table_cue(key)
    } else if len >= 3 && (key >> (8 * (len - 3))) & 0xFF_FFFF == pack(b"n't") {
        (Cue::Negation, Kind::None)
    } else {
        (Cue::None, Kind::None)
    }
}

/// `b` in every byte of a `u64`.
const fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

const HIGH: u64 = splat(0x80);

/// The high bit of each byte of `x` that is an ASCII letter, eight bytes at once: case
/// folded, a letter is in `a..=z`. No sum carries into the next byte (each stays under `0x100`).
#[inline(always)]
fn letters(x: u64) -> u64 {
    let folded = (x & !HIGH) | splat(0x20);
    let at_least_a = folded + splat(0x80 - b'a');
    let past_z = folded + splat(0x80 - b'z' - 1);
    at_least_a & !past_z & !x & HIGH
}

// `short_word` reads words of up to 15 bytes from two 8-byte words.
const _: () = assert!(8 <= WORD_MAX && WORD_MAX < 16);

/// A word of letters only, not longer than [`WORD_MAX`], read by [`short_word`].
struct ShortWord {
    /// Bytes.
    len: usize,
    /// The lowercase word, [`pack`]ed.
    key: u128,
    /// "Ab...": a capital then a lowercase letter (a name or a sentence start, not an acronym).
    capitalized: bool,
    /// The byte after the word.
    after: u8,
}

/// The word at the start of `lo` (an ASCII letter; `hi` holds the next eight bytes) when it is
/// made of letters only and not longer than [`WORD_MAX`], as most words are. Lowercased by
/// setting bit 5 of each byte, cut after the last letter.
#[inline(always)]
fn short_word(lo: u64, hi: u64) -> Option<ShortWord> {
    let lo_letters = letters(lo);
    let capitalized = lo & 0x2020 == 0x2000 && lo_letters & 0x8000 != 0;
    // The lowest bit of `stop` is the high bit of the first byte after the letters, and
    // `(stop ^ (stop - 1)) >> 8` keeps the bytes before it.
    let stop = !lo_letters & HIGH;
    let w = if stop != 0 {
        ShortWord {
            len: stop.trailing_zeros() as usize / 8,
            key: u128::from((lo | splat(0x20)) & ((stop ^ (stop - 1)) >> 8)),
            capitalized,
            after: (lo >> (stop.trailing_zeros() - 7)) as u8,
        }
    } else {
        let stop = !letters(hi) & HIGH;
        let len = 8 + stop.trailing_zeros() as usize / 8;
        if len > WORD_MAX {
            return None;
        }
        let hi_key = (hi | splat(0x20)) & ((stop ^ (stop - 1)) >> 8);
        ShortWord {
            len,
            key: u128::from(lo | splat(0x20)) | u128::from(hi_key) << 64,
            capitalized,
            after: (hi >> (stop.trailing_zeros() - 7)) as u8,
        }
    };
    (w.after != b'\'').then_some(w)
}

/// State of [`Features::extract`]: the counts so far, the previous word (for two-word cues),
/// the position in the sentence and an open request ("write ... a story").
struct Scan {
    f: Features,
    /// The previous word's key; read only when `prev_lead`.
    prev_key: u128,
    /// Whether the previous word is a [`Cue::Lead`].
    prev_lead: bool,
    /// Words since the sentence began.
    in_sentence: u32,
    /// Words a request verb still looks ahead for its object (0: no open request).
    request: u8,
    /// Lead bytes of non-ASCII characters.
    other_letters: u32,
    /// Continuation bytes of non-ASCII characters.
    continuation: usize,
}

impl Scan {
    fn new(f: Features) -> Self {
        Scan {
            f,
            prev_key: 0,
            prev_lead: false,
            in_sentence: 0,
            request: 0,
            other_letters: 0,
            continuation: 0,
        }
    }

    /// Counts what starts at `i`: a word, or one other byte. `chunk` holds the 16 bytes from
    /// `i` (zeros past the end of `s`). Returns where the next step starts.
    #[inline(always)]
    fn step(&mut self, s: &[u8], i: usize, chunk: &[u8; 16]) -> usize {
        let bytes = u128::from_le_bytes(*chunk);
        let (lo, hi) = (bytes as u64, (bytes >> 64) as u64);
        let b = lo as u8;
        if !b.is_ascii_alphabetic() {
            self.byte(s, i, b);
            return i + 1;
        }
        match short_word(lo, hi) {
            Some(w) => {
                self.f.capitalized += u32::from(w.capitalized);
                self.word(w.key, table_cue(w.key));
                // The space after a word counts for nothing.
                i + w.len + usize::from(w.after == b' ')
            }
            None => i + self.long_word(s, i),
        }
    }

    /// Counts a byte `b` at `i` outside words.
    #[inline(always)]
    fn byte(&mut self, s: &[u8], i: usize, b: u8) {
        // The byte `k` places before `i` (0 before the text). What a byte means can depend on
        // the bytes before it (a number, a fence, `==`); reading them back keeps no state.
        let before = |k: usize| match i.checked_sub(k) {
            Some(j) => s[j],
            None => 0,
        };
        let f = &mut self.f;
        match b {
            b' ' => {}
            // A number starts ("3", not the "5" of "2.5" or "1,000").
            b'0'..=b'9' if !matches!(before(1), b'0'..=b'9' | b'.' | b',') => f.numbers += 1,
            // Operators near numbers ("3 + 4", "2x^2", "x = 5") are math notation: a digit
            // among the three bytes before.
            b'+' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' | b'%' => {
                if (1..=3).any(|k| before(k).is_ascii_digit()) {
                    f.math_symbols += 1;
                }
                let prev = before(1);
                if b == b'=' && (prev == b'=' || prev == b'!') {
                    f.code_symbols += 1;
                }
                if b == b'>' && (prev == b'-' || prev == b'=') {
                    f.code_symbols += 1;
                }
            }
            b'.' | b'!' | b'?' | b':' | b'\n' => self.in_sentence = 0,
            b'\\' => f.math_symbols += 1,
            b'{' | b'}' | b';' => f.code_symbols += 1,
            b',' => f.commas += 1,
            // The third backtick of a run opens (or closes) a code fence.
            b'`' if before(1) == b'`' && before(2) == b'`' && before(3) != b'`' => f.code += 3,
            0x80..=0xBF => self.continuation += 1,
            0xC0.. => self.other_letters += 1,
            _ => {}
        }
    }

    /// Counts the cues of one word: its key ([`pack`]) and its own cues.
    #[inline(always)]
    fn word(&mut self, key: u128, (own, kind): (Cue, Kind)) {
        // Most words: no cue of their own, none with the word before, no request open.
        if own == Cue::None && kind == Kind::None && !self.prev_lead && self.request == 0 {
            self.in_sentence += 1;
            return;
        }
        self.cue_word(key, own, kind);
    }

    /// Reads and counts a word that [`short_word`] leaves (one with an apostrophe or longer
    /// than [`WORD_MAX`]), byte by byte; returns its length.
    #[inline(never)]
    fn long_word(&mut self, s: &[u8], start: usize) -> usize {
        let mut key = 0u128;
        let mut apostrophe = false;
        let mut len = 0;
        while let Some(&c) = s.get(start + len) {
            if c == b'\'' {
                apostrophe = true;
            } else if !c.is_ascii_alphabetic() {
                break;
            }
            if len < 16 {
                key |= u128::from(c.to_ascii_lowercase()) << (8 * len);
            }
            len += 1;
        }
        if s.get(start).is_some_and(u8::is_ascii_uppercase)
            && s.get(start + 1).is_some_and(u8::is_ascii_lowercase)
        {
            self.f.capitalized += 1;
        }
        if len > WORD_MAX {
            self.word(0, (Cue::None, Kind::None));
        } else {
            self.word(key, word_cue(key, len, apostrophe));
        }
        len
    }

    /// Counts a word with a cue of its own, or after a [`Cue::Lead`] word or a request verb.
    /// Not inlined: it keeps the state in memory, and the registers for the scan of the bytes.
    #[inline(never)]
    fn cue_word(&mut self, key: u128, own: Cue, mut kind: Kind) {
        let f = &mut self.f;
        let mut cue = own;
        if self.prev_lead {
            if let Some(p) = CUE_PAIRS
                .iter()
                .find(|(a, b, _, _)| *a == self.prev_key && *b == key)
            {
                if p.2 != Cue::None {
                    cue = p.2;
                }
                if p.3 != Kind::None {
                    kind = p.3;
                }
            }
            if self.prev_key == YOU && key == ARE && self.in_sentence == 1 {
                kind = Kind::Light;
            }
            if self.prev_key == ANSWER && key == AS {
                kind = Kind::Light;
            }
        }
        match cue {
            Cue::Reasoning => f.reasoning += 1,
            Cue::Constraint => f.constraints += 1,
            Cue::Negation => f.negations += 1,
            // "no" alone is a negation; "no more" a constraint.
            Cue::Lead if key == NO => f.negations += 1,
            Cue::Lead | Cue::None => {}
        }
        // The object of an open request decides its kind.
        if self.request > 0 {
            match kind {
                Kind::Text | Kind::Light => {
                    f.light += 1;
                    self.request = 0;
                }
                Kind::Program | Kind::Code => {
                    f.code += 2;
                    self.request = 0;
                }
                _ => self.request -= 1,
            }
        }
        match kind {
            Kind::Code => f.code += 1,
            Kind::Math => f.math += 1,
            Kind::Puzzle => f.puzzle += 1,
            Kind::Light => f.light += 1,
            Kind::Request if self.in_sentence <= REQUEST_START => self.request = REQUEST_REACH,
            Kind::Request | Kind::Text | Kind::Program | Kind::None => {}
        }
        self.prev_key = key;
        self.prev_lead = own == Cue::Lead;
        self.in_sentence += 1;
    }
}

const NO: u128 = pack(b"no");

impl Features {
    /// Reads the cues of `text` in one pass (first 16 KiB), without allocating (a text with
    /// non-ASCII letters gets a second pass that counts its ASCII letters).
    pub fn extract(text: &str) -> Features {
        Features::extract_counting_chars(text).0
    }

    /// [`Features::extract`], and the characters of `text` when it was scanned whole.
    fn extract_counting_chars(text: &str) -> (Features, Option<usize>) {
        let bytes = text.as_bytes();
        let scanned = &bytes[..bytes.len().min(SCAN_LIMIT)];
        let mut scan = Scan::new(Features {
            chars: u32::try_from(text.len()).unwrap_or(u32::MAX),
            ..Features::default()
        });
        // Each step reads the 16 bytes from `i`: from the text while 16 are left, then from a
        // copy padded with zeros (not letters: a word ends there).
        let mut i = 0;
        while let Some(chunk) = scanned.get(i..).and_then(<[u8]>::first_chunk::<16>) {
            i = scan.step(scanned, i, chunk);
        }
        while let Some(rest) = scanned.get(i..).filter(|r| !r.is_empty()) {
            let mut chunk = [0u8; 16];
            for (d, b) in chunk.iter_mut().zip(rest) {
                *d = *b;
            }
            i = scan.step(scanned, i, &chunk);
        }
        let mut f = scan.f;
        // Every ASCII letter is in a word: count them only when the share matters.
        if scan.other_letters > 0 {
            let ascii_letters = scanned.iter().filter(|b| b.is_ascii_alphabetic()).count();
            let letters = u32::try_from(ascii_letters)
                .unwrap_or(u32::MAX)
                .saturating_add(scan.other_letters);
            f.non_latin = scan.other_letters as f32 / letters as f32;
        }
        let chars = (scanned.len() == text.len()).then(|| text.len() - scan.continuation);
        (f, chars)
    }

    /// The coarse task-kind prior, in log-odds: `+1.5` for clear evidence of a code, math or
    /// logic task, `−1.5` for clear evidence of a light task (both when both are present).
    pub fn task_prior(&self) -> f32 {
        let presence = |n: u32, full: f32| (n as f32 / full).min(1.0);
        let strong = presence(self.code, 2.0)
            .max(presence(self.math, 2.0))
            .max(presence(self.puzzle, 1.0));
        1.5 * strong - 1.5 * presence(self.light, 1.0)
    }

    /// Within-kind difficulty, in log-odds: length, negations, commas, capitalised words,
    /// reasoning and constraint cues, non-Latin script.
    pub fn within_kind(&self) -> f32 {
        let l = |n: u32| (n as f32).ln_1p();
        -4.3 + 0.55 * l(self.chars)
            + 0.40 * l(self.negations)
            + 0.20 * l(self.commas)
            + 0.30 * l(self.capitalized)
            + 0.20 * l(self.reasoning)
            + 0.15 * l(self.constraints)
            + 0.6 * self.non_latin
    }

    /// The text part of the difficulty, in log-odds (before the request metadata): the
    /// task-kind prior plus the within-kind difficulty.
    pub fn logit(&self) -> f32 {
        self.task_prior() + self.within_kind()
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
    let (f, text_chars) = Features::extract_counting_chars(prompt.text);
    let mut z = f.logit();
    if prompt.turns > 1 {
        z += 0.25 * (prompt.turns as f32).ln();
    }
    // Context beyond the prompt itself (system prompt, history, documents).
    let text_chars = text_chars.unwrap_or_else(|| prompt.text.chars().count());
    let extra = prompt
        .all_text_chars
        .saturating_sub(text_chars.min(prompt.all_text_chars));
    if extra > 0 {
        z += 0.2 * (extra as f32 / 2000.0).ln_1p();
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

    /// [`Features::extract`] as first written, the oracle of `equals_the_reference`: a byte
    /// loop with explicit state, words looked up in [`CUE_WORDS`] and [`CUE_PAIRS`] by a
    /// linear search.
    fn reference(text: &str) -> Features {
        let lookup = |w: &[u8]| -> (Cue, Kind) {
            if w.len() > WORD_MAX {
                return (Cue::None, Kind::None);
            }
            let lower = w.to_ascii_lowercase();
            match CUE_WORDS.iter().find(|(c, _, _)| **c == lower[..]) {
                Some((_, cue, kind)) => (*cue, *kind),
                None if lower.ends_with(b"n't") => (Cue::Negation, Kind::None),
                None => (Cue::None, Kind::None),
            }
        };
        let bytes = text.as_bytes();
        let scanned = &bytes[..bytes.len().min(SCAN_LIMIT)];
        let mut f = Features {
            chars: u32::try_from(text.len()).unwrap_or(u32::MAX),
            ..Features::default()
        };
        // Long words are never cues: key 0.
        let key = |w: &[u8]| if w.len() <= WORD_MAX { pack(w) } else { 0 };
        let (mut prev, mut prev_cue) = (0u128, Cue::None);
        let (mut in_sentence, mut request) = (0u32, 0u8);
        let (mut in_digits, mut last_digit_end) = (false, None::<usize>);
        let (mut ascii_letters, mut other_letters) = (0u32, 0u32);
        let (mut ticks, mut prev_byte) = (0u32, b' ');
        let mut i = 0;
        while i < scanned.len() {
            let b = scanned[i];
            if b.is_ascii_alphabetic() {
                if in_digits {
                    (last_digit_end, in_digits) = (Some(i), false);
                }
                let start = i;
                while i < scanned.len() && (scanned[i].is_ascii_alphabetic() || scanned[i] == b'\'')
                {
                    ascii_letters += u32::from(scanned[i] != b'\'');
                    i += 1;
                }
                let w = &scanned[start..i];
                if w.len() >= 2 && w[0].is_ascii_uppercase() && w[1].is_ascii_lowercase() {
                    f.capitalized += 1;
                }
                let lower = key(&w.to_ascii_lowercase());
                let (own, mut kind) = lookup(w);
                let mut cue = own;
                if prev_cue == Cue::Lead {
                    let pair = CUE_PAIRS
                        .iter()
                        .find(|(a, b, _, _)| (*a, *b) == (prev, lower));
                    if let Some((_, _, c, k)) = pair {
                        cue = if *c == Cue::None { cue } else { *c };
                        kind = if *k == Kind::None { kind } else { *k };
                    }
                    if (prev, lower, in_sentence) == (pack(b"you"), pack(b"are"), 1)
                        || (prev, lower) == (pack(b"answer"), pack(b"as"))
                    {
                        kind = Kind::Light;
                    }
                }
                match cue {
                    Cue::Reasoning => f.reasoning += 1,
                    Cue::Constraint => f.constraints += 1,
                    Cue::Negation => f.negations += 1,
                    Cue::Lead if lower == pack(b"no") => f.negations += 1,
                    _ => {}
                }
                if request > 0 {
                    match kind {
                        Kind::Text | Kind::Light => (f.light, request) = (f.light + 1, 0),
                        Kind::Program | Kind::Code => (f.code, request) = (f.code + 2, 0),
                        _ => request -= 1,
                    }
                }
                match kind {
                    Kind::Code => f.code += 1,
                    Kind::Math => f.math += 1,
                    Kind::Puzzle => f.puzzle += 1,
                    Kind::Light => f.light += 1,
                    Kind::Request if in_sentence <= REQUEST_START => request = REQUEST_REACH,
                    _ => {}
                }
                (prev, prev_cue) = (lower, own);
                in_sentence += 1;
                ticks = 0;
                prev_byte = scanned[i - 1];
                continue;
            }
            let digit = b.is_ascii_digit();
            if digit && !in_digits && prev_byte != b'.' && prev_byte != b',' {
                f.numbers += 1;
            }
            if !digit && in_digits {
                last_digit_end = Some(i);
            }
            in_digits = digit;
            if b"+*/^=<>%".contains(&b) && last_digit_end.is_some_and(|e| i - e <= 2) {
                f.math_symbols += 1;
            }
            let pair = [prev_byte, b];
            if [b"==", b"!=", b"->", b"=>"].iter().any(|p| **p == pair) {
                f.code_symbols += 1;
            }
            if b".!?:\n".contains(&b) {
                in_sentence = 0;
            }
            f.math_symbols += u32::from(b == b'\\');
            f.code_symbols += u32::from(b"{};".contains(&b));
            f.commas += u32::from(b == b',');
            other_letters += u32::from(b >= 0xC0);
            ticks = if b == b'`' { ticks + 1 } else { 0 };
            if ticks == 3 {
                f.code += 3;
            }
            prev_byte = b;
            i += 1;
        }
        if ascii_letters + other_letters > 0 {
            f.non_latin = other_letters as f32 / (ascii_letters + other_letters) as f32;
        }
        f
    }

    /// Text made of cue words in any case, pairs, contractions, long words, numbers, code,
    /// math and other scripts, with every kind of separator.
    fn prompt_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let mut words: Vec<String> = CUE_WORDS
            .iter()
            .map(|(w, _, _)| String::from_utf8_lossy(w).into_owned())
            .collect();
        words.extend(
            [
                "by",
                "carefully",
                "through",
                "teaser",
                "least",
                "most",
                "more",
                "test",
                "of",
                "complexity",
                "as",
                "are",
                "character",
                "don't",
                "CAN'T",
                "n't",
                "isn't",
                "it's",
                "dogs'",
                "o'clock",
                "internationalization",
                "abcdefghijklmn",
                "abcdefghijklmno",
                "abcdefghijklmnop",
                "abcdefghijklmnopq",
                "a",
                "I",
                "x",
                "The",
                "Paris",
                "NASA",
                "Ab",
                "aB",
                "café",
                "naïve",
                "Привет",
                "中文",
                "🙂",
            ]
            .map(String::from),
        );
        let word = prop_oneof![
            proptest::sample::select(words).prop_flat_map(|w| {
                proptest::collection::vec(any::<bool>(), w.len()).prop_map(move |up| {
                    w.chars()
                        .zip(up.into_iter().chain(std::iter::repeat(false)))
                        .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                        .collect::<String>()
                })
            }),
            "[0-9]{1,5}",
            "[a-zA-Z']{1,20}",
            "\\PC{1,3}",
        ];
        let sep = proptest::sample::select(vec![
            " ", " ", " ", "  ", ", ", ". ", "! ", "? ", ": ", "\n", "\t", "", "'", "-", "=", "==",
            "!=", "->", "=>", " + ", "*", "/", "^", " = ", "<", ">", "%", "\\", "{", "}", ";", "`",
            "```", "````", ".5", ",000", "é", "\u{0}",
        ]);
        proptest::collection::vec((word, sep), 0..40)
            .prop_map(|parts| parts.into_iter().map(|(w, s)| w + s).collect())
    }

    proptest::proptest! {
        #[test]
        fn equals_the_reference(text in prompt_text()) {
            proptest::prop_assert_eq!(Features::extract(&text), reference(&text));
        }

        #[test]
        fn equals_the_reference_on_any_text(text in proptest::arbitrary::any::<String>()) {
            proptest::prop_assert_eq!(Features::extract(&text), reference(&text));
        }
    }

    proptest::proptest! {
        #[test]
        fn counts_the_characters_of_a_text_it_scans_whole(text in proptest::arbitrary::any::<String>()) {
            let (_, chars) = Features::extract_counting_chars(&text);
            proptest::prop_assert_eq!(chars, Some(text.chars().count()));
        }
    }

    #[test]
    fn equals_the_reference_at_the_scan_limit() {
        let tail = "Don't write a poem: 12 + 3 == 15, ```step by step``` at least Café";
        for start in SCAN_LIMIT - tail.len() - 2..=SCAN_LIMIT + 2 {
            let text = "x".repeat(start) + " " + tail;
            assert_eq!(Features::extract(&text), reference(&text), "{start}");
            let whole = (text.len() <= SCAN_LIMIT).then(|| text.chars().count());
            assert_eq!(Features::extract_counting_chars(&text).1, whole);
            let text = "Q ".repeat(start / 2) + "1" + tail;
            assert_eq!(Features::extract(&text), reference(&text), "{start}");
        }
    }

    #[test]
    fn cues_are_counted() {
        let f = Features::extract("```rust\nfn main() { println!(\"x\"); }\n```");
        assert_eq!((f.code, f.code_symbols), (7, 3), "{f:?}");
        let f = Features::extract("How many apples? 3 + 4 = 7, and 12/4 is 3.");
        assert_eq!((f.math, f.math_symbols, f.numbers), (0, 3, 6), "{f:?}");
        let f = Features::extract("Hello! Please translate and summarize this email.");
        assert_eq!((f.light, f.code, f.math), (3, 0, 0));
        let f = Features::extract("You must answer in at least 50 words, exactly.");
        assert_eq!(f.constraints, 4);
        let f = Features::extract("Привет, как дела?");
        assert!(f.non_latin > 0.9);
    }

    #[test]
    fn requests_take_the_kind_of_their_object() {
        let f = Features::extract("Can you write a short story about a lighthouse keeper?");
        assert_eq!((f.light, f.code), (1, 0));
        let f = Features::extract("Write me a script that renames files by date.");
        assert_eq!((f.light, f.code), (0, 2));
        // Not at the start of a sentence: a statement, not a request.
        let f = Features::extract("She said she would write her brother a letter.");
        assert_eq!(f.light, 0);
        // The object is too far from the verb.
        let f = Features::extract(
            "Write down what you think of the new town library plan and the story.",
        );
        assert_eq!(f.light, 0);
        let f = Features::extract("I want you to act as a tour guide. You are cheerful.");
        assert_eq!(f.light, 2);
        let f = Features::extract("Answer as a pirate would.");
        assert_eq!(f.light, 1);
        let f = Features::extract("Think step by step about this riddle.");
        assert_eq!((f.puzzle, f.reasoning), (3, 2));
    }

    #[test]
    fn every_cue_word_is_found() {
        for (w, cue, kind) in CUE_WORDS {
            assert!(w.len() <= WORD_MAX, "{:?}", std::str::from_utf8(w));
            assert!(w.iter().all(u8::is_ascii_lowercase));
            assert!(
                table_cue(pack(w)) == (*cue, *kind)
                    && word_cue(pack(w), w.len(), false) == (*cue, *kind),
                "{:?}",
                std::str::from_utf8(w)
            );
        }
        for (a, _, _, _) in CUE_PAIRS {
            assert!(CUE_WORDS
                .iter()
                .any(|(w, c, _)| pack(w) == a && *c == Cue::Lead));
        }
        assert!(word_cue(pack(b"banana"), 6, false) == (Cue::None, Kind::None));
        assert!(word_cue(pack(b"don't"), 5, true) == (Cue::Negation, Kind::None));
        assert!(word_cue(pack(b"i'm"), 3, true) == (Cue::None, Kind::None));
        let f = Features::extract("Think carefully, step by step: at least how many? No more.");
        assert_eq!(
            (f.reasoning, f.constraints, f.puzzle, f.negations),
            (2, 2, 1, 1)
        );
    }

    #[test]
    fn task_kind_moves_the_score_more_than_length() {
        let light = Features::extract(
            "Write a warm, funny email to my colleagues inviting them to the summer picnic \
             on Friday, mentioning that there will be games, music and plenty of food.",
        );
        let code = Features::extract("Implement binary search in Python.");
        assert!(light.chars > 3 * code.chars);
        assert!(code.logit() > light.logit());
        assert!(code.task_prior() > 0.0 && light.task_prior() < 0.0);
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
            PromptInfo {
                all_text_chars: 50_000,
                ..base
            },
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
