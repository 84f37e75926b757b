//! `syncctl check`: a healthy stack passes line by line; each misconfiguration is named with
//! how to fix it; no extractor is unreachable, not misconfigured; without NATS it checks what
//! it can reach and says what it did not check.

use super::*;

/// `syncctl check --output json`, once the extractor answers commands (until then the Sage
/// People side is reported unreachable as a whole).
async fn check(stack: &Stack) -> (Ran, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ran = syncctl(stack, &["check", "--output", "json"]);
        let report = ran.json();
        let extractor_missing = report["checks"]
            .as_array()
            .is_some_and(|checks| checks.iter().any(|c| c["name"] == "sage_people"));
        if !extractor_missing || tokio::time::Instant::now() >= deadline {
            return (ran, report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The check line `name` of a report.
fn check_line<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Asserts that check `name` failed as `outcome`, naming every one of `hints`.
fn assert_check(report: &Value, name: &str, outcome: &str, hints: &[&str]) {
    let line = check_line(report, name);
    assert_eq!(line["outcome"], outcome, "{name}: {report:#}");
    let detail = line["detail"].as_str().unwrap_or_default();
    for hint in hints {
        assert!(
            detail.contains(hint),
            "{name} should mention {hint:?}: {detail}"
        );
    }
}

/// Starts a stack with `options` and runs `syncctl check`, which must exit 7
/// (misconfigured); returns its report.
async fn misconfigured(options: Options) -> Value {
    let stack = Stack::start(options).await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 7, "{report:#}");
    report
}

/// `syncctl integration put - --force` of `text`, which must be refused; returns its stderr.
fn put_refused(stack: &Stack, text: &str) -> String {
    let stored = syncctl_stdin(stack, &["integration", "put", "-", "--force"], text);
    assert_ne!(stored.code, 0, "{}", stored.stdout);
    stored.stderr
}

/// Stores `text` as the integration config without validation, as an older peoplesync (or a
/// hand edit in KV) could have.
async fn store_raw_config(stack: &Stack, text: &str) {
    stack
        .bus()
        .await
        .config_kv()
        .put(INTEGRATION, text.to_owned().into_bytes().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_healthy_stack_line_by_line_and_exits_zero() {
    let stack = Stack::start(Options::default()).await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 0, "{report:#}\n{}", ran.stderr);
    assert_eq!(report["verdict"], "ready");
    for name in [
        "nats",
        "config",
        "sage_people.token",
        "sage_people.page",
        "sage_people.fields",
        "sage_people.quota",
        "oomnitza.token",
        "oomnitza.fields",
    ] {
        assert_check(&report, name, "passed", &[]);
    }
    assert_check(
        &report,
        "oomnitza.role",
        "not_checkable",
        &["publishes no read of user roles", "dead-letters"],
    );
    assert_eq!(
        stack.oomnitza.users().len(),
        0,
        "the field probe is a test run and creates no user"
    );
    let text = syncctl(&stack, &["check"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("ok   sage_people.token"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("ready"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_wrong_in_the_stored_config_and_how_to_fix_it() {
    let stack = Stack::start(Options::default()).await;
    let base = default_toml();
    let schedule = |text: &str| {
        let replaced = base.replacen("every = \"24h\"\nat = \"02:00\"", text, 1);
        assert_ne!(replaced, base, "the default schedule is every/at");
        replaced
    };
    let bad_cron = schedule("cron = \"0 25 * * *\"");
    let cases = [
        (
            "bad cron",
            bad_cron.clone(),
            "config",
            vec![
                "schedule.cron",
                "is not a cron expression",
                "syncctl integration put",
            ],
        ),
        (
            "bad time zone",
            schedule("at = \"02:00\"\ntimezone = \"Europe/Londres\""),
            "config",
            vec!["schedule.timezone", "IANA time zone"],
        ),
        (
            "bad filter",
            base.replacen(
                "credentials = ",
                "source_filter = \"workAddress.country equals 'France'\"\ncredentials = ",
                1,
            ),
            "config",
            vec!["source_filter", "character"],
        ),
        (
            "unknown custom field id",
            format!("{base}\n[[mapping]]\nfield = \"CUSTOM_BADGE_NUMBER\"\nsource = \"ID\"\n"),
            "oomnitza.fields",
            vec!["CUSTOM_BADGE_NUMBER", "create the custom field"],
        ),
        (
            "additional field not in the field set",
            base.replacen(
                "credentials = ",
                "additional_fields = [\"Badge Number\"]\ncredentials = ",
                1,
            ),
            "sage_people.fields",
            vec!["Badge Number", "Employee API Additional Fields"],
        ),
    ];
    for (case, text, name, hints) in cases {
        store_raw_config(&stack, &text).await;
        let (ran, report) = check(&stack).await;
        assert_eq!(ran.code, 7, "{case}: exit 7 (misconfigured): {report:#}");
        assert_eq!(report["verdict"], "misconfigured", "{case}");
        assert_check(&report, name, "misconfigured", &hints);
    }

    // A run refused for a configuration error exits 7 (misconfigured), not 5 (unavailable).
    store_raw_config(&stack, &bad_cron).await;
    let ran = syncctl(&stack, &["run"]);
    assert_eq!(ran.code, 7, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("schedule"), "{}", ran.stderr);
    // Such configs are refused when validated or stored through the control plane.
    let validated = syncctl_stdin(&stack, &["integration", "validate", "-"], &bad_cron);
    assert_eq!(
        validated.code, 2,
        "{}{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated.stdout.contains("schedule.cron"),
        "{}",
        validated.stdout
    );
    let refusal = put_refused(&stack, &bad_cron);
    assert!(refusal.contains("schedule.cron"), "{refusal}");
    // A field id Oomnitza does not know is refused when stored, naming it.
    let unknown_field =
        format!("{base}\n[[mapping]]\nfield = \"CUSTOM_BADGE_NUMBER\"\nsource = \"ID\"\n");
    let refusal = put_refused(&stack, &unknown_field);
    assert!(
        refusal.contains("CUSTOM_BADGE_NUMBER") && refusal.contains("not stored"),
        "{refusal}"
    );
    // So is one that only `[[leavers.set]]` writes: leavers would be refused one by one.
    let mut leavers = peoplesync_core::IntegrationConfig::default_for(INTEGRATION);
    leavers.leavers.action = peoplesync_core::LeaverAction::Update;
    leavers.leavers.set = vec![peoplesync_core::MappingEntry::new(
        "CUSTOM_LEFT_FLAG",
        peoplesync_core::MappingSource::Value(serde_json::json!("left")),
    )];
    let refusal = put_refused(&stack, &leavers.to_toml());
    assert!(
        refusal.contains("CUSTOM_LEFT_FLAG") && refusal.contains("not stored"),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_put_name_every_field_id_oomnitza_does_not_know_at_once() {
    // The simulator names one unknown id per refusal, as the published contract allows.
    let stack = Stack::start(Options::default()).await;
    let missing = ["CUSTOM_BADGE_NUMBER", "CUSTOM_COST_CENTRE", "CUSTOM_DESK"];
    let mut text = default_toml();
    for field in missing {
        text.push_str(&format!(
            "\n[[mapping]]\nfield = \"{field}\"\nsource = \"ID\"\n"
        ));
    }
    store_raw_config(&stack, &text).await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 7, "{report:#}");
    assert_check(&report, "oomnitza.fields", "misconfigured", &missing);
    let refusal = put_refused(&stack, &text);
    for field in missing {
        assert!(refusal.contains(field), "{field}: {refusal}");
    }
    assert_eq!(stack.oomnitza.users().len(), 0, "test runs apply nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_loading_is_paused_by_whom_and_why_without_failing() {
    let stack = Stack::start(Options::default()).await;
    let paused = syncctl(
        &stack,
        &["pause", "--reason", "Oomnitza maintenance window"],
    );
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 0, "a pause is not a failure: {report:#}");
    assert_check(
        &report,
        "paused",
        "waiting",
        &[
            "loading is paused",
            "Oomnitza maintenance window",
            "syncctl resume",
        ],
    );
    let text = syncctl(&stack, &["check"]);
    assert!(
        text.stdout.contains("WAIT paused") && text.stdout.contains("its loading waits"),
        "{}",
        text.stdout
    );
    // `integration get` says it too, beside the config (on stderr: stdout stays the TOML).
    let got = syncctl(&stack, &["integration", "get"]);
    assert!(
        got.stderr.contains("(paused by ") && got.stderr.contains(": Oomnitza maintenance window)"),
        "{}",
        got.stderr
    );
    let resumed = syncctl(&stack, &["resume"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let (_, report) = check(&stack).await;
    let names: Vec<&str> = report["checks"]
        .as_array()
        .map(|checks| checks.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!names.contains(&"paused"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_extractor_replica_that_answered_and_the_one_that_runs() {
    let stack = Stack::start(Options::default()).await;
    let bus = stack.bus().await;
    let holder = peoplesync_testkit::stack::lease_holder(&bus, INTEGRATION)
        .await
        .expect("the first extractor holds the lease");
    let standby = "standby-with-a-wrong-secret";
    let _standby = stack
        .extractor()
        .named(standby)
        .env("SAGE_PEOPLE_CLIENT_SECRET", "not-the-secret")
        .spawn();
    // Either replica may answer a check: ask until the standby has, saying each time who did.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut answers = (0, 0);
    while answers.1 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby never answered a check ({answers:?})"
        );
        let (_, report) = check(&stack).await;
        let token = check_line(&report, "sage_people.token");
        let detail = token["detail"].as_str().unwrap_or_default();
        if token["outcome"] == "misconfigured" {
            assert!(
                detail.contains(standby) && detail.contains("standby") && detail.contains(&holder),
                "{detail}"
            );
            answers.1 += 1;
        } else {
            assert_eq!(token["outcome"], "passed", "{report:#}");
            assert!(
                detail.contains(&holder) && detail.contains("holds the scheduler lease"),
                "{detail}"
            );
            answers.0 += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_wrong_sage_people_secret() {
    let report = misconfigured(Options {
        sage_secret: Some("not-the-secret".into()),
        ..Options::default()
    })
    .await;
    assert_check(
        &report,
        "sage_people.token",
        "misconfigured",
        &["consumer secret", "External Client App"],
    );
    assert_check(&report, "sage_people.page", "not_checkable", &[]);
    assert_check(&report, "oomnitza.token", "passed", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_field_permission() {
    let report = misconfigured(Options {
        sage_faults: SageFaults {
            config_error: Some("INACCESSIBLE_FIELD".into()),
            config_error_target: Some("fHCM2__Team_Member__c.fHCM2__Department__c".into()),
            ..SageFaults::default()
        },
        ..Options::default()
    })
    .await;
    assert_check(&report, "sage_people.token", "passed", &[]);
    for name in ["sage_people.page", "sage_people.fields"] {
        assert_check(
            &report,
            name,
            "misconfigured",
            &[
                "fHCM2__Team_Member__c.fHCM2__Department__c",
                "field-level security",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_wrong_oomnitza_token() {
    let report = misconfigured(Options {
        oomnitza_token: Some("not-the-token".into()),
        ..Options::default()
    })
    .await;
    assert_check(
        &report,
        "oomnitza.token",
        "misconfigured",
        &["OOMNITZA_API_TOKEN"],
    );
    assert_check(&report, "oomnitza.fields", "not_checkable", &[]);
    assert_check(&report, "sage_people.page", "passed", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_loader_takes_no_records() {
    let stack = Stack::start(Options {
        oomnitza_token: Some("not-the-token".into()),
        ..Options::default()
    })
    .await;
    let client = stack.client().await;
    // The loader's start-up check meets the refused token and closes its credential gate; its
    // announcement carries the /readyz note within seconds.
    let note = wait_for(
        "the loader's note in the status",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                let status = status_of(&mut client).await;
                let replica = status.loaders.iter().find(|l| l.name == "loader-1")?;
                replica.notes.get("oomnitza").cloned()
            }
        },
    )
    .await;
    assert!(
        note.starts_with("Credentials") && note.contains("OOMNITZA_API_TOKEN"),
        "{note}"
    );
    let ran = syncctl(&stack, &["status"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.contains("loader-1 (") && ran.stdout.contains("oomnitza: Credentials"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_an_extractor_is_unreachable_not_misconfigured() {
    let stack = Stack::without_extractor().await;
    let ran = syncctl(&stack, &["check", "--output", "json"]);
    let report = ran.json();
    assert_eq!(ran.code, 5, "{report:#}");
    assert_eq!(report["verdict"], "unreachable");
    assert_check(
        &report,
        "sage_people",
        "unreachable",
        &["no extractor is answering"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_nats_checks_oomnitza_alone_and_says_what_it_did_not_check() {
    // What is read through NATS (the config, the Sage People side asked of the extractor, the
    // pause flag) is not asked for: each would cost its timeout, or wait without end once the
    // loader's client has queued more than it holds, and the check would never answer.
    let mut stack = Stack::without_extractor().await;
    stack.d.nats.server().kill();
    let report = peoplesync_testkit::wait_for(
        "the loader to see NATS gone",
        Duration::from_secs(30),
        || async {
            let ran = syncctl(&stack, &["check", "--output", "json"]);
            let report = ran.json();
            (check_line(&report, "nats")["outcome"] == "unreachable").then_some((ran, report))
        },
    )
    .await;
    let (ran, report) = report;
    assert_eq!(ran.code, 5, "{report:#}");
    assert_eq!(report["verdict"], "unreachable");
    for name in ["config", "sage_people", "oomnitza.role", "oomnitza.fields"] {
        assert_check(&report, name, "not_checkable", &["read through NATS"]);
    }
    assert_eq!(check_line(&report, "oomnitza.token")["outcome"], "passed");
}
