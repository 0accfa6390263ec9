//! Provider clients and the simulated model: everything that turns a request body in a
//! provider's dialect (Anthropic's Messages API, also as Amazon Bedrock and Google's Vertex
//! AI host it, or OpenAI's Chat Completions and Embeddings) into that provider's answer. It
//! knows the two wire formats only as far as it must to read usage from replies and
//! streams, and it passes bodies and events through verbatim: translating between the
//! dialects is the gateway's job. The one exception is Google's Gemini API, a third wire
//! format that the `gemini` client hides behind the Anthropic dialect (see `gemini`). It
//! knows nothing of money, API keys, tenants or HTTP serving: the gateway decides what a
//! reply costs and how a failure is shown.

pub mod anthropic;
pub mod bedrock;
mod cloud;
pub mod embeddings;
mod error;
pub mod event_stream;
pub mod gemini;
mod http;
pub mod openai;
pub mod simulated;
pub mod sse;
pub mod vertex;

pub use error::{PassedHeaders, UpstreamError, is_passed_header};
use tollgate_core::usage::TokenUsage;

/// One provider instance, chosen by config. Cheap to clone (shared state sits behind `Arc`).
#[derive(Clone, Debug)]
pub enum Provider {
    Simulated(simulated::Simulated),
    Anthropic(anthropic::AnthropicClient),
    OpenAi(openai::OpenAiClient),
    /// Anthropic's models on Amazon Bedrock.
    Bedrock(bedrock::BedrockClient),
    /// Anthropic's models on Google Cloud's Vertex AI.
    Vertex(vertex::VertexClient),
    /// Google's Gemini API, translated from and to the Anthropic dialect.
    Gemini(gemini::GeminiClient),
}

/// The wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Anthropic's Messages API (`anthropic`, `simulated`, `bedrock`, `vertex`, and
    /// `gemini`, whose client translates).
    Anthropic,
    /// OpenAI's Chat Completions API (`openai`).
    OpenAi,
}

/// A call as the gateway hands it to a provider, in the provider's dialect.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// The exact JSON body to send (the gateway has already put the upstream model id in it).
    pub body: bytes::Bytes,
    pub stream: bool,
    /// Pass-through headers from the client (None = absent); Anthropic dialect only.
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
    /// The client's other headers, forwarded as they came to an upstream of the client's
    /// own dialect (an open list: `anthropic-*`, `x-claude-code-*`, `x-stainless-*`, the
    /// client's user agent, …). The gateway leaves out credentials, hop-by-hop and framing
    /// headers.
    pub client_headers: reqwest::header::HeaderMap,
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
    pub fn dialect(&self) -> Dialect {
        match self {
            Provider::Simulated(_)
            | Provider::Anthropic(_)
            | Provider::Bedrock(_)
            | Provider::Vertex(_)
            | Provider::Gemini(_) => Dialect::Anthropic,
            Provider::OpenAi(_) => Dialect::OpenAi,
        }
    }

    /// `POST /v1/messages` or `POST …/chat/completions`, by the provider's dialect; the body
    /// must be in that dialect. A non-2xx answer is `Err(UpstreamError::Status)`, body
    /// verbatim; replies and events are in the provider's dialect too.
    pub async fn call(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        match self {
            Provider::Simulated(simulated) => simulated.messages(request).await,
            Provider::Anthropic(client) => client.messages(request).await,
            Provider::OpenAi(client) => client.chat_completions(request).await,
            Provider::Bedrock(client) => client.messages(request).await,
            Provider::Vertex(client) => client.messages(request).await,
            Provider::Gemini(client) => client.messages(request).await,
        }
    }

    /// Whether the provider serves embeddings: OpenAI-compatible servers do, and the
    /// simulated model answers them offline; Anthropic's Messages API and its clouds have
    /// none, and Gemini's embeddings are not served yet.
    pub fn embeds(&self) -> bool {
        matches!(
            self,
            Provider::Simulated(_) | Provider::OpenAi(_) | Provider::Gemini(_)
        )
    }

    /// `POST …/embeddings` with an OpenAI Embeddings body (`request.stream` is ignored):
    /// the reply is always whole, its usage `prompt_tokens` as input tokens. A provider
    /// that does not `embeds` answers `Protocol`: the gateway routes no embeddings there.
    pub async fn embeddings(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        match self {
            Provider::Simulated(simulated) => simulated.embeddings(request),
            Provider::OpenAi(client) => client.embeddings(request).await,
            Provider::Gemini(client) => client.embeddings(request).await,
            Provider::Anthropic(_) | Provider::Bedrock(_) | Provider::Vertex(_) => Err(
                UpstreamError::Protocol("this provider serves no embeddings (see embeds)".to_owned()),
            ),
        }
    }

    /// Whether `count_tokens` asks the provider: Anthropic's API, Gemini's `countTokens`, and
    /// the simulated model. The clouds are not asked (their counting endpoints differ from
    /// Anthropic's), nor are OpenAI-compatible servers, which have none: the gateway
    /// estimates for them.
    pub fn counts_tokens(&self) -> bool {
        matches!(
            self,
            Provider::Simulated(_) | Provider::Anthropic(_) | Provider::Gemini(_)
        )
    }

    /// `POST /v1/messages/count_tokens` (Gemini: `:countTokens`); returns `input_tokens`.
    /// `request.stream` is ignored. Chat Completions has no such endpoint: an `OpenAi`
    /// provider answers `Protocol`, and the gateway estimates instead.
    pub async fn count_tokens(&self, request: UpstreamRequest) -> Result<u64, UpstreamError> {
        match self {
            Provider::Simulated(simulated) => simulated.count_tokens(request),
            Provider::Anthropic(client) => client.count_tokens(request).await,
            Provider::Gemini(client) => client.count_tokens(request).await,
            Provider::OpenAi(_) | Provider::Bedrock(_) | Provider::Vertex(_) => Err(UpstreamError::Protocol(
                "this provider is not asked to count tokens (see counts_tokens)".to_owned(),
            )),
        }
    }
}
