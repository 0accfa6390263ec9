//! Files named in a Messages request: an `image` or `document` block whose `source` is
//! `{"type": "file", "file_id": …}` names a file of the caller's workspace (another is
//! refused, as Anthropic refuses a file id it does not know). Before the request is routed,
//! each provider among the model's deployments gets its own body, in which only those
//! sources change: an `anthropic` provider gets the id it gave the file, uploading it there
//! at its first use and remembering the id; any other provider (which takes no file ids)
//! gets the bytes inline, as a base64 source for images and PDFs or a text source for plain
//! text. A request that names no file goes on byte for byte, untouched by any of this.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tollgate_core::catalog::ResolvedModel;
use tollgate_core::files::{InlineSource, inline_source};
use tollgate_service::{ApiCaller, FileError, StoredFile};
use tollgate_upstream::Provider;

use crate::GatewayState;
use crate::error::ApiError;

/// The body one provider gets, as JSON and as bytes.
pub(crate) struct ProviderBody {
    pub(crate) json: Map<String, Value>,
    pub(crate) bytes: Bytes,
}

/// Each provider's body of a request that names files, or why that provider cannot take it.
pub(crate) struct FileBodies {
    by_provider: HashMap<String, Result<ProviderBody, ApiError>>,
    /// The named files' sizes added up: what a provider reading them by id reads besides the
    /// body, and so what bounds their input tokens (a token encodes at least one byte).
    named_bytes: usize,
}

impl FileBodies {
    /// The bytes of the files the request names, in all.
    pub(crate) fn named_bytes(&self) -> usize {
        self.named_bytes
    }

    /// The body `provider` gets, or why it cannot be sent there.
    pub(crate) fn for_provider(&self, provider: &str) -> Option<&Result<ProviderBody, ApiError>> {
        self.by_provider.get(provider)
    }
}

/// The ids of the files the request's content blocks name (messages and system prompt,
/// tool results included), each once.
pub(crate) fn named_file_ids(body: &Map<String, Value>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let contents = messages
        .filter_map(|message| message.get("content"))
        .chain(body.get("system"));
    for content in contents {
        collect_file_ids(content, &mut ids);
    }
    ids
}

fn collect_file_ids(content: &Value, ids: &mut BTreeSet<String>) {
    let Value::Array(blocks) = content else {
        return;
    };
    for block in blocks {
        if let Some(id) = block.get("source").and_then(file_id_of) {
            ids.insert(id.to_owned());
        }
        if let Some(nested) = block.get("content") {
            collect_file_ids(nested, ids);
        }
    }
}

/// The bodies for every provider of the model's deployments, when the request names files;
/// `None` when it names none.
pub(crate) async fn file_bodies(
    state: &GatewayState,
    caller: &ApiCaller,
    resolved: &ResolvedModel<'_>,
    body: &Map<String, Value>,
) -> Result<Option<FileBodies>, ApiError> {
    let ids = named_file_ids(body);
    if ids.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::with_capacity(ids.len());
    for id in &ids {
        match state.tollgate.file(caller, id).await {
            Ok(file) => files.push(file),
            // Anthropic answers an unknown file id in a message with a 400, not a 404.
            Err(FileError::NotFound(id)) => {
                return Err(ApiError::invalid(format!("File not found: {id}")));
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut contents: HashMap<String, Vec<u8>> = HashMap::new();
    let mut by_provider = HashMap::new();
    for deployment in &resolved.model.deployments {
        if by_provider.contains_key(&deployment.provider) {
            continue;
        }
        let Some(provider) = state.providers.get(&deployment.provider) else {
            continue;
        };
        let sources = sources_for(state, &deployment.provider, provider, &files, &mut contents).await;
        let rewritten = sources.and_then(|sources| {
            let json = rewrite_sources(body, &sources);
            let bytes = serde_json::to_vec(&json).map_err(ApiError::internal)?;
            Ok(ProviderBody {
                json,
                bytes: Bytes::from(bytes),
            })
        });
        by_provider.insert(deployment.provider.clone(), rewritten);
    }
    let named_bytes = files
        .iter()
        .map(|file| usize::try_from(file.size_bytes).unwrap_or(usize::MAX))
        .fold(0_usize, usize::saturating_add);
    Ok(Some(FileBodies {
        by_provider,
        named_bytes,
    }))
}

/// The body with each `file` source whose id `sources` maps replaced by its replacement;
/// every other part of it as it was.
fn rewrite_sources(body: &Map<String, Value>, sources: &HashMap<String, Value>) -> Map<String, Value> {
    let mut rewritten = body.clone();
    if let Some(Value::Array(messages)) = rewritten.get_mut("messages") {
        for message in messages {
            if let Some(content) = message.get_mut("content") {
                replace_sources(content, sources);
            }
        }
    }
    if let Some(system) = rewritten.get_mut("system") {
        replace_sources(system, sources);
    }
    rewritten
}

fn replace_sources(content: &mut Value, sources: &HashMap<String, Value>) {
    let Value::Array(blocks) = content else {
        return;
    };
    for block in blocks {
        if let Some(source) = block.get_mut("source")
            && let Some(replacement) = file_id_of(source).and_then(|id| sources.get(id))
        {
            *source = replacement.clone();
        }
        if let Some(nested) = block.get_mut("content") {
            replace_sources(nested, sources);
        }
    }
}

/// What each file's source becomes for one provider.
async fn sources_for(
    state: &GatewayState,
    provider_name: &str,
    provider: &Provider,
    files: &[StoredFile],
    contents: &mut HashMap<String, Vec<u8>>,
) -> Result<HashMap<String, Value>, ApiError> {
    let mut sources = HashMap::with_capacity(files.len());
    for file in files {
        let source = match provider {
            Provider::Anthropic(client) => {
                let provider_file_id = match state.tollgate.provider_file_id(&file.id, provider_name).await? {
                    Some(known) => known,
                    None => {
                        let content = content_of(state, file, contents).await?.clone();
                        let uploaded = client
                            .upload_file(content, &file.filename, &file.mime_type)
                            .await
                            .map_err(|error| ApiError::from_upstream(&error))?;
                        state
                            .tollgate
                            .remember_provider_file(&file.id, provider_name, &uploaded)
                            .await?
                    }
                };
                json!({"type": "file", "file_id": provider_file_id})
            }
            _ => inline(file, content_of(state, file, contents).await?)?,
        };
        sources.insert(file.id.clone(), source);
    }
    Ok(sources)
}

/// A file's bytes, read once per request.
async fn content_of<'a>(
    state: &GatewayState,
    file: &StoredFile,
    contents: &'a mut HashMap<String, Vec<u8>>,
) -> Result<&'a Vec<u8>, ApiError> {
    if !contents.contains_key(&file.id) {
        let content = state.tollgate.file_bytes(file).await?;
        contents.insert(file.id.clone(), content);
    }
    contents
        .get(&file.id)
        .ok_or_else(|| ApiError::internal("a file's bytes were just read"))
}

/// The file's bytes as a source of their own, for a provider that takes no file ids.
fn inline(file: &StoredFile, content: &[u8]) -> Result<Value, ApiError> {
    match inline_source(&file.mime_type) {
        InlineSource::Base64 => Ok(json!({
            "type": "base64",
            "media_type": file.mime_type,
            "data": base64::engine::general_purpose::STANDARD.encode(content),
        })),
        InlineSource::Text => {
            let text = std::str::from_utf8(content).map_err(|_| {
                ApiError::invalid(format!("File {} is text/plain but not valid UTF-8.", file.id))
            })?;
            Ok(json!({"type": "text", "media_type": "text/plain", "data": text}))
        }
        InlineSource::None => Err(ApiError::invalid(format!(
            "File {} ({}) cannot be sent to this model's provider: only images, PDFs and plain text \
             files can be used there.",
            file.id, file.mime_type
        ))),
    }
}

/// The file id of a `{"type": "file", "file_id": …}` source.
fn file_id_of(source: &Value) -> Option<&str> {
    if source.get("type").and_then(Value::as_str) != Some("file") {
        return None;
    }
    source.get("file_id").and_then(Value::as_str)
}

#[cfg(test)]
mod tests;
