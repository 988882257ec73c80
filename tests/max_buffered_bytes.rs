//! `max_buffered_bytes`: the bytes of request bodies a layer's services hold at once, over real
//! sockets: hyper's server with the layers in front of the scripted upstream, and clients that
//! write raw HTTP/1.1 (to stall, to leave mid-upload, to send chunked bodies).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};

/// A chat body of exactly `size` bytes (padded in its message) asking for `model`, and `models`
/// after it when given.
fn chat_body(model: &str, models: &[&str], size: usize) -> String {
    let models = if models.is_empty() {
        String::new()
    } else {
        format!(r#""models":{},"#, serde_json::to_string(models).unwrap())
    };
    let head = format!(r#"{{"model":"{model}",{models}"messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// A streamed chat body of exactly `size` bytes.
fn stream_body(model: &str, size: usize) -> String {
    let head =
        format!(r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
}

/// Serves `FallbackLayer::new().max_buffered_bytes(limit)` (answering transport errors) in
/// front of `up` with hyper's server.
async fn fallback_server(up: &Upstream, limit: usize) -> SocketAddr {
    let stack = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .max_buffered_bytes(limit)
                .answer_transport_errors(true),
        )
        .service(routed_client(up.addr, vec![]));
    serve(stack, None).await
}

/// An answer as the client read it.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn parse(raw: &[u8]) -> Self {
        let raw = String::from_utf8_lossy(raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Self {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    /// Asserts the layer's own 503 for a body that does not fit.
    fn assert_over_budget(&self) {
        assert_eq!(self.status, 503, "{}\n{}", self.head, self.body);
        assert!(self.head.contains("retry-after: 1\r\n"), "{}", self.head);
        assert!(self.head.contains("content-type: application/json"));
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert!(is_openai_error(&json), "{json}");
        assert_eq!(json["error"]["type"], "server_error");
        assert_eq!(json["error"]["code"], "overloaded");
    }
}

/// Sends `head` (without its final blank line) and `body` on a fresh connection that closes
/// after the answer, and reads the answer.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(b"connection: close\r\n\r\n").await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    Answer::parse(&raw)
}

const CHAT_HEAD: &str =
    "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n";

/// Posts `body` with its `Content-Length`.
async fn post(addr: SocketAddr, body: &str) -> Answer {
    let head = format!("{CHAT_HEAD}content-length: {}\r\n", body.len());
    exchange(addr, &head, body.as_bytes()).await
}

/// Posts `body` chunked (no length declared), in chunks of at most 1 KiB.
async fn post_chunked(addr: SocketAddr, body: &str) -> Answer {
    let head = format!("{CHAT_HEAD}transfer-encoding: chunked\r\n");
    exchange(addr, &head, &chunked(body.as_bytes(), true)).await
}

/// `bytes` in HTTP/1.1 chunks of at most 1 KiB, and the last chunk when `end`.
fn chunked(bytes: &[u8], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    if end {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// An upload that stops after `sent` bytes of its body and stays open: the head (declaring
/// `declared` bytes, or chunked without), then the bytes.
async fn stalled_upload(addr: SocketAddr, declared: Option<usize>, sent: usize) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let framing = match declared {
        Some(len) => format!("content-length: {len}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_owned(),
    };
    let start = br#"{"model":"a","messages":[{"role":"user","content":""#;
    let mut body = start.to_vec();
    body.resize(sent, b'x');
    let body = match declared {
        Some(_) => body,
        None => chunked(&body, false),
    };
    conn.write_all(format!("{CHAT_HEAD}{framing}\r\n").as_bytes())
        .await
        .unwrap();
    conn.write_all(&body).await.unwrap();
    // The server has read what was sent.
    tokio::time::sleep(Duration::from_millis(150)).await;
    conn
}

/// Waits (up to ten seconds) until the upstream received `n` requests.
async fn wait_received(up: &Upstream, n: usize) {
    for _ in 0..500 {
        if up.received().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the upstream received {} requests, not {n}",
        up.received().len()
    );
}

/// Posts `body` until it is not refused for the budget (up to ten seconds: the server notices
/// a client that left when it next reads its connection).
async fn post_once_freed(addr: SocketAddr, body: &str) -> Answer {
    for _ in 0..200 {
        let answer = post(addr, body).await;
        if answer.status != 503 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the budget was not given back within ten seconds");
}

/// While `held` is held (its model slow upstream; `n` requests reached it before), `refused`
/// does not fit; once `held` is answered, `after` does: the budget counts exactly what is held,
/// and the held body is given back.
async fn holds_exactly(up: &Upstream, addr: SocketAddr, n: usize, bodies: [String; 3]) {
    let [held, refused, after] = bodies;
    let held = tokio::spawn(async move { post(addr, &held).await });
    wait_received(up, n + 1).await;
    post(addr, &refused).await.assert_over_budget();
    let held = held.await.unwrap();
    assert_eq!(held.status, 200, "{}", held.body);
    let answer = post(addr, &after).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn requests_beyond_the_budget_get_a_503_while_those_within_succeed() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_millis(800)));
    let addr = fallback_server(&up, 10_000).await;

    // Two bodies of 4000 bytes are held (their upstream is slow): 8000 of 10 000.
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { post(addr, &chat_body("slow", &[], 4000)).await }))
        .collect();
    wait_received(&up, 2).await;
    // A third does not fit, by its declared length and as it arrives.
    post(addr, &chat_body("fast", &[], 4000))
        .await
        .assert_over_budget();
    assert_eq!(up.received().len(), 2, "the refused body is not sent on");
    // A small one does.
    let small = post(addr, &chat_body("fast", &[], 1500)).await;
    assert_eq!(small.status, 200, "{}", small.body);

    for answer in held {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // Both given back: 9000 bytes fit again.
    let answer = post(addr, &chat_body("fast", &[], 9000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(up.models_received(), ["slow", "slow", "fast", "fast"]);
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_gives_its_bytes_back() {
    let up = Upstream::start().await;
    let addr = fallback_server(&up, 10_000).await;

    // 6000 of 8000 declared bytes sent, then the client waits.
    let stalled = stalled_upload(addr, Some(8000), 6000).await;
    post(addr, &chat_body("a", &[], 5000))
        .await
        .assert_over_budget();
    // A length that cannot fit is refused before its body is read: none is sent here.
    let head = format!("{CHAT_HEAD}content-length: 5000\r\n");
    exchange(addr, &head, b"").await.assert_over_budget();
    drop(stalled);
    let answer = post_once_freed(addr, &chat_body("a", &[], 9000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(up.models_received(), ["a"]);
}

#[tokio::test]
async fn a_streamed_answer_holds_no_body_and_a_client_that_leaves_it_frees_nothing_twice() {
    let up = Upstream::start().await;
    up.set("forever", Behavior::StreamForever);
    let addr = fallback_server(&up, 10_000).await;

    // The answer's head is out: no attempt follows, the body is let go while the stream runs.
    let mut streaming = TcpStream::connect(addr).await.unwrap();
    let body = stream_body("forever", 8000);
    let head = format!("{CHAT_HEAD}content-length: {}\r\n\r\n", body.len());
    streaming.write_all(head.as_bytes()).await.unwrap();
    streaming.write_all(body.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let read = streaming.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 200"));
    let answer = post(addr, &chat_body("a", &[], 9000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The client leaves mid-stream: the budget is as it was (nothing given back twice).
    drop(streaming);
    wait_for_drops(&up, 1).await;
    up.set("slow", Behavior::Delay(Duration::from_millis(800)));
    let bodies = [
        chat_body("slow", &[], 6000),
        chat_body("a", &[], 5000),
        chat_body("a", &[], 9000),
    ];
    holds_exactly(&up, addr, 2, bodies).await;
}

#[tokio::test]
async fn bodies_are_given_back_after_a_fallback_chain_and_after_an_error() {
    let up = Upstream::start().await;
    up.set(
        "bad",
        Behavior::Status(500, vec![], r#"{"error":{"message":"down"}}"#),
    );
    up.set("gone", Behavior::Reset);
    up.set("slow", Behavior::Delay(Duration::from_millis(800)));
    let addr = fallback_server(&up, 30_000).await;
    // Over 16 KiB: the attempts send slices of the buffered body, not copies.
    let size = 20_000;

    let chain = post(addr, &chat_body("bad", &["gone", "good"], size)).await;
    assert_eq!(chain.status, 200, "{}", chain.body);
    assert!(
        chain.head.contains("x-llm-router-model: good"),
        "{}",
        chain.head
    );
    let failed = post(addr, &chat_body("bad", &["gone"], size)).await;
    assert_eq!(failed.status, 502, "{}", failed.body);

    // Both chains' bodies are given back, exactly: one body fits, a second does not.
    let bodies = [
        chat_body("slow", &[], size),
        chat_body("a", &[], size),
        chat_body("a", &[], 29_000),
    ];
    holds_exactly(&up, addr, 5, bodies).await;
}

#[tokio::test]
async fn a_chunked_upload_holds_only_what_it_sent() {
    let up = Upstream::start().await;
    // Far below `max_body_bytes` (32 MiB): a chunked body is not charged the largest size.
    let addr = fallback_server(&up, 4096).await;

    let answer = post_chunked(addr, &chat_body("a", &[], 200)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // 3000 bytes sent and stalled: 1000 more fit, 1500 do not.
    let stalled = stalled_upload(addr, None, 3000).await;
    let fits = post_chunked(addr, &chat_body("a", &[], 1000)).await;
    assert_eq!(fits.status, 200, "{}", fits.body);
    post_chunked(addr, &chat_body("a", &[], 1500))
        .await
        .assert_over_budget();
    drop(stalled);
    let answer = post_once_freed(addr, &chat_body("a", &[], 4000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(up.models_received(), ["a", "a", "a"]);
}

/// `AutoRouteLayer` in front of `FallbackLayer`, each with a budget, in front of `up`.
async fn two_layer_server(up: &Upstream, auto: Option<usize>, fallback: usize) -> SocketAddr {
    let catalog = Catalog::from_profiles([ModelProfile::new("small", 128_000, 0.1, 0.4)]);
    let mut auto_layer = AutoRouteLayer::new(catalog);
    if let Some(limit) = auto {
        auto_layer = auto_layer.max_buffered_bytes(limit);
    }
    let stack = ServiceBuilder::new()
        .layer(auto_layer)
        .layer(FallbackLayer::new().max_buffered_bytes(fallback))
        .service(routed_client(up.addr, vec![]));
    serve(stack, None).await
}

#[tokio::test]
async fn two_layers_with_budgets_count_a_body_once_and_give_it_back_once() {
    let up = Upstream::start().await;
    up.set("bad", Behavior::Status(503, vec![], "{}"));
    // The fallback layer's budget is smaller than any body: the body it takes over is counted
    // by the layer that read it.
    let addr = two_layer_server(&up, Some(10_000), 100).await;
    for body in [
        chat_body("auto", &[], 6000),
        chat_body("a", &[], 6000),
        chat_body("bad", &["a"], 6000),
        chat_body("auto", &[], 9000),
    ] {
        let answer = post(addr, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(up.models_received(), ["small", "a", "bad", "a", "small"]);

    // Given back once, exactly: one body of 6000 is held (its rewrite, for an auto request),
    // and a second does not fit.
    up.set("small", Behavior::Delay(Duration::from_millis(800)));
    let bodies = [
        chat_body("auto", &[], 6000),
        chat_body("a", &[], 6000),
        chat_body("auto", &[], 9000),
    ];
    holds_exactly(&up, addr, 5, bodies).await;
}

#[tokio::test]
async fn a_body_handed_over_by_a_layer_without_a_budget_is_counted_below() {
    let up = Upstream::start().await;
    let addr = two_layer_server(&up, None, 5000).await;
    let answer = post(addr, &chat_body("auto", &[], 4000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    post(addr, &chat_body("auto", &[], 6000))
        .await
        .assert_over_budget();
    assert_eq!(up.models_received(), ["small"]);
}

/// `FallbackMiddleware` buffers the body too: its budget holds for the requests of every
/// client built with it.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_middleware_holds_no_more_than_its_budget() {
    use tower_llm_router::reqwest::FallbackMiddleware;

    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_millis(800)));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default().max_buffered_bytes(5000))
        .build();
    let send = |body: String| {
        let request = client
            .post(up.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = response.bytes().await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, retry_after, json)
        }
    };
    let held = tokio::spawn(send(chat_body("slow", &[], 4000)));
    wait_received(&up, 1).await;
    let (status, retry_after, json) = send(chat_body("a", &[], 4000)).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(retry_after.unwrap(), "1");
    assert_eq!(json["error"]["code"], "overloaded");
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(send(chat_body("a", &[], 4900)).await.0, 200);
    assert_eq!(up.models_received(), ["slow", "a"]);
}
