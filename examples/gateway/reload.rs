//! SIGHUP: the `[[models]]` catalog fields read again from `--config` and applied to the
//! running workers (`auto` routing and `GET /v1/models`), without a restart.
//!
//! Only what describes a model to the router is reloaded: `context_window`, `input_price`,
//! `output_price`, `capabilities`, `quality`, `max_output_tokens`. Anything else (a model added
//! or removed, an upstream, a key, `listen`, the timeouts, ...) is built into the workers'
//! stacks and connections: a file that changes it is not applied at all, and one warning
//! names what needs a restart.

use std::future::Future;

use crate::app::Catalogs;
use crate::args::Args;
use crate::config::{Config, ModelConfig};

/// What a reload reads and where it applies it.
pub struct Reloader {
    /// `--config`.
    path: String,
    /// The command line, whose `--listen` and `--upstream` override the file again.
    args: Args,
    /// The configuration running now.
    running: Config,
    catalogs: Catalogs,
}

impl Reloader {
    /// A reloader for the gateway started from `running`, read from `args.config`; `None`
    /// without `--config` (nothing to read again).
    pub fn new(args: Args, running: Config, catalogs: Catalogs) -> Option<Self> {
        Some(Self {
            path: args.config.clone()?,
            args,
            running,
            catalogs,
        })
    }

    /// Reads the file again and applies its `[[models]]` catalog fields; `Ok` with the info
    /// line to log, `Err` with the warning (nothing applied).
    pub fn reload(&mut self) -> Result<String, String> {
        let path = &self.path;
        let not_applied = |why: String| format!("SIGHUP: {path} not applied: {why}");
        let text = std::fs::read_to_string(path).map_err(|e| not_applied(e.to_string()))?;
        let mut next = Config::from_toml(&text).map_err(not_applied)?;
        self.args.clone().override_file(&mut next);
        let restart = needs_restart(&self.running, &next);
        if !restart.is_empty() {
            return Err(not_applied(format!(
                "{} changed, which only a restart applies (a reload applies the [[models]] \
                 fields context_window, input_price, output_price, capabilities, quality and \
                 max_output_tokens)",
                restart.join(", ")
            )));
        }
        crate::app::check(&next).map_err(not_applied)?;
        let changed: Vec<String> = self
            .running
            .models
            .iter()
            .zip(&next.models)
            .filter(|(old, new)| !same_catalog_fields(old, new))
            .map(|(_, new)| format!("{:?}", new.id))
            .collect();
        self.catalogs.apply(&next);
        let old_notes = self.running.model_notes();
        for note in next.model_notes() {
            if !old_notes.contains(&note) {
                tracing::warn!("{note}");
            }
        }
        self.running = next;
        Ok(match changed.is_empty() {
            true => format!("SIGHUP: {path} reloaded: no model changed"),
            false => format!("SIGHUP: {path} reloaded: applied to {}", changed.join(", ")),
        })
    }
}

/// Reloads with `reloader` at each SIGHUP, for as long as it is polled; without one, says at
/// each SIGHUP that there is nothing to reload. The handler is installed here, at once (not
/// when the future is first polled): from then on a SIGHUP no longer ends the process, which
/// is the signal's default action.
pub fn on_hangup(
    mut reloader: Option<Reloader>,
) -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(async move {
        #[cfg(unix)]
        while hangups.recv().await.is_some() {
            match &mut reloader {
                Some(reloader) => match reloader.reload() {
                    Ok(applied) => tracing::info!("{applied}"),
                    Err(warning) => tracing::warn!("{warning}"),
                },
                None => tracing::info!(
                    "SIGHUP: started without --config, nothing to reload (a restart applies \
                     other changes)"
                ),
            }
        }
        #[cfg(not(unix))]
        let _ = &mut reloader;
        std::future::pending::<()>().await;
    })
}

/// The keys of `next` that differ from `running` in what a reload does not apply. Both
/// structs are destructured without `..`: a key added to the configuration does not compile
/// until it is sorted here, as applied by a reload or needing a restart.
fn needs_restart(running: &Config, next: &Config) -> Vec<String> {
    let Config {
        listen,
        upstream,
        api_key_env,
        ca_file,
        client_keys_env,
        allow_models,
        max_body_bytes,
        max_buffered_bytes,
        workers,
        models,
        fallback,
        auto,
        timeouts,
    } = running;
    let mut changed = Vec::new();
    let mut check = |key: &str, same: bool| {
        if !same {
            changed.push(key.to_owned());
        }
    };
    check("listen", *listen == next.listen);
    check("upstream", *upstream == next.upstream);
    check("api_key_env", *api_key_env == next.api_key_env);
    check("ca_file", *ca_file == next.ca_file);
    check("client_keys_env", *client_keys_env == next.client_keys_env);
    check("allow_models", *allow_models == next.allow_models);
    check("max_body_bytes", *max_body_bytes == next.max_body_bytes);
    check(
        "max_buffered_bytes",
        *max_buffered_bytes == next.max_buffered_bytes,
    );
    check("workers", *workers == next.workers);
    check("[fallback]", *fallback == next.fallback);
    check("[auto]", *auto == next.auto);
    check("[timeouts]", *timeouts == next.timeouts);
    let same_ids = models.len() == next.models.len()
        && models
            .iter()
            .zip(&next.models)
            .all(|(old, new)| old.id == new.id);
    if !same_ids {
        check("the [[models]] ids (added, removed or reordered)", false);
        return changed;
    }
    for (i, (old, new)) in models.iter().zip(&next.models).enumerate() {
        let ModelConfig {
            // Applied by a reload (`same_catalog_fields`), or the id compared above.
            id: _,
            context_window: _,
            input_price: _,
            output_price: _,
            capabilities: _,
            quality: _,
            max_output_tokens: _,
            // Built into the worker's connections and chains.
            upstream,
            api_key_env,
            ca_file,
            upstream_model,
        } = old;
        check(&format!("models[{i}].upstream"), *upstream == new.upstream);
        check(
            &format!("models[{i}].api_key_env"),
            *api_key_env == new.api_key_env,
        );
        check(&format!("models[{i}].ca_file"), *ca_file == new.ca_file);
        check(
            &format!("models[{i}].upstream_model"),
            *upstream_model == new.upstream_model,
        );
    }
    changed
}

/// Whether the fields a reload applies are the same in both.
fn same_catalog_fields(old: &ModelConfig, new: &ModelConfig) -> bool {
    old.context_window == new.context_window
        && old.input_price == new.input_price
        && old.output_price == new.output_price
        && old.capabilities == new.capabilities
        && old.quality == new.quality
        && old.max_output_tokens == new.max_output_tokens
}
