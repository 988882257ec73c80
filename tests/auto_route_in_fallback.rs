//! `FallbackLayer::auto_route`: the auto router run inside the fallback layer's own future.
//! Every case of `tests/auto_route.rs` again (`support/auto_route_cases.rs`), then the two
//! forms side by side: the same decisions, the same bytes upstream.

mod support;

macro_rules! stack {
    ($auto:expr, $up:expr) => {
        fused!($auto, $up)
    };
    ($auto:expr, $fallback:expr, $up:expr) => {
        fused!($auto, $fallback, $up)
    };
}

include!("support/auto_route_cases.rs");

#[tokio::test]
async fn the_decision_is_a_request_extension_for_the_service_below() {
    let up = Upstream::start().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_in = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().auto_route(AutoRouteLayer::new(catalog())))
        .map_request(move |req: http::Request<tower_llm_router::RouterBody>| {
            let decision = req.extensions().get::<RouteDecision>().cloned();
            seen_in.lock().unwrap().push(decision);
            req
        })
        .buffer(8)
        .service(routed_client(up.addr, vec![]));
    let res = svc
        .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one attempt");
    let decision = seen[0].clone().expect("every attempt carries the decision");
    assert_eq!(model_header(&res), &*decision.chosen);
    assert_eq!(res.extensions().get::<RouteDecision>(), Some(&decision));
}

/// The same requests through both forms: the same status, decision, attempts and bytes
/// upstream, for auto requests (with a constraint, a plugin, a failing first choice) and for
/// concrete ones.
#[tokio::test]
async fn both_forms_route_alike() {
    let requests = [
        user("hi"),
        user(&"Prove that the halting problem is undecidable, step by step. ".repeat(20)),
        json!({"model": "auto", "tools": [{"type": "function", "function": {"name": "f"}}],
               "messages": [{"role": "user", "content": "call f"}]}),
        json!({"model": "openrouter/auto", "messages": [{"role": "user", "content": "hi"}],
               "plugins": [{"id": "auto-router", "allowed_models": ["mi*"]}]}),
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
               "models": ["max"]}),
        json!({"model": "mid", "models": ["max"], "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "auto", "messages": "not a list"}),
    ];
    for failing in [None, Some("mini")] {
        let mut answers = Vec::new();
        for fused in [false, true] {
            let up = Upstream::start().await;
            if let Some(model) = failing {
                up.set(
                    model,
                    Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
                );
            }
            let mut seen = Vec::new();
            for body in &requests {
                let auto = AutoRouteLayer::new(catalog());
                let request = chat(&up.url(PATH), &body.to_string());
                let res = if fused {
                    fused!(auto, up).oneshot(request).await.unwrap()
                } else {
                    stacked!(auto, up).oneshot(request).await.unwrap()
                };
                let decision = res.extensions().get::<RouteDecision>().cloned();
                seen.push((res.status(), decision, attempts_header(&res)));
            }
            let bodies: Vec<_> = up.received().into_iter().map(|r| r.body).collect();
            answers.push((seen, bodies));
        }
        assert_eq!(answers[0], answers[1], "failing: {failing:?}");
        // And what both did is what the router is for.
        let (seen, bodies) = &answers[0];
        let chosen = |i: usize| seen[i].1.as_ref().map(|d| d.chosen.to_string());
        assert_eq!(chosen(1).as_deref(), Some("max"), "a hard prompt");
        assert_eq!(chosen(2).as_deref(), Some("mid"), "tools need tool support");
        assert!(
            matches!(chosen(3).as_deref(), Some("mini" | "mid")),
            "the plugin's allowed models: {:?}",
            chosen(3)
        );
        assert_eq!(seen[5].1, None, "a concrete model is not routed");
        assert_eq!(seen[6].0, 400, "bad messages");
        if failing.is_some() {
            assert_eq!(
                seen[0].2, "mini=downtime, mid=ok",
                "the ranking is the chain"
            );
            assert_eq!(
                seen[4].2, "mini=downtime, max=ok",
                "the body's models come first"
            );
        }
        assert!(bodies
            .iter()
            .all(|b| !b.windows(6).any(|w| w == b"\"auto\"")));
    }
}

/// The fallback layer's cap bounds what one request may try. The chain the auto router hands
/// over is the router's, not the client's: it is cut at the cap, in both forms, where it was
/// refused as a client's `models` over the cap (400 `too_many_models`, param `models`, for a
/// request that sent none) as soon as more models fitted than the cap allowed.
#[tokio::test]
async fn a_ranking_longer_than_the_cap_is_cut_not_refused() {
    let down = || Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#);
    for fused in [false, true] {
        let up = Upstream::start().await;
        up.set("mini", down());
        up.set("mid", down());
        let auto = AutoRouteLayer::new(catalog());
        let fallback = FallbackLayer::new().max_models(2);
        let request = chat(&up.url(PATH), &user("hi").to_string());
        let res = through_form(fused, auto, fallback, &up, request).await;
        assert_eq!(res.status(), 503, "fused: {fused}");
        let decision = res.extensions().get::<RouteDecision>().cloned().unwrap();
        assert_eq!(decision.ranking.len(), 3, "{:?}", decision.ranking);
        assert_eq!(attempts_header(&res), "mini=downtime, mid=downtime");
        assert_eq!(up.received().len(), 2, "max, third, is past the cap");
    }
}

/// One layer, one health store: with `auto_route`, the router ranks with the cooldowns the
/// fallback layer keeps (its own store unless the auto router was given one), whichever order
/// the setters are called in. Before, the router ranked with none: its decision named a model
/// the layer then put last, and the `RouteDecision` disagreed with the model that answered.
#[tokio::test]
async fn the_fused_router_ranks_with_the_layers_own_health() {
    type Build = fn(AutoRouteLayer, Arc<dyn Health>) -> FallbackLayer;
    let forms: [(&str, Build); 3] = [
        ("default store", |auto, _| {
            FallbackLayer::new().auto_route(auto)
        }),
        ("health first", |auto, h| {
            FallbackLayer::new().health(h).auto_route(auto)
        }),
        ("health after", |auto, h| {
            FallbackLayer::new().auto_route(auto).health(h)
        }),
    ];
    for (form, build) in forms {
        let up = Upstream::start().await;
        let health: Arc<dyn Health> = Arc::new(InMemoryHealth::new());
        let svc = ServiceBuilder::new()
            .layer(build(AutoRouteLayer::new(catalog()), health))
            .buffer(8)
            .service(routed_client(up.addr, vec![]));
        // "mini" is the router's pick for "hi"; its 429 cools it down in the layer's store.
        up.set(
            "mini",
            Behavior::Status(429, vec![], r#"{"error":{"message":"slow down"}}"#),
        );
        let first = svc
            .clone()
            .oneshot(chat(&up.url(PATH), &user("hi").to_string()));
        let first = first.await.unwrap();
        assert_eq!(first.status(), 200, "{form}");
        assert_eq!(
            attempts_header(&first).split(", ").next(),
            Some("mini=rate_limited"),
            "{form}"
        );

        let res = svc
            .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
            .await
            .unwrap();
        let decision = res.extensions().get::<RouteDecision>().cloned().unwrap();
        assert_ne!(
            &*decision.chosen, "mini",
            "{form}: the router ranked a cooling model first"
        );
        assert_eq!(model_header(&res), &*decision.chosen, "{form}");
        assert_eq!(
            decision.ranking.last().map(|m| &**m),
            Some("mini"),
            "{form}"
        );
    }
}

/// Run inside the fallback layer, the router chooses within that layer's allow-list (given
/// before or after `auto_route`): a client asking for `auto` is never refused for the
/// router's choice. "hi" goes to `mini` without the list.
#[tokio::test]
async fn the_router_inside_chooses_within_the_layers_allow_list() {
    for allow_first in [true, false] {
        let up = Upstream::start().await;
        let auto = AutoRouteLayer::new(catalog());
        let layer = if allow_first {
            FallbackLayer::new()
                .allow_models(["m?d", "max"])
                .auto_route(auto)
        } else {
            FallbackLayer::new()
                .auto_route(auto)
                .allow_models(["m?d", "max"])
        };
        let res = ServiceBuilder::new()
            .layer(layer)
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
            .await
            .unwrap();
        assert_routed_among(res, &["mid", "max"], &up).await;
    }
}

/// Run inside the fallback layer, the router fills that layer's `max_models` (given before or
/// after `auto_route`) unless its own `max_fallbacks` says otherwise: one chain length, set
/// once.
#[tokio::test]
async fn the_router_inside_fills_the_layers_max_models() {
    let five = || {
        Catalog::from_profiles(
            ["a", "b", "c", "d", "e"].map(|id| ModelProfile::new(id, 32_000, 1.0, 1.0)),
        )
    };
    let cases = [
        (
            FallbackLayer::new()
                .max_models(5)
                .auto_route(AutoRouteLayer::new(five())),
            5,
        ),
        (
            FallbackLayer::new()
                .auto_route(AutoRouteLayer::new(five()))
                .max_models(5),
            5,
        ),
        (
            FallbackLayer::new()
                .max_models(5)
                .auto_route(AutoRouteLayer::new(five()).max_fallbacks(1)),
            2,
        ),
        (
            FallbackLayer::new().auto_route(AutoRouteLayer::new(five())),
            4,
        ),
    ];
    for (layer, tried) in cases {
        let up = Upstream::start().await;
        for model in ["a", "b", "c", "d", "e"] {
            up.set(
                model,
                Behavior::Status(503, vec![], r#"{"error":{"message":"down"}}"#),
            );
        }
        let res = ServiceBuilder::new()
            .layer(layer.health(Arc::new(InMemoryHealth::new().max_models(0))))
            .buffer(8)
            .service(routed_client(up.addr, vec![]))
            .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(
            up.models_received().len(),
            tried,
            "{}",
            attempts_header(&res)
        );
    }
}
