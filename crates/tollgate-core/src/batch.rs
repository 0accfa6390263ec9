//! The Message Batches price rule: a request of a batch costs half the standard price.
//! Written as one function over an amount already priced at the standard rate, so the
//! reservation bound and the settled cost are halved the same way, and the bound stays a
//! bound (halving rounded up is monotone).

use crate::money::NanoUsd;

/// `standard` at the Batch rate: half, rounded up to the nano-dollar, so an odd amount
/// never rounds in the payer's favour and a bound halved stays above a cost halved.
pub fn batch_rate(standard: NanoUsd) -> NanoUsd {
    let nanos = standard.nanos();
    NanoUsd::from_nanos(nanos / 2 + nanos % 2)
}

#[cfg(test)]
mod tests;
