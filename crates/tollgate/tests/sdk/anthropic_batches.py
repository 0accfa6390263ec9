"""The official `anthropic` SDK's Message Batches against a running tollgate, on the
simulated model unless TOLLGATE_BATCH_MODEL names another: create, retrieve (polled until
the batch ended), list, results, cancel and delete, unchanged. Prints one JSON object per
case; the Rust test asserts them and the money they moved."""

import json
import os
import time

import anthropic

base_url = os.environ["TOLLGATE_BASE_URL"]
api_key = os.environ["TOLLGATE_API_KEY"]
model = os.environ.get("TOLLGATE_BATCH_MODEL", "claude-sonnet-4-6")
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


def request(custom_id, question):
    return {
        "custom_id": custom_id,
        "params": {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": question}],
        },
    }


batch = client.messages.batches.create(
    requests=[request("first", "Say hello."), request("second", "Name a colour."), request("third", "Count to three.")]
)
emit("created", id=batch.id, type=batch.type, status=batch.processing_status,
     processing=batch.request_counts.processing)

for _ in range(400):
    batch = client.messages.batches.retrieve(batch.id)
    if batch.processing_status == "ended":
        break
    time.sleep(0.05)
emit("ended", status=batch.processing_status, succeeded=batch.request_counts.succeeded,
     results_url=batch.results_url, ended_at=batch.ended_at.isoformat() if batch.ended_at else None)

page = client.messages.batches.list(limit=10)
emit("list", ids=[item.id for item in page.data], has_more=page.has_more)

results = []
for line in client.messages.batches.results(batch.id):
    entry = {"custom_id": line.custom_id, "type": line.result.type}
    if line.result.type == "succeeded":
        usage = line.result.message.usage
        entry.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                     text=line.result.message.content[0].text)
    results.append(entry)
emit("results", results=results)

canceled = client.messages.batches.cancel(batch.id)
emit("cancel_ended", status=canceled.processing_status)

deleted = client.messages.batches.delete(batch.id)
emit("deleted", id=deleted.id, type=deleted.type)

try:
    client.messages.batches.retrieve(batch.id)
    emit("gone", raised=None)
except anthropic.NotFoundError as error:
    emit("gone", raised=type(error).__name__, status=error.status_code)
