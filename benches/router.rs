//! Decision latency of the default router: difficulty + ranking for a 2,000-character prompt.
use std::hint::black_box;

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
    c.bench_function("estimate_tokens/2000 chars", |b| {
        b.iter(|| estimate_tokens(black_box(&text)))
    });
    c.bench_function("difficulty/2000 chars", |b| {
        b.iter(|| difficulty(&PromptInfo::from_text(black_box(&text))))
    });
    c.bench_function("decision/2000 chars, 3 candidates", |b| {
        b.iter(|| {
            router.route(
                &PromptInfo::from_text(black_box(&text)),
                black_box(&candidates),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
