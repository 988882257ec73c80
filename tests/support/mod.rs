//! Test support: a scripted OpenAI-compatible upstream on 127.0.0.1, and client helpers.
//!
//! The upstream decides from the request body's `model` what to do (answer, fail with a status,
//! stream, break, reset, hang) and records every request it received, byte for byte.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower_llm_router::RouterBody;

/// What the upstream does for one model.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a chat completion naming the model (a Responses API `response` object for a
    /// request to `.../responses`).
    Ok,
    /// This status, these headers, this body (JSON, unless the headers give a `content-type`).
    Status(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// 200 `text/event-stream`: these `data:` events, then `[DONE]`.
    Stream(Vec<&'static str>),
    /// 200 `text/event-stream` with this first event (an in-band error), then the end.
    StreamFirstEvent(&'static str),
    /// 200 `text/event-stream` with exactly these bytes, then a clean end.
    StreamRaw(&'static str),
    /// 200 `text/event-stream` with `content-encoding: gzip` and these (unreadable) bytes,
    /// whatever the request accepted: an upstream that ignores `Accept-Encoding: identity`.
    StreamEncoded(&'static [u8]),
    /// 200 `text/event-stream`: each of these as a frame of its own, then a clean end.
    StreamFrames(Vec<&'static str>),
    /// 200 `text/event-stream` declaring this `Content-Length`, with these bytes: a cut when
    /// they are fewer.
    StreamDeclared(&'static str, u64),
    /// 200 `text/event-stream`: `n` good events, then the connection breaks.
    StreamBreak(usize),
    /// `StreamBreak` without a `Content-Type`.
    StreamBreakUntyped(usize),
    /// 200 `text/event-stream`: an event every 10 ms, forever (until the client goes away).
    StreamForever,
    /// Close the connection before sending any response head.
    Reset,
    /// Wait this long, then answer like `Ok`.
    Delay(Duration),
    /// Send headers of a stream at once, then wait this long before the first event.
    StreamDelay(Duration),
    /// 200 `text/event-stream`: one event at once, then this long a pause, then `[DONE]`.
    StreamPause(Duration),
    /// This status and JSON body; compressed (`content-encoding: gzip`, bytes that do not
    /// read as the JSON) when the request accepted gzip, as real providers do.
    CompressedWhenAccepted(u16, &'static str),
    /// The first behavior for this model's first `n` requests, then the second.
    FirstThen(usize, Box<Behavior>, Box<Behavior>),
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub model: Option<String>,
}

#[derive(Default)]
struct State {
    behaviors: Mutex<HashMap<String, Behavior>>,
    received: Mutex<Vec<Received>>,
    dropped: AtomicUsize,
}

/// A scripted upstream listening on 127.0.0.1.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let server_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state }
    }

    /// Sets what the upstream does for `model` (default: `Ok`).
    pub fn set(&self, model: &str, behavior: Behavior) -> &Self {
        self.state
            .behaviors
            .lock()
            .unwrap()
            .insert(model.to_owned(), behavior);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn models_received(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|r| r.model.unwrap_or_default())
            .collect()
    }

    /// How many response futures or bodies were dropped before they finished (the client
    /// went away).
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(s: impl Into<Bytes>) -> UpBody {
    http_body_util::Full::new(s.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn completion(model: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"hello from {model}"}},"finish_reason":"stop"}}]}}"#
    )
}

/// A Responses API answer (`POST /v1/responses`) naming the model.
pub fn response_object(model: &str) -> String {
    format!(
        r#"{{"id":"resp_1","object":"response","created_at":0,"status":"completed","model":"{model}","output":[{{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"hello from {model}","annotations":[]}}]}}],"parallel_tool_calls":true,"tool_choice":"auto","tools":[]}}"#
    )
}

pub fn chunk(model: &str, i: usize) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"{model}","choices":[{{"index":0,"delta":{{"content":"tok{i} "}},"finish_reason":null}}]}}"#
    )
}

/// Counts a drop unless disarmed.
struct DropGuard {
    state: Arc<State>,
    armed: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.armed {
            self.state.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, std::io::Error> {
    let mut guard = DropGuard {
        state: state.clone(),
        armed: true,
    };
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
    state.received.lock().unwrap().push(Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
        model: model.clone(),
    });
    let model = model.unwrap_or_default();
    let mut behavior = state
        .behaviors
        .lock()
        .unwrap()
        .get(&model)
        .cloned()
        .unwrap_or(Behavior::Ok);
    while let Behavior::FirstThen(n, first, then) = behavior {
        // This request is recorded already: the model's `asked`-th.
        let asked = state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.model.as_deref() == Some(model.as_str()))
            .count();
        behavior = if asked <= n { *first } else { *then };
    }
    let response = match behavior {
        Behavior::Ok if parts.uri.path().ends_with("/responses") => {
            json(200, &[], response_object(&model))
        }
        Behavior::Ok => json(200, &[], completion(&model)),
        Behavior::FirstThen(..) => unreachable!("resolved above"),
        Behavior::Status(status, headers, body) => json(status, &headers, body.to_owned()),
        Behavior::CompressedWhenAccepted(status, body) => {
            let gzip = parts
                .headers
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("gzip"));
            if gzip {
                // What a classifier sees of a gzip stream: a header, then unreadable bytes.
                let mut compressed = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
                compressed.extend(body.bytes().map(|b| b.rotate_left(3) ^ 0x5a));
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(full(compressed))
                    .unwrap()
            } else {
                json(status, &[], body.to_owned())
            }
        }
        Behavior::Delay(delay) => {
            tokio::time::sleep(delay).await;
            json(200, &[], completion(&model))
        }
        Behavior::Reset => {
            guard.armed = false;
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "scripted reset",
            ));
        }
        Behavior::Stream(events) => {
            let mut out = String::new();
            for e in events {
                out.push_str(&format!("data: {e}\n\n"));
            }
            out.push_str("data: [DONE]\n\n");
            sse(full(out))
        }
        Behavior::StreamFirstEvent(event) => sse(full(format!("data: {event}\n\n"))),
        Behavior::StreamRaw(bytes) => sse(full(bytes)),
        Behavior::StreamEncoded(bytes) => {
            let mut response = sse(full(Bytes::from_static(bytes)));
            response
                .headers_mut()
                .insert("content-encoding", http::HeaderValue::from_static("gzip"));
            response
        }
        Behavior::StreamFrames(frames) => {
            // Spaced out, so that each reaches the client as a frame of its own.
            let frames = futures::StreamExt::then(futures::stream::iter(frames), |frame| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(Frame::data(Bytes::from_static(frame.as_bytes())))
            });
            sse(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        }
        Behavior::StreamDeclared(bytes, declared) => {
            // A pause after the bytes, so that they are flushed before a cut.
            let frames = futures::StreamExt::chain(
                futures::stream::iter([Ok(Frame::data(Bytes::from_static(bytes.as_bytes())))]),
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(Frame::data(Bytes::new()))
                }),
            );
            let mut response = sse(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            response
                .headers_mut()
                .insert("content-length", declared.into());
            response
        }
        Behavior::StreamBreak(n) | Behavior::StreamBreakUntyped(n) => {
            // Events are spaced out so that each is flushed before the connection breaks.
            let model = model.clone();
            let frames = futures::stream::unfold(0usize, move |i| {
                let model = model.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let item = if i < n {
                        Ok(Frame::data(Bytes::from(format!(
                            "data: {}\n\n",
                            chunk(&model, i)
                        ))))
                    } else if i == n {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted break",
                        ))
                    } else {
                        return None;
                    };
                    Some((item, i + 1))
                }
            });
            let mut response = sse(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            if matches!(behavior, Behavior::StreamBreakUntyped(_)) {
                response.headers_mut().remove("content-type");
            }
            response
        }
        Behavior::StreamForever => sse(BodyExt::boxed(Forever {
            model: model.clone(),
            i: 0,
            tick: Box::pin(tokio::time::sleep(Duration::from_millis(10))),
            _guard: DropGuard {
                state: state.clone(),
                armed: true,
            },
        })),
        Behavior::StreamDelay(delay) => {
            let body = futures::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(
                    "data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
                )))
            });
            sse(BodyExt::boxed(http_body_util::StreamBody::new(body)))
        }
        Behavior::StreamPause(pause) => {
            // Content, not a preamble: the caller has it before the pause.
            let first = Bytes::from(
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            );
            let last = async move {
                tokio::time::sleep(pause).await;
                Bytes::from("data: [DONE]\n\n")
            };
            let body = futures::StreamExt::chain(
                futures::stream::iter([first]),
                futures::stream::once(last),
            );
            let frames =
                futures::StreamExt::map(body, |data| Ok::<_, std::io::Error>(Frame::data(data)));
            sse(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        }
    };
    guard.armed = false;
    Ok(response)
}

/// A JSON answer, unless `headers` name another `content-type`.
fn json(status: u16, headers: &[(&str, &str)], body: String) -> Response<UpBody> {
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header("content-type", "application/json");
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(full(body)).unwrap()
}

fn sse(body: UpBody) -> Response<UpBody> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

struct Forever {
    model: String,
    i: usize,
    tick: Pin<Box<tokio::time::Sleep>>,
    _guard: DropGuard,
}

impl Body for Forever {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::task::ready!(self.tick.as_mut().poll(cx));
        self.tick = Box::pin(tokio::time::sleep(Duration::from_millis(10)));
        self.i += 1;
        let data = format!("data: {}\n\n", chunk(&self.model, self.i));
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }
}

use std::future::Future;

/// A hyper-util client that sends `RouterBody` requests.
pub fn client() -> Client<HttpConnector, RouterBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A chat-completions request to `url` with this JSON body.
pub fn chat(url: &str, body: &str) -> Request<http_body_util::Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Reads a response body to bytes.
pub async fn body_bytes<B>(body: B) -> Bytes
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// The `x-llm-router-attempts` header of a response.
pub fn attempts_header<B>(res: &Response<B>) -> String {
    res.headers()
        .get("x-llm-router-attempts")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The `x-llm-router-model` header of a response.
pub fn model_header<B>(res: &Response<B>) -> String {
    res.headers()
        .get("x-llm-router-model")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// An address on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A hyper-util client that sends each attempt to the address its model is routed to (by the
/// `RoutedModel` extension), and everything else to `default`.
pub fn routed_client(
    default: SocketAddr,
    routes: Vec<(&'static str, SocketAddr)>,
) -> impl tower::Service<
    Request<RouterBody>,
    Response = Response<Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = hyper_util::client::legacy::ResponseFuture,
> + Clone {
    let client = client();
    let routes: Arc<HashMap<&'static str, SocketAddr>> = Arc::new(routes.into_iter().collect());
    tower::service_fn(move |mut req: Request<RouterBody>| {
        let addr = req
            .extensions()
            .get::<tower_llm_router::fallback::RoutedModel>()
            .and_then(|m| routes.get(&*m.0).copied())
            .unwrap_or(default);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        client.request(req)
    })
}

/// `request` through one of the two forms of auto routing over [`routed_client`]: an
/// `AutoRouteLayer` in front of a `FallbackLayer` (`fused: false`), or
/// `FallbackLayer::auto_route` (`fused: true`).
pub async fn through_form<B>(
    fused: bool,
    auto: tower_llm_router::AutoRouteLayer,
    fallback: tower_llm_router::FallbackLayer,
    up: &Upstream,
    request: Request<B>,
) -> Response<tower_llm_router::body::ResponseBody<Incoming>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tower::{ServiceBuilder, ServiceExt};
    let res = if fused {
        ServiceBuilder::new()
            .layer(fallback.auto_route(auto))
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(request)
            .await
    } else {
        ServiceBuilder::new()
            .layer(auto)
            .layer(fallback)
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(request)
            .await
    };
    res.unwrap()
}

/// What an auto-routed request got: its status, decision, attempts header and JSON body
/// (`null` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub decision: Option<tower_llm_router::auto_route::RouteDecision>,
    pub attempts: String,
    pub json: serde_json::Value,
}

impl Answer {
    /// Reads `res` to its end.
    pub async fn of<B>(res: Response<B>) -> Answer
    where
        B: Body,
        B::Error: std::fmt::Debug,
    {
        let status = res.status().as_u16();
        let decision = res
            .extensions()
            .get::<tower_llm_router::auto_route::RouteDecision>()
            .cloned();
        let attempts = attempts_header(&res);
        let json = serde_json::from_slice(&body_bytes(res.into_body()).await)
            .unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            decision,
            attempts,
            json,
        }
    }
}

/// Waits (up to ten seconds: a busy CI machine) until the upstream saw `n` responses dropped
/// before they finished.
pub async fn wait_for_drops(up: &Upstream, n: usize) -> usize {
    for _ in 0..500 {
        if up.dropped() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.dropped()
}

/// Asserts that an SSE body is `chunks` chunks of `Behavior::StreamBreak` followed by the
/// final error event in OpenRouter's shape, naming `model`.
pub fn assert_stream_broke_after(text: &str, chunks: usize, model: &str) {
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.len(),
        chunks + 1,
        "the chunks and the error event: {text}"
    );
    for (i, event) in events[..chunks].iter().enumerate() {
        assert!(event.contains(&format!("tok{i} ")), "{event}");
    }
    let last = events[chunks].strip_prefix("data: ").unwrap();
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["error"]["code"], 502);
    assert_eq!(last["model"], model);
}

/// Waits for every task, failing on the first that panicked; returns how many finished.
pub async fn join_all(mut tasks: tokio::task::JoinSet<()>) -> usize {
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
        done += 1;
    }
    done
}

/// Serves `svc` (a tower service over hyper's `Incoming` body, e.g. the routing stack) with
/// hyper's HTTP/1 server on 127.0.0.1, as a gateway would: each connection gets the header read
/// timeout, when given. Returns the address.
pub async fn serve<S, B>(svc: S, header_read_timeout: Option<Duration>) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(hyper_util::rt::TokioTimer::new());
                if let Some(timeout) = header_read_timeout {
                    builder.header_read_timeout(timeout);
                }
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Whether a JSON value is an OpenAI-shaped error: `{"error":{"message","type","param","code"}}`
/// with a string message, type and code (`param` may be `null`).
pub fn is_openai_error(json: &serde_json::Value) -> bool {
    let error = &json["error"];
    error["message"].is_string()
        && error["type"].is_string()
        && error["code"].is_string()
        && error.as_object().is_some_and(|e| e.contains_key("param"))
}

/// The body type of the scripted upstream's answers, for upstreams written in a test file.
pub type UpstreamBody = UpBody;

/// A JSON answer with this status and these extra headers (what `Behavior::Status` sends).
pub fn json_response(status: u16, headers: &[(&str, &str)], body: String) -> Response<UpBody> {
    json(status, headers, body)
}

/// A 200 `text/event-stream` answer with this body.
pub fn sse_response(body: UpBody) -> Response<UpBody> {
    sse(body)
}

/// A body of these bytes, all at once.
pub fn full_body(bytes: impl Into<Bytes>) -> UpBody {
    full(bytes)
}

/// A raw TCP upstream on 127.0.0.1 running `handle` for each connection.
pub async fn raw_upstream<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// A `tracing` writer into a shared buffer (each test makes its subscriber over it).
#[derive(Clone, Default)]
pub struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

impl LogBuf {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Posts the JSON `body` to `path` of the server at `addr` with reqwest, as a client of a
/// gateway would; returns the status and the model that answered (`x-llm-router-model`, empty
/// without one), once the whole answer is read.
pub async fn post_for_model(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let model = model_header(&response_head(&response));
    response.bytes().await.expect("a whole answer");
    (status, model)
}

/// The status and headers of a reqwest response, as an `http::Response`.
fn response_head(response: &reqwest::Response) -> Response<()> {
    let mut head = Response::new(());
    *head.status_mut() = response.status();
    *head.headers_mut() = response.headers().clone();
    head
}
