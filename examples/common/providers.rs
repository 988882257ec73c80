//! Simulated OpenAI-compatible providers on 127.0.0.1, one hyper server each, every one with
//! its own way of failing: the demo runs against them, and the gateway starts in front of them
//! when it has no configuration.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_llm_router::auto_route::{Capabilities, ModelProfile};

/// How a simulated provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `429` with `Retry-After: 30`.
    RateLimited,
    /// `503`, the provider is down.
    Down,
    /// OpenRouter's `403`: the input was flagged by moderation.
    Moderation,
    /// `400 context_length_exceeded` when the prompt is over the model's window.
    SmallContext,
    /// Answers (and streams when asked).
    Healthy,
    /// Streams its answer as server-sent events, a chunk every 15 ms.
    Streaming,
}

/// A simulated model: its provider's behaviour and its catalog entry.
#[derive(Clone, Copy, Debug)]
pub struct SimModel {
    pub id: &'static str,
    pub kind: Kind,
    pub context_window: u64,
    /// USD per million input tokens.
    pub input_price: f64,
    /// USD per million output tokens.
    pub output_price: f64,
    pub capabilities: &'static [&'static str],
}

/// The simulated catalog, one provider per model.
pub const MODELS: [SimModel; 6] = [
    SimModel {
        id: "openai/gpt-4o",
        kind: Kind::RateLimited,
        context_window: 128_000,
        input_price: 2.5,
        output_price: 10.0,
        capabilities: &["vision", "tools", "structured_output"],
    },
    SimModel {
        id: "anthropic/claude-sonnet-4",
        kind: Kind::Down,
        context_window: 200_000,
        input_price: 3.0,
        output_price: 15.0,
        capabilities: &["vision", "tools"],
    },
    SimModel {
        id: "openai/gpt-4.1-mini",
        kind: Kind::Moderation,
        context_window: 1_047_576,
        input_price: 0.4,
        output_price: 1.6,
        capabilities: &["vision", "tools", "structured_output"],
    },
    SimModel {
        id: "mistralai/ministral-8b",
        kind: Kind::SmallContext,
        context_window: 8_192,
        input_price: 0.1,
        output_price: 0.1,
        capabilities: &["tools"],
    },
    SimModel {
        id: "google/gemini-2.5-flash",
        kind: Kind::Healthy,
        context_window: 1_048_576,
        input_price: 0.3,
        output_price: 2.5,
        capabilities: &["vision", "tools", "structured_output"],
    },
    SimModel {
        id: "deepseek/deepseek-chat",
        kind: Kind::Streaming,
        context_window: 64_000,
        input_price: 0.27,
        output_price: 1.1,
        capabilities: &["tools"],
    },
];

impl SimModel {
    /// The capabilities as the auto router reads them.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            vision: self.capabilities.contains(&"vision"),
            audio: self.capabilities.contains(&"audio"),
            video: self.capabilities.contains(&"video"),
            file: self.capabilities.contains(&"file"),
            tools: self.capabilities.contains(&"tools"),
            structured_output: self.capabilities.contains(&"structured_output"),
        }
    }

    /// The catalog entry of the auto router.
    pub fn profile(&self) -> ModelProfile {
        ModelProfile::new(
            self.id,
            self.context_window,
            self.input_price,
            self.output_price,
        )
        .with_capabilities(self.capabilities())
    }
}

/// The simulated model with this id.
pub fn sim_model(id: &str) -> Option<&'static SimModel> {
    MODELS.iter().find(|m| m.id == id)
}

/// The running simulated providers.
#[derive(Clone, Debug)]
pub struct Providers {
    servers: Vec<(&'static SimModel, SocketAddr)>,
}

impl Providers {
    /// Starts one server per entry of [`MODELS`] on 127.0.0.1 (ephemeral ports). They run until
    /// the tokio runtime stops.
    pub async fn start() -> std::io::Result<Self> {
        let mut servers = Vec::with_capacity(MODELS.len());
        for model in &MODELS {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            servers.push((model, listener.local_addr()?));
            tokio::spawn(serve(listener, model));
        }
        Ok(Self { servers })
    }

    /// Each simulated model with the base URL of its provider (`http://127.0.0.1:port/v1`).
    pub fn routes(&self) -> impl Iterator<Item = (&'static SimModel, String)> + '_ {
        self.servers
            .iter()
            .map(|(model, addr)| (*model, format!("http://{addr}/v1")))
    }
}

async fn serve(listener: TcpListener, model: &'static SimModel) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(model.kind, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type SimBody = UnsyncBoxBody<Bytes, Infallible>;

/// A rough token count: four bytes a token.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes / 4) as u64
}

async fn answer(kind: Kind, req: Request<Incoming>) -> Result<Response<SimBody>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = json["model"].as_str().unwrap_or("unknown").to_owned();
    let stream = json["stream"].as_bool().unwrap_or(false);
    let tokens = estimate_tokens(body.len());
    Ok(match kind {
        Kind::RateLimited => error(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "30")],
            r#"{"error":{"message":"Rate limit reached for requests per min (RPM): limit 500. Please try again in 30s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_owned(),
        ),
        Kind::Down => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &[],
            r#"{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error","param":null,"code":null}}"#.to_owned(),
        ),
        Kind::Moderation => error(
            StatusCode::FORBIDDEN,
            &[],
            format!(
                r#"{{"error":{{"code":403,"message":"{model} requires moderation on OpenRouter. Your input was flagged for \"harassment\". No credits were charged.","metadata":{{"reasons":["harassment"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"{model}"}}}}}}"#
            ),
        ),
        Kind::SmallContext if tokens > 8_192 => error(
            StatusCode::BAD_REQUEST,
            &[],
            format!(
                r#"{{"error":{{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}}}"#
            ),
        ),
        Kind::Streaming if stream => sse(&model, Duration::from_millis(15)),
        _ if stream => sse(&model, Duration::ZERO),
        _ => completion(&model, tokens),
    })
}

fn full(body: impl Into<Bytes>) -> SimBody {
    Full::new(body.into()).boxed_unsync()
}

fn error(status: StatusCode, headers: &[(&str, &str)], body: String) -> Response<SimBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(*name),
            http::HeaderValue::try_from(*value),
        ) {
            res.headers_mut().insert(name, value);
        }
    }
    res
}

fn completion(model: &str, prompt_tokens: u64) -> Response<SimBody> {
    let body = serde_json::json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": format!("Hello from {model}.") },
            "finish_reason": "stop",
        }],
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4 },
    });
    let mut res = Response::new(full(body.to_string()));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// The words a streamed answer is made of.
pub const STREAM_WORDS: [&str; 5] = ["Hello", " from", " a", " streaming", " model."];

fn sse(model: &str, gap: Duration) -> Response<SimBody> {
    let model = model.to_owned();
    let events = futures::stream::unfold(0usize, move |i| {
        let model = model.clone();
        async move {
            if i > STREAM_WORDS.len() {
                return None;
            }
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let data = match STREAM_WORDS.get(i) {
                Some(word) => {
                    let chunk = serde_json::json!({
                        "id": "chatcmpl-sim",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{ "index": 0, "delta": { "content": word }, "finish_reason": null }],
                    });
                    format!("data: {chunk}\n\n")
                }
                None => "data: [DONE]\n\n".to_owned(),
            };
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(data))), i + 1))
        }
    });
    let mut res = Response::new(StreamBody::new(events).boxed_unsync());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    res
}
