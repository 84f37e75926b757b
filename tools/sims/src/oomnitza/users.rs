//! `GET /api/v3/users` (filter, limit, skip, sortby) and `GET /api/v3/users/{id}`.
//!
//! Users are shown with lower-case attribute names (`USER` → `username`, `PERMISSIONS_ID` →
//! `role`, as the published user schema names them) and their `id`; every attribute is present,
//! `null` if unset. The published schema lists no custom fields, so how they are named is
//! [`super::OomnitzaBehavior::custom_field_names`] (lower-case id by default).
//!
//! A read must stay fast on a large tenant (a verifier pages through 100,000 users, or asks for
//! a few hundred keys at a time with `IN [...]`): an `eq`/`IN` condition is looked up in the
//! store's index, only the users of the page are rendered, and nothing is copied while
//! filtering.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::filter;
use super::gate::{bad_request, not_found};
use super::state::Shared;
use super::{CustomField, CustomFieldNames, OomnitzaBehavior, validate::scalar_text};
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

/// The attribute of the user's id: the published user schema's string `user_id` (it has no
/// `id`).
const ID: &str = "user_id";

/// How field ids and attribute names correspond in this tenant.
struct Naming {
    /// Every attribute name, in the order users are shown with.
    names: Vec<String>,
    /// Field id → attribute name.
    attribute: HashMap<String, String>,
    /// Attribute name → field id.
    field: HashMap<String, String>,
    /// Show a numeric `PERMISSIONS_ID` as a number.
    role_as_number: bool,
}

impl Naming {
    fn new(custom: &[CustomField], behavior: &OomnitzaBehavior) -> Self {
        let style = behavior.custom_field_names;
        let mut pairs: Vec<(String, String)> = SYSTEM_ATTRIBUTES
            .iter()
            .map(|(id, name)| ((*id).to_string(), (*name).to_string()))
            .collect();
        pairs.extend(custom.iter().map(|f| {
            let name = match style {
                CustomFieldNames::LowerCaseId => f.id.to_lowercase(),
                CustomFieldNames::Id => f.id.clone(),
            };
            (f.id.clone(), name)
        }));
        let mut names: Vec<String> = pairs.iter().map(|(_, name)| name.clone()).collect();
        names.push(ID.into());
        Self {
            names,
            field: pairs
                .iter()
                .map(|(id, n)| (n.clone(), id.clone()))
                .collect(),
            attribute: pairs.into_iter().collect(),
            role_as_number: behavior.role_as_number,
        }
    }

    /// The attribute name of a field id not in the data model (kept, lower-cased).
    fn attribute_of(&self, field_id: &str) -> String {
        self.attribute
            .get(field_id)
            .cloned()
            .unwrap_or_else(|| field_id.to_lowercase())
    }

    /// A stored user as the API shows it, written as JSON straight into `out` (a page of
    /// thousands of users is read under the store lock: no `Value` is built per attribute).
    fn write_view(&self, out: &mut Vec<u8>, id: &str, fields: &Map<String, Value>) {
        let member = |out: &mut Vec<u8>, first: &mut bool, name: &str, value: &Value| {
            if !std::mem::take(first) {
                out.push(b',');
            }
            // Writing a string or a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            match value {
                Value::String(text) if self.role_as_number && name == "role" => {
                    match text.trim().parse::<u64>() {
                        Ok(number) => out.extend_from_slice(number.to_string().as_bytes()),
                        Err(_) => {
                            let _ = serde_json::to_writer(&mut *out, value);
                        }
                    }
                }
                _ => {
                    let _ = serde_json::to_writer(&mut *out, value);
                }
            }
        };
        let (null, id) = (Value::Null, Value::String(id.to_owned()));
        let mut first = true;
        out.push(b'{');
        for name in &self.names {
            let value = if name == ID {
                &id
            } else {
                self.field
                    .get(name)
                    .and_then(|field| fields.get(field))
                    .unwrap_or(&null)
            };
            member(out, &mut first, name, value);
        }
        // Fields outside the data model are kept under their lower-cased id.
        for (field, value) in fields {
            if !self.attribute.contains_key(field) {
                member(out, &mut first, &field.to_lowercase(), value);
            }
        }
        out.push(b'}');
    }

    /// A stored user as the API shows it.
    fn view(&self, id: &str, fields: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        for name in &self.names {
            out.insert(name.clone(), Value::Null);
        }
        for (field, value) in fields {
            let value = match value {
                Value::String(text) if self.role_as_number && field == "PERMISSIONS_ID" => text
                    .trim()
                    .parse::<u64>()
                    .map_or_else(|_| value.clone(), Value::from),
                _ => value.clone(),
            };
            out.insert(self.attribute_of(field), value);
        }
        out.insert(ID.into(), Value::String(id.to_owned()));
        Value::Object(out)
    }
}

/// Lists users matching `filter`, sorted by `sortby`, paged by `skip` and `limit`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let behavior = shared.behavior();
    let naming = Naming::new(&shared.config.custom_fields, &behavior);

    let filter = match params.get("filter") {
        None => None,
        Some(f) => match filter::parse(f, &naming.names, behavior.filter_backslash_escapes) {
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
        (Ok(limit), Ok(skip)) => (limit.unwrap_or(usize::MAX), skip.unwrap_or(0)),
        (Err(problem), _) | (_, Err(problem)) => return bad_request(&problem),
    };
    let skip = if lock(&shared.control).faults.users_skip_ignored {
        0
    } else {
        skip
    };
    let limit = limit.min(
        behavior
            .max_page_size
            .map_or(usize::MAX, |most| most.max(1)),
    );
    let sort = match params.get("sortby").map(|s| parse_sort(s, &naming.names)) {
        None => None,
        Some(Ok(sort)) => Some(sort),
        Some(Err(problem)) => return bad_request(&problem),
    };

    let (page, total) = {
        let mut store = lock(&shared.store);
        if filter.is_none() && sort.is_none() {
            // Plain paging, the common read-back: the page is a range of slots.
            let total = store.user_count();
            let slots = skip.min(total)..total;
            let (page, shown) = write_page(
                &naming,
                slots.take(limit).filter_map(|slot| store.user_at(slot)),
            );
            drop(store);
            count_read(&shared, shown);
            return page_response(page, total);
        }
        let narrowed = filter
            .as_ref()
            .and_then(filter::narrowing)
            .and_then(|(attr, texts)| Some((naming.field.get(attr)?.clone(), texts)));
        let candidates: Vec<usize> = match narrowed {
            Some((field, texts)) => store.slots_holding(&field, &texts),
            None => (0..store.user_count()).collect(),
        };
        let store = &*store;
        let value = |slot: usize, attr: &str| -> Option<Value> {
            let (id, fields) = store.user_at(slot)?;
            if attr == ID {
                return Some(Value::String(id.to_owned()));
            }
            fields.get(naming.field.get(attr)?).cloned()
        };
        let mut matched: Vec<usize> = match &filter {
            None => candidates,
            Some(f) => candidates
                .into_iter()
                .filter(|&slot| {
                    let Some((id, fields)) = store.user_at(slot) else {
                        return false;
                    };
                    let id = Value::String(id.to_owned());
                    filter::matches_by(f, &|attr: &str| {
                        if attr == ID {
                            return Some(&id);
                        }
                        fields.get(naming.field.get(attr)?)
                    })
                })
                .collect(),
        };
        if let Some((attr, descending)) = sort {
            let mut keyed: Vec<(Option<String>, usize)> = matched
                .iter()
                .map(|&slot| (value(slot, &attr).as_ref().and_then(scalar_text), slot))
                .collect();
            // Nulls sort last either way; ties keep creation order.
            keyed.sort_by(|(a, sa), (b, sb)| {
                let order = match (a, b) {
                    (Some(x), Some(y)) if descending => y.cmp(x),
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                };
                order.then(sa.cmp(sb))
            });
            matched = keyed.into_iter().map(|(_, slot)| slot).collect();
        }
        let total = matched.len();
        let users = matched
            .into_iter()
            .skip(skip)
            .take(limit)
            .filter_map(|slot| store.user_at(slot));
        (write_page(&naming, users), total)
    };
    let ((page, shown), total) = (page, total);
    count_read(&shared, shown);
    page_response(page, total)
}

/// Users as a JSON array; returns it and how many users it holds.
fn write_page<'a>(
    naming: &Naming,
    users: impl Iterator<Item = (&'a str, &'a Map<String, Value>)>,
) -> (Vec<u8>, usize) {
    let mut page = Vec::with_capacity(64 * 1024);
    let mut shown = 0;
    page.push(b'[');
    for (id, fields) in users {
        if shown > 0 {
            page.push(b',');
        }
        naming.write_view(&mut page, id, fields);
        shown += 1;
    }
    page.push(b']');
    (page, shown)
}

/// A page of users (a JSON array), with the number of matching users in `X-Total-Count`.
fn page_response(page: Vec<u8>, total: usize) -> Response {
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        page,
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    response
}

fn count_read(shared: &Shared, users: usize) {
    let mut requests = lock(&shared.requests);
    requests.user_reads += 1;
    requests.users_returned += users as u64;
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
    let naming = Naming::new(&shared.config.custom_fields, &shared.behavior());
    let user = lock(&shared.store).user(&id).map(|mut fields| {
        fields.remove("_id");
        naming.view(&id, &fields)
    });
    match user {
        Some(user) => {
            count_read(&shared, 1);
            Json(user).into_response()
        }
        None => not_found(&format!("no user with id {id}")),
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
        stored.insert("USER".into(), json!("ada"));
        stored.insert("PERMISSIONS_ID".into(), json!("25"));
        stored.insert("ABCDEF".into(), json!("a2G"));
        let v = Naming::new(&custom, &OomnitzaBehavior::default()).view("u1", &stored);
        assert_eq!(v["user_id"], "u1");
        assert_eq!(v["username"], "ada");
        assert_eq!(
            v["role"],
            json!(25),
            "a number, as the published schema types it"
        );
        assert_eq!(v["abcdef"], "a2G");
        assert!(v["email"].is_null() && v.get("phone_number").is_some());
        assert!(v.get("USER").is_none());
        let behavior = OomnitzaBehavior {
            custom_field_names: CustomFieldNames::Id,
            role_as_number: false,
            ..OomnitzaBehavior::default()
        };
        let v = Naming::new(&custom, &behavior).view("u1", &stored);
        assert_eq!((&v["ABCDEF"], v.get("abcdef")), (&json!("a2G"), None));
        assert_eq!(v["role"], "25", "as sent");
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
