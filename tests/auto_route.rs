//! AutoRouteLayer end to end: AutoRoute -> Fallback -> Buffer -> hyper-util client over real
//! loopback sockets against the scripted upstream. The behaviour's cases are shared with
//! `tests/auto_route_in_fallback.rs` (`support/auto_route_cases.rs`); the cases below are
//! about the two layers as separate layers.

mod support;

macro_rules! stack {
    ($auto:expr, $up:expr) => {
        stacked!($auto, $up)
    };
    ($auto:expr, $fallback:expr, $up:expr) => {
        stacked!($auto, $fallback, $up)
    };
}

include!("support/auto_route_cases.rs");

#[tokio::test]
async fn the_decision_is_a_request_extension_for_the_layers_below() {
    let up = Upstream::start().await;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(AutoRouteLayer::new(catalog()))
        .map_request(move |req: http::Request<tower_llm_router::RouterBody>| {
            *seen_in.lock().unwrap() = req.extensions().get::<RouteDecision>().cloned();
            req
        })
        .layer(FallbackLayer::new())
        .buffer(8)
        .service(routed_client(up.addr, vec![]));
    let res = svc
        .oneshot(chat(&up.url(PATH), &user("hi").to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let decision = seen.lock().unwrap().clone().unwrap();
    assert_eq!(model_header(&res), &*decision.chosen);
}

/// AutoRouteLayer alone, a request that arrived chunked: the rewritten body goes upstream with
/// its own `Content-Length` and without the caller's `Transfer-Encoding` (never both); a body
/// it does not rewrite goes with the caller's framing, as it came.
#[tokio::test]
async fn a_chunked_request_is_reframed_only_when_its_body_is_rewritten() {
    use http_body_util::StreamBody;
    let up = Upstream::start().await;
    let chunked = |body: &'static str| {
        let (head, tail) = body.split_at(body.len() / 2);
        let frames = futures::stream::iter([head, tail].map(|part| {
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(
                part.as_bytes(),
            )))
        }));
        http::Request::post(up.url(PATH))
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(StreamBody::new(frames))
            .unwrap()
    };
    let alone = || {
        ServiceBuilder::new()
            .layer(AutoRouteLayer::new(catalog()))
            // A rejection needs a body type it can write into.
            .map_response(|res: http::Response<hyper::body::Incoming>| {
                res.map(tower_llm_router::body::ResponseBody::inner)
            })
            .service(routed_client(up.addr, vec![]))
    };
    let auto = r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let res = alone().oneshot(chunked(auto)).await.unwrap();
    assert_eq!(res.status(), 200);
    let concrete = r#"{"model":"mid","messages":[{"role":"user","content":"hi"}]}"#;
    let res = alone().oneshot(chunked(concrete)).await.unwrap();
    assert_eq!(res.status(), 200);

    let received = up.received();
    let rewritten = &received[0];
    assert_ne!(rewritten.model.as_deref(), Some("auto"));
    assert_eq!(
        rewritten.headers["content-length"],
        rewritten.body.len().to_string().as_str()
    );
    assert!(rewritten.headers.get("transfer-encoding").is_none());
    let untouched = &received[1];
    assert_eq!(&untouched.body[..], concrete.as_bytes());
    assert_eq!(untouched.headers["transfer-encoding"], "chunked");
    assert!(untouched.headers.get("content-length").is_none());
}

/// A long Armenian prompt (about two `cl100k_base` tokens per letter, where the estimate once
/// counted one) that overflows the small model's window with the completion reserve: it is
/// left out of the ranking, and the upstream never sees it asked for the prompt.
#[tokio::test]
async fn a_prompt_in_a_script_bpe_serves_poorly_is_kept_from_a_window_it_overflows() {
    use tiktoken_rs::cl100k_base_singleton;
    let sentence = "Երկար քննարկումից հետո անդամների մեծ մասը համաձայնեց, որ շենքը պետք է \
                    կառուցել գետի մոտ, որտեղ հեշտ է հասնել ավտոբուսով։ ";
    let prompt = sentence.repeat(15);
    let real = cl100k_base_singleton()
        .encode_with_special_tokens(&prompt)
        .len() as u64;
    let mini = catalog().get("mini").unwrap().context_window;
    assert!(
        real < mini && real + tower_llm_router::auto_route::DEFAULT_COMPLETION_RESERVE > mini,
        "{real} tokens: the prompt alone fits, not with the completion reserve"
    );
    let up = Upstream::start().await;
    let (status, decision, attempts, _) =
        send(AutoRouteLayer::new(catalog()), &up, user(&prompt)).await;
    assert_eq!(status, 200);
    let decision = decision.unwrap();
    assert!(
        !decision.ranking.iter().any(|m| &**m == "mini"),
        "{:?} ({attempts})",
        decision.ranking
    );
    assert!(!up.models_received().iter().any(|m| m == "mini"));
}

/// A catalog entry with an empty id is left out when the catalog is built: the router never
/// chooses it, not even when every model is allowed (the cheapest, it would be first), and
/// never sends `{"model":""}` upstream. A request's `allowed_models: [""]` is a 400 of its own
/// (an empty pattern is refused).
#[tokio::test]
async fn a_catalog_entry_with_an_empty_id_is_never_chosen() {
    let up = Upstream::start().await;
    let catalog = Catalog::from_profiles([
        ModelProfile::new("", 4_000, 0.01, 0.01),
        ModelProfile::new("mini", 4_000, 0.1, 0.4),
    ]);
    assert_eq!(catalog.len(), 1);
    assert!(catalog.get("").is_none());
    let body = |allowed: &str| {
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
            "plugins": [{"id": "auto-router", "allowed_models": [allowed]}]})
    };
    let (status, decision, _, error) =
        send(AutoRouteLayer::new(catalog.clone()), &up, body("*")).await;
    assert_eq!(status, 200, "{error}");
    assert_eq!(&*decision.unwrap().chosen, "mini");
    assert_eq!(up.models_received(), ["mini"]);
    let up = Upstream::start().await;
    let (status, _, _, error) = send(AutoRouteLayer::new(catalog), &up, body("")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_plugin");
    assert!(up.received().is_empty());
}
