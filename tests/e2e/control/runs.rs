//! Runs over the control plane: trigger, watch to the end, get and list with counts, a full
//! run (resend all) that puts hand edits in Oomnitza right, and a watch that says so when
//! nothing moves the run or its record cannot be read; and every command that names a run
//! taking its tail and refusing a run no one has.

use bytes::Bytes;
use peoplesync_bus::RunRecord;
use peoplesync_bus::leavers::{self, LeaverEntry};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_is_watched_to_its_end_and_listed_with_its_counts() {
    let workers = 60;
    let stack = Stack::start(Options {
        workers,
        // Slow pages, so that the run is still going when it is triggered again.
        sage_faults: SageFaults {
            latency_ms: 150,
            ..SageFaults::default()
        },
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;

    let started = trigger(&mut client).await;
    let again = trigger(&mut client).await;
    assert_eq!(again.run_id, started.run_id);
    assert!(again.already_running);

    let updates = watch_to_end(&mut client, &started.run_id).await;
    assert!(updates.len() >= 2, "progress was streamed: {updates:?}");
    assert!(
        updates.iter().all(|u| u.warning.is_empty()),
        "a run making progress carries no warning: {updates:?}"
    );
    for pair in updates.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.published >= a.published, "published never goes back");
        let done = |r: &pb::Run| r.published + r.removed - r.pending;
        assert!(done(b) >= done(a), "accounted events never go back");
    }
    let last = updates.last().unwrap();
    assert!(last.done && last.counts_final);
    assert_eq!(last.published, workers);
    assert_eq!(last.pending, 0);
    let c = counts(last);
    assert_eq!(
        c.written + c.unchanged + c.filtered + c.dead_lettered,
        workers,
        "published = written + unchanged + filtered + dead-lettered"
    );
    let (with_email, without_email) = stack.workers_by_email();
    assert_eq!(c.written, with_email.len() as u64);
    assert_eq!(c.dead_lettered, without_email.len() as u64);
    let expected_outcome = if without_email.is_empty() {
        pb::RunOutcome::Succeeded
    } else {
        pb::RunOutcome::SucceededWithDeadLetters
    };
    assert_eq!(last.outcome(), expected_outcome);
    assert_eq!(
        last.finalize.clone().unwrap().state(),
        pb::FinalizeState::Finalized
    );
    assert_eq!(last.finalize.clone().unwrap().by, "loader-1");

    let got = get_run(&mut client, started.run_id.clone()).await.unwrap();
    assert_eq!(&got, last);
    let history = client
        .list_runs(pb::ListRunsRequest {
            integration_id: INTEGRATION.into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history.runs.first().map(|r| &r.run_id),
        Some(&started.run_id)
    );
    assert_eq!(history.runs[0].outcome(), expected_outcome);
    assert_eq!(counts(&history.runs[0]), c);

    let status = get_run(&mut client, "no-such-run".into())
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, "no-such-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_in_oomnitza_are_put_right_by_a_full_run_and_by_sync_worker() {
    let workers = 30;
    let stack = Stack::with_workers(workers).await;
    let mut client = stack.client().await;
    let first = trigger(&mut client).await;
    let first = watch_to_end(&mut client, &first.run_id).await;
    let written = counts(first.last().unwrap()).written;
    assert!(written > 0);

    // Someone edits two users by hand in Oomnitza.
    let edit = |n: usize| {
        let mut user = stack.oomnitza.users()[n].clone();
        user.insert("POSITION".into(), Value::from("Edited by hand"));
        stack.oomnitza.insert_user(user);
    };
    let edited = |n: usize| {
        stack.oomnitza.users()[n].get("POSITION") == Some(&Value::from("Edited by hand"))
    };
    edit(0);
    edit(1);

    // A normal run sends nothing unchanged, so the edits stay.
    let normal = trigger(&mut client).await;
    let normal = watch_to_end(&mut client, &normal.run_id).await;
    assert_eq!(counts(normal.last().unwrap()).written, 0);
    assert!(edited(0) && edited(1));

    // A full run sends every record and puts them right.
    let full = trigger_resending(&mut client, true).await;
    let full = watch_to_end(&mut client, &full.run_id).await;
    let last = full.last().unwrap();
    assert!(last.resend_all);
    assert_eq!(
        counts(last).written,
        written,
        "every record sent and confirmed"
    );
    assert_eq!(counts(last).unchanged, 0);
    let verification = last.verification.clone().unwrap();
    assert_eq!(
        verification.state(),
        pb::VerificationState::Verified,
        "{verification:?}"
    );
    assert!(!edited(0) && !edited(1), "the hand edits are undone");

    // sync-worker always writes the worker, unchanged or not.
    edit(0);
    let email = stack.oomnitza.users()[0]["EMAIL"]
        .as_str()
        .unwrap()
        .to_owned();
    let index = (0..workers)
        .find(|i| {
            stack.worker(*i)["emailAddress"]
                .as_str()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(&email))
        })
        .expect("the edited user's worker");
    let synced = sync_worker(&mut client, generate::worker_id(index))
        .await
        .unwrap();
    let run = watch_to_end(&mut client, &synced.run_id).await;
    assert_eq!(counts(run.last().unwrap()).written, 1);
    assert!(!edited(0), "sync-worker put the user right");
}

/// Stores a running run record that nothing will advance (no extractor), and opens a watch on
/// it; the first update is the run as stored.
async fn watch_a_run_nobody_advances(
    stack: &Stack,
) -> (tonic::Streaming<pb::Run>, pb::Run, tokio::time::Instant) {
    let record = RunRecord::start(INTEGRATION, "0196f1c2-stalled", true, "manual");
    stack.bus().await.runs().create(&record).await.unwrap();
    let mut stream = watch(&mut stack.client().await, &record.run_id).await;
    let first = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the first update within 60 s")
        .expect("an update")
        .unwrap();
    (stream, first, tokio::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_run_that_makes_no_progress_for_a_minute_is_called_out() {
    let stack = Stack::without_extractor().await;
    let (mut stream, first, opened) = watch_a_run_nobody_advances(&stack).await;
    assert_eq!(first.state(), pb::RunState::Running);
    assert_eq!(first.warning, "");

    let next = tokio::time::timeout(Duration::from_secs(90), stream.next())
        .await
        .expect("an update within 90 s")
        .expect("the stream goes on")
        .unwrap();
    assert!(
        opened.elapsed() >= Duration::from_secs(55),
        "not before a minute: {:?}",
        opened.elapsed()
    );
    assert_eq!(
        next.warning,
        "no progress for 60 s; is an extractor running? see syncctl status"
    );
    assert!(!next.done);
    assert_eq!(
        pb::Run {
            warning: String::new(),
            ..next
        },
        first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_run_cannot_be_read_ends_unavailable_saying_why() {
    let mut stack = Stack::without_extractor().await;
    let (mut stream, _, _) = watch_a_run_nobody_advances(&stack).await;
    stack.d.nats.server().kill();

    let ended = tokio::time::timeout(Duration::from_secs(90), stream.next())
        .await
        .expect("the watch ends within 90 s")
        .expect("with a status");
    let status = ended.expect_err("NATS is gone");
    assert_refused(&status, Code::Unavailable, "reading it has failed for 15 s");
    assert!(status.message().contains("0196f1c2-stalled"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_need_nats_are_refused_at_once_while_the_loader_is_not_connected() {
    let mut stack = Stack::without_extractor().await;
    let mut client = stack.client().await;
    stack.d.nats.server().kill();
    let said = "this loader replica is not connected to NATS";
    let status_request = || pb::GetStatusRequest {
        integration_id: INTEGRATION.into(),
    };
    // The loader's client sees the connection go within a few seconds.
    peoplesync_testkit::wait_for(
        "the loader to see NATS gone",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                let refused = client.get_status(status_request()).await.err()?;
                refused.message().contains(said).then_some(())
            }
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let refusals = [
        client.get_status(status_request()).await.map(drop),
        client
            .list_runs(pb::ListRunsRequest::default())
            .await
            .map(drop),
        client
            .list_dead_letters(pb::ListDeadLettersRequest {
                selector: every_letter(),
                ..Default::default()
            })
            .await
            .map(drop),
        client
            .pause(pb::PauseRequest {
                integration_id: INTEGRATION.into(),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for refused in refusals {
        let status = refused.expect_err("NATS is gone");
        assert_refused(&status, Code::Unavailable, said);
        assert!(status.message().contains("NATS_URL"), "{status:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not at the NATS client's timeouts: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_selector_takes_a_tail_and_refuses_a_run_no_one_has() {
    // A run with a record, a letter and a leaver; one whose record has expired but whose
    // letter and leaver are still held; one with a record and nothing else; and one unknown.
    const KNOWN: &str = "01970000-0000-7000-8000-00000000a001";
    const EXPIRED: &str = "01970000-0000-7000-8000-00000000a002";
    const EMPTY: &str = "01970000-0000-7000-8000-00000000a003";
    const UNKNOWN: &str = "01970000-0000-7000-8000-00000000a004";
    let tail = |id: &str| id[id.len() - 12..].to_owned();
    let stack = Stack::without_extractor().await;
    let bus = stack.bus().await;
    for run in [KNOWN, EMPTY] {
        bus.runs()
            .create(&RunRecord::start(INTEGRATION, run, false, "schedule"))
            .await
            .unwrap();
    }
    leavers::ensure(&bus).await.unwrap();
    for (run, worker) in [(KNOWN, "w-known"), (EXPIRED, "w-expired")] {
        super::dead_letters::file_letter(
            &stack,
            run,
            worker,
            "pipeline",
            "EMAIL is EMPTY",
            Bytes::new(),
        )
        .await;
        let leaver = LeaverEntry {
            worker_id: worker.into(),
            reason: "removed".into(),
            action: "none".into(),
            at: "2026-12-01T00:00:00Z".into(),
            ..Default::default()
        };
        leavers::record(&bus, INTEGRATION, run, &leaver)
            .await
            .unwrap();
    }
    let found = |args: &[&str]| {
        let ran = syncctl(&stack, args);
        assert_eq!(ran.code, 0, "syncctl {args:?}: {}", ran.stderr);
        ran.json()
    };

    // The tail `syncctl runs` shows works wherever a run is named.
    let known = tail(KNOWN);
    let letters = found(&["dlq", "list", "--run", &known, "-o", "json"]);
    assert_eq!(letters["letters"][0]["run_id"], KNOWN, "{letters}");
    let summary = found(&["dlq", "summary", "--run", &known, "-o", "json"]);
    assert_eq!(summary["total"], 1, "{summary}");
    let report = found(&["leavers", "--run", &known, "-o", "json"]);
    assert_eq!(report["run_id"], KNOWN, "{report}");
    assert_eq!(report["count"], 1, "{report}");
    let dry = found(&["dlq", "purge", "--run", &known, "--dry-run", "-o", "json"]);
    assert_eq!(dry["purged"], 1, "{dry}");

    // A run with a record but no letters or leavers is an empty answer, not an error.
    let none = found(&["dlq", "list", "--run", EMPTY, "-o", "json"]);
    assert_eq!(none["letters"].as_array().unwrap().len(), 0, "{none}");
    let report = found(&["leavers", "--run", &tail(EMPTY), "-o", "json"]);
    assert_eq!(report["run_id"], EMPTY, "{report}");
    assert_eq!(report["count"], 0, "{report}");

    // Letters and leavers outlive their run's record: the full id still selects them.
    let letters = found(&["dlq", "list", "--run", EXPIRED, "-o", "json"]);
    assert_eq!(letters["letters"][0]["worker_id"], "w-expired", "{letters}");
    let report = found(&["leavers", "--run", EXPIRED, "-o", "json"]);
    assert_eq!(report["count"], 1, "{report}");

    // A run no one has is NOT_FOUND (exit 4), named, whether typed as a tail or in full.
    let tail_of_expired = tail(EXPIRED);
    for (args, named) in [
        (vec!["leavers", "--run", "nonsense-run"], "nonsense-run"),
        (vec!["leavers", "--run", UNKNOWN], UNKNOWN),
        (vec!["dlq", "list", "--run", "nonsense-run"], "nonsense-run"),
        (vec!["dlq", "list", "--run", UNKNOWN], UNKNOWN),
        (vec!["dlq", "summary", "--run", UNKNOWN], UNKNOWN),
        (vec!["dlq", "replay", "--run", UNKNOWN], UNKNOWN),
        (vec!["dlq", "purge", "--run", UNKNOWN, "--yes"], UNKNOWN),
        (vec!["dlq", "purge", "--run", UNKNOWN, "--dry-run"], UNKNOWN),
        (
            vec!["dlq", "list", "--run", tail_of_expired.as_str()],
            "give the full id",
        ),
        (vec!["approve-removals", "nonsense-run"], "nonsense-run"),
        (vec!["runs", "get", "nonsense-run"], "nonsense-run"),
    ] {
        let ran = syncctl(&stack, &args);
        assert_eq!(
            ran.code, 4,
            "syncctl {args:?}: {}{}",
            ran.stdout, ran.stderr
        );
        assert!(
            ran.stderr.contains(named),
            "syncctl {args:?}: {}",
            ran.stderr
        );
    }
    assert_eq!(
        letters_listed(&mut stack.client().await).await,
        2,
        "nothing was purged or replayed by a refused selector"
    );
}
