//! What the layer's own answer says when no model was asked at all: the only attempt was
//! refused below the layer before it was sent (a `LoadShed` at its limit), and
//! `answer_transport_errors` answers it. `x-llm-router-model` and `ServedModel` name the model
//! that produced the response (README, "What the caller sees"); none did.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, ServedModel};
use tower_llm_router::FallbackLayer;

/// Found while checking the README's headers against a shed first attempt: the 502 said
/// `x-llm-router-model: a` (and `ServedModel("a")`), though `a` was never sent a request.
#[tokio::test]
async fn a_shed_first_attempt_names_no_model() {
    let up = Upstream::start().await;
    up.set("hang", Behavior::Delay(Duration::from_secs(30)));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().answer_transport_errors(true))
        .load_shed()
        .concurrency_limit(1)
        .service(routed_client(up.addr, vec![]));
    let url = up.url("/v1/chat/completions");
    let body = |model: &str, models: &[&str]| {
        json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    let busy = tokio::spawn(svc.clone().oneshot(chat(&url, &body("hang", &[]))));
    while up.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = svc.oneshot(chat(&url, &body("a", &["b"]))).await.unwrap();
    // The stack's own overload, not an unreachable upstream: a 503 a client may retry.
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    assert_eq!(res.headers().get("x-llm-router-model"), None);
    assert!(res.extensions().get::<ServedModel>().is_none());
    let attempts = res.extensions().get::<Attempts>().map(|a| a.tried.len());
    assert_eq!(attempts, Some(0));
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert!(is_openai_error(&answer), "{answer}");
    assert_eq!(answer["error"]["code"], "overloaded", "{answer}");
    assert_eq!(up.models_received(), ["hang"]);
    busy.abort();
}
