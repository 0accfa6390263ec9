//! The usage report and the cost report of an organization, on the `OrgAdmin` handle.
//! Both read the charged usage the store rolls up (by hour, or by minute from the records
//! for minute-wide buckets), group it as asked, and page it by buckets. The cost report
//! adds up the ledger's charges, so over any window it equals the settled charges to the
//! nano-dollar; its split by token type is `tollgate_core::reports::split_cost`, exact by
//! construction.
//!
//! Grouped or filtered by client session (Claude Code's `x-claude-code-session-id`), a
//! report reads the usage records themselves instead of the rollup, which has no session
//! dimension: exact, at the cost of reading every charged record of the window.
//!
//! Grouped by user (`user_id`), each row is attributed to the user its key is a personal
//! key of, or to the service account its key is bound to, read from the keys at report
//! time (a workspace key's usage has neither); the sums are the same rows, grouped once
//! more.

use std::collections::{BTreeMap, HashMap};

use tollgate_core::Timestamp;
use tollgate_core::catalog::{Catalog, Model};
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::{
    Bucket, BucketWidth, ContextWindow, CostSplit, ReportWindow, TokenType, split_charge,
};
use tollgate_core::usage::TokenUsage;
use tollgate_store::{REQUEST_LOG_PAGE_MAX, RequestLogEntry, RequestLogQuery, UsageRollupRow};

use crate::admin::OrgAdmin;
use crate::error::ServiceError;

/// The only service tier tollgate serves (no batch or priority tier yet).
pub const STANDARD_SERVICE_TIER: &str = "standard";

/// Which dimensions split a usage report's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageGroupBy {
    pub api_key_id: bool,
    /// The user of a personal key, or the service account of a service account's key.
    pub user_id: bool,
    pub workspace_id: bool,
    pub model: bool,
    pub service_tier: bool,
    pub context_window: bool,
    pub session_id: bool,
}

/// Restrictions of a usage report; an empty list restricts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilters {
    pub api_key_ids: Vec<String>,
    pub workspace_ids: Vec<String>,
    pub models: Vec<String>,
    pub service_tiers: Vec<String>,
    pub context_windows: Vec<ContextWindow>,
    pub session_ids: Vec<String>,
}

/// Which dimensions split a cost report's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostGroupBy {
    pub workspace_id: bool,
    /// The user of a personal key, or the service account of a service account's key.
    pub user_id: bool,
    /// Model and token type.
    pub description: bool,
    pub session_id: bool,
}

/// Restrictions of a cost report; an empty list restricts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CostFilters {
    pub session_ids: Vec<String>,
}

/// One page of a report.
#[derive(Clone, Debug)]
pub struct ReportPage {
    pub window: ReportWindow,
    /// Where the page starts: the window's start, or a previous page's `next_page`.
    pub from: Option<Timestamp>,
    pub limit: usize,
}

/// One group's usage in one bucket; ungrouped dimensions are `None`, and so is the
/// Default workspace's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageResult {
    pub api_key_id: Option<String>,
    /// When grouped by user: the user whose personal key was used; `None` for other keys.
    pub user_id: Option<String>,
    /// When grouped by user: the service account whose key was used; `None` for other keys.
    pub service_account_id: Option<String>,
    pub workspace_id: Option<String>,
    pub model: Option<String>,
    pub service_tier: Option<&'static str>,
    pub context_window: Option<ContextWindow>,
    /// The client session when grouped by session; `None` too for requests sent without one.
    pub session_id: Option<String>,
    pub requests: u64,
    pub usage: TokenUsage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportBucket<T> {
    pub bucket: Bucket,
    pub results: Vec<T>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<T> {
    pub buckets: Vec<ReportBucket<T>>,
    /// The start of the next page, if the window goes on.
    pub next_page: Option<Timestamp>,
}

/// What a cost item is for, when grouped by description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostDescription {
    pub model: String,
    /// "Claude Sonnet 4.6 Usage - Input Tokens"
    pub description: String,
    /// `None` for the web search and the adjustment items.
    pub token_type: Option<TokenType>,
    /// What the item paid for, as the cost report's `cost_type` names it.
    pub cost_type: CostType,
    pub context_window: ContextWindow,
}

/// What a cost item paid for: tokens, or web searches (Anthropic's `cost_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostType {
    /// Tokens, and the adjustment item (`Other Charges`).
    Tokens,
    WebSearch,
}

impl CostType {
    /// As the cost report's `cost_type` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            CostType::Tokens => "tokens",
            CostType::WebSearch => "web_search",
        }
    }
}

/// The description's suffix of the web search item.
pub const WEB_SEARCH_DESCRIPTION: &str = "Web Search";

/// One cost item of a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostResult {
    pub workspace_id: Option<String>,
    /// When grouped by user: the user whose personal key was used; `None` for other keys.
    pub user_id: Option<String>,
    /// When grouped by user: the service account whose key was used; `None` for other keys.
    pub service_account_id: Option<String>,
    /// The client session when grouped by session; `None` too for requests sent without one.
    pub session_id: Option<String>,
    pub amount: NanoUsd,
    pub description: Option<CostDescription>,
}

/// The description's suffix of the item that carries what prices don't explain.
pub const ADJUSTMENT_DESCRIPTION: &str = "Other Charges";

/// Whom a key's usage is attributed to, when a report groups by user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyAccount {
    User(String),
    ServiceAccount(String),
}

impl KeyAccount {
    /// The account a key is bound to, if any.
    pub(crate) fn of(record: &crate::KeyRecord) -> Option<KeyAccount> {
        match record.binding() {
            crate::KeyBinding::User(user_id) => Some(KeyAccount::User(user_id.to_owned())),
            crate::KeyBinding::ServiceAccount(service_account_id) => {
                Some(KeyAccount::ServiceAccount(service_account_id.to_owned()))
            }
            crate::KeyBinding::Workspace => None,
        }
    }

    fn user_id(account: Option<&KeyAccount>) -> Option<String> {
        match account {
            Some(KeyAccount::User(user_id)) => Some(user_id.clone()),
            _ => None,
        }
    }

    fn service_account_id(account: Option<&KeyAccount>) -> Option<String> {
        match account {
            Some(KeyAccount::ServiceAccount(service_account_id)) => Some(service_account_id.clone()),
            _ => None,
        }
    }
}

type UsageKey = (
    Option<String>,
    Option<KeyAccount>,
    Option<String>,
    Option<String>,
    Option<&'static str>,
    Option<ContextWindow>,
    Option<String>,
);

impl OrgAdmin {
    /// The account of each key of the organization bound to one, when a report groups by
    /// user.
    async fn key_users(&self, grouped: bool) -> Result<HashMap<String, KeyAccount>, ServiceError> {
        if !grouped {
            return Ok(HashMap::new());
        }
        Ok(self
            .tollgate()
            .store()
            .key_views(self.org_id(), tollgate_core::keys::KeyKind::Api)
            .await?
            .into_iter()
            .filter_map(|key| Some((key.record.id.clone(), KeyAccount::of(&key.record)?)))
            .collect())
    }

    /// The charged usage of `buckets`: from the rollup (or the records, by minute), or, when
    /// `sessions` is given, from the records with their session, only those sessions if
    /// the list is not empty.
    async fn rows(
        &self,
        window: &ReportWindow,
        buckets: &[Bucket],
        sessions: Option<&[String]>,
    ) -> Result<Vec<UsageRollupRow>, ServiceError> {
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return Ok(Vec::new());
        };
        let store = self.tollgate().store();
        if let Some(session_ids) = sessions {
            return Ok(store
                .usage_by_session(
                    self.org_id(),
                    first.starting_at,
                    last.ending_at,
                    window.width(),
                    session_ids,
                )
                .await?);
        }
        Ok(match window.width() {
            BucketWidth::Minute => {
                store
                    .usage_by_minute(self.org_id(), first.starting_at, last.ending_at)
                    .await?
            }
            BucketWidth::Hour | BucketWidth::Day => {
                store
                    .usage_hourly(self.org_id(), first.starting_at, last.ending_at)
                    .await?
            }
        })
    }

    /// The usage report: token counts by bucket, grouped and filtered.
    pub async fn usage_report(
        &self,
        page: &ReportPage,
        group_by: UsageGroupBy,
        filters: &UsageFilters,
    ) -> Result<Report<UsageResult>, ServiceError> {
        let (buckets, next_page) = page.window.page(page.from, page.limit);
        let by_session = group_by.session_id || !filters.session_ids.is_empty();
        let rows = self
            .rows(
                &page.window,
                &buckets,
                by_session.then_some(filters.session_ids.as_slice()),
            )
            .await?;
        let default_workspace = self.default_workspace_id().await?;
        let key_users = self.key_users(group_by.user_id).await?;
        let width = page.window.width();
        let mut grouped: BTreeMap<(Timestamp, UsageKey), UsageResult> = BTreeMap::new();
        for row in rows {
            let workspace_id = public_workspace(&row.workspace_id, &default_workspace);
            let keep = (filters.api_key_ids.is_empty()
                || row
                    .api_key_id
                    .as_ref()
                    .is_some_and(|id| filters.api_key_ids.contains(id)))
                && (filters.workspace_ids.is_empty()
                    || workspace_id
                        .as_ref()
                        .is_some_and(|id| filters.workspace_ids.contains(id)))
                && (filters.models.is_empty() || filters.models.contains(&row.model))
                && (filters.service_tiers.is_empty()
                    || filters
                        .service_tiers
                        .iter()
                        .any(|tier| tier == STANDARD_SERVICE_TIER))
                && (filters.context_windows.is_empty()
                    || filters.context_windows.contains(&row.context_window))
                && in_sessions(&filters.session_ids, row.session_id.as_ref());
            if !keep {
                continue;
            }
            let key: UsageKey = (
                row.api_key_id.clone().filter(|_| group_by.api_key_id),
                row.api_key_id
                    .as_ref()
                    .and_then(|key_id| key_users.get(key_id))
                    .cloned(),
                workspace_id.filter(|_| group_by.workspace_id),
                Some(row.model.clone()).filter(|_| group_by.model),
                Some(STANDARD_SERVICE_TIER).filter(|_| group_by.service_tier),
                Some(row.context_window).filter(|_| group_by.context_window),
                row.session_id.clone().filter(|_| group_by.session_id),
            );
            let bucket = width.snap(row.bucket_start);
            let entry = grouped
                .entry((bucket, key.clone()))
                .or_insert_with(|| UsageResult {
                    api_key_id: key.0,
                    user_id: KeyAccount::user_id(key.1.as_ref()),
                    service_account_id: KeyAccount::service_account_id(key.1.as_ref()),
                    workspace_id: key.2,
                    model: key.3,
                    service_tier: key.4,
                    context_window: key.5,
                    session_id: key.6,
                    requests: 0,
                    usage: TokenUsage::default(),
                });
            entry.requests = entry.requests.saturating_add(row.requests);
            entry.usage = add_usage(&entry.usage, &row.usage);
        }
        Ok(Report {
            buckets: buckets
                .into_iter()
                .map(|bucket| ReportBucket {
                    results: grouped
                        .range((bucket.starting_at, minimum_key())..)
                        .take_while(|((start, _), _)| *start == bucket.starting_at)
                        .map(|(_, result)| result.clone())
                        .collect(),
                    bucket,
                })
                .collect(),
            next_page,
        })
    }

    /// The cost report (daily buckets): the ledger's charges, by workspace, client session
    /// and/or description (model and token type), with model names from `catalog`.
    pub async fn cost_report(
        &self,
        catalog: &Catalog,
        page: &ReportPage,
        group_by: CostGroupBy,
        filters: &CostFilters,
    ) -> Result<Report<CostResult>, ServiceError> {
        let (buckets, next_page) = page.window.page(page.from, page.limit);
        let by_session = group_by.session_id || !filters.session_ids.is_empty();
        let rows = self
            .rows(
                &page.window,
                &buckets,
                by_session.then_some(filters.session_ids.as_slice()),
            )
            .await?;
        let default_workspace = self.default_workspace_id().await?;
        let key_users = self.key_users(group_by.user_id).await?;
        let width = page.window.width();
        // Sum charges per bucket, workspace, user and session (if grouped), and model and context
        // window (if grouped by description), with each row's charge split by token type at
        // the rates in force in its hour, so that a price change within a bucket is no
        // adjustment.
        type CostKey = (
            Timestamp,
            Option<String>,
            Option<KeyAccount>,
            Option<String>,
            Option<(String, ContextWindow)>,
        );
        let mut sums: BTreeMap<CostKey, (CostSplit, NanoUsd)> = BTreeMap::new();
        for row in rows {
            if !in_sessions(&filters.session_ids, row.session_id.as_ref()) {
                continue;
            }
            let workspace_id =
                public_workspace(&row.workspace_id, &default_workspace).filter(|_| group_by.workspace_id);
            let user_id = row
                .api_key_id
                .as_ref()
                .and_then(|key_id| key_users.get(key_id))
                .cloned();
            let session_id = row.session_id.clone().filter(|_| group_by.session_id);
            let model = Some((row.model.clone(), row.context_window)).filter(|_| group_by.description);
            let entry = sums
                .entry((
                    width.snap(row.bucket_start),
                    workspace_id,
                    user_id,
                    session_id,
                    model,
                ))
                .or_insert((CostSplit::default(), NanoUsd::ZERO));
            if group_by.description {
                let prices =
                    catalog_model(catalog, &row.model).map(|found| found.prices.at(row.bucket_start));
                entry.0 = entry
                    .0
                    .checked_add(&split_charge(prices, &row.usage, &row.lines, row.charged))
                    .ok_or_else(|| ServiceError::Invalid("the report's total overflows".into()))?;
            }
            entry.1 = entry
                .1
                .checked_add(row.charged)
                .ok_or_else(|| ServiceError::Invalid("the report's total overflows".into()))?;
        }
        let mut by_bucket: BTreeMap<Timestamp, Vec<CostResult>> = BTreeMap::new();
        for ((bucket, workspace_id, user_id, session_id, model), (split, charged)) in sums {
            let results = by_bucket.entry(bucket).or_default();
            let Some((model, context_window)) = model else {
                results.push(CostResult {
                    workspace_id,
                    user_id: KeyAccount::user_id(user_id.as_ref()),
                    service_account_id: KeyAccount::service_account_id(user_id.as_ref()),
                    session_id,
                    amount: charged,
                    description: None,
                });
                continue;
            };
            let display_name =
                catalog_model(catalog, &model).map_or(model.as_str(), |found| found.display_name.as_str());
            for (token_type, amount) in split.parts {
                results.push(CostResult {
                    workspace_id: workspace_id.clone(),
                    user_id: KeyAccount::user_id(user_id.as_ref()),
                    service_account_id: KeyAccount::service_account_id(user_id.as_ref()),
                    session_id: session_id.clone(),
                    amount,
                    description: Some(CostDescription {
                        model: model.clone(),
                        description: format!("{display_name} Usage - {}", token_type.description()),
                        token_type: Some(token_type),
                        cost_type: CostType::Tokens,
                        context_window,
                    }),
                });
            }
            if split.web_search != NanoUsd::ZERO {
                results.push(CostResult {
                    workspace_id: workspace_id.clone(),
                    user_id: KeyAccount::user_id(user_id.as_ref()),
                    service_account_id: KeyAccount::service_account_id(user_id.as_ref()),
                    session_id: session_id.clone(),
                    amount: split.web_search,
                    description: Some(CostDescription {
                        model: model.clone(),
                        description: format!("{display_name} Usage - {WEB_SEARCH_DESCRIPTION}"),
                        token_type: None,
                        cost_type: CostType::WebSearch,
                        context_window,
                    }),
                });
            }
            if split.adjustment != NanoUsd::ZERO {
                results.push(CostResult {
                    workspace_id: workspace_id.clone(),
                    user_id: KeyAccount::user_id(user_id.as_ref()),
                    service_account_id: KeyAccount::service_account_id(user_id.as_ref()),
                    session_id: session_id.clone(),
                    amount: split.adjustment,
                    description: Some(CostDescription {
                        model: model.clone(),
                        description: format!("{display_name} Usage - {ADJUSTMENT_DESCRIPTION}"),
                        token_type: None,
                        cost_type: CostType::Tokens,
                        context_window,
                    }),
                });
            }
        }
        Ok(Report {
            buckets: buckets
                .into_iter()
                .map(|bucket| ReportBucket {
                    results: by_bucket.remove(&bucket.starting_at).unwrap_or_default(),
                    bucket,
                })
                .collect(),
            next_page,
        })
    }

    /// What the ledger charged the organization for usage in `[from, to)`.
    pub async fn settled_charges(&self, from: Timestamp, to: Timestamp) -> Result<NanoUsd, ServiceError> {
        Ok(self
            .tollgate()
            .store()
            .settled_charges(self.org_id(), from, to)
            .await?)
    }
}

fn minimum_key() -> UsageKey {
    (None, None, None, None, None, None, None)
}

/// Whether a row of `session_id` passes a session filter (an empty one passes all).
fn in_sessions(session_ids: &[String], session_id: Option<&String>) -> bool {
    session_ids.is_empty() || session_id.is_some_and(|id| session_ids.contains(id))
}

/// The workspace id the API shows: `None` for the Default workspace.
/// A page of the request log and whether older records follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLogPage {
    pub entries: Vec<RequestLogEntry>,
    pub has_more: bool,
}

impl OrgAdmin {
    /// A page of the organization's request log (its usage records, newest first),
    /// narrowed by `query`; a filter naming another organization's object finds nothing.
    pub async fn request_log(&self, query: &RequestLogQuery) -> Result<RequestLogPage, ServiceError> {
        let limit = query.limit.clamp(1, REQUEST_LOG_PAGE_MAX);
        // One more than the page, to know whether more follow.
        let probe = RequestLogQuery {
            limit: limit + 1,
            ..query.clone()
        };
        let mut entries = self.tollgate().store().request_log(self.org_id(), &probe).await?;
        let has_more = entries.len() > limit;
        entries.truncate(limit);
        Ok(RequestLogPage { entries, has_more })
    }
}

fn public_workspace(workspace_id: &str, default_workspace: &str) -> Option<String> {
    (workspace_id != default_workspace).then(|| workspace_id.to_owned())
}

/// The catalogue model a report row's model id names: itself, or what it aliases to.
fn catalog_model<'catalog>(catalog: &'catalog Catalog, model: &str) -> Option<&'catalog Model> {
    catalog
        .model(model)
        .or_else(|| catalog.resolve(model).map(|resolved| resolved.model))
}

fn add_usage(left: &TokenUsage, right: &TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: left.input_tokens.saturating_add(right.input_tokens),
        output_tokens: left.output_tokens.saturating_add(right.output_tokens),
        cache_creation_5m_input_tokens: left
            .cache_creation_5m_input_tokens
            .saturating_add(right.cache_creation_5m_input_tokens),
        cache_creation_1h_input_tokens: left
            .cache_creation_1h_input_tokens
            .saturating_add(right.cache_creation_1h_input_tokens),
        cache_read_input_tokens: left
            .cache_read_input_tokens
            .saturating_add(right.cache_read_input_tokens),
        web_search_requests: left.web_search_requests.saturating_add(right.web_search_requests),
        speed: None,
        resident: None,
    }
}
