//! The Files API's use cases: a workspace's keys upload files, list, read and delete them;
//! a Messages request may name one by id. The bytes are kept here, one file each under
//! `<directory>/<workspace id>/<file id>`; the rows (and the organization's total, which
//! the quota bounds exactly) are the store's. An expired file is "not found" at once and
//! deleted, row and bytes, by the maintenance pass. The providers' ids of a file uploaded
//! to them are remembered per provider. No money is involved.

use std::path::{Path, PathBuf};

use chrono::Duration;
use tollgate_core::files::{FilePage, fits_quota};
use tollgate_core::ids::IdKind;
use tollgate_store::{DeletedFile, StoredFile};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::keys::ApiCaller;

/// Where files live and how much they may take (`[files]`).
#[derive(Clone, Debug)]
pub struct FileSettings {
    pub directory: PathBuf,
    /// The largest file an upload may carry.
    pub max_file_bytes: u64,
    /// What one organization's files may take in all.
    pub organization_quota_bytes: u64,
}

/// An upload as the client sent it.
#[derive(Clone, Debug)]
pub struct FileUpload<Content> {
    pub filename: String,
    pub mime_type: String,
    pub content: Content,
    pub expires_in_seconds: Option<i64>,
}

/// Why a file use case refused, beside the service's own errors.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than {max_file_bytes} bytes")]
    TooLarge { max_file_bytes: u64 },
    #[error("the organization's file storage quota is exhausted")]
    OverQuota,
    #[error("file not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<tollgate_store::StoreError> for FileError {
    fn from(error: tollgate_store::StoreError) -> FileError {
        FileError::Service(error.into())
    }
}

/// Files expired at one maintenance pass purged at most, so a pass stays short.
const PURGED_PER_PASS_MAX: u64 = 1_000;

impl Tollgate {
    /// Where files live; set once at start (`Application::build`).
    pub fn set_file_settings(&self, settings: FileSettings) {
        let _ = self.inner.files.set(settings);
    }

    /// The largest file an upload may carry.
    pub fn max_file_bytes(&self) -> Result<u64, ServiceError> {
        Ok(self.file_settings()?.max_file_bytes)
    }

    fn file_settings(&self) -> Result<&FileSettings, ServiceError> {
        self.inner
            .files
            .get()
            .ok_or_else(|| ServiceError::Unavailable("file storage is not configured".to_owned()))
    }

    /// Keeps an uploaded file for the caller's workspace: its bytes first, then its row,
    /// which the store refuses when the organization's files would pass the quota (the
    /// bytes are removed again then, and on any failure).
    pub async fn upload_file<Content>(
        &self,
        caller: &ApiCaller,
        upload: FileUpload<Content>,
    ) -> Result<StoredFile, FileError>
    where
        Content: AsRef<[u8]> + Send + 'static,
    {
        let settings = self.file_settings()?.clone();
        let size_bytes = u64::try_from(upload.content.as_ref().len()).unwrap_or(u64::MAX);
        if size_bytes > settings.max_file_bytes {
            return Err(FileError::TooLarge {
                max_file_bytes: settings.max_file_bytes,
            });
        }
        // A first look, so a full organization's upload is not written to disk; the
        // store's conditional insert below is what decides.
        let used_bytes = self.store().file_storage_used(&caller.org_id).await?;
        if !fits_quota(used_bytes, size_bytes, settings.organization_quota_bytes) {
            return Err(FileError::OverQuota);
        }
        let now = self.now();
        let file = StoredFile {
            id: crate::random::ordered_id(IdKind::File, now),
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            api_key_id: caller.key_id.clone(),
            filename: upload.filename,
            mime_type: upload.mime_type,
            size_bytes,
            created_at: now,
            expires_at: upload
                .expires_in_seconds
                .map(|seconds| now + Duration::seconds(seconds)),
        };
        let path = file_path(&settings.directory, &file);
        write_bytes(path.clone(), upload.content).await?;
        match self
            .store()
            .insert_file(&file, settings.organization_quota_bytes)
            .await
        {
            Ok(true) => Ok(file),
            Ok(false) => {
                remove_bytes(path).await;
                Err(FileError::OverQuota)
            }
            Err(error) => {
                remove_bytes(path).await;
                Err(error.into())
            }
        }
    }

    /// The caller's workspace's live file; another workspace's, or an expired one, is not
    /// found.
    pub async fn file(&self, caller: &ApiCaller, file_id: &str) -> Result<StoredFile, FileError> {
        self.store()
            .file(&caller.workspace_id, file_id, self.now())
            .await?
            .ok_or_else(|| FileError::NotFound(file_id.to_owned()))
    }

    /// A page of the caller's workspace's live files, newest first.
    pub async fn files(
        &self,
        caller: &ApiCaller,
        page: &FilePage,
        limit: u64,
    ) -> Result<Vec<StoredFile>, FileError> {
        Ok(self
            .store()
            .files(&caller.workspace_id, page, limit, self.now())
            .await?)
    }

    /// Deletes the caller's workspace's file, row then bytes; the copies providers hold are
    /// named in the answer, for the caller to delete there.
    pub async fn delete_file(&self, caller: &ApiCaller, file_id: &str) -> Result<DeletedFile, FileError> {
        let deleted = self
            .store()
            .delete_file(&caller.workspace_id, file_id, self.now())
            .await?
            .ok_or_else(|| FileError::NotFound(file_id.to_owned()))?;
        remove_bytes(file_path(&self.file_settings()?.directory, &deleted.file)).await;
        Ok(deleted)
    }

    /// A file's bytes, as they were uploaded.
    pub async fn file_bytes(&self, file: &StoredFile) -> Result<Vec<u8>, FileError> {
        let path = file_path(&self.file_settings()?.directory, file);
        tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .map_err(|error| ServiceError::Unavailable(format!("reading a file's bytes: {error}")))?
            .map_err(|error| {
                FileError::Service(ServiceError::Unavailable(format!(
                    "cannot read the bytes of file {}: {error}",
                    file.id
                )))
            })
    }

    /// The id `provider` gave the file, once it was uploaded there.
    pub async fn provider_file_id(&self, file_id: &str, provider: &str) -> Result<Option<String>, FileError> {
        Ok(self.store().provider_file_id(file_id, provider).await?)
    }

    /// Remembers the id `provider` gave the file; the one to use (an earlier record wins).
    pub async fn remember_provider_file(
        &self,
        file_id: &str,
        provider: &str,
        provider_file_id: &str,
    ) -> Result<String, FileError> {
        Ok(self
            .store()
            .record_provider_file(file_id, provider, provider_file_id, self.now())
            .await?)
    }

    /// Deletes the files expired at `now`, rows and bytes; how many.
    pub(crate) async fn purge_expired_files(
        &self,
        now: tollgate_core::Timestamp,
    ) -> Result<u64, ServiceError> {
        let Some(settings) = self.inner.files.get() else {
            return Ok(0);
        };
        let mut purged = 0;
        for file_id in self.store().expired_file_ids(now, PURGED_PER_PASS_MAX).await? {
            if let Some(deleted) = self.store().purge_file(&file_id).await? {
                remove_bytes(file_path(&settings.directory, &deleted.file)).await;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Where a file's bytes live. Both names are tollgate's own ids, one path segment each.
fn file_path(directory: &Path, file: &StoredFile) -> PathBuf {
    directory.join(&file.workspace_id).join(&file.id)
}

/// Writes the bytes whole under a temporary name, then renames: a file's path never holds
/// part of its bytes.
async fn write_bytes<Content>(path: PathBuf, content: Content) -> Result<(), ServiceError>
where
    Content: AsRef<[u8]> + Send + 'static,
{
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let partial = path.with_extension("partial");
        std::fs::write(&partial, content.as_ref())?;
        std::fs::rename(&partial, &path)
    })
    .await
    .map_err(|error| ServiceError::Unavailable(format!("writing a file's bytes: {error}")))?
    .map_err(|error| ServiceError::Unavailable(format!("cannot write a file's bytes: {error}")))
}

/// Removes a file's bytes; a failure is logged (the row is gone, so nothing names them).
async fn remove_bytes(path: PathBuf) {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_file(&path)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(error)) => tracing::warn!(path = %shown, %error, "could not remove a file's bytes"),
        Err(error) => tracing::warn!(path = %shown, %error, "could not remove a file's bytes"),
    }
}
