//! Session affinity (`AutoRouteLayer::session_affinity`): a conversation stays on the model
//! that served it. Every case runs in both forms, an `AutoRouteLayer` in front of a
//! `FallbackLayer` and `FallbackLayer::auto_route`, over the hyper-util client against the
//! scripted upstream on real loopback sockets.

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tower_llm_router::auto_route::{
    policy_fn, Catalog, ModelProfile, PromptInfo, Ranking, RouteDecision, SessionAffinity,
    SessionScope,
};
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::{AutoRouteLayer, ErrorClass, FallbackLayer};

const PATH: &str = "/v1/chat/completions";

/// A text model with a small window, a mid one, a strong one with a large window.
fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("mini", 4_000, 0.1, 0.4),
        ModelProfile::new("mid", 32_000, 1.0, 4.0),
        ModelProfile::new("max", 200_000, 10.0, 30.0),
    ])
}

/// A router whose choice the test knows from the prompt alone: the strongest model first for
/// a last user message that says "hard", the cheapest first otherwise.
fn router() -> AutoRouteLayer {
    AutoRouteLayer::new(catalog()).policy(policy_fn(
        |prompt: &PromptInfo<'_>, candidates: &[&ModelProfile]| {
            let mut ids: Vec<Arc<str>> = candidates.iter().map(|m| m.id.clone()).collect();
            let hard = prompt.text.contains("hard");
            if hard {
                ids.reverse();
            }
            let reason = if hard { "hard" } else { "easy" };
            Ranking::new(ids, 0.5, Cow::Borrowed(reason))
        },
    ))
}

fn sticky(max_sessions: usize) -> AutoRouteLayer {
    router().session_affinity(SessionAffinity::new().max_sessions(max_sessions))
}

/// One request through the stack under test: a fresh service from clones of the same layers,
/// which share the store.
async fn send(
    fused: bool,
    auto: &AutoRouteLayer,
    fallback: &FallbackLayer,
    up: &Upstream,
    path: &str,
    body: &Value,
) -> http::Response<tower_llm_router::body::ResponseBody<hyper::body::Incoming>> {
    send_scoped(fused, auto, fallback, up, path, body, None).await
}

/// [`send`], the request carrying a [`SessionScope`] when one is given (as a layer in front
/// would put one, from the client's key).
async fn send_scoped(
    fused: bool,
    auto: &AutoRouteLayer,
    fallback: &FallbackLayer,
    up: &Upstream,
    path: &str,
    body: &Value,
    scope: Option<u64>,
) -> http::Response<tower_llm_router::body::ResponseBody<hyper::body::Incoming>> {
    let mut request = chat(&up.url(path), &body.to_string());
    if let Some(scope) = scope {
        request.extensions_mut().insert(SessionScope(scope));
    }
    through_form(fused, auto.clone(), fallback.clone(), up, request).await
}

/// One turn of a chat-completions conversation: the status, the decision and the model that
/// answered.
async fn turn(
    fused: bool,
    auto: &AutoRouteLayer,
    fallback: &FallbackLayer,
    up: &Upstream,
    body: &Value,
) -> (u16, RouteDecision, String) {
    let res = send(fused, auto, fallback, up, PATH, body).await;
    let decision = res
        .extensions()
        .get::<RouteDecision>()
        .cloned()
        .expect("an auto request carries its decision");
    (res.status().as_u16(), decision, model_header(&res))
}

/// The messages of a conversation: a system text, then user and assistant turns.
fn conversation(system: &str, users: &[&str]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, text) in users.iter().enumerate() {
        if i > 0 {
            messages.push(json!({"role": "assistant", "content": "an answer"}));
        }
        messages.push(json!({"role": "user", "content": text}));
    }
    json!({"model": "auto", "messages": messages})
}

const FORMS: [bool; 2] = [false, true];

#[tokio::test]
async fn turn_two_stays_on_turn_ones_model() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let fallback = FallbackLayer::new();
        let turn1 = conversation("Be terse.", &["a hard question"]);
        let turn2 = conversation("Be terse.", &["a hard question", "thanks"]);

        // Without affinity, the second turn's prompt alone goes to the cheap model.
        let plain = router();
        let (_, d, _) = turn(fused, &plain, &fallback, &up, &turn1).await;
        assert_eq!(&*d.chosen, "max");
        let (_, d, served) = turn(fused, &plain, &fallback, &up, &turn2).await;
        assert_eq!((&*d.chosen, &*served), ("mini", "mini"));

        let auto = sticky(100);
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn1).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "max", "max"));
        assert_eq!(d.reason, "hard", "a new conversation is routed as usual");
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "max", "max"));
        assert_eq!(
            d.reason,
            "session affinity: max served this conversation before (ranking: easy)"
        );
        // The rest of the ranking stays the fallback chain.
        let ranking: Vec<&str> = d.ranking.iter().map(|m| &**m).collect();
        assert_eq!(ranking, ["max", "mini", "mid"]);
        assert_eq!(up.models_received().last().map(|m| &**m), Some("max"));
    }
}

/// The opening is read in each API's shape: Anthropic's `system`, the Responses API's
/// `instructions` and `input`.
#[tokio::test]
async fn the_conversation_is_recognised_in_every_api_shape() {
    let turns = [
        (
            "/v1/messages",
            json!({"model": "auto", "max_tokens": 100, "system": "Be terse.",
                   "messages": [{"role": "user", "content": "a hard question"}]}),
            json!({"model": "auto", "max_tokens": 100, "system": "Be terse.",
                   "messages": [{"role": "user", "content": "a hard question"},
                                {"role": "assistant", "content": "an answer"},
                                {"role": "user", "content": "thanks"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "auto", "instructions": "Be terse.", "input": "a hard question"}),
            json!({"model": "auto", "instructions": "Be terse.",
                   "input": [{"role": "user", "content": "a hard question"},
                             {"role": "assistant", "content": "an answer"},
                             {"role": "user", "content": "thanks"}]}),
        ),
    ];
    for fused in FORMS {
        for (path, first, second) in &turns {
            let up = Upstream::start().await;
            let auto = sticky(100);
            let fallback = FallbackLayer::new();
            for body in [first, second] {
                let res = send(fused, &auto, &fallback, &up, path, body).await;
                assert_eq!(res.status(), 200, "{path}");
                assert_eq!(model_header(&res), "max", "{path}");
            }
        }
    }
}

#[tokio::test]
async fn two_conversations_are_independent() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let (_, d, _) = turn(
            fused,
            &auto,
            &fallback,
            &up,
            &conversation("A", &["hard one"]),
        )
        .await;
        assert_eq!(&*d.chosen, "max");
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("B", &["easy"])).await;
        assert_eq!(&*d.chosen, "mini");
        // Each stays on its own model, whatever its next prompt asks for.
        let b2 = conversation("B", &["easy", "now a hard one"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &b2).await;
        assert_eq!(&*d.chosen, "mini");
        let a2 = conversation("A", &["hard one", "thanks"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &a2).await;
        assert_eq!(&*d.chosen, "max");
    }
}

#[tokio::test]
async fn a_session_id_keys_the_conversation() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let with_id = |id: &str, text: &str| {
            json!({"model": "auto", "session_id": id,
                   "messages": [{"role": "user", "content": text}]})
        };
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &with_id("s-1", "hard")).await;
        assert_eq!(&*d.chosen, "max");
        // Another opening, the same id: the same conversation.
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &with_id("s-1", "thanks")).await;
        assert_eq!(&*d.chosen, "max");
        assert!(d.reason.starts_with("session affinity:"), "{}", d.reason);
        // The same opening, another id: another conversation.
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &with_id("s-2", "thanks")).await;
        assert_eq!(&*d.chosen, "mini");
        // The id stays in the body, for an upstream that reads it (OpenRouter).
        let sent: Value = serde_json::from_slice(&up.received().last().unwrap().body).unwrap();
        assert_eq!(sent["session_id"], "s-2");

        // An id longer than the bound, or not a string, is refused before any upstream.
        let before = up.received().len();
        for id in [json!("x".repeat(257)), json!(42)] {
            let body = json!({"model": "auto", "session_id": id,
                              "messages": [{"role": "user", "content": "hi"}]});
            let res = send(fused, &auto, &fallback, &up, PATH, &body).await;
            assert_eq!(res.status(), 400);
            let json: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
            assert!(is_openai_error(&json), "{json}");
            assert_eq!(json["error"]["code"], "invalid_session_id");
            assert_eq!(json["error"]["param"], "session_id");
        }
        assert_eq!(up.received().len(), before);
    }
}

#[tokio::test]
async fn the_model_that_served_after_a_fallback_is_pinned() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        up.set(
            "max",
            Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
        );
        let turn1 = conversation("S", &["a hard question"]);
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn1).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "max", "mid"));
        // `max` is back; the conversation stays on the model that answered it.
        up.set("max", Behavior::Ok);
        let turn2 = conversation("S", &["a hard question", "another hard one"]);
        let (_, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((&*d.chosen, &*served), ("mid", "mid"));
        assert!(
            d.reason.starts_with("session affinity: mid"),
            "{}",
            d.reason
        );
    }
}

/// A failed answer pins nothing: not the last model tried, which `ServedModel` names.
#[tokio::test]
async fn a_failed_answer_pins_nothing() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
        for model in ["mini", "mid", "max"] {
            up.set(model, down());
        }
        let turn1 = conversation("F", &["hard"]);
        let (status, _, served) = turn(fused, &auto, &fallback, &up, &turn1).await;
        assert_eq!(
            (status, &*served),
            (503, "mini"),
            "every model tried, `mini` last"
        );
        for model in ["mini", "mid", "max"] {
            up.set(model, Behavior::Ok);
        }
        let turn2 = conversation("F", &["hard", "hard again"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((&*d.chosen, &*d.reason), ("max", "hard"));
    }
}

#[tokio::test]
async fn a_pinned_model_that_no_longer_fits_is_passed_over_and_the_next_success_repins() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("L", &["easy"])).await;
        assert_eq!(&*d.chosen, "mini");
        // The conversation outgrows `mini`'s 4,000-token window.
        let long = "word ".repeat(5_000);
        let turn2 = conversation("L", &["easy", &long]);
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "mid", "mid"));
        assert!(
            d.reason
                .starts_with("easy; the session's model mini passed over: no longer fits"),
            "{}",
            d.reason
        );
        // The model that served it now holds the conversation, though this prompt alone
        // would go to `max`.
        let turn3 = conversation("L", &["easy", &long, "a hard one"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &turn3).await;
        assert_eq!(&*d.chosen, "mid");
        assert!(
            d.reason.starts_with("session affinity: mid"),
            "{}",
            d.reason
        );
    }
}

#[tokio::test]
async fn a_pinned_model_cooling_down_is_passed_over() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let health = Arc::new(InMemoryHealth::new());
        let fallback = FallbackLayer::new().health(health.clone());
        // Stacked, the router is given the store; fused, it takes the fallback layer's.
        let auto = if fused {
            sticky(100)
        } else {
            sticky(100).health(health.clone())
        };
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("C", &["hard"])).await;
        assert_eq!(&*d.chosen, "max");
        health.observe(
            "max",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(60))),
        );
        let turn2 = conversation("C", &["hard", "thanks"]);
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "mini", "mini"));
        assert!(
            d.reason
                .ends_with("the session's model max passed over: cooling down"),
            "{}",
            d.reason
        );
    }
}

#[tokio::test]
async fn pin_model_false_opts_a_request_out() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("P", &["hard"])).await;
        assert_eq!(&*d.chosen, "max");
        // Opted out: routed from its prompt, and its answer pins nothing.
        let mut turn2 = conversation("P", &["hard", "thanks"]);
        turn2["plugins"] = json!([{"id": "auto-router", "pin_model": false}]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!(&*d.chosen, "mini");
        assert_eq!(d.reason, "easy");
        // Still pinned to `max`; `pin_model: true` is the default.
        turn2["plugins"] = json!([{"id": "auto-router", "pin_model": true}]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!(&*d.chosen, "max");
        // With `enabled: false` too.
        turn2["plugins"] = json!([{"id": "auto-router", "enabled": false, "pin_model": false}]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!(&*d.chosen, "mini");
        // Without affinity configured, `pin_model: true` does nothing.
        turn2["plugins"] = json!([{"id": "auto-router", "pin_model": true}]);
        let plain = router();
        let (_, d, _) = turn(fused, &plain, &fallback, &up, &conversation("P", &["hard"])).await;
        assert_eq!(&*d.chosen, "max");
        let (_, d, _) = turn(fused, &plain, &fallback, &up, &turn2).await;
        assert_eq!(&*d.chosen, "mini");
    }
}

/// A later turn whose plugin excludes the conversation's model is not sent to it: the
/// request's patterns bind the session's model as they bind any other.
#[tokio::test]
async fn a_pinned_model_the_request_excludes_is_passed_over() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("X", &["hard"])).await;
        assert_eq!(&*d.chosen, "max");
        let mut turn2 = conversation("X", &["hard", "hard again"]);
        turn2["plugins"] = json!([{"id": "auto-router", "excluded_models": ["max"]}]);
        let (status, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((status, &*d.chosen, &*served), (200, "mid", "mid"));
        assert_eq!(
            d.reason,
            "hard; the session's model max passed over: not allowed for this request"
        );
        assert!(!d.ranking.iter().any(|m| &**m == "max"), "{:?}", d.ranking);
    }
}

/// Capacity 2, three conversations: the one answered longest ago is forgotten.
#[tokio::test]
async fn the_bound_holds() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(2);
        let fallback = FallbackLayer::new();
        for name in ["one", "two", "three"] {
            let (_, d, _) =
                turn(fused, &auto, &fallback, &up, &conversation(name, &["hard"])).await;
            assert_eq!(&*d.chosen, "max");
        }
        // The last two are remembered (each answer refreshes its own)...
        for name in ["three", "two"] {
            let next = conversation(name, &["hard", "thanks"]);
            let (_, d, _) = turn(fused, &auto, &fallback, &up, &next).await;
            assert_eq!(&*d.chosen, "max", "{name}");
        }
        // ...the first was forgotten when the third was pinned.
        let next = conversation("one", &["hard", "thanks"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &next).await;
        assert_eq!((&*d.chosen, &*d.reason), ("mini", "easy"));
    }
}

/// A first turn continues no conversation: one that opens as a remembered conversation did
/// (the same question asked again, or by another user) is routed by its own ranking and
/// `cost_tier`, not pinned to the model that served the other.
#[tokio::test]
async fn a_first_turn_sharing_an_opening_is_not_pinned() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let mut dear = conversation("F", &["the same question"]);
        dear["plugins"] = json!([{"id": "auto-router", "cost_tier": "max"}]);
        let (_, d, served) = turn(fused, &auto, &fallback, &up, &dear).await;
        assert_eq!((&*d.chosen, &*served), ("max", "max"));
        let mut cheap = conversation("F", &["the same question"]);
        cheap["plugins"] = json!([{"id": "auto-router", "cost_tier": "low"}]);
        let (_, d, served) = turn(fused, &auto, &fallback, &up, &cheap).await;
        assert_eq!((&*d.chosen, &*served), ("mini", "mini"), "{}", d.reason);
        assert!(!d.reason.contains("session"), "{}", d.reason);
        // The conversation's next turn stays on the model that served its opening last.
        let next = conversation("F", &["the same question", "and then?"]);
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &next).await;
        assert_eq!(&*d.chosen, "mini", "{}", d.reason);
        assert!(
            d.reason.starts_with("session affinity: mini"),
            "{}",
            d.reason
        );
    }
}

/// Conversations of different scopes are apart: a later turn that opens as another scope's
/// conversation did is routed by its own ranking, and within its own scope it stays.
#[tokio::test]
async fn a_scope_keeps_its_conversations_apart_from_other_scopes() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let decision = |res: &http::Response<_>| {
            res.extensions()
                .get::<RouteDecision>()
                .cloned()
                .expect("an auto request carries its decision")
        };
        let opening = conversation("Z", &["a hard question"]);
        let res = send_scoped(fused, &auto, &fallback, &up, PATH, &opening, Some(1)).await;
        assert_eq!(&*decision(&res).chosen, "max");
        let later = conversation("Z", &["a hard question", "thanks"]);
        for (scope, chosen) in [(Some(2), "mini"), (None, "mini"), (Some(1), "max")] {
            let res = send_scoped(fused, &auto, &fallback, &up, PATH, &later, scope).await;
            let d = decision(&res);
            assert_eq!(&*d.chosen, chosen, "scope {scope:?}: {}", d.reason);
            assert_eq!(d.reason.starts_with("session affinity"), scope == Some(1));
        }
    }
}

/// The session's model comes before a `cost_tier` band's models, which lead the rest of the
/// chain.
#[tokio::test]
async fn the_sessions_model_comes_before_a_cost_tier_band() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let (_, d, _) = turn(fused, &auto, &fallback, &up, &conversation("T", &["hard"])).await;
        assert_eq!(&*d.chosen, "max");
        let mut turn2 = conversation("T", &["hard", "more, hard"]);
        turn2["plugins"] = json!([{"id": "auto-router", "cost_tier": "low"}]);
        let (_, alone, _) = turn(fused, &router(), &fallback, &up, &turn2).await;
        assert_eq!(
            &*alone.chosen, "mini",
            "the band's model, without the session"
        );
        let (_, d, served) = turn(fused, &auto, &fallback, &up, &turn2).await;
        assert_eq!((&*d.chosen, &*served), ("max", "max"));
        assert_eq!(&*d.ranking[1], "mini");
        assert!(
            d.reason.starts_with("session affinity: max"),
            "{}",
            d.reason
        );
    }
}

/// A streamed turn pins the model that served it, as a non-streamed one does: the next turn,
/// streamed or not, stays on it.
#[tokio::test]
async fn a_streamed_turn_pins_its_model() {
    for fused in FORMS {
        let up = Upstream::start().await;
        up.set("max", Behavior::Stream(vec!["{}"]));
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let mut turn1 = conversation("S", &["a hard question"]);
        turn1["stream"] = json!(true);
        let res = send(fused, &auto, &fallback, &up, PATH, &turn1).await;
        assert_eq!((res.status().as_u16(), &*model_header(&res)), (200, "max"));
        let text = body_bytes(res.into_body()).await;
        assert!(text.ends_with(b"data: [DONE]\n\n"), "{text:?}");
        up.set("max", Behavior::Ok);
        let (_, d, served) = turn(
            fused,
            &auto,
            &fallback,
            &up,
            &conversation("S", &["a hard question", "thanks"]),
        )
        .await;
        assert_eq!(served, "max");
        assert!(
            d.reason.starts_with("session affinity: max"),
            "{}",
            d.reason
        );
    }
}

/// A Responses API turn sent with `previous_response_id` carries only its new input, so its
/// opening is not the conversation's: without a `session_id` it is routed alone; with one,
/// it stays on the model that served the conversation.
#[tokio::test]
async fn a_responses_turn_with_previous_response_id_needs_a_session_id() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let auto = sticky(100);
        let fallback = FallbackLayer::new();
        let path = "/v1/responses";
        for (session, expected) in [(None, "mini"), (Some("conv-7"), "max")] {
            let mut first = json!({"model": "auto", "input": "a hard question"});
            let mut next = json!({"model": "auto", "input": "thanks",
                                  "previous_response_id": "resp_1"});
            if let Some(id) = session {
                first["session_id"] = json!(id);
                next["session_id"] = json!(id);
            }
            let res = send(fused, &auto, &fallback, &up, path, &first).await;
            assert_eq!(model_header(&res), "max");
            let res = send(fused, &auto, &fallback, &up, path, &next).await;
            assert_eq!(res.status(), 200);
            assert_eq!(model_header(&res), expected, "session_id {session:?}");
        }
    }
}
