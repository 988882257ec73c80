//! The wait a failed answer asks for, `wait_hint_at`, and in it the delay an error message
//! states in words ("Please retry in 31.44s.", "try again in 1m26.4s", "retry after 8 seconds").
//!
//! The input is framed as for `classify` (a status line, header lines up to a blank line, then
//! the body). For any input, for every error class, with the input's status (429 when it has
//! none) and with 503, 529 and 500:
//! * no panic, and every value is at most `MAX_RETRY_AFTER`;
//! * a header hint (`retry_after_at`) always wins: `wait_hint_at` is that value;
//! * without headers, a failure that is neither a rate limit nor a 503 or 529 gets only the
//!   body's `RetryInfo` (`retry_info_delay`), and so does one whose body holds none of the
//!   retry phrases (ASCII case ignored): never a delay read from other words;
//! * without headers and without a `RetryInfo`, the hint of a rate limit, a 503 or a 529 is
//!   the delay a reference reader of the documented grammar finds in the body (written here
//!   from the docs of `wait_hint_at`, independently of the crate's reader).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_llm_router::classify::{retry_after_at, retry_info_delay, wait_hint_at, MAX_RETRY_AFTER};
use tower_llm_router::ErrorClass;

mod framing;

const CLASSES: [ErrorClass; 5] = [
    ErrorClass::RateLimited,
    ErrorClass::Downtime,
    ErrorClass::Other,
    ErrorClass::ContextLength,
    ErrorClass::Moderation,
];

const PHRASES: [&[u8]; 3] = [b"retry in", b"retry after", b"try again in"];

fuzz_target!(|data: &[u8]| {
    let (status, headers, body) = framing::answer(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let header_hint = retry_after_at(&headers, now);
    let retry_info = retry_info_delay(body);
    let none = HeaderMap::new();
    let statuses = [
        status.unwrap_or(StatusCode::TOO_MANY_REQUESTS),
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (status, class) in statuses.into_iter().flat_map(|s| CLASSES.map(|c| (s, c))) {
        let hint = wait_hint_at(status, class, &headers, body, now);
        if let Some(wait) = hint {
            assert!(wait <= MAX_RETRY_AFTER, "{status} {class:?}: {wait:?}");
        }
        if header_hint.is_some() {
            assert_eq!(
                hint, header_hint,
                "{status} {class:?}: the header hint wins"
            );
        }
        let bare = wait_hint_at(status, class, &none, body, now);
        // Written out, not shared with the crate: its status rule is part of what is checked.
        let words_read = class == ErrorClass::RateLimited || [503, 529].contains(&status.as_u16());
        if !words_read || !holds_a_phrase(body) {
            assert_eq!(
                bare, retry_info,
                "{status} {class:?}: a delay from other words"
            );
        }
        if words_read && retry_info.is_none() {
            assert_eq!(
                bare,
                reference_stated_delay(body),
                "{status}: the reference reader"
            );
        }
    }
});

fn holds_a_phrase(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    PHRASES
        .iter()
        .any(|phrase| lower.windows(phrase.len()).any(|w| w == *phrase))
}

/// The documented grammar: a phrase (ASCII case ignored) not preceded by a letter or digit,
/// one or more spaces, then one or more terms, each `NUMBER SPACES UNIT-WORD` (hours, minutes,
/// seconds or milliseconds words) or a Go duration `(NUMBER UNIT)+` (units `h`, `m`, `s`,
/// `ms`), ended by anything but a letter or digit. Terms are apart by spaces, then perhaps a
/// comma and spaces, then perhaps `and` and spaces, and add up; a digit where the next term
/// would start, when none does, leaves the text unread. NUMBER is digits, then perhaps `.`
/// and digits. The first phrase so followed wins.
fn reference_stated_delay(body: &[u8]) -> Option<Duration> {
    let lower = body.to_ascii_lowercase();
    (0..body.len()).find_map(|at| {
        if at > 0 && body[at - 1].is_ascii_alphanumeric() {
            return None;
        }
        PHRASES.iter().find_map(|phrase| {
            lower[at..]
                .starts_with(phrase)
                .then(|| reference_delay(&body[at + phrase.len()..]))
                .flatten()
        })
    })
}

/// The unit words a number may be followed by, apart from it, and their seconds.
const UNIT_WORDS: [(&[u8], f64); 18] = [
    (b"h", 3600.0),
    (b"hr", 3600.0),
    (b"hrs", 3600.0),
    (b"hour", 3600.0),
    (b"hours", 3600.0),
    (b"m", 60.0),
    (b"min", 60.0),
    (b"mins", 60.0),
    (b"minute", 60.0),
    (b"minutes", 60.0),
    (b"s", 1.0),
    (b"sec", 1.0),
    (b"secs", 1.0),
    (b"second", 1.0),
    (b"seconds", 1.0),
    (b"ms", 1e-3),
    (b"millisecond", 1e-3),
    (b"milliseconds", 1e-3),
];

fn reference_delay(text: &[u8]) -> Option<Duration> {
    let mut at = skip_spaces(text, 0);
    if at == 0 {
        return None;
    }
    let mut total = 0.0;
    let mut terms = 0;
    loop {
        match reference_term(text, at) {
            Some((secs, end)) => {
                total += secs;
                terms += 1;
                at = end;
            }
            None if terms == 0 || text.get(at).is_some_and(|b| b.is_ascii_digit()) => return None,
            None => return Some(clamp(total)),
        }
        at = skip_spaces(text, at);
        if text.get(at) == Some(&b',') {
            at = skip_spaces(text, at + 1);
        }
        if text[at..].starts_with(b"and ") {
            at = skip_spaces(text, at + 3);
        }
    }
}

/// The term at `at`: its seconds and where it ends.
fn reference_term(text: &[u8], at: usize) -> Option<(f64, usize)> {
    let (first, after) = number(&text[at..])?;
    let mut at = text.len() - after.len();
    let gap = skip_spaces(text, at) - at;
    if gap > 0 {
        at += gap;
        let word_len = letters_at(text, at);
        let word = &text[at..at + word_len];
        let (_, scale) = UNIT_WORDS.iter().find(|(unit, _)| *unit == word)?;
        let end = at + word_len;
        return ends_a_word(&text[end..]).then(|| (first * scale, end));
    }
    let (mut value, mut secs) = (first, 0.0);
    loop {
        let unit_len = letters_at(text, at);
        let scale = match &text[at..at + unit_len] {
            b"h" => 3600.0,
            b"m" => 60.0,
            b"s" => 1.0,
            b"ms" => 1e-3,
            _ => return None,
        };
        secs += value * scale;
        at += unit_len;
        match number(&text[at..]) {
            Some((next, after)) => (value, at) = (next, text.len() - after.len()),
            None => return ends_a_word(&text[at..]).then_some((secs, at)),
        }
    }
}

fn skip_spaces(text: &[u8], at: usize) -> usize {
    at + text[at..].iter().take_while(|&&b| b == b' ').count()
}

fn letters_at(text: &[u8], at: usize) -> usize {
    text[at..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count()
}

fn number(text: &[u8]) -> Option<(f64, &[u8])> {
    let whole = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if whole == 0 {
        return None;
    }
    let mut len = whole;
    if text.get(whole) == Some(&b'.') {
        let fraction = text[whole + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if fraction > 0 {
            len += 1 + fraction;
        }
    }
    let value: f64 = std::str::from_utf8(&text[..len]).ok()?.parse().ok()?;
    Some((value, &text[len..]))
}

fn ends_a_word(text: &[u8]) -> bool {
    text.first().is_none_or(|b| !b.is_ascii_alphanumeric())
}

fn clamp(secs: f64) -> Duration {
    if secs >= MAX_RETRY_AFTER.as_secs_f64() {
        MAX_RETRY_AFTER
    } else {
        Duration::from_secs_f64(secs.max(0.0))
    }
}
