//! examples/gateway against hostile or broken peers over loopback: clients that misuse the
//! connection and upstreams that misbehave. Each test is a defect found by an attacker's review
//! (session 13), kept as its regression test.

mod support;

use support::{raw_upstream, LogBuf};

include!("support/gateway_modules.rs");

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The gateway built from `config` (no environment), served on this runtime as `main` serves
/// each worker. Returns its address.
async fn gateway(config: &str) -> SocketAddr {
    let config = config::Config::from_toml(config).unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let mut apps = app::build_workers(&config, &|_| None, tls, NonZeroUsize::MIN).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = apps.pop().unwrap();
    tokio::spawn(app::serve(listener, app, std::future::pending()));
    addr
}

/// Reads a request head from `stream` (its body, if any, is left unread); false if the peer
/// left first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// An upstream that answers every request with an endless 200, as fast as the gateway takes it:
/// an SSE stream of 16 KiB content events when `stream`, else a JSON answer that declares
/// 1 GiB. `left` is set once a write fails: the gateway has closed the connection.
async fn endless_upstream(stream: bool, left: Arc<AtomicBool>) -> SocketAddr {
    raw_upstream(move |mut conn| {
        let left = left.clone();
        async move {
            if !read_head(&mut conn).await {
                return;
            }
            let content = "x".repeat(16 * 1024);
            let (head, chunk) = if stream {
                let event = format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
                );
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                (head, format!("{:x}\r\n{event}\r\n", event.len()))
            } else {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 1073741824\r\n\r\n\
                            {\"choices\":[{\"message\":{\"content\":\"";
                (head, content)
            };
            let mut sent = conn.write_all(head.as_bytes()).await;
            while sent.is_ok() {
                sent = conn.write_all(chunk.as_bytes()).await;
            }
            left.store(true, Ordering::SeqCst);
        }
    })
    .await
}

/// A client connection whose receive buffer is small, so that the gateway's writes block soon
/// once the client stops reading.
async fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A gateway with `[timeouts] idle = 0.5` in front of an [`endless_upstream`], and a
/// [`small_window_client`] that has sent it a request (streamed or not) and read nothing yet.
/// The flag is set once the gateway has closed the upstream connection.
async fn endless_request(stream: bool) -> (TcpStream, Arc<AtomicBool>) {
    let left = Arc::new(AtomicBool::new(false));
    let upstream = endless_upstream(stream, left.clone()).await;
    let config = format!(
        "[[models]]\nid = \"endless\"\nupstream = \"http://{upstream}/v1\"\n\
         [timeouts]\nidle = 0.5\n"
    );
    let addr = gateway(&config).await;
    let mut client = small_window_client(addr).await;
    let body = format!(
        r#"{{"model":"endless","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    (client, left)
}

/// Returns once `flag` is set.
async fn until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that sends a request and then never reads its answer (a hung SDK, or a slowloris on
/// the answer side) must not hold its connection, and the upstream's with it, for good: the
/// gateway leaves it once it has accepted no byte for `[timeouts] idle`, and the upstream
/// connection is closed. Streamed and JSON answers alike. Before, both stayed open as long as
/// the client did (and held shutdown's drain as long, without `[timeouts] drain`).
#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_left_after_the_idle_timeout() {
    for stream in [true, false] {
        let (mut client, left) = endless_request(stream).await;
        // The client reads nothing from here on.
        let waited = tokio::time::timeout(Duration::from_secs(10), until(&left)).await;
        assert!(
            waited.is_ok(),
            "stream={stream}: the upstream connection is still held for a client that reads nothing"
        );
        // The client's connection was closed too: what it reads now ends.
        let mut sink = vec![0u8; 64 * 1024];
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        assert!(
            drained.is_ok(),
            "stream={stream}: the client's connection is still open"
        );
        drop(client);
    }
}

/// Sends a chat request over a fresh connection and reads its whole answer (`connection:
/// close`).
async fn chat_answer(addr: SocketAddr, body: &str) -> String {
    post_answer(addr, "/v1/chat/completions", body).await
}

/// A buffer that this thread's records go to until the guard drops, written as the gateway
/// writes them (its own field formatter and timer).
fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    // With this thread's subscriber the only one registered, tracing-core asks only the
    // calling thread's subscriber whether a call site is of interest when it is first hit: one
    // first hit by another test's thread (no subscriber) is then cached as of no interest, for
    // this thread too, and its records were lost here (when another test logged the request
    // line first). A global subscriber, registered too, makes it ask every registered one.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_timer(log::CachedTime)
        .fmt_fields(log::PlainFields)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A model id is the client's to choose (any id the configuration does not list goes to the
/// default upstream), and it reaches the logs: every record that names it must escape it, so
/// that a line break in it cannot start a line of the client's own making in the operator's
/// logs (a forged request line, a forged warning). The warning of a stream that broke after its
/// first byte wrote it as it came.
#[tokio::test]
async fn a_model_id_cannot_forge_a_log_line() {
    const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO gateway: forged";
    let model = format!("evil\n{FORGED}\r\n{FORGED}");
    let up = support::Upstream::start().await;
    up.set(&model, support::Behavior::StreamBreak(2));
    let (logs, _guard) = capture_logs();
    let addr = gateway(&format!("upstream = \"http://{}/v1\"\n", up.addr)).await;
    let body = serde_json::json!({"model": model, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let answer = chat_answer(addr, &body.to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""finish_reason":"error""#),
        "the stream broke: {answer}"
    );
    let logged = logs.text();
    assert!(logged.contains("upstream stream broke"), "{logged}");
    assert!(logged.contains("chat completion"), "{logged}");
    for line in logged.lines() {
        assert!(!line.starts_with(FORGED), "a forged line:\n{logged}");
    }
}

/// Without an allow-list, a client names any model the upstream serves and the gateway's key
/// pays for it: the priciest reasoning model as readily as the configured ones (an unlisted id
/// goes to the default upstream). `allow_models` holds clients to the ids and `*` patterns the
/// operator lists: another model in `model` or `models` is a 400 `model_not_allowed` before any
/// upstream call, and `auto` still routes among the `[[models]]` allowed.
#[tokio::test]
async fn allow_models_holds_clients_to_the_models_the_operator_pays_for() {
    let up = support::Upstream::start().await;
    let config = format!(
        r#"
upstream = "http://{}/v1"
allow_models = ["cheap", "openai/*-mini"]

[[models]]
id = "cheap"
context_window = 128000
input_price = 0.15
output_price = 0.6
"#,
        up.addr
    );
    let addr = gateway(&config).await;
    let post = |model: &str, models: &[&str]| {
        let body = serde_json::json!({"model": model, "models": models,
            "messages": [{"role": "user", "content": "hi"}]});
        async move { chat_answer(addr, &body.to_string()).await }
    };
    for (model, models) in [
        ("openai/o1-pro", &[][..]),
        ("cheap", &["anthropic/claude-opus-4"][..]),
    ] {
        let answer = post(model, models).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains(r#""code":"model_not_allowed""#), "{answer}");
    }
    assert!(up.received().is_empty(), "a refused model went upstream");
    for model in ["cheap", "openai/gpt-4o-mini", "auto"] {
        let answer = post(model, &[]).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{model}: {answer}");
    }
    assert_eq!(
        up.models_received(),
        ["cheap", "openai/gpt-4o-mini", "cheap"]
    );
}

/// A configured model or fallback that `allow_models` refuses would never be tried: startup
/// says so.
#[test]
fn a_configured_model_the_allow_list_refuses_is_told_at_startup() {
    let config = config::Config::from_toml(
        "allow_models = [\"openai/*\"]\n[[models]]\nid = \"openai/gpt-4o\"\n\
         [[models]]\nid = \"local\"\n[fallback]\nmodels = [\"openai/gpt-4o-mini\", \"other\"]\n",
    )
    .unwrap();
    let notes = config.model_notes().join("\n");
    for refused in ["\"local\"", "\"other\""] {
        assert!(
            notes.contains(&format!("allow_models does not allow {refused}")),
            "{notes}"
        );
    }
    assert!(!notes.contains("does not allow \"openai/"), "{notes}");
}

/// Found by the operator's review of session 14: a model both in `[[models]]` and in
/// `[fallback] models` that the list refuses was told twice at startup, and an empty
/// `allow_models` (every request refused) was not told at all.
#[test]
fn startup_tells_each_refused_model_once_and_an_allow_list_that_allows_nothing() {
    let config = config::Config::from_toml(
        "allow_models = [\"openai/*\"]\n[[models]]\nid = \"local\"\n\
         [fallback]\nmodels = [\"local\"]\n",
    )
    .unwrap();
    let notes = config.model_notes().join("\n");
    assert_eq!(
        notes
            .matches("allow_models does not allow \"local\"")
            .count(),
        1,
        "{notes}"
    );
    let notes = config::Config::from_toml("allow_models = []\n")
        .unwrap()
        .model_notes()
        .join("\n");
    assert!(notes.contains("allow_models is empty"), "{notes}");
}

/// Sends `GET path` over a fresh connection and reads the whole answer.
async fn get_answer(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"),
    )
    .await
}

/// Found by the operator's review of session 14: `GET /v1/models` listed every `[[models]]`
/// entry, those `allow_models` refuses too, so a client that picked one from the list got a
/// 400 `model_not_allowed`. The list and `GET /v1/models/{id}` now show only the models a
/// client may ask for (and `auto` only while an allowed model is priced).
#[tokio::test]
async fn the_model_list_shows_only_the_models_clients_may_ask_for() {
    let up = support::Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\nallow_models = [\"openai/*\"]\n\
         [[models]]\nid = \"openai/gpt-4o-mini\"\ninput_price = 0.15\n\
         [[models]]\nid = \"anthropic/claude-sonnet-4\"\ninput_price = 3.0\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let list = answer_json(&get_answer(addr, "/v1/models").await);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert_eq!(ids, ["auto", "openai/gpt-4o-mini"]);
    let refused = get_answer(addr, "/v1/models/anthropic/claude-sonnet-4").await;
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    let allowed = get_answer(addr, "/v1/models/openai/gpt-4o-mini").await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");

    // Only refused models priced: `auto` has none to choose from, and is not listed.
    let config = format!(
        "upstream = \"http://{}/v1\"\nallow_models = [\"openai/*\"]\n\
         [[models]]\nid = \"anthropic/claude-sonnet-4\"\ninput_price = 3.0\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let list = answer_json(&get_answer(addr, "/v1/models").await);
    assert_eq!(list["data"], serde_json::json!([]), "{list}");
}

/// The layers hold a chat body whole until the answer's head. Clients that upload large bodies
/// and stall (a byte a minute keeps the body timeout away) made the gateway hold one body per
/// connection they opened, without bound: 16 stalled 30 MiB uploads held 480 MiB of the
/// gateway's memory, and nothing stopped 200. `max_buffered_bytes` bounds the bodies held at
/// once: a request that does not fit is a 503 (`Retry-After`) before its body is read, and the
/// bytes of one that ends (here, its client leaves) are free again.
#[tokio::test]
async fn stalled_uploads_hold_no_more_than_max_buffered_bytes() {
    let up = support::Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\nmax_body_bytes = 1048576\nmax_buffered_bytes = 3145728\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let small = r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n\
                    content-type: application/json\r\ncontent-length: 1048576\r\n\r\n{\"x\":\"";
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&[b'x'; 512 * 1024]).await.unwrap();
        stalled.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = chat_answer(addr, small).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
    assert!(up.received().is_empty());

    // One stalled client leaves: its bytes are free for the next request.
    drop(stalled.pop());
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = chat_answer(addr, small).await;
            if !answer.starts_with("HTTP/1.1 503") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the bytes of the upload that ended are given back");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert_eq!(up.models_received(), ["a"]);
}

/// Sends `body` to `path` over a fresh connection and reads the whole answer (`connection:
/// close`).
async fn post_answer(addr: SocketAddr, path: &str, body: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request).await
}

/// Sends `request` (with `connection: close`) over a fresh connection and reads the whole
/// answer.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

/// The JSON body of a whole HTTP/1.1 answer (`Content-Length` framed, as the gateway's own
/// answers are).
fn answer_json(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// Found by the attacker's review of session 14: `allow_models` checked only the models a
/// request names. One that names none (no `model`, `"model": null`, `""`, `"models": []`) was
/// passed through untouched to the default upstream on the gateway's key, and an upstream that
/// picks a default model when none is named (OpenRouter: the account's default) served it with
/// a model the list does not allow. With `allow_models`, such a request is now a 400 naming
/// `model`, before any upstream call; a request whose `models` names the primary is checked as
/// before; and without `allow_models` a request without a model still goes on untouched.
#[tokio::test]
async fn allow_models_refuses_a_request_that_names_no_model() {
    let up = support::Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\nallow_models = [\"cheap\"]\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let unnamed = [
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":null,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"models":[],"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":null,"models":null,"messages":[]}"#,
        ),
        ("/v1/responses", r#"{"input":"hi"}"#),
    ];
    for (path, body) in unnamed {
        let answer = post_answer(addr, path, body).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{body}: {answer}");
        let error = answer_json(&answer);
        assert!(support::is_openai_error(&error), "{answer}");
        assert_eq!(error["error"]["param"], "model", "{answer}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["error"]["code"], "model_required", "{answer}");
    }
    assert!(
        up.received().is_empty(),
        "a request that names no model went upstream"
    );

    // Without `model`, the first of `models` is the primary: checked, and sent as `model`.
    let refused = r#"{"models":["openai/o1-pro"],"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = chat_answer(addr, refused).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(answer_json(&answer)["error"]["code"], "model_not_allowed");
    let allowed = r#"{"models":["cheap"],"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = chat_answer(addr, allowed).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.models_received(), ["cheap"]);

    // Without an allow-list there is nothing to check: the request goes on untouched.
    let open = gateway(&format!("upstream = \"http://{}/v1\"\n", up.addr)).await;
    let answer = chat_answer(open, unnamed[0].1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.received().len(), 2);
    assert_eq!(up.received()[1].model, None);
}

/// A chat completion as the scripted upstream answers it, for `Behavior::Status`.
const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}"#;

/// The value of `name` in a whole HTTP/1.1 answer's head, if it has one (the first).
fn answer_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = answer.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Found by the attacker's review of session 14: an upstream's `Set-Cookie` reached the
/// gateway's clients (a provider's session or bot-management cookies, set for the gateway's
/// own connection to it), and so did an upstream's redirect, which sent the client to a
/// provider's URL with the gateway's request. Cookies are now dropped from every upstream
/// answer, routed or passed through; a 3xx is an upstream failure: the chain moves on to the
/// next model, and on the last one the client gets the gateway's 502 JSON error, without the
/// `Location`.
#[tokio::test]
async fn an_upstreams_cookies_and_redirects_do_not_reach_the_client() {
    let up = support::Upstream::start().await;
    let cookies = vec![
        ("set-cookie", "__cf_bm=provider-session; Path=/; HttpOnly"),
        ("set-cookie", "session=provider-two"),
    ];
    up.set(
        "cookies",
        support::Behavior::Status(200, cookies.clone(), COMPLETION),
    );
    // A request without a model, which the layers pass through.
    up.set("", support::Behavior::Status(200, cookies, COMPLETION));
    let redirect = |status| {
        let headers = vec![
            ("location", "https://login.provider.example/account"),
            ("set-cookie", "moved=1"),
        ];
        support::Behavior::Status(status, headers, "")
    };
    for (model, status) in [
        ("moved-301", 301),
        ("moved-302", 302),
        ("moved-303", 303),
        ("moved-307", 307),
        ("moved-308", 308),
    ] {
        up.set(model, redirect(status));
    }
    let addr = gateway(&format!("upstream = \"http://{}/v1\"\n", up.addr)).await;
    let hi = r#""messages":[{"role":"user","content":"hi"}]"#;

    for body in [
        format!(r#"{{"model":"cookies",{hi}}}"#),
        format!(r#"{{{hi}}}"#),
    ] {
        let answer = chat_answer(addr, &body).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(answer_header(&answer, "set-cookie"), None, "{answer}");
        assert!(!answer.contains("provider-"), "{answer}");
    }

    for model in [
        "moved-301",
        "moved-302",
        "moved-303",
        "moved-307",
        "moved-308",
    ] {
        let answer = chat_answer(addr, &format!(r#"{{"model":"{model}",{hi}}}"#)).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{model}: {answer}");
        assert_eq!(answer_header(&answer, "location"), None, "{answer}");
        assert_eq!(answer_header(&answer, "set-cookie"), None, "{answer}");
        let error = answer_json(&answer);
        assert!(support::is_openai_error(&error), "{answer}");
        assert_eq!(error["error"]["code"], "upstream_unreachable", "{answer}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("redirect"), "{answer}");
        assert!(!message.contains("login.provider.example"), "{answer}");
    }

    // A redirect moves the chain on, as an upstream's failure.
    let chained = format!(r#"{{"model":"moved-302","models":["cookies"],{hi}}}"#);
    let answer = chat_answer(addr, &chained).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        answer_header(&answer, "x-llm-router-model"),
        Some("cookies")
    );
    // Classed as the 3xx status is: `downtime`, charged to the model (see below).
    assert_eq!(
        answer_header(&answer, "x-llm-router-attempts"),
        Some("moved-302=downtime, cookies=ok")
    );
    assert_eq!(answer_header(&answer, "set-cookie"), None, "{answer}");
    let models = up.models_received();
    assert_eq!(&models[models.len() - 2..], ["moved-302", "cookies"]);

    // Passed through (no model): the gateway's own 502, of the same shape.
    up.set("", redirect(307));
    let answer = chat_answer(addr, &format!(r#"{{{hi}}}"#)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(answer_header(&answer, "location"), None, "{answer}");
    assert_eq!(
        answer_json(&answer)["error"]["code"],
        "upstream_unreachable"
    );
}

/// An upstream that keeps redirecting (a moved base URL, a login portal) fails every request
/// the same way: its model cools down like one that is down, after `downtime_threshold` (3)
/// redirects in a row, and the next requests go to the next model first. Before, a redirect
/// was `other`, never charged, and every request tried that model first, in vain.
#[tokio::test]
async fn a_model_whose_upstream_keeps_redirecting_cools_down() {
    let up = support::Upstream::start().await;
    let moved = vec![("location", "https://api.provider.example/v2")];
    up.set("moved", support::Behavior::Status(308, moved, ""));
    up.set("ok", support::Behavior::Status(200, vec![], COMPLETION));
    let addr = gateway(&format!("upstream = \"http://{}/v1\"\n", up.addr)).await;
    let chained =
        r#"{"model":"moved","models":["ok"],"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        let answer = chat_answer(addr, chained).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(
            answer_header(&answer, "x-llm-router-attempts"),
            Some("moved=downtime, ok=ok")
        );
    }
    let answer = chat_answer(addr, chained).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        answer_header(&answer, "x-llm-router-attempts"),
        Some("ok=ok")
    );
    assert_eq!(
        up.models_received()
            .iter()
            .filter(|m| *m == "moved")
            .count(),
        3
    );
}

/// With `[fallback] retries`, a redirect is still asked once: the gateway's client turns it
/// into the crate's `RedirectNotFollowed`, which the retry rule knows (the same URL redirects
/// the same way), while a 503 is asked again.
#[tokio::test]
async fn with_retries_a_redirect_is_asked_once_and_a_503_again() {
    let up = support::Upstream::start().await;
    let moved = vec![("location", "https://api.provider.example/v2")];
    up.set("moved", support::Behavior::Status(307, moved, ""));
    up.set("down", support::Behavior::Status(503, vec![], ""));
    up.set("ok", support::Behavior::Status(200, vec![], COMPLETION));
    let config = format!(
        "upstream = \"http://{}/v1\"\n[fallback]\nretries = 1\nretry_backoff = 0.01\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let redirected =
        r#"{"model":"moved","models":["ok"],"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = chat_answer(addr, redirected).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        answer_header(&answer, "x-llm-router-attempts"),
        Some("moved=downtime, ok=ok")
    );
    let down = r#"{"model":"down","models":["ok"],"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = chat_answer(addr, down).await;
    assert_eq!(
        answer_header(&answer, "x-llm-router-attempts"),
        Some("down=downtime, down=downtime, ok=ok")
    );
    let asked = |model: &str| up.models_received().iter().filter(|m| *m == model).count();
    assert_eq!((asked("moved"), asked("down")), (1, 2));
}

/// Found by the attacker's review of session 14: the request body's only timeout was a stall
/// between two frames (60 s), so a client that sends its body a byte every 59 s kept its
/// connection, and its body's share of `max_buffered_bytes`, for as long as it liked.
/// `[timeouts] request_body` bounds the whole body: one still incomplete then is answered 408
/// (OpenAI's shape) and the upstream is not called. Here a byte every 100 ms, with a 0.5 s bound.
#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_answered_408_after_request_body() {
    let up = support::Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\n[timeouts]\nrequest_body = 0.5\n",
        up.addr
    );
    let addr = gateway(&config).await;
    let body = r#"{"model":"a","messages":[{"role":"user","content":"a slow hello"}]}"#;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(4), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    })
    .await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer yet to a body still trickling in: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let error = answer_json(&answer);
    assert!(support::is_openai_error(&error), "{answer}");
    assert_eq!(error["error"]["code"], "request_timeout", "{answer}");
    // The message says which bound the body missed, once (it said "the request body was not
    // received in time: the request body was not received in time").
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message.matches("not received in time").count(),
        1,
        "{message}"
    );
    assert!(message.contains("[timeouts] request_body"), "{message}");
    assert!(up.received().is_empty(), "a body cut short went upstream");
}

/// Checked for the attacker's review of session 14: a client that reads its answer a byte at a
/// time, slower than anything sends it, is left as one that reads nothing is, after
/// `[timeouts] idle`. Reading a byte does not reopen its receive window (TCP's silly-window
/// avoidance waits for room worth a segment, or half the buffer), so the gateway's write stays
/// blocked and `WriteStall` ends the connection, and the upstream call with it. Streamed and
/// JSON answers alike; here a byte every 200 ms, with `idle` 0.5 s.
#[tokio::test]
async fn a_client_that_reads_a_byte_at_a_time_is_left_after_the_idle_timeout() {
    for stream in [true, false] {
        let (mut client, left) = endless_request(stream).await;
        // A byte every 200 ms, from the start, until the connection ends (the bytes already in
        // the client's buffer would take minutes to read: the upstream's side tells the end).
        let trickle = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            while matches!(client.read(&mut byte).await, Ok(1)) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let waited = tokio::time::timeout(Duration::from_secs(10), until(&left)).await;
        trickle.abort();
        assert!(
            waited.is_ok(),
            "stream={stream}: the upstream connection is still held"
        );
    }
}
