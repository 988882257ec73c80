//! What `Attempts` says of the shared health's reordering, end to end over loopback sockets (a
//! hyper-util client under the layer, a scripted upstream): the model the request asked, and
//! the models passed over as cooling down, on the upstream's answers and on the layer's own.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::json;
use support::*;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, Outcome};
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::{ErrorClass, FallbackLayer};

const URL_PATH: &str = "/v1/chat/completions";

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// The `Attempts` of an answer, as `(requested, passed over, header form of the attempts)`.
fn record<B>(res: &Response<B>) -> (String, Vec<String>, String) {
    let attempts = res
        .extensions()
        .get::<Attempts>()
        .expect("the answer of a routed request carries `Attempts`");
    (
        attempts.requested.to_string(),
        attempts.passed_over.iter().map(|m| m.to_string()).collect(),
        attempts.to_header_value(),
    )
}

/// `model` cools down for 30 s, as after a 429 with `Retry-After: 30`.
fn cool_down(health: &InMemoryHealth, model: &str) {
    let limited = Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(30)));
    health.observe(model, limited);
}

/// A model that answered 429 cools down; the next request asking it is sent to the next model
/// first, and its `Attempts` still names the model asked and says it was passed over. A request
/// whose models are all well has nothing passed over (and nothing allocated for it). The
/// headers stay the attempts sent.
#[tokio::test]
async fn attempts_name_the_model_asked_and_the_models_passed_over() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(429, vec![("retry-after", "30")], "{}"),
    );
    let health = Arc::new(InMemoryHealth::new());
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    let send = |body: String| {
        let svc = svc.clone();
        let url = up.url(URL_PATH);
        async move { svc.oneshot(chat(&url, &body)).await.unwrap() }
    };

    let res = send(body("a", &["b", "c"])).await;
    assert_eq!(res.status(), 200);
    let nothing_passed: Vec<String> = Vec::new();
    assert_eq!(
        record(&res),
        (
            "a".into(),
            nothing_passed.clone(),
            "a=rate_limited, b=ok".into()
        ),
        "`a` was well when this request came"
    );
    assert!(health.is_cooling_down("a"));

    let res = send(body("a", &["b", "c"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(record(&res), ("a".into(), vec!["a".into()], "b=ok".into()));
    assert_eq!(attempts_header(&res), "b=ok");
    assert_eq!(model_header(&res), "b");

    // All well: nothing passed over, and no `Vec` allocated for it.
    let res = send(body("b", &["c"])).await;
    assert_eq!(
        record(&res),
        ("b".into(), nothing_passed.clone(), "b=ok".into())
    );
    let attempts = res.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.passed_over.capacity(), 0);

    // Cooling down, but after every well model anyway: not passed over.
    let res = send(body("b", &["a"])).await;
    assert_eq!(record(&res), ("b".into(), nothing_passed, "b=ok".into()));
}

/// The models passed over are in chain order, the model asked first among them, though the
/// first attempt goes to the next well model.
#[tokio::test]
async fn passed_over_models_are_in_chain_order() {
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new());
    cool_down(&health, "b");
    cool_down(&health, "d");
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    up.set("a", Behavior::Status(503, vec![], "down"));
    let res = svc
        .oneshot(chat(&up.url(URL_PATH), &body("b", &["a", "d", "c"])))
        .await
        .unwrap();
    assert_eq!(
        record(&res),
        (
            "b".into(),
            vec!["b".into(), "d".into()],
            "a=downtime, c=ok".into()
        )
    );
}

/// A model passed over is tried after all when every well model failed: it is then both in
/// `passed_over` and among the attempts, and the record still names it as the model asked.
#[tokio::test]
async fn a_model_passed_over_then_tried_is_in_both() {
    let up = Upstream::start().await;
    up.set("b", Behavior::Status(503, vec![], "down"));
    up.set("c", Behavior::Status(503, vec![], "down"));
    let health = Arc::new(InMemoryHealth::new());
    cool_down(&health, "a");
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    let res = svc
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b", "c"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        record(&res),
        (
            "a".into(),
            vec!["a".into()],
            "b=downtime, c=downtime, a=ok".into()
        )
    );
    let attempts = res.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.tried[2].outcome, Outcome::Ok);
    assert_eq!(up.models_received(), ["b", "c", "a"]);
}

/// The layer's own answers after attempts carry the same record: the 502 of
/// `answer_transport_errors` when the last model could not be reached, and the 504 of a last
/// model that did not answer in time.
#[tokio::test]
async fn the_layers_own_answers_carry_the_model_asked_and_the_models_passed_over() {
    let closed = closed_port().await;
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new());
    cool_down(&health, "a");
    let unreachable = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .health(health.clone())
                .answer_transport_errors(true),
        )
        .service(routed_client(closed, vec![]));
    let res = unreachable
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        record(&res),
        (
            "a".into(),
            vec!["a".into()],
            "b=downtime, a=downtime".into()
        )
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(answer["error"]["code"], "upstream_unreachable", "{answer}");

    cool_down(&health, "x");
    up.set("x", Behavior::Delay(Duration::from_secs(10)));
    up.set("y", Behavior::Delay(Duration::from_secs(10)));
    let slow = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .health(health.clone())
                .headers_timeout(Duration::from_millis(100)),
        )
        .service(routed_client(up.addr, vec![]));
    let res = slow
        .oneshot(chat(&up.url(URL_PATH), &body("x", &["y"])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        record(&res),
        (
            "x".into(),
            vec!["x".into()],
            "y=downtime, x=downtime".into()
        )
    );
}

/// The models the auto router's ranking passed over as cooling down are passed over too, with
/// the router run in the layer (`auto_route`) or as an `AutoRouteLayer` in front: the record is
/// the same whichever reorder passed them, and whichever form ran the router.
#[tokio::test]
async fn the_auto_routers_passed_over_models_are_in_the_record() {
    use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
    use tower_llm_router::AutoRouteLayer;
    macro_rules! check {
        ($form:literal, |$auto:ident, $fallback:ident| $stack:expr) => {{
            let up = Upstream::start().await;
            let health = Arc::new(InMemoryHealth::new());
            let catalog = Catalog::from_profiles([
                ModelProfile::new("small", 8_000, 0.1, 0.4),
                ModelProfile::new("large", 200_000, 3.0, 15.0),
            ]);
            let $auto = AutoRouteLayer::new(catalog).health(health.clone());
            let $fallback = FallbackLayer::new().health(health.clone());
            let svc = $stack.service(routed_client(up.addr, vec![]));
            let send = || {
                svc.clone()
                    .oneshot(chat(&up.url(URL_PATH), &body("auto", &[])))
            };
            let res = send().await.unwrap();
            let nothing_passed: Vec<String> = Vec::new();
            assert_eq!(
                record(&res),
                ("small".into(), nothing_passed, "small=ok".into()),
                $form
            );

            cool_down(&health, "small");
            let res = send().await.unwrap();
            assert_eq!(
                record(&res),
                ("large".into(), vec!["small".into()], "large=ok".into()),
                $form
            );
            let decision = res.extensions().get::<RouteDecision>().unwrap();
            assert_eq!(&*decision.requested, "auto", $form);
        }};
    }
    check!("fused", |auto, fallback| ServiceBuilder::new()
        .layer(fallback.auto_route(auto)));
    check!("two layers", |auto, fallback| ServiceBuilder::new()
        .layer(auto)
        .layer(fallback));
}

/// While the request is in flight, its future names the model asked (for a service in front
/// whose future is dropped before the answer: its client left), also when the attempt in
/// flight is for another model; not before the body is read.
#[tokio::test]
async fn the_future_names_the_model_asked_while_in_flight() {
    use tower::Service;
    let up = Upstream::start().await;
    up.set("b", Behavior::Delay(Duration::from_secs(10)));
    let health = Arc::new(InMemoryHealth::new());
    cool_down(&health, "a");
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health.clone()))
        .service(routed_client(up.addr, vec![]));
    let request = chat(&up.url(URL_PATH), &body("a", &["b"]));
    std::future::poll_fn(|cx| {
        Service::<http::Request<http_body_util::Full<bytes::Bytes>>>::poll_ready(&mut svc, cx)
    })
    .await
    .unwrap();
    let mut future = Box::pin(svc.call(request));
    assert_eq!(future.as_ref().get_ref().requested(), None, "not read yet");
    let waited = tokio::time::timeout(Duration::from_millis(200), future.as_mut()).await;
    assert!(waited.is_err(), "`b` answers in 10 s");
    assert_eq!(up.models_received(), ["b"]);
    assert_eq!(future.as_ref().get_ref().requested(), Some("a"));
}

/// An upstream that redirects (a moved base URL, an auth portal) fails every attempt the same
/// way: a redirect the client does not follow is classed `downtime`, so that after
/// `downtime_threshold` of them in a row its model is passed over as cooling down, instead of
/// being tried first, in vain, by every request. Before, it was `other`, never charged.
/// A 304 is not a redirect (the answer to a conditional request, the client's doing): still
/// `other`, and its model is asked first again.
#[tokio::test]
async fn an_upstream_that_keeps_redirecting_cools_down() {
    let up = Upstream::start().await;
    let moved = [301, 302, 303, 307, 308].map(|status| (format!("moved-{status}"), status));
    for (model, status) in &moved {
        let location = vec![("location", "https://login.provider.example/account")];
        up.set(model, Behavior::Status(*status, location, ""));
    }
    up.set("not-modified", Behavior::Status(304, vec![], ""));
    let health = Arc::new(InMemoryHealth::new());
    let layer = FallbackLayer::new().health(health.clone());
    let svc = layer.layer(routed_client(up.addr, vec![]));
    let url = up.url(URL_PATH);
    let send = |body: String| svc.clone().oneshot(chat(&url, &body));
    let nothing_passed: Vec<String> = Vec::new();
    for (model, _) in &moved {
        for _ in 0..3 {
            let res = send(body(model, &["b"])).await.unwrap();
            let attempts = format!("{model}=downtime, b=ok");
            assert_eq!(
                record(&res),
                (model.clone(), nothing_passed.clone(), attempts)
            );
        }
        assert!(health.is_cooling_down(model), "{model}");
        let res = send(body(model, &["b"])).await.unwrap();
        assert_eq!(res.status(), 200);
        let passed = vec![model.clone()];
        assert_eq!(record(&res), (model.clone(), passed, "b=ok".into()));
    }
    for _ in 0..4 {
        let res = send(body("not-modified", &["b"])).await.unwrap();
        let attempts = "not-modified=other, b=ok".to_owned();
        assert_eq!(
            record(&res),
            ("not-modified".into(), nothing_passed.clone(), attempts)
        );
    }
    assert!(!health.is_cooling_down("not-modified"));
}
