//! Validation of an integration config: the typed errors, and every check that needs no
//! template engine (required fields, sync keys, unique fields, sources, settings, SaaS,
//! schedule). Template and condition syntax is checked when [`crate::Integration::compile`]
//! compiles them; both sets of problems are reported together.

use std::fmt;

use serde_json::Value;

use crate::config::{FilterMode, IntegrationConfig, IntegrationType, MappingEntry, MappingSource};
use crate::names::did_you_mean;
use crate::source::SourceRef;

/// The Oomnitza username field, required by Oomnitza's own Sage People integration.
pub const USER_FIELD: &str = "USER";
/// The Oomnitza e-mail field, required by Oomnitza's own Sage People integration.
pub const EMAIL_FIELD: &str = "EMAIL";
/// The Oomnitza role field, required by Oomnitza's own Sage People integration.
pub const ROLE_FIELD: &str = "PERMISSIONS_ID";
/// The record key of the SaaS-user block.
pub const SAAS_KEY: &str = "SAAS";
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
    /// One of the requirements of Oomnitza's own Sage People integration is not met.
    Required,
    /// A key still accepted that no longer has an effect; never makes a config invalid
    /// (reported by [`crate::IntegrationConfig::deprecations`], not by validation).
    Deprecated,
    /// A valid setting that probably does not do all that is meant; never makes a config
    /// invalid (reported by [`crate::leavers::warnings`], not by validation).
    Warning,
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

/// Problems found so far.
struct Problems(Vec<ValidationError>);

impl Problems {
    fn add(
        &mut self,
        kind: ValidationKind,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(ValidationError::new(kind, location, message));
    }
}

/// Every problem that needs no template engine.
pub(crate) fn check(config: &IntegrationConfig) -> Vec<ValidationError> {
    let mut p = Problems(Vec::new());
    check_settings(config, &mut p);
    check_additional_fields(config, &mut p);
    crate::schedule::check(&config.schedule, &mut p.0);
    check_filter_and_saas(config, &mut p);
    for (i, entry) in config.mapping.iter().enumerate() {
        check_entry(config, i, entry, &mut p);
    }
    check_required(config, &mut p);
    check_sync_keys(config, &mut p);
    crate::leavers::check(config, &mut p.0);
    p.0
}

fn check_settings(config: &IntegrationConfig, p: &mut Problems) {
    use ValidationKind::*;
    let id = config.id.trim();
    if id.is_empty() {
        p.add(
            Missing,
            "id",
            "is missing or empty; name the integration, e.g. \"sage-people\"",
        );
    } else if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        p.add(
            Invalid,
            "id",
            format!("`{id}` contains `{bad}`; use letters, digits, `-` and `_` (the id is part of bus subject names)"),
        );
    } else if id.len() > 64 {
        p.add(
            Invalid,
            "id",
            format!("is {} characters long; use at most 64", id.len()),
        );
    }
    if config.credentials.trim().is_empty() {
        p.add(
            Missing,
            "credentials",
            "is empty; name one of the extractor's credential sets, e.g. \"default\"",
        );
    }
    if config
        .default_role
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        p.add(
            Invalid,
            "default_role",
            "is empty; give the Oomnitza role id, e.g. \"25\"",
        );
    }
    if let Some(problem) = config
        .source_filter
        .as_deref()
        .and_then(source_filter_problem)
    {
        p.add(Invalid, "source_filter", problem);
    }
}

fn check_additional_fields(config: &IntegrationConfig, p: &mut Problems) {
    use ValidationKind::*;
    let mut seen: Vec<&str> = Vec::new();
    for name in &config.additional_fields {
        let name = name.trim();
        if name.is_empty() {
            p.add(Invalid, "additional_fields", "contains an empty name");
        } else if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            p.add(
                Duplicate,
                "additional_fields",
                format!("lists \"{name}\" twice"),
            );
        } else if SourceRef::resolve(name, &[]).is_ok() {
            p.add(
                Conflict,
                "additional_fields",
                format!("\"{name}\" is already an integration or tracking field; remove it from the list"),
            );
        } else {
            seen.push(name);
        }
    }
}

fn check_filter_and_saas(config: &IntegrationConfig, p: &mut Problems) {
    use ValidationKind::*;
    let condition_missing = config
        .filter
        .condition
        .as_deref()
        .is_none_or(|c| c.trim().is_empty());
    if config.filter.mode == FilterMode::IfConditions && condition_missing {
        p.add(
            Missing,
            "filter.condition",
            "is required when filter.mode = \"if_conditions\"; e.g. condition = \"worker.region == 'EMEA'\"",
        );
    }
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
    match (config.integration_type, &config.saas) {
        (IntegrationType::UserAndSaasUser, None) => p.add(
            Missing,
            "saas",
            "type = \"user_and_saas_user\" needs a [saas] table with `sync_key` and `name` or `selected_saas_id`",
        ),
        (IntegrationType::UserAndSaasUser, Some(saas)) => {
            if blank(&saas.sync_key) {
                p.add(
                    Missing,
                    "saas.sync_key",
                    "is missing or empty; set it to the SaaS sync key configured for this integration in Oomnitza. It is the same on every record (earlier versions sent each person's first sync key value instead)",
                );
            }
            if blank(&saas.name) && blank(&saas.selected_saas_id) {
                p.add(
                    Missing,
                    "saas",
                    "needs `name` (e.g. \"Sage People\") or `selected_saas_id`",
                );
            }
        }
        (IntegrationType::User, Some(_)) => p.add(
            Conflict,
            "saas",
            "is only used when type = \"user_and_saas_user\"; remove [saas] or change the type",
        ),
        (IntegrationType::User, None) => {}
    }
}

fn check_entry(config: &IntegrationConfig, i: usize, entry: &MappingEntry, p: &mut Problems) {
    use ValidationKind::*;
    let field = entry.field.trim();
    let at = entry_location(i, field);
    if field.is_empty() {
        p.add(
            Missing,
            &at,
            "`field` is missing or empty; give the Oomnitza field id",
        );
    } else if let Some(bad) = field
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        p.add(
            Invalid,
            &at,
            format!("field id `{field}` contains `{bad}`; Oomnitza field ids are letters, digits and `_` (no `.`, `-` or spaces)"),
        );
    } else if field == SAAS_KEY {
        p.add(
            Invalid,
            &at,
            format!("`{field}` is reserved for peoplesync's own record key; map a different field"),
        );
    } else if let Some(first) = config.mapping[..i]
        .iter()
        .position(|m| m.field.trim() == field)
    {
        p.add(
            Duplicate,
            &at,
            format!(
                "field {field} is already mapped by mapping #{}; map each field once",
                first + 1
            ),
        );
    }
    if entry.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        p.add(
            Invalid,
            &at,
            "`label` is empty; remove it or name the field",
        );
    }
    match &entry.source {
        MappingSource::Source(name) => {
            if let Err(problem) = SourceRef::resolve(name, &config.additional_fields) {
                p.add(UnknownSource, &at, problem);
            }
        }
        MappingSource::Setting(name) => {
            let name = name.trim();
            if !SETTINGS.contains(&name) {
                let hint = did_you_mean(name, SETTINGS);
                let stop = if hint.is_empty() { "." } else { "" };
                p.add(
                    Invalid,
                    &at,
                    format!(
                        "unknown setting \"{name}\"{hint}{stop} Settings are {}",
                        SETTINGS.join(", ")
                    ),
                );
            } else if name == "default_role"
                && config
                    .default_role
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty())
            {
                p.add(
                    Missing,
                    &at,
                    "uses setting default_role, but `default_role` is not set; add e.g. default_role = \"25\"",
                );
            }
        }
        MappingSource::Value(Value::Array(_) | Value::Object(_)) => {
            p.add(
                WrongType,
                &at,
                "`value` must be a string, number or boolean",
            );
        }
        MappingSource::Value(value) if crate::mapping::is_empty(value) => {
            p.add(Invalid, &at, "`value` is empty; give a literal");
        }
        // Templates are checked when compiled.
        MappingSource::Value(_) | MappingSource::Template(_) => {}
    }
}

fn check_required(config: &IntegrationConfig, p: &mut Problems) {
    use ValidationKind::*;
    if config.mapping.is_empty() {
        p.add(
            Missing,
            "mapping",
            "has no entries; map at least USER, EMAIL and PERMISSIONS_ID",
        );
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
            p.add(Required, "mapping", what);
        }
    }
    if !config.mapping.iter().any(|m| m.unique) {
        p.add(
            Required,
            "mapping",
            "no entry is marked `unique = true`; Oomnitza's own Sage People integration recommends a unique custom field \"Sage User ID\" mapped from source ID",
        );
    }
}

fn check_sync_keys(config: &IntegrationConfig, p: &mut Problems) {
    use ValidationKind::*;
    if config.sync_keys.is_empty() {
        p.add(
            Missing,
            "sync_keys",
            "is empty; name the Oomnitza field(s) that identify a user, e.g. [\"EMAIL\"]",
        );
    }
    for (i, key) in config.sync_keys.iter().enumerate() {
        let key = key.trim();
        if config.sync_keys[..i].iter().any(|k| k.trim() == key) {
            p.add(Duplicate, "sync_keys", format!("lists {key} twice"));
            continue;
        }
        match config.mapping.iter().find(|m| m.field.trim() == key) {
            None => {
                let hint = did_you_mean(key, config.mapping.iter().map(|m| m.field.as_str()));
                p.add(
                    Required,
                    "sync_keys",
                    format!("sync key {key} is not mapped{hint}; every sync key needs a mapping entry"),
                );
            }
            Some(entry) if !entry.unique && !UNIQUE_SYSTEM_FIELDS.contains(&key) => p.add(
                Required,
                "sync_keys",
                format!(
                    "sync key {} is not a unique field; use USER, EMAIL or an entry marked `unique = true`",
                    entry.display_name()
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Why a Sage People `$filter` would be refused by the extractor: the extractor's own parser
/// ([`crate::source_filter::validate`]) decides, so a config it would refuse is never stored.
fn source_filter_problem(filter: &str) -> Option<String> {
    crate::source_filter::validate(filter).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_filters_are_checked_by_the_extractors_parser() {
        assert_eq!(
            source_filter_problem("workAddress.country eq 'France'"),
            None
        );
        assert_eq!(
            source_filter_problem("(a eq 'O''Brien') and b eq 'x'"),
            None
        );
        assert!(source_filter_problem(" ").is_some_and(|m| m.contains("is empty")));
        assert!(source_filter_problem("a eq 'France").is_some_and(|m| m.contains("not closed")));
        assert!(source_filter_problem("(a eq 'x'").is_some());
        assert!(source_filter_problem("a eq 'x')").is_some());
        // Balanced but not a filter: only a real parser sees it.
        assert!(source_filter_problem("workAddress.country equals 'France'").is_some());
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
