//! What can be wrong with a request body, and the limits that bound the work done on it.

use std::fmt;

use crate::ApiError;

/// Bounds on what [`ChatRequest::parse_with`](super::ChatRequest::parse_with) accepts.
///
/// Build it with struct update syntax:
///
/// ```
/// use tower_llm_router::payload::Limits;
///
/// let limits = Limits { max_models: 4, ..Limits::default() };
/// assert_eq!(limits.max_models, 4);
/// assert_eq!(Limits::default().max_models, 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest `models` array accepted (default 64). A longer one is refused with
    /// `too_many_models` as soon as the entry past the limit is read: nothing more is decoded
    /// or stored.
    pub max_models: usize,
    /// The longest `plugins` array accepted (default 32), refused with `too_many_plugins`.
    pub max_plugins: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_models: 64,
            max_plugins: 32,
        }
    }
}

/// Why a request body was refused.
///
/// Every variant becomes a `400 invalid_request_error` through
/// [`to_api_error`](PayloadError::to_api_error), with a stable `code`:
///
/// | variant | `code` | `param` |
/// |---|---|---|
/// | [`NotUtf8`](PayloadError::NotUtf8), [`InvalidJson`](PayloadError::InvalidJson) | `invalid_json` | none |
/// | [`NotAnObject`](PayloadError::NotAnObject) | `not_an_object` | none |
/// | [`DuplicateKey`](PayloadError::DuplicateKey) | `duplicate_key` | the key |
/// | [`InvalidField`](PayloadError::InvalidField) | `bad_model`, `bad_models`, `bad_stream`, `bad_plugins` | the field |
/// | [`TooManyModels`](PayloadError::TooManyModels) | `too_many_models` | `models` |
/// | [`TooManyPlugins`](PayloadError::TooManyPlugins) | `too_many_plugins` | `plugins` |
/// | [`BadMessages`](PayloadError::BadMessages) | `bad_messages` | `messages` |
/// | [`BadInput`](PayloadError::BadInput) | `bad_input` | `input` |
/// | [`AmbiguousPrompt`](PayloadError::AmbiguousPrompt) | `ambiguous_prompt` | `input` |
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::{ChatRequest, PayloadError};
///
/// let err = ChatRequest::parse(Bytes::from_static(br#"{"model":"a","model":"b"}"#)).unwrap_err();
/// assert!(matches!(err, PayloadError::DuplicateKey { key: "model" }));
/// assert_eq!(err.to_string(), "duplicate key `model` in the request body");
/// let api = err.to_api_error();
/// assert_eq!((api.status().as_u16(), api.code(), api.param()), (400, "duplicate_key", Some("model")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// The body is not UTF-8; `valid_up_to` is the length of its valid prefix.
    NotUtf8 {
        /// Bytes of valid UTF-8 before the first invalid one.
        valid_up_to: usize,
    },
    /// The body is not one JSON value (syntax error, truncation, nesting deeper than 128, or
    /// trailing characters after the object).
    InvalidJson {
        /// What the JSON parser reported, without the position.
        reason: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The body is JSON, but not an object.
    NotAnObject,
    /// A key the router reads appears twice: at the top level, or as `response_format`'s
    /// `type`, the Responses API's `text.format` or its `type`, Anthropic's
    /// `output_config.format` or its `type`, `output_format`'s `type`, or a plugin entry's `id`
    /// (then `key` is `response_format.type`, `text.format`, `text.format.type`,
    /// `output_config.format`, `output_config.format.type`, `output_format.type` or
    /// `plugins[].id`).
    DuplicateKey {
        /// The key, decoded.
        key: &'static str,
    },
    /// A field the router reads has the wrong type, a model id in `model` or `models` is
    /// longer than [`MAX_MODEL_ID_BYTES`](super::MAX_MODEL_ID_BYTES), or an entry of `models`
    /// is empty.
    InvalidField {
        /// The field.
        field: &'static str,
        /// What it must be, e.g. `"a string"`.
        expected: &'static str,
    },
    /// `models` is longer than [`Limits::max_models`].
    TooManyModels {
        /// The limit.
        max: usize,
    },
    /// `plugins` is longer than [`Limits::max_plugins`].
    TooManyPlugins {
        /// The limit.
        max: usize,
    },
    /// `messages` is not an array of message objects (reported by
    /// [`ChatRequest::messages`](super::ChatRequest::messages) only).
    BadMessages {
        /// The index of the faulty message, when the array itself is fine.
        index: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// The Responses API's `input` is not a string or an array of input items (reported by
    /// [`ChatRequest::prompt`](super::ChatRequest::prompt) only).
    BadInput {
        /// The index of the faulty item, when the array itself is fine.
        index: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// The body has both `messages` and `input` (neither `null`): no API reads both, so the
    /// router cannot know which prompt the upstream will read (reported by
    /// [`ChatRequest::prompt`](super::ChatRequest::prompt) only).
    AmbiguousPrompt,
}

impl PayloadError {
    /// Turns a `serde_json` syntax error into [`InvalidJson`](PayloadError::InvalidJson).
    pub(super) fn json(err: &serde_json::Error) -> Self {
        Self::InvalidJson {
            reason: without_position(err),
            line: err.line(),
            column: err.column(),
        }
    }

    /// [`InvalidJson`](PayloadError::InvalidJson) for a bracket at offset `at` nested deeper
    /// than serde_json's limit, with serde_json's wording.
    pub(super) fn too_deep(text: &str, at: usize) -> Self {
        let before = text.as_bytes().get(..at).unwrap_or_default();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |nl| nl + 1);
        Self::InvalidJson {
            reason: "recursion limit exceeded".to_owned(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: at - line_start + 1,
        }
    }

    /// The machine-readable `code` of the API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotUtf8 { .. } | Self::InvalidJson { .. } => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::InvalidField { field, .. } => match *field {
                "model" => "bad_model",
                "models" => "bad_models",
                "stream" => "bad_stream",
                "plugins" => "bad_plugins",
                _ => "bad_field",
            },
            Self::TooManyModels { .. } => "too_many_models",
            Self::TooManyPlugins { .. } => "too_many_plugins",
            Self::BadMessages { .. } => "bad_messages",
            Self::BadInput { .. } => "bad_input",
            Self::AmbiguousPrompt => "ambiguous_prompt",
        }
    }

    /// The request field the error is about, if any.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::NotUtf8 { .. } | Self::InvalidJson { .. } | Self::NotAnObject => None,
            Self::DuplicateKey { key } => Some(key),
            Self::InvalidField { field, .. } => Some(field),
            Self::TooManyModels { .. } => Some("models"),
            Self::TooManyPlugins { .. } => Some("plugins"),
            Self::BadMessages { .. } => Some("messages"),
            Self::BadInput { .. } | Self::AmbiguousPrompt => Some("input"),
        }
    }

    /// The `400 invalid_request_error` answered for this error, with its stable `code` and
    /// `param`.
    pub fn to_api_error(&self) -> ApiError {
        let err = ApiError::bad_request(self.code(), self.to_string());
        match self.param() {
            Some(param) => err.with_param(param),
            None => err,
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 { valid_up_to } => {
                write!(f, "request body is not valid utf-8 (at byte {valid_up_to})")
            }
            Self::InvalidJson {
                reason,
                line,
                column,
            } => write!(
                f,
                "request body is not valid json: {reason} at line {line} column {column}"
            ),
            Self::NotAnObject => f.write_str("request body must be a json object"),
            Self::DuplicateKey { key } => write!(f, "duplicate key `{key}` in the request body"),
            Self::InvalidField { field, expected } => write!(f, "`{field}` must be {expected}"),
            Self::TooManyModels { max } => write!(f, "`models` has more than {max} entries"),
            Self::TooManyPlugins { max } => write!(f, "`plugins` has more than {max} entries"),
            Self::BadMessages {
                index: Some(index),
                reason,
            } => write!(f, "`messages[{index}]` is malformed: {reason}"),
            Self::BadMessages {
                index: None,
                reason,
            } => write!(f, "`messages` is malformed: {reason}"),
            Self::BadInput {
                index: Some(index),
                reason,
            } => write!(f, "`input[{index}]` is malformed: {reason}"),
            Self::BadInput {
                index: None,
                reason,
            } => write!(f, "`input` is malformed: {reason}"),
            Self::AmbiguousPrompt => f.write_str(
                "the request has both `messages` and `input`: send the prompt in one of them",
            ),
        }
    }
}

impl std::error::Error for PayloadError {}

impl From<PayloadError> for ApiError {
    fn from(err: PayloadError) -> Self {
        err.to_api_error()
    }
}

/// A `serde_json` error message without its " at line L column C" suffix.
pub(crate) fn without_position(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(reason) => reason.to_owned(),
        None => full,
    }
}
