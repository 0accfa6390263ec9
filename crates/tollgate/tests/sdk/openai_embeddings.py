"""The official `openai` SDK's `embeddings.create` against a running tollgate: the simulated
model (the SDK asks for base64 unless told otherwise, and decodes it), floats, a pass-through
to an OpenAI-compatible upstream, and an unknown model. Prints one JSON object per case; the
Rust test asserts them."""

import json
import os
import sys

import openai

base_url = os.environ["TOLLGATE_BASE_URL"] + "/v1"
api_key = os.environ["TOLLGATE_API_KEY"]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


def describe(case, response):
    emit(
        case,
        model=response.model,
        count=len(response.data),
        dimensions=len(response.data[0].embedding),
        first=response.data[0].embedding[0],
        prompt_tokens=response.usage.prompt_tokens,
    )


describe(
    "simulated",
    client.embeddings.create(model="text-embedding-3-small", input=["Ledgers balance.", "Credit expires."]),
)
describe(
    "simulated_floats",
    client.embeddings.create(model="text-embedding-3-small", input="Ledgers balance.", encoding_format="float"),
)
describe("passthrough", client.embeddings.create(model="fake-embed", input="Hi", dimensions=8))

try:
    client.embeddings.create(model="no-such-embedder", input="x")
    emit("unknown_model", raised=None)
except openai.NotFoundError as error:
    emit("unknown_model", raised=type(error).__name__, status=error.status_code, code=error.code)

sys.exit(0)
