//! `classify::describe_error`: an error's text and its sources', with every URL's userinfo,
//! query and fragment left out (the text goes to clients).
//!
//! The input is split at NUL bytes: the first pieces (at most 8) are the texts of a chain of
//! errors, each the source of the one before, the last piece is arbitrary text to put around
//! one URL with secrets. For any input:
//! * no panic;
//! * idempotent: the text described again (as an error's own text) is the same text;
//! * secrets: the chain with one error's text made of `prefix URL suffix`, where the URL is
//!   `scheme://USER:PASS@host/path?QUERY#FRAGMENT` built from the input's bytes (each part
//!   without the bytes that would end it: a space, a quote, `/?#@`) around a unique marker,
//!   is described without any of the four markers, whatever the prefix, the suffix and the
//!   other errors of the chain hold (inputs whose parts, cleaned, hold a marker are skipped).
#![no_main]

use std::error::Error as StdError;
use std::fmt;

use libfuzzer_sys::fuzz_target;
use tower_llm_router::classify::describe_error;

/// An error with a text and perhaps a source.
#[derive(Debug)]
struct Chain(String, Option<Box<Chain>>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Chain {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

fn chain(texts: &[String]) -> Chain {
    texts
        .iter()
        .rev()
        .fold(None, |inner, text| {
            Some(Chain(text.clone(), inner.map(Box::new)))
        })
        .unwrap_or(Chain(String::new(), None))
}

const MARKERS: [&str; 4] = ["QzUSERzQ", "QzPASSzQ", "QzQUERYzQ", "QzFRAGzQ"];

/// What may stand in a part of the URL: not what ends the URL in a text, nor what ends the part.
fn fits(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '"' | '\'' | '<' | '>' | '`' | '/' | '?' | '#' | '@' | ':'
        )
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut pieces: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let around = pieces.pop().unwrap_or_default();
    pieces.truncate(8);

    // No panic; idempotent.
    let described = describe_error(&chain(&pieces));
    let again = describe_error(&chain(&[described.clone()]));
    assert_eq!(again, described, "idempotent");
    let io = std::io::Error::other(chain(&pieces));
    let _ = describe_error(&io);

    // Secrets. The `around` text gives the prefix, the suffix and the URL's parts, split at
    // `\x01`: prefix, user, password, host, path, query, fragment, suffix; the scheme is
    // chosen by the input's length.
    let mut parts = around.split('\x01');
    let mut next = || parts.next().unwrap_or("").to_owned();
    let prefix = next();
    let clean = |s: String| s.chars().filter(|&c| fits(c)).collect::<String>();
    let user = clean(next());
    let pass = clean(next());
    let host = clean(next());
    let path = clean(next());
    let query = clean(next());
    let fragment = clean(next());
    let suffix = next();
    // Skip an input whose own text (once the parts are cleaned) holds a marker.
    let own = [
        &prefix, &user, &pass, &host, &path, &query, &fragment, &suffix,
    ];
    let holds_a_marker = |s: &String| MARKERS.iter().any(|marker| s.contains(marker));
    if own.into_iter().chain(&pieces).any(holds_a_marker) {
        return;
    }
    let scheme = ["https", "http", "wss", "postgres", "s3"][data.len() % 5];
    let url = format!(
        "{scheme}://{user}{u}:{pass}{p}@{host}/{path}?{query}{q}#{fragment}{f}",
        u = MARKERS[0],
        p = MARKERS[1],
        q = MARKERS[2],
        f = MARKERS[3],
    );
    let at = data.len() % (pieces.len() + 1);
    let mut texts = pieces.clone();
    texts.insert(at, format!("{prefix}{url}{suffix}"));
    let described = describe_error(&chain(&texts));
    for marker in MARKERS {
        assert!(
            !described.contains(marker),
            "{marker} in {described:?} (url {url:?})"
        );
    }
});
