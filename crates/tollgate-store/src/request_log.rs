//! The request log: an organization's usage records (one per request, written with its
//! settlement or refusal) searched by time, workspace, key, model, status, request id and
//! client session, newest first, a page at a time by keyset (when it ended, then its row),
//! so a page costs the same however deep it is.
//!
//! Written once for both backends over `Dialect`. A filter that is not set is bound as
//! NULL and keeps every row (`CAST($n AS TEXT) IS NULL OR …`, which both databases read).

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use crate::admin_model::{REQUEST_LOG_PAGE_MAX, RequestLogCursor, RequestLogEntry, RequestLogQuery};
use crate::codec::millis;
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::{DbRow, column, usage_record_from_row};

pub(crate) trait RequestLog: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn request_log(
        &self,
        org_id: &str,
        query: &RequestLogQuery,
    ) -> Result<Vec<RequestLogEntry>, StoreError> {
        let limit = query.limit.clamp(1, REQUEST_LOG_PAGE_MAX);
        let rows = sqlx::query(
            "SELECT * FROM usage_records
             WHERE org_id = $1
               AND (CAST($2 AS BIGINT) IS NULL OR ended_at >= $2)
               AND (CAST($3 AS BIGINT) IS NULL OR ended_at < $3)
               AND (CAST($4 AS TEXT) IS NULL OR workspace_id = $4)
               AND (CAST($5 AS TEXT) IS NULL OR api_key_id = $5)
               AND (CAST($6 AS TEXT) IS NULL OR model = $6)
               AND (CAST($7 AS TEXT) IS NULL OR status = $7)
               AND (CAST($8 AS TEXT) IS NULL OR request_id = $8)
               AND (CAST($9 AS TEXT) IS NULL OR client_session_id = $9)
               AND (CAST($10 AS BIGINT) IS NULL OR ended_at < $10 OR (ended_at = $10 AND id < $11))
             ORDER BY ended_at DESC, id DESC
             LIMIT $12",
        )
        .bind(org_id)
        .bind(query.from.map(millis))
        .bind(query.to.map(millis))
        .bind(query.workspace_id.as_deref())
        .bind(query.api_key_id.as_deref())
        .bind(query.model.as_deref())
        .bind(query.status.as_deref())
        .bind(query.request_id.as_deref())
        .bind(query.session_id.as_deref())
        .bind(query.after.map(|cursor| cursor.ended_at_millis))
        .bind(query.after.map_or(0, |cursor| cursor.row))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        rows.iter()
            .map(|row| {
                Ok(RequestLogEntry {
                    cursor: RequestLogCursor {
                        ended_at_millis: column(row, "ended_at")?,
                        row: column(row, "id")?,
                    },
                    record: usage_record_from_row(row)?,
                })
            })
            .collect()
    }
}
