//! Auto routing end to end (`FallbackLayer::auto_route` or an `AutoRouteLayer` in front of a
//! `FallbackLayer`, by the input's first byte), over a stand-in upstream that answers every
//! call with a 200 completion: OpenRouter's `provider.max_price` read from any request body.
//!
//! The input is the request body (after the first byte), sent to `/v1/chat/completions`.
//! The catalog has models from free to dear and one whose price is not known.
//!
//! For any input:
//! * nothing panics and the stack answers: the upstream's 200, or an OpenAI-shaped JSON error
//!   (`{"error":{"message","type","code"}}`) of the router's own;
//! * a ceiling is never passed: when serde_json reads the body's `provider.max_price` as an
//!   object in a request for `auto` alone (without `models`), every model of the decision's
//!   ranking and every model the upstream is asked for has known prices within its `prompt`
//!   and `completion` ceilings (each read here, by serde_json, as a number or a numeric
//!   string, when it is one; one read otherwise is not checked).
#![no_main]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::{service_fn, Layer, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer, RouterBody};

mod runtime;
use runtime::runtime;

/// Id, input and output price (USD per million tokens); `-1` is a price not known.
/// Close prices, so that a ceiling between two of them is easy to come by.
const MODELS: [(&str, f64, f64); 8] = [
    ("free", 0.0, 0.0),
    ("mini", 0.1, 0.4),
    ("small", 0.15, 0.6),
    ("mid", 1.0, 4.0),
    ("large", 2.5, 10.0),
    ("sonnet", 3.0, 15.0),
    ("max", 10.0, 30.0),
    ("unpriced", -1.0, 0.0),
];

fn catalog() -> Catalog {
    Catalog::from_profiles(
        MODELS.map(|(id, input, output)| ModelProfile::new(id, 1_000_000, input, output)),
    )
}

/// A ceiling as this target reads it: a number or a numeric string, finite and `>= 0`.
fn ceiling(value: Option<&Value>) -> Option<f64> {
    let price = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse::<f64>().ok()?,
        _ => return None,
    };
    (price.is_finite() && price >= 0.0).then_some(price)
}

/// The `(prompt, completion)` ceilings of the body's `provider.max_price`, when it is an object
/// and the body asks for `auto` alone (no `models` of the client's own, which the ceiling
/// does not govern).
fn max_price(body: &[u8]) -> Option<(Option<f64>, Option<f64>)> {
    let json: Value = serde_json::from_slice(body).ok()?;
    if json.get("model")? != "auto" || json.get("models").is_some() {
        return None;
    }
    let max_price = json.get("provider")?.get("max_price")?.as_object()?;
    Some((
        ceiling(max_price.get("prompt")),
        ceiling(max_price.get("completion")),
    ))
}

fn within(model: &str, (prompt, completion): (Option<f64>, Option<f64>)) -> bool {
    let Some(&(_, input, output)) = MODELS.iter().find(|(id, ..)| *id == model) else {
        return false;
    };
    input >= 0.0
        && output >= 0.0
        && prompt.is_none_or(|c| input <= c)
        && completion.is_none_or(|c| output <= c)
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, body)) = data.split_first() else {
        return;
    };
    let asked = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let upstream = {
        let asked = asked.clone();
        service_fn(move |req: Request<RouterBody>| {
            let asked = asked.clone();
            async move {
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let model = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|json| json["model"].as_str().map(str::to_owned));
                asked.lock().expect("not poisoned").push(model);
                let ok = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
                Ok::<_, BoxError>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .header("x-fuzz-upstream", "1")
                        .body(Full::new(Bytes::from_static(ok.as_bytes())))?,
                )
            }
        })
    };
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let auto = AutoRouteLayer::new(catalog());
    runtime().block_on(async {
        let response = if form & 1 == 0 {
            let service = FallbackLayer::new().auto_route(auto).layer(upstream);
            service.oneshot(request).await
        } else {
            let service = auto.layer(FallbackLayer::new().layer(upstream));
            service.oneshot(request).await
        };
        let response = response.expect("the stack answers");
        let from_upstream = response.headers().contains_key("x-fuzz-upstream");
        let status = response.status();
        let decision = response.extensions().get::<RouteDecision>().cloned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the body reads to its end")
            .to_bytes();
        if !from_upstream {
            let json: Value = serde_json::from_slice(&bytes).expect("the router's error is JSON");
            let error = &json["error"];
            assert!(
                error["message"].is_string()
                    && error["type"].is_string()
                    && error["code"].is_string(),
                "{status}: {json}"
            );
            assert!(!status.is_success(), "{status}: {json}");
        }
        let Some(ceilings) = max_price(body) else {
            return;
        };
        if let Some(decision) = &decision {
            for model in &decision.ranking {
                assert!(
                    within(model, ceilings),
                    "`{model}` ranked under {ceilings:?}: {decision:?}"
                );
            }
        }
        for model in asked.lock().expect("not poisoned").iter().flatten() {
            assert!(
                within(model, ceilings),
                "`{model}` asked under {ceilings:?}"
            );
        }
    });
});
