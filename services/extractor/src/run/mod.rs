//! One full extraction run of one integration: page through Sage People, normalise and publish
//! each record with its dedup id, checkpoint after every published page, settle removals at
//! the end, and record the run's life cycle (KV run record and `RunEvent`s, through
//! [`crate::journal`]).
//!
//! Three stages overlap, so neither the network nor NATS waits for the other: a fetch task
//! reads pages ahead (at most two, through a bounded channel); the run publishes one page while
//! the next is fetched and the acks of earlier pages come in (at most eight pages in flight,
//! within the publish window); and the checkpoint of a page whose acks are all in is written
//! while later pages are published (at most one write outstanding). A run interrupted by a crash, a shutdown or an
//! exhausted API quota is resumed from its checkpoint by the next run of the integration.
//!
//! The parts: [`prepare`] (a run record and checkpoint, the settings checked, the guards),
//! [`execute`] (the listing, then removals and the end of the run, or how it stopped early) and
//! [`listing`] (pages in, events out, checkpoints behind; the fetch task).

mod execute;
mod listing;
mod prepare;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peoplesync_bus::checkpoint::{Checkpoint, Checkpoints};
use peoplesync_bus::codec;
use peoplesync_bus::removals::Decision;
use peoplesync_bus::{Bus, BusError, DeadLetter, Publisher, RunState, dlq, names};
use peoplesync_runtime::metrics::names as metric;
use peoplesync_sage_people::{ApiUsage, ErrorKind, SageClient};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::collisions::SyncKeyGuard;
use crate::config::RemovalPolicy;
use crate::error::{RunError, Stop};
use crate::event::EventBuilder;
use crate::journal::{Counts, Journal};
use crate::removals;
use crate::settings::{self, SettingsError, Sources};
use crate::{filter, quota};

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
    /// Why removals could not be computed, when they could not (none was published; see
    /// `RunRecord::removals_skipped` for what follows).
    pub removals_skipped: Option<String>,
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
    journal: Journal,
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
                journal: Journal::new(&bus, integration, true),
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

    /// The journal of the integration's full runs.
    pub(crate) fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Serialises the end of runs and approvals, which both move the removal baseline.
    pub(crate) fn removal_lock(&self) -> &Mutex<()> {
        &self.inner.removal_lock
    }

    /// The error of run `run_id` (when it has one yet) of this integration, stopped by `stop`.
    fn error(&self, run_id: Option<&str>, stop: Stop) -> RunError {
        RunError::new(&self.inner.integration, run_id, stop)
    }

    /// Runs a full extraction to its end, resuming an interrupted run if there is one.
    pub async fn run_full(
        &self,
        trigger: &str,
        cancel: CancellationToken,
    ) -> Result<RunSummary, RunError> {
        self.prepare(trigger, false).await?.execute(cancel).await
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

/// What the run of `checkpoint` has done so far, for its record and events.
fn counts(checkpoint: &Checkpoint) -> Counts {
    Counts {
        published: checkpoint.published,
        skipped: checkpoint.skipped,
        pages: checkpoint.pages,
        resumes: checkpoint.resumes,
        ..Counts::default()
    }
}
