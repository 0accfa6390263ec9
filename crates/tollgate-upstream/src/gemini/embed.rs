//! OpenAI's Embeddings as Google's `batchEmbedContents`, and back. Each input string becomes
//! one `EmbedContentRequest` (the model named again, as Google requires, `dimensions` as
//! `outputDimensionality`); the reply's vectors become OpenAI's `data`, as numbers passed
//! through as Google wrote them or, when the client asked for base64 (the official SDKs'
//! default), as the base64 of their `f32`s. Token-id inputs are refused with a 400: Gemini
//! embeds text only. What the reply is billed by is `usageMetadata.promptTokenCount` when
//! Google reports it; otherwise the client asks `countTokens` for the same texts
//! (`count_body`).

use serde_json::{Map, Value, json};

use crate::UpstreamError;
use crate::embeddings::{EmbeddingsRequest, encoded};

/// An Embeddings body taken apart for Gemini.
#[derive(Debug)]
pub(crate) struct EmbedCall {
    /// The model the URL names, without Google's `models/`.
    pub(crate) model: String,
    /// The `batchEmbedContents` body.
    pub(crate) body: Value,
    /// The `countTokens` body over the same texts.
    pub(crate) count_body: Value,
    /// How many vectors the reply must carry.
    pub(crate) inputs: usize,
    /// Whether the client asked for base64.
    pub(crate) base64: bool,
    /// The texts' UTF-8 bytes: no tokenizer makes more tokens than that, so it bounds what
    /// the texts can be billed when Google cannot be asked.
    pub(crate) text_bytes: u64,
}

/// Translates an Embeddings body; what Gemini cannot embed is refused as a 400.
pub(crate) fn to_batch_embed(body: &[u8]) -> Result<EmbedCall, UpstreamError> {
    let request =
        EmbeddingsRequest::parse(body).map_err(|message| UpstreamError::invalid_request(&message))?;
    let model = request
        .model
        .strip_prefix("models/")
        .unwrap_or(&request.model)
        .to_owned();
    let mut texts = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let Value::String(text) = input else {
            return Err(UpstreamError::invalid_request(
                "'input' must be a string or an array of strings: this model embeds text, not token ids",
            ));
        };
        texts.push(text.as_str());
    }
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut embed = Map::new();
            embed.insert("model".to_owned(), json!(format!("models/{model}")));
            embed.insert("content".to_owned(), json!({"parts": [{"text": text}]}));
            if let Some(dimensions) = request.dimensions {
                embed.insert("outputDimensionality".to_owned(), json!(dimensions));
            }
            Value::Object(embed)
        })
        .collect();
    let parts: Vec<Value> = texts.iter().map(|text| json!({"text": text})).collect();
    let text_bytes = texts
        .iter()
        .map(|text| u64::try_from(text.len()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    Ok(EmbedCall {
        model,
        body: json!({ "requests": requests }),
        count_body: json!({"contents": [{"role": "user", "parts": parts}]}),
        inputs: texts.len(),
        base64: request.base64,
        text_bytes,
    })
}

/// The `batchEmbedContents` reply as OpenAI's, naming `call.model`, and the prompt tokens
/// Google reported, if it did. The reply must carry one vector of numbers per input.
pub(crate) fn to_openai(reply: &Value, call: &EmbedCall) -> Result<(Value, Option<u64>), UpstreamError> {
    let protocol = |what: &str| UpstreamError::Protocol(format!("batchEmbedContents reply {what}"));
    let embeddings = reply
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| protocol("has no embeddings"))?;
    if embeddings.len() != call.inputs {
        return Err(protocol(&format!(
            "has {} embeddings for {} inputs",
            embeddings.len(),
            call.inputs
        )));
    }
    let mut data = Vec::with_capacity(embeddings.len());
    for (index, embedding) in embeddings.iter().enumerate() {
        let values = embedding
            .get("values")
            .and_then(Value::as_array)
            .filter(|values| values.iter().all(Value::is_number))
            .ok_or_else(|| protocol(&format!("embedding {index} has no vector of numbers")))?;
        let vector = if call.base64 {
            // Google's values are `float`s written in decimal: as `f32` they are exact again.
            let floats: Vec<f32> = values
                .iter()
                .map(|value| value.as_f64().unwrap_or_default() as f32)
                .collect();
            encoded(&floats, true)
        } else {
            Value::Array(values.clone())
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": vector}));
    }
    let reported = reply
        .pointer("/usageMetadata/promptTokenCount")
        .and_then(Value::as_u64);
    let tokens = reported.unwrap_or(0);
    let body = json!({
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((body, reported))
}

/// Writes the prompt tokens into an OpenAI reply made before they were known.
pub(crate) fn with_prompt_tokens(mut body: Value, tokens: u64) -> Value {
    body["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    body
}
