//! The decision for one request: constraints, ranking, rewrite.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::policy::{cooling_last, Config, PluginFilter, PluginOptions, RouteDecision};
use super::{estimate_tokens, fits, ModelProfile, PromptInfo, Ranking};
use crate::payload::{ChatRequest, Messages, Part};
use crate::ApiError;

/// Tokens counted for one image part (its size is not read), the most the main providers
/// count for one image, since the estimate decides whether a prompt fits a window:
/// OpenAI's high detail (GPT-4o, GPT-4.1, o-series) fits an image into 2048x2048, scales its
/// short side to 768 and counts 85 + 170 per 512-pixel tile: 765 for a square image of any
/// size (1024x1024 or 2048x2048), up to 1,445 for a tall or wide one (768x2048, 2x4 tiles).
/// Anthropic counts width x height / 750 up to about 1.15 megapixels: about 1,600. Gemini
/// counts 258 per 768x768 tile, and a large image takes several, which can exceed this, but
/// in windows of a million tokens, where that does not decide the fit.
const TOKENS_PER_IMAGE: u64 = 1_600;
/// Tokens counted for one `file` part (a PDF; its data is not read, so its page count is not
/// known): one page as Anthropic counts it, the dearest of the main providers, its text (up
/// to about 3,000 tokens for a dense page) and the page as an image (about 1,600). OpenAI
/// also sends the text and an image of each page. A longer document takes more: this is a
/// floor that keeps a file from a window that cannot hold a page, not a bound.
const TOKENS_PER_FILE: u64 = 4_600;
/// Tokens counted for one `input_audio` part (its length is not read): one minute at 32
/// tokens a second, Gemini's rate and the highest of the main providers (OpenAI's audio
/// models count about 10 a second). Longer audio takes more: a floor, not a bound.
const TOKENS_PER_AUDIO: u64 = 1_920;
/// Tokens counted for one video part (`video_url`, `input_video`; its length is not read):
/// one minute at 263 tokens a second, Gemini's rate at its default resolution (a frame a
/// second, with its sound). Longer video takes more: a floor, not a bound.
const TOKENS_PER_VIDEO: u64 = 15_780;
/// Models the 400 `no_model_fits` names with their reason (in catalog order); it counts the
/// rest, so that OpenRouter's whole list (300 models and more) is not tens of kilobytes of
/// error message.
const UNFIT_NAMED: usize = 8;
/// Per-message framing tokens (role markers), as in OpenAI's token-counting guide.
const TOKENS_PER_MESSAGE: u64 = 4;

/// What the layer sends on: the rewritten body, the decision and the fallback chain.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) body: Bytes,
    pub(crate) decision: RouteDecision,
    pub(crate) fallbacks: Vec<Arc<str>>,
}

/// The messages the decision reads: at least one.
///
/// Without a message there is no prompt to check against the candidates' windows and
/// capabilities (a legacy `prompt` or the Responses API's `input` is not read), and a blind
/// pick would be the cheapest model, whatever the request holds.
fn prompt_messages(request: &ChatRequest) -> Result<Messages<'_>, ApiError> {
    let messages = request.messages()?;
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "no_messages",
            "auto routing chooses the model from `messages`, and this request has none \
             (a `prompt` or an `input` is not read)",
        )
        .with_param("messages"));
    }
    Ok(messages)
}

/// The prompt view the policy reads.
pub(crate) fn prompt_info<'a>(
    request: &ChatRequest,
    messages: &Messages<'_>,
    text: &'a str,
) -> PromptInfo<'a> {
    // Everything the model reads counts: the text parts, the calls earlier turns made (their
    // arguments can be long), the tool definitions.
    let text_tokens: u64 = messages
        .iter()
        .flat_map(|m| {
            let texts = m.parts.iter().filter_map(|p| p.text()).map(|t| &**t);
            texts.chain(m.tool_calls)
        })
        .chain(request.tool_definitions())
        .map(estimate_tokens)
        .sum();
    let images = messages.image_count();
    let audio = messages.audio_count();
    let videos = messages.video_count();
    let files = messages
        .iter()
        .flat_map(|m| m.parts.iter())
        .filter(|p| matches!(p, Part::File))
        .count();
    let estimated_tokens = text_tokens
        + TOKENS_PER_MESSAGE * messages.len() as u64
        + TOKENS_PER_IMAGE * images as u64
        + TOKENS_PER_AUDIO * audio as u64
        + TOKENS_PER_VIDEO * videos as u64
        + TOKENS_PER_FILE * files as u64;
    PromptInfo {
        text,
        all_text_chars: messages.text_chars(),
        turns: messages.len(),
        images,
        audio,
        videos,
        files,
        has_tools: request.has_tools(),
        wants_json_schema: request.wants_json_schema(),
        estimated_tokens,
        max_tokens: request.max_tokens(),
    }
}

/// The catalog models this request may go to: the plugin's patterns, then the hard
/// constraints. Also returns the plugin entry to remove from the body.
pub(crate) fn candidates<'c>(
    config: &'c Config,
    request: &ChatRequest,
    prompt: &PromptInfo<'_>,
) -> Result<(Vec<&'c ModelProfile>, Option<usize>), ApiError> {
    let (filter, plugin_index) = plugin_filter(request)?;
    // The sentinel asks for routing: written into `model`, it would be routed again
    // upstream (OpenRouter's own `openrouter/auto`), not served by a model of this catalog.
    let mut configured = config
        .catalog
        .models()
        .iter()
        .filter(|m| !config.is_sentinel(&m.id))
        .peekable();
    if configured.peek().is_none() {
        // The layer's configuration, not the request, leaves nothing to choose from.
        return Err(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no_candidate_model",
            "the auto router has no model to choose from",
        ));
    }
    let admitted: Vec<&ModelProfile> = configured.filter(|m| filter.admits(&m.id)).collect();
    if admitted.is_empty() {
        return Err(ApiError::bad_request(
            "no_candidate_model",
            "no configured model matches the auto-router plugin's allowed_models / excluded_models",
        )
        .with_param("plugins"));
    }
    let mut fitting = Vec::with_capacity(admitted.len());
    let mut unfit = Vec::new();
    let mut unfit_count = 0usize;
    for model in admitted {
        match fits(prompt, model) {
            Ok(()) => fitting.push(model),
            Err(why) => {
                if unfit.len() < UNFIT_NAMED {
                    unfit.push(format!("{}: {why}", model.id));
                }
                unfit_count += 1;
            }
        }
    }
    if fitting.is_empty() {
        let more = match unfit_count - unfit.len() {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        return Err(ApiError::bad_request(
            "no_model_fits",
            format!(
                "no candidate model can serve this request ({}{more})",
                unfit.join("; ")
            ),
        )
        .with_param("messages"));
    }
    Ok((fitting, plugin_index))
}

fn plugin_filter(request: &ChatRequest) -> Result<(PluginFilter, Option<usize>), ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_plugin",
            format!("invalid auto-router plugin options: {why}"),
        )
        .with_param("plugins")
    };
    let mut entries = request
        .plugins()
        .filter(|plugin| plugin.id.as_deref() == Some("auto-router"));
    let Some(plugin) = entries.next() else {
        return Ok((PluginFilter::default(), None));
    };
    // Which would count is a guess, and only one entry is removed before the upstream.
    if entries.next().is_some() {
        return Err(invalid("more than one `auto-router` entry".into()));
    }
    let options = PluginOptions::parse(plugin.raw.get()).map_err(invalid)?;
    options.validate().map_err(invalid)?;
    let filter = if options.enabled == Some(false) {
        PluginFilter::default()
    } else {
        options.into_filter()
    };
    Ok((filter, Some(plugin.index)))
}

/// Turns a ranking into the rewritten request.
pub(crate) fn conclude(
    config: &Config,
    request: &ChatRequest,
    mut ranking: Ranking,
    candidates: &[&ModelProfile],
    plugin_index: Option<usize>,
) -> Result<Routed, ApiError> {
    // A policy may only choose among the candidates that fit, each once: a repeated model
    // would take a place of the fallback chain (which drops it) from another one.
    let mut named = vec![false; candidates.len()];
    ranking.models.retain(|m| {
        candidates
            .iter()
            .position(|c| c.id == *m)
            .is_some_and(|i| !std::mem::replace(&mut named[i], true))
    });
    cooling_last(config.health.as_deref(), &mut ranking);
    // Some model fits (`candidates` checked it): a policy that names none of them failed on
    // this side, not the client's request.
    let Some(chosen) = ranking.models.first().cloned() else {
        return Err(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "route_policy_failed",
            format!(
                "the routing policy named none of the {} candidate models ({})",
                candidates.len(),
                ranking.reason
            ),
        ));
    };
    let fallbacks = ranking
        .models
        .iter()
        .skip(1)
        .take(config.max_fallbacks)
        .cloned()
        .collect();
    let mut splice = request.splice().set_model(&chosen);
    if let Some(index) = plugin_index {
        // All of `plugins` consumed: the member goes too, as `models` does (OpenAI refuses
        // an argument it does not know, even empty).
        splice = if request.plugin_count() == 1 {
            splice.remove_plugins()
        } else {
            splice.remove_plugin(index)
        };
    }
    Ok(Routed {
        body: splice.to_bytes(),
        decision: RouteDecision {
            requested: request.model_shared().cloned().unwrap_or_default(),
            chosen,
            ranking: ranking.models,
            score: ranking.score,
            reason: ranking.reason,
        },
        fallbacks,
    })
}

/// The whole decision with a sync policy.
pub(crate) fn decide_sync(
    config: &Config,
    policy: &dyn super::RoutePolicy,
    request: &ChatRequest,
) -> Result<Routed, ApiError> {
    let messages = prompt_messages(request)?;
    let text = messages.last_user_text().unwrap_or(Cow::Borrowed(""));
    let prompt = prompt_info(request, &messages, &text);
    let (candidates, plugin_index) = candidates(config, request, &prompt)?;
    let ranking = policy.route(&prompt, &candidates);
    conclude(config, request, ranking, &candidates, plugin_index)
}

/// The whole decision with an async policy: owns what it needs, so it can be boxed.
pub(crate) async fn decide_async(
    config: Arc<Config>,
    policy: Arc<dyn super::AsyncRoutePolicy>,
    request: ChatRequest,
) -> Result<Routed, ApiError> {
    let messages = prompt_messages(&request)?;
    let text = messages.last_user_text().unwrap_or(Cow::Borrowed(""));
    let prompt = prompt_info(&request, &messages, &text);
    let (candidates, plugin_index) = candidates(&config, &request, &prompt)?;
    let ranking = policy.route(&prompt, &candidates).await.map_err(|e| {
        ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "server_error",
            "route_policy_failed",
            format!("the routing policy failed: {e}"),
        )
    })?;
    conclude(&config, &request, ranking, &candidates, plugin_index)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auto_route::{AutoRouteLayer, Catalog, DefaultRouter, RoutePolicy};
    use crate::health::{Health, InMemoryHealth, Observation};
    use crate::ErrorClass;

    fn catalog() -> Catalog {
        Catalog::from_profiles([
            ModelProfile::new("small", 32_000, 0.1, 0.2),
            ModelProfile::new("medium", 128_000, 1.0, 3.0),
            ModelProfile::new("large", 200_000, 5.0, 15.0),
        ])
    }

    fn decide(layer: &AutoRouteLayer, policy: &dyn RoutePolicy, prompt: &str) -> Routed {
        let body =
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]});
        let request = ChatRequest::parse(Bytes::from(body.to_string())).unwrap();
        decide_sync(&layer.config, policy, &request).unwrap()
    }

    /// The recorded reason explains the model written into `model`: when the policy's first
    /// choice cools down, it does not still say that model was ranked first and nothing more.
    #[tokio::test(start_paused = true)]
    async fn the_reason_says_why_a_cooling_first_choice_was_not_chosen() {
        let health = Arc::new(InMemoryHealth::new());
        let layer = AutoRouteLayer::new(catalog()).health(health.clone());
        let router = DefaultRouter::new();
        let healthy = decide(&layer, &router, "hi");
        assert_eq!(&*healthy.decision.chosen, "small");
        assert!(!healthy.decision.reason.contains("cooling"));

        health.observe(
            "small",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(60))),
        );
        assert!(health.is_cooling_down("small"));
        let routed = decide(&layer, &router, "hi");
        let d = &routed.decision;
        assert_eq!(&*d.chosen, "medium");
        assert_eq!(d.ranking.last().map(|m| &**m), Some("small"));
        assert!(
            d.reason.contains("small ranked first")
                && d.reason
                    .ends_with("cooling down, ranked last: small; medium chosen"),
            "{}",
            d.reason
        );
    }
    /// The estimated prompt tokens of a request with `extra` parts after its text.
    fn estimate_with(extra: &[serde_json::Value]) -> u64 {
        let mut content = vec![serde_json::json!({"type": "text", "text": "what is this?"})];
        content.extend_from_slice(extra);
        let body = serde_json::json!({"model": "auto",
            "messages": [{"role": "user", "content": content}]});
        let request = ChatRequest::parse(Bytes::from(body.to_string())).unwrap();
        let messages = request.messages().unwrap();
        prompt_info(&request, &messages, "").estimated_tokens
    }

    /// The image cost decides whether a prompt fits a window, so it must not be below what a
    /// provider counts for one image. It was 1,105, under both of these.
    #[test]
    fn an_image_costs_at_least_what_a_provider_counts_for_one() {
        // OpenAI, high detail (GPT-4o, GPT-4.1, o-series): fitted into 2048x2048, the short
        // side scaled to 768, then 85 + 170 per 512-pixel tile. A tall 768x2048 image: 2x4
        // tiles.
        let openai_tall = 85 + 170 * (768u64.div_ceil(512) * 2048u64.div_ceil(512));
        assert_eq!(openai_tall, 1_445);
        // Anthropic: width x height / 750, up to about 1.15 megapixels (1092x1092).
        let claude_largest = 1092 * 1092 / 750;
        assert_eq!(claude_largest, 1_589);
        let image = serde_json::json!({"type": "image_url",
            "image_url": {"url": "https://example.com/cat.png"}});
        let cost = estimate_with(&[image]) - estimate_with(&[]);
        assert!(cost >= openai_tall.max(claude_largest), "{cost}");
    }

    /// A policy that names a model twice (a remote router's pick, then its whole list) gets the
    /// same chain as one that names it once: the repeat does not take a fallback's place.
    #[test]
    fn a_model_the_policy_names_twice_counts_once() {
        let layer = AutoRouteLayer::new(catalog()).max_fallbacks(1);
        let repeats = |_: &PromptInfo<'_>, _: &[&ModelProfile]| {
            let ids = ["large", "gone", "large", "medium", "small", "medium"];
            Ranking::new(ids.map(Arc::from).to_vec(), 0.5, Cow::Borrowed("repeats"))
        };
        let routed = decide(&layer, &repeats, "hi");
        assert_eq!(&*routed.decision.chosen, "large");
        let ranking: Vec<&str> = routed.decision.ranking.iter().map(|m| &**m).collect();
        assert_eq!(ranking, ["large", "medium", "small"]);
        assert_eq!(routed.fallbacks, [Arc::<str>::from("medium")]);
    }
}
