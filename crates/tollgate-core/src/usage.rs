//! Token counts by kind, as metered for one request. Owns no prices: `pricing` turns
//! these counts into money.

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
}

impl TokenUsage {
    /// Input tokens that count against an input-tokens-per-minute limit: cache reads don't.
    pub fn rate_limited_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_5m_input_tokens)
            .saturating_add(self.cache_creation_1h_input_tokens)
    }

    /// Every token of the request, whatever its kind.
    pub fn total_tokens(&self) -> u64 {
        self.rate_limited_input_tokens()
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.output_tokens)
    }

    pub fn is_zero(&self) -> bool {
        self.total_tokens() == 0
    }
}
