//! Parse + splice of a chat-completions body against a plain copy, at 1 KiB, 64 KiB, 1 MiB.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tower_llm_router::payload::ChatRequest;

/// A realistic body of about `size` bytes: routing fields first, then a conversation whose
/// text (with escapes, as real prompts have) fills the rest.
fn body(size: usize) -> Bytes {
    let head = r#"{"model":"auto","models":["openai/gpt-4o","anthropic/claude-sonnet-4","google/gemini-2.5-pro"],"stream":true,"max_tokens":1024,"plugins":[{"id":"auto-router","allowed_models":["openai/*"]}],"temperature":0.2,"messages":[{"role":"system","content":"You are a helpful assistant."}"#;
    let turn = r#",{"role":"user","content":"Here is a paragraph of the document, with \"quotes\" and\na newline: lorem ipsum dolor sit amet, consectetur adipiscing elit."},{"role":"assistant","content":"Noted. Continue with the next part, please."}"#;
    let mut out = String::with_capacity(size + turn.len());
    out.push_str(head);
    while out.len() + turn.len() + 2 < size {
        out.push_str(turn);
    }
    out.push_str("]}");
    Bytes::from(out)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    for (name, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let body = body(size);
        assert!(ChatRequest::parse(body.clone()).is_ok());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("copy_to_vec", name), &body, |b, body| {
            b.iter(|| black_box(body.to_vec()))
        });
        group.bench_with_input(BenchmarkId::new("parse", name), &body, |b, body| {
            b.iter(|| black_box(ChatRequest::parse(body.clone()).is_ok()))
        });
        group.bench_with_input(
            BenchmarkId::new("parse_splice_segments", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let req = ChatRequest::parse(body.clone()).ok()?;
                    let segments = req
                        .splice()
                        .set_model("openai/gpt-4o")
                        .remove_models()
                        .to_segments();
                    Some(black_box(segments.len()))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("parse_splice_to_bytes", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let req = ChatRequest::parse(body.clone()).ok()?;
                    Some(black_box(
                        req.splice()
                            .set_model("openai/gpt-4o")
                            .remove_models()
                            .to_bytes(),
                    ))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("parse_messages", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let req = ChatRequest::parse(body.clone()).ok()?;
                    let messages = req.messages().ok()?;
                    Some(black_box(messages.last_user_text().map(|t| t.len())))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("value_roundtrip", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
                    let object = value.as_object_mut()?;
                    object.insert("model".into(), "openai/gpt-4o".into());
                    object.remove("models");
                    Some(black_box(serde_json::to_vec(&value).ok()?.len()))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
