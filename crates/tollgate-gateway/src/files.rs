//! Anthropic's Files API: `POST /v1/files` (multipart, field `file`, optional
//! `expires_in_seconds`), `GET /v1/files` (newest first: `limit` with `before_id` /
//! `after_id`, or the `page` cursor of a previous `next_page`), `GET /v1/files/{id}`,
//! `GET /v1/files/{id}/content` and `DELETE /v1/files/{id}`, with or without the
//! `files-api-2025-04-14` beta header. A file belongs to its key's workspace: any other
//! workspace's key is told it does not exist. Deleting a file deletes the copies providers
//! were given too. Only the wire shapes live here; keeping the bytes and the quota are the
//! service's.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_core::files::{
    FilePage, ListQuery, list_page, next_page_cursor, stored_filename, stored_mime_type,
};
use tollgate_service::{FileError, FileUpload, StoredFile};
use tollgate_upstream::Provider;

use crate::GatewayState;
use crate::error::{ApiError, ErrorKind};
use crate::messages::authenticate;

impl From<FileError> for ApiError {
    fn from(error: FileError) -> ApiError {
        match error {
            FileError::TooLarge { max_file_bytes } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::RequestTooLarge,
                format!("File exceeds the maximum allowed size of {max_file_bytes} bytes."),
            ),
            FileError::OverQuota => {
                let mut refused = ApiError::invalid(
                    "The organization's file storage quota is exhausted. Delete files to free up space, \
                     then retry the upload.",
                );
                refused.error_code = Some("storage_quota_exceeded");
                refused
            }
            FileError::NotFound(file_id) => file_not_found(&file_id),
            FileError::Service(error) => error.into(),
        }
    }
}

/// Anthropic's 404 for a file the caller's workspace does not have.
pub(crate) fn file_not_found(file_id: &str) -> ApiError {
    ApiError::not_found(format!("File not found: {file_id}"))
}

/// A file's metadata as the API shows it.
pub(crate) fn file_json(file: &StoredFile) -> Value {
    let mut metadata = json!({
        "id": file.id,
        "type": "file",
        "filename": file.filename,
        "mime_type": file.mime_type,
        "size_bytes": file.size_bytes,
        "created_at": rfc3339(file.created_at),
        // Anthropic lets only files its tools made be downloaded; every file here was uploaded.
        "downloadable": false,
    });
    if let Some(expires_at) = file.expires_at {
        metadata["expires_at"] = json!(rfc3339(expires_at));
    }
    metadata
}

fn rfc3339(instant: tollgate_core::Timestamp) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /v1/files`.
pub(crate) async fn upload_file(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let max_file_bytes = state.tollgate.max_file_bytes()?;
    let mut multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|rejection| {
            ApiError::invalid(format!(
                "The request body is not multipart/form-data: {rejection}"
            ))
        })?;
    let mut file = None;
    let mut expires_in_seconds = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                let filename = field.file_name().map(str::to_owned);
                let declared = field.content_type().map(str::to_owned);
                let mut content = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if u64::try_from(content.len() + chunk.len()).unwrap_or(u64::MAX) > max_file_bytes {
                        return Err(FileError::TooLarge { max_file_bytes }.into());
                    }
                    content.extend_from_slice(&chunk);
                }
                file = Some((filename, declared, content));
            }
            Some("expires_in_seconds") => {
                let text = field.text().await.map_err(multipart_error)?;
                expires_in_seconds =
                    Some(tollgate_core::files::expires_in_seconds(&text).map_err(ApiError::invalid)?);
            }
            // Other fields (a `purpose` older clients send) are not Anthropic's; ignored.
            _ => {}
        }
    }
    let Some((filename, declared, content)) = file else {
        return Err(ApiError::invalid("file: Field required"));
    };
    let named = stored_filename(filename.as_deref(), "");
    let mime_type = stored_mime_type(declared.as_deref(), &named);
    let upload = FileUpload {
        filename: stored_filename(filename.as_deref(), &mime_type),
        mime_type,
        content,
        expires_in_seconds,
    };
    let stored = state.tollgate.upload_file(&caller, upload).await?;
    Ok(Json(file_json(&stored)).into_response())
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTooLarge,
            "Request exceeds the maximum allowed size.",
        );
    }
    ApiError::invalid(format!(
        "The multipart body cannot be read: {}",
        error.body_text()
    ))
}

/// `GET /v1/files`: newest first, one page of `limit`.
pub(crate) async fn list_files(
    State(state): State<GatewayState>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let list_query = ListQuery {
        limit: query.get("limit").map(String::as_str),
        before_id: query.get("before_id").map(String::as_str),
        after_id: query.get("after_id").map(String::as_str),
        page: query.get("page").map(String::as_str),
    };
    let (page, limit) = list_page(&list_query).map_err(ApiError::invalid)?;
    let mut files = state.tollgate.files(&caller, &page, limit + 1).await?;
    let towards_newer = matches!(page, FilePage::Before(_));
    let has_more = crate::batches::cut_to_page(&mut files, limit, towards_newer);
    let first_id = files.first().map(|file| file.id.clone());
    let last_id = files.last().map(|file| file.id.clone());
    let next_page = last_id
        .as_deref()
        .filter(|_| has_more && !towards_newer)
        .map(next_page_cursor);
    Ok(Json(json!({
        "data": files.iter().map(file_json).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": first_id,
        "last_id": last_id,
        "next_page": next_page,
    }))
    .into_response())
}

/// `GET /v1/files/{file_id}`.
pub(crate) async fn file_metadata(
    State(state): State<GatewayState>,
    Path(file_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let file = state.tollgate.file(&caller, &file_id).await?;
    Ok(Json(file_json(&file)).into_response())
}

/// `GET /v1/files/{file_id}/content`: as Anthropic's API, only a file a tool made may be
/// downloaded, and every file here was uploaded; so a file the workspace has is refused
/// (another's is not found).
pub(crate) async fn file_content(
    State(state): State<GatewayState>,
    Path(file_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let file = state.tollgate.file(&caller, &file_id).await?;
    Err(ApiError::invalid(format!(
        "File {} is not downloadable: only files created by skills or the code execution tool can be \
         downloaded, not files you uploaded.",
        file.id
    )))
}

/// `DELETE /v1/files/{file_id}`.
pub(crate) async fn delete_file(
    State(state): State<GatewayState>,
    Path(file_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let deleted = state.tollgate.delete_file(&caller, &file_id).await?;
    // The copies providers hold go too; one that cannot be deleted there is logged, since
    // the file is gone here either way.
    for (provider_name, provider_file_id) in &deleted.provider_files {
        if let Some(Provider::Anthropic(client)) = state.providers.get(provider_name)
            && let Err(error) = client.delete_file(provider_file_id).await
        {
            tracing::warn!(provider = %provider_name, %provider_file_id, %error, "could not delete a provider's copy of a file");
        }
    }
    Ok(Json(json!({"id": deleted.file.id, "type": "file_deleted"})).into_response())
}
