//! `source = "..."` mappings: resolving a source name once, at compile time, and reading its
//! value from a record without any template machinery. Sources are the 17 integration
//! fields (by label), the two tracking fields and the additional fields the config declares.

use serde_json::Value;

use crate::worker::{IntegrationField, Tracking, Worker};

/// Tracking field: the extractor's credential set name.
pub const CONNECT_CREDENTIALS: &str = "Connect: Credentials";
/// Tracking field: the Sage People host.
pub const CONNECT_HOSTNAME: &str = "Connect: Hostname";

/// A resolved `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceRef {
    /// One of the 17 integration fields.
    Field(IntegrationField),
    /// "Connect: Credentials".
    Credentials,
    /// "Connect: Hostname".
    Hostname,
    /// A Sage People additional field, by its `name`.
    Additional(String),
}

impl SourceRef {
    /// Resolves `name` (labels are matched ignoring case); on failure, the reason, with a
    /// "did you mean" when a known name is close.
    pub(crate) fn resolve(name: &str, additional: &[String]) -> Result<SourceRef, String> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err("`source` is empty; name one of the 17 integration fields, a tracking field or a declared additional field".to_owned());
        }
        if let Some(field) = IntegrationField::from_label(trimmed) {
            return Ok(SourceRef::Field(field));
        }
        if trimmed.eq_ignore_ascii_case(CONNECT_CREDENTIALS) {
            return Ok(SourceRef::Credentials);
        }
        if trimmed.eq_ignore_ascii_case(CONNECT_HOSTNAME) {
            return Ok(SourceRef::Hostname);
        }
        if let Some(a) = additional
            .iter()
            .find(|a| a.trim().eq_ignore_ascii_case(trimmed))
        {
            return Ok(SourceRef::Additional(a.trim().to_owned()));
        }
        let known = known_names(additional);
        let hint = crate::names::did_you_mean(trimmed, known.iter().copied());
        let stop = if hint.is_empty() { "." } else { "" };
        Err(format!(
            "unknown source \"{trimmed}\"{hint}{stop} Sources are the integration fields (ID, Full Name, … Country), \"{CONNECT_CREDENTIALS}\", \"{CONNECT_HOSTNAME}\" and the names listed in `additional_fields`"
        ))
    }

    /// The value for this source in one record: JSON null when absent or blank.
    pub(crate) fn value(&self, raw: &Value, worker: &Worker, tracking: &Tracking) -> Value {
        match self {
            SourceRef::Field(field) => field.value(worker),
            SourceRef::Credentials => text_or_null(&tracking.credentials),
            SourceRef::Hostname => text_or_null(&tracking.hostname),
            SourceRef::Additional(name) => additional_value(raw, name),
        }
    }
}

/// Every source name a config may use.
pub(crate) fn known_names(additional: &[String]) -> Vec<&str> {
    IntegrationField::ALL
        .iter()
        .map(|f| f.label())
        .chain([CONNECT_CREDENTIALS, CONNECT_HOSTNAME])
        .chain(additional.iter().map(String::as_str))
        .collect()
}

fn text_or_null(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_owned())
    }
}

/// `additionalFields[name == name].value`, exact name first, then ignoring case.
fn additional_value(raw: &Value, name: &str) -> Value {
    let Some(list) = raw.get("additionalFields").and_then(Value::as_array) else {
        return Value::Null;
    };
    let named = |exact: bool| {
        list.iter().find(|item| {
            item.get("name").and_then(Value::as_str).is_some_and(|n| {
                if exact {
                    n == name
                } else {
                    n.trim().eq_ignore_ascii_case(name)
                }
            })
        })
    };
    match named(true)
        .or_else(|| named(false))
        .and_then(|i| i.get("value"))
    {
        Some(value) => crate::template::normalise_output(value.clone()),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_resolve_ignoring_case_and_tracking_fields_resolve() {
        assert_eq!(
            SourceRef::resolve("job title", &[]),
            Ok(SourceRef::Field(IntegrationField::JobTitle))
        );
        assert_eq!(
            SourceRef::resolve("Connect: Hostname", &[]),
            Ok(SourceRef::Hostname)
        );
        assert_eq!(
            SourceRef::resolve("connect: credentials", &[]),
            Ok(SourceRef::Credentials)
        );
    }

    #[test]
    fn declared_additional_fields_resolve() {
        let extra = vec!["Cost Centre".to_owned()];
        assert_eq!(
            SourceRef::resolve("cost centre", &extra),
            Ok(SourceRef::Additional("Cost Centre".into()))
        );
    }

    #[test]
    fn unknown_sources_suggest_the_closest_name() {
        let err = SourceRef::resolve("Emial", &[]).unwrap_err();
        assert!(
            err.starts_with("unknown source \"Emial\"; did you mean \"Email\"?"),
            "{err}"
        );
        let extra = vec!["Cost Centre".to_owned()];
        let err = SourceRef::resolve("Cost Center", &extra).unwrap_err();
        assert!(err.contains("did you mean \"Cost Centre\"?"), "{err}");
        let err = SourceRef::resolve("Connect: Host", &[]).unwrap_err();
        assert!(err.contains("did you mean \"Connect: Hostname\"?"), "{err}");
    }

    #[test]
    fn additional_values_are_found_by_name_and_blank_is_null() {
        let raw = json!({"additionalFields": [
            {"name": "Cost Centre", "value": " CC-104 ", "source": "fHCM2__Cost_Centre__c"},
            {"name": "Badge", "value": "  "},
            {"name": "Grade", "value": 7},
        ]});
        assert_eq!(additional_value(&raw, "Cost Centre"), json!("CC-104"));
        assert_eq!(additional_value(&raw, "cost centre"), json!("CC-104"));
        assert_eq!(additional_value(&raw, "Badge"), Value::Null);
        assert_eq!(additional_value(&raw, "Grade"), json!(7));
        assert_eq!(additional_value(&raw, "Missing"), Value::Null);
        assert_eq!(
            additional_value(&json!({"additionalFields": null}), "Grade"),
            Value::Null
        );
    }

    #[test]
    fn tracking_values_are_null_when_blank() {
        let tracking = Tracking {
            credentials: "default".into(),
            hostname: " ".into(),
        };
        let w = Worker::default();
        assert_eq!(
            SourceRef::Credentials.value(&json!({}), &w, &tracking),
            json!("default")
        );
        assert_eq!(
            SourceRef::Hostname.value(&json!({}), &w, &tracking),
            Value::Null
        );
    }
}
