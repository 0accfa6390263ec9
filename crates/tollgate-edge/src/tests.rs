//! Tests of the shared edge: how a presented key is read and what a refused one is told,
//! and how an idempotent request's kept answer is replayed.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate_core::keys::{KeyFormatError, KeyKind};
use tollgate_service::AuthRefusal;

use crate::{Credential, ErrorKind, Problem, envelope, presented_key, refused};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
    }
    headers
}

/// Goal: the bearer scheme's name is read in any casing (RFC 9110), its token trimmed.
#[test]
fn a_bearer_scheme_is_read_in_any_casing() {
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let headers = headers(&[("authorization", &format!("{scheme} sk-tg-admin01-abc "))]);
        assert_eq!(
            presented_key(&headers),
            Some(("sk-tg-admin01-abc", Credential::Bearer)),
            "{scheme}"
        );
    }
}

/// Goal: `x-api-key` wins over a bearer token, and other schemes present no key.
#[test]
fn x_api_key_comes_first_and_other_schemes_are_no_key() {
    let both = headers(&[
        ("x-api-key", "sk-tg-api01-header"),
        ("authorization", "Bearer sk-tg-api01-bearer"),
    ]);
    assert_eq!(
        presented_key(&both),
        Some(("sk-tg-api01-header", Credential::ApiKeyHeader))
    );
    let basic = headers(&[(header::AUTHORIZATION.as_str(), "Basic dXNlcjpwYXNz")]);
    assert_eq!(presented_key(&basic), None);
    let no_token = headers(&[("authorization", "Bearer")]);
    assert_eq!(presented_key(&no_token), None);
    assert_eq!(presented_key(&HeaderMap::new()), None);
}

/// Goal: a refusal names the key the way it came, on every surface alike.
#[test]
fn a_refusal_names_the_key_as_it_came() {
    let unauthorized =
        |message: &str| Problem::new(StatusCode::UNAUTHORIZED, ErrorKind::Authentication, message);
    let cases = [
        (
            AuthRefusal::Unknown,
            Credential::ApiKeyHeader,
            "invalid x-api-key",
        ),
        (AuthRefusal::Unknown, Credential::Bearer, "Invalid bearer token"),
        (
            AuthRefusal::NotActive("disabled"),
            Credential::ApiKeyHeader,
            "invalid x-api-key: this key is disabled",
        ),
        (
            AuthRefusal::NotActive("archived"),
            Credential::Bearer,
            "Invalid bearer token: this key is archived",
        ),
        (
            AuthRefusal::Malformed(KeyFormatError::UnknownPrefix),
            Credential::Bearer,
            "Invalid bearer token: the key does not start with a known prefix",
        ),
        (
            AuthRefusal::Missing,
            Credential::ApiKeyHeader,
            "x-api-key header is required",
        ),
    ];
    for (refusal, credential, message) in cases {
        assert_eq!(refused(refusal, credential, "unused"), unauthorized(message));
    }
}

/// Goal: a valid key of the wrong kind is a 403 in the surface's own words.
#[test]
fn the_wrong_kind_of_key_is_worded_by_the_surface() {
    for credential in [Credential::ApiKeyHeader, Credential::Bearer] {
        assert_eq!(
            refused(
                AuthRefusal::WrongKind(KeyKind::Api),
                credential,
                "This is an API key."
            ),
            Problem::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                "This is an API key."
            )
        );
    }
}

/// Goal: the envelope is Anthropic's, with `details` only where an error code is given.
#[test]
fn the_envelope_is_anthropics() {
    assert_eq!(
        envelope(ErrorKind::NotFound, "model: x", None, "req_1"),
        serde_json::json!({
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: x"},
            "request_id": "req_1",
        })
    );
    assert_eq!(
        envelope(
            ErrorKind::RateLimit,
            "spent",
            Some("enforced_spend_limit_reached"),
            "req_2"
        )["error"]["details"],
        serde_json::json!({"error_code": "enforced_spend_limit_reached"})
    );
    for kind in ["overloaded_error", "request_too_large", "api_error"] {
        assert_eq!(ErrorKind::from_wire(kind).map(ErrorKind::as_str), Some(kind));
    }
    assert_eq!(ErrorKind::from_wire("teapot_error"), None);
}

/// Goal: on the way out, a carried error and the router's own 405 are rendered by the
/// surface's renderer, and every response gets its `request-id`.
#[test]
fn stamp_renders_carried_errors_and_the_405() {
    #[derive(Clone)]
    struct Carried(Problem);
    impl From<Problem> for Carried {
        fn from(problem: Problem) -> Carried {
            Carried(problem)
        }
    }
    let render = |error: &Carried| crate::json_response(error.0.status, error.0.message.clone());

    let carried = crate::deferred(
        StatusCode::NOT_FOUND,
        Carried(Problem::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, "gone")),
    );
    let response = crate::stamp::<Carried>(carried, "req_1", crate::arrived(), "anthropic", render);
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["request-id"], "req_1");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");

    let not_allowed = axum::response::IntoResponse::into_response(StatusCode::METHOD_NOT_ALLOWED);
    let response = crate::stamp::<Carried>(not_allowed, "req_2", crate::arrived(), "anthropic", render);
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");

    let fine = axum::response::IntoResponse::into_response(StatusCode::OK);
    let response = crate::stamp::<Carried>(fine, "req_3", crate::arrived(), "anthropic", render);
    assert_eq!(response.headers()["request-id"], "req_3");
    assert!(!response.headers().contains_key(header::CONTENT_TYPE));
    assert!(crate::new_request_id().starts_with("req_"));
}

#[test]
fn server_timing_splits_tollgate_from_the_upstream_in_milliseconds() {
    use std::time::Duration;

    use crate::UpstreamTime;

    let total = Duration::from_micros(812_610);
    let upstream = Some(UpstreamTime(Duration::from_micros(812_400)));
    assert_eq!(
        crate::server_timing(total, upstream),
        "tollgate;dur=0.21, upstream;dur=812.40"
    );
    assert_eq!(
        crate::server_timing(Duration::from_micros(1_500), None),
        "tollgate;dur=1.50"
    );
}

/// Goal: only requests that change something are guarded by an idempotency key.
#[test]
fn only_mutating_methods_take_an_idempotency_key() {
    use axum::http::Method;

    use crate::idempotency::is_mutating;
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(is_mutating(&method), "{method}");
    }
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert!(!is_mutating(&method), "{method}");
    }
}

/// Goal: a replay is the kept answer (status, content type, location, body), marked as a
/// replay, and nothing else of it is made up.
#[tokio::test]
async fn a_replay_is_the_kept_answer_marked_as_such() {
    use tollgate_service::IdempotentAnswer;

    use crate::idempotency::replay;
    let json = replay(IdempotentAnswer {
        status: 400,
        content_type: Some("application/json".into()),
        location: None,
        body: r#"{"type":"error"}"#.into(),
    });
    assert_eq!(json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(json.headers()["idempotent-replayed"], "true");
    assert!(!json.headers().contains_key(header::LOCATION));
    let body = axum::body::to_bytes(json.into_body(), 1024).await.expect("body");
    assert_eq!(&body[..], br#"{"type":"error"}"#);

    let redirect = replay(IdempotentAnswer {
        status: 303,
        content_type: None,
        location: Some("/console/billing/receipts/purchase_1".into()),
        body: String::new(),
    });
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        redirect.headers()[header::LOCATION],
        "/console/billing/receipts/purchase_1"
    );
    assert!(!redirect.headers().contains_key(header::CONTENT_TYPE));
}
