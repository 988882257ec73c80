//! The tracing spans the layers emit: one per request and one per attempt, with the
//! OpenTelemetry GenAI attribute names and the class of each failure.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Every span seen: its name and its fields, including those recorded after creation.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, (String, HashMap<String, String>)>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
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

#[tokio::test(flavor = "current_thread")]
async fn a_span_per_request_and_per_attempt_with_gen_ai_attributes() {
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
    let svc = ServiceBuilder::new()
        .layer(AutoRouteLayer::new(catalog))
        .layer(FallbackLayer::new())
        .service(routed_client(up.addr, vec![]));
    let res = svc
        .oneshot(chat(
            &up.url("/v1/chat/completions"),
            r#"{"model":"auto","models":["b"],"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=rate_limited, b=ok");

    let requests = spans.named("llm_router.fallback");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["gen_ai.request.model"], "a");
    assert_eq!(requests[0]["gen_ai.response.model"], "b");
    assert_eq!(requests[0]["llm_router.attempts"], "a=rate_limited, b=ok");

    let attempts = spans.named("llm_router.attempt");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["gen_ai.request.model"], "a");
    assert_eq!(attempts[0]["error.type"], "rate_limited");
    assert_eq!(attempts[0]["http.response.status_code"], "429");
    assert_eq!(attempts[1]["gen_ai.request.model"], "b");
    assert!(!attempts[1].contains_key("error.type"));

    let auto = spans.named("llm_router.auto_route");
    assert_eq!(auto.len(), 1);
    assert_eq!(auto[0]["gen_ai.request.model"], "auto");
    assert_eq!(auto[0]["llm_router.route.chosen"], "a");
}
