"""The official `openai` SDK against a running tollgate: Chat Completions (translated to the
simulated model and passed through to an OpenAI-compatible upstream), streaming and not,
the model list, and errors. Prints one JSON object per case; the Rust test asserts them."""

import json
import os
import sys

import openai

base_url = os.environ["TOLLGATE_BASE_URL"] + "/v1"
api_key = os.environ["TOLLGATE_API_KEY"]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


models = client.models.list()
emit("models", ids=[model.id for model in models.data], object=models.object)

completion = client.chat.completions.create(
    model="claude-sonnet-4-6",
    messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ],
    max_tokens=40,
)
emit(
    "chat",
    id=completion.id,
    model=completion.model,
    content=completion.choices[0].message.content,
    finish_reason=completion.choices[0].finish_reason,
    prompt_tokens=completion.usage.prompt_tokens,
    completion_tokens=completion.usage.completion_tokens,
)

text = []
usage = None
finish_reason = None
stream = client.chat.completions.create(
    model="claude-haiku-4-5",
    messages=[{"role": "user", "content": "Tell me about ledgers."}],
    max_completion_tokens=60,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            text.append(choice.delta.content)
        if choice.finish_reason:
            finish_reason = choice.finish_reason
emit(
    "chat_stream",
    content="".join(text),
    finish_reason=finish_reason,
    prompt_tokens=usage.prompt_tokens if usage else None,
    completion_tokens=usage.completion_tokens if usage else None,
)

text = []
with client.chat.completions.stream(
    model="fake-gpt",
    messages=[{"role": "user", "content": "Hi"}],
    max_tokens=50,
) as helper:
    for event in helper:
        if event.type == "content.delta":
            text.append(event.delta)
    final = helper.get_final_completion()
emit("passthrough_stream", content="".join(text), final=final.choices[0].message.content)

try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
    )
    emit("bad_key", raised=None)
except openai.AuthenticationError as error:
    emit("bad_key", raised=type(error).__name__, status=error.status_code, code=error.code)

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    emit("unknown_model", raised=None)
except openai.NotFoundError as error:
    emit("unknown_model", raised=type(error).__name__, status=error.status_code, code=error.code)

sys.exit(0)
