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
//! The decision is taken once and kept in the run's checkpoint before anything is published:
//! a run interrupted while publishing its removals publishes the same ones again when it is
//! resumed (dedup ids drop the repeats) instead of deciding anew against a moved baseline.

use peoplesync_bus::removals::{Decision, HeldRemovals, RemovalState};
use peoplesync_bus::seen::{IdReader, ReadError};
use peoplesync_bus::{Bus, BusError, Publisher, codec, names};

use crate::config::RemovalPolicy;
use crate::event::EventBuilder;
use crate::journal::Journal;

/// Why removals could not be settled or released.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The approval names a run without held removals.
    #[error("{0}")]
    NotHeld(String),
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
                    "the source filter changed since the baseline run; holding its removals for approval"
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

/// Publishes the removals between `baseline` and `run_id` as events of run `publish_in`,
/// numbered after `first_sequence`; returns how many.
pub async fn publish(
    bus: &Bus,
    publisher: &mut Publisher,
    events: &EventBuilder,
    integration: &str,
    baseline: &str,
    run_id: &str,
    first_sequence: u64,
) -> Result<u64, BusError> {
    let subject = names::workers_subject(integration);
    let observed = codec::now();
    let seen = bus.seen();
    let mut diff = diff(bus, integration, baseline, run_id).await?;
    let mut published = 0;
    while let Some(id) = diff.next_removed().await? {
        published += 1;
        // A worker still listed but gone has their upsert kept with the list: offboard them
        // with what was last known of them.
        let event = match seen.kept(integration, run_id, &id).await? {
            Some(kept) => events.ended(&kept, first_sequence + published, observed)?,
            None => events.removed(&id, first_sequence + published, observed),
        };
        publisher
            .publish(subject.clone(), event.msg_id, event.payload, None)
            .await?;
    }
    publisher.flush().await?;
    Ok(published)
}

/// Carries out a run's decision: publishes its removals (if any), then moves the baseline or
/// records the held removals, purging lists nobody needs any more. An earlier run whose held
/// removals this run supersedes (holding them again) or drops (publishing, or becoming the
/// baseline) gives its count up in its run record, through `journal`, so that status and the
/// removals-held gauge count each held removal once. `upserts` is how many upsert events the
/// run published (its removal events are numbered after them). Safe to repeat.
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
) -> Result<(), BusError> {
    let integration = journal.integration();
    let seen = bus.seen();
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
            return Ok(());
        }
        _ => {
            if let (Decision::Publish { count }, Some(baseline)) =
                (decision, state.baseline.as_deref())
                && *count > 0
                && baseline != run_id
            {
                publish(
                    bus,
                    publisher,
                    events,
                    integration,
                    baseline,
                    run_id,
                    upserts,
                )
                .await?;
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
    bus.removals().save(integration, &state).await
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

/// Starts releasing `run_id`'s held removals: checks they are held and fixes the id of the run
/// that will publish them (reused if an earlier approval was interrupted).
pub async fn begin_release(
    bus: &Bus,
    integration: &str,
    run_id: &str,
) -> Result<Release, RemovalError> {
    let mut state = bus.removals().load(integration).await?;
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

/// Finishes a release: the held run's list becomes the baseline.
pub async fn finish_release(
    bus: &Bus,
    integration: &str,
    release: &Release,
) -> Result<(), BusError> {
    bus.seen().purge_run(integration, &release.baseline).await?;
    let state = RemovalState {
        baseline: Some(release.held_run.clone()),
        held: None,
        baseline_filter: Some(release.filter.clone()),
        // Not known here: the held run's record answers while it lasts.
        baseline_published: None,
    };
    bus.removals().save(integration, &state).await
}
