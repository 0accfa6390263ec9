"""The official `openai` SDK's Responses API (`client.responses`) against a running tollgate:
create, streaming and not, a function-call round trip continued by previous_response_id,
retrieve and delete, and errors. Prints one JSON object per case; the Rust test asserts them."""

import json
import os

import openai

base_url = os.environ["TOLLGATE_BASE_URL"] + "/v1"
api_key = os.environ["TOLLGATE_API_KEY"]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


def usage_of(response):
    usage = response.usage
    return dict(
        input_tokens=usage.input_tokens,
        cached_tokens=usage.input_tokens_details.cached_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.output_tokens_details.reasoning_tokens,
        total_tokens=usage.total_tokens,
    )


response = client.responses.create(
    model="claude-sonnet-4-6",
    instructions="You are terse.",
    input="Say hello.",
    max_output_tokens=40,
)
emit(
    "create",
    id=response.id,
    status=response.status,
    model=response.model,
    text=response.output_text,
    **usage_of(response),
)

deltas = []
kinds = []
final = None
with client.responses.stream(
    model="fake-sonnet",
    input=[{"role": "user", "content": "Tell me about ledgers."}],
    max_output_tokens=60,
) as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
emit(
    "stream",
    text="".join(deltas),
    final_text=final.output_text,
    first=kinds[0],
    last=kinds[-1],
    **usage_of(final),
)

raw = client.responses.create(
    model="claude-haiku-4-5",
    input="Hi",
    max_output_tokens=60,
    stream=True,
    store=False,
)
raw_events = list(raw)
emit(
    "raw_stream",
    first=raw_events[0].type,
    last=raw_events[-1].type,
    text="".join(event.delta for event in raw_events if event.type == "response.output_text.delta"),
    **usage_of(raw_events[-1].response),
)

tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
called = client.responses.create(
    model="claude-sonnet-4-6", input="Use get_weather for Paris.", tools=tools
)
call = next(item for item in called.output if item.type == "function_call")
answered = client.responses.create(
    model="claude-sonnet-4-6",
    previous_response_id=called.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
    tools=tools,
)
emit(
    "tool_round_trip",
    name=call.name,
    arguments=json.loads(call.arguments),
    answer=answered.output_text,
    calls_usage=usage_of(called),
    answer_usage=usage_of(answered),
)

retrieved = client.responses.retrieve(called.id)
deleted = client.responses.delete(called.id)
try:
    client.responses.retrieve(called.id)
    emit("retrieve_deleted", raised=None)
except openai.NotFoundError as error:
    emit("retrieve_deleted", raised=type(error).__name__, status=error.status_code)
emit("retrieve", same=retrieved.id == called.id, text=retrieved.output[0].type, deleted=deleted is None)

try:
    client.responses.create(model="no-such-model", input="Hi")
    emit("unknown_model", raised=None)
except openai.APIStatusError as error:
    emit(
        "unknown_model",
        raised=type(error).__name__,
        status=error.status_code,
        code=error.body.get("code") if isinstance(error.body, dict) else None,
    )
