//! Stored responses of the Responses API: a response made with `store` is kept for the
//! caller's workspace for `RESPONSES_KEPT_DAYS` (OpenAI's own retention), then deleted by
//! the maintenance pass; until then the workspace's keys may continue it
//! (`previous_response_id`), read it and delete it. What is kept is wire JSON the HTTP crate
//! writes, opaque here; no money is involved.

use chrono::Duration;
use tollgate_store::StoredResponse;

use crate::Tollgate;
use crate::error::ServiceError;
use crate::keys::ApiCaller;

/// How long a stored response is kept.
pub const RESPONSES_KEPT_DAYS: i64 = 30;

impl Tollgate {
    /// Keeps a response for the caller's workspace, from now until it expires.
    pub async fn keep_response(
        &self,
        caller: &ApiCaller,
        response_id: &str,
        input_items: String,
        response: String,
    ) -> Result<(), ServiceError> {
        let now = self.now();
        let kept = StoredResponse {
            id: response_id.to_owned(),
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            api_key_id: caller.key_id.clone(),
            created_at: now,
            expires_at: now + Duration::days(RESPONSES_KEPT_DAYS),
            input_items,
            response,
        };
        Ok(self.store().insert_stored_response(kept).await?)
    }

    /// The caller's workspace's stored response; another's, or an expired one, is not found.
    pub async fn stored_response(
        &self,
        caller: &ApiCaller,
        response_id: &str,
    ) -> Result<StoredResponse, ServiceError> {
        self.store()
            .stored_response(&caller.workspace_id, response_id, self.now())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("response: {response_id}")))
    }

    /// Deletes the caller's workspace's stored response.
    pub async fn delete_stored_response(
        &self,
        caller: &ApiCaller,
        response_id: &str,
    ) -> Result<(), ServiceError> {
        if self
            .store()
            .delete_stored_response(&caller.workspace_id, response_id, self.now())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("response: {response_id}")))
        }
    }
}
