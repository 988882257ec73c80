//! The crate's main job in a few seconds, with nothing but the checkout:
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Starts six simulated OpenAI-compatible providers on 127.0.0.1 (rate limited, down,
//! moderated, small context window, healthy, streaming), puts the real layer stack in front of
//! them (`AutoRouteLayer`, with session affinity, -> `FallbackLayer` -> a hyper-util client
//! that sends each attempt to its model's provider), sends a scripted set of requests (fallback,
//! auto routing, a conversation kept on its model, `cost_tier`, `provider.max_price`) and
//! prints what happened to each.
//! Exits non-zero if any request does not end as expected, so CI runs it as a check.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, RouteDecision, SessionAffinity};
use tower_llm_router::fallback::{Attempts, ServedModel};
use tower_llm_router::health::{Health, InMemoryHealth};
use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer};

use common::providers::{estimate_tokens, sim_model, Providers, SimModel, MODELS, STREAM_WORDS};
use common::upstream::{default_tls, https_client, Route, Upstream};

const HEALTHY: &str = "google/gemini-2.5-flash";

/// How a scripted request must end.
enum Expect {
    /// This status, these attempts (`x-llm-router-attempts`).
    Exactly(u16, &'static str),
    /// `auto`: a 200 from a model whose window fits the prompt, the auto router's choice
    /// tried first.
    AutoAnswered,
    /// `auto` in `models`: a 200 after this first attempt, from the auto router's choice.
    AutoAfter(&'static str),
    /// Refused by the layers: this status, no upstream call.
    Refused(u16),
    /// `auto` with session affinity: a 200 from the model that served the request before.
    StaysOn,
    /// `auto`, opted out of session affinity: answered as `AutoAnswered`, the auto router's
    /// choice another than the model that served the request before.
    RoutedAfresh,
    /// `auto` with this `cost_tier`: a 200, the auto router's choice one of these models.
    CostTier(&'static str, &'static [&'static str]),
    /// `auto` with `provider.max_price` (prompt, completion): a 200, every model ranked
    /// within both ceilings.
    WithinPrice(f64, f64),
}

struct Case {
    label: &'static str,
    body: serde_json::Value,
    expect: Expect,
    /// A header the answer must carry unchanged.
    header: Option<(&'static str, &'static str)>,
}

fn messages(text: &str) -> serde_json::Value {
    json!([{ "role": "user", "content": text }])
}

/// A hard question asked under a price ceiling (another opening than `HARD_QUESTION`'s: with
/// session affinity on, the same one would continue that conversation).
const PRICED_HARD_QUESTION: &str = "Derive a closed form for the recurrence T(n) = 2T(n/2) + \
     n log n, prove it by induction step by step, then analyse the proof's complexity.";

/// The first question of the conversation that session affinity keeps on its model.
const HARD_QUESTION: &str = "Prove that every planar graph is 5-colourable, then derive an \
     O(n) algorithm from the proof and analyse its complexity step by step.";

/// The conversation's second turn: the first question, the answer, a short thanks.
fn second_turn() -> serde_json::Value {
    json!([
        { "role": "user", "content": HARD_QUESTION },
        { "role": "assistant", "content": "Here is the proof, the algorithm and its analysis." },
        { "role": "user", "content": "Thanks!" },
    ])
}

/// `auto` with OpenRouter's `cost_tier` plugin option. (Each its own question: with session
/// affinity on, the same one twice would be one conversation, kept on its first model.)
fn with_cost_tier(tier: &str, question: &str) -> serde_json::Value {
    json!({"model": "auto", "messages": messages(question),
        "plugins": [{"id": "auto-router", "cost_tier": tier}]})
}

fn cases() -> Vec<Case> {
    // About 12k tokens: over the small model's 8k window.
    let long = format!(
        "Summarise this report. {}",
        "The quarterly figures show steady growth across regions. ".repeat(850)
    );
    let very_long = format!(
        "Prove that the algorithm terminates, step by step, then analyse its complexity. {}",
        "Lemma: each iteration strictly decreases the potential function. ".repeat(2500)
    );
    vec![
        Case {
            label: "rate limited (429, Retry-After)",
            body: json!({"model": "openai/gpt-4o", "models": [HEALTHY], "messages": messages("Hello!")}),
            expect: Expect::Exactly(
                200,
                "openai/gpt-4o=rate_limited, google/gemini-2.5-flash=ok",
            ),
            header: None,
        },
        Case {
            label: "provider down (503)",
            body: json!({"model": "anthropic/claude-sonnet-4", "models": [HEALTHY], "messages": messages("Hello!")}),
            expect: Expect::Exactly(
                200,
                "anthropic/claude-sonnet-4=downtime, google/gemini-2.5-flash=ok",
            ),
            header: None,
        },
        Case {
            label: "flagged by moderation (403)",
            body: json!({"model": "openai/gpt-4.1-mini", "models": [HEALTHY], "messages": messages("Hello!")}),
            expect: Expect::Exactly(
                200,
                "openai/gpt-4.1-mini=moderation, google/gemini-2.5-flash=ok",
            ),
            header: None,
        },
        Case {
            label: "prompt over the context window (400)",
            body: json!({"model": "mistralai/ministral-8b", "models": [HEALTHY], "messages": messages(&long)}),
            expect: Expect::Exactly(
                200,
                "mistralai/ministral-8b=context_length, google/gemini-2.5-flash=ok",
            ),
            header: None,
        },
        Case {
            label: "stream, first model down",
            body: json!({"model": "anthropic/claude-sonnet-4", "models": ["deepseek/deepseek-chat"], "stream": true, "messages": messages("Hello!")}),
            expect: Expect::Exactly(
                200,
                "anthropic/claude-sonnet-4=downtime, deepseek/deepseek-chat=ok",
            ),
            header: None,
        },
        Case {
            label: "auto, short prompt",
            body: json!({"model": "auto", "messages": messages("What is the capital of France?")}),
            expect: Expect::AutoAnswered,
            header: None,
        },
        Case {
            label: "auto, with an image: needs vision",
            body: json!({"model": "auto", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ]}]}),
            expect: Expect::AutoAnswered,
            header: None,
        },
        Case {
            label: "auto, long hard prompt",
            body: json!({"model": "auto", "messages": messages(&very_long)}),
            expect: Expect::AutoAnswered,
            header: None,
        },
        Case {
            label: "gpt-4o cooling down: tried last",
            body: json!({"model": "openai/gpt-4o", "models": [HEALTHY], "messages": messages("Hello again!")}),
            expect: Expect::Exactly(200, "google/gemini-2.5-flash=ok"),
            header: None,
        },
        // Not request 6's question: with session affinity on, the same opening would be that
        // conversation's next turn.
        Case {
            label: "refused, then `auto` in `models`",
            body: json!({"model": "openai/gpt-4.1-mini", "models": ["auto"], "messages": messages("What is the capital of Italy?")}),
            expect: Expect::AutoAfter("openai/gpt-4.1-mini=moderation"),
            header: None,
        },
        Case {
            label: "every model fails: last error back",
            body: json!({"model": "openai/gpt-4.1-mini", "models": ["openai/gpt-4o"], "messages": messages("Hello!")}),
            expect: Expect::Exactly(
                429,
                "openai/gpt-4.1-mini=moderation, openai/gpt-4o=rate_limited",
            ),
            header: Some(("retry-after", "30")),
        },
        Case {
            label: "affinity: turn 1, a hard question",
            body: json!({"model": "auto", "messages": messages(HARD_QUESTION)}),
            expect: Expect::AutoAnswered,
            header: None,
        },
        Case {
            label: "affinity: turn 2 stays on its model",
            body: json!({"model": "auto", "messages": second_turn()}),
            expect: Expect::StaysOn,
            header: None,
        },
        Case {
            label: "turn 2 alone (pin_model: false)",
            body: json!({"model": "auto", "messages": second_turn(),
                "plugins": [{"id": "auto-router", "pin_model": false}]}),
            expect: Expect::RoutedAfresh,
            header: None,
        },
        Case {
            label: "auto, cost_tier low",
            body: with_cost_tier("low", "Suggest a name for a cat."),
            // The cheapest fifth of the six models' prices.
            expect: Expect::CostTier("low", &["mistralai/ministral-8b"]),
            header: None,
        },
        Case {
            label: "auto, cost_tier xhigh",
            body: with_cost_tier("xhigh", "Suggest a name for a dog."),
            // The fourth fifth (`max`, the dearest, holds gpt-4o and claude-sonnet-4: both
            // cooling down by now, ranked last).
            expect: Expect::CostTier("xhigh", &["google/gemini-2.5-flash"]),
            header: None,
        },
        Case {
            label: "auto, hard, provider.max_price",
            body: json!({"model": "auto", "messages": messages(PRICED_HARD_QUESTION),
                "provider": {"max_price": {"prompt": 0.35, "completion": 3}}}),
            // A hard prompt, but the three dearest models are over the ceiling.
            expect: Expect::WithinPrice(0.35, 3.0),
            header: None,
        },
        Case {
            label: "bad input: `models` not a list",
            body: json!({"model": "openai/gpt-4o", "models": "google/gemini-2.5-flash", "messages": messages("Hello!")}),
            expect: Expect::Refused(400),
            header: None,
        },
    ]
}

/// What came back for one request.
struct Outcome {
    status: u16,
    attempts: String,
    /// The models tried last because they were cooling down.
    passed_over: Vec<String>,
    served: String,
    elapsed: Duration,
    body: Bytes,
    decision: Option<RouteDecision>,
    header: Option<String>,
}

fn catalog() -> Catalog {
    Catalog::from_profiles(MODELS.iter().map(SimModel::profile))
}

/// Whether session affinity made the decision.
fn is_pinned(decision: &RouteDecision) -> bool {
    decision.reason.starts_with("session affinity:")
}

/// Checks an outcome against its expectation (`previous`: the request's before it); `Err`
/// says what differs.
fn check(case: &Case, out: &Outcome, previous: Option<&Outcome>) -> Result<(), String> {
    let served_before = previous.map_or("", |p| p.served.as_str());
    match case.expect {
        Expect::Exactly(status, attempts) => {
            if out.status != status || out.attempts != attempts {
                return Err(format!(
                    "expected {status} after `{attempts}`, got {} after `{}`",
                    out.status, out.attempts
                ));
            }
        }
        Expect::AutoAnswered | Expect::RoutedAfresh => {
            let decision = out.decision.as_ref().ok_or("no auto-route decision")?;
            let first = out.attempts.split('=').next().unwrap_or_default();
            if out.status != 200 || first != &*decision.chosen {
                return Err(format!(
                    "expected a 200 starting with the auto choice {}, got {} after `{}`",
                    decision.chosen, out.status, out.attempts
                ));
            }
            let prompt = estimate_tokens(case.body.to_string().len());
            let served = sim_model(&out.served);
            let window = served.map_or(0, |m| m.context_window);
            if window < prompt {
                return Err(format!(
                    "{} (window {window}) answered a prompt of ~{prompt} tokens",
                    out.served
                ));
            }
            let image = case.body.to_string().contains("\"image_url\"");
            if image && !served.is_some_and(|m| m.capabilities.contains(&"vision")) {
                return Err(format!(
                    "{} has no vision and answered an image",
                    out.served
                ));
            }
            let fresh = matches!(case.expect, Expect::RoutedAfresh);
            if fresh && (&*decision.chosen == served_before || is_pinned(decision)) {
                return Err(format!(
                    "expected a choice other than {served_before}, got {} ({})",
                    decision.chosen, decision.reason
                ));
            }
        }
        Expect::StaysOn => {
            let decision = out.decision.as_ref().ok_or("no auto-route decision")?;
            if out.status != 200 || out.served != served_before || !is_pinned(decision) {
                return Err(format!(
                    "expected a 200 from {served_before} by session affinity, got {} from {} ({})",
                    out.status, out.served, decision.reason
                ));
            }
        }
        Expect::CostTier(tier, band) => {
            let decision = out.decision.as_ref().ok_or("no auto-route decision")?;
            let said = decision.reason.contains(&format!("cost_tier {tier}"));
            if out.status != 200 || !band.contains(&&*decision.chosen) || !said {
                return Err(format!(
                    "expected a 200 after choosing one of {band:?} for cost_tier {tier}, got {} \
                     after choosing {} ({})",
                    out.status, decision.chosen, decision.reason
                ));
            }
        }
        Expect::WithinPrice(prompt, completion) => {
            let decision = out.decision.as_ref().ok_or("no auto-route decision")?;
            let over: Vec<&str> = decision
                .ranking
                .iter()
                .map(|m| &**m)
                .filter(|m| {
                    sim_model(m)
                        .is_none_or(|m| m.input_price > prompt || m.output_price > completion)
                })
                .collect();
            if out.status != 200 || !over.is_empty() || !decision.reason.contains("max_price") {
                return Err(format!(
                    "expected a 200 from models within ${prompt}/${completion}, got {} with \
                     {over:?} ranked ({})",
                    out.status, decision.reason
                ));
            }
        }
        Expect::AutoAfter(first) => {
            let decision = out.decision.as_ref().ok_or("no auto-route decision")?;
            let attempts = format!("{first}, {}=ok", decision.chosen);
            if out.status != 200 || out.attempts != attempts {
                return Err(format!(
                    "expected a 200 after `{attempts}`, got {} after `{}`",
                    out.status, out.attempts
                ));
            }
        }
        Expect::Refused(status) => {
            let json: serde_json::Value =
                serde_json::from_slice(&out.body).map_err(|e| format!("not JSON: {e}"))?;
            if out.status != status || !out.attempts.is_empty() || json["error"]["code"].is_null() {
                return Err(format!(
                    "expected a {status} OpenAI-shaped error without attempts, got {} `{}`",
                    out.status, out.attempts
                ));
            }
        }
    }
    if case.body["stream"] == true {
        let text = String::from_utf8_lossy(&out.body);
        let chunks = text.matches("\"chat.completion.chunk\"").count();
        if chunks != STREAM_WORDS.len() || !text.contains("data: [DONE]") {
            return Err(format!(
                "the stream had {chunks} chunks and no [DONE]: {text}"
            ));
        }
    }
    if let Some((name, value)) = case.header {
        if out.header.as_deref() != Some(value) {
            return Err(format!("expected `{name}: {value}`, got {:?}", out.header));
        }
    }
    Ok(())
}

async fn send<S, B>(stack: &S, case: &Case) -> Result<Outcome, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(case.body.to_string())))?;
    let start = Instant::now();
    let response = stack.clone().oneshot(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    let elapsed = start.elapsed();
    Ok(Outcome {
        status: parts.status.as_u16(),
        attempts: parts
            .extensions
            .get::<Attempts>()
            .map(Attempts::to_header_value)
            .unwrap_or_default(),
        passed_over: parts
            .extensions
            .get::<Attempts>()
            .map(|a| a.passed_over.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default(),
        served: parts
            .extensions
            .get::<ServedModel>()
            .map(|m| m.0.to_string())
            .unwrap_or_default(),
        elapsed,
        body,
        decision: parts.extensions.get::<RouteDecision>().cloned(),
        header: case
            .header
            .and_then(|(name, _)| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, BoxError> {
    let providers = Providers::start().await?;
    let mut routes = HashMap::new();
    let mut default = None;
    println!("simulated providers on 127.0.0.1:");
    for (model, base_url) in providers.routes() {
        println!(
            "  {:<26} {:<14} {base_url}",
            model.id,
            format!("{:?}", model.kind)
        );
        let route = Route::new(&base_url)?;
        if model.id == HEALTHY {
            default = Some(route.clone());
        }
        routes.insert(Arc::from(model.id), route);
    }
    let default = default.ok_or("no healthy provider")?;
    let upstream = Upstream::new(https_client(default_tls()?), default, routes);

    // The real stack: auto routing (a conversation kept on the model that served it), then
    // fallback, sharing what they learn about models.
    let health: Arc<dyn Health> = Arc::new(InMemoryHealth::new());
    let auto = AutoRouteLayer::new(catalog())
        .health(health.clone())
        .session_affinity(SessionAffinity::new());
    let stack = ServiceBuilder::new()
        .layer(auto)
        .layer(FallbackLayer::new().health(health))
        .service(upstream);

    println!();
    println!(
        "{:>2}  {:<38} {:>6}  {:<25} {:>8}",
        "#", "request", "status", "answered by", "time"
    );
    let mut failures = Vec::new();
    let mut previous = None;
    for (i, case) in cases().iter().enumerate() {
        let outcome = send(&stack, case).await?;
        let verdict = check(case, &outcome, previous.as_ref());
        println!(
            "{:>2}  {:<38} {:>6}  {:<25} {:>5.1} ms{}",
            i + 1,
            case.label,
            outcome.status,
            if outcome.served.is_empty() {
                "-"
            } else {
                &outcome.served
            },
            outcome.elapsed.as_secs_f64() * 1e3,
            if verdict.is_ok() {
                ""
            } else {
                "   <-- UNEXPECTED"
            },
        );
        if let Some(decision) = &outcome.decision {
            println!(
                "    auto:     chose {} ({})",
                decision.chosen, decision.reason
            );
        }
        if !outcome.passed_over.is_empty() {
            println!(
                "    moved last (cooling down): {}",
                outcome.passed_over.join(", ")
            );
        }
        println!(
            "    attempts: {}",
            if outcome.attempts.is_empty() {
                "none: refused by the layer, no upstream call"
            } else {
                &outcome.attempts
            },
        );
        if let Err(why) = verdict {
            failures.push(format!("#{} {}: {why}", i + 1, case.label));
        }
        previous = Some(outcome);
    }
    println!();
    if failures.is_empty() {
        println!("all {} requests ended as expected", cases().len());
        Ok(true)
    } else {
        for failure in &failures {
            eprintln!("UNEXPECTED {failure}");
        }
        Ok(false)
    }
}
