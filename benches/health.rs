//! What the shared health store costs a request: the fallback layer asks it whether each model
//! of the chain cools down and tells it the outcome, on every request. Measured for a store
//! where no model ever failed, one where another model cooled down and has been asked about
//! since its cooldown ended, and one where another model is cooling down now; on one thread,
//! and on two threads at once (two workers sharing the store, each on its own CPU when the
//! machine has two).
//!
//! Run: `cargo bench --bench health`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tower_llm_router::health::{Health, InMemoryHealth, Observation};
use tower_llm_router::ErrorClass;

/// What one successful request does to the store: look its model up, report the success.
fn request(health: &InMemoryHealth) {
    black_box(health.is_cooling_down(black_box("openai/gpt-4o")));
    health.observe(black_box("openai/gpt-4o"), Observation::succeeded());
}

/// A store in one of the three states, and the name of the state.
fn stores() -> Vec<(&'static str, InMemoryHealth)> {
    let never_failed = InMemoryHealth::new();
    let recovered = InMemoryHealth::new();
    recovered.observe(
        "other",
        Observation::failed(ErrorClass::RateLimited, Some(Duration::from_millis(1))),
    );
    let cooling = InMemoryHealth::new();
    cooling.observe(
        "other",
        Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(3600))),
    );
    // Let the 1 ms cooldown end, and a request's chain ask about the model.
    std::thread::sleep(Duration::from_millis(5));
    assert!(!recovered.is_cooling_down("other"));
    vec![
        ("never_failed", never_failed),
        ("recovered", recovered),
        ("other_cooling", cooling),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("health_per_request");
    for (state, health) in stores() {
        group.bench_function(format!("{state}/one_thread"), |b| {
            b.iter(|| request(&health))
        });
        group.bench_function(format!("{state}/two_threads"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..2 {
                        scope.spawn(|| (0..iters).for_each(|_| request(&health)));
                    }
                });
                // Per request of one thread: both ran `iters` at once.
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
