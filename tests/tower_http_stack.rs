//! FallbackLayer over tower-http's `ResponseBodyTimeoutLayer` over a hyper-util client, against
//! a real loopback upstream: the answer body below the layer is tower-http's `TimeoutBody`,
//! which is not `Unpin` (it holds a `tokio::time::Sleep`). The README says the layers stack
//! with tower-http's; this stack must compile and a stalled body must end as the docs say.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::ResponseBodyTimeoutLayer;
use tower_llm_router::FallbackLayer;

/// The stack: the fallback layer, tower-http's body timeout below it, the client below that.
fn stack(
    up: &Upstream,
    timeout: Duration,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<
        impl http_body::Body<Data = bytes::Bytes, Error = tower_llm_router::BoxError>,
    >,
    Error = hyper_util::client::legacy::Error,
> + Clone {
    ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .layer(ResponseBodyTimeoutLayer::new(timeout))
        .service(routed_client(up.addr, vec![]))
}

/// `body` sent through [`stack`] with this body timeout.
async fn send(
    up: &Upstream,
    timeout: Duration,
    body: &str,
) -> http::Response<impl http_body::Body<Data = bytes::Bytes, Error = tower_llm_router::BoxError>> {
    stack(up, timeout)
        .oneshot(chat(&up.url("/v1/chat/completions"), body))
        .await
        .unwrap()
}

/// A JSON answer and a stream pass through the stack as they would without the timeout.
#[tokio::test]
async fn the_layer_stacks_over_tower_http_body_timeout() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    up.set("s", Behavior::Stream(vec!["tok0 ", "tok1 "]));
    let svc = stack(&up, Duration::from_secs(10));
    let url = up.url("/v1/chat/completions");

    let res = svc
        .clone()
        .oneshot(chat(&url, r#"{"model":"a","models":["b"],"messages":[]}"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, completion("b"));

    let res = svc
        .oneshot(chat(&url, r#"{"model":"s","stream":true,"messages":[]}"#))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "s=ok");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("tok0 ") && text.contains("tok1 "), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

/// A stream whose body stalls after its first event: tower-http's timeout fails the body, and
/// the caller gets the final SSE error event in OpenRouter's shape after the event it had.
#[tokio::test]
async fn a_stream_stalled_after_its_first_event_ends_with_the_error_event() {
    let up = Upstream::start().await;
    up.set("p", Behavior::StreamPause(Duration::from_secs(30)));
    let body = r#"{"model":"p","models":["b"],"stream":true,"messages":[]}"#;
    let res = send(&up, Duration::from_millis(200), body).await;
    assert_eq!(attempts_header(&res), "p=ok");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains(r#""content":"hi""#), "{text}");
    let last: serde_json::Value =
        serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["model"], "p");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("designated timeout"),
        "{last}"
    );
}

/// A stream that stalls before its first event: the body timeout is a broken stream before the
/// first byte reached the caller, so the next model answers.
#[tokio::test]
async fn a_stream_stalled_before_its_first_event_falls_back() {
    let up = Upstream::start().await;
    up.set("d", Behavior::StreamDelay(Duration::from_secs(30)));
    let body = r#"{"model":"d","models":["b"],"stream":true,"messages":[]}"#;
    let res = send(&up, Duration::from_millis(200), body).await;
    assert_eq!(attempts_header(&res), "d=downtime, b=ok");
    assert_eq!(model_header(&res), "b");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, completion("b"));
}

/// tower-http's `TimeoutLayer` around the fallback layer: it answers a request whose time is up
/// with an empty body of the service's own type, which must be `Default` (it was not, and the
/// stack did not compile, with an error that never named `Default`).
#[tokio::test]
async fn tower_http_timeout_layer_wraps_the_layer() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(10)));
    let svc = ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ))
        .layer(FallbackLayer::new())
        .service(routed_client(up.addr, vec![]));
    let req = chat(
        &up.url("/v1/chat/completions"),
        r#"{"model":"slow","messages":[]}"#,
    );
    let res = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(req))
        .await
        .expect("the timeout answers")
        .unwrap();
    assert_eq!(res.status(), 408);
    assert!(res
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
}
