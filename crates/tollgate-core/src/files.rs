//! The rules of the Files API that need no storage: how long a file may live
//! (`expires_in_seconds`), which page of a workspace's files a list asks for (`limit`,
//! `before_id` / `after_id`, or the opaque `page` cursor), whether an upload fits the
//! organization's storage quota, what a stored file's name and MIME type are, and how a
//! file's bytes may stand in a Messages request for an upstream that takes no file ids.
//! Sizes are bytes as `u64`; the store keeps the organization's total exact.

/// The shortest and longest `expires_in_seconds` an upload may ask for (one hour, ninety
/// days), as Anthropic's API bounds it.
pub const EXPIRES_IN_SECONDS_MIN: i64 = 3_600;
pub const EXPIRES_IN_SECONDS_MAX: i64 = 7_776_000;

/// A list's page size when none is asked for, and the largest one may ask for.
pub const LIST_LIMIT_DEFAULT: u64 = 20;
pub const LIST_LIMIT_MAX: u64 = 1_000;

/// What opens a `page` cursor (`next_page`), as Anthropic's are opened.
pub const PAGE_CURSOR_PREFIX: &str = "page_";

/// The `expires_in_seconds` of an upload, checked against its bounds.
pub fn expires_in_seconds(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(seconds) if (EXPIRES_IN_SECONDS_MIN..=EXPIRES_IN_SECONDS_MAX).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "expires_in_seconds: Input should be an integer from {EXPIRES_IN_SECONDS_MIN} to {EXPIRES_IN_SECONDS_MAX}"
        )),
    }
}

/// Which page of a workspace's files, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilePage {
    /// The newest.
    Newest,
    /// Those just newer than this file id.
    Before(String),
    /// Those just older than this file id (`after_id`, or a `page` cursor).
    After(String),
}

/// A list request as the client gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery<'a> {
    pub limit: Option<&'a str>,
    pub before_id: Option<&'a str>,
    pub after_id: Option<&'a str>,
    pub page: Option<&'a str>,
}

/// The page a list asks for and its size. At most one cursor may be given.
pub fn list_page(query: &ListQuery<'_>) -> Result<(FilePage, u64), String> {
    let limit = match query.limit {
        None => LIST_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
            .ok_or_else(|| format!("limit: Input should be an integer from 1 to {LIST_LIMIT_MAX}"))?,
    };
    let page = match (query.before_id, query.after_id, query.page) {
        (None, None, None) => FilePage::Newest,
        (Some(before), None, None) => FilePage::Before(before.to_owned()),
        (None, Some(after), None) => FilePage::After(after.to_owned()),
        (None, None, Some(cursor)) => FilePage::After(
            cursor
                .strip_prefix(PAGE_CURSOR_PREFIX)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| format!("page: '{cursor}' is not a page cursor of this list"))?
                .to_owned(),
        ),
        _ => return Err("Give at most one of before_id, after_id and page.".to_owned()),
    };
    Ok((page, limit))
}

/// The `next_page` cursor after a page whose last file is `last_id`.
pub fn next_page_cursor(last_id: &str) -> String {
    format!("{PAGE_CURSOR_PREFIX}{last_id}")
}

/// Whether `size_bytes` more fits an organization that stores `used_bytes` under a quota
/// of `quota_bytes` (a total past `u64` never fits).
pub fn fits_quota(used_bytes: u64, size_bytes: u64, quota_bytes: u64) -> bool {
    used_bytes
        .checked_add(size_bytes)
        .is_some_and(|total| total <= quota_bytes)
}

/// The name a file is kept under: the last path component of what the client sent
/// (either separator), or `unnamed` with the extension of its MIME type when that is empty.
/// At most 500 characters, as Anthropic keeps them.
pub fn stored_filename(sent: Option<&str>, mime_type: &str) -> String {
    let last = sent
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    if last.is_empty() {
        return match extension_of(mime_type) {
            Some(extension) => format!("unnamed.{extension}"),
            None => "unnamed".to_owned(),
        };
    }
    last.chars().take(500).collect()
}

/// Types by extension, for parts that came without a useful `Content-Type`.
const MIME_BY_EXTENSION: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
];

fn extension_of(mime_type: &str) -> Option<&'static str> {
    MIME_BY_EXTENSION
        .iter()
        .find(|(_, mime)| *mime == mime_type)
        .map(|(extension, _)| *extension)
}

/// The MIME type a file is kept with: the part's own `Content-Type` unless it is missing
/// or the generic `application/octet-stream`, else the one its extension names, else the
/// generic one.
pub fn stored_mime_type(declared: Option<&str>, filename: &str) -> String {
    let declared = declared
        .map(|text| {
            text.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|text| !text.is_empty() && text != "application/octet-stream");
    if let Some(declared) = declared {
        return declared;
    }
    let extension = filename
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    MIME_BY_EXTENSION
        .iter()
        .find(|(known, _)| *known == extension)
        .map_or("application/octet-stream", |(_, mime)| mime)
        .to_owned()
}

/// How a file's bytes stand in a content block for an upstream that takes no file ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InlineSource {
    /// `{"type": "base64", "media_type", "data"}`: images and PDFs.
    Base64,
    /// `{"type": "text", "media_type": "text/plain", "data"}`: plain text (a document).
    Text,
    /// No source can carry it.
    None,
}

/// The inline source for a file of `mime_type`, as Anthropic's Messages API takes them.
pub fn inline_source(mime_type: &str) -> InlineSource {
    match mime_type {
        "application/pdf" | "image/jpeg" | "image/png" | "image/gif" | "image/webp" => InlineSource::Base64,
        "text/plain" => InlineSource::Text,
        _ => InlineSource::None,
    }
}

#[cfg(test)]
mod tests;
