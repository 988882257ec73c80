//! One line of `route_eval`'s input, read leniently: evaluation files written by other tools
//! name their fields differently, and a run over thousands of prompts should not end at the
//! first line in another shape.
//!
//! * the id: `id`, else `question_id` (MT-Bench's own files); a string or any other JSON value
//!   (written as its JSON text);
//! * the prompt: `prompt`, else `turns` (MT-Bench's), else `messages` (chat format). A string
//!   is the prompt; an array of strings is a conversation's user turns, routed on the first
//!   (as RouteLLM routes MT-Bench); an array of messages is routed on its last `user` message,
//!   as the layer routes a request, its `content` a string or an array of parts whose `text`
//!   parts are joined;
//! * the outcomes: `strong` and `weak`, numbers or booleans (a correct answer as 1);
//!   `dataset`, when they are given without one, is `all`.

use serde_json::Value;

/// A line of the input, read.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// The id as written to the scores file.
    pub id: String,
    /// The text scored.
    pub prompt: String,
    /// The benchmark, with `strong` and `weak`; `all` when they come without one.
    pub outcomes: Option<Outcomes>,
    /// RouteLLM's contamination flag: such rows are scored but not evaluated.
    pub contaminated: bool,
}

/// A prompt's per-model quality.
#[derive(Debug, PartialEq)]
pub struct Outcomes {
    /// The benchmark the prompt belongs to.
    pub dataset: String,
    /// The strong model's quality.
    pub strong: f64,
    /// The weak model's quality.
    pub weak: f64,
}

/// Reads one line, or says why it cannot be scored.
pub fn parse_line(text: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let fields = value.as_object().ok_or("not a JSON object")?;
    let id = match fields.get("id").or_else(|| fields.get("question_id")) {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Null) | None => return Err("no `id` (or `question_id`)".into()),
        Some(other) => other.to_string(),
    };
    let prompt = ["prompt", "turns", "messages"]
        .iter()
        .find_map(|key| fields.get(*key))
        .ok_or("no `prompt` (or `turns`, `messages`)")
        .and_then(|prompt| prompt_text(prompt).ok_or("a prompt that holds no text"))?;
    let quality = |key: &str| match fields.get(key) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Bool(correct)) => Some(f64::from(u8::from(*correct))),
        _ => None,
    };
    let outcomes = match (quality("strong"), quality("weak")) {
        (Some(strong), Some(weak)) => Some(Outcomes {
            dataset: match fields.get("dataset") {
                Some(Value::String(name)) => name.clone(),
                _ => "all".to_owned(),
            },
            strong,
            weak,
        }),
        _ => None,
    };
    let contaminated = fields.get("routellm_contaminated") == Some(&Value::Bool(true));
    Ok(Line {
        id,
        prompt,
        outcomes,
        contaminated,
    })
}

/// The text to route on: see the module docs.
fn prompt_text(prompt: &Value) -> Option<String> {
    match prompt {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => match items.first()? {
            Value::String(first) => Some(first.clone()),
            _ => items
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|m| content_text(m.get("content")?)),
        },
        _ => None,
    }
}

/// A message's text: its `content` string, or its `text` parts joined by newlines.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| part.get("text")?.as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}
