//! The arithmetic of usage and cost reports: time buckets snapped to UTC minute, hour or
//! day boundaries, windows of them paged oldest first, and the split of a charge into the
//! token types it was priced by. Pure: the store sums what happened, this says how to cut it.

use chrono::{DurationRound, TimeDelta};

use crate::Timestamp;
use crate::money::NanoUsd;
use crate::pricing::{CostLines, ModelPrices};
use crate::usage::TokenUsage;

/// The width of one report bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BucketWidth {
    Minute,
    Hour,
    Day,
}

impl BucketWidth {
    pub fn parse(text: &str) -> Option<BucketWidth> {
        match text {
            "1m" => Some(BucketWidth::Minute),
            "1h" => Some(BucketWidth::Hour),
            "1d" => Some(BucketWidth::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BucketWidth::Minute => "1m",
            BucketWidth::Hour => "1h",
            BucketWidth::Day => "1d",
        }
    }

    pub fn duration(self) -> TimeDelta {
        match self {
            BucketWidth::Minute => TimeDelta::minutes(1),
            BucketWidth::Hour => TimeDelta::hours(1),
            BucketWidth::Day => TimeDelta::days(1),
        }
    }

    /// Buckets per page when the caller gives no `limit` (Anthropic's defaults).
    pub fn default_limit(self) -> usize {
        match self {
            BucketWidth::Minute => 60,
            BucketWidth::Hour => 24,
            BucketWidth::Day => 7,
        }
    }

    /// The most buckets one page may hold.
    pub fn max_limit(self) -> usize {
        match self {
            BucketWidth::Minute => 1440,
            BucketWidth::Hour => 168,
            BucketWidth::Day => 31,
        }
    }

    /// The start of the bucket that holds `instant`, in UTC.
    pub fn snap(self, instant: Timestamp) -> Timestamp {
        instant.duration_trunc(self.duration()).unwrap_or(instant)
    }
}

/// A validated report window: `start` is on a bucket boundary, `end` (exclusive) is on one
/// too, and the window holds at least one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportWindow {
    width: BucketWidth,
    start: Timestamp,
    end: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("ending_at must be after starting_at")]
    EndNotAfterStart,
    #[error("the window holds {buckets} buckets of {width}; at most {max} are allowed")]
    TooManyBuckets {
        buckets: usize,
        width: &'static str,
        max: usize,
    },
}

impl ReportWindow {
    /// Buckets from the one holding `starting_at` up to the one holding the instant before
    /// `ending_at`: every bucket that starts before `ending_at`. At most `max_buckets`.
    pub fn new(
        width: BucketWidth,
        starting_at: Timestamp,
        ending_at: Timestamp,
        max_buckets: usize,
    ) -> Result<ReportWindow, WindowError> {
        if ending_at <= starting_at {
            return Err(WindowError::EndNotAfterStart);
        }
        let start = width.snap(starting_at);
        let last = width.snap(ending_at - TimeDelta::milliseconds(1));
        let end = last + width.duration();
        let window = ReportWindow { width, start, end };
        let buckets = window.bucket_count();
        if buckets > max_buckets {
            return Err(WindowError::TooManyBuckets {
                buckets,
                width: width.as_str(),
                max: max_buckets,
            });
        }
        Ok(window)
    }

    pub fn width(&self) -> BucketWidth {
        self.width
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn end(&self) -> Timestamp {
        self.end
    }

    pub fn bucket_count(&self) -> usize {
        let span = (self.end - self.start).num_milliseconds();
        let width = self.width.duration().num_milliseconds();
        usize::try_from(span / width).unwrap_or(usize::MAX)
    }

    /// One page: at most `limit` buckets from the one that starts at `from` (the window's
    /// start when `None`), oldest first, and the start of the next page if any is left.
    /// `from` off the window or off a boundary gives an empty page.
    pub fn page(&self, from: Option<Timestamp>, limit: usize) -> (Vec<Bucket>, Option<Timestamp>) {
        let from = from.unwrap_or(self.start);
        if from < self.start || from >= self.end || self.width.snap(from) != from {
            return (Vec::new(), None);
        }
        let mut buckets = Vec::new();
        let mut starting_at = from;
        while starting_at < self.end && buckets.len() < limit {
            let ending_at = starting_at + self.width.duration();
            buckets.push(Bucket {
                starting_at,
                ending_at,
            });
            starting_at = ending_at;
        }
        let next = (starting_at < self.end).then_some(starting_at);
        (buckets, next)
    }
}

/// One bucket of a report: `[starting_at, ending_at)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    pub starting_at: Timestamp,
    pub ending_at: Timestamp,
}

/// What a report says a request's input spanned: Anthropic prices and reports long
/// contexts apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextWindow {
    UpTo200k,
    Over200k,
}

impl ContextWindow {
    pub const ALL: [ContextWindow; 2] = [ContextWindow::UpTo200k, ContextWindow::Over200k];

    pub fn as_str(self) -> &'static str {
        match self {
            ContextWindow::UpTo200k => "0-200k",
            ContextWindow::Over200k => "200k-1M",
        }
    }

    pub fn parse(text: &str) -> Option<ContextWindow> {
        ContextWindow::ALL
            .into_iter()
            .find(|window| window.as_str() == text)
    }

    /// Input of every kind over 200,000 tokens is the long context.
    pub fn of(usage: &TokenUsage) -> ContextWindow {
        let input = usage
            .rate_limited_input_tokens()
            .saturating_add(usage.cache_read_input_tokens);
        if input > 200_000 {
            ContextWindow::Over200k
        } else {
            ContextWindow::UpTo200k
        }
    }
}

/// The token types a cost report breaks a charge into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenType {
    UncachedInput,
    Output,
    CacheRead,
    CacheCreation5m,
    CacheCreation1h,
}

impl TokenType {
    pub const ALL: [TokenType; 5] = [
        TokenType::UncachedInput,
        TokenType::Output,
        TokenType::CacheRead,
        TokenType::CacheCreation5m,
        TokenType::CacheCreation1h,
    ];

    /// As the cost report's `token_type` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::UncachedInput => "uncached_input_tokens",
            TokenType::Output => "output_tokens",
            TokenType::CacheRead => "cache_read_input_tokens",
            TokenType::CacheCreation5m => "cache_creation.ephemeral_5m_input_tokens",
            TokenType::CacheCreation1h => "cache_creation.ephemeral_1h_input_tokens",
        }
    }

    /// The end of a cost item's description ("Claude Sonnet 4.6 Usage - Input Tokens").
    pub fn description(self) -> &'static str {
        match self {
            TokenType::UncachedInput => "Input Tokens",
            TokenType::Output => "Output Tokens",
            TokenType::CacheRead => "Input Tokens, Cache Read",
            TokenType::CacheCreation5m => "Input Tokens, Cache Write 5m",
            TokenType::CacheCreation1h => "Input Tokens, Cache Write 1h",
        }
    }

    fn tokens(self, usage: &TokenUsage) -> u64 {
        match self {
            TokenType::UncachedInput => usage.input_tokens,
            TokenType::Output => usage.output_tokens,
            TokenType::CacheRead => usage.cache_read_input_tokens,
            TokenType::CacheCreation5m => usage.cache_creation_5m_input_tokens,
            TokenType::CacheCreation1h => usage.cache_creation_1h_input_tokens,
        }
    }

    fn line(self, lines: &CostLines) -> NanoUsd {
        match self {
            TokenType::UncachedInput => lines.input,
            TokenType::Output => lines.output,
            TokenType::CacheRead => lines.cache_read,
            TokenType::CacheCreation5m => lines.cache_write_5m,
            TokenType::CacheCreation1h => lines.cache_write_1h,
        }
    }

    fn price_nanos(self, prices: &ModelPrices) -> i64 {
        match self {
            TokenType::UncachedInput => prices.input.nanos_per_token(),
            TokenType::Output => prices.output.nanos_per_token(),
            TokenType::CacheRead => prices.cache_read.nanos_per_token(),
            TokenType::CacheCreation5m => prices.cache_write_5m.nanos_per_token(),
            TokenType::CacheCreation1h => prices.cache_write_1h.nanos_per_token(),
        }
    }
}

/// A charge split by token type, with its web searches apart. The parts, the web searches
/// and the adjustment add up to the charge exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CostSplit {
    /// Each token type with tokens, at the rates the requests were billed.
    pub parts: Vec<(TokenType, NanoUsd)>,
    /// The web searches (`cost_type` `web_search`).
    pub web_search: NanoUsd,
    /// What the ledger charged beyond (or, negative, short of) the parts: a per-request
    /// charge, a charge capped at its reservation, or, for usage recorded before its cost
    /// lines were, what the prices in force in its hour don't explain.
    pub adjustment: NanoUsd,
}

impl CostSplit {
    /// This split and `other` together, token type by token type: splits made at the rates
    /// in force at different times (each hour at its own) add up to their charges' sum
    /// exactly. `None` on overflow.
    pub fn checked_add(&self, other: &CostSplit) -> Option<CostSplit> {
        let mut parts = self.parts.clone();
        for (token_type, amount) in &other.parts {
            match parts.iter_mut().find(|(known, _)| known == token_type) {
                Some((_, total)) => *total = total.checked_add(*amount)?,
                None => parts.push((*token_type, *amount)),
            }
        }
        parts.sort_by_key(|(token_type, _)| TokenType::ALL.iter().position(|known| known == token_type));
        Some(CostSplit {
            parts,
            web_search: self.web_search.checked_add(other.web_search)?,
            adjustment: self.adjustment.checked_add(other.adjustment)?,
        })
    }
}

/// Splits `charged`, the ledger's charge for `usage` of one model, by the cost lines its
/// settlement recorded (`lines`, the exact rates applied: tier, multipliers, dated prices):
/// exact, with an adjustment only for what the lines do not hold (a per-request charge, a
/// charge capped at its reservation). Usage recorded without lines (before they were
/// kept) is split at `prices`, the rates in force in its hour, by [`split_cost`].
pub fn split_charge(
    prices: Option<&ModelPrices>,
    usage: &TokenUsage,
    lines: &CostLines,
    charged: NanoUsd,
) -> CostSplit {
    if *lines == CostLines::default() && charged != NanoUsd::ZERO {
        return split_cost(prices, usage, charged);
    }
    let parts: Vec<(TokenType, NanoUsd)> = TokenType::ALL
        .into_iter()
        .filter(|token_type| token_type.tokens(usage) > 0 || token_type.line(lines) != NanoUsd::ZERO)
        .map(|token_type| (token_type, token_type.line(lines)))
        .collect();
    match lines.total().and_then(|total| charged.checked_sub(total)) {
        Some(adjustment) => CostSplit {
            parts,
            web_search: lines.web_search,
            adjustment,
        },
        None => CostSplit {
            adjustment: charged,
            ..CostSplit::default()
        },
    }
}

/// Splits `charged`, the ledger's charge for `usage` of one model, by token type at the
/// base rates of `prices`. Exact by construction: whatever they don't explain (a tier, a
/// multiplier, web searches) goes to the adjustment. For usage recorded without cost lines.
pub fn split_cost(prices: Option<&ModelPrices>, usage: &TokenUsage, charged: NanoUsd) -> CostSplit {
    let Some(prices) = prices else {
        return CostSplit {
            adjustment: charged,
            ..CostSplit::default()
        };
    };
    let mut parts = Vec::new();
    let mut priced = NanoUsd::ZERO;
    for token_type in TokenType::ALL {
        let tokens = token_type.tokens(usage);
        if tokens == 0 {
            continue;
        }
        let Some(cost) = NanoUsd::from_nanos(token_type.price_nanos(prices)).checked_mul(tokens) else {
            return CostSplit {
                adjustment: charged,
                ..CostSplit::default()
            };
        };
        let Some(total) = priced.checked_add(cost) else {
            return CostSplit {
                adjustment: charged,
                ..CostSplit::default()
            };
        };
        priced = total;
        parts.push((token_type, cost));
    }
    match charged.checked_sub(priced) {
        Some(adjustment) => CostSplit {
            parts,
            web_search: NanoUsd::ZERO,
            adjustment,
        },
        None => CostSplit {
            adjustment: charged,
            ..CostSplit::default()
        },
    }
}

#[cfg(test)]
mod tests;
