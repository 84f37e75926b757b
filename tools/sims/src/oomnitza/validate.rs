//! Validation of `POST /api/v3/bulk` bodies, pure and I/O-free.
//!
//! Two levels, as Oomnitza answers them: a bad envelope (missing portion, wrong data type, both
//! flags, unknown field ids...) is a `400` naming the problem; bad records (no username, an
//! e-mail that is not one, an unknown role, a poisoned e-mail) refuse the whole batch with a
//! `422` listing each refused record, and nothing is applied.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{CustomField, OomnitzaConfig};

/// The system user fields a bulk record may carry.
pub(crate) const SYSTEM_FIELDS: &[&str] = &[
    "USER",
    "EMAIL",
    "FIRST_NAME",
    "LAST_NAME",
    "PHONE",
    "POSITION",
    "ADDRESS",
    "PERMISSIONS_ID",
    "SAAS",
];

/// A bulk body whose envelope is valid.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) portion: String,
    pub(crate) sync_field: Vec<String>,
    pub(crate) insert_only: bool,
    pub(crate) update_only: bool,
    /// A client-reported failure: the records are logged as failed with this reason.
    pub(crate) error: Option<String>,
    pub(crate) records: Vec<Value>,
}

/// One refused record of a `422` answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Refusal {
    /// Position of the record in `records`.
    pub(crate) index: usize,
    /// The offending field, if one is to blame.
    pub(crate) field: Option<String>,
    pub(crate) reason: String,
}

/// The record-level flag of the seed integration's "restore archived records" option; not a
/// field id, so it is accepted beside them.
pub(crate) const RESTORE_ARCHIVED: &str = "restore_archived";

/// The field ids the tenant knows: system ids and configured custom ids.
pub(crate) fn is_known_field(id: &str, custom: &[CustomField]) -> bool {
    id == RESTORE_ARCHIVED || SYSTEM_FIELDS.contains(&id) || custom.iter().any(|f| f.id == id)
}

fn check_field_id(id: &str, custom: &[CustomField]) -> Result<(), String> {
    if id.contains(['.', '-', ' ']) {
        return Err(format!(
            "field id '{id}' is not allowed: ids cannot contain '.', '-' or spaces"
        ));
    }
    if !is_known_field(id, custom) {
        return Err(format!("field id '{id}' is not known to Oomnitza"));
    }
    Ok(())
}

fn flag(body: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{name} must be true or false")),
    }
}

/// Checks the envelope of a bulk body; the error is the message of the `400`.
pub(crate) fn envelope(body: Value, custom: &[CustomField]) -> Result<Envelope, String> {
    let Value::Object(mut body) = body else {
        return Err("the body must be a JSON object".into());
    };
    let portion = match body.get("portion") {
        None | Some(Value::Null) => return Err("portion is missing".into()),
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        Some(_) => return Err("portion must be a non-empty string".into()),
    };
    match body.get("data_type") {
        None | Some(Value::Null) => return Err("data_type is missing".into()),
        Some(Value::String(t)) if t == "users" => {}
        Some(other) => {
            return Err(format!(
                "data_type {other} is not supported (only \"users\")"
            ));
        }
    }
    let insert_only = flag(&body, "insert_only")?;
    let update_only = flag(&body, "update_only")?;
    if insert_only && update_only {
        return Err("insert_only and update_only cannot both be true".into());
    }
    let records = match body.remove("records") {
        Some(Value::Array(records)) => records,
        None => return Err("records is missing".into()),
        Some(_) => return Err("records must be a list".into()),
    };
    let error = match body.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => return Err("error must be a string or null".into()),
    };
    let sync_field = match body.get("sync_field") {
        None | Some(Value::Null) => return Err("sync_field is missing".into()),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_string)
                    .ok_or("sync_field must be a list of field ids")
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("sync_field must be a list of field ids".into()),
    };
    if sync_field.is_empty() {
        return Err("sync_field is empty: name at least one field that identifies a user".into());
    }
    for id in &sync_field {
        check_field_id(id, custom).map_err(|e| format!("sync_field: {e}"))?;
        if id == "SAAS" {
            return Err("sync_field: SAAS cannot identify a user".into());
        }
    }
    // A client-reported failure carries the record as it came from the source, so its keys
    // are not Oomnitza field ids.
    if error.is_none() {
        // The ids check_field_id accepts, looked up once per key instead of searched.
        let accepted: foldhash::HashSet<&str> = [RESTORE_ARCHIVED]
            .into_iter()
            .chain(SYSTEM_FIELDS.iter().copied())
            .chain(custom.iter().map(|f| f.id.as_str()))
            .filter(|id| check_field_id(id, custom).is_ok())
            .collect();
        for (i, record) in records.iter().enumerate() {
            if let Value::Object(fields) = record {
                for id in fields.keys() {
                    if !accepted.contains(id.as_str()) {
                        check_field_id(id, custom).map_err(|e| format!("records[{i}]: {e}"))?;
                    }
                }
            }
        }
    }
    Ok(Envelope {
        portion,
        sync_field,
        insert_only,
        update_only,
        error,
        records,
    })
}

/// Checks every record; an empty list means the batch may be applied.
pub(crate) fn records(
    records: &[Value],
    config: &OomnitzaConfig,
    poison: &[String],
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mut refuse = |field: Option<&str>, reason: String| {
            refusals.push(Refusal {
                index,
                field: field.map(str::to_string),
                reason,
            });
        };
        let Value::Object(fields) = record else {
            refuse(None, "the record is not a JSON object".into());
            continue;
        };
        match fields.get("USER") {
            Some(Value::String(u)) if !u.trim().is_empty() => {}
            _ => refuse(Some("USER"), "USER (the username) is required".into()),
        }
        match fields.get("EMAIL") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) if is_email(e) => {
                if poison.iter().any(|p| p.eq_ignore_ascii_case(e)) {
                    refuse(Some("EMAIL"), format!("EMAIL '{e}' is refused by Oomnitza"));
                }
            }
            Some(other) => refuse(
                Some("EMAIL"),
                format!("EMAIL {other} is not an e-mail address"),
            ),
        }
        match fields.get("PERMISSIONS_ID") {
            None | Some(Value::Null) => {}
            Some(role) => {
                let known = scalar_text(role).is_some_and(|r| config.roles.contains(&r));
                if !known {
                    refuse(
                        Some("PERMISSIONS_ID"),
                        format!("PERMISSIONS_ID {role} is not a role of this Oomnitza"),
                    );
                }
            }
        }
        match fields.get("SAAS") {
            None | Some(Value::Null) => {}
            Some(saas) if saas_is_valid(saas) => {}
            Some(_) => refuse(
                Some("SAAS"),
                "SAAS must be an object with a sync_key and a selected_saas_id or name".into(),
            ),
        }
    }
    refusals
}

fn saas_is_valid(saas: &Value) -> bool {
    let text = |k: &str| {
        saas.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    text("sync_key") && (text("selected_saas_id") || text("name"))
}

/// The text of a string or number value (`"25"` and `25` are the same role).
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A plain syntactic e-mail check: one `@`, a local part, a dotted domain, no spaces.
pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

#[cfg(test)]
mod tests {

    #[test]
    fn restore_archived_is_accepted_beside_field_ids() {
        assert!(is_known_field(RESTORE_ARCHIVED, &[]));
        assert!(!is_known_field("RESTORE_ARCHIVED_X", &[]));
    }

    use super::*;
    use serde_json::json;

    fn config() -> OomnitzaConfig {
        OomnitzaConfig::default()
    }

    fn body() -> Value {
        json!({
            "portion": "p1", "data_type": "users", "sync_field": ["EMAIL"],
            "insert_only": false, "update_only": false, "error": null,
            "records": [{"USER": "a@example.com", "EMAIL": "a@example.com"}],
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = body();
        b[key] = value;
        b
    }

    fn without(key: &str) -> Value {
        let mut b = body();
        b.as_object_mut().map(|o| o.remove(key));
        b
    }

    #[test]
    fn a_valid_envelope_parses() {
        let env = envelope(body(), &config().custom_fields).expect("valid");
        assert_eq!(env.portion, "p1");
        assert_eq!(env.sync_field, ["EMAIL"]);
        assert_eq!(env.records.len(), 1);
        assert_eq!(env.error, None);
    }

    #[test]
    fn each_envelope_problem_is_named() {
        let custom = config().custom_fields;
        let cases = [
            (without("portion"), "portion is missing"),
            (with("portion", json!("")), "portion must be"),
            (without("data_type"), "data_type is missing"),
            (with("data_type", json!("assets")), "not supported"),
            (with("records", json!({})), "records must be a list"),
            (with("sync_field", json!([])), "sync_field is empty"),
            (without("sync_field"), "sync_field is missing"),
            (with("sync_field", json!(["NOPE"])), "not known"),
            (with("sync_field", json!(["SAAS"])), "SAAS cannot"),
            (with("error", json!(5)), "error must be"),
            (with("insert_only", json!("yes")), "insert_only must be"),
            (
                with("records", json!([{"USER": "u", "work.email": "x"}])),
                "not allowed",
            ),
            (
                with("records", json!([{"USER": "u", "WORK-EMAIL": "x"}])),
                "not allowed",
            ),
            (
                with("records", json!([{"USER": "u", "WORK EMAIL": "x"}])),
                "not allowed",
            ),
            (
                with("records", json!([{"USER": "u", "ABCDEF": "x"}])),
                "not known",
            ),
            (json!([1]), "JSON object"),
        ];
        for (body, expected) in cases {
            let err = envelope(body, &custom).expect_err(expected);
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        let mut both = body();
        both["insert_only"] = json!(true);
        both["update_only"] = json!(true);
        assert!(envelope(both, &custom).is_err());
    }

    #[test]
    fn client_reported_failures_may_carry_source_records() {
        let mut b = with(
            "records",
            json!([{"emailAddress": "x", "workAddress.city": "y"}]),
        );
        b["error"] = json!("could not map the record");
        let env = envelope(b, &config().custom_fields).expect("accepted");
        assert_eq!(env.error.as_deref(), Some("could not map the record"));
    }

    #[test]
    fn record_problems_are_listed_per_index() {
        let records = vec![
            json!({"USER": "ok@example.com", "EMAIL": "ok@example.com", "PERMISSIONS_ID": "25"}),
            json!({"EMAIL": "x@example.com"}),
            json!({"USER": "u", "EMAIL": "not-an-email"}),
            json!({"USER": "u", "PERMISSIONS_ID": "999"}),
            json!({"USER": "u", "EMAIL": "Bad@Example.com"}),
            json!("text"),
            json!({"USER": "u", "SAAS": {"name": "Sage People"}}),
            json!({"USER": "u", "PERMISSIONS_ID": 10, "SAAS": {"sync_key": "k", "name": "Sage People"}}),
        ];
        let refusals = self::records(&records, &config(), &["bad@example.com".into()]);
        let indices: Vec<usize> = refusals.iter().map(|r| r.index).collect();
        assert_eq!(indices, [1, 2, 3, 4, 5, 6]);
        assert_eq!(refusals[0].field.as_deref(), Some("USER"));
        assert_eq!(refusals[2].field.as_deref(), Some("PERMISSIONS_ID"));
        assert!(refusals[3].reason.contains("refused"));
    }

    #[test]
    fn email_syntax() {
        for good in [
            "a@b.co",
            "o'brien.7@example.com",
            "JOSE.GARCIA.1@EXAMPLE.COM",
        ] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
