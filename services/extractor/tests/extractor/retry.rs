//! Runs that stopped part-way are resumed by the scheduling replica on a timer: after a Sage
//! People outage longer than the client's retry budget, after answers that were not the
//! documented shape for as long, and after NATS restarts mid-publish. A run stopped by an
//! answer that breaks the listing's contract is not: the next run starts afresh. Nor is a run
//! whose resume Sage People refused for its configuration: it waits, with its checkpoint, for
//! the operator.

use std::time::Duration;

use peoplesync_bus::control::RunStarted;
use peoplesync_bus::{RunRecord, RunState, control};
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::config::RunRetry;
use peoplesync_proto::v1::RunEventKind;
use peoplesync_sims::generate;
use peoplesync_sims::sage::{SageFaults, SageSim};
use peoplesync_testkit::wait_for;
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

/// An org of 600 workers read by an extractor that retries a request for 1 s and resumes
/// stopped runs after a second or two; `prepare` sets Sage People up to fail, then a run is
/// triggered and must fail. Returns the failed run's record.
async fn a_failed_run(prepare: impl FnOnce(&SageSim)) -> (Setup, Running, RunRecord) {
    let s = setup(org(600, 50, 50)).await;
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.sage_retry_secs = 1;
    config.run_retry = quick_retry();
    let service = serve(&s.bus, config, secrets, true).await;
    prepare(&s.sim);
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    let failed = s
        .run_in_state(&started.run_id, RunState::Failed, Duration::from_secs(30))
        .await;
    (s, service, failed)
}

/// [`a_failed_run`] with Sage People given `faults`; the run must keep its checkpoint.
async fn a_run_failed_by(faults: SageFaults) -> (Setup, Running, RunRecord) {
    let (s, service, failed) = a_failed_run(|sim| sim.set_faults(faults)).await;
    assert!(
        s.checkpoint(ID).await.is_some(),
        "the failed run keeps its checkpoint: {failed:?}"
    );
    (s, service, failed)
}

/// [`a_run_failed_by`] something in front of the org answering every call with its own page.
async fn a_run_failed_by_foreign_pages() -> (Setup, Running, RunRecord) {
    a_run_failed_by(SageFaults {
        html_page_rate: 1.0,
        ..SageFaults::default()
    })
    .await
}

/// Waits until the lease holder, with nobody triggering anything, has resumed `failed` and
/// completed it: every worker published once, in that run.
async fn resumed_to_the_end(s: &Setup, failed: &RunRecord) {
    let record = completed(&s.bus, ID, &failed.run_id).await;
    assert_eq!(record.published, 600);
    s.checkpoint_dropped(ID, "the completed run to drop its checkpoint")
        .await;
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 600, &failed.run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_a_sage_outage_longer_than_the_budget_is_resumed_after_a_pause() {
    // Sage People goes away for longer than one request's retry budget.
    let (s, service, failed) = a_run_failed_by(SageFaults {
        outage_for_ms: Some(4_000),
        ..SageFaults::default()
    })
    .await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("503") || error.contains("unavailable"),
        "{failed:?}"
    );
    resumed_to_the_end(&s, &failed).await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_answers_not_of_the_documented_shape_keeps_its_checkpoint_and_is_resumed() {
    // Something in front of the org answers every call with its own page, past the budget.
    let (s, service, failed) = a_run_failed_by_foreign_pages().await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("not the documented shape"), "{error}");
    assert!(error.contains("its checkpoint is kept"), "{error}");
    // Once the org answers again, the lease holder resumes the same run.
    s.sim.set_faults(SageFaults::default());
    resumed_to_the_end(&s, &failed).await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_by_a_page_breaking_the_contract_drops_its_checkpoint_and_the_next_run_starts_afresh()
 {
    // The third page ends with an employee without an id: every read of it fails the same way.
    let last_of_page_3 = generate::worker_id(149);
    let mut original = None;
    let (s, service, failed) = a_failed_run(|sim| {
        original = sim.worker(&last_of_page_3);
        sim.replace_worker(&last_of_page_3, json!({"fullName": "No Id"}));
    })
    .await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("without a string `id`"), "{error}");
    assert!(!error.contains("checkpoint is kept"), "{error}");
    // Resuming would fail at the same page forever.
    s.checkpoint_dropped(ID, &format!("the run to drop its checkpoint: {failed:?}"))
        .await;
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 100, &failed.run_id);

    // The next run is a new one that reads from the first page, and completes once the org
    // serves the employee whole again.
    s.sim
        .replace_worker(&last_of_page_3, original.expect("worker 149 exists"));
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert_ne!(started.run_id, failed.run_id);
    let record = completed(&s.bus, ID, &started.run_id).await;
    assert_eq!(record.published, 600);
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 600, &started.run_id);
    service.shutdown().await;
}

/// Waits until run `run_id` failed with an error `refused` accepts (a resume refused by what
/// only an operator can fix), then checks that it is not resumed again: no run event and no
/// Sage People call come after, and the refusal stands.
async fn refused_and_not_resumed_again(s: &Setup, run_id: &str, refused: impl Fn(&str) -> bool) {
    let refused_event = &refused;
    let refused = |record: &RunRecord| {
        record.state == RunState::Failed && record.error.as_deref().is_some_and(&refused)
    };
    wait_for("a refused resume", Duration::from_secs(30), || async {
        refused(&s.run_record(ID, run_id).await).then_some(())
    })
    .await;
    // The record is written before the failed event is published: counted after that event.
    let attempts = wait_for(
        "the refusal's run event",
        Duration::from_secs(10),
        || async {
            let events = run_events(&s.bus, ID).await;
            let last = events.last()?;
            (last.kind() == RunEventKind::Failed && refused_event(&last.error))
                .then_some(events.len())
        },
    )
    .await;
    let calls = s.sim.stats().api_requests;
    // Resumes were a second or two apart: a few more would have come by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        run_events(&s.bus, ID).await.len(),
        attempts,
        "what only an operator can fix does not mend with time: no further resume"
    );
    assert_eq!(s.sim.stats().api_requests, calls, "no further call");
    assert!(refused(&s.run_record(ID, run_id).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_refused_by_the_settings_is_not_retried_and_the_run_waits_with_its_checkpoint() {
    let (s, service, failed) = a_run_failed_by_foreign_pages().await;
    // The integration now names a credential set this extractor does not have.
    let mut integration = IntegrationConfig::default_for(ID);
    integration.credentials = "apac".into();
    put_integration(&s.bus, &integration).await;
    s.sim.set_faults(SageFaults::default());
    refused_and_not_resumed_again(&s, &failed.run_id, |e| e.contains("[credentials.apac]")).await;
    assert!(s.checkpoint(ID).await.is_some(), "the checkpoint is kept");

    // Fixed: a manual run resumes the same run. Should it stop again, part-way, it is resumed
    // on its own, as any run is: giving up on the refusal does not hold for the run for good.
    put_integration(&s.bus, &IntegrationConfig::default_for(ID)).await;
    s.sim.set_faults(SageFaults {
        html_page_rate: 1.0,
        ..SageFaults::default()
    });
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert_eq!(started.run_id, failed.run_id);
    wait_for(
        "the resumed run to stop part-way again",
        Duration::from_secs(60),
        || async {
            let record = s.run_record(ID, &failed.run_id).await;
            let stopped = record.state == RunState::Failed
                && record
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("not the documented shape"));
            stopped.then_some(())
        },
    )
    .await;
    s.sim.set_faults(SageFaults::default());
    resumed_to_the_end(&s, &failed).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_refused_by_sage_people_keeps_its_checkpoint_is_not_retried_and_goes_on_from_its_marker_once_fixed()
 {
    let workers = 1000;
    let s = setup(slow_org(workers, 40, 60, 50)).await;
    let (mut config, secrets) = config(&s.sim, &[ID]);
    config.sage_retry_secs = 1;
    config.run_retry = quick_retry();
    let service = serve(&s.bus, config, secrets, true).await;
    let started: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    wait_for_pages(&s.bus, ID, 5).await;
    // An outage stops the run part-way; while it lasts, the org's setup changes, so the
    // automatic resume is refused (whichever resume comes after the change).
    s.sim.set_faults(SageFaults {
        outage_for_ms: Some(60_000),
        ..SageFaults::default()
    });
    s.run_in_state(&started.run_id, RunState::Failed, Duration::from_secs(30))
        .await;
    let stopped = s
        .checkpoint(ID)
        .await
        .expect("the outage keeps the checkpoint");
    s.sim.set_faults(SageFaults {
        config_error: Some("MISSING_API_PERMISSION".into()),
        ..SageFaults::default()
    });
    refused_and_not_resumed_again(&s, &started.run_id, |e| {
        e.contains("\"Employees API\" permission set")
            && e.contains("the run keeps its checkpoint: once this is fixed")
    })
    .await;
    let kept = s.checkpoint(ID).await.expect("the checkpoint is kept");
    assert_eq!(
        (kept.run_id.as_str(), &kept.marker, kept.published),
        (started.run_id.as_str(), &stopped.marker, stopped.published)
    );
    assert!(kept.published > 0 && kept.published < workers, "{kept:?}");

    // Fixed: a manual run goes on with the same run from its marker; no page is read twice.
    s.sim.set_faults(SageFaults::default());
    let served_before = s.sim.stats().records_served;
    let resumed: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert_eq!(resumed.run_id, started.run_id);
    let record = completed(&s.bus, ID, &started.run_id).await;
    assert_eq!(record.published, workers);
    assert_eq!(
        s.sim.stats().records_served - served_before,
        workers - kept.published,
        "only the workers past the marker are read"
    );
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, workers, &started.run_id);
    service.shutdown().await;
}
