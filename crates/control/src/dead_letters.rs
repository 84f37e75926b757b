//! Dead letters over gRPC: list them (scanning the DLQ stream by subject and sequence,
//! filtered by run, reason and worker, paged), replay them after a fix, and purge them.
//! A letter stands for one worker refused for one reason across runs (see
//! `peoplesync_bus::dlq`); replaying or purging it ends that history, and a later refusal
//! starts a new letter.
//!
//! A replay publishes the letters' events again in a new run (trigger `replay`) rather than
//! under their original run: the original run's Oomnitza portion is usually finalized by
//! then and takes no more records, and a fresh run gives the replay its own portion, exact
//! counts, a finalize, and a run id that WatchRun can follow.

use std::collections::BTreeMap;

use peoplesync_bus::dlq::{self, DeadLetterRecord};
use peoplesync_bus::{Bus, RunRecord, RunState, codec};
use peoplesync_proto::v1 as pb;
use peoplesync_proto::v1::WorkerEventKind;
use tonic::Status;

use crate::{runs, status};

/// Letters ListDeadLetters returns by default.
const DEFAULT_LIST: usize = 100;
/// The largest page of ListDeadLetters, and the most letters one replay publishes.
pub(crate) const MAX_BATCH: usize = 1000;
/// Letters one ListDeadLetters call reads at most while looking for matches; the caller
/// continues from `next_after_sequence`.
const MAX_LIST_SCAN: usize = 10_000;
/// Letters one replay or purge reads at most while looking for matches.
const MAX_SCAN: usize = 100_000;

/// Which letters a call applies to.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    integration: String,
    sequences: Vec<u64>,
    run_id: Option<String>,
    reason: Option<String>,
    worker_id: Option<String>,
    all: bool,
}

impl Selection {
    /// Reads a selector; replay and purge (`destructive`) need a filter or `all`.
    pub(crate) fn from_request(
        selector: Option<pb::DeadLetterSelector>,
        destructive: bool,
    ) -> Result<Selection, Status> {
        let selector = selector.ok_or_else(|| {
            Status::invalid_argument("selector is missing; name at least the integration")
        })?;
        let integration = status::integration_id(&selector.integration_id)?.to_owned();
        let text = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        if selector.sequences.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} sequences per call"
            )));
        }
        let mut sequences = selector.sequences;
        sequences.sort_unstable();
        sequences.dedup();
        let selection = Selection {
            integration,
            sequences,
            run_id: text(selector.run_id),
            reason: text(selector.reason_contains).map(|r| r.to_lowercase()),
            worker_id: text(selector.worker_id),
            all: selector.all,
        };
        if destructive && !selection.all && !selection.filtered() {
            return Err(Status::invalid_argument(format!(
                "no dead letters selected: give sequences, a run id, a reason or a worker id, or \
                 set `all` to act on every dead letter of {}",
                selection.integration
            )));
        }
        Ok(selection)
    }

    fn filtered(&self) -> bool {
        !self.sequences.is_empty()
            || self.run_id.is_some()
            || self.reason.is_some()
            || self.worker_id.is_some()
    }

    fn matches(&self, record: &DeadLetterRecord) -> bool {
        let letter = &record.letter;
        letter.integration == self.integration
            && (self.sequences.is_empty() || self.sequences.binary_search(&record.sequence).is_ok())
            && self
                .run_id
                .as_ref()
                .is_none_or(|r| &letter.run_id == r || record.seen.includes(r))
            && self
                .worker_id
                .as_ref()
                .is_none_or(|w| &letter.worker_id == w)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| letter.reason.to_lowercase().contains(r))
    }
}

/// Matching letters after `after`, at most `limit`, reading at most `max_scan`; with the
/// sequence to continue after when the scan stopped early (`None`: nothing more).
async fn scan(
    bus: &Bus,
    selection: &Selection,
    after: u64,
    limit: usize,
    max_scan: usize,
) -> Result<(Vec<DeadLetterRecord>, Option<u64>), Status> {
    let mut found = Vec::new();
    if !selection.sequences.is_empty() {
        for &sequence in selection.sequences.iter().filter(|s| **s > after) {
            if found.len() == limit {
                return Ok((found, Some(sequence - 1)));
            }
            let record = dlq::get(bus, sequence)
                .await
                .map_err(|e| status::bus(&format!("reading dead letter {sequence}"), e))?;
            if let Some(record) = record.filter(|r| selection.matches(r)) {
                found.push(record);
            }
        }
        return Ok((found, None));
    }
    let mut next = after.saturating_add(1);
    let mut scanned = 0;
    loop {
        let Some(record) = dlq::next(bus, &selection.integration, next)
            .await
            .map_err(|e| status::bus("reading dead letters", e))?
        else {
            return Ok((found, None));
        };
        if found.len() == limit || scanned == max_scan {
            // There is at least one more letter; continue before it.
            return Ok((found, Some(record.sequence - 1)));
        }
        scanned += 1;
        next = record.sequence + 1;
        if selection.matches(&record) {
            found.push(record);
        }
    }
}

/// ListDeadLetters.
pub(crate) async fn list(
    bus: &Bus,
    request: pb::ListDeadLettersRequest,
) -> Result<pb::ListDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, false)?;
    let limit = status::limit(request.limit, DEFAULT_LIST, MAX_BATCH);
    let (letters, next) = scan(
        bus,
        &selection,
        request.after_sequence,
        limit,
        MAX_LIST_SCAN,
    )
    .await?;
    let (_, _, held) = dlq::sequence_range(bus)
        .await
        .map_err(|e| status::bus("reading the DLQ stream", e))?;
    Ok(pb::ListDeadLettersResponse {
        letters: letters.iter().map(view).collect(),
        next_after_sequence: next.unwrap_or(0),
        held,
    })
}

/// The API view of a dead letter.
fn view(record: &DeadLetterRecord) -> pb::DeadLetter {
    let letter = &record.letter;
    pb::DeadLetter {
        sequence: record.sequence,
        integration_id: letter.integration.clone(),
        run_id: letter.run_id.clone(),
        worker_id: letter.worker_id.clone(),
        reason: letter.reason.clone(),
        stage: letter.stage.clone(),
        http_status: letter.http_status.map_or(0, u32::from),
        body_excerpt: letter.body_excerpt.clone().unwrap_or_default(),
        attempts: letter.attempts,
        at: at(&record.at),
        runs_seen: record.seen.runs,
        first_run_id: record.seen.first_run_id.clone(),
        first_seen: at(&record.seen.first_at),
    }
}

/// The DLQ message time as a timestamp. async-nats prints it as
/// `2025-05-01 10:00:00.123456789 +00:00:00` (an offset with seconds), which chrono does not
/// read directly; RFC 3339 is accepted too.
fn at(text: &str) -> Option<peoplesync_proto::Timestamp> {
    if let Some(ts) = runs::timestamp(text) {
        return Some(ts);
    }
    let (local, offset) = text.trim().rsplit_once(' ')?;
    let local = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let (sign, digits) = match offset.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let mut seconds = 0i32;
    for (part, scale) in digits.split(':').zip([3600, 60, 1]) {
        seconds += part.parse::<i32>().ok()? * scale;
    }
    let offset = chrono::FixedOffset::east_opt(sign * seconds)?;
    let time = local.and_local_timezone(offset).single()?;
    Some(peoplesync_bus::codec::timestamp(
        time.with_timezone(&chrono::Utc),
    ))
}

/// ReplayDeadLetters.
pub(crate) async fn replay(
    bus: &Bus,
    request: pb::ReplayDeadLettersRequest,
) -> Result<pb::ReplayDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, true)?;
    let limit = status::limit(request.limit, MAX_BATCH, MAX_BATCH);
    let (letters, next) = scan(bus, &selection, 0, limit, MAX_SCAN).await?;
    if letters.is_empty() {
        return Ok(pb::ReplayDeadLettersResponse {
            more: next.is_some(),
            ..Default::default()
        });
    }
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
    let integration = selection.integration.as_str();
    let run_id = uuid::Uuid::now_v7().to_string();
    let runs = bus.runs();
    runs.create(&RunRecord::start(integration, &run_id, false, "replay"))
        .await
        .map_err(|e| status::bus("creating the replay run", e))?;

    let mut chosen: Vec<DeadLetterRecord> = newest.into_values().collect();
    chosen.sort_by_key(|r| r.sequence);
    let (mut upserts, mut removals) = (0u64, 0u64);
    let mut replayed_workers = Vec::new();
    let mut failures = Vec::new();
    for record in &chosen {
        match republish(bus, integration, &run_id, record).await {
            Ok(kind) => {
                if kind == WorkerEventKind::Removed {
                    removals += 1;
                } else {
                    upserts += 1;
                }
                replayed_workers.push(record.letter.worker_id.clone());
                forget(bus, record.sequence).await;
            }
            Err(error) => failures.push(pb::ReplayFailure {
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
    .await
    .map_err(|e| status::bus(&format!("completing replay run {run_id}"), e))?;
    tracing::info!(
        integration,
        %run_id,
        replayed,
        failed = failures.len(),
        "dead letters replayed through the control plane"
    );
    Ok(pb::ReplayDeadLettersResponse {
        run_id,
        replayed,
        failures,
        more: next.is_some(),
    })
}

/// Publishes a letter's event in replay run `run_id`; returns its kind.
async fn republish(
    bus: &Bus,
    integration: &str,
    run_id: &str,
    record: &DeadLetterRecord,
) -> Result<WorkerEventKind, String> {
    let worker_id = if record.letter.worker_id.is_empty() {
        format!("dlq-{}", record.sequence)
    } else {
        record.letter.worker_id.clone()
    };
    // A record Oomnitza accepted but did not apply keeps the record as sent, not the event:
    // there is nothing to publish again, and nothing needs to be — its applied hash was
    // dropped, so the next run sends it.
    // A worker the extractor did not publish has no event: what it needs is a fix in Sage
    // People, after which the next run publishes it.
    if record.letter.stage == dlq::STAGE_EXTRACTOR {
        return Err(format!(
            "the extractor did not publish worker {worker_id} ({}); fix it in Sage People and \
             the next run sends it (or `syncctl sync-worker {worker_id}` after the fix); then \
             purge this letter",
            record.letter.reason
        ));
    }
    if record.letter.stage == dlq::STAGE_VERIFICATION {
        return Err(format!(
            "Oomnitza accepted but did not apply this record; once the cause is fixed in \
             Oomnitza, the next run sends it again (or `syncctl sync-worker {worker_id}` now); \
             then purge this letter"
        ));
    }
    // An event that cannot be decoded goes back as it was: the loader dead-letters it again
    // (under the replay run, which it reads from the message id), with the reason.
    let (payload, kind) = match codec::decode_worker_event(&record.payload) {
        Ok(mut event) => {
            event.run_id = run_id.to_owned();
            let kind = event.kind();
            (codec::encode_worker_event(&event), kind)
        }
        Err(_) => (record.payload.clone(), WorkerEventKind::Upsert),
    };
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

/// PurgeDeadLetters.
pub(crate) async fn purge(
    bus: &Bus,
    request: pb::PurgeDeadLettersRequest,
) -> Result<pb::PurgeDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, true)?;
    if request.dry_run {
        let (letters, _) = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?;
        return Ok(pb::PurgeDeadLettersResponse {
            purged: letters.len() as u64,
        });
    }
    if selection.all && !selection.filtered() {
        let purged = dlq::purge_all(bus, &selection.integration)
            .await
            .map_err(|e| status::bus("purging the dead letters", e))?;
        tracing::info!(integration = %selection.integration, purged, "dead letters purged through the control plane");
        return Ok(pb::PurgeDeadLettersResponse { purged });
    }
    let (letters, _) = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?;
    let mut purged = 0;
    for record in letters {
        if dlq::delete(bus, record.sequence)
            .await
            .map_err(|e| status::bus(&format!("deleting dead letter {}", record.sequence), e))?
        {
            purged += 1;
        }
    }
    tracing::info!(integration = %selection.integration, purged, "dead letters purged through the control plane");
    Ok(pb::PurgeDeadLettersResponse { purged })
}

/// SummarizeDeadLetters: the selected letters counted by reason and stage, most frequent
/// first, reading at most [`MAX_SCAN`] letters.
pub(crate) async fn summarize(
    bus: &Bus,
    selector: Option<pb::DeadLetterSelector>,
) -> Result<pb::DeadLetterSummary, Status> {
    let selection = Selection::from_request(selector, false)?;
    let (letters, more) = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?;
    Ok(count_reasons(
        letters.iter().map(|r| (&r.letter.reason, &r.letter.stage)),
        more.is_some(),
    ))
}

/// Counts `(reason, stage)` pairs, most frequent first (then by reason).
fn count_reasons<'a>(
    letters: impl Iterator<Item = (&'a String, &'a String)>,
    truncated: bool,
) -> pb::DeadLetterSummary {
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    let mut total = 0;
    for (reason, stage) in letters {
        *counts.entry((reason.as_str(), stage.as_str())).or_default() += 1;
        total += 1;
    }
    let mut reasons: Vec<pb::ReasonCount> = counts
        .into_iter()
        .map(|((reason, stage), count)| pb::ReasonCount {
            reason: reason.to_owned(),
            stage: stage.to_owned(),
            count,
        })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    pb::DeadLetterSummary {
        reasons,
        total,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peoplesync_bus::DeadLetter;
    use peoplesync_bus::dlq::Seen;

    fn record(sequence: u64, run: &str, worker: &str, reason: &str) -> DeadLetterRecord {
        DeadLetterRecord {
            sequence,
            letter: DeadLetter {
                integration: "acme".into(),
                run_id: run.into(),
                worker_id: worker.into(),
                reason: reason.into(),
                ..Default::default()
            },
            at: String::new(),
            seen: Seen {
                runs: 1,
                first_run_id: run.into(),
                first_at: String::new(),
                recent_runs: vec![run.into()],
            },
            payload: Default::default(),
        }
    }

    fn selector(f: impl FnOnce(&mut pb::DeadLetterSelector)) -> Option<pb::DeadLetterSelector> {
        let mut s = pb::DeadLetterSelector {
            integration_id: "acme".into(),
            ..Default::default()
        };
        f(&mut s);
        Some(s)
    }

    #[test]
    fn reasons_are_counted_most_frequent_first() {
        let letters = [
            ("EMAIL is not an email", "pipeline"),
            ("unknown field", "oomnitza"),
            ("EMAIL is not an email", "pipeline"),
        ]
        .map(|(r, s)| (r.to_owned(), s.to_owned()));
        let summary = count_reasons(letters.iter().map(|(r, s)| (r, s)), false);
        assert_eq!(summary.total, 3);
        assert_eq!(summary.reasons[0].reason, "EMAIL is not an email");
        assert_eq!(summary.reasons[0].count, 2);
        assert_eq!(summary.reasons[1].count, 1);
    }

    #[test]
    fn destructive_calls_need_a_filter_or_all() {
        assert!(Selection::from_request(selector(|_| {}), false).is_ok());
        let refused = Selection::from_request(selector(|_| {}), true).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("all"), "{}", refused.message());
        assert!(Selection::from_request(selector(|s| s.all = true), true).is_ok());
        assert!(Selection::from_request(selector(|s| s.run_id = "r1".into()), true).is_ok());
    }

    #[test]
    fn letters_match_every_filter_given() {
        let s = Selection::from_request(
            selector(|s| {
                s.run_id = "r1".into();
                s.reason_contains = "email".into();
            }),
            false,
        )
        .unwrap();
        assert!(s.matches(&record(1, "r1", "w1", "required field EMAIL is empty")));
        assert!(!s.matches(&record(2, "r2", "w1", "required field EMAIL is empty")));
        assert!(!s.matches(&record(3, "r1", "w1", "refused by Oomnitza")));
        let by_seq =
            Selection::from_request(selector(|s| s.sequences = vec![7, 3, 7]), true).unwrap();
        assert!(by_seq.matches(&record(3, "r", "w", "x")));
        assert!(!by_seq.matches(&record(4, "r", "w", "x")));
    }

    #[test]
    fn a_run_filter_matches_every_run_a_letter_was_seen_in() {
        let s = Selection::from_request(selector(|s| s.run_id = "r1".into()), false).unwrap();
        let mut letter = record(5, "r3", "w1", "required field EMAIL is empty");
        assert!(!s.matches(&letter));
        letter.seen.recent_runs = vec!["r1".into(), "r2".into(), "r3".into()];
        letter.seen.runs = 3;
        assert!(s.matches(&letter));
    }

    #[test]
    fn the_view_shows_the_runs_a_letter_was_seen_in() {
        let mut letter = record(9, "r3", "w1", "required field EMAIL is empty");
        letter.at = "2025-05-03T02:00:00Z".into();
        letter.seen = Seen {
            runs: 3,
            first_run_id: "r1".into(),
            first_at: "2025-05-01 02:00:00.5 +00:00:00".into(),
            recent_runs: vec!["r1".into(), "r2".into(), "r3".into()],
        };
        let v = view(&letter);
        assert_eq!(v.runs_seen, 3);
        assert_eq!(v.first_run_id, "r1");
        assert_eq!(v.run_id, "r3");
        let first = v.first_seen.unwrap();
        let last = v.at.unwrap();
        assert_eq!(last.seconds - first.seconds, 2 * 86_400);
    }

    #[test]
    fn dlq_times_parse_in_either_form() {
        let rfc = at("2025-05-01T10:00:00Z").unwrap();
        let nats = at("2025-05-01 12:00:00.5 +02:00:00").unwrap();
        assert_eq!(rfc.seconds, nats.seconds);
        assert_eq!(nats.nanos, 500_000_000);
        assert!(at("yesterday").is_none());
    }
}
