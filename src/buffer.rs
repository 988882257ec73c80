//! Buffering a routable request body once, with a limit.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::Body;

use crate::body::RouterBody;
use crate::buffer_budget::{hold, over_budget, BufferBudget, Reservation};
use crate::ApiError;

/// The layers' default body limit (`max_body_bytes`): 32 MiB, enough for long multimodal
/// prompts with inline images while bounding what one request can make the router hold.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What a layer takes as a request body: set by its `max_body_bytes`, `require_json_body` and
/// `max_buffered_bytes`.
#[derive(Clone, Debug)]
pub(crate) struct BodyRules {
    /// The largest body buffered; a larger one is answered 413.
    pub(crate) max_bytes: usize,
    /// A `POST` body the layer cannot route is refused rather than passed through.
    pub(crate) require_json: bool,
    /// The bytes of bodies the layer's services hold at once; one that does not fit is
    /// answered 503.
    pub(crate) budget: Option<BufferBudget>,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BODY_BYTES,
            require_json: false,
            budget: None,
        }
    }
}

/// Whether a request can carry a routing decision: a `POST` whose body is JSON (or untyped),
/// not declared empty (`Content-Length: 0`, as a `POST .../cancel` of OpenAI's API sends) and
/// not compressed (a `Content-Encoding` other than `identity`: its bytes are not JSON the
/// layers can read; tower-http's `RequestDecompressionLayer` in front makes it routable).
#[cfg(feature = "reqwest")]
pub(crate) fn is_routable<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST && BodyHeaders::of(req.headers()).unroutable(false).is_none()
}

/// Whether a `Content-Type` is one the layers read as a JSON request body: `application/json`
/// or `application/*+json`, parameters aside, in any case. A request with another type (or a
/// `Content-Encoding`) is passed through unread: a server in front that wants to refuse those
/// bodies rather than pass them on can ask the same question.
///
/// ```
/// use http::HeaderValue;
/// use tower_llm_router::payload::is_json_content_type;
///
/// assert!(is_json_content_type(&HeaderValue::from_static("application/json; charset=utf-8")));
/// assert!(is_json_content_type(&HeaderValue::from_static("application/vnd.api+json")));
/// assert!(!is_json_content_type(&HeaderValue::from_static("text/plain")));
/// ```
pub fn is_json_content_type(value: &HeaderValue) -> bool {
    // The usual spelling first, without splitting parameters off.
    value.as_bytes() == b"application/json" || value.to_str().is_ok_and(is_json_media_type)
}

/// What [`is_routable`] reads of a request's headers: found by one walk over a head of at most
/// [`WALK_LIMIT`] values, as [`HeadFacts`] are (three lookups cost about 400 instructions).
#[derive(Debug, PartialEq, Eq)]
struct BodyHeaders<'a> {
    /// The first `Content-Type`.
    content_type: Option<&'a HeaderValue>,
    /// The first `Content-Length`.
    content_length: Option<&'a HeaderValue>,
    /// A `Content-Encoding` other than `identity`.
    encoded: bool,
}

impl<'a> BodyHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        if headers.len() <= WALK_LIMIT {
            Self::walked(headers)
        } else {
            Self::looked_up(headers)
        }
    }

    fn looked_up(headers: &'a HeaderMap) -> Self {
        Self {
            content_type: headers.get(header::CONTENT_TYPE),
            content_length: headers.get(header::CONTENT_LENGTH),
            encoded: headers
                .get_all(header::CONTENT_ENCODING)
                .iter()
                .any(is_a_coding),
        }
    }

    /// The same by one walk: a name's values come one after the other, its first first.
    fn walked(headers: &'a HeaderMap) -> Self {
        let mut found = Self {
            content_type: None,
            content_length: None,
            encoded: false,
        };
        for (name, value) in headers {
            if name == header::CONTENT_TYPE {
                found.content_type = found.content_type.or(Some(value));
            } else if name == header::CONTENT_LENGTH {
                found.content_length = found.content_length.or(Some(value));
            } else if name == header::CONTENT_ENCODING {
                found.encoded |= is_a_coding(value);
            }
        }
        found
    }

    /// `Content-Length: 0`, as a `POST .../cancel` of OpenAI's API sends.
    fn declares_no_body(&self) -> bool {
        self.content_length
            .is_some_and(|length| length.as_bytes() == b"0")
    }

    /// Why the body these headers describe cannot be routed, if it cannot (`known_empty`: the
    /// body knows it is empty, whatever its headers say).
    fn unroutable(&self, known_empty: bool) -> Option<Unroutable> {
        if known_empty || self.declares_no_body() {
            Some(Unroutable::Empty)
        } else if self.encoded {
            Some(Unroutable::Encoded)
        } else if !self.content_type.is_none_or(is_json_content_type) {
            Some(Unroutable::NotJson)
        } else {
            None
        }
    }

    /// The length the body declares: its exact size hint (hyper's bodies take it from
    /// `Content-Length`, at no lookup), else the `Content-Length` header.
    fn declared_length(&self, exact: Option<u64>) -> Option<u64> {
        exact.or_else(|| {
            self.content_length
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    }
}

/// Why a `POST` body is not routed: the layers pass it on unread, or, with
/// `require_json_body`, answer it with [`refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unroutable {
    /// Declared empty (`Content-Length: 0`) or known to be (an exact size of 0).
    Empty,
    /// A `Content-Encoding` other than `identity`.
    Encoded,
    /// A `Content-Type` other than JSON.
    NotJson,
}

/// The answer to a body the layer does not route, when it must route every `POST` body:
/// 413 over the limit whatever the body (as a JSON body is answered); 400 empty (nothing to
/// route: not a JSON object); 415 compressed, with `Accept-Encoding: identity` (RFC 7694,
/// section 3: the codings the server takes); 415 of another type. A body the layer cannot read
/// could only go, unrouted and unlimited, to whatever the inner service sends it to.
#[cold]
fn refusal(why: Unroutable, declared: Option<u64>, limit: usize) -> ApiError {
    if declared.is_some_and(|declared| declared > limit as u64) {
        return too_large(limit);
    }
    match why {
        Unroutable::Empty => ApiError::bad_request(
            "invalid_json",
            "the request body is empty: it must be a JSON object",
        ),
        Unroutable::Encoded => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_content_encoding",
            "compressed request bodies are not accepted: send the JSON without a \
             `Content-Encoding`",
        )
        .accepting_identity_only(),
        Unroutable::NotJson => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "the request body must be JSON: send it with `Content-Type: application/json`",
        ),
    }
}

/// A `Content-Encoding` value other than `identity`: the body is compressed.
pub(crate) fn is_a_coding(coding: &HeaderValue) -> bool {
    !coding
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"identity")
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case("+json")))
}

/// The 413 answered for a body over the limit.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// The answer to a request body that failed while it was read: 408 when it timed out (an
/// `io::Error` of kind `TimedOut`, a hyper timeout, a tower / tokio `Elapsed`, or an error
/// that says "timeout" or "timed out", as tower-http's `RequestBodyTimeoutLayer` fails,
/// anywhere in the error's sources: a client that stalled), 413 when a limit in front cut it
/// (`http_body_util::LengthLimitError`, what tower-http's `RequestBodyLimitLayer` fails with on
/// a body that declared no length), else 400.
fn body_read_failed(err: &(dyn std::error::Error + 'static)) -> ApiError {
    if over_length_limit(err) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is over a limit: {err}"),
        );
    }
    if crate::classify::is_timeout(err) || says_timeout(err) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!("the request body was not received in time: {err}"),
        );
    }
    ApiError::bad_request(
        "body_read_error",
        format!("failed to read the request body: {err}"),
    )
}

/// Whether `http_body_util::LengthLimitError` is among the error and its sources.
fn over_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    crate::classify::sources(err).any(|err| err.is::<http_body_util::LengthLimitError>())
}

/// Whether the error or one of its sources says it is a timeout, for timeout errors of types
/// this crate does not know (tower-http's `TimeoutError`: "data was not received within the
/// designated timeout").
fn says_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    crate::classify::sources(err).any(|err| {
        let text = err.to_string().to_ascii_lowercase();
        text.contains("timeout") || text.contains("timed out")
    })
}

/// `len` in decimal digits, the canonical way to write it in a `Content-Length`.
fn decimal(len: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Frames a buffered body of `len` bytes for the next hop: its `Content-Length`, and no
/// `Transfer-Encoding` (the caller's chunked framing does not describe the bytes sent on, and a
/// request must not carry both). A `Content-Length` that already says exactly `len` (one
/// value, written the canonical way) is left alone, which spares an allocation and an insert in
/// the usual cases (the client's header was right, or the layer above set it).
pub(crate) fn frame_buffered(headers: &mut HeaderMap, len: usize) {
    rewrite_head(headers, Some(len), false);
}

/// Up to this many header values, one walk over them all finds the few headers
/// [`rewrite_head`] reads in fewer instructions than a hashed lookup of each (about 100
/// instructions a lookup, three per request; a request's head has a handful of headers).
const WALK_LIMIT: usize = 16;

/// What [`rewrite_head`] reads of a head.
#[derive(Debug, PartialEq, Eq)]
struct HeadFacts {
    /// One `Content-Length` value, written as the canonical length given.
    length_is_canonical: bool,
    transfer_encoding: bool,
    /// The first `Accept-Encoding` value is there and is not `identity`.
    accepts_compression: bool,
}

impl HeadFacts {
    fn of(headers: &HeaderMap, canonical: &[u8]) -> Self {
        if headers.len() <= WALK_LIMIT {
            Self::walked(headers, canonical)
        } else {
            Self::looked_up(headers, canonical)
        }
    }

    fn looked_up(headers: &HeaderMap, canonical: &[u8]) -> Self {
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        Self {
            length_is_canonical: matches!(
                (lengths.next(), lengths.next()),
                (Some(value), None) if value.as_bytes() == canonical
            ),
            transfer_encoding: headers.contains_key(header::TRANSFER_ENCODING),
            accepts_compression: headers
                .get(header::ACCEPT_ENCODING)
                .is_some_and(|value| value.as_bytes() != b"identity"),
        }
    }

    /// The same by one walk: a name's values come one after the other, its first first.
    fn walked(headers: &HeaderMap, canonical: &[u8]) -> Self {
        let mut lengths = 0;
        let mut length_is_canonical = false;
        let mut transfer_encoding = false;
        let mut accept_encoding = None;
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                lengths += 1;
                length_is_canonical = value.as_bytes() == canonical;
            } else if name == header::TRANSFER_ENCODING {
                transfer_encoding = true;
            } else if name == header::ACCEPT_ENCODING && accept_encoding.is_none() {
                accept_encoding = Some(value);
            }
        }
        Self {
            length_is_canonical: lengths == 1 && length_is_canonical,
            transfer_encoding,
            accepts_compression: accept_encoding
                .is_some_and(|value| value.as_bytes() != b"identity"),
        }
    }
}

/// Rewrites an attempt's head: with `len`, frames a buffered body of `len` bytes as
/// [`frame_buffered`] does; with `ask_identity`, replaces an `Accept-Encoding` that allows a
/// compression by `identity` (a compressed error body cannot be classified; without the
/// header, upstreams answer uncompressed already).
pub(crate) fn rewrite_head(headers: &mut HeaderMap, len: Option<usize>, ask_identity: bool) {
    let mut digits = [0u8; 20];
    let canonical = decimal(len.unwrap_or(0), &mut digits);
    let facts = HeadFacts::of(headers, canonical);
    if let Some(len) = len {
        if !facts.length_is_canonical {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        if facts.transfer_encoding {
            headers.remove(header::TRANSFER_ENCODING);
        }
    }
    if ask_identity && facts.accepts_compression {
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
}

/// How a routing layer takes a request in.
pub(crate) enum Admission<S, B> {
    /// No routing decision to make: send it on as it is.
    Passthrough(Request<RouterBody>),
    /// Refused before reading the body.
    Rejected(ApiError),
    /// To be buffered and routed, by the service `poll_ready` was called on.
    Routed {
        inner: S,
        head: http::request::Parts,
        body: B,
    },
}

/// Sorts a request into pass-through, early rejection, or routing, from one walk over its
/// headers. A `POST` body that cannot be routed is passed through, or with
/// [`BodyRules::require_json`] refused. For routing, it hands out the service `poll_ready` was
/// called on and leaves its clone behind: the inner service may have state driven to readiness
/// that clones do not share (such as `Buffer`'s permit).
/// See: <https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services>
pub(crate) fn admit<S, B>(inner: &mut S, req: Request<B>, rules: &BodyRules) -> Admission<S, B>
where
    S: Clone,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    if req.method() != Method::POST {
        return Admission::Passthrough(req.map(RouterBody::new));
    }
    let body = BodyHeaders::of(req.headers());
    let exact = req.body().size_hint().exact();
    // A body known to be empty (no `Content-Length` on a server, an empty client body) has no
    // model to route: passed on, not refused as invalid JSON, unless every body must be routed.
    if let Some(why) = body.unroutable(exact == Some(0)) {
        if !rules.require_json {
            return Admission::Passthrough(req.map(RouterBody::new));
        }
        let declared = body.declared_length(exact);
        return Admission::Rejected(refusal(why, declared, rules.max_bytes));
    }
    // A declared length over the limit is refused before anything is read.
    let declared = body.declared_length(exact);
    if declared.is_some_and(|declared| declared > rules.max_bytes as u64) {
        return Admission::Rejected(too_large(rules.max_bytes));
    }
    // So is one that cannot fit in the budget now (unless a layer above counts it already).
    if let (Some(budget), Some(declared)) = (&rules.budget, declared) {
        if !budget.fits(declared) && !is_charged(req.body()) {
            return Admission::Rejected(over_budget(budget.limit()));
        }
    }
    let clone = inner.clone();
    let inner = std::mem::replace(inner, clone);
    let (head, body) = req.into_parts();
    Admission::Routed { inner, head, body }
}

/// Whether the body is one a layer above buffered and counts in its budget.
fn is_charged<B: 'static>(body: &B) -> bool {
    (body as &dyn Any)
        .downcast_ref::<RouterBody>()
        .is_some_and(RouterBody::is_charged)
}

/// Chunks read from a body, kept contiguous: a single chunk is kept as it came (no copy),
/// a second one starts a copy.
#[derive(Debug, Default)]
pub(crate) struct ChunkBuf {
    first: Option<Bytes>,
    rest: Vec<u8>,
    /// The length the body declares (`Content-Length`), when known: the copy is allocated at
    /// that size at once, instead of doubling up to it (each doubling a reallocation with old
    /// and new buffer alive, and up to twice the body in capacity at the end).
    expected: usize,
}

/// How far a declared length is trusted beyond the bytes that arrived: a client that declares
/// 30 MiB and sends two small chunks gets no 30 MiB buffer, only this many times what it sent.
const TRUSTED_GROWTH: usize = 16;

impl ChunkBuf {
    /// A buffer for a body that declares `expected` bytes.
    pub(crate) fn expecting(expected: usize) -> Self {
        Self {
            expected,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            first => {
                let arrived = first.as_ref().map_or(0, Bytes::len);
                self.reserve(arrived + data.len());
                if let Some(first) = first {
                    self.rest.extend_from_slice(&first);
                }
                self.rest.extend_from_slice(&data);
            }
        }
    }

    /// Makes room for `incoming` more bytes: straight to the declared length when it is trusted
    /// that far, otherwise to as far as it is trusted. A body that arrives in small chunks (a
    /// server with a small read buffer) thus grows in a few steps of 16x, not in doublings, and
    /// ends at exactly its declared length (`reserve_exact`: a plain `reserve` may round up to
    /// twice the old capacity; both are a `realloc`, which need not copy).
    fn reserve(&mut self, incoming: usize) {
        if let Some(capacity) = self.grown_capacity(incoming) {
            self.rest.reserve_exact(capacity - self.rest.len());
        }
    }

    /// The capacity the copy grows to for `incoming` more bytes, if it must grow.
    fn grown_capacity(&self, incoming: usize) -> Option<usize> {
        let needed = self.rest.len().saturating_add(incoming);
        if needed <= self.rest.capacity() {
            return None;
        }
        let trusted = self.expected.min(needed.saturating_mul(TRUSTED_GROWTH));
        Some(needed.max(trusted))
    }

    /// The memory the buffer holds: the chunk kept as it came, or the copy's capacity.
    pub(crate) fn footprint(&self) -> usize {
        match &self.first {
            Some(first) => first.len(),
            None => self.rest.capacity(),
        }
    }

    /// What [`footprint`](Self::footprint) will be once `incoming` more bytes are pushed: a
    /// budget is asked for them before the buffer grows.
    pub(crate) fn footprint_after(&self, incoming: usize) -> usize {
        if incoming == 0 {
            return self.footprint();
        }
        match &self.first {
            None if self.rest.is_empty() => incoming,
            first => {
                let arrived = first.as_ref().map_or(0, Bytes::len);
                self.grown_capacity(arrived.saturating_add(incoming))
                    .unwrap_or(self.rest.capacity())
            }
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.first {
            Some(first) => first,
            None => &self.rest,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn take(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => Bytes::from(std::mem::take(&mut self.rest)),
        }
    }

    /// The bytes, counted by `reservation` until the last reference to them is dropped.
    pub(crate) fn take_held(&mut self, reservation: Reservation) -> Bytes {
        match self.first.take() {
            Some(first) => hold(first, reservation),
            None => hold(std::mem::take(&mut self.rest), reservation),
        }
    }
}

pin_project_lite::pin_project! {
    /// Collects a request body into one [`Bytes`], refusing more than `limit` bytes while the
    /// body streams in. A body that arrives in one chunk (or is already buffered) is not copied.
    ///
    /// With a budget (`max_buffered_bytes`), each frame is charged before it is kept: what the
    /// buffer will hold with it in. A frame that does not fit ends the request with a 503; the
    /// bytes charged so far are given back when the collection is dropped, those of a finished
    /// body when the last reference to its buffer is.
    ///
    /// Generic over the body, which it holds as it came: a `RouterBody` around it would box it
    /// (an allocation per request) only to read it once.
    pub(crate) struct Collect<B> {
        #[pin]
        body: B,
        // The whole body, when it came buffered (a layer above read it already), with the
        // budget that counts it, if any.
        buffered: Option<(Bytes, Option<BufferBudget>)>,
        buf: ChunkBuf,
        limit: usize,
        // What this layer's budget holds for the body, when it has a budget.
        reservation: Option<Reservation>,
    }
}

/// A collected body, and the budget that counts it (this layer's, or a layer's above that
/// buffered it), if any: a copy made of it is charged to the same budget.
#[derive(Debug)]
pub(crate) struct Collected {
    pub(crate) bytes: Bytes,
    pub(crate) charged: Option<BufferBudget>,
}

impl<B> Collect<B>
where
    B: Body + 'static,
    B::Error: Into<crate::BoxError>,
{
    pub(crate) fn new(mut body: B, rules: &BodyRules) -> Self {
        let limit = rules.max_bytes;
        let buffered = (&mut body as &mut dyn Any)
            .downcast_mut::<RouterBody>()
            .and_then(RouterBody::take_buffered);
        let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
        Self {
            body,
            buffered,
            buf: ChunkBuf::expecting(declared.min(limit)),
            limit,
            reservation: rules.budget.as_ref().map(BufferBudget::reservation),
        }
    }

    pub(crate) fn poll_collect(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Collected, ApiError>> {
        let mut this = self.project();
        if let Some((bytes, charged)) = this.buffered.take() {
            if bytes.len() > *this.limit {
                return Poll::Ready(Err(too_large(*this.limit)));
            }
            return Poll::Ready(charge_handed_over(bytes, charged, this.reservation.take()));
        }
        loop {
            let frame = match ready!(this.body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(Ok(finish(this.buf, this.reservation.take()))),
                Some(Err(err)) => return Poll::Ready(Err(body_read_failed(&*err.into()))),
                Some(Ok(frame)) => frame,
            };
            // Trailers carry no routing information; they are dropped with the stream.
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if this.buf.len() + data.remaining() > *this.limit {
                return Poll::Ready(Err(too_large(*this.limit)));
            }
            if let Some(reservation) = this.reservation.as_mut() {
                if !reservation.grow_to(this.buf.footprint_after(data.remaining())) {
                    return Poll::Ready(Err(over_budget(reservation.budget().limit())));
                }
            }
            this.buf.push(data.copy_to_bytes(data.remaining()));
        }
    }
}

/// A body a layer above buffered: counted by the budget that charged it, if one did, else
/// charged to this layer's (if it has one) as a whole.
fn charge_handed_over(
    bytes: Bytes,
    charged: Option<BufferBudget>,
    reservation: Option<Reservation>,
) -> Result<Collected, ApiError> {
    match (charged, reservation) {
        (Some(charged), _) => Ok(Collected {
            bytes,
            charged: Some(charged),
        }),
        (None, Some(mut reservation)) => {
            if !reservation.grow_to(bytes.len()) {
                return Err(over_budget(reservation.budget().limit()));
            }
            let budget = reservation.budget().clone();
            Ok(Collected {
                bytes: hold(bytes, reservation),
                charged: Some(budget),
            })
        }
        (None, None) => Ok(Collected {
            bytes,
            charged: None,
        }),
    }
}

/// The collected body: with a budget, a buffer that gives its bytes back when its last
/// reference is dropped.
fn finish(buf: &mut ChunkBuf, reservation: Option<Reservation>) -> Collected {
    // An empty body holds nothing to count.
    match reservation.filter(|_| buf.footprint() > 0) {
        Some(mut reservation) => {
            // The allocator may have given the copy more room than asked: that is held too.
            reservation.force_to(buf.footprint());
            let budget = reservation.budget().clone();
            Collected {
                bytes: buf.take_held(reservation),
                charged: Some(budget),
            }
        }
        None => Collected {
            bytes: buf.take(),
            charged: None,
        },
    }
}

impl<B> fmt::Debug for Collect<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collect")
            .field(
                "buffered",
                &self.buffered.as_ref().map(|(bytes, _)| bytes.len()),
            )
            .field("read", &self.buf.len())
            .field("limit", &self.limit)
            .field("reservation", &self.reservation)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused before a byte is read: a body whose exact size is over the limit (no header
    /// needed), and a body of unknown size whose `Content-Length` says it is.
    #[test]
    fn a_declared_size_over_the_limit_is_refused_from_the_hint_or_the_header() {
        let oversized = |body: RouterBody, header: Option<&str>| {
            let mut req = Request::post("/v1/chat/completions");
            if let Some(len) = header {
                req = req.header(header::CONTENT_LENGTH, len);
            }
            let req = req.body(body).unwrap();
            let rules = BodyRules {
                max_bytes: 8,
                ..BodyRules::default()
            };
            matches!(admit(&mut (), req, &rules), Admission::Rejected(e) if e.status() == 413)
        };
        let nine_bytes = || RouterBody::from(Bytes::from_static(b"123456789"));
        let streaming = || {
            let frames = futures::stream::iter(vec![Ok::<_, std::io::Error>(
                http_body::Frame::data(Bytes::from_static(b"{}")),
            )]);
            RouterBody::new(http_body_util::StreamBody::new(frames))
        };
        assert!(oversized(nine_bytes(), None), "from the exact size hint");
        assert!(oversized(streaming(), Some("9")), "from the header");
        assert!(
            !oversized(streaming(), None),
            "nothing declared: read, then judged"
        );
        assert!(!oversized(streaming(), Some("8")));
    }

    /// The answer to a body that fails while it is read.
    async fn read_error(body: RouterBody) -> ApiError {
        let rules = BodyRules {
            max_bytes: 1024,
            ..BodyRules::default()
        };
        let mut collect = std::pin::pin!(Collect::new(body, &rules));
        std::future::poll_fn(|cx| collect.as_mut().poll_collect(cx))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_body_that_timed_out_is_a_408_and_one_that_broke_a_400() {
        use http_body::Frame;
        use std::io;
        for (kind, status, code) in [
            (io::ErrorKind::TimedOut, 408, "request_timeout"),
            (io::ErrorKind::ConnectionReset, 400, "body_read_error"),
        ] {
            let frames = futures::stream::iter(vec![
                Ok(Frame::data(Bytes::from_static(b"{\"model\""))),
                Err(io::Error::from(kind)),
            ]);
            let body = RouterBody::new(http_body_util::StreamBody::new(frames));
            let error = read_error(body).await;
            assert_eq!((error.status().as_u16(), error.code()), (status, code));
        }
    }

    #[tokio::test]
    async fn a_body_that_a_timeout_of_another_crate_cut_is_a_408() {
        /// What tower-http's `RequestBodyTimeoutLayer` fails a stalled body with.
        #[derive(Debug)]
        struct TimeoutError;
        impl std::fmt::Display for TimeoutError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("data was not received within the designated timeout")
            }
        }
        impl std::error::Error for TimeoutError {}
        let frames = futures::stream::iter(vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"{\"model\""))),
            Err(TimeoutError),
        ]);
        let body = RouterBody::new(http_body_util::StreamBody::new(frames));
        let error = read_error(body).await;
        assert_eq!(
            (error.status().as_u16(), error.code()),
            (408, "request_timeout")
        );
    }

    #[tokio::test]
    async fn a_body_cut_by_a_length_limit_in_front_is_a_413() {
        use http_body::Frame;
        // What tower-http's `RequestBodyLimitLayer` hands on for a body without a length.
        let frames = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"{\"model\":\"m\","))),
            Ok(Frame::data(Bytes::from_static(b"\"messages\":[]}"))),
        ]);
        let limited = http_body_util::Limited::new(http_body_util::StreamBody::new(frames), 16);
        let body = RouterBody::new(limited);
        let error = read_error(body).await;
        assert_eq!(
            (error.status().as_u16(), error.code()),
            (413, "request_too_large")
        );
    }

    #[test]
    fn chunks_are_copied_into_one_buffer_of_the_declared_size() {
        let mut buf = ChunkBuf::expecting(1000);
        buf.push(Bytes::from(vec![b'a'; 300]));
        assert_eq!(buf.rest.capacity(), 0, "one chunk is kept as it came");
        buf.push(Bytes::from(vec![b'b'; 300]));
        buf.push(Bytes::from(vec![b'c'; 400]));
        assert_eq!(
            buf.rest.capacity(),
            1000,
            "allocated once, at the declared size"
        );
        let body = buf.take();
        assert_eq!(body.len(), 1000);
        assert!(body[..300].iter().all(|&b| b == b'a') && body[600..].iter().all(|&b| b == b'c'));
    }

    #[test]
    fn small_chunks_grow_the_buffer_to_the_declared_size_not_past_it() {
        // What a server with a small read buffer hands on: the head's read leaves a few KiB of
        // body, then 16 KiB per read. Doubling would end at 1.5 MiB after three reallocations.
        const DECLARED: usize = 1 << 20;
        let mut buf = ChunkBuf::expecting(DECLARED);
        buf.push(Bytes::from(vec![b'a'; 7_000]));
        let mut capacities = vec![];
        while buf.len() < DECLARED {
            let chunk = (DECLARED - buf.len()).min(16 << 10);
            buf.push(Bytes::from(vec![b'b'; chunk]));
            if capacities.last() != Some(&buf.rest.capacity()) {
                capacities.push(buf.rest.capacity());
            }
        }
        assert_eq!(capacities.last(), Some(&DECLARED), "{capacities:?}");
        assert_eq!(capacities.len(), 2, "{capacities:?}");
        assert_eq!(buf.take().len(), DECLARED);
    }

    proptest::proptest! {
        /// Whatever the chunks and whatever length the body declares (right, short, long or
        /// none), the buffer holds exactly the bytes that came, in order, and when the
        /// declaration was right, its capacity is exactly the declared length.
        #[test]
        fn chunks_come_out_whole_whatever_the_declared_length(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..3000), 0..12),
            declared in proptest::option::of(0usize..40_000),
        ) {
            let total: usize = chunks.iter().map(Vec::len).sum();
            let expected = declared.unwrap_or(total);
            let mut buf = ChunkBuf::expecting(expected);
            for chunk in &chunks {
                buf.push(Bytes::from(chunk.clone()));
            }
            proptest::prop_assert_eq!(buf.len(), total);
            if expected == total && buf.rest.capacity() > 0 {
                proptest::prop_assert_eq!(buf.rest.capacity(), total);
            }
            let whole: Vec<u8> = chunks.concat();
            proptest::prop_assert_eq!(&buf.take()[..], &whole[..]);
        }
    }

    proptest::proptest! {
        /// What a budget is asked for before a chunk is pushed is what the buffer holds after:
        /// the chunk kept as it came, or the copy's capacity.
        #[test]
        fn the_footprint_is_known_before_each_push(
            chunks in proptest::collection::vec(0usize..5000, 0..12),
            declared in proptest::option::of(0usize..40_000),
        ) {
            let mut buf = ChunkBuf::expecting(declared.unwrap_or(0));
            for len in chunks {
                let expected = buf.footprint_after(len);
                buf.push(Bytes::from(vec![b'x'; len]));
                proptest::prop_assert_eq!(buf.footprint(), expected);
            }
        }
    }

    #[test]
    fn a_declared_size_is_trusted_only_so_far_beyond_what_arrived() {
        let mut buf = ChunkBuf::expecting(30 << 20);
        buf.push(Bytes::from_static(b"0123456789"));
        buf.push(Bytes::from_static(b"0123456789"));
        assert_eq!(buf.rest.capacity(), 20 * TRUSTED_GROWTH);
        // Without a declared size (or a wrong one) the buffer grows as needed.
        let mut buf = ChunkBuf::expecting(0);
        for _ in 0..100 {
            buf.push(Bytes::from_static(b"0123456789"));
        }
        assert_eq!(buf.len(), 1000);
    }

    /// Heads with the headers the walks look for and others, repeated, appended, in any order.
    fn heads() -> impl proptest::strategy::Strategy<Value = HeaderMap> {
        use proptest::strategy::Strategy;
        let header = (
            proptest::sample::select(vec![
                "content-length",
                "transfer-encoding",
                "accept-encoding",
                "content-type",
                "content-encoding",
                "host",
                "x-custom",
            ]),
            proptest::sample::select(vec![
                "0",
                "12",
                "012",
                "identity",
                "IDENTITY",
                "gzip",
                "chunked",
                "application/json",
                "text/plain",
                "",
            ]),
            proptest::bool::ANY,
        );
        proptest::collection::vec(header, 0..24).prop_map(|headers| {
            let mut map = HeaderMap::new();
            for (name, value, append) in headers {
                let value = HeaderValue::from_static(value);
                if append {
                    map.append(name, value);
                } else {
                    map.insert(name, value);
                }
            }
            map
        })
    }

    proptest::proptest! {
        /// A walk over a head finds what lookups find, whatever its headers and their order.
        #[test]
        fn a_walk_over_the_head_finds_what_lookups_find(
            map in heads(),
            len in proptest::sample::select(vec![0usize, 12, 120]),
        ) {
            let mut digits = [0u8; 20];
            let canonical = decimal(len, &mut digits);
            proptest::prop_assert_eq!(
                HeadFacts::walked(&map, canonical),
                HeadFacts::looked_up(&map, canonical)
            );
        }

        /// What routing asks of a request's headers is found by a walk as by lookups.
        #[test]
        fn a_walk_finds_the_body_headers_lookups_find(map in heads()) {
            proptest::prop_assert_eq!(BodyHeaders::walked(&map), BodyHeaders::looked_up(&map));
        }
    }

    #[test]
    fn a_head_is_framed_and_asks_for_identity() {
        for many in [false, true] {
            let mut headers = HeaderMap::new();
            if many {
                // Past the walk's limit: the lookups decide.
                for i in 0..WALK_LIMIT {
                    headers.insert(
                        http::HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                        HeaderValue::from_static("x"),
                    );
                }
            }
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
            rewrite_head(&mut headers, None, true);
            assert_eq!(headers.get_all(header::ACCEPT_ENCODING).iter().count(), 1);
            assert_eq!(headers[header::ACCEPT_ENCODING], "identity");
            assert!(headers.contains_key(header::TRANSFER_ENCODING));
            rewrite_head(&mut headers, Some(17), false);
            assert_eq!(headers[header::CONTENT_LENGTH], "17");
            assert!(!headers.contains_key(header::TRANSFER_ENCODING));
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            rewrite_head(&mut headers, Some(17), false);
            assert_eq!(headers[header::ACCEPT_ENCODING], "gzip");
        }
    }

    #[test]
    fn content_length_is_set_unless_already_right() {
        let mut headers = HeaderMap::new();
        frame_buffered(&mut headers, 0);
        assert_eq!(headers[header::CONTENT_LENGTH], "0");
        frame_buffered(&mut headers, 1024);
        assert_eq!(headers[header::CONTENT_LENGTH], "1024");
        frame_buffered(&mut headers, 1024);
        assert_eq!(headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        // Another spelling of the same number, or two values, are replaced by one.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("+1024"));
        frame_buffered(&mut headers, 1024);
        assert_eq!(headers[header::CONTENT_LENGTH], "1024");
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
        frame_buffered(&mut headers, 1024);
        assert_eq!(headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        frame_buffered(&mut headers, usize::MAX);
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            usize::MAX.to_string().as_str()
        );
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "application/jsonx",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
