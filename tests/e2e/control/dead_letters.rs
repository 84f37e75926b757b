//! Dead letters over the control plane: listed and filtered, summarized, purged, and replayed
//! after a fix; the integration's status at a glance. A replay publishes only letters holding
//! a readable worker event, so its run always ends.

use bytes::Bytes;
use peoplesync_bus::dlq::{self, DeadLetter, DeadLetterRecord};
use peoplesync_bus::names::INVALID_RUN;

use super::*;

/// Files a letter of `stage` for `worker` directly in the DLQ, as the stage would.
pub(super) async fn file_letter(
    stack: &Stack,
    run_id: &str,
    worker: &str,
    stage: &str,
    reason: &str,
    payload: Bytes,
) -> u64 {
    let letter = DeadLetter {
        integration: INTEGRATION.into(),
        run_id: run_id.into(),
        worker_id: worker.into(),
        reason: reason.into(),
        stage: stage.into(),
        attempts: 1,
        ..Default::default()
    };
    match dlq::record(&stack.bus().await, &letter, payload)
        .await
        .unwrap()
    {
        dlq::Recorded::Stored { sequence, .. } => sequence,
        other => panic!("the letter was not stored: {other:?}"),
    }
}

/// Every dead letter of the integration, read straight from the DLQ stream.
async fn letters_held(stack: &Stack) -> Vec<DeadLetterRecord> {
    let bus = stack.bus().await;
    let mut letters = Vec::new();
    let mut next = 1;
    while let Some(record) = dlq::next(&bus, INTEGRATION, next).await.unwrap() {
        next = record.sequence + 1;
        letters.push(record);
    }
    letters
}

/// Replays every dead letter of the integration, at most `limit` per call.
async fn replay_all(client: &mut Client, limit: u32) -> pb::ReplayDeadLettersResponse {
    replay_letters(client, every_letter(), limit).await.unwrap()
}

/// Runs a sync that dead-letters the workers without an e-mail, then fixes the config so a
/// replay can load them.
async fn run_then_fix(client: &mut Client) {
    let run = trigger(client).await;
    watch_to_end(client, &run.run_id).await;
    let stored = get_config(client).await;
    put_config(client, fixed_toml(), stored.revision)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_whose_event_cannot_be_read_is_reported_and_the_replay_run_still_ends() {
    let stack = Stack::with_workers(workers_with_missing_emails(1)).await;
    let mut client = stack.client().await;
    run_then_fix(&mut client).await;
    // What the loader files for a message on the worker subject that is not a worker event,
    // and for an event whose worker id cannot be a subject token.
    let undecodable = file_letter(
        &stack,
        INVALID_RUN,
        "seq-9001",
        "pipeline",
        "the event cannot be decoded",
        Bytes::from_static(b"\xff\xff\xff not protobuf"),
    )
    .await;
    let event = pb::WorkerEvent {
        run_id: "0196f1c2-0000-7000-8000-000000000000".into(),
        integration_id: INTEGRATION.into(),
        kind: pb::WorkerEventKind::Upsert.into(),
        worker: Some(pb::Worker {
            id: "a worker.with dots".into(),
            email: Some("dots@example.com".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bad_id = file_letter(
        &stack,
        INVALID_RUN,
        "seq-9002",
        "pipeline",
        "the event cannot be loaded: worker id",
        peoplesync_bus::codec::encode_worker_event(&event),
    )
    .await;

    let replay = replay_all(&mut client, 0).await;
    assert_eq!(replay.replayed, 1, "only the readable letter: {replay:?}");
    let mut failed: Vec<u64> = replay.failures.iter().map(|f| f.sequence).collect();
    failed.sort();
    assert_eq!(failed, vec![undecodable, bad_id], "{replay:?}");
    for failure in &replay.failures {
        assert!(
            failure
                .error
                .starts_with("nothing to replay: the letter's event cannot be read")
                && failure.error.ends_with("purge it"),
            "{failure:?}"
        );
    }
    // The replay run counts only what it published, so it ends.
    let replayed = watch_to_end(&mut client, &replay.run_id).await;
    let last = replayed.last().unwrap();
    assert_eq!(last.published, 1);
    assert_eq!(counts(last).written, 1);
    assert_eq!(last.outcome(), pb::RunOutcome::Succeeded, "{last:?}");
    let mut left: Vec<u64> = letters_held(&stack)
        .await
        .iter()
        .map(|l| l.sequence)
        .collect();
    left.sort();
    assert_eq!(left, vec![undecodable, bad_id], "kept until purged");
    // Nothing else to publish: no replay run is started for them.
    let again = replay_all(&mut client, 0).await;
    assert!(again.run_id.is_empty() && again.replayed == 0, "{again:?}");
    assert_eq!(again.failures.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_gets_past_letters_without_an_event_and_counts_them() {
    let stack = Stack::with_workers(workers_with_missing_emails(2)).await;
    let mut client = stack.client().await;
    // Letters holding no event, older than the run's: more of them than one replay takes.
    let mut without_event = Vec::new();
    for (worker, stage) in [
        ("a2G-verification-1", dlq::STAGE_VERIFICATION),
        ("a2G-verification-2", dlq::STAGE_VERIFICATION),
        ("a2G-extractor-1", dlq::STAGE_EXTRACTOR),
    ] {
        let record = Bytes::from_static(br#"{"EMAIL": "held@example.com"}"#);
        without_event
            .push(file_letter(&stack, "an-earlier-run", worker, stage, "held back", record).await);
    }
    run_then_fix(&mut client).await;
    let with_event = letters_held(&stack).await.len() - without_event.len();
    assert!(with_event >= 2, "the run dead-lettered workers");

    // A replay taking as many letters as hold an event gets them all in one call.
    let replay = replay_all(&mut client, with_event as u32).await;
    assert_eq!(
        (replay.replayed, replay.without_event, replay.more),
        (with_event as u64, 3, false),
        "{replay:?}"
    );
    assert!(replay.failures.is_empty(), "{replay:?}");
    let replayed = watch_to_end(&mut client, &replay.run_id).await;
    assert_eq!(
        replayed.last().unwrap().outcome(),
        pb::RunOutcome::Succeeded
    );
    // Again: nothing to publish, so no run, and the same letters counted.
    let again = replay_all(&mut client, with_event as u32).await;
    assert!(
        again.run_id.is_empty() && again.failures.is_empty() && !again.more,
        "{again:?}"
    );
    assert_eq!(again.without_event, 3);
    let text = syncctl(&stack, &["dlq", "replay", "--all"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.starts_with("nothing replayed\n")
            && text
                .stdout
                .contains("3 selected dead letters hold no event to replay"),
        "{text:?}"
    );
    let left: Vec<u64> = letters_held(&stack)
        .await
        .iter()
        .map(|l| l.sequence)
        .collect();
    assert_eq!(left, without_event, "they stay until purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_purged_and_replayed_after_a_fix() {
    let stack = Stack::with_workers(workers_with_missing_emails(3)).await;
    let mut client = stack.client().await;
    let (with_email, without_email) = stack.workers_by_email();
    assert_eq!(without_email.len(), 3);

    let run = trigger(&mut client).await;
    watch_to_end(&mut client, &run.run_id).await;
    let selector = |f: &dyn Fn(&mut pb::DeadLetterSelector)| {
        let mut s = pb::DeadLetterSelector {
            integration_id: INTEGRATION.into(),
            ..Default::default()
        };
        f(&mut s);
        Some(s)
    };
    let all = list_letters(&mut client, selector(&|_| {})).await.unwrap();
    assert_eq!(all.letters.len(), without_email.len());
    assert_eq!(all.held, without_email.len() as u64);
    assert_eq!(all.next_after_sequence, 0);
    let mut lettered: Vec<String> = all.letters.iter().map(|l| l.worker_id.clone()).collect();
    lettered.sort();
    let mut expected: Vec<String> = without_email
        .iter()
        .map(|i| generate::worker_id(*i))
        .collect();
    expected.sort();
    assert_eq!(lettered, expected);
    for letter in &all.letters {
        assert_eq!(letter.run_id, run.run_id);
        assert_eq!(letter.stage, "pipeline");
        assert!(letter.at.is_some());
        assert_eq!(letter.runs_seen, 1);
        assert_eq!(letter.first_run_id, run.run_id);
        assert_eq!(letter.first_seen, letter.at);
    }

    // A second run refuses the same workers for the same reasons: still one letter each,
    // now seen in two runs, with the second run's details.
    let second = trigger(&mut client).await;
    watch_to_end(&mut client, &second.run_id).await;
    let again = list_letters(&mut client, selector(&|_| {})).await.unwrap();
    assert_eq!(
        again.letters.len(),
        without_email.len(),
        "one letter per worker"
    );
    assert_eq!(again.held, without_email.len() as u64);
    for letter in &again.letters {
        assert_eq!(letter.runs_seen, 2, "{letter:?}");
        assert_eq!(letter.run_id, second.run_id);
        assert_eq!(letter.first_run_id, run.run_id);
        let before = all
            .letters
            .iter()
            .find(|l| l.worker_id == letter.worker_id)
            .unwrap();
        assert_eq!(letter.first_seen, before.at);
        assert!(letter.sequence > before.sequence);
    }
    let all = again;
    let by_run = list_letters(&mut client, selector(&|s| s.run_id = run.run_id.clone()))
        .await
        .unwrap();
    assert_eq!(by_run.letters.len(), without_email.len());
    let by_reason = list_letters(
        &mut client,
        selector(&|s| s.reason_contains = "is EMPTY".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        by_reason.letters.len(),
        without_email.len(),
        "reasons match case-insensitively"
    );
    assert!(
        list_letters(
            &mut client,
            selector(&|s| s.reason_contains = "no such reason".into())
        )
        .await
        .unwrap()
        .letters
        .is_empty()
    );
    let unknown = list_letters(&mut client, selector(&|s| s.run_id = "other-run".into()))
        .await
        .unwrap_err();
    assert_refused(&unknown, Code::NotFound, "no run other-run");
    let page = list_letters_page(&mut client, selector(&|_| {}), 1, 0)
        .await
        .unwrap();
    assert_eq!(page.letters.len(), 1);
    assert_eq!(page.next_after_sequence, page.letters[0].sequence);
    let next = list_letters_page(&mut client, selector(&|_| {}), 1, page.next_after_sequence)
        .await
        .unwrap();
    assert_eq!(next.letters[0].sequence, all.letters[1].sequence);

    // Destructive calls need a selection.
    let status = replay_letters(&mut client, selector(&|_| {}), 0)
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "`all`");

    // Counted by reason; a dry run counts what a purge would take and takes nothing.
    let summary = client
        .summarize_dead_letters(pb::SummarizeDeadLettersRequest {
            selector: selector(&|_| {}),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.total, without_email.len() as u64);
    assert!(!summary.truncated);
    assert_eq!(
        summary.reasons.iter().map(|r| r.count).sum::<u64>(),
        summary.total
    );
    assert!(
        summary
            .reasons
            .iter()
            .all(|r| r.stage == "pipeline" && !r.reason.is_empty())
    );
    let dry = purge_letters(&mut client, selector(&|s| s.all = true), true, 0)
        .await
        .unwrap();
    assert_eq!(dry.purged, without_email.len() as u64);
    assert_eq!(
        Some(dry.through_sequence),
        all.letters.iter().map(|l| l.sequence).max(),
        "a dry run says how far what it counted reaches"
    );
    // Purging the whole queue up to a sequence before every letter (as after a dry run that
    // counted none of them) keeps them all.
    let first = all.letters.iter().map(|l| l.sequence).min().unwrap_or(1);
    let bounded = purge_letters(&mut client, selector(&|s| s.all = true), false, first - 1)
        .await
        .unwrap();
    assert_eq!(bounded.purged, 0, "letters past the bound are kept");
    assert_eq!(letters_listed(&mut client).await, without_email.len());
    assert_eq!(
        letters_listed(&mut client).await,
        without_email.len(),
        "a dry run purges nothing"
    );

    // The status shows the integration at a glance: the last run, the letters by reason, the
    // loader replica, the scheduler, and a pause with its reason.
    let now = status_of(&mut client).await;
    assert_eq!(now.last_run.as_ref().unwrap().run_id, second.run_id);
    assert_eq!(
        now.dead_letters.as_ref().unwrap().total,
        without_email.len() as u64
    );
    assert!(now.loaders.iter().any(|l| l.name == "loader-1"), "{now:?}");
    assert!(!now.scheduler_leader.is_empty(), "{now:?}");
    assert!(now.config_revision > 0 && !now.schedule.is_empty() && now.next_run_at.is_some());
    assert_eq!((now.events_waiting, now.removals_held), (0, 0));
    assert!(
        !now.pause.as_ref().unwrap().paused && now.problems.is_empty(),
        "{now:?}"
    );
    // An integration no loader serves says so, instead of a bare "consumer not found".
    let unserved = client
        .get_status(pb::GetStatusRequest {
            integration_id: "unserved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        unserved
            .problems
            .iter()
            .any(|p| p.starts_with("no loader consumer of unserved yet")),
        "{:?}",
        unserved.problems
    );
    client
        .pause(pb::PauseRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
            reason: "maintenance window".into(),
        })
        .await
        .unwrap();
    let paused = status_of(&mut client).await;
    let pause = paused.pause.unwrap();
    assert!(pause.paused && pause.reason == "maintenance window" && pause.by == "ops");
    assert_eq!(paused.refused_config_revision, 0);
    client
        .resume(pb::ResumeRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
        })
        .await
        .unwrap();

    // Purge one letter by sequence; bounded below it (as by a dry run counted before it was
    // filed), the purge takes nothing.
    let purged_letter = all.letters[0].clone();
    let one = || selector(&|s| s.sequences = vec![purged_letter.sequence]);
    let bounded = purge_letters(&mut client, one(), false, purged_letter.sequence - 1)
        .await
        .unwrap();
    assert_eq!(bounded.purged, 0, "a letter filed after the count is kept");
    let purged = purge_letters(&mut client, one(), false, 0).await.unwrap();
    assert_eq!(purged.purged, 1);
    assert_eq!(letters_listed(&mut client).await, without_email.len() - 1);

    // Fix the config, then replay the rest of the run's letters: they load in a replay run.
    let stored = get_config(&mut client).await;
    put_config(&mut client, fixed_toml(), stored.revision)
        .await
        .unwrap();
    let replay = replay_letters(&mut client, selector(&|s| s.run_id = run.run_id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(replay.replayed, without_email.len() as u64 - 1);
    assert!(replay.failures.is_empty() && !replay.more);
    assert_ne!(replay.run_id, run.run_id);
    let replayed = watch_to_end(&mut client, &replay.run_id).await;
    let last = replayed.last().unwrap();
    assert_eq!(last.trigger, "replay");
    assert_eq!(last.published, replay.replayed);
    assert_eq!(counts(last).written, replay.replayed);
    assert_eq!(last.outcome(), pb::RunOutcome::Succeeded);
    assert_eq!(letters_listed(&mut client).await, 0);
    let stored = stack.stored_emails();
    assert_eq!(stored.len(), with_email.len() + without_email.len() - 1);
    assert!(
        !stored
            .iter()
            .any(|e| e.starts_with(&purged_letter.worker_id.to_lowercase())),
        "the purged letter was not replayed"
    );

    // Purge everything that is left: nothing.
    let purged = purge_letters(&mut client, selector(&|s| s.all = true), false, 0)
        .await
        .unwrap();
    assert_eq!(purged.purged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_of_one_integration_run_one_at_a_time_across_replicas() {
    let stack = Stack::with_workers(workers_with_missing_emails(20)).await;
    let mut client = stack.client().await;
    run_then_fix(&mut client).await;
    let filed: Vec<u64> = letters_held(&stack)
        .await
        .iter()
        .map(|l| l.sequence)
        .collect();
    assert_eq!(filed.len(), 20);

    // Another replica's replay holds the integration's lock: this one is refused, naming it.
    let locks = stack.bus().await.locks();
    let minute = std::time::Duration::from_secs(60);
    let lock = format!("replay.{INTEGRATION}");
    let held = locks
        .take(&lock, "loader-2", minute)
        .await
        .unwrap()
        .unwrap();
    let refused = replay_letters(&mut client, every_letter(), 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert!(
        refused.message().contains("another replay") && refused.message().contains("loader-2"),
        "{refused:?}"
    );
    assert_eq!(letters_held(&stack).await.len(), 20, "nothing replayed");
    locks.release(held).await.unwrap();

    // Two at once: every letter is replayed once, by one of them or split between them.
    let mut other = stack.client().await;
    let (first, second) = tokio::join!(
        replay_letters(&mut client, every_letter(), 0),
        replay_letters(&mut other, every_letter(), 0)
    );
    let replayed: u64 = [first, second]
        .into_iter()
        .map(|reply| match reply {
            Ok(reply) => reply.replayed,
            Err(status) if status.code() == tonic::Code::Aborted => 0,
            Err(status) => panic!("{status:?}"),
        })
        .sum();
    assert_eq!(replayed, 20);
    // (The replay run's own records may be filed again later, as new letters.)
    let left = letters_held(&stack).await;
    assert!(
        left.iter().all(|l| !filed.contains(&l.sequence)),
        "{left:?}"
    );
    assert_eq!(locks.holder(&lock).await.unwrap(), None, "given back");
}
