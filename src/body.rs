//! The request body the layers hand to the inner service, and the answer body they hand back.
//!
//! A routed request is buffered once into [`Bytes`]; each attempt sends that buffer again, as
//! it is when nothing needs rewriting. With `model` (and `models`) rewritten, a body over
//! 16 KiB goes as separate [`Segments`] (the untouched bytes of the client's body
//! reference-counted, not copied), a smaller one as one copied buffer, which costs less than
//! the slices. Requests that carry no routing decision pass through as a boxed stream.
//!
//! The caller gets a [`ResponseBody`]: the inner service's answer, with the bytes the layer
//! read to classify it replayed first. An event stream goes on whole events at a time, and one
//! that breaks after its first byte ends with a final SSE error event (see [`ResponseBody`]).

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::buffer_budget::BufferBudget;
use crate::classify::{
    ends_the_stream, ends_the_stream_alone, last_event_end, leading_type, ErrorClass, LastEvent,
    SseEvent,
};
use crate::health::{Health, Observation};
use crate::BoxError;

pin_project! {
    /// A body with its data as [`Bytes`] and its errors boxed, and its size hint kept:
    /// `http_body_util`'s `map_frame` cannot know that a mapping keeps sizes, so it drops the
    /// hint, and a body passed through with a known length (an empty `POST`, a form) would go
    /// out chunked instead of with its `Content-Length`.
    struct IntoBytes<B> {
        #[pin]
        inner: B,
    }
}

impl<B> Body for IntoBytes<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame
                .map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                .map_err(Into::into)
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How many segments a spliced body can hold: three edits (model, models, a plugin entry)
/// cut the original into at most four pieces, plus three replacements.
const MAX_SEGMENTS: usize = 8;

/// A byte sequence made of up to eight [`Bytes`] segments, sent one after the other.
///
/// This is what splicing produces: slices of the original buffer (reference-counted, not
/// copied) with the replacement values between them.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::body::Segments;
///
/// let mut s = Segments::new();
/// s.push(Bytes::from_static(b"{\"model\":"));
/// s.push(Bytes::from_static(b"\"gpt-4o\""));
/// s.push(Bytes::from_static(b"}"));
/// assert_eq!(s.len(), 18);
/// assert_eq!(s.to_bytes(), Bytes::from_static(b"{\"model\":\"gpt-4o\"}"));
/// ```
#[derive(Clone, Default)]
pub struct Segments {
    parts: [Bytes; MAX_SEGMENTS],
    start: usize,
    end: usize,
    len: usize,
}

impl Segments {
    /// An empty sequence.
    pub const fn new() -> Self {
        const EMPTY: Bytes = Bytes::new();
        Self {
            parts: [EMPTY; MAX_SEGMENTS],
            start: 0,
            end: 0,
            len: 0,
        }
    }

    /// Appends a segment; empty segments are skipped.
    ///
    /// If all eight places are taken, the last segment absorbs the new one (a copy), so the
    /// sequence stays correct whatever the number of pushes.
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if self.end < MAX_SEGMENTS {
            self.parts[self.end] = bytes;
            self.end += 1;
        } else {
            let last = &mut self.parts[MAX_SEGMENTS - 1];
            let mut joined = BytesMut::with_capacity(last.len() + bytes.len());
            joined.extend_from_slice(last);
            joined.extend_from_slice(&bytes);
            *last = joined.freeze();
        }
    }

    /// Total number of bytes left.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are left.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments left, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.parts[self.start..self.end].iter()
    }

    /// The bytes as one contiguous buffer: free when there is a single segment, one copy
    /// otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.end - self.start {
            0 => Bytes::new(),
            1 => self.parts[self.start].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len);
                for part in self.iter() {
                    out.extend_from_slice(part);
                }
                out.freeze()
            }
        }
    }

    /// Takes the next segment out.
    fn pop_front(&mut self) -> Option<Bytes> {
        if self.start == self.end {
            return None;
        }
        let part = std::mem::take(&mut self.parts[self.start]);
        self.start += 1;
        self.len -= part.len();
        Some(part)
    }
}

impl From<Bytes> for Segments {
    fn from(bytes: Bytes) -> Self {
        let mut s = Segments::new();
        s.push(bytes);
        s
    }
}

impl fmt::Debug for Segments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("segments", &(self.end - self.start))
            .field("len", &self.len)
            .finish()
    }
}

pin_project! {
    /// The request body the routing layers send to the inner service.
    ///
    /// Either a buffered, possibly spliced, JSON body ([`Segments`]), or, for requests that
    /// carry no routing decision, the caller's body passed through as a boxed stream.
    ///
    /// Its data type is [`Bytes`] and its error type [`BoxError`], so it fits hyper-util's
    /// client (`Client<_, RouterBody>`), reqwest (through [`RouterBody::collect_bytes`] or the
    /// `reqwest` feature) and any `Service<Request<B>>` generic over the body.
    ///
    /// # Example
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use tower_llm_router::RouterBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = RouterBody::from(bytes::Bytes::from_static(b"{\"model\":\"gpt-4o\"}"));
    /// assert_eq!(body.buffered_len(), Some(18));
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"{\"model\":\"gpt-4o\"}");
    /// # }
    /// ```
    pub struct RouterBody {
        #[pin]
        kind: Kind,
    }
}

/// A buffered body: one buffer (nothing spliced: the usual case, kept inline), or the segments
/// of a spliced one, boxed: [`Segments`] is 280 bytes, and a `RouterBody` is moved from future
/// to future several times per request.
enum Buffered {
    Whole(Bytes),
    Spliced(Box<Segments>),
    /// One buffer a layer with `max_buffered_bytes` counts in `budget`: a layer below that
    /// takes it over charges it no second time.
    Charged(Bytes, BufferBudget),
}

impl Buffered {
    fn new(mut segments: Segments) -> Self {
        if segments.end - segments.start > 1 {
            Buffered::Spliced(Box::new(segments))
        } else {
            Buffered::Whole(segments.pop_front().unwrap_or_default())
        }
    }

    fn len(&self) -> usize {
        match self {
            Buffered::Whole(bytes) | Buffered::Charged(bytes, _) => bytes.len(),
            Buffered::Spliced(segments) => segments.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            Buffered::Whole(bytes) | Buffered::Charged(bytes, _) => bytes.clone(),
            Buffered::Spliced(segments) => segments.to_bytes(),
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        match self {
            Buffered::Whole(bytes) | Buffered::Charged(bytes, _) if bytes.is_empty() => None,
            Buffered::Whole(bytes) | Buffered::Charged(bytes, _) => Some(std::mem::take(bytes)),
            Buffered::Spliced(segments) => segments.pop_front(),
        }
    }
}

impl fmt::Debug for Buffered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Buffered::Whole(bytes) | Buffered::Charged(bytes, _) => f
                .debug_struct("Segments")
                .field("segments", &usize::from(!bytes.is_empty()))
                .field("len", &bytes.len())
                .finish(),
            Buffered::Spliced(segments) => segments.fmt(f),
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Buffered { segments: Buffered },
        Streaming { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl RouterBody {
    /// An empty body.
    pub const fn empty() -> Self {
        Self {
            kind: Kind::Buffered {
                segments: Buffered::Whole(Bytes::new()),
            },
        }
    }

    /// Wraps any body. A body that is already a `RouterBody` is returned as it is (no second
    /// box, and a buffered body stays buffered).
    pub fn new<B>(body: B) -> Self
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        if let Some(router_body) = (&mut slot as &mut dyn Any).downcast_mut::<Option<RouterBody>>()
        {
            if let Some(router_body) = router_body.take() {
                return router_body;
            }
        }
        match slot {
            Some(body) => Self {
                kind: Kind::Streaming {
                    body: IntoBytes { inner: body }.boxed_unsync(),
                },
            },
            None => Self::empty(),
        }
    }

    /// A buffered body made of segments.
    pub fn from_segments(segments: Segments) -> Self {
        Self {
            kind: Kind::Buffered {
                segments: Buffered::new(segments),
            },
        }
    }

    /// The number of bytes of a buffered body, `None` for a streaming one.
    pub fn buffered_len(&self) -> Option<usize> {
        match &self.kind {
            Kind::Buffered { segments } => Some(segments.len()),
            Kind::Streaming { .. } => None,
        }
    }

    /// The buffered bytes, `None` for a streaming body. Free for a single segment, one copy
    /// for a spliced one.
    pub fn buffered_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Buffered { segments } => Some(segments.to_bytes()),
            Kind::Streaming { .. } => None,
        }
    }

    /// A buffered body whose bytes a layer counts in `budget` (when it has one), so that a
    /// layer below that takes them over does not count them again.
    pub(crate) fn charged(bytes: Bytes, budget: Option<&BufferBudget>) -> Self {
        let segments = match budget {
            Some(budget) => Buffered::Charged(bytes, budget.clone()),
            None => Buffered::Whole(bytes),
        };
        Self {
            kind: Kind::Buffered { segments },
        }
    }

    /// Whether this is a buffered body a layer counts in its budget.
    pub(crate) fn is_charged(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Buffered {
                segments: Buffered::Charged(..)
            }
        )
    }

    /// Takes the bytes of a buffered body (leaving it empty), with the budget that counts them
    /// if any; `None` for a streaming one.
    pub(crate) fn take_buffered(&mut self) -> Option<(Bytes, Option<BufferBudget>)> {
        let Kind::Buffered { segments } = &mut self.kind else {
            return None;
        };
        let taken = match std::mem::replace(segments, Buffered::Whole(Bytes::new())) {
            Buffered::Whole(bytes) => (bytes, None),
            Buffered::Charged(bytes, budget) => (bytes, Some(budget)),
            Buffered::Spliced(segments) => (segments.to_bytes(), None),
        };
        Some(taken)
    }

    /// Reads the whole body into one buffer (free for an unspliced buffered body).
    pub async fn collect_bytes(self) -> Result<Bytes, BoxError> {
        match self.kind {
            Kind::Buffered { segments } => Ok(segments.to_bytes()),
            Kind::Streaming { body } => Ok(body.collect().await?.to_bytes()),
        }
    }
}

impl Default for RouterBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for RouterBody {
    fn from(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Buffered {
                segments: Buffered::Whole(bytes),
            },
        }
    }
}

impl From<Segments> for RouterBody {
    fn from(segments: Segments) -> Self {
        Self::from_segments(segments)
    }
}

impl fmt::Debug for RouterBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Buffered { segments } => f.debug_tuple("RouterBody").field(segments).finish(),
            Kind::Streaming { .. } => f.debug_tuple("RouterBody").field(&"Streaming").finish(),
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Buffered { segments } => {
                Poll::Ready(segments.pop_front().map(|b| Ok(Frame::data(b))))
            }
            KindProj::Streaming { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { segments } => segments.is_empty(),
            Kind::Streaming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { segments } => SizeHint::with_exact(segments.len() as u64),
            Kind::Streaming { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response body of the routing layers.
    ///
    /// One of: an answer the layer wrote itself (an [`ApiError`](crate::ApiError) rejection),
    /// the inner service's body passed through, or the inner body with the prefix the layer
    /// read to classify it replayed first. For a server-sent-event stream that breaks after its
    /// first byte reached the caller (a read error, an end in the middle of an event, or a clean
    /// end after an event that does not end the stream as its API does: no `[DONE]`, finish
    /// reason, `usage` without choices, error, `message_stop` or `response.completed`...), it ends
    /// with a final SSE error event in the stream's own API instead of a silent truncation:
    /// OpenRouter's shape for chat completions (`error` plus a choice with
    /// `finish_reason: "error"`), the Responses API's `event: error` (`{"type":"error",
    /// "code":"server_error","message":...,"param":null,"sequence_number":N}`, `N` the number
    /// after the last one passed on, see below) for a stream whose first event is
    /// `response.*` typed, Anthropic's `event: error` (`{"type":"error","error":{"type":
    /// "api_error","message":...}}`) for one that opens with `message_start` (decided once,
    /// from that first event; [`is_stream_error_event`] knows all three). The layer's shared
    /// [`Health`] hears of it as a `Downtime` failure of the model (of a clean end, as its
    /// success; see [the fallback docs](crate::fallback#shared-health)). So that a client gets that
    /// event as the next event, and not a fragment of a cut one first, an event stream is passed
    /// on whole events at a time: the bytes of an event that has not ended yet wait for its
    /// blank line (a client dispatches nothing before it), up to 64 KiB; a longer event is
    /// passed on as it comes. Comment lines between events (keep-alives) go on at once.
    ///
    /// The Responses API's error event is numbered after the last `sequence_number` passed on
    /// (0 when none was), which is looked for in each frame of a Responses API stream at
    /// bounded cost: within 96 bytes of its end (where OpenAI writes it, each event's last
    /// member), else within 192 bytes of its last event's start (found within 512 bytes of the
    /// end; else the frame's start: with several events in a frame and a long last one, the
    /// number may be an earlier event's). Other streams are not looked at.
    ///
    /// Its data type is [`Bytes`] and its error type [`BoxError`].
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        Full { data: Option<Bytes> },
        Inner { #[pin] body: B },
        Replay { replay: Replay<B> },
    }
}

/// The inner service's answer body while the layers hold it: read (polled) in the fallback
/// layer's future to classify the answer, then moved into the [`ResponseBody`] the caller gets.
/// A body that has been polled may move only if it is `Unpin`, and a generic type cannot say
/// whether it is. So a body of a type known to be `Unpin` (hyper's `Incoming`, `http-body-util`'s
/// `Full`, `Empty` and boxed bodies of `Bytes` and [`BoxError`], [`RouterBody`], reqwest's `Body`)
/// is held as it is, at no cost, and any other one is pinned in a box, once per answer: tower-http's
/// `TimeoutBody` (which holds a `tokio::time::Sleep`), or a body type of the application's own.
pub(crate) enum Held<B> {
    Inline(B),
    Boxed(Pin<Box<B>>),
}

impl<B> Held<B>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(mut body: B) -> Self {
        if unpinned(&mut body).is_some() {
            Held::Inline(body)
        } else {
            Held::Boxed(Box::pin(body))
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Held::Boxed(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
            // Only a body `unpinned` knows is held inline: the other arm is never taken.
            Held::Inline(body) => unpinned(body).map_or(Poll::Ready(None), |b| b.poll_unpin(cx)),
        }
    }
}

impl<B> Held<B> {
    fn get_ref(&self) -> &B {
        match self {
            Held::Inline(body) => body,
            Held::Boxed(body) => body,
        }
    }
}

/// A body polled in place, for the types [`unpinned`] knows to be `Unpin`.
trait PollUnpin {
    fn poll_unpin(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>;
}

impl<T> PollUnpin for T
where
    T: Body<Data = Bytes> + Unpin,
    T::Error: Into<BoxError>,
{
    fn poll_unpin(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(self).poll_frame(cx).map_err(Into::into)
    }
}

/// `body` as a body that can be polled in place, when its type is one of the common `Unpin`
/// answer bodies. The type tests are constants once `B` is known: no cost at run time.
fn unpinned<B: 'static>(body: &mut B) -> Option<&mut dyn PollUnpin> {
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Empty, Full};
    let body = body as &mut dyn Any;
    macro_rules! known {
        ($($ty:ty),* $(,)?) => {$(
            if body.is::<$ty>() {
                return body.downcast_mut::<$ty>().map(|b| b as &mut dyn PollUnpin);
            }
        )*};
    }
    known!(
        hyper::body::Incoming,
        Full<Bytes>,
        Empty<Bytes>,
        BoxBody<Bytes, BoxError>,
        UnsyncBoxBody<Bytes, BoxError>,
        RouterBody,
    );
    #[cfg(feature = "reqwest")]
    known!(reqwest::Body);
    None
}

/// What a body knows of the event stream it carries.
pub(crate) struct Sse {
    /// The model that serves the stream, named in the final error event.
    model: Arc<str>,
    /// The API whose events the stream carries, which the final error event is written in.
    dialect: Dialect,
    /// The shared health to tell how the stream ended, and when its attempt was sent.
    health: Option<(Arc<dyn Health>, Option<Instant>)>,
    /// For a Responses API stream: the last `sequence_number` passed on to the caller, whose
    /// next one the final error event takes.
    last_sequence: Option<u64>,
    /// What is kept of the last frame passed on that held an event: where the stream's last
    /// data line is, read once at its clean end ([`Sse::ends_well`]).
    last: KeptFrame,
    /// The same of the frame with an event before it (swapped with `last`, not copied): where
    /// the event before a last usage chunk with an empty delta is, when it came in a frame of
    /// its own ([`LastEvent::EndsAfterAnEnd`]).
    before: KeptFrame,
}

/// What a stream keeps of a frame with an event, to tell at its end how it ended.
struct KeptFrame {
    /// The frame's last bytes, up to [`LAST_BYTES`]. Copied, not looked into, frame by frame:
    /// a frame costs a copy of its last bytes. A `Vec` grown on the first frames (an array of
    /// `LAST_BYTES` was zeroed for every stream and copied whole each time the state moved:
    /// 7.7k instructions a stream); not a `Bytes` of the frame, which would keep the upstream
    /// connection's read buffer from being reused.
    bytes: Vec<u8>,
    /// `bytes` is the whole frame, which starts at a line start (else its first line is cut).
    whole: bool,
    /// For a frame longer than [`LAST_BYTES`], read whole as it went on (its last event may
    /// start before the bytes kept): whether it ends the stream, and whether its last event
    /// ends it by itself ([`ends_the_stream_alone`]). `None` for a frame kept whole.
    read: Option<(bool, Option<bool>)>,
}

impl KeptFrame {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            whole: true,
            read: None,
        }
    }

    /// The whole lines kept: all of them when the frame is kept whole, else those after the
    /// first line end (the first line kept may be the end of a longer one).
    fn lines(&self) -> &[u8] {
        if self.whole {
            return &self.bytes;
        }
        memchr::memchr2(b'\n', b'\r', &self.bytes).map_or(&[], |end| &self.bytes[end + 1..])
    }

    /// Whether the frame's last data event ends the stream by itself; `None` without one.
    fn ends_alone(&self) -> Option<bool> {
        match self.read {
            Some((_, alone)) => alone,
            None => ends_the_stream_alone(self.lines()),
        }
    }
}

/// How much of the last frames with an event a stream keeps, to read its last data line at its
/// end: LLM chunks are far smaller. A longer frame is read as it goes on ([`Sse::pass`]).
const LAST_BYTES: usize = 4096;

impl Sse {
    /// A stream served by `model`, whose end tells nobody.
    pub(crate) fn new(model: Arc<str>) -> Self {
        Self {
            model,
            dialect: Dialect::Chat,
            health: None,
            last_sequence: None,
            last: KeptFrame::new(),
            before: KeptFrame::new(),
        }
    }

    /// A stream whose start (the bytes read to classify it) is `start`: its final error event
    /// is written in the dialect that start shows ([`Dialect::of_stream`]).
    pub(crate) fn starting_with(mut self, start: &[u8]) -> Self {
        self.dialect = Dialect::of_stream(start);
        self
    }

    /// A stream whose end tells `health`: a break is the model's `Downtime`, a clean end its
    /// success (of an attempt sent at `sent`).
    pub(crate) fn observed(mut self, health: Arc<dyn Health>, sent: Option<Instant>) -> Self {
        self.health = Some((health, sent));
        self
    }

    /// Notes the last sequence number of a frame that goes on to the caller of a Responses API
    /// stream (a bounded look, see [`last_sequence_number`]). Out of line, and taken as the
    /// whole poll: the caller's code for other streams is one comparison.
    #[cold]
    #[inline(never)]
    fn note_sequence(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BoxError>>>) {
        if let Poll::Ready(Some(Ok(frame))) = polled {
            if let Some(data) = frame.data_ref() {
                self.last_sequence = last_sequence_number(data).or(self.last_sequence);
            }
        }
    }

    /// Keeps the last bytes of `frame`, about to go on, unless it holds nothing but comment
    /// and blank lines (keep-alives after the last event change nothing). A frame longer than
    /// [`LAST_BYTES`] (rare: several events read at once, or one long event such as a final
    /// chunk with the whole text or a tool call's arguments) is read now, whole, without
    /// holding it: its last event may start before the bytes kept.
    fn pass(&mut self, frame: &[u8]) {
        if not_of_an_event(frame) == frame.len() {
            return;
        }
        let from = frame.len().saturating_sub(LAST_BYTES);
        let read = (from > 0).then(|| {
            let end = last_event_end(frame);
            let alone = end.map(|(end, _)| end == LastEvent::Ends);
            (ends_after(frame, end, &self.last), alone)
        });
        std::mem::swap(&mut self.last, &mut self.before);
        let last = &mut self.last;
        last.bytes.clear();
        last.bytes.extend_from_slice(&frame[from..]);
        last.whole = from == 0;
        last.read = read;
    }

    /// Whether the stream, at the clean end of its bytes, ended as its API ends it: the last
    /// data line passed on is `[DONE]`, a finish... ([`ends_after`]).
    fn ends_well(&self) -> bool {
        match self.last.read {
            Some((ends, _)) => ends,
            None => {
                let last = self.last.lines();
                ends_after(last, last_event_end(last), &self.before)
            }
        }
    }

    /// Tells health, once, how the stream ended.
    fn ended(&mut self, class: Option<ErrorClass>) {
        let Some((health, sent)) = self.health.take() else {
            return;
        };
        let observation = match class {
            Some(class) => Observation::failed(class, None),
            None => Observation {
                sent_ago: sent.map(|sent| sent.elapsed()),
                ..Observation::succeeded()
            },
        };
        health.observe(&self.model, observation);
    }
}

/// Whether a stream whose last frame with an event holds `last` (whole lines, the last event
/// whole), whose last data event says `end` ([`last_event_end`] of `last`), ended as its API
/// ends it, `before` kept of the frame before. A usage chunk with an empty delta last is the
/// end right after an event that ends the stream, in `last` or else in `before`. In doubt (no
/// data line, no event before), it did.
fn ends_after(last: &[u8], end: Option<(LastEvent, usize)>, before: &KeptFrame) -> bool {
    match end {
        None | Some((LastEvent::Ends, _)) => true,
        Some((LastEvent::Cut, _)) => false,
        Some((LastEvent::EndsAfterAnEnd, start)) => ends_the_stream_alone(&last[..start])
            .or_else(|| before.ends_alone())
            .unwrap_or(true),
    }
}

struct Replay<B> {
    prefix: Option<Bytes>,
    rest: Option<Held<B>>,
    /// Boxed: trailers on an LLM answer are rare, and this body is moved with every response.
    trailers: Option<Box<http::HeaderMap>>,
    error: Option<BoxError>,
    /// For an event stream: a broken stream ends with an error event, and tells health. Boxed:
    /// only streams have one, and this body is moved with every response.
    sse: Option<Box<Sse>>,
    /// Where the bytes read so far (sent or held) end: at an event boundary, or within an event.
    tail: Tail,
    /// For an event stream: the bytes of the event not ended yet, held until it ends.
    held: Vec<u8>,
    /// The event not ended yet outgrew [`MAX_HELD`]: its bytes go on as they come, up to its end.
    passing: bool,
}

/// The most of an unfinished event a stream holds back. LLM chunks are far smaller; an event
/// bigger than this (a base64 image) is passed on as it comes, as any byte was before.
const MAX_HELD: usize = 64 * 1024;

/// Where a stream's bytes so far end, as far as SSE events go. Only the line ends at the very
/// end of the bytes count, so it is followed across frames however they cut the lines (a `\n`
/// frame after `data: x\n` ends the event; a `\n` after `\r` is the same line end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// At an event boundary (or at the start): nothing pending.
    Boundary,
    /// Within a line.
    Line,
    /// Right after a `\r`, which a `\n` may still join into one line end.
    Cr,
    /// Right after a line end: a second one ends the event.
    LineEnd,
}

impl Tail {
    /// The tail after `bytes` more.
    fn after(self, bytes: &[u8]) -> Tail {
        let is_line_end = |b: &u8| matches!(b, b'\n' | b'\r');
        let (tail, run) = match bytes.iter().rposition(|b| !is_line_end(b)) {
            Some(last) => (Tail::Line, &bytes[last + 1..]),
            None => (self, bytes),
        };
        run.iter().fold(tail, |tail, &b| tail.line_end(b))
    }

    /// The tail after one more line-end byte (`\n` or `\r`).
    fn line_end(self, b: u8) -> Tail {
        match (self, b) {
            (Tail::Boundary, _) => Tail::Boundary,
            (Tail::Line, b'\r') => Tail::Cr,
            (Tail::Line, _) | (Tail::Cr, b'\n') => Tail::LineEnd,
            (Tail::Cr | Tail::LineEnd, _) => Tail::Boundary,
        }
    }

    /// How many of `bytes`, read after this tail, end at the last event boundary among them (0
    /// when they end none). One pass over their line ends.
    fn last_event_end(self, bytes: &[u8]) -> usize {
        let (mut tail, mut end, mut next) = (self, 0, 0);
        for i in memchr::memchr2_iter(b'\n', b'\r', bytes) {
            if i > next {
                tail = Tail::Line;
            }
            let after = tail.line_end(bytes[i]);
            if after == Tail::Boundary && tail != Tail::Boundary {
                end = i + 1;
            }
            (tail, next) = (after, i + 1);
        }
        end
    }
}

/// How many of `bytes`, read at an event boundary, are whole comment lines and line ends: no
/// part of an event, they can go on before the event that follows is whole.
fn not_of_an_event(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match bytes.get(at) {
            Some(b'\n' | b'\r') => at += 1,
            Some(b':') => match memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
                Some(line) => at += line + 1,
                None => return at,
            },
            _ => return at,
        }
    }
}

impl<B> ResponseBody<B> {
    /// A body written by the layer itself.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: ResponseKind::Full { data: Some(data) },
        }
    }

    /// The inner service's body, untouched.
    pub fn inner(body: B) -> Self {
        Self {
            kind: ResponseKind::Inner { body },
        }
    }

    /// `prefix` (already read from `rest`), then the rest of the body. `rest` is `None` when
    /// the body ended while the prefix was read; `error` is a read error to report after the
    /// prefix. For an event stream, `sse` names the model for the final error event.
    pub(crate) fn replay(
        prefix: Bytes,
        rest: Option<Held<B>>,
        trailers: Option<Box<http::HeaderMap>>,
        error: Option<BoxError>,
        sse: Option<Sse>,
    ) -> Self {
        Self {
            kind: ResponseKind::Replay {
                replay: Replay {
                    prefix: (!prefix.is_empty()).then_some(prefix),
                    rest,
                    trailers,
                    error,
                    sse: sse.map(Box::new),
                    tail: Tail::Boundary,
                    held: Vec::new(),
                    passing: false,
                },
            },
        }
    }
}

/// An empty body: what tower-http's `TimeoutLayer` answers a request with when its time is up
/// (it builds that answer with `Default`).
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ResponseKind::Full { .. } => "Full",
            ResponseKind::Inner { .. } => "Inner",
            ResponseKind::Replay { .. } => "Replay",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

/// The API whose events a stream carries: what its final error event must look like for its
/// client to read it as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// Chat completions (OpenAI, OpenRouter and the APIs that copy them): data-only chunks.
    Chat,
    /// OpenAI's Responses API: `response.*` typed events.
    Responses,
    /// Anthropic's Messages API: `message_start`, `content_block_delta`, ...
    Anthropic,
}

impl Dialect {
    /// The dialect of a stream that starts with `start`, read from the first line of its first
    /// event: an `event:` name, or else the `type` its `data:` opens with (where both APIs put
    /// it; a chat chunk has none). One line read, nothing allocated; chat when in doubt.
    fn of_stream(start: &[u8]) -> Self {
        let start = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
        let start = &start[not_of_an_event(start)..];
        let line = &start[..memchr::memchr2(b'\n', b'\r', start).unwrap_or(start.len())];
        let field = |name: &[u8]| {
            line.strip_prefix(name)
                .map(|value| value.strip_prefix(b" ").unwrap_or(value))
        };
        let name = match (field(b"event:"), field(b"data:")) {
            (Some(name), _) => Some(name),
            (None, Some(data)) => leading_type(data),
            (None, None) => None,
        };
        name.and_then(Self::of_event_name).unwrap_or(Dialect::Chat)
    }

    /// The dialect whose event type (or SSE event name) is `name`, when only one API uses it.
    fn of_event_name(name: &[u8]) -> Option<Self> {
        if name.starts_with(b"response.") {
            return Some(Dialect::Responses);
        }
        matches!(
            name,
            b"message_start"
                | b"message_delta"
                | b"message_stop"
                | b"content_block_start"
                | b"content_block_delta"
                | b"content_block_stop"
                | b"ping"
        )
        .then_some(Dialect::Anthropic)
    }
}

/// Whether `bytes`, a whole event stream, end at an event boundary with an event that ends
/// the stream as its API does: one the layer passes on as it is, without an event of its own
/// after it.
pub(crate) fn is_whole_stream(bytes: &[u8]) -> bool {
    Tail::Boundary.after(bytes) == Tail::Boundary && ends_the_stream(bytes) == Some(true)
}

/// Whether `data`, a frame of a [`ResponseBody`], holds the final error event that ends an
/// event stream broken after its first byte, in whichever API's shape it was written (see
/// [`ResponseBody`]). An upstream's own error event of the same shape counts too: either way,
/// the stream ended in an error. For an application that tells how its streams ended (the
/// example gateway's metrics) without parsing each frame.
///
/// ```
/// use tower_llm_router::body::is_stream_error_event;
///
/// let chat = br#"data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
/// let responses = b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\"}\n\n";
/// assert!(is_stream_error_event(chat) && is_stream_error_event(responses));
/// assert!(!is_stream_error_event(b"data: [DONE]\n\n"));
/// ```
pub fn is_stream_error_event(data: &[u8]) -> bool {
    memchr::memmem::find(data, br#""finish_reason":"error""#).is_some()
        || memchr::memmem::find(data, b"event: error\ndata: {\"type\":\"error\"").is_some()
}

/// The final event of a stream that broke after its first byte, in the stream's dialect:
/// OpenRouter's chunk for a chat stream, the Responses API's `error` event
/// (`ResponseErrorEvent`, numbered `sequence`), Anthropic's mid-stream `error` event.
fn stream_error_event(
    model: &str,
    dialect: Dialect,
    sequence: u64,
    error: &BoxError,
    terminate_partial: bool,
) -> Bytes {
    let mut out = Vec::with_capacity(256);
    if terminate_partial {
        out.extend_from_slice(b"\n\n");
    }
    let message = format!("the upstream stream broke: {error}");
    // The Responses and Anthropic events are written by hand with their `type` first, as both
    // APIs write it; the message as an escaped JSON string.
    let quoted = || serde_json::to_vec(&message).unwrap_or_default();
    match dialect {
        Dialect::Chat => {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&chat_error_chunk(model, &message));
        }
        Dialect::Responses => {
            out.extend_from_slice(
                b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":",
            );
            out.extend_from_slice(&quoted());
            out.extend_from_slice(b",\"param\":null,\"sequence_number\":");
            out.extend_from_slice(sequence.to_string().as_bytes());
            out.push(b'}');
        }
        Dialect::Anthropic => {
            out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":");
            out.extend_from_slice(&quoted());
            out.extend_from_slice(b"}}");
        }
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Compared as an array: a couple of wide loads, where a slice comparison was a byte loop.
const SEQUENCE_KEY: &[u8; 18] = b"\"sequence_number\":";

/// How far from a frame's end its last event's `sequence_number` is looked for: OpenAI writes
/// it as each event's last member (`..."sequence_number":12}\n\n`), servers built on its SDK's
/// types before a last `type` (`"sequence_number":12,"type":"response.<name>"}`, 44 bytes for
/// the longest name).
const SEQUENCE_TAIL: usize = 96;
/// How far from an event's start it is looked for by servers that write it after `type`:
/// `event: response.<name>\ndata: {"type":"response.<name>","sequence_number":`.
const SEQUENCE_HEAD: usize = 192;
/// How far back from a frame's end the start of its last event is looked for, when the number
/// is not at its end.
const LAST_EVENT_REACH: usize = 512;

/// The last `sequence_number` of the Responses API events in `frame` (whole events, as they go
/// on to the caller), looked for at bounded cost, at most [`SEQUENCE_TAIL`] +
/// [`LAST_EVENT_REACH`] + [`SEQUENCE_HEAD`] bytes whatever the frame's length: at its end, else
/// at the start of its last event (found within [`LAST_EVENT_REACH`] bytes of the end; else the
/// frame's start, which begins its only event, or the first of several: then the number is an
/// earlier event's, and the error event may repeat a number). `None` when none is found there.
fn last_sequence_number(frame: &[u8]) -> Option<u64> {
    if let Some(n) = sequence_number_last_member(frame) {
        return Some(n);
    }
    let tail = frame.len().saturating_sub(SEQUENCE_TAIL);
    if let Some(n) = sequence_number_in(frame, tail..frame.len()) {
        return Some(n);
    }
    let reach = frame.len().saturating_sub(LAST_EVENT_REACH);
    let start = last_event_start(&frame[reach..]).map_or(0, |at| reach + at);
    sequence_number_in(frame, start..frame.len().min(start + SEQUENCE_HEAD))
}

/// The number of a frame whose last event ends as OpenAI writes its events,
/// `"sequence_number":12}` and its line ends: read backwards, a few dozen bytes, without a
/// search (a search of the tail for each frame was about 250 instructions).
fn sequence_number_last_member(frame: &[u8]) -> Option<u64> {
    let close = frame.iter().rposition(|b| !matches!(b, b'\n' | b'\r'))?;
    let value = frame[..=close].strip_suffix(b"}")?.trim_ascii_end();
    let digits = value
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let (key, digits) = value.split_at(value.len() - digits);
    key.trim_ascii_end()
        .last_chunk()
        .is_some_and(|key| key == SEQUENCE_KEY)
        .then(|| crate::payload::plain_u64(digits))
        .flatten()
}

/// The value of the last `"sequence_number":` key of `frame` whose `q` lies within `window`.
fn sequence_number_in(frame: &[u8], window: std::ops::Range<usize>) -> Option<u64> {
    let bytes = frame.get(window.clone())?;
    // Anchored on its `q`, a byte JSON events hold far fewer of than quotes.
    let key = memchr::memrchr_iter(b'q', bytes)
        .filter_map(|at| (window.start + at).checked_sub(3))
        .find(|&at| frame[at..].first_chunk() == Some(SEQUENCE_KEY))?;
    let value = frame[key + SEQUENCE_KEY.len()..].trim_ascii_start();
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    crate::payload::plain_u64(&value[..digits])
}

/// Where the last event of `bytes` starts: just past the last blank line before the line end
/// (or ends) they finish with. `None` when there is none.
fn last_event_start(bytes: &[u8]) -> Option<usize> {
    let is_line_end = |b: &u8| matches!(b, b'\n' | b'\r');
    let last_line = bytes.iter().rposition(|b| !is_line_end(b))?;
    // Two line ends in a row make a blank line, unless they are one `\r\n`.
    let blank = bytes[..last_line]
        .windows(2)
        .rposition(|w| is_line_end(&w[0]) && is_line_end(&w[1]) && w != b"\r\n")?;
    let mut start = blank + 2;
    if bytes[blank + 1] == b'\r' && bytes.get(start) == Some(&b'\n') {
        start += 1;
    }
    Some(start)
}

/// OpenRouter's mid-stream error chunk: `error` plus a choice with `finish_reason: "error"`.
fn chat_error_chunk(model: &str, message: &str) -> Vec<u8> {
    let event = serde_json::json!({
        "object": "chat.completion.chunk",
        "model": model,
        "error": {
            "code": 502,
            "message": message,
            "metadata": { "error_type": "provider_unavailable" },
        },
        "choices": [{ "index": 0, "delta": { "content": "" }, "finish_reason": "error" }],
    });
    serde_json::to_vec(&event).unwrap_or_default()
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ResponseKindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseKindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            ResponseKindProj::Replay { replay } => replay.poll_observed(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Full { data } => data.is_none(),
            ResponseKind::Inner { body } => body.is_end_stream(),
            ResponseKind::Replay { replay } => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Replay { replay } => {
                let prefix = replay.prefix.as_ref().map_or(0, |p| p.len() as u64);
                match &replay.rest {
                    // An event stream may still grow by a final error event, or lose the
                    // unfinished event it replaces.
                    _ if replay.sse.as_ref().is_some_and(|sse| {
                        replay.rest.is_some() || replay.tail != Tail::Boundary || !sse.ends_well()
                    }) =>
                    {
                        SizeHint::new()
                    }
                    Some(rest) => {
                        let inner = rest.get_ref().size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(prefix + inner.lower());
                        if let Some(upper) = inner.upper() {
                            hint.set_upper(prefix + upper);
                        }
                        hint
                    }
                    None if replay.error.is_none() => SizeHint::with_exact(prefix),
                    None => SizeHint::new(),
                }
            }
        }
    }
}

impl<B> Replay<B>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    /// [`poll_frame`](Self::poll_frame), and an event stream's health told of its clean end:
    /// when the last frame is out (a server stops polling a body at its end), or at the end.
    /// A Responses API stream's frames are noted for the number of its error event.
    fn poll_observed(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.poll_frame(cx);
        let Some(sse) = self.sse.as_deref_mut() else {
            return polled;
        };
        // Here, where the stream's state is read for health anyway, the check costs other
        // streams 2 instructions a frame; where the frame is passed on, it cost 6 to 11.
        if sse.dialect == Dialect::Responses {
            sse.note_sequence(&polled);
        }
        if sse.health.is_some() {
            // A break took `sse`: what is left ends well.
            let ended = match &polled {
                Poll::Ready(None) => true,
                Poll::Ready(Some(Ok(_))) => {
                    self.prefix.is_none()
                        && self.error.is_none()
                        && self
                            .rest
                            .as_ref()
                            .is_none_or(|b| b.get_ref().is_end_stream())
                        && self.tail == Tail::Boundary
                        && sse.ends_well()
                }
                _ => false,
            };
            if ended {
                sse.ended(None);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.error.is_none()
            && self
                .rest
                .as_ref()
                .is_none_or(|b| b.get_ref().is_end_stream())
            // An event stream that ends within an event, or after an event that does not end
            // it, still has its error event to send (looked at last: only at the end).
            && self
                .sse
                .as_ref()
                .is_none_or(|sse| self.tail == Tail::Boundary && sse.ends_well())
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            if let Some(data) = self.pass(prefix) {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        if let Some(error) = self.error.take() {
            return Poll::Ready(Some(self.broken(error)));
        }
        while let Some(rest) = self.rest.as_mut() {
            match ready!(rest.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(data) = self.pass(data) {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    // Trailers are the last frame: the end of the data.
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok().map(Box::new);
                        self.rest = None;
                    }
                },
                Some(Err(error)) => {
                    self.rest = None;
                    return Poll::Ready(Some(self.broken(error)));
                }
                None => self.rest = None,
            }
        }
        if let Some(last) = self
            .end_of_events()
            .or_else(|| self.end_without_last_event())
        {
            return Poll::Ready(Some(last));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    /// What of `data`, read from the upstream, goes on now (`None`: nothing yet), kept for
    /// the stream's end ([`Sse::pass`]).
    fn pass(&mut self, data: Bytes) -> Option<Bytes> {
        let out = self.pass_events(data);
        if let (Some(sse), Some(out)) = (self.sse.as_deref_mut(), &out) {
            sse.pass(out);
        }
        out
    }

    /// What of `data` goes on now. An event stream goes on up to its last event boundary; the
    /// rest of an event waits for its end.
    fn pass_events(&mut self, data: Bytes) -> Option<Bytes> {
        let before = self.tail;
        self.tail = before.after(&data);
        if self.sse.is_none() {
            return Some(data);
        }
        if self.tail == Tail::Boundary {
            // What upstreams do nearly always: whole events in a frame, passed on as they are.
            self.passing = false;
            if self.held.is_empty() {
                return Some(data);
            }
            self.held.extend_from_slice(&data);
            return Some(Bytes::from(std::mem::take(&mut self.held)));
        }
        let mut end = before.last_event_end(&data);
        if self.passing {
            if end == 0 {
                return Some(data);
            }
            self.passing = false;
        }
        // What follows an event boundary up to the next field line goes on too: comment lines
        // (keep-alives an upstream sends while it thinks) and blank lines are no part of an event.
        if end > 0 || self.held.is_empty() {
            end += not_of_an_event(&data[end..]);
        }
        let mut ended = match end {
            0 => None,
            _ if self.held.is_empty() => Some(data.slice(..end)),
            _ => {
                self.held.extend_from_slice(&data[..end]);
                Some(Bytes::from(std::mem::take(&mut self.held)))
            }
        };
        self.held.extend_from_slice(&data[end..]);
        if ended.is_none()
            && self.held.first() == Some(&b':')
            && memchr::memchr2(b'\n', b'\r', &data).is_some()
        {
            // A comment line that began in an earlier frame has ended in this one (looked for
            // only when a line ends: a long comment in tiny frames is not scanned again each time).
            let comments = not_of_an_event(&self.held);
            if comments > 0 {
                ended = Some(self.held.drain(..comments).collect::<Vec<u8>>().into());
            }
        }
        if self.held.len() <= MAX_HELD {
            return ended;
        }
        // An event longer than any a client should wait for: passed on as it comes.
        self.passing = true;
        let held = Bytes::from(std::mem::take(&mut self.held));
        Some(match ended {
            None => held,
            Some(ended) => [ended, held].concat().into(),
        })
    }

    /// At the clean end of the upstream's bytes: an event stream that ended within an event is
    /// cut (SSE clients drop an unfinished last event), and gets the error event in its place.
    /// One whose last event is a `[DONE]` without its blank line has ended: that line is ended.
    fn end_of_events(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        // Nothing of an event held nor passed on: the last bytes were comment or blank lines.
        if self.sse.is_none() || self.held.is_empty() && !self.passing {
            return None;
        }
        // Only what ends the event: `data: [DONE]\n` needs one more line end, not two (a
        // blank line too many would be bytes the upstream did not send).
        let end: &[u8] = match self.held.last() {
            Some(b'\n') => b"\n",
            Some(b'\r') => b"\r",
            _ => b"\n\n",
        };
        self.held.extend_from_slice(end);
        if !self.passing && crate::classify::first_sse_event(&self.held) == SseEvent::End {
            self.tail = Tail::Boundary;
            let done = std::mem::take(&mut self.held);
            if let Some(sse) = self.sse.as_deref_mut() {
                sse.pass(&done);
            }
            return Some(Ok(Frame::data(Bytes::from(done))));
        }
        Some(self.broken("the stream ended in the middle of an event".into()))
    }

    /// At the clean end of the upstream's bytes, after whole events: an event stream whose
    /// last event does not end it as its API does (`[DONE]` or a finish reason, `message_stop`,
    /// `response.completed`...) was cut between two events, and gets the error event.
    fn end_without_last_event(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if self.sse.as_ref().is_none_or(|sse| sse.ends_well()) {
            return None;
        }
        Some(self.broken("the stream ended without its last event".into()))
    }

    /// What a read error becomes: the final error event of an event stream, or the error.
    fn broken(&mut self, error: BoxError) -> Result<Frame<Bytes>, BoxError> {
        self.rest = None;
        match self.sse.take() {
            Some(mut sse) => {
                let model = &sse.model;
                // The model as a string field, which formatters quote and escape: it is the
                // client's to choose, and written as it is a line break in it would start a
                // line of the client's making in the logs.
                tracing::warn!(gen_ai.response.model = &**model, %error, "upstream stream broke after the first byte");
                // The unfinished event is dropped, as a client drops it; one passed on
                // already (longer than `MAX_HELD`) is ended first, so that the error event is
                // an event of its own.
                self.held = Vec::new();
                let next = sse.last_sequence.map_or(0, |n| n.saturating_add(1));
                let event = stream_error_event(model, sse.dialect, next, &error, self.passing);
                // Told when it happens: the next requests try the model later.
                sse.ended(Some(ErrorClass::Downtime));
                Ok(Frame::data(event))
            }
            None => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn a_stream_s_dialect_is_read_from_its_first_event() {
        let cases: &[(&str, Dialect)] = &[
            ("event: response.created\ndata: {}\n\n", Dialect::Responses),
            ("event:response.in_progress\n", Dialect::Responses),
            (
                "data: {\"type\":\"response.created\",\"response\":{}}\n\n",
                Dialect::Responses,
            ),
            (
                "data: { \"type\" : \"response.created\"}\r\n",
                Dialect::Responses,
            ),
            (
                "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
                Dialect::Anthropic,
            ),
            (
                "\u{feff}: keep-alive\n\nevent: ping\ndata: {}\n\n",
                Dialect::Anthropic,
            ),
            (
                "data: {\"type\":\"content_block_delta\"}",
                Dialect::Anthropic,
            ),
            (
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\"}\n\n",
                Dialect::Chat,
            ),
            (
                ": OPENROUTER PROCESSING\n\ndata: {\"choices\":[]}\n\n",
                Dialect::Chat,
            ),
            // Error events and shapes no one API owns: chat, as before.
            (
                "event: error\ndata: {\"type\":\"error\"}\n\n",
                Dialect::Chat,
            ),
            (
                "data: {\"type\":\"respo\\u006ese.created\"}\n\n",
                Dialect::Chat,
            ),
            (
                "data: {\"id\":1,\"type\":\"response.created\"}\n\n",
                Dialect::Chat,
            ),
            ("id: 1\nevent: response.created\n", Dialect::Chat),
            ("data: [DONE]\n\n", Dialect::Chat),
            ("", Dialect::Chat),
        ];
        for (start, dialect) in cases {
            assert_eq!(Dialect::of_stream(start.as_bytes()), *dialect, "{start:?}");
        }
    }

    #[test]
    fn the_last_sequence_number_of_a_frame_is_found_in_its_shapes() {
        let long = "x".repeat(2 * LAST_EVENT_REACH);
        let cases: &[(String, Option<u64>)] = &[
            // OpenAI's member order: the number last, after a long object too.
            (format!("event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"instructions\":\"{long}\"}},\"sequence_number\":0}}\n\n"), Some(0)),
            ("data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\",\"sequence_number\":7}\n\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"b\",\"sequence_number\":8}\r\n\r\n".into(), Some(8)),
            // An SDK's types: `type` after it.
            ("data: {\"content_index\":0,\"delta\":\"a\",\"sequence_number\":12,\"type\":\"response.image_generation_call.partial_image\"}\n\n".into(), Some(12)),
            // After `type`: the last event's, whose start is near the end.
            (format!("data: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"instructions\":\"{long}\"}}}}\n\nevent: response.in_progress\r\ndata: {{\"type\":\"response.in_progress\",\"sequence_number\": 1,\"response\":{{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[],\"instructions\":null,\"metadata\":{{}}}}}}\r\n\r\n"), Some(1)),
            (format!("data: {{\"type\":\"response.created\",\"sequence_number\":3,\"response\":{{\"instructions\":\"{long}\"}}}}\n\n"), Some(3)),
            // A long last event after a long one: the first one's number (a bounded look);
            // after a short one, the frame's head holds the last one's too.
            (format!("data: {{\"type\":\"a\",\"sequence_number\":4,\"text\":\"{long}\"}}\n\ndata: {{\"type\":\"b\",\"sequence_number\":5,\"text\":\"{long}\"}}\n\n"), Some(4)),
            (format!("data: {{\"type\":\"a\",\"sequence_number\":4}}\n\ndata: {{\"type\":\"b\",\"sequence_number\":5,\"text\":\"{long}\"}}\n\n"), Some(5)),
            // None, or not a number: nothing.
            ("data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\n".into(), None),
            ("data: {\"type\":\"x\",\"sequence_number\":\"7\"}\n\n".into(), None),
            ("data: {\"type\":\"x\",\"sequence_number\":12345678901234567890}\n\n".into(), None),
            // Quoted inside a string: escaped, no key.
            ("data: {\"type\":\"x\",\"delta\":\"\\\"sequence_number\\\":9\"}\n\n".into(), None),
            ("".into(), None),
            ("\n\n".into(), None),
        ];
        for (frame, expected) in cases {
            assert_eq!(
                last_sequence_number(frame.as_bytes()),
                *expected,
                "{frame:?}"
            );
        }
        // OpenAI's order is read backwards from the end, without a search.
        let last = |frame: &str| sequence_number_last_member(frame.as_bytes());
        assert_eq!(last(&cases[0].0), Some(0));
        assert_eq!(last(&cases[1].0), Some(8));
        assert_eq!(
            last("data: {\"type\":\"x\",\"sequence_number\" : 42 }\r\r"),
            None
        );
        assert_eq!(
            last("data: {\"type\":\"x\",\"sequence_number\": 42 }\r\r"),
            Some(42)
        );
        assert_eq!(last(&cases[2].0), None);
        assert_eq!(last("data: {\"type\":\"x\",\"n\":42}\n\n"), None);
    }

    #[test]
    fn every_dialect_s_error_event_is_one_event_the_gateway_knows() {
        let error: BoxError = "cut".into();
        for dialect in [Dialect::Chat, Dialect::Responses, Dialect::Anthropic] {
            for partial in [false, true] {
                let event = stream_error_event("m\n", dialect, 0, &error, partial);
                assert!(is_stream_error_event(&event), "{dialect:?}");
                let event = std::str::from_utf8(&event).unwrap();
                let event = event
                    .strip_prefix("\n\n")
                    .filter(|_| partial)
                    .unwrap_or(event);
                let event = event.strip_suffix("\n\n").unwrap();
                assert!(!event.contains("\n\n"), "one event: {event:?}");
                let data = event
                    .lines()
                    .last()
                    .unwrap()
                    .strip_prefix("data: ")
                    .unwrap();
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                let message = match dialect {
                    Dialect::Chat => &data["error"]["message"],
                    Dialect::Responses => &data["message"],
                    Dialect::Anthropic => &data["error"]["message"],
                };
                assert_eq!(message, "the upstream stream broke: cut", "{dialect:?}");
            }
        }
    }

    #[tokio::test]
    async fn segments_stream_in_order_and_report_exact_size() {
        let mut s = Segments::new();
        for part in ["a", "", "bc", "def"] {
            s.push(Bytes::from(part));
        }
        let body = RouterBody::from(s);
        assert_eq!(body.size_hint().exact(), Some(6));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcdef");
    }

    #[test]
    fn the_tail_follows_line_ends_across_frames() {
        let after = |frames: &[&str]| {
            frames
                .iter()
                .fold(Tail::Boundary, |tail, frame| tail.after(frame.as_bytes()))
        };
        for ended in [
            &["data: x\n\n"][..],
            &["data: x\n", "\n"],
            &["data: x\r", "\n", "\r\n"],
            &["data: x\r\n\r", "\n"],
            &["data: x\r\r"],
            &["data: x\n\n", ""],
            &[": comment\n", "\n\n"],
        ] {
            assert_eq!(after(ended), Tail::Boundary, "{ended:?}");
        }
        for within in [
            &["data: x"][..],
            &["data: x\n"],
            &["data: x\r"],
            &["data: x\r", "\n"],
            &["data: x\n\n", "data: y\n"],
            &["data: x\n\n", "data"],
        ] {
            assert_ne!(after(within), Tail::Boundary, "{within:?}");
        }
    }

    /// A server stops polling a body that says it has ended: one whose upstream ended within
    /// an event must not say so before its error event is out.
    #[tokio::test]
    async fn a_stream_that_ended_within_an_event_is_not_at_its_end_before_the_error_event() {
        let cut = Bytes::from_static(b"data: {}\n\ndata: {\"choi");
        let ended = Full::new(Bytes::new());
        assert!(ended.is_end_stream());
        let mut body = ResponseBody::replay(
            cut.clone(),
            Some(Held::new(ended)),
            None,
            None,
            Some(Sse::new("m".into())),
        );
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, cut[..10], "the whole event; the fragment is held");
        assert!(!body.is_end_stream());
        let event = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(event.starts_with(b"data: {"), "{event:?}");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    /// The common `Unpin` bodies are held as they are; any other body is pinned in a box, and
    /// reads the same either way.
    #[tokio::test]
    async fn only_bodies_not_known_to_be_unpin_are_boxed() {
        let known = Held::new(Full::new(Bytes::from_static(b"data: {}\n\n")));
        assert!(matches!(known, Held::Inline(_)));
        let unknown = http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, BoxError>(
            Frame::data(Bytes::from_static(b"data: {}\n\n")),
        )]));
        let unknown = Held::new(unknown);
        assert!(matches!(unknown, Held::Boxed(_)));
        let known = ResponseBody::replay(Bytes::new(), Some(known), None, None, None);
        let unknown = ResponseBody::replay(Bytes::new(), Some(unknown), None, None, None);
        let known = known.collect().await.unwrap().to_bytes();
        assert_eq!(known, unknown.collect().await.unwrap().to_bytes());
        assert_eq!(&known[..], b"data: {}\n\n");
    }

    /// Health that records what it is told.
    #[derive(Debug, Default)]
    struct Told(std::sync::Mutex<Vec<(String, Observation)>>);

    impl Health for Told {
        fn is_cooling_down(&self, _model: &str) -> bool {
            false
        }

        fn observe(&self, model: &str, observation: Observation) {
            self.0.lock().unwrap().push((model.to_owned(), observation));
        }
    }

    /// A stream's health hears of its clean end by the frame that leaves the body at its end
    /// (a server polls no further), and of a break when it happens; once either way.
    #[tokio::test]
    async fn a_stream_tells_health_how_it_ended() {
        let told = Arc::new(Told::default());
        let sse = || Some(Sse::new("m".into()).observed(told.clone(), Some(Instant::now())));
        let first = Bytes::from_static(b"data: {}\n\n");
        let rest = Full::new(Bytes::from_static(b"data: [DONE]\n\n"));
        let mut body =
            ResponseBody::replay(first.clone(), Some(Held::new(rest)), None, None, sse());
        while !body.is_end_stream() {
            body.frame().await.unwrap().unwrap();
        }
        let ended: Vec<_> = std::mem::take(&mut *told.0.lock().unwrap());
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!((&*ended[0].0, ended[0].1.class), ("m", None));
        assert!(ended[0].1.sent_ago.is_some());

        let cut = Full::new(Bytes::from_static(b"data: {\"cho"));
        let body = ResponseBody::replay(first, Some(Held::new(cut)), None, None, sse());
        body.collect().await.unwrap();
        let ended = told.0.lock().unwrap();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].1.class, Some(ErrorClass::Downtime));
    }

    /// A body that learns of its end only when polled past its last frame (hyper's `Incoming`
    /// of a chunked answer) tells health of its clean end then.
    #[tokio::test]
    async fn a_stream_that_knows_its_end_late_tells_health_at_its_end() {
        let told = Arc::new(Told::default());
        let last = [Ok::<_, BoxError>(Frame::data(Bytes::from_static(
            b"data: [DONE]\n\n",
        )))];
        let rest = http_body_util::StreamBody::new(futures::stream::iter(last));
        assert!(!rest.is_end_stream());
        let sse = Sse::new("m".into()).observed(told.clone(), Some(Instant::now()));
        let first = Bytes::from_static(b"data: {}\n\n");
        let body = ResponseBody::replay(first, Some(Held::new(rest)), None, None, Some(sse));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"data: {}\n\ndata: [DONE]\n\n");
        let ended = told.0.lock().unwrap();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!((&*ended[0].0, ended[0].1.class), ("m", None));
    }

    #[test]
    fn more_than_eight_pushes_still_keep_every_byte() {
        let mut s = Segments::new();
        for i in 0..20u8 {
            s.push(Bytes::from(vec![b'a' + i]));
        }
        assert_eq!(s.len(), 20);
        assert_eq!(&s.to_bytes()[..], b"abcdefghijklmnopqrst");
    }

    #[tokio::test]
    async fn wrapping_a_router_body_does_not_box_it_again() {
        let inner = RouterBody::from(Bytes::from_static(b"xyz"));
        let outer = RouterBody::new(inner);
        assert_eq!(outer.buffered_len(), Some(3));
        let streamed = RouterBody::new(Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(streamed.buffered_len(), None);
        assert_eq!(&streamed.collect_bytes().await.unwrap()[..], b"xyz");
    }

    /// An event stream replayed from `frames` (the first `in_prefix` of them as the prefix the
    /// layer read), collected.
    fn replayed(frames: &[Vec<u8>], in_prefix: usize, error: bool) -> Vec<u8> {
        let in_prefix = in_prefix.min(frames.len());
        let prefix: Vec<u8> = frames[..in_prefix].concat();
        let mut rest: Vec<Result<Frame<Bytes>, BoxError>> = frames[in_prefix..]
            .iter()
            .map(|f| Ok(Frame::data(Bytes::from(f.clone()))))
            .collect();
        if error {
            rest.push(Err("reset".into()));
        }
        let rest = http_body_util::StreamBody::new(futures::stream::iter(rest));
        let body = ResponseBody::replay(
            prefix.into(),
            Some(Held::new(rest)),
            None,
            None,
            Some(Sse::new("m".into())),
        );
        let collected = futures::executor::block_on(body.collect());
        collected.unwrap().to_bytes().to_vec()
    }

    /// An event over the hold limit goes on as it comes, and a cut within it ends it before
    /// the error event.
    #[test]
    fn an_event_longer_than_the_hold_limit_is_passed_on_as_it_comes() {
        let long = [b"data: ".as_slice(), &vec![b'x'; MAX_HELD + 10]].concat();
        let frames: Vec<Vec<u8>> = [b"data: {}\n\n".as_slice(), &long]
            .concat()
            .chunks(1000)
            .map(<[u8]>::to_vec)
            .collect();
        let out = replayed(&frames, 1, false);
        let sent = frames.concat();
        assert_eq!(&out[..sent.len()], sent);
        assert!(out[sent.len()..].starts_with(b"\n\ndata: {"));
        // Ended, the next events are held again.
        let mut frames = frames;
        frames.push(b"\n\ndata: {\"a\"".to_vec());
        let out = replayed(&frames, 1, true);
        let ended = [sent.as_slice(), b"\n\n"].concat();
        assert_eq!(&out[..ended.len()], ended);
        assert!(out[ended.len()..].starts_with(b"data: {\""), "no fragment");
    }

    proptest::proptest! {
        /// However the frames cut an event stream: one that ends at an event boundary comes out
        /// byte for byte; one cut within an event comes out up to its last whole event, then
        /// the error event alone (a `[DONE]` line missing its blank line is ended instead).
        #[test]
        fn whole_events_go_on_and_a_cut_one_never_does(
            lines in proptest::collection::vec((
                proptest::sample::select(vec![
                    "", "", "", "data: {\"a\":1}", "data: [DONE]", ": keep-alive", "event: x",
                    "id: 7", "data",
                ]),
                proptest::sample::select(vec!["\n", "\r\n", "\r"]),
            ), 0..20),
            last in proptest::sample::select(vec![
                "", "data: {\"cho", "data: [DONE]", "event: y\n", ": kee", ": ping\n",
            ]),
            cuts in proptest::collection::vec(0usize..300, 0..12),
            in_prefix in 0usize..4,
            error: bool,
        ) {
            let mut all = Vec::new();
            for (line, end) in lines {
                all.extend_from_slice(line.as_bytes());
                all.extend_from_slice(end.as_bytes());
            }
            all.extend_from_slice(last.as_bytes());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.extend([0, all.len()]);
            cuts.sort_unstable();
            let frames: Vec<Vec<u8>> = cuts.windows(2).map(|w| all[w[0]..w[1]].to_vec()).collect();
            let out = replayed(&frames, in_prefix, error);
            // What can go on: whole events, then comment and blank lines up to a field line.
            let mut sendable = Tail::Boundary.last_event_end(&all);
            loop {
                match all.get(sendable) {
                    Some(b'\n' | b'\r') => sendable += 1,
                    Some(b':') => match all[sendable..].iter().position(|b| matches!(b, b'\n' | b'\r')) {
                        Some(line) => sendable += line + 1,
                        None => break,
                    },
                    _ => break,
                }
            }
            // The line end a last `[DONE]` lacks: one more after a line end, else a blank line.
            let end: &[u8] = match all.last() {
                Some(b'\n') => b"\n",
                Some(b'\r') => b"\r",
                _ => b"\n\n",
            };
            let done = [&all[sendable..], end].concat();
            // Whole events end as a chat stream does when their last field line (past comment
            // and blank lines) is `data: [DONE]`, the only data line of its event, and are cut
            // when it is another data line; after another field line (an event without data),
            // either may be told.
            let mut lines: Vec<&[u8]> = Vec::new();
            let mut rest = &all[..sendable];
            while let Some(end) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) {
                lines.push(&rest[..end]);
                let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                rest = &rest[end + 1 + usize::from(crlf)..];
            }
            let last_field = lines.iter().rposition(|line| !line.is_empty() && !line.starts_with(b":"));
            let ends = last_field.and_then(|last| {
                let data = lines[last].strip_prefix(b"data:")?;
                let alone = last == 0 || !lines[last - 1].starts_with(b"data:");
                Some(alone && data.trim_ascii() == b"[DONE]")
            });
            let error_event = |event: &[u8]| {
                event.starts_with(b"data: {") && event.ends_with(b"}\n\n")
            };
            if sendable == all.len() && !error {
                proptest::prop_assert_eq!(&out[..sendable], &all[..]);
                let added = &out[sendable..];
                match ends {
                    Some(true) => proptest::prop_assert!(added.is_empty(), "{:?}", added),
                    Some(false) => proptest::prop_assert!(error_event(added), "{:?}", added),
                    None => proptest::prop_assert!(added.is_empty() || error_event(added)),
                }
            } else if !error && crate::classify::first_sse_event(&done) == SseEvent::End {
                proptest::prop_assert_eq!(out, [all.as_slice(), end].concat());
            } else {
                proptest::prop_assert_eq!(&out[..sendable], &all[..sendable]);
                let event = &out[sendable..];
                let one_event = event.starts_with(b"data: {") && event.ends_with(b"}\n\n");
                proptest::prop_assert!(one_event, "{:?}", event);
                proptest::prop_assert_eq!(memchr::memmem::find_iter(event, b"\n").count(), 2);
            }
        }
    }
}
