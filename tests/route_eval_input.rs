//! `route_eval` reads evaluation files in the shapes other tools write: the router is judged on
//! data this repository does not have, and a run should not end at a field named otherwise.

#[path = "../examples/route_eval/input.rs"]
mod input;

use input::{parse_line, Line, Outcomes};

fn read(text: &str) -> Line {
    parse_line(text).unwrap_or_else(|why| panic!("{text}: {why}"))
}

#[test]
fn a_routellm_line_is_read_as_written() {
    let line = read(
        r#"{"dataset":"gsm8k","id":"q7","prompt":"How many eggs?","strong":1,"weak":0,"routellm_contaminated":false}"#,
    );
    assert_eq!(
        line,
        Line {
            id: "q7".into(),
            prompt: "How many eggs?".into(),
            outcomes: Some(Outcomes {
                dataset: "gsm8k".into(),
                strong: 1.0,
                weak: 0.0
            }),
            contaminated: false,
        }
    );
    assert!(read(r#"{"id":1,"prompt":"x","routellm_contaminated":true}"#).contaminated);
}

#[test]
fn an_id_may_be_a_number_or_mt_bench_s_question_id() {
    assert_eq!(read(r#"{"id":81,"prompt":"x"}"#).id, "81");
    assert_eq!(read(r#"{"question_id":81,"turns":["x"]}"#).id, "81");
    assert!(parse_line(r#"{"prompt":"x"}"#).is_err());
}

#[test]
fn mt_bench_turns_are_routed_on_the_first() {
    let line = read(r#"{"question_id":81,"turns":["Write a travel blog post.","Rewrite it."]}"#);
    assert_eq!(line.prompt, "Write a travel blog post.");
}

#[test]
fn chat_messages_are_routed_on_the_last_user_message() {
    let line = read(
        r#"{"id":"c","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part"}]}]}"#,
    );
    assert_eq!(line.prompt, "second\npart");
}

#[test]
fn outcomes_may_be_booleans_and_come_without_a_dataset() {
    let outcomes = read(r#"{"id":"b","prompt":"x","strong":true,"weak":false}"#).outcomes;
    assert_eq!(
        outcomes,
        Some(Outcomes {
            dataset: "all".into(),
            strong: 1.0,
            weak: 0.0
        })
    );
    // One outcome alone is no comparison.
    assert_eq!(
        read(r#"{"id":"b","prompt":"x","strong":9.5}"#).outcomes,
        None
    );
}

#[test]
fn a_line_without_text_says_why() {
    for (text, why) in [
        ("[1,2]", "not a JSON object"),
        (r#"{"id":"a"}"#, "no `prompt`"),
        (r#"{"id":"a","prompt":3}"#, "holds no text"),
        (
            r#"{"id":"a","messages":[{"role":"assistant","content":"x"}]}"#,
            "holds no text",
        ),
        ("{not json", "key must be a string"),
    ] {
        let err = parse_line(text).expect_err(text);
        assert!(err.contains(why), "{text}: {err}");
    }
}
