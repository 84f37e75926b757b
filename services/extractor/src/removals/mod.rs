//! Removals: at the end of a full run, the workers listed by the baseline run (the last one
//! whose removals were settled) but not by this one are published as `removed` events, unless
//! there are too many of them (the accidental-deletion guard). Then none is published, the run
//! is marked with `removals_held`, and an operator's approval releases them.
//!
//! Which run is the baseline, and which run's removals are held, is the bus's removal state
//! (`Bus::removals`). Counting and publishing are streaming merges of two sorted id lists (the
//! runs' seen lists, `Bus::seen`), so they take constant memory.
//!
//! Workers still listed who have left (see [`crate::ended`]) are left out of a run's list, so
//! they count as removals here too, and are published as `ended` events carrying the worker.
//!
//! With a `source_filter`, a worker no longer listed may only have moved out of the filter
//! (a transfer to another country, say). Before one is published as `removed`, Sage People is
//! asked for them by id ([`LeaverCheck`]): one who is gone, or who has left by the listing's
//! own rule, is published; one still employed is not a leaver and is logged instead. One API
//! call per such worker, so at most what the hold thresholds let through per run.
//!
//! The decision is taken once and kept in the run's checkpoint before anything is published:
//! a run interrupted while publishing its removals publishes the same ones again when it is
//! resumed (dedup ids drop the repeats) instead of deciding anew against a moved baseline.

mod publish;

use peoplesync_bus::removals::{Decision, HeldRemovals, RemovalState};
use peoplesync_bus::seen::{IdReader, ReadError};
use peoplesync_bus::{Bus, BusError, Publisher, codec};

use crate::config::RemovalPolicy;
use crate::event::EventBuilder;
use crate::journal::Journal;
pub use publish::{LeaverCheck, PublishError, Published, publish};

/// Why removals could not be settled or released.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The approval names a run without held removals.
    #[error("{0}")]
    NotHeld(String),
    /// A rebaseline of removals an approval has begun publishing.
    #[error("{0}")]
    Started(String),
}

/// Counts the workers `baseline` listed and `run` did not, and how many `baseline` listed.
async fn count(
    bus: &Bus,
    integration: &str,
    baseline: &str,
    run: &str,
) -> Result<(u64, u64), ReadError> {
    let mut removed = 0;
    let mut reader = diff(bus, integration, baseline, run).await?;
    while reader.next_removed().await?.is_some() {
        removed += 1;
    }
    Ok((removed, reader.baseline.read()))
}

/// A streaming merge yielding the ids of `baseline` missing from `current`.
struct Diff {
    baseline: IdReader,
    current: IdReader,
    head: Option<String>,
    started: bool,
}

async fn diff(bus: &Bus, integration: &str, baseline: &str, run: &str) -> Result<Diff, ReadError> {
    let seen = bus.seen();
    Ok(Diff {
        baseline: seen.reader(integration, baseline).await?,
        current: seen.reader(integration, run).await?,
        head: None,
        started: false,
    })
}

impl Diff {
    /// The next worker removed since the baseline: listed in it, missing from the current list.
    async fn next_removed(&mut self) -> Result<Option<String>, ReadError> {
        if !self.started {
            self.head = self.current.next().await?;
            self.started = true;
        }
        while let Some(old) = self.baseline.next().await? {
            loop {
                match self.head.as_deref() {
                    Some(head) if head < old.as_str() => self.head = self.current.next().await?,
                    Some(head) if head == old.as_str() => break,
                    _ => return Ok(Some(old)),
                }
            }
        }
        // Drain the current list so that an out-of-order id anywhere is still noticed.
        while self.head.is_some() {
            self.head = self.current.next().await?;
        }
        Ok(None)
    }
}

/// Decides what run `run_id` does about removals.
pub async fn decide(
    bus: &Bus,
    integration: &str,
    run_id: &str,
    filter: Option<&str>,
    policy: &RemovalPolicy,
) -> Result<Decision, BusError> {
    let state = bus.removals().load(integration).await?;
    let filter_changed = state
        .baseline_filter
        .as_deref()
        .is_some_and(|f| f != filter.unwrap_or_default());
    let Some(baseline) = state.baseline.filter(|b| b != run_id) else {
        return Ok(Decision::FirstRun);
    };
    match count(bus, integration, &baseline, run_id).await {
        Ok((count, listed)) if policy.holds(count, listed) || (filter_changed && count > 0) => {
            if filter_changed {
                tracing::warn!(
                    integration,
                    run_id,
                    count,
                    "the source filter changed since the baseline run; holding its removals for approval \
                     (approving publishes only those Sage People says left; approve-removals \
                     --rebaseline accepts this run's list as the baseline with no leaver action)"
                );
            }
            Ok(Decision::Held {
                count,
                baseline: listed,
            })
        }
        Ok((0, 0)) => {
            // Nobody listed by the baseline: an empty org then, or a list that is gone. Gone,
            // it would read as "nobody left" for ever after; say so, and start again from here.
            // What the baseline published is kept with it; a state from before that was kept
            // is answered by the baseline's run record while it lasts.
            let listed_then = match state.baseline_published {
                Some(published) => Some(published),
                None => bus
                    .runs()
                    .get(integration, &baseline)
                    .await?
                    .map(|(record, _)| record.published),
            };
            if listed_then == Some(0) {
                Ok(Decision::Publish { count: 0 })
            } else {
                Ok(Decision::Rebased {
                    reason: format!(
                        "the seen list of the baseline run {baseline} is gone (lists are kept {} \
                         days; a crash while settling can also cut one), so who left since that \
                         run is not known; this run is the new baseline",
                        peoplesync_bus::seen::MAX_AGE.as_secs() / 86_400
                    ),
                })
            }
        }
        Ok((count, _)) => Ok(Decision::Publish { count }),
        Err(ReadError::Bus(err)) => Err(err),
        Err(ReadError::Unordered {
            run_id: listed_by,
            previous,
            next,
        }) => Ok(Decision::Skipped {
            reason: skipped_reason(&baseline, run_id, &listed_by, &previous, &next),
        }),
    }
}

/// Why removals were not computed, for the run record, the log and `syncctl`: whose list (the
/// baseline's or this run's) is out of order, and the two ids where the order breaks.
fn skipped_reason(
    baseline: &str,
    run_id: &str,
    listed_by: &str,
    previous: &str,
    next: &str,
) -> String {
    let order = format!("is not in ascending byte order ({previous} came before {next})");
    if listed_by == baseline {
        format!(
            "the seen list of the baseline run {baseline} {order}, so this run's list cannot be compared with it"
        )
    } else {
        // The only other list the comparison reads is this run's.
        format!(
            "the seen list of this run {run_id} {order}, so it cannot be compared with the baseline run {baseline}"
        )
    }
}

/// Carries out a run's decision: publishes its removals (if any), then moves the baseline or
/// records the held removals, purging lists nobody needs any more. An earlier run whose held
/// removals this run supersedes (holding them again) or drops (publishing, or becoming the
/// baseline) gives its count up in its run record, through `journal`, so that status and the
/// removals-held gauge count each held removal once. `upserts` is how many upsert events the
/// run published (its removal events are numbered after them); `check` tells, when the run
/// listed with a `source_filter`, who left from who moved out of it. Returns how many
/// removals were published, which the run records (the decision's count less the workers
/// still employed). Safe to repeat.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    bus: &Bus,
    journal: &Journal,
    publisher: &mut Publisher,
    events: &EventBuilder,
    run_id: &str,
    filter: Option<&str>,
    decision: &Decision,
    upserts: u64,
    check: LeaverCheck<'_>,
) -> Result<u64, PublishError> {
    let integration = journal.integration();
    let seen = bus.seen();
    let mut published = 0;
    let mut state = bus.removals().load(integration).await?;
    // Before the state is saved: a settle interrupted after it would no longer know the
    // earlier run, and its record would keep counting removals nobody can approve.
    if let Some(previous) = state.held.as_ref().filter(|h| h.run_id != run_id)
        && !matches!(decision, Decision::Skipped { .. })
    {
        journal.removals_released(&previous.run_id).await?;
    }
    match decision {
        Decision::Held { count, .. } => {
            if let Some(previous) = state.held.take()
                && previous.run_id != run_id
                && state.baseline.as_deref() != Some(previous.run_id.as_str())
            {
                seen.purge_run(integration, &previous.run_id).await?;
            }
            state.held = Some(HeldRemovals {
                run_id: run_id.to_owned(),
                count: *count,
                release_run: None,
                filter: filter.unwrap_or_default().to_owned(),
            });
        }
        Decision::Skipped { .. } => {
            // The lists could not be compared: keep the baseline and any held removals (the
            // next run compares again) and drop only this run's list, which nobody needs. The
            // run's completion records and logs why (`removals_skipped`).
            if state.baseline.as_deref() != Some(run_id)
                && state.held.as_ref().is_none_or(|h| h.run_id != run_id)
            {
                seen.purge_run(integration, run_id).await?;
            }
            return Ok(0);
        }
        _ => {
            if let (Decision::Publish { count }, Some(baseline)) =
                (decision, state.baseline.as_deref())
                && *count > 0
                && baseline != run_id
            {
                let done = publish(
                    bus,
                    publisher,
                    events,
                    integration,
                    baseline,
                    run_id,
                    upserts,
                    check.for_filter(filter),
                )
                .await?;
                journal.moved_out(run_id, done.moved_out).await?;
                published = done.leavers;
            }
            // Purge before moving the baseline: a crash in between leaves a baseline whose list
            // is gone, which the next run reports and replaces (`Rebased`), never as too many.
            for old in [state.baseline.take(), state.held.take().map(|h| h.run_id)]
                .into_iter()
                .flatten()
                .filter(|old| old != run_id)
            {
                seen.purge_run(integration, &old).await?;
            }
            state.baseline = Some(run_id.to_owned());
            state.baseline_filter = Some(filter.unwrap_or_default().to_owned());
            state.baseline_published = Some(upserts);
        }
    }
    bus.removals().save(integration, &state).await?;
    Ok(published)
}

/// The leavers `integration` holds for approval, at most `limit` of them listed: each held
/// removal, with the worker as last listed when they are still listed but have left.
pub async fn held_leavers(
    bus: &Bus,
    integration: &str,
    limit: usize,
) -> Result<peoplesync_bus::control::HeldLeavers, BusError> {
    use peoplesync_bus::leavers::LeaverEntry;
    let state = bus.removals().load(integration).await?;
    let (Some(held), Some(baseline)) = (state.held, state.baseline) else {
        return Ok(peoplesync_bus::control::HeldLeavers::default());
    };
    let mut diff = diff(bus, integration, &baseline, &held.run_id).await?;
    let seen = bus.seen();
    let mut leavers = Vec::new();
    while leavers.len() < limit {
        let Some(id) = diff.next_removed().await? else {
            break;
        };
        let kept = seen.kept(integration, &held.run_id, &id).await?;
        let worker = kept
            .and_then(|payload| codec::decode_worker_event(&payload).ok())
            .and_then(|event| event.worker);
        let entry = match worker {
            Some(worker) => LeaverEntry {
                reason: if worker.employment_active == Some(false) {
                    "inactive".into()
                } else {
                    "end_date".into()
                },
                name: worker.full_name,
                email: worker.email,
                end_date: worker.end_date,
                ..LeaverEntry::default()
            },
            None => LeaverEntry {
                reason: "removed".into(),
                ..LeaverEntry::default()
            },
        };
        leavers.push(LeaverEntry {
            worker_id: id,
            action: "held".into(),
            ..entry
        });
    }
    Ok(peoplesync_bus::control::HeldLeavers {
        run_id: Some(held.run_id),
        count: held.count,
        leavers,
    })
}

/// What releasing held removals needs to know about them.
#[derive(Debug, Clone)]
pub struct Release {
    /// The run that found them.
    pub held_run: String,
    /// The baseline they were counted against.
    pub baseline: String,
    /// The run that publishes them.
    pub release_run: String,
    /// How many were held.
    pub count: u64,
    /// The source filter the held run listed with.
    pub filter: String,
}

/// The removal state of `integration`, its held removals and its baseline, when the held
/// removals are `run_id`'s.
async fn held_by(
    bus: &Bus,
    integration: &str,
    run_id: &str,
) -> Result<(RemovalState, HeldRemovals, String), RemovalError> {
    let state = bus.removals().load(integration).await?;
    let (Some(held), Some(baseline)) = (state.held.clone(), state.baseline.clone()) else {
        return Err(RemovalError::NotHeld(format!(
            "integration {integration} has no removals held for approval"
        )));
    };
    if held.run_id != run_id {
        return Err(RemovalError::NotHeld(format!(
            "run {run_id} of {integration} has no removals held for approval; the held ones are run {}'s ({} removals)",
            held.run_id, held.count
        )));
    }
    Ok((state, held, baseline))
}

/// Starts releasing `run_id`'s held removals: checks they are held and fixes the id of the run
/// that will publish them (reused if an earlier approval was interrupted).
pub async fn begin_release(
    bus: &Bus,
    integration: &str,
    run_id: &str,
) -> Result<Release, RemovalError> {
    let (mut state, held, baseline) = held_by(bus, integration, run_id).await?;
    let release_run = match &held.release_run {
        Some(id) => id.clone(),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            state.held = Some(HeldRemovals {
                release_run: Some(id.clone()),
                ..held.clone()
            });
            bus.removals().save(integration, &state).await?;
            id
        }
    };
    Ok(Release {
        held_run: held.run_id,
        baseline,
        release_run,
        count: held.count,
        filter: held.filter,
    })
}

/// When this replica takes the integration's lease: an approval whose release run is still
/// `running` was stopped part-way (its extractor died, or lost the lease, while publishing),
/// since approvals run only on the lease holder. Its run is recorded failed, saying to approve
/// again, which finishes it; the loaders keep its portion open while the removals are held for
/// it. Returns the run, if there was one.
pub async fn fail_stopped_release(
    bus: &Bus,
    journal: &Journal,
) -> Result<Option<String>, BusError> {
    let state = bus.removals().load(journal.integration()).await?;
    let Some(HeldRemovals {
        run_id: held_run,
        release_run: Some(release_run),
        ..
    }) = state.held
    else {
        return Ok(None);
    };
    let running = journal
        .record(&release_run)
        .await?
        .is_some_and(|r| r.state == peoplesync_bus::RunState::Running);
    if !running {
        return Ok(None);
    }
    let message = format!(
        "the extractor stopped while this approval was publishing; approve run {held_run}'s \
         held removals again to finish this run"
    );
    journal
        .fail(
            &release_run,
            peoplesync_bus::RunState::Failed,
            crate::journal::Counts::default(),
            &message,
        )
        .await?;
    Ok(Some(release_run))
}

/// Makes `run_id`'s list the baseline without publishing its held removals, so that none of
/// them is acted on (after a deliberate change of the `source_filter`, say, when the workers
/// missing did not leave); returns how many were held. Refused once an approval has begun
/// publishing them: only finishing that approval completes its run.
pub async fn rebaseline(bus: &Bus, journal: &Journal, run_id: &str) -> Result<u64, RemovalError> {
    let integration = journal.integration();
    let (_, held, baseline) = held_by(bus, integration, run_id).await?;
    if let Some(release_run) = held.release_run {
        return Err(RemovalError::Started(format!(
            "an approval of run {run_id}'s held removals already began publishing them in run \
             {release_run}; approve them again without rebaselining to finish it"
        )));
    }
    // The held run gives its removals up before the baseline moves, as in a release.
    journal.removals_released(run_id).await?;
    make_baseline(bus, integration, &baseline, run_id, &held.filter).await?;
    Ok(held.count)
}

/// Finishes a release: the held run's list becomes the baseline.
pub async fn finish_release(
    bus: &Bus,
    integration: &str,
    release: &Release,
) -> Result<(), BusError> {
    make_baseline(
        bus,
        integration,
        &release.baseline,
        &release.held_run,
        &release.filter,
    )
    .await
}

/// Replaces `baseline` with `held_run` (listed with `filter`), dropping the held removals.
async fn make_baseline(
    bus: &Bus,
    integration: &str,
    baseline: &str,
    held_run: &str,
    filter: &str,
) -> Result<(), BusError> {
    bus.seen().purge_run(integration, baseline).await?;
    let state = RemovalState {
        baseline: Some(held_run.to_owned()),
        held: None,
        baseline_filter: Some(filter.to_owned()),
        // Not known here: the held run's record answers while it lasts.
        baseline_published: None,
    };
    bus.removals().save(integration, &state).await
}
