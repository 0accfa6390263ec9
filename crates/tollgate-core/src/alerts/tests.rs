//! The webhook signature round-trips and refuses tampering and stale timestamps; the
//! thresholds and the retry schedule say what the docs say.

use chrono::TimeZone;

use crate::Timestamp;
use crate::alerts::{
    AlertKind, REPLAY_WINDOW_SECONDS, RetryPolicy, VerifyError, balance_below, kinds_received,
    signature_header, spend_limit_reached, verify,
};
use crate::money::NanoUsd;

fn at(seconds: i64) -> Timestamp {
    chrono::Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

#[test]
fn a_signature_verifies_over_the_raw_body_within_the_window() {
    let header = signature_header("whsec_test", br#"{"type":"x"}"#, at(1_800_000_000));
    assert!(header.starts_with("t=1800000000,v1="));
    assert_eq!(
        verify(
            "whsec_test",
            &header,
            br#"{"type":"x"}"#,
            at(1_800_000_100),
            REPLAY_WINDOW_SECONDS
        ),
        Ok(())
    );
}

#[test]
fn a_tampered_body_a_wrong_secret_or_an_old_timestamp_fails() {
    let header = signature_header("whsec_test", b"{}", at(1_800_000_000));
    let now = at(1_800_000_000);
    assert_eq!(
        verify("whsec_test", &header, b"{ }", now, 300),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify("whsec_other", &header, b"{}", now, 300),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify("whsec_test", &header, b"{}", at(1_800_000_301), 300),
        Err(VerifyError::OutsideWindow)
    );
    // A timestamp moved forward to pass the window no longer matches the signature.
    let forged = header.replace("t=1800000000", "t=1800000400");
    assert_eq!(
        verify("whsec_test", &forged, b"{}", at(1_800_000_400), 300),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify("whsec_test", "v1=abcd", b"{}", now, 300),
        Err(VerifyError::Malformed)
    );
    assert_eq!(
        verify("whsec_test", "t=1,v1=zz", b"{}", now, 300),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn thresholds_cross_at_their_boundaries() {
    let threshold = Some(NanoUsd::from_nanos(100));
    assert!(balance_below(threshold, NanoUsd::from_nanos(99)));
    assert!(!balance_below(threshold, NanoUsd::from_nanos(100)));
    assert!(!balance_below(None, NanoUsd::ZERO));
    let limit = Some(NanoUsd::from_nanos(1_000));
    assert!(spend_limit_reached(limit, NanoUsd::from_nanos(749)).is_empty());
    assert_eq!(
        spend_limit_reached(limit, NanoUsd::from_nanos(750)),
        vec![AlertKind::SpendLimit75]
    );
    assert_eq!(
        spend_limit_reached(limit, NanoUsd::from_nanos(1_000)),
        vec![AlertKind::SpendLimit75, AlertKind::SpendLimit100]
    );
    assert!(spend_limit_reached(None, NanoUsd::from_nanos(1_000)).is_empty());
}

#[test]
fn retries_back_off_exponentially_up_to_a_cap_and_a_bound() {
    let policy = RetryPolicy {
        attempts_max: 5,
        first_delay_seconds: 10,
        max_delay_seconds: 40,
    };
    let now = at(0);
    let delays: Vec<Option<i64>> = (1..=5)
        .map(|made| {
            policy
                .next_attempt(made, now)
                .map(|next| (next - now).num_seconds())
        })
        .collect();
    assert_eq!(delays, vec![Some(10), Some(20), Some(40), Some(40), None]);
}

#[test]
fn every_kind_parses_back() {
    for kind in AlertKind::ALL {
        assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
    }
}

#[test]
fn a_destination_receives_the_kinds_chosen_once_each_and_all_is_every_kind() {
    use AlertKind::{DeploymentDown, KeyExpiring, SpendLimit75};
    assert_eq!(
        kinds_received(&[KeyExpiring, DeploymentDown, KeyExpiring]),
        Some(vec![DeploymentDown, KeyExpiring]),
        "once each, in the list's order"
    );
    assert_eq!(kinds_received(&[SpendLimit75]), Some(vec![SpendLimit75]));
    assert_eq!(
        kinds_received(&AlertKind::ALL),
        None,
        "every kind, later ones too"
    );
    assert_eq!(kinds_received(&[]), Some(Vec::new()));
}
