//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: authenticate, validate, route,
//! reserve, call the upstream (`metered`), settle. Also the helpers both surfaces share:
//! authentication (the presented key is read by tollgate-edge), the body limit and model
//! resolution.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tollgate_core::attribution::Attribution;
use tollgate_core::catalog::{ResolvedModel, route_order};
use tollgate_core::pricing::{input_tokens_bound, input_tokens_estimate};
use tollgate_core::ratelimit::BucketSnapshot;
use tollgate_service::{ApiCaller, RateLimitView};
use tollgate_upstream::{Dialect, UpstreamRequest};

use crate::GatewayState;
use crate::error::{ApiError, Credential, ErrorKind};
use crate::file_sources::{FileBodies, file_bodies, named_file_ids};
use crate::metered::{Admission, ClientWire, Operation, admit_and_run, run_admitted};
use crate::routing::{ClientRequest, largest_body_bytes, plan_attempts};
use crate::wire::{Endpoint, MessagesRequest};
use tollgate_edge::RequestId;

/// The caller behind the presented key, or its refusal, named the way the key came.
pub(crate) async fn authenticate(state: &GatewayState, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    let (key, credential) = match tollgate_edge::presented_key(headers) {
        Some((key, credential)) => (Some(key), credential),
        None => (None, Credential::ApiKeyHeader),
    };
    state
        .tollgate
        .authenticate_api_key(key)
        .await
        .map_err(|refusal| ApiError::auth_refused(refusal, credential))
}

/// Bodies up to this size are copied out of the connection's read buffer (see `read_body`);
/// larger ones arrive in several reads and are already gathered into an allocation of
/// their own, which a copy would only double.
const COPIED_BODY_MAX_BYTES: usize = 64 * 1024;

/// Reads the body within the configured limit; over it is 413 `request_too_large`.
///
/// A small body comes back in an allocation of its own. A body that arrived in one read is
/// a slice of the connection's read buffer (8 KiB or more), and holding it would keep that
/// buffer alive beside the one the connection reads into next, for as long as the request
/// waits for admission and its stream's start: the copy costs a few hundred bytes instead.
/// Handlers hold no header values across an await for the same reason.
pub(crate) async fn read_body(state: &GatewayState, request: Request) -> Result<Bytes, ApiError> {
    let limit = state.settings.max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::RequestTooLarge,
                format!("Request exceeds the maximum allowed size of {limit} bytes."),
            )
        })?;
    if body.len() <= COPIED_BODY_MAX_BYTES {
        return Ok(Bytes::copy_from_slice(&body));
    }
    Ok(body)
}

/// The catalogue model a request names, aliases included, if the caller's key may call it
/// (`AllowedModels::allows`); another model is refused with 403 `permission_error`.
pub(crate) fn resolve_model<'state>(
    state: &'state GatewayState,
    caller: &ApiCaller,
    requested: &str,
) -> Result<ResolvedModel<'state>, ApiError> {
    let resolved = state.catalog.resolve(requested).ok_or_else(|| {
        ApiError::not_found(format!("model: {requested}")).with_openai(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        )
    })?;
    if !caller.allowed_models.allows(&state.catalog, &resolved.model.id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Permission,
            format!("This API key is not allowed to use the model '{requested}'."),
        )
        .with_param("model"));
    }
    Ok(resolved)
}

/// A `max_tokens` above what the model accepts is refused in the provider's words, before
/// it is taken for a reservation (and mistaken for a balance too low). A model reached by a
/// `prefix*` alias is a newer one whose limit the catalogue does not know: its provider
/// decides.
pub(crate) fn check_max_tokens(
    resolved: &ResolvedModel<'_>,
    max_tokens: Option<u64>,
) -> Result<(), ApiError> {
    match (max_tokens, resolved.model.max_output_tokens) {
        (Some(asked), Some(max)) if asked > max && resolved.requested_by_prefix.is_none() => {
            Err(ApiError::invalid(format!(
                "max_tokens: {asked} > {max}, which is the maximum allowed number of output tokens for {}",
                resolved.model.id
            )))
        }
        _ => Ok(()),
    }
}

/// The `anthropic-ratelimit-*` headers: per metric the scope with the least room left;
/// token counts rounded to the nearest thousand, resets as RFC 3339 to the second.
fn rate_limit_headers(view: &RateLimitView, headers: &mut HeaderMap) {
    let groups = [
        ("requests", view.requests, false),
        ("input-tokens", view.input_tokens, true),
        ("output-tokens", view.output_tokens, true),
        ("tokens", view.tokens(), true),
    ];
    for (name, snapshot, round) in groups {
        let BucketSnapshot {
            limit,
            remaining,
            reset_at_nanos,
        } = snapshot;
        let remaining = if round {
            (remaining + 500) / 1_000 * 1_000
        } else {
            remaining
        };
        let reset = chrono::DateTime::from_timestamp_nanos(reset_at_nanos);
        set_rate_limit_group(headers, name, limit, remaining, reset);
    }
}

/// One group's `anthropic-ratelimit-{group}-limit`, `-remaining` and `-reset` (RFC 3339 to
/// the second): what an admitted request's response and tollgate's own 429 both carry.
pub(crate) fn set_rate_limit_group(
    headers: &mut HeaderMap,
    group: &str,
    limit: u64,
    remaining: u64,
    reset: chrono::DateTime<chrono::Utc>,
) {
    let reset = reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Ok(reset) = HeaderValue::try_from(reset) else {
        return;
    };
    let Some(names) = rate_limit_names(group) else {
        return;
    };
    let values = [HeaderValue::from(limit), HeaderValue::from(remaining), reset];
    for (name, value) in names.into_iter().zip(values) {
        headers.insert(name, value);
    }
}

/// The `-limit`, `-remaining` and `-reset` header names of each group (the four every
/// admitted request carries, of which a 429 names one), named once rather than formatted
/// and parsed on each response.
fn rate_limit_names(group: &str) -> Option<[header::HeaderName; 3]> {
    use header::HeaderName as Name;
    Some(match group {
        "requests" => [
            Name::from_static("anthropic-ratelimit-requests-limit"),
            Name::from_static("anthropic-ratelimit-requests-remaining"),
            Name::from_static("anthropic-ratelimit-requests-reset"),
        ],
        "input-tokens" => [
            Name::from_static("anthropic-ratelimit-input-tokens-limit"),
            Name::from_static("anthropic-ratelimit-input-tokens-remaining"),
            Name::from_static("anthropic-ratelimit-input-tokens-reset"),
        ],
        "output-tokens" => [
            Name::from_static("anthropic-ratelimit-output-tokens-limit"),
            Name::from_static("anthropic-ratelimit-output-tokens-remaining"),
            Name::from_static("anthropic-ratelimit-output-tokens-reset"),
        ],
        "tokens" => [
            Name::from_static("anthropic-ratelimit-tokens-limit"),
            Name::from_static("anthropic-ratelimit-tokens-remaining"),
            Name::from_static("anthropic-ratelimit-tokens-reset"),
        ],
        _ => return None,
    })
}

pub(crate) fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

pub(crate) async fn create_message(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = RequestId::of(&request);
    let caller = authenticate(&state, request.headers()).await?;
    let forwarded = Forwarded::of(&request);
    let bytes = read_body(&state, request).await?;
    run_message(&state, &caller, &request_id, forwarded, bytes).await
}

/// What of the client's request besides its body goes upstream as it came.
#[derive(Default)]
struct Forwarded {
    anthropic_version: Option<String>,
    anthropic_beta: Option<String>,
    /// Every other header but `NOT_FORWARDED` ones: headers are an open list.
    client_headers: HeaderMap,
    /// The raw query string without '?', e.g. "beta=true".
    query: Option<String>,
    /// Read for the usage record only; the headers still go upstream with the others.
    attribution: Attribution,
}

/// Headers that stay at the gateway: the client's credentials and the account they name
/// (the upstream gets the provider's key; `openai-organization` and `openai-project` would
/// name the tollgate key's account to the provider's), the ones that describe this
/// connection or this body's framing (the upstream call has its own), and
/// `accept-encoding`, since usage is read from the reply.
const NOT_FORWARDED: [&str; 15] = [
    "x-api-key",
    "authorization",
    "openai-organization",
    "openai-project",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "accept-encoding",
];

/// The client's headers that go upstream as they came, on either surface: every one but
/// `NOT_FORWARDED`, `proxy-*`, `expect`, and the Anthropic version and betas (sent on
/// their own). Routing passes them only to an upstream of the client's own dialect.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let name_text = name.as_str();
        if NOT_FORWARDED.contains(&name_text)
            || name_text.starts_with("proxy-")
            || name_text == "expect"
            || name_text == "anthropic-version"
            || name_text == "anthropic-beta"
        {
            continue;
        }
        forwarded.append(name.clone(), value.clone());
    }
    forwarded
}

impl Forwarded {
    fn of(request: &Request) -> Forwarded {
        Forwarded {
            anthropic_version: header_string(request.headers(), "anthropic-version"),
            anthropic_beta: header_string(request.headers(), "anthropic-beta"),
            client_headers: forwarded_headers(request.headers()),
            query: request.uri().query().map(str::to_owned),
            attribution: attribution_of(request.headers()),
        }
    }
}

/// The client's session and agent ids (`x-claude-code-*`), bounded; a malformed value is
/// dropped, never refused.
pub(crate) fn attribution_of(headers: &HeaderMap) -> Attribution {
    Attribution::from_headers(|name| headers.get(name).map(|value| value.as_bytes()))
}

/// A Messages request on behalf of a caller the control plane vouches for (the Console's
/// Workbench): the same routing, admission, reservation and settlement as
/// `POST /v1/messages`, without a key to present. Errors come back as Anthropic's
/// envelope; the response carries its `request-id`.
pub async fn run_for_caller(state: &GatewayState, caller: &ApiCaller, body: Bytes) -> Response {
    let started = tollgate_edge::arrived();
    let request_id =
        tollgate_service::random::ordered_id(tollgate_core::ids::IdKind::Request, state.tollgate.now());
    let response = run_message(state, caller, &request_id, Forwarded::default(), body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    crate::request_id::stamp(response, &request_id, started, crate::error::Surface::Anthropic)
}

async fn run_message(
    state: &GatewayState,
    caller: &ApiCaller,
    request_id: &str,
    forwarded: Forwarded,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let parsed = MessagesRequest::parse(&bytes, Endpoint::Messages)?;
    let resolved = resolve_model(state, caller, &parsed.model)?;
    let files = match parsed.body.as_object() {
        Some(body) if !named_file_ids(body).is_empty() => {
            // Checked before any upload (admission checks every request), so a request
            // refused for it uploads no file.
            check_max_tokens(&resolved, parsed.max_tokens)?;
            file_bodies(state, caller, &resolved, body).await?
        }
        _ => None,
    };
    let admission = admission(
        state,
        caller,
        request_id,
        forwarded,
        (&bytes, &parsed, files.as_ref()),
        &resolved,
        state.tollgate.now(),
    )?;
    let (mut response, rate_limits) = admit_and_run(state, admission).await?;
    rate_limit_headers(&rate_limits, response.headers_mut());
    Ok(response)
}

/// A request of a Message Batch, on the reservation its batch made for it
/// (`Tollgate::adopt`): the same routing, upstream call and metering as `POST /v1/messages`
/// without streaming, settled at the Batch rate and at the prices in force when its batch
/// was created, and only while the runner's `claim` is still the request's. A refusal of
/// the rate limits is waited out and retried. Any other error comes back as Anthropic's
/// envelope.
pub(crate) async fn run_batch_request(
    state: &GatewayState,
    caller: &ApiCaller,
    claimed: &tollgate_service::ClaimedBatchRequest,
    claim: tollgate_service::BatchClaim,
) -> Result<Response, ApiError> {
    let bytes = Bytes::from(claimed.params.clone());
    let request_id = claimed.request_id.as_str();
    let parsed = MessagesRequest::parse(&bytes, Endpoint::Messages)?;
    if parsed.stream {
        return Err(ApiError::invalid(
            "stream: a request of a Message Batch cannot stream",
        ));
    }
    let resolved = resolve_model(state, caller, &parsed.model)?;
    let mut admission = admission(
        state,
        caller,
        request_id,
        Forwarded::default(),
        (&bytes, &parsed, None),
        &resolved,
        claimed.batch_created_at,
    )?;
    // Charged at the Batch rate, as its reservation was made.
    admission.multipliers.batch = true;
    let observed = admission.observed();
    let open = loop {
        match state
            .tollgate
            .adopt(caller, admission.plan(), claimed.reservation_id.clone(), claim)
            .await
        {
            Ok(open) => break open,
            Err(tollgate_service::ServiceError::RateLimited(limited)) => {
                let wait = limited.retry_after_seconds.unwrap_or(1).max(1);
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let (response, _) = run_admitted(state, admission, open, observed).await?;
    Ok(response)
}

/// A request of a Message Batch that a provider's own Batches API runs, routed as
/// `run_batch_request` routes it and narrowed to the deployment on that provider
/// (`claimed.upstream_provider`): the admission, its one attempt first.
fn upstream_batch_admission<'a>(
    state: &'a GatewayState,
    caller: &'a ApiCaller,
    claimed: &'a tollgate_service::ClaimedBatchRequest,
    bytes: &'a Bytes,
) -> Result<Admission<'a>, ApiError> {
    let parsed = MessagesRequest::parse(bytes, Endpoint::Messages)?;
    let resolved = resolve_model(state, caller, &parsed.model)?;
    let mut admission = admission(
        state,
        caller,
        &claimed.request_id,
        Forwarded::default(),
        (bytes, &parsed, None),
        &resolved,
        claimed.batch_created_at,
    )?;
    // Charged at the Batch rate, as its reservation was made.
    admission.multipliers.batch = true;
    let provider = claimed.upstream_provider.as_deref().unwrap_or_default();
    admission
        .attempts
        .retain(|attempt| attempt.deployment.provider == provider);
    if admission.attempts.is_empty() {
        return Err(ApiError::internal(format!(
            "model {} has no deployment on provider '{provider}' any more",
            resolved.model.id
        )));
    }
    Ok(admission)
}

/// The params a provider's own Batches API gets for a request of a Message Batch: its body
/// as `POST /v1/messages` would send it to the deployment on that provider (the upstream
/// model id in it).
pub(crate) fn upstream_batch_params(
    state: &GatewayState,
    caller: &ApiCaller,
    claimed: &tollgate_service::ClaimedBatchRequest,
) -> Result<Bytes, ApiError> {
    let bytes = Bytes::from(claimed.params.clone());
    let admission = upstream_batch_admission(state, caller, claimed, &bytes)?;
    Ok(admission.attempts[0].request.body.clone())
}

/// Settles a request of a Message Batch that a provider's own Batches API ran, from the
/// usage the provider reported: on the reservation its batch made for it, at the Batch
/// rate, at the prices of the deployment on that provider in force when its batch was
/// created, and only while the runner's `claim` is still the request's (settling again
/// after a crash is a no-op: settlement is idempotent by reservation). An error: the
/// settlement is not written yet, and the request is to stay pending.
pub(crate) async fn settle_upstream_batch_request(
    state: &GatewayState,
    caller: &ApiCaller,
    claimed: &tollgate_service::ClaimedBatchRequest,
    claim: tollgate_service::BatchClaim,
    usage: tollgate_core::usage::TokenUsage,
) -> Result<(), ApiError> {
    let bytes = Bytes::from(claimed.params.clone());
    let admission = upstream_batch_admission(state, caller, claimed, &bytes)?;
    let mut open =
        state
            .tollgate
            .adopt_upstream(caller, admission.plan(), claimed.reservation_id.clone(), claim);
    open.prices = admission.attempts[0].prices.clone();
    let finish = tollgate_service::Finish {
        usage,
        status: tollgate_service::UsageStatus::Succeeded,
        error_type: None,
    };
    state.tollgate.finish(open, finish).await?;
    Ok(())
}

/// The request routed to its deployments and bounded, ready to be admitted.
fn admission<'a>(
    state: &'a GatewayState,
    caller: &'a ApiCaller,
    request_id: &'a str,
    forwarded: Forwarded,
    (bytes, parsed, files): (&'a Bytes, &MessagesRequest, Option<&FileBodies>),
    resolved: &ResolvedModel<'a>,
    priced_at: tollgate_core::Timestamp,
) -> Result<Admission<'a>, ApiError> {
    check_max_tokens(resolved, parsed.max_tokens)?;
    let body = parsed
        .body
        .as_object()
        .ok_or_else(|| ApiError::invalid("The request body must be a JSON object."))?;
    let images = u64::try_from(parsed.images).unwrap_or(u64::MAX);
    let attempts = plan_attempts(
        state,
        resolved,
        &ClientRequest {
            dialect: Dialect::Anthropic,
            body,
            original: bytes,
            stream: parsed.stream,
            max_tokens: parsed.max_tokens,
            images,
            anthropic_version: forwarded.anthropic_version,
            anthropic_beta: forwarded.anthropic_beta,
            client_headers: forwarded.client_headers,
            query: forwarded.query,
            priced_at,
            operation: Operation::Generate,
            files,
        },
        request_id,
    )?;
    // A file named by id is read by the provider besides the body: its bytes bound its
    // tokens as the body's do (an inlined copy counts twice, which only widens the bound).
    let file_bytes = files.map_or(0, FileBodies::named_bytes);
    let input_bound = input_tokens_bound(
        largest_body_bytes(bytes, &attempts).saturating_add(file_bytes),
        parsed.media_blocks,
    );
    Ok(Admission {
        caller,
        request_id,
        model: resolved.model,
        attempts,
        body_bytes: bytes.len(),
        input_tokens_bound: input_bound,
        output_tokens_bound: parsed.max_tokens.unwrap_or(0),
        images,
        priced_at,
        multipliers: parsed.multipliers,
        web_searches_max: parsed.web_searches_max,
        stream: parsed.stream,
        client: ClientWire::Messages,
        requested_model: parsed.model.clone(),
        attribution: forwarded.attribution,
        cacheable_prefixes: crate::cache_prefix::cacheable_prefixes(&parsed.body, &resolved.model.id),
        body: bytes,
    })
}

/// The reservation bound of one Messages request at standard prices, with its catalogue
/// model: what a Message Batch reserves for it (halved there, at the Batch rate). The
/// request is checked as `POST /v1/messages` checks it, the caller's allowed models
/// included.
pub(crate) fn batch_request_bound(
    state: &GatewayState,
    caller: &ApiCaller,
    bytes: &Bytes,
) -> Result<BatchRequestBound, ApiError> {
    let parsed = MessagesRequest::parse(bytes, Endpoint::Messages)?;
    if parsed.stream {
        return Err(ApiError::invalid(
            "stream: a request of a Message Batch cannot stream",
        ));
    }
    let resolved = resolve_model(state, caller, &parsed.model)?;
    let mut admission = admission(
        state,
        caller,
        "",
        Forwarded::default(),
        (bytes, &parsed, None),
        &resolved,
        state.tollgate.now(),
    )?;
    admission.multipliers.batch = true;
    Ok(BatchRequestBound {
        model: resolved.model.id.clone(),
        cost_bound: admission.plan().cost_bound,
        first_provider: admission.attempts[0].deployment.provider.clone(),
    })
}

/// A batch request as creation checked it.
pub(crate) struct BatchRequestBound {
    /// Catalogue model id.
    pub(crate) model: String,
    /// Its reservation bound, at the Batch rate.
    pub(crate) cost_bound: tollgate_core::money::NanoUsd,
    /// The provider of the first deployment in its routing order.
    pub(crate) first_provider: String,
}

pub(crate) async fn count_tokens(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let forwarded = Forwarded::of(&request);
    let bytes = read_body(&state, request).await?;
    let parsed = MessagesRequest::parse(&bytes, Endpoint::CountTokens)?;
    let resolved = resolve_model(&state, &caller, &parsed.model)?;
    state
        .tollgate
        .admit_count_tokens(&caller, &resolved.model.id)
        .await?;
    // Free, but like every call it needs credit: an empty balance is refused the same way.
    if !state
        .tollgate
        .balance(&caller.org_id)
        .await?
        .available
        .is_positive()
    {
        return Err(ApiError::credit_too_low());
    }
    // Counted by the first deployment in routing order whose provider counts (Anthropic's
    // API, Gemini's); Chat Completions has no counting endpoint and the clouds' are not
    // asked, so a model served only those ways gets the gateway's estimate.
    let deployments = &resolved.model.deployments;
    let counting = route_order(deployments, |_| false, 0)
        .into_iter()
        .map(|index| &deployments[index])
        .find_map(|deployment| {
            let provider = state.providers.get(&deployment.provider)?;
            provider.counts_tokens().then(|| (deployment, provider.clone()))
        });
    let Some((deployment, provider)) = counting else {
        let estimate = input_tokens_estimate(bytes.len());
        return Ok(Json(serde_json::json!({ "input_tokens": estimate })).into_response());
    };
    let upstream_model = resolved.upstream_model(deployment);
    // A file the request names is counted as the provider knows it (uploaded there first).
    let files = match parsed.body.as_object() {
        Some(body) => file_bodies(&state, &caller, &resolved, body).await?,
        None => None,
    };
    let body = match files
        .as_ref()
        .and_then(|files| files.for_provider(&deployment.provider))
    {
        None => parsed.upstream_body(bytes, upstream_model)?,
        Some(Ok(provider_body)) => {
            crate::routing::with_model(&provider_body.json, &provider_body.bytes, upstream_model)?
        }
        Some(Err(refused)) => return Err(refused.clone()),
    };
    let upstream_request = UpstreamRequest {
        body,
        stream: false,
        anthropic_version: forwarded.anthropic_version,
        anthropic_beta: forwarded.anthropic_beta,
        client_headers: forwarded.client_headers,
        query: forwarded.query,
    };
    let input_tokens = provider
        .count_tokens(upstream_request)
        .await
        .map_err(|error| ApiError::from_upstream(&error))?;
    Ok(Json(serde_json::json!({ "input_tokens": input_tokens })).into_response())
}
