//! Leavers: who has left, and what an integration does about them in Oomnitza. A worker has
//! left when Sage People no longer lists them, when `currentEmployment.active` is false, or
//! when `currentEmployment.endDate` is before today in the integration's time zone (the end
//! date is the last working day). The `[leavers]` table of the integration config says what
//! happens to such a worker's Oomnitza user: nothing (`none`), some fields set (`update`),
//! or deletion (`delete`, allowed only explicitly). Pure: the caller supplies today's date.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::config::{IntegrationConfig, MappingEntry, MappingSource};
use crate::validate::{ValidationError, ValidationKind};
use crate::worker::Worker;

/// The commented `[leavers]` example shipped after the default config (which uses the default
/// action, `none`): uncommented, it gives leavers a disabled role and records their end date.
pub const LEAVERS_EXAMPLE: &str = r#"
# Leavers (docs/mapping.md, "Leavers"): what happens in Oomnitza to a worker who is no longer
# listed by Sage People, whose employment is inactive, or whose end date has passed. The
# default, "none", writes nothing but counts leavers and reports the assets they still hold
# (syncctl leavers). For example, to give leavers a disabled role and record their end date:
#
# [leavers]
# action = "update"            # "none", "update", or "delete" (with allow_delete = true)
# timezone = "Europe/London"   # end dates are judged here (default: the schedule's, else UTC)
#
# [[leavers.set]]
# field = "PERMISSIONS_ID"
# value = "3"                  # a role for disabled users in your tenant
#
# [[leavers.set]]
# field = "95231F6736CCE3D415F4640310AD5C14"   # End Date
# template = "{{ worker.end_date }}"
"#;

/// What happens to a leaver's Oomnitza user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaverAction {
    /// Nothing is written; the leaver is counted and reported.
    #[default]
    None,
    /// The fields of `leavers.set` are written to the user.
    Update,
    /// The user is deleted (`DELETE /api/v3/users/{ident}`).
    Delete,
}

impl LeaverAction {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaverAction::None => "none",
            LeaverAction::Update => "update",
            LeaverAction::Delete => "delete",
        }
    }
}

/// The `[leavers]` table of an integration config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct LeaverConfig {
    /// What happens to a leaver's user.
    pub action: LeaverAction,
    /// `action = "delete"` is refused unless this is true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_delete: bool,
    /// Delete users who still hold assets too (otherwise they are kept and reported).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete_with_assets: bool,
    /// IANA time zone in which end dates are compared with today (default: the schedule's,
    /// else UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// For `update`: Oomnitza field id ← value, with the same sources as the mapping.
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "set")]
    pub set: Vec<MappingEntry>,
}

impl LeaverConfig {
    /// Whether the table holds nothing but defaults (and is then not written out).
    pub fn is_default(&self) -> bool {
        *self == LeaverConfig::default()
    }
}

/// Why a listed worker counts as a leaver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// `currentEmployment.active` is false.
    Inactive,
    /// `currentEmployment.endDate` is before today.
    EndDatePassed(NaiveDate),
}

/// Whether `worker` has left as of `today` (in the integration's time zone). A worker whose
/// end date is today is still employed today; from tomorrow they are a leaver. An end date
/// that is not `YYYY-MM-DD` is ignored (the worker is judged by `active` alone).
pub fn ended(worker: &Worker, today: NaiveDate) -> Option<Ended> {
    if let Some(end) = worker
        .end_date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
        && end < today
    {
        return Some(Ended::EndDatePassed(end));
    }
    (worker.employment_active == Some(false)).then_some(Ended::Inactive)
}

/// The time zone end dates of `config` are compared in: `leavers.timezone`, else
/// `schedule.timezone`, else UTC. An unknown name (refused by validation) counts as UTC.
pub fn time_zone(config: &IntegrationConfig) -> Tz {
    config
        .leavers
        .timezone
        .as_deref()
        .or(config.schedule.timezone.as_deref())
        .and_then(|name| name.trim().parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

/// Today's date at `now` in `tz`.
pub fn today_in(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// The mapping entry whose value is the Sage People id: leavers are found in Oomnitza by it
/// (a worker no longer listed has nothing else).
pub fn id_entry(config: &IntegrationConfig) -> Option<&MappingEntry> {
    config.mapping.iter().find(|e| {
        matches!(&e.source, MappingSource::Source(s)
            if crate::worker::IntegrationField::from_label(s.trim())
                == Some(crate::worker::IntegrationField::Id))
    })
}

/// The location of entry `index` of `leavers.set`.
pub(crate) fn set_location(index: usize, field: &str) -> String {
    if field.is_empty() {
        format!("leavers.set #{}", index + 1)
    } else {
        format!("leavers.set #{} ({field})", index + 1)
    }
}

/// What in the `[leavers]` table is valid but probably does not do all that is meant: a
/// `[[leavers.set]]` field the `[[mapping]]` does not write keeps the leaver's value when the
/// worker is rehired, since a rehire writes the mapped fields only. Never makes a config
/// invalid; the control plane logs these (warning level) when a config is stored.
pub fn warnings(config: &IntegrationConfig) -> Vec<ValidationError> {
    if config.leavers.action != LeaverAction::Update {
        return Vec::new();
    }
    let mapped = |field: &str| config.mapping.iter().any(|m| m.field.trim() == field);
    config
        .leavers
        .set
        .iter()
        .enumerate()
        .map(|(i, entry)| (i, entry.field.trim()))
        .filter(|(_, field)| !field.is_empty() && !mapped(field))
        .map(|(i, field)| {
            ValidationError::new(
                ValidationKind::Warning,
                set_location(i, field),
                format!(
                    "field {field} is set on leavers but not written by the [[mapping]], so a \
                     rehired worker's user keeps the leaver's value (a rehire writes the mapped \
                     fields only); map {field} as well, or put it right by hand on a rehire"
                ),
            )
        })
        .collect()
}

/// Checks the `[leavers]` table (templates in `set` are checked when compiled).
pub(crate) fn check(config: &IntegrationConfig, errors: &mut Vec<ValidationError>) {
    let leavers = &config.leavers;
    let mut add = |kind, location: &str, message: String| {
        errors.push(ValidationError::new(kind, location, message));
    };
    if let Some(name) = &leavers.timezone
        && name.trim().parse::<Tz>().is_err()
    {
        add(
            ValidationKind::Invalid,
            "leavers.timezone",
            format!("`{name}` is not an IANA time zone name such as \"Europe/London\""),
        );
    }
    match leavers.action {
        LeaverAction::None => {}
        LeaverAction::Update if leavers.set.is_empty() => add(
            ValidationKind::Missing,
            "leavers.set",
            "action \"update\" needs at least one [[leavers.set]] entry (for example a status \
             field set to \"Terminated\"); use action \"none\" to write nothing"
                .into(),
        ),
        LeaverAction::Delete if !leavers.allow_delete => add(
            ValidationKind::Required,
            "leavers.action",
            "\"delete\" removes users from Oomnitza for good; set leavers.allow_delete = true to \
             confirm, or use \"update\""
                .into(),
        ),
        _ => {}
    }
    if leavers.action != LeaverAction::None && id_entry(config).is_none() {
        add(
            ValidationKind::Required,
            "leavers.action",
            format!(
                "leavers are found in Oomnitza by the field mapped from source \"ID\" (the Sage \
                 People id); map ID to a unique field (the default maps it to {}), or use \
                 action \"none\"",
                crate::defaults::SAGE_USER_ID_FIELD
            ),
        );
    }
    if leavers.action != LeaverAction::Update && !leavers.set.is_empty() {
        add(
            ValidationKind::Conflict,
            "leavers.set",
            format!(
                "is only used with action \"update\" (the action is \"{}\")",
                leavers.action.as_str()
            ),
        );
    }
    for (i, entry) in leavers.set.iter().enumerate() {
        let field = entry.field.trim();
        if field.is_empty() {
            add(
                ValidationKind::Missing,
                &set_location(i, field),
                "needs a `field` (an Oomnitza field id)".into(),
            );
        } else if config.sync_keys.iter().any(|k| k.trim() == field) {
            add(
                ValidationKind::Conflict,
                &set_location(i, field),
                "is a sync key; a leaver update must not change how the user is identified".into(),
            );
        }
        if let MappingSource::Source(s) = &entry.source
            && crate::source::SourceRef::resolve(s, &config.additional_fields).is_err()
        {
            add(
                ValidationKind::UnknownSource,
                &set_location(i, field),
                format!("source `{s}` is not an integration field or declared additional field"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(active: Option<bool>, end: Option<&str>) -> Worker {
        Worker {
            id: "a1".into(),
            employment_active: active,
            end_date: end.map(str::to_owned),
            ..Worker::default()
        }
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_worker_has_left_the_day_after_their_end_date() {
        let today = day("2026-12-06");
        assert_eq!(
            ended(&worker(Some(true), Some("2026-12-05")), today),
            Some(Ended::EndDatePassed(day("2026-12-05")))
        );
        assert_eq!(ended(&worker(Some(true), Some("2026-12-06")), today), None);
        assert_eq!(ended(&worker(Some(true), Some("2026-12-07")), today), None);
        assert_eq!(ended(&worker(Some(true), None), today), None);
    }

    #[test]
    fn inactive_employment_is_a_leaver_and_bad_dates_are_ignored() {
        let today = day("2026-12-06");
        assert_eq!(
            ended(&worker(Some(false), None), today),
            Some(Ended::Inactive)
        );
        assert_eq!(
            ended(&worker(Some(false), Some("06/12/2026")), today),
            Some(Ended::Inactive)
        );
        assert_eq!(ended(&worker(None, Some("soon")), today), None);
    }

    #[test]
    fn today_depends_on_the_time_zone() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(today_in(Tz::UTC, now), day("2026-12-06"));
        assert_eq!(today_in(Tz::Asia__Tokyo, now), day("2026-12-07"));
        assert_eq!(today_in(Tz::America__New_York, now), day("2026-12-06"));
    }

    fn with_leavers(table: &str) -> Result<IntegrationConfig, Vec<String>> {
        let text = IntegrationConfig::default_for("acme").to_toml();
        // `[leavers]` goes before the first `[[mapping]]` so the TOML stays in one piece.
        let at = text.find("[[mapping]]").unwrap();
        let text = format!("{}{table}\n\n{}", &text[..at], &text[at..]);
        IntegrationConfig::from_toml(&text)
            .map_err(|e| e.into_vec().into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn update_needs_fields_and_delete_needs_consent() {
        for (table, complaint) in [
            ("[leavers]\naction = \"update\"", "leavers.set"),
            ("[leavers]\naction = \"delete\"", "allow_delete"),
            ("[leavers]\naction = \"retire\"", "leavers.action"),
            ("[leavers]\ntimezone = \"Mars/Olympus\"", "leavers.timezone"),
        ] {
            let errors = with_leavers(table).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(complaint)),
                "{table}: {errors:?}"
            );
        }
    }

    #[test]
    fn an_update_policy_round_trips_and_evaluates_its_templates() {
        let config = with_leavers(
            "[leavers]\naction = \"update\"\ntimezone = \"Europe/London\"\n\n\
             [[leavers.set]]\nfield = \"STATUS\"\nvalue = \"Terminated\"\n\n\
             [[leavers.set]]\nfield = \"NOTE\"\ntemplate = \"left {{ worker.end_date }}\"",
        )
        .unwrap();
        assert_eq!(config.leavers.action, LeaverAction::Update);
        assert_eq!(time_zone(&config), Tz::Europe__London);
        let again = IntegrationConfig::from_toml(&config.to_toml()).unwrap();
        assert_eq!(again, config);
        let integration = crate::Integration::compile(config).unwrap();
        assert_eq!(
            integration.leaver_lookup_field(),
            Some(crate::defaults::SAGE_USER_ID_FIELD)
        );
        let worker = worker(Some(false), Some("2026-12-05"));
        let input = crate::RecordInput {
            raw: &serde_json::Value::Null,
            worker: &worker,
            tracking: &crate::Tracking::default(),
        };
        let fields = integration.leaver_fields(&input).unwrap();
        assert_eq!(fields["STATUS"], "Terminated");
        assert_eq!(fields["NOTE"], "left 2026-12-05");
    }

    #[test]
    fn a_leavers_set_field_the_mapping_does_not_write_is_a_warning_naming_it() {
        let table = "[leavers]\naction = \"update\"\n\n\
             [[leavers.set]]\nfield = \"PERMISSIONS_ID\"\nvalue = \"3\"\n\n\
             [[leavers.set]]\nfield = \" STATUS \"\nvalue = \"Terminated\"";
        let config = with_leavers(table).expect("a warning never makes a config invalid");
        let found = warnings(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, ValidationKind::Warning);
        assert_eq!(found[0].location, "leavers.set #2 (STATUS)");
        assert!(
            found[0].message.contains("STATUS") && found[0].message.contains("rehired"),
            "{}",
            found[0].message
        );
        // The role is mapped (the default config maps it): a rehire writes it back.
        let mut all_mapped = config.clone();
        all_mapped.leavers.set.truncate(1);
        assert!(warnings(&all_mapped).is_empty());
    }

    #[test]
    fn the_shipped_example_is_a_valid_policy_once_uncommented() {
        let example: String = LEAVERS_EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("# [leavers]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = with_leavers(&example).unwrap();
        assert_eq!(config.leavers.action, LeaverAction::Update);
        assert_eq!(config.leavers.set.len(), 2);
        let default = IntegrationConfig::default_for("acme").to_toml() + LEAVERS_EXAMPLE;
        assert_eq!(
            IntegrationConfig::from_toml(&default)
                .unwrap()
                .leavers
                .action,
            LeaverAction::None
        );
    }
}
