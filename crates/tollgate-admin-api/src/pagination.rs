//! Cursor pagination exactly as Anthropic's lists: `limit` (1 to 1000, default 20),
//! `after_id` or `before_id` (the id of an object of the same list), and a page of
//! `data` with `has_more` (in the direction asked), `first_id` and `last_id`.
//!
//! Lists here are an organization's own objects (keys, workspaces, users, …), small enough
//! to load whole and cut in memory, which keeps the cursor exact whatever the filters.

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::QueryPairs;

pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const MAX_LIMIT: usize = 1000;

/// Which page of a list is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) limit: usize,
    pub(crate) after_id: Option<String>,
    pub(crate) before_id: Option<String>,
}

impl PageRequest {
    pub(crate) fn parse(query: &QueryPairs) -> Result<PageRequest, ApiError> {
        let limit = match query.one("limit")? {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "limit: Input should be an integer from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after_id = query.one("after_id")?.map(str::to_owned);
        let before_id = query.one("before_id")?.map(str::to_owned);
        if after_id.is_some() && before_id.is_some() {
            return Err(ApiError::invalid("give after_id or before_id, not both"));
        }
        Ok(PageRequest {
            limit,
            after_id,
            before_id,
        })
    }
}

/// One page of a list, as the wire shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub(crate) data: Vec<T>,
    /// Whether there are more results in the direction asked.
    pub(crate) has_more: bool,
    /// The first id of `data`: the `before_id` of the previous page.
    pub(crate) first_id: Option<String>,
    /// The last id of `data`: the `after_id` of the next page.
    pub(crate) last_id: Option<String>,
}

/// Cuts `items` (in list order) to the page asked for. A cursor that is not in the list is
/// a 400.
pub(crate) fn paginate<T>(
    items: Vec<T>,
    id_of: impl Fn(&T) -> String,
    request: &PageRequest,
) -> Result<Page<T>, ApiError> {
    let position = |cursor: &str| {
        items
            .iter()
            .position(|item| id_of(item) == cursor)
            .ok_or_else(|| ApiError::invalid(format!("no object of this list has the id '{cursor}'")))
    };
    let (start, end, has_more) = match (&request.after_id, &request.before_id) {
        (Some(after), _) => {
            let start = position(after)? + 1;
            let end = (start + request.limit).min(items.len());
            (start, end, end < items.len())
        }
        (None, Some(before)) => {
            let end = position(before)?;
            let start = end.saturating_sub(request.limit);
            (start, end, start > 0)
        }
        (None, None) => {
            let end = request.limit.min(items.len());
            (0, end, end < items.len())
        }
    };
    let data: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
    Ok(Page {
        first_id: data.first().map(&id_of),
        last_id: data.last().map(&id_of),
        has_more,
        data,
    })
}

#[cfg(test)]
mod tests;
