//! Unit tests of the body view: fields, errors, splicing.

use super::*;
use crate::ApiError;
use serde_json::{json, Value};

fn parse(body: &str) -> Result<ChatRequest, PayloadError> {
    ChatRequest::parse(Bytes::copy_from_slice(body.as_bytes()))
}

fn req(body: &str) -> ChatRequest {
    parse(body).unwrap()
}

fn spliced(req: &ChatRequest, edit: impl FnOnce(Splice<'_>) -> Splice<'_>) -> String {
    let splice = edit(req.splice());
    let bytes = splice.to_bytes();
    assert_eq!(
        splice.to_segments().to_bytes(),
        bytes,
        "segments and bytes agree"
    );
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn err(body: &str) -> PayloadError {
    parse(body).unwrap_err()
}

// ===== fields =====

#[test]
fn reads_model_and_models() {
    let r = req(r#"{"model":"gpt-4o","models":["a","b","c"]}"#);
    assert_eq!(r.model(), Some("gpt-4o"));
    assert_eq!(r.models().len(), 3);
    assert_eq!(r.models().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(r.has_models());
}

/// Asserts that every field but `models` reads as absent.
fn assert_reads_as_absent(r: &ChatRequest) {
    assert_eq!(r.model(), None);
    assert_eq!(r.models().len(), 0);
    assert!(!r.stream());
    assert_eq!(r.max_tokens(), None);
    assert!(!r.has_tools());
    assert!(!r.wants_json_schema());
    assert_eq!(r.plugins().count(), 0);
    assert!(r.messages().unwrap().is_empty());
}

#[test]
fn absent_and_null_fields_read_as_absent() {
    let r = req(r#"{}"#);
    assert_reads_as_absent(&r);
    assert!(!r.has_models());

    let r = req(
        r#"{"model":null,"models":null,"stream":null,"max_tokens":null,"tools":null,
        "response_format":null,"plugins":null,"messages":null}"#,
    );
    assert_reads_as_absent(&r);
    assert!(r.has_models(), "a `models` key, even null, is present");
}

#[test]
fn empty_models_is_present() {
    let r = req(r#"{"models":[]}"#);
    assert!(r.has_models());
    assert_eq!(r.models().len(), 0);
}

#[test]
fn reads_stream() {
    assert!(req(r#"{"stream":true}"#).stream());
    assert!(!req(r#"{"stream":false}"#).stream());
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    assert_eq!(req(r#"{"max_tokens":100}"#).max_tokens(), Some(100));
    assert_eq!(
        req(r#"{"max_tokens":100,"max_completion_tokens":7}"#).max_tokens(),
        Some(7)
    );
    assert_eq!(
        req(r#"{"max_completion_tokens":"lots","max_tokens":100}"#).max_tokens(),
        Some(100),
        "a max_completion_tokens that is not an integer falls back to max_tokens"
    );
    assert_eq!(req(r#"{"max_tokens":-1}"#).max_tokens(), None);
    assert_eq!(req(r#"{"max_tokens":1.5}"#).max_tokens(), None);
}

#[test]
fn has_tools_needs_a_non_empty_array() {
    assert!(req(r#"{"tools":[{"type":"function","function":{"name":"f"}}]}"#).has_tools());
    assert!(req(r#"{"functions":[{"name":"f"}]}"#).has_tools());
    assert!(!req(r#"{"tools":[]}"#).has_tools());
    assert!(!req(r#"{"tools":[ 	
 ]}"#)
    .has_tools());
    assert!(!req(r#"{"tools":{}}"#).has_tools());
    assert!(req(r#"{"tools":[ ],"functions":[1]}"#).has_tools());
}

#[test]
fn wants_json_schema_reads_the_type() {
    assert!(req(
        r#"{"response_format":{"json_schema":{"name":"x","schema":{}},"type":"json_schema"}}"#
    )
    .wants_json_schema());
    assert!(!req(r#"{"response_format":{"type":"json_object"}}"#).wants_json_schema());
    assert!(!req(r#"{"response_format":"json_schema"}"#).wants_json_schema());
    assert!(!req(r#"{"response_format":["json_schema"]}"#).wants_json_schema());
    assert!(req(r#"{"response_format":{"type":"json\u005fschema"}}"#).wants_json_schema());
}

#[test]
fn reads_plugins() {
    let r = req(
        r#"{"plugins":[{"id":"web","max_results":3}, ["x"], {"id":"auto-router"}, {"id":"web"}]}"#,
    );
    let plugins: Vec<_> = r.plugins().collect();
    assert_eq!(plugins.len(), 4);
    assert_eq!(plugins[0].id.as_deref(), Some("web"));
    assert_eq!(plugins[0].raw.get(), r#"{"id":"web","max_results":3}"#);
    assert_eq!(plugins[1].id, None);
    assert_eq!(plugins[1].raw.get(), r#"["x"]"#);
    assert_eq!(
        r.plugin("web").unwrap().index,
        0,
        "the first plugin with the id"
    );
    assert_eq!(r.plugin("auto-router").unwrap().index, 2);
    assert!(r.plugin("nope").is_none());
    let value: Value = r.plugin("web").unwrap().parse().unwrap();
    assert_eq!(value, json!({"id":"web","max_results":3}));
}

#[test]
fn reads_messages() {
    let r = req(r#"{"messages":[
        {"role":"system","content":"sys"},
        {"role":"user","content":"first question"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function"}]},
        {"role":"tool","tool_call_id":"c1","content":"42"},
        {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"u"}},
            {"type":"input_audio","input_audio":{}},{"type":"file","file":{}},{"type":"refusal","refusal":"no"},
            {"type":"text","text":"here"}]}
    ]}"#);
    let m = r.messages().unwrap();
    assert_eq!(m.len(), 5);
    let roles: Vec<_> = m.iter().map(|m| m.role.as_ref()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    let assistant = m.iter().nth(2).unwrap();
    assert!(assistant.has_tool_calls());
    assert!(assistant.parts.is_empty());
    assert!(!m.iter().next().unwrap().has_tool_calls());
    let last = m.iter().last().unwrap();
    assert_eq!(
        last.parts,
        [
            Part::Text("look".into()),
            Part::Image,
            Part::Audio,
            Part::File,
            Part::Other,
            Part::Text("here".into())
        ]
    );
    assert_eq!(m.image_count(), 1);
    assert_eq!(m.last_user_text().as_deref(), Some("look\nhere"));
    assert_eq!(m.user_text(), "first question\nlook\nhere");
    assert_eq!(m.text_chars(), 3 + 14 + 2 + 4 + 4);
}

#[test]
fn message_text_borrows_unless_escaped() {
    let r = req(
        r#"{"messages":[{"role":"user","content":"plain"},{"role":"user","content":"line\nbreak"}]}"#,
    );
    let m = r.messages().unwrap();
    let texts: Vec<_> = m
        .iter()
        .map(|m| m.parts[0].text().unwrap().clone())
        .collect();
    assert!(matches!(texts[0], Cow::Borrowed("plain")));
    assert!(matches!(&texts[1], Cow::Owned(s) if s == "line\nbreak"));
    assert!(matches!(m.last_user_text(), Some(Cow::Owned(s)) if s == "line\nbreak"));
}

#[test]
fn last_user_text_is_none_without_user_text() {
    let r = req(
        r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"image_url"}]}]}"#,
    );
    let m = r.messages().unwrap();
    assert_eq!(m.last_user_text(), None);
    assert_eq!(m.user_text(), "");
    assert_eq!(m.image_count(), 1);
}

#[test]
fn legacy_function_call_counts_as_tool_call() {
    let r = req(
        r#"{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"{}"}},
        {"role":"assistant","content":"x","tool_calls":[]}]}"#,
    );
    let m = r.messages().unwrap();
    let calls: Vec<_> = m.iter().map(|m| m.has_tool_calls()).collect();
    assert_eq!(calls, [true, false]);
    let first = m.iter().next().unwrap();
    assert_eq!(first.tool_calls, Some(r#"{"name":"f","arguments":"{}"}"#));
}

#[test]
fn the_json_of_tools_and_tool_calls_is_kept_for_token_estimates() {
    let r = req(
        r#"{"tools": [ {"type":"function","function":{"name":"f","description":"d"}} ],
        "messages":[{"role":"assistant","tool_calls":[{"id":"1","function":{"arguments":"{\"x\":1}"}}]}]}"#,
    );
    assert_eq!(
        r.tool_definitions(),
        Some(r#"[ {"type":"function","function":{"name":"f","description":"d"}} ]"#)
    );
    let m = r.messages().unwrap();
    assert_eq!(
        m.iter().next().unwrap().tool_calls,
        Some(r#"[{"id":"1","function":{"arguments":"{\"x\":1}"}}]"#)
    );
    // The legacy `functions`, when there is no `tools`; an empty array is no tools.
    let legacy = req(r#"{"tools":[],"functions":[{"name":"g"}]}"#);
    assert_eq!(legacy.tool_definitions(), Some(r#"[{"name":"g"}]"#));
    assert_eq!(req(r#"{"tools":[ ]}"#).tool_definitions(), None);
}

#[test]
fn the_keys_are_found_by_name() {
    for key in Key::ALL {
        assert_eq!(Key::find(key.name().as_bytes()), Some(key));
    }
    for other in [
        "",
        "t",
        "modle",
        "systen",
        "max_tokenz",
        "mode",
        "modelx",
        "Model",
        "texts",
        "inputs",
        "max_output_token",
        "output_formats",
        "output_conf",
    ] {
        assert_eq!(Key::find(other.as_bytes()), None, "{other}");
    }
}

#[test]
fn max_output_tokens_is_the_completion_reserve() {
    assert_eq!(req(r#"{"max_output_tokens":900}"#).max_tokens(), Some(900));
    assert_eq!(
        req(r#"{"max_output_tokens":900,"max_tokens":100}"#).max_tokens(),
        Some(100)
    );
    assert_eq!(req(r#"{"max_output_tokens":"lots"}"#).max_tokens(), None);
    assert_eq!(req(r#"{"max_output_tokens":null}"#).max_tokens(), None);
}

/// That each of `asks` wants a JSON schema, none of `others` does, and each of `twice` is
/// refused for the repeated key it names.
fn assert_json_schema_read(asks: &[&str], others: &[&str], twice: &[(&str, &'static str)]) {
    for body in asks {
        assert!(req(body).wants_json_schema(), "{body}");
    }
    for body in others {
        assert!(!req(body).wants_json_schema(), "{body}");
    }
    for &(body, key) in twice {
        assert_eq!(err(body), PayloadError::DuplicateKey { key }, "{body}");
    }
}

#[test]
fn wants_json_schema_reads_the_responses_text_format() {
    assert_json_schema_read(
        &[
            r#"{"text":{"verbosity":"low","format":{"type":"json_schema","name":"p","schema":{}}}}"#,
            r#"{"text":{"form\u0061t":{"type":"json\u005fschema"}}}"#,
        ],
        &[
            r#"{"text":{"format":{"type":"json_object"}}}"#,
            r#"{"text":{"format":{"type":"text"}}}"#,
            r#"{"text":{"format":"json_schema"}}"#,
            r#"{"text":{"format":null}}"#,
            r#"{"text":"json_schema"}"#,
            r#"{"text":[{"format":{"type":"json_schema"}}]}"#,
            r#"{"text":null}"#,
        ],
        &[
            (
                r#"{"text":{"format":{"type":"text"},"format":{"type":"json_schema"}}}"#,
                "text.format",
            ),
            (
                r#"{"text":{"format":{"type":"text","type":"json_schema"}}}"#,
                "text.format.type",
            ),
            // Refused even when `response_format` already asks for a schema.
            (
                r#"{"response_format":{"type":"json_schema"},"text":{"format":{"type":"a","type":"b"}}}"#,
                "text.format.type",
            ),
        ],
    );
}

/// Anthropic's structured outputs: `output_config.format`, and the beta's `output_format`.
#[test]
fn wants_json_schema_reads_anthropics_output_config_and_output_format() {
    assert_json_schema_read(
        &[
            r#"{"output_config":{"effort":"low","format":{"type":"json_schema","schema":{"type":"object"}}}}"#,
            r#"{"output_format":{"type":"json_schema","schema":{"type":"object"}}}"#,
            r#"{"output_config":{"form\u0061t":{"type":"json\u005fschema"}}}"#,
        ],
        &[
            r#"{"output_config":{"effort":"high"}}"#,
            r#"{"output_config":{"format":{"type":"text"}}}"#,
            r#"{"output_config":{"format":null}}"#,
            r#"{"output_config":"json_schema"}"#,
            r#"{"output_config":null}"#,
            r#"{"output_format":{"type":"json_object"}}"#,
            r#"{"output_format":"json_schema"}"#,
            r#"{"output_config":{"output_format":{"type":"json_schema"}}}"#,
        ],
        &[
            (
                r#"{"output_config":{"format":{"type":"text"},"format":{"type":"json_schema"}}}"#,
                "output_config.format",
            ),
            (
                r#"{"output_config":{"format":{"type":"text","type":"json_schema"}}}"#,
                "output_config.format.type",
            ),
            (
                r#"{"text":{"format":{"type":"json_schema"}},"output_format":{"type":"a","type":"b"}}"#,
                "output_format.type",
            ),
        ],
    );
}

fn roles<'a>(m: &'a Messages<'_>) -> Vec<&'a str> {
    m.iter().map(|m| m.role.as_ref()).collect()
}

#[test]
fn a_chat_body_reads_the_same_prompt_as_its_messages() {
    let r = req(r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}]}"#);
    let (prompt, messages) = (r.prompt().unwrap(), r.messages().unwrap());
    assert_eq!(
        prompt.iter().collect::<Vec<_>>(),
        messages.iter().collect::<Vec<_>>()
    );
    assert!(r.other_shapes.is_none(), "nothing boxed for a chat body");
    assert!(req("{}").prompt().unwrap().is_empty());
}

#[test]
fn the_responses_input_is_read_as_messages() {
    let r = req(r#"{"input":"hello"}"#);
    let p = r.prompt().unwrap();
    assert_eq!(roles(&p), ["user"]);
    assert!(matches!(p.last_user_text(), Some(Cow::Borrowed("hello"))));
    assert!(r.messages().unwrap().is_empty(), "`messages` is `messages`");

    let r = req(r#"{"instructions":"Be brief.","input":[
        {"role":"developer","content":"Use metric units."},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"what is"},
            {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"high"},
            {"type":"input_file","file_id":"file-1"},
            {"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}},
            {"type":"input_text","text":"this?"}]},
        {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"hmm"}]},
        {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"x\":1}"},
        {"type":"function_call_output","call_id":"c1","output":"42"},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"It is","annotations":[]}]},
        {"type":"custom_tool_call","call_id":"c2","name":"g","input":"raw"},
        {"type":"custom_tool_call_output","call_id":"c2","output":[{"type":"input_text","text":"ok"}]},
        {"type":"computer_call","call_id":"c3","action":{"type":"screenshot"}},
        {"type":"computer_call_output","call_id":"c3","output":{"type":"computer_screenshot","file_id":"file-2"}},
        {"type":"computer_call_output","call_id":"c4","output":{"type":"input_text","text":"?"}},
        {"type":"computer_call_output","call_id":"c5","output":"not a screenshot"},
        {"type":"item_reference","id":"msg_1"},
        {"type":"image_generation_call","id":"ig_1","status":"failed","result":null},
        {"type":"code_interpreter_call","id":"ci_1","code":"plot()","container_id":"c","outputs":[{"type":"image","url":"https://example.com/plot.png"}]}
    ]}"#);
    let p = r.prompt().unwrap();
    assert_eq!(
        roles(&p),
        [
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "assistant",
            "assistant",
            "tool",
            "tool",
            "tool",
            "tool"
        ]
    );
    // The screenshot is an image; an output of another shape is no part. A failed image
    // generation and a code interpreter's outputs are skipped.
    let screenshots: Vec<_> = p.iter().skip(8).map(|m| m.parts.clone()).collect();
    assert_eq!(screenshots, [vec![Part::Image], vec![], vec![]]);
    assert_eq!(p.image_count(), 2);
    let user = p.iter().nth(2).unwrap();
    assert_eq!(
        user.parts,
        [
            Part::Text("what is".into()),
            Part::Image,
            Part::File,
            Part::Audio,
            Part::Text("this?".into())
        ]
    );
    assert_eq!(p.last_user_text().as_deref(), Some("what is\nthis?"));
    let calls: Vec<_> = p.iter().filter_map(|m| m.tool_calls).collect();
    assert_eq!(calls, [r#""{\"x\":1}""#, r#""raw""#]);
    assert_eq!(
        p.text_chars(),
        "Be brief.Use metric units.what isthis?42It isok".len()
    );
}

#[test]
fn anthropic_blocks_and_system_are_read() {
    let r = req(r#"{"max_tokens":1024,
        "system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],
        "messages":[
            {"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA"}},
                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc"}},
                {"type":"text","text":"what is this?"}]},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"x"},
                {"type":"tool_use","id":"t1","name":"look","input":{"q":1}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1",
                "content":[{"type":"text","text":"seen"},{"type":"image","source":{}}]},
                {"type":"tool_result","tool_use_id":"t2","content":"done"},
                {"type":"tool_result","tool_use_id":"t3","is_error":true}]}
        ]}"#);
    let p = r.prompt().unwrap();
    assert_eq!(roles(&p), ["system", "user", "assistant", "user"]);
    assert_eq!(p.image_count(), 2);
    let parts: Vec<_> = p.iter().flat_map(|m| m.parts.iter().cloned()).collect();
    assert_eq!(
        parts,
        [
            Part::Text("Be brief.".into()),
            Part::Image,
            Part::File,
            Part::Text("what is this?".into()),
            Part::Other,
            Part::ToolCall(r#"{"q":1}"#),
            Part::ToolResult("seen".into()),
            Part::Image,
            Part::ToolResult("done".into()),
        ]
    );
    // A tool's result is not the user's words.
    assert_eq!(p.last_user_text(), None);
    assert_eq!(p.user_text(), "what is this?");
    assert_eq!(p.text_chars(), "Be brief.what is this?seendone".len());
    // `messages()` is `messages` alone.
    assert_eq!(roles(&r.messages().unwrap()), ["user", "assistant", "user"]);
    // A `system` string; one of another type reads as absent.
    let r = req(r#"{"system":"s","messages":[{"role":"user","content":"q"}]}"#);
    assert_eq!(roles(&r.prompt().unwrap()), ["system", "user"]);
    for system in ["1", "{}", "null", "[1]"] {
        let r = req(&format!(
            r#"{{"system":{system},"messages":[{{"role":"user","content":"q"}}]}}"#
        ));
        assert_eq!(roles(&r.prompt().unwrap()), ["user"], "{system}");
    }
}

#[test]
fn system_text_alone_is_no_prompt() {
    for body in [
        r#"{"system":"s"}"#,
        r#"{"instructions":"s","input":[]}"#,
        r#"{"instructions":"s","input":null}"#,
        r#"{"system":"s","messages":[]}"#,
    ] {
        assert!(req(body).prompt().unwrap().is_empty(), "{body}");
    }
}

#[test]
fn a_prompt_in_both_messages_and_input_is_refused() {
    let r = req(r#"{"messages":[{"role":"user","content":"a"}],"input":"b"}"#);
    let e = r.prompt().unwrap_err();
    assert_eq!(e, PayloadError::AmbiguousPrompt);
    assert_eq!((e.code(), e.param()), ("ambiguous_prompt", Some("input")));
    // One of them `null` is not a second prompt.
    let r = req(r#"{"messages":null,"input":"b"}"#);
    assert_eq!(r.prompt().unwrap().last_user_text().as_deref(), Some("b"));
    let r = req(r#"{"messages":[{"role":"user","content":"a"}],"input":null}"#);
    assert_eq!(r.prompt().unwrap().last_user_text().as_deref(), Some("a"));
}

#[test]
fn a_malformed_input_is_reported_by_prompt_only() {
    for (body, at) in [
        (r#"{"input":1}"#, None),
        (r#"{"input":{"role":"user"}}"#, None),
        (r#"{"input":["hi"]}"#, Some(0)),
        (
            r#"{"input":[{"role":"user","content":"a"},{"content":"no role"}]}"#,
            Some(1),
        ),
        (
            r#"{"input":[{"role":"user","content":[{"type":"input_text"}]}]}"#,
            Some(0),
        ),
        (r#"{"input":[{"role":"user","content":1}]}"#, Some(0)),
    ] {
        let r = req(body);
        let e = r.prompt().unwrap_err();
        assert!(
            matches!(&e, PayloadError::BadInput { index, .. } if *index == at),
            "{body}: {e:?}"
        );
        assert_eq!((e.code(), e.param()), ("bad_input", Some("input")));
    }
    let e = req(r#"{"input":[{"role":"user","content":"a"},{"content":"x"}]}"#)
        .prompt()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`input[1]` is malformed: missing field `role`"
    );
}

// ===== escapes, unicode, whitespace =====

#[test]
fn escaped_keys_and_values_are_decoded() {
    let r = req(
        r#"{"mod\u0065l":"gpt\u002d4o","\u006dodels":["a\"b","\ud83d\ude00"],"str\u0065am":true}"#,
    );
    assert_eq!(r.model(), Some("gpt-4o"));
    assert_eq!(r.models().collect::<Vec<_>>(), ["a\"b", "😀"]);
    assert!(r.stream());
    assert_eq!(
        spliced(&r, |s| s.set_model("x").remove_models()),
        r#"{"mod\u0065l":"x","str\u0065am":true}"#
    );
}

#[test]
fn unicode_values_survive() {
    let r = req(
        r#"{"model":"模型-é","models":["ñ","🦀"],"messages":[{"role":"user","content":"héllo 🦀"}]}"#,
    );
    assert_eq!(r.model(), Some("模型-é"));
    assert_eq!(r.models().collect::<Vec<_>>(), ["ñ", "🦀"]);
    assert_eq!(r.messages().unwrap().text_chars(), 7);
    assert_eq!(
        spliced(&r, |s| s.set_model("🦀-2").remove_models()),
        r#"{"model":"🦀-2","messages":[{"role":"user","content":"héllo 🦀"}]}"#
    );
}

#[test]
fn set_model_escapes_what_it_writes() {
    let r = req(r#"{"model":"a"}"#);
    let out = spliced(&r, |s| s.set_model("q\"uo\\te\n\u{1}"));
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["model"], "q\"uo\\te\n\u{1}");
    assert_eq!(req(&out).model(), Some("q\"uo\\te\n\u{1}"));
}

#[test]
fn whitespace_everywhere() {
    let body = " \r\n\t{ \n \"model\" \t:\r \"a\" \n, \"models\"  :  [ \"b\" ,\n\"c\" ]  ,\"x\" : 1 \n}\n\t ";
    let r = req(body);
    assert_eq!(r.model(), Some("a"));
    assert_eq!(r.models().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(
        spliced(&r, |s| s.set_model("b").remove_models()),
        " \r\n\t{ \n \"model\" \t:\r \"b\" \n, \"x\" : 1 \n}\n\t "
    );
}

// ===== splicing =====

#[test]
fn set_model_replaces_only_the_value() {
    let r = req(r#"{"temperature":0.10,"model":"a","n":1}"#);
    assert_eq!(
        spliced(&r, |s| s.set_model("bb")),
        r#"{"temperature":0.10,"model":"bb","n":1}"#
    );
}

#[test]
fn set_model_replaces_a_null_model_instead_of_inserting() {
    let r = req(r#"{"x":1,"model":null}"#);
    assert_eq!(spliced(&r, |s| s.set_model("m")), r#"{"x":1,"model":"m"}"#);
}

#[test]
fn set_model_inserts_first_when_absent() {
    assert_eq!(
        spliced(&req("{}"), |s| s.set_model("m")),
        r#"{"model":"m"}"#
    );
    assert_eq!(
        spliced(&req(" { \n} "), |s| s.set_model("m")),
        " {\"model\":\"m\" \n} "
    );
    assert_eq!(
        spliced(&req(r#"{"a":1}"#), |s| s.set_model("m")),
        r#"{"model":"m","a":1}"#
    );
    assert_eq!(
        spliced(&req(r#"{ "a":1 }"#), |s| s.set_model("m")),
        r#"{"model":"m", "a":1 }"#
    );
}

#[test]
fn insert_model_and_remove_the_only_other_member() {
    let r = req(r#"{ "models":["a"] }"#);
    assert_eq!(
        spliced(&r, |s| s.set_model("a").remove_models()),
        r#"{"model":"a"  }"#
    );
    let r = req(r#"{"models":["a"],"n":1}"#);
    assert_eq!(
        spliced(&r, |s| s.set_model("a").remove_models()),
        r#"{"model":"a","n":1}"#
    );
}

#[test]
fn remove_models_first_middle_last_only() {
    let cases = [
        (r#"{"models":["a"], "x":1, "y":2}"#, r#"{"x":1, "y":2}"#),
        (r#"{"x":1, "models":["a"], "y":2}"#, r#"{"x":1, "y":2}"#),
        (r#"{"x":1, "y":2 , "models":["a"] }"#, r#"{"x":1, "y":2 }"#),
        (r#"{ "models" : [ "a" ] }"#, r#"{  }"#),
        (r#"{"models":[]}"#, r#"{}"#),
        (r#"{"model":"m","models":null}"#, r#"{"model":"m"}"#),
    ];
    for (body, expected) in cases {
        assert_eq!(
            spliced(&req(body), |s| s.remove_models()),
            expected,
            "{body}"
        );
    }
}

#[test]
fn remove_models_next_to_a_replaced_model() {
    let r = req(r#"{"models":["b"],"model":"a"}"#);
    assert_eq!(
        spliced(&r, |s| s.remove_models().set_model("b")),
        r#"{"model":"b"}"#
    );
    let r = req(r#"{"model":"a","models":["b"]}"#);
    assert_eq!(
        spliced(&r, |s| s.remove_models().set_model("b")),
        r#"{"model":"b"}"#
    );
}

/// Entries leave `models` (the array written anew, escapes as serde_json writes them); the
/// member goes with its last entry; nothing to remove leaves the body as it is.
#[test]
fn retain_models_rewrites_only_the_array() {
    let not_auto = |m: &str| m != "auto";
    let cases = [
        (
            r#"{"model":"a", "models" : [ "b" , "auto" ],"n":1}"#,
            r#"{"model":"a", "models" : ["b"],"n":1}"#,
        ),
        (
            r#"{"models":["auto","b\u0022q","c\n"]}"#,
            r#"{"models":["b\"q","c\n"]}"#,
        ),
        (r#"{"x":1, "models":["auto"]}"#, r#"{"x":1}"#),
        (r#"{"models":["auto"],"model":"a"}"#, r#"{"model":"a"}"#),
        (r#"{"models":["b", "c"]}"#, r#"{"models":["b", "c"]}"#),
        (r#"{"model":"a"}"#, r#"{"model":"a"}"#),
    ];
    for (body, expected) in cases {
        let r = req(body);
        assert_eq!(
            spliced(&r, |s| s.retain_models(not_auto)),
            expected,
            "{body}"
        );
        let read = req(expected);
        assert_eq!(
            read.models().collect::<Vec<_>>(),
            r.models().filter(|m| not_auto(m)).collect::<Vec<_>>()
        );
    }
    let r = req(r#"{"models":["b"]}"#);
    assert!(r.splice().retain_models(not_auto).is_noop());
    // With the other edits: a new `model` inserted first, `plugins` removed after.
    let r = req(r#"{"models":["auto","b"],"plugins":[{"id":"x"}]}"#);
    assert_eq!(
        spliced(&r, |s| s
            .retain_models(not_auto)
            .set_model("m")
            .remove_plugins()),
        r#"{"model":"m","models":["b"]}"#
    );
    assert_eq!(
        spliced(&r, |s| s.retain_models(not_auto).remove_models()),
        r#"{"plugins":[{"id":"x"}]}"#,
        "remove_models wins"
    );
}

#[test]
fn remove_plugins_in_any_combination() {
    let body = r#"{"plugins":[ {"id":"a"} , {"id":"b"},{"id":"c"} ,{"id":"d"} ],"model":"m"}"#;
    let r = req(body);
    let original: Value = serde_json::from_str(body).unwrap();
    for mask in 0u32..16 {
        let mut splice = r.splice();
        for i in 0..4 {
            if mask & (1 << i) != 0 {
                splice = splice.remove_plugin(i);
            }
        }
        let out: Value = serde_json::from_slice(&splice.to_bytes()).unwrap();
        let mut expected = original.clone();
        let kept: Vec<Value> = original["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) == 0)
            .map(|(_, v)| v.clone())
            .collect();
        expected["plugins"] = Value::Array(kept);
        assert_eq!(out, expected, "mask {mask:04b}");
        assert_eq!(splice.to_segments().to_bytes(), splice.to_bytes());
    }
    assert_eq!(
        spliced(&r, |s| s.remove_plugin(1).remove_plugin(2)),
        r#"{"plugins":[ {"id":"a"} , {"id":"d"} ],"model":"m"}"#
    );
    assert_eq!(
        spliced(&r, |s| s.remove_plugin(3).remove_plugin(2)),
        r#"{"plugins":[ {"id":"a"} , {"id":"b"} ],"model":"m"}"#
    );
}

#[test]
fn noop_splices_return_the_original_buffer() {
    let r = req(r#"{"model":"a","plugins":[1]}"#);
    for splice in [
        r.splice(),
        r.splice().set_model("a"),
        r.splice().remove_models(),
        r.splice().remove_plugin(1),
        r.splice().set_model("b").set_model("a"),
    ] {
        assert!(splice.is_noop(), "{splice:?}");
        let out = splice.to_bytes();
        assert_eq!(out.as_ptr(), r.bytes().as_ptr(), "no copy");
        assert_eq!(out.len(), r.bytes().len());
    }
    assert!(!r.splice().set_model("b").is_noop());
    assert!(!r.splice().remove_plugin(0).is_noop());
    // Removing the whole member is a change too: taken for a no-op, the plugins stayed.
    let removed = r.splice().remove_plugins();
    assert!(!removed.is_noop(), "{removed:?}");
    assert_eq!(&removed.to_bytes()[..], br#"{"model":"a"}"#);
    assert!(!req(r#"{}"#).splice().set_model("a").is_noop());
}

#[test]
fn segments_are_slices_of_the_original() {
    let r = req(r#"{"a":"xxxxxxxx","model":"old","b":"yyyyyyyy","models":["q"],"c":1}"#);
    let splice = r.splice().set_model("new").remove_models();
    let segments = splice.to_segments();
    let range = r.bytes().as_ptr_range();
    let parts: Vec<_> = segments.iter().collect();
    assert_eq!(parts.len(), 4, "{parts:?}");
    for i in [0, 2, 3] {
        assert!(
            range.contains(&parts[i].as_ptr()),
            "segment {i} points into the original"
        );
    }
    assert_eq!(&parts[1][..], b"\"new\"");
    assert_eq!(
        &segments.to_bytes()[..],
        br#"{"a":"xxxxxxxx","model":"new","b":"yyyyyyyy","c":1}"#
    );
}

// ===== errors =====

#[test]
fn not_utf8() {
    let e = ChatRequest::parse(Bytes::from_static(b"{\"model\":\"\xff\"}")).unwrap_err();
    assert_eq!(e, PayloadError::NotUtf8 { valid_up_to: 10 });
    assert_eq!(e.code(), "invalid_json");
}

#[test]
fn invalid_json() {
    for body in [
        "",
        "{",
        r#"{"model":}"#,
        r#"{"a":1,}"#,
        "{'a':1}",
        r#"{"a" 1}"#,
        "nul",
    ] {
        let e = err(body);
        assert!(
            matches!(e, PayloadError::InvalidJson { .. }),
            "{body:?}: {e:?}"
        );
        assert_eq!(e.code(), "invalid_json");
        assert_eq!(e.param(), None);
    }
    let e = err("{\n\"a\":tru}");
    assert!(
        matches!(&e, PayloadError::InvalidJson { line: 2, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("request body is not valid json: "),
        "{e}"
    );
}

#[test]
fn trailing_garbage_is_refused() {
    for body in [r#"{"a":1} x"#, r#"{"a":1}{}"#, r#"{"a":1}]"#] {
        assert!(
            matches!(err(body), PayloadError::InvalidJson { .. }),
            "{body}"
        );
    }
    assert_eq!(
        req("{\"a\":1} \n\t\r").model(),
        None,
        "trailing whitespace is fine"
    );
}

#[test]
fn nesting_is_limited_like_serde_json() {
    for depth in [1, 100, 126, 127, 128, 129, 200, 5000] {
        let body = format!(
            "{{\"x\":{}{}}}",
            "[{\"[\":".repeat(depth / 2),
            "0}]".repeat(depth / 2)
        );
        let expected = serde_json::from_str::<Value>(&body).is_ok();
        assert_eq!(parse(&body).is_ok(), expected, "depth {depth}");
        if !expected {
            assert!(matches!(
                err(&body),
                PayloadError::InvalidJson { line: 1, .. }
            ));
        }
    }
    // Brackets inside strings do not count.
    let body = format!("{{\"x\":\"{}\\\"{}\"}}", "[".repeat(300), "{".repeat(300));
    assert!(parse(&body).is_ok());
}

#[test]
fn not_an_object() {
    for body in ["[]", "1", "\"s\"", "null", "true", r#"[{"model":"a"}]"#] {
        let e = err(body);
        assert_eq!(e, PayloadError::NotAnObject, "{body}");
        assert_eq!(e.code(), "not_an_object");
    }
}

#[test]
fn wrong_types_are_refused() {
    let cases = [
        (r#"{"model":1}"#, "model", "bad_model"),
        (r#"{"model":["a"]}"#, "model", "bad_model"),
        (r#"{"models":"a"}"#, "models", "bad_models"),
        (r#"{"models":["a",1]}"#, "models", "bad_models"),
        (r#"{"models":[null]}"#, "models", "bad_models"),
        (r#"{"stream":"true"}"#, "stream", "bad_stream"),
        (r#"{"stream":1}"#, "stream", "bad_stream"),
        (r#"{"plugins":{"id":"web"}}"#, "plugins", "bad_plugins"),
    ];
    for (body, field, code) in cases {
        let e = err(body);
        assert!(
            matches!(e, PayloadError::InvalidField { field: f, .. } if f == field),
            "{body}: {e:?}"
        );
        let api = e.to_api_error();
        assert_eq!((api.code(), api.param()), (code, Some(field)), "{body}");
    }
    assert_eq!(
        err(r#"{"model":1}"#).to_string(),
        "`model` must be a string"
    );
}

#[test]
fn too_many_models() {
    let limits = Limits {
        max_models: 2,
        ..Limits::default()
    };
    let two = Bytes::from_static(br#"{"models":["a","b"]}"#);
    assert_eq!(
        ChatRequest::parse_with(two, &limits)
            .unwrap()
            .models()
            .len(),
        2
    );
    let three = Bytes::from_static(br#"{"models":["a","b","c"]}"#);
    let e = ChatRequest::parse_with(three, &limits).unwrap_err();
    assert_eq!(e, PayloadError::TooManyModels { max: 2 });
    assert_eq!(e.to_api_error().code(), "too_many_models");
    assert_eq!(e.to_string(), "`models` has more than 2 entries");
    let many = format!("{{\"models\":[{}\"x\"]}}", "\"m\",".repeat(64));
    assert_eq!(err(&many), PayloadError::TooManyModels { max: 64 });
}

#[test]
fn too_many_plugins() {
    let limits = Limits {
        max_plugins: 1,
        ..Limits::default()
    };
    let body = Bytes::from_static(br#"{"plugins":[{},{}]}"#);
    let e = ChatRequest::parse_with(body, &limits).unwrap_err();
    assert_eq!(e, PayloadError::TooManyPlugins { max: 1 });
    assert_eq!(e.to_api_error().param(), Some("plugins"));
}

#[test]
fn duplicate_routing_keys_are_refused() {
    for key in Key::ALL
        .into_iter()
        .filter(|&k| k != Key::Provider)
        .map(Key::name)
    {
        let body = format!(r#"{{"{key}":null,"other":1,"{key}":null}}"#);
        assert_eq!(err(&body), PayloadError::DuplicateKey { key }, "{body}");
    }
    let e = err(r#"{"model":"a","mod\u0065l":"b"}"#);
    assert_eq!(e, PayloadError::DuplicateKey { key: "model" });
    let api = ApiError::from(e);
    assert_eq!((api.code(), api.param()), ("duplicate_key", Some("model")));
}

/// `provider` is read by the auto router only: a repeat is no reason to refuse a request the
/// router does not route, and the router is told of it.
#[test]
fn a_repeated_provider_is_recorded_not_refused() {
    let once = req(r#"{"provider":{"order":["a"]} ,"model":"m"}"#);
    assert_eq!(once.provider(), Ok(Some(r#"{"order":["a"]}"#)));
    assert_eq!(req(r#"{"provider":null}"#).provider(), Ok(Some("null")));
    assert_eq!(req(r#"{"model":"m"}"#).provider(), Ok(None));
    let twice = req(r#"{"provider":{},"model":"m","provider":{"order":["a"]}}"#);
    assert_eq!(twice.model(), Some("m"));
    assert_eq!(
        twice.provider(),
        Err(PayloadError::DuplicateKey { key: "provider" })
    );
    // Through serde_json's path too (an escaped key).
    let twice = req(r#"{"provider":{},"provid\u0065r":{}}"#);
    assert_eq!(
        twice.provider(),
        Err(PayloadError::DuplicateKey { key: "provider" })
    );
}

#[test]
fn the_nested_keys_the_router_reads_are_refused_twice_too() {
    let cases = [
        (
            r#"{"response_format":{"type":"json_schema","json_schema":{},"type":"json_schema"}}"#,
            "response_format.type",
        ),
        (
            r#"{"plugins":[{"id":"web"},{"id":"auto-router","allowed_models":["x"],"i\u0064":"z"}]}"#,
            "plugins[].id",
        ),
    ];
    for (body, key) in cases {
        assert_eq!(err(body), PayloadError::DuplicateKey { key }, "{body}");
    }
    // Once each, or repeated elsewhere inside: read as before.
    let r = req(
        r#"{"response_format":{"type":"json_schema","json_schema":{"type":1,"type":2}},
        "plugins":[{"id":"auto-router","x":1,"x":2}]}"#,
    );
    assert!(r.wants_json_schema());
    assert_eq!(r.plugin("auto-router").map(|p| p.index), Some(0));
}

#[test]
fn duplicate_other_keys_pass_through_untouched() {
    let body = r#"{"temperature":1,"model":"a","temperature":2,"x":{"model":1,"model":2}}"#;
    let r = req(body);
    assert_eq!(r.model(), Some("a"));
    assert_eq!(
        spliced(&r, |s| s.set_model("b")),
        r#"{"temperature":1,"model":"b","temperature":2,"x":{"model":1,"model":2}}"#
    );
}

#[test]
fn malformed_messages_are_reported_by_messages_only() {
    let cases = [
        (r#"{"messages":{"role":"user"}}"#, None),
        (r#"{"messages":"hi"}"#, None),
        (
            r#"{"messages":[{"role":"user","content":"a"},{"content":"no role"}]}"#,
            Some(1),
        ),
        (r#"{"messages":[{"role":"user","content":1}]}"#, Some(0)),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            Some(0),
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"text":"no type"}]}]}"#,
            Some(0),
        ),
        (
            r#"{"messages":[{"role":"user","content":["bare string part"]}]}"#,
            Some(0),
        ),
        (r#"{"messages":[1]}"#, Some(0)),
    ];
    for (body, at) in cases {
        let r = req(body);
        let e = r.messages().unwrap_err();
        assert!(
            matches!(&e, PayloadError::BadMessages { index, .. } if *index == at),
            "{body}: {e:?}"
        );
        assert_eq!(e.code(), "bad_messages");
        assert!(!e.to_string().contains(" at line "), "{e}");
    }
    let e = req(r#"{"messages":[{"role":"user"},{"content":"x"}]}"#)
        .messages()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`messages[1]` is malformed: missing field `role`"
    );
}

#[test]
fn error_messages_are_lowercase_without_trailing_period() {
    let errors = [
        err("\u{0}"),
        err("[]"),
        err(r#"{"model":1}"#),
        err(r#"{"stream":1,"stream":2}"#),
        ChatRequest::parse(Bytes::from_static(b"\xff")).unwrap_err(),
        req(r#"{"messages":[1]}"#).messages().unwrap_err(),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.ends_with('.'), "{text}");
        assert!(text.starts_with(|c: char| !c.is_uppercase()), "{text}");
        let api = e.to_api_error();
        assert_eq!(api.status(), 400);
        assert_eq!(api.kind(), "invalid_request_error");
        assert_eq!(api.message(), text);
    }
}

proptest::proptest! {
    /// The decoder-free reads agree with serde_json wherever they answer.
    #[test]
    fn plain_reads_agree_with_serde_json(
        text in "[a-z0-9\"\\\\/\u{e9}\u{1F600} .-]{0,24}",
        number in proptest::num::u64::ANY,
        numeric in "-?[0-9]{1,21}(\\.[0-9])?(e[0-9])?",
    ) {
        let raw = serde_json::to_string(&text).unwrap();
        if let Some(plain) = plain_string(&raw) {
            proptest::prop_assert_eq!(plain, text.as_str());
        }
        let raw = number.to_string();
        if raw.len() <= 19 {
            proptest::prop_assert_eq!(plain_u64(&raw), Some(number));
        }
        // The raw text of a field is valid JSON: "00" never reaches these reads.
        let valid = serde_json::from_str::<Value>(&numeric).is_ok();
        if let (true, Some(plain)) = (valid, plain_u64(&numeric)) {
            proptest::prop_assert_eq!(Some(plain), serde_json::from_str::<u64>(&numeric).ok());
        }
    }
}

#[test]
fn plain_reads_leave_escapes_and_other_numbers_to_serde_json() {
    assert_eq!(plain_string(r#""gpt-4o""#), Some("gpt-4o"));
    assert_eq!(plain_string(r#""a\"b""#), None);
    assert_eq!(plain_string("null"), None);
    assert_eq!(plain_u64("1024"), Some(1024));
    for other in ["1e3", "-1", "1.0", "null", "", "18446744073709551615"] {
        assert_eq!(plain_u64(other), None, "{other}");
    }
    // Through the parse, both paths give the same fields.
    let escaped = req(r#"{"model":"gpt\u002d4o","max_tokens":1e3,"messages":[]}"#);
    assert_eq!(escaped.model(), Some("gpt-4o"));
    assert_eq!(escaped.max_tokens(), None);
    let plain = req(r#"{"model":"gpt-4o","max_tokens":1000,"messages":[]}"#);
    assert_eq!(plain.model(), Some("gpt-4o"));
    assert_eq!(plain.max_tokens(), Some(1000));
}

/// A lone surrogate escape (half an emoji, as JavaScript writes it) reads as U+FFFD; the other
/// escapes of the same string are decoded as usual, and a string without escape is borrowed.
#[test]
fn a_lone_surrogate_escape_reads_as_a_replacement_character() {
    let r = req(r#"{"messages":[{"role":"user","content":"a\ud83d\tb"},
            {"role":"user","content":[{"type":"text","text":"\udc00c"},{"type":"text","text":"plain"}]}]}"#);
    let messages = r.messages().unwrap();
    let texts: Vec<&str> = messages
        .iter()
        .flat_map(|m| m.parts.iter().filter_map(Part::text))
        .map(|t| &**t)
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(texts[0].starts_with("a\u{FFFD}") && texts[0].ends_with("\u{FFFD}\tb"));
    assert!(texts[1].starts_with('\u{FFFD}') && texts[1].ends_with("\u{FFFD}c"));
    assert!(matches!(
        &messages.iter().nth(1).unwrap().parts[1],
        Part::Text(Cow::Borrowed("plain"))
    ));
    let e = req(r#"{"messages":[{"role":"user","content":1}]}"#)
        .messages()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`messages[0]` is malformed: invalid type: integer `1`, expected a string, an array of \
         content parts or null"
    );
}

proptest::proptest! {
    /// A model remembered from an earlier request reads the same as one decoded: each body of
    /// a sequence (names repeat, with escapes, long or not) is parsed twice, after the others,
    /// and gives serde_json's model each time.
    #[test]
    fn recent_models_read_as_decoded(
        names in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Strategy::prop_map(
                    proptest::sample::select(vec!["gpt-4o", "gpt-4o-mini", "auto", "a\"b", ""]),
                    str::to_owned,
                ),
                "[a-z0-9\"\\\\/\u{e9}\u{1F600} .-]{0,80}",
            ],
            1..12,
        ),
        escape_slash in proptest::bool::ANY,
    ) {
        for round in 0..2 {
            for name in &names {
                let mut raw = serde_json::to_string(name).unwrap();
                if escape_slash && round == 1 {
                    // The same name written with an escape: decoded, not remembered.
                    raw = raw.replace('/', "\\/");
                }
                let body = format!(r#"{{"model":{raw},"messages":[]}}"#);
                let parsed = req(&body);
                let expected: Value = serde_json::from_str(&body).unwrap();
                let named = expected["model"].as_str().filter(|m| !m.is_empty());
                proptest::prop_assert_eq!(parsed.model(), named);
            }
        }
    }
}

#[test]
fn a_recent_model_is_shared_only_when_its_bytes_match() {
    let first = req(r#"{"model":"gpt-4o","messages":[]}"#);
    let again = req(r#"{"model":"gpt-4o","messages":[]}"#);
    assert_eq!(again.model(), Some("gpt-4o"));
    // The second request shares the first one's name.
    assert!(Arc::ptr_eq(
        first.model_shared().unwrap(),
        again.model_shared().unwrap()
    ));
    // Not a prefix, nor the same name escaped, nor null.
    assert_eq!(
        req(r#"{"model":"gpt-4","messages":[]}"#).model(),
        Some("gpt-4")
    );
    assert_eq!(
        req(r#"{"model":"gpt-4o-mini","messages":[]}"#).model(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        req(r#"{"model":"gpt\u002d4o","messages":[]}"#).model(),
        Some("gpt-4o")
    );
    assert_eq!(req(r#"{"model":null,"messages":[]}"#).model(), None);
    // `""` names no model either, remembered or not.
    for _ in 0..2 {
        assert_eq!(req(r#"{"model":"","messages":[]}"#).model(), None);
    }
    // A long name is read as usual, not remembered.
    let long = "m".repeat(RECENT_MODEL_MAX + 1);
    let body = format!(r#"{{"model":"{long}","messages":[]}}"#);
    let (a, b) = (req(&body), req(&body));
    assert_eq!(b.model(), Some(long.as_str()));
    assert!(!Arc::ptr_eq(
        a.model_shared().unwrap(),
        b.model_shared().unwrap()
    ));
}

#[test]
fn model_ids_are_held_to_the_limit() {
    assert!(MODEL_ID_TOO_LONG.contains(&format!(" {MAX_MODEL_ID_BYTES} ")));
    let at = "m".repeat(MAX_MODEL_ID_BYTES);
    let over = "m".repeat(MAX_MODEL_ID_BYTES + 1);
    // Escaped, the raw text is longer than the id: the decoded length counts.
    let escaped_at = "\\u006d".repeat(MAX_MODEL_ID_BYTES);
    for id in [&at, &escaped_at] {
        let r = req(&format!(r#"{{"model":"{id}","models":["{id}"]}}"#));
        assert_eq!(r.model().map(str::len), Some(MAX_MODEL_ID_BYTES));
        assert_eq!(r.models().next().map(str::len), Some(MAX_MODEL_ID_BYTES));
    }
    let e = err(&format!(r#"{{"model":"{over}"}}"#));
    assert_eq!(
        e,
        PayloadError::InvalidField {
            field: "model",
            expected: MODEL_ID_TOO_LONG
        }
    );
    assert_eq!(e.to_api_error().code(), "bad_model");
    assert_eq!(
        e.to_string(),
        "`model` must be a model id of at most 1024 bytes"
    );
    for body in [
        format!(r#"{{"model":"a","models":["b","{over}"]}}"#),
        format!(r#"{{"models":["\u006d{at}"]}}"#),
    ] {
        let e = err(&body);
        assert_eq!(e.to_api_error().code(), "bad_models");
        assert_eq!(e.to_api_error().param(), Some("models"));
    }
}

#[test]
fn an_empty_entry_of_models_is_refused() {
    // Alone, last, first, spaced; beside `"model": ""` too (which stays "no model").
    for body in [
        r#"{"models":[""]}"#,
        r#"{"model":"a","models":["b",""]}"#,
        r#"{"model":"","models":["","b"]}"#,
        r#"{"models":["b" , "" ]}"#,
    ] {
        let e = err(body);
        assert_eq!(
            e,
            PayloadError::InvalidField {
                field: "models",
                expected: MODEL_ID_EMPTY
            },
            "{body}"
        );
        let api = e.to_api_error();
        assert_eq!((api.code(), api.param()), ("bad_models", Some("models")));
    }
    assert_eq!(
        err(r#"{"models":[""]}"#).to_string(),
        "`models` must be an array of model ids (a model id must not be empty)"
    );
    assert_eq!(req(r#"{"model":"","models":["b"]}"#).model(), None);
}

// ===== one conversation in the three APIs' shapes =====

/// A part of a generated conversation.
#[derive(Clone, Debug)]
enum GenPart {
    Text(String),
    Image,
    File,
    Audio,
}

/// A conversation, to be written in one API's shape.
#[derive(Clone, Debug)]
struct Conversation {
    system: Option<String>,
    /// `(is_user, parts)`
    turns: Vec<(bool, Vec<GenPart>)>,
    /// 0: chat completions, 1: the Responses API, 2: Anthropic's Messages API.
    shape: u8,
    /// Text-only content written as a string, the system text as blocks.
    compact: bool,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens` (a number or not).
    limit: Option<(usize, Value)>,
}

fn conversation() -> impl proptest::strategy::Strategy<Value = Conversation> {
    use proptest::prelude::*;
    let text = prop_oneof![
        "[a-z ]{0,12}",
        any::<String>(),
        "[\"\\\\\n\t\u{0}é模🦀 ]{0,6}"
    ];
    let part = prop_oneof![
        3 => text.clone().prop_map(GenPart::Text),
        1 => Just(GenPart::Image),
        1 => Just(GenPart::File),
        1 => Just(GenPart::Audio),
    ];
    let limit = prop_oneof![
        any::<u64>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!("lots")),
        Just(json!(-1)),
    ];
    (
        proptest::option::of(text),
        proptest::collection::vec((any::<bool>(), proptest::collection::vec(part, 0..4)), 0..5),
        0u8..3,
        any::<bool>(),
        proptest::option::of((0usize..3, limit)),
    )
        .prop_map(|(system, turns, shape, compact, limit)| Conversation {
            system,
            turns,
            shape,
            compact,
            limit,
        })
}

impl Conversation {
    /// The body, as a client of its API writes it.
    fn to_value(&self) -> Value {
        let user_text = if self.shape == 1 {
            "input_text"
        } else {
            "text"
        };
        let part = |p: &GenPart, user: bool| match (p, self.shape) {
            (GenPart::Text(t), 1) if !user => json!({"type": "output_text", "text": t}),
            (GenPart::Text(t), _) => json!({"type": user_text, "text": t}),
            (GenPart::Image, 0) => json!({"type": "image_url", "image_url": {"url": "u"}}),
            (GenPart::Image, 1) => json!({"type": "input_image", "image_url": "u"}),
            (GenPart::Image, _) => json!({"type": "image", "source": {"type": "url", "url": "u"}}),
            (GenPart::File, 0) => json!({"type": "file", "file": {"file_id": "f"}}),
            (GenPart::File, 1) => json!({"type": "input_file", "file_id": "f"}),
            (GenPart::File, _) => {
                json!({"type": "document", "source": {"type": "url", "url": "u"}})
            }
            (GenPart::Audio, _) => {
                json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})
            }
        };
        let content = |parts: &[GenPart], user: bool| match parts {
            [GenPart::Text(t)] if self.compact => json!(t),
            _ => Value::Array(parts.iter().map(|p| part(p, user)).collect()),
        };
        let mut turns: Vec<Value> = self
            .turns
            .iter()
            .map(|(user, parts)| {
                let role = if *user { "user" } else { "assistant" };
                let mut message = json!({"role": role, "content": content(parts, *user)});
                if self.shape == 1 && self.compact {
                    message["type"] = json!("message");
                }
                message
            })
            .collect();
        let mut body = json!({"model": "auto"});
        let system = self.system.as_ref().map(|s| match self.compact {
            true if self.shape == 2 => json!([{"type": "text", "text": s}]),
            _ => json!(s),
        });
        match (self.shape, system) {
            (0, Some(system)) => {
                turns.insert(0, json!({"role": "system", "content": system}));
            }
            (1, Some(system)) => body["instructions"] = system,
            (_, Some(system)) => body["system"] = system,
            (_, None) => {}
        }
        let prompt_key = if self.shape == 1 { "input" } else { "messages" };
        body[prompt_key] = Value::Array(turns);
        if let Some((field, value)) = &self.limit {
            let field = ["max_tokens", "max_completion_tokens", "max_output_tokens"][*field];
            body[field] = value.clone();
        }
        body
    }
}

proptest::proptest! {
    /// The same conversation reads the same in every API's shape, as the oracle (the
    /// `serde_json::Value` the body was written from) says.
    #[test]
    fn the_prompt_reads_alike_in_every_shape(conversation in conversation()) {
        use proptest::prop_assert_eq;
        let value = conversation.to_value();
        let r = req(&value.to_string());
        let prompt = r.prompt().unwrap();
        let turns = &conversation.turns;
        // A chat body's system message is a message; Anthropic's `system` and the Responses
        // API's `instructions` alone are no prompt.
        let chat = conversation.shape == 0;
        let system = conversation.system.iter().filter(|_| chat || !turns.is_empty());
        prop_assert_eq!(prompt.len(), turns.len() + system.clone().count());
        let texts = |parts: &[GenPart]| -> Vec<String> {
            parts.iter().filter_map(|p| match p {
                GenPart::Text(t) => Some(t.clone()),
                _ => None,
            }).collect()
        };
        let chars: usize = system.map(|s| s.chars().count()).sum::<usize>()
            + turns.iter().flat_map(|(_, parts)| texts(parts)).map(|t| t.chars().count()).sum::<usize>();
        prop_assert_eq!(prompt.text_chars(), chars);
        let count = |kind: fn(&GenPart) -> bool| {
            turns.iter().flat_map(|(_, parts)| parts).filter(|p| kind(p)).count()
        };
        prop_assert_eq!(prompt.image_count(), count(|p| matches!(p, GenPart::Image)));
        prop_assert_eq!(prompt.audio_count(), count(|p| matches!(p, GenPart::Audio)));
        let files = prompt.iter().flat_map(|m| &m.parts).filter(|p| matches!(p, Part::File)).count();
        prop_assert_eq!(files, count(|p| matches!(p, GenPart::File)));
        let last_user = turns.iter().rfind(|(user, _)| *user).map(|(_, parts)| texts(parts));
        let expected = last_user.filter(|t| !t.is_empty()).map(|t| t.join("\n"));
        prop_assert_eq!(prompt.last_user_text().map(Cow::into_owned), expected);
        // The completion reserve: the first of the three that is a non-negative integer.
        let limit = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|field| value.get(field).and_then(Value::as_u64));
        prop_assert_eq!(r.max_tokens(), limit);
    }
}

#[test]
fn a_splice_debugs_each_edit_under_its_own_name() {
    let r = req(r#"{"model":"a","plugins":[{"id":"auto-router"},{"id":"web"}]}"#);
    let splice = r.splice().remove_plugin(0);
    let debug = format!("{splice:?}");
    assert!(debug.contains("remove_plugins: false"), "{debug}");
    assert!(debug.contains("remove_plugin_entries: [0]"), "{debug}");
}
