//! A reqwest-middleware client with OpenRouter-style model fallback and reqwest-retry.
//!
//! Against any OpenAI-compatible endpoint:
//!
//! ```text
//! OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=sk-... \
//! OPENAI_MODELS=llama3.2,qwen2.5 \
//!     cargo run --example reqwest_middleware --features reqwest
//! ```
//!
//! `OPENAI_MODELS` is the chain, primary first. The crate builds reqwest without TLS (the
//! application picks its TLS stack), so this example needs a plain-HTTP endpoint: a local
//! gateway, Ollama, vLLM or LiteLLM. Without `OPENAI_BASE_URL` the example starts a
//! stand-in upstream on loopback whose primary model is rate limited, so it runs offline.

use std::time::Duration;

use futures::StreamExt;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use serde_json::{json, Value};
use tower_llm_router::fallback::{Attempts, ServedModel};
use tower_llm_router::reqwest::FallbackMiddleware;
use tower_llm_router::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (base, key, models) = match std::env::var("OPENAI_BASE_URL") {
        Ok(base) => {
            let models = std::env::var("OPENAI_MODELS")
                .unwrap_or_else(|_| "gpt-4o-mini,gpt-4.1-mini".to_owned());
            let key = std::env::var("OPENAI_API_KEY").unwrap_or_default();
            (base, key, models.split(',').map(str::to_owned).collect())
        }
        Err(_) => {
            let base = stand_in::start().await?;
            println!("OPENAI_BASE_URL is not set: using the stand-in upstream at {base}");
            let models = vec![
                "openai/gpt-4o".to_owned(),
                "anthropic/claude-sonnet-4".to_owned(),
            ];
            (base, "sk-stand-in".to_owned(), models)
        }
    };
    let base = base.trim_end_matches('/');
    if base.starts_with("https://") {
        // tower-llm-router does not choose a TLS stack: an application enables reqwest's
        // `rustls` or `native-tls` feature itself. This example builds reqwest without one.
        return Err(format!(
            "{base}: this example speaks plain HTTP only; point OPENAI_BASE_URL at an http \
             endpoint (a local gateway, Ollama, vLLM, LiteLLM) or enable a reqwest TLS feature"
        )
        .into());
    }

    // Retry outside: it runs the whole chain again only when every model failed. The fallback
    // inside moves on to the next model at once.
    let backoff = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(200), Duration::from_secs(5))
        .build_with_max_retries(2);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let client = ClientBuilder::new(http)
        .with(RetryTransientMiddleware::new_with_policy(backoff))
        .with(
            FallbackMiddleware::default()
                .headers_timeout(Duration::from_secs(30))
                .first_byte_timeout(Duration::from_secs(30)),
        )
        .build();

    let chat = Chat {
        client,
        base: base.to_owned(),
        key,
        models,
    };
    let prompt = "Say hello in five words.";
    chat.complete(prompt).await?;
    // The same client shares model health: a model that answered 429 with `Retry-After` is
    // tried last until it cools down.
    chat.stream(prompt).await?;
    Ok(())
}

/// A chat-completions client: the endpoint, the key and the fallback chain.
struct Chat {
    client: ClientWithMiddleware,
    base: String,
    key: String,
    /// The chain, primary first.
    models: Vec<String>,
}

impl Chat {
    async fn send(&self, prompt: &str, stream: bool) -> Result<reqwest::Response, BoxError> {
        let body = json!({
            "model": self.models[0],
            "models": &self.models[1..],
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        });
        let response = self
            .client
            .post(format!("{}/chat/completions", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let served = response.extensions().get::<ServedModel>();
        let attempts = response.extensions().get::<Attempts>();
        println!(
            "status {} from {} (attempts: {})",
            response.status(),
            served.map_or("?", |m| &*m.0),
            attempts.map(Attempts::to_header_value).unwrap_or_default(),
        );
        Ok(response)
    }

    async fn complete(&self, prompt: &str) -> Result<(), BoxError> {
        let response = self.send(prompt, false).await?;
        let answer: Value = serde_json::from_slice(&response.bytes().await?)?;
        match answer["choices"][0]["message"]["content"].as_str() {
            Some(text) => println!("answer: {text}"),
            None => println!("error: {answer}"),
        }
        Ok(())
    }

    async fn stream(&self, prompt: &str) -> Result<(), BoxError> {
        let mut events = self.send(prompt, true).await?.bytes_stream();
        let mut pending = Vec::new();
        print!("streamed:");
        while let Some(chunk) = events.next().await {
            pending.extend_from_slice(&chunk?);
            // Print each complete `data:` line as it arrives.
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                if data.trim_ascii() == b"[DONE]" {
                    continue;
                }
                let event: Value = serde_json::from_slice(data)?;
                if let Some(error) = event.get("error") {
                    print!(" [stream error: {error}]");
                }
                if let Some(text) = event["choices"][0]["delta"]["content"].as_str() {
                    print!("{text}");
                }
            }
        }
        println!();
        Ok(())
    }
}

/// A loopback OpenAI-compatible upstream: `openai/gpt-4o` is rate limited, other models answer.
mod stand_in {
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use serde_json::{json, Value};

    pub(crate) async fn start() -> std::io::Result<String> {
        let app = axum::Router::new().route("/v1/chat/completions", post(chat));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/v1", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(base)
    }

    async fn chat(body: String) -> Response {
        let request: Value = serde_json::from_str(&body).unwrap_or_default();
        let model = request["model"].as_str().unwrap_or_default().to_owned();
        if model == "openai/gpt-4o" {
            let error = json!({"error": {
                "message": "Rate limit reached for gpt-4o in organization org-demo on requests per min (RPM): Limit 3, Used 3, Requested 1.",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }});
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "20")],
                axum::Json(error),
            )
                .into_response();
        }
        let words = ["Hello", " there,", " nice", " to", " meet!"];
        if request["stream"].as_bool() == Some(true) {
            let mut events = String::new();
            for word in words {
                let chunk = json!({"object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
                events.push_str(&format!("data: {chunk}\n\n"));
            }
            events.push_str("data: [DONE]\n\n");
            return ([(header::CONTENT_TYPE, "text/event-stream")], events).into_response();
        }
        axum::Json(json!({
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": words.concat()}}],
        }))
        .into_response()
    }
}
