"""The official `anthropic` SDK against a running tollgate: the Messages API on the
simulated model and translated to an OpenAI-compatible upstream, streaming and not,
count_tokens, the model list, and errors. Prints one JSON object per case; the Rust test
asserts them."""

import json
import os
import sys

import anthropic

base_url = os.environ["TOLLGATE_BASE_URL"]
api_key = os.environ["TOLLGATE_API_KEY"]
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


page = client.models.list(limit=3)
emit("models", ids=[model.id for model in page.data], has_more=page.has_more)

message = client.messages.create(
    model="claude-sonnet-4-6",
    max_tokens=40,
    system="You are terse.",
    messages=[{"role": "user", "content": "Say hello."}],
)
emit(
    "message",
    id=message.id,
    text=message.content[0].text,
    stop_reason=message.stop_reason,
    input_tokens=message.usage.input_tokens,
    output_tokens=message.usage.output_tokens,
)

with client.messages.stream(
    model="claude-opus-4-8",
    max_tokens=60,
    messages=[{"role": "user", "content": "Tell me about ledgers."}],
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
emit(
    "message_stream",
    text=streamed,
    final_text=final.content[0].text,
    stop_reason=final.stop_reason,
    input_tokens=final.usage.input_tokens,
    output_tokens=final.usage.output_tokens,
)

with client.messages.stream(
    model="fake-gpt",
    max_tokens=50,
    messages=[{"role": "user", "content": "Hi"}],
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
emit(
    "translated_stream",
    text=streamed,
    stop_reason=final.stop_reason,
    input_tokens=final.usage.input_tokens,
    output_tokens=final.usage.output_tokens,
)

with client.messages.stream(
    model="claude-sonnet-4-6",
    max_tokens=200,
    messages=[{"role": "user", "content": "List the files."}],
    tools=[
        {
            "name": "Bash",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        }
    ],
    tool_choice={"type": "any"},
) as stream:
    final = stream.get_final_message()
emit(
    "tool_use_stream",
    stop_reason=final.stop_reason,
    blocks=[block.type for block in final.content],
    name=final.content[0].name,
    input=final.content[0].input,
    input_tokens=final.usage.input_tokens,
    output_tokens=final.usage.output_tokens,
)

count = client.messages.count_tokens(
    model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Count me."}]
)
emit("count_tokens", input_tokens=count.input_tokens)

try:
    anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0).messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    emit("bad_key", raised=None)
except anthropic.AuthenticationError as error:
    emit("bad_key", raised=type(error).__name__, status=error.status_code)

sys.exit(0)
