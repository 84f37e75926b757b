//! The long-running extractor: for every integration it serves, a claim on the scheduler lease,
//! the command responders, and — while it holds the lease — the scheduler and the full runs.
//! Several replicas may run side by side; exactly one schedules each integration, and a standby
//! takes over within about one lease TTL when it dies, resuming its interrupted run and making
//! up for a scheduled start that fell while nobody scheduled the integration.
//!
//! `--once` ([`Service::run_once`]) takes the same lease under a holder name of its own
//! (`<replica>-once-<pid>`), runs one full sync of each integration and gives the lease back.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use peoplesync_bus::lease::ScheduleMark;
use peoplesync_bus::{Bus, BusError, ConfigChange, RunState};
use peoplesync_runtime::Readiness;
use peoplesync_runtime::metrics::names as metric;
use peoplesync_runtime::restart::{RestartDelays, keep_running};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::commands;
use crate::config::{ExtractorConfig, SecretSource};
use crate::error::{RunError, Stop};
use crate::retry::Retrier;
use crate::run::{Extraction, RunOptions, RunSummary};
use crate::runner::Runner;
use crate::schedule::{self, Clock, Plan, SystemClock};
use crate::settings::{self, Sources};

/// Why the service, or a `--once` sync, could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Another extractor holds the integration's scheduler lease.
    #[error(
        "another extractor ({holder}) schedules {integration} and holds its lease; trigger a run through it (syncctl) or stop it first"
    )]
    LeaseBusy {
        /// The integration.
        integration: String,
        /// Who holds the lease.
        holder: String,
    },
    /// The run failed or stopped early.
    #[error(transparent)]
    Run(#[from] RunError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A part the replica cannot serve without ended, and the replica stopped itself.
    #[error("{0}; the replica stopped itself")]
    Stopped(String),
}

/// The extractor service: every integration it serves, ready to run.
pub struct Service {
    config: Arc<ExtractorConfig>,
    bus: Bus,
    replica: String,
    runners: Vec<Arc<Runner>>,
    clock: Arc<dyn Clock>,
    runs_stop: CancellationToken,
    readiness: Option<Readiness>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("replica", &self.replica)
            .field("integrations", &self.config.integrations)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The service for `config`'s integrations on `bus`, with credential secrets from `secrets`.
    pub async fn build(
        config: ExtractorConfig,
        bus: Bus,
        secrets: SecretSource,
    ) -> Result<Service, ServiceError> {
        bus.seen().ensure().await?;
        let config = Arc::new(config);
        let sources = Arc::new(Sources::new(config.clone(), secrets));
        let options = RunOptions {
            publish_window: config.publish_window,
            quota_share: config.quota_share,
            removals: config.removals,
        };
        let runs_stop = CancellationToken::new();
        let runners = config
            .integrations
            .iter()
            .map(|integration| {
                let extraction =
                    Extraction::new(bus.clone(), integration, sources.clone(), options.clone());
                Arc::new(Runner::new(extraction, runs_stop.clone()))
            })
            .collect();
        Ok(Service {
            replica: config.replica_name(),
            config,
            bus,
            runners,
            clock: Arc::new(SystemClock),
            runs_stop,
            readiness: None,
        })
    }

    /// Notes what keeps a run from going (a stopped run waiting for its retry) on `readiness`.
    pub fn with_readiness(mut self, readiness: Readiness) -> Service {
        self.readiness = Some(readiness);
        self
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The runner of `integration`, if this service serves it.
    pub fn runner(&self, integration: &str) -> Option<&Arc<Runner>> {
        self.runners
            .iter()
            .find(|r| r.extraction().integration() == integration)
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.lease_ttl_secs)
    }

    /// One full sync of every integration, one after the other, each under its scheduler lease.
    /// `stop` (SIGTERM) ends the run in progress between two pages, keeping its checkpoint,
    /// gives its lease back at once and leaves the integrations after it unsynced; each of
    /// those reports [`Stop::Interrupted`]. A sync that failed while NATS is gone leaves the
    /// integrations after it unsynced for as long as NATS stays away (each would wait on NATS
    /// in turn): they report the NATS failure, without a run.
    pub async fn run_once(
        &self,
        stop: &CancellationToken,
    ) -> Vec<(String, Result<RunSummary, ServiceError>)> {
        let mut outcomes = Vec::new();
        let mut nats_lost: Option<String> = None;
        for runner in &self.runners {
            let integration = runner.extraction().integration().to_owned();
            let outcome = if stop.is_cancelled() {
                Err(ServiceError::Run(RunError::new(
                    &integration,
                    None,
                    Stop::Interrupted,
                )))
            } else if let Some(during) = &nats_lost
                && self.bus.connected().is_err()
            {
                Err(ServiceError::Run(RunError::new(
                    &integration,
                    None,
                    Stop::Bus(BusError::request(
                        format!("starting a run of {integration}"),
                        format!("not tried: NATS stopped answering during the sync of {during}"),
                    )),
                )))
            } else {
                self.once(runner, stop).await
            };
            if nats_lost.is_none() && outcome.is_err() && self.bus.connected().is_err() {
                nats_lost = Some(integration.clone());
            }
            outcomes.push((integration, outcome));
        }
        outcomes
    }

    async fn once(
        &self,
        runner: &Arc<Runner>,
        stop: &CancellationToken,
    ) -> Result<RunSummary, ServiceError> {
        let integration = runner.extraction().integration().to_owned();
        let (leader_tx, mut leader) = watch::channel(false);
        let lease_stop = CancellationToken::new();
        // A name of its own: run in a service's pod (`kubectl exec`), `--once` inherits the
        // service's replica name, and under that name it would take the service's lease as its
        // own at once; the two would then fence each other's runs.
        let holder = format!("{}-once-{}", self.replica, std::process::id());
        let lease = self.bus.lease(&integration, &holder, self.ttl());
        let lease_task = tokio::spawn(lease.run(leader_tx, lease_stop.clone()));
        // A lease left by a crashed extractor expires after its TTL; one renewed by a live one
        // does not, and then this sync must not run beside it.
        let wait = self.ttl() * 2 + Duration::from_secs(2);
        let elected = tokio::select! {
            elected = tokio::time::timeout(wait, leader.wait_for(|held| *held)) => {
                Some(matches!(elected.map(|held| held.is_ok()), Ok(true)))
            }
            () = stop.cancelled() => None,
        };
        let interrupted = || {
            Err(ServiceError::Run(RunError::new(
                &integration,
                None,
                Stop::Interrupted,
            )))
        };
        let outcome = match elected {
            None => interrupted(),
            Some(true) => {
                // Preparing may read Sage People (the sync-key baseline); a stop then leaves
                // what a crash at that point would, which the next run resumes.
                let started = tokio::select! {
                    started = runner.start("once") => Some(started),
                    () = stop.cancelled() => None,
                };
                match started {
                    None => interrupted(),
                    Some(Err(err)) => Err(err.into()),
                    Some(Ok(started)) => {
                        // The run is only asked to stop: waiting on goes on, so its own result
                        // (finished, failed, or interrupted with its id) is the one reported.
                        let ended = runner.wait();
                        tokio::pin!(ended);
                        tokio::select! {
                            result = &mut ended => result,
                            () = lost(&mut leader) => {
                                // NATS stopped answering for over half the lease's TTL: a standby
                                // may take the integration over, so the run stops. Between
                                // two pages if it gets there; a page whose publishing waits
                                // on NATS is not waited for past the grace period (the run
                                // resumes from its last recorded checkpoint, as after a crash).
                                runner.cancel().await;
                                let grace = Duration::from_secs(self.config.shutdown_grace_secs);
                                match tokio::time::timeout(grace, &mut ended).await {
                                    Ok(result) => result,
                                    Err(_) => Some(Err(RunError::new(
                                        &integration,
                                        Some(&started.run_id),
                                        Stop::Bus(BusError::request(
                                            "keeping the scheduler lease",
                                            format!(
                                                "NATS stopped answering, so the lease could not be renewed, and the page in progress was still unacknowledged {} s later (shutdown_grace_secs)",
                                                grace.as_secs()
                                            ),
                                        )),
                                    ))),
                                }
                            }
                            () = stop.cancelled() => {
                                tracing::info!(integration, "stopping the run between two pages; its checkpoint is kept");
                                runner.cancel().await;
                                ended.await
                            }
                        }
                        .map_or_else(interrupted, |result| result.map_err(ServiceError::from))
                    }
                }
            }
            // Not elected because NATS does not answer: not another extractor's doing.
            Some(false) if self.bus.connected().is_err() => Err(ServiceError::Run(RunError::new(
                &integration,
                None,
                Stop::Bus(BusError::request(
                    format!("taking the scheduler lease of {integration}"),
                    "NATS is not connected",
                )),
            ))),
            Some(false) => Err(ServiceError::LeaseBusy {
                holder: self.lease_holder(&integration).await,
                integration: integration.clone(),
            }),
        };
        lease_stop.cancel();
        // The release is bounded by the lease itself; the task is not waited for longer in
        // case NATS holds it elsewhere.
        let _ = tokio::time::timeout(self.ttl(), lease_task).await;
        outcome
    }

    /// Who holds the lease of `integration`, as far as NATS answers within a quarter of the
    /// TTL (a request can otherwise wait without end while NATS is gone).
    async fn lease_holder(&self, integration: &str) -> String {
        match tokio::time::timeout(self.ttl() / 4, self.bus.lease_holder(integration)).await {
            Ok(Ok(Some(value))) => value.holder,
            _ => "unknown".into(),
        }
    }

    /// Serves every integration until `shutdown`; then stops runs between pages (keeping their
    /// checkpoints), gives the leases back and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let mut tasks = Vec::new();
        for runner in &self.runners {
            tasks.push(tokio::spawn(serve_integration(
                runner.clone(),
                self.bus.clone(),
                self.replica.clone(),
                self.ttl(),
                self.clock.clone(),
                Retrier::new(
                    self.config.run_retry,
                    runner.extraction().integration(),
                    self.readiness.clone(),
                ),
                shutdown.clone(),
            )));
        }
        tracing::info!(replica = %self.replica, integrations = ?self.config.integrations, "sage-extractor serving");
        shutdown.cancelled().await;
        self.runs_stop.cancel();
        let mut failure = None;
        for task in tasks {
            match task.await {
                Ok(Some(reason)) => {
                    failure.get_or_insert(reason);
                }
                Ok(None) => {}
                Err(err) => {
                    failure.get_or_insert(format!("serving an integration failed: {err}"));
                }
            }
        }
        tracing::info!(replica = %self.replica, "sage-extractor stopped");
        match failure {
            Some(reason) => Err(ServiceError::Stopped(reason)),
            None => Ok(()),
        }
    }
}

/// Returns once the lease `leader` reports is no longer held (or its task is gone). The
/// watch's value is read and let go at once: a reference to it kept across an await would
/// block the lease task's next report, and with it the thread that runs it.
async fn lost(leader: &mut watch::Receiver<bool>) {
    let _ = leader.wait_for(|held| !*held).await;
}

/// Everything this replica does for one integration, until `stop`; why it stopped the replica,
/// if it did.
async fn serve_integration(
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
