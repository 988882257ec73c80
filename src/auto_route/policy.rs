//! How the layer holds its routing policy, and the decision it records.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use super::cost_tier::CostTier;
use super::max_price::{MaxPrice, OverPrice};
use super::{AsyncRoutePolicy, DefaultRouter, RoutePolicy};
use crate::buffer::BodyRules;
use crate::health::Health;
use crate::pattern::ModelPatterns;

/// The decision of the auto router, recorded as a request extension (for the layers below it)
/// and a response extension (for the caller).
///
/// # Example
///
/// ```no_run
/// # let response: http::Response<()> = http::Response::new(());
/// use tower_llm_router::auto_route::RouteDecision;
///
/// if let Some(decision) = response.extensions().get::<RouteDecision>() {
///     println!("{} ({:.2}): {}", decision.chosen, decision.score, decision.reason);
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RouteDecision {
    /// The model the client named first (its `model`, else the first entry of `models`): the
    /// sentinel it asked for routing with (`auto`, `openrouter/auto`, or one set with
    /// [`sentinel`](super::AutoRouteLayer::sentinel)), or, when the sentinel was in `models`,
    /// its own model, which stays in `model`.
    pub requested: Arc<str>,
    /// The model written into `model`; when the sentinel was in `models`, the ranking's first
    /// (it takes the sentinel's place there unless the chain names it before, and is in no
    /// attempt when the client's own models leave the ranking no room within
    /// [`max_fallbacks`](super::AutoRouteLayer::max_fallbacks)), or `requested` when nothing
    /// could be ranked and the sentinel was dropped.
    pub chosen: Arc<str>,
    /// The ranking, best first (`chosen` first), kept to its first
    /// [`max_fallbacks`](super::AutoRouteLayer::max_fallbacks)` + 17` models: the chosen model,
    /// the `max_fallbacks` that became the fallback chain (cut again at the fallback layer's
    /// [`max_models`](crate::FallbackLayer::max_models)) and up to 16 more after them. That is
    /// the whole ranking for a catalog of up to 20 models (with the default `max_fallbacks` of
    /// 3); with OpenRouter's whole list (300 to 400 models), copying every name into each
    /// request's extensions cost more than the decision. Models cooling down are ranked last
    /// among the kept ones (those after the kept ones are not asked about). For the sentinel in
    /// `models`, see [the module docs](super#the-sentinel-in-models). Empty when the sentinel
    /// in `models` was dropped.
    pub ranking: Vec<Arc<str>>,
    /// The prompt's difficulty score in `[0, 1]` (`0` when nothing was ranked).
    pub score: f32,
    /// Why, in words.
    pub reason: Cow<'static, str>,
}

/// A sync or an async policy, type-erased so the layer's type does not depend on it.
#[derive(Clone)]
pub(crate) enum Policy {
    /// The built-in router, which ranks with the catalog's precomputed orders.
    Default(DefaultRouter),
    Sync(Arc<dyn RoutePolicy>),
    Async(Arc<dyn AsyncRoutePolicy>),
}

impl Policy {
    /// `policy` as the layer holds it: a [`DefaultRouter`] (configured or not) is kept as
    /// itself, to rank over the catalog's precomputed orders.
    pub(crate) fn sync<P: RoutePolicy>(policy: P) -> Self {
        match (&policy as &dyn Any).downcast_ref::<DefaultRouter>() {
            Some(router) => Policy::Default(router.clone()),
            None => Policy::Sync(Arc::new(policy)),
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Default(router) => f.debug_tuple("Policy::Default").field(router).finish(),
            Policy::Sync(_) => f.write_str("Policy::Sync"),
            Policy::Async(_) => f.write_str("Policy::Async"),
        }
    }
}

/// The layer's shared configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Fixed, or shared and replaceable: read through [`snapshot`](super::shared_catalog::CatalogSource::snapshot).
    pub(crate) catalog: super::shared_catalog::CatalogSource,
    pub(crate) sentinels: Vec<Box<str>>,
    pub(crate) policy: Policy,
    pub(crate) health: Option<Arc<dyn Health>>,
    /// The models the router may choose ([`allow_models`](super::AutoRouteLayer::allow_models),
    /// or inside a `FallbackLayer` that layer's allow-list); `None` allows every catalog model.
    pub(crate) allow: Option<ModelPatterns>,
    pub(crate) body: BodyRules,
    pub(crate) max_fallbacks: usize,
    /// Whether [`max_fallbacks`](super::AutoRouteLayer::max_fallbacks) was set: inside a
    /// `FallbackLayer`, a router without it fills that layer's `max_models`.
    pub(crate) max_fallbacks_set: bool,
    /// The conversations remembered ([`session_affinity`](super::AutoRouteLayer::session_affinity)):
    /// `None`, the default, looks nothing up.
    pub(crate) sessions: Option<Arc<super::session::Sessions>>,
}

impl Config {
    pub(crate) fn is_sentinel(&self, model: &str) -> bool {
        self.sentinels.iter().any(|s| &**s == model)
    }

    /// Whether `model` is cooling down in the shared health (never without one).
    pub(crate) fn is_cooling_down(&self, model: &str) -> bool {
        self.health
            .as_deref()
            .is_some_and(|health| health.is_cooling_down(model))
    }

    /// Whether the router may choose `model` of its catalog: not a sentinel (written into
    /// `model`, it would be routed again upstream, not served by a model of this catalog),
    /// and allowed by the allow-list.
    pub(crate) fn may_choose(&self, model: &str) -> bool {
        !self.is_sentinel(model) && self.allow.as_ref().is_none_or(|allow| allow.matches(model))
    }

    /// The hard constraints, with the built-in router's
    /// [`completion_reserve`](super::DefaultRouter::completion_reserve) when it is the policy
    /// (a policy of one's own ranks what [`fits`](super::fits) with the default reserve).
    pub(crate) fn fits(
        &self,
        prompt: &super::PromptInfo<'_>,
        model: &super::ModelProfile,
    ) -> Result<(), super::Unfit> {
        match &self.policy {
            Policy::Default(router) => router.fits(prompt, model),
            _ => super::fits(prompt, model),
        }
    }
}

/// OpenRouter's per-request options: `plugins: [{"id": "auto-router", ...}]`.
///
/// `cost_tier` puts first the ranked models of its cost-percentile band (see
/// [`band_first`](super::cost_tier::band_first)). `cost_quality_tradeoff` (deprecated by
/// OpenRouter) is checked as OpenRouter documents it (a wrong value is a 400) but not acted
/// on: here the trade-off between quality and cost is the layer's configuration.
/// `pin_model: false` opts the request out of session affinity. Any other key is a 400: a
/// misspelt `allowed_models` read as absent would let the request go to any model.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginOptions {
    /// `"auto-router"`, already matched by the caller.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    pub(crate) allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) excluded_models: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    cost_tier: Option<CostTier>,
    /// Checked (see `validate`), never acted on: the layer's configuration weighs cost.
    #[serde(default)]
    cost_quality_tradeoff: Option<f64>,
    #[serde(default)]
    pub(crate) pin_model: Option<bool>,
}

/// OpenRouter's documented limits on the plugin's patterns: how many in each list, how long
/// each, and how long all of them together (in characters).
const MAX_PATTERNS: usize = 1024;
const MAX_PATTERN_LEN: usize = 1024;
const MAX_PATTERNS_TOTAL_LEN: usize = 65_536;

impl PluginOptions {
    /// Reads an `auto-router` entry of `plugins`. The error names the option with a wrong
    /// value: serde's own message says what was expected but not of which option, and gives a
    /// position in the entry, which reads as one in the body.
    pub(crate) fn parse(entry: &str) -> Result<Self, String> {
        serde_json::from_str(entry).map_err(|err| {
            let reason = crate::payload::without_position(&err);
            match Self::culprit(entry) {
                Some(option) => format!("`{option}`: {reason}"),
                None => reason,
            }
        })
    }

    /// The first option whose value does not read as its type, alone.
    fn culprit(entry: &str) -> Option<&'static str> {
        use serde_json::Value;
        type Check = fn(&Value) -> bool;
        const OPTIONS: [(&str, Check); 6] = [
            ("allowed_models", |v| {
                Option::<Vec<String>>::deserialize(v).is_err()
            }),
            ("excluded_models", |v| {
                Option::<Vec<String>>::deserialize(v).is_err()
            }),
            ("enabled", |v| Option::<bool>::deserialize(v).is_err()),
            ("cost_tier", |v| Option::<CostTier>::deserialize(v).is_err()),
            ("cost_quality_tradeoff", |v| {
                Option::<f64>::deserialize(v).is_err()
            }),
            ("pin_model", |v| Option::<bool>::deserialize(v).is_err()),
        ];
        let entry: serde_json::Map<String, Value> = serde_json::from_str(entry).ok()?;
        OPTIONS
            .into_iter()
            .find(|(name, fails)| entry.get(*name).is_some_and(fails))
            .map(|(name, _)| name)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut total = 0;
        for (name, list) in [
            ("allowed_models", &self.allowed_models),
            ("excluded_models", &self.excluded_models),
        ] {
            let Some(list) = list else { continue };
            if list.len() > MAX_PATTERNS {
                return Err(format!("`{name}` has more than {MAX_PATTERNS} patterns"));
            }
            for pattern in list {
                // It matches no model: in `allowed_models` the request would fail for want of
                // a candidate, in `excluded_models` it would exclude nothing, and neither is
                // what the client meant.
                if pattern.is_empty() {
                    return Err(format!("`{name}`: an empty pattern matches no model"));
                }
                let len = pattern.chars().count();
                if len > MAX_PATTERN_LEN {
                    return Err(format!(
                        "a pattern of `{name}` is longer than {MAX_PATTERN_LEN} characters"
                    ));
                }
                total += len;
            }
        }
        if total > MAX_PATTERNS_TOTAL_LEN {
            return Err(format!(
                "the patterns are longer than {MAX_PATTERNS_TOTAL_LEN} characters together"
            ));
        }
        if self
            .cost_quality_tradeoff
            .is_some_and(|t| !(0.0..=10.0).contains(&t))
        {
            return Err("`cost_quality_tradeoff` must be between 0 and 10".into());
        }
        Ok(())
    }

    /// The compiled filter: `allowed_models` (when given), then `excluded_models`, and the
    /// cost tier the first choice is taken from.
    pub(crate) fn into_filter(self) -> PluginFilter {
        PluginFilter {
            allowed: self.allowed_models.map(ModelPatterns::new),
            excluded: self.excluded_models.map(ModelPatterns::new),
            cost_tier: self.cost_tier,
            unpinned: self.pin_model == Some(false),
            max_price: None,
        }
    }
}

/// The candidate filter a request's plugin options ask for, the cost tier its first choice is
/// taken from, and the price ceiling of its `provider.max_price`.
#[derive(Debug, Default)]
pub(crate) struct PluginFilter {
    allowed: Option<ModelPatterns>,
    excluded: Option<ModelPatterns>,
    /// `cost_tier`: the ranking's models in this cost-percentile band of the candidates go
    /// first (see [`band_first`](super::cost_tier::band_first)).
    pub(crate) cost_tier: Option<CostTier>,
    /// `pin_model: false`: no session affinity for this request.
    pub(crate) unpinned: bool,
    /// `provider.max_price` (not a plugin option, but a hard constraint of the request too):
    /// a model over it is no candidate.
    pub(crate) max_price: Option<MaxPrice>,
}

impl PluginFilter {
    pub(crate) fn admits(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.matches(model))
            && !self.excluded.as_ref().is_some_and(|e| e.matches(model))
    }

    /// Whether `model` is within the request's `provider.max_price` (always without one).
    pub(crate) fn priced_in(&self, model: &super::ModelProfile) -> Result<(), OverPrice> {
        self.max_price
            .map_or(Ok(()), |ceiling| ceiling.admits(model))
    }
}

/// Models of a ranking a decision keeps after the chosen one and its `max_fallbacks` (see
/// [`RouteDecision::ranking`]): what a log or a client reads past the chain, bounded so that a
/// catalog of OpenRouter's size costs no more per request than a short one.
const RANKING_TAIL: usize = 16;

/// How many models of a ranking a decision keeps: the chosen one, `max_fallbacks` and
/// [`RANKING_TAIL`].
pub(crate) fn ranking_kept(max_fallbacks: usize) -> usize {
    max_fallbacks.saturating_add(1 + RANKING_TAIL)
}

/// Models cooling down the reason names when they pass over the policy's first choice; it
/// counts the rest, so that it does not grow with the catalog.
const COOLING_NAMED: usize = 8;

/// Moves the models cooling down in `health` to the end of the ranking `models`, and cuts it
/// to its first `kept` models (health is asked only as far as the `kept`-th model that is
/// well: those after it are cut whatever their health). When that passes over the policy's
/// first choice, `reason` says so and names the model chosen instead. Returns the models
/// passed over (ranked before a model that is well, among those asked about), in ranking
/// order: empty, and not allocated, when none was.
pub(crate) fn cooling_last<T: AsRef<str> + Clone>(
    health: Option<&dyn Health>,
    models: &mut Vec<T>,
    reason: &mut Cow<'static, str>,
    kept: usize,
) -> Vec<T> {
    let Some(health) = health else {
        models.truncate(kept);
        return Vec::new();
    };
    // The first model that is well, and where the `kept`-th one is (the end when fewer are).
    let mut first_well = None;
    let mut end = models.len();
    let mut well = 0;
    for (i, model) in models.iter().enumerate() {
        if !health.is_cooling_down(model.as_ref()) {
            first_well.get_or_insert(i);
            well += 1;
            if well == kept {
                end = i + 1;
                break;
            }
        }
    }
    // The models ranked above the first healthy one (none when it is first, or when every
    // model cools down and the order stays).
    let above_healthy = first_well.unwrap_or(0);
    let passed_over_first = (above_healthy > 0).then(|| {
        let names: Vec<&str> = models[..above_healthy.min(COOLING_NAMED)]
            .iter()
            .map(|m| m.as_ref())
            .collect();
        let more = match above_healthy.saturating_sub(COOLING_NAMED) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        format!(
            "{reason}; cooling down, ranked last: {}{more}",
            names.join(", ")
        )
    });
    let passed_over = crate::health::healthy_first(health, &mut models[..end]);
    models.truncate(kept);
    if let (Some(mut passed_over_first), Some(chosen)) = (passed_over_first, models.first()) {
        passed_over_first.push_str("; ");
        passed_over_first.push_str(chosen.as_ref());
        passed_over_first.push_str(" chosen");
        *reason = passed_over_first.into();
    }
    passed_over
}
