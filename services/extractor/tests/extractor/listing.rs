//! Full runs that go well, whatever the pages and tokens look like.

use peoplesync_bus::RunState;
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::Service;
use peoplesync_extractor::config::{CredentialSet, Grant};
use peoplesync_proto::v1::{RunEventKind, WorkerEventKind};
use peoplesync_sims::sage::{EndStyle, PageSize, SageConfig, SageFaults, SageSim};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

#[tokio::test]
async fn a_full_run_publishes_every_worker_once_across_variable_page_sizes() {
    let s = setup(org(1000, 1, 97)).await;
    let summary = s.full_run().await;
    assert_eq!(summary.published, 1000);
    assert!(
        summary.pages > 15,
        "pages of 1..=97 records: {}",
        summary.pages
    );
    let events = drain_workers(&s.bus, ID).await;
    assert_each_worker_once(&events, 1000, &summary.run_id);
    let mut sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=1000).collect::<Vec<_>>());

    let first = &events[0];
    assert_eq!(first.kind(), WorkerEventKind::Upsert);
    let tracking = first.tracking.clone().unwrap();
    assert_eq!(tracking.credentials, "default");
    assert_eq!(tracking.hostname, "127.0.0.1");
    let raw: serde_json::Value = serde_json::from_slice(&first.raw).unwrap();
    assert_eq!(raw["additionalFields"][0]["name"], "Cost Centre", "{raw}");

    let record = s.run_record(ID, &summary.run_id).await;
    assert_eq!(record.state, RunState::Completed);
    assert_eq!((record.published, record.removed), (1000, 0));
    assert!(record.full);
    let kinds: Vec<RunEventKind> = run_events(&s.bus, ID)
        .await
        .iter()
        .map(|e| e.kind())
        .collect();
    assert_eq!(kinds, [RunEventKind::Started, RunEventKind::Completed]);
    assert!(
        s.checkpoint(ID).await.is_none(),
        "the checkpoint is cleared at the end"
    );
    // One token for the whole run.
    assert_eq!(s.sim.stats().tokens_issued, 1);
}

#[tokio::test]
async fn a_listed_record_without_a_usable_id_is_dead_lettered_with_its_start() {
    use peoplesync_bus::dlq;
    use peoplesync_sims::generate::worker_id;
    use serde_json::json;
    let s = setup(org(200, 50, 50)).await;
    // None of them last on its page (49, 99, ...), whose id is the next marker.
    s.sim
        .replace_worker(&worker_id(10), json!({"fullName": "Missing Id"}));
    s.sim
        .replace_worker(&worker_id(60), json!({"id": null, "fullName": "Null Id"}));
    s.sim.replace_worker(
        &worker_id(110),
        json!({"id": ["a2G7E"], "fullName": "List Id"}),
    );
    let summary = s.full_run().await;
    assert_eq!((summary.published, summary.skipped), (197, 3));

    let first = letters(&s.bus).await;
    assert_eq!(first.len(), 3, "one letter each: {:?}", first.keys());
    for name in ["Missing Id", "Null Id", "List Id"] {
        let record = first
            .values()
            .find(|r| String::from_utf8_lossy(&r.payload).contains(name))
            .unwrap_or_else(|| panic!("no letter holds {name}: {first:?}"));
        let letter = &record.letter;
        assert_eq!(letter.stage, dlq::STAGE_EXTRACTOR);
        assert_eq!(letter.run_id, summary.run_id);
        assert!(letter.worker_id.starts_with("no-id-"), "{letter:?}");
        assert!(letter.reason.contains("has no `id`"), "{letter:?}");
        assert!(letter.reason.contains("correct it"), "{letter:?}");
    }

    // The next run files the same letters again, counted for its run, not new ones.
    let again = s.full_run().await;
    assert_eq!(again.skipped, 3);
    let after = letters(&s.bus).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>()
    );
    assert!(after.values().all(|r| r.seen.runs == 2), "{after:?}");
}

#[tokio::test]
async fn an_empty_data_array_ends_the_listing_like_no_content() {
    let s = setup(SageConfig {
        workers: 450,
        page_size: PageSize::Fixed(100),
        end_style: EndStyle::EmptyData,
        ..SageConfig::default()
    })
    .await;
    let summary = s.full_run().await;
    assert_eq!((summary.published, summary.pages), (450, 5));
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, 450, &summary.run_id);
    assert_eq!(s.sim.stats().end_of_list, 1);
}

/// A full run of `sim` while Sage People shows `faults`, which must send each worker once;
/// the setup, for the simulator's stats.
async fn full_run_despite(faults: SageFaults, sim: SageConfig) -> Setup {
    let workers = sim.workers;
    let s = setup(SageConfig { faults, ..sim }).await;
    let summary = s.full_run().await;
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, workers, &summary.run_id);
    s
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_page_is_reread() {
    let s = full_run_despite(
        SageFaults {
            token_expiry_after: Some(3),
            ..SageFaults::default()
        },
        org(1000, 40, 60),
    )
    .await;
    let stats = s.sim.stats();
    // Every third call is refused, then re-sent once with a new token.
    assert!(stats.unauthorized >= 5, "{stats:?}");
    assert_eq!(stats.tokens_issued, stats.unauthorized + 1, "{stats:?}");
}

#[tokio::test]
async fn bursts_of_503_and_cut_off_bodies_are_retried_until_the_run_completes() {
    let s = full_run_despite(
        SageFaults {
            transient_failure_rate: 0.25,
            truncate_rate: 0.1,
            outage_for_ms: Some(600),
            ..SageFaults::default()
        },
        org(1000, 50, 150),
    )
    .await;
    let stats = s.sim.stats();
    assert!(
        stats.status_counts.get(&503).copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn every_grant_authenticates_and_reuses_its_token() {
    let root = peoplesync_testkit::workspace_root().join("tools/sims/testdata");
    let public = std::fs::read_to_string(root.join("jwt-test-key.pub.pem")).unwrap();
    let private = std::fs::read_to_string(root.join("jwt-test-key.pem")).unwrap();
    let nats = peoplesync_testkit::NatsServer::start();
    let bus = peoplesync_bus::Bus::connect(nats.url(), "t", Default::default())
        .await
        .unwrap();
    let sim = SageSim::spawn(SageConfig {
        jwt_public_key_pem: Some(public),
        ..org(300, 50, 100)
    })
    .await
    .unwrap();
    let (mut config, _) = config(&sim, &["by-secret", "by-jwt", "by-password"]);
    config.credentials.clear();
    let set = |grant, username: Option<&str>| CredentialSet {
        grant,
        username: username.map(Into::into),
        audience: None,
        ..credential_set(&sim)
    };
    config
        .credentials
        .insert("secret".into(), set(Grant::ClientCredentials, None));
    config.credentials.insert(
        "jwt".into(),
        set(Grant::JwtBearer, Some("integration@example.com")),
    );
    config.credentials.insert(
        "password".into(),
        set(Grant::Password, Some("integration@example.com")),
    );
    let secrets = secrets(&[
        (secret_var("secret", "CLIENT_SECRET"), "sim-secret"),
        (secret_var("jwt", "PRIVATE_KEY"), private.as_str()),
        (secret_var("password", "CLIENT_SECRET"), "sim-secret"),
        (secret_var("password", "PASSWORD"), "sim-password"),
    ]);
    for (integration, set) in [
        ("by-secret", "secret"),
        ("by-jwt", "jwt"),
        ("by-password", "password"),
    ] {
        let mut integration_config = IntegrationConfig::default_for(integration);
        integration_config.credentials = set.into();
        put_integration(&bus, &integration_config).await;
    }
    let service = Service::build(config, bus.clone(), secrets).await.unwrap();
    for (integration, outcome) in service.run_once(&CancellationToken::new()).await {
        let summary = outcome.unwrap_or_else(|e| panic!("{integration}: {e}"));
        assert_eq!(summary.published, 300, "{integration}");
        let events = drain_workers(&bus, &integration).await;
        let set = integration.trim_start_matches("by-");
        assert!(
            events
                .iter()
                .all(|e| e.tracking.as_ref().unwrap().credentials == set)
        );
    }
    let requests = sim.stats().token_requests;
    for grant in ["client_credentials", "jwt_bearer", "password"] {
        assert_eq!(requests.get(grant), Some(&1), "{grant}: {requests:?}");
    }
}

/// An org of `workers` (generated from `seed`) whose app is `{name}-app` with the secret
/// `{name}-secret`.
async fn app_org(seed: u64, name: &str, workers: u64) -> SageSim {
    SageSim::spawn(SageConfig {
        seed,
        client_id: format!("{name}-app"),
        client_secret: format!("{name}-secret"),
        ..org(workers, 30, 80)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn two_integrations_run_side_by_side_with_their_own_credentials_and_subjects() {
    let nats = peoplesync_testkit::NatsServer::start();
    let bus = peoplesync_bus::Bus::connect(nats.url(), "t", Default::default())
        .await
        .unwrap();
    let uk = app_org(1, "uk", 400).await;
    let us = app_org(2, "us", 700).await;
    let (mut config, _) = config(&uk, &["hr-uk", "hr-us"]);
    config.credentials.clear();
    for (set, app, sim) in [("uk-prod", "uk-app", &uk), ("us-prod", "us-app", &us)] {
        config.credentials.insert(
            set.into(),
            CredentialSet {
                client_id: app.into(),
                ..credential_set(sim)
            },
        );
    }
    let secrets = secrets(&[
        (secret_var("uk-prod", "CLIENT_SECRET"), "uk-secret"),
        (secret_var("us-prod", "CLIENT_SECRET"), "us-secret"),
    ]);
    for (integration, set) in [("hr-uk", "uk-prod"), ("hr-us", "us-prod")] {
        let mut integration_config = IntegrationConfig::default_for(integration);
        integration_config.credentials = set.into();
        put_integration(&bus, &integration_config).await;
    }
    let service = Service::build(config, bus.clone(), secrets).await.unwrap();
    let outcomes = service.run_once(&CancellationToken::new()).await;
    assert_eq!(outcomes.len(), 2);
    for ((integration, outcome), (workers, set)) in outcomes
        .into_iter()
        .zip([(400, "uk-prod"), (700, "us-prod")])
    {
        let summary = outcome.unwrap();
        let events = drain_workers(&bus, &integration).await;
        assert_each_worker_once(&events, workers, &summary.run_id);
        assert!(events.iter().all(|e| e.integration_id == integration));
        assert!(
            events
                .iter()
                .all(|e| e.tracking.as_ref().unwrap().credentials == set)
        );
    }
    assert_eq!(uk.stats().records_served, 400);
    assert_eq!(us.stats().records_served, 700);
}

#[tokio::test]
async fn a_source_filter_is_passed_to_sage_people() {
    let s = setup(org(600, 50, 100)).await;
    let mut integration = IntegrationConfig::default_for(ID);
    integration.source_filter = Some("hrDepartment eq 'Engineering'".into());
    put_integration(&s.bus, &integration).await;
    let summary = s.full_run().await;
    let events = drain_workers(&s.bus, ID).await;
    assert!(!events.is_empty() && events.len() < 600, "{}", events.len());
    assert_eq!(summary.published as usize, events.len());
    assert!(
        events
            .iter()
            .all(|e| e.worker.as_ref().unwrap().hr_department.as_deref() == Some("Engineering"))
    );
}
