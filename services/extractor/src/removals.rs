//! Removals: at the end of a full run, the workers listed by the baseline run (the last one
//! whose removals were settled) but not by this one are published as `removed` events, unless
//! there are too many of them (the accidental-deletion guard). Then none is published, the run
//! is marked with `removals_held`, and an operator's approval releases them.
//!
//! Which run is the baseline, and which run's removals are held, is kept in KV
//! `peoplesync_state` under `removals.<integration>`. Counting and publishing are streaming
//! merges of two sorted id lists ([`crate::seen`]), so they take constant memory.
//!
//! Workers still listed who have left (see [`crate::ended`]) are left out of a run's list, so
//! they count as removals here too, and are published as `ended` events carrying the worker.
//!
//! The decision is taken once and kept in the run's checkpoint before anything is published:
//! a run interrupted while publishing its removals publishes the same ones again when it is
//! resumed (dedup ids drop the repeats) instead of deciding anew against a moved baseline.

use async_nats::jetstream::kv;
use bytes::Bytes;
use peoplesync_bus::codec;
use peoplesync_bus::{Bus, BusError, Publisher, names};
use serde::{Deserialize, Serialize};

use crate::config::RemovalPolicy;
use crate::event::EventBuilder;
use crate::seen::{self, IdReader, ReadError};

/// What a finished listing does about workers that disappeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "removals")]
pub enum Decision {
    /// No earlier full run to compare with: this run becomes the baseline.
    FirstRun,
    /// Publish these removals (possibly none) with the run.
    Publish {
        /// Workers no longer listed.
        count: u64,
    },
    /// Too many: hold them for approval.
    Held {
        /// Workers no longer listed.
        count: u64,
        /// Workers the baseline listed.
        baseline: u64,
    },
    /// The lists could not be compared (ids out of order); publish none, keep the baseline.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// Removals published with the run.
    pub fn published(&self) -> u64 {
        match self {
            Decision::Publish { count } => *count,
            _ => 0,
        }
    }

    /// Removals held for approval.
    pub fn held(&self) -> u64 {
        match self {
            Decision::Held { count, .. } => *count,
            _ => 0,
        }
    }
}

/// Removals waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRemovals {
    /// The run that found them (its list is the new state of the org).
    pub run_id: String,
    /// How many.
    pub count: u64,
    /// The run that publishes them once approved, chosen before it starts so a retried
    /// approval reuses it.
    #[serde(default)]
    pub release_run: Option<String>,
    /// The source filter the holding run listed with (`""` for none).
    #[serde(default)]
    pub filter: String,
}

/// Per integration: the baseline list and any held removals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalState {
    /// The run whose list the next full run is compared with.
    pub baseline: Option<String>,
    /// Removals held for approval, if any.
    pub held: Option<HeldRemovals>,
    /// The source filter the baseline listed with (`""` for none; `None` when not recorded).
    /// A run listing with another filter sees workers "disappear" that merely fall outside
    /// the new filter, so its removals are always held for approval.
    #[serde(default)]
    pub baseline_filter: Option<String>,
    /// The baseline left out workers who had left (see [`crate::ended`]). A baseline recorded
    /// before leavers existed lists them: compared with a newer list, every worker who left
    /// long ago would look removed, so workers the newer run kept as leavers are skipped.
    #[serde(default)]
    pub leavers_judged: bool,
}

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

fn state_key(integration: &str) -> String {
    format!("removals.{integration}")
}

/// The removal state of `integration`.
pub async fn load_state(state: &kv::Store, integration: &str) -> Result<RemovalState, BusError> {
    let key = state_key(integration);
    match state
        .get(&key)
        .await
        .map_err(|e| BusError::kv(names::STATE_BUCKET, "read", &key, e))?
    {
        None => Ok(RemovalState::default()),
        Some(value) => serde_json::from_slice(&value).map_err(|e| BusError::Decode {
            what: "removal state",
            source: e.into(),
        }),
    }
}

async fn save_state(
    state: &kv::Store,
    integration: &str,
    value: &RemovalState,
) -> Result<(), BusError> {
    let key = state_key(integration);
    let bytes = serde_json::to_vec(value)
        .map_err(|e| BusError::kv(names::STATE_BUCKET, "encode", &key, e))?;
    state
        .put(&key, Bytes::from(bytes))
        .await
        .map_err(|e| BusError::kv(names::STATE_BUCKET, "write", &key, e))?;
    Ok(())
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
    /// With a baseline that listed leavers: skip the workers `current` kept as leavers.
    legacy: Option<Legacy>,
}

/// What skipping leavers listed by a legacy baseline needs.
struct Legacy {
    js: async_nats::jetstream::Context,
    integration: String,
    run: String,
}

async fn diff(bus: &Bus, integration: &str, baseline: &str, run: &str) -> Result<Diff, ReadError> {
    let state = load_state(bus.state_kv(), integration).await?;
    let legacy = (!state.leavers_judged).then(|| Legacy {
        js: bus.jetstream().clone(),
        integration: integration.to_owned(),
        run: run.to_owned(),
    });
    Ok(Diff {
        baseline: IdReader::open(bus.jetstream(), integration, baseline).await?,
        current: IdReader::open(bus.jetstream(), integration, run).await?,
        head: None,
        started: false,
        legacy,
    })
}

impl Diff {
    /// The next worker removed since the baseline.
    async fn next_removed(&mut self) -> Result<Option<String>, ReadError> {
        loop {
            let Some(id) = self.next_missing().await? else {
                return Ok(None);
            };
            match &self.legacy {
                Some(l)
                    if crate::ended::kept(&l.js, &l.integration, &l.run, &id)
                        .await?
                        .is_some() => {}
                _ => return Ok(Some(id)),
            }
        }
    }

    async fn next_missing(&mut self) -> Result<Option<String>, ReadError> {
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
    let state = load_state(bus.state_kv(), integration).await?;
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
        Ok((count, _)) => Ok(Decision::Publish { count }),
        Err(ReadError::Bus(err)) => Err(err),
        Err(err @ ReadError::Unordered { .. }) => Ok(Decision::Skipped {
            reason: err.to_string(),
        }),
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
    let mut diff = match diff(bus, integration, baseline, run_id).await {
        Ok(diff) => diff,
        Err(ReadError::Bus(err)) => return Err(err),
        Err(err) => {
            return Err(BusError::Decode {
                what: "seen list",
                source: err.into(),
            });
        }
    };
    let mut published = 0;
    loop {
        let id = match diff.next_removed().await {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(ReadError::Bus(err)) => return Err(err),
            Err(err) => {
                return Err(BusError::Decode {
                    what: "seen list",
                    source: err.into(),
                });
            }
        };
        published += 1;
        // A worker still listed but gone has their upsert kept with the list: offboard them
        // with what was last known of them.
        let event = match crate::ended::kept(bus.jetstream(), integration, run_id, &id).await? {
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
/// records the held removals, purging lists nobody needs any more. Safe to repeat.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    bus: &Bus,
    publisher: &mut Publisher,
    events: &EventBuilder,
    integration: &str,
    run_id: &str,
    filter: Option<&str>,
    decision: &Decision,
    first_sequence: u64,
) -> Result<(), BusError> {
    let js = bus.jetstream();
    let mut state = load_state(bus.state_kv(), integration).await?;
    match decision {
        Decision::Held { count, .. } => {
            if let Some(previous) = state.held.take()
                && previous.run_id != run_id
                && state.baseline.as_deref() != Some(previous.run_id.as_str())
            {
                seen::purge_run(js, integration, &previous.run_id).await?;
            }
            state.held = Some(HeldRemovals {
                run_id: run_id.to_owned(),
                count: *count,
                release_run: None,
                filter: filter.unwrap_or_default().to_owned(),
            });
        }
        Decision::Skipped { reason } => {
            // The lists could not be compared: keep the baseline and any held removals (the
            // next run compares again) and drop only this run's list, which nobody needs.
            tracing::warn!(integration, run_id, %reason,
                "removals could not be computed for this run; the baseline and any held removals are kept for the next run");
            if state.baseline.as_deref() != Some(run_id)
                && state.held.as_ref().is_none_or(|h| h.run_id != run_id)
            {
                seen::purge_run(js, integration, run_id).await?;
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
                    first_sequence,
                )
                .await?;
            }
            // Purge before moving the baseline: a crash in between leaves a baseline whose list
            // is gone, which compares as "nobody was listed" (no removals), never as too many.
            for old in [state.baseline.take(), state.held.take().map(|h| h.run_id)]
                .into_iter()
                .flatten()
                .filter(|old| old != run_id)
            {
                seen::purge_run(js, integration, &old).await?;
            }
            state.baseline = Some(run_id.to_owned());
            state.baseline_filter = Some(filter.unwrap_or_default().to_owned());
            state.leavers_judged = true;
        }
    }
    save_state(bus.state_kv(), integration, &state).await
}

/// The leavers `integration` holds for approval, at most `limit` of them listed: each held
/// removal, with the worker as last listed when they are still listed but have left.
pub async fn held_leavers(
    bus: &Bus,
    integration: &str,
    limit: usize,
) -> Result<peoplesync_bus::control::HeldLeavers, BusError> {
    use peoplesync_bus::leavers::LeaverEntry;
    let state = load_state(bus.state_kv(), integration).await?;
    let (Some(held), Some(baseline)) = (state.held, state.baseline) else {
        return Ok(peoplesync_bus::control::HeldLeavers::default());
    };
    let unreadable = |err: ReadError| match err {
        ReadError::Bus(err) => err,
        err => BusError::Decode {
            what: "seen list",
            source: err.into(),
        },
    };
    let mut diff = diff(bus, integration, &baseline, &held.run_id)
        .await
        .map_err(unreadable)?;
    let mut leavers = Vec::new();
    while leavers.len() < limit {
        let Some(id) = diff.next_removed().await.map_err(unreadable)? else {
            break;
        };
        let kept = crate::ended::kept(bus.jetstream(), integration, &held.run_id, &id).await?;
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
    let mut state = load_state(bus.state_kv(), integration).await?;
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
            save_state(bus.state_kv(), integration, &state).await?;
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
    seen::purge_run(bus.jetstream(), integration, &release.baseline).await?;
    let state = RemovalState {
        baseline: Some(release.held_run.clone()),
        held: None,
        baseline_filter: Some(release.filter.clone()),
        leavers_judged: true,
    };
    save_state(bus.state_kv(), integration, &state).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_serialise_for_the_checkpoint() {
        let decision = Decision::Held {
            count: 60,
            baseline: 1000,
        };
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(text, r#"{"removals":"held","count":60,"baseline":1000}"#);
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), decision);
        assert_eq!(decision.held(), 60);
        assert_eq!(decision.published(), 0);
        assert_eq!(Decision::Publish { count: 3 }.published(), 3);
    }
}
