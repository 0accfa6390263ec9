//! Optional capture of request and response bodies, per workspace (issue #17). Off by
//! default: a workspace captures only once an organization admin turns it on, with a
//! retention period, a size cap per body and JSON paths to redact.
//!
//! What this module guarantees: redaction happens here, before a capture reaches the store,
//! so a redacted value is never written; a body over the cap is cut at a character boundary
//! and marked truncated; keeping a capture never fails or delays the request it describes
//! (the gateway writes it after the response is delivered, and a store failure is only
//! logged). The hot path asks `Tollgate::capture_policy`, a cached lookup, and holds no body
//! and allocates nothing for capture when the answer is `None`.
//!
//! Redaction paths: dot-separated object keys, each optionally followed by `[*]` (every
//! element of an array) or `[N]` (element N), e.g. `system`, `messages[*].content`,
//! `metadata.user_id`, `[*].text`. A matched value, whatever its type, is replaced by the
//! string `"[redacted]"`. Paths apply to the request body, a JSON reply and each streamed
//! event's data; a body that is not JSON while paths are configured is withheld whole.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use tollgate_store::{AuditEntry, CaptureSettings, CapturedResponseKind, RequestCapture};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::keys::ApiCaller;

/// What a redacted value is replaced by.
pub const REDACTED: &str = "[redacted]";

/// What stands for a body that could not be read as JSON while paths were to be redacted.
pub const WITHHELD: &str = "[withheld: not JSON, so its redaction paths could not be applied]";

/// The most redaction paths a workspace may configure.
pub const REDACT_PATHS_MAX: usize = 64;

/// The longest retention a workspace may set, in days.
pub const RETENTION_DAYS_MAX: u32 = 3_650;

/// One step of a redaction path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Every,
    Index(usize),
}

/// A parsed redaction path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactPath {
    steps: Vec<Step>,
}

impl RedactPath {
    /// Reads a path of the syntax the module doc gives; an error names what is wrong.
    pub fn parse(text: &str) -> Result<RedactPath, String> {
        let invalid = |why: &str| format!("redaction path '{text}': {why}");
        let mut steps = Vec::new();
        let mut rest = text;
        if rest.is_empty() {
            return Err(invalid("is empty"));
        }
        loop {
            let key_len = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..key_len];
            if !key.is_empty() {
                if !key.chars().all(|character| {
                    character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '$')
                }) {
                    return Err(invalid("a key may hold letters, digits, '_', '-' and '$' only"));
                }
                steps.push(Step::Key(key.to_owned()));
            } else if !(steps.is_empty() && rest.starts_with('[')) {
                return Err(invalid("a key is missing"));
            }
            rest = &rest[key_len..];
            while let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| invalid("'[' is not closed"))?;
                let inside = &after[..close];
                steps.push(if inside == "*" {
                    Step::Every
                } else {
                    Step::Index(
                        inside
                            .parse()
                            .map_err(|_| invalid("brackets hold '*' or an index"))?,
                    )
                });
                rest = &after[close + 1..];
            }
            if rest.is_empty() {
                break;
            }
            rest = rest
                .strip_prefix('.')
                .ok_or_else(|| invalid("']' must be followed by '.', '[' or the end"))?;
        }
        Ok(RedactPath { steps })
    }

    /// Replaces every value the path reaches in `value`; whether any was.
    fn redact(&self, value: &mut Value) -> bool {
        redact_steps(&self.steps, value)
    }
}

fn redact_steps(steps: &[Step], value: &mut Value) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return true;
    };
    match (step, value) {
        (Step::Key(key), Value::Object(object)) => {
            object.get_mut(key).is_some_and(|inner| redact_steps(rest, inner))
        }
        // Every element is visited: redacting stops at no first match.
        (Step::Every, Value::Array(items)) => {
            let mut redacted = false;
            for item in items {
                redacted |= redact_steps(rest, item);
            }
            redacted
        }
        (Step::Index(index), Value::Array(items)) => {
            items.get_mut(*index).is_some_and(|item| redact_steps(rest, item))
        }
        _ => false,
    }
}

/// A workspace's capture settings, with its paths parsed: what the hot path consults.
#[derive(Clone, Debug)]
pub struct CapturePolicy {
    pub settings: CaptureSettings,
    paths: Vec<RedactPath>,
}

/// A workspace's policy as cached: `None` captures nothing.
pub(crate) type CachedPolicy = Option<Arc<CapturePolicy>>;

/// A body as it will be written: redacted, cut to the cap, and the size it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedBody {
    pub text: String,
    pub bytes: u64,
    pub truncated: bool,
}

impl CapturePolicy {
    /// Checks settings as an admin gave them: retention and cap in range, paths readable.
    pub fn new(settings: CaptureSettings) -> Result<CapturePolicy, String> {
        if settings.retention_days == 0 || settings.retention_days > RETENTION_DAYS_MAX {
            return Err(format!("retention_days must be from 1 to {RETENTION_DAYS_MAX}"));
        }
        if settings.body_bytes_max == 0 {
            return Err("body_bytes_max must be at least 1".to_owned());
        }
        if settings.redact_paths.len() > REDACT_PATHS_MAX {
            return Err(format!("at most {REDACT_PATHS_MAX} redaction paths"));
        }
        let paths = settings
            .redact_paths
            .iter()
            .map(|path| RedactPath::parse(path))
            .collect::<Result<_, _>>()?;
        Ok(CapturePolicy { settings, paths })
    }

    /// Whether any path is configured: without one, bodies are kept as they came.
    pub fn redacts(&self) -> bool {
        !self.paths.is_empty()
    }

    /// A JSON text with the configured paths redacted: borrowed as it is when there is
    /// nothing to redact, `WITHHELD` when it is not JSON.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.paths.is_empty() {
            return Cow::Borrowed(text);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(text) else {
            return Cow::Borrowed(WITHHELD);
        };
        // Every path is applied: redacting stops at no first match.
        let mut changed = false;
        for path in &self.paths {
            changed |= path.redact(&mut value);
        }
        if changed {
            Cow::Owned(value.to_string())
        } else {
            Cow::Borrowed(text)
        }
    }

    /// A whole JSON body (the request as received, a reply as delivered), redacted and cut.
    pub fn json_body(&self, body: &[u8]) -> CapturedBody {
        let text = String::from_utf8_lossy(body);
        let redacted = self.redact_text(&text);
        let mut captured = self.stream();
        captured.push(&redacted, body.len());
        captured.finish()
    }

    /// An empty capture of a streamed body, filled as it is delivered.
    pub fn stream(&self) -> StreamCapture {
        StreamCapture {
            text: String::new(),
            bytes: 0,
            truncated: false,
            cap: usize::try_from(self.settings.body_bytes_max).unwrap_or(usize::MAX),
        }
    }
}

/// A body captured piece by piece (a stream's events as delivered), kept up to the cap.
#[derive(Debug)]
pub struct StreamCapture {
    text: String,
    bytes: u64,
    truncated: bool,
    cap: usize,
}

impl StreamCapture {
    /// Whether anything more pushed would be cut: the caller may skip redacting it.
    pub fn is_full(&self) -> bool {
        self.truncated
    }

    /// Appends a piece (already redacted) of what was `delivered_bytes` long, cut at the
    /// cap on a character boundary.
    pub fn push(&mut self, piece: &str, delivered_bytes: usize) {
        self.bytes += delivered_bytes as u64;
        if self.truncated {
            return;
        }
        let room = self.cap.saturating_sub(self.text.len());
        if piece.len() <= room {
            self.text.push_str(piece);
            return;
        }
        let mut end = room;
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&piece[..end]);
        self.truncated = true;
    }

    /// Counts a piece that is not kept (the capture is already full).
    pub fn count(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        self.truncated = true;
    }

    pub fn finish(self) -> CapturedBody {
        CapturedBody {
            text: self.text,
            bytes: self.bytes,
            truncated: self.truncated,
        }
    }
}

const MILLIS_A_DAY: i64 = 86_400_000;

impl Tollgate {
    /// The workspace's capture policy, `None` when it captures nothing (cached for the
    /// key-cache TTL, like its limits). A store failure reads as `None`: capture never
    /// fails a request.
    pub async fn capture_policy(&self, workspace_id: &str) -> Option<Arc<CapturePolicy>> {
        match self.cached_capture_policy(workspace_id).await {
            Ok(policy) => policy,
            Err(error) => {
                tracing::warn!(%error, workspace_id, "could not read capture settings; not capturing");
                None
            }
        }
    }

    /// Keeps a request's capture; a failure is logged, never returned.
    pub async fn keep_capture(
        &self,
        policy: &CapturePolicy,
        caller: &ApiCaller,
        request_id: &str,
        request: CapturedBody,
        response_kind: CapturedResponseKind,
        response: CapturedBody,
    ) {
        let captured_at = self.now();
        let retention =
            chrono::Duration::milliseconds(i64::from(policy.settings.retention_days) * MILLIS_A_DAY);
        let capture = RequestCapture {
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            request_id: request_id.to_owned(),
            captured_at,
            expires_at: captured_at + retention,
            request_body: request.text,
            request_bytes: request.bytes,
            request_truncated: request.truncated,
            response_kind,
            response_body: response.text,
            response_bytes: response.bytes,
            response_truncated: response.truncated,
        };
        if let Err(error) = self.store().insert_capture(&capture).await {
            tracing::warn!(%error, request_id, "could not keep a request's capture");
        }
    }

    /// Turns a workspace's capture on, changes it, or (with `None`) turns it off; audited.
    /// Takes effect here at once and on other replicas within the key-cache TTL.
    pub(crate) async fn set_capture_settings(
        &self,
        org_id: &str,
        workspace_id: &str,
        settings: Option<CaptureSettings>,
        audit: AuditEntry,
    ) -> Result<(), ServiceError> {
        let settings = settings
            .map(CapturePolicy::new)
            .transpose()
            .map_err(ServiceError::Invalid)?
            .map(|policy| policy.settings);
        self.store()
            .set_capture_settings(org_id, workspace_id, settings.as_ref(), self.now(), audit)
            .await?;
        self.inner.limits_cache.forget_capture(workspace_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// What names the Default workspace where a workspace id is expected for capture.
pub const DEFAULT_WORKSPACE: &str = "default";

impl crate::OrgAdmin {
    /// The id of the organization's workspace `workspace_id` names (`DEFAULT_WORKSPACE`
    /// names the Default one); another organization's is not found.
    async fn capture_workspace(&self, workspace_id: &str) -> Result<String, ServiceError> {
        if workspace_id == DEFAULT_WORKSPACE {
            return self.default_workspace_id().await;
        }
        Ok(self.workspace(workspace_id).await?.id)
    }

    /// The workspace's capture settings; `None` when it captures nothing.
    pub async fn capture_settings(
        &self,
        workspace_id: &str,
    ) -> Result<Option<CaptureSettings>, ServiceError> {
        let workspace_id = self.capture_workspace(workspace_id).await?;
        Ok(self.tollgate().store().capture_settings(&workspace_id).await?)
    }

    /// Turns the workspace's capture on or changes it, or turns it off (`None`); audited
    /// as "capture.settings".
    pub async fn set_capture_settings(
        &self,
        workspace_id: &str,
        settings: Option<CaptureSettings>,
    ) -> Result<(), ServiceError> {
        let workspace_id = self.capture_workspace(workspace_id).await?;
        let details = match &settings {
            Some(settings) => format!(
                "on: retention_days={} body_bytes_max={} redact_paths={}",
                settings.retention_days,
                settings.body_bytes_max,
                settings.redact_paths.join(",")
            ),
            None => "off".to_owned(),
        };
        let audit = self.audit("capture.settings", &workspace_id, details);
        self.tollgate()
            .set_capture_settings(self.org_id(), &workspace_id, settings, audit)
            .await
    }

    /// The capture of one of the organization's requests; `NotFound` when there is none
    /// (never captured, purged, or another organization's).
    pub async fn request_capture(&self, request_id: &str) -> Result<RequestCapture, ServiceError> {
        self.tollgate()
            .store()
            .request_capture(self.org_id(), request_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no capture of request '{request_id}' is kept")))
    }
}
