//! `FallbackLayer::retries`: a failed attempt sent again to the same model before the request
//! moves on. A hyper-util client over real loopback sockets against the scripted upstream,
//! whose `FirstThen` behavior fails a model's first requests and then answers.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, ClassSet, Retries};
use tower_llm_router::FallbackLayer;

const URL_PATH: &str = "/v1/chat/completions";

/// Retries with a backoff short enough for tests that do not measure it.
fn quick(max: u32) -> Retries {
    Retries::new(max).backoff(Duration::from_millis(5))
}

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn stream_body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// The layer, a `Buffer` (each retry readies its own clone through it), the routed client.
macro_rules! stack {
    ($layer:expr, $up:expr) => {
        ServiceBuilder::new()
            .layer($layer)
            .buffer(8)
            .service(routed_client($up.addr, vec![]))
    };
}

/// Sends `body` through `layer` to `up`; returns the answer's status, attempts header and body.
async fn send(layer: FallbackLayer, up: &Upstream, body: &str) -> (u16, String, String) {
    let svc = stack!(layer, up);
    let res = svc.oneshot(chat(&up.url(URL_PATH), body)).await.unwrap();
    let status = res.status().as_u16();
    let attempts = attempts_header(&res);
    let bytes = body_bytes(res.into_body()).await;
    (
        status,
        attempts,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Sends a request for `a`, then `b`, through `layer` to `up`.
async fn a_then_b(layer: FallbackLayer, up: &Upstream) -> (u16, String, String) {
    send(layer, up, &body("a", &["b"])).await
}

fn fails_once(behavior: Behavior) -> Behavior {
    Behavior::FirstThen(1, Box::new(behavior), Box::new(Behavior::Ok))
}

fn unavailable() -> Behavior {
    Behavior::Status(
        503,
        vec![],
        r#"{"error":{"message":"upstream connect error","type":"server_error"}}"#,
    )
}

#[tokio::test]
async fn a_model_that_fails_once_answers_itself_with_retries_and_the_next_one_without() {
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let (status, attempts, text) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, a=ok"));
    assert!(text.contains("hello from a"), "{text}");
    assert_eq!(up.models_received(), ["a", "a"]);

    // Off (the default): the next model at once.
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let (status, attempts, _) = a_then_b(FallbackLayer::new(), &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, b=ok"));
    assert_eq!(up.models_received(), ["a", "b"]);
}

/// Retries do not depend on `fallback_on`: a layer that never falls back still retries.
#[tokio::test]
async fn a_layer_that_never_falls_back_still_retries_its_one_model() {
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let layer = FallbackLayer::new()
        .fallback_on(ClassSet::none())
        .retries(quick(1));
    let (status, attempts, _) = a_then_b(layer, &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, a=ok"));
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let up = Upstream::start().await;
    up.set("a", fails_once(Behavior::Reset));
    let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, a=ok"));
    assert_eq!(up.models_received(), ["a", "a"]);
}

/// A rate limit, a bad request: the same model would answer the same; the next one is asked.
#[tokio::test]
async fn a_rate_limit_or_a_bad_request_is_not_retried() {
    let cases = [
        (
            Behavior::Status(
                429,
                vec![],
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            ),
            "a=rate_limited, b=ok",
        ),
        (
            Behavior::Status(
                400,
                vec![],
                r#"{"error":{"message":"Unsupported parameter: 'foo'","type":"invalid_request_error"}}"#,
            ),
            "a=other, b=ok",
        ),
    ];
    for (behavior, expected) in cases {
        let up = Upstream::start().await;
        up.set("a", fails_once(behavior));
        let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
        assert_eq!((status, attempts.as_str()), (200, expected));
        assert_eq!(up.models_received(), ["a", "b"]);
    }
}

/// An upstream that says it is down for longer than the retry would wait is believed: the next
/// model is asked at once. One that asks for less than the backoff is retried.
#[tokio::test]
async fn a_stated_wait_longer_than_the_backoff_moves_on() {
    let up = Upstream::start().await;
    up.set(
        "a",
        fails_once(Behavior::Status(503, vec![("retry-after", "30")], "{}")),
    );
    let started = Instant::now();
    let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(Retries::new(2)), &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, b=ok"));
    assert!(started.elapsed() < Duration::from_secs(10), "no wait");

    let up = Upstream::start().await;
    up.set(
        "a",
        fails_once(Behavior::Status(503, vec![("retry-after", "0")], "{}")),
    );
    let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, a=ok"));
}

#[tokio::test]
async fn retries_exhausted_move_on_to_the_next_model() {
    let up = Upstream::start().await;
    up.set("a", unavailable());
    let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
    assert_eq!(
        (status, attempts.as_str()),
        (200, "a=downtime, a=downtime, a=downtime, b=ok")
    );
    assert_eq!(up.models_received(), ["a", "a", "a", "b"]);
}

/// The last model retries by the same rules, and its last error comes back as it was.
#[tokio::test]
async fn the_last_models_last_error_comes_back_unchanged_after_its_retries() {
    let up = Upstream::start().await;
    let error = r#"{"error":{"message":"no healthy upstream","type":"server_error"}}"#;
    up.set(
        "b",
        Behavior::Status(503, vec![("x-upstream", "lb-7")], error),
    );
    up.set("a", unavailable());
    let svc = stack!(FallbackLayer::new().retries(quick(1)), up);
    let res = svc
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-upstream"], "lb-7");
    assert_eq!(
        attempts_header(&res),
        "a=downtime, a=downtime, b=downtime, b=downtime"
    );
    let attempts = res.extensions().get::<Attempts>().unwrap().tried.len();
    assert_eq!(attempts, 4);
    assert_eq!(body_bytes(res.into_body()).await, error.as_bytes());
    assert_eq!(up.models_received(), ["a", "a", "b", "b"]);
    // The last model's retry is the same request as its first attempt.
    let received = up.received();
    for retry in &received[1..] {
        assert_eq!(retry.method, received[0].method);
        assert_eq!(retry.path, URL_PATH);
        assert_eq!(retry.headers["content-type"], "application/json");
    }
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_overload_is_retried() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::FirstThen(
            1,
            Box::new(Behavior::StreamFirstEvent(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )),
            Box::new(Behavior::Stream(vec![
                r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            ])),
        ),
    );
    let layer = FallbackLayer::new().retries(quick(1));
    let (status, attempts, text) = send(layer, &up, &stream_body("a", &["b"])).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, a=ok"));
    assert!(text.contains(r#""content":"hi""#), "{text}");
    assert!(!text.contains("overloaded_error"), "{text}");
}

/// The retry waits its backoff: at least half the ceiling (the jitter's floor).
#[tokio::test]
async fn a_retry_waits_its_backoff() {
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let started = Instant::now();
    let layer = FallbackLayer::new().retries(Retries::new(1).backoff(Duration::from_millis(400)));
    let (_, attempts, _) = a_then_b(layer, &up).await;
    assert_eq!(attempts, "a=downtime, a=ok");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
}

/// A timeout is not retried: the attempt waited its whole allowance already.
#[tokio::test]
async fn a_timeout_is_not_retried() {
    let up = Upstream::start().await;
    up.set("a", fails_once(Behavior::Delay(Duration::from_secs(5))));
    let layer = FallbackLayer::new()
        .headers_timeout(Duration::from_millis(100))
        .retries(quick(2));
    let (status, attempts, _) = a_then_b(layer, &up).await;
    assert_eq!((status, attempts.as_str()), (200, "a=downtime, b=ok"));
}

/// Each failure is observed by health: once the model cools down (three downtime failures in a
/// row), it is not retried further, however many retries are allowed.
#[tokio::test]
async fn a_model_health_cools_down_is_retried_no_more() {
    let up = Upstream::start().await;
    up.set("a", unavailable());
    let (status, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(5)), &up).await;
    assert_eq!(
        (status, attempts.as_str()),
        (200, "a=downtime, a=downtime, a=downtime, b=ok")
    );
}

/// A budget that allows no extra attempt allows no retry either.
#[tokio::test]
async fn a_retry_withdraws_from_the_budget() {
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let empty = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(1),
        0,
        0.0,
    ));
    let layer = FallbackLayer::new().retries(quick(2)).budget(empty);
    let (status, attempts, _) = a_then_b(layer, &up).await;
    assert_eq!((status, attempts.as_str()), (503, "a=downtime"));
}

/// The reqwest middleware takes the setting too.
/// A request for `a`, then `b`, sent by a reqwest client (which follows redirects) with
/// `middleware` to `up`.
async fn through_reqwest(
    middleware: tower_llm_router::reqwest::FallbackMiddleware,
    up: &Upstream,
) -> reqwest::Response {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(body("a", &["b"]))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_reqwest_middleware_retries() {
    use tower_llm_router::reqwest::FallbackMiddleware;
    let up = Upstream::start().await;
    up.set("a", fails_once(unavailable()));
    let res = through_reqwest(FallbackMiddleware::default().retries(quick(1)), &up).await;
    assert_eq!(res.headers()["x-llm-router-attempts"], "a=downtime, a=ok");
    let json: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(json["model"], "a");
}

/// A pool that closes after `open_for` calls: a readiness error from then on.
#[derive(Clone)]
struct ClosingPool<S> {
    inner: S,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    open_for: usize,
}

impl<S> tower::Service<http::Request<tower_llm_router::RouterBody>> for ClosingPool<S>
where
    S: tower::Service<http::Request<tower_llm_router::RouterBody>>,
    S::Error: Into<tower_llm_router::BoxError>,
{
    type Response = S::Response;
    type Error = tower_llm_router::BoxError;
    type Future = futures::future::MapErr<S::Future, fn(S::Error) -> tower_llm_router::BoxError>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.calls.load(std::sync::atomic::Ordering::SeqCst) >= self.open_for {
            return std::task::Poll::Ready(Err("the pool is closed".into()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tower_llm_router::RouterBody>) -> Self::Future {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        futures::TryFutureExt::map_err(self.inner.call(req), Into::into)
    }
}

/// A retry the inner service refuses before sending it ends the request, as a later attempt's
/// readiness error does; the answer names the model last asked (the one the retry was for),
/// not the one before it.
#[tokio::test]
async fn a_retry_refused_before_it_is_sent_names_the_model_it_was_for() {
    let up = Upstream::start().await;
    up.set(
        "x",
        Behavior::Status(429, vec![], r#"{"error":{"message":"slow down"}}"#),
    );
    up.set("a", unavailable());
    let pool = ClosingPool {
        inner: routed_client(up.addr, vec![]),
        calls: Default::default(),
        open_for: 2,
    };
    let layer = FallbackLayer::new()
        .retries(quick(1))
        .answer_transport_errors(true);
    let res = ServiceBuilder::new()
        .layer(layer)
        .service(pool)
        .oneshot(chat(&up.url(URL_PATH), &body("x", &["a"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(attempts_header(&res), "x=rate_limited, a=downtime");
    assert_eq!(model_header(&res), "a");
    let answer: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(
        answer["error"]["message"],
        "the inner service failed before the model `a` could be asked: the pool is closed"
    );
    assert_eq!(up.models_received(), ["x", "a"]);
}

/// A request extension that counts its clones: the layer clones the request's head only while
/// another attempt may follow.
#[derive(Debug)]
struct CountsClones(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(self.0.clone())
    }
}

/// A request with no model goes upstream once, retries or not: its head is handed on, not
/// copied (headers and extensions) for a retry that cannot come. A model's last attempt, its
/// retries spent, takes the head too.
#[tokio::test]
async fn a_request_that_cannot_be_retried_hands_its_head_on_without_a_copy() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::FirstThen(2, Box::new(unavailable()), Box::new(Behavior::Ok)),
    );
    for (body, max, clones) in [
        // No model: passed through, once.
        (
            r#"{"messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
            0,
            0,
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
            2,
            0,
        ),
        // One model, two retries: the first two attempts copy the head, the third takes it.
        (body("a", &[]), 2, 2),
    ] {
        let clones_made = std::sync::Arc::new(AtomicUsize::new(0));
        let mut request = chat(&up.url(URL_PATH), &body);
        request
            .extensions_mut()
            .insert(CountsClones(clones_made.clone()));
        let svc = stack!(FallbackLayer::new().retries(quick(max)), up);
        let res = svc.oneshot(request).await.unwrap();
        assert_eq!(res.status(), 200, "{body}");
        assert_eq!(
            clones_made.load(Ordering::SeqCst),
            clones,
            "{body}, {max} retries"
        );
    }
    assert_eq!(up.models_received(), ["", "", "a", "a", "a"]);
}

/// A redirect not followed is downtime (its model cools down), but not a passing fault: the
/// same URL redirects again a moment later, so it moves on at once, as the docs of
/// `FallbackLayer::retries` list what is retried. The same for reqwest's redirect error (a
/// loop), whose every retry would follow the loop again.
#[tokio::test]
async fn a_redirect_is_not_retried() {
    let up = Upstream::start().await;
    let location: &'static str = Box::leak(up.url(URL_PATH).into_boxed_str());
    for status in [301, 302, 307, 308] {
        up.set(
            "a",
            Behavior::Status(status, vec![("location", location)], ""),
        );
        let before = up.models_received().len();
        let (code, attempts, _) = a_then_b(FallbackLayer::new().retries(quick(2)), &up).await;
        assert_eq!(
            (code, attempts.as_str()),
            (200, "a=downtime, b=ok"),
            "{status}"
        );
        assert_eq!(up.models_received()[before..], ["a", "b"], "{status}");
    }

    use tower_llm_router::reqwest::FallbackMiddleware;
    up.set("a", Behavior::Status(307, vec![("location", location)], ""));
    let res = through_reqwest(FallbackMiddleware::default().retries(quick(2)), &up).await;
    assert_eq!(res.headers()["x-llm-router-attempts"], "a=downtime, b=ok");
}
