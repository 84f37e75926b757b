//! Validation of an integration config: the typed errors, and every check that needs no
//! template engine (required fields, sync keys, unique fields, sources, settings, SaaS,
//! schedule). Template and condition syntax is checked when [`crate::Integration::compile`]
//! compiles them; both sets of problems are reported together.

use std::fmt;

use serde_json::Value;

use crate::config::{FilterMode, IntegrationConfig, IntegrationType, MappingSource};
use crate::names::did_you_mean;
use crate::source::SourceRef;

/// The Oomnitza username field, required by the seed integration.
pub const USER_FIELD: &str = "USER";
/// The Oomnitza e-mail field, required by the seed integration.
pub const EMAIL_FIELD: &str = "EMAIL";
/// The Oomnitza role field, required by the seed integration.
pub const ROLE_FIELD: &str = "PERMISSIONS_ID";
/// The record key of the SaaS-user block.
pub const SAAS_KEY: &str = "SAAS";
/// The record key carrying `filter.restore_archived` when it is true.
pub const RESTORE_ARCHIVED_KEY: &str = "restore_archived";
/// The fields every record must have a value for.
pub const REQUIRED_FIELDS: [&str; 3] = [USER_FIELD, EMAIL_FIELD, ROLE_FIELD];
/// Settings a `setting = "..."` mapping may name.
pub const SETTINGS: [&str; 3] = ["default_role", "credentials", "id"];

/// Oomnitza fields that are unique without being declared so.
const UNIQUE_SYSTEM_FIELDS: [&str; 2] = [USER_FIELD, EMAIL_FIELD];

/// What kind of problem a [`ValidationError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationKind {
    /// The text is not TOML.
    Syntax,
    /// A key the config does not know.
    UnknownKey,
    /// A key with a value of the wrong type.
    WrongType,
    /// A required key or value is missing.
    Missing,
    /// A value is malformed or out of range.
    Invalid,
    /// Two settings contradict each other.
    Conflict,
    /// The same thing is given twice.
    Duplicate,
    /// A mapping source that is not a known field.
    UnknownSource,
    /// A template or condition that does not compile.
    Template,
    /// One of the seed integration's requirements is not met.
    Required,
}

/// One problem in a config, located by key or mapping entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// What kind of problem this is.
    pub kind: ValidationKind,
    /// Where: a key (`sync_keys`, `filter.condition`) or an entry (`mapping #3 (POSITION)`);
    /// empty for the config as a whole.
    pub location: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl ValidationError {
    /// A problem of `kind` at `location`.
    pub fn new(
        kind: ValidationKind,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            kind,
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Every problem found in a config (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// Wraps a list of problems.
    pub fn new(errors: Vec<ValidationError>) -> Self {
        ValidationErrors(errors)
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem (never, for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems as a vector.
    pub fn into_vec(self) -> Vec<ValidationError> {
        self.0
    }

    /// True when some problem's text contains `text` (handy in tests and tools).
    pub fn mentions(&self, text: &str) -> bool {
        self.0.iter().any(|e| e.to_string().contains(text))
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in integration config",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n- {e}")?;
        }
        Ok(())
    }
}

/// Where mapping entry `index` (0-based) is, for messages: `mapping #3 (POSITION)`.
pub(crate) fn entry_location(index: usize, field: &str) -> String {
    if field.is_empty() {
        format!("mapping #{}", index + 1)
    } else {
        format!("mapping #{} ({field})", index + 1)
    }
}

/// Every problem that needs no template engine.
pub(crate) fn check(config: &IntegrationConfig) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let mut push = |kind, location: &str, message: String| {
        errors.push(ValidationError::new(kind, location, message));
    };
    use ValidationKind::*;

    let id = config.id.trim();
    if id.is_empty() {
        push(
            Missing,
            "id",
            "is missing or empty; name the integration, e.g. \"sage-people\"".into(),
        );
    } else if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        push(
            Invalid,
            "id",
            format!(
                "`{id}` contains `{bad}`; use letters, digits, `-` and `_` (the id is part of bus subject names)"
            ),
        );
    } else if id.len() > 64 {
        push(
            Invalid,
            "id",
            format!("is {} characters long; use at most 64", id.len()),
        );
    }
    if config.credentials.trim().is_empty() {
        push(
            Missing,
            "credentials",
            "is empty; name one of the extractor's credential sets, e.g. \"default\"".into(),
        );
    }
    if let Some(role) = &config.default_role
        && role.trim().is_empty()
    {
        push(
            Invalid,
            "default_role",
            "is empty; give the Oomnitza role id, e.g. \"25\"".into(),
        );
    }
    if let Some(filter) = &config.source_filter
        && let Some(problem) = source_filter_problem(filter)
    {
        push(Invalid, "source_filter", problem);
    }

    let mut seen_additional: Vec<String> = Vec::new();
    for name in &config.additional_fields {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            push(
                Invalid,
                "additional_fields",
                "contains an empty name".into(),
            );
        } else if seen_additional
            .iter()
            .any(|s| s.eq_ignore_ascii_case(trimmed))
        {
            push(
                Duplicate,
                "additional_fields",
                format!("lists \"{trimmed}\" twice"),
            );
        } else if SourceRef::resolve(trimmed, &[]).is_ok() {
            push(
                Conflict,
                "additional_fields",
                format!(
                    "\"{trimmed}\" is already an integration or tracking field; remove it from the list"
                ),
            );
        } else {
            seen_additional.push(trimmed.to_owned());
        }
    }

    crate::schedule::check(&config.schedule, &mut errors);
    let mut push = |kind, location: &str, message: String| {
        errors.push(ValidationError::new(kind, location, message));
    };

    if config.filter.mode == FilterMode::IfConditions
        && config
            .filter
            .condition
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
    {
        push(
            Missing,
            "filter.condition",
            "is required when filter.mode = \"if_conditions\"; e.g. condition = \"worker.region == 'EMEA'\"".into(),
        );
    }

    match (&config.integration_type, &config.saas) {
        (IntegrationType::UserAndSaasUser, None) => push(
            Missing,
            "saas",
            "type = \"user_and_saas_user\" needs a [saas] table with `name` or `selected_saas_id`"
                .into(),
        ),
        (IntegrationType::UserAndSaasUser, Some(saas)) => {
            let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
            if blank(&saas.name) && blank(&saas.selected_saas_id) {
                push(
                    Missing,
                    "saas",
                    "needs `name` (e.g. \"Sage People\") or `selected_saas_id`".into(),
                );
            }
        }
        (IntegrationType::User, Some(_)) => push(
            Conflict,
            "saas",
            "is only used when type = \"user_and_saas_user\"; remove [saas] or change the type"
                .into(),
        ),
        (IntegrationType::User, None) => {}
    }

    check_mapping(config, &mut errors);
    errors
}

fn check_mapping(config: &IntegrationConfig, errors: &mut Vec<ValidationError>) {
    use ValidationKind::*;
    let mut push = |kind, location: String, message: String| {
        errors.push(ValidationError::new(kind, location, message));
    };
    if config.mapping.is_empty() {
        push(
            Missing,
            "mapping".into(),
            "has no entries; map at least USER, EMAIL and PERMISSIONS_ID".into(),
        );
    }
    for (i, entry) in config.mapping.iter().enumerate() {
        let at = entry_location(i, entry.field.trim());
        let field = entry.field.trim();
        if field.is_empty() {
            push(
                Missing,
                at.clone(),
                "`field` is missing or empty; give the Oomnitza field id".into(),
            );
        } else if let Some(bad) = field
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            push(
                Invalid,
                at.clone(),
                format!(
                    "field id `{field}` contains `{bad}`; Oomnitza field ids are letters, digits and `_` (no `.`, `-` or spaces)"
                ),
            );
        } else if field == SAAS_KEY || field == RESTORE_ARCHIVED_KEY {
            push(
                Invalid,
                at.clone(),
                format!(
                    "`{field}` is reserved for peoplesync's own record key; map a different field"
                ),
            );
        }
        if let Some(first) = config.mapping[..i]
            .iter()
            .position(|m| m.field.trim() == field)
            && !field.is_empty()
        {
            push(
                Duplicate,
                at.clone(),
                format!(
                    "field {field} is already mapped by mapping #{}; map each field once",
                    first + 1
                ),
            );
        }
        if let Some(label) = &entry.label
            && label.trim().is_empty()
        {
            push(
                Invalid,
                at.clone(),
                "`label` is empty; remove it or name the field".into(),
            );
        }
        match &entry.source {
            MappingSource::Source(name) => {
                if let Err(problem) = SourceRef::resolve(name, &config.additional_fields) {
                    push(UnknownSource, at.clone(), problem);
                }
            }
            MappingSource::Setting(name) => {
                if !SETTINGS.contains(&name.trim()) {
                    push(Invalid, at.clone(), {
                        let hint = did_you_mean(name.trim(), SETTINGS);
                        let stop = if hint.is_empty() { "." } else { "" };
                        format!(
                            "unknown setting \"{}\"{hint}{stop} Settings are {}",
                            name.trim(),
                            SETTINGS.join(", ")
                        )
                    });
                } else if name.trim() == "default_role"
                    && config
                        .default_role
                        .as_deref()
                        .is_none_or(|r| r.trim().is_empty())
                {
                    push(
                        Missing,
                        at.clone(),
                        "uses setting default_role, but `default_role` is not set; add e.g. default_role = \"25\"".into(),
                    );
                }
            }
            MappingSource::Value(value) => match value {
                Value::Null => push(
                    Invalid,
                    at.clone(),
                    "`value` is empty; give a literal".into(),
                ),
                Value::String(s) if s.trim().is_empty() => push(
                    Invalid,
                    at.clone(),
                    "`value` is empty; give a literal".into(),
                ),
                Value::Array(_) | Value::Object(_) => push(
                    WrongType,
                    at.clone(),
                    "`value` must be a string, number or boolean".into(),
                ),
                _ => {}
            },
            // Checked when compiled.
            MappingSource::Template(_) => {}
        }
    }

    let mapped = |f: &str| config.mapping.iter().any(|m| m.field.trim() == f);
    for (field, what) in [
        (
            USER_FIELD,
            "USER (Username) must be mapped; the seed maps it from source Email",
        ),
        (
            EMAIL_FIELD,
            "EMAIL must be mapped; the seed maps it from source Email",
        ),
        (
            ROLE_FIELD,
            "PERMISSIONS_ID (Role) must be mapped; add field = \"PERMISSIONS_ID\" with setting = \"default_role\" and set default_role",
        ),
    ] {
        if !mapped(field) {
            push(Required, "mapping".into(), what.into());
        }
    }
    if !config.mapping.iter().any(|m| m.unique) {
        push(
            Required,
            "mapping".into(),
            "no entry is marked `unique = true`; the seed recommends a unique custom field \"Sage User ID\" mapped from source ID".into(),
        );
    }

    if config.sync_keys.is_empty() {
        push(
            Missing,
            "sync_keys".into(),
            "is empty; name the Oomnitza field(s) that identify a user, e.g. [\"EMAIL\"]".into(),
        );
    }
    for (i, key) in config.sync_keys.iter().enumerate() {
        let key = key.trim();
        if config.sync_keys[..i].iter().any(|k| k.trim() == key) {
            push(Duplicate, "sync_keys".into(), format!("lists {key} twice"));
            continue;
        }
        match config.mapping.iter().find(|m| m.field.trim() == key) {
            None => {
                let fields = config.mapping.iter().map(|m| m.field.as_str());
                push(
                    Required,
                    "sync_keys".into(),
                    format!(
                        "sync key {key} is not mapped{}; every sync key needs a mapping entry",
                        did_you_mean(key, fields)
                    ),
                );
            }
            Some(entry) if !entry.unique && !UNIQUE_SYSTEM_FIELDS.contains(&key) => push(
                Required,
                "sync_keys".into(),
                format!(
                    "sync key {} is not a unique field; use USER, EMAIL or an entry marked `unique = true`",
                    entry.display_name()
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Why a Sage People `$filter` is malformed: empty, unbalanced quotes or parentheses.
fn source_filter_problem(filter: &str) -> Option<String> {
    if filter.trim().is_empty() {
        return Some("is empty; remove it or write a Sage People $filter, e.g. \"workAddress.country eq 'France'\"".into());
    }
    // OData escapes a quote inside a string by doubling it, so quotes always pair up.
    let mut in_string = false;
    let mut depth: i64 = 0;
    for c in filter.chars() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth < 0 {
                    return Some(format!("`{filter}` closes a parenthesis it never opened"));
                }
            }
            _ => {}
        }
    }
    if in_string {
        Some(format!("`{filter}` has an unterminated 'quoted string'"))
    } else if depth > 0 {
        Some(format!("`{filter}` leaves {depth} parenthesis(es) open"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_filters_need_balanced_quotes_and_parentheses() {
        assert_eq!(
            source_filter_problem("workAddress.country eq 'France'"),
            None
        );
        assert_eq!(
            source_filter_problem("(a eq 'O''Brien') and b eq 'x'"),
            None
        );
        assert!(source_filter_problem(" ").is_some_and(|m| m.contains("is empty")));
        assert!(source_filter_problem("a eq 'France").is_some_and(|m| m.contains("unterminated")));
        assert!(source_filter_problem("(a eq 'x'").is_some_and(|m| m.contains("open")));
        assert!(source_filter_problem("a eq 'x')").is_some_and(|m| m.contains("never opened")));
    }

    #[test]
    fn errors_display_location_and_count() {
        let errors = ValidationErrors::new(vec![
            ValidationError::new(ValidationKind::Missing, "id", "is missing"),
            ValidationError::new(ValidationKind::Required, "", "whole config"),
        ]);
        assert_eq!(
            errors.to_string(),
            "2 problems in integration config\n- id: is missing\n- whole config"
        );
        assert!(errors.mentions("id: is missing"));
        assert_eq!(errors.len(), 2);
    }
}
