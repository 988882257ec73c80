//! The service a user builds from the README and the API docs alone (written as a walkthrough):
//! an axum service whose auto router reads a `SharedCatalog` that a refresh task
//! replaces from OpenRouter's model list (served over HTTP, fetched with reqwest), with
//! `FallbackLayer::retries` on, calling the scripted upstream through a reqwest-middleware
//! client, and clients sending OpenRouter's `provider.max_price`; then the reqwest-middleware
//! form (`FallbackMiddleware`) with the same options.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, RouteDecision, SessionAffinity, SharedCatalog};
use tower_llm_router::fallback::{Attempts, Retries, ServedModel};
use tower_llm_router::reqwest::{FallbackMiddleware, ReqwestMiddlewareService};
use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};

/// OpenRouter's `GET /api/v1/models` for these `(id, prompt, completion)`, prices in USD per
/// million tokens (the list itself gives them per token, as strings).
fn openrouter_list(models: &[(&str, f64, f64)]) -> String {
    let data: Vec<Value> = models
        .iter()
        .map(|&(id, prompt, completion)| {
            json!({"id": id, "context_length": 128_000, "pricing": {
                "prompt": format!("{:.12}", prompt / 1e6),
                "completion": format!("{:.12}", completion / 1e6),
            }})
        })
        .collect();
    json!({ "data": data }).to_string()
}

/// A catalog read from [`openrouter_list`], as the refresh job reads it.
fn listed(models: &[(&str, f64, f64)]) -> Catalog {
    Catalog::from_openrouter_models_json(openrouter_list(models).as_bytes()).unwrap()
}

/// A stand-in for `https://openrouter.ai/api/v1/models`: serves whatever list is set.
async fn models_endpoint(list: Arc<Mutex<String>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/api/v1/models",
        axum::routing::get(move || {
            let list = list.clone();
            async move { list.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The refresh job: fetches the list every `every` and hands it to the running layers.
fn spawn_refresh(catalog: SharedCatalog, list_at: SocketAddr, every: Duration) {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let url = format!("http://{list_at}/api/v1/models");
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Ok(response) = http.get(&url).send().await else {
                continue;
            };
            let Ok(json) = response.bytes().await else {
                continue;
            };
            if let Ok(fresh) = Catalog::from_openrouter_models_json(&json) {
                catalog.replace(fresh);
            }
        }
    });
}

/// Waits until the refresh job has applied a list holding `id`.
async fn wait_for_model(catalog: &SharedCatalog, id: &str) {
    for _ in 0..500 {
        if catalog.current().get(id).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refresh job never applied a list with {id}");
}

/// The axum service: one handler that hands the request to `fallback` (with `auto` routing
/// inside it) over a reqwest-middleware client sending to the scripted upstream.
async fn serve_app(up: &Upstream, fallback: FallbackLayer) -> SocketAddr {
    let base = up.url("");
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
    let upstream = ServiceBuilder::new()
        .layer(fallback)
        .map_request(move |mut request: Request<RouterBody>| {
            // axum hands on a relative URI: send it to the provider's base URL.
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = format!("{base}{path}").parse() {
                *request.uri_mut() = uri;
            }
            *request.version_mut() = http::Version::HTTP_11;
            request
        })
        .service(ReqwestMiddlewareService::new(client));
    let handler = move |request: axum::extract::Request| {
        let upstream = upstream.clone();
        async move {
            match upstream.oneshot(request).await {
                Ok(response) => response.into_response(),
                Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A client of the service: status, headers and body text.
async fn ask(addr: SocketAddr, body: &Value) -> (u16, http::HeaderMap, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn auto_within(max_price: Value, stream: bool) -> Value {
    json!({"model": "auto", "stream": stream, "provider": {"max_price": max_price},
        "messages": [{"role": "user", "content": "hi"}]})
}

fn down_once_then(then: Behavior) -> Behavior {
    Behavior::FirstThen(
        1,
        Box::new(Behavior::Status(
            502,
            vec![],
            r#"{"error":{"message":"bad gateway"}}"#,
        )),
        Box::new(then),
    )
}

const FAST_RETRY: Retries = Retries::new(1).backoff(Duration::from_millis(5));

/// The whole walk over the axum service: the first list's cheapest model within the client's
/// ceiling answers after one retry of a load balancer's 502, streamed and not; the refresh
/// job then applies a list in which that model costs more than the ceiling and another fits;
/// a ceiling nothing meets is a 400 that says so.
#[tokio::test]
async fn a_refreshed_catalog_retries_and_max_price_in_an_axum_service() {
    let up = Upstream::start().await;
    let list = Arc::new(Mutex::new(openrouter_list(&[
        ("acme/cheap", 0.5, 1.0),
        ("acme/dear", 10.0, 30.0),
    ])));
    let list_at = models_endpoint(list.clone()).await;
    let first = Catalog::from_openrouter_models_json(list.lock().unwrap().as_bytes()).unwrap();
    let catalog = SharedCatalog::new(first);
    spawn_refresh(catalog.clone(), list_at, Duration::from_millis(20));
    let fallback = FallbackLayer::new()
        .retries(FAST_RETRY)
        .auto_route(AutoRouteLayer::with_shared_catalog(catalog.clone()));
    let addr = serve_app(&up, fallback).await;

    up.set("acme/cheap", down_once_then(Behavior::Ok));
    let ceiling = json!({"prompt": 1, "completion": "2"});
    let (status, headers, _) = ask(addr, &auto_within(ceiling.clone(), false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-llm-router-attempts"),
        "acme/cheap=downtime, acme/cheap=ok"
    );

    // The upstream counts a model's requests from its start: two so far.
    up.set(
        "acme/cheap",
        Behavior::FirstThen(
            2,
            Box::new(Behavior::Ok),
            Box::new(Behavior::FirstThen(
                3,
                Box::new(Behavior::Status(
                    502,
                    vec![],
                    r#"{"error":{"message":"bad gateway"}}"#,
                )),
                Box::new(Behavior::Stream(vec![
                    r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
                ])),
            )),
        ),
    );
    let (status, headers, text) = ask(addr, &auto_within(ceiling.clone(), true)).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-llm-router-attempts"),
        "acme/cheap=downtime, acme/cheap=ok"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // `provider` reaches the upstream as sent; the dear model was never a fallback.
    let received = up.received();
    let last: Value = serde_json::from_slice(&received.last().unwrap().body).unwrap();
    assert_eq!(last["provider"]["max_price"], ceiling);
    assert!(!up.models_received().iter().any(|m| m == "acme/dear"));

    *list.lock().unwrap() = openrouter_list(&[
        ("acme/cheap", 3.0, 6.0),
        ("acme/dear", 10.0, 30.0),
        ("acme/budget", 0.8, 1.5),
    ]);
    wait_for_model(&catalog, "acme/budget").await;
    let (status, headers, _) = ask(addr, &auto_within(ceiling.clone(), false)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-router-attempts"), "acme/budget=ok");

    let (status, _, text) = ask(addr, &auto_within(json!({"prompt": 0.1}), false)).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert!(is_openai_error(&error), "{text}");
    assert_eq!(error["error"]["code"], "no_model_fits");
    assert_eq!(error["error"]["param"], "provider.max_price");
}

/// `cost_tier` with `provider.max_price`: the bands are taken over the candidates within the
/// ceiling, so `max` asks for the dearest model the client agreed to pay for, not for one the
/// ceiling excludes (which would leave the band empty).
#[tokio::test]
async fn cost_tier_bands_are_taken_within_max_price() {
    let up = Upstream::start().await;
    let catalog = SharedCatalog::new(listed(&[
        ("p/one", 1.0, 1.0),
        ("p/two", 2.0, 2.0),
        ("p/three", 3.0, 3.0),
        ("p/four", 4.0, 4.0),
        ("p/five", 5.0, 5.0),
    ]));
    let fallback = FallbackLayer::new().auto_route(AutoRouteLayer::with_shared_catalog(catalog));
    let addr = serve_app(&up, fallback).await;
    let body = json!({"model": "auto", "provider": {"max_price": {"prompt": 3, "completion": 3}},
        "plugins": [{"id": "auto-router", "cost_tier": "max"}],
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, _) = ask(addr, &body).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-router-model"), "p/three");
}

/// Session affinity with a shared catalog and a ceiling: a conversation pinned to a model
/// that the refreshed list prices over the client's ceiling moves to one within it.
#[tokio::test]
async fn a_pin_repriced_over_the_ceiling_is_passed_over() {
    let up = Upstream::start().await;
    let catalog = SharedCatalog::new(listed(&[("acme/cheap", 0.5, 1.0), ("acme/mid", 0.9, 1.8)]));
    let auto = AutoRouteLayer::with_shared_catalog(catalog.clone())
        .session_affinity(SessionAffinity::new());
    let fallback = FallbackLayer::new().retries(FAST_RETRY).auto_route(auto);
    let addr = serve_app(&up, fallback).await;
    let turn = |n: usize| {
        let mut messages = vec![json!({"role": "user", "content": "hi"})];
        for _ in 1..n {
            messages.push(json!({"role": "assistant", "content": "hello"}));
            messages.push(json!({"role": "user", "content": "and?"}));
        }
        json!({"model": "auto", "session_id": "conv-1",
            "provider": {"max_price": {"prompt": 1, "completion": 2}}, "messages": messages})
    };
    let (status, headers, _) = ask(addr, &turn(1)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-router-model"), "acme/cheap");

    catalog.replace(listed(&[("acme/cheap", 5.0, 10.0), ("acme/mid", 0.9, 1.8)]));
    let (status, headers, _) = ask(addr, &turn(2)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-llm-router-model"), "acme/mid");
}

/// The reqwest-middleware form: `FallbackMiddleware` takes `retries` and `auto_route` (a
/// `SharedCatalog` included) as the layer does; the response's extensions say what happened.
#[tokio::test]
async fn the_reqwest_middleware_form_with_the_same_options() {
    let up = Upstream::start().await;
    let catalog = SharedCatalog::new(listed(&[
        ("acme/cheap", 0.5, 1.0),
        ("acme/dear", 10.0, 30.0),
    ]));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            FallbackMiddleware::default()
                .retries(FAST_RETRY)
                .auto_route(AutoRouteLayer::with_shared_catalog(catalog.clone())),
        )
        .build();
    up.set("acme/cheap", down_once_then(Behavior::Ok));
    let send = |body: Value| {
        client
            .post(up.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let response = send(auto_within(json!({"prompt": 1, "completion": 2}), false))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!(
        attempts.to_header_value(),
        "acme/cheap=downtime, acme/cheap=ok"
    );
    assert_eq!(
        response.extensions().get::<ServedModel>().map(|m| &*m.0),
        Some("acme/cheap")
    );
    let decision = response.extensions().get::<RouteDecision>().unwrap();
    assert_eq!(&*decision.requested, "auto");
    assert!(
        decision.reason.ends_with("within provider.max_price"),
        "{}",
        decision.reason
    );

    // The refresh replaces the catalog under the built client.
    catalog.replace(listed(&[
        ("acme/budget", 0.8, 1.5),
        ("acme/dear", 10.0, 30.0),
    ]));
    let response = send(auto_within(json!({"prompt": 1, "completion": 2}), false))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llm-router-model"], "acme/budget");
}

/// A concrete `model` with `auto` in `models` is routed, so its `provider.max_price` is read:
/// a malformed one is refused, the ranking in the sentinel's place keeps within it (after the
/// client's model is retried and fails), and a ceiling that leaves nothing drops the sentinel
/// instead of refusing the request.
#[tokio::test]
async fn max_price_with_the_sentinel_in_models() {
    let up = Upstream::start().await;
    let catalog = SharedCatalog::new(listed(&[
        ("acme/cheap", 0.5, 1.0),
        ("acme/dear", 10.0, 30.0),
    ]));
    let fallback = FallbackLayer::new()
        .retries(FAST_RETRY)
        .auto_route(AutoRouteLayer::with_shared_catalog(catalog));
    let addr = serve_app(&up, fallback).await;
    up.set(
        "mine",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let with_ceiling = |max_price: Value| {
        json!({"model": "mine", "models": ["auto"], "provider": {"max_price": max_price},
            "messages": [{"role": "user", "content": "hi"}]})
    };

    let (status, _, text) = ask(addr, &with_ceiling(json!({"prompt": -1}))).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "invalid_max_price", "{text}");

    let (status, headers, _) = ask(addr, &with_ceiling(json!({"prompt": 1}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "x-llm-router-attempts"),
        "mine=downtime, mine=downtime, acme/cheap=ok"
    );

    let (status, headers, _) = ask(addr, &with_ceiling(json!({"prompt": 0.1}))).await;
    assert_eq!(status, 503);
    // Three downtime failures in a row cooled `mine` down: no retry this time.
    assert_eq!(header(&headers, "x-llm-router-attempts"), "mine=downtime");
    assert!(!up.models_received().iter().any(|m| m == "acme/dear"));
}

/// reqwest follows redirects by default (a 307 resends the body, and every header but
/// `Authorization` and cookies, to the `Location`). With `redirect::Policy::none()` the 3xx
/// reaches the layer, which classes it `downtime`, does not retry it and moves on.
#[tokio::test]
async fn a_redirect_reaches_the_layer_when_reqwest_does_not_follow_it() {
    let up = Upstream::start().await;
    up.set(
        "moved",
        Behavior::Status(307, vec![("location", "/elsewhere")], ""),
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(FallbackMiddleware::default().retries(FAST_RETRY))
        .build();
    let response = client
        .post(up.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "moved", "models": ["ok"], "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-llm-router-attempts"],
        "moved=downtime, ok=ok"
    );
    let paths: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/chat/completions"]);
}
