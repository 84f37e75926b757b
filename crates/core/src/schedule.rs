//! Purely syntactic checks of the `[schedule]` table. The extractor interprets the schedule;
//! this module only makes sure what it will read is well-formed, and offers the parsers
//! (durations such as `"1h30m"`, times of day `"HH:MM"`) so both sides read it alike.

use std::time::Duration;

use crate::config::ScheduleConfig;
use crate::validate::{ValidationError, ValidationKind};

/// Parses an interval: one or more `<number><unit>` groups, units `s`, `m`, `h`, `d`, `w`
/// (`"30m"`, `"6h"`, `"1d"`, `"1h30m"`). Zero and overflowing intervals are `None`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !digits.is_empty() || total == 0 {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Parses a time of day `"HH:MM"` (24-hour clock) into (hour, minute).
pub fn parse_time_of_day(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u8 = h.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    (h < 24 && m < 60).then_some((h, m))
}

/// Checks a cron expression's shape: 5 fields (minute hour day month weekday) or 6
/// (with seconds first), each made of digits, names and `* , - / ? L W #`; or one of the
/// `@hourly`-style aliases. Whether the extractor's cron library accepts every value is
/// its own check.
pub fn cron_shape_problem(text: &str) -> Option<String> {
    let text = text.trim();
    const ALIASES: [&str; 6] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@hourly",
    ];
    if text.starts_with('@') {
        return (!ALIASES.contains(&text.to_ascii_lowercase().as_str())).then(|| {
            format!(
                "unknown cron alias `{text}`; use one of {}",
                ALIASES.join(", ")
            )
        });
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Some(format!(
            "cron expression `{text}` has {} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)",
            fields.len()
        ));
    }
    for field in fields {
        if let Some(bad) = field
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "*,-/?#".contains(*c)))
        {
            return Some(format!(
                "cron field `{field}` contains `{bad}`; fields use digits, names and * , - / ? L W #"
            ));
        }
    }
    None
}

/// Every problem in `schedule`, located at `schedule.<key>`: the shape checks above, then the
/// extractor's own reading of the schedule ([`crate::plan::Plan::from_config`]: time zone
/// names, cron values and expressions that never match, intervals under a minute), so what
/// passes here the extractor runs.
pub(crate) fn check(schedule: &ScheduleConfig, errors: &mut Vec<ValidationError>) {
    let before = errors.len();
    check_shapes(schedule, errors);
    if let Err(problem) = crate::plan::Plan::from_config(schedule) {
        let location = format!("schedule.{}", problem.key);
        if !errors[before..].iter().any(|e| e.location == location) {
            errors.push(ValidationError::new(
                ValidationKind::Invalid,
                location,
                problem.message,
            ));
        }
    }
}

fn check_shapes(schedule: &ScheduleConfig, errors: &mut Vec<ValidationError>) {
    let mut invalid = |key: &str, message: String| {
        errors.push(ValidationError::new(
            ValidationKind::Invalid,
            format!("schedule.{key}"),
            message,
        ));
    };
    if let Some(every) = &schedule.every
        && parse_duration(every).is_none()
    {
        invalid(
            "every",
            format!(
                "`{every}` is not an interval; write a number and a unit (s, m, h, d, w), e.g. \"30m\", \"6h\", \"1d\", \"1h30m\""
            ),
        );
    }
    if let Some(at) = &schedule.at
        && parse_time_of_day(at).is_none()
    {
        invalid(
            "at",
            format!("`{at}` is not a time of day; write HH:MM on a 24-hour clock, e.g. \"02:00\""),
        );
    }
    if let Some(tz) = &schedule.timezone
        && tz.trim().is_empty()
    {
        invalid(
            "timezone",
            "is empty; write an IANA time zone such as \"Europe/London\", or leave it out for UTC"
                .to_owned(),
        );
    }
    if let Some(cron) = &schedule.cron {
        if let Some(problem) = cron_shape_problem(cron) {
            invalid("cron", problem);
        }
        if schedule.every.is_some() || schedule.at.is_some() {
            errors.push(ValidationError::new(
                ValidationKind::Conflict,
                "schedule.cron",
                "cannot be combined with `every` or `at`; use either cron or every/at",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_combinations() {
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("6h"), Some(Duration::from_secs(21_600)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(1_209_600)));
    }

    #[test]
    fn durations_refuse_zero_missing_units_and_overflow() {
        for bad in [
            "",
            "0h",
            "6",
            "h",
            "6 h",
            "1.5h",
            "6x",
            "99999999999999999999d",
            "-1h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(parse_time_of_day("02:00"), Some((2, 0)));
        assert_eq!(parse_time_of_day("23:59"), Some((23, 59)));
        for bad in ["2:00", "24:00", "12:60", "0200", "ab:cd", ""] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn cron_needs_five_or_six_fields() {
        assert_eq!(cron_shape_problem("0 2 * * *"), None);
        assert_eq!(cron_shape_problem("0 0 2 * * MON-FRI"), None);
        assert_eq!(cron_shape_problem("@daily"), None);
        assert!(cron_shape_problem("0 2 * *").is_some_and(|m| m.contains("has 4 fields")));
        assert!(cron_shape_problem("0 2 * * * * *").is_some_and(|m| m.contains("has 7 fields")));
        assert!(cron_shape_problem("0 2 * * $").is_some_and(|m| m.contains("contains `$`")));
        assert!(cron_shape_problem("@sometimes").is_some_and(|m| m.contains("unknown cron alias")));
    }

    #[test]
    fn a_cron_expression_no_date_has_is_refused_at_schedule_cron() {
        let schedule = ScheduleConfig {
            cron: Some("0 2 30 2 *".into()),
            ..ScheduleConfig::default()
        };
        let mut errors = Vec::new();
        check(&schedule, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].location, "schedule.cron");
        assert!(
            errors[0].message.contains("never matches"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn schedule_messages_name_the_key() {
        let schedule = ScheduleConfig {
            every: Some("soon".into()),
            at: Some("25:00".into()),
            timezone: Some(" ".into()),
            cron: Some("* *".into()),
        };
        let mut errors = Vec::new();
        check(&schedule, &mut errors);
        let locations: Vec<&str> = errors.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "schedule.every",
                "schedule.at",
                "schedule.timezone",
                "schedule.cron",
                "schedule.cron"
            ]
        );
        assert!(errors[4].message.contains("either cron or every/at"));
    }
}
