"""The official `anthropic` SDK's Files API against a running tollgate: upload, list,
retrieve_metadata, a message whose document names the file (on the simulated model, which
gets the file's text inline), delete, and the 404 of a deleted file. Prints one JSON object
per case; the Rust test asserts them."""

import json
import os

import anthropic

base_url = os.environ["TOLLGATE_BASE_URL"]
api_key = os.environ["TOLLGATE_API_KEY"]
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
files = client.beta.files


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


uploaded = files.upload(file=("notes.txt", b"The notes say hello", "text/plain"))
emit("uploaded", id=uploaded.id, filename=uploaded.filename, size_bytes=uploaded.size_bytes,
     type=uploaded.type)

page = files.list(limit=10)
emit("listed", ids=[item.id for item in page.data])

retrieved = files.retrieve_metadata(uploaded.id)
emit("retrieved", id=retrieved.id, mime_type=retrieved.mime_type,
     downloadable=getattr(retrieved, "downloadable", None))

message = client.beta.messages.create(
    model="claude-sonnet-4-6",
    max_tokens=32,
    betas=["files-api-2025-04-14"],
    messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": uploaded.id}},
        {"type": "text", "text": "Summarise the notes."},
    ]}],
)
emit("message", type=message.type, input_tokens=message.usage.input_tokens)

deleted = files.delete(uploaded.id)
emit("deleted", id=deleted.id, type=deleted.type)

try:
    files.retrieve_metadata(uploaded.id)
    emit("missing", status=200)
except anthropic.NotFoundError as error:
    emit("missing", status=error.status_code)
