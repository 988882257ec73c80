//! Classifying the inner service's errors (no HTTP response at all).

use std::error::Error as StdError;
use std::io;

use super::ErrorClass;

/// How deep [`classify_error`] walks a `source()` chain.
const MAX_DEPTH: usize = 32;

/// Classifies an error of the inner service: a failure to get any response.
///
/// The `source()` chain is walked (an `io::Error`'s wrapped error too) and the first error the
/// classifier knows decides:
///
/// * `hyper::Error`: timeouts, incomplete, unexpected or unparsable messages, closed or
///   canceled connections, io, body read and write errors, HTTP/2 errors (a stream reset, a
///   `GOAWAY`), aborted body writes: [`Downtime`](ErrorClass::Downtime). Errors the caller
///   caused (`is_user`) are looked through.
/// * `hyper_util::client::legacy::Error`: looked through to its source (the connector's
///   `io::Error`, or a `hyper::Error`); a connect error without a known source is
///   `Downtime` by its message (`client error (Connect)`), unless the connector refused the
///   URI (below).
/// * `std::io::Error` of kind `ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`,
///   `NotConnected`, `AddrInUse`, `AddrNotAvailable`, `BrokenPipe`, `TimedOut`, `UnexpectedEof`,
///   `WriteZero` and `Interrupted`: `Downtime`.
/// * `tower::timeout::error::Elapsed` and `tokio::time::error::Elapsed`: `Downtime`.
/// * [`RedirectNotFollowed`]: as its status (a 301, 302, 303, 307 or 308 is `Downtime`,
///   another 3xx `Other`), as the redirect would be classed as a response.
/// * with the `reqwest` feature, `reqwest::Error`: a builder error is
///   [`Other`](ErrorClass::Other); a redirect error (a loop, too many redirects, one the
///   redirect policy refused) is `Downtime`, as a redirect not followed is (see the
///   [module docs](crate::classify)); an error made from a status is classed by that status; connect,
///   timeout, request, body and decode errors are `Downtime`.
///
/// An error nobody knows is `Downtime` when its messages look like a transport failure
/// (connection, timeout, reset, refused, closed, broken pipe, EOF, DNS or a failed address
/// lookup, unreachable, no route to host, network down, overloaded), else `Other`.
///
/// A URI the connector refuses before connecting ("invalid URL, scheme is not http" from
/// hyper-util's `build_http` given an `https` upstream or reqwest built without TLS,
/// hyper-rustls' "unsupported scheme", a "missing scheme") is `Other`, whatever error carries
/// it, though hyper-util and reqwest call it a connect error: the client is misconfigured, and
/// counted as `Downtime` it would charge every model's health. `Other` still triggers the
/// fallback by default: every class does.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_llm_router::classify::{classify_error, ErrorClass};
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(classify_error(&refused), ErrorClass::Downtime);
///
/// let invalid = io::Error::new(io::ErrorKind::InvalidInput, "bad header value");
/// assert_eq!(classify_error(&invalid), ErrorClass::Other);
/// ```
pub fn classify_error(error: &(dyn StdError + 'static)) -> ErrorClass {
    // Before the known errors: reqwest calls a URI its connector refused a connect error.
    if says_any(error, CONFIGURATION_WORDS) {
        return ErrorClass::Other;
    }
    if let Some(class) = sources(error).find_map(known) {
        return class;
    }
    if says_any(error, TRANSPORT_WORDS) {
        ErrorClass::Downtime
    } else {
        ErrorClass::Other
    }
}

fn next_source<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io_err) = err.downcast_ref::<io::Error>() {
        return io_err.get_ref().map(|inner| inner as _);
    }
    // Its variants are `#[error(transparent)]`: `source` skips the error each wraps (the
    // `reqwest::Error` whose kind and status say what failed).
    #[cfg(feature = "reqwest")]
    if let Some(wrapper) = err.downcast_ref::<reqwest_middleware::Error>() {
        return Some(match wrapper {
            reqwest_middleware::Error::Reqwest(inner) => inner,
            reqwest_middleware::Error::Middleware(inner) => inner.as_ref(),
        });
    }
    err.source()
}

/// Whether `error` or one of its sources is a timeout: an `io::Error` of kind `TimedOut`, a
/// hyper timeout, a tower / tokio `Elapsed`, or (with the `reqwest` feature) a reqwest timeout.
pub(crate) fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    sources(error).any(|err| {
        err.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
            || err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            || err.is::<tower::timeout::error::Elapsed>()
            || err.is::<tokio::time::error::Elapsed>()
            || is_reqwest_timeout(err)
    })
}

/// Whether `error` is, or was caused by, a client's redirect error (reqwest's: a loop, too many
/// redirects, one its policy refused): a redirect that fails the same way each time it is
/// asked again.
pub(crate) fn is_redirect_error(error: &(dyn StdError + 'static)) -> bool {
    sources(error).any(|err| err.is::<RedirectNotFollowed>() || is_reqwest_redirect(err))
}

/// Whether `err` is reqwest's redirect error (hyper-util's client follows no redirect).
fn is_reqwest_redirect(err: &(dyn StdError + 'static)) -> bool {
    #[cfg(feature = "reqwest")]
    return err
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_redirect);
    #[cfg(not(feature = "reqwest"))]
    {
        let _ = err;
        false
    }
}

/// reqwest's timeouts (`timeout`, `read_timeout`) carry a private `TimedOut` source that only
/// reqwest's own predicate can see.
#[cfg(feature = "reqwest")]
fn is_reqwest_timeout(err: &(dyn StdError + 'static)) -> bool {
    err.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
}

#[cfg(not(feature = "reqwest"))]
fn is_reqwest_timeout(_: &(dyn StdError + 'static)) -> bool {
    false
}

/// `error` and its sources, at most [`MAX_DEPTH`] of them. `io::Error::source` skips the error
/// it wraps, so for an `io::Error` the wrapped error comes next.
pub(crate) fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&err| next_source(err)).take(MAX_DEPTH)
}

fn known(err: &(dyn StdError + 'static)) -> Option<ErrorClass> {
    if let Some(err) = err.downcast_ref::<hyper::Error>() {
        // Every kind but the caller's own is the exchange with the upstream failing: parse,
        // incomplete or unexpected messages, cancel, closed channels, io, body reads and
        // writes, shutdown, timeouts and HTTP/2 errors (a `RST_STREAM`, a `GOAWAY`), which
        // have no predicate of their own.
        let broken = !err.is_user() || err.is_body_write_aborted();
        return broken.then_some(ErrorClass::Downtime);
    }
    if let Some(err) = err.downcast_ref::<io::Error>() {
        return io_kind_is_transport(err.kind()).then_some(ErrorClass::Downtime);
    }
    if err.is::<tower::timeout::error::Elapsed>() || err.is::<tokio::time::error::Elapsed>() {
        return Some(ErrorClass::Downtime);
    }
    if let Some(RedirectNotFollowed(status)) = err.downcast_ref() {
        return Some(super::response::class_for_status(*status).unwrap_or(ErrorClass::Other));
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = err.downcast_ref::<reqwest::Error>() {
        return reqwest_class(err);
    }
    None
}

/// An upstream's redirect (3xx) that the inner service turned into an error rather than follow
/// it (the request, and the key with it, would go where the `Location` says) or pass it on (the
/// client would be sent past the service to a provider's URL). Return it from the inner
/// service, and [`classify_error`] classes it as the layer classes a redirect it is answered
/// with (301, 302, 303, 307 and 308 are [`Downtime`](ErrorClass::Downtime), so that an
/// upstream that keeps redirecting cools its model down), and
/// [`FallbackLayer::retries`](crate::FallbackLayer::retries) does not send it again to the
/// same URL. Its text names the status, not the `Location`: the layer's 502 quotes it.
///
/// ```
/// use http::StatusCode;
/// use tower_llm_router::classify::{classify_error, ErrorClass, RedirectNotFollowed};
///
/// let moved = RedirectNotFollowed(StatusCode::MOVED_PERMANENTLY);
/// assert_eq!(classify_error(&moved), ErrorClass::Downtime);
/// assert_eq!(
///     moved.to_string(),
///     "the upstream answered with a redirect (301 Moved Permanently), which is not followed"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectNotFollowed(pub http::StatusCode);

impl std::fmt::Display for RedirectNotFollowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the upstream answered with a redirect ({}), which is not followed",
            self.0
        )
    }
}

impl StdError for RedirectNotFollowed {}

#[cfg(feature = "reqwest")]
fn reqwest_class(err: &reqwest::Error) -> Option<ErrorClass> {
    if err.is_builder() {
        return Some(ErrorClass::Other);
    }
    // Redirects that never end (a loop, more than the policy allows), or one the policy
    // refused: the model is not reachable at its URL, as with a redirect not followed.
    if err.is_redirect() {
        return Some(ErrorClass::Downtime);
    }
    if let Some(status) = err.status().filter(|_| err.is_status()) {
        return super::response::class_for_status(status);
    }
    let transport = err.is_connect()
        || err.is_timeout()
        || err.is_request()
        || err.is_body()
        || err.is_decode();
    transport.then_some(ErrorClass::Downtime)
}

fn io_kind_is_transport(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | AddrInUse
            | AddrNotAvailable
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | WriteZero
            | Interrupted
    )
}

/// Words that mark an unknown error's messages as a transport failure.
const TRANSPORT_WORDS: &[&str] = &[
    "connection",
    "connect error",
    "(connect)",
    "timed out",
    "timeout",
    "deadline",
    "reset",
    "refused",
    "broken pipe",
    "closed",
    "eof",
    "dns",
    "unreachable",
    // io kinds newer than the MSRV (`HostUnreachable`, `NetworkDown`) by their OS messages.
    "no route to host",
    "network is down",
    "dead network",
    // A name that does not resolve: std's `Uncategorized` lookup error, Windows' message.
    "lookup address",
    "name resolution",
    "no such host",
    "overloaded",
    "unavailable",
];

/// Words of a connector that refuses the URI before connecting (hyper-util's `HttpConnector`
/// given an `https` URI, hyper-rustls' `https_only` given an `http` one): the client's
/// configuration, though hyper-util reports it as a connect error.
const CONFIGURATION_WORDS: &[&str] = &["invalid url", "unsupported scheme", "missing scheme"];

/// Whether the messages of `error` or of its sources hold one of `words`.
fn says_any(error: &(dyn StdError + 'static), words: &[&str]) -> bool {
    sources(error).any(|err| {
        let text = err.to_string().to_ascii_lowercase();
        words.iter().any(|word| text.contains(word))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::time::Duration;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<dyn StdError + Send + Sync>>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn io_kinds() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::TimedOut,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::NotConnected,
        ] {
            assert_eq!(
                classify_error(&io::Error::from(kind)),
                ErrorClass::Downtime,
                "{kind:?}"
            );
        }
        let denied = io::Error::new(io::ErrorKind::PermissionDenied, "no access to key file");
        assert_eq!(classify_error(&denied), ErrorClass::Other);
    }

    #[test]
    fn walks_source_chain_and_io_wrapped_errors() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let outer = Wrapper(
            "request failed",
            Some(Box::new(Wrapper("inner", Some(Box::new(reset))))),
        );
        assert_eq!(classify_error(&outer), ErrorClass::Downtime);

        // io::Error::other wrapping a tower timeout: found through get_ref.
        let wrapped = io::Error::other(tower::timeout::error::Elapsed::new());
        assert_eq!(classify_error(&wrapped), ErrorClass::Downtime);
    }

    /// A status error of reqwest, through reqwest-middleware's wrapper (what a middleware
    /// after the fallback returns with `error_for_status`), or a middleware's own error around
    /// one: the status decides, not the message.
    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_errors_inside_reqwest_middleware_errors_are_read() {
        let status_error = |status: u16| {
            let response = http::Response::builder()
                .status(status)
                .body(Vec::<u8>::new())
                .unwrap();
            reqwest::Response::from(response)
                .error_for_status()
                .unwrap_err()
        };
        let wrapped = reqwest_middleware::Error::Reqwest(status_error(429));
        assert_eq!(classify_error(&wrapped), ErrorClass::RateLimited);
        let in_middleware = reqwest_middleware::Error::middleware(Wrapper(
            "retries exhausted",
            Some(Box::new(reqwest_middleware::Error::Reqwest(status_error(
                503,
            )))),
        ));
        assert_eq!(classify_error(&in_middleware), ErrorClass::Downtime);
    }

    /// A connector of one's own (tokio's `TcpStream::connect`, `lookup_host`) fails with a bare
    /// `io::Error`: an unreachable host or a down network (kinds newer than the crate's MSRV),
    /// or a name that does not resolve (std's `Uncategorized`, named by its message only).
    #[test]
    fn unreachable_hosts_and_failed_lookups_are_downtime() {
        #[cfg(target_os = "linux")]
        for errno in [
            113, /* EHOSTUNREACH */
            100, /* ENETDOWN */
            101, /* ENETUNREACH */
        ] {
            let err = io::Error::from_raw_os_error(errno);
            assert_eq!(classify_error(&err), ErrorClass::Downtime, "{err}");
        }
        for message in [
            "failed to lookup address information: Name or service not known",
            "failed to lookup address information: Temporary failure in name resolution",
            "failed to lookup address information: nodename nor servname provided, or not known",
            "No such host is known. (os error 11001)",
        ] {
            let err = io::Error::other(message);
            assert_eq!(classify_error(&err), ErrorClass::Downtime, "{message}");
        }
    }

    #[test]
    fn unknown_errors_use_their_messages() {
        assert_eq!(
            classify_error(&Wrapper("upstream connection lost", None)),
            ErrorClass::Downtime
        );
        assert_eq!(
            classify_error(&Wrapper("buffer's worker closed unexpectedly", None)),
            ErrorClass::Downtime
        );
        assert_eq!(
            classify_error(&Wrapper("invalid uri", None)),
            ErrorClass::Other
        );
    }

    #[tokio::test]
    async fn timeouts() {
        let tower_elapsed = tower::timeout::error::Elapsed::new();
        assert_eq!(classify_error(&tower_elapsed), ErrorClass::Downtime);

        let tokio_elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(classify_error(&tokio_elapsed), ErrorClass::Downtime);

        // A real tower::timeout service around a service that never answers.
        use tower::{Service, ServiceExt};
        let mut svc = tower::timeout::Timeout::new(
            tower::service_fn(|_: ()| std::future::pending::<Result<(), io::Error>>()),
            Duration::from_millis(1),
        );
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(classify_error(&*err), ErrorClass::Downtime);

        // The same errors are timeouts, wrapped or not; other transport errors are not.
        assert!(is_timeout(&tower_elapsed) && is_timeout(&tokio_elapsed) && is_timeout(&*err));
        let wrapped = io::Error::other(tower::timeout::error::Elapsed::new());
        assert!(is_timeout(&wrapped));
        assert!(is_timeout(&io::Error::from(io::ErrorKind::TimedOut)));
        assert!(!is_timeout(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!is_timeout(&io::Error::other("slow")));
    }

    #[tokio::test]
    async fn hyper_util_connection_refused() {
        use http_body_util::Empty;
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://127.0.0.1:{port}/v1/chat/completions")
            .parse()
            .unwrap();
        let err = client.get(uri).await.unwrap_err();
        assert!(err.is_connect());
        assert_eq!(classify_error(&err), ErrorClass::Downtime);
    }

    /// A client that cannot speak the upstream URI's scheme (hyper-util's `build_http` given an
    /// `https` upstream, hyper-rustls' `https_only` given an `http` one) fails every attempt
    /// inside its connector, before any connection: a configuration error, not an upstream that
    /// is down, though hyper-util reports it as `client error (Connect)`.
    #[tokio::test]
    async fn a_uri_the_connector_refuses_is_not_downtime() {
        use http_body_util::Empty;
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let err = plain
            .get("https://127.0.0.1:9/v1/chat/completions".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_connect());
        assert_eq!(classify_error(&err), ErrorClass::Other);

        let _ = rustls::crypto::ring::default_provider().install_default();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_only()
            .enable_http1()
            .build();
        let tls_only = Client::builder(TokioExecutor::new()).build::<_, Empty<bytes::Bytes>>(https);
        let err = tls_only
            .get("http://127.0.0.1:9/v1/chat/completions".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_connect());
        assert_eq!(classify_error(&err), ErrorClass::Other);
    }

    /// reqwest without a TLS feature (as this crate depends on it) sends an `https` upstream
    /// through hyper-util's `HttpConnector`, which refuses it; reqwest calls that a connect
    /// error too.
    #[cfg(feature = "reqwest")]
    #[tokio::test]
    async fn a_uri_reqwest_cannot_connect_to_is_not_downtime() {
        let err = reqwest::Client::new()
            .post("https://127.0.0.1:9/v1/chat/completions")
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect());
        assert!(
            sources(&err).any(|e| e.to_string().contains("scheme is not http")),
            "reqwest was built with TLS: {err:?}"
        );
        assert_eq!(classify_error(&err), ErrorClass::Other);
    }

    /// A server that reads the request, answers `reply` and hangs up.
    async fn hang_up_after(reply: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(reply).await;
        });
        addr
    }

    #[tokio::test]
    async fn hyper_broken_responses() {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();

        // Half a status line: hyper's incomplete message, inside hyper-util's error.
        let addr = hang_up_after(b"HTTP/1.1 200").await;
        let err = client
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap_err();
        let hyper_err = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<hyper::Error>())
            .unwrap();
        assert!(hyper_err.is_incomplete_message());
        assert_eq!(classify_error(&err), ErrorClass::Downtime);

        // A body shorter than its Content-Length: a hyper body error over an UnexpectedEof.
        let addr = hang_up_after(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"id\"").await;
        let res = client
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        assert_eq!(classify_error(&err), ErrorClass::Downtime);
    }

    /// An HTTP/2 upstream that resets the stream (hyper's server sends `RST_STREAM` with
    /// `INTERNAL_ERROR` when its service fails): hyper's `Http2` error, which has no predicate of
    /// its own and whose h2 message names no transport word.
    #[tokio::test]
    async fn hyper_http2_stream_reset() {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let failing = hyper::service::service_fn(|_: http::Request<_>| async {
                Err::<http::Response<http_body_util::Empty<bytes::Bytes>>, _>(io::Error::other(
                    "handler failed",
                ))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), failing)
                .await;
        });
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let err = client
            .get(
                format!("http://{addr}/v1/chat/completions")
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap_err();
        let hyper_err = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<hyper::Error>())
            .unwrap();
        assert!(!hyper_err.is_user() && !hyper_err.is_closed());
        assert_eq!(classify_error(&err), ErrorClass::Downtime);
    }

    #[cfg(feature = "reqwest")]
    #[tokio::test]
    async fn reqwest_errors() {
        let builder_err = reqwest::Client::new().get("not a url").build().unwrap_err();
        assert_eq!(classify_error(&builder_err), ErrorClass::Other);

        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify_error(&err), ErrorClass::Downtime);
    }
}
