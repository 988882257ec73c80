//! `FallbackLayer` end to end, over a stand-in upstream: the request body's budget
//! (`max_buffered_bytes`) and a broken event stream's final error event (the Responses API's
//! `sequence_number`, read from the frames passed on).
//!
//! The input is text-framed so that seeds stay readable:
//!
//! ```text
//! 64 7
//! {"model":"a","input":"hi","stream":true}
//! ---
//! 200
//! content-type: text/event-stream
//! x-fuzz-break: 1
//!
//! event: response.created␌data: {...}
//! ```
//!
//! The first line is the layer's `max_buffered_bytes` (none if it does not parse) and the size
//! of the request body's frames; then the request body up to a line `---`; then the first
//! model's answer as in the `classify` target: status, headers, a blank line, the body, cut
//! into frames at each form feed (`\x0c`). With the pseudo-header `x-fuzz-break`, the
//! upstream's body ends with an error instead of its end. Every other attempt answers a 200
//! JSON completion.
//!
//! For any input:
//! * nothing panics, the layer answers, and its body can be read to its end;
//! * the budget: a body longer than the budget is refused with a 503 `overloaded`, and one
//!   that fits is not, also the second time the same request is sent (what the first held was
//!   given back);
//! * a broken stream's error event written by the layer in the Responses API's shape holds a
//!   `sequence_number` that is 0 or one after a `sequence_number` passed on before it.
#![no_main]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_router::health::InMemoryHealth;
use tower_llm_router::{BoxError, FallbackLayer, RouterBody};

/// The layer's own error event in the Responses API's shape (its message says how the
/// stand-in upstream broke, which no input holds), up to its number.
const SEQUENCE_TAIL: &[u8] =
    b"\"message\":\"the upstream stream broke: fuzz: upstream broke\",\"param\":null,\"sequence_number\":";
const SEQUENCE_KEY: &[u8] = b"\"sequence_number\":";

/// A body of the given frames, which ends with an error when `broken`.
struct Frames {
    frames: VecDeque<Bytes>,
    broken: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(match self.frames.pop_front() {
            Some(data) => Some(Ok(Frame::data(data))),
            None if std::mem::take(&mut self.broken) => Some(Err("fuzz: upstream broke".into())),
            None => None,
        })
    }
}

mod framing;

/// The first model's answer, as the input describes it.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    frames: Vec<Bytes>,
    broken: bool,
}

fn answer(data: &[u8]) -> Answer {
    let (status, mut headers, body) = framing::answer(data);
    let broken = headers.remove("x-fuzz-break").is_some();
    let frames = body
        .split(|&b| b == 0x0c)
        .filter(|frame| !frame.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    Answer {
        status: status.unwrap_or(StatusCode::OK),
        headers,
        frames,
        broken,
    }
}

/// The layer's answer: its status, whether the upstream wrote it, its body's data frames (up
/// to an error, if the body ends in one).
struct Got {
    status: StatusCode,
    from_upstream: bool,
    frames: Vec<Bytes>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

async fn call(layer: &FallbackLayer, request_body: &Bytes, chunk: usize, first: &Answer) -> Got {
    let calls = Arc::new(AtomicUsize::new(0));
    let first = first.clone();
    let upstream = service_fn(move |req: Request<RouterBody>| {
        let call = calls.fetch_add(1, Ordering::Relaxed);
        let first = first.clone();
        async move {
            let _ = req.into_body().collect_bytes().await;
            let mut builder = Response::builder().header("x-fuzz-upstream", "1");
            let body = if call == 0 {
                builder = builder.status(first.status);
                for (name, value) in &first.headers {
                    builder = builder.header(name, value);
                }
                Frames {
                    frames: first.frames.into(),
                    broken: first.broken,
                }
            } else {
                builder = builder.header("content-type", "application/json");
                let ok = Bytes::from_static(br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#);
                Frames {
                    frames: VecDeque::from([ok]),
                    broken: false,
                }
            };
            Ok::<_, BoxError>(builder.body(body)?)
        }
    });
    let frames: Vec<Bytes> = request_body
        .chunks(chunk)
        .map(Bytes::copy_from_slice)
        .collect();
    let request = Request::post("/v1/responses")
        .header("content-type", "application/json")
        .body(Frames {
            frames: frames.into(),
            broken: false,
        })
        .expect("request");
    let service = layer
        .clone()
        .health(Arc::new(InMemoryHealth::new()))
        .layer(upstream);
    let response = service.oneshot(request).await.expect("the layer answers");
    let status = response.status();
    let from_upstream = response.headers().contains_key("x-fuzz-upstream");
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Err(_) => break,
        }
    }
    Got {
        status,
        from_upstream,
        frames,
    }
}

/// Whether the layer refused the request for its budget.
fn refused_over_budget(got: &Got) -> bool {
    if got.from_upstream || got.status != StatusCode::SERVICE_UNAVAILABLE {
        return false;
    }
    let body: Vec<u8> = got.frames.concat();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("the layer's error is JSON");
    json["error"]["code"] == "overloaded"
}

/// The layer's Responses API error event (its last frame) is numbered 0 or one after a number
/// passed on before it.
fn check_sequence(got: &Got) {
    let Some((last, before)) = got.frames.split_last() else {
        return;
    };
    let Some(at) = memchr::memmem::rfind(last, SEQUENCE_TAIL) else {
        return;
    };
    let digits: Vec<u8> = last[at + SEQUENCE_TAIL.len()..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    let number: u64 = std::str::from_utf8(&digits)
        .expect("digits")
        .parse()
        .expect("the error event's sequence_number is a u64");
    let mut passed: Vec<u8> = before.concat();
    passed.extend_from_slice(&last[..at]);
    if number == 0 {
        return;
    }
    let previous = number - 1;
    let seen = memchr::memmem::find_iter(&passed, SEQUENCE_KEY).any(|key| {
        let value = passed[key + SEQUENCE_KEY.len()..].trim_ascii_start();
        let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&value[..digits])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            == Some(previous)
    });
    assert!(
        seen,
        "error event numbered {number}, but no sequence_number {previous} was passed on: {:?}",
        String::from_utf8_lossy(&got.frames.concat())
    );
}

fuzz_target!(|data: &[u8]| {
    let (config, rest) = framing::split_line(data);
    let mut numbers = std::str::from_utf8(config)
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(|n| n.parse::<usize>().ok());
    let budget = numbers.next().flatten();
    let chunk = numbers.next().flatten().unwrap_or(4096).clamp(1, 4096);
    let (request_body, upstream) = match memchr::memmem::find(rest, b"\n---\n") {
        Some(at) => (&rest[..at], &rest[at + 5..]),
        None => (rest, &b""[..]),
    };
    let request_body = Bytes::copy_from_slice(request_body);
    let first = answer(upstream);
    let mut layer = FallbackLayer::new().default_fallbacks(["fuzz/fallback"]);
    if let Some(budget) = budget {
        layer = layer.max_buffered_bytes(budget);
    }
    runtime().block_on(async {
        let got = call(&layer, &request_body, chunk, &first).await;
        check_sequence(&got);
        if let Some(budget) = budget {
            let refused = refused_over_budget(&got);
            if request_body.len() > budget {
                assert!(
                    refused,
                    "{} bytes over a budget of {budget}: {}",
                    request_body.len(),
                    got.status
                );
            } else {
                assert!(
                    !refused,
                    "{} bytes refused by a budget of {budget}",
                    request_body.len()
                );
            }
            // What the first call held was given back.
            let again = call(&layer, &request_body, chunk, &first).await;
            assert_eq!(refused_over_budget(&again), refused, "the second call");
        }
    });
});
