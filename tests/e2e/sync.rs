//! One full sync through real NATS and both services.

use std::time::Duration;

use peoplesync_bus::{FinalizeState, dlq};
use peoplesync_sims::sage::SageConfig;

use peoplesync_testkit::stack::{Deployment, oomnitza_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_workers_arrive_in_oomnitza_and_the_portion_is_finalized_once() {
    let workers = 5_000;
    let sage_config = SageConfig {
        workers,
        ..SageConfig::default()
    };
    let deployment = Deployment::start(sage_config, oomnitza_config()).await;
    let _loader = deployment.loader("loader-1").spawn();

    let status = deployment.extract_once();
    assert!(status.success(), "sage-extractor --once failed: {status}");
    let run = deployment
        .finalized_run("sage-people", Duration::from_secs(120))
        .await;

    let mut without_email = deployment.assert_users_match_sage();
    let checked = deployment.oomnitza.users().len();
    assert!(
        !without_email.is_empty(),
        "the generator makes workers without e-mail"
    );

    // Every worker without an e-mail is accounted for: dead-lettered with the reason.
    let counts = run.counts.expect("final counts");
    assert_eq!(run.published, workers);
    assert_eq!(counts.total(), workers, "published = sum of outcomes");
    assert_eq!(counts.written, checked as u64);
    assert_eq!(counts.dead_lettered, without_email.len() as u64);
    let bus = deployment.bus().await;
    let (first, last, held) = dlq::sequence_range(&bus).await.unwrap();
    assert_eq!(held, without_email.len() as u64);
    let mut lettered = Vec::new();
    for sequence in first..=last {
        if let Some(letter) = dlq::get(&bus, sequence).await.unwrap() {
            assert!(
                letter.letter.reason.contains("EMAIL") || letter.letter.reason.contains("USER"),
                "reason names the missing field: {}",
                letter.letter.reason
            );
            lettered.push(letter.letter.worker_id);
        }
    }
    lettered.sort();
    without_email.sort();
    assert_eq!(lettered, without_email);

    assert!(matches!(run.finalize, FinalizeState::Finalized { .. }));
    let stats = deployment.oomnitza.stats();
    assert_eq!(
        stats.finalize_calls.get(&run.run_id),
        Some(&1),
        "finalized exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_too_large_for_nats_is_skipped_with_a_dead_letter_and_the_run_goes_on() {
    let d = peoplesync_testkit::stack::deployment(40).await;
    let (expected, _) = d.expected();
    let (_, raw) = expected.iter().next().expect("a worker");
    let id = raw["id"].as_str().expect("id").to_owned();
    // A 1.2 MB field: the event exceeds NATS's default 1 MiB payload.
    d.sage.patch_worker(
        &id,
        serde_json::json!({"hrDepartment": "x".repeat(1_200_000)}),
    );
    let _loader = d.loader_with("loader-1", peoplesync_testkit::stack::QUICK);
    let run_id = d.extract_run();
    let run = d
        .finalized("sage-people", &run_id, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(run.state, peoplesync_bus::RunState::Completed);
    assert_eq!(
        run.skipped, 1,
        "the large worker is skipped, the run goes on"
    );
    peoplesync_testkit::stack::assert_accounted(&run);
    let letters = d.dead_letters().await;
    let letter = letters
        .iter()
        .find(|l| l.letter.stage == "extractor")
        .expect("a dead letter for the large worker");
    assert_eq!(letter.letter.worker_id, id);
    assert!(
        letter.letter.reason.contains("bytes") && letter.letter.reason.contains(&id),
        "{}",
        letter.letter.reason
    );
    assert_eq!(
        d.oomnitza.users().len() as u64,
        run.counts.expect("counts").written,
        "every other worker loaded"
    );
}
