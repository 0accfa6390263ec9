//! The client for Google's Gemini API: `generateContent` and
//! `streamGenerateContent?alt=sse` on `{base_url}/v1beta/models/{model}`, with the provider
//! key in `x-goog-api-key`. Unlike the other clients it translates: to the gateway it speaks
//! the Anthropic dialect, as the clouds do, so Gemini deployments are routed, metered and
//! billed like Anthropic's, and Chat Completions and Responses clients reach them through the
//! gateway's own translations to Messages. The Messages body becomes Gemini's (`request`),
//! and the reply or the stream becomes Anthropic's (`reply`), its usage read from
//! `usageMetadata` (`parse_usage`). Refusals keep their status and retry headers and are
//! put in Anthropic's envelope; Google's `RetryInfo` becomes `retry-after` when it sent none,
//! and a key Google does not know (its 400 `API_KEY_INVALID`) is the operator's 401. It
//! never forwards the client's headers. A function call's `thoughtSignature`, which Gemini 3
//! must be shown again with the call, travels in the tool-use id the client echoes
//! (`signed_id`, `split_signed_id`). Embeddings in OpenAI's shape become
//! `batchEmbedContents` (`embed`), their reply OpenAI's again.

mod embed;
mod reply;
mod request;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use tollgate_core::usage::TokenUsage;

use crate::cloud::path_segment;
use crate::error::anthropic_error_type;
use crate::{UpstreamError, UpstreamReply, UpstreamRequest, http};

/// Where Google serves the Gemini API.
pub const GEMINI_BASE_URL_DEFAULT: &str = "https://generativelanguage.googleapis.com";

#[derive(Clone)]
pub struct GeminiConfig {
    /// Scheme, host and optional path prefix; `/v1beta/models/…` is appended.
    pub base_url: String,
    /// Sent as `x-goog-api-key`; `None` for proxies that add their own.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// PEM certificates to trust beside the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest silence between two chunks of a streaming reply.
    pub idle_timeout: Duration,
    /// Longest wait for a whole non-streaming reply, and for a streaming reply's headers.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for GeminiConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GeminiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A pooled HTTP client for one Gemini API endpoint. Clones share the pool.
#[derive(Clone)]
pub struct GeminiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{base_url}/v1beta/models`.
    models_url: String,
    api_key: Option<HeaderValue>,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for GeminiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GeminiClient")
            .field("models_url", &self.inner.models_url)
            .finish_non_exhaustive()
    }
}

impl GeminiClient {
    /// Builds the client. Fails (as `Connect`) when the base URL or the key cannot be used.
    pub fn new(config: GeminiConfig) -> Result<GeminiClient, UpstreamError> {
        let models_url = format!("{}/v1beta/models", config.base_url.trim_end_matches('/'));
        http::endpoint(&models_url, "")?;
        let api_key = config
            .api_key
            .as_deref()
            .map(|key| http::secret_header(key, "the upstream API key"))
            .transpose()?;
        Ok(GeminiClient {
            inner: Arc::new(Inner {
                http: http::client(config.connect_timeout, config.ca_pem.as_deref())?,
                models_url,
                api_key,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// A Messages request as `…/models/{model}:generateContent`, or
    /// `:streamGenerateContent?alt=sse` for a stream; the reply or events in Anthropic's shapes.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let call = request::to_generate_content(&request.body)?;
        let method = if request.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        if !request.stream {
            let value = self.post_for_json(&call.model, method, &call.body).await?;
            let (message, usage) = reply::message(&value, &call.model)?;
            return Ok(UpstreamReply::Message {
                body: bytes::Bytes::from(message.to_string()),
                usage,
            });
        }
        let builder = self.post(&call.model, method, &call.body)?;
        let chunks = http::send_streaming(builder, self.inner.request_timeout, self.inner.idle_timeout)
            .await
            .map_err(refusal)?;
        Ok(UpstreamReply::Stream(reply::message_events(chunks, call.model)))
    }

    /// A Messages `count_tokens` body as `…/models/{model}:countTokens` over the
    /// `generateContent` request it would make (system, turns and tools counted, as Anthropic
    /// counts them); Google's `totalTokens` as `input_tokens`.
    pub async fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        let mut call = request::to_generate_content(&request.body)?;
        call.body["model"] = Value::String(format!("models/{}", call.model));
        let body = serde_json::json!({ "generateContentRequest": call.body });
        let reply = self.post_for_json(&call.model, "countTokens", &body).await?;
        reply
            .get("totalTokens")
            .and_then(Value::as_u64)
            .ok_or_else(|| UpstreamError::Protocol("countTokens body has no totalTokens".to_owned()))
    }

    /// An Embeddings request in OpenAI's shape as `…/models/{model}:batchEmbedContents`, the
    /// reply in OpenAI's shape. Its usage is Google's `usageMetadata` when the reply has it,
    /// else what `:countTokens` says of the same texts; were that call to fail, the texts'
    /// bytes, which no count of their tokens exceeds: the vectors were made and Google bills
    /// them, so the reply is never free.
    pub async fn embeddings(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let call = embed::to_batch_embed(&request.body)?;
        let reply = self
            .post_for_json(&call.model, "batchEmbedContents", &call.body)
            .await?;
        let (body, reported) = embed::to_openai(&reply, &call)?;
        let (body, prompt_tokens) = match reported {
            Some(tokens) => (body, tokens),
            None => {
                let counted = self
                    .post_for_json(&call.model, "countTokens", &call.count_body)
                    .await;
                let tokens = match counted
                    .as_ref()
                    .ok()
                    .and_then(|reply| reply.get("totalTokens")?.as_u64())
                {
                    Some(tokens) => tokens,
                    None => {
                        tracing::warn!(model = %call.model, error = ?counted.err(), "countTokens did not answer for embeddings; billing the texts' bytes, their bound");
                        call.text_bytes
                    }
                };
                (embed::with_prompt_tokens(body, tokens), tokens)
            }
        };
        Ok(UpstreamReply::Message {
            body: bytes::Bytes::from(body.to_string()),
            usage: TokenUsage {
                input_tokens: prompt_tokens,
                ..TokenUsage::default()
            },
        })
    }

    /// A JSON `POST` of `body` to `…/models/{model}:{method}`, with the provider key.
    fn post(
        &self,
        model: &str,
        method: &str,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let url = http::endpoint(
            &self.inner.models_url,
            &format!("/{}:{method}", path_segment(model)),
        )?;
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(api_key) = &self.inner.api_key {
            headers.insert("x-goog-api-key", api_key.clone());
        }
        // A map of JSON values always serializes.
        let body = serde_json::to_vec(body).unwrap_or_default();
        Ok(self.inner.http.post(url).headers(headers).body(body))
    }

    /// `post`, and the whole reply as JSON; a refusal as Anthropic's (`refusal`).
    async fn post_for_json(&self, model: &str, method: &str, body: &Value) -> Result<Value, UpstreamError> {
        let reply = http::send_buffered(self.post(model, method, body)?, self.inner.request_timeout)
            .await
            .map_err(refusal)?;
        serde_json::from_slice(&reply)
            .map_err(|error| UpstreamError::Protocol(format!("{method} body is not JSON: {error}")))
    }
}

/// Reads a `usageMetadata` object into our token kinds. `promptTokenCount` includes the
/// cached tokens (`cachedContentTokenCount`), which are cache reads; tool-use prompt tokens
/// (`toolUsePromptTokenCount`, counted apart) are input too. Thinking
/// (`thoughtsTokenCount`) is billed as output beside `candidatesTokenCount`. Gemini reports
/// no cache writes. Absent counts are zero.
pub fn parse_usage(value: &Value) -> TokenUsage {
    let count = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
    let prompt_tokens = count("promptTokenCount");
    let cached_tokens = count("cachedContentTokenCount").min(prompt_tokens);
    TokenUsage {
        input_tokens: (prompt_tokens - cached_tokens).saturating_add(count("toolUsePromptTokenCount")),
        output_tokens: count("candidatesTokenCount").saturating_add(count("thoughtsTokenCount")),
        cache_read_input_tokens: cached_tokens,
        ..TokenUsage::default()
    }
}

/// Google's refusal as Anthropic's, keeping status and passed headers: `RetryInfo`'s
/// `retryDelay` becomes `retry-after` (whole seconds, rounded up) when Google sent no such
/// header, and an unknown key (400 with reason `API_KEY_INVALID`) becomes 401, the
/// operator's credentials at fault, which fails over and is never shown as the client's.
fn refusal(error: UpstreamError) -> UpstreamError {
    let UpstreamError::Status {
        mut status,
        mut body,
        mut headers,
    } = error
    else {
        return error;
    };
    let value = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let details = value
        .pointer("/error/details")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let has_retry_after = headers.iter().any(|(name, _)| name == "retry-after");
    if !has_retry_after
        && let Some(seconds) = details
            .iter()
            .filter_map(|detail| detail.get("retryDelay")?.as_str())
            .find_map(retry_delay_seconds)
    {
        headers.push(("retry-after".to_owned(), seconds.to_string()));
    }
    if status == 400
        && details
            .iter()
            .any(|detail| detail.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
    {
        status = 401;
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("API key not valid.");
        let envelope = serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_error_type(status), "message": message},
        });
        body = bytes::Bytes::from(envelope.to_string());
    }
    UpstreamError::Status {
        status,
        body,
        headers,
    }
    .in_anthropic_envelope()
}

/// Separates a tool-use id from the function call's thought signature carried in it.
const SIGNATURE_MARK: &str = "__thought__";

/// What Gemini 3 takes in place of a signature for a call it did not make (a conversation
/// begun with another model, or a client that rewrote the ids): Google's documented way to
/// pass its check.
pub(crate) const SIGNATURE_SKIPPED: &str = "skip_thought_signature_validator";

/// A tool-use id carrying `signature` (standard base64, as Google sends it) in the URL-safe
/// alphabet, so the id keeps to the characters tool ids may use (`[A-Za-z0-9_-]`) and every
/// client echoes it unchanged; the id alone when there is no signature or it is not base64.
pub(crate) fn signed_id(id: &str, signature: Option<&str>) -> String {
    use base64::Engine;
    let decoded =
        signature.and_then(|signature| base64::engine::general_purpose::STANDARD.decode(signature).ok());
    match decoded {
        Some(bytes) if !bytes.is_empty() => format!(
            "{id}{SIGNATURE_MARK}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ),
        _ => id.to_owned(),
    }
}

/// A tool-use id taken apart: the call's own id and, if the id carries one, its signature in
/// standard base64 again.
pub(crate) fn split_signed_id(id: &str) -> (&str, Option<String>) {
    use base64::Engine;
    let Some((call_id, carried)) = id.split_once(SIGNATURE_MARK) else {
        return (id, None);
    };
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(carried) {
        Ok(bytes) => (
            call_id,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        Err(_) => (id, None),
    }
}

/// A protobuf `Duration` in JSON (`"20s"`, `"1.5s"`) as whole seconds, rounded up.
fn retry_delay_seconds(delay: &str) -> Option<u64> {
    let number = delay.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().ok()?;
    if !fraction.chars().all(|digit| digit.is_ascii_digit()) {
        return None;
    }
    let rounds_up = fraction.chars().any(|digit| digit != '0');
    Some(whole + u64::from(rounds_up))
}

#[cfg(test)]
mod tests;
