//! examples/gateway: SIGHUP reloads the `[[models]]` catalog fields from `--config` (the
//! gateway's own `reload::on_hangup`, as `main` installs it) into `auto` routing and
//! `GET /v1/models` of every worker, and refuses a file that changes anything else. The
//! gateway is built by the example's code and served by `app::serve_per_core` (two workers) on
//! 127.0.0.1, in front of the scripted upstream; the signal is a real one, sent to this test
//! process with `kill -HUP`. A signal handler is the process's: this binary holds one test.

mod support;

include!("support/gateway_modules.rs");

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{post_for_model, LogBuf, Upstream};

/// The configuration file: the upstream, then `rest`.
fn file(up: &Upstream, rest: &str) -> String {
    format!("upstream = \"http://{}/v1\"\n{rest}", up.addr)
}

/// Two models of one window, priced `a` and `b` (USD per million tokens, in and out).
fn two_models(a: f64, b: f64) -> String {
    format!(
        "[[models]]\nid = \"a\"\ncontext_window = 32000\ninput_price = {a}\noutput_price = {a}\n\
         [[models]]\nid = \"b\"\ncontext_window = 32000\ninput_price = {b}\noutput_price = {b}\n"
    )
}

/// The model an easy `auto` request is routed to (the cheapest), and the status.
async fn auto_model(addr: SocketAddr) -> (u16, String) {
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    routed(addr, &body).await
}

/// The status of a chat completion with `body`, and the model that answered it.
async fn routed(addr: SocketAddr, body: &Value) -> (u16, String) {
    post_for_model(addr, "/v1/chat/completions", body).await
}

/// `GET /v1/models`: the listed ids and `a`'s prompt price.
async fn listed(addr: SocketAddr) -> (Vec<String>, Value) {
    let text = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .expect("the gateway answers")
        .text()
        .await
        .expect("a whole body");
    let list: Value = serde_json::from_str(&text).expect("a JSON list");
    let data = list["data"].as_array().cloned().unwrap_or_default();
    let ids = data
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let price = data
        .iter()
        .find(|m| m["id"] == "a")
        .map(|m| m["pricing"]["prompt"].clone())
        .unwrap_or(Value::Null);
    (ids, price)
}

/// Writes `text` to `path`, sends this process a SIGHUP, and returns the first log line about
/// it (every handler installed logs one).
async fn hangup(logs: &LogBuf, path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("the file written");
    let before = sighup_lines(logs).len();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    for _ in 0..500 {
        if let Some(line) = sighup_lines(logs).get(before) {
            return line.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line after SIGHUP: {}", logs.text());
}

fn sighup_lines(logs: &LogBuf) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|line| line.contains("SIGHUP"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn sighup_reloads_the_catalog_fields_and_nothing_else() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only test of this binary");

    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("gateway-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory of our own");
    let path = dir.join("gateway.toml");
    let started = file(&up, &two_models(0.1, 1.0));
    std::fs::write(&path, &started).expect("the file written");

    // As `main` starts it.
    let config = config::Config::from_toml(&started).expect("a valid file");
    let args = args::Args {
        config: Some(path.to_string_lossy().into_owned()),
        ..args::Args::default()
    };
    let tls = app::upstream_tls(&config).expect("TLS");
    let workers = NonZeroUsize::new(2).expect("two");
    let (apps, catalogs) =
        app::build_reloadable(&config, &|_: &str| None, tls, workers).expect("built");
    let reloader = reload::Reloader::new(args, config, catalogs);
    assert!(reloader.is_some(), "--config given: something to reload");
    tokio::spawn(reload::on_hangup(reloader).expect("the SIGHUP handler"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(app::serve_per_core(
        listener,
        apps,
        std::future::pending::<()>(),
        std::future::pending::<()>(),
    ));

    assert_eq!(auto_model(addr).await, (200, "a".into()));
    let (ids, price) = listed(addr).await;
    assert_eq!(
        (ids, price),
        (
            vec!["auto".into(), "a".into(), "b".into()],
            json!("0.0000001")
        )
    );

    // A price change: applied to routing (every worker: several requests, two connections
    // each at least) and to the list, with one info line.
    let line = hangup(&logs, &path, &file(&up, &two_models(5.0, 1.0))).await;
    assert!(line.contains("INFO") && line.contains("reloaded"), "{line}");
    assert!(line.contains("\"a\"") && !line.contains("\"b\""), "{line}");
    for _ in 0..6 {
        assert_eq!(auto_model(addr).await, (200, "b".into()));
    }
    assert_eq!(listed(addr).await.1, json!("0.000005"));

    // A model added: nothing applied (not even the price change beside it), one warning.
    let added = format!(
        "{}[[models]]\nid = \"c\"\ncontext_window = 32000\ninput_price = 0.01\noutput_price = 0.01\n",
        two_models(0.1, 1.0)
    );
    let line = hangup(&logs, &path, &file(&up, &added)).await;
    assert!(
        line.contains("WARN") && line.contains("not applied"),
        "{line}"
    );
    assert!(
        line.contains("[[models]] ids") && line.contains("restart"),
        "{line}"
    );
    assert_eq!(auto_model(addr).await, (200, "b".into()));
    assert_eq!(
        listed(addr).await,
        (
            vec!["auto".into(), "a".into(), "b".into()],
            json!("0.000005")
        )
    );

    // Another key changed beside the prices: named, nothing applied.
    let moved = format!(
        "{}\n[timeouts]\nconnect = 3\n",
        file(&up, &two_models(0.1, 1.0))
    );
    let line = hangup(&logs, &path, &moved).await;
    assert!(
        line.contains("WARN") && line.contains("[timeouts]"),
        "{line}"
    );
    let upstream = format!(
        "upstream = \"http://127.0.0.1:9/v1\"\n{}",
        two_models(0.1, 1.0)
    );
    let line = hangup(&logs, &path, &upstream).await;
    assert!(
        line.contains("WARN") && line.contains("upstream changed"),
        "{line}"
    );
    assert_eq!(auto_model(addr).await, (200, "b".into()));

    // A file that does not parse, or does not pass the startup checks: nothing applied.
    let line = hangup(&logs, &path, "upstream = [").await;
    assert!(
        line.contains("WARN") && line.contains("not applied"),
        "{line}"
    );
    let negative = file(&up, &two_models(-1.0, 1.0));
    let line = hangup(&logs, &path, &negative).await;
    assert!(
        line.contains("WARN") && line.contains("models[0]"),
        "{line}"
    );
    assert_eq!(auto_model(addr).await, (200, "b".into()));

    // Capabilities reloaded: "b" without tools no longer serves a request with tools.
    let tools = |caps: &str| {
        format!(
            "[[models]]\nid = \"a\"\ncontext_window = 32000\ninput_price = 5\noutput_price = 5\n\
             capabilities = [\"tools\"]\n\
             [[models]]\nid = \"b\"\ncontext_window = 32000\ninput_price = 1\noutput_price = 1\n\
             capabilities = [{caps}]\n"
        )
    };
    let line = hangup(&logs, &path, &file(&up, &tools("\"tools\""))).await;
    assert!(line.contains("INFO"), "{line}");
    let with_tools = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
    let ask_with_tools = || async { routed(addr, &with_tools).await.1 };
    assert_eq!(ask_with_tools().await, "b");
    let line = hangup(&logs, &path, &file(&up, &tools(""))).await;
    assert!(line.contains("INFO") && line.contains("\"b\""), "{line}");
    assert_eq!(ask_with_tools().await, "a");

    // A gateway started without --config says there is nothing to reload (both handlers
    // hear this signal: the first line is the one installed first).
    let args = args::Args::default();
    let config = config::Config::from_toml(&file(&up, "")).expect("a valid file");
    let tls = app::upstream_tls(&config).expect("TLS");
    let (_, catalogs) =
        app::build_reloadable(&config, &|_: &str| None, tls, NonZeroUsize::MIN).expect("built");
    let none = reload::Reloader::new(args, config, catalogs);
    assert!(none.is_none());
    tokio::spawn(reload::on_hangup(none).expect("the SIGHUP handler"));
    let before = sighup_lines(&logs).len();
    hangup(&logs, &path, &file(&up, &tools(""))).await;
    for _ in 0..500 {
        if sighup_lines(&logs).len() >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = sighup_lines(&logs);
    assert!(
        lines[before..]
            .iter()
            .any(|line| line.contains("without --config, nothing to reload")),
        "{lines:?}"
    );
    // Still serving: no SIGHUP ended the process.
    assert_eq!(auto_model(addr).await.0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
