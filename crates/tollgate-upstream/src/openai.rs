//! The client for OpenAI's Chat Completions and Embeddings APIs, or anything that speaks
//! them (OpenAI itself, vLLM, Ollama, LiteLLM, OpenRouter, …). Like the Anthropic client it
//! sends the gateway's body as is, with the provider key as a bearer token, hands back the
//! body or the event stream verbatim, and reads usage from them: from the body's `usage`,
//! and from the stream chunk that carries `usage` (the gateway always asks for it with
//! `stream_options.include_usage`). It never forwards the client's credentials.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use tollgate_core::usage::TokenUsage;

use crate::sse::SseEvent;
use crate::{UpstreamError, UpstreamReply, UpstreamRequest, http};

/// Which field carries the output limit on an OpenAI-compatible upstream: `max_tokens` is
/// what most compatible servers know; OpenAI's reasoning models take only
/// `max_completion_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn name(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root the `openai` SDKs call `base_url`, including its version segment, e.g.
    /// `https://api.openai.com/v1` or `http://localhost:8000/v1`; `/chat/completions` (and
    /// `/embeddings`) is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; `None` for servers that need no key.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// PEM certificates to trust beside the built-in roots, for an upstream whose
    /// certificate a private authority signed; `None` trusts the built-in roots only.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest silence between two chunks of a streaming reply.
    pub idle_timeout: Duration,
    /// Longest wait for a whole non-streaming reply, and for a streaming reply's headers.
    pub request_timeout: Duration,
    /// The field the gateway puts the output limit in when it writes the body.
    pub max_tokens_field: MaxTokensField,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_tokens_field", &self.max_tokens_field)
            .finish()
    }
}

/// A pooled HTTP client for one OpenAI-compatible upstream. Clones share the pool.
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    chat_completions_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    authorization: Option<HeaderValue>,
    idle_timeout: Duration,
    request_timeout: Duration,
    max_tokens_field: MaxTokensField,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpenAiClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// Builds the client. Fails (as `Connect`) when the base URL or the key cannot be used.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiClient, UpstreamError> {
        let chat_completions_url = http::endpoint(&config.base_url, "/chat/completions")?;
        let embeddings_url = http::endpoint(&config.base_url, "/embeddings")?;
        let authorization = config
            .api_key
            .as_deref()
            .map(|key| http::secret_header(&format!("Bearer {key}"), "the upstream API key"))
            .transpose()?;
        Ok(OpenAiClient {
            inner: Arc::new(Inner {
                http: http::client(config.connect_timeout, config.ca_pem.as_deref())?,
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                chat_completions_url,
                embeddings_url,
                authorization,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
                max_tokens_field: config.max_tokens_field,
            }),
        })
    }

    /// The field this upstream takes the output limit in.
    pub fn max_tokens_field(&self) -> MaxTokensField {
        self.inner.max_tokens_field
    }

    /// `POST {base_url}/chat/completions` with a Chat Completions body. A streaming reply is
    /// returned as soon as its headers arrive.
    pub async fn chat_completions(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let builder = self.post(&self.inner.chat_completions_url, &request);
        if !request.stream {
            return self.buffered(builder, "chat completion").await;
        }
        let events =
            http::send_streaming(builder, self.inner.request_timeout, self.inner.idle_timeout).await?;
        Ok(UpstreamReply::Stream(events))
    }

    /// `POST {base_url}/embeddings` with an Embeddings body; `request.stream` is ignored, as
    /// embeddings never stream. Usage is the body's `usage.prompt_tokens`.
    pub async fn embeddings(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let builder = self.post(&self.inner.embeddings_url, &request);
        self.buffered(builder, "embeddings").await
    }

    /// A JSON `POST` of the request's body to `url`, with the client's headers as they came
    /// (the gateway passes them only from OpenAI's surface) and the provider key.
    fn post(&self, url: &reqwest::Url, request: &UpstreamRequest) -> reqwest::RequestBuilder {
        let mut headers = request.client_headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.inner.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        self.inner
            .http
            .post(url.clone())
            .headers(headers)
            .body(request.body.clone())
    }

    /// Sends and reads a whole JSON reply, whose `usage` object is required: what a
    /// `what` reply would be billed by.
    async fn buffered(
        &self,
        builder: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<UpstreamReply, UpstreamError> {
        let body = http::send_buffered(builder, self.inner.request_timeout).await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|error| UpstreamError::Protocol(format!("{what} body is not JSON: {error}")))?;
        let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) else {
            return Err(UpstreamError::Protocol(format!(
                "{what} body has no usage object"
            )));
        };
        let usage = parse_usage(usage);
        Ok(UpstreamReply::Message { body, usage })
    }
}

/// Reads a Chat Completions `usage` object into our token kinds. `prompt_tokens` includes
/// the cached ones (`prompt_tokens_details.cached_tokens`), which are cache reads; the
/// API reports no cache writes. `completion_tokens` includes reasoning tokens.
pub fn parse_usage(value: &Value) -> TokenUsage {
    let count = |object: &Value, name: &str| object.get(name).and_then(Value::as_u64).unwrap_or(0);
    let prompt_tokens = count(value, "prompt_tokens");
    let cached_tokens = value
        .get("prompt_tokens_details")
        .map_or(0, |details| count(details, "cached_tokens"))
        .min(prompt_tokens);
    TokenUsage {
        input_tokens: prompt_tokens - cached_tokens,
        output_tokens: count(value, "completion_tokens"),
        cache_read_input_tokens: cached_tokens,
        ..TokenUsage::default()
    }
}

/// Meters a Chat Completions stream chunk by chunk: the usage chunk, whether a choice
/// finished, whether `[DONE]` arrived, whether an error chunk arrived, and how many bytes
/// of text were generated (for an estimate when a server sends no usage at all).
#[derive(Default, Clone, Debug)]
pub struct ChatUsageAccumulator {
    usage: Option<TokenUsage>,
    saw_error: bool,
    saw_done: bool,
    saw_finish: bool,
    generated_bytes: u64,
}

impl ChatUsageAccumulator {
    pub fn observe(&mut self, event: &SseEvent) {
        if is_done(event) {
            self.saw_done = true;
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if data.get("error").is_some_and(|error| !error.is_null()) || event.event == "error" {
            self.saw_error = true;
        }
        if let Some(usage) = data.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(parse_usage(usage));
        }
        for choice in data
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if choice
                .get("finish_reason")
                .is_some_and(|reason| !reason.is_null())
            {
                self.saw_finish = true;
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            let text_bytes = |value: Option<&Value>| value.and_then(Value::as_str).map_or(0, str::len);
            let mut generated = text_bytes(delta.get("content"))
                + text_bytes(delta.get("reasoning_content"))
                + text_bytes(delta.get("refusal"));
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let function = call.get("function");
                generated += text_bytes(function.and_then(|function| function.get("name")))
                    + text_bytes(function.and_then(|function| function.get("arguments")));
            }
            self.generated_bytes = self
                .generated_bytes
                .saturating_add(u64::try_from(generated).unwrap_or(u64::MAX));
        }
    }

    /// The usage the stream reported, if it reported any.
    pub fn reported_usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    /// Whether an error chunk arrived: the upstream failed mid-stream.
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// Whether the stream reached `data: [DONE]`.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    /// Whether some choice reported a `finish_reason`.
    pub fn saw_finish(&self) -> bool {
        self.saw_finish
    }

    /// Bytes of generated text and tool-call arguments seen so far.
    pub fn generated_bytes(&self) -> u64 {
        self.generated_bytes
    }
}

/// The stream's terminator, `data: [DONE]`.
pub fn is_done(event: &SseEvent) -> bool {
    event.data.trim() == "[DONE]"
}

#[cfg(test)]
mod tests;
