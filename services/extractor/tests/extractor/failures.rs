//! Runs that cannot go on: configuration errors stop at once with what to fix; the quota stops
//! a run resumably.

use peoplesync_bus::RunState;
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::{Extraction, ExtractorConfig, RunError, RunSummary};
use peoplesync_proto::v1::RunEventKind;
use peoplesync_sims::sage::{SageConfig, SageFaults};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

async fn failed_run(sim: SageConfig, filter: Option<&str>, secret: &str) -> (Setup, RunError) {
    let s = setup(sim).await;
    if let Some(filter) = filter {
        let mut integration = IntegrationConfig::default_for(ID);
        integration.source_filter = Some(filter.into());
        put_integration(&s.bus, &integration).await;
    }
    let (config, _) = config(&s.sim, &[ID]);
    let secrets = secrets(&[("SAGE_PEOPLE_CLIENT_SECRET".into(), secret)]);
    let err = extraction(&s.bus, config, secrets, ID)
        .run_full("test", CancellationToken::new())
        .await
        .expect_err("the run must fail");
    (s, err)
}

#[tokio::test]
async fn each_configuration_error_fails_the_run_at_once_saying_what_to_fix() {
    let cases = [
        ("MISSING_API_PERMISSION", "\"Employees API\" permission set"),
        ("INACCESSIBLE_FIELD", "field-level security"),
        ("OBJECT_NOT_ACCESSIBLE", "View All"),
        ("INVALID_FILTER", "source_filter `hrDepartment eq 'People'`"),
    ];
    for (code, advice) in cases {
        let sim = SageConfig {
            faults: SageFaults {
                config_error: Some(code.into()),
                ..SageFaults::default()
            },
            ..org(100, 50, 50)
        };
        let (s, err) = failed_run(sim, Some("hrDepartment eq 'People'"), "sim-secret").await;
        let message = err.to_string();
        assert!(message.contains(advice), "{code}: {message}");
        assert!(!err.resumable(), "{code}");
        let record = s.run_record(ID, err.run_id().unwrap()).await;
        assert_eq!(record.state, RunState::Failed, "{code}");
        assert!(record.error.unwrap().contains(advice), "{code}");
        assert!(
            s.checkpoint(ID).await.is_none(),
            "{code}: checkpoint cleared"
        );
        assert_eq!(s.sim.stats().api_requests, 1, "{code}: no retry");
        let kinds: Vec<_> = run_events(&s.bus, ID)
            .await
            .iter()
            .map(|e| e.kind())
            .collect();
        assert_eq!(
            kinds,
            [RunEventKind::Started, RunEventKind::Failed],
            "{code}"
        );
    }
}

#[tokio::test]
async fn a_configuration_error_part_way_through_a_new_run_ends_it_and_drops_its_checkpoint() {
    let s = setup(slow_org(1000, 40, 60, 50)).await;
    let extraction = s.extraction(ID);
    let running = tokio::spawn({
        let extraction = extraction.clone();
        async move { extraction.run_full("test", CancellationToken::new()).await }
    });
    wait_for_pages(&s.bus, ID, 4).await;
    // The API user loses its permission set part-way: the run is over, so the loaders finalize
    // what it loaded instead of waiting for an operator (only a run taken up from its
    // checkpoint keeps it, see the retry tests).
    s.sim.set_faults(SageFaults {
        config_error: Some("MISSING_API_PERMISSION".into()),
        ..SageFaults::default()
    });
    let err = ended(running, "the run")
        .await
        .expect_err("the run must fail");
    assert!(!err.resumable(), "{err}");
    assert!(!err.to_string().contains("checkpoint"), "{err}");
    let run_id = err.run_id().unwrap().to_owned();
    let record = s.run_record(ID, &run_id).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(record.published > 0, "{record:?}");
    assert!(s.checkpoint(ID).await.is_none(), "checkpoint cleared");

    s.sim.set_faults(SageFaults::default());
    let summary = run_to_completion(&extraction).await;
    assert!(!summary.resumed);
    assert_ne!(summary.run_id, run_id);
}

#[tokio::test]
async fn refused_credentials_fail_the_run_naming_the_app_and_host() {
    let (s, err) = failed_run(org(100, 50, 50), None, "wrong-secret").await;
    let message = err.to_string();
    assert!(
        message.contains("refused the External Client App's credentials"),
        "{message}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
    assert_eq!(s.sim.stats().api_requests, 0);
}

#[tokio::test]
async fn a_token_refused_twice_in_a_row_fails_the_run_naming_grant_and_host() {
    let sim = SageConfig {
        faults: SageFaults {
            token_expiry_after: Some(0),
            ..SageFaults::default()
        },
        ..org(100, 50, 50)
    };
    let (s, err) = failed_run(sim, None, "sim-secret").await;
    let message = err.to_string();
    assert!(message.contains("client credentials grant"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
    let stats = s.sim.stats();
    assert_eq!(
        (stats.tokens_issued, stats.unauthorized),
        (2, 2),
        "{stats:?}"
    );
}

/// The extractor's own check of a `source_filter` and the simulated org take and refuse the
/// same filters: `not`, dates written bare, and nesting up to one limit.
#[tokio::test]
async fn the_filter_check_and_the_simulated_org_agree_on_the_syntax() {
    use peoplesync_extractor::filter::{self, MAX_NESTING};
    use peoplesync_sage_people::{Credentials, RetryPolicy, SageClient};
    let sim = peoplesync_sims::sage::SageSim::spawn(org(20, 50, 50))
        .await
        .unwrap();
    let mut config = peoplesync_sage_people::SageConfig::new(
        sim.url(),
        Credentials::ClientCredentials {
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
        },
    );
    config.retry = RetryPolicy::QUICK;
    let client = SageClient::new(config).unwrap();
    let nested = |depth: usize| {
        format!(
            "{}hrDepartment eq 'People'{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    let cases = [
        (nested(MAX_NESTING), true),
        (nested(MAX_NESTING + 1), false),
        ("not hrDepartment eq 'People'".to_owned(), true),
        ("currentEmployment.startDate gt 2019-01-01".to_owned(), true),
        (
            "currentEmployment.startDate gt 2019-02-30".to_owned(),
            false,
        ),
        (
            "currentEmployment.startDate gt 2019-01-01T10:00".to_owned(),
            false,
        ),
    ];
    for (source_filter, accepted) in cases {
        let checked = filter::validate(&source_filter);
        assert_eq!(checked.is_ok(), accepted, "{source_filter}: {checked:?}");
        let page = client.list_page(None, Some(&source_filter)).await;
        assert_eq!(page.is_ok(), accepted, "{source_filter}: {page:?}");
    }
}

#[tokio::test]
async fn an_invalid_source_filter_is_refused_before_any_call() {
    let (s, err) = failed_run(
        org(100, 50, 50),
        Some("hrDepartment = 'People'"),
        "sim-secret",
    )
    .await;
    let message = err.to_string();
    assert!(message.contains("source_filter"), "{message}");
    assert!(message.contains("character 14"), "{message}");
    assert_eq!(s.sim.stats().api_requests, 0);
    assert_eq!(
        s.run_record(ID, err.run_id().unwrap()).await.state,
        RunState::Failed
    );
}

#[tokio::test]
async fn an_unknown_credential_set_says_how_to_define_it() {
    let s = setup(org(100, 50, 50)).await;
    let mut integration = IntegrationConfig::default_for(ID);
    integration.credentials = "apac".into();
    put_integration(&s.bus, &integration).await;
    let err = s
        .extraction(ID)
        .run_full("test", CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("[credentials.apac]"), "{err}");
}

#[tokio::test]
async fn quota_exhaustion_stops_the_run_and_the_next_run_resumes_it() {
    let s = setup(SageConfig {
        api_quota: 10_000,
        faults: SageFaults {
            latency_ms: 50,
            ..SageFaults::default()
        },
        ..org(1000, 40, 60)
    })
    .await;
    let extraction = s.extraction(ID);
    let running = tokio::spawn({
        let extraction = extraction.clone();
        async move { extraction.run_full("test", CancellationToken::new()).await }
    });
    wait_for_pages(&s.bus, ID, 4).await;
    s.sim.set_api_usage(10_000);
    let err = ended(running, "the run")
        .await
        .expect_err("quota exhausted");
    assert_eq!(err.state(), RunState::QuotaExhausted, "{err}");
    assert!(err.to_string().contains("API request limit"), "{err}");
    let run_id = err.run_id().unwrap().to_owned();
    let record = s.run_record(ID, &run_id).await;
    assert_eq!(record.state, RunState::QuotaExhausted);
    let checkpoint = s.checkpoint(ID).await.expect("checkpoint kept");
    assert!(checkpoint.published >= 4 * 40 && checkpoint.published < 1000);

    let summary = resumed_once_the_quota_frees(&s, &extraction, "manual").await;
    assert_eq!(
        (summary.run_id.as_str(), summary.published),
        (run_id.as_str(), 1000)
    );
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, 1000, &run_id);
    assert_eq!(s.run_record(ID, &run_id).await.state, RunState::Completed);
}

/// Frees the org's quota and runs `extraction` again as `trigger`: the run stopped by the
/// quota must be resumed. Its summary.
async fn resumed_once_the_quota_frees(
    s: &Setup,
    extraction: &Extraction,
    trigger: &str,
) -> RunSummary {
    s.sim.set_api_usage(0);
    let summary = extraction
        .run_full(trigger, CancellationToken::new())
        .await
        .unwrap();
    assert!(summary.resumed);
    summary
}

#[tokio::test]
async fn the_quota_guard_stops_before_the_share_is_passed_and_the_run_resumes_later() {
    let s = setup(SageConfig {
        api_quota: 100,
        ..org(1000, 50, 50)
    })
    .await;
    s.sim.set_api_usage(70);
    let extraction = guarded(&s);
    let err = extraction
        .run_full("test", CancellationToken::new())
        .await
        .expect_err("stopped by the guard");
    assert_eq!(err.state(), RunState::QuotaExhausted);
    assert!(err.to_string().contains("80%"), "{err}");
    assert!(err.resumable());
    let stats = s.sim.stats();
    assert_eq!(stats.api_usage, 80, "the org's usage never passes 80%");
    assert!(!stats.status_counts.contains_key(&403), "{stats:?}");
    let checkpoint = s.checkpoint(ID).await.expect("checkpoint kept");
    assert_eq!(checkpoint.published, 500);

    let summary = resumed_once_the_quota_frees(&s, &extraction, "schedule").await;
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, 1000, &summary.run_id);
}

/// An extraction of `s.sim` that stops at 80% of the org's quota.
fn guarded(s: &Setup) -> Extraction {
    let (config, secrets) = config(&s.sim, &[ID]);
    extraction(
        &s.bus,
        ExtractorConfig {
            quota_share: 0.8,
            ..config
        },
        secrets,
        ID,
    )
}

/// Sets `sim` up with `used` requests of its quota already used, then a run of [`guarded`] that
/// the guard must stop as quota exhausted: the set-up, and the run's error.
async fn stopped_by_the_guard(sim: SageConfig, used: u64) -> (Setup, RunError) {
    let s = setup(sim).await;
    s.sim.set_api_usage(used);
    let err = guarded(&s)
        .run_full("test", CancellationToken::new())
        .await
        .expect_err("stopped by the guard");
    assert_eq!(err.state(), RunState::QuotaExhausted, "{err}");
    (s, err)
}

/// An org of `workers` in pages of `page`, with a quota of 1,000 requests and no
/// `Sforce-Limit-Info` header: the guard has to read the limits itself.
fn without_the_limit_header(workers: u64, page: usize) -> SageConfig {
    SageConfig {
        api_quota: 1_000,
        limit_info_header: false,
        ..org(workers, page, page)
    }
}

#[tokio::test]
async fn without_the_limit_header_the_guard_reads_the_limits_before_the_run_and_stops_it() {
    let (s, err) = stopped_by_the_guard(without_the_limit_header(100, 10), 850).await;
    assert!(err.to_string().contains("850 of 1000"), "{err}");
    let stats = s.sim.stats();
    assert_eq!(stats.limits_requests, 1);
    assert_eq!(stats.records_served, 0, "no page before the guard said no");
}

#[tokio::test]
async fn without_the_limit_header_the_guard_counts_its_own_calls_and_stops_at_the_share() {
    // 650 before the run: allowed; 150 one-record pages later the run's own count is at 80%:
    // the limits are read again, confirm it, and the run stops before passing the share.
    let (s, err) = stopped_by_the_guard(without_the_limit_header(300, 1), 650).await;
    assert!(err.to_string().contains("800 of 1000"), "{err}");
    let stats = s.sim.stats();
    assert_eq!(
        stats.limits_requests, 2,
        "before the run, then when its own calls reached the share"
    );
    assert_eq!(stats.records_served, 150);
    assert_eq!(stats.api_usage, 800, "not past 80%");
    assert!(s.checkpoint(ID).await.is_some(), "checkpoint kept");
}

#[tokio::test]
async fn without_the_limit_header_the_guard_counts_every_attempt_of_a_page() {
    let mut sim = without_the_limit_header(300, 1);
    // The first page takes four attempts: the org says three are too many long requests at
    // once (which it does not count against the quota).
    sim.faults.concurrent_limit_calls = 3;
    let (s, err) = stopped_by_the_guard(sim, 650).await;
    assert!(err.to_string().contains("800 of 1000"), "{err}");
    let stats = s.sim.stats();
    assert_eq!(stats.status_counts.get(&403), Some(&3), "{stats:?}");
    // With the retries, the run's own count reaches 80% three pages early: the limits are read
    // then (the org says 797), and again three pages later, at the share.
    assert_eq!(
        stats.limits_requests, 3,
        "before the run, when the count with the retries reached the share, at the share"
    );
    assert_eq!(stats.records_served, 150);
    assert_eq!(stats.api_usage, 800, "not past 80%");
}

#[tokio::test]
async fn without_the_limit_header_the_guard_reads_the_limits_again_every_few_hundred_pages() {
    let pages = peoplesync_extractor::quota::LIMITS_EVERY;
    // Read before the run, after LIMITS_EVERY pages, and when the count reaches 80%.
    let (s, _) = stopped_by_the_guard(
        without_the_limit_header(2 * pages, 1),
        800 - pages - pages / 2,
    )
    .await;
    let stats = s.sim.stats();
    assert_eq!(
        stats.limits_requests, 3,
        "before, every LIMITS_EVERY pages, at the share"
    );
    assert_eq!(stats.records_served, pages + pages / 2);
    assert_eq!(stats.api_usage, 800);
}

#[tokio::test]
async fn the_concurrent_request_limit_backs_off_and_the_run_completes() {
    let s = setup(SageConfig {
        faults: SageFaults {
            concurrent_limit_calls: 3,
            ..SageFaults::default()
        },
        ..org(200, 50, 50)
    })
    .await;
    let summary = s
        .extraction(ID)
        .run_full("test", CancellationToken::new())
        .await
        .expect("the run goes on after backing off");
    assert_eq!(summary.published, 200);
    assert_eq!(s.sim.stats().status_counts.get(&403), Some(&3));
    assert_each_worker_once(&drain_workers(&s.bus, ID).await, 200, &summary.run_id);
}
