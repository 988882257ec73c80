//! Per-response cost of the default classifier: every answer of the crate's fixture set
//! (`tests/fixtures/provider-errors.jsonl`, upstream error answers of a dozen providers), and
//! the successes the fallback layer reads on every request (a 200 JSON completion, a long one,
//! the first event of a stream).
//!
//! Run: `cargo bench --bench classify`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use tower_llm_router::classify::classify_response;

/// One fixture: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn fixtures() -> Vec<Answer> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provider-errors.jsonl");
    let text = std::fs::read_to_string(&path).expect("the fixture file");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("a fixture line is JSON");
            let status = entry["status"].as_u64().and_then(|s| u16::try_from(s).ok());
            let mut headers = HeaderMap::new();
            if let Some(map) = entry["headers"].as_object() {
                for (name, value) in map {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        headers.append(name, value);
                    }
                }
            }
            let body = match &entry["body"] {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            Answer {
                status: StatusCode::from_u16(status.unwrap_or(200)).expect("a valid status"),
                headers,
                body,
            }
        })
        .collect()
}

fn success(content: &str) -> Vec<u8> {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
            "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33},
        "system_fingerprint": "fp_0123456789",
    })
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let answers = fixtures();
    let mut group = c.benchmark_group("classify_response");
    group.throughput(Throughput::Elements(answers.len() as u64));
    group.bench_function(format!("all {} fixtures", answers.len()), |b| {
        b.iter(|| {
            for a in &answers {
                black_box(classify_response(a.status, &a.headers, black_box(&a.body)));
            }
        })
    });
    group.throughput(Throughput::Elements(1));

    let json = HeaderMap::from_iter([(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]);
    let short = success("Hello! How can I help you today?");
    let long = success(&"The quick brown fox jumps over the lazy dog. ".repeat(360));
    let sse = HeaderMap::from_iter([(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    )]);
    let first_event = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n".to_vec();
    // A first event of content (no preamble): the preamble hints are all looked for in vain.
    let content_event = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n".to_vec();
    for (name, headers, body) in [
        ("200 json, short", &json, &short),
        ("200 json, 16 KiB content", &json, &long),
        ("200 sse, first event", &sse, &first_event),
        ("200 sse, first content event", &sse, &content_event),
    ] {
        assert_eq!(
            classify_response(StatusCode::OK, headers, body),
            None,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(classify_response(StatusCode::OK, headers, black_box(body))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
