//! Router decision latency as a distribution: p50 / p90 / p99 / p99.9 / max over 100,000
//! decisions, each timed on its own (criterion reports means, the target is a p99).
//!
//! Two measurements for a 2,000-character prompt:
//! * `policy`: `PromptInfo::from_text` + `DefaultRouter::route` over three candidates, what
//!   `benches/router.rs` times on average;
//! * `layer`: a whole `"model": "auto"` request through `AutoRouteLayer` over an inner service
//!   that answers at once: body buffering, parse, messages, constraints, ranking, the `model`
//!   rewrite and the hand-over to the layer below.
//!
//! Run: `cargo bench --bench decision_latency` (`DECISIONS=N` to change the count).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, ServiceExt};
use tower_llm_router::auto_route::{
    Catalog, DefaultRouter, ModelProfile, PromptInfo, RouteDecision, RoutePolicy,
};
use tower_llm_router::{AutoRouteLayer, RouterBody};

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

fn models() -> [ModelProfile; 3] {
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

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter); this bench takes no options.
    let n: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(10);
    let text = prompt_2000();
    let models = models();
    let candidates: Vec<&ModelProfile> = models.iter().collect();
    let router = DefaultRouter::new();

    distribution("policy / 2000 chars, 3 candidates", n, || {
        let ranking = router.route(&PromptInfo::from_text(black_box(&text)), &candidates);
        black_box(ranking);
    });

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
    let inner = service_fn(|req: Request<RouterBody>| async move {
        black_box(req.extensions().get::<RouteDecision>().is_some());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let layer = tower::ServiceBuilder::new()
        .layer(AutoRouteLayer::new(Catalog::from_profiles(models.clone())))
        .service(inner);
    distribution("layer / auto request, 2000-char prompt", n, || {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = http::Method::POST;
        let routed = layer.clone().oneshot(req).now_or_never();
        assert!(
            matches!(routed, Some(Ok(_))),
            "an in-memory request is ready at once"
        );
    });
}
