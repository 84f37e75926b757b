//! One full extraction run: page through Sage People, normalise each record, publish it with
//! its dedup id, checkpoint after every published page, and record the run's life cycle (KV
//! run record and `RunEvent`s). A run interrupted by a crash or an exhausted API quota is
//! resumed from its checkpoint by the next run of the same integration.

use std::time::{Duration, Instant};

use peoplesync_bus::codec::{self, worker_to_proto};
use peoplesync_bus::{Bus, BusError, Publisher, RunRecord, RunState, Runs, names};
use peoplesync_core::{Tracking, Worker};
use peoplesync_proto::v1::{RunEvent, RunEventKind, WorkerEvent, WorkerEventKind};
use peoplesync_sage_people::{ErrorKind, SageClient};

use crate::checkpoint::{Checkpoint, Checkpoints};

/// What a finished run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run id (also the Oomnitza portion).
    pub run_id: String,
    /// Upsert events published (whole run, across resumes).
    pub published: u64,
    /// Records skipped because they could not be normalised.
    pub skipped: u64,
    /// Pages read in this invocation.
    pub pages: u64,
    /// Whether this invocation resumed an interrupted run.
    pub resumed: bool,
    /// Time taken by this invocation.
    pub elapsed: Duration,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Sage People refused the request; its message says what to fix. `resumable` runs keep
    /// their checkpoint.
    #[error("run {run_id} of {integration}: {source}")]
    Source {
        /// The integration.
        integration: String,
        /// The run.
        run_id: String,
        /// Sage People's error.
        source: peoplesync_sage_people::Error,
    },
    /// NATS failed.
    #[error("run of {integration}: {source}")]
    Bus {
        /// The integration.
        integration: String,
        /// The bus error.
        source: BusError,
    },
}

/// Extracts one integration.
pub struct Extraction {
    bus: Bus,
    sage: SageClient,
    integration: String,
    credentials: String,
    source_filter: Option<String>,
    publish_window: usize,
}

impl Extraction {
    /// An extraction of `integration` with `sage` (read through credential set `credentials`).
    pub fn new(
        bus: Bus,
        sage: SageClient,
        integration: &str,
        credentials: &str,
        source_filter: Option<String>,
        publish_window: usize,
    ) -> Extraction {
        Extraction {
            bus,
            sage,
            integration: integration.to_owned(),
            credentials: credentials.to_owned(),
            source_filter,
            publish_window,
        }
    }

    /// Runs a full extraction, resuming an interrupted run if there is one.
    pub async fn run_full(&self, trigger: &str) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        let bus_err = |source| RunError::Bus {
            integration: self.integration.clone(),
            source,
        };
        let checkpoints = Checkpoints::new(self.bus.state_kv().clone());
        let runs = Runs::new(self.bus.state_kv().clone());
        let mut publisher = Publisher::new(self.bus.jetstream().clone(), self.publish_window);

        let (mut checkpoint, resumed) = match checkpoints
            .load(&self.integration)
            .await
            .map_err(bus_err)?
        {
            Some(checkpoint) => {
                tracing::info!(integration = %self.integration, run_id = %checkpoint.run_id,
                    marker = ?checkpoint.marker, published = checkpoint.published,
                    "resuming an interrupted run from its checkpoint");
                runs.update(&self.integration, &checkpoint.run_id, |r| {
                    r.state = RunState::Running;
                    r.error = None;
                    true
                })
                .await
                .map_err(bus_err)?;
                (checkpoint, true)
            }
            None => {
                let run_id = uuid::Uuid::now_v7().to_string();
                let checkpoint = Checkpoint {
                    run_id: run_id.clone(),
                    marker: None,
                    published: 0,
                    skipped: 0,
                    pages: 0,
                };
                runs.create(&RunRecord::start(&self.integration, &run_id, true, trigger))
                    .await
                    .map_err(bus_err)?;
                checkpoints
                    .save(&self.integration, &checkpoint)
                    .await
                    .map_err(bus_err)?;
                self.publish_run_event(
                    &mut publisher,
                    &run_id,
                    RunEventKind::Started,
                    &checkpoint,
                    None,
                )
                .await
                .map_err(bus_err)?;
                tracing::info!(integration = %self.integration, %run_id, trigger, "run started");
                (checkpoint, false)
            }
        };
        let run_id = checkpoint.run_id.clone();
        let mut pages = 0;

        let outcome = self
            .page_through(
                &mut publisher,
                &checkpoints,
                &runs,
                &mut checkpoint,
                &mut pages,
            )
            .await;
        match outcome {
            Ok(()) => {
                let now = chrono::Utc::now().to_rfc3339();
                runs.update(&self.integration, &run_id, |r| {
                    r.state = RunState::Completed;
                    r.published = checkpoint.published;
                    r.skipped = checkpoint.skipped;
                    r.finished_at = Some(now.clone());
                    true
                })
                .await
                .map_err(bus_err)?;
                self.publish_run_event(
                    &mut publisher,
                    &run_id,
                    RunEventKind::Completed,
                    &checkpoint,
                    None,
                )
                .await
                .map_err(bus_err)?;
                publisher.flush().await.map_err(bus_err)?;
                checkpoints
                    .clear(&self.integration)
                    .await
                    .map_err(bus_err)?;
                tracing::info!(integration = %self.integration, %run_id,
                    published = checkpoint.published, skipped = checkpoint.skipped, pages,
                    "run completed");
                Ok(RunSummary {
                    run_id,
                    published: checkpoint.published,
                    skipped: checkpoint.skipped,
                    pages,
                    resumed,
                    elapsed: started.elapsed(),
                })
            }
            Err(RunError::Source { source, .. }) => {
                let quota = source.kind() == ErrorKind::QuotaExhausted;
                let resumable = matches!(
                    source.kind(),
                    ErrorKind::QuotaExhausted | ErrorKind::Transient
                );
                let message = source.to_string();
                runs.update(&self.integration, &run_id, |r| {
                    r.state = if quota {
                        RunState::QuotaExhausted
                    } else {
                        RunState::Failed
                    };
                    r.published = checkpoint.published;
                    r.skipped = checkpoint.skipped;
                    r.error = Some(message.clone());
                    true
                })
                .await
                .map_err(bus_err)?;
                self.publish_run_event(
                    &mut publisher,
                    &run_id,
                    RunEventKind::Failed,
                    &checkpoint,
                    Some(&message),
                )
                .await
                .map_err(bus_err)?;
                publisher.flush().await.map_err(bus_err)?;
                if !resumable {
                    checkpoints
                        .clear(&self.integration)
                        .await
                        .map_err(bus_err)?;
                }
                Err(RunError::Source {
                    integration: self.integration.clone(),
                    run_id,
                    source,
                })
            }
            Err(err) => Err(err),
        }
    }

    async fn page_through(
        &self,
        publisher: &mut Publisher,
        checkpoints: &Checkpoints,
        runs: &Runs,
        checkpoint: &mut Checkpoint,
        pages: &mut u64,
    ) -> Result<(), RunError> {
        let bus_err = |source| RunError::Bus {
            integration: self.integration.clone(),
            source,
        };
        let subject = names::workers_subject(&self.integration);
        let mut restarted = false;
        loop {
            let page = match self
                .sage
                .list_page(checkpoint.marker.as_deref(), self.source_filter.as_deref())
                .await
            {
                Ok(page) => page,
                Err(err) if err.kind() == ErrorKind::InvalidMarker && !restarted => {
                    tracing::warn!(integration = %self.integration, run_id = %checkpoint.run_id,
                        marker = ?checkpoint.marker,
                        "Sage People refused the checkpoint's marker; restarting the listing from the first page (already published workers are dropped as duplicates)");
                    restarted = true;
                    checkpoint.marker = None;
                    continue;
                }
                Err(source) => {
                    return Err(RunError::Source {
                        integration: self.integration.clone(),
                        run_id: checkpoint.run_id.clone(),
                        source,
                    });
                }
            };
            let Some(next_marker) = page.next_marker().map(str::to_owned) else {
                return Ok(());
            };
            *pages += 1;
            let tracking = Tracking {
                credentials: self.credentials.clone(),
                hostname: self.sage.hostname(),
            };
            for raw in &page.records {
                match Worker::from_raw(raw) {
                    Ok(worker) => {
                        let event = self.worker_event(
                            &checkpoint.run_id,
                            checkpoint.published + 1,
                            worker,
                            raw,
                            &tracking,
                        );
                        let id = names::event_msg_id(&checkpoint.run_id, &event_worker_id(&event));
                        publisher
                            .publish(
                                subject.clone(),
                                id,
                                codec::encode_worker_event(&event),
                                None,
                            )
                            .await
                            .map_err(bus_err)?;
                        checkpoint.published += 1;
                    }
                    Err(err) => {
                        checkpoint.skipped += 1;
                        let excerpt: String = raw.to_string().chars().take(200).collect();
                        tracing::warn!(integration = %self.integration, run_id = %checkpoint.run_id,
                            error = %err, record = %excerpt, "skipping a Sage People record that cannot be normalised");
                    }
                }
            }
            publisher.flush().await.map_err(bus_err)?;
            checkpoint.marker = Some(next_marker);
            checkpoint.pages += 1;
            checkpoints
                .save(&self.integration, checkpoint)
                .await
                .map_err(bus_err)?;
            let (published, skipped) = (checkpoint.published, checkpoint.skipped);
            runs.update(&self.integration, &checkpoint.run_id, |r| {
                r.published = published;
                r.skipped = skipped;
                true
            })
            .await
            .map_err(bus_err)?;
        }
    }

    fn worker_event(
        &self,
        run_id: &str,
        sequence: u64,
        worker: Worker,
        raw: &serde_json::Value,
        tracking: &Tracking,
    ) -> WorkerEvent {
        WorkerEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            integration_id: self.integration.clone(),
            run_id: run_id.to_owned(),
            kind: WorkerEventKind::Upsert.into(),
            observed_at: Some(codec::now()),
            worker: Some(worker_to_proto(&worker)),
            raw: serde_json::to_vec(raw).unwrap_or_default(),
            tracking: Some(peoplesync_proto::v1::Tracking {
                credentials: tracking.credentials.clone(),
                hostname: tracking.hostname.clone(),
            }),
            sequence,
        }
    }

    async fn publish_run_event(
        &self,
        publisher: &mut Publisher,
        run_id: &str,
        kind: RunEventKind,
        checkpoint: &Checkpoint,
        error: Option<&str>,
    ) -> Result<(), BusError> {
        let event = RunEvent {
            integration_id: self.integration.clone(),
            run_id: run_id.to_owned(),
            kind: kind.into(),
            at: Some(codec::now()),
            published: checkpoint.published,
            removed: 0,
            skipped: checkpoint.skipped,
            error: error.unwrap_or_default().to_owned(),
            full: true,
        };
        let suffix = match kind {
            RunEventKind::Started => "started",
            RunEventKind::Completed => "completed",
            _ => "failed",
        };
        publisher
            .publish(
                names::runs_subject(&self.integration),
                format!("{run_id}.{suffix}.{}", checkpoint.pages),
                codec::encode_run_event(&event),
                None,
            )
            .await?;
        publisher.flush().await
    }
}

fn event_worker_id(event: &WorkerEvent) -> String {
    event
        .worker
        .as_ref()
        .map(|w| w.id.clone())
        .unwrap_or_default()
}
