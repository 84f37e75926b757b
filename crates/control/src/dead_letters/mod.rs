//! Dead letters over gRPC: list them (scanning the DLQ stream by subject and sequence,
//! filtered by run, reason and worker, paged), replay them after a fix, and purge them.
//! A letter stands for one worker refused for one reason across runs (see
//! `peoplesync_bus::dlq`); replaying or purging it ends that history, and a later refusal
//! starts a new letter.
//!
//! A run filter naming a run that has no record and no selected letter is NOT_FOUND, so a
//! typo is not answered with an empty list. Letters can outlive their run's record (run
//! records expire after `run_retention_days`), so a run whose letters are still held selects
//! them after its record has gone.
//!
//! A replay publishes the letters' events again in a new run (trigger `replay`) rather than
//! under their original run: the original run's Oomnitza portion is usually finalized by
//! then and takes no more records, and a fresh run gives the replay its own portion, exact
//! counts, a finalize, and a run id that WatchRun can follow. Only letters holding a readable
//! worker event are published: anything else could never be counted in the replay run, which
//! would then wait for it forever.

mod replay;

use peoplesync_bus::Bus;
use peoplesync_bus::dlq::{self, DeadLetterRecord};
use peoplesync_proto::v1 as pb;
use tonic::Status;

use crate::{runs, status};
pub(crate) use replay::replay;
use replay::replayable_event;

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
    /// Leave out letters that hold no event (see [`holds_event`]), counting them instead.
    events_only: bool,
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
            events_only: false,
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

    /// The same selection, leaving out the letters replay cannot publish: they would count
    /// against every call's limit, fail each time and stay, so a replay could never get past
    /// them.
    fn events_only(self) -> Selection {
        Selection {
            events_only: true,
            ..self
        }
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

/// Refuses `selection`'s run filter when nothing `matched` it and the integration has no
/// record of that run: the run id is unknown, not merely without letters.
async fn known_run(bus: &Bus, selection: &Selection, matched: bool) -> Result<(), Status> {
    let Some(run_id) = selection.run_id.as_deref() else {
        return Ok(());
    };
    if matched {
        return Ok(());
    }
    let integration = selection.integration.as_str();
    let record = bus
        .runs()
        .get(integration, run_id)
        .await
        .map_err(|e| status::bus(&format!("reading run {run_id}"), e))?;
    if record.is_some() {
        return Ok(());
    }
    Err(Status::not_found(format!(
        "integration {integration} has no run {run_id} and no selected dead letter was seen in \
         it; list runs with ListRuns (syncctl runs) and the runs of the letters with \
         ListDeadLetters (syncctl dlq list)"
    )))
}

/// Whether a letter holds a worker event replay can publish. A letter of stage `extractor`
/// holds the start of a Sage People record (the extractor published no event); one of stage
/// `verification` holds the record as sent to Oomnitza, whose applied hash was dropped so the
/// next run sends it again.
fn holds_event(record: &DeadLetterRecord) -> bool {
    let stage = record.letter.stage.as_str();
    stage != dlq::STAGE_EXTRACTOR && stage != dlq::STAGE_VERIFICATION
}

/// What a scan found.
#[derive(Default)]
struct Scanned {
    /// Matching letters, at most the limit.
    letters: Vec<DeadLetterRecord>,
    /// The sequence to continue after when the scan stopped early (`None`: nothing more).
    next: Option<u64>,
    /// Matching letters left out because they hold no event (only with `events_only`).
    without_event: u64,
    /// Matching letters left out because their event cannot be read, with why (only with
    /// `events_only`; at most [`MAX_BATCH`] listed). Like those without an event, they do not
    /// count against the limit, so no number of them blocks the letters behind them.
    unreadable: Vec<pb::ReplayFailure>,
}

impl Scanned {
    /// Counts `record` in if it matches `selection`.
    fn take(&mut self, selection: &Selection, record: DeadLetterRecord) {
        if !selection.matches(&record) {
            return;
        }
        if !selection.events_only {
            self.letters.push(record);
        } else if !holds_event(&record) {
            self.without_event += 1;
        } else if let Err(error) = replayable_event(&record) {
            if self.unreadable.len() < MAX_BATCH {
                self.unreadable.push(pb::ReplayFailure {
                    sequence: record.sequence,
                    error,
                });
            }
        } else {
            self.letters.push(record);
        }
    }
}

/// Matching letters after `after`, at most `limit`, reading at most `max_scan`.
async fn scan(
    bus: &Bus,
    selection: &Selection,
    after: u64,
    limit: usize,
    max_scan: usize,
) -> Result<Scanned, Status> {
    let mut found = Scanned::default();
    if !selection.sequences.is_empty() {
        for &sequence in selection.sequences.iter().filter(|s| **s > after) {
            if found.letters.len() == limit {
                found.next = Some(sequence - 1);
                break;
            }
            let record = dlq::get(bus, sequence)
                .await
                .map_err(|e| status::bus(&format!("reading dead letter {sequence}"), e))?;
            if let Some(record) = record {
                found.take(selection, record);
            }
        }
        return Ok(found);
    }
    let mut next = after.saturating_add(1);
    let mut scanned = 0;
    loop {
        let Some(record) = dlq::next(bus, &selection.integration, next)
            .await
            .map_err(|e| status::bus("reading dead letters", e))?
        else {
            return Ok(found);
        };
        if found.letters.len() == limit || scanned == max_scan {
            // There is at least one more letter; continue before it.
            found.next = Some(record.sequence - 1);
            return Ok(found);
        }
        scanned += 1;
        next = record.sequence + 1;
        found.take(selection, record);
    }
}

/// ListDeadLetters.
pub(crate) async fn list(
    bus: &Bus,
    request: pb::ListDeadLettersRequest,
) -> Result<pb::ListDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, false)?;
    let limit = status::limit(request.limit, DEFAULT_LIST, MAX_BATCH);
    let Scanned { letters, next, .. } = scan(
        bus,
        &selection,
        request.after_sequence,
        limit,
        MAX_LIST_SCAN,
    )
    .await?;
    // A later page may be empty for a run whose letters came before it.
    let matched = !letters.is_empty() || next.is_some() || request.after_sequence > 0;
    known_run(bus, &selection, matched).await?;
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

/// PurgeDeadLetters.
pub(crate) async fn purge(
    bus: &Bus,
    request: pb::PurgeDeadLettersRequest,
) -> Result<pb::PurgeDeadLettersResponse, Status> {
    let selection = Selection::from_request(request.selector, true)?;
    // Letters filed after what the operator was shown (a dry run's count) are not purged.
    let through = (request.through_sequence > 0).then_some(request.through_sequence);
    let within = |record: &DeadLetterRecord| through.is_none_or(|last| record.sequence <= last);
    if request.dry_run {
        let letters = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?.letters;
        let letters: Vec<_> = letters.into_iter().filter(within).collect();
        known_run(bus, &selection, !letters.is_empty()).await?;
        return Ok(pb::PurgeDeadLettersResponse {
            purged: letters.len() as u64,
            through_sequence: letters.last().map_or(0, |r| r.sequence),
        });
    }
    if selection.all && !selection.filtered() {
        let purged = dlq::purge_all_through(bus, &selection.integration, through)
            .await
            .map_err(|e| status::bus("purging the dead letters", e))?;
        tracing::info!(integration = %selection.integration, purged, "dead letters purged through the control plane");
        return Ok(pb::PurgeDeadLettersResponse {
            purged,
            through_sequence: through.unwrap_or(0),
        });
    }
    let letters = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?.letters;
    let letters: Vec<_> = letters.into_iter().filter(within).collect();
    known_run(bus, &selection, !letters.is_empty()).await?;
    let through_sequence = letters.last().map_or(0, |r| r.sequence);
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
    Ok(pb::PurgeDeadLettersResponse {
        purged,
        through_sequence,
    })
}

/// SummarizeDeadLetters: the selected letters counted by reason and stage, most frequent
/// first, reading at most [`MAX_SCAN`] letters.
pub(crate) async fn summarize(
    bus: &Bus,
    selector: Option<pb::DeadLetterSelector>,
) -> Result<pb::DeadLetterSummary, Status> {
    let selection = Selection::from_request(selector, false)?;
    let Scanned { letters, next, .. } = scan(bus, &selection, 0, MAX_SCAN, MAX_SCAN).await?;
    known_run(bus, &selection, !letters.is_empty() || next.is_some()).await?;
    Ok(count_reasons(
        letters.iter().map(|r| (&r.letter.reason, &r.letter.stage)),
        next.is_some(),
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
    use peoplesync_bus::dlq::Seen;
    use peoplesync_bus::{DeadLetter, codec, names};
    use peoplesync_proto::v1::WorkerEvent;

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
    fn a_replay_leaves_out_letters_without_an_event_and_counts_them() {
        let mut extractor = record(1, "r1", "w1", "too large");
        extractor.letter.stage = dlq::STAGE_EXTRACTOR.into();
        let mut verification = record(2, "r1", "w2", "not applied by Oomnitza");
        verification.letter.stage = dlq::STAGE_VERIFICATION.into();
        let mut pipeline = record(3, "r1", "w3", "required field EMAIL is empty");
        pipeline.payload = codec::encode_worker_event(&WorkerEvent {
            run_id: "r1".into(),
            worker: Some(peoplesync_proto::v1::Worker {
                id: "w3".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut garbage = record(4, names::INVALID_RUN, "seq-7", "cannot be decoded");
        garbage.payload = bytes::Bytes::from_static(b"\xff\xff not protobuf");
        let selection = Selection::from_request(selector(|s| s.all = true), true).unwrap();
        let take = |selection: &Selection| {
            let mut found = Scanned::default();
            for r in [&extractor, &verification, &pipeline, &garbage] {
                found.take(selection, r.clone());
            }
            let unreadable: Vec<u64> = found.unreadable.iter().map(|f| f.sequence).collect();
            (found.letters.len(), found.without_event, unreadable)
        };
        assert_eq!(
            take(&selection),
            (4, 0, vec![]),
            "a purge or list takes them all"
        );
        // A replay takes only the readable event; the others do not count against its limit.
        assert_eq!(take(&selection.events_only()), (1, 2, vec![4]));
    }

    #[test]
    fn an_event_that_cannot_be_read_is_not_replayed() {
        let mut garbage = record(1, names::INVALID_RUN, "seq-7", "cannot be decoded");
        garbage.payload = bytes::Bytes::from_static(b"\xff\xff not protobuf");
        let error = replayable_event(&garbage).unwrap_err();
        assert!(
            error.starts_with("nothing to replay: the letter's event cannot be read")
                && error.ends_with("purge it"),
            "{error}"
        );
        let event = |worker: &str| WorkerEvent {
            run_id: "r1".into(),
            worker: Some(peoplesync_proto::v1::Worker {
                id: worker.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut bad_id = record(2, names::INVALID_RUN, "seq-8", "worker id");
        bad_id.payload = codec::encode_worker_event(&event("a worker.with dots"));
        let error = replayable_event(&bad_id).unwrap_err();
        assert!(error.contains("worker id"), "{error}");
        let mut good = record(3, "r1", "a2G1", "required field EMAIL is empty");
        good.payload = codec::encode_worker_event(&event("a2G1"));
        assert_eq!(replayable_event(&good).unwrap().worker.unwrap().id, "a2G1");
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
