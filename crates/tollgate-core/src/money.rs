//! Money as integer nano-USD (1 USD = 10^9). Never a float: amounts are parsed from and
//! printed as exact decimal strings, and every operation is checked.

use std::fmt;

/// Nano-USD per USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of money in nano-USD. Signed because ledger balances of source accounts are
/// negative; transfer amounts are always positive (checked where they are built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoUsd(i64);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    #[error("'{0}' is not a decimal amount of US dollars (e.g. 5 or 12.50)")]
    Malformed(String),
    #[error("'{0}' has more precision than one nano-dollar")]
    TooPrecise(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);
    pub const MAX: NanoUsd = NanoUsd(i64::MAX);

    pub const fn from_nanos(nanos: i64) -> NanoUsd {
        NanoUsd(nanos)
    }

    pub const fn from_usd(usd: i64) -> NanoUsd {
        NanoUsd(usd * NANOS_PER_USD)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_add(other.0).map(NanoUsd)
    }

    pub fn checked_sub(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_sub(other.0).map(NanoUsd)
    }

    pub fn checked_mul(self, factor: u64) -> Option<NanoUsd> {
        i64::try_from(factor)
            .ok()
            .and_then(|factor| self.0.checked_mul(factor))
            .map(NanoUsd)
    }

    /// Addition that clamps at the representable range; for upper bounds only, where a
    /// clamped bound is still a bound.
    pub fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    pub fn saturating_mul(self, factor: u64) -> NanoUsd {
        let factor = i64::try_from(factor).unwrap_or(i64::MAX);
        NanoUsd(self.0.saturating_mul(factor))
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn min(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.min(other.0))
    }

    pub fn max(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.max(other.0))
    }

    /// Parses a decimal USD amount exactly: "5", "12.5", "0.000000001", "-3.25".
    pub fn parse_usd(text: &str) -> Result<NanoUsd, MoneyParseError> {
        let malformed = || MoneyParseError::Malformed(text.to_owned());
        let trimmed = text.trim().trim_start_matches('$');
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
            return Err(malformed());
        }
        if digits.ends_with('.') && fraction.is_empty() && whole.is_empty() {
            return Err(malformed());
        }
        let fraction_significant = fraction.trim_end_matches('0');
        if fraction_significant.len() > 9 {
            return Err(MoneyParseError::TooPrecise(text.to_owned()));
        }
        let overflow = || MoneyParseError::Overflow(text.to_owned());
        let whole_value: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let mut fraction_value: i64 = 0;
        for (position, byte) in fraction_significant.bytes().enumerate() {
            let digit = i64::from(byte - b'0');
            fraction_value += digit * 10_i64.pow(8 - position as u32);
        }
        let nanos = whole_value
            .checked_mul(NANOS_PER_USD)
            .and_then(|nanos| nanos.checked_add(fraction_value))
            .ok_or_else(overflow)?;
        Ok(NanoUsd(if negative { -nanos } else { nanos }))
    }

    /// The amount in US cents as an exact decimal string, as cost reports print it
    /// ("123.78912"): trailing zeros of the fraction are dropped.
    pub fn to_cents_decimal(self) -> String {
        decimal_string(self.0, 7)
    }

    /// The amount in dollars as an exact decimal string with at least two decimals.
    pub fn to_usd_decimal(self) -> String {
        decimal_string(self.0, 9)
    }
}

/// `value / 10^scale` as an exact decimal: at least two fraction digits, no trailing zeros
/// beyond those.
fn decimal_string(value: i64, scale: u32) -> String {
    let divisor = 10_i128.pow(scale);
    let magnitude = i128::from(value).abs();
    let sign = if value < 0 { "-" } else { "" };
    let whole = magnitude / divisor;
    let fraction = magnitude % divisor;
    let mut fraction_text = format!("{fraction:0width$}", width = scale as usize);
    while fraction_text.len() > 2 && fraction_text.ends_with('0') {
        fraction_text.pop();
    }
    format!("{sign}{whole}.{fraction_text}")
}

impl fmt::Display for NanoUsd {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_usd_decimal();
        match text.strip_prefix('-') {
            Some(positive) => write!(formatter, "-${positive}"),
            None => write!(formatter, "${text}"),
        }
    }
}

#[cfg(test)]
mod tests;
