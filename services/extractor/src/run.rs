//! One full extraction run of one integration: page through Sage People, normalise and publish
//! each record with its dedup id, checkpoint after every published page, settle removals at
//! the end, and record the run's life cycle (KV run record and `RunEvent`s).
//!
//! Three stages overlap, so neither the network nor NATS waits for the other: a fetch task
//! reads pages ahead (at most two, through a bounded channel); the run publishes one page while
//! the next is fetched and the acks of earlier pages come in (at most eight pages in flight,
//! within the publish window); and the checkpoint of a page whose acks are all in is written
//! while later pages are published (at most one write outstanding). A run interrupted by a crash, a shutdown or an
//! exhausted API quota is resumed from its checkpoint by the next run of the integration.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peoplesync_bus::codec;
use peoplesync_bus::{Bus, BusError, DeadLetter, Publisher, RunRecord, RunState, Runs, dlq, names};
use peoplesync_proto::v1::{RunEvent, RunEventKind};
use peoplesync_runtime::metrics::names as metric;
use peoplesync_sage_people::{ApiUsage, ErrorKind, SageClient};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, Checkpoints};
use crate::collisions::SyncKeyGuard;
use crate::config::RemovalPolicy;
use crate::error::RunError;
use crate::event::EventBuilder;
use crate::removals::{self, Decision};
use crate::settings::{self, SettingsError, Sources};
use crate::{filter, quota, seen};

/// Pages fetched ahead of the one being published.
const PAGES_AHEAD: usize = 2;
/// Times one run restarts its listing after Sage People refused a marker.
const MAX_RESTARTS: u64 = 3;
/// Published pages whose acks may be outstanding while the next pages are published.
const PAGES_IN_FLIGHT: usize = 8;
/// Pages a crash can leave published but not checkpointed (those in flight, the one being
/// published, the one whose checkpoint is being written); purged from the seen list on resume.
const UNCOMMITTED_PAGES: u64 = PAGES_IN_FLIGHT as u64 + 2;
/// How often the run record's counts follow the checkpoint during a run.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// What a finished run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run id (also the Oomnitza portion).
    pub run_id: String,
    /// Upsert events published (whole run, across resumes).
    pub published: u64,
    /// Removed events published with the run.
    pub removed: u64,
    /// Removals held for approval.
    pub removals_held: u64,
    /// Records skipped because they could not be normalised.
    pub skipped: u64,
    /// Pages read in this invocation.
    pub pages: u64,
    /// Whether this invocation resumed an interrupted run.
    pub resumed: bool,
    /// Time taken by this invocation.
    pub elapsed: Duration,
}

/// Tunables of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Publish acks awaited at once.
    pub publish_window: usize,
    /// Share of the org's API quota a run may reach.
    pub quota_share: f64,
    /// When removals are held.
    pub removals: RemovalPolicy,
}

/// The full runs of one integration.
#[derive(Clone)]
pub struct Extraction {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    integration: String,
    sources: Arc<Sources>,
    options: RunOptions,
    removal_lock: Mutex<()>,
    seen_ready: OnceCell<()>,
}

impl std::fmt::Debug for Extraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extraction")
            .field("integration", &self.inner.integration)
            .finish_non_exhaustive()
    }
}

impl Extraction {
    /// Full runs of `integration`, reading through `sources`.
    pub fn new(
        bus: Bus,
        integration: &str,
        sources: Arc<Sources>,
        options: RunOptions,
    ) -> Extraction {
        Extraction {
            inner: Arc::new(Inner {
                bus,
                integration: integration.to_owned(),
                sources,
                options,
                removal_lock: Mutex::new(()),
                seen_ready: OnceCell::new(),
            }),
        }
    }

    /// The integration.
    pub fn integration(&self) -> &str {
        &self.inner.integration
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The Sage People clients.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.inner.sources
    }

    /// The run options.
    pub fn options(&self) -> &RunOptions {
        &self.inner.options
    }

    /// Serialises the end of runs and approvals, which both move the removal baseline.
    pub(crate) fn removal_lock(&self) -> &Mutex<()> {
        &self.inner.removal_lock
    }

    fn bus_error(&self, source: BusError) -> RunError {
        RunError::Bus {
            integration: self.inner.integration.clone(),
            source,
        }
    }

    /// Runs a full extraction to its end, resuming an interrupted run if there is one.
    pub async fn run_full(
        &self,
        trigger: &str,
        cancel: CancellationToken,
    ) -> Result<RunSummary, RunError> {
        self.prepare(trigger).await?.execute(cancel).await
    }

    /// Starts a run (or takes up the interrupted one) up to the point where it has an id:
    /// the run record exists, the checkpoint is stored, the settings are checked.
    pub async fn prepare(&self, trigger: &str) -> Result<PreparedRun, RunError> {
        self.prepare_resending(trigger, false).await
    }

    /// [`Extraction::prepare`], sending every record of the run even when unchanged when
    /// `resend_all` (drift repair; an interrupted run taken up keeps resending if it did).
    pub async fn prepare_resending(
        &self,
        trigger: &str,
        resend_all: bool,
    ) -> Result<PreparedRun, RunError> {
        let started = Instant::now();
        let inner = &*self.inner;
        let integration = inner.integration.as_str();
        inner
            .seen_ready
            .get_or_try_init(|| seen::ensure(&inner.bus))
            .await
            .map_err(|e| self.bus_error(e))?;
        let checkpoints = Checkpoints::new(inner.bus.state_kv().clone());
        let runs = Runs::new(inner.bus.state_kv().clone());
        let settings = settings::load(&inner.bus, integration).await;
        // NATS not answering is no reason to give up an interrupted run: stop here, before any
        // run state changes, and let the next trigger resume it.
        if let Err(err) = &settings
            && matches!(err, SettingsError::Unreadable { .. })
        {
            return Err(self.bus_error(BusError::request(
                format!("starting a run of {integration}"),
                err,
            )));
        }
        let filter = settings.as_ref().ok().and_then(|s| s.source_filter.clone());

        let mut existing = checkpoints
            .load(integration)
            .await
            .map_err(|e| self.bus_error(e))?;
        if let Some(checkpoint) = &existing {
            let record = runs
                .get(integration, &checkpoint.run_id)
                .await
                .map_err(|e| self.bus_error(e))?;
            let stale = match &record {
                None => true,
                Some((record, _)) => record.state == RunState::Completed,
            };
            if stale {
                tracing::info!(integration, run_id = %checkpoint.run_id, "dropping the checkpoint of a run that has ended");
                checkpoints
                    .clear(integration)
                    .await
                    .map_err(|e| self.bus_error(e))?;
                existing = None;
            }
        }
        if let Some(checkpoint) = &existing
            && settings.is_ok()
            && checkpoint.ending.is_none()
            && checkpoint.filter != filter
        {
            let message = format!(
                "superseded: the integration's source_filter changed from {:?} to {:?}, so the listing starts again in a new run",
                checkpoint.filter, filter
            );
            tracing::warn!(integration, run_id = %checkpoint.run_id, "{message}");
            self.record_failure(&runs, checkpoint, RunState::Failed, &message)
                .await?;
            checkpoints
                .clear(integration)
                .await
                .map_err(|e| self.bus_error(e))?;
            existing = None;
        }

        let (checkpoint, resumed) = match existing {
            Some(mut checkpoint) => {
                checkpoint.resumes += 1;
                checkpoint.resend_all |= resend_all;
                seen::purge_pages(
                    inner.bus.jetstream(),
                    integration,
                    &checkpoint.run_id,
                    checkpoint.pages,
                    UNCOMMITTED_PAGES,
                )
                .await
                .map_err(|e| self.bus_error(e))?;
                runs.update(integration, &checkpoint.run_id, |r| {
                    r.state = RunState::Running;
                    r.error = None;
                    true
                })
                .await
                .map_err(|e| self.bus_error(e))?;
                checkpoints
                    .save(integration, &checkpoint)
                    .await
                    .map_err(|e| self.bus_error(e))?;
                tracing::info!(integration, run_id = %checkpoint.run_id, marker = ?checkpoint.marker,
                    published = checkpoint.published, trigger,
                    "resuming an interrupted run from its checkpoint");
                (checkpoint, true)
            }
            None => {
                let run_id = uuid::Uuid::now_v7().to_string();
                let checkpoint = Checkpoint {
                    resend_all,
                    ..Checkpoint::start(&run_id, filter.clone())
                };
                let record = RunRecord {
                    resend_all,
                    ..RunRecord::start(integration, &run_id, true, trigger)
                };
                runs.create(&record).await.map_err(|e| self.bus_error(e))?;
                checkpoints
                    .save(integration, &checkpoint)
                    .await
                    .map_err(|e| self.bus_error(e))?;
                let mut publisher = Publisher::new(inner.bus.jetstream().clone(), 1);
                publish_run_event(
                    &mut publisher,
                    integration,
                    &checkpoint,
                    RunEventKind::Started,
                    0,
                    None,
                    true,
                )
                .await
                .map_err(|e| self.bus_error(e))?;
                tracing::info!(integration, %run_id, trigger, "run started");
                (checkpoint, false)
            }
        };

        let settings = match settings {
            Ok(settings) => settings,
            Err(err) => {
                return Err(self
                    .fail_settings(&runs, &checkpoints, &checkpoint, err.to_string())
                    .await);
            }
        };
        if let Some(source_filter) = &settings.source_filter
            && let Err(problem) = filter::validate(source_filter)
        {
            let message = format!(
                "the source_filter of integration {integration} (`{source_filter}`) is not a valid Sage People $filter: {problem}; fix it in the integration config and run again"
            );
            return Err(self
                .fail_settings(&runs, &checkpoints, &checkpoint, message)
                .await);
        }
        let client = match inner.sources.client(&settings.credentials) {
            Ok(client) => client,
            Err(problem) => {
                let message = format!(
                    "integration {integration} reads with credential set {:?}, which cannot be used: {problem}",
                    settings.credentials
                );
                return Err(self
                    .fail_settings(&runs, &checkpoints, &checkpoint, message)
                    .await);
            }
        };
        let keys = self.sync_key_guard(&client, &settings.credentials).await?;
        let end_dates = crate::ended::EndDates::of(integration, &settings);
        Ok(PreparedRun {
            extraction: self.clone(),
            checkpoint,
            checkpoints,
            resumed,
            client,
            credentials: settings.credentials,
            started,
            keys,
            end_dates,
        })
    }

    /// The run's sync-key guard, from the integration's mapping and the keys shared in the
    /// previous full run.
    async fn sync_key_guard(
        &self,
        client: &SageClient,
        credentials: &str,
    ) -> Result<Option<SyncKeyGuard>, RunError> {
        let integration = self.inner.integration.as_str();
        let config = match settings::load_config(&self.inner.bus, integration).await {
            Ok(config) => config,
            Err(err) => {
                return Err(self.bus_error(BusError::request(
                    format!("reading the mapping of {integration}"),
                    err,
                )));
            }
        };
        let mapping = match peoplesync_core::Integration::compile(config) {
            Ok(mapping) => mapping,
            Err(err) => {
                tracing::warn!(integration, error = %err,
                    "the mapping does not compile, so workers sharing a sync key cannot be found this run");
                return Ok(None);
            }
        };
        let tracking = peoplesync_core::Tracking {
            credentials: credentials.to_owned(),
            hostname: client.hostname(),
        };
        SyncKeyGuard::load(&self.inner.bus, integration, mapping, tracking)
            .await
            .map(Some)
            .map_err(|e| self.bus_error(e))
    }

    async fn fail_settings(
        &self,
        runs: &Runs,
        checkpoints: &Checkpoints,
        checkpoint: &Checkpoint,
        message: String,
    ) -> RunError {
        let integration = &self.inner.integration;
        tracing::error!(integration, run_id = %checkpoint.run_id, "{message}");
        let error = RunError::Settings {
            integration: integration.clone(),
            run_id: checkpoint.run_id.clone(),
            message: message.clone(),
        };
        if let Err(err) = self
            .record_failure(runs, checkpoint, RunState::Failed, &message)
            .await
        {
            return err;
        }
        if let Err(err) = checkpoints.clear(integration).await {
            return self.bus_error(err);
        }
        metrics::counter!(metric::EXTRACTOR_RUNS, "integration" => integration.clone(), "outcome" => "failed")
            .increment(1);
        error
    }

    /// Marks the run of `checkpoint` as stopped in `state` with `message`, and says so on the
    /// runs subject.
    async fn record_failure(
        &self,
        runs: &Runs,
        checkpoint: &Checkpoint,
        state: RunState,
        message: &str,
    ) -> Result<(), RunError> {
        let integration = self.inner.integration.as_str();
        let now = chrono::Utc::now().to_rfc3339();
        runs.update(integration, &checkpoint.run_id, |r| {
            r.state = state;
            r.published = checkpoint.published;
            r.skipped = checkpoint.skipped;
            r.error = Some(message.to_owned());
            r.finished_at = Some(now.clone());
            true
        })
        .await
        .map_err(|e| self.bus_error(e))?;
        let mut publisher = Publisher::new(self.inner.bus.jetstream().clone(), 1);
        publish_run_event(
            &mut publisher,
            integration,
            checkpoint,
            RunEventKind::Failed,
            0,
            Some(message),
            true,
        )
        .await
        .map_err(|e| self.bus_error(e))
    }
}

/// A run with an id, ready to list.
#[derive(Debug)]
pub struct PreparedRun {
    extraction: Extraction,
    checkpoint: Checkpoint,
    /// The writer that read (or first wrote) the checkpoint: its later writes are fenced.
    checkpoints: Checkpoints,
    resumed: bool,
    client: SageClient,
    credentials: String,
    started: Instant,
    /// Holds back workers that share a sync key (`None` when the mapping cannot be compiled;
    /// the loaders then refuse every record anyway).
    keys: Option<SyncKeyGuard>,
    /// How end dates are judged (see [`crate::ended`]).
    end_dates: crate::ended::EndDates,
}

/// What the fetch task hands over.
enum Fetched {
    /// A page of records; `marker` continues the list after it.
    Page { records: Vec<Value>, marker: String },
    /// Sage People refused `refused` as a marker; the listing starts again from the top.
    Restarted { refused: String },
    /// The end of the list.
    End,
    /// Sage People failed.
    Failed(peoplesync_sage_people::Error),
    /// The quota guard stopped the listing.
    Quota(ApiUsage),
}

impl PreparedRun {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.checkpoint.run_id
    }

    /// Whether it resumes an interrupted run.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Lists, publishes and completes the run; stops between pages when `cancel` fires.
    pub async fn execute(self, cancel: CancellationToken) -> Result<RunSummary, RunError> {
        let integration = self.extraction.integration().to_owned();
        metrics::gauge!(metric::EXTRACTOR_RUN_IN_PROGRESS, "integration" => integration.clone())
            .set(1.0);
        let result = self.execute_inner(cancel).await;
        metrics::gauge!(metric::EXTRACTOR_RUN_IN_PROGRESS, "integration" => integration.clone())
            .set(0.0);
        let outcome = match &result {
            Ok(summary) if summary.removals_held > 0 => "removals_held",
            Ok(_) => "completed",
            Err(err) => err.outcome(),
        };
        metrics::counter!(metric::EXTRACTOR_RUNS, "integration" => integration, "outcome" => outcome).increment(1);
        result
    }

    async fn execute_inner(self, cancel: CancellationToken) -> Result<RunSummary, RunError> {
        let PreparedRun {
            extraction,
            mut checkpoint,
            checkpoints,
            resumed,
            client,
            credentials,
            started,
            mut keys,
            end_dates,
        } = self;
        let inner = &*extraction.inner;
        let integration = inner.integration.as_str();
        let bus_err = |e| extraction.bus_error(e);
        let runs = Runs::new(inner.bus.state_kv().clone());
        let mut publisher =
            Publisher::new(inner.bus.jetstream().clone(), inner.options.publish_window);
        let mut pages = 0;

        if checkpoint.ending.is_none() {
            let mut listing = Listing {
                extraction: &extraction,
                checkpoints: &checkpoints,
                runs: &runs,
                publisher: &mut publisher,
                checkpoint: &mut checkpoint,
                events: None,
                credentials: &credentials,
                client: &client,
                acked: VecDeque::new(),
                window: inner.options.publish_window as u64,
                pending: None,
                recorded_at: Instant::now(),
                pages: &mut pages,
                keys: keys.as_mut(),
                end_dates,
            };
            let stop = listing.list(&cancel).await;
            let finished = listing.finish().await;
            match (stop, finished) {
                (Ok(()), Ok(())) => {
                    if let Some(keys) = &keys {
                        keys.save(&inner.bus, integration, &checkpoint.run_id, resumed)
                            .await
                            .map_err(bus_err)?;
                    }
                }
                (Err(stop), _) | (Ok(()), Err(stop)) => {
                    return Err(extraction
                        .stop(&runs, &checkpoints, &mut publisher, &checkpoint, stop)
                        .await);
                }
            }
        }

        let events = EventBuilder::new(
            integration,
            &checkpoint.run_id,
            &credentials,
            &client.hostname(),
        )
        .resending(checkpoint.resend_all);
        let decision = {
            let _settling = extraction.removal_lock().lock().await;
            let decision = match checkpoint.ending.clone() {
                Some(decision) => decision,
                None => {
                    let decision = removals::decide(
                        &inner.bus,
                        integration,
                        &checkpoint.run_id,
                        checkpoint.filter.as_deref(),
                        &inner.options.removals,
                    )
                    .await
                    .map_err(bus_err)?;
                    checkpoint.ending = Some(decision.clone());
                    checkpoints
                        .save(integration, &checkpoint)
                        .await
                        .map_err(bus_err)?;
                    decision
                }
            };
            removals::settle(
                &inner.bus,
                &mut publisher,
                &events,
                integration,
                &checkpoint.run_id,
                checkpoint.filter.as_deref(),
                &decision,
                checkpoint.published,
            )
            .await
            .map_err(bus_err)?;
            decision
        };
        match &decision {
            Decision::Held { count, baseline } => {
                tracing::warn!(integration, run_id = %checkpoint.run_id,
                held = count, baseline,
                "removals held for approval: more workers disappeared than the removal policy allows; approve them with the approve-removals command (syncctl) if they are real")
            }
            Decision::Skipped { reason } => {
                tracing::warn!(integration, run_id = %checkpoint.run_id,
                reason, "removals not computed this run; this run's list is the new baseline")
            }
            Decision::Publish { count } if *count > 0 => {
                tracing::info!(integration, run_id = %checkpoint.run_id,
                removed = count, "published removals")
            }
            _ => {}
        }
        let removed = decision.published();
        let held = decision.held();
        let now = chrono::Utc::now().to_rfc3339();
        runs.update(integration, &checkpoint.run_id, |r| {
            r.state = RunState::Completed;
            r.published = checkpoint.published;
            r.skipped = checkpoint.skipped;
            r.removed = removed;
            r.removals_held = held;
            r.error = None;
            r.finished_at = Some(now.clone());
            true
        })
        .await
        .map_err(bus_err)?;
        publish_run_event(
            &mut publisher,
            integration,
            &checkpoint,
            RunEventKind::Completed,
            removed,
            None,
            true,
        )
        .await
        .map_err(bus_err)?;
        checkpoints.clear(integration).await.map_err(bus_err)?;
        tracing::info!(integration, run_id = %checkpoint.run_id, published = checkpoint.published,
            removed, removals_held = held, skipped = checkpoint.skipped, pages, "run completed");
        Ok(RunSummary {
            run_id: checkpoint.run_id.clone(),
            published: checkpoint.published,
            removed,
            removals_held: held,
            skipped: checkpoint.skipped,
            pages,
            resumed,
            elapsed: started.elapsed(),
        })
    }
}

/// Why the listing stopped before its end.
enum Stop {
    Source(peoplesync_sage_people::Error),
    Quota(ApiUsage, String),
    Bus(BusError),
    Interrupted,
}

impl From<BusError> for Stop {
    fn from(err: BusError) -> Self {
        Stop::Bus(err)
    }
}

impl Extraction {
    /// Ends a listing that stopped early: records the state, and keeps or drops the checkpoint.
    async fn stop(
        &self,
        runs: &Runs,
        checkpoints: &Checkpoints,
        publisher: &mut Publisher,
        checkpoint: &Checkpoint,
        stop: Stop,
    ) -> RunError {
        let integration = self.inner.integration.clone();
        let run_id = checkpoint.run_id.clone();
        let error = match stop {
            Stop::Bus(source) => {
                return RunError::Bus {
                    integration,
                    source,
                };
            }
            Stop::Interrupted => {
                // Keep the counts current for whoever resumes it; the state stays running.
                let _ = publisher.flush().await;
                let _ = runs
                    .update(&integration, &run_id, |r| {
                        r.published = checkpoint.published;
                        r.skipped = checkpoint.skipped;
                        true
                    })
                    .await;
                tracing::info!(%integration, %run_id, published = checkpoint.published,
                    "run interrupted between pages; its checkpoint is kept");
                return RunError::Interrupted {
                    integration,
                    run_id,
                };
            }
            Stop::Source(source) => RunError::Source {
                integration,
                run_id,
                source,
            },
            Stop::Quota(usage, message) => RunError::QuotaGuard {
                integration,
                run_id,
                usage,
                message,
            },
        };
        let message = match &error {
            RunError::Source { source, .. } => source.to_string(),
            RunError::QuotaGuard { message, .. } => message.clone(),
            _ => error.to_string(),
        };
        let state = error.state();
        if state == RunState::QuotaExhausted {
            tracing::warn!(integration = %self.inner.integration, run_id = %checkpoint.run_id, "{message}");
        } else {
            tracing::error!(integration = %self.inner.integration, run_id = %checkpoint.run_id, "{message}");
        }
        if let Err(err) = self.record_failure(runs, checkpoint, state, &message).await {
            return err;
        }
        if !error.resumable()
            && let Err(err) = checkpoints.clear(&self.inner.integration).await
        {
            return self.bus_error(err);
        }
        error
    }
}

/// The listing part of a run: pages in, events out, checkpoints behind.
/// Headroom left below NATS's payload limit for an event's headers.
const HEADER_ROOM: usize = 4 * 1024;

/// The largest event payload the connected NATS server accepts (its `max_payload`, less room
/// for headers).
fn max_event_bytes(bus: &Bus) -> usize {
    match bus.client().server_info().max_payload {
        // Not known (no server info yet): publish, and let NATS answer.
        0 => usize::MAX,
        max => max.saturating_sub(HEADER_ROOM),
    }
}

/// The dead letter of a worker whose event is too large to publish.
fn too_large(integration: &str, run_id: &str, worker: &str, size: usize, max: usize) -> DeadLetter {
    DeadLetter {
        integration: integration.to_owned(),
        run_id: run_id.to_owned(),
        worker_id: worker.to_owned(),
        reason: format!(
            "worker {worker}'s event is {size} bytes, more than NATS accepts in one message \
             ({max} bytes): the worker was skipped. Shorten its largest field in Sage People (or \
             raise max_payload on the NATS servers), then run again; the letter holds the start \
             of the record, not an event to replay"
        ),
        stage: dlq::STAGE_EXTRACTOR.into(),
        attempts: 1,
        original_subject: names::workers_subject(integration),
        ..DeadLetter::default()
    }
}

struct Listing<'a> {
    extraction: &'a Extraction,
    checkpoints: &'a Checkpoints,
    runs: &'a Runs,
    publisher: &'a mut Publisher,
    checkpoint: &'a mut Checkpoint,
    events: Option<EventBuilder>,
    credentials: &'a str,
    client: &'a SageClient,
    /// Checkpoints of published pages, each with the number of messages sent up to its end:
    /// committable once that many are acknowledged.
    acked: VecDeque<(u64, Checkpoint)>,
    /// The publish window.
    window: u64,
    pending: Option<JoinHandle<Result<(), BusError>>>,
    recorded_at: Instant,
    pages: &'a mut u64,
    keys: Option<&'a mut SyncKeyGuard>,
    end_dates: crate::ended::EndDates,
}

impl Listing<'_> {
    async fn list(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        let integration = self.extraction.integration().to_owned();
        let (tx, mut rx) = mpsc::channel(PAGES_AHEAD);
        let fetch_stop = cancel.child_token();
        tokio::spawn(fetch(
            self.client.clone(),
            self.checkpoint.filter.clone(),
            self.checkpoint.marker.clone(),
            self.extraction.options().quota_share,
            self.checkpoint.restarts,
            tx,
            fetch_stop.clone(),
        ));
        let _stop_fetcher = fetch_stop.drop_guard();
        // Records up to here were published before the listing restarted; skip them.
        let mut skip_through = match (&self.checkpoint.done_through, &self.checkpoint.marker) {
            (Some(done), Some(marker)) if done != marker => Some(done.clone()),
            (Some(done), None) => Some(done.clone()),
            _ => None,
        };
        loop {
            let fetched = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(Stop::Interrupted),
                fetched = rx.recv() => fetched,
            };
            match fetched {
                Some(Fetched::Page { records, marker }) => {
                    self.publish_page(&records, &marker, &mut skip_through)
                        .await?;
                    metrics::counter!(metric::EXTRACTOR_PAGES, "integration" => integration.clone()).increment(1);
                    if let Some(usage) = self.client.last_api_usage() {
                        metrics::gauge!(metric::EXTRACTOR_API_USAGE_RATIO, "integration" => integration.clone())
                            .set(usage.share());
                    }
                }
                Some(Fetched::Restarted { refused }) => {
                    self.checkpoint.restarts += 1;
                    self.checkpoint.marker = None;
                    skip_through = self.checkpoint.done_through.clone();
                    tracing::warn!(%integration, run_id = %self.checkpoint.run_id, marker = %refused,
                        "Sage People refused the paging marker; restarting the listing from the first page (workers already published in this run are read again but not published again)");
                }
                Some(Fetched::End) => break Ok(()),
                Some(Fetched::Failed(source)) => break Err(Stop::Source(source)),
                Some(Fetched::Quota(usage)) => {
                    let message = quota::explain(
                        &self.client.hostname(),
                        usage,
                        self.extraction.options().quota_share,
                    );
                    break Err(Stop::Quota(usage, message));
                }
                // The fetch task ended without a word: it was stopped.
                None => break Err(Stop::Interrupted),
            }
        }
    }

    async fn publish_page(
        &mut self,
        records: &[Value],
        marker: &str,
        skip_through: &mut Option<String>,
    ) -> Result<(), Stop> {
        let integration = self.extraction.integration();
        let run_id = self.checkpoint.run_id.clone();
        let events = self.events.get_or_insert_with(|| {
            EventBuilder::new(
                integration,
                &run_id,
                self.credentials,
                &self.client.hostname(),
            )
            .resending(self.checkpoint.resend_all)
            .judging_end_dates(self.end_dates)
        });
        let subject = names::workers_subject(integration);
        let observed = codec::now();
        let max_payload = max_event_bytes(self.extraction.bus());
        let mut ids: Vec<&str> = Vec::with_capacity(records.len());
        let mut published = 0;
        let already = |raw: &Value| {
            let id = raw.get("id").and_then(Value::as_str);
            matches!((skip_through.as_deref(), id), (Some(limit), Some(id)) if id <= limit)
        };
        let mut verdict = match self.keys.as_deref_mut() {
            Some(guard) => {
                let skip: Vec<bool> = records.iter().map(already).collect();
                let mut verdict =
                    guard.check_page(self.checkpoint.pages, records, &skip, |worker| {
                        events.has_left(worker)
                    });
                if SyncKeyGuard::has_suspects(&verdict) {
                    // The other worker's id is read back from the seen list.
                    self.publisher.flush().await?;
                    guard
                        .confirm(
                            self.extraction.bus(),
                            self.client,
                            integration,
                            &run_id,
                            &mut verdict,
                        )
                        .await;
                }
                Some(verdict)
            }
            None => None,
        };
        for (index, raw) in records.iter().enumerate() {
            let id = raw.get("id").and_then(Value::as_str);
            if already(raw) {
                continue;
            }
            let worker = verdict
                .as_mut()
                .and_then(|v| v.workers.get_mut(index))
                .and_then(Option::take);
            if let Some(hold) = verdict.as_ref().and_then(|v| v.held.get(&index)) {
                self.checkpoint.skipped += 1;
                let worker = id.unwrap_or("(no id)");
                let letter = hold.letter(integration, &run_id, worker);
                tracing::warn!(integration, run_id = %run_id, worker, field = %hold.field,
                    others = ?hold.others, "holding back a worker whose sync key another worker shares");
                let excerpt: String = raw.to_string().chars().take(64 * 1024).collect();
                dlq::record(self.extraction.bus().jetstream(), &letter, excerpt.into()).await?;
                if let Some(id) = id {
                    ids.push(id);
                }
                continue;
            }
            let sequence = self.checkpoint.published + published + 1;
            let built = match worker {
                Some(worker) => events.upsert_worker(raw, worker, sequence, observed),
                None => events.upsert(raw, sequence, observed),
            };
            match built {
                Ok(event) if event.payload.len() > max_payload => {
                    // NATS refuses a message this large, and retrying it would stop the run
                    // for good: the worker is skipped with a dead letter that says so. It
                    // stays in the seen list, so it is not taken for a removal.
                    self.checkpoint.skipped += 1;
                    let worker = id.unwrap_or("(no id)");
                    let letter = too_large(
                        integration,
                        &run_id,
                        worker,
                        event.payload.len(),
                        max_payload,
                    );
                    tracing::error!(integration, run_id = %run_id, worker, size = event.payload.len(),
                        max_payload, "skipping a worker whose event is larger than NATS accepts");
                    let excerpt: String = raw.to_string().chars().take(64 * 1024).collect();
                    dlq::record(self.extraction.bus().jetstream(), &letter, excerpt.into()).await?;
                    if let Some(id) = id {
                        ids.push(id);
                    }
                }
                Ok(event) => {
                    // With the window full, wait for half of it at once rather than for one ack
                    // per message: far fewer wake-ups, the same bound.
                    let in_flight = self.publisher.sent() - self.publisher.acknowledged();
                    if in_flight >= self.window {
                        self.publisher
                            .settle_until(self.publisher.sent() - self.window / 2)
                            .await?;
                    }
                    // A leaver is left out of the list (so a removal when it is next settled)
                    // and their upsert kept for the `ended` event (see `crate::ended`).
                    let ended = event.ended;
                    if ended {
                        crate::ended::keep(
                            self.publisher,
                            integration,
                            &run_id,
                            &event.worker_id,
                            event.payload.clone(),
                        )
                        .await?;
                        if !self.end_dates.upsert_leavers {
                            continue;
                        }
                    }
                    self.publisher
                        .publish(subject.clone(), event.msg_id, event.payload, None)
                        .await?;
                    published += 1;
                    if let Some(id) = id
                        && !ended
                    {
                        ids.push(id);
                    }
                }
                Err(err) => {
                    self.checkpoint.skipped += 1;
                    let excerpt: String = raw.to_string().chars().take(200).collect();
                    tracing::warn!(integration, run_id = %run_id, error = %err, record = %excerpt,
                        "skipping a Sage People record that cannot be normalised");
                }
            }
        }
        if !ids.is_empty() {
            let page = self.checkpoint.pages;
            self.publisher
                .publish(
                    seen::chunk_subject(integration, &run_id, page),
                    format!("{run_id}.seen.{page}.{}", self.checkpoint.resumes),
                    seen::encode_chunk(ids.iter().copied()),
                    None,
                )
                .await?;
        }
        metrics::counter!(metric::EXTRACTOR_WORKERS_PUBLISHED, "integration" => integration.to_owned())
            .increment(published);
        self.checkpoint.published += published;
        self.checkpoint.pages += 1;
        *self.pages += 1;
        self.checkpoint.marker = Some(marker.to_owned());
        match skip_through.as_deref() {
            Some(limit) if marker <= limit => {}
            _ => {
                *skip_through = None;
                self.checkpoint.done_through = Some(marker.to_owned());
            }
        }
        self.acked
            .push_back((self.publisher.sent(), self.checkpoint.clone()));
        if self.acked.len() > PAGES_IN_FLIGHT
            && let Some((sent, _)) = self.acked.front()
        {
            self.publisher.settle_until(*sent).await?;
        }
        let acknowledged = self.publisher.acknowledged();
        let mut ready = None;
        while self
            .acked
            .front()
            .is_some_and(|(sent, _)| *sent <= acknowledged)
        {
            ready = self.acked.pop_front().map(|(_, checkpoint)| checkpoint);
        }
        match ready {
            Some(checkpoint) => self.commit(checkpoint).await,
            None => Ok(()),
        }
    }

    /// Waits for every page's acks and stores the latest checkpoint.
    async fn finish(&mut self) -> Result<(), Stop> {
        self.publisher.flush().await?;
        self.acked.clear();
        self.commit(self.checkpoint.clone()).await?;
        self.settle_commit().await
    }

    /// Stores `checkpoint` in the background, once the previous one is stored.
    async fn commit(&mut self, checkpoint: Checkpoint) -> Result<(), Stop> {
        self.settle_commit().await?;
        let checkpoints = self.checkpoints.clone();
        let runs = self.runs.clone();
        let integration = self.extraction.integration().to_owned();
        let record = self.recorded_at.elapsed() >= RECORD_EVERY;
        if record {
            self.recorded_at = Instant::now();
        }
        self.pending = Some(tokio::spawn(async move {
            checkpoints.save(&integration, &checkpoint).await?;
            if record {
                runs.update(&integration, &checkpoint.run_id, |r| {
                    r.published = checkpoint.published;
                    r.skipped = checkpoint.skipped;
                    true
                })
                .await?;
            }
            Ok(())
        }));
        Ok(())
    }

    /// Waits for the checkpoint being stored.
    async fn settle_commit(&mut self) -> Result<(), Stop> {
        if let Some(pending) = self.pending.take() {
            match pending.await {
                Ok(result) => result?,
                Err(err) => {
                    return Err(Stop::Bus(BusError::Request {
                        what: "storing the checkpoint".into(),
                        message: err.to_string(),
                    }));
                }
            }
        }
        Ok(())
    }
}

/// Reads pages ahead of the publisher until the end of the list, an error, the quota guard,
/// or `stop`.
async fn fetch(
    client: SageClient,
    filter: Option<String>,
    mut marker: Option<String>,
    quota_share: f64,
    // Restarts the run already made before it was resumed: the limit is per run.
    mut restarts: u64,
    pages: mpsc::Sender<Fetched>,
    stop: CancellationToken,
) {
    // Only usage read during this run counts: the client's last reading may be hours old.
    let mut watch = quota::UsageWatch::new(quota::LIMITS_EVERY);
    // Some orgs may not let the API user read the `limits` resource although their answers
    // carry the header: a refused first reading waits for the first page's header.
    let mut first_reading_refused = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if watch.needs_reading() {
            let reading = tokio::select! {
                () = stop.cancelled() => return,
                reading = client.read_limits() => reading,
            };
            match reading {
                Ok(usage) => watch.record_reading(usage),
                Err(err) if !first_reading_refused && err.kind() != ErrorKind::QuotaExhausted => {
                    tracing::warn!(error = %err, "cannot read the org's API limits; relying on the Sforce-Limit-Info header of the first page");
                    first_reading_refused = true;
                }
                Err(err) => {
                    let _ = pages.send(Fetched::Failed(err)).await;
                    return;
                }
            }
        }
        if let Some(usage) = watch.usage()
            && !quota::allows(usage, quota_share)
        {
            let _ = pages.send(Fetched::Quota(usage)).await;
            return;
        }
        let page = tokio::select! {
            () = stop.cancelled() => return,
            page = client.list_page(marker.as_deref(), filter.as_deref()) => page,
        };
        if let Ok(page) = &page {
            watch.page_read(page.api_usage);
        }
        let fetched = match page {
            Ok(page) => match page.next_marker() {
                Some(next) => {
                    marker = Some(next.to_owned());
                    Fetched::Page {
                        marker: next.to_owned(),
                        records: page.records,
                    }
                }
                None => Fetched::End,
            },
            Err(err) if err.kind() == ErrorKind::InvalidMarker && restarts < MAX_RESTARTS => {
                match marker.take() {
                    Some(refused) => {
                        restarts += 1;
                        Fetched::Restarted { refused }
                    }
                    None => Fetched::Failed(err),
                }
            }
            Err(err) => Fetched::Failed(err),
        };
        let last = matches!(fetched, Fetched::End | Fetched::Failed(_));
        if pages.send(fetched).await.is_err() || last {
            return;
        }
    }
}

/// Publishes a `RunEvent` for the run of `checkpoint`.
pub(crate) async fn publish_run_event(
    publisher: &mut Publisher,
    integration: &str,
    checkpoint: &Checkpoint,
    kind: RunEventKind,
    removed: u64,
    error: Option<&str>,
    full: bool,
) -> Result<(), BusError> {
    let run_id = &checkpoint.run_id;
    let event = RunEvent {
        integration_id: integration.to_owned(),
        run_id: run_id.clone(),
        kind: kind.into(),
        at: Some(codec::now()),
        published: checkpoint.published,
        removed,
        skipped: checkpoint.skipped,
        error: error.unwrap_or_default().to_owned(),
        full,
    };
    let suffix = match kind {
        RunEventKind::Started => "started",
        RunEventKind::Completed => "completed",
        _ => "failed",
    };
    publisher
        .publish(
            names::runs_subject(integration),
            format!(
                "{run_id}.{suffix}.{}.{}",
                checkpoint.pages, checkpoint.resumes
            ),
            codec::encode_run_event(&event),
            None,
        )
        .await?;
    publisher.flush().await
}
