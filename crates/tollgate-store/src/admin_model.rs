//! Rows of the Admin API's state: who created a key, users, invites, workspace members and
//! the usage rollup the reports read. Plain structs of core types, like `model`.

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::ContextWindow;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_core::usage::TokenUsage;

use crate::model::KeyRecord;

/// Who created a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CreatedBy {
    User(String),
    AdminKey(String),
    /// The first start or the command line.
    System(String),
}

impl CreatedBy {
    pub fn kind(&self) -> &'static str {
        match self {
            CreatedBy::User(_) => "user",
            CreatedBy::AdminKey(_) => "admin_key",
            CreatedBy::System(_) => "system",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            CreatedBy::User(id) | CreatedBy::AdminKey(id) | CreatedBy::System(id) => id,
        }
    }

    pub fn from_parts(kind: &str, id: String) -> Option<CreatedBy> {
        match kind {
            "user" => Some(CreatedBy::User(id)),
            "admin_key" => Some(CreatedBy::AdminKey(id)),
            "system" => Some(CreatedBy::System(id)),
            _ => None,
        }
    }
}

/// A key with who created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub record: KeyRecord,
    pub created_by: CreatedBy,
}

/// Why a workspace could not be created, renamed or archived; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceRejection {
    #[error("the name '{0}' is already taken")]
    NameTaken(String),
    #[error("an organization has at most {0} active workspaces")]
    TooManyWorkspaces(usize),
    #[error("the workspace is archived")]
    Archived,
    #[error("no workspace has this id")]
    Unknown,
}

/// A member of an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub name: String,
    pub role: OrgRole,
    pub added_at: Timestamp,
}

/// Where an invite stands as stored; `expired` is judged on reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InviteState {
    Pending,
    Accepted,
}

impl InviteState {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteState::Pending => "pending",
            InviteState::Accepted => "accepted",
        }
    }

    pub fn parse(text: &str) -> Option<InviteState> {
        [InviteState::Pending, InviteState::Accepted]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteRecord {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: OrgRole,
    pub state: InviteState,
    pub invited_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Why a user or invite change was refused; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryRejection {
    #[error("'{0}' is already a member of the organization")]
    AlreadyMember(String),
    #[error("'{0}' already has a pending invite")]
    AlreadyInvited(String),
    #[error("the invite is no longer pending")]
    InviteNotPending,
}

/// A user's explicit role in a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    pub workspace_id: String,
    pub user_id: String,
    pub role: WorkspaceRole,
    pub added_at: Timestamp,
}

/// Charged usage summed over one bucket (an hour of the rollup, or a minute of raw
/// records) for one workspace, key, model and context window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRollupRow {
    pub bucket_start: Timestamp,
    pub workspace_id: String,
    pub api_key_id: Option<String>,
    pub model: String,
    pub context_window: ContextWindow,
    pub requests: u64,
    pub usage: TokenUsage,
    /// What the ledger charged for these requests.
    pub charged: NanoUsd,
    /// Their charges by what they paid for, as their settlements recorded them (zero for
    /// usage recorded before the lines were kept).
    pub lines: tollgate_core::pricing::CostLines,
    /// The client session, in rows read by session (`Store::usage_by_session`); `None`
    /// in the hourly rollup and the minute rows, which have no session dimension.
    pub session_id: Option<String>,
}

/// Which usage records a request log page shows: the organization's, in `[from, to)` by
/// when they ended, newest first, narrowed by every filter that is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestLogQuery {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub workspace_id: Option<String>,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    /// A `UsageStatus` as stored (`succeeded`, `failed`, `refused`, …).
    pub status: Option<String>,
    pub request_id: Option<String>,
    /// The client's session (Claude Code's `X-Claude-Code-Session-Id`).
    pub session_id: Option<String>,
    /// Only records older than this one (a page's last `RequestLogEntry::cursor`).
    pub after: Option<RequestLogCursor>,
    /// At most this many records (the store caps it at `REQUEST_LOG_PAGE_MAX`).
    pub limit: usize,
}

/// The largest page of the request log.
pub const REQUEST_LOG_PAGE_MAX: usize = 1_000;

/// Where a record stands in the request log's order: when it ended, then its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestLogCursor {
    pub ended_at_millis: i64,
    pub row: i64,
}

/// One request in the log: its usage record and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLogEntry {
    pub cursor: RequestLogCursor,
    pub record: crate::model::UsageRecord,
}
