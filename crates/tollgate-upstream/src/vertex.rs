//! The client for Anthropic's models on Google Cloud's Vertex AI: `rawPredict` and
//! `streamRawPredict` on the publisher model, with the Messages body less its `model` (the
//! path names it) and `anthropic_version: "vertex-2023-10-16"`. Replies and streams are
//! Anthropic's own, so they are metered exactly as Anthropic's. Access tokens come from a
//! service-account key by OAuth2's JWT bearer grant (an RS256 assertion signed with the key,
//! posted to the key's `token_uri`), kept until shortly before they expire, and fetched
//! once for all calls that need one at the same time. It never forwards the client's
//! headers but its betas.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::cloud::{CloudBody, path_segment, wall_clock};
use crate::{UpstreamError, UpstreamReply, UpstreamRequest, anthropic, http};

/// The `anthropic_version` Vertex AI's Messages API takes.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
/// The scope an access token is asked for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long an assertion asks a token to live (Google's maximum).
const ASSERTION_LIFETIME_SECONDS: u64 = 3_600;
/// A token is replaced this long before it expires, so no call carries one that expires
/// on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The fields of a service account's JSON key that the grant needs.
#[derive(Clone, serde::Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    /// PEM (PKCS#8) RSA private key.
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads a key file's JSON (as the Cloud console downloads it).
    pub fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        serde_json::from_str(json).map_err(|error| format!("not a service account key: {error}"))
    }
}

#[derive(Clone, Debug)]
pub struct VertexConfig {
    pub project: String,
    /// The region, e.g. `us-east5`, or `global`.
    pub region: String,
    /// Scheme and host of the API; `None`: `https://{region}-aiplatform.googleapis.com`
    /// (`https://aiplatform.googleapis.com` for `global`).
    pub endpoint: Option<String>,
    pub service_account: ServiceAccountKey,
    pub connect_timeout: Duration,
    /// PEM certificates to trust beside the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Longest silence between two chunks of a streaming reply.
    pub idle_timeout: Duration,
    /// Longest wait for a whole non-streaming reply, and for a streaming reply's headers
    /// (and for a token).
    pub request_timeout: Duration,
}

/// A pooled HTTP client for one Vertex AI project and region. Clones share the pool and
/// the token.
#[derive(Clone)]
pub struct VertexClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{endpoint}/v1/projects/{project}/locations/{region}/publishers/anthropic/models`.
    models_url: String,
    key: ServiceAccountKey,
    signing_key: jsonwebtoken::EncodingKey,
    /// The current token and when to replace it; the lock is held while one is fetched,
    /// so calls that find it stale wait for one fetch instead of each making their own.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    idle_timeout: Duration,
    request_timeout: Duration,
}

struct CachedToken {
    authorization: HeaderValue,
    refresh_at: Instant,
}

impl std::fmt::Debug for VertexClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VertexClient")
            .field("models_url", &self.inner.models_url)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl VertexClient {
    /// Builds the client. Fails (as `Connect`) when the endpoint or the key cannot be used.
    pub fn new(config: VertexConfig) -> Result<VertexClient, UpstreamError> {
        let endpoint = config.endpoint.clone().unwrap_or_else(|| {
            if config.region == "global" {
                "https://aiplatform.googleapis.com".to_owned()
            } else {
                format!("https://{}-aiplatform.googleapis.com", config.region)
            }
        });
        let models_url = format!(
            "{}/v1/projects/{}/locations/{}/publishers/anthropic/models",
            endpoint.trim_end_matches('/'),
            path_segment(&config.project),
            path_segment(&config.region),
        );
        http::endpoint(&models_url, "")?;
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(
            config.service_account.private_key.as_bytes(),
        )
        .map_err(|error| UpstreamError::Connect(format!("the service account's private_key: {error}")))?;
        Ok(VertexClient {
            inner: Arc::new(Inner {
                http: http::client(config.connect_timeout, config.ca_pem.as_deref())?,
                models_url,
                key: config.service_account,
                signing_key,
                token: tokio::sync::Mutex::new(None),
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// `POST …/models/{model}:rawPredict`, or `:streamRawPredict` for a stream.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let body = CloudBody::parse(&request.body, VERTEX_ANTHROPIC_VERSION)?;
        let method = if request.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        // Model ids name their version after `@` (`claude-sonnet-4-5@20250929`), which
        // Google's paths take as it is.
        let model = path_segment(&body.model).replace("%40", "@");
        let url = http::endpoint(&self.inner.models_url, &format!("/{model}:{method}"))?;
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(AUTHORIZATION, self.authorization().await?);
        if let Some(beta) = &request.anthropic_beta {
            let beta = HeaderValue::from_str(beta)
                .map_err(|_| UpstreamError::invalid_request("anthropic-beta: header value is not valid"))?;
            headers.insert("anthropic-beta", beta);
        }
        let builder = self.inner.http.post(url).headers(headers).body(body.to_bytes());
        if !request.stream {
            let reply = http::send_buffered(builder, self.inner.request_timeout)
                .await
                .map_err(UpstreamError::in_anthropic_envelope)?;
            return anthropic::message_reply(reply);
        }
        let events = http::send_streaming(builder, self.inner.request_timeout, self.inner.idle_timeout)
            .await
            .map_err(UpstreamError::in_anthropic_envelope)?;
        Ok(UpstreamReply::Stream(events))
    }

    /// `Bearer {token}`: the cached token, or a new one when it is missing or near expiry.
    async fn authorization(&self) -> Result<HeaderValue, UpstreamError> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.authorization.clone());
        }
        let (authorization, lifetime) = self.fetch_token().await?;
        let keep_for = lifetime
            .checked_sub(REFRESH_MARGIN)
            .filter(|keep_for| !keep_for.is_zero())
            .unwrap_or(lifetime / 2);
        *cached = Some(CachedToken {
            authorization: authorization.clone(),
            refresh_at: Instant::now() + keep_for,
        });
        Ok(authorization)
    }

    /// One JWT bearer grant at the key's `token_uri`. A refusal there is the operator's
    /// credentials' fault, so it is answered as a 401 (a provider account problem, which
    /// fails over), with Google's words in Anthropic's envelope.
    async fn fetch_token(&self) -> Result<(HeaderValue, Duration), UpstreamError> {
        let key = &self.inner.key;
        let now = wall_clock()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: &key.client_email,
            scope: CLOUD_PLATFORM_SCOPE,
            aud: &key.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECONDS,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&key.private_key_id);
        let assertion = jsonwebtoken::encode(&header, &claims, &self.inner.signing_key)
            .map_err(|error| UpstreamError::Connect(format!("signing the token assertion: {error}")))?;
        // The assertion is base64url and dots: nothing in it needs escaping.
        let form =
            format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
        let builder = self
            .inner
            .http
            .post(&key.token_uri)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        let body = http::send_buffered(builder, self.inner.request_timeout)
            .await
            .map_err(|error| match error {
                UpstreamError::Status {
                    status,
                    body,
                    headers,
                } if status < 500 => {
                    let reason = String::from_utf8_lossy(&body);
                    tracing::warn!(status, %reason, "the token endpoint refused the service account");
                    let envelope = serde_json::json!({
                        "type": "error",
                        "error": {
                            "type": "authentication_error",
                            "message": format!("The token endpoint refused the service account: {reason}"),
                        },
                    });
                    UpstreamError::Status {
                        status: 401,
                        body: bytes::Bytes::from(envelope.to_string()),
                        headers,
                    }
                }
                other => other.in_anthropic_envelope(),
            })?;
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|error| UpstreamError::Protocol(format!("token reply is not JSON: {error}")))?;
        let authorization =
            http::secret_header(&format!("Bearer {}", reply.access_token), "the access token")?;
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(ASSERTION_LIFETIME_SECONDS));
        Ok((authorization, lifetime))
    }
}
