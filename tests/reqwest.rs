//! The reqwest integration end to end: `FallbackMiddleware` in a reqwest-middleware client, and
//! the tower services over reqwest, against the scripted upstream on loopback sockets.
#![cfg(feature = "reqwest")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::Extensions;
use http_body_util::BodyExt;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use serde_json::{json, Value};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_router::fallback::{Attempts, FallbackModels, Outcome, RoutedModel, ServedModel};
use tower_llm_router::health::InMemoryHealth;
use tower_llm_router::reqwest::{FallbackMiddleware, ReqwestMiddlewareService, ReqwestService};
use tower_llm_router::{ErrorClass, FallbackLayer};

const URL_PATH: &str = "/v1/chat/completions";

fn body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// Sends each attempt whose model (the `RoutedModel` the fallback hands to the rest of the
/// chain) is listed to that address instead.
struct RouteByModel(HashMap<&'static str, SocketAddr>);

#[async_trait::async_trait]
impl Middleware for RouteByModel {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let model = extensions.get::<RoutedModel>().map(|m| m.0.clone());
        if let Some(addr) = model.and_then(|m| self.0.get(&*m).copied()) {
            req.url_mut().set_port(Some(addr.port())).unwrap();
        }
        next.run(req, extensions).await
    }
}

/// Records the model of every request that reaches it (`-` without a `RoutedModel`), and
/// leaves a `SeenBy` mark in the extensions.
#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<String>>>);

#[derive(Clone, Debug, PartialEq)]
struct SeenBy(String);

#[derive(Clone, Debug, PartialEq)]
struct CallerTag(&'static str);

impl Record {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Middleware for Record {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let model = extensions
            .get::<RoutedModel>()
            .map_or_else(|| "-".to_owned(), |m| m.0.to_string());
        let tag = extensions.get::<CallerTag>().map_or("", |t| t.0);
        self.0.lock().unwrap().push(format!("{model}{tag}"));
        extensions.insert(SeenBy(model));
        next.run(req, extensions).await
    }
}

fn client(fallback: FallbackMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(fallback)
        .build()
}

fn routed_client(
    fallback: FallbackMiddleware,
    routes: Vec<(&'static str, SocketAddr)>,
) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(fallback)
        .with(RouteByModel(routes.into_iter().collect()))
        .build()
}

async fn post(client: &ClientWithMiddleware, up: &Upstream, body: &str) -> reqwest::Response {
    client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn attempts(res: &reqwest::Response) -> String {
    header(res, "x-llm-router-attempts")
}

/// Models, the last first: no cooldown reorders a chain.
fn no_health() -> Arc<InMemoryHealth> {
    Arc::new(InMemoryHealth::new().max_models(0))
}

fn fast_retries(retries: u32) -> RetryTransientMiddleware<ExponentialBackoff> {
    RetryTransientMiddleware::new_with_policy(
        ExponentialBackoff::builder()
            .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
            .build_with_max_retries(retries),
    )
}

#[tokio::test]
async fn falls_back_on_each_class_and_on_reqwest_transport_errors() {
    trace_init();
    let refused = closed_port().await;
    let cases: Vec<(&str, Behavior, &str)> = vec![
        (
            "flagged-403",
            Behavior::Status(
                403,
                vec![],
                r#"{"error":{"code":403,"message":"Your chosen model requires moderation and your input was flagged for \"harassment\"","metadata":{"reasons":["harassment"],"flagged_input":"...","provider_name":"Anthropic","model_slug":"anthropic/claude-3-opus"}}}"#,
            ),
            "moderation",
        ),
        (
            "vllm-context-400",
            Behavior::Status(
                400,
                vec![],
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
            ),
            "context_length",
        ),
        (
            "limited-429",
            Behavior::Status(
                429,
                vec![("retry-after", "3")],
                r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#,
            ),
            "rate_limited",
        ),
        (
            "unavailable-503",
            Behavior::Status(503, vec![], "Service Unavailable"),
            "downtime",
        ),
        (
            "overloaded-529",
            Behavior::Status(
                529,
                vec![],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            "downtime",
        ),
        (
            "bad-key-401",
            Behavior::Status(
                401,
                vec![],
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            ),
            "other",
        ),
        // Transport errors, as reqwest reports them.
        ("reset-before-headers", Behavior::Reset, "downtime"),
        ("connection-refused", Behavior::Ok, "downtime"),
        (
            "reqwest-timeout",
            Behavior::Delay(Duration::from_secs(60)),
            "downtime",
        ),
        (
            "stream-breaks-at-once",
            Behavior::StreamBreak(0),
            "downtime",
        ),
    ];
    for (model, behavior, class) in cases {
        let up = Upstream::start().await;
        up.set(model, behavior);
        // Generous: the same per-attempt timeout covers the backup's answer on a busy machine.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let client = ClientBuilder::new(http)
            .with(FallbackMiddleware::default())
            .with(RouteByModel(HashMap::from([(
                "connection-refused",
                refused,
            )])))
            .build();
        let res = post(&client, &up, &body(model, &["backup"])).await;
        assert_eq!(res.status(), 200, "{model}");
        assert_eq!(header(&res, "x-llm-router-model"), "backup", "{model}");
        assert_eq!(attempts(&res), format!("{model}={class}, backup=ok"));
        let answer: Value = json_of(res).await;
        assert_eq!(answer["model"], "backup", "{model}: the backup's answer");
    }
}

/// The body as JSON (`Response::json` needs reqwest's `json` feature, which this crate leaves off).
async fn json_of(res: reqwest::Response) -> Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

/// reqwest's timeouts, as the module docs describe them: a per-request one applies to each
/// attempt, and a timeout that fires while a stream runs ends it with the SSE error event.
#[tokio::test]
async fn reqwest_timeouts_apply_to_each_attempt_and_end_a_running_stream_with_an_event() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(60)));
    up.set("pausing", Behavior::StreamPause(Duration::from_secs(60)));
    let client = client(FallbackMiddleware::default());
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(500))
        .body(body("slow", &["fast"]))
        .send()
        .await
        .unwrap();
    assert_eq!(attempts(&res), "slow=downtime, fast=ok");
    let err = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(500))
        .body(body("slow", &[]))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(500))
        .body(stream_body("pausing", &["next"]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        attempts(&res),
        "pausing=ok",
        "the first content came in time"
    );
    let text = sse_text(res).await;
    assert!(
        text.starts_with("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n"),
        "{text}"
    );
    assert!(text.contains(r#""finish_reason":"error""#), "{text}");
}

#[tokio::test]
async fn the_headers_timeout_classes_a_slow_model_as_downtime() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(60)));
    let client = client(FallbackMiddleware::default().headers_timeout(Duration::from_secs(2)));
    let res = post(&client, &up, &body("slow", &["fast"])).await;
    assert_eq!(attempts(&res), "slow=downtime, fast=ok");
}

#[tokio::test]
async fn connection_refused_falls_back_and_on_the_last_model_is_the_error() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    let client = routed_client(FallbackMiddleware::default(), vec![("down", refused)]);
    let res = post(&client, &up, &body("down", &["up"])).await;
    assert_eq!(attempts(&res), "down=downtime, up=ok");
    let attempts = res.extensions().get::<Attempts>().unwrap();
    assert_eq!(attempts.tried[0].status, None, "no answer at all");
    assert_eq!(up.models_received(), ["up"]);

    up.set("up-then-down", Behavior::Status(503, vec![], "down"));
    let err = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(body("up-then-down", &["down"]))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(matches!(err, reqwest_middleware::Error::Reqwest(_)));

    // Answered by the layer instead, with the models tried.
    let answering = FallbackMiddleware::default().answer_transport_errors(true);
    let client = routed_client(answering, vec![("down", refused)]);
    let res = post(&client, &up, &body("up-then-down", &["down"])).await;
    assert_eq!(res.status(), 502);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "up-then-down=downtime, down=downtime"
    );
    assert_eq!(json_of(res).await["error"]["code"], "upstream_unreachable");
}

/// reqwest writes the request's URL into its transport errors; the layer's 502 names the error
/// in its body, which a gateway hands to its own clients: a key in the query (Gemini's
/// `?key=`) or in the userinfo must not be in it.
#[tokio::test]
async fn the_502_for_a_transport_error_names_the_url_without_its_secrets() {
    let refused = closed_port().await;
    let url = format!("http://user:pass-secret@{refused}{URL_PATH}?key=AIza-secret&x=1#frag");
    let through_middleware = client(FallbackMiddleware::default().answer_transport_errors(true))
        .post(&url)
        .header("content-type", "application/json")
        .body(body("a", &[]))
        .send()
        .await
        .unwrap();
    let through_service = ServiceBuilder::new()
        .layer(FallbackLayer::new().answer_transport_errors(true))
        .service(ReqwestService::new(reqwest::Client::new()))
        .oneshot(chat(&url, &body("a", &[])))
        .await
        .unwrap();
    let through_service = reqwest::Response::from(through_service.map(reqwest::Body::wrap));
    for res in [through_middleware, through_service] {
        assert_eq!(res.status(), 502);
        let message = json_of(res).await["error"]["message"].to_string();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("could not be reached"), "{message}");
        assert!(
            message.contains(&format!("http://{refused}{URL_PATH})")),
            "the URL, without query, fragment or userinfo: {message}"
        );
        // Why, after reqwest's own words (its sources, each once).
        assert!(
            message.contains(&format!(
                "{URL_PATH}): client error (Connect): tcp connect error: Connection refused"
            )),
            "{message}"
        );
    }
}

/// reqwest's own timeouts (the client's `timeout`, a request's `timeout`, the client's
/// `read_timeout`) on the last model, with `answer_transport_errors`, are answered as the
/// layer's own timeouts and a `tower::timeout` below it are: a 504 `upstream_timeout`, through
/// the middleware and through `ReqwestService` under the layer. They were a 502
/// `upstream_unreachable` ("operation timed out"): reqwest's timeout error was not read as one.
#[tokio::test]
async fn reqwest_timeouts_on_the_last_model_are_answered_as_the_layers_own() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(60)));
    let within = Duration::from_millis(300);
    let answering = || FallbackMiddleware::default().answer_transport_errors(true);
    let through = |client: reqwest::Client| ClientBuilder::new(client).with(answering()).build();
    let client_timeout = reqwest::Client::builder().timeout(within).build().unwrap();
    let read_timeout = reqwest::Client::builder()
        .read_timeout(within)
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for (name, client, request_timeout) in [
        (
            "ClientBuilder::timeout",
            through(client_timeout.clone()),
            None,
        ),
        (
            "RequestBuilder::timeout",
            through(reqwest::Client::new()),
            Some(within),
        ),
        ("ClientBuilder::read_timeout", through(read_timeout), None),
    ] {
        let mut request = client
            .post(up.url(URL_PATH))
            .header("content-type", "application/json")
            .body(body("slow", &[]));
        if let Some(timeout) = request_timeout {
            request = request.timeout(timeout);
        }
        let res = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .unwrap()
            .unwrap();
        answers.push((name, res));
    }
    let through_service = ServiceBuilder::new()
        .layer(FallbackLayer::new().answer_transport_errors(true))
        .service(ReqwestService::new(client_timeout))
        .oneshot(chat(&up.url(URL_PATH), &body("slow", &[])))
        .await
        .unwrap();
    answers.push((
        "ReqwestService",
        reqwest::Response::from(through_service.map(reqwest::Body::wrap)),
    ));
    for (name, res) in answers {
        assert_eq!(res.status(), 504, "{name}");
        assert_eq!(attempts(&res), "slow=downtime", "{name}");
        let error = json_of(res).await;
        assert!(is_openai_error(&error), "{name}: {error}");
        assert_eq!(error["error"]["type"], "server_error", "{name}");
        assert_eq!(error["error"]["code"], "upstream_timeout", "{name}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`slow` did not answer in time"),
            "{name}: {message}"
        );
    }
}

#[tokio::test]
async fn when_every_model_fails_the_last_answer_comes_back_unchanged() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    let last_body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
    up.set("reset", Behavior::Reset);
    up.set("overloaded", Behavior::Status(529, vec![], "Overloaded"));
    up.set(
        "limited",
        Behavior::Status(
            429,
            vec![
                ("retry-after", "42"),
                ("anthropic-ratelimit-tokens-remaining", "0"),
            ],
            last_body,
        ),
    );
    let client = routed_client(FallbackMiddleware::default(), vec![("refused", refused)]);
    let res = post(
        &client,
        &up,
        &body("reset", &["refused", "overloaded", "limited"]),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "42");
    assert_eq!(header(&res, "anthropic-ratelimit-tokens-remaining"), "0");
    assert_eq!(header(&res, "x-llm-router-model"), "limited");
    assert_eq!(
        attempts(&res),
        "reset=downtime, refused=downtime, overloaded=downtime, limited=rate_limited"
    );
    assert_eq!(res.url().as_str(), up.url(URL_PATH));
    let records = res.extensions().get::<Attempts>().unwrap().clone();
    let statuses: Vec<Option<u16>> = records
        .tried
        .iter()
        .map(|a| a.status.map(|s| s.as_u16()))
        .collect();
    assert_eq!(statuses, [None, None, Some(529), Some(429)]);
    assert_eq!(
        records.tried[3].outcome,
        Outcome::Failed(ErrorClass::RateLimited)
    );
    assert_eq!(&res.bytes().await.unwrap()[..], last_body.as_bytes());
}

#[tokio::test]
async fn records_reach_the_response_and_the_chains_extensions() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(502, vec![], "bad gateway"));
    let record = Record::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default())
        .with(record.clone())
        .build();
    let request = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(body("a", &["b"]))
        .build()
        .unwrap();
    let mut extensions = Extensions::new();
    extensions.insert(CallerTag("+tag"));
    let res = client
        .execute_with_extensions(request, &mut extensions)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Each attempt ran the rest of the chain with the caller's extensions and its own model.
    assert_eq!(record.seen(), ["a+tag", "b+tag"]);
    // The caller gets the answering attempt's extensions back, plus the records.
    assert_eq!(extensions.get::<SeenBy>(), Some(&SeenBy("b".into())));
    assert_eq!(extensions.get::<CallerTag>(), Some(&CallerTag("+tag")));
    assert_eq!(extensions.get::<ServedModel>().map(|m| &*m.0), Some("b"));
    let from_chain = extensions.get::<Attempts>().unwrap();
    assert_eq!(Some(from_chain), res.extensions().get::<Attempts>());
    assert_eq!(from_chain.to_header_value(), "a=downtime, b=ok");
    assert_eq!(
        res.extensions().get::<ServedModel>().map(|m| &*m.0),
        Some("b")
    );
    assert_eq!(header(&res, "x-llm-router-model"), "b");
    assert_eq!(res.url().as_str(), up.url(URL_PATH), "the URL survives");
}

/// The layer's builder methods are the middleware's, `identity_encoding` and `auto_route`
/// included: the client's `Accept-Encoding` goes upstream as it is once turned off, and
/// `"model": "auto"` is routed in the middleware.
#[tokio::test]
async fn every_builder_method_of_the_layer_is_the_middlewares() {
    use tower_llm_router::auto_route::{Catalog, ModelProfile};
    use tower_llm_router::AutoRouteLayer;
    let up = Upstream::start().await;
    let send = |fallback: FallbackMiddleware, body: String| {
        let request = client(fallback)
            .post(up.url(URL_PATH))
            .header("content-type", "application/json")
            .header("accept-encoding", "gzip, br")
            .body(body);
        async move { request.send().await.unwrap() }
    };
    let sent_encoding = || up.received().last().unwrap().headers["accept-encoding"].clone();
    send(FallbackMiddleware::default(), body("m", &[])).await;
    assert_eq!(sent_encoding(), "identity");
    let kept = FallbackMiddleware::default().identity_encoding(false);
    send(kept, body("m", &[])).await;
    assert_eq!(sent_encoding(), "gzip, br");
    let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
    let auto = FallbackMiddleware::default().auto_route(AutoRouteLayer::new(catalog));
    let res = send(auto, body("auto", &[])).await;
    assert_eq!(header(&res, "x-llm-router-model"), "small");
    assert_eq!(
        up.models_received().last().map(String::as_str),
        Some("small")
    );
}

#[tokio::test]
async fn each_attempt_sends_the_clients_request_with_its_model() {
    let up = Upstream::start().await;
    up.set("first", Behavior::Status(503, vec![], "down"));
    let original = "{ \"temperature\" : 0.25,\n \"models\" : [\"second\"],\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}],\"model\": \"first\" }";
    let res = client(FallbackMiddleware::default())
        .post(up.url("/v1/chat/completions?api-version=2024-06-01"))
        .header("content-type", "application/json")
        .bearer_auth("sk-test")
        .header("x-request-id", "r-1")
        .body(original)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let received = up.received();
    assert_eq!(received.len(), 2);
    let mut expected: Value = serde_json::from_str(original).unwrap();
    expected.as_object_mut().unwrap().remove("models");
    for (got, model) in received.iter().zip(["first", "second"]) {
        expected["model"] = json!(model);
        assert_eq!(
            serde_json::from_slice::<Value>(&got.body).unwrap(),
            expected
        );
        let text = std::str::from_utf8(&got.body).unwrap();
        for verbatim in [
            "{ \"temperature\" : 0.25,",
            "\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}],",
        ] {
            assert!(
                text.contains(verbatim),
                "{verbatim:?} not verbatim in {text:?}"
            );
        }
        assert_eq!(got.headers["authorization"], "Bearer sk-test");
        assert_eq!(got.headers["x-request-id"], "r-1");
        assert_eq!(
            got.headers["content-length"],
            got.body.len().to_string().as_str()
        );
        assert_eq!(got.method, http::Method::POST);
    }
}

#[tokio::test]
async fn a_streamed_json_body_is_buffered_once_for_every_attempt() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let client = client(FallbackMiddleware::default().max_body_bytes(1024));
    let request = body("a", &["b"]);
    let parts: Vec<Result<String, std::io::Error>> = request
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
        .send()
        .await
        .unwrap();
    assert_eq!(attempts(&res), "a=downtime, b=ok");
    assert_eq!(up.models_received(), ["a", "b"]);
    // Over the limit: refused while it streams in, the upstream never called.
    let big = futures::stream::iter((0..200).map(|_| Ok::<_, std::io::Error>("0123456789")));
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(big))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(json_of(res).await["error"]["code"], "request_too_large");
    assert_eq!(up.received().len(), 2);
}

/// A streamed body is read before the first attempt, where reqwest's own timeout does not run
/// yet: the request's timeout bounds that read (a 408, as for any body that timed out) instead
/// of the request hanging on a stalled stream.
#[tokio::test]
async fn a_stalled_streamed_body_times_out_with_the_requests_timeout() {
    let up = Upstream::start().await;
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>("{\"model\":")])
        .chain(futures::stream::pending());
    let send = client(FallbackMiddleware::default())
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(200))
        .body(reqwest::Body::wrap_stream(stalled))
        .send();
    let res = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the request's timeout ends the read")
        .unwrap();
    assert_eq!(res.status(), 408);
    assert_eq!(json_of(res).await["error"]["code"], "request_timeout");
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn a_fallback_models_extension_supplies_the_chain() {
    let up = Upstream::start().await;
    up.set("solo", Behavior::Status(503, vec![], "down"));
    let client = client(FallbackMiddleware::default());
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .body(r#"{"model":"solo","messages":[]}"#)
        .with_extension(FallbackModels(vec!["handed-over".into()]))
        .send()
        .await
        .unwrap();
    assert_eq!(attempts(&res), "solo=downtime, handed-over=ok");
}

#[tokio::test]
async fn requests_without_a_routing_decision_go_straight_through() {
    let up = Upstream::start().await;
    up.set("", Behavior::Status(503, vec![], "down"));
    let record = Record::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default().default_fallbacks(["b"]))
        .with(record.clone())
        .build();
    let res = client.get(up.url("/v1/models")).send().await.unwrap();
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    // A streamed body that is not JSON is not buffered: it reaches the upstream as it is.
    let chunks = futures::stream::iter(["model", "=", "a"].map(Ok::<_, std::io::Error>));
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "text/plain")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "one attempt, the answer unchanged");
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    assert_eq!(&up.received()[1].body[..], b"model=a");
    // A POST with no body (OpenAI's `.../cancel`): nothing to route, not invalid JSON.
    let res = client
        .post(up.url("/v1/batches/batch_1/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        503,
        "passed on, the upstream's answer unchanged"
    );
    assert!(up.received()[2].body.is_empty());
    assert_eq!(record.seen(), ["-", "-", "-"], "no model was routed");
}

/// A JSON `POST` to another endpoint that names a model is routed by method and content type,
/// as the docs say: without `models` it is one attempt (`default_fallbacks` are chat models, not
/// added for it), its body sent byte for byte and the upstream's answer returned unchanged.
#[tokio::test]
async fn an_embeddings_request_is_one_attempt_with_its_own_body() {
    let up = Upstream::start().await;
    up.set(
        "text-embedding-3-small",
        Behavior::Status(503, vec![], "down"),
    );
    let request = r#"{"input": ["a", "b"], "model":"text-embedding-3-small", "dimensions": 256}"#;
    // The configured fallbacks are chat models: not added for an embeddings request, whose own
    // error comes back rather than a chat model's refusal of it.
    let layer = FallbackLayer::new().default_fallbacks(["gpt-4o-mini"]);
    let res = client(FallbackMiddleware::new(layer))
        .post(up.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(attempts(&res), "text-embedding-3-small=downtime");
    assert_eq!(&res.bytes().await.unwrap()[..], b"down");
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/embeddings");
    assert_eq!(&received[0].body[..], request.as_bytes());
}

/// A compressed JSON body is not routed (the layer cannot read it): it must reach the rest of
/// the chain as the client built it, a clonable body with its length, so that a retry inside
/// can resend it.
#[tokio::test]
async fn a_compressed_json_body_goes_straight_through_and_stays_retryable() {
    let up = Upstream::start().await;
    up.set("", Behavior::Status(503, vec![], "down"));
    let record = Record::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default())
        .with(fast_retries(1))
        .with(record.clone())
        .build();
    let gzipped: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 0xab, 0xae, 0x05,
    ];
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .expect("a bytes body can be retried");
    assert_eq!(res.status(), 503, "the upstream's answer unchanged");
    assert!(res.headers().get("x-llm-router-attempts").is_none());
    let received = up.received();
    assert_eq!(received.len(), 2, "sent, then retried once");
    for sent in received {
        assert_eq!(&sent.body[..], gzipped);
        assert_eq!(sent.headers["content-length"], "13");
        assert!(sent.headers.get("transfer-encoding").is_none());
    }
    assert_eq!(record.seen(), ["-", "-"], "no model was routed");
}

#[tokio::test]
async fn refusals_keep_the_request_url_and_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let client = client(
        FallbackMiddleware::new(FallbackLayer::new().allow_models(["openai/*"])).max_models(2),
    );
    for (request, code) in [
        (
            body("openai/gpt-4o", &["mistral/large"]),
            "model_not_allowed",
        ),
        (
            body("openai/a", &["openai/b", "openai/c"]),
            "too_many_models",
        ),
        ("{not json".to_owned(), "invalid_json"),
    ] {
        let res = post(&client, &up, &request).await;
        assert_eq!(res.status(), 400, "{request}");
        assert_eq!(res.url().as_str(), up.url(URL_PATH));
        let error = json_of(res).await;
        assert_eq!(error["error"]["type"], "invalid_request_error");
        if code != "invalid_json" {
            assert_eq!(error["error"]["code"], code);
        }
    }
    assert!(up.received().is_empty());
}

async fn sse_text(res: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("a broken stream ends with an event, not an error"));
    }
    String::from_utf8(out).unwrap()
}

fn stream_body(model: &str, models: &[&str]) -> String {
    json!({"model": model, "models": models, "stream": true, "messages": []}).to_string()
}

#[tokio::test]
async fn a_stream_falls_back_on_an_error_status_and_on_an_error_first_event() {
    let up = Upstream::start().await;
    up.set(
        "limited",
        Behavior::Status(
            429,
            vec![],
            r#"{"error":{"message":"Rate limit","code":429}}"#,
        ),
    );
    up.set("in-band", Behavior::StreamFirstEvent(r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable"}}}"#));
    up.set(
        "good",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"hi"}}]}"#]),
    );
    let client = client(FallbackMiddleware::default().health(no_health()));
    let res = post(&client, &up, &stream_body("limited", &["in-band", "good"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        attempts(&res),
        "limited=rate_limited, in-band=downtime, good=ok"
    );
    assert_eq!(
        sse_text(res).await,
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
    );
}

#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_an_sse_error_event() {
    let up = Upstream::start().await;
    up.set("a", Behavior::StreamBreak(3));
    let res = post(
        &client(FallbackMiddleware::default()),
        &up,
        &stream_body("a", &["b"]),
    )
    .await;
    assert_eq!(attempts(&res), "a=ok", "no fallback after the first byte");
    assert_stream_broke_after(&sse_text(res).await, 3, "a");
    assert_eq!(up.models_received(), ["a"]);
}

#[tokio::test]
async fn streams_pass_through_as_they_arrive() {
    let up = Upstream::start().await;
    up.set("forever", Behavior::StreamForever);
    let res = post(
        &client(FallbackMiddleware::default()),
        &up,
        &stream_body("forever", &[]),
    )
    .await;
    let mut stream = res.bytes_stream();
    // The stream never ends: a buffered body would never yield.
    for i in 1..=3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a chunk arrives while the stream is still open")
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert!(text.contains(&format!("tok{i} ")), "{text}");
    }
    drop(stream);
    assert_eq!(
        wait_for_drops(&up, 1).await,
        1,
        "dropping the stream closes the upstream's"
    );
}

// ===== composing with reqwest-retry =====

#[tokio::test]
async fn retry_outside_the_fallback_retries_the_whole_chain_only_when_it_fails() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    up.set("b", Behavior::Status(503, vec![], "down too"));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(fast_retries(2))
        .with(FallbackMiddleware::default().health(no_health()))
        .build();
    // The chain answers: the retry has nothing to do.
    let res = post(&client, &up, &body("a", &["ok"])).await;
    assert_eq!(attempts(&res), "a=downtime, ok=ok");
    assert_eq!(up.models_received(), ["a", "ok"]);
    // The chain fails as a whole: it runs again, twice.
    let res = post(&client, &up, &body("a", &["b"])).await;
    assert_eq!(res.status(), 503);
    assert_eq!(attempts(&res), "a=downtime, b=downtime");
    assert_eq!(
        up.models_received()[2..],
        ["a", "b", "a", "b", "a", "b"],
        "three runs of the chain"
    );
}

/// The retry outside sees the chain's outcome only: the last answer decides, whatever the
/// models before it answered; a failure that does not move on is the outcome too.
#[tokio::test]
async fn retry_outside_acts_on_the_last_answer_of_the_chain() {
    use tower_llm_router::fallback::ClassSet;
    let up = Upstream::start().await;
    up.set("bad-key", Behavior::Status(401, vec![], "unauthorized"));
    up.set("down", Behavior::Status(503, vec![], "down"));
    up.set("limited", Behavior::Status(429, vec![], "slow down"));
    let client = |fallback: FallbackMiddleware| {
        ClientBuilder::new(reqwest::Client::new())
            .with(fast_retries(1))
            .with(fallback.health(no_health()))
            .build()
    };
    let all = client(FallbackMiddleware::default());
    // A 401 then a 503: the chain ends on a transient answer and runs again.
    let res = post(&all, &up, &body("bad-key", &["down"])).await;
    assert_eq!(res.status(), 503);
    assert_eq!(up.models_received(), ["bad-key", "down", "bad-key", "down"]);
    // A 503 then a 401: the chain ends on an answer the retry does not retry.
    let res = post(&all, &up, &body("down", &["bad-key"])).await;
    assert_eq!(res.status(), 401);
    assert_eq!(up.models_received()[4..], ["down", "bad-key"]);
    // Only downtime moves on: a 429 is the chain's outcome at once, and is retried.
    let narrow = client(
        FallbackMiddleware::default().fallback_on(ClassSet::none().with(ErrorClass::Downtime)),
    );
    let res = post(&narrow, &up, &body("limited", &["next"])).await;
    assert_eq!(res.status(), 429);
    assert_eq!(up.models_received()[6..], ["limited", "limited"]);
}

#[tokio::test]
async fn retry_inside_the_fallback_retries_each_model_before_moving_on() {
    let up = Upstream::start().await;
    up.set("a", Behavior::Status(503, vec![], "down"));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default())
        .with(fast_retries(2))
        .build();
    let res = post(&client, &up, &body("a", &["b"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(attempts(&res), "a=downtime, b=ok", "one attempt per model");
    assert_eq!(up.models_received(), ["a", "a", "a", "b"]);
}

#[tokio::test]
async fn retry_inside_sees_connection_errors_then_the_fallback_moves_on() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    let record = Record::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(FallbackMiddleware::default())
        .with(fast_retries(1))
        .with(record.clone())
        .with(RouteByModel(HashMap::from([("gone", refused)])))
        .build();
    let res = post(&client, &up, &body("gone", &["b"])).await;
    assert_eq!(res.status(), 200);
    // The retry's error (the connect error wrapped twice) is still a transport failure.
    assert_eq!(attempts(&res), "gone=downtime, b=ok");
    assert_eq!(record.seen(), ["gone", "gone", "b"]);
}

// ===== tower services over reqwest =====

#[tokio::test]
async fn fallback_layer_over_reqwest_service() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(
            529,
            vec![],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    );
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .buffer(8)
        .service(ReqwestService::new(reqwest::Client::new()));
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, b=ok");
    assert_eq!(&*res.extensions().get::<ServedModel>().unwrap().0, "b");
    let res = reqwest::Response::from(res.map(reqwest::Body::wrap));
    assert_eq!(res.url().as_str(), up.url(URL_PATH));
    assert_eq!(json_of(res).await["model"], "b");

    up.set("broken", Behavior::StreamBreak(3));
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &stream_body("broken", &[])))
        .await
        .unwrap();
    let text = String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap();
    assert_stream_broke_after(&text, 3, "broken");

    // A POST with no body passes the layer and goes out as it came, without a body (no
    // framing, or `Content-Length: 0`), not as an empty chunked stream.
    let cancel = http::Request::post(up.url("/v1/batches/batch_1/cancel"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    svc.oneshot(cancel).await.unwrap();
    let received = up.received();
    let sent = received.last().unwrap();
    assert_eq!(sent.path, "/v1/batches/batch_1/cancel");
    assert!(sent.headers.get("transfer-encoding").is_none());
    assert!(sent.headers.get("content-length").is_none_or(|l| l == "0"));
    assert!(sent.body.is_empty());
}

/// A body the layer passes on without buffering it (not JSON, compressed, or no layer at all)
/// goes out with its `Content-Length`, as hyper-util's client sends it, not re-framed as a
/// chunked stream (which upstreams that want a length refuse with 411).
#[tokio::test]
async fn an_unrouted_body_keeps_its_length_through_the_reqwest_services() {
    let up = Upstream::start().await;
    let upload = |content_type: &str| {
        http::Request::post(up.url("/v1/files"))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"purpose=batch&file=...",
            )))
            .unwrap()
    };
    let layered = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(ReqwestService::new(reqwest::Client::new()));
    layered
        .oneshot(upload("application/x-www-form-urlencoded"))
        .await
        .unwrap();
    ReqwestService::new(reqwest::Client::new())
        .oneshot(upload("text/plain"))
        .await
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new()).build();
    ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .service(ReqwestMiddlewareService::new(client))
        .oneshot(upload("multipart/form-data; boundary=x"))
        .await
        .unwrap();
    let received = up.received();
    assert_eq!(received.len(), 3);
    for sent in received {
        assert_eq!(&sent.body[..], b"purpose=batch&file=...");
        assert_eq!(sent.headers["content-length"], "22", "{:?}", sent.headers);
        assert!(sent.headers.get("transfer-encoding").is_none());
    }
}

/// Sends each attempt to the address its model is routed to, on the `http` request.
fn route_uri(
    routes: Vec<(&'static str, SocketAddr)>,
) -> impl Fn(
    http::Request<tower_llm_router::RouterBody>,
) -> http::Request<tower_llm_router::RouterBody>
       + Clone {
    let routes: Arc<HashMap<_, _>> = Arc::new(routes.into_iter().collect());
    move |mut req| {
        let addr = req
            .extensions()
            .get::<RoutedModel>()
            .and_then(|m| routes.get(&*m.0).copied());
        if let Some(addr) = addr {
            let path = req.uri().path().to_owned();
            *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        }
        req
    }
}

#[tokio::test]
async fn reqwest_service_errors_are_transport_failures() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .map_request(route_uri(vec![("gone", refused)]))
        .service(ReqwestService::new(reqwest::Client::new()));
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("gone", &["b"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "gone=downtime, b=ok");
    let err = svc
        .oneshot(chat(&up.url(URL_PATH), &body("gone", &[])))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "reqwest's own error: {err:?}");
}

#[tokio::test]
async fn reqwest_middleware_service_runs_the_clients_middleware_per_attempt() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set("a", Behavior::Status(500, vec![], "boom"));
    let record = Record::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(record.clone())
        .with(RouteByModel(HashMap::from([("gone", refused)])))
        .build();
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().health(no_health()))
        .service(ReqwestMiddlewareService::new(client));
    let res = svc
        .clone()
        .oneshot(chat(&up.url(URL_PATH), &body("a", &["gone", "c"])))
        .await
        .unwrap();
    assert_eq!(attempts_header(&res), "a=downtime, gone=downtime, c=ok");
    assert_eq!(record.seen(), ["a", "gone", "c"]);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["model"], "c");
    let err = svc
        .oneshot(chat(&up.url(URL_PATH), &body("gone", &[])))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn many_concurrent_requests_through_the_middleware_each_get_their_answer() {
    let up = Upstream::start().await;
    let refused = closed_port().await;
    up.set(
        "in-band",
        Behavior::StreamFirstEvent(r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable"}}}"#),
    );
    up.set(
        "stream",
        Behavior::Stream(vec![r#"{"choices":[{"delta":{"content":"ok"}}]}"#]),
    );
    up.set("overloaded", Behavior::Status(529, vec![], "Overloaded"));
    up.set("gone", Behavior::Reset);
    let client = routed_client(
        FallbackMiddleware::default().health(no_health()),
        vec![("refused", refused)],
    );
    // (chain, streamed, attempts header, what the answer contains)
    let scenarios: [(&[&str], bool, &str, &str); 4] = [
        (&["plain"], false, "plain=ok", "hello from plain"),
        (
            &["in-band", "stream"],
            true,
            "in-band=downtime, stream=ok",
            "data: [DONE]",
        ),
        (
            &["overloaded", "gone", "third"],
            false,
            "overloaded=downtime, gone=downtime, third=ok",
            "hello from third",
        ),
        (
            &["refused", "fourth"],
            false,
            "refused=downtime, fourth=ok",
            "hello from fourth",
        ),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let (chain, streamed, expected, answer) = scenarios[i % scenarios.len()];
        let client = client.clone();
        let up = up.clone();
        tasks.spawn(async move {
            let request = json!({"model": chain[0], "models": &chain[1..], "stream": streamed});
            let res = post(&client, &up, &request.to_string()).await;
            assert_eq!(attempts(&res), expected);
            let text = res.text().await.unwrap();
            assert!(text.contains(answer), "{text}");
        });
    }
    assert_eq!(join_all(tasks).await, 400);
}

/// The middleware's caller gets the whole record: with the model asked cooling down, the next
/// one answers first, and `Attempts` still names the model asked and says it was passed over.
#[tokio::test]
async fn the_record_names_the_model_asked_and_the_models_passed_over() {
    let up = Upstream::start().await;
    up.set(
        "a",
        Behavior::Status(429, vec![("retry-after", "30")], "{}"),
    );
    let client = client(FallbackMiddleware::default().health(Arc::new(InMemoryHealth::new())));
    let res = post(&client, &up, &body("a", &["b"])).await;
    assert_eq!(attempts(&res), "a=rate_limited, b=ok");
    let res = post(&client, &up, &body("a", &["b"])).await;
    assert_eq!(attempts(&res), "b=ok");
    let record = res.extensions().get::<Attempts>().unwrap();
    assert_eq!(&*record.requested, "a");
    assert_eq!(record.passed_over, [Arc::<str>::from("a")]);
}

/// `require_json_body` is the middleware's too: a body the layer cannot route is answered by
/// the layer (and never sent), where it would otherwise go straight through.
#[tokio::test]
async fn with_require_json_body_the_middleware_refuses_a_body_it_cannot_route() {
    let up = Upstream::start().await;
    let client = client(FallbackMiddleware::default().require_json_body(true));
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "text/plain")
        .body("model=a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(res.url().as_str(), up.url(URL_PATH));
    assert_eq!(
        json_of(res).await["error"]["code"],
        "unsupported_media_type"
    );
    let res = client
        .post(up.url(URL_PATH))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(&b"\x1f\x8b"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(header(&res, "accept-encoding"), "identity");
    assert_eq!(
        json_of(res).await["error"]["code"],
        "unsupported_content_encoding"
    );
    let res = client.post(up.url(URL_PATH)).send().await.unwrap();
    assert_eq!(res.status(), 400, "no body");
    assert_eq!(json_of(res).await["error"]["code"], "invalid_json");
    assert!(up.received().is_empty(), "{:?}", up.received());
    // A JSON body is routed, and another method goes on as it came.
    let res = post(&client, &up, &body("a", &[])).await;
    assert_eq!(attempts(&res), "a=ok");
    let res = client.get(up.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.received().len(), 2);
}

/// The layer's options that the tests above do not set reach the middleware too:
/// `stream_timeout` classes a stream that says nothing as downtime, `first_byte_timeout` a body
/// that does not come, `keep_models` keeps `models` upstream, `classify_with` classes as it
/// says, and an empty `budget` stops the chain at its first failure.
#[tokio::test]
async fn the_other_options_of_the_layer_reach_the_middleware() {
    use tower::retry::budget::TpsBudget;
    use tower_llm_router::classify::{classify_fn, classify_response};
    use tower_llm_router::fallback::ClassSet;

    let up = Upstream::start().await;
    up.set("quiet", Behavior::StreamDelay(Duration::from_secs(60)));
    let streamed = r#"{"model":"quiet","models":["loud"],"stream":true,"messages":[]}"#;
    let quick = Duration::from_millis(300);
    let plain = r#"{"model":"quiet","models":["loud"],"messages":[]}"#;
    for (middleware, body) in [
        (
            FallbackMiddleware::default().stream_timeout(quick),
            streamed,
        ),
        (
            FallbackMiddleware::default().first_byte_timeout(quick),
            plain,
        ),
    ] {
        let res = post(&client(middleware), &up, body).await;
        assert_eq!(attempts(&res), "quiet=downtime, loud=ok", "{body}");
    }

    let kept = FallbackMiddleware::default().keep_models(true);
    post(&client(kept), &up, &body("a", &["b"])).await;
    let sent: Value = serde_json::from_slice(&up.received().last().unwrap().body).unwrap();
    assert_eq!(sent["models"], json!(["b"]));

    up.set(
        "missing",
        Behavior::Status(404, vec![], r#"{"error":{"message":"no such model"}}"#),
    );
    let only_downtime = ClassSet::none().with(ErrorClass::Downtime);
    let not_found_is_downtime = classify_fn(|status, headers, body| {
        if status == 404 {
            Some(ErrorClass::Downtime)
        } else {
            classify_response(status, headers, body)
        }
    });
    let classifying = FallbackMiddleware::default()
        .fallback_on(only_downtime)
        .classify_with(not_found_is_downtime);
    let client_with = |middleware| {
        ClientBuilder::new(reqwest::Client::new())
            .with(middleware)
            .build()
    };
    let res = post(&client_with(classifying), &up, &body("missing", &["b"])).await;
    assert_eq!(attempts(&res), "missing=downtime, b=ok");

    let empty = Arc::new(TpsBudget::new(Duration::from_secs(1), 0, 0.0));
    let budgeted = FallbackMiddleware::default().budget(empty);
    let res = post(&client(budgeted), &up, &body("missing", &["b"])).await;
    assert_eq!(res.status(), 404);
    assert_eq!(attempts(&res), "missing=other");
}

/// A reqwest client follows redirects: an upstream whose redirects never end (a loop, here a
/// 307 to its own URL) fails with reqwest's redirect error, classed `downtime` as a redirect
/// not followed is: the model is not reachable at its URL, and after `downtime_threshold` such
/// failures in a row it cools down. Before, the error was `other`, charged to no model.
#[tokio::test]
async fn a_redirect_loop_is_downtime_and_cools_its_model() {
    let up = Upstream::start().await;
    let url = up.url(URL_PATH);
    let location: &'static str = Box::leak(url.into_boxed_str());
    up.set(
        "loop",
        Behavior::Status(307, vec![("location", location)], ""),
    );
    let health = Arc::new(InMemoryHealth::new());
    let client = client(FallbackMiddleware::new(
        FallbackLayer::new().health(health.clone()),
    ));
    for _ in 0..3 {
        let res = post(&client, &up, &body("loop", &["b"])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(attempts(&res), "loop=downtime, b=ok");
    }
    let res = post(&client, &up, &body("loop", &["b"])).await;
    assert_eq!(
        attempts(&res),
        "b=ok",
        "`loop` is tried last while it cools"
    );
}
