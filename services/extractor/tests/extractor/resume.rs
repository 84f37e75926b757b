//! Interrupted runs resume from their checkpoint: after kill -9, after a refused marker.

use std::time::Duration;

use peoplesync_bus::RunState;
use peoplesync_bus::checkpoint::Checkpoint;
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::Extraction;
use peoplesync_extractor::error::Stop;
use peoplesync_proto::v1::RunEventKind;
use peoplesync_testkit::wait_for;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_extractor_resumes_its_run_without_losing_or_duplicating_workers() {
    let workers = 4000;
    let s = setup(slow_org(workers, 40, 80, 40)).await;
    let mut first = s.spawn_binary(&["--once"], None);
    let before = wait_for_pages(&s.bus, ID, 8).await;
    first.kill();
    // What the dead extractor published after its last checkpoint is on the stream too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill = s.bus.checkpoints().load(ID).await.unwrap().unwrap();
    assert_eq!(at_kill.run_id, before.run_id);
    assert!(at_kill.published < workers, "killed too late: {at_kill:?}");

    let mut second = s.spawn_binary(&["--once"], None);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the restarted extractor failed: {status}");
    let record = s.run_record(ID, &before.run_id).await;
    assert_eq!(record.state, RunState::Completed);
    assert_eq!(record.published, workers);
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, workers, &before.run_id);
    // The run is announced when it starts and again when it is taken up, with what it had
    // published by then, and completes once.
    let events = run_events(&s.bus, ID).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            RunEventKind::Started,
            RunEventKind::Started,
            RunEventKind::Completed
        ]
    );
    assert_eq!(events[1].published, at_kill.published);
}

/// An org of 1,000 workers, and a run of it interrupted after five pages: its id.
async fn an_interrupted_run() -> (Setup, Extraction, String) {
    let s = setup(slow_org(1000, 40, 60, 50)).await;
    let extraction = s.extraction(ID);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let extraction = extraction.clone();
        let cancel = cancel.clone();
        async move { extraction.run_full("test", cancel).await }
    });
    wait_for_pages(&s.bus, ID, 5).await;
    cancel.cancel();
    let err = ended(running, "the run").await.expect_err("interrupted");
    assert_eq!(err.state(), RunState::Running, "{err}");
    let run_id = err.run_id().unwrap().to_owned();
    (s, extraction, run_id)
}

#[tokio::test]
async fn a_refused_checkpoint_marker_restarts_the_listing_and_publishes_nothing_twice() {
    let (s, extraction, run_id) = an_interrupted_run().await;
    let published_before = s.checkpoint(ID).await.unwrap().published;

    // Sage People no longer accepts the stored marker (its worker is gone, say): a well-formed
    // id of a worker the org never had.
    let checkpoints = s.bus.checkpoints();
    let mut checkpoint = checkpoints.load(ID).await.unwrap().unwrap();
    checkpoint.marker = Some(peoplesync_sims::generate::worker_id(1_000_000));
    checkpoints.save(ID, &checkpoint).await.unwrap();

    let summary = extraction
        .run_full("test", CancellationToken::new())
        .await
        .unwrap();
    assert!(summary.resumed);
    assert_eq!(summary.published, 1000);
    assert!(published_before > 0);
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 1000, &run_id);
    let stats = s.sim.stats();
    assert_eq!(stats.status_counts.get(&400), Some(&1), "{stats:?}");
    // The first pages were read twice, not published twice.
    assert!(
        stats.records_served > 1000 + published_before / 2,
        "{stats:?}"
    );
    wait_for("the run record", Duration::from_secs(5), || async {
        (s.run_record(ID, &run_id).await.published == 1000).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_run_taken_up_under_unusable_settings_keeps_its_checkpoint_and_resumes_once_fixed() {
    let (s, extraction, run_id) = an_interrupted_run().await;
    let interrupted = s.checkpoint(ID).await.unwrap();
    let served_before = s.sim.stats().records_served;

    // The integration now names a credential set this extractor does not have.
    let mut integration = IntegrationConfig::default_for(ID);
    integration.credentials = "apac".into();
    put_integration(&s.bus, &integration).await;
    let err = extraction
        .run_full("test", CancellationToken::new())
        .await
        .expect_err("unusable settings");
    assert!(matches!(err.stop(), Stop::Settings { .. }), "{err}");
    assert!(err.to_string().contains("[credentials.apac]"), "{err}");
    assert!(err.resumable(), "{err}");
    assert_eq!(s.run_record(ID, &run_id).await.state, RunState::Failed);
    let kept = s.checkpoint(ID).await.expect("the checkpoint is kept");
    assert_eq!(
        (kept.run_id.as_str(), &kept.marker, kept.published),
        (run_id.as_str(), &interrupted.marker, interrupted.published)
    );
    assert_eq!(s.sim.stats().records_served, served_before, "no call");

    // Fixed: the same run goes on from its marker, not from the first page.
    put_integration(&s.bus, &IntegrationConfig::default_for(ID)).await;
    let summary = run_to_completion(&extraction).await;
    assert!(summary.resumed);
    assert_eq!(summary.run_id, run_id);
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, 1000, &run_id);
    let served = s.sim.stats().records_served;
    assert!(served < 1000 + served_before, "pages read again: {served}");
}

#[tokio::test]
async fn a_run_interrupted_on_one_org_is_not_resumed_on_another() {
    let (s, _, run_id) = an_interrupted_run().await;
    let interrupted = s.checkpoint(ID).await.unwrap();
    assert_eq!(
        (
            interrupted.credentials.as_deref(),
            interrupted.login_host.as_deref()
        ),
        (Some("default"), Some("127.0.0.1"))
    );

    // The set now logs in elsewhere (from a sandbox to production, say).
    let (mut config, secrets) = config(&s.sim, &[ID]);
    let set = config.credentials.get_mut("default").unwrap();
    set.login_url = set.login_url.replace("127.0.0.1", "localhost");
    let elsewhere = extraction(&s.bus, config, secrets, ID);
    let summary = run_to_completion(&elsewhere).await;
    assert!(!summary.resumed);
    assert_ne!(summary.run_id, run_id);
    assert_eq!(summary.published, 1000, "listed from the first page");
    let closed = s.run_record(ID, &run_id).await;
    assert_eq!(closed.state, RunState::Failed);
    let error = closed.error.unwrap_or_default();
    assert!(
        error.starts_with("superseded: the login host") && error.contains("to localhost"),
        "{error}"
    );
}

#[tokio::test]
async fn a_replica_that_lost_the_run_cannot_move_its_checkpoint_back() {
    let s = setup(org(10, 5, 5)).await;
    let old_leader = s.bus.checkpoints();
    let mut checkpoint = Checkpoint::start("run-1", None);
    assert!(old_leader.load(ID).await.unwrap().is_none());
    old_leader.save(ID, &checkpoint).await.unwrap();

    // The standby takes over: it reads the checkpoint and moves the run on.
    let new_leader = s.bus.checkpoints();
    let mut resumed = new_leader.load(ID).await.unwrap().expect("a checkpoint");
    resumed.pages = 5;
    new_leader.save(ID, &resumed).await.unwrap();

    // The old leader's late write is refused instead of setting the run back.
    checkpoint.pages = 1;
    let refused = old_leader
        .save(ID, &checkpoint)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("another extractor replica"), "{refused}");
    let stored = s.bus.checkpoints().load(ID).await.unwrap().unwrap();
    assert_eq!(stored.pages, 5);
    // The new leader keeps writing.
    resumed.pages = 6;
    new_leader.save(ID, &resumed).await.unwrap();
}

#[tokio::test]
async fn a_progress_note_landing_after_the_run_ended_leaves_its_final_counts() {
    let s = setup(org(10, 0, 0)).await;
    let journal = peoplesync_extractor::journal::Journal::new(&s.bus, ID, true);
    let counts = |published| peoplesync_extractor::journal::Counts {
        published,
        ..Default::default()
    };
    journal.start("r-late", "manual", false).await.unwrap();
    journal.progress("r-late", counts(4)).await.unwrap();
    assert_eq!(s.run_record(ID, "r-late").await.published, 4);
    journal.complete("r-late", counts(10), None).await.unwrap();
    // The bookkeeping of a page the run left behind when it stopped, landing late.
    journal.progress("r-late", counts(7)).await.unwrap();
    let record = s.run_record(ID, "r-late").await;
    assert_eq!((record.state, record.published), (RunState::Completed, 10));
}
