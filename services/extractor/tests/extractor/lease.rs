//! Two extractors: exactly one schedules; when it dies, the other takes over within the lease
//! TTL and resumes the interrupted run.

use std::time::{Duration, Instant};

use peoplesync_bus::control::{self, RunStarted};
use peoplesync_extractor::ExtractorConfig;
use serde_json::json;

use crate::harness::*;
use crate::resume::{binary_env, slow_org};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_extractor_takes_over_within_the_lease_ttl_and_resumes_the_run() {
    let workers = 3000;
    let (s, dir) = slow_org(workers, 60).await;
    let env = binary_env(
        &s,
        &dir,
        &[
            ("PEOPLESYNC_REPLICA", "replica-a"),
            ("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0"),
        ],
    );
    let mut a = env.spawn(&[]);
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

    a.kill();
    let killed = Instant::now();
    wait_for_holder(&s.bus, ID, "replica-b", Duration::from_secs(10)).await;
    let takeover = killed.elapsed();
    // Within the TTL (2 s), with a little room for a loaded machine.
    assert!(
        takeover <= Duration::from_millis(2_500),
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
