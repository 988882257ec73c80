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
//! The first line is the layer's `max_buffered_bytes` (none if it does not parse), the size
//! of the request body's frames and, optionally, the layer's `retries` (at most 4; none when
//! absent), how many upstream calls answer the input's answer (1 by default, at most 8), the
//! retry backoff in milliseconds (0 by default: a retry at once, without a timer; the runtime's
//! clock is paused and moves ahead when the runtime is idle, so a wait costs no time) and the
//! index of the inner service's `poll_ready` that fails (none by default; with one, the layer
//! answers transport errors); then the request body up to a line `---`; then the answer of
//! the first calls as in the `classify` target: status, headers, a blank line, the body, cut
//! into frames at each form feed (`\x0c`). With the pseudo-header `x-fuzz-break`, the
//! upstream's body ends with an error instead of its end. Every later call answers a 200
//! JSON completion.
//!
//! For any input:
//! * nothing panics, the layer answers, and its body can be read to its end;
//! * the budget: a body longer than the budget is refused with a 503 `overloaded`, and one
//!   that fits is not, also the second time the same request is sent (what the first held was
//!   given back);
//! * a broken stream's error event written by the layer in the Responses API's shape holds a
//!   `sequence_number` that is 0 or one after a `sequence_number` passed on before it;
//! * retries: with `retries` n, no model is asked more than n + 1 times; the
//!   [`Attempts`] record lists every call the upstream got, in order, by the model its body
//!   names, and `x-llm-router-attempts` (when present) is `model=outcome` of each; a model is
//!   asked again only after a `downtime` failure that was not a redirect (301, 302, 303, 307,
//!   308: the ones a client follows);
//! * a readiness refusal ends the request as an `Err` only when it is the layer's own
//!   `poll_ready`'s.
#![no_main]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceExt};
use tower_llm_router::classify::ErrorClass;
use tower_llm_router::fallback::{Attempts, Outcome, Retries};
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
mod runtime;
use runtime::runtime;

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

/// How the stand-in upstream behaves, from the input's first line.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// How many calls answer the input's answer (the later ones a 200 completion).
    failing: usize,
    /// The index of the `poll_ready` that fails, if any.
    unready_at: Option<usize>,
}

/// What the stand-in upstream saw, shared by its clones (the layer's `poll_ready` clones it).
#[derive(Default)]
struct Seen {
    readies: AtomicUsize,
    /// The `model` of each call's body, in the order of the calls (`None`: no string `model`,
    /// or a body serde_json does not read).
    models: Mutex<Vec<Option<String>>>,
}

/// The stand-in upstream: `failing` calls answer the input's answer, and one `poll_ready` may
/// fail.
#[derive(Clone)]
struct Upstream {
    first: Answer,
    behaviour: Behaviour,
    seen: Arc<Seen>,
}

type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<Frames>, BoxError>> + Send>>;

impl Service<Request<RouterBody>> for Upstream {
    type Response = Response<Frames>;
    type Error = BoxError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let ready = self.seen.readies.fetch_add(1, Ordering::Relaxed);
        if self.behaviour.unready_at == Some(ready) {
            return Poll::Ready(Err("fuzz: not ready".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RouterBody>) -> UpstreamFuture {
        let call = {
            let mut models = self.seen.models.lock().expect("not poisoned");
            models.push(None);
            models.len() - 1
        };
        let first = (call < self.behaviour.failing).then(|| self.first.clone());
        let seen = self.seen.clone();
        Box::pin(async move {
            let body = req.into_body().collect_bytes().await.unwrap_or_default();
            let model = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|json| json["model"].as_str().map(str::to_owned));
            seen.models.lock().expect("not poisoned")[call] = model;
            let mut builder = Response::builder().header("x-fuzz-upstream", "1");
            let body = match first {
                Some(first) => {
                    builder = builder.status(first.status);
                    for (name, value) in &first.headers {
                        builder = builder.header(name, value);
                    }
                    Frames {
                        frames: first.frames.into(),
                        broken: first.broken,
                    }
                }
                None => {
                    builder = builder.header("content-type", "application/json");
                    let ok = Bytes::from_static(br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#);
                    Frames {
                        frames: VecDeque::from([ok]),
                        broken: false,
                    }
                }
            };
            Ok::<_, BoxError>(builder.body(body)?)
        })
    }
}

/// The layer's answer: its status, whether the upstream wrote it, its body's data frames (up
/// to an error, if the body ends in one), its records and its attempts header.
struct Got {
    status: StatusCode,
    from_upstream: bool,
    frames: Vec<Bytes>,
    attempts: Option<Attempts>,
    attempts_header: Option<Vec<u8>>,
}

async fn call(
    layer: &FallbackLayer,
    request_body: &Bytes,
    chunk: usize,
    upstream: Upstream,
) -> Option<Got> {
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
    let response = service.oneshot(request).await.ok()?;
    let status = response.status();
    let from_upstream = response.headers().contains_key("x-fuzz-upstream");
    let attempts_header = response
        .headers()
        .get("x-llm-router-attempts")
        .map(|v| v.as_bytes().to_vec());
    let attempts = response.extensions().get::<Attempts>().cloned();
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
    Some(Got {
        status,
        from_upstream,
        frames,
        attempts,
        attempts_header,
    })
}

/// The retry rules, against what the upstream saw.
fn check_attempts(got: &Got, seen: &Seen, retries: u32) {
    let models = seen.models.lock().expect("not poisoned");
    let mut counts = std::collections::HashMap::<&str, u32>::new();
    for model in models.iter().flatten() {
        let count = counts.entry(model).or_default();
        *count += 1;
        assert!(
            *count <= retries + 1,
            "`{model}` asked {count} times with {retries} retries: {models:?}"
        );
    }
    let Some(attempts) = &got.attempts else {
        return;
    };
    assert_eq!(
        attempts.tried.len(),
        models.len(),
        "the records and the upstream's calls: {:?} / {models:?}",
        attempts.tried
    );
    for (attempt, model) in attempts.tried.iter().zip(models.iter()) {
        if let Some(model) = model {
            assert_eq!(&*attempt.model, model.as_str(), "{:?}", attempts.tried);
        }
    }
    for pair in attempts.tried.windows(2) {
        if pair[0].model == pair[1].model {
            assert_eq!(
                pair[0].outcome,
                Outcome::Failed(ErrorClass::Downtime),
                "asked again after {:?}",
                attempts.tried
            );
            // The redirects a client follows; another 3xx (300, 304, an unassigned 398) is no
            // redirect to the crate, and retried when its body says downtime.
            let redirect = |s: StatusCode| matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308);
            assert!(
                !pair[0].status.is_some_and(redirect),
                "a redirect retried: {:?}",
                attempts.tried
            );
        }
    }
    if let Some(header) = &got.attempts_header {
        let expected: Vec<String> = attempts
            .tried
            .iter()
            .map(|a| format!("{}={}", a.model, a.outcome.as_str()))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(header),
            expected.join(", "),
            "the attempts header"
        );
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
    let retries = numbers.next().flatten().map(|n| n.min(4) as u32);
    let failing = numbers.next().flatten().map_or(1, |n| n.min(8));
    let backoff_ms = numbers.next().flatten().map_or(0, |n| n.min(10_000) as u64);
    let unready_at = numbers.next().flatten();
    let (request_body, upstream) = match memchr::memmem::find(rest, b"\n---\n") {
        Some(at) => (&rest[..at], &rest[at + 5..]),
        None => (rest, &b""[..]),
    };
    let request_body = Bytes::copy_from_slice(request_body);
    let first = answer(upstream);
    let behaviour = Behaviour {
        failing,
        unready_at,
    };
    let mut layer = FallbackLayer::new().default_fallbacks(["fuzz/fallback"]);
    if let Some(budget) = budget {
        layer = layer.max_buffered_bytes(budget);
    }
    if let Some(retries) = retries {
        let backoff = Duration::from_millis(backoff_ms);
        layer = layer.retries(Retries::new(retries).backoff(backoff));
    }
    if unready_at.is_some() {
        layer = layer.answer_transport_errors(true);
    }
    let upstream = |seen: &Arc<Seen>| Upstream {
        first: first.clone(),
        behaviour,
        seen: seen.clone(),
    };
    runtime().block_on(async {
        let seen = Arc::new(Seen::default());
        let Some(got) = call(&layer, &request_body, chunk, upstream(&seen)).await else {
            // Only the layer's own `poll_ready` (the first) returns the inner error as it is.
            assert_eq!(
                unready_at,
                Some(0),
                "an Err without the first readiness refused"
            );
            return;
        };
        check_sequence(&got);
        check_attempts(&got, &seen, retries.unwrap_or(0));
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
            let seen = Arc::new(Seen::default());
            let again = call(&layer, &request_body, chunk, upstream(&seen)).await;
            let again = again.expect("the second call answers as the first did");
            assert_eq!(refused_over_budget(&again), refused, "the second call");
        }
    });
});
