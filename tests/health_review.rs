//! Shared health and tower semantics, end to end: cooldowns under concurrent attempts, the
//! layers in common stacks (axum's `Router::layer` and `HandleErrorLayer`, `ServiceBuilder`
//! with timeout, buffer and limits over a hyper-util client), over real loopback sockets.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::*;
use tokio::sync::Notify;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::health::{Health, InMemoryHealth};
use tower_llm_router::FallbackLayer;

const URL_PATH: &str = "/v1/chat/completions";

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// An upstream for one model on 127.0.0.1: its first request waits until `release` is
/// notified and then answers 200; every later one answers 429 with `Retry-After: 60` at once.
/// `arrived` is notified when the first request is in.
async fn slow_then_rate_limited(
    arrived: Arc<Notify>,
    release: Arc<Notify>,
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
                        Ok(json_response(
                            429,
                            &[("retry-after", "60")],
                            r#"{"error":{"message":"Rate limit reached","code":429}}"#.into(),
                        ))
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
    let a = slow_then_rate_limited(arrived.clone(), release.clone()).await;
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
