"""The official `anthropic` and `openai` SDKs against a running tollgate whose models
`bedrock-sonnet` and `vertex-sonnet` are served by Amazon Bedrock and Vertex AI (or the
models named, comma-separated, in `TOLLGATE_CLOUD_MODELS`, such as one on Gemini): a
message, a streamed message and a streamed chat completion to each. Prints one JSON object
per case; the Rust test asserts them."""

import json
import os
import sys

import anthropic
import openai

base_url = os.environ["TOLLGATE_BASE_URL"]
api_key = os.environ["TOLLGATE_API_KEY"]
claude = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
gpt = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def emit(case, **fields):
    print(json.dumps({"case": case, **fields}), flush=True)


models = [m for m in os.environ.get("TOLLGATE_CLOUD_MODELS", "bedrock-sonnet,vertex-sonnet").split(",") if m]
for model in models:
    message = claude.messages.create(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    emit(
        f"{model}/message",
        text=message.content[0].text,
        input_tokens=message.usage.input_tokens,
        cache_read_input_tokens=message.usage.cache_read_input_tokens,
        output_tokens=message.usage.output_tokens,
    )

    with claude.messages.stream(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "Say hello, streaming."}],
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    emit(
        f"{model}/message_stream",
        text=streamed,
        stop_reason=final.stop_reason,
        input_tokens=final.usage.input_tokens,
        cache_read_input_tokens=final.usage.cache_read_input_tokens,
        output_tokens=final.usage.output_tokens,
    )

    text = []
    usage = None
    for chunk in gpt.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello, in chat."}],
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    emit(
        f"{model}/chat_stream",
        content="".join(text),
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None,
        completion_tokens=usage.completion_tokens,
    )

embedders = [model for model in os.environ.get("TOLLGATE_CLOUD_EMBEDDERS", "").split(",") if model]
for model in embedders:
    response = gpt.embeddings.create(model=model, input=["alpha beta", "gamma"], dimensions=4)
    emit(
        f"{model}/embeddings",
        model=response.model,
        vectors=[item.embedding for item in response.data],
        prompt_tokens=response.usage.prompt_tokens,
    )

sys.exit(0)
