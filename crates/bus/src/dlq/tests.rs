use super::*;

#[test]
fn headers_round_trip_and_stay_on_one_line() {
    let letter = DeadLetter {
        integration: "acme".into(),
        run_id: "r1".into(),
        worker_id: "w1".into(),
        reason: "refused:\nEMAIL not an e-mail".into(),
        stage: "oomnitza".into(),
        http_status: Some(422),
        body_excerpt: Some("{\"errors\":\r\n[1]}".into()),
        attempts: 2,
        original_subject: "peoplesync.acme.workers".into(),
    };
    let back = DeadLetter::from_headers(&letter.headers());
    assert_eq!(back.reason, "refused: EMAIL not an e-mail");
    assert_eq!(back.http_status, Some(422));
    assert_eq!(back.body_excerpt.as_deref(), Some("{\"errors\":  [1]}"));
    assert_eq!(back.attempts, 2);
    assert_eq!(back.worker_id, "w1");
}

#[test]
fn letters_of_earlier_versions_read_as_seen_once_in_their_own_run() {
    let letter = DeadLetter {
        run_id: "r1".into(),
        ..Default::default()
    };
    let seen = Seen::from_headers(&letter.headers(), "r1", "2025-05-01T02:00:00Z");
    assert_eq!(seen.runs, 1);
    assert_eq!(seen.first_run_id, "r1");
    assert_eq!(seen.first_at, "2025-05-01T02:00:00Z");
    assert!(seen.includes("r1") && !seen.includes("r2"));
}

#[test]
fn counts_round_trip_and_remember_only_the_latest_runs() {
    let mut seen = Seen {
        runs: 1,
        first_run_id: "r0".into(),
        first_at: "2025-05-01T02:00:00Z".into(),
        recent_runs: vec!["r0".into()],
    };
    for run in 1..=RECENT_RUNS_KEPT + 3 {
        seen = seen.next(&format!("r{run}"));
    }
    assert_eq!(seen.runs, RECENT_RUNS_KEPT as u64 + 4);
    assert_eq!(seen.recent_runs.len(), RECENT_RUNS_KEPT);
    assert_eq!(seen.recent_runs.first().map(String::as_str), Some("r4"));
    assert!(seen.includes(&format!("r{}", RECENT_RUNS_KEPT + 3)));
    let mut headers = HeaderMap::new();
    seen.write(&mut headers);
    assert_eq!(Seen::from_headers(&headers, "ignored", "ignored"), seen);
}

#[test]
fn the_key_is_the_same_in_every_run_and_differs_by_worker_stage_and_reason() {
    let letter = |run: &str, worker: &str, stage: &str, reason: &str| DeadLetter {
        integration: "acme".into(),
        run_id: run.into(),
        worker_id: worker.into(),
        stage: stage.into(),
        reason: reason.into(),
        attempts: 1,
        ..Default::default()
    };
    let key = letter_key(&letter("r1", "w1", "pipeline", "EMAIL is empty"));
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        key,
        letter_key(&letter("r2", "w1", "pipeline", "EMAIL is empty"))
    );
    for other in [
        letter("r1", "w2", "pipeline", "EMAIL is empty"),
        letter("r1", "w1", "oomnitza", "EMAIL is empty"),
        letter("r1", "w1", "pipeline", "USER is empty"),
        // The separator keeps parts from running into each other.
        letter("r1", "w1p", "ipeline", "EMAIL is empty"),
    ] {
        assert_ne!(key, letter_key(&other));
    }
}
