//! The wait a failed answer asks for, `wait_hint_at`, and in it the delay an error message
//! states in words ("Please retry in 31.44s.", "try again in 1m26.4s", "retry after 8 seconds").
//!
//! The input is framed as for `classify` (a first line, ignored, header lines up to a blank
//! line, then the body). For any input, for every error class:
//! * no panic, and every value is at most `MAX_RETRY_AFTER`;
//! * a header hint (`retry_after_at`) always wins: `wait_hint_at` is that value;
//! * without headers, a failure other than a rate limit gets only the body's `RetryInfo`
//!   (`retry_info_delay`), and so does a rate limit whose body holds none of the retry phrases
//!   (ASCII case ignored): never a delay read from other words;
//! * without headers and without a `RetryInfo`, a rate limit's hint is the delay a reference
//!   reader of the documented grammar finds in the body (written here from the docs of
//!   `wait_hint_at`, independently of the crate's reader).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
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
    let (_, headers, body) = framing::answer(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let header_hint = retry_after_at(&headers, now);
    let retry_info = retry_info_delay(body);
    let none = HeaderMap::new();
    for class in CLASSES {
        let hint = wait_hint_at(class, &headers, body, now);
        if let Some(wait) = hint {
            assert!(wait <= MAX_RETRY_AFTER, "{class:?}: {wait:?}");
        }
        if header_hint.is_some() {
            assert_eq!(hint, header_hint, "{class:?}: the header hint wins");
        }
        let bare = wait_hint_at(class, &none, body, now);
        if class != ErrorClass::RateLimited || !holds_a_phrase(body) {
            assert_eq!(bare, retry_info, "{class:?}: a delay from other words");
        }
        if class == ErrorClass::RateLimited && retry_info.is_none() {
            assert_eq!(bare, reference_stated_delay(body), "the reference reader");
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
/// one or more spaces, then either `NUMBER SPACES UNIT-WORD` (seconds or milliseconds words)
/// or a Go duration `(NUMBER UNIT)+` (units `h`, `m`, `s`, `ms`), ended by anything but a
/// letter or digit. NUMBER is digits, then perhaps `.` and digits. The first phrase so
/// followed wins.
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

fn reference_delay(text: &[u8]) -> Option<Duration> {
    let spaces = text.iter().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return None;
    }
    let text = &text[spaces..];
    let (first, rest) = number(text)?;
    let gap = rest.iter().take_while(|&&b| b == b' ').count();
    if gap > 0 {
        let word_len = rest[gap..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let scale = match &rest[gap..gap + word_len] {
            b"seconds" | b"second" | b"secs" | b"sec" | b"s" => 1.0,
            b"milliseconds" | b"millisecond" | b"ms" => 1e-3,
            _ => return None,
        };
        return ends_a_word(&rest[gap + word_len..]).then(|| clamp(first * scale));
    }
    let (mut value, mut rest, mut secs) = (first, rest, 0.0);
    loop {
        let unit_len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let scale = match &rest[..unit_len] {
            b"h" => 3600.0,
            b"m" => 60.0,
            b"s" => 1.0,
            b"ms" => 1e-3,
            _ => return None,
        };
        secs += value * scale;
        rest = &rest[unit_len..];
        match number(rest) {
            Some((next, after)) => (value, rest) = (next, after),
            None => return ends_a_word(rest).then(|| clamp(secs)),
        }
    }
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
