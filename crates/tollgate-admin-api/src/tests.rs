//! Tests of the OpenAPI document as `/v1/openapi.json` serves it.

use serde_json::{Value, json};

/// Goal: a client generated from the document knows how to authenticate: both ways of
/// sending an admin key are declared, every operation requires one of them, and only the
/// document itself is open.
#[tokio::test]
async fn the_served_document_declares_the_admin_key_schemes_on_every_operation() {
    let axum::Json(served) = crate::openapi_json().await;
    let document = serde_json::to_value(&served).expect("the document serializes");

    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(
        schemes["x-api-key"],
        json!({"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "An admin key (sk-tg-admin01-…)."})
    );
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    let either = json!([{"x-api-key": []}, {"bearer": []}]);
    let mut secured = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            if path == "/v1/openapi.json" {
                assert_eq!(operation.get("security"), None, "the document is public");
                continue;
            }
            assert_eq!(operation["security"], either, "{method} {path}");
            secured += 1;
        }
    }
    assert!(secured >= 40, "every operation but the document's own: {secured}");
    assert_eq!(
        document.get("security"),
        None::<&Value>,
        "set per operation, so the open document stays open"
    );
}

/// Goal: a dependency that is down is a 503 with `retry-after` on the Admin API too, named
/// as the gateway names it (one rule, `ServiceError::unavailable_dependency`); it was a
/// 500, as if tollgate had a bug.
#[test]
fn a_dependency_that_is_down_is_a_503_that_names_it() {
    let error = crate::error::ApiError::from(tollgate_service::ServiceError::LimiterUnavailable(
        "no answer within 500 ms".into(),
    ));
    assert_eq!(error.retry_after_seconds, Some(1));
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
}
