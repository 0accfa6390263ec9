//! Anthropic's Files API on the fake: `POST /v1/files` takes a multipart upload (field
//! `file`) under the Files API's beta, as the real API does, and answers the file's metadata
//! with an id of its own; `DELETE /v1/files/{id}` answers the deletion. The upload is recorded like every other request (its body as the
//! multipart text), so a test sees what reached the provider and how often.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, State};
use axum::http::{HeaderMap, Request, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::json;

use crate::fake_upstream::Shared;
use crate::fake_upstream::handlers::{invalid_request, json_response, record};

/// The beta the real API requires on its Files API.
const FILES_BETA: &str = "files-api-2025-04-14";

/// Records a Files API request; its request id, or the refusal of a request without the
/// Files API's beta.
fn received(shared: &Shared, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<String, Box<Response>> {
    record(shared, uri, headers, body);
    let request_id = format!("req_fake{:016x}", shared.next_id());
    let beta = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|beta| beta.trim() == FILES_BETA);
    if !beta {
        return Err(Box::new(invalid_request(
            &format!("The Files API requires the beta header anthropic-beta: {FILES_BETA}"),
            &request_id,
        )));
    }
    Ok(request_id)
}

/// `DELETE /v1/files/{id}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = match received(&shared, &uri, &headers, &Bytes::new()) {
        Ok(request_id) => request_id,
        Err(refused) => return *refused,
    };
    let deleted = json!({"id": id, "type": "file_deleted"});
    json_response(StatusCode::OK, Body::from(deleted.to_string()), &request_id)
}

/// `POST /v1/files`.
pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = match received(&shared, &uri, &headers, &body) {
        Ok(request_id) => request_id,
        Err(refused) => return *refused,
    };
    let mut rebuilt = Request::new(Body::from(body));
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        rebuilt
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    let Ok(mut multipart) = Multipart::from_request(rebuilt, &()).await else {
        return invalid_request("The request body must be multipart/form-data", &request_id);
    };
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("unnamed").to_owned();
        let mime_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let Ok(content) = field.bytes().await else {
            return invalid_request("file: the part cannot be read", &request_id);
        };
        let metadata = json!({
            "id": format!("file_fake{:016x}", shared.next_id()),
            "type": "file",
            "filename": filename,
            "mime_type": mime_type,
            "size_bytes": content.len(),
            "created_at": "2026-01-01T00:00:00Z",
            "downloadable": false,
        });
        return json_response(StatusCode::OK, Body::from(metadata.to_string()), &request_id);
    }
    invalid_request("file: Field required", &request_id)
}
