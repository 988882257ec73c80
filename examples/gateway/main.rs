//! An OpenAI-compatible gateway with OpenRouter-style routing: `models` fallback and
//! `"model": "auto"`, in front of any OpenAI-compatible upstream (OpenRouter by default).
//!
//! ```text
//! cargo run --release --example gateway -- --config gateway.toml
//! cargo run --release --example gateway                      # in front of simulated providers
//! ```
//!
//! Flags: `--config PATH`, `--listen ADDR`, `--upstream URL` (override the file). Routes:
//! `POST /v1/chat/completions` and `POST /v1/responses` (OpenAI's Responses API: the same
//! routing, sent to the upstream's `/responses`), `GET /v1/models`, `GET /v1/models/{id}`,
//! `GET /healthz`, `GET /metrics`. With
//! `client_keys_env` in the file, every route but `/healthz` wants `Authorization: Bearer` with
//! one of its keys (401 otherwise).
//! SIGHUP reloads the `[[models]]` catalog fields (windows, prices, capabilities, quality,
//! output limits) from `--config` into `auto` routing and `/v1/models` (`reload`); other
//! changes need a restart.
//! Logs: one line per request (`chat completion` or `responses request`), filtered by `RUST_LOG` (default `info,tower_llm_router=warn`,
//! also in place of a value that is not a valid filter, with a warning).
//! Requests are served by one worker thread per CPU (`workers` in the file), each with its own
//! single-threaded runtime, upstream connections and copy of the layers
//! (`app::build_workers`, `app::serve_per_core`).

#[path = "../common/mod.rs"]
mod common;

mod app;
mod args;
mod balance;
mod config;
mod drain;
mod head_timeout;
mod log;
mod metrics;
mod reload;
mod require_model;
mod stall;

use std::num::NonZeroUsize;
use std::process::ExitCode;

use args::{parse_args, USAGE};
use config::Config;
use log::{CachedTime, LogWriter, PlainFields};

/// Without `RUST_LOG`: the gateway's line per request and warnings. The layers' own records say
/// the same in more words: a `debug` event per failed attempt, inside the request and attempt
/// spans; turn them on with `RUST_LOG=info,tower_llm_router=debug` (`RUST_LOG=info` adds
/// nothing: the layers log no `info` event).
const DEFAULT_LOG_FILTER: &str = "info,tower_llm_router=warn";

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
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = LogWriter::new(!terminal);
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, bad_filter) = log::env_filter(rust_log.as_deref(), DEFAULT_LOG_FILTER);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_timer(CachedTime)
        .fmt_fields(PlainFields)
        .with_writer(logs.clone())
        .init();
    if let Some(warning) = bad_filter {
        tracing::warn!("{warning}");
    }
    // Requests are served by worker threads with runtimes of their own (`app::serve_per_core`);
    // this one starts them and waits for the shutdown signal.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    };
    logs.flush_now();
    code
}

async fn run(args: args::Args) -> Result<(), String> {
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
    let command_line = args.clone();
    args.override_file(&mut config);
    if let Some(warning) = config.exposure_warning() {
        tracing::warn!("{warning}");
    }
    for note in config.model_notes() {
        tracing::warn!("{note}");
    }
    let tls = app::upstream_tls(&config)?;
    let workers = config
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    let (apps, catalogs) = app::build_reloadable(&config, &app::process_env, tls, workers)?;
    // Installed before the first connection: from here on a SIGHUP reloads (or says why it
    // cannot) instead of ending the process.
    let reloads = reload::Reloader::new(command_line, config.clone(), catalogs);
    let reloading =
        reload::on_hangup(reloads).map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    tokio::spawn(reloading);
    // Bound by tokio (a listen backlog of 1024), then handed to the workers.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .and_then(|listener| listener.into_std())
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    tracing::info!("{}", config.startup_line(addr, workers));
    let drain = config.timeouts.drain_limit()?;
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let stopped = app::serve_per_core(listener, apps, shutdown, drain_cut(drain))
        .await
        .map_err(|e| format!("server error: {e}"))?;
    match stopped {
        app::Stopped::Drained => tracing::info!("shut down: in-flight requests finished"),
        app::Stopped::Cut => tracing::warn!("shut down: connections still open were closed"),
    }
    Ok(())
}

/// Completes when the drain must end: after `limit` (`[timeouts] drain`), or at a SIGINT or
/// SIGTERM during it (usually the second one; the first, when a failed worker began the
/// drain). Polled only once shutdown has begun.
async fn drain_cut(limit: Option<std::time::Duration>) {
    let deadline = async {
        match limit {
            Some(limit) => {
                tokio::time::sleep(limit).await;
                tracing::warn!(
                    "requests still in flight after timeouts.drain ({} s): closing their connections",
                    limit.as_secs_f64()
                );
            }
            None => std::future::pending().await,
        }
    };
    let again = async {
        shutdown_signal().await;
        tracing::warn!(
            "a signal during the drain: closing the connections of requests still in flight"
        );
    };
    tokio::select! {
        () = deadline => {},
        () = again => {},
    }
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
}
