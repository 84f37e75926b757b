//! Validation of `POST /api/v3/bulk` bodies and of the records in them, pure and I/O-free.
//!
//! Two moments, as Oomnitza has them: a bad envelope (missing portion, wrong data type, both
//! flags, unknown field ids...) is a `400` naming the problem when the batch is posted; a bad
//! record (no username, an e-mail that is not one, an unknown role, a value a tenant rule
//! refuses) is accepted with the batch and fails later, when the record is processed, with its
//! reason in the run log. The only record-level refusal at post time is the `poison_emails`
//! fault (a `422` for the whole batch), kept for tests of clients that isolate bad records.

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{CustomField, ValidationRule};

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

/// The `error_type` with which Oomnitza's connector marks a failure that stopped its run;
/// such a failure is logged under this name in the run log.
pub(crate) const FATAL_ERROR: &str = "Fatal Error";

/// A bulk body whose envelope is valid.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) portion: String,
    /// `connector_name` (or `connector_id`), shown as the run log's `connector`.
    pub(crate) connector: String,
    pub(crate) sync_field: Vec<String>,
    pub(crate) insert_only: bool,
    pub(crate) update_only: bool,
    /// Check the records as processing would and apply nothing.
    pub(crate) test_run: bool,
    /// A client-reported failure: the records are logged as failed with this reason.
    pub(crate) error: Option<String>,
    /// `error_type` was `"Fatal Error"`: the failure is also logged as fatal.
    pub(crate) fatal: bool,
    pub(crate) records: Vec<Value>,
}

/// One refused record of a `422` answer (the `poison_emails` fault).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Refusal {
    /// Position of the record in `records`.
    pub(crate) index: usize,
    /// The offending field, if one is to blame.
    pub(crate) field: Option<String>,
    pub(crate) reason: String,
}

/// The record-level flag of the "restore archived records" option of Oomnitza's own Sage
/// People integration; not a field id, so it is accepted beside them.
pub(crate) const RESTORE_ARCHIVED: &str = "restore_archived";

/// The field ids the tenant knows: system ids and configured custom ids.
pub(crate) fn is_known_field(id: &str, custom: &[CustomField]) -> bool {
    id == RESTORE_ARCHIVED || SYSTEM_FIELDS.contains(&id) || custom.iter().any(|f| f.id == id)
}

/// Whether `id` has the shape of a field id (no `.`, `-` or space).
fn is_allowed_id(id: &str) -> bool {
    !id.contains(['.', '-', ' '])
}

fn check_field_id(id: &str, custom: &[CustomField]) -> Result<(), String> {
    if !is_allowed_id(id) {
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

/// Checks the envelope of a bulk body; the error is the message of the `400`. It names the
/// first unknown field id of the records, or, with `every_unknown`, each of them.
pub(crate) fn envelope(
    body: Value,
    custom: &[CustomField],
    every_unknown: bool,
) -> Result<Envelope, String> {
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
    let test_run = flag(&body, "test_run")?;
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
    let fatal = body.get("error_type").and_then(Value::as_str) == Some(FATAL_ERROR);
    let connector = ["connector_name", "connector_id"]
        .iter()
        .find_map(|k| body.get(*k).and_then(scalar_text))
        .unwrap_or_default();
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
        let mut unknown: Vec<&str> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if let Value::Object(fields) = record {
                for id in fields.keys() {
                    if accepted.contains(id.as_str()) {
                        continue;
                    }
                    match check_field_id(id, custom) {
                        Err(_) if every_unknown && is_allowed_id(id) => {
                            if !unknown.contains(&id.as_str()) {
                                unknown.push(id);
                            }
                        }
                        checked => checked.map_err(|e| format!("records[{i}]: {e}"))?,
                    }
                }
            }
        }
        if !unknown.is_empty() {
            let quoted: Vec<String> = unknown.iter().map(|id| format!("'{id}'")).collect();
            return Err(format!(
                "records: field ids {} are not known to Oomnitza",
                quoted.join(", ")
            ));
        }
    }
    Ok(Envelope {
        portion,
        connector,
        sync_field,
        insert_only,
        update_only,
        test_run,
        error,
        fatal,
        records,
    })
}

/// The records whose e-mail is one of the `poison` fault's; an empty list lets the batch in.
pub(crate) fn poisoned(records: &[Value], poison: &[String]) -> Vec<Refusal> {
    if poison.is_empty() {
        return Vec::new();
    }
    records
        .iter()
        .enumerate()
        .filter_map(|(index, record)| {
            let email = record.get("EMAIL")?.as_str()?;
            poison
                .iter()
                .any(|p| p.eq_ignore_ascii_case(email))
                .then(|| Refusal {
                    index,
                    field: Some("EMAIL".into()),
                    reason: format!("EMAIL '{email}' is refused by Oomnitza"),
                })
        })
        .collect()
}

/// A tenant validation rule, compiled.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    field: String,
    regex: Regex,
    must_match: bool,
    message: Option<String>,
}

/// Longest compiled rule: patterns come from tests and operators, but stay bounded.
const RULE_SIZE_LIMIT: usize = 1 << 20;

/// Compiles validation rules; the error names the rule that is wrong.
pub(crate) fn compile(rules: &[ValidationRule]) -> Result<Vec<Rule>, String> {
    rules
        .iter()
        .map(|rule| {
            if rule.field.trim().is_empty() {
                return Err(format!("validation rule /{}/ names no field", rule.pattern));
            }
            let regex = RegexBuilder::new(&rule.pattern)
                .size_limit(RULE_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    format!(
                        "validation rule for {}: /{}/ is not a valid pattern: {e}",
                        rule.field, rule.pattern
                    )
                })?;
            Ok(Rule {
                field: rule.field.clone(),
                regex,
                must_match: rule.must_match,
                message: rule.message.clone(),
            })
        })
        .collect()
}

/// What a tenant knows when it processes a record: its roles, its validation rules and
/// whether it stores usernames and e-mails in lower case.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checks<'a> {
    pub(crate) roles: &'a [String],
    pub(crate) rules: &'a [Rule],
    pub(crate) lower_case_identities: bool,
}

impl Checks<'_> {
    /// `fields` as the tenant stores them: `USER` and `EMAIL` in lower case when it keeps
    /// them so.
    pub(crate) fn stored(self, fields: &mut Map<String, Value>) {
        if !self.lower_case_identities {
            return;
        }
        for field in ["USER", "EMAIL"] {
            if let Some(Value::String(text)) = fields.get_mut(field) {
                *text = text.to_lowercase();
            }
        }
    }
}

/// Why Oomnitza would refuse this record when processing it, all reasons joined; `Ok` if none.
pub(crate) fn record(fields: &Map<String, Value>, checks: Checks<'_>) -> Result<(), String> {
    let mut reasons = Vec::new();
    match fields.get("USER") {
        Some(Value::String(u)) if !u.trim().is_empty() => {}
        _ => reasons.push("USER (the username) is required".to_string()),
    }
    match fields.get("EMAIL") {
        None | Some(Value::Null) => {}
        Some(Value::String(e)) if is_email(e) => {}
        Some(other) => reasons.push(format!("EMAIL {other} is not an e-mail address")),
    }
    match fields.get("PERMISSIONS_ID") {
        None | Some(Value::Null) => {}
        Some(role) => {
            if !scalar_text(role).is_some_and(|r| checks.roles.contains(&r)) {
                reasons.push(format!(
                    "PERMISSIONS_ID {role} is not a role of this Oomnitza"
                ));
            }
        }
    }
    match fields.get("SAAS") {
        None | Some(Value::Null) => {}
        Some(saas) if saas_is_valid(saas) => {}
        Some(_) => reasons
            .push("SAAS must be an object with a sync_key and a selected_saas_id or name".into()),
    }
    for rule in checks.rules {
        let Some(text) = fields.get(&rule.field).and_then(scalar_text) else {
            continue;
        };
        if rule.regex.is_match(&text) != rule.must_match {
            reasons.push(rule.message.clone().unwrap_or_else(|| {
                let verb = if rule.must_match {
                    "does not match"
                } else {
                    "matches"
                };
                format!(
                    "{} '{text}' {verb} the tenant's rule /{}/",
                    rule.field,
                    rule.regex.as_str()
                )
            }));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
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
    use crate::oomnitza::OomnitzaConfig;
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
        let env = envelope(body(), &config().custom_fields, false).expect("valid");
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
            let err = envelope(body, &custom, false).expect_err(expected);
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        let mut both = body();
        both["insert_only"] = json!(true);
        both["update_only"] = json!(true);
        assert!(envelope(both, &custom, false).is_err());
    }

    #[test]
    fn unknown_field_ids_are_named_first_only_or_each_as_the_tenant_behaves() {
        let custom = config().custom_fields;
        let two = || with("records", json!([{"USER": "u", "NOPE_A": 1, "NOPE_B": 2}]));
        let first = envelope(two(), &custom, false).expect_err("unknown ids");
        assert!(
            first.contains("NOPE_A") != first.contains("NOPE_B"),
            "{first}"
        );
        let every = envelope(two(), &custom, true).expect_err("unknown ids");
        assert!(
            every.contains("'NOPE_A'") && every.contains("'NOPE_B'"),
            "{every}"
        );
    }

    #[test]
    fn client_reported_failures_may_carry_source_records() {
        let mut b = with(
            "records",
            json!([{"emailAddress": "x", "workAddress.city": "y"}]),
        );
        b["error"] = json!("could not map the record");
        let env = envelope(b, &config().custom_fields, false).expect("accepted");
        assert_eq!(env.error.as_deref(), Some("could not map the record"));
    }

    fn checks_with<'a>(roles: &'a [String], rules: &'a [Rule]) -> Checks<'a> {
        Checks {
            roles,
            rules,
            lower_case_identities: false,
        }
    }

    #[test]
    fn record_problems_are_named_with_every_reason() {
        let roles = config().roles;
        let checks = checks_with(&roles, &[]);
        let check = |v: Value| record(v.as_object().expect("object"), checks);
        assert_eq!(
            check(
                json!({"USER": "ok@example.com", "EMAIL": "ok@example.com", "PERMISSIONS_ID": "25"})
            ),
            Ok(())
        );
        assert_eq!(
            check(
                json!({"USER": "u", "PERMISSIONS_ID": 10, "SAAS": {"sync_key": "k", "name": "Sage People"}})
            ),
            Ok(())
        );
        let cases = [
            (json!({"EMAIL": "x@example.com"}), "USER"),
            (json!({"USER": "u", "EMAIL": "not-an-email"}), "EMAIL"),
            (
                json!({"USER": "u", "PERMISSIONS_ID": "999"}),
                "PERMISSIONS_ID \"999\"",
            ),
            (
                json!({"USER": "u", "SAAS": {"name": "Sage People"}}),
                "SAAS",
            ),
        ];
        for (r, needle) in cases {
            let reason = check(r.clone()).expect_err(needle);
            assert!(reason.contains(needle), "{r}: {reason}");
        }
        let both = check(json!({"EMAIL": "bad", "PERMISSIONS_ID": "0"})).expect_err("refused");
        assert_eq!(both.matches("; ").count(), 2, "{both}");
    }

    #[test]
    fn tenant_rules_refuse_matching_or_unmatching_values() {
        let roles = config().roles;
        let rules = compile(&[
            ValidationRule {
                field: "EMAIL".into(),
                pattern: "(?i)@blocked\\.example$".into(),
                must_match: false,
                message: None,
            },
            ValidationRule {
                field: "FIRST_NAME".into(),
                pattern: "^[A-Z]".into(),
                must_match: true,
                message: Some("FIRST_NAME must start with a capital".into()),
            },
        ])
        .expect("valid rules");
        let checks = checks_with(&roles, &rules);
        let check = |v: Value| record(v.as_object().expect("object"), checks);
        assert_eq!(
            check(json!({"USER": "u", "EMAIL": "a@ok.example", "FIRST_NAME": "Ada"})),
            Ok(())
        );
        let reason = check(json!({"USER": "u", "EMAIL": "a@Blocked.example"})).expect_err("rule");
        assert!(
            reason.contains("EMAIL 'a@Blocked.example' matches"),
            "{reason}"
        );
        assert_eq!(
            check(json!({"USER": "u", "FIRST_NAME": "ada"})),
            Err("FIRST_NAME must start with a capital".into())
        );
        assert_eq!(
            check(json!({"USER": "u"})),
            Ok(()),
            "absent fields are not checked"
        );
        let bad = ValidationRule {
            field: "EMAIL".into(),
            pattern: "(".into(),
            must_match: false,
            message: None,
        };
        assert!(compile(&[bad]).expect_err("bad pattern").contains("EMAIL"));
    }

    #[test]
    fn poisoned_records_are_listed_per_index() {
        let records = vec![
            json!({"USER": "u", "EMAIL": "ok@example.com"}),
            json!({"USER": "u", "EMAIL": "Bad@Example.com"}),
            json!("text"),
        ];
        let refusals = poisoned(&records, &["bad@example.com".into()]);
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            (refusals[0].index, refusals[0].field.as_deref()),
            (1, Some("EMAIL"))
        );
        assert!(poisoned(&records, &[]).is_empty());
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
