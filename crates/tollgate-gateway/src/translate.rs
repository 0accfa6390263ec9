//! Translation between Anthropic's Messages API and OpenAI's Chat Completions, both ways:
//! request bodies (`request`), whole replies (`reply`) and streams event by event
//! (`stream`); and OpenAI's Responses API over Chat Completions (`responses`). It works on JSON values, keeps only what the other dialect can say, and
//! refuses (400) what it cannot say rather than silently changing a request's meaning.
//! It knows nothing of money: usage is translated for the client, while metering reads the
//! upstream's own usage in `tollgate-upstream`.

pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod responses;
pub(crate) mod stream;

use serde_json::{Value, json};
use tollgate_core::usage::TokenUsage;

/// An Anthropic `stop_reason` as an OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

/// An OpenAI `finish_reason` as an Anthropic `stop_reason`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Our token kinds as an OpenAI `usage` object: every input kind is a prompt token, and
/// cache reads are the cached ones.
pub(crate) fn openai_usage(usage: &TokenUsage) -> Value {
    let prompt_tokens = usage.rate_limited_input_tokens() + usage.cache_read_input_tokens;
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
    })
}

/// Our token kinds as an Anthropic `usage` object.
pub(crate) fn anthropic_usage(usage: &TokenUsage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_5m_input_tokens + usage.cache_creation_1h_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    })
}

/// `chatcmpl-…` for a message id `msg_…`, keeping the unique part.
pub(crate) fn chat_completion_id(message_id: &str) -> String {
    format!(
        "chatcmpl-{}",
        message_id.strip_prefix("msg_").unwrap_or(message_id)
    )
}

/// `msg_…` for a chat completion id `chatcmpl-…`, keeping the unique part.
pub(crate) fn message_id(chat_completion_id: &str) -> String {
    format!(
        "msg_{}",
        chat_completion_id
            .strip_prefix("chatcmpl-")
            .unwrap_or(chat_completion_id)
    )
}

/// An Anthropic error `type` as OpenAI's, for errors inside a stream.
pub(crate) fn openai_error_type(anthropic_type: &str) -> &'static str {
    match anthropic_type {
        "invalid_request_error" | "not_found_error" | "request_too_large" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_exceeded",
        _ => "server_error",
    }
}

/// An OpenAI error `type` as Anthropic's, for errors inside a stream.
pub(crate) fn anthropic_error_type(openai_type: &str) -> &'static str {
    match openai_type {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_exceeded" | "requests" | "tokens" => "rate_limit_error",
        "overloaded" | "overloaded_error" => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests;
