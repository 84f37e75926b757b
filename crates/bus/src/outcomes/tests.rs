use super::*;

fn recorded(len: usize) -> Recorded {
    Recorded {
        msg_id: "m".repeat(len),
        worker_id: String::new(),
        detail: None,
    }
}

#[test]
fn messages_stay_under_the_event_and_byte_limits() {
    let small: Vec<Recorded> = (0..2_500).map(|_| recorded(10)).collect();
    let sizes: Vec<usize> = chunks(&small).iter().map(|c| c.len()).collect();
    assert_eq!(sizes, [1_000, 1_000, 500]);
    let big: Vec<Recorded> = (0..5).map(|_| recorded(200_000)).collect();
    let sizes: Vec<usize> = chunks(&big).iter().map(|c| c.len()).collect();
    assert_eq!(sizes, [2, 2, 1], "at most 512 KiB a message");
    let huge = vec![recorded(900_000), recorded(10)];
    assert_eq!(
        chunks(&huge).len(),
        2,
        "an event larger than the limit stands alone"
    );
}

#[test]
fn written_lines_give_back_key_and_record() {
    let event = written_event(b"r1.w1\tw1\tacme.abc\t{\"EMAIL\":\"a\\tb\"}");
    assert_eq!(event.msg_id, "r1.w1");
    assert_eq!(event.worker_id, "w1");
    assert_eq!(event.applied_key, "acme.abc");
    assert_eq!(event.record_json, "{\"EMAIL\":\"a\\tb\"}");
    let old = written_event(b"r1.w2\tw2");
    assert_eq!(
        (old.applied_key.as_str(), old.record_json.as_str()),
        ("", "")
    );
}

#[test]
fn subjects_name_their_outcome_and_count() {
    assert_eq!(
        parse_subject("peoplesync.acme.outcomes.r1.written.100"),
        Some((Outcome::Written, 100))
    );
    assert_eq!(
        parse_subject("peoplesync.acme.outcomes.r1.dead_lettered.1"),
        Some((Outcome::DeadLettered, 1))
    );
    assert_eq!(
        parse_subject("peoplesync.acme.outcomes.r1.dead_lettered"),
        None,
        "a subject without its count is not an outcome"
    );
    assert_eq!(parse_subject("peoplesync.acme.outcomes.r1.bogus.3"), None);
}
