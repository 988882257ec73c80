//! The classifier: `classify_response` on arbitrary status, headers and body; `retry_after`.
//!
//! The input is text-framed so that seeds stay readable:
//!
//! ```text
//! 429
//! retry-after: 7
//! content-type: application/json
//!
//! {"error":{...}}
//! ```
//!
//! The first line is the status (an unparsable one picks a status from the input length), the
//! next lines up to a blank line are headers (lines that are not a valid header are skipped),
//! the rest is the body.
//!
//! For any input:
//! * neither function panics, and both are deterministic;
//! * every non-2xx status is a failure (`Some(class)`);
//! * `retry_after` is never longer than a day;
//! * the classifier reads only what it is given: the same call on every prefix of the body
//!   does not panic either (the layer classifies a bounded prefix of an answer);
//! * `classify_error` does not panic on an io error with an arbitrary message.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_llm_router::classify::{classify_error, classify_response, retry_after, MAX_RETRY_AFTER};

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (status_line, mut rest) = split_line(data);
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or_else(|| {
            StatusCode::from_u16(200 + (data.len() % 400) as u16).unwrap_or(StatusCode::OK)
        });
    let mut headers = HeaderMap::new();
    loop {
        let (line, after) = split_line(rest);
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    let body = rest;

    let class = classify_response(status, &headers, body);
    assert_eq!(
        class,
        classify_response(status, &headers, body),
        "deterministic"
    );
    if !status.is_success() {
        assert!(class.is_some(), "{status} classified as a success");
    }
    let step = (body.len() / 32).max(1);
    for cut in (0..body.len()).step_by(step) {
        let prefix = classify_response(status, &headers, &body[..cut]);
        if !status.is_success() {
            assert!(prefix.is_some());
        }
    }
    if let Some(wait) = retry_after(&headers) {
        assert!(wait <= MAX_RETRY_AFTER, "retry_after {wait:?}");
    }
    let message = String::from_utf8_lossy(body).into_owned();
    let error = std::io::Error::new(std::io::ErrorKind::Other, message);
    let _ = classify_error(&error);
});
