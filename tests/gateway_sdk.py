"""The official OpenAI Python SDK against examples/gateway (run by tests/gateway.rs).

GATEWAY_URL is the gateway's base URL (http://127.0.0.1:PORT/v1). The upstream behind it
answers 503 for `primary`, streams three chunks for `streamer`, and answers every other model.
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
