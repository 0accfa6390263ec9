//! `GET /v1/models` and `GET /v1/models/{id}`: the catalogue in Anthropic's list shape,
//! paginated with `limit`, `after_id` and `before_id`, or — for an OpenAI client, as the
//! request-id middleware tells by its headers — in OpenAI's `{"object":"list",…}` shape.
//! A key with allowed models sees only those.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::catalog::Model;

use crate::GatewayState;
use crate::error::{ApiError, Surface};
use crate::messages::{authenticate, resolve_model};

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
}

fn surface_of(request: &Request) -> Surface {
    request
        .extensions()
        .get::<Surface>()
        .copied()
        .unwrap_or(Surface::Anthropic)
}

/// A model in OpenAI's shape; `owned_by` names the catalogue, not the upstream.
fn openai_model_json(model: &Model) -> Value {
    json!({
        "id": model.id,
        "object": "model",
        "created": model.created_at.timestamp(),
        "owned_by": "tollgate",
    })
}

/// A model in Anthropic's shape, with the fields the newer SDKs declare. `line` is the
/// rate-limit class where that is one of Anthropic's model lines; `capabilities` stays
/// `null`: which features work depends on the provider behind each deployment, and a
/// gateway that claimed them would mislead a client that relies on the list.
fn model_json(model: &Model) -> Value {
    let line = matches!(model.class.as_str(), "opus" | "sonnet" | "haiku").then_some(model.class.as_str());
    json!({
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": model.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "max_input_tokens": model.max_input_tokens,
        "max_tokens": model.max_output_tokens,
        "capabilities": null,
        "lifecycle": "active",
        "line": line,
        "deprecated_at": null,
        "retires_at": null,
    })
}

pub(crate) async fn list_models(
    State(state): State<GatewayState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let models: Vec<&Model> = state
        .catalog
        .models()
        .iter()
        .filter(|model| caller.allowed_models.allows(&state.catalog, &model.id))
        .collect();
    if surface_of(&request) == Surface::OpenAi {
        let data: Vec<Value> = models.iter().map(|model| openai_model_json(model)).collect();
        return Ok(Json(json!({"object": "list", "data": data})).into_response());
    }
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=1000).contains(&limit) => limit,
            _ => {
                return Err(ApiError::invalid(
                    "limit: Input should be an integer from 1 to 1000",
                ));
            }
        },
    };
    let position = |id: &str| {
        models
            .iter()
            .position(|model| model.id == id)
            .ok_or_else(|| ApiError::invalid(format!("no model has the id '{id}'")))
    };
    let page: &[&Model] = match (query.after_id.as_deref(), query.before_id.as_deref()) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give after_id or before_id, not both")),
        (Some(after), None) => {
            let start = position(after)? + 1;
            &models[start..(start + limit).min(models.len())]
        }
        (None, Some(before)) => {
            let end = position(before)?;
            &models[end.saturating_sub(limit)..end]
        }
        (None, None) => &models[..limit.min(models.len())],
    };
    let has_more = match (query.before_id.as_deref(), page.first(), page.last()) {
        (Some(_), Some(first), _) => models.first().is_some_and(|model| model.id != first.id),
        (None, _, Some(last)) => models.last().is_some_and(|model| model.id != last.id),
        _ => false,
    };
    Ok(Json(json!({
        "data": page.iter().map(|model| model_json(model)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first().map(|model| model.id.clone()),
        "last_id": page.last().map(|model| model.id.clone()),
    }))
    .into_response())
}

pub(crate) async fn get_model(
    State(state): State<GatewayState>,
    Path(model_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let resolved = resolve_model(&state, &caller, &model_id)?;
    let mut model = if surface_of(&request) == Surface::OpenAi {
        openai_model_json(resolved.model)
    } else {
        model_json(resolved.model)
    };
    // An alias is its own model to the client (a newer id priced like an older one):
    // it answers under the id it was asked by, not as the model it is billed as. Its
    // limits are those of a model the catalogue does not know.
    if model_id != resolved.model.id {
        model["id"] = json!(model_id);
        if model.get("display_name").is_some() {
            model["display_name"] = json!(model_id);
            model["max_input_tokens"] = Value::Null;
            model["max_tokens"] = Value::Null;
        }
    }
    Ok(Json(model).into_response())
}
