//! Unit tests of the response rules, per provider shape and per class.

use http::{HeaderMap, HeaderValue, StatusCode};

use super::{classify_response, ErrorClass};
use ErrorClass::*;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

fn classify(code: u16, body: &str) -> Option<ErrorClass> {
    classify_response(status(code), &HeaderMap::new(), body.as_bytes())
}

fn classify_with(
    code: u16,
    header: (&'static str, &'static str),
    body: &str,
) -> Option<ErrorClass> {
    let mut headers = HeaderMap::new();
    headers.insert(header.0, HeaderValue::from_static(header.1));
    classify_response(status(code), &headers, body.as_bytes())
}

#[test]
fn every_non_2xx_status_is_a_failure() {
    for code in [
        100, 300, 304, 305, 306, 400, 401, 402, 403, 404, 409, 418, 422, 499,
    ] {
        assert_eq!(classify(code, ""), Some(Other), "{code}");
    }
    assert_eq!(classify(429, ""), Some(RateLimited));
    assert_eq!(classify(413, ""), Some(ContextLength));
    for code in [408, 500, 502, 503, 504, 520, 524, 529, 599] {
        assert_eq!(classify(code, ""), Some(Downtime), "{code}");
    }
}

#[test]
fn a_redirect_is_downtime_whatever_its_body_says() {
    let bodies = [
        "",
        "<html><body>Moved Permanently</body></html>",
        r#"{"error":{"code":"content_policy_violation","message":"flagged"}}"#,
        r#"{"error":{"type":"invalid_request_error","message":"maximum context length is 8192 tokens"}}"#,
        "data: {\"error\":{\"code\":429}}\n\n",
    ];
    for code in [301, 302, 303, 307, 308] {
        for body in bodies {
            assert_eq!(classify(code, body), Some(Downtime), "{code} {body}");
        }
    }
}

#[test]
fn a_redirect_not_followed_is_classed_as_its_status_wherever_it_sits_in_the_chain() {
    use super::{classify_error, RedirectNotFollowed};
    for code in [301, 302, 303, 307, 308] {
        let status = StatusCode::from_u16(code).unwrap();
        assert_eq!(classify_error(&RedirectNotFollowed(status)), Downtime);
        // As a client wrapping it would hand it on: the source, not the error itself.
        let wrapped = std::io::Error::other(RedirectNotFollowed(status));
        assert_eq!(classify_error(&wrapped), Downtime, "{code}");
        assert!(super::is_redirect_error(&wrapped), "{code}");
    }
    // Not a redirect a client follows: the answer to the client's own conditional request.
    let not_modified = RedirectNotFollowed(StatusCode::NOT_MODIFIED);
    assert_eq!(classify_error(&not_modified), Other);
}

#[test]
fn plain_2xx_bodies_are_successes() {
    assert_eq!(classify(200, ""), None);
    assert_eq!(classify(204, ""), None);
    assert_eq!(
        classify(
            200,
            r#"{"choices":[{"message":{"content":"an error occurred in your code"},"finish_reason":"stop"}],"error":null}"#
        ),
        None
    );
    assert_eq!(
        classify(
            200,
            r#"{"type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}"#
        ),
        None
    );
    assert_eq!(classify(200, r#"{"error":{}}"#), None);
    assert_eq!(classify(200, "<html>error</html>"), None);
}

#[test]
fn truncated_bodies_never_fail() {
    // A 2xx cut short is a success, even if it started like an error.
    assert_eq!(classify(200, r#"{"error":{"code":429,"mess"#), None);
    // A non-2xx cut short still finds quoted machine tokens.
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"This model's","type":"invalid_request_error","param":"messages","code":"context_length_exceeded","#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"Please reduce the length of the messages or comp"#
        ),
        Some(ContextLength)
    );
    assert_eq!(classify(400, r#"{"error":{"message":"bad"#), Some(Other));
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    for cut in 0..body.len() {
        let got = classify_response(status(529), &HeaderMap::new(), &body[..cut]);
        assert_eq!(got, Some(Downtime), "cut {cut}");
        assert_eq!(
            classify_response(StatusCode::OK, &HeaderMap::new(), &body[..cut]).is_some(),
            cut == body.len()
        );
    }
}

#[test]
fn openai_shapes() {
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#
        ),
        Some(Moderation)
    );
    assert_eq!(
        classify(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
        ),
        Some(RateLimited)
    );
    assert_eq!(
        classify(
            429,
            r#"{"error":{"message":"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 52000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#
        ),
        Some(RateLimited)
    );
    assert_eq!(
        classify(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-abc. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            503,
            r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#
        ),
        Some(Downtime)
    );
    // 200 whose only choice was filtered, with no content.
    assert_eq!(
        classify(
            200,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}]}"#
        ),
        Some(Moderation)
    );
    // ...but partial content that was cut by the filter is still an answer.
    assert_eq!(
        classify(
            200,
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Once upon"},"finish_reason":"content_filter"}]}"#
        ),
        None
    );
}

#[test]
fn azure_shapes() {
    let filtered = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
    assert_eq!(classify(400, filtered), Some(Moderation));
    assert_eq!(
        classify(
            429,
            r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded token rate limit of your current tier. Please retry after 6 seconds."}}"#
        ),
        Some(RateLimited)
    );
    assert_eq!(
        classify(
            404,
            r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#
        ),
        Some(Other)
    );
}

#[test]
fn anthropic_shapes() {
    assert_eq!(
        classify(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208192 tokens > 200000 maximum"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 190000 + 32000 > 200000, decrease input length or `max_tokens` and try again"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            413,
            r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#
        ),
        Some(RateLimited)
    );
    assert_eq!(
        classify(
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            200,
            r#"{"type":"message","role":"assistant","content":[],"stop_reason":"refusal"}"#
        ),
        Some(Moderation)
    );
}

#[test]
fn gemini_shapes() {
    assert_eq!(
        classify(
            400,
            r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            503,
            r#"[{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}]"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"code":400,"message":"Invalid value at 'safety_settings[0].category'","status":"INVALID_ARGUMENT"}}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            200,
            r#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH"}]}]}"#
        ),
        Some(Moderation)
    );
    assert_eq!(
        classify(
            200,
            r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}"#
        ),
        Some(Moderation)
    );
    assert_eq!(
        classify(
            200,
            r#"{"candidates":[{"content":{"parts":[{"text":"ok"}]},"finishReason":"STOP"}],"promptFeedback":{"safetyRatings":[]}}"#
        ),
        None
    );
}

#[test]
fn bedrock_shapes() {
    let throttled = (
        "x-amzn-errortype",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    );
    assert_eq!(
        classify_with(
            400,
            throttled,
            r#"{"message":"Too many requests, please wait before trying again."}"#
        ),
        Some(RateLimited)
    );
    let validation = (
        "x-amzn-errortype",
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    );
    assert_eq!(
        classify_with(
            400,
            validation,
            r#"{"message":"Input is too long for requested model."}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify_with(
            400,
            validation,
            r#"{"message":"Malformed input request: #: extraneous key [foo] is not permitted"}"#
        ),
        Some(Other)
    );
    let unavailable = ("x-amzn-errortype", "ServiceUnavailableException");
    assert_eq!(
        classify_with(
            503,
            unavailable,
            r#"{"message":"Bedrock is unable to process your request."}"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            200,
            r#"{"output":{"message":{"role":"assistant","content":[{"text":"Sorry"}]}},"stopReason":"guardrail_intervened"}"#
        ),
        Some(Moderation)
    );
}

#[test]
fn openrouter_shapes() {
    let flagged = r#"{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"harassment\".","metadata":{"reasons":["harassment"],"flagged_input":"you are...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#;
    assert_eq!(classify(403, flagged), Some(Moderation));
    assert_eq!(
        classify(
            403,
            r#"{"error":{"code":403,"message":"Key limit exceeded"}}"#
        ),
        Some(Other)
    );
    // The provider's own error embedded as a string in metadata.raw.
    let raw = r#"{"error":{"code":400,"message":"Provider returned error","metadata":{"provider_name":"Anthropic","raw":"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 250000 tokens > 200000 maximum\"}}"}}}"#;
    assert_eq!(classify(400, raw), Some(ContextLength));
    // OpenRouter's own error_type wins over the raw provider error.
    let typed = r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"provider_unavailable","raw":"{\"error\":{\"type\":\"rate_limit_error\"}}"}}}"#;
    assert_eq!(classify(502, typed), Some(Downtime));
    assert_eq!(
        classify(
            200,
            r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#
        ),
        Some(RateLimited)
    );
    assert_eq!(
        classify(200, r#"{"error":{"message":"Something went wrong"}}"#),
        Some(Other)
    );
    assert_eq!(
        classify(
            429,
            r#"{"error":{"code":429,"message":"No capacity","availability":{"code":"capacity_exhausted","retryable":true}}}"#
        ),
        Some(RateLimited)
    );
}

#[test]
fn sse_first_event_errors() {
    let sse = ("content-type", "text/event-stream; charset=utf-8");
    let openrouter = ": OPENROUTER PROCESSING\n\ndata: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"error\":{\"code\":429,\"message\":\"Rate limit exceeded\",\"metadata\":{\"error_type\":\"rate_limit_exceeded\"}},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";
    assert_eq!(classify_with(200, sse, openrouter), Some(RateLimited));
    // Recognized from the body even without the content type, and with CRLF.
    assert_eq!(
        classify(200, &openrouter.replace('\n', "\r\n")),
        Some(RateLimited)
    );
    // Not yet terminated by a blank line, but the JSON is complete.
    assert_eq!(classify(200, openrouter.trim_end()), Some(RateLimited));
    // An error only after the first content chunk is not a failure of the response.
    let later = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"code\":502}}\n\n";
    assert_eq!(classify_with(200, sse, later), None);
    // `event: error` with a plain message.
    assert_eq!(
        classify(200, "event: error\ndata: upstream overloaded\n\n"),
        Some(Downtime)
    );
    // OpenAI Responses-style error event.
    assert_eq!(classify(200, "event: error\ndata: {\"type\":\"error\",\"code\":\"context_length_exceeded\",\"message\":\"Your input exceeds the context window of this model.\"}\n\n"), Some(ContextLength));
    // The Responses API's failed generation, after its content-less `response.created`; a
    // `response.completed` is no failure.
    let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\",\"error\":null,\"output\":[]}}\n\n";
    let failed = |error: &str| {
        format!("{created}event: response.failed\ndata: {{\"type\":\"response.failed\",\"response\":{{\"status\":\"failed\",\"error\":{error},\"output\":[]}}}}\n\n")
    };
    let server_error =
        r#"{"code":"server_error","message":"The model failed to generate a response."}"#;
    assert_eq!(
        classify_with(200, sse, &failed(server_error)),
        Some(Downtime)
    );
    let rate_limited = r#"{"code":"rate_limit_exceeded","message":"Rate limit reached"}"#;
    assert_eq!(
        classify_with(200, sse, &failed(rate_limited)),
        Some(RateLimited)
    );
    assert!(classify_with(200, sse, &failed("{}")).is_some());
    let completed = format!("{created}data: {{\"type\":\"response.completed\",\"response\":{{\"status\":\"completed\",\"error\":null,\"output\":[]}}}}\n\n");
    assert_eq!(classify_with(200, sse, &completed), None);
    // Gemini stream blocked on the prompt.
    assert_eq!(
        classify(
            200,
            "data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\r\n\r\n"
        ),
        Some(Moderation)
    );
    // Nothing usable yet: success (the fallback layer reads on, or tells a stream that ended
    // there from its end).
    assert_eq!(classify_with(200, sse, ": keep-alive\n\n"), None);
    // A stream done before any content or finish, alone or after preambles, is no answer: an
    // empty one from the upstream, broken as one that ends after preambles alone is (README,
    // "Streams"). Anthropic's `message_stop` with no `message_delta` before it is the same.
    for empty in [
        "data: [DONE]\n\n",
        "data: {\"choices\":[]}\n\n: keep-alive\n\ndata: \n\ndata: [DONE]\n\n",
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ] {
        assert_eq!(classify_with(200, sse, empty), Some(Downtime), "{empty}");
    }
    // A finish reason is an answer, if an empty one.
    let finished = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    assert_eq!(classify_with(200, sse, finished), None);
    assert_eq!(
        classify_with(200, sse, "data: {\"choices\":[{\"delta\":{\"cont"),
        None
    );
    // A JSON error body served with an SSE content type is read as JSON.
    assert_eq!(
        classify_with(429, sse, r#"{"error":{"type":"rate_limit_error"}}"#),
        Some(RateLimited)
    );
    assert_eq!(classify_with(500, sse, "data: [DONE]\n\n"), Some(Downtime));
}

#[test]
fn responses_api_incomplete_for_content_filter_is_moderation() {
    let sse = ("content-type", "text/event-stream");
    let created = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"error\":null,\"incomplete_details\":null,\"output\":[]}}\n\n";
    let incomplete = |reason: &str, output: &str| {
        format!("{created}event: response.incomplete\ndata: {{\"type\":\"response.incomplete\",\"sequence_number\":1,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"incomplete\",\"error\":null,\"incomplete_details\":{{\"reason\":\"{reason}\"}},\"output\":{output}}}}}\n\n")
    };
    // Filtered before any content: the model's output was withheld.
    assert_eq!(
        classify_with(200, sse, &incomplete("content_filter", "[]")),
        Some(Moderation)
    );
    // Out of output tokens is an ordinary end, and output already produced is content.
    assert_eq!(
        classify_with(200, sse, &incomplete("max_output_tokens", "[]")),
        None
    );
    let output =
        r#"[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]}]"#;
    assert_eq!(
        classify_with(200, sse, &incomplete("content_filter", output)),
        None
    );
    // The same answer, not streamed: the response object itself.
    let response = |reason: &str| {
        format!(
            r#"{{"id":"resp_1","object":"response","status":"incomplete","error":null,"incomplete_details":{{"reason":"{reason}"}},"output":[]}}"#
        )
    };
    assert_eq!(classify(200, &response("content_filter")), Some(Moderation));
    assert_eq!(classify(200, &response("max_output_tokens")), None);
}

#[test]
fn small_providers() {
    // Ollama / TGI / xAI use a string `error`.
    assert_eq!(
        classify(
            404,
            r#"{"error":"model \"llama9\" not found, try pulling it first"}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            429,
            r#"{"error":"Model is overloaded","error_type":"overloaded"}"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            422,
            r#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`","error_type":"validation"}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"code":"Client specified an invalid argument","error":"This model's maximum prompt length is 131072 but the request contains 140000 tokens."}"#
        ),
        Some(ContextLength)
    );
    // Mistral / vLLM top-level error objects.
    assert_eq!(
        classify(
            400,
            r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_error","param":null,"code":null}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            200,
            r#"{"object":"error","message":"The model is temporarily unavailable","type":"internal_error","code":503}"#
        ),
        Some(Downtime)
    );
    // Cohere's bare message.
    assert_eq!(
        classify(
            400,
            r#"{"message":"too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 5000"}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"message":"invalid request: message must be at least 1 token long"}"#
        ),
        Some(Other)
    );
}

#[test]
fn html_and_plain_text_bodies() {
    assert_eq!(
        classify(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            403,
            "<html><title>Attention Required! | Cloudflare</title></html>"
        ),
        Some(Other)
    );
    assert_eq!(
        classify(400, "Request failed: prompt is too long"),
        Some(ContextLength)
    );
    assert_eq!(
        classify(400, "upstream rate limit reached"),
        Some(RateLimited)
    );
    assert_eq!(classify(401, "quota key invalid"), Some(Other));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_input(
        code in 100u16..600,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        sse: bool,
    ) {
        let mut headers = HeaderMap::new();
        if sse {
            headers.insert("content-type", HeaderValue::from_static("text/event-stream"));
        }
        let got = classify_response(status(code), &headers, &body);
        if !(200..300).contains(&code) {
            proptest::prop_assert!(got.is_some());
        }
    }

    #[test]
    fn never_panics_on_json_like_input(
        code in proptest::sample::select(vec![200u16, 400, 429, 500]),
        body in r#"(data: |event: error\n)?[\[{]("(error|code|type|message|metadata|raw|choices|candidates)"|[:,\[\]{}\\"0-9a-z ]){0,40}"#,
    ) {
        let _ = classify_response(status(code), &HeaderMap::new(), body.as_bytes());
    }
}

#[test]
fn server_errors_that_say_they_are_down_stay_downtime() {
    assert_eq!(
        classify(
            503,
            r#"{"error":{"message":"moderation service unavailable"}}"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(500, r#"{"error":{"message":"prompt is too long"}}"#),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"Invalid 'messages[0].content': string too long. Expected a string with maximum length 10485760.","type":"invalid_request_error","code":"string_above_max_length"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"code":400,"message":"Request payload size exceeds the limit: 20971520 bytes.","status":"INVALID_ARGUMENT"}}"#
        ),
        Some(ContextLength)
    );
}

#[test]
fn openai_refusal_key_is_not_a_refusal() {
    let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"finish_reason":"stop"}]}"#;
    assert_eq!(classify(200, body), None);
    let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"content_filter"}]}"#;
    assert_eq!(classify(200, body), None, "a refusal text is an answer");
}

#[test]
fn errors_arrays_and_problem_json() {
    assert_eq!(
        classify(
            400,
            r#"{"errors":[{"message":"AiError: Input is too long for this model, 8000 tokens exceed the context window","code":5021}],"success":false,"result":null}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            200,
            r#"{"errors":[{"message":"Capacity temporarily exceeded, please try again.","code":3040}],"success":false}"#
        ),
        Some(Downtime)
    );
    assert_eq!(
        classify(
            200,
            r#"{"result":{"response":"hi"},"success":true,"errors":[],"messages":[]}"#
        ),
        None
    );
    assert_eq!(
        classify(
            400,
            r#"{"type":"about:blank","title":"Context window exceeded","status":400}"#
        ),
        Some(ContextLength)
    );
}

#[test]
fn length_messages_without_the_word_token() {
    assert_eq!(
        classify(
            400,
            r#"{"error":{"code":"invalid_request_error","message":"Prompt exceeds max length"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"Invalid 'messages': empty array. Expected an array with minimum length 1.","type":"invalid_request_error"}}"#
        ),
        Some(Other)
    );
    assert_eq!(
        classify(
            502,
            r#"{"error":{"message":"upstream request too long to process"}}"#
        ),
        Some(Downtime)
    );
}

#[test]
fn markers_are_found_in_short_and_long_successes() {
    let headers = HeaderMap::new();
    for pad in [0usize, 2000] {
        let filler = "x".repeat(pad);
        let clean = format!(
            r#"{{"choices":[{{"message":{{"content":"{filler}","refusal":null}},"finish_reason":"stop"}}]}}"#
        );
        assert_eq!(
            classify_response(StatusCode::OK, &headers, clean.as_bytes()),
            None,
            "{pad}"
        );
        let error = format!(
            r#"{{"note":"{filler}","error":{{"code":502,"message":"Provider returned error"}}}}"#
        );
        assert_eq!(
            classify_response(StatusCode::OK, &headers, error.as_bytes()),
            Some(ErrorClass::Downtime),
            "{pad}"
        );
    }
}

/// Bedrock's throttling message names tokens ("Too many tokens, please wait before trying
/// again.") and arrives as a 429: without its `x-amzn-ErrorType` header (a proxy that drops
/// it, OpenRouter's `metadata.raw`) it read as a context-length message.
#[test]
fn a_429_is_never_a_context_length_failure_by_its_message() {
    let throttled = r#"{"message":"Too many tokens, please wait before trying again."}"#;
    assert_eq!(classify(429, throttled), Some(RateLimited));
    let via_openrouter = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"{\"message\":\"Too many tokens, please wait before trying again.\"}","provider_name":"Amazon Bedrock"}}}"#;
    assert_eq!(classify(429, via_openrouter), Some(RateLimited));
    assert_eq!(classify(200, via_openrouter), Some(RateLimited));
    assert_eq!(classify(429, "Too many tokens"), Some(RateLimited));
    // A machine token still decides, and other statuses still read the message.
    assert_eq!(
        classify(
            429,
            r#"{"error":{"message":"x","code":"context_length_exceeded"}}"#
        ),
        Some(ContextLength)
    );
    assert_eq!(classify(400, "prompt is too long"), Some(ContextLength));
}

/// DeepSeek's and Alibaba's (Qwen, DashScope) input and output checks name no policy, filter
/// or flag: DeepSeek says "Content Exists Risk" with the generic `invalid_request_error`.
#[test]
fn deepseek_and_qwen_content_checks_are_moderation() {
    let deepseek = r#"{"error":{"message":"Content Exists Risk","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#;
    assert_eq!(classify(400, deepseek), Some(Moderation));
    let qwen_compatible = r#"{"error":{"code":"data_inspection_failed","param":null,"message":"Input data may contain inappropriate content.","type":"data_inspection_failed"}}"#;
    assert_eq!(classify(400, qwen_compatible), Some(Moderation));
    let qwen_native = r#"{"code":"DataInspectionFailed","message":"Output data may contain inappropriate content.","request_id":"5f2b"}"#;
    assert_eq!(classify(400, qwen_native), Some(Moderation));
    let via_openrouter = r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"error\":{\"message\":\"Content Exists Risk\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_request_error\"}}","provider_name":"DeepSeek"}}}"#;
    assert_eq!(classify(400, via_openrouter), Some(Moderation));
    // DeepSeek's other 400s stay what they were.
    assert_eq!(
        classify(
            400,
            r#"{"error":{"message":"Invalid max_tokens value, the valid range of max_tokens is [1, 8192]","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#
        ),
        Some(Other)
    );
}

/// vLLM's own check of the prompt against `max_model_len` speaks of the "maximum model length"
/// (V0's engine, and its decoder-prompt form), without "context" or "token limit".
#[test]
fn vllm_maximum_model_length_is_context_length() {
    for message in [
        "The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that `max_model_len` is no smaller than the number of text tokens.",
        "Prompt length of 5000 is longer than the maximum model length of 4096.",
    ] {
        let body = format!(
            r#"{{"object":"error","message":"{message}","type":"BadRequestError","param":null,"code":400}}"#
        );
        assert_eq!(classify(400, &body), Some(ContextLength), "{message}");
    }
}

/// Anthropic's streaming classifiers end a stream with `stop_reason: "refusal"` on the
/// `message_delta` event; refused before any content, that event is the first past the
/// preamble, as blocked as the non-streamed answer with the same stop reason.
#[test]
fn anthropic_stream_refused_before_content_is_moderation() {
    let sse = ("content-type", "text/event-stream");
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n";
    let refused = format!(
        "{start}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"refusal\",\"stop_sequence\":null,\"stop_details\":{{\"type\":\"refusal\",\"category\":\"cyber\",\"explanation\":\"declined\"}}}},\"usage\":{{\"output_tokens\":0}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    );
    assert_eq!(classify_with(200, sse, &refused), Some(Moderation));
    let ended = format!(
        "{start}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":0}}}}\n\n"
    );
    assert_eq!(classify_with(200, sse, &ended), None);
    // An empty text block's start is preamble too: refused right after it, still no content.
    let block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    let after_block = format!(
        "{start}{block}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"refusal\"}}}}\n\n"
    );
    assert_eq!(classify_with(200, sse, &after_block), Some(Moderation));
    // Refused after content has started: the first event is content, an answer.
    let late = format!(
        "{start}{block}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"Sure\"}}}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"refusal\"}}}}\n\n"
    );
    assert_eq!(classify_with(200, sse, &late), None);
}

/// DeepSeek ends a 200 answer with `finish_reason: "insufficient_system_resource"` when its
/// inference system runs out of capacity mid-request: downtime, as a choice finished with
/// `"error"` is.
#[test]
fn deepseek_insufficient_system_resource_is_downtime() {
    let body = r#"{"id":"x","object":"chat.completion","model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"insufficient_system_resource"}],"usage":{"prompt_tokens":12,"completion_tokens":0,"total_tokens":12}}"#;
    assert_eq!(classify(200, body), Some(Downtime));
    let sse = ("content-type", "text/event-stream");
    let stream = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"insufficient_system_resource\"}]}\n\n";
    assert_eq!(classify_with(200, sse, stream), Some(Downtime));
    let done = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
    assert_eq!(classify(200, done), None);
}

/// RFC 8259 lets a parser ignore a byte order mark, and some upstreams (.NET and PowerShell
/// hosts) write one before their JSON: the error in such a 200 was missed.
#[test]
fn json_after_a_byte_order_mark_is_read() {
    let bom = "\u{feff}";
    let error = format!(r#"{bom}{{"error":{{"code":502,"message":"Provider returned error"}}}}"#);
    assert_eq!(classify(200, &error), Some(Downtime));
    let blocked = format!(r#"{bom}{{"promptFeedback":{{"blockReason":"SAFETY"}}}}"#);
    assert_eq!(classify(200, &blocked), Some(Moderation));
    let answer = format!(
        r#"{bom}{{"choices":[{{"message":{{"content":"hi"}},"finish_reason":"stop"}}],"error":null}}"#
    );
    assert_eq!(classify(200, &answer), None);
}

/// An event stream's content type does not make a byte order mark and the JSON after it an
/// event stream: the error in such a body was read as a stream without an event.
#[test]
fn json_after_a_byte_order_mark_under_an_event_stream_type_is_read() {
    let error = "\u{feff}{\"error\":{\"code\":502,\"message\":\"Provider returned error\"}}";
    let sse = ("content-type", "text/event-stream");
    assert_eq!(classify_with(200, sse, error), Some(Downtime));
}

/// Alibaba's check is known by its code alone: DashScope's Chinese endpoints word the message
/// in Chinese, without the English phrase.
#[test]
fn qwen_data_inspection_code_alone_is_moderation() {
    let chinese = r#"{"error":{"code":"data_inspection_failed","param":null,"message":"输入数据可能包含不当内容。","type":"data_inspection_failed"}}"#;
    assert_eq!(classify(400, chinese), Some(Moderation));
}

/// A resolver error that names only the failed name resolution (gai_strerror's text, without
/// the "failed to lookup address" hyper puts before it) is downtime too.
#[test]
fn a_name_resolution_failure_alone_is_downtime() {
    let err = std::io::Error::other("Temporary failure in name resolution");
    assert_eq!(super::classify_error(&err), Downtime);
}
