//! The SSE first-event reader: `classify::first_sse_event`.
//!
//! For any bytes:
//! * it never panics, and an event's `end` lies within the buffer;
//! * reading stops at the event: the same scan of `buf[..end]` finds the same event;
//! * chunk boundaries do not matter: every prefix of the buffer either needs more bytes or
//!   finds the same first event (the same data, or the same `[DONE]` end), so the answer does
//!   not depend on how the upstream's bytes were split into reads;
//! * bytes after the event do not change it.
//!
//! And the stream rules the layer applies past the first event (private, exposed with
//! `--cfg fuzzing` as `classify::sse_fuzzing`), on the buffer and on its first event's data:
//! * the packed searches (Teddy) of the preamble hints and of the end hints agree with the
//!   search a hint at a time;
//! * the preamble rule read from the bytes, when it answers, is the JSON tree's answer;
//! * a preamble is blank, or a JSON object (serde_json) without a non-null `error`;
//! * `ends_the_stream` is `None` exactly when no line starts with `data:`; what comes before a
//!   blank line and the last event does not change it; whatever the buffer, a last event of
//!   `[DONE]` or of a chunk with a finish reason ends the stream, a usage in a chunk that
//!   delivers text without a finish reason does not, and a usage with `"choices":[]` does;
//!   a usage beside an empty delta ends it right after a finish chunk, not right after a chunk
//!   that delivers text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_llm_router::classify::sse_fuzzing;
use tower_llm_router::classify::{first_sse_event, SseEvent};

/// What a scan found, owned, for comparisons.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    NeedMore,
    Event(Vec<u8>, usize),
    End,
}

fn scan(buf: &[u8]) -> Found {
    match first_sse_event(buf) {
        SseEvent::NeedMore => Found::NeedMore,
        SseEvent::Event { data, end } => {
            assert!(
                end <= buf.len(),
                "end {end} past the buffer of {}",
                buf.len()
            );
            assert!(end > 0, "an event ends after at least one byte");
            Found::Event(data.into_owned(), end)
        }
        SseEvent::End => Found::End,
        #[allow(unreachable_patterns)]
        _ => Found::NeedMore,
    }
}

/// The searches agree, and the preamble rule holds, on `data`.
fn check_rules(data: &[u8]) {
    let (packed, one_by_one) = sse_fuzzing::preamble_hint_searches(data);
    if let Some(packed) = packed {
        assert_eq!(packed, one_by_one, "preamble hints");
    }
    let (packed, one_by_one) = sse_fuzzing::end_hint_searches(data);
    if let Some(packed) = packed {
        assert_eq!(packed, one_by_one, "end hints");
    }
    let (quick, tree) = sse_fuzzing::preamble_quick_and_tree(data);
    if quick.is_some() {
        assert_eq!(quick, tree, "the byte reader against the tree");
    }
    if sse_fuzzing::is_preamble(data) && !data.trim_ascii().is_empty() {
        let value: serde_json::Value = serde_json::from_slice(data).expect("a preamble is JSON");
        let object = value.as_object().expect("a preamble is an object");
        assert!(
            object.get("error").is_none_or(serde_json::Value::is_null),
            "a preamble with an error"
        );
    }
}

/// The stream-end rule on `buf` as the last bytes of a stream.
fn check_end(buf: &[u8]) {
    let ends = sse_fuzzing::ends_the_stream(buf);
    let has_data_line = buf
        .split(|&b| b == b'\n' || b == b'\r')
        .any(|line| line.starts_with(b"data:"));
    assert_eq!(ends.is_some(), has_data_line, "None without a data line");
    let mut earlier = b": keep-alive\n\nevent: ping\n\n".to_vec();
    earlier.extend_from_slice(buf);
    assert_eq!(
        sse_fuzzing::ends_the_stream(&earlier),
        ends,
        "earlier events"
    );
    for (last, expected) in [
        (&b"data: [DONE]"[..], true),
        (br#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#, true),
        (br#"data: {"choices":[],"usage":{"total_tokens":3}}"#, true),
        (
            br#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":{"total_tokens":3}}"#,
            false,
        ),
    ] {
        assert_ends_after(buf, &[last], expected);
    }
    // A usage beside an empty delta (OpenRouter's usage chunk; vLLM's `continuous_usage_stats`
    // on a chunk with no text yet) is the end after the finish chunk, a cut after text.
    for (before, expected) in [
        (&br#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#[..], true),
        (br#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#, false),
    ] {
        for last in [
            &br#"data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}],"usage":{"total_tokens":3}}"#[..],
            br#"data: {"choices":[{"index":0,"delta":{}}],"usage":{"total_tokens":3}}"#,
        ] {
            assert_ends_after(buf, &[before, last], expected);
        }
    }
}

/// `ends_the_stream` of `buf` followed by `events`, each after a blank line, is `expected`.
fn assert_ends_after(buf: &[u8], events: &[&[u8]], expected: bool) {
    let mut stream = buf.to_vec();
    for event in events {
        stream.extend_from_slice(b"\n\n");
        stream.extend_from_slice(event);
    }
    stream.extend_from_slice(b"\n\n");
    assert_eq!(
        sse_fuzzing::ends_the_stream(&stream),
        Some(expected),
        "last events {:?}",
        events
            .iter()
            .map(|event| String::from_utf8_lossy(event))
            .collect::<Vec<_>>()
    );
}

fuzz_target!(|buf: &[u8]| {
    check_rules(buf);
    check_end(buf);
    if let SseEvent::Event { data, .. } = first_sse_event(buf) {
        check_rules(&data);
    }
    let whole = scan(buf);
    if let Found::Event(data, end) = &whole {
        assert_eq!(
            scan(&buf[..*end]),
            Found::Event(data.clone(), *end),
            "stops at the event"
        );
        let mut longer = buf[..*end].to_vec();
        longer.extend_from_slice(b"data: later\n\n");
        assert_eq!(
            scan(&longer),
            Found::Event(data.clone(), *end),
            "later bytes change nothing"
        );
    }
    // Every prefix (at most 256 cut points, spread over the buffer).
    let step = (buf.len() / 256).max(1);
    for cut in (0..buf.len()).step_by(step) {
        match (scan(&buf[..cut]), &whole) {
            (Found::NeedMore, _) => {}
            (Found::End, Found::End) => {}
            (Found::Event(data, got_end), Found::Event(want, end)) => {
                assert_eq!(&data, want, "cut at {cut}");
                // A cut between the `\r` and `\n` of a CRLF ends the event one byte early.
                assert!(
                    got_end == *end || got_end + 1 == *end && buf[got_end] == b'\n',
                    "cut at {cut}: end {got_end} vs {end}"
                );
            }
            (prefix, whole) => panic!("cut at {cut}: prefix finds {prefix:?}, whole {whole:?}"),
        }
    }
});
