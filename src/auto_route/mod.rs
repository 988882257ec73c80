//! `AutoRouteLayer`: choose the model from the prompt, like OpenRouter's `openrouter/auto`.
//!
//! # Overview
//!
//! A request whose `model` is the auto sentinel (`"auto"` by default, `"openrouter/auto"`
//! accepted too) gets a concrete model chosen from its prompt among the models of a
//! [`Catalog`] (never a sentinel itself, should the catalog list one, and only those
//! [`AutoRouteLayer::allow_models`] allows); so does the sentinel in
//! its `models` ([below](#the-sentinel-in-models)). Any other request passes through untouched
//! (its body is buffered once and handed on as it came); a `POST` body the layer cannot read
//! (another `Content-Type` than JSON, a `Content-Encoding`, an empty body) goes on unread, or
//! with [`AutoRouteLayer::require_json_body`] is refused (413 over the limit, 400 empty, 415).
//! The layer
//! runs in process, with no network call (unless you plug in an [`AsyncRoutePolicy`]), and
//! sits in front of [`FallbackLayer`](crate::FallbackLayer):
//!
//! 1. **Hard constraints first.** The estimated prompt tokens (every message's text, the
//!    system text, the arguments of earlier tool calls and the results of tools, the tool
//!    definitions, and per part 1,600 tokens an image, 1,920 an `input_audio` part and 15,780
//!    a video, a minute of each as Gemini counts, 4,600 a file, one dense page: floors, since
//!    the data is not read) plus `max_tokens` (or `max_completion_tokens`, or the Responses
//!    API's `max_output_tokens`; without any, a reserve: [`DEFAULT_COMPLETION_RESERVE`] unless
//!    [`DefaultRouter::completion_reserve`] says otherwise) must fit the context window, and
//!    `max_tokens` the model's output limit ([`ModelProfile::max_output_tokens`], when known:
//!    a request over it would fail upstream); image parts need vision, `input_audio` parts
//!    audio input, video parts (`video_url`, `input_video`) video input, file parts (PDFs)
//!    file input; `tools` need tool support; a JSON schema (`response_format`, the
//!    Responses API's `text.format`, Anthropic's `output_config.format`) needs structured
//!    output; with OpenRouter's [`provider.max_price`](#providermax_price), the price must
//!    be known and within the ceiling. If nothing fits, a 400 says
//!    why, model by model (the first eight, then how many more). See
//!    [below](#the-prompt-in-three-apis-shapes) for where the prompt is read.
//! 2. **OpenRouter's request options** are honoured: `plugins: [{"id": "auto-router",
//!    "allowed_models": [...], "excluded_models": [...]}]` with `*` patterns. The plugin entry
//!    is removed from the body before the request goes upstream (with `plugins` itself when it
//!    was the only entry: OpenAI refuses an argument it does not know, even empty). Malformed
//!    options get a 400, and so does a key OpenRouter does not document (a misspelt
//!    `allowed_models` read as absent would let the request go to any model) or an empty
//!    pattern (it matches no model). `cost_tier` (`low`, `medium`, `high`, `xhigh`, `max`)
//!    takes the first choice from a cost band, [below](#cost_tier). OpenRouter's
//!    `cost_quality_tradeoff` (deprecated there) is checked (a wrong value is a 400) but not
//!    acted on: the trade-off between quality and cost is otherwise the layer's configuration
//!    ([`DefaultRouter::cost_weight`], [`DefaultRouter::strong_share`]). `pin_model: false`
//!    opts the request out of [session affinity](#session-affinity); `pin_model: true` asks
//!    for what the layer does anyway, and does nothing without
//!    [`AutoRouteLayer::session_affinity`]. `"enabled": false` drops the whole entry (its
//!    model filter and its `cost_tier`, not a `pin_model: false`); the request is still
//!    routed, as OpenRouter routes `openrouter/auto` without the plugin.
//! 3. **Ranking.** The policy ([`DefaultRouter`] unless [`AutoRouteLayer::policy`] or
//!    [`AutoRouteLayer::async_policy`] says otherwise) ranks the models that fit by expected
//!    quality for this prompt against cost. With a `cost_tier`, the ranked models of its band
//!    go first. Models cooling down in the shared
//!    [`Health`](crate::health::Health) are ranked last (the decision's reason names those
//!    passed over for the chosen one).
//!    With [session affinity](#session-affinity) on, the model that served the conversation
//!    before goes first when it still fits, is allowed and is not cooling down.
//! 4. **Rewrite.** The top model is spliced into `model`; the next ones (up to
//!    [`max_fallbacks`](AutoRouteLayer::max_fallbacks)) become the fallback chain, handed to
//!    `FallbackLayer` in a [`FallbackModels`](crate::fallback::FallbackModels) request
//!    extension, not in the body.
//! 5. **Record.** The [`RouteDecision`] (chosen model, ranking, score, reason; the ranking
//!    kept to the chain and 16 models more, so that a catalog of OpenRouter's size does not
//!    copy hundreds of names per request) is a request
//!    extension for the layers below, a response extension for the caller, and fields of the
//!    `llm_router.auto_route` tracing span. `FallbackLayer`'s headers show the chain tried.
//!
//! # `provider.max_price`
//!
//! OpenRouter documents that `provider.max_price` "still applies to the models [the Auto
//! Router] resolves" and, unlike its soft `preferred_*` options, "will prevent your request
//! from running if the price is not available". Here it is a hard constraint of an auto
//! request, beside the window and the capabilities:
//!
//! * `"provider": {"max_price": {"prompt": 1, "completion": 2}}` is in USD per million tokens,
//!   the unit of [`ModelProfile`]'s prices; a ceiling is a finite number `>= 0`, as a JSON
//!   number or a numeric string (OpenRouter's SDKs send strings). A model whose
//!   [`input_price`](ModelProfile::input_price) is over `prompt`, or whose
//!   [`output_price`](ModelProfile::output_price) is over `completion`, is no candidate (a
//!   price equal to the ceiling is within it); nor is one whose prices are not known
//!   ([`ModelProfile::has_valid_prices`]), whatever the ceiling.
//! * Every other member (`request`, `image`, `audio`, and the other keys of OpenRouter's
//!   `pricing`: `web_search`, `internal_reasoning`, `input_cache_read`...) must be a ceiling
//!   too, but excludes no model: the catalog prices models by the token, images and audio
//!   counted as prompt tokens, with no fee per request, per image or per search. OpenRouter
//!   accepts them, so a client that copies a model's `pricing` as its ceiling is not refused.
//! * Candidates are what the ranking, its fallbacks, the ranking in the place of a sentinel in
//!   `models`, a `cost_tier`'s percentiles and a conversation's pinned model are taken from: a
//!   pinned model over the ceiling is passed over, the reason says why.
//! * When the ceiling leaves no model, the 400 `no_model_fits` names `max_price` for each
//!   (param `provider.max_price` when the ceiling alone left nothing); for a concrete
//!   `model` with the sentinel in `models`, the sentinel is dropped instead and the client's
//!   own models are tried alone, as when nothing fits the prompt. A malformed ceiling (not
//!   an object, negative, not a number, `prompt` or `completion` given twice) is a 400
//!   `invalid_max_price` with param `provider.max_price`; a `provider` that is not an object,
//!   or given twice, a 400 `invalid_provider` with param `provider`. `null` is absent.
//! * The decision's reason ends with `within provider.max_price`. `provider` stays in the body
//!   as the client sent it: OpenRouter upstream applies it to its providers too.
//! * A request naming only concrete models (no sentinel in `model` or `models`) is not
//!   concerned: its `provider` is not read (nor refused when malformed). A concrete `model`
//!   with the sentinel in `models` is routed, so its ceiling is read and checked. An auto
//!   request without `provider` pays nothing for it.
//!
//! # `cost_tier`
//!
//! `plugins: [{"id": "auto-router", "cost_tier": "low"}]` asks, as on OpenRouter, for a model
//! from a cost-percentile band of the models the router may choose from: `low` `[0, 20)`,
//! `medium` `[20, 40)`, `high` `[40, 60)`, `xhigh` `[60, 80)`, `max` `[80, 100]`.
//!
//! * **The percentiles** are over the candidates of this request: the catalog models
//!   [`allow_models`](AutoRouteLayer::allow_models) allows, the plugin's `allowed_models` and
//!   `excluded_models` admit, and that meet the hard constraints. Each is priced by its
//!   [`blended_price`](ModelProfile::blended_price), the price the default router weighs (an
//!   invalid price is the dearest). A model's percentile is `100 * k / (n - 1)`, `k` the
//!   candidates strictly cheaper and `n` all of them: the cheapest is at 0 and the dearest at
//!   100 however few they are (five models of different prices fill one band each, two sit at
//!   0 and 100), equal prices share the percentile of the cheapest rank among them, and a
//!   single candidate is at 0.
//! * **The first choice** is the model the policy ranks best among those in the band. A band
//!   with no ranked model gives way to the nearest band that has one; of two bands as near,
//!   the cheaper (so `medium` over two models at 0 and 100 takes the one at 0, as `high`
//!   does; `xhigh` takes the one at 100). So does a band whose models are all cooling down in
//!   the shared [`Health`](crate::health::Health), to the nearest band with a model that is
//!   not (unless every model is cooling down).
//! * **The chain**: the band's models first, in the policy's order, then the rest of the
//!   policy's ranking as it was. Models cooling down are still ranked last, band or not.
//! * **Any policy**: the tier reorders the ranking of the [`DefaultRouter`], of a
//!   [`RoutePolicy`] and of an [`AsyncRoutePolicy`] alike, after the policy has ranked (the
//!   policy does not see the tier). A policy that ranks only some candidates gets the band
//!   among those it ranked; the percentiles stay over every candidate.
//! * **The record**: the [`RouteDecision`]'s `reason` (and so the span's
//!   `llm_router.route.reason`) ends with the tier, the band and the model it put first, e.g.
//!   `...; cost_tier low (cost percentile [0, 20) of 5 candidates): small first`, or which
//!   band was used when the asked one was empty or cooling down.
//! * **Cost**: none for a request without `cost_tier`. With it, the default router ranks
//!   every candidate instead of the first few it keeps, and the prices are sorted once.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
//! use tower_llm_router::{AutoRouteLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Three models: by blended price at the percentiles 0, 50 and 100.
//! let catalog = Catalog::from_profiles([
//!     ModelProfile::new("small", 128_000, 0.15, 0.6),
//!     ModelProfile::new("medium", 128_000, 1.0, 4.0),
//!     ModelProfile::new("large", 200_000, 3.0, 15.0),
//! ]);
//! let upstream = service_fn(|_: Request<RouterBody>| async {
//!     Ok::<_, tower_llm_router::BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let router = AutoRouteLayer::new(catalog).layer(upstream);
//! for (tier, chosen) in [("low", "small"), ("high", "medium"), ("max", "large")] {
//!     let body = format!(
//!         r#"{{"model":"auto","messages":[{{"role":"user","content":"hi"}}],
//!             "plugins":[{{"id":"auto-router","cost_tier":"{tier}"}}]}}"#
//!     );
//!     let request = Request::post("/v1/chat/completions")
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(body)))
//!         .unwrap();
//!     let response = router.clone().oneshot(request).await.unwrap();
//!     let decision = response.extensions().get::<RouteDecision>().unwrap();
//!     assert_eq!(&*decision.chosen, chosen);
//!     assert!(decision.reason.contains(&format!("cost_tier {tier}")));
//! }
//! # }
//! ```
//!
//! # The prompt, in three APIs' shapes
//!
//! The router reads the prompt ([`ChatRequest::prompt`](crate::payload::ChatRequest::prompt))
//! from whichever shape the body has, so that the layers in front of `/v1/chat/completions`,
//! `/v1/responses` and `/v1/messages` route them alike (they rewrite `model` in any JSON
//! body; the example gateway serves the first two):
//!
//! | | chat completions | Responses API | Anthropic Messages |
//! |---|---|---|---|
//! | conversation | `messages` | `input` (a string, or items) | `messages` |
//! | system text | a `system` message | `instructions` | `system` |
//! | completion reserve | `max_completion_tokens`, `max_tokens` | `max_output_tokens` | `max_tokens` |
//! | JSON schema | `response_format.type` | `text.format.type` | `output_config.format.type` (or the beta's `output_format.type`) |
//! | image / file / audio | `image_url` / `file` / `input_audio` | `input_image` (also in a tool's output), a `computer_call_output`'s screenshot, an `image_generation_call` / `input_file` / `input_audio` | `image` / `document` / (none) |
//!
//! System text counts toward the window and as context, never as the user's words (the
//! difficulty score reads the last user message). A Responses API `function_call` item counts
//! as an earlier call (its arguments), a `function_call_output` as a tool's answer; Anthropic's
//! `tool_use` and `tool_result` blocks likewise, and an image in a tool's result needs vision,
//! as does the screenshot of a Responses API `computer_call_output` and an image the image
//! generation tool made, passed back as an `image_generation_call` item (by `id` or with its
//! `result`).
//! Items that carry no text the router reads (`reasoning`, references) are skipped.
//!
//! An auto request with no prompt at all (no message, no input item: a legacy `prompt`, an
//! empty `input`, system text alone) is a 400 `no_messages`, whose message names the fields
//! looked for. One with both `messages` and `input` is a 400 `ambiguous_prompt`: no API reads
//! both, and the router must not choose the model for one prompt while the upstream answers
//! the other (as with a repeated key, [`payload`](crate::payload#duplicate-keys)).
//!
//! The same router can also run inside a `FallbackLayer`:
//! [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route) makes the decision in the
//! fallback layer's own future, with the same results and one future and one pass over the body
//! per request instead of two (what the gateway example does).
//!
//! With axum, the layer works around a `Router` (`layer.layer(router)`) as well as through
//! `Router::layer` or `route_layer`: it rewrites the body, not the URI, so running after
//! routing is fine, and a handler behind it finds the [`RouteDecision`] and
//! [`FallbackModels`](crate::fallback::FallbackModels) in the request's extensions. Its inner
//! service answers a body that can be
//! built from `Bytes` (so that its own rejections share the response type); `FallbackLayer`'s
//! [`ResponseBody`](crate::body::ResponseBody) is one.
//!
//! # The sentinel in `models`
//!
//! `{"model": "gpt-4o", "models": ["claude-sonnet", "auto"]}` asks to try these models, then
//! let the router pick. The layer ranks the candidates as above (same constraints, plugin
//! options, health ordering) and the sentinel's entry in the chain is replaced by the ranking:
//! a model the chain names before it is not repeated, a ranked model the client names after
//! it moves up to its place (one among the models the decision keeps, see
//! [`RouteDecision::ranking`]; the whole ranking up to 20 models), and the ranking adds at most
//! [`max_fallbacks`](AutoRouteLayer::max_fallbacks) models after the first, less one for each
//! model of the client's own there (so the client's models are never cut on this side).
//! `model` stays the client's (a request without `model` gets its first entry of `models`
//! written into it). `models` stays in the body with the client's own models, the sentinel
//! taken out (the member goes when nothing else was in it), and the expanded chain goes in the
//! [`FallbackModels`](crate::fallback::FallbackModels) extension, the hand-over of
//! `"model": "auto"`, with a mark that it orders the body's `models` (a handler that hands the
//! request on keeps its extensions as they are). So the models the client named travel as they
//! do without the sentinel, and `FallbackLayer` answers them the same: more than its
//! [`max_models`](crate::FallbackLayer::max_models), or one its
//! [`allow_models`](crate::FallbackLayer::allow_models) refuses, is a 400 and the upstream is
//! not called. The ranking's additions are this side's, as for `"model": "auto"`: they make
//! room for the client's models (the first ones that fit the cap are kept, in their places),
//! and those the allow-list refuses are left out. With
//! [`keep_models(true)`](crate::FallbackLayer::keep_models) every attempt keeps that `models`,
//! the client's own without the sentinel: no upstream knows the sentinel (OpenRouter would
//! route `openrouter/auto` again), and the ranking stays this side's, as it does for
//! `"model": "auto"`, whose ranking is never written into the body.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
//! use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // `gpt-4o` is down; every other model answers.
//! let upstream = service_fn(|req: Request<RouterBody>| async move {
//!     let body = req.into_body().collect_bytes().await?;
//!     let json: serde_json::Value = serde_json::from_slice(&body)?;
//!     assert!(json.get("models").is_none());
//!     let status = match json["model"].as_str() {
//!         Some("gpt-4o") => StatusCode::SERVICE_UNAVAILABLE,
//!         _ => StatusCode::OK,
//!     };
//!     let answer = Full::new(Bytes::from_static(b"{}"));
//!     Ok::<_, tower_llm_router::BoxError>(Response::builder().status(status).body(answer)?)
//! });
//! let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.15, 0.6)]);
//! let client = ServiceBuilder::new()
//!     .layer(AutoRouteLayer::new(catalog))
//!     .layer(FallbackLayer::new())
//!     .service(upstream);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4o","models":["auto"],"messages":[{"role":"user","content":"hi"}]}"#,
//!     )))
//!     .unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-llm-router-attempts"], "gpt-4o=downtime, small=ok");
//! let decision = response.extensions().get::<RouteDecision>().unwrap();
//! assert_eq!((&*decision.requested, &*decision.chosen), ("gpt-4o", "small"));
//! # }
//! ```
//!
//! * **The record**: the [`RouteDecision`] is an extension and a span as for `"model": "auto"`.
//!   Its `requested` is the client's own model (not a sentinel: nothing was written into
//!   `model`), `chosen` the ranking's first, and `reason` ends with the models put in the
//!   sentinel's place.
//! * **`"model": "auto"` with `auto` in `models` too** is routed once: the ranking's first
//!   goes into `model` and the rest of the same ranking in the sentinel's place in `models`.
//!   (`"model": "auto"` alone is routed as if `models` were `["auto"]`; with a `models` that
//!   names no sentinel, those models follow instead, and stay in the body.)
//! * **Nothing to rank** (no candidate fits, the plugin's patterns leave none, no `messages`,
//!   the policy fails or the catalog is empty): the sentinel is dropped and the client's
//!   models go on alone, since the first may well serve the request. `"model": "auto"` has no
//!   model to send then, hence its 400 (or 500). The decision's `ranking` is empty, `chosen`
//!   is the client's model and `reason` says why. Malformed `messages` or plugin options are a
//!   400 wherever the sentinel is.
//! * **Cost**: a request without a sentinel pays one comparison per entry of `models` (none
//!   without `models`) to find that out.
//!
//! # Session affinity
//!
//! Off by default, every turn of a conversation is routed from its own prompt: a short
//! "thanks" after a hard question goes to a cheap model, throwing away the upstream's prompt
//! cache and changing style mid-conversation. [`AutoRouteLayer::session_affinity`] keeps a
//! conversation on the model that served it, as OpenRouter's Auto Router does (LiteLLM and
//! NVIDIA's Switchyard offer the same, opt-in):
//!
//! * **The conversation** is the request's top-level `session_id` (a string of at most
//!   [`MAX_SESSION_ID_BYTES`]; another value is a 400 `invalid_session_id`), else a
//!   fingerprint of its system text and first user message, read through the prompt views
//!   above (chat completions, Responses API, Anthropic Messages). Only a hash keyed with
//!   per-process random keys is kept, with the model's name: never prompt text.
//! * **Remembered** is the model that served a 2xx answer: the
//!   [`ServedModel`](crate::fallback::ServedModel) the fallback layer names (after a fallback,
//!   the model that answered, not the router's pick), when it is a catalog model.
//! * **On a later turn** (a request with a `session_id`, or with messages after its first
//!   user message: a first turn continues no conversation, and one that opens as a
//!   remembered conversation did, the same question asked again or by another user, is
//!   routed by its own ranking and `cost_tier`), that model goes first if it is still a
//!   candidate that fits (the
//!   conversation may have outgrown its window or come to need a capability), the layer's
//!   and the plugin's patterns allow it, and it is not cooling down in the shared health; the
//!   rest of the ranking is the fallback chain. The [`RouteDecision`]'s reason starts with
//!   `session affinity:` and the span's `llm_router.route.pinned` is `true`. Otherwise the
//!   request is routed as usual (the reason says why the session's model was passed over),
//!   and the model that serves it is remembered instead.
//! * **Bounded**: [`SessionAffinity::max_sessions`] conversations (10,000 by default), each
//!   forgotten [`SessionAffinity::ttl`] after its last answer (an hour by default); past the
//!   bound the one answered longest ago goes. The store is split in up to 16 shards, each a
//!   `std::sync::Mutex` held for one map operation, never across an `await`.
//! * **`pin_model: false`** in the `auto-router` plugin opts a request out: nothing is looked
//!   up or remembered for it. With a `cost_tier`, it is what lets the band choose: otherwise
//!   the session's model comes first, whatever tier the turn asks for.
//! * **When to send a `session_id`**: where the opening is not the conversation's. A
//!   Responses API turn sent with `previous_response_id` carries only its new input, so
//!   without one each such turn is a conversation of its own (and turns of the same text, a
//!   "thanks", share one entry); conversations that open alike (the same system text and
//!   first question) are one to the hash from their second turn on; a conversation whose first message is edited
//!   becomes a new one. The id stays in the body for the upstream: OpenRouter reads it, but
//!   an upstream that refuses members it does not know (OpenAI's and Anthropic's own APIs
//!   answer 400) cannot be sent one.
//! * **Streams**: a streamed answer is remembered when its 2xx headers come, so a stream that
//!   breaks after them still counts as served.
//! * **Scopes**: without one the store is one for every client, and a later turn that opens
//!   exactly as another client's conversation did (same system text and first message,
//!   within the ttl) lands on that conversation's model, which tells the client such a
//!   conversation exists. A service shared by clients who must not learn of each other puts
//!   a [`SessionScope`] (a tenant's or an API key's id) in each request's extensions in front
//!   of the layer: conversations are remembered within their scope.
//!
//! # A catalog that changes
//!
//! Prices drop, windows grow, models are deprecated: OpenRouter's `/models` list changes
//! weekly. [`AutoRouteLayer::new`] fixes its catalog for the life of the layer;
//! [`AutoRouteLayer::with_shared_catalog`] reads it from a [`SharedCatalog`], whose
//! [`replace`](SharedCatalog::replace) every clone of the layer and every service built with
//! it (on every thread) routes with from its next request on, with no restart and no lock
//! (one atomic load per auto request). A request already being decided finishes with the
//! catalog it started with. [`AutoRouteLayer::candidates`] keeps the same ids of each
//! replacement, `cost_tier` bands are the new prices' (they are computed per request), and a
//! conversation whose model a replacement withdrew is routed as a new one (its next success
//! pins the model that served it). [`SharedCatalog`] has a refresh task as its example.
//!
//! # The routing decision
//!
//! * [`catalog`]: the candidate models ([`ModelProfile`], [`Catalog`]), from configuration or
//!   from OpenRouter's model list.
//! * [`tokens`]: [`estimate_tokens`], a one-pass, conservative BPE token count.
//! * [`features`]: [`PromptInfo`] and [`difficulty`], how much a prompt needs a strong model.
//! * [`router`]: [`RoutePolicy`], [`AsyncRoutePolicy`] (from closures: [`policy_fn`],
//!   [`async_policy_fn`]), [`RemoteWithFallback`], the hard
//!   constraints ([`fits`]) and the [`DefaultRouter`], with its measured quality.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
//! use tower_llm_router::health::InMemoryHealth;
//! use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let catalog = Catalog::from_profiles([
//!     ModelProfile::new("small", 16_000, 0.15, 0.6),
//!     ModelProfile::new("large", 200_000, 3.0, 15.0),
//! ]);
//! let health = Arc::new(InMemoryHealth::new());
//! // Echoes the model it was asked for.
//! let upstream = service_fn(|req: Request<RouterBody>| async move {
//!     let body = req.into_body().collect_bytes().await?;
//!     let json: serde_json::Value = serde_json::from_slice(&body)?;
//!     Ok::<_, tower_llm_router::BoxError>(Response::new(Full::new(Bytes::from(json["model"].to_string()))))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(AutoRouteLayer::new(catalog).health(health.clone()))
//!     .layer(FallbackLayer::new().health(health))
//!     .service(upstream);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"auto","messages":[{"role":"user","content":"hi!"}]}"#)))
//!     .unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! let decision = response.extensions().get::<RouteDecision>().unwrap();
//! assert_eq!(&*decision.chosen, "small");
//! assert_eq!(response.headers()["x-llm-router-attempts"], "small=ok");
//! # }
//! ```

#[macro_use]
mod setters;
pub mod catalog;
mod cost_tier;
mod decide;
pub mod features;
mod future;
mod layer;
mod max_price;
mod policy;
pub mod router;
mod service;
mod session;
mod shared_catalog;
pub mod tokens;

pub use catalog::{Capabilities, Catalog, CatalogError, InvalidPrice, ModelProfile};
pub use features::{difficulty, Features, PromptInfo};
pub use future::ResponseFuture;
pub use layer::AutoRouteLayer;
pub use policy::RouteDecision;
pub use router::{
    async_policy_fn, fits, policy_fn, AsyncPolicyFn, AsyncRoutePolicy, DefaultRouter, Ranking,
    RemoteWithFallback, RouteFuture, RoutePolicy, Unfit, DEFAULT_COMPLETION_RESERVE,
};
pub use service::AutoRoute;
pub use session::{SessionAffinity, SessionScope, MAX_SESSION_ID_BYTES};
pub use shared_catalog::SharedCatalog;
pub use tokens::estimate_tokens;

// For `FallbackLayer::auto_route`, which runs the router inside its own future.
pub(crate) use decide::Routed;
pub(crate) use future::{decision_span, route, Deciding, Next};
pub(crate) use policy::Config as AutoConfig;
pub(crate) use session::{remember_served, SessionKey};
