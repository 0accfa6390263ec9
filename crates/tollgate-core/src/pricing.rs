//! Prices per token kind and the cost of a request. Prices are integer nano-USD per
//! token, so $1 per million tokens is 1,000 and every token cost is an exact product. Some
//! providers also bill units other than tokens (a flat fee per request, a fee per image, a
//! fee per web search); those are nano-USD amounts on the same `ModelPrices`.
//!
//! The price of one request, in order: the model's prices in force when it was admitted
//! ([`PriceSchedule::at`]); the prompt-length tier its prompt reached
//! ([`ModelPrices::rates`]); its token cost at those rates; the multipliers that applied
//! ([`Multipliers`]: fast mode, data residency, batch) on the token cost, stacked as one
//! exact fraction; then the web searches; the sum rounded up to a whole nano-dollar once.
//! Multiplication commutes and nothing is rounded before the end, so the order of the
//! multipliers does not change the result. Pure: the caller passes `now`.

use crate::Timestamp;
use crate::money::{MoneyParseError, NanoUsd};
use crate::usage::{Speed, TokenUsage};

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

    /// This price scaled by `numerator / denominator` (the contract's cache multipliers),
    /// rounded up to a whole nano-USD per token so that a derived price never under-bills:
    /// $0.15/MTok input derives a 5-minute cache write of 188 nanos a token, not 187.5.
    fn scaled_up(self, numerator: i64, denominator: i64) -> TokenPrice {
        let scaled = i128::from(self.0.nanos()) * i128::from(numerator);
        let rounded = scaled.div_euclid(i128::from(denominator))
            + i128::from(scaled.rem_euclid(i128::from(denominator)) != 0);
        TokenPrice::from_nanos_per_token(i64::try_from(rounded).unwrap_or(i64::MAX))
    }
}

/// One model's prices by token kind, and by the units some providers bill besides tokens.
/// The five token prices are the base rates: a prompt-length tier may replace some of them
/// for a long prompt ([`ModelPrices::rates`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelPrices {
    pub input: TokenPrice,
    pub output: TokenPrice,
    pub cache_write_5m: TokenPrice,
    pub cache_write_1h: TokenPrice,
    pub cache_read: TokenPrice,
    /// Higher rates for long prompts, by ascending threshold: a request whose prompt
    /// (input + cache reads + cache writes) is longer than a tier's threshold is billed at
    /// that tier's rates on every token, output included.
    pub prompt_tiers: Vec<PromptTier>,
    /// What fast mode multiplies the token cost by, on a model that offers it; `None`
    /// for a model without fast mode, whose requests are billed at standard rates.
    pub fast_multiplier: Option<Multiplier>,
    /// Whether the model takes `inference_geo` (data residency: Opus 4.6 and the models
    /// after it). A request to it is reserved for at the residency rate, since the provider
    /// may keep inference in one geography by its own workspace default; it is billed so
    /// when the upstream reports so (`usage.inference_geo`), or, when it reports nothing,
    /// when the request asked for it. On other models a request's `inference_geo` bills
    /// nothing unless the upstream reports residency.
    pub data_residency: bool,
    /// The charge per thousand web searches (`usage.server_tool_use.web_search_requests`).
    pub web_search_per_thousand: NanoUsd,
    /// A flat charge for every delivered request (zero for token-only pricing).
    pub per_request: NanoUsd,
    /// A charge per image in the request. Token usage cannot carry an image count, so
    /// [`ModelPrices::cost`] does not read it: [`ModelPrices::for_request`] folds it into
    /// `per_request` once the request's images are counted.
    pub per_image: NanoUsd,
}

/// The price of each token kind at one rate (a model's base rates, or a tier's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenRates {
    pub input: TokenPrice,
    pub output: TokenPrice,
    pub cache_write_5m: TokenPrice,
    pub cache_write_1h: TokenPrice,
    pub cache_read: TokenPrice,
}

impl TokenRates {
    /// The exact cost of `usage`'s tokens at these rates, in nano-USD.
    pub fn token_cost(&self, usage: &TokenUsage) -> i128 {
        [
            (self.input, usage.input_tokens),
            (self.output, usage.output_tokens),
            (self.cache_write_5m, usage.cache_creation_5m_input_tokens),
            (self.cache_write_1h, usage.cache_creation_1h_input_tokens),
            (self.cache_read, usage.cache_read_input_tokens),
        ]
        .into_iter()
        .map(|(price, tokens)| i128::from(price.nanos_per_token()) * i128::from(tokens))
        .sum()
    }

    /// The dearest of each kind in `self` and `other`.
    fn dearest(self, other: TokenRates) -> TokenRates {
        TokenRates {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_write_5m: self.cache_write_5m.max(other.cache_write_5m),
            cache_write_1h: self.cache_write_1h.max(other.cache_write_1h),
            cache_read: self.cache_read.max(other.cache_read),
        }
    }

    fn dearest_input(&self) -> TokenPrice {
        self.input
            .max(self.cache_write_5m)
            .max(self.cache_write_1h)
            .max(self.cache_read)
    }
}

/// A prompt-length tier: the rates of a request whose prompt is longer than
/// `above_prompt_tokens`. A kind the tier does not set keeps the model's base rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PromptTier {
    pub above_prompt_tokens: u64,
    pub input: Option<TokenPrice>,
    pub output: Option<TokenPrice>,
    pub cache_write_5m: Option<TokenPrice>,
    pub cache_write_1h: Option<TokenPrice>,
    pub cache_read: Option<TokenPrice>,
}

impl PromptTier {
    fn over(&self, base: TokenRates) -> TokenRates {
        TokenRates {
            input: self.input.unwrap_or(base.input),
            output: self.output.unwrap_or(base.output),
            cache_write_5m: self.cache_write_5m.unwrap_or(base.cache_write_5m),
            cache_write_1h: self.cache_write_1h.unwrap_or(base.cache_write_1h),
            cache_read: self.cache_read.unwrap_or(base.cache_read),
        }
    }
}

/// An exact non-negative factor, `numerator / denominator`, kept in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Multiplier {
    numerator: u64,
    denominator: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultiplierParseError {
    #[error("multiplier '{0}' is not a decimal number of at most nine decimals")]
    Malformed(String),
    #[error("multiplier '{0}' must be more than zero")]
    NotPositive(String),
}

impl Multiplier {
    pub const ONE: Multiplier = Multiplier::new(1, 1);
    /// The Batch API's discount: 50 % of the standard rates.
    pub const BATCH: Multiplier = Multiplier::new(1, 2);
    /// Data residency: inference kept in one geography (`inference_geo` other than
    /// `"global"`) bills 1.1 × on every token kind.
    pub const DATA_RESIDENCY: Multiplier = Multiplier::new(11, 10);

    /// `numerator / denominator` in lowest terms; a zero denominator reads as one.
    pub const fn new(numerator: u64, denominator: u64) -> Multiplier {
        let denominator = if denominator == 0 { 1 } else { denominator };
        let divisor = gcd(numerator, denominator);
        Multiplier {
            numerator: numerator / divisor,
            denominator: denominator / divisor,
        }
    }

    /// Parses a decimal factor exactly ("6", "1.1", "0.5").
    pub fn parse(text: &str) -> Result<Multiplier, MultiplierParseError> {
        let malformed = || MultiplierParseError::Malformed(text.to_owned());
        if text.trim().starts_with(['-', '$']) {
            return Err(malformed());
        }
        let nanos = NanoUsd::parse_usd(text).map_err(|_| malformed())?.nanos();
        let numerator = u64::try_from(nanos).map_err(|_| malformed())?;
        if numerator == 0 {
            return Err(MultiplierParseError::NotPositive(text.to_owned()));
        }
        Ok(Multiplier::new(numerator, crate::money::NANOS_PER_USD as u64))
    }

    pub fn numerator(self) -> u64 {
        self.numerator
    }

    pub fn denominator(self) -> u64 {
        self.denominator
    }

    /// The product of two factors, `None` when it does not fit.
    pub fn checked_mul(self, other: Multiplier) -> Option<Multiplier> {
        // Cross-reduced first, so that stacking the usual factors never grows them.
        let left = gcd(self.numerator, other.denominator).max(1);
        let right = gcd(other.numerator, self.denominator).max(1);
        Some(Multiplier::new(
            (self.numerator / left).checked_mul(other.numerator / right)?,
            (self.denominator / right).checked_mul(other.denominator / left)?,
        ))
    }
}

const fn gcd(mut left: u64, mut right: u64) -> u64 {
    while right != 0 {
        let rest = left % right;
        left = right;
        right = rest;
    }
    if left == 0 { 1 } else { left }
}

/// The multipliers asked for (by the request, or by the caller that runs it) or applied (as
/// a charge records them). Stacked on the token cost as one exact fraction, rounded up once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Multipliers {
    /// Run through the Batch API: [`Multiplier::BATCH`].
    pub batch: bool,
    /// Fast mode (`speed: "fast"`): the model's own `fast_multiplier`, on models that have
    /// one; ignored on the others.
    pub fast: bool,
    /// Data residency (`inference_geo` other than `"global"`): [`Multiplier::DATA_RESIDENCY`].
    pub geo: bool,
}

impl Multipliers {
    /// As records name them: `batch`, `fast` and `geo`, those that are set, joined by `,`;
    /// empty for none.
    pub fn label(self) -> String {
        [(self.batch, "batch"), (self.fast, "fast"), (self.geo, "geo")]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads [`Multipliers::label`] back; `None` for a name it does not know.
    pub fn parse_label(text: &str) -> Option<Multipliers> {
        let mut multipliers = Multipliers::default();
        for name in text.split(',').filter(|name| !name.is_empty()) {
            match name {
                "batch" => multipliers.batch = true,
                "fast" => multipliers.fast = true,
                "geo" => multipliers.geo = true,
                _ => return None,
            }
        }
        Some(multipliers)
    }

    /// Whether a request's `inference_geo` bills data residency: any geography but
    /// `"global"` (Anthropic's default) does.
    pub fn is_residency_geo(inference_geo: &str) -> bool {
        inference_geo != "global"
    }
}

/// What one request costs, and which multipliers applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    pub cost: NanoUsd,
    pub applied: Multipliers,
    /// The cost by what it paid for, at the rates applied; they add up to `cost` less the
    /// per-request charge, exactly.
    pub lines: CostLines,
}

/// A charge by what it paid for: each token kind at the rates the request was billed
/// (its prompt's tier, the multipliers that applied), and its web searches. Each line is
/// its exact share rounded down, and the one rounding up of the whole goes, nano-dollar by
/// nano-dollar, to the lines with the largest remainders, so the lines add up to the charge
/// exactly and a cost report need not reprice anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CostLines {
    pub input: NanoUsd,
    pub output: NanoUsd,
    pub cache_write_5m: NanoUsd,
    pub cache_write_1h: NanoUsd,
    pub cache_read: NanoUsd,
    pub web_search: NanoUsd,
}

impl CostLines {
    /// The lines in a fixed order: input, output, 5-minute and 1-hour cache writes, cache
    /// reads, web searches.
    pub fn to_array(self) -> [NanoUsd; 6] {
        [
            self.input,
            self.output,
            self.cache_write_5m,
            self.cache_write_1h,
            self.cache_read,
            self.web_search,
        ]
    }

    /// The lines from [`CostLines::to_array`]'s order.
    pub fn from_array(lines: [NanoUsd; 6]) -> CostLines {
        let [
            input,
            output,
            cache_write_5m,
            cache_write_1h,
            cache_read,
            web_search,
        ] = lines;
        CostLines {
            input,
            output,
            cache_write_5m,
            cache_write_1h,
            cache_read,
            web_search,
        }
    }

    /// The sum of the lines, `None` on overflow.
    pub fn total(self) -> Option<NanoUsd> {
        self.to_array()
            .into_iter()
            .try_fold(NanoUsd::ZERO, NanoUsd::checked_add)
    }

    /// These lines and `other`'s, line by line; `None` on overflow.
    pub fn checked_add(self, other: CostLines) -> Option<CostLines> {
        let mut sum = self.to_array();
        for (line, more) in sum.iter_mut().zip(other.to_array()) {
            *line = line.checked_add(more)?;
        }
        Some(CostLines::from_array(sum))
    }
}

/// Splits `numerators / denominator` rounded up as a whole into whole lines: each rounded
/// down, then one more nano-dollar to each of the lines with the largest remainders (the
/// first on ties) until they add up to the whole. `None` on overflow.
fn apportion(numerators: [i128; 6], denominator: i128) -> Option<[NanoUsd; 6]> {
    let total: i128 = numerators.iter().sum();
    let whole = total.div_euclid(denominator) + i128::from(total.rem_euclid(denominator) != 0);
    let mut lines = numerators.map(|numerator| numerator.div_euclid(denominator));
    let mut short = whole - lines.iter().sum::<i128>();
    let mut by_remainder: Vec<usize> = (0..numerators.len()).collect();
    by_remainder.sort_by_key(|&index| std::cmp::Reverse(numerators[index].rem_euclid(denominator)));
    for index in by_remainder {
        if short <= 0 {
            break;
        }
        if numerators[index].rem_euclid(denominator) != 0 {
            lines[index] += 1;
            short -= 1;
        }
    }
    let mut out = [NanoUsd::ZERO; 6];
    for (slot, nanos) in out.iter_mut().zip(lines) {
        *slot = NanoUsd::from_nanos(i64::try_from(nanos).ok()?);
    }
    Some(out)
}

impl ModelPrices {
    /// Prices from input and output alone, by the contract's cache rules: a 5-minute cache
    /// write costs 1.25 × input, a 1-hour write 2 × input, a cache read 0.1 × input, each
    /// rounded up to a whole nano-USD per token.
    pub fn from_input_output(input: TokenPrice, output: TokenPrice) -> ModelPrices {
        ModelPrices::with_cache_prices(input, output, None, None, None)
    }

    /// Prices from input and output with the cache prices given: a given price is used
    /// as is; each one that is `None` is derived from input by the contract's cache rules,
    /// rounded up to a whole nano-USD per token (as `from_input_output` does).
    pub fn with_cache_prices(
        input: TokenPrice,
        output: TokenPrice,
        cache_write_5m: Option<TokenPrice>,
        cache_write_1h: Option<TokenPrice>,
        cache_read: Option<TokenPrice>,
    ) -> ModelPrices {
        ModelPrices {
            input,
            output,
            cache_write_5m: cache_write_5m.unwrap_or_else(|| input.scaled_up(5, 4)),
            cache_write_1h: cache_write_1h.unwrap_or_else(|| input.scaled_up(2, 1)),
            cache_read: cache_read.unwrap_or_else(|| input.scaled_up(1, 10)),
            prompt_tiers: Vec::new(),
            fast_multiplier: None,
            data_residency: false,
            web_search_per_thousand: NanoUsd::ZERO,
            per_request: NanoUsd::ZERO,
            per_image: NanoUsd::ZERO,
        }
    }

    /// The base rates, for a prompt no tier reaches.
    pub fn base_rates(&self) -> TokenRates {
        TokenRates {
            input: self.input,
            output: self.output,
            cache_write_5m: self.cache_write_5m,
            cache_write_1h: self.cache_write_1h,
            cache_read: self.cache_read,
        }
    }

    /// The rates of a request whose prompt is `prompt_tokens` long: those of the highest
    /// tier whose threshold it passes, else the base rates.
    pub fn rates(&self, prompt_tokens: u64) -> TokenRates {
        self.prompt_tiers
            .iter()
            .filter(|tier| prompt_tokens > tier.above_prompt_tokens)
            .max_by_key(|tier| tier.above_prompt_tokens)
            .map_or(self.base_rates(), |tier| tier.over(self.base_rates()))
    }

    /// The prices of one request carrying `images` images: the per-image charge is folded
    /// into the per-request charge, so that `cost` and `cost_bound` of the result include
    /// it. `None` on overflow.
    pub fn for_request(&self, images: u64) -> Option<ModelPrices> {
        let image_charge = self.per_image.checked_mul(images)?;
        Some(ModelPrices {
            per_request: self.per_request.checked_add(image_charge)?,
            per_image: NanoUsd::ZERO,
            ..self.clone()
        })
    }

    /// The multipliers that apply to a request that asked for `requested`, served as
    /// `usage` says: fast mode when the upstream says it served fast (or, when it says
    /// nothing, when the request asked for it), and only on a model that has fast mode;
    /// data residency when the upstream says inference stayed in one geography (or, when
    /// it says nothing, when the request asked for it of a model that offers it).
    pub fn applied(&self, usage: &TokenUsage, requested: Multipliers) -> Multipliers {
        let fast = match usage.speed {
            Some(speed) => speed == Speed::Fast,
            None => requested.fast,
        };
        let geo = match usage.resident {
            Some(resident) => resident,
            None => requested.geo && self.data_residency,
        };
        Multipliers {
            fast: fast && self.fast_multiplier.is_some(),
            geo,
            ..requested
        }
    }

    /// The stacked factor of `applied`, `None` when it does not fit.
    fn factor(&self, applied: Multipliers) -> Option<Multiplier> {
        let mut factor = Multiplier::ONE;
        if applied.fast
            && let Some(fast) = self.fast_multiplier
        {
            factor = factor.checked_mul(fast)?;
        }
        if applied.geo {
            factor = factor.checked_mul(Multiplier::DATA_RESIDENCY)?;
        }
        if applied.batch {
            factor = factor.checked_mul(Multiplier::BATCH)?;
        }
        Some(factor)
    }

    /// The exact charge for `usage` of a request that asked for `requested`: the tokens at
    /// the rates of the prompt's tier, times the multipliers that applied, plus the web
    /// searches (not multiplied: they are not token charges), rounded up to a whole nano-USD
    /// once; plus the per-request charge. `None` only on overflow (beyond $9 billion).
    /// Only delivered requests are charged, so the flat charge applies to every request
    /// that gets here.
    pub fn charge(&self, usage: &TokenUsage, requested: Multipliers) -> Option<Charge> {
        let applied = self.applied(usage, requested);
        let factor = self.factor(applied)?;
        let rates = self.rates(usage.prompt_tokens());
        // tokens × n / d + searches × per_thousand / 1000, over one denominator, line by line.
        let denominator = i128::from(factor.denominator).checked_mul(1_000)?;
        let token_line = |price: TokenPrice, tokens: u64| {
            i128::from(price.nanos_per_token())
                .checked_mul(i128::from(tokens))?
                .checked_mul(i128::from(factor.numerator))?
                .checked_mul(1_000)
        };
        let numerators = [
            token_line(rates.input, usage.input_tokens)?,
            token_line(rates.output, usage.output_tokens)?,
            token_line(rates.cache_write_5m, usage.cache_creation_5m_input_tokens)?,
            token_line(rates.cache_write_1h, usage.cache_creation_1h_input_tokens)?,
            token_line(rates.cache_read, usage.cache_read_input_tokens)?,
            i128::from(self.web_search_per_thousand.nanos())
                .checked_mul(i128::from(usage.web_search_requests))?
                .checked_mul(i128::from(factor.denominator))?,
        ];
        numerators
            .iter()
            .try_fold(0_i128, |sum, line| sum.checked_add(*line))?;
        let lines = CostLines::from_array(apportion(numerators, denominator)?);
        let cost = lines.total()?.checked_add(self.per_request)?;
        Some(Charge { cost, applied, lines })
    }

    /// The most `searches` web searches can add to a charge: their price, rounded up. The
    /// caller adds it to [`ModelPrices::cost_bound`] for a request that declares how many
    /// searches it allows (`max_uses` of its web search tools).
    pub fn web_search_bound(&self, searches: u64) -> NanoUsd {
        let nanos = i128::from(self.web_search_per_thousand.nanos()) * i128::from(searches);
        let rounded_up = nanos.div_euclid(1_000) + i128::from(nanos.rem_euclid(1_000) != 0);
        NanoUsd::from_nanos(i64::try_from(rounded_up).unwrap_or(i64::MAX))
    }

    /// The charge's amount alone (see [`ModelPrices::charge`]).
    pub fn cost(&self, usage: &TokenUsage, requested: Multipliers) -> Option<NanoUsd> {
        self.charge(usage, requested).map(|charge| charge.cost)
    }

    /// The most a request that asked for `requested` can cost with at most
    /// `input_tokens_max` prompt tokens of any kind and `output_tokens_max` output tokens:
    /// at the dearest rates of every tier the prompt could reach, every input token priced
    /// as the dearest input kind (the split between cache reads, writes and uncached input
    /// is not known before the upstream answers), times the requested multipliers. The
    /// per-request charge is included; fold the per-image charge in first (`for_request`).
    /// Web searches are not: see [`ModelPrices::web_search_bound`].
    /// Saturates, so it is always an upper bound.
    pub fn cost_bound(
        &self,
        input_tokens_max: u64,
        output_tokens_max: u64,
        requested: Multipliers,
    ) -> NanoUsd {
        let rates = self
            .prompt_tiers
            .iter()
            .filter(|tier| input_tokens_max > tier.above_prompt_tokens)
            .fold(self.base_rates(), |rates, tier| {
                rates.dearest(tier.over(self.base_rates()))
            });
        let tokens = i128::from(rates.dearest_input().nanos_per_token()) * i128::from(input_tokens_max)
            + i128::from(rates.output.nanos_per_token()) * i128::from(output_tokens_max);
        // Residency is reserved for whenever the upstream could report it: asked for, or
        // a model that offers it (the provider's own default may apply).
        let requested = Multipliers {
            fast: requested.fast && self.fast_multiplier.is_some(),
            geo: requested.geo || self.data_residency,
            ..requested
        };
        let bound = self.factor(requested).and_then(|factor| {
            let numerator = tokens.checked_mul(i128::from(factor.numerator))?;
            let denominator = i128::from(factor.denominator);
            let rounded_up =
                numerator.div_euclid(denominator) + i128::from(numerator.rem_euclid(denominator) != 0);
            i64::try_from(rounded_up).ok()
        });
        match bound {
            Some(nanos) => NanoUsd::from_nanos(nanos).saturating_add(self.per_request),
            None => NanoUsd::MAX,
        }
    }
}

/// A model's prices over time: each entry is in force from its `from` (a whole UTC hour)
/// until the next one's. A request is priced at the entry in force when it was admitted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PriceSchedule {
    /// Never empty; `from` strictly ascending.
    entries: Vec<(Timestamp, ModelPrices)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceScheduleError {
    #[error("a price schedule needs at least one entry")]
    Empty,
    #[error("prices change at {0}, which is not a whole UTC hour")]
    NotOnTheHour(Timestamp),
    #[error("prices change twice at {0}, or out of order")]
    OutOfOrder(Timestamp),
}

impl PriceSchedule {
    /// Prices that never change.
    pub fn constant(prices: ModelPrices) -> PriceSchedule {
        PriceSchedule {
            entries: vec![(chrono::DateTime::UNIX_EPOCH, prices)],
        }
    }

    /// A schedule from `(from, prices)` entries in order. The first entry also prices any
    /// request admitted before its `from`, so that the schedule prices every instant.
    pub fn new(entries: Vec<(Timestamp, ModelPrices)>) -> Result<PriceSchedule, PriceScheduleError> {
        if entries.is_empty() {
            return Err(PriceScheduleError::Empty);
        }
        for (index, (from, _)) in entries.iter().enumerate() {
            if from.timestamp().rem_euclid(3_600) != 0 || from.timestamp_subsec_nanos() != 0 {
                return Err(PriceScheduleError::NotOnTheHour(*from));
            }
            if index > 0 && entries[index - 1].0 >= *from {
                return Err(PriceScheduleError::OutOfOrder(*from));
            }
        }
        Ok(PriceSchedule { entries })
    }

    /// The prices in force at `now`.
    pub fn at(&self, now: Timestamp) -> &ModelPrices {
        let index = self.entries.partition_point(|(from, _)| *from <= now);
        &self.entries[index.saturating_sub(1)].1
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[(Timestamp, ModelPrices)] {
        &self.entries
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
