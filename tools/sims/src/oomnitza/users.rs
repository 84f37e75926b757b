//! `GET /api/v3/users` (filter, limit, skip, sortby) and `GET /api/v3/users/{id}`.
//!
//! Users are shown with lower-case attribute names (`USER` → `username`, `PERMISSIONS_ID` →
//! `role`, custom ids lower-cased) and their `id`; every attribute is present, `null` if unset.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::filter;
use super::gate::error;
use super::state::Shared;
use super::{CustomField, validate::scalar_text};
use crate::sync::lock;

/// System field id → attribute name.
const SYSTEM_ATTRIBUTES: &[(&str, &str)] = &[
    ("USER", "username"),
    ("EMAIL", "email"),
    ("FIRST_NAME", "first_name"),
    ("LAST_NAME", "last_name"),
    ("POSITION", "position"),
    ("PERMISSIONS_ID", "role"),
    ("PHONE", "phone_number"),
    ("ADDRESS", "address"),
];

/// The attribute name of a field id.
fn attribute(field_id: &str) -> String {
    SYSTEM_ATTRIBUTES
        .iter()
        .find(|(id, _)| *id == field_id)
        .map_or_else(|| field_id.to_lowercase(), |(_, name)| (*name).to_string())
}

/// Every attribute name a filter or sort may use.
fn attributes(custom: &[CustomField]) -> Vec<String> {
    let mut names: Vec<String> = SYSTEM_ATTRIBUTES
        .iter()
        .map(|(_, n)| (*n).to_string())
        .collect();
    names.extend(custom.iter().map(|f| f.id.to_lowercase()));
    names.push("id".into());
    names
}

/// A stored user (field id → value, `_id`) as the API shows it.
fn view(user: &Map<String, Value>, custom: &[CustomField]) -> Value {
    let mut out = Map::new();
    for name in attributes(custom) {
        out.insert(name, Value::Null);
    }
    for (field, value) in user {
        if field == "_id" {
            out.insert("id".into(), value.clone());
        } else {
            out.insert(attribute(field), value.clone());
        }
    }
    Value::Object(out)
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Lists users matching `filter`, sorted by `sortby`, paged by `skip` and `limit`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let custom = &shared.config.custom_fields;
    let names = attributes(custom);

    let filter = match params.get("filter") {
        None => None,
        Some(f) => match filter::parse(f, &names) {
            Ok(f) => Some(f),
            Err(problem) => return bad_request(&format!("invalid filter: {problem}")),
        },
    };
    let number = |name: &str| -> Result<Option<usize>, String> {
        match params.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("{name} must be a non-negative integer")),
        }
    };
    let (limit, skip) = match (number("limit"), number("skip")) {
        (Ok(limit), Ok(skip)) => (limit, skip.unwrap_or(0)),
        (Err(problem), _) | (_, Err(problem)) => return bad_request(&problem),
    };
    let sort = match params.get("sortby").map(|s| parse_sort(s, &names)) {
        None => None,
        Some(Ok(sort)) => Some(sort),
        Some(Err(problem)) => return bad_request(&problem),
    };

    let stored = lock(&shared.store).users();
    let mut users: Vec<Value> = stored
        .iter()
        .map(|u| view(u, custom))
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(u)))
        .collect();
    if let Some((field, descending)) = sort {
        // Nulls sort last either way.
        users.sort_by(|a, b| {
            let (ka, kb) = (
                a.get(&field).and_then(scalar_text),
                b.get(&field).and_then(scalar_text),
            );
            match (ka, kb) {
                (Some(x), Some(y)) if descending => y.cmp(&x),
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
    }
    let total = users.len();
    let page: Vec<Value> = users
        .into_iter()
        .skip(skip)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let mut response = Json(page).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    response
}

/// `field`, `field asc` or `field desc` → (field, descending).
fn parse_sort(sortby: &str, names: &[String]) -> Result<(String, bool), String> {
    let mut parts = sortby.split_whitespace();
    let field = parts.next().ok_or("sortby is empty")?;
    if !names.iter().any(|n| n == field) {
        return Err(format!("sortby: '{field}' is not a user attribute"));
    }
    let descending = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(format!("sortby: '{other}' is not asc or desc")),
    };
    if parts.next().is_some() {
        return Err("sortby takes one field and an optional direction".into());
    }
    Ok((field.to_string(), descending))
}

/// One user by id, or `404`.
pub(crate) async fn one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let user = lock(&shared.store).user(&id);
    match user {
        Some(u) => Json(view(&u, &shared.config.custom_fields)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no user with id {id}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_are_shown_with_lower_case_attributes() {
        let custom = vec![CustomField {
            id: "ABCDEF".into(),
            label: "Sage User ID".into(),
            unique: true,
        }];
        let mut stored = Map::new();
        stored.insert("_id".into(), json!("u1"));
        stored.insert("USER".into(), json!("ada"));
        stored.insert("PERMISSIONS_ID".into(), json!("25"));
        stored.insert("ABCDEF".into(), json!("a2G"));
        let v = view(&stored, &custom);
        assert_eq!(v["id"], "u1");
        assert_eq!(v["username"], "ada");
        assert_eq!(v["role"], "25");
        assert_eq!(v["abcdef"], "a2G");
        assert!(v["email"].is_null() && v.get("phone_number").is_some());
        assert!(v.get("USER").is_none());
    }

    #[test]
    fn sort_specs() {
        let names = vec!["email".to_string()];
        assert_eq!(parse_sort("email", &names), Ok(("email".into(), false)));
        assert_eq!(parse_sort("email desc", &names), Ok(("email".into(), true)));
        assert!(parse_sort("nope asc", &names).is_err());
        assert!(parse_sort("email sideways", &names).is_err());
        assert!(parse_sort("", &names).is_err());
    }
}
