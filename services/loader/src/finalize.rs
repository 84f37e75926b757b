//! Finalizing a run's Oomnitza portion exactly once across replicas: when a run is completed
//! (or failed for good) and its outcomes account for every published event, one replica wins a compare-and-set
//! claim on the run record, calls finalize, and records the final counts. A claim left by a
//! replica that died is taken over after [`CLAIM_EXPIRY`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use peoplesync_bus::{Bus, BusError, FinalizeState, RunRecord, RunState, Runs, outcomes};
use peoplesync_oomnitza::{ErrorKind, Finalize, OomnitzaClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a finalize claim holds before another replica may take it over.
pub const CLAIM_EXPIRY: Duration = Duration::from_secs(120);
/// How often every open run is checked, in case a poke or a watch event was missed.
const SWEEP: Duration = Duration::from_secs(5);
/// How often poked runs are checked at most.
const POKE_INTERVAL: Duration = Duration::from_millis(200);
/// How often a run's outcomes may be read in full while its live counts overstate it.
const EXACT_READ_INTERVAL: Duration = Duration::from_secs(2);

/// Finalizes portions for one replica.
pub struct Finalizer {
    bus: Bus,
    runs: Runs,
    client: OomnitzaClient,
    replica: String,
    /// When each run's outcomes were last read in full.
    exact_reads: Mutex<HashMap<String, Instant>>,
}

/// A request to look at one run now: (integration, run id).
pub type Poke = (String, String);

impl Finalizer {
    /// A finalizer acting as `replica`.
    pub fn new(bus: Bus, client: OomnitzaClient, replica: String) -> Finalizer {
        let runs = Runs::new(bus.state_kv().clone());
        Finalizer {
            bus,
            runs,
            client,
            replica,
            exact_reads: Mutex::default(),
        }
    }

    /// Whether `run_id`'s outcomes may be read in full now: once, and then again only after
    /// [`EXACT_READ_INTERVAL`], so a run whose live counts overstate it (an event recorded
    /// twice) is not read in full after every batch.
    fn exact_read_due(&self, run_id: &str) -> bool {
        let Ok(mut reads) = self.exact_reads.lock() else {
            return true;
        };
        let now = Instant::now();
        reads.retain(|_, at| now.duration_since(*at) < EXACT_READ_INTERVAL);
        if reads.contains_key(run_id) {
            return false;
        }
        reads.insert(run_id.to_owned(), now);
        true
    }

    /// Checks runs when poked (after a batch settles; at most every [`POKE_INTERVAL`]), when a
    /// run record changes, and every few seconds, until `shutdown`.
    pub async fn run(self, mut pokes: mpsc::Receiver<Poke>, shutdown: CancellationToken) {
        let mut watch = match self.runs.watch().await {
            Ok(watch) => Some(watch),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch run records; relying on the periodic sweep");
                None
            }
        };
        let mut sweep = tokio::time::interval(SWEEP);
        let mut settled = HashSet::new();
        // Runs poked since the last check: a run's batches settle many times a second, and one
        // check per POKE_INTERVAL sees the same as one per batch.
        let mut poked: HashSet<Poke> = HashSet::new();
        let mut poke_timer = tokio::time::interval(POKE_INTERVAL);
        poke_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                poke = pokes.recv() => {
                    let Some(poke) = poke else { return };
                    poked.insert(poke);
                }
                _ = poke_timer.tick(), if !poked.is_empty() => {
                    for (integration, run_id) in std::mem::take(&mut poked) {
                        self.check(&integration, &run_id).await;
                    }
                }
                entry = next_entry(&mut watch) => {
                    match entry {
                        Some(Ok(entry)) => {
                            if let Ok(record) = peoplesync_bus::runs::decode(&entry.value) {
                                self.check(&record.integration, &record.run_id).await;
                            }
                        }
                        Some(Err(err)) => tracing::debug!(error = %err, "run watch error"),
                        None => watch = None,
                    }
                }
                _ = sweep.tick() => self.sweep(&mut settled).await,
            }
        }
    }

    /// Checks every run not yet known to be settled. A finalized run's record never changes
    /// again, so it is read once per replica and then skipped: the sweep stays cheap however
    /// many runs history holds.
    async fn sweep(&self, settled: &mut HashSet<String>) {
        let keys = match self.runs.keys().await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list runs for finalizing");
                return;
            }
        };
        for key in keys {
            if settled.contains(&key) {
                continue;
            }
            match self.runs.get_by_key(&key).await {
                Ok(Some(record)) if needs_finalize(&record) => {
                    self.check(&record.integration, &record.run_id).await;
                }
                Ok(Some(record))
                    if matches!(
                        record.finalize,
                        FinalizeState::Finalized { .. } | FinalizeState::NothingToFinalize
                    ) =>
                {
                    settled.insert(key);
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(key, error = %err, "skipping an unreadable run record"),
            }
        }
    }

    async fn check(&self, integration: &str, run_id: &str) {
        if let Err(err) = self.try_finalize(integration, run_id).await {
            tracing::warn!(integration, run_id, error = %err, "finalize check failed; will retry");
        }
    }

    /// Whether a failed run will be resumed: the extractor keeps a run's checkpoint
    /// (`checkpoint.<integration>` in the state bucket) exactly while it means to resume it
    /// (quota, transient failures) and clears it when the failure is final (configuration), so
    /// a failed run without its checkpoint is over and its portion can be closed with what it
    /// loaded.
    async fn resumes(&self, integration: &str, run_id: &str) -> Result<bool, BusError> {
        let key = format!("checkpoint.{integration}");
        let value = self
            .bus
            .state_kv()
            .get(&key)
            .await
            .map_err(|e| BusError::request(format!("reading {key}"), e))?;
        Ok(value
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
            .is_some_and(|c| c.get("run_id").and_then(|r| r.as_str()) == Some(run_id)))
    }

    async fn try_finalize(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        let Some((record, _)) = self.runs.get(integration, run_id).await? else {
            return Ok(());
        };
        if !needs_finalize(&record) {
            return Ok(());
        }
        if record.state == RunState::Failed && self.resumes(integration, run_id).await? {
            return Ok(());
        }
        // The live counts are cheap and never too low; only when they cover every event are
        // the run's outcomes read and each event counted once.
        let live = outcomes::count(self.bus.jetstream(), integration, run_id).await?;
        if live.total() < record.expected() || !self.exact_read_due(run_id) {
            return Ok(());
        }
        let counts = outcomes::exact_count(self.bus.jetstream(), integration, run_id).await?;
        if counts.total() < record.expected() {
            tracing::debug!(
                integration,
                run_id,
                live = live.total(),
                exact = counts.total(),
                "some events were recorded twice and others are still outstanding"
            );
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339();
        let mut won = false;
        self.runs
            .update(integration, run_id, |r| {
                won = needs_finalize(r);
                if won {
                    r.finalize = FinalizeState::Claimed {
                        by: self.replica.clone(),
                        at: now.clone(),
                    };
                }
                won
            })
            .await?;
        if !won {
            return Ok(());
        }
        let finalize = match self.client.finalize(run_id).await {
            Ok(Finalize::Finalized | Finalize::AlreadyFinalized) => FinalizeState::Finalized {
                by: self.replica.clone(),
                at: chrono::Utc::now().to_rfc3339(),
            },
            Err(err) if err.kind() == ErrorKind::Rejected && err.status() == Some(404) => {
                FinalizeState::NothingToFinalize
            }
            Err(err) => {
                tracing::warn!(integration, run_id, error = %err, "finalizing the portion failed; releasing the claim to retry");
                self.runs
                    .update(integration, run_id, |r| {
                        r.finalize = FinalizeState::Pending;
                        true
                    })
                    .await?;
                return Ok(());
            }
        };
        tracing::info!(
            integration,
            run_id,
            written = counts.written,
            unchanged = counts.unchanged,
            filtered = counts.filtered,
            dead_lettered = counts.dead_lettered,
            canceled = counts.canceled,
            ?finalize,
            "run finalized"
        );
        self.runs
            .update(integration, run_id, |r| {
                r.finalize = finalize.clone();
                r.counts = Some(counts);
                true
            })
            .await?;
        outcomes::purge(self.bus.jetstream(), integration, run_id).await?;
        Ok(())
    }
}

/// Whether `record` has ended — completed, or failed (see [`Finalizer::resumes`]) — and its
/// portion is not yet finalized (or its claim expired).
fn needs_finalize(record: &RunRecord) -> bool {
    if !matches!(record.state, RunState::Completed | RunState::Failed) {
        return false;
    }
    match &record.finalize {
        FinalizeState::Pending => true,
        FinalizeState::Claimed { at, .. } => chrono::DateTime::parse_from_rfc3339(at)
            .map(|at| {
                chrono::Utc::now()
                    .signed_duration_since(at)
                    .to_std()
                    .unwrap_or_default()
                    > CLAIM_EXPIRY
            })
            .unwrap_or(true),
        FinalizeState::Finalized { .. } | FinalizeState::NothingToFinalize => false,
    }
}

async fn next_entry(
    watch: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}
