//! Backend-neutral row decoders: every adapter selects the same column names with the same
//! value types (text, nullable text, 64-bit integers, booleans), so one decoder per row
//! serves SQLite and PostgreSQL alike. SQLite stores booleans as INTEGER 0/1 and
//! PostgreSQL as BOOLEAN; both decode as `bool`.

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, Row, Type};
use tollgate_core::attribution::{Attribution, ClientLabel};
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::{Account, AccountId, AccountKind, Lot, LotKind};
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::{CostLines, Multipliers};
use tollgate_core::reports::ContextWindow;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_core::usage::{Speed, TokenUsage};

use crate::admin_model::{
    CreatedBy, InviteRecord, InviteState, KeyView, MemberRecord, UsageRollupRow, UserRecord,
};
use crate::codec::{
    allowed_models_from_text, attempts_from_sql, count_from_sql, timestamp_from_sql, unknown_text,
};
use crate::error::StoreError;
use crate::journal::Overdue;
use crate::model::{
    AuditEntry, AutoReload, KeyRecord, KeyStatus, LotView, Organization, Purchase, PurchaseSource,
    PurchaseStatus, RateLimitOverrides, UsageRecord, UsageStatus, Workspace,
};
use crate::rollup::ChargedRecord;

/// A result row of either backend, read by column name as one of the value types the
/// schemas use.
pub(crate) trait DbRow {
    fn text(&self, name: &str) -> Result<String, sqlx::Error>;
    fn optional_text(&self, name: &str) -> Result<Option<String>, sqlx::Error>;
    fn integer(&self, name: &str) -> Result<i64, sqlx::Error>;
    fn optional_integer(&self, name: &str) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, name: &str) -> Result<bool, sqlx::Error>;
}

impl<R> DbRow for R
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        self.try_get(name)
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(name)
    }

    fn integer(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.try_get(name)
    }

    fn optional_integer(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(name)
    }

    fn flag(&self, name: &str) -> Result<bool, sqlx::Error> {
        self.try_get(name)
    }
}

/// A value type a column decodes to on every backend.
pub(crate) trait ColumnValue: Sized {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error>;
}

impl ColumnValue for String {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error> {
        row.text(name)
    }
}

impl ColumnValue for Option<String> {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error> {
        row.optional_text(name)
    }
}

impl ColumnValue for i64 {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error> {
        row.integer(name)
    }
}

impl ColumnValue for Option<i64> {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error> {
        row.optional_integer(name)
    }
}

impl ColumnValue for bool {
    fn read<R: DbRow>(row: &R, name: &str) -> Result<Self, sqlx::Error> {
        row.flag(name)
    }
}

/// Reads one column, naming it if the stored value has the wrong type. A decode error is
/// never contention, so it is reported in words on every backend.
pub(crate) fn column<T: ColumnValue>(row: &impl DbRow, name: &str) -> Result<T, StoreError> {
    T::read(row, name).map_err(|error| StoreError::Database(error.to_string()))
}

/// A nullable unix-millisecond column.
pub(crate) fn optional_timestamp<R: DbRow>(
    row: &R,
    name: &str,
) -> Result<Option<tollgate_core::Timestamp>, StoreError> {
    column::<Option<i64>>(row, name)?
        .map(timestamp_from_sql)
        .transpose()
}

// The columns each decoder below reads, as the start of a SELECT; each backend adds its own
// WHERE clause, placeholders and locking.

/// The columns of a workspace, as `workspace_from_row` reads them.
pub(crate) const WORKSPACE_SELECT: &str =
    "SELECT id, org_id, name, is_default, created_at, archived_at FROM workspaces";
/// The columns of a key and its creator, as `key_view_from_row` reads them.
/// The columns of a key, as `key_from_row` reads them.
pub(crate) const KEY_COLUMNS: &str = "id, kind, org_id, workspace_id, name, hint, status, created_at,
    last_used_at, expires_at, user_id, service_account_id, allowed_models";
/// The columns of a key with who created it, as `key_view_from_row` reads them.
pub(crate) const KEY_VIEW_SELECT: &str =
    "SELECT id, kind, org_id, workspace_id, name, hint, status, created_at,
        last_used_at, expires_at, user_id, service_account_id, allowed_models, created_by_type,
        created_by_id
    FROM api_keys";
/// The columns of a user, as `user_from_row` reads them.
pub(crate) const USER_SELECT: &str = "SELECT id, org_id, email, name, role, added_at FROM users";
/// The columns of an invite, as `invite_from_row` reads them.
pub(crate) const INVITE_SELECT: &str =
    "SELECT id, org_id, email, role, status, invited_at, expires_at FROM invites";
/// The columns of a lot joined with its account, as `lot_view_from_row` reads them.
pub(crate) const LOT_SELECT: &str = "SELECT l.id AS lot_id, l.org_id, l.kind AS lot_kind, l.amount,
        l.granted_at, l.expires_at, l.memo, l.programme, a.id AS account_id, a.kind AS account_kind,
        a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
    FROM lots l JOIN accounts a ON a.id = l.account_id";
/// The columns of an account, as `account_from_row` reads them.
pub(crate) const ACCOUNT_SELECT: &str = "SELECT id AS account_id, kind AS account_kind, debits_pending,
        debits_posted, credits_pending, credits_posted
    FROM accounts";
/// The columns of a purchase, as `purchase_from_row` reads them.
pub(crate) const PURCHASE_SELECT: &str = "SELECT id, org_id, idempotency_key, amount_nanos, source, status,
        payment_reference, failure_reason, lot_id, created_at, completed_at, refunded_nanos,
        disputed_nanos, unrecovered_nanos
    FROM purchases";
/// The columns of an auto-reload setting, as `auto_reload_from_row` reads them.
pub(crate) const AUTO_RELOAD_SELECT: &str =
    "SELECT org_id, enabled, threshold_nanos, amount_nanos, payment_method,
        in_flight_since, notice
    FROM auto_reload";

// The directory.

pub(crate) fn organization_from_row<R: DbRow>(row: &R) -> Result<Organization, StoreError> {
    Ok(Organization {
        id: column(row, "id")?,
        name: column(row, "name")?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
    })
}

pub(crate) fn workspace_from_row<R: DbRow>(row: &R) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        name: column(row, "name")?,
        is_default: column(row, "is_default")?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
        archived_at: optional_timestamp(row, "archived_at")?,
    })
}

pub(crate) fn key_from_row<R: DbRow>(row: &R) -> Result<KeyRecord, StoreError> {
    let kind_text: String = column(row, "kind")?;
    let status_text: String = column(row, "status")?;
    Ok(KeyRecord {
        id: column(row, "id")?,
        kind: KeyKind::parse(&kind_text).ok_or_else(|| unknown_text("key kind", &kind_text))?,
        org_id: column(row, "org_id")?,
        workspace_id: column(row, "workspace_id")?,
        name: column(row, "name")?,
        hint: column(row, "hint")?,
        status: KeyStatus::parse(&status_text).ok_or_else(|| unknown_text("key status", &status_text))?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
        last_used_at: optional_timestamp(row, "last_used_at")?,
        expires_at: optional_timestamp(row, "expires_at")?,
        user_id: column(row, "user_id")?,
        service_account_id: column(row, "service_account_id")?,
        allowed_models: allowed_models_from_text(column(row, "allowed_models")?),
    })
}

pub(crate) fn key_view_from_row<R: DbRow>(row: &R) -> Result<KeyView, StoreError> {
    let kind: String = column(row, "created_by_type")?;
    Ok(KeyView {
        record: key_from_row(row)?,
        created_by: CreatedBy::from_parts(&kind, column(row, "created_by_id")?)
            .ok_or_else(|| unknown_text("key creator type", &kind))?,
    })
}

pub(crate) fn user_from_row<R: DbRow>(row: &R) -> Result<UserRecord, StoreError> {
    let role: String = column(row, "role")?;
    Ok(UserRecord {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        email: column(row, "email")?,
        name: column(row, "name")?,
        role: OrgRole::parse(&role).ok_or_else(|| unknown_text("organization role", &role))?,
        added_at: timestamp_from_sql(column(row, "added_at")?)?,
    })
}

pub(crate) fn invite_from_row<R: DbRow>(row: &R) -> Result<InviteRecord, StoreError> {
    let role: String = column(row, "role")?;
    let state: String = column(row, "status")?;
    Ok(InviteRecord {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        email: column(row, "email")?,
        role: OrgRole::parse(&role).ok_or_else(|| unknown_text("organization role", &role))?,
        state: InviteState::parse(&state).ok_or_else(|| unknown_text("invite status", &state))?,
        invited_at: timestamp_from_sql(column(row, "invited_at")?)?,
        expires_at: timestamp_from_sql(column(row, "expires_at")?)?,
    })
}

pub(crate) fn member_from_row<R: DbRow>(row: &R) -> Result<MemberRecord, StoreError> {
    let role: String = column(row, "workspace_role")?;
    Ok(MemberRecord {
        workspace_id: column(row, "workspace_id")?,
        user_id: column(row, "user_id")?,
        role: WorkspaceRole::parse(&role).ok_or_else(|| unknown_text("workspace role", &role))?,
        added_at: timestamp_from_sql(column(row, "added_at")?)?,
    })
}

// Usage.

pub(crate) fn usage_from_row<R: DbRow>(row: &R) -> Result<TokenUsage, StoreError> {
    Ok(TokenUsage {
        input_tokens: count_from_sql(column(row, "input_tokens")?)?,
        output_tokens: count_from_sql(column(row, "output_tokens")?)?,
        cache_creation_5m_input_tokens: count_from_sql(column(row, "cache_creation_5m_input_tokens")?)?,
        cache_creation_1h_input_tokens: count_from_sql(column(row, "cache_creation_1h_input_tokens")?)?,
        cache_read_input_tokens: count_from_sql(column(row, "cache_read_input_tokens")?)?,
        ..TokenUsage::default()
    })
}

pub(crate) fn usage_record_from_row<R: DbRow>(row: &R) -> Result<UsageRecord, StoreError> {
    let status_text: String = column(row, "status")?;
    Ok(UsageRecord {
        request_id: column(row, "request_id")?,
        org_id: column(row, "org_id")?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: column(row, "api_key_id")?,
        model: column(row, "model")?,
        usage: TokenUsage {
            web_search_requests: count_from_sql(column(row, "web_search_requests")?)?,
            speed: match column::<Option<String>>(row, "speed")? {
                Some(text) => Some(Speed::parse(&text).ok_or_else(|| unknown_text("speed", &text))?),
                None => None,
            },
            ..usage_from_row(row)?
        },
        cost: NanoUsd::from_nanos(column(row, "cost_nanos")?),
        status: UsageStatus::parse(&status_text).ok_or_else(|| unknown_text("usage status", &status_text))?,
        error_type: column(row, "error_type")?,
        latency_ms: count_from_sql(column(row, "latency_ms")?)?,
        started_at: timestamp_from_sql(column(row, "started_at")?)?,
        ended_at: timestamp_from_sql(column(row, "ended_at")?)?,
        attribution: Attribution {
            session_id: label_from_row(row, "client_session_id")?,
            agent_id: label_from_row(row, "client_agent_id")?,
            parent_agent_id: label_from_row(row, "client_parent_agent_id")?,
        },
        served_model: column(row, "served_model")?,
        multipliers: {
            let text: String = column(row, "multipliers")?;
            Multipliers::parse_label(&text).ok_or_else(|| unknown_text("multipliers", &text))?
        },
        lines: cost_lines_from_row(row)?,
        upstream_attempts: attempts_from_sql(column::<Option<String>>(row, "upstream_attempts")?.as_deref()),
    })
}

/// The cost lines of a usage record or a rollup row (`cost_*_nanos`).
pub(crate) fn cost_lines_from_row<R: DbRow>(row: &R) -> Result<CostLines, StoreError> {
    let nanos = |name: &str| -> Result<NanoUsd, StoreError> { Ok(NanoUsd::from_nanos(column(row, name)?)) };
    Ok(CostLines {
        input: nanos("cost_input_nanos")?,
        output: nanos("cost_output_nanos")?,
        cache_write_5m: nanos("cost_cache_write_5m_nanos")?,
        cache_write_1h: nanos("cost_cache_write_1h_nanos")?,
        cache_read: nanos("cost_cache_read_nanos")?,
        web_search: nanos("cost_web_search_nanos")?,
    })
}

/// A nullable client label column; only bounded labels are written, so any other text is
/// reported rather than dropped.
fn label_from_row<R: DbRow>(row: &R, name: &str) -> Result<Option<ClientLabel>, StoreError> {
    column::<Option<String>>(row, name)?
        .map(|text| {
            ClientLabel::parse(text.as_bytes())
                .filter(|label| label.as_str() == text)
                .ok_or_else(|| unknown_text("client label", &text))
        })
        .transpose()
}

pub(crate) fn charged_record_from_row<R: DbRow>(row: &R) -> Result<ChargedRecord, StoreError> {
    Ok(ChargedRecord {
        ended_at: column(row, "ended_at")?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: column(row, "api_key_id")?,
        model: column(row, "model")?,
        usage: TokenUsage {
            web_search_requests: count_from_sql(column(row, "web_search_requests")?)?,
            ..usage_from_row(row)?
        },
        charged: NanoUsd::from_nanos(column(row, "charged")?),
        lines: cost_lines_from_row(row)?,
        session_id: None,
    })
}

/// A charged record with its client session, for the reports by session.
pub(crate) fn session_record_from_row<R: DbRow>(row: &R) -> Result<ChargedRecord, StoreError> {
    Ok(ChargedRecord {
        session_id: label_from_row(row, "client_session_id")?.map(|label| label.as_str().to_owned()),
        ..charged_record_from_row(row)?
    })
}

pub(crate) fn rollup_row_from_row<R: DbRow>(row: &R) -> Result<UsageRollupRow, StoreError> {
    let window: String = column(row, "context_window")?;
    let api_key_id: String = column(row, "api_key_id")?;
    Ok(UsageRollupRow {
        bucket_start: timestamp_from_sql(column(row, "bucket")?)?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: Some(api_key_id).filter(|id| !id.is_empty()),
        model: column(row, "model")?,
        context_window: ContextWindow::parse(&window)
            .ok_or_else(|| unknown_text("context window", &window))?,
        requests: count_from_sql(column(row, "requests")?)?,
        usage: TokenUsage {
            web_search_requests: count_from_sql(column(row, "web_search_requests")?)?,
            ..usage_from_row(row)?
        },
        charged: NanoUsd::from_nanos(column(row, "cost_nanos")?),
        lines: cost_lines_from_row(row)?,
        session_id: None,
    })
}

// The ledger.

pub(crate) fn account_from_row<R: DbRow>(row: &R) -> Result<Account, StoreError> {
    let kind_text: String = column(row, "account_kind")?;
    let kind = AccountKind::parse(&kind_text)
        .ok_or_else(|| StoreError::Database(format!("unknown account kind '{kind_text}'")))?;
    Ok(Account {
        id: AccountId(column(row, "account_id")?),
        kind,
        debits_pending: NanoUsd::from_nanos(column(row, "debits_pending")?),
        debits_posted: NanoUsd::from_nanos(column(row, "debits_posted")?),
        credits_pending: NanoUsd::from_nanos(column(row, "credits_pending")?),
        credits_posted: NanoUsd::from_nanos(column(row, "credits_posted")?),
    })
}

pub(crate) fn lot_view_from_row<R: DbRow>(row: &R) -> Result<LotView, StoreError> {
    let kind_text: String = column(row, "lot_kind")?;
    let kind = LotKind::parse(&kind_text)
        .ok_or_else(|| StoreError::Database(format!("unknown lot kind '{kind_text}'")))?;
    Ok(LotView {
        lot: Lot {
            lot_id: column(row, "lot_id")?,
            kind,
            account: account_from_row(row)?,
            granted_at: timestamp_from_sql(column(row, "granted_at")?)?,
            expires_at: optional_timestamp(row, "expires_at")?,
        },
        amount: NanoUsd::from_nanos(column(row, "amount")?),
        memo: column(row, "memo")?,
        programme: column(row, "programme")?,
    })
}

pub(crate) fn overdue_from_row<R: DbRow>(row: &R) -> Result<Overdue, StoreError> {
    Ok(Overdue {
        reservation_id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: column(row, "api_key_id")?,
        request_id: column(row, "request_id")?,
        model: column(row, "model")?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
    })
}

// Limits.

/// A workspace's rate-limit overrides by model class, one row each.
pub(crate) fn rate_limits_from_rows<R: DbRow>(
    rows: &[R],
) -> Result<BTreeMap<String, RateLimitOverrides>, StoreError> {
    let optional_count = |value: Option<i64>| value.map(count_from_sql).transpose();
    let mut rate_limits = BTreeMap::new();
    for row in rows {
        rate_limits.insert(
            column::<String>(row, "model_class")?,
            RateLimitOverrides {
                requests_per_minute: optional_count(column(row, "requests_per_minute")?)?,
                input_tokens_per_minute: optional_count(column(row, "input_tokens_per_minute")?)?,
                output_tokens_per_minute: optional_count(column(row, "output_tokens_per_minute")?)?,
            },
        );
    }
    Ok(rate_limits)
}

// Purchases and auto-reload.

pub(crate) fn purchase_from_row<R: DbRow>(row: &R) -> Result<Purchase, StoreError> {
    let source_text: String = column(row, "source")?;
    let status_text: String = column(row, "status")?;
    Ok(Purchase {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        idempotency_key: column(row, "idempotency_key")?,
        amount: NanoUsd::from_nanos(column(row, "amount_nanos")?),
        source: PurchaseSource::parse(&source_text)
            .ok_or_else(|| unknown_text("purchase source", &source_text))?,
        status: PurchaseStatus::parse(&status_text)
            .ok_or_else(|| unknown_text("purchase status", &status_text))?,
        payment_reference: column(row, "payment_reference")?,
        failure_reason: column(row, "failure_reason")?,
        lot_id: column(row, "lot_id")?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
        completed_at: optional_timestamp(row, "completed_at")?,
        refunded: NanoUsd::from_nanos(column(row, "refunded_nanos")?),
        disputed: NanoUsd::from_nanos(column(row, "disputed_nanos")?),
        unrecovered: NanoUsd::from_nanos(column(row, "unrecovered_nanos")?),
    })
}

pub(crate) fn auto_reload_from_row<R: DbRow>(row: &R) -> Result<AutoReload, StoreError> {
    Ok(AutoReload {
        org_id: column(row, "org_id")?,
        enabled: column(row, "enabled")?,
        threshold: NanoUsd::from_nanos(column(row, "threshold_nanos")?),
        amount: NanoUsd::from_nanos(column(row, "amount_nanos")?),
        payment_method: column(row, "payment_method")?,
        in_flight_since: optional_timestamp(row, "in_flight_since")?,
        notice: column(row, "notice")?,
    })
}

// The audit log.

pub(crate) fn audit_entry_from_row<R: DbRow>(row: &R) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        org_id: column(row, "org_id")?,
        actor: column(row, "actor")?,
        action: column(row, "action")?,
        subject: column(row, "subject")?,
        details: column(row, "details")?,
        reason: column(row, "reason")?,
        at: timestamp_from_sql(column(row, "created_at")?)?,
    })
}
