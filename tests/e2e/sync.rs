//! One full sync through real NATS and both services.

use std::collections::HashMap;
use std::time::Duration;

use peoplesync_bus::{FinalizeState, dlq};
use peoplesync_sims::generate;
use peoplesync_sims::sage::SageConfig;
use serde_json::Value;

use crate::harness::{Deployment, oomnitza_config};

fn text(raw: &Value, path: &[&str]) -> Option<String> {
    let mut node = raw;
    for key in path {
        node = node.get(key)?;
    }
    let s = node.as_str()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_workers_arrive_in_oomnitza_and_the_portion_is_finalized_once() {
    let workers = 5_000;
    let sage_config = SageConfig {
        workers,
        ..SageConfig::default()
    };
    let seed = sage_config.seed;
    let deployment = Deployment::start(sage_config, oomnitza_config()).await;
    let _loader = deployment.loader("loader-1", &[]);

    let status = deployment.extract_once();
    assert!(status.success(), "sage-extractor --once failed: {status}");
    let run = deployment
        .finalized_run("sage-people", Duration::from_secs(120))
        .await;

    let stored: HashMap<String, serde_json::Map<String, Value>> = deployment
        .oomnitza
        .users()
        .into_iter()
        .filter_map(|u| Some((u.get("EMAIL")?.as_str()?.to_owned(), u)))
        .collect();
    let mut without_email = Vec::new();
    let mut checked = 0;
    for index in 0..workers {
        let raw = generate::worker(seed, index);
        let id = text(&raw, &["id"]).expect("generated workers have ids");
        // Kept in the case Sage People holds it.
        let Some(email) = text(&raw, &["emailAddress"]) else {
            without_email.push(id);
            continue;
        };
        let user = stored
            .get(&email)
            .unwrap_or_else(|| panic!("worker {id} ({email}) is not in Oomnitza"));
        let field = |name: &str| user.get(name).and_then(Value::as_str).map(str::to_owned);
        assert_eq!(
            field("USER").as_deref(),
            Some(email.as_str()),
            "USER of {id}"
        );
        assert_eq!(
            field("FIRST_NAME"),
            text(&raw, &["firstName"]),
            "FIRST_NAME of {id}"
        );
        assert_eq!(
            field("LAST_NAME"),
            text(&raw, &["lastName"]),
            "LAST_NAME of {id}"
        );
        assert_eq!(
            field("POSITION"),
            text(&raw, &["currentEmployment", "jobTitle"]),
            "POSITION of {id}"
        );
        assert_eq!(
            field("PERMISSIONS_ID").as_deref(),
            Some("25"),
            "role of {id}"
        );
        checked += 1;
    }
    assert!(
        !without_email.is_empty(),
        "the generator makes workers without e-mail"
    );
    assert_eq!(
        stored.len(),
        checked,
        "no user beyond the workers with e-mail"
    );

    // Every worker without an e-mail is accounted for: dead-lettered with the reason.
    let counts = run.counts.expect("final counts");
    assert_eq!(run.published, workers);
    assert_eq!(counts.total(), workers, "published = sum of outcomes");
    assert_eq!(counts.written, checked as u64);
    assert_eq!(counts.dead_lettered, without_email.len() as u64);
    let bus = deployment.bus().await;
    let (first, last, held) = dlq::sequence_range(bus.jetstream()).await.unwrap();
    assert_eq!(held, without_email.len() as u64);
    let mut lettered = Vec::new();
    for sequence in first..=last {
        if let Some(letter) = dlq::get(bus.jetstream(), sequence).await.unwrap() {
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
    let d = crate::harness::deployment(40).await;
    let (expected, _) = d.expected();
    let (_, raw) = expected.iter().next().expect("a worker");
    let id = raw["id"].as_str().expect("id").to_owned();
    // A 1.2 MB field: the event exceeds NATS's default 1 MiB payload.
    d.sage.patch_worker(
        &id,
        serde_json::json!({"hrDepartment": "x".repeat(1_200_000)}),
    );
    let _loader = d.loader_with("loader-1", crate::harness::QUICK);
    let run_id = d.extract_run();
    let run = d
        .finalized("sage-people", &run_id, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(run.state, peoplesync_bus::RunState::Completed);
    assert_eq!(
        run.skipped, 1,
        "the large worker is skipped, the run goes on"
    );
    crate::harness::assert_accounted(&run);
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
