//! OpenAI's Embeddings wire, as far as the clients that answer it themselves need it: the
//! request read (`EmbeddingsRequest`) and a vector written as OpenAI writes it (`encoded`).
//! The simulated model answers from it, and the `gemini` client translates it to Google's
//! `batchEmbedContents`.

use base64::Engine;
use serde_json::{Value, json};

/// The longest vector asked for that is read (`text-embedding-3-large`'s; Gemini's
/// `gemini-embedding-001` makes as many).
const DIMENSIONS_MAX: usize = 3_072;

/// What an Embeddings request asks for.
#[derive(Debug)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// The items of `input`: a string, an array of token ids, or one of either.
    pub inputs: Vec<Value>,
    /// `dimensions`; `None`: the model's own length.
    pub dimensions: Option<usize>,
    /// `encoding_format: "base64"`; floats otherwise.
    pub base64: bool,
}

impl EmbeddingsRequest {
    /// Reads a body in OpenAI's Embeddings shape; a malformed one is OpenAI's message.
    pub fn parse(body: &[u8]) -> Result<EmbeddingsRequest, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("The request body is not valid JSON: {error}"))?;
        let model = match value.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            _ => return Err("you must provide a model parameter".to_owned()),
        };
        let is_token_ids =
            |items: &[Value]| !items.is_empty() && items.iter().all(|item| item.as_u64().is_some());
        let inputs = match value.get("input") {
            Some(Value::String(text)) => vec![Value::String(text.clone())],
            Some(Value::Array(items)) if is_token_ids(items) => vec![Value::Array(items.clone())],
            Some(Value::Array(items))
                if !items.is_empty()
                    && items.iter().all(|item| match item {
                        Value::String(_) => true,
                        Value::Array(ids) => is_token_ids(ids),
                        _ => false,
                    }) =>
            {
                items.clone()
            }
            _ => {
                return Err(
                    "'input' must be a string, an array of strings, an array of token ids, \
                            or an array of token-id arrays, and not empty"
                        .to_owned(),
                );
            }
        };
        let dimensions = match value.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(dimensions) => match dimensions.as_u64().and_then(|count| usize::try_from(count).ok()) {
                Some(count @ 1..=DIMENSIONS_MAX) => Some(count),
                _ => {
                    return Err(format!(
                        "'dimensions' must be an integer from 1 to {DIMENSIONS_MAX}"
                    ));
                }
            },
        };
        let base64 = match value.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(format)) if format == "float" => false,
            Some(Value::String(format)) if format == "base64" => true,
            Some(_) => return Err("'encoding_format' must be 'float' or 'base64'".to_owned()),
        };
        Ok(EmbeddingsRequest {
            model,
            inputs,
            dimensions,
            base64,
        })
    }
}

/// A vector as OpenAI's reply carries it: with `base64`, the base64 of its little-endian
/// `f32`s (what the official SDKs ask for by default, and decode); otherwise an array of
/// numbers, each the shortest decimal of its `f32`, as OpenAI writes them.
pub fn encoded(vector: &[f32], base64: bool) -> Value {
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
        return Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Value::Array(
        vector
            .iter()
            .map(|value| json!(value.to_string().parse::<f64>().unwrap_or_default()))
            .collect(),
    )
}
