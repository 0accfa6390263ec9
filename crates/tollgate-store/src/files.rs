//! The Files API's rows: each workspace's files (their bytes live outside the database, kept
//! by the service), what each organization stores in all, and the ids the providers gave
//! the files uploaded to them. An upload is refused here, exactly, when it would take its
//! organization past the quota: the total is raised by one conditional `UPDATE` in the
//! transaction that inserts the row, so two concurrent uploads cannot both pass on the same
//! room (PostgreSQL re-reads the locked row before deciding; SQLite has one writer).
//! Deleting a row lowers the total in its transaction. No money lives here.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::files::FilePage;

use crate::Store;
use crate::codec::{count_from_sql, count_to_sql, millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A file as it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: Timestamp,
    /// `None`: it does not expire.
    pub expires_at: Option<Timestamp>,
}

/// A file deleted, with the ids the providers it was uploaded to gave it (their copies are
/// the caller's to delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedFile {
    pub file: StoredFile,
    /// (provider, the provider's file id).
    pub provider_files: Vec<(String, String)>,
}

const FILE_COLUMNS: &str =
    "id, org_id, workspace_id, api_key_id, filename, mime_type, size_bytes, created_at, expires_at";

fn file_from_row(row: &impl DbRow) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        id: row.text("id").map_err(store_decode)?,
        org_id: row.text("org_id").map_err(store_decode)?,
        workspace_id: row.text("workspace_id").map_err(store_decode)?,
        api_key_id: row.text("api_key_id").map_err(store_decode)?,
        filename: row.text("filename").map_err(store_decode)?,
        mime_type: row.text("mime_type").map_err(store_decode)?,
        size_bytes: count_from_sql(row.integer("size_bytes").map_err(store_decode)?)?,
        created_at: timestamp_from_sql(row.integer("created_at").map_err(store_decode)?)?,
        expires_at: row
            .optional_integer("expires_at")
            .map_err(store_decode)?
            .map(timestamp_from_sql)
            .transpose()?,
    })
}

/// The condition that a file is still alive at `$N`.
fn alive(placeholder: &str) -> String {
    format!("(expires_at IS NULL OR expires_at > {placeholder})")
}

/// The Files API's queries, the same on every backend.
pub(crate) trait Files: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_file(&self, file: &StoredFile, quota_bytes: u64) -> Result<bool, StoreError> {
        let size = count_to_sql(file.size_bytes)?;
        let quota = count_to_sql(quota_bytes)?;
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        sqlx::query(
            "INSERT INTO file_storage (org_id, used_bytes) VALUES ($1, 0) ON CONFLICT (org_id) DO NOTHING",
        )
        .bind(file.org_id.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let raised = sqlx::query(
            "UPDATE file_storage SET used_bytes = used_bytes + $2
             WHERE org_id = $1 AND used_bytes + $2 <= $3",
        )
        .bind(file.org_id.as_str())
        .bind(size)
        .bind(quota)
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&raised) != 1 {
            transaction.rollback().await.map_err(Self::store_error)?;
            return Ok(false);
        }
        sqlx::query(&format!(
            "INSERT INTO files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(file.id.as_str())
        .bind(file.org_id.as_str())
        .bind(file.workspace_id.as_str())
        .bind(file.api_key_id.as_str())
        .bind(file.filename.as_str())
        .bind(file.mime_type.as_str())
        .bind(size)
        .bind(millis(file.created_at))
        .bind(file.expires_at.map(millis))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    async fn file(
        &self,
        workspace_id: &str,
        file_id: &str,
        now: Timestamp,
    ) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND workspace_id = $2 AND {}",
            alive("$3")
        ))
        .bind(file_id)
        .bind(workspace_id)
        .bind(millis(now))
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn files(
        &self,
        workspace_id: &str,
        page: &FilePage,
        limit: u64,
        now: Timestamp,
    ) -> Result<Vec<StoredFile>, StoreError> {
        let cursor_seq = "(SELECT seq FROM files WHERE id = $4)";
        let (condition, order, cursor) = match page {
            FilePage::Newest => (String::new(), "DESC", None),
            FilePage::Before(id) => (format!(" AND seq > {cursor_seq}"), "ASC", Some(id.as_str())),
            FilePage::After(id) => (format!(" AND seq < {cursor_seq}"), "DESC", Some(id.as_str())),
        };
        let text = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE workspace_id = $1 AND {}{condition}
             ORDER BY seq {order} LIMIT $2",
            alive("$3")
        );
        let mut query = sqlx::query(&text)
            .bind(workspace_id)
            .bind(count_to_sql(limit)?)
            .bind(millis(now));
        if let Some(cursor) = cursor {
            query = query.bind(cursor);
        }
        let rows = query
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        let mut files = rows.iter().map(file_from_row).collect::<Result<Vec<_>, _>>()?;
        if matches!(page, FilePage::Before(_)) {
            files.reverse();
        }
        Ok(files)
    }

    /// Deletes a file's row, its providers' ids (returned) and its bytes from its organization's total,
    /// in one transaction: the workspace's live file (`workspace_id` and `alive_at` given), or
    /// any file by id (neither: the purge of an expired one). The row deleted, if any.
    async fn delete_file(
        &self,
        file_id: &str,
        workspace_id: Option<&str>,
        alive_at: Option<Timestamp>,
    ) -> Result<Option<DeletedFile>, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE id = $1 AND ($2 = '' OR workspace_id = $2) AND ($3 IS NULL OR {})",
            alive("$3")
        ))
        .bind(file_id)
        .bind(workspace_id.unwrap_or_default())
        .bind(alive_at.map(millis))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let Some(file) = row.as_ref().map(file_from_row).transpose()? else {
            return Ok(None);
        };
        let provider_rows =
            sqlx::query("DELETE FROM provider_files WHERE file_id = $1 RETURNING provider, provider_file_id")
                .bind(file_id)
                .fetch_all(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
        let provider_files = provider_rows
            .iter()
            .map(|row| {
                Ok((
                    row.text("provider").map_err(store_decode)?,
                    row.text("provider_file_id").map_err(store_decode)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let deleted = sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(file_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        if Self::rows_affected(&deleted) != 1 {
            // Another transaction deleted it first and lowered the total itself.
            transaction.rollback().await.map_err(Self::store_error)?;
            return Ok(None);
        }
        sqlx::query("UPDATE file_storage SET used_bytes = used_bytes - $2 WHERE org_id = $1")
            .bind(file.org_id.as_str())
            .bind(count_to_sql(file.size_bytes)?)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(Some(DeletedFile { file, provider_files }))
    }

    async fn expired_file_ids(&self, now: Timestamp, limit: u64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(millis(now))
        .bind(count_to_sql(limit)?)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        rows.iter()
            .map(|row| row.text("id").map_err(store_decode))
            .collect()
    }

    async fn file_storage_used(&self, org_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT used_bytes FROM file_storage WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        match row {
            Some(row) => count_from_sql(row.integer("used_bytes").map_err(store_decode)?),
            None => Ok(0),
        }
    }

    async fn provider_file_id(&self, file_id: &str, provider: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT provider_file_id FROM provider_files WHERE file_id = $1 AND provider = $2")
                .bind(file_id)
                .bind(provider)
                .fetch_optional(self.write_pool())
                .await
                .map_err(Self::store_error)?;
        row.map(|row| row.text("provider_file_id").map_err(store_decode))
            .transpose()
    }

    /// Records the provider's id of a file unless one is recorded already; the recorded one.
    async fn record_provider_file(
        &self,
        file_id: &str,
        provider: &str,
        provider_file_id: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO provider_files (file_id, provider, provider_file_id, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (file_id, provider) DO NOTHING",
        )
        .bind(file_id)
        .bind(provider)
        .bind(provider_file_id)
        .bind(millis(now))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        self.provider_file_id(file_id, provider)
            .await?
            .ok_or_else(|| StoreError::Database(format!("file {file_id} has no row to name for {provider}")))
    }
}

/// The façade over the Files API's rows.
impl Store {
    /// Keeps a file's row and adds its size to its organization's total, unless that would
    /// pass `quota_bytes`: then nothing is written and the answer is `false`.
    pub async fn insert_file(&self, file: &StoredFile, quota_bytes: u64) -> Result<bool, StoreError> {
        dispatch!(self.insert_file(file, quota_bytes))
    }

    /// The workspace's file, if it has not expired at `now`.
    pub async fn file(
        &self,
        workspace_id: &str,
        file_id: &str,
        now: Timestamp,
    ) -> Result<Option<StoredFile>, StoreError> {
        dispatch!(self.file(workspace_id, file_id, now))
    }

    /// A page of the workspace's live files, newest first.
    pub async fn files(
        &self,
        workspace_id: &str,
        page: &FilePage,
        limit: u64,
        now: Timestamp,
    ) -> Result<Vec<StoredFile>, StoreError> {
        dispatch!(self.files(workspace_id, page, limit, now))
    }

    /// Deletes the workspace's live file; the row it was, if there was one.
    pub async fn delete_file(
        &self,
        workspace_id: &str,
        file_id: &str,
        now: Timestamp,
    ) -> Result<Option<DeletedFile>, StoreError> {
        dispatch!(self.delete_file(file_id, Some(workspace_id), Some(now)))
    }

    /// Deletes a file whatever its workspace or expiry (the purge of an expired one).
    pub async fn purge_file(&self, file_id: &str) -> Result<Option<DeletedFile>, StoreError> {
        dispatch!(self.delete_file(file_id, None, None))
    }

    /// Up to `limit` files expired at `now`, soonest expired first.
    pub async fn expired_file_ids(&self, now: Timestamp, limit: u64) -> Result<Vec<String>, StoreError> {
        dispatch!(self.expired_file_ids(now, limit))
    }

    /// The bytes an organization's files take in all, expired ones not yet purged included.
    pub async fn file_storage_used(&self, org_id: &str) -> Result<u64, StoreError> {
        dispatch!(self.file_storage_used(org_id))
    }

    /// The id a provider gave the file, once it was uploaded there.
    pub async fn provider_file_id(
        &self,
        file_id: &str,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self.provider_file_id(file_id, provider))
    }

    /// Records the provider's id of a file; when another was recorded first (a concurrent
    /// first use), that one is kept and returned.
    pub async fn record_provider_file(
        &self,
        file_id: &str,
        provider: &str,
        provider_file_id: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        dispatch!(self.record_provider_file(file_id, provider, provider_file_id, now))
    }
}
