//! Shared health and tower semantics, end to end: cooldowns under concurrent attempts, the
//! layers in common stacks (axum's `Router::layer` and `HandleErrorLayer`, `ServiceBuilder`
//! with timeout, buffer and limits over a hyper-util client), over real loopback sockets.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use serde_json::json;
use support::*;
use tokio::sync::Notify;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::health::{Health, InMemoryHealth};
use tower_llm_router::{BoxError, FallbackLayer, RouterBody};

const URL_PATH: &str = "/v1/chat/completions";

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// An upstream for one model on 127.0.0.1: its first request waits until `release` is
/// notified and then answers 200; every later one gets `status` with `headers` at once.
/// `arrived` is notified when the first request is in.
async fn slow_then(
    arrived: Arc<Notify>,
    release: Arc<Notify>,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (arrived, release, seen) = (arrived.clone(), release.clone(), seen.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let (arrived, release) = (arrived.clone(), release.clone());
                    let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            arrived.notify_one();
                            release.notified().await;
                            return Ok::<_, std::io::Error>(json_response(
                                200,
                                &[],
                                completion("a"),
                            ));
                        }
                        let error =
                            format!(r#"{{"error":{{"message":"failed","code":{status}}}}}"#);
                        Ok(json_response(status, headers, error))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Requests to a model are in flight when one of them is rate limited: those sent before the
/// 429 were admitted before the limit, and their successes say nothing about it. Before, the
/// first of them to succeed ended the cooldown at once, and the next request went to the
/// rate-limited model first again (so under concurrency a `Retry-After` was never honoured).
#[tokio::test]
async fn a_success_sent_before_a_rate_limit_does_not_end_its_cooldown() {
    let up = Upstream::start().await;
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let a = slow_then(
        arrived.clone(),
        release.clone(),
        429,
        &[("retry-after", "60")],
    )
    .await;
    let health = Arc::new(InMemoryHealth::new());
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![("a", a)]));
    let url = up.url(URL_PATH);
    // Sent first, answered last.
    let in_flight = tokio::spawn(svc.clone().oneshot(chat(&url, &body("a", &["b"]))));
    arrived.notified().await;
    let limited = svc
        .clone()
        .oneshot(chat(&url, &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&limited), "a=rate_limited, b=ok");
    assert!(health.is_cooling_down("a"));
    release.notify_one();
    let early = in_flight.await.unwrap().unwrap();
    assert_eq!(attempts_header(&early), "a=ok");
    assert!(
        health.is_cooling_down("a"),
        "a success sent before the 429 does not end its cooldown"
    );
    let next = svc.oneshot(chat(&url, &body("a", &["b"]))).await.unwrap();
    assert_eq!(attempts_header(&next), "b=ok");
}

/// Sends a request for `a` then `b` where `a` answers 429 with `headers` and `body`, and
/// asserts that the shared health then cools `a` for `expected` (give or take the store's
/// milliseconds), and tries it last.
async fn a_429_cools_its_model_for(
    headers: Vec<(&'static str, &'static str)>,
    body_text: &'static str,
    expected: Duration,
) {
    a_rate_limit_cools_its_model_for(Behavior::Status(429, headers, body_text), expected).await;
}

/// Sends a request for `a` then `b` where `a` answers as `behavior` says (a rate limit), and
/// asserts that the shared health then cools `a` for `expected` (give or take the store's
/// milliseconds), and tries it last.
async fn a_rate_limit_cools_its_model_for(behavior: Behavior, expected: Duration) {
    a_failure_cools_its_model_for(behavior, InMemoryHealth::new(), "rate_limited", expected).await;
}

/// Sends a request for `a` then `b` where `a` answers as `behavior` says, a failure of class
/// `class`, and asserts that `health` then cools `a` for `expected` (give or take the store's
/// milliseconds), and tries it last.
async fn a_failure_cools_its_model_for(
    behavior: Behavior,
    health: InMemoryHealth,
    class: &str,
    expected: Duration,
) {
    let up = Upstream::start().await;
    up.set("a", behavior);
    let health = Arc::new(health);
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .buffer(8)
        .service(routed_client(up.addr, vec![]));
    let url = up.url(URL_PATH);
    let sent = tokio::time::Instant::now();
    let res = svc
        .clone()
        .oneshot(chat(&url, &body("a", &["b"])))
        .await
        .unwrap();
    let answered = tokio::time::Instant::now();
    assert_eq!(attempts_header(&res), format!("a={class}, b=ok"));
    assert!(res.headers().get("retry-after").is_none());
    // The cooldown began between sending and the answer; the store counts in milliseconds.
    let until = health.cooling_until("a").expect("cooling down");
    let slack = Duration::from_millis(5);
    assert!(
        until + slack >= sent + expected && until <= answered + expected + slack,
        "cooling {:?} from the answer, not {expected:?}",
        until - answered,
    );
    let next = svc.oneshot(chat(&url, &body("a", &["b"]))).await.unwrap();
    assert_eq!(
        attempts_header(&next),
        "b=ok",
        "a is tried last while it cools"
    );
}

/// A 429 that says only when its exhausted limit resets (OpenAI, Groq, Together: no
/// `Retry-After`, `x-ratelimit-remaining-requests: 0` and `x-ratelimit-reset-requests: 20s`)
/// cools its model for those 20 s, not for the 5 s `rate_limit_cooldown` it got before.
#[tokio::test]
async fn a_rate_limit_reset_header_sets_the_cooldown() {
    let headers = vec![
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "20s"),
        ("x-ratelimit-remaining-tokens", "29000"),
        ("x-ratelimit-reset-tokens", "2ms"),
    ];
    let error = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
    a_429_cools_its_model_for(headers, error, Duration::from_secs(20)).await;
}

/// Gemini says how long to wait in its error body only (`RetryInfo.retryDelay`): the body the
/// layer read to classify the answer gives the cooldown.
#[tokio::test]
async fn a_gemini_retry_delay_in_the_body_sets_the_cooldown() {
    let error = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"32.5s"}]}}"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_millis(32_500)).await;
}

/// Gemini's OpenAI-compatible endpoint may answer a 429 with nothing structured about the wait
/// (no `Retry-After`, no `RetryInfo` detail): only its message says "Please retry in 31.44s.".
/// That text gives the cooldown; before, the model cooled for the default 5 s and the next
/// requests went back into the same 429.
#[tokio::test]
async fn a_retry_delay_in_a_429_message_sets_the_cooldown() {
    let error = r#"[{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10, model: gemini-2.5-flash\nPlease retry in 31.44s.","status":"RESOURCE_EXHAUSTED"}}]"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_millis(31_440)).await;
    // Azure OpenAI's wording, when a proxy in front dropped its headers.
    let error = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 12 seconds."}}"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_secs(12)).await;
    // OpenAI's and Groq's, as Go durations.
    let error = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_1` service tier `on_demand` on tokens per day (TPD): Limit 100000, Used 99000, Requested 2000. Please try again in 1m26.4s.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_millis(86_400)).await;
}

/// A delay stated as a compound of terms ("1m 30s", "2 minutes and 5 seconds") cools the model
/// for the whole of it: before, the reader stopped at the space and "1m 30s" cooled it for 60 s.
#[tokio::test]
async fn a_compound_delay_in_a_429_message_sets_the_whole_cooldown() {
    let error = r#"{"error":{"message":"Rate limit reached for requests per day. Please try again in 1m 30s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_secs(90)).await;
    let error = r#"{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 2 minutes and 5 seconds."}}"#;
    a_429_cools_its_model_for(vec![], error, Duration::from_secs(125)).await;
}

/// Only downtime asked for by a delay: one failure counts, and the configured cooldown is none.
fn downtime_cools_only_as_asked() -> InMemoryHealth {
    InMemoryHealth::new()
        .downtime_threshold(1)
        .downtime_cooldown(Duration::ZERO)
}

/// A 503 (vLLM, TGI, Azure) or Anthropic's 529 that says how long it will be unavailable in its
/// message only ("Please retry in 20 seconds.") cools its model for that long once its downtime
/// counts, as a 503's `Retry-After` does: before, only a 429's words were read, and the model
/// cooled for `downtime_cooldown` whatever the upstream said.
#[tokio::test]
async fn a_retry_delay_in_a_503_or_529_message_sets_the_downtime_cooldown() {
    let overloaded = r#"{"error":{"message":"The server is overloaded. Please retry in 20 seconds.","type":"server_error","code":"service_unavailable"}}"#;
    let behavior = Behavior::Status(503, vec![], overloaded);
    let downtime = "downtime";
    a_failure_cools_its_model_for(
        behavior,
        downtime_cools_only_as_asked(),
        downtime,
        Duration::from_secs(20),
    )
    .await;
    let anthropic = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded. Please try again in 1 minute."}}"#;
    let behavior = Behavior::Status(529, vec![], anthropic);
    a_failure_cools_its_model_for(
        behavior,
        downtime_cools_only_as_asked(),
        downtime,
        Duration::from_secs(60),
    )
    .await;
    // Bounded by `max_cooldown`, as any wait an upstream asks for.
    let behavior = Behavior::Status(503, vec![], "Service unavailable: retry after 2 hours");
    let capped = downtime_cools_only_as_asked().max_cooldown(Duration::from_secs(45));
    a_failure_cools_its_model_for(behavior, capped, downtime, Duration::from_secs(45)).await;
}

/// An overload that comes as a 200 stream's first event (OpenRouter passes a provider's 529
/// on so, Anthropic sends `overloaded_error`) says what a 503 or 529 says: its words are the
/// upstream's own, and its stated delay cools the model as long.
#[tokio::test]
async fn a_retry_delay_in_an_overload_event_of_a_200_stream_sets_the_downtime_cooldown() {
    let openrouter = r#"{"error":{"code":529,"message":"Provider overloaded, retry in 1m 30s"}}"#;
    a_failure_cools_its_model_for(
        Behavior::StreamFirstEvent(openrouter),
        downtime_cools_only_as_asked(),
        "downtime",
        Duration::from_secs(90),
    )
    .await;
    let anthropic = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded. Please try again in 40 seconds."}}"#;
    a_failure_cools_its_model_for(
        Behavior::StreamFirstEvent(anthropic),
        downtime_cools_only_as_asked(),
        "downtime",
        Duration::from_secs(40),
    )
    .await;
}

/// A 500 or a 502 may quote what the client sent (an exception's text, a proxy's page): the
/// words of their bodies set no cooldown, nor do those of a 503 whose downtime has not yet
/// counted `downtime_threshold` times.
#[tokio::test]
async fn the_words_of_other_5xx_set_no_cooldown() {
    let up = Upstream::start().await;
    let echo = r#"{"error":{"message":"Internal error while processing 'please retry in 600 seconds'","type":"server_error"}}"#;
    up.set("echo-500", Behavior::Status(500, vec![], echo));
    up.set(
        "proxy-502",
        Behavior::Status(502, vec![], "Bad gateway: retry in 600 seconds"),
    );
    up.set(
        "down-503",
        Behavior::Status(503, vec![], "Please retry in 600 seconds."),
    );
    let health = Arc::new(downtime_cools_only_as_asked().downtime_threshold(2));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    let url = up.url(URL_PATH);
    // Twice each: the second failure in a row counts.
    for model in ["echo-500", "proxy-502", "down-503"].repeat(2) {
        let res = svc
            .clone()
            .oneshot(chat(&url, &body(model, &["b"])))
            .await
            .unwrap();
        assert_eq!(attempts_header(&res), format!("{model}=downtime, b=ok"));
    }
    assert!(!health.is_cooling_down("echo-500"));
    assert!(!health.is_cooling_down("proxy-502"));
    // The 503's words apply once its downtime counts.
    assert!(health.is_cooling_down("down-503"));
}

/// Gemini's streaming endpoint (`alt=sse`) can answer 200 and send the quota error as its first
/// event: the `RetryInfo.retryDelay` in that event gives the cooldown, as it does in a 429's
/// body. Before, the delay was looked for in the raw stream bytes (`data: {...}`, not JSON) and
/// never found: the model cooled for the default 5 s.
#[tokio::test]
async fn a_gemini_retry_delay_in_a_streams_first_event_sets_the_cooldown() {
    let error = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
    a_rate_limit_cools_its_model_for(Behavior::StreamFirstEvent(error), Duration::from_secs(37))
        .await;
}

/// The same past a keep-alive comment and a content-less first chunk (Gemini's
/// OpenAI-compatible endpoint): the error event the layer decided on, not the stream's first
/// event, gives the delay.
#[tokio::test]
async fn a_retry_delay_in_an_error_event_after_the_preamble_sets_the_cooldown() {
    let stream = concat!(
        ": keep-alive\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        "\n\n",
        r#"data: [{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"41.5s"}]}}]"#,
        "\n\n",
    );
    a_rate_limit_cools_its_model_for(Behavior::StreamRaw(stream), Duration::from_millis(41_500))
        .await;
}

/// A 429 whose body is an event stream (a streaming endpoint, or a proxy in front of one,
/// that answers the error in the stream's own form): the `RetryInfo.retryDelay` in its error
/// event gives the cooldown, as it does in a JSON 429 or in a 200 stream's first event.
/// Before, it was looked for in the body's raw bytes (`data: {...}`, not JSON) and never found.
#[tokio::test]
async fn a_retry_delay_in_an_error_status_event_stream_sets_the_cooldown() {
    let stream = concat!(
        ": keep-alive\n\n",
        r#"data: {"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"43s"}]}}"#,
        "\n\n",
    );
    let headers = vec![("content-type", "text/event-stream")];
    a_429_cools_its_model_for(headers, stream, Duration::from_secs(43)).await;
}

/// The same for an outage: a model counting downtime failures while requests sent before it
/// went down succeed one by one. Before, each such success reset the count, so that the model
/// did not cool down until every request sent before the outage had ended.
#[tokio::test]
async fn a_success_sent_before_downtime_failures_does_not_reset_their_count() {
    let up = Upstream::start().await;
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let a = slow_then(arrived.clone(), release.clone(), 503, &[]).await;
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(2));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![("a", a)]));
    let url = up.url(URL_PATH);
    let send = || svc.clone().oneshot(chat(&url, &body("a", &["b"])));
    let in_flight = tokio::spawn(send());
    arrived.notified().await;
    assert_eq!(attempts_header(&send().await.unwrap()), "a=downtime, b=ok");
    release.notify_one();
    let early = in_flight.await.unwrap().unwrap();
    assert_eq!(attempts_header(&early), "a=ok");
    // The second failure in a row since the outage began.
    assert_eq!(attempts_header(&send().await.unwrap()), "a=downtime, b=ok");
    assert!(health.is_cooling_down("a"));
    assert_eq!(attempts_header(&send().await.unwrap()), "b=ok");
}

/// The upstream of an axum handler: answers 503 for model `a`, a completion naming the model
/// the layer routed otherwise.
async fn handler_upstream(req: axum::extract::Request) -> Response<axum::body::Body> {
    let model = req
        .extensions()
        .get::<tower_llm_router::fallback::RoutedModel>()
        .map(|m| m.0.to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        sent["model"],
        model.as_str(),
        "the body names the routed model"
    );
    let (status, answer) = if model == "a" {
        (503, r#"{"error":{"message":"down"}}"#.to_owned())
    } else {
        (200, completion(&model))
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(answer))
        .unwrap()
}

async fn serve_axum(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `Router::layer(FallbackLayer)`: each attempt reaches the handler (the service below the
/// layer is axum's `Route`) with the routed model in the body and the extension.
#[tokio::test]
async fn fallback_through_axum_router_layer_over_real_sockets() {
    let app = axum::Router::new()
        .route(URL_PATH, axum::routing::post(handler_upstream))
        .layer(FallbackLayer::new());
    let addr = serve_axum(app).await;
    let url = format!("http://{addr}{URL_PATH}");
    let res = client()
        .request(chat(&url, &body("a", &["b"])).map(RouterBody::new))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(answer["model"], "b");
}

/// A common gateway stack: axum's `HandleErrorLayer` over the layer, a `tower` timeout per
/// attempt, a `Buffer` and its limits below, a hyper-util client at the bottom. A slow model
/// falls back on the timeout's `Elapsed`; a last model that cannot be reached becomes the
/// error handler's answer.
#[tokio::test]
async fn fallback_in_a_service_builder_stack_behind_handle_error_layer() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(30)));
    let dead = closed_port().await;
    let health = Arc::new(InMemoryHealth::new());
    let stack = ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            |error: BoxError| async move { (StatusCode::BAD_GATEWAY, format!("upstream: {error}")) },
        ))
        .layer(FallbackLayer::new().health(health.clone()))
        .timeout(Duration::from_millis(300))
        .buffer(16)
        .concurrency_limit(4)
        .rate_limit(1000, Duration::from_secs(1))
        .service(routed_client(up.addr, vec![("dead", dead)]));
    let app = axum::Router::new().route_service(URL_PATH, stack);
    let addr = serve_axum(app).await;
    let url = format!("http://{addr}{URL_PATH}");
    let send = |body: String| {
        let url = url.clone();
        async move {
            client()
                .request(chat(&url, &body).map(RouterBody::new))
                .await
                .unwrap()
        }
    };
    let res = send(body("slow", &["b"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "slow=downtime, b=ok");
    let res = send(body("b", &["dead"])).await;
    assert_eq!(attempts_header(&res), "b=ok");
    let res = send(body("dead", &[])).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let text = body_bytes(res.into_body()).await;
    assert!(text.starts_with(b"upstream: "), "{text:?}");
    let res = send(body("slow", &[])).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert!(text.contains("timed out"), "{text}");
    // Each request a limit let through reached the upstream once per attempt.
    assert_eq!(up.models_received(), ["slow", "b", "b", "slow"]);
}

/// A timeout in front of the layer drops its future while an attempt is in flight: the
/// upstream sees the connection closed, and health records nothing for an attempt that never
/// ended (neither a failure nor a success).
#[tokio::test]
async fn an_outer_timeout_cancels_the_attempt_and_records_nothing() {
    let up = Upstream::start().await;
    up.set("hang", Behavior::Delay(Duration::from_secs(30)));
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(1));
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    let error = svc
        .oneshot(chat(&up.url(URL_PATH), &body("hang", &["b"])))
        .await
        .unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(wait_for_drops(&up, 1).await, 1, "the attempt was cancelled");
    assert_eq!(up.models_received(), ["hang"]);
    assert!(!health.is_cooling_down("hang"));
}

/// Cooldowns run on tokio's clock: with paused time, a `Retry-After` ends exactly when the
/// clock passes it, and the model is first again.
#[tokio::test(start_paused = true)]
async fn a_cooldown_follows_tokios_paused_clock() {
    let limited = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = limited.clone();
    let upstream = tower::service_fn(move |req: Request<RouterBody>| {
        let limited = flag.load(Ordering::SeqCst);
        async move {
            let model = req
                .extensions()
                .get::<tower_llm_router::fallback::RoutedModel>()
                .map(|m| m.0.to_string())
                .unwrap_or_default();
            let status = if model == "a" && limited { 429 } else { 200 };
            Ok::<_, BoxError>(json_response(
                status,
                &[("retry-after", "30")],
                completion(&model),
            ))
        }
    });
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(upstream);
    let send = || {
        let svc = svc.clone();
        async move {
            let res = svc
                .oneshot(chat("http://up/v1/chat/completions", &body("a", &["b"])))
                .await
                .unwrap();
            attempts_header(&res)
        }
    };
    assert_eq!(send().await, "a=rate_limited, b=ok");
    limited.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(29_900)).await;
    assert_eq!(send().await, "b=ok", "cooling for the Retry-After");
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(send().await, "a=ok");
}

/// The response future of the inner services below, their errors boxed.
type BoxedCall<R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, BoxError>> + Send>>;

/// `inner`'s call, its error boxed.
fn boxed_call<S>(inner: &mut S, req: Request<RouterBody>) -> BoxedCall<S::Response>
where
    S: tower::Service<Request<RouterBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let future = inner.call(req);
    Box::pin(async move { future.await.map_err(Into::into) })
}

/// An inner service that can take one request: its readiness fails after its first call (a
/// pool of one connection that closed, a buffer whose worker died), for it and every clone.
#[derive(Clone)]
struct OneShotPool<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S> tower::Service<Request<RouterBody>> for OneShotPool<S>
where
    S: tower::Service<Request<RouterBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxedCall<S::Response>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.calls.load(Ordering::SeqCst) > 0 {
            return std::task::Poll::Ready(Err("the pool is closed".into()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<RouterBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        boxed_call(&mut self.inner, req)
    }
}

/// A later attempt whose inner service fails to become ready was never sent: its model is
/// not recorded as tried, nor charged in health (with a threshold of one failure, it would
/// cool down), and the request ends with the readiness error, as it does when the layer's own
/// `poll_ready` fails. Before, the unsent model was recorded as `downtime` and charged.
#[tokio::test]
async fn a_readiness_error_is_not_charged_to_a_model_that_was_never_sent() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    up.set("d", Behavior::Status(503, vec![], "down"));
    let pool = || OneShotPool {
        inner: routed_client(up.addr, vec![]),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(1));
    let layer = FallbackLayer::new().health(health.clone());
    let error = ServiceBuilder::new()
        .layer(layer.clone())
        .service(pool())
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "the pool is closed");
    assert!(health.is_cooling_down("a"), "`a` answered 503");
    assert!(!health.is_cooling_down("b"), "`b` was never asked");
    // Answered by the layer: the records name the models that were asked, and only them.
    let res = ServiceBuilder::new()
        .layer(layer.answer_transport_errors(true))
        .service(pool())
        .oneshot(chat(&up.url(URL_PATH), &body("d", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts_header(&res), "d=downtime");
    assert_eq!(model_header(&res), "d");
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert!(is_openai_error(&answer), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "the inner service failed before the model `b` could be asked: the pool is closed"
    );
    assert_eq!(up.models_received(), ["a", "d"]);
    assert!(!health.is_cooling_down("b"));
}

/// A `LoadShed` below the layer refuses an attempt when the service under it is at its limit:
/// the attempt was never sent, so no model failed. The request ends with the shed's
/// `Overloaded` at once (trying the next model only meets the same limit), and health is not
/// charged. Before, every model of the chain was tried, recorded as `downtime` and charged: a
/// burst of sheds cooled healthy models down and sent the next requests to their fallbacks.
#[tokio::test]
async fn a_load_shed_below_the_layer_is_not_a_model_failure() {
    let up = Upstream::start().await;
    up.set("hang", Behavior::Delay(Duration::from_secs(30)));
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(1));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .load_shed()
        .concurrency_limit(1)
        .service(routed_client(up.addr, vec![]));
    let url = up.url(URL_PATH);
    let busy = tokio::spawn(svc.clone().oneshot(chat(&url, &body("hang", &[]))));
    while up.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = svc
        .clone()
        .oneshot(chat(&url, &body("a", &["b"])))
        .await
        .unwrap_err();
    assert!(error.is::<tower::load_shed::error::Overloaded>(), "{error}");
    assert!(!health.is_cooling_down("a") && !health.is_cooling_down("b"));
    // Answered by the layer: no model was asked, and the records say so.
    let res = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .health(health.clone())
                .answer_transport_errors(true),
        )
        // The same shed and limit (clones share its permits).
        .service(svc.get_ref().clone())
        .oneshot(chat(&url, &body("a", &["b"])))
        .await
        .unwrap();
    // The stack's own overload: a 503 a client may retry, not a 502 blaming an upstream.
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(answer["error"]["code"], "overloaded");
    assert_eq!(
        answer["error"]["message"],
        "the inner service failed before the model `a` could be asked: service overloaded"
    );
    assert!(!health.is_cooling_down("a") && !health.is_cooling_down("b"));
    // A request with no model to route is passed through: the shed's error is the inner
    // service's own, not answered by the layer (it names no model it could not ask).
    let unrouted = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let error = ServiceBuilder::new()
        .layer(FallbackLayer::new().answer_transport_errors(true))
        .service(svc.get_ref().clone())
        .oneshot(chat(&url, &unrouted))
        .await
        .unwrap_err();
    assert!(error.is::<tower::load_shed::error::Overloaded>(), "{error}");
    assert_eq!(up.models_received(), ["hang"]);
    busy.abort();
}

/// A readiness that fails with a timeout when the service under it is not ready in time (a
/// connection pool's wait timeout): a tower `Elapsed`.
struct ReadyWithin<S> {
    inner: S,
    within: Duration,
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// A clone waits for its own readiness.
impl<S: Clone> Clone for ReadyWithin<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            within: self.within,
            waiting: None,
        }
    }
}

impl<S> tower::Service<Request<RouterBody>> for ReadyWithin<S>
where
    S: tower::Service<Request<RouterBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxedCall<S::Response>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if let std::task::Poll::Ready(ready) = self.inner.poll_ready(cx) {
            self.waiting = None;
            return std::task::Poll::Ready(ready.map_err(Into::into));
        }
        let within = self.within;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
        if std::future::Future::poll(waiting.as_mut(), cx).is_pending() {
            return std::task::Poll::Pending;
        }
        self.waiting = None;
        std::task::Poll::Ready(Err(tower::timeout::error::Elapsed::new().into()))
    }

    fn call(&mut self, req: Request<RouterBody>) -> Self::Future {
        boxed_call(&mut self.inner, req)
    }
}

/// With `answer_transport_errors`, a later attempt whose inner service times out becoming
/// ready (a pool whose only connection another request took meanwhile) is answered as the
/// other timeouts below the layer are, a 504 `upstream_timeout`, not the 502
/// `upstream_unreachable` of a pool that is closed; the unsent model is still neither
/// recorded nor charged. Over real sockets: a hyper server app, a hyper client, an upstream
/// that answers the first model 503 once the limit's permit is wanted elsewhere.
#[tokio::test]
async fn a_readiness_timeout_on_a_later_attempt_is_answered_as_a_timeout() {
    let arrived = Arc::new(Notify::new());
    let answer = Arc::new(Notify::new());
    let (arrived_up, answer_up) = (arrived.clone(), answer.clone());
    let first = raw_upstream(move |mut stream| {
        let (arrived, answer) = (arrived_up.clone(), answer_up.clone());
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            arrived.notify_one();
            answer.notified().await;
            let body = r#"{"error":{"message":"down","type":"server_error","code":"503"}}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
        }
    })
    .await;
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(1));
    let one_connection = Arc::new(tokio::sync::Semaphore::new(1));
    let app = serve(
        ServiceBuilder::new()
            .layer(
                FallbackLayer::new()
                    .health(health.clone())
                    .answer_transport_errors(true),
            )
            .service(ReadyWithin {
                inner: tower::limit::ConcurrencyLimit::with_semaphore(
                    routed_client(up.addr, vec![("a", first)]),
                    one_connection.clone(),
                ),
                within: Duration::from_millis(200),
                waiting: None,
            }),
        None,
    )
    .await;
    let request = Request::post(format!("http://{app}{URL_PATH}"))
        .header("content-type", "application/json")
        .body(RouterBody::from(bytes::Bytes::from(body("a", &["b"]))))
        .unwrap();
    let sent = tokio::spawn(client().request(request));
    arrived.notified().await;
    // Another user of the pool queues for the connection `a`'s attempt holds (the semaphore
    // is fair: it gets it next), then `a` answers.
    let taken = tokio::spawn(one_connection.clone().acquire_owned());
    tokio::time::sleep(Duration::from_millis(50)).await;
    answer.notify_one();
    let res = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(attempts_header(&res), "a=downtime");
    assert_eq!(model_header(&res), "a");
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert!(is_openai_error(&answer), "{answer}");
    assert_eq!(answer["error"]["type"], "server_error");
    assert_eq!(answer["error"]["code"], "upstream_timeout");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the inner service timed out before the model `b` could be asked"),
        "{message}"
    );
    assert!(up.models_received().is_empty(), "`b` was never sent");
    assert!(!health.is_cooling_down("b"));
    drop(taken);
}
