//! OpenRouter's `cost_tier` plugin option, end to end over loopback sockets: the router's
//! first choice comes from the asked cost-percentile band of the candidates, whatever the
//! policy, in both forms of auto routing (an `AutoRouteLayer` in front of a `FallbackLayer`,
//! and `FallbackLayer::auto_route`).

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{
    async_policy_fn, policy_fn, Catalog, DefaultRouter, ModelProfile, PromptInfo, Ranking,
    RouteDecision, RouteFuture,
};
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::{AutoRouteLayer, ErrorClass, FallbackLayer};

const PATH: &str = "/v1/chat/completions";

/// The tiers, cheapest band first.
const TIERS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];

/// Five models, each dearer than the one before (blended prices 0.175, 0.875, 3.25, 9.75 and
/// 32.5 USD per million tokens): ranked by price they sit at the percentiles 0, 25, 50, 75 and
/// 100, one in each tier's band. `cheapest` has the smallest window.
fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("cheapest", 8_000, 0.1, 0.2),
        ModelProfile::new("cheap", 128_000, 0.5, 1.0),
        ModelProfile::new("middling", 128_000, 1.0, 4.0),
        ModelProfile::new("dear", 128_000, 3.0, 12.0),
        ModelProfile::new("dearest", 128_000, 10.0, 40.0),
    ])
}

/// The catalog's models, cheapest first: the one in each tier's band.
const BY_PRICE: [&str; 5] = ["cheapest", "cheap", "middling", "dear", "dearest"];

#[derive(Clone, Copy, Debug)]
enum Form {
    /// An `AutoRouteLayer` in front of a `FallbackLayer`.
    Stacked,
    /// `FallbackLayer::auto_route`.
    Fused,
}

const FORMS: [Form; 2] = [Form::Stacked, Form::Fused];

/// What came back: status, decision, the attempts header and the JSON body.
impl Answer {
    fn decision(&self) -> &RouteDecision {
        self.decision
            .as_ref()
            .unwrap_or_else(|| panic!("no decision: {} {}", self.status, self.json))
    }

    fn chosen(&self) -> &str {
        &self.decision().chosen
    }

    fn ranking(&self) -> Vec<&str> {
        self.decision().ranking.iter().map(|m| &**m).collect()
    }
}

/// The request through `form`, with a chain of up to five models (the catalog's size).
async fn send(form: Form, auto: AutoRouteLayer, up: &Upstream, body: &Value) -> Answer {
    let request = chat(&up.url(PATH), &body.to_string());
    let res = match form {
        Form::Stacked => ServiceBuilder::new()
            .layer(auto)
            .layer(FallbackLayer::new().max_models(5))
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(request)
            .await
            .unwrap(),
        Form::Fused => ServiceBuilder::new()
            .layer(FallbackLayer::new().max_models(5).auto_route(auto))
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(request)
            .await
            .unwrap(),
    };
    Answer::of(res).await
}

/// An auto request with this prompt and these `auto-router` plugin options (none: no plugin).
fn request(prompt: &str, options: Option<Value>) -> Value {
    let mut body = json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]});
    if let Some(Value::Object(options)) = options {
        let mut entry = serde_json::Map::new();
        entry.insert("id".into(), json!("auto-router"));
        entry.extend(options);
        body["plugins"] = json!([entry]);
    }
    body
}

fn tier(name: &str) -> Option<Value> {
    Some(json!({ "cost_tier": name }))
}

/// A router that leans to cheap models (the default, for a chit-chat prompt) and one that
/// always wants the strongest tier: between them, the default ranking's first choice is at
/// either end of the price range, and for every tier one of them picks another model.
fn routers() -> [(&'static str, DefaultRouter); 2] {
    [
        ("cheap-leaning", DefaultRouter::new()),
        ("strong-leaning", DefaultRouter::new().strong_share(1.0)),
    ]
}

/// Each tier's first choice is the model in its band, whatever the default ranking would
/// have chosen; the decision's reason names the tier, and the upstream gets that model
/// without the plugin entry.
#[tokio::test]
async fn each_tier_chooses_the_model_in_its_cost_band() {
    for form in FORMS {
        for (leaning, router) in routers() {
            let layer = || AutoRouteLayer::new(catalog()).policy(router.clone());
            let up = Upstream::start().await;
            let default = send(form, layer(), &up, &request("hi", None)).await;
            assert_eq!(default.status, 200, "{form:?} {leaning}");
            let default_choice = default.chosen().to_owned();
            let mut differs = 0;
            for (name, expected) in TIERS.into_iter().zip(BY_PRICE) {
                let up = Upstream::start().await;
                let answer = send(form, layer(), &up, &request("hi", tier(name))).await;
                let context = format!("{form:?} {leaning} {name}: {}", answer.json);
                assert_eq!(answer.status, 200, "{context}");
                assert_eq!(answer.chosen(), expected, "{context}");
                assert!(
                    answer
                        .decision()
                        .reason
                        .contains(&format!("cost_tier {name}")),
                    "{context}: {}",
                    answer.decision().reason
                );
                assert_eq!(up.models_received(), [expected], "{context}");
                let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
                assert!(sent.get("plugins").is_none(), "{context}: {sent}");
                differs += usize::from(expected != default_choice);
            }
            // The default's first choice is in one band: the four others moved it.
            assert_eq!(differs, 4, "{form:?} {leaning}: {default_choice}");
        }
    }
    // And at the ends of the price range, so between them every tier moved a first choice.
    let up = Upstream::start().await;
    let [(_, cheap), (_, strong)] = routers();
    for (router, expected) in [(cheap, "cheapest"), (strong, "dearest")] {
        let layer = AutoRouteLayer::new(catalog()).policy(router);
        let answer = send(Form::Stacked, layer, &up, &request("hi", None)).await;
        assert_eq!(answer.chosen(), expected);
    }
}

/// The band's models come first, in the policy's order, then the rest of the ranking as it
/// was: the chain the fallback layer tries.
#[tokio::test]
async fn the_band_comes_first_then_the_ranking_as_it_was() {
    for form in FORMS {
        for (leaning, router) in routers() {
            let layer = || {
                AutoRouteLayer::new(catalog())
                    .policy(router.clone())
                    .max_fallbacks(4)
            };
            let up = Upstream::start().await;
            let default = send(form, layer(), &up, &request("hi", None)).await;
            let before = default.ranking();
            assert_eq!(before.len(), 5, "{form:?} {leaning}");
            for (name, expected) in TIERS.into_iter().zip(BY_PRICE) {
                // Every model fails: the attempts header is the whole chain.
                let up = Upstream::start().await;
                for model in BY_PRICE {
                    up.set(model, Behavior::Status(503, vec![], r#"{"error":{}}"#));
                }
                let answer = send(form, layer(), &up, &request("hi", tier(name))).await;
                let mut chain = vec![expected];
                chain.extend(before.iter().filter(|&&m| m != expected));
                let context = format!("{form:?} {leaning} {name}");
                assert_eq!(answer.ranking(), chain, "{context}");
                assert_eq!(up.models_received(), chain, "{context}");
                let attempts: Vec<&str> = answer
                    .attempts
                    .split(", ")
                    .map(|a| a.split('=').next().unwrap_or(""))
                    .collect();
                assert_eq!(attempts, chain, "{context}");
            }
        }
    }
    // One written out: `high` with the cheap-leaning router.
    let up = Upstream::start().await;
    let layer = AutoRouteLayer::new(catalog()).max_fallbacks(4);
    let answer = send(Form::Stacked, layer, &up, &request("hi", tier("high"))).await;
    assert_eq!(
        answer.ranking(),
        ["middling", "cheapest", "cheap", "dear", "dearest"]
    );
}

/// The percentiles are over the models the plugin's patterns leave, not over the catalog: two
/// allowed models sit at 0 and 100. A band with no model falls to the nearest one that has
/// some, and a tie goes to the cheaper band.
#[tokio::test]
async fn allowed_models_narrow_the_bands_and_an_empty_band_falls_to_the_nearest() {
    for form in FORMS {
        for (name, expected) in [
            ("low", "cheap"),
            // [20, 40) is empty; [0, 20) is the nearest.
            ("medium", "cheap"),
            // [40, 60) is empty; [20, 40) and [60, 80) are empty too, and [0, 20) and
            // [80, 100] as near: the cheaper.
            ("high", "cheap"),
            ("xhigh", "dear"),
            // `dearest` is the catalog's max band, but not allowed.
            ("max", "dear"),
        ] {
            let up = Upstream::start().await;
            let options = json!({"allowed_models": ["cheap", "dear"], "cost_tier": name});
            let answer = send(
                form,
                AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().strong_share(1.0)),
                &up,
                &request("hi", Some(options)),
            )
            .await;
            let context = format!("{form:?} {name}: {}", answer.json);
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.chosen(), expected, "{context}");
            let mut ranking = answer.ranking();
            ranking.sort_unstable();
            assert_eq!(ranking, ["cheap", "dear"], "{context}");
        }
        // `excluded_models` too: without `cheapest`, `cheap` is the low band.
        let up = Upstream::start().await;
        let options = json!({"excluded_models": ["cheapest"], "cost_tier": "low"});
        let layer = AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().strong_share(1.0));
        let answer = send(form, layer, &up, &request("hi", Some(options))).await;
        assert_eq!(answer.chosen(), "cheap", "{form:?}");
    }
}

/// The percentiles are over the models that fit the request: with `max_tokens` over
/// `cheapest`'s window, four models sit at 0, 33, 67 and 100.
#[tokio::test]
async fn the_bands_are_over_the_models_that_fit() {
    for form in FORMS {
        for (name, expected) in [
            ("low", "cheap"),
            ("medium", "middling"),
            // [40, 60) is empty; [20, 40) and [60, 80) are as near: the cheaper.
            ("high", "middling"),
            ("xhigh", "dear"),
            ("max", "dearest"),
        ] {
            let up = Upstream::start().await;
            let mut body = request("hi", tier(name));
            body["max_tokens"] = json!(10_000);
            let answer = send(form, AutoRouteLayer::new(catalog()), &up, &body).await;
            let context = format!("{form:?} {name}: {}", answer.json);
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.chosen(), expected, "{context}");
            assert!(!answer.ranking().contains(&"cheapest"), "{context}");
        }
    }
}

/// Strongest first, whatever the prompt: the reverse of `cheap-leaning`.
fn strongest_first(_: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking {
    let mut ids: Vec<Arc<str>> = candidates.iter().map(|m| m.id.clone()).collect();
    ids.sort_by_key(|id| std::cmp::Reverse(BY_PRICE.iter().position(|m| **m == **id)));
    Ranking::new(ids, 0.5, Cow::Borrowed("strongest first"))
}

/// A policy of one's own, sync or async, gets the tier applied to its ranking too.
#[tokio::test]
async fn the_tier_applies_to_any_policy() {
    let sync = || AutoRouteLayer::new(catalog()).policy(policy_fn(strongest_first));
    let not_async = || {
        AutoRouteLayer::new(catalog()).async_policy(async_policy_fn(|prompt, candidates| {
            let ranking = strongest_first(prompt, candidates);
            Box::pin(async move { Ok(ranking) }) as RouteFuture<'_>
        }))
    };
    for form in FORMS {
        for (kind, layer) in [
            ("sync", &sync as &dyn Fn() -> AutoRouteLayer),
            ("async", &not_async),
        ] {
            let up = Upstream::start().await;
            let default = send(form, layer(), &up, &request("hi", None)).await;
            assert_eq!(default.chosen(), "dearest", "{form:?} {kind}");
            for (name, expected) in TIERS.into_iter().zip(BY_PRICE) {
                let up = Upstream::start().await;
                let answer = send(form, layer(), &up, &request("hi", tier(name))).await;
                let context = format!("{form:?} {kind} {name}: {}", answer.json);
                assert_eq!(answer.chosen(), expected, "{context}");
                let mut chain = vec![expected];
                chain.extend(
                    ["dearest", "dear", "middling", "cheap", "cheapest"]
                        .into_iter()
                        .filter(|&m| m != expected),
                );
                assert_eq!(answer.ranking(), chain, "{context}");
                let reason = &answer.decision().reason;
                assert!(
                    reason.starts_with("strongest first; cost_tier "),
                    "{context}: {reason}"
                );
            }
        }
    }
}

/// A band whose models all cool down gives way to the nearest band with a model ready (of two
/// as near, the cheaper), not to the policy's first choice; the cooling model is ranked last.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_band_cooling_down_gives_way_to_the_nearest_ready_band() {
    for form in FORMS {
        let health = Arc::new(InMemoryHealth::new());
        health.observe(
            "middling",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(60))),
        );
        assert!(health.is_cooling_down("middling"));
        let layer = AutoRouteLayer::new(catalog())
            .health(health.clone())
            .max_fallbacks(4);
        let up = Upstream::start().await;
        let answer = send(form, layer, &up, &request("hi", tier("high"))).await;
        let context = format!("{form:?}: {}", answer.json);
        assert_eq!(answer.status, 200, "{context}");
        assert_eq!(
            answer.ranking(),
            ["cheap", "cheapest", "dear", "dearest", "middling"],
            "{context}"
        );
        assert_eq!(up.models_received(), ["cheap"], "{context}");
        let reason = &answer.decision().reason;
        assert!(
            reason.contains("cost_tier high") && reason.contains("the nearest band [20, 40)"),
            "{context}: {reason}"
        );
    }
}

/// `"enabled": false` drops the whole entry: the tier too, as OpenRouter routes without the
/// plugin.
#[tokio::test]
async fn a_disabled_entry_applies_no_tier() {
    for form in FORMS {
        let up = Upstream::start().await;
        let options = json!({"enabled": false, "cost_tier": "max"});
        let answer = send(
            form,
            AutoRouteLayer::new(catalog()),
            &up,
            &request("hi", Some(options)),
        )
        .await;
        assert_eq!(answer.chosen(), "cheapest", "{form:?}");
        assert!(!answer.decision().reason.contains("cost_tier"), "{form:?}");
    }
}

/// The sentinel in `models` is replaced by the tiered ranking.
#[tokio::test]
async fn the_sentinel_in_models_takes_the_tiered_ranking() {
    for form in FORMS {
        let up = Upstream::start().await;
        up.set("gpt-4o", Behavior::Status(503, vec![], r#"{"error":{}}"#));
        let mut body = request("hi", tier("xhigh"));
        body["model"] = json!("gpt-4o");
        body["models"] = json!(["auto"]);
        let answer = send(form, AutoRouteLayer::new(catalog()), &up, &body).await;
        let context = format!("{form:?}: {}", answer.json);
        assert_eq!(answer.status, 200, "{context}");
        assert_eq!(up.models_received(), ["gpt-4o", "dear"], "{context}");
        assert!(
            answer.decision().reason.contains("cost_tier xhigh"),
            "{context}"
        );
    }
}

/// The auto router's span records the reason, tier included.
#[tokio::test(flavor = "current_thread")]
async fn the_span_names_the_tier() {
    use tracing_subscriber::fmt::format::FmtSpan;
    // Other tests' threads hit the call sites without a subscriber: with a global one too,
    // tracing asks every subscriber whether a call site is of interest, and the rebuild
    // forgets what was cached before this one was set.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let log = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    for form in FORMS {
        let up = Upstream::start().await;
        let answer = send(
            form,
            AutoRouteLayer::new(catalog()),
            &up,
            &request("hi", tier("medium")),
        )
        .await;
        assert_eq!(answer.chosen(), "cheap");
    }
    let text = log.text();
    let spans: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("tower_llm_router::auto_route::future: new"))
        .collect();
    assert_eq!(spans.len(), 2, "{text}");
    for span in spans {
        assert!(
            span.contains(" llm_router.auto_route{")
                && span.contains("llm_router.route.chosen=\"cheap\"")
                && span.contains("cost_tier medium"),
            "{span}"
        );
    }
}
