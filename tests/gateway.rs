//! examples/gateway end to end over loopback: the gateway's app (built by the example's own
//! code) on 127.0.0.1:0, in front of scripted upstreams, driven by a hyper client and by the
//! official OpenAI Python SDK.

mod support;

include!("support/gateway_modules.rs");

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use support::{closed_port, raw_upstream, Behavior, LogBuf, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_llm_router::fallback::Retries;

/// How the gateway under test is served.
#[derive(Clone, Copy)]
enum Serving {
    /// As its `main` serves it: `app::serve_per_core`, here with two worker threads.
    PerCore,
    /// On the test's own runtime (`app::serve`), so that a test's thread-local tracing
    /// subscriber sees the gateway's logs.
    ThisRuntime,
    /// On the test's own runtime with this head timeout (`app::serve_with_timeouts`).
    HeadTimeout(Duration),
    /// On the test's own runtime with this body timeout (`app::serve_with_timeouts`).
    BodyTimeout(Duration),
}

/// A running gateway.
struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Cuts the drain short (`Serving::PerCore` only).
    cut: Option<oneshot::Sender<()>>,
    /// How `serve_per_core` ended, once it has (`Serving::PerCore` only).
    stopped: Arc<Mutex<Option<app::Stopped>>>,
    task: JoinHandle<io::Result<()>>,
}

impl Gateway {
    async fn start(config: &str) -> Gateway {
        Self::start_with(config, &[], None, Serving::PerCore).await
    }

    async fn start_with(
        config: &str,
        env: &[(&str, &str)],
        tls: Option<rustls::ClientConfig>,
        serving: Serving,
    ) -> Gateway {
        let config = config::Config::from_toml(config).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |name: &str| env.get(name).cloned();
        let tls = tls.unwrap_or_else(|| app::upstream_tls(&config).unwrap());
        let workers = match serving {
            Serving::PerCore => NonZeroUsize::new(2).unwrap(),
            Serving::ThisRuntime | Serving::HeadTimeout(_) | Serving::BodyTimeout(_) => {
                NonZeroUsize::MIN
            }
        };
        let apps = app::build_workers(&config, &lookup, tls, workers).unwrap();
        Self::serve(apps, serving)
    }

    fn serve(mut apps: Vec<app::App>, serving: Serving) -> Gateway {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let (cut, cut_when) = oneshot::channel::<()>();
        let how = Arc::new(Mutex::new(None));
        let task = match serving {
            Serving::PerCore => {
                let cut_when = async move {
                    if cut_when.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let how = Arc::clone(&how);
                tokio::spawn(async move {
                    let stopped = app::serve_per_core(listener, apps, stopped, cut_when).await?;
                    *how.lock().unwrap() = Some(stopped);
                    Ok(())
                })
            }
            Serving::ThisRuntime | Serving::HeadTimeout(_) | Serving::BodyTimeout(_) => {
                listener.set_nonblocking(true).unwrap();
                let listener = TcpListener::from_std(listener).unwrap();
                let app = apps.pop().unwrap();
                match serving {
                    Serving::HeadTimeout(head) => tokio::spawn(app::serve_with_timeouts(
                        listener,
                        app,
                        stopped,
                        head,
                        Duration::from_secs(60),
                    )),
                    Serving::BodyTimeout(body) => tokio::spawn(app::serve_with_timeouts(
                        listener,
                        app,
                        stopped,
                        Duration::from_secs(30),
                        body,
                    )),
                    _ => tokio::spawn(app::serve(listener, app, stopped)),
                }
            }
        };
        Gateway {
            addr,
            stop: Some(stop),
            cut: Some(cut),
            stopped: how,
            task,
        }
    }

    /// Shuts down with requests in flight, which the drain waits for, then cuts the drain
    /// (`Serving::PerCore` only): the server ends at once.
    async fn stop_then_cut(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!self.task.is_finished(), "the drain waits for the request");
        self.cut.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("a cut drain ends the server at once")
            .unwrap()
            .unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn post(&self, body: &str) -> Response<Incoming> {
        self.post_with(body, &[]).await
    }

    async fn post_with(&self, body: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        self.post_to_with("/v1/chat/completions", body, headers)
            .await
    }

    async fn post_to(&self, path: &str, body: &str) -> Response<Incoming> {
        self.post_to_with(path, body, &[]).await
    }

    async fn post_to_with(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("POST", path, &all, body).await
    }

    /// A request with these headers only (no `Content-Type` unless given) and body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        client()
            .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = client()
            .request(Request::get(self.url(path)).body(Full::default()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        (status, text(res).await)
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn text(res: Response<Incoming>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn header(res: &Response<Incoming>, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn chat(model: &str, models: &[&str]) -> String {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if !models.is_empty() {
        body["models"] = json!(models);
    }
    body.to_string()
}

/// A configuration in front of `up`: two catalog models and a default chain.
fn config_for(up: &Upstream, extra: &str) -> String {
    format!(
        r#"
upstream = "http://{}/v1"
{extra}
[[models]]
id = "primary"
context_window = 128000
input_price = 2.5
output_price = 10.0
capabilities = ["vision", "tools"]

[[models]]
id = "backup"
context_window = 128000
input_price = 0.15
output_price = 0.6

[fallback]
models = ["backup"]
"#,
        up.addr
    )
}

/// What reads OpenRouter's list (the crate's own loader among them) finds the capabilities,
/// window and output limit the gateway is configured with: the list did not say them, so
/// the loader read every model as text only, without tools or structured output.
#[tokio::test]
async fn the_models_list_round_trips_capabilities_through_the_openrouter_loader() {
    use tower_llm_router::auto_route::{Capabilities, Catalog, ModelProfile};
    let up = Upstream::start().await;
    let config = format!(
        r#"
upstream = "http://{}"

[[models]]
id = "vendor/all"
context_window = 200000
input_price = 3.0
output_price = 15.0
capabilities = ["vision", "audio", "video", "file", "tools", "structured_output"]
max_output_tokens = 64000

[[models]]
id = "vendor/seeing"
context_window = 128000
input_price = 2.5
output_price = 10.0
capabilities = ["vision", "tools"]

[[models]]
id = "vendor/text"
input_price = 0.1
output_price = 0.4
"#,
        up.addr
    );
    let gw = Gateway::start(&config).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    // As OpenRouter writes them.
    let all = &list["data"][1];
    assert_eq!(all["id"], "vendor/all");
    assert_eq!(all["top_provider"]["max_completion_tokens"], 64000);
    assert_eq!(all["top_provider"]["context_length"], 200000);
    assert_eq!(all["architecture"]["output_modalities"], json!(["text"]));
    let seeing = &list["data"][2];
    assert_eq!(
        seeing["architecture"]["input_modalities"],
        json!(["text", "image"])
    );
    assert_eq!(
        seeing["supported_parameters"],
        json!(["tools", "tool_choice"])
    );

    let read = Catalog::from_openrouter_models_json(body.as_bytes()).unwrap();
    // The prices to a part in a billion (per token, then per million again: rounding noise).
    let priced_as = |m: &ModelProfile| ModelProfile {
        input_price: (m.input_price * 1e9).round() / 1e9,
        output_price: (m.output_price * 1e9).round() / 1e9,
        ..m.clone()
    };
    let read: Vec<ModelProfile> = read.models().iter().map(priced_as).collect();
    let want = [
        ModelProfile::new("vendor/all", 200_000, 3.0, 15.0)
            .with_capabilities(Capabilities::ALL)
            .with_max_output_tokens(64_000),
        ModelProfile::new("vendor/seeing", 128_000, 2.5, 10.0).with_capabilities(Capabilities {
            vision: true,
            tools: true,
            ..Capabilities::default()
        }),
        ModelProfile::new("vendor/text", 0, 0.1, 0.4),
    ];
    assert_eq!(read, want);
}

#[tokio::test]
async fn lists_models_and_answers_healthz() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;

    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["auto", "primary", "backup"]);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));
    assert_eq!(list["data"][1]["context_length"], 128000);
    // OpenRouter's pricing: USD per token as decimal strings, `-1` (variable) for the router.
    assert_eq!(
        list["data"][2]["pricing"],
        json!({"prompt": "0.00000015", "completion": "0.0000006"})
    );
    assert_eq!(list["data"][0]["pricing"]["prompt"], "-1");
    // What reads OpenRouter's list (the auto router's own catalog loader) reads it back.
    let catalog =
        tower_llm_router::auto_route::Catalog::from_openrouter_models_json(body.as_bytes())
            .unwrap();
    let read: Vec<(&str, String, String)> = catalog
        .models()
        .iter()
        .map(|m| {
            let price = |p: f64| format!("{p:.6}");
            (&*m.id, price(m.input_price), price(m.output_price))
        })
        .collect();
    let price = |p: &str| p.to_owned();
    assert_eq!(
        read,
        [
            ("primary", price("2.500000"), price("10.000000")),
            ("backup", price("0.150000"), price("0.600000"))
        ]
    );

    let (status, body) = gw.get("/healthz").await;
    assert_eq!((status, body.trim()), (StatusCode::OK, "ok"));

    // The chat path with another method: the router's 405 (only POST goes to the stack).
    let res = client()
        .request(
            Request::get(gw.url("/v1/chat/completions"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(header(&res, "content-type"), "application/json");
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // And on the local routes.
    let res = gw.post_to("/v1/models", "{}").await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET,HEAD");
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let (status, body) = gw.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    assert!(
        up.received().is_empty(),
        "no upstream call for local routes"
    );
}

/// `GET /v1/models/{id}` (OpenAI's "retrieve model", `client.models.retrieve`) answers the
/// list's own object for the model, ids with slashes included (the SDKs do not escape them),
/// and OpenAI's 404 for one it does not know.
#[tokio::test]
async fn retrieves_one_model_by_its_id() {
    let up = Upstream::start().await;
    let extra = "[[models]]\nid = \"vendor/slashed-model\"\ncontext_window = 32000\n";
    let gw = Gateway::start(&format!("{}{extra}", config_for(&up, ""))).await;
    let (_, list) = gw.get("/v1/models").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    for listed in list["data"].as_array().unwrap() {
        let id = listed["id"].as_str().unwrap();
        let (status, body) = gw.get(&format!("/v1/models/{id}")).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), *listed);
    }
    let (status, body) = gw.get("/v1/models/vendor%2Fslashed-model").await;
    assert_eq!(status, 200, "an escaped slash: {body}");
    let (status, body) = gw.get("/v1/models/no-such-model").await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "model_not_found", "{body}");
    assert_eq!(error["error"]["param"], "model", "{body}");
    assert!(
        up.received().is_empty(),
        "no upstream call for local routes"
    );
}

/// An id that is not UTF-8 once its escapes are decoded (`%FF`) names no model: OpenAI's 404
/// in JSON, like any unknown id, not axum's plain-text 400 for a path it cannot decode.
#[tokio::test]
async fn retrieving_a_model_whose_id_is_not_utf8_is_a_json_404() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    for path in [
        "/v1/models/%FF",
        "/v1/models/vendor%2F%C3",
        "/v1/models/a/%FE%FF",
    ] {
        let (status, body) = gw.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(error["error"]["code"], "model_not_found", "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
}

/// A model without `input_price` / `output_price` has an unknown price, not a zero one: `auto`
/// does not choose it, `/v1/models` lists it without `pricing` (so OpenRouter's readers leave
/// it out), `auto.candidates` may not name it, and startup says so. It was listed, and
/// chosen, as a free model.
#[tokio::test]
async fn a_model_without_a_price_is_not_a_free_one() {
    let up = Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\n[[models]]\nid = \"unpriced\"\ncontext_window = 128000\n\
         [[models]]\nid = \"priced\"\ncontext_window = 128000\ninput_price = 5.0\n\
         output_price = 20.0\n",
        up.addr
    );
    let gw = Gateway::start(&config).await;
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "priced");
    let (_, list) = gw.get("/v1/models").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let unpriced = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "unpriced");
    assert!(unpriced.unwrap().get("pricing").is_none(), "{list}");
    let catalog = tower_llm_router::auto_route::Catalog::from_openrouter_models_json(
        list.to_string().as_bytes(),
    )
    .unwrap();
    assert!(catalog.get("unpriced").is_none() && catalog.get("priced").is_some());

    let error = startup_error(&format!("{config}[auto]\ncandidates = [\"unpriced\"]\n"));
    assert!(
        error.contains("unpriced") && error.contains("input_price"),
        "{error}"
    );
    let notes = config::Config::from_toml(&config).unwrap().model_notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("auto does not choose: \"unpriced\"")),
        "{notes:?}"
    );
}

/// A `fallback.models` entry that names no `[[models]]` entry goes to the default upstream as
/// named: startup says so, since a misspelt id there fails only when a primary does.
#[test]
fn a_fallback_that_names_no_configured_model_is_told_at_startup() {
    let config = "[[models]]\nid = \"gpt-4o\"\ninput_price = 2.5\noutput_price = 10.0\n\
                  [fallback]\nmodels = [\"gpt-4o\", \"gpt-4o-mni\"]\n";
    let notes = config::Config::from_toml(config).unwrap().model_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("\"gpt-4o-mni\"") && notes[0].contains("default upstream"));
    // Without a catalog every model goes to the default upstream: nothing to tell.
    let bare = config::Config::from_toml("[fallback]\nmodels = [\"x\"]\n").unwrap();
    assert!(bare.model_notes().is_empty());
}

/// The startup warnings quote and escape what they name from the file, as the startup line
/// does: a newline or control character in a model id, the upstream or `listen` cannot forge a
/// log line.
#[test]
fn the_startup_warnings_escape_what_they_quote_from_the_file() {
    let config = config::Config::from_toml(
        "upstream = \"http://up\\nWARN forged\"\n\
         [[models]]\nid = \"unpriced\\n2026-01-01T00:00:00Z INFO forged \\u001b[2J\"\n\
         [fallback]\nmodels = [\"elsewhere\\r\\nINFO forged\"]\n",
    )
    .unwrap();
    let notes = config.model_notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].ends_with(
            r#"auto does not choose: "unpriced\n2026-01-01T00:00:00Z INFO forged \u{1b}[2J""#
        ),
        "{notes:?}"
    );
    assert!(
        notes[1].contains(r#""elsewhere\r\nINFO forged""#),
        "{notes:?}"
    );
    assert!(
        notes[1].contains(r#"("http://up\nWARN forged")"#),
        "{notes:?}"
    );
    let exposed = config::Config::from_toml(
        "listen = \"0.0.0.0:80\\nINFO forged\"\napi_key_env = \"OPENROUTER_API_KEY\"\n",
    )
    .unwrap()
    .exposure_warning()
    .unwrap();
    for note in notes.iter().chain([&exposed]) {
        assert!(!note.chars().any(char::is_control), "{note:?}");
    }
}

/// Without a catalog (`--upstream` alone) there is nothing for `auto` to choose from (its
/// requests are answered 500): `/v1/models` does not offer it.
#[tokio::test]
async fn without_models_the_auto_model_is_not_listed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("upstream = \"http://{}/v1\"", up.addr)).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["data"], json!([]), "{body}");
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 500);
}

/// The auto model is listed only when `auto` has a model to choose: one that `allow_models`
/// allows and that has a price. Models without (an unpriced one, a priced one the list
/// refuses) are no such model, and the auto model's every request would be a 500.
#[tokio::test]
async fn without_a_priced_allowed_model_the_auto_model_is_not_listed() {
    let up = Upstream::start().await;
    let config = format!(
        "upstream = \"http://{}/v1\"\nallow_models = [\"unpriced\"]\n\
         [[models]]\nid = \"unpriced\"\ncontext_window = 128000\n\
         [[models]]\nid = \"priced\"\ncontext_window = 128000\ninput_price = 5.0\n\
         output_price = 20.0\n",
        up.addr
    );
    let gw = Gateway::start(&config).await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(list["data"][0]["id"], "unpriced", "{body}");
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 500);
}

/// Prices per million tokens become OpenRouter's per-token decimal strings, digit for digit.
#[test]
fn prices_are_listed_per_token_as_openrouter_writes_them() {
    for (per_million, per_token) in [
        (0.0, "0"),
        (0.15, "0.00000015"),
        (2.5, "0.0000025"),
        (10.0, "0.00001"),
        (100.0, "0.0001"),
        (0.000001, "0.000000000001"),
        (3_000_000.0, "3"),
        (1_234_567.5, "1.2345675"),
    ] {
        assert_eq!(app::per_token(per_million), per_token, "{per_million}");
    }
}

/// In front of an upstream where `primary` is rate limited (`Retry-After: 7`), a request to
/// `path` (its body `body_of(model, models)`) falls back to the model in its `models`, every
/// attempt at `path` with the client's body less `models`; then, `primary` cooling down, one
/// without `models` goes to the configured chain's `backup` first.
async fn falls_back_at(path: &str, body_of: fn(&str, &[&str]) -> String) -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    up.set(
        "primary",
        Behavior::Status(
            429,
            vec![("retry-after", "7")],
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        ),
    );
    let gw = Gateway::start(&config_for(&up, "")).await;

    // `models` in the body.
    let sent_by_client = body_of("primary", &["other"]);
    let res = gw.post_to(path, &sent_by_client).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "other");
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "primary=rate_limited, other=ok"
    );
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["model"], "other");
    let received = up.received();
    assert_eq!(up.models_received(), ["primary", "other"]);
    assert!(received.iter().all(|r| r.path == path), "{received:?}");
    // What went upstream is the client's body but for `models` (not sent) and `model`.
    let mut expected: Value = serde_json::from_str(&sent_by_client).unwrap();
    expected.as_object_mut().unwrap().remove("models");
    expected["model"] = json!("other");
    let sent: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(sent, expected);

    // No `models`: the configured chain. `primary` is cooling down now (Retry-After), so
    // `backup` goes first.
    let res = gw.post_to(path, &body_of("primary", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-attempts"), "backup=ok");
    (up, gw)
}

#[tokio::test]
async fn falls_back_through_the_gateway_with_headers() {
    let (up, gw) = falls_back_at("/v1/chat/completions", chat).await;

    // The last model's error comes back unchanged, Retry-After included.
    up.set(
        "backup",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let res = gw.post(&chat("backup", &["primary"])).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "7");
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "backup=downtime, primary=rate_limited"
    );
}

#[tokio::test]
async fn auto_picks_a_catalog_model() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 200);
    let served = header(&res, "x-llm-router-model");
    assert!(["primary", "backup"].contains(&served.as_str()), "{served}");
    assert_eq!(up.models_received(), [served]);
}

/// The log line's `model` is the model the client asked for: for an auto request, the id it
/// sent (`openrouter/auto` is accepted beside the configured `[auto] model`).
#[tokio::test]
async fn the_log_line_names_the_auto_id_the_client_sent() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    let config = config_for(&up, "");
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    for model in ["openrouter/auto", "auto"] {
        let res = gw.post(&chat(model, &[])).await;
        assert_eq!(res.status(), 200);
        text(res).await;
    }
    let logged = logs.text();
    let asked: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("chat completion"))
        .filter_map(|l| l.split(" model=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(asked, [r#""openrouter/auto""#, r#""auto""#], "{logged}");
}

#[tokio::test]
async fn streams_pass_through_as_they_arrive() {
    let up = Upstream::start().await;
    up.set("primary", Behavior::Status(503, vec![], "{}"));
    up.set("endless", Behavior::StreamForever);
    let gw = Gateway::start(&config_for(&up, "")).await;

    let body = json!({"model": "primary", "models": ["endless"], "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = gw.post(&body.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/event-stream");
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "primary=downtime, endless=ok"
    );
    // The upstream never ends its stream: events can only arrive if nothing buffers it.
    let mut body = res.into_body();
    let mut seen = String::new();
    while seen.matches("data: ").count() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(seen.contains("chat.completion.chunk"), "{seen}");
}

/// A Responses API body (`client.responses.create`), as the OpenAI SDK sends it.
fn responses_body(model: &str, models: &[&str]) -> String {
    let mut body = json!({"model": model, "input": "Say hello.",
        "instructions": "Be brief.", "max_output_tokens": 64});
    if !models.is_empty() {
        body["models"] = json!(models);
    }
    body.to_string()
}

/// `POST /v1/responses` goes through the routing stack to each upstream's base URL +
/// `/responses` (as chat's goes to `/chat/completions`), the body as the client sent it, the
/// answer back as the upstream wrote it; and it is counted under the model that answered.
#[tokio::test]
async fn the_responses_api_reaches_the_upstreams_responses_path_unchanged() {
    let up = Upstream::start().await;
    // A base URL with a prefix of its own: the path is the base's, not the client's.
    let config = config_for(&up, "").replace("/v1\"", "/api/openai\"");
    let gw = Gateway::start(&config).await;
    let body = responses_body("primary", &[]);
    let res = gw.post_to("/v1/responses", &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "primary");
    assert_eq!(header(&res, "x-llm-router-attempts"), "primary=ok");
    assert_eq!(text(res).await, support::response_object("primary"));
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, http::Method::POST);
    assert_eq!(received[0].path, "/api/openai/responses");
    assert_eq!(received[0].body, body.as_bytes());

    let (_, metrics) = gw.get("/metrics").await;
    let ok = r#"llm_gateway_requests_total{model="primary",outcome="ok"}"#;
    assert_eq!(metric(&metrics, ok), 1.0, "{metrics}");
}

/// A Responses API request falls back as a chat completion does: `models` in the body first,
/// then the configured chain; every attempt goes to `/v1/responses`.
#[tokio::test]
async fn a_failing_responses_request_falls_back_to_the_next_model() {
    falls_back_at("/v1/responses", responses_body).await;
}

/// `"model": "auto"` with the Responses API's `input` is routed: the upstream gets a model of
/// the catalog, at `/v1/responses`, and a prompt that needs vision goes to the vision model.
#[tokio::test]
async fn an_auto_responses_request_is_routed_from_its_input() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    let res = gw
        .post_to("/v1/responses", &responses_body("auto", &[]))
        .await;
    assert_eq!(res.status(), 200);
    let served = header(&res, "x-llm-router-model");
    assert!(["primary", "backup"].contains(&served.as_str()), "{served}");
    text(res).await;

    // Only `primary` takes images.
    let image = json!({"model": "auto", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]});
    let res = gw.post_to("/v1/responses", &image.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "primary");
    text(res).await;
    assert_eq!(up.models_received(), [served, "primary".to_owned()]);
    assert!(up.received().iter().all(|r| r.path == "/v1/responses"));
}

/// A Responses API stream as OpenAI writes it: named events, no `[DONE]`.
const RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"responder\",\"error\":null,\"output\":[]}}\n\n",
    "event: response.in_progress\n",
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"responder\",\"error\":null,\"output\":[]}}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"hello \"}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"from responder\"}\n\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"responder\",\"error\":null,\"output\":[{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"hello from responder\",\"annotations\":[]}]}]}}\n\n",
);

/// A streamed Responses API answer, after a failed first model, reaches the client whole, and
/// is logged (at its end) as a Responses API request, told apart from chat completions.
#[tokio::test]
async fn a_streamed_responses_answer_passes_through_whole() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    up.set("primary", Behavior::Status(503, vec![], "{}"));
    up.set("responder", Behavior::StreamRaw(RESPONSES_STREAM));
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, Serving::ThisRuntime).await;
    let body = json!({"model": "primary", "models": ["responder"], "stream": true,
        "input": "hi"});
    let res = gw.post_to("/v1/responses", &body.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/event-stream");
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "primary=downtime, responder=ok"
    );
    assert_eq!(text(res).await, RESPONSES_STREAM);
    assert!(up.received().iter().all(|r| r.path == "/v1/responses"));

    let res = gw.post(&chat("backup", &[])).await;
    assert_eq!(res.status(), 200);
    text(res).await;
    // The lines of routed requests, whichever API: they have a `status`.
    let lines = lines_with(&logs, " status=", 2).await;
    let logged = lines.join("\n");
    assert_eq!(lines.len(), 2, "{logged}");
    assert!(lines[0].contains("responses request"), "{logged}");
    assert!(!lines[0].contains("chat completion"), "{logged}");
    assert!(lines[0].contains(r#"served="responder""#), "{logged}");
    assert!(lines[0].contains("outcome=\"ok\""), "{logged}");
    assert!(lines[1].contains("chat completion"), "{logged}");
    assert!(!lines[1].contains("responses request"), "{logged}");
}

/// A request the layers (or the gateway) refuse themselves is logged with the code of their
/// answer (`error`), which names no model and tried none: the line said only `status=400`.
/// An upstream's own error, passed on, has no such field (its class is in `attempts`).
#[tokio::test]
async fn a_refused_request_is_logged_with_the_code_of_its_answer() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    for model in ["primary", "backup"] {
        up.set(model, Behavior::Status(429, vec![], "{}"));
    }
    let config = config_for(&up, "allow_models = [\"primary\", \"backup\"]");
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    let res = gw.post(&chat("elsewhere", &[])).await;
    assert_eq!(res.status(), 400);
    text(res).await;
    let res = gw.post(&chat("primary", &[])).await;
    assert_eq!(res.status(), 429);
    text(res).await;

    let lines = lines_with(&logs, " status=", 2).await;
    let logged = lines.join("\n");
    assert!(lines[0].contains("status=400"), "{logged}");
    assert!(
        lines[0].contains(r#"error="model_not_allowed""#),
        "{logged}"
    );
    assert!(lines[1].contains("status=429"), "{logged}");
    assert!(!lines[1].contains("error="), "{logged}");
}

/// The Responses route is the chat route's stack: the same refusals (a body that is not JSON,
/// a model outside `allow_models`), the same JSON 405 for another method, and the 404 names it.
#[tokio::test]
async fn the_responses_route_refuses_what_the_chat_route_refuses() {
    let up = Upstream::start().await;
    let config = config_for(&up, "allow_models = [\"primary\", \"backup\"]");
    let gw = Gateway::start(&config).await;
    let res = gw
        .send(
            "POST",
            "/v1/responses",
            &[("content-type", "text/plain")],
            &responses_body("primary", &[]),
        )
        .await;
    assert_eq!(res.status(), 415);
    let error: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(error["error"]["code"], "unsupported_media_type");

    let res = gw
        .post_to("/v1/responses", &responses_body("elsewhere", &[]))
        .await;
    assert_eq!(res.status(), 400);
    let error: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(error["error"]["code"], "model_not_allowed");
    assert!(up.received().is_empty());

    let res = gw.send("GET", "/v1/responses", &[], "").await;
    assert_eq!(res.status(), 405);
    assert_eq!(header(&res, "allow"), "POST");
    let error: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(error["error"]["code"], "method_not_allowed");

    let (status, body) = gw.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(body.contains("POST /v1/responses"), "{body}");
}

#[tokio::test]
async fn a_final_transport_failure_is_a_502_json_error() {
    let refused = closed_port().await;
    let config = format!("upstream = \"http://{refused}/v1\"\n[fallback]\nmodels = [\"second\"]\n");
    let gw = Gateway::start(&config).await;
    let res = gw.post(&chat("first", &[])).await;
    assert_eq!(res.status(), 502);
    assert_eq!(header(&res, "content-type"), "application/json");
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(body["error"]["type"], "server_error");
    assert_says_connection_refused(&body, "the model `second` could not be reached: ");

    // One the layers pass through (no model): the gateway's own 502, of the same shape.
    let res = gw.post(r#"{"messages": []}"#).await;
    assert_eq!(res.status(), 502);
    assert_eq!(header(&res, "content-type"), "application/json");
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(body["error"]["type"], "server_error");
    assert_says_connection_refused(&body, "no upstream answered: ");
}

/// `[fallback] retries`: a model that fails once with a 503 answers its own request, and the
/// retry is counted as a retry (`llm_gateway_retries_total`), not as a fallback.
#[tokio::test]
async fn a_configured_retry_lets_the_model_asked_answer() {
    let up = Upstream::start().await;
    up.set(
        "primary",
        Behavior::FirstThen(
            1,
            Box::new(Behavior::Status(
                503,
                vec![],
                r#"{"error":{"message":"busy"}}"#,
            )),
            Box::new(Behavior::Ok),
        ),
    );
    let config = format!(
        "upstream = \"http://{}/v1\"\n[fallback]\nmodels = [\"backup\"]\nretries = 1\n\
         retry_backoff = 0.01\n",
        up.addr
    );
    let gw = Gateway::start(&config).await;
    let res = gw.post(&chat("primary", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "primary=downtime, primary=ok"
    );
    text(res).await;
    assert_eq!(up.models_received(), ["primary", "primary"]);
    let (_, metrics) = gw.get("/metrics").await;
    let fallbacks = r#"llm_gateway_fallbacks_total{class="downtime"}"#;
    assert_eq!(metric(&metrics, fallbacks), 0.0);
    let retries = r#"llm_gateway_retries_total{class="downtime"}"#;
    assert_eq!(metric(&metrics, retries), 1.0);
}

/// The message of a 502 says why the upstream was not reached, under hyper-util's "client
/// error (Connect)": the connector's error and the socket's, as the OS words it.
fn assert_says_connection_refused(body: &Value, before: &str) {
    let message = body["error"]["message"].as_str().unwrap();
    let (client, os) = message
        .split_once("tcp connect error: ")
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(client, format!("{before}client error (Connect): "));
    assert!(os.starts_with("Connection refused (os error "), "{message}");
}

/// A request whose every model is unreachable gets its 502 with the `x-llm-router-*` headers
/// of the models tried, and is counted and logged under them: the fallback it took too.
#[tokio::test]
async fn a_final_transport_failure_says_which_models_were_tried() {
    let (logs, _guard) = LogBuf::capture();
    let refused = closed_port().await;
    let config = format!(
        "upstream = \"http://{refused}/v1\"\n[[models]]\nid = \"first\"\n\
         [fallback]\nmodels = [\"second\"]\n"
    );
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    let res = gw.post(&chat("first", &[])).await;
    assert_eq!(res.status(), 502);
    assert_eq!(header(&res, "x-llm-router-model"), "second");
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "first=downtime, second=downtime"
    );
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");

    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(
        metric(&metrics, r#"llm_gateway_fallbacks_total{class="downtime"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"llm_gateway_requests_total{model="other",outcome="transport_error"}"#
        ),
        1.0,
        "{metrics}"
    );
    let logged = logs.text();
    let line = logged
        .lines()
        .find(|l| l.contains("chat completion"))
        .unwrap();
    assert!(
        line.contains(r#"model="first" attempts="first=downtime, second=downtime""#)
            && line.contains("status=502"),
        "{line}"
    );
    // No model answered: none served the answer (it named the last one tried).
    assert!(line.contains(r#"served="-""#), "{line}");
    // And why, for each model: the cause under hyper-util's "client error (Connect)".
    for model in ["first", "second"] {
        let failed = logged
            .lines()
            .find(|l| {
                l.contains("upstream call failed") && l.contains(&format!("model=\"{model}\""))
            })
            .unwrap_or_else(|| panic!("no line for {model}: {logged}"));
        assert!(failed.contains("Connection refused"), "{failed}");
    }
}

/// Reads what comes until the peer leaves.
async fn read_to_end(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// An upstream that accepts connections, reads what comes and never answers.
async fn silent_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move { read_to_end(&mut stream).await }).await
}

/// The gateway's answer to `body`, failing if it takes over 10 s (without timeouts, never).
async fn post_within_10s(gw: &Gateway, body: &str) -> Response<Incoming> {
    tokio::time::timeout(Duration::from_secs(10), gw.post(body))
        .await
        .expect("the gateway answers within 10 s")
}

/// A client that leaves before its answer (an SDK timeout, a closed tab) still gets its log
/// line and is counted (`outcome="cancelled"`) under the model it asked; it is not in the
/// latency histogram, which times response heads.
#[tokio::test]
async fn a_request_the_client_left_is_logged_and_counted() {
    let body = chat("silent", &[]);
    a_request_left_is_logged_and_counted("/v1/chat/completions", &body, "chat completion").await;
}

/// A Responses API request its client left is logged as one (not as a chat completion) and
/// counted as a chat completion is.
#[tokio::test]
async fn a_responses_request_the_client_left_is_logged_as_one() {
    let body = responses_body("silent", &[]);
    a_request_left_is_logged_and_counted("/v1/responses", &body, "responses request").await;
}

/// An `auto` request its client left is logged under the model it asked, `auto`, as its line
/// would be had it been answered (it named the model the router chose); it is counted under
/// that model (the metrics count configured models).
#[tokio::test]
async fn an_auto_request_the_client_left_is_logged_under_auto() {
    let body = chat("auto", &[]);
    a_request_left_is_logged_and_counted_as(
        "/v1/chat/completions",
        &body,
        "chat completion",
        "auto",
    )
    .await;
}

/// Sends `body` to `path` in front of a silent upstream, leaves after 300 ms, and checks the
/// line (`{what}: the client left before the answer`) and the count.
async fn a_request_left_is_logged_and_counted(path: &str, body: &str, what: &str) {
    a_request_left_is_logged_and_counted_as(path, body, what, "silent").await;
}

/// [`a_request_left_is_logged_and_counted`], the request asking `asked`.
async fn a_request_left_is_logged_and_counted_as(path: &str, body: &str, what: &str, asked: &str) {
    let (logs, _guard) = LogBuf::capture();
    let silent = silent_upstream().await;
    let config = format!(
        "[[models]]\nid = \"silent\"\nupstream = \"http://{silent}/v1\"\ninput_price = 1.0\noutput_price = 2.0\n"
    );
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    let left = tokio::time::timeout(Duration::from_millis(300), gw.post_to(path, body));
    assert!(left.await.is_err(), "the silent upstream answered");

    let mut logged = String::new();
    for _ in 0..50 {
        logged = logs.text();
        if logged.contains("the client left") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = logged
        .lines()
        .find(|l| l.contains("the client left"))
        .unwrap_or_else(|| panic!("no line for the request: {logged}"));
    let said = format!("{what}: the client left before the answer");
    assert!(line.contains(&said), "{line}");
    // The model asked, though none answered.
    assert!(line.contains(&format!("model=\"{asked}\"")), "{line}");
    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"llm_gateway_requests_total{model="silent",outcome="cancelled"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "llm_gateway_request_duration_seconds_count"),
        0.0
    );
}

/// A client whose body stalls gets a 408, whether its body is typed JSON or untyped (both read
/// by the layers): the stall is the client's, not an upstream that could not be reached (it
/// was a 502 for a body passed on as it came). A body of another type is no longer passed on
/// (`every_chat_body_is_held_to_the_limit_and_must_be_json`): it is refused with a 415 before
/// it is read, so its stall is never waited for.
#[tokio::test]
async fn a_stalled_request_body_is_a_408_even_passed_through() {
    let up = Upstream::start().await;
    let serving = Serving::BodyTimeout(Duration::from_millis(200));
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, serving).await;
    for (content_type, status) in [
        ("content-type: application/json\r\n", "408"),
        ("", "408"),
        ("content-type: text/plain\r\n", "415"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
             {content_type}content-length: 100\r\n\r\n{{\"model\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{content_type}: {answer}"
        );
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let code = if status == "408" {
            "request_timeout"
        } else {
            "unsupported_media_type"
        };
        assert_eq!(body["error"]["code"], code, "{answer}");
    }
    assert!(up.received().is_empty());
}

/// Reads one `Content-Length` framed answer from a raw socket: its status line and JSON body.
async fn read_framed_answer(stream: &mut tokio::net::TcpStream) -> (String, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("a content-length");
                if buf.len() >= end + 4 + length {
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap();
                    let status = head.lines().next().unwrap_or_default().to_owned();
                    return (status, body);
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s")
}

/// Without `max_body_bytes`, the chat route takes bodies of up to 32 MiB (33554432 bytes), as
/// the README's table says: a declared length one byte over is a 413 before any body byte, and
/// one of exactly the limit is waited for (here it stalls: a 408 after the body timeout).
#[tokio::test]
async fn the_default_body_limit_is_32_mib() {
    let up = Upstream::start().await;
    let serving = Serving::BodyTimeout(Duration::from_millis(200));
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, serving).await;
    for (length, status, code) in [
        (33_554_433, "HTTP/1.1 413", "request_too_large"),
        (33_554_432, "HTTP/1.1 408", "request_timeout"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
             content-type: application/json\r\ncontent-length: {length}\r\n\r\n{{\"model\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (status_line, body) = read_framed_answer(&mut stream).await;
        assert!(
            status_line.starts_with(status),
            "{length}: {status_line} {body}"
        );
        assert_eq!(body["error"]["code"], code, "{length}: {body}");
        if code == "request_too_large" {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("33554432"), "{message}");
        }
    }
    assert!(up.received().is_empty());
}

/// The command line as `--help` tells it: `--config PATH`, `--listen ADDR` and
/// `--upstream URL` (each also as `--flag=VALUE`), the last two over the file's values; `-h` /
/// `--help` asks for the usage (printed, exit 0), anything else is an error naming it.
#[test]
fn the_command_line_overrides_the_file() {
    let parse = |line: &[&str]| args::parse_args(line.iter().map(|arg| (*arg).to_owned()));
    for help in ["-h", "--help"] {
        assert_eq!(parse(&[help]).unwrap_err(), "", "{help}");
    }
    assert_eq!(
        parse(&["--port", "1"]).unwrap_err(),
        r#"unknown argument "--port""#
    );
    assert_eq!(parse(&["--listen"]).unwrap_err(), "--listen needs a value");
    let line = [
        "--config",
        "gw.toml",
        "--listen=0.0.0.0:9000",
        "--upstream",
        "http://cli/v1",
    ];
    let args = parse(&line).unwrap();
    assert_eq!(args.config.as_deref(), Some("gw.toml"));
    let file = "listen = \"127.0.0.1:1\"\nupstream = \"http://file/v1\"\n";
    let mut config = config::Config::from_toml(file).unwrap();
    args.override_file(&mut config);
    assert_eq!(
        (config.listen.as_str(), config.upstream.as_str()),
        ("0.0.0.0:9000", "http://cli/v1")
    );
    // Without the flags, the file's values stay.
    let mut config = config::Config::from_toml(file).unwrap();
    parse(&["--config", "gw.toml"])
        .unwrap()
        .override_file(&mut config);
    assert_eq!(config.listen, "127.0.0.1:1");
    for usage in [
        "--config PATH",
        "--listen ADDR",
        "--upstream URL",
        "127.0.0.1:8080",
    ] {
        assert!(args::USAGE.contains(usage), "{usage}");
    }
}

/// An empty configuration file has the defaults the README's table and
/// `gateway.example.toml` give.
#[test]
fn an_empty_configuration_has_the_documented_defaults() {
    let config = config::Config::from_toml("").unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080");
    assert_eq!(config.upstream, "https://openrouter.ai/api/v1");
    assert_eq!(config.api_key_env, None);
    assert_eq!(config.client_keys_env, None);
    assert_eq!(config.allow_models, None);
    assert!(config.models.is_empty());
    assert!(config.fallback.models.is_empty());
    // Unset: the layer's own default, 4 models.
    assert_eq!(config.fallback.max_models, None);
    // No retries.
    assert_eq!(config.fallback.retries().unwrap(), Retries::none());
    assert_eq!(config.auto.model, "auto");
    assert!(config.auto.candidates.is_empty());
    // Session affinity off: nothing remembered.
    assert!(!config.auto.session_affinity);
    assert_eq!(config.auto.affinity().unwrap(), None);
    let seconds = |d: Duration| d.as_secs_f64();
    let [connect, headers, first_byte, stream, idle] = config.timeouts.durations().unwrap();
    assert_eq!(
        [connect, headers, first_byte, stream, idle].map(seconds),
        [10.0, 300.0, 300.0, 60.0, 120.0]
    );
    let request_body = config.timeouts.request_body_limit().unwrap();
    assert_eq!(seconds(request_body), 60.0);
    assert_eq!(config.timeouts.drain_limit().unwrap(), None);
}

/// A model whose upstream accepts the request and stays silent (no headers), or sends headers
/// and then no event, is left after `[timeouts]` for the next model; on the last model the
/// client gets the layer's 504.
#[tokio::test]
async fn a_silent_upstream_times_out_to_the_next_model_then_504() {
    let up = Upstream::start().await;
    let silent = silent_upstream().await;
    up.set(
        "mute-stream",
        Behavior::StreamDelay(Duration::from_secs(60)),
    );
    let config = format!(
        r#"
upstream = "http://{}/v1"

[[models]]
id = "silent"
upstream = "http://{silent}/v1"

[[models]]
id = "silent-last"
upstream = "http://{silent}/v1"

[timeouts]
headers = 2
first_byte = 30
stream = 2
"#,
        up.addr
    );
    let gw = Gateway::start(&config).await;

    // No headers: the headers timeout.
    let res = post_within_10s(&gw, &chat("silent", &["backup"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "silent=downtime, backup=ok"
    );
    // Headers, then no event: the stream timeout (`first_byte` is for non-streamed answers).
    let stream = json!({"model": "mute-stream", "models": ["backup"], "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = post_within_10s(&gw, &stream.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "mute-stream=downtime, backup=ok"
    );
    assert!(text(res).await.contains("hello from backup"));

    // The last model: the layer's 504, an OpenAI-shaped error.
    assert_last_model_times_out(&gw, "silent-last").await;
}

/// `model`, alone in its request, gets the layer's 504 `upstream_timeout` (an OpenAI-shaped
/// error).
async fn assert_last_model_times_out(gw: &Gateway, model: &str) {
    let res = post_within_10s(gw, &chat(model, &[])).await;
    assert_eq!(res.status(), 504);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        format!("{model}=downtime")
    );
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert!(support::is_openai_error(&body), "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
}

/// An upstream that answers 200 with a JSON body declared 1 MB long, sends 300 KiB of it (more
/// than the 256 KiB the layer reads to classify an answer) and then nothing, the connection
/// open.
async fn stalling_json_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
            content-length: 1000000\r\n\r\n{\"choices\":[{\"message\":{\"content\":\""
            .to_vec();
        answer.resize(answer.len() + 300 * 1024, b'a');
        if stream.write_all(&answer).await.is_ok() {
            // The rest never comes; the connection stays open until the gateway leaves.
            read_to_end(&mut stream).await;
        }
    })
    .await
}

/// An answer whose upstream stops sending after its headers and first bytes reached the
/// client (the layer's timeouts are over by then) ends after `[timeouts] idle`: a stream with
/// the OpenRouter-shaped error event, a JSON answer with its connection cut. A request the
/// layer passes through (no model) has no layer timeout at all: its first event is waited for
/// `stream` and no longer.
#[tokio::test]
async fn an_answer_that_stalls_midway_ends_after_the_idle_timeout() {
    let up = Upstream::start().await;
    up.set("pausing", Behavior::StreamPause(Duration::from_secs(60)));
    up.set("", Behavior::StreamDelay(Duration::from_secs(60)));
    let stalling = stalling_json_upstream().await;
    let config = format!(
        r#"
upstream = "http://{}/v1"

[[models]]
id = "stalling"
upstream = "http://{stalling}/v1"

[timeouts]
stream = 2
idle = 1
"#,
        up.addr
    );
    let gw = Gateway::start(&config).await;

    let stream = json!({"model": "pausing", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = post_within_10s(&gw, &stream.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-attempts"), "pausing=ok");
    let body = tokio::time::timeout(Duration::from_secs(10), text(res))
        .await
        .expect("the stream ends");
    assert!(body.starts_with("data: {\"choices\""), "{body}");
    assert!(body.contains(r#""finish_reason":"error""#), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");

    let res = post_within_10s(&gw, &chat("stalling", &[])).await;
    assert_eq!(res.status(), 200);
    let cut = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("the answer ends");
    assert!(cut.is_err(), "a stalled JSON answer is cut, not completed");

    let passthrough = json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let res = post_within_10s(&gw, &passthrough.to_string()).await;
    assert_eq!(res.status(), 200);
    let cut = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("the passed-through stream ends");
    assert!(cut.is_err(), "a silent passed-through stream is cut");
}

/// A listener that accepts no connection and whose backlog is full: a connection to it is
/// never made (its SYN is dropped), as with an upstream host that is down. Returns its
/// address; the listener and the connections that fill it live as long as the returned guard.
async fn unconnectable() -> (SocketAddr, (TcpListener, Vec<tokio::net::TcpStream>)) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(stream) => filling.push(stream.unwrap()),
            Err(_) => return (addr, (listener, filling)),
        }
    }
    panic!("the backlog of {addr} never filled up");
}

/// A model whose upstream cannot be connected to is left after `timeouts.connect` for the
/// next model (the headers timeout, far longer here, is not what ends the wait).
#[tokio::test]
async fn an_unreachable_upstream_times_out_to_the_next_model() {
    let up = Upstream::start().await;
    let (unreachable, _held) = unconnectable().await;
    let config = format!(
        r#"
upstream = "http://{}/v1"

[[models]]
id = "unreachable"
upstream = "http://{unreachable}/v1"

[timeouts]
connect = 2
headers = 60
"#,
        up.addr
    );
    let gw = Gateway::start(&config).await;
    let res = post_within_10s(&gw, &chat("unreachable", &["backup"])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "unreachable=downtime, backup=ok"
    );
    // On the last model, the connect timeout is answered as the other timeouts are: a 504.
    assert_last_model_times_out(&gw, "unreachable").await;
}

#[tokio::test]
async fn timeouts_must_be_positive_numbers_of_seconds() {
    for (text, key) in [
        ("[timeouts]\nconnect = 0", "connect"),
        ("[timeouts]\nheaders = -1", "headers"),
        ("[timeouts]\nfirst_byte = nan", "first_byte"),
        ("[timeouts]\nstream = 0", "stream"),
        ("[timeouts]\nidle = inf", "idle"),
        ("[timeouts]\nheaders = 1e300", "headers"),
        ("[timeouts]\ndrain = 0", "drain"),
        ("[timeouts]\ndrain = -5", "drain"),
        ("[timeouts]\nrequest_body = 0", "request_body"),
        ("[timeouts]\nrequest_body = nan", "request_body"),
    ] {
        let error = startup_error(text);
        assert!(error.contains(&format!("timeouts.{key}")), "{error}");
    }
}

/// Why the gateway refuses to start with the configuration `text` (which must parse).
fn startup_error(text: &str) -> String {
    let config = config::Config::from_toml(text).unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let error = app::build(&config, &|_| None, tls).err();
    error.unwrap_or_else(|| panic!("accepted: {text}"))
}

/// Values that cannot work are startup errors naming the key, not a gateway that starts and
/// misroutes: a price the library's own configuration refuses (OpenRouter's `-1` for a variable
/// price read as the dearest model), a body limit that refuses every request, an id that auto
/// routing takes over or that no upstream serves.
#[tokio::test]
async fn values_that_cannot_work_are_startup_errors() {
    for (text, key) in [
        ("[[models]]\nid = \"m\"\ninput_price = -1", "input_price"),
        ("[[models]]\nid = \"m\"\noutput_price = nan", "output_price"),
        ("[[models]]\nid = \"m\"\ninput_price = inf", "input_price"),
        ("[[models]]\nid = \"m\"\nquality = nan", "models[0].quality"),
        ("[[models]]\nid = \"m\"\nquality = inf", "models[0].quality"),
        ("max_body_bytes = 0", "max_body_bytes"),
        ("[auto]\nmodel = \"\"", "auto.model"),
        ("[[models]]\nid = \"openrouter/auto\"", "openrouter/auto"),
        (
            "[[models]]\nid = \"m\"\nupstream_model = \"\"",
            "models[0].upstream_model",
        ),
        ("[fallback]\nmodels = [\"\"]", "fallback.models"),
        ("[fallback]\nmodels = [\"auto\"]", "fallback.models"),
        (
            "[fallback]\nretries = 1\nretry_backoff = 0",
            "fallback.retry_backoff",
        ),
        // The endpoint's URL where the base URL goes: every request would go to
        // `.../chat/completions/chat/completions`, a 404 for every model.
        (
            "upstream = \"https://openrouter.ai/api/v1/chat/completions\"",
            "upstream must be a base URL",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"http://127.0.0.1:11434/v1/chat/completions/\"",
            "models[0].upstream must be a base URL",
        ),
        // The Responses API's endpoint as the base URL: the same mistake.
        (
            "upstream = \"https://api.openai.com/v1/responses\"",
            "upstream must be a base URL",
        ),
        // A port no connection can be opened to: every request would be a 502.
        ("upstream = \"https://openrouter.ai:99999/v1\"", "port"),
        ("upstream = \"http://127.0.0.1:0/v1\"", "port"),
    ] {
        let error = startup_error(text);
        assert!(error.contains(key), "{text}: {error}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_without_calling_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "max_body_bytes = 1024")).await;

    let res = gw.post("{\"model\": \"primary\", \"messages\": [").await;
    assert_eq!(res.status(), 400);
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let res = gw
        .post(&json!({"model": "primary", "models": "backup", "messages": []}).to_string())
        .await;
    assert_eq!(res.status(), 400);

    let big =
        json!({"model": "primary", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let res = gw.post(&big.to_string()).await;
    assert_eq!(res.status(), 413);
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");

    assert!(up.received().is_empty());
}

/// Every body on the chat route is held to `max_body_bytes`, whatever its `Content-Type`, and
/// the route takes JSON only: the layers pass a body they cannot route (another type, a
/// compressed one, one declared empty) through untouched, unread and unlimited, so a 2 MB
/// `text/plain` body reached the upstream with the operator's key (an operator's
/// walkthrough). Over the limit: 413; empty: 400; not JSON: 415; none calls the upstream.
#[tokio::test]
async fn every_chat_body_is_held_to_the_limit_and_must_be_json() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "max_body_bytes = 1024")).await;
    let path = "/v1/chat/completions";
    let small = chat("primary", &[]);
    // Valid JSON, over the limit.
    let big = format!("{}{small}", " ".repeat(2000));
    let typed = |content_type| [("content-type", content_type)];
    let (plain, octets, json) = (
        typed("text/plain"),
        typed("application/octet-stream"),
        typed("application/json"),
    );
    // What `curl -d` sends without `-H 'Content-Type: application/json'`.
    let (form, multipart) = (
        typed("application/x-www-form-urlencoded"),
        typed("multipart/form-data; boundary=x"),
    );
    let gzip = [json[0], ("content-encoding", "gzip")];
    let (too_large, not_json) = ("request_too_large", "unsupported_media_type");
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u16, &'a str);
    let refused: [Case; 9] = [
        (&plain, &big, 413, too_large),
        (&octets, &big, 413, too_large),
        (&gzip, &big, 413, too_large),
        (&plain, &small, 415, not_json),
        (&form, &small, 415, not_json),
        (&multipart, &small, 415, not_json),
        (&gzip, &small, 415, "unsupported_content_encoding"),
        (&json, "", 400, "invalid_json"),
        (&[], "", 400, "invalid_json"),
    ];
    for (headers, body, status, code) in refused {
        let res = gw.send("POST", path, headers, body).await;
        assert_eq!(res.status(), status, "{headers:?}, {} bytes", body.len());
        let text = text(res).await;
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], code, "{headers:?}: {text}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{text}");
    }
    assert!(
        up.received().is_empty(),
        "refused bodies went upstream: {:?}",
        up.received()
    );

    // JSON with parameters, and an untyped body (read as JSON by the layers), are routed.
    for headers in [
        &[("content-type", "application/json; charset=utf-8")][..],
        &[],
    ] {
        let res = gw.send("POST", path, headers, &small).await;
        assert_eq!(res.status(), 200, "{headers:?}");
    }
    assert_eq!(up.received().len(), 2);
}

/// `llm_gateway_requests_total` of the requests no model answered, with this outcome.
fn unanswered(metrics: &str, outcome: &str) -> f64 {
    let name = format!(r#"llm_gateway_requests_total{{model="none",outcome="{outcome}"}}"#);
    metric(metrics, &name)
}

/// The chat route's refusals of a body it cannot route are counted and logged as the layers'
/// refusals are: `outcome="rejected"` under `model="none"` (no upstream called, nothing passed
/// through), and a `chat completion` line with the status and no model tried.
#[tokio::test(flavor = "current_thread")]
async fn refused_chat_bodies_are_counted_and_logged_as_rejected() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    let config = config_for(&up, "max_body_bytes = 1024");
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    let path = "/v1/chat/completions";
    let small = chat("primary", &[]);
    let big = format!("{}{small}", " ".repeat(2000));
    let plain = [("content-type", "text/plain")];
    let gzip = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u16);
    let cases: [Case; 4] = [
        (&plain, &small, 415),
        (&gzip, &small, 415),
        (&plain, &big, 413),
        (&[], "", 400),
    ];
    for (headers, body, status) in cases {
        let res = gw.send("POST", path, headers, body).await;
        assert_eq!(res.status(), status, "{headers:?}");
        text(res).await;
    }
    assert!(up.received().is_empty());

    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(unanswered(&metrics, "rejected"), 4.0, "{metrics}");
    assert_eq!(unanswered(&metrics, "passed_through"), 0.0, "{metrics}");
    let logged = logs.text();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("chat completion"))
        .collect();
    assert_eq!(lines.len(), 4, "{logged}");
    for (line, (_, _, status)) in lines.iter().zip(cases) {
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains(r#"served="-""#), "{line}");
    }
}

impl LogBuf {
    /// A buffer that this thread's `info` records go to until the guard drops (the gateway must
    /// be served on this thread: `Serving::ThisRuntime`).
    fn capture() -> (LogBuf, tracing::subscriber::DefaultGuard) {
        Self::capture_at(tracing::Level::INFO)
    }

    /// [`capture`](Self::capture) of the records up to `level`.
    fn capture_at(level: tracing::Level) -> (LogBuf, tracing::subscriber::DefaultGuard) {
        // With this thread's subscriber the only one registered, tracing-core asks only the
        // calling thread's subscriber whether a call site is of interest when it is first hit:
        // one first hit by another test's thread (no subscriber of its own) is then cached as
        // of no interest, for this thread too. The global one, registered beside it, makes it
        // ask every registered subscriber.
        LogBuf::global();
        let logs = LogBuf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    /// The buffer of this test binary's global subscriber: the `info` records of every thread
    /// without a capture of its own (a gateway's workers). Set once, here, for every test: a
    /// test that set its own global subscriber would fail when another had set it first.
    fn global() -> &'static LogBuf {
        static GLOBAL: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            let logs = LogBuf::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber of tests/gateway.rs");
            logs
        })
    }
}

/// A capture gets the records of a call site that another test's thread (with no subscriber
/// of its own) hit first: tracing-core caches a call site's interest when it is first hit, and
/// with the capture's subscriber the only one registered it asked only that other thread's
/// (none: never), so the capture lost such records until another subscriber was registered.
#[test]
fn a_capture_keeps_the_records_of_a_call_site_another_thread_hit_first() {
    fn probe() {
        tracing::info!("log capture probe");
    }
    let (logs, _guard) = LogBuf::capture();
    std::thread::spawn(probe).join().unwrap();
    probe();
    assert!(logs.text().contains("log capture probe"), "{}", logs.text());
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) describe the client's connection to the gateway, not
/// the gateway's to the upstream: none goes on; every other header does, including ones whose
/// names have the same lengths.
#[tokio::test]
async fn hop_by_hop_headers_stay_with_the_gateway() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    let hop_by_hop = [
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        // Named by `Connection`, so hop-by-hop too (RFC 9110 §7.6.1).
        ("connection", "keep-alive, X-Int ,x-other"),
        ("x-int", "internal"),
        ("x-other", "internal"),
    ];
    let end_to_end = [
        ("user-agent", "test/1.0"),
        ("x-request-id", "abc"),
        ("x-custom-len-17ab", "same length as transfer-encoding"),
        ("xy", "same length as te"),
    ];
    let headers: Vec<_> = hop_by_hop.iter().chain(&end_to_end).copied().collect();
    let res = gw.post_with(&chat("primary", &[]), &headers).await;
    assert_eq!(res.status(), 200);
    let received = up.received();
    assert_eq!(received.len(), 1);
    for (name, _) in hop_by_hop {
        assert!(
            !received[0].headers.contains_key(name),
            "{name} went upstream"
        );
    }
    for (name, value) in end_to_end {
        assert_eq!(received[0].headers[name], value, "{name}");
    }
}

/// The same for an answer: the upstream's hop-by-hop headers (and those its `Connection`
/// names) describe its connection to the gateway, not the gateway's to the client.
#[tokio::test]
async fn hop_by_hop_headers_of_an_answer_stay_with_the_gateway() {
    let up = Upstream::start().await;
    let hop_by_hop = [
        ("connection", "x-up, keep-alive"),
        ("x-up", "internal"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authenticate", "Basic realm=\"upstream\""),
        ("te", "trailers"),
        ("upgrade", "h2c"),
    ];
    let end_to_end = [("x-request-id", "up-1"), ("openai-processing-ms", "12")];
    let headers: Vec<_> = hop_by_hop.iter().chain(&end_to_end).copied().collect();
    up.set(
        "primary",
        Behavior::Status(
            200,
            headers,
            r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
        ),
    );
    let gw = Gateway::start(&config_for(&up, "")).await;
    let res = gw.post(&chat("primary", &[])).await;
    assert_eq!(res.status(), 200);
    for (name, _) in hop_by_hop {
        assert!(
            !res.headers().contains_key(name),
            "{name} reached the client: {:?}",
            res.headers()
        );
    }
    for (name, value) in end_to_end {
        assert_eq!(res.headers()[name], value, "{name}");
    }
    assert!(text(res).await.contains(r#""content":"hi""#));
}

#[tokio::test]
async fn without_a_key_the_clients_credentials_go_to_the_default_upstream_only() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    up.set(
        "primary",
        Behavior::Status(503, vec![], r#"{"error":{"message":"overloaded"}}"#),
    );
    // The chain falls back from the default upstream to another provider.
    let config = config_for(&up, &elsewhere(&other));
    let gw = Gateway::start_with(&config, &[], None, Serving::PerCore).await;
    let credentials = [
        ("authorization", "Bearer client-token"),
        ("api-key", "client-azure-key"),
        ("x-api-key", "client-anthropic-key"),
    ];
    let res = gw
        .post_with(&chat("primary", &["elsewhere"]), &credentials)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-llm-router-model"], "elsewhere");

    let received = up.received();
    assert_eq!(received.len(), 1);
    for (name, value) in credentials {
        assert_eq!(
            received[0].headers[name], value,
            "{name} to the default upstream"
        );
    }
    let elsewhere = other.received();
    assert_eq!(elsewhere.len(), 1);
    assert_no_credentials(&elsewhere[0].headers);
}

/// A `[[models]]` entry `elsewhere` on `other`, an upstream without a key of its own.
fn elsewhere(other: &Upstream) -> String {
    format!(
        "\n[[models]]\nid = \"elsewhere\"\ncontext_window = 8000\nupstream = \"http://{}/v1\"\n",
        other.addr
    )
}

/// The client's credentials were meant for the default upstream (or the gateway): another
/// provider gets none of them.
fn assert_no_credentials(headers: &http::HeaderMap) {
    for name in ["authorization", "api-key", "x-api-key"] {
        assert!(
            !headers.contains_key(name),
            "{name} reached another provider: {headers:?}"
        );
    }
}

// Single-threaded so that every task of the gateway logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn the_api_key_goes_upstream_as_bearer_and_nowhere_else() {
    const KEY: &str = "sk-test-0123456789-SECRET";
    let (logs, _guard) = LogBuf::capture_at(tracing::Level::TRACE);

    let up = Upstream::start().await;
    let other = Upstream::start().await;
    up.set(
        "primary",
        Behavior::Status(500, vec![], r#"{"error":{"message":"boom"}}"#),
    );
    // `elsewhere` lives on another upstream without a key of its own: it must not get the
    // default upstream's key.
    let extra = format!("api_key_env = \"GATEWAY_TEST_KEY\"\n{}", elsewhere(&other));
    let config_text = config_for(&up, &extra);
    let env = [("GATEWAY_TEST_KEY", KEY)];
    let gw = Gateway::start_with(&config_text, &env, None, Serving::ThisRuntime).await;

    let res = gw
        .post_with(
            &chat("primary", &["backup"]),
            &[
                ("authorization", "Bearer client-token"),
                ("x-api-key", "client-anthropic-key"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let headers = format!("{:?}", res.headers());
    let body = text(res).await;
    let res = gw
        .post_with(
            &chat("elsewhere", &[]),
            &[
                ("authorization", "Bearer client-token"),
                ("api-key", "client-azure-key"),
                ("x-api-key", "client-anthropic-key"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, metrics) = gw.get("/metrics").await;
    let (_, models) = gw.get("/v1/models").await;

    for received in up.received() {
        assert_eq!(received.headers["authorization"], format!("Bearer {KEY}"));
        // The gateway's key replaces the client's credentials, not only its `Authorization`.
        assert!(!received.headers.contains_key("x-api-key"));
    }
    assert_eq!(up.received().len(), 2);
    let elsewhere = other.received();
    assert_eq!(elsewhere.len(), 1);
    assert_no_credentials(&elsewhere[0].headers);

    let logs = logs.text();
    assert!(
        logs.contains("chat completion"),
        "one line per request: {logs}"
    );
    assert!(
        logs.contains("attempts=\"primary=downtime, backup=ok\""),
        "{logs}"
    );
    for (what, text) in [
        ("response headers", &headers),
        ("response body", &body),
        ("metrics", &metrics),
        ("models", &models),
        ("logs", &logs),
    ] {
        assert!(!text.contains("SECRET"), "the key leaked into the {what}");
    }
    // Nor in the configuration's or the routes' Debug.
    let config = config::Config::from_toml(&config_text).unwrap();
    assert!(format!("{config:?}").contains("GATEWAY_TEST_KEY"));
    let route = common::upstream::Route::new("http://x/v1")
        .unwrap()
        .bearer(KEY)
        .unwrap();
    assert!(!format!("{route:?}").contains("SECRET"));
}

#[tokio::test]
async fn a_missing_or_pasted_key_is_a_startup_error_that_does_not_echo_it() {
    let config = config::Config::from_toml(
        "api_key_env = \"sk-or-v1-pasted-SECRET\"\nupstream = \"http://127.0.0.1:9/v1\"",
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("SECRET"));
    let tls = common::upstream::default_tls().unwrap();
    let error = app::build(&config, &|_| None, tls.clone()).err().unwrap();
    assert!(!error.contains("SECRET"), "{error}");

    let config = config::Config::from_toml("api_key_env = \"NOT_SET_ANYWHERE\"").unwrap();
    let error = app::build(&config, &|_| None, tls).err().unwrap();
    assert!(error.contains("NOT_SET_ANYWHERE"), "{error}");
}

/// Every variable a configuration names and the environment lacks is in the one startup error
/// (each once, with the keys naming it), with the values that are no variable's name: an
/// operator fixes them all at once rather than one per restart. A pasted key is still not
/// echoed, and a variable that is set is not named.
#[tokio::test]
async fn every_missing_environment_variable_is_told_at_once() {
    let config = config::Config::from_toml(
        r#"
api_key_env = "DEFAULT_KEY"
client_keys_env = "CLIENT_KEYS"
[[models]]
id = "a"
api_key_env = "SHARED_KEY"
[[models]]
id = "b"
api_key_env = "sk-or-v1-pasted-SECRET"
[[models]]
id = "c"
api_key_env = "SHARED_KEY"
[[models]]
id = "d"
api_key_env = "SET_KEY"
"#,
    )
    .unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let env = |name: &str| (name == "SET_KEY").then(|| "sk-set-value".to_owned());
    let error = app::build(&config, &env, tls).err().unwrap();
    for told in [
        "DEFAULT_KEY (api_key_env)",
        "CLIENT_KEYS (client_keys_env)",
        "SHARED_KEY (models[0].api_key_env, models[2].api_key_env)",
        "models[1].api_key_env must name an environment variable",
    ] {
        assert!(error.contains(told), "{told}: {error}");
    }
    assert_eq!(error.matches("SHARED_KEY").count(), 1, "{error}");
    assert!(!error.contains("SECRET"), "{error}");
    assert!(!error.contains("SET_KEY"), "{error}");
    assert!(!error.contains("sk-set-value"), "{error}");
}

/// A key pasted into an upstream URL's query (Gemini's `?key=`, Azure's `?api-key=`) is refused
/// without being echoed into the log, as one before `@` is.
#[tokio::test]
async fn a_key_in_an_upstream_url_query_is_refused_without_echoing_it() {
    for (text, reason) in [
        (
            "upstream = \"https://example.com/v1beta/openai?key=AIza-SECRET\"",
            "query",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"https://example.com/v1?api-key=SECRET\"",
            "query",
        ),
        // Not a URI at all (a space): the query is not shown either.
        (
            "upstream = \"https://exa mple.com/v1?key=SECRET\"",
            "invalid",
        ),
    ] {
        let error = startup_error(text);
        assert!(error.contains(reason), "{error}");
        assert!(!error.contains("SECRET"), "{error}");
        assert!(error.contains("mple.com/v1"), "{error}");
    }
}

/// `client_keys_env`'s variable in the tests: two tokens, spaces and an empty entry around them.
const CLIENT_KEYS: (&str, &str) = (
    "GATEWAY_CLIENT_KEYS",
    " client-one-TOKEN , client-two-TOKEN,",
);

/// With `client_keys_env`, every route but `/healthz` wants one of its tokens as `Authorization:
/// Bearer`: without one (or with another, one as long with a byte off, a prefix of one, one
/// longer, one in `x-api-key`) the answer is
/// OpenAI's 401 for a bad key and no upstream is called. The token goes nowhere: not upstream
/// (the gateway's own key does), not into the logs, not into the 401. Found by an operator's
/// walkthrough: anyone who reached `listen` spent the operator's key.
#[tokio::test(flavor = "current_thread")]
async fn client_keys_admit_only_their_bearers_and_never_forward_them() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    let extra = "api_key_env = \"GATEWAY_TEST_KEY\"\nclient_keys_env = \"GATEWAY_CLIENT_KEYS\"";
    let env = [("GATEWAY_TEST_KEY", "sk-operator-key"), CLIENT_KEYS];
    let gw = Gateway::start_with(&config_for(&up, extra), &env, None, Serving::ThisRuntime).await;

    let refused: [&[(&str, &str)]; 11] = [
        &[],
        &[("authorization", "Bearer wrong")],
        &[("authorization", "Bearer client-one-TOKENx")],
        &[("authorization", "Bearer client-one-TOKE")],
        // As long as a key, one byte off: first, last, or a key's bytes in another's place.
        &[("authorization", "Bearer Client-one-TOKEN")],
        &[("authorization", "Bearer client-one-TOKEn")],
        &[("authorization", "Bearer client-two-TOKEM")],
        &[("authorization", "Bearer ")],
        &[("authorization", "client-one-TOKEN")],
        &[("authorization", "Basic Y2xpZW50LW9uZS1UT0tFTg==")],
        &[("x-api-key", "client-one-TOKEN")],
    ];
    for credentials in refused {
        let res = gw.post_with(&chat("primary", &[]), credentials).await;
        assert_eq!(res.status(), 401, "{credentials:?}");
        assert_eq!(
            header(&res, "www-authenticate"),
            "Bearer",
            "{credentials:?}"
        );
        let body = text(res).await;
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert!(!body.contains("TOKEN") && !body.contains("wrong"), "{body}");
    }
    assert!(
        up.received().is_empty(),
        "an unauthenticated request went upstream"
    );

    for token in ["Bearer client-one-TOKEN", "bearer  client-two-TOKEN"] {
        let headers = [("authorization", token), ("x-api-key", "client-one-TOKEN")];
        let res = gw.post_with(&chat("primary", &[]), &headers).await;
        assert_eq!(res.status(), 200, "{token}");
    }
    let received = up.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.headers["authorization"], "Bearer sk-operator-key");
        let headers = format!("{:?}", request.headers);
        assert!(
            !headers.contains("TOKEN"),
            "a client token went upstream: {headers}"
        );
    }

    // `/healthz` is open (liveness probes); every other route, `/metrics` and an unknown path
    // included, is not.
    let bearer = [("authorization", "Bearer client-one-TOKEN")];
    assert_eq!(gw.send("GET", "/healthz", &[], "").await.status(), 200);
    for path in [
        "/v1/models",
        "/v1/models/primary",
        "/metrics",
        "/v1/embeddings",
    ] {
        let res = gw.send("GET", path, &[], "").await;
        assert_eq!(res.status(), 401, "{path}");
        let error: Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{path}");
        let res = gw.send("GET", path, &bearer, "").await;
        let expected = if path == "/v1/embeddings" { 404 } else { 200 };
        assert_eq!(res.status(), expected, "{path}");
    }
    // Every refusal is counted, whatever the route: 11 chat requests and 4 other routes.
    let res = gw.send("GET", "/metrics", &bearer, "").await;
    let metrics = text(res).await;
    assert_eq!(
        metric(&metrics, "llm_gateway_unauthorized_total"),
        15.0,
        "{metrics}"
    );

    let logs = logs.text();
    assert!(!logs.contains("TOKEN"), "a client token was logged: {logs}");
    assert!(
        logs.contains("no valid client key"),
        "refusals are logged: {logs}"
    );
}

/// With client keys and no key of the gateway's own, the client's credentials are the gateway's
/// token, not an upstream key: none of them goes upstream.
#[tokio::test]
async fn without_an_upstream_key_client_tokens_are_not_forwarded_either() {
    let up = Upstream::start().await;
    let extra = "client_keys_env = \"GATEWAY_CLIENT_KEYS\"";
    let gw = Gateway::start_with(
        &config_for(&up, extra),
        &[CLIENT_KEYS],
        None,
        Serving::PerCore,
    )
    .await;
    let headers = [
        ("authorization", "Bearer client-one-TOKEN"),
        ("api-key", "client-one-TOKEN"),
        ("x-api-key", "client-one-TOKEN"),
    ];
    let res = gw.post_with(&chat("primary", &[]), &headers).await;
    assert_eq!(res.status(), 200);
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert_no_credentials(&received[0].headers);
}

/// `client_keys_env` set but unusable is a startup error (never a gateway open to all), which
/// names the variable but never echoes a token pasted in its place.
#[tokio::test]
async fn client_keys_env_must_name_a_variable_holding_keys() {
    let tls = common::upstream::default_tls().unwrap();
    let build = |text: &str, value: Option<&str>| {
        let config = config::Config::from_toml(text).unwrap();
        let value = value.map(str::to_owned);
        let env = move |name: &str| (name == "GATEWAY_CLIENT_KEYS").then(|| value.clone())?;
        app::build(&config, &env, tls.clone()).err()
    };
    let named = "client_keys_env = \"GATEWAY_CLIENT_KEYS\"";
    for value in [None, Some(""), Some(" , ,")] {
        let error = build(named, value).unwrap_or_else(|| panic!("accepted {value:?}"));
        assert!(error.contains("client_keys_env"), "{error}");
        assert!(error.contains("GATEWAY_CLIENT_KEYS"), "{error}");
    }
    assert!(build(named, Some("one,two")).is_none());

    let pasted = "client_keys_env = \"tok-pasted-SECRET\"";
    let error = build(pasted, None).unwrap();
    assert!(error.contains("client_keys_env"), "{error}");
    assert!(!error.contains("SECRET"), "{error}");
    let config = config::Config::from_toml(pasted).unwrap();
    assert!(!format!("{config:?}").contains("SECRET"));
}

/// The startup line says whether clients need a key and how many `allow_models` patterns hold
/// them, and quotes every model id escaped: a newline or control character in an id cannot
/// start a forged line of its own.
#[test]
fn the_startup_line_tells_the_access_rules_and_escapes_model_ids() {
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let workers = NonZeroUsize::new(2).unwrap();
    let open = config::Config::from_toml(
        "upstream = \"http://127.0.0.1:9/v1\"\n[[models]]\nid = \"plain\"\n\
         [[models]]\nid = \"evil\\n2026-01-01T00:00:00Z INFO forged \\u001b[31m\\\"\"\n",
    )
    .unwrap();
    let line = open.startup_line(addr, workers);
    assert_eq!(
        line,
        "listening on http://127.0.0.1:8080/v1 (2 workers, default upstream \
         http://127.0.0.1:9/v1, client keys: none (anyone who reaches the port is served), \
         allow_models: none (any model), models: \"plain\", \
         \"evil\\n2026-01-01T00:00:00Z INFO forged \\u{1b}[31m\\\"\", auto model \"auto\")"
    );
    assert!(!line.chars().any(char::is_control), "{line:?}");

    let closed = config::Config::from_toml(
        "client_keys_env = \"GATEWAY_CLIENT_KEYS\"\nallow_models = [\"openai/*\", \"b\"]\n",
    )
    .unwrap();
    let line = closed.startup_line(addr, NonZeroUsize::MIN);
    assert!(line.contains("(1 worker, "), "{line}");
    assert!(line.contains("client keys: required"), "{line}");
    assert!(line.contains("allow_models: 2 patterns"), "{line}");
    assert!(line.contains("models: -,"), "{line}");
}

/// The warning logged at startup for a gateway that spends an upstream key for whoever reaches
/// it: a key, no client keys, and an address other machines can reach.
#[test]
fn an_exposed_key_without_client_keys_is_warned_about() {
    let warning = |text: &str| config::Config::from_toml(text).unwrap().exposure_warning();
    let key = "api_key_env = \"K\"\n";
    for listen in [
        "0.0.0.0:8080",
        "[::]:8080",
        "192.168.1.10:8080",
        "gateway.internal:8080",
    ] {
        let text = format!("{key}listen = \"{listen}\"");
        let warning = warning(&text).unwrap_or_else(|| panic!("no warning for {listen}"));
        assert!(warning.contains("client_keys_env"), "{warning}");
        assert!(warning.contains(listen), "{warning}");
    }
    let model_key = "listen = \"0.0.0.0:8080\"\n[[models]]\nid = \"m\"\napi_key_env = \"K\"";
    assert!(warning(model_key).is_some());
    for quiet in [
        // Loopback only.
        format!("{key}listen = \"127.0.0.1:8080\""),
        format!("{key}listen = \"[::1]:8080\""),
        format!("{key}listen = \"localhost:8080\""),
        // Clients need a key of their own.
        format!("{key}listen = \"0.0.0.0:8080\"\nclient_keys_env = \"C\""),
        // Clients bring their own upstream keys.
        "listen = \"0.0.0.0:8080\"".to_owned(),
    ] {
        assert_eq!(warning(&quiet), None, "{quiet}");
    }
}

#[tokio::test]
async fn upstream_model_is_the_id_sent_upstream() {
    let up = Upstream::start().await;
    let extra =
        "[[models]]\nid = \"fast\"\ncontext_window = 8000\nupstream_model = \"vendor/fast-v2\"\n";
    let gw = Gateway::start(&config_for(&up, extra)).await;
    let res = gw
        .post(&json!({"model": "fast", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "fast");
    let received = up.received();
    assert_eq!(up.models_received(), ["vendor/fast-v2"]);
    let sent: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(
        received[0].headers["content-length"],
        received[0].body.len().to_string()
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_fallbacks_and_latency() {
    let up = Upstream::start().await;
    up.set("primary", Behavior::Status(429, vec![], "{}"));
    let gw = Gateway::start(&config_for(&up, "")).await;
    let ok = r#"llm_gateway_requests_total{model="backup",outcome="ok"}"#;
    let rate_limited = r#"llm_gateway_fallbacks_total{class="rate_limited"}"#;
    let count = "llm_gateway_request_duration_seconds_count";

    let (_, before) = gw.get("/metrics").await;
    assert_eq!(metric(&before, rate_limited), 0.0);
    let res = gw.post(&chat("primary", &["backup"])).await;
    assert_eq!(res.status(), 200);
    let res = gw.post("not json").await;
    assert_eq!(res.status(), 400);
    // A model the configuration does not list answers from the default upstream; it is
    // counted as `other` (clients choose these ids: one label each would be unbounded).
    let res = gw.post(&chat("unlisted/model", &[])).await;
    assert_eq!(res.status(), 200);

    let (status, after) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&after, ok), metric(&before, ok) + 1.0);
    assert_eq!(metric(&after, rate_limited), 1.0);
    assert_eq!(
        metric(
            &after,
            r#"llm_gateway_requests_total{model="none",outcome="rejected"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            r#"llm_gateway_requests_total{model="other",outcome="ok"}"#
        ),
        1.0
    );
    assert!(!after.contains("unlisted"), "{after}");
    assert_eq!(metric(&after, count), metric(&before, count) + 3.0);
    assert_eq!(
        metric(
            &after,
            r#"llm_gateway_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        metric(&after, count)
    );
}

/// A request the layers pass through (no model) and the upstream answers is not counted as
/// refused by the layers: it was `outcome="rejected"`, which says no upstream was called.
#[tokio::test]
async fn a_request_passed_through_is_not_counted_as_rejected() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    let res = gw
        .post(r#"{"messages": [{"role": "user", "content": "hi"}]}"#)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(up.received().len(), 1);
    let res = gw.post("not json").await;
    assert_eq!(res.status(), 400);

    let (_, metrics) = gw.get("/metrics").await;
    let count = |outcome| unanswered(&metrics, outcome);
    assert_eq!(
        (count("passed_through"), count("rejected")),
        (1.0, 1.0),
        "{metrics}"
    );
}

/// The applications of `build_workers` (one per worker thread of `serve_per_core`) share the
/// models' health and the metrics: a model that failed on one worker cools down on the others,
/// and `/metrics` on any worker counts every worker's requests. (Which worker accepts a
/// connection is up to the threads, so each is served here on its own address.)
#[tokio::test]
async fn workers_share_health_and_metrics() {
    let up = Upstream::start().await;
    // A 429 cools the model down at once (a 503 only after three in a row).
    up.set("primary", Behavior::Status(429, vec![], "{}"));
    let config = config::Config::from_toml(&config_for(&up, "")).unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let workers = NonZeroUsize::new(2).unwrap();
    let mut apps = app::build_workers(&config, &|_: &str| None, tls, workers).unwrap();
    let first = Gateway::serve(apps.split_off(1), Serving::ThisRuntime);
    let second = Gateway::serve(apps, Serving::ThisRuntime);

    let res = first.post(&chat("primary", &["backup"])).await;
    assert_eq!(header(&res, "x-llm-router-model"), "backup");
    let res = second.post(&chat("primary", &["backup"])).await;
    assert_eq!(header(&res, "x-llm-router-model"), "backup");
    let tried: Vec<_> = up.received().into_iter().filter_map(|r| r.model).collect();
    assert_eq!(
        tried,
        ["primary", "backup", "backup"],
        "cooling down on both"
    );

    let ok = r#"llm_gateway_requests_total{model="backup",outcome="ok"}"#;
    let fallbacks = r#"llm_gateway_fallbacks_total{class="rate_limited"}"#;
    for gateway in [&first, &second] {
        let (_, metrics) = gateway.get("/metrics").await;
        assert_eq!(metric(&metrics, ok), 2.0, "{metrics}");
        assert_eq!(metric(&metrics, fallbacks), 1.0, "{metrics}");
        let count = "llm_gateway_request_duration_seconds_count";
        assert_eq!(metric(&metrics, count), 2.0, "{metrics}");
    }
}

/// Sends `GET /healthz` on a new keep-alive connection and reads the answer (returned,
/// lowercased); the connection stays open.
async fn open_connection(addr: SocketAddr) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0; 1024];
    while !response.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the answer within 5 s")
            .unwrap();
        assert_ne!(n, 0, "{}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    (
        stream,
        String::from_utf8_lossy(&response).to_ascii_lowercase(),
    )
}

/// Connections spread over the workers, however the accepts fell: each worker's open
/// connections (`llm_gateway_worker_connections`) differ by one at most.
#[tokio::test]
async fn connections_spread_over_the_workers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(open_connection(gw.addr).await.0);
    }
    // The connection of this request is the eleventh.
    let (_, metrics) = gw.get("/metrics").await;
    let gauge = |worker: usize| {
        let name = format!("llm_gateway_worker_connections{{worker=\"{worker}\"}}");
        metric(&metrics, &name)
    };
    assert_eq!(gauge(0) + gauge(1), 11.0, "{metrics}");
    assert!((gauge(0) - gauge(1)).abs() <= 1.0, "{metrics}");
    drop(open);
}

/// A new connection to `listener`: the server's end, and the client's.
async fn accepted(listener: &TcpListener) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    (stream, client)
}

/// A worker that accepts a connection while another serves fewer hands it over, and the
/// counts follow the connections.
#[tokio::test]
async fn a_connection_is_handed_to_the_worker_with_fewer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let accept = || accepted(&listener);
    let balance = Arc::new(balance::Balance::new(2));
    let mut handoffs = balance::Handoff::for_workers(&balance);
    let counts = || balance.counts().collect::<Vec<_>>();

    // Equal counts: served where accepted.
    let (stream, _client) = accept().await;
    let first = handoffs[0].place(stream).expect("served by worker 0");
    assert_eq!(counts(), [1, 0]);
    // Worker 0 has more: the next one goes to worker 1, counted at once.
    let (stream, _second_client) = accept().await;
    assert!(handoffs[0].place(stream).is_none(), "handed over");
    assert_eq!(counts(), [1, 1]);
    let (_, live) = handoffs[1].next().await.expect("worker 1 receives it");
    assert_eq!(counts(), [1, 1]);
    drop(first);
    drop(live);
    assert_eq!(counts(), [0, 0]);
}

/// A worker that has left its accept loop closes its inbox before it drains: a connection
/// handed to it just before is closed, not left unanswered until the drain ends, and a later
/// one is served by the worker that accepted it.
#[tokio::test]
async fn a_stopped_worker_closes_what_was_handed_to_it_and_takes_no_more() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let balance = Arc::new(balance::Balance::new(2));
    let mut handoffs = balance::Handoff::for_workers(&balance);
    let counts = || balance.counts().collect::<Vec<_>>();
    let (stream, _client) = accepted(&listener).await;
    let _first = handoffs[0].place(stream).expect("served by worker 0");
    let (stream, mut queued) = accepted(&listener).await;
    assert!(handoffs[0].place(stream).is_none(), "handed to worker 1");
    assert_eq!(counts(), [1, 1]);

    handoffs[1].close();
    assert_eq!(counts(), [1, 0]);
    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), queued.read(&mut buf))
        .await
        .expect("the queued connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let (stream, _client) = accepted(&listener).await;
    let _second = handoffs[0].place(stream).expect("served where accepted");
    assert_eq!(counts(), [2, 0]);
    assert!(
        handoffs[1].next().await.is_none(),
        "nothing more for worker 1"
    );
}

/// A body many times the connection's read buffer (`app::READ_BUFFER_LIMIT`) arrives in many
/// reads, and every attempt sends it on whole.
#[tokio::test]
async fn a_body_far_larger_than_the_read_buffer_falls_back_whole() {
    let up = Upstream::start().await;
    up.set(
        "primary",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let gw = Gateway::start(&config_for(&up, "")).await;
    let prompt: String = (0..1 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert!(prompt.len() >= 16 * app::READ_BUFFER_LIMIT);
    let body = json!({"model": "primary", "messages": [{"role": "user", "content": prompt}]});

    let res = gw.post(&body.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "primary=downtime, backup=ok"
    );
    assert_eq!(up.models_received(), ["primary", "backup"]);
    for received in up.received() {
        let sent: Value = serde_json::from_slice(&received.body).unwrap();
        assert!(sent["messages"][0]["content"] == prompt.as_str());
    }
}

/// The read buffer also bounds a request's head: one longer is answered 431 (by hyper, with no
/// body), one within it is served.
#[tokio::test]
async fn a_head_longer_than_the_read_buffer_is_answered_431() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_for(&up, "")).await;
    for (pad, want) in [
        (app::READ_BUFFER_LIMIT / 2, "HTTP/1.1 200 "),
        (app::READ_BUFFER_LIMIT, "HTTP/1.1 431 "),
    ] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-pad: {}\r\n\r\n",
            "p".repeat(pad)
        );
        // The server may answer and close before it has read the whole of a head too long.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = [0; 13];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&answer), want);
    }
}

/// An HTTPS chat-completions upstream on 127.0.0.1 with a generated certificate for
/// `localhost`; returns its port, the roots that trust it and the models it received.
async fn tls_upstream() -> (u16, rustls::RootCertStore, Arc<Mutex<Vec<String>>>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();
    let (port, received) = https_upstream(cert_der, key_der).await;
    (port, roots, received)
}

/// An HTTPS chat-completions upstream on 127.0.0.1 presenting `cert`; returns its port and the
/// models it received.
async fn https_upstream(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let model = json["model"].as_str().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(model.clone());
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                            support::completion(&model),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, received)
}

/// A chat completion for `model` through `gw` is answered 200, by that model.
async fn assert_answered(gw: &Gateway, model: &str) {
    let res = gw.post(&chat(model, &[])).await;
    assert_eq!(res.status(), 200);
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(body["model"], model);
}

/// A private CA (generated) in a PEM file of its own, and a server certificate and key it
/// signed for each of `hosts`.
struct PrivateCa {
    pem_file: std::path::PathBuf,
    issued: Vec<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivatePkcs8KeyDer<'static>,
    )>,
}

fn private_ca(name: &str, hosts: &[&str]) -> PrivateCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway test private CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let issued = hosts
        .iter()
        .map(|host| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![(*host).to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
            (cert.der().clone(), key)
        })
        .collect();
    let pem_file =
        std::env::temp_dir().join(format!("gateway-ca-{name}-{}.pem", std::process::id()));
    std::fs::write(&pem_file, ca.pem()).unwrap();
    PrivateCa { pem_file, issued }
}

/// The TOML string of a path.
fn toml_path(path: &std::path::Path) -> String {
    toml::Value::String(path.to_str().unwrap().to_owned()).to_string()
}

/// An HTTPS upstream whose certificate a private CA signed is reached with that CA in
/// `ca_file` (the public roots still trusted), and is a 502 without it; a model's `ca_file` is
/// trusted for that model's upstream alone.
#[tokio::test]
async fn a_private_ca_in_ca_file_is_trusted_for_its_upstream() {
    let ca = private_ca("default", &["127.0.0.1", "localhost"]);
    let mut issued = ca.issued.into_iter();
    let (ip_cert, ip_key) = issued.next().unwrap();
    let (name_cert, name_key) = issued.next().unwrap();
    let (port, received) = https_upstream(ip_cert, ip_key).await;
    let upstream = format!("upstream = \"https://127.0.0.1:{port}/v1\"\n");
    let with_ca = format!("{upstream}ca_file = {}\n", toml_path(&ca.pem_file));

    let gw = Gateway::start(&with_ca).await;
    assert_answered(&gw, "private-model").await;
    assert_eq!(*received.lock().unwrap(), ["private-model"]);

    // Without it the certificate is refused: the upstream is unreachable, and says why.
    let gw = Gateway::start(&upstream).await;
    let res = gw.post(&chat("private-model", &[])).await;
    assert_eq!(res.status(), 502);
    let body: Value = serde_json::from_str(&text(res).await).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert_eq!(received.lock().unwrap().len(), 1);

    // A model's own: trusted for its upstream, not for another the same CA signed for.
    let (other_port, other_received) = https_upstream(name_cert, name_key).await;
    let models = format!(
        "upstream = \"https://localhost:{other_port}/v1\"\n\
         [[models]]\nid = \"private\"\nupstream = \"https://127.0.0.1:{port}/v1\"\n\
         ca_file = {}\n\
         [[models]]\nid = \"public\"\n",
        toml_path(&ca.pem_file)
    );
    let gw = Gateway::start(&models).await;
    assert_answered(&gw, "private").await;
    assert_eq!(received.lock().unwrap().last().unwrap(), "private");
    let res = gw.post(&chat("public", &[])).await;
    assert_eq!(
        res.status(),
        502,
        "the CA is not trusted for another upstream"
    );
    assert!(other_received.lock().unwrap().is_empty());
    let _ = std::fs::remove_file(&ca.pem_file);
}

/// A `ca_file` that cannot be used is a startup error naming its key: a file that cannot be
/// read, one without a certificate, a model's without the model's own upstream, a PEM pasted
/// in place of the path (not echoed).
#[test]
fn an_unusable_ca_file_is_a_startup_error_naming_its_key() {
    let no_cert = std::env::temp_dir().join(format!("gateway-ca-empty-{}.pem", std::process::id()));
    std::fs::write(&no_cert, "not a certificate\n").unwrap();
    let missing = std::env::temp_dir().join("gateway-ca-does-not-exist.pem");
    let error = |text: &str| {
        let config = config::Config::from_toml(text).unwrap();
        app::upstream_tls(&config).err().unwrap()
    };
    let https = "upstream = \"https://127.0.0.1:9/v1\"\n";

    let told = error(&format!("{https}ca_file = {}", toml_path(&missing)));
    assert!(told.starts_with("ca_file: cannot read "), "{told}");
    assert!(told.contains("gateway-ca-does-not-exist.pem"), "{told}");

    let told = error(&format!("{https}ca_file = {}", toml_path(&no_cert)));
    assert!(told.starts_with("ca_file: "), "{told}");
    assert!(told.contains("holds no certificate"), "{told}");

    let model = |extra: &str| {
        format!(
            "{https}[[models]]\nid = \"a\"\n[[models]]\nid = \"b\"\n{extra}ca_file = {}\n",
            toml_path(&no_cert)
        )
    };
    let told = error(&model("upstream = \"https://127.0.0.1:10/v1\"\n"));
    assert!(told.starts_with("models[1].ca_file: "), "{told}");
    assert!(told.contains("holds no certificate"), "{told}");
    let told = error(&model(""));
    assert!(told.starts_with("models[1].ca_file"), "{told}");
    assert!(told.contains("upstream"), "{told}");

    let pasted = "-----BEGIN PRIVATE KEY-----\nMIIE-SECRET\n-----END PRIVATE KEY-----\n";
    let told = error(&format!(
        "{https}ca_file = {}",
        toml::Value::String(pasted.to_owned())
    ));
    assert!(told.starts_with("ca_file"), "{told}");
    assert!(!told.contains("SECRET"), "{told}");
    let _ = std::fs::remove_file(&no_cert);

    // Beside an `http://` upstream no certificate is ever checked: an `https` left out of the
    // URL, said at startup rather than found by the traffic going out in clear.
    let ca = private_ca("plain", &["127.0.0.1"]);
    let told = error(&format!(
        "upstream = \"http://127.0.0.1:9/v1\"\nca_file = {}",
        toml_path(&ca.pem_file)
    ));
    assert!(told.starts_with("ca_file: "), "{told}");
    assert!(told.contains("https"), "{told}");
    let told = error(&format!(
        "{https}[[models]]\nid = \"a\"\nupstream = \"http://127.0.0.1:10/v1\"\nca_file = {}\n",
        toml_path(&ca.pem_file)
    ));
    assert!(told.starts_with("models[0].ca_file: "), "{told}");
    assert!(told.contains("https"), "{told}");
    let _ = std::fs::remove_file(&ca.pem_file);
}

#[tokio::test]
async fn https_upstreams_work() {
    let (port, roots, received) = tls_upstream().await;
    let config = format!("upstream = \"https://localhost:{port}/v1\"\n");
    let tls = common::upstream::tls_with_roots(roots).unwrap();
    let gw = Gateway::start_with(&config, &[], Some(tls), Serving::PerCore).await;
    assert_answered(&gw, "secure-model").await;
    assert_eq!(*received.lock().unwrap(), ["secure-model"]);

    // Without the generated root the certificate is refused: a transport failure, 502.
    let gw = Gateway::start(&config).await;
    let res = gw.post(&chat("secure-model", &[])).await;
    assert_eq!(res.status(), 502);
}

/// Sends a chat completion for `model` through the gateway in a task of its own; its status
/// and body.
fn spawn_chat(gw: &Gateway, model: &str) -> JoinHandle<(StatusCode, String)> {
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat(model, &[]))))
        .unwrap();
    tokio::spawn(async move {
        let res = client().request(req).await.unwrap();
        (res.status(), text(res).await)
    })
}

/// A gateway served `serving` in front of a new upstream (returned, to keep it running),
/// with a request for `slow` in flight (`spawn_chat`): the upstream holds it, and answers it
/// after `delay`.
async fn with_one_in_flight(
    delay: Duration,
    serving: Serving,
) -> (Upstream, Gateway, JoinHandle<(StatusCode, String)>) {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(delay));
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, serving).await;
    let in_flight = spawn_chat(&gw, "slow");
    while up.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (up, gw, in_flight)
}

/// Asserts that the request in flight (`spawn_chat` of `slow`) is answered, then that the
/// server stops within `within` (`why` it would not).
async fn answered_then_stopped(
    in_flight: JoinHandle<(StatusCode, String)>,
    server: JoinHandle<io::Result<()>>,
    within: Duration,
    why: &str,
) {
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("hello from slow"), "{body}");
    tokio::time::timeout(within, server)
        .await
        .expect(why)
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let (_up, mut gw, in_flight) =
        with_one_in_flight(Duration::from_millis(300), Serving::PerCore).await;
    gw.stop.take().unwrap().send(()).unwrap();
    let why = "the server stops once the request is done";
    answered_then_stopped(in_flight, gw.task, Duration::from_secs(5), why).await;
    assert_eq!(*gw.stopped.lock().unwrap(), Some(app::Stopped::Drained));
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no new connections after shutdown"
    );
}

/// A drain cut short (the gateway's `[timeouts] drain`, or a second signal) closes the
/// connections of requests still in flight: the workers' runtimes go, and the server ends at
/// once instead of waiting for the upstream.
#[tokio::test]
async fn a_cut_drain_closes_requests_still_in_flight() {
    let up = Upstream::start().await;
    up.set("slow", Behavior::Delay(Duration::from_secs(60)));
    let mut gw = Gateway::start(&config_for(&up, "")).await;
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("slow", &[]))))
        .unwrap();
    let in_flight = tokio::spawn(client().request(req));
    while up.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    gw.stop_then_cut().await;
    assert_eq!(*gw.stopped.lock().unwrap(), Some(app::Stopped::Cut));
    let answer = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the request's connection is closed")
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
}

/// A connection that has sent part of a request head is not closed by hyper's graceful
/// shutdown (which closes connections that have read nothing and turns keep-alive off on the
/// others): the head timeout still closes it during the drain, so that shutdown ends, and the
/// request in flight before it is answered.
#[tokio::test]
async fn a_partial_head_holds_shutdown_up_only_until_the_head_timeout() {
    let head_timeout = Serving::HeadTimeout(Duration::from_secs(1));
    let (_up, mut gw, in_flight) =
        with_one_in_flight(Duration::from_millis(300), head_timeout).await;
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Time for the gateway to read those bytes (the head timeout is twice as long); read
    // later, they would be a connection that had read nothing, which shutdown closes at once.
    tokio::time::sleep(Duration::from_millis(500)).await;

    gw.stop.take().unwrap().send(()).unwrap();
    let why = "the head timeout closes the partial head, and shutdown ends";
    answered_then_stopped(in_flight, gw.task, Duration::from_secs(10), why).await;
    let mut buf = [0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), partial.read(&mut buf))
        .await
        .expect("the partial head's connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Once the workers stop accepting, the listening socket is closed: a new connection is
/// refused (or reset, when it reached the backlog just before), not accepted by the kernel and
/// left unanswered until the drain ends.
#[tokio::test]
async fn new_connections_are_refused_while_in_flight_requests_finish() {
    let (_up, mut gw, in_flight) =
        with_one_in_flight(Duration::from_secs(3), Serving::PerCore).await;

    gw.stop.take().unwrap().send(()).unwrap();
    // Until the listener is closed, a connection may still be served (or closed at once).
    while let Ok(mut stream) = tokio::net::TcpStream::connect(gw.addr).await {
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
            .await;
        let mut buf = [0; 1024];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        assert!(read.is_ok(), "a connection made during the drain hangs");
        assert!(!in_flight.is_finished(), "accepting until the drain ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = "the server stops once the request is done";
    answered_then_stopped(in_flight, gw.task, Duration::from_secs(10), why).await;
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_keep_alive_connections() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&config_for(&up, "")).await;
    // A client that got its answer and keeps the connection open.
    let (mut idle, response) = open_connection(gw.addr).await;
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(!response.contains("connection: close"), "{response}");

    gw.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), gw.task)
        .await
        .expect("an idle keep-alive connection does not hold shutdown up")
        .unwrap()
        .unwrap();
    // The server closed the connection: the end of the stream, nothing more.
    let mut buf = [0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the connection is closed")
        .unwrap();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
}

/// A listener whose accepts fail, as when the process is out of file descriptors, while
/// `failing` is set; counts its failures.
struct FailingListener {
    listener: TcpListener,
    failing: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
}

impl app::Accept for FailingListener {
    async fn accept(&self) -> io::Result<tokio::net::TcpStream> {
        if self.failing.load(Ordering::Relaxed) {
            // As a listening socket whose backlog stays readable: every accept fails at once
            // (the yield lets the test's runtime go on should the loop retry without pause).
            tokio::task::yield_now().await;
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other("Too many open files (injected)"));
        }
        let (stream, _) = self.listener.accept().await?;
        Ok(stream)
    }
}

/// A failed accept is logged, then the next comes after a pause: retried at once, it spun
/// every worker at 100% CPU while the cause (no file descriptor left) lasted. Once accepts
/// work again, the connection that waited in the backlog is served.
// Single-threaded so that the gateway logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_accept_is_logged_and_retried_after_a_pause() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    let config = config::Config::from_toml(&config_for(&up, "")).unwrap();
    let tls = common::upstream::default_tls().unwrap();
    let app = app::build(&config, &|_: &str| None, tls).unwrap();
    let listener = FailingListener {
        listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        failing: Arc::new(AtomicBool::new(true)),
        failures: Arc::default(),
    };
    let addr = listener.listener.local_addr().unwrap();
    let (failing, failures) = (listener.failing.clone(), listener.failures.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, app, async move {
        let _ = stopped.await;
    }));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = failures.load(Ordering::Relaxed);
    assert!(
        (1..=3).contains(&failed),
        "{failed} failed accepts in 300 ms"
    );
    let logged = logs.text();
    assert_eq!(logged.matches("accept failed").count(), failed, "{logged}");

    failing.store(false, Ordering::Relaxed);
    let (_, response) = open_connection(addr).await;
    assert!(response.starts_with("http/1.1 200"), "{response}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// A hyper server connection over an in-memory pipe that answers every request with `ok`,
/// and the client's end of the pipe.
fn piped_connection() -> (
    impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send + 'static,
    tokio::io::DuplexStream,
) {
    let (client, server) = tokio::io::duplex(4096);
    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service);
    (connection, client)
}

#[tokio::test]
async fn a_connection_first_polled_during_shutdown_is_told() {
    let mut drain = drain::Drain::new();
    let (connection, mut client) = piped_connection();
    let connection = drain.watch(connection, Arc::default());
    // Shutdown signals before the connection's task has ever polled it.
    let shutdown = tokio::spawn(async move {
        drain
            .shutdown(&mut tokio::time::interval(Duration::from_secs(3600)))
            .await;
    });
    tokio::task::yield_now().await;
    assert!(!shutdown.is_finished(), "the connection is still counted");
    let served = tokio::spawn(connection);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown waits for the connection, which is told to close")
        .unwrap();
    served.await.unwrap().expect("ended, not cut").unwrap();
    let mut buf = [0; 64];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed unanswered");
}

#[tokio::test]
async fn the_drain_registry_stays_bounded() {
    let mut drain = drain::Drain::new();
    let (held, mut held_client) = piped_connection();
    let held = tokio::spawn(drain.watch(held, Arc::default()));
    for _ in 0..1000 {
        let (connection, client) = piped_connection();
        drop(client);
        // The client is gone: the connection ends at its first poll.
        let _ = tokio::spawn(drain.watch(connection, Arc::default()))
            .await
            .unwrap();
        // One live connection; finished ones are pruned once there are 64 entries.
        assert!(drain.registered() <= 65, "{}", drain.registered());
    }
    // The one still open, idle and waiting, is woken and closes.
    let looks = &mut tokio::time::interval(Duration::from_secs(3600));
    tokio::time::timeout(Duration::from_secs(5), drain.shutdown(looks))
        .await
        .expect("the idle connection is told to close");
    held.await.unwrap().expect("ended, not cut").unwrap();
    let mut buf = [0; 64];
    assert_eq!(held_client.read(&mut buf).await.unwrap(), 0);
}

#[test]
fn a_connection_quiet_through_three_looks_has_waited_too_long_for_a_head() {
    let activity = head_timeout::Activity::default();
    for _ in 1..head_timeout::QUIET_LOOKS {
        assert!(!activity.look());
    }
    assert!(activity.look(), "no first head through three looks");
}

#[test]
fn a_request_in_flight_keeps_a_connection_and_its_end_starts_the_wait() {
    let activity = head_timeout::Activity::default();
    activity.look();
    activity.look();
    activity.start();
    for _ in 0..10 {
        assert!(!activity.look(), "in flight, however long it takes");
    }
    activity.end();
    assert!(!activity.look());
    // A request started and answered between two looks: the wait begins again.
    activity.start();
    activity.end();
    for _ in 1..head_timeout::QUIET_LOOKS {
        assert!(!activity.look());
    }
    assert!(activity.look());
}

/// The official OpenAI Python SDK against the gateway: `extra_body={"models": [...]}` as
/// OpenRouter documents it, a stream, `client.responses.create` (plain, auto and streamed),
/// `/v1/models`, an error. Skipped (with a notice) when
/// `import openai` fails, unless `REQUIRE_OPENAI_SDK=1`.
#[tokio::test]
async fn the_openai_python_sdk_works_against_the_gateway() {
    let available = tokio::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .await
        .is_ok_and(|out| out.status.success());
    if !available {
        assert!(
            std::env::var("REQUIRE_OPENAI_SDK").as_deref() != Ok("1"),
            "REQUIRE_OPENAI_SDK=1 but `python3 -c 'import openai'` fails: pip install openai"
        );
        eprintln!("NOTICE: skipping the OpenAI Python SDK test: `import openai` fails (pip install openai)");
        return;
    }
    let up = Upstream::start().await;
    up.set(
        "primary",
        Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
    );
    let events: Vec<&'static str> = (0..3)
        .map(|i| &*Box::leak(support::chunk("streamer", i).into_boxed_str()))
        .collect();
    up.set("streamer", Behavior::Stream(events));
    for gone in ["gone", "gone-too"] {
        up.set(
            gone,
            Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
        );
    }
    up.set("responder", Behavior::StreamRaw(RESPONSES_STREAM));
    let gw = Gateway::start(&config_for(&up, "")).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gateway_sdk.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("GATEWAY_URL", gw.url("/v1"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk ok"), "{stdout}");
    // The SDK's requests reached the upstream with the fallback applied.
    let models = up.models_received();
    assert!(
        models.starts_with(&["primary".to_owned(), "backup".to_owned()]),
        "{models:?}"
    );
    assert!(models.contains(&"streamer".to_owned()), "{models:?}");
    // `client.responses.create` went to `/v1/responses`, with the fallback applied.
    let responses: Vec<String> = up
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/responses")
        .map(|r| r.model.unwrap_or_default())
        .collect();
    assert_eq!(responses.len(), 5, "{responses:?}");
    assert_eq!(responses[..2], ["gone", "backup"], "{responses:?}");
    assert!(
        ["primary", "backup"].contains(&responses[2].as_str()),
        "{responses:?}"
    );
    assert_eq!(responses[3..], ["gone-too", "responder"], "{responses:?}");
}

#[tokio::test]
async fn the_example_and_the_benchmark_configurations_are_accepted() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tls = common::upstream::default_tls().unwrap();
    let example = std::fs::read_to_string(format!("{root}/gateway.example.toml")).unwrap();
    let config = config::Config::from_toml(&example).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080");
    assert!(config.models.len() >= 3);
    let env = |name: &str| (name == "OPENROUTER_API_KEY").then(|| "sk-or-test".to_owned());
    if let Err(error) = app::build(&config, &env, tls.clone()) {
        panic!("gateway.example.toml: {error}");
    }

    // The benchmark harness runs the gateway with this exact file.
    let bench = format!("{root}/../shared/bench/ours/gateway.toml");
    match std::fs::read_to_string(&bench) {
        Ok(text) => {
            let config = config::Config::from_toml(&text).unwrap();
            assert_eq!(config.fallback.models, ["gpt-4o"]);
            if let Err(error) = app::build(&config, &|_| None, tls) {
                panic!("{bench}: {error}");
            }
        }
        Err(_) => eprintln!("NOTICE: {bench} is missing: not checked"),
    }
}

/// A Responses API stream cut midway ends with the Responses API's `error` event (not a chat
/// chunk), and is logged and counted `broken` all the same: the gateway knows the routing
/// layer's error event in every API's shape.
#[tokio::test]
async fn a_cut_responses_stream_is_recorded_as_broken() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    up.set(
        "primary",
        Behavior::StreamRaw(concat!(
            "event: response.created\n",
            "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
            "event: response.output_text.delta\n",
            "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"resp",
        )),
    );
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, Serving::ThisRuntime).await;
    let body = json!({"model": "primary", "input": "hi", "stream": true}).to_string();
    let res = tokio::time::timeout(Duration::from_secs(10), gw.post_to("/v1/responses", &body))
        .await
        .expect("an answer within 10 s");
    assert_eq!(res.status(), 200);
    let body = text(res).await;
    assert!(
        body.ends_with("\n\n") && body.contains("event: error\ndata: {\"type\":\"error\""),
        "{body}"
    );
    let lines = lines_with(&logs, "responses request", 1).await;
    assert!(lines[0].contains(r#"outcome="broken""#), "{lines:#?}");
    let (_, metrics) = gw.get("/metrics").await;
    let broken = r#"llm_gateway_requests_total{model="primary",outcome="broken"}"#;
    assert_eq!(metric(&metrics, broken), 1.0, "{metrics}");
}

/// The `chat completion` log lines written so far, once `n` of them are there (within 5 s).
async fn chat_lines(logs: &LogBuf, n: usize) -> Vec<String> {
    lines_with(logs, "chat completion", n).await
}

/// The log lines holding `needle` written so far, once `n` of them are there (within 5 s).
async fn lines_with(logs: &LogBuf, needle: &str, n: usize) -> Vec<String> {
    for _ in 0..50 {
        let lines: Vec<String> = logs
            .text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} lines with {needle:?}: {}", logs.text());
}

/// A stream is logged and counted when its body ends, with how it ended: a stream that
/// stalled or broke after its head went out is not `ok` (its client got
/// `finish_reason:"error"`), nor is one its client left midway. The line says how long the
/// head took and how long the whole answer took.
#[tokio::test]
async fn a_stream_is_recorded_when_it_ends_with_how_it_ended() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    up.set("primary", Behavior::StreamPause(Duration::from_secs(60)));
    up.set("backup", Behavior::StreamBreak(2));
    up.set("whole", Behavior::Stream(vec!["{}"]));
    up.set("endless", Behavior::StreamForever);
    let config = config_for(&up, "[timeouts]\nidle = 1\n");
    let gw = Gateway::start_with(&config, &[], None, Serving::ThisRuntime).await;
    let stream = |model: &str| {
        json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };
    for model in ["primary", "backup", "whole"] {
        let res = post_within_10s(&gw, &stream(model)).await;
        assert_eq!(res.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(10), text(res))
            .await
            .expect("the stream ends");
        assert_eq!(
            body.contains(r#""finish_reason":"error""#),
            model != "whole"
        );
    }
    // A client that leaves after the first event.
    let mut body = post_within_10s(&gw, &stream("endless")).await.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let lines = chat_lines(&logs, 4).await;
    let outcome = |model: &str| {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("model=\"{model}\"")))
            .unwrap_or_else(|| panic!("no line for {model}: {lines:#?}"));
        assert!(
            line.contains(" head_ms=") && line.contains(" total_ms="),
            "{line}"
        );
        line.split(" outcome=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(outcome("primary"), r#""stalled""#);
    assert_eq!(outcome("backup"), r#""broken""#);
    assert_eq!(outcome("whole"), r#""ok""#);
    assert_eq!(outcome("endless"), r#""cancelled""#);

    let (_, metrics) = gw.get("/metrics").await;
    for (model, outcome) in [
        ("primary", "stalled"),
        ("backup", "broken"),
        ("other", "ok"),
        ("other", "cancelled"),
    ] {
        let name = format!(r#"llm_gateway_requests_total{{model="{model}",outcome="{outcome}"}}"#);
        assert_eq!(metric(&metrics, &name), 1.0, "{name}: {metrics}");
    }
    assert_eq!(
        metric(
            &metrics,
            r#"llm_gateway_requests_total{model="primary",outcome="ok"}"#
        ),
        0.0,
        "{metrics}"
    );
    // Every stream's head was timed, and each one's whole length.
    assert_eq!(
        metric(&metrics, "llm_gateway_request_duration_seconds_count"),
        4.0
    );
    assert_eq!(
        metric(&metrics, "llm_gateway_stream_duration_seconds_count"),
        4.0
    );
    assert!(
        metric(&metrics, "llm_gateway_stream_duration_seconds_sum") >= 1.0,
        "{metrics}"
    );
}

/// The auto router's decision is in the line of a request it routed: the model it chose (the
/// one the attempts begin with), the prompt's score and why; a request it did not route has
/// none of them.
#[tokio::test]
async fn the_log_line_of_an_auto_request_says_what_was_chosen_and_why() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, Serving::ThisRuntime).await;
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 200);
    let chosen = header(&res, "x-llm-router-model");
    text(res).await;
    let res = gw.post(&chat("primary", &[])).await;
    assert_eq!(res.status(), 200);
    text(res).await;

    let lines = chat_lines(&logs, 2).await;
    let field = |line: &str, name: &str| -> Option<String> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next()?.to_owned(),
            None => rest.split(' ').next()?.to_owned(),
        })
    };
    let auto = &lines[0];
    assert_eq!(field(auto, "model").as_deref(), Some("auto"), "{auto}");
    assert_eq!(field(auto, "auto_chosen"), Some(chosen), "{auto}");
    let score: f64 = field(auto, "auto_score").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&score), "{auto}");
    assert!(!field(auto, "auto_reason").unwrap().is_empty(), "{auto}");
    assert!(!lines[1].contains("auto_"), "{}", lines[1]);
}

/// The line names the model the client asked, also when it cools down and the layer tries
/// another first; and its attempts show that it was passed over.
#[tokio::test]
async fn the_log_line_names_the_model_asked_when_it_cools_down() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    up.set("primary", Behavior::Status(429, vec![], "{}"));
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, Serving::ThisRuntime).await;
    for attempts in ["primary=rate_limited, backup=ok", "backup=ok"] {
        let res = gw.post(&chat("primary", &[])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "x-llm-router-attempts"), attempts);
        text(res).await;
    }
    // Cooling down, but last in the chain anyway: not passed over.
    let res = gw.post(&chat("backup", &["primary"])).await;
    assert_eq!(header(&res, "x-llm-router-attempts"), "backup=ok");
    text(res).await;
    let lines = chat_lines(&logs, 3).await;
    assert!(
        lines[2].contains(r#"model="backup" attempts="backup=ok""#),
        "{}",
        lines[2]
    );
    assert!(
        lines[0].contains(r#"model="primary" attempts="primary=rate_limited, backup=ok""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#"model="primary" attempts="primary=cooling_down, backup=ok""#),
        "{}",
        lines[1]
    );
}

/// What the drain's cut closes is not logged as left by its client: a request waiting for its
/// answer, and a stream midway (`outcome="cut"`). The workers log on their own threads: this
/// test's lines go through the global subscriber (its own models name them).
#[tokio::test]
async fn a_cut_drain_is_not_logged_as_the_client_leaving() {
    let logs = LogBuf::global();
    let up = Upstream::start().await;
    up.set("slow-cut", Behavior::Delay(Duration::from_secs(60)));
    up.set("stream-cut", Behavior::StreamForever);
    let mut gw = Gateway::start(&config_for(&up, "")).await;
    let waiting = tokio::spawn(
        client().request(
            Request::post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat("slow-cut", &[]))))
                .unwrap(),
        ),
    );
    let stream = json!({"model": "stream-cut", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut streaming = post_within_10s(&gw, &stream.to_string()).await.into_body();
    streaming.frame().await.unwrap().unwrap();
    while up.received().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    gw.stop_then_cut().await;
    assert!(waiting.await.unwrap().is_err());
    drop(streaming);

    let logged = logs.text();
    let line = |model: &str| {
        logged
            .lines()
            .find(|l| l.contains("chat completion") && l.contains(&format!("model=\"{model}\"")))
            .unwrap_or_else(|| panic!("no line for {model}: {logged}"))
            .to_owned()
    };
    let waited = line("slow-cut");
    assert!(
        waited.contains("drain's cut") && !waited.contains("client left"),
        "{waited}"
    );
    assert!(line("stream-cut").contains(r#"outcome="cut""#), "{logged}");
}

/// The line of an auto request whose best-ranked model cools down names the sentinel asked and
/// shows the model the router passed over (`model=cooling_down`) before the attempts.
#[tokio::test]
async fn the_log_line_of_an_auto_request_shows_the_models_the_router_passed_over() {
    let (logs, _guard) = LogBuf::capture();
    let up = Upstream::start().await;
    up.set(
        "backup",
        Behavior::Status(429, vec![("retry-after", "30")], "{}"),
    );
    let gw = Gateway::start_with(&config_for(&up, ""), &[], None, Serving::ThisRuntime).await;
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(
        header(&res, "x-llm-router-attempts"),
        "backup=rate_limited, primary=ok"
    );
    text(res).await;
    let res = gw.post(&chat("auto", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-attempts"), "primary=ok");
    text(res).await;
    let lines = chat_lines(&logs, 2).await;
    assert!(
        lines[1].contains(r#"model="auto" attempts="backup=cooling_down, primary=ok""#),
        "{}",
        lines[1]
    );
}

/// Found by the operator's review of session 14: a value of the wrong type or out of range said
/// where (line, column) and what the parser expected in Rust's words (`expected f64`,
/// `expected usize`), but not which key: `[timeouts] idle = "5s"` gave `line 2, column 8:
/// invalid type: string "…", expected f64`. The error now names the key, and the kind of value
/// it takes, in the file's words.
#[test]
fn a_config_value_of_the_wrong_kind_names_its_key() {
    let cases = [
        (
            "[timeouts]\nidle = \"5s\"\n",
            "`timeouts.idle`",
            "expected a number",
        ),
        (
            "max_body_bytes = -5\n",
            "`max_body_bytes`",
            "expected a whole number",
        ),
        (
            "workers = 0\n",
            "`workers`",
            "expected a whole number from 1 to 1024",
        ),
        // A worker is a thread with a runtime and a copy of the routing stack: 100,000 took
        // 1.5 GB before failing with "Too many open files", which did not name `workers`.
        (
            "workers = 100000\n",
            "`workers`",
            "expected a whole number from 1 to 1024",
        ),
        (
            "[[models]]\nid = \"a\"\ncontext_window = 1.5\n",
            "`models.context_window`",
            "expected a whole number",
        ),
        (
            "allow_models = \"openai/*\"\n",
            "`allow_models`",
            "expected a list",
        ),
        ("timeouts = 5\n", "`timeouts`", "expected a table"),
    ];
    for (text, key, expected) in cases {
        let error = config::Config::from_toml(text).err().unwrap();
        assert!(error.contains(key), "{text}: {error}");
        assert!(error.contains(expected), "{text}: {error}");
        assert!(
            !error.contains("f64") && !error.contains("usize"),
            "{error}"
        );
    }
    for workers in [1, 2, 1024] {
        let config = config::Config::from_toml(&format!("workers = {workers}\n")).unwrap();
        assert_eq!(config.workers.map(|n| n.get()), Some(workers));
    }
    assert_eq!(config::Config::from_toml("").unwrap().workers, None);
}

/// An unknown key is named (a typo is found at once), unless it does not look like a key: a
/// secret pasted as a key's name (`sk-or-v1-… = 5`) was echoed whole into the error.
#[test]
fn an_unknown_key_is_named_unless_it_looks_like_a_secret() {
    let typo = config::Config::from_toml("[timeouts]\nidel = 5\n")
        .err()
        .unwrap();
    assert!(typo.contains("unknown field `idel`"), "{typo}");
    for pasted in ["sk-or-v1-abcdef0123456789", "\"sk proj 0123\""] {
        let error = config::Config::from_toml(&format!("[timeouts]\n{pasted} = 5\n"))
            .err()
            .unwrap();
        assert!(error.contains("unknown field"), "{error}");
        assert!(!error.contains("0123"), "{error}");
    }
}

/// Found by the operator's review of session 14: both duration histograms ended at 30 s, below
/// the gateway's own bounds (300 s for a non-streamed answer's head, streams that run for
/// minutes), so a 31 s stream and a 90 s one fell in the same `+Inf` bucket and
/// `histogram_quantile` said 30 s of both. The buckets now go on to 600 s, the OpenAI SDKs'
/// own timeout.
#[test]
fn the_duration_histograms_tell_minutes_apart() {
    let shard = Arc::new(metrics::Metrics::new(["m"]));
    shard.record_stream(Duration::from_secs(90));
    shard.record(
        None,
        None,
        metrics::Ended::Answered,
        Some(Duration::from_secs(200)),
    );
    let text = metrics::Metrics::render(&[shard]);
    let stream = "llm_gateway_stream_duration_seconds_bucket";
    let head = "llm_gateway_request_duration_seconds_bucket";
    for (name, under, over) in [(stream, "60", "120"), (head, "120", "300")] {
        let bucket = |le: &str| format!("{name}{{le=\"{le}\"}}");
        assert!(text.contains(&bucket(over)), "{text}");
        assert_eq!(metric(&text, &bucket(under)), 0.0, "{text}");
        assert_eq!(metric(&text, &bucket(over)), 1.0, "{text}");
    }
}

/// Two `auto` models on `up`: `small`, whose 16k window cannot hold a 20,000-token answer,
/// and `large`; `auto_extra` goes in `[auto]`.
fn small_and_large(up: &Upstream, auto_extra: &str) -> String {
    format!(
        r#"
upstream = "http://{}/v1"

[[models]]
id = "small"
context_window = 16000
input_price = 0.1
output_price = 0.4

[[models]]
id = "large"
context_window = 200000
input_price = 3.0
output_price = 15.0

[auto]
{auto_extra}
"#,
        up.addr
    )
}

/// The two turns of one conversation on `auto`: the first asks for a long answer, which only
/// `large` can give; the second, a short "thanks" with a short answer, alone goes to `small`.
fn two_turns() -> [String; 2] {
    let opening = json!({"role": "user", "content": "Write the quarterly report."});
    let first = json!({"model": "auto", "max_tokens": 20000, "messages": [opening]});
    let second = json!({"model": "auto", "max_tokens": 100, "messages": [
        opening,
        {"role": "assistant", "content": "Here is the report."},
        {"role": "user", "content": "Thanks!"},
    ]});
    [first.to_string(), second.to_string()]
}

/// With `[auto] session_affinity`, turn 2 of a conversation goes to the model that served
/// turn 1, although its prompt alone routes to another; without it, each turn is routed from
/// its own prompt. Turn 2 goes to the other worker: the workers share the conversations (a
/// client's next turn comes on any connection, so to any worker).
#[tokio::test]
async fn with_session_affinity_a_conversation_stays_on_its_model_across_workers() {
    for (auto_extra, second_served) in [
        ("session_affinity = true", "large"),
        ("", "small"),
        ("session_affinity = false\nmax_sessions = 100", "small"),
    ] {
        let up = Upstream::start().await;
        let config = config::Config::from_toml(&small_and_large(&up, auto_extra)).unwrap();
        let tls = common::upstream::default_tls().unwrap();
        let workers = NonZeroUsize::new(2).unwrap();
        let mut apps = app::build_workers(&config, &|_: &str| None, tls, workers).unwrap();
        let first = Gateway::serve(apps.split_off(1), Serving::ThisRuntime);
        let second = Gateway::serve(apps, Serving::ThisRuntime);
        let [turn1, turn2] = two_turns();

        let res = first.post(&turn1).await;
        assert_eq!(res.status(), 200, "{auto_extra}");
        assert_eq!(header(&res, "x-llm-router-model"), "large", "{auto_extra}");
        let res = second.post(&turn2).await;
        assert_eq!(res.status(), 200, "{auto_extra}");
        assert_eq!(
            header(&res, "x-llm-router-model"),
            second_served,
            "{auto_extra}"
        );
        assert_eq!(
            up.models_received(),
            ["large", second_served],
            "{auto_extra}"
        );
    }
}

/// With client keys, each client's conversations are its own: a client whose later turn
/// opens as another client's conversation did is routed afresh, not put on (and told of) the
/// other's model; a client's own later turn stays.
#[tokio::test]
async fn with_client_keys_a_client_never_lands_on_another_clients_conversation() {
    let up = Upstream::start().await;
    let extra = "client_keys_env = \"GATEWAY_CLIENT_KEYS\"";
    // A top-level key: before the file's first table.
    let toml = format!(
        "{extra}\n{}",
        small_and_large(&up, "session_affinity = true")
    );
    let gw = Gateway::start_with(&toml, &[CLIENT_KEYS], None, Serving::ThisRuntime).await;
    let one = [("authorization", "Bearer client-one-TOKEN")];
    let two = [("authorization", "Bearer client-two-TOKEN")];
    let [turn1, turn2] = two_turns();
    let res = gw.post_with(&turn1, &one).await;
    assert_eq!(header(&res, "x-llm-router-model"), "large");
    let res = gw.post_with(&turn2, &two).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-llm-router-model"), "small", "client two");
    let res = gw.post_with(&turn2, &one).await;
    assert_eq!(header(&res, "x-llm-router-model"), "large", "client one");
    assert_eq!(up.models_received(), ["large", "small", "large"]);
}

/// `max_sessions` and `session_ttl` reach the layer: with room for one conversation, a second
/// one pushes the first out; with a 50 ms memory, a turn after it is routed afresh.
#[tokio::test]
async fn max_sessions_and_session_ttl_bound_what_the_gateway_remembers() {
    let other_opening = |body: &str| body.replace("quarterly report", "annual report");
    for (auto_extra, wait, forget) in [
        (
            "session_affinity = true\nmax_sessions = 1",
            Duration::ZERO,
            true,
        ),
        (
            "session_affinity = true\nmax_sessions = 2",
            Duration::ZERO,
            false,
        ),
        (
            "session_affinity = true\nsession_ttl = 0.05",
            Duration::from_millis(150),
            false,
        ),
    ] {
        let up = Upstream::start().await;
        let gw = Gateway::start(&small_and_large(&up, auto_extra)).await;
        let [turn1, turn2] = two_turns();
        let res = gw.post(&turn1).await;
        assert_eq!(header(&res, "x-llm-router-model"), "large", "{auto_extra}");
        if forget {
            // Another conversation, answered after the first: the one the store keeps.
            let res = gw.post(&other_opening(&turn1)).await;
            assert_eq!(header(&res, "x-llm-router-model"), "large", "{auto_extra}");
        }
        tokio::time::sleep(wait).await;
        let res = gw.post(&turn2).await;
        let remembered = !forget && wait.is_zero();
        let expected = if remembered { "large" } else { "small" };
        assert_eq!(header(&res, "x-llm-router-model"), expected, "{auto_extra}");
    }
}

/// A session affinity value that cannot work is a startup error naming its key.
#[tokio::test]
async fn bad_session_affinity_values_are_startup_errors_naming_the_key() {
    for (auto_extra, key) in [
        (
            "session_affinity = true\nmax_sessions = 0",
            "auto.max_sessions",
        ),
        ("max_sessions = 0", "auto.max_sessions"),
        (
            "session_affinity = true\nsession_ttl = 0",
            "auto.session_ttl",
        ),
        (
            "session_affinity = true\nsession_ttl = -1",
            "auto.session_ttl",
        ),
        (
            "session_affinity = true\nsession_ttl = nan",
            "auto.session_ttl",
        ),
        ("session_ttl = inf", "auto.session_ttl"),
    ] {
        let error = startup_error(&format!("[auto]\n{auto_extra}"));
        assert!(error.contains(key), "{auto_extra}: {error}");
        assert!(
            !error.contains("line "),
            "a value error, not a parse error: {error}"
        );
    }
    // The wrong type: the parser's error names the key.
    for (auto_extra, key) in [
        ("session_affinity = \"yes\"", "auto.session_affinity"),
        ("max_sessions = -1", "auto.max_sessions"),
        ("max_sessions = 1.5", "auto.max_sessions"),
        ("session_ttl = \"1h\"", "auto.session_ttl"),
    ] {
        let error = config::Config::from_toml(&format!("[auto]\n{auto_extra}"))
            .err()
            .unwrap_or_else(|| panic!("parsed: {auto_extra}"));
        assert!(error.contains(key), "{auto_extra}: {error}");
    }
}

/// OpenRouter's `cost_tier` plugin option goes through the gateway's chat route to the auto
/// router: `low` takes the cheaper model, `max` the dearer, for the same short prompt.
#[tokio::test]
async fn cost_tier_chooses_the_band_through_the_gateway() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&small_and_large(&up, "")).await;
    for (tier, served) in [("low", "small"), ("max", "large")] {
        let body = json!({
            "model": "auto",
            "messages": [{"role": "user", "content": "hi"}],
            "plugins": [{"id": "auto-router", "cost_tier": tier}],
        });
        let res = gw.post(&body.to_string()).await;
        assert_eq!(res.status(), 200, "{tier}");
        assert_eq!(header(&res, "x-llm-router-model"), served, "{tier}");
    }
    assert_eq!(up.models_received(), ["small", "large"]);
}
