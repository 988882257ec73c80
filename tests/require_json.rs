//! `require_json_body`: each layer (`FallbackLayer`, `AutoRouteLayer`, and the one layer of
//! `FallbackLayer::auto_route`), served by hyper's HTTP/1 server on a real socket in front of
//! the scripted upstream. With the setting on, a `POST` body the layer cannot route (another
//! type, compressed, empty) is answered by the layer and never reaches the upstream; off (the
//! default), it goes to the upstream as it came, unread and not held to the limit.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceBuilder;
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::body::ResponseBody;
use tower_llm_router::{AutoRouteLayer, FallbackLayer};

const PATH: &str = "/v1/chat/completions";
const LIMIT: usize = 1024;

fn catalog() -> Catalog {
    Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.15, 0.6)])
}

/// The three ways to put a layer in front of the upstream.
#[derive(Clone, Copy, Debug)]
enum Layered {
    Fallback,
    AutoRoute,
    /// `FallbackLayer::auto_route`: the fallback layer's setting applies.
    Fused,
}

const LAYERED: [Layered; 3] = [Layered::Fallback, Layered::AutoRoute, Layered::Fused];

/// Serves `layered`, with `require_json_body(require)` and a 1 KiB limit, over `up`.
async fn serve_layer(layered: Layered, up: &Upstream, require: bool) -> SocketAddr {
    let client = routed_client(up.addr, vec![]);
    let fallback = FallbackLayer::new()
        .max_body_bytes(LIMIT)
        .require_json_body(require);
    match layered {
        Layered::Fallback => {
            serve(ServiceBuilder::new().layer(fallback).service(client), None).await
        }
        Layered::AutoRoute => {
            let auto = AutoRouteLayer::new(catalog())
                .max_body_bytes(LIMIT)
                .require_json_body(require);
            let stack = ServiceBuilder::new()
                .layer(auto)
                // A rejection needs a body type it can write into.
                .map_response(|res: Response<Incoming>| res.map(ResponseBody::inner))
                .service(client);
            serve(stack, None).await
        }
        Layered::Fused => {
            // `auto`'s own setting is not the one that applies: left at its default here.
            let fused = fallback.auto_route(AutoRouteLayer::new(catalog()));
            serve(ServiceBuilder::new().layer(fused).service(client), None).await
        }
    }
}

/// Sends a request to `addr`; the answer's status, headers and body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let text = String::from_utf8(body_bytes(body).await.to_vec()).unwrap();
    (parts.status.as_u16(), parts.headers, text)
}

/// A `POST` with neither `Content-Length` nor `Transfer-Encoding`: no body at all, which the
/// server's body knows to be empty (no header says so). The answer's status line and body.
async fn post_without_framing(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: layer\r\ncontent-type: application/json\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, body.to_owned())
}

const SMALL: &str = r#"{"model":"small","messages":[{"role":"user","content":"hi"}]}"#;

/// Over the limit, valid JSON.
fn big() -> String {
    format!("{}{SMALL}", " ".repeat(2 * LIMIT))
}

/// Headers and bodies of the requests no layer can route.
type Case<'a> = (Vec<(&'a str, &'a str)>, String);

fn unroutable<'a>() -> Vec<(Case<'a>, u16, &'static str)> {
    let (plain, json) = (
        ("content-type", "text/plain"),
        ("content-type", "application/json"),
    );
    let gzip = ("content-encoding", "gzip");
    let (not_json, compressed) = ("unsupported_media_type", "unsupported_content_encoding");
    vec![
        ((vec![plain], SMALL.into()), 415, not_json),
        // What `curl -d` sends without `-H 'Content-Type: application/json'`.
        (
            (
                vec![("content-type", "application/x-www-form-urlencoded")],
                SMALL.into(),
            ),
            415,
            not_json,
        ),
        (
            (
                vec![("content-type", "multipart/form-data; boundary=x")],
                SMALL.into(),
            ),
            415,
            not_json,
        ),
        ((vec![json, gzip], SMALL.into()), 415, compressed),
        // Compressed and untyped: the coding is what is refused.
        ((vec![gzip], SMALL.into()), 415, compressed),
        // Over the limit, whatever the type: 413, as for JSON.
        ((vec![plain], big()), 413, "request_too_large"),
        ((vec![json, gzip], big()), 413, "request_too_large"),
        // Declared empty, typed or not.
        (
            (vec![json, ("content-length", "0")], String::new()),
            400,
            "invalid_json",
        ),
        ((vec![], String::new()), 400, "invalid_json"),
    ]
}

#[tokio::test]
async fn with_require_json_body_a_body_the_layer_cannot_route_is_refused() {
    for layered in LAYERED {
        let up = Upstream::start().await;
        let addr = serve_layer(layered, &up, true).await;
        for ((headers, body), status, code) in unroutable() {
            let (got, answer_headers, text) = send(addr, "POST", PATH, &headers, &body).await;
            let case = format!("{layered:?} {headers:?}, {} bytes: {text}", body.len());
            assert_eq!(got, status, "{case}");
            let error: Value = serde_json::from_str(&text).unwrap();
            assert!(is_openai_error(&error), "{case}");
            assert_eq!(error["error"]["code"], code, "{case}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{case}");
            assert_eq!(answer_headers["content-type"], "application/json", "{case}");
            // RFC 7694: the codings the server takes, on a refused coding.
            let names_identity = answer_headers
                .get("accept-encoding")
                .is_some_and(|value| value == "identity");
            assert_eq!(
                names_identity,
                code == "unsupported_content_encoding",
                "{case}"
            );
        }
        let (status, text) = post_without_framing(addr).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{layered:?}: {status}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], "invalid_json", "{layered:?}");
        assert!(
            up.received().is_empty(),
            "{layered:?}: refused bodies went upstream: {:?}",
            up.received()
        );

        // Routable bodies are routed as before, and another method goes on as it came.
        let charset = ("content-type", "application/json; charset=utf-8");
        for headers in [&[charset][..], &[], &[("content-encoding", "identity")]] {
            let (status, _, text) = send(addr, "POST", PATH, headers, SMALL).await;
            assert_eq!(status, 200, "{layered:?} {headers:?}: {text}");
        }
        let (status, _, _) = send(addr, "GET", "/v1/models", &[], "").await;
        assert_eq!(status, 200, "{layered:?}");
        let received = up.received();
        assert_eq!(received.len(), 4, "{layered:?}");
        assert_eq!(received[3].method, http::Method::GET);
    }
}

/// Off (the default), the same bodies go to the upstream as they came, unread: the one over the
/// limit too, whole (no limit applies to a body the layer does not read).
#[tokio::test]
async fn without_require_json_body_a_body_the_layer_cannot_route_passes_through() {
    for layered in LAYERED {
        let up = Upstream::start().await;
        let addr = serve_layer(layered, &up, false).await;
        let cases = unroutable();
        for ((headers, body), _, _) in &cases {
            let (status, answer_headers, text) = send(addr, "POST", PATH, headers, body).await;
            assert_eq!(status, 200, "{layered:?} {headers:?}: {text}");
            assert!(
                answer_headers.get("x-llm-router-attempts").is_none(),
                "{layered:?} {headers:?}: not routed"
            );
        }
        let (status, _) = post_without_framing(addr).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{layered:?}: {status}");
        let received = up.received();
        assert_eq!(received.len(), cases.len() + 1, "{layered:?}");
        for (sent, ((_, body), _, _)) in received.iter().zip(&cases) {
            assert_eq!(&sent.body[..], body.as_bytes(), "{layered:?}: as it came");
        }
    }
}
