//! The gateway's axum application: routes, the layer stack, logging and metrics. `main.rs`
//! runs it; `tests/gateway.rs` builds it in front of scripted upstreams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::routing::{get, post_service};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tower::Service;
use tower_llm_router::auto_route::{
    Capabilities, Catalog, ModelProfile, RouteDecision, SessionScope, SharedCatalog,
};
use tower_llm_router::body::ResponseBody;
use tower_llm_router::classify::describe_error;
use tower_llm_router::fallback::{self, Attempts, Outcome, ServedModel};
use tower_llm_router::health::{Health, InMemoryHealth};
use tower_llm_router::{ApiError, AutoRouteLayer, BoxError, Fallback, FallbackLayer};

use crate::balance::{Balance, Handoff};
use crate::common::providers::Providers;
use crate::common::upstream::{
    https_client_with_connect_timeout, tls_with_private_cas, Route, Upstream, CHAT_COMPLETIONS,
    RESPONSES,
};
use crate::config::{is_env_name, Config, ModelConfig};
use crate::drain::Drain;
use crate::head_timeout::{look_period, Activity, Counted};
use crate::metrics::{Ended, Metrics};
use crate::require_model::RequireModel;
use crate::stall::{AnswerBody, AnswerStallTimeout, PassedThrough, StallTimeoutLayer, WriteStall};

/// Looks up an environment variable (a parameter so that tests need not touch the process
/// environment).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Resolves an `api_key_env` entry to a key. The error names the variable only when the value
/// looks like a variable name (never a key pasted in its place).
fn key_from_env(env: Env<'_>, name: &str, field: &str) -> Result<String, String> {
    if !is_env_name(name) {
        return Err(not_a_variable_name(field));
    }
    match env(name) {
        Some(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => Err(format!(
            "{field}: the environment variable {name} is not set (or empty)"
        )),
    }
}

/// The error for a `field` whose value is not a variable's name; it does not quote the value.
fn not_a_variable_name(field: &str) -> String {
    format!(
        "{field} must name an environment variable (upper case, digits and `_`): the value given \
         is not one (is it a key? put the key in the environment instead)"
    )
}

/// Checks every environment variable the configuration names (`api_key_env`, the models',
/// `client_keys_env`) before any is read: one error tells every variable missing or empty (each
/// once, with the keys that name it) and every value that is no variable's name, so that an
/// operator fixes them all in one go rather than one per restart.
fn check_env(config: &Config, env: Env<'_>) -> Result<(), String> {
    let models = config
        .models
        .iter()
        .enumerate()
        .map(|(i, model)| (format!("models[{i}].api_key_env"), &model.api_key_env));
    let named = std::iter::once(("api_key_env".to_owned(), &config.api_key_env))
        .chain(models)
        .chain(std::iter::once((
            "client_keys_env".to_owned(),
            &config.client_keys_env,
        )))
        .filter_map(|(field, name)| Some((field, name.as_deref()?)));
    let mut problems = Vec::new();
    let mut missing: Vec<(&str, Vec<String>)> = Vec::new();
    for (field, name) in named {
        if !is_env_name(name) {
            problems.push(not_a_variable_name(&field));
        } else if env(name).is_none_or(|value| value.trim().is_empty()) {
            match missing.iter_mut().find(|(missed, _)| *missed == name) {
                Some((_, fields)) => fields.push(field),
                None => missing.push((name, vec![field])),
            }
        }
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(name, fields)| format!("{name} ({})", fields.join(", ")))
            .collect();
        let (variables, are) = match list.len() {
            1 => ("variable", "is"),
            _ => ("variables", "are"),
        };
        problems.insert(
            0,
            format!(
                "the environment {variables} {} {are} not set (or empty)",
                list.join(", ")
            ),
        );
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// The TLS configuration of the upstream client: the public (webpki) roots for every upstream,
/// and for an upstream with a `ca_file` (the default's, a model's) the certificates in it too,
/// trusted for that upstream's host alone. An error names the key of a file that cannot be
/// read or holds no certificate, or whose upstream is not `https`.
pub fn upstream_tls(config: &Config) -> Result<rustls::ClientConfig, String> {
    let mut cas = Vec::new();
    if let Some(path) = &config.ca_file {
        let host = https_host(&config.upstream, "ca_file")?;
        cas.push((host, ca_certificates(path, "ca_file")?));
    }
    for (i, model) in config.models.iter().enumerate() {
        let Some(path) = &model.ca_file else {
            continue;
        };
        let key = format!("models[{i}].ca_file");
        let Some(url) = &model.upstream else {
            return Err(format!(
                "{key} is for the model's own upstream, and it has none (a private CA of the \
                 default upstream goes in the top-level ca_file)"
            ));
        };
        let host = https_host(url, &key)?;
        cas.push((host, ca_certificates(path, &key)?));
    }
    tls_with_private_cas(cas).map_err(|e| format!("TLS setup: {e}"))
}

/// The host of `url`, the upstream the CA file of `key` is for: an error when it is not
/// `https`, where no certificate is ever checked (an `s` left out would send the traffic in
/// clear, the CA file silently unused).
fn https_host(url: &str, key: &str) -> Result<String, String> {
    let route = Route::new(url)?;
    if !route.is_https() {
        return Err(format!(
            "{key}: {} is not https, and only an https upstream's certificate is checked \
             (was the `s` left out?)",
            route.base_url()
        ));
    }
    Ok(route.host().to_owned())
}

/// The certificates of the PEM file at `path` (the value of `key`), each one a CA can be made of.
/// The error names `key` and the path, never the value when it is a PEM pasted in place of a
/// path (a private key, maybe).
fn ca_certificates(path: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if path.contains("-----BEGIN") || path.contains('\n') {
        return Err(format!(
            "{key} must be the path of a PEM file, not its content"
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{key}: cannot read {path:?}: {e}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: {path:?} is not a valid PEM file: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "{key}: {path:?} holds no certificate (no -----BEGIN CERTIFICATE----- block)"
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots.add(certificate.clone()).map_err(|e| {
            format!("{key}: a certificate in {path:?} cannot be trusted as a CA: {e}")
        })?;
    }
    Ok(certificates)
}

/// The routes of the upstream client: the default, and one per model that needs its own.
fn routes(config: &Config, env: Env<'_>) -> Result<(Route, HashMap<Arc<str>, Route>), String> {
    let mut default = Route::new(&config.upstream)?;
    if config.client_keys_env.is_some() {
        // The client's credentials are its key to the gateway, not to an upstream: no route
        // sends them (the model routes are made from this one, or drop them already).
        default = default.without_caller_credentials();
    }
    if let Some(name) = &config.api_key_env {
        default = default.bearer(&key_from_env(env, name, "api_key_env")?)?;
    }
    let mut routes = HashMap::new();
    for (i, model) in config.models.iter().enumerate() {
        if let Some(route) = model_route(model, &default, env, i)? {
            routes.insert(Arc::from(model.id.as_str()), route);
        }
    }
    Ok((default, routes))
}

/// A model's own route, when it has its own upstream, key or upstream id. A model on another
/// upstream gets its own key or none: never the default upstream's key, never the caller's.
fn model_route(
    model: &ModelConfig,
    default: &Route,
    env: Env<'_>,
    i: usize,
) -> Result<Option<Route>, String> {
    if model.upstream.is_none() && model.api_key_env.is_none() && model.upstream_model.is_none() {
        return Ok(None);
    }
    let mut route = match &model.upstream {
        // The caller's credentials were meant for the default upstream (or the gateway).
        Some(url) => Route::new(url)?.without_caller_credentials(),
        None => default.clone(),
    };
    if let Some(name) = &model.api_key_env {
        route = route.bearer(&key_from_env(
            env,
            name,
            &format!("models[{i}].api_key_env"),
        )?)?;
    }
    if let Some(id) = &model.upstream_model {
        route = route.upstream_model(id);
    }
    Ok(Some(route))
}

/// The bearer tokens clients must send (`client_keys_env`), read once at startup and kept as
/// their SHA-256 digests: a request is checked against them without an allocation, and in a
/// time that tells nothing of the keys (see [`ClientKeys::admit`]).
#[derive(Clone)]
struct ClientKeys(Arc<[ring::digest::Digest]>);

/// The SHA-256 digest of a client key, or of a token a client sent: 32 bytes, whatever the
/// key's length.
fn key_digest(key: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, key)
}

impl ClientKeys {
    /// The keys in `client_keys_env`'s variable, if it is set: comma-separated, spaces around
    /// each ignored. An error if the variable is missing or holds no key, or a key no client
    /// could send (not printable ASCII, or with a space); it never quotes a key.
    fn from_env(config: &Config, env: Env<'_>) -> Result<Option<Self>, String> {
        let Some(name) = &config.client_keys_env else {
            return Ok(None);
        };
        let value = key_from_env(env, name, "client_keys_env")?;
        let keys: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "client_keys_env: the environment variable {name} holds no key (comma-separated \
                 tokens)"
            ));
        }
        if keys
            .iter()
            .any(|key| !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "client_keys_env: a key in the environment variable {name} has a character \
                 other than printable ASCII (a space, a control, non-ASCII): no client could \
                 send it in an `Authorization` header"
            ));
        }
        Ok(Some(Self(
            keys.iter().map(|key| key_digest(key.as_bytes())).collect(),
        )))
    }

    /// Whether `headers` hold `Authorization: Bearer <one of the keys>`: the scope of that
    /// key's conversations for session affinity (the first 8 bytes of its digest) if so.
    ///
    /// The token's digest is compared with every key's, each in constant time: the time taken
    /// depends on the token's length (the client's own) and the number of keys, never on a
    /// key's content or length, nor on which key matched or how much of one. Comparing the
    /// bytes themselves would not do: `subtle`'s slice comparison answers at once for slices
    /// of different lengths, so the time told a key's length.
    fn admit(&self, headers: &http::HeaderMap) -> Option<SessionScope> {
        use subtle::ConstantTimeEq;
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()))?;
        let token = key_digest(token);
        let mut matched = subtle::Choice::from(0);
        for key in self.0.iter() {
            // Two SHA-256 digests: always as long, compared byte for byte.
            matched |= key.as_ref().ct_eq(token.as_ref());
        }
        let mut scope = [0; 8];
        scope.copy_from_slice(&token.as_ref()[..8]);
        bool::from(matched).then_some(SessionScope(u64::from_le_bytes(scope)))
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case, RFC 9110
/// §11.1), if there is one.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii()).filter(|token| !token.is_empty())
}

/// The 401 for a request without a valid client key, in OpenAI's shape for a bad key (code
/// `invalid_api_key`), logged. Neither says the token sent.
#[cold]
fn unauthorized<B: From<Bytes>>(method: &http::Method, path: &str, sent: bool) -> Response<B> {
    tracing::info!(
        target: "gateway",
        method = %method,
        path = path,
        status = 401u16,
        "request refused: no valid client key"
    );
    let message = if sent {
        "Incorrect API key provided: send one of the gateway's client keys as `Authorization: \
         Bearer <key>`"
    } else {
        "You didn't provide an API key: send one of the gateway's client keys as \
         `Authorization: Bearer <key>`"
    };
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        message,
    )
    .to_response::<B>();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The one route open without a client key: liveness probes carry none.
const HEALTHZ: &str = "/healthz";

/// Refuses what cannot work rather than starting a gateway that misroutes.
pub fn check(config: &Config) -> Result<(), String> {
    if config.auto.model.is_empty() {
        return Err("auto.model must not be empty".into());
    }
    // The ids a request asks for auto routing with (the layer always accepts the second).
    let sentinels = [config.auto.model.as_str(), "openrouter/auto"];
    let mut seen = std::collections::HashSet::new();
    for (i, model) in config.models.iter().enumerate() {
        if model.id.is_empty() {
            return Err(format!("models[{i}].id must not be empty"));
        }
        if sentinels.contains(&model.id.as_str()) {
            return Err(format!(
                "models[{i}].id {:?} asks for auto routing (see [auto] model): a request for it \
                 is routed, never sent to this entry",
                model.id
            ));
        }
        if !seen.insert(model.id.as_str()) {
            return Err(format!("model {:?} is listed twice", model.id));
        }
        // As the library's own catalog configuration: OpenRouter's `-1` (a variable price)
        // would read as the dearest model, a NaN as no price at all.
        let (input, output) = model.prices().unwrap_or_default();
        ModelProfile::try_new(model.id.as_str(), model.context_window, input, output)
            .map_err(|e| format!("models[{i}]: {e}"))?;
        if model.quality.is_some_and(|q| !q.is_finite()) {
            return Err(format!("models[{i}].quality must be a finite number"));
        }
        if model.upstream_model.as_deref() == Some("") {
            return Err(format!("models[{i}].upstream_model must not be empty"));
        }
    }
    for id in &config.fallback.models {
        if id.is_empty() || *id == config.auto.model {
            return Err(format!(
                "fallback.models names {id:?}: a fallback is sent upstream as named (never \
                 auto-routed), so it must be a model id"
            ));
        }
    }
    base_url(&config.upstream, "upstream")?;
    for (i, model) in config.models.iter().enumerate() {
        if let Some(url) = &model.upstream {
            base_url(url, &format!("models[{i}].upstream"))?;
        }
    }
    if config.max_body_bytes == Some(0) {
        return Err("max_body_bytes must be at least 1".into());
    }
    for id in &config.auto.candidates {
        let Some(model) = config.models.iter().find(|model| model.id == *id) else {
            return Err(format!(
                "auto.candidates names {id:?}, which is not a [[models]] entry"
            ));
        };
        if model.prices().is_none() {
            return Err(format!(
                "auto.candidates names {id:?}, which has no input_price / output_price: auto \
                 weighs prices, and an unknown one is not a free one"
            ));
        }
    }
    if config.fallback.max_models == Some(0) {
        return Err("fallback.max_models must be at least 1".into());
    }
    config.fallback.retries()?;
    config.auto.affinity()?;
    config.timeouts.durations()?;
    config.timeouts.drain_limit()?;
    config.timeouts.request_body_limit()?;
    Ok(())
}

/// Refuses an endpoint's URL (chat completions, responses) given as `key`'s base URL (to which
/// the endpoint's path is appended: every request would be a 404). The URL itself is checked,
/// and shown without what it may hide, by `Route::new`.
fn base_url(url: &str, key: &str) -> Result<(), String> {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .trim_end_matches('/');
    if let Some(endpoint) = ["/chat/completions", "/responses"]
        .into_iter()
        .find(|endpoint| path.ends_with(endpoint))
    {
        return Err(format!(
            "{key} must be a base URL, such as https://openrouter.ai/api/v1: the gateway \
             appends {endpoint} (and the other endpoints' paths) itself"
        ));
    }
    Ok(())
}

/// What `GET /v1/models` and `GET /v1/models/{id}` answer, serialised once at startup (and at
/// each reload).
#[derive(Clone)]
struct ModelsAnswers {
    /// The list.
    list: Bytes,
    /// Each listed model's own object, by id.
    by_id: Arc<HashMap<String, Bytes>>,
}

impl ModelsAnswers {
    /// The `/v1/models` answer: the auto model (when there are models to choose from), then
    /// every configured model (OpenAI's list shape, with OpenRouter's `context_length`,
    /// `pricing`, `architecture`, `top_provider` and `supported_parameters`, so that what reads
    /// OpenRouter's list, this crate's catalog loader among them, finds the capabilities
    /// configured); and each of them alone, for `/v1/models/{id}` (OpenAI's "retrieve model").
    fn new(config: &Config) -> Self {
        let data = model_objects(config);
        let by_id = data
            .iter()
            .filter_map(|object| {
                let id = object["id"].as_str()?.to_owned();
                Some((id, Bytes::from(serde_json::to_vec(object).ok()?)))
            })
            .collect();
        let list = serde_json::json!({ "object": "list", "data": data });
        ModelsAnswers {
            list: Bytes::from(serde_json::to_vec(&list).unwrap_or_default()),
            by_id: Arc::new(by_id),
        }
    }

    /// `GET /v1/models/{id}`: the model's object, or OpenAI's 404 for a model it does not
    /// know.
    fn retrieve(&self, id: &str) -> Response<Body> {
        match self.by_id.get(id) {
            Some(object) => json_response(object.clone()),
            None => ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("the model `{id}` does not exist (GET /v1/models lists them)"),
            )
            .with_param("model")
            .to_response::<Body>(),
        }
    }
}

/// A 200 with a JSON body.
fn json_response(body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The listed models' objects: the auto model (only with models to choose from, priced ones:
/// without, its requests are a 500), then every configured model that `allow_models` allows
/// (without `pricing` when its
/// price is unknown: OpenRouter's readers, this crate's loader among them, then leave it out
/// rather than take it for a free one).
fn model_objects(config: &Config) -> Vec<serde_json::Value> {
    // Only the models a client may ask for: one `allow_models` refuses is a 400 for whoever
    // picks it from the list (and `auto` routes among the allowed ones only).
    let allow = config
        .allow_models
        .as_deref()
        .map(tower_llm_router::fallback::ModelPatterns::new);
    let allowed: Vec<&ModelConfig> = config
        .models
        .iter()
        .filter(|model| allow.as_ref().is_none_or(|allow| allow.matches(&model.id)))
        .collect();
    let choosable = allowed.iter().any(|model| model.prices().is_some());
    let auto = choosable.then(|| {
        serde_json::json!({
            "id": config.auto.model,
            "object": "model",
            "created": 0,
            "owned_by": "tower-llm-router",
            // As OpenRouter lists its own router: a variable price, which its readers (this
            // crate's catalog loader among them) do not take for a model.
            "pricing": { "prompt": "-1", "completion": "-1" },
        })
    });
    let mut data: Vec<serde_json::Value> = auto.into_iter().collect();
    for model in allowed {
        let mut object = serde_json::json!({
            "id": model.id,
            "object": "model",
            "created": 0,
            "owned_by": model.id.split_once('/').map_or("gateway", |(owner, _)| owner),
            "context_length": model.context_window,
            "architecture": architecture(&model.capabilities),
            "top_provider": {
                "context_length": model.context_window,
                "max_completion_tokens": model.max_output_tokens,
            },
            "supported_parameters": supported_parameters(&model.capabilities),
        });
        if let Some((input, output)) = model.prices() {
            object["pricing"] = serde_json::json!({
                "prompt": per_token(input),
                "completion": per_token(output),
            });
        }
        data.push(object);
    }
    data
}

/// A model's `architecture` as OpenRouter writes it: the inputs it takes (`"text"`, then
/// `"image"`, `"audio"`, `"video"`, `"file"`), text out, and the two as one `modality` string.
fn architecture(caps: &Capabilities) -> serde_json::Value {
    let inputs: Vec<&str> = [
        (true, "text"),
        (caps.vision, "image"),
        (caps.audio, "audio"),
        (caps.video, "video"),
        (caps.file, "file"),
    ]
    .into_iter()
    .filter_map(|(has, name)| has.then_some(name))
    .collect();
    serde_json::json!({
        "modality": format!("{}->text", inputs.join("+")),
        "input_modalities": inputs,
        "output_modalities": ["text"],
    })
}

/// The `supported_parameters` the capabilities stand for, as OpenRouter names them: tool
/// calling is `tools` and `tool_choice`, structured output `response_format` and
/// `structured_outputs` (a JSON schema, where `response_format` alone is JSON mode).
fn supported_parameters(caps: &Capabilities) -> Vec<&'static str> {
    let mut params = Vec::new();
    if caps.tools {
        params.extend(["tools", "tool_choice"]);
    }
    if caps.structured_output {
        params.extend(["response_format", "structured_outputs"]);
    }
    params
}

/// A price per million tokens as OpenRouter writes prices: USD per token, a decimal string
/// (`0.15` becomes `"0.00000015"`). The digits are shifted, not divided, so that no rounding
/// noise is added. `price` is finite and not negative (`check`).
pub(crate) fn per_token(price: f64) -> String {
    // `Display` of an `f64` never uses an exponent: digits, maybe a point, more digits.
    let text = price.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = format!("{int}{frac}");
    let point = int.len();
    let shifted = if point > 6 {
        format!("{}.{}", &digits[..point - 6], &digits[point - 6..])
    } else {
        format!("0.{}{digits}", "0".repeat(6 - point))
    };
    // Leading zeros (an integer part of `0`), then trailing ones and a bare point.
    let shifted = shifted.trim_start_matches('0');
    let shifted = shifted.trim_end_matches('0').trim_end_matches('.');
    match shifted {
        "" => "0".to_owned(),
        s if s.starts_with('.') => format!("0{s}"),
        s => s.to_owned(),
    }
}

/// Builds the application (every route) from a configuration. `tls` is the client configuration for HTTPS
/// upstreams (see [`crate::common::upstream::default_tls`]). For one runtime ([`serve`]; the tests
/// use it): `main` builds one application per worker with [`build_workers`].
#[allow(dead_code)]
pub fn build(config: &Config, env: Env<'_>, tls: rustls::ClientConfig) -> Result<App, String> {
    let mut apps = build_workers(config, env, tls, NonZeroUsize::MIN)?;
    apps.pop().ok_or_else(|| "no application built".to_owned())
}

/// One application per worker of [`serve_per_core`], built from the same configuration. They
/// share the models' health (a model that failed on one worker cools down on all), the
/// metrics (`/metrics` on any worker sums every worker's counters), the client keys (only
/// ever read, never a reference count written per request), the catalog `auto` routes with
/// and `/v1/models` lists (replaced by a reload; read with an atomic load that writes nothing
/// shared) and, with `[auto] session_affinity`, the conversations remembered (a
/// conversation's next turn may come to any worker); everything else a request
/// touches is the worker's own: the layers' configuration, the routes, the
/// upstream client and its connections, the metrics counters it writes. Two CPUs writing the
/// same cache line (a shared reference count, a shared counter) for every request made a
/// worker's request cost more than the same work alone (BENCHMARKS.md, section 5, sixth round).
pub fn build_workers(
    config: &Config,
    env: Env<'_>,
    tls: rustls::ClientConfig,
    workers: NonZeroUsize,
) -> Result<Vec<App>, String> {
    build_reloadable(config, env, tls, workers).map(|(apps, _)| apps)
}

/// [`build_workers`], with the handle that replaces the catalog every worker routes with and
/// lists (SIGHUP: `crate::reload`).
pub fn build_reloadable(
    config: &Config,
    env: Env<'_>,
    tls: rustls::ClientConfig,
    workers: NonZeroUsize,
) -> Result<(Vec<App>, Catalogs), String> {
    check(config)?;
    check_env(config, env)?;
    let health: Arc<dyn Health> = Arc::new(InMemoryHealth::new());
    let shards: Arc<[Arc<Metrics>]> = (0..workers.get())
        .map(|_| Arc::new(Metrics::new(config.models.iter().map(|m| m.id.as_str()))))
        .collect();
    let balance = Arc::new(Balance::new(workers.get()));
    let catalogs = Catalogs {
        routed: SharedCatalog::new(catalog(config)),
        listed: Arc::new(ArcSwap::from_pointee(ModelsAnswers::new(config))),
    };
    let client_keys = ClientKeys::from_env(config, env)?;
    let [.., idle] = config.timeouts.durations()?;
    let request_body = config.timeouts.request_body_limit()?;
    let sessions = config.auto.affinity()?.map(|affinity| {
        AutoRouteLayer::with_shared_catalog(catalogs.routed.clone()).session_affinity(affinity)
    });
    let apps = shards
        .iter()
        .enumerate()
        .map(|(worker, metrics)| {
            let chat = Observed {
                inner: chat_stack(
                    config,
                    env,
                    tls.clone(),
                    &health,
                    &catalogs.routed,
                    sessions.as_ref(),
                    workers,
                )?,
                metrics: metrics.clone(),
                not_ready: None,
                api: Api::ChatCompletions,
            };
            let router = other_routes(
                chat.clone(),
                catalogs.listed.clone(),
                shards.clone(),
                balance.clone(),
            );
            Ok(App {
                chat,
                router,
                balance: balance.clone(),
                worker,
                client_keys: client_keys.clone(),
                scope_sessions: config.auto.session_affinity,
                client_write_stall: idle,
                request_body,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((apps, catalogs))
}

/// What a reload may change while the workers run: the catalog `auto` routes with, and the
/// models `GET /v1/models` lists. One of each for every worker: a worker reads them with an
/// atomic load, writing nothing the others read.
#[derive(Clone)]
pub struct Catalogs {
    routed: SharedCatalog,
    listed: Arc<ArcSwap<ModelsAnswers>>,
}

impl Catalogs {
    /// Routes and lists `config`'s `[[models]]` from the next request on, on every worker.
    pub fn apply(&self, config: &Config) {
        self.routed.replace(catalog(config));
        self.listed.store(Arc::new(ModelsAnswers::new(config)));
    }
}

/// The auto router's catalog: the priced `[[models]]`.
fn catalog(config: &Config) -> Catalog {
    Catalog::from_profiles(config.models.iter().filter_map(ModelConfig::profile))
}

/// The routing stack behind `POST /v1/chat/completions` and `POST /v1/responses`, with a
/// client of its own (the upstream URI follows the request's path: [`Route`]). `sessions`:
/// with `[auto] session_affinity`, the layer holding the conversations every worker shares.
fn chat_stack(
    config: &Config,
    env: Env<'_>,
    tls: rustls::ClientConfig,
    health: &Arc<dyn Health>,
    catalog: &SharedCatalog,
    sessions: Option<&AutoRouteLayer>,
    workers: NonZeroUsize,
) -> Result<Stack, String> {
    let (default, routes) = routes(config, env)?;
    let [connect, headers, first_byte, stream, idle] = config.timeouts.durations()?;
    let client = https_client_with_connect_timeout(tls, connect);
    // An answer that stops mid-way is left after `idle` (the layer's timeouts end once it has
    // classified the answer: its first event, or the first 256 KiB of a JSON answer).
    let upstream = AnswerStallTimeout::new(
        Upstream::new(client, default, routes),
        idle,
        first_byte,
        stream,
    );
    // The allow-list cannot check a request that names no model (the layer passes it through):
    // refused rather than served with the upstream's default model.
    let upstream = RequireModel::new(upstream, config.allow_models.is_some());
    // An upstream that accepts and stays silent is left after these (as downtime: the next
    // model, or a 504 on the last), instead of holding the request, and shutdown, for good.
    let mut fallback = FallbackLayer::new()
        .health(health.clone())
        .default_fallbacks(&config.fallback.models)
        .headers_timeout(headers)
        .first_byte_timeout(first_byte)
        .stream_timeout(stream)
        // The last model's transport failure answered by the layer: its 502 carries the
        // `x-llm-router-*` headers and the records of the models tried, for the client, the
        // log line and the metrics (`Observed` answers only what the layer passes through).
        .answer_transport_errors(true)
        // Every chat body held to `max_body_bytes` and routed: one the layer cannot read
        // (another type, compressed, empty) is refused (415, 400, 413 over the limit) rather
        // than passed on unread and unlimited, unrouted, to the first model with our key.
        .require_json_body(true);
    if let Some(max) = config.fallback.max_models {
        fallback = fallback.max_models(max);
    }
    if config.fallback.retries > 0 {
        fallback = fallback.retries(config.fallback.retries()?);
    }
    if let Some(allow) = &config.allow_models {
        fallback = fallback.allow_models(allow);
    }
    if let Some(limit) = config.max_body_bytes {
        fallback = fallback.max_body_bytes(limit);
    }
    // A conversation's next turn comes on any connection, so to any worker: the workers'
    // routers are clones of one layer, sharing its conversations. The setters below still give
    // each worker a configuration of its own. Every worker reads the one catalog a reload
    // replaces (an atomic load per auto request, no lock).
    let router = match sessions {
        Some(layer) => layer.clone(),
        None => AutoRouteLayer::with_shared_catalog(catalog.clone()),
    };
    let mut auto = router.health(health.clone()).sentinel(&config.auto.model);
    if !config.auto.candidates.is_empty() {
        auto = auto.candidates(&config.auto.candidates);
    }
    // The layers hold a chat body whole until the answer's head (to send it again to the next
    // model); without a bound, clients that upload large bodies and then stall (a byte every
    // minute keeps the body timeout away) made the gateway hold as many as they opened
    // connections: 16 stalled 30 MiB uploads held 480 MiB. Each worker's layer holds at most
    // its share of `max_buffered_bytes`, never less than one body of the largest size; a body
    // that does not fit is answered 503 before it is sent on.
    let max_body_bytes = config
        .max_body_bytes
        .unwrap_or(tower_llm_router::payload::DEFAULT_MAX_BODY_BYTES);
    let buffered = config
        .max_buffered_bytes
        .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES);
    let fallback = fallback.max_buffered_bytes((buffered / workers.get()).max(max_body_bytes));
    // The auto router inside the fallback layer rather than a layer of its own in front: one
    // future and one pass over the body per request (BENCHMARKS.md, section 5, fifth round).
    Ok(tower::Layer::layer(&fallback.auto_route(auto), upstream))
}

/// The bytes of request bodies held at once when `max_buffered_bytes` is not set: 1 GiB for the
/// process, split between the workers.
const DEFAULT_MAX_BUFFERED_BYTES: usize = 1024 * 1024 * 1024;

/// The axum router: the chat and Responses routes (for their 405s), `/v1/models` and
/// `/v1/models/{id}`, `/healthz`, `/metrics` (the sum of every worker's `shards`, and each
/// worker's connections), the JSON 405 and 404.
fn other_routes(
    chat: Observed<Stack>,
    models: Arc<ArcSwap<ModelsAnswers>>,
    shards: Arc<[Arc<Metrics>]>,
    balance: Arc<Balance>,
) -> Router {
    let responses = Observed {
        api: Api::Responses,
        ..chat.clone()
    };
    Router::new()
        .route(CHAT_COMPLETIONS, post_service(chat))
        .route(RESPONSES, post_service(responses))
        .route("/v1/models", {
            let models = models.clone();
            get(move || {
                let list = models.load().list.clone();
                async move { json_response(list) }
            })
        })
        // A wildcard: ids hold slashes (`openai/gpt-4o`), which OpenAI's SDKs do not escape.
        // An id whose escapes do not decode to UTF-8 (`%FF`) is looked up as sent: it names
        // no model, and gets the JSON 404 rather than axum's plain-text 400.
        .route(
            "/v1/models/{*id}",
            get(
                move |id: Result<Path<String>, PathRejection>, uri: http::Uri| {
                    let models = models.load();
                    let answer = match id {
                        Ok(Path(id)) => models.retrieve(&id),
                        Err(_) => {
                            let path = uri.path();
                            models.retrieve(path.strip_prefix("/v1/models/").unwrap_or(path))
                        }
                    };
                    async move { answer }
                },
            ),
        )
        .route(HEALTHZ, get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let mut text = Metrics::render(&shards);
                text.push_str(&Metrics::render_connections(balance.counts()));
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        // After the routes: it applies to those already added. Axum keeps the `Allow` header.
        .method_not_allowed_fallback(|method: http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                format!("{method} is not allowed on this route (see the `Allow` header)"),
            )
            .to_response::<Body>()
        })
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "no such route: the gateway serves POST /v1/chat/completions, POST /v1/responses, \
                 GET /v1/models, GET /v1/models/{id}, GET /healthz and GET /metrics",
            )
            .to_response::<Body>()
        })
}

/// The configuration of the gateway in front of the demo's simulated providers.
pub fn simulated_config(providers: &Providers, listen: &str) -> Config {
    let mut config = Config::with_upstream("http://127.0.0.1:9/v1");
    config.listen = listen.to_owned();
    for (model, base_url) in providers.routes() {
        if model.kind == crate::common::providers::Kind::Healthy {
            config.upstream = base_url.clone();
            config.fallback.models = vec![model.id.to_owned()];
        }
        config.models.push(ModelConfig {
            id: model.id.to_owned(),
            context_window: model.context_window,
            input_price: Some(model.input_price),
            output_price: Some(model.output_price),
            capabilities: model.capabilities(),
            quality: None,
            max_output_tokens: None,
            upstream: Some(base_url),
            api_key_env: None,
            ca_file: None,
            upstream_model: None,
        });
    }
    config
}

/// Serves `app` on `listener` (`TCP_NODELAY` on every connection) until `shutdown`
/// completes; then lets in-flight requests finish. On the caller's runtime (the tests' way):
/// `main` runs [`serve_per_core`].
#[allow(dead_code)]
pub async fn serve(
    listener: impl Accept,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_timeouts(
        listener,
        app,
        shutdown,
        HEADER_READ_TIMEOUT,
        BODY_READ_TIMEOUT,
    )
    .await
}

/// [`serve`] with explicit read timeouts for the request head and between body frames.
#[allow(dead_code)]
pub async fn serve_with_timeouts(
    listener: impl Accept,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: std::time::Duration,
    body_read_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let timeouts = (header_read_timeout, body_read_timeout);
    serve_connections(listener, app, shutdown, timeouts, None).await
}

/// Where an accept loop takes its connections from: a tokio `TcpListener`, or in
/// `tests/gateway.rs` one whose accepts fail on demand.
pub trait Accept: Send + Sync + 'static {
    /// The next connection, or why none could be accepted.
    fn accept(&self) -> impl Future<Output = std::io::Result<tokio::net::TcpStream>> + Send;
}

impl Accept for tokio::net::TcpListener {
    async fn accept(&self) -> std::io::Result<tokio::net::TcpStream> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        Ok(stream)
    }
}

/// The most a connection's read buffer holds (hyper's default is about 400 KiB). A large body
/// is read through this buffer into the one copy the routing layers keep, so every connection
/// receiving one would otherwise hold up to 400 KiB more (two buffers when the previous chunk
/// is still in use): with 1 MiB bodies on 64 connections, the peak RSS fell from 118 to 78 MiB
/// over idle (BENCHMARKS.md). A request's head is held to the same size (hyper's
/// `max_header_size`; the buffer alone would let a head through when one read overshoots it):
/// a longer one is answered 431.
pub const READ_BUFFER_LIMIT: usize = 64 * 1024;

/// The accept loop of [`serve_with_timeouts`], and of each worker of [`serve_per_core`], which
/// also serves the connections other workers hand to it (`handoff`) and hands on those it
/// should not serve itself.
async fn serve_connections(
    listener: impl Accept,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    (header_read_timeout, body_read_timeout): (std::time::Duration, std::time::Duration),
    mut handoff: Option<Handoff>,
) -> std::io::Result<()> {
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1.1, what clients of OpenAI-compatible APIs speak (hyper-util's auto builder would
    // also take HTTP/2 prior knowledge, at the cost of sniffing every connection's first bytes
    // and a rewind wrapper around every read). A client that never finishes its headers is cut
    // off (slowloris) by the looks below rather than by hyper's timer per request
    // (`head_timeout`); one that stalls its body is answered by the body timeout around the app.
    let mut builder = Builder::new();
    builder.header_read_timeout(None);
    builder.max_buf_size(READ_BUFFER_LIMIT);
    builder.max_header_size(READ_BUFFER_LIMIT);
    let mut looks = tokio::time::interval(look_period(header_read_timeout));
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain = Drain::new();
    // Made once per worker: its timeouts live as long as the process.
    let body_stall = StallTimeoutLayer::new(body_read_timeout, app.request_body);
    let mut shutdown = std::pin::pin!(shutdown);
    // When to accept again after a failed accept (`None`: now).
    let mut resume = None;
    loop {
        let placed = tokio::select! {
            accepted = accept_after(&listener, resume) => {
                // A failed accept (e.g. out of file descriptors) must not end the server: it
                // pauses the accepts.
                resume = accepted.as_ref().err().and_then(accept_failed);
                match (accepted.ok(), &handoff) {
                    (Some(stream), Some(handoff)) => handoff.place(stream),
                    (Some(stream), None) => Some((stream, app.balance.open(app.worker))),
                    (None, _) => None,
                }
            }
            Some(handed) = next_handed(&mut handoff) => Some(handed),
            _ = looks.tick() => {
                drain.cut_stale();
                None
            }
            () = &mut shutdown => break,
        };
        let Some((stream, live)) = placed else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = TowerToHyperService::new(Counted::new(
            tower::ServiceBuilder::new()
                .layer(body_stall)
                .service(app.clone()),
            activity.clone(),
        ));
        // A client that stops reading its answer is left after `idle`, like an upstream that
        // stops sending it.
        let stream = WriteStall::new(stream, app.client_write_stall);
        let connection = drain.watch(
            builder.serve_connection(TokioIo::new(stream), service),
            activity,
        );
        tokio::spawn(async move {
            let _ = connection.await;
            drop(live);
        });
    }
    // This worker's copy of the listening socket: once every worker has dropped its own, new
    // connections are refused rather than queued by the kernel for no one.
    drop(listener);
    if let Some(handoff) = &mut handoff {
        handoff.close();
    }
    // In-flight requests finish; idle keep-alive connections are closed, and one that waits
    // for (the rest of) a head is closed by the head timeout, as before shutdown.
    drain.shutdown(&mut looks).await;
    Ok(())
}

/// How long an accept loop pauses after a failed accept, as axum's `serve` (and hyper 0.14's
/// server before it) do: out of file descriptors, the listening socket stays readable and
/// every accept fails at once, so that retrying at once spun every worker at 100% CPU until
/// a descriptor was freed. Connections wait in the backlog meanwhile; requests in flight,
/// hand-overs, the head timeout and shutdown go on.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The next connection from `listener`, not before `resume`.
async fn accept_after(
    listener: &impl Accept,
    resume: Option<tokio::time::Instant>,
) -> std::io::Result<tokio::net::TcpStream> {
    if let Some(resume) = resume {
        tokio::time::sleep_until(resume).await;
    }
    listener.accept().await
}

/// When to accept again after `error`, logged once per pause (`None`: at once, for an error of
/// the one connection, not of the listener; as axum's `serve`).
fn accept_failed(error: &std::io::Error) -> Option<tokio::time::Instant> {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return None;
    }
    tracing::error!(
        target: "gateway",
        error = %error,
        "accept failed: accepting again in {} s",
        ACCEPT_PAUSE.as_secs()
    );
    Some(tokio::time::Instant::now() + ACCEPT_PAUSE)
}

/// The next connection handed to this worker; never, without a hand-over.
async fn next_handed(
    handoff: &mut Option<Handoff>,
) -> Option<(tokio::net::TcpStream, crate::balance::Live)> {
    match handoff {
        Some(handoff) => handoff.next().await,
        None => std::future::pending().await,
    }
}

/// Serves each of `apps` ([`build_workers`]) on a thread of its own running a single-threaded
/// tokio runtime, with its own accept loop on the shared `listener` (every worker waits on it;
/// the one that takes a new connection serves it).
///
/// A request, its upstream connection and their wake-ups stay on one thread: no work stealing,
/// no wake-up sent to another CPU, no pool shared between threads. On the 2-CPU benchmark
/// machine a plain proxy served this way used about a tenth less CPU per request than on
/// tokio's multi-threaded runtime (BENCHMARKS.md, section 5, sixth round). The price: a busy
/// connection cannot move to an idle worker, which matters little when requests mostly wait for
/// upstreams.
///
/// Returns once `shutdown` has completed and every worker has drained its connections, or as soon
/// as a worker fails. Each worker closes its copy of `listener` as it stops accepting, before it
/// drains: new connections are refused during the drain. `cut`, polled only once `shutdown` has
/// completed (a drain deadline, a second signal), ends the drain: every worker's runtime is
/// dropped with its connections, requests in flight included, and the result says
/// [`Stopped::Cut`].
pub async fn serve_per_core(
    listener: std::net::TcpListener,
    apps: Vec<App>,
    shutdown: impl Future<Output = ()>,
    cut: impl Future<Output = ()>,
) -> std::io::Result<Stopped> {
    use futures::stream::{FuturesUnordered, StreamExt};

    listener.set_nonblocking(true)?;
    let (phase, phases) = tokio::sync::watch::channel(Phase::Serving);
    let mut running = FuturesUnordered::new();
    let handoffs = apps
        .first()
        .map(|app| Handoff::for_workers(&app.balance))
        .unwrap_or_default();
    for (index, (app, handoff)) in apps.into_iter().zip(handoffs).enumerate() {
        let (listener, phases) = (listener.try_clone()?, phases.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || {
                let _ = done.send(run_worker(listener, app, handoff, phases));
            })?;
        running.push(finished);
    }
    // Only the workers hold the listening socket: the last to stop accepting closes it.
    drop(listener);
    let mut shutdown = std::pin::pin!(shutdown);
    // A worker that ends before shutdown has failed: stop the others and say why.
    let early = tokio::select! {
        () = &mut shutdown => None,
        Some(ended) = running.next() => Some(ended),
    };
    let _ = phase.send(Phase::Draining);
    let mut result = early.map_or(Ok(()), worker_result);
    let mut stopped = Stopped::Drained;
    let mut cut = std::pin::pin!(cut);
    loop {
        tokio::select! {
            ended = running.next() => match ended {
                Some(ended) => result = result.and(worker_result(ended)),
                None => break,
            },
            () = &mut cut, if stopped == Stopped::Drained => {
                stopped = Stopped::Cut;
                let _ = phase.send(Phase::Cut);
            }
        }
    }
    result.map(|()| stopped)
}

/// How [`serve_per_core`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight at shutdown finished.
    Drained,
    /// The drain was cut short: connections still open were closed.
    Cut,
}

/// What [`serve_per_core`] tells its workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Stop accepting, let requests in flight finish.
    Draining,
    /// Stop now.
    Cut,
}

/// One worker of [`serve_per_core`]: its runtime, its accept loop, until `phases` says
/// [`Phase::Draining`] and its connections are done, or [`Phase::Cut`].
fn run_worker(
    listener: std::net::TcpListener,
    app: App,
    handoff: Handoff,
    phases: tokio::sync::watch::Receiver<Phase>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut draining, mut cut) = (phases.clone(), phases);
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stopped = async move {
            let _ = draining.wait_for(|phase| *phase >= Phase::Draining).await;
        };
        let timeouts = (HEADER_READ_TIMEOUT, BODY_READ_TIMEOUT);
        let serving = serve_connections(listener, app, stopped, timeouts, Some(handoff));
        tokio::select! {
            served = serving => served,
            // The connections are tasks of this runtime: they close as it is dropped, below.
            _ = cut.wait_for(|phase| *phase == Phase::Cut) => {
                // What is dropped with them was cut, not left by its client.
                DRAIN_CUT.with(|cut| cut.set(true));
                Ok(())
            }
        }
    });
    drop(runtime);
    served
}

/// A worker's result as its thread sent it; a thread that ended without sending one panicked.
fn worker_result(
    ended: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
) -> std::io::Result<()> {
    ended.unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")))
}

/// How long a connection may wait for a request's headers (closed after this to one and a half
/// times this: `head_timeout`).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a request body may stall between frames.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The routing stack behind `POST /v1/chat/completions` and `POST /v1/responses`.
type Stack = Fallback<RequireModel<AnswerStallTimeout<Upstream>>>;

/// What the gateway answers: the chat route's stack's response body, which also carries the
/// gateway's own 502s and (as [`AnswerBody`]'s `Right`) the router's answers: one body type, so
/// that a chat completion's answer is not moved into an `Either` of the two routes' bodies.
type ChatBody = Recorded<ResponseBody<AnswerBody<Incoming>>>;

/// The gateway's service: `POST /v1/chat/completions` and `POST /v1/responses` go straight to
/// the routing stack (one stack: the upstream URI follows the path), every other request to the
/// axum router (which keeps both routes, so that another method on their paths gets the
/// router's JSON 405 with axum's `Allow` header). The hot path skips axum's routing, boxing and
/// extensions: a sixth of the gateway's work per request over a plain proxy in `callgrind` (see
/// BENCHMARKS.md).
#[derive(Clone)]
pub struct App {
    chat: Observed<Stack>,
    router: Router,
    /// Every worker's open connections, and which worker this application is.
    balance: Arc<Balance>,
    worker: usize,
    /// The tokens clients must send (`client_keys_env`); None: every client is served.
    client_keys: Option<ClientKeys>,
    /// Whether a client's conversations are remembered apart from other clients' (`[auto]
    /// session_affinity` with `client_keys_env`): each request carries a [`SessionScope`]
    /// from its key. Off, no extension is inserted (an allocation per request).
    scope_sessions: bool,
    /// How long a write to a client may wait for it to read (`[timeouts] idle`): a client that
    /// leaves its answer unread for longer loses its connection ([`WriteStall`]).
    client_write_stall: std::time::Duration,
    /// How long a request's whole body may take (`[timeouts] request_body`), from the first
    /// wait for it: a body still incomplete then is answered 408 ([`StallTimeoutLayer`]).
    request_body: std::time::Duration,
}

impl<B> Service<Request<B>> for App
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ChatBody>;
    type Error = Infallible;
    type Future = AppFuture<
        <Observed<Stack> as Service<Request<B>>>::Future,
        axum::routing::future::RouteFuture<Infallible>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are ready at once in practice (the stack's only inner service is a pooled
        // client); a request then goes to one of them without a clone of either.
        ready!(Service::<Request<B>>::poll_ready(&mut self.chat, cx))?;
        Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(keys) = &self.client_keys {
            let admitted = keys.admit(req.headers());
            if let Some(scope) = admitted.filter(|_| self.scope_sessions) {
                req.extensions_mut().insert(scope);
            }
            if admitted.is_none() && req.uri().path() != HEALTHZ {
                let sent = req.headers().contains_key(header::AUTHORIZATION);
                self.chat.metrics.record_unauthorized();
                return AppFuture::Refused {
                    response: Some(unauthorized(req.method(), req.uri().path(), sent)),
                };
            }
        }
        if req.method() == http::Method::POST {
            // Chat first: its cost is the one comparison it was before the Responses API.
            let path = req.uri().path();
            if path == CHAT_COMPLETIONS {
                return AppFuture::Chat {
                    future: self.chat.call(req),
                };
            }
            if path == RESPONSES {
                return AppFuture::Chat {
                    future: self.chat.call_as(req, Api::Responses),
                };
            }
        }
        AppFuture::Router {
            future: self.router.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`App`].
    #[project = AppProj]
    pub enum AppFuture<C, R> {
        /// A chat completion or a Responses API request through the routing stack.
        Chat { #[pin] future: C },
        /// Anything else, through the axum router.
        Router { #[pin] future: R },
        /// Refused before any service: the answer, until taken.
        Refused { response: Option<Response<ChatBody>> },
    }
}

impl<C, R> Future for AppFuture<C, R>
where
    C: Future<Output = Result<Response<ChatBody>, Infallible>>,
    R: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<ChatBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // As it comes: no body to wrap.
            AppProj::Chat { future } => future.poll(cx),
            AppProj::Router { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(|body| {
                    Recorded::plain(ResponseBody::inner(Either::Right(body)))
                })))
            }
            AppProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

/// The routed APIs' service: the layer stack, one log line and the metrics per request,
/// and a transport failure the layer passes through (a request it does not route) answered as
/// a 502 JSON error, or a 408 when it was the client's body that stalled. A routed stream is
/// logged and counted when its body ends ([`Recorded`]); any other answer when its head goes
/// out.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: Arc<Metrics>,
    /// The stack's readiness error, answered (502) by the next call.
    not_ready: Option<Arc<BoxError>>,
    /// What its requests are logged as ([`Service::call`]'s; [`Observed::call_as`] says
    /// another).
    api: Api,
}

/// The API of a routed request: the same stack serves both; the log lines tell them apart.
/// The metrics do not: they count models and outcomes, whichever API asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/responses`: OpenAI's Responses API (`client.responses.create`).
    Responses,
}

impl std::fmt::Display for Api {
    /// What the log lines call a request of this API (`answered` writes the same words as
    /// literals).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::ChatCompletions => "chat completion",
            Api::Responses => "responses request",
        })
    }
}

impl<S> Observed<S> {
    /// [`Service::call`] for a request of `api`, on the readiness [`Service::poll_ready`] gave
    /// (one service, one readiness, whichever API: no second stack to poll per request).
    pub fn call_as<B, ResBody>(&mut self, req: Request<B>, api: Api) -> ObservedFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response<ResBody>, Error = BoxError>,
        S::Future: Asked,
    {
        let not_ready = self.not_ready.take();
        // An `Option` rather than an enum with the error: it needs no discriminant of its own
        // (the future's niche holds `None`), which spared one copy of the future here (the
        // disassembly of `App::call`: five `memcpy`s instead of six).
        let inner = not_ready.is_none().then(|| self.inner.call(req));
        ObservedFuture {
            inner,
            not_ready,
            metrics: self.metrics.clone(),
            start: Instant::now(),
            finished: false,
            api,
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = BoxError>,
    S::Future: Asked,
    ResBody: From<Bytes>,
{
    type Response = Response<Recorded<ResBody>>;
    type Error = Infallible;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(error) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(Arc::new(error));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.call_as(req, self.api)
    }
}

/// A request in flight that can name the model it asked: for the line (and the count) of a
/// request whose client leaves before its answer, which carries no [`Attempts`] to read it from.
pub trait Asked {
    /// The model asked, once the layers have read the body: for the line, the sentinel of a
    /// request the auto router routed ([`RouteDecision::requested`]), as the answer's line
    /// names it; else [`Attempts::requested`].
    fn asked(&self) -> Option<&str>;
    /// For the count: [`Attempts::requested`], the model the auto router chose for an auto
    /// request (the metrics count configured models, not the sentinel).
    fn first_of_chain(&self) -> Option<&str>;
}

/// The fallback layer's future.
impl<S, C, ResBody, B> Asked for fallback::ResponseFuture<S, C, ResBody, B>
where
    S: Service<Request<tower_llm_router::RouterBody>>,
{
    fn asked(&self) -> Option<&str> {
        match self.route_decision() {
            Some(decision) => Some(&decision.requested),
            None => self.requested(),
        }
    }

    fn first_of_chain(&self) -> Option<&str> {
        self.requested()
    }
}

thread_local! {
    /// Set on a worker's thread when its drain is cut, before its runtime (and every request
    /// of it) is dropped: what is dropped then was not left by its client.
    static DRAIN_CUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the requests dropped on this thread now are dropped by the drain's cut.
fn drain_cut() -> bool {
    DRAIN_CUT.with(std::cell::Cell::get)
}

pin_project_lite::pin_project! {
    /// The future of [`Observed`]: the stack's (or its readiness error), then the metrics and
    /// the log line; dropped before that (the client left, or the drain was cut), the line
    /// and the count of a cancelled request.
    pub struct ObservedFuture<F>
    where
        F: Asked,
    {
        #[pin]
        inner: Option<F>,
        not_ready: Option<Arc<BoxError>>,
        metrics: Arc<Metrics>,
        start: Instant,
        finished: bool,
        api: Api,
    }

    impl<F> PinnedDrop for ObservedFuture<F>
    where
        F: Asked,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.finished {
                let elapsed = this.start.elapsed();
                // Asked, at least (not known before the layer has read the body).
                let inner = this.inner.as_ref().get_ref().as_ref();
                let counted = inner.and_then(Asked::first_of_chain);
                this.metrics.record(counted, None, Ended::Cancelled, None);
                let model = inner.and_then(Asked::asked).unwrap_or("-");
                if drain_cut() {
                    tracing::info!(
                        target: "gateway",
                        model,
                        ms = %crate::log::Millis(elapsed),
                        "{}: closed by the drain's cut before the answer",
                        this.api
                    );
                } else {
                    tracing::info!(
                        target: "gateway",
                        model,
                        ms = %crate::log::Millis(elapsed),
                        "{}: the client left before the answer",
                        this.api
                    );
                }
            }
        }
    }
}

impl<F, ResBody> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, BoxError>> + Asked,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<Recorded<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.as_pin_mut() {
            Some(future) => ready!(future.poll(cx)),
            None => Err(this.not_ready.take().map_or_else(
                || "polled after completion".into(),
                |e| e.to_string().into(),
            )),
        };
        *this.finished = true;
        let elapsed = this.start.elapsed();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return Poll::Ready(Ok(failed(&error, this.metrics, elapsed, *this.api)));
            }
        };
        // A routed stream that began well: its outcome is known at its end.
        if is_routed_stream(&response) {
            let (mut parts, body) = response.into_parts();
            let end = Box::new(StreamEnd {
                metrics: this.metrics.clone(),
                start: *this.start,
                head: elapsed,
                status: parts.status,
                // What the line and the count need, moved (nothing after this reads them).
                extensions: std::mem::take(&mut parts.extensions),
                api: *this.api,
            });
            return Poll::Ready(Ok(Response::from_parts(
                parts,
                Recorded {
                    body,
                    end: Some(end),
                },
            )));
        }
        let status = response.status();
        answered(
            response.extensions(),
            status,
            this.metrics,
            elapsed,
            None,
            *this.api,
        );
        Poll::Ready(Ok(response.map(Recorded::plain)))
    }
}

/// Whether `response` is a stream the layers routed and whose first event was not an error:
/// what its client gets is decided at its end.
fn is_routed_stream<B>(response: &Response<B>) -> bool {
    let began = response
        .extensions()
        .get::<Attempts>()
        .and_then(|a| a.tried.last())
        .is_some_and(|last| last.outcome == Outcome::Ok);
    began
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The answer to a request the stack failed (`error`), counted and logged.
#[cold]
fn failed<B: From<Bytes>>(
    error: &BoxError,
    metrics: &Metrics,
    elapsed: std::time::Duration,
    api: Api,
) -> Response<Recorded<B>> {
    // A body passed through that the client stopped sending: its 408, as the layers answer a
    // body they buffer.
    if crate::stall::is_request_stall(&**error) {
        let response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the request body was not received in time: it stalled",
        )
        .to_response::<B>();
        let status = response.status();
        answered(response.extensions(), status, metrics, elapsed, None, api);
        return response.map(Recorded::plain);
    }
    metrics.record(None, None, Ended::TransportError, Some(elapsed));
    tracing::warn!(
        target: "gateway",
        error = %error,
        status = 502u16,
        ms = %crate::log::Millis(elapsed),
        "{api}: no upstream answered"
    );
    bad_gateway::<B>(error).map(Recorded::plain)
}

/// How a stream the layers routed ended, once its head went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamOutcome {
    /// Its last event went out.
    Ok,
    /// The upstream cut it: it ended with the layer's error event.
    Broken,
    /// The upstream sent nothing for `[timeouts] idle`: it ended with the layer's error event.
    Stalled,
    /// The client left before its end, or the drain was cut.
    Cancelled,
}

/// What a routed stream's end is recorded with: one per streamed answer, made when its head
/// goes out, used once at its end.
struct StreamEnd {
    metrics: Arc<Metrics>,
    start: Instant,
    /// Until the head went out (with the first event).
    head: std::time::Duration,
    status: StatusCode,
    /// The answer's: `Attempts`, `ServedModel`, the auto router's `RouteDecision`.
    extensions: http::Extensions,
    api: Api,
}

impl StreamEnd {
    fn finish(&self, outcome: StreamOutcome) {
        let total = self.start.elapsed();
        let (ended, name) = match outcome {
            StreamOutcome::Ok => (Ended::Answered, "ok"),
            StreamOutcome::Broken => (Ended::Broken, "broken"),
            StreamOutcome::Stalled => (Ended::Stalled, "stalled"),
            StreamOutcome::Cancelled if drain_cut() => (Ended::Cancelled, "cut"),
            StreamOutcome::Cancelled => (Ended::Cancelled, "cancelled"),
        };
        self.metrics.record_stream(total);
        answered(
            &self.extensions,
            self.status,
            &self.metrics,
            self.head,
            Some((ended, name, total)),
            self.api,
        );
    }
}

pin_project_lite::pin_project! {
    /// A chat completion's answer body. A stream the layers routed carries what its end is
    /// recorded with, and is recorded when it ends: its last frame, the layer's error event
    /// (which a break or a stall becomes), or its drop before either (the client left, or the
    /// drain was cut). Per frame, a stream costs a look at whether its body has ended; anything
    /// else costs nothing.
    pub struct Recorded<B> {
        #[pin]
        body: B,
        end: Option<Box<StreamEnd>>,
    }

    impl<B> PinnedDrop for Recorded<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.finish(StreamOutcome::Cancelled);
            }
        }
    }
}

impl<B> Recorded<B> {
    /// A body recorded when its head went out: nothing to do at its end.
    pub fn plain(body: B) -> Self {
        Self { body, end: None }
    }
}

impl<B: From<Bytes>> From<Bytes> for Recorded<B> {
    fn from(bytes: Bytes) -> Self {
        Self::plain(B::from(bytes))
    }
}

/// How a stream whose last frame is `data` ended: the layer's error event, in whichever API's
/// shape (written for a break or a stall; a stall's names [`crate::stall::ANSWER_STALLED`]),
/// or well.
fn outcome_of_last(data: &[u8]) -> StreamOutcome {
    if !tower_llm_router::body::is_stream_error_event(data) {
        StreamOutcome::Ok
    } else if memchr::memmem::find(data, crate::stall::ANSWER_STALLED.as_bytes()).is_some() {
        StreamOutcome::Stalled
    } else {
        StreamOutcome::Broken
    }
}

impl<B> http_body::Body for Recorded<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled =
            ready!(this.body.as_mut().poll_frame(cx)).map(|frame| frame.map_err(Into::into));
        if this.end.is_some() {
            let outcome = match &polled {
                None => Some(StreamOutcome::Ok),
                Some(Err(error)) if error.to_string().contains(crate::stall::ANSWER_STALLED) => {
                    Some(StreamOutcome::Stalled)
                }
                Some(Err(_)) => Some(StreamOutcome::Broken),
                // A server stops polling a body that says it has ended: its last frame.
                Some(Ok(frame)) if this.body.is_end_stream() => Some(
                    frame
                        .data_ref()
                        .map_or(StreamOutcome::Ok, |d| outcome_of_last(d)),
                ),
                Some(Ok(_)) => None,
            };
            if let Some(outcome) = outcome {
                if let Some(end) = this.end.take() {
                    end.finish(outcome);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts an answered request and writes its log line: when its head went out (`head`
/// after the request came), or for a routed stream at its `end` (how it ended, as counted
/// and as logged, and when).
fn answered(
    extensions: &http::Extensions,
    status: StatusCode,
    metrics: &Metrics,
    head: std::time::Duration,
    end: Option<(Ended, &'static str, std::time::Duration)>,
    api: Api,
) {
    let served = extensions.get::<ServedModel>();
    let attempts = extensions.get::<Attempts>();
    let last = attempts.and_then(|a| a.tried.last());
    // The layer's 502 for a last attempt that got no answer (no status of its own).
    let unanswered = status == StatusCode::BAD_GATEWAY && last.is_some_and(|l| l.status.is_none());
    let ended = if let Some((ended, _, _)) = end {
        ended
    } else if unanswered {
        Ended::TransportError
    } else if attempts.is_none() && extensions.get::<PassedThrough>().is_some() {
        Ended::PassedThrough
    } else {
        Ended::Answered
    };
    metrics.record(served.map(|m| &*m.0), attempts, ended, Some(head));
    let decision = extensions.get::<RouteDecision>();
    // One call per message, each a literal: a message formatted from `api` cost every chat
    // completion's line a formatting call that the literal does not.
    macro_rules! line {
        ($message:literal) => {
            tracing::info!(
                target: "gateway",
                // The model asked: the layer may have passed it over as cooling down; for a
                // request the auto router routed, the sentinel the client sent.
                model = decision
                    .map(|d| &*d.requested)
                    .or(attempts.map(|a| &*a.requested))
                    .unwrap_or("-"),
                attempts = ?AttemptsText(attempts),
                // A model served the answer only if it answered: not on a timeout or a
                // transport failure (the layer's 504 and 502, which name the last model tried).
                served = served
                    .filter(|_| last.is_some_and(|l| l.status.is_some()))
                    .map_or("-", |m| &*m.0),
                status = status.as_u16(),
                outcome = end.map(|(_, name, _)| name),
                head_ms = %crate::log::Millis(head),
                total_ms =
                    end.map(|(_, _, total)| tracing::field::display(crate::log::Millis(total))),
                // The code of an answer the layers (or the gateway) made themselves: a
                // refusal names no model and tried none.
                error = extensions.get::<ApiError>().map(ApiError::code),
                // What the auto router decided, for a request it routed.
                auto_chosen = decision.map(|d| &*d.chosen),
                auto_score = decision.map(|d| tracing::field::display(Score(d.score))),
                auto_reason = decision.map(|d| &*d.reason),
                $message
            )
        };
    }
    // The words of `Api`'s `Display`.
    match api {
        Api::ChatCompletions => line!("chat completion"),
        Api::Responses => line!("responses request"),
    }
}

/// The `x-llm-router-attempts` text of `attempts` (`-` without), after the models passed over
/// as cooling down (`model=cooling_down`: tried last, if at all), written into the line as a
/// string is (`Debug`: quoted, escaped), without being built first.
struct AttemptsText<'a>(Option<&'a Attempts>);

impl std::fmt::Debug for AttemptsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cooling = self.0.map_or(&[][..], |a| &a.passed_over[..]);
        let attempts = self.0.map_or(&[][..], |a| &a.tried[..]);
        if cooling.is_empty() && attempts.is_empty() {
            return f.write_str("\"-\"");
        }
        f.write_str("\"")?;
        let pairs = cooling
            .iter()
            .map(|model| (model, "cooling_down"))
            .chain(attempts.iter().map(|a| (&a.model, a.outcome.as_str())));
        for (i, (model, outcome)) in pairs.enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={outcome}", model.escape_debug())?;
        }
        f.write_str("\"")
    }
}

/// The auto router's difficulty score, with two decimals.
struct Score(f32);

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// The 502 for a request passed through (or a stack not ready) that got no answer: the shape of
/// the layer's own 502 for a routed one, and its words for why (the error's sources: hyper-util's
/// own says only "client error (Connect)").
fn bad_gateway<B: From<Bytes>>(error: &BoxError) -> Response<B> {
    let mut response = ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        "upstream_unreachable",
        format!("no upstream answered: {}", describe_error(&**error)),
    )
    .to_response::<B>();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
