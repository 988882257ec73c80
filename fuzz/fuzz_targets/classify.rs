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
//! * `retry_after`, `retry_info_delay` and `wait_hint_at` (on the body and on an event
//!   stream's first event's data, where a streamed error's `RetryInfo` sits) are never longer
//!   than a day;
//! * the classifier reads only what it is given: the same call on every prefix of the body
//!   does not panic either (the layer classifies a bounded prefix of an answer);
//! * `classify_error` does not panic on an io error with an arbitrary message.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

use tower_llm_router::classify::{
    classify_error, classify_response, first_sse_event, retry_after, retry_info_delay,
    wait_hint_at, SseEvent, MAX_RETRY_AFTER,
};
use tower_llm_router::ErrorClass;

mod framing;

fuzz_target!(|data: &[u8]| {
    let (status, headers, body) = framing::answer(data);
    let status = status.unwrap_or_else(|| {
        StatusCode::from_u16(200 + (data.len() % 400) as u16).unwrap_or(StatusCode::OK)
    });

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
    // The wait a failure asks for, read from the body, and (for an event stream) from its
    // first event's data, as the layer reads it: Gemini's `RetryInfo` in either.
    let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let wait_class = class.unwrap_or(ErrorClass::RateLimited);
    let first_event = match first_sse_event(body) {
        SseEvent::Event { data, .. } => Some(data.into_owned()),
        _ => None,
    };
    for data in std::iter::once(body).chain(first_event.as_deref()) {
        for wait in [
            retry_info_delay(data),
            wait_hint_at(status, wait_class, &headers, data, now),
        ] {
            if let Some(wait) = wait {
                assert!(wait <= MAX_RETRY_AFTER, "wait {wait:?}");
            }
        }
    }
    let message = String::from_utf8_lossy(body).into_owned();
    let error = std::io::Error::new(std::io::ErrorKind::Other, message);
    let _ = classify_error(&error);
});
