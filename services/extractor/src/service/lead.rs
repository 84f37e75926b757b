//! What a serving replica does for one integration: the command responders, a claim on the
//! scheduler lease, and while it holds the lease the scheduler, the catch-up of a missed start
//! and the resumption of an interrupted run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use peoplesync_bus::lease::ScheduleMark;
use peoplesync_bus::{Bus, ConfigChange, RunState};
use peoplesync_runtime::metrics::names as metric;
use peoplesync_runtime::restart::{RestartDelays, keep_running};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::commands;
use crate::retry::Retrier;
use crate::runner::Runner;
use crate::schedule::{self, Clock, Plan};
use crate::settings;

/// Everything this replica does for one integration, until `stop`; why it stopped the replica,
/// if it did.
pub(super) async fn serve_integration(
    runner: Arc<Runner>,
    bus: Bus,
    replica: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    mut retrier: Retrier,
    stop: CancellationToken,
) -> Option<String> {
    let integration = runner.extraction().integration().to_owned();
    let (leader_tx, mut leader) = watch::channel(false);
    let lease_stop = CancellationToken::new();
    let lease = bus.lease(&integration, &replica, ttl);
    let lease_task = tokio::spawn(lease.run(leader_tx, lease_stop.clone()));
    let any = {
        let (client, runner, stop) = (bus.client().clone(), runner.clone(), stop.clone());
        let replica: Arc<str> = Arc::from(replica.as_str());
        tokio::spawn(keep_running(
            format!("command responder of {integration}"),
            stop.clone(),
            RestartDelays::default(),
            move || {
                commands::serve_any(
                    client.clone(),
                    runner.clone(),
                    replica.clone(),
                    stop.clone(),
                )
            },
        ))
    };
    let plans = watch_plans(bus.clone(), &integration, stop.clone()).await;
    let mut failure = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            elected = leader.wait_for(|held| *held) => if elected.is_err() {
                // The lease task is gone (a panic): this replica can no longer take part in
                // scheduling the integration. Say so and stop the replica, so it is restarted.
                tracing::error!(%integration, %replica,
                    "the scheduler lease task ended; stopping this replica");
                failure = Some(format!("the scheduler lease task of {integration} ended"));
                stop.cancel();
                break;
            },
        }
        tracing::info!(%integration, %replica, "scheduling this integration");
        metrics::gauge!(metric::EXTRACTOR_SCHEDULER_LEADER, "integration" => integration.clone())
            .set(1.0);
        lead(
            &runner,
            &bus,
            plans.clone(),
            clock.clone(),
            leader.clone(),
            &mut retrier,
            stop.child_token(),
        )
        .await;
        metrics::gauge!(metric::EXTRACTOR_SCHEDULER_LEADER, "integration" => integration.clone())
            .set(0.0);
        retrier.stand_down();
        runner.interrupt().await;
        if stop.is_cancelled() {
            break;
        }
        tracing::warn!(%integration, %replica, "lost the scheduler lease; standing by");
    }
    runner.interrupt().await;
    lease_stop.cancel();
    let _ = lease_task.await;
    if let Err(err) = any.await {
        tracing::error!(%integration, error = %err, "command responder failed");
    }
    failure
}

/// The lease holder's duties, until it loses the lease or `term`.
async fn lead(
    runner: &Arc<Runner>,
    bus: &Bus,
    plans: watch::Receiver<Plan>,
    clock: Arc<dyn Clock>,
    mut leader: watch::Receiver<bool>,
    retrier: &mut Retrier,
    term: CancellationToken,
) {
    let integration = runner.extraction().integration().to_owned();
    if interrupted_run(bus, &integration).await {
        match runner.start("resume").await {
            Ok(started) => {
                tracing::info!(%integration, run_id = %started.run_id, "resuming the interrupted run")
            }
            Err(err) => tracing::error!(%integration, "{err}"),
        }
    }
    let journal = crate::journal::Journal::new(bus, &integration, false);
    match crate::removals::fail_stopped_release(bus, &journal).await {
        Ok(Some(run_id)) => tracing::warn!(%integration, %run_id,
            "an approval of held removals was stopped part-way; its run is recorded failed until they are approved again"),
        Ok(None) => {}
        Err(err) => tracing::warn!(%integration, error = %err,
            "cannot check for an approval stopped part-way"),
    }
    let plan = plans.borrow().clone();
    catch_up(runner, bus, &plan, clock.now()).await;
    let (ticks_tx, mut ticks) = mpsc::channel(1);
    let scheduler = tokio::spawn(schedule::run_scheduler(
        plans,
        clock,
        ticks_tx,
        term.clone(),
    ));
    let commands = {
        let (client, runner, leader, term) = (
            bus.client().clone(),
            runner.clone(),
            leader.clone(),
            term.clone(),
        );
        tokio::spawn(keep_running(
            format!("leader command responder of {integration}"),
            term.clone(),
            RestartDelays::default(),
            move || {
                commands::serve_leader(client.clone(), runner.clone(), leader.clone(), term.clone())
            },
        ))
    };
    let mut retry_poll = tokio::time::interval(crate::retry::POLL);
    retry_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = term.cancelled() => break,
            _ = retry_poll.tick() => retrier.step(runner, bus).await,
            changed = leader.changed() => {
                if changed.is_err() || !*leader.borrow_and_update() {
                    break;
                }
            }
            tick = ticks.recv() => {
                let Some(at) = tick else { break };
                fire(runner, bus, at, false).await;
            }
        }
    }
    term.cancel();
    let _ = scheduler.await;
    if let Err(err) = commands.await {
        tracing::error!(%integration, error = %err, "leader command responder failed");
    }
}

/// Starts the run of the scheduled start `at` (`catching_up` when it was missed), and records
/// that it fired. The run starts first: should the record then fail, the run's own record
/// tells the next lease holder that the start was not missed.
async fn fire(runner: &Runner, bus: &Bus, at: DateTime<Utc>, catching_up: bool) {
    let integration = runner.extraction().integration();
    let kind = if catching_up {
        "scheduled run missed while no replica scheduled the integration (restart or lease handover)"
    } else {
        "scheduled run"
    };
    match runner.start("schedule").await {
        Ok(started) if started.already_running => tracing::info!(integration, %at,
            run_id = %started.run_id, "{kind} skipped: the previous run is still going"),
        Ok(started) if catching_up => tracing::warn!(integration, missed = %at,
            run_id = %started.run_id, "{kind} started now, to catch up"),
        Ok(started) => tracing::info!(integration, %at, run_id = %started.run_id, "{kind} started"),
        Err(err) => tracing::error!(integration, "{err}"),
    }
    if let Err(err) = bus
        .record_scheduled(integration, &ScheduleMark { planned: at })
        .await
    {
        tracing::warn!(integration, %at, error = %err,
            "cannot record that the scheduled run started; the run's own record stands for it");
    }
}

/// On taking the lease: starts one run for the latest scheduled start that fell while no replica
/// scheduled the integration ([`schedule::missed_start`]), unless a full run started after it.
async fn catch_up(runner: &Runner, bus: &Bus, plan: &Plan, now: DateTime<Utc>) {
    let integration = runner.extraction().integration();
    let last_fired = match bus.last_scheduled(integration).await {
        Ok(mark) => mark.map(|mark| mark.planned),
        Err(err) => {
            tracing::warn!(integration, error = %err,
                "cannot read which scheduled run started last, so a run missed during a restart or lease handover is not made up for");
            return;
        }
    };
    let Some(missed) = schedule::missed_start(plan, last_fired, now) else {
        return;
    };
    match bus.runs().list(Some(integration)).await {
        Ok(records) => {
            let latest = records
                .iter()
                .find(|record| record.full)
                .and_then(|record| {
                    DateTime::parse_from_rfc3339(&record.started_at)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                });
            if latest.is_some_and(|started| started >= missed) {
                return;
            }
        }
        Err(err) => {
            tracing::warn!(integration, %missed, error = %err,
                "cannot read the run records, so the scheduled run missed during a restart or lease handover is not made up for");
            return;
        }
    }
    fire(runner, bus, missed, true).await;
}

/// Whether the integration has a run that was interrupted mid-listing (not one stopped by the
/// quota, which waits for the next scheduled or manual run).
async fn interrupted_run(bus: &Bus, integration: &str) -> bool {
    crate::retry::resumable_run(bus, integration)
        .await
        .is_some_and(|run| run.state == RunState::Running)
}

/// The integration's schedule, kept current from its config in KV.
async fn watch_plans(
    bus: Bus,
    integration: &str,
    stop: CancellationToken,
) -> watch::Receiver<Plan> {
    let plan_of =
        |settings: &settings::IntegrationSettings| match Plan::from_config(&settings.schedule) {
            Ok(plan) => Some(plan),
            Err(err) => {
                tracing::error!(
                    integration,
                    "the integration's schedule cannot be used ({err}); keeping the previous one"
                );
                None
            }
        };
    let initial = match settings::load(&bus, integration).await {
        Ok(settings) => plan_of(&settings).unwrap_or_default(),
        Err(err) => {
            tracing::error!(
                integration,
                "{err}; scheduling daily at 02:00 UTC until it is fixed"
            );
            Plan::default()
        }
    };
    tracing::info!(integration, plan = %initial.describe(), "schedule");
    let (tx, rx) = watch::channel(initial);
    let integration = integration.to_owned();
    let configs = bus.configs();
    tokio::spawn(async move {
        loop {
            let watch = tokio::select! {
                () = stop.cancelled() => return,
                // With history: the current config first, so nothing changed since the initial
                // load (or during a re-watch) is missed.
                watch = configs.watch(Some(&integration)) => watch,
            };
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(err) => {
                    tracing::warn!(%integration, error = %err, "cannot watch the integration config; retrying in 5 s");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            loop {
                let entry = tokio::select! {
                    () = stop.cancelled() => return,
                    entry = watch.next() => entry,
                };
                let change = match entry {
                    Some(Ok(change)) => change,
                    Some(Err(err)) => {
                        tracing::warn!(%integration, error = %err, "the schedule's config watch failed; watching again");
                        break;
                    }
                    None => {
                        tracing::warn!(%integration, "the schedule's config watch ended; watching again");
                        break;
                    }
                };
                let plan = match change {
                    ConfigChange::Stored(stored) => {
                        match settings::parse(&integration, &stored.text) {
                            Ok(settings) => match Plan::from_config(&settings.schedule) {
                                Ok(plan) => Some(plan),
                                Err(err) => {
                                    tracing::error!(%integration, "the new schedule cannot be used ({err}); keeping the previous one");
                                    None
                                }
                            },
                            Err(err) => {
                                tracing::error!(%integration, "{err}; keeping the previous schedule");
                                None
                            }
                        }
                    }
                    ConfigChange::Removed { .. } => Some(Plan::default()),
                };
                if let Some(plan) = plan {
                    let _ = tx.send(plan);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    rx
}
