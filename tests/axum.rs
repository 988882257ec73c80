//! axum integration as the crate docs describe it: `AutoRouteLayer` through `Router::layer`,
//! a handler handing the request (and the chain) on to a `FallbackLayer` stack, over real
//! loopback sockets against the scripted upstream.

mod support;

use axum::extract::Request as AxumRequest;
use axum::response::IntoResponse;
use http::{Request, StatusCode};
use serde_json::json;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
use tower_llm_router::fallback::FallbackModels;
use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};

#[tokio::test]
async fn auto_route_through_router_layer_hands_the_chain_to_a_handler() {
    let up = Upstream::start().await;
    up.set(
        "small",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let base = up.url("");
    let client = client();
    let fallback = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(tower::service_fn(move |mut req: Request<RouterBody>| {
            // axum hands a relative URI on: send it to the upstream.
            *req.uri_mut() = format!("{base}{}", req.uri().path()).parse().unwrap();
            client.request(req)
        }));
    let handler = move |req: AxumRequest| {
        let fallback = fallback.clone();
        async move {
            let chosen = req
                .extensions()
                .get::<RouteDecision>()
                .map(|d| d.chosen.clone());
            let chain = req.extensions().get::<FallbackModels>().cloned();
            assert_eq!(chosen.as_deref(), Some("small"));
            assert_eq!(chain, Some(FallbackModels(vec!["large".into()])));
            match fallback.oneshot(req).await {
                Ok(res) => res.into_response(),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let catalog = Catalog::from_profiles([
        ModelProfile::new("small", 16_000, 0.15, 0.6),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ]);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(handler))
        .layer(AutoRouteLayer::new(catalog));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let body = json!({"model":"auto","messages":[{"role":"user","content":"hi"}]});
    let res = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(chat(
            &format!("http://{addr}/v1/chat/completions"),
            &body.to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "small=downtime, large=ok");
    assert_eq!(up.models_received(), ["small", "large"]);
}
