//! The Sage People checks: what the `check` command reports, and the readiness condition the
//! extractor keeps from them at start and whenever the integration config is stored.

use std::time::Duration;

use peoplesync_bus::control::{self, CheckState, SageChecked};
use peoplesync_core::IntegrationConfig;
use peoplesync_extractor::check;
use peoplesync_runtime::Readiness;
use peoplesync_sims::sage::SageConfig;
use peoplesync_testkit::wait_for;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn state(report: &SageChecked, name: &str) -> CheckState {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.state)
        .unwrap_or_else(|| panic!("no {name} in {report:?}"))
}

#[tokio::test]
async fn a_healthy_org_passes_every_sage_people_check() {
    let s = setup(org(30, 10, 10)).await;
    let report = check::sage(&s.extraction(ID)).await;
    for name in [
        check::TOKEN_CHECK,
        check::PAGE_CHECK,
        check::FIELDS_CHECK,
        check::QUOTA_CHECK,
    ] {
        assert_eq!(state(&report, name), CheckState::Passed, "{report:?}");
    }
}

#[tokio::test]
async fn a_sage_people_outage_is_reported_line_by_line_within_the_control_planes_wait() {
    let (s, config, secrets) = sage_people_down().await;
    let extraction = extraction(&s.bus, config, secrets, ID);
    // An answer later than the control plane's wait is never shown, whatever its lines say.
    let report = tokio::time::timeout(control::CHECK_WAIT, check::sage(&extraction))
        .await
        .expect("the check answers while the control plane still waits for it");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            check::TOKEN_CHECK,
            check::PAGE_CHECK,
            check::FIELDS_CHECK,
            check::QUOTA_CHECK
        ],
        "{report:?}"
    );
    // The outage is of the Employees API; the token endpoint still answers.
    assert_eq!(state(&report, check::TOKEN_CHECK), CheckState::Passed);
    let page = &report.checks[1];
    assert_eq!(page.state, CheckState::Unreachable, "{report:?}");
    assert!(page.detail.contains("503"), "{}", page.detail);
    assert!(page.detail.contains("attempts"), "{}", page.detail);
    assert_eq!(
        state(&report, check::FIELDS_CHECK),
        CheckState::NotCheckable
    );
    assert_eq!(state(&report, check::QUOTA_CHECK), CheckState::NotCheckable);
}

#[tokio::test]
async fn the_quota_check_needs_the_limits_resource_only_when_pages_carry_no_usage() {
    let refused = || peoplesync_sims::sage::SageFaults {
        limits_refused: Some("INSUFFICIENT_ACCESS".into()),
        ..Default::default()
    };
    let detail = |report: &SageChecked| {
        report
            .checks
            .iter()
            .find(|c| c.name == check::QUOTA_CHECK)
            .map(|c| c.detail.clone())
            .unwrap_or_default()
    };

    // Pages carry the usage: a refused limits resource does not matter to a run.
    let s = setup(SageConfig {
        faults: refused(),
        ..org(30, 10, 10)
    })
    .await;
    let report = check::sage(&s.extraction(ID)).await;
    assert_eq!(state(&report, check::QUOTA_CHECK), CheckState::Passed);
    assert_eq!(s.sim.stats().limits_requests, 0, "{report:?}");

    // No usage on the pages: the limits resource is read instead.
    let s = setup(SageConfig {
        limit_info_header: false,
        ..org(30, 10, 10)
    })
    .await;
    let report = check::sage(&s.extraction(ID)).await;
    assert_eq!(state(&report, check::QUOTA_CHECK), CheckState::Passed);
    assert!(detail(&report).contains("limits resource"), "{report:?}");

    // Neither: the user lacks the permission the limits resource needs, and is told which.
    let s = setup(SageConfig {
        limit_info_header: false,
        faults: refused(),
        ..org(30, 10, 10)
    })
    .await;
    let report = check::sage(&s.extraction(ID)).await;
    assert_eq!(state(&report, check::PAGE_CHECK), CheckState::Passed);
    assert_eq!(
        state(&report, check::QUOTA_CHECK),
        CheckState::Misconfigured,
        "{report:?}"
    );
    let detail = detail(&report);
    assert!(
        detail.contains("\"View Setup and Configuration\" user permission"),
        "{detail}"
    );
    assert!(!detail.contains("API Enabled"), "{detail}");
}

#[tokio::test]
async fn a_wrong_secret_makes_the_credentials_not_ready_until_a_stored_config_points_at_a_good_set()
{
    let s = setup(org(30, 10, 10)).await;
    let (mut config, _) = config(&s.sim, &[ID]);
    config
        .credentials
        .insert("good".into(), credential_set(&s.sim));
    let secrets = secrets(&[
        (secret_var("default", "CLIENT_SECRET"), "wrong"),
        (secret_var("good", "CLIENT_SECRET"), "sim-secret"),
    ]);
    let extraction = extraction(&s.bus, config, secrets, ID);
    let report = check::sage(&extraction).await;
    assert_eq!(
        state(&report, check::TOKEN_CHECK),
        CheckState::Misconfigured
    );
    assert_eq!(state(&report, check::PAGE_CHECK), CheckState::NotCheckable);

    let readiness = Readiness::new();
    let stop = CancellationToken::new();
    let name = check::readiness_name(ID);
    let checking = check::keep_checking(extraction, readiness.clone(), stop.clone());
    assert!(
        readiness.status().not_ready().contains(&name.as_str()),
        "not ready before the first check"
    );
    let refused_before = s.sim.stats().token_failures;
    let task = tokio::spawn(checking);
    let not_ready = || {
        let readiness = readiness.clone();
        let name = name.clone();
        move || readiness.status().not_ready().contains(&name.as_str())
    };
    let is_not_ready = not_ready();
    wait_for("the first check", Duration::from_secs(10), || async {
        is_not_ready().then_some(())
    })
    .await;
    // The task's first check asks for a token only once its config watch is made; once that
    // token is refused, a config stored now is seen. It reads with the good set.
    wait_for(
        "the task's first token request",
        Duration::from_secs(10),
        || async { (s.sim.stats().token_failures > refused_before).then_some(()) },
    )
    .await;
    let mut fixed = IntegrationConfig::default_for(ID);
    fixed.credentials = "good".into();
    put_integration(&s.bus, &fixed).await;
    let is_not_ready = not_ready();
    wait_for(
        "the re-check after the config was stored",
        Duration::from_secs(10),
        || async { (!is_not_ready()).then_some(()) },
    )
    .await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_client_credentials_grant_on_login_salesforce_com_names_the_my_domain_host() {
    let s = setup(SageConfig::default()).await;
    let (mut config, secrets) = config(&s.sim, &[ID]);
    if let Some(set) = config.credentials.get_mut("default") {
        set.login_url = "https://login.salesforce.com".into();
    }
    let report = check::sage(&extraction(&s.bus, config, secrets, ID)).await;
    let token = &report.checks[0];
    assert_eq!(token.state, CheckState::Misconfigured, "{report:?}");
    assert!(token.detail.contains("My Domain"), "{}", token.detail);
}

#[tokio::test]
async fn a_missing_field_permission_is_reported_but_is_not_a_credential_failure() {
    let s = setup(SageConfig {
        faults: peoplesync_sims::sage::SageFaults {
            config_error: Some("INACCESSIBLE_FIELD".into()),
            ..Default::default()
        },
        ..org(30, 10, 10)
    })
    .await;
    let extraction = s.extraction(ID);
    let report = check::sage(&extraction).await;
    assert_eq!(state(&report, check::TOKEN_CHECK), CheckState::Passed);
    assert_eq!(state(&report, check::PAGE_CHECK), CheckState::Misconfigured);
    assert_eq!(
        state(&report, check::FIELDS_CHECK),
        CheckState::Misconfigured
    );

    let readiness = Readiness::new();
    let stop = CancellationToken::new();
    let name = check::readiness_name(ID);
    let task = tokio::spawn(check::keep_checking(
        extraction,
        readiness.clone(),
        stop.clone(),
    ));
    wait_for("the first check", Duration::from_secs(10), || async {
        (!readiness.status().not_ready().contains(&name.as_str())).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}
