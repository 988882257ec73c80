//! Decision latency of the default router for a 2,000-character prompt: token estimate,
//! difficulty, and the full decision (difficulty + ranking of 3 candidates).
//!
//! Besides criterion's means, `decision p50/p99` prints percentiles of single decisions
//! timed one by one (the goal is p99 under 10 µs).
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tower_llm_router::auto_route::{
    difficulty, estimate_tokens, DefaultRouter, ModelProfile, PromptInfo, RoutePolicy,
};

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

fn bench(c: &mut Criterion) {
    let text = prompt_2000();
    let models = [
        ModelProfile::new("small", 128_000, 0.1, 0.4),
        ModelProfile::new("medium", 128_000, 1.0, 4.0),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ];
    let candidates: Vec<&ModelProfile> = models.iter().collect();
    let router = DefaultRouter::new();
    let info = PromptInfo::from_text(&text);
    c.bench_function("estimate_tokens/2000 chars", |b| {
        b.iter(|| estimate_tokens(black_box(&text)))
    });
    c.bench_function("difficulty/2000 chars", |b| {
        b.iter(|| difficulty(black_box(&info)))
    });
    c.bench_function("decision/2000 chars, 3 candidates", |b| {
        b.iter(|| router.route(black_box(&info), black_box(&candidates)))
    });
    c.bench_function("from_text + decision/2000 chars, 3 candidates", |b| {
        b.iter(|| {
            router.route(
                &PromptInfo::from_text(black_box(&text)),
                black_box(&candidates),
            )
        })
    });

    // Percentiles of single calls, timed one by one.
    let percentiles = |name: &str, f: &dyn Fn()| {
        let mut samples: Vec<u128> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos()
            })
            .collect();
        samples.sort_unstable();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{name}: p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs",
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
    };
    percentiles("estimate_tokens (2,000 chars)", &|| {
        black_box(estimate_tokens(black_box(&text)));
    });
    percentiles("difficulty (2,000 chars)", &|| {
        black_box(difficulty(black_box(&info)));
    });
    percentiles("decision: route, PromptInfo given (2,000 chars)", &|| {
        black_box(router.route(black_box(&info), &candidates));
    });
    percentiles(
        "decision: PromptInfo::from_text + route (2,000 chars)",
        &|| {
            black_box(router.route(&PromptInfo::from_text(black_box(&text)), &candidates));
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
