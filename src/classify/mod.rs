//! STUB (replaced by the real module on merge).
#![allow(
    missing_docs,
    missing_debug_implementations,
    dead_code,
    unreachable_pub
)]
use http::{HeaderMap, StatusCode};
use std::borrow::Cow;
use std::time::Duration;
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Moderation,
    ContextLength,
    RateLimited,
    Downtime,
    Other,
}
impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        Self::Moderation,
        Self::ContextLength,
        Self::RateLimited,
        Self::Downtime,
        Self::Other,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Moderation => "moderation",
            Self::ContextLength => "context_length",
            Self::RateLimited => "rate_limited",
            Self::Downtime => "downtime",
            Self::Other => "other",
        }
    }
}
impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
pub fn classify_response(status: StatusCode, _h: &HeaderMap, body: &[u8]) -> Option<ErrorClass> {
    let s = String::from_utf8_lossy(body);
    if status.is_success() {
        if s.contains("\"error\"") {
            return Some(ErrorClass::Downtime);
        }
        return None;
    }
    Some(match status.as_u16() {
        429 => ErrorClass::RateLimited,
        403 => ErrorClass::Moderation,
        400 if s.contains("context") => ErrorClass::ContextLength,
        400 if s.contains("content_filter") => ErrorClass::Moderation,
        500..=599 => ErrorClass::Downtime,
        _ => ErrorClass::Other,
    })
}
pub fn classify_error(_e: &(dyn std::error::Error + 'static)) -> ErrorClass {
    ErrorClass::Downtime
}
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_secs)
}
#[non_exhaustive]
pub enum SseEvent<'a> {
    NeedMore,
    Event { data: Cow<'a, [u8]>, end: usize },
    End,
}
pub fn first_sse_event(buf: &[u8]) -> SseEvent<'_> {
    let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") else {
        return SseEvent::NeedMore;
    };
    let ev = &buf[..pos];
    let data = ev
        .split(|b| *b == b'\n')
        .filter_map(|l| l.strip_prefix(b"data:"))
        .next()
        .unwrap_or(b"");
    SseEvent::Event {
        data: Cow::Borrowed(data),
        end: pos + 2,
    }
}
pub trait Classify: Clone + Send + Sync + 'static {
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<ErrorClass>;
    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> ErrorClass {
        classify_error(error)
    }
}
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier {
    _priv: (),
}
impl DefaultClassifier {
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}
impl Classify for DefaultClassifier {
    fn classify_response(&self, s: StatusCode, h: &HeaderMap, b: &[u8]) -> Option<ErrorClass> {
        classify_response(s, h, b)
    }
}
