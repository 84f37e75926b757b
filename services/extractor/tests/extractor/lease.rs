//! Two extractors: exactly one schedules; when it dies, the other takes over within the lease
//! TTL and resumes the interrupted run.

use std::time::{Duration, Instant};

use chrono::DurationRound;
use peoplesync_bus::control::{self, RunStarted};
use peoplesync_bus::lease::ScheduleMark;
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::{Service, ServiceError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_extractor_takes_over_within_the_lease_ttl_and_resumes_the_run() {
    let workers = 3000;
    // About 60 pages of 150 ms: the run lasts about 9 s, well past the kill below.
    let s = setup(slow_org(workers, 40, 60, 150)).await;
    let mut a = s.spawn_binary(&[], Some("replica-a"));
    wait_for_holder(&s.bus, ID, "replica-a", Duration::from_secs(15)).await;

    let (config, secrets) = config(&s.sim, &[ID]);
    let b = serve(&s.bus, as_replica(config, "replica-b"), secrets, false).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_missed_while_no_replica_held_the_lease_is_started_once_on_taking_it() {
    let s = setup(org(30, 10, 10)).await;
    // Daily at a minute just gone: today's start has passed and the next is a day away.
    let now = chrono::Utc::now();
    let planned = (now - chrono::TimeDelta::minutes(2))
        .duration_trunc(chrono::TimeDelta::minutes(1))
        .unwrap();
    let mut integration = IntegrationConfig::default_for(ID);
    integration.schedule.at = Some(planned.format("%H:%M").to_string());
    put_integration(&s.bus, &integration).await;
    // Yesterday's start fired; today's fell while the only replica was being restarted.
    let yesterday = ScheduleMark {
        planned: planned - chrono::TimeDelta::days(1),
    };
    s.bus.record_scheduled(ID, &yesterday).await.unwrap();

    let (config, secrets) = config(&s.sim, &[ID]);
    let a = serve(&s.bus, config.clone(), secrets.clone(), true).await;
    let runs = s.bus.runs();
    let caught_up =
        peoplesync_testkit::wait_for("the catch-up run", Duration::from_secs(10), || {
            let runs = runs.clone();
            async move { runs.list(Some(ID)).await.unwrap().into_iter().next() }
        })
        .await;
    assert_eq!(caught_up.trigger, "schedule");
    completed(&s.bus, ID, &caught_up.run_id).await;
    let mark = s.bus.last_scheduled(ID).await.unwrap();
    assert_eq!(mark, Some(ScheduleMark { planned }));
    a.shutdown().await;

    // Another replica takes the lease: the start is not made up for twice. It answers `run`
    // only once its catch-up is decided, so a second catch-up run would be the one named here.
    let b = serve(&s.bus, as_replica(config, "replica-b"), secrets, true).await;
    let manual: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert!(!manual.already_running);
    completed(&s.bus, ID, &manual.run_id).await;
    let triggers: Vec<String> = runs
        .list(Some(ID))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.trigger)
        .collect();
    assert_eq!(triggers, ["manual", "schedule"]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_under_the_services_replica_name_waits_and_refuses_instead_of_taking_the_lease() {
    let s = setup(org(30, 10, 10)).await;
    let (config, secrets) = config(&s.sim, &[ID]);
    let config = as_replica(config, "replica-a");
    let service = serve(&s.bus, config.clone(), secrets.clone(), true).await;
    // `kubectl exec … sage-extractor --once` inherits the pod's PEOPLESYNC_REPLICA.
    let once = Service::build(config, s.bus.clone(), secrets)
        .await
        .unwrap();
    let outcomes = once.run_once(&CancellationToken::new()).await;
    match &outcomes[..] {
        [(_, Err(ServiceError::LeaseBusy { holder, .. }))] => assert_eq!(holder, "replica-a"),
        other => panic!("expected the lease to be busy: {other:?}"),
    }
    assert_eq!(lease_holder(&s.bus, ID).await.as_deref(), Some("replica-a"));
    assert!(s.bus.runs().list(Some(ID)).await.unwrap().is_empty());
    service.shutdown().await;
}
