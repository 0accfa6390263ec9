//! The simulated model's embeddings (`POST /v1/embeddings` in OpenAI's shape): one unit
//! vector per input, drawn from a hash of that input alone, so the same text always embeds
//! the same way, in floats or as OpenAI's base64 of little-endian `f32`s. Its usage counts
//! a token per four bytes of text (at least one per input) and one per token id, never more
//! than the body's length: the gateway has reserved on that bound. The fake upstream of the
//! test kit answers with the same shapes (`EmbeddingsRequest`, `embeddings_body`).

use serde_json::{Value, json};
use tollgate_core::usage::TokenUsage;

use crate::embeddings::{EmbeddingsRequest, encoded};
use crate::simulated::{SplitMix64, TextWalk};
use crate::{UpstreamError, UpstreamReply};

/// Vector length when the request sets no `dimensions` (OpenAI's `text-embedding-3-small`).
pub const DIMENSIONS_DEFAULT: usize = 1_536;

/// The Embeddings reply to `request`, naming `model`, with `prompt_tokens` as its usage.
pub fn embeddings_body(request: &EmbeddingsRequest, model: &str, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = request
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = unit_vector(input, request.dimensions.unwrap_or(DIMENSIONS_DEFAULT));
            json!({"object": "embedding", "index": index, "embedding": encoded(&vector, request.base64)})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// Answers an Embeddings body; a malformed one is a 400 in OpenAI's envelope.
pub(crate) fn answer(body: &[u8]) -> Result<UpstreamReply, UpstreamError> {
    let request = EmbeddingsRequest::parse(body).map_err(|message| {
        let envelope = json!({
            "error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}
        });
        UpstreamError::status(400, bytes::Bytes::from(envelope.to_string()))
    })?;
    let tokens: u64 = request
        .inputs
        .iter()
        .map(|input| match input {
            Value::Array(ids) => u64::try_from(ids.len()).unwrap_or(u64::MAX),
            text => u64::try_from(text.as_str().unwrap_or_default().len())
                .unwrap_or(u64::MAX)
                .div_ceil(4)
                .max(1),
        })
        .fold(0, u64::saturating_add);
    let prompt_tokens = tokens.min(u64::try_from(body.len()).unwrap_or(u64::MAX));
    let reply = embeddings_body(&request, &request.model, prompt_tokens);
    Ok(UpstreamReply::Message {
        body: bytes::Bytes::from(reply.to_string()),
        usage: TokenUsage {
            input_tokens: prompt_tokens,
            ..TokenUsage::default()
        },
    })
}

/// A vector of unit length drawn from the input's hash alone.
fn unit_vector(input: &Value, dimensions: usize) -> Vec<f32> {
    let mut walk = TextWalk::new();
    match input {
        Value::String(text) => walk.hash_only(text),
        other => walk.hash_only(&other.to_string()),
    }
    let mut random = SplitMix64(walk.hash);
    // 24 random bits, centred on zero: exact in an f64.
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| (random.next() >> 40) as f64 / f64::from(1_u32 << 23) - 1.0)
        .collect();
    let norm = raw.iter().map(|value| value * value).sum::<f64>().sqrt();
    raw.iter()
        .map(|value| if norm > 0.0 { (value / norm) as f32 } else { 0.0 })
        .collect()
}
