//! ReplayDeadLetters: the letters chosen (the newest per worker), their events published again
//! in a replay run of their own, and the letters removed; a leaver's letter is not replayed once
//! the latest full run lists the worker as employed again.

use std::collections::BTreeMap;

use peoplesync_bus::dlq::{self, DeadLetterRecord};
use peoplesync_bus::{Bus, RunRecord, RunState, codec, names};
use peoplesync_proto::v1 as pb;
use peoplesync_proto::v1::{WorkerEvent, WorkerEventKind};
use tonic::Status;

use super::{MAX_BATCH, MAX_SCAN, Scanned, Selection, known_run, scan};
use crate::status;

/// How long a replay waits for NATS to answer its run's completion.
const COMPLETION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How old a replay's lock must be before another replay takes it over: longer than a replay
/// lasts (a scan of at most [`MAX_SCAN`] letters, [`MAX_BATCH`] events published, the
/// completion's patience), so only the lock of a replica that died is taken over.
const REPLAY_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// ReplayDeadLetters, one at a time per integration across the loader replicas: two at once
/// would both publish the letters they both selected, each in its own run.
pub(crate) async fn replay(
    bus: &Bus,
    request: pb::ReplayDeadLettersRequest,
) -> Result<pb::ReplayDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector.clone(), true)?;
    let integration = selection.integration.as_str();
    let lock = format!("replay.{integration}");
    let holder = format!(
        "the control plane of {}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "a loader replica".into())
    );
    let locks = bus.locks();
    let taken = match locks.take(&lock, &holder, REPLAY_LOCK_STALE).await {
        Ok(Ok(taken)) => taken,
        Ok(Err(other)) => {
            return Err(Status::aborted(format!(
                "another replay of {integration}'s dead letters is going ({}, since {}); \
                 replay again once it has ended",
                other.by, other.at
            )));
        }
        Err(err) => return Err(status::bus("taking the replay lock", err)),
    };
    let replayed = replay_locked(bus, request).await;
    if let Err(err) = locks.release(taken).await {
        tracing::warn!(integration, error = %err,
            "cannot give the replay lock back; the next replay of this integration waits until it is stale");
    }
    replayed
}

/// ReplayDeadLetters, under the integration's replay lock.
async fn replay_locked(
    bus: &Bus,
    request: pb::ReplayDeadLettersRequest,
) -> Result<pb::ReplayDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, true)?.events_only();
    let limit = status::limit(request.limit, MAX_BATCH, MAX_BATCH);
    let Scanned {
        letters,
        next,
        without_event,
        unreadable,
    } = scan(bus, &selection, 0, limit, MAX_SCAN).await?;
    let matched =
        !letters.is_empty() || next.is_some() || without_event > 0 || !unreadable.is_empty();
    known_run(bus, &selection, matched).await?;
    let mut reply = pb::ReplayDeadLettersResponse {
        more: next.is_some(),
        without_event,
        failures: unreadable,
        ..Default::default()
    };
    // One event per worker: an older letter of the same worker would undo the newer one.
    let mut newest: BTreeMap<String, DeadLetterRecord> = BTreeMap::new();
    let mut superseded = Vec::new();
    for record in letters {
        let worker = record.letter.worker_id.clone();
        match newest.remove(&worker) {
            Some(older) if older.sequence < record.sequence => {
                superseded.push((worker.clone(), older.sequence));
                newest.insert(worker, record);
            }
            Some(newer) => {
                superseded.push((worker.clone(), record.sequence));
                newest.insert(worker, newer);
            }
            None => {
                newest.insert(worker, record);
            }
        }
    }
    let mut chosen: Vec<DeadLetterRecord> = newest.into_values().collect();
    chosen.sort_by_key(|r| r.sequence);
    // Read every event before the run starts: a run is only started for something to publish.
    let mut events = Vec::new();
    for record in chosen {
        match replayable_event(&record) {
            Ok(event) => events.push((record, event)),
            Err(error) => reply.failures.push(pb::ReplayFailure {
                sequence: record.sequence,
                error,
            }),
        }
    }
    let back = employed_again(bus, &selection.integration, &events).await?;
    events.retain(|(record, _)| match back.get(&record.letter.worker_id) {
        Some(baseline) => {
            reply.failures.push(pb::ReplayFailure {
                sequence: record.sequence,
                error: format!(
                    "not replayed: worker {} left, but the latest full run ({baseline}) lists \
                     them as employed again (rehired, or their end date corrected); a leaver \
                     action now would act on an employed user. Purge this letter",
                    record.letter.worker_id
                ),
            });
            false
        }
        None => true,
    });
    if events.is_empty() {
        return Ok(reply);
    }
    let integration = selection.integration.as_str();
    let run_id = uuid::Uuid::now_v7().to_string();
    let runs = bus.runs();
    runs.create(&RunRecord::start(integration, &run_id, false, "replay"))
        .await
        .map_err(|e| status::bus("creating the replay run", e))?;

    let (mut upserts, mut removals) = (0u64, 0u64);
    let mut replayed_workers = Vec::new();
    for (record, event) in events {
        match republish(bus, integration, &run_id, event).await {
            Ok(kind) => {
                if kind == WorkerEventKind::Removed {
                    removals += 1;
                } else {
                    upserts += 1;
                }
                replayed_workers.push(record.letter.worker_id.clone());
                forget(bus, record.sequence).await;
            }
            Err(error) => reply.failures.push(pb::ReplayFailure {
                sequence: record.sequence,
                error,
            }),
        }
    }
    for (worker, sequence) in superseded {
        if replayed_workers.contains(&worker) {
            forget(bus, sequence).await;
        }
    }
    let replayed = upserts + removals;
    let finished = chrono::Utc::now().to_rfc3339();
    // The letters are gone and their events published: a run left `running` would never be
    // finalized, so its completion is asked again while NATS does not answer (a leader
    // election, a node lost) rather than given up after one try — for a bounded time, since a
    // caller waits for this answer.
    let what = format!("the completion of replay run {run_id}");
    let completing = peoplesync_bus::patiently(&what, bus.settings().replicas, || {
        runs.update(integration, &run_id, |r| {
            r.published = upserts;
            r.removed = removals;
            r.finished_at = Some(finished.clone());
            if replayed == 0 {
                r.state = RunState::Failed;
                r.error = Some("no dead letter could be published again".to_owned());
            } else {
                r.state = RunState::Completed;
            }
            true
        })
    });
    tokio::time::timeout(COMPLETION_PATIENCE, completing)
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "replay run {run_id} published {replayed} event(s) but NATS did not answer its \
                 completion within {} s; the run stays `running` until it is completed: check \
                 NATS, then see `syncctl runs get {run_id}`",
                COMPLETION_PATIENCE.as_secs()
            ))
        })?
        .map_err(|e| status::bus(&format!("completing replay run {run_id}"), e))?;
    tracing::info!(
        integration,
        %run_id,
        replayed,
        failed = reply.failures.len(),
        without_event,
        "dead letters replayed through the control plane"
    );
    reply.run_id = run_id;
    reply.replayed = replayed;
    Ok(reply)
}

/// The workers of the leaver events among `events` (removed or ended) whom the removal baseline
/// of `integration` — the latest full run compared with — lists as employed, with that run's
/// id: they came back after the letter was filed, and replaying their leaver event would act on
/// an employed user. The baseline's list is read in order, once, and only when there is a
/// leaver to check.
async fn employed_again(
    bus: &Bus,
    integration: &str,
    events: &[(DeadLetterRecord, WorkerEvent)],
) -> Result<BTreeMap<String, String>, Status> {
    let leavers: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|(_, event)| {
            matches!(
                event.kind(),
                WorkerEventKind::Removed | WorkerEventKind::Ended
            )
        })
        .map(|(record, _)| record.letter.worker_id.as_str())
        .collect();
    let mut back = BTreeMap::new();
    let Some(last) = leavers.last() else {
        return Ok(back);
    };
    let state = bus
        .removals()
        .load(integration)
        .await
        .map_err(|e| status::bus("reading the removal baseline", e))?;
    let Some(baseline) = state.baseline else {
        return Ok(back);
    };
    let mut listed = bus
        .seen()
        .reader(integration, &baseline)
        .await
        .map_err(|e| status::bus("reading the baseline's list", e))?;
    // The list is in ascending order: it is read only as far as the last leaver's id.
    while let Some(id) = listed.next().await.map_err(|e| {
        Status::unavailable(format!(
            "reading the list of run {baseline}, to check that the leavers replayed are still \
             gone: {e}"
        ))
    })? {
        if id.as_str() > *last {
            break;
        }
        if leavers.contains(id.as_str()) {
            back.insert(id, baseline.clone());
        }
    }
    Ok(back)
}

/// The event a letter holds, ready to publish again, or why there is none. An event the
/// loader cannot attribute to a run and worker (it does not decode, or its worker id cannot be
/// a subject token) would be dead-lettered under run `invalid` again and never counted in the
/// replay run, which would then wait for it forever.
pub(super) fn replayable_event(record: &DeadLetterRecord) -> Result<WorkerEvent, String> {
    let unreadable = |why: String| {
        format!("nothing to replay: the letter's event cannot be read ({why}); purge it")
    };
    let event = codec::decode_worker_event(&record.payload)
        .map_err(|e| unreadable(format!("it does not decode: {e}")))?;
    let worker = event.worker.as_ref().map_or("", |w| w.id.as_str());
    names::validate_event_id("worker id", worker).map_err(unreadable)?;
    Ok(event)
}

/// Publishes `event` again in replay run `run_id`; returns its kind.
async fn republish(
    bus: &Bus,
    integration: &str,
    run_id: &str,
    mut event: WorkerEvent,
) -> Result<WorkerEventKind, String> {
    event.run_id = run_id.to_owned();
    let kind = event.kind();
    let worker_id = event
        .worker
        .as_ref()
        .map(|w| w.id.clone())
        .unwrap_or_default();
    let payload = codec::encode_worker_event(&event);
    let stored = dlq::republish(bus, integration, run_id, &worker_id, payload)
        .await
        .map_err(|e| e.to_string())?;
    if !stored {
        return Err("NATS dropped the event as a duplicate; replay it again".to_owned());
    }
    Ok(kind)
}

/// Removes a replayed letter from the queue; a failure only leaves it listed.
async fn forget(bus: &Bus, sequence: u64) {
    if let Err(err) = dlq::delete(bus, sequence).await {
        tracing::warn!(sequence, error = %err, "a replayed dead letter could not be removed from the queue; purge it");
    }
}
