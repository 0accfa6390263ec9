//! What the clouds that host Anthropic's models (`bedrock`, `vertex`) share: both take the
//! Messages body with the model moved into the URL and an `anthropic_version` of their own
//! in the body, so the gateway hands them the same body as an `anthropic` provider and
//! each client reshapes it here. Owns no credentials and no transport.

use serde_json::{Map, Value};

use crate::UpstreamError;

/// A Messages body taken apart for a cloud: the model id its URL names, and the rest.
pub(crate) struct CloudBody {
    pub(crate) model: String,
    pub(crate) fields: Map<String, Value>,
}

impl CloudBody {
    /// Takes `model` out of a Messages body and sets `anthropic_version` (a version the
    /// client put in the body wins). A body that is not a JSON object with a string model
    /// is refused as Anthropic would refuse it.
    pub(crate) fn parse(body: &[u8], anthropic_version: &str) -> Result<CloudBody, UpstreamError> {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(UpstreamError::invalid_request(
                "The request body is not a JSON object.",
            ));
        };
        let Some(Value::String(model)) = fields.remove("model") else {
            return Err(UpstreamError::invalid_request("model: Field required"));
        };
        fields
            .entry("anthropic_version")
            .or_insert_with(|| Value::from(anthropic_version));
        Ok(CloudBody { model, fields })
    }

    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        // A map of JSON values always serializes.
        bytes::Bytes::from(serde_json::to_vec(&self.fields).unwrap_or_default())
    }
}

/// `text` as one URL path segment: every byte but RFC 3986's unreserved ones
/// percent-encoded, so a model id with `:` or an ARN with `/` stays one segment.
pub(crate) fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The wall-clock time that SigV4 signatures and JWTs carry: the one thing these clients
/// read the clock for, and only for the clouds' own checks of freshness (nothing here
/// decides money or limits).
#[expect(
    clippy::disallowed_methods,
    reason = "the clouds check the request's own timestamp against theirs"
)]
pub(crate) fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
