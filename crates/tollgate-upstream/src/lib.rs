//! Provider clients and the simulated model: everything that turns a Messages API request
//! body into a provider's answer. It knows the Anthropic wire format only as far as it must
//! to read usage from replies and streams, and it passes bodies and events through verbatim.
//! It knows nothing of money, API keys, tenants or HTTP serving: the gateway decides what a
//! reply costs and how a failure is shown to the client.

pub mod anthropic;
mod error;
pub mod simulated;
pub mod sse;

pub use error::UpstreamError;
use tollgate_core::usage::TokenUsage;

/// One provider instance, chosen by config. Cheap to clone (shared state sits behind `Arc`).
#[derive(Clone, Debug)]
pub enum Provider {
    Simulated(simulated::Simulated),
    Anthropic(anthropic::AnthropicClient),
}

/// A Messages API call as the gateway hands it to a provider.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// The exact JSON body to send (the gateway has already put the upstream model id in it).
    pub body: bytes::Bytes,
    pub stream: bool,
    /// Pass-through headers from the client (None = absent).
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
    /// Raw query string of the client's request without '?', e.g. "beta=true"; forwarded.
    pub query: Option<String>,
}

/// A provider's successful answer.
pub enum UpstreamReply {
    /// Non-streaming success (2xx): the upstream's JSON body verbatim and its parsed usage.
    Message { body: bytes::Bytes, usage: TokenUsage },
    /// Streaming success: events as they arrive, not buffered.
    Stream(EventStream),
}

impl std::fmt::Debug for UpstreamReply {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamReply::Message { body, usage } => formatter
                .debug_struct("Message")
                .field("body_len", &body.len())
                .field("usage", usage)
                .finish(),
            UpstreamReply::Stream(_) => formatter.write_str("Stream(..)"),
        }
    }
}

/// The events of a streaming reply, in arrival order. An `Err` item ends the stream.
pub type EventStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<sse::SseEvent, UpstreamError>> + Send>>;

impl Provider {
    /// `POST /v1/messages`. A non-2xx answer is `Err(UpstreamError::Status)`, body verbatim.
    pub async fn messages(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        match self {
            Provider::Simulated(simulated) => simulated.messages(request).await,
            Provider::Anthropic(client) => client.messages(request).await,
        }
    }

    /// `POST /v1/messages/count_tokens`; returns `input_tokens`. `request.stream` is ignored.
    pub async fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        match self {
            Provider::Simulated(simulated) => simulated.count_tokens(request),
            Provider::Anthropic(client) => client.count_tokens(request).await,
        }
    }
}
