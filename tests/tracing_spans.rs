//! The tracing spans the layers emit: one per request and one per attempt, with the
//! OpenTelemetry GenAI attribute names and the class of each failure.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{
    AsyncRoutePolicy, Catalog, ModelProfile, PromptInfo, Ranking, RouteFuture,
};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span's name and fields, including those recorded after creation.
type SpanRecord = (String, HashMap<String, String>);

/// Every span seen, by id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, SpanRecord>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        // The parent the registry gave it (explicit or contextual), by name.
        if let Some(parent) = ctx.span(id).and_then(|span| span.parent()) {
            fields.insert("parent".to_owned(), parent.name().to_owned());
        }
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().insert(id.into_u64(), (name, fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<HashMap<String, String>> {
        let mut spans: Vec<(u64, HashMap<String, String>)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(id, (_, f))| (*id, f.clone()))
            .collect();
        spans.sort_by_key(|(id, _)| *id);
        spans.into_iter().map(|(_, f)| f).collect()
    }
}

/// Both forms of auto routing: an `AutoRouteLayer` in front, and `FallbackLayer::auto_route`.
#[tokio::test(flavor = "current_thread")]
async fn a_span_per_request_and_per_attempt_with_gen_ai_attributes() {
    for fused in [false, true] {
        spans_of_a_routed_request(fused).await;
    }
}

/// `request` through `auto` and a `FallbackLayer`: the router in front, or inside the fallback
/// layer (`fused`).
async fn through(
    fused: bool,
    auto: AutoRouteLayer,
    up: &Upstream,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Response<tower_llm_router::body::ResponseBody<hyper::body::Incoming>> {
    let client = routed_client(up.addr, vec![]);
    let res = if fused {
        let layer = FallbackLayer::new().auto_route(auto);
        ServiceBuilder::new()
            .layer(layer)
            .service(client)
            .oneshot(request)
            .await
    } else {
        ServiceBuilder::new()
            .layer(auto)
            .layer(FallbackLayer::new())
            .service(client)
            .oneshot(request)
            .await
    };
    res.unwrap()
}

async fn spans_of_a_routed_request(fused: bool) {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(
            429,
            vec![],
            r#"{"error":{"message":"Rate limit","code":429}}"#,
        ),
    );
    let catalog = Catalog::from_profiles([ModelProfile::new("a", 100_000, 1.0, 1.0)]);
    let auto = AutoRouteLayer::new(catalog);
    let request = chat(
        &up.url("/v1/chat/completions"),
        r#"{"model":"auto","models":["b"],"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let res = through(fused, auto, &up, request).await;
    assert_eq!(attempts_header(&res), "a=rate_limited, b=ok");

    let requests = spans.named("llm_router.fallback");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["gen_ai.request.model"], "a");
    assert_eq!(requests[0]["gen_ai.response.model"], "b");
    assert_eq!(requests[0]["llm_router.attempts"], "a=rate_limited, b=ok");
    assert_eq!(requests[0]["parent"], "llm_router.auto_route");

    let attempts = spans.named("llm_router.attempt");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["gen_ai.request.model"], "a");
    assert_eq!(attempts[0]["error.type"], "rate_limited");
    assert_eq!(attempts[0]["http.response.status_code"], "429");
    assert_eq!(attempts[1]["gen_ai.request.model"], "b");
    assert!(attempts
        .iter()
        .all(|a| a["parent"] == "llm_router.fallback"));
    assert!(!attempts[1].contains_key("error.type"));

    let auto = spans.named("llm_router.auto_route");
    assert_eq!(auto.len(), 1);
    assert_eq!(auto[0]["gen_ai.request.model"], "auto");
    assert_eq!(auto[0]["llm_router.route.chosen"], "a");
}

/// With session affinity, the span of a turn routed to the conversation's model says so:
/// `llm_router.route.pinned` is `true` and the reason names the session.
#[tokio::test(flavor = "current_thread")]
async fn the_auto_route_span_says_when_the_session_chose() {
    for fused in [false, true] {
        let spans = Spans::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        let up = Upstream::start().await;
        let catalog = Catalog::from_profiles([
            ModelProfile::new("cheap", 100_000, 0.1, 0.1),
            ModelProfile::new("dear", 100_000, 10.0, 10.0),
        ]);
        // The dearer model for the first turn alone: the policy ranks by turn count.
        let auto = AutoRouteLayer::new(catalog)
            .policy(tower_llm_router::auto_route::policy_fn(
                |prompt: &PromptInfo<'_>, c: &[&ModelProfile]| {
                    let mut ids: Vec<Arc<str>> = c.iter().map(|m| m.id.clone()).collect();
                    if prompt.turns == 1 {
                        ids.reverse();
                    }
                    Ranking::new(ids, 0.5, std::borrow::Cow::Borrowed("by turns"))
                },
            ))
            .session_affinity(tower_llm_router::auto_route::SessionAffinity::new());
        let turns = [
            json!([{"role": "user", "content": "hi"}]),
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                   {"role": "user", "content": "more"}]),
        ];
        for messages in turns {
            let body = json!({"model": "auto", "messages": messages}).to_string();
            let request = chat(&up.url("/v1/chat/completions"), &body);
            let res = through(fused, auto.clone(), &up, request).await;
            assert_eq!(model_header(&res), "dear");
        }
        let auto = spans.named("llm_router.auto_route");
        assert_eq!(auto.len(), 2);
        assert!(
            !auto[0].contains_key("llm_router.route.pinned"),
            "{:?}",
            auto[0]
        );
        assert_eq!(auto[1]["llm_router.route.pinned"], "true");
        assert_eq!(auto[1]["llm_router.route.chosen"], "dear");
        assert!(
            auto[1]["llm_router.route.reason"].starts_with("session affinity: dear"),
            "{:?}",
            auto[1]
        );
    }
}

/// An async policy ranking the first candidate first.
struct First;

impl AsyncRoutePolicy for First {
    fn route<'a>(&'a self, _: &'a PromptInfo<'a>, c: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
        Box::pin(async move { Ok(Ranking::new(vec![c[0].id.clone()], 0.5, "first".into())) })
    }
}

/// The auto router's span records the model the client asked for: `openrouter/auto` or a
/// custom sentinel as sent, not `auto`, with either form of the stack and either kind of policy.
#[tokio::test(flavor = "current_thread")]
async fn the_auto_route_span_records_the_sentinel_as_sent() {
    let up = Upstream::start().await;
    for fused in [false, true] {
        for remote in [false, true] {
            for (custom, sent) in [
                (None, "openrouter/auto"),
                (Some("house/router"), "house/router"),
            ] {
                let spans = Spans::default();
                let _guard = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(spans.clone()),
                );
                let catalog = Catalog::from_profiles([ModelProfile::new("a", 100_000, 1.0, 1.0)]);
                let mut auto = AutoRouteLayer::new(catalog);
                if let Some(sentinel) = custom {
                    auto = auto.sentinel(sentinel);
                }
                if remote {
                    auto = auto.async_policy(First);
                }
                let body = json!({"model": sent, "messages": [{"role": "user", "content": "hi"}]});
                let request = chat(&up.url("/v1/chat/completions"), &body.to_string());
                let res = through(fused, auto, &up, request).await;
                assert_eq!(attempts_header(&res), "a=ok");
                let auto = spans.named("llm_router.auto_route");
                assert_eq!(auto.len(), 1, "fused {fused}, remote {remote}, {sent}");
                assert_eq!(
                    auto[0]["gen_ai.request.model"], sent,
                    "fused {fused}, remote {remote}"
                );
                assert_eq!(auto[0]["llm_router.route.chosen"], "a");
            }
        }
    }
}

/// The request's span names the model the client asked for, even when the layer tries another
/// one first because the asked one is cooling down (the attempts' spans name what was sent).
#[tokio::test(flavor = "current_thread")]
async fn the_request_span_names_the_model_asked_when_it_is_passed_over() {
    use tower_llm_router::health::{Health, InMemoryHealth, Observation};
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new());
    let cooldown = Some(std::time::Duration::from_secs(60));
    health.observe(
        "a",
        Observation::failed(tower_llm_router::ErrorClass::RateLimited, cooldown),
    );
    let res = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(health))
        .service(routed_client(up.addr, vec![]))
        .oneshot(chat(
            &up.url("/v1/chat/completions"),
            r#"{"model":"a","models":["b"],"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "b=ok");

    let requests = spans.named("llm_router.fallback");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["gen_ai.request.model"], "a");
    assert_eq!(requests[0]["gen_ai.response.model"], "b");
    let attempts = spans.named("llm_router.attempt");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["gen_ai.request.model"], "b");
}
