//! The body splice against a plain copy of the same bytes, in the same run: what rewriting
//! `model` and removing `models` costs, next to what copying the body once costs.
//!
//! Two bodies at 1 KiB, 64 KiB and 1 MiB: `prose` (one long user message, an escaped newline
//! every paragraph, as pasted documents are) and `dense` (many short turns with escaped quotes
//! and newlines, the worst case for a JSON scan). For each:
//! * `copy`: `Bytes::copy_from_slice` of the body (the bandwidth to compare with);
//! * `splice`: on an already parsed body, `set_model` + `remove_models` into segments (what
//!   every attempt does) and into one buffer (one copy);
//! * `parse_splice`: `ChatRequest::parse` plus the splice into segments (what a request costs
//!   when no layer above parsed it);
//! * `parse_noop`: parse plus a splice with nothing to change, which returns the original
//!   buffer (no copy).
//!
//! Run: `cargo bench --bench splice`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tower_llm_router::payload::ChatRequest;

const HEAD: &str = r#"{"model":"openai/gpt-4o-mini","models":["anthropic/claude-sonnet-4","google/gemini-2.5-pro"],"temperature":0.2,"messages":[{"role":"system","content":"You are a careful assistant."}"#;

fn prose(size: usize) -> Bytes {
    let paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
                     incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis \
                     nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.\\n\\n";
    let mut out = String::with_capacity(size + paragraph.len());
    out.push_str(HEAD);
    out.push_str(r#",{"role":"user","content":"Summarise this document:\n\n"#);
    while out.len() + paragraph.len() + 4 < size {
        out.push_str(paragraph);
    }
    out.push_str(r#""}]}"#);
    Bytes::from(out)
}

fn dense(size: usize) -> Bytes {
    let turn = r#",{"role":"user","content":"Here is a paragraph, with \"quotes\" and\na newline: lorem ipsum dolor sit amet."},{"role":"assistant","content":"Noted. Continue, please."}"#;
    let mut out = String::with_capacity(size + turn.len());
    out.push_str(HEAD);
    while out.len() + turn.len() + 2 < size {
        out.push_str(turn);
    }
    out.push_str("]}");
    Bytes::from(out)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("splice");
    for (kind, make) in [("prose", prose as fn(usize) -> Bytes), ("dense", dense)] {
        for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
            let body = make(size);
            let parsed = ChatRequest::parse(body.clone()).expect("the bench body parses");
            let noop = ChatRequest::parse(body.clone())
                .expect("parses")
                .splice()
                .remove_plugin(0)
                .to_bytes();
            assert_eq!(
                noop.as_ptr(),
                body.as_ptr(),
                "a splice without edits is not a copy"
            );
            group.throughput(Throughput::Bytes(body.len() as u64));
            let id = |what: &str| BenchmarkId::new(format!("{kind}/{what}"), label);
            group.bench_with_input(id("copy"), &body, |b, body| {
                b.iter(|| black_box(Bytes::copy_from_slice(body)))
            });
            group.bench_with_input(id("splice_segments"), &parsed, |b, req| {
                b.iter(|| {
                    black_box(
                        req.splice()
                            .set_model("openai/gpt-4o")
                            .remove_models()
                            .to_segments(),
                    )
                })
            });
            group.bench_with_input(id("splice_to_bytes"), &parsed, |b, req| {
                b.iter(|| {
                    black_box(
                        req.splice()
                            .set_model("openai/gpt-4o")
                            .remove_models()
                            .to_bytes(),
                    )
                })
            });
            group.bench_with_input(id("parse_splice"), &body, |b, body| {
                b.iter(|| {
                    let req = ChatRequest::parse(body.clone()).ok()?;
                    Some(black_box(
                        req.splice()
                            .set_model("openai/gpt-4o")
                            .remove_models()
                            .to_segments()
                            .len(),
                    ))
                })
            });
            group.bench_with_input(id("parse_noop"), &body, |b, body| {
                b.iter(|| {
                    let req = ChatRequest::parse(body.clone()).ok()?;
                    Some(black_box(
                        req.splice().set_model("openai/gpt-4o-mini").to_bytes(),
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
