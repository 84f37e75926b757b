//! The command protocol over NATS request/reply, answered by a running service.

use peoplesync_bus::control::{Progress, RunStarted, WorkerFetched, WorkerSynced};
use peoplesync_bus::{RunState, control};
use peoplesync_core::IntegrationConfig;
use peoplesync_proto::v1::WorkerEventKind;
use peoplesync_sims::generate;
use peoplesync_sims::sage::{SageConfig, SageFaults};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_during_a_run_answers_already_running_with_its_id() {
    let s = setup(slow_org(2000, 50, 50, 40)).await;
    let service = s.serve().await;

    let first: RunStarted = command(&s.bus, ID, control::RUN, json!({"trigger": "grpc"}))
        .await
        .unwrap();
    assert!(!first.already_running);
    let second: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert!(second.already_running);
    assert_eq!(second.run_id, first.run_id);
    wait_for_pages(&s.bus, ID, 2).await;
    let progress: Progress = command(&s.bus, ID, control::PROGRESS, json!({}))
        .await
        .unwrap();
    assert!(progress.running);
    assert_eq!(progress.run_id.as_deref(), Some(first.run_id.as_str()));
    assert!(
        progress.published >= 100 && progress.pages >= 2,
        "{progress:?}"
    );

    let record = completed(&s.bus, ID, &first.run_id).await;
    assert_eq!((record.published, record.trigger.as_str()), (2000, "grpc"));
    let idle: Progress = command(&s.bus, ID, control::PROGRESS, json!({}))
        .await
        .unwrap();
    assert!(!idle.running);
    let third: RunStarted = command(&s.bus, ID, control::RUN, json!({})).await.unwrap();
    assert!(!third.already_running);
    assert_ne!(third.run_id, first.run_id);
    completed(&s.bus, ID, &third.run_id).await;
    service.shutdown().await;
}

#[tokio::test]
async fn the_worker_command_publishes_a_single_worker_run_and_fetch_only_reads() {
    let s = setup(org(50, 10, 10)).await;
    let service = s.serve().await;
    let id = generate::worker_id(7);

    let fetched: WorkerFetched = command(&s.bus, ID, control::FETCH, json!({"id": id}))
        .await
        .unwrap();
    assert!(fetched.found);
    assert_eq!(fetched.raw.unwrap()["id"], id.as_str());
    assert_eq!(
        (fetched.credentials.as_str(), fetched.hostname.as_str()),
        ("default", "127.0.0.1")
    );
    assert!(
        drain_workers(&s.bus, ID).await.is_empty(),
        "fetch publishes nothing"
    );

    let synced: WorkerSynced = command(&s.bus, ID, control::WORKER, json!({"id": id}))
        .await
        .unwrap();
    let run_id = synced.run_id.expect("a run");
    let record = s.run_record(ID, &run_id).await;
    assert_eq!(record.state, RunState::Completed);
    assert_eq!(
        (record.full, record.trigger.as_str(), record.published),
        (false, "worker", 1)
    );
    let events = drain_workers(&s.bus, ID).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), WorkerEventKind::Upsert);
    assert_eq!(events[0].worker.as_ref().unwrap().id, id);
    assert_eq!(events[0].run_id, run_id);

    let missing: WorkerSynced = command(
        &s.bus,
        ID,
        control::WORKER,
        json!({"id": generate::worker_id(999)}),
    )
    .await
    .unwrap();
    assert!(!missing.found && missing.run_id.is_none());
    let invalid = command::<WorkerSynced>(&s.bus, ID, control::WORKER, json!({"id": "../x"}))
        .await
        .unwrap_err();
    assert_eq!(invalid.code, "invalid");
    let malformed = command::<WorkerSynced>(&s.bus, ID, control::WORKER, json!({"name": 1}))
        .await
        .unwrap_err();
    assert_eq!(malformed.code, "invalid");
    service.shutdown().await;
}

#[tokio::test]
async fn a_worker_too_large_for_nats_is_refused_and_no_run_is_left_behind() {
    let s = setup(org(20, 10, 10)).await;
    let service = s.serve().await;
    let id = generate::worker_id(7);
    // A 1.2 MB field: the event exceeds NATS's default 1 MiB payload.
    s.sim
        .patch_worker(&id, json!({"hrDepartment": "x".repeat(1_200_000)}));

    let refused = command::<WorkerSynced>(&s.bus, ID, control::WORKER, json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "invalid", "{}", refused.message);
    assert!(
        refused.message.contains("more than NATS accepts")
            && refused.message.contains("no run was started")
            && refused.message.contains("max_payload"),
        "{}",
        refused.message
    );
    assert!(s.bus.runs().list(Some(ID)).await.unwrap().is_empty());
    assert!(drain_workers(&s.bus, ID).await.is_empty());
    service.shutdown().await;
}

/// An org of 50 whose workers 7 and 8 work in France and Spain, an integration reading France
/// only, and a service answering commands.
async fn france_only(faults: SageFaults) -> (Setup, Running, String, String) {
    let s = setup(SageConfig {
        faults,
        ..org(50, 10, 10)
    })
    .await;
    let (inside, outside) = (generate::worker_id(7), generate::worker_id(8));
    s.sim
        .patch_worker(&inside, json!({"workAddress": {"country": "France"}}));
    s.sim
        .patch_worker(&outside, json!({"workAddress": {"country": "Spain"}}));
    let mut integration = IntegrationConfig::default_for(ID);
    integration.source_filter = Some("workAddress.country eq 'France'".into());
    put_integration(&s.bus, &integration).await;
    let service = s.serve().await;
    (s, service, inside, outside)
}

#[tokio::test]
async fn a_worker_outside_the_source_filter_is_neither_synced_nor_previewed() {
    let (s, service, inside, outside) = france_only(SageFaults::default()).await;

    let refused = command::<WorkerSynced>(&s.bus, ID, control::WORKER, json!({"id": outside}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "invalid");
    for said in [
        "outside the integration's source_filter `workAddress.country eq 'France'`",
        "Not synced",
    ] {
        assert!(refused.message.contains(said), "{said:?}: {refused:?}");
    }
    assert!(
        drain_workers(&s.bus, ID).await.is_empty(),
        "nothing published"
    );
    assert!(
        s.bus.runs().list(Some(ID)).await.unwrap().is_empty(),
        "no run record, so none left running"
    );
    let preview = command::<WorkerFetched>(&s.bus, ID, control::FETCH, json!({"id": outside}))
        .await
        .unwrap_err();
    assert_eq!(preview.code, "invalid");
    assert!(
        preview.message.contains("would not be loaded")
            && preview.message.contains("source_filter"),
        "{preview:?}"
    );

    // A worker inside the filter is synced and previewed as before.
    let synced: WorkerSynced = command(&s.bus, ID, control::WORKER, json!({"id": inside}))
        .await
        .unwrap();
    let record = s.run_record(ID, &synced.run_id.expect("a run")).await;
    assert_eq!((record.state, record.published), (RunState::Completed, 1));
    let fetched: WorkerFetched = command(&s.bus, ID, control::FETCH, json!({"id": inside}))
        .await
        .unwrap();
    assert!(fetched.found);
    service.shutdown().await;
}

#[tokio::test]
async fn an_org_that_refuses_id_in_filters_refuses_the_worker_commands_saying_so() {
    let (s, service, inside, _) = france_only(SageFaults {
        filter_refuses_id: true,
        ..SageFaults::default()
    })
    .await;
    let refused = command::<WorkerSynced>(&s.bus, ID, control::WORKER, json!({"id": inside}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "misconfigured");
    for said in ["do not accept `id`", "is not synced", "source_filter"] {
        assert!(refused.message.contains(said), "{said:?}: {refused:?}");
    }
    assert!(
        drain_workers(&s.bus, ID).await.is_empty(),
        "nothing published"
    );
    assert!(s.bus.runs().list(Some(ID)).await.unwrap().is_empty());
    let preview = command::<WorkerFetched>(&s.bus, ID, control::FETCH, json!({"id": inside}))
        .await
        .unwrap_err();
    assert_eq!(preview.code, "misconfigured", "{preview:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sage_people_outage_reaches_fetch_and_worker_within_the_control_planes_wait() {
    let (s, config, secrets) = sage_people_down().await;
    let service = serve(&s.bus, config, secrets, false).await;
    let id = generate::worker_id(7);

    // Both at once: each must answer within the wait the control plane gives it.
    let (fetched, synced) = tokio::join!(
        command_within::<WorkerFetched>(
            &s.bus,
            ID,
            control::FETCH,
            json!({"id": id}),
            control::WORKER_WAIT
        ),
        command_within::<WorkerSynced>(
            &s.bus,
            ID,
            control::WORKER,
            json!({"id": id}),
            control::WORKER_WAIT
        ),
    );
    for (command, error) in [
        ("fetch", fetched.expect_err("Sage People is down")),
        ("worker", synced.expect_err("Sage People is down")),
    ] {
        assert_eq!(error.code, "failed", "{command}: {error:?}");
        // Sage People's own answer, not "did not answer": the 503 and how often it was asked.
        assert!(
            error.message.contains("503"),
            "{command}: {}",
            error.message
        );
        assert!(
            error.message.contains("attempts"),
            "{command}: {}",
            error.message
        );
    }
    // The sync gave up before its run began: nothing is left running, nothing was published.
    let runs = s.bus.runs().list(Some(ID)).await.unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    assert!(drain_workers(&s.bus, ID).await.is_empty());
    service.shutdown().await;
}
