//! The client for Anthropic's Messages API (or anything that speaks it). It sends the
//! gateway's body as is, with the provider key and the client's version and beta headers,
//! and hands back the body or the event stream verbatim with the usage read from it. It never
//! forwards the client's own credentials and never buffers a streaming reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::sse::{parse_event_stream, parse_usage};
use crate::{EventStream, UpstreamError, UpstreamReply, UpstreamRequest};

/// The `anthropic-version` sent when the client gave none.
const ANTHROPIC_VERSION_DEFAULT: &str = "2023-06-01";

#[derive(Clone)]
pub struct AnthropicConfig {
    /// Scheme, host and optional path prefix, e.g. `https://api.anthropic.com`; a trailing
    /// `/` is allowed.
    pub base_url: String,
    /// Sent as `x-api-key`; `None` for upstreams that need no key (test servers, proxies
    /// that add their own).
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
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
        let base = config.base_url.trim_end_matches('/');
        let endpoint = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}")).map_err(|error| {
                UpstreamError::Connect(format!("invalid upstream base URL {base:?}: {error}"))
            })
        };
        let messages_url = endpoint("/v1/messages")?;
        let count_tokens_url = endpoint("/v1/messages/count_tokens")?;
        let api_key = match config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&key).map_err(|_| {
                    UpstreamError::Connect("the upstream API key is not a valid header value".to_owned())
                })?;
                // Keeps the key out of reqwest's debug output and HTTP/2 header tables.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            // A redirect would carry `x-api-key` to wherever it points; the API never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| UpstreamError::Connect(describe(&error)))?;
        Ok(AnthropicClient {
            inner: Arc::new(Inner {
                http,
                base_url: base.to_owned(),
                messages_url,
                count_tokens_url,
                api_key,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// `POST /v1/messages`. A streaming reply is returned as soon as its headers arrive.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        if !request.stream {
            let body = self.send_buffered(&self.inner.messages_url, request).await?;
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|error| UpstreamError::Protocol(format!("message body is not JSON: {error}")))?;
            let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) else {
                return Err(UpstreamError::Protocol(
                    "message body has no usage object".to_owned(),
                ));
            };
            let usage = parse_usage(usage);
            return Ok(UpstreamReply::Message { body, usage });
        }

        let deadline = Instant::now() + self.inner.request_timeout;
        let builder = self.post(&self.inner.messages_url, &request)?;
        let response = tokio::time::timeout_at(deadline, builder.send())
            .await
            .map_err(|_| self.headers_timeout())?
            .map_err(send_error)?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout_at(deadline, response.bytes())
                .await
                .map_err(|_| self.headers_timeout())?
                .map_err(body_error)?;
            return Err(status_error(status, body));
        }
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if !is_event_stream {
            return Err(UpstreamError::Protocol(format!(
                "streaming request answered {status} without an event stream (content-type {:?})",
                response.headers().get(CONTENT_TYPE)
            )));
        }
        let chunks = with_idle_timeout(response.bytes_stream(), self.inner.idle_timeout);
        let events: EventStream = Box::pin(parse_event_stream(chunks));
        Ok(UpstreamReply::Stream(events))
    }

    /// `POST /v1/messages/count_tokens`; returns `input_tokens`. `request.stream` is ignored.
    pub async fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        let body = self.send_buffered(&self.inner.count_tokens_url, request).await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| UpstreamError::Protocol(format!("count_tokens body is not JSON: {error}")))?;
        value
            .get("input_tokens")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| UpstreamError::Protocol("count_tokens body has no input_tokens".to_owned()))
    }

    /// Sends a request and reads the whole 2xx body, all within `request_timeout`.
    async fn send_buffered(
        &self,
        url: &reqwest::Url,
        request: UpstreamRequest,
    ) -> Result<Bytes, UpstreamError> {
        let builder = self.post(url, &request)?;
        let exchange = async {
            let response = builder.send().await.map_err(send_error)?;
            let status = response.status();
            let body = response.bytes().await.map_err(body_error)?;
            if !status.is_success() {
                return Err(status_error(status, body));
            }
            Ok(body)
        };
        tokio::time::timeout(self.inner.request_timeout, exchange)
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!(
                    "no complete reply within {:?}",
                    self.inner.request_timeout
                ))
            })?
    }

    fn post(
        &self,
        url: &reqwest::Url,
        request: &UpstreamRequest,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let mut url = url.clone();
        if let Some(query) = request.query.as_deref().filter(|query| !query.is_empty()) {
            url.set_query(Some(query));
        }
        let mut headers = HeaderMap::with_capacity(4);
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
        Ok(self
            .inner
            .http
            .post(url)
            .headers(headers)
            .body(request.body.clone()))
    }

    fn headers_timeout(&self) -> UpstreamError {
        UpstreamError::Timeout(format!(
            "no response headers within {:?}",
            self.inner.request_timeout
        ))
    }
}

/// A header value from the client. One that cannot be sent is the client's mistake, so it is
/// answered as Anthropic would answer it: a 400 `invalid_request_error`.
fn client_header(name: &str, value: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(value)
        .map_err(|_| UpstreamError::invalid_request(&format!("{name}: header value is not valid")))
}

fn status_error(status: reqwest::StatusCode, body: Bytes) -> UpstreamError {
    tracing::debug!(status = status.as_u16(), "upstream answered with an error status");
    UpstreamError::Status {
        status: status.as_u16(),
        body,
    }
}

/// Failures before any response: timeouts (connect included) or the connection itself.
fn send_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout(describe(&error))
    } else {
        UpstreamError::Connect(describe(&error))
    }
}

/// Failures while reading a body that had started: the reply is cut, not refused.
fn body_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout(describe(&error))
    } else {
        UpstreamError::Protocol(format!("reading the upstream body: {}", describe(&error)))
    }
}

/// reqwest's message plus its causes, which hold the useful part ("connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Ends the stream with `Timeout` when no chunk arrives for `idle_timeout`, and maps
/// transport errors. The first error ends the stream.
fn with_idle_timeout(
    chunks: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle_timeout: Duration,
) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static {
    let state = (Box::pin(chunks), false);
    futures_util::stream::unfold(state, move |(mut chunks, ended)| async move {
        if ended {
            return None;
        }
        match tokio::time::timeout(idle_timeout, chunks.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), (chunks, false))),
            Ok(Some(Err(error))) => Some((Err(body_error(error)), (chunks, true))),
            Ok(None) => None,
            Err(_) => Some((
                Err(UpstreamError::Timeout(format!(
                    "no stream data for {idle_timeout:?}"
                ))),
                (chunks, true),
            )),
        }
    })
}
