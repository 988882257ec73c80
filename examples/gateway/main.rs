//! An OpenAI-compatible gateway with OpenRouter-style routing: `models` fallback and
//! `"model": "auto"`, in front of any OpenAI-compatible upstream (OpenRouter by default).
//!
//! ```text
//! cargo run --release --example gateway -- --config gateway.toml
//! cargo run --release --example gateway                      # in front of simulated providers
//! ```
//!
//! Flags: `--config PATH`, `--listen ADDR`, `--upstream URL` (override the file). Routes:
//! `POST /v1/chat/completions`, `GET /v1/models`, `GET /healthz`, `GET /metrics`.
//! Logs: one line per request, filtered by `RUST_LOG` (default `info`).

#[path = "../common/mod.rs"]
mod common;

mod app;
mod config;
mod metrics;

use std::process::ExitCode;

use config::Config;

const USAGE: &str = "usage: gateway [--config PATH] [--listen ADDR] [--upstream URL]

  --config PATH    TOML configuration (see gateway.example.toml)
  --listen ADDR    address to listen on (overrides the file; default 127.0.0.1:8080)
  --upstream URL   default OpenAI-compatible base URL (overrides the file)

With neither --config nor --upstream, the gateway starts in front of simulated providers.";

#[derive(Debug, Default)]
struct Args {
    config: Option<String>,
    listen: Option<String>,
    upstream: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let slot = match flag.as_str() {
            "--config" => &mut parsed.config,
            "--listen" => &mut parsed.listen,
            "--upstream" => &mut parsed.upstream,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(value);
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = match (&args.config, &args.upstream) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            Config::from_toml(&text).map_err(|e| format!("{path}: {e}"))?
        }
        (None, Some(upstream)) => Config::with_upstream(upstream),
        (None, None) => {
            let providers = common::providers::Providers::start()
                .await
                .map_err(|e| format!("cannot start the simulated providers: {e}"))?;
            tracing::info!(
                "no --config or --upstream: serving simulated providers on 127.0.0.1 \
                 (rate limited, down, moderated, small context, healthy, streaming)"
            );
            app::simulated_config(&providers, config::DEFAULT_LISTEN)
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(upstream) = args.upstream {
        config.upstream = upstream;
    }
    let tls = common::upstream::default_tls().map_err(|e| format!("TLS setup: {e}"))?;
    let router = app::build(&config, &app::process_env, tls)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let ids: Vec<&str> = config.models.iter().map(|m| m.id.as_str()).collect();
    tracing::info!(
        "listening on http://{addr}/v1 (default upstream {}, models: {}, auto model {:?})",
        config.upstream,
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(", ")
        },
        config.auto.model,
    );
    app::serve(listener, router, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("shut down: in-flight requests finished");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
