//! FallbackLayer end to end: a hyper-util client over real loopback sockets against a scripted
//! upstream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, ClassSet, Outcome, ServedModel};
use tower_llm_router::health::InMemoryHealth;
use tower_llm_router::{ErrorClass, FallbackLayer};

const URL_PATH: &str = "/v1/chat/completions";

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// The stack under test: the layer, a `Buffer` (to exercise the clone-and-readiness path),
/// then the routed hyper-util client.
macro_rules! stack {
    ($layer:expr, $up:expr) => {
        stack!($layer, $up, vec![])
    };
    ($layer:expr, $up:expr, $routes:expr) => {
        ServiceBuilder::new()
            .layer($layer)
            .buffer(8)
            .service(routed_client($up.addr, $routes))
    };
}

#[tokio::test]
async fn falls_back_on_every_documented_failure() {
    trace_init();
    let refused = closed_port().await;
    let cases: Vec<(&str, Behavior, &str)> = vec![
        (
            "openrouter-moderation-403",
            Behavior::Status(
                403,
                vec![],
                r#"{"error":{"code":403,"message":"Input was flagged","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#,
            ),
            "moderation",
        ),
        (
            "azure-content-filter-400",
            Behavior::Status(
                400,
                vec![],
                r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
            ),
            "moderation",
        ),
        (
            "openai-context-400",
            Behavior::Status(
                400,
                vec![],
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ),
            "context_length",
        ),
        (
            "ratelimited-429",
            Behavior::Status(
                429,
                vec![("retry-after", "7")],
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            ),
            "rate_limited",
        ),
        (
            "internal-500",
            Behavior::Status(
                500,
                vec![],
                r#"{"error":{"message":"internal error","type":"server_error"}}"#,
            ),
            "downtime",
        ),
        (
            "bad-gateway-502",
            Behavior::Status(502, vec![], "<html>bad gateway</html>"),
            "downtime",
        ),
        (
            "unavailable-503",
            Behavior::Status(
                503,
                vec![],
                r#"{"error":{"message":"The server is overloaded","type":"server_error"}}"#,
            ),
            "downtime",
        ),
        (
            "gateway-timeout-504",
            Behavior::Status(504, vec![], "upstream timed out"),
            "downtime",
        ),
        (
            "anthropic-overloaded-529",
            Behavior::Status(
                529,
                vec![],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            "downtime",
        ),
        ("reset-before-headers", Behavior::Reset, "downtime"),
        ("refused", Behavior::Ok, "downtime"),
        (
            "too-slow",
            Behavior::Delay(Duration::from_secs(60)),
            "downtime",
        ),
    ];
    for (model, behavior, class) in cases {
        let up = Upstream::start().await;
        up.set(model, behavior);
        // Per attempt, so it covers the backup's answer too: short only where the case needs
        // it to fire, and even there generous for a busy CI machine.
        let timeout = if model == "too-slow" { 5 } else { 60 };
        let layer = FallbackLayer::new().headers_timeout(Duration::from_secs(timeout));
        let svc = stack!(layer, up, vec![("refused", refused)]);
        let res = svc
            .oneshot(chat(&up.url(URL_PATH), &body(model, &["backup"])))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{model}");
        assert_eq!(model_header(&res), "backup", "{model}");
        assert_eq!(
            attempts_header(&res),
            format!("{model}={class}, backup=ok"),
            "{model}"
        );
        let served = res.extensions().get::<ServedModel>().unwrap().0.clone();
        assert_eq!(&*served, "backup");
        let answer: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
        assert_eq!(
            answer["model"], "backup",
            "{model}: the caller gets the backup's answer"
        );
    }
}

#[tokio::test]
async fn a_class_excluded_from_fallback_returns_at_once() {
    let up = Upstream::start().await;
    up.set("primary", Behavior::Status(400, vec![], r#"{"error":{"message":"This model's maximum context length is 10 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#));
    let layer = FallbackLayer::new().fallback_on(
        ClassSet::none()
            .with(ErrorClass::RateLimited)
            .with(ErrorClass::Downtime),
    );
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), &body("primary", &["backup"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(attempts_header(&res), "primary=context_length");
    assert_eq!(
        up.models_received(),
        ["primary"],
        "the backup was never called"
    );
}

#[tokio::test]
async fn a_client_that_accepts_gzip_still_gets_its_errors_classified() {
    // Providers compress error bodies for clients that accept gzip (the OpenAI SDKs do); a
    // compressed body cannot be read, so attempts ask for `identity` by default.
    const TOO_LONG: &str = r#"{"error":{"message":"This model's maximum context length is 10 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    let up = Upstream::start().await;
    up.set("primary", Behavior::CompressedWhenAccepted(400, TOO_LONG));
    let no_other = ClassSet::none()
        .with(ErrorClass::ContextLength)
        .with(ErrorClass::RateLimited)
        .with(ErrorClass::Downtime);
    let gzip_request = || {
        let mut req = chat(&up.url(URL_PATH), &body("primary", &["backup"]));
        req.headers_mut()
            .insert("accept-encoding", "gzip, deflate".parse().unwrap());
        req
    };

    let res = stack!(FallbackLayer::new().fallback_on(no_other), up)
        .oneshot(gzip_request())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "primary=context_length, backup=ok");
    let received = up.received();
    assert!(received
        .iter()
        .all(|r| r.headers["accept-encoding"] == "identity"));

    // Opting out sends the client's header on: the compressed 400 is classed by its status
    // alone (`other`), which this configuration does not fall back on.
    let up = Upstream::start().await;
    up.set("primary", Behavior::CompressedWhenAccepted(400, TOO_LONG));
    let layer = FallbackLayer::new()
        .fallback_on(no_other)
        .identity_encoding(false);
    let res = stack!(layer, up).oneshot(gzip_request()).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(attempts_header(&res), "primary=other");
    assert_eq!(up.received()[0].headers["accept-encoding"], "gzip, deflate");
}

/// A 2xx event stream that comes compressed (an upstream that ignores the `identity` asked
/// for, or `identity_encoding(false)`) cannot be read for its first event: it is a success by
/// its status and passed on byte for byte, with no event of the layer's own added. It was
/// waited on until its end, then taken for a stream broken before its first event: the good
/// answer dropped, its model charged with downtime, and the next model called.
#[tokio::test]
async fn a_compressed_stream_is_a_success_passed_on_as_it_came() {
    const GZIP: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 0xa5, 0x5a, 0xff, 0x01,
    ];
    for layer in [
        FallbackLayer::new(),
        FallbackLayer::new().identity_encoding(false),
    ] {
        let up = Upstream::start().await;
        up.set("primary", Behavior::StreamEncoded(GZIP));
        let body = r#"{"model":"primary","models":["backup"],"stream":true,"messages":[]}"#;
        let mut req = chat(&up.url(URL_PATH), body);
        req.headers_mut()
            .insert("accept-encoding", "gzip".parse().unwrap());
        let res = stack!(layer, up).oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(attempts_header(&res), "primary=ok");
        assert_eq!(res.headers()["content-encoding"], "gzip");
        assert_eq!(&body_bytes(res.into_body()).await[..], GZIP);
        assert_eq!(up.received().len(), 1, "the backup was never called");
    }
}

#[tokio::test]
async fn when_every_model_fails_the_last_answer_comes_back_unchanged() {
    let up = Upstream::start().await;
    let last_body =
        r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
    up.set("a", Behavior::Status(503, vec![], "down"));
    up.set("b", Behavior::Status(500, vec![], "boom"));
    up.set(
        "c",
        Behavior::Status(
            429,
            vec![
                ("retry-after", "42"),
                ("x-ratelimit-remaining-requests", "0"),
            ],
            last_body,
        ),
    );
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b", "c"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "42");
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(model_header(&res), "c");
    assert_eq!(
        attempts_header(&res),
        "a=downtime, b=downtime, c=rate_limited"
    );
    let attempts = res.extensions().get::<Attempts>().unwrap().clone();
    assert_eq!(attempts.tried.len(), 3);
    assert_eq!(
        attempts.tried[2].outcome,
        Outcome::Failed(ErrorClass::RateLimited)
    );
    assert_eq!(
        attempts.tried[2].status,
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(&body_bytes(res.into_body()).await[..], last_body.as_bytes());
}

/// The layer reads the start of every answer to classify it, then replays it: an answer it adds
/// nothing to keeps the upstream's `Content-Length`, a success after a fallback as well as the
/// last model's error (only a stream that may end with the layer's error event drops it).
#[tokio::test]
async fn a_replayed_answer_keeps_the_upstreams_content_length() {
    let up = Upstream::start().await;
    let down = r#"{"error":{"message":"down"}}"#;
    up.set("a", Behavior::Status(503, vec![], down));
    let svc = stack!(FallbackLayer::new(), up);
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    let declared = res.headers().get("content-length").cloned();
    let len = body_bytes(res.into_body()).await.len();
    assert_eq!(declared, Some(len.into()));
    let res = svc
        .oneshot(chat(&up.url(URL_PATH), &body("a", &[])))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers().get("content-length"),
        Some(&down.len().into())
    );
    assert_eq!(&body_bytes(res.into_body()).await[..], down.as_bytes());
}

#[tokio::test]
async fn a_transport_error_on_the_last_model_is_the_services_error() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let err = stack!(FallbackLayer::new(), up, vec![("b", refused)])
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap_err();
    // Through `Buffer` the error is boxed; the hyper-util connect error is inside.
    let connect = err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .expect("the inner client's error");
    assert!(connect.is_connect());
}

/// With `answer_transport_errors`, the layer answers the last model's transport failure
/// itself, and says which models were tried.
#[tokio::test]
async fn a_transport_error_on_the_last_model_can_be_answered_as_a_502() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let layer = FallbackLayer::new().answer_transport_errors(true);
    let res = stack!(layer, up, vec![("b", refused)])
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts_header(&res), "a=downtime, b=downtime");
    assert_eq!(res.headers()["x-llm-router-model"], "b");
    let attempts = res.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.tried.len(), 2);
    assert_eq!(attempts.tried[1].status, None, "no answer from b");
    let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(error["error"]["code"], "upstream_unreachable");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("`b` could not be reached"), "{message}");
}

/// The 502 of a model that could not be reached says why: hyper-util's error says only
/// "client error (Connect)", its sources the rest (the connector's, then the socket's).
#[tokio::test]
async fn the_502_of_an_unreachable_model_gives_the_cause_under_the_clients_error() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    let layer = FallbackLayer::new().answer_transport_errors(true);
    let res = stack!(layer, up, vec![("b", refused)])
        .oneshot(chat(&up.url(URL_PATH), &body("b", &[])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    // The socket's error as the OS words it (Linux: "Connection refused (os error 111)").
    let (client, os) = message
        .split_once("tcp connect error: ")
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(
        client,
        "the model `b` could not be reached: client error (Connect): "
    );
    assert!(os.starts_with("Connection refused (os error "), "{message}");
}

/// A client's own error type cannot be looked into: its 502 names the model alone, as the
/// docs of `answer_transport_errors` say, and mapped into a `BoxError` below the layer (their
/// advice) its text and sources are in the message.
#[tokio::test]
async fn the_502_of_a_clients_own_error_type_says_why_once_mapped_into_a_box_error() {
    #[derive(Debug)]
    struct AppClientError(std::io::Error);
    impl std::fmt::Display for AppClientError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("app client failed")
        }
    }
    impl std::error::Error for AppClientError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let refused = closed_port().await;
    let app_client = move |request: Request<tower_llm_router::RouterBody>| async move {
        let connect = tokio::net::TcpStream::connect(refused).await;
        let error = connect.expect_err("nothing listens on a closed port");
        drop(request);
        Err::<http::Response<http_body_util::Full<Bytes>>, _>(AppClientError(error))
    };
    let layer = FallbackLayer::new().answer_transport_errors(true);
    let request = || chat(&format!("http://{refused}{URL_PATH}"), &body("b", &[]));
    let message = |res: http::Response<_>| async move {
        let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
        error["error"]["message"].as_str().unwrap().to_owned()
    };

    let own = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(app_client);
    let res = own.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(message(res).await, "the model `b` could not be reached");

    let mapped = ServiceBuilder::new()
        .layer(layer)
        .layer(tower::util::MapErrLayer::new(tower::BoxError::from))
        .service_fn(app_client);
    let res = mapped.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let told = message(res).await;
    assert!(
        told.starts_with(
            "the model `b` could not be reached: app client failed: Connection refused"
        ),
        "{told}"
    );
}

/// With `answer_transport_errors`, a timeout below the layer (`tower::timeout`) on the last
/// model is answered as the layer's own `headers_timeout` is, a 504 `upstream_timeout`: it was
/// a 502 `upstream_unreachable` ("request timed out"). Over real sockets: a hyper server app
/// whose last model's upstream takes the request and never answers.
#[tokio::test]
async fn a_timeout_below_the_layer_on_the_last_model_is_answered_as_the_layers_own() {
    let silent = raw_upstream(|stream| async move {
        let _held = stream;
        std::future::pending::<()>().await
    })
    .await;
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let timeout = Duration::from_millis(200);
    let below = serve(
        ServiceBuilder::new()
            .layer(FallbackLayer::new().answer_transport_errors(true))
            .layer(tower::timeout::TimeoutLayer::new(timeout))
            .service(routed_client(up.addr, vec![("b", silent)])),
        None,
    )
    .await;
    let own = serve(
        ServiceBuilder::new()
            .layer(
                FallbackLayer::new()
                    .answer_transport_errors(true)
                    .headers_timeout(timeout),
            )
            .service(routed_client(up.addr, vec![("b", silent)])),
        None,
    )
    .await;
    let mut answers = Vec::new();
    for app in [below, own] {
        let request = Request::post(format!("http://{app}{URL_PATH}"))
            .header("content-type", "application/json")
            .body(tower_llm_router::RouterBody::from(Bytes::from(body(
                "a",
                &["b"],
            ))))
            .unwrap();
        let res = client().request(request).await.unwrap();
        let status = res.status();
        assert_eq!(attempts_header(&res), "a=downtime, b=downtime");
        assert_eq!(model_header(&res), "b");
        let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
        assert!(is_openai_error(&error), "{error}");
        let message = error["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("`b` did not answer in time"), "{message}");
        answers.push((
            status,
            error["error"]["type"].clone(),
            error["error"]["code"].clone(),
        ));
    }
    assert_eq!(
        answers[0],
        (
            StatusCode::GATEWAY_TIMEOUT,
            json!("server_error"),
            json!("upstream_timeout")
        )
    );
    assert_eq!(
        answers[0], answers[1],
        "the same answer as the layer's own timeout"
    );
}

#[tokio::test]
async fn the_upstream_gets_the_clients_bytes_except_model_and_models() {
    // A small body is rewritten into one buffer, a large one into slices of the client's body
    // around the replacements: the upstream must get the same bytes either way.
    for padding in [0, 64 * 1024] {
        the_upstream_gets_the_clients_bytes_with(&"p".repeat(padding)).await;
    }
}

async fn the_upstream_gets_the_clients_bytes_with(padding: &str) {
    let up = Upstream::start().await;
    up.set("first", Behavior::Status(503, vec![], "down"));
    // Odd spacing, key order, escapes and unicode must reach the upstream as sent.
    let original = format!("{{ \"temperature\" : 0.25,\n  \"models\" : [\"second\"],\"messages\":[{{\"role\":\"user\",\"content\":\"caf\\u00e9 \u{1F600}  \\\"quoted\\\"\"}}],\n\t\"model\": \"first\" ,\"x_pad\":\"{padding}\",\"x_custom\":{{\"a\":[1,2.50,true,null]}} }}");
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(&up.url(URL_PATH), &original))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let received = up.received();
    assert_eq!(received.len(), 2);
    let mut expected: Value = serde_json::from_str(&original).unwrap();
    expected.as_object_mut().unwrap().remove("models");
    for (got, model) in received.iter().zip(["first", "second"]) {
        expected["model"] = json!(model);
        let got_value: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(got_value, expected);
        let text = std::str::from_utf8(&got.body).unwrap();
        for verbatim in [
            "{ \"temperature\" : 0.25,",
            "\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9 \u{1F600}  \\\"quoted\\\"\"}],",
            ",\"x_custom\":{\"a\":[1,2.50,true,null]} }",
        ] {
            assert!(text.contains(verbatim), "{verbatim:?} not verbatim in {text:?}");
        }
        assert_eq!(
            got.headers["content-length"].to_str().unwrap(),
            got.body.len().to_string()
        );
    }
}

#[tokio::test]
async fn models_can_be_kept_for_upstreams_that_understand_them() {
    let up = Upstream::start().await;
    let res = stack!(FallbackLayer::new().keep_models(true), up)
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
    assert_eq!(sent["models"], json!(["b"]));
}

/// `keep_models` holds for every attempt, not only the first, whose body goes out as the client
/// sent it: a fallback's body has its `model` rewritten and must keep `models` all the same.
#[tokio::test]
async fn models_are_kept_in_a_fallbacks_rewritten_body_too() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let res = stack!(FallbackLayer::new().keep_models(true), up)
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    let received = up.received();
    assert_eq!(received.len(), 2);
    for (got, model) in received.iter().zip(["a", "b"]) {
        let sent: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(sent["model"], model);
        assert_eq!(sent["models"], json!(["b"]), "attempt for {model}");
    }
}

#[tokio::test]
async fn without_model_the_first_of_models_is_primary_and_duplicates_are_dropped() {
    let up = Upstream::start().await;
    up.set("x", Behavior::Status(503, vec![], "down"));
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"models":["x","x","y","x"],"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "x=downtime, y=ok");
    assert_eq!(up.models_received(), ["x", "y"]);
}

#[tokio::test]
async fn default_fallbacks_apply_to_requests_without_models() {
    let up = Upstream::start().await;
    up.set("solo", Behavior::Status(502, vec![], "down"));
    let layer = FallbackLayer::new().default_fallbacks(["house-default"]);
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), r#"{"model":"solo","messages":[]}"#))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "solo=downtime, house-default=ok");
}

/// A stream request to `a`, then `b`, through the layer with its defaults.
async fn stream_a_then_b(
    up: &Upstream,
) -> http::Response<impl http_body::Body<Data = Bytes, Error = tower_llm_router::BoxError>> {
    stack!(FallbackLayer::new(), up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"a","models":["b"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap()
}

/// The next model's stream, which the caller must get alone.
const B_STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n";

/// A stream request to `a` then `b`, where `a` does `first` and `b` streams: the caller gets
/// `b`'s stream alone, and the attempts header says `attempts`.
async fn a_stream_falls_back(first: Behavior, attempts: &str) {
    let up = Upstream::start().await;
    up.set("a", first);
    up.set(
        "b",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"ok"}}]}"#]),
    );
    let res = stream_a_then_b(&up).await;
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), attempts);
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert_eq!(text, B_STREAM);
}

#[tokio::test]
async fn a_stream_falls_back_on_an_error_status() {
    let rate_limited = r#"{"error":{"message":"Rate limit","code":429}}"#;
    let first = Behavior::Status(429, vec![], rate_limited);
    a_stream_falls_back(first, "a=rate_limited, b=ok").await;
}

#[tokio::test]
async fn a_stream_falls_back_on_an_error_in_its_first_event() {
    let first = Behavior::StreamFirstEvent(
        r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable"}}}"#,
    );
    a_stream_falls_back(first, "a=downtime, b=ok").await;
}

/// OpenAI's first chunk: the role, an empty content, no finish reason. Content-less.
const ROLE_CHUNK: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

/// A stream that starts with content-less preamble events, then an error, before any content:
/// the layer holds the preamble and falls back on the error.
async fn falls_back_after_preamble(frames: Vec<&'static str>) {
    a_stream_falls_back(Behavior::StreamFrames(frames), "a=downtime, b=ok").await;
}

#[tokio::test]
async fn a_stream_falls_back_on_an_error_after_a_role_only_first_chunk() {
    falls_back_after_preamble(vec![
        ROLE_CHUNK,
        "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"error_type\":\"provider_unavailable\"}}}\n\n",
    ])
    .await;
}

/// A first chunk with the role and an empty `tool_calls` list (no call in it yet), as some
/// OpenAI-compatible servers send it, is no content either: the error after it falls back, and
/// the caller sees only the second model's stream. Before, the empty list counted as content:
/// the first model's stream was passed on with its error.
#[tokio::test]
async fn a_stream_falls_back_on_an_error_after_a_role_chunk_with_empty_tool_calls() {
    falls_back_after_preamble(vec![
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]}}]}\n\n",
        "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"error_type\":\"provider_unavailable\"}}}\n\n",
    ])
    .await;
}

#[tokio::test]
async fn a_stream_falls_back_on_anthropics_overload_after_message_start_and_ping() {
    falls_back_after_preamble(vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ])
    .await;
}

/// When content follows the preamble, the first model answers and the caller gets every byte
/// the upstream sent, held preamble first, however the frames cut the events.
#[tokio::test]
async fn a_stream_whose_preamble_is_followed_by_content_reaches_the_caller_unchanged() {
    let up = Upstream::start().await;
    let frames = vec![
        "data: {\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\r\n\r\n",
        ": keep-alive\r\n\r\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":",
        "\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\r\n",
        "\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    ];
    up.set("a", Behavior::StreamFrames(frames.clone()));
    let res = stream_a_then_b(&up).await;
    assert_eq!(attempts_header(&res), "a=ok");
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert_eq!(text, frames.concat());
    assert_eq!(up.models_received(), ["a"]);
}

/// A stream with nothing but preamble events is treated as one without events: ended before
/// any content, it is broken (the next model is tried, and the last one ends with the error
/// event, in the API of its events); ended by `[DONE]` too: an answer with no content and no
/// finish is no answer (it was passed on as an empty one).
#[tokio::test]
async fn a_stream_of_preamble_alone_is_a_stream_without_events() {
    let up = Upstream::start().await;
    up.set("role-only", Behavior::StreamRaw(ROLE_CHUNK));
    let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    up.set("ping-only", Behavior::StreamRaw(ping));
    let svc = stack!(FallbackLayer::new(), up);
    let res = svc
        .clone()
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"role-only","models":["ping-only"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        attempts_header(&res),
        "role-only=downtime, ping-only=downtime"
    );
    // `ping` is Anthropic's event: the error event is Anthropic's.
    let error = event_after(res, ping, "event: error\ndata: ").await;
    assert_eq!(error["error"]["type"], "api_error", "{error}");

    let done = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
    up.set("empty", Behavior::StreamRaw(done));
    up.set(
        "b",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"ok"}}]}"#]),
    );
    let res = svc
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"empty","models":["b"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "empty=downtime, b=ok");
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert_eq!(text, B_STREAM);
}

/// A stream that breaks after its first event ends with the layer's error event, no fallback.
/// An answer to a `"stream": true` request without a `Content-Type` is taken for the event
/// stream it is, not held back and retried as a JSON answer that broke would be.
#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_an_error_event() {
    for behavior in [Behavior::StreamBreak(3), Behavior::StreamBreakUntyped(3)] {
        let up = Upstream::start().await;
        up.set("a", behavior.clone());
        let res = stream_a_then_b(&up).await;
        assert_eq!(res.status(), 200);
        let typed = matches!(behavior, Behavior::StreamBreak(_));
        assert_eq!(res.headers().get("content-type").is_some(), typed);
        assert_eq!(
            attempts_header(&res),
            "a=ok",
            "no fallback after the first byte: {behavior:?}"
        );
        let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4, "three chunks and the error event: {text}");
        for (i, event) in events[..3].iter().enumerate() {
            assert!(event.contains(&format!("tok{i} ")), "{event}");
        }
        let last: Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "error");
        assert_eq!(last["error"]["code"], 502);
        assert_eq!(last["model"], "a");
        assert_eq!(up.models_received(), ["a"]);
    }
}

/// The body of `res`: exactly `sent`, then the layer's SSE error event of a chat stream
/// (returned).
async fn error_event_after<B: http_body::Body>(res: http::Response<B>, sent: &str) -> Value
where
    B::Error: std::fmt::Debug,
{
    let error = event_after(res, sent, "data: ").await;
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    error
}

/// The body of `res`: exactly `sent`, then one event that starts with `head` and its data:
/// that data (returned).
async fn event_after<B: http_body::Body>(res: http::Response<B>, sent: &str, head: &str) -> Value
where
    B::Error: std::fmt::Debug,
{
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    let data = text
        .strip_prefix(sent)
        .and_then(|rest| rest.strip_prefix(head))
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{sent:?}, then one {head:?} event: {text:?}"));
    serde_json::from_str(data).unwrap()
}

/// A stream that ends, cleanly, before its first event is complete is broken: the next model
/// is tried, and on the last one the caller gets the SSE error event after what was sent, not
/// a 200 whose stream silently stops.
#[tokio::test]
async fn a_stream_that_ends_before_its_first_event_ends_with_an_error_event() {
    let up = Upstream::start().await;
    up.set("cut", Behavior::StreamRaw("data: {\"choi"));
    up.set("silent", Behavior::StreamRaw(": keep-alive\n\n"));
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"cut","models":["silent"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "cut=downtime, silent=downtime");
    let error = error_event_after(res, ": keep-alive\n\n").await;
    assert_eq!(error["model"], "silent");
    assert_eq!(up.models_received(), ["cut", "silent"]);
}

/// A stream that ends, cleanly, in the middle of an event after its first one was passed on is
/// cut: SSE clients drop an incomplete last event, so it ends with the error event instead of
/// silently losing it, and the fragment is not passed on (a client would take it for an event
/// of its own). One that ends at an event boundary, however its frames cut its lines, ends as
/// it is.
#[tokio::test]
async fn a_stream_that_ends_in_the_middle_of_an_event_ends_with_an_error_event() {
    let up = Upstream::start().await;
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    up.set("cut", Behavior::StreamRaw("data: {}\n\ndata: {\"choi"));
    let line_by_line = vec![first, "data: {}\n", "\n", "data: [DONE]\r", "\n", "\r\n"];
    up.set("whole", Behavior::StreamFrames(line_by_line.clone()));
    let svc = stack!(FallbackLayer::new(), up);
    let stream = |model: &str| {
        let body = format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#);
        svc.clone().oneshot(chat(&up.url(URL_PATH), &body))
    };
    let res = stream("cut").await.unwrap();
    assert_eq!(attempts_header(&res), "cut=ok");
    let error = error_event_after(res, "data: {}\n\n").await;
    assert_eq!(error["model"], "cut");
    let res = stream("whole").await.unwrap();
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert_eq!(text, line_by_line.concat());
}

/// A stream the layer may end with an error event of its own does not keep the upstream's
/// `Content-Length`, which counts the upstream's bytes only: a server in front would cut the
/// event off at that length.
#[tokio::test]
async fn a_stream_that_may_end_with_the_layers_error_event_declares_no_length() {
    let up = Upstream::start().await;
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    up.set("cut", Behavior::StreamDeclared(first, 1000));
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"cut","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "cut=ok");
    let declared = res.headers().get("content-length").cloned();
    // Nor does its body's size hint, from which a hyper server frames an answer without one.
    let hint = http_body::Body::size_hint(res.body());
    assert_eq!((hint.exact(), hint.upper()), (None, None));
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert!(text.starts_with(first), "{text}");
    assert!(text.contains(r#""finish_reason":"error""#), "{text}");
    assert_eq!(declared, None, "{} bytes sent", text.len());
}

#[tokio::test]
async fn a_slow_first_event_moves_on_with_the_first_byte_timeout() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::StreamDelay(Duration::from_secs(60)));
    up.set("fast", Behavior::Stream(vec!["{}"]));
    let layer = FallbackLayer::new().first_byte_timeout(Duration::from_secs(2));
    let res = stack!(layer, up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"slow","models":["fast"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "slow=downtime, fast=ok");
}

#[tokio::test]
async fn the_stream_timeout_replaces_the_others_for_streams_only() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::StreamDelay(Duration::from_secs(60)));
    up.set("fast", Behavior::Stream(vec!["{}"]));
    up.set("thinking", Behavior::Delay(Duration::from_secs(3)));
    let layer = FallbackLayer::new()
        .headers_timeout(Duration::from_secs(30))
        .first_byte_timeout(Duration::from_secs(30))
        .stream_timeout(Duration::from_secs(2));
    let svc = stack!(layer, up);
    // A stream whose first event is late moves on after the stream timeout, not after 30 s
    // (the slow model would answer after 60 s).
    let res = svc
        .clone()
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"slow","models":["fast"],"stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "slow=downtime, fast=ok");
    // A non-streamed answer that takes longer than the stream timeout is waited for.
    let res = svc
        .oneshot(chat(&up.url(URL_PATH), &body("thinking", &["fast"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "thinking=ok");
}

#[tokio::test]
async fn a_timeout_on_the_last_model_is_a_504_json_error() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(10)));
    let layer = FallbackLayer::new().headers_timeout(Duration::from_millis(100));
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), &body("slow", &[])))
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(attempts_header(&res), "slow=downtime");
    let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
}

/// A request without a model is passed through, not routed: it gets no router headers or
/// records whether it is answered or times out, and its 504 names no model.
#[tokio::test]
async fn a_request_without_a_model_gets_no_router_headers_even_when_it_times_out() {
    let up = Upstream::start().await;
    let layer = FallbackLayer::new().headers_timeout(Duration::from_millis(500));
    let svc = stack!(layer, up);
    let no_model = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let answered = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), no_model))
        .await
        .unwrap();
    up.set("", Behavior::Delay(Duration::from_secs(10)));
    let timed_out = svc
        .oneshot(chat(&up.url(URL_PATH), no_model))
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(timed_out.status(), 504);
    for res in [&answered, &timed_out] {
        assert!(res.headers().get("x-llm-router-model").is_none());
        assert!(res.headers().get("x-llm-router-attempts").is_none());
        assert!(res.extensions().get::<Attempts>().is_none());
        assert!(res.extensions().get::<ServedModel>().is_none());
    }
    let error: Value = serde_json::from_slice(&body_bytes(timed_out.into_body()).await).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(!message.contains("``"), "{message}");
}

/// `"model": ""` names no model, as `null` does: the request goes through as it came, once,
/// without the configured fallbacks or router headers (it was routed as a model named "",
/// answered with `x-llm-router-model: ` and `x-llm-router-attempts: =ok`).
#[tokio::test]
async fn an_empty_model_is_no_model() {
    let up = Upstream::start().await;
    let svc = stack!(FallbackLayer::new().default_fallbacks(["b"]), up);
    let body = r#"{"model":"","messages":[{"role":"user","content":"hi"}]}"#;
    let res = svc.oneshot(chat(&up.url(URL_PATH), body)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-llm-router-model").is_none());
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    assert!(res.extensions().get::<ServedModel>().is_none());
    let received = up.received();
    assert_eq!(received.len(), 1, "one attempt, no fallback");
    assert_eq!(
        &received[0].body[..],
        body.as_bytes(),
        "the body as it came"
    );
}

/// An empty id in `models` is bad input, refused before the upstream is called: it was sent
/// upstream as `{"model":""}` once the model before it failed (`gpt-4o=downtime, =ok`).
#[tokio::test]
async fn an_empty_id_in_models_is_refused() {
    for models in [&[""][..], &["b", ""], &["", "b"]] {
        let (status, error, calls) =
            refused_request(FallbackLayer::new(), &body("gpt-4o", models)).await;
        assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0), "{models:?}");
        assert!(is_openai_error(&error), "{error}");
        assert_eq!(error["error"]["code"], "bad_models");
        assert_eq!(error["error"]["param"], "models");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("must not be empty"), "{message}");
    }
    // The same once the primary failed: nothing is sent for the empty id.
    let up = Upstream::start().await;
    up.set("gpt-4o", Behavior::Status(503, vec![], "down"));
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(&up.url(URL_PATH), &body("gpt-4o", &[""])))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(up.received().is_empty());
}

/// Fallbacks this side adds (the configured defaults, a `FallbackModels` extension from a layer
/// in front) never name an empty model: an empty one is left out, not sent upstream as
/// `{"model":""}`.
#[tokio::test]
async fn empty_fallbacks_from_this_side_are_left_out() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let request = json!({"model": "a", "messages": []}).to_string();
    let configured = stack!(FallbackLayer::new().default_fallbacks(["", "b"]), up);
    let res = configured
        .oneshot(chat(&up.url(URL_PATH), &request))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    let handed = ServiceBuilder::new()
        .map_request(|mut req: Request<http_body_util::Full<Bytes>>| {
            let models = ["", "b"].map(Arc::from).to_vec();
            req.extensions_mut()
                .insert(tower_llm_router::fallback::FallbackModels(models));
            req
        })
        .layer(FallbackLayer::new())
        .buffer(8)
        .service(routed_client(up.addr, vec![]));
    let res = handed
        .oneshot(chat(&up.url(URL_PATH), &request))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    assert!(up.models_received().iter().all(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_rate_limited_model_is_tried_last_until_it_cools_down() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(
            429,
            vec![("retry-after", "1")],
            r#"{"error":{"message":"Rate limit","code":429}}"#,
        ),
    );
    let health = Arc::new(InMemoryHealth::new());
    let layer = FallbackLayer::new().health(health.clone());
    let svc = stack!(layer, up);
    let first = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&first), "a=rate_limited, b=ok");
    // Another request (through a clone of the service) now starts with `b`.
    let second = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&second), "b=ok");
    // A request whose only model is cooling down is still sent: never refused on health alone.
    let only = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &[])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&only), "a=rate_limited");
    up.set("a", Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = svc
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&third), "a=ok");
}

async fn refused_request(layer: FallbackLayer, request_body: &str) -> (StatusCode, Value, usize) {
    let up = Upstream::start().await;
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), request_body))
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(res.headers()["content-type"], "application/json");
    let error = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    (status, error, up.received().len())
}

#[tokio::test]
async fn a_chain_over_the_cap_is_refused_without_calling_the_upstream() {
    let (status, error, calls) =
        refused_request(FallbackLayer::new(), &body("a", &["b", "c", "d", "e"])).await;
    assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0));
    assert_eq!(error["error"]["code"], "too_many_models");
    assert_eq!(error["error"]["param"], "models");
    let (status, _, calls) = refused_request(
        FallbackLayer::new().max_models(5),
        &body("a", &["b", "c", "d", "e"]),
    )
    .await;
    assert_eq!((status, calls), (StatusCode::OK, 1));
}

/// The zero values the setters document: `max_models(0)` counts as 1 (the primary alone: a
/// client's second model is over the cap, and `default_fallbacks` are cut), and
/// `max_body_bytes(0)` refuses every body the layer routes.
#[tokio::test]
async fn zero_caps_do_what_their_setters_say() {
    let one = || FallbackLayer::new().max_models(0);
    let (status, error, calls) = refused_request(one(), &body("a", &["b"])).await;
    assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0));
    assert_eq!(error["error"]["code"], "too_many_models");

    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let res = stack!(one().default_fallbacks(["b"]), up)
        .oneshot(chat(&up.url(URL_PATH), r#"{"model":"a","messages":[]}"#))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_header(&res), "a=downtime");

    let nothing = FallbackLayer::new().max_body_bytes(0);
    let (status, error, calls) = refused_request(nothing, r#"{"model":"a","messages":[]}"#).await;
    assert_eq!((status, calls), (StatusCode::PAYLOAD_TOO_LARGE, 0));
    assert_eq!(error["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn a_model_outside_the_allow_list_is_refused() {
    let layer = FallbackLayer::new().allow_models(["openai/*", "claude-sonnet"]);
    let (status, error, calls) =
        refused_request(layer.clone(), &body("openai/gpt-4o", &["mistral/large"])).await;
    assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0));
    assert_eq!(error["error"]["code"], "model_not_allowed");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mistral/large"));
    let (status, _, calls) =
        refused_request(layer, &body("openai/gpt-4o", &["claude-sonnet"])).await;
    assert_eq!((status, calls), (StatusCode::OK, 1));
}

/// The allow-list refuses what a client names; fallbacks configured on the layer's side that it
/// does not allow are left out, not blamed on the client.
#[tokio::test]
async fn configured_fallbacks_outside_the_allow_list_are_left_out() {
    let up = Upstream::start().await;
    up.set("openai/gpt-4o", Behavior::Status(503, vec![], "down"));
    let layer = FallbackLayer::new()
        .allow_models(["openai/*", "claude-sonnet"])
        .default_fallbacks(["mistral/large", "claude-sonnet"]);
    // No `models`: the configured fallbacks apply.
    let request = json!({"model": "openai/gpt-4o", "messages": []}).to_string();
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), &request))
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-llm-router-attempts"],
        "openai/gpt-4o=downtime, claude-sonnet=ok"
    );
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_json_gets_a_400_and_the_upstream_is_not_called() {
    for bad in [
        "{not json",
        "[1,2]",
        r#"{"model":7}"#,
        r#"{"model":"a","models":"b"}"#,
        r#"{"model":"a","models":[1]}"#,
    ] {
        let (status, error, calls) = refused_request(FallbackLayer::new(), bad).await;
        assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0), "{bad}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{bad}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_413() {
    let up = Upstream::start().await;
    let layer = FallbackLayer::new().max_body_bytes(64);
    let svc = stack!(layer, up);
    // Declared length over the limit: refused before reading.
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &"x".repeat(100)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // No declared length: refused while the body streams in.
    let chunks = futures::stream::iter((0..10).map(|_| {
        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"0123456789")))
    }));
    let req = Request::post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(error["error"]["code"], "request_too_large");
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn requests_that_carry_no_routing_decision_pass_through_untouched() {
    let up = Upstream::start().await;
    up.set("", Behavior::Status(503, vec![], "down"));
    let svc = stack!(FallbackLayer::new().default_fallbacks(["b"]), up);
    let get = Request::get(up.url("/v1/models"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let res = svc.clone().oneshot(get).await.unwrap();
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    let form = Request::post(up.url(URL_PATH))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(Bytes::from_static(b"model=a")))
        .unwrap();
    let res = svc.clone().oneshot(form).await.unwrap();
    assert_eq!(res.status(), 503, "one attempt, answer unchanged");
    // A POST with an empty body, as OpenAI's `.../cancel` endpoints take: nothing to route,
    // not invalid JSON. Untyped, and typed JSON with `Content-Length: 0`.
    let cancel = Request::post(up.url("/v1/fine_tuning/jobs/ftjob-1/cancel"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let res = svc.clone().oneshot(cancel).await.unwrap();
    assert_eq!(
        res.status(),
        503,
        "passed on, the upstream's answer unchanged"
    );
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    // A body of unknown length: the declared length says it is empty.
    let no_frames = futures::stream::empty::<Result<http_body::Frame<Bytes>, std::io::Error>>();
    let typed = Request::post(up.url("/v1/batches/batch_1/cancel"))
        .header("content-type", "application/json")
        .header("content-length", "0")
        .body(http_body_util::StreamBody::new(no_frames))
        .unwrap();
    assert_eq!(svc.clone().oneshot(typed).await.unwrap().status(), 503);
    // A compressed body: not JSON the layer can read (it was a 400 `invalid_json`). Passed on
    // as sent; `identity` is no compression.
    let gzipped: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00,
    ];
    let compressed = Request::post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(http_body_util::Full::new(Bytes::from_static(gzipped)))
        .unwrap();
    let res = svc.clone().oneshot(compressed).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    let identity = Request::post(up.url(URL_PATH))
        .header("content-encoding", "identity")
        .body(http_body_util::Full::new(Bytes::from(body("a", &["b"]))))
        .unwrap();
    let res = svc.oneshot(identity).await.unwrap();
    assert_eq!(res.headers()["x-llm-router-attempts"], "a=ok", "routed");
    let received = up.received();
    assert_eq!(received.len(), 6);
    assert_eq!(&received[4].body[..], gzipped);
    assert_eq!(received[4].headers["content-encoding"], "gzip");
    assert_eq!(&received[1].body[..], b"model=a");
    // Framed as it came: a body of known length goes with its `Content-Length`, not chunked.
    assert_eq!(received[1].headers["content-length"], "7");
    assert!(received[1].headers.get("transfer-encoding").is_none());
    assert!(received[2].body.is_empty() && received[3].body.is_empty());
}

/// Only a POST is routed: another method's JSON body naming models (an admin API's `PUT`, say)
/// goes to the upstream byte for byte, once, and its answer comes back without router headers.
#[tokio::test]
async fn a_request_of_another_method_is_not_routed_whatever_its_body() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let sent = body("a", &["b"]);
    let put = Request::put(up.url("/v1/models/a"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(sent.clone())))
        .unwrap();
    let res = stack!(FallbackLayer::new(), up).oneshot(put).await.unwrap();
    assert_eq!(res.status(), 503, "one attempt, answer unchanged");
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    assert!(res.extensions().get::<Attempts>().is_none());
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, http::Method::PUT);
    assert_eq!(&received[0].body[..], sent.as_bytes(), "`models` kept");
}

#[tokio::test]
async fn headers_can_be_turned_off_but_extensions_stay() {
    let up = Upstream::start().await;
    let res = stack!(FallbackLayer::new().headers(false), up)
        .oneshot(chat(&up.url(URL_PATH), &body("a", &[])))
        .await
        .unwrap();
    assert!(res.headers().get("x-llm-router-model").is_none());
    assert_eq!(&*res.extensions().get::<ServedModel>().unwrap().0, "a");
}

#[tokio::test]
async fn a_thousand_concurrent_requests_with_mixed_faults_each_get_the_right_answer() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set(
        "m429",
        Behavior::Status(
            429,
            vec![],
            r#"{"error":{"message":"rate limit","code":429}}"#,
        ),
    );
    up.set("m503", Behavior::Status(503, vec![], "down"));
    up.set("reset", Behavior::Reset);
    up.set("bad", Behavior::Status(401, vec![], r#"{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#));
    // Health off the table: with cooldowns the order would depend on timing.
    let layer = FallbackLayer::new().health(Arc::new(InMemoryHealth::new().max_models(0)));
    let svc = stack!(layer, up, vec![("refused", refused)]);
    let scenarios: [(&[&str], u16, &str); 6] = [
        (&["ok1"], 200, "ok1=ok"),
        (&["m429", "ok2"], 200, "m429=rate_limited, ok2=ok"),
        (
            &["m503", "reset", "ok3"],
            200,
            "m503=downtime, reset=downtime, ok3=ok",
        ),
        (&["refused", "ok4"], 200, "refused=downtime, ok4=ok"),
        (&["m503", "bad"], 401, "m503=downtime, bad=other"),
        (&["bad", "m429"], 429, "bad=other, m429=rate_limited"),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1200 {
        let (chain, status, attempts) = scenarios[i % scenarios.len()];
        let svc = svc.clone();
        let url = up.url(URL_PATH);
        tasks.spawn(async move {
            let res = svc
                .oneshot(chat(&url, &body(chain[0], &chain[1..])))
                .await
                .unwrap();
            assert_eq!(res.status(), status, "{chain:?}");
            assert_eq!(attempts_header(&res), attempts);
            let bytes = body_bytes(res.into_body()).await;
            if status == 200 {
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(answer["model"], *chain.last().unwrap());
            }
        });
    }
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
        done += 1;
    }
    assert_eq!(done, 1200);
}

#[tokio::test]
async fn dropping_the_response_future_cancels_the_attempt() {
    let up = Upstream::start().await;
    up.set("hang", Behavior::Delay(Duration::from_secs(30)));
    let svc = stack!(FallbackLayer::new(), up);
    let call = tokio::spawn(svc.oneshot(chat(&up.url(URL_PATH), &body("hang", &["b"]))));
    // Dropped once the upstream has the request (however long that takes on a busy machine).
    for _ in 0..500 {
        if !up.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    // The upstream's handler is dropped when the connection closes.
    for _ in 0..500 {
        if up.dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.dropped(), 1, "the upstream saw its connection closed");
    assert_eq!(
        up.models_received(),
        ["hang"],
        "no further attempt was started"
    );
}

#[tokio::test]
async fn dropping_a_stream_midway_closes_the_upstream_stream() {
    let up = Upstream::start().await;
    up.set("forever", Behavior::StreamForever);
    let res = stack!(FallbackLayer::new(), up)
        .oneshot(chat(
            &up.url(URL_PATH),
            r#"{"model":"forever","stream":true,"messages":[]}"#,
        ))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_data());
    drop(body);
    for _ in 0..500 {
        if up.dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.dropped(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn poll_ready_delegates_and_each_attempt_waits_for_readiness() {
    use tower_test::mock;
    let (service, mut handle) = mock::pair::<
        Request<tower_llm_router::RouterBody>,
        http::Response<http_body_util::Full<Bytes>>,
    >();
    let mut svc = tower::Layer::layer(&FallbackLayer::new(), service);
    handle.allow(0);
    type Req = Request<http_body_util::Full<Bytes>>;
    assert!(
        futures::poll!(std::future::poll_fn(|cx| Service::<Req>::poll_ready(
            &mut svc, cx
        )))
        .is_pending(),
        "not ready while the inner is not"
    );
    handle.allow(1);
    std::future::poll_fn(|cx| Service::<Req>::poll_ready(&mut svc, cx))
        .await
        .unwrap();
    let fut = svc.call(chat(
        "http://upstream/v1/chat/completions",
        &body("a", &["b"]),
    ));
    let task = tokio::spawn(fut);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        &*req
            .extensions()
            .get::<tower_llm_router::fallback::RoutedModel>()
            .unwrap()
            .0,
        "a"
    );
    send.send_response(
        http::Response::builder()
            .status(503)
            .body(http_body_util::Full::new(Bytes::from_static(b"down")))
            .unwrap(),
    );
    // The second attempt needs readiness of its own clone: none is granted yet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    handle.allow(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        &*req
            .extensions()
            .get::<tower_llm_router::fallback::RoutedModel>()
            .unwrap()
            .0,
        "b"
    );
    send.send_response(http::Response::new(http_body_util::Full::new(
        Bytes::from_static(b"{}"),
    )));
    let res = task.await.unwrap().unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
}

#[tokio::test]
async fn a_retry_budget_caps_fallback_attempts() {
    let up = Upstream::start().await;
    up.set("down", Behavior::Status(503, vec![], "down"));
    // No reserve, and deposits worth nothing: no fallback may be withdrawn.
    let budget = Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(1),
        0,
        0.0,
    ));
    let layer = FallbackLayer::new().budget(budget);
    let res = stack!(layer, up)
        .oneshot(chat(&up.url(URL_PATH), &body("down", &["b"])))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(attempts_header(&res), "down=downtime");
    assert_eq!(up.models_received(), ["down"]);
}

/// A later attempt that waits for the inner service's readiness (a concurrency limit whose
/// permits other requests hold) has not been sent: the wait is no fault of its model, so the
/// headers timeout starts when the attempt goes out, not before. Before, the model was recorded
/// as tried and `downtime` (and the caller answered 504) without ever being asked.
#[tokio::test]
async fn the_headers_timeout_starts_when_an_attempt_is_sent_not_while_it_waits_for_readiness() {
    use tokio::sync::{Notify, Semaphore};
    let up = Upstream::start().await;
    // `a` answers 503 only when told to, so that the test can queue for the permit first.
    let (arrived, answer) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gated = listener.local_addr().unwrap();
    let (signal, go) = (arrived.clone(), answer.clone());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_req| {
            let (signal, go) = (signal.clone(), go.clone());
            async move {
                signal.notify_one();
                go.notified().await;
                http::Response::builder()
                    .status(503)
                    .body(http_body_util::Full::new(Bytes::from_static(b"down")))
            }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
    let permits = Arc::new(Semaphore::new(1));
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().headers_timeout(Duration::from_secs(2)))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            permits.clone(),
        ))
        .service(routed_client(up.addr, vec![("a", gated)]));
    let request = tokio::spawn(svc.oneshot(chat(&up.url(URL_PATH), &body("a", &["b"]))));
    // The request holds the only permit while `a` is asked; the test queues for it next, and
    // holds it for longer than the headers timeout once `a` has answered.
    arrived.notified().await;
    let mut queued = Box::pin(permits.clone().acquire_owned());
    assert!(futures::poll!(&mut queued).is_pending());
    answer.notify_one();
    let held = queued.await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(held);
    let res = request.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    assert_eq!(up.models_received(), ["b"]);
}

#[tokio::test]
async fn a_concurrency_limit_below_the_layer_is_respected_across_attempts() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    up.set("b", Behavior::Delay(Duration::from_millis(20)));
    // One request at a time reaches the client; every attempt waits for its own permit.
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(Arc::new(InMemoryHealth::new().max_models(0))))
        .buffer(64)
        .concurrency_limit(1)
        .service(routed_client(up.addr, vec![]));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let svc = svc.clone();
        let url = up.url(URL_PATH);
        tasks.spawn(async move {
            let res = svc.oneshot(chat(&url, &body("a", &["b"]))).await.unwrap();
            assert_eq!(attempts_header(&res), "a=downtime, b=ok");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(up.received().len(), 32);
}

/// A classifier of one's own, set on the layer or on a service built without one
/// (`Fallback::new(..).classify_with(..)`): both class a 404 as the classifier says, and with
/// `fallback_on` narrowed to downtime the chain moves on only because of it.
#[tokio::test]
async fn classify_with_on_the_layer_and_on_the_service() {
    use tower_llm_router::classify::{classify_fn, classify_response};
    use tower_llm_router::Fallback;

    let not_found_is_downtime = classify_fn(|status, headers, body| {
        if status == 404 {
            Some(ErrorClass::Downtime)
        } else {
            classify_response(status, headers, body)
        }
    });
    let only_downtime = ClassSet::none().with(ErrorClass::Downtime);
    let up = Upstream::start().await;
    up.set(
        "gpt-4o",
        Behavior::Status(404, vec![], r#"{"error":{"message":"no such model"}}"#),
    );
    let body = r#"{"model":"gpt-4o","models":["claude-sonnet"],"messages":[]}"#;

    // Without the classifier a 404 is not downtime: the chain stops at it.
    let plain = FallbackLayer::new().fallback_on(only_downtime);
    let res = ServiceBuilder::new()
        .layer(plain)
        .service(routed_client(up.addr, vec![]))
        .oneshot(chat(&up.url("/v1/chat/completions"), body))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let layer = FallbackLayer::new()
        .fallback_on(only_downtime)
        .classify_with(not_found_is_downtime);
    let res = ServiceBuilder::new()
        .layer(layer)
        .service(routed_client(up.addr, vec![]))
        .oneshot(chat(&up.url("/v1/chat/completions"), body))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "gpt-4o=downtime, claude-sonnet=ok");

    let service = Fallback::new(routed_client(up.addr, vec![]))
        .fallback_on(only_downtime)
        .classify_with(not_found_is_downtime);
    let res = service
        .oneshot(chat(&up.url("/v1/chat/completions"), body))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(attempts_header(&res), "gpt-4o=downtime, claude-sonnet=ok");
}
