// The auto router's behaviour, shared by `tests/auto_route.rs` (an `AutoRouteLayer` in front
// of a `FallbackLayer`) and `tests/auto_route_in_fallback.rs` (`FallbackLayer::auto_route`):
// each defines `stack!($auto, $up)` (and `stack!($auto, $fallback, $up)`, with a configured
// `FallbackLayer`) as one of the two forms below, the stack under test over the hyper-util
// client, and then includes this file.

/// An `AutoRouteLayer` in front of a `FallbackLayer`.
#[allow(unused_macros)] // each test file uses one form or both
macro_rules! stacked {
    ($auto:expr, $up:expr) => {
        stacked!($auto, FallbackLayer::new(), $up)
    };
    ($auto:expr, $fallback:expr, $up:expr) => {
        ServiceBuilder::new()
            .layer($auto)
            .layer($fallback)
            .buffer(8)
            .service(routed_client($up.addr, vec![]))
    };
}

/// The same routing as one layer: `FallbackLayer::auto_route`.
#[allow(unused_macros)] // each test file uses one form or both
macro_rules! fused {
    ($auto:expr, $up:expr) => {
        fused!($auto, FallbackLayer::new(), $up)
    };
    ($auto:expr, $fallback:expr, $up:expr) => {
        ServiceBuilder::new()
            .layer($fallback.auto_route($auto))
            .buffer(8)
            .service(routed_client($up.addr, vec![]))
    };
}

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{
    AsyncRoutePolicy, Capabilities, Catalog, DefaultRouter, ModelProfile, PromptInfo, Ranking,
    RemoteWithFallback, RouteDecision, RouteFuture,
};
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::{AutoRouteLayer, ErrorClass, FallbackLayer};

const PATH: &str = "/v1/chat/completions";

fn caps(vision: bool, tools: bool, structured_output: bool) -> Capabilities {
    Capabilities {
        vision,
        audio: false,
        video: false,
        file: false,
        tools,
        structured_output,
    }
}

/// A small catalog: a cheap text model with a small window, a mid model with tools and
/// vision, an expensive strong model with everything.
fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("mini", 4_000, 0.1, 0.4).with_capabilities(caps(false, false, false)),
        ModelProfile::new("mid", 32_000, 1.0, 4.0).with_capabilities(caps(true, true, false)),
        ModelProfile::new("max", 200_000, 10.0, 30.0).with_capabilities(caps(true, true, true)),
    ])
}

fn user(text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
}

async fn send(
    auto: AutoRouteLayer,
    up: &Upstream,
    body: Value,
) -> (http::StatusCode, Option<RouteDecision>, String, Value) {
    send_to(auto, up, PATH, &body).await
}

/// [`send`] to another endpoint (`/v1/responses`, `/v1/messages`).
async fn send_to(
    auto: AutoRouteLayer,
    up: &Upstream,
    path: &str,
    body: &Value,
) -> (http::StatusCode, Option<RouteDecision>, String, Value) {
    let res = stack!(auto, up)
        .oneshot(chat(&up.url(path), &body.to_string()))
        .await
        .unwrap();
    let status = res.status();
    let decision = res.extensions().get::<RouteDecision>().cloned();
    let attempts = attempts_header(&res);
    let json = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap_or(Value::Null);
    (status, decision, attempts, json)
}

#[tokio::test]
async fn a_concrete_model_passes_through_untouched() {
    let up = Upstream::start().await;
    let original = r#"{"model":"mid" , "plugins":[{"id":"auto-router","allowed_models":["x"]}],"messages":[]}"#;
    let res = stack!(AutoRouteLayer::new(catalog()), up)
        .oneshot(chat(&up.url(PATH), original))
        .await
        .unwrap();
    assert!(res.extensions().get::<RouteDecision>().is_none());
    assert_eq!(attempts_header(&res), "mid=ok");
    assert_eq!(
        &up.received()[0].body[..],
        original.as_bytes(),
        "byte for byte"
    );
}

#[tokio::test]
async fn both_sentinels_trigger_and_the_choice_is_written_into_the_body() {
    for sentinel in ["auto", "openrouter/auto"] {
        let up = Upstream::start().await;
        let mut body = user("hi there");
        body["model"] = json!(sentinel);
        let (status, decision, attempts, answer) =
            send(AutoRouteLayer::new(catalog()), &up, body).await;
        assert_eq!(status, 200);
        let decision = decision.expect("the decision is a response extension");
        assert_eq!(attempts, format!("{}=ok", decision.chosen));
        assert_eq!(answer["model"], &*decision.chosen);
        let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
        assert_eq!(sent["model"], &*decision.chosen);
        assert_eq!(
            sent["messages"],
            json!([{"role":"user","content":"hi there"}])
        );
        assert!(!decision.reason.is_empty());
    }
}

#[tokio::test]
async fn a_custom_sentinel() {
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["model"] = json!("router");
    let (_, decision, _, _) =
        send(AutoRouteLayer::new(catalog()).sentinel("router"), &up, body).await;
    assert!(decision.is_some());
    let (_, decision, attempts, _) = send(
        AutoRouteLayer::new(catalog()).sentinel("router"),
        &up,
        user("hello"),
    )
    .await;
    assert!(
        decision.is_none(),
        "plain `auto` is now a model name like any other"
    );
    assert_eq!(attempts, "auto=ok");
}

/// A catalog may list the sentinel itself (OpenRouter's list has `openrouter/auto`, cheap to
/// the eye: no price of its own). Written into `model`, it would be routed again upstream, so
/// it is never a candidate, whichever sentinel the layer answers to.
#[tokio::test]
async fn the_sentinel_is_never_chosen_even_when_the_catalog_lists_it() {
    let with = |ids: &[&str]| {
        let listed = ids.iter().map(|id| {
            ModelProfile::new(*id, 2_000_000, 0.0, 0.0).with_capabilities(Capabilities::ALL)
        });
        Catalog::from_profiles(listed.chain(catalog().models().iter().cloned()))
    };
    for (auto, sentinel) in [
        (AutoRouteLayer::new(with(&["openrouter/auto"])), "auto"),
        (AutoRouteLayer::new(with(&["openrouter/auto"])), "openrouter/auto"),
        (AutoRouteLayer::new(with(&["router"])).sentinel("router"), "router"),
    ] {
        let up = Upstream::start().await;
        let mut body = user("hi!");
        body["model"] = json!(sentinel);
        let (status, decision, attempts, _) = send(auto, &up, body).await;
        assert_eq!(status, 200);
        let decision = decision.unwrap();
        assert_eq!(&*decision.chosen, "mini", "{sentinel}: {:?}", decision.ranking);
        assert!(
            !decision
                .ranking
                .iter()
                .any(|m| &**m == "openrouter/auto" || &**m == "router"),
            "{:?}",
            decision.ranking
        );
        assert_eq!(attempts, "mini=ok");
        assert_eq!(up.received()[0].model.as_deref(), Some("mini"));
    }
}

#[tokio::test]
async fn the_context_window_is_a_hard_constraint() {
    let up = Upstream::start().await;
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(800); // ~7k tokens
    let (status, decision, _, _) = send(AutoRouteLayer::new(catalog()), &up, user(&long)).await;
    assert_eq!(status, 200);
    let decision = decision.unwrap();
    assert!(
        !decision.ranking.iter().any(|m| &**m == "mini"),
        "{:?}",
        decision.ranking
    );
    // max_tokens counts too.
    let mut body = user("short");
    body["max_tokens"] = json!(100_000);
    let (_, decision, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(decision.unwrap().ranking, vec![Arc::<str>::from("max")]);
    // So do tool definitions and the arguments of earlier calls (each about 40k tokens here,
    // over mid's 32k window), though the prompt itself is short.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(4_000);
    let mut body = user("short");
    body["tools"] = json!([{"type":"function","function":{"name":"f","description":long}}]);
    let (_, decision, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(decision.unwrap().ranking, vec![Arc::<str>::from("max")]);
    let call = json!([{"id":"c1","type":"function","function":{"name":"f","arguments":long}}]);
    let body = json!({"model": "auto", "messages": [
        {"role": "assistant", "content": null, "tool_calls": call},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "user", "content": "short"},
    ]});
    let (_, decision, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(decision.unwrap().ranking, vec![Arc::<str>::from("max")]);
}

/// Each image counts about 1.1k tokens against the context window: thirty of them, with a short
/// text, are more than mid's 32k window holds, though mid takes images.
#[tokio::test]
async fn images_count_against_the_context_window() {
    let up = Upstream::start().await;
    let image = json!({"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}});
    let with_images = |n: usize| {
        let mut content = vec![json!({"type":"text","text":"compare these"})];
        content.extend(std::iter::repeat_n(image.clone(), n));
        json!({"model":"auto","max_tokens":100,"messages":[{"role":"user","content":content}]})
    };
    let (_, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, with_images(2)).await;
    let ranking = d.unwrap().ranking;
    assert!(ranking.iter().any(|m| &**m == "mid"), "{ranking:?}");
    let (_, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, with_images(30)).await;
    assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("max")]);
}

#[tokio::test]
async fn images_need_vision_tools_need_tools_and_schemas_need_structured_output() {
    let up = Upstream::start().await;
    let image = json!({"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]});
    let (_, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, image).await;
    let ranking = d.unwrap().ranking;
    assert!(
        !ranking.iter().any(|m| &**m == "mini") && ranking.len() == 2,
        "{ranking:?}"
    );

    let mut tools = user("what's the weather in Paris?");
    tools["tools"] =
        json!([{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}]);
    let (_, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, tools).await;
    let ranking = d.unwrap().ranking;
    assert!(
        !ranking.iter().any(|m| &**m == "mini") && ranking.len() == 2,
        "{ranking:?}"
    );

    let mut schema = user("give me a person");
    schema["response_format"] =
        json!({"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object"}}});
    let (_, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, schema).await;
    assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("max")]);
}

/// An `input_audio` part needs a model that takes audio, a video part one that takes video: a
/// text model answers them with an error, however cheap it is.
#[tokio::test]
async fn audio_and_video_need_a_model_that_takes_them() {
    let audio = json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}});
    let video = json!({"type": "video_url", "video_url": {"url": "https://youtu.be/dQw4w9WgXcQ"}});
    let input_video = json!({"type": "input_video", "video_url": {"url": "data:video/mp4;base64,AAAA"}});
    let hearing = Capabilities {
        audio: true,
        ..Capabilities::default()
    };
    let seeing = Capabilities {
        video: true,
        ..Capabilities::default()
    };
    for (part, caps, what) in [
        (audio, hearing, "audio"),
        (video, seeing, "video"),
        (input_video, seeing, "video"),
    ] {
        let up = Upstream::start().await;
        let able = ModelProfile::new("able", 128_000, 2.5, 10.0).with_capabilities(caps);
        let catalog = Catalog::from_profiles(catalog().models().iter().cloned().chain([able]));
        let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what happens here?"}, part]}]});
        let (status, d, attempts, _) =
            send(AutoRouteLayer::new(catalog), &up, body.clone()).await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("able")]);
        assert_eq!(attempts, "able=ok");
        // Without such a model nothing fits, and the 400 says why.
        let (status, _, _, error) = send(AutoRouteLayer::new(self::catalog()), &up, body).await;
        assert_eq!(status, 400);
        assert_eq!(error["error"]["code"], "no_model_fits");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(what),
            "{error}"
        );
        assert_eq!(up.received().len(), 1);
    }
}

/// A request whose `max_tokens` (or `max_completion_tokens`) is over a model's output limit
/// fails upstream there: it goes to a model that can write that much, or gets a 400 that says
/// so.
#[tokio::test]
async fn a_completion_over_a_models_output_limit_goes_elsewhere() {
    let short = ModelProfile::new("short", 200_000, 0.1, 0.4).with_max_output_tokens(4_096);
    let long = ModelProfile::new("long", 200_000, 3.0, 15.0).with_max_output_tokens(64_000);
    for field in ["max_tokens", "max_completion_tokens"] {
        let up = Upstream::start().await;
        let mut body = user("hello");
        body[field] = json!(8_000);
        let both = Catalog::from_profiles([short.clone(), long.clone()]);
        let (status, d, attempts, _) = send(AutoRouteLayer::new(both), &up, body.clone()).await;
        assert_eq!(status, 200, "{field}");
        assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("long")], "{field}");
        assert_eq!(attempts, "long=ok");
        // Within the limit, the cheap model serves it.
        body[field] = json!(4_096);
        let both = Catalog::from_profiles([short.clone(), long.clone()]);
        let (status, d, _, _) = send(AutoRouteLayer::new(both), &up, body.clone()).await;
        assert_eq!(status, 200, "{field}");
        assert_eq!(d.unwrap().chosen.as_ref(), "short", "{field}");

        body[field] = json!(8_000);
        let only = Catalog::from_profiles([short.clone()]);
        let (status, _, _, error) = send(AutoRouteLayer::new(only), &up, body).await;
        assert_eq!(status, 400, "{field}");
        assert_eq!(error["error"]["code"], "no_model_fits");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("short: ") && message.contains("8000") && message.contains("4096"),
            "{message}"
        );
        assert!(message.contains("output"), "{message}");
        assert_eq!(up.received().len(), 2, "{field}");
    }
}

/// A `file` part (a PDF) needs a model that reads files: a text model answers it with an
/// error, however cheap it is. And a file or an audio part takes tokens of the window: a
/// model whose window the text alone fits is not chosen for it.
#[tokio::test]
async fn files_need_a_model_that_reads_them_and_take_room_in_the_window() {
    let file = json!({"type": "file", "file": {"filename": "a.pdf",
        "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}});
    let audio = json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}});
    let reads: Capabilities = serde_json::from_str(r#"["file"]"#).unwrap();
    let up = Upstream::start().await;
    let body = |part: &Value| {
        json!({"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "summarise this"}, part]}]})
    };
    let reader = ModelProfile::new("reader", 128_000, 2.5, 10.0).with_capabilities(reads);
    let catalog_with = |extra: ModelProfile| {
        Catalog::from_profiles(self::catalog().models().iter().cloned().chain([extra]))
    };
    let (status, d, attempts, _) =
        send(AutoRouteLayer::new(catalog_with(reader)), &up, body(&file)).await;
    assert_eq!(status, 200);
    assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("reader")]);
    assert_eq!(attempts, "reader=ok");
    let (status, _, _, error) =
        send(AutoRouteLayer::new(self::catalog()), &up, body(&file)).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "no_model_fits");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("file"),
        "{error}"
    );

    // A window the text and the completion reserve fit, not a page or a minute of audio or
    // video too.
    let video = json!({"type": "video_url", "video_url": {"url": "https://youtu.be/dQw4w9WgXcQ"}});
    let hears = Capabilities {
        audio: true,
        video: true,
        ..reads
    };
    let window = 1_024 + 200;
    let small = ModelProfile::new("small-window", window, 0.1, 0.4).with_capabilities(hears);
    let large = ModelProfile::new("large-window", 128_000, 2.5, 10.0).with_capabilities(hears);
    for part in [&file, &audio, &video] {
        let both = Catalog::from_profiles([small.clone(), large.clone()]);
        let (status, d, _, _) = send(AutoRouteLayer::new(both), &up, body(part)).await;
        assert_eq!(status, 200);
        assert_eq!(d.unwrap().ranking, vec![Arc::<str>::from("large-window")], "{part}");
    }
    assert_eq!(up.received().len(), 4);
}

/// With OpenRouter's whole list (300 models and more) the 400 named every one, tens of
/// kilobytes of error message: it names a few and counts the rest.
#[tokio::test]
async fn when_nothing_of_a_long_list_fits_the_400_stays_short() {
    let up = Upstream::start().await;
    let many = Catalog::from_profiles(
        (0..300).map(|i| ModelProfile::new(format!("vendor/model-{i:03}"), 128_000, 1.0, 2.0)),
    );
    let mut body = user("hello");
    body["max_tokens"] = json!(10_000_000);
    let (status, _, _, error) = send(AutoRouteLayer::new(many), &up, body).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "no_model_fits");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.len() < 2_000, "{} bytes: {message}", message.len());
    assert!(message.contains("vendor/model-000: "), "{message}");
    assert!(!message.contains("vendor/model-299"), "{message}");
    let named = message.matches("vendor/model-").count();
    assert!(message.contains(&format!("and {} more", 300 - named)), "{message}");
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn when_nothing_fits_a_400_says_why() {
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["max_tokens"] = json!(10_000_000);
    let (status, _, _, error) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "no_model_fits");
    let message = error["error"]["message"].as_str().unwrap();
    for model in ["mini", "mid", "max"] {
        assert!(message.contains(model), "{message}");
    }
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn the_plugin_narrows_candidates_and_is_removed_before_upstream() {
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["plugins"] = json!([{"id":"web"},{"id":"auto-router","allowed_models":["m*"],"excluded_models":["mini"]}]);
    let (status, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(
        d.unwrap().ranking,
        vec![Arc::<str>::from("mid"), Arc::from("max")]
    );
    let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
    assert_eq!(
        sent["plugins"],
        json!([{"id":"web"}]),
        "only the auto-router entry is removed"
    );
}

/// `"enabled": false` drops the entry's model filter, as the module docs say: the request is
/// still routed among every candidate (as OpenRouter routes `openrouter/auto` without the
/// plugin), and the entry is still removed before the upstream.
#[tokio::test]
async fn a_disabled_plugin_filters_no_model() {
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["plugins"] = json!([{"id":"auto-router","enabled":false,"allowed_models":["max"]}]);
    let (status, d, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(d.map(|d| d.chosen), Some("mini".into()));
    let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
    assert!(sent.get("plugins").is_none(), "{sent}");
}

/// OpenRouter's docs put the router's options in `plugins`; OpenAI refuses a body with an
/// argument it does not know ("Unrecognized request argument supplied: plugins"). When the
/// `auto-router` entry was the only one, the layer consumed all of `plugins`, and removes the
/// member as `FallbackLayer` removes `models`: the upstream got `"plugins":[]`, and OpenAI
/// refused every model of the chain. Other entries, and a `plugins` the layer did not read
/// from, reach the upstream as sent.
#[tokio::test]
async fn a_plugins_member_emptied_by_the_layer_is_removed() {
    let cases = [
        (
            r#"{"model":"auto","plugins":[{"id":"auto-router","allowed_models":["m*"]}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"CHOSEN","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}] , "model":"auto","plugins":[ {"id":"auto-router"} ] }"#,
            r#"{"messages":[{"role":"user","content":"hi"}] , "model":"CHOSEN" }"#,
        ),
        (
            r#"{"model":"auto","models":["mid"],"plugins":[{"id":"auto-router"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"CHOSEN","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            r#"{"model":"auto","plugins":[{"id":"web"},{"id":"auto-router"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"CHOSEN","plugins":[{"id":"web"}],"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            r#"{"model":"auto","plugins":[],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"CHOSEN","plugins":[],"messages":[{"role":"user","content":"hi"}]}"#,
        ),
    ];
    for (body, expected) in cases {
        let up = Upstream::start().await;
        let res = stack!(AutoRouteLayer::new(catalog()), up)
            .oneshot(chat(&up.url(PATH), body))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{body}");
        let chosen = res.extensions().get::<RouteDecision>().unwrap().chosen.clone();
        let sent = String::from_utf8(up.received()[0].body.to_vec()).unwrap();
        assert_eq!(sent, expected.replace("CHOSEN", &chosen), "{body}");
    }
}

#[tokio::test]
async fn bad_plugin_options_get_a_400() {
    for plugins in [
        json!([{"id":"auto-router","allowed_models":"gpt-*"}]),
        json!([{"id":"auto-router","excluded_models":[1,2]}]),
        json!([{"id":"auto-router","allowed_models":["nothing-matches/*"]}]),
        json!("not-an-array"),
        // Two entries: which would count is a guess.
        json!([{"id":"auto-router","allowed_models":["max"]},{"id":"auto-router","excluded_models":["max"]}]),
        // OpenRouter's limits: 65,536 characters of patterns in all (here 66 x 1,000).
        json!([{"id":"auto-router","excluded_models":vec!["x".repeat(1_000); 66]}]),
        // A pattern over 1,024 characters, counted in characters (1,000 of them, 3,000 bytes).
        json!([{"id":"auto-router","allowed_models":["€".repeat(1_025)]}]),
        // The options OpenRouter documents, with wrong values.
        json!([{"id":"auto-router","cost_tier":"ultra"}]),
        json!([{"id":"auto-router","cost_quality_tradeoff":11}]),
        json!([{"id":"auto-router","pin_model":"yes"}]),
        // A key OpenRouter does not document: a misspelt `allowed_models`, read as absent,
        // would let the request go to any model.
        json!([{"id":"auto-router","allowed_model":["mini"]}]),
        json!([{"id":"auto-router","frobnicate":true}]),
    ] {
        let up = Upstream::start().await;
        let mut body = user("hello");
        body["plugins"] = plugins.clone();
        let (status, _, _, error) = send(AutoRouteLayer::new(catalog()), &up, body).await;
        assert_eq!(status, 400, "{plugins}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(up.received().is_empty());
    }
    // The same options with good values are accepted; a pattern of 1,000 three-byte
    // characters is within the limit.
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["plugins"] = json!([{"id":"auto-router","cost_tier":"xhigh","cost_quality_tradeoff":7,
        "pin_model":false,"excluded_models":["€".repeat(1_000)]}]);
    let (status, decision, _, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 200);
    assert!(decision.is_some());
}

/// A bad option's 400 names the option, and carries no parser position (it was "invalid type:
/// string \"gpt-*\", expected a sequence at line 1 column 38", a position in the plugin entry
/// that reads as one in the body, and no word of which option).
#[tokio::test]
async fn a_bad_plugin_option_is_named_in_the_400() {
    for (plugins, option) in [
        (json!([{"id":"auto-router","allowed_models":"gpt-*"}]), "allowed_models"),
        (json!([{"id":"auto-router","excluded_models":[1,2]}]), "excluded_models"),
        (json!([{"id":"auto-router","cost_tier":"ultra"}]), "cost_tier"),
        (json!([{"id":"web"},{"id":"auto-router","pin_model":"yes"}]), "pin_model"),
        (json!([{"id":"auto-router","enabled":0}]), "enabled"),
        (json!([{"id":"auto-router","cost_quality_tradeoff":"7"}]), "cost_quality_tradeoff"),
        // An empty pattern matches no model: a mistake, not a filter (it was a 400
        // `no_candidate_model` for `allowed_models`, and ignored in `excluded_models`).
        (json!([{"id":"auto-router","allowed_models":[""]}]), "allowed_models"),
        (json!([{"id":"auto-router","allowed_models":["mini",""]}]), "allowed_models"),
        (json!([{"id":"auto-router","excluded_models":[""]}]), "excluded_models"),
    ] {
        let up = Upstream::start().await;
        let mut body = user("hello");
        body["plugins"] = plugins.clone();
        let (status, _, _, error) = send(AutoRouteLayer::new(catalog()), &up, body).await;
        assert_eq!(status, 400, "{plugins}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("invalid auto-router plugin options: `{option}`: ")),
            "{message}"
        );
        assert!(!message.contains(" at line "), "{message}");
        assert_eq!(error["error"]["code"], "invalid_plugin");
        assert_eq!(error["error"]["param"], "plugins");
    }
    // An unknown key is named too, with the keys that are known.
    let up = Upstream::start().await;
    let mut body = user("hello");
    body["plugins"] = json!([{"id":"auto-router","allowed_model":["mini"]}]);
    let (status, _, _, error) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 400);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown field `allowed_model`") && message.contains("`allowed_models`"),
        "{message}"
    );
}

#[tokio::test]
async fn the_ranking_follows_the_cost_trade_off() {
    let up = Upstream::start().await;
    let hard = "Prove that there are infinitely many primes p such that p+2 is also prime is an open problem; \
        instead prove rigorously, step by step, that there are infinitely many primes congruent to 3 mod 4, \
        and then derive the asymptotic density using Dirichlet's theorem. Show all the algebra.";
    let no_strong = AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().strong_share(0.0));
    let (_, d, _, _) = send(no_strong, &up, user(hard)).await;
    assert_ne!(
        &*d.unwrap().chosen,
        "max",
        "no share for the strongest tier"
    );
    let cost_first = AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().cost_weight(100.0));
    let (_, d, _, _) = send(cost_first, &up, user(hard)).await;
    assert_eq!(
        &*d.unwrap().chosen,
        "mini",
        "a huge cost weight: the cheapest fitting model"
    );
    let strong_first =
        AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().strong_share(1.0));
    let (_, d, _, _) = send(strong_first, &up, user(hard)).await;
    assert_eq!(
        &*d.unwrap().chosen,
        "max",
        "every request may go to the strongest tier"
    );
    let (_, easy, _, _) = send(AutoRouteLayer::new(catalog()), &up, user("hi!")).await;
    let (_, hard_default, _, _) = send(AutoRouteLayer::new(catalog()), &up, user(hard)).await;
    let price = |m: &str| catalog().get(m).unwrap().blended_price();
    assert!(
        price(&easy.unwrap().chosen) <= price(&hard_default.unwrap().chosen),
        "a greeting never goes to a dearer model than a proof"
    );
}

/// `max_fallbacks(0)` hands over no fallback: the chosen model alone is tried, and its failure
/// is the answer. Without the setter (3 by default) the ranking's next model is tried.
#[tokio::test]
async fn max_fallbacks_zero_tries_the_chosen_model_alone() {
    let up = Upstream::start().await;
    up.set("mini", Behavior::Status(503, vec![], "down"));
    let alone = AutoRouteLayer::new(catalog()).max_fallbacks(0);
    let (status, d, attempts, _) = send(alone, &up, user("hello")).await;
    assert_eq!((status.as_u16(), attempts.as_str()), (503, "mini=downtime"));
    assert_eq!(d.map(|d| d.chosen), Some("mini".into()));
    let (status, _, attempts, _) = send(AutoRouteLayer::new(catalog()), &up, user("hello")).await;
    assert_eq!(status, 200);
    assert!(attempts.starts_with("mini=downtime, "), "{attempts}");
}

#[tokio::test]
async fn auto_then_fallback_through_the_ranking_over_real_sockets() {
    let up = Upstream::start().await;
    let policy = |_: &PromptInfo<'_>, c: &[&ModelProfile]| {
        let mut ids: Vec<Arc<str>> = c.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        Ranking::new(ids, 0.5, Cow::Borrowed("alphabetical"))
    };
    up.set("max", Behavior::Status(503, vec![], "down"));
    up.set(
        "mid",
        Behavior::Status(
            429,
            vec![],
            r#"{"error":{"message":"Rate limit","code":429}}"#,
        ),
    );
    let (status, d, attempts, answer) = send(
        AutoRouteLayer::new(catalog()).policy(policy),
        &up,
        user("hello"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(d.unwrap().reason, "alphabetical");
    assert_eq!(attempts, "max=downtime, mid=rate_limited, mini=ok");
    assert_eq!(answer["model"], "mini");
    // The fallback chain travelled in an extension: no `models` was ever in the body.
    for r in up.received() {
        let sent: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(sent.get("models").is_none());
    }
}

/// "Try these, then let the router pick": the sentinel in `models` is replaced by the ranking
/// where it stands, the body keeps the client's `model`, and no attempt names the sentinel.
#[tokio::test]
async fn a_sentinel_in_models_falls_back_through_the_ranking_in_its_place() {
    let alphabetical = |_: &PromptInfo<'_>, c: &[&ModelProfile]| {
        let mut ids: Vec<Arc<str>> = c.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        Ranking::new(ids, 0.5, Cow::Borrowed("alphabetical"))
    };
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    for sentinel in ["auto", "openrouter/auto"] {
        let up = Upstream::start().await;
        up.set("gpt-4o", down()).set("claude", down()).set("max", down());
        let body = json!({"model": "gpt-4o", "models": ["claude", sentinel],
            "messages": [{"role": "user", "content": "hi"}]});
        let auto = AutoRouteLayer::new(catalog()).policy(alphabetical);
        let (status, d, attempts, answer) = send(auto, &up, body).await;
        assert_eq!(status, 200);
        // Room for two of the ranking after the client's own `claude` (max_fallbacks 3).
        assert_eq!(
            attempts,
            "gpt-4o=downtime, claude=downtime, max=downtime, mid=ok"
        );
        assert_eq!(answer["model"], "mid");
        let d = d.expect("the decision is a response extension");
        assert_eq!((&*d.requested, &*d.chosen), ("gpt-4o", "max"));
        assert_eq!(
            d.reason,
            format!("alphabetical; in place of `{sentinel}` in `models`: max, mid")
        );
        for r in up.received() {
            let sent: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(sent.get("models").is_none(), "{sent}");
        }
    }
}

/// Alphabetical order, whatever the prompt: `max`, `mid`, `mini`.
fn alphabetical(_: &PromptInfo<'_>, c: &[&ModelProfile]) -> Ranking {
    let mut ids: Vec<Arc<str>> = c.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    Ranking::new(ids, 0.5, Cow::Borrowed("alphabetical"))
}

/// Sends `body` through the auto router (alphabetical) and `fallback`; the status, the
/// attempts header and the answer's JSON.
async fn send_through(fallback: FallbackLayer, up: &Upstream, body: Value) -> (u16, String, Value) {
    let auto = AutoRouteLayer::new(catalog()).policy(alphabetical);
    let res = stack!(auto, fallback, up)
        .oneshot(chat(&up.url(PATH), &body.to_string()))
        .await
        .unwrap();
    let status = res.status().as_u16();
    let attempts = attempts_header(&res);
    let json = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap_or(Value::Null);
    (status, attempts, json)
}

/// The models a client names get the same answer whether `models` holds the sentinel or not:
/// more than `max_models` of them, or one `allow_models` refuses, is the same 400, and the
/// upstream is not called. Before, with the sentinel, they went in the hand-over as this side's
/// fallbacks: cut at the cap, or left out, without a word.
#[tokio::test]
async fn the_clients_own_models_get_the_same_400s_with_a_sentinel_in_models() {
    let too_many = FallbackLayer::new().max_models(2);
    let allowed = FallbackLayer::new().allow_models(["gpt-4o", "mi*", "max"]);
    let cases = [
        (too_many, vec!["claude", "gemini"], "too_many_models"),
        (allowed, vec!["claude"], "model_not_allowed"),
    ];
    for (fallback, models, code) in cases {
        let mut answers = Vec::new();
        for with_sentinel in [false, true] {
            let up = Upstream::start().await;
            let mut models: Vec<&str> = models.to_vec();
            if with_sentinel {
                models.push("auto");
            }
            let body = json!({"model": "gpt-4o", "models": models,
                "messages": [{"role": "user", "content": "hi"}]});
            let (status, _, error) = send_through(fallback.clone(), &up, body).await;
            assert_eq!((status, error["error"]["code"].as_str()), (400, Some(code)), "{error}");
            assert!(is_openai_error(&error), "{error}");
            assert!(up.received().is_empty(), "the upstream is not called");
            answers.push(error);
        }
        assert_eq!(answers[0], answers[1], "the same answer with the sentinel");
    }
}

/// The router's own additions are cut to fit `max_models` and left out where `allow_models`
/// refuses them; the client's models keep their places after the sentinel. Before, the cap cut
/// the chain at its end, the client's `claude` included.
#[tokio::test]
async fn the_rankings_additions_make_room_for_the_clients_models() {
    let up = Upstream::start().await;
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    up.set("gpt-4o", down()).set("max", down()).set("mid", down());
    let body = json!({"model": "gpt-4o", "models": ["auto", "claude"],
        "messages": [{"role": "user", "content": "hi"}]});
    // Room for one of the ranking: `max`, the first.
    let (status, attempts, answer) =
        send_through(FallbackLayer::new().max_models(3), &up, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "gpt-4o=downtime, max=downtime, claude=ok");
    assert_eq!(answer["model"], "claude");
    // `max` not allowed: the next of the ranking in its place.
    let fallback = FallbackLayer::new()
        .max_models(3)
        .allow_models(["gpt-4o", "claude", "mi*"]);
    let (status, attempts, _) = send_through(fallback, &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "gpt-4o=downtime, mid=downtime, claude=ok");
}

/// `keep_models(true)` keeps the `models` the client sent, without the sentinel: no upstream
/// knows it (or, as `openrouter/auto`, it would route again there), and the ranking is this
/// side's, as it is for `"model": "auto"`. Before, the upstream got no `models` at all.
#[tokio::test]
async fn keep_models_keeps_the_clients_models_without_the_sentinel() {
    let up = Upstream::start().await;
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    up.set("gpt-4o", down()).set("claude", down());
    let body = json!({"model": "gpt-4o", "models": ["claude", "auto"],
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, attempts, _) =
        send_through(FallbackLayer::new().keep_models(true), &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "gpt-4o=downtime, claude=downtime, max=ok");
    let received = up.received();
    assert_eq!(received.len(), 3);
    for r in received {
        let sent: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(sent["models"], json!(["claude"]), "{sent}");
    }
}

/// `"model": "auto"` with `auto` in `models` too routes once: the choice in `model`, the
/// client's models, then the rest of the same ranking where the sentinel stood.
#[tokio::test]
async fn a_sentinel_in_model_and_in_models_routes_once() {
    let up = Upstream::start().await;
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    up.set("max", down()).set("mini", down());
    let strongest = |_: &PromptInfo<'_>, c: &[&ModelProfile]| {
        let ids = c.iter().rev().map(|m| m.id.clone()).collect();
        Ranking::new(ids, 0.5, Cow::Borrowed("strongest first"))
    };
    let body = json!({"model": "auto", "models": ["mini", "auto"],
        "messages": [{"role": "user", "content": "hi"}]});
    let auto = AutoRouteLayer::new(catalog()).policy(strongest);
    let (status, d, attempts, _) = send(auto, &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "max=downtime, mini=downtime, mid=ok");
    let d = d.unwrap();
    assert_eq!((&*d.requested, &*d.chosen), ("auto", "max"));
}

/// Nothing fits the prompt: a concrete `model` keeps its request (the sentinel is dropped, and
/// the decision says why), where `"model": "auto"` gets the 400.
#[tokio::test]
async fn when_nothing_fits_a_sentinel_in_models_is_dropped() {
    let up = Upstream::start().await;
    let long = "word ".repeat(300_000);
    let body = json!({"model": "gpt-4o", "models": ["auto", "claude"],
        "messages": [{"role": "user", "content": long}]});
    let (status, d, attempts, _) = send(AutoRouteLayer::new(catalog()), &up, body).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "gpt-4o=ok");
    let d = d.unwrap();
    assert!(d.ranking.is_empty());
    assert_eq!(&*d.chosen, "gpt-4o");
    assert!(
        d.reason.starts_with("no candidate model can serve this request")
            && d.reason.contains("`auto` dropped from `models`"),
        "{}",
        d.reason
    );
    let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
    assert!(sent.get("models").is_none());
    assert_eq!(sent["model"], "gpt-4o");
}

#[tokio::test]
async fn models_cooling_down_are_ranked_last() {
    let up = Upstream::start().await;
    let health = Arc::new(InMemoryHealth::new());
    health.observe(
        "mini",
        Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(60))),
    );
    let auto = AutoRouteLayer::new(catalog())
        .health(health.clone())
        .policy(DefaultRouter::new().strong_share(0.0));
    let (_, d, _, _) = send(auto, &up, user("hi")).await;
    let d = d.unwrap();
    assert_ne!(&*d.chosen, "mini");
    assert_eq!(d.ranking.last().map(|m| &**m), Some("mini"));
}

struct SlowRemote;
impl AsyncRoutePolicy for SlowRemote {
    fn route<'a>(&'a self, _: &'a PromptInfo<'a>, c: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Ranking::new(
                vec![c[0].id.clone()],
                1.0,
                Cow::Borrowed("remote"),
            ))
        })
    }
}

struct QuickRemote;
impl AsyncRoutePolicy for QuickRemote {
    fn route<'a>(&'a self, _: &'a PromptInfo<'a>, _: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
        Box::pin(async move {
            Ok(Ranking::new(
                vec!["max".into(), "not-a-candidate".into()],
                0.9,
                Cow::Borrowed("remote says max"),
            ))
        })
    }
}

#[tokio::test]
async fn an_async_policy_routes_and_a_slow_one_falls_back_to_the_local_router() {
    let up = Upstream::start().await;
    let (_, d, _, _) = send(
        AutoRouteLayer::new(catalog()).async_policy(QuickRemote),
        &up,
        user("hi"),
    )
    .await;
    let d = d.unwrap();
    assert_eq!(
        d.ranking,
        vec![Arc::<str>::from("max")],
        "names outside the candidates are dropped"
    );
    let slow = RemoteWithFallback::new(SlowRemote, DefaultRouter::new(), Duration::from_millis(50));
    let (status, d, _, _) = send(
        AutoRouteLayer::new(catalog()).async_policy(slow),
        &up,
        user("hi"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(d.unwrap().reason.contains("timed out"));
}

/// A policy that names none of the candidates (ids of another catalog, a bug) fails on this
/// side: a 500 `server_error`, not a 400 that blames the client's request.
#[tokio::test]
async fn a_policy_that_names_no_candidate_is_a_server_error() {
    let up = Upstream::start().await;
    let stale = |_: &PromptInfo<'_>, _: &[&ModelProfile]| {
        Ranking::new(vec!["gone".into()], 0.5, Cow::Borrowed("stale ids"))
    };
    let (status, _, _, error) =
        send(AutoRouteLayer::new(catalog()).policy(stale), &up, user("hi")).await;
    assert_eq!(status, 500);
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "route_policy_failed");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("stale ids"),
        "{error}"
    );
    assert!(up.received().is_empty());
}

/// `candidates` keeps the catalog models it names (an id the catalog does not list is
/// ignored); a list that leaves none is the configuration's fault: a 500
/// `no_candidate_model`.
#[tokio::test]
async fn candidates_restrict_the_catalog_to_the_ids_they_name() {
    let up = Upstream::start().await;
    let kept = AutoRouteLayer::new(catalog()).candidates(["max", "not-in-the-catalog"]);
    let (status, d, attempts, _) = send(kept, &up, user("hello")).await;
    assert_eq!((status.as_u16(), attempts.as_str()), (200, "max=ok"));
    assert_eq!(d.unwrap().ranking, [Arc::<str>::from("max")]);
    let none = AutoRouteLayer::new(catalog()).candidates(["not-in-the-catalog"]);
    let (status, _, _, error) = send(none, &up, user("hello")).await;
    assert_eq!(status, 500);
    assert_eq!(error["error"]["code"], "no_candidate_model");
    assert_eq!(up.received().len(), 1);
}

/// A layer with nothing to choose from (an empty catalog, or one that lists only sentinels) is
/// misconfigured: a 500, not a 400 about plugin options the request may not even have.
#[tokio::test]
async fn an_empty_catalog_is_a_server_error() {
    let only_sentinel = Catalog::from_profiles([ModelProfile::new("openrouter/auto", 0, 0.0, 0.0)]);
    for catalog in [Catalog::default(), only_sentinel] {
        let up = Upstream::start().await;
        let (status, _, _, error) = send(AutoRouteLayer::new(catalog), &up, user("hi")).await;
        assert_eq!(status, 500);
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(error["error"]["code"], "no_candidate_model");
        assert!(error["error"]["param"].is_null());
        assert!(up.received().is_empty());
    }
}

#[tokio::test]
async fn bad_json_and_bad_messages_get_a_400() {
    for body in [
        r#"{"model":"auto","messages":"nope"}"#,
        r#"{"model":"auto","messages":[{"role":1}]}"#,
        "{oops",
    ] {
        let up = Upstream::start().await;
        let res = stack!(AutoRouteLayer::new(catalog()), up)
            .oneshot(chat(&up.url(PATH), body))
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(up.received().is_empty());
    }
}

/// A JavaScript client that cuts a string in the middle of an emoji (`"😀".slice(0, 1)`) sends
/// half a surrogate pair, which `JSON.stringify` writes as a lone `\ud83d` escape. Python's
/// and JavaScript's parsers, and the upstreams built on them, accept it, and so does the
/// layer for a concrete model; the auto router refused it ("unexpected end of hex escape").
/// It reads such a character as U+FFFD and sends the body on as it came.
#[tokio::test]
async fn a_lone_surrogate_escape_in_the_prompt_is_routed_not_refused() {
    let texts = [
        r#""content":"summarise: \ud83d""#,
        r#""content":[{"type":"text","text":"cut \udc00 here"},{"type":"text","text":"\ud83d\ud83d"}]"#,
    ];
    for text in texts {
        let body = format!(r#"{{"model":"auto","messages":[{{"role":"user",{text}}}]}}"#);
        let up = Upstream::start().await;
        let res = stack!(AutoRouteLayer::new(catalog()), up)
            .oneshot(chat(&up.url(PATH), &body))
            .await
            .unwrap();
        let status = res.status();
        let decision = res.extensions().get::<RouteDecision>().cloned();
        let answer = body_bytes(res.into_body()).await;
        assert_eq!(status, 200, "{text}: {}", String::from_utf8_lossy(&answer));
        let chosen = decision.unwrap().chosen;
        let sent = &up.received()[0].body;
        let expected = body.replace(r#""model":"auto""#, &format!(r#""model":"{chosen}""#));
        assert_eq!(&sent[..], expected.as_bytes(), "the rest as it came");
    }
}

/// The router reads the prompt in `messages` (chat completions, Anthropic's Messages API) or
/// `input` (OpenAI's Responses API): a request without either (a legacy `prompt`, or no prompt
/// at all) cannot be checked against any constraint, so it is refused rather than sent, blind,
/// to the cheapest model (a 40k-token `prompt` would go to `mini` and its 4k window).
#[tokio::test]
async fn an_auto_request_without_a_prompt_gets_a_400() {
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(4_000);
    for body in [
        json!({"model": "auto", "prompt": long}),
        json!({"model": "auto", "messages": []}),
        json!({"model": "auto", "messages": null}),
        json!({"model": "auto", "input": []}),
        json!({"model": "auto", "input": null, "instructions": "Be brief."}),
        json!({"model": "auto", "system": "Be brief."}),
        json!({"model": "auto"}),
    ] {
        let up = Upstream::start().await;
        let keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        let (status, decision, _, error) = send(AutoRouteLayer::new(catalog()), &up, body).await;
        assert_eq!(status, 400, "{keys:?}");
        assert!(decision.is_none());
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["code"], "no_messages", "{keys:?}");
        assert_eq!(error["error"]["param"], "messages");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`messages`") && message.contains("`input`"),
            "{message}"
        );
        assert!(up.received().is_empty());
    }
}

/// The ranking of a request the router accepted, checking that the body went upstream to
/// the chosen model with everything but `model` as it came.
async fn routed_ranking(up: &Upstream, path: &str, body: Value) -> Vec<Arc<str>> {
    routed_ranking_in(catalog(), up, path, body).await
}

async fn routed_ranking_in(
    catalog: Catalog,
    up: &Upstream,
    path: &str,
    body: Value,
) -> Vec<Arc<str>> {
    let before = up.received().len();
    let (status, decision, _, answer) =
        send_to(AutoRouteLayer::new(catalog), up, path, &body).await;
    assert_eq!(status, 200, "{body}: {answer}");
    let decision = decision.expect("routed");
    let received = up.received();
    let sent = &received[before];
    assert_eq!(sent.path, path);
    let mut expected = body;
    expected["model"] = json!(&*decision.chosen);
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent, expected);
    decision.ranking
}

fn ranked(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|&name| Arc::from(name)).collect()
}

/// OpenAI's Responses API (`POST /v1/responses`), which OpenRouter serves too: the prompt is
/// `input` (a string or a list of items), the output limit `max_output_tokens`, structured
/// output `text.format`. Each is read as its chat-completions twin is; an auto request with an
/// `input` was a 400.
#[tokio::test]
async fn a_responses_api_request_is_routed_from_its_input() {
    const RESPONSES: &str = "/v1/responses";
    let up = Upstream::start().await;
    // A short string: the cheapest model.
    let body = json!({"model": "auto", "input": "hi there"});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await[0].as_ref(), "mini");
    // About 40k tokens of `input`: only max's 200k window holds it.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(4_000);
    let body = json!({"model": "auto", "input": long});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await, ranked(&["max"]));
    // An image among the items: a model with vision.
    let body = json!({"model": "auto", "input": [
        {"role": "system", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}]},
    ]});
    let ranking = routed_ranking(&up, RESPONSES, body).await;
    assert_eq!(ranking, ranked(&["mid", "max"]));
    // A completion reserve over mid's 32k window.
    let body = json!({"model": "auto", "input": "write a long story", "max_output_tokens": 100_000});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await, ranked(&["max"]));
    // A JSON schema: a model with structured output.
    let body = json!({"model": "auto", "input": "give me a person",
        "text": {"format": {"type": "json_schema", "name": "person",
            "schema": {"type": "object"}, "strict": true}}});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await, ranked(&["max"]));
    // Long `instructions` (about 7k tokens) do not fit mini's 4k window.
    let instructions = "Answer as a pirate would, and never break character. ".repeat(600);
    let body = json!({"model": "auto", "instructions": instructions, "input": "hi"});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await, ranked(&["mid", "max"]));
    // Items that carry no user text (calls, their outputs, reasoning) are read, and the
    // arguments of a call count toward the window.
    let body = json!({"model": "auto", "input": [
        {"role": "user", "content": "what's the weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": long},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]});
    assert_eq!(routed_ranking(&up, RESPONSES, body).await, ranked(&["max"]));
    // An audio or a file item needs a model that takes it.
    let reads: Capabilities = serde_json::from_str(r#"["file", "audio"]"#).unwrap();
    let able = ModelProfile::new("able", 128_000, 2.5, 10.0).with_capabilities(reads);
    for part in [
        json!({"type": "input_file", "filename": "a.pdf",
            "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}),
        json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
    ] {
        let with_able = Catalog::from_profiles(catalog().models().iter().cloned().chain([able.clone()]));
        let body = json!({"model": "auto", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is in here?"}, part]}]});
        let ranking = routed_ranking_in(with_able, &up, RESPONSES, body).await;
        assert_eq!(ranking, ranked(&["able"]));
    }
}

/// A Responses API computer-use turn sends the screenshot back as a `computer_call_output`
/// whose `output` is a `computer_screenshot` (by `image_url` or `file_id`): it needs vision,
/// as an `input_image` does. It was skipped as an item the router does not read, and the
/// request could go to a text model. A function's output given as parts is read as a message's
/// content is: an `input_image` in it needs vision too.
#[tokio::test]
async fn a_responses_api_screenshot_needs_vision() {
    let up = Upstream::start().await;
    let call = json!({"type": "computer_call", "id": "cu_1", "call_id": "call_1",
        "action": {"type": "screenshot"}, "pending_safety_checks": [], "status": "completed"});
    for output in [
        json!({"type": "computer_call_output", "call_id": "call_1", "output":
            {"type": "computer_screenshot", "image_url": "data:image/png;base64,iVBORw0KGgo="}}),
        json!({"type": "computer_call_output", "call_id": "call_1", "output":
            {"type": "computer_screenshot", "file_id": "file-1"}}),
        json!({"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}),
    ] {
        let body = json!({"model": "auto", "input": [
            {"role": "user", "content": "open the settings"}, call, output]});
        let ranking = routed_ranking(&up, "/v1/responses", body).await;
        assert_eq!(ranking, ranked(&["mid", "max"]), "{output}");
    }
}

/// An image the image generation tool made, passed back as an `image_generation_call` item
/// (with its base64 `result`, or by `id` alone, as OpenAI's multi-turn editing guide does), is
/// in the model's context: it needs vision, as an `input_image` does. It was skipped as an item
/// the router does not read, and an edit could go to a text model. A generation that failed
/// (`result: null`) holds no image.
#[tokio::test]
async fn a_responses_api_generated_image_needs_vision() {
    let up = Upstream::start().await;
    let ask = json!({"role": "user", "content": "now make it look realistic"});
    for generated in [
        json!({"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "result": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}),
        json!({"type": "image_generation_call", "id": "ig_1"}),
    ] {
        let body = json!({"model": "auto", "input": [ask, generated]});
        let ranking = routed_ranking(&up, "/v1/responses", body).await;
        assert_eq!(ranking, ranked(&["mid", "max"]), "{generated}");
    }
    let failed = json!({"type": "image_generation_call", "id": "ig_2", "status": "failed",
        "result": null});
    let without = json!({"model": "auto", "input": [ask]});
    let with_failed = json!({"model": "auto", "input": [ask, failed]});
    let ranking = routed_ranking(&up, "/v1/responses", with_failed).await;
    assert!(ranking.iter().any(|model| &**model == "mini"), "{ranking:?}");
    assert_eq!(ranking, routed_ranking(&up, "/v1/responses", without).await);
}

const ANTHROPIC_MESSAGES: &str = "/v1/messages";

/// Anthropic's Messages API (`POST /v1/messages`): an `image` block needs vision, in a
/// message or in a tool's result (a screenshot). It was read as an unknown part, and the
/// request could go to a text model.
#[tokio::test]
async fn an_anthropic_image_block_needs_vision() {
    let up = Upstream::start().await;
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png",
        "data": "iVBORw0KGgo="}});
    let body = json!({"model": "auto", "max_tokens": 1024, "messages": [{"role": "user",
        "content": [image, {"type": "text", "text": "what is this?"}]}]});
    let ranking = routed_ranking(&up, ANTHROPIC_MESSAGES, body).await;
    assert_eq!(ranking, ranked(&["mid", "max"]));
    let body = json!({"model": "auto", "max_tokens": 1024, "messages": [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "screen",
            "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [image]}]},
    ]});
    let ranking = routed_ranking(&up, ANTHROPIC_MESSAGES, body).await;
    assert_eq!(ranking, ranked(&["mid", "max"]));
}

/// An Anthropic `document` block (a PDF) needs a model that reads files.
#[tokio::test]
async fn an_anthropic_document_block_needs_a_model_that_reads_files() {
    let up = Upstream::start().await;
    let reads: Capabilities = serde_json::from_str(r#"["file"]"#).unwrap();
    let reader = ModelProfile::new("reader", 128_000, 2.5, 10.0).with_capabilities(reads);
    let with_reader = Catalog::from_profiles(catalog().models().iter().cloned().chain([reader]));
    let body = json!({"model": "auto", "max_tokens": 1024, "messages": [{"role": "user",
        "content": [{"type": "document", "source": {"type": "base64",
            "media_type": "application/pdf", "data": "JVBERi0xLjQ="}},
            {"type": "text", "text": "summarise this"}]}]});
    let ranking = routed_ranking_in(with_reader, &up, ANTHROPIC_MESSAGES, body).await;
    assert_eq!(ranking, ranked(&["reader"]));
}

/// Anthropic's structured outputs (`output_config.format`, and the beta's `output_format`
/// it replaced, still accepted) with a JSON schema need a model with structured output, as
/// OpenAI's `response_format` does. They were not read: the request could go to a model
/// without it. Other `output_config` settings (`effort`) ask for nothing of the kind.
#[tokio::test]
async fn an_anthropic_output_format_json_schema_needs_structured_output() {
    let up = Upstream::start().await;
    let format = json!({"type": "json_schema", "schema": {"type": "object",
        "properties": {"name": {"type": "string"}}, "required": ["name"],
        "additionalProperties": false}});
    let message = json!([{"role": "user", "content": "give me a person"}]);
    for body in [
        json!({"model": "auto", "max_tokens": 1024, "messages": message,
            "output_config": {"format": format}}),
        json!({"model": "auto", "max_tokens": 1024, "messages": message,
            "output_config": {"effort": "low", "format": format}}),
        json!({"model": "auto", "max_tokens": 1024, "messages": message, "output_format": format}),
    ] {
        let ranking = routed_ranking(&up, ANTHROPIC_MESSAGES, body.clone()).await;
        assert_eq!(ranking, ranked(&["max"]), "{body}");
    }
    let body = json!({"model": "auto", "max_tokens": 1024, "messages": message,
        "output_config": {"effort": "low"}});
    assert_eq!(routed_ranking(&up, ANTHROPIC_MESSAGES, body).await[0].as_ref(), "mini");
}

/// Anthropic's top-level `system` (a string, or text blocks) counts toward the window: about
/// 7k tokens of it, with a short message, do not fit mini's 4k. It was not counted.
#[tokio::test]
async fn an_anthropic_system_counts_toward_the_window() {
    let up = Upstream::start().await;
    let system = "Answer as a pirate would, and never break character. ".repeat(600);
    for system in [
        json!(system),
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]),
    ] {
        let body = json!({"model": "auto", "max_tokens": 1024, "system": system,
            "messages": [{"role": "user", "content": "hi"}]});
        let ranking = routed_ranking(&up, ANTHROPIC_MESSAGES, body).await;
        assert_eq!(ranking, ranked(&["mid", "max"]));
    }
}

/// A body with both `messages` and `input` is neither shape: the router would read one and
/// the upstream perhaps the other, so it is refused, as a repeated key is.
#[tokio::test]
async fn an_auto_request_with_both_messages_and_input_gets_a_400() {
    let up = Upstream::start().await;
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
        "input": "The quick brown fox jumps over the lazy dog. ".repeat(4_000)});
    let (status, decision, _, error) =
        send_to(AutoRouteLayer::new(catalog()), &up, "/v1/responses", &body).await;
    assert_eq!(status, 400);
    assert!(decision.is_none());
    assert_eq!(error["error"]["code"], "ambiguous_prompt");
    assert_eq!(error["error"]["param"], "input");
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn an_auto_stream_falls_back_through_the_ranking_on_an_in_band_error() {
    let up = Upstream::start().await;
    up.set(
        "mini",
        Behavior::StreamFirstEvent(r#"{"error":{"code":502,"message":"Provider returned error"}}"#),
    );
    up.set(
        "mid",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"streamed"}}]}"#]),
    );
    let body = json!({"model": "auto", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let res = stack!(AutoRouteLayer::new(catalog()), up)
        .oneshot(chat(&up.url(PATH), &body.to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let decision = res.extensions().get::<RouteDecision>().cloned().unwrap();
    assert_eq!(&*decision.chosen, "mini");
    assert!(
        attempts_header(&res).ends_with("mid=ok"),
        "{}",
        attempts_header(&res)
    );
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert!(
        text.contains("streamed") && text.contains("[DONE]"),
        "{text}"
    );
    assert!(!text.contains("Provider returned error"), "{text}");
    let received = up.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["stream"], true);
    }
}

/// The built-in router's `completion_reserve` is the reserve the layer's context-window check
/// assumes for a request without `max_tokens` (it assumed the default 1,024 whatever the router
/// said), for the choice and for the 400 when nothing fits.
#[tokio::test]
async fn the_routers_completion_reserve_is_the_layers() {
    let up = Upstream::start().await;
    let router = || DefaultRouter::new().completion_reserve(100_000);
    let auto = AutoRouteLayer::new(catalog()).policy(router());
    let (status, d, _, _) = send(auto, &up, user("hi")).await;
    assert_eq!(status, 200);
    assert_eq!(&*d.unwrap().chosen, "max", "only max has room for 100,000 tokens");

    let auto = AutoRouteLayer::new(catalog()).policy(DefaultRouter::new().completion_reserve(300_000));
    let (status, _, _, json) = send(auto, &up, user("hi")).await;
    assert_eq!(status, 400, "{json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max: needs about 300"), "{message}");
}

/// `AutoRouteLayer::allow_models` bounds the router's choice, so that a `FallbackLayer` with the
/// same allow-list never refuses it: a client that asks for `auto` gets no 400 for a model it
/// did not name. "hi" goes to `mini` by default; the lists leave it out.
#[tokio::test]
async fn the_allow_list_bounds_the_auto_routers_choice() {
    let up = Upstream::start().await;
    let allow = ["m?d", "max"];
    let auto = AutoRouteLayer::new(catalog()).allow_models(allow);
    let res = stack!(auto, FallbackLayer::new().allow_models(allow), up)
        .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
        .await
        .unwrap();
    assert_routed_among(res, &["mid", "max"], &up).await;
}

/// Asserts that `res` is a success whose decision ranked only `allowed` models, and that the
/// upstream was asked the chosen one alone.
#[allow(dead_code)] // each test file uses one form or both
async fn assert_routed_among(
    res: http::Response<tower_llm_router::body::ResponseBody<hyper::body::Incoming>>,
    allowed: &[&str],
    up: &Upstream,
) {
    let status = res.status();
    let decision = res.extensions().get::<RouteDecision>().cloned();
    let body = body_bytes(res.into_body()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let decision = decision.expect("a decision");
    let ranked_allowed = decision.ranking.iter().all(|m| allowed.contains(&&**m));
    assert!(ranked_allowed, "{decision:?}");
    assert_eq!(up.models_received(), [&*decision.chosen]);
}

/// An allow-list that leaves the router nothing is the configuration's fault: a 500, and the
/// upstream is not called.
#[tokio::test]
async fn an_allow_list_that_leaves_no_candidate_is_a_server_error() {
    let up = Upstream::start().await;
    let auto = AutoRouteLayer::new(catalog()).allow_models(["other/*"]);
    let res = stack!(auto, up)
        .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let json: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(json["error"]["code"], "no_candidate_model");
    assert!(up.models_received().is_empty());
}
