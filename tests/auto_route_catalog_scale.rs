//! The auto router over a catalog of OpenRouter's size: 400 models read from a list in
//! OpenRouter's `GET /api/v1/models` format (`support/openrouter_list.rs`, generated), through
//! AutoRoute -> Fallback -> hyper-util client over loopback sockets to the scripted upstream.
//! The decisions must make sense there (a cheap model that can take the request for an easy
//! prompt, the strongest that fits for a hard one) and their record must not grow with the
//! catalog.

#[path = "support/openrouter_list.rs"]
mod openrouter_list;
mod support;

use std::sync::Arc;

use serde_json::json;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
use tower_llm_router::fallback::Attempts;
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::{AutoRouteLayer, ErrorClass, FallbackLayer};

const PATH: &str = "/v1/chat/completions";
const MODELS: usize = 400;

fn catalog() -> Catalog {
    let json = openrouter_list::openrouter_list(MODELS);
    let catalog = Catalog::from_openrouter_models_json(json.as_bytes()).unwrap();
    assert_eq!(
        catalog.len(),
        MODELS,
        "the unpriced entries and the router are left out"
    );
    catalog
}

fn profile<'c>(catalog: &'c Catalog, id: &str) -> &'c ModelProfile {
    catalog
        .get(id)
        .unwrap_or_else(|| panic!("{id} is not a catalog model"))
}

/// Sends `body` through AutoRoute -> `fallback`, or through `fallback` routing itself when
/// `fused` ([`FallbackLayer::auto_route`]); returns the decision, the attempts and the model
/// the upstream was asked.
async fn route(
    auto: AutoRouteLayer,
    fallback: FallbackLayer,
    fused: bool,
    body: serde_json::Value,
) -> (RouteDecision, Attempts, String) {
    let up = Upstream::start().await;
    let request = chat(&up.url(PATH), &body.to_string());
    let res = if fused {
        let svc = ServiceBuilder::new()
            .layer(fallback.auto_route(auto))
            .service(routed_client(up.addr, vec![]));
        svc.oneshot(request).await.unwrap()
    } else {
        let svc = ServiceBuilder::new()
            .layer(auto)
            .layer(fallback)
            .service(routed_client(up.addr, vec![]));
        svc.oneshot(request).await.unwrap()
    };
    assert_eq!(res.status(), 200);
    let decision = res.extensions().get::<RouteDecision>().unwrap().clone();
    let attempts = res.extensions().get::<Attempts>().unwrap().clone();
    let received = up.models_received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0], &*decision.chosen);
    (decision, attempts, received[0].clone())
}

fn user(content: serde_json::Value) -> serde_json::Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": content}]})
}

const HARD: &str = "Write a Rust function `fn lis(v: &[i64]) -> Vec<i64>` that returns the \
    longest strictly increasing subsequence in O(n log n), not just its length. Explain why the \
    patience sorting invariant holds, prove the complexity bound, and list the edge cases \
    (empty input, all equal values, negative numbers) your tests must cover.";

/// An easy prompt goes to a model among the cheaper half of those that can take it, and one
/// that needs images and tools to a model with both; a hard one with a large `max_tokens` to
/// the strongest model whose window and output limit take it. The unpriced entries and the
/// variable-priced router of the list are never candidates.
#[tokio::test]
async fn decisions_over_openrouters_whole_list_make_sense() {
    let catalog = catalog();
    let layer = || AutoRouteLayer::new(catalog.clone());
    let median_price = |fits: &dyn Fn(&ModelProfile) -> bool| {
        let mut prices: Vec<f64> = catalog
            .models()
            .iter()
            .filter(|m| fits(m))
            .map(|m| m.blended_price())
            .collect();
        prices.sort_by(f64::total_cmp);
        prices[prices.len() / 2]
    };

    let (decision, _, chosen) =
        route(layer(), FallbackLayer::new(), false, user(json!("hi"))).await;
    let m = profile(&catalog, &chosen);
    assert!(m.blended_price() <= median_price(&|_| true), "{m:?}");
    assert!(!chosen.contains("unpriced") && chosen != "openrouter/auto");
    // The fallbacks go up in strength from the pick.
    let strengths: Vec<f32> = decision.ranking[..4]
        .iter()
        .map(|id| profile(&catalog, id).strength())
        .collect();
    assert!(strengths.windows(2).all(|w| w[0] <= w[1]), "{strengths:?}");

    let image = json!([
        {"type": "text", "text": "hi, what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]);
    let mut body = user(image);
    body["tools"] = json!([{"type": "function", "function": {"name": "look", "parameters": {}}}]);
    let (decision, _, chosen) = route(layer(), FallbackLayer::new(), false, body).await;
    let takes = |m: &ModelProfile| m.capabilities.vision && m.capabilities.tools;
    for id in &decision.ranking {
        assert!(
            takes(profile(&catalog, id)),
            "{id} cannot take images and tools"
        );
    }
    assert!(profile(&catalog, &chosen).blended_price() <= median_price(&takes));

    let mut body = user(json!(HARD));
    body["max_tokens"] = json!(20_000);
    let (_, _, chosen) = route(layer(), FallbackLayer::new(), false, body).await;
    let room = |m: &ModelProfile| {
        m.context_window >= 21_000 && m.max_output_tokens.is_none_or(|limit| limit >= 20_000)
    };
    let strongest = catalog
        .models()
        .iter()
        .filter(|m| room(m))
        .max_by(|a, b| a.strength().total_cmp(&b.strength()))
        .unwrap();
    assert_eq!(chosen, &*strongest.id);
}

/// A price of 0 (OpenRouter's `:free` variants) is the weakest strength when strength is
/// derived from price: such a model is not the pick for every prompt, only for the easiest,
/// and comes after the stronger tiers among the fallbacks.
#[tokio::test]
async fn free_variants_are_not_the_default_choice() {
    let catalog = catalog();
    let free = catalog
        .models()
        .iter()
        .filter(|m| m.blended_price() == 0.0)
        .count();
    assert!(free > 20, "the list has free variants: {free}");
    for prompt in [
        "hi",
        "Summarise the plot of Hamlet in three sentences.",
        HARD,
    ] {
        let layer = AutoRouteLayer::new(catalog.clone());
        let (decision, _, chosen) =
            route(layer, FallbackLayer::new(), false, user(json!(prompt))).await;
        assert!(!chosen.ends_with(":free"), "{prompt}: {chosen}");
        assert!(
            decision.ranking[..4].iter().all(|m| !m.ends_with(":free")),
            "{decision:?}"
        );
    }
}

/// The decision's record does not grow with the catalog: its ranking is the chosen model,
/// `max_fallbacks` and 16 more; with a dozen models cooling down ahead of the pick, the reason
/// names eight and counts the rest, and the models passed over are those twelve.
#[tokio::test]
async fn the_record_of_a_decision_is_bounded() {
    let catalog = catalog();
    let health = Arc::new(InMemoryHealth::new());
    let layer = || AutoRouteLayer::new(catalog.clone()).health(health.clone());
    let fallback = || FallbackLayer::new().health(health.clone());

    let (decision, _, _) = route(layer(), fallback(), false, user(json!(HARD))).await;
    assert_eq!(decision.ranking.len(), 3 + 17);
    let first_ranked = decision.ranking.clone();

    for m in &first_ranked[..12] {
        health.observe(m, Observation::failed(ErrorClass::RateLimited, None));
    }
    let (decision, attempts, chosen) = route(layer(), fallback(), true, user(json!(HARD))).await;
    assert_eq!(chosen, &*first_ranked[12]);
    assert_eq!(decision.ranking.len(), 20);
    assert_eq!(decision.ranking[..8], first_ranked[12..20]);
    let named = first_ranked[..8]
        .iter()
        .map(|m| &**m)
        .collect::<Vec<_>>()
        .join(", ");
    let expected = format!("cooling down, ranked last: {named} and 4 more; {chosen} chosen");
    assert!(decision.reason.ends_with(&expected), "{}", decision.reason);
    assert!(decision.reason.len() < 600, "{}", decision.reason);
    let passed_over: Vec<&str> = attempts.passed_over.iter().map(|m| &**m).collect();
    let cooled: Vec<&str> = first_ranked[..12].iter().map(|m| &**m).collect();
    assert_eq!(passed_over, cooled);
}
