//! `--once`: one full sync of each integration under its scheduler lease, taken under a holder
//! name of its own and given back after the sync.

use std::sync::Arc;
use std::time::Duration;

use peoplesync_bus::BusError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Service, ServiceError};
use crate::error::{RunError, Stop};
use crate::run::RunSummary;
use crate::runner::Runner;

impl Service {
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
}

/// Returns once the lease `leader` reports is no longer held (or its task is gone). The
/// watch's value is read and let go at once: a reference to it kept across an await would
/// block the lease task's next report, and with it the thread that runs it.
async fn lost(leader: &mut watch::Receiver<bool>) {
    let _ = leader.wait_for(|held| !*held).await;
}
