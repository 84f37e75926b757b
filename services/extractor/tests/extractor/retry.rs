//! Runs that stopped part-way are resumed by the scheduling replica on a timer: after a Sage
//! People outage longer than the client's retry budget, and after NATS restarts mid-publish.

use std::time::Duration;

use peoplesync_bus::control::RunStarted;
use peoplesync_bus::{RunState, control};
use peoplesync_extractor::config::RunRetry;
use peoplesync_sims::sage::SageFaults;
use serde_json::json;

use crate::harness::*;

fn quick_retry() -> RunRetry {
    RunRetry {
        enabled: true,
        first_delay_secs: 1,
        max_delay_secs: 2,
        max_attempts: 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_a_sage_outage_longer_than_the_budget_is_resumed_after_a_pause() {
    let s = setup(org(600, 50, 50)).await;
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.sage_retry_secs = 1;
    config.run_retry = quick_retry();
    let service = serve(&s.bus, config, secrets, true).await;

    // Sage People goes away for longer than one request's retry budget.
    s.sim.set_faults(SageFaults {
        outage_for_ms: Some(4_000),
        ..SageFaults::default()
    });
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    let failed = s
        .run_in_state(&started.run_id, RunState::Failed, Duration::from_secs(30))
        .await;
    assert!(
        failed.error.as_deref().unwrap_or_default().contains("503")
            || failed
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("unavailable"),
        "{failed:?}"
    );
    assert!(
        s.checkpoint(ID).await.is_some(),
        "a transient failure keeps the checkpoint"
    );

    // Nobody triggers anything: the lease holder resumes the same run once Sage is back.
    let record = completed(&s.bus, ID, &started.run_id).await;
    assert_eq!(record.published, 600);
    assert!(s.checkpoint(ID).await.is_none());
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 600, &started.run_id);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_mid_run_and_the_same_run_completes_without_a_trigger() {
    // Pages of 1,000 without latency: publishing dominates, so the restarts find a full
    // window of acks outstanding.
    let mut s = setup(org(20_000, 1000, 1000)).await;
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.run_retry = quick_retry();
    config.lease_ttl_secs = 4;
    let service = serve(&s.bus, config, secrets, true).await;
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    wait_for_pages(&s.bus, ID, 3).await;

    // One short restart and one longer than the lease TTL, mid-publish.
    s.nats.server().kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.nats.server().restart();
    wait_for_pages(&s.bus, ID, 6).await;
    s.nats.server().kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    s.nats.server().restart();

    let record = s
        .run_in_state(
            &started.run_id,
            RunState::Completed,
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(record.published, 20_000);
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 20_000, &started.run_id);
    service.shutdown().await;
}
