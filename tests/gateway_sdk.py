"""The official OpenAI Python SDK against examples/gateway (run by tests/gateway.rs).

GATEWAY_URL is the gateway's base URL (http://127.0.0.1:PORT/v1). The upstream behind it
answers 503 for `primary`, `gone` and `gone-too`, streams three chunks for `streamer`, streams a
Responses API answer for `responder`, and answers every other model (a Responses API `response`
at /v1/responses).
"""

import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GATEWAY_URL"], api_key="sk-test-client", max_retries=0)

# OpenRouter's `models` fallback, passed as the OpenRouter docs show.
completion = client.chat.completions.create(
    model="primary",
    messages=[{"role": "user", "content": "Say hello."}],
    extra_body={"models": ["backup"]},
)
assert completion.model == "backup", completion.model
assert completion.choices[0].message.content == "hello from backup", completion

raw = client.chat.completions.with_raw_response.create(
    model="primary",
    messages=[{"role": "user", "content": "Say hello."}],
    extra_body={"models": ["backup"]},
)
assert raw.headers["x-llm-router-model"] == "backup", raw.headers
assert raw.headers["x-llm-router-attempts"] == "primary=downtime, backup=ok" or raw.headers[
    "x-llm-router-attempts"
] == "backup=ok", raw.headers

# A stream after a failed first model.
stream = client.chat.completions.create(
    model="primary",
    messages=[{"role": "user", "content": "Stream please."}],
    stream=True,
    extra_body={"models": ["streamer"]},
)
text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
assert text == "tok0 tok1 tok2 ", repr(text)

# The Responses API (`client.responses.create`), with the same fallback (from a model of its
# own: `primary` may be cooling down by now, and passed over).
response = client.responses.create(
    model="gone",
    input="Say hello.",
    instructions="Be brief.",
    extra_body={"models": ["backup"]},
)
assert response.model == "backup", response.model
assert response.output_text == "hello from backup", response

# An auto request from its `input`: a configured model answers.
response = client.responses.create(model="auto", input="Say hello.")
assert response.model in ("primary", "backup"), response.model

# A streamed Responses API answer after a failed first model.
events = client.responses.create(
    model="gone-too",
    input="Stream please.",
    stream=True,
    extra_body={"models": ["responder"]},
)
kinds = []
text = ""
for event in events:
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        text += event.delta
assert text == "hello from responder", repr(text)
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds

# The model list, the auto model first.
ids = [model.id for model in client.models.list()]
assert ids[0] == "auto" and "primary" in ids and "backup" in ids, ids
# One model by its id, and OpenAI's 404 for one the gateway does not know.
assert client.models.retrieve("primary").id == "primary"
try:
    client.models.retrieve("no-such-model")
    raise SystemExit("expected a 404")
except openai.NotFoundError as error:
    assert error.code == "model_not_found", error

# A refusal of the layers is an OpenAI-shaped error the SDK understands.
try:
    client.chat.completions.create(
        model="primary",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"models": "not-a-list"},
    )
    raise SystemExit("expected a 400")
except openai.BadRequestError as error:
    assert error.status_code == 400, error

print("sdk ok")
