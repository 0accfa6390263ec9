//! Token counts by kind, and the other units a provider reports in its `usage` object
//! (server-tool requests, the speed that served, where inference ran), as metered for one request. Owns no
//! prices: `pricing` turns these counts into money.

/// Tokens of one request, by the kinds that are priced differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenUsage {
    /// Uncached input tokens (`usage.input_tokens` on the wire).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cache writes with the 5-minute lifetime (the default when the wire gives no split).
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// Web searches the provider ran for the request
    /// (`usage.server_tool_use.web_search_requests`), billed per search.
    pub web_search_requests: u64,
    /// The speed that served the request (`usage.speed`), when the provider said.
    pub speed: Option<Speed>,
    /// Whether inference ran in one geography (`usage.inference_geo` other than
    /// `"global"`), when the provider said: data residency bills a multiple.
    pub resident: Option<bool>,
}

/// The speed a request was served at: fast mode bills a multiple on the models that have it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Speed {
    Standard,
    Fast,
}

impl Speed {
    /// The wire's `speed` value (`"standard"`, `"fast"`); any other value is not a speed.
    pub fn parse(text: &str) -> Option<Speed> {
        match text {
            "standard" => Some(Speed::Standard),
            "fast" => Some(Speed::Fast),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Speed::Standard => "standard",
            Speed::Fast => "fast",
        }
    }
}

impl TokenUsage {
    /// Input tokens that count against an input-tokens-per-minute limit: cache reads don't.
    pub fn rate_limited_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_5m_input_tokens)
            .saturating_add(self.cache_creation_1h_input_tokens)
    }

    /// The prompt's length, as prompt-length price tiers count it: input, cache reads and
    /// cache writes.
    pub fn prompt_tokens(&self) -> u64 {
        self.rate_limited_input_tokens()
            .saturating_add(self.cache_read_input_tokens)
    }

    /// Every token of the request, whatever its kind.
    pub fn total_tokens(&self) -> u64 {
        self.rate_limited_input_tokens()
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.output_tokens)
    }

    pub fn is_zero(&self) -> bool {
        self.total_tokens() == 0 && self.web_search_requests == 0
    }
}

/// Output tokens estimated from generated text (text, thinking and tool-input deltas): four
/// bytes a token, rounded up. Conservative for billing: English prose runs about four
/// characters a token, and code, other scripts and multi-byte text run fewer bytes a
/// token than that, so the estimate tends to fall short of the real count, not above it.
pub fn output_tokens_estimate(generated_bytes: u64) -> u64 {
    generated_bytes.div_ceil(4)
}

/// What a stream's meter saw pass through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamMeasure {
    /// The usage the upstream reported, if it reported any.
    pub reported: Option<TokenUsage>,
    /// Whether the upstream's final count arrived (and the stream was read to its end):
    /// then `reported` is the whole answer's usage.
    pub final_count: bool,
    /// Bytes of generated text, thinking and tool input seen.
    pub generated_bytes: u64,
}

/// The usage to charge for a stream that delivered content. With the upstream's final
/// count, that count. Without it (the stream was cut short, or its server sends no final
/// usage), the larger of what was reported and what was seen generated
/// ([`output_tokens_estimate`]), the estimate capped at `output_tokens_max` (the request's
/// output limit, which bounds the reservation); and when nothing was reported at all, the
/// input as estimated at admission. Never less than the upstream reported, and never more
/// output than `output_tokens_max` unless the upstream itself reported more.
pub fn stream_usage(
    measure: StreamMeasure,
    input_tokens_estimate: u64,
    output_tokens_max: u64,
) -> TokenUsage {
    if measure.final_count
        && let Some(reported) = measure.reported
    {
        return reported;
    }
    let observed_output_tokens = output_tokens_estimate(measure.generated_bytes).min(output_tokens_max);
    match measure.reported {
        Some(reported) => TokenUsage {
            output_tokens: reported.output_tokens.max(observed_output_tokens),
            ..reported
        },
        None if measure.generated_bytes == 0 => TokenUsage::default(),
        None => TokenUsage {
            input_tokens: input_tokens_estimate,
            output_tokens: observed_output_tokens,
            ..TokenUsage::default()
        },
    }
}

#[cfg(test)]
mod tests;
