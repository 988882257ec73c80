//! Shared health and streams that break after their first byte: a provider that always cuts
//! its streams midway must cool down like one that fails before, and a stream that ends well is
//! a success. The routing stack is served by hyper on 127.0.0.1 (as a gateway would), in front
//! of a scripted upstream on another socket; the client is hyper-util's.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tower::ServiceBuilder;
use tower_llm_router::health::{Health, InMemoryHealth};
use tower_llm_router::FallbackLayer;

/// A first event with content (the caller has it: no fallback after it), then the start of a
/// second one, and the end of the connection.
const CUT_IN_AN_EVENT: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[{\"ind";

/// A first event with content, then the clean end of the body: no `[DONE]`, no finish reason.
const CUT_AFTER_AN_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";

/// The routing stack with `health`, over a hyper-util client to `up`, served on 127.0.0.1.
async fn gateway(up: &Upstream, health: Arc<InMemoryHealth>) -> std::net::SocketAddr {
    let stack = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health))
        .service(routed_client(up.addr, vec![]));
    serve(stack, None).await
}

/// A streaming request for `flaky` then `good` through the gateway: the attempts header and
/// the whole body the client read.
async fn stream(gateway: std::net::SocketAddr) -> (String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = r#"{"model":"flaky","models":["good"],"stream":true,"messages":[]}"#;
    let res = client
        .request(chat(&format!("http://{gateway}/v1/chat/completions"), body))
        .await
        .unwrap();
    let attempts = attempts_header(&res);
    let body = body_bytes(res.into_body()).await;
    (attempts, String::from_utf8(body.to_vec()).unwrap())
}

/// A model whose streams break after their first event (a read error, or an end within an
/// event, or a clean end without the stream's last event) cools down after
/// `downtime_threshold` such streams in a row, and is then tried last.
#[tokio::test]
async fn a_model_whose_streams_break_midway_cools_down() {
    for breaking in [
        Behavior::StreamBreak(2),
        Behavior::StreamRaw(CUT_IN_AN_EVENT),
        Behavior::StreamRaw(CUT_AFTER_AN_EVENT),
    ] {
        let up = Upstream::start().await;
        up.set("flaky", breaking.clone())
            .set("good", Behavior::Stream(vec!["tok0 "]));
        let health = Arc::new(InMemoryHealth::new().downtime_threshold(3));
        let gateway = gateway(&up, health.clone()).await;
        for i in 0..3 {
            assert!(!health.is_cooling_down("flaky"), "{breaking:?} after {i}");
            let (attempts, text) = stream(gateway).await;
            assert_eq!(attempts, "flaky=ok", "{breaking:?}");
            assert!(text.contains(r#""finish_reason":"error""#), "{text}");
        }
        assert!(health.is_cooling_down("flaky"), "{breaking:?}");
        let (attempts, text) = stream(gateway).await;
        assert_eq!(attempts, "good=ok", "{breaking:?}: tried last");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}

/// A stream that ends well is a success: it resets the count of broken streams, so breaks
/// around it are not in a row.
#[tokio::test]
async fn a_stream_that_ends_well_resets_the_count() {
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new().downtime_threshold(3));
    let gateway = gateway(&up, health.clone()).await;
    for behavior in [
        Behavior::StreamBreak(1),
        Behavior::StreamBreak(1),
        Behavior::Stream(vec!["tok0 ", "tok1 "]),
        Behavior::StreamBreak(1),
        Behavior::StreamBreak(1),
    ] {
        up.set("flaky", behavior);
        let (attempts, _) = stream(gateway).await;
        assert_eq!(attempts, "flaky=ok");
    }
    assert!(!health.is_cooling_down("flaky"));
    up.set("flaky", Behavior::StreamBreak(1));
    stream(gateway).await;
    assert!(health.is_cooling_down("flaky"), "three breaks in a row");
}
