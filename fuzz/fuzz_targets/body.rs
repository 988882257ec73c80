//! The JSON body view: `ChatRequest::parse`, `messages()`, and splices.
//!
//! For any bytes:
//! * `parse` never panics, and agrees with `serde_json`: a body it accepts is a JSON object,
//!   and the fields it reads (`model`, `models`, `stream`) have the values `serde_json` reads
//!   (an empty `model` reads as none);
//!   a body it calls invalid JSON is one `serde_json` refuses too; a field it calls of the wrong
//!   type is (and is not `null`), or is a model id over `MAX_MODEL_ID_BYTES` (or an empty
//!   entry of `models`); an accepted body's `models` holds no empty id, and it asks for a JSON
//!   schema (`wants_json_schema`) exactly when `serde_json` reads one in `response_format`,
//!   `text.format`, `output_config.format` or `output_format`.
//! * With limits of 1 model and 1 plugin, a body the defaults accept is refused exactly when an
//!   array is longer, `models` first, with `TooManyModels` / `TooManyPlugins`.
//! * `messages()` and the `ApiError` of every refusal never panic; the error body is JSON.
//! * Every splice (new `model` or not, `models` removed or not, `plugins` entries removed)
//!   gives bytes that parse, equal to the same edit made on a `serde_json::Value`, identical
//!   whether built as segments or as one buffer, and the original bytes when it is a no-op.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_llm_router::payload::{ChatRequest, Limits, PayloadError, MAX_MODEL_ID_BYTES};

/// Models spliced in: plain, and one that needs escaping.
const MODELS: [Option<&str>; 3] = [None, Some("fuzz/model-1"), Some("we\"ird\\\u{1}é\u{2028}")];

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let parsed = ChatRequest::parse(bytes.clone());
    let value = serde_json::from_slice::<Value>(data);
    let req = match parsed {
        Ok(req) => req,
        Err(err) => {
            check_refusal(data, &err, value.as_ref().ok());
            return;
        }
    };
    let value = match value {
        Ok(Value::Object(map)) => map,
        // What the view does not check in values it does not read (see `lax_only`).
        Err(_) if lax_only(data) => return,
        other => panic!("parse accepted what serde_json reads as {other:?}"),
    };
    assert_eq!(req.bytes(), &bytes);
    check_limits(&bytes, &value);
    assert_eq!(
        req.model(),
        // `"model": ""` names no model, as `null` does.
        value
            .get("model")
            .and_then(Value::as_str)
            .filter(|model| !model.is_empty()),
        "model"
    );
    let models: Vec<&str> = req.models().collect();
    let expected: Vec<&str> = match value.get("models") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    assert_eq!(models, expected, "models");
    assert!(
        models.iter().all(|id| !id.is_empty()),
        "an empty id in models accepted"
    );
    assert_eq!(req.has_models(), value.contains_key("models"));
    assert_eq!(
        req.wants_json_schema(),
        wants_json_schema(&value),
        "wants_json_schema"
    );
    assert_eq!(
        req.stream(),
        value
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        "stream"
    );
    if let Err(err) = req.messages() {
        let _ = err.to_api_error().to_json();
    }
    let _ = format!("{req:?}");
    let plugins = req.plugins().count();
    let removals: Vec<Vec<usize>> = vec![
        vec![],
        vec![0],
        vec![plugins.saturating_sub(1)],
        (0..plugins).collect(),
        vec![1, plugins + 3],
    ];
    for model in MODELS {
        for remove_models in [false, true] {
            for removed in &removals {
                check_splice(&req, &value, model, remove_models, removed);
            }
        }
    }
});

fn check_refusal(data: &[u8], err: &PayloadError, value: Option<&Value>) {
    let json: Value = serde_json::from_slice(&err.to_api_error().to_json()).expect("error body");
    assert!(json["error"]["message"].is_string());
    match err {
        PayloadError::NotUtf8 { valid_up_to } => {
            let utf8 = std::str::from_utf8(data).expect_err("refused as not UTF-8");
            assert_eq!(utf8.valid_up_to(), *valid_up_to);
        }
        PayloadError::InvalidJson { .. } => {
            assert!(value.is_none(), "refused as invalid JSON: {value:?}");
        }
        PayloadError::NotAnObject => {
            assert!(
                !matches!(value, Some(Value::Object(_))),
                "an object refused as not one"
            );
        }
        PayloadError::InvalidField { field, .. } => {
            let Some(Value::Object(map)) = value else {
                assert!(value.is_none() && lax_only(data), "{err:?} for {value:?}");
                return;
            };
            let field = map.get(*field).unwrap_or(&Value::Null);
            // An id of the right type, refused for its length (or, in `models`, for being
            // empty: it has no "no model" to mean there).
            let too_long = |v: &Value| v.as_str().is_some_and(|s| s.len() > MAX_MODEL_ID_BYTES);
            let bad_entry = |v: &Value| too_long(v) || v.as_str() == Some("");
            let over_limit = match err.param() {
                Some("model") => too_long(field),
                Some("models") => field
                    .as_array()
                    .is_some_and(|list| list.iter().any(bad_entry)),
                _ => false,
            };
            if over_limit {
                return;
            }
            let right_type = match err.param() {
                Some("model") => field.is_string(),
                Some("models") => field
                    .as_array()
                    .is_some_and(|list| list.iter().all(Value::is_string)),
                Some("stream") => field.is_boolean(),
                Some("plugins") => field.is_array(),
                _ => false,
            };
            assert!(
                !right_type && !field.is_null(),
                "{err:?} for a field that is {field}"
            );
        }
        // Well-formed JSON objects refused for their content: serde_json reads them.
        PayloadError::DuplicateKey { .. }
        | PayloadError::TooManyModels { .. }
        | PayloadError::TooManyPlugins { .. } => {
            assert!(
                matches!(value, Some(Value::Object(_))) || value.is_none() && lax_only(data),
                "{err:?} for what serde_json reads as {value:?}"
            );
        }
        _ => {}
    }
}

/// Whether a JSON schema is asked for, read off the `Value`: chat completions'
/// `response_format`, the Responses API's `text.format`, Anthropic's `output_config.format` and
/// `output_format`, of `"type": "json_schema"`. (The view refuses these keys repeated, so the
/// `Value`'s last-wins reading is the only one.)
fn wants_json_schema(value: &serde_json::Map<String, Value>) -> bool {
    let is_schema = |format: Option<&Value>| {
        format.and_then(|f| f.get("type")).and_then(Value::as_str) == Some("json_schema")
    };
    let nested = |key: &str| value.get(key).and_then(|parent| parent.get("format"));
    is_schema(value.get("response_format"))
        || is_schema(nested("text"))
        || is_schema(nested("output_config"))
        || is_schema(value.get("output_format"))
}

/// With small limits, a body the default limits accept is refused exactly when an array is
/// over its limit, `models` first, and with the right error.
fn check_limits(bytes: &Bytes, value: &serde_json::Map<String, Value>) {
    let limits = Limits {
        max_models: 1,
        max_plugins: 1,
    };
    let len = |key: &str| value.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    let got = ChatRequest::parse_with(bytes.clone(), &limits).map(|_| ());
    let want = if len("models") > 1 {
        Err(PayloadError::TooManyModels { max: 1 })
    } else if len("plugins") > 1 {
        Err(PayloadError::TooManyPlugins { max: 1 })
    } else {
        Ok(())
    };
    assert_eq!(got, want, "limits 1 model, 1 plugin");
}

fn check_splice(
    req: &ChatRequest,
    value: &serde_json::Map<String, Value>,
    model: Option<&str>,
    remove_models: bool,
    removed: &[usize],
) {
    let mut splice = req.splice();
    if let Some(model) = model {
        splice = splice.set_model(model);
    }
    if remove_models {
        splice = splice.remove_models();
    }
    for &index in removed {
        splice = splice.remove_plugin(index);
    }
    let out = splice.to_bytes();
    assert_eq!(
        splice.to_segments().to_bytes(),
        out,
        "segments and buffer differ"
    );
    if splice.is_noop() {
        assert_eq!(&out, req.bytes(), "a no-op splice changed bytes");
    }

    let mut expected = value.clone();
    if let Some(model) = model {
        expected.insert("model".to_owned(), Value::from(model));
    }
    if remove_models {
        expected.remove("models");
    }
    if let Some(Value::Array(list)) = expected.get_mut("plugins") {
        let mut index = 0;
        list.retain(|_| {
            let keep = !removed.contains(&index);
            index += 1;
            keep
        });
    }
    let got: Value = match serde_json::from_slice(&out) {
        Ok(got) => got,
        Err(err) => panic!(
            "spliced bytes do not parse ({err}): {:?} -> {:?}",
            String::from_utf8_lossy(req.bytes()),
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(
        got,
        Value::Object(expected),
        "splice differs from the Value edit: {:?} -> {:?}",
        String::from_utf8_lossy(req.bytes()),
        String::from_utf8_lossy(&out)
    );
    let again = ChatRequest::parse(out).expect("spliced body parses again");
    if let Some(model) = model {
        assert_eq!(again.model(), Some(model));
    }
    if remove_models {
        assert!(!again.has_models());
    }
}

/// Whether serde_json's `Value` refuses `data` only for what the view leaves to the upstream in
/// values it skips: numbers beyond f64, and `\u` escapes that are lone surrogates (valid JSON
/// grammar, not valid Unicode). Skipped values are forwarded byte for byte.
fn lax_only(data: &[u8]) -> bool {
    serde_json::from_slice::<Value>(data).is_err_and(|e| {
        let e = e.to_string();
        e.starts_with("number out of range")
            || e.contains("surrogate")
            || e.starts_with("unexpected end of hex escape")
    })
}
