//! Tollgate's additions under `/v1/organizations`, in the Admin API's style: credit
//! (balance, lots, purchases, grants), the tier ladder, limits (the organization's and a
//! workspace's), the read-only rate limits in Anthropic's shape, auto-reload and the audit
//! log. Amounts are decimal strings in US cents, like the cost report's.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize};
use tollgate_core::ledger::LotKind;
use tollgate_core::tiers::RateLimits;
use tollgate_service::{OrgAdmin, RateLimitOverrides, WorkspaceLimits, workspace_rate_limits};
use utoipa::ToSchema;

use crate::AdminState;
use crate::dto::{
    AuditEventDto, AutoReloadDto, CreateGrant, CreatePurchase, CreditBalanceDto, CreditLotDto, PurchaseDto,
    SetAutoReload, cents,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, Body, QueryPairs, parse_cents, parse_timestamp};
use crate::pagination::{Page, PageRequest, paginate};

type Reply<T> = Result<Json<T>, ApiError>;

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[utoipa::path(get, path = "/v1/organizations/credits", tag = "Credits",
    responses((status = 200, body = CreditBalanceDto), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn balance(Admin(admin): Admin) -> Reply<CreditBalanceDto> {
    Ok(Json(CreditBalanceDto::from(&admin.balance().await?)))
}

/// Credit lots, oldest grant first.
#[utoipa::path(get, path = "/v1/organizations/credits/lots", tag = "Credits",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<CreditLotDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn lots(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<CreditLotDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin.lots().await?.iter().map(CreditLotDto::from).collect();
    Ok(Json(paginate(dtos, |lot: &CreditLotDto| lot.id.clone(), &page)?))
}

/// Adds a credit lot (starter, purchase or promotional credit granted by the operator).
#[utoipa::path(post, path = "/v1/organizations/credits/grants", tag = "Credits",
    request_body = CreateGrant,
    responses((status = 200, body = CreditLotDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn grant(Admin(admin): Admin, Body(body): Body<CreateGrant>) -> Reply<CreditLotDto> {
    let kind = LotKind::parse(&body.lot_kind).ok_or_else(|| {
        ApiError::invalid(format!(
            "lot_kind: '{}' is not one of starter, purchase, promotional",
            body.lot_kind
        ))
    })?;
    let amount = parse_cents("amount", &body.amount)?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|text| parse_timestamp("expires_at", text))
        .transpose()?;
    let lot = admin
        .grant(
            kind,
            amount,
            expires_at,
            body.memo.as_deref().unwrap_or_default(),
            body.programme.as_deref(),
        )
        .await?;
    Ok(Json(CreditLotDto::from(&lot)))
}

/// Purchases, newest first.
#[utoipa::path(get, path = "/v1/organizations/credits/purchases", tag = "Credits",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<PurchaseDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn purchases(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<PurchaseDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin.purchases().await?.iter().map(PurchaseDto::from).collect();
    Ok(Json(paginate(
        dtos,
        |purchase: &PurchaseDto| purchase.id.clone(),
        &page,
    )?))
}

/// Buys credit: the tier advances at once. A declined card is a 402 `billing_error`.
/// The purchase's own idempotency key is the body's `idempotency_key`, else the request's
/// `Idempotency-Key` header, so a retry after a 5xx (which the header does not keep) still
/// buys once.
#[utoipa::path(post, path = "/v1/organizations/credits/purchases", tag = "Credits",
    request_body = CreatePurchase,
    responses((status = 200, body = PurchaseDto), (status = 400, body = ErrorEnvelope),
              (status = 402, body = ErrorEnvelope)))]
pub(crate) async fn purchase(
    Admin(admin): Admin,
    headers: HeaderMap,
    Body(body): Body<CreatePurchase>,
) -> Reply<PurchaseDto> {
    let amount = parse_cents("amount", &body.amount)?;
    let header_key = headers
        .get(tollgate_edge::IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let key = body
        .idempotency_key
        .or(header_key)
        .unwrap_or_else(|| tollgate_service::random::id(tollgate_core::ids::IdKind::Request));
    let purchase = admin.purchase(amount, &body.payment_method, &key).await?;
    Ok(Json(PurchaseDto::from(&purchase)))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TierDto {
    pub(crate) name: String,
    pub(crate) cumulative_purchases_amount: String,
    pub(crate) max_single_purchase_amount: Option<String>,
    pub(crate) monthly_spend_limit_amount: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NextTierDto {
    pub(crate) name: String,
    /// What is still to buy to reach it, in cents.
    pub(crate) remaining_amount: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TierStandingDto {
    /// Always `tier_standing`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) current_tier: String,
    /// A custom limit set in force instead of the tier.
    pub(crate) limit_set: Option<String>,
    pub(crate) cumulative_purchases_amount: String,
    pub(crate) next_tier: Option<NextTierDto>,
    pub(crate) active_programmes: Vec<String>,
    pub(crate) tiers: Vec<TierDto>,
}

/// The tier ladder and where the organization stands on it.
#[utoipa::path(get, path = "/v1/organizations/tiers", tag = "Limits",
    responses((status = 200, body = TierStandingDto), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn tiers(Admin(admin): Admin) -> Reply<TierStandingDto> {
    let standing = admin.tier_standing().await?;
    Ok(Json(TierStandingDto {
        kind: "tier_standing",
        current_tier: standing.current.clone(),
        limit_set: standing.limit_set.clone(),
        cumulative_purchases_amount: cents(standing.cumulative_purchases),
        next_tier: standing.next.as_ref().map(|(name, remaining)| NextTierDto {
            name: name.clone(),
            remaining_amount: cents(*remaining),
        }),
        active_programmes: standing.active_programmes.clone(),
        tiers: standing
            .tiers
            .iter()
            .map(|tier| TierDto {
                name: tier.limits.name.clone(),
                cumulative_purchases_amount: cents(tier.cumulative_purchases_min),
                max_single_purchase_amount: tier.limits.max_single_purchase.map(cents),
                monthly_spend_limit_amount: tier.limits.monthly_spend_limit.map(cents),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrganizationLimitsDto {
    /// Always `organization_limits`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The tier the organization's purchases reach.
    pub(crate) tier: String,
    pub(crate) limit_set: Option<String>,
    /// The tier's (or limit set's) monthly cap; `null` is no cap.
    pub(crate) monthly_spend_cap_amount: Option<String>,
    /// The organization's own monthly limit, below the cap.
    pub(crate) spend_limit_amount: Option<String>,
    /// Spent and reserved this calendar month (UTC).
    pub(crate) month_spend_amount: String,
}

async fn organization_limits(admin: &OrgAdmin) -> Result<OrganizationLimitsDto, ApiError> {
    let limits = admin.limits().await?;
    Ok(OrganizationLimitsDto {
        kind: "organization_limits",
        tier: limits.tier_name.clone(),
        limit_set: limits.billing.limit_set.clone(),
        monthly_spend_cap_amount: limits.tier_cap().map(cents),
        spend_limit_amount: limits.billing.spend_limit.map(cents),
        month_spend_amount: cents(admin.month_spend(None).await?),
    })
}

#[utoipa::path(get, path = "/v1/organizations/limits", tag = "Limits",
    responses((status = 200, body = OrganizationLimitsDto), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn get_limits(Admin(admin): Admin) -> Reply<OrganizationLimitsDto> {
    Ok(Json(organization_limits(&admin).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateOrganizationLimits {
    /// The organization's own monthly limit in cents, at most the tier's cap; `null` clears.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub(crate) spend_limit_amount: Option<Option<String>>,
    /// A configured custom limit set; `null` returns to the tier ladder.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub(crate) limit_set: Option<Option<String>>,
}

/// Sets the organization's own spend limit and/or its custom limit set (audited).
#[utoipa::path(post, path = "/v1/organizations/limits", tag = "Limits",
    request_body = UpdateOrganizationLimits,
    responses((status = 200, body = OrganizationLimitsDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn update_limits(
    Admin(admin): Admin,
    Body(body): Body<UpdateOrganizationLimits>,
) -> Reply<OrganizationLimitsDto> {
    let spend_limit = body
        .spend_limit_amount
        .map(|limit| {
            limit
                .map(|text| parse_cents("spend_limit_amount", &text))
                .transpose()
        })
        .transpose()?;
    if let Some(limit_set) = &body.limit_set {
        admin.set_limit_set(limit_set.as_deref()).await?;
    }
    if let Some(limit) = spend_limit {
        admin.set_spend_limit(limit).await?;
    }
    Ok(Json(organization_limits(&admin).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClassRateLimits {
    /// The model class (`opus`, `sonnet`, `haiku`, …).
    pub(crate) model_class: String,
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) input_tokens_per_minute: Option<u64>,
    pub(crate) output_tokens_per_minute: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceLimitsDto {
    /// Always `workspace_limits`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) workspace_id: String,
    pub(crate) spend_limit_amount: Option<String>,
    /// What each user may spend in the workspace a month through their personal keys, in
    /// cents; `null` is no per-user limit.
    pub(crate) user_spend_limit_amount: Option<String>,
    pub(crate) month_spend_amount: String,
    /// The workspace's own (lower) rate limits; absent classes inherit the organization's.
    pub(crate) rate_limits: Vec<ClassRateLimits>,
}

async fn workspace_limits_dto(admin: &OrgAdmin, workspace_id: &str) -> Result<WorkspaceLimitsDto, ApiError> {
    let limits = admin.workspace_limits(workspace_id).await?;
    Ok(WorkspaceLimitsDto {
        kind: "workspace_limits",
        workspace_id: workspace_id.to_owned(),
        spend_limit_amount: limits.spend_limit.map(cents),
        user_spend_limit_amount: limits.user_spend_limit.map(cents),
        month_spend_amount: cents(admin.month_spend(Some(workspace_id)).await?),
        rate_limits: limits
            .rate_limits
            .iter()
            .map(|(class, overrides)| ClassRateLimits {
                model_class: class.clone(),
                requests_per_minute: overrides.requests_per_minute,
                input_tokens_per_minute: overrides.input_tokens_per_minute,
                output_tokens_per_minute: overrides.output_tokens_per_minute,
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/limits", tag = "Limits",
    params(("workspace_id" = String, Path)),
    responses((status = 200, body = WorkspaceLimitsDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_workspace_limits(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
) -> Reply<WorkspaceLimitsDto> {
    Ok(Json(workspace_limits_dto(&admin, &workspace_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SetWorkspaceLimits {
    /// Monthly spend limit in cents, at most the organization's; `null` or absent: none.
    pub(crate) spend_limit_amount: Option<String>,
    /// Per-user monthly spend limit in cents, at most the workspace's (else the
    /// organization's); `null` or absent: none.
    pub(crate) user_spend_limit_amount: Option<String>,
    /// Replaces every class's limits; each at most the organization's.
    #[serde(default)]
    pub(crate) rate_limits: Vec<ClassRateLimits>,
}

/// Replaces a workspace's own limits, each at most the organization's (audited).
#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/limits", tag = "Limits",
    params(("workspace_id" = String, Path)), request_body = SetWorkspaceLimits,
    responses((status = 200, body = WorkspaceLimitsDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn set_workspace_limits(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    Body(body): Body<SetWorkspaceLimits>,
) -> Reply<WorkspaceLimitsDto> {
    admin.workspace(&workspace_id).await?;
    let spend_limit = body
        .spend_limit_amount
        .as_deref()
        .map(|text| parse_cents("spend_limit_amount", text))
        .transpose()?;
    let user_spend_limit = body
        .user_spend_limit_amount
        .as_deref()
        .map(|text| parse_cents("user_spend_limit_amount", text))
        .transpose()?;
    let mut rate_limits = BTreeMap::new();
    for class in body.rate_limits {
        rate_limits.insert(
            class.model_class,
            RateLimitOverrides {
                requests_per_minute: class.requests_per_minute,
                input_tokens_per_minute: class.input_tokens_per_minute,
                output_tokens_per_minute: class.output_tokens_per_minute,
            },
        );
    }
    admin
        .set_workspace_limits(
            &workspace_id,
            WorkspaceLimits {
                spend_limit,
                user_spend_limit,
                rate_limits,
            },
        )
        .await?;
    Ok(Json(workspace_limits_dto(&admin, &workspace_id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitValue {
    /// `requests_per_minute`, `input_tokens_per_minute` or `output_tokens_per_minute`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) value: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RateLimitGroup {
    /// Always `rate_limit`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// `model_group` or `token_count`.
    pub(crate) group_type: &'static str,
    /// The models of the group; `null` for `token_count`.
    pub(crate) models: Option<Vec<String>>,
    pub(crate) limits: Vec<LimitValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RateLimitList {
    pub(crate) data: Vec<RateLimitGroup>,
    /// Always `null`: one page holds every group.
    pub(crate) next_page: Option<String>,
}

fn model_group(state: &AdminState, class: &str, limits: RateLimits) -> RateLimitGroup {
    RateLimitGroup {
        kind: "rate_limit",
        group_type: "model_group",
        models: Some(
            state
                .catalog
                .models()
                .iter()
                .filter(|model| model.class == class)
                .map(|model| model.id.clone())
                .collect(),
        ),
        limits: vec![
            LimitValue {
                kind: "requests_per_minute",
                value: limits.requests_per_minute,
            },
            LimitValue {
                kind: "input_tokens_per_minute",
                value: limits.input_tokens_per_minute,
            },
            LimitValue {
                kind: "output_tokens_per_minute",
                value: limits.output_tokens_per_minute,
            },
        ],
    }
}

/// The organization's rate limits in force (tier or limit set, with programme uplifts).
#[utoipa::path(get, path = "/v1/organizations/rate_limits", tag = "Limits",
    responses((status = 200, body = RateLimitList), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn rate_limits(
    State(state): State<AdminState>,
    Admin(admin): Admin,
) -> Reply<RateLimitList> {
    let limits = admin.limits().await?;
    let mut data: Vec<RateLimitGroup> = limits
        .limits
        .rate_limits
        .iter()
        .map(|(class, limits)| model_group(&state, class, *limits))
        .collect();
    data.push(RateLimitGroup {
        kind: "rate_limit",
        group_type: "token_count",
        models: None,
        limits: vec![LimitValue {
            kind: "requests_per_minute",
            value: limits.limits.count_tokens_requests_per_minute,
        }],
    });
    Ok(Json(RateLimitList {
        data,
        next_page: None,
    }))
}

/// A workspace's rate limits in force: its own where lower, else the organization's.
#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/rate_limits", tag = "Limits",
    params(("workspace_id" = String, Path)),
    responses((status = 200, body = RateLimitList), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn workspace_rate_limits_list(
    State(state): State<AdminState>,
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
) -> Reply<RateLimitList> {
    let own = admin.workspace_limits(&workspace_id).await?;
    let limits = admin.limits().await?;
    let data = limits
        .limits
        .rate_limits
        .iter()
        .map(|(class, organization)| {
            let effective = match own.rate_limits.get(class) {
                Some(overrides) => workspace_rate_limits(*organization, overrides),
                None => *organization,
            };
            model_group(&state, class, effective)
        })
        .collect();
    Ok(Json(RateLimitList {
        data,
        next_page: None,
    }))
}

/// Auto-reload settings; 404 when never set up.
#[utoipa::path(get, path = "/v1/organizations/auto_reload", tag = "Credits",
    responses((status = 200, body = AutoReloadDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_auto_reload(Admin(admin): Admin) -> Reply<AutoReloadDto> {
    let settings = admin
        .auto_reload()
        .await?
        .ok_or_else(|| ApiError::not_found("auto-reload is not set up for this organization"))?;
    Ok(Json(AutoReloadDto::from(&settings)))
}

/// Turns auto-reload on: buy `amount` when the balance falls below `threshold_amount`.
#[utoipa::path(post, path = "/v1/organizations/auto_reload", tag = "Credits",
    request_body = SetAutoReload,
    responses((status = 200, body = AutoReloadDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn set_auto_reload(
    Admin(admin): Admin,
    Body(body): Body<SetAutoReload>,
) -> Reply<AutoReloadDto> {
    let threshold = parse_cents("threshold_amount", &body.threshold_amount)?;
    let amount = parse_cents("amount", &body.amount)?;
    admin
        .set_auto_reload(threshold, amount, &body.payment_method)
        .await?;
    get_auto_reload(Admin(admin)).await
}

/// Turns auto-reload off.
#[utoipa::path(delete, path = "/v1/organizations/auto_reload", tag = "Credits",
    responses((status = 200, body = AutoReloadDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn disable_auto_reload(Admin(admin): Admin) -> Reply<AutoReloadDto> {
    admin.disable_auto_reload().await?;
    get_auto_reload(Admin(admin)).await
}

/// The audit log, oldest first: grants, purchases, expiries, limit, auto-reload and
/// workspace changes, with who made them.
#[utoipa::path(get, path = "/v1/organizations/audit_events", tag = "Audit",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEventDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn audit_events(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<AuditEventDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin
        .audit_events()
        .await?
        .iter()
        .enumerate()
        .map(|(position, entry)| AuditEventDto::from(position, entry))
        .collect();
    Ok(Json(paginate(
        dtos,
        |event: &AuditEventDto| event.id.clone(),
        &page,
    )?))
}
