//! What the fallback layer spends finding a stream's first event when the upstream cuts the
//! stream into many small frames: every frame is looked at as it arrives, and the layer must
//! not scan the whole start again for each one (that was quadratic: 64 KiB of blank lines one
//! byte per frame cost about 13 s of CPU). Two streams of single-byte frames, then the first
//! data event: 16 KiB of blank lines (keep-alives), and 2,000 `data:` lines of one event.
//!
//! Then the stream after its first event (`stream_after_first_event`): 1,000 chunks of about
//! 150 bytes passed on through the layer, whole events a frame (what upstreams send nearly
//! always), and each event cut in two frames (held until its end, then passed on); and 1,000
//! Responses API events whole a frame (whose last `sequence_number` the layer notes).
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

/// An upstream answering an event stream of these frames.
fn sse(
    frames: impl Iterator<Item = Bytes>,
) -> Response<StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>>> {
    let frames = frames.map(|f| Ok(Frame::data(f)));
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A stream request through the layer to an upstream answering the frames `frames` gives:
/// the body the caller gets.
async fn through_layer<F, I>(frames: F) -> Bytes
where
    F: Fn() -> I + Copy,
    I: Iterator<Item = Bytes> + 'static,
{
    let upstream =
        service_fn(
            move |_req: Request<RouterBody>| async move { Ok::<_, Infallible>(sse(frames())) },
        );
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
    body.to_bytes()
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
                // A byte per frame.
                let bytes = move || start.iter().chain(b"data: {}\n\ndata: [DONE]\n\n");
                let body = through_layer(move || bytes().map(|b| Bytes::copy_from_slice(&[*b])));
                assert!(body.await.ends_with(b"data: {}\n\ndata: [DONE]\n\n"));
            })
        });
    }
    group.finish();
}

fn bench_after_first_event(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    // Ended as upstreams end them: an event stream without its final event is a cut one.
    let events: Vec<String> = (0..1_000)
        .map(|i| format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
        .collect();
    let whole: &'static [Bytes] = events
        .iter()
        .map(|e| Bytes::from(e.clone()))
        .collect::<Vec<_>>()
        .leak();
    let halves: &'static [Bytes] = events
        .iter()
        .flat_map(|e| {
            let (a, b) = e.split_at(e.len() / 2);
            [Bytes::from(a.to_owned()), Bytes::from(b.to_owned())]
        })
        .collect::<Vec<_>>()
        .leak();
    // A Responses API stream, as OpenAI writes its events (`sequence_number` last): the layer
    // looks for the last number of each frame, for the error event of a break.
    let responses: &'static [Bytes] = (0..1_000)
        .map(|i| Bytes::from(format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"content_index\":0,\"delta\":\"tok{i} \",\"item_id\":\"msg_1\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":{i}}}\n\n")))
        .chain(std::iter::once(Bytes::from_static(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\"},\"sequence_number\":1000}\n\n")))
        .collect::<Vec<_>>()
        .leak();
    let mut group = c.benchmark_group("stream_after_first_event");
    for (name, stream) in [
        ("whole_events_a_frame", whole),
        ("events_in_two_frames", halves),
        ("responses_whole_events_a_frame", responses),
    ] {
        let len: usize = stream.iter().map(Bytes::len).sum();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async move {
                let body = through_layer(move || stream.iter().cloned()).await;
                assert_eq!(body.len(), len);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_after_first_event);
criterion_main!(benches);
