//! The integration config: which workers are loaded into Oomnitza and how each Sage People
//! field becomes an Oomnitza field. Operators write it as TOML (stored revisioned in the KV
//! bucket `peoplesync_config`); [`IntegrationConfig::from_toml`] parses and validates it and
//! [`crate::Integration::compile`] turns it into something the loader evaluates per record.

use crate::leavers::LeaverConfig;
use serde::Serialize;
use serde_json::Value;

pub use crate::validate::{ValidationError, ValidationErrors, ValidationKind};

/// One integration: the Oomnitza side of a Sage People → Oomnitza user sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrationConfig {
    /// Integration id, used in bus subjects (`peoplesync.<id>.workers`): letters, digits,
    /// `-` and `_`.
    pub id: String,
    /// User only, or user plus SaaS user (TOML key `type`).
    #[serde(rename = "type")]
    pub integration_type: IntegrationType,
    /// Create & Update, Create only or Update only.
    pub preference: Preference,
    /// Oomnitza field ids that identify a user, in priority order (bulk `sync_field`).
    pub sync_keys: Vec<String>,
    /// The Oomnitza role id given to loaded users, used by `setting = "default_role"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Name of the extractor's credential set this integration reads with.
    pub credentials: String,
    /// Optional Sage People `$filter`, passed through to the extractor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_filter: Option<String>,
    /// Names of the Sage People additional fields (`additionalFields[].name`) that mappings
    /// may use as `source`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_fields: Vec<String>,
    /// When the extractor runs; interpreted by the extractor.
    #[serde(skip_serializing_if = "ScheduleConfig::is_empty")]
    pub schedule: ScheduleConfig,
    /// Which workers are loaded.
    pub filter: FilterConfig,
    /// The SaaS application, for `type = "user_and_saas_user"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saas: Option<SaasConfig>,
    /// What happens to leavers in Oomnitza (`[leavers]`).
    #[serde(skip_serializing_if = "LeaverConfig::is_default")]
    pub leavers: LeaverConfig,
    /// Oomnitza field id ← where its value comes from.
    pub mapping: Vec<MappingEntry>,
}

/// Which Oomnitza records an integration writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationType {
    /// User records only (`"user"`).
    #[default]
    User,
    /// User records, each with a `SAAS` block for the Sage People SaaS user
    /// (`"user_and_saas_user"`).
    UserAndSaasUser,
}

impl IntegrationType {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::UserAndSaasUser => "user_and_saas_user",
        }
    }
}

/// Create & Update, Create only or Update only. One enum, so the bulk envelope's
/// `insert_only` and `update_only` can never both be true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// Add new users and update existing ones (`"create_and_update"`).
    #[default]
    CreateAndUpdate,
    /// Add new users; leave existing ones alone (`"create_only"`).
    CreateOnly,
    /// Update existing users; never create one (`"update_only"`).
    UpdateOnly,
}

impl Preference {
    /// The bulk envelope's `insert_only`.
    pub fn insert_only(self) -> bool {
        self == Self::CreateOnly
    }

    /// The bulk envelope's `update_only`.
    pub fn update_only(self) -> bool {
        self == Self::UpdateOnly
    }

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateAndUpdate => "create_and_update",
            Self::CreateOnly => "create_only",
            Self::UpdateOnly => "update_only",
        }
    }
}

/// When the extractor runs. Kept as written; the extractor interprets it. All unset means
/// the extractor's default (daily at 02:00 UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleConfig {
    /// Interval between runs: `"30m"`, `"6h"`, `"1d"`, `"1h30m"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Time of day of the first run, `"HH:MM"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// IANA time zone of `at` and `cron` (default UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A cron expression (5 or 6 fields), instead of `every`/`at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

impl ScheduleConfig {
    /// True when nothing is set (the extractor's default applies).
    pub fn is_empty(&self) -> bool {
        self.every.is_none() && self.at.is_none() && self.timezone.is_none() && self.cron.is_none()
    }

    /// `every` as a duration, when set and well-formed.
    pub fn every_duration(&self) -> Option<std::time::Duration> {
        self.every
            .as_deref()
            .and_then(crate::schedule::parse_duration)
    }

    /// `at` as (hour, minute), when set and well-formed.
    pub fn at_time(&self) -> Option<(u8, u8)> {
        self.at
            .as_deref()
            .and_then(crate::schedule::parse_time_of_day)
    }
}

/// Which workers are loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterConfig {
    /// Load every worker, or only those meeting `condition`.
    pub mode: FilterMode,
    /// A template expression over `response`, `worker` and `connect`; a worker is loaded
    /// when it is true. Used when `mode = "if_conditions"`; kept (and checked) otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Deprecated, no effect: earlier versions sent `"restore_archived": true` in every record,
    /// a key neither Oomnitza's API description nor its own connector documents. Still read
    /// (and written back) so existing configs stay valid; see
    /// [`IntegrationConfig::deprecations`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restore_archived: bool,
}

/// How the filter decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// Every worker is loaded (`"always"`).
    #[default]
    Always,
    /// Only workers for which `condition` is true (`"if_conditions"`).
    IfConditions,
}

impl FilterMode {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfConditions => "if_conditions",
        }
    }
}

/// The SaaS application that `user_and_saas_user` integrations write SaaS users for: the
/// integration's SaaS settings, sent unchanged as the `SAAS` object of every record, as
/// Oomnitza's own connector does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SaasConfig {
    /// The integration's SaaS sync key, as configured for the integration in Oomnitza
    /// (required). It is a setting of the integration, the same on every record, not a
    /// per-person value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_key: Option<String>,
    /// SaaS name in Oomnitza, e.g. "Sage People".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Oomnitza id of the SaaS record (optional when `name` is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_saas_id: Option<String>,
}

/// One Oomnitza field and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "MappingWire")]
pub struct MappingEntry {
    /// Oomnitza field id: a system id such as `EMAIL`, or a custom field's 32-hex id.
    pub field: String,
    /// Human name of the field (custom fields), shown in messages and previews.
    pub label: Option<String>,
    /// The field is unique in Oomnitza (like the recommended "Sage User ID").
    pub unique: bool,
    /// Where the value comes from.
    pub source: MappingSource,
}

/// Where a mapped value comes from: exactly one of the TOML keys `source`, `template`,
/// `setting`, `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingSource {
    /// One of the 17 integration fields by label ("Job Title"), a tracking field
    /// ("Connect: Credentials", "Connect: Hostname"), or a declared additional field.
    Source(String),
    /// A template (Oomnitza's custom API fields): `{{ response.email }}`.
    Template(String),
    /// A config setting: `default_role`, `credentials` or `id`.
    Setting(String),
    /// A literal value (string, number or boolean).
    Value(Value),
}

impl MappingEntry {
    /// An entry mapping `field` from `source`.
    pub fn new(field: impl Into<String>, source: MappingSource) -> MappingEntry {
        MappingEntry {
            field: field.into(),
            label: None,
            unique: false,
            source,
        }
    }

    /// Sets the field's label.
    pub fn with_label(mut self, label: impl Into<String>) -> MappingEntry {
        self.label = Some(label.into());
        self
    }

    /// Marks the field unique.
    pub fn unique(mut self) -> MappingEntry {
        self.unique = true;
        self
    }

    /// How this entry reads in messages: `POSITION` or `6C1F… ("Sage User ID")`.
    pub fn display_name(&self) -> String {
        match &self.label {
            Some(label) => format!("{} (\"{label}\")", self.field),
            None => self.field.clone(),
        }
    }
}

impl MappingSource {
    /// How the value's origin reads in messages: `source Email`, `template {{…}}`,
    /// `setting default_role`, `value "25"`.
    pub fn describe(&self) -> String {
        match self {
            Self::Source(name) => format!("source {name}"),
            Self::Template(text) => format!("template `{text}`"),
            Self::Setting(name) => format!("setting {name}"),
            Self::Value(value) => format!("value {value}"),
        }
    }
}

/// The TOML shape of a mapping entry.
#[derive(Serialize)]
struct MappingWire {
    field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    setting: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unique: bool,
}

impl From<MappingEntry> for MappingWire {
    fn from(entry: MappingEntry) -> Self {
        let mut wire = MappingWire {
            field: entry.field,
            label: entry.label,
            source: None,
            template: None,
            setting: None,
            value: None,
            unique: entry.unique,
        };
        match entry.source {
            MappingSource::Source(s) => wire.source = Some(s),
            MappingSource::Template(t) => wire.template = Some(t),
            MappingSource::Setting(s) => wire.setting = Some(s),
            // TOML has no null; a null literal is refused by validation anyway.
            MappingSource::Value(Value::Null) => wire.value = Some(Value::String(String::new())),
            MappingSource::Value(v) => wire.value = Some(v),
        }
        wire
    }
}

impl IntegrationConfig {
    /// Parses and validates a TOML config, reporting every problem found.
    pub fn from_toml(text: &str) -> Result<IntegrationConfig, ValidationErrors> {
        let parsed = crate::parse::parse(text)?;
        let (config, mut errors) = (parsed.config, parsed.errors);
        if let Err(more) = config.validate() {
            // Where the parser had to fill in a placeholder, it has already said why.
            errors.extend(
                more.into_vec()
                    .into_iter()
                    .filter(|e| !parsed.placeholders.contains(&e.location)),
            );
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ValidationErrors::new(errors))
        }
    }

    /// The config as TOML, in the shape [`from_toml`](Self::from_toml) reads.
    pub fn to_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => text,
            // Only reachable with values TOML cannot hold (validation refuses them).
            Err(err) => format!(
                "# integration {} could not be written as TOML: {err}\n",
                self.id
            ),
        }
    }

    /// The shipped default: all 17 fields mapped (see `docs/mapping.md`).
    pub fn default_for(id: &str) -> IntegrationConfig {
        crate::defaults::default_config(id)
    }

    /// Checks the config, including template syntax, reporting every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        crate::Integration::compile(self.clone()).map(drop)
    }

    /// Keys that are still accepted but no longer do anything, with what to do about them.
    /// Not errors: a config using them loads. Callers log them when a config is applied and
    /// show them when one is validated.
    pub fn deprecations(&self) -> Vec<ValidationError> {
        let mut found = Vec::new();
        if self.filter.restore_archived {
            found.push(ValidationError::new(
                ValidationKind::Deprecated,
                "filter.restore_archived",
                "is deprecated and has no effect: Oomnitza documents no `restore_archived` record \
                 key (neither its API description nor its own connector sends one), so peoplesync \
                 no longer sends it; restore archived users in Oomnitza, then remove the key",
            ));
        }
        found
    }

    /// The mapping entry for Oomnitza field `field`, if any.
    pub fn entry(&self, field: &str) -> Option<&MappingEntry> {
        self.mapping.iter().find(|m| m.field == field)
    }
}

#[cfg(test)]
mod tests;
