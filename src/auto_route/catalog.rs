//! The candidate models the auto router chooses from: context window, price, capabilities and
//! strength.
//!
//! A [`Catalog`] is built from [`ModelProfile`]s written in configuration (TOML or JSON, see
//! [`ModelProfile`]) or from OpenRouter's model list (`GET /api/v1/models`) with
//! [`Catalog::from_openrouter_models_json`].
//!
//! # Strength
//!
//! The router needs to know which models are stronger. A profile's [`quality`] hint is used
//! when present (larger is stronger). When it is absent the strength is derived from price:
//! `ln(1 + blended)` where `blended = (input_price + 3 * output_price) / 4` in USD per million
//! tokens. Output tokens weigh more because they are what a stronger model charges most for.
//! The log makes the scale comparable across a 1000x price range. Price is a weak proxy for
//! quality, but it is the one every provider publishes; set `quality` when you know better.
//!
//! Hints and derived strengths are compared as plain numbers. When every model has a
//! `quality`, any scale does (only the order matters); when only some have one, write it on the
//! derived scale (about 0.1 for a model at $0.1 per million tokens, 1.3 at $2.5, 2.6 at $12.5,
//! 4.6 at $100), or a `quality = 0.9` meant as "90 %" ranks below every model dearer than
//! about $1.5 blended (see [`ModelProfile::strength`]).
//!
//! [`quality`]: ModelProfile::quality
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// What a model can accept besides plain text.
///
/// In configuration it is a list of names: `capabilities = ["vision", "audio", "video",
/// "file", "tools", "structured_output"]` (unknown names are an error, so a typo does not
/// silently disable a model).
///
/// ```
/// use tower_llm_router::auto_route::Capabilities;
///
/// let caps: Capabilities = serde_json::from_str(r#"["vision", "tools"]"#).unwrap();
/// assert!(caps.vision && caps.tools && !caps.structured_output && !caps.audio && !caps.video);
/// assert!(!caps.file);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Accepts image inputs.
    pub vision: bool,
    /// Accepts audio inputs (`input_audio` content parts).
    pub audio: bool,
    /// Accepts video inputs (`video_url` or `input_video` content parts).
    pub video: bool,
    /// Accepts file inputs (`file` content parts: PDFs).
    pub file: bool,
    /// Supports tool (function) calling.
    pub tools: bool,
    /// Supports structured output: a JSON schema in `response_format` (the Responses API's
    /// `text.format`, Anthropic's `output_config.format`).
    pub structured_output: bool,
}

impl Capabilities {
    /// All capabilities.
    pub const ALL: Capabilities = Capabilities {
        vision: true,
        audio: true,
        video: true,
        file: true,
        tools: true,
        structured_output: true,
    };
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Cap {
            Vision,
            Audio,
            Video,
            File,
            Tools,
            #[serde(alias = "structured_outputs", alias = "json_schema")]
            StructuredOutput,
        }
        let mut caps = Capabilities::default();
        for cap in Vec::<Cap>::deserialize(d)? {
            match cap {
                Cap::Vision => caps.vision = true,
                Cap::Audio => caps.audio = true,
                Cap::Video => caps.video = true,
                Cap::File => caps.file = true,
                Cap::Tools => caps.tools = true,
                Cap::StructuredOutput => caps.structured_output = true,
            }
        }
        Ok(caps)
    }
}

/// One candidate model.
///
/// Prices are USD per million tokens. `quality` is an optional strength hint (larger is
/// stronger; any scale when every model has one, else the derived scale); without it the
/// strength is derived from price (see the [module docs](self)).
///
/// ```
/// use tower_llm_router::auto_route::ModelProfile;
///
/// let p: ModelProfile = toml::from_str(r#"
///     id = "openai/gpt-4o"
///     context_window = 128000
///     input_price = 2.5
///     output_price = 10.0
///     capabilities = ["vision", "tools", "structured_output"]
/// "#).unwrap();
/// assert_eq!(&*p.id, "openai/gpt-4o");
/// assert!(p.capabilities.vision);
/// assert!(p.strength() > ModelProfile::new("cheap", 128000, 0.1, 0.4).strength());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelProfile {
    /// The model name written into the request's `model`.
    #[serde(deserialize_with = "arc_str")]
    pub id: Arc<str>,
    /// Context window in tokens (prompt and completion together).
    pub context_window: u64,
    /// USD per million prompt tokens. In configuration a finite number `>= 0` (a negative
    /// price, such as OpenRouter's `-1` for a variable one, is an error). Set otherwise, an
    /// invalid price reads as the most expensive (see [`ModelProfile::blended_price`]).
    #[serde(default, deserialize_with = "input_price")]
    pub input_price: f64,
    /// USD per million completion tokens (in configuration, as `input_price`).
    #[serde(default, deserialize_with = "output_price")]
    pub output_price: f64,
    /// What the model accepts besides text.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Optional strength hint; larger is stronger. In configuration a finite number.
    #[serde(default, deserialize_with = "quality")]
    pub quality: Option<f32>,
    /// The most tokens the model writes in one answer (OpenRouter's
    /// `top_provider.max_completion_tokens`), when known: a request whose `max_tokens` (or
    /// `max_completion_tokens`) asks for more does not go to it (see
    /// [`fits`](super::fits)). `None` (or 0) is unknown: no limit is checked.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

impl ModelProfile {
    /// A text-only profile without a quality hint.
    ///
    /// The prices are taken as given: a negative, NaN or infinite one is not refused but reads
    /// as the most expensive (see [`blended_price`](Self::blended_price)).
    /// [`try_new`](Self::try_new) refuses it instead.
    ///
    /// ```
    /// use tower_llm_router::auto_route::ModelProfile;
    /// let p = ModelProfile::new("m", 8192, 1.0, 2.0).with_quality(0.7);
    /// assert_eq!(p.quality, Some(0.7));
    /// assert_eq!(p.strength(), 0.7);
    /// ```
    pub fn new(id: impl Into<Arc<str>>, context_window: u64, input: f64, output: f64) -> Self {
        ModelProfile {
            id: id.into(),
            context_window,
            input_price: input,
            output_price: output,
            capabilities: Capabilities::default(),
            quality: None,
            max_output_tokens: None,
        }
    }

    /// A text-only profile without a quality hint, or an error for a price that is not a
    /// finite number `>= 0` (USD per million tokens), as configuration refuses it.
    ///
    /// ```
    /// use tower_llm_router::auto_route::ModelProfile;
    ///
    /// assert!(ModelProfile::try_new("m", 8192, 1.0, 2.0).is_ok());
    /// let err = ModelProfile::try_new("m", 8192, -1.0, 2.0).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "input_price -1 of m is not a price: a finite number >= 0 (USD per million tokens) is needed"
    /// );
    /// assert!(ModelProfile::try_new("m", 8192, 1.0, f64::NAN).is_err());
    /// ```
    pub fn try_new(
        id: impl Into<Arc<str>>,
        context_window: u64,
        input: f64,
        output: f64,
    ) -> Result<Self, InvalidPrice> {
        let id = id.into();
        for (field, price) in [("input_price", input), ("output_price", output)] {
            if !is_price(price) {
                return Err(InvalidPrice {
                    model: id,
                    field,
                    price,
                });
            }
        }
        Ok(ModelProfile::new(id, context_window, input, output))
    }

    /// Whether both prices are finite numbers `>= 0`.
    pub fn has_valid_prices(&self) -> bool {
        is_price(self.input_price) && is_price(self.output_price)
    }

    /// Sets the capabilities.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets the quality hint.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn with_quality(mut self, quality: f32) -> Self {
        self.quality = Some(quality);
        self
    }

    /// Sets the most tokens the model writes in one answer.
    ///
    /// ```
    /// use tower_llm_router::auto_route::{fits, ModelProfile, PromptInfo};
    ///
    /// let m = ModelProfile::new("m", 200_000, 3.0, 15.0).with_max_output_tokens(8_192);
    /// let mut p = PromptInfo::from_text("write a long story");
    /// p.max_tokens = Some(8_192);
    /// assert!(fits(&p, &m).is_ok());
    /// p.max_tokens = Some(16_000);
    /// assert!(fits(&p, &m).is_err());
    /// ```
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn with_max_output_tokens(mut self, max_output_tokens: u64) -> Self {
        self.max_output_tokens = Some(max_output_tokens);
        self
    }

    /// Blended price in USD per million tokens: `(input + 3 * output) / 4`.
    ///
    /// Infinite when either price is invalid (negative, NaN or infinite, which configuration
    /// refuses but [`new`](Self::new) and the public fields let through), or the sum overflows:
    /// such a model is never taken for a cheap one. The [`DefaultRouter`] counts it as dear as
    /// the dearest candidate, and ranks it after any candidate of equal utility.
    ///
    /// ```
    /// use tower_llm_router::auto_route::ModelProfile;
    ///
    /// assert_eq!(ModelProfile::new("m", 0, 1.0, 3.0).blended_price(), 2.5);
    /// assert_eq!(ModelProfile::new("m", 0, -1.0, 0.0).blended_price(), f64::INFINITY);
    /// ```
    ///
    /// [`DefaultRouter`]: super::DefaultRouter
    pub fn blended_price(&self) -> f64 {
        if !self.has_valid_prices() {
            return f64::INFINITY;
        }
        (self.input_price + 3.0 * self.output_price) / 4.0
    }

    /// Strength used to order models: `quality` if set, else `ln(1 + blended_price)` (infinite
    /// for an invalid price; the [`DefaultRouter`](super::DefaultRouter) puts such a model in
    /// the strongest tier of the other candidates).
    ///
    /// The two are compared as numbers (see the [module docs](self)):
    ///
    /// ```
    /// use tower_llm_router::auto_route::ModelProfile;
    ///
    /// // Blended $2.5 per million tokens: ln(1 + 2.5) ≈ 1.25.
    /// let priced = ModelProfile::new("priced", 0, 1.0, 3.0);
    /// assert!((priced.strength() - 1.25).abs() < 0.01);
    /// // A hint on a 0..1 scale beside it ranks below.
    /// let hinted = ModelProfile::new("hinted", 0, 2.5, 10.0).with_quality(0.9);
    /// assert!(hinted.strength() < priced.strength());
    /// // On the derived scale it ranks as meant.
    /// assert!(hinted.clone().with_quality(2.0).strength() > priced.strength());
    /// ```
    pub fn strength(&self) -> f32 {
        match self.quality {
            Some(q) if q.is_finite() => q,
            _ => self.blended_price().ln_1p() as f32,
        }
    }
}

fn arc_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    String::deserialize(d).map(Arc::from)
}

/// Whether `p` is a price: a finite number `>= 0`.
fn is_price(p: f64) -> bool {
    p.is_finite() && p >= 0.0
}

/// A configured price: a negative or non-finite one is refused, so that the mistake shows
/// (the router would rank the model as the dearest).
fn price<'de, D: serde::Deserializer<'de>>(d: D, field: &str) -> Result<f64, D::Error> {
    let p = f64::deserialize(d)?;
    if is_price(p) {
        Ok(p)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "{field} {p} is not a price: {PRICE_NEEDED}"
        )))
    }
}

const PRICE_NEEDED: &str = "a finite number >= 0 (USD per million tokens) is needed";

/// A price [`ModelProfile::try_new`] refuses: negative, NaN or infinite.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidPrice {
    model: Arc<str>,
    field: &'static str,
    price: f64,
}

impl fmt::Display for InvalidPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let InvalidPrice {
            model,
            field,
            price,
        } = self;
        write!(
            f,
            "{field} {price} of {model} is not a price: {PRICE_NEEDED}"
        )
    }
}

impl std::error::Error for InvalidPrice {}

fn input_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    price(d, "input_price")
}

fn output_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    price(d, "output_price")
}

/// A configured quality: a non-finite one would silently fall back to the derived strength.
fn quality<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    match Option::<f32>::deserialize(d)? {
        Some(q) if !q.is_finite() => Err(serde::de::Error::custom(format_args!(
            "quality {q} is not a finite number"
        ))),
        q => Ok(q),
    }
}

/// The candidate models, as configured.
///
/// ```
/// use tower_llm_router::auto_route::{Catalog, ModelProfile};
///
/// let catalog = Catalog::from_profiles([
///     ModelProfile::new("small", 32_000, 0.1, 0.3),
///     ModelProfile::new("large", 200_000, 3.0, 15.0),
/// ]);
/// assert_eq!(catalog.len(), 2);
/// assert_eq!(&*catalog.get("large").unwrap().id, "large");
/// // `by_strength` lists the strongest last.
/// assert_eq!(&*catalog.by_strength().last().unwrap().id, "large");
/// ```
#[derive(Clone, Default)]
pub struct Catalog {
    models: Vec<ModelProfile>,
    /// What the router reads of `models` on every request, computed once: a catalog never
    /// changes after construction (`models` is private and only read).
    index: CatalogIndex,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// A catalog's per-model figures and orders, so that a decision over OpenRouter's whole list
/// (300 to 400 models) does not compute logarithms, sort by strength or compare ids for every
/// request.
#[derive(Clone, Default)]
pub(crate) struct CatalogIndex {
    /// Strength, blended price and its log, per model (in catalog order).
    pub(crate) stats: Box<[ModelStats]>,
    /// Positions in the catalog, weakest first: the order of [`sort_by_strength`].
    pub(crate) by_strength: Box<[u32]>,
    /// Per model, the rank of its id among the catalog's ids: compares as the ids do.
    pub(crate) id_rank: Box<[u32]>,
    /// Positions by the address of the id's text: a policy's ranking names models with the
    /// catalog's own `Arc`s (the default router does), found by an integer search.
    by_address: Box<[(usize, u32)]>,
    /// Positions sorted by id: for a name a policy built anew.
    by_id: Box<[u32]>,
}

/// One model's figures, as [`ModelProfile::strength`] and [`ModelProfile::blended_price`]
/// compute them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelStats {
    pub(crate) strength: f32,
    pub(crate) price: f64,
    /// `ln(1 + price)`: infinite for an invalid price.
    pub(crate) ln_price: f64,
}

impl CatalogIndex {
    fn new(models: &[ModelProfile]) -> Self {
        let stats: Box<[ModelStats]> = models
            .iter()
            .map(|m| {
                let price = m.blended_price();
                ModelStats {
                    strength: m.strength(),
                    price,
                    ln_price: price.ln_1p(),
                }
            })
            .collect();
        // A catalog past `u32::MAX` models is not one anyone loads; positions are `u32` to
        // keep the per-request lists small.
        let positions = || (0..models.len()).map(|i| i as u32);
        let mut by_strength: Vec<u32> = positions().collect();
        by_strength.sort_by(|&a, &b| {
            let (x, y) = (&stats[a as usize], &stats[b as usize]);
            x.strength
                .total_cmp(&y.strength)
                .then(x.price.total_cmp(&y.price))
                .then(models[a as usize].id.cmp(&models[b as usize].id))
        });
        let mut by_id: Vec<u32> = positions().collect();
        by_id.sort_by(|&a, &b| models[a as usize].id.cmp(&models[b as usize].id));
        let mut id_rank = vec![0u32; models.len()];
        for (rank, &i) in by_id.iter().enumerate() {
            id_rank[i as usize] = rank as u32;
        }
        let mut by_address: Vec<(usize, u32)> = positions()
            .map(|i| (address(&models[i as usize].id), i))
            .collect();
        by_address.sort_unstable();
        CatalogIndex {
            stats,
            by_strength: by_strength.into(),
            id_rank: id_rank.into(),
            by_address: by_address.into(),
            by_id: by_id.into(),
        }
    }
}

/// The address of an id's text, which its clones share.
fn address(id: &Arc<str>) -> usize {
    Arc::as_ptr(id).cast::<u8>() as usize
}

impl Catalog {
    /// A catalog of the given profiles (later duplicates of an id are dropped, and so is a
    /// profile with an empty id: the router would send it upstream as `{"model":""}`).
    pub fn from_profiles(profiles: impl IntoIterator<Item = ModelProfile>) -> Self {
        let mut models: Vec<ModelProfile> = Vec::new();
        for p in profiles {
            if !p.id.is_empty() && !models.iter().any(|m| m.id == p.id) {
                models.push(p);
            }
        }
        let index = CatalogIndex::new(&models);
        Catalog { models, index }
    }

    /// Reads OpenRouter's `GET /api/v1/models` answer.
    ///
    /// Per entry of `data`: `id`, `context_length`, `pricing.prompt` and `pricing.completion`
    /// (USD per token as decimal strings, converted to per million),
    /// `architecture.input_modalities` (`"image"` means vision, `"audio"`, `"video"` and
    /// `"file"` those inputs) and
    /// `supported_parameters` (`"tools"` means tools; `"structured_outputs"`
    /// means structured output, a JSON schema; `"response_format"` alone is only JSON mode and
    /// does not), `top_provider.max_completion_tokens` (the
    /// [`max_output_tokens`](ModelProfile::max_output_tokens); `null` or 0 is unknown). Other
    /// fields are ignored.
    ///
    /// An entry with a negative price is left out: OpenRouter writes `"-1"` for a price that
    /// varies by request, which is the mark of a router (`openrouter/auto`), not of a model. Read
    /// as free, it would be the cheapest candidate and the pick for every easy prompt. An entry
    /// without a price (no `pricing`, or no or a `null` `pricing.prompt` or
    /// `pricing.completion`) is left out for the same reason: an unknown price is not a free
    /// one, and taken for the dearest it would rank in the strongest tier (see
    /// [`ModelProfile::strength`]), a guess either way. Write `"0"` for a free model.
    ///
    /// A free model (OpenRouter's `:free` variants, priced `"0"`) is kept, and is not the
    /// default choice for every prompt: without a [`quality`](ModelProfile::quality) hint its
    /// strength, derived from price, is the weakest (`ln(1 + 0) = 0`), so the
    /// [`DefaultRouter`](super::DefaultRouter) sends it only the prompts that need no more than
    /// the weakest tier (in OpenRouter's whole list, with hundreds of distinct prices, only the
    /// very easiest) and ranks it after the stronger tiers among the fallbacks; its price
    /// counts within its tier. That is deliberate: a `:free` variant is the same model as its
    /// paid one but tightly rate-limited by OpenRouter, and price is the only strength the
    /// list gives. To have such a model chosen as its paid twin would be, give it that
    /// model's `quality`; to never use one, leave it out with
    /// [`AutoRouteLayer::candidates`](crate::AutoRouteLayer::candidates) or the request's
    /// `excluded_models: ["*:free"]`.
    /// An entry whose `architecture.output_modalities` is given without `"text"` (an embedding
    /// or image model, in a list fetched with `?output_modalities=all`) is left out too: it
    /// cannot answer a chat completion. An entry that does not say is kept.
    ///
    /// ```
    /// use tower_llm_router::auto_route::Catalog;
    ///
    /// let json = br#"{"data":[{"id":"openai/gpt-4","context_length":8192,
    ///     "pricing":{"prompt":"0.00003","completion":"0.00006"},
    ///     "architecture":{"input_modalities":["text"]},
    ///     "supported_parameters":["tools","max_tokens"]}]}"#;
    /// let catalog = Catalog::from_openrouter_models_json(json).unwrap();
    /// let m = catalog.get("openai/gpt-4").unwrap();
    /// assert!((m.input_price - 30.0).abs() < 1e-9);
    /// assert!(m.capabilities.tools && !m.capabilities.vision);
    /// assert!(Catalog::from_openrouter_models_json(b"{}").is_err());
    /// ```
    pub fn from_openrouter_models_json(json: &[u8]) -> Result<Catalog, CatalogError> {
        let list: OrList =
            serde_json::from_slice(json).map_err(|e| CatalogError(e.to_string().into()))?;
        let mut profiles = Vec::with_capacity(list.data.len());
        for (i, m) in list.data.into_iter().enumerate() {
            // USD per million tokens; `None` for a price not known: variable (negative) or
            // not given (not free: a missing price read as 0 made the model the cheapest).
            let price = |p: &Option<Price>, what: &str| -> Result<Option<f64>, CatalogError> {
                let per_token = match p {
                    None => return Ok(None),
                    Some(Price::Number(v)) => Some(*v),
                    Some(Price::Text(s)) => s.trim().parse::<f64>().ok(),
                };
                // One that overflows to infinity once per million is refused too.
                per_token
                    .filter(|v| v.is_finite() && (v * 1e6).is_finite())
                    .map(|v| (v >= 0.0).then_some(v * 1e6))
                    .ok_or_else(|| {
                        let id = &m.id;
                        CatalogError(
                            format!("data[{i}] ({id}): pricing.{what} {p:?} is not a number")
                                .into(),
                        )
                    })
            };
            let (Some(input_price), Some(output_price)) = (
                price(&m.pricing.prompt, "prompt")?,
                price(&m.pricing.completion, "completion")?,
            ) else {
                continue;
            };
            let has = |list: &[String], name: &str| list.iter().any(|s| s == name);
            if let Some(outputs) = &m.architecture.output_modalities {
                if !has(outputs, "text") {
                    continue;
                }
            }
            let params = &m.supported_parameters;
            profiles.push(ModelProfile {
                capabilities: Capabilities {
                    vision: has(&m.architecture.input_modalities, "image"),
                    audio: has(&m.architecture.input_modalities, "audio"),
                    video: has(&m.architecture.input_modalities, "video"),
                    file: has(&m.architecture.input_modalities, "file"),
                    tools: has(params, "tools"),
                    // `response_format` alone is JSON mode (`json_object`), not a schema.
                    structured_output: has(params, "structured_outputs"),
                },
                id: m.id.into(),
                context_window: m.context_length.unwrap_or(0),
                input_price,
                output_price,
                quality: None,
                max_output_tokens: m
                    .top_provider
                    .and_then(|top| top.max_completion_tokens)
                    .filter(|&n| n > 0),
            });
        }
        Ok(Catalog::from_profiles(profiles))
    }

    /// The profiles, in configuration order.
    pub fn models(&self) -> &[ModelProfile] {
        &self.models
    }

    /// The profile with this id (a binary search of the ids, which are unique).
    pub fn get(&self, id: &str) -> Option<&ModelProfile> {
        self.position_by_id(id).map(|i| &self.models[i])
    }

    /// The position of the model with this id: found by the address of the id's text when it
    /// is one of the catalog's own (the usual case), else by a binary search of the ids.
    pub(crate) fn position(&self, id: &Arc<str>) -> Option<usize> {
        let index = &self.index;
        if let Ok(at) = index
            .by_address
            .binary_search_by_key(&address(id), |&(address, _)| address)
        {
            return Some(index.by_address[at].1 as usize);
        }
        self.position_by_id(id)
    }

    /// The position of the model with this id, by a binary search of the ids.
    fn position_by_id(&self, id: &str) -> Option<usize> {
        let by_id = &self.index.by_id;
        by_id
            .binary_search_by(|&i| (*self.models[i as usize].id).cmp(id))
            .ok()
            .map(|at| by_id[at] as usize)
    }

    /// The profile with this id, found as [`position`](Self::position) finds it: first by the
    /// address of one of the catalog's own ids, then as [`get`](Self::get) finds it.
    pub(crate) fn profile(&self, id: &Arc<str>) -> Option<&ModelProfile> {
        self.position(id).map(|i| &self.models[i])
    }

    /// The figures and orders computed once for the router.
    pub(crate) fn index(&self) -> &CatalogIndex {
        &self.index
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the catalog has no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// References to the profiles sorted by [`ModelProfile::strength`], weakest first
    /// (ties: cheaper first).
    pub fn by_strength(&self) -> Vec<&ModelProfile> {
        let mut v: Vec<&ModelProfile> = self.models.iter().collect();
        sort_by_strength(&mut v);
        v
    }
}

/// Sorts weakest first; ties cheaper first, then by id for a stable order.
pub(crate) fn sort_by_strength(v: &mut [&ModelProfile]) {
    v.sort_by(|a, b| {
        a.strength()
            .total_cmp(&b.strength())
            .then(a.blended_price().total_cmp(&b.blended_price()))
            .then(a.id.cmp(&b.id))
    });
}

/// The model list could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError(Box<str>);

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model list: {}", self.0)
    }
}

impl std::error::Error for CatalogError {}

#[derive(Deserialize)]
struct OrList {
    data: Vec<OrModel>,
}

#[derive(Deserialize)]
struct OrModel {
    id: String,
    #[serde(default)]
    context_length: Option<u64>,
    #[serde(default)]
    pricing: OrPricing,
    #[serde(default)]
    architecture: OrArch,
    #[serde(default)]
    supported_parameters: Vec<String>,
    #[serde(default)]
    top_provider: Option<OrTopProvider>,
}

/// The limits of the provider OpenRouter sends a model's requests to first.
#[derive(Deserialize)]
struct OrTopProvider {
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OrPricing {
    #[serde(default)]
    prompt: Option<Price>,
    #[serde(default)]
    completion: Option<Price>,
}

/// OpenRouter writes prices as decimal strings; accept plain numbers too.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Price {
    Text(String),
    Number(f64),
}

#[derive(Deserialize, Default)]
struct OrArch {
    #[serde(default)]
    input_modalities: Vec<String>,
    /// `None` when the entry does not say.
    #[serde(default)]
    output_modalities: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "data": [
        {
          "id": "anthropic/claude-sonnet-4",
          "canonical_slug": "anthropic/claude-4-sonnet-20250522",
          "name": "Anthropic: Claude Sonnet 4",
          "created": 1747930371,
          "description": "Claude Sonnet 4 ...",
          "context_length": 200000,
          "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["image", "text", "file"],
            "output_modalities": ["text"],
            "tokenizer": "Claude",
            "instruct_type": null
          },
          "pricing": {"prompt": "0.000003", "completion": "0.000015", "request": "0",
                      "image": "0.0048", "web_search": "0", "internal_reasoning": "0"},
          "top_provider": {"context_length": 200000, "max_completion_tokens": 64000,
                           "is_moderated": false},
          "per_request_limits": null,
          "supported_parameters": ["include_reasoning", "max_tokens", "reasoning",
                                   "stop", "temperature", "tool_choice", "tools", "top_k", "top_p"]
        },
        {
          "id": "mistralai/mistral-nemo",
          "context_length": 131072,
          "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
          "pricing": {"prompt": "0.00000002", "completion": "0.00000004"},
          "supported_parameters": ["max_tokens", "response_format", "structured_outputs",
                                   "temperature"]
        },
        {
          "id": "openrouter/auto",
          "context_length": 2000000,
          "architecture": {"input_modalities": ["text", "image"]},
          "pricing": {"prompt": "-1", "completion": "-1"},
          "supported_parameters": []
        }
      ]
    }"#;

    #[test]
    fn reads_openrouter_models_list() {
        let c = Catalog::from_openrouter_models_json(SAMPLE.as_bytes()).unwrap();
        // `openrouter/auto` ("-1": variable pricing) is a router, not a model.
        assert_eq!(c.len(), 2);
        assert!(c.get("openrouter/auto").is_none());
        let sonnet = c.get("anthropic/claude-sonnet-4").unwrap();
        assert_eq!(sonnet.context_window, 200_000);
        assert!((sonnet.input_price - 3.0).abs() < 1e-9);
        assert!((sonnet.output_price - 15.0).abs() < 1e-9);
        assert_eq!(
            sonnet.capabilities,
            Capabilities {
                vision: true,
                audio: false,
                video: false,
                file: true,
                tools: true,
                structured_output: false
            }
        );
        let audio = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"openai/gpt-4o-audio-preview",
                "pricing":{"prompt":"0.0000025","completion":"0.00001"},
                "architecture":{"input_modalities":["text","audio"]}},
                {"id":"google/gemini-2.5-flash","pricing":{"prompt":"0.0000003","completion":"0"},
                "architecture":{"input_modalities":["text","image","audio","video","file"]}}]}"#,
        )
        .unwrap();
        let caps = audio.models()[0].capabilities;
        assert!(caps.audio && !caps.vision && !caps.video && !caps.file);
        let caps = audio.models()[1].capabilities;
        assert!(caps.audio && caps.vision && caps.video && caps.file);
        assert_eq!(sonnet.max_output_tokens, Some(64_000));
        let nemo = c.get("mistralai/mistral-nemo").unwrap();
        assert_eq!(nemo.max_output_tokens, None);
        let limits = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"a","pricing":{"prompt":"0","completion":"0"},
                          "top_provider":{"max_completion_tokens":null}},
                         {"id":"b","pricing":{"prompt":"0","completion":"0"},
                          "top_provider":{"max_completion_tokens":0}},
                         {"id":"c","pricing":{"prompt":"0","completion":"0"},"top_provider":null}]}"#,
        )
        .unwrap();
        assert!(limits
            .models()
            .iter()
            .all(|m| m.max_output_tokens.is_none()));
        // A numeric price and a null context length are accepted.
        let odd = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"x","context_length":null,"pricing":{"prompt":0.000001,"completion":0}}]}"#,
        )
        .unwrap();
        assert!((odd.get("x").unwrap().input_price - 1.0).abs() < 1e-9);
        assert_eq!(odd.get("x").unwrap().context_window, 0);
        assert!((nemo.input_price - 0.02).abs() < 1e-9);
        assert!(nemo.capabilities.structured_output && !nemo.capabilities.tools);
        assert!(!nemo.capabilities.vision);
        assert!(sonnet.strength() > nemo.strength());
        let order: Vec<&str> = c.by_strength().iter().map(|m| &*m.id).collect();
        assert_eq!(
            order,
            ["mistralai/mistral-nemo", "anthropic/claude-sonnet-4"]
        );
    }

    /// An embedding or image-only model cannot answer a chat completion.
    #[test]
    fn models_without_text_output_are_left_out() {
        // As OpenRouter lists them with `?output_modalities=all`.
        let c = Catalog::from_openrouter_models_json(
            br#"{"data":[
                {"id":"openai/text-embedding-3-small","pricing":{"prompt":"0.00000002","completion":"0"},
                 "architecture":{"input_modalities":["text"],"output_modalities":["embeddings"]}},
                {"id":"google/gemini-2.5-flash-image","pricing":{"prompt":"0.0000003","completion":"0.0000025"},
                 "architecture":{"input_modalities":["text","image"],"output_modalities":["image","text"]}},
                {"id":"image-only","pricing":{"prompt":"0","completion":"0.00004"},
                 "architecture":{"input_modalities":["text"],"output_modalities":["image"]}},
                {"id":"unsaid","pricing":{"prompt":"0","completion":"0"},"architecture":{}}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = c.models().iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["google/gemini-2.5-flash-image", "unsaid"]);
    }

    /// Read as free, a variable price made `openrouter/auto` the cheapest candidate, so the
    /// router sent every easy prompt on to OpenRouter's own router.
    #[test]
    fn variable_priced_routers_are_left_out() {
        let c = Catalog::from_openrouter_models_json(SAMPLE.as_bytes()).unwrap();
        let easy = crate::auto_route::PromptInfo::from_text("hi, thanks!");
        let ranking = crate::auto_route::DefaultRouter::new().route_catalog(&easy, &c);
        assert_eq!(ranking.first(), Some("mistralai/mistral-nemo"));
        // Either price variable is enough; a free model (`"0"`) stays.
        let c = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"r","pricing":{"prompt":"0","completion":"-1"}},
                          {"id":"n","pricing":{"prompt":-1,"completion":"0"}},
                          {"id":"free","pricing":{"prompt":"0","completion":"0"}}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = c.models().iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["free"]);
    }

    /// Read as free, a model whose list entry gives no price (no `pricing`, or no `prompt` or
    /// `completion` in it) was the cheapest candidate and the pick for every easy prompt.
    #[test]
    fn unpriced_models_are_left_out() {
        let c = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"priced","pricing":{"prompt":"0.0000001","completion":"0.0000004"}},
                          {"id":"no-pricing"},
                          {"id":"no-completion","pricing":{"prompt":"0"}},
                          {"id":"no-prompt","pricing":{"completion":"0"}},
                          {"id":"null-prompt","pricing":{"prompt":null,"completion":"0"}}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = c.models().iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["priced"]);
        let easy = crate::auto_route::PromptInfo::from_text("hi, thanks!");
        let ranking = crate::auto_route::DefaultRouter::new().route_catalog(&easy, &c);
        assert_eq!(ranking.first(), Some("priced"));
    }

    /// File input is read from its own modality: a vision model that takes no file (Llama 3.2
    /// Vision, Pixtral) is no fit for a file part, and a model may take files without images.
    #[test]
    fn file_input_is_its_own_modality() {
        let c = Catalog::from_openrouter_models_json(
            br#"{"data":[{"id":"meta-llama/llama-3.2-11b-vision-instruct",
                "pricing":{"prompt":"0.000000049","completion":"0.000000049"},
                "architecture":{"input_modalities":["text","image"]}},
                {"id":"files-only","pricing":{"prompt":"0","completion":"0"},
                "architecture":{"input_modalities":["text","file"]}}]}"#,
        )
        .unwrap();
        let vision = c.models()[0].capabilities;
        assert!(vision.vision && !vision.file, "{vision:?}");
        let files = c.models()[1].capabilities;
        assert!(files.file && !files.vision, "{files:?}");
    }

    #[test]
    fn bad_model_lists_are_errors() {
        for bad in [
            "",
            "[]",
            r#"{"data": {}}"#,
            r#"{"data": [{"context_length": 5}]}"#,
            r#"{"data": [{"id": "x", "pricing": {"prompt": "cheap"}}]}"#,
            r#"{"data": [{"id": "x", "context_length": -3}]}"#,
            // Finite per token, infinite per million: not free.
            r#"{"data": [{"id": "x", "pricing": {"prompt": "1e303"}}]}"#,
            r#"{"data": [{"id": "x", "pricing": {"completion": 1e303}}]}"#,
        ] {
            let err = Catalog::from_openrouter_models_json(bad.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid model list"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn profiles_from_toml_and_json() {
        #[derive(Deserialize)]
        struct Cfg {
            models: Vec<ModelProfile>,
        }
        let cfg: Cfg = toml::from_str(
            r#"
            [[models]]
            id = "a"
            context_window = 1000
            input_price = 1.0
            output_price = 2.0
            capabilities = ["vision", "audio", "video", "file", "tools", "structured_output"]
            quality = 0.9
            [[models]]
            id = "b"
            context_window = 2000
            "#,
        )
        .unwrap();
        assert_eq!(cfg.models[0].capabilities, Capabilities::ALL);
        assert_eq!(cfg.models[0].quality, Some(0.9));
        assert_eq!(cfg.models[1].capabilities, Capabilities::default());
        assert_eq!(cfg.models[1].strength(), 0.0);
        assert_eq!(cfg.models[1].max_output_tokens, None);
        let limited: ModelProfile =
            toml::from_str("id = \"l\"\ncontext_window = 1000\nmax_output_tokens = 256").unwrap();
        assert_eq!(limited.max_output_tokens, Some(256));
        let j: ModelProfile = serde_json::from_str(
            r#"{"id":"c","context_window":5,"capabilities":["structured_outputs","audio"]}"#,
        )
        .unwrap();
        assert!(j.capabilities.structured_output && j.capabilities.audio);
        assert!(serde_json::from_str::<ModelProfile>(
            r#"{"id":"c","context_window":5,"capabilities":["visoin"]}"#
        )
        .is_err());
    }

    /// A price written as OpenRouter's `-1` (variable) or as `nan` / `inf`, or a quality of
    /// `nan` / `inf`, is a configuration error: read as free (or as no hint), the model was the
    /// cheapest candidate and the pick for every easy prompt.
    #[test]
    fn prices_and_qualities_that_are_not_numbers_are_errors() {
        for bad in [
            "input_price = -1.0",
            "output_price = -0.5",
            "input_price = nan",
            "output_price = inf",
            "quality = nan",
            "quality = -inf",
        ] {
            let text = format!("id = \"m\"\ncontext_window = 1000\n{bad}");
            let err = toml::from_str::<ModelProfile>(&text).unwrap_err();
            let field = bad.split(' ').next().unwrap();
            assert!(err.to_string().contains(field), "{bad}: {err}");
        }
        let err = serde_json::from_str::<ModelProfile>(
            r#"{"id":"m","context_window":1000,"input_price":-1,"output_price":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("input_price"), "{err}");
        // Free models and any finite quality (negative too: only the order matters) are fine.
        let ok: ModelProfile = toml::from_str(
            "id = \"m\"\ncontext_window = 1000\ninput_price = 0.0\noutput_price = 0\nquality = -2.5",
        )
        .unwrap();
        assert_eq!((ok.blended_price(), ok.quality), (0.0, Some(-2.5)));
    }

    #[test]
    fn duplicates_are_dropped_and_strength_prefers_quality() {
        let c = Catalog::from_profiles([
            ModelProfile::new("x", 10, 100.0, 100.0).with_quality(0.1),
            ModelProfile::new("y", 10, 0.1, 0.1).with_quality(0.9),
            ModelProfile::new("x", 99, 0.0, 0.0),
        ]);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("x").unwrap().context_window, 10);
        let order: Vec<&str> = c.by_strength().iter().map(|m| &*m.id).collect();
        assert_eq!(order, ["x", "y"]);
    }
}
