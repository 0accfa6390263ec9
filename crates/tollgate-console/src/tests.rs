//! Routing-level checks of the guard, without a browser: a cross-site POST is refused
//! before anything else, a page without a session sends the visitor to sign-in, and every
//! response carries the security headers.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use crate::session::{is_secure, session_cookie};

mod fixture;

#[tokio::test]
async fn a_cross_site_post_is_refused() {
    let fixture = fixture::Fixture::new().await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ] {
        let request = Request::post("/console/workspaces")
            .header(header::HOST, "127.0.0.1:8080")
            .header(name, value)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=x&csrf=y"))
            .unwrap();
        let response = fixture.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
    }
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_sign_in() {
    let fixture = fixture::Fixture::new().await;
    for path in ["/console/overview", "/console/billing", "/console/keys"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = fixture.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[header::LOCATION], "/console/sign-in");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let fixture = fixture::Fixture::new().await;
    let token = fixture.signed_in_token().await;
    let request = Request::post("/console/workspaces")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::COOKIE, format!("__Host-tollgate_session={token}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("name=Research&csrf=wrong"))
        .unwrap();
    let response = fixture.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_cookie_is_host_prefixed_and_secure_on_loopback_only() {
    let fixture = fixture::Fixture::new().await;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
    assert!(is_secure(&headers, &fixture.state));
    headers.insert(header::HOST, "console.example:8080".parse().unwrap());
    assert!(!is_secure(&headers, &fixture.state));
    headers.insert("x-forwarded-proto", "https".parse().unwrap());
    assert!(is_secure(&headers, &fixture.state));
    let secure = session_cookie("abc", true);
    assert!(
        secure
            .to_str()
            .unwrap()
            .starts_with("__Host-tollgate_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure")
    );
    assert!(!session_cookie("abc", false).to_str().unwrap().contains("Secure"));
}

#[test]
fn after_sign_in_a_person_goes_only_to_one_of_the_consoles_own_pages() {
    use crate::sso::after_sign_in;

    assert_eq!(
        after_sign_in(Some("/console/device?user_code=BCDF-GHJK")),
        "/console/device?user_code=BCDF-GHJK"
    );
    for elsewhere in [
        None,
        Some("https://evil.example/console/x"),
        Some("//evil.example/console/"),
        Some("/console//evil.example"),
        Some("/console/\\evil"),
        Some("/consolex"),
        Some("/v1/messages"),
        Some("/console/x\r\nset-cookie: a=b"),
    ] {
        assert_eq!(after_sign_in(elsewhere), "/console/overview", "{elsewhere:?}");
    }
}
