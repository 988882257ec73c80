//! The SSE first-event reader: `classify::first_sse_event`.
//!
//! For any bytes:
//! * it never panics, and an event's `end` lies within the buffer;
//! * reading stops at the event: the same scan of `buf[..end]` finds the same event;
//! * chunk boundaries do not matter: every prefix of the buffer either needs more bytes or
//!   finds the same first event (the same data, or the same `[DONE]` end), so the answer does
//!   not depend on how the upstream's bytes were split into reads;
//! * bytes after the event do not change it.
#![no_main]

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|buf: &[u8]| {
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
