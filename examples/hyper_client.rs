//! A hyper-util client with OpenRouter-style fallbacks, calling any OpenAI-compatible API.
//!
//! ```text
//! OPENAI_BASE_URL=https://openrouter.ai/api/v1 OPENAI_API_KEY=sk-or-... \
//!   cargo run --example hyper_client -- openai/gpt-4o anthropic/claude-sonnet-4
//! cargo run --example hyper_client          # no env: a loopback stand-in, gpt-4o rate limited
//! ```
//!
//! The first model is `model`, the others are the fallbacks (`models`).

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, ServedModel};
use tower_llm_router::{BoxError, FallbackLayer, RouterBody};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut models: Vec<String> = std::env::args().skip(1).collect();
    let (base_url, api_key) = match std::env::var("OPENAI_BASE_URL") {
        Ok(base_url) => (base_url, std::env::var("OPENAI_API_KEY").ok()),
        Err(_) => {
            let addr = stand_in().await?;
            println!("OPENAI_BASE_URL is not set: using a loopback stand-in on {addr} where gpt-4o is rate limited");
            if models.is_empty() {
                models = vec!["gpt-4o".into(), "gpt-4o-mini".into()];
            }
            (format!("http://{addr}/v1"), None)
        }
    };
    let Some((model, fallbacks)) = models.split_first() else {
        return Err("usage: hyper_client MODEL [FALLBACK...]".into());
    };

    // One pooled client (HTTP and HTTPS), the fallback layer in front of it.
    let client = common::upstream::https_client(common::upstream::default_tls()?);
    let url: Uri = format!("{}/chat/completions", base_url.trim_end_matches('/')).parse()?;
    let mut auth = api_key
        .map(|key| HeaderValue::try_from(format!("Bearer {key}")))
        .transpose()?;
    if let Some(auth) = &mut auth {
        auth.set_sensitive(true);
    }
    let upstream = service_fn(move |mut req: Request<RouterBody>| {
        *req.uri_mut() = url.clone();
        if let Some(auth) = &auth {
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        client.request(req)
    });
    let client = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(upstream);

    let body = serde_json::json!({
        "model": model,
        "models": fallbacks,
        "messages": [{ "role": "user", "content": "Say hello in five words." }],
        "max_tokens": 32,
    });
    let request = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = client.oneshot(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    println!("status:   {}", parts.status);
    if let Some(served) = parts.extensions.get::<ServedModel>() {
        println!("model:    {}", served.0);
    }
    if let Some(attempts) = parts.extensions.get::<Attempts>() {
        println!("attempts: {}", attempts.to_header_value());
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match json["choices"][0]["message"]["content"].as_str() {
        Some(answer) => println!("answer:   {answer}"),
        None => println!("body:     {}", String::from_utf8_lossy(&body)),
    }
    Ok(())
}

/// An OpenAI-compatible stand-in on 127.0.0.1: `gpt-4o` answers 429, every other model 200.
async fn stand_in() -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                let body = req.into_body().collect().await?.to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let model = json["model"].as_str().unwrap_or_default();
                let (status, answer) = if model == "gpt-4o" {
                    (429, r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#.to_owned())
                } else {
                    let answer = serde_json::json!({
                        "object": "chat.completion",
                        "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("Hello from {model}, the stand-in.")}, "finish_reason": "stop"}],
                    });
                    (200, answer.to_string())
                };
                let mut res = Response::new(Full::new(Bytes::from(answer)));
                *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                Ok::<_, hyper::Error>(res)
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
        Ok::<_, Infallible>(())
    });
    Ok(addr)
}
