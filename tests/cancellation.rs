//! Cancellation, readiness and concurrency: what the layers leave behind when the client goes
//! away at each point a request waits, when the service below is not ready, and after a burst.
//!
//! Real sockets throughout: hyper's server with the layers in front of a hyper-util client
//! (`routed_client`) to a small hyper upstream of this file's own, which tells the test when a
//! request arrives and when its exchange was cut short (its handler or its body dropped before
//! the end). Clients write raw HTTP/1.1 and leave by closing their connection. Every wait is on
//! a signal, none on a clock:
//!
//! * the upstream's `arrived` / `gone` channels,
//! * [`Watch`], a layer in front of the routing layers that tells when the request was called,
//!   when the layer took a frame of its body, and how its future ended (answered, or dropped
//!   by the server because the client left),
//! * [`Recorder`], a `Health` that keeps every observation the layers make and signals each.
//!
//! After a client left, the test checks that no further attempt was started, that the
//! upstream's connection was closed, that the body budget (`max_buffered_bytes`) is whole again
//! (a body of exactly the limit fits: there is no counter to read from outside, and this is
//! what a client sees of it), that health holds no observation made for the cancel, and that
//! every span the layers opened was closed.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::{completion, routed_client, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, Semaphore};
use tower::{Layer, Service, ServiceBuilder};
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::fallback::Retries;
use tower_llm_router::health::{Health, Observation};
use tower_llm_router::{AutoRouteLayer, ErrorClass, FallbackLayer, RouterBody};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Every stack's `max_buffered_bytes`.
const LIMIT: usize = 8192;

// ---------------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------------

/// What the upstream does, by the request's `model`:
///
/// * `hang`: never answers.
/// * `gate`: answers 503 once the test releases it ([`Upstream::release`]).
/// * `down`, `down2`: 503 at once.
/// * `held`: a 200 event stream whose first event is a role-only chunk (no content: the layer
///   holds the stream back), then nothing more.
/// * `streaming`: a 200 event stream with one content event, then nothing more.
/// * any other: a 200 chat completion.
struct Upstream {
    addr: SocketAddr,
    /// The model of each request, as it arrives.
    arrived: mpsc::UnboundedReceiver<String>,
    /// The model of each exchange cut short: its handler or its body dropped before the end
    /// (the connection closed under it).
    gone: mpsc::UnboundedReceiver<String>,
    received: Arc<Mutex<Vec<String>>>,
    gate: Arc<Notify>,
}

#[derive(Clone)]
struct UpstreamState {
    arrived: mpsc::UnboundedSender<String>,
    gone: mpsc::UnboundedSender<String>,
    received: Arc<Mutex<Vec<String>>>,
    gate: Arc<Notify>,
}

/// Sends its model on `gone` when dropped armed.
struct Gone {
    model: String,
    tx: mpsc::UnboundedSender<String>,
    armed: bool,
}

impl Drop for Gone {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(self.model.clone());
        }
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    async fn start() -> Upstream {
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let (gone_tx, gone) = mpsc::unbounded_channel();
        let state = UpstreamState {
            arrived: arrived_tx,
            gone: gone_tx,
            received: Arc::default(),
            gate: Arc::new(Notify::new()),
        };
        let (received, gate) = (state.received.clone(), state.gate.clone());
        let addr = support::raw_upstream(move |stream| {
            let state = state.clone();
            async move {
                let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await;
        Upstream {
            addr,
            arrived,
            gone,
            received,
            gate,
        }
    }

    async fn arrived(&mut self) -> String {
        self.arrived.recv().await.unwrap()
    }

    async fn gone(&mut self) -> String {
        self.gone.recv().await.unwrap()
    }

    /// Lets the `gate` request waiting (or the next one) answer.
    fn release(&self) {
        self.gate.notify_one();
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(
    state: UpstreamState,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let model = body
        .ok()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|json| json["model"].as_str().map(str::to_owned))
        .unwrap_or_default();
    state.received.lock().unwrap().push(model.clone());
    let _ = state.arrived.send(model.clone());
    let mut gone = Gone {
        model: model.clone(),
        tx: state.gone.clone(),
        armed: true,
    };
    let response = match model.as_str() {
        "hang" => std::future::pending().await,
        "gate" => {
            state.gate.notified().await;
            status_503()
        }
        "down" | "down2" => status_503(),
        "held" => endless_stream(
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            gone.take(),
        ),
        "streaming" => endless_stream(
            r#"data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            gone.take(),
        ),
        _ => Response::builder()
            .header("content-type", "application/json")
            .body(full(completion(&model)))
            .unwrap(),
    };
    gone.armed = false;
    Ok(response)
}

impl Gone {
    /// This guard armed, to move into a body; `self` disarmed.
    fn take(&mut self) -> Gone {
        self.armed = false;
        Gone {
            model: self.model.clone(),
            tx: self.tx.clone(),
            armed: true,
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> UpBody {
    http_body_util::Full::new(bytes.into()).boxed()
}

fn status_503() -> Response<UpBody> {
    Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .body(full(
            r#"{"error":{"message":"down","type":"server_error"}}"#,
        ))
        .unwrap()
}

/// A 200 event stream of `event`, then no end: `gone` goes with the body, and tells when the
/// body is dropped (the connection closed under it).
fn endless_stream(event: &'static str, gone: Gone) -> Response<UpBody> {
    let first = futures::stream::iter([Ok(Frame::data(Bytes::from(format!("{event}\n\n"))))]);
    let frames = futures::StreamExt::map(
        futures::StreamExt::chain(first, futures::stream::pending()),
        move |frame| {
            let _held = &gone;
            frame
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(http_body_util::StreamBody::new(frames).boxed())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Watching the layers from in front
// ---------------------------------------------------------------------------------------------

/// What [`Watch`] saw of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The server called the stack with the request.
    Called,
    /// The layers below took a data frame of the request body.
    BodyFrame,
    /// The stack's future ended with an answer.
    Answered,
    /// The stack's future was dropped before it ended (the client left).
    Dropped,
}

/// A layer in front of the stack under test that tells what happened to each request that
/// names itself in an `x-watch` header (the budget probes do not).
#[derive(Clone)]
struct Watch<S> {
    inner: S,
    seen: mpsc::UnboundedSender<(String, Seen)>,
}

/// Sends `(id, what)` on `seen` when there is an id.
#[derive(Clone)]
struct Teller {
    id: Option<String>,
    seen: mpsc::UnboundedSender<(String, Seen)>,
}

impl Teller {
    fn tell(&self, what: Seen) {
        if let Some(id) = &self.id {
            let _ = self.seen.send((id.clone(), what));
        }
    }
}

impl<S> Service<Request<Incoming>> for Watch<S>
where
    S: Service<Request<WatchedBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Watched<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let teller = Teller {
            id: req
                .headers()
                .get("x-watch")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            seen: self.seen.clone(),
        };
        teller.tell(Seen::Called);
        let req = req.map(|body| WatchedBody {
            body,
            teller: teller.clone(),
        });
        Watched {
            future: Some(Box::pin(self.inner.call(req))),
            teller,
        }
    }
}

/// The request body, telling each data frame taken.
struct WatchedBody {
    body: Incoming,
    teller: Teller,
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() {
                self.teller.tell(Seen::BodyFrame);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The stack's future: tells how it ended, once the future below is gone.
struct Watched<F> {
    future: Option<Pin<Box<F>>>,
    teller: Teller,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        self.teller.tell(Seen::Answered);
        Poll::Ready(output)
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        // The future below is dropped first: what it held is let go when the test hears of it.
        if self.future.take().is_some() {
            self.teller.tell(Seen::Dropped);
        }
    }
}

/// What a [`Watch`] sees: `(id, what)`.
type Sightings = mpsc::UnboundedReceiver<(String, Seen)>;

/// Serves `stack` behind a [`Watch`]; returns its address and what the watch sees.
async fn serve_watched<S, B>(stack: S) -> (SocketAddr, Sightings)
where
    S: Service<Request<WatchedBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(
        Watch {
            inner: stack,
            seen: tx,
        },
        None,
    )
    .await;
    (addr, rx)
}

/// Waits until the watch sees `what` (of any request), skipping what comes before.
async fn wait_for(seen: &mut Sightings, what: Seen) {
    while seen.recv().await.unwrap().1 != what {}
}

/// Waits until a request's future ended, and returns how.
async fn ended(seen: &mut Sightings) -> Seen {
    loop {
        if let end @ (Seen::Answered | Seen::Dropped) = seen.recv().await.unwrap().1 {
            return end;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Health and spans
// ---------------------------------------------------------------------------------------------

/// A `Health` that keeps every observation (and cools nothing down).
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Option<ErrorClass>)>>,
    observed: Notify,
}

impl Health for Recorder {
    fn is_cooling_down(&self, _model: &str) -> bool {
        false
    }

    fn observe(&self, model: &str, observation: Observation) {
        let mut seen = self.seen.lock().unwrap();
        seen.push((model.to_owned(), observation.class));
        self.observed.notify_one();
    }
}

impl Recorder {
    fn seen(&self) -> Vec<(String, Option<ErrorClass>)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `model` was observed.
    async fn wait_for(&self, model: &str) {
        loop {
            let notified = self.observed.notified();
            if self.seen().iter().any(|(m, _)| m == model) {
                return;
            }
            notified.await;
        }
    }
}

/// Counts the `llm_router.*` spans opened and closed.
#[derive(Clone, Default)]
struct SpanCount(Arc<Mutex<HashMap<&'static str, (usize, usize)>>>);

impl<S> tracing_subscriber::Layer<S> for SpanCount
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: LayerContext<'_, S>) {
        let name = attrs.metadata().name();
        if name.starts_with("llm_router") {
            self.0.lock().unwrap().entry(name).or_default().0 += 1;
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let name = span.metadata().name();
        if name.starts_with("llm_router") {
            self.0.lock().unwrap().entry(name).or_default().1 += 1;
        }
    }
}

impl SpanCount {
    /// Counts the spans of this thread's tasks (the tests run on one thread) until the guard
    /// is dropped.
    fn install() -> (SpanCount, tracing::subscriber::DefaultGuard) {
        let count = SpanCount::default();
        let subscriber = tracing_subscriber::registry().with(count.clone());
        (count, tracing::subscriber::set_default(subscriber))
    }

    /// Asserts that every span opened was closed, and that spans named `opened` were opened.
    fn assert_all_closed(&self, opened: &[&str]) {
        let counts = self.0.lock().unwrap().clone();
        for (name, (new, closed)) in &counts {
            assert_eq!(new, closed, "`{name}`: {new} opened, {closed} closed");
        }
        for name in opened {
            assert!(counts.contains_key(name), "no `{name}` span: {counts:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

const CHAT_HEAD: &str =
    "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n";

/// A connection that sent a whole request (`body` with its length, watched as `id`) and waits
/// for the answer.
async fn send(addr: SocketAddr, id: &str, body: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{CHAT_HEAD}x-watch: {id}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    conn
}

/// Sends `body` on a fresh connection that closes after the answer, and reads all of it.
async fn exchange(addr: SocketAddr, body: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{CHAT_HEAD}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// Sends `body` on a fresh connection that closes after the answer; returns the status and the
/// body of the answer.
async fn post(addr: SocketAddr, body: &str) -> (u16, String) {
    let raw = exchange(addr, body).await;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Reads from `conn` until what was read contains `needle`.
async fn read_until(conn: &mut TcpStream, needle: &str) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains(needle) {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before `{needle}`: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// A chat body of exactly `size` bytes asking for `model` (and `models` after it).
fn chat_body(model: &str, models: &[&str], size: usize) -> String {
    let models = match models {
        [] => String::new(),
        models => format!(r#""models":{},"#, serde_json::to_string(models).unwrap()),
    };
    let head = format!(r#"{{"model":"{model}",{models}"messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad))
}

fn stream_body(model: &str, models: &[&str]) -> String {
    serde_json::json!({
        "model": model,
        "models": models,
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
    })
    .to_string()
}

/// Asserts that the stack holds no request body: one of exactly the budget is answered (it
/// goes to the `ok` model).
async fn assert_budget_whole(addr: SocketAddr) {
    assert_budget_of_whole(addr, LIMIT).await;
}

/// [`assert_budget_whole`] for a budget of `limit`.
async fn assert_budget_of_whole(addr: SocketAddr, limit: usize) {
    let (status, body) = post(addr, &chat_body("ok", &[], limit)).await;
    assert_eq!(status, 200, "a body of the whole budget is refused: {body}");
}

/// Asserts that the stack holds some request body: one of exactly the budget is refused.
async fn assert_budget_in_use(addr: SocketAddr) {
    let (status, body) = post(addr, &chat_body("ok", &[], LIMIT)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"overloaded\""), "{body}");
}

fn catalog(model: &str) -> Catalog {
    Catalog::from_profiles([ModelProfile::new(model, 128_000, 0.1, 0.4)])
}

fn fallback_layer(health: &Arc<Recorder>) -> FallbackLayer {
    FallbackLayer::new()
        .max_buffered_bytes(LIMIT)
        .health(health.clone())
}

/// An upload that sends its head and the first `part` of a chunked body, then waits (watched as
/// `id`).
async fn start_upload(addr: SocketAddr, id: &str, part: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!("{CHAT_HEAD}x-watch: {id}\r\ntransfer-encoding: chunked\r\n\r\n");
    let chunk = format!("{:x}\r\n{part}\r\n", part.len());
    conn.write_all(format!("{head}{chunk}").as_bytes())
        .await
        .unwrap();
    conn
}

// ---------------------------------------------------------------------------------------------
// 1. The client leaves at each point a request waits
// ---------------------------------------------------------------------------------------------

/// A stack under test, served behind a [`Watch`], over [`Upstream`].
struct Bench {
    addr: SocketAddr,
    seen: Sightings,
    up: Upstream,
    health: Arc<Recorder>,
}

impl Bench {
    /// The observations health got for other models than the budget probes' `ok`.
    fn observed_beyond_probes(&self) -> Vec<(String, Option<ErrorClass>)> {
        let seen = self.health.seen();
        let probes_ok = seen.iter().all(|(m, class)| m != "ok" || class.is_none());
        assert!(probes_ok, "{seen:?}");
        seen.into_iter().filter(|(m, _)| m != "ok").collect()
    }
}

/// The three ways the layers are stacked in front of the hyper-util client: `FallbackLayer`,
/// `AutoRouteLayer` in front of it, and `FallbackLayer` routing `auto` itself. Each with a body
/// budget of [`LIMIT`]; `auto` chooses `auto_model`.
#[derive(Clone, Copy, Debug)]
enum Stack {
    Fallback,
    AutoRouteInFront,
    FallbackRoutingAuto,
}

impl Stack {
    async fn bench(self, auto_model: &str) -> Bench {
        let up = Upstream::start().await;
        let health = Arc::new(Recorder::default());
        let client = routed_client(up.addr, vec![]);
        let (addr, seen) = match self {
            Stack::Fallback => serve_watched(fallback_layer(&health).layer(client)).await,
            Stack::AutoRouteInFront => {
                let stack = ServiceBuilder::new()
                    .layer(
                        AutoRouteLayer::new(catalog(auto_model))
                            .max_buffered_bytes(LIMIT)
                            .health(health.clone()),
                    )
                    .layer(fallback_layer(&health))
                    .service(client);
                serve_watched(stack).await
            }
            Stack::FallbackRoutingAuto => {
                let layer =
                    fallback_layer(&health).auto_route(AutoRouteLayer::new(catalog(auto_model)));
                serve_watched(layer.layer(client)).await
            }
        };
        Bench {
            addr,
            seen,
            up,
            health,
        }
    }

    /// The model the client names to get `model`: `auto` where the layers route it.
    fn asking_for(self, model: &str) -> &str {
        match self {
            Stack::Fallback => model,
            Stack::AutoRouteInFront | Stack::FallbackRoutingAuto => "auto",
        }
    }
}

const STACKS: [Stack; 3] = [
    Stack::Fallback,
    Stack::AutoRouteInFront,
    Stack::FallbackRoutingAuto,
];

/// The client leaves while its chunked body is still coming: the request ends without a byte
/// sent upstream, the bytes taken are given back, and health hears nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_mid_upload_leaves_nothing_behind() {
    let (spans, _guard) = SpanCount::install();
    for stack in STACKS {
        let mut bench = stack.bench("ok").await;
        let model = stack.asking_for("ok");
        let part = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"xxxx"#);
        let conn = start_upload(bench.addr, "w", &part).await;
        wait_for(&mut bench.seen, Seen::BodyFrame).await;
        assert_budget_in_use(bench.addr).await;
        drop(conn);
        // Its body ends in an error the layer answers (to nobody), unless the server drops the
        // request first: either way, the request is over.
        ended(&mut bench.seen).await;
        assert_budget_whole(bench.addr).await;
        assert_eq!(bench.up.received(), ["ok"], "{stack:?}: only the probe");
        assert_eq!(bench.observed_beyond_probes(), [], "{stack:?}");
    }
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

/// On each stack: the client sends `body` (asking first for `waiting`, whose upstream answers
/// nothing it could pass on, then for `b`), and leaves once `waiting` has the request. The
/// upstream's connection is closed, `b` is never asked, the body is given back, no model is
/// charged.
async fn a_client_leaves_while_waiting_for(waiting: &str, body: impl Fn(&str) -> String) {
    let (spans, _guard) = SpanCount::install();
    for stack in STACKS {
        let mut bench = stack.bench(waiting).await;
        let conn = send(bench.addr, "w", &body(stack.asking_for(waiting))).await;
        assert_eq!(bench.up.arrived().await, waiting);
        assert_budget_in_use(bench.addr).await;
        drop(conn);
        assert_eq!(bench.up.gone().await, waiting, "{stack:?}");
        assert_eq!(ended(&mut bench.seen).await, Seen::Dropped, "{stack:?}");
        assert_budget_whole(bench.addr).await;
        assert_eq!(bench.up.received(), [waiting, "ok"], "{stack:?}");
        assert_eq!(bench.observed_beyond_probes(), [], "{stack:?}");
    }
    spans.assert_all_closed(&[
        "llm_router.fallback",
        "llm_router.attempt",
        "llm_router.auto_route",
    ]);
}

/// The client leaves while the first attempt waits for its answer's head.
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_during_an_attempt_cancels_it_and_no_other_starts() {
    a_client_leaves_while_waiting_for("hang", |model| chat_body(model, &["b"], 200)).await;
}

/// The client leaves while the layer holds a stream back (its first event has no content yet,
/// and the next model could still be asked).
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_while_a_stream_is_held_back_cancels_it() {
    a_client_leaves_while_waiting_for("held", |model| stream_body(model, &["b"])).await;
}

/// The client leaves in the middle of a stream it has content of: the upstream's stream is
/// closed, and its model is neither charged nor credited (the stream did not end).
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_mid_stream_closes_it_and_tells_health_nothing() {
    let (spans, _guard) = SpanCount::install();
    for stack in STACKS {
        let mut bench = stack.bench("streaming").await;
        let body = stream_body(stack.asking_for("streaming"), &["b"]);
        let mut conn = send(bench.addr, "w", &body).await;
        let got = read_until(&mut conn, r#""content":"hi""#).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert_eq!(ended(&mut bench.seen).await, Seen::Answered, "{stack:?}");
        drop(conn);
        assert_eq!(bench.up.gone().await, "streaming", "{stack:?}");
        assert_budget_whole(bench.addr).await;
        assert_eq!(bench.up.received(), ["streaming", "ok"], "{stack:?}");
        assert_eq!(bench.observed_beyond_probes(), [], "{stack:?}");
    }
    spans.assert_all_closed(&[
        "llm_router.fallback",
        "llm_router.attempt",
        "llm_router.auto_route",
    ]);
}

/// The client leaves while a failed attempt's retry waits its backoff: the wait ends with the
/// request, no retry and no other model is asked, the body is given back, and health holds the
/// one failure it saw before, nothing made for the cancel.
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_during_a_retry_backoff_leaves_nothing_behind() {
    let (spans, _guard) = SpanCount::install();
    let mut up = Upstream::start().await;
    let health = Arc::new(Recorder::default());
    let retries = Retries::new(3).backoff(std::time::Duration::from_secs(60));
    let layer = fallback_layer(&health).retries(retries);
    let (addr, mut seen) = serve_watched(layer.layer(routed_client(up.addr, vec![]))).await;
    let conn = send(addr, "w", &chat_body("down", &["b"], 200)).await;
    assert_eq!(up.arrived().await, "down");
    // Observed, then the backoff begins at once (no await between the two).
    health.wait_for("down").await;
    assert_budget_in_use(addr).await;
    drop(conn);
    assert_eq!(ended(&mut seen).await, Seen::Dropped);
    assert_budget_whole(addr).await;
    assert_eq!(up.received(), ["down", "ok"], "no retry, no next model");
    let observed: Vec<_> = health
        .seen()
        .into_iter()
        .filter(|(m, _)| m != "ok")
        .collect();
    assert_eq!(observed, [("down".to_owned(), Some(ErrorClass::Downtime))]);
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Readiness
// ---------------------------------------------------------------------------------------------

/// `FallbackLayer` over a concurrency limit of one permit (`semaphore`), optionally behind a
/// `Buffer` of one slot, over the hyper-util client.
async fn limited_bench(semaphore: &Arc<Semaphore>, buffered: bool) -> Bench {
    let up = Upstream::start().await;
    let health = Arc::new(Recorder::default());
    let limited = tower::limit::ConcurrencyLimit::with_semaphore(
        routed_client(up.addr, vec![]),
        semaphore.clone(),
    );
    let (addr, seen) = if buffered {
        let stack = ServiceBuilder::new()
            .layer(fallback_layer(&health))
            .buffer(1)
            .service(limited);
        serve_watched(stack).await
    } else {
        serve_watched(fallback_layer(&health).layer(limited)).await
    };
    Bench {
        addr,
        seen,
        up,
        health,
    }
}

/// The client leaves while a later attempt waits for the limit below the layer (its permit is
/// taken elsewhere): the wait is given up with the request, so the permit goes back whole, and
/// the next model is never asked, also once the permit is free (behind a `Buffer`, whose worker
/// had the attempt queued). Only the first model, which really failed, is charged.
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_leaves_while_a_later_attempt_waits_for_readiness_holds_no_permit() {
    let (spans, _guard) = SpanCount::install();
    for buffered in [false, true] {
        let semaphore = Arc::new(Semaphore::new(1));
        let mut bench = limited_bench(&semaphore, buffered).await;
        let conn = send(bench.addr, "w", &chat_body("gate", &["b"], 200)).await;
        assert_eq!(bench.up.arrived().await, "gate");
        // Queued for the permit `gate`'s attempt holds (the semaphore is fair: next in line),
        // then `gate` fails: the layer records it and goes on to wait for a permit for `b`.
        let mut queued = Box::pin(semaphore.clone().acquire_owned());
        assert!(futures::poll!(&mut queued).is_pending());
        bench.up.release();
        let held = queued.await.unwrap();
        bench.health.wait_for("gate").await;
        drop(conn);
        assert_eq!(ended(&mut bench.seen).await, Seen::Dropped, "{buffered}");
        drop(held);
        // Behind a `Buffer`, the worker keeps the permit it was granted for the cancelled
        // attempt until its next request (tower's buffer, not the layer): checked after that.
        if !buffered {
            assert_eq!(semaphore.available_permits(), 1, "the permit came back");
        }
        // Through the limit: the permit is free, and nothing was sent for `b` before.
        assert_budget_whole(bench.addr).await;
        assert_eq!(semaphore.available_permits(), 1, "{buffered}");
        assert_eq!(bench.up.received(), ["gate", "ok"], "{buffered}");
        assert_eq!(
            bench.observed_beyond_probes(),
            [("gate".to_owned(), Some(ErrorClass::Downtime))],
            "{buffered}"
        );
    }
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

/// An async routing policy that ranks the first candidate once the test lets it
/// ([`Notify::notify_one`] on `decide`), telling on `deciding` when it starts to wait and when
/// it is dropped before it decided.
fn waiting_policy(
    decide: Arc<Notify>,
    deciding: mpsc::UnboundedSender<&'static str>,
) -> impl tower_llm_router::auto_route::AsyncRoutePolicy {
    tower_llm_router::auto_route::async_policy_fn(move |_prompt, candidates| {
        let (decide, deciding) = (decide.clone(), deciding.clone());
        let first = candidates.first().map(|c| c.id.clone());
        Box::pin(async move {
            let _ = deciding.send("started");
            // Tells `dropped` on the `deciding` channel if this future is dropped while it waits.
            struct Tell(mpsc::UnboundedSender<&'static str>, bool);
            impl Drop for Tell {
                fn drop(&mut self) {
                    if self.1 {
                        let _ = self.0.send("dropped");
                    }
                }
            }
            let mut tell = Tell(deciding, true);
            decide.notified().await;
            tell.1 = false;
            let first = first.ok_or("no candidate")?;
            Ok(tower_llm_router::auto_route::Ranking::new(
                vec![first],
                0.5,
                "waited".into(),
            ))
        })
    })
}

/// While an async routing policy decides, the request holds no permit of a limit below the
/// deciding layer (another request goes through meanwhile); a client that leaves then drops
/// the decision, gives its body back, and nothing goes upstream.
#[tokio::test(flavor = "current_thread")]
async fn a_decision_in_flight_holds_no_permit_and_is_dropped_with_the_request() {
    let (spans, _guard) = SpanCount::install();
    for auto_in_front in [true, false] {
        let up = Upstream::start().await;
        let health = Arc::new(Recorder::default());
        let semaphore = Arc::new(Semaphore::new(1));
        let decide = Arc::new(Notify::new());
        let (deciding_tx, mut deciding) = mpsc::unbounded_channel();
        let auto = AutoRouteLayer::new(catalog("hang"))
            .async_policy(waiting_policy(decide.clone(), deciding_tx));
        let (addr, mut seen) = if auto_in_front {
            let below = fallback_layer(&health).layer(routed_client(up.addr, vec![]));
            let limited = tower::limit::ConcurrencyLimit::with_semaphore(below, semaphore.clone());
            serve_watched(auto.max_buffered_bytes(LIMIT).layer(limited)).await
        } else {
            let client = routed_client(up.addr, vec![]);
            let limited = tower::limit::ConcurrencyLimit::with_semaphore(client, semaphore.clone());
            serve_watched(fallback_layer(&health).auto_route(auto).layer(limited)).await
        };
        let conn = send(addr, "w", &chat_body("auto", &[], 200)).await;
        assert_eq!(deciding.recv().await, Some("started"));
        // The probe needs the permit to be answered at all, and the body is held.
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            assert_budget_in_use(addr),
        )
        .await
        .expect("the probe got the permit while the policy decided");
        drop(conn);
        assert_eq!(ended(&mut seen).await, Seen::Dropped);
        assert_eq!(deciding.recv().await, Some("dropped"));
        assert_eq!(semaphore.available_permits(), 1);
        assert_budget_whole(addr).await;
        assert_eq!(up.received(), ["ok"], "{auto_in_front}");
        assert!(health.seen().iter().all(|(m, c)| m == "ok" && c.is_none()));
    }
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

// ---------------------------------------------------------------------------------------------
// 3. A burst
// ---------------------------------------------------------------------------------------------

/// How many requests of each kind the burst sends.
const EACH: usize = 12;
/// The burst's `max_buffered_bytes`: room for all its bodies at once.
const BURST_LIMIT: usize = 64 * 1024;

/// One request of the burst as its client saw it: the status, or `None` for a client that
/// left.
type Outcome = (&'static str, Option<u16>);

/// A burst through two servers of clones of one layer (shared budget and health): successes,
/// fallbacks, failures, and clients that leave mid-upload, during an attempt and mid-stream,
/// all at once. Every request's future ends; afterwards the whole budget is free again, and
/// health holds exactly the failures the upstream really gave (none for a client that left).
#[tokio::test(flavor = "current_thread")]
async fn a_burst_with_cancellations_leaves_the_budget_whole_and_health_true() {
    let (spans, _guard) = SpanCount::install();
    let mut up = Upstream::start().await;
    let health = Arc::new(Recorder::default());
    // Room for every body of the burst at once (at most 150 bytes each).
    let layer = FallbackLayer::new()
        .max_buffered_bytes(BURST_LIMIT)
        .health(health.clone());
    let (tx, mut seen) = mpsc::unbounded_channel();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let stack = layer.clone().layer(routed_client(up.addr, vec![]));
        servers.push(
            serve(
                Watch {
                    inner: stack,
                    seen: tx.clone(),
                },
                None,
            )
            .await,
        );
    }
    let leave = Arc::new(tokio::sync::Barrier::new(EACH * 2 + 1));
    let mut clients = tokio::task::JoinSet::new();
    let mut ids = 0;
    let mut spawn = |kind: &'static str| {
        let addr = servers[ids % 2];
        let id = format!("{kind}-{ids}");
        ids += 1;
        let leave = leave.clone();
        clients.spawn(async move {
            let status = match kind {
                "ok" => Some(answer_of(send(addr, &id, &chat_body("ok", &[], 150)).await).await),
                "fallback" => {
                    let conn = send(addr, &id, &chat_body("down", &["ok"], 150)).await;
                    Some(answer_of(conn).await)
                }
                "error" => {
                    let conn = send(addr, &id, &chat_body("down", &["down2"], 150)).await;
                    Some(answer_of(conn).await)
                }
                "hang" => {
                    let _conn = send(addr, &id, &chat_body("hang", &["b"], 150)).await;
                    leave.wait().await;
                    None
                }
                "upload" => {
                    let _conn = start_upload(addr, &id, r#"{"model":"ok","messages":"#).await;
                    leave.wait().await;
                    None
                }
                _ => {
                    let mut conn = send(addr, &id, &stream_body("streaming", &["b"])).await;
                    read_until(&mut conn, r#""content":"hi""#).await;
                    None
                }
            };
            (kind, status)
        });
    };
    for _ in 0..EACH {
        for kind in ["ok", "fallback", "error", "hang", "upload", "streaming"] {
            spawn(kind);
        }
    }
    // Every hanging attempt is upstream and every upload's first bytes were taken: then all
    // those clients leave at once.
    let (mut hanging, mut uploading) = (0, 0);
    let mut states: HashMap<String, Seen> = HashMap::new();
    while hanging < EACH || uploading < EACH {
        tokio::select! {
            model = up.arrived() => hanging += usize::from(model == "hang"),
            Some((id, what)) = seen.recv() => {
                if id.starts_with("upload") && what == Seen::BodyFrame {
                    uploading += 1;
                }
                states.insert(id, what);
            }
        }
    }
    leave.wait().await;
    let mut outcomes: Vec<Outcome> = Vec::new();
    while let Some(done) = clients.join_next().await {
        outcomes.push(done.unwrap());
    }
    // Every request's future ends: answered, or dropped for a client that left.
    while states.len() < ids
        || states
            .values()
            .any(|s| !matches!(s, Seen::Answered | Seen::Dropped))
    {
        let (id, what) = seen.recv().await.unwrap();
        states.insert(id, what);
    }
    for (kind, status) in outcomes {
        let expected = match kind {
            "ok" | "fallback" => Some(200),
            "error" => Some(503),
            _ => None,
        };
        assert_eq!(status, expected, "{kind}");
    }
    for (id, end) in &states {
        match id.split('-').next() {
            Some("hang") => assert_eq!(*end, Seen::Dropped, "{id}"),
            // Its body's error is answered, unless the server dropped the request first.
            Some("upload") => {}
            _ => assert_eq!(*end, Seen::Answered, "{id}"),
        }
    }
    // Each client that left during an attempt or mid-stream closed that upstream exchange.
    let mut gone = 0;
    while gone < EACH * 2 {
        let model = up.gone().await;
        assert!(model == "hang" || model == "streaming", "{model}");
        gone += 1;
    }

    for server in &servers {
        assert_budget_of_whole(*server, BURST_LIMIT).await;
    }
    let received = up.received();
    let count = |model: &str| received.iter().filter(|m| *m == model).count();
    assert_eq!(count("hang"), EACH);
    assert_eq!(count("b"), 0, "no fallback after a client left");
    assert_eq!(count("down"), EACH * 2);
    assert_eq!(count("down2"), EACH);
    let observed = health.seen();
    let failures = |model: &str| {
        observed
            .iter()
            .filter(|(m, class)| m == model && *class == Some(ErrorClass::Downtime))
            .count()
    };
    assert_eq!(failures("down"), EACH * 2);
    assert_eq!(failures("down2"), EACH);
    let told = |model: &str| observed.iter().any(|(m, _)| m == model);
    assert!(
        !told("hang") && !told("b") && !told("streaming"),
        "{observed:?}"
    );
    assert!(
        observed
            .iter()
            .all(|(m, class)| class.is_none() == (m == "ok")),
        "{observed:?}"
    );
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

/// Reads the whole answer on `conn` (it is closed after it) and returns its status.
async fn answer_of(mut conn: TcpStream) -> u16 {
    let head = read_until(&mut conn, "\r\n\r\n").await;
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The reqwest middleware
// ---------------------------------------------------------------------------------------------

/// `FallbackMiddleware` on the client side: a caller that drops its request while the body is
/// still streaming in, and one that drops it during an attempt. The attempt's connection is
/// closed, no other model is asked, the budget is whole again, health hears nothing.
#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "current_thread")]
async fn the_reqwest_middleware_lets_go_of_everything_when_the_caller_drops_the_request() {
    use tower_llm_router::reqwest::FallbackMiddleware;

    let (spans, _guard) = SpanCount::install();
    let mut up = Upstream::start().await;
    let health = Arc::new(Recorder::default());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::new(fallback_layer(&health)))
        .build();
    let url = format!("http://{}/v1/chat/completions", up.addr);
    let post = |body: reqwest::Body| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let probe = |limit| {
        let sent = post(chat_body("ok", &[], limit).into());
        async move { sent.await.unwrap().status().as_u16() }
    };

    // The body streams in and stops: the layer reads it before any attempt.
    let (mut rest, stalled) = futures::channel::mpsc::channel::<Result<Bytes, Infallible>>(1);
    rest.try_send(Ok(Bytes::from_static(br#"{"model":"ok","messages":"#)))
        .unwrap();
    let mut sending = Box::pin(post(reqwest::Body::wrap_stream(stalled)));
    assert!(futures::poll!(&mut sending).is_pending());
    assert_eq!(probe(LIMIT).await, 503, "the first bytes are held");
    drop(sending);
    assert_eq!(probe(LIMIT).await, 200);

    let mut sending = Box::pin(post(chat_body("hang", &["b"], 200).into()));
    tokio::select! {
        _ = &mut sending => panic!("answered"),
        model = up.arrived() => assert_eq!(model, "ok"),
    }
    tokio::select! {
        _ = &mut sending => panic!("answered"),
        model = up.arrived() => assert_eq!(model, "hang"),
    }
    drop(sending);
    assert_eq!(up.gone().await, "hang");
    assert_eq!(probe(LIMIT).await, 200);
    assert_eq!(up.received(), ["ok", "hang", "ok"]);
    assert!(
        health.seen().iter().all(|(m, c)| m == "ok" && c.is_none()),
        "{:?}",
        health.seen()
    );
    spans.assert_all_closed(&["llm_router.fallback", "llm_router.attempt"]);
}

// ---------------------------------------------------------------------------------------------
// No task left behind
// ---------------------------------------------------------------------------------------------

/// `request` called on `svc` once ready, and polled until it waits.
async fn waiting<S: Service<R>, R>(svc: &mut S, request: R) -> Pin<Box<S::Future>>
where
    S::Error: std::fmt::Debug,
{
    tower::ServiceExt::ready(&mut *svc).await.unwrap();
    let mut future = Box::pin(svc.call(request));
    assert!(futures::poll!(&mut future).is_pending());
    future
}

/// The layers spawn nothing: a request dropped in each state it can wait in (its body coming,
/// an async policy deciding, an attempt sent, its answer's first event awaited, a later attempt
/// waiting for readiness) leaves no task running. A runtime of the test's own counts its tasks;
/// the inner service is tower's mock (no task either).
#[test]
fn a_request_dropped_in_any_state_leaves_no_task_running() {
    use tower_test::mock;
    type MockBody = http_body_util::combinators::BoxBody<Bytes, tower_llm_router::BoxError>;
    type Req = Request<http_body_util::Full<Bytes>>;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let alive = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let decide = Arc::new(Notify::new());
        let (deciding, _decisions) = mpsc::unbounded_channel();
        let layer = FallbackLayer::new().auto_route(
            AutoRouteLayer::new(catalog("m")).async_policy(waiting_policy(decide, deciding)),
        );
        let (inner, mut handle) = mock::pair::<Request<RouterBody>, Response<MockBody>>();
        let mut svc = layer.layer(inner);
        let request = |body: &str| -> Req {
            Request::post("http://up/v1/chat/completions")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
                .unwrap()
        };
        let never = || -> MockBody {
            http_body_util::StreamBody::new(futures::stream::pending::<
                Result<Frame<Bytes>, tower_llm_router::BoxError>,
            >())
            .boxed()
        };
        handle.allow(u64::MAX);

        // Its body coming.
        let (_more, body) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let coming = Request::post("http://up/v1/chat/completions")
            .header("content-type", "application/json")
            .body(http_body_util::StreamBody::new(body))
            .unwrap();
        drop(waiting(&mut svc, coming).await);
        assert_eq!(alive(), 0, "body coming");

        // An async policy deciding.
        let auto = r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
        drop(waiting(&mut svc, request(auto)).await);
        assert_eq!(alive(), 0, "deciding");

        // An attempt sent.
        let future = waiting(&mut svc, request(r#"{"model":"a","models":["b"]}"#)).await;
        let (_sent, response) = handle.next_request().await.unwrap();
        drop(future);
        drop(response);
        assert_eq!(alive(), 0, "sent");

        // Its answer's first event awaited.
        let body = r#"{"model":"a","models":["b"],"stream":true}"#;
        let mut future = waiting(&mut svc, request(body)).await;
        let (_sent, response) = handle.next_request().await.unwrap();
        let mut head = Response::new(never());
        head.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        response.send_response(head);
        assert!(futures::poll!(&mut future).is_pending());
        drop(future);
        assert_eq!(alive(), 0, "first event awaited");

        // A later attempt waiting for readiness.
        let mut future = waiting(&mut svc, request(r#"{"model":"a","models":["b"]}"#)).await;
        let (_sent, response) = handle.next_request().await.unwrap();
        handle.allow(0);
        let mut failed = Response::new(
            http_body_util::Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        );
        *failed.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response.send_response(failed);
        assert!(futures::poll!(&mut future).is_pending());
        assert!(
            futures::poll!(Box::pin(handle.next_request())).is_pending(),
            "`b` waits"
        );
        drop(future);
        assert_eq!(alive(), 0, "later attempt waiting");
    });
}

/// An inner service whose readiness fails once, the `fail_at`-th time it is asked (from 1),
/// and is otherwise its inner service's: a pool that had a bad moment.
#[derive(Clone)]
struct FailsReadyOnce<S> {
    inner: S,
    asked: Arc<std::sync::atomic::AtomicUsize>,
    fail_at: usize,
}

impl<S> Service<Request<RouterBody>> for FailsReadyOnce<S>
where
    S: Service<Request<RouterBody>>,
    S::Error: Into<tower_llm_router::BoxError>,
{
    type Response = S::Response;
    type Error = tower_llm_router::BoxError;
    type Future = futures::future::ErrInto<S::Future, tower_llm_router::BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let asked = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if asked == self.fail_at {
            return Poll::Ready(Err("the pool is closed".into()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<RouterBody>) -> Self::Future {
        futures::TryFutureExt::err_into(self.inner.call(req))
    }
}

/// Behind a `Buffer`, a readiness error of the service below comes back from the attempt's
/// call, not from a `poll_ready` (the buffer's worker waits for that readiness once it has the
/// request), as tower's `ServiceError`. The attempt was never sent: as for a readiness error
/// without a buffer, its model is neither recorded as tried nor charged in health, and the
/// request ends there (the buffer's error comes back; with `answer_transport_errors`, a 502
/// naming the model that could not be asked), for the first attempt as for a later one. Before,
/// the model was charged `downtime` and the next one tried, to meet the failed buffer again.
#[tokio::test(flavor = "current_thread")]
async fn a_readiness_error_behind_a_buffer_is_charged_to_no_model() {
    // The request (`down` answers 503), at which readiness fails, what is answered (with
    // `answer_transport_errors`: the attempts header, the model not asked), what health hears.
    type Case = (
        &'static [&'static str],
        usize,
        Option<&'static str>,
        &'static str,
        &'static [&'static str],
    );
    let cases: [Case; 2] = [
        (&["a", "b"], 1, None, "a", &[]),
        (&["down", "b"], 2, Some("down=downtime"), "b", &["down"]),
    ];
    for (models, fail_at, attempts, unasked, charged) in cases {
        for answer in [false, true] {
            let up = Upstream::start().await;
            let health = Arc::new(Recorder::default());
            let stack = ServiceBuilder::new()
                .layer(fallback_layer(&health).answer_transport_errors(answer))
                .buffer(4)
                .service(FailsReadyOnce {
                    inner: routed_client(up.addr, vec![]),
                    asked: Arc::default(),
                    fail_at,
                });
            let addr = serve(stack, None).await;
            let raw = exchange(addr, &chat_body(models[0], &models[1..], 200)).await;
            if answer {
                assert!(raw.starts_with("HTTP/1.1 502"), "{raw}");
                let head = raw.split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
                let header = head
                    .lines()
                    .find_map(|line| line.strip_prefix("x-llm-router-attempts: "));
                assert_eq!(header, attempts, "{raw}");
                let json: serde_json::Value =
                    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap();
                assert!(support::is_openai_error(&json), "{json}");
                assert_eq!(json["error"]["code"], "upstream_unreachable");
                let message = format!(
                    "the inner service failed before the model `{unasked}` could be asked: \
                     buffered service failed: the pool is closed"
                );
                assert_eq!(json["error"]["message"], message.as_str());
            } else {
                // The service's error: hyper closes the connection without an answer.
                assert_eq!(raw, "");
            }
            let failed: Vec<_> = charged
                .iter()
                .map(|m| (m.to_string(), Some(ErrorClass::Downtime)))
                .collect();
            assert_eq!(health.seen(), failed, "{models:?} {answer}");
            assert_eq!(up.received(), charged, "{models:?} {answer}");
        }
    }
}
