//! The decision for one request: constraints, ranking, rewrite.

use std::borrow::{Borrow, Cow};
use std::sync::Arc;

use bytes::Bytes;

use super::cost_tier::{band_first, CostPercentiles, CostTier};
use super::max_price::MaxPrice;
use super::policy::{
    cooling_last, ranking_kept, Config, PluginFilter, PluginOptions, RouteDecision,
};
use super::session::{SessionKey, SessionScope};
use super::{estimate_tokens, Catalog, DefaultRouter, ModelProfile, PromptInfo, Ranking};
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
    /// The models the ranking passed over as cooling down, in ranking order (see
    /// [`Attempts::passed_over`](crate::fallback::Attempts::passed_over)).
    pub(crate) passed_over: Vec<Arc<str>>,
    /// `fallbacks` expand a sentinel in `models`: the client's own models among them are
    /// those the body's `models` still names, where the ranking's additions are this side's
    /// (see [`ExpandedModels`](crate::fallback::ExpandedModels)).
    pub(crate) expands_models: bool,
    /// `body` is a copy of the client's (a rewrite), not its very buffer: a budget that counts
    /// the client's body counts the copy too, until the client's is let go.
    pub(crate) copied: bool,
    /// The conversation, with session affinity on: the model that serves this request
    /// successfully is remembered under it.
    pub(crate) session: Option<SessionKey>,
    /// The chosen model is the one the conversation was served by before.
    pub(crate) from_session: bool,
}

/// Where a request asks for routing. Its primary model is `model`, or without one the first
/// entry of `models` (as [`FallbackLayer`](crate::FallbackLayer) reads the chain).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    /// The primary model is a sentinel: the router's choice is written into `model`.
    primary: bool,
    /// `models` names a sentinel (its first entry included when it is the primary): `models`
    /// is replaced by the expanded chain, handed over in the request extension.
    in_models: bool,
    /// The request's [`SessionScope`], if any: its conversations are remembered apart.
    scope: Option<SessionScope>,
}

impl Ask {
    /// How `request` asks for routing, `None` when it does not: a comparison for `model` and
    /// one per entry of `models` (none for the usual request, which has no `models`).
    #[inline]
    pub(crate) fn of(config: &Config, request: &ChatRequest) -> Option<Self> {
        let Some(model) = request.model() else {
            return Self::without_model(config, request);
        };
        let primary = config.is_sentinel(model);
        let in_models = request.has_models() && request.models().any(|m| config.is_sentinel(m));
        (primary || in_models).then_some(Self {
            primary,
            in_models,
            scope: None,
        })
    }

    /// The same, for conversations remembered within `scope` (see [`SessionScope`]).
    pub(crate) fn within(self, scope: Option<SessionScope>) -> Self {
        Self { scope, ..self }
    }

    /// [`of`](Self::of) a request without `model`: the first entry of `models` is the primary.
    #[cold]
    fn without_model(config: &Config, request: &ChatRequest) -> Option<Self> {
        let mut models = request.models();
        let primary = models.next().is_some_and(|m| config.is_sentinel(m));
        let in_models = primary || models.any(|m| config.is_sentinel(m));
        in_models.then_some(Self {
            primary,
            in_models,
            scope: None,
        })
    }
}

/// The prompt the decision reads: at least one message or input item.
///
/// Without one there is no prompt to check against the candidates' windows and
/// capabilities (a legacy `prompt` is not read), and a blind pick would be the cheapest
/// model, whatever the request holds.
fn require_messages(messages: &Messages<'_>) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "no_messages",
            "auto routing chooses the model from the prompt, and this request has none: \
             it looks for `messages` (chat completions, Anthropic's Messages API) or `input` \
             (the Responses API); a legacy `prompt` is not read",
        )
        .with_param("messages"));
    }
    Ok(())
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
            let texts = m.parts.iter().filter_map(Part::read_text);
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

/// The catalog models this request may go to: the layer's allow-list, the plugin's patterns,
/// then the hard constraints: the prompt's, and the request's `provider.max_price`.
fn candidates<'c>(
    config: &Config,
    catalog: &'c Catalog,
    filter: &PluginFilter,
    prompt: &PromptInfo<'_>,
) -> Result<Vec<&'c ModelProfile>, ApiError> {
    let mut configured = catalog
        .models()
        .iter()
        .filter(|m| config.may_choose(&m.id))
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
    let mut over_price = 0usize;
    for model in admitted {
        // Written out only for the models named: a catalog of OpenRouter's size may leave
        // hundreds out of a long prompt.
        let named = unfit.len() < UNFIT_NAMED;
        match config.fits(prompt, model) {
            Err(why) if named => unfit.push(format!("{}: {why}", model.id)),
            Err(_) => {}
            Ok(()) => match filter.priced_in(model) {
                Ok(()) => {
                    fitting.push(model);
                    continue;
                }
                Err(why) => {
                    over_price += 1;
                    if named {
                        unfit.push(format!("{}: {why}", model.id));
                    }
                }
            },
        }
        unfit_count += 1;
    }
    if fitting.is_empty() {
        let more = match unfit_count - unfit.len() {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        // The ceiling alone left nothing: it is what the client would change.
        let param = if over_price == unfit_count {
            "provider.max_price"
        } else {
            "messages"
        };
        return Err(ApiError::bad_request(
            "no_model_fits",
            format!(
                "no candidate model can serve this request ({}{more})",
                unfit.join("; ")
            ),
        )
        .with_param(param));
    }
    Ok(fitting)
}

/// What narrows the candidates besides the prompt: the `auto-router` plugin's options (and
/// the plugin entry's index, to remove it) and the request's `provider.max_price`.
fn request_filter(request: &ChatRequest) -> Result<(PluginFilter, Option<usize>), ApiError> {
    let (mut filter, plugin_index) = plugin_filter(request)?;
    filter.max_price = MaxPrice::of(request)?;
    Ok((filter, plugin_index))
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
        // Affinity is no model filter: `pin_model: false` still opts out.
        let mut filter = PluginFilter::default();
        filter.unpinned = options.pin_model == Some(false);
        filter
    } else {
        options.into_filter()
    };
    Ok((filter, Some(plugin.index)))
}

/// The chosen model, the ranking and the models it passed over as cooling down.
type Cleaned = (Arc<str>, Ranking, Vec<Arc<str>>);

/// The policy's ranking kept to the candidates that fit, each once, the models of the
/// request's cost tier first (if it asks for one), the models cooling down last and cut to
/// [`ranking_kept`], with its first model and the models it passed over as cooling down: a
/// policy that names none of the candidates failed on this side.
fn clean(
    config: &Config,
    catalog: &Catalog,
    mut ranking: Ranking,
    candidates: &[&ModelProfile],
    cost_tier: Option<CostTier>,
) -> Result<Cleaned, ApiError> {
    // A policy may only choose among the candidates that fit, each once: a repeated model
    // would take a place of the fallback chain (which drops it) from another one. The
    // candidates are catalog models: each is found by its position in the catalog, not by
    // comparing its id with every candidate's (OpenRouter's list is 300 to 400 models).
    const OTHER: u8 = 0;
    const CANDIDATE: u8 = 1;
    const NAMED: u8 = 2;
    let mut state = vec![OTHER; catalog.len()];
    for candidate in candidates {
        if let Some(i) = catalog.position(&candidate.id) {
            state[i] = CANDIDATE;
        }
    }
    ranking.models.retain(|m| match catalog.position(m) {
        Some(i) if state[i] == CANDIDATE => {
            state[i] = NAMED;
            true
        }
        _ => false,
    });
    let kept = ranking_kept(config.max_fallbacks);
    let health = config.health.as_deref();
    if let Some(tier) = cost_tier {
        // The percentiles are over every candidate, named by the policy or not.
        let percentiles = CostPercentiles::new(candidates.iter().map(|m| m.blended_price()));
        tier_first(
            config,
            catalog,
            tier,
            &percentiles,
            &mut ranking.models,
            &mut ranking.reason,
        );
    }
    let passed_over = cooling_last(health, &mut ranking.models, &mut ranking.reason, kept);
    match ranking.models.first() {
        Some(chosen) => Ok((chosen.clone(), ranking, passed_over)),
        // Some model fits (`candidates` checked it): a policy that names none of them failed
        // on this side, not the client's request.
        None => Err(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "route_policy_failed",
            format!(
                "the routing policy named none of the {} candidate models ({})",
                candidates.len(),
                ranking.reason
            ),
        )),
    }
}

/// The [`DefaultRouter`]'s ranking over the catalog models this request may go to, with the
/// orders and figures the catalog computed once: one pass over the catalog in strength order
/// for the constraints, one sort by utility, and names copied only for the models kept (see
/// [`ranking_kept`]), where a policy's ranking names every candidate. A request with a cost
/// tier has every candidate ranked: the percentiles are over all of them, and the first of
/// the band may be ranked anywhere.
fn rank_default(
    config: &Config,
    catalog: &Catalog,
    router: &DefaultRouter,
    filter: &PluginFilter,
    prompt: &PromptInfo<'_>,
) -> Result<Cleaned, ApiError> {
    let d = router.difficulty(prompt);
    let admits = |m: &ModelProfile| {
        config.may_choose(&m.id)
            && filter.admits(&m.id)
            && config.fits(prompt, m).is_ok()
            && filter.priced_in(m).is_ok()
    };
    let kept = ranking_kept(config.max_fallbacks);
    let health = config.health.as_deref();
    let best = match filter.cost_tier {
        Some(_) => usize::MAX,
        None => kept,
    };
    let (mut ranked, mut reason) = router.rank_in_catalog(d, catalog, admits, best);
    let cooling_among_kept =
        |ranked: &[&Arc<str>]| ranked.iter().any(|m| config.is_cooling_down(m));
    if ranked.len() == best && cooling_among_kept(&ranked) {
        // Out of line: models cooling down among the first, the ones after them may move up.
        (ranked, reason) = router.rank_in_catalog(d, catalog, admits, usize::MAX);
    }
    if ranked.is_empty() {
        // Out of line: why nothing fits, model by model in catalog order.
        return Err(match candidates(config, catalog, filter, prompt) {
            Err(why) => why,
            Ok(_) => ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "route_policy_failed",
                "the routing policy named none of the candidate models",
            ),
        });
    }
    if let Some(tier) = filter.cost_tier {
        // Every candidate is ranked: the ranking is the candidates.
        let percentiles = CostPercentiles::new(ranked.iter().map(|m| blended_price(catalog, m)));
        tier_first(
            config,
            catalog,
            tier,
            &percentiles,
            &mut ranked,
            &mut reason,
        );
    }
    let passed_over = cooling_last(health, &mut ranked, &mut reason, kept);
    let models: Vec<Arc<str>> = ranked.into_iter().cloned().collect();
    let passed_over = passed_over.into_iter().cloned().collect();
    let chosen = models[0].clone();
    Ok((chosen, Ranking::new(models, d, reason), passed_over))
}

/// [`band_first`] with the catalog's prices and the shared health's cool-downs: the models of
/// the request's cost tier first in `ranking` (the policy's, or the default router's).
fn tier_first<M: Borrow<Arc<str>> + AsRef<str>>(
    config: &Config,
    catalog: &Catalog,
    tier: CostTier,
    percentiles: &CostPercentiles,
    ranking: &mut Vec<M>,
    reason: &mut Cow<'static, str>,
) {
    let price = |m: &M| blended_price(catalog, m.borrow());
    let cooling = |m: &M| config.is_cooling_down(m.as_ref());
    band_first(tier, percentiles, ranking, price, cooling, reason);
}

/// The blended price of a catalog model, the default router's (infinite, the dearest, for an
/// id the catalog does not hold, which a ranking kept to the candidates never names).
fn blended_price(catalog: &Catalog, model: &Arc<str>) -> f64 {
    catalog
        .profile(model)
        .map_or(f64::INFINITY, ModelProfile::blended_price)
}

/// The chain of a request whose `models` names a sentinel: the `primary` model (the ranking's
/// first when it is a sentinel), then the entries of `models` after it (`rest`) in order, each
/// sentinel replaced by the ranking, every model once (where it comes first). A sentinel
/// primary with nothing after it is followed by the rest of the ranking, as `"model": "auto"`
/// alone is.
///
/// The ranking adds at most `max_fallbacks` models after the primary, less one for each model
/// of the client's own there: so the chain holds `max_fallbacks` models after the primary, as
/// it does for `"model": "auto"`, and this side never cuts a model the client named (a ranked
/// model the client names further on moves up to the sentinel's place and takes no room).
fn expand(
    primary: &str,
    rest: &[&str],
    ranking: &[Arc<str>],
    max_fallbacks: usize,
    is_sentinel: impl Fn(&str) -> bool,
) -> Vec<Arc<str>> {
    let in_chain = |chain: &[Arc<str>], model: &str| chain.iter().any(|c| **c == *model);
    let mut chain: Vec<Arc<str>> = Vec::with_capacity(1 + max_fallbacks.max(rest.len()));
    let sentinel_primary = is_sentinel(primary);
    if sentinel_primary {
        chain.extend(ranking.first().cloned());
    } else {
        chain.push(Arc::from(primary));
    }
    // The client's own models after the primary, each once.
    let own = rest
        .iter()
        .enumerate()
        .filter(|&(i, m)| !is_sentinel(m) && !in_chain(&chain, m) && !rest[..i].contains(m))
        .count();
    let mut room = max_fallbacks.saturating_sub(own);
    let implied = (sentinel_primary && rest.is_empty()).then_some(primary);
    for &entry in rest.iter().chain(&implied) {
        if !is_sentinel(entry) {
            if !in_chain(&chain, entry) {
                chain.push(Arc::from(entry));
            }
            continue;
        }
        for model in ranking {
            if in_chain(&chain, model) {
                continue;
            }
            if rest.contains(&&**model) {
                chain.push(model.clone());
            } else if room > 0 {
                chain.push(model.clone());
                room -= 1;
            }
        }
    }
    chain
}

/// Turns a ranking (or why there is none) into the rewritten request.
fn conclude(
    config: &Config,
    request: &ChatRequest,
    ask: Ask,
    ranked: Result<Cleaned, ApiError>,
    plugin_index: Option<usize>,
    (session, from_session): (Option<SessionKey>, bool),
) -> Result<Routed, ApiError> {
    // The primary model: `model`, else the first entry of `models`.
    let mut models = request.models();
    let requested: Arc<str> = match request.model_shared() {
        Some(model) => model.clone(),
        None => models.next().map(Arc::from).unwrap_or_default(),
    };
    let (chosen, ranking, passed_over, unranked) = match ranked {
        Ok((chosen, ranking, passed_over)) => (chosen, ranking, passed_over, None),
        // The client's own primary model may well serve the request: only the sentinel goes,
        // and the decision says why.
        Err(why) if !ask.primary => {
            let none = Ranking::new(Vec::new(), 0.0, Cow::Borrowed(""));
            (requested.clone(), none, Vec::new(), Some(why))
        }
        Err(why) => return Err(why),
    };
    let (splice, fallbacks, reason) = if ask.in_models {
        let rest: Vec<&str> = models.collect();
        let chain = expand(
            &requested,
            &rest,
            &ranking.models,
            config.max_fallbacks,
            |m| config.is_sentinel(m),
        );
        // The client's own models stay in `models`, as they would without the sentinel: the
        // fallback layer judges them as the client's (its cap and allow-list answer 400), and
        // `keep_models` keeps them. The sentinel goes: no upstream knows it as a model.
        let mut splice = request.splice().retain_models(|m| !config.is_sentinel(m));
        if let Some(first) = chain.first() {
            splice = splice.set_model(first);
        }
        let fallbacks = chain.get(1..).unwrap_or_default().to_vec();
        // Without `model`, a sentinel first in `models` is the primary, routed as
        // `"model": "auto"` is: the reason speaks of one later in `models` only.
        let sentinel = rest.iter().find(|m| config.is_sentinel(m));
        let reason = match (&unranked, sentinel) {
            (_, None) => ranking.reason.into_owned(),
            (Some(why), Some(sentinel)) => format!(
                "{}; `{sentinel}` dropped from `models`, the client's models tried alone",
                why.message()
            ),
            (None, Some(sentinel)) => {
                let added: Vec<&str> = fallbacks
                    .iter()
                    .filter(|m| !rest.contains(&&***m))
                    .map(|m| &**m)
                    .collect();
                let added = if added.is_empty() {
                    "none (the chain names every ranked model before it, or is full)".to_owned()
                } else {
                    added.join(", ")
                };
                format!(
                    "{}; in place of `{sentinel}` in `models`: {added}",
                    ranking.reason
                )
            }
        };
        (splice, fallbacks, Cow::Owned(reason))
    } else {
        // `"model": "auto"`: the rest of the ranking follows, unless the body's own `models`
        // (kept: it names no sentinel) say what does.
        let fallbacks = ranking
            .models
            .iter()
            .skip(1)
            .take(config.max_fallbacks)
            .cloned()
            .collect();
        (
            request.splice().set_model(&chosen),
            fallbacks,
            ranking.reason,
        )
    };
    let mut splice = splice;
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
        copied: !splice.is_noop(),
        body: splice.to_bytes(),
        decision: RouteDecision {
            requested,
            chosen,
            ranking: ranking.models,
            score: ranking.score,
            reason,
        },
        fallbacks,
        passed_over,
        expands_models: ask.in_models,
        session,
        from_session,
    })
}

/// The whole decision with a sync policy.
pub(crate) fn decide_sync(
    config: &Config,
    policy: &dyn super::RoutePolicy,
    request: &ChatRequest,
    ask: Ask,
) -> Result<Routed, ApiError> {
    decide_with(config, request, ask, |catalog, filter, prompt| {
        let candidates = candidates(config, catalog, filter, prompt)?;
        let ranking = policy.route(prompt, &candidates);
        clean(config, catalog, ranking, &candidates, filter.cost_tier)
    })
}

/// The whole decision with the [`DefaultRouter`], over the catalog's precomputed orders: the
/// same decision as [`decide_sync`] with it.
pub(crate) fn decide_default(
    config: &Config,
    router: &DefaultRouter,
    request: &ChatRequest,
    ask: Ask,
) -> Result<Routed, ApiError> {
    decide_with(config, request, ask, |catalog, filter, prompt| {
        rank_default(config, catalog, router, filter, prompt)
    })
}

/// The whole decision, `rank` ranking the catalog for the request's prompt: the catalog of the
/// moment it starts, whatever replaces it meanwhile.
fn decide_with(
    config: &Config,
    request: &ChatRequest,
    ask: Ask,
    rank: impl FnOnce(&Catalog, &PluginFilter, &PromptInfo<'_>) -> Result<Cleaned, ApiError>,
) -> Result<Routed, ApiError> {
    let catalog = config.catalog.snapshot();
    // Malformed `messages`, plugin options or `session_id` are refused wherever the sentinel
    // is.
    let messages = request.prompt()?;
    let (filter, plugin_index) = request_filter(request)?;
    let session = session_key(config, &filter, request, &messages, ask.scope)?;
    let mut from_session = false;
    let ranked = (|| {
        require_messages(&messages)?;
        let text = messages.last_user_text().unwrap_or(Cow::Borrowed(""));
        let prompt = prompt_info(request, &messages, &text);
        let mut ranked = rank(&catalog, &filter, &prompt)?;
        note_ceiling(&filter, &mut ranked);
        if let Some((key, true)) = session {
            from_session = stick(config, &catalog, &filter, &prompt, key, &mut ranked);
        }
        Ok(ranked)
    })();
    let session = (session.map(|(key, _)| key), from_session);
    conclude(config, request, ask, ranked, plugin_index, session)
}

/// Says in the ranking's reason that the request's `provider.max_price` bounded it (nothing
/// is written, or allocated, without one).
fn note_ceiling(filter: &PluginFilter, (_, ranking, _): &mut Cleaned) {
    if filter.max_price.is_some() {
        ranking.reason = Cow::Owned(format!("{}; within provider.max_price", ranking.reason));
    }
}

/// The conversation `request` belongs to, when session affinity is on and the request did not
/// opt out (`pin_model: false`), and whether it continues one (see [`Sessions::key`]). Nothing
/// is hashed otherwise.
///
/// [`Sessions::key`]: super::session::Sessions::key
fn session_key(
    config: &Config,
    filter: &PluginFilter,
    request: &ChatRequest,
    messages: &Messages<'_>,
    scope: Option<SessionScope>,
) -> Result<Option<(SessionKey, bool)>, ApiError> {
    match &config.sessions {
        Some(sessions) if !filter.unpinned => sessions.key(request, messages, scope),
        _ => Ok(None),
    }
}

/// Puts the model that last served the conversation first, when it may still serve this
/// request: a catalog model the layer and the plugin's patterns allow, that fits the prompt
/// (the conversation may have outgrown its window, or come to need a capability), is within
/// the request's `provider.max_price` and is not cooling down. The rest of the ranking follows, as the fallback chain. Otherwise the ranking
/// stands, its reason saying why the session's model was passed over (the next success pins
/// the model that served instead). Whether the session's model was put first.
fn stick(
    config: &Config,
    catalog: &Catalog,
    filter: &PluginFilter,
    prompt: &PromptInfo<'_>,
    key: SessionKey,
    (chosen, ranking, _): &mut Cleaned,
) -> bool {
    let Some(pinned) = config.sessions.as_deref().and_then(|s| s.pinned(key)) else {
        return false;
    };
    let passed_over: Cow<'static, str> = match catalog.profile(&pinned) {
        None => Cow::Borrowed("no longer in the catalog"),
        Some(model) if !config.may_choose(&model.id) || !filter.admits(&model.id) => {
            Cow::Borrowed("not allowed for this request")
        }
        Some(model) => match (config.fits(prompt, model), filter.priced_in(model)) {
            (Err(why), _) => Cow::Owned(format!("no longer fits: {why}")),
            (Ok(()), Err(why)) => Cow::Owned(format!("over this request's ceiling: {why}")),
            (Ok(()), Ok(())) if config.is_cooling_down(&model.id) => Cow::Borrowed("cooling down"),
            (Ok(()), Ok(())) => {
                let model = model.id.clone();
                ranking.models.retain(|m| *m != model);
                ranking.models.insert(0, model.clone());
                ranking.models.truncate(ranking_kept(config.max_fallbacks));
                ranking.reason = Cow::Owned(format!(
                    "session affinity: {model} served this conversation before (ranking: {})",
                    ranking.reason
                ));
                *chosen = model;
                return true;
            }
        },
    };
    ranking.reason = Cow::Owned(format!(
        "{}; the session's model {pinned} passed over: {passed_over}",
        ranking.reason
    ));
    false
}

/// The whole decision with an async policy: owns what it needs, so it can be boxed.
pub(crate) async fn decide_async(
    config: Arc<Config>,
    policy: Arc<dyn super::AsyncRoutePolicy>,
    request: ChatRequest,
    ask: Ask,
) -> Result<Routed, ApiError> {
    let catalog = config.catalog.snapshot_owned();
    let messages = request.prompt()?;
    let (filter, plugin_index) = request_filter(&request)?;
    let session = session_key(&config, &filter, &request, &messages, ask.scope)?;
    let mut from_session = false;
    let ranked = async {
        require_messages(&messages)?;
        let text = messages.last_user_text().unwrap_or(Cow::Borrowed(""));
        let prompt = prompt_info(&request, &messages, &text);
        let candidates = candidates(&config, &catalog, &filter, &prompt)?;
        let ranking = policy.route(&prompt, &candidates).await.map_err(|e| {
            ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "server_error",
                "route_policy_failed",
                format!("the routing policy failed: {e}"),
            )
        })?;
        let mut ranked = clean(&config, &catalog, ranking, &candidates, filter.cost_tier)?;
        note_ceiling(&filter, &mut ranked);
        // After the policy's answer: the store is looked up (and locked) with no `await` ahead.
        if let Some((key, true)) = session {
            from_session = stick(&config, &catalog, &filter, &prompt, key, &mut ranked);
        }
        Ok(ranked)
    }
    .await;
    let session = (session.map(|(key, _)| key), from_session);
    conclude(&config, &request, ask, ranked, plugin_index, session)
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
        route_body(layer, policy, body).unwrap()
    }

    fn route_body(
        layer: &AutoRouteLayer,
        policy: &dyn RoutePolicy,
        body: impl ToString,
    ) -> Result<Routed, ApiError> {
        let request = ChatRequest::parse(Bytes::from(body.to_string())).unwrap();
        let ask = Ask::of(&layer.config, &request).expect("the body asks for routing");
        decide_sync(&layer.config, policy, &request, ask)
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

    fn names(chain: &[Arc<str>]) -> Vec<&str> {
        chain.iter().map(|m| &**m).collect()
    }

    fn ids(ids: &[&str]) -> Vec<Arc<str>> {
        ids.iter().map(|&m| Arc::from(m)).collect()
    }

    fn sentinel(model: &str) -> bool {
        model == "auto" || model == "openrouter/auto"
    }

    /// The ranking takes the sentinel's place, between the client's models, in the client's
    /// order around it.
    #[test]
    fn the_ranking_takes_the_sentinels_place() {
        let ranking = ids(&["r1", "r2", "r3", "r4"]);
        let chain = expand("x", &["a", "auto", "b"], &ranking, 3, sentinel);
        // Two models of the client's own after `x`: room for one of the ranking.
        assert_eq!(names(&chain), ["x", "a", "r1", "b"]);
        let chain = expand("x", &["auto"], &ranking, 3, sentinel);
        assert_eq!(names(&chain), ["x", "r1", "r2", "r3"]);
        let chain = expand("x", &["auto", "a"], &ranking, 3, sentinel);
        assert_eq!(names(&chain), ["x", "r1", "r2", "a"]);
    }

    /// A ranked model the chain names before the sentinel is not repeated (and takes no room);
    /// one the client names after it moves up to the sentinel's place, once.
    #[test]
    fn a_model_named_in_the_chain_comes_once() {
        let ranking = ids(&["x", "b", "a", "r1", "r2"]);
        let chain = expand("x", &["a", "auto", "b"], &ranking, 3, sentinel);
        assert_eq!(names(&chain), ["x", "a", "b", "r1"]);
        // The client repeating itself, or a second sentinel, adds nothing.
        let chain = expand(
            "x",
            &["a", "a", "auto", "openrouter/auto", "x"],
            &ranking,
            3,
            sentinel,
        );
        assert_eq!(names(&chain), ["x", "a", "b", "r1"]);
    }

    /// `max_fallbacks` bounds what the ranking adds after the primary model, not the client's
    /// own models: those are never cut on this side.
    #[test]
    fn the_ranking_fills_max_fallbacks_and_never_cuts_the_clients_models() {
        let ranking = ids(&["r1", "r2", "r3", "r4", "r5"]);
        assert_eq!(names(&expand("x", &["auto"], &ranking, 0, sentinel)), ["x"]);
        assert_eq!(
            names(&expand("x", &["auto"], &ranking, 5, sentinel)),
            ["x", "r1", "r2", "r3", "r4", "r5"]
        );
        let chain = expand("x", &["a", "b", "c", "d", "auto"], &ranking, 3, sentinel);
        assert_eq!(names(&chain), ["x", "a", "b", "c", "d"]);
        // Nothing ranked: the sentinel goes, the client's models stay.
        assert_eq!(
            names(&expand("x", &["auto", "a"], &[], 3, sentinel)),
            ["x", "a"]
        );
    }

    /// A sentinel as the primary model is the ranking's first; with nothing after it, the rest
    /// of the ranking follows, as for `"model": "auto"` alone.
    #[test]
    fn a_sentinel_primary_is_the_rankings_first() {
        let ranking = ids(&["r1", "r2", "r3", "r4", "r5"]);
        assert_eq!(
            names(&expand("auto", &[], &ranking, 3, sentinel)),
            ["r1", "r2", "r3", "r4"]
        );
        assert_eq!(
            names(&expand("auto", &["b", "auto"], &ranking, 3, sentinel)),
            ["r1", "b", "r2", "r3"]
        );
        assert_eq!(
            names(&expand("auto", &["r1", "auto"], &ranking, 3, sentinel)),
            ["r1", "r2", "r3", "r4"]
        );
    }

    /// Strongest first, whatever the prompt.
    fn strongest(_: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking {
        let ids = candidates.iter().rev().map(|m| m.id.clone()).collect();
        Ranking::new(ids, 0.5, Cow::Borrowed("strongest first"))
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    /// The body keeps the client's `model` and its own `models`, without the sentinel; the
    /// expanded chain goes in the hand-over; the decision says what happened.
    #[test]
    fn a_sentinel_in_models_keeps_model_and_hands_the_chain_over() {
        let layer = AutoRouteLayer::new(catalog());
        let body =
            format!(r#"{{"model":"gpt-4o","models":["claude","auto"],"temperature":0.5,{HI}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        let expected =
            format!(r#"{{"model":"gpt-4o","models":["claude"],"temperature":0.5,{HI}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
        assert_eq!(names(&routed.fallbacks), ["claude", "large", "medium"]);
        assert!(routed.expands_models);
        let d = &routed.decision;
        assert_eq!((&*d.requested, &*d.chosen), ("gpt-4o", "large"));
        assert_eq!(names(&d.ranking), ["large", "medium", "small"]);
        assert_eq!(
            d.reason,
            "strongest first; in place of `auto` in `models`: large, medium"
        );

        // Without `model`, the first entry of `models` is the primary: written into `model`.
        let body = format!(r#"{{"models":["claude","openrouter/auto"],{HI}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        let expected = format!(r#"{{"model":"claude","models":["claude"],{HI}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
        assert_eq!(names(&routed.fallbacks), ["large", "medium", "small"]);
        assert_eq!(&*routed.decision.requested, "claude");
        // A sentinel as that first entry is routed as `"model": "auto"` is.
        for (models, fallbacks, kept) in [
            (r#"["auto"]"#, &["medium", "small"][..], ""),
            (
                r#"["auto","claude"]"#,
                &["claude"],
                r#""models":["claude"],"#,
            ),
        ] {
            let body = format!(r#"{{"models":{models},{HI}}}"#);
            let routed = route_body(&layer, &strongest, body).unwrap();
            let expected = format!(r#"{{"model":"large",{kept}{HI}}}"#);
            assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
            assert_eq!(names(&routed.fallbacks), fallbacks);
            let d = &routed.decision;
            assert_eq!((&*d.requested, &*d.chosen), ("auto", "large"));
            assert_eq!(d.reason, "strongest first");
        }
    }

    /// The client's own models fill `max_fallbacks`: the sentinel adds none of the ranking,
    /// and the decision's `chosen` (the ranking's first) is in no attempt, as its docs say.
    #[test]
    fn a_chain_the_clients_models_fill_takes_none_of_the_ranking() {
        let layer = AutoRouteLayer::new(catalog()).max_fallbacks(1);
        let body = format!(r#"{{"model":"gpt-4o","models":["claude","auto"],{HI}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        assert_eq!(names(&routed.fallbacks), ["claude"]);
        let d = &routed.decision;
        assert_eq!((&*d.requested, &*d.chosen), ("gpt-4o", "large"));
        assert!(!routed.fallbacks.contains(&d.chosen));
        assert!(d.reason.ends_with("in place of `auto` in `models`: none (the chain names every ranked model before it, or is full)"), "{}", d.reason);
    }

    /// `"model": "auto"` with `auto` in `models` too: one decision, its first model in
    /// `model`, the rest of the ranking in the sentinel's place in `models`.
    #[test]
    fn a_sentinel_in_model_and_models_routes_once() {
        let layer = AutoRouteLayer::new(catalog());
        let body = format!(r#"{{"model":"auto","models":["small","auto"],{HI}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        let expected = format!(r#"{{"model":"large","models":["small"],{HI}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
        assert_eq!(names(&routed.fallbacks), ["small", "medium"]);
        let d = &routed.decision;
        assert_eq!((&*d.requested, &*d.chosen), ("auto", "large"));
        assert_eq!(
            d.reason,
            "strongest first; in place of `auto` in `models`: medium"
        );

        // `models` without a sentinel: as before, the body's `models` are the fallbacks.
        let body = format!(r#"{{"model":"auto","models":["small"],{HI}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        let expected = format!(r#"{{"model":"large","models":["small"],{HI}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
        assert_eq!(routed.decision.reason, "strongest first");
        assert!(
            !routed.expands_models,
            "the body's `models` say what follows"
        );
    }

    /// When nothing can be ranked, a concrete primary model keeps its request: the sentinel is
    /// dropped and the reason says why. A sentinel as the primary model still gets the 400.
    #[test]
    fn nothing_to_rank_drops_the_sentinel_from_models() {
        let layer = AutoRouteLayer::new(catalog());
        let image = r#""messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]"#;
        let body = format!(r#"{{"model":"gpt-4o","models":["auto","claude"],{image}}}"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        let expected = format!(r#"{{"model":"gpt-4o","models":["claude"],{image}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
        assert_eq!(names(&routed.fallbacks), ["claude"]);
        let d = &routed.decision;
        assert_eq!((&*d.requested, &*d.chosen), ("gpt-4o", "gpt-4o"));
        assert!(d.ranking.is_empty());
        assert!(
            d.reason
                .starts_with("no candidate model can serve this request (small: ")
                && d.reason
                    .ends_with("; `auto` dropped from `models`, the client's models tried alone"),
            "{}",
            d.reason
        );
        let body = format!(r#"{{"model":"auto","models":["auto","claude"],{image}}}"#);
        let err = route_body(&layer, &strongest, body).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (400, "no_model_fits"));

        // No `messages` (a legacy `prompt`): nothing to route from.
        let body = r#"{"model":"gpt-3.5-turbo-instruct","models":["auto"],"prompt":"hi"}"#;
        let routed = route_body(&layer, &strongest, body).unwrap();
        assert!(routed.fallbacks.is_empty());
        assert_eq!(
            &routed.body[..],
            br#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}"#
        );
        assert!(routed.decision.reason.contains("has none"));
    }

    /// Malformed router input is refused wherever the sentinel is: the plugin entry is the
    /// router's, and could not be removed before the upstream.
    #[test]
    fn malformed_plugin_options_are_refused_for_a_sentinel_in_models() {
        let layer = AutoRouteLayer::new(catalog());
        let plugins = |options: &str| {
            format!(
                r#"{{"model":"gpt-4o","models":["auto"],{HI},"plugins":[{{"id":"auto-router",{options}}}]}}"#
            )
        };
        let err = route_body(&layer, &strongest, plugins(r#""allowed_models":"small""#));
        assert_eq!(err.unwrap_err().code(), "invalid_plugin");
        // Valid options filter the candidates, and the entry is removed.
        let body = plugins(r#""excluded_models":["large"]"#);
        let routed = route_body(&layer, &strongest, body).unwrap();
        assert_eq!(names(&routed.fallbacks), ["medium", "small"]);
        let expected = format!(r#"{{"model":"gpt-4o",{HI}}}"#);
        assert_eq!(std::str::from_utf8(&routed.body), Ok(&*expected));
    }

    /// The usual request names no sentinel: nothing to decide.
    #[test]
    fn a_request_without_a_sentinel_does_not_ask() {
        let layer = AutoRouteLayer::new(catalog());
        for body in [
            format!(r#"{{"model":"gpt-4o",{HI}}}"#),
            r#"{"model":"gpt-4o","models":["claude","autox"]}"#.to_owned(),
            r#"{"models":["claude"]}"#.to_owned(),
            format!("{{{HI}}}"),
        ] {
            let request = ChatRequest::parse(Bytes::from(body.clone())).unwrap();
            assert!(Ask::of(&layer.config, &request).is_none(), "{body}");
        }
    }
}
