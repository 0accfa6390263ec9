use serde_json::json;
use tollgate_core::sso::SsoRefusal;

use super::{claims_from_payload, pkce_challenge};

#[test]
fn the_pkce_challenge_is_rfc_7636s_example() {
    // RFC 7636, appendix B.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn claims_are_read_from_either_shape_providers_send() {
    let payload = json!({
        "iss": "https://id.example.com",
        "aud": ["tollgate", "other"],
        "azp": "tollgate",
        "sub": "u-1",
        "exp": 1_900_000_000,
        "nonce": "n",
        "email": "ada@example.com",
        "email_verified": "true",
        "roles": "eng",
    });
    let claims = claims_from_payload(&payload, "roles").expect("claims");
    assert_eq!(claims.audiences, vec!["tollgate".to_owned(), "other".to_owned()]);
    assert_eq!(claims.authorized_party.as_deref(), Some("tollgate"));
    assert_eq!(claims.email_verified, Some(true));
    assert_eq!(claims.groups, vec!["eng".to_owned()]);
    assert_eq!(claims.expires_at.timestamp(), 1_900_000_000);

    let single = json!({"iss": "i", "aud": "tollgate", "sub": "u", "exp": 1, "groups": ["a", "b"]});
    let claims = claims_from_payload(&single, "groups").expect("claims");
    assert_eq!(claims.audiences, vec!["tollgate".to_owned()]);
    assert_eq!(claims.groups.len(), 2);
    assert_eq!(claims.email_verified, None);
}

#[test]
fn a_token_without_expiry_issuer_or_subject_is_refused() {
    let base = json!({"iss": "i", "aud": "a", "sub": "u", "exp": 1});
    for (field, refusal) in [
        ("exp", SsoRefusal::Expired),
        ("iss", SsoRefusal::WrongIssuer),
        ("sub", SsoRefusal::ProviderRefused),
    ] {
        let mut payload = base.clone();
        payload.as_object_mut().expect("object").remove(field);
        assert_eq!(
            claims_from_payload(&payload, "groups"),
            Err(refusal),
            "without {field}"
        );
    }
}
