//! The scheduler on tokio's paused clock: runs start at the planned times, a new schedule
//! applies at once, and ticks never pile up.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use peoplesync_core::ScheduleConfig;
use peoplesync_extractor::schedule::{Plan, TokioClock, run_scheduler};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn plan(every: Option<&str>, at_: Option<&str>, cron: Option<&str>) -> Plan {
    Plan::from_config(&ScheduleConfig {
        every: every.map(Into::into),
        at: at_.map(Into::into),
        timezone: None,
        cron: cron.map(Into::into),
    })
    .unwrap()
}

struct Scheduler {
    plans: watch::Sender<Plan>,
    ticks: mpsc::Receiver<DateTime<Utc>>,
    clock: TokioClock,
    stop: CancellationToken,
}

fn start(first: Plan, now: &str) -> Scheduler {
    let clock = TokioClock::starting_at(at(now));
    let (plans, rx) = watch::channel(first);
    let (tx, ticks) = mpsc::channel(1);
    let stop = CancellationToken::new();
    tokio::spawn(run_scheduler(rx, Arc::new(clock), tx, stop.clone()));
    Scheduler {
        plans,
        ticks,
        clock,
        stop,
    }
}

impl Scheduler {
    /// The next tick, and the clock's time when it came.
    async fn next(&mut self) -> (String, String) {
        let tick = self.ticks.recv().await.unwrap();
        use peoplesync_extractor::schedule::Clock;
        (tick.to_rfc3339(), self.clock.now().to_rfc3339())
    }
}

#[tokio::test(start_paused = true)]
async fn by_default_runs_start_daily_at_two_utc() {
    let mut scheduler = start(Plan::default(), "2025-06-01T12:00:00Z");
    assert_eq!(scheduler.next().await.0, "2025-06-02T02:00:00+00:00");
    assert_eq!(scheduler.next().await.0, "2025-06-03T02:00:00+00:00");
    scheduler.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn runs_start_every_interval_from_the_time_of_day_and_not_before() {
    let mut scheduler = start(
        plan(Some("6h"), Some("02:00"), None),
        "2025-06-01T00:00:00Z",
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        let (tick, now) = scheduler.next().await;
        assert!(now >= tick, "fired early: {now} < {tick}");
        got.push(tick);
    }
    assert_eq!(
        got,
        [
            "2025-06-01T02:00:00+00:00",
            "2025-06-01T08:00:00+00:00",
            "2025-06-01T14:00:00+00:00",
            "2025-06-01T20:00:00+00:00",
            "2025-06-02T02:00:00+00:00",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_schedule_applies_without_a_restart() {
    let mut scheduler = start(Plan::default(), "2025-06-01T00:00:00Z");
    tokio::time::sleep(Duration::from_secs(60)).await;
    scheduler
        .plans
        .send(plan(None, None, Some("*/15 * * * *")))
        .unwrap();
    assert_eq!(scheduler.next().await.0, "2025-06-01T00:15:00+00:00");
    assert_eq!(scheduler.next().await.0, "2025-06-01T00:30:00+00:00");
}

#[tokio::test(start_paused = true)]
async fn ticks_do_not_pile_up_while_a_run_has_not_started() {
    let mut scheduler = start(plan(None, None, Some("* * * * *")), "2025-06-01T00:00:30Z");
    // Nobody takes ticks for ten minutes: one waits, the others are dropped.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(scheduler.next().await.0, "2025-06-01T00:01:00+00:00");
    let (tick, now) = scheduler.next().await;
    assert!(
        tick.as_str() > "2025-06-01T00:10:00+00:00",
        "{tick} at {now}"
    );
}
