//! The scheduler loop: it waits on tokio's clock for the next start of an integration's
//! [`Plan`] and sends a tick.
//!
//! The plan lives in `peoplesync_core::plan` (pure, `next_after(now)`, shared with config
//! validation); the loop reads wall-clock time through a [`Clock`], so tests drive it with
//! `tokio::time::pause()` and a clock that advances with tokio's.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
pub use peoplesync_core::plan::{Plan, ScheduleError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The longest the loop sleeps before looking at the clock again, so a wall-clock step (NTP,
/// a suspended VM) delays a run by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(600);

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

    #[test]
    fn the_plan_is_the_one_config_validation_uses() {
        let plan = Plan::from_config(&ScheduleConfig::default()).expect("the default plan");
        assert_eq!(plan.describe(), "every 1d from 02:00 UTC");
    }
}
