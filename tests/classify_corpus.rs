//! The default classifier against labelled upstream answers: the hand-written fixtures
//! (`tests/fixtures/provider-errors.jsonl`) and the real corpus
//! (`$UPSTREAM_ERRORS`, else `../shared/corpus/upstream-errors.jsonl` next to the crate).
//!
//! The real corpus is read at test time, never copied into the repository. Its loader is
//! tolerant about the schema; set `REQUIRE_UPSTREAM_ERRORS=1` to fail when it is missing.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use tower_llm_router::classify::{classify_response, ErrorClass};

/// One labelled upstream answer.
#[derive(Debug)]
struct Case {
    line: usize,
    provider: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    expected: Option<ErrorClass>,
}

fn first<'a>(object: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|key| object.get(*key))
}

fn parse_status(value: &Value) -> Result<StatusCode, String> {
    let code = match value {
        Value::Number(n) => n.as_u64(),
        // "429", "429 Too Many Requests", "HTTP/1.1 429 Too Many Requests".
        Value::String(s) => s
            .split_whitespace()
            .find(|word| word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|word| word.parse().ok()),
        _ => None,
    };
    code.and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("bad status {value}"))
}

fn body_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.clone().into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

fn header_text(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(header_text).collect(),
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

fn parse_headers(value: Option<&Value>) -> Result<HeaderMap, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                pairs.extend(header_text(value).into_iter().map(|v| (name.clone(), v)));
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::Array(pair) if pair.len() == 2 => {
                        if let Some(name) = pair[0].as_str() {
                            pairs.extend(
                                header_text(&pair[1])
                                    .into_iter()
                                    .map(|v| (name.to_owned(), v)),
                            );
                        }
                    }
                    Value::Object(map) => {
                        let name = first(map, &["name", "key"]).and_then(Value::as_str);
                        let value = first(map, &["value", "values"]);
                        if let (Some(name), Some(value)) = (name, value) {
                            pairs.extend(
                                header_text(value).into_iter().map(|v| (name.to_owned(), v)),
                            );
                        }
                    }
                    other => return Err(format!("bad header entry {other}")),
                }
            }
        }
        Some(other) => return Err(format!("bad headers {other}")),
    }
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("header {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("header value {value:?}: {e}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// `null`, "ok", "none", "success" mean success; class names in any case / separator style.
fn parse_label(value: &Value) -> Result<Option<ErrorClass>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::Bool(false) => return Ok(None),
        Value::String(s) => s,
        other => return Err(format!("bad label {other}")),
    };
    let squashed: String = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if matches!(
        squashed.as_str(),
        "" | "ok" | "none" | "success" | "null" | "pass"
    ) {
        return Ok(None);
    }
    let alias = match squashed.as_str() {
        "ratelimit" | "ratelimitexceeded" | "throttled" | "toomanyrequests" => {
            Some(ErrorClass::RateLimited)
        }
        "context" | "contextwindow" | "contextlengthexceeded" => Some(ErrorClass::ContextLength),
        "contentfilter" | "contentpolicy" | "safety" => Some(ErrorClass::Moderation),
        "outage" | "unavailable" | "overloaded" => Some(ErrorClass::Downtime),
        _ => None,
    };
    alias
        .or_else(|| {
            ErrorClass::ALL
                .into_iter()
                .find(|class| class.as_str().replace('_', "") == squashed)
        })
        .map(Some)
        .ok_or_else(|| format!("unknown label {text:?}"))
}

fn parse_case(line: usize, entry: &Value) -> Result<Case, String> {
    let object = entry.as_object().ok_or("entry is not an object")?;
    // The response may be nested: {"response": {"status", "headers", "body"}}.
    let nested = object
        .get("response")
        .and_then(Value::as_object)
        .filter(|r| first(r, &["status", "status_code", "http_status", "statusCode"]).is_some());
    let holder = nested.unwrap_or(object);
    let status = first(
        holder,
        &["status", "status_code", "http_status", "statusCode"],
    )
    .or_else(|| {
        first(
            object,
            &["status", "status_code", "http_status", "statusCode"],
        )
    })
    .ok_or("no status")?;
    let body = match nested {
        Some(r) => first(r, &["body", "response_body", "text", "data"]),
        None => first(
            object,
            &["body", "response", "response_body", "raw", "text"],
        ),
    };
    let headers = first(holder, &["headers", "response_headers"])
        .or_else(|| first(object, &["headers", "response_headers"]));
    let label = first(
        object,
        &[
            "label",
            "class",
            "expected",
            "expected_class",
            "error_class",
            "classification",
        ],
    )
    .ok_or("no label")?;
    let provider = first(object, &["provider", "upstream", "vendor", "source"])
        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    Ok(Case {
        line,
        provider,
        status: parse_status(status)?,
        headers: parse_headers(headers)?,
        body: body.map(body_bytes).unwrap_or_default(),
        expected: parse_label(label)?,
    })
}

/// Reads JSONL (or one JSON array); every problem is reported, none is skipped silently.
fn load(path: &Path) -> (Vec<Case>, Vec<String>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let entries: Vec<(usize, Result<Value, String>)> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, Ok(v)))
            .collect(),
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, line)| {
                let line = line.trim();
                !line.is_empty() && !line.starts_with('#') && !line.starts_with("//")
            })
            .map(|(i, line)| (i + 1, serde_json::from_str(line).map_err(|e| e.to_string())))
            .collect(),
    };
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (line, entry) in entries {
        match entry.and_then(|entry| parse_case(line, &entry)) {
            Ok(case) => cases.push(case),
            Err(problem) => problems.push(format!("{}:{line}: {problem}", path.display())),
        }
    }
    (cases, problems)
}

fn label(class: Option<ErrorClass>) -> &'static str {
    class.map_or("ok", ErrorClass::as_str)
}

/// Classifies every case; panics listing every mismatch and every unreadable entry.
fn check(path: &Path) -> usize {
    let (cases, mut problems) = load(path);
    assert!(
        !cases.is_empty() || !problems.is_empty(),
        "{} holds no entries",
        path.display()
    );
    for case in &cases {
        let got = classify_response(case.status, &case.headers, &case.body);
        if got != case.expected {
            let body = String::from_utf8_lossy(&case.body);
            let body: String = body.chars().take(200).collect();
            problems.push(format!(
                "line {}: provider={} status={} expected={} got={} body={body:?}",
                case.line,
                case.provider,
                case.status.as_u16(),
                label(case.expected),
                label(got),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} entries of {} are wrong:\n{}",
        problems.len(),
        cases.len(),
        path.display(),
        problems.join("\n")
    );
    cases.len()
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fixtures_are_classified_as_labelled() {
    let path = manifest_dir().join("tests/fixtures/provider-errors.jsonl");
    let (cases, problems) = load(&path);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(cases.len() >= 60, "only {} fixtures", cases.len());
    // Every class and plain success appear.
    for expected in ErrorClass::ALL.map(Some).into_iter().chain([None]) {
        assert!(
            cases.iter().any(|c| c.expected == expected),
            "no {} fixture",
            label(expected)
        );
    }
    check(&path);
}

#[test]
fn upstream_corpus_is_classified_as_labelled() {
    let path = std::env::var_os("UPSTREAM_ERRORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/corpus/upstream-errors.jsonl"));
    let required = std::env::var("REQUIRE_UPSTREAM_ERRORS").is_ok_and(|v| v == "1");
    if !path.exists() {
        assert!(
            !required,
            "REQUIRE_UPSTREAM_ERRORS=1 but {} does not exist",
            path.display()
        );
        eprintln!(
            "\n*** NOTICE: upstream error corpus {} not found: only the fixtures were checked. \
             Set UPSTREAM_ERRORS=<path> (and REQUIRE_UPSTREAM_ERRORS=1 in CI). ***\n",
            path.display()
        );
        return;
    }
    let checked = check(&path);
    eprintln!("upstream corpus: {checked} entries classified as labelled");
}

#[test]
fn loader_tolerates_other_schemas() {
    let dir = std::env::temp_dir().join(format!("classify-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alt.jsonl");
    let lines = [
        r#"{"status_code":"429","response":{"error":{"type":"rate_limit_error"}},"headers":[["retry-after","3"]],"class":"RateLimited"}"#,
        r#"{"response":{"status":200,"headers":{"content-type":["application/json"]},"body":{"id":"x","choices":[]}},"expected":null}"#,
        r#"{"http_status":503,"response_body":"upstream unavailable","expected_class":"downtime"}"#,
        r#"# a comment line"#,
        r#"{"status":400,"body":"x","label":"context-length"}"#,
        r#"{"status":"HTTP/1.1 529 Overloaded","body":"","label":"Overloaded"}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (cases, problems) = load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let summary: Vec<_> = cases
        .iter()
        .map(|c| (c.status.as_u16(), c.expected, c.headers.len(), c.body.len()))
        .collect();
    assert_eq!(
        summary,
        [
            (429, Some(ErrorClass::RateLimited), 1, 37),
            (200, None, 1, 23),
            (503, Some(ErrorClass::Downtime), 0, 20),
            (400, Some(ErrorClass::ContextLength), 0, 1),
            (529, Some(ErrorClass::Downtime), 0, 0),
        ]
    );
}
