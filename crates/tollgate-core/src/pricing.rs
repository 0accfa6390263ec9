//! Prices per token kind and the cost of a request. Prices are integer nano-USD per
//! token, so $1 per million tokens is 1,000 and every cost is an exact product. Some
//! providers also bill units other than tokens (a flat fee per request, a fee per image);
//! those are whole nano-USD amounts on the same `ModelPrices`.

use crate::money::{MoneyParseError, NanoUsd};
use crate::usage::TokenUsage;

/// Nano-USD per token of one kind. $1/MTok = 1,000; the smallest price is $0.001/MTok.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenPrice(NanoUsd);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceParseError {
    #[error(transparent)]
    Money(#[from] MoneyParseError),
    #[error("price '{0}' must not be negative")]
    Negative(String),
    #[error("price '{0}' per million tokens is finer than $0.001")]
    TooPrecise(String),
}

const TOKENS_PER_MTOK: i64 = 1_000_000;

impl TokenPrice {
    pub const fn from_nanos_per_token(nanos: i64) -> TokenPrice {
        TokenPrice(NanoUsd::from_nanos(nanos))
    }

    /// Parses a price in USD per million tokens ("3.75").
    pub fn parse_usd_per_mtok(text: &str) -> Result<TokenPrice, PriceParseError> {
        let per_mtok = NanoUsd::parse_usd(text)?;
        if per_mtok.is_negative() {
            return Err(PriceParseError::Negative(text.to_owned()));
        }
        if per_mtok.nanos() % TOKENS_PER_MTOK != 0 {
            return Err(PriceParseError::TooPrecise(text.to_owned()));
        }
        Ok(TokenPrice(NanoUsd::from_nanos(
            per_mtok.nanos() / TOKENS_PER_MTOK,
        )))
    }

    pub fn nanos_per_token(self) -> i64 {
        self.0.nanos()
    }

    /// The price per million tokens, for display ("$3.75").
    pub fn per_mtok(self) -> NanoUsd {
        self.0.saturating_mul(TOKENS_PER_MTOK as u64)
    }

    fn cost(self, tokens: u64) -> Option<NanoUsd> {
        self.0.checked_mul(tokens)
    }

    /// This price scaled by `numerator / denominator`, when exact (cache multipliers).
    fn scaled(self, numerator: i64, denominator: i64) -> Option<TokenPrice> {
        let scaled = self.0.nanos().checked_mul(numerator)?;
        (scaled % denominator == 0).then(|| TokenPrice::from_nanos_per_token(scaled / denominator))
    }
}

/// The cache prices that, derived from an input price by the contract's rules, would not
/// be a whole number of nano-USD per token, by their configuration names (`cache_write_5m`,
/// `cache_write_1h`, `cache_read`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} derived from input would not be whole nano-USD per token", .0.join(", "))]
pub struct InexactCachePrices(pub Vec<&'static str>);

/// One model's prices by token kind, and by the units some providers bill besides tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelPrices {
    pub input: TokenPrice,
    pub output: TokenPrice,
    pub cache_write_5m: TokenPrice,
    pub cache_write_1h: TokenPrice,
    pub cache_read: TokenPrice,
    /// A flat charge for every delivered request (zero for token-only pricing).
    pub per_request: NanoUsd,
    /// A charge per image in the request. Token usage cannot carry an image count, so
    /// [`ModelPrices::cost`] does not read it: [`ModelPrices::for_request`] folds it into
    /// `per_request` once the request's images are counted.
    pub per_image: NanoUsd,
}

impl ModelPrices {
    /// Prices from input and output alone, by the contract's cache rules: a 5-minute cache
    /// write costs 1.25 × input, a 1-hour write 2 × input, a cache read 0.1 × input.
    /// `None` when a derived price would not be a whole number of nano-USD per token.
    pub fn from_input_output(input: TokenPrice, output: TokenPrice) -> Option<ModelPrices> {
        ModelPrices::with_cache_prices(input, output, None, None, None).ok()
    }

    /// Prices from input and output with the cache prices given, each one that is `None`
    /// derived from input by the contract's cache rules (as `from_input_output` does). A
    /// given price is used as is, so only a derived one can fail to be a whole number of
    /// nano-USD per token: the error names every such one.
    pub fn with_cache_prices(
        input: TokenPrice,
        output: TokenPrice,
        cache_write_5m: Option<TokenPrice>,
        cache_write_1h: Option<TokenPrice>,
        cache_read: Option<TokenPrice>,
    ) -> Result<ModelPrices, InexactCachePrices> {
        let mut inexact = Vec::new();
        let mut price_or_derived = |name: &'static str, given: Option<TokenPrice>, numerator, denominator| {
            given
                .or_else(|| input.scaled(numerator, denominator))
                .unwrap_or_else(|| {
                    inexact.push(name);
                    TokenPrice::default()
                })
        };
        let prices = ModelPrices {
            input,
            output,
            cache_write_5m: price_or_derived("cache_write_5m", cache_write_5m, 5, 4),
            cache_write_1h: price_or_derived("cache_write_1h", cache_write_1h, 2, 1),
            cache_read: price_or_derived("cache_read", cache_read, 1, 10),
            per_request: NanoUsd::ZERO,
            per_image: NanoUsd::ZERO,
        };
        if inexact.is_empty() {
            Ok(prices)
        } else {
            Err(InexactCachePrices(inexact))
        }
    }

    /// The prices of one request carrying `images` images: the per-image charge is folded
    /// into the per-request charge, so that `cost` and `cost_bound` of the result include
    /// it. `None` on overflow.
    pub fn for_request(&self, images: u64) -> Option<ModelPrices> {
        let image_charge = self.per_image.checked_mul(images)?;
        Some(ModelPrices {
            per_request: self.per_request.checked_add(image_charge)?,
            per_image: NanoUsd::ZERO,
            ..*self
        })
    }

    /// The exact cost of `usage`, plus the per-request charge; `None` only on overflow
    /// (beyond $9 billion). Only delivered requests are costed, so the flat charge applies
    /// to every request that gets here.
    pub fn cost(&self, usage: &TokenUsage) -> Option<NanoUsd> {
        let parts = [
            self.input.cost(usage.input_tokens)?,
            self.output.cost(usage.output_tokens)?,
            self.cache_write_5m.cost(usage.cache_creation_5m_input_tokens)?,
            self.cache_write_1h.cost(usage.cache_creation_1h_input_tokens)?,
            self.cache_read.cost(usage.cache_read_input_tokens)?,
            self.per_request,
        ];
        parts
            .into_iter()
            .try_fold(NanoUsd::ZERO, |total, part| total.checked_add(part))
    }

    /// The most a request can cost with at most `input_tokens_max` input tokens of any kind
    /// and `output_tokens_max` output tokens: every input token is priced as the dearest
    /// input kind, since the split between cache reads, writes and uncached input is not
    /// known before the upstream answers. The per-request charge is included; fold the
    /// per-image charge in first (`for_request`). Saturates, so it is always an upper bound.
    pub fn cost_bound(&self, input_tokens_max: u64, output_tokens_max: u64) -> NanoUsd {
        let dearest_input = [
            self.input,
            self.cache_write_5m,
            self.cache_write_1h,
            self.cache_read,
        ]
        .into_iter()
        .max()
        .unwrap_or(self.input);
        dearest_input
            .0
            .saturating_mul(input_tokens_max)
            .saturating_add(self.output.0.saturating_mul(output_tokens_max))
            .saturating_add(self.per_request)
    }
}

#[cfg(test)]
mod tests;

/// Tokens of fixed overhead a provider may add to any request (tool-use system prompt and
/// message framing), on top of what the body itself can encode to.
pub const INPUT_TOKENS_OVERHEAD: u64 = 1_024;
/// The most input tokens one image block can cost (images are resized to about 1.15
/// megapixels, about 1,600 tokens), whatever size its encoding has in the body.
pub const INPUT_TOKENS_PER_MEDIA_BLOCK: u64 = 1_600;

/// An upper bound on the input tokens of a request body of `body_bytes` bytes with
/// `media_blocks` image blocks. A token never encodes less than one byte of text, so the
/// body's length bounds the text; media fetched by URL are bounded per block.
pub fn input_tokens_bound(body_bytes: usize, media_blocks: usize) -> u64 {
    (body_bytes as u64)
        .saturating_add(INPUT_TOKENS_OVERHEAD)
        .saturating_add(INPUT_TOKENS_PER_MEDIA_BLOCK.saturating_mul(media_blocks as u64))
}

/// What a request body of `body_bytes` bytes is expected to encode to, for rate-limit
/// admission: about four bytes of JSON per token. Corrected to the actual count when the
/// request ends, so the estimate only decides admission, never the charge.
pub fn input_tokens_estimate(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(4)
}
