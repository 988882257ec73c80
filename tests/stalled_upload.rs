//! A client that stalls its request upload must not hold a concurrency limit (or a `Buffer`
//! slot) below the routing layers: the layers read the whole body before the first attempt,
//! and the other clients' requests go on meanwhile.
//!
//! Found by a production evaluation: with `ConcurrencyLimit(1)` below `FallbackLayer` (the
//! placement the docs recommend), client A sent its head and 10 bytes of body and stalled;
//! client B's request waited until A went away, as the readied inner service (and with it the
//! limit's permit) was held while A's body was read. Real sockets: a hyper server in front of
//! the layer stack, a hyper-util client to the scripted upstream below it, hyper-util clients.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::ErrInto;
use futures::{SinkExt, TryFutureExt};
use http::Request;
use http_body::Frame;
use http_body_util::StreamBody;
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_router::auto_route::{Catalog, ModelProfile};
use tower_llm_router::{AutoRouteLayer, BoxError, FallbackLayer, RouterBody};

const PATH: &str = "/v1/chat/completions";
const A_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"from a"}]}"#;
const B_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"from b"}]}"#;

/// Long enough for a loaded CI machine; the defect makes B wait as long as A stalls (forever).
const WAIT: Duration = Duration::from_secs(10);

fn catalog() -> Catalog {
    Catalog::from_profiles([
        ModelProfile::new("small", 16_000, 0.15, 0.6),
        ModelProfile::new("large", 200_000, 3.0, 15.0),
    ])
}

/// Client A's request: its head and its first 10 bytes of body go out at once; the rest only
/// when the returned sender sends it.
fn stalled_request(addr: SocketAddr) -> (Request<RouterBody>, mpsc::Sender<Bytes>) {
    let (mut tx, rx) = mpsc::channel::<Bytes>(4);
    let frames = futures::StreamExt::map(rx, |data| Ok::<_, Infallible>(Frame::data(data)));
    let request = Request::post(format!("http://{addr}{PATH}"))
        .header("content-type", "application/json")
        .body(RouterBody::new(StreamBody::new(frames)))
        .unwrap();
    tx.try_send(Bytes::from_static(&A_BODY.as_bytes()[..10]))
        .unwrap();
    (request, tx)
}

/// Sends the rest of A's body and waits for A's outcome.
async fn finish<T>(a: tokio::task::JoinHandle<T>, mut rest: mpsc::Sender<Bytes>) -> T {
    rest.send(Bytes::from_static(&A_BODY.as_bytes()[10..]))
        .await
        .unwrap();
    drop(rest);
    tokio::time::timeout(WAIT, a)
        .await
        .expect("A is answered once its body ended")
        .unwrap()
}

/// A stalls its upload; B must be answered while A is still stalled; then A sends the rest of
/// its body and is answered too (its first attempt waits for the limit anew).
async fn b_is_answered_while_a_stalls(addr: SocketAddr, up: &Upstream, layer: &str) {
    let before = up.received().len();
    let client = client();
    let (request, rest) = stalled_request(addr);
    let a = tokio::spawn(client.request(request));
    // A's head and first bytes are at the server and its body is being read (no answer yet).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !a.is_finished(),
        "{layer}: A answered before its body ended"
    );

    let b = client.request(chat(&format!("http://{addr}{PATH}"), B_BODY).map(RouterBody::new));
    let b = tokio::time::timeout(WAIT, b)
        .await
        .unwrap_or_else(|_| panic!("{layer}: B waited behind A's stalled upload"))
        .unwrap();
    assert_eq!(b.status(), 200, "{layer}");
    assert!(body_bytes(b.into_body()).await.starts_with(b"{"), "{layer}");
    assert!(
        !a.is_finished(),
        "{layer}: A answered before its body ended"
    );
    let received = up.received();
    assert_eq!(received.len(), before + 1, "{layer}: only B went upstream");
    assert_eq!(received[before].body, B_BODY.as_bytes(), "{layer}");

    let a = finish(a, rest).await.unwrap();
    assert_eq!(a.status(), 200, "{layer}");
    assert_eq!(attempts_header(&a), "gpt-4o=ok", "{layer}");
    let received = up.received();
    assert_eq!(received.len(), before + 2, "{layer}");
    assert_eq!(received[before + 1].body, A_BODY.as_bytes(), "{layer}");
}

/// Each layer over `ConcurrencyLimit(1)`, and `FallbackLayer` over `Buffer(1)`, served by hyper.
#[tokio::test]
async fn a_stalled_upload_holds_no_concurrency_limit_or_buffer_slot_below_the_layers() {
    let up = Upstream::start().await;
    let upstream = || routed_client(up.addr, vec![]);

    let fallback = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .concurrency_limit(1)
        .service(upstream());
    b_is_answered_while_a_stalls(serve(fallback, None).await, &up, "fallback").await;

    let over_buffer = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .buffer(1)
        .service(upstream());
    let addr = serve(over_buffer, None).await;
    b_is_answered_while_a_stalls(addr, &up, "fallback over buffer").await;

    let with_auto_route = ServiceBuilder::new()
        .layer(FallbackLayer::new().auto_route(AutoRouteLayer::new(catalog())))
        .concurrency_limit(1)
        .service(upstream());
    let addr = serve(with_auto_route, None).await;
    b_is_answered_while_a_stalls(addr, &up, "fallback with auto_route").await;

    // `AutoRouteLayer` alone sets no attempts header: the one checked comes from a
    // `FallbackLayer` below the limit.
    let auto_route = ServiceBuilder::new()
        .layer(AutoRouteLayer::new(catalog()))
        .concurrency_limit(1)
        .layer(FallbackLayer::new())
        .service(upstream());
    b_is_answered_while_a_stalls(serve(auto_route, None).await, &up, "auto_route").await;
}

/// An inner service whose readiness is granted `grants` times (shared by its clones), then
/// fails: a pool that closed, a buffer whose worker died.
#[derive(Clone)]
struct Grants<S> {
    inner: S,
    grants: Arc<AtomicUsize>,
}

impl<S> Grants<S> {
    fn new(inner: S, grants: usize) -> Self {
        Self {
            inner,
            grants: Arc::new(AtomicUsize::new(grants)),
        }
    }
}

impl<S> Service<Request<RouterBody>> for Grants<S>
where
    S: Service<Request<RouterBody>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ErrInto<S::Future, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let granted = self
            .grants
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if granted.is_err() {
            return Poll::Ready(Err("the pool is closed".into()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<RouterBody>) -> Self::Future {
        self.inner.call(req).err_into()
    }
}

/// The layer's `poll_ready` got the one readiness there is; a body that is whole at once goes
/// to that very service (the usual request pays for no second readiness). A body that keeps
/// the request waiting lets it go: the first attempt then needs a readiness of its own, and
/// its error is answered as a later attempt's would be (a 502 naming the model never asked,
/// with `answer_transport_errors`; nothing goes upstream).
#[tokio::test]
async fn after_a_stalled_upload_a_readiness_error_is_answered_as_a_later_attempts() {
    let up = Upstream::start().await;
    let layer = FallbackLayer::new().answer_transport_errors(true);
    let whole = ServiceBuilder::new()
        .layer(layer.clone())
        .service(Grants::new(routed_client(up.addr, vec![]), 1))
        .oneshot(chat(&up.url(PATH), A_BODY))
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(attempts_header(&whole), "gpt-4o=ok");
    assert_eq!(up.received().len(), 1);

    let stack = ServiceBuilder::new()
        .layer(layer)
        .service(Grants::new(routed_client(up.addr, vec![]), 1));
    let addr = serve(stack, None).await;
    let (request, rest) = stalled_request(addr);
    let a = tokio::spawn(client().request(request));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = finish(a, rest).await.unwrap();
    assert_eq!(a.status(), 502);
    assert!(a.headers().get("x-llm-router-attempts").is_none());
    let answer: serde_json::Value =
        serde_json::from_slice(&body_bytes(a.into_body()).await).unwrap();
    assert!(is_openai_error(&answer), "{answer}");
    assert_eq!(answer["error"]["code"], "upstream_unreachable");
    assert_eq!(
        answer["error"]["message"],
        "the inner service failed before the model `gpt-4o` could be asked: the pool is closed"
    );
    assert_eq!(up.received().len(), 1, "A never went upstream");
}

/// The same for `AutoRouteLayer`: a body whole at once is called on the readied service; after
/// a body that kept the request waiting, the readiness error ends the request, as the layer's
/// own `poll_ready` would.
#[tokio::test]
async fn after_a_stalled_upload_auto_route_ends_with_the_readiness_error() {
    let up = Upstream::start().await;
    // A `FallbackLayer` below turns hyper's body into one `AutoRouteLayer` answers with.
    let layer = AutoRouteLayer::new(catalog());
    let whole = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(FallbackLayer::new())
        .service(Grants::new(routed_client(up.addr, vec![]), 1))
        .oneshot(chat(&up.url(PATH), A_BODY))
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(up.received().len(), 1);

    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(FallbackLayer::new())
        .service(Grants::new(routed_client(up.addr, vec![]), 1));
    let (request, rest) = stalled_request(up.addr);
    let a = tokio::spawn(svc.oneshot(request));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = finish(a, rest).await.unwrap_err();
    assert_eq!(error.to_string(), "the pool is closed");
    assert_eq!(up.received().len(), 1, "A never went upstream");
}
