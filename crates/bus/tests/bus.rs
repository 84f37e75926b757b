//! The bus against a real nats-server: idempotent setup, dedup, pipelined publishing, exact
//! outcome counts under redelivery, compare-and-set run records, dead letters, and consumption
//! that survives a server restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Connecting: seed URLs, credentials and their refusals (one test binary for the crate).
#[path = "bus/connect.rs"]
mod connect;

/// TLS with a private CA and client certificates.
#[path = "bus/tls.rs"]
mod tls;

/// Publishing through a server restart.
#[path = "bus/publish.rs"]
mod publish;

/// Compare-and-set writes on a three-node cluster.
#[path = "bus/cluster.rs"]
mod cluster;

use std::time::Duration;

use bytes::Bytes;
use peoplesync_bus::{
    Bus, BusError, BusSettings, DeadLetter, FinalizeState, Outcome, Publisher, RunRecord, RunState,
    WorkStream, dlq, leavers, names, outcomes, seen,
};
use peoplesync_testkit::{NatsServer, wait_for};

async fn bus(nats: &NatsServer) -> Bus {
    Bus::connect(nats.url(), "bus-test", BusSettings::default())
        .await
        .expect("bus")
}

/// A nats-server of the test's own and a bus connected to it; the bus works as long as the
/// server is kept.
async fn started() -> (NatsServer, Bus) {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    (nats, bus)
}

/// How many messages stream `name` holds.
async fn messages_in(bus: &Bus, name: &str) -> u64 {
    let mut stream = bus.jetstream().get_stream(name).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Publishes worker event `i` of run-1 of acme with `payload`.
async fn publish_worker(
    publisher: &mut Publisher,
    i: u32,
    payload: String,
) -> Result<(), BusError> {
    publisher
        .publish(
            names::workers_subject("acme"),
            names::event_msg_id("run-1", &format!("w{i}")),
            Bytes::from(payload),
            None,
        )
        .await
}

/// Publishes one worker event of acme with dedup id `id` and waits until it is stored.
async fn publish_one(bus: &Bus, id: &str, payload: &'static [u8]) -> Result<(), BusError> {
    let mut publisher = bus.publisher(1);
    publisher
        .publish(
            names::workers_subject("acme"),
            id.to_owned(),
            Bytes::from_static(payload),
            None,
        )
        .await?;
    publisher.flush().await
}

#[tokio::test]
async fn setup_is_idempotent_across_replicas() {
    let nats = NatsServer::start();
    let (a, b) = tokio::join!(bus(&nats), bus(&nats));
    drop((a, b));
    let again = bus(&nats).await;
    assert!(again.prepare_loader_consumer("acme").await.is_ok());
    assert!(
        again.prepare_loader_consumer("acme").await.is_ok(),
        "binding twice is fine"
    );
}

#[tokio::test]
async fn the_topology_check_names_every_shared_stream_and_finds_one_deleted() {
    let (_nats, bus) = started().await;
    // The control plane checks the streams setup creates, the advisories stream included.
    for stream in bus.topology_streams() {
        assert!(
            bus.jetstream().get_stream(stream).await.is_ok(),
            "{stream} is created by setup"
        );
    }
    assert!(bus.topology_streams().contains(&names::ADVISORIES_STREAM));
    assert_eq!(bus.missing_streams().await, Vec::<String>::new());
    bus.jetstream()
        .delete_stream(names::ADVISORIES_STREAM)
        .await
        .unwrap();
    let missing = bus.missing_streams().await;
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with(names::ADVISORIES_STREAM),
        "{missing:?}"
    );
}

#[tokio::test]
async fn repeated_message_ids_are_stored_once() {
    let (_nats, bus) = started().await;
    let mut publisher = bus.publisher(16);
    for round in 0..2 {
        for i in 0..50 {
            publish_worker(&mut publisher, i, format!("round {round}"))
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    assert_eq!(publisher.stored(), 50);
    assert_eq!(publisher.duplicates(), 50);
    assert_eq!(messages_in(&bus, names::WORKERS_STREAM).await, 50);
}

#[tokio::test]
async fn outcome_counts_stay_exact_when_an_event_is_recorded_twice() {
    let (_nats, bus) = started().await;
    let mut recorder = bus.outcome_recorder(32);
    let id = |i: usize| names::event_msg_id("run-2", &format!("w{i}"));
    for i in 0..10 {
        let outcome = if i < 7 {
            Outcome::Written
        } else {
            Outcome::Filtered
        };
        recorder
            .record("acme", "run-2", &id(i), "w", outcome)
            .await
            .unwrap();
    }
    recorder.flush().await.unwrap();
    // Three events are redelivered (their acks were lost) and settle again, one differently.
    for i in [0, 1, 8] {
        recorder
            .record("acme", "run-2", &id(i), "w", Outcome::Unchanged)
            .await
            .unwrap();
    }
    recorder.flush().await.unwrap();
    let live = outcomes::count(&bus, "acme", "run-2").await.unwrap();
    assert_eq!(live.total(), 13, "live counts include the second recording");
    let counts = outcomes::exact_count(&bus, "acme", "run-2").await.unwrap();
    assert_eq!(counts.written, 7);
    assert_eq!(counts.filtered, 3);
    assert_eq!(counts.unchanged, 0, "each event keeps its first outcome");
    assert_eq!(counts.total(), 10);
    let other = outcomes::exact_count(&bus, "acme", "run-3").await.unwrap();
    assert_eq!(other.total(), 0);
    outcomes::purge(&bus, "acme", "run-2").await.unwrap();
    let purged = outcomes::count(&bus, "acme", "run-2").await.unwrap();
    assert_eq!(purged.total(), 0);
}

#[tokio::test]
async fn outcomes_are_grouped_per_run_and_kind() {
    let (_nats, bus) = started().await;
    let mut recorder = bus.outcome_recorder(4);
    // 2,500 events of one run: 2,000 written ones in two messages of 1,000 ids, 500 dead
    // letters in one; and one event of another run.
    for i in 0..2_500 {
        let outcome = if i % 5 == 0 {
            Outcome::DeadLettered
        } else {
            Outcome::Written
        };
        let id = names::event_msg_id("run-4", &format!("w{i}"));
        recorder
            .record("acme", "run-4", &id, &format!("w{i}"), outcome)
            .await
            .unwrap();
    }
    recorder
        .record("acme", "run-5", "run-5.w1", "w1", Outcome::Filtered)
        .await
        .unwrap();
    recorder.flush().await.unwrap();
    assert_eq!(messages_in(&bus, names::OUTCOMES_STREAM).await, 2 + 1 + 1);
    for counts in [
        outcomes::count(&bus, "acme", "run-4").await.unwrap(),
        outcomes::exact_count(&bus, "acme", "run-4").await.unwrap(),
    ] {
        assert_eq!(counts.written, 2_000);
        assert_eq!(counts.dead_lettered, 500);
        assert_eq!(counts.total(), 2_500);
    }
    let other = outcomes::exact_count(&bus, "acme", "run-5").await.unwrap();
    assert_eq!(other.filtered, 1);
    assert_eq!(other.total(), 1);
}

#[tokio::test]
async fn concurrent_run_updates_are_never_lost() {
    let (_nats, bus) = started().await;
    let runs = bus.runs();
    runs.create(&RunRecord::start("acme", "run-4", true, "manual"))
        .await
        .unwrap();
    assert!(
        runs.create(&RunRecord::start("acme", "run-4", true, "manual"))
            .await
            .is_err(),
        "a run id is created once"
    );
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let runs = runs.clone();
            tokio::spawn(async move {
                runs.update("acme", "run-4", |r| {
                    r.published += 1;
                    true
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (record, _) = runs.get("acme", "run-4").await.unwrap().unwrap();
    assert_eq!(record.published, 20);
    assert_eq!(record.state, RunState::Running);

    // Exactly one of several claimants wins a finalize claim.
    let claims: Vec<_> = (0..5)
        .map(|i| {
            let runs = runs.clone();
            tokio::spawn(async move {
                let mut won = false;
                runs.update("acme", "run-4", |r| {
                    won = r.finalize == FinalizeState::Pending;
                    if won {
                        r.finalize = FinalizeState::Claimed {
                            by: format!("replica-{i}"),
                            at: String::new(),
                        };
                    }
                    won
                })
                .await
                .unwrap();
                won
            })
        })
        .collect();
    let mut winners = 0;
    for claim in claims {
        winners += usize::from(claim.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(runs.list(Some("acme")).await.unwrap().len(), 1);
    assert!(runs.list(Some("other")).await.unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_keep_their_reason_and_payload() {
    let (_nats, bus) = started().await;
    let letter = DeadLetter {
        integration: "acme".into(),
        run_id: "run-5".into(),
        worker_id: "w9".into(),
        reason: "required field EMAIL is empty".into(),
        stage: "pipeline".into(),
        attempts: 1,
        original_subject: names::workers_subject("acme"),
        ..Default::default()
    };
    dlq::record(&bus, &letter, Bytes::from_static(b"event"))
        .await
        .unwrap();
    dlq::record(&bus, &letter, Bytes::from_static(b"event"))
        .await
        .unwrap();
    let (first, last, count) = dlq::sequence_range(&bus).await.unwrap();
    assert_eq!(
        (first, last, count),
        (1, 1, 1),
        "a dead letter is stored once"
    );
    let stored = dlq::get(&bus, 1).await.unwrap().unwrap();
    assert_eq!(stored.letter, letter);
    assert_eq!(stored.payload, Bytes::from_static(b"event"));
    assert!(dlq::get(&bus, 2).await.unwrap().is_none());
}

/// A letter of `worker` refused in `run` for `reason` at the pipeline stage.
fn refusal(run: &str, worker: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        integration: "acme".into(),
        run_id: run.into(),
        worker_id: worker.into(),
        reason: reason.into(),
        stage: "pipeline".into(),
        attempts: 1,
        original_subject: names::workers_subject("acme"),
        ..Default::default()
    }
}

/// Every dead letter of integration acme, oldest first.
async fn letters(bus: &Bus) -> Vec<peoplesync_bus::DeadLetterRecord> {
    let mut found = Vec::new();
    let mut next = 1;
    while let Some(record) = dlq::next(bus, "acme", next).await.unwrap() {
        next = record.sequence + 1;
        found.push(record);
    }
    found
}

const EMPTY_EMAIL: &str = "required field EMAIL is empty (mapped from source Email)";

/// Records that worker w1 was refused in `run` for an empty e-mail, with event `payload`.
async fn refuse_w1(bus: &Bus, run: &str, payload: &str) -> dlq::Recorded {
    let letter = refusal(run, "w1", EMPTY_EMAIL);
    dlq::record(bus, &letter, payload.to_owned().into())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_refused_for_the_same_reason_run_after_run_is_one_letter_counting_the_runs() {
    let (_nats, bus) = started().await;
    let first = refuse_w1(&bus, "run-1", "e1").await;
    assert!(
        matches!(first, dlq::Recorded::Stored { runs: 1, .. }),
        "{first:?}"
    );
    let first_at = letters(&bus).await[0].at.clone();
    // The same event again (redelivered after a crash): the run is already counted.
    let again = refuse_w1(&bus, "run-1", "e1").await;
    assert!(
        matches!(again, dlq::Recorded::AlreadyCounted { runs: 1, .. }),
        "{again:?}"
    );
    for (run, payload) in [("run-2", "e2"), ("run-3", "e3")] {
        refuse_w1(&bus, run, payload).await;
    }

    let held = letters(&bus).await;
    assert_eq!(held.len(), 1, "one letter, not one per run: {held:?}");
    let letter = &held[0];
    assert_eq!(letter.seen.runs, 3);
    assert_eq!(letter.seen.first_run_id, "run-1");
    assert_eq!(letter.seen.first_at, first_at);
    assert_eq!(letter.seen.recent_runs, ["run-1", "run-2", "run-3"]);
    assert_eq!(
        letter.letter.run_id, "run-3",
        "details are the latest run's"
    );
    assert_eq!(letter.payload, Bytes::from_static(b"e3"));
    assert_ne!(letter.at, first_at);
    let (_, _, count) = dlq::sequence_range(&bus).await.unwrap();
    assert_eq!(
        count, 1,
        "the earlier runs' letters are gone from the stream"
    );
    let by_sequence = dlq::get(&bus, letter.sequence).await.unwrap().unwrap();
    assert_eq!(by_sequence.seen, letter.seen);
}

#[tokio::test]
async fn another_reason_or_another_worker_is_another_letter() {
    let (_nats, bus) = started().await;
    for letter in [
        refusal("run-1", "w1", EMPTY_EMAIL),
        refusal("run-1", "w2", EMPTY_EMAIL),
        refusal("run-2", "w1", EMPTY_EMAIL),
        refusal("run-2", "w2", EMPTY_EMAIL),
        refusal(
            "run-3",
            "w1",
            "field POSITION: template `{{ x }}` failed: boom",
        ),
    ] {
        dlq::record(&bus, &letter, "e".into()).await.unwrap();
    }
    let held = letters(&bus).await;
    let summary: Vec<(&str, &str, u64)> = held
        .iter()
        .map(|l| {
            (
                l.letter.worker_id.as_str(),
                &l.letter.reason[..5],
                l.seen.runs,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("w1", "requi", 2), ("w2", "requi", 2), ("w1", "field", 1)]
    );
}

#[tokio::test]
async fn replicas_recording_the_same_letter_at_once_count_every_run_once() {
    let nats = NatsServer::start();
    let (a, b) = tokio::join!(bus(&nats), bus(&nats));
    record_the_same_letter_at_once(a, b).await;
}

/// Twelve runs refuse one worker, recorded by replicas `a` and `b` at once: each run is
/// written once, into one letter counting twelve runs.
async fn record_the_same_letter_at_once(a: Bus, b: Bus) {
    let mut tasks = Vec::new();
    // Twelve runs refuse the worker; each run's event reaches both replicas (a redelivery
    // racing the first delivery), all at the same time.
    for run in 0..12 {
        for replica in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                let letter = refusal(&format!("run-{run:02}"), "w1", EMPTY_EMAIL);
                dlq::record(&replica, &letter, "e".into()).await
            }));
        }
    }
    let mut stored = 0;
    for task in tasks {
        if let dlq::Recorded::Stored { .. } = task.await.unwrap().unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, 12, "each run is written once");
    let held = letters(&a).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].seen.runs, 12);
    let (_, _, count) = dlq::sequence_range(&a).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_removed_letter_starts_again_at_one_run() {
    let (_nats, bus) = started().await;
    for run in ["run-1", "run-2"] {
        refuse_w1(&bus, run, "e").await;
    }
    let held = letters(&bus).await;
    assert!(dlq::delete(&bus, held[0].sequence).await.unwrap());
    refuse_w1(&bus, "run-3", "e").await;
    let held = letters(&bus).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].seen.runs, 1);
    assert_eq!(held[0].seen.first_run_id, "run-3");
}

#[tokio::test]
async fn consumption_survives_a_server_restart() {
    let (mut nats, bus) = started().await;
    publish_one(&bus, "r.a", b"a").await.unwrap();
    let mut work = WorkStream::new(bus.clone(), "acme", 10);
    let first = tokio::time::timeout(Duration::from_secs(10), work.next())
        .await
        .unwrap();
    assert_eq!(first.payload, Bytes::from_static(b"a"));
    first.double_ack().await.unwrap();

    nats.restart();
    // The client reconnects by itself; publish once it has.
    wait_for("publish after restart", Duration::from_secs(20), || {
        let bus = bus.clone();
        async move { publish_one(&bus, "r.b", b"b").await.ok() }
    })
    .await;
    let second = tokio::time::timeout(Duration::from_secs(30), work.next())
        .await
        .expect("consumption resumed after the restart");
    assert_eq!(second.payload, Bytes::from_static(b"b"));
}

#[tokio::test]
async fn many_keys_are_read_at_once_in_order() {
    let (_nats, bus) = started().await;
    let store = bus.applied_kv();
    // More keys than one batched request holds, with absent, deleted and purged ones among them.
    let keys: Vec<String> = (0..600).map(|i| format!("acme.k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 3 != 0 {
            store.put(key, Bytes::from(format!("v{i}"))).await.unwrap();
        }
    }
    store.put("acme.k1", Bytes::from("newer")).await.unwrap();
    store.delete("acme.k2").await.unwrap();
    store.purge("acme.k4").await.unwrap();

    let values = peoplesync_bus::lookup::values(bus.client(), store, &keys)
        .await
        .unwrap();
    assert_eq!(values.len(), keys.len());
    for (i, value) in values.iter().enumerate() {
        let expected = match i {
            1 => Some("newer".to_owned()),
            2 | 4 => None,
            i if i % 3 == 0 => None,
            i => Some(format!("v{i}")),
        };
        let got = value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(got, expected, "key {}", keys[i]);
    }
    let twice = peoplesync_bus::lookup::values(
        bus.client(),
        store,
        &["acme.k1".into(), "acme.k3".into(), "acme.k1".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        twice,
        vec![Some(Bytes::from("newer")), None, Some(Bytes::from("newer"))],
        "a key asked for twice is answered in both places"
    );
    let none = peoplesync_bus::lookup::values(bus.client(), store, &["acme.absent".into()])
        .await
        .unwrap();
    assert_eq!(none, vec![None], "a batch with no key present");
}

#[tokio::test]
async fn a_removed_run_record_is_gone_with_its_history() {
    let (_nats, bus) = started().await;
    let runs = bus.runs();
    for run in ["old", "kept"] {
        runs.create(&RunRecord::start("acme", run, true, "test"))
            .await
            .unwrap();
    }
    runs.update("acme", "old", |r| {
        r.state = RunState::Completed;
        true
    })
    .await
    .unwrap();
    runs.remove(&peoplesync_bus::runs::key("acme", "old"))
        .await
        .unwrap();
    assert!(runs.get("acme", "old").await.unwrap().is_none());
    assert_eq!(
        runs.keys().await.unwrap(),
        vec![peoplesync_bus::runs::key("acme", "kept")]
    );
    assert_eq!(
        messages_in(&bus, &format!("KV_{}", names::STATE_BUCKET)).await,
        1,
        "no revision or delete marker of the removed record is left"
    );
}

/// Publishes `chunks` as pages 0.. of run `run`'s seen list of acme and waits until stored.
async fn publish_seen(bus: &Bus, run: &str, chunks: &[&[&str]]) {
    let mut publisher = bus.publisher(8);
    for (page, ids) in chunks.iter().enumerate() {
        publisher
            .publish(
                names::seen_chunk_subject("acme", run, page as u64),
                format!("{run}.seen.{page}"),
                seen::encode_chunk(ids.iter().copied()),
                None,
            )
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
}

#[tokio::test]
async fn a_seen_list_reads_in_order_skipping_a_chunk_stored_twice() {
    let (_nats, bus) = started().await;
    bus.seen().ensure().await.unwrap();
    publish_seen(&bus, "r1", &[&["a", "b"], &["b", "c"], &["d"]]).await;

    let mut reader = bus.seen().reader("acme", "r1").await.unwrap();
    let mut ids = Vec::new();
    while let Some(id) = reader.next().await.unwrap() {
        ids.push(id);
    }
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(reader.read(), 4);

    let mut none = bus.seen().reader("acme", "r2").await.unwrap();
    assert_eq!(none.next().await.unwrap(), None);
}

#[tokio::test]
async fn a_seen_list_out_of_order_names_its_run_and_the_two_ids() {
    let (_nats, bus) = started().await;
    bus.seen().ensure().await.unwrap();
    publish_seen(&bus, "r1", &[&["a", "c"], &["b"]]).await;

    let mut reader = bus.seen().reader("acme", "r1").await.unwrap();
    assert_eq!(reader.next().await.unwrap().as_deref(), Some("a"));
    assert_eq!(reader.next().await.unwrap().as_deref(), Some("c"));
    match reader.next().await {
        Err(seen::ReadError::Unordered {
            run_id,
            previous,
            next,
        }) => assert_eq!(
            (run_id.as_str(), previous.as_str(), next.as_str()),
            ("r1", "c", "b")
        ),
        other => panic!("an out-of-order list must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_seen_list_purged_while_it_is_read_is_an_error_not_its_end() {
    let (_nats, bus) = started().await;
    bus.seen().ensure().await.unwrap();
    publish_seen(&bus, "r1", &[&["a", "b"], &["c"], &["d"]]).await;

    // The reader counts three chunks when it opens; nothing is fetched before the first read.
    let mut reader = bus
        .seen()
        .reader("acme", "r1")
        .await
        .unwrap()
        .with_idle(Duration::from_millis(500));
    bus.seen().purge_run("acme", "r1").await.unwrap();

    let err = reader
        .next()
        .await
        .expect_err("a cut list must not read as empty");
    assert!(
        err.to_string().contains("cut short"),
        "the error says the list was cut short: {err}"
    );
}

/// A leaver entry of acme's report for `worker` with `action`.
fn leaver(worker: &str, action: &str) -> leavers::LeaverEntry {
    leavers::LeaverEntry {
        worker_id: worker.into(),
        reason: "removed".into(),
        action: action.into(),
        at: "2026-12-08T00:00:00Z".into(),
        ..leavers::LeaverEntry::default()
    }
}

#[tokio::test]
async fn a_leavers_report_keeps_each_workers_last_entry_on_a_subject_of_its_own() {
    let (_nats, bus) = started().await;
    leavers::ensure(&bus).await.unwrap();
    // (run, worker, action, noted before a delete rather than recorded), in this order. The
    // last one is another run whose id starts with the first's: not part of its report.
    let written = [
        ("r1", "a1", "updated", false),
        ("r1", "b2", "deleted", true),
        ("r1", "c3", "not_found", false),
        ("r1", "b2", "deleted", false),
        ("r1", "d4", "deleted", true),
        ("r10", "a1", "none", false),
    ];
    for (run, worker, action, note) in written {
        let entry = leaver(worker, action);
        if note {
            leavers::note_deleting(&bus, "acme", run, &entry).await
        } else {
            leavers::record(&bus, "acme", run, &entry).await
        }
        .unwrap();
    }

    let action = |entry: Option<leavers::LeaverEntry>| entry.map(|e| e.action);
    let noted = |worker: &'static str, run: &'static str| {
        let bus = bus.clone();
        async move { leavers::noted(&bus, "acme", run, worker).await.unwrap() }
    };
    assert_eq!(action(noted("b2", "r1").await).as_deref(), Some("deleted"));
    assert_eq!(
        action(noted("d4", "r1").await).as_deref(),
        Some(leavers::DELETING)
    );
    assert_eq!(action(noted("a1", "r1").await).as_deref(), Some("updated"));
    assert_eq!(action(noted("a1", "r10").await).as_deref(), Some("none"));
    assert_eq!(noted("zz", "r1").await, None);
    assert_eq!(noted("c3", "r2").await, None);

    // Each worker's entries are on a subject of their own, so the last one is one direct read.
    let stream = bus
        .jetstream()
        .get_stream(leavers::LEAVERS_STREAM)
        .await
        .unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&names::leaver_subject("acme", "r1", "b2"))
        .await
        .unwrap();
    let entry: leavers::LeaverEntry = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(
        (entry.worker_id.as_str(), entry.action.as_str()),
        ("b2", "deleted")
    );

    let mut report: Vec<(String, String)> = leavers::read(&bus, "acme", "r1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.worker_id, e.action))
        .collect();
    report.sort();
    let expected = [
        ("a1", "updated"),
        ("b2", "deleted"),
        ("c3", "not_found"),
        ("d4", leavers::DELETING),
    ];
    assert_eq!(
        report,
        expected.map(|(w, a)| (w.to_owned(), a.to_owned())).to_vec()
    );
}

#[tokio::test]
async fn a_lock_is_held_by_one_taker_until_given_back_or_stale() {
    let (_nats, bus) = started().await;
    let (a, b) = (bus.locks(), bus.locks());
    let minute = Duration::from_secs(60);
    let taken = a.take("replay.acme", "r1", minute).await.unwrap().unwrap();
    let refused = b
        .take("replay.acme", "r2", minute)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.by, "r1");
    // Another name is another lock.
    let other = b
        .take("replay.globex", "r2", minute)
        .await
        .unwrap()
        .unwrap();
    b.release(other).await.unwrap();

    a.release(taken).await.unwrap();
    assert_eq!(a.holder("replay.acme").await.unwrap(), None);
    let again = b.take("replay.acme", "r2", minute).await.unwrap().unwrap();
    // r2 died without giving it back: once older than the taker's limit, it is taken over,
    // and r2's late release does not free r3's lock.
    let over = a
        .take("replay.acme", "r3", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(b.release(again).await.is_err());
    assert_eq!(a.holder("replay.acme").await.unwrap().unwrap().by, "r3");
    a.release(over).await.unwrap();
}
