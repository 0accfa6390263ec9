//! The Workbench: pick a model, write a prompt, watch the answer stream in, then see its
//! tokens and cost. A run is an ordinary Messages API request of the workspace's Workbench
//! key, run by the `WorkbenchRunner` through the data plane's metered path, so it is paid
//! from the same balance, under the same limits, and shows in usage and cost like any
//! other request.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use maud::html;
use serde::Deserialize;
use tollgate_service::{Access, ConsoleArea};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

/// The largest `max_tokens` the page offers.
const MAX_TOKENS_MAX: u64 = 8192;

pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Workbench, Access::View)?;
    let workspaces = admin.workspaces(false).await?;
    let balance = admin.balance().await?;
    let content = html! {
        form id="workbench" method="post" action="/console/workbench/run" {
            (csrf(&user))
            div.row {
                div {
                    label for="wb-model" { "Model" }
                    select id="wb-model" name="model" {
                        @for model in state.catalog.models() {
                            option value=(model.id) { (model.display_name) " (" (model.id) ")" }
                        }
                    }
                }
                div {
                    label for="wb-workspace" { "Workspace (billed to its Workbench key)" }
                    select id="wb-workspace" name="workspace" {
                        option value="" { "Default" }
                        @for workspace in &workspaces { option value=(workspace.id) { (workspace.name) } }
                    }
                }
                div {
                    label for="wb-max-tokens" { "Max tokens" }
                    input id="wb-max-tokens" name="max_tokens" type="number" min="1" max=(MAX_TOKENS_MAX) value="512";
                }
            }
            label for="wb-prompt" { "Prompt" }
            textarea id="wb-prompt" name="prompt" rows="6" required {}
            button type="submit" id="wb-run" { "Run" }
        }
        h2 { "Answer" }
        pre id="wb-answer" aria-live="polite" {}
        p id="wb-status" role="status" {}
        div id="wb-result" {}
        p.hint { "Balance before this run: " span id="wb-balance" { (balance.available) } }
    };
    Ok(Html(
        layout::page(&user, "/console/workbench", "Workbench", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct RunForm {
    model: String,
    #[serde(default)]
    workspace: String,
    prompt: String,
    max_tokens: u64,
}

/// Starts a run and streams the data plane's answer (SSE) back to the page's script.
pub(crate) async fn run(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Form(form): Form<RunForm>,
) -> Result<Response, PageError> {
    let workspace = (!form.workspace.is_empty()).then_some(form.workspace.as_str());
    let caller = user.workbench_caller(workspace).await?;
    if form.prompt.trim().is_empty() {
        return Err(PageError::Invalid("write a prompt first".into()));
    }
    let body = serde_json::json!({
        "model": form.model,
        "max_tokens": form.max_tokens.clamp(1, MAX_TOKENS_MAX),
        "stream": true,
        "messages": [{"role": "user", "content": form.prompt}],
    });
    Ok(state
        .workbench
        .run(caller, Bytes::from(body.to_string()))
        .await
        .into_response())
}

/// Tokens and cost of a finished run, and the balance after it: an HTML fragment the
/// script puts under the answer.
pub(crate) async fn result(
    Signed(user): Signed,
    Path(request_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Workbench, Access::View)?;
    let record = user
        .workbench_result(&request_id)
        .await?
        .ok_or_else(|| PageError::NotFound("the run has not finished".into()))?;
    let balance = admin.balance().await?;
    let usage = &record.usage;
    let fragment = html! {
        dl.result {
            dt { "Status" } dd { (record.status.as_str()) }
            dt { "Input tokens" } dd id="wb-input-tokens" { (layout::count(usage.input_tokens)) }
            dt { "Output tokens" } dd id="wb-output-tokens" { (layout::count(usage.output_tokens)) }
            dt { "Cost" } dd id="wb-cost" { (record.cost) }
            dt { "Balance now" } dd id="wb-balance-after" { (balance.available) }
        }
    };
    Ok(Html(fragment.into_string()))
}
