//! The client for Anthropic's models on Amazon Bedrock: `InvokeModel` and
//! `InvokeModelWithResponseStream`, signed with SigV4 (`aws-sigv4`). The body is the
//! Messages body with the model moved into the path, `stream` dropped (the path says it),
//! `anthropic_version: "bedrock-2023-05-31"` and the client's betas in `anthropic_beta`.
//! A stream arrives in AWS's event-stream framing, each chunk carrying one Anthropic event
//! in base64; it is decoded as it arrives and handed on as those events, so it is metered
//! exactly as Anthropic's own stream. Refusals are put in Anthropic's envelope. It never
//! forwards the client's headers: what AWS reads is signed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::cloud::{CloudBody, path_segment, wall_clock};
use crate::event_stream::{Frame, FrameDecoder};
use crate::sse::SseEvent;
use crate::{EventStream, UpstreamError, UpstreamReply, UpstreamRequest, anthropic, http};

/// The `anthropic_version` Bedrock's Messages API takes.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// The name Bedrock's runtime signs under.
pub const SIGNING_NAME: &str = "bedrock";
const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Long-term or temporary AWS credentials.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Present for temporary credentials (STS), sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// The credentials of `profile` in an AWS shared credentials file (INI:
    /// `[profile]` sections of `aws_access_key_id`, `aws_secret_access_key` and optionally
    /// `aws_session_token`); `None` when the profile or its keys are missing.
    pub fn from_credentials_file(text: &str, profile: &str) -> Option<AwsCredentials> {
        let mut in_profile = false;
        let (mut access_key_id, mut secret_access_key, mut session_token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|line| line.strip_suffix(']')) {
                let section = section.trim();
                in_profile = section == profile || section.strip_prefix("profile ") == Some(profile);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if !in_profile {
                continue;
            }
            let value = Some(value.trim().to_owned());
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => access_key_id = value,
                "aws_secret_access_key" => secret_access_key = value,
                "aws_session_token" => session_token = value,
                _ => {}
            }
        }
        Some(AwsCredentials {
            access_key_id: access_key_id?,
            secret_access_key: secret_access_key?,
            session_token,
        })
    }
}

#[derive(Clone, Debug)]
pub struct BedrockConfig {
    /// The AWS region, e.g. `us-east-1`; it is signed into every request.
    pub region: String,
    /// Scheme and host of the runtime endpoint; `None`:
    /// `https://bedrock-runtime.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    pub credentials: AwsCredentials,
    pub connect_timeout: Duration,
    /// PEM certificates to trust beside the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest silence between two chunks of a streaming reply.
    pub idle_timeout: Duration,
    /// Longest wait for a whole non-streaming reply, and for a streaming reply's headers.
    pub request_timeout: Duration,
}

/// A pooled, signing HTTP client for one Bedrock region. Clones share the pool.
#[derive(Clone)]
pub struct BedrockClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: aws_credential_types::Credentials,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for BedrockClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BedrockClient")
            .field("endpoint", &self.inner.endpoint)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl BedrockClient {
    /// Builds the client. Fails (as `Connect`) when the endpoint cannot be used.
    pub fn new(config: BedrockConfig) -> Result<BedrockClient, UpstreamError> {
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", config.region));
        http::endpoint(&endpoint, "/model")?;
        let credentials = aws_credential_types::Credentials::new(
            config.credentials.access_key_id,
            config.credentials.secret_access_key,
            config.credentials.session_token,
            None,
            "tollgate-config",
        );
        Ok(BedrockClient {
            inner: Arc::new(Inner {
                http: http::client(config.connect_timeout, config.ca_pem.as_deref())?,
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                region: config.region,
                credentials,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// `POST /model/{modelId}/invoke`, or `/invoke-with-response-stream` for a stream.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let mut body = CloudBody::parse(&request.body, BEDROCK_ANTHROPIC_VERSION)?;
        body.fields.remove("stream");
        if let Some(betas) = &request.anthropic_beta {
            let betas: Vec<Value> = betas
                .split(',')
                .map(str::trim)
                .filter(|beta| !beta.is_empty())
                .map(Value::from)
                .collect();
            if !betas.is_empty() {
                body.fields
                    .insert("anthropic_beta".to_owned(), Value::Array(betas));
            }
        }
        let action = if request.stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let url = http::endpoint(
            &self.inner.endpoint,
            &format!("/model/{}/{action}", path_segment(&body.model)),
        )?;
        let accept = if request.stream {
            EVENT_STREAM_CONTENT_TYPE
        } else {
            "application/json"
        };
        let builder = self.signed_post(url, accept, body.to_bytes())?;
        if !request.stream {
            let reply = http::send_buffered(builder, self.inner.request_timeout)
                .await
                .map_err(UpstreamError::in_anthropic_envelope)?;
            return anthropic::message_reply(reply);
        }
        let chunks = http::send_for_chunks(
            builder,
            self.inner.request_timeout,
            self.inner.idle_timeout,
            EVENT_STREAM_CONTENT_TYPE,
        )
        .await
        .map_err(UpstreamError::in_anthropic_envelope)?;
        Ok(UpstreamReply::Stream(anthropic_events(chunks)))
    }

    /// A POST with its SigV4 signature (and `x-amz-date`, and `x-amz-security-token` for
    /// temporary credentials) over the method, URL, `content-type`, `accept`, host and body.
    fn signed_post(
        &self,
        url: reqwest::Url,
        accept: &'static str,
        body: Bytes,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let mut headers = HeaderMap::with_capacity(5);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let signing_failed =
            |error: &dyn std::fmt::Display| UpstreamError::Connect(format!("signing the request: {error}"));
        let identity = self.inner.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.inner.region)
            .name(SIGNING_NAME)
            .time(wall_clock())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| signing_failed(&error))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            SignableBody::Bytes(&body),
        )
        .map_err(|error| signing_failed(&error))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| signing_failed(&error))?
            .into_parts();
        for (name, value) in instructions.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| signing_failed(&error))?;
            let value = http::secret_header(value, "the request signature")?;
            headers.insert(name, value);
        }
        Ok(self.inner.http.post(url).headers(headers).body(body))
    }
}

/// Bedrock's event-stream frames as Anthropic's events, decoded as the bytes arrive. A
/// `chunk` event carries `{"bytes": base64 of one event's JSON}`, handed on under the
/// event's own `type`; an exception frame becomes Anthropic's `error` event and ends the
/// stream; damaged framing, or a stream cut inside a frame, is a `Protocol` error.
pub fn anthropic_events(
    chunks: impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static,
) -> EventStream {
    let state = (Box::pin(chunks), FrameDecoder::default(), false);
    let events = futures_util::stream::unfold(state, |(mut chunks, mut decoder, mut ended)| async move {
        loop {
            if ended {
                return None;
            }
            match decoder.next_frame() {
                Err(error) => return Some((Err(error), (chunks, decoder, true))),
                Ok(Some(frame)) => match frame_event(&frame) {
                    Ok(Some(event)) => {
                        // An exception is the stream's last word.
                        ended = event.event == "error";
                        return Some((Ok(event), (chunks, decoder, ended)));
                    }
                    Ok(None) => continue,
                    Err(error) => return Some((Err(error), (chunks, decoder, true))),
                },
                Ok(None) => {}
            }
            match chunks.next().await {
                Some(Ok(chunk)) => decoder.feed(&chunk),
                Some(Err(error)) => return Some((Err(error), (chunks, decoder, true))),
                None if decoder.pending_bytes() > 0 => {
                    let error = UpstreamError::Protocol(format!(
                        "event stream ended inside a frame ({} bytes left)",
                        decoder.pending_bytes()
                    ));
                    return Some((Err(error), (chunks, decoder, true)));
                }
                None => return None,
            }
        }
    });
    Box::pin(events)
}

/// One frame as an Anthropic event; `None` for frames that carry no event (other event
/// types, which Bedrock may add).
fn frame_event(frame: &Frame) -> Result<Option<SseEvent>, UpstreamError> {
    match frame.header(":message-type") {
        Some("event") => {
            if frame.header(":event-type") != Some("chunk") {
                return Ok(None);
            }
            #[derive(serde::Deserialize)]
            struct Chunk {
                bytes: String,
            }
            let chunk: Chunk = serde_json::from_slice(&frame.payload)
                .map_err(|error| UpstreamError::Protocol(format!("chunk payload is not JSON: {error}")))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(chunk.bytes.as_bytes())
                .map_err(|error| UpstreamError::Protocol(format!("chunk bytes are not base64: {error}")))?;
            let data = String::from_utf8(decoded)
                .map_err(|_| UpstreamError::Protocol("chunk bytes are not UTF-8".to_owned()))?;
            let kind = serde_json::from_str::<Value>(&data)
                .ok()
                .and_then(|value| value.get("type")?.as_str().map(str::to_owned))
                .ok_or_else(|| UpstreamError::Protocol("chunk event has no type".to_owned()))?;
            Ok(Some(SseEvent { event: kind, data }))
        }
        Some("exception") => {
            let exception = frame
                .header(":exception-type")
                .unwrap_or("internalServerException");
            let message = serde_json::from_slice::<Value>(&frame.payload)
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| exception.to_owned());
            Ok(Some(error_event(exception_error_type(exception), &message)))
        }
        _ => {
            let message = frame
                .header(":error-message")
                .or(frame.header(":error-code"))
                .unwrap_or("the event stream reported an error");
            Ok(Some(error_event("api_error", message)))
        }
    }
}

/// The Anthropic error type of a Bedrock stream exception.
fn exception_error_type(exception: &str) -> &'static str {
    match exception {
        "throttlingException" => "rate_limit_error",
        "serviceUnavailableException" => "overloaded_error",
        "validationException" => "invalid_request_error",
        "modelTimeoutException" => "timeout_error",
        _ => "api_error",
    }
}

fn error_event(error_type: &str, message: &str) -> SseEvent {
    let data = serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
    });
    SseEvent {
        event: "error".to_owned(),
        data: data.to_string(),
    }
}

#[cfg(test)]
mod tests;
