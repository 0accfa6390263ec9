use proptest::prelude::*;

use crate::money::NanoUsd;

#[test]
fn parses_decimal_dollars_exactly() {
    let cases = [
        ("5", 5_000_000_000),
        ("12.50", 12_500_000_000),
        ("0.000000001", 1),
        ("$3.75", 3_750_000_000),
        ("-1.5", -1_500_000_000),
        (".5", 500_000_000),
        ("7.", 7_000_000_000),
        ("1.1000000000", 1_100_000_000),
    ];
    for (text, nanos) in cases {
        assert_eq!(NanoUsd::parse_usd(text), Ok(NanoUsd::from_nanos(nanos)), "{text}");
    }
}

#[test]
fn rejects_what_is_not_an_exact_amount() {
    for text in [
        "",
        ".",
        "abc",
        "1.2.3",
        "1e3",
        "0.0000000001",
        "99999999999999999999",
        " - 1",
    ] {
        assert!(NanoUsd::parse_usd(text).is_err(), "{text} should be refused");
    }
}

#[test]
fn prints_dollars_and_cents() {
    assert_eq!(NanoUsd::from_nanos(5_000_000_000).to_string(), "$5.00");
    assert_eq!(NanoUsd::from_nanos(1).to_string(), "$0.000000001");
    assert_eq!(NanoUsd::from_nanos(-2_500_000_000).to_string(), "-$2.50");
    assert_eq!(NanoUsd::from_nanos(1_237_891_200).to_cents_decimal(), "123.78912");
    assert_eq!(NanoUsd::ZERO.to_cents_decimal(), "0.00");
}

proptest! {
    #[test]
    fn decimal_round_trips(nanos in -4_000_000_000_000_000_000_i64..4_000_000_000_000_000_000) {
        let amount = NanoUsd::from_nanos(nanos);
        prop_assert_eq!(NanoUsd::parse_usd(&amount.to_usd_decimal()), Ok(amount));
    }
}
