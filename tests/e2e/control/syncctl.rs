//! `syncctl` as a process: exit codes scripts can tell apart, a run triggered and watched,
//! dead letters listed and replayed after a config fix, output cut short by its reader.

use peoplesync_testkit::{PROCESS_LIMIT, output_within};
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncctl_triggers_and_watches_a_run_then_lists_and_replays_its_dead_letters() {
    let workers = workers_with_missing_emails(2);
    let stack = Stack::with_workers(workers).await;
    let (with_email, without_email) = stack.workers_by_email();

    // Scripts can tell failures apart by exit code.
    assert_eq!(syncctl_with(&stack, None, &["runs"]).code, 3);
    assert_eq!(
        syncctl_with(&stack, Some("wrong-token-wrong"), &["runs"]).code,
        3
    );
    let missing = syncctl(&stack, &["runs", "get", "no-such-run"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(missing.stderr.contains("no-such-run"), "{}", missing.stderr);
    assert_eq!(syncctl(&stack, &["run", "--fail-on-dead-letters"]).code, 2);
    let unreachable = output_within(
        std::process::Command::new(peoplesync_testkit::bin_path("syncctl"))
            .args([
                "--url",
                &format!("http://127.0.0.1:{}", peoplesync_testkit::free_port()),
                "runs",
            ])
            .env("PEOPLESYNC_CONTROL_TOKEN", TOKEN),
        PROCESS_LIMIT,
    );
    assert_eq!(unreachable.status.code(), Some(5));
    // Inside a service's container PEOPLESYNC_INTEGRATION may list several integrations.
    let several: Ran = output_within(
        std::process::Command::new(peoplesync_testkit::bin_path("syncctl"))
            .args(["--url", &stack.url(), "runs"])
            .env("PEOPLESYNC_CONTROL_TOKEN", TOKEN)
            .env("PEOPLESYNC_INTEGRATION", "hr-uk,hr-us"),
        PROCESS_LIMIT,
    )
    .into();
    assert_eq!(several.code, 2, "{}", several.stderr);
    assert!(
        several.stderr.contains("names several") && several.stderr.contains("-i/--integration"),
        "{}",
        several.stderr
    );

    // Trigger and watch to completion (retried while the extractor is starting).
    let ran = wait_for("syncctl run --watch", Duration::from_secs(60), || async {
        let ran = syncctl(&stack, &["run", "--watch", "--output", "json"]);
        (ran.code != 5).then_some(ran)
    })
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let run = ran.json();
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run["done"], json!(true));
    assert_eq!(run["published"], json!(workers));
    assert_eq!(run["counts"]["written"], json!(with_email.len()));
    assert_eq!(run["counts"]["dead_lettered"], json!(without_email.len()));
    assert_eq!(run["pending"], json!(0));
    assert_eq!(run["outcome"], json!("succeeded_with_dead_letters"));
    let strict = syncctl(&stack, &["runs", "get", &run_id, "--fail-on-dead-letters"]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
    assert!(strict.stdout.contains("dead-lettered"), "{}", strict.stdout);
    let history = syncctl(&stack, &["runs", "-o", "json"]).json();
    assert_eq!(history[0]["run_id"], json!(run_id));

    // List the dead letters, fix the config, replay, and watch the replay run.
    let letters = syncctl(&stack, &["dlq", "list", "--run", &run_id, "-o", "json"]).json();
    assert_eq!(
        letters["letters"].as_array().unwrap().len(),
        without_email.len()
    );
    for letter in letters["letters"].as_array().unwrap() {
        assert_eq!(letter["runs_seen"], json!(1));
        assert_eq!(letter["first_run_id"], json!(run_id));
        assert_eq!(letter["first_seen"], letter["at"]);
    }
    let text = syncctl(&stack, &["dlq", "list"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("is empty"), "{}", text.stdout);
    assert!(
        text.stdout.contains("RUNS") && text.stdout.contains("FIRST SEEN"),
        "{}",
        text.stdout
    );
    let current = syncctl(&stack, &["integration", "get", "-o", "json"]).json();
    let revision = current["revision"].as_u64().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixed.toml");
    std::fs::write(&file, fixed_toml()).unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(syncctl(&stack, &["integration", "validate", file]).code, 0);
    assert_eq!(
        syncctl(&stack, &["integration", "put", file]).code,
        2,
        "a put names the revision it replaces"
    );
    let put = syncctl(
        &stack,
        &["integration", "put", file, "--revision", &revision],
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    let stale = syncctl(
        &stack,
        &["integration", "put", file, "--revision", &revision],
    );
    assert_eq!(stale.code, 6, "{}", stale.stderr);
    assert!(stale.stderr.contains("stale"), "{}", stale.stderr);

    let replay = syncctl(
        &stack,
        &["dlq", "replay", "--run", &run_id, "--watch", "-o", "json"],
    );
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let replayed = replay.json();
    assert_eq!(replayed["trigger"], json!("replay"));
    assert_eq!(replayed["counts"]["written"], json!(without_email.len()));
    let left = syncctl(&stack, &["dlq", "list", "-o", "json"]).json();
    assert!(left["letters"].as_array().unwrap().is_empty());
    assert_eq!(stack.stored_emails().len(), workers as usize);

    let completions = syncctl_with(&stack, None, &["completions", "bash"]);
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("syncctl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncctl_stops_quietly_when_the_reader_of_its_output_goes_away() {
    let stack = Stack::without_extractor().await;
    let closed = |args: &[&str]| {
        Syncctl::new(&stack.url())
            .token(Some(TOKEN))
            .run_with_stdout_closed(args)
    };
    for args in [
        &["completions", "bash"][..],
        &["dlq", "list", "--limit", "1000"],
        &["dlq", "summary", "-o", "json"],
        &["runs"],
        &["status"],
        &["integration", "get"],
        &["leavers", "-o", "json"],
        &["pause", "--reason", "pipe test"],
    ] {
        let ran = closed(args);
        assert_eq!(ran.code, 0, "syncctl {args:?}: {}", ran.stderr);
        assert!(
            !ran.stderr.contains("panicked"),
            "syncctl {args:?}: {}",
            ran.stderr
        );
    }
}
