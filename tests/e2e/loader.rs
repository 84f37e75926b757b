//! The loader under failure, with exact final state checked against what the Oomnitza
//! simulator stored: replicas sharing work, a replica killed mid-run, an outage, throttling,
//! poisoned records, unchanged re-runs, a canceled portion (also one the loader cannot read),
//! bad credentials and a token that may not finalize, pause/resume and a SIGTERM drain, the
//! in-flight bound and run-record retention. Every test of a run also
//! checks the run invariant: published = sum of outcomes.

use std::time::{Duration, Instant};

use peoplesync_bus::pause::PauseFlag;
use peoplesync_bus::{FinalizeState, OutcomeCounts, RunRecord};
use peoplesync_sims::oomnitza::{OomnitzaBehavior, OomnitzaFaults};
use peoplesync_sims::sage::SageConfig;
use peoplesync_testkit::wait_for;

use peoplesync_testkit::stack::{
    Deployment, QUICK, Serving, assert_accounted, deployment, oomnitza_config,
};

/// One full run of `workers` through a single replica with the `[batch]` settings `batch`,
/// against an Oomnitza answering every request after `latency_ms`; returns the deployment and
/// the finalized run, whose counts are checked to account for every event.
async fn one_replica_run(workers: u64, latency_ms: u64, batch: &str) -> (Deployment, RunRecord) {
    let d = deployment(workers).await;
    d.oomnitza_latency(latency_ms);
    let config = format!("{QUICK}\n[batch]\n{batch}\n");
    let loader = d.loader_with("loader-1", &config);
    let run = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&run);
    drop(loader);
    (d, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_twenty_thousand_events_and_write_each_user_once() {
    let d = deployment(20_000).await;
    let _replicas: Vec<_> = (1..=3)
        .map(|i| d.loader_with(&format!("loader-{i}"), QUICK))
        .collect();
    let run = d.run_to_end(Duration::from_secs(180)).await;
    let run_id = run.run_id.clone();
    assert_accounted(&run);
    d.assert_users_match_sage();
    assert_eq!(d.oomnitza.stats().finalize_calls.get(&run_id), Some(&1));
    match &run.finalize {
        FinalizeState::Finalized { by, .. } => assert!(by.starts_with("loader-"), "{by}"),
        other => panic!("not finalized: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_nothing_and_creates_no_user_twice() {
    let d = deployment(6_000).await;
    d.oomnitza_latency(30);
    let mut victim = d.loader_with("loader-1", QUICK);
    let _survivors = [
        d.loader_with("loader-2", QUICK),
        d.loader_with("loader-3", QUICK),
    ];
    let run_id = d.extract_run();
    wait_for("the first writes", Duration::from_secs(60), || async {
        (d.oomnitza.stats().bulk_records >= 1_000).then_some(())
    })
    .await;
    victim.kill();
    let run = d.assert_loaded(&run_id, Duration::from_secs(180)).await;
    // Records the killed replica wrote but did not ack come back to the others, which count
    // them written (this run wrote them), not unchanged: written = what Oomnitza holds.
    assert_eq!(
        run.counts.expect("counts").written,
        d.oomnitza.users().len() as u64
    );
    assert_eq!(d.oomnitza.stats().finalize_calls.get(&run_id), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_delays_the_run_without_dead_letters() {
    let d = deployment(2_000).await;
    d.oomnitza.set_faults(OomnitzaFaults {
        outage_for_ms: Some(10_000),
        ..Default::default()
    });
    let started = Instant::now();
    let _loader = d.loader_with("loader-1", QUICK);
    let run = d.run_to_end(Duration::from_secs(120)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the outage was real"
    );
    assert_accounted(&run);
    d.assert_users_match_sage();
    let (_, without_email) = d.expected();
    let letters = d.dead_letters().await;
    assert_eq!(
        letters.len(),
        without_email.len(),
        "only unloadable workers are dead-lettered"
    );
    assert!(letters.iter().all(|l| l.letter.stage == "pipeline"));
    assert!(
        d.oomnitza
            .stats()
            .status_counts
            .get(&503)
            .copied()
            .unwrap_or(0)
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_bulk_endpoint_alone_holds_loading_without_dead_letters() {
    let d = deployment(500).await;
    // The credential check answers throughout; only the bulk endpoint is down, for longer
    // than two deliveries of an event take.
    d.oomnitza.set_faults(OomnitzaFaults {
        bulk_outage_for_ms: Some(20_000),
        ..Default::default()
    });
    let _loader = d.loader_with(
        "loader-1",
        "[consumer]\nack_wait_secs = 4\nmax_deliver = 2\n\
         [retry]\ninitial_delay_ms = 50\nmax_delay_ms = 200\nmax_elapsed_secs = 1\n\
         credentials_retry_secs = 1\n",
    );
    let run = d.run_to_end(Duration::from_secs(120)).await;
    // The outage is timed from before the loader started: it must still have met it, or this
    // test would show nothing.
    let refused = d.oomnitza.stats().status_counts.get(&503).copied();
    assert!(refused.is_some_and(|n| n > 0), "the loader met the outage");
    assert_accounted(&run);
    d.assert_users_match_sage();
    d.assert_only_pipeline_letters("only unloadable workers are dead-lettered")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_oomnitza_slows_the_loader_down_and_the_run_completes() {
    let d = deployment(3_000).await;
    d.oomnitza.set_faults(OomnitzaFaults {
        rate_limit_per_sec: Some(5),
        retry_after_secs: Some(1),
        ..Default::default()
    });
    let config = format!(
        "{QUICK}\n[batch]\nsize = 50\n[rate_limit]\nmax_per_second = 100.0\nrecover_step = 0.5\n"
    );
    let _loader = d.loader_with("loader-1", &config);
    let run = d
        .assert_loaded(&d.extract_run(), Duration::from_secs(180))
        .await;
    let stats = d.oomnitza.stats();
    let throttled = stats.requests_429;
    let accepted = stats.status_counts.get(&200).copied().unwrap_or(0);
    assert!(throttled > 0, "the limit was hit");
    assert!(
        throttled < accepted,
        "the limiter settled under the limit: {throttled} throttled vs {accepted} accepted"
    );
    assert!(
        run.counts
            .is_some_and(|c| c.dead_lettered as usize == d.expected().1.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_records_inside_good_batches_alone_reach_the_dead_letter_queue() {
    let d = deployment(1_000).await;
    let (expected, without_email) = d.expected();
    let poisoned: Vec<String> = expected.keys().take(5).cloned().collect();
    d.oomnitza.set_faults(OomnitzaFaults {
        poison_emails: poisoned.clone(),
        ..Default::default()
    });
    let _loader = d.loader_with("loader-1", QUICK);
    let run = d.run_to_end(Duration::from_secs(60)).await;
    let run_id = run.run_id.clone();
    assert_accounted(&run);
    let stored = d.oomnitza.users();
    assert_eq!(stored.len(), expected.len() - poisoned.len());
    let letters = d.dead_letters().await;
    assert_eq!(letters.len(), without_email.len() + poisoned.len());
    let refused: Vec<_> = letters
        .iter()
        .filter(|l| l.letter.stage == "oomnitza")
        .collect();
    assert_eq!(refused.len(), poisoned.len());
    for letter in refused {
        assert_eq!(letter.letter.http_status, Some(422));
        assert!(
            letter.letter.body_excerpt.is_some(),
            "Oomnitza's answer is kept"
        );
        assert!(!letter.letter.reason.is_empty());
        assert_eq!(letter.letter.run_id, run_id);
    }
}

/// Runs again (Oomnitza has had `posted` records so far) and asserts the run posted nothing but
/// the reports of records the mapping refused; returns its counts.
async fn rerun_posting_nothing_new(d: &Deployment, posted: u64) -> OutcomeCounts {
    let run = d.run_to_end(Duration::from_secs(60)).await;
    assert_accounted(&run);
    let counts = run.counts.expect("counts");
    assert_eq!(
        d.oomnitza.stats().bulk_records,
        posted + counts.dead_lettered,
        "nothing posted but the reports of records the mapping refused"
    );
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_no_changes_posts_nothing_and_a_change_posts_one_record() {
    let d = deployment(1_000).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let first = d.run_to_end(Duration::from_secs(60)).await;
    let written = first.counts.expect("counts").written;
    let posted = d.oomnitza.stats().bulk_records;

    let counts = rerun_posting_nothing_new(&d, posted).await;
    assert_eq!(counts.unchanged, written);
    assert_eq!(counts.written, 0);
    let posted = d.oomnitza.stats().bulk_records;

    let (expected, _) = d.expected();
    let (_, raw) = expected.iter().next().expect("a worker");
    let id = raw["id"].as_str().expect("id");
    d.sage.patch_worker(
        id,
        serde_json::json!({"currentEmployment": {"jobTitle": "Chief Tester"}}),
    );
    let third = d.run_to_end(Duration::from_secs(60)).await;
    assert_accounted(&third);
    let counts = third.counts.expect("counts");
    assert_eq!(
        d.oomnitza.stats().bulk_records,
        posted + 1 + counts.dead_lettered,
        "only the changed worker (and the reports of refused records)"
    );
    assert_eq!(counts.written, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_keeps_at_most_in_flight_requests_at_oomnitza() {
    let (d, _) = one_replica_run(2_000, 100, "in_flight = 2").await;
    let stats = d.oomnitza.stats();
    // Bulk requests stay at batch.in_flight; a read of the portion's cancel state may run
    // beside them.
    assert!(
        stats.max_in_flight <= 3,
        "batches are prepared and settled beside the requests, but requests stay at batch.in_flight (+1 portion read): {} at once",
        stats.max_in_flight
    );
    d.assert_users_match_sage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_portion_stops_sends_and_counts_the_rest_canceled() {
    let d = deployment(3_000).await;
    d.oomnitza_latency(100);
    let config = format!("{QUICK}\n[batch]\nsize = 50\nin_flight = 1\n");
    let _loader = d.loader_with("loader-1", &config);
    let run_id = d.extract_run();
    wait_for("the first write", Duration::from_secs(30), || async {
        (d.oomnitza.stats().bulk_requests >= 2).then_some(())
    })
    .await;
    d.oomnitza.cancel_portion(&run_id);
    let run = d
        .finalized("sage-people", &run_id, Duration::from_secs(120))
        .await;
    assert_accounted(&run);
    let counts = run.counts.expect("counts");
    assert!(
        counts.canceled > 1_000,
        "most of the run was canceled: {counts:?}"
    );
    assert_eq!(
        counts.written, 0,
        "nothing posted to a canceled portion counts as written"
    );
    assert!(
        matches!(run.finalize, FinalizeState::Canceled { .. }),
        "{:?}",
        run.finalize
    );
    assert!(run.canceled.is_some(), "the cancel is noted on the run");
    assert_eq!(
        d.oomnitza.stats().finalize_calls.get(&run_id),
        Some(&1),
        "a canceled portion is finalized once, as Oomnitza's connector does"
    );
    assert!(
        d.oomnitza.portion(&run_id).is_some_and(|p| p.canceled),
        "and stays canceled"
    );
    // The next run loads every worker, including those the canceled run had posted.
    d.oomnitza.set_faults(OomnitzaFaults::default());
    let next = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&next);
    let counts = next.counts.expect("counts");
    assert_eq!(
        counts.unchanged, 0,
        "no record is skipped because the canceled run posted it"
    );
    assert_eq!(d.oomnitza.users().len() as u64, counts.written);
}

/// [`QUICK`] with three attempts per Oomnitza call, so that a call that keeps failing gives up
/// within a second.
const FEW_ATTEMPTS: &str = r#"
[consumer]
ack_wait_secs = 4
[retry]
max_attempts = 3
initial_delay_ms = 50
max_delay_ms = 200
credentials_retry_secs = 1
"#;

/// Run `run_id`'s record of `sage-people` once `done` says it is there, waiting up to `timeout`.
async fn run_record_when(
    d: &Deployment,
    run_id: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&RunRecord) -> bool,
) -> RunRecord {
    let runs = d.bus().await.runs();
    wait_for(what, timeout, || {
        let runs = runs.clone();
        let done = &done;
        async move {
            let (record, _) = runs.get("sage-people", run_id).await.ok()??;
            done(&record).then_some(record)
        }
    })
    .await
}

/// Clears Oomnitza's faults, then waits for run `run_id` of `sage-people` to be settled and
/// checks that it accounts for every event.
async fn finalized_once_faults_clear(d: &Deployment, run_id: &str) -> RunRecord {
    d.oomnitza.set_faults(OomnitzaFaults::default());
    let run = d
        .finalized("sage-people", run_id, Duration::from_secs(60))
        .await;
    assert_accounted(&run);
    run
}

/// [`finalized_once_faults_clear`], for a run whose portion must end finalized.
async fn finalizes_once_faults_clear(d: &Deployment, run_id: &str) {
    let run = finalized_once_faults_clear(d, run_id).await;
    assert!(
        matches!(run.finalize, FinalizeState::Finalized { .. }),
        "{:?}",
        run.finalize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_loader_cannot_read_leaves_the_finalize_pending_until_it_can() {
    let d = deployment(300).await;
    // The run waits in the stream while Oomnitza stops answering reads of a portion's state
    // and an administrator cancels the portion. This tenant still applies what is posted to
    // it, so Oomnitza ends as if the cancel came after the last batch; either way the loader
    // cannot see the cancel, and the finalize is answered 409.
    let run_id = d.extract_run();
    d.oomnitza.set_faults(OomnitzaFaults {
        portion_reads_failing: true,
        ..Default::default()
    });
    d.oomnitza
        .set_behavior(OomnitzaBehavior {
            apply_after_cancel: true,
            ..d.oomnitza.behavior()
        })
        .expect("behaviour");
    d.oomnitza.cancel_portion(&run_id);
    let loader = d.loader("loader-1").config(FEW_ATTEMPTS).spawn_serving();
    let finalize_calls = || {
        let calls = d.oomnitza.stats().finalize_calls;
        calls.get(&run_id).copied().unwrap_or(0)
    };
    wait_for("the finalize", Duration::from_secs(60), || async {
        (finalize_calls() >= 1).then_some(())
    })
    .await;
    let released = run_record_when(
        &d,
        &run_id,
        Duration::from_secs(30),
        "the finalize claim to be released or recorded",
        |r| !matches!(r.finalize, FinalizeState::Claimed { .. }),
    )
    .await;
    assert!(
        matches!(released.finalize, FinalizeState::Pending),
        "a 409 that may mean canceled is not recorded as finalized: {:?}",
        released.finalize
    );
    assert!(released.counts.is_none(), "{:?}", released.counts);
    wait_for(
        "the finalize to be tried again",
        Duration::from_secs(30),
        || async { (finalize_calls() >= 2).then_some(()) },
    )
    .await;
    let note = crate::operations::wait_for_note(&loader, "finalize sage-people", "the note", |n| {
        n.is_some_and(|n| n.contains(&run_id) && n.contains("409"))
    })
    .await;
    assert!(note.is_some_and(|n| n.contains("reading the portion's state failed")));
    let run = finalized_once_faults_clear(&d, &run_id).await;
    assert!(
        matches!(run.finalize, FinalizeState::Canceled { .. }),
        "{:?}",
        run.finalize
    );
    crate::operations::wait_for_note(&loader, "finalize sage-people", "no note", |n| n.is_none())
        .await;
    assert!(run.canceled.is_some(), "the cancel is noted on the run");
    let counts = run.counts.expect("counts");
    assert_eq!(counts.written, 0, "{counts:?}");
    assert!(counts.canceled > 0, "{counts:?}");
    assert!(run.verification.is_none(), "a canceled run is not checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_stop_loading_without_dead_letters_until_they_work() {
    let d = deployment(1_000).await;
    d.oomnitza.set_faults(OomnitzaFaults {
        forbidden: true,
        ..Default::default()
    });
    let _loader = d.loader_with("loader-1", QUICK);
    let run_id = d.extract_run();
    let refused = || {
        let stats = d.oomnitza.stats();
        stats.status_counts.get(&403).copied().unwrap_or(0)
    };
    wait_for("the first refusal", Duration::from_secs(30), || async {
        (refused() > 0).then_some(())
    })
    .await;
    // Counted over a window that starts at the first refusal, whatever the start-up took.
    let (start, before) = (Instant::now(), refused());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = refused() - before;
    let secs = start.elapsed().as_secs_f64();
    assert!(
        during as f64 <= 3.0 * secs,
        "no retry storm: {during} refused requests in {secs:.1} s"
    );
    assert!(d.oomnitza.users().is_empty());
    d.assert_only_pipeline_letters("good records are not dead-lettered")
        .await;
    d.oomnitza.set_faults(OomnitzaFaults::default());
    d.assert_loaded(&run_id, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_integration_is_not_loaded_until_resumed() {
    let d = deployment(500).await;
    let pauses = d.bus().await.pauses();
    pauses
        .set("sage-people", &PauseFlag::now(true, "test", None))
        .await
        .unwrap();
    let loader = d.loader("loader-1").config(QUICK).spawn_serving();
    let run_id = d.extract_run();
    // The loader runs and knows of the pause; the run's events wait in the stream.
    crate::operations::wait_for_note(&loader, "integration sage-people", "the pause", |n| {
        n.is_some_and(|n| n.starts_with("paused by test"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        d.oomnitza.stats().bulk_requests,
        0,
        "nothing sent while paused"
    );
    pauses
        .set("sage-people", &PauseFlag::now(false, "test", None))
        .await
        .unwrap();
    d.assert_loaded(&run_id, Duration::from_secs(60)).await;
}

/// Loader settings of one slow request at a time (batches of 50), and `batch` (more lines of
/// the `[batch]` section): most of what a replica pulled waits to be posted.
fn one_request_at_a_time(batch: &str) -> String {
    format!("{QUICK}[batch]\nsize = 50\nin_flight = 1\n{batch}")
}

/// A deployment of `workers` whose Oomnitza answers `latency_ms` late, a loader that `start`
/// starts with [`one_request_at_a_time`]`(batch)`, and a run read in the background (whatever
/// the extraction takes, a test acts while records load), once its first write is made.
async fn loading_slowly<L>(
    workers: u64,
    latency_ms: u64,
    batch: &str,
    start: impl FnOnce(&Deployment, &str) -> L,
) -> (Deployment, L, tokio::task::JoinHandle<String>) {
    let d = deployment(workers).await;
    d.oomnitza_latency(latency_ms);
    let loader = start(&d, &one_request_at_a_time(batch));
    let extraction = d.extract_run_in_background();
    wait_for("the first write", Duration::from_secs(30), || async {
        (d.oomnitza.stats().bulk_requests >= 1).then_some(())
    })
    .await;
    (d, loader, extraction)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_back_the_batches_already_pulled() {
    let (d, loader, extraction) = loading_slowly(2_000, 200, "", |d, config| {
        d.loader("loader-1").config(config).spawn_serving()
    })
    .await;
    let pauses = d.bus().await.pauses();
    pauses
        .set("sage-people", &PauseFlag::now(true, "test", None))
        .await
        .unwrap();
    crate::operations::wait_for_note(&loader, "integration sage-people", "the pause", |n| {
        n.is_some_and(|n| n.starts_with("paused by test"))
    })
    .await;
    // The request in flight when the pause came finishes; nothing else is posted.
    let at_pause = d.oomnitza.stats().bulk_requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = d.oomnitza.stats().bulk_requests;
    assert!(
        after <= at_pause + 1,
        "{at_pause} requests at the pause, {after} after"
    );
    assert!(
        d.oomnitza.stats().bulk_records < 2_000,
        "the pause came mid-load"
    );
    pauses
        .set("sage-people", &PauseFlag::now(false, "test", None))
        .await
        .unwrap();
    let run_id = extraction.await.expect("the extraction");
    d.assert_loaded(&run_id, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_the_ack_wait_does_not_dead_letter_what_others_wrote() {
    // The frozen replica holds batches it has not posted yet.
    let (d, first, extraction) = loading_slowly(1_000, 300, "pull_batch = 500\n", |d, config| {
        d.loader_with("loader-1", config)
    })
    .await;
    first.freeze();
    // Another replica takes the frozen one's events once their ack wait ran out, loads them
    // and finalizes the run.
    let _second = d.loader_with("loader-2", &one_request_at_a_time(""));
    let run_id = extraction.await.expect("the extraction");
    let run = d
        .finalized("sage-people", &run_id, Duration::from_secs(120))
        .await;
    assert_accounted(&run);
    let before = d.oomnitza.stats().bulk_requests;
    first.thaw();
    // The thawed replica posts what it held, into the finalized portion: wait until it is
    // done (no new request for 2 s).
    let requests = || d.oomnitza.stats().bulk_requests;
    wait_for(
        "the thawed replica to post and stop",
        Duration::from_secs(60),
        || async {
            let start = requests();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let end = requests();
            (end > before && end == start).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<_> = d
        .dead_letters()
        .await
        .into_iter()
        .filter(|l| l.letter.run_id == run_id && l.letter.stage == "oomnitza")
        .collect();
    assert!(
        late.is_empty(),
        "records written by the other replica: {late:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_batches_and_exits_within_the_grace_period() {
    let (d, mut first, extraction) = loading_slowly(3_000, 200, "", |d, config| {
        d.loader_with("loader-1", config)
    })
    .await;
    let accepted_at_sigterm = d.oomnitza.stats().bulk_records;
    let asked = Instant::now();
    let status = first.terminate().expect("exit status");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "exited within the grace period"
    );
    assert!(
        accepted_at_sigterm < 3_000,
        "SIGTERM came while records were loading"
    );
    let run_id = extraction.await.expect("the extraction");
    let _second = d.loader_with("loader-2", QUICK);
    d.assert_loaded(&run_id, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_stopped_while_nats_is_gone_exits_within_its_grace_period() {
    // NATS goes away mid-load, then the loader is told to stop: its deliveries cannot settle,
    // and its finalizer and announcement wait on a client that holds requests while it
    // reconnects. The stop still ends within shutdown_grace_secs + 5 s (it took minutes).
    // Loading takes some 24 s (50 records a request, one at a time, 400 ms each).
    let (mut d, mut loader, extraction) = loading_slowly(3_000, 400, "", |d, config| {
        d.loader_with("loader-1", &format!("shutdown_grace_secs = 3\n{config}"))
    })
    .await;
    // The run is read to its end first: `--once` losing NATS mid-read stops, as it must (it
    // cannot keep its lease), which `once_losing_nats_mid_run_…` covers.
    let run_id = extraction.await.expect("the extraction");
    let loaded_before = d.oomnitza.stats().bulk_records;
    assert!(
        loaded_before < 3_000,
        "records were still loading when NATS went: {loaded_before} accepted"
    );
    d.nats.server().kill();
    // Long enough for the progress acks of the events it holds to fill the client's queue:
    // from then on every NATS call waits for the reconnection, whatever its timeout.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = Instant::now();
    let status = tokio::task::block_in_place(|| loader.terminate_within(Duration::from_secs(12)));
    let status = status.unwrap_or_else(|| {
        panic!(
            "the loader still ran {:?} after SIGTERM (grace 3 s + 5 s)",
            asked.elapsed()
        )
    });
    // A clean stop (the finalizer's check and the announcement dropped after 2 s each), or
    // the watchdog's exit 1 if those took longer on a busy machine: never a signal's death.
    assert!(status.success() || status.code() == Some(1), "{status}");
    // Nothing was lost: with NATS back, another replica loads the rest.
    d.nats.server().restart();
    let _second = d.loader_with("loader-2", QUICK);
    d.assert_loaded(&run_id, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_for_good_is_finalized_with_what_it_loaded() {
    let sage = SageConfig {
        workers: 5_000,
        page_size: peoplesync_sims::sage::PageSize::Fixed(200),
        faults: peoplesync_sims::sage::SageFaults {
            latency_ms: 50,
            ..Default::default()
        },
        ..SageConfig::default()
    };
    let d = Deployment::start(sage, oomnitza_config()).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let extraction = d.extract_in_background();
    wait_for("a few pages", Duration::from_secs(30), || async {
        (d.sage.stats().pages_served >= 3).then_some(())
    })
    .await;
    // The API user loses its permission set mid-run: a configuration error, final for the run.
    d.sage.set_faults(peoplesync_sims::sage::SageFaults {
        config_error: Some("MISSING_API_PERMISSION".into()),
        ..Default::default()
    });
    let output = extraction.await.expect("the extraction");
    assert!(!output.status.success(), "the run failed");
    let runs = d.bus().await.runs();
    let (failed, _) = runs
        .list(Some("sage-people"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .next()
        .expect("a run record");
    let run = d
        .finalized("sage-people", &failed, Duration::from_secs(60))
        .await;
    assert_eq!(run.state, peoplesync_bus::RunState::Failed);
    assert!(
        run.published > 0 && run.published < 5_000,
        "part of the org: {}",
        run.published
    );
    assert_accounted(&run);
    assert_eq!(d.oomnitza.stats().finalize_calls.get(&failed), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_knows_what_others_wrote_and_posts_nothing_unchanged() {
    let d = deployment(1_000).await;
    let mut first_loader = d.loader_with("loader-1", QUICK);
    let first = d.extract_run();
    d.finalized("sage-people", &first, Duration::from_secs(60))
        .await;
    first_loader.kill();
    let posted = d.oomnitza.stats().bulk_records;

    // A new replica learns the applied hashes from the bucket, not from its own writes.
    let _second_loader = d.loader_with("loader-2", QUICK);
    let counts = rerun_posting_nothing_new(&d, posted).await;
    assert_eq!(counts.written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_records_past_their_retention_are_removed() {
    let d = deployment(10).await;
    let runs = d.bus().await.runs();
    let finalized = FinalizeState::Finalized {
        by: "loader-0".into(),
        at: "2026-01-01T00:00:00Z".into(),
    };
    let days_ago = |days: i64| (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    for (run, finished, held) in [
        ("old", days_ago(3), 0),
        ("held", days_ago(3), 5),
        ("recent", days_ago(0), 0),
    ] {
        let mut record = RunRecord::start("sage-people", run, true, "test");
        record.state = peoplesync_bus::RunState::Completed;
        record.started_at = finished.clone();
        record.finished_at = Some(finished);
        record.finalize = finalized.clone();
        record.removals_held = held;
        runs.create(&record).await.unwrap();
    }
    let config = format!("run_retention_days = 1\n{QUICK}");
    let _loader = d.loader_with("loader-1", &config);
    wait_for(
        "the old run record to go",
        Duration::from_secs(30),
        || async {
            runs.get("sage-people", "old")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        runs.get("sage-people", "held").await.unwrap().is_some(),
        "a run holding removals for approval is kept"
    );
    assert!(runs.get("sage-people", "recent").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_behind_slow_requests_are_not_redelivered() {
    // Requests take 3 s, one at a time, while the ack wait is 4 s: the later batches wait far
    // longer than the ack wait, and only progress acks keep them from being delivered again.
    let (d, run) = one_replica_run(250, 3_000, "size = 50\nin_flight = 1").await;
    let counts = run.counts.expect("counts");
    assert_eq!(
        d.oomnitza.stats().bulk_records,
        counts.written + counts.dead_lettered,
        "every record posted once (those the mapping refused as reports): no event was \
         redelivered while it waited"
    );
    d.assert_users_match_sage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_fetched_behind_a_full_queue_are_not_redelivered() {
    // One 1 s request at a time, batches of 20: the replica's queues fill within a second, and
    // the rest of a fetch of 100 would wait in the client's buffer — where no progress ack
    // reaches it — for about 5 s, longer than the 4 s ack wait.
    let workers = 600;
    let (d, run) = one_replica_run(workers, 1_000, "size = 20\nin_flight = 1").await;
    let counts = run.counts.expect("counts");
    assert_eq!(
        d.oomnitza.stats().bulk_records,
        counts.written + counts.dead_lettered
    );
    let bus = d.bus().await;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = bus
        .jetstream()
        .get_stream(peoplesync_bus::names::WORKERS_STREAM)
        .await
        .expect("stream")
        .get_consumer(&peoplesync_bus::names::loader_consumer("sage-people"))
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!(
        info.delivered.consumer_sequence, workers,
        "every event delivered once: none waited unacknowledged past the ack wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_worker_subject_is_dead_lettered_once_each_and_never_loops() {
    use peoplesync_proto::v1::{Worker, WorkerEvent, WorkerEventKind};
    let d = deployment(10).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let bus = d.bus().await;
    let subject = peoplesync_bus::names::workers_subject("sage-people");
    let js = bus.jetstream();
    let publish = |payload: bytes::Bytes, id: Option<&str>| {
        let mut message = async_nats::jetstream::message::PublishMessage::build().payload(payload);
        if let Some(id) = id {
            message = message.message_id(id);
        }
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.send_publish(subject, message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // Two undecodable payloads: one without a dedup id, one whose dedup id has no dot (both
    // used to fall back to the same identity, and one of them was lost).
    publish(
        bytes::Bytes::from_static(b"\xff\xff\xff not protobuf"),
        None,
    )
    .await;
    publish(
        bytes::Bytes::from_static(b"\xff\xfe also not"),
        Some("garbage"),
    )
    .await;
    // Decodable events whose run id cannot be a subject token: empty, and with a space.
    let event = |run: &str| WorkerEvent {
        run_id: run.to_owned(),
        integration_id: "sage-people".into(),
        kind: WorkerEventKind::Upsert.into(),
        worker: Some(Worker {
            id: "a2G7E000000Garbage".into(),
            email: Some("garbage@example.com".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for run in ["", "run with a space"] {
        publish(
            peoplesync_bus::codec::encode_worker_event(&event(run)),
            None,
        )
        .await;
    }
    let letters = wait_for("four dead letters", Duration::from_secs(60), || async {
        let letters = d.dead_letters().await;
        (letters.len() >= 4).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 4, "one letter each: {letters:?}");
    let mut workers: Vec<&str> = letters
        .iter()
        .map(|l| l.letter.worker_id.as_str())
        .collect();
    workers.dedup();
    assert_eq!(workers.len(), 4, "each under an identity of its own");
    assert!(
        letters
            .iter()
            .all(|l| l.letter.run_id == peoplesync_bus::names::INVALID_RUN)
    );
    let decoded = letters
        .iter()
        .filter(|l| l.letter.reason.contains("cannot be decoded"))
        .count();
    let bad_ids = letters
        .iter()
        .filter(|l| l.letter.reason.contains("run id"))
        .count();
    assert_eq!((decoded, bad_ids), (2, 2), "{letters:?}");
    // Nothing loops: every event is acknowledged, and nothing reached Oomnitza.
    let stream = js
        .get_stream(peoplesync_bus::names::WORKERS_STREAM)
        .await
        .unwrap();
    let consumer_name = peoplesync_bus::names::loader_consumer("sage-people");
    wait_for("every event settled", Duration::from_secs(30), || {
        let (stream, name) = (stream.clone(), consumer_name.clone());
        async move {
            let info = stream.consumer_info(&name).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    assert_eq!(d.oomnitza.stats().bulk_records, 0);
    assert!(d.oomnitza.users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalize_refused_for_the_credentials_closes_the_credential_gate_until_they_work() {
    let d = deployment(200).await;
    // Every worker loadable, so that no run reports refused records to Oomnitza.
    for id in d.expected().1 {
        d.sage.patch_worker(
            &id,
            serde_json::json!({"emailAddress": format!("{id}@example.com")}),
        );
    }
    let loader = d.loader("loader-1").config(QUICK).spawn_serving();
    assert_accounted(&d.run_to_end(Duration::from_secs(120)).await);
    // The next run changes nothing, so it sends nothing, but its portion is still finalized:
    // the finalize is the only call that meets Oomnitza refusing the token.
    d.oomnitza.set_faults(OomnitzaFaults {
        forbidden: true,
        ..Default::default()
    });
    let run_id = d.extract_run();
    let readyz = loader.url("/readyz");
    let note = wait_for(
        "the refused finalize to be noted on /readyz",
        Duration::from_secs(60),
        || async {
            let (_, _, body) = crate::operations::get(&readyz).await?;
            let ready: serde_json::Value = serde_json::from_str(&body).ok()?;
            ready["notes"]["oomnitza"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(note.starts_with("Credentials"), "{note}");
    finalizes_once_faults_clear(&d, &run_id).await;
}

/// Asserts that `loader` never stopped pulling because Oomnitza could not take records (it
/// logs an error each time it does), so its gate stayed open throughout.
pub(crate) fn assert_never_stopped_pulling(loader: &Serving) {
    let closed = loader.warnings().into_iter().find(|w| {
        w["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Oomnitza cannot take records"))
    });
    assert_eq!(closed, None, "the gate stayed open");
}

/// A run of 200 workers waiting in the stream, and a loader started while Oomnitza forbids the
/// token the path `forbidden` gives for the run's id (the token passes the credential check,
/// and posts are allowed).
async fn loading_with_forbidden(
    forbidden: impl Fn(&str) -> String,
) -> (Deployment, String, Serving) {
    loading_with(|run_id| OomnitzaFaults {
        forbidden_paths: vec![forbidden(run_id)],
        ..Default::default()
    })
    .await
}

/// A run of 200 workers waiting in the stream, and a loader started while Oomnitza has the
/// `faults` made for the run's id.
async fn loading_with(faults: impl Fn(&str) -> OomnitzaFaults) -> (Deployment, String, Serving) {
    let d = deployment(200).await;
    let run_id = d.extract_run();
    d.oomnitza.set_faults(faults(&run_id));
    let loader = d.loader("loader-1").config(FEW_ATTEMPTS).spawn_serving();
    (d, run_id, loader)
}

/// Waits until every record of `run_id` (of 200) is loaded, Oomnitza has answered `status` at
/// least `times`, and the finalize is still pending.
async fn loaded_with_the_finalize_pending(
    d: &Deployment,
    run_id: &str,
    (status, times): (u16, u64),
    what: &str,
) {
    run_record_when(d, run_id, Duration::from_secs(60), what, |r| {
        let stats = d.oomnitza.stats();
        matches!(r.finalize, FinalizeState::Pending)
            && stats.bulk_records >= 200
            && stats
                .status_counts
                .get(&status)
                .is_some_and(|n| *n >= times)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_not_read_portions_leaves_the_gate_open_while_loading() {
    // Reading the portion's state (and finalizing it) is forbidden.
    let (d, run_id, loader) =
        loading_with_forbidden(|run_id| format!("/api/v3/bulk/{run_id}")).await;
    // Refused: the first batch's read of the portion, and the finalize's read and call.
    let refused = (403, 3);
    loaded_with_the_finalize_pending(&d, &run_id, refused, "the finalize refused").await;
    let warned = loader.warnings().into_iter().any(|w| {
        w["message"]
            .as_str()
            .is_some_and(|m| m.contains("a read of the portion's state"))
    });
    assert!(warned, "{:#?}", loader.warnings());
    assert_never_stopped_pulling(&loader);
    finalizes_once_faults_clear(&d, &run_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalize_answered_404_after_records_were_written_waits_instead_of_closing_the_run() {
    // Something answers 404 for the finalize of a portion the run wrote into (a proxy, or a
    // changed base URL): the run is not taken for one with nothing to finalize.
    let (d, run_id, loader) = loading_with(|run_id| OomnitzaFaults {
        missing_paths: vec![format!("/api/v3/bulk/{run_id}/finalize")],
        ..Default::default()
    })
    .await;
    loaded_with_the_finalize_pending(&d, &run_id, (404, 1), "the finalize answered 404").await;
    let said = |note: Option<&str>| {
        note.is_some_and(|n| n.contains(&run_id) && n.contains("OOMNITZA_URL"))
    };
    crate::operations::wait_for_note(&loader, "finalize sage-people", "the note", said).await;
    let (record, _) = d
        .bus()
        .await
        .runs()
        .get("sage-people", &run_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(record.finalize, FinalizeState::Pending),
        "{:?}",
        record.finalize
    );
    finalizes_once_faults_clear(&d, &run_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_not_finalize_leaves_the_gate_open_and_the_finalize_pending_until_it_may()
{
    // Finalizing the portion alone is forbidden.
    let (d, run_id, loader) =
        loading_with_forbidden(|run_id| format!("/api/v3/bulk/{run_id}/finalize")).await;
    let refused = run_record_when(
        &d,
        &run_id,
        Duration::from_secs(60),
        "the refused finalize to release its claim",
        // The simulator counts a 403 for the finalize only: nothing else is forbidden.
        |r| {
            matches!(r.finalize, FinalizeState::Pending)
                && d.oomnitza.stats().status_counts.contains_key(&403)
        },
    )
    .await;
    assert!(refused.counts.is_none(), "{:?}", refused.counts);
    let warned = loader.warnings().into_iter().any(|w| {
        w["run_id"] == run_id.as_str()
            && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("finalizing the portion failed"))
    });
    assert!(warned, "{:#?}", loader.warnings());
    let readyz = loader.url("/readyz");
    let (status, _, body) = crate::operations::get(&readyz).await.expect("/readyz");
    assert_eq!(status, 200, "the credential gate stays open: {body}");
    // The failing finalize is said on /readyz (and so in `syncctl status`), and by a gauge.
    let failing =
        |note: Option<&str>| note.is_some_and(|n| n.contains(&run_id) && n.contains("403"));
    crate::operations::wait_for_note(&loader, "finalize sage-people", "the note", failing).await;
    let (_, _, metrics) = crate::operations::get(&loader.url("/metrics"))
        .await
        .expect("/metrics");
    assert!(
        metrics.contains("peoplesync_loader_finalize_failing{integration=\"sage-people\"} 1"),
        "{metrics}"
    );
    // Other records still load: a change made meanwhile goes out in a run of its own, which
    // is finalized while the first still waits.
    let changed = d.expected().1.into_iter().next().expect("a worker");
    d.sage.patch_worker(
        &changed,
        serde_json::json!({"emailAddress": format!("{changed}@example.com")}),
    );
    let next = d.run_to_end(Duration::from_secs(60)).await;
    assert_accounted(&next);
    assert_eq!(next.counts.expect("counts").written, 1);
    assert!(matches!(next.finalize, FinalizeState::Finalized { .. }));
    let runs = d.bus().await.runs();
    let (first, _) = runs.get("sage-people", &run_id).await.unwrap().unwrap();
    assert!(
        !matches!(first.finalize, FinalizeState::Finalized { .. }),
        "{:?}",
        first.finalize
    );
    let (status, _, body) = crate::operations::get(&readyz).await.expect("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_never_stopped_pulling(&loader);
    // Another run's finalize leaves the note of the first standing; the first's clears it.
    crate::operations::wait_for_note(&loader, "finalize sage-people", "the note", failing).await;
    finalizes_once_faults_clear(&d, &run_id).await;
    crate::operations::wait_for_note(&loader, "finalize sage-people", "no note", |n| n.is_none())
        .await;
}
