//! Upstream API keys never leak: not in logs (captured at TRACE), not in error bodies, not in
//! response headers, not in `Debug` output of the layers, their services, responses, response
//! extensions or errors.
//!
//! Requests carry keys the way clients send them (OpenAI `Authorization: Bearer`, Anthropic
//! `x-api-key`, Azure `api-key`, Gemini `?key=`), go through AutoRouteLayer -> FallbackLayer ->
//! hyper-util over real sockets, and hit every class of failure, every rejection and a broken
//! stream. The keys must reach the upstream (that is their purpose) and nothing else.

mod support;

include!("support/gateway_modules.rs");

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
use tower_llm_router::fallback::{Attempts, ServedModel};
use tower_llm_router::{AutoRouteLayer, FallbackLayer};
use tracing_subscriber::fmt::format::FmtSpan;

const OPENAI_KEY: &str = "sk-secret-openai-0123456789abcdefXYZ";
const ANTHROPIC_KEY: &str = "sk-ant-secret-9876543210fedcbaQRS";
const AZURE_KEY: &str = "azsecret0a1b2c3d4e5f6a7b8c9d0e1f2";
const GEMINI_KEY: &str = "AIzaSecret_Gemini_Key_55aa55aa55aa";
const KEYS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY];

/// Everything the tracing subscriber wrote, at TRACE level, span opens and closes included.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(FmtSpan::FULL)
            .with_writer(move || SharedWriter(writer.clone()))
            .init();
        buf
    })
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails with the place a key shows up in.
fn assert_no_key(place: &str, text: &str) {
    for key in KEYS {
        // The distinctive middle of the key too: a masked or cut key still leaks it.
        let middle = &key[8..key.len() - 4];
        assert!(
            !text.contains(key) && !text.contains(middle),
            "a key leaked into {place}: {text}"
        );
    }
}

fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("small", 16_000, 0.15, 0.6),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ])
}

fn keyed(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{url}?key={GEMINI_KEY}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {OPENAI_KEY}"))
        .header("x-api-key", ANTHROPIC_KEY)
        .header("api-key", AZURE_KEY)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn keys_never_leak_through_any_failure() {
    let logs = logs();
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set("moderated", Behavior::Status(403, vec![], r#"{"error":{"code":403,"message":"Input was flagged","metadata":{"reasons":["violence"],"flagged_input":"..."}}}"#))
        .set("too-long", Behavior::Status(400, vec![], r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#))
        .set("limited", Behavior::Status(429, vec![("retry-after", "3")], r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#))
        .set("broken", Behavior::Status(500, vec![], r#"{"error":{"message":"internal error","type":"server_error"}}"#))
        .set("overloaded", Behavior::Status(529, vec![], r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#))
        .set("reset", Behavior::Reset)
        .set("slow", Behavior::Delay(Duration::from_secs(60)))
        .set("unauthorized", Behavior::Status(401, vec![], r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}"#))
        .set("sse-error", Behavior::StreamFirstEvent(r#"{"error":{"code":502,"message":"Provider returned error"}}"#))
        .set("breaks", Behavior::StreamBreak(2));
    let layer = FallbackLayer::new()
        .max_models(16)
        .headers_timeout(Duration::from_secs(2))
        .allow_models([
            "moderated",
            "too-long",
            "limited",
            "broken",
            "overloaded",
            "reset",
            "refused",
            "slow",
            "unauthorized",
            "sse-error",
            "breaks",
            "small",
            "large",
        ]);
    let auto = AutoRouteLayer::new(catalog());
    let stack = ServiceBuilder::new()
        .layer(auto.clone())
        .layer(layer.clone())
        .service(routed_client(up.addr, vec![("refused", refused)]));
    let small_limit = ServiceBuilder::new()
        .layer(auto.clone())
        .layer(layer.clone().max_body_bytes(64))
        .service(routed_client(up.addr, vec![]));

    let every_class =
        r#"["too-long","limited","broken","overloaded","reset","refused","slow","unauthorized"]"#;
    let requests = [
        // Every failure class, the last one (401) answered unchanged.
        format!(r#"{{"model":"moderated","models":{every_class},"messages":[]}}"#),
        // A transport error on the last model: the inner service's error.
        r#"{"model":"broken","models":["refused"],"messages":[]}"#.to_owned(),
        // A timeout on the last model: the layer's 504.
        r#"{"model":"reset","models":["slow"],"messages":[]}"#.to_owned(),
        // A stream: an error in the first event, then one that breaks midway.
        r#"{"model":"sse-error","models":["breaks"],"stream":true,"messages":[]}"#.to_owned(),
        // Auto routing, served.
        r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
        // Rejections: nothing fits, bad JSON, duplicate key, chain over the cap.
        r#"{"model":"auto","max_tokens":10000000,"messages":[]}"#.to_owned(),
        r#"{"model":"auto","messages":[{"role":"user","content":"#.to_owned(),
        r#"{"model":"small","model":"large"}"#.to_owned(),
        format!(
            r#"{{"model":"a","models":{}}}"#,
            serde_json::json!(vec!["m"; 40])
        ),
        // Over the body limit (64 bytes for this stack).
        format!(
            r#"{{"model":"small","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(100)
        ),
    ];
    let url = up.url("/v1/chat/completions");
    let mut statuses = Vec::new();
    let mut seen = String::new();
    for (i, body) in requests.iter().enumerate() {
        let svc = if i == requests.len() - 1 {
            small_limit.clone()
        } else {
            stack.clone()
        };
        match svc.oneshot(keyed(&url, body)).await {
            Ok(res) => {
                statuses.push(res.status().as_u16());
                seen.push_str(&format!("{res:?}\n"));
                for (name, value) in res.headers() {
                    seen.push_str(&format!(
                        "{name}: {}\n",
                        String::from_utf8_lossy(value.as_bytes())
                    ));
                }
                seen.push_str(&format!(
                    "{:?} {:?} {:?}\n",
                    res.extensions().get::<Attempts>(),
                    res.extensions().get::<ServedModel>(),
                    res.extensions().get::<RouteDecision>()
                ));
                let bytes = body_bytes(res.into_body()).await;
                seen.push_str(&String::from_utf8_lossy(&bytes));
                seen.push('\n');
            }
            Err(err) => {
                statuses.push(0);
                seen.push_str(&format!("{err} / {err:?}\n"));
            }
        }
    }
    // What was asked for happened: each class, the error, the timeout, the stream, each refusal.
    assert_eq!(statuses, [401, 0, 504, 200, 200, 400, 400, 400, 400, 413]);
    assert!(seen.contains("moderated=moderation, too-long=context_length, limited=rate_limited, broken=downtime, overloaded=downtime, reset=downtime, refused=downtime, slow=downtime, unauthorized=other"), "{seen}");
    assert!(
        seen.contains(r#""finish_reason":"error""#),
        "the broken stream's error event"
    );

    // Debug output of everything a program might print.
    let services = (
        tower::Layer::layer(&auto, tower::Layer::layer(&layer, "inner")),
        tower::Layer::layer(&layer.clone().max_body_bytes(64), "inner"),
    );
    seen.push_str(&format!("{layer:?}\n{auto:?}\n{services:?}\n"));
    assert_no_key(
        "answers, headers, extensions, errors or Debug output",
        &seen,
    );

    // The keys did reach the upstream, on every attempt: the test would prove nothing otherwise.
    let received = up.received();
    assert!(received.len() >= 12, "{}", received.len());
    for r in &received {
        assert_eq!(
            r.headers["authorization"],
            format!("Bearer {OPENAI_KEY}").as_str()
        );
        assert_eq!(r.headers["x-api-key"], ANTHROPIC_KEY);
        assert_eq!(r.headers["api-key"], AZURE_KEY);
    }

    let captured = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // The capture works and is verbose: attempt spans with their classes, the broken stream.
    for expected in [
        "llm_router.fallback",
        "llm_router.attempt",
        "llm_router.auto_route",
        "rate_limited",
        "context_length",
        "upstream stream broke",
    ] {
        assert!(
            captured.contains(expected),
            "no `{expected}` in the logs:\n{captured}"
        );
    }
    println!("{} bytes of TRACE logs searched", captured.len());
    assert_no_key("the TRACE logs", &captured);
}

/// The reqwest path: a Gemini-style key in the URL query. reqwest puts the URL of a request in
/// its transport errors, so this is where a `?key=` could slip into what the layer writes: the
/// stream error event, the logs. It does not; the error the layer hands back on the last model
/// is reqwest's own, URL included, as reqwest documents (callers strip it with `without_url`).
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn keys_in_the_url_do_not_leak_through_the_reqwest_path() {
    use tower_llm_router::fallback::RoutedModel;
    use tower_llm_router::reqwest::ReqwestService;

    let logs = logs();
    let up = Upstream::start().await;
    let refused = closed_port().await;
    // A model name of this test's own: the log buffer is shared with the other tests.
    up.set("breaks-via-reqwest", Behavior::StreamBreak(1));
    let layer = FallbackLayer::new();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(ReqwestService::new(reqwest::Client::new()));
    // Each attempt goes to the URL the request names: the refused one is a closed port.
    let refused_url = format!("http://{refused}/v1/chat/completions");
    let mut seen = String::new();

    // A stream that breaks after its first event: the error event reaches the caller.
    let stream = r#"{"model":"breaks-via-reqwest","stream":true,"messages":[]}"#;
    let res = svc
        .clone()
        .oneshot(keyed(&up.url("/v1/chat/completions"), stream))
        .await
        .unwrap();
    seen.push_str(&format!("{res:?}\n"));
    let text = String::from_utf8_lossy(&body_bytes(res.into_body()).await).into_owned();
    assert!(text.contains(r#""finish_reason":"error""#), "{text}");
    seen.push_str(&text);

    // The last (and only) model refused: reqwest's error, URL and all, comes back as it is.
    let err = svc
        .clone()
        .oneshot(keyed(&refused_url, r#"{"model":"a","messages":[]}"#))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(GEMINI_KEY),
        "reqwest names the URL"
    );
    seen.push_str(&format!("{} / {:?}\n", err.without_url(), svc));

    // A refused model that is not the last: classified, not displayed anywhere. Attempts of
    // model `a` go to the closed port (the URL keeps its `?key=`).
    let (up_addr, key_query) = (up.addr, format!("key={GEMINI_KEY}"));
    let routed = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .map_request(move |mut req: Request<tower_llm_router::RouterBody>| {
            let model = req
                .extensions()
                .get::<RoutedModel>()
                .map(|m| m.0.to_string());
            let addr = if model.as_deref() == Some("a") {
                refused
            } else {
                up_addr
            };
            *req.uri_mut() = format!("http://{addr}/v1/chat/completions?{key_query}")
                .parse()
                .unwrap();
            req
        })
        .service(ReqwestService::new(reqwest::Client::new()));
    let body = r#"{"model":"a","models":["b"],"messages":[]}"#;
    let res = routed
        .oneshot(keyed(&up.url("/v1/chat/completions"), body))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-llm-router-attempts"], "a=downtime, b=ok");
    seen.push_str(&format!("{res:?}\n"));
    seen.push_str(&String::from_utf8_lossy(&body_bytes(res.into_body()).await));

    assert_no_key("the reqwest path's answers and Debug output", &seen);
    let captured = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // This test's own line was captured (so the search below covers the reqwest path).
    assert!(
        captured
            .lines()
            .any(|line| line.contains("upstream stream broke")
                && line.contains("breaks-via-reqwest")),
        "{captured}"
    );
    assert_no_key("the TRACE logs", &captured);
}

/// examples/gateway built from `config` and served on this runtime (its log lines go to this
/// test's subscriber): its address, the sender that stops it, and its task.
async fn serve_gateway(
    config: &config::Config,
    env: app::Env<'_>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let tls = common::upstream::default_tls().unwrap();
    let gateway = app::build(config, env, tls).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, gateway, async move {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// examples/gateway: its keys come from the environment (`api_key_env`, per model too) and go
/// upstream as `Authorization`. They must not show in its `Debug` output (configuration, routes,
/// upstream client), its log lines (TRACE), its answers (502s included), headers or metrics.
#[tokio::test]
async fn the_gateway_keeps_its_keys_out_of_logs_answers_and_debug() {
    use http::StatusCode;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let logs = logs();
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set("limited", Behavior::Status(429, vec![("retry-after", "3")], r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#))
        .set("broken", Behavior::Status(500, vec![], r#"{"error":{"message":"internal error","type":"server_error"}}"#))
        .set("reset", Behavior::Reset)
        .set("unauthorized", Behavior::Status(401, vec![], r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}"#))
        .set("sse-error", Behavior::StreamFirstEvent(r#"{"error":{"code":502,"message":"Provider returned error"}}"#))
        .set("breaks", Behavior::StreamBreak(2));
    let toml = format!(
        r#"
upstream = "http://{up}/v1"
api_key_env = "GATEWAY_OPENAI_KEY"

[[models]]
id = "small"
context_window = 16000
input_price = 0.15
output_price = 0.6

[[models]]
id = "large"
context_window = 200000
input_price = 3.0
output_price = 15.0
api_key_env = "GATEWAY_ANTHROPIC_KEY"

[[models]]
id = "refused"
context_window = 8000
upstream = "http://{refused}/v1"
api_key_env = "GATEWAY_AZURE_KEY"

[fallback]
max_models = 8
"#,
        up = up.addr
    );
    let config = config::Config::from_toml(&toml).unwrap();
    let env = |name: &str| match name {
        "GATEWAY_OPENAI_KEY" => Some(OPENAI_KEY.to_owned()),
        "GATEWAY_ANTHROPIC_KEY" => Some(ANTHROPIC_KEY.to_owned()),
        "GATEWAY_AZURE_KEY" => Some(AZURE_KEY.to_owned()),
        _ => None,
    };
    let (addr, stop, server) = serve_gateway(&config, &env).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let every_class =
        r#"{"model":"limited","models":["broken","reset","large","unauthorized"],"messages":[]}"#;
    let requests = [
        // Rate limited, down, reset, served by `large` (its own key).
        every_class.replace(r#""large","#, ""),
        every_class.to_owned(),
        // The last model cannot be reached: the gateway's 502 names the error.
        r#"{"model":"broken","models":["refused"],"messages":[]}"#.to_owned(),
        r#"{"model":"sse-error","models":["breaks"],"stream":true,"messages":[]}"#.to_owned(),
        r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
        r#"{"model":"auto","max_tokens":10000000,"messages":[]}"#.to_owned(),
        r#"{"model":"small","model":"large"}"#.to_owned(),
    ];
    let mut statuses = Vec::new();
    let mut seen = String::new();
    for body in &requests {
        let req = Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let res = client.request(req).await.unwrap();
        statuses.push(res.status().as_u16());
        seen.push_str(&format!("{res:?}\n"));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        seen.push_str(&String::from_utf8_lossy(&bytes));
        seen.push('\n');
    }
    assert_eq!(statuses, [401, 200, 502, 200, 200, 400, 400], "{seen}");
    assert!(seen.contains("upstream_unreachable"), "{seen}");
    let metrics = client
        .request(
            Request::get(format!("http://{addr}/metrics"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    seen.push_str(&String::from_utf8_lossy(
        &metrics.into_body().collect().await.unwrap().to_bytes(),
    ));

    // Debug of the configuration and of the upstream client the gateway builds from it.
    let default = common::upstream::Route::new(&format!("http://{}/v1", up.addr))
        .unwrap()
        .bearer(OPENAI_KEY)
        .unwrap();
    let own = default.clone().bearer(ANTHROPIC_KEY).unwrap();
    let upstream = common::upstream::Upstream::new(
        common::upstream::https_client(common::upstream::default_tls().unwrap()),
        default.clone(),
        [(Arc::from("large"), own)].into_iter().collect(),
    );
    seen.push_str(&format!("{config:?}\n{default:?}\n{upstream:?}\n"));
    assert!(
        seen.contains("GATEWAY_ANTHROPIC_KEY"),
        "the Debug output names the variable"
    );
    assert_no_key("the gateway's answers, metrics or Debug output", &seen);

    // The keys went where they belong: each model's own, never the caller's.
    let received = up.received();
    let key_of = |model: &str| {
        received
            .iter()
            .filter(|r| r.model.as_deref() == Some(model))
            .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(key_of("large"), [format!("Bearer {ANTHROPIC_KEY}")]);
    assert!(key_of("limited")
        .iter()
        .all(|k| *k == format!("Bearer {OPENAI_KEY}")));
    assert!(!key_of("limited").is_empty());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let captured = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        captured.contains("chat completion"),
        "the gateway's log lines are captured"
    );
    // The last model could not be reached: the line of the layer's 502 was captured too.
    assert!(captured.contains("status=502"), "{captured}");
    assert_no_key("the gateway's TRACE logs", &captured);
}

/// A secret the client sends for a proxy on its side.
const PROXY_CREDENTIALS: &str = "Basic cHJveHk6UFJPWFlTRUNSRVQ=";

/// examples/gateway: the client's credentials go only where they were meant, the default
/// upstream when the gateway has no key of its own for it. A model with the gateway's own key
/// and a model on another upstream get none of them: no credential header (Gemini's
/// `x-goog-api-key` included) and no credential in the query (`?key=`, `api_key`, however
/// escaped, `access_token`), while the query's other parameters go on. `Proxy-Authorization`
/// (for a proxy on the client's side) goes to no upstream.
#[tokio::test]
async fn the_gateway_sends_the_clients_credentials_only_where_they_were_meant() {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let default = Upstream::start().await;
    let keyed = Upstream::start().await;
    let other = Upstream::start().await;
    let toml = format!(
        r#"
upstream = "http://{default}/v1"

[[models]]
id = "keyed"
upstream = "http://{keyed}/v1"
api_key_env = "GATEWAY_KEYED_KEY"

[[models]]
id = "other"
upstream = "http://{other}/v1"
"#,
        default = default.addr,
        keyed = keyed.addr,
        other = other.addr,
    );
    let config = config::Config::from_toml(&toml).unwrap();
    let env = |name: &str| (name == "GATEWAY_KEYED_KEY").then(|| "gateway-own-key".to_owned());
    let (addr, stop, server) = serve_gateway(&config, &env).await;

    let query = format!(
        "key={GEMINI_KEY}&api-version=2024-10-21&api%5Fkey={AZURE_KEY}&Access_Token={OPENAI_KEY}"
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for model in ["default-model", "keyed", "other"] {
        let req = Request::post(format!("http://{addr}/v1/chat/completions?{query}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {OPENAI_KEY}"))
            .header("x-api-key", ANTHROPIC_KEY)
            .header("api-key", AZURE_KEY)
            .header("x-goog-api-key", GEMINI_KEY)
            .header("proxy-authorization", PROXY_CREDENTIALS)
            .body(Full::new(Bytes::from(format!(
                r#"{{"model":"{model}","messages":[]}}"#
            ))))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200, "{model}");
        res.into_body().collect().await.unwrap();
    }

    // The default upstream: the client's credentials, as they came (that is their purpose).
    let received = default.received();
    assert_eq!(received.len(), 1);
    let headers = &received[0].headers;
    assert_eq!(
        headers["authorization"],
        format!("Bearer {OPENAI_KEY}").as_str()
    );
    assert_eq!(headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(headers["api-key"], AZURE_KEY);
    assert_eq!(headers["x-goog-api-key"], GEMINI_KEY);
    assert_eq!(received[0].query.as_deref(), Some(query.as_str()));
    assert!(!headers.contains_key("proxy-authorization"));

    // The gateway's key, and nothing of the client's.
    let received = keyed.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"],
        "Bearer gateway-own-key"
    );
    // No key of the client's anywhere else: not in another upstream's headers or query.
    let elsewhere: Vec<_> = received.into_iter().chain(other.received()).collect();
    assert_eq!(elsewhere.len(), 2);
    for r in &elsewhere {
        for name in [
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "proxy-authorization",
        ] {
            assert!(!r.headers.contains_key(name), "{name}: {:?}", r.headers);
        }
        assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
        assert_no_key(
            "another upstream's request",
            &format!("{:?} {:?}", r.headers, r.query),
        );
    }
    assert!(!other.received()[0].headers.contains_key("authorization"));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// examples/gateway: a configuration error says where (line and column) and what, but does not
/// quote the file. A key pasted into the wrong place (an unknown field, an unquoted
/// `api_key_env`, a field of another type) must not reach the startup log.
#[test]
fn a_config_error_names_the_place_not_the_text() {
    let cases = [
        (
            format!("listen = \"127.0.0.1:8080\"\napi_key = \"{OPENAI_KEY}\"\n"),
            "line 2, column 1: unknown field `api_key`",
        ),
        (
            format!("api_key_env = {OPENAI_KEY}\n"),
            "line 1, column 15: ",
        ),
        (
            format!("workers = \"{OPENAI_KEY}\"\n"),
            "line 1, column 11: expected a whole number from 1 to 1024",
        ),
        (
            format!("[[models]]\nid = \"a\"\ncapabilities = [\"{ANTHROPIC_KEY}\"]\n"),
            "line 3, column 17: unknown variant",
        ),
        (
            format!("[timeouts]\nheaders = \"{GEMINI_KEY}\"\n"),
            "line 2, column 11: invalid type",
        ),
    ];
    for (text, expected) in cases {
        let error = config::Config::from_toml(&text).err().unwrap();
        assert!(error.starts_with(expected), "{error}");
        assert_no_key("a configuration error", &error);
    }
}

/// examples/gateway: an upstream URL with a user and password (`https://user:key@host/v1`)
/// would put them in the `Host` header, the startup log and `Debug`: it is refused when the
/// gateway is built from its configuration (the default upstream, a model's, `--upstream`),
/// and the error does not repeat them.
#[test]
fn an_upstream_url_with_a_password_is_refused_without_repeating_it() {
    let tls = common::upstream::default_tls().unwrap();
    let with_password = format!("https://user:{OPENAI_KEY}@example.com/v1");
    let configs = [
        format!("upstream = \"{with_password}\""),
        format!("[[models]]\nid = \"m\"\nupstream = \"{with_password}\""),
        // Not a valid URL besides: refused all the same, without the password.
        format!("upstream = \"https://user:{OPENAI_KEY} x@example.com/v1\""),
    ];
    for text in configs {
        let config = config::Config::from_toml(&text).unwrap();
        let error = app::build(&config, &|_| None, tls.clone()).err().unwrap();
        assert!(error.contains("user or password"), "{error}");
        assert!(error.contains("<redacted>@example.com"), "{error}");
        assert_no_key("the startup error", &error);
    }
    let error = common::upstream::Route::new(&format!("http://{ANTHROPIC_KEY}@127.0.0.1:9/v1"))
        .unwrap_err();
    assert_no_key("the route's error", &error);
    // An `@` after the authority is no password.
    assert!(common::upstream::Route::new("http://127.0.0.1:9/v1/@team").is_ok());
}
