//! One worker at a time over the control plane: preview, sync now, and pause flags and held
//! removals with their approval.

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_verdict_the_record_and_how_it_differs_from_oomnitza() {
    let stack = Stack::with_workers(20).await;
    let mut client = stack.client().await;
    let (with_email, without_email) = stack.workers_by_email();
    let index = with_email[0];
    let id = generate::worker_id(index);
    let email = stack.email_of(index);

    // Oomnitza already has the user, with another position and no first name.
    let mut user = serde_json::Map::new();
    user.insert("USER".into(), json!(email));
    user.insert("EMAIL".into(), json!(email));
    user.insert("POSITION".into(), json!("Chief Tester"));
    stack.oomnitza.insert_user(user);

    let base = client.clone();
    let preview = move |worker_id: String| {
        let client = base.clone();
        async move {
            once_the_extractor_answers(&client, |mut client| {
                let worker_id = worker_id.clone();
                async move { preview_worker(&mut client, worker_id).await }
            })
            .await
        }
    };

    let shown = preview(id.clone()).await.unwrap();
    assert_eq!(shown.verdict(), pb::Verdict::Load);
    let record: Value = serde_json::from_str(&shown.record_json).unwrap();
    assert_eq!(record["EMAIL"], json!(email));
    assert_eq!(record["PERMISSIONS_ID"], json!("25"));
    assert_eq!(shown.sync_key, "EMAIL");
    assert_eq!(shown.sync_key_value, email);
    assert!(shown.user_exists, "{}", shown.oomnitza_error);
    let change = |field: &str| {
        shown
            .diff
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no diff of {field}"))
            .change()
    };
    assert_eq!(change("EMAIL"), pb::Change::Unchanged);
    assert_eq!(change("POSITION"), pb::Change::Modified);
    assert_eq!(change("FIRST_NAME"), pb::Change::Added);
    let position = shown.diff.iter().find(|d| d.field == "POSITION").unwrap();
    assert_eq!(position.attribute, "position");
    assert_eq!(position.current_json, "\"Chief Tester\"");
    assert!(
        shown
            .fields
            .iter()
            .any(|f| f.field == "EMAIL" && f.sync_key && f.required)
    );
    assert!(
        stack.oomnitza.users().len() == 1,
        "a preview writes nothing"
    );

    // Oomnitza holds another worker's address in lower case (it does not publish whether it
    // keeps the case) where Sage People has capitals: the user is found, and the address is
    // not shown as a change.
    let other = generate::worker_id(with_email[1]);
    stack
        .sage
        .patch_worker(&other, json!({"emailAddress": "Preview.Case@Example.com"}));
    let mut lower = serde_json::Map::new();
    lower.insert("USER".into(), json!("preview.case@example.com"));
    lower.insert("EMAIL".into(), json!("preview.case@example.com"));
    stack.oomnitza.insert_user(lower);
    let cased = preview(other).await.unwrap();
    assert_eq!(cased.sync_key_value, "Preview.Case@Example.com");
    assert!(cased.user_exists, "{}", cased.oomnitza_error);
    for field in ["USER", "EMAIL"] {
        let diff = cased.diff.iter().find(|d| d.field == field).unwrap();
        assert_eq!(diff.change(), pb::Change::Unchanged, "{diff:?}");
    }

    // A worker without an e-mail would be dead-lettered, and the preview says why.
    if let Some(&index) = without_email.first() {
        let shown = preview(generate::worker_id(index)).await.unwrap();
        assert_eq!(shown.verdict(), pb::Verdict::Unloadable);
        assert!(
            shown.reason.contains("USER") || shown.reason.contains("EMAIL"),
            "{}",
            shown.reason
        );
    }

    // A filter that excludes the worker is shown with its reason.
    let stored = get_config(&mut client).await;
    let filtered = stored.toml.replace(
        "[filter]\nmode = \"always\"",
        "[filter]\nmode = \"if_conditions\"\ncondition = \"worker.region == 'Atlantis'\"",
    );
    assert_ne!(filtered, stored.toml);
    put_config(&mut client, filtered, stored.revision)
        .await
        .unwrap();
    let shown = preview(id).await.unwrap();
    assert_eq!(shown.verdict(), pb::Verdict::Filtered);
    assert!(shown.reason.contains("Atlantis"), "{}", shown.reason);
    assert!(shown.record_json.is_empty());

    let status = preview(generate::worker_id(999_999)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_is_synced_now_and_pause_flags_and_held_removals_are_handled() {
    let workers = 40;
    let stack = Stack::with_workers(workers).await;
    let mut client = stack.client().await;
    let (with_email, _) = stack.workers_by_email();

    // SyncWorker: one worker, its own run, loaded now.
    let index = with_email[1];
    let email = stack.email_of(index);
    let synced = once_the_extractor_answers(&client, |mut client| async move {
        sync_worker(&mut client, generate::worker_id(index)).await
    })
    .await
    .unwrap();
    let run = watch_to_end(&mut client, &synced.run_id).await;
    let last = run.last().unwrap();
    assert!(!last.full);
    assert_eq!(last.published, 1);
    assert_eq!(counts(last).written, 1);
    assert_eq!(stack.stored_emails(), [email]);
    let status = sync_worker(&mut client, generate::worker_id(999_999))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Pause and Resume write the flag every loader replica watches.
    let paused = client
        .pause(pb::PauseRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
            reason: "Oomnitza maintenance".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    assert_eq!(paused.by, "ops");
    let pauses = stack.bus().await.pauses();
    let flag = pauses.get(INTEGRATION).await.unwrap().unwrap();
    assert!(flag.paused);
    assert_eq!(flag.reason.as_deref(), Some("Oomnitza maintenance"));
    let config = get_config(&mut client).await;
    assert!(config.pause.unwrap().paused);
    let resumed = client
        .resume(pb::ResumeRequest {
            integration_id: INTEGRATION.into(),
            by: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    assert!(resumed.by.starts_with("grpc "), "{}", resumed.by);
    assert!(!pauses.is_paused(INTEGRATION).await.unwrap());

    // A full run lists every worker; then a tenth of them leave Sage People, which is more
    // than the extractor removes without approval, so the second run holds the removals.
    let first = trigger(&mut client).await;
    watch_to_end(&mut client, &first.run_id).await;
    // Only workers employed at the first run can leave (those who had left already are not in
    // its list).
    let today = chrono::Utc::now().date_naive();
    let leaving: Vec<String> = (0..workers)
        .map(generate::worker_id)
        .filter(|id| {
            let raw = stack.sage.worker(id).unwrap();
            let worker = peoplesync_core::Worker::from_raw(&raw).unwrap();
            peoplesync_core::leavers::ended(&worker, today).is_none()
        })
        .take((workers / 10) as usize)
        .collect();
    for id in &leaving {
        stack.sage.remove_worker(id);
    }
    let second = trigger(&mut client).await;
    let held = watch_to_end(&mut client, &second.run_id).await;
    assert_eq!(held.last().unwrap().removed, 0, "removals are held");
    assert_eq!(held.last().unwrap().removals_held, leaving.len() as u64);
    let status = status_of(&mut client).await;
    assert_eq!(status.removals_held, leaving.len() as u64);
    assert_eq!(status.runs_holding_removals, vec![second.run_id.clone()]);
    let listed = latest_leavers(&mut client, true).await.unwrap();
    assert_eq!(listed.run_id, second.run_id);
    assert_eq!(listed.held_count, leaving.len() as u64);
    let mut held_ids: Vec<String> = listed.leavers.iter().map(|l| l.worker_id.clone()).collect();
    held_ids.sort();
    let mut expected = leaving.clone();
    expected.sort();
    assert_eq!(held_ids, expected);
    assert!(
        listed
            .leavers
            .iter()
            .all(|l| l.reason == "removed" && l.action == "held")
    );
    let cli = syncctl(&stack, &["leavers", "--held", "-o", "json"]).json();
    assert_eq!(cli["held"], leaving.len());
    assert_eq!(cli["run_id"], second.run_id.as_str());
    let text = syncctl(&stack, &["leavers", "--held"]).stdout;
    let heading = format!("{} leavers of run {} held", leaving.len(), second.run_id);
    assert!(text.starts_with(&heading), "{text}");
    let released = client
        .approve_removals(pb::ApproveRemovalsRequest {
            integration_id: INTEGRATION.into(),
            run_id: second.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, leaving.len() as u64);
    let after = status_of(&mut client).await;
    assert_eq!(
        after.removals_held, 0,
        "approved removals are no longer held"
    );
    // The loaders handle them as leavers (action none by default: counted and reported).
    let report = wait_for(
        "the released leavers' report",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let count = leaving.len();
            async move {
                let reply = latest_leavers(&mut client, false).await.ok()?;
                (reply.leavers.len() == count).then_some(reply)
            }
        },
    )
    .await;
    assert_ne!(
        report.run_id, second.run_id,
        "reported under the release run"
    );
    let cli = syncctl(&stack, &["leavers", "-o", "json"]).json();
    assert_eq!(cli["run_id"], report.run_id.as_str());
    assert_eq!(cli["count"], leaving.len());
    assert!(
        report
            .leavers
            .iter()
            .all(|l| l.action == "none" || l.action == "not_found")
    );
    let status = client
        .approve_removals(pb::ApproveRemovalsRequest {
            integration_id: INTEGRATION.into(),
            run_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
