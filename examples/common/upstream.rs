//! The inner service of the examples: one pooled hyper-util client (HTTP and HTTPS, rustls on
//! the `ring` provider) that sends each attempt to the upstream of its model.
//!
//! `FallbackLayer` puts a [`RoutedModel`] extension on every attempt; this service looks the
//! model up in a table of [`Route`]s (base URL, bearer key, the id sent upstream) and falls
//! back to the default route for models it does not know.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tower_llm_router::classify::RedirectNotFollowed;
use tower_llm_router::fallback::RoutedModel;
use tower_llm_router::payload::ChatRequest;
use tower_llm_router::{BoxError, RouterBody};

/// The pooled client every attempt goes through.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, RouterBody>;

/// A rustls client configuration on the `ring` provider trusting the webpki (Mozilla) roots.
pub fn default_tls() -> Result<rustls::ClientConfig, BoxError> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_webpki_roots()
        .with_no_client_auth())
}

/// A rustls client configuration on the `ring` provider trusting `roots`.
pub fn tls_with_roots(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A rustls client configuration on the `ring` provider trusting the webpki (Mozilla) roots
/// for every upstream and, for each host given, the certificates given with it too (a private
/// CA): trusted for that host alone, so that one upstream's CA cannot vouch for another's
/// name. Hosts are as in the upstream's URL (`llm.internal`, `10.0.0.7`, `[::1]`). Without
/// any, [`default_tls`].
pub fn tls_with_private_cas(
    cas: Vec<(String, Vec<CertificateDer<'static>>)>,
) -> Result<rustls::ClientConfig, BoxError> {
    if cas.is_empty() {
        return default_tls();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let public = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut hosts: Vec<(String, rustls::RootCertStore)> = Vec::new();
    for (host, certificates) in cas {
        let host = host_name(&host)?;
        let at = match hosts.iter().position(|(known, _)| *known == host) {
            Some(at) => at,
            None => {
                hosts.push((host, public.clone()));
                hosts.len() - 1
            }
        };
        for certificate in certificates {
            hosts[at].1.add(certificate)?;
        }
    }
    let verifier = |roots: rustls::RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
    };
    let hosts = hosts
        .into_iter()
        .map(|(host, roots)| Ok((host, verifier(roots)?)))
        .collect::<Result<_, BoxError>>()?;
    let verifier = PrivateCas {
        public: verifier(public)?,
        hosts,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A URL's host as rustls names the server (an IPv6 address without its brackets, as
/// hyper-rustls gives it), in lower case.
fn host_name(host: &str) -> Result<String, BoxError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host)?;
    Ok(name.to_str().to_ascii_lowercase())
}

/// The public roots' verifier for every upstream, and one trusting a private CA too for each
/// host that has one. Chosen per handshake, by the name the connection was opened to.
#[derive(Debug)]
struct PrivateCas {
    public: Arc<WebPkiServerVerifier>,
    hosts: Vec<(String, Arc<WebPkiServerVerifier>)>,
}

impl ServerCertVerifier for PrivateCas {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = server_name.to_str();
        let verifier = self
            .hosts
            .iter()
            .find(|(host, _)| host.eq_ignore_ascii_case(&name))
            .map_or(&self.public, |(_, verifier)| verifier);
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The signatures are checked alike whatever the roots: the public verifier's.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.public
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.public
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.public.supported_verify_schemes()
    }
}

/// How long [`https_client`] waits for a TCP connection to an upstream: a provider's API accepts
/// one within milliseconds, so an attempt still connecting after this fails (as downtime: the
/// fallback layer moves on) instead of waiting for the operating system's own timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One client for HTTP and HTTPS upstreams: pooled, `TCP_NODELAY`, HTTP/1.1 and HTTP/2 (ALPN),
/// connections opened within [`CONNECT_TIMEOUT`].
pub fn https_client(tls: rustls::ClientConfig) -> HttpsClient {
    https_client_with_connect_timeout(tls, CONNECT_TIMEOUT)
}

/// [`https_client`] with another connect timeout (the TCP connection; the TLS handshake and
/// the answer are the fallback layer's `headers_timeout`).
pub fn https_client_with_connect_timeout(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

/// Where one model's attempts go.
#[derive(Clone)]
pub struct Route {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without a trailing `/`, e.g. `/api/v1`.
    prefix: Arc<str>,
    /// What goes upstream as credentials.
    credentials: Credentials,
    /// The id sent upstream when it differs from the routing id.
    upstream_model: Option<Arc<str>>,
    /// The `Host` header for this upstream, built once (hyper-util would format it per request).
    host: HeaderValue,
    /// The upstream URIs of the paths the gateway routes ([`CHAT_COMPLETIONS`], then
    /// [`RESPONSES`]), built once: `join`ed for every request, each cost an allocation.
    routed: [Uri; ROUTED_PATHS.len()],
}

impl Route {
    /// A route to an OpenAI-compatible base URL such as `https://openrouter.ai/api/v1`. A URL
    /// with a user or password (`https://user:pass@host/v1`) is refused: they would go into
    /// the `Host` header, the startup log and `Debug` (and never reach the upstream as
    /// credentials); the error does not repeat them.
    pub fn new(base_url: &str) -> Result<Self, String> {
        if let Cow::Owned(shown) = without_userinfo(base_url) {
            let shown = without_query(&shown);
            return Err(format!(
                "upstream URL {shown:?} has a user or password before `@`: not supported (give \
                 the key with `api_key_env`)"
            ));
        }
        // Errors show the URL without its query, where providers take keys (`?key=`).
        let shown = without_query(base_url);
        let uri: Uri = base_url
            .parse()
            .map_err(|e| format!("invalid upstream URL {shown:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream URL {shown:?} has no scheme (http:// or https://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "upstream URL {shown:?}: only http and https are supported"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream URL {shown:?} has no host"))?;
        // A port written out must be one a connection can be opened to (the URI parser takes
        // any digits).
        let port = authority.as_str().rsplit_once(':').map(|(_, port)| port);
        if let Some(port) = port.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            if !port.parse::<u16>().is_ok_and(|p| p != 0) {
                return Err(format!(
                    "upstream URL {shown:?}: port {port} is not a TCP port"
                ));
            }
        }
        if uri.query().is_some() {
            return Err(format!(
                "upstream URL {shown:?} must not have a query (give a key with `api_key_env`)"
            ));
        }
        let prefix = uri.path().trim_end_matches('/');
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| format!("upstream URL {shown:?}: the host is not a header value"))?;
        let [chat, responses] = ROUTED_PATHS.map(|path| {
            join(&scheme, &authority, prefix, below_v1(path), None)
                .map_err(|e| format!("upstream URL {shown:?}: {e}"))
        });
        let routed = [chat?, responses?];
        Ok(Self {
            scheme,
            authority,
            prefix: Arc::from(prefix),
            credentials: Credentials::Caller,
            upstream_model: None,
            host,
            routed,
        })
    }

    /// Sends `Authorization: Bearer <key>` instead of the caller's.
    pub fn bearer(mut self, key: &str) -> Result<Self, String> {
        let mut value = HeaderValue::try_from(format!("Bearer {key}"))
            .map_err(|_| "the API key is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        self.credentials = Credentials::Key(value);
        Ok(self)
    }

    /// Sends none of the caller's credentials (headers, or a key in the query): for an upstream
    /// other than the one the caller's key was meant for (a fallback chain may span providers;
    /// one provider's key must not reach another). A key set with [`bearer`](Self::bearer)
    /// stays.
    pub fn without_caller_credentials(mut self) -> Self {
        if matches!(self.credentials, Credentials::Caller) {
            self.credentials = Credentials::Nothing;
        }
        self
    }

    /// Sends this id upstream instead of the routing id.
    pub fn upstream_model(mut self, id: &str) -> Self {
        self.upstream_model = Some(Arc::from(id));
        self
    }

    /// The host of the base URL (`[::1]` for an IPv6 address).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// Whether the base URL is `https`: the only scheme whose certificates are checked.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The base URL, for messages.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.prefix)
    }

    /// The upstream URI for a request path: `/v1/chat/completions` on a base of
    /// `https://openrouter.ai/api/v1` is `https://openrouter.ai/api/v1/chat/completions`,
    /// `/v1/responses` is `https://openrouter.ai/api/v1/responses`. The query goes along, less
    /// its credentials (`?key=`) on a route that must not send the caller's.
    fn uri_for(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path = uri.path();
        if uri.query().is_none() {
            // Chat first: its cost is one comparison, as before there was a second path.
            for (routed, built) in ROUTED_PATHS.iter().zip(&self.routed) {
                if path == *routed {
                    return Ok(built.clone());
                }
            }
        }
        let rest = below_v1(path);
        let query = uri.query().map(|query| Query {
            query,
            credentials: matches!(self.credentials, Credentials::Caller),
        });
        join(&self.scheme, &self.authority, &self.prefix, rest, query)
    }
}

/// A request's query on its way upstream.
#[derive(Clone, Copy)]
struct Query<'a> {
    query: &'a str,
    /// Whether its credential parameters go too.
    credentials: bool,
}

/// Query parameters that carry a key (compared without regard to case, `%`-escapes decoded):
/// Gemini's `key`, and the names other APIs and proxies take a key or token in. Others, such
/// as Azure's `api-version`, go on.
const CREDENTIAL_PARAMS: [&str; 10] = [
    "key",
    "api_key",
    "api-key",
    "apikey",
    "x-api-key",
    "x-goog-api-key",
    "access_token",
    "token",
    "auth",
    "authorization",
];

/// Whether a query parameter (`name=value`) carries a credential.
fn is_credential_param(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(name, _)| name);
    if !name.contains('%') {
        return CREDENTIAL_PARAMS
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known));
    }
    let decoded = percent_decoded(name);
    CREDENTIAL_PARAMS
        .iter()
        .any(|known| decoded.eq_ignore_ascii_case(known.as_bytes()))
}

/// `text` with its `%XX` escapes decoded (a malformed one is kept as it is).
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// `url` with what stands before an `@` in its authority (a user and password) replaced by
/// `<redacted>`; the URL itself (borrowed) when it has none.
fn without_userinfo(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority = &url[start..];
    let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
    match authority.rfind('@') {
        Some(at) => Cow::Owned(format!("{}<redacted>{}", &url[..start], &url[start + at..])),
        None => Cow::Borrowed(url),
    }
}

/// `url` with its query, if any, replaced by `?…`.
fn without_query(url: &str) -> Cow<'_, str> {
    match url.find('?') {
        Some(at) => Cow::Owned(format!("{}?…", &url[..at])),
        None => Cow::Borrowed(url),
    }
}

/// The chat-completions path the gateway routes (and whose upstream URI each route builds
/// once).
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// The OpenAI Responses API path the gateway routes (and whose upstream URI each route builds
/// once).
pub const RESPONSES: &str = "/v1/responses";

/// The paths whose upstream URIs each route builds once, the most common first.
const ROUTED_PATHS: [&str; 2] = [CHAT_COMPLETIONS, RESPONSES];

/// What of a request path goes after a base URL: the path less its `/v1` (the base URL names
/// the version, e.g. `https://openrouter.ai/api/v1`), or the path as it is without one.
fn below_v1(path: &str) -> &str {
    match path.strip_prefix("/v1") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

/// `scheme://authority{prefix}{rest}[?query]`.
fn join(
    scheme: &Scheme,
    authority: &Authority,
    prefix: &str,
    rest: &str,
    query: Option<Query<'_>>,
) -> Result<Uri, http::Error> {
    let mut pq = String::with_capacity(prefix.len() + rest.len() + 32);
    pq.push_str(prefix);
    pq.push_str(rest);
    if pq.is_empty() {
        pq.push('/');
    }
    match query {
        Some(Query {
            query,
            credentials: true,
        }) => {
            pq.push('?');
            pq.push_str(query);
        }
        Some(Query {
            query,
            credentials: false,
        }) => {
            let kept = query.split('&').filter(|param| !is_credential_param(param));
            for (i, param) in kept.enumerate() {
                pq.push(if i == 0 { '?' } else { '&' });
                pq.push_str(param);
            }
        }
        None => {}
    }
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(PathAndQuery::try_from(pq)?)
        .build()
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("base_url", &self.base_url())
            .field("credentials", &self.credentials)
            .field("upstream_model", &self.upstream_model)
            .finish()
    }
}

/// What a route sends upstream as credentials.
#[derive(Clone)]
enum Credentials {
    /// The caller's own headers and query, forwarded as they came.
    Caller,
    /// `Authorization: Bearer <key>` (marked sensitive) in place of the caller's credentials
    /// ([`CREDENTIAL_HEADERS`], [`CREDENTIAL_PARAMS`]).
    Key(HeaderValue),
    /// No credentials at all: the caller's are removed.
    Nothing,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credentials::Caller => "the caller's",
            Credentials::Key(_) => "Bearer <redacted>",
            Credentials::Nothing => "none",
        })
    }
}

/// The headers OpenAI-compatible APIs take a key in: `Authorization` (OpenAI, OpenRouter),
/// `api-key` (Azure OpenAI), `x-api-key` (Anthropic), `x-goog-api-key` (Gemini). The client's
/// `Proxy-Authorization` never goes upstream at all ([`REQUEST_HOP_BY_HOP`]).
static CREDENTIAL_HEADERS: Names =
    Names::new(&["authorization", "api-key", "x-api-key", "x-goog-api-key"]);

/// What a request's headers say of the client's connection to the gateway, never forwarded:
/// the hop-by-hop headers (RFC 9110 §7.6.1, and those its `Connection` names: [`strip`]),
/// `Proxy-Authorization` (credentials for a proxy on the client's side, RFC 9110 §11.7.4) and
/// `Trailer` (the body goes upstream buffered, without the client's trailers).
static REQUEST_HOP_BY_HOP: Names = Names::new(&[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
]);

/// What an answer's headers say of the upstream's connection to the gateway, never forwarded to
/// the client: the hop-by-hop headers (and those its `Connection` names), and the upstream's
/// `Proxy-Authenticate` / `Proxy-Authentication-Info` (the upstream is no proxy of the client's).
/// `Transfer-Encoding` goes too: hyper frames the client's answer itself. `Trailer` stays: the
/// answer's trailers are relayed, and hyper sends only those it declares. So do the upstream's
/// cookies (`Set-Cookie`, and the obsolete `Set-Cookie2`): a provider's session or
/// bot-management cookies are set for the caller's connection to it, not for the client's.
static RESPONSE_NOT_RELAYED: Names = Names::new(&[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "set-cookie",
    "set-cookie2",
    "te",
    "transfer-encoding",
    "upgrade",
]);

/// Header names (lower case, as `HeaderName::as_str` gives them) for [`strip`], with a bit for
/// each of their lengths, computed at compile time: a `const` array of `HeaderName`s was built
/// and dropped at every use, and the lengths folded on every call (callgrind: about 180
/// instructions per request).
struct Names {
    names: &'static [&'static str],
    /// `length_bit` of every name, or-ed.
    lengths: u64,
}

impl Names {
    const fn new(names: &'static [&'static str]) -> Self {
        let mut lengths = 0;
        let mut i = 0;
        while i < names.len() {
            // A name with an upper-case letter would never match (`as_str` is lower case).
            let bytes = names[i].as_bytes();
            let mut j = 0;
            while j < bytes.len() {
                assert!(
                    !bytes[j].is_ascii_uppercase(),
                    "header names are lower case"
                );
                j += 1;
            }
            lengths |= length_bit(bytes.len());
            i += 1;
        }
        Self { names, lengths }
    }

    /// Whether `name` is one of the names. Most names have a length none of them has, and are
    /// passed after one bit test.
    fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        length_bit(name.len()) & self.lengths != 0 && self.names.contains(&name)
    }
}

/// Removes `names` from `headers`, and when `Connection` is one of them, the headers it names
/// (RFC 9110 §7.6.1: `Connection: x-int` makes `X-Int` hop-by-hop). A request rarely has any of
/// them: one pass over its few names is cheaper than hashing every name of the list for a
/// lookup, and a name whose length none of `names` has (most of them) is passed after one bit
/// test instead of a comparison with each (callgrind: 452 -> 275 instructions per request for
/// the calls on a request and its answer). Only a `Connection` header that names more than
/// `close` or `keep-alive` costs more.
fn strip(headers: &mut http::HeaderMap, names: &Names) {
    while let Some(found) = headers.keys().find(|name| names.contains(name)).cloned() {
        if found == header::CONNECTION {
            remove_connection_options(headers);
        }
        headers.remove(found);
    }
}

/// Removes the headers the `Connection` header(s) name, leaving `Connection` itself.
fn remove_connection_options(headers: &mut http::HeaderMap) {
    let usual = |option: &[u8]| {
        option.eq_ignore_ascii_case(b"close") || option.eq_ignore_ascii_case(b"keep-alive")
    };
    // Copies of the values (a reference count each, no allocation when none names anything
    // but the usual options), so that the headers can be removed.
    let values: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter(|value| connection_options(value).any(|option| !usual(option)))
        .cloned()
        .collect();
    for value in &values {
        for option in connection_options(value).filter(|option| !usual(option)) {
            if let Ok(name) = HeaderName::from_bytes(option) {
                if name != header::CONNECTION {
                    headers.remove(name);
                }
            }
        }
    }
}

/// The options of a `Connection` header value: the comma-separated names, trimmed.
fn connection_options(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|option| !option.is_empty())
}

/// A bit for a name's length (the lengths of 63 and more share the last one).
const fn length_bit(len: usize) -> u64 {
    1 << if len < 63 { len } else { 63 }
}

struct Inner {
    client: HttpsClient,
    default: Route,
    routes: HashMap<Arc<str>, Route>,
}

/// The routing upstream service: `Service<Request<RouterBody>>` answering hyper's `Incoming`.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl Upstream {
    /// Sends models listed in `routes` to their route, every other model to `default`.
    pub fn new(client: HttpsClient, default: Route, routes: HashMap<Arc<str>, Route>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                default,
                routes,
            }),
        }
    }

    /// The route of `model`.
    pub fn route(&self, model: Option<&str>) -> &Route {
        model
            .and_then(|m| self.inner.routes.get(m))
            .unwrap_or(&self.inner.default)
    }

    /// Readies `req` for its route, in place (the request is not moved in and out).
    fn prepare(&self, req: &mut Request<RouterBody>) -> Result<(), BoxError> {
        let route = self.route(req.extensions().get::<RoutedModel>().map(|m| &*m.0));
        *req.uri_mut() = route.uri_for(req.uri())?;
        let headers = req.headers_mut();
        strip(headers, &REQUEST_HOP_BY_HOP);
        // The caller's `Host` names the gateway. Set here rather than left to hyper-util, which
        // would format it for every request.
        headers.insert(header::HOST, route.host.clone());
        match &route.credentials {
            Credentials::Caller => {}
            Credentials::Key(auth) => {
                strip(headers, &CREDENTIAL_HEADERS);
                headers.insert(header::AUTHORIZATION, auth.clone());
            }
            Credentials::Nothing => strip(headers, &CREDENTIAL_HEADERS),
        }
        // The body's bytes only for a route that rewrites them.
        if let Some(upstream_model) = &route.upstream_model {
            if let Some(bytes) = req.body().buffered_bytes() {
                let body = with_model(bytes, upstream_model)?;
                if let Some(len) = body.buffered_len() {
                    req.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                *req.body_mut() = body;
            }
        }
        Ok(())
    }
}

/// The body with its `model` replaced: the other bytes are the caller's.
fn with_model(bytes: Bytes, model: &str) -> Result<RouterBody, BoxError> {
    let request = ChatRequest::parse(bytes)?;
    Ok(RouterBody::from(
        request.splice().set_model(model).to_segments(),
    ))
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("default", &self.inner.default)
            .field("routes", &self.inner.routes)
            .finish()
    }
}

/// The future of [`Upstream`]: the client's future, or an error found before sending.
pub enum UpstreamFuture {
    Sending(hyper_util::client::legacy::ResponseFuture),
    Failed(Option<BoxError>),
}

impl Future for UpstreamFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            UpstreamFuture::Sending(fut) => {
                let mut result = std::task::ready!(Pin::new(fut).poll(cx));
                // Connection management and cookies are per hop: the caller's connection is
                // ours. (Stripped in place: the answer is moved once, not out and back in.)
                if let Ok(response) = &mut result {
                    if response.status().is_redirection() {
                        // Never followed (the request, the key with it, would go where the redirect
                        // says) nor passed on (the client would be sent to a provider's URL, past
                        // the gateway): the crate classes it as it classes the status.
                        return Poll::Ready(Err(Box::new(RedirectNotFollowed(response.status()))));
                    }
                    strip(response.headers_mut(), &RESPONSE_NOT_RELAYED);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            UpstreamFuture::Failed(error) => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "upstream future polled after completion".into()))),
        }
    }
}

impl tower::Service<Request<RouterBody>> for Upstream {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<RouterBody>) -> Self::Future {
        match self.prepare(&mut req) {
            Ok(()) => UpstreamFuture::Sending(self.inner.client.request(req)),
            Err(error) => UpstreamFuture::Failed(Some(error)),
        }
    }
}
