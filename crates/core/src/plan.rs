//! When full runs start: an integration's `[schedule]` (`every`, `at`, `timezone` or `cron`)
//! turned into a [`Plan`] that computes the next start after any instant. Pure: the
//! extractor's scheduler loop asks it for the next start, and config validation uses the same
//! parsing, so a schedule the extractor would refuse is refused when the config is stored.

use std::time::Duration;

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::config::ScheduleConfig;

/// A schedule that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule.{key}: {message}")]
pub struct ScheduleError {
    /// `every`, `at`, `timezone` or `cron`.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// When runs start.
#[derive(Debug, Clone)]
pub enum Plan {
    /// At `at` (local time in `tz`) and every `every` after it, on the local clock. Intervals
    /// of a day or less start again at `at` each day; longer ones count from 1 January 1970 at
    /// `at`.
    Interval {
        /// Time between runs.
        every: Duration,
        /// Time of day of the first run, (hour, minute).
        at: (u8, u8),
        /// Time zone of `at`.
        tz: Tz,
    },
    /// The times a cron expression matches, in `tz`.
    Cron {
        /// The expression, parsed.
        cron: Box<Cron>,
        /// As written.
        text: String,
        /// Its time zone.
        tz: Tz,
    },
}

impl Default for Plan {
    /// Once a day at 02:00 UTC.
    fn default() -> Self {
        Plan::Interval {
            every: Duration::from_secs(86_400),
            at: (2, 0),
            tz: Tz::UTC,
        }
    }
}

/// The longest interval between scheduled runs: a longer one is a typo, not a schedule (and
/// far longer ones overflow date arithmetic).
const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);

impl Plan {
    /// The plan of an integration's `[schedule]`; all keys unset means the default. A cron
    /// expression with no time from now on is refused: it would never start a run.
    pub fn from_config(config: &ScheduleConfig) -> Result<Plan, ScheduleError> {
        let tz = match config.timezone.as_deref().map(str::trim) {
            None | Some("") => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError {
                key: "timezone",
                message: format!(
                    "`{name}` is not an IANA time zone; write one such as \"Europe/London\" or \"America/New_York\""
                ),
            })?,
        };
        if let Some(text) = &config.cron {
            if config.every.is_some() || config.at.is_some() {
                return Err(ScheduleError {
                    key: "cron",
                    message: "cannot be combined with `every` or `at`; use either".into(),
                });
            }
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(text.trim())
                .map_err(|err| ScheduleError {
                    key: "cron",
                    message: format!(
                        "`{text}` is not a cron expression ({err}); write 5 fields (minute hour day month weekday), e.g. \"0 2 * * *\""
                    ),
                })?;
            let plan = Plan::Cron {
                cron: Box::new(cron),
                text: text.trim().to_owned(),
                tz,
            };
            // croner parses values no date has (30 February) and only finds out when asked
            // for a time: such a schedule would never start a run.
            if plan.next_after(Utc::now()).is_none() {
                return Err(ScheduleError {
                    key: "cron",
                    message: format!(
                        "`{}` never matches a time from now on (a day the month does not have, \
                         such as 30 February?), so no run would ever start; write one that does, \
                         e.g. \"0 2 * * *\"",
                        text.trim()
                    ),
                });
            }
            return Ok(plan);
        }
        let every = match &config.every {
            None => Duration::from_secs(86_400),
            Some(text) => crate::schedule::parse_duration(text).ok_or_else(|| ScheduleError {
                key: "every",
                message: format!(
                    "`{text}` is not an interval; write a number and a unit (s, m, h, d, w), e.g. \"6h\""
                ),
            })?,
        };
        if every < Duration::from_secs(60) {
            return Err(ScheduleError {
                key: "every",
                message: "runs cannot start more often than once a minute".into(),
            });
        }
        if every > MAX_EVERY {
            return Err(ScheduleError {
                key: "every",
                message: "runs must start at least once a year (at most \"366d\")".into(),
            });
        }
        let at = match &config.at {
            None if config.every.is_some() => (0, 0),
            None => (2, 0),
            Some(text) => {
                crate::schedule::parse_time_of_day(text).ok_or_else(|| ScheduleError {
                    key: "at",
                    message: format!("`{text}` is not a time of day; write HH:MM, e.g. \"02:00\""),
                })?
            }
        };
        Ok(Plan::Interval { every, at, tz })
    }

    /// The first start strictly after `now`; `None` when the plan has no later start.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Plan::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&now.with_timezone(tz), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
            Plan::Interval { every, at, tz } => {
                // Starts are local times, stepped on the local clock and converted one by one,
                // so they keep their time of day across daylight saving changes.
                let step = i64::try_from(every.as_secs()).ok()?;
                let at = NaiveTime::from_hms_opt(u32::from(at.0), u32::from(at.1), 0)?;
                let local_now = now.with_timezone(tz).naive_local();
                let after = |naive: NaiveDateTime| local_instant(tz, naive).filter(|t| *t > now);
                if step > DAY_SECS {
                    let origin = NaiveDate::from_ymd_opt(1970, 1, 1)?.and_time(at);
                    let periods = (local_now - origin).num_seconds().div_euclid(step);
                    // The local clock is at most hours away from the steps counted here.
                    return (periods - 1..=periods + 2)
                        .filter_map(|n| {
                            origin.checked_add_signed(TimeDelta::try_seconds(n.checked_mul(step)?)?)
                        })
                        .find_map(after);
                }
                // Each day's sequence starts at `at` and runs until the next day's `at`; the
                // previous day's may reach past midnight.
                let today = local_now.date();
                [today.pred_opt()?, today, today.succ_opt()?]
                    .into_iter()
                    .filter_map(|day| {
                        let start = day.and_time(at);
                        (0..)
                            .map(|n| n * step)
                            .take_while(|offset| *offset < DAY_SECS)
                            .filter_map(|offset| {
                                start.checked_add_signed(TimeDelta::try_seconds(offset)?)
                            })
                            .find_map(after)
                    })
                    .min()
            }
        }
    }

    /// The plan in words, for logs.
    pub fn describe(&self) -> String {
        match self {
            Plan::Interval { every, at, tz } => format!(
                "every {} from {:02}:{:02} {tz}",
                humanize(*every),
                at.0,
                at.1
            ),
            Plan::Cron { text, tz, .. } => format!("cron `{text}` {tz}"),
        }
    }
}

fn humanize(every: Duration) -> String {
    let secs = every.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

const DAY_SECS: i64 = 86_400;

/// The local time `naive` in `tz`, as an instant: the earlier one when the clock goes back (so
/// a time that occurs twice runs once), a time just after the gap when it jumps forward.
fn local_instant(tz: &Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => (1..=4)
            .map(|hours| naive + chrono::Duration::minutes(30 * hours))
            .find_map(|later| tz.from_local_datetime(&later).earliest())
            .map(|t| t.with_timezone(&Utc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn schedule(
        every: Option<&str>,
        at_: Option<&str>,
        tz: Option<&str>,
        cron: Option<&str>,
    ) -> ScheduleConfig {
        ScheduleConfig {
            every: every.map(Into::into),
            at: at_.map(Into::into),
            timezone: tz.map(Into::into),
            cron: cron.map(Into::into),
        }
    }

    fn plan(every: Option<&str>, at_: Option<&str>, tz: Option<&str>, cron: Option<&str>) -> Plan {
        Plan::from_config(&schedule(every, at_, tz, cron)).unwrap()
    }

    /// Asserts the runs `plan` starts after `from`, as many as `expected` lists.
    #[track_caller]
    fn assert_starts(plan: &Plan, from: &str, expected: &[&str]) {
        assert_eq!(starts(plan, from, expected.len()), expected, "after {from}");
    }

    fn starts(plan: &Plan, from: &str, n: usize) -> Vec<String> {
        let mut now = at(from);
        (0..n)
            .map(|_| {
                now = plan.next_after(now).unwrap();
                now.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn the_default_is_daily_at_two_utc() {
        let plan = plan(None, None, None, None);
        assert_starts(
            &plan,
            "2025-03-01T01:00:00Z",
            &["2025-03-01T02:00:00+00:00", "2025-03-02T02:00:00+00:00"],
        );
        assert_starts(
            &plan,
            "2025-03-01T02:00:00Z",
            &["2025-03-02T02:00:00+00:00"],
        );
    }

    #[test]
    fn every_six_hours_from_a_time_of_day() {
        let plan = plan(Some("6h"), Some("02:00"), None, None);
        assert_starts(
            &plan,
            "2025-03-01T00:30:00Z",
            &[
                "2025-03-01T02:00:00+00:00",
                "2025-03-01T08:00:00+00:00",
                "2025-03-01T14:00:00+00:00",
                "2025-03-01T20:00:00+00:00",
                "2025-03-02T02:00:00+00:00",
            ],
        );
        // Without `at`, intervals count from midnight.
        let plan = Plan::from_config(&schedule(Some("7h"), None, None, None)).unwrap();
        assert_starts(
            &plan,
            "2025-03-01T22:00:00Z",
            &["2025-03-02T00:00:00+00:00", "2025-03-02T07:00:00+00:00"],
        );
    }

    #[test]
    fn a_time_of_day_follows_the_time_zone_across_daylight_saving() {
        let plan = plan(None, Some("02:30"), Some("Europe/London"), None);
        // 30 March 2025: clocks go from 01:00 to 02:00 GMT, so 02:30 BST is 01:30 UTC.
        assert_starts(
            &plan,
            "2025-03-29T12:00:00Z",
            &["2025-03-30T01:30:00+00:00", "2025-03-31T01:30:00+00:00"],
        );
        assert_starts(
            &plan,
            "2025-01-10T12:00:00Z",
            &["2025-01-11T02:30:00+00:00"],
        );
    }

    #[test]
    fn a_time_of_day_runs_once_on_the_day_the_clocks_go_back() {
        // 26 October 2025: clocks go from 02:00 BST back to 01:00 GMT, a 25-hour day.
        let daily = plan(None, Some("02:30"), Some("Europe/London"), None);
        assert_starts(
            &daily,
            "2025-10-25T12:00:00Z",
            &["2025-10-26T02:30:00+00:00", "2025-10-27T02:30:00+00:00"],
        );
        // 01:30 comes twice that night: the run is at the first.
        let twice = plan(None, Some("01:30"), Some("Europe/London"), None);
        assert_starts(
            &twice,
            "2025-10-25T12:00:00Z",
            &["2025-10-26T00:30:00+00:00", "2025-10-27T01:30:00+00:00"],
        );
    }

    #[test]
    fn intervals_keep_their_local_times_across_daylight_saving() {
        let plan = plan(Some("6h"), Some("02:00"), Some("Europe/London"), None);
        assert_starts(
            &plan,
            "2025-10-25T22:00:00Z",
            &[
                // 02:00, 08:00, 14:00, 20:00 GMT after the change, none extra.
                "2025-10-26T02:00:00+00:00",
                "2025-10-26T08:00:00+00:00",
                "2025-10-26T14:00:00+00:00",
                "2025-10-26T20:00:00+00:00",
                "2025-10-27T02:00:00+00:00",
            ],
        );
    }

    #[test]
    fn intervals_over_a_day_keep_their_local_time_in_winter_and_summer() {
        let plan = plan(Some("2d"), Some("03:00"), Some("Europe/London"), None);
        // 03:00 GMT in winter, 03:00 BST in summer.
        for (from, utc_time) in [
            ("2025-01-10T12:00:00Z", "T03:00:00+00:00"),
            ("2025-07-10T12:00:00Z", "T02:00:00+00:00"),
        ] {
            for start in starts(&plan, from, 3) {
                assert!(start.ends_with(utc_time), "{start} after {from}");
            }
        }
        // Across the change the local gap stays two days: 49 hours of elapsed time.
        let got = starts(&plan, "2025-10-24T12:00:00Z", 3);
        let gaps: Vec<_> = got.windows(2).map(|w| at(&w[1]) - at(&w[0])).collect();
        assert!(gaps.contains(&chrono::Duration::hours(49)), "{got:?}");
    }

    #[test]
    fn cron_expressions_run_in_their_time_zone() {
        let plan = plan(
            None,
            None,
            Some("America/New_York"),
            Some("0 6 * * MON-FRI"),
        );
        // Friday 7 March 2025, 12:00 UTC = 07:00 in New York: next is Monday 06:00 EDT.
        assert_starts(
            &plan,
            "2025-03-07T12:00:00Z",
            &["2025-03-10T10:00:00+00:00"],
        );
    }

    #[test]
    fn long_intervals_count_from_the_epoch() {
        let plan = plan(Some("2d"), Some("03:00"), None, None);
        let got = starts(&plan, "2025-03-01T00:00:00Z", 2);
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with("T03:00:00+00:00"));
        let gap = at(&got[1]) - at(&got[0]);
        assert_eq!(gap, chrono::Duration::days(2));
    }

    #[test]
    fn a_cron_expression_that_never_matches_is_refused() {
        let err = Plan::from_config(&schedule(None, None, None, Some("0 2 30 2 *"))).unwrap_err();
        assert_eq!(err.key, "cron");
        assert!(err.message.contains("never matches"), "{err}");
        // 29 February comes round.
        assert!(Plan::from_config(&schedule(None, None, None, Some("0 2 29 2 *"))).is_ok());
    }

    #[test]
    fn bad_schedules_name_their_key() {
        let bad = [
            (schedule(None, None, Some("Mars/Olympus"), None), "timezone"),
            (schedule(None, None, None, Some("61 * * * *")), "cron"),
            (schedule(Some("soon"), None, None, None), "every"),
            (schedule(Some("10s"), None, None, None), "every"),
            (schedule(Some("367d"), None, None, None), "every"),
            (schedule(Some("8000000000w"), None, None, None), "every"),
            (schedule(None, Some("25:00"), None, None), "at"),
            (schedule(Some("1h"), None, None, Some("0 2 * * *")), "cron"),
        ];
        for (config, key) in bad {
            let err = Plan::from_config(&config).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
