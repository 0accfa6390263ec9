use chrono::TimeZone;

use crate::Timestamp;
use crate::idempotency::{
    FirstUse, IdempotencyKey, KEY_LENGTH_MAX, KeyRefusal, Repeat, RequestFingerprint, expires_at,
    judge_repeat, keeps_answer,
};

fn now() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

#[test]
fn a_key_is_one_to_255_printable_ascii_characters() {
    assert_eq!(IdempotencyKey::parse("").unwrap_err(), KeyRefusal::Empty);
    let longest = "k".repeat(KEY_LENGTH_MAX);
    assert_eq!(IdempotencyKey::parse(&longest).unwrap().as_str(), longest);
    let too_long = "k".repeat(KEY_LENGTH_MAX + 1);
    assert_eq!(
        IdempotencyKey::parse(&too_long).unwrap_err(),
        KeyRefusal::TooLong { length: 256 }
    );
    assert_eq!(
        IdempotencyKey::parse("tab\there").unwrap_err(),
        KeyRefusal::NotPrintable
    );
    assert_eq!(
        IdempotencyKey::parse("clé").unwrap_err(),
        KeyRefusal::NotPrintable
    );
    let uuid = "5f0c6a5e-3b1d-4c4e-9a51-0d7b6f3e2a10";
    assert_eq!(IdempotencyKey::parse(uuid).unwrap().as_str(), uuid);
    assert!(IdempotencyKey::parse("spaces and ~punctuation!").is_ok());
}

#[test]
fn the_refusal_of_a_long_key_names_its_length_and_the_bound() {
    let refusal = IdempotencyKey::parse(&"k".repeat(300)).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "The Idempotency-Key header is 300 characters long; it may be at most 255 characters."
    );
}

#[test]
fn a_fingerprint_hashes_the_body_as_lowercase_hex_sha256() {
    let fingerprint = RequestFingerprint::of("POST", "/v1/organizations/workspaces", b"");
    assert_eq!(
        fingerprint.body_sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(fingerprint.method, "POST");
    assert_eq!(fingerprint.path, "/v1/organizations/workspaces");
}

#[test]
fn the_same_request_replays_once_answered_and_waits_while_in_flight() {
    let first = RequestFingerprint::of("POST", "/v1/organizations/workspaces", br#"{"name":"A"}"#);
    let again = first.clone();
    assert_eq!(judge_repeat(&first, FirstUse::Answered, &again), Repeat::Replay);
    assert_eq!(judge_repeat(&first, FirstUse::InFlight, &again), Repeat::InFlight);
}

#[test]
fn another_body_method_or_path_under_the_key_is_a_mismatch_in_any_state() {
    let first = RequestFingerprint::of("POST", "/v1/organizations/workspaces", br#"{"name":"A"}"#);
    let others = [
        RequestFingerprint::of("POST", "/v1/organizations/workspaces", br#"{"name":"B"}"#),
        RequestFingerprint::of("PUT", "/v1/organizations/workspaces", br#"{"name":"A"}"#),
        RequestFingerprint::of("POST", "/v1/organizations/api_keys", br#"{"name":"A"}"#),
        RequestFingerprint::of("POST", "/v1/organizations/workspaces?x=1", br#"{"name":"A"}"#),
    ];
    for other in &others {
        for state in [FirstUse::InFlight, FirstUse::Answered] {
            assert_eq!(judge_repeat(&first, state, other), Repeat::Mismatch, "{other:?}");
        }
    }
}

#[test]
fn answers_are_kept_but_a_5xx_which_the_client_may_retry() {
    for status in [200, 201, 204, 303, 400, 402, 404, 409, 422, 499] {
        assert!(keeps_answer(status), "{status}");
    }
    for status in [500, 502, 503, 529] {
        assert!(!keeps_answer(status), "{status}");
    }
}

#[test]
fn a_key_lives_24_hours() {
    assert_eq!(expires_at(now()), now() + chrono::Duration::hours(24));
    assert_eq!(expires_at(Timestamp::MAX_UTC), Timestamp::MAX_UTC);
}
