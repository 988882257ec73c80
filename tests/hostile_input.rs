//! Hostile input through the full stack over real sockets: a hyper HTTP/1 server (as a gateway
//! runs it) in front of AutoRouteLayer -> FallbackLayer -> hyper-util client -> the scripted
//! upstream.
//!
//! Every rejection must be an OpenAI-shaped JSON error with the right status, must not reach
//! the upstream, and must not take the server down (a good request after it still works).

mod support;

include!("support/gateway_modules.rs");

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};

const PATH: &str = "/v1/chat/completions";
const LIMIT: usize = 64 * 1024;

fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("small", 16_000, 0.15, 0.6),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ])
}

/// The gateway: hyper's server with a header read timeout, tower-http's request body timeout,
/// then the routing layers (both with a 64 KiB body limit) in front of the upstream.
async fn gateway(up: &Upstream) -> SocketAddr {
    gateway_with_body_timeout(up, Duration::from_millis(300)).await
}

/// [`gateway`] with another body timeout (between two frames of a request body).
async fn gateway_with_body_timeout(up: &Upstream, body_timeout: Duration) -> SocketAddr {
    let stack = ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(AutoRouteLayer::new(catalog()).max_body_bytes(LIMIT))
        .layer(FallbackLayer::new().max_body_bytes(LIMIT))
        .service(routed_client(up.addr, vec![]));
    serve(stack, Some(Duration::from_millis(300))).await
}

/// The gateway example's app (its axum `Router`, same catalog and limit), served by the
/// example's own `serve_with_timeouts` (hyper's `header_read_timeout` and the example's
/// `StallTimeoutLayer`), with short timeouts.
async fn example_gateway(up: &Upstream) -> SocketAddr {
    let toml = format!(
        "upstream = \"http://{}/v1\"\nmax_body_bytes = {LIMIT}\n\n\
         [[models]]\nid = \"small\"\ncontext_window = 16000\ninput_price = 0.15\noutput_price = 0.6\n\n\
         [[models]]\nid = \"large\"\ncontext_window = 200000\ninput_price = 3.0\noutput_price = 15.0\n",
        up.addr
    );
    let config = config::Config::from_toml(&toml).unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let router = app::build(&config, &|_: &str| None, tls).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app::serve_with_timeouts(
        listener,
        router,
        std::future::pending(),
        Duration::from_millis(300),
        Duration::from_millis(300),
    ));
    addr
}

/// Sends `body` (raw bytes) as a chat completion to the gateway.
async fn post(addr: SocketAddr, body: impl Into<Bytes>) -> (StatusCode, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{addr}{PATH}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body_bytes(body).await)
}

/// Asserts an OpenAI-shaped JSON error with this status and code; returns the error object.
fn assert_rejection(
    answer: &(StatusCode, http::HeaderMap, Bytes),
    want: StatusCode,
    code: &str,
) -> Value {
    let (status, headers, body) = answer;
    assert_eq!(*status, want, "{}", String::from_utf8_lossy(body));
    assert_eq!(headers["content-type"], "application/json");
    let json: Value = serde_json::from_slice(body).unwrap();
    assert!(is_openai_error(&json), "{json}");
    assert_eq!(json["error"]["code"], code, "{json}");
    json["error"].clone()
}

/// The server still answers a good request (no panic took it down), through both layers.
async fn still_serves(addr: SocketAddr, up: &Upstream) {
    let before = up.received().len();
    let (status, headers, _) = post(
        addr,
        r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-router-attempts"], "small=ok");
    assert_eq!(up.received().len(), before + 1);
}

/// A gateway (the example's app when `example`) over a fresh upstream, and a raw connection to
/// it that has sent `head`.
async fn raw_client(head: &str, example: bool) -> (Upstream, SocketAddr, TcpStream) {
    let up = Upstream::start().await;
    let addr = if example {
        example_gateway(&up).await
    } else {
        gateway(&up).await
    };
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    (up, addr, stream)
}

/// Reads a whole answer from a raw socket: its status and its JSON body, an OpenAI-shaped
/// error (`Content-Length` framed, as the layers' rejections are). `None` if the connection
/// closes before a head.
async fn read_answer<R: AsyncRead + Unpin>(stream: &mut R) -> Option<(u16, Value)> {
    let (status, json) = read_response(stream).await?;
    assert!(is_openai_error(&json), "{json}");
    Some((status, json))
}

/// Reads a whole `Content-Length` framed JSON answer from a raw socket.
async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> Option<(u16, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (status, len, start) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len: usize = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })?;
            break (status, len, end + 4);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    while buf.len() < start + len {
        let n = stream.read(&mut chunk).await.ok()?;
        assert!(n > 0, "body cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    let json: Value = serde_json::from_slice(&buf[start..start + len]).unwrap();
    Some((status, json))
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_before_the_client_finishes_sending() {
    let up = Upstream::start().await;
    // A body timeout far above the client's 5 ms pace: a scheduler stall on a busy machine
    // must not turn the 413 into a 408.
    let addr = gateway_with_body_timeout(&up, Duration::from_secs(5)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    // No Content-Length: the limit can only be enforced while the body streams in. The client
    // means to send 1 MiB, slowly, 1 KiB every 5 ms (each chunk within the body timeout).
    const CHUNK: usize = 1024;
    const TOTAL: usize = 1024 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        write.write_all(head.as_bytes()).await.unwrap();
        let data = format!("{CHUNK:x}\r\n{}\r\n", "x".repeat(CHUNK));
        while counter.load(Ordering::SeqCst) < TOTAL {
            if write.write_all(data.as_bytes()).await.is_err() {
                break;
            }
            counter.fetch_add(CHUNK, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (status, json) = read_answer(&mut read).await.expect("an answer");
    let sent_at_answer = sent.load(Ordering::SeqCst);
    // The answer came while the client was still sending, soon after the limit: the server
    // stopped reading there (the margin is a second of the client's pace, for slow machines).
    // (Counted, not `is_finished`: once the answer is in, the client's next write may fail
    // on the closed connection and end the sender at any moment.)
    assert!(sent_at_answer < TOTAL, "the client had finished sending");
    assert_eq!(status, 413);
    assert_eq!(json["error"]["code"], "request_too_large");
    println!("413 after the client sent {sent_at_answer} bytes (limit {LIMIT})");
    assert!(
        sent_at_answer > LIMIT && sent_at_answer < LIMIT + 200 * CHUNK,
        "{sent_at_answer}"
    );
    sender.abort();
    assert!(up.received().is_empty(), "the upstream was not called");
    still_serves(addr, &up).await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_body_byte() {
    // Headers only: the body never comes, the answer does.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    let (up, _, mut stream) = raw_client(&head, false).await;
    let (status, json) = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(status, 413);
    assert_eq!(json["error"]["code"], "request_too_large");
    assert!(up.received().is_empty());
}

/// Without `max_body_bytes`, both layers take bodies of up to 32 MiB
/// (`payload::DEFAULT_MAX_BODY_BYTES`, the documented default): a declared length one byte
/// over is a 413 naming the limit, before any body byte; one of exactly the limit is read
/// (here it stalls: the body timeout's 408).
#[tokio::test]
async fn the_default_body_limit_is_32_mib() {
    assert_eq!(tower_llm_router::payload::DEFAULT_MAX_BODY_BYTES, 32 << 20);
    let up = Upstream::start().await;
    let stack = ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(200)))
        .layer(AutoRouteLayer::new(catalog()))
        .layer(FallbackLayer::new())
        .service(routed_client(up.addr, vec![]));
    let addr = serve(stack, None).await;
    for (length, status, code) in [
        (33_554_433, 413, "request_too_large"),
        (33_554_432, 408, "request_timeout"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n{{\"model\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut stream));
        let (got, json) = answer.await.expect("in time").expect("an answer");
        assert_eq!(
            (got, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{json}"
        );
        if status == 413 {
            let message = json["error"]["message"].as_str().unwrap();
            assert!(message.contains("33554432"), "{message}");
        }
    }
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn a_client_too_slow_with_its_headers_is_disconnected() {
    for example in [false, true] {
        let (up, addr, mut stream) = raw_client(
            &format!("POST {PATH} HTTP/1.1\r\nhost: gateway\r\n"),
            example,
        )
        .await;
        // Never finishes its headers: `header_read_timeout` (300 ms) closes the connection.
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server closed the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(up.received().is_empty());
        still_serves(addr, &up).await;
    }
}

/// The header-read timeout also runs while a keep-alive connection waits for its next request
/// (hyper's semantics): a connection that answered one request
/// and then sends half a head is closed, and one that sends its next head in time is served.
#[tokio::test]
async fn a_keep_alive_connection_gets_the_header_timeout_for_each_request() {
    let request = |body: &str| {
        format!(
            "POST {PATH} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let body = r#"{"model":"small","messages":[{"role":"user","content":"hi"}]}"#;
    for example in [false, true] {
        let (up, _addr, mut stream) = raw_client(&request(body), example).await;
        let (status, _) = read_response(&mut stream).await.expect("the first answer");
        assert_eq!(status, 200);
        // In time, within the same connection: served (a short pause, well inside the
        // 300 ms, which a busy machine's scheduling must not use up).
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(request(body).as_bytes()).await.unwrap();
        let (status, _) = read_response(&mut stream).await.expect("the second answer");
        assert_eq!(status, 200);
        // Then half a head, never finished: closed by the timeout (300 ms).
        stream
            .write_all(format!("POST {PATH} HTTP/1.1\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server closed the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(up.received().len(), 2);
    }
}

/// The example's head timeout (300 ms here) is for heads only: an answer that takes longer, or
/// a stream that pauses for longer, is in flight and is not cut (the example closes
/// connections that have had no request in flight for three looks: `head_timeout`).
#[tokio::test]
async fn answers_slower_than_the_head_timeout_are_not_cut() {
    let up = Upstream::start().await;
    let addr = example_gateway(&up).await;
    let second = Duration::from_secs(1);
    up.set("small", Behavior::Delay(second));
    still_serves(addr, &up).await;
    up.set("small", Behavior::StreamPause(second));
    let (status, _, body) = post(
        addr,
        r#"{"model":"small","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"data: [DONE]\n\n"), "{body:?}");
}

#[tokio::test]
async fn a_client_too_slow_with_its_body_gets_a_json_error() {
    // Declares 200 bytes, sends 20, then stalls: the body timeout (300 ms between frames) fails
    // the body and the layer answers instead of waiting forever: 408, from the example's own
    // timeout and from tower-http's `RequestBodyTimeoutLayer` (whose error says "timeout").
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"model\":\"auto\",\"me"
    );
    for example in [false, true] {
        let (up, addr, mut stream) = raw_client(&head, example).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream))
            .await
            .expect("an answer while the client stalls");
        let (status, json) = answer.expect("a response");
        assert_eq!(status, 408, "{json}");
        assert_eq!(json["error"]["code"], "request_timeout");
        assert!(up.received().is_empty());
        still_serves(addr, &up).await;
    }
}

#[tokio::test]
async fn an_enormous_models_array_is_refused_with_a_400() {
    let up = Upstream::start().await;
    let addr = gateway(&up).await;
    // 100k entries do not fit the 64 KiB gateway limit: a second gateway with the default
    // 32 MiB limit shows the array itself is refused, after reading 65 entries.
    let big = ServiceBuilder::new()
        .layer(AutoRouteLayer::new(catalog()))
        .layer(FallbackLayer::new())
        .service(routed_client(up.addr, vec![]));
    let big = serve(big, None).await;
    let models: Vec<String> = (0..100_000).map(|i| format!("m{i}")).collect();
    for model in ["auto", "gpt-4o"] {
        let body = serde_json::json!({"model": model, "models": models, "messages": []});
        let body = Bytes::from(body.to_string());
        assert_rejection(
            &post(addr, body.clone()).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
        );

        let started = std::time::Instant::now();
        let error = assert_rejection(
            &post(big, body).await,
            StatusCode::BAD_REQUEST,
            "too_many_models",
        );
        assert_eq!(error["param"], "models");
        println!(
            "model {model}: 100k models refused in {:?}",
            started.elapsed()
        );
    }
    assert!(up.received().is_empty());
    still_serves(addr, &up).await;
}

#[tokio::test]
async fn deep_json_is_refused_with_a_400() {
    let up = Upstream::start().await;
    let addr = gateway(&up).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies = [
        format!(r#"{{"model":"auto","messages":{deep}}}"#),
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{deep}}}]}}"#),
        format!(r#"{{"model":"gpt-4o","metadata":{deep}}}"#),
        // Objects nest too, and an unclosed one is still refused.
        format!(r#"{{"model":"auto","x":{}"#, r#"{"a":"#.repeat(10_000)),
    ];
    for body in bodies {
        let error = assert_rejection(
            &post(addr, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        );
        assert!(error["param"].is_null());
    }
    // A bare deep array is refused at its first byte: it is not an object.
    assert_rejection(
        &post(addr, deep).await,
        StatusCode::BAD_REQUEST,
        "not_an_object",
    );
    assert!(up.received().is_empty());
    still_serves(addr, &up).await;
}

#[tokio::test]
async fn non_utf8_invalid_json_and_duplicate_keys_are_refused_with_a_400() {
    let up = Upstream::start().await;
    let addr = gateway(&up).await;
    let cases: Vec<(Vec<u8>, &str, Option<&str>)> = vec![
        (
            b"{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"
                .to_vec(),
            "invalid_json",
            None,
        ),
        (b"\xc3\x28".to_vec(), "invalid_json", None),
        (b"{\"model\":\"gpt-4o\",".to_vec(), "invalid_json", None),
        (
            b"{\"model\":\"gpt-4o\"} trailing".to_vec(),
            "invalid_json",
            None,
        ),
        (b"".to_vec(), "invalid_json", None),
        (b"null".to_vec(), "not_an_object", None),
        (
            b"{\"model\":\"a\",\"model\":\"b\"}".to_vec(),
            "duplicate_key",
            Some("model"),
        ),
        (
            b"{\"model\":\"auto\",\"m\\u006fdel\":\"gpt-4o\"}".to_vec(),
            "duplicate_key",
            Some("model"),
        ),
        (
            b"{\"models\":[\"a\"],\"models\":[\"b\"]}".to_vec(),
            "duplicate_key",
            Some("models"),
        ),
        (b"{\"model\":7}".to_vec(), "bad_model", Some("model")),
        (
            b"{\"model\":\"a\",\"models\":[1]}".to_vec(),
            "bad_models",
            Some("models"),
        ),
    ];
    for (body, code, param) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let error = assert_rejection(&post(addr, body).await, StatusCode::BAD_REQUEST, code);
        assert_eq!(error["type"], "invalid_request_error", "{shown}");
        assert_eq!(error["param"].as_str(), param, "{shown}");
    }
    assert!(
        up.received().is_empty(),
        "no rejection reached the upstream"
    );
    still_serves(addr, &up).await;
}

/// Model ids are the client's, and the layers repeat them: in the `x-llm-router-*` headers, in
/// the shared health store (an entry per model that failed with a rate limit or downtime, up to
/// 4096) and in every span and log line. An id as long as the body made an answer whose headers
/// no client reads (hyper's refused the 1 MiB one: `Parse(TooLarge)`, h11 refuses 64 KiB), and
/// while the upstream answered 429 to everything (the operator's key over its limit, which
/// clients can bring about), ids as long as request bodies stayed in the store, 4096 of them.
/// An id over `MAX_MODEL_ID_BYTES` is now refused before any upstream call; one at the limit is
/// served, headers and all, and a real model still cools down.
#[tokio::test]
async fn model_ids_longer_than_any_real_one_are_refused() {
    use tower_llm_router::health::{Health, InMemoryHealth};
    use tower_llm_router::payload::MAX_MODEL_ID_BYTES;
    const LIMITED: &str = r#"{"error":{"message":"Rate limit exceeded","code":429}}"#;
    let up = Upstream::start().await;
    let long = "m".repeat(1024 * 1024);
    let longest = "m".repeat(MAX_MODEL_ID_BYTES);
    let real = "anthropic/claude-sonnet-4";
    for model in [long.as_str(), longest.as_str(), real] {
        up.set(model, Behavior::Status(429, vec![], LIMITED));
    }
    let health = Arc::new(InMemoryHealth::new());
    let stack = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .health(health.clone())
                .max_body_bytes(4 << 20),
        )
        .service(routed_client(up.addr, vec![]));
    let addr = serve(stack, None).await;
    let chat = |model: &str, models: &[&str]| {
        serde_json::json!({"model": model, "models": models,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };

    let answer = post(addr, chat(&long, &[])).await;
    assert_rejection(&answer, StatusCode::BAD_REQUEST, "bad_model");
    let answer = post(addr, chat(real, &[&long])).await;
    assert_rejection(&answer, StatusCode::BAD_REQUEST, "bad_models");
    assert!(up.received().is_empty(), "a refused request went upstream");
    assert!(!health.is_cooling_down(&long));

    for model in [longest.as_str(), real] {
        let (status, headers, _) = post(addr, chat(model, &[])).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["x-llm-router-model"], model);
        assert!(health.is_cooling_down(model), "{model}");
    }
    assert_eq!(up.received().len(), 2);
}
