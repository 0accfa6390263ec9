//! How a call to a provider failed, sorted by what the gateway should tell the client and
//! whether sending the same request again is safe. Owns no envelope rendering: the gateway
//! maps each variant to its own wire error.

/// A failed provider call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request never reached the provider: DNS, TCP, TLS or the send itself failed.
    #[error("could not reach the upstream: {0}")]
    Connect(String),
    /// The connect, idle (between chunks) or total deadline passed.
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// The provider answered with a non-2xx status. `body` is its answer verbatim, usually
    /// an Anthropic error envelope, and `headers` the ones a client needs to decide whether
    /// and when to retry (`PASSED_HEADERS`), so the gateway can pass both through.
    #[error("upstream answered with status {status}")]
    Status {
        status: u16,
        body: bytes::Bytes,
        headers: PassedHeaders,
    },
    /// The provider answered 2xx but the body or stream could not be understood.
    #[error("malformed upstream response: {0}")]
    Protocol(String),
}

/// Response headers of a failed call that reach the client as the provider sent them: when
/// to retry and what the provider's limits are. Nothing else of the provider's answer
/// (its organization id, cookies, its own request id) leaves the gateway.
pub type PassedHeaders = Vec<(String, String)>;

/// Whether a provider's response header is one `PassedHeaders` keeps.
pub fn is_passed_header(name: &str) -> bool {
    matches!(name, "retry-after" | "retry-after-ms" | "x-should-retry")
        || name.starts_with("anthropic-ratelimit-")
        || name.starts_with("x-ratelimit-")
}

impl UpstreamError {
    /// A non-2xx answer without headers worth passing on (the simulated model's, or an
    /// error event inside a stream).
    pub fn status(status: u16, body: bytes::Bytes) -> UpstreamError {
        UpstreamError::Status {
            status,
            body,
            headers: PassedHeaders::new(),
        }
    }

    /// The value of a passed header, if the provider sent it.
    pub fn passed_header(&self, name: &str) -> Option<&str> {
        match self {
            UpstreamError::Status { headers, .. } => headers
                .iter()
                .find(|(header, _)| header == name)
                .map(|(_, value)| value.as_str()),
            _ => None,
        }
    }

    /// The operator's account at the provider is at fault, not the request: the provider
    /// refused the gateway's key (401, 403) or its credit ran out. Another deployment may
    /// serve the request, and the client is never told it is the one out of credit.
    pub fn is_provider_account_problem(&self) -> bool {
        let UpstreamError::Status { status, body, .. } = self else {
            return false;
        };
        if matches!(status, 401 | 403) {
            return true;
        }
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        matches!(status, 400 | 402 | 429)
            && (text.contains("credit balance is too low")
                || text.contains("billing_error")
                || text.contains("insufficient_quota"))
    }

    /// Whether the gateway may send the same request again (to this or another provider)
    /// before it has forwarded anything to the client. Protocol errors are not retried:
    /// the provider did answer, and doing it again would likely answer the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Timeout(_) => true,
            // 529 is Anthropic's "overloaded"; it is in the 5xx range but named for clarity.
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 529,
            UpstreamError::Protocol(_) => false,
        }
    }

    /// Whether the gateway may try the request on another deployment: the provider was not
    /// reached, or it answered 5xx or 529 and so did not serve the request. Timeouts are not
    /// failed over: the provider may still be generating (and billing) the answer.
    pub fn fails_over(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500 || self.is_provider_account_problem(),
            UpstreamError::Timeout(_) | UpstreamError::Protocol(_) => false,
        }
    }

    /// A 400 with an Anthropic `invalid_request_error` envelope, for requests this crate
    /// rejects itself (the simulated model, unsendable headers) exactly as the real API would.
    pub(crate) fn invalid_request(message: &str) -> UpstreamError {
        let envelope = serde_json::json!({
            "type": "error",
            "error": { "type": "invalid_request_error", "message": message },
        });
        UpstreamError::status(400, bytes::Bytes::from(envelope.to_string()))
    }

    /// A cloud's refusal in Anthropic's envelope, so clients of a cloud deployment read it as
    /// they read Anthropic's own: the status and the passed headers stay, a body that is
    /// already Anthropic's envelope stays verbatim, and any other body (Bedrock's
    /// `{"message"}`, Google's `{"error":{"message","status"}}`) becomes the envelope of the
    /// status's error type with the cloud's message. Other failures pass unchanged.
    pub(crate) fn in_anthropic_envelope(self) -> UpstreamError {
        let UpstreamError::Status {
            status,
            body,
            headers,
        } = self
        else {
            return self;
        };
        let value = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        if value.get("type").and_then(serde_json::Value::as_str) == Some("error") {
            return UpstreamError::Status {
                status,
                body,
                headers,
            };
        }
        let message = ["message", "Message"]
            .iter()
            .find_map(|name| value.get(*name))
            .or_else(|| value.get("error").and_then(|error| error.get("message")))
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_owned);
        let envelope = serde_json::json!({
            "type": "error",
            "error": { "type": anthropic_error_type(status), "message": message },
        });
        UpstreamError::Status {
            status,
            body: bytes::Bytes::from(envelope.to_string()),
            headers,
        }
    }
}

/// The Anthropic error type that goes with an HTTP status, as Anthropic's API pairs them.
pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}
