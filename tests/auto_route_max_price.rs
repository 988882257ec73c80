//! OpenRouter's `provider.max_price` as a hard constraint of auto routing, and an explicit
//! empty `models` as the per-request opt-out of fallbacks. Every case runs in both forms, an
//! `AutoRouteLayer` in front of a `FallbackLayer` and `FallbackLayer::auto_route`, over the
//! hyper-util client against the scripted upstream on real loopback sockets.

mod support;

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Value};
use support::*;
use tower_llm_router::auto_route::{
    policy_fn, Catalog, ModelProfile, PromptInfo, Ranking, RouteDecision, SessionAffinity,
};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};

const PATH: &str = "/v1/chat/completions";
const FORMS: [bool; 2] = [false, true];

/// A cheap text model with a small window, a mid one, a dear strong one (USD per million
/// tokens, input then output).
fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("mini", 4_000, 0.1, 0.4),
        ModelProfile::new("mid", 32_000, 1.0, 4.0),
        ModelProfile::new("max", 200_000, 10.0, 30.0),
    ])
}

/// A prompt the default router sends to the strongest model.
fn hard() -> String {
    "Prove that the halting problem is undecidable, step by step. ".repeat(20)
}

fn auto(text: &str, provider: Value) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}],
           "provider": provider})
}

/// The answer to `body` (sent as these exact bytes) through one form of the stack.
async fn send_raw(
    fused: bool,
    auto: AutoRouteLayer,
    fallback: FallbackLayer,
    up: &Upstream,
    body: &str,
) -> Answer {
    let res = through_form(fused, auto, fallback, up, chat(&up.url(PATH), body)).await;
    Answer::of(res).await
}

/// [`send_raw`] through the default router over [`catalog`], with no fallback options.
async fn send_text(fused: bool, up: &Upstream, body: &str) -> Answer {
    let auto = AutoRouteLayer::new(catalog());
    send_raw(fused, auto, FallbackLayer::new(), up, body).await
}

async fn send(fused: bool, up: &Upstream, body: &Value) -> Answer {
    send_text(fused, up, &body.to_string()).await
}

/// `a` is the 400 of a request the ceiling alone left without a model, naming `why` for one
/// of them, and the upstream was not called.
fn assert_priced_out(a: &Answer, up: &Upstream, why: &str) {
    assert_eq!(a.status, 400, "{}", a.json);
    assert!(is_openai_error(&a.json), "{}", a.json);
    assert_eq!(a.json["error"]["code"], "no_model_fits");
    assert_eq!(a.json["error"]["param"], "provider.max_price");
    let message = a.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{message}");
    assert!(up.received().is_empty(), "the upstream is not called");
}

fn ranking(decision: &RouteDecision) -> Vec<&str> {
    decision.ranking.iter().map(|m| &**m).collect()
}

/// The hard prompt goes to `max` without a ceiling; under one, the dearer models are no
/// candidates: the cheaper one is chosen, and the ranking (the fallback chain) leaves them out.
/// The ceilings may be numbers or strings, as OpenRouter's own SDK sends them.
#[tokio::test]
async fn the_ceiling_keeps_the_dearer_models_out_of_the_ranking_and_the_chain() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let a = send(fused, &up, &auto(&hard(), Value::Null)).await;
        assert_eq!(a.decision.unwrap().chosen.as_ref(), "max", "no ceiling");

        for ceiling in [
            json!({"prompt": 1, "completion": 4}),
            json!({"prompt": "1", "completion": "4.0"}),
            json!({"completion": 4}),
        ] {
            let up = Upstream::start().await;
            up.set(
                "mid",
                Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
            );
            let body = auto(&hard(), json!({"max_price": ceiling}));
            let a = send(fused, &up, &body).await;
            assert_eq!(a.status, 200, "{ceiling}");
            let decision = a.decision.expect("an auto request carries its decision");
            assert_eq!(decision.chosen.as_ref(), "mid", "{ceiling}");
            assert_eq!(ranking(&decision), ["mid", "mini"], "{ceiling}");
            assert!(decision.reason.contains("max_price"), "{}", decision.reason);
            assert_eq!(a.attempts, "mid=downtime, mini=ok", "{ceiling}");
        }
        // A ceiling at a model's very price admits it.
        let up = Upstream::start().await;
        let body = auto(
            &hard(),
            json!({"max_price": {"prompt": 10, "completion": 30}}),
        );
        let a = send(fused, &up, &body).await;
        assert_eq!(a.decision.unwrap().chosen.as_ref(), "max");
    }
}

/// A model whose price is not known is no candidate under a ceiling (OpenRouter: max_price
/// "will prevent your request from running if the price is not available"); when that leaves
/// nothing, the 400 says it was the ceiling, and the upstream is not called.
#[tokio::test]
async fn an_unknown_price_is_no_candidate_under_a_ceiling() {
    let catalog = || {
        Catalog::from_profiles([
            ModelProfile::new("unpriced", 200_000, f64::NAN, f64::NAN),
            ModelProfile::new("mini", 4_000, 0.1, 0.4),
        ])
    };
    let only_unpriced = json!([{"id": "auto-router", "allowed_models": ["unpriced"]}]);
    for fused in FORMS {
        let up = Upstream::start().await;
        let mut body = auto("hi", Value::Null);
        body["plugins"] = only_unpriced.clone();
        let free = AutoRouteLayer::new(catalog());
        let a = send_raw(fused, free, FallbackLayer::new(), &up, &body.to_string()).await;
        assert_eq!(a.status, 200, "no ceiling: {}", a.json);
        assert_eq!(a.attempts, "unpriced=ok");

        let up = Upstream::start().await;
        body["provider"] = json!({"max_price": {"prompt": 1000, "completion": 1000}});
        let capped = AutoRouteLayer::new(catalog());
        let a = send_raw(fused, capped, FallbackLayer::new(), &up, &body.to_string()).await;
        assert_priced_out(&a, &up, "unpriced: its price is not known");
    }
}

/// A ceiling under every candidate's price: a 400 that names `max_price`, no upstream call.
#[tokio::test]
async fn when_the_ceiling_leaves_nothing_a_400_names_max_price() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let body = auto("hi", json!({"max_price": {"prompt": 0.05}}));
        let a = send(fused, &up, &body).await;
        assert_priced_out(&a, &up, "mini: its prompt price of $0.1 per million tokens is over provider.max_price.prompt ($0.05)");

        // A prompt no window holds and a ceiling: the param is the prompt's.
        let up = Upstream::start().await;
        let long = "word ".repeat(1_000_000);
        let body = auto(&long, json!({"max_price": {"prompt": 0.05}}));
        let a = send(fused, &up, &body).await;
        assert_eq!(a.status, 400, "{}", a.json);
        assert_eq!(a.json["error"]["param"], "messages");
    }
}

/// A malformed `provider` or `max_price` on an auto request is a 400 naming it: read as
/// absent, it would let the request go to any model.
#[tokio::test]
async fn a_malformed_ceiling_gets_a_400() {
    let hi = r#""model":"auto","messages":[{"role":"user","content":"hi"}]"#;
    let cases = [
        (r#""provider":"cheap""#, "provider"),
        (r#""provider":[1]"#, "provider"),
        (r#""provider":{"max_price":3}"#, "provider.max_price"),
        (
            r#""provider":{"max_price":{"prompt":-1}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"prompt":"abc"}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"prompt":"-2"}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"completion":true}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"web_search":"free"}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"image":-1}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"prompt":1,"prompt":9}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"prompt":1},"max_price":{"prompt":9}}"#,
            "provider.max_price",
        ),
        (
            r#""provider":{"max_price":{"prompt":1}},"provider":{}"#,
            "provider",
        ),
    ];
    for fused in FORMS {
        for (provider, param) in cases {
            let up = Upstream::start().await;
            let body = format!("{{{hi},{provider}}}");
            let a = send_text(fused, &up, &body).await;
            assert_eq!(a.status, 400, "{body}: {}", a.json);
            assert!(is_openai_error(&a.json), "{}", a.json);
            assert_eq!(a.json["error"]["param"], param, "{body}: {}", a.json);
            assert!(up.received().is_empty(), "{body}");
        }
        // `null` is absent, as for every field the router reads; so is a `provider` without
        // `max_price`, and `request` and `image` ceilings exclude no catalog model.
        for provider in [
            r#""provider":null"#,
            r#""provider":{"max_price":null}"#,
            r#""provider":{"order":["x"],"max_price":{"request":0,"image":"0","audio":0}}"#,
            // The other prices of OpenRouter's `pricing` (a model's, copied as a ceiling), or
            // any key OpenRouter may add: a ceiling the catalog has no price for, as OpenRouter
            // accepts it.
            r#""provider":{"max_price":{"prompt":"1","web_search":"0.004","internal_reasoning":"0.00001","input_cache_read":0.5,"input_cache_write":null,"image_output":"0","discount":0}}"#,
        ] {
            let up = Upstream::start().await;
            let body = format!("{{{hi},{provider}}}");
            let a = send_text(fused, &up, &body).await;
            assert_eq!(a.status, 200, "{body}: {}", a.json);
        }
    }
}

/// `provider` means something to OpenRouter upstream: it reaches it byte for byte.
#[tokio::test]
async fn the_provider_object_is_forwarded_byte_for_byte() {
    let provider =
        r#""provider" : { "order":["a"] , "max_price":{"prompt":"1.0","completion": 4e0 } }"#;
    for fused in FORMS {
        let up = Upstream::start().await;
        let body = format!(
            r#"{{"model":"auto",{provider},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let a = send_text(fused, &up, &body).await;
        assert_eq!(a.status, 200, "{}", a.json);
        let received = up.received();
        let sent = std::str::from_utf8(&received[0].body).unwrap();
        assert!(sent.contains(provider), "{sent}");
    }
}

/// A request naming a model is not routed: its `provider` is not read, not even refused when
/// malformed or repeated, and reaches the upstream byte for byte.
#[tokio::test]
async fn a_concrete_models_provider_is_not_read() {
    for provider in [
        r#""provider":{"max_price":{"prompt":0.01}}"#,
        r#""provider":{"max_price":{"prompt":-1,"bogus":1}}"#,
        r#""provider":"cheap""#,
        r#""provider":{"max_price":{"prompt":0.01}},"provider":{}"#,
    ] {
        for fused in FORMS {
            let up = Upstream::start().await;
            let body = format!(
                r#"{{"model":"max",{provider},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let a = send_text(fused, &up, &body).await;
            assert_eq!(a.status, 200, "{body}: {}", a.json);
            assert!(a.decision.is_none());
            assert_eq!(a.attempts, "max=ok");
            assert_eq!(&up.received()[0].body[..], body.as_bytes());
        }
    }
}

/// A sentinel in `models`: the ranking that takes its place obeys the ceiling.
#[tokio::test]
async fn a_sentinel_in_models_ranks_under_the_ceiling() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let down = Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
        up.set("gpt-4o", down.clone()).set("mid", down);
        let body = json!({"model": "gpt-4o", "models": ["auto"],
            "messages": [{"role": "user", "content": hard()}],
            "provider": {"max_price": {"prompt": 1, "completion": 4}}});
        let a = send(fused, &up, &body).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.attempts, "gpt-4o=downtime, mid=downtime, mini=ok");
        let decision = a.decision.unwrap();
        assert_eq!(ranking(&decision), ["mid", "mini"]);
    }
}

/// Session affinity: the model that served the conversation is passed over when it is above
/// the request's ceiling, as one that no longer fits is.
#[tokio::test]
async fn a_pinned_model_above_the_ceiling_is_passed_over() {
    let router = || {
        AutoRouteLayer::new(catalog())
            .policy(policy_fn(
                |_: &PromptInfo<'_>, candidates: &[&ModelProfile]| {
                    // The strongest first.
                    let ids: Vec<Arc<str>> =
                        candidates.iter().rev().map(|m| m.id.clone()).collect();
                    Ranking::new(ids, 0.5, Cow::Borrowed("strongest"))
                },
            ))
            .session_affinity(SessionAffinity::new())
    };
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = router();
        let mut body = json!({"model": "auto", "session_id": "s-1",
            "messages": [{"role": "user", "content": "hi"}]});
        // Each turn through clones of the same layer, which share the conversations.
        let turn = |body: &Value| {
            let (auto, body) = (auto.clone(), body.to_string());
            let up = &up;
            async move { send_raw(fused, auto, FallbackLayer::new(), up, &body).await }
        };
        assert_eq!(turn(&body).await.attempts, "max=ok");
        let a = turn(&body).await;
        assert!(
            a.decision.unwrap().reason.starts_with("session affinity"),
            "pinned"
        );
        body["provider"] = json!({"max_price": {"prompt": 1, "completion": 4}});
        let a = turn(&body).await;
        assert_eq!(a.attempts, "mid=ok");
        let reason = a.decision.unwrap().reason;
        assert!(
            reason.contains("the session's model max passed over") && reason.contains("max_price"),
            "{reason}"
        );
    }
}

/// An explicit empty `models` is the per-request opt-out of fallbacks: the layer's
/// `default_fallbacks` are not added, nor, for `"model": "auto"`, the rest of the ranking.
#[tokio::test]
async fn an_empty_models_opts_out_of_fallbacks() {
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    for fused in FORMS {
        let fallback = || FallbackLayer::new().default_fallbacks(["mid"]);
        // A concrete model: the default fallbacks, unless `models` is empty.
        for (models, attempts, status) in [
            (None, "max=downtime, mid=ok", 200),
            (Some(json!([])), "max=downtime", 503),
        ] {
            let up = Upstream::start().await;
            up.set("max", down());
            let mut body = json!({"model": "max", "messages": [{"role": "user", "content": "hi"}]});
            if let Some(models) = models {
                body["models"] = models;
            }
            let auto = AutoRouteLayer::new(catalog());
            let a = send_raw(fused, auto, fallback(), &up, &body.to_string()).await;
            assert_eq!((a.status, &*a.attempts), (status, attempts), "{body}");
        }
        // `"model": "auto"`: the ranking is the chain, unless `models` is empty.
        for (models, attempts, status) in [
            (None, "max=downtime, mid=ok", 200),
            (Some(json!([])), "max=downtime", 503),
        ] {
            let up = Upstream::start().await;
            up.set("max", down());
            let mut body = auto(&hard(), Value::Null);
            if let Some(models) = models {
                body["models"] = models;
            }
            let auto = AutoRouteLayer::new(catalog());
            let a = send_raw(fused, auto, fallback(), &up, &body.to_string()).await;
            assert_eq!((a.status, &*a.attempts), (status, attempts), "{body}");
            assert_eq!(a.decision.unwrap().chosen.as_ref(), "max");
        }
    }
}
