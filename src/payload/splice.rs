//! Rewriting a body by cutting byte ranges out of it.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{cut, ChatRequest, MemberSpan};
use crate::body::Segments;

/// A pending rewrite of a [`ChatRequest`] body: new `model`, `models` removed, `plugins` entries
/// (or the whole member) removed.
///
/// The output is the original bytes with the edited ranges replaced: everything else (key
/// order, whitespace, escapes, number spelling) is kept byte for byte. Edits that would not
/// change a byte (setting the model it already has, removing an absent `models` or `plugins`,
/// removing a plugin index out of range) are dropped, so [`is_noop`](Splice::is_noop) tells whether the
/// body can be sent as it is.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_router::payload::ChatRequest;
///
/// let req = ChatRequest::parse(Bytes::from_static(
///     br#"{"models":["a","b"], "temperature":0.70, "plugins":[{"id":"x"},{"id":"y"}]}"#,
/// ))?;
/// let splice = req.splice().set_model("a").remove_models().remove_plugin(0);
/// assert!(!splice.is_noop());
/// assert_eq!(
///     &splice.to_bytes()[..],
///     br#"{"model":"a","temperature":0.70, "plugins":[{"id":"y"}]}"#,
/// );
/// // The untouched ranges are slices of the original buffer, not copies.
/// let segments = splice.to_segments();
/// assert_eq!(segments.len(), splice.to_bytes().len());
///
/// // Nothing to do: the original buffer comes back.
/// assert!(req.splice().remove_plugin(9).is_noop());
/// assert_eq!(req.splice().to_bytes(), req.bytes());
/// # Ok::<(), tower_llm_router::payload::PayloadError>(())
/// ```
#[derive(Clone)]
pub struct Splice<'a> {
    req: &'a ChatRequest,
    /// The new `model` value, JSON-encoded; `None` keeps the body's.
    model: Option<Bytes>,
    /// The new value of `models`, a JSON array; `None` keeps the body's.
    models: Option<Bytes>,
    remove_models: bool,
    remove_plugins: bool,
    /// Indices of `plugins` entries to remove, in range, sorted, without duplicates.
    plugins: Vec<usize>,
}

/// Replace `range` of the original with `with`.
struct Edit {
    range: Range<usize>,
    with: Bytes,
}

impl<'a> Splice<'a> {
    pub(super) fn new(req: &'a ChatRequest) -> Self {
        Self {
            req,
            model: None,
            models: None,
            remove_models: false,
            remove_plugins: false,
            plugins: Vec::new(),
        }
    }

    /// Sets `model`: its value is replaced, or, when the body has no `model`, the member is
    /// inserted first in the object. The last call wins.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn set_model(mut self, model: &str) -> Self {
        let current = self.req.model.as_ref().map(|field| {
            let (start, end) = field.span.value;
            &self.req.bytes[start..end]
        });
        // A plain name is compared without building its JSON first.
        self.model = if is_plain(model) {
            let same = current.is_some_and(|current| {
                current.len() == model.len() + 2
                    && current.starts_with(b"\"")
                    && current.ends_with(b"\"")
                    && &current[1..current.len() - 1] == model.as_bytes()
            });
            (!same).then(|| {
                let mut encoded = BytesMut::with_capacity(model.len() + 2);
                encoded.extend_from_slice(b"\"");
                encoded.extend_from_slice(model.as_bytes());
                encoded.extend_from_slice(b"\"");
                encoded.freeze()
            })
        } else {
            let encoded = serde_json::Value::from(model).to_string();
            (current != Some(encoded.as_bytes())).then(|| Bytes::from(encoded))
        };
        self
    }

    /// Removes the `models` member, with exactly one of the commas around it.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn remove_models(mut self) -> Self {
        self.remove_models = self.req.models.is_some();
        self
    }

    /// Keeps only the entries of `models` that `keep` accepts, in order; the member goes (as
    /// with [`remove_models`](Self::remove_models)) when none is left. The array is written
    /// anew when an entry goes (its entries JSON-escaped as serde_json writes them), and left
    /// as it is when every entry stays. [`remove_models`](Self::remove_models) wins.
    pub(crate) fn retain_models(mut self, mut keep: impl FnMut(&str) -> bool) -> Self {
        let kept: Vec<&str> = self.req.models().filter(|model| keep(model)).collect();
        if kept.len() == self.req.models().len() {
            return self;
        }
        if kept.is_empty() {
            return self.remove_models();
        }
        let len = kept.iter().map(|model| model.len() + 3).sum::<usize>() + 1;
        let mut array = BytesMut::with_capacity(len);
        for (i, model) in kept.into_iter().enumerate() {
            array.extend_from_slice(if i == 0 { b"[" } else { b"," });
            push_json_string(&mut array, model);
        }
        array.extend_from_slice(b"]");
        self.models = Some(array.freeze());
        self
    }

    /// Removes the `plugins` member, with exactly one of the commas around it (and with it the
    /// entries [`remove_plugin`](Self::remove_plugin) was given).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_llm_router::payload::ChatRequest;
    ///
    /// let req = ChatRequest::parse(Bytes::from_static(
    ///     br#"{"model":"a", "models":["b"],"plugins":[{"id":"x"}], "n":1}"#,
    /// ))?;
    /// let out = req.splice().remove_models().remove_plugins().to_bytes();
    /// assert_eq!(&out[..], br#"{"model":"a", "n":1}"#);
    /// # Ok::<(), tower_llm_router::payload::PayloadError>(())
    /// ```
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn remove_plugins(mut self) -> Self {
        self.remove_plugins = self.req.plugins.is_some();
        self
    }

    /// Removes entry `index` of `plugins` (the array stays, possibly empty: see
    /// [`remove_plugins`](Self::remove_plugins)). An index out of range is ignored.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn remove_plugin(mut self, index: usize) -> Self {
        let len = self.req.plugins.as_ref().map_or(0, |p| p.value.len());
        if index < len {
            if let Err(at) = self.plugins.binary_search(&index) {
                self.plugins.insert(at, index);
            }
        }
        self
    }

    /// Whether the splice leaves the body as it is.
    pub fn is_noop(&self) -> bool {
        self.model.is_none()
            && self.models.is_none()
            && !self.remove_models
            && !self.remove_plugins
            && self.plugins.is_empty()
    }

    /// The rewritten body as segments: slices of the original buffer ([`Bytes::slice`], no
    /// copy) with the replacements between them.
    pub fn to_segments(&self) -> Segments {
        if self.is_noop() {
            return Segments::from(self.req.bytes.clone());
        }
        let mut segments = Segments::new();
        let mut at = 0;
        for edit in self.edits() {
            segments.push(self.req.bytes.slice(at..edit.range.start));
            segments.push(edit.with);
            at = edit.range.end;
        }
        segments.push(self.req.bytes.slice(at..));
        segments
    }

    /// The rewritten body as one buffer: the original [`Bytes`] (no copy) when there is no
    /// edit, one copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        if self.is_noop() {
            return self.req.bytes.clone();
        }
        let edits = self.edits();
        let len = edits.iter().fold(self.req.bytes.len(), |len, edit| {
            len - edit.range.len() + edit.with.len()
        });
        let mut out = BytesMut::with_capacity(len);
        let mut at = 0;
        for edit in edits {
            out.extend_from_slice(&self.req.bytes[at..edit.range.start]);
            out.extend_from_slice(&edit.with);
            at = edit.range.end;
        }
        out.extend_from_slice(&self.req.bytes[at..]);
        out.freeze()
    }

    /// The edits, sorted and disjoint.
    fn edits(&self) -> Vec<Edit> {
        let req = self.req;
        let mut edits = Vec::with_capacity(2 + self.plugins.len());
        if let Some(model) = &self.model {
            match &req.model {
                Some(field) => {
                    let (start, end) = field.span.value;
                    edits.push(Edit {
                        range: start..end,
                        with: model.clone(),
                    });
                }
                None => {
                    // Inserted first; followed by a comma unless nothing else stays.
                    let removed =
                        usize::from(self.remove_models) + usize::from(self.remove_plugins);
                    let others = req.members.saturating_sub(removed);
                    let mut member = BytesMut::with_capacity(model.len() + 10);
                    member.extend_from_slice(b"\"model\":");
                    member.extend_from_slice(model);
                    if others > 0 {
                        member.extend_from_slice(b",");
                    }
                    edits.push(Edit {
                        range: req.open..req.open,
                        with: member.freeze(),
                    });
                }
            }
        }
        if let (Some(models), Some(field), false) = (&self.models, &req.models, self.remove_models)
        {
            let (start, end) = field.span.value;
            edits.push(Edit {
                range: start..end,
                with: models.clone(),
            });
        }
        // The members removed, in body order; two next to each other are cut as one list
        // item, as consecutive entries are (each cut alone would take the same comma).
        let mut members: Vec<&MemberSpan> = [
            req.models
                .as_ref()
                .filter(|_| self.remove_models)
                .map(|f| &f.span),
            req.plugins
                .as_ref()
                .filter(|_| self.remove_plugins)
                .map(|f| &f.span),
        ]
        .into_iter()
        .flatten()
        .collect();
        members.sort_by_key(|span| span.key_start);
        let mut members = members.into_iter().peekable();
        while let Some(first) = members.next() {
            let mut last = first;
            while let Some(next) = members.next_if(|next| last.next_start == Some(next.key_start)) {
                last = next;
            }
            edits.push(Edit {
                range: cut(
                    first.prev_end,
                    first.key_start,
                    last.value.1,
                    last.next_start,
                ),
                with: Bytes::new(),
            });
        }
        if let Some(plugins) = req.plugins.as_ref().filter(|_| !self.remove_plugins) {
            let entries = &plugins.value;
            let mut removed = self.plugins.iter().copied().peekable();
            while let Some(first) = removed.next() {
                // A run of consecutive removed entries is cut as one list item.
                let mut last = first;
                while removed.next_if(|&next| next == last + 1).is_some() {
                    last += 1;
                }
                let prev_end = first.checked_sub(1).map(|i| entries[i].value.1);
                let next_start = entries.get(last + 1).map(|e| e.value.0);
                edits.push(Edit {
                    range: cut(
                        prev_end,
                        entries[first].value.0,
                        entries[last].value.1,
                        next_start,
                    ),
                    with: Bytes::new(),
                });
            }
        }
        edits.sort_by_key(|edit| (edit.range.start, edit.range.end));
        edits
    }
}

/// Whether serde_json writes `s` between quotes as it is: it escapes only `"`, `\` and
/// control characters.
fn is_plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Appends `s` as a JSON string, as serde_json writes it.
fn push_json_string(out: &mut BytesMut, s: &str) {
    if is_plain(s) {
        out.extend_from_slice(b"\"");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\"");
    } else {
        out.extend_from_slice(serde_json::Value::from(s).to_string().as_bytes());
    }
}

impl fmt::Debug for Splice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Splice")
            .field("model", &self.model)
            .field("models", &self.models)
            .field("remove_models", &self.remove_models)
            .field("remove_plugins", &self.remove_plugins)
            .field("remove_plugin_entries", &self.plugins)
            .finish()
    }
}
