//! Property tests of the body view: splicing agrees with editing a `serde_json::Value`, keeps
//! every byte outside the edited ranges, and no input makes parsing panic.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Number, Value};
use tower_llm_router::payload::{ChatRequest, Splice};

/// The keys the router reads at the top level: the generator never repeats them.
const ROUTING_KEYS: [&str; 15] = [
    "model",
    "models",
    "stream",
    "plugins",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "functions",
    "response_format",
    "input",
    "instructions",
    "system",
    "max_output_tokens",
    "text",
];

// ===== a serialiser that injects whitespace and escapes at random =====

/// SplitMix64: the serialiser's source of layout choices, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

/// Where the serialiser put one top-level member.
#[derive(Debug, Clone)]
struct Placed {
    key: String,
    /// Offset of the key's opening quote.
    key_start: usize,
    /// The value, without surrounding whitespace.
    value: (usize, usize),
    /// For `plugins`: the span of each entry.
    entries: Vec<(usize, usize)>,
}

struct Writer {
    out: String,
    rng: Rng,
}

impl Writer {
    fn ws(&mut self) {
        while self.rng.chance(3) {
            let c = [' ', '\n', '\t', '\r'][(self.rng.next() % 4) as usize];
            self.out.push(c);
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if self.rng.chance(2) => self.out.push_str("\\n"),
                '/' if self.rng.chance(2) => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || self.rng.chance(8) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    /// Writes a value; returns the spans of its entries when it is an array.
    fn value(&mut self, value: &Value) -> Vec<(usize, usize)> {
        match value {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.out.push_str(&n.to_string()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                return self.list(('[', ']'), items, |w, item| {
                    let start = w.out.len();
                    w.value(item);
                    (start, w.out.len())
                })
            }
            Value::Object(map) => {
                self.list(('{', '}'), map, |w, (key, item)| w.member(key, item));
            }
        }
        Vec::new()
    }

    /// Writes `open`, the items separated by commas, `close`, with whitespace around commas.
    fn list<I: IntoIterator, T>(
        &mut self,
        (open, close): (char, char),
        items: I,
        mut item: impl FnMut(&mut Self, I::Item) -> T,
    ) -> Vec<T> {
        self.out.push(open);
        let mut written = Vec::new();
        for (i, next) in items.into_iter().enumerate() {
            if i > 0 {
                self.ws();
                self.out.push(',');
            }
            self.ws();
            written.push(item(self, next));
        }
        self.ws();
        self.out.push(close);
        written
    }

    /// Writes `"key": value` and records where it went.
    fn member(&mut self, key: &str, value: &Value) -> Placed {
        let key_start = self.out.len();
        self.string(key);
        self.ws();
        self.out.push(':');
        self.ws();
        let start = self.out.len();
        let entries = self.value(value);
        Placed {
            key: key.to_owned(),
            key_start,
            value: (start, self.out.len()),
            entries,
        }
    }

    /// Writes the top-level object member by member, recording where each one went.
    fn top(mut self, members: &[(String, Value)]) -> (String, Vec<Placed>) {
        self.ws();
        let placed = self.list(('{', '}'), members, |w, (key, value)| w.member(key, value));
        self.ws();
        (self.out, placed)
    }
}

// ===== generators =====

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/._-]{0,12}",
        any::<String>(),
        "[\"\\\\/\n\t\u{0}-\u{1f}é模🦀 ]{0,8}",
    ]
}

/// An entry of `models`: any text but `""`, which is refused (see
/// `an_empty_entry_of_models_is_refused`).
fn model_id() -> impl Strategy<Value = String> {
    text().prop_filter("a model id is not empty", |id| !id.is_empty())
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Dyadic fractions print and parse back exactly.
        any::<i32>()
            .prop_map(|n| Value::Number(Number::from_f64(f64::from(n) / 8.0).unwrap_or(0.into()))),
        text().prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn plugin() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => ("[a-z-]{1,8}", tree()).prop_map(|(id, options)| {
            let mut map = Map::new();
            map.insert("id".into(), Value::String(id));
            map.insert("options".into(), options);
            Value::Object(map)
        }),
        1 => tree(),
    ]
}

/// The Responses API's `text`: mostly `{"format": {"type": ...}}`, sometimes anything.
fn responses_text() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just(Value::from("json_schema")),
        Just(Value::from("json_object")),
        Just(Value::from("text")),
        leaf(),
    ];
    prop_oneof![
        3 => (kind, tree()).prop_map(|(kind, schema)| {
            serde_json::json!({"format": {"type": kind, "name": "x", "schema": schema}})
        }),
        1 => tree(),
    ]
}

/// A top-level body: members in order, plus where the routing ones are.
#[derive(Debug, Clone)]
struct Body {
    members: Vec<(String, Value)>,
    seed: u64,
}

fn body() -> impl Strategy<Value = Body> {
    let other_key =
        text().prop_filter("not a routing key", |k| !ROUTING_KEYS.contains(&k.as_str()));
    (
        prop::collection::vec((other_key, tree()), 0..6),
        prop::option::of(prop::option::of(text())),
        prop::option::of(prop::collection::vec(model_id(), 0..5)),
        prop::option::of(prop::collection::vec(plugin(), 0..5)),
        any::<u64>(),
        prop::option::of(prop_oneof![any::<u64>().prop_map(Value::from), tree()]),
        prop::option::of(responses_text()),
    )
        .prop_map(
            |(others, model, models, plugins, seed, max_output_tokens, text)| {
                let mut members = others;
                let mut rng = Rng(seed);
                let mut special = Vec::new();
                if let Some(model) = model {
                    special.push(("model".to_owned(), model.map_or(Value::Null, Value::String)));
                }
                if let Some(models) = models {
                    special.push((
                        "models".to_owned(),
                        models.into_iter().map(Value::String).collect(),
                    ));
                }
                if let Some(plugins) = plugins {
                    special.push(("plugins".to_owned(), Value::Array(plugins)));
                }
                if let Some(limit) = max_output_tokens {
                    special.push(("max_output_tokens".to_owned(), limit));
                }
                if let Some(text) = text {
                    special.push(("text".to_owned(), text));
                }
                for member in special {
                    let at = (rng.next() % (members.len() as u64 + 1)) as usize;
                    members.insert(at, member);
                }
                Body { members, seed }
            },
        )
}

#[derive(Debug, Clone)]
struct Edits {
    model: Option<String>,
    remove_models: bool,
    remove_plugins: Vec<usize>,
    /// The whole `plugins` member.
    remove_all_plugins: bool,
}

fn edits() -> impl Strategy<Value = Edits> {
    (
        prop::option::of(text()),
        any::<bool>(),
        prop::collection::vec(0usize..6, 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(model, remove_models, remove_plugins, remove_all_plugins)| Edits {
                model,
                remove_models,
                remove_plugins,
                remove_all_plugins,
            },
        )
}

// ===== helpers =====

fn render(body: &Body) -> (String, Vec<Placed>) {
    let writer = Writer {
        out: String::new(),
        rng: Rng(body.seed),
    };
    writer.top(&body.members)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// Whether `out` is `orig` with one range removed that holds the whole of `span`, plus only
/// whitespace and exactly `commas` commas around it.
fn is_clean_removal(orig: &[u8], out: &[u8], span: (usize, usize), commas: usize) -> bool {
    let Some(removed) = orig.len().checked_sub(out.len()) else {
        return false;
    };
    let mut a = span.0;
    loop {
        let b = a + removed;
        if b >= span.1 && b <= orig.len() {
            let separators = orig[a..span.0].iter().chain(&orig[span.1..b]);
            let (mut n_commas, mut only_ws) = (0, true);
            for &c in separators {
                match c {
                    b',' => n_commas += 1,
                    c if is_ws(c) => {}
                    _ => only_ws = false,
                }
            }
            if only_ws && n_commas == commas && orig[..a] == out[..a] && orig[b..] == out[a..] {
                return true;
            }
        }
        if a == 0 || !(is_ws(orig[a - 1]) || orig[a - 1] == b',') {
            return false;
        }
        a -= 1;
    }
}

fn find<'p>(placed: &'p [Placed], key: &str) -> Option<&'p Placed> {
    placed.iter().find(|p| p.key == key)
}

// ===== properties =====

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The view reads what the generator wrote, whatever the layout.
    #[test]
    fn reads_the_routing_fields(body in body()) {
        let (json, _) = render(&body);
        let value: Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&value, &Value::Object(body.members.iter().cloned().collect()));
        let req = ChatRequest::parse(Bytes::from(json)).unwrap();
        // `""` names no model, as `null` does.
        let named = value.get("model").and_then(Value::as_str).filter(|m| !m.is_empty());
        prop_assert_eq!(req.model(), named);
        let models: Vec<&str> = value.get("models").and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        prop_assert_eq!(req.models().collect::<Vec<_>>(), models);
        prop_assert_eq!(req.has_models(), value.get("models").is_some());
        let plugins = value.get("plugins").and_then(Value::as_array).cloned().unwrap_or_default();
        prop_assert_eq!(req.plugins().count(), plugins.len());
        for (plugin, expected) in req.plugins().zip(&plugins) {
            let raw: Value = serde_json::from_str(plugin.raw.get()).unwrap();
            prop_assert_eq!(&raw, expected);
            prop_assert_eq!(plugin.id.as_deref(), expected.get("id").and_then(Value::as_str));
        }
        let limit = value.get("max_output_tokens").and_then(Value::as_u64);
        prop_assert_eq!(req.max_tokens(), limit);
        let schema = value.pointer("/text/format/type").and_then(Value::as_str) == Some("json_schema");
        prop_assert_eq!(req.wants_json_schema(), schema);
    }

    /// An empty entry anywhere in `models`, whatever the rest of the body and its layout, is
    /// refused as `bad_models`.
    #[test]
    fn an_empty_entry_of_models_is_refused(mut body in body(), at in any::<prop::sample::Index>()) {
        let models = body.members.iter_mut().find(|(key, _)| key == "models");
        let models = match models {
            Some((_, Value::Array(models))) => models,
            _ => {
                body.members.push(("models".to_owned(), Value::Array(Vec::new())));
                match body.members.last_mut() {
                    Some((_, Value::Array(models))) => models,
                    _ => unreachable!(),
                }
            }
        };
        models.insert(at.index(models.len() + 1), Value::from(""));
        let (json, _) = render(&body);
        let err = ChatRequest::parse(Bytes::from(json.clone())).unwrap_err();
        let api = err.to_api_error();
        prop_assert_eq!((api.code(), api.param()), ("bad_models", Some("models")), "{}", json);
    }

    /// Splicing gives the same JSON as doing the same edits on a `Value`.
    #[test]
    fn splice_matches_editing_the_value(body in body(), edits in edits()) {
        let (json, placed) = render(&body);
        let mut expected: Value = serde_json::from_str(&json).unwrap();
        let req = ChatRequest::parse(Bytes::from(json.clone())).unwrap();

        let mut splice = req.splice();
        if let Some(model) = &edits.model {
            splice = splice.set_model(model);
            expected["model"] = Value::String(model.clone());
        }
        if edits.remove_models {
            splice = splice.remove_models();
            expected.as_object_mut().unwrap().remove("models");
        }
        for &i in &edits.remove_plugins {
            splice = splice.remove_plugin(i);
        }
        if let Some(plugins) = expected.get_mut("plugins").and_then(Value::as_array_mut) {
            let kept = plugins.iter().enumerate()
                .filter(|(i, _)| !edits.remove_plugins.contains(i))
                .map(|(_, v)| v.clone()).collect();
            *plugins = kept;
        }
        if edits.remove_all_plugins {
            splice = splice.remove_plugins();
            expected.as_object_mut().unwrap().remove("plugins");
        }

        let out = splice.to_bytes();
        prop_assert_eq!(&splice.to_segments().to_bytes(), &out);
        let got: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&got, &expected);
        // The output is still a body the view accepts, with the edits visible.
        let again = ChatRequest::parse(out.clone()).unwrap();
        if let Some(model) = &edits.model {
            let named = Some(model.as_str()).filter(|m| !m.is_empty());
            prop_assert_eq!(again.model(), named);
        }
        prop_assert_eq!(splice.is_noop(), out == req.bytes()[..]);

        // Members no edit touches come through byte for byte, in order.
        let mut from = 0;
        for member in &placed {
            if ["model", "models", "plugins"].contains(&member.key.as_str()) {
                continue;
            }
            let text = &json[member.key_start..member.value.1];
            let at = std::str::from_utf8(&out[from..]).unwrap().find(text);
            prop_assert!(at.is_some(), "member {:?} changed", member.key);
            from += at.unwrap_or(0) + text.len();
        }
    }

    /// `set_model` changes the bytes of the model value (or inserts a member), nothing else.
    #[test]
    fn set_model_touches_only_the_model_value(body in body(), model in text()) {
        let (json, placed) = render(&body);
        let req = ChatRequest::parse(Bytes::from(json.clone())).unwrap();
        let out = req.splice().set_model(&model).to_bytes();
        let encoded = serde_json::to_string(&model).unwrap();
        match find(&placed, "model") {
            Some(member) => {
                let (start, end) = member.value;
                let decoded: Value = serde_json::from_slice(&out[start..out.len() - (json.len() - end)]).unwrap();
                prop_assert_eq!(decoded, Value::String(model.clone()));
                // Masking the model value, input and output are equal.
                prop_assert_eq!(&out[..start], &json.as_bytes()[..start]);
                prop_assert_eq!(&out[out.len() - (json.len() - end)..], &json.as_bytes()[end..]);
            }
            None => {
                // Inserted right after `{`, followed by a comma when other members follow.
                let open = json.find('{').unwrap() + 1;
                let member = format!("\"model\":{encoded}{}", if placed.is_empty() { "" } else { "," });
                let expected = format!("{}{member}{}", &json[..open], &json[open..]);
                prop_assert_eq!(&out[..], expected.as_bytes());
            }
        }
    }

    /// `remove_models` cuts the member and exactly one comma, nothing else.
    #[test]
    fn remove_models_cuts_one_member(body in body()) {
        let (json, placed) = render(&body);
        let req = ChatRequest::parse(Bytes::from(json.clone())).unwrap();
        cuts_one_member(&json, &placed, &req, "models", req.splice().remove_models())?;
    }

    /// `remove_plugins` cuts the member and exactly one comma, nothing else.
    #[test]
    fn remove_plugins_cuts_one_member(body in body(), index in 0usize..6) {
        let (json, placed) = render(&body);
        let req = ChatRequest::parse(Bytes::from(json.clone())).unwrap();
        // Entries removed as well go with the member.
        let splice = req.splice().remove_plugin(index).remove_plugins();
        cuts_one_member(&json, &placed, &req, "plugins", splice)?;
    }

    /// `remove_plugin(i)` cuts entry `i` and exactly one comma, nothing else.
    #[test]
    fn remove_plugin_cuts_one_entry(body in body(), index in 0usize..6) {
        let (json, placed) = render(&body);
        let req = ChatRequest::parse(Bytes::from(json.clone())).unwrap();
        let out = req.splice().remove_plugin(index).to_bytes();
        match find(&placed, "plugins").filter(|p| index < p.entries.len()) {
            Some(plugins) => {
                let commas = usize::from(plugins.entries.len() > 1);
                prop_assert!(is_clean_removal(json.as_bytes(), &out, plugins.entries[index], commas));
            }
            None => prop_assert_eq!(&out[..], json.as_bytes()),
        }
    }

    /// No byte string makes parsing, reading or splicing panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(Bytes::from(bytes));
    }

    /// Nor does JSON-looking noise, which gets further into the parser.
    #[test]
    fn json_like_noise_never_panics(tokens in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "[", "]", ",", ":", " ", "\"", "\\", "\\u0065", "\\ud83d", "0", "-1.5e3", "true",
        "null", "\"model\"", "\"models\"", "\"plugins\"", "\"messages\"", "\"stream\"", "\"role\"",
        "\"content\"", "\"type\"", "\"text\"", "\"image_url\"", "\"id\"", "\"tool_calls\"", "é", "\u{0}",
        "\"input\"", "\"system\"", "\"instructions\"", "\"format\"", "\"input_image\"",
        "\"tool_result\"", "\"tool_use\"", "\"function_call\"", "\"output\"",
    ]), 0..64)) {
        exercise(Bytes::from(tokens.concat()));
    }

    /// Nor does a valid body with one byte changed.
    #[test]
    fn mutated_bodies_never_panic(body in body(), at in any::<usize>(), byte in any::<u8>()) {
        let (json, _) = render(&body);
        let mut bytes = json.into_bytes();
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        exercise(Bytes::from(bytes));
    }
}

/// Parses and, when that works, uses every reader and a splice.
/// `splice`, which removes the member `key`, cuts it and exactly one comma, nothing else; a
/// body without it comes back as it is.
fn cuts_one_member(
    json: &str,
    placed: &[Placed],
    req: &ChatRequest,
    key: &str,
    splice: Splice<'_>,
) -> Result<(), TestCaseError> {
    let out = splice.to_bytes();
    match find(placed, key) {
        Some(member) => {
            let span = (member.key_start, member.value.1);
            let commas = usize::from(placed.len() > 1);
            prop_assert!(
                is_clean_removal(json.as_bytes(), &out, span, commas),
                "{} -> {}",
                json,
                String::from_utf8_lossy(&out)
            );
        }
        None => {
            prop_assert!(splice.is_noop());
            prop_assert_eq!(out.as_ptr(), req.bytes().as_ptr());
        }
    }
    Ok(())
}

fn exercise(bytes: Bytes) {
    let Ok(req) = ChatRequest::parse(bytes) else {
        return;
    };
    let _ = (
        req.model(),
        req.models().count(),
        req.stream(),
        req.max_tokens(),
        req.has_tools(),
    );
    let _ = (
        req.wants_json_schema(),
        req.plugins().count(),
        req.plugin("web"),
    );
    if let Ok(messages) = req.messages() {
        let _ = (
            messages.len(),
            messages.image_count(),
            messages.text_chars(),
        );
        let _ = (messages.last_user_text(), messages.user_text());
    }
    if let Ok(prompt) = req.prompt() {
        let _ = (prompt.len(), prompt.image_count(), prompt.text_chars());
        let _ = (prompt.last_user_text(), prompt.user_text());
    }
    let out = req
        .splice()
        .set_model("m")
        .remove_models()
        .remove_plugin(0)
        .to_bytes();
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok(),
        "splice output is JSON"
    );
}

#[test]
fn messages_in_a_generated_body_decode() {
    let body = Body {
        members: vec![(
            "messages".to_owned(),
            serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "a\"b\n🦀"}]}]),
        )],
        seed: 7,
    };
    let (json, _) = render(&body);
    let req = ChatRequest::parse(Bytes::from(json)).unwrap();
    assert_eq!(
        req.messages().unwrap().last_user_text().as_deref(),
        Some("a\"b\n🦀")
    );
}
