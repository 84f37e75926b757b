//! Workers who are still listed but have left (employment inactive, or end date passed in the
//! integration's time zone). Their upsert is published only with leaver action `none` (an
//! upsert would otherwise undo the update or recreate the deleted user); it is kept with the
//! run's seen list (`peoplesync_bus::seen::keep`, under
//! `peoplesync.<integration>.seen.<run>.ended.<worker>`), and their id is left out of the list
//! of workers the run saw. So the removal diff of the next settled run finds them like
//! any worker who disappeared — counted by the same accidental-deletion threshold, held and
//! approved together — and [`crate::removals::publish`] sends an `ended` event carrying the
//! worker as last listed instead of a bare `removed` one. A worker who has left is acted on
//! once: the next baseline no longer lists them. One who was never in a baseline (already
//! gone when first listed, or at the integration's first run) is not acted on.
//!
//! "Today" is the wall clock's date in the integration's time zone. For tests only,
//! `PEOPLESYNC_TEST_TODAY_FILE` names a file holding a `YYYY-MM-DD` date read at each run
//! instead; a run that uses it says so in a warning.

use chrono::NaiveDate;
use chrono_tz::Tz;

/// How a run judges end dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndDates {
    /// The date end dates are compared with.
    pub today: NaiveDate,
    /// Publish leavers' upserts as well (leaver action `none`: their last data is written as
    /// before leavers existed; with `update` or `delete` an upsert would undo the action).
    pub upsert_leavers: bool,
}

impl EndDates {
    /// How a run of an integration with `settings` judges end dates now.
    pub fn of(integration: &str, settings: &crate::settings::IntegrationSettings) -> EndDates {
        EndDates {
            today: today(integration, settings.time_zone),
            upsert_leavers: settings.leaver_action == peoplesync_core::LeaverAction::None,
        }
    }

    /// Whether `worker` has left (employment inactive, or end date before [`EndDates::today`]):
    /// the rule for a worker a run lists, and for one it no longer lists but Sage People
    /// still has (see [`crate::removals`]).
    pub fn has_left(&self, worker: &peoplesync_core::Worker) -> bool {
        peoplesync_core::leavers::ended(worker, self.today).is_some()
    }
}

/// The test-only override of today's date (a file holding `YYYY-MM-DD`).
pub const TODAY_FILE_ENV: &str = "PEOPLESYNC_TEST_TODAY_FILE";

/// Today's date in `tz`, or the test override (see the module docs).
pub fn today(integration: &str, tz: Tz) -> NaiveDate {
    if let Ok(path) = std::env::var(TODAY_FILE_ENV) {
        match std::fs::read_to_string(&path).map(|text| {
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|e| e.to_string())
        }) {
            Ok(Ok(date)) => {
                tracing::warn!(integration, %date, path,
                    "end dates are judged against the date in {TODAY_FILE_ENV}, a test setting; unset it in production");
                return date;
            }
            Ok(Err(err)) => tracing::warn!(integration, path, error = %err,
                "{TODAY_FILE_ENV} does not hold a YYYY-MM-DD date; using the clock"),
            Err(err) => tracing::warn!(integration, path, error = %err,
                "{TODAY_FILE_ENV} cannot be read; using the clock"),
        }
    }
    peoplesync_core::leavers::today_in(tz, chrono::Utc::now())
}
