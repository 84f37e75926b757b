//! The long-running extractor: for every integration it serves, a claim on the scheduler lease,
//! the command responders, and — while it holds the lease — the scheduler and the full runs.
//! Several replicas may run side by side; exactly one schedules each integration, and a standby
//! takes over within about one lease TTL when it dies, resuming its interrupted run and making
//! up for a scheduled start that fell while nobody scheduled the integration.
//!
//! `--once` ([`Service::run_once`]) takes the same lease under a holder name of its own
//! (`<replica>-once-<pid>`), runs one full sync of each integration and gives the lease back.
//!
//! [`once`] is `--once`; [`lead`] what a replica does for each integration while it serves.

mod lead;
mod once;

use std::sync::Arc;
use std::time::Duration;

use peoplesync_bus::{Bus, BusError};
use peoplesync_runtime::Readiness;
use tokio_util::sync::CancellationToken;

use crate::config::{ExtractorConfig, SecretSource};
use crate::error::RunError;
use crate::retry::Retrier;
use crate::run::{Extraction, RunOptions};
use crate::runner::Runner;
use crate::schedule::{Clock, SystemClock};
use crate::settings::Sources;
use lead::serve_integration;

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
