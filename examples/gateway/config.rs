//! The gateway's TOML configuration (see `gateway.example.toml`).

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;
use tower_llm_router::auto_route::{Capabilities, ModelProfile, SessionAffinity};

/// The whole file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Default OpenAI-compatible base URL, for every model without its own `upstream`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Name of the environment variable holding the default upstream's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A PEM file of CA certificates trusted for the default upstream's host, besides the
    /// public roots: for an `https` upstream whose certificate a private CA signed.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Name of the environment variable holding the bearer tokens clients must send
    /// (comma-separated): with it, every route but `/healthz` answers 401 to a request without
    /// one. None: anyone who reaches `listen` is served.
    #[serde(default)]
    pub client_keys_env: Option<String>,
    /// The model ids clients may ask for, exact or with `*` wildcards (`"openai/*"`): another
    /// in `model` or `models` is refused with a 400 (`model_not_allowed`) before any upstream
    /// call; so is a request that names no model (`model_required`), which the list cannot
    /// check. None: any id, an unlisted one going to the default upstream on its key.
    #[serde(default)]
    pub allow_models: Option<Vec<String>>,
    /// The largest request body accepted (413 above it).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// The most bytes of request bodies held at once, split between the workers (each gets at
    /// least `max_body_bytes`; the layer's `max_buffered_bytes`): bodies are counted as they
    /// arrive, and one that does not fit (a declared length at once, before its body is read)
    /// is answered 503 `overloaded` with `Retry-After: 1`. Default 1 GiB.
    #[serde(default)]
    pub max_buffered_bytes: Option<usize>,
    /// Worker threads, each with a runtime and upstream connections of its own (default: the
    /// CPUs this process may run on), at most [`MAX_WORKERS`].
    #[serde(default, deserialize_with = "workers")]
    pub workers: Option<std::num::NonZeroUsize>,
    /// The catalog: what `/v1/models` lists and what `"model": "auto"` chooses from.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub fallback: FallbackConfig,
    #[serde(default)]
    pub auto: AutoConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
}

/// One `[[models]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients ask for (and the routing layers use).
    pub id: String,
    /// Context window in tokens.
    #[serde(default)]
    pub context_window: u64,
    /// USD per million input tokens. Without this and `output_price` the model's price is
    /// unknown: `auto` does not choose it (an unknown price is not a free one) and
    /// `/v1/models` lists it without `pricing`. With one of the two, the other is 0.
    #[serde(default)]
    pub input_price: Option<f64>,
    /// USD per million output tokens (see `input_price`).
    #[serde(default)]
    pub output_price: Option<f64>,
    /// `vision`, `audio`, `video`, `file`, `tools`, `structured_output` (unknown names are an
    /// error).
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Optional strength hint for `auto` (larger is stronger); without it the strength follows
    /// the price. Hints are compared with the price-derived strength of the models without
    /// one: any scale only when every model has one, else the derived scale (see
    /// `tower_llm_router::auto_route::catalog`).
    #[serde(default)]
    pub quality: Option<f32>,
    /// The most tokens the model writes in one answer: `auto` sends no request whose
    /// `max_tokens` is over it to this model. None (or 0): unknown.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// This model's base URL, instead of the default `upstream`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// This model's API key variable, instead of the default `api_key_env`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A PEM file of CA certificates trusted for this model's own `upstream` (its host),
    /// besides the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The id sent upstream, when it differs from `id`.
    #[serde(default)]
    pub upstream_model: Option<String>,
}

/// `[fallback]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The chain tried after `model` for requests without `models`.
    #[serde(default)]
    pub models: Vec<String>,
    /// The most models one request may try, the primary included.
    #[serde(default)]
    pub max_models: Option<usize>,
    /// Retries of a model's `downtime` failure before the next model (`FallbackLayer::retries`);
    /// 0, the default: none.
    #[serde(default)]
    pub retries: u32,
    /// Seconds: the first retry's backoff ceiling, doubled for each next one, up to 2 s (or this
    /// value, if longer). The layer's 200 ms without it.
    #[serde(default)]
    pub retry_backoff: Option<f64>,
}

impl FallbackConfig {
    /// `retries` and `retry_backoff` as the layer's setting; an error names a backoff that is
    /// not a positive number of seconds.
    pub fn retries(&self) -> Result<tower_llm_router::fallback::Retries, String> {
        let mut retries = tower_llm_router::fallback::Retries::new(self.retries);
        if let Some(backoff) = self.retry_backoff {
            let backoff = seconds(backoff, "fallback.retry_backoff")?;
            retries = retries
                .backoff(backoff)
                .max_backoff(backoff.max(Duration::from_secs(2)));
        }
        Ok(retries)
    }
}

/// `[auto]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoConfig {
    /// The model id that asks for automatic routing.
    #[serde(default = "default_auto_model")]
    pub model: String,
    /// The models `auto` chooses from; empty: every `[[models]]` entry.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Session affinity: a conversation's later `auto` turns go to the model that served it
    /// (`AutoRouteLayer::session_affinity`), keeping the upstream's prompt cache and the
    /// model's style. Off by default.
    #[serde(default)]
    pub session_affinity: bool,
    /// The most conversations remembered, shared by every worker (the layer's default:
    /// 10,000).
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// Seconds a conversation is remembered after its last answer (the layer's default:
    /// 3600).
    #[serde(default)]
    pub session_ttl: Option<f64>,
}

impl Default for AutoConfig {
    fn default() -> Self {
        Self {
            model: default_auto_model(),
            candidates: Vec::new(),
            session_affinity: false,
            max_sessions: None,
            session_ttl: None,
        }
    }
}

impl AutoConfig {
    /// The session affinity asked for (`None`: off); an error names a value that cannot work,
    /// whether affinity is on or not (turning it on must not be what reveals a wrong value).
    pub fn affinity(&self) -> Result<Option<SessionAffinity>, String> {
        let mut affinity = SessionAffinity::new();
        if let Some(max) = self.max_sessions {
            // 0 would turn affinity off in the layer: not what a file that sets it means.
            if max == 0 {
                return Err("auto.max_sessions must be at least 1".into());
            }
            affinity = affinity.max_sessions(max);
        }
        if let Some(ttl) = self.session_ttl {
            affinity = affinity.ttl(seconds(ttl, "auto.session_ttl")?);
        }
        Ok(self.session_affinity.then_some(affinity))
    }
}

/// `[timeouts]`: how long an attempt waits on its upstream, in seconds (fractions allowed). A
/// model that does not answer in time is classed `downtime`: the request moves on to the next
/// model of its chain, and on the last one the client gets a 504 JSON error.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Opening the TCP connection to the upstream (a provider's API accepts within
    /// milliseconds). On the last model, the client gets a 504, as for the other timeouts.
    #[serde(default = "default_connect_timeout")]
    pub connect: f64,
    /// From sending the request to the answer's status line and headers (the TLS handshake of
    /// a new connection included). Many providers send them only once a non-streamed answer is
    /// complete, and a long answer from a slow or reasoning model takes minutes.
    #[serde(default = "default_answer_timeout")]
    pub headers: f64,
    /// From the headers to the end of a non-streamed answer (the layer reads it to classify
    /// it; an upstream may send the headers at once and the body only when the model is done,
    /// so here too a whole answer may be waited for). Only the first 256 KiB that the layer
    /// reads are timed by this: the rest of a longer answer is under `idle`.
    #[serde(default = "default_answer_timeout")]
    pub first_byte: f64,
    /// For `"stream": true` requests, in place of `headers` and `first_byte`: until the
    /// headers, then as long again until the first event. A streaming upstream answers
    /// within seconds even when the whole answer takes minutes.
    #[serde(default = "default_stream_timeout")]
    pub stream: f64,
    /// Once an answer's body has begun (streamed or not): the longest pause between two of its
    /// frames. An upstream that stops sending mid-answer, its connection open, ends the
    /// client's answer with an error after this (a stream with the layer's SSE error event; a
    /// JSON answer's connection is cut) instead of holding it for good.
    #[serde(default = "default_idle_timeout")]
    pub idle: f64,
    /// The longest a client may take to send a request's body, from the first time the
    /// gateway waits for it: a body still incomplete then is answered 408. Each pause between
    /// two of its frames is held to 60 s besides; without this whole-body bound, a client that
    /// sends a byte every 59 s held its connection (and its body's share of
    /// `max_buffered_bytes`) as long as it liked.
    #[serde(default = "default_request_body_timeout")]
    pub request_body: f64,
    /// After SIGINT or SIGTERM: how long requests in flight may take to finish before the
    /// connections still open are closed. None: as long as they take (a second signal still
    /// cuts the wait short).
    #[serde(default)]
    pub drain: Option<f64>,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            headers: default_answer_timeout(),
            first_byte: default_answer_timeout(),
            stream: default_stream_timeout(),
            idle: default_idle_timeout(),
            request_body: default_request_body_timeout(),
            drain: None,
        }
    }
}

impl TimeoutsConfig {
    /// `connect`, `headers`, `first_byte`, `stream` and `idle` as durations; an error names a
    /// value that is not a positive number of seconds.
    pub fn durations(&self) -> Result<[Duration; 5], String> {
        Ok([
            seconds(self.connect, "timeouts.connect")?,
            seconds(self.headers, "timeouts.headers")?,
            seconds(self.first_byte, "timeouts.first_byte")?,
            seconds(self.stream, "timeouts.stream")?,
            seconds(self.idle, "timeouts.idle")?,
        ])
    }

    /// `request_body` as a duration; an error if it is not a positive number of seconds.
    pub fn request_body_limit(&self) -> Result<Duration, String> {
        seconds(self.request_body, "timeouts.request_body")
    }

    /// `drain` as a duration (`None`: no limit); an error if it is not a positive number of
    /// seconds.
    pub fn drain_limit(&self) -> Result<Option<Duration>, String> {
        self.drain
            .map(|value| seconds(value, "timeouts.drain"))
            .transpose()
    }
}

/// `value` seconds, if that is a positive duration; else an error naming `key` (dotted:
/// `timeouts.idle`).
fn seconds(value: f64, key: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{key} must be a positive number of seconds"))
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

fn default_upstream() -> String {
    "https://openrouter.ai/api/v1".to_owned()
}

fn default_auto_model() -> String {
    "auto".to_owned()
}

/// 10 s: see [`crate::common::upstream::CONNECT_TIMEOUT`].
fn default_connect_timeout() -> f64 {
    crate::common::upstream::CONNECT_TIMEOUT.as_secs_f64()
}

/// 300 s for the headers, then as much for a non-streamed answer (its first 256 KiB): long
/// enough for a long answer from a slow model. Half the OpenAI and Anthropic SDKs' own 600 s, so that a
/// model that never answers leaves time for the next one before the client gives up.
fn default_answer_timeout() -> f64 {
    300.0
}

/// 60 s for a stream's headers, then as much for its first event: a reasoning model may think
/// for a while before its first token, but a stream silent for a minute is not coming.
fn default_stream_timeout() -> f64 {
    60.0
}

/// 120 s between two frames of an answer that has begun. Providers keep a quiet stream alive
/// while the model thinks: OpenRouter sends `: OPENROUTER PROCESSING` comments, Anthropic
/// `ping` events, each a frame that restarts the wait. Past its first content a model writes
/// tokens many times a second, so a pause of two minutes (twice what a stream may take to
/// begin) is a stalled upstream, not a slow model; and it is well inside the 600 s the OpenAI
/// and Anthropic SDKs wait between two reads, so the client is told rather than left to give up.
fn default_idle_timeout() -> f64 {
    120.0
}

/// 60 s for a request's whole body: a chat body of a few MiB comes in well under a second on
/// any link a client of an LLM API has (32 MiB, the default `max_body_bytes`, in 60 s is about
/// 4.5 Mbit/s), and the SDKs send their bodies at once.
fn default_request_body_timeout() -> f64 {
    60.0
}

impl Config {
    /// Parses the TOML text of a configuration file. An error gives the line, the column, the
    /// parser's message (the kind of value expected in the file's words) and the key it is
    /// about, never the text of the line (which may hold a key pasted in the wrong place), nor
    /// a string value the message would quote.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let message = without_unknown_secret(&without_values(e.message().trim()));
            let mut message = in_file_words(&message);
            if let Some(key) = key_path(&e) {
                message.push_str(&format!(" (key `{key}`)"));
            }
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!("line {line}, column {column}: {message}")
                }
                None => message,
            }
        })
    }

    /// A configuration with no models, everything to `upstream`.
    pub fn with_upstream(upstream: &str) -> Self {
        let mut config = Self::from_toml("").unwrap_or_else(|_| unreachable!());
        config.upstream = upstream.to_owned();
        config
    }
}

impl Config {
    /// The warning for a gateway that spends an upstream key for whoever reaches it: a key
    /// (`api_key_env`, the default's or a model's), no `client_keys_env`, and a `listen`
    /// address other than a loopback one. None when nothing is exposed.
    pub fn exposure_warning(&self) -> Option<String> {
        let spends_a_key = self.api_key_env.is_some()
            || self.models.iter().any(|model| model.api_key_env.is_some());
        if !spends_a_key || self.client_keys_env.is_some() || is_loopback(&self.listen) {
            return None;
        }
        Some(format!(
            "listening on {:?} with an upstream key and no client_keys_env: anyone who reaches \
             this port spends the key (set client_keys_env, or listen on 127.0.0.1)",
            self.listen
        ))
    }
}

impl Config {
    /// The line logged once the gateway listens on `addr` with `workers`: the upstream, who
    /// may call (client keys or not), which models they may ask for (`allow_models`), the
    /// catalog and the auto model. Ids are quoted and escaped (`"a\nb"`): a newline or a
    /// control character in a configured id cannot forge a log line.
    pub fn startup_line(&self, addr: std::net::SocketAddr, workers: NonZeroUsize) -> String {
        let workers = match workers.get() {
            1 => "1 worker".to_owned(),
            n => format!("{n} workers"),
        };
        let client_keys = match self.client_keys_env {
            Some(_) => "required",
            None => "none (anyone who reaches the port is served)",
        };
        let allowed = match self.allow_models.as_deref() {
            None => "none (any model)".to_owned(),
            Some([_]) => "1 pattern".to_owned(),
            Some(patterns) => format!("{} patterns", patterns.len()),
        };
        let models = match self.models.is_empty() {
            true => "-".to_owned(),
            false => {
                let ids: Vec<String> = self.models.iter().map(|m| format!("{:?}", m.id)).collect();
                ids.join(", ")
            }
        };
        format!(
            "listening on http://{addr}/v1 ({workers}, default upstream {}, client keys: \
             {client_keys}, allow_models: {allowed}, models: {models}, auto model {:?})",
            self.upstream, self.auto.model,
        )
    }
}

/// Whether a `listen` address is reachable from this machine only: a loopback IP, or
/// `localhost`.
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

impl ModelConfig {
    /// USD per million input and output tokens; `None` when neither is configured.
    pub fn prices(&self) -> Option<(f64, f64)> {
        match (self.input_price, self.output_price) {
            (None, None) => None,
            (input, output) => Some((input.unwrap_or(0.0), output.unwrap_or(0.0))),
        }
    }

    /// The model's profile for the auto router; `None` for a model without a price, which
    /// `auto` does not choose.
    pub fn profile(&self) -> Option<ModelProfile> {
        let (input, output) = self.prices()?;
        let mut profile = ModelProfile::new(self.id.as_str(), self.context_window, input, output)
            .with_capabilities(self.capabilities);
        profile.quality = self.quality;
        profile.max_output_tokens = self.max_output_tokens;
        Some(profile)
    }
}

impl Config {
    /// What a startup should tell of the models: those without a price, which `auto` does not
    /// choose, and `fallback.models` entries that name no `[[models]]` entry (sent to the
    /// default upstream as named: a misspelt id there fails only when a primary does).
    pub fn model_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        // Ids quoted and escaped, here and below: a newline in one cannot forge a log line.
        let unpriced: Vec<String> = self
            .models
            .iter()
            .filter(|model| model.prices().is_none())
            .map(|model| format!("{:?}", model.id))
            .collect();
        if !unpriced.is_empty() {
            notes.push(format!(
                "models without input_price / output_price, which auto does not choose: {}",
                unpriced.join(", ")
            ));
        }
        if self.allow_models.as_ref().is_some_and(Vec::is_empty) {
            notes.push(
                "allow_models is empty: every chat completion and Responses API request is \
                 refused (remove the key to allow any model, or list the ids clients may ask \
                 for)"
                    .to_owned(),
            );
        } else if let Some(allow) = &self.allow_models {
            let allow = tower_llm_router::fallback::ModelPatterns::new(allow);
            let configured = self.models.iter().map(|model| &model.id);
            let mut told = std::collections::HashSet::new();
            for id in configured.chain(&self.fallback.models) {
                // A model both in [[models]] and in fallback.models is told once.
                if !allow.matches(id) && told.insert(id) {
                    notes.push(format!(
                        "allow_models does not allow {id:?}: requests naming it are refused, and \
                         no chain tries it"
                    ));
                }
            }
        }
        if !self.models.is_empty() {
            for id in &self.fallback.models {
                if !self.models.iter().any(|model| model.id == *id) {
                    notes.push(format!(
                        "fallback.models names {id:?}, not a [[models]] entry: it goes to the \
                         default upstream ({:?}) as named",
                        self.upstream
                    ));
                }
            }
        }
        notes
    }
}

/// The dotted key an error is about (`timeouts.idle`, `models.context_window`), when it has
/// one. The parser keeps it private and writes it only in its `Display` without the input (a
/// last line `in `timeouts.idle``); it is given only when every part is a field name (lower
/// case, digits, `_`), as the file's own fields are: never a value, nor a key pasted in the
/// wrong place.
fn key_path(error: &toml::de::Error) -> Option<String> {
    let mut error = error.clone();
    error.set_input(None);
    let shown = error.to_string();
    let key = shown
        .trim_end()
        .rsplit_once('\n')?
        .1
        .strip_prefix("in `")?
        .strip_suffix('`')?;
    let field = |part: &str| {
        !part.is_empty()
            && part.len() <= 32
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    key.split('.').all(field).then(|| key.to_owned())
}

/// The most workers a configuration may ask for. Each is a thread with a runtime and a copy of
/// the routing stack: far more than the CPUs only costs memory, and a typo (`100000`) built
/// 1.5 GB of them before failing with "Too many open files", which did not name `workers`.
pub const MAX_WORKERS: usize = 1024;

/// `workers`: a whole number from 1 to [`MAX_WORKERS`].
fn workers<'de, D>(deserializer: D) -> Result<Option<std::num::NonZeroUsize>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let expected = || format!("expected a whole number from 1 to {MAX_WORKERS}");
    let workers =
        usize::deserialize(deserializer).map_err(|_| serde::de::Error::custom(expected()))?;
    std::num::NonZeroUsize::new(workers)
        .filter(|n| n.get() <= MAX_WORKERS)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(expected()))
}

/// A parser message with the kind of value expected in the file's words rather than Rust's
/// (`expected f64` → `expected a number`).
fn in_file_words(message: &str) -> String {
    let Some((before, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let words = match expected {
        "f64" | "f32" => "a number",
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number",
        "a nonzero usize" => "a whole number of at least 1",
        "a sequence" => "a list",
        _ if expected.starts_with("struct ") => "a table",
        _ => return message.to_owned(),
    };
    format!("{before}, expected {words}")
}

/// A parser message without the values it quotes: serde quotes a string of the wrong type in
/// `"…"` (`invalid type: string "sk-…", expected usize`) and an unknown variant in backticks
/// (`unknown variant `sk-…`, expected one of …`). Field names and expected values stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let quote = rest.find('"');
        let variant = rest
            .find("unknown variant `")
            .map(|i| i + "unknown variant ".len());
        let (start, close) = match (quote, variant) {
            (Some(q), Some(v)) if v < q => (v, '`'),
            (Some(q), _) => (q, '"'),
            (None, Some(v)) => (v, '`'),
            (None, None) => break,
        };
        out.push_str(&rest[..start]);
        out.push(close);
        out.push('…');
        out.push(close);
        // An unclosed quote hides the rest.
        let after = &rest[start + 1..];
        rest = after.find(close).map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// A parser message with an unknown key's name hidden when it does not look like a key (lower
/// case, digits, `_`, as every key of this file): a secret pasted as a key's name
/// (`sk-or-v1-… = 5`) is not echoed. A typo (`idel`) is still named.
fn without_unknown_secret(message: &str) -> String {
    const UNKNOWN: &str = "unknown field `";
    let Some(start) = message.find(UNKNOWN).map(|i| i + UNKNOWN.len()) else {
        return message.to_owned();
    };
    let end = message[start..]
        .find('`')
        .map_or(message.len(), |i| start + i);
    let name = &message[start..end];
    let looks_like_a_key = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if looks_like_a_key {
        return message.to_owned();
    }
    format!("{}…{}", &message[..start], &message[end..])
}

/// Whether `name` looks like a conventional environment variable name (upper case, digits,
/// `_`). A value that does not (e.g. a key pasted in place of the variable's name) is never
/// echoed back, in errors or in `Debug`.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// An `api_key_env` value for `Debug`: the variable's name, or `<redacted>` when it does not
/// look like one.
struct EnvName<'a>(&'a Option<String>);

impl fmt::Debug for EnvName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(name) if is_env_name(name) => write!(f, "{name:?}"),
            Some(_) => f.write_str("<redacted>"),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("api_key_env", &EnvName(&self.api_key_env))
            .field("ca_file", &self.ca_file)
            .field("client_keys_env", &EnvName(&self.client_keys_env))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("workers", &self.workers)
            .field("models", &self.models)
            .field("fallback", &self.fallback)
            .field("auto", &self.auto)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelConfig")
            .field("id", &self.id)
            .field("context_window", &self.context_window)
            .field("input_price", &self.input_price)
            .field("output_price", &self.output_price)
            .field("capabilities", &self.capabilities)
            .field("quality", &self.quality)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("upstream", &self.upstream)
            .field("api_key_env", &EnvName(&self.api_key_env))
            .field("ca_file", &self.ca_file)
            .field("upstream_model", &self.upstream_model)
            .finish()
    }
}
