//! One full run at a time per integration: a trigger (schedule, command, start-up resume)
//! during a run gets "already running" with the run's id instead of a second run.

use std::sync::Arc;

use peoplesync_bus::control::RunStarted;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::RunError;
use crate::run::{Extraction, RunSummary};

#[derive(Debug)]
struct Current {
    run_id: String,
    cancel: CancellationToken,
    handle: Option<JoinHandle<Result<RunSummary, RunError>>>,
}

/// How a run stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error, as the run record has it.
    pub message: String,
    /// Only an operator can clear it ([`crate::error::Stop::awaits_operator`]): resuming the
    /// run unchanged fails the same way.
    pub awaits_operator: bool,
}

/// Starts full runs of one integration, never two at once.
#[derive(Debug)]
pub struct Runner {
    extraction: Extraction,
    current: Mutex<Option<Current>>,
    stop: CancellationToken,
    /// The run that last stopped with an error, and how.
    last_failure: Arc<std::sync::Mutex<Option<(String, Failure)>>>,
    /// Runs started (past their preparation) by this runner.
    started: std::sync::atomic::AtomicU64,
}

impl Runner {
    /// Runs of `extraction`; every run stops between pages when `stop` fires.
    pub fn new(extraction: Extraction, stop: CancellationToken) -> Runner {
        Runner {
            extraction,
            current: Mutex::new(None),
            stop,
            last_failure: Arc::default(),
            started: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many runs this runner started (past their preparation), resumed ones included: a
    /// change tells that a run was taken up again.
    pub fn runs_started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The integration's runs.
    pub fn extraction(&self) -> &Extraction {
        &self.extraction
    }

    /// Starts a full run (resuming an interrupted one), or reports the one going.
    pub async fn start(&self, trigger: &str) -> Result<RunStarted, RunError> {
        self.start_resending(trigger, false).await
    }

    /// [`Runner::start`]; with `resend_all` the new run sends every record even when unchanged
    /// (a run already going is not changed).
    pub async fn start_resending(
        &self,
        trigger: &str,
        resend_all: bool,
    ) -> Result<RunStarted, RunError> {
        let mut current = self.current.lock().await;
        if let Some(run) = current.as_ref()
            && run.handle.as_ref().is_some_and(|h| !h.is_finished())
        {
            tracing::info!(integration = %self.extraction.integration(), run_id = %run.run_id, trigger,
                "a run is already going; not starting another");
            return Ok(RunStarted {
                run_id: run.run_id.clone(),
                already_running: true,
            });
        }
        let prepared = self.extraction.prepare(trigger, resend_all).await?;
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_id = prepared.run_id().to_owned();
        let cancel = self.stop.child_token();
        let token = cancel.clone();
        let integration = self.extraction.integration().to_owned();
        let last_failure = self.last_failure.clone();
        let failed_run = run_id.clone();
        let handle = tokio::spawn(async move {
            let result = prepared.execute(token).await;
            if let Ok(mut slot) = last_failure.lock() {
                *slot = match &result {
                    Err(err) if err.is_interrupted() => None,
                    Ok(_) => None,
                    Err(err) => Some((
                        failed_run,
                        Failure {
                            message: err.to_string(),
                            awaits_operator: err.stop().awaits_operator(),
                        },
                    )),
                };
            }
            match &result {
                Ok(summary) => tracing::info!(%integration, run_id = %summary.run_id,
                    published = summary.published, removed = summary.removed,
                    removals_held = summary.removals_held,
                    elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
                    "run ended"),
                Err(err) if err.is_interrupted() => tracing::info!(%integration, "{err}"),
                Err(err) => tracing::error!(%integration, "{err}"),
            }
            result
        });
        *current = Some(Current {
            run_id: run_id.clone(),
            cancel,
            handle: Some(handle),
        });
        Ok(RunStarted {
            run_id,
            already_running: false,
        })
    }

    /// Waits for the run started last to end, and returns how it ended (`None` when no run
    /// was started or its end was already taken).
    pub async fn wait(&self) -> Option<Result<RunSummary, RunError>> {
        let handle = self.current.lock().await.as_mut()?.handle.take()?;
        match handle.await {
            Ok(result) => Some(result),
            Err(err) => {
                tracing::error!(integration = %self.extraction.integration(), error = %err, "the run task ended abnormally");
                None
            }
        }
    }

    /// How run `run_id` last stopped with an error, if this replica ran it.
    pub fn last_failure(&self, run_id: &str) -> Option<Failure> {
        let slot = self.last_failure.lock().ok()?;
        slot.as_ref()
            .filter(|(id, _)| id == run_id)
            .map(|(_, failure)| failure.clone())
    }

    /// The run going, if any.
    pub async fn running(&self) -> Option<String> {
        let current = self.current.lock().await;
        current
            .as_ref()
            .filter(|run| run.handle.as_ref().is_some_and(|h| !h.is_finished()))
            .map(|run| run.run_id.clone())
    }

    /// Asks the run going to stop between pages (keeping its checkpoint), without waiting: a
    /// caller of [`Runner::wait`] then gets how it ended.
    pub async fn cancel(&self) {
        if let Some(run) = self.current.lock().await.as_ref() {
            run.cancel.cancel();
        }
    }

    /// Stops the run going (between pages, keeping its checkpoint) and waits for it.
    pub async fn interrupt(&self) {
        self.cancel().await;
        let _ = self.wait().await;
    }
}
