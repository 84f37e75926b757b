//! Two extractors: exactly one schedules; when it dies, the other takes over within the lease
//! TTL and resumes the interrupted run.

use std::time::{Duration, Instant};

use peoplesync_bus::control::{self, RunStarted};
use peoplesync_extractor::ExtractorConfig;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_extractor_takes_over_within_the_lease_ttl_and_resumes_the_run() {
    let workers = 3000;
    // About 60 pages of 150 ms: the run lasts about 9 s, well past the kill below.
    let s = setup(slow_org(workers, 40, 60, 150)).await;
    let mut a = s.spawn_binary(&[], Some("replica-a"));
    wait_for_holder(&s.bus, ID, "replica-a", Duration::from_secs(15)).await;

    let (config, secrets) = config(&s.sim, &[ID]);
    let b = serve(
        &s.bus,
        ExtractorConfig {
            replica: Some("replica-b".into()),
            ..config
        },
        secrets,
        false,
    )
    .await;
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    wait_for_pages(&s.bus, ID, 5).await;
    // The standby stays a standby while the holder lives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lease_holder(&s.bus, ID).await.as_deref(), Some("replica-a"));

    // The run is still going (its checkpoint stands), so the standby has one to resume.
    let at_kill = s.bus.checkpoints().load(ID).await.unwrap();
    assert!(
        at_kill.is_some_and(|c| c.run_id == started.run_id && c.pages < 50),
        "the run was still listing at the kill"
    );
    a.kill();
    let killed = Instant::now();
    wait_for_holder(&s.bus, ID, "replica-b", Duration::from_secs(10)).await;
    let takeover = killed.elapsed();
    // The lease runs out after two missed renewals (two thirds of the 2 s TTL); twice the
    // TTL leaves room for a loaded machine, and still fails a standby that waits for more.
    assert!(
        takeover <= Duration::from_secs(4),
        "took over after {takeover:?}"
    );

    let record = completed(&s.bus, ID, &started.run_id).await;
    assert_eq!(record.published, workers);
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, workers, &started.run_id);
    // The new holder answers the leader's commands.
    let again: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert_ne!(again.run_id, started.run_id);
    b.shutdown().await;
}
