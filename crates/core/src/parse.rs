//! Reading config TOML into an [`IntegrationConfig`], key by key, so that every unknown key
//! and every wrongly typed value is reported (serde would stop at the first). Values that
//! cannot be read get a placeholder and the error; semantic checks follow in `validate`.

use serde_json::Value;
use toml::Table;

use crate::config::{
    FilterConfig, FilterMode, IntegrationConfig, IntegrationType, MappingEntry, MappingSource,
    Preference, SaasConfig, ScheduleConfig,
};
use crate::leavers::{LeaverAction, LeaverConfig};
use crate::names::did_you_mean;
use crate::validate::{ValidationError, ValidationErrors, ValidationKind, entry_location};

/// What the parser read, what it could not, and where it put placeholders.
pub(crate) struct Parsed {
    pub(crate) config: IntegrationConfig,
    pub(crate) errors: Vec<ValidationError>,
    /// Locations whose value is a placeholder, already reported.
    pub(crate) placeholders: Vec<String>,
}

const TOP_KEYS: [&str; 13] = [
    "id",
    "type",
    "preference",
    "sync_keys",
    "default_role",
    "credentials",
    "source_filter",
    "additional_fields",
    "schedule",
    "filter",
    "saas",
    "leavers",
    "mapping",
];
const LEAVER_KEYS: [&str; 5] = [
    "action",
    "allow_delete",
    "delete_with_assets",
    "timezone",
    "set",
];
const SCHEDULE_KEYS: [&str; 4] = ["every", "at", "timezone", "cron"];
const FILTER_KEYS: [&str; 3] = ["mode", "condition", "restore_archived"];
const SAAS_KEYS: [&str; 3] = ["sync_key", "name", "selected_saas_id"];
const MAPPING_KEYS: [&str; 7] = [
    "field", "label", "unique", "source", "template", "setting", "value",
];
const SOURCE_KINDS: [&str; 4] = ["source", "template", "setting", "value"];

/// Parses `text`; a TOML syntax error is the only thing that stops it early.
pub(crate) fn parse(text: &str) -> Result<Parsed, ValidationErrors> {
    let table: Table = text.parse().map_err(|err: toml::de::Error| {
        ValidationErrors::new(vec![ValidationError::new(
            ValidationKind::Syntax,
            "",
            format!("not valid TOML: {}", err.to_string().trim_end()),
        )])
    })?;
    let mut r = Reader::default();
    r.unknown_keys(&table, "", &TOP_KEYS);

    let schedule_table = r.table(&table, "schedule");
    let filter_table = r.table(&table, "filter");
    let saas_table = r.table(&table, "saas");
    let leavers_table = r.table(&table, "leavers");

    let integration_type = r.choice(
        &table,
        "type",
        &[IntegrationType::User, IntegrationType::UserAndSaasUser],
        IntegrationType::as_str,
    );
    let preference = r.choice(
        &table,
        "preference",
        &[
            Preference::CreateAndUpdate,
            Preference::CreateOnly,
            Preference::UpdateOnly,
        ],
        Preference::as_str,
    );

    let schedule = match schedule_table {
        Some(t) => {
            r.unknown_keys(t, "schedule.", &SCHEDULE_KEYS);
            ScheduleConfig {
                every: r.string(t, "schedule.every"),
                at: r.string(t, "schedule.at"),
                timezone: r.string(t, "schedule.timezone"),
                cron: r.string(t, "schedule.cron"),
            }
        }
        None => ScheduleConfig::default(),
    };

    let filter = match filter_table {
        Some(t) => {
            r.unknown_keys(t, "filter.", &FILTER_KEYS);
            FilterConfig {
                mode: r.choice(
                    t,
                    "filter.mode",
                    &[FilterMode::Always, FilterMode::IfConditions],
                    FilterMode::as_str,
                ),
                condition: r.string(t, "filter.condition"),
                restore_archived: r.boolean(t, "filter.restore_archived").unwrap_or(false),
            }
        }
        None => FilterConfig::default(),
    };

    let saas = saas_table.map(|t| {
        r.unknown_keys(t, "saas.", &SAAS_KEYS);
        SaasConfig {
            sync_key: r.string(t, "saas.sync_key"),
            name: r.string(t, "saas.name"),
            selected_saas_id: r.string(t, "saas.selected_saas_id"),
        }
    });

    let leavers = match leavers_table {
        Some(t) => {
            r.unknown_keys(t, "leavers.", &LEAVER_KEYS);
            LeaverConfig {
                action: r.choice(
                    t,
                    "leavers.action",
                    &[
                        LeaverAction::None,
                        LeaverAction::Update,
                        LeaverAction::Delete,
                    ],
                    LeaverAction::as_str,
                ),
                allow_delete: r.boolean(t, "leavers.allow_delete").unwrap_or(false),
                delete_with_assets: r.boolean(t, "leavers.delete_with_assets").unwrap_or(false),
                timezone: r.string(t, "leavers.timezone"),
                set: r.entries(t, "leavers.set", crate::leavers::set_location),
            }
        }
        None => LeaverConfig::default(),
    };

    let mapping = r.entries(&table, "mapping", entry_location);

    let config = IntegrationConfig {
        id: r.string(&table, "id").unwrap_or_default(),
        integration_type,
        preference,
        sync_keys: r
            .strings(&table, "sync_keys")
            .unwrap_or_else(|| vec!["EMAIL".to_owned()]),
        default_role: r.string(&table, "default_role"),
        credentials: r
            .string(&table, "credentials")
            .unwrap_or_else(|| "default".to_owned()),
        source_filter: r.string(&table, "source_filter"),
        additional_fields: r.strings(&table, "additional_fields").unwrap_or_default(),
        schedule,
        filter,
        saas,
        leavers,
        mapping,
    };
    Ok(Parsed {
        config,
        errors: r.errors,
        placeholders: r.placeholders,
    })
}

/// The key a dotted config location names in its own table: `filter.mode` → `mode`.
fn key_of(location: &str) -> &str {
    location.rsplit('.').next().unwrap_or(location)
}

/// Reads values by their location (`"filter.mode"`), reporting every problem there.
#[derive(Default)]
struct Reader {
    errors: Vec<ValidationError>,
    placeholders: Vec<String>,
}

impl Reader {
    fn error(&mut self, kind: ValidationKind, location: &str, message: String) {
        self.errors
            .push(ValidationError::new(kind, location, message));
    }

    fn unknown_keys(&mut self, table: &Table, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let hint = did_you_mean(key, known.iter().copied());
                self.error(
                    ValidationKind::UnknownKey,
                    &format!("{prefix}{key}"),
                    format!("unknown key{hint}"),
                );
            }
        }
    }

    fn wrong_type(&mut self, location: &str, expected: &str, found: &toml::Value) {
        self.error(
            ValidationKind::WrongType,
            location,
            format!("must be {expected}, found {}", found.type_str()),
        );
        self.placeholders.push(location.to_owned());
    }

    /// The value at `location`, one of `choices` as `name` spells them. Absent, it is the
    /// default; any other text is reported and read as the default.
    fn choice<T: Copy + Default>(
        &mut self,
        table: &Table,
        location: &str,
        choices: &[T],
        name: fn(T) -> &'static str,
    ) -> T {
        let Some(found) = self.string(table, location) else {
            return T::default();
        };
        if let Some(&choice) = choices.iter().find(|&&c| name(c) == found) {
            return choice;
        }
        let hint = did_you_mean(&found, choices.iter().map(|&c| name(c)));
        let list = choices
            .iter()
            .map(|&c| format!("\"{}\"", name(c)))
            .collect::<Vec<_>>()
            .join(", ");
        self.error(
            ValidationKind::Invalid,
            location,
            format!("\"{found}\" is not one of {list}{hint}"),
        );
        T::default()
    }

    fn string(&mut self, table: &Table, location: &str) -> Option<String> {
        match table.get(key_of(location))? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(location, "a string", other);
                None
            }
        }
    }

    fn boolean(&mut self, table: &Table, location: &str) -> Option<bool> {
        match table.get(key_of(location))? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(location, "true or false", other);
                None
            }
        }
    }

    fn strings(&mut self, table: &Table, location: &str) -> Option<Vec<String>> {
        match table.get(key_of(location))? {
            toml::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push(s.clone()),
                        other => {
                            self.wrong_type(location, "a list of strings", other);
                            return Some(out);
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(location, "a list of strings", other);
                None
            }
        }
    }

    fn table<'t>(&mut self, table: &'t Table, key: &str) -> Option<&'t Table> {
        match table.get(key)? {
            toml::Value::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other);
                None
            }
        }
    }

    /// The entries of the array of tables `name` (`[[mapping]]`, `[[leavers.set]]`), each
    /// located by `locate(index, field)`.
    fn entries(
        &mut self,
        table: &Table,
        name: &str,
        locate: fn(usize, &str) -> String,
    ) -> Vec<MappingEntry> {
        let items = match table.get(key_of(name)) {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(other) => {
                self.wrong_type(name, &format!("an array of tables ([[{name}]])"), other);
                return Vec::new();
            }
        };
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let toml::Value::Table(t) = item else {
                let at = locate(i, "");
                self.wrong_type(&at, &format!("a table ([[{name}]])"), item);
                continue;
            };
            let field = match t.get("field") {
                Some(toml::Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let at = locate(i, field.trim());
            for key in t.keys() {
                if !MAPPING_KEYS.contains(&key.as_str()) {
                    let hint = did_you_mean(key, MAPPING_KEYS);
                    self.error(
                        ValidationKind::UnknownKey,
                        &at,
                        format!("unknown key `{key}`{hint}"),
                    );
                }
            }
            if let Some(other) = t.get("field").filter(|v| !v.is_str()) {
                self.error(
                    ValidationKind::WrongType,
                    &at,
                    format!("`field` must be a string, found {}", other.type_str()),
                );
                self.placeholders.push(at.clone());
            }
            let label = match t.get("label") {
                None => None,
                Some(toml::Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    self.error(
                        ValidationKind::WrongType,
                        &at,
                        format!("`label` must be a string, found {}", other.type_str()),
                    );
                    None
                }
            };
            let unique = match t.get("unique") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(other) => {
                    self.error(
                        ValidationKind::WrongType,
                        &at,
                        format!("`unique` must be true or false, found {}", other.type_str()),
                    );
                    false
                }
            };
            let given: Vec<&str> = SOURCE_KINDS
                .iter()
                .copied()
                .filter(|k| t.contains_key(*k))
                .collect();
            let source = match given.as_slice() {
                [kind] => self.source(t, kind, &at),
                [] => {
                    self.error(
                        ValidationKind::Missing,
                        &at,
                        "needs one of `source`, `template`, `setting` or `value`".into(),
                    );
                    None
                }
                several => {
                    self.error(
                        ValidationKind::Conflict,
                        &at,
                        format!(
                            "has {}; give exactly one of `source`, `template`, `setting` or `value`",
                            several.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                        ),
                    );
                    None
                }
            };
            let source = source.unwrap_or_else(|| {
                self.placeholders.push(at.clone());
                MappingSource::Value(Value::Null)
            });
            entries.push(MappingEntry {
                field,
                label,
                unique,
                source,
            });
        }
        entries
    }

    fn source(&mut self, t: &Table, kind: &str, at: &str) -> Option<MappingSource> {
        let value = t.get(kind)?;
        if kind == "value" {
            return match toml_scalar(value) {
                Some(v) => Some(MappingSource::Value(v)),
                None => {
                    self.error(
                        ValidationKind::WrongType,
                        at,
                        format!(
                            "`value` must be a string, number or boolean, found {}",
                            value.type_str()
                        ),
                    );
                    None
                }
            };
        }
        let Some(text) = value.as_str() else {
            self.error(
                ValidationKind::WrongType,
                at,
                format!("`{kind}` must be a string, found {}", value.type_str()),
            );
            return None;
        };
        let text = text.to_owned();
        Some(match kind {
            "source" => MappingSource::Source(text),
            "template" => MappingSource::Template(text),
            _ => MappingSource::Setting(text),
        })
    }
}

/// A TOML scalar as JSON; dates become their text. Arrays and tables are not scalars.
fn toml_scalar(value: &toml::Value) -> Option<Value> {
    Some(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number)?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}
