//! Soak: 20,000 requests at 256 concurrency through the gateway example's app (axum, served on
//! 127.0.0.1, AutoRouteLayer -> FallbackLayer -> its hyper-util upstream client), against an
//! upstream that injects faults from a fixed-seed plan. Every request must get exactly one
//! answer, and the right one; no task may outlive the run; memory must return to its base.
//! Plus the amplification bound of the retry budget.
//!
//! ```text
//! 256 client tasks ──► examples/gateway app ──► AutoRouteLayer ──► FallbackLayer
//!  (hyper-util)         (axum, 127.0.0.1)      ──► hyper-util client ──► fault upstream
//! ```
//!
//! The fault of each attempt depends on the request and the attempt's position only (not on
//! the model), so the expected answer (status, failure classes in order, which attempt served,
//! its body) is known in advance even though the gateway's shared health may reorder a chain.
//! The models are checked for consistency instead: the attempts header names distinct models
//! of the chain, exactly those the upstream saw for that request, in that order.

mod support;

include!("support/gateway_modules.rs");

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use support::{
    body_bytes, chat, full_body, json_response, routed_client, sse_response, Behavior, Upstream,
    UpstreamBody,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::FallbackLayer;

const SEED: u64 = 0x5eed_0008;
const REQUESTS: u64 = 20_000;
const WARMUP: u64 = 1_000;
const CONCURRENCY: usize = 256;
const PATH: &str = "/v1/chat/completions";
const MODELS: [&str; 4] = ["cheap", "mid", "big", "huge"];

/// SplitMix64: a fixed, seedable stream of pseudo-random numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What the upstream does for one attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Ok,
    /// Wait this many milliseconds, then answer like `Ok`.
    Delay(u64),
    RateLimited,
    ContextLength,
    Moderation,
    /// 500, 502 or 503.
    Down(u16),
    /// 401: not a class that is down or limited, but `fallback_on` is every class.
    Other,
    /// Close the connection before any response head.
    Reset,
    /// A 200 event stream whose first event is an error.
    SseError,
    /// A 200 event stream that breaks after two events.
    Break,
}

impl Fault {
    fn of(id: u64, attempt: usize, stream: bool) -> Fault {
        let r = mix(SEED ^ mix(id) ^ (attempt as u64 + 1) << 56) % 100;
        match r {
            0..=39 => Fault::Ok,
            40..=44 => Fault::Delay(1 + r % 20),
            45..=52 => Fault::RateLimited,
            53..=57 => Fault::ContextLength,
            58..=62 => Fault::Moderation,
            63..=70 => Fault::Down([500, 502, 503][r as usize % 3]),
            71..=74 => Fault::Other,
            75..=82 => Fault::Reset,
            83..=91 if stream => Fault::SseError,
            83..=91 => Fault::Ok,
            _ if stream => Fault::Break,
            _ => Fault::Down(503),
        }
    }

    /// The class the router must record, `None` for an answer that is served.
    fn class(self) -> Option<&'static str> {
        match self {
            Fault::Ok | Fault::Delay(_) | Fault::Break => None,
            Fault::RateLimited => Some("rate_limited"),
            Fault::ContextLength => Some("context_length"),
            Fault::Moderation => Some("moderation"),
            Fault::Down(_) | Fault::Reset | Fault::SseError => Some("downtime"),
            Fault::Other => Some("other"),
        }
    }

    /// The status of the upstream's answer (`None`: no answer at all).
    fn status(self) -> Option<u16> {
        match self {
            Fault::Ok | Fault::Delay(_) | Fault::Break | Fault::SseError => Some(200),
            Fault::RateLimited => Some(429),
            Fault::ContextLength => Some(400),
            Fault::Moderation => Some(403),
            Fault::Down(status) => Some(status),
            Fault::Other => Some(401),
            Fault::Reset => None,
        }
    }
}

/// What one request asks for.
struct Plan {
    auto: bool,
    stream: bool,
    /// The models named (for `auto`, every catalog model: the router picks the order).
    chain: Vec<String>,
}

impl Plan {
    fn of(id: u64) -> Plan {
        let r = mix(SEED.wrapping_add(id));
        let auto = r % 5 == 0;
        let stream = (r >> 8) % 10 < 3;
        let (first, len) = if auto {
            (0, 4)
        } else {
            ((r >> 24) as usize % 4, 1 + (r >> 16) as usize % 4)
        };
        let chain = (0..len)
            .map(|i| MODELS[(first + i) % 4].to_owned())
            .collect();
        Plan {
            auto,
            stream,
            chain,
        }
    }

    fn body(&self) -> String {
        let messages = json!([{"role": "user", "content": "Say hello to the soak test."}]);
        if self.auto {
            json!({"model": "auto", "stream": self.stream, "messages": messages}).to_string()
        } else {
            json!({
                "model": self.chain[0],
                "models": self.chain[1..],
                "stream": self.stream,
                "messages": messages,
            })
            .to_string()
        }
    }
}

/// The answer a request must get, computed from its plan and the fault plan.
#[derive(Debug)]
struct Expected {
    status: u16,
    /// The outcome of each attempt, in order (`ok` or a class). Every answer carries the
    /// router's headers, the 502 of a last model that reset the connection too.
    outcomes: Vec<&'static str>,
    /// The fault of the attempt that answered.
    last: Fault,
}

fn expected(id: u64, plan: &Plan) -> Expected {
    let mut outcomes = Vec::new();
    for k in 0..plan.chain.len() {
        let fault = Fault::of(id, k, plan.stream);
        outcomes.push(fault.class().unwrap_or("ok"));
        if fault.class().is_none() || k + 1 == plan.chain.len() {
            return Expected {
                status: fault.status().unwrap_or(502),
                outcomes,
                last: fault,
            };
        }
    }
    unreachable!("a chain has at least one model")
}

/// Checks a response against the expectation; returns the models its attempts header names.
fn check(
    id: u64,
    plan: &Plan,
    exp: &Expected,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status.as_u16() != exp.status {
        return Err(format!("status {status}, want {}", exp.status));
    }
    let text = String::from_utf8_lossy(body);
    let marker = format!("soak-{id}-{}", exp.outcomes.len() - 1);
    let (attempts, served) = match (
        header("x-llm-router-attempts"),
        header("x-llm-router-model"),
    ) {
        (Some(attempts), Some(served)) => (attempts, served),
        other => return Err(format!("headers {other:?}, want both")),
    };
    let pairs: Vec<(&str, &str)> = attempts
        .split(", ")
        .filter_map(|pair| pair.rsplit_once('='))
        .collect();
    let outcomes: Vec<&str> = pairs.iter().map(|(_, outcome)| *outcome).collect();
    let models: Vec<String> = pairs.iter().map(|(m, _)| (*m).to_owned()).collect();
    if outcomes != exp.outcomes {
        return Err(format!(
            "attempts {attempts:?}, want outcomes {:?}",
            exp.outcomes
        ));
    }
    let distinct: std::collections::HashSet<&String> = models.iter().collect();
    if distinct.len() != models.len() || !models.iter().all(|m| plan.chain.contains(m)) {
        return Err(format!(
            "attempts {attempts:?} for the chain {:?}",
            plan.chain
        ));
    }
    if models.last() != Some(&served) {
        return Err(format!("served by {served}, attempts {attempts:?}"));
    }
    let ok = match exp.last {
        Fault::Ok | Fault::Delay(_) if plan.stream => {
            text.contains(&marker) && text.contains(&served) && text.ends_with("data: [DONE]\n\n")
        }
        Fault::Ok | Fault::Delay(_) => serde_json::from_slice::<Value>(body)
            .is_ok_and(|v| v["model"] == served.as_str() && v["id"] == marker.as_str()),
        Fault::Break => {
            text.contains(&marker)
                && text.ends_with("\n\n")
                && text.contains(r#""finish_reason":"error""#)
                && !text.contains("[DONE]")
        }
        // No answer from the last model: the layer's 502.
        Fault::Reset => serde_json::from_slice::<Value>(body)
            .is_ok_and(|v| v["error"]["code"] == "upstream_unreachable"),
        // The last model's answer, unchanged.
        _ => text.contains(&marker),
    };
    if ok {
        Ok(models)
    } else {
        Err(format!("body {text:?} for {:?}", exp.last))
    }
}
// ---------------------------------------------------------------------------------------------
// The fault upstream.

type UpBody = UpstreamBody;

#[derive(Default)]
struct UpState {
    /// The models each request id asked for, in order.
    seen: Mutex<HashMap<u64, Vec<String>>>,
    /// Handler futures and response bodies alive now.
    live: AtomicI64,
    attempts: AtomicUsize,
}

/// Counts itself alive in `UpState::live` until dropped.
struct Live(Arc<UpState>);

impl Live {
    fn new(state: &Arc<UpState>) -> Live {
        state.live.fetch_add(1, Ordering::SeqCst);
        Live(state.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn chunk(marker: &str, model: &str, i: usize) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": marker, "object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}]})
    )
}

async fn upstream_handle(
    state: Arc<UpState>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, std::io::Error> {
    let live = Live::new(&state);
    let id: u64 = req
        .headers()
        .get("x-soak-id")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    let json: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
    let model = json["model"].as_str().unwrap_or_default().to_owned();
    let stream = json["stream"] == true;
    let attempt = {
        let mut seen = state.seen.lock().unwrap();
        let list = seen.entry(id).or_default();
        list.push(model.clone());
        list.len() - 1
    };
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let marker = format!("soak-{id}-{attempt}");
    let error = |message: &str| json!({"error": {"message": format!("{marker} {message}")}});
    let fault = Fault::of(id, attempt, stream);
    if let Fault::Delay(ms) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let res = match fault {
        Fault::Ok | Fault::Delay(_) if stream => {
            let mut out = String::new();
            for i in 0..3 {
                out.push_str(&chunk(&marker, &model, i));
            }
            out.push_str("data: [DONE]\n\n");
            sse_response(full_body(out))
        }
        Fault::Ok | Fault::Delay(_) => json_response(
            200,
            &[],
            json!({"id": marker, "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]})
            .to_string(),
        ),
        Fault::RateLimited
        | Fault::ContextLength
        | Fault::Moderation
        | Fault::Down(_)
        | Fault::Other => {
            // The error object of each class, in its provider's shape.
            let (message, fields) = match fault {
                Fault::RateLimited => (
                    "Rate limit reached for requests",
                    json!({"type": "requests", "code": "rate_limit_exceeded"}),
                ),
                Fault::ContextLength => (
                    "This model's maximum context length is 8192 tokens.",
                    json!({"type": "invalid_request_error", "code": "context_length_exceeded"}),
                ),
                Fault::Moderation => (
                    "Input was flagged",
                    json!({"code": 403, "metadata": {"reasons": ["violence"], "flagged_input": "..."}}),
                ),
                Fault::Other => (
                    "Incorrect API key provided.",
                    json!({"type": "invalid_request_error", "code": "invalid_api_key"}),
                ),
                _ => (
                    "The server had an error while processing your request.",
                    json!({"type": "server_error"}),
                ),
            };
            let mut body = error(message);
            for (key, value) in fields.as_object().into_iter().flatten() {
                body["error"][key] = value.clone();
            }
            let retry_after: &[(&str, &str)] = match fault {
                Fault::RateLimited => &[("retry-after", "1")],
                _ => &[],
            };
            json_response(fault.status().unwrap_or(500), retry_after, body.to_string())
        }
        Fault::Reset => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "scripted reset",
            ))
        }
        Fault::SseError => {
            let mut body = error("Provider returned error: overloaded");
            body["error"]["code"] = json!(503);
            sse_response(full_body(format!("data: {body}\n\n")))
        }
        Fault::Break => {
            // Two events, spaced out so that each is flushed, then the connection breaks.
            let frames = futures::stream::unfold((0usize, live), move |(i, live)| {
                let (marker, model) = (marker.clone(), model.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let item = match i {
                        0 | 1 => Ok(Frame::data(Bytes::from(chunk(&marker, &model, i)))),
                        2 => Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted break",
                        )),
                        _ => return None,
                    };
                    Some((item, (i + 1, live)))
                }
            });
            return Ok(sse_response(BodyExt::boxed(http_body_util::StreamBody::new(
                frames,
            ))));
        }
    };
    drop(live);
    Ok(res)
}

/// Serves until `stop` says so; the accept loop and every connection task end with it.
async fn serve_until<F, Fut, B>(
    make: F,
    stop: watch::Receiver<bool>,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, std::io::Error>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut stop = stop;
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                _ = stop.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            let make = make.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(make);
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// The gateway's configuration: the four models on the fault upstream, chains of up to 4.
fn gateway_config(up: SocketAddr) -> config::Config {
    let mut toml = format!("upstream = \"http://{up}/v1\"\n\n[fallback]\nmax_models = 4\n");
    for (model, window, input, output) in [
        ("cheap", 16_000, 0.1, 0.4),
        ("mid", 64_000, 1.0, 4.0),
        ("big", 128_000, 3.0, 15.0),
        ("huge", 200_000, 10.0, 30.0),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{model}\"\ncontext_window = {window}\ninput_price = {input}\noutput_price = {output}\n"
        ));
    }
    config::Config::from_toml(&toml).unwrap()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

type ClientT = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(
    client: &ClientT,
    gateway: SocketAddr,
    id: u64,
    body: String,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let req = Request::post(format!("http://{gateway}{PATH}"))
        .header("content-type", "application/json")
        .header("x-soak-id", id.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client
        .request(req)
        .await
        .map_err(|e| format!("request {id}: {e}"))?;
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body {id}: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// What a run saw: answers, the first mismatches, the models each answer's header named.
#[derive(Default)]
struct Outcome {
    answered: AtomicU64,
    wrong: Mutex<Vec<String>>,
    named: Mutex<HashMap<u64, Vec<String>>>,
}

/// Sends ids `from..to` from `CONCURRENCY` tasks.
async fn run(client: &ClientT, gateway: SocketAddr, from: u64, to: u64) -> Arc<Outcome> {
    let next = Arc::new(AtomicU64::new(from));
    let outcome = Arc::new(Outcome::default());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (next, outcome, client) = (next.clone(), outcome.clone(), client.clone());
        workers.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::SeqCst);
                if id >= to {
                    return;
                }
                let plan = Plan::of(id);
                let exp = expected(id, &plan);
                let verdict = match send(&client, gateway, id, plan.body()).await {
                    Ok((status, headers, body)) => {
                        outcome.answered.fetch_add(1, Ordering::SeqCst);
                        check(id, &plan, &exp, status, &headers, &body)
                    }
                    Err(e) => Err(e),
                };
                match verdict {
                    Ok(models) => {
                        outcome.named.lock().unwrap().insert(id, models);
                    }
                    Err(e) => {
                        let mut wrong = outcome.wrong.lock().unwrap();
                        if wrong.len() < 20 {
                            wrong.push(format!("id {id} ({exp:?}): {e}"));
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_requests_with_faults_each_get_the_right_answer_and_nothing_leaks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let (stop_upstream, stop) = watch::channel(false);
    let up_state = Arc::new(UpState::default());
    let state = up_state.clone();
    let (up_addr, up_task) =
        serve_until(move |req| upstream_handle(state.clone(), req), stop).await;

    let router = app::build(
        &gateway_config(up_addr),
        &|_: &str| None,
        common::upstream::default_tls().unwrap(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    let (stop_gateway, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway_task = tokio::spawn(app::serve(listener, router, async move {
        let _ = stopped.await;
    }));

    let client: ClientT = Client::builder(TokioExecutor::new()).build_http();
    let warmup = run(&client, gateway, 0, WARMUP).await;
    let wrong = warmup.wrong.lock().unwrap().clone();
    assert_eq!(warmup.answered.load(Ordering::SeqCst), WARMUP, "{wrong:#?}");
    assert!(wrong.is_empty(), "warm-up: {wrong:#?}");
    let rss_before = rss_kib();
    let started = Instant::now();
    let soak = run(&client, gateway, WARMUP, WARMUP + REQUESTS).await;
    let elapsed = started.elapsed();
    let wrong = soak.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} wrong answers at least, first: {wrong:#?}",
        wrong.len()
    );
    assert_eq!(
        soak.answered.load(Ordering::SeqCst),
        REQUESTS,
        "every request got exactly one answer"
    );

    // The upstream saw exactly the attempts the plan calls for: no attempt lost, none repeated,
    // and the very models each answer's attempts header names, in that order.
    let seen = up_state.seen.lock().unwrap().clone();
    let mut named = warmup.named.lock().unwrap().clone();
    named.extend(soak.named.lock().unwrap().drain());
    let mut attempts = 0;
    let mut finals: HashMap<&str, usize> = HashMap::new();
    for id in 0..WARMUP + REQUESTS {
        let plan = Plan::of(id);
        let exp = expected(id, &plan);
        let tried = seen.get(&id).cloned().unwrap_or_default();
        assert_eq!(tried.len(), exp.outcomes.len(), "request {id}: {tried:?}");
        match named.get(&id) {
            Some(models) if !models.is_empty() => assert_eq!(&tried, models, "request {id}"),
            // The gateway's 502: no header to compare with; distinct models of the chain.
            _ => {
                let distinct: std::collections::HashSet<&String> = tried.iter().collect();
                assert!(
                    distinct.len() == tried.len() && tried.iter().all(|m| plan.chain.contains(m))
                );
            }
        }
        attempts += tried.len();
        *finals
            .entry(exp.last.class().unwrap_or("served"))
            .or_default() += 1;
    }
    assert_eq!(up_state.attempts.load(Ordering::SeqCst), attempts);
    println!(
        "{REQUESTS} requests in {elapsed:?} ({:.0}/s), {attempts} upstream attempts (warm-up included), final answers {finals:?}",
        REQUESTS as f64 / elapsed.as_secs_f64(),
    );

    // Nothing outlives the run: drop the client, stop the gateway (it lets in-flight requests
    // finish) and the upstream, let connections close.
    drop(client);
    let _ = stop_gateway.send(());
    gateway_task.await.unwrap().unwrap();
    stop_upstream.send(true).unwrap();
    up_task.await.unwrap();
    let settle = Instant::now();
    while (metrics.num_alive_tasks() > tasks_before || up_state.live.load(Ordering::SeqCst) != 0)
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = rss_kib();
    println!(
        "alive tasks: {tasks_before} before, {} after; upstream handlers and bodies alive: {}; VmRSS {rss_before} KiB before, {rss_after} KiB after",
        metrics.num_alive_tasks(),
        up_state.live.load(Ordering::SeqCst)
    );
    assert_eq!(metrics.num_alive_tasks(), tasks_before, "tasks leaked");
    assert_eq!(
        up_state.live.load(Ordering::SeqCst),
        0,
        "upstream work leaked"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory did not return to its base: {rss_before} KiB -> {rss_after} KiB"
    );
}

/// A burst of 500 failing requests with a retry budget: the upstream sees at most the budgeted
/// number of fallback attempts on top of the 500 first ones, instead of 3 x 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_with_a_budget_sends_at_most_the_budgeted_extra_attempts() {
    const BURST: usize = 500;
    const TTL_SECS: u64 = 10;
    const MIN_PER_SEC: u32 = 10;
    const RETRY_PERCENT: f32 = 0.1;
    let up = Upstream::start().await;
    for model in ["a", "b", "c", "d"] {
        up.set(
            model,
            Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
        );
    }
    let budget = Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(TTL_SECS),
        MIN_PER_SEC,
        RETRY_PERCENT,
    ));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().budget(budget))
        .service(routed_client(up.addr, vec![]));
    let body = r#"{"model":"a","models":["b","c","d"],"messages":[]}"#;
    let url = up.url(PATH);
    let answers = futures::future::join_all((0..BURST).map(|_| {
        let svc = svc.clone();
        let req = chat(&url, body);
        async move {
            let res = svc.oneshot(req).await.unwrap();
            let attempts = res.headers()["x-llm-router-attempts"]
                .to_str()
                .unwrap()
                .split(", ")
                .count();
            let status = res.status();
            body_bytes(res.into_body()).await;
            (status, attempts)
        }
    }))
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 503));
    let first = BURST;
    let received = up.received().len();
    let extra = received - first;
    assert_eq!(
        answers.iter().map(|(_, attempts)| attempts).sum::<usize>(),
        received,
        "the attempts headers account for every upstream call"
    );
    // TpsBudget: a reserve of `min_per_sec * ttl` fallbacks, plus one per `1 / retry_percent`
    // requests (rounded down, as tower computes its withdraw amount).
    let per_deposit = (1.0 / RETRY_PERCENT) as usize;
    let budgeted = MIN_PER_SEC as usize * TTL_SECS as usize + BURST / per_deposit;
    println!(
        "{BURST} failing requests: {extra} fallback attempts (budget {budgeted}, unbudgeted {})",
        3 * BURST
    );
    assert!(
        extra <= budgeted,
        "{extra} extra attempts over the budget of {budgeted}"
    );
    assert!(
        extra >= MIN_PER_SEC as usize * TTL_SECS as usize,
        "the reserve is spent"
    );
}
