/// Builder setters shared by [`AutoRouteLayer`](super::AutoRouteLayer) and
/// [`AutoRoute`](super::AutoRoute): both hold an `Arc<Config>`.
macro_rules! auto_route_setters {
    () => {
        /// Ranks with `policy` (a [`RoutePolicy`], closures included). Defaults to
        /// [`DefaultRouter::new`](crate::auto_route::DefaultRouter::new).
        ///
        /// A closure goes through [`policy_fn`](crate::auto_route::policy_fn), which fixes its
        /// parameter types: passed directly, `|prompt, candidates|` makes the compiler ask for
        /// annotations (write `|_: &PromptInfo<'_>, candidates: &[&ModelProfile]|` then).
        ///
        /// ```
        /// use std::borrow::Cow;
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::auto_route::{policy_fn, Catalog, ModelProfile, Ranking, RouteDecision};
        /// use tower_llm_router::{AutoRouteLayer, BoxError, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let catalog = Catalog::from_profiles([
        ///     ModelProfile::new("a", 8_000, 1.0, 1.0),
        ///     ModelProfile::new("b", 8_000, 2.0, 2.0),
        /// ]);
        /// // The last listed model first.
        /// let layer = AutoRouteLayer::new(catalog).policy(policy_fn(|_, candidates| {
        ///     let ids = candidates.iter().rev().map(|m| m.id.clone()).collect();
        ///     Ranking::new(ids, 1.0, Cow::Borrowed("last listed first"))
        /// }));
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        /// });
        /// let request = Request::post("/v1/chat/completions")
        ///     .body(Full::new(Bytes::from(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#)))?;
        /// let response = layer.layer(upstream).oneshot(request).await?;
        /// let decision = response.extensions().get::<RouteDecision>().unwrap();
        /// assert_eq!((&*decision.chosen, &*decision.reason), ("b", "last listed first"));
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn policy<P: RoutePolicy>(mut self, policy: P) -> Self {
            Arc::make_mut(&mut self.config).policy = Policy::sync(policy);
            self
        }

        /// Ranks with an async `policy`, for routers that call out; wrap it in
        /// [`RemoteWithFallback`](crate::auto_route::RemoteWithFallback) for a timeout and a local
        /// fallback. A closure goes through
        /// [`async_policy_fn`](crate::auto_route::async_policy_fn). Replaces a policy set
        /// before (by default the sync [`DefaultRouter`](crate::auto_route::DefaultRouter)). A
        /// policy that fails is answered `502` (`route_policy_failed`).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn async_policy<P: AsyncRoutePolicy>(mut self, policy: P) -> Self {
            Arc::make_mut(&mut self.config).policy = Policy::Async(Arc::new(policy));
            self
        }

        /// The `model` value that asks for auto routing. Defaults to `"auto"`;
        /// `"openrouter/auto"` is always accepted too. An empty sentinel (`""`) would route a
        /// body whose `model` is `""`: leave it at a name no model has.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn sentinel(mut self, model: &str) -> Self {
            let config = Arc::make_mut(&mut self.config);
            config.sentinels = vec![model.into(), "openrouter/auto".into()];
            self
        }

        /// Restricts the candidates to these catalog ids (an id the catalog does not list is
        /// ignored). Defaults to every catalog model; a list that leaves none answers auto
        /// requests `500` `no_candidate_model`, the configuration's fault. Filters the catalog
        /// once, here, at no cost per request; a [`SharedCatalog`](crate::auto_route::SharedCatalog)
        /// is filtered the same way each time it is replaced (once, by the first request that
        /// reads the new catalog). For `*` patterns, see [`allow_models`](Self::allow_models).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn candidates<I, M>(mut self, ids: I) -> Self
        where
            I: IntoIterator<Item = M>,
            M: AsRef<str>,
        {
            let ids: Vec<M> = ids.into_iter().collect();
            let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
            Arc::make_mut(&mut self.config).catalog.retain_ids(&ids);
            self
        }

        /// Restricts the candidates to the catalog models that match these patterns: exact ids,
        /// or `*` wildcards such as `"anthropic/*"`, as
        /// [`FallbackLayer::allow_models`](crate::FallbackLayer::allow_models) takes them. Give
        /// it the same patterns as a `FallbackLayer` below with an allow-list: that layer
        /// refuses (400 `model_not_allowed`) a `model` outside its list, the router's choice
        /// included, since it cannot tell it from the client's. Inside
        /// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route) the router takes that
        /// layer's list unless it has one of its own. Defaults to every catalog model; a list
        /// that leaves none (an empty one) answers auto requests `500` `no_candidate_model`,
        /// the configuration's fault. A request's `auto-router` plugin narrows the candidates
        /// further, never past this list. Checked per auto request (one match per catalog
        /// model); [`candidates`](Self::candidates) takes exact ids and costs nothing per
        /// request.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision};
        /// use tower_llm_router::{AutoRouteLayer, BoxError, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let catalog = Catalog::from_profiles([
        ///     ModelProfile::new("openai/gpt-4o-mini", 128_000, 0.15, 0.6),
        ///     ModelProfile::new("anthropic/claude-sonnet-4", 200_000, 3.0, 15.0),
        /// ]);
        /// let layer = AutoRouteLayer::new(catalog).allow_models(["anthropic/*"]);
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        /// });
        /// let request = Request::post("/v1/chat/completions")
        ///     .body(Full::new(Bytes::from(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#)))?;
        /// let response = layer.layer(upstream).oneshot(request).await?;
        /// // The cheaper model would do for "hi", but the list allows only the other one.
        /// let decision = response.extensions().get::<RouteDecision>().unwrap();
        /// assert_eq!(&*decision.chosen, "anthropic/claude-sonnet-4");
        /// assert_eq!(decision.ranking.len(), 1);
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn allow_models<I, P>(mut self, patterns: I) -> Self
        where
            I: IntoIterator<Item = P>,
            P: AsRef<str>,
        {
            Arc::make_mut(&mut self.config).allow =
                Some(crate::pattern::ModelPatterns::new(patterns));
            self
        }

        /// Ranks models that cool down in `health` last: give it the same store as the
        /// [`FallbackLayer`](crate::FallbackLayer) below. Defaults to none; run inside a
        /// fallback layer ([`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route)), to
        /// that layer's store.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn health(mut self, health: Arc<dyn crate::health::Health>) -> Self {
            Arc::make_mut(&mut self.config).health = Some(health);
            self
        }

        /// The largest request body buffered; a larger one is answered 413
        /// (`request_too_large`). Defaults to 32 MiB
        /// ([`DEFAULT_MAX_BODY_BYTES`](crate::payload::DEFAULT_MAX_BODY_BYTES)); `0` refuses
        /// every body the layer reads. As
        /// [`FallbackLayer::max_body_bytes`](crate::FallbackLayer::max_body_bytes); inside
        /// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route), that layer's
        /// setting applies, not this one.
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_body_bytes(mut self, limit: usize) -> Self {
            Arc::make_mut(&mut self.config).body.max_bytes = limit;
            self
        }

        /// The most bytes of request bodies that the services made from this layer hold at
        /// once; a body that does not fit is answered `503` (`overloaded`, `Retry-After: 1`)
        /// and not sent on. Defaults to none. Counted as the body arrives and given back when
        /// the last reference to it is dropped, as
        /// [`FallbackLayer::max_buffered_bytes`](crate::FallbackLayer::max_buffered_bytes)
        /// says. A [`FallbackLayer`](crate::FallbackLayer) below takes the body over counted:
        /// it does not count it again in its own budget. The rewritten body of an auto
        /// request is counted in this budget in place of the client's. Inside
        /// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route), that layer's
        /// setting applies, not this one.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, ServiceBuilder, ServiceExt};
        /// use tower_llm_router::auto_route::{Catalog, ModelProfile};
        /// use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        /// });
        /// // The budget where the body is read: the layer below does not count it again.
        /// let client = ServiceBuilder::new()
        ///     .layer(AutoRouteLayer::new(catalog).max_buffered_bytes(1 << 20))
        ///     .layer(FallbackLayer::new())
        ///     .service(upstream);
        /// let request = Request::post("/v1/chat/completions")
        ///     .header("content-type", "application/json")
        ///     .body(Full::new(Bytes::from_static(
        ///         br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
        ///     )))?;
        /// assert_eq!(client.oneshot(request).await?.status(), 200);
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_buffered_bytes(mut self, limit: usize) -> Self {
            Arc::make_mut(&mut self.config).body.budget =
                Some(crate::buffer_budget::BufferBudget::new(limit));
            self
        }

        /// Whether a `POST` body the layer cannot route is refused instead of passed on.
        /// Defaults to `false`: any body but a JSON (or untyped), uncompressed, non-empty one
        /// goes to the inner service as it came, unread and not held to
        /// [`max_body_bytes`](Self::max_body_bytes). With `true`, the layer answers it: `413`
        /// over the limit (by its declared length), `400` `invalid_json` declared or known
        /// empty, `415` `unsupported_content_encoding` (with `Accept-Encoding: identity`)
        /// compressed, `415` `unsupported_media_type` of another type; other methods go on as
        /// before. The same refusals as
        /// [`FallbackLayer::require_json_body`](crate::FallbackLayer::require_json_body), which
        /// says more; inside [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route),
        /// that layer's setting applies, not this one.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, Layer, ServiceExt};
        /// use tower_llm_router::auto_route::{Catalog, ModelProfile};
        /// use tower_llm_router::{AutoRouteLayer, BoxError, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Err::<Response<Full<Bytes>>, BoxError>("not called: the layer answers".into())
        /// });
        /// let client = AutoRouteLayer::new(catalog).require_json_body(true).layer(upstream);
        /// let gzipped = Request::post("/v1/chat/completions")
        ///     .header("content-type", "application/json")
        ///     .header("content-encoding", "gzip")
        ///     .body(Full::new(Bytes::from_static(b"\x1f\x8b")))?;
        /// let response = client.oneshot(gzipped).await?;
        /// assert_eq!(response.status(), 415);
        /// assert_eq!(response.headers()["accept-encoding"], "identity");
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn require_json_body(mut self, require: bool) -> Self {
            Arc::make_mut(&mut self.config).body.require_json = require;
            self
        }

        /// How many models of the ranking after the chosen one are handed to the
        /// [`FallbackLayer`](crate::FallbackLayer) as fallbacks. Defaults to `3`, so that the
        /// chain fills that layer's default cap of 4 models (a lower cap cuts the chain; a
        /// higher one is not filled unless this is raised too). `0` hands over none: the
        /// chosen model alone is tried. The ranking a [`RouteDecision`](crate::auto_route::RouteDecision)
        /// records is the chain and 16 models more, whatever this is. Inside
        /// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route), a router without
        /// this setting fills that layer's
        /// [`max_models`](crate::FallbackLayer::max_models) instead (`max_models - 1`).
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn max_fallbacks(mut self, max: usize) -> Self {
            let config = Arc::make_mut(&mut self.config);
            config.max_fallbacks = max;
            config.max_fallbacks_set = true;
            self
        }

        /// Session affinity (sticky routing): a conversation stays on the model that served
        /// it, keeping the upstream's prompt cache and the model's style from turn to turn, as
        /// OpenRouter's Auto Router does. Off by default: nothing is hashed, stored or locked.
        /// [`SessionAffinity::new`](crate::auto_route::SessionAffinity::new) remembers 10,000
        /// conversations for an hour after their last answer.
        ///
        /// * **The conversation** is the request's top-level `session_id` (a string of at
        ///   most [`MAX_SESSION_ID_BYTES`](crate::auto_route::MAX_SESSION_ID_BYTES); another
        ///   value is a 400 `invalid_session_id`; it stays in the body), else its system text
        ///   and first user message, read in any of the three APIs' shapes. Two conversations
        ///   that open alike share a model until one is given a `session_id`; a Responses API
        ///   conversation continued with `previous_response_id` (the opening not resent) needs
        ///   one. Only a keyed hash is kept (random keys per process), with the model's name:
        ///   no prompt text.
        /// * **Remembered**: the model that served a successful (2xx) answer, the
        ///   [`ServedModel`](crate::fallback::ServedModel) a
        ///   [`FallbackLayer`](crate::FallbackLayer) below names (after a fallback, the model
        ///   that answered, not the router's pick), when it is a catalog model.
        /// * **Next turn**: that model goes first if it may still serve the request (allowed
        ///   by the layer and the plugin's patterns, fits the prompt's window and capabilities,
        ///   not cooling down in the [`health`](Self::health) store), before the models of a
        ///   `cost_tier` band; the rest of the ranking follows as the fallback chain, and the
        ///   [`RouteDecision`](crate::auto_route::RouteDecision)'s reason starts with
        ///   `session affinity:` (the span's `llm_router.route.pinned` is `true`). Otherwise the
        ///   request is routed as usual, the reason says why the session's model was passed
        ///   over, and the model that serves it is remembered instead.
        /// * **Opting out**: the `auto-router` plugin's `pin_model: false`: nothing is looked
        ///   up nor remembered for that request. `pin_model: true` asks for what the layer
        ///   does anyway, and without this setting does nothing.
        ///
        /// Past the bound, the conversation answered longest ago is forgotten (exactly up to 64
        /// conversations, nearly beyond: the store is split in up to 16 locks). Clones of the
        /// layer share the store; inside
        /// [`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route) it works the same.
        ///
        /// ```
        /// use bytes::Bytes;
        /// use http::{Request, Response};
        /// use http_body_util::Full;
        /// use tower::{service_fn, ServiceBuilder, ServiceExt};
        /// use tower_llm_router::auto_route::{Catalog, ModelProfile, RouteDecision, SessionAffinity};
        /// use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer, RouterBody};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), BoxError> {
        /// let catalog = Catalog::from_profiles([
        ///     ModelProfile::new("small", 16_000, 0.1, 0.4),
        ///     ModelProfile::new("large", 200_000, 3.0, 15.0),
        /// ]);
        /// let upstream = service_fn(|_: Request<RouterBody>| async {
        ///     Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        /// });
        /// let client = ServiceBuilder::new()
        ///     .layer(AutoRouteLayer::new(catalog).session_affinity(SessionAffinity::new()))
        ///     .layer(FallbackLayer::new())
        ///     .service(upstream);
        /// let turn = |session: &str, text: &str, max_tokens: u32| {
        ///     let body = format!(r#"{{"model":"auto","session_id":"{session}","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{text}"}}]}}"#);
        ///     Request::post("/v1/chat/completions").body(Full::new(Bytes::from(body)))
        /// };
        /// // A long answer asked for: only the large model's window holds it.
        /// let first = client.clone().oneshot(turn("chat-1", "Write the report.", 20_000)?).await?;
        /// let chosen = first.extensions().get::<RouteDecision>().unwrap().chosen.clone();
        /// assert_eq!(&*chosen, "large");
        /// // This turn alone would go to the small model; the conversation stays where it was.
        /// let second = client.clone().oneshot(turn("chat-1", "Thanks!", 100)?).await?;
        /// let decision = second.extensions().get::<RouteDecision>().unwrap();
        /// assert_eq!(&*decision.chosen, "large");
        /// assert!(decision.reason.starts_with("session affinity:"));
        /// # Ok(())
        /// # }
        /// ```
        #[must_use = "this returns the changed value; `self` is not changed in place"]
        pub fn session_affinity(mut self, affinity: crate::auto_route::SessionAffinity) -> Self {
            Arc::make_mut(&mut self.config).sessions =
                crate::auto_route::session::Sessions::new(affinity).map(Arc::new);
            self
        }
    };
}
