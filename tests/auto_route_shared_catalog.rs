//! A catalog replaced while the service runs (`auto_route::SharedCatalog`): the router is
//! served with hyper's server on real loopback sockets, in front of the scripted upstream
//! (reached with the hyper-util client), and called with reqwest, as a client of a gateway
//! would. Every case runs in both forms: an `AutoRouteLayer` in front of a `FallbackLayer`,
//! and `FallbackLayer::auto_route`.

mod support;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_llm_router::auto_route::{
    async_policy_fn, Catalog, ModelProfile, PromptInfo, Ranking, SessionAffinity, SharedCatalog,
};
use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer};

const PATH: &str = "/v1/chat/completions";
const FORMS: [bool; 2] = [false, true];

/// Models of one window, priced as given (input and output alike): the default router sends
/// an easy prompt to the cheapest.
fn priced(models: &[(&str, f64)]) -> Catalog {
    Catalog::from_profiles(
        models
            .iter()
            .map(|&(id, price)| ModelProfile::new(id, 32_000, price, price)),
    )
}

/// Serves `auto` (in front of a `FallbackLayer`, or inside it when `fused`) over the
/// upstream; returns the server's address.
async fn serve_router(fused: bool, auto: AutoRouteLayer, up: &Upstream) -> SocketAddr {
    if fused {
        let stack = ServiceBuilder::new()
            .layer(FallbackLayer::new().auto_route(auto))
            .buffer(64)
            .service(routed_client(up.addr, vec![]));
        serve(stack, None).await
    } else {
        let stack = ServiceBuilder::new()
            .layer(auto)
            .layer(FallbackLayer::new())
            .buffer(64)
            .service(routed_client(up.addr, vec![]));
        serve(stack, None).await
    }
}

/// Sends `body` to the server at `addr`; returns the status and the model that answered.
async fn ask(addr: SocketAddr, body: &Value) -> (u16, String) {
    post_for_model(addr, PATH, body).await
}

fn hi() -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_catalog_routes_the_next_request_on_every_clone() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0)]));
        let layer = AutoRouteLayer::with_shared_catalog(catalog.clone());
        // Two servers, each from its own clone of the layer.
        let first = serve_router(fused, layer.clone(), &up).await;
        let second = serve_router(fused, layer, &up).await;
        assert_eq!(ask(first, &hi()).await, (200, "a".into()), "fused: {fused}");
        assert_eq!(
            ask(second, &hi()).await,
            (200, "a".into()),
            "fused: {fused}"
        );

        // "a" withdrawn: both servers route without it, from their next request on.
        catalog.replace(priced(&[("b", 1.0), ("c", 2.0)]));
        assert_eq!(
            ask(second, &hi()).await,
            (200, "b".into()),
            "fused: {fused}"
        );
        assert_eq!(ask(first, &hi()).await, (200, "b".into()), "fused: {fused}");

        // A price drop: "c" is now the cheapest.
        catalog.replace(priced(&[("b", 1.0), ("c", 0.05)]));
        assert_eq!(ask(first, &hi()).await, (200, "c".into()), "fused: {fused}");
        assert_eq!(
            ask(second, &hi()).await,
            (200, "c".into()),
            "fused: {fused}"
        );
        assert_eq!(
            up.models_received(),
            ["a", "a", "b", "b", "c", "c"],
            "fused: {fused}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_candidates_filter_applies_to_every_replacement() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0), ("c", 2.0)]));
        let layer = AutoRouteLayer::with_shared_catalog(catalog.clone()).candidates(["b", "c"]);
        let addr = serve_router(fused, layer, &up).await;
        assert_eq!(ask(addr, &hi()).await, (200, "b".into()), "fused: {fused}");

        // "d" is the cheapest of the new catalog, and "a" still cheaper than "c": neither is
        // a candidate.
        catalog.replace(priced(&[("a", 0.1), ("b", 20.0), ("c", 1.0), ("d", 0.01)]));
        assert_eq!(ask(addr, &hi()).await, (200, "c".into()), "fused: {fused}");
        assert_eq!(ask(addr, &hi()).await, (200, "c".into()), "fused: {fused}");

        // And the next replacement, filtered again.
        catalog.replace(priced(&[("b", 0.5), ("c", 1.0), ("d", 0.01)]));
        assert_eq!(ask(addr, &hi()).await, (200, "b".into()), "fused: {fused}");

        // A catalog with no candidate left: the configuration's fault, a 500.
        catalog.replace(priced(&[("a", 0.1), ("d", 0.01)]));
        let (status, model) = ask(addr, &hi()).await;
        assert_eq!((status, &*model), (500, ""), "fused: {fused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_tier_bands_follow_the_replaced_prices() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0), ("c", 5.0)]));
        let addr = serve_router(
            fused,
            AutoRouteLayer::with_shared_catalog(catalog.clone()),
            &up,
        )
        .await;
        let dearest = json!({
            "model": "auto",
            "messages": [{"role": "user", "content": "hi"}],
            "plugins": [{"id": "auto-router", "cost_tier": "max"}],
        });
        assert_eq!(
            ask(addr, &dearest).await,
            (200, "c".into()),
            "fused: {fused}"
        );
        catalog.replace(priced(&[("a", 9.0), ("b", 1.0), ("c", 5.0)]));
        assert_eq!(
            ask(addr, &dearest).await,
            (200, "a".into()),
            "fused: {fused}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_whose_model_was_withdrawn_is_routed_again() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0), ("c", 2.0)]));
        let layer = AutoRouteLayer::with_shared_catalog(catalog.clone())
            .session_affinity(SessionAffinity::new());
        let addr = serve_router(fused, layer, &up).await;
        let turn = |text: &str| {
            json!({"model": "auto", "session_id": "chat-1",
                   "messages": [{"role": "user", "content": text}]})
        };
        assert_eq!(ask(addr, &turn("hi")).await, (200, "a".into()));
        // The conversation stays on "a" though "b" became cheaper.
        catalog.replace(priced(&[("a", 0.1), ("b", 0.01), ("c", 2.0)]));
        assert_eq!(ask(addr, &turn("more")).await, (200, "a".into()));

        // "a" withdrawn: the conversation is routed as a new one, and stays on its new model.
        catalog.replace(priced(&[("b", 1.0), ("c", 0.5)]));
        assert_eq!(ask(addr, &turn("again")).await, (200, "c".into()));
        catalog.replace(priced(&[("b", 0.01), ("c", 0.5)]));
        assert_eq!(ask(addr, &turn("and again")).await, (200, "c".into()));
        assert_eq!(up.models_received(), ["a", "a", "c", "c"], "fused: {fused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_before_a_replacement_completes_with_its_choice() {
    for fused in FORMS {
        let up = Upstream::start().await;
        up.set("a", Behavior::Delay(Duration::from_millis(300)));
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0)]));
        let addr = serve_router(
            fused,
            AutoRouteLayer::with_shared_catalog(catalog.clone()),
            &up,
        )
        .await;
        let in_flight = tokio::spawn(async move { ask(addr, &hi()).await });
        while up.models_received().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        catalog.replace(priced(&[("b", 1.0)]));
        assert_eq!(ask(addr, &hi()).await, (200, "b".into()), "fused: {fused}");
        let sent_before = in_flight.await.expect("no panic");
        assert_eq!(sent_before, (200, "a".into()), "fused: {fused}");
    }
}

/// An async policy that ranks the candidates it is given, cheapest first, once `release` is
/// notified: a decision that spans a replacement.
fn held_policy(
    entered: Arc<Notify>,
    release: Arc<Notify>,
    held: Arc<AtomicBool>,
) -> impl tower_llm_router::auto_route::AsyncRoutePolicy {
    async_policy_fn(move |_: &PromptInfo<'_>, candidates: &[&ModelProfile]| {
        let mut ids: Vec<(f64, Arc<str>)> = candidates
            .iter()
            .map(|m| (m.blended_price(), m.id.clone()))
            .collect();
        ids.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (entered, release, held) = (entered.clone(), release.clone(), held.clone());
        Box::pin(async move {
            if held.swap(false, Ordering::SeqCst) {
                entered.notify_one();
                release.notified().await;
            }
            let ids = ids.into_iter().map(|(_, id)| id).collect();
            Ok::<_, BoxError>(Ranking::new(ids, 0.5, Cow::Borrowed("cheapest")))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_spanning_a_replacement_is_taken_with_one_catalog() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let held = Arc::new(AtomicBool::new(true));
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0)]));
        let layer = AutoRouteLayer::with_shared_catalog(catalog.clone()).async_policy(held_policy(
            entered.clone(),
            release.clone(),
            held,
        ));
        let addr = serve_router(fused, layer, &up).await;
        let deciding = tokio::spawn(async move { ask(addr, &hi()).await });
        entered.notified().await;
        // The policy ranks the old catalog's "a" first; the decision must not check that
        // ranking against the new catalog, which no longer lists it (a 500).
        catalog.replace(priced(&[("b", 1.0)]));
        assert_eq!(ask(addr, &hi()).await, (200, "b".into()), "fused: {fused}");
        release.notify_one();
        let decided = deciding.await.expect("no panic");
        assert_eq!(decided, (200, "a".into()), "fused: {fused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_while_requests_run_leave_none_unanswered() {
    for fused in FORMS {
        let up = Upstream::start().await;
        let catalog = SharedCatalog::new(priced(&[("a", 0.1), ("b", 1.0)]));
        let layer = AutoRouteLayer::with_shared_catalog(catalog.clone())
            .candidates(["a", "b", "c"])
            .session_affinity(SessionAffinity::new());
        let addr = serve_router(fused, layer, &up).await;
        let replacing = tokio::spawn(async move {
            for i in 0..200 {
                let next = match i % 3 {
                    0 => priced(&[("b", 1.0), ("c", 0.2), ("x", 0.01)]),
                    1 => priced(&[("a", 0.1), ("b", 1.0)]),
                    _ => priced(&[("c", 3.0), ("a", 0.3)]),
                };
                catalog.replace(next);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..120 {
            requests.spawn(async move {
                let body = json!({"model": "auto", "session_id": format!("chat-{}", i % 7),
                                  "messages": [{"role": "user", "content": "hi"}]});
                let (status, model) = ask(addr, &body).await;
                assert_eq!(status, 200, "fused: {fused}");
                assert!(["a", "b", "c"].contains(&&*model), "{model}");
            });
        }
        assert_eq!(join_all(requests).await, 120);
        replacing.await.expect("no panic");
        assert_eq!(up.received().len(), 120, "fused: {fused}");
    }
}
