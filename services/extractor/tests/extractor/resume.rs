//! Interrupted runs resume from their checkpoint: after kill -9, after a refused marker.

use std::time::Duration;

use peoplesync_bus::RunState;
use peoplesync_sims::sage::SageFaults;
use peoplesync_testkit::{ChildService, wait_for};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::listing::setup_faulty;

/// An org of `workers` workers whose pages of 40 to `max` records each take 20 ms, and a
/// directory holding an extractor config with a 2 s lease TTL.
pub async fn slow_org(workers: u64, max: usize) -> (Setup, tempfile::TempDir) {
    let faults = SageFaults {
        latency_ms: 20,
        ..SageFaults::default()
    };
    let s = setup_faulty(faults, org(workers, 40, max)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("extractor.toml"), "lease_ttl_secs = 2\n").unwrap();
    (s, dir)
}

/// The environment of an extractor binary serving `s`'s org with the config in `dir` (see
/// [`slow_org`]), and `extra`.
pub fn binary_env(s: &Setup, dir: &tempfile::TempDir, extra: &[(&'static str, &str)]) -> BinaryEnv {
    let config = dir.path().join("extractor.toml");
    let mut vars = vec![
        ("NATS_URL", s.nats.url().to_owned()),
        ("SAGE_PEOPLE_LOGIN_URL", s.sim.url()),
        ("SAGE_PEOPLE_CLIENT_ID", "sim-client".to_owned()),
        ("SAGE_PEOPLE_CLIENT_SECRET", "sim-secret".to_owned()),
        (
            "PEOPLESYNC_EXTRACTOR_CONFIG",
            config.to_string_lossy().into_owned(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    BinaryEnv { vars }
}

/// What an extractor binary started by a test is given.
pub struct BinaryEnv {
    vars: Vec<(&'static str, String)>,
}

impl BinaryEnv {
    /// Starts `sage-extractor` with `args`.
    pub fn spawn(&self, args: &[&str]) -> ChildService {
        let env: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ChildService::spawn("sage-extractor", args, &env)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_extractor_resumes_its_run_without_losing_or_duplicating_workers() {
    let workers = 4000;
    let (s, dir) = slow_org(workers, 80).await;
    let env = binary_env(&s, &dir, &[]);
    let mut first = env.spawn(&["--once"]);
    let before = wait_for_pages(&s.bus, ID, 8).await;
    first.kill();
    // What the dead extractor published after its last checkpoint is on the stream too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill = s.bus.checkpoints().load(ID).await.unwrap().unwrap();
    assert_eq!(at_kill.run_id, before.run_id);
    assert!(at_kill.published < workers, "killed too late: {at_kill:?}");

    let mut second = env.spawn(&["--once"]);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the restarted extractor failed: {status}");
    let record = s.run_record(ID, &before.run_id).await;
    assert_eq!(record.state, RunState::Completed);
    assert_eq!(record.published, workers);
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, workers, &before.run_id);
}

#[tokio::test]
async fn a_refused_checkpoint_marker_restarts_the_listing_and_publishes_nothing_twice() {
    let faults = SageFaults {
        latency_ms: 10,
        ..SageFaults::default()
    };
    let s = setup_faulty(faults, org(1000, 40, 60)).await;
    let extraction = s.extraction(ID);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let extraction = extraction.clone();
        let cancel = cancel.clone();
        async move { extraction.run_full("test", cancel).await }
    });
    wait_for_pages(&s.bus, ID, 5).await;
    cancel.cancel();
    let err = running.await.unwrap().expect_err("interrupted");
    assert_eq!(err.state(), RunState::Running, "{err}");
    let run_id = err.run_id().unwrap().to_owned();
    let published_before = s.checkpoint(ID).await.unwrap().published;

    // Sage People no longer accepts the stored marker (its worker is gone, say).
    let checkpoints = s.bus.checkpoints();
    let mut checkpoint = checkpoints.load(ID).await.unwrap().unwrap();
    checkpoint.marker = Some("a2G7E00000000ZZZZZ".into());
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
async fn a_replica_that_lost_the_run_cannot_move_its_checkpoint_back() {
    let s = setup(org(10, 5, 5)).await;
    let old_leader = s.bus.checkpoints();
    let mut checkpoint = peoplesync_bus::checkpoint::Checkpoint::start("run-1", None);
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
