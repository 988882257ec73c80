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
        /// use tower_llm_router::auto_route::{policy_fn, Catalog, ModelProfile, Ranking};
        /// use tower_llm_router::AutoRouteLayer;
        ///
        /// let catalog = Catalog::from_profiles([ModelProfile::new("a", 8_000, 1.0, 1.0)]);
        /// // The strongest (last listed) model first.
        /// let layer = AutoRouteLayer::new(catalog).policy(policy_fn(|_, candidates| {
        ///     let ids = candidates.iter().rev().map(|m| m.id.clone()).collect();
        ///     Ranking::new(ids, 1.0, Cow::Borrowed("strongest first"))
        /// }));
        /// # let _ = layer;
        /// ```
        pub fn policy<P: RoutePolicy>(mut self, policy: P) -> Self {
            Arc::make_mut(&mut self.config).policy = Policy::Sync(Arc::new(policy));
            self
        }

        /// Ranks with an async `policy`, for routers that call out; wrap it in
        /// [`RemoteWithFallback`](crate::auto_route::RemoteWithFallback) for a timeout and a local
        /// fallback. A closure goes through
        /// [`async_policy_fn`](crate::auto_route::async_policy_fn).
        pub fn async_policy<P: AsyncRoutePolicy>(mut self, policy: P) -> Self {
            Arc::make_mut(&mut self.config).policy = Policy::Async(Arc::new(policy));
            self
        }

        /// The `model` value that asks for auto routing. Defaults to `"auto"`;
        /// `"openrouter/auto"` is always accepted too.
        pub fn sentinel(mut self, model: &str) -> Self {
            let config = Arc::make_mut(&mut self.config);
            config.sentinels = vec![model.into(), "openrouter/auto".into()];
            self
        }

        /// Restricts the candidates to these catalog ids. Defaults to every catalog model.
        pub fn candidates<I, M>(mut self, ids: I) -> Self
        where
            I: IntoIterator<Item = M>,
            M: AsRef<str>,
        {
            let ids: Vec<M> = ids.into_iter().collect();
            let config = Arc::make_mut(&mut self.config);
            let kept = config
                .catalog
                .models()
                .iter()
                .filter(|m| ids.iter().any(|id| id.as_ref() == &*m.id))
                .cloned();
            config.catalog = Arc::new(Catalog::from_profiles(kept));
            self
        }

        /// Ranks models that cool down in `health` last: give it the same store as the
        /// [`FallbackLayer`](crate::FallbackLayer) below. Defaults to none; run inside a
        /// fallback layer ([`FallbackLayer::auto_route`](crate::FallbackLayer::auto_route)), to
        /// that layer's store.
        pub fn health(mut self, health: Arc<dyn crate::health::Health>) -> Self {
            Arc::make_mut(&mut self.config).health = Some(health);
            self
        }

        /// The largest request body buffered; a larger one is answered 413. Defaults to
        /// 32 MiB.
        pub fn max_body_bytes(mut self, limit: usize) -> Self {
            Arc::make_mut(&mut self.config).max_body_bytes = limit;
            self
        }

        /// How many models of the ranking after the chosen one are handed to the
        /// [`FallbackLayer`](crate::FallbackLayer) as fallbacks. Defaults to `3`, so that the
        /// chain fills that layer's default cap of 4 models (a lower cap cuts the chain).
        pub fn max_fallbacks(mut self, max: usize) -> Self {
            Arc::make_mut(&mut self.config).max_fallbacks = max;
            self
        }
    };
}
