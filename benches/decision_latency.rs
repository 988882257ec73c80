//! Router decision latency as a distribution: p50 / p90 / p99 / p99.9 / max over 100,000
//! decisions, each timed on its own (criterion reports means, the target is a p99).
//!
//! Two measurements for a 2,000-character prompt, each for catalogs of 3, 50 and 400 models
//! (the three-model catalog of the earlier rounds, then OpenRouter-like lists read with
//! `Catalog::from_openrouter_models_json`, see `tests/support/openrouter_list.rs`; the whole
//! OpenRouter list is 300 to 400 models):
//! * `policy`: `PromptInfo::from_text` + `DefaultRouter::route` over the catalog's models
//!   (every one a candidate), what `benches/router.rs` times on average;
//! * `layer`: a whole `"model": "auto"` request through `AutoRouteLayer` over an inner service
//!   that answers at once: body buffering, parse, messages, constraints, ranking, the `model`
//!   rewrite and the hand-over to the layer below;
//! * `layer + session affinity`: the same request with
//!   `AutoRouteLayer::session_affinity` on: the conversation's key (a keyed hash of the system
//!   text and the first user message), the lookup of its model (found from the second request
//!   on: the same conversation each time) and the pin of the model that answered;
//! * `layer, shared catalog`: `layer` with the catalog read from a `SharedCatalog` (one atomic
//!   load per request) instead of fixed at construction.
//!
//! Run: `cargo bench --bench decision_latency` (`DECISIONS=N` to change the count; a filter
//! argument such as `400` runs only the cases whose name contains it).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, ServiceExt};
use tower_llm_router::auto_route::{
    Catalog, DefaultRouter, ModelProfile, PromptInfo, RouteDecision, RoutePolicy, SessionAffinity,
    SharedCatalog,
};
use tower_llm_router::{AutoRouteLayer, RouterBody};

#[path = "../tests/support/openrouter_list.rs"]
mod openrouter_list;

fn prompt_2000() -> String {
    let base = "Please explain step by step how to compute the derivative of f(x) = x^3 + 2x, \
                then write a Python function `def grad(f, x):` that checks it numerically. \
                The answer must be short and include at least 2 examples. ";
    let mut s = String::new();
    while s.len() < 2000 {
        s.push_str(base);
    }
    s.truncate(2000);
    s
}

/// The catalog of the earlier rounds: three text models.
fn three_models() -> [ModelProfile; 3] {
    [
        ModelProfile::new("small", 128_000, 0.1, 0.4),
        ModelProfile::new("medium", 128_000, 1.0, 4.0),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ]
}

/// Runs `once` `n` times (after `n / 10` unmeasured runs) and prints the distribution.
fn distribution(name: &str, n: usize, mut once: impl FnMut()) {
    for _ in 0..n / 10 {
        once();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        once();
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let at = |p: f64| times[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<40} n={n}  p50 {:>7.2} us  p90 {:>7.2} us  p99 {:>7.2} us  p99.9 {:>7.2} us  max {:>8.2} us",
        us(at(50.0)),
        us(at(90.0)),
        us(at(99.0)),
        us(at(99.9)),
        us(times[n - 1]),
    );
}

/// A catalog of `n` models: the three of the earlier rounds, or an OpenRouter-like list.
fn catalog(n: usize) -> Catalog {
    if n == 3 {
        return Catalog::from_profiles(three_models());
    }
    let json = openrouter_list::openrouter_list(n);
    let catalog = Catalog::from_openrouter_models_json(json.as_bytes());
    let catalog = catalog.expect("the generated list is OpenRouter's format");
    assert_eq!(
        catalog.len(),
        n,
        "the unpriced entries and the router are left out"
    );
    catalog
}

/// A whole auto request through `auto` over an inner service that answers at once, `n` times.
fn layer_distribution(name: &str, n: usize, auto: AutoRouteLayer, body: &Bytes) {
    let inner = service_fn(|req: Request<RouterBody>| async move {
        black_box(req.extensions().get::<RouteDecision>().is_some());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let layer = tower::ServiceBuilder::new().layer(auto).service(inner);
    distribution(name, n, || {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = http::Method::POST;
        let routed = layer.clone().oneshot(req).now_or_never();
        assert!(
            matches!(routed, Some(Ok(_))),
            "an in-memory request is ready at once"
        );
    });
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the cases by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let n: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(10);
    let text = prompt_2000();
    let body = Bytes::from(
        serde_json::json!({
            "model": "auto",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
        })
        .to_string(),
    );
    let router = DefaultRouter::new();
    for size in [3, 50, 400] {
        let catalog = catalog(size);
        let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));

        let name = format!("policy / 2000 chars, {size} candidates");
        if wanted(&name) {
            let candidates: Vec<&ModelProfile> = catalog.models().iter().collect();
            distribution(&name, n, || {
                let ranking = router.route(&PromptInfo::from_text(black_box(&text)), &candidates);
                black_box(ranking);
            });
        }

        let layers = [
            ("layer", AutoRouteLayer::new(catalog.clone())),
            (
                "layer + session affinity",
                AutoRouteLayer::new(catalog.clone()).session_affinity(SessionAffinity::new()),
            ),
            (
                "layer, shared catalog",
                AutoRouteLayer::with_shared_catalog(SharedCatalog::new(catalog.clone())),
            ),
        ];
        for (layer_name, auto) in layers {
            let name = format!("{layer_name} / auto request, {size} models");
            if wanted(&name) {
                layer_distribution(&name, n, auto, &body);
            }
        }
    }
}
