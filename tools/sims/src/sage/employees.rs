//! `GET /services/apexrest/spapi/v4/employees[/{id}]`: marker paging over the generated org.
//!
//! A page is the next `page size` live workers after the marker, in id order, that pass the
//! filter. Paging is stateless: the marker alone says where to continue, so a page can be
//! re-read after a failure, and the marker of a removed worker still works.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::filter::{self, Filter};
use super::state::Shared;
use super::{EndStyle, PageSize, errors};
use crate::generate;
use crate::rng::mix;
use crate::sync::{lock, read};

/// The API version reported in every envelope.
const VERSION: &str = "4.8";

/// Lists one page of employees after `marker`, optionally filtered by `$filter`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();

    let id_allowed = !lock(&shared.control).faults.filter_refuses_id;
    let filter = match params.get("$filter").map(|f| filter::parse(f, id_allowed)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(problem)) => {
            let specific = filter::inner_code(&problem);
            return errors::invalid_filter(&format!("Invalid $filter: {problem}."), specific);
        }
    };

    let reject_markers = lock(&shared.control).faults.reject_markers;
    let org = read(&shared.org);
    let start = match params.get("marker") {
        None => 0,
        Some(marker) => match org.index_of_marker(marker) {
            Some(i) if !reject_markers && org.ever_existed(i) => i + 1,
            _ => return errors::invalid_marker(marker),
        },
    };

    let size = page_size(shared.config.page_size, shared.config.seed, start);
    let data = collect_page(&org, start, size, filter.as_ref());
    drop(org);

    if data.is_empty() {
        lock(&shared.stats).end_of_list += 1;
        return match shared.config.end_style {
            EndStyle::NoContent => StatusCode::NO_CONTENT.into_response(),
            EndStyle::EmptyData => json_ok(&shared, &json!({"version": VERSION, "data": []})),
        };
    }
    count_page(&shared, data.len());
    json_ok(&shared, &json!({"version": VERSION, "data": data}))
}

/// Reads one employee by id: `{"version", "data": {...}}` with `data` one employee object (the
/// OpenAPI's `EmployeeResponse`, where the list answers `EmployeesResponse`), or `404`.
pub(crate) async fn one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let record = generate::index_of(&id).and_then(|i| read(&shared.org).record(i));
    match record {
        Some(record) => {
            count_page(&shared, 1);
            json_ok(&shared, &json!({"version": VERSION, "data": record}))
        }
        None => errors::envelope(
            StatusCode::NOT_FOUND,
            "REQUEST_ERROR",
            &format!("No employee with id '{id}'."),
            "id",
            "NOT_FOUND",
        ),
    }
}

/// The next `size` live, matching records from index `start` on.
fn collect_page(
    org: &super::state::Org,
    start: u64,
    size: usize,
    filter: Option<&Filter>,
) -> Vec<Value> {
    let mut data = Vec::with_capacity(size.min(1_000));
    let mut index = start;
    while data.len() < size && index < org.total {
        if let Some(record) = org.record(index)
            && filter.is_none_or(|f| filter::matches(f, &record))
        {
            data.push(record);
        }
        index += 1;
    }
    data
}

/// The size of the page that starts at `start`: fixed, or drawn from the seed and `start`, so
/// that the same marker always gives the same page.
pub(crate) fn page_size(policy: PageSize, seed: u64, start: u64) -> usize {
    match policy {
        PageSize::Fixed(n) => n.max(1),
        PageSize::Varying { min, max } => {
            let lo = min.max(1);
            let hi = max.max(lo);
            let span = (hi - lo) as u64 + 1;
            lo + (mix(seed ^ mix(start ^ 0x5A6E)) % span) as usize
        }
    }
}

fn count_page(shared: &Shared, records: usize) {
    let mut stats = lock(&shared.stats);
    stats.pages_served += 1;
    stats.records_served += records as u64;
}

/// A `200` JSON response, cut in the middle when the truncation fault fires.
fn json_ok(shared: &Shared, body: &Value) -> Response {
    let mut bytes = body.to_string().into_bytes();
    let rate = lock(&shared.control).faults.truncate_rate;
    if lock(&shared.control).rng.chance(rate) {
        bytes.truncate(bytes.len() / 2);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varying_page_sizes_stay_in_range_and_repeat_per_marker() {
        let policy = PageSize::Varying { min: 3, max: 7 };
        let sizes: Vec<usize> = (0..200).map(|s| page_size(policy, 42, s)).collect();
        assert!(sizes.iter().all(|n| (3..=7).contains(n)));
        assert!(sizes.contains(&3) && sizes.contains(&7));
        assert_eq!(page_size(policy, 42, 17), page_size(policy, 42, 17));
    }

    #[test]
    fn degenerate_page_sizes_still_make_progress() {
        assert_eq!(page_size(PageSize::Fixed(0), 1, 0), 1);
        assert_eq!(page_size(PageSize::Varying { min: 0, max: 0 }, 1, 0), 1);
        assert_eq!(page_size(PageSize::Varying { min: 9, max: 2 }, 1, 0), 9);
    }
}
