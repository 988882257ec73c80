//! What the fallback layer spends finding a stream's first event when the upstream cuts the
//! stream into many small frames: every frame is looked at as it arrives, and the layer must
//! not scan the whole start again for each one (that was quadratic: 64 KiB of blank lines one
//! byte per frame cost about 13 s of CPU). Two streams of single-byte frames, then the first
//! data event: 16 KiB of blank lines (keep-alives), and 2,000 `data:` lines of one event.
//!
//! Run: `cargo bench --bench stream_start`.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, ServiceExt};
use tower_llm_router::{Fallback, RouterBody};

/// An upstream answering a stream of `start` then one event, a byte per frame.
async fn answer(
    start: &'static [u8],
) -> Result<
    Response<StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>>>,
    Infallible,
> {
    let bytes = start.iter().chain(b"data: {}\n\n").copied();
    let frames = bytes.map(|b| Ok(Frame::data(Bytes::copy_from_slice(&[b]))));
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    Ok(response)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let blank_lines: &'static [u8] = Box::leak(vec![b'\n'; 16 * 1024].into_boxed_slice());
    let data_lines: &'static [u8] = "data: x\n".repeat(2_000).leak().as_bytes();
    let mut group = c.benchmark_group("stream_start_in_one_byte_frames");
    group.sample_size(10);
    for (name, start) in [
        ("16KiB_blank_lines", blank_lines),
        ("2000_data_lines", data_lines),
    ] {
        group.throughput(Throughput::Bytes(start.len() as u64));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async move {
                let upstream = service_fn(move |_req: Request<RouterBody>| answer(start));
                let request = Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .body(RouterBody::from(Bytes::from_static(
                        br#"{"model":"a","stream":true,"messages":[]}"#,
                    )))
                    .expect("a request");
                let response = Fallback::new(upstream)
                    .oneshot(request)
                    .await
                    .expect("an answer");
                let body = response.into_body().collect().await.expect("a body");
                assert!(body.to_bytes().ends_with(b"data: {}\n\n"));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
