//! The scheduler loop: it waits on tokio's clock for the next start of an integration's
//! [`Plan`] and sends a tick.
//!
//! The plan lives in `peoplesync_core::plan` (pure, `next_after(now)`, shared with config
//! validation); the loop reads wall-clock time through a [`Clock`], so tests drive it with
//! `tokio::time::pause()` and a clock that advances with tokio's.
//!
//! The loop only looks forward; a start that fell while no replica scheduled the integration
//! (a restart, a lease handover) is found by [`missed_start`] when a replica takes the lease.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
pub use peoplesync_core::plan::{Plan, ScheduleError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The longest the loop sleeps before looking at the clock again, so a wall-clock step (NTP,
/// a suspended VM) delays a run by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(600);

/// How late a missed scheduled start may still be made up for.
pub const CATCH_UP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The scheduled start a replica that just took the lease makes up for: the latest start of
/// `plan` after `last_fired` (the start fired last) and at or before `now`, if it is less than
/// [`CATCH_UP_WINDOW`] old. Only the latest counts, so however many starts were missed, one run
/// makes up for them. With nothing fired yet (`None`) there is nothing to make up for: a new
/// integration waits for its first start.
pub fn missed_start(
    plan: &Plan,
    last_fired: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let floor = last_fired?.max(now - CATCH_UP_WINDOW);
    // Look back from `now` a doubling span at a time, so a frequent schedule costs a few steps
    // and a daily one no more than a dozen.
    let mut back = chrono::TimeDelta::minutes(1);
    loop {
        let from = (now - back).max(floor);
        if let Some(mut start) = plan.next_after(from).filter(|start| *start <= now) {
            while let Some(next) = plan.next_after(start).filter(|next| *next <= now) {
                start = next;
            }
            return Some(start);
        }
        if from == floor {
            return None;
        }
        back = back * 2;
    }
}

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that starts at a given instant and advances with tokio's clock, so that a test
/// under `tokio::time::pause()` moves both together.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        self.start + elapsed
    }
}

/// Sends a tick (the planned start time) whenever the current plan says a run is due, until
/// `stop`. A new plan on `plans` applies at once. A tick that finds the previous one still
/// unhandled is dropped: runs never queue up behind each other.
pub async fn run_scheduler(
    mut plans: watch::Receiver<Plan>,
    clock: Arc<dyn Clock>,
    ticks: mpsc::Sender<DateTime<Utc>>,
    stop: CancellationToken,
) {
    loop {
        let plan = plans.borrow_and_update().clone();
        let now = clock.now();
        let Some(next) = plan.next_after(now) else {
            tracing::warn!(plan = %plan.describe(), "the schedule has no next run; waiting for a new one");
            tokio::select! {
                () = stop.cancelled() => return,
                changed = plans.changed() => if changed.is_err() { return } else { continue },
            }
        };
        tracing::debug!(plan = %plan.describe(), %next, "next scheduled run");
        let wait = next
            .signed_duration_since(now)
            .to_std()
            .unwrap_or_default()
            .min(MAX_SLEEP);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = plans.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!(plan = %plans.borrow().describe(), "schedule changed");
            }
            () = tokio::time::sleep(wait) => {
                if clock.now() >= next && ticks.try_send(next).is_err() {
                    tracing::info!(%next, "scheduled run skipped: the previous one has not started yet");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use peoplesync_core::ScheduleConfig;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn every(every: &str) -> Plan {
        Plan::from_config(&ScheduleConfig {
            every: Some(every.into()),
            ..ScheduleConfig::default()
        })
        .expect("a plan")
    }

    #[test]
    fn the_latest_start_missed_since_the_last_one_fired_is_made_up_for() {
        let daily = Plan::default();
        let yesterday = Some(at("2025-06-01T02:00:00Z"));
        // A restart across 02:00, and a standby taking over just after it.
        for now in [
            "2025-06-02T02:00:00Z",
            "2025-06-02T02:00:08Z",
            "2025-06-02T13:00:00Z",
        ] {
            assert_eq!(
                missed_start(&daily, yesterday, at(now)),
                Some(at("2025-06-02T02:00:00Z")),
                "{now}"
            );
        }
        // Several starts missed: only the latest is made up for.
        let hourly = every("1h");
        assert_eq!(
            missed_start(&hourly, yesterday, at("2025-06-01T07:30:00Z")),
            Some(at("2025-06-01T07:00:00Z"))
        );
    }

    #[test]
    fn nothing_is_made_up_for_when_the_last_start_fired_or_is_too_old_or_unknown() {
        let daily = Plan::default();
        let fired = Some(at("2025-06-02T02:00:00Z"));
        assert_eq!(
            missed_start(&daily, fired, at("2025-06-02T01:59:59Z")),
            None
        );
        assert_eq!(
            missed_start(&daily, fired, at("2025-06-02T09:00:00Z")),
            None
        );
        // Down for more than a day: the next start comes soon enough.
        let weekly = every("1w");
        assert_eq!(
            missed_start(
                &weekly,
                Some(at("2025-05-01T00:00:00Z")),
                at("2025-06-07T00:00:00Z")
            ),
            None
        );
        assert_eq!(missed_start(&daily, None, at("2025-06-02T03:00:00Z")), None);
    }

    #[test]
    fn the_plan_is_the_one_config_validation_uses() {
        let plan = Plan::from_config(&ScheduleConfig::default()).expect("the default plan");
        assert_eq!(plan.describe(), "every 1d from 02:00 UTC");
    }
}
