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
    /// an Anthropic error envelope, so the gateway can pass it through.
    #[error("upstream answered with status {status}")]
    Status { status: u16, body: bytes::Bytes },
    /// The provider answered 2xx but the body or stream could not be understood.
    #[error("malformed upstream response: {0}")]
    Protocol(String),
}

impl UpstreamError {
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
            UpstreamError::Status { status, .. } => *status >= 500,
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
        UpstreamError::Status {
            status: 400,
            body: bytes::Bytes::from(envelope.to_string()),
        }
    }
}
