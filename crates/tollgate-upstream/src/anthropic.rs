//! The client for Anthropic's Messages API (or anything that speaks it). It sends the
//! gateway's body as is, with the provider key and the client's version and beta headers,
//! and hands back the body or the event stream verbatim with the usage read from it. It never
//! forwards the client's own credentials and never buffers a streaming reply.
//!
//! It also speaks Anthropic's Message Batches API (create, retrieve, cancel, results) with
//! the same headers, for batches the gateway hands to the provider whole; it reads of a
//! provider batch only its id, whether it ended, and the JSON lines of its results.
//!
//! And it uploads a file to Anthropic's Files API (`POST /v1/files`, multipart), for a
//! Messages request that names a file the gateway keeps, reading of the answer only the
//! provider's id of the file; and deletes that copy when the file is deleted.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::sse::parse_usage;
use crate::{UpstreamError, UpstreamReply, UpstreamRequest, http};

/// The `anthropic-version` sent when the client gave none.
const ANTHROPIC_VERSION_DEFAULT: &str = "2023-06-01";

/// The beta the Files API is reached under.
pub const FILES_BETA: &str = "files-api-2025-04-14";

#[derive(Clone)]
pub struct AnthropicConfig {
    /// Scheme, host and optional path prefix, e.g. `https://api.anthropic.com`; a trailing
    /// `/` is allowed.
    pub base_url: String,
    /// Sent as `x-api-key`; `None` for upstreams that need no key (test servers, proxies
    /// that add their own).
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// PEM certificates to trust beside the built-in roots, for an upstream whose
    /// certificate a private authority signed; `None` trusts the built-in roots only.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest silence between two chunks of a streaming reply.
    pub idle_timeout: Duration,
    /// Longest wait for a whole non-streaming reply, and for a streaming reply's headers.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A pooled HTTP client for one Anthropic-compatible upstream. Clones share the pool.
#[derive(Clone)]
pub struct AnthropicClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    messages_url: reqwest::Url,
    count_tokens_url: reqwest::Url,
    batches_url: reqwest::Url,
    files_url: reqwest::Url,
    api_key: Option<HeaderValue>,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AnthropicClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    /// Builds the client. Fails (as `Connect`, since no request could ever be sent) when the
    /// base URL or the key cannot be used.
    pub fn new(config: AnthropicConfig) -> Result<AnthropicClient, UpstreamError> {
        let messages_url = http::endpoint(&config.base_url, "/v1/messages")?;
        let count_tokens_url = http::endpoint(&config.base_url, "/v1/messages/count_tokens")?;
        let batches_url = http::endpoint(&config.base_url, "/v1/messages/batches")?;
        let files_url = http::endpoint(&config.base_url, "/v1/files")?;
        let api_key = config
            .api_key
            .as_deref()
            .map(|key| http::secret_header(key, "the upstream API key"))
            .transpose()?;
        Ok(AnthropicClient {
            inner: Arc::new(Inner {
                http: http::client(config.connect_timeout, config.ca_pem.as_deref())?,
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                messages_url,
                count_tokens_url,
                batches_url,
                files_url,
                api_key,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// `POST /v1/messages`. A streaming reply is returned as soon as its headers arrive.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let builder = self.post(&self.inner.messages_url, &request)?;
        if !request.stream {
            let body = http::send_buffered(builder, self.inner.request_timeout).await?;
            return message_reply(body);
        }
        let events =
            http::send_streaming(builder, self.inner.request_timeout, self.inner.idle_timeout).await?;
        Ok(UpstreamReply::Stream(events))
    }

    /// `POST /v1/messages/count_tokens`; returns `input_tokens`. `request.stream` is ignored.
    pub async fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        let builder = self.post(&self.inner.count_tokens_url, &request)?;
        let body = http::send_buffered(builder, self.inner.request_timeout).await?;
        answer_field(&body, "count_tokens", "input_tokens", serde_json::Value::as_u64)
            .map(|(_, input_tokens)| input_tokens)
    }

    /// `POST /v1/messages/batches` with `request.body` (`{"requests": [...]}`, each
    /// request's params already in the provider's terms): the provider batch it made.
    pub async fn create_batch(&self, request: UpstreamRequest) -> Result<ProviderBatch, UpstreamError> {
        let builder = self.post(&self.inner.batches_url, &request)?;
        provider_batch(&http::send_buffered(builder, self.inner.request_timeout).await?)
    }

    /// `GET /v1/messages/batches/{id}`, with `headers`' version and betas (its body is
    /// ignored).
    pub async fn retrieve_batch(
        &self,
        id: &str,
        headers: &UpstreamRequest,
    ) -> Result<ProviderBatch, UpstreamError> {
        let url = self.batch_url(id, "")?;
        let builder = self.send(reqwest::Method::GET, &url, headers)?;
        provider_batch(&http::send_buffered(builder, self.inner.request_timeout).await?)
    }

    /// `POST /v1/messages/batches/{id}/cancel`.
    pub async fn cancel_batch(
        &self,
        id: &str,
        headers: &UpstreamRequest,
    ) -> Result<ProviderBatch, UpstreamError> {
        let url = self.batch_url(id, "/cancel")?;
        let builder = self.send(reqwest::Method::POST, &url, headers)?;
        provider_batch(&http::send_buffered(builder, self.inner.request_timeout).await?)
    }

    /// The results of an ended provider batch, one JSON line per request: read from this
    /// client's own base URL (`/v1/messages/batches/{id}/results`) rather than the batch's
    /// `results_url`, so the provider key never goes to a host the configuration did not name.
    pub async fn batch_results(
        &self,
        id: &str,
        headers: &UpstreamRequest,
    ) -> Result<bytes::Bytes, UpstreamError> {
        let url = self.batch_url(id, "/results")?;
        let builder = self.send(reqwest::Method::GET, &url, headers)?;
        http::send_buffered(builder, self.inner.request_timeout).await
    }

    /// `POST /v1/files`: uploads `content` as the multipart field `file`, with the provider
    /// key, `anthropic-version` and the Files API's beta; the id the provider gave it.
    pub async fn upload_file(
        &self,
        content: Vec<u8>,
        filename: &str,
        mime_type: &str,
    ) -> Result<String, UpstreamError> {
        let part = reqwest::multipart::Part::bytes(content)
            .file_name(filename.to_owned())
            .mime_str(mime_type)
            .map_err(|error| UpstreamError::Protocol(format!("a file's type cannot be sent: {error}")))?;
        let builder = self
            .files_call(reqwest::Method::POST, self.inner.files_url.clone())
            .multipart(reqwest::multipart::Form::new().part("file", part));
        let body = http::send_buffered(builder, self.inner.request_timeout).await?;
        answer_field(&body, "file", "id", owned_text).map(|(_, id)| id)
    }

    /// `DELETE /v1/files/{id}`: the provider's copy of a file, with the provider key and the
    /// Files API's beta.
    pub async fn delete_file(&self, provider_file_id: &str) -> Result<(), UpstreamError> {
        let id = provider_id(provider_file_id, "file")?;
        let url = http::endpoint(&self.inner.base_url, &format!("/v1/files/{id}"))?;
        let builder = self.files_call(reqwest::Method::DELETE, url);
        http::send_buffered(builder, self.inner.request_timeout).await?;
        Ok(())
    }

    /// A Files API call: the provider key, the default version and the Files API's beta
    /// (the client's own headers are not sent: the call is the gateway's).
    fn files_call(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let builder = self
            .inner
            .http
            .request(method, url)
            .header("anthropic-version", ANTHROPIC_VERSION_DEFAULT)
            .header("anthropic-beta", FILES_BETA);
        match &self.inner.api_key {
            Some(api_key) => builder.header("x-api-key", api_key.clone()),
            None => builder,
        }
    }

    fn batch_url(&self, id: &str, suffix: &str) -> Result<reqwest::Url, UpstreamError> {
        let id = provider_id(id, "batch")?;
        http::endpoint(
            &self.inner.base_url,
            &format!("/v1/messages/batches/{id}{suffix}"),
        )
    }

    fn post(
        &self,
        url: &reqwest::Url,
        request: &UpstreamRequest,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        self.send(reqwest::Method::POST, url, request)
    }

    fn send(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
        request: &UpstreamRequest,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let mut url = url.clone();
        if let Some(query) = request.query.as_deref().filter(|query| !query.is_empty()) {
            url.set_query(Some(query));
        }
        let mut headers = request.client_headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(api_key) = &self.inner.api_key {
            headers.insert("x-api-key", api_key.clone());
        }
        let version = request
            .anthropic_version
            .as_deref()
            .unwrap_or(ANTHROPIC_VERSION_DEFAULT);
        headers.insert("anthropic-version", client_header("anthropic-version", version)?);
        if let Some(beta) = &request.anthropic_beta {
            headers.insert("anthropic-beta", client_header("anthropic-beta", beta)?);
        }
        let builder = self.inner.http.request(method.clone(), url).headers(headers);
        Ok(if method == reqwest::Method::GET {
            builder
        } else {
            builder.body(request.body.clone())
        })
    }
}

/// An id the provider gave (`what` names its kind in errors), checked to be one path
/// segment: one that is not is refused rather than put in a URL.
fn provider_id<'id>(id: &'id str, what: &str) -> Result<&'id str, UpstreamError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    {
        return Err(UpstreamError::Protocol(format!(
            "not a provider {what} id: {id:?}"
        )));
    }
    Ok(id)
}

/// What the gateway reads of a provider's `message_batch` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderBatch {
    pub id: String,
    /// `processing_status` is `ended`: its results can be read.
    pub ended: bool,
}

fn provider_batch(body: &[u8]) -> Result<ProviderBatch, UpstreamError> {
    let (value, id) = answer_field(body, "message batch", "id", owned_text)?;
    Ok(ProviderBatch {
        id,
        ended: value.get("processing_status").and_then(serde_json::Value::as_str) == Some("ended"),
    })
}

/// A provider's JSON answer (`what` names it in errors) and its field `name`, as `read`
/// takes it; an answer that is not JSON, or lacks the field, is a protocol error.
fn answer_field<T>(
    body: &[u8],
    what: &str,
    name: &str,
    read: impl FnOnce(&serde_json::Value) -> Option<T>,
) -> Result<(serde_json::Value, T), UpstreamError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| UpstreamError::Protocol(format!("{what} body is not JSON: {error}")))?;
    let field = value
        .get(name)
        .and_then(read)
        .ok_or_else(|| UpstreamError::Protocol(format!("{what} body has no {name}")))?;
    Ok((value, field))
}

fn owned_text(value: &serde_json::Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// A header value from the client. One that cannot be sent is the client's mistake, so it is
/// answered as Anthropic would answer it: a 400 `invalid_request_error`.
fn client_header(name: &str, value: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(value)
        .map_err(|_| UpstreamError::invalid_request(&format!("{name}: header value is not valid")))
}

/// A whole Messages reply and the usage read from it, as every Anthropic-dialect client
/// hands it back.
pub(crate) fn message_reply(body: bytes::Bytes) -> Result<UpstreamReply, UpstreamError> {
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| UpstreamError::Protocol(format!("message body is not JSON: {error}")))?;
    let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) else {
        return Err(UpstreamError::Protocol(
            "message body has no usage object".to_owned(),
        ));
    };
    let usage = parse_usage(usage);
    Ok(UpstreamReply::Message { body, usage })
}
