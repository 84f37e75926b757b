//! What landed in Oomnitza, against a simulator that applies bulk records asynchronously as
//! the published contract says: records accepted and then failed inside Oomnitza are
//! dead-lettered with Oomnitza's reason and sent again once the cause is gone; an
//! administrator's cancel stops the posts and the next run loads everything; users read back
//! in pages shorter than asked are all found, and by key when Oomnitza ignores `skip`; a mapped
//! field id
//! the tenant does not have pauses the integration instead of flooding Oomnitza; users a tenant
//! stores with lower-case e-mails are confirmed. Every run
//! checks the invariant published = written (confirmed) + unchanged + filtered + dead-lettered
//! + canceled (+ stale).

use std::time::Duration;

use bytes::Bytes;
use peoplesync_bus::pause::Pauses;
use peoplesync_bus::{FinalizeState, RunRecord, Runs, VerifyState, dlq};
use peoplesync_core::{IntegrationConfig, Preference};
use peoplesync_sims::oomnitza::{OomnitzaFaults, ValidationRule};
use peoplesync_testkit::wait_for;
use serde_json::json;

use peoplesync_testkit::stack::{Deployment, QUICK, assert_accounted, deployment};

/// Waits (up to a minute) for the integration's pause flag to say paused; returns it.
async fn paused(pauses: &Pauses, what: &str) -> peoplesync_bus::PauseFlag {
    wait_for(what, Duration::from_secs(60), || async {
        pauses
            .get("sage-people")
            .await
            .ok()
            .flatten()
            .filter(|f| f.paused)
    })
    .await
}

/// Waits (up to a minute) until `replica` has claimed the check of run `run_id`.
async fn claimed_by(runs: &Runs, run_id: &str, replica: &str) {
    wait_for(
        &format!("{replica} to claim the check"),
        Duration::from_secs(60),
        || async {
            let (record, _) = runs.get("sage-people", run_id).await.ok()??;
            matches!(
                record.verification?.state,
                VerifyState::Claimed { by, .. } if by == replica
            )
            .then_some(())
        },
    )
    .await;
}

/// Makes Oomnitza fail, after accepting them, the records whose e-mail starts with a, b or c
/// (about a tenth), with `message` as the reason when given.
fn refuse_emails_a_to_c(d: &Deployment, message: Option<&str>) {
    d.oomnitza
        .set_validation_rules(vec![ValidationRule {
            field: "EMAIL".into(),
            pattern: "^[a-c]".into(),
            must_match: false,
            message: message.map(str::to_owned),
        }])
        .expect("rule");
}

/// Makes Oomnitza hold the records it accepts unprocessed until its faults are cleared.
fn hold_processing(d: &Deployment) {
    d.oomnitza.set_faults(OomnitzaFaults {
        processing_paused: true,
        ..OomnitzaFaults::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_failed_inside_oomnitza_are_dead_lettered_and_sent_again_once_fixed() {
    let d = deployment(400).await;
    // A tenant rule Oomnitza applies after accepting the batch: about a tenth of the e-mails.
    refuse_emails_a_to_c(
        &d,
        Some("e-mails starting with a, b or c are refused by a tenant rule"),
    );
    let _loader = d.loader_with("loader-1", QUICK);
    let first = d.run_to_end(Duration::from_secs(120)).await;
    let first_id = first.run_id.clone();
    assert_accounted(&first);
    let verification = first.verification.clone().expect("the run was checked");
    assert!(
        matches!(verification.state, VerifyState::Verified { .. }),
        "{verification:?}"
    );
    let refused = verification.not_applied;
    assert!(refused > 0, "some records failed inside Oomnitza");
    let counts = first.counts.expect("counts");
    assert_eq!(verification.accepted, counts.written + refused);
    assert_eq!(
        counts.written,
        d.oomnitza.users().len() as u64,
        "written counts exactly the users Oomnitza holds"
    );
    let letters = d.dead_letters().await;
    let not_applied: Vec<_> = letters
        .iter()
        .filter(|l| l.letter.stage == dlq::STAGE_VERIFICATION)
        .collect();
    assert_eq!(not_applied.len() as u64, refused);
    assert!(
        not_applied
            .iter()
            .all(|l| l.letter.reason.contains("refused by a tenant rule")),
        "Oomnitza's own message is the reason: {:?}",
        not_applied.first().map(|l| &l.letter.reason)
    );
    // Records the mapping refused were reported to the portion as failed, as Oomnitza's own
    // connector does, besides the ones Oomnitza refused itself.
    let portion = d.oomnitza.portion(&first_id).expect("the portion");
    let mapping_refusals = counts.dead_lettered - refused;
    assert!(
        mapping_refusals > 0,
        "the generated org has workers without e-mail"
    );
    assert_eq!(portion.failed, refused + mapping_refusals, "{portion:?}");

    // The cause is removed in Oomnitza; nothing changed in Sage People. The next run sends
    // exactly the records that did not land (and reports the mapping's refusals again).
    d.oomnitza.set_validation_rules(Vec::new()).expect("rules");
    let posted = d.oomnitza.stats().bulk_records;
    let second = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&second);
    let counts2 = second.counts.expect("counts");
    assert_eq!(counts2.written, refused, "exactly the records that failed");
    let mapping_refusals = counts2.dead_lettered;
    assert_eq!(
        d.oomnitza.stats().bulk_records - posted,
        refused + mapping_refusals,
        "nothing else was sent"
    );
    assert_eq!(
        d.oomnitza.users().len() as u64,
        counts.written + refused,
        "every loadable worker is in Oomnitza now"
    );
    d.assert_users_match_sage();
}

/// Asserts that `run` was verified with every record confirmed and no verification letter.
async fn assert_every_record_confirmed(d: &Deployment, run: &RunRecord) {
    let verification = run.verification.clone().expect("the run was checked");
    assert!(
        matches!(verification.state, VerifyState::Verified { .. }),
        "{verification:?}"
    );
    assert_eq!(verification.not_applied, 0, "{verification:?}");
    assert!(
        d.dead_letters()
            .await
            .iter()
            .all(|l| l.letter.stage != dlq::STAGE_VERIFICATION),
        "no record was taken for not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_confirmed_when_oomnitza_pages_fewer_users_than_asked() {
    let d = deployment(300).await;
    // Oomnitza publishes no largest page of users; this tenant answers 40 at most, whatever
    // `limit` asks for. A reader that took a short page for the end would miss users it wrote.
    let mut behavior = d.oomnitza.behavior();
    behavior.max_page_size = Some(40);
    d.oomnitza.set_behavior(behavior).expect("behavior");
    let _loader = d.loader_with("loader-1", QUICK);
    let run = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&run);
    assert_every_record_confirmed(&d, &run).await;
    let counts = run.counts.expect("counts");
    assert_eq!(counts.written, d.oomnitza.users().len() as u64);
    d.assert_users_match_sage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_is_confirmed_when_oomnitza_ignores_skip() {
    // Over 5,000 records written: the check reads the whole tenant page by page. A gateway
    // before this tenant drops `skip`, so every page is the first one; the check must notice,
    // not read for ever, and confirm the records by key instead.
    let d = deployment(6_000).await;
    d.oomnitza.set_faults(OomnitzaFaults {
        users_skip_ignored: true,
        ..OomnitzaFaults::default()
    });
    let loader = d.loader("loader-1").config(QUICK).spawn_serving();
    let run = d.run_to_end(Duration::from_secs(180)).await;
    assert_accounted(&run);
    let counts = run.counts.expect("counts");
    assert!(counts.written > 5_000, "{counts:?}");
    assert_every_record_confirmed(&d, &run).await;
    let warned = loader.warnings().into_iter().any(|w| {
        w["message"]
            .as_str()
            .is_some_and(|m| m.contains("ignoring `skip`"))
    });
    assert!(warned, "{:#?}", loader.warnings());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_stored_with_a_lower_case_email_are_confirmed_and_not_sent_again() {
    let d = deployment(40).await;
    // Oomnitza publishes neither whether it keeps the case of usernames and e-mails nor whether
    // its filters ignore case. This tenant stores them in lower case and filters exactly, so a
    // user written for `Ada@Example.com` is found only as `ada@example.com`.
    let mut behavior = d.oomnitza.behavior();
    behavior.lower_case_identities = true;
    d.oomnitza.set_behavior(behavior).expect("behavior");
    let (by_email, _) = d.expected();
    assert!(
        by_email.keys().any(|e| e.chars().any(char::is_uppercase)),
        "the org has e-mails with capitals"
    );
    let _loader = d.loader_with("loader-1", QUICK);
    let first = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&first);
    assert_every_record_confirmed(&d, &first).await;
    let second = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&second);
    assert_eq!(
        second.counts.expect("counts").written,
        0,
        "nothing is sent again: {second:?}"
    );
    assert_eq!(d.oomnitza.users().len(), by_email.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_user_holding_the_address_in_lower_case_does_not_hide_the_user_written() {
    // A tenant that matches exactly holds users an older version created with lower-cased
    // addresses; this run writes users with the addresses as Sage People holds them. Each
    // record is checked against the user holding its value as sent, not the stale one.
    let d = deployment(40).await;
    let (by_email, _) = d.expected();
    let mut stale = 0;
    for email in by_email
        .keys()
        .filter(|e| e.chars().any(char::is_uppercase))
    {
        let lower = email.to_lowercase();
        d.oomnitza.insert_user(
            json!({"USER": lower, "EMAIL": lower, "FIRST_NAME": "Stale", "PERMISSIONS_ID": "25"})
                .as_object()
                .cloned()
                .expect("an object"),
        );
        stale += 1;
    }
    assert!(stale > 0, "the org has e-mails with capitals");
    let _loader = d.loader_with("loader-1", QUICK);
    let run = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&run);
    assert_every_record_confirmed(&d, &run).await;
    assert_eq!(d.oomnitza.users().len(), by_email.len() + stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_only_record_without_a_user_is_sent_again_once_the_user_exists() {
    let d = deployment(30).await;
    let mut config = IntegrationConfig::default_for("sage-people");
    config.preference = Preference::UpdateOnly;
    d.put_config(&config).await;
    let _loader = d.loader_with("loader-1", QUICK);
    let first = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&first);
    let verification = first.verification.clone().expect("the run was checked");
    assert!(verification.accepted > 0, "{verification:?}");
    assert_eq!(verification.not_applied, 0, "{verification:?}");
    assert_eq!(
        first.counts.expect("counts").written,
        0,
        "skipped by preference"
    );
    assert!(d.oomnitza.users().is_empty(), "update only creates nobody");

    // Someone creates one of the workers in Oomnitza (single sign-on, say); nothing changes in
    // Sage People. The next run updates that user with the worker's fields.
    let (by_email, _) = d.expected();
    let (email, raw) = by_email.iter().next().expect("a worker with an e-mail");
    d.oomnitza.insert_user(
        json!({"USER": email, "EMAIL": email, "FIRST_NAME": "Placeholder", "PERMISSIONS_ID": "25"})
            .as_object()
            .cloned()
            .expect("an object"),
    );
    let second = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&second);
    assert_eq!(second.counts.expect("counts").written, 1, "{second:?}");
    let users = d.oomnitza.users();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].get("FIRST_NAME"),
        raw.get("firstName"),
        "the user now holds the worker's fields"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_be_verified_is_sent_again_by_the_next_run() {
    let d = deployment(200).await;
    // Oomnitza fails some of the run's records, and holds them longer than the loader waits.
    refuse_emails_a_to_c(&d, None);
    hold_processing(&d);
    let _loader = d.loader_with(
        "loader-1",
        &format!("{QUICK}\n[verify]\nprocessing_timeout_secs = 1\n"),
    );
    let first = d.run_to_end(Duration::from_secs(120)).await;
    let verification = first.verification.clone().expect("the run was checked");
    assert!(
        matches!(&verification.state, VerifyState::Unverified { reason, .. }
            if reason.contains("`verify.processing_timeout_secs`")),
        "the reason names the setting to raise: {verification:?}"
    );
    d.oomnitza.set_faults(OomnitzaFaults::default());
    d.oomnitza.wait_idle().await;
    let landed = d.oomnitza.users().len();
    d.oomnitza.set_validation_rules(Vec::new()).expect("rules");

    // Nothing changed in Sage People; the records that failed inside Oomnitza are not known
    // to the loader (the run could not be checked), so the next run sends the run's records
    // again, and everyone lands.
    let second = d.run_to_end(Duration::from_secs(120)).await;
    assert_accounted(&second);
    let counts = second.counts.expect("counts");
    assert!(
        d.oomnitza.users().len() > landed,
        "the records that failed landed: {landed} before, {counts:?}"
    );
    d.assert_users_match_sage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_log_oomnitza_refuses_to_show_ends_the_wait_at_once() {
    let d = deployment(100).await;
    hold_processing(&d);
    // A timeout far longer than the test waits: only giving up early ends the check in time.
    let _loader = d.loader_with(
        "loader-1",
        &format!("{QUICK}\n[verify]\nprocessing_timeout_secs = 3600\n"),
    );
    let run_id = d.extract_run();
    let bus = d.bus().await;
    let runs = bus.runs();
    claimed_by(&runs, &run_id, "loader-1").await;
    // The loader's user loses its rights: every read of the run log is refused (403).
    d.oomnitza.set_faults(OomnitzaFaults {
        forbidden: true,
        processing_paused: true,
        ..OomnitzaFaults::default()
    });
    let reason = wait_for("the check to give up", Duration::from_secs(60), || async {
        let (record, _) = runs.get("sage-people", &run_id).await.ok()??;
        match record.verification?.state {
            VerifyState::Unverified { reason, .. } => Some(reason),
            _ => None,
        }
    })
    .await;
    assert!(
        reason.contains("does not pass by waiting") && reason.contains("403"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_cancel_stops_the_posts_and_the_next_run_loads_everyone() {
    let d = deployment(20_000).await;
    d.oomnitza_latency(50);
    let _loader = d.loader_with("loader-1", QUICK);
    let run_id = d.extract_run();
    wait_for("the first writes", Duration::from_secs(60), || async {
        (d.oomnitza.stats().bulk_records >= 1_000).then_some(())
    })
    .await;
    d.oomnitza.cancel_portion(&run_id);
    let at_cancel = d.oomnitza.stats().bulk_records;
    let run = d
        .finalized("sage-people", &run_id, Duration::from_secs(180))
        .await;
    let after = d.oomnitza.stats().bulk_records - at_cancel;
    assert!(
        after < 1_000,
        "records posted after the cancel: {after} (the portion is read every 2 s)"
    );
    assert_accounted(&run);
    assert!(matches!(run.finalize, FinalizeState::Canceled { .. }));
    assert!(run.canceled.is_some());
    let counts = run.counts.expect("counts");
    assert_eq!(counts.written, 0);
    assert!(counts.canceled > 15_000, "{counts:?}");
    assert_eq!(
        d.oomnitza.stats().finalize_calls.get(&run_id),
        Some(&1),
        "finalized once, as Oomnitza's connector does after a cancel"
    );

    d.oomnitza.set_faults(OomnitzaFaults::default());
    let next = d.run_to_end(Duration::from_secs(180)).await;
    assert_accounted(&next);
    let counts = next.counts.expect("counts");
    assert_eq!(counts.unchanged, 0, "nothing is skipped as posted before");
    assert_eq!(counts.written, d.oomnitza.users().len() as u64);
    let (expected, _) = d.expected();
    assert_eq!(
        counts.written + counts.dead_lettered,
        next.expected(),
        "every worker loaded ({} with an e-mail)",
        expected.len()
    );
    d.assert_users_match_sage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_ids_pause_the_integration_naming_each_until_the_config_is_fixed() {
    let d = deployment(2_000).await;
    let http_port = peoplesync_testkit::free_port();
    let _loader = d.loader("loader-1").config(QUICK).http(http_port).spawn();
    let bus = d.bus().await;
    // Wait for the loader to seed the default config, then map a field id the tenant lacks.
    let store = bus.config_kv();
    let current = wait_for("the seeded config", Duration::from_secs(30), || async {
        store.entry("sage-people").await.ok().flatten()
    })
    .await;
    let text = String::from_utf8(current.value.to_vec()).unwrap();
    // Two ids the tenant lacks; the simulated tenant names only the first in a refusal.
    let unknown = "ABCDEF0123456789ABCDEF0123456789";
    let also_unknown = "FEDCBA9876543210FEDCBA9876543210";
    let broken = format!(
        "{text}\n[[mapping]]\nfield = \"{unknown}\"\nsource = \"City\"\n\
         [[mapping]]\nfield = \"{also_unknown}\"\nsource = \"Country\"\n"
    );
    let revision = store
        .update("sage-people", Bytes::from(broken), current.revision)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run_id = d.extract_run();

    let pauses = bus.pauses();
    let flag = paused(&pauses, "the refusal pause").await;
    let reason = flag.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(unknown) && reason.contains(also_unknown),
        "the reason names both fields, so one fix is enough: {reason}"
    );
    assert_eq!(flag.refused_config_revision, Some(revision));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = d.oomnitza.stats().bulk_requests;
    assert!(requests <= 50, "no flood of requests: {requests}");
    d.assert_only_pipeline_letters("no record is dead-lettered for the configuration")
        .await;
    assert!(d.oomnitza.users().is_empty());
    // The replica stays ready (its control plane must answer) and says why it is not loading.
    let readyz: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{http_port}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["ready"], true, "{readyz}");
    let note = readyz["notes"]["integration sage-people"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.contains(unknown),
        "/readyz names the refused field: {readyz}"
    );

    // The operator fixes the config: loading resumes and the run completes.
    store
        .update("sage-people", Bytes::from(text), revision)
        .await
        .unwrap();
    let run = d
        .finalized("sage-people", &run_id, Duration::from_secs(180))
        .await;
    assert_accounted(&run);
    let counts = run.counts.expect("counts");
    assert_eq!(counts.written, d.oomnitza.users().len() as u64);
    assert!(counts.written > 1_500, "{counts:?}");
    let flag = pauses.get("sage-people").await.unwrap().expect("flag");
    assert!(!flag.paused, "resumed by the new config: {flag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_left_by_a_killed_replica_is_finished_by_another_once() {
    let d = deployment(300).await;
    refuse_emails_a_to_c(&d, None);
    // Oomnitza holds the records unprocessed: the run is finalized and its check waits.
    hold_processing(&d);
    let mut first = d.loader_with("loader-1", QUICK);
    let run_id = d.extract_run();
    let bus = d.bus().await;
    let runs = bus.runs();
    claimed_by(&runs, &run_id, "loader-1").await;
    first.kill();
    // As if the claim had run out: another replica takes the check over.
    let long_ago = (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339();
    runs.update("sage-people", &run_id, |record| {
        if let Some(v) = record.verification.as_mut() {
            v.state = VerifyState::Claimed {
                by: "loader-1".into(),
                at: long_ago.clone(),
            };
        }
        true
    })
    .await
    .unwrap();
    d.oomnitza.set_faults(OomnitzaFaults::default());
    let _second = d.loader_with("loader-2", QUICK);
    let run = d
        .finalized("sage-people", &run_id, Duration::from_secs(120))
        .await;
    assert_accounted(&run);
    let verification = run.verification.clone().expect("checked");
    assert!(
        matches!(&verification.state, VerifyState::Verified { by, .. } if by == "loader-2"),
        "{verification:?}"
    );
    let counts = run.counts.expect("counts");
    assert_eq!(counts.written, d.oomnitza.users().len() as u64);
    assert!(verification.not_applied > 0);
    let letters = d.dead_letters().await;
    let not_applied = letters
        .iter()
        .filter(|l| l.letter.stage == dlq::STAGE_VERIFICATION)
        .count() as u64;
    assert_eq!(
        not_applied, verification.not_applied,
        "one letter per record"
    );
    assert_eq!(d.oomnitza.stats().finalize_calls.get(&run_id), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_starting_with_an_unknown_field_id_pauses_the_integration_before_loading() {
    let d = deployment(50).await;
    let unknown = "0123456789ABCDEF0123456789ABCDEF";
    let text = format!(
        "{}\n[[mapping]]\nfield = \"{unknown}\"\nsource = \"City\"\n",
        peoplesync_core::IntegrationConfig::default_for("sage-people").to_toml()
    );
    let path = d.dir.path().join("sage-people.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    let _loader = d.loader("loader-1").args(&["--integration", &path]).spawn();
    let bus = d.bus().await;
    let pauses = bus.pauses();
    let flag = paused(&pauses, "the pause at start").await;
    let reason = flag.reason.unwrap_or_default();
    assert!(reason.contains(unknown), "{reason}");
    assert!(flag.refused_config_revision.is_some());
    let stats = d.oomnitza.stats();
    assert_eq!(stats.bulk_records, 0, "nothing loaded, only checked");
    assert!(stats.bulk_requests <= 1, "one refused test run: {stats:?}");
    assert!(d.oomnitza.users().is_empty());
}
