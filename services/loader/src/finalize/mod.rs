//! Finalizing a run's Oomnitza portion exactly once across replicas: when a run is completed
//! (or failed for good) and its outcomes account for every published event, one replica wins a compare-and-set
//! claim on the run record, calls finalize, and records the final counts. A claim left by a
//! replica that died is taken over after [`CLAIM_EXPIRY`]. A finalized run is then checked
//! against what Oomnitza holds ([`crate::verify`]). A run whose portion an administrator
//! canceled in Oomnitza is finalized too (best effort, as Oomnitza's connector does) but not
//! checked: it is closed as canceled, whatever it had posted counts as canceled, and the
//! applied hashes it wrote are dropped so the next run sends those records again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peoplesync_bus::{
    Bus, BusError, CancelNote, FinalizeState, OutcomeCounts, RunRecord, RunState, Runs,
    Verification, outcomes,
};
use peoplesync_oomnitza::OomnitzaClient;
use peoplesync_runtime::watch::next_change;

mod answer;
mod exact_reads;
mod failing;

use exact_reads::ExactReads;
use failing::FailingFinalizes;

use crate::gates::Gates;
use crate::retention;
use crate::verify::{self, HAND_BACK_AFTER, Verifier, needs_verify};
use crate::webhook::LeaversWebhook;
use peoplesync_bus::leavers::LeaverEntry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a finalize claim holds before another replica may take it over.
pub const CLAIM_EXPIRY: Duration = Duration::from_secs(120);
/// How often every open run is checked, in case a poke or a watch event was missed.
const SWEEP: Duration = Duration::from_secs(5);
/// How often run records past their retention are looked for.
const RETENTION_CHECK: Duration = Duration::from_secs(3600);
/// How often poked runs are checked at most.
const POKE_INTERVAL: Duration = Duration::from_millis(100);
/// A run this close to done (events not yet counted) is checked on every poke instead of at
/// the next [`POKE_INTERVAL`], so it is finalized as soon as its last batch settles. Each
/// replica settles at most this many events' batches in that mode per run.
const NEAR_END_EVENTS: u64 = 5_000;
/// Finalizes portions for one replica.
pub struct Finalizer {
    bus: Bus,
    runs: Runs,
    client: OomnitzaClient,
    replica: String,
    /// How long a settled run's record is kept after it finished (`None`: forever).
    retention: Option<Duration>,
    /// When each run's outcomes were last read in full, and how long until the next read.
    exact_reads: Mutex<ExactReads>,
    /// Checks finalized runs against what Oomnitza holds.
    verifier: Verifier,
    /// Where the leavers report of each finalized run is posted.
    webhook: Option<LeaversWebhook>,
    /// Closed when Oomnitza refuses the token on a finalize, as on a post.
    gates: Gates,
    /// Finalizes failing on this replica, on `/readyz`.
    failing: FailingFinalizes,
}

/// A request to look at one run now: (integration, run id).
pub type Poke = (String, String);

impl Finalizer {
    /// A finalizer acting as `replica`, removing settled run records `retention` after they
    /// finished (never with `None`), posting leavers reports to `webhook`, and closing `gates`
    /// when Oomnitza refuses its credentials.
    pub fn new(
        bus: Bus,
        client: OomnitzaClient,
        replica: String,
        retention: Option<Duration>,
        verifier: Verifier,
        webhook: Option<LeaversWebhook>,
        gates: Gates,
    ) -> Finalizer {
        let runs = bus.runs();
        let failing = FailingFinalizes::new(gates.readiness().clone());
        Finalizer {
            bus,
            runs,
            client,
            replica,
            retention,
            exact_reads: Mutex::default(),
            verifier,
            webhook,
            gates,
            failing,
        }
    }

    /// Checks the finalized run `run_id` against Oomnitza in a task of its own (it waits for
    /// Oomnitza to finish processing); the claim on the run record keeps it to one replica. A
    /// check NATS stopped answering is handed back after [`HAND_BACK_AFTER`], for a sweep to
    /// take up again; another failure leaves the claim to expire.
    fn spawn_verify(&self, integration: &str, run_id: &str) {
        let verifier = self.verifier.clone();
        let (integration, run_id) = (integration.to_owned(), run_id.to_owned());
        tokio::spawn(async move {
            let Err(err) = verifier.verify(&integration, &run_id).await else {
                return;
            };
            if !err.is_unanswered() {
                tracing::warn!(integration, run_id, error = %err, "checking the run against Oomnitza failed; another sweep retries after the claim expires");
                return;
            }
            tracing::warn!(integration, run_id, error = %err,
                "checking the run against Oomnitza stopped: NATS did not answer; the check is taken up again in {} s",
                HAND_BACK_AFTER.as_secs());
            if let Err(err) = verifier
                .hand_back(&integration, &run_id, HAND_BACK_AFTER)
                .await
            {
                tracing::warn!(integration, run_id, error = %err, "cannot hand the check back; another sweep retries after the claim expires");
            }
        });
    }

    /// Whether `run_id`'s outcomes may be read in full now (see [`ExactReads`]).
    fn exact_read_due(&self, run_id: &str) -> bool {
        self.exact_reads
            .lock()
            .map_or(true, |mut reads| reads.due(run_id, Instant::now()))
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
        let mut settled = Settled::default();
        // Runs poked since the last check: a run's batches settle many times a second, and one
        // check per POKE_INTERVAL sees the same as one per batch.
        let mut poked: HashSet<Poke> = HashSet::new();
        let mut poke_timer = tokio::time::interval(POKE_INTERVAL);
        poke_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Runs whose last check found them within NEAR_END_EVENTS of done.
        let mut near_end: HashSet<Poke> = HashSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                poke = pokes.recv() => {
                    let Some(poke) = poke else { return };
                    if near_end.contains(&poke) {
                        let remaining = self.check(&poke.0, &poke.1).await;
                        if remaining.is_none_or(|n| n > NEAR_END_EVENTS) {
                            near_end.remove(&poke);
                        }
                    } else {
                        poked.insert(poke);
                    }
                }
                _ = poke_timer.tick(), if !poked.is_empty() => {
                    for poke in std::mem::take(&mut poked) {
                        let remaining = self.check(&poke.0, &poke.1).await;
                        if remaining.is_some_and(|n| n <= NEAR_END_EVENTS) {
                            near_end.insert(poke);
                        }
                    }
                }
                entry = next_change(&mut watch) => {
                    match entry {
                        Some(Ok(entry)) => {
                            if let Ok(record) = peoplesync_bus::runs::decode(&entry.value) {
                                self.check(&record.integration, &record.run_id).await;
                            }
                        }
                        Some(Err(err)) => tracing::debug!(error = %err, "run watch error"),
                        None => {
                            tracing::warn!("the run record watch ended (NATS connection or node lost); watching again at the next sweep");
                            watch = None;
                        }
                    }
                }
                _ = sweep.tick() => {
                    // Forget finalized runs (no more pokes come for them); runs still near
                    // their end are found again by their next coalesced check.
                    near_end.clear();
                    if watch.is_none() {
                        // The sweep finds every run meanwhile; the watch only makes it faster.
                        match self.runs.watch().await {
                            Ok(again) => {
                                tracing::info!("watching run records again");
                                watch = Some(again);
                            }
                            Err(err) => tracing::debug!(error = %err, "cannot watch run records yet"),
                        }
                    }
                    self.sweep(&mut settled).await;
                }
            }
        }
    }

    /// Checks every run not yet known to be settled. A settled run's record changes at most
    /// once more (approving its held removals), so it is read once per replica and then
    /// skipped: the sweep stays cheap however many runs history holds. Once an hour, settled
    /// runs past the retention are removed.
    async fn sweep(&self, settled: &mut Settled) {
        let keys = match self.runs.keys().await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list runs for finalizing");
                return;
            }
        };
        for key in keys {
            if settled.finished.contains_key(&key) {
                continue;
            }
            match self.runs.get_by_key(&key).await {
                Ok(Some(record)) if needs_finalize(&record) => {
                    self.check(&record.integration, &record.run_id).await;
                }
                Ok(Some(record)) => {
                    // Finalized or closed, here or by another replica.
                    self.failing.done(&record.integration, &record.run_id);
                    if needs_verify(&record) {
                        self.spawn_verify(&record.integration, &record.run_id);
                    } else if record.is_settled() {
                        settled
                            .finished
                            .insert(key, retention::finished_at(&record));
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(key, error = %err, "skipping an unreadable run record"),
            }
        }
        let Some(retention) = self.retention else {
            return;
        };
        if settled
            .retention_checked
            .is_some_and(|at| at.elapsed() < RETENTION_CHECK)
        {
            return;
        }
        settled.retention_checked = Some(Instant::now());
        let now = chrono::Utc::now();
        let due: Vec<String> = settled
            .finished
            .iter()
            .filter(|(_, finished)| retention::past_retention(**finished, now, retention))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            // Read again: the record may have changed (held removals approved) or gone.
            match self.runs.get_by_key(&key).await {
                Ok(Some(record))
                    if record.is_settled()
                        && record.removals_held == 0
                        && retention::past_retention(
                            retention::finished_at(&record),
                            now,
                            retention,
                        ) =>
                {
                    match self.runs.remove(&key).await {
                        Ok(()) => {
                            tracing::info!(key, "removed a run record past its retention");
                            settled.finished.remove(&key);
                        }
                        Err(err) => {
                            tracing::warn!(key, error = %err, "cannot remove an old run record")
                        }
                    }
                }
                Ok(None) => {
                    settled.finished.remove(&key);
                }
                Ok(Some(_)) => {}
                Err(err) => tracing::debug!(key, error = %err, "skipping an unreadable run record"),
            }
        }
    }

    /// Checks one run; returns how many of its events are not yet counted, when that was read
    /// and the run is not finalized.
    async fn check(&self, integration: &str, run_id: &str) -> Option<u64> {
        match self.try_finalize(integration, run_id).await {
            Ok(remaining) => remaining,
            Err(err) => {
                tracing::warn!(integration, run_id, error = %err, "finalize check failed; will retry");
                None
            }
        }
    }

    /// Whether a failed run will be resumed: the extractor keeps a run's checkpoint exactly
    /// while it means to resume it (quota, transient failures) and clears it when the failure
    /// is final (configuration), so a failed run without its checkpoint is over and its portion
    /// can be closed with what it loaded. Likewise a failed approval's run while the removals
    /// it was releasing are still held for it: approving them again finishes that run.
    async fn resumes(&self, integration: &str, run_id: &str) -> Result<bool, BusError> {
        let checkpoint = self.bus.checkpoints().load(integration).await?;
        if checkpoint.is_some_and(|c| c.run_id == run_id) {
            return Ok(true);
        }
        let removals = self.bus.removals().load(integration).await?;
        Ok(removals
            .held
            .is_some_and(|held| held.release_run.as_deref() == Some(run_id)))
    }

    /// Finalizes the run if every event is accounted for; returns the events not yet counted
    /// (by the live counts) when the run still waits for them.
    async fn try_finalize(&self, integration: &str, run_id: &str) -> Result<Option<u64>, BusError> {
        let Some((record, _)) = self.runs.get(integration, run_id).await? else {
            return Ok(None);
        };
        if needs_verify(&record) {
            self.spawn_verify(integration, run_id);
            return Ok(None);
        }
        if !needs_finalize(&record) {
            return Ok(None);
        }
        if record.state == RunState::Failed && self.resumes(integration, run_id).await? {
            return Ok(None);
        }
        // The live counts are cheap and never too low; only when they cover every event are
        // the run's outcomes read and each event counted once.
        let live = outcomes::count(&self.bus, integration, run_id).await?;
        let remaining = record.expected().saturating_sub(live.total());
        if remaining > 0 || !self.exact_read_due(run_id) {
            return Ok(Some(remaining));
        }
        let counts = outcomes::exact_count(&self.bus, integration, run_id).await?;
        if counts.total() < record.expected() {
            tracing::debug!(
                integration,
                run_id,
                live = live.total(),
                exact = counts.total(),
                "some events were recorded twice and others are still outstanding"
            );
            return Ok(Some(record.expected().saturating_sub(counts.total())));
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
            return Ok(None);
        }
        // An administrator's cancel: noticed while loading, or read now (it can come after the
        // last batch). A portion that cannot be read is finalized as usual, and a `409` to
        // that finalize is told apart by reading the portion again (see below).
        let status = self.client.portion(run_id).await.ok().flatten();
        let canceled = record.canceled.is_some() || status.as_ref().is_some_and(|s| s.canceled);
        if canceled {
            // Oomnitza's own connector finalizes a canceled portion too (it stops sending, then
            // finalizes as at the end of any run), so this does as well; a tenant that answers
            // `409` to it, or any failure, changes nothing: the run ends canceled either way.
            if !status.as_ref().is_some_and(|s| s.finalized)
                && let Err(err) = self.client.finalize(run_id).await
            {
                tracing::info!(integration, run_id, error = %err,
                    "finalizing the canceled portion failed; it stays canceled");
            }
            self.close_canceled(integration, run_id, counts).await?;
            return Ok(None);
        }
        match self
            .finalize_portion(run_id, status.as_ref(), counts.written)
            .await
        {
            answer::Next::Record(finalize) => {
                self.record_finalized(integration, run_id, counts, finalize)
                    .await
            }
            answer::Next::CloseCanceled => {
                self.close_canceled(integration, run_id, counts).await?;
                Ok(None)
            }
            answer::Next::RetryLater(why) => self.retry_later(integration, run_id, &why).await,
        }
    }

    /// Records run `run_id`'s portion as `finalize`d (or as having nothing to finalize) with its
    /// final `counts`: trims the work stream, reports the leavers, and checks what Oomnitza
    /// applied when records were written.
    async fn record_finalized(
        &self,
        integration: &str,
        run_id: &str,
        counts: OutcomeCounts,
        finalize: FinalizeState,
    ) -> Result<Option<u64>, BusError> {
        // Records Oomnitza accepted are checked against what it holds; the outcomes (which
        // keep what was sent) stay until then.
        let verify = self.verifier.enabled()
            && counts.written > 0
            && matches!(finalize, FinalizeState::Finalized { .. });
        tracing::info!(
            integration,
            run_id,
            written = counts.written,
            unchanged = counts.unchanged,
            filtered = counts.filtered,
            dead_lettered = counts.dead_lettered,
            canceled = counts.canceled,
            ?finalize,
            verify,
            "run finalized"
        );
        match peoplesync_bus::consume::trim_acknowledged(&self.bus, integration).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                integration,
                removed,
                "removed acknowledged events the work stream still held (left by a NATS server crash)"
            ),
            Err(err) => tracing::warn!(integration, error = %err,
                "cannot remove acknowledged events from the work stream; they only take space"),
        }
        let (with_assets, report) = self
            .report_leavers(integration, run_id, counts.leavers)
            .await;
        self.runs
            .update(integration, run_id, |r| {
                r.finalize = finalize.clone();
                r.counts = Some(counts);
                r.leavers_with_assets = with_assets;
                r.verification = verify.then(|| Verification::pending(counts.written));
                true
            })
            .await?;
        self.failing.done(integration, run_id);
        self.post_leavers(integration, run_id, report);
        if verify {
            self.spawn_verify(integration, run_id);
        } else {
            outcomes::purge(&self.bus, integration, run_id).await?;
        }
        Ok(None)
    }

    /// A finalize that failed for `why`: logged, noted on `/readyz` ([`FailingFinalizes`]),
    /// and its claim released so that the next check (on this replica or another) tries again.
    async fn retry_later(
        &self,
        integration: &str,
        run_id: &str,
        why: &str,
    ) -> Result<Option<u64>, BusError> {
        tracing::warn!(integration, run_id, "{why}; releasing the claim to retry");
        self.failing.failed(integration, run_id, why);
        self.release_claim(integration, run_id).await?;
        Ok(None)
    }

    /// Gives up this replica's claim on the run's finalize, so that the next check (on this
    /// replica or another) tries it again.
    async fn release_claim(&self, integration: &str, run_id: &str) -> Result<(), BusError> {
        self.runs
            .update(integration, run_id, |r| {
                r.finalize = FinalizeState::Pending;
                true
            })
            .await?;
        Ok(())
    }

    /// The run's leavers report (when it had `leavers`), for the webhook, and how many of them
    /// still held assets.
    async fn report_leavers(
        &self,
        integration: &str,
        run_id: &str,
        leavers: u64,
    ) -> (u64, Vec<LeaverEntry>) {
        crate::leavers::finalized(&self.bus, (integration, run_id), leavers).await
    }

    /// Closes a run whose portion was canceled in Oomnitza: every record it posted counts as
    /// canceled, and the applied hashes it wrote are dropped so the
    /// next run sends those records again.
    async fn close_canceled(
        &self,
        integration: &str,
        run_id: &str,
        mut counts: OutcomeCounts,
    ) -> Result<(), BusError> {
        let bus = &self.bus;
        verify::forget_written(bus, integration, run_id, None).await?;
        counts.canceled += std::mem::take(&mut counts.written);
        // The leavers handled before the cancel are reported as usual: IT still has their
        // assets to recover.
        let (with_assets, report) = self
            .report_leavers(integration, run_id, counts.leavers)
            .await;
        let at = chrono::Utc::now().to_rfc3339();
        tracing::warn!(
            integration,
            run_id,
            canceled = counts.canceled,
            "the run's portion was canceled in Oomnitza; the run is closed as canceled"
        );
        verify::close_check(bus, &self.runs, integration, run_id, "canceled", |r| {
            r.finalize = FinalizeState::Canceled {
                by: self.replica.clone(),
                at: at.clone(),
            };
            r.counts = Some(counts);
            r.leavers_with_assets = with_assets;
            r.canceled.get_or_insert_with(|| CancelNote {
                noticed_by: self.replica.clone(),
                at: at.clone(),
            });
            true
        })
        .await?;
        self.failing.done(integration, run_id);
        self.post_leavers(integration, run_id, report);
        Ok(())
    }

    /// Posts run `run_id`'s leavers `report` to the webhook, if one is configured, once the
    /// run is recorded finalized or closed.
    fn post_leavers(&self, integration: &str, run_id: &str, report: Vec<LeaverEntry>) {
        if let Some(webhook) = self.webhook.as_ref().filter(|_| !report.is_empty()) {
            webhook.spawn_post(integration, run_id, report);
        }
    }
}

/// What the sweep knows of settled runs.
#[derive(Default)]
struct Settled {
    /// Run record key → when the run finished.
    finished: HashMap<String, Option<chrono::DateTime<chrono::Utc>>>,
    /// When runs past the retention were last looked for.
    retention_checked: Option<Instant>,
}

/// Whether `record` has ended — completed, or failed (see [`Finalizer::resumes`]) — and its
/// portion is not yet finalized (or its claim expired).
fn needs_finalize(record: &RunRecord) -> bool {
    if !matches!(record.state, RunState::Completed | RunState::Failed) {
        return false;
    }
    match &record.finalize {
        FinalizeState::Pending => true,
        FinalizeState::Claimed { at, .. } => verify::expired(at, CLAIM_EXPIRY),
        FinalizeState::Finalized { .. }
        | FinalizeState::NothingToFinalize
        | FinalizeState::Canceled { .. } => false,
    }
}
