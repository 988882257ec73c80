//! Layer overhead: AutoRouteLayer + FallbackLayer over an in-memory inner service that answers
//! at once, against the same inner service bare, for 1 KiB, 64 KiB and 1 MiB chat bodies, on
//! the success path and the one-fallback path; and the same routing as one layer
//! (`FallbackLayer::auto_route`) on the success path.
//!
//! Run: `cargo bench --bench overhead`.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::fallback::RoutedModel;
use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}"#;

/// A chat body of about `size` bytes: one long user message.
fn chat_body(size: usize, models: &str) -> Bytes {
    let head = format!(
        r#"{{"model":"primary",{models}"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":""#
    );
    let tail = r#""}],"temperature":0.2}"#;
    let filler = "lorem ipsum dolor sit amet "
        .repeat((size.saturating_sub(head.len() + tail.len())) / 27 + 1);
    let mut body = head;
    body.push_str(&filler[..size.saturating_sub(body.len() + tail.len())]);
    body.push_str(tail);
    Bytes::from(body)
}

/// Reads the request body the way a client writing it to a socket would, without copying.
async fn drain(mut body: RouterBody) -> usize {
    let mut n = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            n += data.len();
        }
    }
    n
}

/// Answers at once: 503 for the model `primary` when `fail_primary`, 200 otherwise.
fn upstream(
    fail_primary: bool,
) -> impl Service<
    Request<RouterBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<RouterBody>| async move {
        let failing = fail_primary
            && req
                .extensions()
                .get::<RoutedModel>()
                .is_some_and(|m| &*m.0 == "primary");
        black_box(drain(req.into_body()).await);
        let mut res = Response::new(Full::new(Bytes::from_static(ANSWER)));
        res.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        if failing {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        Ok::<_, Infallible>(res)
    })
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = http::Method::POST;
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    req
}

async fn read_all<B: Body>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes().len()
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let catalog = Catalog::from_profiles([
        ModelProfile::new("small", 128_000, 0.15, 0.6),
        ModelProfile::new("large", 2_000_000, 3.0, 15.0),
    ]);
    let mut group = c.benchmark_group("overhead");
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)] {
        let plain = chat_body(size, "");
        let with_fallback = chat_body(size, r#""models":["backup"],"#);
        group.throughput(Throughput::Bytes(size as u64));

        let bare = upstream(false);
        group.bench_with_input(BenchmarkId::new("bare", label), &plain, |b, body| {
            b.to_async(&rt).iter(|| {
                let svc = bare.clone();
                async move {
                    let req = request(body).map(RouterBody::new);
                    let res = svc.oneshot(req).await.unwrap();
                    black_box(read_all(res.into_body()).await)
                }
            })
        });

        let layered = ServiceBuilder::new()
            .layer(AutoRouteLayer::new(catalog.clone()))
            .layer(FallbackLayer::new())
            .service(upstream(false));
        routed(&mut group, &rt, "layers_success", label, layered, &plain);

        // The same routing as one layer (`FallbackLayer::auto_route`, as the gateway runs it).
        let one_layer = ServiceBuilder::new()
            .layer(FallbackLayer::new().auto_route(AutoRouteLayer::new(catalog.clone())))
            .service(upstream(false));
        routed(
            &mut group,
            &rt,
            "one_layer_success",
            label,
            one_layer,
            &plain,
        );

        let failing = ServiceBuilder::new()
            .layer(AutoRouteLayer::new(catalog.clone()))
            .layer(FallbackLayer::new().health(std::sync::Arc::new(
                tower_llm_router::health::InMemoryHealth::new().max_models(0),
            )))
            .service(upstream(true));
        routed(
            &mut group,
            &rt,
            "layers_one_fallback",
            label,
            failing,
            &with_fallback,
        );
    }
    group.finish();
}

/// Benchmarks one request through `svc`, a routing stack, to the end of its answer (a 200).
fn routed<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    label: &str,
    svc: S,
    body: &Bytes,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    group.bench_with_input(BenchmarkId::new(name, label), body, |b, body| {
        b.to_async(rt).iter(|| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(request(body)).await.unwrap();
                assert_eq!(res.status(), 200);
                black_box(read_all(res.into_body()).await)
            }
        })
    });
}

criterion_group!(benches, overhead);
criterion_main!(benches);
