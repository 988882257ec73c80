//! axum integration as the crate docs describe it: `AutoRouteLayer` through `Router::layer`,
//! a handler handing the request (and the chain) on to a `FallbackLayer` stack, over real
//! loopback sockets against the scripted upstream.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request as AxumRequest;
use axum::response::IntoResponse;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
use tower_llm_router::fallback::FallbackModels;
use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};

/// What the handler found in a request's extensions: the decision and the chain handed over.
type Seen = Arc<Mutex<Vec<(Option<RouteDecision>, Option<FallbackModels>)>>>;

/// An axum app on 127.0.0.1: `AutoRouteLayer` around the router (small and large), and a
/// handler that records the request's extensions and hands it on to a `FallbackLayer` stack
/// sending to `up`.
async fn app(up: &Upstream) -> (SocketAddr, Seen) {
    let base = up.url("");
    let client = client();
    let fallback = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(tower::service_fn(move |mut req: Request<RouterBody>| {
            // axum hands a relative URI on: send it to the upstream.
            *req.uri_mut() = format!("{base}{}", req.uri().path()).parse().unwrap();
            client.request(req)
        }));
    let seen = Seen::default();
    let seen_in = seen.clone();
    let handler = move |req: AxumRequest| {
        let fallback = fallback.clone();
        let seen = seen_in.clone();
        async move {
            let decision = req.extensions().get::<RouteDecision>().cloned();
            let chain = req.extensions().get::<FallbackModels>().cloned();
            seen.lock().unwrap().push((decision, chain));
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
    (addr, seen)
}

async fn post(addr: SocketAddr, body: &Value) -> Response<hyper::body::Incoming> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(chat(
            &format!("http://{addr}/v1/chat/completions"),
            &body.to_string(),
        ))
        .await
        .unwrap()
}

#[tokio::test]
async fn auto_route_through_router_layer_hands_the_chain_to_a_handler() {
    let up = Upstream::start().await;
    up.set(
        "small",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let (addr, seen) = app(&up).await;
    let body = json!({"model":"auto","messages":[{"role":"user","content":"hi"}]});
    let res = post(addr, &body).await;
    assert_eq!(res.status(), 200);
    let (decision, chain) = seen.lock().unwrap().pop().unwrap();
    assert_eq!(decision.map(|d| d.chosen).as_deref(), Some("small"));
    assert_eq!(chain, Some(FallbackModels(vec!["large".into()])));
    assert_eq!(attempts_header(&res), "small=downtime, large=ok");
    assert_eq!(up.models_received(), ["small", "large"]);
}

/// "Try these, then let the router pick": a concrete `model` with the auto sentinel in
/// `models`. The client's models stay in the body (`models` without the sentinel, which the
/// fallback layer removes before the upstream); the sentinel's place in the chain is taken
/// by the router's ranking, handed to the fallback layer, so the upstream never sees `auto`:
/// after the client's model fails, the ranking's first answers.
#[tokio::test]
async fn a_sentinel_in_models_is_replaced_by_the_ranking() {
    let up = Upstream::start().await;
    up.set(
        "gpt-4o",
        Behavior::Status(503, vec![], r#"{"error":{"message":"overloaded"}}"#),
    );
    let (addr, seen) = app(&up).await;
    let body = json!({"model": "gpt-4o", "models": ["auto", "claude-3-5-sonnet"],
        "messages": [{"role": "user", "content": "hi"}]});
    let res = post(addr, &body).await;
    assert_eq!(res.status(), 200);

    let (decision, chain) = seen.lock().unwrap().pop().unwrap();
    let decision = decision.expect("the decision is a request extension");
    assert_eq!(&*decision.requested, "gpt-4o");
    let first = decision.ranking[0].to_string();
    assert_eq!(&*decision.chosen, first);
    // The ranking in the sentinel's place (the catalog has two models), then the client's own.
    let chain = chain.expect("the chain is handed over").0;
    let chain: Vec<&str> = chain.iter().map(|m| &**m).collect();
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0], first);
    assert_eq!(chain[2], "claude-3-5-sonnet");

    let sent = up.models_received();
    assert!(!sent.iter().any(|m| m == "auto"), "{sent:?}");
    assert_eq!(sent, ["gpt-4o", first.as_str()]);
    for request in up.received() {
        let json: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(json.get("models").is_none(), "{json}");
    }
    assert_eq!(model_header(&res), first);
    assert_eq!(
        attempts_header(&res),
        format!("gpt-4o=downtime, {first}=ok")
    );
    let answer: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(answer["model"], first.as_str());
}

/// The README's axum setup, with an HTTP/2 client: axum serves h2c and hands the request on as
/// HTTP/2, which a hyper-util HTTP/1 client refuses (`UserUnsupportedVersion`, on every model
/// of the chain: a 502). The README's `map_request` sets the upstream's HTTP version beside its
/// URI; with it, fallback and streaming work for HTTP/2 clients as for HTTP/1 ones.
#[tokio::test]
async fn an_http2_client_is_served_through_the_readmes_map_request() {
    use axum::error_handling::HandleErrorLayer;
    use tower_llm_router::ApiError;

    let up = Upstream::start().await;
    up.set(
        "gpt-4o",
        Behavior::Status(429, vec![], r#"{"error":{"message":"rate limited"}}"#),
    );
    up.set(
        "claude-sonnet",
        Behavior::Stream(vec![
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"b"}}]}"#,
        ]),
    );
    let base = up.url("");
    let upstream_uri = move |uri: &http::Uri| -> http::Uri {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{base}{path}")
            .parse()
            .unwrap_or_else(|_| uri.clone())
    };
    let chat_stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            |err: hyper_util::client::legacy::Error| async move {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "upstream_error",
                    err.to_string(),
                )
                .to_response::<axum::body::Body>()
            },
        ))
        .layer(FallbackLayer::new())
        .map_request(move |mut r: Request<RouterBody>| {
            *r.uri_mut() = upstream_uri(r.uri());
            *r.version_mut() = http::Version::HTTP_11;
            r
        })
        .service(client());
    let app = axum::Router::new().route_service("/v1/chat/completions", chat_stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body = json!({"model": "gpt-4o", "models": ["claude-sonnet"], "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = h2
        .request(chat(
            &format!("http://{addr}/v1/chat/completions"),
            &body.to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert_eq!(
        attempts_header(&res),
        "gpt-4o=rate_limited, claude-sonnet=ok"
    );
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert!(text.contains(r#""content":"a""#), "{text}");
    assert!(text.contains(r#""content":"b""#), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(up.models_received(), ["gpt-4o", "claude-sonnet"]);
}
