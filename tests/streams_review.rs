//! Streams through FallbackLayer, as an SSE client sees them: preambles past which fallback is
//! still possible, what a broken stream's last bytes parse as, line ends, tiny frames, long
//! events, errors after content, resets and clients that go away. Real loopback sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::FallbackLayer;

const URL_PATH: &str = "/v1/chat/completions";

/// A `"stream": true` request naming `model` then `models`, through the layer with its
/// defaults in front of the scripted upstream.
async fn stream(
    up: &Upstream,
    model: &str,
    models: &[&str],
) -> http::Response<impl http_body::Body<Data = Bytes, Error = tower_llm_router::BoxError>> {
    stream_to(up.addr, model, models).await
}

/// The same to an upstream at `addr`.
async fn stream_to(
    addr: std::net::SocketAddr,
    model: &str,
    models: &[&str],
) -> http::Response<impl http_body::Body<Data = Bytes, Error = tower_llm_router::BoxError>> {
    let body =
        serde_json::json!({"model": model, "models": models, "stream": true, "messages": []});
    ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(routed_client(addr, vec![]))
        .oneshot(chat(&format!("http://{addr}{URL_PATH}"), &body.to_string()))
        .await
        .unwrap()
}

/// An upstream on 127.0.0.1 that answers one request with an event stream of `frames`.
async fn serve_once<S>(frames: S) -> std::net::SocketAddr
where
    S: futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>>
        + Send
        + Sync
        + 'static,
{
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames));
    let body = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
    let upstream = tower::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
        let body = body.lock().unwrap().take().expect("one request");
        async move { Ok::<_, std::convert::Infallible>(sse_response(body)) }
    });
    serve(upstream, None).await
}

async fn text<B: http_body::Body>(res: http::Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap()
}

/// The next model's stream, which the caller must get alone after a fallback.
const B_STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n";

/// `a` does `frames`, `b` streams: the caller gets `b`'s stream alone.
async fn falls_back_past(frames: Vec<&'static str>) {
    falls_back_past_as(frames, "downtime").await;
}

const SERVER_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// OpenRouter's keep-alive comments before the first chunk are no event at all.
#[tokio::test]
async fn an_error_after_keep_alive_comments_falls_back() {
    falls_back_past(vec![
        ": OPENROUTER PROCESSING\n\n",
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\"}}\n\n",
    ])
    .await;
}

/// OpenAI's Responses API opens a stream with `response.created` and `response.in_progress`:
/// no output yet. An error right after them still falls back.
const RESPONSE_CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"model\":\"gpt-4.1\",\"output\":[],\"parallel_tool_calls\":true,\"tools\":[],\"usage\":null,\"metadata\":{}}}\n\n";
const RESPONSE_IN_PROGRESS: &str = "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"error\":null,\"model\":\"gpt-4.1\",\"output\":[],\"usage\":null}}\n\n";

#[tokio::test]
async fn an_error_after_responses_api_created_and_in_progress_falls_back() {
    falls_back_past(vec![
        RESPONSE_CREATED,
        RESPONSE_IN_PROGRESS,
        "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null,\"sequence_number\":2}\n\n",
    ])
    .await;
}

/// Anthropic opens each content block with an empty one: nothing said yet.
#[tokio::test]
async fn an_error_after_anthropics_empty_content_block_start_falls_back() {
    falls_back_past(vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        SERVER_ERROR,
    ])
    .await;
}

/// The Responses API reports a failed generation as `response.failed` (the error inside the
/// response object): after the preamble, it falls back like an `event: error` does.
#[tokio::test]
async fn a_responses_api_failed_response_after_the_preamble_falls_back() {
    falls_back_past(vec![
        RESPONSE_CREATED,
        RESPONSE_IN_PROGRESS,
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The model failed to generate a response.\"},\"output\":[]}}\n\n",
    ])
    .await;
}

const PROVIDER_ERROR: &str = "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"error_type\":\"provider_unavailable\"}}}\n\n";

/// A first chunk whose `refusal`, `reasoning` or `reasoning_content` is empty (or `null`), or
/// whose `reasoning_details` list is empty, says nothing: an error right after it falls back,
/// and the caller sees only the next model's stream. OpenRouter opens every stream with
/// `"reasoning":null,"reasoning_details":[]`; before, the empty strings and lists counted as
/// content, and the first model's stream was passed on with its error.
#[tokio::test]
async fn an_error_after_a_first_chunk_with_empty_refusal_or_reasoning_falls_back() {
    for first in [
        "data: {\"id\":\"gen-1\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-4o\",\"object\":\"chat.completion.chunk\",\"created\":1756749262,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning\":null,\"reasoning_details\":[]},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"\"},\"finish_reason\":null}]}\n\n",
    ] {
        falls_back_past(vec![first, PROVIDER_ERROR]).await;
    }
}

/// A refusal or reasoning that says something is output the client sees: the stream goes to
/// the caller as it came, its error included, with no fallback.
#[tokio::test]
async fn a_first_chunk_with_refusal_or_reasoning_text_is_content() {
    for first in [
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":\"I can't help with that.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning\":\"Let me think.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Hmm\"},\"finish_reason\":null}]}\n\n",
    ] {
        passes_on_unchanged(vec![first, PROVIDER_ERROR]).await;
    }
}

/// `a` does `frames`, content first: the caller gets them as they came, from `a` alone.
async fn passes_on_unchanged(frames: Vec<&'static str>) {
    let up = Upstream::start().await;
    up.set("a", Behavior::StreamFrames(frames.clone()));
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok", "{frames:?}");
    assert_eq!(text(res).await, frames.concat());
    assert_eq!(up.models_received(), ["a"]);
}

/// The Responses API's error event (`ResponseErrorEvent`).
const RESPONSES_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null,\"sequence_number\":5}\n\n";

/// The Responses API opens an output item before any of its text: a reasoning item with an
/// empty summary (reasoning models), a message with no content yet, then an empty text part.
/// None of them says anything: an error after them falls back. Before, the first
/// `response.output_item.added` counted as content.
#[tokio::test]
async fn an_error_after_the_responses_api_empty_output_items_falls_back() {
    falls_back_past(vec![
        RESPONSE_CREATED,
        RESPONSE_IN_PROGRESS,
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}}\n\n",
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":3,\"output_index\":1,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n",
        "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}\n\n",
        RESPONSES_ERROR,
    ])
    .await;
    falls_back_past(vec![
        RESPONSE_CREATED,
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[],\"encrypted_content\":null}}\n\n",
        "event: response.reasoning_summary_part.added\ndata: {\"type\":\"response.reasoning_summary_part.added\",\"sequence_number\":2,\"item_id\":\"rs_1\",\"output_index\":0,\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n\n",
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The model failed to generate a response.\"},\"output\":[]}}\n\n",
    ])
    .await;
}

/// A Responses API output item that already holds something (a call naming its function, a
/// summary with text) is content: the stream goes to the caller.
#[tokio::test]
async fn a_responses_api_output_item_that_holds_something_is_content() {
    for item in [
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"fc_1\",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_1\",\"name\":\"get_weather\"}}\n\n",
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"Thinking.\"}]}}\n\n",
        "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"Hi\"}}\n\n",
    ] {
        passes_on_unchanged(vec![RESPONSE_CREATED, item, RESPONSES_ERROR]).await;
    }
}

/// Anthropic's empty text delta (`"text":""`) after an empty block's start.
const ANTHROPIC_EMPTY_DELTA: [&str; 3] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\n",
];

/// The Responses API's empty text delta (`"delta":""`) after its empty output item and part.
const RESPONSES_EMPTY_DELTA: [&str; 4] = [
    RESPONSE_CREATED,
    "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n",
    "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"\"}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"\",\"logprobs\":[],\"obfuscation\":\"Zk3x\"}\n\n",
];

/// A first chat chunk whose delta holds only `null`s, without a role.
const NULL_DELTA: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

/// An empty text delta shows a client nothing, as an empty block's start does: an error right
/// after one still falls back, and the caller sees only the next model's stream. Before, the
/// empty delta counted as content and the first model's error reached the caller.
#[tokio::test]
async fn an_error_after_an_empty_text_delta_falls_back() {
    falls_back_past([&ANTHROPIC_EMPTY_DELTA[..], &[SERVER_ERROR]].concat()).await;
    falls_back_past([&RESPONSES_EMPTY_DELTA[..], &[RESPONSES_ERROR]].concat()).await;
    falls_back_past(vec![NULL_DELTA, PROVIDER_ERROR]).await;
}

/// The same preambles followed by content: held, then given to the caller byte for byte, the
/// error after the content included (the upstream's word to the caller).
#[tokio::test]
async fn an_empty_text_delta_followed_by_content_reaches_the_caller_unchanged() {
    const ANTHROPIC_TEXT: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
    const RESPONSES_TEXT: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n";
    passes_on_unchanged([&ANTHROPIC_EMPTY_DELTA[..], &[ANTHROPIC_TEXT, SERVER_ERROR]].concat())
        .await;
    passes_on_unchanged(
        [
            &RESPONSES_EMPTY_DELTA[..],
            &[RESPONSES_TEXT, RESPONSES_ERROR],
        ]
        .concat(),
    )
    .await;
    passes_on_unchanged(vec![NULL_DELTA, CONTENT, PROVIDER_ERROR]).await;
}

/// A content block that already holds something is content: the stream goes to the caller.
#[tokio::test]
async fn a_content_block_start_with_a_tool_call_is_content() {
    let up = Upstream::start().await;
    let sent = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    up.set("a", Behavior::StreamRaw(sent));
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert_eq!(text(res).await, sent);
}

const CONTENT: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";

/// Events cut into frames of a few bytes, with `\r\n` and lone `\r` line ends: the preamble is
/// still looked past, an error after it still falls back, and content reaches the caller byte
/// for byte.
#[tokio::test]
async fn tiny_frames_and_any_line_ends_change_nothing() {
    const ROLE_THEN_ERROR_CR: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\r: keep-alive\r\n\r\ndata: {\"error\":{\"code\":502,\"message\":\"Provider returned error\"}}\r\r";
    const CONTENT_CRLF: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\r\rdata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n";
    let split = |s: &'static str, size: usize| -> Vec<&'static str> {
        (0..s.len())
            .step_by(size)
            .map(|i| &s[i..(i + size).min(s.len())])
            .collect()
    };
    for size in [1, 3, 7] {
        falls_back_past(split(ROLE_THEN_ERROR_CR, size)).await;
        let up = Upstream::start().await;
        up.set("a", Behavior::StreamFrames(split(CONTENT_CRLF, size)));
        let res = stream(&up, "a", &["b"]).await;
        assert_eq!(attempts_header(&res), "a=ok");
        assert_eq!(text(res).await, CONTENT_CRLF, "frames of {size}");
    }
}

/// An error event after content is the upstream's own word to the caller: passed on unchanged,
/// no fallback, no error event of the layer's after it.
#[tokio::test]
async fn an_error_event_after_content_passes_through_unchanged() {
    let up = Upstream::start().await;
    let sent = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
    );
    up.set(
        "a",
        Behavior::StreamFrames(vec![CONTENT, &sent[CONTENT.len()..]]),
    );
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert_eq!(text(res).await, sent);
    assert_eq!(up.models_received(), ["a"]);
}

/// Events longer than the prefix the layer reads (64 KiB), first or later, reach the caller
/// whole, byte for byte.
#[tokio::test]
async fn long_events_pass_whole() {
    let long = |n: usize| {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
            "x".repeat(n)
        )
    };
    let sent: &'static str =
        Box::leak(format!("{}{}data: [DONE]\n\n", long(100_000), long(300_000)).into_boxed_str());
    let up = Upstream::start().await;
    up.set("a", Behavior::StreamRaw(sent));
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert!(text(res).await == sent, "byte for byte");
}

/// A client that goes away mid-stream, through a real server in front of the layer: the
/// upstream sees its connection closed.
#[tokio::test]
async fn a_client_that_leaves_mid_stream_closes_the_upstream_stream() {
    let up = Upstream::start().await;
    up.set("forever", Behavior::StreamForever);
    let stack = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(routed_client(up.addr, vec![]));
    let gateway = serve(
        tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            stack.clone().oneshot(req)
        }),
        None,
    )
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let res = client
        .request(chat(
            &format!("http://{gateway}{URL_PATH}"),
            r#"{"model":"forever","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "forever=ok");
    let mut body = res.into_body();
    let first = body.frame().await.map(|frame| frame.unwrap().is_data());
    assert_eq!(first, Some(true), "a first chunk");
    drop((body, client));
    assert_eq!(wait_for_drops(&up, 1).await, 1);
}

/// What an SSE client (WHATWG event-stream rules, written here independently of the crate)
/// dispatches from a whole stream: `(event type, data)` of each event with data, in order. An
/// event not ended by a blank line when the stream ends is dropped, as clients do.
fn client_events(stream: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let (mut kind, mut data): (String, Option<String>) = (String::new(), None);
    let mut rest = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    while let Some(i) = rest.find(['\r', '\n']) {
        let line = &rest[..i];
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push((std::mem::take(&mut kind), data));
            }
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => kind = value.to_owned(),
            _ => {}
        }
    }
    events
}

/// What the client dispatched from a stream that broke after `CONTENT`: `CONTENT`, then the
/// layer's error event alone, every event's data JSON a client can parse.
fn assert_content_then_error_event(text: &str) {
    let events = client_events(text);
    let data: Vec<&str> = events.iter().map(|(_, data)| data.as_str()).collect();
    assert_eq!(data.len(), 2, "the content and the error event: {text:?}");
    let content: Value = serde_json::from_str(data[0]).unwrap();
    assert_eq!(content["choices"][0]["delta"]["content"], "hi");
    let error: Value = serde_json::from_str(data[1])
        .unwrap_or_else(|e| panic!("the last event is JSON ({e}): {text:?}"));
    assert_eq!(error["choices"][0]["finish_reason"], "error", "{text:?}");
    assert_eq!(error["error"]["code"], 502);
}

/// A stream that ends in the middle of an event: SSE clients drop that event, and the layer's
/// error event must be the next thing they dispatch, not the fragment turned into an event of
/// its own (`{"choi`, which the OpenAI SDKs fail to parse before they reach the error).
#[tokio::test]
async fn a_stream_cut_within_an_event_gives_the_client_no_fragment() {
    let up = Upstream::start().await;
    // The fragment in the frame the layer read to classify, and in a later frame.
    up.set(
        "in-prefix",
        Behavior::StreamRaw(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choi"
        )),
    );
    up.set(
        "later",
        Behavior::StreamFrames(vec![CONTENT, "data: {\"choices\":[{\"del", "ta\":{"]),
    );
    up.set(
        "crlf",
        Behavior::StreamFrames(vec![CONTENT, "data: {\"choices\":[]}\r\n"]),
    );
    for model in ["in-prefix", "later", "crlf"] {
        let res = stream(&up, model, &[]).await;
        assert_eq!(attempts_header(&res), format!("{model}=ok"));
        assert_content_then_error_event(&text(res).await);
    }
}

/// A read error after a fragment of an event: the same.
#[tokio::test]
async fn a_stream_that_breaks_within_an_event_gives_the_client_no_fragment() {
    let addr = serve_then_reset(&[CONTENT, "data: {\"choices\":[{\"del"]).await;
    let res = stream_to(addr, "a", &[]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert_content_then_error_event(&text(res).await);
}

/// An upstream on 127.0.0.1 that answers one request with an event stream of `frames`, each
/// after a pause (so that it is flushed on its own), then resets the connection.
async fn serve_then_reset(frames: &[&'static str]) -> std::net::SocketAddr {
    let frames = frames
        .iter()
        .map(|frame| Ok(http_body::Frame::data(Bytes::from_static(frame.as_bytes()))))
        .chain([Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ))]);
    let frames = futures::StreamExt::then(
        futures::stream::iter(frames.collect::<Vec<_>>()),
        |frame| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            frame
        },
    );
    serve_once(frames).await
}

/// A stream whose `[DONE]` lacks the blank line that would end it has ended all the same: the
/// client gets `[DONE]` as an event, and no error after it.
#[tokio::test]
async fn a_last_done_without_its_blank_line_is_the_end_not_a_cut() {
    let up = Upstream::start().await;
    up.set("a", Behavior::StreamFrames(vec![CONTENT, "data: [DONE]"]));
    up.set("b", Behavior::StreamFrames(vec![CONTENT, "data: [DONE]\n"]));
    up.set("c", Behavior::StreamFrames(vec![CONTENT, "data: [DONE]\r"]));
    up.set(
        "d",
        Behavior::StreamFrames(vec![CONTENT, "data: [DONE]\r\n"]),
    );
    for model in ["a", "b", "c", "d"] {
        let res = stream(&up, model, &[]).await;
        let text = text(res).await;
        let events = client_events(&text);
        let data: Vec<&str> = events.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(data.len(), 2, "{text:?}");
        assert_eq!(data[1], "[DONE]", "{text:?}");
    }
    // Only the line end the event lacked is added: `\n\n` after `[DONE]` made `\n\n\n`.
    for (model, ending) in [
        ("a", "data: [DONE]\n\n"),
        ("b", "data: [DONE]\n\n"),
        ("c", "data: [DONE]\r\r"),
        ("d", "data: [DONE]\r\n\n"),
    ] {
        let text = text(stream(&up, model, &[]).await).await;
        assert_eq!(text, format!("{CONTENT}{ending}"), "{model}");
    }
}

/// The Responses API's preamble, followed by content: held, then replayed byte for byte.
#[tokio::test]
async fn a_responses_api_preamble_followed_by_content_reaches_the_caller_unchanged() {
    let up = Upstream::start().await;
    let frames = vec![
        RESPONSE_CREATED,
        RESPONSE_IN_PROGRESS,
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"error\":null,\"output\":[]}}\n\n",
    ];
    up.set("a", Behavior::StreamFrames(frames.clone()));
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert_eq!(text(res).await, frames.concat());
    assert_eq!(up.models_received(), ["a"]);
}

/// Keep-alive comment lines an upstream sends while it thinks, without a blank line after them,
/// reach the caller as they come: a proxy in front that drops idle connections sees them. (A
/// comment line is no part of an event: passing it on cannot leave a fragment.)
#[tokio::test]
async fn keep_alive_comment_lines_are_not_held() {
    let frames = futures::stream::iter([CONTENT, ": keep-alive\n", ": keep-alive\r\n"])
        .map(|frame| Ok(http_body::Frame::data(Bytes::from_static(frame.as_bytes()))))
        // Then the upstream thinks, for as long as the test runs.
        .chain(futures::stream::pending());
    let res = stream_to(serve_once(frames).await, "a", &[]).await;
    let mut body = res.into_body();
    let mut received = Vec::new();
    let wanted = [CONTENT, ": keep-alive\n", ": keep-alive\r\n"].concat();
    while received.len() < wanted.len() {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap_or_else(|_| panic!("held: {:?}", String::from_utf8_lossy(&received)));
        received.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
    }
    assert_eq!(String::from_utf8(received).unwrap(), wanted);
}

/// The start of a Responses API stream, as OpenAI sends it: `event:` lines and `response.*`
/// typed data, up to a first text delta.
const RESPONSES_START: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"hi\"}\n\n",
);

/// The start of an Anthropic Messages stream, up to a first text delta.
const ANTHROPIC_START: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
);

/// The last event of `text`: its `event:` name (if any) and its data as JSON.
fn last_event(text: &str) -> (Option<&str>, Value) {
    let last = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .last()
        .unwrap_or_else(|| panic!("no event: {text:?}"));
    let mut name = None;
    let mut data = None;
    for line in last.lines() {
        if let Some(value) = line.strip_prefix("event: ") {
            name = Some(value);
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(value).unwrap_or_else(|e| panic!("{e}: {last:?}")));
        }
    }
    (name, data.unwrap_or_else(|| panic!("no data: {last:?}")))
}

/// A Responses API stream that breaks midway ends with the Responses API's own error event
/// (`event: error`, a `ResponseErrorEvent`), which its clients read, and not a chat chunk they
/// would drop or fail on: whether the upstream's bytes end in an event or its read fails,
/// and whether or not it names its events with `event:` lines.
#[tokio::test]
async fn a_responses_stream_that_breaks_ends_with_a_responses_error_event() {
    let up = Upstream::start().await;
    up.set(
        "cut",
        Behavior::StreamFrames(vec![
            RESPONSES_START,
            "event: response.output_text.delta\ndata: {\"type\":\"resp",
        ]),
    );
    up.set(
        "unnamed",
        Behavior::StreamRaw(concat!(
            "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
            "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n",
            "data: {\"type\":\"resp"
        )),
    );
    for model in ["cut", "unnamed"] {
        let text = text(stream(&up, model, &[]).await).await;
        assert!(text.contains("\"delta\":\"hi\""), "{text:?}");
        assert_responses_error(&text, 2);
    }
    let addr = serve_then_reset(&[RESPONSES_START]).await;
    let text = text(stream_to(addr, "m", &[]).await).await;
    assert!(text.starts_with(RESPONSES_START), "{text:?}");
    assert_responses_error(&text, 2);
}

/// The Responses API's error event carries a `sequence_number` (its schema requires one, and
/// a strict client refuses the event without it): the one after the last event the caller got,
/// wherever the upstream writes it in its events (OpenAI writes it last, after a long
/// `response` object too; others right after `type`), however many events a frame carries; 0
/// when the error replaces the first event. It had none.
#[tokio::test]
async fn a_responses_error_event_numbers_itself_after_the_last_event_sent() {
    let long_object = format!(
        "{{\"id\":\"resp_1\",\"instructions\":\"{}\",\"output\":[]}}",
        "x".repeat(400)
    );
    let created_last = format!(
        "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{long_object},\"sequence_number\":0}}\n\n"
    );
    let delta = |n: usize| {
        format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"content_index\":0,\"delta\":\"hi\",\"item_id\":\"msg_1\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":{n}}}\n\n")
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let up = Upstream::start().await;
    let cut = "event: response.output_text.delta\ndata: {\"type\":\"resp";
    // OpenAI's member order, one event a frame.
    let openai = vec![
        leak(created_last.clone()),
        leak(delta(1)),
        leak(delta(2)),
        cut,
    ];
    up.set("openai", Behavior::StreamFrames(openai));
    // Several events in one frame, numbered first.
    let in_one = [
        RESPONSES_START,
        RESPONSE_IN_PROGRESS.replace(":1,", ":2,").as_str(),
    ]
    .concat();
    up.set("in-one", Behavior::StreamFrames(vec![leak(in_one), cut]));
    // The first event cut: nothing went to the caller.
    up.set("first-cut", Behavior::StreamRaw(cut));
    // A preamble alone, then the end: the caller gets the preamble, then the error.
    up.set("preamble-only", Behavior::StreamRaw(leak(created_last)));
    for (model, expected) in [
        ("openai", 3),
        ("in-one", 3),
        ("first-cut", 0),
        ("preamble-only", 1),
    ] {
        let text = text(stream(&up, model, &[]).await).await;
        assert_responses_error(&text, expected);
    }
}

fn assert_responses_error(text: &str, sequence_number: u64) {
    let (name, error) = last_event(text);
    assert_eq!(name, Some("error"), "{text:?}");
    assert_eq!(error["type"], "error", "{text:?}");
    assert_eq!(error["code"], "server_error", "{text:?}");
    assert_eq!(error["param"], Value::Null, "{text:?}");
    assert_eq!(error["sequence_number"], sequence_number, "{text:?}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the upstream stream broke"), "{text:?}");
    assert!(error.get("choices").is_none(), "{text:?}");
}

/// An Anthropic Messages stream that breaks midway ends with Anthropic's mid-stream error
/// event (`event: error`, `{"type":"error","error":{"type":"api_error",...}}`).
#[tokio::test]
async fn an_anthropic_stream_that_breaks_ends_with_an_anthropic_error_event() {
    let addr = serve_then_reset(&[
        ANTHROPIC_START,
        "event: content_block_delta\ndata: {\"type\":\"content_",
    ])
    .await;
    let text = text(stream_to(addr, "m", &[]).await).await;
    assert!(text.starts_with(ANTHROPIC_START), "{text:?}");
    let (name, error) = last_event(&text);
    assert_eq!(name, Some("error"), "{text:?}");
    assert_eq!(error["type"], "error", "{text:?}");
    assert_eq!(error["error"]["type"], "api_error", "{text:?}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the upstream stream broke"), "{text:?}");
    assert!(error.get("choices").is_none(), "{text:?}");
}

/// `a` does `frames`, `b` streams: the caller gets `b`'s stream alone, `a` failed as `class`.
async fn falls_back_past_as(frames: Vec<&'static str>, class: &str) {
    let up = Upstream::start().await;
    up.set("a", Behavior::StreamFrames(frames));
    up.set(
        "b",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"ok"}}]}"#]),
    );
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), format!("a={class}, b=ok"));
    assert_eq!(text(res).await, B_STREAM);
    assert_eq!(up.models_received(), ["a", "b"]);
}

/// An event whose data is empty (`data: ` or `data:` alone) carries nothing of an answer: an
/// in-band error after it still falls back, as after any preamble. It counted as content: the
/// 429 reached the caller and the attempt was `ok`.
#[tokio::test]
async fn an_error_after_an_empty_data_event_falls_back() {
    let rate_limited = "data: {\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\"}}\n\n";
    falls_back_past_as(vec!["data: \n\n", rate_limited], "rate_limited").await;
    falls_back_past_as(vec!["data:\n\n", rate_limited], "rate_limited").await;
    falls_back_past_as(
        vec!["data:\r\ndata: \r\n\r\n", ROLE_CHUNK, rate_limited],
        "rate_limited",
    )
    .await;
}

/// Read past like a preamble, an empty data event is replayed as it came, before the content.
#[tokio::test]
async fn an_empty_data_event_before_content_reaches_the_caller_unchanged() {
    let up = Upstream::start().await;
    let sent = ["data: \n\n", "data:\n\n", CONTENT, "data: [DONE]\n\n"];
    up.set("a", Behavior::StreamFrames(sent.to_vec()));
    let res = stream(&up, "a", &["b"]).await;
    assert_eq!(attempts_header(&res), "a=ok");
    assert_eq!(text(res).await, sent.concat());
    assert_eq!(up.models_received(), ["a"]);
}

/// OpenAI's first chunk: the role, an empty content, no finish reason. Content-less.
const ROLE_CHUNK: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

const ANTHROPIC_MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
const ANTHROPIC_MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// A stream that says it is done before any content or finish reason is an empty answer, no
/// answer at all: `[DONE]` alone or after preambles, Anthropic's `message_stop` after
/// `message_start` (no `message_delta`, so no `stop_reason`) are broken, and the next model
/// answers.
#[tokio::test]
async fn a_stream_done_before_any_content_falls_back() {
    falls_back_past_as(vec!["data: [DONE]\n\n"], "downtime").await;
    falls_back_past_as(
        vec![ROLE_CHUNK, ": keep-alive\n\n", "data: [DONE]\n\n"],
        "downtime",
    )
    .await;
    falls_back_past_as(vec!["data: \n\n", "data: [DONE]\n\n"], "downtime").await;
    falls_back_past_as(
        vec![
            ANTHROPIC_MESSAGE_START,
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            ANTHROPIC_MESSAGE_STOP,
        ],
        "downtime",
    )
    .await;
}

/// On the last model, a stream done before any content ends as one that ends before its first
/// event: its preamble, then the layer's error event in its API, which the client reads (not
/// after a `[DONE]` it stops at).
#[tokio::test]
async fn a_stream_done_before_any_content_on_the_last_model_ends_with_an_error_event() {
    let up = Upstream::start().await;
    up.set(
        "chat",
        Behavior::StreamRaw("data: {\"choices\":[]}\n\ndata: [DONE]\n\n"),
    );
    let res = stream(&up, "chat", &[]).await;
    assert_eq!(attempts_header(&res), "chat=downtime");
    let chat = text(res).await;
    let events = client_events(&chat);
    assert_eq!(events.len(), 2, "{chat:?}");
    assert_eq!(events[0].1, "{\"choices\":[]}", "{chat:?}");
    let error: Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(error["choices"][0]["finish_reason"], "error", "{chat:?}");
    assert!(!chat.contains("[DONE]"), "{chat:?}");

    let anthropic: &'static str = Box::leak(
        [ANTHROPIC_MESSAGE_START, ANTHROPIC_MESSAGE_STOP]
            .concat()
            .into_boxed_str(),
    );
    up.set("anthropic", Behavior::StreamRaw(anthropic));
    let res = stream(&up, "anthropic", &[]).await;
    assert_eq!(attempts_header(&res), "anthropic=downtime");
    let text = text(res).await;
    assert!(text.starts_with(ANTHROPIC_MESSAGE_START), "{text:?}");
    assert!(!text.contains("message_stop"), "{text:?}");
    let (name, error) = last_event(&text);
    assert_eq!(name, Some("error"), "{text:?}");
    assert_eq!(error["error"]["type"], "api_error", "{text:?}");
}

/// The Responses API's `response.completed` is the API's own word that the response is done,
/// with its status and usage: a completed response with an empty output is an answer, if an
/// empty one, and is passed on (so is Anthropic's `message_delta` with a `stop_reason`).
#[tokio::test]
async fn a_completed_response_or_a_stop_reason_without_content_is_an_answer() {
    let up = Upstream::start().await;
    let completed = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"error\":null,\"output\":[]}}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"error\":null,\"output\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":0,\"total_tokens\":5}}}\n\n",
    );
    let stopped: &'static str = Box::leak(
        [
            ANTHROPIC_MESSAGE_START,
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":0}}\n\n",
            ANTHROPIC_MESSAGE_STOP,
        ]
        .concat()
        .into_boxed_str(),
    );
    for sent in [completed, stopped] {
        up.set("a", Behavior::StreamRaw(sent));
        let res = stream(&up, "a", &["b"]).await;
        assert_eq!(attempts_header(&res), "a=ok");
        assert_eq!(text(res).await, sent);
    }
}

/// A chat stream that ends cleanly (its last chunk, then the end of the body) after content
/// but without `[DONE]` and without a finish reason was cut: the client gets the layer's
/// error event after the content, as for a read error, and not a silent truncation. Whether
/// the content came in the frame read to classify the stream or later, and whether or not the
/// upstream declared a length (which the error event makes wrong: it is dropped).
#[tokio::test]
async fn a_chat_stream_that_ends_without_done_or_finish_reason_ends_with_an_error_event() {
    let up = Upstream::start().await;
    up.set("in-prefix", Behavior::StreamRaw(CONTENT));
    up.set("later", Behavior::StreamFrames(vec![ROLE_CHUNK, CONTENT]));
    up.set(
        "declared",
        Behavior::StreamDeclared(CONTENT, CONTENT.len() as u64),
    );
    for model in ["in-prefix", "later", "declared"] {
        let res = stream(&up, model, &[]).await;
        assert_eq!(attempts_header(&res), format!("{model}=ok"));
        assert!(res.headers().get("content-length").is_none(), "{model}");
        let text = text(res).await;
        let text = text.strip_prefix(ROLE_CHUNK).unwrap_or(&text);
        assert_content_then_error_event(text);
    }
}

/// vLLM's chunks with `stream_options.continuous_usage_stats` (and some OpenAI-compatible
/// hosts'): a `usage` in every chunk, beside a `finish_reason` that is `null` until the last.
const VLLM_ROLE: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5,\"completion_tokens\":0}}\n\n";
const VLLM_CONTENT: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":6,\"completion_tokens\":1}}\n\n";

/// A stream with a `usage` in every chunk that ends cleanly midway (no finish reason, no
/// `[DONE]`) was cut, as one without: the client gets the layer's error event after the
/// content. Before, the `usage` of its last chunk read as the end of the stream, and the cut
/// went unseen (a success for the shared health).
#[tokio::test]
async fn a_stream_with_usage_in_every_chunk_cut_midway_ends_with_an_error_event() {
    let up = Upstream::start().await;
    up.set("in-prefix", Behavior::StreamRaw(VLLM_CONTENT));
    up.set(
        "later",
        Behavior::StreamFrames(vec![VLLM_ROLE, VLLM_CONTENT]),
    );
    for model in ["in-prefix", "later"] {
        let res = stream(&up, model, &[]).await;
        assert_eq!(attempts_header(&res), format!("{model}=ok"));
        let text = text(res).await;
        let text = text.strip_prefix(VLLM_ROLE).unwrap_or(&text);
        assert_content_then_error_event(text);
    }
}

/// The same for Anthropic's stream without `message_stop` and the Responses API's without its
/// `response.completed`: the error event is the API's own.
#[tokio::test]
async fn anthropic_and_responses_streams_without_their_last_event_end_with_an_error_event() {
    let up = Upstream::start().await;
    up.set("anthropic", Behavior::StreamFrames(vec![ANTHROPIC_START]));
    up.set("responses", Behavior::StreamFrames(vec![RESPONSES_START]));
    let text_of = |model| {
        let up = up.clone();
        async move { text(stream(&up, model, &[]).await).await }
    };
    let anthropic = text_of("anthropic").await;
    assert!(anthropic.starts_with(ANTHROPIC_START), "{anthropic:?}");
    let (name, error) = last_event(&anthropic);
    assert_eq!(name, Some("error"), "{anthropic:?}");
    assert_eq!(error["error"]["type"], "api_error", "{anthropic:?}");
    let responses = text_of("responses").await;
    assert!(responses.starts_with(RESPONSES_START), "{responses:?}");
    assert_responses_error(&responses, 2);
}

/// Streams that end as real providers end them are passed on whole, with nothing after them:
/// a last chunk with a finish reason and no `[DONE]` (some OpenAI-compatible servers), a finish
/// chunk then a usage chunk in one frame and no `[DONE]`, vLLM's with a usage in every chunk,
/// OpenRouter's usage chunk last (an empty delta, a `null` finish reason), Gemini's own stream (`finishReason`,
/// no `[DONE]`), Anthropic's `message_stop`, the Responses API's `response.completed`,
/// `response.incomplete` and `response.failed`, and an upstream's own error event after content.
#[tokio::test]
async fn streams_that_end_as_providers_end_them_get_nothing_added() {
    let finish = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n";
    let usage = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n";
    let gemini = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 2,\"totalTokenCount\": 7},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n";
    let gemini_first = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"hi\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"totalTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n";
    let anthropic_end = concat!(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
    );
    let responses_end = |kind: &str, status: &str| -> &'static str {
        Box::leak(format!("event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":2,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"{status}\",\"output\":[]}}}}\n\n").into_boxed_str())
    };
    let coalesced: &'static str = Box::leak([finish, usage].concat().into_boxed_str());
    // vLLM with `continuous_usage_stats`: a usage in every chunk, the last with the finish.
    let vllm_finish = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}\n\n";
    let openrouter_usage = "data: {\"id\":\"gen-1\",\"provider\":\"Meta\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":2,\"total_tokens\":44}}\n\n";
    let vllm_usage = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}\n\n";
    let cases: Vec<Vec<&'static str>> = vec![
        vec![ROLE_CHUNK, CONTENT, finish],
        vec![ROLE_CHUNK, CONTENT, coalesced],
        vec![CONTENT, finish, usage],
        vec![VLLM_ROLE, VLLM_CONTENT, vllm_finish],
        vec![VLLM_ROLE, VLLM_CONTENT, vllm_finish, vllm_usage],
        vec![
            VLLM_ROLE,
            VLLM_CONTENT,
            vllm_finish,
            vllm_usage,
            "data: [DONE]\n\n",
        ],
        // OpenRouter's usage chunk, an empty delta with a `null` finish reason, last.
        vec![ROLE_CHUNK, CONTENT, finish, openrouter_usage],
        vec![gemini_first, gemini],
        vec![ANTHROPIC_START, anthropic_end, ANTHROPIC_MESSAGE_STOP],
        vec![ANTHROPIC_START, anthropic_end],
        vec![
            RESPONSES_START,
            responses_end("response.completed", "completed"),
        ],
        vec![
            RESPONSES_START,
            responses_end("response.incomplete", "incomplete"),
        ],
        vec![RESPONSES_START, responses_end("response.failed", "failed")],
        vec![CONTENT, SERVER_ERROR],
        vec![CONTENT, "data: [DONE]\n\n", ": bye\n\n"],
    ];
    let up = Upstream::start().await;
    for frames in cases {
        up.set("a", Behavior::StreamFrames(frames.clone()));
        let res = stream(&up, "a", &[]).await;
        assert_eq!(attempts_header(&res), "a=ok");
        assert_eq!(text(res).await, frames.concat());
    }
}

/// `text` is `sent`, then the layer's chat error event alone.
fn assert_sent_then_chat_error_event(text: &str, sent: &str) {
    let rest = text
        .strip_prefix(sent)
        .unwrap_or_else(|| panic!("the upstream's bytes first: {text:?}"));
    let events = client_events(rest);
    assert_eq!(events.len(), 1, "one error event after them: {rest:?}");
    let error: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(error["choices"][0]["finish_reason"], "error", "{rest:?}");
    assert_eq!(error["error"]["code"], 502, "{rest:?}");
}

/// `s`, for the life of the test.
fn leaked(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A last event longer than the 4 KiB a stream keeps of its last frame (a final chunk with
/// the whole text, a tool call's long arguments, a long `usage`) is read whole at the clean
/// end: a stream cut after a long chunk that does not end it gets the error event, one that
/// ends with a long finish chunk gets nothing added, whether the finish comes after the long
/// text or before it. Before, a last line longer than 4 KiB read as an end in doubt: the cut
/// went unseen.
#[tokio::test]
async fn a_chat_stream_whose_last_event_is_longer_than_4_kib_is_judged_whole() {
    let long = "x".repeat(5000);
    let long_content = leaked(format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{long}\"}},\"finish_reason\":null}}]}}\n\n"
    ));
    let long_arguments = leaked(format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{long}\"}}}}]}},\"finish_reason\":null}}]}}\n\n"
    ));
    let up = Upstream::start().await;
    for (model, frames) in [
        ("cut-content", vec![CONTENT, long_content]),
        ("cut-arguments", vec![CONTENT, long_arguments]),
        (
            "cut-coalesced",
            vec![leaked([CONTENT, long_content].concat())],
        ),
    ] {
        up.set(model, Behavior::StreamFrames(frames.clone()));
        let res = stream(&up, model, &[]).await;
        assert_eq!(attempts_header(&res), format!("{model}=ok"));
        assert_sent_then_chat_error_event(&text(res).await, &frames.concat());
    }
    let ends = [
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{long}\"}},\"finish_reason\":\"stop\"}}]}}\n\n"),
        format!("data: {{\"choices\":[{{\"index\":0,\"finish_reason\":\"tool_calls\",\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{long}\"}}}}]}}}}]}}\n\n"),
        format!("data: {{\"choices\":[],\"usage\":{{\"total_tokens\":6,\"note\":\"{long}\"}}}}\n\n"),
    ];
    for end in ends {
        let frames = vec![CONTENT, leaked(end)];
        up.set("ends", Behavior::StreamFrames(frames.clone()));
        let res = stream(&up, "ends", &[]).await;
        assert_eq!(attempts_header(&res), "ends=ok");
        assert_eq!(text(res).await, frames.concat());
    }
}

/// The same for the Responses API: a long text delta last is a cut (the Responses error event
/// follows), a long `response.completed` (it carries the whole response) is the end.
#[tokio::test]
async fn a_responses_stream_whose_last_event_is_longer_than_4_kib_is_judged_whole() {
    let long = "x".repeat(5000);
    let long_delta = leaked(format!(
        "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"{long}\"}}\n\n"
    ));
    let long_completed = leaked(format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"hi{long}\"}}]}}]}}}}\n\n"
    ));
    let up = Upstream::start().await;
    up.set(
        "cut",
        Behavior::StreamFrames(vec![RESPONSES_START, long_delta]),
    );
    let text_cut = text(stream(&up, "cut", &[]).await).await;
    assert!(
        text_cut.starts_with(&[RESPONSES_START, long_delta].concat()),
        "{text_cut:?}"
    );
    assert_responses_error(&text_cut, 3);
    let frames = vec![RESPONSES_START, long_completed];
    up.set("ends", Behavior::StreamFrames(frames.clone()));
    assert_eq!(text(stream(&up, "ends", &[]).await).await, frames.concat());
}

/// vLLM with `continuous_usage_stats` sends a `usage` in every chunk, and some of its chunks
/// deliver nothing (`"content":""` or `"delta":{}`: a token that detokenizes to no text yet).
/// A stream cut right after one of those was cut: its real end is a chunk with a finish
/// reason (then, with `include_usage`, a usage chunk with `"choices":[]`, then `[DONE]`). The
/// client gets the error event. Before, the usage in a chunk that delivers nothing read as
/// the end. OpenRouter's usage chunk (an empty delta beside the usage) right after the finish
/// chunk is still the end (`streams_that_end_as_providers_end_them_get_nothing_added`).
#[tokio::test]
async fn a_usage_every_chunk_stream_cut_after_an_empty_delta_ends_with_an_error_event() {
    const VLLM_EMPTY: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":6,\"completion_tokens\":1}}\n\n";
    const VLLM_NO_DELTA: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":6,\"completion_tokens\":1}}\n\n";
    let long_content = leaked(VLLM_CONTENT.replace("\"hi\"", &format!("\"{}\"", "x".repeat(5000))));
    let up = Upstream::start().await;
    for (model, frames) in [
        ("empty", vec![VLLM_ROLE, VLLM_CONTENT, VLLM_EMPTY]),
        ("no-delta", vec![VLLM_ROLE, VLLM_CONTENT, VLLM_NO_DELTA]),
        (
            "two-empty",
            vec![VLLM_ROLE, VLLM_CONTENT, VLLM_EMPTY, VLLM_NO_DELTA],
        ),
        (
            "coalesced",
            vec![VLLM_ROLE, leaked([VLLM_CONTENT, VLLM_EMPTY].concat())],
        ),
        // After a content chunk longer than the 4 KiB kept of a frame.
        ("after-long", vec![VLLM_ROLE, long_content, VLLM_EMPTY]),
    ] {
        up.set(model, Behavior::StreamFrames(frames.clone()));
        let res = stream(&up, model, &[]).await;
        assert_eq!(attempts_header(&res), format!("{model}=ok"));
        assert_sent_then_chat_error_event(&text(res).await, &frames.concat());
    }
}

/// A first chat delta whose members are all `null` (`"tool_calls":null` alone, or
/// `function_call`, `refusal`, `reasoning_content`...), empty strings or empty lists says
/// nothing: an error event right after it falls back, and the next model answers. Before, a
/// delta without `content` or `role` counted as content, and the error went to the caller.
#[tokio::test]
async fn an_error_after_a_first_delta_of_nulls_without_content_falls_back() {
    for first in [
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":null},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"refusal\":null,\"reasoning_content\":null}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"finish_reason\":null,\"delta\":{\"reasoning\":null}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"audio\":\"\",\"annotations\":[]},\"finish_reason\":null}]}\n\n",
    ] {
        falls_back_past(vec![first, PROVIDER_ERROR]).await;
    }
}

/// A first delta with a real tool call is content: the stream, its error included, goes to
/// the caller as it came.
#[tokio::test]
async fn a_first_delta_with_a_tool_call_is_content() {
    passes_on_unchanged(vec![
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        PROVIDER_ERROR,
    ])
    .await;
}
